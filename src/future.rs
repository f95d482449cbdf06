//! [`ResponseFuture`]: the state machine behind one request.
//!
//! ```text
//! call ─┬─► Inner ─┬─► Buffering ─► done      reads, exempt methods, unguarded writes
//!       │          └─► AfterWrite ─► done     a serialized write answered without ETag
//!       ├─► [Locking] ─► Lookup ──────────────────────────► Inner ─► …
//!       ├─► [Locking] ─► Probe ─► [ProbeBody] ─► AwaitReady ─► Inner ─► …
//!       └─► Immediate                         428 without calling anything
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::lock::{OwnedMutexGuard, OwnedMutexLockFuture};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, SizeHint};
use pin_project_lite::pin_project;
use tower::Service;

use crate::body::ConditionalBody;
use crate::etag::ETagHasher;
use crate::header::parse_date_value;
use crate::layer::Config;
use crate::lookup::sealed::Source;
use crate::precondition::{evaluate, Conditions, Decision, Expectation, Validators};
use crate::predicate::{may_fit, Predicate};
use crate::response::{into_not_modified, Rejection, RejectionKind};

pin_project! {
    /// The response future of [`Conditional`](crate::Conditional).
    pub struct ResponseFuture<S, ReqBody, ResBody, L, P>
    where
        S: Service<Request<ReqBody>>,
        L: Source<ReqBody>,
    {
        #[pin]
        state: State<S::Future, L::Future, ResBody>,
        ctx: Ctx<S, ReqBody, L::Future, P>,
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<F, LF, B> {
        // Waiting for the per-target write lock; then `next` starts.
        Locking {
            #[pin]
            fut: OwnedMutexLockFuture<()>,
            next: Option<Plan<LF>>,
        },
        // Waiting for the version lookup.
        Lookup {
            #[pin]
            fut: LF,
        },
        // Waiting for the head of the internal GET.
        Probe {
            #[pin]
            fut: F,
        },
        // Hashing the body of the internal GET.
        ProbeBody {
            #[pin]
            body: B,
            hasher: ETagHasher,
            len: usize,
            found: Option<Validators>,
        },
        // The inner service was used by the probe: wait until it is ready again.
        AwaitReady,
        // Waiting for the inner service's response.
        Inner {
            #[pin]
            fut: F,
        },
        // Holding and hashing the response body.
        Buffering {
            head: Option<http::response::Parts>,
            body: Option<Pin<Box<B>>>,
            hasher: ETagHasher,
            chunks: VecDeque<Bytes>,
            len: usize,
            trailers: Option<HeaderMap>,
        },
        // A write succeeded without an ETag: ask the lookup for the new one (under the lock).
        AfterWrite {
            #[pin]
            fut: LF,
            response: Option<Response<B>>,
        },
        // The layer answered by itself.
        Immediate {
            response: Option<Response<Bytes>>,
        },
        Done,
    }
}

type Output<B, E> = Result<Response<ConditionalBody<B>>, E>;

/// Either the next state, or the final output.
pub(crate) enum Step<F, LF, B: Body, E> {
    Next(State<F, LF, B>),
    Done(Output<B, E>),
}

impl<S, ReqBody, ResBody, L, P> ResponseFuture<S, ReqBody, ResBody, L, P>
where
    S: Service<Request<ReqBody>>,
    L: Source<ReqBody>,
{
    pub(crate) fn new(
        state: State<S::Future, L::Future, ResBody>,
        ctx: Ctx<S, ReqBody, L::Future, P>,
    ) -> Self {
        ResponseFuture { state, ctx }
    }
}

impl<S, ReqBody, ResBody, L, P> std::fmt::Debug for ResponseFuture<S, ReqBody, ResBody, L, P>
where
    S: Service<Request<ReqBody>>,
    L: Source<ReqBody>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("method", &self.ctx.method)
            .finish_non_exhaustive()
    }
}

impl<F, LF, B> State<F, LF, B> {
    pub(crate) fn immediate(response: Response<Bytes>) -> Self {
        State::Immediate {
            response: Some(response),
        }
    }
}

impl<S, ReqBody, ResBody, L, P> Future for ResponseFuture<S, ReqBody, ResBody, L, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    L: Source<ReqBody>,
    ResBody: Body,
    P: Predicate,
{
    type Output = Result<Response<ConditionalBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let ctx = this.ctx;
        loop {
            let step = match this.state.as_mut().project() {
                StateProj::Locking { fut, next } => {
                    let guard = ready!(fut.poll(cx));
                    ctx.lock = Some(guard);
                    ctx.start(next.take().expect("Locking polled after it finished"))
                }
                StateProj::Lookup { fut } => {
                    let found = ready!(fut.poll(cx));
                    ctx.on_validators(found)
                }
                StateProj::Probe { fut } => match ready!(fut.poll(cx)) {
                    Ok(response) => ctx.on_probe_response(response),
                    Err(e) => Step::Done(Err(e)),
                },
                StateProj::ProbeBody {
                    mut body,
                    hasher,
                    len,
                    found,
                } => loop {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Ok(mut data) = frame.into_data() {
                                // Zero-copy for `Bytes`; other buffers are gathered once.
                                let chunk = data.copy_to_bytes(data.remaining());
                                *len += chunk.len();
                                if *len > ctx.config.max_buffer {
                                    // Too large to carry an ETag on reads; same here.
                                    break ctx.on_validators(Ok::<_, &str>(found.take()));
                                }
                                hasher.update(&chunk);
                            }
                        }
                        Some(Err(_)) => {
                            break ctx.on_validators(Err("the body of the internal GET failed"));
                        }
                        None => {
                            let mut v = found.take().unwrap_or_default();
                            v.etag = Some(std::mem::take(hasher).finish());
                            break ctx.on_validators(Ok::<_, &str>(Some(v)));
                        }
                    }
                },
                StateProj::AwaitReady => {
                    let svc = ctx
                        .svc
                        .as_mut()
                        .expect("service held for the deferred call");
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        Step::Done(Err(e))
                    } else {
                        ctx.svc_ready = true;
                        ctx.call_inner()
                    }
                }
                StateProj::Inner { fut } => match ready!(fut.poll(cx)) {
                    Ok(response) => ctx.on_response(response),
                    Err(e) => Step::Done(Err(e)),
                },
                StateProj::Buffering {
                    head,
                    body,
                    hasher,
                    chunks,
                    len,
                    trailers,
                } => {
                    let inner = body.as_mut().expect("Buffering polled after it finished");
                    loop {
                        match ready!(inner.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => match frame.into_data() {
                                Ok(mut data) => {
                                    let chunk = data.copy_to_bytes(data.remaining());
                                    if chunk.is_empty() {
                                        continue;
                                    }
                                    *len += chunk.len();
                                    chunks.push_back(chunk);
                                    if *len > ctx.config.max_buffer {
                                        // Send what is held, then stream the rest, untagged.
                                        let replay = ConditionalBody::replay(
                                            std::mem::take(chunks),
                                            None,
                                            None,
                                            body.take(),
                                        );
                                        let head = head.take().expect("head held");
                                        let found = ctx.validators_without_hash(&head.headers);
                                        break ctx.finish_read(head, replay, found, false);
                                    }
                                    hasher.update(chunks.back().expect("just pushed"));
                                }
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        match trailers {
                                            Some(held) => held.extend(t),
                                            None => *trailers = Some(t),
                                        }
                                    }
                                }
                            },
                            Some(Err(e)) => {
                                // No ETag for content that did not arrive whole; the error
                                // reaches the client after the bytes that did.
                                let replay = ConditionalBody::replay(
                                    std::mem::take(chunks),
                                    None,
                                    Some(e),
                                    None,
                                );
                                let head = head.take().expect("head held");
                                break Step::Done(Ok(ctx.strip_head(head, replay)));
                            }
                            None => {
                                let head = head.take().expect("head held");
                                let found = Validators {
                                    etag: Some(std::mem::take(hasher).finish()),
                                    // Only a condition reads it.
                                    last_modified: if ctx.conditions.is_empty() {
                                        None
                                    } else {
                                        head.headers
                                            .get(header::LAST_MODIFIED)
                                            .and_then(parse_date_value)
                                    },
                                };
                                let replay = ConditionalBody::replay(
                                    std::mem::take(chunks),
                                    trailers.take(),
                                    None,
                                    None,
                                );
                                break ctx.finish_read(head, replay, found, true);
                            }
                        }
                    }
                }
                StateProj::AfterWrite { fut, response } => {
                    let found = ready!(fut.poll(cx));
                    let mut response = response
                        .take()
                        .expect("AfterWrite polled after it finished")
                        .map(ConditionalBody::pass_through);
                    match found {
                        Ok(Some(Validators {
                            etag: Some(tag), ..
                        })) => {
                            response
                                .headers_mut()
                                .insert(header::ETAG, tag.to_header_value());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "lookup after a write failed; answering without ETag")
                        }
                    }
                    Step::Done(Ok(response))
                }
                StateProj::Immediate { response } => {
                    let response = response.take().expect("Immediate polled after it finished");
                    Step::Done(Ok(response.map(ConditionalBody::full)))
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            match step {
                Step::Next(next) => this.state.set(next),
                Step::Done(output) => {
                    // Release the write lock as soon as the response head exists.
                    ctx.lock = None;
                    this.state.set(State::Done);
                    return Poll::Ready(output);
                }
            }
        }
    }
}

/// How the validators of a deferred request will be found.
pub(crate) enum Plan<LF> {
    /// Await this lookup future.
    Lookup(LF),
    /// Send `Ctx::probe` to the inner service.
    Probe,
}

/// What the response of the inner service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// OPTIONS, CONNECT, TRACE: untouched.
    PassThrough,
    /// GET or HEAD. `head`: the client sent HEAD; `as_get`: it was forwarded as GET.
    Read { head: bool, as_get: bool },
    /// Every other method.
    Write,
}

/// Everything the state machine needs besides its state.
pub(crate) struct Ctx<S, ReqBody, LF, P> {
    pub(crate) method: Method,
    pub(crate) mode: Mode,
    pub(crate) config: Arc<Config>,
    pub(crate) predicate: P,
    pub(crate) conditions: Conditions,
    pub(crate) grpc: bool,
    /// Whether a 304 or 412 decided from the lookup alone may be answered without the
    /// inner service (`lookup_reads` with a lookup service).
    pub(crate) lookup_answers_reads: bool,
    /// The ready inner service, for a call made after finding validators.
    pub(crate) svc: Option<S>,
    /// Whether `svc` is still ready (false once the probe used it).
    pub(crate) svc_ready: bool,
    /// The request, held while its validators are found.
    pub(crate) request: Option<Request<ReqBody>>,
    /// The internal GET, until it is sent.
    pub(crate) probe: Option<Request<ReqBody>>,
    /// What the lookup or the probe found, before the inner service ran.
    pub(crate) known: Option<Validators>,
    /// The lookup to run after a successful write (serialized writes only).
    pub(crate) after_write: Option<LF>,
    pub(crate) lock: Option<OwnedMutexGuard<()>>,
}

impl<S, ReqBody, LF, P> Ctx<S, ReqBody, LF, P> {
    pub(crate) fn new(method: Method, mode: Mode, config: Arc<Config>, predicate: P) -> Self {
        Ctx {
            method,
            mode,
            config,
            predicate,
            conditions: Conditions::default(),
            grpc: false,
            lookup_answers_reads: false,
            svc: None,
            svc_ready: false,
            request: None,
            probe: None,
            known: None,
            after_write: None,
            lock: None,
        }
    }

    pub(crate) fn reject<B: Body>(&self, rejection: Rejection) -> Response<ConditionalBody<B>> {
        self.config.render(&rejection).map(ConditionalBody::full)
    }

    /// The evaluation options, with the current time when an `If-Range` needs it.
    fn options(&self) -> crate::precondition::Options {
        let mut options = self.config.options;
        if self.conditions.if_range.is_some() {
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

    /// For a HEAD forwarded as GET: keep the head, drop the body, keep its length.
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
        let hint = body.hint();
        if let Some(n) = hint.exact() {
            if !head.headers.contains_key(header::CONTENT_LENGTH) {
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        Response::from_parts(head, ConditionalBody::empty(hint))
    }

    /// Validators of a response that was not hashed: its own headers, completed by what the
    /// lookup said before the call.
    fn validators_without_hash(&self, headers: &HeaderMap) -> Validators {
        let mut found = Validators::from_headers(headers);
        if let Some(known) = &self.known {
            if found.etag.is_none() {
                found.etag.clone_from(&known.etag);
            }
            if found.last_modified.is_none() {
                found.last_modified = known.last_modified;
            }
        }
        found
    }
}

fn not_modified_from<B: Body>(current: &Validators) -> Response<ConditionalBody<B>> {
    let mut response = Response::new(ConditionalBody::empty(SizeHint::new()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    if let Some(tag) = &current.etag {
        headers.insert(header::ETAG, tag.to_header_value());
    } else if let Some(time) = current.last_modified {
        if let Some(v) = crate::header::http_date(time) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
    response
}

impl<S, ReqBody, ResBody, LF, LE, P> Ctx<S, ReqBody, LF, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    LF: Future<Output = Result<Option<Validators>, LE>>,
    LE: std::fmt::Display,
    ResBody: Body,
    P: Predicate,
{
    /// Starts finding validators (after the lock, when there is one).
    pub(crate) fn start(&mut self, plan: Plan<LF>) -> Step<S::Future, LF, ResBody, S::Error> {
        match plan {
            Plan::Lookup(fut) => Step::Next(State::Lookup { fut }),
            Plan::Probe => {
                let probe = self.probe.take().expect("probe request prepared");
                let svc = self.svc.as_mut().expect("service held for the probe");
                self.svc_ready = false;
                Step::Next(State::Probe {
                    fut: svc.call(probe),
                })
            }
        }
    }

    fn call_inner(&mut self) -> Step<S::Future, LF, ResBody, S::Error> {
        if !self.svc_ready {
            return Step::Next(State::AwaitReady);
        }
        let request = self
            .request
            .take()
            .expect("request held for the deferred call");
        let svc = self
            .svc
            .as_mut()
            .expect("service held for the deferred call");
        Step::Next(State::Inner {
            fut: svc.call(request),
        })
    }

    /// The current validators are known (or could not be found): decide.
    fn on_validators<E: std::fmt::Display>(
        &mut self,
        found: Result<Option<Validators>, E>,
    ) -> Step<S::Future, LF, ResBody, S::Error> {
        let current = match found {
            Ok(current) => current,
            Err(error) => {
                let uri = self
                    .request
                    .as_ref()
                    .map(|r| r.uri().clone())
                    .unwrap_or_default();
                tracing::error!(
                    %error,
                    method = %self.method,
                    %uri,
                    "current validators unavailable; answering 503 without calling the service"
                );
                let rejection = Rejection::new(RejectionKind::LookupFailed, self.grpc);
                return Step::Done(Ok(self.reject(rejection)));
            }
        };
        let decision = evaluate(
            &self.method,
            &self.conditions,
            current.as_ref(),
            self.options(),
        );
        let request = self.request.as_mut().expect("request held while deciding");
        match decision {
            // RFC 9110 §13.2.1: preconditions are ignored where the answer without them would
            // not be 2xx. A read of nothing is the service's to answer (typically 404); so is
            // a write that cannot create, which the layer answers 404 without running it.
            _ if current.is_none() && matches!(self.mode, Mode::Read { .. }) => {}
            Decision::PreconditionFailed(_)
                if current.is_none() && !self.config.creating_methods.contains(&self.method) =>
            {
                let rejection = Rejection::new(RejectionKind::NotFound, self.grpc);
                return Step::Done(Ok(self.reject(rejection)));
            }
            Decision::PreconditionFailed(failed) => {
                let rejection =
                    Rejection::new(RejectionKind::PreconditionFailed(failed), self.grpc)
                        .with_current(current.and_then(|v| v.etag));
                return Step::Done(Ok(self.reject(rejection)));
            }
            Decision::NotModified if self.lookup_answers_reads => {
                let current = current.unwrap_or_default();
                return Step::Done(Ok(not_modified_from(&current)));
            }
            // Let the service answer; its response is evaluated again, with all its fields.
            Decision::NotModified => {}
            Decision::IgnoreRange => {
                request.headers_mut().remove(header::RANGE);
                request.headers_mut().remove(header::IF_RANGE);
                self.conditions.has_range = false;
                self.conditions.if_range = None;
            }
            Decision::Proceed => {
                if self.conditions.if_range.take().is_some() {
                    // Evaluated here; the service only sees the Range it must honour.
                    request.headers_mut().remove(header::IF_RANGE);
                }
                if self.mode == Mode::Write {
                    let expectation = Expectation::new(&self.conditions, current.as_ref());
                    request.extensions_mut().insert(expectation);
                }
            }
        }
        self.known = current;
        self.call_inner()
    }

    fn on_probe_response(
        &mut self,
        response: Response<ResBody>,
    ) -> Step<S::Future, LF, ResBody, S::Error> {
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return self.on_validators(Ok::<_, &str>(None));
        }
        if !status.is_success() {
            return self.on_validators(Err(format!("the internal GET answered {status}")));
        }
        let found = Validators::from_headers(response.headers());
        if found.etag.is_none()
            && self.predicate.should_hash(&response)
            && may_fit(&response, self.config.max_buffer)
        {
            return Step::Next(State::ProbeBody {
                body: response.into_body(),
                hasher: ETagHasher::with_algorithm(self.config.hash),
                len: 0,
                found: Some(found),
            });
        }
        self.on_validators(Ok::<_, &str>(Some(found)))
    }

    fn on_response(
        &mut self,
        response: Response<ResBody>,
    ) -> Step<S::Future, LF, ResBody, S::Error> {
        match self.mode {
            Mode::PassThrough => Step::Done(Ok(response.map(ConditionalBody::pass_through))),
            Mode::Write => {
                let needs_tag = response.status().is_success()
                    && !response.headers().contains_key(header::ETAG)
                    && self.method != Method::DELETE;
                match (needs_tag, self.after_write.take()) {
                    (true, Some(fut)) => Step::Next(State::AfterWrite {
                        fut,
                        response: Some(response),
                    }),
                    _ => Step::Done(Ok(response.map(ConditionalBody::pass_through))),
                }
            }
            Mode::Read { .. } => {
                if !response.status().is_success() {
                    let (head, body) = response.into_parts();
                    let body = ConditionalBody::pass_through(body);
                    return Step::Done(Ok(self.strip_head(head, body)));
                }
                if !response.headers().contains_key(header::ETAG)
                    && self.has_get_body()
                    && self.predicate.should_hash(&response)
                    && may_fit(&response, self.config.max_buffer)
                {
                    let (head, body) = response.into_parts();
                    return Step::Next(State::Buffering {
                        head: Some(head),
                        body: Some(Box::pin(body)),
                        hasher: ETagHasher::with_algorithm(self.config.hash),
                        chunks: VecDeque::new(),
                        len: 0,
                        trailers: None,
                    });
                }
                let (mut head, body) = response.into_parts();
                let found = self.validators_without_hash(&head.headers);
                if let (Some(tag), false) = (&found.etag, head.headers.contains_key(header::ETAG)) {
                    // The lookup's tag describes the selected representation.
                    head.headers.insert(header::ETAG, tag.to_header_value());
                }
                self.finish_read(head, ConditionalBody::pass_through(body), found, false)
            }
        }
    }

    /// A 2xx read with its validators known: 304, 412, or the response.
    /// `computed`: `found.etag` was computed by the layer and goes into the response.
    fn finish_read(
        &self,
        mut head: http::response::Parts,
        body: ConditionalBody<ResBody>,
        found: Validators,
        computed: bool,
    ) -> Step<S::Future, LF, ResBody, S::Error> {
        let decision = if self.conditions.is_empty() {
            Decision::Proceed
        } else {
            evaluate(&self.method, &self.conditions, Some(&found), self.options())
        };
        if let Decision::PreconditionFailed(failed) = decision {
            let rejection = Rejection::new(RejectionKind::PreconditionFailed(failed), self.grpc)
                .with_current(found.etag);
            return Step::Done(Ok(self.reject(rejection)));
        }
        if let (true, Some(tag)) = (computed, found.etag) {
            // Moved, not cloned: the header owns the tag's bytes.
            head.headers.insert(header::ETAG, tag.into());
        }
        if decision == Decision::NotModified {
            drop(body);
            into_not_modified(&mut head.status, &mut head.headers);
            let empty = ConditionalBody::empty(SizeHint::new());
            return Step::Done(Ok(Response::from_parts(head, empty)));
        }
        Step::Done(Ok(self.strip_head(head, body)))
    }
}
