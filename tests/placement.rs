//! One invariant in every placement (issue 9, item 2): a write handler runs at most once per
//! request, never for a request the layer then refuses, never for a stale `If-Match`.
//!
//! Each place users put the layer — a hyper service, a `ServiceBuilder` stack, axum's
//! `Router::layer`, `route_layer` and `MethodRouter::layer` (in a route and as a fallback), a
//! whole `Router` wrapped from outside (served directly, or in an outer router as its
//! fallback, nested, or one route's service), tonic — is driven with
//! each source of current validators (none, a lookup, the internal GET, `no_lookup`) against
//! handlers that count their calls. Then the layers people stack around this one:
//! authentication, compression, tracing, concurrency limits and buffers.

mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{from_fn, Next};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tonic::server::{ClientStreamingService, Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_conditional::lookup::InternalGetRequest;
use tower_conditional::precondition::{evaluate, Decision, Options};
use tower_conditional::{
    lookup_fn, BoxError, ConditionalLayer, EntityTag, Expectation, LookupRequest, Validators,
};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

/// The one resource every handler serves, and what its GET answers: long enough (≥ 32 bytes)
/// for `CompressionLayer` to compress it.
const PATH: &str = "/res";
const BODY: &str = "the current representation of /res, as every GET sends it";
/// Set by every handler on its answers: a response without it came from a layer.
const HANDLED_BY: &str = "x-handled-by";
/// The `grpc-message` of a refusal by a gRPC handler evaluating under `no_lookup`.
const HANDLER_REFUSED: &str = "refused by the handler";

fn current_tag() -> String {
    common::independent_tag(BODY.as_bytes())
}

fn current_validators() -> Validators {
    Validators::new().with_etag(EntityTag::from_content(BODY.as_bytes()))
}

/// The version lookup of every placement: the target exists, with `BODY`.
fn current(_req: LookupRequest) -> Ready<Result<Option<Validators>, Infallible>> {
    ready(Ok(Some(current_validators())))
}

/// The source of current validators a layer is configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    None,
    Lookup,
    InternalGet,
    NoLookup,
}

const SOURCES: [Source; 4] = [
    Source::None,
    Source::Lookup,
    Source::InternalGet,
    Source::NoLookup,
];

/// Binds `$layer` to the `ConditionalLayer` for `$source` (with `$lookup` as its version
/// lookup) and evaluates `$body`: each source is its own layer type.
macro_rules! with_source {
    ($source:expr, $lookup:expr, |$layer:ident| $body:expr) => {
        match $source {
            Source::None => {
                let $layer = ConditionalLayer::new();
                $body
            }
            Source::Lookup => {
                let $layer = ConditionalLayer::new().lookup($lookup);
                $body
            }
            Source::InternalGet => {
                let $layer = ConditionalLayer::new().internal_get();
                $body
            }
            Source::NoLookup => {
                let $layer = ConditionalLayer::new().no_lookup();
                $body
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Handlers that count.

/// A handler, by the method it was written for (not the method of the request it gets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Put,
    Patch,
    Delete,
    Post,
}

impl Kind {
    const WRITES: [Kind; 4] = [Kind::Put, Kind::Patch, Kind::Delete, Kind::Post];

    fn method(self) -> Method {
        match self {
            Kind::Get => Method::GET,
            Kind::Put => Method::PUT,
            Kind::Patch => Method::PATCH,
            Kind::Delete => Method::DELETE,
            Kind::Post => Method::POST,
        }
    }

    fn of(method: &Method) -> Option<Kind> {
        [Kind::Get, Kind::Put, Kind::Patch, Kind::Delete, Kind::Post]
            .into_iter()
            .find(|kind| kind.method() == method)
    }
}

/// What the handlers counted, shared by all handlers of one service.
#[derive(Default)]
struct Calls {
    /// Runs per handler, indexed by `Kind as usize`.
    handlers: [AtomicUsize; 5],
    /// GETs that carried the layer's `InternalGetRequest` marker.
    probes: AtomicUsize,
    /// Writes performed (handler runs that did not refuse).
    writes: AtomicUsize,
    /// Writes that arrived with an `Expectation` the layer had evaluated.
    evaluated: AtomicUsize,
    /// Writes that arrived with an `Expectation` the layer had not evaluated (`no_lookup`).
    unevaluated: AtomicUsize,
    /// Conditional writes that arrived with no `Expectation` at all: nobody evaluated them.
    unannounced: AtomicUsize,
}

/// A snapshot of [`Calls`], or the difference between two.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// `[GET, PUT, PATCH, DELETE, POST]` handler runs.
    handlers: [usize; 5],
    probes: usize,
    writes: usize,
    evaluated: usize,
    unevaluated: usize,
    unannounced: usize,
}

impl Calls {
    fn tally(&self) -> Tally {
        let load = |n: &AtomicUsize| n.load(Ordering::SeqCst);
        Tally {
            handlers: self.handlers.each_ref().map(load),
            probes: load(&self.probes),
            writes: load(&self.writes),
            evaluated: load(&self.evaluated),
            unevaluated: load(&self.unevaluated),
            unannounced: load(&self.unannounced),
        }
    }
}

fn bump(n: &AtomicUsize) {
    n.fetch_add(1, Ordering::SeqCst);
}

impl Tally {
    fn since(self, before: Tally) -> Tally {
        let mut handlers = self.handlers;
        for (n, b) in handlers.iter_mut().zip(before.handlers) {
            *n -= b;
        }
        Tally {
            handlers,
            probes: self.probes - before.probes,
            writes: self.writes - before.writes,
            evaluated: self.evaluated - before.evaluated,
            unevaluated: self.unevaluated - before.unevaluated,
            unannounced: self.unannounced - before.unannounced,
        }
    }

    fn runs(self, kind: Kind) -> usize {
        self.handlers[kind as usize]
    }

    fn ran(mut self, kind: Kind) -> Tally {
        self.handlers[kind as usize] += 1;
        self
    }

    fn wrote(mut self) -> Tally {
        self.writes += 1;
        self
    }
}

/// What a handler sees of a request.
struct Seen<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    expectation: Option<&'a Expectation>,
    probe: bool,
}

/// The handler for `kind`: counts the run; a write handed over unevaluated (`no_lookup`) is
/// evaluated here against the current representation, as the crate's docs tell handlers to.
fn handle(kind: Kind, calls: &Calls, seen: Seen<'_>) -> StatusCode {
    bump(&calls.handlers[kind as usize]);
    if kind == Kind::Get {
        if seen.probe {
            bump(&calls.probes);
        }
        return StatusCode::OK;
    }
    match seen.expectation {
        Some(e) if !e.is_evaluated() => {
            bump(&calls.unevaluated);
            let current = current_validators();
            let decision = evaluate(
                seen.method,
                e.conditions(),
                Some(&current),
                Options::default(),
            );
            if let Decision::PreconditionFailed(_) = decision {
                return StatusCode::PRECONDITION_FAILED;
            }
        }
        Some(_) => bump(&calls.evaluated),
        None => {}
    }
    let conditional = [header::IF_MATCH, header::IF_NONE_MATCH]
        .iter()
        .any(|name| seen.headers.contains_key(name));
    if conditional && seen.expectation.is_none() {
        bump(&calls.unannounced);
    }
    bump(&calls.writes);
    StatusCode::NO_CONTENT
}

type Answer = Response<Full<Bytes>>;

fn http_handle<B>(kind: Kind, calls: &Calls, req: &http::Request<B>) -> Answer {
    let status = handle(
        kind,
        calls,
        Seen {
            method: req.method(),
            headers: req.headers(),
            expectation: req.extensions().get(),
            probe: req.extensions().get::<InternalGetRequest>().is_some(),
        },
    );
    let body = if status == StatusCode::OK { BODY } else { "" };
    Response::builder()
        .status(status)
        .header(HANDLED_BY, format!("{kind:?}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::from(body))
        .unwrap()
}

/// A plain tower service that routes by method, as a hyper service does.
fn by_method<B>(
    calls: Arc<Calls>,
) -> impl Service<
    http::Request<B>,
    Response = Answer,
    Error = Infallible,
    Future = Ready<Result<Answer, Infallible>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |req: http::Request<B>| {
        let answer = match Kind::of(req.method()) {
            Some(kind) => http_handle(kind, &calls, &req),
            None => Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .body(Full::default())
                .unwrap(),
        };
        ready(Ok(answer))
    })
}

/// axum's per-method routing: one handler per method, each counted as its own kind.
fn methods(calls: &Arc<Calls>) -> MethodRouter {
    let handler = |kind: Kind| {
        let calls = calls.clone();
        move |req: Request| {
            let answer = http_handle(kind, &calls, &req);
            async move { answer }
        }
    };
    get(handler(Kind::Get))
        .put(handler(Kind::Put))
        .patch(handler(Kind::Patch))
        .delete(handler(Kind::Delete))
        .post(handler(Kind::Post))
}

fn router(calls: &Arc<Calls>) -> Router {
    Router::new().route(PATH, methods(calls))
}

// ---------------------------------------------------------------------------------------
// Clients.

fn into_axum<B>(response: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(Body::new)
}

type Oneshot = BoxCloneService<http::Request<Body>, Response<Body>, Infallible>;

/// Where the requests of one (placement, source) go.
enum Client {
    /// A server on 127.0.0.1; the resource is at `prefix` + `PATH`.
    Http {
        addr: SocketAddr,
        prefix: &'static str,
    },
    /// `oneshot` on a clone of the service.
    Oneshot(Oneshot),
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    async fn of<B>(response: Response<B>) -> Reply
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (status, headers, body) = common::collected(response).await;
        Reply {
            status,
            headers,
            body,
        }
    }

    fn answered_by_handler(&self) -> bool {
        self.headers.contains_key(HANDLED_BY)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    fn http(addr: SocketAddr) -> Client {
        Client::Http { addr, prefix: "" }
    }

    async fn send(&self, method: &Method, headers: &[(&str, String)]) -> Reply {
        let body = if method == Method::GET || method == Method::HEAD {
            ""
        } else {
            "new content"
        };
        match self {
            Client::Http { addr, prefix } => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let path = format!("{prefix}{PATH}");
                Reply::of(common::call(*addr, method.as_str(), &path, &headers, body).await).await
            }
            Client::Oneshot(svc) => {
                let mut req = http::Request::builder().method(method).uri(PATH);
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                let req = req.body(Body::from(body)).unwrap();
                Reply::of(svc.clone().oneshot(req).await.unwrap()).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The placements.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// `layer.layer(service)` served by hyper-util (request bodies boxed: `Incoming` has no
    /// `Default`, which the internal GET needs).
    Hyper,
    /// `ServiceBuilder::new().concurrency_limit(..).layer(layer).service(..)`, by `oneshot`.
    ServiceBuilder,
    /// `Router::new().route(..).layer(layer)`.
    RouterLayer,
    /// `Router::new().route(..).route_layer(layer)`.
    RouteLayer,
    /// `Router::new().route(PATH, get(..).put(..).layer(layer))`.
    MethodRouterLayer,
    /// `layer.layer(router)` served by hyper-util.
    WholeRouter,
    /// `Router::new().fallback_service(layer.layer(router))` served by `axum::serve`.
    WholeRouterFallback,
    /// `Router::new().nest_service("/api", layer.layer(router))` served by `axum::serve`.
    WholeRouterNested,
    /// `Router::new().route_service(PATH, layer.layer(router))` served by `axum::serve`.
    WholeRouterRouteService,
    /// `Router::new().fallback(get(..).put(..).layer(layer))`: one method's handler wrapped,
    /// outside any route.
    MethodRouterFallback,
}

/// Who evaluates a conditional write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eval {
    /// Nobody: the layer answers 501 naming the builder calls, the handler does not run.
    Refused(Why),
    /// The layer, before the handler; `probe`: with a GET to the GET handler.
    Layer { probe: bool },
    /// The handler, handed an unevaluated `Expectation`.
    Handler,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// No source of current validators is configured.
    NoSource,
    /// `internal_get()` where the layer wraps one method's handler (the `axum` feature).
    Misplaced,
}

impl Placement {
    /// The layer wraps each method's handler on its own: a GET probe would run a write
    /// handler.
    fn wraps_one_method(self) -> bool {
        matches!(
            self,
            Placement::RouterLayer
                | Placement::RouteLayer
                | Placement::MethodRouterLayer
                | Placement::MethodRouterFallback
        )
    }

    /// The sources tried here. Without the `axum` feature the layer cannot tell that it wraps
    /// one method's handler, and the internal GET would run a write handler as the probe:
    /// the documented hazard, not offered. Nor under a `MethodRouter` used as a fallback,
    /// which sets no `MatchedPath` for the layer to see (documented on `internal_get`).
    fn sources(self) -> Vec<Source> {
        let detected = cfg!(feature = "axum") && self != Placement::MethodRouterFallback;
        SOURCES
            .into_iter()
            .filter(|s| detected || !(self.wraps_one_method() && *s == Source::InternalGet))
            .collect()
    }

    fn eval(self, source: Source) -> Eval {
        match source {
            Source::None => Eval::Refused(Why::NoSource),
            Source::Lookup => Eval::Layer { probe: false },
            Source::NoLookup => Eval::Handler,
            // Detected through axum's `MatchedPath` (not offered where it is not set).
            Source::InternalGet if self.wraps_one_method() => Eval::Refused(Why::Misplaced),
            // `route_service` sets `MatchedPath` (see `which_outer_routers_set_matched_path`):
            // the layer cannot tell this whole router from one method's handler, and fails
            // closed.
            Source::InternalGet
                if self == Placement::WholeRouterRouteService && cfg!(feature = "axum") =>
            {
                Eval::Refused(Why::Misplaced)
            }
            Source::InternalGet => Eval::Layer { probe: true },
        }
    }

    async fn start(self, source: Source, calls: &Arc<Calls>) -> Client {
        with_source!(source, lookup_fn(current), |layer| match self {
            Placement::Hyper => {
                let svc = layer
                    .layer(by_method(calls.clone()))
                    .map_request(|req: http::Request<Incoming>| req.map(BodyExt::boxed));
                Client::http(common::serve(svc).await)
            }
            Placement::ServiceBuilder => Client::Oneshot(BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .concurrency_limit(64)
                    .layer(layer)
                    .service(by_method::<Body>(calls.clone())),
            )),
            Placement::RouterLayer =>
                Client::http(common::serve_axum(router(calls).layer(layer)).await),
            Placement::RouteLayer => {
                Client::http(common::serve_axum(router(calls).route_layer(layer)).await)
            }
            Placement::MethodRouterLayer => {
                let app = Router::new().route(PATH, methods(calls).layer(layer));
                Client::http(common::serve_axum(app).await)
            }
            Placement::WholeRouter => {
                let svc = layer
                    .layer(router(calls))
                    .map_request(|req: http::Request<Incoming>| req.map(Body::new));
                Client::http(common::serve(svc).await)
            }
            Placement::WholeRouterFallback => {
                let app = Router::new().fallback_service(layer.layer(router(calls)));
                Client::http(common::serve_axum(app).await)
            }
            Placement::WholeRouterNested => {
                let app = Router::new().nest_service("/api", layer.layer(router(calls)));
                Client::Http {
                    addr: common::serve_axum(app).await,
                    prefix: "/api",
                }
            }
            Placement::WholeRouterRouteService => {
                let app = Router::new().route_service(PATH, layer.layer(router(calls)));
                Client::http(common::serve_axum(app).await)
            }
            Placement::MethodRouterFallback => {
                let app = Router::new().fallback(methods(calls).layer(layer));
                Client::http(common::serve_axum(app).await)
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// The requests, and what each must get.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// `If-Match` with a tag that is not the current one.
    Stale,
    /// `If-Match` with the current tag.
    Current,
    /// No conditions.
    Unconditional,
    /// `If-None-Match: *` on the existing target (create-only).
    CreateOnly,
    /// A plain GET.
    Read,
    /// A GET with `If-None-Match` carrying the current tag.
    Revalidate,
    /// A GET resuming a download: `Range` and `If-Range` with the current tag.
    Resume,
    /// The same with a tag that is not the current one.
    StaleResume,
}

impl Case {
    const WRITES: [Case; 4] = [
        Case::Stale,
        Case::Current,
        Case::Unconditional,
        Case::CreateOnly,
    ];

    fn headers(self) -> Vec<(&'static str, String)> {
        match self {
            Case::Stale => vec![("if-match", "\"stale\"".to_owned())],
            Case::Current => vec![("if-match", current_tag())],
            Case::Unconditional | Case::Read => vec![],
            Case::CreateOnly => vec![("if-none-match", "*".to_owned())],
            Case::Revalidate => vec![("if-none-match", current_tag())],
            Case::Resume => vec![
                ("range", "bytes=0-3".to_owned()),
                ("if-range", current_tag()),
            ],
            Case::StaleResume => vec![
                ("range", "bytes=0-3".to_owned()),
                ("if-range", "\"stale\"".to_owned()),
            ],
        }
    }

    fn conditional(self) -> bool {
        matches!(self, Case::Stale | Case::Current | Case::CreateOnly)
    }
}

/// Every request sent to each (placement, source): the four writes per write method, then
/// the four reads.
fn requests() -> Vec<(Kind, Case)> {
    let writes = Kind::WRITES
        .into_iter()
        .flat_map(|kind| Case::WRITES.into_iter().map(move |case| (kind, case)));
    writes
        .chain(
            [
                Case::Read,
                Case::Revalidate,
                Case::Resume,
                Case::StaleResume,
            ]
            .map(|c| (Kind::Get, c)),
        )
        .collect()
}

/// The status and the calls a request must cause.
fn expected(eval: Eval, kind: Kind, case: Case) -> (StatusCode, Tally) {
    let none = Tally::default();
    let write = none.ran(kind).wrote();
    match (case, eval) {
        (Case::Read, _) => (StatusCode::OK, none.ran(Kind::Get)),
        (Case::Revalidate, _) => (StatusCode::NOT_MODIFIED, none.ran(Kind::Get)),
        // Never a part of another version; the handler ignores `Range`.
        (Case::StaleResume, _) => (StatusCode::OK, none.ran(Kind::Get)),
        // The lookup found the tag current and left the `Range` to the handler.
        (Case::Resume, Eval::Layer { probe: false }) => (StatusCode::OK, none.ran(Kind::Get)),
        // Nothing checked the tag before the handler: the layer did, and cut the part.
        (Case::Resume, _) => (StatusCode::PARTIAL_CONTENT, none.ran(Kind::Get)),
        (Case::Unconditional, _) => (StatusCode::NO_CONTENT, write),
        (_, Eval::Refused(_)) => (StatusCode::NOT_IMPLEMENTED, none),
        (_, Eval::Layer { probe }) => {
            let probed = if probe {
                Tally {
                    probes: 1,
                    ..none.ran(Kind::Get)
                }
            } else {
                none
            };
            match case {
                Case::Current => (
                    StatusCode::NO_CONTENT,
                    Tally {
                        evaluated: 1,
                        ..probed.ran(kind).wrote()
                    },
                ),
                _ => (StatusCode::PRECONDITION_FAILED, probed),
            }
        }
        (_, Eval::Handler) => {
            let handed = Tally {
                unevaluated: 1,
                ..none.ran(kind)
            };
            match case {
                Case::Current => (StatusCode::NO_CONTENT, handed.wrote()),
                _ => (StatusCode::PRECONDITION_FAILED, handed),
            }
        }
    }
}

/// The invariant, stated on its own: a write handler runs at most once per request, never
/// for a request the layer then answers with a non-2xx, never for a stale `If-Match` (except
/// as the evaluator `no_lookup` makes it, told so by an unevaluated `Expectation`).
fn check_invariant(what: &str, kind: Kind, case: Case, reply: &Reply, delta: Tally) {
    for write in Kind::WRITES {
        let runs = delta.runs(write);
        assert!(runs <= 1, "{what}: the {write:?} handler ran {runs} times");
        if write != kind {
            assert_eq!(runs, 0, "{what}: the {write:?} handler ran for a {kind:?}");
        }
    }
    if !reply.status.is_success() && !reply.answered_by_handler() {
        assert_eq!(
            delta.runs(kind),
            0,
            "{what}: the layer answered {} after the handler ran",
            reply.status
        );
    }
    assert_eq!(
        delta.unannounced, 0,
        "{what}: a conditional write reached a handler that nobody evaluated"
    );
    if case == Case::Stale {
        assert_eq!(delta.writes, 0, "{what}: a stale If-Match was written");
        assert_eq!(
            delta.runs(kind),
            delta.unevaluated,
            "{what}: the handler ran for a stale If-Match it was not asked to evaluate"
        );
    }
}

/// A 501 is problem+json naming the builder calls that fix it.
fn check_refusal(what: &str, why: Why, reply: &Reply) {
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{what}"
    );
    let text = reply.text();
    let names: &[&str] = match why {
        Why::NoSource => &["lookup(..)", "internal_get()", "no_lookup()"],
        Why::Misplaced => &["lookup(..)", "internal_get()"],
    };
    for name in names {
        assert!(text.contains(name), "{what}: {text} does not name {name}");
    }
}

/// Sends every request to `placement` with each source, checks each reply, and prints one
/// line per source: the status of PUT stale / current / unconditional / `If-None-Match: *`,
/// and the PUT and GET handler runs over those four.
async fn every_source_in(placement: Placement) {
    for source in placement.sources() {
        let calls = Arc::new(Calls::default());
        let client = placement.start(source, &calls).await;
        let eval = placement.eval(source);
        let mut put_line = Vec::new();
        let put_before = calls.tally();
        for (kind, case) in requests() {
            let what = format!("{placement:?} with {source:?}: {kind:?} {case:?}");
            let before = calls.tally();
            let reply = client.send(&kind.method(), &case.headers()).await;
            let delta = calls.tally().since(before);
            check_invariant(&what, kind, case, &reply, delta);
            let (status, tally) = expected(eval, kind, case);
            assert_eq!(reply.status, status, "{what}: {}", reply.text());
            assert_eq!(delta, tally, "{what}: calls");
            if let (true, Eval::Refused(why)) = (case.conditional(), eval) {
                check_refusal(&what, why, &reply);
            }
            if kind == Kind::Get {
                assert_eq!(
                    reply.headers[header::ETAG],
                    current_tag().as_str(),
                    "{what}"
                );
            }
            if reply.status == StatusCode::PARTIAL_CONTENT {
                let length = BODY.len();
                assert_eq!(
                    reply.headers[header::CONTENT_RANGE],
                    format!("bytes 0-3/{length}"),
                    "{what}"
                );
                assert_eq!(reply.text(), &BODY[..4], "{what}");
            }
            if kind == Kind::Put {
                put_line.push(reply.status.as_u16().to_string());
                if case == Case::CreateOnly {
                    let puts = calls.tally().since(put_before);
                    println!(
                        "{placement:?} | {source:?} | {} | PUT runs {} | GET runs {}",
                        put_line.join(" / "),
                        puts.runs(Kind::Put),
                        puts.runs(Kind::Get)
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn hyper_service() {
    every_source_in(Placement::Hyper).await;
}

#[tokio::test]
async fn service_builder_stack() {
    every_source_in(Placement::ServiceBuilder).await;
}

#[tokio::test]
async fn axum_router_layer() {
    every_source_in(Placement::RouterLayer).await;
}

#[tokio::test]
async fn axum_route_layer() {
    every_source_in(Placement::RouteLayer).await;
}

#[tokio::test]
async fn axum_method_router_layer() {
    every_source_in(Placement::MethodRouterLayer).await;
}

#[tokio::test]
async fn whole_router_served_directly() {
    every_source_in(Placement::WholeRouter).await;
}

#[tokio::test]
async fn whole_router_as_an_outer_routers_fallback() {
    every_source_in(Placement::WholeRouterFallback).await;
}

#[tokio::test]
async fn whole_router_nested_in_an_outer_router() {
    every_source_in(Placement::WholeRouterNested).await;
}

#[tokio::test]
async fn whole_router_as_an_outer_routers_route_service() {
    every_source_in(Placement::WholeRouterRouteService).await;
}

#[tokio::test]
async fn axum_method_router_layer_as_a_fallback() {
    every_source_in(Placement::MethodRouterFallback).await;
}

/// Why the whole-router placements differ: an outer router's fallback and `nest_service` do
/// not set `MatchedPath` (the internal GET is allowed there; `nest_service` sets axum's
/// private `MatchedNestedPath` instead), `route_service` does (the layer refuses it as if it
/// wrapped one method's handler).
#[tokio::test]
async fn which_outer_routers_set_matched_path() {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        tower::service_fn(move |req: Request| {
            *seen.lock().unwrap() = req
                .extensions()
                .get::<MatchedPath>()
                .map(|m| m.as_str().to_owned());
            ready(Ok::<_, Infallible>(StatusCode::OK.into_response()))
        })
    };
    let outer = [
        (Router::new().fallback_service(record.clone()), "/res", None),
        (
            Router::new().nest_service("/api", record.clone()),
            "/api/res",
            None,
        ),
        (
            Router::new().route_service("/res", record),
            "/res",
            Some("/res"),
        ),
    ];
    for (app, uri, expected) in outer {
        let req = http::Request::get(uri).body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
        assert_eq!(seen.lock().unwrap().take().as_deref(), expected, "{uri}");
    }
}

// ---------------------------------------------------------------------------------------
// tonic: `Server::builder().layer(..)`, `if-match` metadata, every call a POST.

#[derive(Clone, PartialEq, prost::Message)]
struct Item {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// One gRPC method's handler, counted as `kind`: `Update` as PUT, `Delete` as DELETE, the
/// client-streaming `Append` as POST.
#[derive(Clone)]
struct GrpcHandler(Kind, Arc<Calls>);

impl GrpcHandler {
    fn run<T>(&self, request: &tonic::Request<T>) -> Result<(), Status> {
        let headers = request.metadata().clone().into_headers();
        let status = handle(
            self.0,
            &self.1,
            Seen {
                method: &Method::POST,
                headers: &headers,
                expectation: request.extensions().get(),
                probe: request.extensions().get::<InternalGetRequest>().is_some(),
            },
        );
        match status.is_success() {
            true => Ok(()),
            false => Err(Status::failed_precondition(HANDLER_REFUSED)),
        }
    }
}

type GrpcAnswer = Ready<Result<tonic::Response<Item>, Status>>;

impl UnaryService<Item> for GrpcHandler {
    type Response = Item;
    type Future = GrpcAnswer;

    fn call(&mut self, request: tonic::Request<Item>) -> Self::Future {
        ready(
            self.run(&request)
                .map(|()| tonic::Response::new(request.into_inner())),
        )
    }
}

impl ClientStreamingService<Item> for GrpcHandler {
    type Response = Item;
    type Future = GrpcAnswer;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Item>>) -> Self::Future {
        // A streaming write starts writing as messages arrive: running is writing.
        ready(
            self.run(&request)
                .map(|()| tonic::Response::new(Item::default())),
        )
    }
}

#[derive(Clone)]
struct Items(Arc<Calls>);

impl NamedService for Items {
    const NAME: &'static str = "items.Items";
}

impl Service<http::Request<tonic::body::Body>> for Items {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let calls = self.0.clone();
        Box::pin(async move {
            let handler = |kind| GrpcHandler(kind, calls.clone());
            let mut grpc = Grpc::new(ProstCodec::<Item, Item>::default());
            Ok(match req.uri().path() {
                "/items.Items/Update" => grpc.unary(handler(Kind::Put), req).await,
                "/items.Items/Delete" => grpc.unary(handler(Kind::Delete), req).await,
                "/items.Items/Append" => grpc.client_streaming(handler(Kind::Post), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

async fn serve_grpc(source: Source, calls: &Arc<Calls>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let items = Items(calls.clone());
    with_source!(source, lookup_fn(current), |layer| {
        let server = tonic::transport::Server::builder()
            .layer(layer)
            .add_service(items)
            .serve_with_incoming(incoming);
        tokio::spawn(server)
    });
    addr
}

/// Calls `/items.Items/{method}` with `Item { id: "1", .. }` and these metadata entries.
async fn grpc_call(
    addr: SocketAddr,
    kind: Kind,
    metadata: &[(&'static str, String)],
) -> Result<Item, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let item = Item {
        id: "1".into(),
        value: "new content".into(),
    };
    let codec = ProstCodec::<Item, Item>::default();
    fn with_metadata<T>(message: T, metadata: &[(&'static str, String)]) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        for (key, value) in metadata {
            req.metadata_mut().insert(*key, value.parse().unwrap());
        }
        req
    }
    let response = match kind {
        Kind::Put | Kind::Delete => {
            let path = if kind == Kind::Put {
                "/items.Items/Update"
            } else {
                "/items.Items/Delete"
            };
            let req = with_metadata(item, metadata);
            grpc.unary(req, http::uri::PathAndQuery::from_static(path), codec)
                .await
        }
        _ => {
            let stream = futures_util::stream::iter(vec![item]);
            let req = with_metadata(stream, metadata);
            let path = http::uri::PathAndQuery::from_static("/items.Items/Append");
            grpc.client_streaming(req, path, codec).await
        }
    };
    response.map(tonic::Response::into_inner)
}

/// The gRPC counterpart of [`expected`]: the codes allowed, and the calls.
fn expected_grpc(source: Source, kind: Kind, case: Case) -> (Vec<Code>, Tally) {
    let eval = match source {
        Source::None => Eval::Refused(Why::NoSource),
        Source::Lookup => Eval::Layer { probe: false },
        Source::NoLookup => Eval::Handler,
        Source::InternalGet if case.conditional() => {
            // tonic routes by path, not by method: the probe is a GET to the write method
            // itself. The invariant asks that it is not performed and runs no handler; gRPC
            // answers are never hashed, so no `if-match` can pass the probe's (missing) tag.
            let refusals = vec![Code::FailedPrecondition, Code::Unimplemented];
            return (refusals, Tally::default());
        }
        Source::InternalGet => Eval::Layer { probe: true },
    };
    let (status, tally) = expected(eval, kind, case);
    let code = match status {
        StatusCode::NO_CONTENT => Code::Ok,
        StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
        StatusCode::PRECONDITION_FAILED => Code::FailedPrecondition,
        other => unreachable!("{other} for a gRPC write"),
    };
    (vec![code], tally)
}

/// The unary `Update` (PUT) and `Delete` (DELETE) and the client-streaming `Append` (POST),
/// each with the four writes, against a tonic server with the layer configured with `source`.
async fn tonic_with(source: Source) {
    let calls = Arc::new(Calls::default());
    let addr = serve_grpc(source, &calls).await;
    for kind in [Kind::Put, Kind::Delete, Kind::Post] {
        let mut line = Vec::new();
        for case in Case::WRITES {
            let what = format!("tonic with {source:?}: {kind:?} {case:?}");
            let before = calls.tally();
            let result = grpc_call(addr, kind, &case.headers()).await;
            let delta = calls.tally().since(before);
            let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
            let from_handler = result
                .as_ref()
                .is_err_and(|s| s.message() == HANDLER_REFUSED);
            for write in Kind::WRITES {
                assert!(delta.runs(write) <= 1, "{what}: {delta:?}");
            }
            if code != Code::Ok && !from_handler {
                assert_eq!(
                    delta.runs(kind),
                    0,
                    "{what}: answered {code:?} by the layer after the handler ran"
                );
            }
            assert_eq!(delta.unannounced, 0, "{what}: nobody evaluated it");
            if case == Case::Stale {
                assert_eq!(delta.writes, 0, "{what}: a stale if-match was written");
            }
            let (codes, tally) = expected_grpc(source, kind, case);
            assert!(codes.contains(&code), "{what}: {result:?}");
            assert_eq!(delta, tally, "{what}: calls");
            line.push(format!("{code:?}"));
        }
        println!("tonic | {source:?} | {kind:?} | {}", line.join(" / "));
    }
}

#[tokio::test]
async fn tonic_without_a_source() {
    tonic_with(Source::None).await;
}

#[tokio::test]
async fn tonic_with_a_lookup() {
    tonic_with(Source::Lookup).await;
}

#[tokio::test]
async fn tonic_with_the_internal_get() {
    tonic_with(Source::InternalGet).await;
}

#[tokio::test]
async fn tonic_with_no_lookup() {
    tonic_with(Source::NoLookup).await;
}

// ---------------------------------------------------------------------------------------
// The layers around ours: authentication, compression, tracing.

const TOKEN: &str = "Bearer let-me-in";

async fn require_bearer(req: Request, next: Next) -> Response<Body> {
    match req.headers().get(header::AUTHORIZATION) {
        Some(value) if value == TOKEN => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response(),
    }
}

/// Authentication outside the layer, per route (`Router::layer` with a lookup that also
/// answers reads) and around a whole router with the internal GET: a request without the
/// token gets 401 — never a 412, a 304 or an `ETag` — and no handler runs, no probe either.
#[tokio::test]
async fn authentication_outside_answers_before_any_precondition() {
    let stale = || ("if-match", "\"stale\"".to_owned());
    for whole in [false, true] {
        let calls = Arc::new(Calls::default());
        let addr = if whole {
            let svc = ServiceBuilder::new()
                .map_request(|req: http::Request<Incoming>| req.map(Body::new))
                .layer(from_fn(require_bearer))
                .layer(ConditionalLayer::new().internal_get())
                .service(router(&calls));
            common::serve(svc).await
        } else {
            let app = router(&calls)
                .layer(
                    ConditionalLayer::new()
                        .lookup(lookup_fn(current))
                        .lookup_reads(true),
                )
                .layer(from_fn(require_bearer));
            common::serve_axum(app).await
        };
        let client = Client::http(addr);
        let tries = [
            (Method::GET, vec![]),
            (Method::GET, vec![("if-none-match", current_tag())]),
            (Method::HEAD, vec![("if-none-match", current_tag())]),
            (Method::PUT, vec![stale()]),
            (Method::PUT, vec![("if-match", current_tag())]),
            (Method::PUT, vec![("if-none-match", "*".to_owned())]),
            (Method::DELETE, vec![stale()]),
            (
                Method::PATCH,
                vec![(
                    "if-unmodified-since",
                    httpdate::fmt_http_date(std::time::UNIX_EPOCH),
                )],
            ),
        ];
        for (method, headers) in tries {
            let what = format!("whole router: {whole}, {method} {headers:?} without a token");
            let reply = client.send(&method, &headers).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
            assert!(!reply.headers.contains_key(header::ETAG), "{what}");
            assert_eq!(calls.tally(), Tally::default(), "{what}");
        }
        // With the token the same stack evaluates: 304, 412, a write that runs once.
        let auth = || ("authorization", TOKEN.to_owned());
        let revalidate = [auth(), ("if-none-match", current_tag())];
        let reply = client.send(&Method::GET, &revalidate).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
        let reply = client.send(&Method::PUT, &[auth(), stale()]).await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(calls.tally().runs(Kind::Put), 0);
        let current = [auth(), ("if-match", current_tag())];
        let reply = client.send(&Method::PUT, &current).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(calls.tally().runs(Kind::Put), 1);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Around {
    CompressionOutside,
    CompressionInside,
    TraceOutside,
    TraceInside,
}

fn stacked(around: Around, source: Source, calls: &Arc<Calls>) -> Oneshot {
    let inner = by_method::<Body>(calls.clone());
    with_source!(source, lookup_fn(current), |layer| {
        match around {
            Around::CompressionOutside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .layer(CompressionLayer::new())
                    .layer(layer)
                    .service(inner),
            ),
            Around::CompressionInside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .layer(layer)
                    .layer(CompressionLayer::new())
                    .service(inner),
            ),
            Around::TraceOutside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .layer(TraceLayer::new_for_http())
                    .layer(layer)
                    .service(inner),
            ),
            Around::TraceInside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .layer(layer)
                    .layer(TraceLayer::new_for_http())
                    .service(inner),
            ),
        }
    })
}

/// Compression and tracing on either side of the layer, with a lookup and with the internal
/// GET, from a gzip client: the tag a GET gave the client lets its PUT through with one
/// handler run, a stale one gets 412 with none, an unconditional PUT runs once.
#[tokio::test]
async fn compression_and_tracing_on_either_side() {
    let gzip = || ("accept-encoding", "gzip".to_owned());
    for around in [
        Around::CompressionOutside,
        Around::CompressionInside,
        Around::TraceOutside,
        Around::TraceInside,
    ] {
        for source in [Source::Lookup, Source::InternalGet] {
            let what = format!("{around:?} with {source:?}");
            let calls = Arc::new(Calls::default());
            let client = Client::Oneshot(stacked(around, source, &calls));

            let got = client.send(&Method::GET, &[gzip()]).await;
            assert_eq!(got.status, StatusCode::OK, "{what}");
            let compressed = matches!(
                around,
                Around::CompressionOutside | Around::CompressionInside
            );
            assert_eq!(
                got.headers.get(header::CONTENT_ENCODING).is_some(),
                compressed,
                "{what}"
            );
            let served = got.headers[header::ETAG].to_str().unwrap().to_owned();

            let before = calls.tally();
            let stale = client
                .send(&Method::PUT, &[gzip(), ("if-match", "\"stale\"".into())])
                .await;
            assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{what}");
            assert_eq!(calls.tally().since(before).runs(Kind::Put), 0, "{what}");

            let before = calls.tally();
            let fresh = client
                .send(&Method::PUT, &[gzip(), ("if-match", served.clone())])
                .await;
            let runs = calls.tally().since(before).runs(Kind::Put);
            println!(
                "{what}: PUT with the tag of the gzip GET {served}: {} ({runs} run)",
                fresh.status
            );
            if around == Around::CompressionInside && source == Source::Lookup {
                // The GET's tag is of the gzip bytes, the lookup's of the identity bytes
                // (issue 9, item 6): whichever answer, the invariant holds.
                assert!(
                    (fresh.status == StatusCode::NO_CONTENT && runs == 1)
                        || (fresh.status == StatusCode::PRECONDITION_FAILED && runs == 0),
                    "{what}: {} after {runs} runs",
                    fresh.status
                );
            } else {
                assert_eq!(fresh.status, StatusCode::NO_CONTENT, "{what}");
                assert_eq!(runs, 1, "{what}");
            }

            let before = calls.tally();
            let plain = client.send(&Method::PUT, &[gzip()]).await;
            assert_eq!(plain.status, StatusCode::NO_CONTENT, "{what}");
            assert_eq!(calls.tally().since(before).runs(Kind::Put), 1, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Concurrency limits and buffers, with serialized writes.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    LimitOutside,
    LimitInside,
    BufferOutside,
    BufferInside,
}

type Store = Arc<Mutex<String>>;

/// GET answers the stored value; PUT replaces it, after a pause that lets the other
/// writers pile up.
fn store_service(
    store: Store,
    calls: Arc<Calls>,
) -> impl Service<
    http::Request<Body>,
    Response = Answer,
    Error = Infallible,
    Future = BoxFuture<'static, Result<Answer, Infallible>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |req: http::Request<Body>| {
        let (store, calls) = (store.clone(), calls.clone());
        let fut = async move {
            let kind = Kind::of(req.method()).unwrap();
            bump(&calls.handlers[kind as usize]);
            if kind == Kind::Get {
                let value = store.lock().unwrap().clone();
                return Ok(Response::new(Full::from(value)));
            }
            let value = common::collect(req.into_body()).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            *store.lock().unwrap() = String::from_utf8(value.to_vec()).unwrap();
            bump(&calls.writes);
            let mut response = Response::new(Full::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        };
        Box::pin(fut) as BoxFuture<'static, _>
    })
}

fn never(e: Infallible) -> BoxError {
    match e {}
}

type Guarded = BoxCloneService<http::Request<Body>, Response<Body>, BoxError>;

fn guarded(guard: Guard, source: Source, store: &Store, calls: &Arc<Calls>) -> Guarded {
    let inner = store_service(store.clone(), calls.clone());
    let lookup = {
        let store = store.clone();
        lookup_fn(move |_req: LookupRequest| {
            let tag = EntityTag::from_content(store.lock().unwrap().as_bytes());
            ready(Ok::<_, Infallible>(Some(Validators::new().with_etag(tag))))
        })
    };
    with_source!(source, lookup, |layer| {
        let layer = layer.serialize_writes(true);
        match guard {
            Guard::LimitOutside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .map_err(never)
                    .concurrency_limit(1)
                    .layer(layer)
                    .service(inner),
            ),
            Guard::LimitInside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .map_err(never)
                    .layer(layer)
                    .concurrency_limit(1)
                    .service(inner),
            ),
            Guard::BufferOutside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .buffer(1)
                    .layer(layer)
                    .service(inner),
            ),
            Guard::BufferInside => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_response(into_axum)
                    .layer(layer)
                    .buffer(1)
                    .service(inner),
            ),
        }
    })
}

/// Eight PUTs with the same current `If-Match`, at once, through `ConcurrencyLimit(1)` or
/// `Buffer(1)` outside or inside a layer that serializes writes: all complete, exactly one
/// wins, the PUT handler runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_buffers_with_serialized_writes() {
    const WRITERS: usize = 8;
    for guard in [
        Guard::LimitOutside,
        Guard::LimitInside,
        Guard::BufferOutside,
        Guard::BufferInside,
    ] {
        for source in [Source::Lookup, Source::InternalGet] {
            let what = format!("{guard:?} with {source:?}");
            let store: Store = Arc::new(Mutex::new("v0".to_owned()));
            let calls = Arc::new(Calls::default());
            let svc = guarded(guard, source, &store, &calls);
            let tag = common::independent_tag(b"v0");
            let writers = (0..WRITERS).map(|i| {
                let req = http::Request::put(PATH)
                    .header("if-match", &tag)
                    .body(Body::from(format!("v{}", i + 1)))
                    .unwrap();
                tokio::spawn(svc.clone().oneshot(req))
            });
            let all = futures_util::future::join_all(writers);
            let done = tokio::time::timeout(Duration::from_secs(10), all)
                .await
                .unwrap_or_else(|_| panic!("{what}: the writers did not all complete"));
            let mut statuses: Vec<u16> = done
                .into_iter()
                .map(|joined| joined.unwrap().unwrap().status().as_u16())
                .collect();
            statuses.sort_unstable();
            let mut want = vec![412; WRITERS - 1];
            want.insert(0, 204);
            assert_eq!(statuses, want, "{what}");
            assert_eq!(calls.tally().runs(Kind::Put), 1, "{what}");
            assert_eq!(calls.tally().writes, 1, "{what}");
            assert_ne!(*store.lock().unwrap(), "v0", "{what}");
        }
    }
}
