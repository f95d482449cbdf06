//! Helpers shared by the integration tests: bodies, an independent ETag, a real hyper server.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use tower_conditional::BoxError;

pub type TestBody = BoxBody<Bytes, BoxError>;

/// The strong tag of `bytes`, computed without the crate: `"` base64url(SHA-256) `"`.
pub fn independent_tag(bytes: &[u8]) -> String {
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(Sha256::digest(bytes)))
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A body made of these chunks, with no size hint beyond "unknown".
pub fn chunks(parts: Vec<Bytes>) -> TestBody {
    let stream =
        futures_util::stream::iter(parts.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b))));
    StreamBody::new(stream).boxed()
}

/// A body of these chunks followed by trailers.
pub fn chunks_with_trailers(parts: Vec<Bytes>, trailers: http::HeaderMap) -> TestBody {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> =
        parts.into_iter().map(|b| Ok(Frame::data(b))).collect();
    frames.push(Ok(Frame::trailers(trailers)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

pub async fn collect<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.expect("body").to_bytes()
}

/// `n` bytes where byte i is i % 251, in chunks of `chunk` bytes, produced lazily.
pub fn pattern_stream(n: usize, chunk: usize) -> TestBody {
    let stream = futures_util::stream::unfold(0usize, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = chunk.min(n - sent);
        let data: Vec<u8> = (sent..sent + len).map(|i| (i % 251) as u8).collect();
        Some((
            Ok::<_, BoxError>(Frame::data(Bytes::from(data))),
            sent + len,
        ))
    });
    StreamBody::new(stream).boxed()
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Serves `svc` with hyper (HTTP/1 and HTTP/2) on 127.0.0.1 until the test ends.
pub async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

/// A plain HTTP/1.1 client over a fresh connection.
pub async fn send(
    addr: SocketAddr,
    req: http::Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

/// The compiled example next to this test binary (cargo builds examples for `cargo test`).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join(name)
}

/// A running example process, killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an example binary whose first stdout line is `listening on http://IP:PORT`, and
/// keeps draining its output so that it never blocks on a full pipe.
pub fn spawn_example(name: &str, args: &[&str]) -> Running {
    use std::io::BufRead;
    let mut child = std::process::Command::new(example_binary(name))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("example {name} is built by cargo test: {e}"));
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| {
            panic!("first stdout line of {name} should announce the address, got {first:?}")
        })
        .parse()
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    Running { child, addr }
}

/// One request on a fresh HTTP/1.1 connection, built from its parts.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        addr,
        b.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}
