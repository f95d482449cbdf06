//! [`Validators`]: what is known about the target's current representation.

use std::time::SystemTime;

use http::{header, HeaderMap};

use crate::etag::EntityTag;
use crate::header::parse_date_value;

/// What is known about the current representation of the target resource.
///
/// A missing field means "not available": a missing `etag` never matches a tag, a missing
/// `last_modified` makes the date conditions be ignored (RFC 9110 §13.1.3, §13.1.4).
#[derive(Debug, Clone, Default)]
pub struct Validators {
    etag: Option<EntityTag>,
    last_modified: Option<SystemTime>,
    /// Boxed, and only when a field was added: most lookups answer with validators alone,
    /// and validators are moved through every lookup's future and decision.
    headers: Option<Box<HeaderMap>>,
}

/// Equal when the validators are; the fields for a 304 do not take part.
impl PartialEq for Validators {
    fn eq(&self, other: &Self) -> bool {
        self.etag == other.etag && self.last_modified == other.last_modified
    }
}

impl Eq for Validators {}

impl Validators {
    /// Validators with neither field known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the entity tag.
    pub fn with_etag(mut self, etag: EntityTag) -> Self {
        self.etag = Some(etag);
        self
    }

    /// Sets the modification time.
    pub fn with_last_modified(mut self, time: SystemTime) -> Self {
        self.last_modified = Some(time);
        self
    }

    /// Adds a field that a 200 to a GET of the target would carry and that a 304 must repeat
    /// (RFC 9110 §15.4.5: `Cache-Control`, `Content-Location`, `Expires`, `Vary`, …). A 304
    /// the layer answers from these validators alone, without calling the service
    /// ([`lookup_reads`](crate::ConditionalLayer::lookup_reads)), carries them; content
    /// metadata (`Content-Type`, `Content-Encoding`, …) is never sent on a 304. The one
    /// exception is `Content-Length`, the length of the 200's content: a 304 may carry that
    /// (RFC 9110 §8.6), and where a length is written as given — answering a HEAD, or over
    /// HTTP/2 — the 304 carries the one supplied here rather than none, which a router that
    /// writes lengths from body sizes (axum) would turn into `Content-Length: 0`.
    ///
    /// ```
    /// use http::header::{CACHE_CONTROL, VARY};
    /// use http::HeaderValue;
    /// use tower_conditional::{EntityTag, Validators};
    ///
    /// let current = Validators::new()
    ///     .with_etag(EntityTag::from_content(b"row bytes"))
    ///     .with_header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
    ///     .with_header(VARY, HeaderValue::from_static("Accept"));
    /// assert_eq!(current.headers()[VARY], "Accept");
    /// ```
    pub fn with_header(mut self, name: header::HeaderName, value: http::HeaderValue) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .append(name, value);
        self
    }

    /// The fields a 304 built from these validators carries (see
    /// [`with_header`](Self::with_header)).
    pub fn headers(&self) -> &HeaderMap {
        static NONE: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        match &self.headers {
            Some(headers) => headers,
            None => NONE.get_or_init(HeaderMap::new),
        }
    }

    /// The current entity tag.
    pub fn etag(&self) -> Option<&EntityTag> {
        self.etag.as_ref()
    }

    /// The current modification time. Compared at one-second resolution.
    pub fn last_modified(&self) -> Option<SystemTime> {
        self.last_modified
    }

    pub(crate) fn set_etag(&mut self, etag: EntityTag) {
        self.etag = Some(etag);
    }

    pub(crate) fn take_etag(&mut self) -> Option<EntityTag> {
        self.etag.take()
    }

    /// Reads `ETag` and `Last-Modified` from response headers; unparsable values are ignored.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Validators {
            etag: headers
                .get(header::ETAG)
                .and_then(|v| EntityTag::try_from(v).ok()),
            last_modified: headers
                .get(header::LAST_MODIFIED)
                .and_then(parse_date_value),
            headers: None,
        }
    }
}
