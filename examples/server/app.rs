//! The demo's HTTP API: a SCIM 2.0 service provider under `/scim/v2` (see `scim.rs`) and
//! plain `/Items`, each route with its own conditional layer configuration. Shared with the
//! `tour` example through `#[path]`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};
use tower_conditional::{lookup_fn, ConditionalLayer, Expectation, LookupRequest, Validators};
use tower_http::timeout::TimeoutLayer;

use crate::db::{entity_tag, header_form, Db, Expect, NewDoc, Outcome, Row};

/// How the server runs: the SCIM bearer token, and whether SCIM writes must be conditional.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer token every `/scim/v2` request must present.
    pub token: Arc<str>,
    /// `--strict`: PUT, PATCH and DELETE on SCIM resources need `If-Match` (428 otherwise).
    pub strict: bool,
}

/// The whole API: `/scim/v2/…` behind a bearer token, `/Items/{id}` open.
///
/// `/Items/{id}` has a lookup-backed layer: PUT creates or replaces, `If-None-Match: *`
/// makes it create-only, a stale `If-Match` is 412 before the handler runs.
pub fn app(db: Db, settings: &Settings) -> Router {
    let items = ConditionalLayer::new()
        .lookup(lookup(db.clone(), "Item"))
        .serialize_writes(true);
    let plain = Router::new()
        .route(
            "/Items/{id}",
            get(get_item)
                .put(put_item)
                .delete(delete_item)
                .route_layer(items)
                .route_layer(middleware::from_fn(body_first))
                .route_layer(middleware::from_fn(whole_puts_only))
                .route_layer(request_timeout()),
        )
        .with_state(db.clone());
    crate::scim::router(db, settings).merge(plain)
}

/// A write's whole body, read before the layer takes the target's write lock
/// (`examples/support/body_first.rs`): a client that stalls mid-body then holds nothing, and
/// the timeout outside answers it 408. (The SCIM resources have their own, for SCIM's error
/// format.)
pub async fn body_first(request: Request, next: Next) -> Response {
    match crate::body_first::read_whole(request, crate::body_first::BODY_LIMIT).await {
        Ok(request) => next.run(request).await,
        Err((status, detail)) => problem(status, detail, Value::Null),
    }
}

/// A PUT that carries `Content-Range` is a partial update this API does not do: 400 (RFC
/// 9110 §14.5), before any precondition is evaluated (outside the conditional layer), so it is
/// never taken for a whole representation.
async fn whole_puts_only(request: Request, next: Next) -> Response {
    if is_partial_put(&request) {
        return problem(
            StatusCode::BAD_REQUEST,
            "PUT with Content-Range (a partial update) is not supported",
            Value::Null,
        );
    }
    next.run(request).await
}

/// A PUT with `Content-Range`: not a whole representation (RFC 9110 §14.5).
pub fn is_partial_put(request: &Request) -> bool {
    request.method() == Method::PUT && request.headers().contains_key(header::CONTENT_RANGE)
}

/// How long one request on a route with serialized writes may take: reading its body
/// ([`body_first`], before the write lock is taken, so a client that stalls mid-body holds
/// nothing), waiting for the lock, the handler. After this, 408 (the layer's
/// `serialize_writes` docs: bound the wait with a timeout outside the layer).
pub fn request_timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(10))
}

/// The lookup for one kind: the stored tag and modification time, straight from the row
/// named by the route's `{id}`.
pub fn lookup(
    db: Db,
    kind: &'static str,
) -> impl tower::Service<
    LookupRequest,
    Response = Option<Validators>,
    Error = crate::db::Error,
    Future = impl Send,
> + Clone
       + Send
       + Sync {
    lookup_fn(move |req: LookupRequest| {
        let db = db.clone();
        async move {
            // The id exactly as the handlers' `Path` extractor decodes it (the lookup's
            // request carries the route's parameters in its extensions).
            let (mut parts, ()) = req.into_parts();
            let Ok(Path(id)) = Path::<String>::from_request_parts(&mut parts, &()).await else {
                return Ok(None);
            };
            let row = db.get(kind, &id).await?;
            Ok::<_, crate::db::Error>(row.map(|row| {
                let tag = entity_tag(&row.etag).expect("stored tags are valid");
                Validators::new()
                    .with_etag(tag)
                    .with_last_modified(row.last_modified())
            }))
        }
    })
}

/// What the layer validated, as the compare-and-swap the store performs: the expected
/// state, and the tag the write must still find (when the layer checked one).
pub fn expect_of(expectation: Option<&Expectation>) -> (Expect<'_>, Option<String>) {
    let Some(e) = expectation else {
        return (Expect::Anything, None);
    };
    if e.must_not_exist() {
        return (Expect::Absent, None);
    }
    if let Some(tag) = e.etag() {
        return (Expect::Anything, Some(header_form(tag)));
    }
    if e.must_exist() {
        return (Expect::Exists, None);
    }
    // If-Unmodified-Since or a non-matching If-None-Match: validated against this state.
    match e.current().and_then(|v| v.etag()) {
        Some(tag) => (Expect::Anything, Some(header_form(tag))),
        None if e.current().is_none() => (Expect::Absent, None),
        None => (Expect::Exists, None),
    }
}

// ---- /Items: stored as sent, problem+json errors ------------------------------------------

fn problem(status: StatusCode, detail: &str, extra: Value) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn storage_error(e: crate::db::Error) -> Response {
    tracing::error!(error = %e, "storage failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable",
        json!({}),
    )
}

/// A stored item as a response: its exact bytes, its validators.
fn representation(status: StatusCode, location: &str, row: &Row) -> Response {
    let mut response = (status, row.doc.clone()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&row.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&httpdate::fmt_http_date(row.last_modified())).unwrap(),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(location) = HeaderValue::from_str(location) {
        h.insert(header::CONTENT_LOCATION, location.clone());
        if status == StatusCode::CREATED {
            h.insert(header::LOCATION, location);
        }
    }
    // The stored tag is EntityTag::from_content of these bytes: the one the layer would
    // compute, so it keeps it instead of hashing again. Writes answer with the new tag.
    if let Ok(tag) = HeaderValue::from_str(&row.etag) {
        h.insert(header::ETAG, tag);
    }
    response
}

/// Maps a store outcome to the HTTP answer.
fn answer(outcome: Result<Outcome, crate::db::Error>, location: &str) -> Response {
    match outcome {
        Ok(Outcome::Success { row, created }) => representation(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            location,
            &row,
        ),
        Ok(Outcome::VersionMismatch { expected, current }) => {
            let mut response = problem(
                StatusCode::PRECONDITION_FAILED,
                "the resource changed since it was read",
                json!({ "expected_etag": expected, "current_etag": current }),
            );
            if let Ok(tag) = HeaderValue::from_str(&current) {
                response.headers_mut().insert(header::ETAG, tag);
            }
            response
        }
        Ok(Outcome::Exists { current }) => problem(
            StatusCode::PRECONDITION_FAILED,
            "the resource already exists",
            json!({ "current_etag": current }),
        ),
        Ok(Outcome::NotFound) => problem(StatusCode::NOT_FOUND, "no such resource", json!({})),
        Ok(Outcome::Conflict) => problem(StatusCode::CONFLICT, "the name is taken", json!({})),
        Err(e) => storage_error(e),
    }
}

/// The compare-and-swap for what the layer validated: the tag it matched, when it checked one.
fn cas<'a>(e: Option<&'a Expectation>, tag: &'a mut Option<String>) -> Expect<'a> {
    let (expect, validated) = expect_of(e);
    *tag = validated;
    match tag {
        Some(tag) => Expect::Tag(tag),
        None => expect,
    }
}

async fn get_item(State(db): State<Db>, Path(id): Path<String>) -> Response {
    match db.get("Item", &id).await {
        Ok(Some(row)) => representation(StatusCode::OK, &format!("/Items/{id}"), &row),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such resource", json!({})),
        Err(e) => storage_error(e),
    }
}

async fn put_item(
    State(db): State<Db>,
    Path(id): Path<String>,
    headers: HeaderMap,
    e: Option<Extension<Expectation>>,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut tag = None;
    let expect = cas(e.as_deref(), &mut tag);
    let new = NewDoc::strong(body.to_vec(), &content_type);
    answer(
        db.conditional_update("Item", &id, expect, new).await,
        &format!("/Items/{id}"),
    )
}

async fn delete_item(
    State(db): State<Db>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
) -> Response {
    let mut tag = None;
    let expect = cas(e.as_deref(), &mut tag);
    match db.conditional_delete("Item", &id, expect).await {
        Ok(Outcome::Success { .. }) => StatusCode::NO_CONTENT.into_response(),
        other => answer(other, ""),
    }
}
