//! Parsing the conditional request fields: `If-Match` / `If-None-Match` lists, HTTP-dates
//! (`If-Modified-Since`, `If-Unmodified-Since`, `Last-Modified`) and `If-Range`.
//!
//! Every parser here reads each byte of each field line once: work is linear in the size of
//! the header, whatever the client sends.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use tower_conditional::EntityTag;
//! use tower_conditional::precondition::TagList;
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
#[non_exhaustive]
pub enum TagList {
    /// `*`: any current representation.
    Any,
    /// The listed tags, in order, across all field lines. May be empty (`If-Match: ,`).
    Tags(Tags),
}

/// The entity tags of a list field, kept compactly: matching a tag against them copies and
/// allocates nothing, and a list of one tag (the common revalidation) needs no allocation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tags {
    /// Each tag as: 1 byte weakness, 4 bytes length (little endian), the opaque bytes.
    packed: Packed,
    count: usize,
}

/// Bytes inline up to a small size, on the heap beyond.
#[derive(Clone)]
enum Packed {
    Inline { bytes: [u8; INLINE], len: u8 },
    Heap(Vec<u8>),
}

// One SHA-256 tag (1 + 4 + 43 bytes) fits; longer lists go to the heap.
const INLINE: usize = 48;
/// The bytes before each tag's opaque part: its weakness and its length.
const HEAD: usize = 5;

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Packed {}

impl Default for Packed {
    fn default() -> Self {
        Packed::Inline {
            bytes: [0; INLINE],
            len: 0,
        }
    }
}

impl Packed {
    fn as_slice(&self) -> &[u8] {
        match self {
            Packed::Inline { bytes, len } => &bytes[..usize::from(*len)],
            Packed::Heap(v) => v,
        }
    }

    /// Appends one tag: its weakness, its length, its opaque bytes.
    fn push_tag(&mut self, weak: bool, opaque: &[u8]) {
        let [a, b, c, d] = (opaque.len() as u32).to_le_bytes();
        let head = [u8::from(weak), a, b, c, d];
        if let Packed::Inline { bytes, len } = self {
            let at = usize::from(*len);
            let end = at + HEAD + opaque.len();
            if end <= INLINE {
                bytes[at..at + HEAD].copy_from_slice(&head);
                bytes[at + HEAD..end].copy_from_slice(opaque);
                *len = end as u8;
                return;
            }
            *self = Packed::Heap(bytes[..at].to_vec());
        }
        if let Packed::Heap(v) = self {
            v.extend_from_slice(&head);
            v.extend_from_slice(opaque);
        }
    }
}

impl Tags {
    fn push(&mut self, weak: bool, opaque: &[u8]) {
        self.packed.push_tag(weak, opaque);
        self.count += 1;
    }

    /// (weak, opaque) for each tag, in order.
    fn entries(&self) -> impl Iterator<Item = (bool, &[u8])> + '_ {
        let mut rest = self.packed.as_slice();
        std::iter::from_fn(move || {
            let (&weak, after) = rest.split_first()?;
            let (len, after) = after.split_at(4);
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (opaque, after) = after.split_at(len);
            rest = after;
            Some((weak == 1, opaque))
        })
    }

    /// The tags, in order.
    pub fn iter(&self) -> impl Iterator<Item = EntityTag> + '_ {
        self.entries()
            .filter_map(|(weak, opaque)| EntityTag::build(weak, opaque).ok())
    }

    /// How many tags the list has.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list has no tags (`If-Match: ,`).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A list of these tags (for tests and for building conditions by hand).
impl FromIterator<EntityTag> for Tags {
    fn from_iter<I: IntoIterator<Item = EntityTag>>(iter: I) -> Self {
        let mut tags = Tags::default();
        for tag in iter {
            tags.push(tag.is_weak(), tag.opaque());
        }
        tags
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
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
        let mut tags = Tags::default();
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
            TagList::Tags(tags) => {
                !current.is_weak()
                    && tags
                        .entries()
                        .any(|(weak, opaque)| !weak && opaque == current.opaque())
            }
        }
    }

    /// Whether `current` matches a member under weak comparison (`*` matches any tag).
    pub fn matches_weak(&self, current: &EntityTag) -> bool {
        match self {
            TagList::Any => true,
            TagList::Tags(tags) => tags.entries().any(|(_, opaque)| opaque == current.opaque()),
        }
    }
}

/// How many bytes at the start of `b` are `etagc`. Whole blocks are checked without an
/// early exit, which the compiler turns into a few vector instructions: a 43-character tag
/// is not scanned byte by byte.
fn etagc_run(b: &[u8]) -> usize {
    const BLOCK: usize = 16;
    let mut i = 0;
    while let Some(block) = b.get(i..i + BLOCK) {
        if !block.iter().fold(true, |ok, &c| ok & is_etagc(c)) {
            break;
        }
        i += BLOCK;
    }
    i + b[i..]
        .iter()
        .position(|&c| !is_etagc(c))
        .unwrap_or(b.len() - i)
}

fn parse_line(b: &[u8], any: &mut bool, tags: &mut Tags) -> Result<(), MalformedList> {
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
            i += etagc_run(&b[i..]);
            if b.get(i) != Some(&b'"') {
                return Err(MALFORMED);
            }
            // Scanned once here; kept as bytes, a tag is built only when asked for.
            tags.push(weak, &b[start..i]);
            i += 1;
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

/// The one byte range a `Range` value asks of a representation of `len` octets, as
/// `(first, last)` inclusive (RFC 9110 §14.1.2): `bytes=first-last`, `bytes=first-` or
/// `bytes=-suffix`, a `last` beyond the end cut to it. `None` where a server may send the
/// whole instead (§14.2): another unit, several ranges, a malformed value, or a range that
/// cannot be satisfied (§14.1.1), including any range of an empty representation.
pub(crate) fn byte_range(value: &[u8], len: u64) -> Option<(u64, u64)> {
    let (unit, set) = value.split_at(value.iter().position(|&b| b == b'=')?);
    if !unit.eq_ignore_ascii_case(b"bytes") || len == 0 {
        return None;
    }
    // A list (§5.6.1): empty elements and whitespace around them are allowed; one range only.
    let mut specs = set[1..]
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|spec| !spec.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    let number = |b: &[u8]| -> Option<Option<u64>> {
        // Digits only; a value too large for u64 is "beyond any end" (`None` inside).
        (!b.is_empty() && b.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()))
    };
    if first.is_empty() {
        // suffix-range: the last n octets; all of them when n exceeds the length.
        let suffix = number(last)?.unwrap_or(u64::MAX);
        return (suffix > 0).then(|| (len.saturating_sub(suffix), len - 1));
    }
    let first = number(first)?.filter(|&first| first < len)?;
    let last = if last.is_empty() {
        len - 1
    } else {
        match number(last)? {
            Some(last) if last < first => return None,
            Some(last) => last.min(len - 1),
            None => len - 1,
        }
    };
    Some((first, last))
}

/// Whether an `Accept-Encoding` field admits a content coding other than `identity` (RFC
/// 9110 §12.5.3): a member, `*` included, whose weight is not zero. Without the field,
/// `false`: §12.5.3 lets a server then send any coding, but compressors (tower-http's
/// among them) send identity, and this answers whether the client may hold encoded bytes.
pub(crate) fn admits_coding(lines: GetAll<'_, HeaderValue>) -> bool {
    let admits = |member: &[u8]| {
        let mut parts = member.split(|&b| b == b';');
        let coding = parts.next().unwrap_or_default().trim_ascii();
        if coding.is_empty() || coding.eq_ignore_ascii_case(b"identity") {
            return false;
        }
        let weight = parts.map(<[u8]>::trim_ascii).find_map(|param| {
            let (name, value) = param.split_at(param.iter().position(|&b| b == b'=')?);
            name.trim_ascii()
                .eq_ignore_ascii_case(b"q")
                .then(|| value[1..].trim_ascii())
        });
        // qvalue = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ]: zero is "0", "0.", "0.000".
        let zero = |q: &[u8]| {
            q.split_first().is_some_and(|(&first, rest)| {
                first == b'0'
                    && rest.split_first().is_none_or(|(&dot, digits)| {
                        dot == b'.' && digits.iter().all(|&d| d == b'0')
                    })
            })
        };
        !weight.is_some_and(zero)
    };
    lines
        .iter()
        .any(|line| line.as_bytes().split(|&b| b == b',').any(admits))
}

/// Parses an HTTP-date field (`If-Modified-Since`, `If-Unmodified-Since`, `Last-Modified`).
///
/// Accepts the three formats of RFC 9110 §5.6.7 (IMF-fixdate, RFC 850, asctime). Returns
/// `None`, meaning "ignore the field", when it is absent, sent on more than one line, not
/// valid UTF-8, or not a valid date (including a list of dates and out-of-range years).
///
/// ```
/// # use http::{HeaderMap, HeaderValue};
/// # use tower_conditional::precondition::parse_http_date;
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
    parse_date_bytes(value.as_bytes().trim_ascii(), SystemTime::now())
}

/// Parses one HTTP-date (RFC 9110 §5.6.7) in any of its three formats, for any four-digit
/// year — 0001 and 1969 included, which `httpdate` refuses. `now` places the two-digit
/// years of the RFC 850 format: one more than 50 years ahead is read as the most recent
/// past year with the same last two digits.
pub(crate) fn parse_date_bytes(b: &[u8], now: SystemTime) -> Option<SystemTime> {
    // The longest valid form (RFC 850 with "Wednesday") is 33 bytes.
    if b.len() > 40 {
        return None;
    }
    let two_digit_year = b.get(3) != Some(&b',') && b.contains(&b',');
    let (year, month, day, time) = if b.get(3) == Some(&b',') {
        imf_fixdate(b)?
    } else if two_digit_year {
        let (yy, month, day, time) = rfc850_date(b)?;
        (century_of(now) + yy, month, day, time)
    } else {
        asctime_date(b)?
    };
    if time[2] != b':' || time[5] != b':' {
        return None;
    }
    let (h, m, s) = (
        digits(&time[..2])?,
        digits(&time[3..5])?,
        digits(&time[6..8])?,
    );
    // 23:59:60 is a leap second, a valid time-of-day (RFC 9110 §5.6.7).
    if h > 23 || m > 59 || s > 60 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let at = |year| days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    let mut secs = at(year);
    if two_digit_year {
        // The year with these two digits nearest now, no more than 50 years ahead: more than
        // that ahead is the most recent past such year (RFC 9110 §5.6.7).
        let year = if secs > seconds_of(now) + FIFTY_YEARS {
            year - 100
        } else if secs <= seconds_of(now) + FIFTY_YEARS - 2 * FIFTY_YEARS {
            year + 100
        } else {
            year
        };
        if day > days_in_month(year, month) {
            return None;
        }
        secs = at(year);
    }
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// (year, month, day, the `hh:mm:ss` bytes) of a date, not yet range-checked.
type DateParts<'a> = (i64, i64, i64, &'a [u8]);

/// The parts of an IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
fn imf_fixdate(b: &[u8]) -> Option<DateParts<'_>> {
    if b.len() != 29 || !is_day_name(&b[..3]) || &b[4..5] != b" " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    Some((
        digits(&b[12..16])?,
        month(&b[8..11])?,
        digits(&b[5..7])?,
        &b[17..25],
    ))
}

/// (two-digit year, month, day, time) of an RFC 850 date: "Sunday, 06-Nov-94 08:49:37 GMT".
fn rfc850_date(b: &[u8]) -> Option<DateParts<'_>> {
    let comma = b.iter().position(|&c| c == b',')?;
    let rest = &b[comma..];
    if !is_long_day_name(&b[..comma]) || rest.len() != 24 || &rest[..2] != b", " {
        return None;
    }
    if rest[4] != b'-' || rest[8] != b'-' || rest[11] != b' ' || &rest[20..] != b" GMT" {
        return None;
    }
    Some((
        digits(&rest[9..11])?,
        month(&rest[5..8])?,
        digits(&rest[2..4])?,
        &rest[12..20],
    ))
}

/// (year, month, day, time) of an asctime date: "Sun Nov  6 08:49:37 1994".
fn asctime_date(b: &[u8]) -> Option<DateParts<'_>> {
    if b.len() != 24 || !is_day_name(&b[..3]) || b[3] != b' ' || b[7] != b' ' {
        return None;
    }
    if b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    let day = match b[8] {
        b' ' => digits(&b[9..10])?,
        _ => digits(&b[8..10])?,
    };
    Some((digits(&b[20..24])?, month(&b[4..7])?, day, &b[11..19]))
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn is_day_name(b: &[u8]) -> bool {
    matches!(
        b,
        b"Mon" | b"Tue" | b"Wed" | b"Thu" | b"Fri" | b"Sat" | b"Sun"
    )
}

fn is_long_day_name(b: &[u8]) -> bool {
    matches!(
        b,
        b"Monday" | b"Tuesday" | b"Wednesday" | b"Thursday" | b"Friday" | b"Saturday" | b"Sunday"
    )
}

fn month(b: &[u8]) -> Option<i64> {
    const NAMES: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    NAMES.iter().position(|n| *n == b).map(|i| i as i64 + 1)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before it).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Fifty Gregorian years: 50 × 365.2425 days.
const FIFTY_YEARS: i64 = 1_577_847_600;

fn seconds_of(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The first year of `now`'s century, where a two-digit year is placed first (RFC 9110
/// §5.6.7 then moves it back a century when that is more than 50 years ahead).
fn century_of(now: SystemTime) -> i64 {
    // Good enough for a year: 365.2425 days on average.
    let this_year = 1970 + seconds_of(now).div_euclid(31_556_952);
    this_year - this_year.rem_euclid(100)
}

/// Formats `time` as an IMF-fixdate header value; `None` outside the years an HTTP-date can
/// express (1970 to 9999), instead of the panic `httpdate` would raise.
///
/// ```
/// # use std::time::{Duration, UNIX_EPOCH};
/// # use tower_conditional::precondition::http_date;
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
#[non_exhaustive]
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

    fn date(s: &str) -> Option<SystemTime> {
        // 2026-11-29, so two-digit years up to 76 are this century.
        let now = UNIX_EPOCH + Duration::from_secs(1_795_900_000);
        parse_date_bytes(s.as_bytes(), now)
    }

    fn secs(t: SystemTime) -> i64 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// The block scan stops where a byte-by-byte reading of the grammar would, wherever the
    /// first non-`etagc` byte falls (inside a block, at its edge, in the tail), for every
    /// byte value.
    #[test]
    fn etagc_runs_end_at_the_first_byte_outside_the_grammar() {
        let grammar = |b: u8| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80;
        for b in 0..=255u8 {
            assert_eq!(crate::etag::is_etagc(b), grammar(b), "byte {b:#04x}");
        }
        for len in [0, 1, 15, 16, 17, 31, 32, 43, 50] {
            let run: Vec<u8> = (0..len).map(|i| b"aZ9-_!\x80\xff~#"[i % 10]).collect();
            assert_eq!(etagc_run(&run), len);
            for stop in 0..len {
                for bad in [b'"', b' ', 0x7f, 0x00, b'\t'] {
                    let mut b = run.clone();
                    b[stop] = bad;
                    assert_eq!(etagc_run(&b), stop, "len {len}, {bad:#04x} at {stop}");
                }
            }
        }
    }

    #[test]
    fn the_three_formats_agree() {
        // RFC 9110 §5.6.7's own example.
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(date(s).map(secs), Some(784_111_777), "{s}");
        }
    }

    #[test]
    fn any_four_digit_year_is_a_date() {
        // §5.6.7 makes these valid HTTP-dates; httpdate refuses years before 1970.
        assert_eq!(date("Wed, 31 Dec 1969 23:59:59 GMT").map(secs), Some(-1));
        assert_eq!(
            date("Mon, 01 Jan 0001 00:00:00 GMT").map(secs),
            Some(-62_135_596_800)
        );
        assert_eq!(
            date("Fri, 31 Dec 9999 23:59:59 GMT").map(secs),
            Some(253_402_300_799)
        );
        assert_eq!(
            date("Thu, 29 Feb 2024 00:00:00 GMT").map(secs),
            Some(1_709_164_800)
        );
    }

    #[test]
    fn rfc850_years_follow_the_fifty_year_rule() {
        // As of 2026: 76 is 2076 (50 years ahead at most), 77 is 1977, 94 is 1994.
        let year = |s: &str| date(s).map(|t| 1970 + secs(t).div_euclid(31_556_952));
        assert_eq!(year("Monday, 01-Jun-76 00:00:00 GMT"), Some(2076));
        assert_eq!(year("Monday, 01-Jun-77 00:00:00 GMT"), Some(1977));
        assert_eq!(year("Monday, 01-Jun-26 00:00:00 GMT"), Some(2026));
        assert_eq!(year("Monday, 01-Jun-70 00:00:00 GMT"), Some(2070));
        // The rule compares instants, not years: 31 Dec 2076 is more than 50 years after
        // 29 Nov 2026.
        assert_eq!(
            date("Thursday, 31-Dec-76 23:59:59 GMT").map(secs),
            Some(220_924_799),
            "1976-12-31T23:59:59Z"
        );
    }

    #[test]
    fn rfc850_years_late_in_a_century_can_be_ahead() {
        // As of 2090, "05" is 2105 (15 years ahead), not 2005 (85 years back).
        let now = UNIX_EPOCH + Duration::from_secs(3_786_912_000); // 2090-01-01
        let t = parse_date_bytes(b"Monday, 01-Jun-05 00:00:00 GMT", now).map(secs);
        assert_eq!(t, Some(4_273_257_600), "2105-06-01T00:00:00Z");
    }

    #[test]
    fn a_leap_second_is_a_valid_time() {
        // RFC 9110 §5.6.7: time-of-day 00:00:00 - 23:59:60.
        assert_eq!(
            date("Sat, 31 Dec 2016 23:59:60 GMT").map(secs),
            Some(1_483_228_800)
        );
        assert_eq!(date("Sat, 31 Dec 2016 23:59:61 GMT"), None);
    }

    #[test]
    fn invalid_dates_are_none() {
        for s in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sun, 00 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(date(s), None, "{s:?}");
        }
    }

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
        assert_eq!(list(&[b""]), Ok(Some(TagList::Tags(Tags::default()))));
        assert_eq!(list(&[b" , , "]), Ok(Some(TagList::Tags(Tags::default()))));
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

    #[test]
    fn byte_range_reads_one_range_and_leaves_the_rest_to_the_whole() {
        let range = |v: &str, len| byte_range(v.as_bytes(), len);
        assert_eq!(range("bytes=0-4", 10), Some((0, 4)));
        assert_eq!(range("bytes=5-", 10), Some((5, 9)));
        assert_eq!(range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(
            range("BYTES=2-2", 10),
            Some((2, 2)),
            "the unit is case-insensitive"
        );
        assert_eq!(
            range("bytes=8-99", 10),
            Some((8, 9)),
            "a last beyond the end"
        );
        assert_eq!(
            range("bytes=-99", 10),
            Some((0, 9)),
            "a suffix beyond the start"
        );
        assert_eq!(range("bytes=3-99999999999999999999999", 10), Some((3, 9)));
        assert_eq!(
            range("bytes= 1-2 ,", 10),
            Some((1, 2)),
            "list whitespace, empty elements"
        );
        for whole in [
            "bytes=0-1,3-4",               // several ranges
            "bytes=10-",                   // first beyond the end
            "bytes=99999999999999999999-", // first too large for anything
            "bytes=-0",                    // an empty suffix
            "bytes=4-3",                   // last before first
            "bytes=a-b",
            "bytes=1",
            "bytes=",
            "bytes=--1",
            "bytes=+1-2",
            "items=0-4",
            "bytes 0-4",
        ] {
            assert_eq!(range(whole, 10), None, "{whole}");
        }
        assert_eq!(range("bytes=0-", 0), None, "no range of nothing");
        assert_eq!(range("bytes=-5", 0), None);
    }

    #[test]
    fn admits_coding_reads_weights() {
        let admits = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append("accept-encoding", HeaderValue::from_str(v).unwrap());
            }
            admits_coding(headers.get_all("accept-encoding"))
        };
        assert!(!admits(&[]), "no field: identity");
        for yes in [
            &["gzip"][..],
            &["gzip, deflate, br"],
            &["identity", "br"],
            &["*"],
            &["identity;q=1, *;q=0.001"],
            &["gzip;q=1.0"],
            &["GZIP ; Q = 0.5"],
            &["gzip;q=abc"], // a weight that cannot be read is not taken as zero
        ] {
            assert!(admits(yes), "{yes:?}");
        }
        for no in [
            &["identity"][..],
            &["identity;q=1, *;q=0"], // browsers' media requests
            &["gzip;q=0", "br;q=0.000"],
            &["gzip;q=0."],
            &[""],
            &[" , "],
        ] {
            assert!(!admits(no), "{no:?}");
        }
    }
}
