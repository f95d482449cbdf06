//! The reference server: a fixed contract that external conformance checks run against.
//!
//! ```sh
//! cargo run --example reference_server -- --addr 127.0.0.1:0
//! ```
//!
//! The first line on stdout is `listening on http://IP:PORT`. Routes, one in-memory store:
//!
//! - `/items/{id}` — GET/HEAD the stored bytes (stored `Content-Type`, `Last-Modified`,
//!   `Cache-Control: no-cache`, `Vary: Accept`, `Content-Location`; a single
//!   `Range: bytes=a-b` gives 206, kept by an `If-Range` with the current entity tag, never
//!   by an `If-Range` date: two writes may share a second); PUT stores the body as-is (201/200, answering the stored
//!   representation with its ETag); PATCH applies a JSON merge patch (RFC 7396); POST adds 1
//!   to the top-level JSON number `posts`; DELETE → 204; OPTIONS → 204 with `Allow`; absent
//!   → 404. The layer's lookup reads the store.
//! - `/strict/items/{id}` — the same, with preconditions required (428) on PUT/PATCH/DELETE.
//! - `/private/items/{id}` — the same behind `Authorization: Bearer let-me-in` (401 first).
//! - `/blob/{n}` — n bytes, byte i = i % 251, in 8 KiB chunks, no `Content-Length`
//!   (`max_buffer` 1 MiB). `/sse` — one event every 100 ms, forever.

mod app;
#[path = "../support/args.rs"]
mod args;
#[path = "../support/body_first.rs"]
mod body_first;
#[path = "../support/serve.rs"]
mod serve;

#[tokio::main]
async fn main() {
    let addr = args::addr_or_exit("reference_server", "127.0.0.1:8080");
    let listener = args::bind_and_announce(&addr).await;
    serve::until_ctrl_c(listener, app::app(app::Store::default())).await;
}
