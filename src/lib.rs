#![doc = include_str!("lib.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms
)]

mod body;
mod buffer;
mod coding;
mod config;
mod etag;
mod expectation;
mod future;
mod header;
mod layer;
pub mod lookup;
mod outcome;
pub mod precondition;
pub mod predicate;
mod response;
mod service;
mod validators;

#[doc(inline)]
pub use crate::body::ConditionalBody;
#[doc(inline)]
pub use crate::coding::{CodingTags, CodingTagsFuture, CodingTagsLayer};
#[doc(inline)]
pub use crate::config::{DEFAULT_MAX_BUFFER, DEFAULT_MAX_BUFFER_TIME};
#[doc(inline)]
pub use crate::etag::{
    ContentHash, ContentHasher, Digest, ETagHasher, EntityTag, HashAlgorithm, InvalidEntityTag,
};
#[doc(inline)]
pub use crate::expectation::Expectation;
#[doc(inline)]
pub use crate::future::ResponseFuture;
#[doc(inline)]
pub use crate::layer::ConditionalLayer;
#[doc(inline)]
pub use crate::lookup::{lookup_fn, Current, LookupRequest, VersionLookup};
#[doc(inline)]
pub use crate::outcome::{NoTag, Outcome, Untagged};
#[doc(inline)]
pub use crate::response::{Rejection, RejectionKind};
#[doc(inline)]
pub use crate::service::Conditional;
#[doc(inline)]
pub use crate::validators::Validators;

/// The boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    /// README.md is the crate documentation (src/lib.md) followed by the sections for
    /// people working on the crate: the two never drift apart.
    #[test]
    fn readme_begins_with_the_crate_docs() {
        let readme = include_str!("../README.md");
        let docs = include_str!("lib.md");
        assert!(
            readme.starts_with(docs),
            "README.md must begin with src/lib.md, verbatim"
        );
    }
}
