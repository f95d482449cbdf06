//! If-Match / If-None-Match lists over any number of field lines: never panics, and every
//! listed tag is a valid tag.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tower_conditional::precondition::TagList;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.append(http::header::IF_MATCH, value);
        }
    }
    if let Ok(Some(TagList::Tags(tags))) = TagList::parse(headers.get_all(http::header::IF_MATCH)) {
        for tag in tags {
            assert!(tower_conditional::EntityTag::parse(tag.as_bytes()).is_ok());
        }
    }
});
