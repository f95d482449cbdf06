//! Allocations per request on the 200 and 304 paths, counted with a counting global
//! allocator, per body size. Prints one table; `cargo bench --bench allocs`.
//!
//! The baseline is the inner service alone (`bare`), so the `layer` column minus `bare` is
//! what the layer itself allocates. `lookup 304`: a lookup answers the revalidation
//! (`lookup_reads`), the inner service is not called — everything counted is the layer's
//! and the lookup's (a `lookup_fn` returning the stored tag).
//!
//! It ends with the size of each response future: every layer and executor around the
//! layer moves it, so its bytes are a per-request cost that allocation counts do not show.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::future::{ready, FutureExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, LookupRequest, Validators};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Checks the status, then reads the body to its end.
fn check<B: http_body::Body + Unpin>(status: u16, resp: Response<B>) {
    assert_eq!(resp.status(), status);
    drain(resp);
}

/// Reads a body to its end; every frame is ready at once.
fn drain<B: http_body::Body + Unpin>(resp: Response<B>) {
    let mut body = resp.into_body();
    while let Some(Some(_)) = body.frame().now_or_never() {}
}

/// Allocations (count, bytes) made by `f` per request, averaged over `n` runs. The requests
/// are built before counting starts: only what the services allocate is counted.
fn count(
    n: usize,
    mut make: impl FnMut() -> Request<String>,
    mut f: impl FnMut(Request<String>),
) -> (f64, f64) {
    f(make()); // warm up lazily initialised state
    let mut requests: Vec<Request<String>> = (0..n).map(|_| make()).collect();
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    while let Some(req) = requests.pop() {
        f(req);
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    ((a1 - a0) as f64 / n as f64, (b1 - b0) as f64 / n as f64)
}

fn main() {
    println!("allocations per request (count / bytes); requests built beforehand");
    println!(
        "{:>8} {:>6} | {:>14} | {:>14} | {:>14} | {:>14} | {:>14} | {:>14}",
        "size",
        "chunks",
        "bare 200",
        "layer 200",
        "layer 304",
        "200 + Outcome",
        "304 + Outcome",
        "lookup 304"
    );
    let mut sizes = [0; 3];
    for size in [256usize, 4096, 65536, 1 << 20] {
        for pieces in [1usize, 8] {
            let data = Bytes::from(vec![7u8; size]);
            let step = size / pieces;
            let chunks: Vec<Bytes> = (0..pieces)
                .map(|i| data.slice(i * step..(i + 1) * step))
                .collect();
            let inner = service_fn(move |_req: Request<String>| {
                let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                    chunks.iter().cloned().map(|c| Ok(Frame::data(c))).collect();
                let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/octet-stream"),
                );
                ready(Ok::<_, Infallible>(resp))
            });
            let layered = ConditionalLayer::new().layer(inner.clone());
            let with_outcome = ConditionalLayer::new()
                .outcome_extension(true)
                .layer(inner.clone());
            let stored = EntityTag::from_content(&data);
            let tag = stored.to_header_value();
            let fast = ConditionalLayer::new()
                .lookup(lookup_fn(move |_req: LookupRequest| {
                    ready(Ok::<_, Infallible>(Some(
                        Validators::new().with_etag(stored.clone()),
                    )))
                }))
                .lookup_reads(true)
                .layer(inner.clone());
            let plain = || Request::new(String::new());
            let revalidate = || {
                let mut req = Request::new(String::new());
                req.headers_mut()
                    .insert(http::header::IF_NONE_MATCH, tag.clone());
                req
            };
            let bare = count(1000, plain, |r| {
                check(
                    200,
                    inner.clone().oneshot(r).now_or_never().unwrap().unwrap(),
                )
            });
            let l200 = count(1000, plain, |r| {
                check(
                    200,
                    layered.clone().oneshot(r).now_or_never().unwrap().unwrap(),
                )
            });
            let l304 = count(1000, revalidate, |r| {
                check(
                    304,
                    layered.clone().oneshot(r).now_or_never().unwrap().unwrap(),
                )
            });
            let q200 = count(1000, plain, |r| {
                check(
                    200,
                    with_outcome
                        .clone()
                        .oneshot(r)
                        .now_or_never()
                        .unwrap()
                        .unwrap(),
                )
            });
            let q304 = count(1000, revalidate, |r| {
                check(
                    304,
                    with_outcome
                        .clone()
                        .oneshot(r)
                        .now_or_never()
                        .unwrap()
                        .unwrap(),
                )
            });
            let f304 = count(1000, revalidate, |r| {
                check(
                    304,
                    fast.clone().oneshot(r).now_or_never().unwrap().unwrap(),
                )
            });
            if size == 256 && pieces == 1 {
                sizes = [
                    future_size(&inner),
                    future_size(&layered),
                    future_size(&fast),
                ];
            }
            let cell = |(n, b): (f64, f64)| format!("{n:>4.1} / {b:>7.0}");
            println!(
                "{:>8} {:>6} | {} | {} | {} | {} | {} | {}",
                size,
                pieces,
                cell(bare),
                cell(l200),
                cell(l304),
                cell(q200),
                cell(q304),
                cell(f304)
            );
        }
    }
    let [bare, layer, lookup] = sizes;
    println!("response future, bytes: bare {bare}, layer {layer}, layer with a lookup {lookup}");
}

/// The size of `service`'s response future.
fn future_size<S: Service<Request<String>>>(_service: &S) -> usize {
    std::mem::size_of::<S::Future>()
}
