//! The hashing buffer: one type for every body the layer reads to compute a tag, the
//! response it will send on (read path) and the answer to an internal GET alike.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::Body;

use crate::config::Config;
use crate::etag::{Digest, ETagHasher, HashAlgorithm};

/// Chunks held in arrival order. One chunk, the common case, needs no allocation.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
        } else {
            if self.rest.capacity() == 0 {
                // One allocation for the common few-chunk body, not one per doubling.
                self.rest.reserve(8);
            }
            self.rest.push_back(chunk);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// Octets `first..=last` of the chunks, as slices of the same `Bytes` (nothing copied).
    pub(crate) fn part(mut self, first: u64, last: u64) -> Chunks {
        let mut part = Chunks::default();
        let mut at = 0u64;
        while let Some(chunk) = self.pop() {
            let end = at + chunk.len() as u64;
            if end > first.max(at) && at <= last {
                let from = first.saturating_sub(at) as usize;
                let to = (last + 1).min(end) - at;
                part.push(chunk.slice(from..to as usize));
            }
            if end > last {
                break;
            }
            at = end;
        }
        part
    }
}

/// What is held once reading stopped: the chunks (as the `Bytes` they arrived in), their
/// length, and the trailers when the body ended.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) chunks: Chunks,
    pub(crate) len: u64,
    /// Boxed: rare, and the buffer lives inline in response futures.
    pub(crate) trailers: Option<Box<HeaderMap>>,
}

/// Why reading a body stopped.
pub(crate) enum Filled<E> {
    /// The body ended: every byte was hashed.
    End,
    /// It grew past the limit; the rest is still in the body.
    Overflow,
    /// It failed.
    Failed(E),
}

/// How many frames one poll reads before it lets other tasks run.
const FRAMES_PER_POLL: usize = 64;

/// Held chunks, their length, the hasher over them, and the trailers, under a byte limit.
#[derive(Debug)]
pub(crate) struct HashBuffer {
    hasher: ETagHasher,
    held: Held,
    limit: u64,
    /// Whether to keep the chunks (a response to send on) or only hash them.
    keep: bool,
}

impl HashBuffer {
    pub(crate) fn new(algorithm: &HashAlgorithm, limit: usize, keep: bool) -> Self {
        HashBuffer {
            hasher: ETagHasher::with_algorithm(algorithm),
            held: Held::default(),
            limit: limit as u64,
            keep,
        }
    }

    /// Reads frames until the body ends, fails, outgrows the limit, or is not ready.
    pub(crate) fn poll_fill<B: Body>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Filled<B::Error>> {
        // A body that keeps yielding empty or trailer frames must not hold the executor.
        for _ in 0..FRAMES_PER_POLL {
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(Filled::End),
                Some(Err(e)) => return Poll::Ready(Filled::Failed(e)),
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    // Zero-copy when the body's data already is `Bytes`.
                    let chunk = data.copy_to_bytes(data.remaining());
                    if chunk.is_empty() {
                        continue;
                    }
                    self.held.len += chunk.len() as u64;
                    let over = self.held.len > self.limit;
                    if !over {
                        self.hasher.update_bytes(&chunk);
                    }
                    if self.keep {
                        self.held.chunks.push(chunk);
                    }
                    if over {
                        return Poll::Ready(Filled::Overflow);
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        match &mut self.held.trailers {
                            Some(held) => held.extend(trailers),
                            None => self.held.trailers = Some(Box::new(trailers)),
                        }
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// [`poll_fill`](Self::poll_fill), or `None` once `deadline` has passed while the body
    /// kept the layer waiting.
    pub(crate) fn poll_fill_within<B: Body>(
        &mut self,
        body: Pin<&mut B>,
        deadline: &mut Deadline,
        config: &Config,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Filled<B::Error>>> {
        match self.poll_fill(body, cx) {
            Poll::Ready(filled) => Poll::Ready(Some(filled)),
            Poll::Pending if deadline.poll_expired(cx, config) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// How many bytes were read.
    pub(crate) fn len(&self) -> u64 {
        self.held.len
    }

    /// The digest of every byte read, and what is held.
    pub(crate) fn finish(self) -> (Digest, Held) {
        (self.hasher.finish_digest(), self.held)
    }

    /// What is held, without a tag (the body is not sent whole, or not tagged).
    pub(crate) fn into_held(self) -> Held {
        self.held
    }
}

/// The time bound on holding a body: armed when the body first makes the layer wait.
///
/// Needs the `tokio` feature (on by default) and a Tokio runtime with its timer; without
/// either, bodies are held until they end or outgrow `max_buffer`.
pub(crate) struct Deadline {
    limit: Option<Duration>,
    #[cfg(feature = "tokio")]
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Deadline {
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        Deadline {
            limit,
            #[cfg(feature = "tokio")]
            sleep: None,
        }
    }

    /// Called when the body is not ready: whether the time is up. Registers for a wake-up
    /// at the deadline otherwise.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>, config: &Config) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        if self.sleep.is_none() {
            match config.sleep(limit) {
                Some(sleep) => self.sleep = Some(sleep),
                None => {
                    self.limit = None;
                    return false;
                }
            }
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }

    #[cfg(not(feature = "tokio"))]
    pub(crate) fn poll_expired(&mut self, _cx: &mut Context<'_>, _config: &Config) -> bool {
        false
    }
}

#[cfg(feature = "tokio")]
use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::{EntityTag, TagText};
    use http_body_util::{BodyExt, StreamBody};

    fn stream(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn strong(digest: Digest) -> EntityTag {
        TagText::new(&digest, false).into_tag()
    }

    /// Every range of a chunked body, against the same range of its bytes in one piece.
    #[test]
    fn a_part_of_the_chunks_is_the_same_range_of_their_bytes() {
        let pieces: [&'static [u8]; 4] = [b"abc", b"", b"defgh", b"ij"];
        let whole: Vec<u8> = pieces.concat();
        let n = whole.len() as u64;
        for first in 0..n {
            for last in first..n {
                let mut chunks = Chunks::default();
                for piece in pieces {
                    chunks.push(Bytes::from_static(piece));
                }
                let mut part = chunks.part(first, last);
                let mut got = Vec::new();
                while let Some(chunk) = part.pop() {
                    assert!(!chunk.is_empty(), "no empty slices kept");
                    got.extend_from_slice(&chunk);
                }
                assert_eq!(
                    got,
                    &whole[first as usize..=last as usize],
                    "{first}-{last}"
                );
            }
        }
    }

    #[tokio::test]
    async fn hashes_whatever_the_chunking_and_keeps_the_same_bytes() {
        let mut buf = HashBuffer::new(&HashAlgorithm::Sha256, 100, true);
        let mut body = std::pin::pin!(stream(&[b"hello ", b"", b"world"]));
        let filled = std::future::poll_fn(|cx| buf.poll_fill(body.as_mut(), cx)).await;
        assert!(matches!(filled, Filled::End));
        let (digest, mut held) = buf.finish();
        assert_eq!(strong(digest), EntityTag::from_content(b"hello world"));
        assert_eq!(held.len, 11);
        assert_eq!(held.chunks.pop().unwrap(), "hello ");
        assert_eq!(held.chunks.pop().unwrap(), "world");
        assert!(held.chunks.is_empty());
    }

    #[tokio::test]
    async fn stops_past_the_limit_with_the_rest_unread() {
        let mut buf = HashBuffer::new(&HashAlgorithm::Sha256, 4, true);
        let mut body = std::pin::pin!(stream(&[b"abc", b"de", b"f"]));
        let filled = std::future::poll_fn(|cx| buf.poll_fill(body.as_mut(), cx)).await;
        assert!(matches!(filled, Filled::Overflow));
        assert_eq!(buf.into_held().len, 5);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"f");
    }

    /// BLAKE3 keeps a first `Bytes` piece and stages later small ones: every split of the
    /// same bytes gives the one-shot tag.
    #[cfg(feature = "blake3")]
    #[tokio::test]
    async fn blake3_tags_do_not_depend_on_the_split() {
        let data: Vec<u8> = (0..40_960u32).map(|i| (i % 251) as u8).collect();
        let want = EntityTag::from_content_with(&HashAlgorithm::Blake3, &data);
        let splits: [&[usize]; 6] = [
            &[40_960],
            &[512; 80],
            &[100, 40_860],
            &[20_480, 20_480],
            &[17_000, 10, 23_950],
            &[1, 16_384, 3, 24_572],
        ];
        for split in splits {
            assert_eq!(split.iter().sum::<usize>(), data.len());
            let mut rest = &data[..];
            let frames: Vec<_> = split
                .iter()
                .map(|&n| {
                    let (piece, after) = rest.split_at(n);
                    rest = after;
                    Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::copy_from_slice(piece)))
                })
                .collect();
            let mut buf = HashBuffer::new(&HashAlgorithm::Blake3, 1 << 20, false);
            let mut body = std::pin::pin!(StreamBody::new(futures_util::stream::iter(frames)));
            let filled = std::future::poll_fn(|cx| buf.poll_fill(body.as_mut(), cx)).await;
            assert!(matches!(filled, Filled::End));
            assert_eq!(
                strong(buf.finish().0),
                want,
                "split {:?}",
                &split[..split.len().min(4)]
            );
        }
    }

    #[tokio::test]
    async fn a_hash_only_buffer_keeps_nothing() {
        let mut buf = HashBuffer::new(&HashAlgorithm::Sha256, 100, false);
        let mut body = std::pin::pin!(stream(&[b"ab", b"c"]));
        let filled = std::future::poll_fn(|cx| buf.poll_fill(body.as_mut(), cx)).await;
        assert!(matches!(filled, Filled::End));
        let (digest, held) = buf.finish();
        assert_eq!(strong(digest), EntityTag::from_content(b"abc"));
        assert!(held.chunks.is_empty());
    }
}
