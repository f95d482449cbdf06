//! What users ask of ETag middleware: weak tags, a per-response opt-out, no tags on what must
//! not be stored, streams that never stall, visible outcomes, `Last-Modified` from the lookup,
//! and lookup-answered 304s that carry what the 200 would.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tower::{service_fn, Layer, ServiceExt};
use tower_conditional::precondition::Failed;
use tower_conditional::{
    lookup_fn, ConditionalLayer, EntityTag, LookupRequest, NoTag, Outcome, RejectionKind, Untagged,
    Validators,
};

fn outcome<B>(resp: &Response<B>) -> Outcome {
    *resp
        .extensions()
        .get::<Outcome>()
        .expect("every response carries an Outcome")
}

fn text(body: &'static str) -> Response<TestBody> {
    Response::new(full(body))
}

#[tokio::test]
async fn weak_etags_revalidate_but_never_satisfy_a_strong_if_match() {
    let stored = "the same meaning";
    let weak = EntityTag::weak(
        std::str::from_utf8(EntityTag::from_content(stored.as_bytes()).opaque()).unwrap(),
    )
    .unwrap();
    let lookup_tag = weak.clone();
    let lookup = lookup_fn(move |_: LookupRequest| {
        let tag = lookup_tag.clone();
        async move { Ok::<_, Infallible>(Some(Validators::new().with_etag(tag))) }
    });
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    let handler = service_fn(move |req: Request<String>| {
        let w = w.clone();
        async move {
            if req.method() == Method::PUT {
                w.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, Infallible>(text(stored))
        }
    });
    let layer = ConditionalLayer::new()
        .outcome_extension(true)
        .lookup(lookup)
        .weak_etags(true);

    let svc = layer.clone().layer(handler.clone());
    let first = svc.clone().oneshot(get("/")).await.unwrap();
    let sent = tag(first.headers());
    assert_eq!(sent, weak.to_string(), "W/ and the content hash");
    let again = svc
        .clone()
        .oneshot(with(get("/"), "if-none-match", &sent))
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::NOT_MODIFIED,
        "reads compare weakly"
    );
    assert_eq!(tag(again.headers()), sent);
    // The strong form of the same tag matches too, and the 304 names the tag as it is
    // sent (weak), not as the client wrote it.
    let strong = EntityTag::from_content(stored.as_bytes()).to_string();
    let strong_form = svc
        .clone()
        .oneshot(with(get("/"), "if-none-match", &strong))
        .await
        .unwrap();
    assert_eq!(strong_form.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(tag(strong_form.headers()), sent);

    // If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never matches ...
    let put = || Request::put("/").body("x".to_owned()).unwrap();
    let resp = svc
        .clone()
        .oneshot(with(put(), "if-match", &sent))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    // ... unless the route compares If-Match weakly too.
    let scim = layer.weak_if_match(true).layer(handler);
    let resp = scim.oneshot(with(put(), "if-match", &sent)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_handler_opts_a_response_out_and_its_own_tag_still_revalidates() {
    let svc = ConditionalLayer::new()
        .outcome_extension(true)
        .layer(service_fn(|req: Request<String>| async move {
            let mut resp = text("changes on every read");
            resp.extensions_mut().insert(NoTag);
            if req.uri().path() == "/own" {
                resp.headers_mut()
                    .insert(header::ETAG, HeaderValue::from_static("\"v7\""));
            }
            Ok::<_, Infallible>(resp)
        }));
    let resp = svc.clone().oneshot(get("/")).await.unwrap();
    assert!(!resp.headers().contains_key(header::ETAG));
    assert_eq!(outcome(&resp), Outcome::Untagged(Untagged::OptOut));

    let resp = svc
        .oneshot(with(get("/own"), "if-none-match", "\"v7\""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn no_store_responses_pass_untouched() {
    let svc = ConditionalLayer::new()
        .outcome_extension(true)
        .layer(service_fn(|_: Request<String>| async {
            let mut resp = text("secret balance");
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            Ok::<_, Infallible>(resp)
        }));
    let resp = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key(header::ETAG));
    assert_eq!(outcome(&resp), Outcome::Untagged(Untagged::NoStore));
    assert_eq!(collect(resp.into_body()).await, "secret balance");
}

/// A body that sends one chunk, then waits for `gate` before the second.
fn paused_body(
    content_type: &'static str,
    gate: tokio::sync::oneshot::Receiver<()>,
) -> Response<TestBody> {
    let stream = futures_util::stream::unfold((0, Some(gate)), |(i, gate)| async move {
        match i {
            0 => Some((
                Ok::<_, tower_conditional::BoxError>(Frame::data(Bytes::from_static(b"first\n"))),
                (1, gate),
            )),
            1 => {
                let _ = gate?.await;
                Some((Ok(Frame::data(Bytes::from_static(b"second\n"))), (2, None)))
            }
            _ => None,
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(http_body_util::StreamBody::new(stream).boxed())
        .unwrap()
}

#[tokio::test]
async fn paused_bodies_reach_the_client_before_they_resume() {
    // NDJSON is never held; any other body is held at most `max_buffer_time`. Either way the
    // head and the first bytes arrive while the producer is still paused: the gate opens
    // only after the client saw them (a held body would never get there).
    for (content_type, layer) in [
        (
            "application/x-ndjson",
            ConditionalLayer::new()
                .outcome_extension(true)
                .max_buffer_time(None),
        ),
        (
            "application/json",
            ConditionalLayer::new()
                .outcome_extension(true)
                .max_buffer_time(Duration::from_millis(100)),
        ),
    ] {
        let gates: Arc<Mutex<Vec<tokio::sync::oneshot::Receiver<()>>>> = Arc::default();
        let (open, gate) = tokio::sync::oneshot::channel();
        gates.lock().unwrap().push(gate);
        let svc = layer.layer(service_fn(move |_: Request<String>| {
            let gate = gates.lock().unwrap().pop().unwrap();
            async move { Ok::<_, Infallible>(paused_body(content_type, gate)) }
        }));
        let addr = serve(tower::util::MapRequestLayer::new(to_string_body).layer(svc)).await;
        let resp = tokio::time::timeout(Duration::from_secs(10), call(addr, "GET", "/", &[], ""))
            .await
            .unwrap_or_else(|_| panic!("{content_type}: the head never came"));
        assert!(!resp.headers().contains_key(header::ETAG), "{content_type}");
        let mut body = resp.into_body();
        let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{content_type}: the first bytes never came"))
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first\n");
        open.send(()).unwrap();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "second\n", "{content_type}: every byte, in order");
    }
}

fn to_string_body(req: Request<hyper::body::Incoming>) -> Request<String> {
    req.map(|_| String::new())
}

#[tokio::test]
async fn the_outcome_is_a_response_extension() {
    let version = Arc::new(Mutex::new("v1"));
    let v = version.clone();
    let lookup = lookup_fn(move |req: LookupRequest| {
        let current = *v.lock().unwrap();
        async move {
            if req.uri().path() == "/down" {
                return Err(std::io::Error::other("store down"));
            }
            Ok(Some(
                Validators::new().with_etag(EntityTag::from_content(current.as_bytes())),
            ))
        }
    });
    let handler = service_fn(|req: Request<String>| async move {
        let resp = match req.uri().path() {
            "/created" => Response::builder()
                .status(StatusCode::CREATED)
                .body(full("made"))
                .unwrap(),
            "/own" => Response::builder()
                .header(header::ETAG, "\"mine\"")
                .body(full("x"))
                .unwrap(),
            "/big" => Response::new(full(vec![b'x'; 64])),
            _ => Response::new(full("v1")),
        };
        Ok::<_, Infallible>(resp)
    });
    let svc = ConditionalLayer::new()
        .outcome_extension(true)
        .lookup(lookup)
        .max_buffer(32)
        .require_preconditions(true)
        .layer(handler);
    let tag = EntityTag::from_content(b"v1").to_string();
    let put = |uri: &str| Request::put(uri).body(String::new()).unwrap();
    let cases: Vec<(Request<String>, Outcome)> = vec![
        (get("/"), Outcome::Tagged),
        (with(get("/"), "if-none-match", &tag), Outcome::NotModified),
        (get("/created"), Outcome::Untagged(Untagged::Predicate)),
        (get("/own"), Outcome::Untagged(Untagged::OwnTag)),
        (get("/big"), Outcome::Untagged(Untagged::TooLarge)),
        (
            get("/missing").map(|b| b),
            Outcome::Tagged, // the handler answers 200 for any path
        ),
        (
            with(put("/"), "if-match", "\"stale\""),
            Outcome::Rejected(RejectionKind::PreconditionFailed(Failed::IfMatch)),
        ),
        (
            put("/"),
            Outcome::Rejected(RejectionKind::PreconditionRequired),
        ),
        (
            with(put("/down"), "if-match", &tag),
            Outcome::Rejected(RejectionKind::LookupFailed),
        ),
        (with(put("/"), "if-match", &tag), Outcome::Passed),
        (
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/")
                .body(String::new())
                .unwrap(),
            Outcome::Passed,
        ),
    ];
    for (req, expected) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(outcome(&resp), expected, "{what}");
    }

    // Without a lookup: the misconfiguration answer is an outcome too.
    let bare = ConditionalLayer::new()
        .outcome_extension(true)
        .layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(text("x"))
        }));
    let resp = bare
        .oneshot(with(put("/"), "if-match", &tag))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        outcome(&resp),
        Outcome::Rejected(RejectionKind::NoVersionSource)
    );
}

#[tokio::test]
async fn the_outcome_is_traced_at_debug_level() {
    let svc = ConditionalLayer::new()
        .outcome_extension(true)
        .layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(text("traced"))
        }));
    let tag = EntityTag::from_content(b"traced").to_string();
    // Once before the capture: the event's callsite is registered here, not halfway through
    // by another test's thread (which would leave its interest "never" for this subscriber).
    let warm_up = with(get("/"), "if-none-match", &tag);
    svc.clone().oneshot(warm_up).await.unwrap();
    let (captured, _guard) = Captured::install(tracing::Level::DEBUG);
    let resp = svc
        .oneshot(with(get("/"), "if-none-match", &tag))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let log = captured.text();
    assert!(
        log.contains("DEBUG") && log.contains("NotModified") && log.contains("status=304"),
        "{log}"
    );
}

#[tokio::test]
async fn last_modified_comes_from_the_lookup_when_asked() {
    let modified = UNIX_EPOCH + Duration::from_secs(784_111_777);
    let when = Arc::new(Mutex::new(modified));
    let w = when.clone();
    let lookup = lookup_fn(move |_: LookupRequest| {
        let t = *w.lock().unwrap();
        async move { Ok::<_, Infallible>(Some(Validators::new().with_last_modified(t))) }
    });
    let svc = ConditionalLayer::new()
        .outcome_extension(true)
        .lookup(lookup)
        .last_modified_from_lookup(true)
        .layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(text("dated by the store"))
        }));
    let resp = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(
        resp.headers()[header::LAST_MODIFIED],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    // A client that only revalidates with dates gets its 304.
    let resp = svc
        .clone()
        .oneshot(with(
            get("/"),
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    // A time in the future is sent as now (RFC 9110 §8.8.2.1).
    *when.lock().unwrap() = SystemTime::now() + Duration::from_secs(86_400);
    let resp = svc.oneshot(get("/")).await.unwrap();
    let sent =
        httpdate::parse_http_date(resp.headers()[header::LAST_MODIFIED].to_str().unwrap()).unwrap();
    assert!(sent <= SystemTime::now());
}

#[tokio::test]
async fn a_lookup_answered_304_carries_what_the_200_would() {
    let body = "the representation";
    let tag = EntityTag::from_content(body.as_bytes());
    let lookup_tag = tag.clone();
    let lookup = lookup_fn(move |_: LookupRequest| {
        let current = Validators::new()
            .with_etag(lookup_tag.clone())
            .with_header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            .with_header(header::VARY, HeaderValue::from_static("Accept"))
            .with_header(
                header::CONTENT_LOCATION,
                HeaderValue::from_static("/doc.json"),
            )
            .with_header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        async move { Ok::<_, Infallible>(Some(current)) }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handler = service_fn(move |_: Request<String>| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CACHE_CONTROL, "no-cache")
                    .header(header::VARY, "Accept")
                    .header(header::CONTENT_LOCATION, "/doc.json")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(full(body))
                    .unwrap(),
            )
        }
    });
    let revalidate = || with(get("/doc"), "if-none-match", &tag.to_string());
    for lookup_reads in [true, false] {
        let svc = ConditionalLayer::new()
            .outcome_extension(true)
            .lookup(lookup.clone())
            .lookup_reads(lookup_reads)
            .layer(handler.clone());
        let before = calls.load(Ordering::SeqCst);
        let resp = svc.oneshot(revalidate()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let ran = calls.load(Ordering::SeqCst) - before;
        assert_eq!(ran, usize::from(!lookup_reads), "handler calls");
        let h = resp.headers();
        assert_eq!(h[header::ETAG], tag.to_string().as_str());
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::VARY], "Accept");
        assert_eq!(h[header::CONTENT_LOCATION], "/doc.json");
        assert!(
            !h.contains_key(header::CONTENT_TYPE),
            "no content metadata on a 304"
        );
    }
}
