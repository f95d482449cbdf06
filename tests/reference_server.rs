//! The reference server's contract, checked against the real binary over real HTTP.

mod common;

use std::time::Duration;

use common::{collect, independent_tag};
use http::{header, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

type Server = common::Running;

fn start() -> Server {
    common::spawn_example("reference_server", &["--addr", "127.0.0.1:0"])
}

async fn send(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Incoming> {
    common::call(s.addr, method, path, headers, body).await
}

fn etag(r: &Response<Incoming>) -> String {
    r.headers()[header::ETAG].to_str().unwrap().to_owned()
}

async fn text(r: Response<Incoming>) -> String {
    String::from_utf8(collect(r.into_body()).await.to_vec()).unwrap()
}

#[tokio::test]
async fn contract_reads() {
    let s = start();
    let put = send(
        &s,
        "PUT",
        "/items/a",
        &[("content-type", "text/plain")],
        "hello range",
    )
    .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(etag(&put), independent_tag(b"hello range"));
    assert_eq!(
        text(put).await,
        "hello range",
        "a PUT answers the stored representation"
    );

    let get = send(&s, "GET", "/items/a", &[], "").await;
    assert_eq!(get.status(), StatusCode::OK);
    let h = get.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/plain");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert_eq!(h[header::VARY], "Accept");
    assert_eq!(h[header::CONTENT_LOCATION], "/items/a");
    assert!(httpdate::parse_http_date(h[header::LAST_MODIFIED].to_str().unwrap()).is_ok());
    let tag = etag(&get);
    assert_eq!(
        tag,
        independent_tag(b"hello range"),
        "the ETag a GET returns for the same bytes"
    );
    assert_eq!(text(get).await, "hello range");

    let head = send(&s, "HEAD", "/items/a", &[], "").await;
    assert_eq!(etag(&head), tag);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "11");
    // Range is not defined for HEAD: the answer is the 200's head.
    let head = send(&s, "HEAD", "/items/a", &[("range", "bytes=0-1")], "").await;
    assert_eq!(head.status(), StatusCode::OK);

    let nm = send(&s, "GET", "/items/a", &[("if-none-match", &tag)], "").await;
    assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(nm.headers()[header::CACHE_CONTROL], "no-cache");
    assert_eq!(nm.headers()[header::VARY], "Accept");
    assert_eq!(nm.headers()[header::CONTENT_LOCATION], "/items/a");
    assert!(!nm.headers().contains_key(header::CONTENT_TYPE));
    let lm = h[header::LAST_MODIFIED].to_str().unwrap();
    assert_eq!(
        send(&s, "GET", "/items/a", &[("if-modified-since", lm)], "")
            .await
            .status(),
        StatusCode::NOT_MODIFIED
    );

    let part = send(&s, "GET", "/items/a", &[("range", "bytes=0-4")], "").await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 0-4/11");
    assert_eq!(etag(&part), tag);
    assert_eq!(text(part).await, "hello");
    let suffix = send(&s, "GET", "/items/a", &[("range", "bytes=-5")], "").await;
    assert_eq!(text(suffix).await, "range");
    let bad = send(&s, "GET", "/items/a", &[("range", "bytes=50-60")], "").await;
    assert_eq!(bad.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(bad.headers()[header::CONTENT_RANGE], "bytes */11");
    let multi = send(&s, "GET", "/items/a", &[("range", "bytes=0-1,3-4")], "").await;
    assert_eq!(multi.status(), StatusCode::OK);

    let ok_if_range = send(
        &s,
        "GET",
        "/items/a",
        &[("range", "bytes=0-4"), ("if-range", &tag)],
        "",
    )
    .await;
    assert_eq!(ok_if_range.status(), StatusCode::PARTIAL_CONTENT);
    let stale_if_range = send(
        &s,
        "GET",
        "/items/a",
        &[("range", "bytes=0-4"), ("if-range", "\"old\"")],
        "",
    )
    .await;
    assert_eq!(stale_if_range.status(), StatusCode::OK);
    assert_eq!(text(stale_if_range).await, "hello range");

    assert_eq!(
        send(&s, "GET", "/items/missing", &[], "").await.status(),
        StatusCode::NOT_FOUND
    );
    let options = send(&s, "OPTIONS", "/items/a", &[], "").await;
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert!(options.headers()[header::ALLOW]
        .to_str()
        .unwrap()
        .contains("PATCH"));
}

#[tokio::test]
async fn contract_writes() {
    let s = start();
    let create = send(
        &s,
        "PUT",
        "/items/w",
        &[("content-type", "application/json"), ("if-none-match", "*")],
        "{\"n\":1}",
    )
    .await;
    assert_eq!(create.status(), StatusCode::CREATED);
    let again = send(&s, "PUT", "/items/w", &[("if-none-match", "*")], "{}").await;
    assert_eq!(again.status(), StatusCode::PRECONDITION_FAILED);
    let tag = etag(&create);

    let stale = send(&s, "PUT", "/items/w", &[("if-match", "\"stale\"")], "{}").await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert!(
        !stale.headers().contains_key(header::ETAG),
        "a 412 does not disclose the current tag"
    );
    assert_eq!(
        text(send(&s, "GET", "/items/w", &[], "").await).await,
        "{\"n\":1}",
        "nothing written"
    );

    let patched = send(
        &s,
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
    let tag = etag(&patched);
    assert_eq!(text(patched).await, "{\"m\":{\"x\":1}}");

    let posted = send(&s, "POST", "/items/w", &[("if-match", &tag)], "").await;
    assert_eq!(posted.status(), StatusCode::OK);
    assert_eq!(text(posted).await, "{\"m\":{\"x\":1},\"posts\":1}");
    let posted = send(&s, "POST", "/items/w", &[], "").await;
    let tag = etag(&posted);
    assert_eq!(text(posted).await, "{\"m\":{\"x\":1},\"posts\":2}");
    assert_eq!(tag, independent_tag(b"{\"m\":{\"x\":1},\"posts\":2}"));

    let partial = send(
        &s,
        "PUT",
        "/items/w",
        &[("content-range", "bytes 0-1/10")],
        "ab",
    )
    .await;
    assert_eq!(partial.status(), StatusCode::BAD_REQUEST, "RFC 9110 §14.5");
    let replaced = send(&s, "PUT", "/items/w", &[("if-match", &tag)], "plain").await;
    assert_eq!(replaced.status(), StatusCode::OK);

    assert_eq!(
        send(&s, "DELETE", "/items/w", &[("if-match", &tag)], "")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        send(&s, "DELETE", "/items/w", &[("if-match", "*")], "")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&s, "DELETE", "/items/w", &[], "").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&s, "DELETE", "/items/w", &[("if-match", "*")], "")
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "a 404 stays a 404"
    );
    assert_eq!(
        send(&s, "PUT", "/items/w", &[("if-match", "*")], "x")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
}

#[tokio::test]
async fn contract_strict_and_private() {
    let s = start();
    send(&s, "PUT", "/items/p", &[], "{}").await;
    for method in ["PUT", "PATCH", "DELETE"] {
        assert_eq!(
            send(&s, method, "/strict/items/p", &[], "{}")
                .await
                .status(),
            StatusCode::PRECONDITION_REQUIRED,
            "{method}"
        );
    }
    assert_eq!(
        send(&s, "POST", "/strict/items/p", &[], "").await.status(),
        StatusCode::OK,
        "POST is not strict"
    );
    let tag = etag(&send(&s, "GET", "/strict/items/p", &[], "").await);
    assert_eq!(
        send(&s, "PUT", "/strict/items/p", &[("if-match", &tag)], "{}")
            .await
            .status(),
        StatusCode::OK
    );

    let denied = send(
        &s,
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
        send(
            &s,
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
        send(&s, "GET", "/private/items/p", &[auth], "")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn contract_streams() {
    let s = start();
    let small = send(&s, "GET", "/blob/1000", &[], "").await;
    assert_eq!(etag(&small), independent_tag(&common::pattern(1000)));
    assert_eq!(collect(small.into_body()).await, common::pattern(1000));

    // An item above max_buffer still has its validator: the store keeps the tag.
    let large = "x".repeat(1_500_000);
    let put = send(&s, "PUT", "/items/large", &[], &large).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = send(&s, "GET", "/items/large", &[], "").await;
    assert_eq!(etag(&get), independent_tag(large.as_bytes()));
    let tag = etag(&get);
    assert_eq!(collect(get.into_body()).await.len(), 1_500_000);
    let nm = send(&s, "GET", "/items/large", &[("if-none-match", &tag)], "").await;
    assert_eq!(nm.status(), StatusCode::NOT_MODIFIED);

    let big = send(&s, "GET", "/blob/3000000", &[], "").await;
    assert!(
        !big.headers().contains_key(header::ETAG),
        "over max_buffer: untagged"
    );
    let body = collect(big.into_body()).await;
    assert_eq!(body.len(), 3_000_000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));

    let sse = send(&s, "GET", "/sse", &[], "").await;
    assert_eq!(sse.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = sse.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event arrives while the stream goes on");
    let data = first.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&data).contains("data: tick"));
}
