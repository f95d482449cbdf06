//! The response body of [`Conditional`](crate::Conditional).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::buffer::{Chunks, Held};
use crate::BoxError;

pin_project! {
    /// The body of every response that passes through the layer.
    ///
    /// It is one of: the inner body, untouched (streams the layer does not buffer); the
    /// chunks the layer held while hashing, replayed as the same `Bytes` (no copy), followed
    /// by the held trailers or by the rest of a stream that outgrew `max_buffer`; or a body
    /// the layer made itself (a 412's problem document, an empty 304 or HEAD body).
    ///
    /// Data frames are `Bytes`: for inner bodies whose data already is `Bytes` (hyper,
    /// axum, tonic, `http-body-util`), handing a chunk over copies nothing.
    pub struct ConditionalBody<B>
    where
        B: Body,
    {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        PassThrough {
            #[pin]
            body: B,
        },
        Replay {
            chunks: Chunks,
            remaining: u64,
            trailers: Option<Box<HeaderMap>>,
            rest: Option<Pin<Box<B>>>,
        },
        Full {
            data: Option<Bytes>,
        },
        Empty {
            hint: SizeHint,
        },
    }
}

impl<B: Body> std::fmt::Debug for ConditionalBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.kind {
            Kind::PassThrough { .. } => "PassThrough",
            Kind::Replay { .. } => "Replay",
            Kind::Full { .. } => "Full",
            Kind::Empty { .. } => "Empty",
        };
        f.debug_tuple("ConditionalBody").field(&name).finish()
    }
}

impl<B: Body> ConditionalBody<B> {
    pub(crate) fn pass_through(body: B) -> Self {
        ConditionalBody {
            kind: Kind::PassThrough { body },
        }
    }

    /// Held chunks, then either the held trailers (`rest` is `None`: the stream ended) or
    /// the rest of the stream.
    pub(crate) fn replay(held: Held, rest: Option<Pin<Box<B>>>) -> Self {
        ConditionalBody {
            kind: Kind::Replay {
                chunks: held.chunks,
                remaining: held.len,
                trailers: held.trailers,
                rest,
            },
        }
    }

    /// The length of a body the layer held whole (every chunk replayed, nothing after them).
    pub(crate) fn held_len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Replay {
                remaining,
                rest: None,
                ..
            } => Some(*remaining),
            _ => None,
        }
    }

    /// Octets `first..=last` of a body [`held_len`](Self::held_len) measured, without its
    /// trailers (they speak for the whole). Any other body is returned as it is.
    pub(crate) fn into_part(self, first: u64, last: u64) -> Self {
        match self.kind {
            Kind::Replay {
                chunks, rest: None, ..
            } => ConditionalBody {
                kind: Kind::Replay {
                    chunks: chunks.part(first, last),
                    remaining: last - first + 1,
                    trailers: None,
                    rest: None,
                },
            },
            kind => ConditionalBody { kind },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        ConditionalBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The same response for a HEAD: a body the layer made itself keeps only its length, in
    /// `Content-Length`. The empty body reports an exact zero, so that nothing outside
    /// (compression) encodes it: an encoder writes framing even for nothing, and DATA on a
    /// HEAD response is a stream error over HTTP/2.
    pub(crate) fn without_content(response: &mut http::Response<Self>) {
        let len = match &response.body().kind {
            Kind::Full { data } => data.as_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        };
        response
            .headers_mut()
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| http::HeaderValue::from(len));
        *response.body_mut() = ConditionalBody::empty(SizeHint::with_exact(0));
    }

    /// No data. `hint` is what the size hint reports: for a HEAD response over HTTP/1.1, the
    /// size of the body a GET would have had (so that what is outside treats it as the GET);
    /// an exact zero where nothing outside may take it for content to encode; unknown where
    /// nothing outside may write `Content-Length: 0` for it.
    pub(crate) fn empty(hint: SizeHint) -> Self {
        ConditionalBody {
            kind: Kind::Empty { hint },
        }
    }
}

fn to_bytes<D: Buf>(mut data: D) -> Bytes {
    // Zero-copy when `D` is `Bytes`.
    data.copy_to_bytes(data.remaining())
}

fn poll_inner<B>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match ready!(body.poll_frame(cx)) {
        Some(Ok(frame)) => Poll::Ready(Some(Ok(frame.map_data(to_bytes)))),
        Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
        None => Poll::Ready(None),
    }
}

impl<B> Body for ConditionalBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::PassThrough { body } => poll_inner(body, cx),
            KindProj::Replay {
                chunks,
                remaining,
                trailers,
                rest,
            } => {
                if let Some(chunk) = chunks.pop() {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(t) = trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(*t))));
                }
                let Some(body) = rest.as_mut() else {
                    return Poll::Ready(None);
                };
                let next = ready!(poll_inner(body.as_mut(), cx));
                if next.is_none() {
                    *rest = None;
                }
                Poll::Ready(next)
            }
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Empty { .. } => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::PassThrough { body } => body.is_end_stream(),
            Kind::Replay {
                chunks,
                trailers,
                rest,
                ..
            } => {
                chunks.is_empty()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
            Kind::Full { data } => data.is_none(),
            Kind::Empty { .. } => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint()
    }
}

impl<B: Body> ConditionalBody<B> {
    /// The size hint, without the error conversion bound of the `Body` impl.
    pub(crate) fn hint(&self) -> SizeHint {
        match &self.kind {
            Kind::PassThrough { body } => body.size_hint(),
            Kind::Replay {
                remaining,
                trailers,
                rest,
                ..
            } => match rest {
                Some(body) => {
                    let inner = body.size_hint();
                    let mut hint = SizeHint::new();
                    hint.set_lower(inner.lower().saturating_add(*remaining));
                    if let Some(upper) = inner.upper() {
                        hint.set_upper(upper.saturating_add(*remaining));
                    }
                    hint
                }
                // Trailers travel only with chunked HTTP/1.1 framing; an exact size would
                // let the server pick Content-Length framing and drop them.
                None if trailers.is_some() => {
                    let mut hint = SizeHint::new();
                    hint.set_lower(*remaining);
                    hint
                }
                None => SizeHint::with_exact(*remaining),
            },
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Empty { hint } => *hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn held(parts: &[Bytes], trailers: Option<HeaderMap>) -> Held {
        let mut body = StreamBody::new(futures_util::stream::iter(
            parts
                .iter()
                .cloned()
                .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)))
                .chain(trailers.map(|t| Ok(Frame::trailers(t)))),
        ));
        let mut buf = crate::buffer::HashBuffer::new(&Default::default(), usize::MAX, true);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let filled = buf.poll_fill(Pin::new(&mut body), &mut cx);
        assert!(matches!(filled, Poll::Ready(crate::buffer::Filled::End)));
        buf.into_held()
    }

    #[tokio::test]
    async fn replay_yields_the_same_chunks_then_trailers() {
        let a = Bytes::from_static(b"hello ");
        let b = Bytes::from_static(b"world");
        let mut t = HeaderMap::new();
        t.insert("x-t", "1".parse().unwrap());
        let body: ConditionalBody<Full<Bytes>> =
            ConditionalBody::replay(held(&[a.clone(), b.clone()], Some(t)), None);
        assert_eq!(body.size_hint().lower(), 11);
        assert_eq!(
            body.size_hint().upper(),
            None,
            "trailers need chunked framing"
        );
        let mut body = std::pin::pin!(body);
        let f1 = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(f1.as_ptr(), a.as_ptr(), "the same allocation, not a copy");
        let f2 = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(f2, b);
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["x-t"], "1");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn replay_without_trailers_has_an_exact_size() {
        let body: ConditionalBody<Full<Bytes>> =
            ConditionalBody::replay(held(&[Bytes::from_static(b"abc")], None), None);
        assert_eq!(body.size_hint().exact(), Some(3));
    }

    #[tokio::test]
    async fn replay_then_rest_of_stream() {
        let rest = StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"c"))),
            Ok(Frame::data(Bytes::from_static(b"d"))),
        ]));
        let body = ConditionalBody::replay(
            held(&[Bytes::from_static(b"ab")], None),
            Some(Box::pin(rest)),
        );
        assert_eq!(
            body.size_hint().exact(),
            None,
            "the rest is of unknown size"
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abcd");
    }

    #[test]
    fn empty_reports_the_hint_it_was_given() {
        let b: ConditionalBody<Full<Bytes>> = ConditionalBody::empty(SizeHint::with_exact(42));
        assert!(b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(42));
        let f: ConditionalBody<Full<Bytes>> = ConditionalBody::full(Bytes::new());
        assert!(f.is_end_stream());
    }
}
