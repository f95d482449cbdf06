//! [`Conditional`]: the middleware service. `call` sorts the request (read, write, exempt)
//! and either calls the inner service at once or starts the precheck.

use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Method, Request, Response, Version};
use http_body::Body;
use tower::Service;

use crate::body::ConditionalBody;
use crate::coding::HeadEmptiedOutside;
use crate::config::Config;
use crate::expectation::Expectation;
use crate::future::{read_to_service, Exchange, LookupCall, Mode, Pending, ResponseFuture, State};
use crate::lookup::{Source, Unconfigured, VersionLookup};
use crate::precondition::{is_safe_extension, method_kind, Carried, MethodKind, Sent};
use crate::predicate::{content_type_starts_with, DefaultPredicate, Predicate};
use crate::response::{coding_accepted, Rejection, RejectionKind};

/// Middleware that answers conditional requests; build it with
/// [`ConditionalLayer`](crate::ConditionalLayer) (or
/// [`Conditional::new`] for the defaults).
///
/// GET/HEAD: eligible 200 responses get a strong `ETag` computed from their body, and a
/// matching `If-None-Match` / `If-Modified-Since` gets `304 Not Modified`. Other methods:
/// `If-Match`, `If-Unmodified-Since` and `If-None-Match` are checked against the target's
/// current validators (from the layer's [`lookup`](crate::lookup)) before the inner service
/// is called, and a failing one is answered `412 Precondition Failed` without calling it.
///
/// The inner service must be `Clone`: when validators are found first, the ready service is
/// released (so nothing is reserved while the layer waits) and a clone is readied and called
/// once the request may proceed.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceExt};
/// use tower_conditional::Conditional;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = Conditional::new(service_fn(|_req: Request<String>| async {
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
#[must_use]
pub struct Conditional<S, L = Unconfigured, P = DefaultPredicate> {
    inner: S,
    lookup: L,
    predicate: P,
    config: Arc<Config>,
}

impl<S> Conditional<S> {
    /// Wraps `inner` with the default configuration (the same as
    /// `ConditionalLayer::new().layer(inner)`).
    pub fn new(inner: S) -> Self {
        Conditional {
            inner,
            lookup: Unconfigured,
            predicate: DefaultPredicate::new(),
            config: Arc::new(Config::default()),
        }
    }
}

impl<S, L, P> Conditional<S, L, P> {
    pub(crate) fn from_parts(inner: S, lookup: L, predicate: P, config: Arc<Config>) -> Self {
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

/// The request's gRPC content type (grpc-web included), for a gRPC request.
fn grpc_content_type(headers: &http::HeaderMap) -> Option<HeaderValue> {
    content_type_starts_with(headers, b"application/grpc")
        .then(|| headers.get(header::CONTENT_TYPE).cloned())
        .flatten()
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

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = req.method().clone();
        match method_kind(&method) {
            MethodKind::Exempt => {
                let exchange = self.exchange(method, Mode::Exempt, Carried::default());
                self.call_now(exchange, req)
            }
            MethodKind::Read => self.read(method, req),
            MethodKind::Write => self.write(method, req),
        }
    }
}

impl<S, L, P> Conditional<S, L, P> {
    #[inline(always)]
    fn exchange(&self, method: Method, mode: Mode, conditions: Carried) -> Exchange<P>
    where
        P: Clone,
    {
        Exchange {
            config: self.config.clone(),
            predicate: self.predicate.clone(),
            method,
            mode,
            conditions,
            grpc: None,
            http2: false,
            coding_accepted: false,
            emptied_outside: false,
            prechecked: false,
            lookup_last_modified: None,
        }
    }

    /// A read's exchange, with what its request says about how the layer's empty answers are
    /// written: over HTTP/2; whether the client accepts a content coding (whether compression
    /// outside may encode them), read only where their size is written as a length (a HEAD,
    /// HTTP/2); whether `CodingTags` outside empties a HEAD's answer.
    #[inline(always)]
    fn read_exchange<B>(
        &self,
        method: Method,
        mode: Mode,
        conditions: Carried,
        req: &Request<B>,
    ) -> Exchange<P>
    where
        P: Clone,
    {
        let head = matches!(mode, Mode::Read { head: true, .. });
        let http2 = req.version() == Version::HTTP_2;
        let mut exchange = self.exchange(method, mode, conditions);
        exchange.http2 = http2;
        exchange.coding_accepted = coding_accepted(req.headers(), head, http2);
        exchange.emptied_outside = head && req.extensions().get::<HeadEmptiedOutside>().is_some();
        exchange
    }

    #[inline(always)]
    fn call_now<ReqBody, ResBody>(
        &mut self,
        exchange: Exchange<P>,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        let fut = self.inner.call(req);
        let after_write = None;
        ResponseFuture::new(State::Called { fut, after_write }, exchange)
    }

    /// The layer's own answer, rendered now (a custom renderer runs in `call`, whether or
    /// not the future is polled) and boxed until the future is.
    fn answer<ReqBody, ResBody>(
        &self,
        exchange: Exchange<P>,
        kind: RejectionKind,
    ) -> ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        let rejection = Rejection::new(kind, exchange.grpc.as_deref().cloned());
        let response = Box::new(self.config.render(&rejection).map(ConditionalBody::full));
        ResponseFuture::new(State::Answer { response, kind }, exchange)
    }

    /// The service readied for this request is released (whatever it reserved, a
    /// `ConcurrencyLimit` permit or a `Buffer` slot, is given back while the layer waits on a
    /// lookup or a lock); a clone is readied again when the request may proceed.
    fn release_ready(&mut self) -> S
    where
        S: Clone,
    {
        let fresh = self.inner.clone();
        let ready = mem::replace(&mut self.inner, fresh);
        let later = ready.clone();
        drop(ready);
        later
    }

    #[inline(always)]
    fn read<ReqBody, ResBody>(
        &mut self,
        method: Method,
        mut req: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        L: VersionLookup<ReqBody>,
        P: Predicate,
        ResBody: Body,
    {
        let head = matches!(method, Method::HEAD);
        let as_get = head && self.config.head_as_get;
        if head {
            // Range is defined for GET only (RFC 9110 §14.2: ignored on any other method): a
            // HEAD answers like a GET without it — and so must the GET it is forwarded as.
            req.headers_mut().remove(header::RANGE);
            req.headers_mut().remove(header::IF_RANGE);
        }
        if as_get {
            *req.method_mut() = Method::GET;
        }
        let mode = Mode::Read { head, as_get };
        let conditions = if self.lookup.is_lookup() {
            let sent = Sent::parse(req.headers());
            Sent::forget_overridden(sent.as_ref(), req.headers_mut());
            let conditions = Sent::conditions(&sent);
            let ranged = conditions.has_range && matches!(method, Method::GET);
            let ask_lookup = self.config.last_modified_from_lookup
                || (self.config.lookup_reads && !conditions.is_empty())
                || (ranged && (conditions.checks_whole() || conditions.if_range.is_some()));
            if ask_lookup {
                // Asked on the first poll; the conditions wait in the pending request's box.
                let exchange = self.read_exchange(method, mode, Carried::default(), &req);
                let pending = self.pending(req, true, sent);
                let call = LookupCall::NotReady;
                return ResponseFuture::new(State::Lookup { call, pending }, exchange);
            }
            Carried::boxed(sent)
        } else {
            // Parsed in place, in the box the exchange keeps.
            let conditions = Carried::from_headers(req.headers());
            Sent::forget_overridden(conditions.sent(), req.headers_mut());
            conditions
        };
        // The service answers at once; its response is checked against the conditions.
        let conditions = read_to_service(conditions, &mut req, &self.config);
        let exchange = self.read_exchange(method, mode, conditions, &req);
        self.call_now(exchange, req)
    }

    fn write<ReqBody, ResBody>(
        &mut self,
        method: Method,
        mut req: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        L: VersionLookup<ReqBody>,
        P: Predicate,
        ResBody: Body,
    {
        // Held by the pending request while validators are found; the exchange keeps none (a
        // write's response is not evaluated again).
        let sent = Sent::parse(req.headers());
        Sent::forget_overridden(sent.as_ref(), req.headers_mut());
        let guarded = Sent::conditions(&sent).guards_write();
        let mut exchange = self.exchange(method, Mode::Write, Carried::default());
        exchange.grpc = grpc_content_type(req.headers()).map(Box::new);
        if !guarded {
            if self.config.requires_precondition(&exchange.method) {
                return self.answer(exchange, RejectionKind::PreconditionRequired);
            }
            return self.call_now(exchange, req);
        }
        let safe = is_safe_extension(&exchange.method);
        let mut source = self.lookup.source(&req);
        if safe && matches!(source, Source::Unconfigured | Source::Misplaced) {
            // A safe method writes nothing: with nothing here to check its conditions, its
            // service may, and there is no update to lose if it does not.
            source = Source::Handler;
        }
        match source {
            Source::Unconfigured => self.unchecked(exchange, &req, RejectionKind::NoVersionSource),
            Source::Misplaced => {
                self.unchecked(exchange, &req, RejectionKind::InternalGetMisplaced)
            }
            Source::Handler => {
                let expectation = Expectation::unevaluated(Sent::conditions(&sent));
                req.extensions_mut().insert(expectation);
                self.call_now(exchange, req)
            }
            Source::Lookup => {
                // Checked once: a safe method does not wait for the write lock.
                let pending = self.pending(req, self.config.locks.is_none() || safe, sent);
                let call = LookupCall::NotReady;
                ResponseFuture::new(State::Lookup { call, pending }, exchange)
            }
            // gRPC routes by path, not by method: a GET would reach the call's own handler.
            Source::InternalGet(_) if exchange.grpc.is_some() => {
                self.unchecked(exchange, &req, RejectionKind::InternalGetMisplaced)
            }
            Source::InternalGet(get) => {
                let pending = self.pending(req, self.config.locks.is_none() || safe, sent);
                let fut = Box::pin(tower::util::Oneshot::new(pending.svc.clone(), get));
                ResponseFuture::new(State::GetHead { fut, pending }, exchange)
            }
        }
    }

    /// A conditional write nothing can check: not performed, and logged for the operator.
    fn unchecked<ReqBody, ResBody>(
        &self,
        exchange: Exchange<P>,
        req: &Request<ReqBody>,
        kind: RejectionKind,
    ) -> ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        tracing::error!(
            method = %exchange.method,
            uri = %req.uri(),
            ?kind,
            "a conditional request reached a ConditionalLayer that cannot check it; configure \
             .lookup(..) on this route (or .internal_get() where the wrapped service routes by \
             method, or .no_lookup()); answering 501, the service was not called"
        );
        self.answer(exchange, kind)
    }

    /// The request, held while its validators are found. Boxed: only requests that wait
    /// pay for it, and the response future of every request stays small.
    fn pending<ReqBody>(
        &mut self,
        req: Request<ReqBody>,
        locked: bool,
        sent: Option<Sent>,
    ) -> Box<Pending<S, ReqBody, L>>
    where
        S: Clone,
        L: Clone,
    {
        Box::new(Pending {
            svc: self.release_ready(),
            req,
            source: self.lookup.clone(),
            locked,
            sent,
        })
    }
}
