//! A guided conversation with the demo server: starts it in-process on a temporary SQLite
//! file, plays every kind of conditional request, prints each exchange, and exits.
//!
//! ```sh
//! cargo run --example tour
//! ```

#[path = "server/app.rs"]
mod app;
#[path = "server/db.rs"]
mod db;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};

struct Client {
    addr: SocketAddr,
}

impl Client {
    /// Sends one request on a fresh HTTP/1.1 connection, prints the exchange, checks the status.
    async fn say(
        &self,
        what: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        expect: StatusCode,
    ) -> http::Response<Bytes> {
        println!("\n── {what}");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        print!("> {method} {path}");
        for (k, v) in headers {
            req = req.header(*k, *v);
            print!("\n> {k}: {v}");
        }
        if !body.is_empty() {
            print!("\n> {body}");
        }
        println!();
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let response = sender
            .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        println!("< {}", parts.status);
        for name in [
            header::ETAG,
            header::CONTENT_LENGTH,
            header::LAST_MODIFIED,
            header::LOCATION,
        ] {
            if let Some(v) = parts.headers.get(&name) {
                println!("< {name}: {}", v.to_str().unwrap_or("?"));
            }
        }
        if !body.is_empty() {
            println!("< {}", String::from_utf8_lossy(&body));
        }
        assert_eq!(parts.status, expect, "{what}");
        http::Response::from_parts(parts, body)
    }
}

fn etag(r: &http::Response<Bytes>) -> String {
    r.headers()[header::ETAG].to_str().unwrap().to_owned()
}

#[tokio::main]
async fn main() {
    let file = std::env::temp_dir().join(format!(
        "tower-conditional-tour-{}.sqlite",
        std::process::id()
    ));
    let db = db::Db::open(file.to_str().unwrap())
        .await
        .expect("open SQLite");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app::app(db)).await });
    println!(
        "The demo server runs on http://{addr} (SQLite at {}).",
        file.display()
    );
    let c = Client { addr };
    use StatusCode as S;

    let created = c
        .say(
            "Create a user (SCIM POST)",
            "POST",
            "/Users",
            &[("content-type", "application/scim+json")],
            r#"{"userName":"ada"}"#,
            S::CREATED,
        )
        .await;
    let path = created.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let first = c
        .say(
            "Read it: the layer's strong ETag comes with it",
            "GET",
            &path,
            &[],
            "",
            S::OK,
        )
        .await;
    let v1 = etag(&first);
    c.say(
        "Revalidate: nothing changed, so no body",
        "GET",
        &path,
        &[("if-none-match", &v1)],
        "",
        S::NOT_MODIFIED,
    )
    .await;
    c.say(
        "HEAD: the same ETag and length as GET",
        "HEAD",
        &path,
        &[],
        "",
        S::OK,
    )
    .await;
    c.say(
        "Write without a precondition: this route requires one",
        "PUT",
        &path,
        &[],
        r#"{"userName":"ada"}"#,
        S::PRECONDITION_REQUIRED,
    )
    .await;
    let updated = c
        .say(
            "Write with the current ETag: accepted, new ETag",
            "PUT",
            &path,
            &[("if-match", &v1)],
            r#"{"userName":"ada.lovelace"}"#,
            S::OK,
        )
        .await;
    let v2 = etag(&updated);
    c.say(
        "Another client writes with the ETag it read earlier: a lost update, refused",
        "PUT",
        &path,
        &[("if-match", &v1)],
        r#"{"userName":"overwritten"}"#,
        S::PRECONDITION_FAILED,
    )
    .await;
    c.say(
        "Revalidate with the old ETag: the new representation comes back",
        "GET",
        &path,
        &[("if-none-match", &v1)],
        "",
        S::OK,
    )
    .await;
    c.say(
        "Create-only PUT (If-None-Match: *)",
        "PUT",
        "/Items/motd",
        &[("if-none-match", "*"), ("content-type", "text/plain")],
        "hello",
        S::CREATED,
    )
    .await;
    c.say(
        "The same create-only PUT again: it exists now",
        "PUT",
        "/Items/motd",
        &[("if-none-match", "*")],
        "again",
        S::PRECONDITION_FAILED,
    )
    .await;
    c.say(
        "Delete with the current ETag",
        "DELETE",
        &path,
        &[("if-match", &v2)],
        "",
        S::NO_CONTENT,
    )
    .await;
    c.say(
        "Delete it again: a 404 stays a 404",
        "DELETE",
        &path,
        &[("if-match", &v2)],
        "",
        S::NOT_FOUND,
    )
    .await;

    let _ = std::fs::remove_file(&file);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    println!("\nThe tour is over: every answer was the one RFC 9110 asks for.");
}
