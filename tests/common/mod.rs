//! Helpers shared by the integration tests: bodies, an independent ETag, requests and
//! responses, a real hyper server and client, a counting store with its lookup, captured
//! traces, and the examples as processes.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use sha2::{Digest, Sha256};
use tower::util::BoxCloneSyncService;
use tower_conditional::precondition::http_date;
use tower_conditional::{lookup_fn, BoxError, EntityTag, Expectation, LookupRequest, Validators};

pub type TestBody = BoxBody<Bytes, BoxError>;

// ---- bodies ---------------------------------------------------------------------------------

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

// ---- requests in process, responses -----------------------------------------------------------

pub fn get(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

pub fn put(uri: &str, body: &str) -> Request<String> {
    Request::put(uri).body(body.to_owned()).unwrap()
}

/// `req` with one more field.
pub fn with(mut req: Request<String>, name: &'static str, value: &str) -> Request<String> {
    req.headers_mut().append(name, value.parse().unwrap());
    req
}

/// The `ETag` field of a response head, if it has one.
pub fn etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The `ETag` field of a response head that must have one.
pub fn tag(headers: &HeaderMap) -> String {
    etag(headers).expect("the response carries an ETag")
}

/// A response's body, read to the end, as UTF-8 text.
pub async fn body_text<B>(resp: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    String::from_utf8(collect(resp.into_body()).await.to_vec()).unwrap()
}

/// A response's status, fields, and body read to the end.
pub async fn collected<B>(resp: Response<B>) -> (StatusCode, HeaderMap, Bytes)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, collect(body).await)
}

// ---- servers ---------------------------------------------------------------------------------

/// Serves `svc` with hyper (HTTP/1 and HTTP/2) on 127.0.0.1 until the test ends.
pub async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
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

/// Serves an axum router with `axum::serve` on 127.0.0.1 until the test ends.
pub async fn serve_axum(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

// ---- clients ---------------------------------------------------------------------------------

/// The liveness bound: long enough never to fire on a slow machine, short enough that a
/// deadlock fails the test instead of hanging it.
pub const LIVENESS: Duration = Duration::from_secs(10);

pub async fn live<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(LIVENESS, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIVENESS:?}"))
}

/// One request on a fresh HTTP/1.1 connection, with any request body.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

/// An HTTP/1.1 request built from its parts (`Host: test`).
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// One request on a fresh HTTP/1.1 connection, built from its parts; its response head
/// comes within [`LIVENESS`].
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Incoming> {
    let req = request(method, path, headers, body);
    live(&format!("{method} {path}"), send(addr, req)).await
}

// ---- a counting store ------------------------------------------------------------------------

/// A version lookup as a value, so that helpers can return one.
pub type Lookup<E = Infallible> = BoxCloneSyncService<LookupRequest, Option<Validators>, E>;

/// A handler as a value, for requests with bodies of type `B`.
pub type Handler<B> = BoxCloneSyncService<Request<B>, Response<TestBody>, Infallible>;

/// How often each `METHOD path` reached a handler.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<HashMap<String, usize>>>);

impl Calls {
    pub fn hit<B>(&self, req: &Request<B>) {
        let key = format!("{} {}", req.method(), req.uri().path());
        *self.0.lock().unwrap().entry(key).or_default() += 1;
    }

    pub fn of(&self, key: &str) -> usize {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
}

#[derive(Clone)]
struct Item {
    body: Bytes,
    modified: Option<SystemTime>,
}

/// An in-memory store behind a plain handler, with a version lookup that agrees with what
/// its GET serves. GET honours `Range` (and `If-Range` against the tag of what it serves);
/// PUT/PATCH check the layer's `Expectation` and write; POST creates a member of the
/// collection; DELETE removes. Every call is counted, and every write.
#[derive(Clone)]
pub struct Store {
    items: Arc<Mutex<HashMap<String, Item>>>,
    pub calls: Calls,
    writes: Arc<AtomicUsize>,
    /// Time a GET takes before it answers.
    pub read_delay: Duration,
    /// Time between the handler's check and its write. Zero: the check and the write are
    /// one compare-and-swap; otherwise only the layer's lock keeps two writers apart.
    pub write_delay: Duration,
    pub honour_if_range: bool,
    /// The store key of a request path.
    pub resolve: fn(&str) -> String,
}

impl Store {
    pub fn new(items: &[(&str, &str)]) -> Self {
        let store = Store {
            items: Arc::default(),
            calls: Calls::default(),
            writes: Arc::default(),
            read_delay: Duration::ZERO,
            write_delay: Duration::ZERO,
            honour_if_range: true,
            resolve: percent_decoded,
        };
        for (path, body) in items {
            store.set(path, body);
        }
        store
    }

    /// Stores `body` at `path`, with no modification time.
    pub fn set(&self, path: &str, body: &str) {
        self.items.lock().unwrap().insert(
            (self.resolve)(path),
            Item {
                body: Bytes::from(body.to_owned()),
                modified: None,
            },
        );
    }

    /// Dates what is stored at `path`.
    pub fn date(&self, path: &str, time: SystemTime) {
        let key = (self.resolve)(path);
        self.items.lock().unwrap().get_mut(&key).unwrap().modified = Some(time);
    }

    pub fn body(&self, path: &str) -> Option<String> {
        let items = self.items.lock().unwrap();
        let item = items.get(&(self.resolve)(path))?;
        Some(String::from_utf8(item.body.to_vec()).unwrap())
    }

    /// The strong tag of what GET serves now.
    pub fn tag(&self, path: &str) -> String {
        independent_tag(self.body(path).expect("stored").as_bytes())
    }

    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn validators(&self, path: &str) -> Option<Validators> {
        let items = self.items.lock().unwrap();
        items.get(&(self.resolve)(path)).map(|item| {
            let v = Validators::new().with_etag(EntityTag::from_content(&item.body));
            match item.modified {
                Some(time) => v.with_last_modified(time),
                None => v,
            }
        })
    }

    /// A version lookup that agrees with what GET serves.
    pub fn lookup(&self) -> Lookup {
        let store = self.clone();
        Lookup::new(lookup_fn(move |req: LookupRequest| {
            let found = store.validators(req.uri().path());
            async move { Ok::<_, Infallible>(found) }
        }))
    }

    pub fn handler<B>(&self) -> Handler<B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let store = self.clone();
        Handler::new(tower::service_fn(move |req: Request<B>| {
            let store = store.clone();
            async move { Ok::<_, Infallible>(store.handle(req).await) }
        }))
    }

    async fn handle<B>(&self, req: Request<B>) -> Response<TestBody>
    where
        B: http_body::Body,
    {
        self.calls.hit(&req);
        let path = req.uri().path().to_owned();
        let key = (self.resolve)(&path);
        match req.method().as_str() {
            "GET" => {
                if !self.read_delay.is_zero() {
                    tokio::time::sleep(self.read_delay).await;
                }
                let item = self.items.lock().unwrap().get(&key).cloned();
                match item {
                    Some(item) => self.read(&item, req.headers()),
                    None => status(StatusCode::NOT_FOUND),
                }
            }
            "PUT" | "PATCH" => self.write(req, path, key).await,
            "POST" => {
                let Ok(body) = req.into_body().collect().await.map(|c| c.to_bytes()) else {
                    return status(StatusCode::BAD_REQUEST);
                };
                let mut items = self.items.lock().unwrap();
                let n = items
                    .keys()
                    .filter(|k| k.starts_with(&format!("{key}/")))
                    .count();
                let member = format!("{key}/{n}");
                items.insert(
                    member.clone(),
                    Item {
                        body,
                        modified: Some(SystemTime::now()),
                    },
                );
                // The collection lists its members: it changes with every POST.
                let listing = items.entry(key).or_insert(Item {
                    body: Bytes::new(),
                    modified: None,
                });
                listing.body = Bytes::from(format!(
                    "{}{member}\n",
                    String::from_utf8_lossy(&listing.body)
                ));
                self.writes.fetch_add(1, Ordering::SeqCst);
                Response::builder()
                    .status(StatusCode::CREATED)
                    .header(header::LOCATION, member)
                    .body(full(Bytes::new()))
                    .unwrap()
            }
            "DELETE" => {
                self.items.lock().unwrap().remove(&key);
                self.writes.fetch_add(1, Ordering::SeqCst);
                status(StatusCode::NO_CONTENT)
            }
            _ => Response::new(full("handled")),
        }
    }

    /// PUT and PATCH: 412 unless the target is still what the layer validated, then the
    /// write (201 when it creates). `x-respond: 204` or `content-location` shapes the answer.
    async fn write<B>(&self, req: Request<B>, path: String, key: String) -> Response<TestBody>
    where
        B: http_body::Body,
    {
        let respond = req.headers().get("x-respond").cloned();
        let expectation = req.extensions().get::<Expectation>().cloned();
        let Ok(body) = req.into_body().collect().await.map(|c| c.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST);
        };
        let still_expected = |items: &HashMap<String, Item>| {
            let current = items.get(&key).map(|i| EntityTag::from_content(&i.body));
            expectation.as_ref().is_none_or(|e| {
                !(e.must_not_exist() && current.is_some())
                    && e.etag()
                        .is_none_or(|expected| current.as_ref() == Some(expected))
            })
        };
        let item = Item {
            body,
            modified: Some(SystemTime::now()),
        };
        let existed = if self.write_delay.is_zero() {
            let mut items = self.items.lock().unwrap();
            if !still_expected(&items) {
                return status(StatusCode::PRECONDITION_FAILED);
            }
            items.insert(key, item).is_some()
        } else {
            // Read, check, then write: no compare-and-swap.
            if !still_expected(&self.items.lock().unwrap()) {
                return status(StatusCode::PRECONDITION_FAILED);
            }
            tokio::time::sleep(self.write_delay).await;
            self.items.lock().unwrap().insert(key, item).is_some()
        };
        self.writes.fetch_add(1, Ordering::SeqCst);
        match respond.as_ref().map(|v| v.as_bytes()) {
            Some(b"204") => status(StatusCode::NO_CONTENT),
            Some(b"content-location") => Response::builder()
                .header(header::CONTENT_LOCATION, path)
                .body(full(Bytes::new()))
                .unwrap(),
            _ if existed => status(StatusCode::OK),
            _ => status(StatusCode::CREATED),
        }
    }

    fn read(&self, item: &Item, headers: &HeaderMap) -> Response<TestBody> {
        let mut b = Response::builder().header(header::CONTENT_TYPE, "text/plain");
        if let Some(date) = item.modified.and_then(http_date) {
            b = b.header(header::LAST_MODIFIED, date);
        }
        let own_tag = independent_tag(&item.body);
        let if_range_holds = !self.honour_if_range
            || headers
                .get(header::IF_RANGE)
                .is_none_or(|v| v == own_tag.as_str());
        let len = item.body.len();
        match headers.get(header::RANGE).and_then(|v| byte_range(v, len)) {
            Some((first, last)) if if_range_holds => b
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"))
                .body(full(item.body.slice(first..=last)))
                .unwrap(),
            _ => b.body(full(item.body.clone())).unwrap(),
        }
    }
}

/// An empty response with this status.
pub fn status(s: StatusCode) -> Response<TestBody> {
    Response::builder()
        .status(s)
        .body(full(Bytes::new()))
        .unwrap()
}

/// `bytes=first-` or `bytes=first-last`, within a body of `len` bytes.
fn byte_range(value: &http::HeaderValue, len: usize) -> Option<(usize, usize)> {
    let spec = value.to_str().ok()?.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let first: usize = first.parse().ok()?;
    let last = match last {
        "" => len.checked_sub(1)?,
        last => last.parse::<usize>().ok()?.min(len.checked_sub(1)?),
    };
    (first <= last).then_some((first, last))
}

/// A path with its percent-encoding decoded, as axum's `Path` extractor sees it.
pub fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

// ---- traces ----------------------------------------------------------------------------------

/// A writer that keeps what `tracing` prints, for asserting on what reached the log.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures the events at `level` and above on this thread until the guard is dropped.
    pub fn install(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first hit on another test's thread (no subscriber there) while this one
        // was being installed can keep an interest of "never"; asked again now, every
        // callsite sees this subscriber.
        tracing::callsite::rebuild_interest_cache();
        (captured, guard)
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---- the examples as processes ---------------------------------------------------------------

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

/// Conditional PUTs to `path` (created first, unconditionally) that stall mid-body hold
/// nothing: the route reads a write's body before its layer takes the target's write lock
/// (`serialize_writes`), so two stalled writers — which could otherwise take turns holding
/// the lock, each for a request timeout, and keep every other writer waiting past its own —
/// leave the target free. The next conditional PUT goes through while they still wait for
/// their answers; they then get 408 at the route's request timeout (about 10 s) and write
/// nothing.
pub async fn stalled_writes_hold_nothing(addr: SocketAddr, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let created = call(addr, "PUT", path, &[], "v0").await;
    assert!(created.status().is_success(), "{}", created.status());
    let tag = tag(created.headers());

    // One with the current tag, one whose condition holds for any tag but the one it names.
    let mut stalled = Vec::new();
    for condition in [
        format!("If-Match: {tag}"),
        "If-None-Match: \"junk\"".to_owned(),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: t\r\n{condition}\r\nContent-Length: 100\r\n\r\nabcde"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // Time for the server to take both in: a lock taken for either would hold the next write
    // until that request's timeout, past `call`'s liveness bound.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let next = call(addr, "PUT", path, &[("if-match", &tag)], "v1").await;
    assert!(next.status().is_success(), "{}", next.status());
    for stream in &mut stalled {
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "a stalled writer was answered first: {early:?}"
        );
    }

    for mut stream in stalled {
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer))
            .await
            .expect("the stalled writer has its answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let now = call(addr, "GET", path, &[], "").await;
    assert_eq!(
        collect(now.into_body()).await,
        "v1",
        "the stalled writes wrote nothing"
    );
}

/// An HTTP/2 PUT to `path` that declares 2,000 bytes, sends 40 and then resets its stream
/// with `NO_ERROR` — which hyper hands a handler as a body that ended early, without an
/// error. Returns the status the server answered with, if one came before the reset.
pub async fn upload_reset_mid_body(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
) -> Option<http::StatusCode> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let put = Request::put(format!("http://{addr}{path}"))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, "2000")
        .body(())
        .unwrap();
    let (response, mut upload) = client.send_request(put, false).unwrap();
    upload
        .send_data(Bytes::from(vec![b'y'; 40]), false)
        .unwrap();
    // The headers and the 40 bytes go out before the reset.
    tokio::time::sleep(Duration::from_millis(200)).await;
    upload.send_reset(h2::Reason::NO_ERROR);
    let answered = tokio::time::timeout(Duration::from_secs(5), response).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    match answered {
        Ok(Ok(response)) => Some(response.status()),
        _ => None,
    }
}

/// An HTTP/2 connection (prior knowledge); clone the sender to multiplex requests on it.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}
