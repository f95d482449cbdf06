//! HTTP-date fields: never panic; a parsed date formats and parses back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tower_conditional::precondition::{http_date, parse_http_date, IfRange};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else { return };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::IF_MODIFIED_SINCE, value.clone());
    headers.insert(http::header::IF_RANGE, value);
    if let Some(time) = parse_http_date(headers.get_all(http::header::IF_MODIFIED_SINCE)) {
        let printed = http_date(time).expect("a parsed date is in range");
        let mut again = http::HeaderMap::new();
        again.insert(http::header::IF_MODIFIED_SINCE, printed);
        assert_eq!(parse_http_date(again.get_all(http::header::IF_MODIFIED_SINCE)), Some(time));
    }
    let _ = IfRange::parse(headers.get_all(http::header::IF_RANGE));
});
