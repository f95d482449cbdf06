//! The demo: a SCIM 2.0 service provider (RFC 7643, RFC 7644) whose versioning — ETags,
//! `If-Match`, 304 and 412 (RFC 7644 §3.14) — is the conditional layer, plus plain
//! `/Items`; on SQLite by default or PostgreSQL with `--database-url postgres://…`.
//!
//! ```sh
//! cargo run --example server                       # SQLite file ./tower-conditional-demo.sqlite
//! cargo run --example server -- --addr 127.0.0.1:0 --token T --database-url postgres://user@localhost/db
//! cargo run --example server -- --strict           # PUT, PATCH, DELETE need If-Match (428)
//! ```
//!
//! The first line of output is `listening on http://IP:PORT`; the `curl` lines after it work
//! as printed.

mod app;
#[path = "../support/args.rs"]
mod args;
#[path = "../support/body_first.rs"]
mod body_first;
mod db;
mod filter;
mod patch;
mod schema;
mod scim;
#[path = "../support/serve.rs"]
mod serve;

struct Args {
    addr: String,
    database: String,
    token: Option<String>,
    strict: bool,
}

const USAGE: &str = "usage: server [--addr IP:PORT] [--database-url postgres://…|PATH.sqlite] [--token TOKEN] [--strict]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".into(),
        database: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "tower-conditional-demo.sqlite".into()),
        token: None,
        strict: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--addr" => args.addr = value("--addr")?,
            "--database-url" | "--db" => args.database = value("--database-url")?,
            "--token" => args.token = Some(value("--token")?),
            "--strict" => args.strict = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if let Some(token) = &args.token {
        // RFC 6750 b64token, which also keeps the printed curl lines valid shell.
        let ok = !token.is_empty()
            && token.trim_end_matches('=').bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            });
        if !ok {
            return Err("--token takes letters, digits and - . _ ~ + / (RFC 6750)".into());
        }
    }
    Ok(args)
}

/// A token for this run: 24 random bytes, hex.
fn random_token() -> String {
    let mut bytes = [0u8; 24];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: hash what differs between runs.
        use sha2::Digest as _;
        let seed = format!(
            "{:?} {} {}",
            std::time::SystemTime::now(),
            std::process::id(),
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 1u8)
        );
        bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..24]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let db = db::Db::open(&args.database).await.unwrap_or_else(|e| {
        eprintln!("cannot open {}: {e}", args.database);
        std::process::exit(1)
    });
    // The first line of output: `listening on http://IP:PORT`.
    let listener = args::bind_and_announce(&args.addr).await;
    let addr = listener.local_addr().expect("bound");
    let generated = args.token.is_none();
    let token = args.token.unwrap_or_else(random_token);
    let settings = app::Settings {
        token: token.as_str().into(),
        strict: args.strict,
    };
    let store = if args.database.starts_with("postgres") {
        "PostgreSQL".to_owned()
    } else {
        format!("SQLite file {}", args.database)
    };
    let base = format!("http://{addr}{}", scim::BASE_PATH);
    let auth = format!("-H 'Authorization: Bearer {token}'");
    let user = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","name":{"givenName":"Ada","familyName":"Lovelace"}}"#;
    println!("store: {store}");
    println!(
        "SCIM 2.0 service provider: {base}, bearer token {token}{}",
        if generated {
            " (generated: --token sets one)"
        } else {
            ""
        }
    );
    println!(
        "versioning: ETag = meta.version, If-None-Match -> 304, stale If-Match -> 412; If-Match {}",
        if args.strict {
            "required on PUT, PATCH and DELETE (--strict): 428 without it"
        } else {
            "optional (--strict requires it)"
        }
    );
    println!("try:");
    println!(
        "  curl -si {base}/ServiceProviderConfig {auth}    # 200: patch, filter and etag supported"
    );
    println!("  curl -si {base}/Users {auth} -H 'Content-Type: application/scim+json' -d '{user}'    # 201 with ETag and Location (409 uniqueness when run again)");
    println!("  curl -si '{base}/Users?filter=userName%20eq%20%22ADA@example.com%22' {auth}    # 200: a ListResponse (userName is case-insensitive)");
    println!("  curl -si {base}/Users    # 401: no token, no data");
    println!("  curl -si -X PUT http://{addr}/Items/hello -H 'content-type: text/plain' -H 'if-none-match: *' --data 'hi there'    # 201 (412 when run again: it exists)");
    println!("  curl -si -X PUT http://{addr}/Items/hello -H 'if-match: \"stale\"' --data 'lost update'    # 412: a stale write, nothing written");
    println!("next: PATCH {base}/Users/<id> with If-Match: <its ETag>, see README.md (A provisioning session)");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    serve::until_ctrl_c(listener, app::app(db, &settings)).await;
}
