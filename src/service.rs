//! [`Conditional`]: the middleware service.

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Method, Request, Response};
use http_body::Body;
use tower::Service;

use crate::body::ConditionalBody;
use crate::future::{Ctx, Mode, Plan, ResponseFuture, State, Step};
use crate::layer::{ConditionalLayer, Config};
use crate::lookup::sealed::{Begin, Source};
use crate::lookup::{InnerGet, VersionLookup};
use crate::precondition::{method_kind, Conditions, MethodKind};
use crate::predicate::{content_type_starts_with, DefaultPredicate, Predicate};
use crate::response::{Rejection, RejectionKind};

/// Middleware that answers conditional requests; build it with [`ConditionalLayer`].
///
/// GET/HEAD: eligible 200 responses get a strong `ETag` computed from their body, and a
/// matching `If-None-Match` / `If-Modified-Since` gets `304 Not Modified`. Other methods:
/// `If-Match`, `If-Unmodified-Since` and `If-None-Match` are checked against the target's
/// current validators before the inner service is called, and a failing one is answered
/// `412 Precondition Failed` without calling it.
///
/// The inner service must be `Clone`: when a lookup comes first, the ready service is
/// moved into the response future and a clone takes its place.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_conditional::ConditionalLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ConditionalLayer::new().layer(service_fn(|_req: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
/// }));
/// let first = svc.clone().oneshot(Request::new(String::new())).await.unwrap();
/// let tag = first.headers()["etag"].clone();
///
/// let mut again = Request::new(String::new());
/// again.headers_mut().insert("if-none-match", tag);
/// assert_eq!(svc.oneshot(again).await.unwrap().status(), StatusCode::NOT_MODIFIED);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Conditional<S, L = InnerGet, P = DefaultPredicate> {
    inner: S,
    lookup: L,
    predicate: P,
    config: Arc<Config>,
}

impl<S, L, P> Conditional<S, L, P> {
    pub(crate) fn new(inner: S, lookup: L, predicate: P, config: Arc<Config>) -> Self {
        Conditional {
            inner,
            lookup,
            predicate,
            config,
        }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl Conditional<()> {
    /// The default layer; the same as [`ConditionalLayer::new`].
    pub fn layer() -> ConditionalLayer {
        ConditionalLayer::new()
    }
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    content_type_starts_with(headers, b"application/grpc")
}

impl<S, L, P, ReqBody, ResBody> Service<Request<ReqBody>> for Conditional<S, L, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    L: VersionLookup<ReqBody>,
    P: Predicate,
    ResBody: Body,
{
    type Response = Response<ConditionalBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody, L, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let method = req.method().clone();
        let kind = method_kind(&method);
        let mut ctx = Ctx::new(
            method,
            Mode::PassThrough,
            self.config.clone(),
            self.predicate.clone(),
        );
        match kind {
            MethodKind::Exempt => {}
            MethodKind::Read => {
                ctx.conditions = Conditions::from_headers(req.headers());
                let head = ctx.method == Method::HEAD;
                let as_get = head && self.config.head_as_get;
                ctx.mode = Mode::Read { head, as_get };
                if as_get {
                    *req.method_mut() = Method::GET;
                    // Range is defined for GET only (RFC 9110 §14.2): a HEAD answers like a
                    // GET without it, so the forwarded GET must not carry it.
                    req.headers_mut().remove(header::RANGE);
                    req.headers_mut().remove(header::IF_RANGE);
                    ctx.conditions.has_range = false;
                }
                ctx.lookup_answers_reads = self.config.lookup_reads && self.lookup.is_service();
                let if_range = ctx.method == Method::GET
                    && ctx.conditions.has_range
                    && ctx.conditions.if_range.is_some();
                let from_lookup = ctx.lookup_answers_reads && !ctx.conditions.is_empty();
                if if_range || from_lookup {
                    if let Some(plan) = self.plan(&mut ctx, &req) {
                        return self.defer(ctx, req, plan);
                    }
                }
            }
            MethodKind::Write => {
                ctx.conditions = Conditions::from_headers(req.headers());
                ctx.grpc = is_grpc(req.headers());
                ctx.mode = Mode::Write;
                if !ctx.conditions.guards_write() {
                    if self.config.require_preconditions {
                        let rejection =
                            Rejection::new(RejectionKind::PreconditionRequired, ctx.grpc);
                        let response = self.config.render(&rejection);
                        return ResponseFuture::new(State::immediate(response), ctx);
                    }
                } else if let Some(plan) = self.plan(&mut ctx, &req) {
                    return self.defer(ctx, req, plan);
                }
            }
        }
        let fut = self.inner.call(req);
        ResponseFuture::new(State::Inner { fut }, ctx)
    }
}

impl<S, L, P> Conditional<S, L, P> {
    /// How to find the validators for `req`, or `None` when there is no source.
    fn plan<ReqBody, LF, T>(
        &mut self,
        ctx: &mut Ctx<S, ReqBody, LF, T>,
        req: &Request<ReqBody>,
    ) -> Option<Plan<LF>>
    where
        L: Source<ReqBody, Future = LF>,
    {
        match self.lookup.begin(req) {
            Begin::Skip => None,
            Begin::Lookup(fut) => Some(Plan::Lookup(fut)),
            Begin::Probe(probe) => {
                ctx.probe = Some(probe);
                Some(Plan::Probe)
            }
        }
    }

    /// Holds the request until its validators are known.
    fn defer<ReqBody, ResBody>(
        &mut self,
        mut ctx: Ctx<S, ReqBody, L::Future, P>,
        req: Request<ReqBody>,
        plan: Plan<L::Future>,
    ) -> ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        L: Source<ReqBody>,
        P: Predicate,
        ResBody: Body,
    {
        // `self.inner` is the service `poll_ready` readied: it goes with this request, and
        // a clone (not yet ready) stays for the next one.
        let clone = self.inner.clone();
        ctx.svc = Some(mem::replace(&mut self.inner, clone));
        ctx.svc_ready = true;

        let state = match (&self.config.locks, ctx.mode) {
            (Some(locks), Mode::Write) => {
                if let Begin::Lookup(fut) = self.lookup.begin(&req) {
                    if self.lookup.is_service() {
                        ctx.after_write = Some(fut);
                    }
                }
                let lock = locks.lock_for(req.uri().path());
                ctx.request = Some(req);
                State::Locking {
                    fut: lock.lock_owned(),
                    next: Some(plan),
                }
            }
            _ => {
                ctx.request = Some(req);
                match ctx.start(plan) {
                    Step::Next(state) => state,
                    Step::Done(_) => unreachable!("starting a lookup never finishes at once"),
                }
            }
        };
        ResponseFuture::new(state, ctx)
    }
}
