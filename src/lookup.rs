//! Where the current validators of a request's target come from.
//!
//! A conditional write (`If-Match`, `If-None-Match` or `If-Unmodified-Since` on a method
//! other than GET and HEAD) can only be checked against the target's *current* state, which
//! the layer does not know. Tell it where to find it, per route:
//!
//! | source | builder call | what a conditional write gets |
//! | --- | --- | --- |
//! | a *version lookup* into your store | [`.lookup(..)`](crate::ConditionalLayer::lookup) | checked before the handler: 412 when stale, the handler never runs |
//! | the handler itself | [`.no_lookup()`](crate::ConditionalLayer::no_lookup) | passed to the handler with an [`Expectation`](crate::Expectation) that says nothing was checked |
//! | an internal GET to the wrapped service | [`.internal_get()`](crate::ConditionalLayer::internal_get) | checked against the GET's response, only where the wrapped service routes by method |
//! | nothing configured (the default) | — | `501 Not Implemented` naming these calls; the handler never runs |
//!
//! A version lookup is any [`tower::Service`] that takes the request head (a
//! [`LookupRequest`]: method, URI, version, headers and extensions, no body) and answers
//! [`Current`] (or `Option<Validators>`, which converts). [`lookup_fn`] turns an async
//! closure into one. Because it sees the request's headers and extensions, it is also the
//! place to *authorize*: a lookup that answers [`Current::Refuse`] for a caller who may not
//! see the target stops the layer from telling that caller anything about it (RFC 9110
//! §13.2.1: preconditions are ignored where the answer without them would not be 2xx).
//!
//! ```
//! use std::convert::Infallible;
//! use http::StatusCode;
//! use tower_conditional::{lookup_fn, ConditionalLayer, Current, EntityTag, LookupRequest, Validators};
//!
//! let layer = ConditionalLayer::new().lookup(lookup_fn(|req: LookupRequest| async move {
//!     // Authorize first: nothing about the target is revealed to an unknown caller.
//!     if !req.headers().contains_key(http::header::AUTHORIZATION) {
//!         let denied = http::Response::builder()
//!             .status(StatusCode::UNAUTHORIZED)
//!             .header("www-authenticate", "Bearer")
//!             .body(bytes::Bytes::new())
//!             .unwrap();
//!         return Ok::<_, Infallible>(Current::Refuse(denied));
//!     }
//!     // Then read the row behind req.uri().path() from your store ...
//!     let stored: Option<&[u8]> = Some(b"{\"name\":\"Ada\"}");
//!     Ok(stored
//!         .map(|bytes| Validators::new().with_etag(EntityTag::from_content(bytes)))
//!         .into())
//! }));
//! # let _ = layer;
//! ```
//!
//! The lookup's entity tags must be the ones clients see on reads: either the service sets
//! `ETag` itself (the layer keeps it), or the lookup computes
//! [`EntityTag::from_content`](crate::EntityTag::from_content) of the bytes a GET would send.
//!
//! ## The internal GET
//!
//! [`InternalGet`] asks the wrapped service for the current representation with a `GET` to
//! the same URI and hashes the answer exactly as the read path would. It runs *your
//! handler* as a probe, so it is opt-in and safe only where the wrapped service routes by
//! method: a hyper service, a `ServiceBuilder` stack around one, or a whole axum `Router`
//! wrapped from outside (`ConditionalLayer::new().internal_get().layer(router)`). axum's
//! `Router::layer`, `route_layer` and `MethodRouter::layer` wrap each method's handler on
//! its own: there the "GET" would run the PUT or DELETE handler. With the `axum` feature the
//! layer detects those placements (the request already carries axum's `MatchedPath`) and
//! answers 501 instead of probing — except a `MethodRouter` used as a `fallback`, which sets
//! no `MatchedPath`. gRPC requests never get an internal GET (tonic routes by path). The internal GET carries an [`InternalGetRequest`]
//! extension. It needs a request body type that implements `Default` (to build the empty
//! GET); hyper's `Incoming` does not.

use std::convert::Infallible;
use std::fmt::{self, Display};
use std::future::Future;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::{MapOk, Ready, TryFutureExt};
use http::{header, HeaderMap, Request};
use tower::Service;

use crate::precondition::CONDITION_FIELDS;
use crate::response::CONTENT_FIELDS;
use crate::validators::Validators;

/// The request a version lookup receives: the original request's head, without its body.
pub type LookupRequest = Request<()>;

/// What a version lookup found out about the target of one request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Current {
    /// The target has a current representation with these validators.
    Exists(Validators),
    /// The target has no current representation.
    Absent,
    /// Answer the request with this response and evaluate nothing: the caller may not learn
    /// about the target (401, 403, a 404 that hides it). The inner service is not called.
    Refuse(http::Response<Bytes>),
}

impl From<Option<Validators>> for Current {
    fn from(found: Option<Validators>) -> Self {
        match found {
            Some(v) => Current::Exists(v),
            None => Current::Absent,
        }
    }
}

impl From<Validators> for Current {
    fn from(found: Validators) -> Self {
        Current::Exists(found)
    }
}

/// The default source: none. Conditional writes are refused with `501 Not Implemented`
/// (see the [module docs](self)); unconditional writes and reads are unaffected.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unconfigured;

/// The handler evaluates write preconditions itself; see
/// [`ConditionalLayer::no_lookup`](crate::ConditionalLayer::no_lookup).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLookup;

/// The internal GET: validators from the wrapped service's own answer to a `GET`; see the
/// [module docs](self#the-internal-get) for where that is safe.
#[derive(Debug, Clone, Copy, Default)]
pub struct InternalGet;

/// Marks the layer's internal GET: a request extension on every request [`InternalGet`]
/// sends, so handlers, logs and metrics can tell it from a client's GET.
///
/// ```
/// use tower_conditional::lookup::InternalGetRequest;
///
/// fn is_internal<B>(req: &http::Request<B>) -> bool {
///     req.extensions().get::<InternalGetRequest>().is_some()
/// }
/// # assert!(!is_internal(&http::Request::new(())));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InternalGetRequest;

/// A lookup made from a closure; see [`lookup_fn`].
#[derive(Clone, Copy)]
pub struct LookupFn<F> {
    f: F,
}

impl<F> fmt::Debug for LookupFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupFn").finish_non_exhaustive()
    }
}

/// Makes a version lookup from an async closure over the request head.
///
/// The closure answers [`Current`] (or `Option<Validators>`: `Some` for an existing target,
/// `None` for one without a current representation), or `Err(_)` when it cannot tell —
/// which fails a write closed with 503 without calling the inner service, and lets a read
/// through to the service.
pub fn lookup_fn<F, Fut, R, E>(f: F) -> LookupFn<F>
where
    F: FnMut(LookupRequest) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Current>,
{
    LookupFn { f }
}

impl<F, Fut, R, E> Service<LookupRequest> for LookupFn<F>
where
    F: FnMut(LookupRequest) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Current>,
{
    type Response = R;
    type Error = E;
    type Future = Fut;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LookupRequest) -> Self::Future {
        (self.f)(req)
    }
}

/// Where the validators for one request come from. Built and matched at once in `call`.
#[doc(hidden)]
#[allow(missing_debug_implementations, clippy::large_enum_variant)]
pub enum Source<B> {
    /// Nothing is configured.
    Unconfigured,
    /// The handler evaluates.
    Handler,
    /// Ask the version lookup ([`VersionLookup::poll_lookup_ready`], then
    /// [`VersionLookup::call_lookup`] with the request's head, built only then).
    Lookup,
    /// Send this GET to the wrapped service.
    InternalGet(Request<B>),
    /// The internal GET was asked for where it would reach another method's handler.
    Misplaced,
}

/// A source of current validators for requests with bodies of type `B`: [`Unconfigured`],
/// [`NoLookup`], [`InternalGet`] (when `B: Default`), or a version lookup — any
/// `Service<LookupRequest>` whose response converts into [`Current`] and whose error
/// implements `Display` (it is logged, never sent).
///
/// The trait is sealed: the service contract is the extension point. Its items are the
/// layer's own business and hidden from the docs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot find current validators for requests with body type `{B}`",
    note = "a version lookup is a `Service<LookupRequest>` whose response converts into `Current` (see `lookup_fn`)",
    note = "the internal GET builds an empty GET and needs `{B}: Default` (hyper's `Incoming` is not)"
)]
pub trait VersionLookup<B>: sealed::Sealed + Clone {
    #[doc(hidden)]
    type Error: Display;
    #[doc(hidden)]
    type Future: Future<Output = Result<Current, Self::Error>>;

    #[doc(hidden)]
    fn source(&mut self, req: &Request<B>) -> Source<B>;

    /// Whether this is a version lookup (usable for reads and after writes).
    #[doc(hidden)]
    fn is_lookup(&self) -> bool;

    /// A version lookup's `poll_ready`. Asked only where `source` said [`Source::Lookup`].
    #[doc(hidden)]
    fn poll_lookup_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;

    /// A version lookup's `call`, once it is ready.
    #[doc(hidden)]
    fn call_lookup(&mut self, head: LookupRequest) -> Self::Future;
}

/// Where the layer asks only version lookups, the other sources never get the question.
fn not_a_lookup() -> ! {
    unreachable!("only a version lookup is asked for validators by call")
}

mod sealed {
    pub trait Sealed {}
}

type Unused = Ready<Result<Current, Infallible>>;

impl sealed::Sealed for Unconfigured {}
impl sealed::Sealed for NoLookup {}
impl sealed::Sealed for InternalGet {}
impl<L: Service<LookupRequest>> sealed::Sealed for L {}

impl<B> VersionLookup<B> for Unconfigured {
    type Error = Infallible;
    type Future = Unused;

    fn source(&mut self, _req: &Request<B>) -> Source<B> {
        Source::Unconfigured
    }

    fn is_lookup(&self) -> bool {
        false
    }

    fn poll_lookup_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        not_a_lookup()
    }

    fn call_lookup(&mut self, _head: LookupRequest) -> Unused {
        not_a_lookup()
    }
}

impl<B> VersionLookup<B> for NoLookup {
    type Error = Infallible;
    type Future = Unused;

    fn source(&mut self, _req: &Request<B>) -> Source<B> {
        Source::Handler
    }

    fn is_lookup(&self) -> bool {
        false
    }

    fn poll_lookup_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        not_a_lookup()
    }

    fn call_lookup(&mut self, _head: LookupRequest) -> Unused {
        not_a_lookup()
    }
}

impl<B: Default> VersionLookup<B> for InternalGet {
    type Error = Infallible;
    type Future = Unused;

    fn source(&mut self, req: &Request<B>) -> Source<B> {
        if inside_method_router(req) {
            return Source::Misplaced;
        }
        Source::InternalGet(internal_get(req))
    }

    fn is_lookup(&self) -> bool {
        false
    }

    fn poll_lookup_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        not_a_lookup()
    }

    fn call_lookup(&mut self, _head: LookupRequest) -> Unused {
        not_a_lookup()
    }
}

impl<B, L> VersionLookup<B> for L
where
    L: Service<LookupRequest> + Clone,
    L::Response: Into<Current>,
    L::Error: Display,
{
    type Error = L::Error;
    type Future = MapOk<L::Future, fn(L::Response) -> Current>;

    fn source(&mut self, _req: &Request<B>) -> Source<B> {
        Source::Lookup
    }

    fn is_lookup(&self) -> bool {
        true
    }

    fn poll_lookup_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), L::Error>> {
        self.poll_ready(cx)
    }

    fn call_lookup(&mut self, head: LookupRequest) -> Self::Future {
        self.call(head).map_ok(Into::into)
    }
}

/// Whether the request was routed by axum before it reached the layer, which means the
/// layer wraps one method's handler (`Router::layer`, `route_layer`, `MethodRouter::layer`).
#[cfg(feature = "axum")]
fn inside_method_router<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some()
}

#[cfg(not(feature = "axum"))]
fn inside_method_router<B>(_req: &Request<B>) -> bool {
    false
}

/// A copy of the request head, for a lookup.
pub(crate) fn head_of<B>(req: &Request<B>) -> LookupRequest {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    *head.extensions_mut() = req.extensions().clone();
    head
}

/// The internal GET for `req`: same URI, version, extensions and headers, minus
/// conditionals, `Range` and the fields that describe the request body.
pub(crate) fn internal_get<B: Default, T>(req: &Request<T>) -> Request<B> {
    let mut get = Request::new(B::default());
    *get.method_mut() = http::Method::GET;
    *get.uri_mut() = req.uri().clone();
    *get.version_mut() = req.version();
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        // Not forwarded: the request's own conditions and range, `Expect`, and the fields
        // that describe the request's content.
        let own = CONDITION_FIELDS.contains(name) || name == header::EXPECT;
        if !own && !CONTENT_FIELDS.contains(name) {
            headers.append(name, value.clone());
        }
    }
    *get.headers_mut() = headers;
    *get.extensions_mut() = req.extensions().clone();
    get.extensions_mut().insert(InternalGetRequest);
    get
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_get_drops_conditionals_and_body_fields() {
        let req = Request::builder()
            .method("PUT")
            .uri("/items/1?x=1")
            .header("if-match", "\"a\"")
            .header("content-type", "application/json")
            .header("content-length", "2")
            .header("authorization", "Bearer t")
            .header("accept", "application/json")
            .body("{}")
            .unwrap();
        let get: Request<String> = internal_get(&req);
        assert_eq!(get.method(), http::Method::GET);
        assert_eq!(get.uri(), "/items/1?x=1");
        assert!(get.body().is_empty());
        assert!(get.headers().get("if-match").is_none());
        assert!(get.headers().get("content-type").is_none());
        assert!(get.headers().get("content-length").is_none());
        assert_eq!(get.headers()["authorization"], "Bearer t");
        assert_eq!(get.headers()["accept"], "application/json");
        assert!(get.extensions().get::<InternalGetRequest>().is_some());
    }
}
