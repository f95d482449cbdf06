//! Malformed input over a real server: every conditional field we read, sent broken, on GET
//! and on PUT, as raw bytes on a socket. No panic, a correct status, no write where a
//! precondition could not be understood, and work that stays linear in the header size.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends raw request bytes on a fresh connection; answers the status code (0: no answer).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let status = std::str::from_utf8(response.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn request(method: &str, path: &str, fields: &[(&str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in fields {
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn body_of(response: &[u8]) -> &[u8] {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    &response[at..]
}

/// The broken values, each with a name for failure messages. `lines` > 1 repeats the field.
fn malformations() -> Vec<(&'static str, Vec<u8>, usize)> {
    let mut big_list = Vec::new();
    let mut i = 0;
    while big_list.len() < 100 * 1024 {
        big_list.extend_from_slice(format!("\"nope-{i}\", ").as_bytes());
        i += 1;
    }
    vec![
        ("unquoted", b"abc".to_vec(), 1),
        ("stray quote", b"\"a\"b\"".to_vec(), 1),
        ("lone quote", b"\"".to_vec(), 1),
        ("unterminated", b"\"abc".to_vec(), 1),
        ("lowercase weak", b"w/\"a\"".to_vec(), 1),
        ("star and tag", b"*, \"a\"".to_vec(), 1),
        ("control byte", b"\"a\x01b\"".to_vec(), 1),
        ("delete byte", b"\"a\x7fb\"".to_vec(), 1),
        ("non-UTF-8 obs-text tag", b"\"\xff\xfe\"".to_vec(), 1),
        ("non-UTF-8 bare", b"\xff\xfe\xfd".to_vec(), 1),
        ("empty", b"".to_vec(), 1),
        ("only commas", b" , , ".to_vec(), 1),
        ("100 KiB list", big_list, 1),
        ("year 99999", b"Sun, 06 Nov 99999 08:49:37 GMT".to_vec(), 1),
        (
            "three-digit year",
            b"Mon, 01 Jan 000 00:00:00 GMT".to_vec(),
            1,
        ),
        // Valid HTTP-dates (RFC 9110 §5.6.7 allows any four-digit year) long before the
        // resource was written: not malformed, and If-Unmodified-Since on them is false.
        ("year 0000", b"Sat, 01 Jan 0000 00:00:00 GMT".to_vec(), 1),
        ("year 1969", b"Wed, 31 Dec 1969 23:59:59 GMT".to_vec(), 1),
        ("second 61", b"Fri, 31 Dec 9999 23:59:61 GMT".to_vec(), 1),
        (
            "list of dates",
            b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT".to_vec(),
            1,
        ),
        ("1000 repeated lines", b"\"x\"".to_vec(), 1000),
        ("50 repeated lines", b"\"x\"".to_vec(), 50),
    ]
}

const FIELDS: [&str; 6] = [
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
];

#[test]
fn every_field_malformed_on_get_and_put() {
    let server = common::spawn_example("reference_server", &["--addr", "127.0.0.1:0"]);
    let addr = server.addr;
    let (status, _) = raw(addr, &request("PUT", "/items/m", &[], b"original"));
    assert_eq!(status, 201);

    let mut matrix = 0;
    for field in FIELDS {
        for (name, value, lines) in malformations() {
            let fields: Vec<(&str, Vec<u8>)> = (0..lines).map(|_| (field, value.clone())).collect();
            let with_range = |mut f: Vec<(&'static str, Vec<u8>)>| {
                if field == "If-Range" {
                    f.push(("Range", b"bytes=0-1".to_vec()));
                }
                f
            };
            let fields = with_range(fields);
            let case = format!("{field}: {name}");

            // GET: a correct status, never a crash.
            let started = Instant::now();
            let (status, _) = raw(addr, &request("GET", "/items/m", &fields, b""));
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{case}: linear work, not {:?}",
                started.elapsed()
            );
            let allowed: &[u16] = match (field, name) {
                // hyper refuses bytes that are not field content, and too many lines.
                (_, "control byte" | "delete byte") => &[400],
                (_, "1000 repeated lines") => &[431, 400],
                // A tag list that cannot be understood: If-Match fails closed, If-None-Match is ignored.
                ("If-Match", _) => &[412],
                ("If-None-Match", _) => &[200],
                ("If-Range", _) => &[200],
                ("Range", _) => &[200, 206, 416],
                ("If-Unmodified-Since", "year 0000" | "year 1969") => &[412],
                // Dates that are not single valid HTTP-dates are ignored.
                _ => &[200],
            };
            assert!(
                allowed.contains(&status),
                "GET {case}: got {status}, expected one of {allowed:?}"
            );
            matrix += 1;

            // PUT: a precondition that cannot be understood writes nothing.
            let (status, _) = raw(addr, &request("PUT", "/items/m", &fields, b"overwritten"));
            let allowed: &[u16] = match (field, name) {
                (_, "control byte" | "delete byte") => &[400],
                (_, "1000 repeated lines") => &[431, 400],
                // Well-formed lists that do not match the current tag: If-Match fails, and
                // If-None-Match holds (an empty list matches nothing).
                (
                    "If-None-Match",
                    "non-UTF-8 obs-text tag"
                    | "50 repeated lines"
                    | "100 KiB list"
                    | "empty"
                    | "only commas",
                ) => &[200],
                // Everything else in a tag list is malformed or does not match: 412.
                ("If-Match" | "If-None-Match", _) => &[412],
                ("If-Unmodified-Since", "year 0000" | "year 1969") => &[412],
                // Ignored fields (dates, and If-Range/Range which writes do not use).
                _ => &[200],
            };
            assert!(
                allowed.contains(&status),
                "PUT {case}: got {status}, expected one of {allowed:?}"
            );
            if status == 200 {
                // The write was allowed to happen: put the original back for the next case.
                let (status, _) = raw(addr, &request("PUT", "/items/m", &[], b"original"));
                assert_eq!(status, 200);
            }
            let (status, response) = raw(addr, &request("GET", "/items/m", &[], b""));
            assert_eq!(status, 200, "{case}: the server is still up");
            assert_eq!(
                body_of(&response),
                b"original",
                "{case}: nothing written by a refused PUT"
            );
            matrix += 1;
        }
    }
    println!(
        "malformed-input matrix: {matrix} requests, {} fields x {} malformations x GET/PUT",
        FIELDS.len(),
        malformations().len()
    );
    assert_eq!(matrix, FIELDS.len() * malformations().len() * 2);
}

#[test]
fn header_parsing_work_is_linear() {
    // Counted work, not time: parsing n tags takes n steps' worth of output, and a 100 KiB
    // list of 10,000 tags parses to exactly 10,000 entries.
    use http::{HeaderMap, HeaderValue};
    use tower_conditional::precondition::TagList;
    for n in [10usize, 1_000, 10_000] {
        let line: String = (0..n).map(|i| format!("\"t{i}\", ")).collect();
        let mut h = HeaderMap::new();
        h.insert("if-none-match", HeaderValue::from_str(&line).unwrap());
        match TagList::parse(h.get_all("if-none-match")).unwrap().unwrap() {
            TagList::Tags(tags) => assert_eq!(tags.len(), n),
            other => panic!("a list of {n} tags, not {other:?}"),
        }
    }
}
