//! [`ConditionalLayer`]: the builder that holds all configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use tower_layer::Layer;

use crate::config::{Config, LockTable};
use crate::etag::HashAlgorithm;
use crate::lookup::{InternalGet, NoLookup, Unconfigured};
use crate::predicate::DefaultPredicate;
use crate::response::Rejection;
use crate::service::Conditional;

/// Applies [`Conditional`] to a service: strong ETags and 304s on reads, 412 for stale
/// writes. See the [crate docs](crate) for the behaviour; every method here is one knob.
///
/// `L` is where conditional writes get the target's current validators (none by default: see
/// [`lookup`](crate::lookup)); `P` decides which responses are hashed ([`DefaultPredicate`]).
///
/// ```
/// use std::convert::Infallible;
/// use tower_conditional::{lookup_fn, ConditionalLayer, LookupRequest, Validators};
///
/// let layer = ConditionalLayer::new()
///     .lookup(lookup_fn(|_req: LookupRequest| async {
///         Ok::<_, Infallible>(None::<Validators>) // read your store here
///     }))
///     .max_buffer(256 * 1024)
///     .require_preconditions(true)
///     .serialize_writes(true);
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct ConditionalLayer<L = Unconfigured, P = DefaultPredicate> {
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
    /// The layer with its documented defaults: `max_buffer` 1 MiB, `max_buffer_time` 500 ms,
    /// [`DefaultPredicate`], HEAD answered from a GET, strong `If-Match`, no required
    /// preconditions, no write serialization — and no source of current validators, so a
    /// conditional write is answered `501` without calling the service until you configure
    /// [`lookup`](Self::lookup) (or [`internal_get`](Self::internal_get), or
    /// [`no_lookup`](Self::no_lookup)). The layer never calls your service on its own.
    pub fn new() -> Self {
        ConditionalLayer {
            lookup: Unconfigured,
            predicate: DefaultPredicate::new(),
            config: Config::default(),
        }
    }
}

impl<L, P> ConditionalLayer<L, P> {
    /// Uses `lookup` to find the current validators of a write's target (and of a read's, for
    /// `Range` requests and with [`lookup_reads`](Self::lookup_reads)). `lookup` is a
    /// `Service<LookupRequest>` answering [`Current`](crate::Current) or
    /// `Option<Validators>`; see [`lookup_fn`](crate::lookup_fn) and [`lookup`](crate::lookup),
    /// which also shows how a lookup authorizes.
    ///
    /// Its entity tags must equal the ones reads carry. A lookup error fails a write closed
    /// with 503 (the service is not called) and lets a read through to the service. To bound
    /// its latency, compose it: a `tower::timeout::Timeout` turns a slow answer into an
    /// error, and since timeouts do not cover readiness, `tower::load_shed::LoadShed` turns
    /// "not ready" into one — `ServiceBuilder::new().load_shed().timeout(d).service(lookup)`.
    pub fn lookup<L2>(self, lookup: L2) -> ConditionalLayer<L2, P> {
        ConditionalLayer {
            lookup,
            predicate: self.predicate,
            config: self.config,
        }
    }

    /// Leaves write preconditions to the handler: `If-Match` and friends on PUT, PATCH,
    /// DELETE and POST reach the inner service, with an [`Expectation`](crate::Expectation)
    /// whose [`is_evaluated`](crate::Expectation::is_evaluated) is `false` and which carries
    /// the parsed [`Conditions`](crate::precondition::Conditions). Reads are unaffected.
    pub fn no_lookup(self) -> ConditionalLayer<NoLookup, P> {
        self.lookup(NoLookup)
    }

    /// Finds a write's current validators by sending the wrapped service a `GET` to the same
    /// URI (the [internal GET](crate::lookup#the-internal-get)) and hashing its answer as a
    /// read would.
    ///
    /// **This runs your GET handler for every conditional write**, and is safe only where the
    /// wrapped service routes by method: a hyper service, a `ServiceBuilder` stack around one,
    /// a whole axum `Router` wrapped from outside (served directly, or as an outer router's
    /// `fallback_service` or `nest_service`). Under axum's `Router::layer`, `route_layer` or
    /// `MethodRouter::layer` the GET would reach the PUT or DELETE handler itself; with the
    /// `axum` feature the layer sees axum's `MatchedPath` there and answers 501 instead — but
    /// a `MethodRouter` used as a router's `fallback` sets none and is **not** detected, and a
    /// whole router mounted with `route_service` is refused (it looks the same). gRPC
    /// requests are always refused (tonic routes by path: the GET would reach the call).
    ///
    /// The GET's 404, 410 or 405 means "absent"; another 4xx (401, 403, …) or a redirect is
    /// passed to the client as the write's answer; a 5xx, a failing body, or a body that does
    /// not end within `max_buffer_time` fails the write closed with 503.
    pub fn internal_get(self) -> ConditionalLayer<InternalGet, P> {
        self.lookup(InternalGet)
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

    /// The longest a response body is held while the layer waits for more of it (default
    /// 500 ms, `None` for no limit). When the time is up, the held chunks go out untagged and
    /// the rest streams: a slow or paused producer (long polling, a report computed row by
    /// row) reaches its client promptly, and a HEAD is answered promptly whatever the GET
    /// body does. Bodies that are ready at once (the common case) never start the timer.
    ///
    /// The default is short enough that a client sees the first bytes of a paused stream
    /// within a second, and long enough for a handler that writes its body in a few awaits.
    /// It needs the `tokio` feature (on by default) and a Tokio runtime with its timer.
    pub fn max_buffer_time(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.config.max_buffer_time = limit.into();
        self
    }

    /// Whether HEAD is answered from a GET (default `true`).
    ///
    /// A HEAD response has no body to hash, and frameworks (axum among them) empty it before
    /// the layer sees it. So by default the layer sends the inner service a GET for a HEAD
    /// request, hashes that body, and returns its head with an empty body and the GET's
    /// `Content-Length`: the same `ETag` as GET, always. Turn it off when the inner service
    /// answers HEAD itself with its own `ETag`; HEAD responses without one then get none —
    /// and for routes that answer HEAD but not GET (a HEAD-only health check), which would
    /// answer the forwarded GET with 405.
    pub fn head_as_get(mut self, enabled: bool) -> Self {
        self.config.head_as_get = enabled;
        self
    }

    /// Whether the inner service checks `If-Range` itself (default `false`).
    ///
    /// Where no lookup has checked it first, a GET's `Range` with `If-Range` does not reach
    /// the service by default: a tag there is usually one the layer computed, which the
    /// service cannot evaluate, and a service that does not check `If-Range` at all
    /// (tower-http's `ServeDir`) would answer with a part of the version it has now, appended
    /// by the client to the one it holds — under a date as under a tag. The layer asks for the
    /// whole instead, and cuts the part itself from the body it hashed when the validator
    /// matches (a date only under [`strong_last_modified`](Self::strong_last_modified)).
    /// Turn this on for a service that sets its own validators and checks `If-Range` against
    /// them: ranges of bodies the layer does not hold (above `max_buffer`) then keep resuming.
    pub fn service_checks_if_range(mut self, enabled: bool) -> Self {
        self.config.service_checks_if_range = enabled;
        self
    }

    /// Requires preconditions on writes that change an existing target (RFC 6585 §3): a
    /// PUT, PATCH or DELETE (see [`required_methods`](Self::required_methods)) without
    /// `If-Match`, `If-None-Match` or an `If-Unmodified-Since` that can be evaluated is
    /// answered `428 Precondition Required`, and the inner service is not called. A creating
    /// POST is not asked for one; safe methods never are.
    pub fn require_preconditions(mut self, enabled: bool) -> Self {
        self.config.require_preconditions = enabled;
        self
    }

    /// The methods [`require_preconditions`](Self::require_preconditions) applies to
    /// (default PUT, PATCH, DELETE).
    pub fn required_methods<I: IntoIterator<Item = Method>>(mut self, methods: I) -> Self {
        self.config.required_methods = methods.into_iter().collect();
        self
    }

    /// Answers conditional GET/HEAD from the lookup alone when it can (default `false`):
    /// if the lookup's validators already make the request a 304 (or 412), the inner service
    /// is not called at all.
    ///
    /// Such a 304 carries the lookup's `ETag` (or `Last-Modified`) and the fields the lookup
    /// adds with [`Validators::with_header`](crate::Validators::with_header)
    /// (`Cache-Control`, `Vary`, and the 200's `Content-Length` on a HEAD or over HTTP/2, …),
    /// but nothing else the handler would have sent; enable it where that is fine.
    /// Has no effect without a lookup service. A lookup that fails lets the read through to
    /// the service. Let the lookup authorize (see [`lookup`](crate::lookup)): otherwise a
    /// 304 confirms a guessed tag to anyone.
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

    /// Declares the service's `Last-Modified` dates strong validators (default `false`): it
    /// never changes a representation twice within the second a date names — each new
    /// version's date is at least a second after the last one's.
    ///
    /// Only a strong date may satisfy `If-Range` (RFC 9110 §13.1.5, §8.8.2.2). Without this,
    /// a `Range` request whose `If-Range` is a date gets the whole representation on every
    /// route (a client resuming a download starts over); with it, a date equal to the current
    /// `Last-Modified` — the lookup's, or the response's where no lookup decided — and at
    /// least a second old keeps the `Range` for the service, or lets the layer cut the part
    /// (see [`service_checks_if_range`](Self::service_checks_if_range)).
    /// Enable it only with that guarantee: two versions written within one second share a
    /// date, and a client holding part of the first would get the rest of the second.
    pub fn strong_last_modified(mut self, enabled: bool) -> Self {
        self.config.options.strong_dates = enabled;
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
    /// A stale write is refused before it waits: the preconditions are checked once without
    /// the lock and again under it. The lock is keyed by the path with percent-encoded
    /// unreserved characters decoded (`/items/%61` is `/items/a`); see
    /// [`serialize_writes_by`](Self::serialize_writes_by) for another notion of identity.
    /// While a request waits for the lock it holds nothing else (no readiness of the inner
    /// service); bound the wait by putting a `tower::timeout::TimeoutLayer` outside the layer:
    /// a request dropped while waiting leaves nothing behind.
    ///
    /// It guards one process only; across processes, make the write itself a
    /// compare-and-swap on the [`Expectation`](crate::Expectation) the layer hands over.
    pub fn serialize_writes(mut self, enabled: bool) -> Self {
        self.config.locks = enabled.then(|| Arc::new(LockTable::default()));
        self
    }

    /// [`serialize_writes`](Self::serialize_writes), keyed by `key(uri, headers)`: for routes
    /// whose targets are named by more than the path (a tenant header, say) or by less.
    pub fn serialize_writes_by<F>(mut self, key: F) -> Self
    where
        F: Fn(&Uri, &HeaderMap) -> String + Send + Sync + 'static,
    {
        self.config.locks = Some(Arc::new(LockTable::default()));
        self.config.lock_key = Some(Arc::new(key));
        self
    }

    /// Sends the tags the layer computes as weak (`W/"…"`, default `false`): for routes whose
    /// bytes vary while their meaning does not (a timestamp in a footer, a reordered map).
    ///
    /// Reads compare weakly, so revalidation works as before. `If-Match` compares strongly
    /// (RFC 9110 §13.1.1), so a weak tag never satisfies it — a write with such a tag gets
    /// 412 — unless [`weak_if_match`](Self::weak_if_match) is also on; a lookup on such a
    /// route should answer the same weak tags. Tags the service sets itself are kept as they
    /// are.
    pub fn weak_etags(mut self, enabled: bool) -> Self {
        self.config.weak_etags = enabled;
        self
    }

    /// On reads, asks the lookup for the target's `Last-Modified` and sets it on a 2xx
    /// response that has none (default `false`), so clients that revalidate with dates only
    /// (`If-Modified-Since`) get 304s too; a time in the future is sent as now (RFC 9110
    /// §8.8.2.1). Costs one lookup per read; has no effect without a lookup. A failing lookup
    /// leaves the response as the service made it.
    pub fn last_modified_from_lookup(mut self, enabled: bool) -> Self {
        self.config.last_modified_from_lookup = enabled;
        self
    }

    /// Whether each response carries its [`Outcome`](crate::Outcome) as an extension (default
    /// `false`). Inserting the first extension into a response costs three small
    /// allocations, more than the rest of the layer's work on the 200 path, so it is opt-in:
    /// turn it on where a metrics layer or a test reads it. The debug-level `tracing` event
    /// with the same outcome is emitted either way.
    pub fn outcome_extension(mut self, enabled: bool) -> Self {
        self.config.outcome_extension = enabled;
        self
    }

    /// Puts the target's current `ETag` into 412 responses (default `false`).
    ///
    /// Handy for clients that retry at once, but it tells the caller the current version —
    /// for a body hashed by the layer, a hash of content the caller may not be allowed to
    /// see. Enable it only where every caller that reaches the layer may read the target
    /// (authentication and authorization sit outside the layer, or in the lookup).
    pub fn disclose_current_etag(mut self, enabled: bool) -> Self {
        self.config.disclose_current_etag = enabled;
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

    /// Renders the layer's own answers (412, 428, 503, 404, 501, 500) with `f` instead of
    /// [`Rejection::default_response`].
    pub fn on_reject<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        self.config.on_reject = Some(Arc::new(f));
        self
    }
}

impl Conditional<()> {
    /// The default layer; the same as [`ConditionalLayer::new`].
    pub fn layer() -> ConditionalLayer {
        ConditionalLayer::new()
    }
}

impl<S, L: Clone, P: Clone> Layer<S> for ConditionalLayer<L, P> {
    type Service = Conditional<S, L, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Conditional::from_parts(
            inner,
            self.lookup.clone(),
            self.predicate.clone(),
            Arc::new(self.config.clone()),
        )
    }
}
