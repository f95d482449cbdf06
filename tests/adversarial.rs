//! Adversarial review: each test asserts the correct behaviour (RFC 9110 / DESIGN.md) for a
//! composition real users build or a request a hostile client sends.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_conditional::{
    lookup_fn, CodingTagsLayer, ConditionalLayer, EntityTag, LookupRequest, Outcome, Validators,
};
use tower_http::compression::CompressionLayer;

const WAIT: Duration = Duration::from_secs(5);

fn report_text() -> Bytes {
    let mut s = String::new();
    for i in 0..100 {
        s.push_str(&format!(
            "line {i:3}: the quick brown fox jumps over the lazy dog\n"
        ));
    }
    Bytes::from(s)
}

/// The 206 of the part of `body` that `range` (`bytes=N-` or `bytes=A-B`) names.
fn partial(body: &Bytes, range: &HeaderValue) -> Response<TestBody> {
    let set = range.to_str().unwrap().strip_prefix("bytes=").unwrap();
    let (a, b) = set.split_once('-').unwrap();
    let len = body.len();
    let a: usize = a.parse().unwrap();
    let b: usize = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().unwrap().min(len - 1)
    };
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"))
        .body(full(body.slice(a..=b)))
        .unwrap()
}

/// A careful GET handler: honours `Range`, and `If-Range` by strong comparison against the
/// tag of the bytes it serves (the one the layer computes for them).
fn ranged_handler(body: Bytes) -> Handler<hyper::body::Incoming> {
    Handler::new(service_fn(move |req: Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move {
            let tag = EntityTag::from_content(&body);
            let if_range_ok = match req.headers().get(header::IF_RANGE) {
                None => true,
                Some(v) => EntityTag::try_from(v).is_ok_and(|t| t.strong_eq(&tag)),
            };
            let mut resp = match req.headers().get(header::RANGE) {
                Some(r) if if_range_ok => partial(&body, r),
                _ => Response::new(full(body)),
            };
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok::<_, Infallible>(resp)
        }
    }))
}

/// The compression recipe (README "Compression") around `inner`.
fn recipe<S>(
    inner: S,
) -> tower_conditional::CodingTags<
    tower_http::compression::Compression<tower_conditional::Conditional<S>>,
> {
    ServiceBuilder::new()
        .layer(CodingTagsLayer::new())
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new())
        .service(inner)
}

/// Answers every request with the report, as text/plain.
fn report<B: Send + 'static>() -> Handler<B> {
    Handler::new(service_fn(|_req: Request<B>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(full(report_text()))
                .unwrap(),
        )
    }))
}

/// `fut`, which must finish within [`WAIT`].
async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}"))
}

/// The compression recipe (`examples/service_builder`, README "Compression"): a gzip client
/// that resumes an interrupted download with `If-Range` set to the tag of the gzip
/// representation must not get a 206 of the *identity* bytes — its prefix is gzip, so the
/// spliced file is garbage. RFC 9110 §13.1.5 (If-Range validates the selected
/// representation, strong comparison), §8.8.3 ("one coding's tag never validates the
/// other"), DESIGN §3 "A 206 never combines a validator with bytes of another version".
/// `If-None-Match` (and `If-Modified-Since`) come before `Range` (RFC 9110 §13.2.2): in the
/// recipe, a current tag of either coding with a `Range` is a 304, not the service's 206
/// (on which no coding's tag can be checked).
#[tokio::test]
async fn coding_tags_if_none_match_with_range_is_304_not_206() {
    let addr = serve(recipe(ranged_handler(report_text()))).await;
    for coding in ["identity", "gzip"] {
        let whole = within(call(addr, "GET", "/r", &[("accept-encoding", coding)], "")).await;
        let current = tag(whole.headers());
        for (inm, expected) in [
            (current.as_str(), StatusCode::NOT_MODIFIED),
            ("\"old\"", StatusCode::OK),
        ] {
            let headers = [
                ("accept-encoding", coding),
                ("if-none-match", inm),
                ("range", "bytes=0-9"),
            ];
            let resp = within(call(addr, "GET", "/r", &headers, "")).await;
            assert_eq!(resp.status(), expected, "{coding}, If-None-Match {inm}");
        }
    }
}

#[tokio::test]
async fn coding_tags_if_range_of_the_gzip_tag_never_yields_identity_bytes() {
    let body = report_text();
    let addr = serve(recipe(ranged_handler(body.clone()))).await;

    let first = within(call(
        addr,
        "GET",
        "/report",
        &[("accept-encoding", "gzip")],
        "",
    ))
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[header::CONTENT_ENCODING], "gzip");
    let gzip_tag = tag(first.headers());
    assert!(gzip_tag.ends_with(";gzip\""), "{gzip_tag}");
    let gzip_bytes = collect(first.into_body()).await;
    assert_ne!(&gzip_bytes[..], &body[..]);

    // The download broke after 100 bytes of the *gzip* stream; resume it.
    let resumed = within(call(
        addr,
        "GET",
        "/report",
        &[
            ("accept-encoding", "gzip"),
            ("range", "bytes=100-"),
            ("if-range", &gzip_tag),
        ],
        "",
    ))
    .await;
    let status = resumed.status();
    let encoding = resumed.headers().get(header::CONTENT_ENCODING).cloned();
    let part = collect(resumed.into_body()).await;
    let spliced = [&gzip_bytes[..100], &part[..]].concat();
    assert!(
        status != StatusCode::PARTIAL_CONTENT,
        "If-Range named the gzip representation, the 206 carries identity bytes \
         (content-encoding {encoding:?}): a resuming client splices gzip[..100] with \
         identity[100..] ({} bytes, valid gzip: {})",
        spliced.len(),
        spliced == gzip_bytes
    );
}

/// The same recipe, with a lookup that knows `Last-Modified` (the seed's column), and a
/// small representation that compression leaves alone (< 32 bytes). The 200 goes out in
/// identity with the identity tag; a revalidation by date is answered 304 by the conditional
/// layer, and the compression layer outside then stamps `Content-Encoding: gzip` on that
/// 304 (its body size is unknown), and the coding adapter turns its tag into `"T;gzip"`.
/// A cache that updates the stored header fields from the 304 (RFC 9111 §4.3.4) now
/// believes its identity bytes are gzip. RFC 9110 §15.4.5, DESIGN §3 "304 … no
/// Content-Encoding", issue 9 item 6 "mind 304s, which carry no Content-Encoding".
#[tokio::test]
async fn a_304_in_the_compression_recipe_never_carries_content_encoding() {
    let modified = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let lm = httpdate::fmt_http_date(modified);
    let small = Bytes::from_static(b"ok");
    let tag = EntityTag::from_content(&small);
    let lookup = lookup_fn(move |_: LookupRequest| {
        let tag = tag.clone();
        async move {
            Ok::<_, Infallible>(Some(
                Validators::new()
                    .with_etag(tag)
                    .with_last_modified(modified),
            ))
        }
    });
    let lm2 = lm.clone();
    let handler = service_fn(move |_req: Request<hyper::body::Incoming>| {
        let lm = lm2.clone();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain")
                    .header(header::LAST_MODIFIED, lm)
                    .body(full("ok"))
                    .unwrap(),
            )
        }
    });
    let mut failures = Vec::new();
    for lookup_reads in [false, true] {
        let stack = ServiceBuilder::new()
            .layer(CodingTagsLayer::new())
            .layer(CompressionLayer::new())
            .layer(
                ConditionalLayer::new()
                    .lookup(lookup.clone())
                    .lookup_reads(lookup_reads),
            )
            .service(handler.clone());
        let addr = serve(stack).await;
        let first = within(call(
            addr,
            "GET",
            "/small",
            &[("accept-encoding", "gzip")],
            "",
        ))
        .await;
        assert_eq!(first.status(), StatusCode::OK);
        assert!(
            !first.headers().contains_key(header::CONTENT_ENCODING),
            "2 bytes are not compressed"
        );
        let tag_200 = first.headers()[header::ETAG].clone();

        let again = within(call(
            addr,
            "GET",
            "/small",
            &[("accept-encoding", "gzip"), ("if-modified-since", &lm)],
            "",
        ))
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let bad = again.headers().contains_key(header::CONTENT_ENCODING)
            || again.headers()[header::ETAG] != tag_200;
        if bad {
            failures.push(format!(
                "lookup_reads {lookup_reads}: 200 had ETag {tag_200:?} and no \
                 Content-Encoding; the 304 has {:?}",
                again.headers()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Visible outcomes (issue 12 item 5, README "Outcomes": "every response … carries an
/// Outcome … so a 304 ratio can be counted"): in the compression recipe, every 304 for
/// `If-None-Match` is made by `CodingTags`, and it carries the inner response's
/// `Outcome::Tagged`. A user counting `Outcome::NotModified` counts none.
#[tokio::test]
async fn coding_tags_304_reports_not_modified_in_its_outcome() {
    let stack = ServiceBuilder::new()
        .layer(CodingTagsLayer::new())
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new().outcome_extension(true))
        .service(report::<String>());
    for coding in ["gzip", "identity"] {
        let first = stack
            .clone()
            .oneshot(
                Request::get("/r")
                    .header("accept-encoding", coding)
                    .body(String::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        let tag = first.headers()[header::ETAG].clone();
        let again = stack
            .clone()
            .oneshot(
                Request::get("/r")
                    .header("accept-encoding", coding)
                    .header("if-none-match", tag)
                    .body(String::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            again.extensions().get::<Outcome>(),
            Some(&Outcome::NotModified),
            "{coding}: a 304 must say NotModified"
        );
    }
}

/// The internal GET hashes the current representation, but unlike the read path (which
/// sends a paused body on untagged after `max_buffer_time`) it waits for the whole body with
/// no bound. A GET whose producer pauses (long-poll, a slow report) makes every conditional
/// write to that target hang forever — the handler is never called, nothing is answered.
/// DESIGN §4 "Streams are never held for long … after a bounded wait", §3 "Lookup failure
/// or timeout fails closed for writes: 503"; the read of the same target answers at once.
#[tokio::test]
async fn the_internal_get_of_a_paused_body_does_not_hang_the_write() {
    let puts = Arc::new(AtomicUsize::new(0));
    let p = puts.clone();
    let svc = service_fn(move |req: Request<String>| {
        let p = p.clone();
        async move {
            if req.method() == Method::PUT {
                p.fetch_add(1, Ordering::SeqCst);
                return Ok::<_, Infallible>(Response::new(full("stored")));
            }
            // One chunk now, the rest never (a long-poll, a stuck producer).
            let first = futures_util::stream::iter([Ok::<_, BoxErr>(Frame::data(
                Bytes::from_static(b"{\"rows\":["),
            ))]);
            let rest = futures_util::stream::pending();
            let body = http_body_util::StreamBody::new(futures_util::StreamExt::chain(first, rest))
                .boxed();
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap())
        }
    });
    let svc = ConditionalLayer::new().internal_get().layer(svc);

    // The read path is bounded: the client gets the head promptly.
    let read = tokio::time::timeout(WAIT, svc.clone().oneshot(Request::new(String::new())))
        .await
        .expect("a GET is answered within max_buffer_time")
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert!(!read.headers().contains_key(header::ETAG));

    let put = Request::put("/")
        .header("if-match", "\"whatever\"")
        .body("new".to_owned())
        .unwrap();
    let answered = tokio::time::timeout(WAIT, svc.clone().oneshot(put)).await;
    let answered = answered.expect(
        "a conditional PUT must be answered (412: the representation has no tag, or 503) \
         instead of waiting forever on the internal GET's body",
    );
    let status = answered.unwrap().status();
    assert!(!status.is_success(), "{status}");
    assert_eq!(puts.load(Ordering::SeqCst), 0);
}

type BoxErr = tower_conditional::BoxError;

/// RFC 9110 §5.6.7: `time-of-day = hour ":" minute ":" second ; 00:00:00 - 23:59:60 (leap
/// second)`. `Sat, 31 Dec 2016 23:59:60 GMT` (a real leap second) is a valid HTTP-date;
/// §13.1.4 lets a server ignore If-Unmodified-Since only when it is not one. The resource
/// was modified in 2020, so the condition is false: 412, nothing written. Today the date is
/// taken as invalid, ignored, and the write goes through (the same class as issue 14 #16).
#[tokio::test]
async fn a_leap_second_if_unmodified_since_is_a_valid_date() {
    let store = Store::new(&[("/doc", "v1")]);
    store.date("/doc", UNIX_EPOCH + Duration::from_secs(1_600_000_000)); // 2020-09-13
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    for date in [
        "Sat, 31 Dec 2016 23:59:60 GMT",
        "Saturday, 31-Dec-16 23:59:60 GMT",
        "Sat Dec 31 23:59:60 2016",
    ] {
        let put = Request::put("/doc")
            .header("if-unmodified-since", date)
            .body("lost update".to_owned())
            .unwrap();
        let resp = svc.clone().oneshot(put).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::PRECONDITION_FAILED,
            "{date}: modified after the date"
        );
    }
    assert_eq!(store.writes(), 0, "nothing written");
}

/// RFC 9110 §13.2.1: "A server MUST ignore all received preconditions if its response to
/// the same request without those conditions … would have been a status code other than a
/// 2xx or 412" — redirects and failures detected before processing take precedence. With
/// the README's first placement (`Router::layer`, with a lookup) a PUT to a route that has
/// no PUT (405) with a stale `If-Match` is answered 412 — a client refetches and retries a
/// write the route never accepts; without a lookup it is 501 "configure a lookup" for a
/// method the route does not have. DESIGN §3: "Preconditions apply only where the response
/// without them would be 2xx or 412: a 404 stays a 404".
#[tokio::test]
async fn route_layer_keeps_405_for_a_method_the_route_does_not_have() {
    // `Router::layer` and `Router::route_layer` also wrap axum's 405 fallback, so there the
    // layer answers a conditional request to a missing method before axum can say 405
    // (documented in the crate docs). `MethodRouter::route_layer` wraps the method handlers
    // only.
    use axum::routing::get;
    let lookup = lookup_fn(|_: LookupRequest| async {
        Ok::<_, Infallible>(Some(
            Validators::new().with_etag(EntityTag::strong("current").unwrap()),
        ))
    });
    let with_lookup = axum::Router::new().route(
        "/items/{id}",
        get(|| async { "item" }).route_layer(ConditionalLayer::new().lookup(lookup)),
    );
    let without = axum::Router::new().route(
        "/items/{id}",
        get(|| async { "item" }).route_layer(ConditionalLayer::new()),
    );
    let put = || {
        Request::put("/items/1")
            .header("if-match", "\"stale\"")
            .body(Body::from("x"))
            .unwrap()
    };
    // Without the precondition: 405.
    let plain = with_lookup
        .clone()
        .oneshot(Request::put("/items/1").body(Body::from("x")).unwrap())
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::METHOD_NOT_ALLOWED);
    let with = with_lookup.clone().oneshot(put()).await.unwrap().status();
    let without = without.clone().oneshot(put()).await.unwrap().status();
    assert_eq!(
        (with, without),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::METHOD_NOT_ALLOWED
        ),
        "(with a lookup, without): a stale If-Match must not turn a 405 into a 412 or a 501"
    );
}

/// A handler that serves ranges like `tower_http::services::ServeDir`: its 206 carries
/// `Last-Modified` (no `ETag`), its 200 is hashed by the layer.
fn last_modified_ranges(body: Bytes, modified: SystemTime) -> Handler<String> {
    Handler::new(service_fn(move |req: Request<String>| {
        let body = body.clone();
        async move {
            let lm = httpdate::fmt_http_date(modified);
            let mut resp = match req.headers().get(header::RANGE) {
                Some(r) => partial(&body, r),
                None => Response::new(full(body)),
            };
            resp.headers_mut()
                .insert(header::LAST_MODIFIED, lm.parse().unwrap());
            Ok::<_, Infallible>(resp)
        }
    }))
}

/// Issue 14 #12 ("GET with Range and a current If-Match got 412"; RFC 9110 §13.1.1/§13.1.5
/// name Range + If-Match as the way to fetch parts of an unchanged representation), for a
/// handler whose 206 carries `Last-Modified` — as tower-http's ServeDir does. The lookup
/// passes the condition, but the layer evaluates `If-Match` again on the 206, which has a
/// date and no tag, and answers 412 to the client that holds the current tag.
#[tokio::test]
async fn range_with_a_current_if_match_is_206_when_the_part_carries_last_modified() {
    let body = report_text();
    let modified = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let tag = EntityTag::from_content(&body);
    let t = tag.clone();
    let lookup = lookup_fn(move |_: LookupRequest| {
        let t = t.clone();
        async move {
            Ok::<_, Infallible>(Some(
                Validators::new().with_etag(t).with_last_modified(modified),
            ))
        }
    });
    let svc = ConditionalLayer::new()
        .lookup(lookup)
        .layer(last_modified_ranges(body.clone(), modified));
    let whole = svc
        .clone()
        .oneshot(Request::get("/f").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(whole.headers()[header::ETAG], tag.to_header_value());
    let part = svc
        .clone()
        .oneshot(
            Request::get("/f")
                .header("range", "bytes=0-9")
                .header("if-match", tag.to_header_value())
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        part.status(),
        StatusCode::PARTIAL_CONTENT,
        "the client holds the current tag and the lookup confirmed it"
    );
}

/// Issue 14 #11 ("A full 200 is always a correct answer to a read: reads fall back to the
/// handler") combined with #12. With the lookup down, a GET with `Range` and the current
/// `If-Match` goes to the handler *with* its Range; the 206 has no tag, so the layer's own
/// check of If-Match fails: 412 for a client that holds the current tag. Without any lookup
/// the layer drops Range and checks the full 200 (and answers 200); a failing lookup must
/// not make a correct read fail.
#[tokio::test]
async fn range_with_a_current_if_match_is_not_412_when_the_lookup_fails() {
    let body = report_text();
    let tag = EntityTag::from_content(&body);
    let lookup =
        lookup_fn(|_: LookupRequest| async { Err::<Option<Validators>, _>("the store is down") });
    // A handler whose 206 carries nothing to validate (most hand-written range code).
    let handler = {
        let body = body.clone();
        service_fn(move |req: Request<String>| {
            let body = body.clone();
            async move {
                let resp = match req.headers().get(header::RANGE) {
                    Some(r) => partial(&body, r),
                    None => Response::new(full(body)),
                };
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let failing = ConditionalLayer::new()
        .lookup(lookup)
        .layer(handler.clone());
    let none = ConditionalLayer::new().layer(handler);
    let req = || {
        Request::get("/f")
            .header("range", "bytes=0-9")
            .header("if-match", tag.to_header_value())
            .body(String::new())
            .unwrap()
    };
    let without_lookup = none.oneshot(req()).await.unwrap().status();
    assert!(without_lookup.is_success(), "{without_lookup}");
    let with_failing_lookup = failing.oneshot(req()).await.unwrap().status();
    assert!(
        with_failing_lookup.is_success(),
        "a failing lookup answered {with_failing_lookup} to a read with the current tag \
         (without a lookup: {without_lookup})"
    );
}

/// The demo server (`examples/server`, what users copy): its lookup keys rows by the last
/// path segment as sent, while axum's `Path` extractor — which the handlers use — decodes
/// it. `/scim/v2/Users/%34…` is the same user for GET (200, with its ETag) but for the
/// lookup it does not exist: a PATCH with that very ETag is answered 404 by the layer.
/// RFC 3986 §6.2.2.2 (percent-encoded unreserved characters are equivalent); the lock key
/// was normalized for issue 14 #5, the lookup key was not.
#[tokio::test]
async fn scim_demo_lookup_and_handlers_agree_on_which_user_a_path_names() {
    let dir = std::env::temp_dir().join(format!("adv-scim-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let server = spawn_example(
        "server",
        &[
            "--addr",
            "127.0.0.1:0",
            "--token",
            "T0K",
            "--database-url",
            dir.to_str().unwrap(),
        ],
    );
    let a = server.addr;
    let auth = ("authorization", "Bearer T0K");
    let ct = ("content-type", "application/scim+json");
    let created = within(call(
        a,
        "POST",
        "/scim/v2/Users",
        &[auth, ct],
        r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"adv"}"#,
    ))
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let doc: serde_json::Value =
        serde_json::from_slice(&collect(created.into_body()).await).unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();
    let first = id.as_bytes()[0];
    let encoded = format!("/scim/v2/Users/%{:02X}{}", first, &id[1..]);

    let got = within(call(a, "GET", &encoded, &[auth], "")).await;
    assert_eq!(got.status(), StatusCode::OK, "the handler finds the user");
    let tag = tag(got.headers());

    let patch = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}"#;
    let patched = within(call(
        a,
        "PATCH",
        &encoded,
        &[auth, ct, ("if-match", &tag)],
        patch,
    ))
    .await;
    let status = patched.status();
    drop(server);
    for suffix in ["", "-shm", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", dir.display()));
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "GET on {encoded} gave ETag {tag}; PATCH with it on the same URL"
    );
}

/// RFC 9110 §5.6.7: "Recipients of a timestamp value in rfc850-date format, which uses a
/// two-digit year, MUST interpret a timestamp that appears to be more than 50 years in the
/// future as representing the most recent year in the past that had the same last two
/// digits." The layer compares *years*: 31 December of (this year + 50) is more than 50
/// years ahead (unless today is 31 December) and must be read 100 years earlier; it is read
/// as the future date, so a false `If-Unmodified-Since` lets a write through (README:
/// "RFC 850 two-digit years follow the 50-year rule").
#[tokio::test]
async fn rfc850_dates_more_than_fifty_years_ahead_are_in_the_past() {
    let now = SystemTime::now();
    let today = httpdate::fmt_http_date(now); // "Sun, 29 Nov 2026 19:31:40 GMT"
    let year: i64 = today[12..16].parse().unwrap();
    if today[5..11] == *"31 Dec" {
        return; // 31 December of year+50 is then not *more* than 50 years ahead.
    }
    let yy = (year + 50) % 100;
    let date = format!("Friday, 31-Dec-{yy:02} 23:59:59 GMT");
    let store = Store::new(&[("/doc", "v1")]);
    store.date("/doc", UNIX_EPOCH + Duration::from_secs(1_600_000_000)); // 2020
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .layer(store.handler());
    let put = |date: &str| {
        Request::put("/doc")
            .header("if-unmodified-since", date)
            .body("lost update".to_owned())
            .unwrap()
    };
    // Control: a year past the boundary is read as last century, and refused.
    let control = format!("Friday, 01-Jan-{:02} 00:00:00 GMT", (year + 51) % 100);
    let status = svc.clone().oneshot(put(&control)).await.unwrap().status();
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{control}");
    let status = svc.oneshot(put(&date)).await.unwrap().status();
    assert_eq!(
        (status, store.writes()),
        (StatusCode::PRECONDITION_FAILED, 0),
        "{date} is 31 Dec {}, before the 2020 modification (today {today})",
        year - 50
    );
}

/// The default `head_as_get` sends every HEAD to the wrapped service as a GET. Around a whole
/// axum router (a documented placement) a route that answers HEAD itself and has no GET —
/// a health check, an object store's `HEAD` — answered 200 before the layer was added and
/// 405 after. DESIGN §1 "stays out of the way"; RFC 9110 §9.3.2 HEAD is its own method.
#[tokio::test]
async fn a_head_only_route_works_once_head_as_get_is_off() {
    // With `head_as_get` (the default) a HEAD is sent on as a GET, which a HEAD-only route
    // answers 405; the layer cannot resend the request as HEAD (it cannot rebuild an
    // arbitrary body), so such routes turn it off (documented on `head_as_get`).
    use axum::routing::head;
    let app = axum::Router::new().route(
        "/health",
        head(|| async { ([(header::CACHE_CONTROL, "no-cache")], "") }),
    );
    let bare = app
        .clone()
        .oneshot(Request::head("/health").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status();
    assert_eq!(bare, StatusCode::OK);
    let layered = ConditionalLayer::new()
        .head_as_get(false)
        .layer(app)
        .oneshot(Request::head("/health").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status();
    assert_eq!(
        layered, bare,
        "the layer turned the route's HEAD into a 405"
    );
}

/// `serialize_writes` keys its lock by the normalized path so that names the application
/// treats as one target share one lock (issue 14 #5, README "Lost updates"). hyper and
/// `http` accept a raw UTF-8 path, and axum's `Path` (like any percent-decoding router)
/// gives `/items/é` and `/items/%C3%A9` the same id — but the lock key of the first is its
/// raw bytes, of the second the escapes. Two writers holding the same `If-Match`, one per
/// spelling, both pass and both write: a lost update with serialization on. (Control: the
/// `%61` spelling of `a` is serialized.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialized_writes_treat_raw_and_percent_encoded_utf8_as_one_target() {
    use std::sync::Mutex;
    let stored = Arc::new(Mutex::new(String::from("v0")));
    let writes = Arc::new(AtomicUsize::new(0));
    let s = stored.clone();
    let lookup = lookup_fn(move |_: LookupRequest| {
        // One target, whatever the spelling (as the handler sees it).
        let tag = EntityTag::from_content(s.lock().unwrap().as_bytes());
        async move { Ok::<_, Infallible>(Some(Validators::new().with_etag(tag))) }
    });
    let (s, w) = (stored.clone(), writes.clone());
    let handler = service_fn(move |req: Request<String>| {
        let (s, w) = (s.clone(), w.clone());
        async move {
            // Trusts the layer's serialization (no CAS), like examples/hyper_service.
            tokio::time::sleep(Duration::from_millis(50)).await;
            *s.lock().unwrap() = req.into_body();
            w.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(full("")))
        }
    });
    let svc = ConditionalLayer::new()
        .lookup(lookup)
        .serialize_writes(true)
        .layer(handler);
    let mut results = Vec::new();
    for (a, b) in [("/items/a", "/items/%61"), ("/items/é", "/items/%C3%A9")] {
        *stored.lock().unwrap() = format!("round {a}");
        let tag = EntityTag::from_content(stored.lock().unwrap().as_bytes()).to_string();
        let before = writes.load(Ordering::SeqCst);
        let put = |path: &str| {
            let req = Request::put(path)
                .header("if-match", &tag)
                .body(format!("from {path}"))
                .unwrap();
            tokio::spawn(svc.clone().oneshot(req))
        };
        let (x, y) = (put(a), put(b));
        let (x, y) = tokio::time::timeout(WAIT, async { (x.await, y.await) })
            .await
            .unwrap();
        let statuses = [
            x.unwrap().unwrap().status().as_u16(),
            y.unwrap().unwrap().status().as_u16(),
        ];
        results.push((a, b, statuses, writes.load(Ordering::SeqCst) - before));
    }
    assert!(
        results.iter().all(|(_, _, _, n)| *n == 1),
        "(spelling, spelling, statuses, writes) per round: {results:?}"
    );
}

/// `max_buffer_time` "needs the `tokio` feature and a Tokio runtime with its timer; without
/// either, bodies are held until they end" (src/buffer.rs, `Deadline`). A hyper server runs
/// fine on a runtime built with `enable_io()` only; there the first response body that makes
/// the layer wait panics ("timers are disabled") instead of being held.
#[tokio::test]
async fn a_runtime_without_timers_holds_the_body_instead_of_panicking() {
    let outcome = tokio::task::spawn_blocking(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build() // no enable_time: IO-only servers look like this
                .unwrap();
            rt.block_on(async {
                let svc = ConditionalLayer::new().layer(service_fn(|_req: Request<String>| {
                    let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(50));
                        let _ = tx.send(Bytes::from_static(b"late"));
                    });
                    let stream = futures_util::stream::once(async move {
                        Ok::<_, BoxErr>(Frame::data(rx.await.unwrap()))
                    });
                    async move {
                        Ok::<_, Infallible>(Response::new(
                            http_body_util::StreamBody::new(stream).boxed(),
                        ))
                    }
                }));
                let resp = svc.oneshot(Request::new(String::new())).await.unwrap();
                let tagged = resp.headers().contains_key(header::ETAG);
                let body = collect(resp.into_body()).await;
                (tagged, body)
            })
        })
        .join()
    });
    let joined = tokio::time::timeout(WAIT, outcome).await.unwrap().unwrap();
    let (tagged, body) = joined.expect("the layer panicked on a runtime without timers");
    assert_eq!(&body[..], b"late");
    assert!(tagged, "held until the end, then tagged");
}

/// Guard (holds today, untested elsewhere): in the compression recipe a HEAD carries the
/// same per-coding tag as the GET of the same coding, over HTTP/1.1, and revalidates to 304
/// with that tag — so caches that learn a tag from HEAD revalidate the GET they later make.
#[tokio::test]
async fn guard_head_in_the_compression_recipe_carries_the_gets_tag_per_coding() {
    let stack = recipe(report());
    let addr = serve(stack).await;
    for coding in ["gzip", "identity"] {
        let get = within(call(addr, "GET", "/r", &[("accept-encoding", coding)], "")).await;
        let head = within(call(addr, "HEAD", "/r", &[("accept-encoding", coding)], "")).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            get.headers()[header::ETAG],
            head.headers()[header::ETAG],
            "{coding}"
        );
        assert_eq!(
            get.headers().get(header::CONTENT_ENCODING),
            head.headers().get(header::CONTENT_ENCODING),
            "{coding}"
        );
        assert!(collect(head.into_body()).await.is_empty());
        let tag = tag(get.headers());
        let again = within(call(
            addr,
            "HEAD",
            "/r",
            &[("accept-encoding", coding), ("if-none-match", &tag)],
            "",
        ))
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{coding}");
        assert!(!again.headers().contains_key(header::CONTENT_ENCODING));
    }
}

/// Over HTTP/2 hyper sends whatever body a HEAD response has, and DATA on a HEAD response is
/// a protocol error (RFC 9113 §8.1.1); and a HEAD's header fields are the GET's (RFC 9110
/// §9.3.2), its `Content-Length` the GET's or none (§8.6). In the compression recipe the
/// HEAD is labelled as the GET of the same coding (tag, `Content-Encoding`, `Vary`), whatever
/// framing the encoder writes for its empty body is dropped by `CodingTagsLayer`, and its tag
/// revalidates the HEAD to 304.
#[tokio::test]
async fn a_head_over_http2_in_the_compression_recipe_is_the_gets_head_without_data() {
    let stack = recipe(report());
    let addr = serve(stack).await;
    let mut h2 = common::h2_client(addr).await;
    for coding in ["gzip", "identity"] {
        let request = |method: http::Method, tag: Option<&str>| {
            let mut req = Request::builder()
                .method(method)
                .uri(format!("http://{addr}/r"))
                .header(header::ACCEPT_ENCODING, coding);
            if let Some(tag) = tag {
                req = req.header(header::IF_NONE_MATCH, tag);
            }
            req.body(http_body_util::Full::new(Bytes::new())).unwrap()
        };
        let get = within(h2.send_request(request(http::Method::GET, None)))
            .await
            .unwrap();
        let head = within(h2.send_request(request(http::Method::HEAD, None)))
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{coding}");
        for name in [header::ETAG, header::CONTENT_ENCODING, header::VARY] {
            assert_eq!(
                head.headers().get(&name),
                get.headers().get(&name),
                "{coding}: {name}"
            );
        }
        let get_tag = tag(get.headers());
        let get_body = within(get.into_body().collect()).await.unwrap().to_bytes();
        if let Some(length) = head.headers().get(header::CONTENT_LENGTH) {
            assert_eq!(length, &get_body.len().to_string(), "{coding}");
        }
        let body = within(head.into_body().collect())
            .await
            .map(|b| b.to_bytes());
        assert!(
            body.as_ref().is_ok_and(|b| b.is_empty()),
            "{coding}: no DATA on a HEAD response: {body:?}"
        );
        let again = within(h2.send_request(request(http::Method::HEAD, Some(&get_tag))))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{coding}");
        let body = within(again.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        assert!(body.is_empty(), "{coding}");
    }
}

/// `CodingTagsLayer` misplaced inside compression: the HEAD it empties is not encoded yet, so
/// it keeps the exact zero size that compression outside leaves alone — no DATA on the HEAD
/// over HTTP/2 (it goes out as identity, the GET's length).
#[tokio::test]
async fn a_head_over_http2_with_coding_tags_inside_compression_has_no_data() {
    let stack = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(CodingTagsLayer::new())
        .layer(ConditionalLayer::new())
        .service(report());
    let addr = serve(stack).await;
    gzip_head_over_http2_has_no_data(addr, &[], StatusCode::OK).await;
}

/// A HEAD of `/r` over HTTP/2 from a gzip client, with `conditions`: `status`, and no DATA
/// (RFC 9113 §8.1.1: DATA on a HEAD response is a stream error).
async fn gzip_head_over_http2_has_no_data(
    addr: std::net::SocketAddr,
    conditions: &[(header::HeaderName, &str)],
    status: StatusCode,
) {
    let mut h2 = common::h2_client(addr).await;
    let mut req = Request::head(format!("http://{addr}/r")).header(header::ACCEPT_ENCODING, "gzip");
    for (name, value) in conditions {
        req = req.header(name, *value);
    }
    let req = req.body(http_body_util::Full::new(Bytes::new())).unwrap();
    let head = within(h2.send_request(req)).await.unwrap();
    assert_eq!(head.status(), status);
    let body = within(head.into_body().collect())
        .await
        .map(|b| b.to_bytes());
    assert!(body.as_ref().is_ok_and(|b| b.is_empty()), "{body:?}");
}

/// The layer's own answer to a HEAD (a 412 here) keeps only its length: with compression
/// right outside the layer, over HTTP/2, no DATA either.
#[tokio::test]
async fn a_heads_412_over_http2_under_compression_has_no_data() {
    let stack = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new())
        .service(report());
    let addr = serve(stack).await;
    let stale = [(header::IF_MATCH, "\"stale\"")];
    gzip_head_over_http2_has_no_data(addr, &stale, StatusCode::PRECONDITION_FAILED).await;
}

/// README "HEAD": "HEAD always carries the GET's ETag". Under `route_layer` (per method) a
/// route with its own HEAD handler — the usual way to answer HEAD of a large file without
/// producing it: an empty body and the real `Content-Length` — gets the "GET" sent to that
/// HEAD handler, and the layer hashes its empty body: every such resource's HEAD carries the
/// strong tag of zero bytes, which is no validator of the representation (RFC 9110 §8.8.3)
/// and differs from the GET's.
#[tokio::test]
async fn a_routes_own_head_handler_never_gets_the_tag_of_an_empty_body() {
    use axum::routing::get;
    let body = report_text();
    let len = body.len().to_string();
    let app = axum::Router::new()
        .route(
            "/file",
            get(move || {
                let body = body.clone();
                async move { body }
            })
            .head(move || {
                let len = len.clone();
                async move { [(header::CONTENT_LENGTH, len)] }
            }),
        )
        .route_layer(ConditionalLayer::new());
    let get = app
        .clone()
        .oneshot(Request::get("/file").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let get_tag = get.headers()[header::ETAG].clone();
    let head = app
        .clone()
        .oneshot(Request::head("/file").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let head_tag = head.headers().get(header::ETAG).cloned();
    let empty = EntityTag::from_content(b"").to_header_value();
    assert!(
        head_tag.is_none() || head_tag.as_ref() == Some(&get_tag),
        "HEAD ETag {head_tag:?} (the tag of zero bytes is {empty:?}), GET ETag {get_tag:?}"
    );
}

/// One layer value applied twice (outside and inside) shares its lock table: the inner pass
/// must not wait for the lock its own request holds.
#[tokio::test]
async fn the_same_serializing_layer_twice_does_not_wait_on_itself() {
    let store = Store::new(&[("/x", "ok")]);
    let layer = ConditionalLayer::new()
        .lookup(store.lookup())
        .serialize_writes(true);
    let svc = layer.clone().layer(layer.layer(store.handler()));
    let tag = EntityTag::from_content(b"ok").to_string();
    let put = Request::put("/x")
        .header("if-match", &tag)
        .body(String::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), svc.oneshot(put))
        .await
        .expect("no self-deadlock")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(store.writes(), 1);
}

/// `require_preconditions`: an empty `If-None-Match` list names nothing to compare and swap
/// on, so it does not satisfy the requirement (like an `If-Unmodified-Since` that cannot be
/// evaluated).
#[tokio::test]
async fn an_empty_if_none_match_does_not_satisfy_required_preconditions() {
    let store = Store::new(&[("/x", "ok")]);
    let svc = ConditionalLayer::new()
        .lookup(store.lookup())
        .require_preconditions(true)
        .layer(store.handler());
    for value in ["", " , "] {
        let put = Request::put("/x")
            .header("if-none-match", value)
            .body(String::new())
            .unwrap();
        let resp = svc.clone().oneshot(put).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::PRECONDITION_REQUIRED,
            "{value:?}"
        );
    }
    assert_eq!(store.writes(), 0);
}

/// The internal GET answered with a redirect: the write would be sent elsewhere the same
/// way, so the client gets that answer — not a 503 it would retry forever.
#[tokio::test]
async fn a_redirected_internal_get_passes_the_redirect_on() {
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    let svc =
        ConditionalLayer::new()
            .internal_get()
            .layer(service_fn(move |req: Request<String>| {
                let w = w.clone();
                async move {
                    if req.method() != Method::GET {
                        w.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(StatusCode::PERMANENT_REDIRECT)
                            .header(header::LOCATION, "/elsewhere")
                            .body(full(""))
                            .unwrap(),
                    )
                }
            }));
    let put = Request::put("/x")
        .header("if-match", "\"a\"")
        .body(String::new())
        .unwrap();
    let resp = svc.oneshot(put).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()[header::LOCATION], "/elsewhere");
    assert_eq!(writes.load(Ordering::SeqCst), 0);
}

/// The compression recipe (coding tags, compression, the layer) around a compressible
/// text, with this `Last-Modified`.
fn recipe_with_date(
    modified: Option<&'static str>,
) -> impl tower::Service<
    Request<String>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = tower_conditional::BoxError>>,
    Error = Infallible,
> + Clone {
    let body = report_text();
    recipe(service_fn(move |_req: Request<String>| {
        let body = body.clone();
        async move {
            let mut b = Response::builder().header(header::CONTENT_TYPE, "text/plain");
            if let Some(date) = modified {
                b = b.header(header::LAST_MODIFIED, date);
            }
            Ok::<_, Infallible>(b.body(full(body)).unwrap())
        }
    }))
}

/// The compression recipe's own 412 to a HEAD (If-Match checked on the final response) has
/// no content, like the layer's (a body on a HEAD resets HTTP/2 streams).
#[tokio::test]
async fn coding_tags_answers_a_stale_head_without_content() {
    let stack = recipe_with_date(None);
    for method in [Method::GET, Method::HEAD] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/r")
            .header("accept-encoding", "gzip")
            .header("if-match", "\"stale;gzip\"")
            .body(String::new())
            .unwrap();
        let resp = stack.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED, "{method}");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            bytes.is_empty(),
            method == Method::HEAD,
            "{method}: {bytes:?}"
        );
    }
}

/// A date-only revalidation in the compression recipe: the 304 names the coding's tag, the
/// one the client's stored response has — not the identity tag a 304 made inside would.
#[tokio::test]
async fn coding_tags_date_revalidation_keeps_the_codings_tag() {
    let stack = recipe_with_date(Some("Sun, 06 Nov 1994 08:49:37 GMT"));
    let get = |extra: Option<(&str, &str)>| {
        let mut b = Request::get("/r").header("accept-encoding", "gzip");
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        }
        b.body(String::new()).unwrap()
    };
    let first = stack.clone().oneshot(get(None)).await.unwrap();
    assert_eq!(first.headers()[header::CONTENT_ENCODING], "gzip");
    let coded = first.headers()[header::ETAG].clone();
    let again = stack
        .clone()
        .oneshot(get(Some((
            "if-modified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ))))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], coded);
    assert!(!again.headers().contains_key(header::CONTENT_ENCODING));
    // A date the representation changed after: the full response.
    let changed = stack
        .clone()
        .oneshot(get(Some((
            "if-modified-since",
            "Sat, 05 Nov 1994 08:49:37 GMT",
        ))))
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    // If-Unmodified-Since on a read, evaluated on the final response too.
    let stale = stack
        .clone()
        .oneshot(get(Some((
            "if-unmodified-since",
            "Sat, 05 Nov 1994 08:49:37 GMT",
        ))))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
}

/// The internal GET answered 410 or 405: nothing there answers GET, so a create-only PUT
/// goes ahead (it was refused with the GET's status before).
#[tokio::test]
async fn an_internal_get_of_gone_or_not_allowed_means_absent() {
    for status in [StatusCode::GONE, StatusCode::METHOD_NOT_ALLOWED] {
        let writes = Arc::new(AtomicUsize::new(0));
        let w = writes.clone();
        let svc = ConditionalLayer::new().internal_get().layer(service_fn(
            move |req: Request<String>| {
                let w = w.clone();
                async move {
                    if req.method() == Method::GET {
                        let mut r = Response::new(full(""));
                        *r.status_mut() = status;
                        return Ok::<_, Infallible>(r);
                    }
                    w.fetch_add(1, Ordering::SeqCst);
                    let mut r = Response::new(full(""));
                    *r.status_mut() = StatusCode::CREATED;
                    Ok(r)
                }
            },
        ));
        let put = Request::put("/x")
            .header("if-none-match", "*")
            .body(String::new())
            .unwrap();
        let resp = svc.oneshot(put).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{status}");
        assert_eq!(writes.load(Ordering::SeqCst), 1, "{status}");
    }
}

/// A body that keeps yielding empty frames at once must not hold the executor: the layer
/// reads a bounded number per poll, so its time bound can fire and the head goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_endless_empty_frames_does_not_hold_the_executor() {
    let svc = ConditionalLayer::new()
        .max_buffer_time(Duration::from_millis(100))
        .layer(service_fn(|_req: Request<String>| async {
            let endless = futures_util::stream::repeat_with(|| {
                Ok::<_, tower_conditional::BoxError>(Frame::data(Bytes::new()))
            });
            Ok::<_, Infallible>(Response::new(
                http_body_util::StreamBody::new(endless).boxed(),
            ))
        }));
    let task = tokio::spawn(async move {
        let resp = svc.oneshot(Request::new(String::new())).await.unwrap();
        (resp.status(), resp.headers().contains_key(header::ETAG))
    });
    let (status, tagged) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the head goes out once the time bound passes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(!tagged);
}

/// Streams of unknown length behind the compression recipe under axum (`route_layer`): a
/// download too large to hash (`max_buffer` 1 KiB) with a `Last-Modified`, and server-sent
/// events, which compression leaves alone.
async fn recipe_streams() -> std::net::SocketAddr {
    fn stream(content_type: &'static str, chunk: &'static str) -> Response<Body> {
        let chunks = (0..8).map(|_| Ok::<_, Infallible>(Bytes::from(chunk.repeat(40))));
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::LAST_MODIFIED, "Mon, 02 Jan 2023 00:00:00 GMT")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap()
    }
    let stack = || {
        ServiceBuilder::new()
            .layer(CodingTagsLayer::new())
            .layer(CompressionLayer::new())
            .layer(ConditionalLayer::new().max_buffer(1024))
    };
    let download = || async {
        stream(
            "text/plain",
            "the quick brown fox jumps over the lazy dog\n",
        )
    };
    let events = || async { stream("text/event-stream", "data: tick\n\n") };
    let app = axum::Router::new()
        .route(
            "/download",
            axum::routing::get(download).route_layer(stack()),
        )
        .route("/events", axum::routing::get(events).route_layer(stack()));
    serve_axum(app).await
}

/// One request over HTTP/1.1 or HTTP/2 (prior knowledge): status, head, body length.
async fn exchange(
    addr: std::net::SocketAddr,
    http2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, usize) {
    let response = if http2 {
        let mut req = request(method, path, headers, "");
        *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        req.headers_mut().remove(header::HOST);
        let mut h2 = h2_client(addr).await;
        within(h2.send_request(req)).await.unwrap()
    } else {
        call(addr, method, path, headers, "").await
    };
    let (head, body) = response.into_parts();
    let len = within(body.collect()).await.unwrap().to_bytes().len();
    (head.status, head.headers, len)
}

/// RFC 9110 §8.6 behind `CodingTagsLayer`: a 304 or a HEAD carries the 200's (the GET's)
/// `Content-Length` or none. A client that accepts no coding gets no length on the 304 of a
/// stream (over HTTP/2 too, where axum writes one from an exact size); a gzip client's 304
/// of an encoded 200 gets none either, tag or no tag (compression sits inside the adapter);
/// a HEAD over HTTP/1.1 of a stream compression left alone gets none, for any client.
#[tokio::test]
async fn coding_tags_304s_and_heads_of_streams_carry_no_length_the_200_lacks() {
    let addr = recipe_streams().await;
    let since = ("if-modified-since", "Mon, 02 Jan 2023 00:00:00 GMT");
    for http2 in [false, true] {
        for coding in ["", "identity", "gzip;q=0", "gzip"] {
            let accept = ("accept-encoding", coding);
            let what = format!("http2={http2} accept-encoding {coding:?}");
            let (status, full, len) = exchange(addr, http2, "GET", "/download", &[accept]).await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert!(len > 0, "{what}");
            assert_eq!(full.get(header::CONTENT_LENGTH), None, "{what}: a stream");
            let (status, head, len) =
                exchange(addr, http2, "GET", "/download", &[accept, since]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{what}");
            assert_eq!(head.get(header::CONTENT_LENGTH), None, "{what}: 304");
            assert_eq!(len, 0, "{what}");
        }
    }
    for coding in ["gzip", "br", "gzip, deflate, br, zstd", ""] {
        let accept = [("accept-encoding", coding)];
        let (_, get, _) = exchange(addr, false, "GET", "/events", &accept).await;
        let (status, head, len) = exchange(addr, false, "HEAD", "/events", &accept).await;
        assert_eq!(status, StatusCode::OK, "{coding:?}");
        assert_eq!(len, 0, "{coding:?}");
        assert_eq!(
            head.get(header::CONTENT_LENGTH),
            get.get(header::CONTENT_LENGTH),
            "HEAD /events over HTTP/1.1, accept-encoding {coding:?}"
        );
    }
}

/// An axum handler: 3,000 bytes of text/plain, tagged `"v1"` by the handler itself.
async fn three_thousand_tagged() -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::ETAG, "\"v1\"")
        .body(Body::from("x".repeat(3000)))
        .unwrap()
}

/// With `head_as_get(false)` the service answers a HEAD itself — under axum, with the GET's
/// content, which axum drops on the way out — and `CodingTagsLayer` empties it: the HEAD
/// (and its 304) still carries the GET's `Content-Length` (RFC 9110 §8.6, §9.3.2), where only
/// the body's size said it, for a client whose coding compression does not apply (`br` here:
/// this build compresses gzip only) and over both protocols.
#[tokio::test]
async fn coding_tags_keeps_the_gets_length_on_a_head_the_service_answered() {
    let stack = ServiceBuilder::new()
        .layer(CodingTagsLayer::new())
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new().head_as_get(false));
    let app = axum::Router::new().route(
        "/r",
        axum::routing::get(three_thousand_tagged).route_layer(stack),
    );
    let addr = serve_axum(app).await;
    for http2 in [false, true] {
        for coding in ["br", "identity", ""] {
            let what = format!("http2={http2} accept-encoding {coding:?}");
            let accept = ("accept-encoding", coding);
            let (_, get, len) = exchange(addr, http2, "GET", "/r", &[accept]).await;
            assert_eq!(len, 3000, "{what}");
            assert_eq!(get.get(header::CONTENT_LENGTH).unwrap(), "3000", "{what}");
            let (status, head, len) = exchange(addr, http2, "HEAD", "/r", &[accept]).await;
            assert_eq!((status, len), (StatusCode::OK, 0), "{what}");
            assert_eq!(head.get(header::CONTENT_LENGTH).unwrap(), "3000", "{what}");
            let revalidate = [accept, ("if-none-match", "\"v1\"")];
            let (status, head, _) = exchange(addr, http2, "HEAD", "/r", &revalidate).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{what}");
            let length = head.get(header::CONTENT_LENGTH);
            assert!(length.is_none_or(|l| l == "3000"), "{what}: {length:?}");
        }
    }
}

/// A compressor that buffers and answers an exact size (unlike tower-http's, which streams):
/// `Content-Encoding: gzip` on a 200 for a gzip client, a stand-in body of exact length.
async fn buffering_encoder(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response<Body> {
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .is_some_and(|v| v.as_bytes().windows(4).any(|w| w == b"gzip"));
    let response = next.run(req).await;
    if !gzip || response.status() != StatusCode::OK {
        return response;
    }
    let (mut head, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Response::from_parts(head, Body::from(format!("encoded {} bytes", bytes.len())))
}

/// The HEAD `CodingTagsLayer` empties is labelled and sized as the GET, whatever compresses
/// behind or around it: a buffering encoder inside (which encodes the empty HEAD body the
/// layer made into a few bytes of exact size — not the GET's length), and tower-http's
/// compression misplaced outside the adapter (which must still see the HEAD as it sees the GET
/// over HTTP/1.1, not as an exact zero). RFC 9110 §8.6, §9.3.2.
#[tokio::test]
async fn a_head_is_sized_and_labelled_as_its_get_whatever_compresses_around_coding_tags() {
    let inside = ServiceBuilder::new()
        .layer(CodingTagsLayer::new())
        .layer(axum::middleware::from_fn(buffering_encoder))
        .layer(ConditionalLayer::new());
    let outside = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(CodingTagsLayer::new())
        .layer(ConditionalLayer::new());
    let app = axum::Router::new()
        .route(
            "/inside",
            axum::routing::get(three_thousand_tagged).route_layer(inside),
        )
        .route(
            "/outside",
            axum::routing::get(three_thousand_tagged).route_layer(outside),
        );
    let addr = serve_axum(app).await;
    let gzip = ("accept-encoding", "gzip");
    for http2 in [false, true] {
        let what = format!("http2={http2}");
        let (_, get, len) = exchange(addr, http2, "GET", "/inside", &[gzip]).await;
        assert_eq!(
            get.get(header::CONTENT_LENGTH).unwrap(),
            &len.to_string(),
            "{what}"
        );
        let tag = tag(&get);
        let (_, head, _) = exchange(addr, http2, "HEAD", "/inside", &[gzip]).await;
        let length = head.get(header::CONTENT_LENGTH);
        assert!(
            length.is_none_or(|l| l == &len.to_string()),
            "{what}: HEAD {length:?}"
        );
        let revalidate = [gzip, ("if-none-match", tag.as_str())];
        let (status, head, _) = exchange(addr, http2, "HEAD", "/inside", &revalidate).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{what}");
        let length = head.get(header::CONTENT_LENGTH);
        assert!(
            length.is_none_or(|l| l == &len.to_string()),
            "{what}: 304 {length:?}"
        );
    }
    // Misplaced outside, over HTTP/1.1 (over HTTP/2 the HEAD stays identity, README "HEAD").
    let (_, get, _) = exchange(addr, false, "GET", "/outside", &[gzip]).await;
    let (_, head, _) = exchange(addr, false, "HEAD", "/outside", &[gzip]).await;
    for name in [
        header::CONTENT_ENCODING,
        header::VARY,
        header::CONTENT_LENGTH,
    ] {
        assert_eq!(
            head.get(&name),
            get.get(&name),
            "misplaced, HTTP/1.1: {name}"
        );
    }
}
