#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms
)]

pub mod body;
pub mod etag;
pub mod future;
pub mod header;
pub mod layer;
pub mod lookup;
pub mod precondition;
pub mod predicate;
pub mod response;
pub mod service;

pub use crate::body::ConditionalBody;
pub use crate::etag::{ETagHasher, EntityTag, HashAlgorithm};
pub use crate::future::ResponseFuture;
pub use crate::layer::{ConditionalLayer, DEFAULT_MAX_BUFFER};
pub use crate::lookup::{lookup_fn, InnerGet, LookupRequest, NoLookup, VersionLookup};
pub use crate::precondition::{Expectation, Validators};
pub use crate::predicate::{DefaultPredicate, Predicate};
pub use crate::response::{Rejection, RejectionKind};
pub use crate::service::Conditional;

/// The boxed error type of response bodies and lookups.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
