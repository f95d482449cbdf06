//! A property-based oracle: a deliberately simple model of RFC 9110 §13.2.2, written here
//! from the RFC text and sharing no code with `src/precondition.rs`, compared with the real
//! header parsing and decision over generated requests and resource states.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use tower_conditional::precondition::{evaluate, Conditions, Decision, Options};
use tower_conditional::Validators;
use tower_conditional::{ETagHasher, EntityTag};

// ---- the model -------------------------------------------------------------------------

/// A tag as the model sees it: weakness and opaque text.
#[derive(Debug, Clone, PartialEq)]
struct Tag {
    weak: bool,
    opaque: String,
}

/// A list field as generated: what the model knows it means.
#[derive(Debug, Clone)]
enum ListField {
    Absent,
    Star,
    Tags(Vec<Tag>),
    Malformed(String),
}

#[derive(Debug, Clone)]
enum DateField {
    Absent,
    Valid(u64), // seconds since the epoch
    Invalid(String),
}

#[derive(Debug, Clone)]
enum IfRangeField {
    Absent,
    Tag(Tag),
    Date(u64),
    Invalid(String),
}

#[derive(Debug, Clone)]
struct Resource {
    etag: Option<Tag>,
    modified: Option<u64>,
}

#[derive(Debug, Clone)]
struct Case {
    method: Method,
    if_match: ListField,
    if_none_match: ListField,
    if_modified_since: DateField,
    if_unmodified_since: DateField,
    if_range: IfRangeField,
    range: bool,
    /// Whether the server declares its `Last-Modified` dates strong (`Options::strong_dates`).
    strong_dates: bool,
    /// How many field lines a tag list is split over.
    lines: usize,
    date_format: usize,
    current: Option<Resource>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Go,
    GoWithoutRange,
    NotModified,
    Failed(&'static str),
}

/// RFC 9110 §13.2.2, step by step, in the words of §13.1.
fn model(c: &Case) -> Outcome {
    let m = &c.method;
    if *m == Method::OPTIONS || *m == Method::CONNECT || *m == Method::TRACE {
        return Outcome::Go; // §13.2.1: not conditioned
    }
    let read = *m == Method::GET || *m == Method::HEAD;
    let exists = c.current.is_some();
    let cur_tag = c.current.as_ref().and_then(|r| r.etag.clone());
    let cur_date = c.current.as_ref().and_then(|r| r.modified);
    let strong_match = |t: &Tag| {
        !t.weak
            && cur_tag
                .as_ref()
                .is_some_and(|c| !c.weak && c.opaque == t.opaque)
    };
    let weak_match = |t: &Tag| cur_tag.as_ref().is_some_and(|c| c.opaque == t.opaque);

    // 1. If-Match
    match &c.if_match {
        ListField::Malformed(_) => return Outcome::Failed("If-Match"),
        ListField::Star if !exists => return Outcome::Failed("If-Match"),
        ListField::Tags(tags) if !tags.iter().any(strong_match) => {
            return Outcome::Failed("If-Match")
        }
        ListField::Absent => {
            // 2. If-Unmodified-Since, only without If-Match; ignored without a date.
            if let (DateField::Valid(since), Some(modified)) = (&c.if_unmodified_since, cur_date) {
                if modified > *since {
                    return Outcome::Failed("If-Unmodified-Since");
                }
            }
        }
        _ => {}
    }
    // 3. If-None-Match
    let refuse = if read {
        Outcome::NotModified
    } else {
        Outcome::Failed("If-None-Match")
    };
    match &c.if_none_match {
        ListField::Malformed(_) if !read => return Outcome::Failed("If-None-Match"),
        ListField::Malformed(_) => {}
        ListField::Star if exists => return refuse,
        ListField::Tags(tags) if tags.iter().any(weak_match) => return refuse,
        ListField::Absent => {
            // 4. If-Modified-Since: GET/HEAD only, only without If-None-Match.
            if let (true, DateField::Valid(since), Some(modified)) =
                (read, &c.if_modified_since, cur_date)
            {
                if modified <= *since {
                    return Outcome::NotModified;
                }
            }
        }
        _ => {}
    }
    // 5. If-Range: GET with Range only.
    if *m == Method::GET && c.range {
        let holds = match &c.if_range {
            IfRangeField::Absent => true,
            IfRangeField::Tag(t) => strong_match(t),
            // §8.8.2.2: a date is a strong validator only where the server says so.
            IfRangeField::Date(d) => c.strong_dates && cur_date == Some(*d),
            IfRangeField::Invalid(_) => false,
        };
        if !holds {
            return Outcome::GoWithoutRange;
        }
    }
    Outcome::Go
}

// ---- rendering the case as header fields ------------------------------------------------

fn render_tag(t: &Tag) -> String {
    format!("{}\"{}\"", if t.weak { "W/" } else { "" }, t.opaque)
}

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The date in one of the three formats of RFC 9110 §5.6.7, built from the IMF-fixdate.
fn render_date(secs: u64, format: usize) -> String {
    let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (day, rest) = imf.split_once(", ").unwrap();
    let parts: Vec<&str> = rest.split(' ').collect(); // [06, Nov, 1994, 08:49:37, GMT]
    let year: u32 = parts[2].parse().unwrap();
    match format {
        // RFC 850 has two-digit years; only where both readings agree.
        1 if (1977..2070).contains(&year) => {
            let long = DAYS.iter().find(|d| d.starts_with(day)).unwrap();
            format!(
                "{long}, {}-{}-{:02} {} GMT",
                parts[0],
                parts[1],
                year % 100,
                parts[3]
            )
        }
        2 => {
            let mday: u32 = parts[0].parse().unwrap();
            format!("{day} {} {mday:>2} {} {year}", parts[1], parts[3])
        }
        _ => imf,
    }
}

fn headers_of(c: &Case) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |name: &'static str, value: String| {
        h.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
    };
    for (name, field) in [
        ("if-match", &c.if_match),
        ("if-none-match", &c.if_none_match),
    ] {
        match field {
            ListField::Absent => {}
            ListField::Star => add(name, "*".into()),
            ListField::Malformed(v) => add(name, v.clone()),
            ListField::Tags(tags) => {
                // Split over `lines` field lines, with empty elements and odd spacing.
                let lines = c.lines.clamp(1, tags.len().max(1));
                let per = tags.len().div_ceil(lines).max(1);
                let mut chunks: Vec<String> = tags
                    .chunks(per)
                    .map(|ts| ts.iter().map(render_tag).collect::<Vec<_>>().join(" ,\t"))
                    .collect();
                if chunks.is_empty() {
                    chunks.push(", ,".into());
                }
                for chunk in chunks {
                    add(name, chunk);
                }
            }
        }
    }
    for (name, field) in [
        ("if-modified-since", &c.if_modified_since),
        ("if-unmodified-since", &c.if_unmodified_since),
    ] {
        match field {
            DateField::Absent => {}
            DateField::Valid(secs) => add(name, render_date(*secs, c.date_format)),
            DateField::Invalid(v) => add(name, v.clone()),
        }
    }
    match &c.if_range {
        IfRangeField::Absent => {}
        IfRangeField::Tag(t) => add("if-range", render_tag(t)),
        IfRangeField::Date(secs) => add("if-range", render_date(*secs, c.date_format)),
        IfRangeField::Invalid(v) => add("if-range", v.clone()),
    }
    if c.range {
        add("range", "bytes=0-9".into());
    }
    h
}

fn real(c: &Case) -> Outcome {
    let current = c.current.as_ref().map(|r| {
        let mut v = Validators::new();
        if let Some(t) = &r.etag {
            v = v.with_etag(render_tag(t).parse::<EntityTag>().unwrap());
        }
        if let Some(s) = r.modified {
            v = v.with_last_modified(
                UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(999),
            );
        }
        v
    });
    let conditions = Conditions::from_headers(&headers_of(c));
    let mut options = Options::default();
    options.strong_dates = c.strong_dates;
    match evaluate(&c.method, &conditions, current.as_ref(), options) {
        Decision::Proceed => Outcome::Go,
        Decision::IgnoreRange => Outcome::GoWithoutRange,
        Decision::NotModified => Outcome::NotModified,
        Decision::PreconditionFailed(f) => Outcome::Failed(f.field_name()),
        other => panic!("a decision the oracle does not know: {other:?}"),
    }
}

// ---- generators ---------------------------------------------------------------------------

fn tag() -> impl Strategy<Value = Tag> {
    // A small pool, so that matches happen; commas and obs-free punctuation inside.
    (
        any::<bool>(),
        prop::sample::select(vec!["a", "b", "v1", "x,y", "", "Zm9v-_", "!#$%"]),
    )
        .prop_map(|(weak, o)| Tag {
            weak,
            opaque: o.to_owned(),
        })
}

fn list_field() -> impl Strategy<Value = ListField> {
    prop_oneof![
        3 => Just(ListField::Absent),
        1 => Just(ListField::Star),
        4 => prop::collection::vec(tag(), 0..4).prop_map(ListField::Tags),
        1 => prop::sample::select(vec!["abc", "\"open", "W/x", "w/\"a\"", "*, \"a\"", "\"a\" \"b\"", "\"a\"junk", "**"])
            .prop_map(|s| ListField::Malformed(s.to_owned())),
    ]
}

/// Around the resource's modification time, so that every comparison outcome occurs.
const BASE: u64 = 1_600_000_000;

fn date_field() -> impl Strategy<Value = DateField> {
    prop_oneof![
        3 => Just(DateField::Absent),
        4 => (BASE - 2..BASE + 3).prop_map(DateField::Valid),
        1 => (0u64..253_402_300_000).prop_map(DateField::Valid), // anywhere, future included
        1 => prop::sample::select(vec!["yesterday", "Sun, 06 Nov 1994 08:49:37", "Sun, 32 Nov 1994 08:49:37 GMT", "0", "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT"])
            .prop_map(|s| DateField::Invalid(s.to_owned())),
    ]
}

fn if_range_field() -> impl Strategy<Value = IfRangeField> {
    prop_oneof![
        2 => Just(IfRangeField::Absent),
        2 => tag().prop_map(IfRangeField::Tag),
        2 => (BASE - 1..BASE + 2).prop_map(IfRangeField::Date),
        1 => Just(IfRangeField::Invalid("\"a\", \"b\"".into())),
    ]
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    prop::option::weighted(
        0.85,
        (
            prop::option::weighted(0.9, tag()),
            prop::option::weighted(0.8, BASE - 1..BASE + 2),
        )
            .prop_map(|(etag, modified)| Resource { etag, modified }),
    )
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::from_bytes(b"PROPPATCH").unwrap(),
    ])
}

fn case() -> impl Strategy<Value = Case> {
    (
        method(),
        list_field(),
        list_field(),
        date_field(),
        date_field(),
        if_range_field(),
        (any::<bool>(), any::<bool>()),
        1usize..4,
        0usize..3,
        resource(),
    )
        .prop_map(
            |(
                method,
                if_match,
                if_none_match,
                ims,
                ius,
                if_range,
                (range, strong_dates),
                lines,
                date_format,
                current,
            )| Case {
                method,
                if_match,
                if_none_match,
                if_modified_since: ims,
                if_unmodified_since: ius,
                if_range,
                range,
                strong_dates,
                lines,
                date_format,
                current,
            },
        )
}

/// How many cases each property runs (`ORACLE_CASES` overrides; CI uses the default).
fn cases() -> u32 {
    std::env::var("ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_decision_agrees_with_the_model(c in case()) {
        prop_assert_eq!(real(&c), model(&c), "headers: {:?}", headers_of(&c));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn printing_then_parsing_an_entity_tag_is_the_identity(weak in any::<bool>(), opaque in "[!#-~\\x{80}-\\x{ff}]{0,40}") {
        // Any etagc sequence (obs-text included), strong or weak.
        let bytes: Vec<u8> = opaque.chars().map(|c| c as u32 as u8).collect();
        let mut raw = if weak { b"W/\"".to_vec() } else { b"\"".to_vec() };
        raw.extend_from_slice(&bytes);
        raw.push(b'"');
        let tag = EntityTag::parse(&raw).unwrap();
        prop_assert_eq!(tag.is_weak(), weak);
        prop_assert_eq!(tag.opaque(), &bytes[..]);
        prop_assert_eq!(tag.as_bytes(), &raw[..]);
        let again = EntityTag::parse(tag.as_bytes()).unwrap();
        prop_assert_eq!(again, tag);
    }

    #[test]
    fn the_hashers_tag_does_not_depend_on_chunking(data in prop::collection::vec(any::<u8>(), 0..5000), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20)) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        points.sort_unstable();
        let mut hasher = ETagHasher::new();
        let mut start = 0;
        for p in points {
            hasher.update(&data[start..p]);
            start = p;
        }
        hasher.update(&data[start..]);
        prop_assert_eq!(hasher.finish(), EntityTag::from_content(&data));
    }
}

#[test]
fn the_model_is_not_vacuous() {
    // Spot checks that the model says what the RFC says, so agreement means something.
    let base = Case {
        method: Method::PUT,
        if_match: ListField::Tags(vec![Tag {
            weak: false,
            opaque: "a".into(),
        }]),
        if_none_match: ListField::Absent,
        if_modified_since: DateField::Absent,
        if_unmodified_since: DateField::Absent,
        if_range: IfRangeField::Absent,
        range: false,
        strong_dates: false,
        lines: 1,
        date_format: 0,
        current: Some(Resource {
            etag: Some(Tag {
                weak: false,
                opaque: "b".into(),
            }),
            modified: Some(BASE),
        }),
    };
    assert_eq!(model(&base), Outcome::Failed("If-Match"));
    let get = Case {
        method: Method::GET,
        if_match: ListField::Absent,
        if_none_match: ListField::Star,
        ..base.clone()
    };
    assert_eq!(model(&get), Outcome::NotModified);
    // An If-Range date equal to Last-Modified keeps the Range only where dates are strong.
    let resume = Case {
        method: Method::GET,
        if_match: ListField::Absent,
        if_range: IfRangeField::Date(BASE),
        range: true,
        ..base.clone()
    };
    assert_eq!(model(&resume), Outcome::GoWithoutRange);
    assert_eq!(real(&resume), Outcome::GoWithoutRange);
    let strong = Case {
        strong_dates: true,
        ..resume
    };
    assert_eq!(model(&strong), Outcome::Go);
    assert_eq!(real(&strong), Outcome::Go);
    let _ = SystemTime::now();
}
