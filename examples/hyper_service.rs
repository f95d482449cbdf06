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
//!
//! Routing comes before the layer: a request that would be 404, 405 or 400 without its
//! preconditions is answered so with them (RFC 9110 §13.2.1), and nothing is looked up.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_conditional::{
    lookup_fn, BoxError, ConditionalLayer, EntityTag, LookupRequest, Validators,
};

#[path = "support/args.rs"]
mod args;

type Counter = Arc<Mutex<String>>;

type Body = UnsyncBoxBody<Bytes, BoxError>;

fn status(s: StatusCode) -> Response<Full<Bytes>> {
    Response::builder().status(s).body(Full::default()).unwrap()
}

/// `/counter`, behind the layer: reached only by GET (HEAD arrives as GET) and PUT.
async fn handle(
    counter: Counter,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET {
        let value = counter.lock().unwrap().clone();
        return Ok(Response::new(Full::new(Bytes::from(value))));
    }
    Ok(match req.into_body().collect().await {
        Ok(body) => {
            *counter.lock().unwrap() = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            status(StatusCode::NO_CONTENT)
        }
        Err(_) => status(StatusCode::BAD_REQUEST),
    })
}

/// What is answered from the head alone, before any precondition: another path (404),
/// another method (405), a partial PUT (400, RFC 9110 §14.5).
fn refused(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if req.uri().path() != "/counter" {
        return Some(status(StatusCode::NOT_FOUND));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::PUT) {
        let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
        let allow = HeaderValue::from_static("GET, HEAD, PUT");
        response.headers_mut().insert(header::ALLOW, allow);
        return Some(response);
    }
    if req.method() == Method::PUT && req.headers().contains_key(header::CONTENT_RANGE) {
        return Some(status(StatusCode::BAD_REQUEST));
    }
    None
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
    let counter_service = ServiceBuilder::new()
        .layer(
            ConditionalLayer::new()
                .lookup(lookup)
                .serialize_writes(true),
        )
        .service(service_fn(move |req| handle(counter.clone(), req)));
    let service = service_fn(move |req: Request<Incoming>| {
        let counter_service = counter_service.clone();
        async move {
            if let Some(response) = refused(&req) {
                return Ok::<_, Infallible>(
                    response.map(|b| b.map_err(BoxError::from).boxed_unsync()),
                );
            }
            let response = counter_service.oneshot(req).await?;
            Ok(response.map(|b| -> Body { b.boxed_unsync() }))
        }
    });

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
