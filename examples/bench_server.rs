//! The server behind the load harness (`benches/load/run.sh`, `benches/load/soak.sh`): one
//! hyper accept loop, the same handler bare or behind the layer, so that the difference is
//! the layer.
//!
//! ```sh
//! cargo run --release --example bench_server --features blake3 -- --mode layer --addr 127.0.0.1:8088
//! cargo run --release --example bench_server --features blake3 -- --hash-floor
//! ```
//!
//! Modes:
//! - `bare`: no layer.
//! - `layer`: the layer hashing with SHA-256 (the default); a client sending `If-None-Match`
//!   gets 304.
//! - `layer_xxh3`: the layer with XXH3-128 plugged in through `HashAlgorithm::custom`, a hash
//!   of negligible cost, so the difference from `bare` is the layer's own work. The same
//!   hash salvo's `CachingHeaders` uses: the equal-terms comparison with that peer.
//! - `blake3` (with `--features blake3`): the layer hashing with BLAKE3.
//! - `minimal_xxh3`: no layer, but the least any tagging layer does, written by hand around
//!   the same handler: collect the body, XXH3-128 it, insert the tag, send the bytes (no
//!   conditions read, no limits, no `HEAD`; as `benches/support/minimal.rs` in criterion).
//!   The yardstick for `layer_xxh3`: what tagging costs end to end before any checking.
//! - `fast`: a lookup answers revalidations (`lookup_reads(true)`); the handler is not run
//!   for a 304.
//! - `soak`: mixed reads and writes over `/items/{id}` with a version lookup that fails every
//!   100th call (see [`soak`]); `GET /stats` reports the statuses served.
//!
//! Routes (all modes but `soak`): `GET /bytes/{n}` answers n bytes (byte i = i % 251);
//! `GET /stream/{n}` streams n bytes in 64 KiB chunks with no `Content-Length` (for the
//! memory check: far above `max_buffer`, 1 MiB).
//!
//! `--hash-floor` prints what each hash alone costs per body (1 KiB, 64 KiB) and exits: the
//! floor the layer's figures are read against.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, Layer};
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, HashAlgorithm, LookupRequest, Validators,
};

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[path = "../benches/support/xxh3.rs"]
mod xxh3;
use xxh3::Xxh3;

fn payload(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

fn size(path: &str, prefix: &str) -> Option<usize> {
    path.strip_prefix(prefix)
        .and_then(|n| n.parse::<usize>().ok())
}

async fn handler(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if let Some(n) = size(path, "/bytes/") {
        // Served from a per-size cache, so the handler costs the same in every mode.
        thread_local!(static CACHE: std::cell::RefCell<std::collections::HashMap<usize, Bytes>> = Default::default());
        let body = CACHE.with(|c| {
            c.borrow_mut()
                .entry(n)
                .or_insert_with(|| payload(n))
                .clone()
        });
        return Ok(Response::new(Full::new(body).boxed_unsync()));
    }
    if let Some(n) = size(path, "/stream/") {
        const CHUNK: usize = 64 * 1024;
        // A fresh allocation per chunk, as from a file or a socket: held chunks cost memory.
        let frames = futures_util::stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(n - i * CHUNK);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![(i % 251) as u8; len])))
        }));
        return Ok(Response::new(StreamBody::new(frames).boxed_unsync()));
    }
    Ok(not_found())
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::default().boxed_unsync())
        .unwrap()
}

async fn serve<S, B>(listener: tokio::net::TcpListener, service: S)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The handler under the hand-written minimum of a tagging layer (mode `minimal_xxh3`).
async fn minimal_xxh3(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    use base64::Engine as _;
    let (mut head, body) = handler(req).await?.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let mut tag = [b'"'; 24];
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(
            xxhash_rust::xxh3::xxh3_128(&bytes).to_be_bytes(),
            &mut tag[1..23],
        )
        .expect("22 bytes hold 16 in base64url");
    let value = http::HeaderValue::from_bytes(&tag).expect("base64url is a header value");
    head.headers.insert(http::header::ETAG, value);
    Ok(Response::from_parts(head, Full::new(bytes)))
}

/// The lookup-answered revalidation: the tags for the sizes the harness asks for are computed
/// once at start, as a store keeps them next to the content; the lookup itself only reads
/// (no lock, no allocation beyond the answer).
fn fast_lookup() -> impl tower::Service<
    LookupRequest,
    Response = Option<Validators>,
    Error = Infallible,
    Future: Send,
> + Clone
       + Send
       + 'static {
    let known: std::sync::Arc<Vec<(usize, Validators)>> = std::sync::Arc::new(
        [256, 1024, 4096, 65536]
            .into_iter()
            .map(|n| {
                (
                    n,
                    Validators::new().with_etag(EntityTag::from_content(&payload(n))),
                )
            })
            .collect(),
    );
    lookup_fn(move |req: LookupRequest| {
        let found = size(req.uri().path(), "/bytes/").map(|n| {
            known
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| {
                    Validators::new().with_etag(EntityTag::from_content(&payload(n)))
                })
        });
        std::future::ready(Ok::<_, Infallible>(found))
    })
}

pub mod soak {
    //! The soak workload: `/items/{id}` for ids `0..ITEMS` (every 16th item 64 KiB, the rest
    //! 1 KiB), immutable, so the tags a client fetched at the start stay current:
    //! - `GET` → 200 with the layer's SHA-256 tag, or 304 with a matching `If-None-Match`;
    //! - `PUT` with `If-Match` → checked by the version lookup first: 412 when stale, the
    //!   handler (which reads the body and answers 200) when current;
    //! - the lookup fails every 100th call (a deterministic counter), and the layer answers
    //!   that write 503 without calling the handler. Conditional writes are serialized per
    //!   item (`serialize_writes`), so the lock table is soaked too.
    //!
    //! `GET /stats` (outside the layer, not counted) answers one `name value` pair a line:
    //! `lookups`, `lookup_failures`, then `METHOD STATUS count` for every pair served.

    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use tower::{service_fn, Layer, ServiceExt};
    use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, LookupRequest, Validators};

    use super::Body;

    pub const ITEMS: usize = 64;
    /// One lookup call in this many fails.
    pub const FAIL_EVERY: u64 = 100;
    const METHODS: [&str; 3] = ["GET", "PUT", "OTHER"];

    pub struct State {
        bodies: Vec<Bytes>,
        tags: Vec<EntityTag>,
        lookups: AtomicU64,
        failures: AtomicU64,
        /// `[method][status - 100]`.
        counts: Vec<Vec<AtomicU64>>,
    }

    impl State {
        fn new() -> Self {
            let bodies: Vec<Bytes> = (0..ITEMS)
                .map(|id| {
                    let len = if id % 16 == 0 { 64 * 1024 } else { 1024 };
                    Bytes::from(
                        (0..len)
                            .map(|i| ((i + id * 7) % 251) as u8)
                            .collect::<Vec<u8>>(),
                    )
                })
                .collect();
            let tags = bodies.iter().map(|b| EntityTag::from_content(b)).collect();
            State {
                bodies,
                tags,
                lookups: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                counts: (0..METHODS.len())
                    .map(|_| (100..600).map(|_| AtomicU64::new(0)).collect())
                    .collect(),
            }
        }

        fn id(&self, path: &str) -> Option<usize> {
            super::size(path, "/items/").filter(|&id| id < ITEMS)
        }

        fn count(&self, method: &Method, status: StatusCode) {
            let m = match *method {
                Method::GET => 0,
                Method::PUT => 1,
                _ => 2,
            };
            self.counts[m][usize::from(status.as_u16()) - 100].fetch_add(1, Relaxed);
        }

        fn report(&self) -> String {
            let mut out = format!(
                "lookups {}\nlookup_failures {}\n",
                self.lookups.load(Relaxed),
                self.failures.load(Relaxed)
            );
            for (m, row) in self.counts.iter().enumerate() {
                for (i, n) in row.iter().enumerate() {
                    let n = n.load(Relaxed);
                    if n > 0 {
                        out.push_str(&format!("{} {} {n}\n", METHODS[m], i + 100));
                    }
                }
            }
            out
        }
    }

    async fn handler(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
        let Some(id) = state.id(req.uri().path()) else {
            return super::not_found();
        };
        match *req.method() {
            Method::GET | Method::HEAD => {
                Response::new(Full::new(state.bodies[id].clone()).boxed_unsync())
            }
            Method::PUT => {
                // The write: read the whole body, store nothing (items stay as they are).
                let _ = req.into_body().collect().await;
                Response::new(Full::new(Bytes::from_static(b"stored\n")).boxed_unsync())
            }
            _ => Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .body(Full::default().boxed_unsync())
                .unwrap(),
        }
    }

    pub async fn run(listener: tokio::net::TcpListener) {
        let state = Arc::new(State::new());
        let looked_up = state.clone();
        let lookup = lookup_fn(move |req: LookupRequest| {
            let n = looked_up.lookups.fetch_add(1, Relaxed) + 1;
            let answer = if n % FAIL_EVERY == 0 {
                looked_up.failures.fetch_add(1, Relaxed);
                Err("injected lookup failure (every 100th call)")
            } else {
                Ok(looked_up
                    .id(req.uri().path())
                    .map(|id| Validators::new().with_etag(looked_up.tags[id].clone())))
            };
            std::future::ready(answer)
        });
        let handled = state.clone();
        let inner = service_fn(move |req| {
            let state = handled.clone();
            async move { Ok::<_, Infallible>(handler(state, req).await) }
        });
        let layered = ConditionalLayer::new()
            .lookup(lookup)
            .serialize_writes(true)
            .layer(inner);
        let counted = service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let layered = layered.clone();
            async move {
                if req.uri().path() == "/stats" {
                    let body = Full::new(Bytes::from(state.report()))
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    return Ok::<_, Infallible>(Response::new(body));
                }
                let method = req.method().clone();
                let resp = layered.oneshot(req).await?;
                state.count(&method, resp.status());
                Ok(resp.map(|b| b.boxed_unsync()))
            }
        });
        super::serve(listener, counted).await
    }
}

/// Nanoseconds per body for each hash alone, over about 200 ms of hashing each.
fn hash_floor() {
    fn time(name: &str, n: usize, f: impl Fn(&[u8]) -> u8) {
        let body = payload(n);
        let mut sink = 0u8;
        let mut iters = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            for _ in 0..64 {
                sink ^= f(std::hint::black_box(&body));
            }
            iters += 64;
        }
        let ns = start.elapsed().as_nanos() as f64 / iters as f64;
        std::hint::black_box(sink);
        println!("{name} {n} {ns:.0}");
    }
    for n in [1024, 65536] {
        time("sha256", n, |b| {
            use sha2::Digest as _;
            sha2::Sha256::digest(b)[0]
        });
        #[cfg(feature = "blake3")]
        time("blake3", n, |b| blake3::hash(b).as_bytes()[0]);
        time("xxh3", n, |b| xxhash_rust::xxh3::xxh3_128(b) as u8);
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut addr) = ("layer".to_owned(), "127.0.0.1:8088".to_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => mode = args.next().expect("--mode MODE"),
            "--addr" => addr = args.next().expect("--addr IP:PORT"),
            "--hash-floor" => return hash_floor(),
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!(
        "listening on http://{} ({mode})",
        listener.local_addr().unwrap()
    );
    let inner = service_fn(handler);
    match mode.as_str() {
        "bare" => serve(listener, inner).await,
        "layer" => serve(listener, ConditionalLayer::new().no_lookup().layer(inner)).await,
        "layer_xxh3" => {
            let layer = ConditionalLayer::new()
                .no_lookup()
                .hash_algorithm(HashAlgorithm::custom(Xxh3));
            serve(listener, layer.layer(inner)).await
        }
        #[cfg(feature = "blake3")]
        "blake3" => {
            let layer = ConditionalLayer::new()
                .no_lookup()
                .hash_algorithm(HashAlgorithm::Blake3);
            serve(listener, layer.layer(inner)).await
        }
        "minimal_xxh3" => serve(listener, service_fn(minimal_xxh3)).await,
        "fast" => {
            let layer = ConditionalLayer::new()
                .lookup(fast_lookup())
                .lookup_reads(true);
            serve(listener, layer.layer(inner)).await
        }
        "soak" => soak::run(listener).await,
        other => panic!(
            "unknown mode {other} (bare, layer, layer_xxh3, minimal_xxh3, blake3, fast, soak)"
        ),
    }
}
