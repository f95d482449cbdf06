//! What the examples share: the `--addr IP:PORT` argument and the first line they print.
//! Included by each example with `#[path = "support/args.rs"] mod args;`, so every example
//! stays one file to read and copy, without seven copies of the same parser.
#![allow(dead_code)]

use std::io::Write as _;

/// The value of `--addr` (or `default`); exits with a usage line on anything else.
pub fn addr_or_exit(example: &str, default: &str) -> String {
    let mut addr = default.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("usage: {example} [--addr IP:PORT]");
            std::process::exit(0);
        }
        match (arg.as_str(), args.next()) {
            ("--addr", Some(value)) => addr = value,
            _ => {
                eprintln!("usage: {example} [--addr IP:PORT]");
                std::process::exit(2);
            }
        }
    }
    addr
}

/// Binds `addr` and prints `listening on http://IP:PORT` as the first line of stdout (the
/// line the tests and outside checks wait for), or exits with why it could not.
pub async fn bind_and_announce(addr: &str) -> tokio::net::TcpListener {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();
    listener
}
