//! Parsing the conditional request fields: `If-Match` / `If-None-Match` lists, HTTP-dates
//! (`If-Modified-Since`, `If-Unmodified-Since`, `Last-Modified`) and `If-Range`.
//!
//! Every parser here reads each byte of each field line once: work is linear in the size of
//! the header, whatever the client sends.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use tower_conditional::etag::EntityTag;
//! use tower_conditional::header::TagList;
//!
//! let mut headers = HeaderMap::new();
//! headers.append("if-none-match", HeaderValue::from_static("\"a\", W/\"b\""));
//! headers.append("if-none-match", HeaderValue::from_static("\"c,d\""));
//! let list = TagList::parse(headers.get_all("if-none-match")).unwrap().unwrap();
//! assert!(list.matches_weak(&EntityTag::strong("b").unwrap()));
//! assert!(list.matches_weak(&EntityTag::strong("c,d").unwrap()));
//! assert!(!list.matches_strong(&EntityTag::strong("b").unwrap()));
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::GetAll;
use http::HeaderValue;

use crate::etag::{is_etagc, EntityTag};

/// The value of an `If-Match` or `If-None-Match` field: `*` or a list of entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    /// `*`: any current representation.
    Any,
    /// The listed tags, in order, across all field lines. May be empty (`If-Match: ,`).
    Tags(Vec<EntityTag>),
}

/// The error for a field value that is neither `*` nor a list of entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedList {
    _priv: (),
}

impl fmt::Display for MalformedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed entity-tag list")
    }
}

impl std::error::Error for MalformedList {}

const MALFORMED: MalformedList = MalformedList { _priv: () };

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl TagList {
    /// Parses every field line of one field (`headers.get_all(IF_MATCH)`).
    ///
    /// Returns `Ok(None)` when the field is absent. Lines are combined as one comma-separated
    /// list (RFC 9110 §5.3); empty elements and optional whitespace are skipped; commas inside
    /// quoted tags belong to the tag. `*` must be the only member: `*` beside a tag, or twice,
    /// is malformed, as is anything that is not an entity tag.
    pub fn parse(lines: GetAll<'_, HeaderValue>) -> Result<Option<TagList>, MalformedList> {
        let mut present = false;
        let mut any = false;
        let mut tags = Vec::new();
        for line in lines {
            present = true;
            parse_line(line.as_bytes(), &mut any, &mut tags)?;
        }
        if !present {
            return Ok(None);
        }
        if any {
            if !tags.is_empty() {
                return Err(MALFORMED);
            }
            return Ok(Some(TagList::Any));
        }
        Ok(Some(TagList::Tags(tags)))
    }

    /// Whether `current` matches a member under strong comparison (`*` matches any tag).
    pub fn matches_strong(&self, current: &EntityTag) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(tags) => tags.iter().any(|t| t.strong_eq(current)),
        }
    }

    /// Whether `current` matches a member under weak comparison (`*` matches any tag).
    pub fn matches_weak(&self, current: &EntityTag) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(tags) => tags.iter().any(|t| t.weak_eq(current)),
        }
    }
}

fn parse_line(b: &[u8], any: &mut bool, tags: &mut Vec<EntityTag>) -> Result<(), MalformedList> {
    let mut i = 0;
    loop {
        // Empty list elements and the whitespace around them.
        while i < b.len() && (is_ows(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            return Ok(());
        }
        if b[i] == b'*' {
            if *any {
                return Err(MALFORMED);
            }
            *any = true;
            i += 1;
        } else {
            let weak = b[i..].starts_with(b"W/");
            if weak {
                i += 2;
            }
            if b.get(i) != Some(&b'"') {
                return Err(MALFORMED);
            }
            i += 1;
            let start = i;
            while i < b.len() && is_etagc(b[i]) {
                i += 1;
            }
            if b.get(i) != Some(&b'"') {
                return Err(MALFORMED);
            }
            // Scanned once here; build only copies the opaque part into the tag.
            let tag = EntityTag::build(weak, &b[start..i]).map_err(|_| MALFORMED)?;
            i += 1;
            tags.push(tag);
        }
        while i < b.len() && is_ows(b[i]) {
            i += 1;
        }
        match b.get(i) {
            None => return Ok(()),
            Some(b',') => i += 1,
            Some(_) => return Err(MALFORMED),
        }
    }
}

/// Parses an HTTP-date field (`If-Modified-Since`, `If-Unmodified-Since`, `Last-Modified`).
///
/// Accepts the three formats of RFC 9110 §5.6.7 (IMF-fixdate, RFC 850, asctime). Returns
/// `None`, meaning "ignore the field", when it is absent, sent on more than one line, not
/// valid UTF-8, or not a valid date (including a list of dates and out-of-range years).
///
/// ```
/// # use http::{HeaderMap, HeaderValue};
/// # use tower_conditional::header::parse_http_date;
/// let mut h = HeaderMap::new();
/// h.insert("if-modified-since", HeaderValue::from_static("Sunday, 06-Nov-94 08:49:37 GMT"));
/// assert!(parse_http_date(h.get_all("if-modified-since")).is_some());
/// h.insert("if-modified-since", HeaderValue::from_static("yesterday"));
/// assert!(parse_http_date(h.get_all("if-modified-since")).is_none());
/// ```
pub fn parse_http_date(lines: GetAll<'_, HeaderValue>) -> Option<SystemTime> {
    let mut iter = lines.iter();
    let first = iter.next()?;
    if iter.next().is_some() {
        return None;
    }
    parse_date_value(first)
}

pub(crate) fn parse_date_value(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?.trim();
    // The longest valid form (RFC 850 with the longest weekday) is 33 bytes; anything much
    // longer is not a date, and need not be handed to the date parser at all.
    if text.len() > 64 {
        return None;
    }
    httpdate::parse_http_date(text).ok()
}

/// Formats `time` as an IMF-fixdate header value; `None` outside the years an HTTP-date can
/// express (1970 to 9999), instead of the panic `httpdate` would raise.
///
/// ```
/// # use std::time::{Duration, UNIX_EPOCH};
/// # use tower_conditional::header::http_date;
/// assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(784111777)).unwrap(), "Sun, 06 Nov 1994 08:49:37 GMT");
/// assert!(http_date(UNIX_EPOCH - Duration::from_secs(1)).is_none());
/// ```
pub fn http_date(time: SystemTime) -> Option<HeaderValue> {
    const YEAR_10000: u64 = 253_402_300_800;
    let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    if secs >= YEAR_10000 {
        return None;
    }
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()
}

/// Truncates a time to whole seconds, the resolution of an HTTP-date.
pub fn to_http_seconds(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        // Before 1970: HTTP-dates cannot express it exactly; keep it as is.
        Err(_) => time,
    }
}

/// The validator in an `If-Range` field (RFC 9110 §13.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfRange {
    /// An entity tag; it matches only under strong comparison.
    Tag(EntityTag),
    /// An HTTP-date; it matches only when equal to `Last-Modified`.
    Date(SystemTime),
    /// Anything else (or more than one line). It never matches, so `Range` is ignored and
    /// the whole representation is sent — the safe answer for a client that cannot be
    /// understood.
    Invalid,
}

impl IfRange {
    /// Parses the `If-Range` field lines; `None` when the field is absent.
    pub fn parse(lines: GetAll<'_, HeaderValue>) -> Option<IfRange> {
        let mut iter = lines.iter();
        let first = iter.next()?;
        if iter.next().is_some() {
            return Some(IfRange::Invalid);
        }
        let bytes = first.as_bytes().trim_ascii();
        let parsed = if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
            EntityTag::parse(bytes).ok().map(IfRange::Tag)
        } else {
            parse_date_value(first).map(IfRange::Date)
        };
        Some(parsed.unwrap_or(IfRange::Invalid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn list(lines: &[&[u8]]) -> Result<Option<TagList>, MalformedList> {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("if-match", HeaderValue::from_bytes(l).unwrap());
        }
        TagList::parse(h.get_all("if-match"))
    }

    fn tags(v: &[&str]) -> TagList {
        TagList::Tags(v.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn lists_across_lines_with_empty_elements_and_whitespace() {
        assert_eq!(list(&[]), Ok(None));
        assert_eq!(list(&[b"*"]), Ok(Some(TagList::Any)));
        assert_eq!(list(&[b" * "]), Ok(Some(TagList::Any)));
        assert_eq!(list(&[b"\"a\""]), Ok(Some(tags(&["\"a\""]))));
        assert_eq!(
            list(&[b", ,\"a\" ,\tW/\"b\",, ", b"\"c\""]),
            Ok(Some(tags(&["\"a\"", "W/\"b\"", "\"c\""])))
        );
        // §5.6.1: empty elements are accepted; a list of none matches nothing.
        assert_eq!(list(&[b""]), Ok(Some(TagList::Tags(vec![]))));
        assert_eq!(list(&[b" , , "]), Ok(Some(TagList::Tags(vec![]))));
        // A comma inside quotes is part of the tag.
        assert_eq!(list(&[b"\"a,b\""]), Ok(Some(tags(&["\"a,b\""]))));
    }

    #[test]
    fn malformed_lists() {
        for bad in [
            &b"a"[..],
            b"\"a\" \"b\"",
            b"\"a",
            b"W/a",
            b"w/\"a\"",
            b"*, \"a\"",
            b"\"a\", *",
            b"*, *",
            b"**",
            b"\"a\"x",
            b"\"a\"\"b\"",
            b"\"a b\"",
        ] {
            assert_eq!(
                list(&[bad]),
                Err(MALFORMED),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // `*` on one line and a tag on another is still `*` beside a tag.
        assert_eq!(list(&[b"*", b"\"a\""]), Err(MALFORMED));
        assert_eq!(list(&[b"*", b"*"]), Err(MALFORMED));
    }

    #[test]
    fn huge_lists_parse() {
        let mut line = Vec::new();
        for i in 0..10_000 {
            line.extend_from_slice(format!("\"tag{i}\", ").as_bytes());
        }
        match list(&[&line]).unwrap().unwrap() {
            TagList::Tags(t) => assert_eq!(t.len(), 10_000),
            TagList::Any => panic!("not any"),
        }
    }

    #[test]
    fn dates_in_three_formats_and_invalid_ones() {
        let expected = UNIX_EPOCH + Duration::from_secs(784111777);
        for ok in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            let mut h = HeaderMap::new();
            h.insert("d", HeaderValue::from_str(ok).unwrap());
            assert_eq!(parse_http_date(h.get_all("d")), Some(expected), "{ok}");
        }
        for bad in [
            &b"Sun, 06 Nov 1994 08:49:37"[..],
            b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 31 Feb 1994 08:49:37 GMT",
            b"Sun, 06 Nov 99999 08:49:37 GMT",
            b"0",
            b"",
            b"Sun, 06 Nov 1994 \xff8:49:37 GMT",
        ] {
            let mut h = HeaderMap::new();
            h.insert("d", HeaderValue::from_bytes(bad).unwrap());
            assert_eq!(parse_http_date(h.get_all("d")), None, "{bad:?}");
        }
        let mut h = HeaderMap::new();
        h.append(
            "d",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        h.append(
            "d",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            parse_http_date(h.get_all("d")),
            None,
            "two lines are a list"
        );
    }

    #[test]
    fn if_range_forms() {
        let parse = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("if-range", HeaderValue::from_static(v));
            IfRange::parse(h.get_all("if-range")).unwrap()
        };
        assert_eq!(parse("\"a\""), IfRange::Tag("\"a\"".parse().unwrap()));
        assert_eq!(parse("W/\"a\""), IfRange::Tag("W/\"a\"".parse().unwrap()));
        assert!(matches!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            IfRange::Date(_)
        ));
        assert_eq!(parse("\"a\", \"b\""), IfRange::Invalid);
        assert_eq!(parse("nonsense"), IfRange::Invalid);
        assert_eq!(IfRange::parse(HeaderMap::new().get_all("if-range")), None);
    }

    #[test]
    fn truncation_to_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(to_http_seconds(t), UNIX_EPOCH + Duration::from_secs(1));
    }
}
