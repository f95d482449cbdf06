//! `GET /bytes/{n}` (n bytes, byte i = i % 251) behind salvo_extra's `CachingHeaders`.
//!
//! ```sh
//! cargo run --release --manifest-path benches/peer/Cargo.toml -- --addr 127.0.0.1:8089
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use salvo::caching_headers::CachingHeaders;
use salvo::conn::Acceptor;
use salvo::prelude::*;

/// The same handler as `examples/bench_server.rs`: the body for each size is built once per
/// worker thread and served as a `Bytes` clone (a reference count, no copy), so the handler
/// costs the same here as there and the difference is the middleware and the framework.
struct BytesHandler;

thread_local!(static CACHE: RefCell<HashMap<usize, Bytes>> = RefCell::new(HashMap::new()));

fn payload(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[async_trait]
impl Handler for BytesHandler {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let n: usize = req.param("n").unwrap_or(0);
        let body = CACHE.with(|c| {
            c.borrow_mut()
                .entry(n)
                .or_insert_with(|| payload(n))
                .clone()
        });
        res.body(body);
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:8089".to_owned();
    while let Some(arg) = args.next() {
        if arg == "--addr" {
            addr = args.next().expect("--addr IP:PORT");
        }
    }
    let acceptor = TcpListener::new(addr).bind().await;
    let local = acceptor.holdings()[0].local_addr.to_string();
    let local = local.trim_start_matches("socket://");
    println!("listening on http://{local} (salvo CachingHeaders)");
    let router = Router::with_hoop(CachingHeaders::new())
        .push(Router::with_path("bytes/{n}").get(BytesHandler));
    Server::new(acceptor).serve(router).await;
}
