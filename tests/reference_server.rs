//! The reference server's contract, checked against the real binary over real HTTP.

mod common;

use std::time::Duration;

use common::{body_text, call, collect, independent_tag};
use http::{header, StatusCode};
use http_body_util::BodyExt;

type Server = common::Running;

fn start() -> Server {
    common::spawn_example("reference_server", &["--addr", "127.0.0.1:0"])
}

/// Two versions written within one second share a `Last-Modified`: the store cannot vouch
/// that a date names one version (RFC 9110 §8.8.2.2), so an `If-Range` date — even the
/// current one, a second later — gets the whole representation, never a part of the second
/// version for a client that holds the first.
#[tokio::test]
async fn an_if_range_date_never_splices_two_versions_of_one_second() {
    let s = start();
    let text = [("content-type", "text/plain")];
    let first = call(s.addr, "PUT", "/items/twice", &text, "AAAAAAAAAA").await;
    let date = first.headers()[header::LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_owned();
    let second = call(s.addr, "PUT", "/items/twice", &text, "BBBBBBBBBB").await;
    assert!(second.status().is_success());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resumed = call(
        s.addr,
        "GET",
        "/items/twice",
        &[("range", "bytes=5-9"), ("if-range", &date)],
        "",
    )
    .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    assert_eq!(body_text(resumed).await, "BBBBBBBBBB");
}

#[tokio::test]
async fn contract_reads() {
    let s = start();
    let put = call(
        s.addr,
        "PUT",
        "/items/a",
        &[("content-type", "text/plain")],
        "hello range",
    )
    .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(common::tag(put.headers()), independent_tag(b"hello range"));
    assert_eq!(
        body_text(put).await,
        "hello range",
        "a PUT answers the stored representation"
    );

    let get = call(s.addr, "GET", "/items/a", &[], "").await;
    assert_eq!(get.status(), StatusCode::OK);
    let h = get.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/plain");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::VARY], "Accept");
    assert_eq!(h[header::CONTENT_LOCATION], "/items/a");
    assert!(httpdate::parse_http_date(h[header::LAST_MODIFIED].to_str().unwrap()).is_ok());
    let tag = common::tag(get.headers());
    assert_eq!(
        tag,
        independent_tag(b"hello range"),
        "the ETag a GET returns for the same bytes"
    );
    assert_eq!(body_text(get).await, "hello range");

    let head = call(s.addr, "HEAD", "/items/a", &[], "").await;
    assert_eq!(common::tag(head.headers()), tag);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "11");
    // Range is not defined for HEAD: the answer is the 200's head.
    let head = call(s.addr, "HEAD", "/items/a", &[("range", "bytes=0-1")], "").await;
    assert_eq!(head.status(), StatusCode::OK);

    let nm = call(s.addr, "GET", "/items/a", &[("if-none-match", &tag)], "").await;
    assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(nm.headers()[header::CACHE_CONTROL], "no-cache");
    assert_eq!(nm.headers()[header::VARY], "Accept");
    assert_eq!(nm.headers()[header::CONTENT_LOCATION], "/items/a");
    assert!(!nm.headers().contains_key(header::CONTENT_TYPE));
    let lm = h[header::LAST_MODIFIED].to_str().unwrap();
    assert_eq!(
        call(s.addr, "GET", "/items/a", &[("if-modified-since", lm)], "")
            .await
            .status(),
        StatusCode::NOT_MODIFIED
    );

    let part = call(s.addr, "GET", "/items/a", &[("range", "bytes=0-4")], "").await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 0-4/11");
    assert_eq!(common::tag(part.headers()), tag);
    assert_eq!(body_text(part).await, "hello");
    let suffix = call(s.addr, "GET", "/items/a", &[("range", "bytes=-5")], "").await;
    assert_eq!(body_text(suffix).await, "range");
    let bad = call(s.addr, "GET", "/items/a", &[("range", "bytes=50-60")], "").await;
    assert_eq!(bad.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(bad.headers()[header::CONTENT_RANGE], "bytes */11");
    let multi = call(s.addr, "GET", "/items/a", &[("range", "bytes=0-1,3-4")], "").await;
    assert_eq!(multi.status(), StatusCode::OK);

    let ok_if_range = call(
        s.addr,
        "GET",
        "/items/a",
        &[("range", "bytes=0-4"), ("if-range", &tag)],
        "",
    )
    .await;
    assert_eq!(ok_if_range.status(), StatusCode::PARTIAL_CONTENT);
    let stale_if_range = call(
        s.addr,
        "GET",
        "/items/a",
        &[("range", "bytes=0-4"), ("if-range", "\"old\"")],
        "",
    )
    .await;
    assert_eq!(stale_if_range.status(), StatusCode::OK);
    assert_eq!(body_text(stale_if_range).await, "hello range");

    assert_eq!(
        call(s.addr, "GET", "/items/missing", &[], "")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let options = call(s.addr, "OPTIONS", "/items/a", &[], "").await;
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert!(options.headers()[header::ALLOW]
        .to_str()
        .unwrap()
        .contains("PATCH"));
}

#[tokio::test]
async fn contract_writes() {
    let s = start();
    let create = call(
        s.addr,
        "PUT",
        "/items/w",
        &[("content-type", "application/json"), ("if-none-match", "*")],
        "{\"n\":1}",
    )
    .await;
    assert_eq!(create.status(), StatusCode::CREATED);
    let again = call(s.addr, "PUT", "/items/w", &[("if-none-match", "*")], "{}").await;
    assert_eq!(again.status(), StatusCode::PRECONDITION_FAILED);
    let tag = common::tag(create.headers());

    let stale = call(
        s.addr,
        "PUT",
        "/items/w",
        &[("if-match", "\"stale\"")],
        "{}",
    )
    .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert!(
        !stale.headers().contains_key(header::ETAG),
        "a 412 does not disclose the current tag"
    );
    assert_eq!(
        body_text(call(s.addr, "GET", "/items/w", &[], "").await).await,
        "{\"n\":1}",
        "nothing written"
    );

    let patched = call(
        s.addr,
        "PATCH",
        "/items/w",
        &[
            ("if-match", &tag),
            ("content-type", "application/merge-patch+json"),
        ],
        "{\"n\":null,\"m\":{\"x\":1}}",
    )
    .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let tag = common::tag(patched.headers());
    assert_eq!(body_text(patched).await, "{\"m\":{\"x\":1}}");

    let posted = call(s.addr, "POST", "/items/w", &[("if-match", &tag)], "").await;
    assert_eq!(posted.status(), StatusCode::OK);
    assert_eq!(body_text(posted).await, "{\"m\":{\"x\":1},\"posts\":1}");
    let posted = call(s.addr, "POST", "/items/w", &[], "").await;
    let tag = common::tag(posted.headers());
    assert_eq!(body_text(posted).await, "{\"m\":{\"x\":1},\"posts\":2}");
    assert_eq!(tag, independent_tag(b"{\"m\":{\"x\":1},\"posts\":2}"));

    let partial = call(
        s.addr,
        "PUT",
        "/items/w",
        &[("content-range", "bytes 0-1/10")],
        "ab",
    )
    .await;
    assert_eq!(partial.status(), StatusCode::BAD_REQUEST, "RFC 9110 §14.5");
    // What the head alone refuses (a partial PUT, a PATCH that is not JSON) is refused so
    // with preconditions too, true or false, on every item route (RFC 9110 §13.2.1).
    for path in ["/items/w", "/strict/items/w"] {
        for condition in [
            &[("if-match", "\"stale\"")][..],
            &[("if-match", tag.as_str())][..],
            &[("if-none-match", "*")][..],
            &[][..],
        ] {
            let with = |field: (&'static str, &'static str)| [&[field][..], condition].concat();
            let range = with(("content-range", "bytes 0-1/10"));
            let partial = call(s.addr, "PUT", path, &range, "ab").await;
            assert_eq!(
                partial.status(),
                StatusCode::BAD_REQUEST,
                "{path} {condition:?}"
            );
            let text = with(("content-type", "text/plain"));
            let patch = call(s.addr, "PATCH", path, &text, "{}").await;
            assert_eq!(
                patch.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {condition:?}"
            );
            assert_eq!(
                patch.headers()["accept-patch"],
                "application/merge-patch+json"
            );
        }
    }
    let unchanged = call(s.addr, "GET", "/items/w", &[], "").await;
    assert_eq!(common::tag(unchanged.headers()), tag, "nothing was written");
    let replaced = call(s.addr, "PUT", "/items/w", &[("if-match", &tag)], "plain").await;
    assert_eq!(replaced.status(), StatusCode::OK);

    assert_eq!(
        call(s.addr, "DELETE", "/items/w", &[("if-match", &tag)], "")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        call(s.addr, "DELETE", "/items/w", &[("if-match", "*")], "")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(s.addr, "DELETE", "/items/w", &[], "").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(s.addr, "DELETE", "/items/w", &[("if-match", "*")], "")
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "a 404 stays a 404"
    );
    assert_eq!(
        call(s.addr, "PUT", "/items/w", &[("if-match", "*")], "x")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
}

#[tokio::test]
async fn contract_strict_and_private() {
    let s = start();
    call(s.addr, "PUT", "/items/p", &[], "{}").await;
    for method in ["PUT", "PATCH", "DELETE"] {
        assert_eq!(
            call(s.addr, method, "/strict/items/p", &[], "{}")
                .await
                .status(),
            StatusCode::PRECONDITION_REQUIRED,
            "{method}"
        );
    }
    assert_eq!(
        call(s.addr, "POST", "/strict/items/p", &[], "")
            .await
            .status(),
        StatusCode::OK,
        "POST is not strict"
    );
    let tag = common::tag(
        call(s.addr, "GET", "/strict/items/p", &[], "")
            .await
            .headers(),
    );
    assert_eq!(
        call(
            s.addr,
            "PUT",
            "/strict/items/p",
            &[("if-match", &tag)],
            "{}"
        )
        .await
        .status(),
        StatusCode::OK
    );

    let denied = call(
        s.addr,
        "PUT",
        "/private/items/p",
        &[("if-match", "\"stale\"")],
        "{}",
    )
    .await;
    assert_eq!(
        denied.status(),
        StatusCode::UNAUTHORIZED,
        "authentication is decided before preconditions"
    );
    assert!(denied.headers().contains_key(header::WWW_AUTHENTICATE));
    let auth = ("authorization", "Bearer let-me-in");
    assert_eq!(
        call(
            s.addr,
            "PUT",
            "/private/items/p",
            &[auth, ("if-match", "\"stale\"")],
            "{}"
        )
        .await
        .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        call(s.addr, "GET", "/private/items/p", &[auth], "")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn contract_streams() {
    let s = start();
    let small = call(s.addr, "GET", "/blob/1000", &[], "").await;
    assert_eq!(
        common::tag(small.headers()),
        independent_tag(&common::pattern(1000))
    );
    assert_eq!(collect(small.into_body()).await, common::pattern(1000));

    // An item above max_buffer still has its validator: the store keeps the tag.
    let large = "x".repeat(1_500_000);
    let put = call(s.addr, "PUT", "/items/large", &[], &large).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = call(s.addr, "GET", "/items/large", &[], "").await;
    assert_eq!(
        common::tag(get.headers()),
        independent_tag(large.as_bytes())
    );
    let tag = common::tag(get.headers());
    assert_eq!(collect(get.into_body()).await.len(), 1_500_000);
    let nm = call(
        s.addr,
        "GET",
        "/items/large",
        &[("if-none-match", &tag)],
        "",
    )
    .await;
    assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);

    let big = call(s.addr, "GET", "/blob/3000000", &[], "").await;
    assert!(
        !big.headers().contains_key(header::ETAG),
        "over max_buffer: untagged"
    );
    let body = collect(big.into_body()).await;
    assert_eq!(body.len(), 3_000_000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

    let sse = call(s.addr, "GET", "/sse", &[], "").await;
    assert_eq!(sse.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = sse.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event arrives while the stream goes on");
    let data = first.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&data).contains("data: tick"));
}

/// Conditional writes that stall mid-body hold nothing (their bodies are read before the
/// item's write lock is taken): the next conditional write goes through at once, and the
/// stalled ones get 408 at the item routes' request timeout (10 s).
#[tokio::test]
async fn stalled_conditional_writes_do_not_hold_their_item() {
    let s = start();
    common::stalled_writes_hold_nothing(s.addr, "/items/stall").await;
}

/// RFC 9110 §8.6: a HEAD response or a 304 carries the 200's `Content-Length` or none — never
/// a `0` for a stream whose length nobody knows (`/blob/{n}` above `max_buffer`, `/sse`),
/// over HTTP/1.1 or HTTP/2, to a client that accepts no content coding. (To one that does,
/// the layer keeps the empty body's exact zero so that compression outside sends no DATA on
/// it, which axum writes as `content-length: 0`: the documented lesser fault.)
#[tokio::test]
async fn heads_and_304s_of_streams_carry_no_length_the_200_did_not() {
    let s = start();
    let mut h2 = common::h2_client(s.addr).await;
    type Exchange<'a> = (&'a str, &'a [(&'a str, &'a str)], StatusCode);
    let exchanges: [Exchange; 3] = [
        ("HEAD", &[], StatusCode::OK),
        ("HEAD", &[("if-none-match", "*")], StatusCode::NOT_MODIFIED),
        ("GET", &[("if-none-match", "*")], StatusCode::NOT_MODIFIED),
    ];
    for path in ["/blob/2000000", "/sse"] {
        for (method, conditions, status) in exchanges {
            let what = format!("{method} {path} {conditions:?}");
            let h1 = call(s.addr, method, path, conditions, "").await;
            assert_eq!(h1.status(), status, "HTTP/1.1 {what}");
            assert_eq!(
                h1.headers().get(header::CONTENT_LENGTH),
                None,
                "HTTP/1.1 {what}"
            );

            let mut req = common::request(method, path, conditions, "");
            *req.uri_mut() = format!("http://{}{path}", s.addr).parse().unwrap();
            req.headers_mut().remove(header::HOST);
            let resp = common::live(&what, h2.send_request(req)).await.unwrap();
            assert_eq!(resp.status(), status, "HTTP/2 {what}");
            assert_eq!(
                resp.headers().get(header::CONTENT_LENGTH),
                None,
                "HTTP/2 {what}"
            );
            assert!(collect(resp.into_body()).await.is_empty(), "HTTP/2 {what}");
        }
    }
}

/// An HTTP/2 client that resets its upload with `NO_ERROR` mid-body ends the body early
/// without an error (hyper hands the handler what arrived); the body is shorter than its
/// `Content-Length`, so the request is malformed (RFC 9113 §8.1.1): 400, nothing written —
/// not the first 40 bytes stored as the item.
#[tokio::test]
async fn an_upload_reset_mid_body_writes_nothing() {
    let s = start();
    let created = call(s.addr, "PUT", "/items/reset", &[], "v0").await;
    assert!(created.status().is_success(), "{}", created.status());

    let status = common::upload_reset_mid_body(s.addr, "/items/reset", "text/plain").await;
    assert!(
        status.is_none_or(|s| s == StatusCode::BAD_REQUEST),
        "{status:?}"
    );
    let now = call(s.addr, "GET", "/items/reset", &[], "").await;
    assert_eq!(collect(now.into_body()).await, "v0", "nothing written");
}
