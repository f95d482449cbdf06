//! The whole decision over arbitrary header maps, methods and current validators: never
//! panics, and its answer is one the method allows (no 304 for writes, nothing for OPTIONS).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};
use tower_conditional::precondition::{evaluate, Conditions, Decision, Options};
use tower_conditional::Validators;
use tower_conditional::EntityTag;

const NAMES: [http::header::HeaderName; 7] = [
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
    http::header::RANGE,
    http::header::ETAG,
];
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE"];

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let method = http::Method::from_bytes(METHODS[(control & 7) as usize].as_bytes()).unwrap();
    let mut headers = http::HeaderMap::new();
    // Each line: one name selector byte, then the value.
    for line in rest.split(|&b| b == b'\n') {
        let Some((&which, value)) = line.split_first() else { continue };
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.append(NAMES[which as usize % NAMES.len()].clone(), value);
        }
    }
    let current = (control & 8 != 0).then(|| {
        let mut v = Validators::new();
        if let Some(tag) = headers.get(http::header::ETAG).and_then(|v| EntityTag::try_from(v).ok()) {
            v = v.with_etag(tag);
        }
        if control & 16 != 0 {
            v = v.with_last_modified(UNIX_EPOCH + Duration::from_secs(u64::from(control) * 10_000_000));
        }
        v
    });
    let conditions = Conditions::from_headers(&headers);
    let mut options = Options::default();
    options.weak_if_match = control & 32 != 0;
    let decision = evaluate(&method, &conditions, current.as_ref(), options);
    let read = method == http::Method::GET || method == http::Method::HEAD;
    match decision {
        Decision::NotModified => assert!(read),
        Decision::IgnoreRange => assert_eq!(method, http::Method::GET),
        _ => {}
    }
    if method == http::Method::OPTIONS || method == http::Method::TRACE {
        assert_eq!(decision, Decision::Proceed);
    }
    if conditions.is_empty() {
        assert_eq!(decision, Decision::Proceed);
    }
});
