//! The RFC 9110 §13.2.2 evaluation, with no I/O: request conditions and the current
//! validators in, a [`Decision`] out.
//!
//! ```
//! use http::{HeaderMap, HeaderValue, Method};
//! use tower_conditional::{EntityTag, Validators};
//! use tower_conditional::precondition::{evaluate, Conditions, Decision, Failed, Options};
//!
//! let current = Validators::new().with_etag(EntityTag::strong("v2").unwrap());
//! let mut headers = HeaderMap::new();
//! headers.insert("if-match", HeaderValue::from_static("\"v1\""));
//! let conditions = Conditions::from_headers(&headers);
//!
//! let decision = evaluate(&Method::PUT, &conditions, Some(&current), Options::default());
//! assert_eq!(decision, Decision::PreconditionFailed(Failed::IfMatch));
//! ```

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue, Method};

use crate::etag::EntityTag;
#[doc(inline)]
pub use crate::header::{
    http_date, parse_http_date, to_http_seconds, IfRange, MalformedList, TagList, Tags,
};
use crate::validators::Validators;

/// A list field as received: absent, parsed, or malformed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ListField {
    /// The field was not sent.
    #[default]
    Absent,
    /// The field parsed as `*` or a list of tags.
    List(TagList),
    /// The field was sent but is not `*` or a list of entity tags.
    Malformed,
}

impl ListField {
    fn parse(lines: http::header::GetAll<'_, HeaderValue>) -> Self {
        match TagList::parse(lines) {
            Ok(None) => ListField::Absent,
            Ok(Some(list)) => ListField::List(list),
            Err(_) => ListField::Malformed,
        }
    }

    /// Whether the field was sent at all (well-formed or not).
    pub fn is_present(&self) -> bool {
        !matches!(self, ListField::Absent)
    }
}

/// Which of `CONDITION_FIELDS` a request has. One pass over the names (compared, not
/// hashed): most requests carry none, a revalidation one; only those are looked up and parsed.
fn sent_fields(headers: &HeaderMap) -> [bool; 6] {
    let mut sent = [false; 6];
    for name in headers.keys() {
        if let Some(i) = CONDITION_FIELDS.iter().position(|field| field == name) {
            sent[i] = true;
        }
    }
    sent
}

/// A request without conditional fields or `Range`.
static NONE: Conditions = Conditions {
    if_match: ListField::Absent,
    if_none_match: ListField::Absent,
    if_modified_since: None,
    if_unmodified_since: None,
    if_range: None,
    has_range: false,
    overridden_date: false,
};

/// A request's conditions as the layer carries them through its response future: boxed when
/// the request sent a conditional field or `Range`, nothing at all when it sent none (most
/// requests) — the future is moved by every service and executor around the layer, and the
/// parsed fields are the largest part of it.
#[derive(Debug, Default)]
pub(crate) struct Carried(Option<Box<Kept>>);

/// What [`Carried`] keeps in its box.
#[derive(Debug)]
struct Kept {
    sent: Sent,
    /// The `Range` field, when the layer answers it instead of the service (see
    /// [`Carried::take_range`]). Here, not in [`Sent`], which is moved while a lookup decides.
    range: Option<HeaderValue>,
}

/// A request's conditions and its `If-None-Match` line, as parsed once: in the exchange's
/// box, or, while a version lookup or the internal GET decides, in the pending request's
/// (a request answered 304 or 412 there allocates no box of its own).
#[derive(Debug)]
pub(crate) struct Sent {
    conditions: Conditions,
    /// The `If-None-Match` field, when it came as one line: a computed tag equal to it is
    /// sent back with these bytes (a 304 allocates no header value for its `ETag`).
    if_none_match: Option<HeaderValue>,
}

impl Sent {
    /// Nothing parsed yet.
    fn empty() -> Sent {
        Sent {
            conditions: Conditions::default(),
            if_none_match: None,
        }
    }

    /// Parses the fields `sent` names into `self` (fresh), wherever it is (on the stack, in
    /// a box).
    fn fill(&mut self, headers: &HeaderMap, sent: [bool; 6]) {
        self.if_none_match = self.conditions.fill(headers, sent, true);
    }

    /// Removes from `headers` the date fields that RFC 9110 tells every recipient to ignore
    /// beside a tag list: `If-Unmodified-Since` with `If-Match` (§13.1.4), `If-Modified-Since`
    /// with `If-None-Match` (§13.1.3). The layer evaluates the request so; a service behind
    /// it that checks the date as well (tower-http's `ServeDir` answers `If-Modified-Since`
    /// and ignores `If-None-Match`) would otherwise answer 304 for content that changed
    /// within its date, or 412 where `If-Match` holds.
    pub(crate) fn forget_overridden(sent: Option<&Sent>, headers: &mut HeaderMap) {
        let Some(sent) = sent.filter(|sent| sent.conditions.overridden_date) else {
            return;
        };
        if sent.conditions.if_match.is_present() {
            headers.remove(header::IF_UNMODIFIED_SINCE);
        }
        if sent.conditions.if_none_match.is_present() {
            headers.remove(header::IF_MODIFIED_SINCE);
        }
    }

    /// Parses the request's conditional fields, if it has any.
    pub(crate) fn parse(headers: &HeaderMap) -> Option<Sent> {
        let sent = sent_fields(headers);
        if sent == [false; 6] {
            return None;
        }
        let mut parsed = Sent::empty();
        parsed.fill(headers, sent);
        Some(parsed)
    }

    /// The conditions of `sent`, the empty ones for a request that sent none.
    pub(crate) fn conditions(sent: &Option<Sent>) -> &Conditions {
        sent.as_ref().map_or(&NONE, |sent| &sent.conditions)
    }
}

impl Carried {
    /// [`Sent::parse`], parsed in place in the box.
    #[inline(always)]
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let sent = sent_fields(headers);
        if sent == [false; 6] {
            return Carried(None);
        }
        let mut held = Box::new(Kept {
            sent: Sent::empty(),
            range: None,
        });
        held.sent.fill(headers, sent);
        Carried(Some(held))
    }

    /// Carries what was parsed (boxed when there is anything).
    pub(crate) fn boxed(sent: Option<Sent>) -> Self {
        Carried(sent.map(|sent| Box::new(Kept { sent, range: None })))
    }

    /// [`boxed`](Self::boxed), without `Range` and `If-Range`: from here on they are the
    /// service's.
    pub(crate) fn handed_over(sent: Option<Sent>) -> Self {
        let mut carried = Carried::boxed(sent);
        carried.drop_range();
        carried
    }

    /// The request's `If-None-Match`, when it is one field line.
    pub(crate) fn if_none_match_line(&self) -> Option<&HeaderValue> {
        self.0.as_ref()?.sent.if_none_match.as_ref()
    }

    /// The parsed fields, when the request sent any.
    pub(crate) fn sent(&self) -> Option<&Sent> {
        Some(&self.0.as_ref()?.sent)
    }

    /// A GET's `Range` with an `If-Range`, where nothing evaluated it before the service is
    /// called: the layer keeps both and removes them from the request, so the whole
    /// representation comes back. The service cannot evaluate a tag the layer computed from
    /// its body, and one that does not check `If-Range` at all (tower-http's `ServeDir`)
    /// would send a part of another version under any validator, a date included (which is
    /// weak unless the layer is told otherwise, RFC 9110 §8.8.2.2). Returns whether it took
    /// them. When `may_cut` says so for the request's fields, the range is kept, for the
    /// layer to cut from the body it hashed if the validator matches
    /// ([`taken_range`](Self::taken_range)); otherwise the full 200 answers.
    pub(crate) fn take_range(
        &mut self,
        headers: &mut HeaderMap,
        may_cut: impl FnOnce(&HeaderMap) -> bool,
    ) -> bool {
        let Some(kept) = &mut self.0 else {
            return false;
        };
        let conditions = &kept.sent.conditions;
        if !(conditions.has_range && conditions.if_range.is_some()) {
            return false;
        }
        // One `Range` line; several are malformed, and the full 200 answers them.
        let mut lines = headers.get_all(header::RANGE).iter();
        kept.range = match (lines.next(), lines.next()) {
            (Some(one), None) if may_cut(headers) => Some(one.clone()),
            _ => None,
        };
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
        true
    }

    /// The `Range` the layer took from the request ([`take_range`](Self::take_range)).
    pub(crate) fn taken_range(&self) -> Option<&HeaderValue> {
        self.0.as_ref()?.range.as_ref()
    }

    /// Forgets `Range` and `If-Range`; see [`Conditions::drop_range`].
    pub(crate) fn drop_range(&mut self) {
        if let Some(kept) = &mut self.0 {
            kept.sent.conditions.drop_range();
        }
    }
}

impl std::ops::Deref for Carried {
    type Target = Conditions;

    fn deref(&self) -> &Conditions {
        self.0.as_ref().map_or(&NONE, |kept| &kept.sent.conditions)
    }
}

/// The conditional fields of one request, parsed once.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Conditions {
    /// `If-Match`.
    pub if_match: ListField,
    /// `If-None-Match`.
    pub if_none_match: ListField,
    /// `If-Modified-Since`, when it is a single valid HTTP-date.
    pub if_modified_since: Option<SystemTime>,
    /// `If-Unmodified-Since`, when it is a single valid HTTP-date.
    pub if_unmodified_since: Option<SystemTime>,
    /// `If-Range`.
    pub if_range: Option<IfRange>,
    /// Whether the request has a `Range` field.
    pub has_range: bool,
    /// Whether a date field came beside the tag list that overrides it (see
    /// `Sent::forget_overridden`). Where the struct has room: the parsed fields are moved
    /// while a lookup decides, and a byte more would cost every such move a call. Not part
    /// of what the conditions are: equality and `Debug` leave it out.
    overridden_date: bool,
}

impl PartialEq for Conditions {
    fn eq(&self, other: &Self) -> bool {
        self.if_match == other.if_match
            && self.if_none_match == other.if_none_match
            && self.if_modified_since == other.if_modified_since
            && self.if_unmodified_since == other.if_unmodified_since
            && self.if_range == other.if_range
            && self.has_range == other.has_range
    }
}

impl Eq for Conditions {}

impl std::fmt::Debug for Conditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conditions")
            .field("if_match", &self.if_match)
            .field("if_none_match", &self.if_none_match)
            .field("if_modified_since", &self.if_modified_since)
            .field("if_unmodified_since", &self.if_unmodified_since)
            .field("if_range", &self.if_range)
            .field("has_range", &self.has_range)
            .finish()
    }
}

impl Conditions {
    /// Parses the conditional fields of a request.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut conditions = Conditions::default();
        conditions.fill(headers, sent_fields(headers), false);
        conditions
    }

    /// Looks up and parses, into `self` (fresh), only the fields `sent` (in
    /// `CONDITION_FIELDS` order) names; returns the `If-None-Match` field line when there is
    /// exactly one and `keep_line` asks for it. In place: the parsed fields are ~200 bytes,
    /// and the layer keeps them in a box.
    fn fill(
        &mut self,
        headers: &HeaderMap,
        sent: [bool; 6],
        keep_line: bool,
    ) -> Option<HeaderValue> {
        let [if_match, if_none_match, if_modified_since, if_unmodified_since, if_range, range] =
            sent;
        let conditions = self;
        let mut line = None;
        if if_match {
            conditions.if_match = ListField::parse(headers.get_all(header::IF_MATCH));
        }
        if if_none_match {
            let lines = headers.get_all(header::IF_NONE_MATCH);
            if keep_line {
                let mut each = lines.iter();
                if let (Some(one), None) = (each.next(), each.next()) {
                    line = Some(one.clone());
                }
            }
            conditions.if_none_match = ListField::parse(lines);
        }
        if if_modified_since {
            conditions.if_modified_since =
                parse_http_date(headers.get_all(header::IF_MODIFIED_SINCE));
        }
        if if_unmodified_since {
            conditions.if_unmodified_since =
                parse_http_date(headers.get_all(header::IF_UNMODIFIED_SINCE));
        }
        if if_range {
            conditions.if_range = IfRange::parse(headers.get_all(header::IF_RANGE));
        }
        conditions.has_range = range;
        conditions.overridden_date =
            (if_match && if_unmodified_since) || (if_none_match && if_modified_since);
        line
    }

    /// Whether any field that §13.2.2 evaluates is present. Without one, the decision is
    /// always [`Decision::Proceed`].
    pub fn is_empty(&self) -> bool {
        !self.if_match.is_present()
            && !self.if_none_match.is_present()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
            && !(self.has_range && self.if_range.is_some())
    }

    /// Whether the request makes its write conditional on the current state: `If-Match`,
    /// `If-None-Match`, or a valid `If-Unmodified-Since` (what RFC 6585 §3 asks a client to
    /// send when preconditions are required).
    pub fn guards_write(&self) -> bool {
        self.if_match.is_present()
            || self.if_none_match.is_present()
            || self.if_unmodified_since.is_some()
    }

    /// Whether `If-Match` or `If-Unmodified-Since` was sent: conditions that can only be
    /// checked against the whole representation, never a part of it.
    pub(crate) fn checks_whole(&self) -> bool {
        self.if_match.is_present() || self.if_unmodified_since.is_some()
    }

    /// Whether, with `Range`, these conditions can only be evaluated on the whole
    /// representation: `If-Match` and `If-Unmodified-Since` (a part is not hashed), and
    /// `If-None-Match` and `If-Modified-Since`, which come before `Range` (RFC 9110 §13.2.2:
    /// a 304, never a 206, and made from the 200's head).
    pub(crate) fn needs_whole(&self) -> bool {
        self.checks_whole() || self.if_none_match.is_present() || self.if_modified_since.is_some()
    }

    /// Forgets `Range` and `If-Range`: from here on they are someone else's to honour.
    pub(crate) fn drop_range(&mut self) {
        self.has_range = false;
        self.if_range = None;
    }

    /// Whether these conditions give a write something to be checked against: `If-Match`,
    /// a non-empty `If-None-Match`, or an `If-Unmodified-Since` when the target has a
    /// modification date (`dated`). What [`require_preconditions`] accepts.
    ///
    /// [`require_preconditions`]: crate::ConditionalLayer::require_preconditions
    pub fn guards(&self, dated: bool) -> bool {
        let if_none_match = match &self.if_none_match {
            ListField::List(TagList::Tags(tags)) => !tags.is_empty(),
            other => other.is_present(),
        };
        self.if_match.is_present() || if_none_match || (dated && self.if_unmodified_since.is_some())
    }

    /// Whether the outcome depends on anything beyond the method, i.e. whether a current
    /// representation must be looked up to evaluate these conditions for `method`.
    pub fn needs_validators(&self, method: &Method) -> bool {
        match method_kind(method) {
            MethodKind::Exempt => false,
            MethodKind::Read => !self.is_empty(),
            MethodKind::Write => self.guards_write(),
        }
    }
}

/// The fields [`Conditions`] reads, in the order `from_headers` takes them (also the fields
/// an internal GET does not forward).
pub(crate) const CONDITION_FIELDS: [header::HeaderName; 6] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Knobs of the evaluation that RFC 9110 leaves to the server, or that deployments need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Compare `If-Match` weakly. RFC 9110 requires strong comparison; SCIM (RFC 7644
    /// §3.14) clients send weak tags in `If-Match`, and a server that issues only weak tags
    /// may choose to accept them.
    pub weak_if_match: bool,
    /// The time of the evaluation, for the strength of an `If-Range` date (with
    /// `strong_dates`): a modification time in the current second may still change within
    /// it. `None` skips that check; the layer passes the current time whenever an
    /// `If-Range` is to be evaluated.
    pub now: Option<SystemTime>,
    /// Whether the current `Last-Modified` is a strong validator: the server knows that the
    /// representation never changed twice within the second it names (RFC 9110 §8.8.2.2 —
    /// each new version's date a second or more after the last one's, say). RFC 9110
    /// §13.1.5 lets an `If-Range` date match only a strong validator, so without this
    /// (the default) an `If-Range` date never matches, `Range` is ignored and the whole
    /// representation is sent: never a part of one version spliced onto another. With it,
    /// a date matches when it equals `Last-Modified` and is at least a second before `now`.
    pub strong_dates: bool,
}

/// Which condition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failed {
    /// `If-Match` was false (or malformed).
    IfMatch,
    /// `If-Unmodified-Since` was false.
    IfUnmodifiedSince,
    /// `If-None-Match` was false on a method other than GET/HEAD (or malformed on one).
    IfNoneMatch,
}

impl Failed {
    /// The header field name of the failed condition.
    pub fn field_name(self) -> &'static str {
        match self {
            Failed::IfMatch => "If-Match",
            Failed::IfUnmodifiedSince => "If-Unmodified-Since",
            Failed::IfNoneMatch => "If-None-Match",
        }
    }
}

/// The outcome of evaluating a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Perform the method (with `Range`, if the request has one).
    Proceed,
    /// Perform the method but ignore `Range`: `If-Range` did not match (§13.2.2 step 5).
    IgnoreRange,
    /// Answer `304 Not Modified` (GET/HEAD only).
    NotModified,
    /// Answer `412 Precondition Failed`.
    PreconditionFailed(Failed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodKind {
    /// GET and HEAD.
    Read,
    /// OPTIONS, CONNECT, TRACE: never conditioned.
    Exempt,
    /// Every other method (PUT, POST, PATCH, DELETE, extensions).
    Write,
}

/// Extension methods registered as safe (RFC 9110 §9.2.1; the IANA method registry):
/// PROPFIND (RFC 4918), REPORT (RFC 3253), SEARCH (RFC 5323), QUERY. They change nothing, so
/// performing one whose conditions nothing can check loses no update.
pub(crate) fn is_safe_extension(method: &Method) -> bool {
    matches!(method.as_str(), "PROPFIND" | "REPORT" | "SEARCH" | "QUERY")
}

pub(crate) fn method_kind(method: &Method) -> MethodKind {
    // A match on the constants compares the standard methods' tags, without the
    // temporaries and calls of `==`.
    match *method {
        Method::GET | Method::HEAD => MethodKind::Read,
        Method::OPTIONS | Method::CONNECT | Method::TRACE => MethodKind::Exempt,
        _ => MethodKind::Write,
    }
}

/// Evaluates `conditions` for `method` against the current representation, in the order of
/// RFC 9110 §13.2.2. `current` is `None` when the target has no current representation.
///
/// Choices where the RFC leaves room, all documented in the crate docs:
///
/// * A malformed `If-Match` evaluates false (412): it cannot be known to match, and a
///   write must not go ahead on a guess.
/// * A malformed `If-None-Match` is ignored on GET/HEAD (a full response is always a
///   correct answer to a read) and evaluates false on other methods (412, as for `If-Match`).
/// * `If-Match` with tags on a target without a current representation evaluates false
///   (§13.1.1: no current entity tag can match).
///
/// The caller applies §13.2.1's outer rule: conditions are evaluated only where the response
/// without them would be 2xx or 412 (a 404 stays a 404).
pub fn evaluate(
    method: &Method,
    conditions: &Conditions,
    current: Option<&Validators>,
    options: Options,
) -> Decision {
    let kind = method_kind(method);
    if kind == MethodKind::Exempt {
        return Decision::Proceed;
    }
    let state = State {
        exists: current.is_some(),
        etag: current.and_then(|v| v.etag()),
        date: current.and_then(|v| v.last_modified()).map(to_http_seconds),
    };
    if_match_step(conditions, &state, options)
        .or_else(|| if_none_match_step(kind, conditions, &state))
        .or_else(|| if_range_step(method, conditions, &state, options))
        .unwrap_or(Decision::Proceed)
}

/// What the steps compare against: whether the target exists, its tag, its date (seconds).
struct State<'a> {
    exists: bool,
    etag: Option<&'a EntityTag>,
    date: Option<SystemTime>,
}

/// Step 1, If-Match; step 2, If-Unmodified-Since only without If-Match.
fn if_match_step(conditions: &Conditions, state: &State<'_>, options: Options) -> Option<Decision> {
    let failed = match &conditions.if_match {
        ListField::List(_) if !state.exists => true,
        ListField::List(TagList::Any) => false,
        ListField::List(tags) => !state.etag.is_some_and(|etag| {
            if options.weak_if_match {
                tags.matches_weak(etag)
            } else {
                tags.matches_strong(etag)
            }
        }),
        ListField::Malformed => true,
        ListField::Absent => {
            return match (conditions.if_unmodified_since, state.date) {
                (Some(since), Some(modified)) if modified > since => {
                    Some(Decision::PreconditionFailed(Failed::IfUnmodifiedSince))
                }
                _ => None,
            };
        }
    };
    failed.then_some(Decision::PreconditionFailed(Failed::IfMatch))
}

/// Step 3, If-None-Match; step 4, If-Modified-Since on GET/HEAD only without it.
fn if_none_match_step(
    kind: MethodKind,
    conditions: &Conditions,
    state: &State<'_>,
) -> Option<Decision> {
    let matched = match &conditions.if_none_match {
        ListField::List(_) if !state.exists => false,
        ListField::List(TagList::Any) => true,
        ListField::List(tags) => state.etag.is_some_and(|etag| tags.matches_weak(etag)),
        // Ignored on reads (a full response is always correct); false on writes.
        ListField::Malformed => {
            return (kind == MethodKind::Write)
                .then_some(Decision::PreconditionFailed(Failed::IfNoneMatch));
        }
        ListField::Absent => {
            return match (kind, conditions.if_modified_since, state.date) {
                (MethodKind::Read, Some(since), Some(modified)) if modified <= since => {
                    Some(Decision::NotModified)
                }
                _ => None,
            };
        }
    };
    match (matched, kind) {
        (false, _) => None,
        (true, MethodKind::Read) => Some(Decision::NotModified),
        (true, _) => Some(Decision::PreconditionFailed(Failed::IfNoneMatch)),
    }
}

/// Step 5, If-Range: GET with Range only.
fn if_range_step(
    method: &Method,
    conditions: &Conditions,
    state: &State<'_>,
    options: Options,
) -> Option<Decision> {
    if method != Method::GET || !conditions.has_range {
        return None;
    }
    let matched = match conditions.if_range.as_ref()? {
        IfRange::Tag(tag) => state.etag.is_some_and(|etag| tag.strong_eq(etag)),
        IfRange::Date(date) => {
            options.strong_dates
                && state.date == Some(*date)
                && options
                    .now
                    .is_none_or(|now| *date + Duration::from_secs(1) <= now)
        }
        IfRange::Invalid => false,
    };
    (!matched).then_some(Decision::IgnoreRange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    const T0: &str = "Sun, 06 Nov 1994 08:49:37 GMT"; // 784111777

    /// The flag for overridden dates is bookkeeping: conditions that differ only in it are
    /// the same conditions.
    #[test]
    fn equality_is_over_the_fields_alone() {
        let mut headers = HeaderMap::new();
        headers.insert("if-match", HeaderValue::from_static("\"a\""));
        let plain = Conditions::from_headers(&headers);
        headers.insert("if-unmodified-since", HeaderValue::from_static(T0));
        let mut dated = Conditions::from_headers(&headers);
        assert!(dated.overridden_date && !plain.overridden_date);
        assert_ne!(dated, plain);
        dated.if_unmodified_since = None;
        assert_eq!(dated, plain);
        assert_eq!(format!("{dated:?}"), format!("{plain:?}"));
    }
    const T_BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const T_AFTER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784111777)
    }

    fn tag(s: &str) -> EntityTag {
        s.parse().unwrap()
    }

    /// The resource: strong "a", modified at T0 (plus sub-second noise that must not count).
    fn current() -> Validators {
        Validators::new()
            .with_etag(tag("\"a\""))
            .with_last_modified(t0() + Duration::from_millis(250))
    }

    fn weak_current() -> Validators {
        Validators::new().with_etag(tag("W/\"a\""))
    }

    fn run(method: Method, headers: &[(&str, &str)], current: Option<&Validators>) -> Decision {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        evaluate(
            &method,
            &Conditions::from_headers(&h),
            current,
            Options::default(),
        )
    }

    use Decision::*;
    use Failed::*;

    /// (rule checked, method, request fields, current validators, expected decision)
    type Row<'a> = (
        &'a str,
        Method,
        Vec<(&'a str, &'a str)>,
        Option<&'a Validators>,
        Decision,
    );

    #[test]
    fn table() {
        let cur = current();
        let weak = weak_current();
        let some = Some(&cur);
        #[rustfmt::skip]
        let rows: Vec<Row<'_>> = vec![
            ("§13.2.2: no conditions proceed", Method::GET, vec![], some, Proceed),
            ("§13.1.1: If-Match with the current strong tag is true", Method::PUT, vec![("if-match", "\"a\"")], some, Proceed),
            ("§13.1.1: If-Match true if any listed tag matches", Method::PUT, vec![("if-match", "\"x\", \"a\"")], some, Proceed),
            ("§13.1.1: If-Match false when no tag matches -> 412", Method::PUT, vec![("if-match", "\"b\"")], some, PreconditionFailed(IfMatch)),
            ("§13.1.1: If-Match uses strong comparison: a weak tag never matches", Method::PUT, vec![("if-match", "W/\"a\"")], some, PreconditionFailed(IfMatch)),
            ("§13.1.1: strong comparison fails against a weak current tag", Method::PUT, vec![("if-match", "\"a\"")], Some(&weak), PreconditionFailed(IfMatch)),
            ("§13.1.1: If-Match * true when a current representation exists", Method::PUT, vec![("if-match", "*")], some, Proceed),
            ("§13.1.1: If-Match * false when none exists", Method::PUT, vec![("if-match", "*")], None, PreconditionFailed(IfMatch)),
            ("§13.1.1: If-Match tags false when none exists", Method::DELETE, vec![("if-match", "\"a\"")], None, PreconditionFailed(IfMatch)),
            ("§13.2.2 step 1: If-Match false on GET is 412 too", Method::GET, vec![("if-match", "\"b\"")], some, PreconditionFailed(IfMatch)),
            ("design: malformed If-Match fails closed", Method::PUT, vec![("if-match", "a")], some, PreconditionFailed(IfMatch)),
            ("design: malformed If-Match fails closed on GET", Method::GET, vec![("if-match", "a")], some, PreconditionFailed(IfMatch)),
            ("§13.1.4: If-Unmodified-Since true when not modified since", Method::PUT, vec![("if-unmodified-since", T0)], some, Proceed),
            ("§13.1.4: If-Unmodified-Since true when modified before", Method::PUT, vec![("if-unmodified-since", T_AFTER)], some, Proceed),
            ("§13.1.4: If-Unmodified-Since false when modified after -> 412", Method::PUT, vec![("if-unmodified-since", T_BEFORE)], some, PreconditionFailed(IfUnmodifiedSince)),
            ("§13.2.2 step 2: If-Unmodified-Since only without If-Match", Method::PUT, vec![("if-match", "\"a\""), ("if-unmodified-since", T_BEFORE)], some, Proceed),
            ("§13.1.4: invalid If-Unmodified-Since is ignored", Method::PUT, vec![("if-unmodified-since", "not a date")], some, Proceed),
            ("§13.1.4: If-Unmodified-Since ignored without a modification date", Method::PUT, vec![("if-unmodified-since", T_BEFORE)], Some(&weak), Proceed),
            ("§13.1.4: If-Unmodified-Since ignored without a representation", Method::PUT, vec![("if-unmodified-since", T_BEFORE)], None, Proceed),
            ("§13.1.2: If-None-Match weak match on GET -> 304", Method::GET, vec![("if-none-match", "W/\"a\"")], some, NotModified),
            ("§13.1.2: If-None-Match match on HEAD -> 304", Method::HEAD, vec![("if-none-match", "\"a\"")], some, NotModified),
            ("§13.1.2: If-None-Match matches a weak current tag weakly", Method::GET, vec![("if-none-match", "\"a\"")], Some(&weak), NotModified),
            ("§13.1.2: If-None-Match without a match proceeds", Method::GET, vec![("if-none-match", "\"b\"")], some, Proceed),
            ("§13.1.2: If-None-Match match on an unsafe method -> 412", Method::PUT, vec![("if-none-match", "\"a\"")], some, PreconditionFailed(IfNoneMatch)),
            ("§13.1.2: If-None-Match * on an existing resource, unsafe -> 412", Method::PUT, vec![("if-none-match", "*")], some, PreconditionFailed(IfNoneMatch)),
            ("§13.1.2: If-None-Match * without a representation: create proceeds", Method::PUT, vec![("if-none-match", "*")], None, Proceed),
            ("§13.1.2: If-None-Match * on GET of an existing resource -> 304", Method::GET, vec![("if-none-match", "*")], some, NotModified),
            ("design: malformed If-None-Match ignored on GET", Method::GET, vec![("if-none-match", "a")], some, Proceed),
            ("design: malformed If-None-Match fails closed on PUT", Method::PUT, vec![("if-none-match", "a")], some, PreconditionFailed(IfNoneMatch)),
            ("§13.1.3: If-Modified-Since not modified -> 304", Method::GET, vec![("if-modified-since", T0)], some, NotModified),
            ("§13.1.3: If-Modified-Since later date -> 304", Method::GET, vec![("if-modified-since", T_AFTER)], some, NotModified),
            ("§13.1.3: If-Modified-Since modified since -> proceed", Method::GET, vec![("if-modified-since", T_BEFORE)], some, Proceed),
            ("§13.1.3: If-Modified-Since ignored for methods other than GET/HEAD", Method::PUT, vec![("if-modified-since", T0)], some, Proceed),
            ("§13.1.3: invalid If-Modified-Since is ignored", Method::GET, vec![("if-modified-since", "garbage")], some, Proceed),
            ("§13.1.3: If-Modified-Since ignored without a modification date", Method::GET, vec![("if-modified-since", T_AFTER)], Some(&weak), Proceed),
            ("§13.2.2 step 4: If-Modified-Since only without If-None-Match", Method::GET, vec![("if-none-match", "\"b\""), ("if-modified-since", T0)], some, Proceed),
            ("§13.2.2: If-Match is evaluated before If-None-Match", Method::GET, vec![("if-match", "\"b\""), ("if-none-match", "\"a\"")], some, PreconditionFailed(IfMatch)),
            ("§13.2.2: a passing If-Match then If-None-Match match on GET -> 304", Method::GET, vec![("if-match", "\"a\""), ("if-none-match", "\"a\"")], some, NotModified),
            ("§13.1.5: If-Range strong match keeps Range", Method::GET, vec![("range", "bytes=0-1"), ("if-range", "\"a\"")], some, Proceed),
            ("§13.1.5: If-Range mismatch ignores Range", Method::GET, vec![("range", "bytes=0-1"), ("if-range", "\"b\"")], some, IgnoreRange),
            ("§13.1.5: If-Range weak tag never matches", Method::GET, vec![("range", "bytes=0-1"), ("if-range", "W/\"a\"")], some, IgnoreRange),
            ("§13.1.5, §8.8.2.2: an If-Range date is weak unless dates are declared strong", Method::GET, vec![("range", "bytes=0-1"), ("if-range", T0)], some, IgnoreRange),
            ("§13.1.5: If-Range later date is not an exact match", Method::GET, vec![("range", "bytes=0-1"), ("if-range", T_AFTER)], some, IgnoreRange),
            ("§13.1.5: If-Range unparsable ignores Range", Method::GET, vec![("range", "bytes=0-1"), ("if-range", "junk")], some, IgnoreRange),
            ("§13.1.5: If-Range without Range is ignored", Method::GET, vec![("if-range", "\"b\"")], some, Proceed),
            ("§13.1.5: If-Range only applies to GET", Method::HEAD, vec![("range", "bytes=0-1"), ("if-range", "\"b\"")], some, Proceed),
            ("§13.2.2 step 3 before 5: If-None-Match 304 wins over If-Range", Method::GET, vec![("if-none-match", "\"a\""), ("range", "bytes=0-1"), ("if-range", "\"b\"")], some, NotModified),
            ("§13.2.1: OPTIONS is never conditioned", Method::OPTIONS, vec![("if-match", "\"b\"")], some, Proceed),
            ("§13.2.1: CONNECT is never conditioned", Method::CONNECT, vec![("if-match", "\"b\"")], some, Proceed),
            ("§13.2.1: TRACE is never conditioned", Method::TRACE, vec![("if-none-match", "*")], some, Proceed),
            ("§13.1.1: If-Match applies to POST", Method::POST, vec![("if-match", "\"b\"")], some, PreconditionFailed(IfMatch)),
            ("§13.1.1: If-Match applies to PATCH", Method::PATCH, vec![("if-match", "\"a\"")], some, Proceed),
            ("§13.1.1: empty If-Match list matches nothing", Method::PUT, vec![("if-match", "")], some, PreconditionFailed(IfMatch)),
            ("§13.1.2: empty If-None-Match list matches nothing", Method::PUT, vec![("if-none-match", ",")], some, Proceed),
        ];
        for (name, method, headers, current, expected) in rows {
            assert_eq!(run(method, &headers, current), expected, "{name}");
        }
    }

    #[test]
    fn an_if_range_date_matches_only_once_it_is_strong() {
        // §13.1.5 step 1 with §8.8.2.2: a Last-Modified is weak unless the server knows the
        // representation did not change twice within its second; and one less than a second
        // old may still change within it.
        let cur = current();
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(header::IF_RANGE, HeaderValue::from_static(T0));
        let c = Conditions::from_headers(&h);
        let later = Options {
            now: Some(t0() + Duration::from_secs(60)),
            ..Options::default()
        };
        assert_eq!(
            evaluate(&Method::GET, &c, Some(&cur), later),
            IgnoreRange,
            "dates are weak unless the server says otherwise"
        );
        let at = |now: SystemTime| Options {
            now: Some(now),
            strong_dates: true,
            ..Options::default()
        };
        assert_eq!(
            evaluate(
                &Method::GET,
                &c,
                Some(&cur),
                at(t0() + Duration::from_secs(1))
            ),
            Proceed
        );
        assert_eq!(
            evaluate(
                &Method::GET,
                &c,
                Some(&cur),
                at(t0() + Duration::from_millis(500))
            ),
            IgnoreRange
        );
    }

    #[test]
    fn weak_if_match_option() {
        let cur = weak_current();
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"a\""));
        let c = Conditions::from_headers(&h);
        assert_eq!(
            evaluate(&Method::PUT, &c, Some(&cur), Options::default()),
            PreconditionFailed(IfMatch)
        );
        let weak = Options {
            weak_if_match: true,
            ..Options::default()
        };
        assert_eq!(evaluate(&Method::PUT, &c, Some(&cur), weak), Proceed);
    }

    #[test]
    fn emptiness_and_write_guards() {
        let mut h = HeaderMap::new();
        assert!(Conditions::from_headers(&h).is_empty());
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"a\""));
        assert!(
            Conditions::from_headers(&h).is_empty(),
            "If-Range without Range"
        );
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        assert!(!Conditions::from_headers(&h).is_empty());
        assert!(!Conditions::from_headers(&h).guards_write());
        let mut h = HeaderMap::new();
        h.insert(header::IF_UNMODIFIED_SINCE, HeaderValue::from_static("bad"));
        assert!(!Conditions::from_headers(&h).guards_write(), "invalid date");
        h.insert(header::IF_UNMODIFIED_SINCE, HeaderValue::from_static(T0));
        assert!(Conditions::from_headers(&h).guards_write());
        assert!(Conditions::from_headers(&h).needs_validators(&Method::PATCH));
        assert!(!Conditions::from_headers(&h).needs_validators(&Method::OPTIONS));
    }
}
