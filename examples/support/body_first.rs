//! Reading a write's whole request body before the conditional layer sees the request.
//!
//! With `serialize_writes(true)` a conditional write holds its target's lock from the lookup
//! to the response head, and its handler reads the body inside that span. A timeout outside
//! bounds one request, not a queue of them: clients that take turns stalling mid-body keep
//! every other conditional write to the target waiting until its own timeout runs out.
//! Placed inside the timeout and outside the layer, [`read_whole`] makes a stalled body stall
//! where no lock is held; a write then holds the lock only for its handler's own work.
//!
//! The cost: the body is read (and, with `Expect: 100-continue`, the 100 sent) before the
//! preconditions are evaluated, as RFC 9110 §13.2.1 orders it; a stale write whose client
//! waited for the 100 uploads its body before its 412.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use http_body::Body as _;
use http_body_util::LengthLimitError;

/// The most a write's body may hold: axum's default limit for the extractors the handlers
/// use, so that nothing the handlers took before is refused now.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The detail of the 400 for a body that is not as long as its `Content-Length`.
pub const NOT_AS_DECLARED: &str = "the request content is not as long as its Content-Length";

/// Whether `received` bytes are what the request's `Content-Length` declares (or it declares
/// none). An HTTP/2 client that resets its stream with `NO_ERROR` ends the body early without
/// an error in hyper: such a request is malformed (RFC 9113 §8.1.1), not a shorter one.
pub fn as_declared(headers: &HeaderMap, received: usize) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    declared.is_none_or(|n| n == received as u64)
}

/// `request` with its body read into memory, at most `limit` bytes — for every method but
/// the ones that write nothing (`GET`, `HEAD`, `OPTIONS`) and for bodies known to be empty.
/// `Err` is the status and the detail to answer with instead: 413 above the limit, 400 when
/// the body fails (the client reset the stream, or sent bad framing) or ends short of its
/// `Content-Length` (an HTTP/2 client that resets its stream with `NO_ERROR` ends the body
/// early without an error: RFC 9113 §8.1.1 makes the request malformed).
pub async fn read_whole(
    request: Request,
    limit: usize,
) -> Result<Request, (StatusCode, &'static str)> {
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if reads || request.body().size_hint().exact() == Some(0) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) if !as_declared(&parts.headers, bytes.len()) => {
            Err((StatusCode::BAD_REQUEST, NOT_AS_DECLARED))
        }
        Ok(bytes) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Err(error) => Err(if error.into_inner().is::<LengthLimitError>() {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request content is larger than this server takes (2 MiB)",
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                "the request content could not be read to its end",
            )
        }),
    }
}
