//! The recipe for compression with lookups: a `tower::ServiceBuilder` stack of tracing,
//! [`CodingTagsLayer`], compression and the conditional layer, around a report that can be
//! read (gzip or identity) and replaced with a conditional PUT.
//!
//! ```sh
//! cargo run --example service_builder -- --addr 127.0.0.1:3003
//! curl -i --compressed http://127.0.0.1:3003/report     # gzip: ETag "T;gzip"
//! curl -i http://127.0.0.1:3003/report                  # identity: ETag "T"
//! curl -i -X PUT -H 'content-type: text/plain' -H 'if-match: "T;gzip"' \
//!      --data-binary @new-report.txt http://127.0.0.1:3003/report
//! ```
//!
//! The stack, outermost first: trace → coding tags → compression → conditional → handler.
//! The conditional layer sees identity bytes, so its tags are the ones the lookup computes
//! from the stored report. [`CodingTagsLayer`] sits outside compression: a gzip response's
//! tag gets a `;gzip` suffix (each coding its own strong tag, RFC 9110 §8.8.3), the suffix is
//! removed from `If-Match` before the lookup's tag is compared (a write from either client
//! validates; a stale one gets 412), and `If-None-Match` on a read is evaluated on the encoded
//! response (each coding revalidates to 304 on its own, and one's tag never validates the
//! other).

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tower::ServiceBuilder;
use tower_conditional::{
    lookup_fn, CodingTagsLayer, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

#[path = "support/args.rs"]
mod args;
#[path = "support/body_first.rs"]
mod body_first;

/// The stored report: identity bytes, as a PUT sent them.
type Store = Arc<RwLock<Bytes>>;

fn first_report() -> Bytes {
    let mut text = String::from("Quarterly report\n================\n");
    for week in 1..=52 {
        text.push_str(&format!(
            "Week {week:2}: revenue grew, costs fell, everyone is happy.\n"
        ));
    }
    Bytes::from(text)
}

async fn report(State(store): State<Store>) -> Response {
    let text = store.read().unwrap().clone();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Replaces the report: a compare-and-swap on what the layer validated. A body shorter than
/// its `Content-Length` is refused ([`body_first::as_declared`]); the body is not read before
/// the layer here (no write lock to hold), so a stale write's 412 comes without a 100.
async fn replace(
    State(store): State<Store>,
    expectation: Option<Extension<Expectation>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !body_first::as_declared(&headers, body.len()) {
        let refusal = format!("{}\n", body_first::NOT_AS_DECLARED);
        return (StatusCode::BAD_REQUEST, refusal).into_response();
    }
    let mut stored = store.write().unwrap();
    if let Some(expected) = expectation.as_ref().and_then(|e| e.etag()) {
        if !expected.strong_eq(&EntityTag::from_content(&stored)) {
            return (StatusCode::PRECONDITION_FAILED, "changed meanwhile\n").into_response();
        }
    }
    let tag = EntityTag::from_content(&body);
    *stored = body;
    (
        StatusCode::NO_CONTENT,
        [(header::ETAG, tag.to_header_value())],
    )
        .into_response()
}

/// A PUT that is partial (`Content-Range`: 400, RFC 9110 §14.5) or not `text/plain` (415) is
/// refused from its head alone, before the stack: RFC 9110 §13.2.1 has such failures take
/// precedence over preconditions.
async fn whole_plain_text_puts(request: Request, next: Next) -> Response {
    // The media type's essence, compared without regard to case (RFC 9110 §8.3.1).
    let plain = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/plain"));
    if request.method() == Method::PUT && request.headers().contains_key(header::CONTENT_RANGE) {
        // RFC 9110 §14.5: a partial PUT must not be taken for the whole report.
        return (
            StatusCode::BAD_REQUEST,
            "PUT with Content-Range is not supported\n",
        )
            .into_response();
    }
    if request.method() == Method::PUT && !plain {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "send text/plain\n").into_response();
    }
    next.run(request).await
}

/// The stack, outermost first: trace → coding tags → compression → conditional → handler.
///
/// Tracing wraps the whole router (every answer is traced, 404 and 405 included); the rest is
/// applied with the method router's `route_layer`, to the methods `/report` has: a request
/// that would be 404 (another path) or 405 (another method) without its preconditions is
/// answered so with them too — routing decides before any precondition is evaluated (RFC 9110
/// §13.2.1) — and the lookup is only asked about what exists. (`Router::layer` and
/// `Router::route_layer` would also wrap the 405 answer, and `Router::layer` the 404 one.)
fn app(store: Store) -> Router {
    let lookup_store = store.clone();
    let lookup = lookup_fn(move |_req: LookupRequest| {
        let stored = lookup_store.read().unwrap().clone();
        async move {
            let current = Validators::new().with_etag(EntityTag::from_content(&stored));
            Ok::<_, Infallible>(Some(current))
        }
    });
    let stack = ServiceBuilder::new()
        .layer(CodingTagsLayer::new())
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new().lookup(lookup));
    Router::new()
        .route(
            "/report",
            get(report)
                .put(replace)
                .route_layer(stack)
                .route_layer(middleware::from_fn(whole_plain_text_puts)),
        )
        .layer(TraceLayer::new_for_http())
        .with_state(store)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_http=debug,tower_conditional=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr = args::addr_or_exit("service_builder", "127.0.0.1:3003");
    let listener = args::bind_and_announce(&addr).await;
    let store = Arc::new(RwLock::new(first_report()));
    axum::serve(listener, app(store)).await.unwrap();
}
