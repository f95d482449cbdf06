//! The layer inside axum: `Router::layer`, `route_layer`, `MethodRouter::layer`, HEAD.

mod common;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::{collect, independent_tag, serve_axum, tag};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};

type Db = Arc<Mutex<HashMap<String, String>>>;

async fn read(State(db): State<Db>, Path(id): Path<String>) -> impl IntoResponse {
    match db.lock().unwrap().get(&id) {
        Some(v) => (StatusCode::OK, v.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn write(
    State(db): State<Db>,
    Path(id): Path<String>,
    expectation: Option<axum::Extension<Expectation>>,
    body: String,
) -> StatusCode {
    let mut db = db.lock().unwrap();
    if let Some(axum::Extension(e)) = expectation {
        let current = db.get(&id).map(|v| EntityTag::from_content(v.as_bytes()));
        if e.etag().is_some() && current.as_ref() != e.etag() {
            return StatusCode::PRECONDITION_FAILED;
        }
    }
    db.insert(id, body);
    StatusCode::NO_CONTENT
}

fn app(db: Db) -> Router {
    let lookup_db = db.clone();
    let lookup = lookup_fn(move |req: LookupRequest| {
        let id = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let found = lookup_db
            .lock()
            .unwrap()
            .get(&id)
            .map(|v| Validators::new().with_etag(EntityTag::from_content(v.as_bytes())));
        async move { Ok::<_, std::convert::Infallible>(found) }
    });
    Router::new()
        // Whole-router layer over the hashed pages.
        .route("/hello", get(|| async { "Hello, world!" }))
        .layer(ConditionalLayer::new())
        // A lookup-backed resource with required preconditions, via route_layer.
        .merge(
            Router::new()
                .route("/items/{id}", get(read).put(write))
                .route_layer(
                    ConditionalLayer::new()
                        .lookup(lookup)
                        .require_preconditions(true),
                )
                .with_state(db.clone()),
        )
        // One method router, layered on its own.
        .route(
            "/tagged",
            get(|| async { ([(header::ETAG, "\"mine\"")], "handler tagged") })
                .layer(ConditionalLayer::new()),
        )
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

/// `/items/1` holds "first": a PUT with a stale `If-Match` is 412 and writes nothing (not
/// even through the layer's own GET); one with the tag a GET gave writes "second".
async fn a_stale_put_is_refused_and_a_current_one_writes<S, B>(app: &S, db: &Db)
where
    S: tower::Service<Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let got = app
        .clone()
        .oneshot(req("GET", "/items/1", &[], ""))
        .await
        .unwrap();
    let tag = tag(got.headers());
    let stale = app
        .clone()
        .oneshot(req("PUT", "/items/1", &[("if-match", "\"nope\"")], "x"))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(db.lock().unwrap()["1"], "first", "nothing written");
    let ok = app
        .clone()
        .oneshot(req("PUT", "/items/1", &[("if-match", &tag)], "second"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(db.lock().unwrap()["1"], "second");
}

#[tokio::test]
async fn router_layer_tags_and_revalidates() {
    let app = app(Db::default());
    let resp = app
        .clone()
        .oneshot(req("GET", "/hello", &[], ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tag = tag(resp.headers());
    assert_eq!(tag, independent_tag(b"Hello, world!"));
    let resp = app
        .clone()
        .oneshot(req("GET", "/hello", &[("if-none-match", &tag)], ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(collect(resp.into_body()).await.is_empty());
}

#[tokio::test]
async fn axum_head_gets_the_get_etag_and_length() {
    let app = app(Db::default());
    let resp = app.oneshot(req("HEAD", "/hello", &[], "")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::ETAG],
        independent_tag(b"Hello, world!").as_str()
    );
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "13");
    assert!(collect(resp.into_body()).await.is_empty());
}

#[tokio::test]
async fn route_layer_with_lookup_and_required_preconditions() {
    let db = Db::default();
    db.lock().unwrap().insert("1".into(), "first".into());
    let app = app(db.clone());

    let resp = app
        .clone()
        .oneshot(req("PUT", "/items/1", &[], "x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED);

    a_stale_put_is_refused_and_a_current_one_writes(&app, &db).await;

    // route_layer: unknown routes are still 404, untouched.
    let missing = app.oneshot(req("PUT", "/nowhere", &[], "")).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn method_router_layer_keeps_a_handler_etag() {
    let app = app(Db::default());
    let resp = app
        .clone()
        .oneshot(req("GET", "/tagged", &[], ""))
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::ETAG], "\"mine\"");
    let resp = app
        .oneshot(req("GET", "/tagged", &[("if-none-match", "\"mine\"")], ""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let _: HeaderMap = resp.headers().clone();
}

#[tokio::test]
async fn the_internal_get_works_when_the_layer_wraps_the_whole_router() {
    // The internal GET, asked for: the layer checks If-Match with a GET. That GET must be routed to
    // the GET handler, so the layer wraps the Router from outside (not Router::layer, which
    // axum applies to each method's handler separately).
    let db = Db::default();
    db.lock().unwrap().insert("1".into(), "first".into());
    let router = Router::new()
        .route("/items/{id}", get(read).put(write))
        .with_state(db.clone());
    let app = tower::Layer::layer(&ConditionalLayer::new().internal_get(), router);

    a_stale_put_is_refused_and_a_current_one_writes(&app, &db).await;

    // And it can be served: an outer Router takes it as its fallback service.
    let addr = serve_axum(Router::new().fallback_service(app)).await;
    let resp = common::call(addr, "GET", "/items/1", &[], "").await;
    assert_eq!(
        resp.headers()[header::ETAG],
        independent_tag(b"second").as_str()
    );
}
