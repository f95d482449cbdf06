//! The SCIM 2.0 service provider (RFC 7643, RFC 7644) under `/scim/v2`, on the conditional
//! layer.
//!
//! Versioning (RFC 7644 §3.14): every User and Group has a version, the store's `etag`
//! column, computed when it is written: a *weak* tag of the stored document. Responses carry
//! it both as `ETag` and as `meta.version` (RFC 7643 §3.1). Weak, because one version has
//! many representations (`attributes`, `excludedAttributes`, `meta.location` follows the
//! request's `Host`), and SCIM clients send `If-Match: W/"…"`; the layer compares `If-Match`
//! weakly on these routes (`weak_if_match(true)`), which is sound here because the tag
//! changes with every stored change (it hashes the document, `meta.lastModified` included).
//!
//! - `If-None-Match` on a GET: 304, by the layer, from the handler's tag.
//! - `If-Match` on PUT, PATCH, DELETE: optional. When sent, the layer's lookup reads the
//!   stored tag and a stale one is 412 before the handler runs; the handler's write is a
//!   compare-and-swap on the validated tag (`Expectation`), so a writer that got in between
//!   (another process, say) still makes it 412 and nothing is lost. `--strict` makes it
//!   required (428 without it; another guard such as `If-None-Match` does not stand in).
//! - A POST's preconditions are about the collection it adds to: evaluated against the
//!   collection's listing (its tag is the one a GET of it carries; it has no `Last-Modified`,
//!   so `If-Unmodified-Since` is ignored); a false one is 412 and nothing is created.
//! - Without `If-Match`, a PATCH is applied to the version read and written as a
//!   compare-and-swap on it, retried on a concurrent change: no update is lost either.
//!
//! Errors are SCIM error bodies (RFC 7644 §3.12), the layer's own 404, 412, 428 and 503
//! included (`on_reject`). Authentication — a bearer token — runs before everything else,
//! so an unauthenticated request learns nothing: no `ETag`, no 304, no 412.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tower_conditional::precondition::{evaluate, Decision, Options};
use tower_conditional::{
    ConditionalLayer, EntityTag, Expectation, Rejection, RejectionKind, Validators,
};

use crate::app::{expect_of, Settings};
use crate::db::{Db, Expect, NewDoc, Outcome, Row};
use crate::filter::{self, key_ci, AttrPath, Filter};
use crate::patch;
use crate::schema::{self, ResourceKind, ERROR, KINDS, LIST_RESPONSE, MAX_RESULTS};

pub const SCIM_JSON: &str = "application/scim+json";
/// Where the service provider lives.
pub const BASE_PATH: &str = "/scim/v2";

// ---- errors --------------------------------------------------------------------------------

/// A SCIM error response (RFC 7644 §3.12).
#[derive(Debug, Clone)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    /// A 400 with its `scimType`.
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }

    fn not_found(kind: &ResourceKind, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            None,
            format!("{} {id} not found", kind.name),
        )
    }

    fn stale() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            "the resource was modified since the version in If-Match; nothing was changed: \
             GET it again and retry with its meta.version",
        )
    }

    fn storage(e: crate::db::Error) -> Self {
        tracing::error!(error = %e, "storage failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the store is unavailable; nothing was changed, retry later",
        )
    }

    /// The response, as the `http::Response<Bytes>` the layer's `on_reject` also returns.
    pub fn to_http(&self) -> http::Response<Bytes> {
        let mut body = json!({
            "schemas": [ERROR],
            "status": self.status.as_str(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        let mut response = http::Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        self.to_http().map(axum::body::Body::from).into_response()
    }
}

/// The 428's detail, from the layer or from [`require_if_match`].
const IF_MATCH_REQUIRED: &str = "this server requires versioned writes: send If-Match with the \
     resource's meta.version (its ETag) on PUT, PATCH and DELETE";

/// `--strict`: PUT, PATCH and DELETE name the version they change with `If-Match`, or get
/// 428 (RFC 6585 §3) before anything else is looked at. SCIM versioning is `If-Match` (RFC
/// 7644 §3.14); the layer's `require_preconditions` alone would also take an
/// `If-None-Match` or an `If-Unmodified-Since` for a guard.
async fn require_if_match(request: Request, next: Next) -> Response {
    let versioned = matches!(
        *request.method(),
        Method::PUT | Method::PATCH | Method::DELETE
    );
    if versioned && !request.headers().contains_key(header::IF_MATCH) {
        return ScimError::new(StatusCode::PRECONDITION_REQUIRED, None, IF_MATCH_REQUIRED)
            .into_response();
    }
    next.run(request).await
}

/// A PUT with `Content-Range` replaces nothing: 400 (RFC 9110 §14.5), before its
/// preconditions are evaluated.
async fn whole_puts_only(request: Request, next: Next) -> Response {
    if crate::app::is_partial_put(&request) {
        let detail = "PUT with Content-Range (a partial update) is not supported; use PATCH";
        return ScimError::new(StatusCode::BAD_REQUEST, None, detail).into_response();
    }
    next.run(request).await
}

/// The layer's own answers (404, 412, 428, 503) as SCIM errors.
pub fn rejection(r: &Rejection) -> http::Response<Bytes> {
    let detail = match r.kind() {
        RejectionKind::PreconditionFailed(_) => {
            "a precondition failed: the resource's current version (meta.version) is not the \
             one If-Match names (or If-None-Match: * found it existing); nothing was changed"
        }
        RejectionKind::PreconditionRequired => IF_MATCH_REQUIRED,
        RejectionKind::LookupFailed => {
            "the resource's current version could not be read; nothing was changed, retry later"
        }
        RejectionKind::NotFound => "resource not found",
        _ => "the request was refused",
    };
    ScimError::new(r.status(), None, detail).to_http()
}

/// Turns the framework's own error answers (405, 413, a bad path, …) into SCIM errors,
/// keeping their headers (`Allow`, …).
async fn scim_errors(response: Response) -> Response {
    let status = response.status();
    let is_scim = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(SCIM_JSON.as_bytes()));
    if is_scim || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        text => text.to_owned(),
    };
    let mut answer = ScimError::new(status, None, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

// ---- authentication ------------------------------------------------------------------------

/// Bearer token (RFC 6750) on every SCIM request, before anything else runs.
async fn authenticate(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, credentials) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    let (detail, challenge) = match presented {
        Some(t) if same_secret(t.as_bytes(), token.as_bytes()) => return next.run(request).await,
        Some(_) => (
            "the bearer token is not valid",
            "Bearer realm=\"scim\", error=\"invalid_token\"",
        ),
        None => (
            "authentication required: Authorization: Bearer <token>",
            "Bearer realm=\"scim\"",
        ),
    };
    let mut response = ScimError::new(StatusCode::UNAUTHORIZED, None, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Compares without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- the router ----------------------------------------------------------------------------

/// `/scim/v2/…`: discovery, Users, Groups; each route with its own conditional layer, all
/// behind the bearer token.
pub fn router(db: Db, settings: &Settings) -> Router {
    // Reads only: the layer hashes the body for a strong ETag and answers 304.
    let discovery = || ConditionalLayer::new().no_lookup().on_reject(rejection);
    // List and create. A POST's preconditions are about the collection it adds to; without a
    // lookup here (a list's tag is the hash of its body) the create handler evaluates them.
    // --strict asks for none on a POST: the handler assigns the id.
    let collection = || ConditionalLayer::new().no_lookup().on_reject(rejection);
    // One resource: its tag comes from the store; writes are checked against it.
    let resource = |kind: &'static str| {
        ConditionalLayer::new()
            .lookup(crate::app::lookup(db.clone(), kind))
            .weak_if_match(true)
            // SCIM PUT replaces, never creates: If-Match on a missing resource is 404.
            .creating_methods([])
            .serialize_writes(true)
            .require_preconditions(settings.strict)
            .on_reject(rejection)
    };
    let p = |rest: &str| format!("{BASE_PATH}{rest}");
    let mut router = Router::new()
        .route(
            &p("/ServiceProviderConfig"),
            get(|h: HeaderMap| async move {
                discovery_doc(schema::service_provider_config(&base_url(&h)))
            })
            .route_layer(discovery()),
        )
        .route(
            &p("/Schemas"),
            get(|h: HeaderMap| async move { discovery_list(schema::schemas(&base_url(&h))) })
                .route_layer(discovery()),
        )
        .route(
            &p("/Schemas/{id}"),
            get(|h: HeaderMap, Path(id): Path<String>| async move {
                discovery_one(schema::schemas(&base_url(&h)), &id)
            })
            .route_layer(discovery()),
        )
        .route(
            &p("/ResourceTypes"),
            get(
                |h: HeaderMap| async move { discovery_list(schema::resource_types(&base_url(&h))) },
            )
            .route_layer(discovery()),
        )
        .route(
            &p("/ResourceTypes/{id}"),
            get(|h: HeaderMap, Path(id): Path<String>| async move {
                discovery_one(schema::resource_types(&base_url(&h)), &id)
            })
            .route_layer(discovery()),
        );
    // Users and Groups: the collection, and one resource.
    for kind in KINDS {
        let mut one = get(move |s, i, h, q| fetch(kind, s, i, h, q))
            .put(move |m, s, i, h, q, e, b| update(kind, m, s, i, h, q, e, b))
            .patch(move |m, s, i, h, q, e, b| update(kind, m, s, i, h, q, e, b))
            .delete(move |s, i, e| delete(kind, s, i, e))
            .route_layer(resource(kind.name))
            .route_layer(middleware::from_fn(body_first))
            .route_layer(crate::app::request_timeout());
        if settings.strict {
            one = one.route_layer(middleware::from_fn(require_if_match));
        }
        // Outermost: a partial PUT is 400 before any precondition, the strict 428 included.
        one = one.route_layer(middleware::from_fn(whole_puts_only));
        router = router
            .route(
                &p(kind.endpoint),
                get(move |s, h, q| list(kind, s, h, q))
                    .post(move |s, h, q, e, b| create(kind, s, h, q, e, b))
                    .route_layer(collection()),
            )
            .route(&p(&format!("{}/{{id}}", kind.endpoint)), one);
    }
    router
        .route(&p("/Bulk"), any(|| not_implemented("/Bulk")))
        .route(&p("/Me"), any(|| not_implemented("/Me")))
        .route(&p(""), any(no_such_endpoint))
        .route(&p("/{*rest}"), any(no_such_endpoint))
        .layer(middleware::map_response(scim_errors))
        .layer(middleware::from_fn_with_state(
            settings.token.clone(),
            authenticate,
        ))
        .layer(middleware::from_fn(host_from_authority))
        .with_state(db)
}

/// A write's whole body, read before the resource's layer takes its write lock (as
/// `app::body_first` does for `/Items`), refused in SCIM's error format (RFC 7644 §3.12).
async fn body_first(request: Request, next: Next) -> Response {
    match crate::body_first::read_whole(request, crate::body_first::BODY_LIMIT).await {
        Ok(request) => next.run(request).await,
        Err((status, detail)) => ScimError::new(status, None, detail).into_response(),
    }
}

/// An HTTP/2 request names its host in `:authority` (the URI), not in `Host` (RFC 9113
/// §8.3.1): copied into `Host`, so `meta.location`, `Location` and every URL built from the
/// request's host (and so each representation and its tag) are the same on both protocols.
async fn host_from_authority(mut request: Request, next: Next) -> Response {
    if !request.headers().contains_key(header::HOST) {
        let authority = request.uri().authority().map(|a| a.as_str().to_owned());
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
            request.headers_mut().insert(header::HOST, value);
        }
    }
    next.run(request).await
}

async fn not_implemented(what: &str) -> ScimError {
    ScimError::new(
        StatusCode::NOT_IMPLEMENTED,
        None,
        format!("{what} is not supported by this service provider (see /ServiceProviderConfig)"),
    )
}

async fn no_such_endpoint() -> ScimError {
    ScimError::new(
        StatusCode::NOT_FOUND,
        None,
        "no such endpoint: try /ServiceProviderConfig, /Schemas, /ResourceTypes, /Users, /Groups",
    )
}

/// The service provider's absolute base URL, from the request's `Host`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{BASE_PATH}")
}

fn scim_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, SCIM_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn discovery_doc(doc: Value) -> Response {
    scim_json(StatusCode::OK, &doc)
}

fn discovery_list(docs: Vec<Value>) -> Response {
    scim_json(StatusCode::OK, &list_response(docs.len(), 1, docs))
}

fn discovery_one(docs: Vec<Value>, id: &str) -> Response {
    match docs.into_iter().find(|d| d["id"] == id) {
        Some(doc) => scim_json(StatusCode::OK, &doc),
        None => {
            ScimError::new(StatusCode::NOT_FOUND, None, format!("{id} not found")).into_response()
        }
    }
}

fn list_response(total: usize, start: usize, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

// ---- query parameters ----------------------------------------------------------------------

type QueryParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// `attributes` / `excludedAttributes` (RFC 7644 §3.9).
#[derive(Debug, Default)]
struct Projection {
    include: Vec<AttrPath>,
    exclude: Vec<AttrPath>,
}

#[derive(Debug, Default)]
struct Params {
    filter: Option<String>,
    start_index: Option<String>,
    count: Option<String>,
    projection: Projection,
}

fn params(query: QueryParams) -> Result<Params, ScimError> {
    let Query(pairs) = query.map_err(|e| ScimError::bad("invalidSyntax", e.body_text()))?;
    let mut params = Params::default();
    let paths = |list: &str| -> Result<Vec<AttrPath>, ScimError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| filter::attr_path(s).map_err(|e| ScimError::bad("invalidValue", e.0)))
            .collect()
    };
    for (name, value) in pairs {
        match name.to_ascii_lowercase().as_str() {
            "filter" => params.filter = Some(value),
            "startindex" => params.start_index = Some(value),
            "count" => params.count = Some(value),
            "attributes" => params.projection.include = paths(&value)?,
            "excludedattributes" => params.projection.exclude = paths(&value)?,
            _ => {} // sortBy, sortOrder: sorting is not supported (and says so)
        }
    }
    Ok(params)
}

fn integer(name: &str, value: Option<&str>) -> Result<Option<i64>, ScimError> {
    value
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ScimError::bad("invalidValue", format!("{name} must be an integer")))
        })
        .transpose()
}

// ---- representations -----------------------------------------------------------------------

/// A stored resource as sent: the stored document plus `meta.location` and
/// `meta.version`.
fn render(kind: &ResourceKind, row: &Row, base: &str) -> Option<Value> {
    let mut doc: Value = serde_json::from_slice(&row.doc).ok()?;
    let id = doc["id"].as_str()?.to_owned();
    let meta = doc.get_mut("meta")?.as_object_mut()?;
    meta.insert(
        "location".into(),
        json!(format!("{base}{}/{id}", kind.endpoint)),
    );
    meta.insert("version".into(), json!(row.etag));
    Some(doc)
}

/// The response for one resource: `ETag` = `meta.version`, `Location` = `meta.location`.
fn respond(
    kind: &ResourceKind,
    status: StatusCode,
    row: &Row,
    base: &str,
    projection: &Projection,
) -> Response {
    let Some(doc) = render(kind, row, base) else {
        return ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the stored resource is unreadable",
        )
        .into_response();
    };
    let location = doc["meta"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut response = scim_json(status, &project(doc, projection));
    let h = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&row.etag) {
        h.insert(header::ETAG, tag);
    }
    if let Ok(location) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, location);
    }
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(row.last_modified())) {
        h.insert(header::LAST_MODIFIED, date);
    }
    response
}

/// Applies `attributes` / `excludedAttributes`. `id` and `schemas` are always returned. A
/// sub-attribute of a multi-valued attribute selects the whole attribute.
fn project(doc: Value, p: &Projection) -> Value {
    let Value::Object(doc) = doc else { return doc };
    let always =
        |name: &str| name.eq_ignore_ascii_case("id") || name.eq_ignore_ascii_case("schemas");
    let mut out = if p.include.is_empty() {
        doc.clone()
    } else {
        let mut out: Map<String, Value> = doc
            .iter()
            .filter(|(k, _)| always(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for path in &p.include {
            copy_path(&doc, &mut out, path);
        }
        out
    };
    for path in p.exclude.iter().filter(|p| !always(&p.name)) {
        remove_path(&mut out, path);
    }
    Value::Object(out)
}

/// The object a path names its attribute in, and the key of that object in the resource
/// (`None`: the resource itself).
fn scope(doc: &Map<String, Value>, path: &AttrPath) -> Option<Option<String>> {
    match &path.schema {
        None => Some(None),
        Some(schema) => match key_ci(doc, schema) {
            Some(key) => Some(Some(key)),
            None => filter::container(doc, Some(schema)).map(|_| None),
        },
    }
}

fn copy_path(doc: &Map<String, Value>, out: &mut Map<String, Value>, path: &AttrPath) {
    let Some(scope) = scope(doc, path) else {
        return;
    };
    let (source, target) = match &scope {
        None => (doc, out),
        Some(key) => match (
            doc.get(key),
            out.entry(key.clone()).or_insert_with(|| json!({})),
        ) {
            (Some(Value::Object(source)), Value::Object(target)) => (source, target),
            _ => return,
        },
    };
    let Some(key) = key_ci(source, &path.name) else {
        return;
    };
    match (&path.sub, &source[&key]) {
        (Some(sub), Value::Object(complex)) => {
            if let Some(sub_key) = key_ci(complex, sub) {
                if let Value::Object(o) = target.entry(key).or_insert_with(|| json!({})) {
                    o.insert(sub_key.clone(), complex[&sub_key].clone());
                }
            }
        }
        (_, value) => {
            target.insert(key, value.clone());
        }
    }
}

fn remove_path(doc: &mut Map<String, Value>, path: &AttrPath) {
    let Some(scope) = scope(doc, path) else {
        return;
    };
    let object = match scope {
        None => doc,
        Some(key) => match doc.get_mut(&key) {
            Some(Value::Object(o)) => o,
            _ => return,
        },
    };
    let Some(key) = key_ci(object, &path.name) else {
        return;
    };
    let Some(sub) = &path.sub else {
        object.remove(&key);
        return;
    };
    let strip = |o: &mut Map<String, Value>| {
        if let Some(k) = key_ci(o, sub) {
            o.remove(&k);
        }
    };
    match object.get_mut(&key) {
        Some(Value::Object(o)) => strip(o),
        Some(Value::Array(items)) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(strip),
        _ => {}
    }
}

// ---- documents -----------------------------------------------------------------------------

/// A new resource id: a random (version 4 style) UUID.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?} {} {} {}",
        SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        RandomState::new().hash_one(0u8),
    );
    let mut bytes: [u8; 16] = Sha256::digest(seed.as_bytes())[..16]
        .try_into()
        .expect("16 bytes");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC) for Unix seconds.
pub fn timestamp(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date, counting in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ScimError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ScimError::bad(
            "invalidSyntax",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ScimError::bad(
            "invalidSyntax",
            format!("the body is not JSON: {e}"),
        )),
    }
}

/// The document to store for a client's attributes: checked (400 `invalidValue`),
/// attribute names in canonical case, read-only ones replaced by the server's `id`,
/// `schemas` and `meta`. Also the value the store keeps unique, lowercased (`userName`
/// is `caseExact: false`).
fn document(
    kind: &ResourceKind,
    id: &str,
    attributes: Map<String, Value>,
    created: &str,
    now: i64,
) -> Result<(Vec<u8>, Option<String>), ScimError> {
    let canonical = |name: &str| {
        kind.attributes
            .iter()
            .chain(kind.extensions)
            .find(|a| a.eq_ignore_ascii_case(name))
            .map_or_else(|| name.to_owned(), |a| (*a).to_owned())
    };
    let ignored = |name: &str| {
        kind.read_only
            .iter()
            .chain(kind.dropped)
            .any(|a| a.eq_ignore_ascii_case(name))
    };
    let mut doc = Map::new();
    for (name, value) in attributes {
        let empty = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if !empty && !ignored(&name) {
            doc.insert(canonical(&name), value);
        }
    }
    let invalid = |detail: String| Err(ScimError::bad("invalidValue", detail));
    match doc.get(kind.required) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return invalid(format!(
                "a {} needs a non-empty string {}",
                kind.name, kind.required
            ))
        }
    }
    if doc.get("externalId").is_some_and(|v| !v.is_string()) {
        return invalid("externalId must be a string".into());
    }
    // Some clients send booleans as strings ("False"); store what the schema says.
    if let Some(active) = doc.get_mut("active") {
        match active {
            Value::Bool(_) => {}
            Value::String(s) if s.eq_ignore_ascii_case("true") => *active = json!(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => *active = json!(false),
            _ => return invalid("active must be a boolean".into()),
        }
    }
    if let Some(members) = doc.get_mut("members") {
        let Value::Array(list) = members else {
            return invalid("members must be an array".into());
        };
        let mut seen = std::collections::HashSet::new();
        for member in list.iter() {
            match member.get("value") {
                Some(Value::String(v)) if !v.is_empty() => {}
                _ => return invalid("each member needs a string value (the member's id)".into()),
            }
        }
        list.retain(|m| seen.insert(m["value"].clone()));
    }
    let mut schemas = vec![json!(kind.schema)];
    for (name, value) in &doc {
        if filter::is_urn(name) {
            if !value.is_object() {
                return invalid(format!("{name} must be an object of extension attributes"));
            }
            schemas.push(json!(name));
        }
    }
    let unique = kind
        .unique
        .and_then(|u| doc.get(u))
        .and_then(Value::as_str)
        .map(str::to_lowercase);
    doc.insert("schemas".into(), Value::Array(schemas));
    doc.insert("id".into(), json!(id));
    doc.insert(
        "meta".into(),
        json!({
            "resourceType": kind.name,
            "created": created,
            "lastModified": timestamp(now),
        }),
    );
    let bytes = serde_json::to_vec(&Value::Object(doc)).expect("JSON serializes");
    Ok((bytes, unique))
}

fn uniqueness(kind: &ResourceKind) -> ScimError {
    ScimError::new(
        StatusCode::CONFLICT,
        Some("uniqueness"),
        format!(
            "another {} has this {}",
            kind.name,
            kind.unique.unwrap_or("name")
        ),
    )
}

// ---- handlers ------------------------------------------------------------------------------

async fn list(
    kind: ResourceKind,
    State(db): State<Db>,
    headers: HeaderMap,
    query: QueryParams,
) -> Result<Response, ScimError> {
    let params = params(query)?;
    let filter: Option<Filter> = params
        .filter
        .as_deref()
        .map(filter::parse)
        .transpose()
        .map_err(|e| ScimError::bad("invalidFilter", e.0))?;
    // RFC 7644 §3.4.2.4: startIndex below 1 means 1, a negative count means 0.
    let start = integer("startIndex", params.start_index.as_deref())?
        .unwrap_or(1)
        .max(1) as usize;
    let count = integer("count", params.count.as_deref())?
        .map_or(MAX_RESULTS, |c| c.clamp(0, MAX_RESULTS as i64) as usize);
    let base = base_url(&headers);
    let rows = db.list(kind.name).await.map_err(ScimError::storage)?;
    let mut matching: Vec<Value> = rows
        .iter()
        .filter_map(|row| render(&kind, row, &base))
        .filter(|doc| filter.as_ref().is_none_or(|f| f.matches(doc)))
        .collect();
    // A stable order for paging: oldest first.
    matching.sort_by(|a, b| {
        let key = |d: &Value| (d["meta"]["created"].to_string(), d["id"].to_string());
        key(a).cmp(&key(b))
    });
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|doc| project(doc, &params.projection))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        &list_response(total, start, page),
    ))
}

async fn create(
    kind: ResourceKind,
    State(db): State<Db>,
    headers: HeaderMap,
    query: QueryParams,
    expectation: Option<Extension<Expectation>>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let projection = params(query)?.projection;
    if let Some(Extension(expectation)) = &expectation {
        collection_preconditions(kind, &db, &headers, expectation).await?;
    }
    let attributes = parse_object(&body)?;
    let id = new_id();
    let now = crate::db::now();
    let (doc, unique) = document(&kind, &id, attributes, &timestamp(now), now)?;
    let new = NewDoc::weak(doc, SCIM_JSON, unique, now);
    match db
        .conditional_update(kind.name, &id, Expect::Absent, new)
        .await
        .map_err(ScimError::storage)?
    {
        Outcome::Success { row, .. } => Ok(respond(
            &kind,
            StatusCode::CREATED,
            &row,
            &base_url(&headers),
            &projection,
        )),
        Outcome::Conflict => Err(uniqueness(&kind)),
        other => Err(ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("unexpected store outcome {other:?}"),
        )),
    }
}

/// A POST's preconditions (RFC 9110 §13.1), evaluated against the collection it adds to, as
/// a GET of it shows it now (the collection itself: a POST's query, which a create ignores,
/// selects nothing); its tag is the one the layer gives that listing. A false one (`If-Match`
/// with another tag, `If-None-Match: *` — the collection exists) is 412 and nothing is
/// created; the listing has no `Last-Modified`, so `If-Unmodified-Since` is ignored (§13.1.4).
/// (The listing and the insert are not one transaction: a concurrent create may land in
/// between; SCIM clients version resources, not collections.)
async fn collection_preconditions(
    kind: ResourceKind,
    db: &Db,
    headers: &HeaderMap,
    expectation: &Expectation,
) -> Result<(), ScimError> {
    if expectation.is_evaluated() || expectation.conditions().is_empty() {
        return Ok(());
    }
    let listing = list(
        kind,
        State(db.clone()),
        headers.clone(),
        Ok(Query(Vec::new())),
    )
    .await?;
    let bytes = axum::body::to_bytes(listing.into_body(), usize::MAX)
        .await
        .map_err(|e| ScimError::new(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()))?;
    let current = Validators::new().with_etag(EntityTag::from_content(&bytes));
    let decision = evaluate(
        &Method::POST,
        expectation.conditions(),
        Some(&current),
        Options::default(),
    );
    if let Decision::PreconditionFailed(_) = decision {
        return Err(ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            "a precondition on the collection failed (If-Match names another version of \
             it, or If-None-Match: * found it existing); nothing was created",
        ));
    }
    Ok(())
}

async fn fetch(
    kind: ResourceKind,
    State(db): State<Db>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: QueryParams,
) -> Result<Response, ScimError> {
    let projection = params(query)?.projection;
    match db.get(kind.name, &id).await.map_err(ScimError::storage)? {
        Some(row) => Ok(respond(
            &kind,
            StatusCode::OK,
            &row,
            &base_url(&headers),
            &projection,
        )),
        None => Err(ScimError::not_found(&kind, &id)),
    }
}

/// PUT replaces the resource with the body; PATCH applies the body's operations to it.
/// Either way the result is written as a compare-and-swap (see [`write`]) and answered.
#[allow(clippy::too_many_arguments)] // one per extractor
async fn update(
    kind: ResourceKind,
    method: Method,
    State(db): State<Db>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: QueryParams,
    e: Option<Extension<Expectation>>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let projection = params(query)?.projection;
    let row = if method == Method::PATCH {
        let operations = patch::parse(&body)?;
        let rules = patch::Rules {
            read_only: kind.read_only,
            extensions: kind.extensions,
        };
        write(&kind, &db, &id, e.as_deref(), |current| {
            let mut patched = current.clone();
            patch::apply(&mut patched, &operations, &rules)?;
            Ok(patched)
        })
        .await?
    } else {
        let attributes = parse_object(&body)?;
        write(&kind, &db, &id, e.as_deref(), |_| Ok(attributes.clone())).await?
    };
    Ok(respond(
        &kind,
        StatusCode::OK,
        &row,
        &base_url(&headers),
        &projection,
    ))
}

/// PUT and PATCH: `change` turns the stored attributes into the new ones, and the result is
/// written as a compare-and-swap on the version it was computed from.
///
/// With `If-Match` (validated by the layer), that version must be the validated one: a
/// writer that got in between makes this a 412. Without it, a concurrent change makes the
/// write start over from the newer version, a few times.
async fn write(
    kind: &ResourceKind,
    db: &Db,
    id: &str,
    expectation: Option<&Expectation>,
    change: impl Fn(&Map<String, Value>) -> Result<Map<String, Value>, ScimError>,
) -> Result<Row, ScimError> {
    let (expect, validated) = expect_of(expectation);
    if let Expect::Absent = expect {
        // If-None-Match: * on a resource that does not exist: SCIM PUT does not create.
        return Err(ScimError::not_found(kind, id));
    }
    for _ in 0..8 {
        let Some(row) = db.get(kind.name, id).await.map_err(ScimError::storage)? else {
            return Err(ScimError::not_found(kind, id));
        };
        if validated.as_ref().is_some_and(|tag| *tag != row.etag) {
            return Err(ScimError::stale());
        }
        let current = match serde_json::from_slice(&row.doc) {
            Ok(Value::Object(current)) => current,
            _ => {
                return Err(ScimError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    "unreadable",
                ))
            }
        };
        let created = current
            .get("meta")
            .and_then(|m| m.get("created"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let now = crate::db::now();
        let (doc, unique) = document(kind, id, change(&current)?, &created, now)?;
        let new = NewDoc::weak(doc, SCIM_JSON, unique, now);
        match db
            .conditional_update(kind.name, id, Expect::Tag(&row.etag), new)
            .await
            .map_err(ScimError::storage)?
        {
            Outcome::Success { row, .. } => return Ok(row),
            Outcome::VersionMismatch { .. } if validated.is_some() => {
                return Err(ScimError::stale())
            }
            Outcome::VersionMismatch { .. } => continue,
            Outcome::NotFound => return Err(ScimError::not_found(kind, id)),
            Outcome::Conflict => return Err(uniqueness(kind)),
            Outcome::Exists { .. } => break,
        }
    }
    Err(ScimError::new(
        StatusCode::CONFLICT,
        None,
        "the resource kept changing while this request was applied; retry",
    ))
}

async fn delete(
    kind: ResourceKind,
    State(db): State<Db>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
) -> Result<StatusCode, ScimError> {
    let (expect, validated) = expect_of(e.as_deref());
    let expect = match (&validated, expect) {
        (Some(tag), _) => Expect::Tag(tag),
        (None, Expect::Absent) => return Err(ScimError::not_found(&kind, &id)),
        (None, _) => Expect::Exists,
    };
    match db
        .conditional_delete(kind.name, &id, expect)
        .await
        .map_err(ScimError::storage)?
    {
        Outcome::Success { .. } => Ok(StatusCode::NO_CONTENT),
        Outcome::VersionMismatch { .. } | Outcome::Exists { .. } => Err(ScimError::stale()),
        Outcome::NotFound | Outcome::Conflict => Err(ScimError::not_found(&kind, &id)),
    }
}
