//! The demo: a SCIM-like Users API (and plain Items) behind the conditional layer, on
//! SQLite by default or PostgreSQL with `--database-url postgres://…`.
//!
//! ```sh
//! cargo run --example server                       # SQLite file ./tower-conditional-demo.sqlite
//! cargo run --example server -- --addr 127.0.0.1:0 --database-url postgres://user@localhost/db
//! ```

mod app;
mod db;

use std::io::Write as _;

struct Args {
    addr: String,
    database: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:3000".into(),
        database: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "tower-conditional-demo.sqlite".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--addr" => args.addr = value("--addr")?,
            "--database-url" | "--db" => args.database = value("--database-url")?,
            "-h" | "--help" => {
                println!(
                    "usage: server [--addr IP:PORT] [--database-url postgres://…|PATH.sqlite]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
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
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .unwrap_or_else(|e| {
            eprintln!("cannot bind {}: {e}", args.addr);
            std::process::exit(1)
        });
    let addr = listener.local_addr().expect("bound");
    let store = if args.database.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite file"
    };
    println!("listening on http://{addr}");
    println!(
        "store: {store} {}",
        if store == "PostgreSQL" {
            ""
        } else {
            &args.database
        }
    );
    println!("try:");
    println!("  curl -i -X PUT http://{addr}/Items/hello -H 'content-type: text/plain' -H 'if-none-match: *' --data 'hi there'");
    println!("  curl -i http://{addr}/Items/hello -H 'if-none-match: <the ETag above>'    # 304");
    println!("  curl -i -X PUT http://{addr}/Items/hello -H 'if-match: \"stale\"' --data 'lost update'    # 412");
    let _ = std::io::stdout().flush();
    axum::serve(listener, app::app(db))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server error");
}
