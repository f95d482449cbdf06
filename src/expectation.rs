//! [`Expectation`]: what a write that passed its preconditions was checked against.

use std::time::SystemTime;

use crate::etag::EntityTag;
use crate::precondition::{Conditions, ListField, TagList};
use crate::validators::Validators;

/// What a write that passed its preconditions was validated against, handed to the inner
/// service as a request extension.
///
/// The layer checked the preconditions against the validators it looked up; between that
/// check and the handler's write another writer may get in. Make the write a
/// compare-and-swap on this expectation (`UPDATE … WHERE etag = $1`, `INSERT … ON CONFLICT
/// DO NOTHING`) and answer 412 when it fails: then no update is lost, even across processes.
///
/// Under [`no_lookup`](crate::ConditionalLayer::no_lookup) nothing was checked: look at
/// [`is_evaluated`](Self::is_evaluated) first. There `current()` is `None` and the flags are
/// false because nothing was looked up — not because the target is absent — and the
/// handler evaluates [`conditions`](Self::conditions) itself.
///
/// ```
/// use tower_conditional::Expectation;
///
/// async fn handler(req: http::Request<String>) -> http::StatusCode {
///     match req.extensions().get::<Expectation>() {
///         Some(e) if e.must_not_exist() => { /* INSERT ... ON CONFLICT DO NOTHING */ }
///         Some(e) => { let _cas_on = e.etag(); /* UPDATE ... WHERE etag = $expected */ }
///         None => { /* unconditional write */ }
///     }
///     http::StatusCode::NO_CONTENT
/// }
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expectation {
    etag: Option<EntityTag>,
    must_exist: bool,
    must_not_exist: bool,
    unmodified_since: Option<SystemTime>,
    current: Option<Validators>,
    evaluated: bool,
    conditions: Conditions,
}

impl Expectation {
    /// The expectation a passed evaluation of `conditions` against `current` establishes.
    pub fn new(conditions: &Conditions, current: Option<&Validators>) -> Self {
        let mut e = Expectation {
            current: current.cloned(),
            evaluated: true,
            ..Expectation::default()
        };
        match &conditions.if_match {
            ListField::List(TagList::Tags(_)) => {
                e.must_exist = true;
                e.etag = current.and_then(|v| v.etag().cloned());
            }
            ListField::List(TagList::Any) => e.must_exist = true,
            _ => {
                if current.and_then(|v| v.last_modified()).is_some() {
                    e.unmodified_since = conditions.if_unmodified_since;
                }
            }
        }
        if conditions.if_none_match == ListField::List(TagList::Any) {
            e.must_not_exist = true;
        }
        e
    }

    /// The current entity tag that `If-Match` matched: the write must still find it.
    pub fn etag(&self) -> Option<&EntityTag> {
        self.etag.as_ref()
    }

    /// `If-Match` was sent: the target must still exist.
    pub fn must_exist(&self) -> bool {
        self.must_exist
    }

    /// `If-None-Match: *` was sent: the write must create, never replace.
    pub fn must_not_exist(&self) -> bool {
        self.must_not_exist
    }

    /// The `If-Unmodified-Since` date that was checked: the target must not have been
    /// modified after it.
    pub fn unmodified_since(&self) -> Option<SystemTime> {
        self.unmodified_since
    }

    /// The validators the preconditions were checked against (`None`: the target did not
    /// exist, or nothing was checked).
    pub fn current(&self) -> Option<&Validators> {
        self.current.as_ref()
    }

    /// Nothing was checked: the layer was configured with
    /// [`no_lookup`](crate::ConditionalLayer::no_lookup), and the handler must evaluate
    /// [`conditions`](Self::conditions) itself — for instance with [`evaluate`](crate::precondition::evaluate) against the
    /// row it is about to change, inside the same transaction.
    pub fn unevaluated(conditions: &Conditions) -> Self {
        Expectation {
            conditions: conditions.clone(),
            ..Expectation::default()
        }
    }

    /// Whether the layer evaluated the preconditions (`false` under
    /// [`no_lookup`](crate::ConditionalLayer::no_lookup)).
    pub fn is_evaluated(&self) -> bool {
        self.evaluated
    }

    /// The request's conditions, for a handler that evaluates them itself (set only when
    /// [`is_evaluated`](Self::is_evaluated) is `false`).
    pub fn conditions(&self) -> &Conditions {
        &self.conditions
    }
}
