//! [`Outcome`]: what the layer did with one response, as a response extension and a
//! `tracing` event at debug level, so users can count their 304s and see why a route never
//! gets a tag.

use crate::response::RejectionKind;

/// What the layer did with a response: logged for every response with `tracing` at debug
/// level (target `tower_conditional`), and carried as a response extension with
/// [`ConditionalLayer::outcome_extension`](crate::ConditionalLayer::outcome_extension).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceExt};
/// use tower::Layer;
/// use tower_conditional::{ConditionalLayer, Outcome};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = ConditionalLayer::new().outcome_extension(true);
/// let svc = layer.layer(service_fn(|_req: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
/// }));
/// let response = svc.oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.extensions().get::<Outcome>(), Some(&Outcome::Tagged));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A read's body was hashed and the response carries the computed `ETag`.
    Tagged,
    /// Answered `304 Not Modified` (from the response, or from the lookup alone).
    NotModified,
    /// The layer answered by itself: 412, 428, 503, 404, 501 or 500.
    Rejected(RejectionKind),
    /// The lookup refused the request (`Current::Refuse`), or the internal GET was answered
    /// with a client error that is passed on.
    Refused,
    /// A read passed on without a computed tag, and why.
    Untagged(Untagged),
    /// A write or an exempt method (OPTIONS, CONNECT, TRACE) passed on: after its
    /// preconditions passed, or without any to check.
    Passed,
}

/// Why a read passed on without a computed tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Untagged {
    /// The service set a valid `ETag` itself; it was kept.
    OwnTag,
    /// Not a 2xx response.
    NotSuccess,
    /// The predicate refused it (a status other than 200, a `Content-Range`, …).
    Predicate,
    /// A stream the layer never holds: event streams, gRPC, NDJSON, JSON Lines,
    /// `multipart/x-mixed-replace`.
    Stream,
    /// Its declared size, or the bytes it sent, went past `max_buffer`.
    TooLarge,
    /// It made the layer wait longer than `max_buffer_time`.
    TimeLimit,
    /// The service marked it [`NoTag`](crate::NoTag).
    OptOut,
    /// `Cache-Control: no-store`: not to be stored, so not tagged.
    NoStore,
    /// A HEAD the service answered itself (`head_as_get(false)`): no body to hash.
    Head,
    /// The body did not have the length its `Content-Length` declared (a HEAD handler's
    /// empty body, typically): it is not the representation, so it is not tagged.
    LengthMismatch,
}

/// A response extension with which a service asks the layer not to buffer or tag this
/// response. Its own `ETag`, if it sets one, still drives 304.
///
/// ```
/// use tower_conditional::NoTag;
///
/// let mut response = http::Response::new("a report that changes on every read");
/// response.extensions_mut().insert(NoTag);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoTag;
