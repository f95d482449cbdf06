//! What one [`ConditionalLayer`](crate::ConditionalLayer) was configured with, shared by
//! every service it makes and every response future those make. The layer writes it; the
//! service and the future only read it, so nothing here depends on them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::etag::{Digest, EntityTag, HashAlgorithm, TagText};
use crate::precondition::Options;
use crate::response::Rejection;

/// The default [`ConditionalLayer::max_buffer`](crate::ConditionalLayer::max_buffer): 1 MiB.
pub const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;

/// The default [`ConditionalLayer::max_buffer_time`](crate::ConditionalLayer::max_buffer_time).
pub const DEFAULT_MAX_BUFFER_TIME: Duration = Duration::from_millis(500);

pub(crate) type RejectFn = dyn Fn(&Rejection) -> http::Response<Bytes> + Send + Sync;
pub(crate) type KeyFn = dyn Fn(&Uri, &HeaderMap) -> String + Send + Sync;

/// Configuration shared by every clone of one layer's services.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_buffer: usize,
    pub(crate) max_buffer_time: Option<Duration>,
    pub(crate) head_as_get: bool,
    pub(crate) service_checks_if_range: bool,
    pub(crate) require_preconditions: bool,
    pub(crate) required_methods: Vec<Method>,
    pub(crate) lookup_reads: bool,
    pub(crate) options: Options,
    pub(crate) locks: Option<Arc<LockTable>>,
    pub(crate) lock_key: Option<Arc<KeyFn>>,
    pub(crate) on_reject: Option<Arc<RejectFn>>,
    pub(crate) creating_methods: Vec<Method>,
    pub(crate) hash: HashAlgorithm,
    pub(crate) disclose_current_etag: bool,
    pub(crate) weak_etags: bool,
    pub(crate) last_modified_from_lookup: bool,
    pub(crate) outcome_extension: bool,
    pub(crate) warned_invalid_etag: Arc<AtomicBool>,
    /// Set once a timer could not be made (no Tokio runtime, or one without its timer).
    pub(crate) no_timers: Arc<AtomicBool>,
}

impl Config {
    pub(crate) fn render(&self, rejection: &Rejection) -> http::Response<Bytes> {
        match &self.on_reject {
            Some(f) => f(rejection),
            None => rejection.default_response(),
        }
    }

    /// Whether an unconditional request with this method is answered 428.
    pub(crate) fn requires_precondition(&self, method: &Method) -> bool {
        self.require_preconditions && self.required_methods.contains(method)
    }

    /// The key that serializes writes to the target of a request.
    pub(crate) fn lock_key(&self, uri: &Uri, headers: &HeaderMap) -> String {
        match &self.lock_key {
            Some(f) => f(uri, headers),
            None => normalized_path(uri.path()),
        }
    }

    /// The tag the layer computed from `digest`, as it is sent (weak under `weak_etags`).
    /// When `sent` is exactly that tag (a revalidation's `If-None-Match`), its bytes are
    /// reused instead of allocating a header value.
    pub(crate) fn computed(&self, digest: &Digest, sent: Option<&HeaderValue>) -> EntityTag {
        TagText::new(digest, self.weak_etags).into_tag_like(sent)
    }

    /// A timer for `max_buffer_time`, or `None` where Tokio has none to give: outside a
    /// runtime, or in one built without `enable_time` (where making one panics — caught here
    /// once per layer, logged, and not tried again).
    #[cfg(feature = "tokio")]
    pub(crate) fn sleep(&self, limit: Duration) -> Option<std::pin::Pin<Box<tokio::time::Sleep>>> {
        if self.no_timers.load(Ordering::Relaxed) || tokio::runtime::Handle::try_current().is_err()
        {
            return None;
        }
        let made = std::panic::catch_unwind(|| Box::pin(tokio::time::sleep(limit)));
        if made.is_err() {
            self.no_timers.store(true, Ordering::Relaxed);
            tracing::warn!(
                "the Tokio runtime has no timer (enable_time): max_buffer_time is not applied, \
                 bodies are held until they end or outgrow max_buffer"
            );
        }
        made.ok()
    }

    /// Logs an invalid or repeated `ETag` from the service, once per layer.
    pub(crate) fn warn_invalid_etag(&self) {
        if !self.warned_invalid_etag.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the service sent an invalid or repeated ETag field; it is ignored and the body \
                 hashed instead (logged once per layer)"
            );
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_buffer: DEFAULT_MAX_BUFFER,
            max_buffer_time: Some(DEFAULT_MAX_BUFFER_TIME),
            head_as_get: true,
            service_checks_if_range: false,
            require_preconditions: false,
            required_methods: vec![Method::PUT, Method::PATCH, Method::DELETE],
            lookup_reads: false,
            options: Options::default(),
            locks: None,
            lock_key: None,
            on_reject: None,
            creating_methods: vec![Method::PUT],
            hash: HashAlgorithm::Sha256,
            disclose_current_etag: false,
            weak_etags: false,
            last_modified_from_lookup: false,
            outcome_extension: false,
            warned_invalid_etag: Arc::new(AtomicBool::new(false)),
            no_timers: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_buffer", &self.max_buffer)
            .field("max_buffer_time", &self.max_buffer_time)
            .field("head_as_get", &self.head_as_get)
            .field("service_checks_if_range", &self.service_checks_if_range)
            .field("require_preconditions", &self.require_preconditions)
            .field("required_methods", &self.required_methods)
            .field("lookup_reads", &self.lookup_reads)
            .field("weak_if_match", &self.options.weak_if_match)
            .field("serialize_writes", &self.locks.is_some())
            .field("on_reject", &self.on_reject.as_ref().map(|_| ".."))
            .field("creating_methods", &self.creating_methods)
            .field("hash", &self.hash)
            .field("disclose_current_etag", &self.disclose_current_etag)
            .field("weak_etags", &self.weak_etags)
            .field("last_modified_from_lookup", &self.last_modified_from_lookup)
            .finish()
    }
}

/// A path as a lock key: percent-encoded unreserved characters decoded and the remaining
/// escapes in upper case (RFC 3986 §6.2.2.1, §6.2.2.2), so `/items/a` and `/items/%61` are
/// one target.
pub(crate) fn normalized_path(path: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c as char);
                } else {
                    out.push('%');
                    out.push(bytes[i + 1].to_ascii_uppercase() as char);
                    out.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        if bytes[i].is_ascii() {
            out.push(bytes[i] as char);
        } else {
            // Raw UTF-8 in a path is the same target as its percent-encoded form.
            out.push('%');
            out.push_str(&format!("{:02X}", bytes[i]));
        }
        i += 1;
    }
    out
}

/// One async mutex per write target, created on demand and forgotten when unused.
#[derive(Default)]
pub(crate) struct LockTable {
    inner: Mutex<LockMap>,
}

#[derive(Default)]
struct LockMap {
    locks: HashMap<String, Weak<futures_util::lock::Mutex<()>>>,
    sweep_at: usize,
}

impl LockTable {
    pub(crate) fn lock_for(&self, key: String) -> Arc<futures_util::lock::Mutex<()>> {
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = map.locks.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        if map.locks.len() >= map.sweep_at {
            map.locks.retain(|_, weak| weak.strong_count() > 0);
            map.sweep_at = (map.locks.len() * 2).max(64);
        }
        let lock = Arc::new(futures_util::lock::Mutex::new(()));
        map.locks.insert(key, Arc::downgrade(&lock));
        lock
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_table_reuses_live_locks_and_forgets_dead_ones() {
        let table = LockTable::default();
        let a = table.lock_for("/a".into());
        let a2 = table.lock_for("/a".into());
        assert!(Arc::ptr_eq(&a, &a2));
        drop((a, a2));
        for i in 0..200 {
            let _ = table.lock_for(format!("/x/{i}"));
        }
        assert!(table.len() < 200, "dead entries are swept: {}", table.len());
    }

    #[test]
    fn equivalent_paths_share_a_key() {
        // RFC 3986 §6.2.2.2: unreserved characters percent-encoded are the same path.
        assert_eq!(normalized_path("/items/%61"), "/items/a");
        assert_eq!(normalized_path("/items/%7e%2D%2e%5F"), "/items/~-._");
        // Reserved and other escapes stay encoded, in upper case (§6.2.2.1).
        assert_eq!(normalized_path("/items/a%2fb"), "/items/a%2Fb");
        assert_eq!(normalized_path("/items/%e2%82%ac"), "/items/%E2%82%AC");
        // Truncated or invalid escapes are left alone.
        assert_eq!(normalized_path("/items/%6"), "/items/%6");
        assert_eq!(normalized_path("/items/%zz"), "/items/%zz");
        assert_eq!(normalized_path("/a%"), "/a%");
        // Raw UTF-8 and its percent-encoded spelling are one target.
        assert_eq!(
            normalized_path("/items/é"),
            normalized_path("/items/%C3%A9")
        );
        assert_eq!(
            normalized_path("/items/é"),
            normalized_path("/items/%c3%a9")
        );
    }
}
