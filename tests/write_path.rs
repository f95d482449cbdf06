//! The write path through the public API: lookups, 412 before the handler, 428, fail-closed
//! 503, the expectation handed to handlers, serialized writes, If-Range, lookup-served 304s.

mod common;

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::{header, Method, Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, Expectation, LookupRequest, Rejection, RejectionKind,
    Validators,
};

/// A store holding `body` at `path`, last modified at `t(1_000_000)`.
fn stored(path: &str, body: &str) -> Store {
    let store = Store::new(&[(path, body)]);
    store.date(path, t(1_000_000));
    store
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn tag_of(s: &str) -> String {
    independent_tag(s.as_bytes())
}

async fn problem(resp: Response<impl http_body::Body<Error = impl std::fmt::Debug>>) -> String {
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    String::from_utf8(collect(resp.into_body()).await.to_vec()).unwrap()
}

#[tokio::test]
async fn a_stale_if_match_is_412_before_the_handler_runs() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());

    let resp = svc
        .clone()
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag_of("v0")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert!(
        !resp.headers().contains_key(header::ETAG),
        "the current ETag is not disclosed by default"
    );
    let body = problem(resp).await;
    assert!(
        body.contains("\"condition\":\"If-Match\"") && body.contains("\"status\":412"),
        "{body}"
    );
    assert_eq!(store.calls.total(), 0, "the handler never ran");
    assert_eq!(store.body("/u/1").unwrap(), "v1", "nothing written");

    let resp = svc
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.body("/u/1").unwrap(), "v2");
}

#[tokio::test]
async fn if_match_star_and_absent_targets() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let ok = svc
        .clone()
        .oneshot(with(put("/u/1", "x"), "if-match", "*"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // If-Match on a target with no current representation: a PUT would create it, so the
    // precondition is evaluated (412); DELETE and PATCH would answer 404 without conditions,
    // so 404 it stays (RFC 9110 §13.2.1) — answered by the layer, the handler never runs.
    for (method, expected) in [
        (Method::PUT, StatusCode::PRECONDITION_FAILED),
        (Method::DELETE, StatusCode::NOT_FOUND),
        (Method::PATCH, StatusCode::NOT_FOUND),
    ] {
        for if_match in ["*".to_owned(), tag_of("x")] {
            let req = Request::builder()
                .method(method.clone())
                .uri("/u/none")
                .header("if-match", &if_match)
                .body(String::new())
                .unwrap();
            assert_eq!(
                svc.clone().oneshot(req).await.unwrap().status(),
                expected,
                "{method} If-Match: {if_match}"
            );
        }
    }
    assert_eq!(
        store.calls.total(),
        1,
        "only the successful PUT reached the handler"
    );
    // Declaring PATCH as creating makes it a 412 instead.
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .creating_methods([Method::PUT, Method::PATCH])
        .layer(store.handler());
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/u/none")
        .header("if-match", "*")
        .body(String::new())
        .unwrap();
    assert_eq!(
        svc.oneshot(req).await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(store.writes(), 1);
}

#[tokio::test]
async fn if_none_match_star_is_create_only_and_a_match_on_a_write_is_412_not_304() {
    let store = Store::new(&[]);
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let first = svc
        .clone()
        .oneshot(with(put("/u/new", "a"), "if-none-match", "*"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = svc
        .clone()
        .oneshot(with(put("/u/new", "b"), "if-none-match", "*"))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::PRECONDITION_FAILED);
    assert!(problem(second).await.contains("If-None-Match"));
    assert_eq!(store.body("/u/new").unwrap(), "a");

    let matched = svc
        .oneshot(with(
            put("/u/new", "c"),
            "if-none-match",
            &format!("W/{}", tag_of("a")),
        ))
        .await
        .unwrap();
    assert_eq!(matched.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(store.writes(), 1);
}

#[tokio::test]
async fn if_unmodified_since_only_without_if_match() {
    let store = stored("/u/1", "v1"); // modified at t(1_000_000)
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let before = httpdate::fmt_http_date(t(999_999));
    let at = httpdate::fmt_http_date(t(1_000_000));
    let resp = svc
        .clone()
        .oneshot(with(put("/u/1", "x"), "if-unmodified-since", &before))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert!(problem(resp).await.contains("If-Unmodified-Since"));
    // If-Match present: If-Unmodified-Since is not evaluated.
    let req = with(
        with(put("/u/1", "x"), "if-match", &tag_of("v1")),
        "if-unmodified-since",
        &before,
    );
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    store.set("/u/1", "v1");
    store.date("/u/1", t(1_000_000));
    let resp = svc
        .oneshot(with(put("/u/1", "y"), "if-unmodified-since", &at))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_handler_receives_the_validated_expectation() {
    let store = stored("/u/1", "v1");
    let seen = Arc::new(Mutex::new(None::<Expectation>));
    let record = seen.clone();
    let inner = service_fn(move |req: Request<String>| {
        *record.lock().unwrap() = req.extensions().get::<Expectation>().cloned();
        async { Ok::<_, Infallible>(Response::new(full(Bytes::new()))) }
    });
    let svc = ConditionalLayer::new().lookup(store.lookup()).layer(inner);
    svc.clone()
        .oneshot(with(
            put("/u/1", "x"),
            "if-match",
            &format!("\"zz\", {}", tag_of("v1")),
        ))
        .await
        .unwrap();
    let e = seen.lock().unwrap().take().expect("expectation present");
    assert_eq!(
        e.etag().unwrap().to_string(),
        tag_of("v1"),
        "the current tag that matched"
    );
    assert!(e.must_exist() && !e.must_not_exist());
    assert!(e.current().is_some());

    svc.clone()
        .oneshot(with(put("/u/2", "x"), "if-none-match", "*"))
        .await
        .unwrap();
    let e = seen.lock().unwrap().take().expect("expectation present");
    assert!(e.must_not_exist() && e.etag().is_none() && e.current().is_none());

    svc.oneshot(put("/u/1", "x")).await.unwrap();
    assert!(
        seen.lock().unwrap().is_none(),
        "unconditional writes carry no expectation"
    );
}

#[tokio::test]
async fn without_a_lookup_the_layer_asks_the_service_with_an_internal_get() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .internal_get()
        .layer(store.handler());

    // The client's tag comes from a GET through the same layer.
    let got = svc.clone().oneshot(get("/u/1")).await.unwrap();
    let tag = tag(got.headers());

    let stale = svc
        .clone()
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag_of("old")))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert!(!stale.headers().contains_key(header::ETAG));
    assert_eq!(store.writes(), 0);

    let fresh = svc
        .clone()
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag))
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(store.body("/u/1").unwrap(), "v2");

    // A 404 from the internal GET means "no current representation".
    let create = svc
        .clone()
        .oneshot(with(put("/u/9", "new"), "if-none-match", "*"))
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::CREATED);
    let absent = svc
        .oneshot(with(put("/u/10", "new"), "if-match", "*"))
        .await
        .unwrap();
    assert_eq!(absent.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn no_lookup_leaves_write_preconditions_to_the_handler() {
    let store = stored("/u/1", "v1");
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let inner = service_fn(move |req: Request<String>| {
        *record.lock().unwrap() = req.headers().get("if-match").cloned();
        async { Ok::<_, Infallible>(Response::new(full(Bytes::new()))) }
    });
    let svc = ConditionalLayer::new().no_lookup().layer(inner);
    let resp = svc
        .oneshot(with(put("/u/1", "v2"), "if-match", "\"stale\""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().as_ref().unwrap(),
        "\"stale\"",
        "untouched"
    );
    drop(store);
}

#[tokio::test]
async fn required_preconditions_answer_428() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .require_preconditions(true)
        .layer(store.handler());
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/u/1")
            .body("x".to_owned())
            .unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED, "{method}");
        let body = problem(resp).await;
        assert!(
            body.contains("\"status\":428") && body.contains("If-Match"),
            "{body}"
        );
    }
    // An invalid If-Unmodified-Since does not count as a precondition.
    let resp = svc
        .clone()
        .oneshot(with(put("/u/1", "x"), "if-unmodified-since", "soon"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(store.calls.total(), 0);
    // Reads are not affected; a conditional write goes through.
    let read = svc.clone().oneshot(get("/u/1")).await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let resp = svc
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_failing_lookup_fails_closed_with_503_and_is_traced() {
    let store = stored("/u/1", "v1");
    let failing = lookup_fn(|_req: LookupRequest| async {
        Err::<Option<Validators>, _>(std::io::Error::other("db unreachable"))
    });
    let svc = ConditionalLayer::new()
        .lookup(failing)
        .layer(store.handler());
    // Once before the capture, so the event's callsite is registered on this thread (see
    // `the_outcome_is_traced_at_debug_level`).
    let warm_up = with(put("/u/1", "v2"), "if-match", &tag_of("v1"));
    svc.clone().oneshot(warm_up).await.unwrap();
    let (captured, _guard) = Captured::install(tracing::Level::INFO);
    let resp = svc
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    let body = problem(resp).await;
    assert!(
        !body.contains("db unreachable"),
        "internal errors are logged, not sent: {body}"
    );
    assert_eq!(store.calls.total(), 0);
    assert_eq!(store.body("/u/1").unwrap(), "v1");
    let log = captured.text();
    assert!(
        log.contains("db unreachable") && log.contains("ERROR"),
        "{log}"
    );
}

#[tokio::test]
async fn a_slow_lookup_behind_a_timeout_fails_closed() {
    let store = stored("/u/1", "v1");
    let slow = lookup_fn(|_req: LookupRequest| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, Infallible>(None)
    });
    let bounded = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(slow);
    let svc = ConditionalLayer::new()
        .lookup(bounded)
        .on_reject(|r: &Rejection| {
            let status = if r.kind() == RejectionKind::LookupFailed {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                r.status()
            };
            Response::builder()
                .status(status)
                .body(Bytes::from_static(b"custom"))
                .unwrap()
        })
        .layer(store.handler());
    let started = std::time::Instant::now();
    let resp = svc
        .oneshot(with(put("/u/1", "v2"), "if-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "the user's rendering"
    );
    assert_eq!(collect(resp.into_body()).await, "custom");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(store.calls.total(), 0);
}

/// The renderer runs when the layer decides, in `Service::call`, for the answers it makes
/// there (428, 501): a client that goes away before the future is polled still counts.
#[tokio::test]
async fn answers_made_in_call_are_rendered_there_even_if_never_polled() {
    let store = stored("/u/1", "v1");
    let rendered = Arc::new(AtomicUsize::new(0));
    let counter = rendered.clone();
    let count = move |r: &Rejection| {
        counter.fetch_add(1, Ordering::SeqCst);
        r.default_response()
    };
    // 501: a conditional write and no way to check it.
    let mut unchecked = ConditionalLayer::new()
        .on_reject(count.clone())
        .layer(store.handler());
    let conditional = with(put("/u/1", "v2"), "if-match", &tag_of("v1"));
    drop(unchecked.ready().await.unwrap().call(conditional));
    assert_eq!(rendered.load(Ordering::SeqCst), 1);
    // 428: preconditions required, none sent.
    let mut required = ConditionalLayer::new()
        .lookup(store.lookup())
        .require_preconditions(true)
        .on_reject(count)
        .layer(store.handler());
    drop(required.ready().await.unwrap().call(put("/u/1", "v2")));
    assert_eq!(rendered.load(Ordering::SeqCst), 2);
    // Polled, the same answer comes out.
    let resp = required.oneshot(put("/u/1", "v2")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(rendered.load(Ordering::SeqCst), 3);
    assert_eq!(store.calls.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_exactly_one_wins_with_serialized_writes() {
    let store = stored("/u/1", "v0");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true)
        .layer(store.handler::<String>());
    // The handler here does not CAS: the lock alone must make the layer's check hold.
    let (plain_store, writes) = (store.clone(), Arc::new(AtomicUsize::new(0)));
    let counted = writes.clone();
    let no_cas = service_fn(move |req: Request<String>| {
        let (store, writes) = (plain_store.clone(), counted.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await; // widen the race window
            store.set("/u/1", req.body());
            writes.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(full(Bytes::new())))
        }
    });
    let svc_no_cas = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true)
        .layer(no_cas);
    drop(svc);
    // 20 rounds of 32 writers holding the same If-Match.
    for round in 0..20 {
        let current = store.body("/u/1").unwrap();
        let tag = tag_of(&current);
        let mut tasks = Vec::new();
        for i in 0..32 {
            let svc = svc_no_cas.clone();
            let req = with(
                put("/u/1", &format!("round {round} writer {i}")),
                "if-match",
                &tag,
            );
            tasks.push(tokio::spawn(async move {
                (i, svc.oneshot(req).await.unwrap().status())
            }));
        }
        let mut winners = Vec::new();
        let mut failed = 0;
        for task in tasks {
            let (i, status) = task.await.unwrap();
            match status {
                StatusCode::OK => winners.push(i),
                StatusCode::PRECONDITION_FAILED => failed += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one 2xx");
        assert_eq!(failed, 31);
        assert_eq!(
            store.body("/u/1").unwrap(),
            format!("round {round} writer {}", winners[0]),
            "nothing lost"
        );
    }
    assert_eq!(writes.load(Ordering::SeqCst), 20, "one write per round");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_exactly_one_wins_with_the_handlers_cas() {
    // No lock: several may pass the layer's check, but the CAS on the expectation decides.
    let store = stored("/u/1", "v0");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let tag = tag_of("v0");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let svc = svc.clone();
            let req = with(put("/u/1", &format!("writer {i}")), "if-match", &tag);
            tokio::spawn(async move { (i, svc.oneshot(req).await.unwrap().status()) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        if status.is_success() {
            winners.push(i);
        } else {
            assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(store.writes(), 1);
    assert_eq!(
        store.body("/u/1").unwrap(),
        format!("writer {}", winners[0])
    );
}

#[tokio::test]
async fn a_serialized_write_gets_the_new_etag_from_the_lookup() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true)
        .layer(store.handler());
    let patch = |body: &str| {
        let mut req = put("/u/1", body);
        *req.method_mut() = Method::PATCH;
        req
    };
    let resp = svc
        .clone()
        .oneshot(with(patch("v2"), "if-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::ETAG], tag_of("v2").as_str());
    // The next write can use it directly.
    let resp = svc
        .clone()
        .oneshot(with(put("/u/1", "v3"), "if-match", &tag_of("v2")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A PUT's answer gets none from the layer: RFC 9110 §9.3.4 allows a validator there only
    // when the content was stored untransformed, which only the handler knows.
    assert!(!resp.headers().contains_key(header::ETAG));

    // A handler's own ETag is kept as is.
    let inner = service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::ETAG, "\"handler\"")
                .body(full(Bytes::new()))
                .unwrap(),
        )
    });
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true)
        .layer(inner);
    let resp = svc
        .oneshot(with(put("/u/1", "v4"), "if-match", &tag_of("v3")))
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::ETAG], "\"handler\"");
}

#[tokio::test]
async fn lookup_reads_answers_304_without_calling_the_handler() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .lookup_reads(true)
        .layer(store.handler());
    let resp = svc
        .clone()
        .oneshot(with(get("/u/1"), "if-none-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()[header::ETAG], tag_of("v1").as_str());
    assert_eq!(store.calls.total(), 0, "the handler was not run");

    // A miss goes to the handler, and gets the hashed tag.
    let resp = svc
        .clone()
        .oneshot(with(get("/u/1"), "if-none-match", "\"old\""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.calls.total(), 1);

    // Off by default: the handler runs and the 304 comes from its response.
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let resp = svc
        .oneshot(with(get("/u/1"), "if-none-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(store.calls.total(), 2);
}

/// A handler that serves ranges itself and reports the Range it saw.
fn ranged(store: &Store) -> Handler<String> {
    let store = store.clone();
    Handler::new(service_fn(move |req: Request<String>| {
        let body = Bytes::from(store.body(req.uri().path()).unwrap());
        let range = req.headers().get(header::RANGE).cloned();
        let if_range = req.headers().contains_key(header::IF_RANGE);
        async move {
            let mut resp = match range {
                // Only `bytes=0-1` is needed here.
                Some(_) => Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes 0-1/{}", body.len()))
                    .body(full(body.slice(0..2)))
                    .unwrap(),
                None => Response::new(full(body)),
            };
            resp.headers_mut().insert(
                "x-saw-if-range",
                if if_range { "yes" } else { "no" }.parse().unwrap(),
            );
            Ok::<_, Infallible>(resp)
        }
    }))
}

/// `If-None-Match` is evaluated before `Range` (RFC 9110 §13.2.2): a current tag is a 304,
/// never a 206 — the layer cannot compute the tag of a part, so it asks for the whole and
/// evaluates that; a stale tag gets the whole representation (a server may ignore `Range`).
/// With a lookup deciding first (here because of `If-Range`), its 304 decision also asks the
/// service for the whole.
#[tokio::test]
async fn if_none_match_with_range_is_304_never_206() {
    let store = stored("/f", "0123456789");
    let current = tag_of("0123456789");
    let req = |inm: &str, if_range: Option<&str>| {
        let mut req = Request::get("/f")
            .header(header::RANGE, "bytes=0-1")
            .header(header::IF_NONE_MATCH, inm);
        if let Some(v) = if_range {
            req = req.header(header::IF_RANGE, v);
        }
        req.body(String::new()).unwrap()
    };
    let plain = ConditionalLayer::new().no_lookup().layer(ranged(&store));
    // A lookup that knows only the date cannot evaluate If-None-Match: the whole decides.
    let dated = ConditionalLayer::new()
        .lookup(lookup_fn(|_req: LookupRequest| async {
            Ok::<_, Infallible>(Some(Validators::new().with_last_modified(t(1_000_000))))
        }))
        .last_modified_from_lookup(true)
        .layer(ranged(&store));
    let resp = dated.clone().oneshot(req(&current, None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "date-only lookup");
    let looked_up = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(ranged(&store));
    for if_range in [None, Some(current.as_str())] {
        let statuses = [
            plain
                .clone()
                .oneshot(req(&current, if_range))
                .await
                .unwrap()
                .status(),
            looked_up
                .clone()
                .oneshot(req(&current, if_range))
                .await
                .unwrap()
                .status(),
        ];
        assert_eq!(
            statuses,
            [StatusCode::NOT_MODIFIED; 2],
            "If-Range {if_range:?}"
        );
    }
    for resp in [
        plain
            .clone()
            .oneshot(req(&tag_of("old"), None))
            .await
            .unwrap(),
        looked_up
            .clone()
            .oneshot(req(&tag_of("old"), None))
            .await
            .unwrap(),
    ] {
        assert_eq!(resp.status(), StatusCode::OK, "the whole for a stale tag");
        assert_eq!(collect(resp.into_body()).await, "0123456789");
    }
}

#[tokio::test]
async fn if_range_mismatch_removes_range_and_a_match_keeps_it() {
    let store = stored("/f", "0123456789");
    {
        let svc = ConditionalLayer::new()
            .lookup(store.lookup())
            .layer(ranged(&store));
        let req = |if_range: &str| {
            Request::get("/f")
                .header(header::RANGE, "bytes=0-1")
                .header(header::IF_RANGE, if_range)
                .body(String::new())
                .unwrap()
        };
        let resp = svc
            .clone()
            .oneshot(req(&tag_of("0123456789")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            resp.headers()["x-saw-if-range"],
            "yes",
            "a matching If-Range stays for the handler to check against what it serves"
        );
        assert!(
            !resp.headers().contains_key(header::ETAG),
            "the layer never stamps a tag on bytes it did not hash"
        );
        assert_eq!(collect(resp.into_body()).await, "01");

        for stale in [
            tag_of("old"),
            format!("W/{}", tag_of("0123456789")),
            "not a validator".into(),
        ] {
            let resp = svc.clone().oneshot(req(&stale)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "If-Range: {stale}");
            assert_eq!(collect(resp.into_body()).await, "0123456789");
        }
        // Date form: exact match with Last-Modified only (the lookup knows it; the
        // handler sends none, so the internal GET cannot and the Range is dropped).
        let resp = svc
            .clone()
            .oneshot(req(&httpdate::fmt_http_date(t(1_000_001))))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // A date equal to Last-Modified: weak by default (RFC 9110 §8.8.2.2 — the layer cannot
    // know that the item did not change twice within that second), so the whole item; a
    // part once the service's dates are declared strong.
    let req = || {
        Request::get("/f")
            .header(header::RANGE, "bytes=0-1")
            .header(header::IF_RANGE, httpdate::fmt_http_date(t(1_000_000)))
            .body(String::new())
            .unwrap()
    };
    for (strong, expected) in [(false, StatusCode::OK), (true, StatusCode::PARTIAL_CONTENT)] {
        let svc = ConditionalLayer::new()
            .lookup(store.lookup())
            .strong_last_modified(strong)
            .layer(ranged(&store));
        let resp = svc.oneshot(req()).await.unwrap();
        assert_eq!(resp.status(), expected, "strong_last_modified({strong})");
    }
}

#[tokio::test]
async fn weak_if_match_is_opt_in() {
    let store = stored("/u/1", "v1");
    let weak = format!("W/{}", tag_of("v1"));
    let strict = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let resp = strict
        .oneshot(with(put("/u/1", "x"), "if-match", &weak))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let scim = ConditionalLayer::new()
        .lookup(store.lookup())
        .weak_if_match(true)
        .layer(store.handler());
    let resp = scim
        .oneshot(with(put("/u/1", "x"), "if-match", &weak))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_write_preconditions_fail_closed() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    for (name, value) in [
        ("if-match", "v1"),
        ("if-match", "*, \"a\""),
        ("if-none-match", "nope"),
    ] {
        let resp = svc
            .clone()
            .oneshot(with(put("/u/1", "x"), name, value))
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::PRECONDITION_FAILED,
            "{name}: {value}"
        );
    }
    assert_eq!(store.writes(), 0);
}

#[tokio::test]
async fn grpc_requests_get_a_grpc_status_not_http_412() {
    let store = stored("/pkg.Svc/Update", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let req = Request::post("/pkg.Svc/Update")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("if-match", tag_of("old"))
        .body(String::new())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "9");
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
    assert_eq!(store.calls.total(), 0);
}

#[tokio::test]
async fn over_a_real_hyper_server_a_stale_put_is_412_and_nothing_is_written() {
    let store = stored("/u/1", "v1");
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler::<hyper::body::Incoming>());
    let addr = serve(svc).await;
    let req = |if_match: String| {
        Request::put("/u/1")
            .header("host", "x")
            .header("if-match", if_match)
            .body(http_body_util::Full::new(Bytes::from_static(b"v2")))
            .unwrap()
    };
    let resp = send(addr, req(tag_of("v0"))).await;
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(store.body("/u/1").unwrap(), "v1");
    let resp = send(addr, req(tag_of("v1"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.body("/u/1").unwrap(), "v2");
    let _ = std::io::sink().flush();
}

#[tokio::test]
async fn the_layer_clones_and_stays_usable_when_a_deferred_request_is_dropped() {
    // Dropping the response future while the lookup is pending leaves the service usable.
    let store = stored("/u/1", "v1");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (current, waiting) = (store.clone(), gate.clone());
    let lookup = lookup_fn(move |req: LookupRequest| {
        let gate = waiting.clone();
        let found = current
            .body(req.uri().path())
            .map(|body| Validators::new().with_etag(EntityTag::from_content(body.as_bytes())));
        async move {
            let _permit = gate.acquire().await.unwrap();
            Ok::<_, Infallible>(found)
        }
    });
    let mut svc = ConditionalLayer::new()
        .lookup(lookup)
        .layer(store.handler());
    let pending =
        svc.ready()
            .await
            .unwrap()
            .call(with(put("/u/1", "v2"), "if-match", &tag_of("v1")));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), pending)
            .await
            .is_err(),
        "dropped mid-lookup"
    );
    gate.add_permits(100);
    let resp = svc
        .ready()
        .await
        .unwrap()
        .call(with(put("/u/1", "v2"), "if-match", &tag_of("v1")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.writes(), 1, "only the second request wrote");
}

#[tokio::test]
async fn a_lookup_date_outside_http_date_range_does_not_panic() {
    // Validators from a lookup may hold any SystemTime; a 304 built from them must not panic.
    let far = lookup_fn(|_req: LookupRequest| async {
        Ok::<_, Infallible>(Some(
            Validators::new().with_last_modified(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
        ))
    });
    let early = lookup_fn(|_req: LookupRequest| async {
        Ok::<_, Infallible>(Some(
            Validators::new().with_last_modified(UNIX_EPOCH - Duration::from_secs(10)),
        ))
    });
    let store = stored("/u/1", "v1");
    for svc in [
        ConditionalLayer::new()
            .lookup(far)
            .lookup_reads(true)
            .layer(store.handler())
            .boxed_clone(),
        ConditionalLayer::new()
            .lookup(early)
            .lookup_reads(true)
            .layer(store.handler())
            .boxed_clone(),
    ] {
        let req = with(
            get("/u/1"),
            "if-modified-since",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        );
        let resp = svc.oneshot(req).await.unwrap();
        assert!(resp.status() == StatusCode::NOT_MODIFIED || resp.status() == StatusCode::OK);
    }
}
