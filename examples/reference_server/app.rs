//! The reference server's routes: one in-memory store behind the conditional layer.
//!
//! Shared with the tests through `#[path]`, so what is tested is what runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use futures_util::StreamExt;
use serde_json::Value;
use tower_conditional::precondition::IfRange;
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};
use tower_http::timeout::TimeoutLayer;

use crate::body_first;

/// One stored representation, with its strong tag computed once, when it is written.
#[derive(Clone)]
pub struct Item {
    pub bytes: Bytes,
    pub content_type: HeaderValue,
    pub modified: SystemTime,
    /// `EntityTag::from_content(bytes)`: the tag the layer would compute for a GET. The
    /// handlers send it themselves, so every size of item has it (the layer hashes only up
    /// to `max_buffer`) and the layer keeps it instead of hashing again.
    pub etag: EntityTag,
}

impl Item {
    fn new(bytes: Bytes, content_type: HeaderValue) -> Self {
        Item {
            etag: EntityTag::from_content(&bytes),
            bytes,
            content_type,
            modified: SystemTime::now(),
        }
    }
}

/// The store every route shares, keyed by the `{id}` path segment as sent.
pub type Store = Arc<Mutex<HashMap<String, Item>>>;

const ALLOW: &str = "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS";
const BEARER: &str = "let-me-in";

/// The last path segment: the item id, as the lookup and the handlers both see it.
fn item_id(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

/// What an item handler works on: the store, the id the path names (as the lookup reads
/// it), and what the layer validated, when it checked a precondition.
struct Target {
    store: Store,
    id: String,
    expectation: Option<Expectation>,
}

impl Target {
    /// The store, locked, if the item is still what the layer validated (another writer may
    /// have changed it since the layer's lookup).
    fn lock_if_unchanged(&self) -> Option<MutexGuard<'_, HashMap<String, Item>>> {
        let items = self.store.lock().unwrap();
        still_expected(items.get(&self.id), self.expectation.as_ref()).then_some(items)
    }
}

impl FromRequestParts<Store> for Target {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, store: &Store) -> Result<Self, Infallible> {
        Ok(Target {
            store: store.clone(),
            id: item_id(parts.uri.path()).to_owned(),
            expectation: parts.extensions.get::<Expectation>().cloned(),
        })
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// The representation of `item` with every field a GET sends, as `status`.
fn representation(status: StatusCode, id: &str, item: &Item, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, item.content_type.clone());
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&httpdate::fmt_http_date(item.modified)).unwrap(),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // 200 and 206 alike carry the representation's validator (RFC 9110 §15.3.7).
    h.insert(header::ETAG, item.etag.to_header_value());
    if let Ok(location) = HeaderValue::from_str(&format!("/items/{id}")) {
        h.insert(header::CONTENT_LOCATION, location);
    }
    response
}

/// A write's answer: the stored representation with its ETag.
fn stored(status: StatusCode, id: &str, item: &Item) -> Response {
    let mut response = representation(status, id, item, item.bytes.clone());
    if status == StatusCode::CREATED {
        if let Ok(location) = HeaderValue::from_str(&format!("/items/{id}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    response
}

/// A single `bytes=` range: `Some(Ok(first..=last))`, `Some(Err(()))` when unsatisfiable,
/// `None` when the field is to be ignored (absent, another unit, several ranges, malformed).
fn parse_range(headers: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let mut values = headers.get_all(header::RANGE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let spec = value.to_str().ok()?.trim();
    let (unit, set) = spec.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix: the last N bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(n), len - 1)));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let start: u64 = first.parse().ok()?;
    let end: Option<u64> = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    if end.is_some_and(|end| end < start) {
        return None; // invalid range-spec: ignore the field
    }
    if start >= len {
        return Some(Err(()));
    }
    Some(Ok((start, end.map_or(len - 1, |e| e.min(len - 1)))))
}

async fn get_item(Target { store, id, .. }: Target, headers: HeaderMap) -> Response {
    let id = id.as_str();
    let Some(item) = store.lock().unwrap().get(id).cloned() else {
        return problem(StatusCode::NOT_FOUND, "no such item");
    };
    let len = item.bytes.len() as u64;
    // The layer checked `If-Range` against the lookup; another write may have landed since.
    // Checked again here, against the version served: a part of another version is never
    // spliced onto the client's (RFC 9110 §13.1.5). Dates are weak here (the store may
    // write twice within a second), so only an entity tag keeps the Range.
    let range = match IfRange::parse(headers.get_all(header::IF_RANGE)) {
        None => parse_range(&headers, len),
        Some(IfRange::Tag(tag)) if tag.strong_eq(&item.etag) => parse_range(&headers, len),
        Some(_) => None,
    };
    match range {
        Some(Ok((first, last))) => {
            let part = item.bytes.slice(first as usize..=last as usize);
            let mut response = representation(StatusCode::PARTIAL_CONTENT, id, &item, part);
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).unwrap(),
            );
            response
        }
        Some(Err(())) => {
            let mut response = problem(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).unwrap(),
            );
            response
        }
        None => representation(StatusCode::OK, id, &item, item.bytes.clone()),
    }
}

/// The compare-and-swap on what the layer validated, under the store lock: another writer
/// may have changed the item since the layer's lookup.
fn still_expected(current: Option<&Item>, expectation: Option<&Expectation>) -> bool {
    let Some(e) = expectation else { return true };
    if e.must_not_exist() && current.is_some() {
        return false;
    }
    if e.must_exist() && current.is_none() {
        return false;
    }
    if let (Some(expected), Some(item)) = (e.etag(), current) {
        if !expected.strong_eq(&item.etag) {
            return false;
        }
    }
    if let (Some(since), Some(item)) = (e.unmodified_since(), current) {
        if tower_conditional::precondition::to_http_seconds(item.modified) > since {
            return false;
        }
    }
    true
}

fn lost_race() -> Response {
    problem(
        StatusCode::PRECONDITION_FAILED,
        "the item changed while this request was checked",
    )
}

async fn put_item(target: Target, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let Some(mut items) = target.lock_if_unchanged() else {
        return lost_race();
    };
    let id = target.id.as_str();
    let item = Item::new(body, content_type);
    let created = items.insert(id.to_owned(), item.clone()).is_none();
    stored(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        id,
        &item,
    )
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let object = target.as_object_mut().expect("made an object above");
    for (name, value) in members {
        if value.is_null() {
            object.remove(name);
        } else {
            merge_patch(object.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

fn is_json(value: &HeaderValue) -> bool {
    let v = value.to_str().unwrap_or_default().to_ascii_lowercase();
    let essence = v.split(';').next().unwrap_or_default().trim().to_owned();
    essence == "application/json" || essence.ends_with("+json")
}

/// Applies `change` to the stored item as JSON and answers the new representation.
fn modify_json(
    target: Target,
    change: impl FnOnce(&mut Value) -> Result<(), &'static str>,
) -> Response {
    let Some(mut items) = target.lock_if_unchanged() else {
        return lost_race();
    };
    let id = target.id.as_str();
    let Some(current) = items.get(id) else {
        return problem(StatusCode::NOT_FOUND, "no such item");
    };
    let Ok(mut document) = serde_json::from_slice::<Value>(&current.bytes) else {
        return problem(
            StatusCode::CONFLICT,
            "the stored representation is not JSON",
        );
    };
    if let Err(conflict) = change(&mut document) {
        return problem(StatusCode::CONFLICT, conflict);
    }
    let content_type = if is_json(&current.content_type) {
        current.content_type.clone()
    } else {
        HeaderValue::from_static("application/json")
    };
    let bytes = Bytes::from(serde_json::to_vec(&document).expect("a Value serializes"));
    let item = Item::new(bytes, content_type);
    items.insert(id.to_owned(), item.clone());
    stored(StatusCode::OK, id, &item)
}

async fn patch_item(target: Target, body: Bytes) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "the patch is not JSON");
    };
    modify_json(target, |doc| {
        merge_patch(doc, &patch);
        Ok(())
    })
}

async fn post_item(target: Target) -> Response {
    modify_json(target, |doc| {
        let Some(object) = doc.as_object_mut() else {
            return Err("the stored representation is not a JSON object");
        };
        let next = match object.get("posts") {
            None => Value::from(1),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i
                    .checked_add(1)
                    .map(Value::from)
                    .unwrap_or(Value::from(i as f64 + 1.0)),
                (_, Some(u), _) => u
                    .checked_add(1)
                    .map(Value::from)
                    .unwrap_or(Value::from(u as f64 + 1.0)),
                (_, _, Some(f)) => Value::from(f + 1.0),
                _ => return Err("`posts` is not a number"),
            },
            Some(_) => return Err("`posts` is not a number"),
        };
        object.insert("posts".to_owned(), next);
        Ok(())
    })
}

async fn delete_item(target: Target) -> Response {
    let Some(mut items) = target.lock_if_unchanged() else {
        return lost_race();
    };
    match items.remove(&target.id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => problem(StatusCode::NOT_FOUND, "no such item"),
    }
}

async fn options_item() -> Response {
    (StatusCode::NO_CONTENT, [(header::ALLOW, ALLOW)]).into_response()
}

/// Requests refused from their head alone, before the conditional layer: RFC 9110 §13.2.1
/// has such failures take precedence over preconditions (a 400 or 415 is what the request
/// gets with or without them). Wraps the layer on every item route.
async fn refuse_early(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if request.method() == Method::PUT && headers.contains_key(header::CONTENT_RANGE) {
        // RFC 9110 §14.5: a partial PUT must not be taken for a whole representation.
        return problem(
            StatusCode::BAD_REQUEST,
            "PUT with Content-Range is not supported",
        );
    }
    if request.method() == Method::PATCH
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| !is_json(ct))
    {
        let mut response = problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a JSON merge patch",
        );
        response.headers_mut().insert(
            "accept-patch",
            HeaderValue::from_static("application/merge-patch+json"),
        );
        return response;
    }
    next.run(request).await
}

/// A write's whole body, read before the layer takes the item's write lock
/// (`examples/support/body_first.rs`): a client that stalls mid-body then holds nothing, and
/// the timeout outside answers it 408.
async fn body_first(request: Request, next: Next) -> Response {
    match body_first::read_whole(request, body_first::BODY_LIMIT).await {
        Ok(request) => next.run(request).await,
        Err((status, detail)) => problem(status, detail),
    }
}

async fn require_bearer(request: Request, next: Next) -> Response {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.trim() == BEARER
        });
    if !authorized {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <token>",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"reference\""),
        );
        return response;
    }
    next.run(request).await
}

/// The layer of every item route. Its lookup reads the store's current validators for the
/// item the path names; its tag is the one a GET of the same bytes gets from the layer.
fn item_layer(
    store: &Store,
) -> ConditionalLayer<
    impl tower::Service<
            LookupRequest,
            Response = Option<Validators>,
            Error = Infallible,
            Future = impl Send,
        > + Clone
        + Send
        + Sync,
> {
    let store = store.clone();
    let lookup = lookup_fn(move |req: LookupRequest| {
        let found = store
            .lock()
            .unwrap()
            .get(item_id(req.uri().path()))
            .map(|item| {
                Validators::new()
                    .with_etag(item.etag.clone())
                    .with_last_modified(item.modified)
            });
        async move { Ok::<_, Infallible>(found) }
    });
    ConditionalLayer::new()
        .lookup(lookup)
        .serialize_writes(true)
}

/// How long one request on an item route may take: reading its body, waiting for the item's
/// write lock (`serialize_writes`), the handler. The body is read before the lock is taken
/// (`body_first`), so a client that stalls mid-body holds nothing while it stalls; after
/// this it gets 408, and so does a write that waited this long (the layer's docs: bound the
/// wait with a timeout outside the layer).
pub const ITEM_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn request_timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, ITEM_REQUEST_TIMEOUT)
}

fn item_routes(store: &Store) -> MethodRouter<Store> {
    get(get_item)
        .put(put_item)
        .patch(patch_item)
        .post(post_item)
        .delete(delete_item)
        .options(options_item)
        .route_layer(item_layer(store))
        .route_layer(middleware::from_fn(body_first))
        .route_layer(middleware::from_fn(refuse_early))
        .route_layer(request_timeout())
}

fn strict_item_routes(store: &Store) -> MethodRouter<Store> {
    let relaxed = get(get_item)
        .post(post_item)
        .options(options_item)
        .route_layer(item_layer(store));
    let strict = put(put_item)
        .patch(patch_item)
        .delete(delete_item)
        .route_layer(item_layer(store).require_preconditions(true));
    relaxed
        .merge(strict)
        .route_layer(middleware::from_fn(body_first))
        .route_layer(middleware::from_fn(refuse_early))
        .route_layer(request_timeout())
}

async fn blob(Path(n): Path<String>) -> Response {
    let Ok(n) = n.parse::<u64>() else {
        return problem(StatusCode::BAD_REQUEST, "the length must be a whole number");
    };
    const CHUNK: u64 = 8 * 1024;
    let chunks = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = CHUNK.min(n - sent);
        let data: Vec<u8> = (sent..sent + len).map(|i| (i % 251) as u8).collect();
        Some((Ok::<_, Infallible>(Bytes::from(data)), sent + len))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(chunks),
    )
        .into_response()
}

async fn sse() -> Response {
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
        Duration::from_millis(100),
    ))
    .enumerate()
    .map(|(n, _)| Ok::<_, Infallible>(Bytes::from(format!("id: {n}\ndata: tick {n}\n\n"))));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ticks),
    )
        .into_response()
}

/// The whole application.
pub fn app(store: Store) -> Router {
    let streams = ConditionalLayer::new().max_buffer(1024 * 1024);
    Router::new()
        .route("/items/{id}", item_routes(&store))
        .route("/strict/items/{id}", strict_item_routes(&store))
        .route(
            "/private/items/{id}",
            // Authentication is decided before any precondition: it wraps the layer.
            item_routes(&store).route_layer(middleware::from_fn(require_bearer)),
        )
        .route("/blob/{n}", get(blob).route_layer(streams.clone()))
        .route("/sse", get(sse).route_layer(streams))
        .with_state(store)
}
