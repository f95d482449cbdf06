//! XXH3-128 as the content hash, for the benchmarks (the criterion bench and the load
//! harness's server include this file): what salvo's `CachingHeaders` computes, so the two
//! compare on equal terms, and a hash cheap enough that the layer's own cost shows.
//!
//! Not collision resistant — anyone who can write a body can craft another with the same
//! tag — so a bench hash, never a default.
//!
//! Its streaming state is about 0.5 KiB; a fresh one per response would cost an allocation
//! and the copy of its default secret. Finished states go back to a small per-thread pool
//! instead, reset: a pattern any [`ContentHash`] whose state is large can use, since the
//! layer hands each hasher back through [`ContentHasher::finish`].

use std::cell::RefCell;

use tower_conditional::{ContentHash, ContentHasher, Digest};

/// The XXH3-128 [`ContentHash`].
#[derive(Debug, Clone, Copy)]
pub struct Xxh3;

struct Xxh3State(xxhash_rust::xxh3::Xxh3);

/// How many finished states a thread keeps for reuse.
const SPARE: usize = 64;

thread_local! {
    // The boxes themselves are kept: a reused state is handed out without an allocation.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Xxh3State>>> = const { RefCell::new(Vec::new()) };
}

impl ContentHash for Xxh3 {
    fn hasher(&self) -> Box<dyn ContentHasher> {
        match POOL.with(|pool| pool.borrow_mut().pop()) {
            Some(state) => state,
            None => Box::new(Xxh3State(xxhash_rust::xxh3::Xxh3::new())),
        }
    }
}

impl ContentHasher for Xxh3State {
    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(mut self: Box<Self>) -> Digest {
        let digest = Digest::new(&self.0.digest128().to_be_bytes());
        self.0.reset();
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < SPARE {
                pool.push(self);
            }
        });
        digest
    }
}
