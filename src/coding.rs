//! [`CodingTagsLayer`]: one strong tag per content-coding, with lookups on identity bytes.
//!
//! A tag computed inside compression is the identity bytes' tag, which a lookup can compute
//! from what it stores — but then a gzip response and an identity response would share one
//! strong tag, which RFC 9110 §8.8.3 forbids. A tag computed outside compression differs per
//! coding, but no lookup can compute it. This adapter, placed *outside* compression with the
//! [`ConditionalLayer`](crate::ConditionalLayer) inside, gives both:
//!
//! * on the way out, a response with `Content-Encoding: gzip` and tag `"T"` gets `"T;gzip"` —
//!   each coding has its own strong tag;
//! * on a write, `If-Match` and `If-None-Match` have the suffix removed before the
//!   conditional layer compares them with the identity tag its lookup computes — so a write
//!   from a gzip client validates, and a stale one gets 412;
//! * on a read, the conditions (`If-None-Match`, `If-Match` and the dates they leave in force)
//!   are evaluated here, on the final response —
//!   so `"T;gzip"` revalidates a gzip response to 304 and never an identity one, and `"T"`
//!   the reverse. (The inner layer does not see them, so the response is produced and
//!   compressed before it is replaced by the 304: the price of telling the codings apart.)
//!   An `If-Range` with a coding's tag drops the `Range` (compression leaves parts alone, so
//!   such a tag never names a part): the whole response comes back;
//! * a HEAD leaves with no content: compression encodes it as it encodes the GET (same
//!   `Content-Encoding`, `Vary` and coding's tag, over HTTP/2 too), and whatever framing the
//!   encoder writes for its empty body is dropped here (DATA on a HEAD response is a stream
//!   error over HTTP/2).
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_conditional::{CodingTagsLayer, ConditionalLayer};
//! # use std::convert::Infallible;
//! # use tower_conditional::{lookup_fn, LookupRequest, Validators};
//! # let lookup = lookup_fn(|_: LookupRequest| async { Ok::<_, Infallible>(None::<Validators>) });
//!
//! let stack = ServiceBuilder::new()
//!     .layer(CodingTagsLayer::new())                   // outside compression
//!     // .layer(tower_http::compression::CompressionLayer::new())
//!     .layer(ConditionalLayer::new().lookup(lookup)); // inside: identity bytes
//! # let _ = stack;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;
use tower_layer::Layer;

use crate::body::ConditionalBody;
use crate::etag::EntityTag;
use crate::header::{parse_date_value, IfRange, TagList};
use crate::outcome::Outcome;
use crate::precondition::{evaluate, Conditions, Decision, Options};
use crate::response::{
    coding_accepted, into_not_modified_keeping_length, not_modified_size, Rejection, RejectionKind,
};
use crate::validators::Validators;

/// The codings whose suffix is recognised on incoming tags.
const CODINGS: [&str; 5] = ["gzip", "br", "deflate", "zstd", "compress"];

/// Between the identity tag and the coding: a byte that base64url tags never contain.
const SEPARATOR: u8 = b';';

/// Applies [`CodingTags`]: one strong tag per content-coding, with lookups on identity bytes.
///
/// Place it outside the compression layer, with the [`ConditionalLayer`](crate::ConditionalLayer)
/// inside; `examples/service_builder` is the recipe.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct CodingTagsLayer {
    _priv: (),
}

impl CodingTagsLayer {
    /// The adapter.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for CodingTagsLayer {
    type Service = CodingTags<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CodingTags { inner }
    }
}

/// Gives each content-coding its own strong tag while lookups see identity tags; built by
/// [`CodingTagsLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CodingTags<S> {
    inner: S,
}

impl<S> CodingTags<S> {
    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CodingTags<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ConditionalBody<ResBody>>;
    type Error = S::Error;
    type Future = CodingTagsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let read = req.method() == Method::GET || req.method() == Method::HEAD;
        let headers = req.headers_mut();
        if !read {
            // A write has no coding: its conditions name the identity tag the lookup knows.
            strip_suffixes(headers, header::IF_MATCH);
            strip_suffixes(headers, header::IF_NONE_MATCH);
            return CodingTagsFuture {
                inner: self.inner.call(req),
                checks: Checks::default(),
            };
        }
        // A read's conditions are evaluated here, on the response as it goes out: inside, a
        // coding's tag would be compared with the identity tag, and a 304 made inside would
        // carry the identity tag where the client holds a coding's.
        let head = req.method() == Method::HEAD;
        let http2 = req.version() == http::Version::HTTP_2;
        let coding_accepted = coding_accepted(req.headers(), head, http2);
        if head {
            // This adapter empties the HEAD response (below): the layer inside may give it the
            // GET's size over HTTP/2 too, so that compression labels it as it does the GET.
            req.extensions_mut().insert(HeadEmptiedOutside);
        }
        let headers = req.headers_mut();
        let mut conditions = Conditions::from_headers(headers);
        let coded_if_range =
            matches!(&conditions.if_range, Some(IfRange::Tag(tag)) if identity_tag(tag).is_some());
        if coded_if_range || conditions.needs_whole() {
            // A coding's tag never names a part (compression leaves 206s alone), and the other
            // conditions can only be checked on the whole response: no Range.
            headers.remove(header::RANGE);
            headers.remove(header::IF_RANGE);
        }
        // Range and If-Range, where they stay, are the service's.
        conditions.drop_range();
        for name in READ_CONDITIONS {
            headers.remove(name);
        }
        CodingTagsFuture {
            inner: self.inner.call(req),
            checks: Checks {
                conditions: (!conditions.is_empty()).then_some(conditions),
                head,
                http2,
                coding_accepted,
            },
        }
    }
}

/// The fields of a read that this adapter evaluates itself.
const READ_CONDITIONS: [HeaderName; 4] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// The conditions a read leaves for the adapter to check on the final response.
#[derive(Debug, Default)]
struct Checks {
    conditions: Option<Conditions>,
    /// The request was a HEAD: an answer made here has no content (RFC 9110 §9.3.2).
    head: bool,
    /// The request came over HTTP/2, where a 304's `Content-Length` is sent as given.
    http2: bool,
    /// The client accepts a content coding, so a compression layer outside (this adapter
    /// misplaced inside one) may encode an empty answer made here: then it reports an exact
    /// zero size. Read for a HEAD or over HTTP/2, where that size becomes a length; over
    /// HTTP/1.1 hyper writes none for a GET's 304, so there it is taken as `true`.
    coding_accepted: bool,
}

/// Set on a HEAD by [`CodingTags`], which empties the response on its way out: the
/// conditional layer inside may then give the HEAD's empty body the GET's size over HTTP/2 as
/// over HTTP/1.1, so that compression between the two labels the HEAD as it labels the GET
/// (`Content-Encoding`, `Vary`, the coding's tag). Whatever framing the encoder writes for
/// the empty body is dropped here (DATA on a HEAD response is a stream error over HTTP/2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadEmptiedOutside;

/// A HEAD response's body as it leaves: nothing, with the size [`empty_size`] gives it. The
/// GET's length goes in `Content-Length` first where only the body's size says it (a HEAD the
/// service answered with the GET's content, as axum handlers do under `head_as_get(false)`):
/// a router writing lengths from body sizes would otherwise write what the emptied body says.
/// Neither an empty body's zero (a HEAD handler that sends nothing) nor an encoded body's size
/// is such a length: an encoder inside may have encoded the empty body the layer made.
fn emptied<B: Body>(headers: &mut HeaderMap, checks: &Checks, body: B) -> ConditionalBody<B> {
    let encoded = is_encoded(headers);
    let size = body.size_hint().exact().filter(|&n| n > 0 && !encoded);
    drop(body);
    if let Some(n) = size {
        headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(n));
    }
    // Over HTTP/1.1 no size at all, the length in the header or not: a compressor outside (the
    // adapter misplaced) then labels the HEAD as it labels the GET, and hyper sends no body.
    ConditionalBody::empty(empty_size(encoded, checks, false))
}

/// The size of an empty answer made here (a HEAD's, a 304's): an exact zero only where a
/// compression layer outside could encode it into something that goes out — this adapter
/// misplaced inside one, for a client that accepts a coding — and where the size becomes a
/// length. Elsewhere no size, so that nothing writes a length the 200 did not have (RFC 9110
/// §8.6; axum writes `content-length: 0` for an exact zero):
/// - `encoded`: compression sits inside this adapter, as the recipe places it;
/// - a HEAD over HTTP/1.1 (hyper never sends a HEAD response's body), unless its length is
///   the 200's, `kept` in `Content-Length` (then an exact zero keeps a misplaced compressor
///   from taking it for content, and the header keeps the length).
fn empty_size(encoded: bool, checks: &Checks, kept: bool) -> http_body::SizeHint {
    let unsent_head = checks.head && !checks.http2 && !kept;
    not_modified_size(!encoded && !unsent_head && checks.coding_accepted)
}

/// Whether a response carries a content-coding other than identity.
fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
    })
}

impl Checks {
    /// The decision for the final response (its tag, its `Last-Modified`): the same RFC 9110
    /// §13.2.2 evaluation the layer makes, on the response that goes out.
    fn verdict(&self, tag: Option<EntityTag>, modified: Option<SystemTime>) -> Decision {
        let Some(conditions) = &self.conditions else {
            return Decision::Proceed;
        };
        let mut current = Validators::new();
        if let Some(tag) = tag {
            current.set_etag(tag);
        }
        if let Some(modified) = modified {
            current = current.with_last_modified(modified);
        }
        evaluate(&Method::GET, conditions, Some(&current), Options::default())
    }
}

pin_project! {
    /// The response future of [`CodingTags`].
    #[must_use = "futures do nothing unless polled"]
    pub struct CodingTagsFuture<F> {
        #[pin]
        inner: F,
        checks: Checks,
    }
}

impl<F> std::fmt::Debug for CodingTagsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodingTagsFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for CodingTagsFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ConditionalBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let (mut head, body) = response.into_parts();
        if !head.status.is_success() {
            // A 304 or an error carries no coding of its own: nothing to suffix or check.
            let body = if this.checks.head {
                emptied(&mut head.headers, this.checks, body)
            } else {
                ConditionalBody::pass_through(body)
            };
            return Poll::Ready(Ok(Response::from_parts(head, body)));
        }
        // Encoded inside: compression sits within this layer, as the recipe places it.
        let encoded = is_encoded(&head.headers);
        let tag = match encoded_tag(&head.headers) {
            Some(tag) => {
                head.headers.insert(header::ETAG, tag.to_header_value());
                Some(tag)
            }
            None => head
                .headers
                .get(header::ETAG)
                .and_then(|v| EntityTag::try_from(v).ok()),
        };
        let modified = head
            .headers
            .get(header::LAST_MODIFIED)
            .and_then(parse_date_value);
        let response = match this.checks.verdict(tag, modified) {
            Decision::Proceed | Decision::IgnoreRange if this.checks.head => {
                let body = emptied(&mut head.headers, this.checks, body);
                Response::from_parts(head, body)
            }
            Decision::Proceed | Decision::IgnoreRange => {
                Response::from_parts(head, ConditionalBody::pass_through(body))
            }
            Decision::NotModified => {
                // The 200's length where it is written as given; for a GET, the exact size of
                // the body it would have sent counts (a router such as axum writes that header
                // only later, on the way out).
                let written = this.checks.head || this.checks.http2;
                // A HEAD's body counts where it has content of its own: the GET's (an empty one
                // is a HEAD handler's that sends none; an encoded one may be the encoding of
                // the empty body the layer made).
                let size = || {
                    let size = body.size_hint().exact();
                    size.filter(|&n| !this.checks.head || (n > 0 && !encoded))
                };
                let kept = into_not_modified_keeping_length(&mut head, written, size);
                drop(body);
                if head.extensions.get::<Outcome>().is_some() {
                    head.extensions.insert(Outcome::NotModified);
                }
                let hint = empty_size(encoded, this.checks, kept);
                Response::from_parts(head, ConditionalBody::empty(hint))
            }
            Decision::PreconditionFailed(failed) => {
                drop(body);
                let kind = RejectionKind::PreconditionFailed(failed);
                let mut response = Rejection::new(kind, None)
                    .problem_response()
                    .map(ConditionalBody::full);
                if this.checks.head {
                    ConditionalBody::without_content(&mut response);
                }
                if head.extensions.get::<Outcome>().is_some() {
                    response.extensions_mut().insert(Outcome::Rejected(kind));
                }
                response
            }
        };
        Poll::Ready(Ok(response))
    }
}

/// The tag a response with a content-coding goes out with: its (identity) tag with the
/// coding appended, or `None` when it has no coding or no valid tag.
fn encoded_tag(headers: &HeaderMap) -> Option<EntityTag> {
    let coding = headers.get(header::CONTENT_ENCODING)?.to_str().ok()?;
    let coding: String = coding
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect::<Vec<_>>()
        .join("+")
        .to_ascii_lowercase();
    if coding.is_empty() {
        return None;
    }
    let tag = EntityTag::try_from(headers.get(header::ETAG)?).ok()?;
    let mut opaque = tag.opaque().to_vec();
    opaque.push(SEPARATOR);
    opaque.extend_from_slice(coding.as_bytes());
    EntityTag::build(tag.is_weak(), &opaque).ok()
}

/// The identity tag behind a coding's tag, or `None` when `tag` has no coding suffix.
fn identity_tag(tag: &EntityTag) -> Option<EntityTag> {
    let opaque = tag.opaque();
    let at = opaque.iter().rposition(|&b| b == SEPARATOR)?;
    let coding = std::str::from_utf8(&opaque[at + 1..]).ok()?;
    let known = coding
        .split('+')
        .all(|c| CODINGS.iter().any(|k| k.eq_ignore_ascii_case(c)));
    if !known {
        return None;
    }
    EntityTag::build(tag.is_weak(), &opaque[..at]).ok()
}

/// Replaces coding tags in a list field (or an `If-Range` tag) by their identity tags.
fn strip_suffixes(headers: &mut HeaderMap, name: HeaderName) {
    let tags = match TagList::parse(headers.get_all(&name)) {
        Ok(Some(TagList::Tags(tags))) => tags,
        // `*`, absent, a date in If-Range, or malformed: as sent.
        _ => return,
    };
    if !tags.iter().any(|t| identity_tag(&t).is_some()) {
        return;
    }
    let mut value = Vec::new();
    for tag in tags.iter() {
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        match identity_tag(&tag) {
            Some(identity) => value.extend_from_slice(identity.as_bytes()),
            None => value.extend_from_slice(tag.as_bytes()),
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> EntityTag {
        s.parse().unwrap()
    }

    #[test]
    fn suffix_round_trip() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        let gz = encoded_tag(&h).unwrap();
        assert_eq!(gz.to_string(), "\"abc;gzip\"");
        assert_eq!(identity_tag(&gz), Some(tag("\"abc\"")));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert_eq!(encoded_tag(&h), None);
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        let both = encoded_tag(&h).unwrap();
        assert_eq!(both.to_string(), "\"abc;gzip+br\"");
        assert_eq!(identity_tag(&both), Some(tag("\"abc\"")));
        // Weak tags keep their weakness; unknown suffixes are not codings.
        assert_eq!(identity_tag(&tag("W/\"x;br\"")), Some(tag("W/\"x\"")));
        assert_eq!(identity_tag(&tag("\"x;v2\"")), None);
        assert_eq!(identity_tag(&tag("\"plain\"")), None);
    }

    #[test]
    fn lists_lose_suffixes_and_keep_the_rest() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MATCH,
            HeaderValue::from_static("\"a;gzip\", W/\"b\""),
        );
        strip_suffixes(&mut h, header::IF_MATCH);
        assert_eq!(h[header::IF_MATCH], "\"a\", W/\"b\"");
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        strip_suffixes(&mut h, header::IF_MATCH);
        assert_eq!(h[header::IF_MATCH], "*");
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"unterminated"));
        strip_suffixes(&mut h, header::IF_MATCH);
        assert_eq!(h[header::IF_MATCH], "\"unterminated");
    }
}
