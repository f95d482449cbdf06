//! The `server` and `tour` examples, driven by real clients nobody here wrote: curl, nginx as
//! a revalidating cache, headless Chromium, and PostgreSQL shared by two server processes.
//!
//! Tests that need a tool the machine lacks print why they skip; `.ci/run` installs them all.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{collect, spawn_example, Running};
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

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, body) = common::call(addr, method, path, headers, body)
        .await
        .into_parts();
    (parts.status, parts.headers, collect(body).await)
}

fn tag(headers: &http::HeaderMap) -> String {
    headers[header::ETAG].to_str().unwrap().to_owned()
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
}

/// 32 writers, one If-Match, spread over `servers`: exactly one wins, per round.
async fn race(servers: &[SocketAddr], rounds: usize) {
    let first = servers[0];
    let (status, headers, _) = send(
        first,
        "PUT",
        "/Items/race",
        &[("content-type", "text/plain")],
        "start",
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
                let (status, headers, _) = send(
                    addr,
                    "PUT",
                    "/Items/race",
                    &[("if-match", &if_match)],
                    &body,
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
        let (status, headers, stored) = send(first, "GET", "/Items/race", &[], "").await;
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
    let (status, headers, _) = send(a.addr, "PUT", "/Items/shared", &[], "from a").await;
    assert!(status.is_success());
    let (_, _, body) = send(b.addr, "GET", "/Items/shared", &[], "").await;
    assert_eq!(body, "from a");
    let (status, _, _) = send(
        b.addr,
        "PUT",
        "/Items/shared",
        &[("if-match", "\"stale\"")],
        "from b",
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, _) = send(
        b.addr,
        "GET",
        "/Items/shared",
        &[("if-none-match", &tag(&headers))],
        "",
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
    let (status, _, _) = send(
        server.addr,
        "PUT",
        "/Items/cached",
        &[("content-type", "text/plain")],
        "cache me",
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
    let (status, headers, body) = send(proxy, "GET", "/Items/cached", &[], "").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"cache me"[..]));
    assert_eq!(headers["x-cache-status"], "MISS");
    let (_, headers, _) = send(proxy, "GET", "/Items/cached", &[], "").await;
    assert_eq!(headers["x-cache-status"], "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await; // the entry expires
    let (status, headers, body) = send(proxy, "GET", "/Items/cached", &[], "").await;
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
    send(
        server.addr,
        "PUT",
        "/Items/page",
        &[("content-type", "text/html")],
        page,
    )
    .await;
    send(
        server.addr,
        "PUT",
        "/Items/app.js",
        &[("content-type", "text/javascript")],
        "document.title = 'scripted';",
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
