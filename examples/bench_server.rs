//! The server behind the load harness (`benches/load.sh`): one hyper accept loop, the same
//! handler bare or behind the layer, so that the difference is the layer.
//!
//! ```sh
//! cargo run --release --example bench_server -- --mode layer --addr 127.0.0.1:8088
//! ```
//!
//! Modes: `bare` (no layer), `layer` (hashing; a client sending `If-None-Match` gets 304),
//! `fast` (a lookup answers revalidations; the handler is not run for a 304), and with
//! `--features blake3`, `blake3` (the layer hashing with BLAKE3).
//! Routes: `GET /bytes/{n}` answers n bytes; `GET /stream/{n}` streams n bytes in 64 KiB
//! chunks with no `Content-Length` (for the memory check: far above `max_buffer`, 1 MiB).

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, Layer};
use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, LookupRequest, Validators};

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn payload(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

async fn handler(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let size = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
    };
    if let Some(n) = size("/bytes/") {
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
    if let Some(n) = size("/stream/") {
        const CHUNK: usize = 64 * 1024;
        // A fresh allocation per chunk, as from a file or a socket: held chunks cost memory.
        let frames = futures_util::stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(n - i * CHUNK);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![(i % 251) as u8; len])))
        }));
        return Ok(Response::new(StreamBody::new(frames).boxed_unsync()));
    }
    Ok(Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::default().boxed_unsync())
        .unwrap())
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

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut mode, mut addr) = ("layer".to_owned(), "127.0.0.1:8088".to_owned());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => mode = args.next().expect("--mode bare|layer|fast"),
            "--addr" => addr = args.next().expect("--addr IP:PORT"),
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
        #[cfg(feature = "blake3")]
        "blake3" => {
            let layer = ConditionalLayer::new()
                .no_lookup()
                .hash_algorithm(tower_conditional::HashAlgorithm::Blake3);
            serve(listener, layer.layer(inner)).await
        }
        "fast" => {
            let lookup = lookup_fn(|req: LookupRequest| {
                let n = req
                    .uri()
                    .path()
                    .strip_prefix("/bytes/")
                    .and_then(|n| n.parse::<usize>().ok());
                let found =
                    n.map(|n| Validators::new().with_etag(EntityTag::from_content(&payload(n))));
                async move { Ok::<_, Infallible>(found) }
            });
            // The lookup's answer for a size is computed once and kept.
            let cache = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
                String,
                Option<Validators>,
            >::new()));
            let cached = tower::service_fn(move |req: LookupRequest| {
                let key = req.uri().path().to_owned();
                let hit = cache.lock().unwrap().get(&key).cloned();
                let cache = cache.clone();
                let mut lookup = lookup;
                async move {
                    if let Some(found) = hit {
                        return Ok::<_, Infallible>(found);
                    }
                    let found = tower::Service::call(&mut lookup, req).await?;
                    cache.lock().unwrap().insert(key, found.clone());
                    Ok(found)
                }
            });
            serve(
                listener,
                ConditionalLayer::new()
                    .lookup(cached)
                    .lookup_reads(true)
                    .layer(inner),
            )
            .await
        }
        other => panic!("unknown mode {other}"),
    }
}
