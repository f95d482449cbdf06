//! The demo's HTTP API: SCIM-like `/Users` and plain `/Items`, each route with its own
//! conditional layer configuration. Shared with the `tour` example through `#[path]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};

use crate::db::{Db, Expect, NewDoc, Outcome, Row};

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

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

/// A stored resource as a response: its exact bytes, its validators.
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

/// What the layer validated, as the compare-and-swap the store performs.
pub fn expect_of(expectation: Option<&Expectation>) -> (Expect<'_>, Option<String>) {
    let Some(e) = expectation else {
        return (Expect::Anything, None);
    };
    if e.must_not_exist() {
        return (Expect::Absent, None);
    }
    if let Some(tag) = e.etag() {
        return (Expect::Anything, Some(tag.to_string()));
    }
    if e.must_exist() {
        return (Expect::Exists, None);
    }
    // If-Unmodified-Since or a non-matching If-None-Match: validated against this state.
    match e.current().and_then(|v| v.etag()) {
        Some(tag) => (Expect::Anything, Some(tag.to_string())),
        None if e.current().is_none() => (Expect::Absent, None),
        None => (Expect::Exists, None),
    }
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

async fn write(
    db: &Db,
    kind: &str,
    id: &str,
    e: Option<&Expectation>,
    doc: Vec<u8>,
    content_type: &str,
) -> Response {
    let location = format!("/{kind}s/{id}");
    let (expect, tag) = expect_of(e);
    let expect = match &tag {
        Some(tag) => Expect::Tag(tag),
        None => expect,
    };
    answer(
        db.conditional_update(kind, id, expect, NewDoc::strong(doc, content_type))
            .await,
        &location,
    )
}

async fn delete(db: &Db, kind: &str, id: &str, e: Option<&Expectation>) -> Response {
    let (expect, tag) = expect_of(e);
    let expect = match &tag {
        Some(tag) => Expect::Tag(tag),
        None => expect,
    };
    match db.conditional_delete(kind, id, expect).await {
        Ok(Outcome::Success { .. }) => StatusCode::NO_CONTENT.into_response(),
        other => answer(other, ""),
    }
}

// ---- /Users: SCIM-like -------------------------------------------------------------------

/// The stored User document: the client's attributes plus id, schema and meta.
/// Errors are the detail of a 400.
fn user_doc(
    id: &str,
    mut attributes: serde_json::Map<String, Value>,
) -> Result<Vec<u8>, &'static str> {
    let Some(Value::String(_)) = attributes.get("userName") else {
        return Err("a User needs a string userName");
    };
    attributes.remove("meta");
    attributes.insert("schemas".into(), json!([USER_SCHEMA]));
    attributes.insert("id".into(), json!(id));
    attributes.insert(
        "meta".into(),
        json!({ "resourceType": "User", "location": format!("/Users/{id}") }),
    );
    Ok(serde_json::to_vec(&Value::Object(attributes)).expect("JSON serializes"))
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, &'static str> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("the body must be a JSON object"),
    }
}

fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tag = EntityTag::from_content(seed.as_bytes());
    String::from_utf8_lossy(&tag.opaque()[..16]).replace(['-', '_'], "0")
}

async fn list_users(State(db): State<Db>) -> Response {
    match db.list("User").await {
        Ok(rows) => {
            let resources: Vec<Value> = rows
                .iter()
                .filter_map(|r| serde_json::from_slice(&r.doc).ok())
                .collect();
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": resources.len(),
                "Resources": resources,
            });
            (
                [
                    (header::CONTENT_TYPE, SCIM_JSON),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body.to_string(),
            )
                .into_response()
        }
        Err(e) => storage_error(e),
    }
}

async fn create_user(State(db): State<Db>, body: Bytes) -> Response {
    let id = new_id();
    let doc = match parse_object(&body).and_then(|attrs| user_doc(&id, attrs)) {
        Ok(doc) => doc,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail, json!({})),
    };
    write(&db, "User", &id, None, doc, SCIM_JSON).await
}

async fn get_resource(db: Db, id: String, kind: &'static str) -> Response {
    match db.get(kind, &id).await {
        Ok(Some(row)) => representation(StatusCode::OK, &format!("/{kind}s/{id}"), &row),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such resource", json!({})),
        Err(e) => storage_error(e),
    }
}

async fn replace_user(
    State(db): State<Db>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
    body: Bytes,
) -> Response {
    let doc = match parse_object(&body).and_then(|attrs| user_doc(&id, attrs)) {
        Ok(doc) => doc,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail, json!({})),
    };
    // SCIM PUT replaces; it never creates: an absent user stays absent.
    let (expect, tag) = expect_of(e.as_deref());
    let expect = match (&tag, expect) {
        (Some(tag), _) => Expect::Tag(tag),
        (None, Expect::Anything) => Expect::Exists,
        (None, other) => other,
    };
    answer(
        db.conditional_update("User", &id, expect, NewDoc::strong(doc, SCIM_JSON))
            .await,
        &format!("/Users/{id}"),
    )
}

/// PATCH with an RFC 7396 merge patch (SCIM's own PATCH operations are out of scope).
async fn patch_user(
    State(db): State<Db>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
    body: Bytes,
) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(_) => return problem(StatusCode::BAD_REQUEST, "the patch must be JSON", json!({})),
    };
    let current = match db.get("User", &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such resource", json!({})),
        Err(e) => return storage_error(e),
    };
    let mut document: Value = serde_json::from_slice(&current.doc).unwrap_or(json!({}));
    merge_patch(&mut document, &patch);
    let Value::Object(attrs) = document else {
        return problem(
            StatusCode::BAD_REQUEST,
            "a User is a JSON object",
            json!({}),
        );
    };
    let doc = match user_doc(&id, attrs) {
        Ok(doc) => doc,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, detail, json!({})),
    };
    // The patch was applied to `current`: write only if that is still what is stored.
    let (_, validated) = expect_of(e.as_deref());
    let tag = validated.unwrap_or(current.etag);
    answer(
        db.conditional_update(
            "User",
            &id,
            Expect::Tag(&tag),
            NewDoc::strong(doc, SCIM_JSON),
        )
        .await,
        &format!("/Users/{id}"),
    )
}

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("an object");
    for (name, value) in members {
        if value.is_null() {
            object.remove(name);
        } else {
            merge_patch(object.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

async fn delete_user(
    State(db): State<Db>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
) -> Response {
    delete(&db, "User", &id, e.as_deref()).await
}

// ---- /Items: stored as sent --------------------------------------------------------------

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
    write(&db, "Item", &id, e.as_deref(), body.to_vec(), &content_type).await
}

async fn delete_item(
    State(db): State<Db>,
    Path(id): Path<String>,
    e: Option<Extension<Expectation>>,
) -> Response {
    delete(&db, "Item", &id, e.as_deref()).await
}

/// The lookup for one kind: the stored tag and modification time, straight from the row.
fn lookup(
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
        let id = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        async move {
            let row = db.get(kind, &id).await?;
            Ok::<_, crate::db::Error>(row.map(|row| {
                let tag: EntityTag = row.etag.parse().expect("stored tags are valid");
                Validators::new()
                    .with_etag(tag)
                    .with_last_modified(row.last_modified())
            }))
        }
    })
}

/// The whole API. Each route has its own layer configuration:
///
/// - `/Users` (list, create): hashed reads; creates are unconditional.
/// - `/Users/{id}`: lookup-backed and strict — PUT/PATCH/DELETE need `If-Match` (428
///   otherwise), and PUT never creates (`creating_methods([])`).
/// - `/Items/{id}`: lookup-backed; PUT creates or replaces, `If-None-Match: *` makes it
///   create-only.
pub fn app(db: Db) -> Router {
    let users = ConditionalLayer::new()
        .lookup(lookup(db.clone(), "User"))
        .require_preconditions(true)
        .creating_methods([])
        .serialize_writes(true);
    let items = ConditionalLayer::new()
        .lookup(lookup(db.clone(), "Item"))
        .serialize_writes(true);
    Router::new()
        .route(
            "/Users",
            get(list_users)
                .post(create_user)
                .route_layer(ConditionalLayer::new().no_lookup()),
        )
        .route(
            "/Users/{id}",
            get(|State(db): State<Db>, Path(id): Path<String>| get_resource(db, id, "User"))
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user)
                .route_layer(users),
        )
        .route(
            "/Items/{id}",
            get(|State(db): State<Db>, Path(id): Path<String>| get_resource(db, id, "Item"))
                .put(put_item)
                .delete(delete_item)
                .route_layer(items),
        )
        .with_state(db)
}
