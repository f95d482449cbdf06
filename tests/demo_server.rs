//! The `server` and `tour` examples, driven by real clients nobody here wrote: curl, nginx as
//! a revalidating cache, headless Chromium, and PostgreSQL shared by two server processes;
//! and the SCIM 2.0 service provider (RFC 7643, RFC 7644) over real HTTP, on SQLite and on
//! PostgreSQL.
//!
//! Tests that need a tool the machine lacks print why they skip; `.ci/run` installs them all.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{call, collected, spawn_example, tag, Running};
use http::{header, StatusCode};

fn temp_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tower-conditional-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn have(tool: &str, version_flag: &str) -> bool {
    Command::new(tool)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Says why a test did not run, on stderr directly so the test harness does not swallow it.
fn skip(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

#[test]
fn the_tour_plays_every_exchange_and_exits_zero() {
    let out = Command::new(common::example_binary("tour"))
        .output()
        .expect("tour is built by cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tour failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "< 201 Created",
        "< 304 Not Modified",
        "< 412 Precondition Failed",
        "< 428 Precondition Required",
        "< 401 Unauthorized",
        "< 204 No Content",
        "urn:ietf:params:scim:api:messages:2.0:Error",
    ] {
        assert!(stdout.contains(line), "the tour shows {line}:\n{stdout}");
    }
    // Each exchange carries the layer's outcome, collected from its debug events.
    for (status, outcome) in [
        ("< 304 Not Modified", "[outcome: NotModified]"),
        (
            "< 412 Precondition Failed",
            "[outcome: Rejected(PreconditionFailed(",
        ),
        ("< 200 OK", "[outcome: Tagged]"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(status) && l.contains(outcome)),
            "the tour shows {outcome} on a {status} line:\n{stdout}"
        );
    }
}

/// 32 writers, one If-Match, spread over `servers`: exactly one wins, per round.
async fn race(servers: &[SocketAddr], rounds: usize) {
    let first = servers[0];
    let (status, headers, _) = collected(
        call(
            first,
            "PUT",
            "/Items/race",
            &[("content-type", "text/plain")],
            "start",
        )
        .await,
    )
    .await;
    assert!(status.is_success());
    let mut current = tag(&headers);
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for writer in 0..32 {
            let addr = servers[writer % servers.len()];
            let if_match = current.clone();
            tasks.push(tokio::spawn(async move {
                let body = format!("round {round} writer {writer}");
                let (status, headers, _) = collected(
                    call(
                        addr,
                        "PUT",
                        "/Items/race",
                        &[("if-match", &if_match)],
                        &body,
                    )
                    .await,
                )
                .await;
                (status, headers, body)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (status, headers, body) = task.await.unwrap();
            match status {
                StatusCode::OK => winners.push((body, tag(&headers))),
                StatusCode::PRECONDITION_FAILED => {}
                other => panic!("round {round}: unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        let (body, new_tag) = winners.pop().unwrap();
        let (status, headers, stored) =
            collected(call(first, "GET", "/Items/race", &[], "").await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            stored, body,
            "round {round}: the stored value is the winner's, nothing lost"
        );
        assert_eq!(tag(&headers), new_tag);
        current = new_tag;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes_racing_writers_one_winner_per_round() {
    let file = temp_path("race.sqlite");
    let a = spawn_example(
        "server",
        &["--addr", "127.0.0.1:0", "--database-url", &file],
    );
    let b = spawn_example(
        "server",
        &["--addr", "127.0.0.1:0", "--database-url", &file],
    );
    race(&[a.addr, b.addr], 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_racing_writers_one_winner_per_round() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        skip(
            "postgres_two_processes_racing_writers_one_winner_per_round",
            "DATABASE_URL is not set (.ci/run starts a PostgreSQL cluster and sets it)",
        );
        return;
    };
    let a = spawn_example("server", &["--addr", "127.0.0.1:0", "--database-url", &url]);
    let b = spawn_example("server", &["--addr", "127.0.0.1:0", "--database-url", &url]);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "DELETE FROM documents WHERE kind = 'Item' AND id = 'race'",
            &[],
        )
        .await
        .unwrap();
    race(&[a.addr, b.addr], 20).await;
    // The version counts the writes: the create, then exactly one win per round.
    let row = client
        .query_one(
            "SELECT version FROM documents WHERE kind = 'Item' AND id = 'race'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1 + 20);
    // Both processes see one store: a write through one is read through the other.
    let (status, headers, _) =
        collected(call(a.addr, "PUT", "/Items/shared", &[], "from a").await).await;
    assert!(status.is_success());
    let (_, _, body) = collected(call(b.addr, "GET", "/Items/shared", &[], "").await).await;
    assert_eq!(body, "from a");
    let (status, _, _) = collected(
        call(
            b.addr,
            "PUT",
            "/Items/shared",
            &[("if-match", "\"stale\"")],
            "from b",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, _) = collected(
        call(
            b.addr,
            "GET",
            "/Items/shared",
            &[("if-none-match", &tag(&headers))],
            "",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

fn start_sqlite_server(name: &str) -> Running {
    spawn_example(
        "server",
        &["--addr", "127.0.0.1:0", "--database-url", &temp_path(name)],
    )
}

/// `/Items` serializes conditional writes, after reading their bodies: writers stalled
/// mid-body hold nothing, and get 408 at the request timeout.
#[tokio::test]
async fn stalled_conditional_writes_do_not_hold_their_item() {
    let server = start_sqlite_server("stall.sqlite");
    common::stalled_writes_hold_nothing(server.addr, "/Items/stall").await;
}

#[tokio::test]
async fn curl_revalidates_and_gets_412_for_a_stale_put() {
    if !have("curl", "--version") {
        return skip(
            "curl_revalidates_and_gets_412_for_a_stale_put",
            "curl is not installed",
        );
    }
    let server = start_sqlite_server("curl.sqlite");
    let base = format!("http://{}", server.addr);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created = curl(&[
        "-X",
        "PUT",
        "-H",
        "content-type: text/plain",
        "--data",
        "hello curl",
        &format!("{base}/Items/c"),
    ]);
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let etag = created
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag header")
        .trim()
        .to_owned();
    let revalidated = curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &format!("{base}/Items/c"),
    ]);
    assert!(revalidated.starts_with("HTTP/1.1 304"), "{revalidated}");
    let stale = curl(&[
        "-X",
        "PUT",
        "-H",
        "If-Match: \"stale\"",
        "--data",
        "lost",
        &format!("{base}/Items/c"),
    ]);
    assert!(stale.starts_with("HTTP/1.1 412"), "{stale}");
    let body = curl(&[&format!("{base}/Items/c")]);
    assert!(body.ends_with("hello curl"), "nothing written: {body}");
}

#[tokio::test]
async fn nginx_cache_revalidates_with_us_and_serves_the_full_body() {
    if !have("nginx", "-v") {
        return skip(
            "nginx_cache_revalidates_with_us_and_serves_the_full_body",
            "nginx is not installed (.ci/run installs Debian's nginx)",
        );
    }
    let server = start_sqlite_server("nginx.sqlite");
    let (status, _, _) = collected(
        call(
            server.addr,
            "PUT",
            "/Items/cached",
            &[("content-type", "text/plain")],
            "cache me",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let dir = temp_path("nginx");
    std::fs::create_dir_all(format!("{dir}/cache")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  proxy_cache_path {dir}/cache keys_zone=demo:1m;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{upstream};
      proxy_cache demo;
      proxy_cache_revalidate on;
      proxy_cache_valid 200 1s;
      proxy_ignore_headers Cache-Control Expires;
      add_header X-Cache-Status $upstream_cache_status always;
    }}
  }}
}}
"#,
        upstream = server.addr
    );
    std::fs::write(format!("{dir}/nginx.conf"), conf).unwrap();
    let mut nginx = Command::new("nginx")
        .args(["-p", &dir, "-c", &format!("{dir}/nginx.conf")])
        .spawn()
        .unwrap();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(proxy).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, headers, body) =
        collected(call(proxy, "GET", "/Items/cached", &[], "").await).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"cache me"[..]));
    assert_eq!(headers["x-cache-status"], "MISS");
    let (_, headers, _) = collected(call(proxy, "GET", "/Items/cached", &[], "").await).await;
    assert_eq!(headers["x-cache-status"], "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await; // the entry expires
    let (status, headers, body) =
        collected(call(proxy, "GET", "/Items/cached", &[], "").await).await;
    let _ = nginx.kill();
    let _ = nginx.wait();
    assert_eq!(
        headers["x-cache-status"], "REVALIDATED",
        "nginx revalidated and got 304 from us"
    );
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"cache me"[..]),
        "and served its client the full body"
    );
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| have(c, "--version"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_revalidates_a_no_cache_resource_and_we_answer_304() {
    let Some(browser) = chromium() else {
        return skip(
            "chromium_revalidates_a_no_cache_resource_and_we_answer_304",
            "no Chromium (.ci/run installs Debian's chromium)",
        );
    };
    let server = start_sqlite_server("chromium.sqlite");
    let page =
        "<!doctype html><title>t</title><p id=ok>loaded</p><script src=\"/Items/app.js\"></script>";
    collected(
        call(
            server.addr,
            "PUT",
            "/Items/page",
            &[("content-type", "text/html")],
            page,
        )
        .await,
    )
    .await;
    collected(
        call(
            server.addr,
            "PUT",
            "/Items/app.js",
            &[("content-type", "text/javascript")],
            "document.title = 'scripted';",
        )
        .await,
    )
    .await;

    // Watch what the server answers: a tiny TCP relay in front of it records status lines.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = statuses.clone();
    let upstream = server.addr;
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = relay.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let Ok(n) = sr.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for line in text.lines().filter(|l| l.starts_with("HTTP/1.1 ")) {
                        seen.lock().unwrap().push(line.to_owned());
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });

    let profile = temp_path("chromium-profile");
    let load = move || {
        let out = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={profile}"),
                "--virtual-time-budget=2000",
                "--dump-dom",
                &format!("http://{relay_addr}/Items/page"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = tokio::task::spawn_blocking(load.clone()).await.unwrap();
    assert!(first.contains("loaded"), "the page rendered: {first}");
    let before = statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.contains(" 304 "))
        .count();
    let second = tokio::task::spawn_blocking(load).await.unwrap();
    assert!(
        second.contains("loaded") && second.contains("scripted"),
        "the second load still renders: {second}"
    );
    let all = statuses.lock().unwrap().clone();
    let after = all.iter().filter(|s| s.contains(" 304 ")).count();
    assert!(
        after > before,
        "the second load revalidated and got 304s: {all:?}"
    );
    let unique: HashSet<_> = all.iter().collect();
    println!("chromium saw: {unique:?}");
}

// ---- the SCIM 2.0 service provider ---------------------------------------------------------

const TOKEN: &str = "test-token";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Starts the demo with the test token on `database` (a SQLite path or a PostgreSQL URL).
fn start_scim(database: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--database-url",
        database,
    ];
    args.extend_from_slice(extra);
    spawn_example("server", &args)
}

/// A suffix no earlier run used, for names in a shared (PostgreSQL) store.
fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{}-{nanos}", std::process::id())
}

/// One SCIM answer.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    json: serde_json::Value,
}

impl Reply {
    fn etag(&self) -> String {
        tag(&self.headers)
    }

    /// Asserts a SCIM error body (RFC 7644 §3.12) with this status and `scimType`.
    fn assert_error(&self, status: StatusCode, scim_type: Option<&str>) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.json["schemas"][0], ERROR_SCHEMA, "{self:?}");
        assert_eq!(
            self.json["status"],
            status.as_str(),
            "status is a string: {self:?}"
        );
        assert_eq!(
            self.json.get("scimType").and_then(|t| t.as_str()),
            scim_type,
            "{self:?}"
        );
        assert!(self.json["detail"].is_string(), "{self:?}");
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/scim+json",
            "{self:?}"
        );
        assert!(
            status == StatusCode::NOT_MODIFIED || !self.headers.contains_key(header::ETAG),
            "an error carries no ETag: {self:?}"
        );
    }

    /// Asserts a resource response: `meta.version` is the `ETag`, `meta.location` the
    /// `Location`, and the meta fields RFC 7643 §3.1 lists are there.
    fn assert_resource(&self, status: StatusCode, resource_type: &str) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/scim+json");
        let meta = &self.json["meta"];
        let etag = self.etag();
        assert!(etag.starts_with("W/\""), "a weak version tag: {etag}");
        assert_eq!(meta["version"], etag, "meta.version is the ETag: {self:?}");
        assert_eq!(meta["resourceType"], resource_type);
        let id = self.json["id"].as_str().expect("an id").to_owned();
        let location = meta["location"].as_str().unwrap();
        assert!(
            location.ends_with(&format!("/scim/v2/{resource_type}s/{id}")),
            "{location}"
        );
        assert_eq!(self.headers[header::LOCATION], location);
        for field in ["created", "lastModified"] {
            let t = meta[field].as_str().unwrap();
            assert!(
                t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
                "{field} is an xsd:dateTime: {t}"
            );
        }
        id
    }
}

/// A SCIM client: every request carries the bearer token (unless it sets `authorization`
/// itself), JSON bodies are `application/scim+json`.
struct Scim {
    addr: SocketAddr,
}

impl Scim {
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            all.push(("authorization", &auth));
        }
        all.retain(|(_, v)| !v.is_empty());
        if !body.is_empty() {
            all.push(("content-type", "application/scim+json"));
        }
        let path = format!("/scim/v2{path}");
        let (status, headers, bytes) =
            collected(call(self.addr, method, &path, &all, body).await).await;
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {path}: {status} with a body that is not JSON ({e}): {bytes:?}")
            })
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], "").await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        self.call("POST", path, &[], &body.to_string()).await
    }

    async fn patch(&self, path: &str, if_match: &str, ops: serde_json::Value) -> Reply {
        let body = serde_json::json!({ "schemas": [PATCH_OP], "Operations": ops });
        self.call("PATCH", path, &[("if-match", if_match)], &body.to_string())
            .await
    }
}

/// The resources of a ListResponse, checked for its shape.
fn resources(reply: &Reply) -> Vec<serde_json::Value> {
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json["schemas"][0], LIST_SCHEMA);
    let list = reply.json["Resources"].as_array().unwrap().clone();
    assert_eq!(reply.json["itemsPerPage"], list.len());
    list
}

#[tokio::test]
async fn scim_discovery_endpoints_advertise_etag_patch_and_filter() {
    let server = start_scim(&temp_path("scim-discovery.sqlite"), &[]);
    let scim = Scim { addr: server.addr };

    let config = scim.get("/ServiceProviderConfig").await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(
        config.headers[header::CONTENT_TYPE],
        "application/scim+json"
    );
    let c = &config.json;
    assert_eq!(
        c["schemas"][0],
        "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
    );
    for (feature, supported) in [
        ("etag", true),
        ("patch", true),
        ("filter", true),
        ("bulk", false),
        ("sort", false),
        ("changePassword", false),
    ] {
        assert_eq!(c[feature]["supported"], supported, "{feature}");
    }
    assert!(c["filter"]["maxResults"].as_u64().unwrap() > 0);
    assert_eq!(c["authenticationSchemes"][0]["type"], "oauthbearertoken");
    // Discovery documents are hashed by the layer: a strong tag, and 304 on revalidation.
    let strong = config.etag();
    assert!(strong.starts_with('"'), "{strong}");
    let again = scim
        .call(
            "GET",
            "/ServiceProviderConfig",
            &[("if-none-match", &strong)],
            "",
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    let schemas = resources(&scim.get("/Schemas").await);
    let ids: Vec<&str> = schemas.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&USER_SCHEMA) && ids.contains(&GROUP_SCHEMA),
        "{ids:?}"
    );
    let user = scim.get(&format!("/Schemas/{USER_SCHEMA}")).await;
    assert_eq!(user.status, StatusCode::OK);
    let user_name = user.json["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "userName")
        .expect("userName is described")
        .clone();
    assert_eq!(user_name["required"], true);
    assert_eq!(user_name["caseExact"], false);
    assert_eq!(user_name["uniqueness"], "server");

    let types = resources(&scim.get("/ResourceTypes").await);
    let endpoints: Vec<&str> = types
        .iter()
        .map(|t| t["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints, ["/Users", "/Groups"]);
    let group = scim.get("/ResourceTypes/Group").await;
    assert_eq!(group.json["schema"], GROUP_SCHEMA);
    assert_eq!(group.json["meta"]["resourceType"], "ResourceType");

    scim.get("/Schemas/urn:nope")
        .await
        .assert_error(StatusCode::NOT_FOUND, None);
    scim.get("/Bulk")
        .await
        .assert_error(StatusCode::NOT_IMPLEMENTED, None);
    scim.get("/Nothing")
        .await
        .assert_error(StatusCode::NOT_FOUND, None);
}

/// Create, read, replace, modify (PatchOp with and without `path`), delete a User; the
/// errors RFC 7644 §3.12 names along the way.
async fn users_lifecycle(scim: &Scim) {
    let name = unique("ada");
    let created = scim
        .post(
            "/Users",
            serde_json::json!({
                "schemas": [USER_SCHEMA],
                "userName": name,
                "externalId": format!("ext-{name}"),
                "name": { "givenName": "Ada", "familyName": "Lovelace" },
                "emails": [{ "value": "ada@example.com", "type": "work", "primary": true }],
                "password": "never stored",
                "id": "chosen-by-the-client",
            }),
        )
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    assert_ne!(id, "chosen-by-the-client", "id is assigned by the server");
    assert!(
        created.json.get("password").is_none(),
        "password is never returned"
    );
    let path = format!("/Users/{id}");

    // Read: the same version, the same document.
    let read = scim.get(&path).await;
    read.assert_resource(StatusCode::OK, "User");
    assert_eq!(read.etag(), created.etag());
    assert_eq!(read.json["name"]["givenName"], "Ada");
    // Last-Modified and meta.lastModified name the same second.
    if let Ok(out) = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-d"])
        .arg(format!(
            "@{}",
            httpdate::parse_http_date(read.headers[header::LAST_MODIFIED].to_str().unwrap())
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        ))
        .output()
    {
        let expected = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() {
            assert_eq!(read.json["meta"]["lastModified"], expected);
        }
    }

    // A duplicate userName, compared case-insensitively: 409 uniqueness.
    scim.post(
        "/Users",
        serde_json::json!({ "userName": name.to_uppercase() }),
    )
    .await
    .assert_error(StatusCode::CONFLICT, Some("uniqueness"));
    // Bad requests.
    scim.call("POST", "/Users", &[], "{not json")
        .await
        .assert_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"));
    scim.post(
        "/Users",
        serde_json::json!({ "displayName": "no userName" }),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, Some("invalidValue"));
    scim.get("/Users/no-such-user")
        .await
        .assert_error(StatusCode::NOT_FOUND, None);

    // Replace (PUT): attributes not sent are gone; created stays, the version moves.
    let replaced = scim
        .call(
            "PUT",
            &path,
            &[("if-match", &read.etag())],
            &serde_json::json!({
                "schemas": [USER_SCHEMA],
                "userName": name,
                "displayName": "Ada Lovelace",
                "active": true,
            })
            .to_string(),
        )
        .await;
    replaced.assert_resource(StatusCode::OK, "User");
    assert_ne!(replaced.etag(), read.etag());
    assert!(replaced.json.get("name").is_none() && replaced.json.get("emails").is_none());
    assert_eq!(
        replaced.json["meta"]["created"],
        created.json["meta"]["created"]
    );

    // Modify (PATCH): add, replace, remove, with and without path, filters included.
    let patched = scim
        .patch(
            &path,
            &replaced.etag(),
            serde_json::json!([
                { "op": "add", "path": "emails", "value": [{ "value": "ada@work.example", "type": "work" }] },
                { "op": "add", "path": "emails[type eq \"home\"].value", "value": "ada@home.example" },
                { "op": "add", "value": { "nickName": "Ada", "name": { "givenName": "Augusta" } } },
                { "op": "replace", "path": "name.familyName", "value": "King" },
                { "op": "Replace", "value": { "displayName": "Augusta Ada King", "active": "False" } },
                { "op": "remove", "path": "emails[type eq \"work\"]" },
                { "op": "remove", "path": "nickName" },
            ]),
        )
        .await;
    patched.assert_resource(StatusCode::OK, "User");
    let user = &patched.json;
    assert_eq!(user["displayName"], "Augusta Ada King");
    assert_eq!(user["active"], false);
    assert_eq!(
        user["name"],
        serde_json::json!({ "givenName": "Augusta", "familyName": "King" })
    );
    assert_eq!(
        user["emails"],
        serde_json::json!([{ "type": "home", "value": "ada@home.example" }])
    );
    assert!(user.get("nickName").is_none());
    assert_eq!(scim.get(&path).await.etag(), patched.etag());

    // PATCH errors.
    let v = patched.etag();
    for (ops, scim_type) in [
        (serde_json::json!([{ "op": "remove" }]), "noTarget"),
        (
            serde_json::json!([{ "op": "jump", "path": "x" }]),
            "invalidSyntax",
        ),
        (
            serde_json::json!([{ "op": "add", "path": "emails[type eq", "value": 1 }]),
            "invalidPath",
        ),
        (
            serde_json::json!([{ "op": "replace", "path": "id", "value": "x" }]),
            "mutability",
        ),
        (
            serde_json::json!([{ "op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x" }]),
            "noTarget",
        ),
        (
            serde_json::json!([{ "op": "remove", "path": "userName" }]),
            "invalidValue",
        ),
    ] {
        scim.patch(&path, &v, ops.clone())
            .await
            .assert_error(StatusCode::BAD_REQUEST, Some(scim_type));
    }
    let not_patch_op = scim
        .call("PATCH", &path, &[], r#"{"displayName":"merge patch"}"#)
        .await;
    not_patch_op.assert_error(StatusCode::BAD_REQUEST, Some("invalidSyntax"));
    assert_eq!(
        scim.get(&path).await.etag(),
        v,
        "failed PATCHes wrote nothing"
    );

    // Renaming onto a taken userName: 409.
    let other = unique("grace");
    scim.post("/Users", serde_json::json!({ "userName": other }))
        .await
        .assert_resource(StatusCode::CREATED, "User");
    scim.patch(
        &path,
        "",
        serde_json::json!([{ "op": "replace", "path": "userName", "value": other }]),
    )
    .await
    .assert_error(StatusCode::CONFLICT, Some("uniqueness"));

    // Delete: 204, then 404 for every method.
    let deleted = scim.call("DELETE", &path, &[("if-match", &v)], "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.json.is_null());
    scim.get(&path)
        .await
        .assert_error(StatusCode::NOT_FOUND, None);
    scim.call("DELETE", &path, &[], "")
        .await
        .assert_error(StatusCode::NOT_FOUND, None);
    scim.patch(
        &path,
        &v,
        serde_json::json!([{ "op": "add", "path": "title", "value": "x" }]),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, None);
}

/// A Group: create with a member, add members, remove one by filter and one by value,
/// rename, delete.
async fn groups_lifecycle(scim: &Scim) {
    let mut ids = Vec::new();
    for label in ["m1", "m2", "m3"] {
        let user = scim
            .post("/Users", serde_json::json!({ "userName": unique(label) }))
            .await;
        ids.push(user.assert_resource(StatusCode::CREATED, "User"));
    }
    let name = unique("admins");
    let created = scim
        .post(
            "/Groups",
            serde_json::json!({
                "schemas": [GROUP_SCHEMA],
                "displayName": name,
                "members": [{ "value": ids[0], "type": "User" }],
            }),
        )
        .await;
    let gid = created.assert_resource(StatusCode::CREATED, "Group");
    let path = format!("/Groups/{gid}");
    let members = |r: &Reply| -> Vec<String> {
        r.json["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["value"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(members(&created), [ids[0].clone()]);

    let added = scim
        .patch(
            &path,
            &created.etag(),
            serde_json::json!([{ "op": "add", "path": "members", "value": [
                { "value": ids[1] }, { "value": ids[2] }, { "value": ids[0] }
            ] }]),
        )
        .await;
    added.assert_resource(StatusCode::OK, "Group");
    assert_eq!(members(&added), ids, "added once each, in order");

    let removed = scim
        .patch(
            &path,
            &added.etag(),
            serde_json::json!([
                { "op": "remove", "path": format!("members[value eq \"{}\"]", ids[0]) },
                { "op": "remove", "path": "members", "value": [{ "value": ids[2] }] },
                { "op": "replace", "path": "displayName", "value": format!("{name}-renamed") },
            ]),
        )
        .await;
    removed.assert_resource(StatusCode::OK, "Group");
    assert_eq!(members(&removed), [ids[1].clone()]);
    assert_eq!(removed.json["displayName"], format!("{name}-renamed"));

    // excludedAttributes, as provisioning clients ask for groups.
    let listed = scim
        .get(&format!(
            "/Groups?filter=displayName%20eq%20%22{}-RENAMED%22&excludedAttributes=members",
            name.to_uppercase()
        ))
        .await;
    let found = resources(&listed);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], gid.as_str());
    assert!(found[0].get("members").is_none());
    assert_eq!(found[0]["meta"]["version"], removed.etag());

    scim.post("/Groups", serde_json::json!({ "members": [] }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, Some("invalidValue"));
    let deleted = scim
        .call("DELETE", &path, &[("if-match", &removed.etag())], "")
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    scim.get(&path)
        .await
        .assert_error(StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn scim_users_and_groups_create_get_replace_patch_delete_on_sqlite() {
    let server = start_scim(&temp_path("scim-lifecycle.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    users_lifecycle(&scim).await;
    groups_lifecycle(&scim).await;
}

#[tokio::test]
async fn scim_users_and_groups_create_get_replace_patch_delete_on_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        skip(
            "scim_users_and_groups_create_get_replace_patch_delete_on_postgres",
            "DATABASE_URL is not set (.ci/run starts a PostgreSQL cluster and sets it)",
        );
        return;
    };
    let server = start_scim(&url, &[]);
    let scim = Scim { addr: server.addr };
    users_lifecycle(&scim).await;
    groups_lifecycle(&scim).await;
}

#[tokio::test]
async fn scim_filter_and_pagination() {
    let server = start_scim(&temp_path("scim-filter.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    let team = unique("team");
    for i in 1..=5 {
        scim.post(
            "/Users",
            serde_json::json!({
                "userName": format!("user{i}@{team}"),
                "displayName": format!("User {i}"),
                "externalId": format!("EXT-{i}"),
                "title": team,
                "active": i % 2 == 1,
                "emails": [{ "value": format!("u{i}@example.com"), "type": if i == 1 { "home" } else { "work" } }],
            }),
        )
        .await
        .assert_resource(StatusCode::CREATED, "User");
    }
    let query = |filter: &str, rest: &str| {
        let mut encoded = String::new();
        for b in filter.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~@".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        format!("/Users?filter={encoded}{rest}")
    };
    let names = |reply: &Reply| -> Vec<String> {
        resources(reply)
            .iter()
            .map(|r| r["userName"].as_str().unwrap().to_owned())
            .collect()
    };
    let in_team = format!("title eq \"{team}\"");
    for (filter, expected) in [
        (
            format!("userName eq \"USER3@{}\"", team.to_uppercase()),
            vec![3],
        ),
        (format!("displayName eq \"user 2\" and {in_team}"), vec![2]),
        (format!("externalId eq \"EXT-4\" and {in_team}"), vec![4]),
        // externalId is caseExact (RFC 7643 §3.1).
        (format!("externalId eq \"ext-4\" and {in_team}"), vec![]),
        (format!("{in_team} and active eq true"), vec![1, 3, 5]),
        (
            format!("{in_team} and (displayName eq \"User 1\" or userName sw \"user5\")"),
            vec![1, 5],
        ),
        (format!("{in_team} and not (active eq true)"), vec![2, 4]),
        (
            format!("{in_team} and emails[type eq \"home\" and value co \"u1@\"]"),
            vec![1],
        ),
        (
            format!("{in_team} and emails.value ew \"5@example.com\""),
            vec![5],
        ),
        (format!("{in_team} and nickName pr"), vec![]),
        (
            format!("{in_team} and meta.resourceType eq \"User\" and externalId gt \"EXT-3\""),
            vec![4, 5],
        ),
    ] {
        let mut found = names(&scim.get(&query(&filter, "")).await);
        found.sort();
        let expected: Vec<String> = expected.iter().map(|i| format!("user{i}@{team}")).collect();
        assert_eq!(found, expected, "{filter}");
    }

    // Pagination (RFC 7644 §3.4.2.4): 1-based, in a stable order (oldest first, then by
    // id), count=0 counts without returning resources.
    let all = names(&scim.get(&query(&in_team, "")).await);
    assert_eq!(all.len(), 5);
    let page =
        |start: &str, count: &str| query(&in_team, &format!("&startIndex={start}&count={count}"));
    let first = scim.get(&page("1", "2")).await;
    assert_eq!(names(&first), all[..2]);
    assert_eq!(first.json["totalResults"], 5);
    assert_eq!(first.json["startIndex"], 1);
    let second = scim.get(&page("3", "2")).await;
    assert_eq!(names(&second), all[2..4]);
    let last = scim.get(&page("5", "2")).await;
    assert_eq!(names(&last), all[4..]);
    assert_eq!(last.json["startIndex"], 5);
    assert_eq!(last.json["totalResults"], 5);
    let beyond = scim.get(&page("9", "2")).await;
    assert_eq!(
        (resources(&beyond).len(), &beyond.json["totalResults"]),
        (0, &serde_json::json!(5))
    );
    let counted = scim.get(&page("1", "0")).await;
    assert_eq!(counted.json["totalResults"], 5);
    assert_eq!(resources(&counted), Vec::<serde_json::Value>::new());
    let below_one = scim.get(&page("0", "1")).await;
    assert_eq!(names(&below_one), all[..1]);
    assert_eq!(resources(&scim.get(&page("1", "-3")).await).len(), 0);
    scim.get(&page("x", "1"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, Some("invalidValue"));
    // attributes: id and schemas always, then what was asked for.
    let projected = resources(
        &scim
            .get(&query(
                &in_team,
                "&count=1&attributes=userName,name.givenName",
            ))
            .await,
    );
    let keys: Vec<&String> = projected[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "schemas", "userName"]);

    for bad in [
        "userName eq",
        "userName zz \"x\"",
        "(userName eq \"x\"",
        "userName eq x",
        "userName eq \"x\" and",
        "emails[type eq \"work\"",
        "active gt true",
        "",
    ] {
        scim.get(&query(bad, ""))
            .await
            .assert_error(StatusCode::BAD_REQUEST, Some("invalidFilter"));
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Input built to exhaust the demo gets a SCIM 400, and the server goes on: a filter nested
/// 2,000 deep (it recursed once per level and overflowed a worker's stack, aborting the
/// process), one of 300 terms, attribute names with a character that spans byte 4 (`abcé`:
/// a slice inside it panicked), and a PATCH adding 20,000 values to a multi-valued attribute
/// (each compared with every other: seconds of a worker's CPU under the item's write lock).
#[tokio::test]
async fn scim_hostile_filters_names_and_patches_get_answers_and_the_server_lives() {
    let server = start_scim(&temp_path("scim-hostile.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    let created = scim
        .post(
            "/Users",
            serde_json::json!({ "schemas": [USER_SCHEMA], "userName": unique("hostile"),
                "emails": [{ "value": "first@example.com" }] }),
        )
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let user = format!("/Users/{id}");

    let deep = format!("{}userName pr{}", "(".repeat(2000), ")".repeat(2000));
    let long = vec!["userName pr"; 300].join(" and ");
    for filter in [
        deep.as_str(),
        long.as_str(),
        "abc\u{e9} pr",
        "x\u{20ac}yz pr",
    ] {
        let reply = scim
            .get(&format!("/Users?filter={}", encode_query(filter)))
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, Some("invalidFilter"));
    }
    let path = format!("emails[{}value pr{}]", "(".repeat(2000), ")".repeat(2000));
    for path in [path.as_str(), "abc\u{e9}"] {
        let ops = serde_json::json!([{ "op": "replace", "path": path, "value": "v" }]);
        let reply = scim.patch(&user, &created.etag(), ops).await;
        reply.assert_error(StatusCode::BAD_REQUEST, Some("invalidPath"));
    }
    let attributes = encode_query("abc\u{e9}");
    let reply = scim.get(&format!("{user}?attributes={attributes}")).await;
    reply.assert_error(StatusCode::BAD_REQUEST, Some("invalidValue"));
    // A top-level key that is no URN, with the same character: taken as an attribute name.
    let reply = scim
        .call(
            "PUT",
            &user,
            &[("if-match", &created.etag())],
            &serde_json::json!({ "schemas": [USER_SCHEMA], "userName": unique("hostile"), "abc\u{e9}": 1 })
                .to_string(),
        )
        .await;
    assert!(!reply.status.is_server_error(), "{reply:?}");
    let current = scim.get(&user).await;
    assert_eq!(
        current.status,
        StatusCode::OK,
        "the server lives: {current:?}"
    );

    // The PUT left the user without emails; one email first, then 20,000 more, the first
    // of them again among them (added once: a value already there is skipped).
    let email = |i: usize| serde_json::json!({ "value": format!("u{i}@example.com") });
    let ops = serde_json::json!([{ "op": "add", "path": "emails", "value": [email(0)] }]);
    let patched = scim.patch(&user, &current.etag(), ops).await;
    patched.assert_resource(StatusCode::OK, "User");
    let emails: Vec<_> = (0..20_000).map(email).collect();
    let ops = serde_json::json!([{ "op": "add", "path": "emails", "value": emails }]);
    let patched = scim.patch(&user, &patched.etag(), ops).await;
    patched.assert_resource(StatusCode::OK, "User");
    assert_eq!(
        patched.json["emails"].as_array().map(Vec::len),
        Some(20_000)
    );
    // Taking all but the first out again (a `remove` with a value list) is as cheap.
    let ops = serde_json::json!([{ "op": "remove", "path": "emails", "value": emails[1..] }]);
    let patched = scim.patch(&user, &patched.etag(), ops).await;
    patched.assert_resource(StatusCode::OK, "User");
    assert_eq!(patched.json["emails"], serde_json::json!([email(0)]));
}

/// A write whose body is larger than the demo takes (2 MiB) is refused before the layer (the
/// body is read first, `examples/support/body_first.rs`): 413 in each route's own error
/// format — a SCIM error whose `detail` is a sentence, problem+json on `/Items` — and
/// nothing written.
#[tokio::test]
async fn oversized_writes_get_413_in_each_routes_format() {
    let server = start_scim(&temp_path("scim-413.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    let created = scim
        .post(
            "/Users",
            serde_json::json!({ "schemas": [USER_SCHEMA], "userName": unique("big") }),
        )
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let huge = serde_json::json!({ "schemas": [USER_SCHEMA], "userName": "x".repeat(3 << 20) });
    let reply = scim
        .call(
            "PUT",
            &format!("/Users/{id}"),
            &[("if-match", &created.etag())],
            &huge.to_string(),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, None);
    let detail = reply.json["detail"].as_str().unwrap();
    assert!(
        !detail.starts_with('{'),
        "a sentence, not a document: {detail}"
    );
    let now = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(now.etag(), created.etag(), "nothing written");

    let items = call(server.addr, "PUT", "/Items/big", &[], &"x".repeat(3 << 20)).await;
    assert_eq!(items.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        items.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let absent = call(server.addr, "GET", "/Items/big", &[], "").await;
    assert_eq!(absent.status(), StatusCode::NOT_FOUND, "nothing written");
}

#[tokio::test]
async fn scim_versioning_304_stale_if_match_412_and_optional_if_match() {
    let server = start_scim(&temp_path("scim-versioning.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    let created = scim
        .post(
            "/Users",
            serde_json::json!({ "userName": "versioned", "title": "v1" }),
        )
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let path = format!("/Users/{id}");
    let v1 = created.etag();

    // If-None-Match on GET and HEAD: 304 with the version, no body.
    let cached = scim.call("GET", &path, &[("if-none-match", &v1)], "").await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert_eq!(cached.etag(), v1);
    assert!(cached.json.is_null());
    let head = scim.call("HEAD", &path, &[], "").await;
    assert_eq!((head.status, head.etag()), (StatusCode::OK, v1.clone()));
    // The same tag without W/ compares equal too (If-None-Match is weak).
    let stripped = v1.trim_start_matches("W/");
    let cached = scim
        .call("GET", &path, &[("if-none-match", stripped)], "")
        .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);

    // A write with the current version: accepted, a new version.
    let v2 = scim
        .patch(
            &path,
            &v1,
            serde_json::json!([{ "op": "replace", "path": "title", "value": "v2" }]),
        )
        .await;
    v2.assert_resource(StatusCode::OK, "User");
    let v2 = v2.etag();
    assert_ne!(v1, v2);
    let fresh = scim.call("GET", &path, &[("if-none-match", &v1)], "").await;
    assert_eq!((fresh.status, fresh.etag()), (StatusCode::OK, v2.clone()));

    // Stale If-Match on PUT, PATCH and DELETE: 412, a SCIM error, nothing written.
    let put = serde_json::json!({ "userName": "versioned", "title": "lost" }).to_string();
    let patch = serde_json::json!({ "schemas": [PATCH_OP], "Operations": [
        { "op": "replace", "path": "title", "value": "lost" }
    ] })
    .to_string();
    for (method, body) in [
        ("PUT", put.as_str()),
        ("PATCH", patch.as_str()),
        ("DELETE", ""),
    ] {
        for stale in [v1.as_str(), "W/\"stale\"", "\"stale\""] {
            scim.call(method, &path, &[("if-match", stale)], body)
                .await
                .assert_error(StatusCode::PRECONDITION_FAILED, None);
        }
    }
    let after = scim.get(&path).await;
    assert_eq!(after.etag(), v2, "nothing was written");
    assert_eq!(after.json["title"], "v2");
    // If-None-Match: * is create-only; the user exists.
    scim.call("PUT", &path, &[("if-none-match", "*")], &put)
        .await
        .assert_error(StatusCode::PRECONDITION_FAILED, None);
    // A weak or strong spelling of the current version both match (weak_if_match).
    let strong_spelling = v2.trim_start_matches("W/").to_owned();
    let v3 = scim
        .call(
            "PUT",
            &path,
            &[("if-match", &strong_spelling)],
            &serde_json::json!({ "userName": "versioned", "title": "v3" }).to_string(),
        )
        .await;
    v3.assert_resource(StatusCode::OK, "User");

    // No If-Match: SCIM versioning is optional for the client (RFC 7644 §3.14).
    let unconditional = scim.call("PUT", &path, &[], &put).await;
    unconditional.assert_resource(StatusCode::OK, "User");
    assert_eq!(unconditional.json["title"], "lost");
    let patched = scim
        .patch(
            &path,
            "",
            serde_json::json!([{ "op": "replace", "path": "title", "value": "v5" }]),
        )
        .await;
    patched.assert_resource(StatusCode::OK, "User");
    let deleted = scim.call("DELETE", &path, &[], "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}

/// A POST's preconditions are about the collection it adds to (RFC 9110 §13.1): a false one
/// is 412 and creates nothing; a true one creates.
#[tokio::test]
async fn scim_post_to_a_collection_honours_its_preconditions() {
    let server = start_scim(&temp_path("scim-collection.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    let listing = scim.get("/Users").await;
    assert_eq!(listing.status, StatusCode::OK);
    let collection = listing.etag();
    let user =
        |name: &str| serde_json::json!({ "schemas": [USER_SCHEMA], "userName": name }).to_string();
    for (name, value) in [
        ("if-match", "\"another\""),
        ("if-match", "W/\"another\""),
        ("if-match", "not a tag"),
        ("if-none-match", "*"),
        ("if-none-match", collection.as_str()),
    ] {
        scim.call("POST", "/Users", &[(name, value)], &user("refused"))
            .await
            .assert_error(StatusCode::PRECONDITION_FAILED, None);
    }
    // A query a create ignores does not turn the 412 into the listing's 400.
    scim.call(
        "POST",
        "/Users?filter=bad%20filter",
        &[("if-match", "\"another\"")],
        &user("refused"),
    )
    .await
    .assert_error(StatusCode::PRECONDITION_FAILED, None);
    let after = scim.get("/Users").await;
    assert_eq!(after.json["totalResults"], 0, "nothing was created");
    assert_eq!(after.etag(), collection);
    scim.call(
        "POST",
        "/Users",
        &[("if-match", &collection)],
        &user("first"),
    )
    .await
    .assert_resource(StatusCode::CREATED, "User");
    scim.call("POST", "/Users", &[("if-match", "*")], &user("second"))
        .await
        .assert_resource(StatusCode::CREATED, "User");
    // The collection changed: the first tag is stale now.
    scim.call(
        "POST",
        "/Users",
        &[("if-match", &collection)],
        &user("third"),
    )
    .await
    .assert_error(StatusCode::PRECONDITION_FAILED, None);
    assert_eq!(scim.get("/Users").await.json["totalResults"], 2);
}

/// A PUT with `Content-Range` is refused with 400 (RFC 9110 §14.5) on `/Items` and on SCIM
/// resources — before its preconditions, so a stale one still gets 400 — and nothing is
/// written.
#[tokio::test]
async fn a_put_with_content_range_is_400_and_writes_nothing() {
    let server = start_scim(&temp_path("partial-put.sqlite"), &[]);
    let addr = server.addr;
    let json = [("content-type", "application/json")];
    let created = call(addr, "PUT", "/Items/whole", &json, r#"{"v":1}"#).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let current = tag(created.headers());
    for if_match in ["", current.as_str(), "\"stale\""] {
        let headers = [
            ("content-type", "application/json"),
            ("content-range", "bytes 0-6/20"),
            ("if-match", if_match),
        ];
        let headers: Vec<_> = headers.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let (status, _, body) =
            collected(call(addr, "PUT", "/Items/whole", &headers, r#"{"v":2}"#).await).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "If-Match {if_match:?}: {body:?}"
        );
    }
    let (status, headers, body) = collected(call(addr, "GET", "/Items/whole", &[], "").await).await;
    assert_eq!(
        (status, body.as_ref()),
        (StatusCode::OK, &br#"{"v":1}"#[..])
    );
    assert_eq!(tag(&headers), current, "nothing was written");

    let scim = Scim { addr };
    let user = scim
        .post(
            "/Users",
            serde_json::json!({ "schemas": [USER_SCHEMA], "userName": "whole" }),
        )
        .await;
    let id = user.json["id"].as_str().unwrap().to_owned();
    let version = user.etag();
    let replacement =
        serde_json::json!({ "schemas": [USER_SCHEMA], "userName": "partial" }).to_string();
    for if_match in [version.as_str(), "\"stale\""] {
        scim.call(
            "PUT",
            &format!("/Users/{id}"),
            &[("content-range", "bytes 0-9/100"), ("if-match", if_match)],
            &replacement,
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, None);
    }
    let after = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(after.json["userName"], "whole");
    assert_eq!(after.etag(), version, "nothing was written");
}

/// Over HTTP/2 the host is in `:authority`, not `Host`: URLs built from it (`Location`,
/// `meta.location`) name the server as over HTTP/1.1.
#[tokio::test]
async fn scim_over_http2_builds_urls_from_the_authority() {
    let server = start_scim(&temp_path("scim-h2.sqlite"), &[]);
    let mut sender = common::h2_client(server.addr).await;
    let body = serde_json::json!({ "schemas": [USER_SCHEMA], "userName": "h2" }).to_string();
    let request = http::Request::post(format!("http://{}/scim/v2/Users", server.addr))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/scim+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    assert!(!request.headers().contains_key(header::HOST));
    let (status, headers, bytes) = collected(sender.send_request(request).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    let base = format!("http://{}/scim/v2/Users/", server.addr);
    let location = headers[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with(&base), "{location}");
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["meta"]["location"], location);
}

#[tokio::test]
async fn scim_strict_requires_if_match_with_428() {
    let server = start_scim(&temp_path("scim-strict.sqlite"), &["--strict"]);
    let scim = Scim { addr: server.addr };
    // Creating needs no precondition.
    let created = scim
        .post("/Users", serde_json::json!({ "userName": "strict" }))
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let path = format!("/Users/{id}");
    let body = serde_json::json!({ "userName": "strict", "title": "x" }).to_string();
    // A partial PUT is 400 before the 428 (RFC 9110 §14.5).
    scim.call("PUT", &path, &[("content-range", "bytes 0-9/99")], &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, None);
    let patch = serde_json::json!({ "schemas": [PATCH_OP], "Operations": [
        { "op": "replace", "path": "title", "value": "y" }
    ] })
    .to_string();
    // If-Match is what is required: another guard (If-None-Match, a true
    // If-Unmodified-Since) does not stand in for it.
    for (method, body) in [
        ("PUT", body.as_str()),
        ("PATCH", patch.as_str()),
        ("DELETE", ""),
    ] {
        for headers in [
            &[][..],
            &[("if-none-match", "\"other\"")][..],
            &[("if-unmodified-since", "Fri, 31 Dec 9999 23:59:59 GMT")][..],
        ] {
            scim.call(method, &path, headers, body)
                .await
                .assert_error(StatusCode::PRECONDITION_REQUIRED, None);
        }
    }
    assert_eq!(
        scim.get(&path).await.etag(),
        created.etag(),
        "nothing written"
    );
    let patched = scim
        .call("PATCH", &path, &[("if-match", &created.etag())], &patch)
        .await;
    patched.assert_resource(StatusCode::OK, "User");
    let deleted = scim
        .call("DELETE", &path, &[("if-match", &patched.etag())], "")
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn scim_without_the_token_401_and_no_etag_304_or_412() {
    let server = start_scim(&temp_path("scim-auth.sqlite"), &[]);
    let scim = Scim { addr: server.addr };
    let created = scim
        .post("/Users", serde_json::json!({ "userName": "private" }))
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let path = format!("/Users/{id}");
    let v = created.etag();
    let body = serde_json::json!({ "userName": "changed" }).to_string();
    for auth in ["", "Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer"] {
        for (method, path, headers, body) in [
            (
                "GET",
                path.as_str(),
                vec![("if-none-match", v.as_str())],
                "",
            ),
            ("GET", path.as_str(), vec![], ""),
            (
                "PUT",
                path.as_str(),
                vec![("if-match", "W/\"stale\"")],
                body.as_str(),
            ),
            ("DELETE", path.as_str(), vec![("if-match", v.as_str())], ""),
            ("POST", "/Users", vec![], body.as_str()),
            ("GET", "/ServiceProviderConfig", vec![], ""),
            (
                "GET",
                "/Users?filter=userName%20eq%20%22private%22",
                vec![],
                "",
            ),
        ] {
            let mut headers = headers;
            headers.push(("authorization", auth));
            let reply = scim.call(method, path, &headers, body).await;
            reply.assert_error(StatusCode::UNAUTHORIZED, None);
            let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    assert_eq!(scim.get(&path).await.etag(), v, "nothing was written");
    // /Items needs no token.
    let (status, _, _) =
        collected(call(server.addr, "PUT", "/Items/open", &[], "open").await).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn scim_store_failure_is_503_with_a_scim_error_from_the_layer_and_the_handlers() {
    let file = temp_path("scim-broken.sqlite");
    let server = start_scim(&file, &[]);
    let scim = Scim { addr: server.addr };
    let created = scim
        .post("/Users", serde_json::json!({ "userName": "doomed" }))
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let path = format!("/Users/{id}");
    // The store loses its table under the running server.
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("DROP TABLE documents")
        .unwrap();
    let ops = serde_json::json!([{ "op": "replace", "path": "title", "value": "x" }]);
    // With If-Match, the layer's lookup fails: it answers 503 itself, through on_reject.
    let from_layer = scim.patch(&path, &created.etag(), ops.clone()).await;
    let detail = from_layer.json["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("current version could not be read"),
        "{from_layer:?}"
    );
    // Without, the handler finds out.
    let from_handler = scim.patch(&path, "", ops).await;
    let read = scim.get(&path).await;
    for reply in [from_layer, from_handler, read] {
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, None);
        assert!(reply.headers.contains_key(header::RETRY_AFTER), "{reply:?}");
    }
}

/// `writers` PATCHes per round, all with the same If-Match, spread over `servers`: exactly
/// one wins per round, and what is stored is the winner's. Returns the user's id and
/// final version.
async fn scim_race(servers: &[SocketAddr], rounds: usize, writers: usize) -> (String, String) {
    let first = Scim { addr: servers[0] };
    let created = first
        .post("/Users", serde_json::json!({ "userName": unique("racer") }))
        .await;
    let id = created.assert_resource(StatusCode::CREATED, "User");
    let path = format!("/Users/{id}");
    let mut current = created.etag();
    // Who refused the losers: the layer (its lookup saw the new version) or the store's
    // compare-and-swap (the winner committed between that lookup and the write).
    let (mut by_layer, mut by_store) = (0, 0);
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let scim = Scim {
                addr: servers[writer % servers.len()],
            };
            let (path, if_match) = (path.clone(), current.clone());
            tasks.push(tokio::spawn(async move {
                let title = format!("round {round} writer {writer}");
                let reply = scim
                    .patch(
                        &path,
                        &if_match,
                        serde_json::json!([{ "op": "replace", "path": "title", "value": title }]),
                    )
                    .await;
                (reply, title)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (reply, title) = task.await.unwrap();
            match reply.status {
                StatusCode::OK => {
                    reply.assert_resource(StatusCode::OK, "User");
                    winners.push((title, reply.etag()));
                }
                _ => {
                    reply.assert_error(StatusCode::PRECONDITION_FAILED, None);
                    if reply.json["detail"]
                        .as_str()
                        .unwrap()
                        .contains("was modified since the version in If-Match")
                    {
                        by_store += 1;
                    } else {
                        by_layer += 1;
                    }
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        let (title, version) = winners.pop().unwrap();
        for addr in servers {
            let stored = Scim { addr: *addr }.get(&path).await;
            assert_eq!(
                stored.json["title"], title,
                "round {round}: the winner's write, nothing lost"
            );
            assert_eq!(stored.etag(), version);
            assert_eq!(stored.json["meta"]["version"], version);
        }
        current = version;
    }
    println!("412s from the layer: {by_layer}, from the store's compare-and-swap: {by_store}");
    (id, current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_two_processes_racing_patch_with_if_match_on_sqlite() {
    let file = temp_path("scim-race.sqlite");
    let a = start_scim(&file, &[]);
    let b = start_scim(&file, &[]);
    let rounds = 8;
    let (id, version) = scim_race(&[a.addr, b.addr], rounds, 16).await;
    let db = rusqlite::Connection::open(&file).unwrap();
    let (stored_version, etag): (i64, String) = db
        .query_row(
            "SELECT version, etag FROM documents WHERE kind = 'User' AND id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        stored_version,
        1 + rounds as i64,
        "the create, then one win per round"
    );
    assert_eq!(etag, version, "meta.version is the stored version's tag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_two_processes_racing_patch_with_if_match_on_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        skip(
            "scim_two_processes_racing_patch_with_if_match_on_postgres",
            "DATABASE_URL is not set (.ci/run starts a PostgreSQL cluster and sets it)",
        );
        return;
    };
    let a = start_scim(&url, &[]);
    let b = start_scim(&url, &[]);
    let rounds = 8;
    let (id, version) = scim_race(&[a.addr, b.addr], rounds, 16).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT version, etag FROM documents WHERE kind = 'User' AND id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        1 + rounds as i64,
        "the create, then one win per round"
    );
    assert_eq!(
        row.get::<_, String>(1),
        version,
        "meta.version is the stored version's tag"
    );
    // The uniqueness of userName holds across the processes too.
    let name = unique("twice");
    let first = Scim { addr: a.addr }
        .post("/Users", serde_json::json!({ "userName": name }))
        .await;
    first.assert_resource(StatusCode::CREATED, "User");
    Scim { addr: b.addr }
        .post(
            "/Users",
            serde_json::json!({ "userName": name.to_uppercase() }),
        )
        .await
        .assert_error(StatusCode::CONFLICT, Some("uniqueness"));
}

#[tokio::test]
async fn scim_server_prints_its_address_first_then_curl_lines_that_work_as_printed() {
    use std::io::BufRead;
    if !have("curl", "--version") {
        return skip(
            "scim_server_prints_its_address_first_then_curl_lines_that_work_as_printed",
            "curl is not installed",
        );
    }
    let database = temp_path("scim-startup.sqlite");
    let mut child = Command::new(common::example_binary("server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--token",
            "T",
            "--database-url",
            &database,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("next:");
        printed.push(line);
        if done || printed.len() > 40 {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr: SocketAddr = printed[0]
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("the first line announces the address: {printed:?}"))
        .parse()
        .unwrap();
    let _server = Running { child, addr };
    let commands: Vec<&String> = printed
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
        .collect();
    assert!(commands.len() >= 4, "{printed:?}");
    assert!(
        commands
            .iter()
            .any(|c| c.contains("/scim/v2/Users") && c.contains("Bearer T")),
        "{printed:?}"
    );
    // Each line says what it answers after '#' (a status, or several when run again).
    for round in 0..2 {
        for command in &commands {
            let (_, comment) = command.split_once('#').expect("a comment with the status");
            let expected: Vec<&str> = comment
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| w.len() == 3)
                .collect();
            let out = Command::new("sh")
                .arg("-c")
                .arg(command.as_str())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let status = stdout.split_whitespace().nth(1).unwrap_or_default();
            assert!(
                out.status.success() && expected.contains(&status),
                "run {round} of {command}\nexpected one of {expected:?}, got:\n{stdout}"
            );
        }
    }
}
