//! Regression tests for the reliability review (issue 14), one per defect, written the way
//! each was found: over a real hyper server (HTTP/1.1 and HTTP/2 where the wire matters),
//! with handlers that count their calls. Time bounds here are liveness bounds, generous on
//! purpose; nothing measures speed.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use common::{
    body_text, call, collect, etag, full, h2_client, independent_tag, live, percent_decoded,
    request, send, serve, Calls, Lookup, Store, TestBody,
};
use futures_util::StreamExt;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::buffer::BufferLayer;
use tower::limit::{ConcurrencyLimitLayer, RateLimitLayer};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_conditional::precondition::{http_date, parse_http_date};
use tower_conditional::{lookup_fn, BoxError, ConditionalLayer, LookupRequest, Validators};

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

const H1: Version = Version::HTTP_11;
const H2: Version = Version::HTTP_2;

/// An HTTP/1.1 request in its HTTP/2 form: the scheme and authority in the URI, no `Host`.
fn for_h2(addr: SocketAddr, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    *req.uri_mut() = format!("http://{addr}{}", req.uri()).parse().unwrap();
    req.headers_mut().remove(header::HOST);
    req
}

/// Sends `req` over a fresh connection of `version`.
async fn ask(version: Version, addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    if version == H2 {
        h2_client(addr)
            .await
            .send_request(for_h2(addr, req))
            .await
            .unwrap()
    } else {
        send(addr, req).await
    }
}

/// Sends `raw` on a fresh connection and returns the response head as sent, up to the
/// blank line, with field names in lower case.
async fn raw_head(addr: SocketAddr, raw: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = live("raw response head", stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "the connection closed before a response head");
        got.extend_from_slice(&chunk[..n]);
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    String::from_utf8(got[..end].to_vec())
        .unwrap()
        .lines()
        .map(|line| match line.split_once(':') {
            Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn problem_status(body: &str) -> u64 {
    let json: serde_json::Value = serde_json::from_str(body).expect("problem+json");
    json["status"].as_u64().expect("a status member")
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// Serves a service over axum's `Body` — a request body type with `Default`, which the
/// internal GET needs — on hyper (HTTP/1.1 and HTTP/2).
async fn serve_body<S, B>(svc: S) -> SocketAddr
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let svc = ServiceBuilder::new()
        .map_request(|req: Request<Incoming>| req.map(Body::new))
        .service(svc);
    serve(svc).await
}

// ---------------------------------------------------------------------------------------
// 1. Deadlock: serialize_writes with tower's own middleware inside and outside the layer
// ---------------------------------------------------------------------------------------

type AnyBody = UnsyncBoxBody<Bytes, BoxError>;
type Boxed = BoxCloneService<Request<Body>, Response<AnyBody>, BoxError>;

fn boxed<S, B>(svc: S) -> Boxed
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneService::new(
        svc.map_response(|r: Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// tower middleware that reserves capacity when it is ready.
#[derive(Debug, Clone, Copy)]
enum Reserving {
    ConcurrencyLimit,
    Buffer,
    RateLimit,
}

fn reserving(mw: Reserving, svc: Boxed) -> Boxed {
    match mw {
        Reserving::ConcurrencyLimit => boxed(ConcurrencyLimitLayer::new(1).layer(svc)),
        Reserving::Buffer => boxed(BufferLayer::new(2).layer(svc)),
        Reserving::RateLimit => {
            let limited = RateLimitLayer::new(4, Duration::from_millis(10)).layer(svc);
            boxed(BufferLayer::new(2).layer(limited))
        }
    }
}

/// The layer with `mw` inside it (between the layer and the handler) or outside it.
fn stack<L, B>(layer: &L, mw: Reserving, inside: bool, handler: Boxed) -> Boxed
where
    L: Layer<Boxed>,
    L::Service:
        Service<Request<Body>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if inside {
        boxed(layer.layer(reserving(mw, handler)))
    } else {
        reserving(mw, boxed(layer.layer(handler)))
    }
}

/// Eight PUTs holding the same (current) If-Match race, with an unrelated GET among them:
/// all are answered, exactly one writes, the others get 412.
async fn race(svc: Boxed, store: &Store, what: &str) {
    store.set("/items/1", "v0");
    let writes_before = store.writes();
    let tag = store.tag("/items/1");
    let mut puts = Vec::new();
    for i in 0..8 {
        let req = Request::put("/items/1")
            .header(header::IF_MATCH, &tag)
            .body(Body::from(format!("writer {i}")))
            .unwrap();
        puts.push(tokio::spawn(svc.clone().oneshot(req)));
    }
    let get = Request::get("/other").body(Body::empty()).unwrap();
    let get = tokio::spawn(svc.clone().oneshot(get));
    let (statuses, get) = live(what, async {
        let mut statuses = Vec::new();
        for put in puts {
            statuses.push(put.await.unwrap().unwrap().status());
        }
        (statuses, get.await.unwrap().unwrap())
    })
    .await;
    assert_eq!(get.status(), StatusCode::OK, "{what}: the unrelated GET");
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, refused), (1, 7), "{what}: {statuses:?}");
    assert_eq!(store.writes() - writes_before, 1, "{what}: one write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialized_writes_never_deadlock_with_tower_middleware_inside_or_outside() {
    let mut store = Store::new(&[("/other", "unrelated")]);
    // Probes and writes that take a moment, so that requests queue for readiness.
    store.read_delay = Duration::from_millis(2);
    store.write_delay = Duration::from_millis(5);
    let handler = boxed(store.handler());
    for mw in [
        Reserving::ConcurrencyLimit,
        Reserving::Buffer,
        Reserving::RateLimit,
    ] {
        for inside in [true, false] {
            let place = if inside { "inside" } else { "outside" };
            // A fresh layer (and lock table) for each stack: one failure does not leak into
            // the next.
            let probe = ConditionalLayer::new()
                .internal_get()
                .serialize_writes(true);
            let svc = stack(&probe, mw, inside, handler.clone());
            race(svc, &store, &format!("internal GET, {mw:?} {place}")).await;
            let lookup = ConditionalLayer::new()
                .lookup(store.lookup())
                .serialize_writes(true);
            let svc = stack(&lookup, mw, inside, handler.clone());
            race(svc, &store, &format!("lookup, {mw:?} {place}")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialized_writes_over_hyper_and_axum_behind_a_concurrency_limit_all_finish() {
    let mut store = Store::new(&[("/items/1", "v0")]);
    store.read_delay = Duration::from_millis(2);
    store.write_delay = Duration::from_millis(20);
    let router = axum::Router::new()
        .route("/other", axum::routing::get(|| async { "unrelated" }))
        .fallback_service(store.handler());
    let layer = || {
        ConditionalLayer::new()
            .internal_get()
            .serialize_writes(true)
    };
    let limit = ConcurrencyLimitLayer::new(2);
    let inside = serve_body(layer().layer(limit.layer(router.clone()))).await;
    let outside = serve_body(limit.layer(layer().layer(router))).await;

    for (addr, version, place) in [
        (inside, H1, "inside"),
        (inside, H2, "inside"),
        (outside, H1, "outside"),
    ] {
        let what = format!("{version:?}, concurrency_limit(2) {place} the layer");
        store.set("/items/1", "v0");
        let writes_before = store.writes();
        let tag = store.tag("/items/1");
        let h2 = h2_client(addr).await;
        let send = |method: &str, path: &str, headers: &[(&str, &str)], body: String| {
            let req = request(method, path, headers, &body);
            let mut h2 = h2.clone();
            async move {
                if version == H2 {
                    h2.send_request(for_h2(addr, req)).await.unwrap()
                } else {
                    send(addr, req).await
                }
            }
        };
        let puts: Vec<_> = (0..6)
            .map(|i| {
                tokio::spawn(send(
                    "PUT",
                    "/items/1",
                    &[("if-match", &tag)],
                    format!("writer {i}"),
                ))
            })
            .collect();
        let get = tokio::spawn(send("GET", "/other", &[], String::new()));
        let (statuses, get) = live(&what, async {
            let mut statuses = Vec::new();
            for put in puts {
                statuses.push(put.await.unwrap().status());
            }
            (statuses, get.await.unwrap())
        })
        .await;
        assert_eq!(get.status(), StatusCode::OK, "{what}: the unrelated GET");
        assert_eq!(body_text(get).await, "unrelated");
        let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(won, 1, "{what}: {statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::PRECONDITION_FAILED),
            "{what}: {statuses:?}"
        );
        assert_eq!(store.writes() - writes_before, 1, "{what}: one write");
    }
}

// ---------------------------------------------------------------------------------------
// 2. A body that fails before max_buffer is never framed as a complete message
// ---------------------------------------------------------------------------------------

/// 4 KiB in four chunks (the third after a short pause), then an error.
fn body_failing_after_4_kib() -> TestBody {
    let chunks = futures_util::stream::iter(0..4).then(|i| async move {
        if i == 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; 1024])))
    });
    let failure = futures_util::stream::once(async {
        Err::<Frame<Bytes>, BoxError>("the database connection dropped".into())
    });
    BodyExt::boxed(StreamBody::new(chunks.chain(failure)))
}

#[tokio::test]
async fn a_body_failing_while_held_is_a_500_never_a_complete_200_over_h1_and_h2() {
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = service_fn(move |req: Request<Body>| {
        seen.hit(&req);
        async {
            let resp = Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(body_failing_after_4_kib())
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    let addr = serve_body(ConditionalLayer::new().layer(handler)).await;
    for version in [H1, H2] {
        for method in ["GET", "HEAD"] {
            let what = format!("{method} over {version:?}");
            let resp = live(
                &what,
                ask(version, addr, request(method, "/report", &[], "")),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{what}");
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                "application/problem+json",
                "{what}"
            );
            assert_eq!(etag(resp.headers()), None, "{what}");
            if method == "GET" {
                // The 500 itself is a complete message, with none of the held 4 KiB in it.
                let body = live(&what, resp.into_body().collect())
                    .await
                    .unwrap_or_else(|e| panic!("{what}: the 500 arrives whole: {e}"))
                    .to_bytes();
                let body = String::from_utf8(body.to_vec()).unwrap();
                assert_eq!(problem_status(&body), 500, "{what}: {body}");
                assert!(!body.contains("xxxx"), "{what}: no held bytes");
            }
            // (What follows a HEAD's head: `the_layers_own_answers_to_head_have_no_content`.)
        }
    }
    assert_eq!(
        calls.of("GET /report"),
        4,
        "HEAD goes to the handler as GET"
    );
}

#[tokio::test]
async fn a_body_failing_after_the_time_bound_is_aborted_on_the_wire() {
    // Past max_buffer_time the head is already out, untagged; a failure after that must
    // reach the client as a broken message, not as a complete one.
    let handler = service_fn(|_req: Request<Body>| async {
        let first = futures_util::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"{\"row\":1}\n")))
        });
        let failure = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Err::<Frame<Bytes>, BoxError>("the producer died".into())
        });
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(BodyExt::boxed(StreamBody::new(first.chain(failure))))
            .unwrap();
        Ok::<_, Infallible>(resp)
    });
    let addr = serve_body(ConditionalLayer::new().layer(handler)).await;
    for version in [H1, H2] {
        let resp = live("head", ask(version, addr, request("GET", "/rows", &[], ""))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{version:?}");
        assert_eq!(etag(resp.headers()), None, "{version:?}: not tagged");
        let collected = live("body", resp.into_body().collect()).await;
        assert!(
            collected.is_err(),
            "{version:?}: the client must see the message broken, not complete"
        );
    }
}

/// The layer's own answers to a HEAD (a 500 for a failed body, a 412) have no content
/// (RFC 9110 §9.3.2): over HTTP/1.1 hyper drops a HEAD body, over HTTP/2 it sends it, and
/// the client's stream is reset (PROTOCOL_ERROR) after the head.
#[tokio::test]
async fn the_layers_own_answers_to_head_have_no_content() {
    let handler = service_fn(|req: Request<Body>| async move {
        let body = match req.uri().path() {
            "/report" => body_failing_after_4_kib(),
            _ => full("fine"),
        };
        Ok::<_, Infallible>(Response::new(body))
    });
    let addr = serve_body(ConditionalLayer::new().layer(handler)).await;
    let stale = [("if-match", "\"stale\"")];
    for version in [H1, H2] {
        for (path, headers, status) in [
            ("/report", &[][..], StatusCode::INTERNAL_SERVER_ERROR),
            ("/page", &stale[..], StatusCode::PRECONDITION_FAILED),
        ] {
            let what = format!("HEAD {path} over {version:?}");
            let resp = live(
                &what,
                ask(version, addr, request("HEAD", path, headers, "")),
            )
            .await;
            assert_eq!(resp.status(), status, "{what}");
            let body = live(&what, resp.into_body().collect())
                .await
                .unwrap_or_else(|e| panic!("{what}: the {status} must end cleanly, got {e:?}"))
                .to_bytes();
            assert!(body.is_empty(), "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. HEAD (and GET) of a slow stream that is not SSE answer promptly
// ---------------------------------------------------------------------------------------

/// Drops when the body it is in is dropped.
struct LiveBody(Arc<AtomicUsize>);

impl LiveBody {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        LiveBody(count.clone())
    }
}

impl Drop for LiveBody {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

const PAUSE: Duration = Duration::from_secs(3);

/// One row, a 3 s pause, one more row.
fn slow_rows(live: LiveBody) -> TestBody {
    let rows = futures_util::stream::unfold((0, live), |(step, live)| async move {
        let row: &'static [u8] = match step {
            0 => b"{\"row\":1}\n",
            1 => {
                tokio::time::sleep(PAUSE).await;
                b"{\"row\":2}\n"
            }
            _ => return None,
        };
        Some((
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(row))),
            (step + 1, live),
        ))
    });
    BodyExt::boxed(StreamBody::new(rows))
}

#[tokio::test]
async fn head_and_get_of_a_slow_non_sse_stream_answer_promptly() {
    let calls = Calls::default();
    let live_heads = Arc::new(AtomicUsize::new(0));
    let (seen, heads) = (calls.clone(), live_heads.clone());
    let handler = service_fn(move |req: Request<Body>| {
        seen.hit(&req);
        // `?head` marks the requests the test sends as HEAD (the handler sees a GET).
        let counter = match req.uri().query() {
            Some("head") => heads.clone(),
            _ => Arc::new(AtomicUsize::new(0)),
        };
        let content_type = match req.uri().path() {
            "/ndjson" => "application/x-ndjson",
            _ => "application/json",
        };
        async move {
            let resp = Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(slow_rows(LiveBody::new(&counter)))
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    let addr = serve_body(ConditionalLayer::new().layer(handler)).await;
    // Well before the producer's pause ends (the head goes out after max_buffer_time).
    let prompt = PAUSE - Duration::from_millis(500);

    let head = |path: &'static str| async move {
        let resp = tokio::time::timeout(prompt, call(addr, "HEAD", path, &[], ""))
            .await
            .unwrap_or_else(|_| panic!("HEAD {path}: no response head within {prompt:?}"));
        assert_eq!(resp.status(), StatusCode::OK, "HEAD {path}");
        assert_eq!(etag(resp.headers()), None, "HEAD {path}: not tagged");
        assert!(collect(resp.into_body()).await.is_empty());
    };
    let get = |path: &'static str| async move {
        let resp = tokio::time::timeout(prompt, call(addr, "GET", path, &[], ""))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no response head within {prompt:?}"));
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        assert_eq!(etag(resp.headers()), None, "GET {path}: not tagged");
        let body = live("the rest of the stream", body_text(resp)).await;
        assert_eq!(body, "{\"row\":1}\n{\"row\":2}\n", "GET {path}: every byte");
    };
    let heads_answered = async {
        head("/ndjson?head").await;
        head("/json?head").await;
        // The HEAD's stream is not kept alive behind the answer.
        for _ in 0..100 {
            if live_heads.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(live_heads.load(Ordering::SeqCst), 0, "HEAD streams dropped");
    };
    tokio::join!(heads_answered, get("/ndjson"), get("/json"));
    assert_eq!(calls.of("GET /ndjson") + calls.of("GET /json"), 4);
}

// ---------------------------------------------------------------------------------------
// 4. A 201 names another resource: the after-write lookup's tag is not put on it
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_201_with_location_gets_no_etag_from_the_after_write_lookup() {
    let store = Store::new(&[("/items", ""), ("/items/0", "first")]);
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true);
    let addr = serve_body(layer.layer(store.handler())).await;

    // A conditional POST to the collection creates /items/1.
    let resp = call(
        addr,
        "POST",
        "/items",
        &[("if-match", &store.tag("/items"))],
        "new",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()[header::LOCATION], "/items/1");
    assert_eq!(
        etag(resp.headers()),
        None,
        "a 201's ETag would be the created resource's"
    );
    assert_eq!(store.body("/items/1").as_deref(), Some("new"));

    // A 200 or 204 about the target itself gets the tag the lookup reports after the write.
    let tag = store.tag("/items/1");
    let resp = call(addr, "PATCH", "/items/1", &[("if-match", &tag)], "v2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(etag(resp.headers()), Some(independent_tag(b"v2")));
    let tag = store.tag("/items/1");
    let headers = [("if-match", tag.as_str()), ("x-respond", "204")];
    let resp = call(addr, "PATCH", "/items/1", &headers, "v3").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(etag(resp.headers()), Some(independent_tag(b"v3")));
    // Not a PUT's: RFC 9110 §9.3.4 allows a validator there only when the content was
    // stored without transformation, which only the handler can say.
    let tag = store.tag("/items/1");
    let resp = call(addr, "PUT", "/items/1", &[("if-match", &tag)], "v3").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(etag(resp.headers()), None);

    // A response naming a resource (Content-Location) gets none, nor does a DELETE.
    let tag = store.tag("/items/1");
    let headers = [
        ("if-match", tag.as_str()),
        ("x-respond", "content-location"),
    ];
    let resp = call(addr, "PUT", "/items/1", &headers, "v4").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(etag(resp.headers()), None);
    let tag = store.tag("/items/1");
    let resp = call(addr, "DELETE", "/items/1", &[("if-match", &tag)], "").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(etag(resp.headers()), None);
    assert_eq!(store.writes(), 6);
}

// ---------------------------------------------------------------------------------------
// 5. The write lock: equivalent paths are one target; a user key function is honoured
// ---------------------------------------------------------------------------------------

/// Rounds of two concurrent PUTs to `a` and `b` (two names of one target) with the same
/// If-Match: exactly one wins each round.
async fn two_names_race(addr: SocketAddr, store: &Store, a: &str, b: &str) {
    for round in 0..5 {
        store.set(a, &format!("round {round}"));
        let writes_before = store.writes();
        let tag = store.tag(a);
        let put = |path: &str, body: String| {
            let req = request("PUT", path, &[("if-match", &tag)], &body);
            tokio::spawn(send(addr, req))
        };
        let (first, second) = (
            put(a, format!("{a} {round}")),
            put(b, format!("{b} {round}")),
        );
        let (first, second) = live("two writers", async {
            (
                first.await.unwrap().status(),
                second.await.unwrap().status(),
            )
        })
        .await;
        let mut statuses = [first, second];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
            "round {round}: {a} and {b} are one target"
        );
        assert_eq!(
            store.writes() - writes_before,
            1,
            "round {round}: one write"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivalent_paths_share_one_write_lock() {
    let mut store = Store::new(&[]);
    store.write_delay = Duration::from_millis(30);
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true);
    // As in an axum app: the layer on the router, the handler's `Path` decoding `%61`.
    let router = axum::Router::new()
        .route_service("/items/{id}", store.handler())
        .layer(layer);
    let addr = serve(router).await;
    two_names_race(addr, &store, "/items/a", "/items/%61").await;
}

/// `/docs/one` is another name of `/docs/1` in this application.
fn doc_key(path: &str) -> String {
    percent_decoded(path).replace("/docs/one", "/docs/1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialize_writes_by_uses_the_given_key() {
    let mut store = Store::new(&[]);
    store.write_delay = Duration::from_millis(30);
    store.resolve = doc_key;
    let keyed = Arc::new(AtomicUsize::new(0));
    let counted = keyed.clone();
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes_by(move |uri: &Uri, _headers: &HeaderMap| {
            counted.fetch_add(1, Ordering::SeqCst);
            doc_key(uri.path())
        });
    let addr = serve_body(layer.layer(store.handler())).await;
    two_names_race(addr, &store, "/docs/1", "/docs/one").await;
    assert!(
        keyed.load(Ordering::SeqCst) >= 10,
        "the key function was used"
    );
}

// ---------------------------------------------------------------------------------------
// 6. HEAD answered from a handler's own 304 or 204: no made-up Content-Length
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn head_of_a_handlers_own_304_or_204_carries_no_made_up_content_length() {
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = service_fn(move |req: Request<Body>| {
        seen.hit(&req);
        let resp = match req.uri().path() {
            "/page"
                if req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v == "\"p1\"") =>
            {
                Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .header(header::ETAG, "\"p1\"")
                    .body(full(Bytes::new()))
            }
            "/page" => Response::builder()
                .header(header::ETAG, "\"p1\"")
                .body(full("hello world")),
            _ => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(full(Bytes::new())),
        };
        async move { Ok::<_, Infallible>(resp.unwrap()) }
    });
    let addr = serve_body(ConditionalLayer::new().layer(handler)).await;

    let head = raw_head(
        addr,
        "HEAD /page HTTP/1.1\r\nHost: test\r\nIf-None-Match: \"p1\"\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(head.contains("etag: \"p1\""), "{head}");
    for line in head.lines().filter(|l| l.starts_with("content-length:")) {
        assert_eq!(
            line.trim(),
            "content-length: 11",
            "a 304's length may only be the 200's: {head}"
        );
    }

    let head = raw_head(addr, "HEAD /nothing HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(
        !head.contains("content-length"),
        "a 204 has no length: {head}"
    );

    // The same on a GET: nothing is invented either.
    let head = raw_head(addr, "GET /nothing HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(calls.of("GET /page"), 1);
    assert_eq!(calls.of("GET /nothing"), 2);
}

// ---------------------------------------------------------------------------------------
// 7. require_preconditions: never for safe methods, nor for a creating POST
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn required_preconditions_spare_safe_methods_and_post() {
    let store = Store::new(&[("/doc", "v1")]);
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .require_preconditions(true);
    let addr = serve_body(layer.layer(store.handler())).await;
    for method in ["QUERY", "PROPFIND", "REPORT", "SEARCH"] {
        let resp = call(addr, method, "/doc", &[], "query").await;
        assert_eq!(resp.status(), StatusCode::OK, "{method} is safe");
        assert_eq!(body_text(resp).await, "handled");
        assert_eq!(store.calls.of(&format!("{method} /doc")), 1);
    }
    let resp = call(addr, "POST", "/items", &[], "member").await;
    assert_eq!(resp.status(), StatusCode::CREATED, "a creating POST");
    assert_eq!(store.calls.of("POST /items"), 1);
    for method in ["PUT", "PATCH", "DELETE"] {
        let resp = call(addr, method, "/doc", &[], "v2").await;
        assert_eq!(
            resp.status(),
            StatusCode::PRECONDITION_REQUIRED,
            "{method} changes the target"
        );
        assert_eq!(store.calls.of(&format!("{method} /doc")), 0);
    }
    assert_eq!(store.body("/doc").as_deref(), Some("v1"));
}

// ---------------------------------------------------------------------------------------
// 8. Invalid or repeated ETag fields from the handler: one tag per representation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_or_repeated_handler_etags_give_way_to_the_hash_on_reads_and_writes() {
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = service_fn(move |req: Request<Body>| {
        seen.hit(&req);
        let resp = match (req.method().as_str(), req.uri().path()) {
            ("GET", "/unquoted") => Response::builder()
                .header(header::ETAG, "unquoted")
                .body(full("alpha")),
            ("GET", _) => Response::builder()
                .header(header::ETAG, "\"a\"")
                .header(header::ETAG, "\"b\"")
                .body(full("beta")),
            _ => Response::builder().body(full("written")),
        };
        async move { Ok::<_, Infallible>(resp.unwrap()) }
    });
    let addr = serve_body(ConditionalLayer::new().internal_get().layer(handler)).await;

    for (path, content, foreign) in [
        ("/unquoted", "alpha", "\"unquoted\""),
        ("/dup", "beta", "\"b\""),
    ] {
        let hashed = independent_tag(content.as_bytes());
        for method in ["GET", "HEAD"] {
            let resp = call(addr, method, path, &[], "").await;
            let tags: Vec<_> = resp.headers().get_all(header::ETAG).iter().collect();
            assert_eq!(tags, [hashed.as_str()], "{method} {path}: the hash, once");
        }
        let resp = call(addr, "GET", path, &[("if-none-match", &hashed)], "").await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_MODIFIED,
            "{path}: the hash revalidates"
        );
        let resp = call(addr, "GET", path, &[("if-none-match", foreign)], "").await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{path}: a dropped tag does not"
        );

        // Writes validate against the same tag reads show.
        let resp = call(addr, "PUT", path, &[("if-match", foreign)], "x").await;
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED, "PUT {path}");
        assert_eq!(calls.of(&format!("PUT {path}")), 0);
        let resp = call(addr, "PUT", path, &[("if-match", &hashed)], "x").await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "PUT {path} with the read's tag"
        );
        assert_eq!(calls.of(&format!("PUT {path}")), 1);
    }
}

// ---------------------------------------------------------------------------------------
// 9. If-Range: never a 206 of one version with another version's validator
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn if_range_never_splices_versions_when_a_write_lands_after_the_lookup() {
    let old = "A".repeat(100);
    let new = "B".repeat(100);
    let old_tag = independent_tag(old.as_bytes());
    for honour_if_range in [true, false] {
        let mut store = Store::new(&[("/file", old.as_str())]);
        store.honour_if_range = honour_if_range;
        // The lookup sees the old version; a writer replaces it right after.
        let (looked, replaced_with) = (store.clone(), new.clone());
        let racing_lookup = lookup_fn(move |req: LookupRequest| {
            let found = looked.validators(req.uri().path());
            looked.set("/file", &replaced_with);
            async move { Ok::<_, Infallible>(found) }
        });
        let layer = ConditionalLayer::new().lookup(racing_lookup);
        let addr = serve_body(layer.layer(store.handler())).await;

        // `curl -C -`: the client holds the first 50 bytes of the old version.
        let what = format!("handler honours If-Range: {honour_if_range}");
        let headers = [("range", "bytes=50-"), ("if-range", old_tag.as_str())];
        let resp = call(addr, "GET", "/file", &headers, "").await;
        let status = resp.status();
        let tag = etag(resp.headers());
        let body = body_text(resp).await;
        assert_ne!(
            tag.as_deref(),
            Some(old_tag.as_str()),
            "{what}: {status}, old tag on new bytes"
        );
        if honour_if_range {
            // The handler saw the change: the whole new version, which the client stores in
            // place of its 50 bytes instead of appending to them.
            assert_eq!(status, StatusCode::OK, "{what}: the handler saw the change");
            assert_eq!(body, new, "{what}");
            assert_eq!(tag, Some(independent_tag(new.as_bytes())), "{what}");
        } else if status == StatusCode::PARTIAL_CONTENT {
            // The handler served a part without checking If-Range: the layer, which did not
            // hash these bytes, must not vouch for them.
            assert_eq!(
                tag, None,
                "{what}: a 206 the layer did not hash gets no tag"
            );
        }
        assert_eq!(store.calls.of("GET /file"), 1, "{what}");
    }
}

// ---------------------------------------------------------------------------------------
// 10. A stale writer is refused while the lock holder is still uploading
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_is_refused_while_the_lock_holder_uploads_slowly() {
    let store = Store::new(&[("/doc", "v1")]);
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true)
        .layer(store.handler());
    let addr = serve_body(svc.clone()).await;
    let v1 = store.tag("/doc");

    // Writer A passes and holds the lock while its body trickles in: one chunk, then
    // nothing until the test says so.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let upload = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let a = Request::put("/doc")
        .header(header::HOST, "test")
        .header(header::IF_MATCH, &v1)
        .body(StreamBody::new(upload))
        .unwrap();
    let a = tokio::spawn(send(addr, a));
    tx.send(Bytes::from_static(b"slow ")).await.unwrap();
    live("writer A reaches the handler", async {
        while store.calls.of("PUT /doc") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Writer B is stale: refused at once, not after A's upload.
    let b = call(addr, "PUT", "/doc", &[("if-match", "\"stale\"")], "b").await;
    assert_eq!(b.status(), StatusCode::PRECONDITION_FAILED);
    assert!(!a.is_finished(), "A is still uploading");

    // Writer C is current and waits for the lock; a timeout outside the layer bounds the
    // wait, and dropping it leaves nothing behind.
    let c = Request::put("/doc")
        .header(header::IF_MATCH, &v1)
        .body(Body::from("c"))
        .unwrap();
    let waited = tower::timeout::Timeout::new(svc.clone(), Duration::from_millis(200))
        .oneshot(c)
        .await;
    assert!(waited.is_err(), "C waits for the lock until its timeout");
    assert_eq!(store.calls.of("PUT /doc"), 1, "only A reached the handler");

    tx.send(Bytes::from_static(b"upload")).await.unwrap();
    drop(tx);
    let a = live("writer A", a).await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(store.body("/doc").as_deref(), Some("slow upload"));

    // The lock is free again.
    let d = call(
        addr,
        "PUT",
        "/doc",
        &[("if-match", &store.tag("/doc"))],
        "d",
    )
    .await;
    assert_eq!(d.status(), StatusCode::OK);
    assert_eq!(store.writes(), 2);
}

// ---------------------------------------------------------------------------------------
// 11. A failing lookup: reads go to the handler, writes fail closed
// ---------------------------------------------------------------------------------------

fn failing_lookup() -> Lookup<&'static str> {
    Lookup::new(lookup_fn(|_req: LookupRequest| async {
        Err::<Option<Validators>, _>("the store is down")
    }))
}

#[tokio::test]
async fn a_failing_lookup_lets_reads_through_and_fails_writes_closed() {
    let store = Store::new(&[("/doc", "hello world")]);
    let tag = store.tag("/doc");
    let reads = ConditionalLayer::new()
        .lookup(failing_lookup())
        .lookup_reads(true);
    let with_reads = serve_body(reads.layer(store.handler())).await;
    let plain = serve_body(
        ConditionalLayer::new()
            .lookup(failing_lookup())
            .layer(store.handler()),
    )
    .await;

    // Revalidating GETs with lookup_reads: the handler answers.
    let resp = call(
        with_reads,
        "GET",
        "/doc",
        &[("if-none-match", "\"old\"")],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, "hello world");
    let resp = call(with_reads, "GET", "/doc", &[("if-none-match", &tag)], "").await;
    assert_eq!(
        resp.status(),
        StatusCode::NOT_MODIFIED,
        "from the hashed body"
    );
    assert_eq!(store.calls.of("GET /doc"), 2);

    // Range + If-Range: to the handler, which decides.
    for addr in [with_reads, plain] {
        let headers = [("range", "bytes=0-4"), ("if-range", tag.as_str())];
        let resp = call(addr, "GET", "/doc", &headers, "").await;
        let status = resp.status();
        assert!(
            status == StatusCode::PARTIAL_CONTENT || status == StatusCode::OK,
            "{status}"
        );
        let body = body_text(resp).await;
        if status == StatusCode::PARTIAL_CONTENT {
            assert_eq!(body, "hello");
        }
    }
    assert_eq!(store.calls.of("GET /doc"), 4);

    // Writes: 503, nothing runs.
    for addr in [with_reads, plain] {
        let resp = call(addr, "PUT", "/doc", &[("if-match", &tag)], "v2").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }
    assert_eq!(store.calls.of("PUT /doc"), 0);
    assert_eq!(store.body("/doc").as_deref(), Some("hello world"));
}

// ---------------------------------------------------------------------------------------
// 12. Range with a current If-Match: 206 (or the whole 200), never 412
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn range_with_a_current_if_match_is_206_or_the_whole_200_never_412() {
    let store = Store::new(&[("/doc", "hello world")]);
    let tag = store.tag("/doc");
    let looked_up = serve_body(
        ConditionalLayer::new()
            .lookup(store.lookup())
            .layer(store.handler()),
    )
    .await;
    let hash_only = serve_body(ConditionalLayer::new().layer(store.handler())).await;
    let headers = [("range", "bytes=0-4"), ("if-match", tag.as_str())];

    let resp = call(looked_up, "GET", "/doc", &headers, "").await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "with a lookup");
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 0-4/11");
    assert_eq!(body_text(resp).await, "hello");

    let resp = call(hash_only, "GET", "/doc", &headers, "").await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "hash only: the whole representation"
    );
    assert_eq!(etag(resp.headers()), Some(tag.clone()));
    assert_eq!(body_text(resp).await, "hello world");

    // A stale If-Match is still refused on both.
    let stale = [("range", "bytes=0-4"), ("if-match", "\"old\"")];
    for addr in [looked_up, hash_only] {
        let resp = call(addr, "GET", "/doc", &stale, "").await;
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    }
}

// ---------------------------------------------------------------------------------------
// 13. A date that cannot be evaluated does not satisfy require_preconditions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_if_unmodified_since_that_cannot_be_evaluated_does_not_satisfy_428() {
    // The lookup knows tags, not modification times.
    let store = Store::new(&[("/doc", "v1")]);
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .require_preconditions(true);
    let addr = serve_body(layer.layer(store.handler())).await;
    let date_only = [("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")];
    let resp = call(addr, "PUT", "/doc", &date_only, "v2").await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(problem_status(&body_text(resp).await), 428);
    assert_eq!(store.calls.of("PUT /doc"), 0);
    assert_eq!(store.body("/doc").as_deref(), Some("v1"));

    // An If-Match satisfies it.
    let resp = call(
        addr,
        "PUT",
        "/doc",
        &[("if-match", &store.tag("/doc"))],
        "v2",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.calls.of("PUT /doc"), 1);
}

// ---------------------------------------------------------------------------------------
// 14. A lookup-answered 304 never carries a Last-Modified later than its Date
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_lookup_answered_304_never_dates_last_modified_after_its_date() {
    let future = SystemTime::now() + Duration::from_secs(3600);
    let store = Store::new(&[("/doc", "v1")]);
    let lookup = lookup_fn(move |_req: LookupRequest| async move {
        Ok::<_, Infallible>(Some(Validators::new().with_last_modified(future)))
    });
    let layer = ConditionalLayer::new().lookup(lookup).lookup_reads(true);
    let addr = serve_body(layer.layer(store.handler())).await;
    let since = http_date(future).unwrap();
    let resp = call(
        addr,
        "GET",
        "/doc",
        &[("if-modified-since", since.to_str().unwrap())],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(store.calls.total(), 0, "answered from the lookup");
    let date = parse_http_date(resp.headers().get_all(header::DATE)).expect("Date");
    let modified =
        parse_http_date(resp.headers().get_all(header::LAST_MODIFIED)).expect("Last-Modified");
    assert!(
        modified <= date,
        "Last-Modified {:?} after Date {:?}",
        resp.headers()[header::LAST_MODIFIED],
        resp.headers()[header::DATE]
    );
}

// ---------------------------------------------------------------------------------------
// 15. grpc-web rejections answer in the request's content type
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn grpc_web_rejections_answer_in_the_request_content_type() {
    let store = Store::new(&[("/pkg.Svc/Update", "v1")]);
    let strict = ConditionalLayer::new()
        .lookup(store.lookup())
        .require_preconditions(true)
        .required_methods([Method::POST]);
    let strict = serve_body(strict.layer(store.handler())).await;
    let unconfigured = serve_body(ConditionalLayer::new().layer(store.handler())).await;
    for content_type in [
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpc-web-text",
        "application/grpc-web-text+proto",
    ] {
        let ct = ("content-type", content_type);
        for (addr, condition, code, what) in [
            (strict, None, "9", "428"),
            (strict, Some(("if-match", "\"stale\"")), "9", "412"),
            (unconfigured, Some(("if-match", "\"v1\"")), "12", "501"),
        ] {
            let headers: Vec<_> = std::iter::once(ct).chain(condition).collect();
            let resp = call(addr, "POST", "/pkg.Svc/Update", &headers, "\0\0\0\0\0").await;
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{content_type} {what}: trailers-only"
            );
            assert_eq!(
                resp.headers()[header::CONTENT_TYPE],
                content_type,
                "{what}: answered in the request's grpc-web type"
            );
            assert_eq!(resp.headers()["grpc-status"], code, "{content_type} {what}");
        }
    }
    assert_eq!(store.calls.total(), 0);
}

// ---------------------------------------------------------------------------------------
// 16. Dates before 1970 are valid HTTP-dates; two-digit years are placed per RFC 9110
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn dates_before_1970_are_valid_so_a_false_if_unmodified_since_is_412() {
    let modified = UNIX_EPOCH + Duration::from_secs(1_000_000_000); // 2001
    let store = Store::new(&[("/doc", "v1")]);
    store.date("/doc", modified);
    let lookup = ConditionalLayer::new().lookup(store.lookup());
    let plain = serve_body(lookup.clone().layer(store.handler())).await;
    let strict = serve_body(lookup.require_preconditions(true).layer(store.handler())).await;

    for date in [
        "Mon, 01 Jan 0001 00:00:00 GMT",
        "Wed, 31 Dec 1969 23:59:59 GMT",
    ] {
        let ius = [("if-unmodified-since", date)];
        for addr in [plain, strict] {
            let resp = call(addr, "PUT", "/doc", &ius, "v2").await;
            assert_eq!(
                resp.status(),
                StatusCode::PRECONDITION_FAILED,
                "PUT, {date}"
            );
            assert!(body_text(resp).await.contains("If-Unmodified-Since"));
        }
        for method in ["GET", "HEAD"] {
            let resp = call(plain, method, "/doc", &ius, "").await;
            assert_eq!(
                resp.status(),
                StatusCode::PRECONDITION_FAILED,
                "{method}, {date}"
            );
        }
    }
    assert_eq!(store.calls.of("PUT /doc"), 0, "nothing written");
    assert_eq!(store.body("/doc").as_deref(), Some("v1"));

    // RFC 850 with a two-digit year: "70" is 2070 (RFC 9110 §5.6.7, seen from the 2020s),
    // after 2001, so the condition holds.
    let ius = [("if-unmodified-since", "Sunday, 01-Jun-70 00:00:00 GMT")];
    let resp = call(plain, "GET", "/doc", &ius, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = call(strict, "PUT", "/doc", &ius, "v2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.body("/doc").as_deref(), Some("v2"));
}

// ---------------------------------------------------------------------------------------
// Checked and fine, kept so: Expect: 100-continue with a stale If-Match
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn expect_100_continue_with_a_stale_if_match_gets_412_without_100() {
    let store = Store::new(&[("/doc", "v1")]);
    let addr = serve_body(
        ConditionalLayer::new()
            .lookup(store.lookup())
            .layer(store.handler()),
    )
    .await;
    let head = raw_head(
        addr,
        "PUT /doc HTTP/1.1\r\nHost: test\r\nIf-Match: \"stale\"\r\n\
         Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 412"), "no 100 first: {head}");
    assert_eq!(store.calls.total(), 0);
    assert_eq!(store.body("/doc").as_deref(), Some("v1"));
}

// ---------------------------------------------------------------------------------------
// Safe by default (issue 9): no source, no write; probes pass refusals on
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn without_a_version_source_a_conditional_write_is_501_and_never_runs() {
    let store = Store::new(&[("/doc", "v1")]);
    let addr = serve_body(ConditionalLayer::new().layer(store.handler())).await;
    let tag = store.tag("/doc");
    for method in ["PUT", "PATCH", "DELETE", "POST"] {
        let resp = call(addr, method, "/doc", &[("if-match", &tag)], "v2").await;
        assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED, "{method}");
        let body = body_text(resp).await;
        assert_eq!(problem_status(&body), 501);
        assert!(body.contains("lookup"), "names the fix: {body}");
    }
    assert_eq!(
        store.calls.total(),
        0,
        "the layer never calls the service on its own"
    );
    // Reads and unconditional writes are unaffected.
    let resp = call(addr, "GET", "/doc", &[], "").await;
    assert_eq!(etag(resp.headers()), Some(tag));
    let resp = call(addr, "PUT", "/doc", &[], "v2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.calls.total(), 2);
}

#[tokio::test]
async fn an_internal_get_refused_passes_its_answer_on_404_is_absent_5xx_is_503() {
    let calls = Calls::default();
    let seen = calls.clone();
    let handler = service_fn(move |req: Request<Body>| {
        seen.hit(&req);
        let get = req.method() == Method::GET;
        let resp = match req.uri().path() {
            "/secret" if get => Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, "Bearer")
                .body(full("who are you?")),
            "/forbidden" if get => Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(full("not yours")),
            "/broken" if get => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(full("oops")),
            "/missing" if get => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(full(Bytes::new())),
            _ if get => Response::builder().body(full("current")),
            _ => Response::builder()
                .status(StatusCode::CREATED)
                .body(full(Bytes::new())),
        };
        async move { Ok::<_, Infallible>(resp.unwrap()) }
    });
    let addr = serve_body(ConditionalLayer::new().internal_get().layer(handler)).await;
    let stale = [("if-match", "\"x\"")];

    let resp = call(addr, "PUT", "/secret", &stale, "v2").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(body_text(resp).await, "who are you?");
    let resp = call(addr, "PUT", "/forbidden", &stale, "v2").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_text(resp).await, "not yours");
    let resp = call(addr, "PUT", "/broken", &stale, "v2").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    // 404: absent. A creating PUT with If-Match fails, If-None-Match: * creates, and a
    // DELETE finds nothing.
    let resp = call(addr, "PUT", "/missing", &stale, "v1").await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let resp = call(addr, "DELETE", "/missing", &stale, "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = call(addr, "PUT", "/missing", &[("if-none-match", "*")], "v1").await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    for path in ["/secret", "/forbidden", "/broken"] {
        assert_eq!(calls.of(&format!("GET {path}")), 1, "one probe of {path}");
        assert_eq!(calls.of(&format!("PUT {path}")), 0, "no write to {path}");
    }
    assert_eq!(calls.of("DELETE /missing"), 0);
    assert_eq!(calls.of("PUT /missing"), 1, "only the create");
}

/// The inner service's finished future is dropped before the layer reads the body, so what
/// it holds (a `ConcurrencyLimit` permit, a timer) is released while the body is buffered.
#[tokio::test]
async fn the_service_future_is_gone_before_the_body_is_read() {
    type Chunk = Result<Frame<Bytes>, Infallible>;
    /// A finished response, kept until the future is dropped with the token it holds.
    struct Holding(
        Option<Response<UnsyncBoxBody<Bytes, Infallible>>>,
        #[allow(dead_code)] // held, never read: its drop is what the test sees
        Arc<()>,
    );
    impl std::future::Future for Holding {
        type Output = Result<Response<UnsyncBoxBody<Bytes, Infallible>>, Infallible>;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(Ok(self.0.take().expect("polled once")))
        }
    }
    let token = Arc::new(());
    // Holders of the token when the body is first polled: this test and the body (2), or
    // also the service's future (3).
    let seen = Arc::new(AtomicUsize::new(0));
    let svc = service_fn({
        let (token, seen) = (token.clone(), seen.clone());
        move |_req: Request<String>| {
            let (mine, seen) = (token.clone(), seen.clone());
            let mut first = true;
            let frames = futures_util::stream::poll_fn(move |_| {
                if std::mem::take(&mut first) {
                    seen.store(Arc::strong_count(&mine), Ordering::SeqCst);
                    return std::task::Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(
                        Bytes::from_static(b"hello"),
                    ))));
                }
                std::task::Poll::Ready(None::<Chunk>)
            });
            let response = Response::new(StreamBody::new(frames).boxed_unsync());
            Holding(Some(response), token.clone())
        }
    });
    let response = ConditionalLayer::new()
        .layer(svc)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert!(response.headers().contains_key(header::ETAG));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the service's future was still alive"
    );
    drop(token);
}

// ---------------------------------------------------------------------------------------
// 17. A 304 inside axum carries the 200's length or none, never a made-up `Content-Length: 0`
// ---------------------------------------------------------------------------------------

/// axum's router turns an exact size hint into `Content-Length`, and hyper writes a HEAD
/// response's — and every HTTP/2 response's — as given: a 304 the layer makes from the GET's
/// body must not say 0 for an 11-byte representation (RFC 9110 §8.6), on HEAD or over
/// HTTP/2. And with compression outside the layer, no 304 is encoded (no `Content-Encoding`
/// relabelling what a cache stored, RFC 9111 §3.2), whether the layer or its lookup made it.
#[tokio::test]
async fn a_304_inside_axum_never_claims_a_zero_length_nor_an_encoding() {
    let page = || async { "hello world" };
    let tag = independent_tag(b"hello world");
    let known = tag.clone();
    let lookup = lookup_fn(move |_req: LookupRequest| {
        let etag = tower_conditional::EntityTag::parse(known.as_bytes()).unwrap();
        std::future::ready(Ok::<_, Infallible>(Some(Validators::new().with_etag(etag))))
    });
    let router = axum::Router::new()
        .route("/hashed", axum::routing::get(page))
        .layer(ConditionalLayer::new())
        .merge(
            axum::Router::new()
                .route(
                    "/looked-up",
                    axum::routing::get(page)
                        .route_layer(ConditionalLayer::new().lookup(lookup).lookup_reads(true)),
                )
                .layer(tower_http::compression::CompressionLayer::new()),
        );
    let addr = serve(router).await;

    let plain = raw_head(addr, "HEAD /hashed HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(plain.contains("content-length: 11"), "{plain}");
    for method in ["HEAD", "GET"] {
        let raw = format!("{method} /hashed HTTP/1.1\r\nHost: t\r\nIf-None-Match: {tag}\r\n\r\n");
        let head = raw_head(addr, &raw).await;
        assert!(head.starts_with("HTTP/1.1 304"), "{method}: {head}");
        for line in head.lines().filter(|l| l.starts_with("content-length:")) {
            assert_eq!(line.trim(), "content-length: 11", "{method}: {head}");
        }
        let req = Request::builder()
            .method(method)
            .uri("/hashed")
            .header("if-none-match", tag.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = ask(H2, addr, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "HTTP/2 {method}");
        if let Some(length) = resp.headers().get(header::CONTENT_LENGTH) {
            assert_eq!(length, "11", "HTTP/2 {method}");
        }
    }
    for method in ["HEAD", "GET"] {
        for version in [H1, H2] {
            let fields = [("if-none-match", tag.as_str()), ("accept-encoding", "gzip")];
            let resp = ask(version, addr, request(method, "/looked-up", &fields, "")).await;
            assert_eq!(
                resp.status(),
                StatusCode::NOT_MODIFIED,
                "{method} {version:?}"
            );
            assert!(
                !resp.headers().contains_key(header::CONTENT_ENCODING),
                "{method} {version:?}: {:?}",
                resp.headers()
            );
        }
    }
}

/// A lookup that knows the representation's length supplies it (`with_header`): the 304 it
/// answers alone carries that length where it is written as given (HEAD, HTTP/2) instead of
/// axum's 0 — and none over HTTP/1.1 for a GET, as hyper writes it. A length that is not a
/// number is not repeated.
#[tokio::test]
async fn a_lookup_answered_304_carries_the_length_the_lookup_knows() {
    let page = || async { "hello world" };
    let tag = independent_tag(b"hello world");
    let routed = |length: &'static str| {
        let known = tag.clone();
        let lookup = lookup_fn(move |_req: LookupRequest| {
            let etag = tower_conditional::EntityTag::parse(known.as_bytes()).unwrap();
            let current = Validators::new().with_etag(etag).with_header(
                header::CONTENT_LENGTH,
                http::HeaderValue::from_static(length),
            );
            std::future::ready(Ok::<_, Infallible>(Some(current)))
        });
        axum::routing::get(page)
            .route_layer(ConditionalLayer::new().lookup(lookup).lookup_reads(true))
    };
    let router = axum::Router::new()
        .route("/known", routed("11"))
        .route("/garbled", routed("eleven"));
    let addr = serve(router).await;
    for (method, version, expected) in [
        ("HEAD", H1, Some("11")),
        ("GET", H1, None),
        ("HEAD", H2, Some("11")),
        ("GET", H2, Some("11")),
    ] {
        let ask_for = |path: &str| request(method, path, &[("if-none-match", &tag)], "");
        let resp = ask(version, addr, ask_for("/known")).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_MODIFIED,
            "{method} {version:?}"
        );
        let length = resp.headers().get(header::CONTENT_LENGTH);
        assert_eq!(
            length.map(|v| v.to_str().unwrap()),
            expected,
            "{method} {version:?}"
        );
        let resp = ask(version, addr, ask_for("/garbled")).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_MODIFIED,
            "{method} {version:?}"
        );
        assert_ne!(
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.as_bytes()),
            Some(&b"eleven"[..]),
            "{method} {version:?}"
        );
    }
}

/// The length a 304 keeps is the 200's: with a `Range`, the 304 (never a 206, §13.2.2) is made
/// from the whole 200, not from a part; under `CodingTagsLayer` an encoded 200 has no length at
/// all, so the 304 says none over HTTP/2 or on a HEAD (where axum would otherwise write an
/// exact zero as `Content-Length: 0`) — and over HTTP/1.1 a GET's 304 keeps an exact zero,
/// so compression outside the recipe does not encode it.
#[tokio::test]
async fn a_304_keeps_the_200s_length_not_a_parts_nor_a_zero() {
    const PAGE: &[u8] = b"hello world";
    let tag = independent_tag(PAGE);
    let own = tag.clone();
    let ranged = move |headers: HeaderMap| {
        let own = own.clone();
        async move {
            let mut response = Response::builder().header(header::ETAG, own.as_str());
            let body = if headers.contains_key(header::RANGE) {
                response = response
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, "bytes 0-4/11");
                &PAGE[..5]
            } else {
                PAGE
            };
            response.body(Body::from(body)).unwrap()
        }
    };
    let report = || async { "a report long enough to be worth compressing ".repeat(8) };
    let router = axum::Router::new()
        .route("/ranged", axum::routing::get(ranged))
        .layer(ConditionalLayer::new())
        .merge(
            axum::Router::new().route(
                "/report",
                axum::routing::get(report).route_layer(
                    ServiceBuilder::new()
                        .layer(tower_conditional::CodingTagsLayer::new())
                        .layer(tower_http::compression::CompressionLayer::new())
                        .layer(ConditionalLayer::new()),
                ),
            ),
        );
    let addr = serve(router).await;

    for method in ["GET", "HEAD"] {
        for version in [H1, H2] {
            let fields = [("if-none-match", tag.as_str()), ("range", "bytes=0-4")];
            let resp = ask(version, addr, request(method, "/ranged", &fields, "")).await;
            assert_eq!(
                resp.status(),
                StatusCode::NOT_MODIFIED,
                "{method} {version:?}"
            );
            if let Some(length) = resp.headers().get(header::CONTENT_LENGTH) {
                assert_eq!(length, "11", "{method} {version:?}");
            }
        }
    }

    let get = |version, coding: &str, inm: Option<&str>| {
        let method = if version == H2 { "GET" } else { "HEAD" };
        let mut fields = vec![("accept-encoding", coding)];
        fields.extend(inm.map(|inm| ("if-none-match", inm)));
        ask(version, addr, request(method, "/report", &fields, ""))
    };
    let gzip_200 = get(H2, "gzip", None).await;
    assert_eq!(gzip_200.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(!gzip_200.headers().contains_key(header::CONTENT_LENGTH));
    let gzip_tag = gzip_200.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    // On a HEAD over HTTP/1.1 no length is the 200's length here. Over HTTP/2 (GET) the
    // 304 has no DATA and no encoding; its size is an exact zero (compression may sit
    // outside), which axum writes as `content-length: 0` — the documented exception.
    for version in [H2, H1] {
        let resp = get(version, "gzip", Some(&gzip_tag)).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{version:?}");
        assert!(!resp.headers().contains_key(header::CONTENT_ENCODING));
        if version == H1 {
            assert!(
                !resp.headers().contains_key(header::CONTENT_LENGTH),
                "{:?}",
                resp.headers()
            );
        }
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        assert!(
            body.as_ref().is_ok_and(|b| b.is_empty()),
            "{version:?}: {body:?}"
        );
    }
    // An identity 200 has a length: its 304 over HTTP/2 carries that, not axum's 0.
    let identity_200 = get(H2, "identity", None).await;
    let length = identity_200.headers()[header::CONTENT_LENGTH].clone();
    let identity_tag = identity_200.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    let resp = get(H2, "identity", Some(&identity_tag)).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers().get(header::CONTENT_LENGTH), Some(&length));

    // HEAD sent to the service as HEAD (`head_as_get(false)`), a handler with its own tag that
    // answers it with the GET's content (as axum handlers do): the 304 says that length, not
    // axum's 0.
    let own = tag.clone();
    let tagged = move || {
        let own = own.clone();
        async move { ([(header::ETAG, own)], "hello world") }
    };
    let head_as_head = axum::Router::new().route(
        "/own",
        axum::routing::get(tagged).layer(ConditionalLayer::new().head_as_get(false)),
    );
    let own_addr = serve(head_as_head).await;
    for version in [H1, H2] {
        let req = request("HEAD", "/own", &[("if-none-match", &tag)], "");
        let resp = ask(version, own_addr, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{version:?}");
        if let Some(length) = resp.headers().get(header::CONTENT_LENGTH) {
            assert_eq!(length, "11", "{version:?}");
        }
    }

    // An app-wide compression layer outside the recipe: a GET's 304 over HTTP/1.1 is not
    // encoded (no Content-Encoding relabelling what a cache stored).
    let wrapped = axum::Router::new()
        .route(
            "/report",
            axum::routing::get(report).route_layer(
                ServiceBuilder::new()
                    .layer(tower_conditional::CodingTagsLayer::new())
                    .layer(ConditionalLayer::new()),
            ),
        )
        .layer(tower_http::compression::CompressionLayer::new());
    let outer = serve(wrapped).await;
    let identity = ask(H1, outer, request("GET", "/report", &[], "")).await;
    let tag = identity.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    let fields = [("accept-encoding", "gzip"), ("if-none-match", tag.as_str())];
    for version in [H1, H2] {
        let revalidated = ask(version, outer, request("GET", "/report", &fields, "")).await;
        assert_eq!(
            revalidated.status(),
            StatusCode::NOT_MODIFIED,
            "{version:?}"
        );
        assert!(
            !revalidated.headers().contains_key(header::CONTENT_ENCODING),
            "{version:?}: {:?}",
            revalidated.headers()
        );
        // No DATA on a 304 (over HTTP/2 a stream error).
        let body = revalidated
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes());
        assert!(
            body.as_ref().is_ok_and(|b| b.is_empty()),
            "{version:?}: {body:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 18. tower-http's ServeDir behind the layer (no lookup): it answers If-Modified-Since
//     itself and has no If-Range, so the layer forwards neither a date that a tag overrides
//     nor a Range whose If-Range tag only the layer can check
// ---------------------------------------------------------------------------------------

/// A file whose content changes while its modification time stays (a fixed mtime, as `rsync
/// -t` or a reproducible build leaves it; or two writes within one second).
fn write_with_fixed_mtime(path: &std::path::Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
}

#[tokio::test]
async fn serve_dir_never_gets_a_304_or_a_206_of_another_version_past_the_layer() {
    let dir =
        std::env::temp_dir().join(format!("tower-conditional-servedir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f.txt");
    let (v1, v2) = ("A".repeat(100), "B".repeat(100));
    write_with_fixed_mtime(&file, v1.as_bytes());

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(ConditionalLayer::new())
        .map_request(move |req: Request<Incoming>| {
            counted.fetch_add(1, Ordering::SeqCst);
            req
        })
        .service(tower_http::services::ServeDir::new(&dir));
    let addr = serve(svc).await;

    let first = call(addr, "GET", "/f.txt", &[], "").await;
    assert_eq!(first.status(), StatusCode::OK);
    let old = etag(first.headers()).expect("the layer tags the file");
    let date = first.headers()[header::LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_owned();
    write_with_fixed_mtime(&file, v2.as_bytes());
    let new = independent_tag(v2.as_bytes());

    let mut sent = 1;
    for version in [H1, H2] {
        // A browser revalidates with both validators: If-None-Match decides (§13.1.3), and
        // ServeDir, which answers the date alone, never sees it.
        let both = [
            ("if-none-match", old.as_str()),
            ("if-modified-since", &date),
        ];
        let resp = ask(version, addr, request("GET", "/f.txt", &both, "")).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{version:?}: the content changed"
        );
        assert_eq!(etag(resp.headers()), Some(new.clone()));
        assert_eq!(body_text(resp).await, v2);
        let current = [
            ("if-none-match", new.as_str()),
            ("if-modified-since", &date),
        ];
        let resp = ask(version, addr, request("GET", "/f.txt", &current, "")).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{version:?}");

        // `curl -C -` with the old tag: the whole new version, never new bytes to append
        // to old ones (ServeDir would serve the range whatever the tag).
        let resume = [("range", "bytes=90-"), ("if-range", old.as_str())];
        let resp = ask(version, addr, request("GET", "/f.txt", &resume, "")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{version:?}: stale If-Range");
        assert_eq!(etag(resp.headers()), Some(new.clone()));
        assert_eq!(body_text(resp).await, v2);

        // With the current tag, the range: the layer cuts it from the body it hashed.
        let resume = [("range", "bytes=10-19"), ("if-range", new.as_str())];
        let resp = ask(version, addr, request("GET", "/f.txt", &resume, "")).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{version:?}");
        assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 10-19/100");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "10");
        assert_eq!(etag(resp.headers()), Some(new.clone()));
        assert_eq!(body_text(resp).await, &v2[10..20]);

        // Several ranges, or one past the end: the whole (a server may ignore Range).
        for range in ["bytes=0-1,5-6", "bytes=100-"] {
            let fields = [("range", range), ("if-range", new.as_str())];
            let resp = ask(version, addr, request("GET", "/f.txt", &fields, "")).await;
            assert_eq!(resp.status(), StatusCode::OK, "{version:?}: {range}");
            assert!(!resp.headers().contains_key(header::CONTENT_RANGE));
            assert_eq!(body_text(resp).await, v2);
        }
        sent += 6;
    }
    // A Range without If-Range is ServeDir's to answer, as before.
    let resp = call(addr, "GET", "/f.txt", &[("range", "bytes=0-4")], "").await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body_text(resp).await, "BBBBB");
    sent += 1;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        sent,
        "each request reached ServeDir once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// 19. If-Unmodified-Since beside If-Match is not forwarded: a service that checks the date
//     too would refuse a write whose If-Match holds (§13.1.4)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_date_that_if_match_overrides_does_not_reach_the_handler() {
    let calls = Calls::default();
    let seen = calls.clone();
    // A handler that checks If-Unmodified-Since without regard to If-Match: its resource
    // changed after any date a client sends.
    let handler = service_fn(move |req: Request<Incoming>| {
        seen.hit(&req);
        let status = if req.headers().contains_key(header::IF_UNMODIFIED_SINCE) {
            StatusCode::PRECONDITION_FAILED
        } else {
            StatusCode::NO_CONTENT
        };
        let mut resp = Response::new(full(""));
        *resp.status_mut() = status;
        async move { Ok::<_, Infallible>(resp) }
    });
    let current = tower_conditional::EntityTag::strong("v7").unwrap();
    let known = Validators::new()
        .with_etag(current.clone())
        .with_last_modified(SystemTime::now());
    let lookup = lookup_fn(move |_req: LookupRequest| {
        let known = known.clone();
        async move { Ok::<_, Infallible>(Some(known)) }
    });
    let addr = serve(ConditionalLayer::new().lookup(lookup).layer(handler)).await;
    let fields = [
        ("if-match", "\"v7\""),
        ("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ];
    for method in ["PUT", "DELETE"] {
        let resp = call(addr, method, "/doc", &fields, "x").await;
        assert_eq!(
            resp.status(),
            StatusCode::NO_CONTENT,
            "{method}: If-Match holds"
        );
        assert_eq!(calls.of(&format!("{method} /doc")), 1);
    }
    // Without If-Match the date is the condition: the layer checks it, and refuses.
    let date_only = [("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")];
    let resp = call(addr, "PUT", "/doc", &date_only, "x").await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(calls.of("PUT /doc"), 1, "refused before the handler");
}

// ---------------------------------------------------------------------------------------
// 20. Safe extension methods with conditions: never 501, never behind the write lock
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn conditional_safe_methods_are_performed_not_refused() {
    const SAFE: [&str; 4] = ["QUERY", "PROPFIND", "REPORT", "SEARCH"];
    let store = Store::new(&[("/doc", "v1")]);
    // Nothing configured to check conditions: a safe method goes to its handler (it writes
    // nothing, so no update can be lost); a write is still refused, with a 501.
    let unconfigured = serve_body(ConditionalLayer::new().layer(store.handler())).await;
    for method in SAFE {
        for field in [("if-match", "\"x\""), ("if-none-match", "*")] {
            let resp = call(unconfigured, method, "/doc", &[field], "q").await;
            assert_eq!(resp.status(), StatusCode::OK, "{method} {field:?}");
        }
        assert_eq!(store.calls.of(&format!("{method} /doc")), 2, "{method}");
    }
    let resp = call(unconfigured, "PUT", "/doc", &[("if-match", "\"x\"")], "v2").await;
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
    let problem: serde_json::Value =
        serde_json::from_str(&body_text(resp).await).expect("a problem document");
    assert_eq!(problem["title"], "Not Implemented", "RFC 9457 §4.2.1");
    assert_eq!(store.calls.of("PUT /doc"), 0);

    // With a lookup the layer checks them (412, never 304, for a method that is not GET or
    // HEAD), and a current one does not wait for the write lock a slow writer holds.
    let store = Store::new(&[("/doc", "v1")]);
    let tag = store.tag("/doc");
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let held = Arc::new(tokio::sync::Mutex::new(Some(held)));
    let inner = store.handler();
    let waiting = Arc::new(AtomicUsize::new(0));
    let waits = waiting.clone();
    let slow_puts = service_fn(move |req: Request<Incoming>| {
        let (held, mut inner, waits) = (held.clone(), inner.clone(), waits.clone());
        async move {
            if req.method() == Method::PUT {
                if let Some(held) = held.lock().await.take() {
                    waits.fetch_add(1, Ordering::SeqCst);
                    let _ = held.await;
                }
            }
            inner.call(req).await
        }
    });
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true);
    let checked = serve(layer.layer(slow_puts)).await;
    let current = tag.clone();
    let writer = tokio::spawn(async move {
        call(
            checked,
            "PUT",
            "/doc",
            &[("if-match", current.as_str())],
            "v2",
        )
        .await
    });
    live("the writer reaches its handler", async {
        while waiting.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for method in SAFE {
        let stale = call(checked, method, "/doc", &[("if-match", "\"old\"")], "q").await;
        assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED, "{method}");
        let matching = [("if-none-match", tag.as_str())];
        let resp = call(checked, method, "/doc", &matching, "q").await;
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED, "{method}");
        let current = call(checked, method, "/doc", &[("if-match", tag.as_str())], "q").await;
        assert_eq!(
            current.status(),
            StatusCode::OK,
            "{method}: not behind the lock"
        );
        assert_eq!(store.calls.of(&format!("{method} /doc")), 1, "{method}");
    }
    assert!(!writer.is_finished(), "the writer still holds the lock");
    release.send(()).unwrap();
    assert_eq!(
        live("the writer", writer).await.unwrap().status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------
// 21. The layer's own 206: only where the client's tag names the bytes it is cut from
// ---------------------------------------------------------------------------------------

/// A text handler that ignores `Range`, with fields that speak for the whole content.
fn whole_text(text: &'static str, calls: Arc<AtomicUsize>) -> Handler<Incoming> {
    Handler::new(service_fn(move |_req: Request<Incoming>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .header("content-digest", "sha-256=:AAAA:")
            .header(header::TRAILER, "x-checksum")
            .body(full(text))
            .unwrap();
        async move { Ok::<_, Infallible>(resp) }
    }))
}

type Handler<B> = BoxCloneService<Request<B>, Response<TestBody>, Infallible>;

#[tokio::test]
async fn the_layers_206_is_cut_only_from_bytes_the_clients_tag_names() {
    const TEXT: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\
                        0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
    let calls = Arc::new(AtomicUsize::new(0));
    let tag = independent_tag(TEXT.as_bytes());
    // Compression for the whole app, outside the layer, without `CodingTagsLayer`: a gzip
    // client's 200 is encoded under the identity bytes' tag.
    let app_wide = serve(
        ServiceBuilder::new()
            .layer(tower_http::compression::CompressionLayer::new())
            .layer(ConditionalLayer::new())
            .service(whole_text(TEXT, calls.clone())),
    )
    .await;
    let resume = |encoding: &'static str| {
        let mut fields = vec![("range", "bytes=100-"), ("if-range", tag.as_str())];
        if !encoding.is_empty() {
            fields.push(("accept-encoding", encoding));
        }
        request("GET", "/t", &fields, "")
    };
    for version in [H1, H2] {
        // It may hold gzip bytes: the whole, encoded as before, never identity bytes to
        // append to gzip ones.
        let resp = ask(version, app_wide, resume("gzip, br")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{version:?}");
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        assert!(!resp.headers().contains_key(header::CONTENT_RANGE));
        // No coding accepted (curl -C -, a browser's media request): the part.
        for identity in ["", "identity;q=1, *;q=0"] {
            let resp = ask(version, app_wide, resume(identity)).await;
            assert_eq!(
                resp.status(),
                StatusCode::PARTIAL_CONTENT,
                "{version:?} {identity:?}"
            );
            assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 100-143/144");
            assert!(!resp.headers().contains_key(header::CONTENT_ENCODING));
            // What speaks for the whole does not go on the part.
            assert!(!resp.headers().contains_key("content-digest"));
            assert!(!resp.headers().contains_key(header::TRAILER));
            assert_eq!(etag(resp.headers()), Some(tag.clone()));
            assert_eq!(body_text(resp).await, &TEXT[100..]);
        }
    }
    // Under the recipe, where each coding has its own tag, the layer inside still cannot
    // tell where it sits: a gzip client gets the whole; a client of identity bytes the part;
    // a gzip tag never names a part.
    let recipe = serve(
        ServiceBuilder::new()
            .layer(tower_conditional::CodingTagsLayer::new())
            .layer(tower_http::compression::CompressionLayer::new())
            .layer(ConditionalLayer::new())
            .service(whole_text(TEXT, calls.clone())),
    )
    .await;
    let resp = ask(H1, recipe, resume("gzip")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    let resp = ask(H1, recipe, resume("")).await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body_text(resp).await, &TEXT[100..]);
    let encoded = ask(
        H1,
        recipe,
        request("GET", "/t", &[("accept-encoding", "gzip")], ""),
    )
    .await;
    let gzip_tag = etag(encoded.headers()).unwrap();
    assert_ne!(gzip_tag, tag);
    let fields = [
        ("range", "bytes=100-"),
        ("if-range", gzip_tag.as_str()),
        ("accept-encoding", "gzip"),
    ];
    let resp = ask(H1, recipe, request("GET", "/t", &fields, "")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2 * 3 + 4,
        "one call per request"
    );
}

/// Without a lookup that decides (none, a failing one, one that finds nothing), `If-Range`
/// never reaches the service with the `Range`, whatever its validator: ServeDir would answer
/// any of them with a part of the file it has now.
#[tokio::test]
async fn serve_dir_gets_no_range_that_nothing_checked() {
    let dir =
        std::env::temp_dir().join(format!("tower-conditional-ifrange-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_with_fixed_mtime(&dir.join("f.txt"), "C".repeat(100).as_bytes());
    let modified = http_date(UNIX_EPOCH + Duration::from_secs(1_000_000_000)).unwrap();
    let modified = modified.to_str().unwrap();
    let serve_dir = || tower_http::services::ServeDir::new(&dir);
    let failing = lookup_fn(|_req: LookupRequest| async {
        Err::<Option<Validators>, _>("the store is down")
    });
    let absent = lookup_fn(|_req: LookupRequest| async { Ok::<_, Infallible>(None) });
    let setups = [
        (
            "a failing lookup",
            serve(ConditionalLayer::new().lookup(failing).layer(serve_dir())).await,
        ),
        (
            "a lookup that finds nothing",
            serve(ConditionalLayer::new().lookup(absent).layer(serve_dir())).await,
        ),
        (
            "no lookup",
            serve(ConditionalLayer::new().layer(serve_dir())).await,
        ),
    ];
    for (what, addr) in setups {
        // A date, even the file's own, is weak unless the layer is told otherwise (§8.8.2.2).
        let old = "Mon, 01 Jan 2001 00:00:00 GMT";
        for if_range in ["\"stale\"", "W/\"weak\"", "stale", old, modified] {
            let fields = [("range", "bytes=90-"), ("if-range", if_range)];
            let resp = call(addr, "GET", "/f.txt", &fields, "").await;
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{what}, If-Range: {if_range}"
            );
            assert_eq!(body_text(resp).await.len(), 100, "{what}");
        }
    }
    // Where dates are strong, the file's own date keeps the part, which the layer cuts.
    let strong = serve(
        ConditionalLayer::new()
            .strong_last_modified(true)
            .layer(serve_dir()),
    )
    .await;
    let fields = [("range", "bytes=90-"), ("if-range", modified)];
    let resp = call(strong, "GET", "/f.txt", &fields, "").await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes 90-99/100");
    assert_eq!(body_text(resp).await, "C".repeat(10));
    let _ = std::fs::remove_dir_all(&dir);

    // What the service sees of Range and If-Range, in a field and in the body.
    let seen = |accept_ranges: &'static str| {
        service_fn(move |req: Request<Incoming>| async move {
            let saw = |name| {
                req.headers()
                    .get(name)
                    .map_or("-", |v| v.to_str().unwrap_or("?"))
                    .to_owned()
            };
            let text = format!("{} {}", saw(header::RANGE), saw(header::IF_RANGE));
            let resp = Response::builder()
                .header(header::ACCEPT_RANGES, accept_ranges)
                .header("x-saw", &text)
                .body(full(text))
                .unwrap();
            Ok::<_, Infallible>(resp)
        })
    };
    // A service that checks If-Range itself gets both, as sent.
    let addr = serve(
        ConditionalLayer::new()
            .service_checks_if_range(true)
            .layer(seen("bytes")),
    )
    .await;
    let fields = [("range", "bytes=1-"), ("if-range", "\"own\"")];
    let resp = call(addr, "GET", "/", &fields, "").await;
    assert_eq!(body_text(resp).await, "bytes=1- \"own\"");
    // A HEAD never carries them to the service (range handling is GET's alone), even where
    // the service answers HEAD itself.
    let addr = serve(
        ConditionalLayer::new()
            .head_as_get(false)
            .layer(seen("bytes")),
    )
    .await;
    let resp = call(addr, "HEAD", "/", &fields, "").await;
    assert_eq!(resp.headers()["x-saw"], "- -");
    // A 200 that takes no ranges is sent whole, also where the tag matches.
    let addr = serve(ConditionalLayer::new().layer(seen("none"))).await;
    let tag = etag(call(addr, "GET", "/", &[], "").await.headers()).unwrap();
    let fields = [("range", "bytes=1-"), ("if-range", tag.as_str())];
    let resp = call(addr, "GET", "/", &fields, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, "- -");
}

/// A conditional safe method, checked by the lookup under `serialize_writes`: one look, no
/// look after it for a new tag (it wrote nothing).
#[tokio::test]
async fn a_safe_method_is_looked_up_once() {
    let looks = Arc::new(AtomicUsize::new(0));
    let counted = looks.clone();
    let lookup = lookup_fn(move |_req: LookupRequest| {
        counted.fetch_add(1, Ordering::SeqCst);
        let current =
            Validators::new().with_etag(tower_conditional::EntityTag::strong("v1").unwrap());
        async move { Ok::<_, Infallible>(Some(current)) }
    });
    let handler = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(full("found")))
    });
    let layer = ConditionalLayer::new()
        .lookup(lookup)
        .serialize_writes(true);
    let addr = serve(layer.layer(handler)).await;
    let resp = call(addr, "QUERY", "/doc", &[("if-match", "\"v1\"")], "q").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        etag(resp.headers()),
        None,
        "no tag looked up after a safe method"
    );
    assert_eq!(looks.load(Ordering::SeqCst), 1);
    let resp = call(addr, "PATCH", "/doc", &[("if-match", "\"v1\"")], "v2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        etag(resp.headers()).as_deref(),
        Some("\"v1\""),
        "a write's tag, looked up after it"
    );
    assert_eq!(
        looks.load(Ordering::SeqCst),
        1 + 3,
        "the QUERY's one; the PATCH's before the lock, under it, after the write"
    );
}
