//! Every integration example, run as its built binary and driven over real HTTP (and gRPC).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{call, collect, spawn_example, tag};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};

#[tokio::test]
async fn axum_per_route() {
    let server = spawn_example("axum_per_route", &["--addr", "127.0.0.1:0"]);
    let a = server.addr;

    // Hash-only.
    let doc = call(a, "GET", "/docs/intro", &[], "").await;
    let t = tag(doc.headers());
    assert_eq!(
        call(a, "GET", "/docs/intro", &[("if-none-match", &t)], "")
            .await
            .status(),
        StatusCode::NOT_MODIFIED
    );

    // Lookup-backed resource.
    let created = call(a, "PUT", "/notes/1", &[("if-none-match", "*")], "first").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        call(a, "PUT", "/notes/1", &[("if-none-match", "*")], "again")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        call(a, "PUT", "/notes/1", &[("if-match", "\"stale\"")], "x")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    let note = call(a, "GET", "/notes/1", &[], "").await;
    let t = tag(note.headers());
    assert_eq!(collect(note.into_body()).await, "first");
    assert_eq!(
        call(a, "PUT", "/notes/1", &[("if-match", &t)], "second")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    // Strict, checked with the internal GET.
    assert_eq!(
        call(a, "PUT", "/config", &[], "mode = fast").await.status(),
        StatusCode::PRECONDITION_REQUIRED
    );
    let t = tag(call(a, "GET", "/config", &[], "").await.headers());
    assert_eq!(
        call(
            a,
            "PUT",
            "/config",
            &[("if-match", "\"old\"")],
            "mode = fast"
        )
        .await
        .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        call(a, "PUT", "/config", &[("if-match", &t)], "mode = fast")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    // Streams untouched.
    let events = call(a, "GET", "/events", &[], "").await;
    assert!(!events.headers().contains_key(header::ETAG));
    let mut body = events.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event before the stream ends");
    assert!(first
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .starts_with(b"data: "));
    let export = call(a, "GET", "/export", &[], "").await;
    assert!(!export.headers().contains_key(header::ETAG));
    assert_eq!(collect(export.into_body()).await.len(), 64 * 1024 * 1024);

    // The handler's own tag.
    let version = call(a, "GET", "/version", &[], "").await;
    assert_eq!(tag(version.headers()), "W/\"build-42\"");
    assert_eq!(
        call(
            a,
            "GET",
            "/version",
            &[("if-none-match", "W/\"build-42\"")],
            ""
        )
        .await
        .status(),
        StatusCode::NOT_MODIFIED
    );

    // A partial PUT is 400 before any precondition: a stale one, and the strict route's 428.
    let partial = ("content-range", "bytes 0-1/10");
    for (path, headers) in [
        ("/notes/partial", vec![partial]),
        ("/notes/partial", vec![partial, ("if-match", "\"stale\"")]),
        ("/config", vec![partial]),
        ("/config", vec![partial, ("if-match", "\"stale\"")]),
    ] {
        let r = call(a, "PUT", path, &headers, "ab").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path} {headers:?}");
    }
    assert_eq!(
        call(a, "GET", "/notes/partial", &[], "").await.status(),
        StatusCode::NOT_FOUND,
        "nothing was written"
    );
}

#[tokio::test]
async fn hyper_service() {
    let server = spawn_example("hyper_service", &["--addr", "127.0.0.1:0"]);
    let a = server.addr;
    let got = call(a, "GET", "/counter", &[], "").await;
    let t = tag(got.headers());
    assert_eq!(collect(got.into_body()).await, "0");
    assert_eq!(
        call(a, "PUT", "/counter", &[("if-match", "\"stale\"")], "5")
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        collect(call(a, "GET", "/counter", &[], "").await.into_body()).await,
        "0"
    );
    assert_eq!(
        call(a, "PUT", "/counter", &[("if-match", &t)], "1")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(a, "GET", "/counter", &[("if-none-match", &t)], "")
            .await
            .status(),
        StatusCode::OK,
        "changed"
    );
    // What is 404, 405 or 400 without preconditions stays so with stale ones (RFC 9110
    // §13.2.1, §14.5), and nothing is written.
    for (method, path, headers, expect) in [
        ("PUT", "/other", &[][..], StatusCode::NOT_FOUND),
        (
            "DELETE",
            "/counter",
            &[][..],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        ("PATCH", "/counter", &[][..], StatusCode::METHOD_NOT_ALLOWED),
        (
            "PUT",
            "/counter",
            &[("content-range", "bytes 0-1/10")][..],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        for condition in [
            None,
            Some(("if-match", "\"stale\"")),
            Some(("if-match", "*")),
        ] {
            let mut all = headers.to_vec();
            all.extend(condition);
            let r = call(a, method, path, &all, "42").await;
            assert_eq!(r.status(), expect, "{method} {path} {all:?}");
        }
    }
    assert_eq!(
        collect(call(a, "GET", "/counter", &[], "").await.into_body()).await,
        "1"
    );
}

/// RFC 9110 §8.6 over HTTP/2, where axum writes a length from the body's size: the gzip
/// client's 304 carries no `Content-Length` (its encoded 200 had none, and compression sits
/// inside `CodingTagsLayer`, so nothing outside may encode the empty body), and the identity
/// client's carries the 200's; a HEAD has the GET's tag, coding and length.
#[tokio::test]
async fn service_builder_304s_over_http2_carry_the_200s_length_or_none() {
    let server = spawn_example("service_builder", &["--addr", "127.0.0.1:0"]);
    let mut h2 = common::h2_client(server.addr).await;
    let uri = format!("http://{}/report", server.addr);
    for coding in ["gzip", "identity"] {
        let get = |extra: Option<(&str, String)>| {
            let mut req = Request::get(&uri).header(header::ACCEPT_ENCODING, coding);
            if let Some((name, value)) = extra {
                req = req.header(name, value);
            }
            req.body(Full::new(Bytes::new())).unwrap()
        };
        let full = h2.send_request(get(None)).await.unwrap();
        assert_eq!(full.status(), StatusCode::OK, "{coding}");
        let length = full.headers().get(header::CONTENT_LENGTH).cloned();
        let tag = tag(full.headers());
        let bytes = full.into_body().collect().await.unwrap().to_bytes();
        if let Some(length) = &length {
            assert_eq!(
                length.to_str().unwrap(),
                bytes.len().to_string(),
                "{coding}"
            );
        }
        let revalidated = h2
            .send_request(get(Some(("if-none-match", tag.clone()))))
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{coding}");
        assert_eq!(
            revalidated.headers().get(header::CONTENT_LENGTH),
            length.as_ref(),
            "{coding}: the 200's length or none"
        );
        // A HEAD is the GET's head (RFC 9110 §9.3.2, §8.6): same tag and coding, the GET's
        // length or none, and no content.
        let mut head = get(None);
        *head.method_mut() = http::Method::HEAD;
        let head = h2.send_request(head).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{coding}");
        assert_eq!(self::tag(head.headers()), tag, "{coding}");
        assert_eq!(
            head.headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.as_bytes()),
            (coding == "gzip").then_some(b"gzip".as_slice()),
            "{coding}"
        );
        assert_eq!(
            head.headers().get(header::CONTENT_LENGTH),
            length.as_ref(),
            "{coding}"
        );
        assert!(head
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
    }
}

/// An HTTP/2 upload reset with `NO_ERROR` mid-body ends early without an error (hyper); its
/// `Content-Length` says it is short: the report is not replaced by the 40 bytes that came.
#[tokio::test]
async fn service_builder_keeps_its_report_when_an_upload_is_reset_mid_body() {
    let server = spawn_example("service_builder", &["--addr", "127.0.0.1:0"]);
    let before = call(server.addr, "GET", "/report", &[], "").await;
    let before = collect(before.into_body()).await;
    let status = common::upload_reset_mid_body(server.addr, "/report", "text/plain").await;
    assert!(
        status.is_none_or(|s| s == StatusCode::BAD_REQUEST),
        "{status:?}"
    );
    let after = call(server.addr, "GET", "/report", &[], "").await;
    assert_eq!(collect(after.into_body()).await, before, "nothing written");
}

#[tokio::test]
async fn service_builder_gives_each_coding_its_own_tag_and_lookups_validate_both() {
    let server = spawn_example("service_builder", &["--addr", "127.0.0.1:0"]);
    let a = server.addr;
    let gzip = call(a, "GET", "/report", &[("accept-encoding", "gzip")], "").await;
    assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
    let gzip_tag = tag(gzip.headers());
    let identity = call(a, "GET", "/report", &[("accept-encoding", "identity")], "").await;
    assert!(!identity.headers().contains_key(header::CONTENT_ENCODING));
    let identity_tag = tag(identity.headers());
    let identity_bytes = collect(identity.into_body()).await;
    assert!(identity_bytes.len() >= 1024, "a report of at least 1 KiB");
    assert_eq!(
        identity_tag,
        common::independent_tag(&identity_bytes),
        "the identity tag is the lookup's: SHA-256 of the stored bytes"
    );
    assert_ne!(gzip_tag, identity_tag, "each coding has its own strong tag");
    assert!(!gzip_tag.starts_with("W/") && !identity_tag.starts_with("W/"));

    // Each revalidates on its own; one coding's tag does not validate the other.
    for (coding, tag, expect) in [
        ("gzip", &gzip_tag, StatusCode::NOT_MODIFIED),
        ("identity", &identity_tag, StatusCode::NOT_MODIFIED),
        ("gzip", &identity_tag, StatusCode::OK),
        ("identity", &gzip_tag, StatusCode::OK),
    ] {
        let r = call(
            a,
            "GET",
            "/report",
            &[("accept-encoding", coding), ("if-none-match", tag)],
            "",
        )
        .await;
        assert_eq!(r.status(), expect, "{coding} with {tag}");
        if expect == StatusCode::NOT_MODIFIED {
            assert_eq!(
                &self::tag(r.headers()),
                tag,
                "a 304 names the tag it validated"
            );
            assert!(!r.headers().contains_key(header::CONTENT_ENCODING));
            assert!(r.headers()[header::VARY]
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding"));
        }
    }

    // A stale write gets 412 from either coding's tag format, and writes nothing.
    let stale = call(
        a,
        "PUT",
        "/report",
        &[("content-type", "text/plain"), ("if-match", "\"old;gzip\"")],
        "lost update",
    )
    .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    // The gzip client's current tag validates its write: the lookup sees the identity tag.
    let from_gzip = call(
        a,
        "PUT",
        "/report",
        &[("content-type", "text/plain"), ("if-match", &gzip_tag)],
        "second report",
    )
    .await;
    assert_eq!(from_gzip.status(), StatusCode::NO_CONTENT);
    let new_tag = tag(from_gzip.headers());
    assert_eq!(new_tag, common::independent_tag(b"second report"));
    // The identity tag of the old version is now stale; the new one validates.
    let stale = call(
        a,
        "PUT",
        "/report",
        &[("content-type", "text/plain"), ("if-match", &identity_tag)],
        "third",
    )
    .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let fresh = call(
        a,
        "PUT",
        "/report",
        &[("content-type", "text/plain"), ("if-match", &new_tag)],
        "third report",
    )
    .await;
    assert_eq!(fresh.status(), StatusCode::NO_CONTENT);
    let now = call(a, "GET", "/report", &[("accept-encoding", "identity")], "").await;
    assert_eq!(collect(now.into_body()).await, "third report");

    // The router decides first (RFC 9110 §13.2.1): what is 404 or 405 without preconditions
    // stays so with them, and nothing is written.
    for (method, path, expect) in [
        ("DELETE", "/report", StatusCode::METHOD_NOT_ALLOWED),
        ("POST", "/report", StatusCode::METHOD_NOT_ALLOWED),
        ("PUT", "/nope", StatusCode::NOT_FOUND),
        ("DELETE", "/nope", StatusCode::NOT_FOUND),
    ] {
        let bare = call(a, method, path, &[], "x").await;
        assert_eq!(bare.status(), expect, "{method} {path}");
        for condition in [("if-match", "\"x\""), ("if-none-match", "*")] {
            let r = call(a, method, path, &[condition], "x").await;
            assert_eq!(r.status(), expect, "{method} {path} with {condition:?}");
        }
    }
    // So does what the head alone refuses: a PUT that is not text/plain is 415 either way.
    for condition in [
        &[][..],
        &[("if-match", "\"x\"")][..],
        &[("if-none-match", "*")][..],
    ] {
        let mut headers = vec![("content-type", "text/html")];
        headers.extend_from_slice(condition);
        let r = call(a, "PUT", "/report", &headers, "<p>new</p>").await;
        assert_eq!(
            r.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{condition:?}"
        );
    }
    // Media types compare without regard to case; `text/plainx` is another type.
    let odd = [("content-type", "text/plainx")];
    let r = call(a, "PUT", "/report", &odd, "x").await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let cased = [("content-type", "Text/Plain; charset=utf-8")];
    let r = call(a, "PUT", "/report", &cased, "fourth report").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let now = call(a, "GET", "/report", &[("accept-encoding", "identity")], "").await;
    assert_eq!(collect(now.into_body()).await, "fourth report");
    // A partial PUT (`Content-Range`) is 400, with a stale condition too (RFC 9110 §14.5).
    for condition in [&[][..], &[("if-match", "\"x\"")][..]] {
        let mut headers = vec![
            ("content-type", "text/plain"),
            ("content-range", "bytes 0-1/9"),
        ];
        headers.extend_from_slice(condition);
        let r = call(a, "PUT", "/report", &headers, "ab").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{condition:?}");
    }
    let now = call(a, "GET", "/report", &[("accept-encoding", "identity")], "").await;
    assert_eq!(collect(now.into_body()).await, "fourth report");
}

/// The example's message types, for the client side.
#[path = "../examples/grpc.rs"]
#[allow(dead_code)]
mod grpc_example;

mod grpc {
    use super::*;
    use tonic::codegen::http::uri::PathAndQuery;

    use super::grpc_example::{GetItem, Item, UpdateItem, WatchItem};

    async fn client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        tonic::client::Grpc::new(channel)
    }

    async fn unary<Req: prost::Message + Send + Sync + 'static>(
        addr: SocketAddr,
        path: &'static str,
        msg: Req,
        metadata: &[(&'static str, &str)],
    ) -> Result<Item, tonic::Status> {
        let mut grpc = client(addr).await;
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(msg);
        for (k, v) in metadata {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        let codec = tonic_prost::ProstCodec::<Req, Item>::default();
        grpc.unary(req, PathAndQuery::from_static(path), codec)
            .await
            .map(|r| r.into_inner())
    }

    #[tokio::test]
    async fn unary_streaming_and_guarded_updates() {
        let server = spawn_example("grpc", &["--addr", "127.0.0.1:0"]);
        let a = server.addr;
        let item = unary(a, "/items.Items/Get", GetItem { id: "42".into() }, &[])
            .await
            .unwrap();
        assert_eq!(item.value, "the answer");
        let missing = unary(a, "/items.Items/Get", GetItem { id: "nope".into() }, &[])
            .await
            .unwrap_err();
        assert_eq!(
            missing.code(),
            tonic::Code::NotFound,
            "statuses in trailers pass through"
        );

        // A server stream passes through whole, ending with its grpc-status trailer.
        let mut grpc = client(a).await;
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<WatchItem, Item>::default();
        let response = grpc
            .server_streaming(
                tonic::Request::new(WatchItem {
                    id: "42".into(),
                    count: 5,
                }),
                PathAndQuery::from_static("/items.Items/Watch"),
                codec,
            )
            .await
            .unwrap();
        let mut stream = response.into_inner();
        let mut n = 0;
        while let Some(item) = stream.message().await.unwrap() {
            assert!(item.value.starts_with("the answer #"));
            n += 1;
        }
        assert_eq!(n, 5);
        assert!(
            stream.trailers().await.unwrap().is_some(),
            "trailers intact"
        );

        let update = |value: &str| UpdateItem {
            id: "42".into(),
            value: value.into(),
        };
        let stale = unary(
            a,
            "/items.Items/Update",
            update("lost"),
            &[("item-id", "42"), ("if-match", "\"stale\"")],
        )
        .await
        .unwrap_err();
        assert_eq!(
            stale.code(),
            tonic::Code::FailedPrecondition,
            "a gRPC status, not HTTP 412"
        );
        let current = unary(a, "/items.Items/Get", GetItem { id: "42".into() }, &[])
            .await
            .unwrap();
        assert_eq!(current.value, "the answer", "nothing written");
        let fresh = unary(
            a,
            "/items.Items/Update",
            update("new"),
            &[("item-id", "42"), ("if-match", &item.etag)],
        )
        .await
        .unwrap();
        assert_eq!(fresh.value, "new");
        let plain = unary(a, "/items.Items/Update", update("unconditional"), &[])
            .await
            .unwrap();
        assert_eq!(plain.value, "unconditional");

        // The checked item is the written item: a current tag of item 77 does not let a call
        // overwrite item 42.
        let other = UpdateItem {
            id: "77".into(),
            value: "seventy-seven".into(),
        };
        let other = unary(a, "/items.Items/Update", other, &[]).await.unwrap();
        let hijack = unary(
            a,
            "/items.Items/Update",
            update("hijack"),
            &[("item-id", "77"), ("if-match", &other.etag)],
        )
        .await
        .unwrap_err();
        assert_eq!(hijack.code(), tonic::Code::InvalidArgument);
        let current = unary(a, "/items.Items/Get", GetItem { id: "42".into() }, &[])
            .await
            .unwrap();
        assert_eq!(current.value, "unconditional", "nothing written");
    }

    #[test]
    fn raw_http2_view_of_a_rejection_is_trailers_only() {
        // The same rejection, seen as HTTP: 200, grpc-status 9, no body.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let server = spawn_example("grpc", &["--addr", "127.0.0.1:0"]);
            let mut sender = common::h2_client(server.addr).await;
            let req = Request::post(format!("http://{}/items.Items/Update", server.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("item-id", "42")
                .header("if-match", "\"stale\"")
                .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["grpc-status"], "9");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty());
        });
    }
}
