//! Entity tags (RFC 9110 §8.8.3): parsing, printing, comparison, and strong tags computed
//! from content.
//!
//! ```
//! use tower_conditional::{EntityTag, ETagHasher};
//!
//! let tag: EntityTag = "W/\"v1\"".parse().unwrap();
//! assert!(tag.is_weak());
//! assert_eq!(tag.opaque(), b"v1");
//! assert_eq!(tag.to_string(), "W/\"v1\"");
//!
//! // A strong tag from content does not depend on how the bytes were chunked.
//! let mut hasher = ETagHasher::new();
//! hasher.update(b"hello ");
//! hasher.update(b"world");
//! assert_eq!(hasher.finish(), EntityTag::from_content(b"hello world"));
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use sha2::{Digest as _, Sha256};

/// An entity tag: an opaque validator, strong (`"xyz"`) or weak (`W/"xyz"`).
///
/// The value is kept in its header form, so turning it into a [`HeaderValue`] costs no
/// parsing and, for a tag that came from a header, no copy.
///
/// Equality (`==`) is exact: same weakness, same opaque bytes. For the comparisons
/// RFC 9110 §8.8.3.2 defines, use [`EntityTag::strong_eq`] and [`EntityTag::weak_eq`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    weak: bool,
    /// The whole field form: optional `W/`, then the quoted opaque part.
    raw: HeaderValue,
}

/// The error returned when a value is not an entity tag per RFC 9110 §8.8.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEntityTag {
    _priv: (),
}

impl InvalidEntityTag {
    fn new() -> Self {
        InvalidEntityTag { _priv: () }
    }
}

impl fmt::Display for InvalidEntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid entity tag (expected \"opaque\" or W/\"opaque\")")
    }
}

impl std::error::Error for InvalidEntityTag {}

/// `etagc = %x21 / %x23-7E / obs-text` (RFC 9110 §8.8.3).
#[inline(always)]
pub(crate) fn is_etagc(b: u8) -> bool {
    // Everything from `!` up, but `"` and DEL; written without branches so that a run of
    // bytes is checked with vector instructions.
    (b > 0x20) & (b != 0x22) & (b != 0x7f)
}

/// Splits `bytes` (already trimmed) into (weak, opaque) when it is exactly one entity tag.
pub(crate) fn split_tag(bytes: &[u8]) -> Option<(bool, &[u8])> {
    let (weak, quoted) = match bytes {
        [b'W', b'/', rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    match quoted {
        [b'"', opaque @ .., b'"'] if opaque.iter().all(|&b| is_etagc(b)) => Some((weak, opaque)),
        _ => None,
    }
}

impl EntityTag {
    /// A strong entity tag with the given opaque part (without quotes).
    ///
    /// Fails when `opaque` contains a character RFC 9110 does not allow in a tag (`"`,
    /// whitespace, controls).
    ///
    /// ```
    /// # use tower_conditional::EntityTag;
    /// let tag = EntityTag::strong("v2").unwrap();
    /// assert_eq!(tag.to_string(), "\"v2\"");
    /// assert!(EntityTag::strong("has space").is_err());
    /// ```
    pub fn strong(opaque: &str) -> Result<Self, InvalidEntityTag> {
        Self::build(false, opaque.as_bytes())
    }

    /// A weak entity tag with the given opaque part (without quotes).
    ///
    /// ```
    /// # use tower_conditional::EntityTag;
    /// let tag = EntityTag::weak("v2").unwrap();
    /// assert_eq!(tag.to_string(), "W/\"v2\"");
    /// ```
    pub fn weak(opaque: &str) -> Result<Self, InvalidEntityTag> {
        Self::build(true, opaque.as_bytes())
    }

    /// A tag from its parts; `opaque` is checked against `etagc`.
    pub(crate) fn build(weak: bool, opaque: &[u8]) -> Result<Self, InvalidEntityTag> {
        if !opaque.iter().all(|&b| is_etagc(b)) {
            return Err(InvalidEntityTag::new());
        }
        let mut raw = Vec::with_capacity(opaque.len() + 4);
        if weak {
            raw.extend_from_slice(b"W/");
        }
        raw.push(b'"');
        raw.extend_from_slice(opaque);
        raw.push(b'"');
        let raw = HeaderValue::from_maybe_shared(bytes::Bytes::from(raw))
            .map_err(|_| InvalidEntityTag::new())?;
        Ok(EntityTag { weak, raw })
    }

    /// The strong tag of `content`: SHA-256 of the bytes, encoded as unpadded base64 with the
    /// URL-safe alphabet (RFC 4648 §5: `A–Z a–z 0–9 - _`), 43 characters between quotes.
    ///
    /// ```
    /// # use tower_conditional::EntityTag;
    /// let tag = EntityTag::from_content(b"");
    /// assert_eq!(tag.to_string(), "\"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"");
    /// ```
    pub fn from_content(content: &[u8]) -> Self {
        Self::from_content_with(&HashAlgorithm::Sha256, content)
    }

    /// The strong tag of `content` under `algorithm`; what a layer configured with
    /// [`hash_algorithm`](crate::ConditionalLayer::hash_algorithm) computes.
    pub fn from_content_with(algorithm: &HashAlgorithm, content: &[u8]) -> Self {
        let mut hasher = ETagHasher::with_algorithm(algorithm);
        hasher.update(content);
        hasher.finish()
    }

    /// Parses one entity tag from header bytes. Surrounding whitespace is allowed.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidEntityTag> {
        let trimmed = bytes.trim_ascii();
        let (weak, opaque) = split_tag(trimmed).ok_or_else(InvalidEntityTag::new)?;
        Self::build(weak, opaque)
    }

    /// Whether this is a weak tag (`W/"…"`).
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque part, without `W/` and quotes.
    pub fn opaque(&self) -> &[u8] {
        let bytes = self.raw.as_bytes();
        let start = if self.weak { 3 } else { 1 };
        &bytes[start..bytes.len() - 1]
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both tags strong and their opaque parts equal.
    ///
    /// ```
    /// # use tower_conditional::EntityTag;
    /// let a = EntityTag::strong("1").unwrap();
    /// let w = EntityTag::weak("1").unwrap();
    /// assert!(a.strong_eq(&a));
    /// assert!(!a.strong_eq(&w));
    /// assert!(a.weak_eq(&w));
    /// ```
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque() == other.opaque()
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): opaque parts equal, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque() == other.opaque()
    }

    /// The tag as a header value (a cheap clone).
    pub fn to_header_value(&self) -> HeaderValue {
        self.raw.clone()
    }

    /// The tag in header form, e.g. `W/"abc"`, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.raw.as_bytes()
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // obs-text bytes are not UTF-8; show them replaced rather than fail.
        f.write_str(&String::from_utf8_lossy(self.raw.as_bytes()))
    }
}

impl fmt::Debug for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityTag({self})")
    }
}

impl FromStr for EntityTag {
    type Err = InvalidEntityTag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EntityTag::parse(s.as_bytes())
    }
}

impl TryFrom<&HeaderValue> for EntityTag {
    type Error = InvalidEntityTag;

    fn try_from(value: &HeaderValue) -> Result<Self, Self::Error> {
        let bytes = value.as_bytes();
        match split_tag(bytes) {
            // Already exactly a tag: keep the header value itself, no copy.
            Some((weak, _)) => Ok(EntityTag {
                weak,
                raw: value.clone(),
            }),
            None => EntityTag::parse(bytes),
        }
    }
}

impl TryFrom<HeaderValue> for EntityTag {
    type Error = InvalidEntityTag;

    fn try_from(value: HeaderValue) -> Result<Self, Self::Error> {
        EntityTag::try_from(&value)
    }
}

impl From<EntityTag> for HeaderValue {
    fn from(tag: EntityTag) -> Self {
        tag.raw
    }
}

impl From<&EntityTag> for HeaderValue {
    fn from(tag: &EntityTag) -> Self {
        tag.raw.clone()
    }
}

/// The content hash behind the tags the layer computes.
///
/// SHA-256 and BLAKE3 produce 32 bytes, printed as 43 characters of unpadded base64url
/// between quotes. [`HashAlgorithm::custom`] plugs in any other incremental hash; the layer
/// keeps the encoding, the quoting and the strong/weak handling.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum HashAlgorithm {
    /// SHA-256 (the default): the tag is what any SHA-256 tool computes for the bytes.
    #[default]
    Sha256,
    /// BLAKE3 (cargo feature `blake3`): several times faster on large bodies. Tags differ
    /// from SHA-256 tags, so switching invalidates what clients hold (once).
    #[cfg(feature = "blake3")]
    #[cfg_attr(docsrs, doc(cfg(feature = "blake3")))]
    Blake3,
    /// BLAKE3 in its keyed mode (cargo feature `blake3`): tags that only a holder of the
    /// key can compute, so a tag confirms nothing about content to someone who guesses it.
    /// See [`HashAlgorithm::blake3_keyed`].
    #[cfg(feature = "blake3")]
    #[cfg_attr(docsrs, doc(cfg(feature = "blake3")))]
    Blake3Keyed(Arc<[u8; 32]>),
    /// A hash of your choice; see [`HashAlgorithm::custom`].
    Custom(Arc<dyn ContentHash>),
}

impl HashAlgorithm {
    /// BLAKE3 keyed with a deployment secret: without the key, nobody can tell whether a
    /// guessed body has a given tag (a 304 or a 412 then confirms nothing about content).
    /// Lookups compute tags with [`EntityTag::from_content_with`] and the same algorithm.
    ///
    /// ```
    /// # #[cfg(feature = "blake3")] {
    /// use tower_conditional::{EntityTag, HashAlgorithm};
    ///
    /// let secret = [7u8; 32]; // from your secret store
    /// let keyed = HashAlgorithm::blake3_keyed(secret);
    /// assert_ne!(
    ///     EntityTag::from_content_with(&keyed, b"salary: 100"),
    ///     EntityTag::from_content_with(&HashAlgorithm::Blake3, b"salary: 100"),
    /// );
    /// # }
    /// ```
    #[cfg(feature = "blake3")]
    #[cfg_attr(docsrs, doc(cfg(feature = "blake3")))]
    pub fn blake3_keyed(key: [u8; 32]) -> Self {
        HashAlgorithm::Blake3Keyed(Arc::new(key))
    }

    /// A hash of your choice, e.g. a keyed hash (an HMAC with a deployment secret, so a tag
    /// confirms nothing about content to someone who can guess it) or a faster one.
    ///
    /// **A non-cryptographic hash (xxHash, FNV, …) lets an attacker craft two bodies with
    /// one tag**: a cache or a client holding the first would take the second as unchanged,
    /// and an `If-Match` write validated against the first would win against the second.
    /// Use one only where nobody who can write content is an adversary of somebody who
    /// reads it. Each tag costs one allocation for the boxed hasher.
    ///
    /// ```
    /// use tower_conditional::{ContentHash, ContentHasher, Digest, EntityTag, HashAlgorithm};
    ///
    /// /// FNV-1a, 64 bits: fast and NOT collision resistant (see above).
    /// struct Fnv;
    /// struct FnvState(u64);
    ///
    /// impl ContentHash for Fnv {
    ///     fn hasher(&self) -> Box<dyn ContentHasher> {
    ///         Box::new(FnvState(0xcbf2_9ce4_8422_2325))
    ///     }
    /// }
    ///
    /// impl ContentHasher for FnvState {
    ///     fn update(&mut self, bytes: &[u8]) {
    ///         for &b in bytes {
    ///             self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    ///         }
    ///     }
    ///     fn finish(self: Box<Self>) -> Digest {
    ///         Digest::new(&self.0.to_be_bytes())
    ///     }
    /// }
    ///
    /// let fnv = HashAlgorithm::custom(Fnv);
    /// let tag = EntityTag::from_content_with(&fnv, b"hello");
    /// assert_eq!(tag.opaque().len(), 11); // 8 bytes, base64url
    /// ```
    pub fn custom<H: ContentHash>(hash: H) -> Self {
        HashAlgorithm::Custom(Arc::new(hash))
    }
}

impl fmt::Debug for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashAlgorithm::Sha256 => f.write_str("Sha256"),
            #[cfg(feature = "blake3")]
            HashAlgorithm::Blake3 => f.write_str("Blake3"),
            #[cfg(feature = "blake3")]
            HashAlgorithm::Blake3Keyed(_) => f.write_str("Blake3Keyed(..)"),
            HashAlgorithm::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A content hash for [`HashAlgorithm::custom`]: makes one [`ContentHasher`] per body.
///
/// Each hashed body costs one `hasher()` call, and the state comes back to
/// [`ContentHasher::finish`] in its box. A hash whose state is large (XXH3's is about half a
/// KiB) can keep finished states for reuse instead of allocating and initialising one per
/// response: `benches/support/xxh3.rs` does it with a small per-thread pool. A state dropped
/// without `finish` (a body that failed or outgrew `max_buffer`) is simply freed.
pub trait ContentHash: Send + Sync + 'static {
    /// A hasher that has seen no bytes.
    fn hasher(&self) -> Box<dyn ContentHasher>;
}

/// One body's incremental hash state; see [`HashAlgorithm::custom`].
pub trait ContentHasher: Send {
    /// Feeds the next bytes of the body. The result must not depend on how the body was
    /// split into chunks.
    fn update(&mut self, bytes: &[u8]);

    /// The digest of every byte fed.
    fn finish(self: Box<Self>) -> Digest;
}

/// A digest of at most 64 bytes, printed in a tag as unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    bytes: [u8; Digest::MAX],
    len: u8,
}

impl Digest {
    /// The longest digest kept; longer input is truncated to it.
    pub const MAX: usize = 64;

    /// A digest of these bytes (the first 64, if there are more).
    pub fn new(bytes: &[u8]) -> Self {
        let len = bytes.len().min(Self::MAX);
        let mut digest = Digest {
            bytes: [0; Self::MAX],
            len: len as u8,
        };
        digest.bytes[..len].copy_from_slice(&bytes[..len]);
        digest
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Digest").field(&self.as_bytes()).finish()
    }
}

/// Computes [`EntityTag::from_content`] incrementally, chunk by chunk.
///
/// The result depends only on the concatenated bytes, never on where chunks were split.
pub struct ETagHasher {
    state: HasherState,
}

enum HasherState {
    Sha256(Sha256),
    // Boxed: BLAKE3's state is ~2 KiB, and the hasher lives inline in response futures.
    #[cfg(feature = "blake3")]
    Blake3(Box<Blake3Staged>),
    Custom(Box<dyn ContentHasher>),
}

/// BLAKE3 fed through a staging buffer: its SIMD paths need several 1 KiB chunks in one
/// `update` (and the tree keeps them aligned only from the start), so bodies that arrive in
/// small pieces are gathered first and hash as fast as one large piece. A first piece that
/// comes as `Bytes` is only kept (a body in one piece, the common case, is hashed from it
/// at the end, no buffer); the buffer is allocated (not zeroed) when a second small piece
/// follows. Pieces of 16 KiB or more go straight to the hasher when nothing is staged.
#[cfg(feature = "blake3")]
struct Blake3Staged {
    hasher: blake3::Hasher,
    stage: Vec<u8>,
    /// The first piece, kept (not copied) until another arrives.
    first: Option<bytes::Bytes>,
}

#[cfg(feature = "blake3")]
const BLAKE3_STAGE: usize = 16 * 1024;

#[cfg(feature = "blake3")]
impl Blake3Staged {
    fn new(hasher: blake3::Hasher) -> Box<Self> {
        Box::new(Blake3Staged {
            hasher,
            stage: Vec::new(),
            first: None,
        })
    }

    /// Whether no byte was fed yet.
    fn is_fresh(&self) -> bool {
        self.first.is_none() && self.stage.is_empty() && self.hasher.count() == 0
    }

    fn update_bytes(&mut self, bytes: &bytes::Bytes) {
        if self.is_fresh() {
            self.first = Some(bytes.clone());
        } else {
            self.update(bytes);
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        if let Some(first) = self.first.take() {
            self.update(&first);
        }
        if self.stage.is_empty() && bytes.len() >= BLAKE3_STAGE {
            self.hasher.update(bytes);
            return;
        }
        if self.stage.capacity() == 0 {
            self.stage.reserve_exact(BLAKE3_STAGE);
        }
        while !bytes.is_empty() {
            let n = (BLAKE3_STAGE - self.stage.len()).min(bytes.len());
            self.stage.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.stage.len() == BLAKE3_STAGE {
                self.hasher.update(&self.stage);
                self.stage.clear();
                if bytes.len() >= BLAKE3_STAGE {
                    self.hasher.update(bytes);
                    return;
                }
            }
        }
    }

    fn finish(mut self) -> [u8; 32] {
        if let Some(first) = self.first.take() {
            self.hasher.update(&first);
        }
        self.hasher.update(&self.stage);
        *self.hasher.finalize().as_bytes()
    }
}

impl Default for ETagHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ETagHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match self.state {
            HasherState::Sha256(_) => "Sha256",
            #[cfg(feature = "blake3")]
            HasherState::Blake3(_) => "Blake3",
            HasherState::Custom(_) => "Custom",
        };
        f.debug_struct("ETagHasher")
            .field("algorithm", &algorithm)
            .finish_non_exhaustive()
    }
}

impl ETagHasher {
    /// A SHA-256 hasher that has seen no bytes.
    pub fn new() -> Self {
        ETagHasher {
            state: HasherState::Sha256(Sha256::new()),
        }
    }

    /// A hasher of the given algorithm that has seen no bytes.
    pub fn with_algorithm(algorithm: &HashAlgorithm) -> Self {
        let state = match algorithm {
            HashAlgorithm::Sha256 => HasherState::Sha256(Sha256::new()),
            #[cfg(feature = "blake3")]
            HashAlgorithm::Blake3 => HasherState::Blake3(Blake3Staged::new(blake3::Hasher::new())),
            #[cfg(feature = "blake3")]
            HashAlgorithm::Blake3Keyed(key) => {
                HasherState::Blake3(Blake3Staged::new(blake3::Hasher::new_keyed(key)))
            }
            HashAlgorithm::Custom(hash) => HasherState::Custom(hash.hasher()),
        };
        ETagHasher { state }
    }

    /// Feeds the next bytes of the content.
    pub fn update(&mut self, chunk: &[u8]) {
        match &mut self.state {
            HasherState::Sha256(h) => h.update(chunk),
            #[cfg(feature = "blake3")]
            HasherState::Blake3(h) => h.update(chunk),
            HasherState::Custom(h) => h.update(chunk),
        }
    }

    /// [`update`](Self::update) with a chunk the layer holds as `Bytes`: BLAKE3 keeps a first
    /// chunk instead of copying it into its staging buffer.
    pub(crate) fn update_bytes(&mut self, chunk: &bytes::Bytes) {
        match &mut self.state {
            #[cfg(feature = "blake3")]
            HasherState::Blake3(h) => h.update_bytes(chunk),
            _ => self.update(chunk),
        }
    }

    /// The strong tag of every byte fed so far.
    pub fn finish(self) -> EntityTag {
        TagText::new(&self.finish_digest(), false).into_tag()
    }

    /// The digest of every byte fed so far, before it is printed as a tag.
    pub(crate) fn finish_digest(self) -> Digest {
        match self.state {
            HasherState::Sha256(h) => Digest::new(&h.finalize()),
            #[cfg(feature = "blake3")]
            HasherState::Blake3(h) => Digest::new(&h.finish()),
            HasherState::Custom(h) => h.finish(),
        }
    }
}

/// A computed tag printed on the stack (`W/`, quotes, base64url of the digest): compared
/// with a tag the client sent before a header value is allocated for it.
pub(crate) struct TagText {
    weak: bool,
    // At most 64 bytes -> 86 base64 characters, plus `W/` and two quotes.
    bytes: [u8; 90],
    len: usize,
}

impl TagText {
    pub(crate) fn new(digest: &Digest, weak: bool) -> Self {
        let mut bytes = [0u8; 90];
        let mut at = 0;
        if weak {
            bytes[..2].copy_from_slice(b"W/");
            at = 2;
        }
        bytes[at] = b'"';
        at += 1;
        at += URL_SAFE_NO_PAD
            .encode_slice(digest.as_bytes(), &mut bytes[at..at + 86])
            .expect("86 bytes hold unpadded base64 of 64 bytes");
        bytes[at] = b'"';
        TagText {
            weak,
            bytes,
            len: at + 1,
        }
    }

    /// The tag, with `known`'s bytes (no allocation) when `known` is exactly this tag — the
    /// `If-None-Match` a revalidating client sent, say.
    pub(crate) fn into_tag_like(self, known: Option<&HeaderValue>) -> EntityTag {
        match known {
            Some(value) if value.as_bytes() == &self.bytes[..self.len] => {
                let mut raw = value.clone();
                raw.set_sensitive(false);
                EntityTag {
                    weak: self.weak,
                    raw,
                }
            }
            _ => self.into_tag(),
        }
    }

    pub(crate) fn into_tag(self) -> EntityTag {
        EntityTag {
            weak: self.weak,
            raw: HeaderValue::from_bytes(&self.bytes[..self.len])
                .expect("base64url characters are valid header bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A computed tag takes the bytes of the tag a client sent only when they are exactly
    /// its own: the weak form of a strong tag (or the reverse) is printed afresh.
    #[test]
    fn a_computed_tag_reuses_only_identical_bytes() {
        let mut hasher = ETagHasher::new();
        hasher.update(b"abc");
        let digest = hasher.finish_digest();
        let strong = EntityTag::from_content(b"abc");
        let same = strong.to_header_value();
        let reused = TagText::new(&digest, false).into_tag_like(Some(&same));
        assert_eq!(reused, strong);
        assert_eq!(reused.as_bytes().as_ptr(), same.as_bytes().as_ptr());

        let weak_form = HeaderValue::try_from(format!("W/{strong}")).unwrap();
        let fresh = TagText::new(&digest, false).into_tag_like(Some(&weak_form));
        assert_eq!(fresh, strong);
        assert!(!fresh.is_weak());
        assert_ne!(fresh.as_bytes().as_ptr(), weak_form.as_bytes().as_ptr());

        let weak = TagText::new(&digest, true).into_tag_like(Some(&same));
        assert!(weak.is_weak());
        assert_eq!(weak.to_string(), format!("W/{strong}"));
        let weak_reused = TagText::new(&digest, true).into_tag_like(Some(&weak_form));
        assert_eq!(weak_reused, weak);
        assert_eq!(
            weak_reused.as_bytes().as_ptr(),
            weak_form.as_bytes().as_ptr()
        );
    }

    /// Every algorithm: any chunking of the same bytes gives the same tag.
    #[test]
    fn tags_do_not_depend_on_chunking() {
        struct Sum;
        struct SumState(u64);
        impl ContentHash for Sum {
            fn hasher(&self) -> Box<dyn ContentHasher> {
                Box::new(SumState(0))
            }
        }
        impl ContentHasher for SumState {
            fn update(&mut self, bytes: &[u8]) {
                for &b in bytes {
                    self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
                }
            }
            fn finish(self: Box<Self>) -> Digest {
                Digest::new(&self.0.to_be_bytes())
            }
        }
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut algorithms = vec![HashAlgorithm::Sha256, HashAlgorithm::custom(Sum)];
        #[cfg(feature = "blake3")]
        algorithms.extend([HashAlgorithm::Blake3, HashAlgorithm::blake3_keyed([9; 32])]);
        for algorithm in &algorithms {
            let whole = EntityTag::from_content_with(algorithm, &data);
            for chunk in [1, 511, 512, 4096, 16 * 1024, 16 * 1024 + 1, 40_000] {
                let mut h = ETagHasher::with_algorithm(algorithm);
                for part in data.chunks(chunk) {
                    h.update(part);
                }
                assert_eq!(h.finish(), whole, "{algorithm:?} in chunks of {chunk}");
            }
            // Uneven pieces around the staging size.
            let mut h = ETagHasher::with_algorithm(algorithm);
            let (a, rest) = data.split_at(100);
            let (b, c) = rest.split_at(20_000);
            h.update(a);
            h.update(b);
            h.update(c);
            assert_eq!(h.finish(), whole, "{algorithm:?} uneven");
        }
        #[cfg(feature = "blake3")]
        assert_eq!(
            EntityTag::from_content_with(&HashAlgorithm::Blake3, b"abc").opaque(),
            URL_SAFE_NO_PAD
                .encode(blake3::hash(b"abc").as_bytes())
                .as_bytes()
        );
    }

    #[test]
    fn parses_strong_weak_and_empty() {
        let s: EntityTag = "\"xyzzy\"".parse().unwrap();
        assert!(!s.is_weak());
        assert_eq!(s.opaque(), b"xyzzy");
        let w: EntityTag = "W/\"xyzzy\"".parse().unwrap();
        assert!(w.is_weak());
        let e: EntityTag = "\"\"".parse().unwrap();
        assert_eq!(e.opaque(), b"");
        let padded: EntityTag = "  \"a\"\t".parse().unwrap();
        assert_eq!(padded.to_string(), "\"a\"");
    }

    #[test]
    fn rejects_what_the_grammar_rejects() {
        for bad in [
            "xyzzy",
            "\"unterminated",
            "w/\"lowercase-w\"", // §8.8.3: the weak indicator is case-sensitive
            "W/xyzzy",
            "\"a\"b\"",
            "\"a b\"",
            "\"a\",\"b\"",
            "*",
            "",
            "W/",
            "\"\x7f\"",
        ] {
            assert!(
                bad.parse::<EntityTag>().is_err(),
                "{bad:?} should not parse"
            );
        }
        assert!(EntityTag::parse(b"\"tab\tinside\"").is_err());
    }

    #[test]
    fn obs_text_and_commas_are_allowed_inside() {
        let tag = EntityTag::parse(b"\"a,b\xe9\"").unwrap();
        assert_eq!(tag.opaque(), b"a,b\xe9");
        assert_eq!(tag.as_bytes(), b"\"a,b\xe9\"");
    }

    #[test]
    fn comparison_table_from_rfc_9110_section_8_8_3_2() {
        let w1 = EntityTag::weak("1").unwrap();
        let w2 = EntityTag::weak("2").unwrap();
        let s1 = EntityTag::strong("1").unwrap();
        // ETag 1 | ETag 2 | strong | weak
        let rows = [
            (&w1, &w1, false, true),
            (&w1, &w2, false, false),
            (&w1, &s1, false, true),
            (&s1, &s1, true, true),
        ];
        for (a, b, strong, weak) in rows {
            assert_eq!(a.strong_eq(b), strong, "{a} vs {b} strong");
            assert_eq!(a.weak_eq(b), weak, "{a} vs {b} weak");
            assert_eq!(b.strong_eq(a), strong);
            assert_eq!(b.weak_eq(a), weak);
        }
    }

    #[test]
    fn header_value_round_trip_keeps_bytes() {
        let hv = HeaderValue::from_static("W/\"abc\"");
        let tag = EntityTag::try_from(&hv).unwrap();
        assert!(tag.is_weak());
        assert_eq!(HeaderValue::from(tag), hv);
        let spaced = HeaderValue::from_static(" \"abc\" ");
        assert_eq!(
            EntityTag::try_from(spaced).unwrap().to_header_value(),
            "\"abc\""
        );
    }

    #[test]
    fn from_content_matches_an_independent_digest() {
        let body = b"The quick brown fox";
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(body));
        assert_eq!(
            EntityTag::from_content(body).to_string(),
            format!("\"{expected}\"")
        );
    }

    #[cfg(feature = "blake3")]
    #[test]
    fn blake3_tags_have_the_same_form_and_differ_from_sha256() {
        let b = EntityTag::from_content_with(&HashAlgorithm::Blake3, b"abc");
        let expected = URL_SAFE_NO_PAD.encode(blake3::hash(b"abc").as_bytes());
        assert_eq!(b.to_string(), format!("\"{expected}\""));
        assert_ne!(b, EntityTag::from_content(b"abc"));
        let mut h = ETagHasher::with_algorithm(&HashAlgorithm::Blake3);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), b);
    }

    #[test]
    fn hasher_is_independent_of_chunking() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let whole = EntityTag::from_content(&data);
        for size in [1, 7, 64, 4096, 9_999] {
            let mut h = ETagHasher::new();
            data.chunks(size).for_each(|c| h.update(c));
            assert_eq!(h.finish(), whole, "chunk size {size}");
        }
    }
}
