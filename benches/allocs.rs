//! Allocations per request on the 200 and 304 paths, counted with a counting global
//! allocator, per body size. Prints one table; `cargo bench --bench allocs`.
//!
//! The baseline is the inner service alone (`bare`), so the `layer` column minus `bare` is
//! what the layer itself allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::future::{ready, FutureExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_conditional::{ConditionalLayer, EntityTag};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads a body to its end; every frame is ready at once.
fn drain<B: http_body::Body + Unpin>(resp: Response<B>) {
    let mut body = resp.into_body();
    while let Some(Some(_)) = body.frame().now_or_never() {}
}

/// Allocations (count, bytes) made by `f`, averaged over `n` runs.
fn count(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm up lazily initialised state
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..n {
        f();
    }
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    ((a1 - a0) as f64 / n as f64, (b1 - b0) as f64 / n as f64)
}

fn main() {
    println!("allocations per request (count / bytes), inner service = 8-chunk stream body");
    println!(
        "{:>8} | {:>16} | {:>16} | {:>16} | {:>16}",
        "size", "bare 200", "layer 200", "layer 304", "layer 200 - bare"
    );
    for size in [256usize, 4096, 65536, 1 << 20] {
        let data = Bytes::from(vec![7u8; size]);
        let step = size / 8;
        let chunks: Vec<Bytes> = (0..8)
            .map(|i| data.slice(i * step..(i + 1) * step))
            .collect();
        let inner = service_fn(move |_req: Request<String>| {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                chunks.iter().cloned().map(|c| Ok(Frame::data(c))).collect();
            ready(Ok::<_, Infallible>(Response::new(StreamBody::new(
                futures_util::stream::iter(frames),
            ))))
        });
        let layered = ConditionalLayer::new().layer(inner.clone());
        let tag = EntityTag::from_content(&data).to_header_value();
        let bare = count(1000, || {
            drain(
                inner
                    .clone()
                    .oneshot(Request::new(String::new()))
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        });
        let l200 = count(1000, || {
            drain(
                layered
                    .clone()
                    .oneshot(Request::new(String::new()))
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        });
        let l304 = count(1000, || {
            let mut req = Request::new(String::new());
            req.headers_mut()
                .insert(http::header::IF_NONE_MATCH, tag.clone());
            let resp = layered
                .clone()
                .oneshot(req)
                .now_or_never()
                .unwrap()
                .unwrap();
            assert_eq!(resp.status(), 304);
        });
        println!(
            "{:>8} | {:>7.1} / {:>6.0} | {:>7.1} / {:>6.0} | {:>7.1} / {:>6.0} | {:>7.1} / {:>6.0}",
            size,
            bare.0,
            bare.1,
            l200.0,
            l200.1,
            l304.0,
            l304.1,
            l200.0 - bare.0,
            l200.1 - bare.1
        );
    }
}
