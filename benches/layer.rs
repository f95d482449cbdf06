//! Criterion benches: the layer's cost against the floor it cannot beat.
//!
//! ```sh
//! cargo bench --bench layer                       # SHA-256
//! cargo bench --bench layer --features blake3     # adds the BLAKE3 200 path
//! ```
//!
//! Groups, each per body size (256 B, 4 KiB, 64 KiB, 1 MiB) and chunking (one chunk, eight):
//! - `200`: `floor` = inner service + draining the body + a raw SHA-256 of the same bytes;
//!   `layer` = the same service through the layer (it hashes, tags, replays); `floor_xxh3` /
//!   `layer_xxh3` the same with XXH3-128 plugged in through `HashAlgorithm::custom` (a hash of
//!   negligible cost: the difference is the layer's own work); with `--features blake3`,
//!   `floor_blake3` / `layer_blake3`. `minimal` is the least any tagging layer does, written
//!   out by hand with the same crates (`benches/support/minimal.rs`): collect the body,
//!   SHA-256 it, print the tag into a header value, replay the bytes — no request parsing, no
//!   conditions, no limits. It is the yardstick for the layer's fixed cost that the floor
//!   (which builds no header) is not.
//! - `304`: `bare_200` = the inner service alone; `layer_304` = a revalidation that matches
//!   (the layer hashes and compares, the body is dropped); `lookup_fast_path` = the lookup
//!   answers the 304 and the inner service is never called.
//! - `headers`: parsing and deciding on a realistic request and on a 100 KiB `If-None-Match`.
//! - `chunking` (`--features blake3`): the BLAKE3 tag of 4 KiB fed in one piece and in eight
//!   of 512 B, the hash alone.
//!
//! Every service here answers at once, so futures are polled once (`now_or_never`): what is
//! measured is the layer's own work, with no executor in the way.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::{ready, FutureExt, Ready};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_conditional::precondition::{evaluate, Conditions, Options};
#[cfg(feature = "blake3")]
use tower_conditional::ETagHasher;
use tower_conditional::Validators;
use tower_conditional::{lookup_fn, ConditionalLayer, EntityTag, HashAlgorithm, LookupRequest};

#[path = "support/minimal.rs"]
mod minimal;
#[path = "support/xxh3.rs"]
mod xxh3;
use minimal::minimal;
use xxh3::Xxh3;

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

const SIZES: [(usize, &str); 4] = [
    (256, "256B"),
    (4096, "4KiB"),
    (65536, "64KiB"),
    (1 << 20, "1MiB"),
];

fn chunks_of(size: usize, pieces: usize) -> Vec<Bytes> {
    let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let step = size.div_ceil(pieces);
    (0..size)
        .step_by(step)
        .map(|at| data.slice(at..(at + step).min(size)))
        .collect()
}

fn body_of(chunks: &[Bytes]) -> TestBody {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        chunks.iter().cloned().map(|c| Ok(Frame::data(c))).collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// The inner service: a 200 with the prepared chunks (cloning `Bytes` copies nothing).
fn inner(
    chunks: Vec<Bytes>,
) -> impl Service<
    Request<String>,
    Response = Response<TestBody>,
    Error = Infallible,
    Future = Ready<Result<Response<TestBody>, Infallible>>,
> + Clone {
    service_fn(move |_req: Request<String>| {
        let mut resp = Response::new(body_of(&chunks));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        ready(Ok::<_, Infallible>(resp))
    })
}

/// Polls a body to its end, synchronously (every frame is ready); hands each chunk to `f`.
fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B, mut f: impl FnMut(&Bytes)) {
    while let Some(frame) = body.frame().now_or_never().expect("ready") {
        if let Ok(data) = frame.ok().expect("no errors").into_data() {
            f(&data);
        }
    }
}

fn get() -> Request<String> {
    Request::get("/bench").body(String::new()).unwrap()
}

fn bench_200(c: &mut Criterion) {
    let mut group = c.benchmark_group("200");
    for (size, name) in SIZES {
        for pieces in [1usize, 8] {
            let chunks = chunks_of(size, pieces);
            let id = format!("{name}/{pieces}chunk");
            group.throughput(Throughput::Bytes(size as u64));
            let svc = inner(chunks.clone());
            group.bench_function(BenchmarkId::new("floor", &id), |b| {
                b.iter(|| {
                    let resp = svc.clone().oneshot(get()).now_or_never().unwrap().unwrap();
                    let mut digest = Sha256::new();
                    drain(resp.into_body(), |c| digest.update(c));
                    black_box(digest.finalize())
                })
            });
            let layered = ConditionalLayer::new().layer(inner(chunks.clone()));
            group.bench_function(BenchmarkId::new("layer", &id), |b| {
                b.iter(|| {
                    let resp = layered
                        .clone()
                        .oneshot(get())
                        .now_or_never()
                        .unwrap()
                        .unwrap();
                    black_box(resp.headers().get(http::header::ETAG).is_some());
                    drain(resp.into_body(), |c| {
                        black_box(c.len());
                    });
                })
            });
            let by_hand = minimal(inner(chunks.clone()));
            group.bench_function(BenchmarkId::new("minimal", &id), |b| {
                b.iter(|| {
                    let resp = by_hand
                        .clone()
                        .oneshot(get())
                        .now_or_never()
                        .unwrap()
                        .unwrap();
                    black_box(resp.headers().get(http::header::ETAG).is_some());
                    drain(resp.into_body(), |c| {
                        black_box(c.len());
                    });
                })
            });
            group.bench_function(BenchmarkId::new("floor_xxh3", &id), |b| {
                b.iter(|| {
                    let resp = svc.clone().oneshot(get()).now_or_never().unwrap().unwrap();
                    let mut digest = xxhash_rust::xxh3::Xxh3::new();
                    drain(resp.into_body(), |c| digest.update(c));
                    black_box(digest.digest128())
                })
            });
            let xxh3 = ConditionalLayer::new()
                .hash_algorithm(HashAlgorithm::custom(Xxh3))
                .layer(inner(chunks.clone()));
            group.bench_function(BenchmarkId::new("layer_xxh3", &id), |b| {
                b.iter(|| {
                    let resp = xxh3.clone().oneshot(get()).now_or_never().unwrap().unwrap();
                    drain(resp.into_body(), |c| {
                        black_box(c.len());
                    });
                })
            });
            #[cfg(feature = "blake3")]
            {
                group.bench_function(BenchmarkId::new("floor_blake3", &id), |b| {
                    b.iter(|| {
                        let resp = svc.clone().oneshot(get()).now_or_never().unwrap().unwrap();
                        let mut digest = blake3::Hasher::new();
                        drain(resp.into_body(), |c| {
                            digest.update(c);
                        });
                        black_box(digest.finalize())
                    })
                });
                let fast = ConditionalLayer::new()
                    .hash_algorithm(HashAlgorithm::Blake3)
                    .layer(inner(chunks.clone()));
                group.bench_function(BenchmarkId::new("layer_blake3", &id), |b| {
                    b.iter(|| {
                        let resp = fast.clone().oneshot(get()).now_or_never().unwrap().unwrap();
                        drain(resp.into_body(), |c| {
                            black_box(c.len());
                        });
                    })
                });
            }
        }
    }
    group.finish();
}

fn bench_304(c: &mut Criterion) {
    let mut group = c.benchmark_group("304");
    for (size, name) in SIZES {
        let chunks = chunks_of(size, 1);
        let data: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let tag = EntityTag::from_content(&data);
        let revalidate = || {
            let mut req = get();
            req.headers_mut()
                .insert(http::header::IF_NONE_MATCH, tag.to_header_value());
            req
        };
        let bare = inner(chunks.clone());
        group.bench_function(BenchmarkId::new("bare_200", name), |b| {
            b.iter(|| {
                let resp = bare.clone().oneshot(get()).now_or_never().unwrap().unwrap();
                drain(resp.into_body(), |c| {
                    black_box(c.len());
                });
            })
        });
        let layered = ConditionalLayer::new().layer(inner(chunks.clone()));
        group.bench_function(BenchmarkId::new("layer_304", name), |b| {
            b.iter(|| {
                let resp = layered
                    .clone()
                    .oneshot(revalidate())
                    .now_or_never()
                    .unwrap()
                    .unwrap();
                assert_eq!(resp.status(), 304);
            })
        });
        let known = tag.clone();
        let lookup = lookup_fn(move |_req: LookupRequest| {
            ready(Ok::<_, Infallible>(Some(
                Validators::new().with_etag(known.clone()),
            )))
        });
        let fast = ConditionalLayer::new()
            .lookup(lookup)
            .lookup_reads(true)
            .layer(inner(chunks.clone()));
        group.bench_function(BenchmarkId::new("lookup_fast_path", name), |b| {
            b.iter(|| {
                let resp = fast
                    .clone()
                    .oneshot(revalidate())
                    .now_or_never()
                    .unwrap()
                    .unwrap();
                assert_eq!(resp.status(), 304);
            })
        });
    }
    group.finish();
}

fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let current = Validators::new().with_etag(EntityTag::from_content(b"current"));
    let mut realistic = HeaderMap::new();
    realistic.insert(
        http::header::IF_NONE_MATCH,
        current.etag().unwrap().to_header_value(),
    );
    realistic.insert(
        http::header::IF_MODIFIED_SINCE,
        HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    realistic.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    group.bench_function("realistic", |b| {
        b.iter(|| {
            let c = Conditions::from_headers(black_box(&realistic));
            black_box(evaluate(
                &Method::GET,
                &c,
                Some(&current),
                Options::default(),
            ))
        })
    });
    let mut list = String::new();
    let mut i = 0;
    while list.len() < 100 * 1024 {
        list.push_str(&format!("\"stale-{i}\", "));
        i += 1;
    }
    let mut worst = HeaderMap::new();
    worst.insert(
        http::header::IF_NONE_MATCH,
        HeaderValue::from_str(&list).unwrap(),
    );
    group.throughput(Throughput::Bytes(list.len() as u64));
    group.bench_function("if_none_match_100KiB", |b| {
        b.iter(|| {
            let c = Conditions::from_headers(black_box(&worst));
            black_box(evaluate(
                &Method::GET,
                &c,
                Some(&current),
                Options::default(),
            ))
        })
    });
    group.finish();
}

/// The hash alone, fed the same 4 KiB in one piece or in 8 pieces of 512 B (public
/// `ETagHasher`): BLAKE3's staging should make the two cost the same.
#[cfg(feature = "blake3")]
fn bench_chunking(c: &mut Criterion) {
    let mut group = c.benchmark_group("chunking");
    let data = vec![7u8; 4096];
    group.throughput(Throughput::Bytes(data.len() as u64));
    for pieces in [1usize, 8] {
        group.bench_function(BenchmarkId::new("blake3_4KiB", format!("{pieces}x")), |b| {
            b.iter(|| {
                let mut hasher = ETagHasher::with_algorithm(&HashAlgorithm::Blake3);
                for piece in black_box(&data).chunks(data.len() / pieces) {
                    hasher.update(piece);
                }
                black_box(hasher.finish())
            })
        });
    }
    group.finish();
}

#[cfg(not(feature = "blake3"))]
fn bench_chunking(_: &mut Criterion) {
    eprintln!("chunking: skipped, BLAKE3 needs --features blake3");
}

criterion_group!(benches, bench_200, bench_304, bench_headers, bench_chunking);
criterion_main!(benches);
