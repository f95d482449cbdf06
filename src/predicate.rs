//! Which responses the layer buffers and hashes.
//!
//! The decision is made from the response head and the body's size hint, before any byte
//! is held. A response the predicate refuses streams through untouched (it still gets a 304
//! when it carries its own `ETag` or `Last-Modified` that matches).
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use tower_conditional::predicate::{DefaultPredicate, Predicate};
//! use tower_conditional::ConditionalLayer;
//!
//! // Also skip anything marked `Cache-Control: private`.
//! let predicate = DefaultPredicate::new().and(|_: StatusCode, headers: &HeaderMap| {
//!     headers
//!         .get(http::header::CACHE_CONTROL)
//!         .map_or(true, |v| !v.as_bytes().windows(7).any(|w| w == b"private"))
//! });
//! let layer = ConditionalLayer::new().predicate(predicate);
//! # let _ = layer;
//! ```

use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body::Body;

use crate::etag::EntityTag;

/// Decides whether a response is eligible for hashing.
///
/// The layer also enforces its `max_buffer` on every response, whatever the predicate says.
pub trait Predicate: Clone {
    /// Whether to buffer and hash this response's body.
    fn should_hash<B: Body>(&self, response: &http::Response<B>) -> bool;

    /// Both `self` and `other` must agree.
    fn and<Other: Predicate>(self, other: Other) -> And<Self, Other>
    where
        Self: Sized,
    {
        And {
            first: self,
            second: other,
        }
    }
}

/// Any `Fn(StatusCode, &HeaderMap) -> bool + Clone` is a predicate.
impl<F> Predicate for F
where
    F: Fn(StatusCode, &HeaderMap) -> bool + Clone,
{
    fn should_hash<B: Body>(&self, response: &http::Response<B>) -> bool {
        self(response.status(), response.headers())
    }
}

/// Two predicates that must both agree; see [`Predicate::and`].
#[derive(Debug, Clone, Copy)]
pub struct And<A, B> {
    first: A,
    second: B,
}

impl<A: Predicate, B: Predicate> Predicate for And<A, B> {
    fn should_hash<T: Body>(&self, response: &http::Response<T>) -> bool {
        self.first.should_hash(response) && self.second.should_hash(response)
    }
}

/// The default: hash `200 OK` responses, except anything with `Content-Range`.
///
/// Whatever the predicate says, the layer itself never holds streams (event streams, gRPC,
/// NDJSON, JSON Lines, `multipart/x-mixed-replace`), responses marked
/// [`NoTag`](crate::NoTag), or `Cache-Control: no-store`: it decides those before it asks
/// the predicate.
///
/// Other statuses are never hashed: 206 is a part, 1xx/204/304 have no content, and error
/// responses are not representations of the target.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPredicate {
    _priv: (),
}

impl DefaultPredicate {
    /// The default predicate.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Whether `Content-Type` starts with `prefix`, ignoring ASCII case and leading whitespace.
pub(crate) fn content_type_starts_with(headers: &HeaderMap, prefix: &[u8]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| starts_with_ignore_case(v.as_bytes(), prefix))
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    has_prefix(value.trim_ascii_start(), prefix)
}

/// `v` starts with `prefix`, ignoring ASCII case. `prefix` holds only lower-case letters,
/// digits and `/ - + . _`, for which setting bit 0x20 of a field-value byte lower-cases a
/// letter and cannot turn any other byte a field value may hold into one of them.
fn has_prefix(v: &[u8], prefix: &[u8]) -> bool {
    // Every byte compared, without an exit per byte: the prefixes are short constants, and
    // the whole comparison compiles to a few wide operations.
    v.len() >= prefix.len()
        && v.iter()
            .zip(prefix)
            .fold(0u8, |differ, (a, b)| differ | ((a | 0x20) ^ b))
            == 0
}

impl Predicate for DefaultPredicate {
    fn should_hash<B: Body>(&self, response: &http::Response<B>) -> bool {
        // Streams are refused by the layer itself, before any predicate is asked.
        response.status() == StatusCode::OK
            && !response.headers().contains_key(header::CONTENT_RANGE)
    }
}

/// Subtypes of `application/` whose bodies are streams of messages (gRPC and grpc-web in
/// every form, NDJSON, JSON Lines); with `text/event-stream` and
/// `multipart/x-mixed-replace`, never held.
const STREAMING_APPLICATIONS: [&[u8]; 5] =
    [b"grpc", b"x-ndjson", b"ndjson", b"jsonl", b"x-jsonlines"];

/// What the layer reads from a response head before it decides whether to hash the body,
/// gathered in one pass over the fields: a response carries a few, and comparing their
/// names costs less than one hashed lookup per field.
#[derive(Debug, Default)]
pub(crate) struct HeadFields {
    /// The first `ETag` line, when it is a valid entity tag.
    pub(crate) etag: Option<EntityTag>,
    /// How many `ETag` lines there are.
    pub(crate) etag_lines: usize,
    /// The first `Content-Length` line, when it is a valid length.
    pub(crate) declared: Option<u64>,
    /// Whether a `Cache-Control` line has the `no-store` directive.
    pub(crate) no_store: bool,
    /// Whether the first `Content-Type` line names a stream of messages.
    pub(crate) stream: bool,
}

impl HeadFields {
    pub(crate) fn scan(headers: &HeaderMap) -> Self {
        let mut fields = HeadFields::default();
        let (mut length_seen, mut type_seen) = (false, false);
        // Every line in order, a name's first line first.
        for (name, value) in headers {
            if name == header::ETAG {
                if fields.etag_lines == 0 {
                    fields.etag = EntityTag::try_from(value).ok();
                }
                fields.etag_lines += 1;
            } else if name == header::CONTENT_LENGTH && !length_seen {
                length_seen = true;
                fields.declared = length_of(value);
            } else if name == header::CACHE_CONTROL {
                fields.no_store |= no_store_in(value);
            } else if name == header::CONTENT_TYPE && !type_seen {
                type_seen = true;
                fields.stream = is_stream_type(value);
            }
        }
        fields
    }
}

/// Whether the response is a stream of messages (by its `Content-Type`).
#[cfg(test)]
fn is_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(is_stream_type)
}

/// Whether a `Content-Type` value is a stream of messages.
fn is_stream_type(value: &HeaderValue) -> bool {
    let v = value.as_bytes().trim_ascii_start();
    // Dispatch on first bytes: most types are ruled out after one short comparison.
    let first = |v: &[u8]| v.first().map(u8::to_ascii_lowercase);
    match first(v) {
        Some(b'a') if has_prefix(v, b"application/") => {
            let subtype = &v[12..];
            STREAMING_APPLICATIONS
                .iter()
                .filter(|s| first(subtype) == Some(s[0]))
                .any(|s| has_prefix(subtype, s))
        }
        Some(b't') => has_prefix(v, b"text/event-stream"),
        Some(b'm') => has_prefix(v, b"multipart/x-mixed-replace"),
        _ => false,
    }
}

/// Whether `Cache-Control` has the `no-store` directive.
#[cfg(test)]
fn has_no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(no_store_in)
}

/// Whether one `Cache-Control` line has the `no-store` directive.
fn no_store_in(value: &HeaderValue) -> bool {
    value.as_bytes().split(|&b| b == b',').any(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"no-store")
    })
}

/// Whether the body can fit in `max_buffer` bytes, judged from `Content-Length` and the
/// body's size hint before any byte is read.
#[cfg(test)]
fn may_fit<B: Body>(response: &http::Response<B>, max_buffer: usize) -> bool {
    fits(response, declared_length(response.headers()), max_buffer)
}

/// [`may_fit`] with the `Content-Length` already read.
pub(crate) fn fits<B: Body>(
    response: &http::Response<B>,
    declared: Option<u64>,
    max_buffer: usize,
) -> bool {
    let max = max_buffer as u64;
    declared.is_none_or(|n| n <= max) && response.body().size_hint().lower() <= max
}

/// The response's `Content-Length`, when it has a valid one.
#[cfg(test)]
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(length_of)
}

/// A `Content-Length` value, when it is a valid length.
pub(crate) fn length_of(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.trim().parse::<u64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn resp(status: u16, headers: &[(&str, &str)]) -> http::Response<Empty<bytes::Bytes>> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Empty::new()).unwrap()
    }

    /// The one pass reads what the separate lookups read: the first line of ETag (and how
    /// many there are), Content-Length and Content-Type, and no-store on any Cache-Control
    /// line.
    #[test]
    fn scan_reads_repeated_fields_like_lookups() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("content-type", "text/plain"),
            ("content-type", "text/event-stream"),
            ("content-length", "12"),
            ("content-length", "99"),
            ("cache-control", "max-age=60"),
            ("cache-control", "private, no-store"),
            ("etag", "\"a\""),
            ("etag", "\"b\""),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        let fields = HeadFields::scan(&h);
        assert_eq!(fields.etag, Some(EntityTag::strong("a").unwrap()));
        assert_eq!(fields.etag_lines, 2);
        assert_eq!(fields.declared, Some(12));
        assert_eq!(fields.declared, declared_length(&h));
        assert!(fields.no_store && has_no_store(&h));
        assert!(
            !fields.stream && !is_stream(&h),
            "the first Content-Type counts"
        );

        let mut h = HeaderMap::new();
        h.append("etag", HeaderValue::from_static("not a tag"));
        h.append("content-length", HeaderValue::from_static("x"));
        h.append(
            "content-type",
            HeaderValue::from_static("application/x-ndjson"),
        );
        let fields = HeadFields::scan(&h);
        assert_eq!((fields.etag, fields.etag_lines), (None, 1));
        assert_eq!(fields.declared, None);
        assert!(fields.stream && !fields.no_store);
        let none = HeadFields::scan(&HeaderMap::new());
        assert_eq!((none.etag_lines, none.declared), (0, None));
    }

    #[test]
    fn default_predicate_table() {
        let p = DefaultPredicate::new();
        assert!(p.should_hash(&resp(200, &[])));
        assert!(p.should_hash(&resp(200, &[("content-type", "application/json")])));
        assert!(!p.should_hash(&resp(201, &[])));
        assert!(!p.should_hash(&resp(206, &[])));
        assert!(!p.should_hash(&resp(204, &[])));
        assert!(!p.should_hash(&resp(404, &[])));
        assert!(!p.should_hash(&resp(200, &[("content-range", "bytes 0-1/2")])));
    }

    #[test]
    fn streams_are_recognised_by_content_type() {
        let ct = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            h
        };
        for stream in [
            "text/event-stream",
            "Text/Event-Stream; charset=utf-8",
            "  text/event-stream",
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC-Web-Text",
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            "application/x-jsonlines",
            "multipart/x-mixed-replace; boundary=frame",
        ] {
            assert!(is_stream(&ct(stream)), "{stream}");
        }
        for other in [
            "application/json",
            "application/octet-stream",
            "text/plain",
            "multipart/form-data",
            "application/",
            "a",
            "",
        ] {
            assert!(!is_stream(&ct(other)), "{other}");
        }
        assert!(!is_stream(&HeaderMap::new()));
    }

    #[test]
    fn no_store_is_a_directive_not_a_substring() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.append(header::CACHE_CONTROL, v.parse().unwrap());
            h
        };
        assert!(has_no_store(&h("no-store")));
        assert!(has_no_store(&h("private, No-Store")));
        assert!(!has_no_store(&h("no-cache")));
        assert!(!has_no_store(&h("x-no-store-ish=1")));
        assert!(!has_no_store(&HeaderMap::new()));
    }

    #[test]
    fn closures_and_and() {
        let only_json =
            |_: StatusCode, h: &HeaderMap| content_type_starts_with(h, b"application/json");
        let p = DefaultPredicate::new().and(only_json);
        assert!(p.should_hash(&resp(200, &[("content-type", "application/json")])));
        assert!(!p.should_hash(&resp(200, &[("content-type", "text/plain")])));
        assert!(!p.should_hash(&resp(404, &[("content-type", "application/json")])));
    }

    #[test]
    fn size_checks_before_reading() {
        assert!(may_fit(&resp(200, &[("content-length", "10")]), 10));
        assert!(!may_fit(&resp(200, &[("content-length", "11")]), 10));
        assert!(may_fit(&resp(200, &[("content-length", "garbage")]), 10));
        let big = http::Response::new(Full::new(bytes::Bytes::from(vec![0u8; 11])));
        assert!(!may_fit(&big, 10));
        let small = http::Response::new(Full::new(bytes::Bytes::from(vec![0u8; 10])));
        assert!(may_fit(&small, 10));
    }
}
