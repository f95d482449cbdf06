//! Faults and cancellation: lookups that fail or never get ready, bodies that break or
//! never end, clients that go away, futures dropped at every await point.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::full;
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_conditional::{
    lookup_fn, BoxError, ConditionalLayer, EntityTag, LookupRequest, Validators,
};

/// A body that counts how many of it are alive, yields `chunks` chunks, then either ends,
/// fails, or stays pending forever.
struct Tracked {
    live: Arc<AtomicUsize>,
    chunks: usize,
    then: Then,
}

#[derive(Clone, Copy)]
enum Then {
    End,
    Fail,
    Hang,
}

impl Tracked {
    fn new(live: &Arc<AtomicUsize>, chunks: usize, then: Then) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked {
            live: live.clone(),
            chunks,
            then,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.chunks > 0 {
            self.chunks -= 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[7u8; 1024])))));
        }
        match self.then {
            Then::End => Poll::Ready(None),
            Then::Fail => Poll::Ready(Some(Err(std::io::Error::other("inner body failed")))),
            Then::Hang => Poll::Pending,
        }
    }
}

fn put(uri: &str, if_match: &str) -> Request<String> {
    Request::put(uri)
        .header(header::IF_MATCH, if_match)
        .body("new".into())
        .unwrap()
}

/// A version lookup that never gets ready: its readiness stays pending, or fails.
#[derive(Clone)]
struct Unready {
    fails: bool,
}

impl Service<LookupRequest> for Unready {
    type Response = Option<Validators>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Option<Validators>, &'static str>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        if self.fails {
            Poll::Ready(Err("the pool is closed"))
        } else {
            Poll::Pending
        }
    }
    fn call(&mut self, _: LookupRequest) -> Self::Future {
        unreachable!("never ready, never called")
    }
}

/// A handler answering `body`, and how many times it ran.
fn counted(
    body: &'static str,
) -> (
    Arc<AtomicUsize>,
    impl Service<
            Request<String>,
            Response = Response<common::TestBody>,
            Error = Infallible,
            Future: Send,
        > + Clone,
) {
    let called = Arc::new(AtomicUsize::new(0));
    let seen = called.clone();
    let handler = service_fn(move |_req: Request<String>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(Response::new(full(body))) }
    });
    (called, handler)
}

#[tokio::test]
async fn a_lookup_that_never_gets_ready_is_shed_and_fails_closed() {
    // Timeouts do not cover readiness; load shedding turns "not ready" into an error.
    let (called, inner) = counted("written");
    let lookup = ServiceBuilder::new()
        .load_shed()
        .timeout(Duration::from_millis(100))
        .service(Unready { fails: false });
    let svc = ConditionalLayer::new().lookup(lookup).layer(inner);
    let resp = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(put("/x", "\"a\"")))
        .await
        .expect("answered, not hung")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

/// A lookup whose readiness fails (a closed `Buffer`, a broken pool): a conditional write
/// fails closed with 503 and is not performed; a revalidation is served by the handler.
#[tokio::test]
async fn a_lookup_whose_readiness_fails_fails_closed_for_writes_only() {
    let (called, inner) = counted("current");
    let svc = ConditionalLayer::new()
        .lookup(Unready { fails: true })
        .lookup_reads(true)
        .layer(inner);
    let resp = svc.clone().oneshot(put("/x", "\"a\"")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "the write is not performed"
    );

    let get = Request::get("/x")
        .header(header::IF_NONE_MATCH, "\"a\"")
        .body(String::new())
        .unwrap();
    let resp = svc.oneshot(get).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a read goes to the handler");
    assert_eq!(called.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_internal_get_failing_fails_closed() {
    let writes = Arc::new(AtomicUsize::new(0));
    let live = Arc::new(AtomicUsize::new(0));
    for (probe_status, then) in [
        (StatusCode::INTERNAL_SERVER_ERROR, Then::End),
        (StatusCode::OK, Then::Fail),
    ] {
        let (writes_in, live_in) = (writes.clone(), live.clone());
        let inner = service_fn(move |req: Request<String>| {
            let (writes, live) = (writes_in.clone(), live_in.clone());
            async move {
                if req.method() == http::Method::PUT {
                    writes.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, Infallible>(Response::new(http_body_util::Either::Left(full(
                        "",
                    ))));
                }
                // The GET: a server error, or a body that breaks after half its bytes.
                let mut resp =
                    Response::new(http_body_util::Either::Right(Tracked::new(&live, 4, then)));
                *resp.status_mut() = probe_status;
                Ok(resp)
            }
        });
        let resp = ConditionalLayer::new()
            .internal_get()
            .layer(inner)
            .oneshot(put("/x", "\"a\""))
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "internal GET answered {probe_status}"
        );
    }
    assert_eq!(writes.load(Ordering::SeqCst), 0, "no write");
    assert_eq!(live.load(Ordering::SeqCst), 0, "probe bodies dropped");
}

#[tokio::test]
async fn absent_per_the_lookup_while_the_handler_would_create() {
    let writes = Arc::new(AtomicUsize::new(0));
    let seen = writes.clone();
    let inner = service_fn(move |_req: Request<String>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::builder().status(201).body(full("")).unwrap()) }
    });
    let absent = lookup_fn(|_req: LookupRequest| async { Ok::<_, Infallible>(None) });
    let svc = ConditionalLayer::new().lookup(absent).layer(inner);
    for if_match in ["*", "\"v1\""] {
        let resp = svc.clone().oneshot(put("/new", if_match)).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::PRECONDITION_FAILED,
            "If-Match: {if_match} on nothing"
        );
    }
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    // Without a precondition (or with If-None-Match: *), the create goes through.
    let create = Request::put("/new")
        .header("if-none-match", "*")
        .body(String::new())
        .unwrap();
    assert_eq!(
        svc.oneshot(create).await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn dropping_the_response_while_buffering_drops_the_inner_body() {
    let live = Arc::new(AtomicUsize::new(0));
    let live_in = live.clone();
    let inner = service_fn(move |_req: Request<String>| {
        let live = live_in.clone();
        async move { Ok::<_, Infallible>(Response::new(Tracked::new(&live, 3, Then::Hang))) }
    });
    let svc = ConditionalLayer::new().internal_get().layer(inner);
    let pending = svc.oneshot(Request::get("/").body(String::new()).unwrap());
    // The layer holds 3 KiB and waits for more: the client gives up.
    assert!(tokio::time::timeout(Duration::from_millis(50), pending)
        .await
        .is_err());
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "the inner body was dropped with the future"
    );
}

#[tokio::test]
async fn a_client_disconnecting_mid_buffer_over_hyper_leaks_nothing() {
    let live = Arc::new(AtomicUsize::new(0));
    let live_in = live.clone();
    let svc = ConditionalLayer::new().no_lookup().layer(service_fn(
        move |_req: Request<hyper::body::Incoming>| {
            let live = live_in.clone();
            async move { Ok::<_, Infallible>(Response::new(Tracked::new(&live, 3, Then::Hang))) }
        },
    ));
    let addr = common::serve(svc).await;
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..100 {
            if live.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            live.load(Ordering::SeqCst),
            1,
            "the layer is holding the body"
        );
    } // the client hangs up
    for _ in 0..200 {
        if live.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "hyper dropped the request future, and with it the body"
    );
}

/// Cancellation at every await point of a write: lock, lookup, internal GET head and body,
/// readiness, inner call, after-write lookup. Each time the service stays usable and the
/// lock is released.
#[tokio::test]
async fn dropping_the_future_at_every_await_point_leaves_the_service_usable() {
    // A gate that every stage can be made to wait on.
    #[derive(Clone, Default)]
    struct Gates {
        lookup: Arc<Mutex<bool>>,
        probe: Arc<Mutex<bool>>,
        probe_body: Arc<Mutex<bool>>,
        inner: Arc<Mutex<bool>>,
        after: Arc<Mutex<bool>>,
    }
    async fn gate(flag: &Arc<Mutex<bool>>) {
        while *flag.lock().unwrap() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let gates = Gates::default();
    let value = Arc::new(Mutex::new(String::from("v1")));
    let lookups = Arc::new(AtomicUsize::new(0));

    let (g, v, n) = (gates.clone(), value.clone(), lookups.clone());
    let lookup = lookup_fn(move |_req: LookupRequest| {
        let (g, v, n) = (g.clone(), v.clone(), n.clone());
        async move {
            let first = n.fetch_add(1, Ordering::SeqCst) % 2 == 0;
            gate(if first { &g.lookup } else { &g.after }).await;
            let tag = EntityTag::from_content(v.lock().unwrap().as_bytes());
            Ok::<_, Infallible>(Some(Validators::new().with_etag(tag)))
        }
    });
    let (g, v) = (gates.clone(), value.clone());
    let inner = service_fn(move |req: Request<String>| {
        let (g, v) = (g.clone(), v.clone());
        async move {
            if req.method() == http::Method::GET {
                gate(&g.probe).await;
                let body = v.lock().unwrap().clone();
                let g2 = g.clone();
                let stream = futures_util::stream::once(async move {
                    gate(&g2.probe_body).await;
                    Ok::<_, BoxError>(Frame::data(Bytes::from(body)))
                });
                return Ok::<_, Infallible>(Response::new(http_body_util::BodyExt::boxed(
                    http_body_util::StreamBody::new(stream),
                )));
            }
            gate(&g.inner).await;
            *v.lock().unwrap() = req.into_body();
            Ok(Response::new(full("")))
        }
    });
    let with_lookup = ConditionalLayer::new()
        .lookup(lookup)
        .serialize_writes(true)
        .layer(inner.clone());
    let with_probe = ConditionalLayer::new()
        .internal_get()
        .serialize_writes(true)
        .layer(inner);

    let current = || EntityTag::from_content(value.lock().unwrap().as_bytes()).to_string();
    let stages: [(&str, &Arc<Mutex<bool>>, bool); 5] = [
        ("lookup", &gates.lookup, true),
        ("inner call", &gates.inner, true),
        ("after-write lookup", &gates.after, true),
        ("internal GET head", &gates.probe, false),
        ("internal GET body", &gates.probe_body, false),
    ];
    for (stage, flag, use_lookup) in stages {
        lookups.store(0, Ordering::SeqCst);
        *flag.lock().unwrap() = true;
        let before = value.lock().unwrap().clone();
        let svc = if use_lookup {
            with_lookup.clone().boxed_clone()
        } else {
            with_probe.clone().boxed_clone()
        };
        let attempt = svc.clone().oneshot(put("/x", &current()));
        assert!(
            tokio::time::timeout(Duration::from_millis(30), attempt)
                .await
                .is_err(),
            "{stage}: parked"
        );
        *flag.lock().unwrap() = false;
        // The next write to the same target gets the lock and goes through.
        lookups.store(0, Ordering::SeqCst);
        let tag = if stage == "inner call" || stage == "after-write lookup" {
            current()
        } else {
            EntityTag::from_content(before.as_bytes()).to_string()
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            svc.oneshot(put("/x", &tag).map(|_| format!("after {stage}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("{stage}: the lock was released"))
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{stage}: usable afterwards");
        assert_eq!(*value.lock().unwrap(), format!("after {stage}"));
    }
}
