//! Where the current validators of a write's target come from.
//!
//! A *version lookup* is any [`tower::Service`] that takes the request head (an
//! `http::Request<()>`: method, URI, version, headers and extensions, no body) and answers
//! the target's current [`Validators`], or `None` when it has no current representation.
//! [`lookup_fn`] turns an async closure into one:
//!
//! ```
//! use std::convert::Infallible;
//! use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, Validators};
//!
//! let layer = ConditionalLayer::new().lookup(lookup_fn(|req: http::Request<()>| async move {
//!     // Read the row behind req.uri().path() from your store ...
//!     let stored: Option<&[u8]> = Some(b"{\"name\":\"Ada\"}");
//!     Ok::<_, Infallible>(stored.map(|bytes| Validators::new().with_etag(EntityTag::from_content(bytes))))
//! }));
//! # let _ = layer;
//! ```
//!
//! Two other sources exist, chosen on the layer:
//!
//! * [`InnerGet`] (the default): the layer asks the inner service itself, with an internal
//!   `GET` to the same URI, and hashes the answer exactly as the read path would. This makes
//!   `If-Match` work with no cooperation from the service. It needs the request body type to
//!   implement `Default` (to build the empty `GET`); for hyper's `Incoming`, configure a lookup
//!   or [`NoLookup`], or map the body to a boxed one first.
//!
//!   The GET goes to the service the layer wraps, which must therefore route by method (a
//!   whole router, a hyper service). axum's `Router::layer`, `route_layer` and
//!   `MethodRouter::layer` wrap each method's handler on its own: there the GET would reach
//!   the PUT (or DELETE) handler itself. Give such write routes a lookup, or wrap the whole
//!   `Router` instead.
//! * [`NoLookup`]: write preconditions are not evaluated by the layer at all; they reach the
//!   handler untouched.
//!
//! The lookup's entity tags must be the ones clients see on reads: either the service sets
//! `ETag` itself (the layer keeps it), or the lookup computes
//! [`EntityTag::from_content`](crate::EntityTag::from_content) of the bytes a GET would send.

use std::future::Future;

use std::convert::Infallible;
use std::fmt::Display;

use futures_util::future::Ready;
use http::{header, HeaderMap, Request};
use tower::util::{Oneshot, ServiceExt};
use tower::Service;

use crate::precondition::Validators;

/// The request a version lookup receives: the original request's head, without its body.
pub type LookupRequest = Request<()>;

/// The default source: an internal `GET` to the inner service (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct InnerGet;

/// No source: the layer leaves write preconditions to the handler (see the
/// [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLookup;

/// Marks the layer's internal GET: a request extension on every request [`InnerGet`] sends.
///
/// Handlers and middleware can use it to tell the layer's reads from clients' (to keep them
/// out of access logs or metrics, say), or to refuse one that reached a handler that does not
/// serve GET.
///
/// ```
/// use tower_conditional::lookup::ProbeRequest;
///
/// fn is_probe<B>(req: &http::Request<B>) -> bool {
///     req.extensions().get::<ProbeRequest>().is_some()
/// }
/// # assert!(!is_probe(&http::Request::new(())));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeRequest;

/// A lookup made from a closure; see [`lookup_fn`].
#[derive(Clone, Copy)]
pub struct LookupFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for LookupFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupFn").finish_non_exhaustive()
    }
}

/// Makes a version lookup from an async closure over the request head.
///
/// The closure answers `Ok(Some(validators))` for an existing target, `Ok(None)` for one
/// with no current representation, and `Err(_)` when it cannot tell — which the layer
/// answers with 503 without calling the inner service (fail closed).
pub fn lookup_fn<F, Fut, E>(f: F) -> LookupFn<F>
where
    F: FnMut(LookupRequest) -> Fut,
    Fut: Future<Output = Result<Option<Validators>, E>>,
{
    LookupFn { f }
}

impl<F, Fut, E> Service<LookupRequest> for LookupFn<F>
where
    F: FnMut(LookupRequest) -> Fut,
    Fut: Future<Output = Result<Option<Validators>, E>>,
{
    type Response = Option<Validators>;
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

/// A source of current validators for requests with bodies of type `B`.
///
/// Implemented by [`InnerGet`] (when `B: Default`), by [`NoLookup`], and by every
/// `Service<LookupRequest, Response = Option<Validators>>` whose error implements `Display`
/// (it is logged, never sent). It is sealed: the service contract is the extension point.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot find current validators for requests with body type `{B}`",
    note = "the default source, `InnerGet`, builds an empty GET and needs `{B}: Default` (hyper's `Incoming` is not)",
    note = "configure `.lookup(..)` or `.no_lookup()` on the layer, or map the request body to one that is `Default`"
)]
pub trait VersionLookup<B>: sealed::Source<B> {}

impl<B, T: sealed::Source<B>> VersionLookup<B> for T {}

#[allow(missing_debug_implementations)]
pub(crate) mod sealed {
    use super::*;

    /// How the validators for one request will be found. Short-lived: built and matched
    /// at once in `call`, so the size of the probe variant costs nothing.
    #[allow(clippy::large_enum_variant)]
    pub enum Begin<F, B> {
        /// Evaluate nothing: let the request through.
        Skip,
        /// Await this lookup future.
        Lookup(F),
        /// Send this GET to the inner service and read the validators off its response.
        Probe(Request<B>),
    }

    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot find current validators for requests with body type `{B}`",
        note = "the default source, `InnerGet`, builds an empty GET and needs `{B}: Default` (hyper's `Incoming` is not)",
        note = "configure `.lookup(..)` or `.no_lookup()` on the layer, or map the request body to one that is `Default`"
    )]
    pub trait Source<B>: Clone {
        type Error: Display;
        type Future: Future<Output = Result<Option<Validators>, Self::Error>>;

        /// Starts finding the validators for `req`.
        fn begin(&mut self, req: &Request<B>) -> Begin<Self::Future, B>;

        /// Whether this is a user-supplied lookup (usable for reads and after writes).
        fn is_service(&self) -> bool;
    }

    type Unused = Ready<Result<Option<Validators>, Infallible>>;

    impl<B: Default> Source<B> for InnerGet {
        type Error = Infallible;
        type Future = Unused;

        fn begin(&mut self, req: &Request<B>) -> Begin<Self::Future, B> {
            Begin::Probe(probe_request(req))
        }

        fn is_service(&self) -> bool {
            false
        }
    }

    impl<B> Source<B> for NoLookup {
        type Error = Infallible;
        type Future = Unused;

        fn begin(&mut self, _req: &Request<B>) -> Begin<Self::Future, B> {
            Begin::Skip
        }

        fn is_service(&self) -> bool {
            false
        }
    }

    impl<B, L> Source<B> for L
    where
        L: Service<LookupRequest, Response = Option<Validators>> + Clone,
        L::Error: Display,
    {
        type Error = L::Error;
        type Future = Oneshot<L, LookupRequest>;

        fn begin(&mut self, req: &Request<B>) -> Begin<Self::Future, B> {
            Begin::Lookup(self.clone().oneshot(head_of(req)))
        }

        fn is_service(&self) -> bool {
            true
        }
    }
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

/// Fields that describe the request's own content or conditions: not forwarded on the
/// internal GET.
const NOT_PROBED: [header::HeaderName; 13] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
];

/// The internal GET for `req`: same URI, version, extensions and headers, minus
/// conditionals, `Range` and the fields that describe the request body.
pub(crate) fn probe_request<B: Default, T>(req: &Request<T>) -> Request<B> {
    let mut probe = Request::new(B::default());
    *probe.method_mut() = http::Method::GET;
    *probe.uri_mut() = req.uri().clone();
    *probe.version_mut() = req.version();
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        if !NOT_PROBED.contains(name) {
            headers.append(name, value.clone());
        }
    }
    *probe.headers_mut() = headers;
    *probe.extensions_mut() = req.extensions().clone();
    probe.extensions_mut().insert(ProbeRequest);
    probe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_drops_conditionals_and_body_fields() {
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
        let probe: Request<String> = probe_request(&req);
        assert_eq!(probe.method(), http::Method::GET);
        assert_eq!(probe.uri(), "/items/1?x=1");
        assert!(probe.body().is_empty());
        assert!(probe.headers().get("if-match").is_none());
        assert!(probe.headers().get("content-type").is_none());
        assert!(probe.headers().get("content-length").is_none());
        assert_eq!(probe.headers()["authorization"], "Bearer t");
        assert_eq!(probe.headers()["accept"], "application/json");
        assert!(probe.extensions().get::<ProbeRequest>().is_some());
    }
}
