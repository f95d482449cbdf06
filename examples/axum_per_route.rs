//! One axum router, the conditional layer configured per route.
//!
//! ```sh
//! cargo run --example axum_per_route -- --addr 127.0.0.1:3001
//! ```
//!
//! | route | configuration |
//! | --- | --- |
//! | `GET /docs/{page}` | hash-only: the whole `Router::layer` default, no writes |
//! | `/notes/{id}` | lookup-backed (an in-memory map), writes checked before the handler |
//! | `/config` | strict: PUT without `If-Match` is 428 (`route_layer`), lookup-backed |
//! | `GET /events` | an SSE stream the layer leaves alone |
//! | `GET /export` | a 64 MiB stream, larger than `max_buffer`: streamed untagged |
//! | `GET /version` | the handler sets its own `ETag` (`MethodRouter::layer`) |

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt;
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};

#[path = "support/args.rs"]
mod args;

type Notes = Arc<Mutex<HashMap<String, String>>>;

async fn doc(Path(page): Path<String>) -> String {
    format!("# {page}\n\nStatic documentation: the layer hashes it, clients revalidate it.\n")
}

async fn read_note(State(notes): State<Notes>, Path(id): Path<String>) -> Response {
    match notes.lock().unwrap().get(&id) {
        Some(text) => text.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn write_note(
    State(notes): State<Notes>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
    body: String,
) -> StatusCode {
    let mut notes = notes.lock().unwrap();
    // Compare-and-swap on what the layer checked.
    if let Some(Extension(e)) = e {
        let current = notes
            .get(&id)
            .map(|t| EntityTag::from_content(t.as_bytes()));
        let ok = match (e.etag(), &current) {
            (Some(expected), Some(current)) => expected.strong_eq(current),
            (Some(_), None) => false,
            (None, _) => !(e.must_not_exist() && current.is_some()),
        };
        if !ok {
            return StatusCode::PRECONDITION_FAILED;
        }
    }
    match notes.insert(id, body) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::CREATED,
    }
}

async fn events() -> Response {
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
        Duration::from_millis(500),
    ))
    .enumerate()
    .map(|(n, _)| Ok::<_, Infallible>(Bytes::from(format!("data: {n}\n\n"))));
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(ticks),
    )
        .into_response()
}

async fn export() -> Response {
    const TOTAL: usize = 64 * 1024 * 1024;
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = futures_util::stream::iter(
        (0..TOTAL / chunk.len()).map(move |_| Ok::<_, Infallible>(chunk.clone())),
    );
    Body::from_stream(chunks).into_response()
}

/// The application: each route gets the layer configuration it needs.
fn app() -> Router {
    let notes = Notes::default();
    let lookup_notes = notes.clone();
    let notes_lookup = lookup_fn(move |req: LookupRequest| {
        let notes = lookup_notes.clone();
        async move {
            // The id as the handlers' `Path` extractor decodes it (`/notes/%61` is `a`).
            let (mut parts, ()) = req.into_parts();
            let Ok(Path(id)) = Path::<String>::from_request_parts(&mut parts, &()).await else {
                return Ok::<_, Infallible>(None);
            };
            let found = notes
                .lock()
                .unwrap()
                .get(&id)
                .map(|t| Validators::new().with_etag(EntityTag::from_content(t.as_bytes())));
            Ok(found)
        }
    });
    let config = Arc::new(Mutex::new(String::from("mode = safe\n")));
    let config_read = config.clone();
    let config_write = config.clone();
    let config_lookup = lookup_fn(move |_req: LookupRequest| {
        let tag = EntityTag::from_content(config.lock().unwrap().as_bytes());
        async move { Ok::<_, Infallible>(Some(Validators::new().with_etag(tag))) }
    });

    let hashed = Router::new()
        .route("/docs/{page}", get(doc))
        .layer(ConditionalLayer::new());

    let resources = Router::new()
        .route("/notes/{id}", get(read_note).put(write_note))
        .route_layer(
            ConditionalLayer::new()
                .lookup(notes_lookup)
                .serialize_writes(true),
        )
        .route_layer(middleware::from_fn(whole_puts_only))
        .with_state(notes);

    let strict = Router::new()
        .route(
            "/config",
            get(move || {
                let config = config_read.clone();
                async move { config.lock().unwrap().clone() }
            })
            .put(move |body: String| {
                let config = config_write.clone();
                async move {
                    *config.lock().unwrap() = body;
                    StatusCode::NO_CONTENT
                }
            }),
        )
        // A write route inside axum needs a lookup: axum applies the layer to each method's
        // handler, so an internal GET would reach the PUT handler (see the crate docs).
        .route_layer(
            ConditionalLayer::new()
                .lookup(config_lookup)
                .require_preconditions(true)
                .serialize_writes(true),
        )
        .route_layer(middleware::from_fn(whole_puts_only));

    let streams = Router::new()
        .route("/events", get(events))
        .route("/export", get(export))
        .layer(ConditionalLayer::new());

    let own_tag = Router::new().route(
        "/version",
        get(|| async {
            (
                [(header::ETAG, "W/\"build-42\"")],
                "tower-conditional demo, build 42\n",
            )
        })
        .layer(ConditionalLayer::new()),
    );

    Router::new()
        .merge(hashed)
        .merge(resources)
        .merge(strict)
        .merge(streams)
        .merge(own_tag)
}

/// A PUT with `Content-Range` would store a part as the whole: 400 (RFC 9110 §14.5), from
/// outside the conditional layer, so it comes before any precondition (and the 428).
async fn whole_puts_only(request: Request, next: Next) -> Response {
    if request.method() == Method::PUT && request.headers().contains_key(header::CONTENT_RANGE) {
        return (
            StatusCode::BAD_REQUEST,
            "PUT with Content-Range is not supported\n",
        )
            .into_response();
    }
    next.run(request).await
}

#[tokio::main]
async fn main() {
    let addr = args::addr_or_exit("axum_per_route", "127.0.0.1:3001");
    let listener = args::bind_and_announce(&addr).await;
    axum::serve(listener, app()).await.unwrap();
}
