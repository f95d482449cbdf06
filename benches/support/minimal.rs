//! The least a layer that tags bodies with SHA-256 must do, written out by hand with the
//! crates the layer uses (the criterion bench and `benches/instructions.rs` include this
//! file): collect the body, hash it, print the tag into a header value, replay the bytes.
//! No conditions read, no predicate, no size or time limit, no `HEAD`, no errors handled —
//! a yardstick for the layer's fixed cost, which the floor (hashing alone) is not.

use std::convert::Infallible;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures_util::future::Ready;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use tower::{service_fn, Service};

/// `inner`, wrapped by the minimal tagging layer.
pub fn minimal<S, B>(
    mut inner: S,
) -> impl Service<Request<String>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone
where
    S: Service<
            Request<String>,
            Response = Response<B>,
            Error = Infallible,
            Future = Ready<Result<Response<B>, Infallible>>,
        > + Clone,
    B: Body<Data = Bytes, Error = Infallible>,
{
    service_fn(move |req: Request<String>| {
        let response = inner.call(req);
        async move {
            let (mut head, body) = response.await?.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let mut tag = [b'"'; 45];
            URL_SAFE_NO_PAD
                .encode_slice(Sha256::digest(&bytes), &mut tag[1..44])
                .expect("43 bytes hold a SHA-256 digest in base64url");
            let value = HeaderValue::from_bytes(&tag).expect("base64url is a valid header value");
            head.headers.insert(http::header::ETAG, value);
            Ok(Response::from_parts(head, Full::new(bytes)))
        }
    })
}
