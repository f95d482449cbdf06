//! [`ConditionalLayer`]: the builder that holds all configuration.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http::Method;
use tower_layer::Layer;

use crate::etag::HashAlgorithm;
use crate::lookup::{InnerGet, NoLookup};
use crate::precondition::Options;
use crate::predicate::DefaultPredicate;
use crate::response::Rejection;
use crate::service::Conditional;

/// The default [`ConditionalLayer::max_buffer`]: 1 MiB.
pub const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;

type RejectFn = dyn Fn(&Rejection) -> http::Response<Bytes> + Send + Sync;

/// Configuration shared by every clone of one layer's services.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_buffer: usize,
    pub(crate) head_as_get: bool,
    pub(crate) require_preconditions: bool,
    pub(crate) lookup_reads: bool,
    pub(crate) options: Options,
    pub(crate) locks: Option<Arc<LockTable>>,
    pub(crate) on_reject: Option<Arc<RejectFn>>,
    pub(crate) creating_methods: Vec<Method>,
    pub(crate) hash: HashAlgorithm,
}

impl Config {
    pub(crate) fn render(&self, rejection: &Rejection) -> http::Response<Bytes> {
        match &self.on_reject {
            Some(f) => f(rejection),
            None => rejection.default_response(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_buffer: DEFAULT_MAX_BUFFER,
            head_as_get: true,
            require_preconditions: false,
            lookup_reads: false,
            options: Options::default(),
            locks: None,
            on_reject: None,
            creating_methods: vec![Method::PUT],
            hash: HashAlgorithm::Sha256,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_buffer", &self.max_buffer)
            .field("head_as_get", &self.head_as_get)
            .field("require_preconditions", &self.require_preconditions)
            .field("lookup_reads", &self.lookup_reads)
            .field("weak_if_match", &self.options.weak_if_match)
            .field("serialize_writes", &self.locks.is_some())
            .field("on_reject", &self.on_reject.as_ref().map(|_| ".."))
            .field("creating_methods", &self.creating_methods)
            .field("hash", &self.hash)
            .finish()
    }
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
    pub(crate) fn lock_for(&self, key: &str) -> Arc<futures_util::lock::Mutex<()>> {
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = map.locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if map.locks.len() >= map.sweep_at {
            map.locks.retain(|_, weak| weak.strong_count() > 0);
            map.sweep_at = (map.locks.len() * 2).max(64);
        }
        let lock = Arc::new(futures_util::lock::Mutex::new(()));
        map.locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().locks.len()
    }
}

/// Applies [`Conditional`] to a service: strong ETags and 304s on reads, 412 for stale
/// writes. See the [crate docs](crate) for the behaviour; every method here is one knob.
///
/// `L` is where write preconditions get the current validators ([`InnerGet`] by default, see
/// [`lookup`](crate::lookup)); `P` decides which responses are hashed
/// ([`DefaultPredicate`]).
///
/// ```
/// use std::time::Duration;
/// use tower_conditional::ConditionalLayer;
///
/// let layer = ConditionalLayer::new()
///     .max_buffer(256 * 1024)
///     .require_preconditions(true)
///     .serialize_writes(true);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct ConditionalLayer<L = InnerGet, P = DefaultPredicate> {
    lookup: L,
    predicate: P,
    config: Config,
}

impl<L: fmt::Debug, P: fmt::Debug> fmt::Debug for ConditionalLayer<L, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionalLayer")
            .field("lookup", &self.lookup)
            .field("predicate", &self.predicate)
            .field("config", &self.config)
            .finish()
    }
}

impl Default for ConditionalLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ConditionalLayer {
    /// The layer with its documented defaults: `max_buffer` 1 MiB, [`DefaultPredicate`],
    /// write preconditions checked with an internal GET ([`InnerGet`]), HEAD answered from a
    /// GET, strong `If-Match`, no required preconditions, no write serialization.
    pub fn new() -> Self {
        ConditionalLayer {
            lookup: InnerGet,
            predicate: DefaultPredicate::new(),
            config: Config::default(),
        }
    }
}

impl<L, P> ConditionalLayer<L, P> {
    /// Uses `lookup` to find the current validators of a write's target (and, with
    /// [`lookup_reads`](Self::lookup_reads), of a read's). `lookup` is a
    /// `Service<LookupRequest, Response = Option<Validators>>`; see [`lookup_fn`](crate::lookup_fn).
    ///
    /// Its entity tags must equal the ones reads carry (see [`lookup`](crate::lookup)). A
    /// lookup error fails closed with 503. To bound its latency, compose it: a
    /// `tower::timeout::Timeout` turns a slow answer into an error, and since timeouts do not
    /// cover readiness, `tower::load_shed::LoadShed` turns "not ready" into one —
    /// `ServiceBuilder::new().load_shed().timeout(d).service(lookup)`.
    pub fn lookup<L2>(self, lookup: L2) -> ConditionalLayer<L2, P> {
        ConditionalLayer {
            lookup,
            predicate: self.predicate,
            config: self.config,
        }
    }

    /// Does not evaluate write preconditions: `If-Match` and friends on PUT, PATCH, DELETE
    /// and POST reach the inner service untouched. Reads are unaffected.
    pub fn no_lookup(self) -> ConditionalLayer<NoLookup, P> {
        self.lookup(NoLookup)
    }

    /// Decides which responses are buffered and hashed. See [`predicate`](crate::predicate).
    pub fn predicate<P2>(self, predicate: P2) -> ConditionalLayer<L, P2> {
        ConditionalLayer {
            lookup: self.lookup,
            predicate,
            config: self.config,
        }
    }

    /// The most body bytes held per response while hashing (default 1 MiB). A response
    /// whose `Content-Length` or size hint is larger is not buffered; one that grows past
    /// it mid-stream is sent on without an `ETag`: the held chunks first, then the rest.
    pub fn max_buffer(mut self, bytes: usize) -> Self {
        self.config.max_buffer = bytes;
        self
    }

    /// Whether HEAD is answered from a GET (default `true`).
    ///
    /// A HEAD response has no body to hash, and frameworks (axum among them) empty it before
    /// the layer sees it. So by default the layer sends the inner service a GET for a HEAD
    /// request, hashes that body, and returns its head with an empty body and the GET's
    /// `Content-Length`: the same `ETag` as GET, always. Turn it off when the inner service
    /// answers HEAD itself with its own `ETag`; HEAD responses without one then get none.
    pub fn head_as_get(mut self, enabled: bool) -> Self {
        self.config.head_as_get = enabled;
        self
    }

    /// Requires preconditions on unsafe methods (RFC 6585 §3): a PUT, PATCH, DELETE or POST
    /// without `If-Match`, `If-None-Match` or a valid `If-Unmodified-Since` is answered
    /// `428 Precondition Required`, and the inner service is not called.
    pub fn require_preconditions(mut self, enabled: bool) -> Self {
        self.config.require_preconditions = enabled;
        self
    }

    /// Answers conditional GET/HEAD from the lookup alone when it can (default `false`):
    /// if the lookup's validators already make the request a 304 (or 412), the inner service
    /// is not called at all.
    ///
    /// Such a 304 carries the lookup's `ETag` (or `Last-Modified`) but none of the fields
    /// only the handler knows (`Cache-Control`, `Vary`, …); enable it where that is fine.
    /// Has no effect without a lookup service.
    pub fn lookup_reads(mut self, enabled: bool) -> Self {
        self.config.lookup_reads = enabled;
        self
    }

    /// Compares `If-Match` weakly (default `false`, RFC 9110's strong comparison).
    ///
    /// SCIM (RFC 7644 §3.14) clients send `If-Match: W/"…"` with the weak tags SCIM servers
    /// issue; under strong comparison such a request can never succeed. Enable this only
    /// where weak tags change whenever the stored resource changes, or a write can win
    /// against a representation that differs from the one the client saw.
    pub fn weak_if_match(mut self, enabled: bool) -> Self {
        self.config.options.weak_if_match = enabled;
        self
    }

    /// Serializes conditional writes to the same target path within this process
    /// (default `false`): from the lookup to the inner service's response, one conditional
    /// write per path at a time, so two writers holding the same `If-Match` cannot both pass.
    ///
    /// With a lookup service configured, a 2xx answer to a serialized write that carries no
    /// `ETag` gets the one the lookup reports after the write, while the lock is still held
    /// (without the lock, that tag could already be someone else's).
    ///
    /// It guards one process only; across processes, make the write itself a
    /// compare-and-swap on the [`Expectation`](crate::Expectation) the layer hands over.
    pub fn serialize_writes(mut self, enabled: bool) -> Self {
        self.config.locks = enabled.then(|| Arc::new(LockTable::default()));
        self
    }

    /// The methods that can create their target (default: only PUT).
    ///
    /// RFC 9110 §13.2.1 has preconditions ignored where the response without them would
    /// not be 2xx. When the lookup reports that the target does not exist, a write with such
    /// a method would create it, so a failing `If-Match` is answered 412; any other method
    /// would find nothing to act on, so the layer answers `404 Not Found` instead — without
    /// calling the service, so nothing can be written. List PATCH or POST here if your
    /// service creates resources with them.
    pub fn creating_methods<I: IntoIterator<Item = Method>>(mut self, methods: I) -> Self {
        self.config.creating_methods = methods.into_iter().collect();
        self
    }

    /// The hash behind computed tags (default [`HashAlgorithm::Sha256`]). With the `blake3`
    /// feature, `HashAlgorithm::Blake3` hashes large bodies several times faster. A lookup
    /// that computes tags from content must use the same algorithm.
    pub fn hash_algorithm(mut self, algorithm: HashAlgorithm) -> Self {
        self.config.hash = algorithm;
        self
    }

    /// Renders 404, 412, 428 and 503 responses with `f` instead of
    /// [`Rejection::default_response`].
    pub fn on_reject<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        self.config.on_reject = Some(Arc::new(f));
        self
    }
}

impl<S, L: Clone, P: Clone> Layer<S> for ConditionalLayer<L, P> {
    type Service = Conditional<S, L, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Conditional::new(
            inner,
            self.lookup.clone(),
            self.predicate.clone(),
            Arc::new(self.config.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_table_reuses_live_locks_and_forgets_dead_ones() {
        let table = LockTable::default();
        let a = table.lock_for("/a");
        let a2 = table.lock_for("/a");
        assert!(Arc::ptr_eq(&a, &a2));
        drop((a, a2));
        for i in 0..200 {
            let _ = table.lock_for(&format!("/x/{i}"));
        }
        assert!(table.len() < 200, "dead entries are swept: {}", table.len());
    }
}
