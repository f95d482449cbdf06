//! The read path through the public API: ETags from bodies, 304s, HEAD, limits, streams.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_conditional::{ConditionalLayer, EntityTag};

const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// A handler that answers GET with `body`, a few cacheable fields, and a cookie.
fn page(
    body: &'static [u8],
) -> impl tower::Service<Request<String>, Response = Response<TestBody>, Error = Infallible> + Clone
{
    service_fn(move |_req: Request<String>| async move {
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .header(header::CACHE_CONTROL, "no-cache")
                .header(header::VARY, "Accept")
                .header(header::CONTENT_LOCATION, "/page")
                .header(header::SET_COOKIE, "seen=1")
                .header(header::LAST_MODIFIED, LAST_MODIFIED)
                .body(full(body))
                .unwrap(),
        )
    })
}

#[tokio::test]
async fn etag_is_the_sha256_of_the_bytes_sent_and_stable() {
    let svc = ConditionalLayer::new().layer(page(b"hello world"));
    let first = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let tag = tag(first.headers());
    assert_eq!(tag, independent_tag(b"hello world"));
    assert_eq!(collect(first.into_body()).await, "hello world");

    let second = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(
        second.headers()[header::ETAG],
        tag.as_str(),
        "stable across requests"
    );

    let other = ConditionalLayer::new()
        .layer(page(b"hello world!"))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_ne!(
        other.headers()[header::ETAG],
        tag.as_str(),
        "differs when the body differs"
    );
}

#[tokio::test]
async fn the_tag_does_not_depend_on_chunking_and_chunks_are_replayed_unchanged() {
    let data = pattern(100_000);
    let whole = independent_tag(&data);
    for size in [1_000usize, 4096, 100_000] {
        let parts: Vec<Bytes> = data.chunks(size).map(Bytes::copy_from_slice).collect();
        let n_parts = parts.len();
        let svc = ConditionalLayer::new().layer(service_fn(move |_: Request<String>| {
            let parts = parts.clone();
            async move { Ok::<_, Infallible>(Response::new(chunks(parts))) }
        }));
        let resp = svc.oneshot(get("/")).await.unwrap();
        assert_eq!(
            resp.headers()[header::ETAG],
            whole.as_str(),
            "chunk size {size}"
        );
        // The held chunks come back as the same number of frames: replayed, not concatenated.
        let mut body = resp.into_body();
        let mut frames = 0;
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(&frame.unwrap().into_data().unwrap());
            frames += 1;
        }
        assert_eq!(frames, n_parts);
        assert_eq!(got, data);
    }
}

#[tokio::test]
async fn if_none_match_gets_304_with_exactly_the_rfc_fields() {
    let svc = ConditionalLayer::new().layer(page(b"cached"));
    let tag = independent_tag(b"cached");
    for inm in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".to_owned(),
    ] {
        let resp = svc
            .clone()
            .oneshot(with(get("/"), "if-none-match", &inm))
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {inm}"
        );
        let h = resp.headers();
        assert_eq!(h[header::ETAG], tag.as_str());
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::VARY], "Accept");
        assert_eq!(h[header::CONTENT_LOCATION], "/page");
        assert_eq!(h[header::SET_COOKIE], "seen=1");
        for absent in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::LAST_MODIFIED,
        ] {
            assert!(!h.contains_key(&absent), "{absent} must not be in a 304");
        }
        assert!(resp.body().is_end_stream());
        assert!(collect(resp.into_body()).await.is_empty());
    }
    let miss = svc
        .oneshot(with(get("/"), "if-none-match", "\"other\""))
        .await
        .unwrap();
    assert_eq!(miss.status(), StatusCode::OK);
    assert_eq!(collect(miss.into_body()).await, "cached");
}

#[tokio::test]
async fn if_modified_since_applies_only_without_if_none_match() {
    let svc = ConditionalLayer::new().layer(page(b"dated"));
    let resp = svc
        .clone()
        .oneshot(with(get("/"), "if-modified-since", LAST_MODIFIED))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);

    let older = "Sat, 05 Nov 1994 08:49:37 GMT";
    let resp = svc
        .clone()
        .oneshot(with(get("/"), "if-modified-since", older))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // If-None-Match present and not matching: If-Modified-Since is not evaluated.
    let req = with(
        with(get("/"), "if-none-match", "\"nope\""),
        "if-modified-since",
        LAST_MODIFIED,
    );
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );

    // An invalid date is ignored.
    let resp = svc
        .oneshot(with(get("/"), "if-modified-since", "yesterday"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_failing_if_match_on_get_is_412_problem_json() {
    let svc = ConditionalLayer::new().layer(page(b"doc"));
    let resp = svc
        .clone()
        .oneshot(with(get("/"), "if-match", "\"stale\""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(
        !resp.headers().contains_key(header::ETAG),
        "the current tag is not disclosed by default"
    );
    let body = collect(resp.into_body()).await;
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.contains("\"status\":412") && text.contains("If-Match"),
        "{text}"
    );

    let ok = svc
        .oneshot(with(get("/"), "if-match", &independent_tag(b"doc")))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn trailers_survive_buffering() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let svc = ConditionalLayer::new().layer(service_fn(move |_: Request<String>| {
        let trailers = trailers.clone();
        async move {
            let body = chunks_with_trailers(
                vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
                trailers,
            );
            Ok::<_, Infallible>(Response::new(body))
        }
    }));
    let resp = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(
        resp.headers()[header::ETAG],
        independent_tag(b"ab").as_str()
    );
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "ab");
}

#[tokio::test]
async fn a_stream_larger_than_max_buffer_arrives_whole_and_untagged() {
    const SIZE: usize = 10 * 1024 * 1024;
    let svc = ConditionalLayer::new()
        .max_buffer(1024 * 1024)
        .layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(pattern_stream(SIZE, 64 * 1024)))
        }));
    let resp = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key(header::ETAG));
    let body = collect(resp.into_body()).await;
    assert_eq!(body.len(), SIZE);
    assert!(
        body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "every byte in order"
    );
}

#[tokio::test]
async fn a_declared_length_above_max_buffer_is_not_buffered_at_all() {
    let polled = Arc::new(AtomicUsize::new(0));
    let seen = polled.clone();
    let svc =
        ConditionalLayer::new()
            .max_buffer(10)
            .layer(service_fn(move |_: Request<String>| {
                let seen = seen.clone();
                async move {
                    let stream = futures_util::stream::iter(0..3).map(move |_| {
                        seen.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, tower_conditional::BoxError>(hyper::body::Frame::data(
                            Bytes::from_static(b"0123456789"),
                        ))
                    });
                    let body = BodyExt::boxed(http_body_util::StreamBody::new(stream));
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CONTENT_LENGTH, "30")
                            .body(body)
                            .unwrap(),
                    )
                }
            }));
    use futures_util::StreamExt as _;
    let resp = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(
        polled.load(Ordering::SeqCst),
        0,
        "decided before any byte was read"
    );
    assert!(!resp.headers().contains_key(header::ETAG));
    assert_eq!(collect(resp.into_body()).await.len(), 30);
}

#[tokio::test]
async fn an_event_stream_is_passed_through_and_its_first_event_arrives_at_once() {
    let svc = ConditionalLayer::new().layer(service_fn(|_: Request<String>| async {
        // One event now, then nothing, ever: a buffering layer would never answer.
        let first = futures_util::stream::once(async {
            Ok::<_, tower_conditional::BoxError>(hyper::body::Frame::data(Bytes::from_static(
                b"data: hi\n\n",
            )))
        });
        let body = BodyExt::boxed(http_body_util::StreamBody::new(
            first.chain(futures_util::stream::pending()),
        ));
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(body)
                .unwrap(),
        )
    }));
    use futures_util::StreamExt as _;
    let resp = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(get("/sse")))
        .await
        .unwrap()
        .unwrap();
    assert!(!resp.headers().contains_key(header::ETAG));
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event before the stream ends");
    assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "data: hi\n\n");
}

#[tokio::test]
async fn a_handler_etag_is_kept_not_rehashed_and_drives_304() {
    let svc = ConditionalLayer::new().layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::ETAG, "W/\"v7\"")
                .body(full("body"))
                .unwrap(),
        )
    }));
    let resp = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(resp.headers()[header::ETAG], "W/\"v7\"");
    assert_eq!(resp.headers().get_all(header::ETAG).iter().count(), 1);
    let resp = svc
        .oneshot(with(get("/"), "if-none-match", "\"v7\""))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_MODIFIED,
        "weak comparison for If-None-Match"
    );
    assert_eq!(resp.headers()[header::ETAG], "W/\"v7\"");
}

#[tokio::test]
async fn head_gets_the_same_etag_as_get_even_from_a_service_that_empties_head_bodies() {
    // Like axum: the service answers HEAD with the GET head and an empty body.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let inner = service_fn(move |req: Request<String>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let head = req.method() == Method::HEAD;
        async move {
            let body = if head {
                full(Bytes::new())
            } else {
                full("representation")
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(body)
                    .unwrap(),
            )
        }
    });
    let svc = ConditionalLayer::new().layer(inner);
    let get_resp = svc.clone().oneshot(get("/")).await.unwrap();
    let head_resp = svc
        .clone()
        .oneshot(Request::head("/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(head_resp.status(), StatusCode::OK);
    assert_eq!(
        head_resp.headers()[header::ETAG],
        get_resp.headers()[header::ETAG]
    );
    assert_eq!(
        head_resp.headers()[header::ETAG],
        independent_tag(b"representation").as_str()
    );
    assert_eq!(head_resp.headers()[header::CONTENT_LENGTH], "14");
    assert!(collect(head_resp.into_body()).await.is_empty());

    let tag = independent_tag(b"representation");
    let revalidate = Request::head("/")
        .header("if-none-match", &tag)
        .body(String::new())
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(revalidate).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );

    // With head_as_get(false) the HEAD reaches the service as HEAD and gets no (wrong) tag.
    let svc = ConditionalLayer::new().head_as_get(false).layer(service_fn(
        |req: Request<String>| async move {
            assert_eq!(req.method(), Method::HEAD);
            Ok::<_, Infallible>(Response::new(full(Bytes::new())))
        },
    ));
    let resp = svc
        .oneshot(Request::head("/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert!(!resp.headers().contains_key(header::ETAG));
}

#[tokio::test]
async fn non_2xx_and_exempt_methods_are_untouched() {
    let svc = ConditionalLayer::new().layer(service_fn(|req: Request<String>| async move {
        let status = if req.uri().path() == "/missing" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        Ok::<_, Infallible>(Response::builder().status(status).body(full("x")).unwrap())
    }));
    let resp = svc
        .clone()
        .oneshot(with(get("/missing"), "if-match", "\"zzz\""))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "a 404 stays a 404");
    assert!(!resp.headers().contains_key(header::ETAG));

    let options = Request::builder()
        .method(Method::OPTIONS)
        .uri("/")
        .header("if-match", "\"zzz\"")
        .body(String::new())
        .unwrap();
    let resp = svc.oneshot(options).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        !resp.headers().contains_key(header::ETAG),
        "OPTIONS is never conditioned or tagged"
    );
}

#[tokio::test]
async fn a_body_that_fails_while_held_is_never_sent_as_complete() {
    // The layer learns of the failure before it sends the head: a 500, not the bytes that
    // arrived framed as a whole representation (which a cache would store).
    let svc = ConditionalLayer::new().layer(service_fn(|_: Request<String>| async {
        let frames = vec![
            Ok(hyper::body::Frame::data(Bytes::from_static(b"half"))),
            Err::<hyper::body::Frame<Bytes>, tower_conditional::BoxError>("disk on fire".into()),
        ];
        Ok::<_, Infallible>(Response::new(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed(),
        ))
    }));
    for method in [Method::GET, Method::HEAD] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/")
            .body(String::new())
            .unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{method}");
        assert!(!resp.headers().contains_key(header::ETAG));
        let body = collect(resp.into_body()).await;
        if method == Method::GET {
            assert!(!body.windows(4).any(|w| w == b"half"), "no partial content");
        }
    }
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    // A concurrency limit of one: while one response is pending, the layer is not ready.
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let wait = Arc::new(tokio::sync::Mutex::new(Some(wait)));
    let inner = service_fn(move |_: Request<String>| {
        let wait = wait.clone();
        async move {
            if let Some(w) = wait.lock().await.take() {
                let _ = w.await;
            }
            Ok::<_, Infallible>(Response::new(full("ok")))
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(ConditionalLayer::new())
        .concurrency_limit(1)
        .service(inner);
    svc.ready().await.unwrap();
    let first = tokio::spawn(svc.call(get("/")));
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "not ready while the inner service is busy"
    );
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    svc.ready().await.unwrap();
    let resp = svc.call(get("/")).await.unwrap();
    assert_eq!(
        resp.headers()[header::ETAG],
        independent_tag(b"ok").as_str()
    );
}

#[tokio::test]
async fn over_a_real_hyper_server() {
    // hyper's `Incoming` is not `Default`, so no internal GET for writes: reads only here.
    let svc = ServiceBuilder::new()
        .layer(ConditionalLayer::new().no_lookup())
        .service(service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(full("over the wire"))
                    .unwrap(),
            )
        }));
    let addr = serve(svc).await;
    let resp = call(addr, "GET", "/", &[], "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let tag = tag(resp.headers());
    assert_eq!(tag, independent_tag(b"over the wire"));
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "13");
    assert_eq!(collect(resp.into_body()).await, "over the wire");

    let resp = call(addr, "GET", "/", &[("if-none-match", &tag)], "").await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(!resp.headers().contains_key(header::CONTENT_LENGTH));
    assert!(!resp.headers().contains_key(header::TRANSFER_ENCODING));

    let resp = call(addr, "HEAD", "/", &[], "").await;
    assert_eq!(resp.headers()[header::ETAG], tag.as_str());
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "13");
    assert!(collect(resp.into_body()).await.is_empty());
}

#[tokio::test]
async fn entity_tag_helpers_agree_with_the_layer() {
    let svc = ConditionalLayer::new().layer(page(b"same bytes"));
    let resp = svc.oneshot(get("/")).await.unwrap();
    let tag = EntityTag::try_from(&resp.headers()[header::ETAG]).unwrap();
    assert_eq!(tag, EntityTag::from_content(b"same bytes"));
    assert!(!tag.is_weak());
}

#[tokio::test]
async fn futures_can_be_spawned_even_when_the_inner_body_error_is_a_box_error() {
    // Regression: an `Into<BoxError>` bound on the service impl made futures over
    // `BoxBody<_, BoxError>` unspawnable ("implementation of `From` is not general enough").
    fn assert_send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
    let inner = service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(full("spawned")))
    });
    let svc = ConditionalLayer::new().internal_get().layer(inner);
    assert_send_sync_clone(&svc);
    for method in [Method::GET, Method::PUT] {
        let req = Request::builder()
            .method(method)
            .uri("/")
            .header("if-match", "*")
            .body(String::new())
            .unwrap();
        let svc = svc.clone();
        let status = tokio::spawn(async move { svc.oneshot(req).await.unwrap().status() })
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
}

#[cfg(feature = "blake3")]
#[tokio::test]
async fn blake3_is_opt_in_per_layer() {
    use tower_conditional::HashAlgorithm;
    let svc = ConditionalLayer::new()
        .hash_algorithm(HashAlgorithm::Blake3)
        .layer(page(b"fast"));
    let resp = svc.clone().oneshot(get("/")).await.unwrap();
    let tag = EntityTag::from_content_with(&HashAlgorithm::Blake3, b"fast");
    assert_eq!(resp.headers()[header::ETAG], tag.to_header_value());
    assert_ne!(tag, EntityTag::from_content(b"fast"));
    let again = svc
        .oneshot(with(get("/"), "if-none-match", &tag.to_string()))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}
