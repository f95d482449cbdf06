//! A guided conversation with the demo server: starts it in-process on a temporary SQLite
//! file, provisions a SCIM user and plays every kind of conditional request against it,
//! prints each exchange with what the layer did (its [`Outcome`]), and exits.
//!
//! ```sh
//! cargo run --example tour
//! ```
//!
//! The layer logs an [`Outcome`] for every response it touches, as a `tracing` event at
//! debug level (target `tower_conditional`). The tour talks to the server over HTTP, so it
//! collects those events with a small `tracing-subscriber` layer and prints each next to
//! the status it explains, e.g. `< 304 Not Modified   [outcome: NotModified]`. (In
//! process, `ConditionalLayer::outcome_extension(true)` puts it in the response extensions
//! instead.)
//!
//! [`Outcome`]: tower_conditional::Outcome

#[path = "server/app.rs"]
mod app;
#[path = "support/body_first.rs"]
mod body_first;
#[path = "server/db.rs"]
mod db;
#[path = "server/filter.rs"]
mod filter;
#[path = "server/patch.rs"]
mod patch;
#[path = "server/schema.rs"]
mod schema;
#[path = "server/scim.rs"]
mod scim;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The outcomes the layer logs, in order, as their `Debug` text (`NotModified`,
/// `Rejected(PreconditionFailed(IfMatch))`, …).
#[derive(Clone, Default)]
struct Outcomes(Arc<Mutex<Vec<String>>>);

impl Outcomes {
    /// Collects the layer's debug events from now on, from every thread (the server runs in
    /// this process).
    fn install() -> Self {
        let outcomes = Outcomes::default();
        let layer_events = tracing_subscriber::filter::Targets::new()
            .with_target("tower_conditional", tracing::Level::DEBUG);
        tracing_subscriber::registry()
            .with(outcomes.clone().with_filter(layer_events))
            .init();
        outcomes
    }

    /// The outcomes logged since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl<S: tracing::Subscriber> Layer<S> for Outcomes {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        /// The event's `outcome` field, if it has one.
        struct Find(Option<String>);
        impl tracing::field::Visit for Find {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "outcome" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut find = Find(None);
        event.record(&mut find);
        if let Some(outcome) = find.0 {
            self.0.lock().unwrap().push(outcome);
        }
    }
}

struct Client {
    addr: SocketAddr,
    outcomes: Outcomes,
}

impl Client {
    /// Sends one request on a fresh HTTP/1.1 connection, prints the exchange and the layer's
    /// outcome, checks the status.
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
        self.outcomes.take();
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
        // The layer logged its outcome before the response left it, so before it arrived.
        let outcome = match self.outcomes.take().as_slice() {
            [] => "none, the layer never saw the request".to_owned(),
            outcomes => outcomes.join(", "),
        };
        println!("< {}   [outcome: {outcome}]", parts.status);
        for name in [
            header::ETAG,
            header::CONTENT_TYPE,
            header::LOCATION,
            header::WWW_AUTHENTICATE,
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

const TOKEN: &str = "tour-token";
const AUTH: (&str, &str) = ("authorization", "Bearer tour-token");
const SCIM: (&str, &str) = ("content-type", "application/scim+json");

fn patch_display_name(name: &str) -> String {
    format!(
        r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{{"op":"replace","path":"displayName","value":"{name}"}}]}}"#
    )
}

/// Serves the demo on a fresh port; `strict` as with `--strict`.
async fn serve(db: db::Db, strict: bool) -> SocketAddr {
    let settings = app::Settings {
        token: TOKEN.into(),
        strict,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app::app(db, &settings)).await });
    addr
}

#[tokio::main]
async fn main() {
    let outcomes = Outcomes::install();
    let file = std::env::temp_dir().join(format!(
        "tower-conditional-tour-{}.sqlite",
        std::process::id()
    ));
    let db = db::Db::open(file.to_str().unwrap())
        .await
        .expect("open SQLite");
    let addr = serve(db.clone(), false).await;
    let strict = Client {
        addr: serve(db, true).await,
        outcomes: outcomes.clone(),
    };
    println!(
        "The demo server runs on http://{addr} (SQLite at {}), SCIM at {} with the bearer token {TOKEN:?}.",
        file.display(),
        scim::BASE_PATH
    );
    let c = Client { addr, outcomes };
    use StatusCode as S;

    c.say(
        "Discover what the service provider supports: the layer hashes the document for a strong ETag",
        "GET",
        "/scim/v2/ServiceProviderConfig",
        &[AUTH],
        "",
        S::OK,
    )
    .await;

    let created = c
        .say(
            "Provision a user (SCIM POST): 201, its Location, and its version as ETag",
            "POST",
            "/scim/v2/Users",
            &[AUTH, SCIM],
            r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada"}"#,
            S::CREATED,
        )
        .await;
    let location = created.headers()[header::LOCATION].to_str().unwrap();
    let path = &location[location.find(scim::BASE_PATH).expect("a SCIM URL")..];
    let first = c
        .say(
            "Read it: the ETag is meta.version, a weak tag the store computed when it wrote",
            "GET",
            path,
            &[AUTH],
            "",
            S::OK,
        )
        .await;
    let v1 = etag(&first);
    let doc: serde_json::Value = serde_json::from_slice(first.body()).unwrap();
    assert_eq!(doc["meta"]["version"], v1, "meta.version is the ETag");
    c.say(
        "Revalidate: nothing changed, so no body",
        "GET",
        path,
        &[AUTH, ("if-none-match", &v1)],
        "",
        S::NOT_MODIFIED,
    )
    .await;
    c.say(
        "HEAD: the same ETag as GET",
        "HEAD",
        path,
        &[AUTH],
        "",
        S::OK,
    )
    .await;
    let updated = c
        .say(
            "Modify it with the version just read (PATCH, If-Match): accepted, new ETag",
            "PATCH",
            path,
            &[AUTH, SCIM, ("if-match", &v1)],
            &patch_display_name("Ada Lovelace"),
            S::OK,
        )
        .await;
    let v2 = etag(&updated);
    c.say(
        "Another client modifies it with the version it read earlier: a lost update, refused before any write",
        "PATCH",
        path,
        &[AUTH, SCIM, ("if-match", &v1)],
        &patch_display_name("overwritten"),
        S::PRECONDITION_FAILED,
    )
    .await;
    c.say(
        "Revalidate with the old ETag: the new representation comes back",
        "GET",
        path,
        &[AUTH, ("if-none-match", &v1)],
        "",
        S::OK,
    )
    .await;
    let unconditional = c
        .say(
            "In SCIM, If-Match is optional: a PATCH without it applies to the current version",
            "PATCH",
            path,
            &[AUTH, SCIM],
            &patch_display_name("Countess of Lovelace"),
            S::OK,
        )
        .await;
    let v3 = etag(&unconditional);
    assert_ne!(v2, v3);
    strict
        .say(
            "A server started with --strict requires it",
            "PATCH",
            path,
            &[AUTH, SCIM],
            &patch_display_name("unversioned"),
            S::PRECONDITION_REQUIRED,
        )
        .await;
    c.say(
        "Without the token: 401, and nothing about the resource (no ETag, no 304)",
        "GET",
        path,
        &[("if-none-match", &v3)],
        "",
        S::UNAUTHORIZED,
    )
    .await;
    c.say(
        "Create-only PUT (If-None-Match: *) on the plain /Items API",
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
        "Deprovision the user with its current version",
        "DELETE",
        path,
        &[AUTH, ("if-match", &v3)],
        "",
        S::NO_CONTENT,
    )
    .await;
    c.say(
        "Delete it again: a 404 stays a 404",
        "DELETE",
        path,
        &[AUTH, ("if-match", &v3)],
        "",
        S::NOT_FOUND,
    )
    .await;

    let _ = std::fs::remove_file(&file);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    println!("\nThe tour is over: every answer was the one RFC 9110 and RFC 7644 ask for.");
}
