//! EntityTag parsing: never panics; what parses prints back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tower_conditional::EntityTag;

fuzz_target!(|data: &[u8]| {
    if let Ok(tag) = EntityTag::parse(data) {
        let again = EntityTag::parse(tag.as_bytes()).expect("a printed tag parses");
        assert_eq!(again, tag);
        assert!(tag.strong_eq(&tag) != tag.is_weak());
        assert!(tag.weak_eq(&again));
        let _ = tag.to_string();
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let _ = EntityTag::try_from(&value);
    }
});
