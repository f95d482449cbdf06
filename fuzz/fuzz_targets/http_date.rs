//! HTTP-date fields: never panic; a parsed date from 1970 on formats and parses back to itself
//! (earlier years are valid HTTP-dates too, but are not formatted).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tower_conditional::precondition::{http_date, parse_http_date, IfRange};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else { return };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::IF_MODIFIED_SINCE, value.clone());
    headers.insert(http::header::IF_RANGE, value);
    if let Some(time) = parse_http_date(headers.get_all(http::header::IF_MODIFIED_SINCE)) {
        if let Some(printed) = http_date(time) {
            let mut again = http::HeaderMap::new();
            again.insert(http::header::IF_MODIFIED_SINCE, printed);
            assert_eq!(parse_http_date(again.get_all(http::header::IF_MODIFIED_SINCE)), Some(time));
        }
    }
    let _ = IfRange::parse(headers.get_all(http::header::IF_RANGE));
});
