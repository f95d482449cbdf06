//! A plain hyper 1 service, no framework: `service_fn` wrapped in the layer and served
//! through hyper-util.
//!
//! ```sh
//! cargo run --example hyper_service -- --addr 127.0.0.1:3002
//! ```
//!
//! `GET /counter` reads a counter, `PUT /counter` replaces it. hyper's request body
//! (`Incoming`) has no `Default`, so the layer cannot build its internal GET: a lookup over
//! the same state tells it the current tag instead.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, ServiceBuilder};
use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, LookupRequest, Validators};

#[path = "support/args.rs"]
mod args;

type Counter = Arc<Mutex<String>>;

async fn handle(
    counter: Counter,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = |s: StatusCode| Response::builder().status(s).body(Full::default()).unwrap();
    Ok(match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/counter") => {
            Response::new(Full::new(Bytes::from(counter.lock().unwrap().clone())))
        }
        (Method::PUT, "/counter") => match req.into_body().collect().await {
            Ok(body) => {
                *counter.lock().unwrap() = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                status(StatusCode::NO_CONTENT)
            }
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        (_, "/counter") => status(StatusCode::METHOD_NOT_ALLOWED),
        _ => status(StatusCode::NOT_FOUND),
    })
}

#[tokio::main]
async fn main() {
    let addr = args::addr_or_exit("hyper_service", "127.0.0.1:3002");
    let counter: Counter = Arc::new(Mutex::new("0".into()));
    let state = counter.clone();
    let lookup = lookup_fn(move |req: LookupRequest| {
        let found = (req.uri().path() == "/counter").then(|| {
            Validators::new().with_etag(EntityTag::from_content(state.lock().unwrap().as_bytes()))
        });
        async move { Ok::<_, Infallible>(found) }
    });
    let service = ServiceBuilder::new()
        .layer(
            ConditionalLayer::new()
                .lookup(lookup)
                .serialize_writes(true),
        )
        .service(service_fn(move |req| handle(counter.clone(), req)));

    let listener = args::bind_and_announce(&addr).await;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
