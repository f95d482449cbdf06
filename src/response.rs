//! Every response the layer builds itself: 304, and the rejections (412, 428, 503, 404, the
//! 501 for a conditional write nothing can check, the 500 for a body that failed).
//!
//! Rejections are described by a [`Rejection`] and rendered by default as RFC 9457
//! `application/problem+json`, or — for a gRPC request — as a trailers-only gRPC status.
//! Replace the rendering with [`ConditionalLayer::on_reject`](crate::ConditionalLayer::on_reject):
//!
//! ```
//! use bytes::Bytes;
//! use tower_conditional::{ConditionalLayer, Rejection};
//!
//! let layer = ConditionalLayer::new().on_reject(|rejection: &Rejection| {
//!     http::Response::builder()
//!         .status(rejection.status())
//!         .header("content-type", "text/plain")
//!         .body(Bytes::from(rejection.title()))
//!         .unwrap()
//! });
//! # let _ = layer;
//! ```

use std::fmt::Write as _;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body::SizeHint;

use crate::etag::EntityTag;
use crate::precondition::Failed;
use crate::validators::Validators;
use std::time::SystemTime;

/// Why the layer answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A precondition evaluated false: 412.
    PreconditionFailed(Failed),
    /// The route requires preconditions and the request had none: 428 (RFC 6585 §3).
    PreconditionRequired,
    /// The current validators could not be found (lookup error or timeout, or the internal
    /// GET failed): 503, fail closed.
    LookupFailed,
    /// A write whose method cannot create was sent to a target that does not exist: 404
    /// (see [`ConditionalLayer::creating_methods`](crate::ConditionalLayer::creating_methods)).
    NotFound,
    /// A conditional write reached a layer with no way to find the target's current
    /// validators (neither `.lookup(..)`, `.internal_get()` nor `.no_lookup()`): 501, the
    /// service is not called. See [`lookup`](crate::lookup).
    NoVersionSource,
    /// The internal GET was configured where it would reach another method's handler (the
    /// layer sits inside an axum router, per method; detected with the `axum` feature): 501,
    /// the service is not called.
    InternalGetMisplaced,
    /// The response body failed while the layer held it, before anything was sent: 500,
    /// rather than a truncated body framed as complete.
    IncompleteBody,
}

/// A request the layer refused, with what a response needs to explain it.
#[derive(Debug, Clone)]
pub struct Rejection {
    kind: RejectionKind,
    current: Option<EntityTag>,
    /// The request's gRPC content type, for a gRPC request.
    grpc: Option<HeaderValue>,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, grpc: Option<HeaderValue>) -> Self {
        Rejection {
            kind,
            current: None,
            grpc,
        }
    }

    pub(crate) fn with_current(mut self, current: Option<EntityTag>) -> Self {
        self.current = current;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status this rejection stands for: 412, 428, 503, 404, 501 or 500.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RejectionKind::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            RejectionKind::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            RejectionKind::LookupFailed => StatusCode::SERVICE_UNAVAILABLE,
            RejectionKind::NotFound => StatusCode::NOT_FOUND,
            RejectionKind::NoVersionSource | RejectionKind::InternalGetMisplaced => {
                StatusCode::NOT_IMPLEMENTED
            }
            RejectionKind::IncompleteBody => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The target's current entity tag (412 only, and only with
    /// [`ConditionalLayer::disclose_current_etag`](crate::ConditionalLayer::disclose_current_etag)).
    pub fn current_etag(&self) -> Option<&EntityTag> {
        self.current.as_ref()
    }

    /// Whether the request was a gRPC call (`content-type: application/grpc…`, grpc-web
    /// included).
    pub fn is_grpc(&self) -> bool {
        self.grpc.is_some()
    }

    /// A short, human-readable summary (the problem `title`).
    pub fn title(&self) -> &'static str {
        match self.kind {
            RejectionKind::PreconditionFailed(_) => "Precondition Failed",
            RejectionKind::PreconditionRequired => "Precondition Required",
            RejectionKind::LookupFailed => "Service Unavailable",
            RejectionKind::NotFound => "Not Found",
            // With `about:blank`, the title is the status's phrase (RFC 9457 §4.2.1); the
            // detail says what is not implemented.
            RejectionKind::NoVersionSource | RejectionKind::InternalGetMisplaced => {
                "Not Implemented"
            }
            RejectionKind::IncompleteBody => "Internal Server Error",
        }
    }

    /// An explanation specific to this occurrence (the problem `detail`).
    pub fn detail(&self) -> &'static str {
        match self.kind {
            RejectionKind::PreconditionFailed(Failed::IfMatch) => {
                "If-Match does not match the current representation; fetch it again and retry with its ETag"
            }
            RejectionKind::PreconditionFailed(Failed::IfUnmodifiedSince) => {
                "the resource was modified after the If-Unmodified-Since date"
            }
            RejectionKind::PreconditionFailed(Failed::IfNoneMatch) => {
                "If-None-Match matches the current representation (with *: the resource already exists)"
            }
            RejectionKind::PreconditionRequired => {
                "this request must be conditional: resend it with If-Match set to the ETag from a GET (or If-None-Match: * to create)"
            }
            RejectionKind::LookupFailed => {
                "the current state of the resource could not be determined; nothing was changed, retry later"
            }
            RejectionKind::NotFound => "the target resource does not exist",
            RejectionKind::NoVersionSource => {
                "this server cannot check preconditions on this route, so the request was not performed; \
                 its operator configures ConditionalLayer::lookup(..) (or .internal_get() where the \
                 wrapped service routes by method, or .no_lookup() to let the handler check)"
            }
            RejectionKind::InternalGetMisplaced => {
                "this server cannot check preconditions on this route, so the request was not performed; \
                 its operator configured ConditionalLayer::internal_get() on a layer that wraps one \
                 method's handler: configure ConditionalLayer::lookup(..) there, or wrap the whole router"
            }
            RejectionKind::IncompleteBody => {
                "the response failed before it was complete; nothing partial was sent"
            }
        }
    }

    /// The default rendering: [`Rejection::grpc_response`] for gRPC requests,
    /// [`Rejection::problem_response`] otherwise.
    pub fn default_response(&self) -> http::Response<Bytes> {
        if self.grpc.is_some() {
            self.grpc_response()
        } else {
            self.problem_response()
        }
    }

    /// An RFC 9457 `application/problem+json` response. A 412 also carries the current
    /// `ETag` header and a `current_etag` member when known; 412 and 428 name the `condition`.
    pub fn problem_response(&self) -> http::Response<Bytes> {
        let mut json = String::with_capacity(256);
        json.push_str("{\"type\":\"about:blank\",\"title\":");
        push_json_string(&mut json, self.title());
        let _ = write!(json, ",\"status\":{}", self.status().as_u16());
        json.push_str(",\"detail\":");
        push_json_string(&mut json, self.detail());
        match self.kind {
            RejectionKind::PreconditionFailed(failed) => {
                json.push_str(",\"condition\":");
                push_json_string(&mut json, failed.field_name());
            }
            RejectionKind::PreconditionRequired => {
                json.push_str(",\"condition\":\"If-Match\"");
            }
            _ => {}
        }
        if let Some(tag) = &self.current {
            json.push_str(",\"current_etag\":");
            push_json_string(&mut json, &tag.to_string());
        }
        json.push('}');

        let mut response = http::Response::new(Bytes::from(json));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let (Some(tag), RejectionKind::PreconditionFailed(_)) = (&self.current, self.kind) {
            headers.insert(header::ETAG, tag.to_header_value());
        }
        if self.kind == RejectionKind::LookupFailed {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// A trailers-only gRPC response: HTTP 200 with `grpc-status` 9 (FAILED_PRECONDITION)
    /// for 412 and 428, 14 (UNAVAILABLE) for 503, 5 (NOT_FOUND) for 404, 12
    /// (UNIMPLEMENTED) for 501, 13 (INTERNAL) for 500, and the detail as `grpc-message`. Its
    /// `Content-Type` is the request's (`application/grpc-web+proto` stays grpc-web).
    pub fn grpc_response(&self) -> http::Response<Bytes> {
        let code = match self.kind {
            RejectionKind::LookupFailed => "14",
            RejectionKind::NotFound => "5",
            RejectionKind::NoVersionSource | RejectionKind::InternalGetMisplaced => "12",
            RejectionKind::IncompleteBody => "13",
            _ => "9",
        };
        let mut response = http::Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            self.grpc
                .clone()
                .unwrap_or(HeaderValue::from_static("application/grpc")),
        );
        headers.insert("grpc-status", HeaderValue::from_static(code));
        let message = percent_encode_grpc(self.detail());
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
        if let Some(tag) = &self.current {
            headers.insert(header::ETAG, tag.to_header_value());
        }
        response
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// gRPC's `grpc-message` encoding: percent-encode everything outside printable ASCII and `%`.
fn percent_encode_grpc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Fields that describe a message's content (its type, length, coding, framing).
pub(crate) const CONTENT_FIELDS: [header::HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
];

/// Representation metadata a 304 must not carry (RFC 9110 §15.4.5): the recipient already
/// has it. `Last-Modified` is dropped separately, only when an `ETag` is present.
fn not_in_304() -> impl Iterator<Item = header::HeaderName> {
    CONTENT_FIELDS.into_iter().chain([header::TRAILER])
}

/// Turns the head of a 2xx response into the head of a 304: keeps `ETag`, `Cache-Control`,
/// `Content-Location`, `Date`, `Expires`, `Vary` and non-representation fields such as
/// `Set-Cookie`; drops content metadata, and `Last-Modified` when there is an `ETag`.
pub(crate) fn into_not_modified(status: &mut StatusCode, headers: &mut HeaderMap) {
    *status = StatusCode::NOT_MODIFIED;
    for name in not_in_304() {
        headers.remove(name);
    }
    if headers.contains_key(header::ETAG) {
        headers.remove(header::LAST_MODIFIED);
    }
}

/// Turns the head of a 2xx response into a 304's ([`into_not_modified`]), keeping the 200's
/// `Content-Length` where a length is written as given (`written`: a HEAD, or HTTP/2; RFC
/// 9110 §8.6 allows a 304 no other): the response's own — for a 206, the complete length its
/// `Content-Range` names, not the part's — or else `size`, the exact size of the body the
/// 200 would have sent. There a router that writes lengths from body sizes (axum) would
/// otherwise send a 0; hyper's HTTP/1.1 leaves a GET's 304 without one. Returns whether a
/// length was kept.
pub(crate) fn into_not_modified_keeping_length(
    head: &mut http::response::Parts,
    written: bool,
    size: impl FnOnce() -> Option<u64>,
) -> bool {
    let length = if !written {
        None
    } else if head.status == StatusCode::PARTIAL_CONTENT {
        complete_length(&head.headers).map(HeaderValue::from)
    } else {
        // Taken out, not copied: `into_not_modified` would remove it anyway.
        (head.headers.remove(header::CONTENT_LENGTH)).or_else(|| size().map(HeaderValue::from))
    };
    into_not_modified(&mut head.status, &mut head.headers);
    let kept = length.is_some();
    if let Some(length) = length {
        head.headers.insert(header::CONTENT_LENGTH, length);
    }
    kept
}

/// The `coding_accepted` of [`not_modified_size`] for a request: whether its `Accept-Encoding`
/// admits a content coding, read only where an empty answer's size is written as a length (a
/// HEAD, HTTP/2). Over HTTP/1.1 hyper writes none for a GET's 304 whatever its size says, so
/// there the exact zero stays, at no cost.
#[inline]
pub(crate) fn coding_accepted(headers: &HeaderMap, head: bool, http2: bool) -> bool {
    !(head || http2) || crate::header::admits_coding(headers.get_all(header::ACCEPT_ENCODING))
}

/// The size the empty body of a 304 (or of a body-less answer to a HEAD) reports.
///
/// Where a compression layer outside may encode it — the client accepts a content coding
/// (`coding_accepted`) — an exact zero: such a layer takes a body of unknown size for content
/// to encode (tower-http's does), and its encoder writes framing even for nothing, DATA on a
/// 304 or a HEAD response, a stream error over HTTP/2. The 200's length, where it is known and
/// written as given (a HEAD, HTTP/2), is in `Content-Length`; where it is not known, a router
/// that writes lengths from body sizes (axum) then says `content-length: 0`, which a cache
/// ignores on a 304 (RFC 9111 §3.2) — the lesser fault.
///
/// Where nothing may encode it (the client accepts no coding, so a compression layer sends
/// identity), an unknown size: then nothing writes a length the 200 did not have (RFC 9110
/// §8.6). The body still ends at once, so hyper sends no DATA for it.
pub(crate) fn not_modified_size(coding_accepted: bool) -> SizeHint {
    if coding_accepted {
        SizeHint::with_exact(0)
    } else {
        SizeHint::default()
    }
}

/// The complete length, in octets, a 206's `Content-Range` names (`bytes 0-4/43` → 43; RFC
/// 9110 §14.4), when there is one field, in bytes, and it names one.
fn complete_length(headers: &HeaderMap) -> Option<u64> {
    let mut fields = headers.get_all(header::CONTENT_RANGE).iter();
    let value = fields.next()?.to_str().ok()?;
    if fields.next().is_some() {
        return None;
    }
    let (unit, range) = value.trim_start().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (_, complete) = range.rsplit_once('/')?;
    let complete = complete.trim();
    if complete.is_empty() || !complete.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    complete.parse().ok()
}

/// A 304 built from a lookup's validators alone (the service was not called): the fields the
/// lookup supplied for it, its `ETag`, or without one its `Last-Modified` — never later than
/// now (RFC 9110 §8.8.2.1).
///
/// `headers` is a map to reuse (the request's own, no longer needed): it is cleared, and
/// keeps its allocation.
pub(crate) fn not_modified_from(
    current: &Validators,
    mut headers: HeaderMap,
) -> (StatusCode, HeaderMap) {
    headers.clear();
    for (name, value) in current.headers() {
        let validator = name == header::ETAG || name == header::LAST_MODIFIED;
        if !validator && !not_in_304().any(|n| n == name) {
            headers.append(name, value.clone());
        }
    }
    if let Some(tag) = current.etag() {
        headers.insert(header::ETAG, tag.to_header_value());
    } else if let Some(time) = current.last_modified() {
        let time = time.min(SystemTime::now());
        if let Some(v) = crate::header::http_date(time) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
    (StatusCode::NOT_MODIFIED, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_304_never_dates_the_future() {
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        let mut reused = HeaderMap::new();
        reused.insert(header::HOST, http::HeaderValue::from_static("example.com"));
        let (status, h) = not_modified_from(&Validators::new().with_last_modified(later), reused);
        assert!(!h.contains_key(header::HOST), "the reused map is cleared");
        assert_eq!(status, 304);
        let sent = crate::header::parse_date_value(&h["last-modified"]).unwrap();
        assert!(sent <= SystemTime::now());
    }

    /// Every problem is `about:blank`, so its title is its status's phrase (RFC 9457 §4.2.1).
    #[test]
    fn every_problem_title_is_its_status_phrase() {
        for kind in [
            RejectionKind::PreconditionFailed(Failed::IfMatch),
            RejectionKind::PreconditionFailed(Failed::IfUnmodifiedSince),
            RejectionKind::PreconditionFailed(Failed::IfNoneMatch),
            RejectionKind::PreconditionRequired,
            RejectionKind::LookupFailed,
            RejectionKind::NotFound,
            RejectionKind::NoVersionSource,
            RejectionKind::InternalGetMisplaced,
            RejectionKind::IncompleteBody,
        ] {
            let rejection = Rejection::new(kind, None);
            assert_eq!(
                Some(rejection.title()),
                rejection.status().canonical_reason(),
                "{kind:?}"
            );
            let body = rejection.problem_response().into_body();
            let json = std::str::from_utf8(&body).unwrap();
            assert!(json.starts_with("{\"type\":\"about:blank\""), "{json}");
        }
    }

    #[test]
    fn problem_json_is_valid_and_escaped() {
        let tag = EntityTag::parse(b"\"a\\b\"").unwrap();
        let r = Rejection::new(RejectionKind::PreconditionFailed(Failed::IfMatch), None)
            .with_current(Some(tag.clone()));
        let resp = r.problem_response();
        assert_eq!(resp.status(), 412);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert_eq!(resp.headers()["etag"], "\"a\\b\"");
        let body = std::str::from_utf8(resp.body()).unwrap();
        assert!(body.contains("\"status\":412"), "{body}");
        assert!(body.contains("\"condition\":\"If-Match\""), "{body}");
        assert!(
            body.contains("\"current_etag\":\"\\\"a\\\\b\\\"\""),
            "{body}"
        );
    }

    #[test]
    fn grpc_rejections_are_trailers_only() {
        let grpc = Some(HeaderValue::from_static("application/grpc+proto"));
        let r = Rejection::new(
            RejectionKind::PreconditionFailed(Failed::IfMatch),
            grpc.clone(),
        );
        let resp = r.default_response();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "9");
        assert_eq!(resp.headers()["content-type"], "application/grpc+proto");
        assert!(resp.body().is_empty());
        let r = Rejection::new(RejectionKind::LookupFailed, grpc);
        assert_eq!(r.default_response().headers()["grpc-status"], "14");
        // grpc-web answers in grpc-web (RFC-less, but what its clients parse).
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            let r = Rejection::new(
                RejectionKind::PreconditionRequired,
                Some(HeaderValue::from_static(ct)),
            );
            assert_eq!(r.default_response().headers()["content-type"], ct);
        }
        assert_eq!(percent_encode_grpc("a%b\u{e9}"), "a%25b%C3%A9");
    }

    #[test]
    fn not_modified_keeps_the_listed_fields() {
        let mut status = StatusCode::OK;
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("etag", "\"a\""),
            ("cache-control", "no-cache"),
            ("content-location", "/x"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("expires", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("vary", "Accept"),
            ("set-cookie", "a=b"),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("content-encoding", "gzip"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        into_not_modified(&mut status, &mut h);
        assert_eq!(status, 304);
        for kept in [
            "etag",
            "cache-control",
            "content-location",
            "date",
            "expires",
            "vary",
            "set-cookie",
        ] {
            assert!(h.contains_key(kept), "{kept} kept");
        }
        for dropped in [
            "last-modified",
            "content-type",
            "content-length",
            "content-encoding",
        ] {
            assert!(!h.contains_key(dropped), "{dropped} dropped");
        }
        // Without an ETag, Last-Modified stays: it is the validator.
        let mut h = HeaderMap::new();
        h.insert(
            "last-modified",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        into_not_modified(&mut status, &mut h);
        assert!(h.contains_key("last-modified"));
    }

    #[test]
    fn the_complete_length_is_read_from_one_content_range() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    header::CONTENT_RANGE,
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            complete_length(&h)
        };
        assert_eq!(with(&["bytes 0-4/11"]), Some(11));
        assert_eq!(with(&["bytes 0-4/ 11 "]), Some(11));
        assert_eq!(with(&["bytes 0-4/*"]), None, "unknown complete length");
        assert_eq!(with(&["bytes */11"]), Some(11));
        assert_eq!(with(&["bytes 0-4/-1"]), None);
        assert_eq!(with(&["bytes 0-4/"]), None);
        assert_eq!(with(&["bytes 0-4"]), None);
        assert_eq!(with(&["items 0-1/9999"]), None, "not octets");
        assert_eq!(
            with(&["Bytes 0-4/11"]),
            Some(11),
            "units are case-insensitive"
        );
        assert_eq!(
            with(&["bytes 0-4/99999999999999999999999"]),
            None,
            "overflow"
        );
        assert_eq!(with(&["bytes 0-4/11", "bytes 0-4/12"]), None, "two fields");
        assert_eq!(with(&[]), None);
    }
}
