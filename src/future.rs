//! [`ResponseFuture`]: one request's life, in two stages.
//!
//! ```text
//! precheck (only when validators must be found first; the service is not ready meanwhile)
//!   Lookup ───────────┐
//!   GetHead ─► GetBody ┴─► decide ─┬─► answer (412, 404, 428, 503, a lookup's refusal, a 304)
//!                                  ├─► Locking ─► (Lookup | GetHead …) again, under the lock
//!                                  └─► Deferred
//! respond
//!   [Deferred ─►] Called ─► response ─┬─► Buffering ─► finish (304, 412, or the tagged response)
//!                                     ├─► AfterWrite ─► done    a serialized write, new ETag
//!                                     └─► finish
//!   Answer ─► done                    the layer's own answer, made in `call`
//! ```
//!
//! Each state owns exactly its data; helpers return the next state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::lock::{OwnedMutexGuard, OwnedMutexLockFuture};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::Service;

use crate::body::ConditionalBody;
use crate::buffer::{Deadline, Filled, HashBuffer};
use crate::config::Config;
use crate::expectation::Expectation;
use crate::header::{admits_coding, parse_date_value};
use crate::lookup::{Current, Source, VersionLookup};
use crate::outcome::{NoTag, Outcome, Untagged};
use crate::precondition::{evaluate, Carried, Conditions, Decision, Sent};
use crate::predicate::{fits, HeadFields, Predicate};
use crate::response::{
    into_not_modified_keeping_length, not_modified_from, not_modified_size, Rejection,
    RejectionKind,
};
use crate::validators::Validators;

pin_project! {
    /// The response future of [`Conditional`](crate::Conditional).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        #[pin]
        state: State<S, ReqBody, ResBody, L>,
        exchange: Exchange<P>,
        // The per-target write lock, from the moment it is taken to the response head.
        lock: Option<OwnedMutexGuard<()>>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateOwned]
    pub(crate) enum State<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        // Waiting for the version lookup (`pending.source`).
        Lookup {
            #[pin]
            call: LookupCall<L::Future>,
            pending: Box<Pending<S, ReqBody, L>>,
        },
        // Waiting for the head of the internal GET. Boxed: the request it holds until the
        // service is ready would make every future larger, and the internal GET is opt-in.
        GetHead {
            fut: Pin<Box<Oneshot<S, Request<ReqBody>>>>,
            pending: Box<Pending<S, ReqBody, L>>,
        },
        // Hashing the body of the internal GET.
        GetBody {
            #[pin]
            body: ResBody,
            // Boxed, as `Buffering`: a rare state must not make every future larger.
            held: Box<Hashing<Validators>>,
            pending: Box<Pending<S, ReqBody, L>>,
        },
        // Waiting for the per-target write lock.
        Locking {
            #[pin]
            fut: OwnedMutexLockFuture<()>,
            pending: Box<Pending<S, ReqBody, L>>,
        },
        // The service was called: directly from `Service::call`, or after the precheck.
        Called {
            #[pin]
            fut: S::Future,
            after_write: Option<Pin<Box<LookupOnce<L, ReqBody>>>>,
        },
        // After the precheck: the service (a clone) is readied again, then called. The
        // request stays in the pending box it waited in, not inline in every future.
        Deferred {
            pending: Box<Pending<S, ReqBody, L>>,
            after_write: Option<Pin<Box<LookupOnce<L, ReqBody>>>>,
        },
        // Holding and hashing a response body that was not whole at once. Boxed: only
        // bodies that make the layer wait pay for it, and every response future (moved by
        // each service and executor around it) stays small.
        Buffering {
            body: Pin<Box<ResBody>>,
            held: Box<Hashing<Head>>,
        },
        // A serialized write succeeded without an ETag: the lookup tells the new one.
        AfterWrite {
            fut: Pin<Box<LookupOnce<L, ReqBody>>>,
            response: Response<ResBody>,
        },
        // The layer answered in `Service::call` (the renderer ran there). Boxed: a rare
        // answer must not make every future larger.
        Answer {
            response: Box<Response<ConditionalBody<ResBody>>>,
            kind: RejectionKind,
        },
        Done,
    }
}

pin_project! {
    /// One question to a version lookup: readied first, then called with the request's head,
    /// which is built only then — where the future already has its place, instead of being
    /// moved with it from `call` through every layer that returns it.
    #[project = LookupCallProj]
    pub(crate) enum LookupCall<F> {
        NotReady,
        Called {
            #[pin]
            fut: F,
        },
    }
}

impl<F: Future> LookupCall<F> {
    /// Readies `source`, asks it about the head `head` builds, and waits for the answer.
    fn poll_ask<L, B>(
        mut self: Pin<&mut Self>,
        source: &mut L,
        head: impl FnOnce() -> crate::LookupRequest,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Current, String>>
    where
        L: VersionLookup<B, Future = F>,
        F: Future<Output = Result<Current, L::Error>>,
    {
        if let LookupCallProj::NotReady = self.as_mut().project() {
            if let Err(e) = ready!(source.poll_lookup_ready(cx)) {
                return Poll::Ready(Err(e.to_string()));
            }
            let fut = source.call_lookup(head());
            self.set(LookupCall::Called { fut });
        }
        match self.project() {
            LookupCallProj::Called { fut } => fut.poll(cx).map_err(|e| e.to_string()),
            LookupCallProj::NotReady => unreachable!("the lookup was just called"),
        }
    }
}

pin_project! {
    /// The lookup after a serialized write: its own clone of the source and the write's head.
    pub(crate) struct LookupOnce<L, B>
    where
        L: VersionLookup<B>,
    {
        source: L,
        head: Option<crate::LookupRequest>,
        #[pin]
        call: LookupCall<L::Future>,
        _body: std::marker::PhantomData<fn(B)>,
    }
}

impl<L: VersionLookup<B>, B> LookupOnce<L, B> {
    fn new(source: L, head: crate::LookupRequest) -> Self {
        LookupOnce {
            source,
            head: Some(head),
            call: LookupCall::NotReady,
            _body: std::marker::PhantomData,
        }
    }
}

impl<L: VersionLookup<B>, B> Future for LookupOnce<L, B> {
    type Output = Result<Current, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let head = this.head;
        this.call.poll_ask(
            this.source,
            || {
                head.take()
                    .expect("the head is taken once, when the lookup is called")
            },
            cx,
        )
    }
}

/// A body being read and hashed across polls, with what is kept for when it ends.
pub(crate) struct Hashing<T> {
    buf: HashBuffer,
    deadline: Deadline,
    keep: T,
}

/// The head of a response whose body is being held.
pub(crate) struct Head {
    head: http::response::Parts,
    /// The response's `Content-Length`, read once.
    declared: Option<u64>,
}

/// A request held while its target's validators are found: the service to call (a clone,
/// readied only when the request can proceed), the request, the source to ask again.
pub(crate) struct Pending<S, B, L> {
    pub(crate) svc: S,
    pub(crate) req: Request<B>,
    pub(crate) source: L,
    /// Whether this is the second look, under the write lock (or no lock is configured).
    pub(crate) locked: bool,
    /// The request's conditions, held here (in this box) until the decision: a request
    /// answered there never allocates a box for them; one that goes on to the service hands
    /// them to the exchange (reads; a write's service evaluates nothing more).
    pub(crate) sent: Option<Sent>,
}

/// What the layer knows about the request while it is in flight.
pub(crate) struct Exchange<P> {
    pub(crate) config: Arc<Config>,
    pub(crate) predicate: P,
    pub(crate) method: Method,
    pub(crate) mode: Mode,
    /// The conditions a read's response is checked against. `If-Range` and `Range` are
    /// cleared once the request goes to the service with them (from then on they are the
    /// service's to honour), and kept where the layer took them from it to check the
    /// `If-Range` itself (`read_to_service`). While validators are found first, the pending
    /// request holds the conditions instead; a write's exchange never holds any (its response
    /// is not checked again).
    pub(crate) conditions: Carried,
    /// The request's gRPC content type, for a gRPC write (boxed: rare, and the exchange
    /// lives in every response future).
    pub(crate) grpc: Option<Box<HeaderValue>>,
    /// The read came over HTTP/2 (where a 304's `Content-Length` is sent as given).
    pub(crate) http2: bool,
    /// Whether the layer's empty answers (a 304, a HEAD's) report an exact zero size
    /// ([`not_modified_size`]): where the client accepts a content coding, so that compression
    /// outside leaves them alone. Read (`Accept-Encoding`) only where a size is written as a
    /// length — a HEAD, HTTP/2; over HTTP/1.1 hyper writes none for a GET's 304, whatever its
    /// size, so there the zero stays, at no cost.
    pub(crate) coding_accepted: bool,
    /// A HEAD that [`CodingTags`](crate::CodingTags) outside empties on its way out: its
    /// empty body may report the GET's size over HTTP/2 too.
    pub(crate) emptied_outside: bool,
    /// Whether the lookup already passed the conditions before the service was called.
    pub(crate) prechecked: bool,
    /// The lookup's `Last-Modified`, for a read under `last_modified_from_lookup`.
    pub(crate) lookup_last_modified: Option<std::time::SystemTime>,
}

/// What the response of the inner service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// OPTIONS, CONNECT, TRACE: untouched.
    Exempt,
    /// GET or HEAD. `head`: the client sent HEAD; `as_get`: it was forwarded as GET.
    Read { head: bool, as_get: bool },
    /// Every other method.
    Write,
}

type Output<B, E> = Result<Response<ConditionalBody<B>>, E>;

/// A response the layer is done with, and what it did.
type Finished<B, E> = Result<(Response<ConditionalBody<B>>, Outcome), E>;

/// What a step leads to. Short-lived: built and matched at once in `poll`.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next<S, ReqBody, ResBody, L>
where
    S: Service<Request<ReqBody>>,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
{
    State(State<S, ReqBody, ResBody, L>),
    Locked(OwnedMutexGuard<()>, Box<Pending<S, ReqBody, L>>),
    Done(Finished<ResBody, S::Error>),
}

impl<S, ReqBody, ResBody, L, P> ResponseFuture<S, ReqBody, ResBody, L, P>
where
    S: Service<Request<ReqBody>>,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
{
    #[inline(always)]
    pub(crate) fn new(state: State<S, ReqBody, ResBody, L>, exchange: Exchange<P>) -> Self {
        ResponseFuture {
            state,
            exchange,
            lock: None,
        }
    }
}

impl<S, ReqBody, ResBody, L, P> std::fmt::Debug for ResponseFuture<S, ReqBody, ResBody, L, P>
where
    S: Service<Request<ReqBody>>,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("method", &self.exchange.method)
            .field("mode", &self.exchange.mode)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, L, P> Future for ResponseFuture<S, ReqBody, ResBody, L, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
    P: Predicate,
{
    type Output = Output<ResBody, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = ready!(this.state.as_mut().poll_step(this.exchange, cx));
            match next {
                Next::State(state) => this.state.set(state),
                Next::Locked(guard, mut pending) => {
                    *this.lock = Some(guard);
                    pending.locked = true;
                    this.state.set(this.exchange.look(pending));
                }
                Next::Done(output) => {
                    // The write lock is held until the response head exists, no longer.
                    *this.lock = None;
                    this.state.set(State::Done);
                    // Finished in place: the response is not moved again on its way out.
                    return Poll::Ready(match output {
                        Ok((mut response, outcome)) => {
                            this.exchange.finished(&mut response, outcome);
                            Ok(response)
                        }
                        Err(e) => Err(e),
                    });
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody, L> State<S, ReqBody, ResBody, L>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
{
    /// Advances the current state until it is done with (or must wait).
    #[inline(always)]
    fn poll_step<P: Predicate>(
        self: Pin<&mut Self>,
        exchange: &mut Exchange<P>,
        cx: &mut Context<'_>,
    ) -> Poll<Next<S, ReqBody, ResBody, L>> {
        let precheck = matches!(
            &*self,
            State::Lookup { .. }
                | State::GetHead { .. }
                | State::GetBody { .. }
                | State::Locking { .. }
        );
        if precheck {
            self.poll_precheck(exchange, cx)
        } else {
            self.poll_respond(exchange, cx)
        }
    }

    /// The first stage: the target's validators, the lock.
    fn poll_precheck<P: Predicate>(
        mut self: Pin<&mut Self>,
        exchange: &mut Exchange<P>,
        cx: &mut Context<'_>,
    ) -> Poll<Next<S, ReqBody, ResBody, L>> {
        let next = match self.as_mut().project() {
            StateProj::Lookup { call, pending } => {
                let found = ready!(call.poll_ask(
                    &mut pending.source,
                    || crate::lookup::head_of(&pending.req),
                    cx
                ));
                let StateOwned::Lookup { pending, .. } = self.take() else {
                    unreachable!("the state is Lookup")
                };
                exchange.decide(found, pending)
            }
            StateProj::GetHead { fut, .. } => {
                let response = ready!(fut.as_mut().poll(cx));
                let StateOwned::GetHead { pending, .. } = self.take() else {
                    unreachable!("the state is GetHead")
                };
                exchange.on_get_head(response, pending)
            }
            StateProj::GetBody { body, held, .. } => {
                let Hashing { buf, deadline, .. } = &mut **held;
                let filled = ready!(buf.poll_fill_within(body, deadline, &exchange.config, cx));
                let StateOwned::GetBody { held, pending, .. } = self.take() else {
                    unreachable!("the state is GetBody")
                };
                let Hashing { buf, keep, .. } = *held;
                exchange.on_get_body(filled, buf, keep, pending)
            }
            StateProj::Locking { fut, .. } => {
                let guard = ready!(fut.poll(cx));
                let StateOwned::Locking { pending, .. } = self.take() else {
                    unreachable!("the state is Locking")
                };
                Next::Locked(guard, pending)
            }
            _ => unreachable!("poll_precheck is called in the first stage"),
        };
        Poll::Ready(next)
    }

    /// The second stage: the service's response, held and hashed, finished.
    #[inline(always)]
    fn poll_respond<P: Predicate>(
        mut self: Pin<&mut Self>,
        exchange: &mut Exchange<P>,
        cx: &mut Context<'_>,
    ) -> Poll<Next<S, ReqBody, ResBody, L>> {
        let next = match self.as_mut().project() {
            StateProj::Called { fut, after_write } => {
                let response = ready!(fut.poll(cx));
                let after_write = after_write.take();
                // The service's finished future (and whatever it holds: a concurrency permit,
                // a timer) goes before the body is read.
                self.set(State::Done);
                match response {
                    Ok(response) => exchange.on_response(response, after_write, cx),
                    Err(e) => Next::Done(Err(e)),
                }
            }
            StateProj::Deferred { pending, .. } => {
                let ready = ready!(pending.svc.poll_ready(cx));
                let StateOwned::Deferred {
                    pending,
                    after_write,
                } = self.take()
                else {
                    unreachable!("the state is Deferred")
                };
                match ready {
                    Ok(()) => {
                        let Pending { mut svc, req, .. } = *pending;
                        let fut = svc.call(req);
                        Next::State(State::Called { fut, after_write })
                    }
                    Err(e) => Next::Done(Err(e)),
                }
            }
            StateProj::Buffering { body, held } => {
                let Hashing { buf, deadline, .. } = &mut **held;
                let filled =
                    ready!(buf.poll_fill_within(body.as_mut(), deadline, &exchange.config, cx));
                let StateOwned::Buffering { body, held } = self.take() else {
                    unreachable!("the state is Buffering")
                };
                let Hashing {
                    buf,
                    keep: Head { head, declared },
                    ..
                } = *held;
                exchange.on_buffered(head, body, buf, declared, filled)
            }
            StateProj::AfterWrite { fut, .. } => {
                let found = ready!(fut.as_mut().poll(cx));
                let StateOwned::AfterWrite { response, .. } = self.take() else {
                    unreachable!("the state is AfterWrite")
                };
                Next::Done(Ok((with_new_etag(response, found), Outcome::Passed)))
            }
            StateProj::Answer { .. } => {
                let StateOwned::Answer { response, kind } = self.take() else {
                    unreachable!("the state is Answer")
                };
                Next::Done(Ok((*response, Outcome::Rejected(kind))))
            }
            StateProj::Done => panic!("ResponseFuture polled after completion"),
            _ => unreachable!("poll_respond is called in the second stage"),
        };
        Poll::Ready(next)
    }
}

impl<S, ReqBody, ResBody, L> State<S, ReqBody, ResBody, L>
where
    S: Service<Request<ReqBody>>,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
{
    /// Moves the state out, leaving `Done`.
    fn take(self: Pin<&mut Self>) -> StateOwned<S, ReqBody, ResBody, L> {
        self.project_replace(State::Done)
    }
}

/// A serialized write's response, with the `ETag` the lookup found after it.
fn with_new_etag<B: Body, E: std::fmt::Display>(
    mut response: Response<B>,
    found: Result<Current, E>,
) -> Response<ConditionalBody<B>> {
    match found {
        Ok(Current::Exists(v)) => {
            if let Some(tag) = v.etag() {
                response
                    .headers_mut()
                    .insert(header::ETAG, tag.to_header_value());
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "lookup after a write failed; answering without ETag")
        }
    }
    response.map(ConditionalBody::pass_through)
}

impl<P> Exchange<P> {
    fn answer<B: Body>(&self, kind: RejectionKind) -> (Response<ConditionalBody<B>>, Outcome) {
        let rejection = Rejection::new(kind, self.grpc.as_deref().cloned());
        let response = self.config.render(&rejection).map(ConditionalBody::full);
        (response, Outcome::Rejected(kind))
    }

    fn precondition_failed<B: Body>(
        &self,
        failed: crate::precondition::Failed,
        current: Option<&Validators>,
    ) -> (Response<ConditionalBody<B>>, Outcome) {
        let kind = RejectionKind::PreconditionFailed(failed);
        let mut rejection = Rejection::new(kind, self.grpc.as_deref().cloned());
        if self.config.disclose_current_etag {
            rejection = rejection.with_current(current.and_then(|v| v.etag().cloned()));
        }
        let response = self.config.render(&rejection).map(ConditionalBody::full);
        (response, Outcome::Rejected(kind))
    }

    /// The evaluation options for `conditions`, with the current time when an `If-Range`
    /// needs it.
    fn options(&self, conditions: &Conditions) -> crate::precondition::Options {
        let mut options = self.config.options;
        if conditions.if_range.is_some() {
            options.now = Some(std::time::SystemTime::now());
        }
        options
    }

    /// The response body came from a GET (so hashing it gives the GET's tag).
    fn has_get_body(&self) -> bool {
        matches!(
            self.mode,
            Mode::Read { head: false, .. } | Mode::Read { as_get: true, .. }
        )
    }

    /// The response leaves the layer: it carries its outcome, which is also logged. An answer
    /// the layer made itself to a HEAD has no content (RFC 9110 §9.3.2), only its length.
    #[inline(always)]
    fn finished<B: Body>(&self, response: &mut Response<ConditionalBody<B>>, outcome: Outcome) {
        if matches!(self.method, Method::HEAD) {
            ConditionalBody::without_content(response);
        }
        tracing::debug!(
            ?outcome,
            method = %self.method,
            status = response.status().as_u16(),
            "conditional"
        );
        if self.config.outcome_extension {
            response.extensions_mut().insert(outcome);
        }
    }

    /// For a HEAD forwarded as GET: keep the head, drop the body, keep the GET's length.
    #[inline(always)]
    fn strip_head<B: Body>(
        &self,
        mut head: http::response::Parts,
        body: ConditionalBody<B>,
    ) -> Response<ConditionalBody<B>> {
        if self.mode
            != (Mode::Read {
                head: true,
                as_get: true,
            })
        {
            return Response::from_parts(head, body);
        }
        // A 204 has no content and a 304's length may only be the 200's (RFC 9110 §8.6):
        // neither gets a length the layer made up.
        // (hyper writes no Content-Length on a 204 or 304; for a client that accepts a
        // coding, an exact zero also keeps a compression layer outside from encoding nothing.)
        if head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED {
            let hint = not_modified_size(self.coding_accepted);
            return Response::from_parts(head, ConditionalBody::empty(hint));
        }
        // The GET's length goes in the header. Over HTTP/1.1 the empty body reports the GET's
        // size, so that a compression layer outside labels the HEAD as it does the GET (same
        // `Content-Encoding`, same per-coding tag) — hyper never sends a HEAD response's
        // body. Over HTTP/2 it would: an encoder writes its framing even for nothing, and
        // DATA on a HEAD response is a protocol error; there, for a client that accepts a
        // coding, the body reports an exact zero and compression outside leaves the HEAD
        // alone (for a GET of unknown length, a router that writes lengths from body sizes —
        // axum — then says `content-length: 0`); for one that accepts none, no size.
        let hint = body.hint();
        if let Some(n) = hint.exact() {
            if !head.headers.contains_key(header::CONTENT_LENGTH) {
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        let hint = if self.http2 && !self.emptied_outside {
            not_modified_size(self.coding_accepted)
        } else {
            hint
        };
        Response::from_parts(head, ConditionalBody::empty(hint))
    }
}

impl<P: Predicate> Exchange<P> {
    /// Starts finding the validators of `pending`'s target (again, under the lock).
    pub(crate) fn look<S, ReqBody, ResBody, L>(
        &self,
        mut pending: Box<Pending<S, ReqBody, L>>,
    ) -> State<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>> + Clone,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        match pending.source.source(&pending.req) {
            Source::Lookup => State::Lookup {
                call: LookupCall::NotReady,
                pending,
            },
            Source::InternalGet(get) => State::GetHead {
                fut: Box::pin(Oneshot::new(pending.svc.clone(), get)),
                pending,
            },
            // The source said otherwise the first time; nothing to check.
            _ => proceed(pending, None),
        }
    }

    /// The internal GET answered: its validators, or the reason there are none.
    fn on_get_head<S, ReqBody, ResBody, L>(
        &mut self,
        response: Result<Response<ResBody>, S::Error>,
        pending: Box<Pending<S, ReqBody, L>>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        let Ok(mut response) = response else {
            return self.decide(Err("the internal GET failed".into()), pending);
        };
        let status = response.status();
        // 404 and 410: nothing there; 405: nothing that answers GET there (a PUT may create).
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::METHOD_NOT_ALLOWED
        ) {
            return self.decide(Ok(Current::Absent), pending);
        }
        if status.is_client_error() || status.is_redirection() {
            // The write would be refused (401, 403, …) or sent elsewhere the same way: say
            // so, learn nothing.
            let response = response.map(ConditionalBody::pass_through);
            return Next::Done(Ok((response, Outcome::Refused)));
        }
        if !status.is_success() {
            return self.decide(Err(format!("the internal GET answered {status}")), pending);
        }
        let mut fields = HeadFields::scan(response.headers());
        let own_tag = own_etag(response.headers_mut(), &mut fields, &self.config);
        // The tag the scan already parsed, and Last-Modified.
        let found = self.validators_of(response.headers(), own_tag);
        if found.etag().is_some() {
            return self.decide(Ok(Current::Exists(found)), pending);
        }
        if self.why_untagged(&response, &fields, false, true).is_none() {
            let buf = HashBuffer::new(&self.config.hash, self.config.max_buffer, false);
            return Next::State(State::GetBody {
                body: response.into_body(),
                held: Box::new(Hashing {
                    buf,
                    deadline: Deadline::new(self.config.max_buffer_time),
                    keep: found,
                }),
                pending,
            });
        }
        self.decide(Ok(Current::Exists(found)), pending)
    }

    /// The internal GET's body ended, failed, outgrew the limit, or took too long (`None`).
    fn on_get_body<S, ReqBody, ResBody, L>(
        &mut self,
        filled: Option<Filled<ResBody::Error>>,
        buf: HashBuffer,
        mut found: Validators,
        pending: Box<Pending<S, ReqBody, L>>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>> + Clone,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        let found = match filled {
            Some(Filled::End) => {
                found.set_etag(self.config.computed(&buf.finish().0, None));
                Ok(Current::Exists(found))
            }
            // Too large to carry an ETag on reads: the same here.
            Some(Filled::Overflow) => Ok(Current::Exists(found)),
            Some(Filled::Failed(_)) => Err("the body of the internal GET failed".into()),
            None => Err("the body of the internal GET did not end within max_buffer_time".into()),
        };
        self.decide(found, pending)
    }

    /// The target's validators are known (or could not be found): decide what happens.
    fn decide<S, ReqBody, ResBody, L>(
        &mut self,
        found: Result<Current, String>,
        mut pending: Box<Pending<S, ReqBody, L>>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>> + Clone,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        let sent = pending.sent.take();
        let current = match found {
            Ok(Current::Refuse(response)) => {
                return Next::Done(Ok((response.map(ConditionalBody::full), Outcome::Refused)))
            }
            Ok(Current::Exists(v)) => Some(v),
            Ok(Current::Absent) => None,
            Err(error) if self.mode == Mode::Write => {
                tracing::error!(
                    %error,
                    method = %self.method,
                    uri = %pending.req.uri(),
                    "current validators unavailable; answering 503 without calling the service"
                );
                return Next::Done(Ok(self.answer(RejectionKind::LookupFailed)));
            }
            Err(error) => {
                // A full response is always a correct answer to a read.
                tracing::warn!(%error, uri = %pending.req.uri(), "lookup failed; the read goes to the service");
                self.conditions =
                    read_to_service(Carried::boxed(sent), &mut pending.req, &self.config);
                return Next::State(proceed(pending, None));
            }
        };
        match self.mode {
            Mode::Write => self.decide_write(current, pending, sent),
            _ => self.decide_read(current, pending, sent),
        }
    }

    fn decide_write<S, ReqBody, ResBody, L>(
        &mut self,
        current: Option<Validators>,
        mut pending: Box<Pending<S, ReqBody, L>>,
        sent: Option<Sent>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>> + Clone,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        let conditions = Sent::conditions(&sent);
        // What cannot be evaluated guards nothing: a date without a Last-Modified to compare
        // with, an empty If-None-Match list.
        let dated = current
            .as_ref()
            .and_then(Validators::last_modified)
            .is_some();
        if self.config.requires_precondition(&self.method) && !conditions.guards(dated) {
            return Next::Done(Ok(self.answer(RejectionKind::PreconditionRequired)));
        }
        let decision = evaluate(
            &self.method,
            conditions,
            current.as_ref(),
            self.options(conditions),
        );
        if let Decision::PreconditionFailed(failed) = decision {
            // RFC 9110 §13.2.1: a write that cannot create finds nothing to act on; the
            // answer without the condition, given here so nothing runs.
            if current.is_none() && !self.config.creating_methods.contains(&self.method) {
                return Next::Done(Ok(self.answer(RejectionKind::NotFound)));
            }
            return Next::Done(Ok(self.precondition_failed(failed, current.as_ref())));
        }
        if !pending.locked {
            if let Some(locks) = &self.config.locks {
                let key = self
                    .config
                    .lock_key(pending.req.uri(), pending.req.headers());
                let held = HeldLock {
                    table: Arc::as_ptr(locks) as usize,
                    key,
                };
                // The same layer applied twice (outside and inside) must not wait on itself.
                if pending.req.extensions().get::<HeldLock>() != Some(&held) {
                    let fut = locks.lock_for(held.key.clone()).lock_owned();
                    pending.req.extensions_mut().insert(held);
                    // Checked again under the lock.
                    pending.sent = sent;
                    return Next::State(State::Locking { fut, pending });
                }
            }
        }
        // The write's own service evaluates nothing more: the exchange keeps no conditions.
        let expectation = Expectation::new(conditions, current.as_ref());
        pending.req.extensions_mut().insert(expectation);
        // A safe method writes nothing: no new tag to look up after it.
        let writes = !crate::precondition::is_safe_extension(&self.method);
        let after_write = match (&self.config.locks, pending.source.is_lookup()) {
            (Some(_), true) if writes => match pending.source.source(&pending.req) {
                // Boxed: it waits in `Deferred` beside the service's future, and only
                // serialized writes have one.
                Source::Lookup => Some(Box::pin(LookupOnce::new(
                    pending.source.clone(),
                    crate::lookup::head_of(&pending.req),
                ))),
                _ => None,
            },
            _ => None,
        };
        Next::State(proceed(pending, after_write))
    }

    // Boxed on purpose: moving the pending request out of its box copies it, and a 304
    // answered here only needs the request's header map.
    #[allow(clippy::boxed_local)]
    fn decide_read<S, ReqBody, ResBody, L>(
        &mut self,
        current: Option<Validators>,
        mut pending: Box<Pending<S, ReqBody, L>>,
        sent: Option<Sent>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>> + Clone,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        // Without a current representation the service answers (typically 404).
        let Some(current) = current else {
            self.conditions = read_to_service(Carried::boxed(sent), &mut pending.req, &self.config);
            return Next::State(proceed(pending, None));
        };
        if self.config.last_modified_from_lookup {
            let now = std::time::SystemTime::now();
            self.lookup_last_modified = current.last_modified().map(|t| t.min(now));
        }
        let conditions = Sent::conditions(&sent);
        let decision = evaluate(
            &self.method,
            conditions,
            Some(&current),
            self.options(conditions),
        );
        match decision {
            Decision::PreconditionFailed(failed) => {
                return Next::Done(Ok(self.precondition_failed(failed, Some(&current))));
            }
            Decision::NotModified if self.config.lookup_reads => {
                // The request is answered here: its header map (cleared) carries the 304's.
                let reused = std::mem::take(pending.req.headers_mut());
                let (status, mut headers) = not_modified_from(&current, reused);
                // The 200's length, where the lookup knows it and it is written as given
                // (see `finish_read`).
                if matches!(self.mode, Mode::Read { head: true, .. }) || self.http2 {
                    let length = current.headers().get(header::CONTENT_LENGTH);
                    if let Some(length) = length.and_then(crate::predicate::length_of) {
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                    }
                }
                let hint = not_modified_size(self.coding_accepted);
                let mut response = Response::new(ConditionalBody::empty(hint));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                return Next::Done(Ok((response, Outcome::NotModified)));
            }
            // The client's part is of another version: the whole representation. And a 304
            // is made from the service's 200, not from a part (whose tag the layer cannot
            // compute, and whose length is not the 200's).
            Decision::IgnoreRange | Decision::NotModified => {
                pending.req.headers_mut().remove(header::RANGE);
                pending.req.headers_mut().remove(header::IF_RANGE);
            }
            // What the lookup could not evaluate (no tag for `If-None-Match`, no date for
            // `If-Modified-Since`) is evaluated on the service's response, and before `Range`
            // (RFC 9110 §13.2.2): the whole, as without a lookup.
            Decision::Proceed
                if (conditions.if_none_match.is_present() && current.etag().is_none())
                    || (conditions.if_modified_since.is_some()
                        && current.last_modified().is_none()) =>
            {
                whole_if_validated(conditions, &mut pending.req);
            }
            // `If-Range` stays on the request: the service re-checks it against the version
            // it actually serves, so a write landing in between cannot splice versions.
            Decision::Proceed => {}
        }
        self.prechecked = true;
        // The response is checked again (its own tag), so the conditions go with it.
        self.conditions = Carried::handed_over(sent);
        Next::State(proceed(pending, None))
    }

    /// The service answered.
    #[inline(always)]
    fn on_response<S, ReqBody, ResBody, L>(
        &mut self,
        response: Response<ResBody>,
        after_write: Option<Pin<Box<LookupOnce<L, ReqBody>>>>,
        cx: &mut Context<'_>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        match self.mode {
            Mode::Exempt => Next::Done(Ok((
                response.map(ConditionalBody::pass_through),
                Outcome::Passed,
            ))),
            Mode::Write => match after_write {
                Some(fut) if wants_new_etag(&self.method, &response) => {
                    Next::State(State::AfterWrite { fut, response })
                }
                _ => Next::Done(Ok((
                    response.map(ConditionalBody::pass_through),
                    Outcome::Passed,
                ))),
            },
            Mode::Read { .. } => self.on_read_response(response, cx),
        }
    }

    #[inline(always)]
    fn on_read_response<S, ReqBody, ResBody, L>(
        &mut self,
        mut response: Response<ResBody>,
        cx: &mut Context<'_>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        if !response.status().is_success() {
            let (head, body) = response.into_parts();
            let response = self.strip_head(head, ConditionalBody::pass_through(body));
            return Next::Done(Ok((response, Outcome::Untagged(Untagged::NotSuccess))));
        }
        let mut fields = HeadFields::scan(response.headers());
        let own_tag = own_etag(response.headers_mut(), &mut fields, &self.config);
        let declared = fields.declared;
        match self.why_untagged(&response, &fields, own_tag.is_some(), self.has_get_body()) {
            None => {
                let (head, body) = response.into_parts();
                let mut body = Box::pin(body);
                let mut buf = HashBuffer::new(&self.config.hash, self.config.max_buffer, true);
                // Most bodies are whole at once (one `Full` frame, a buffered handler's
                // answer): finished here, the response never moves into a waiting state.
                match buf.poll_fill(body.as_mut(), cx) {
                    Poll::Ready(filled) => {
                        self.on_buffered(head, body, buf, declared, Some(filled))
                    }
                    Poll::Pending => Next::State(State::Buffering {
                        body,
                        held: Box::new(Hashing {
                            buf,
                            deadline: Deadline::new(self.config.max_buffer_time),
                            keep: Head { head, declared },
                        }),
                    }),
                }
            }
            Some(why) => {
                let (head, body) = response.into_parts();
                let body = ConditionalBody::pass_through(body);
                self.finish_read(head, body, own_tag, Outcome::Untagged(why))
            }
        }
    }

    /// Why a 2xx read is not buffered and hashed, or `None` when it is.
    /// `get_body`: the body is a GET's (not a HEAD answered by the service itself).
    fn why_untagged<B: Body>(
        &self,
        response: &Response<B>,
        fields: &HeadFields,
        own_tag: bool,
        get_body: bool,
    ) -> Option<Untagged> {
        let why = if own_tag {
            Untagged::OwnTag
        } else if response.extensions().get::<NoTag>().is_some() {
            Untagged::OptOut
        } else if fields.no_store {
            Untagged::NoStore
        } else if !get_body {
            Untagged::Head
        } else if fields.stream {
            Untagged::Stream
        } else if !self.predicate.should_hash(response) {
            Untagged::Predicate
        } else if !fits(response, fields.declared, self.config.max_buffer) {
            Untagged::TooLarge
        } else {
            return None;
        };
        Some(why)
    }

    /// The held body ended (`Some(End)`), outgrew the limit, failed, or took too long
    /// (`None`).
    #[inline(always)]
    fn on_buffered<S, ReqBody, ResBody, L>(
        &mut self,
        head: http::response::Parts,
        body: Pin<Box<ResBody>>,
        buf: HashBuffer,
        declared: Option<u64>,
        filled: Option<Filled<ResBody::Error>>,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        match filled {
            Some(Filled::End) if declared.is_some_and(|n| n != buf.len()) => {
                // Not the representation: a HEAD handler's empty body under a declared
                // length (axum routed the HEAD before the layer made it a GET), say.
                let body = ConditionalBody::replay(buf.into_held(), None);
                self.finish_read(
                    head,
                    body,
                    None,
                    Outcome::Untagged(Untagged::LengthMismatch),
                )
            }
            Some(Filled::End) => {
                let (digest, held) = buf.finish();
                // A revalidation that matches gets its own `If-None-Match` bytes back.
                let tag = self
                    .config
                    .computed(&digest, self.conditions.if_none_match_line());
                let body = ConditionalBody::replay(held, None);
                self.finish_read(head, body, Some(tag), Outcome::Tagged)
            }
            Some(Filled::Failed(_)) => {
                tracing::error!(
                    method = %self.method,
                    "the response body failed before it was complete; answering 500"
                );
                Next::Done(Ok(self.answer(RejectionKind::IncompleteBody)))
            }
            // Send what is held, then the rest, untagged.
            Some(Filled::Overflow) | None => {
                let why = match filled {
                    Some(_) => Untagged::TooLarge,
                    None => Untagged::TimeLimit,
                };
                let body = ConditionalBody::replay(buf.into_held(), Some(body));
                self.finish_read(head, body, None, Outcome::Untagged(why))
            }
        }
    }

    /// Validators of a response: its own tag (already checked), and `Last-Modified` (its
    /// own, or the lookup's), for the conditions to be evaluated against.
    fn validators_of(&self, headers: &HeaderMap, tag: Option<crate::EntityTag>) -> Validators {
        let mut found = Validators::new();
        if let Some(tag) = tag {
            found.set_etag(tag);
        }
        let own = headers
            .get(header::LAST_MODIFIED)
            .and_then(parse_date_value);
        if let Some(time) = own.or(self.lookup_last_modified) {
            found = found.with_last_modified(time);
        }
        found
    }

    /// A 2xx read with its tag known (`tag`: computed, or the service's own): 304, 412, or
    /// the response. `outcome` is `Tagged` when `tag` was computed and goes into the
    /// response.
    #[inline(always)]
    fn finish_read<S, ReqBody, ResBody, L>(
        &self,
        mut head: http::response::Parts,
        mut body: ConditionalBody<ResBody>,
        mut tag: Option<crate::EntityTag>,
        outcome: Outcome,
    ) -> Next<S, ReqBody, ResBody, L>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        L: VersionLookup<ReqBody>,
        ResBody: Body,
    {
        // What a lookup already passed is not failed again for want of a tag on this
        // response (a 206 the layer does not hash, carrying at most a date, say). Without
        // conditions (most requests) no validators are gathered at all.
        let mut decision = Decision::Proceed;
        if !self.conditions.is_empty() && (tag.is_some() || !self.prechecked) {
            let mut found = self.validators_of(&head.headers, tag);
            let conditions = &*self.conditions;
            decision = evaluate(
                &self.method,
                conditions,
                Some(&found),
                self.options(conditions),
            );
            if let Decision::PreconditionFailed(failed) = decision {
                return Next::Done(Ok(self.precondition_failed(failed, Some(&found))));
            }
            tag = found.take_etag();
        }
        if let Some(time) = self.lookup_last_modified {
            if !head.headers.contains_key(header::LAST_MODIFIED) {
                if let Some(value) = crate::header::http_date(time) {
                    head.headers.insert(header::LAST_MODIFIED, value);
                }
            }
        }
        if outcome == Outcome::Tagged {
            if let Some(tag) = tag {
                // Moved, not cloned: the header owns the tag's bytes.
                head.headers.insert(header::ETAG, tag.into());
            }
            // The layer took the `Range` because only it could be sure to check the
            // `If-Range`, which holds: the part is cut from the body it hashed.
            if decision == Decision::Proceed {
                if let Some(range) = self.conditions.taken_range() {
                    body = partial(&mut head, body, range);
                }
            }
        }
        if decision == Decision::NotModified {
            // The 200's length where it is written as given. The body's size counts for a
            // GET's body, or a HEAD's that is not empty (a HEAD handler that sends content
            // sends the GET's, as axum's do, which axum drops later).
            let written = matches!(self.method, Method::HEAD) || self.http2;
            let size = || {
                let size = body.hint().exact();
                size.filter(|&n| self.has_get_body() || n > 0)
            };
            into_not_modified_keeping_length(&mut head, written, size);
            drop(body);
            // An exact zero where a layer outside (compression) could take it for content to
            // encode; no size where none can.
            let empty = ConditionalBody::empty(not_modified_size(self.coding_accepted));
            return Next::Done(Ok((
                Response::from_parts(head, empty),
                Outcome::NotModified,
            )));
        }
        Next::Done(Ok((self.strip_head(head, body), outcome)))
    }
}

/// A read's conditions as it goes to the service with nothing checked before it (no lookup,
/// or one that failed or found nothing). `If-Range` is the layer's to check, on the response
/// ([`Carried::take_range`]), unless the service checks it itself
/// (`service_checks_if_range`). A part is cut only for a client that accepts no content
/// coding: one that does may hold a 200 that compression outside the layer encoded under
/// the same tag (a layer inside compression cannot tell, and a misplaced `CodingTagsLayer`
/// would not either). Otherwise the whole, where the conditions need it
/// ([`whole_if_validated`]).
#[inline(always)]
pub(crate) fn read_to_service<B>(
    carried: Carried,
    req: &mut Request<B>,
    config: &Config,
) -> Carried {
    // Most requests send no condition: nothing to take or keep back.
    if carried.sent().is_none() {
        return carried;
    }
    conditions_to_service(carried, req, config)
}

fn conditions_to_service<B>(
    mut carried: Carried,
    req: &mut Request<B>,
    config: &Config,
) -> Carried {
    let get = req.method() == Method::GET;
    if get && !config.service_checks_if_range {
        let may_cut =
            |headers: &HeaderMap| !admits_coding(headers.get_all(header::ACCEPT_ENCODING));
        if carried.take_range(req.headers_mut(), may_cut) {
            return carried;
        }
    }
    whole_if_validated(&carried, req);
    carried.drop_range();
    carried
}

/// The one range `range` asks for (RFC 9110 §14.1.2) of a 200 whose body the layer held
/// whole, as a 206 (§15.3.7: `Content-Range`, the part's `Content-Length`, the 200's other
/// fields). Several ranges, or one that cannot be satisfied, get the 200 as it is (§14.2: a
/// server may ignore `Range`).
fn partial<B: Body>(
    head: &mut http::response::Parts,
    body: ConditionalBody<B>,
    range: &HeaderValue,
) -> ConditionalBody<B> {
    // A 200 that says it takes no ranges is sent whole.
    let refuses = head
        .headers
        .get(header::ACCEPT_RANGES)
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"none"));
    let Some(len) = body
        .held_len()
        .filter(|_| head.status == StatusCode::OK && !refuses)
    else {
        return body;
    };
    let Some((first, last)) = crate::header::byte_range(range.as_bytes(), len) else {
        return body;
    };
    let content_range = HeaderValue::try_from(format!("bytes {first}-{last}/{len}"))
        .expect("digits, a dash and a slash are a valid header value");
    head.status = StatusCode::PARTIAL_CONTENT;
    // What speaks for the whole content, not the part: its digests (RFC 9530 §2;
    // `Content-MD5`), and the trailers it announces, which the part goes without.
    for whole in ["content-digest", "content-md5", "trailer"] {
        head.headers.remove(whole);
    }
    head.headers.insert(header::CONTENT_RANGE, content_range);
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
    body.into_part(first, last)
}

/// Conditions that only the whole representation can answer (`Conditions::needs_whole`):
/// without validators from a lookup, ask for the whole (a server may always ignore `Range`,
/// RFC 9110 §14.2).
pub(crate) fn whole_if_validated<B>(conditions: &Conditions, req: &mut Request<B>) {
    if conditions.has_range && conditions.needs_whole() {
        req.headers_mut().remove(header::RANGE);
        req.headers_mut().remove(header::IF_RANGE);
    }
}

/// Marks a request whose write lock is held, so a second application of the same layer
/// (sharing its lock table) does not wait for the lock its own request holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldLock {
    table: usize,
    key: String,
}

/// Calls the service once it is ready again.
fn proceed<S, ReqBody, ResBody, L>(
    pending: Box<Pending<S, ReqBody, L>>,
    after_write: Option<Pin<Box<LookupOnce<L, ReqBody>>>>,
) -> State<S, ReqBody, ResBody, L>
where
    S: Service<Request<ReqBody>>,
    L: VersionLookup<ReqBody>,
    ResBody: Body,
{
    State::Deferred {
        pending,
        after_write,
    }
}

/// Whether a successful write's response should get the tag the lookup reports after it:
/// only when it describes the request's own target — not a 201, whose tag would be the
/// created resource's (RFC 9110 §15.3.2), nor a response naming another resource — and not
/// for PUT or DELETE.
fn wants_new_etag<B>(method: &Method, response: &Response<B>) -> bool {
    let status = response.status();
    status.is_success()
        && status != StatusCode::CREATED
        && method != Method::DELETE
        // RFC 9110 §9.3.4: no validator in a PUT's response unless the content was stored
        // exactly as sent — which only the handler knows.
        && method != Method::PUT
        && !response.headers().contains_key(header::ETAG)
        && !response.headers().contains_key(header::CONTENT_LOCATION)
        && !response.headers().contains_key(header::LOCATION)
}

/// The service's own `ETag`, when it sent exactly one valid one. An invalid or repeated field
/// is removed (and logged once per layer): the body is hashed instead, on reads and on the
/// internal GET alike, so both agree on one tag per representation.
fn own_etag(
    headers: &mut HeaderMap,
    fields: &mut HeadFields,
    config: &Config,
) -> Option<crate::EntityTag> {
    match fields.etag_lines {
        0 => return None,
        1 if fields.etag.is_some() => return fields.etag.take(),
        _ => {}
    }
    config.warn_invalid_etag();
    headers.remove(header::ETAG);
    None
}
