//! A fixed number of requests through one path, for callgrind: instruction counts are the
//! same from run to run where times on a shared machine are not, so a change of a few
//! percent in the layer's own work shows.
//!
//! ```sh
//! cargo bench --bench instructions --no-run            # prints nothing; builds the binary
//! BIN=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
//! for mode in bare layer lookup; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$mode "$BIN" $mode 20000
//!   callgrind_annotate /tmp/cg.$mode | grep 'PROGRAM TOTALS'   # divide by 20000
//! done
//! ```
//!
//! Modes, each over a 256-byte body sent in one chunk:
//! - `bare`: the inner service alone, its body collected;
//! - `layer`: the same through the layer (SHA-256 tag, no conditions); subtract the SHA-256
//!   compression function (`sha2::sha256::compress256` in the annotation) to get the layer's
//!   own work;
//! - `lookup`: a revalidation answered 304 by a version lookup (`lookup_reads`), the inner
//!   service never called;
//! - `minimal`: the minimal hand-written tagging layer (`benches/support/minimal.rs`), the
//!   yardstick for `layer`: subtract the compression function the same way.
//!
//! Run by `cargo bench` without arguments, it does 1000 requests of each mode and checks
//! the statuses, so the bench build stays honest.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use futures_util::future::{ready, FutureExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, LookupRequest, Validators};

#[path = "support/minimal.rs"]
mod minimal;

fn main() {
    const MODES: [&str; 4] = ["bare", "layer", "lookup", "minimal"];
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let modes: Vec<&str> = match args.next() {
        None => MODES.to_vec(),
        Some(mode) => match MODES.iter().find(|m| **m == mode) {
            Some(known) => vec![known],
            None => {
                // `cargo bench -- FILTER` hands every bench the criterion filter.
                println!("instructions: {mode:?} is not a mode ({MODES:?}); nothing run");
                return;
            }
        },
    };
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);

    let data = Bytes::from(vec![7u8; 256]);
    let inner = service_fn(move |_req: Request<String>| {
        let mut response = Response::new(Full::new(data.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        ready(Ok::<_, Infallible>(response))
    });
    let tag = EntityTag::from_content(&[7u8; 256]);
    let known = Validators::new().with_etag(tag.clone());
    let layered = ConditionalLayer::new().layer(inner.clone());
    let by_hand = minimal::minimal(inner.clone());
    let looked_up = ConditionalLayer::new()
        .lookup(lookup_fn(move |_req: LookupRequest| {
            ready(Ok::<_, Infallible>(Some(known.clone())))
        }))
        .lookup_reads(true)
        .layer(inner.clone());

    for mode in modes {
        for _ in 0..count {
            match mode {
                "bare" => {
                    let response = inner.clone().oneshot(Request::new(String::new()));
                    let response = response.now_or_never().expect("ready").unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    black_box(response.into_body().collect().now_or_never());
                }
                "layer" => {
                    let response = layered.clone().oneshot(Request::new(String::new()));
                    let response = response.now_or_never().expect("ready").unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    black_box(response.into_body().collect().now_or_never());
                }
                "minimal" => {
                    let response = by_hand.clone().oneshot(Request::new(String::new()));
                    let response = response.now_or_never().expect("ready").unwrap();
                    assert!(response.headers().contains_key(header::ETAG));
                    black_box(response.into_body().collect().now_or_never());
                }
                "lookup" => {
                    let mut request = Request::new(String::new());
                    request
                        .headers_mut()
                        .insert(header::IF_NONE_MATCH, tag.to_header_value());
                    let response = looked_up.clone().oneshot(request);
                    let response = response.now_or_never().expect("ready").unwrap();
                    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
                    black_box(response);
                }
                _ => unreachable!("modes come from MODES"),
            }
        }
    }
    println!("instructions: {count} requests per mode answered as expected");
}
