//! SCIM PATCH (RFC 7644 §3.5.2): `PatchOp` bodies parsed, then applied to a copy of the
//! stored resource — all operations or none.
//!
//! `add`, `remove` and `replace`, with and without `path`; paths with value filters
//! (`members[value eq "…"]`, `emails[type eq "work"].value`). Two habits of real clients are
//! accepted as well: operation names in any case (`"Add"`), and `remove` of `members` with
//! a `value` listing the members to take out.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::filter::{self, get_ci, key_ci, Filter, Op, PatchPath};
use crate::scim::ScimError;

pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Add,
    Remove,
    Replace,
}

/// One operation of a `PatchOp`.
#[derive(Debug, Clone)]
pub struct Operation {
    pub kind: Kind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// Parses a `PatchOp` request body (400 `invalidSyntax`, `invalidPath`, `invalidValue` or
/// `noTarget` when it is not one).
pub fn parse(body: &[u8]) -> Result<Vec<Operation>, ScimError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("the body is not JSON: {e}")))?;
    let Value::Object(body) = body else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "a PatchOp is a JSON object",
        ));
    };
    let is_patch_op = get_ci(&body, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP)))
        });
    if !is_patch_op {
        return Err(ScimError::bad(
            "invalidSyntax",
            format!("a PATCH body is a PatchOp: \"schemas\": [\"{PATCH_OP}\"]"),
        ));
    }
    let operations = match get_ci(&body, "Operations") {
        Some(Value::Array(ops)) if !ops.is_empty() => ops,
        _ => {
            return Err(ScimError::bad(
                "invalidSyntax",
                "\"Operations\" must be a non-empty array",
            ))
        }
    };
    operations.iter().map(operation).collect()
}

fn operation(op: &Value) -> Result<Operation, ScimError> {
    let Value::Object(op) = op else {
        return Err(ScimError::bad(
            "invalidSyntax",
            "each operation is a JSON object",
        ));
    };
    let kind = match get_ci(op, "op").and_then(Value::as_str) {
        Some(k) if k.eq_ignore_ascii_case("add") => Kind::Add,
        Some(k) if k.eq_ignore_ascii_case("remove") => Kind::Remove,
        Some(k) if k.eq_ignore_ascii_case("replace") => Kind::Replace,
        Some(other) => {
            return Err(ScimError::bad(
                "invalidSyntax",
                format!("{other:?} is not an operation (add, remove, replace)"),
            ))
        }
        None => {
            return Err(ScimError::bad(
                "invalidSyntax",
                "each operation needs \"op\"",
            ))
        }
    };
    let path = match get_ci(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(
            filter::parse_path(p)
                .map_err(|e| ScimError::bad("invalidPath", format!("path {p:?}: {}", e.0)))?,
        ),
        Some(_) => return Err(ScimError::bad("invalidPath", "\"path\" must be a string")),
    };
    let value = get_ci(op, "value").cloned();
    match (kind, &path, &value) {
        (Kind::Remove, None, _) => Err(ScimError::bad(
            "noTarget",
            "remove needs a \"path\" (RFC 7644 §3.5.2.2)",
        )),
        (Kind::Add | Kind::Replace, _, None) => Err(ScimError::bad(
            "invalidValue",
            "add and replace need a \"value\"",
        )),
        (Kind::Add | Kind::Replace, None, Some(v)) if !v.is_object() => Err(ScimError::bad(
            "invalidValue",
            "without a \"path\", the \"value\" is an object of attributes",
        )),
        _ => Ok(Operation { kind, path, value }),
    }
}

/// What the resource being patched allows.
pub struct Rules<'a> {
    /// Attributes clients cannot modify (`mutability: readOnly`): `id`, `meta`, …
    pub read_only: &'a [&'a str],
    /// Extension schema URNs a path-less value may carry as objects.
    pub extensions: &'a [&'a str],
}

/// Applies `ops` in order to `resource`. On error, `resource` is half-patched: apply to a
/// copy and keep it only on success.
pub fn apply(
    resource: &mut Map<String, Value>,
    ops: &[Operation],
    rules: &Rules<'_>,
) -> Result<(), ScimError> {
    for op in ops {
        match (&op.path, &op.value) {
            (Some(path), value) => {
                if is_read_only(resource, path, rules) {
                    return Err(ScimError::bad(
                        "mutability",
                        format!("{} is read-only", path.attr.name),
                    ));
                }
                apply_at(resource, op.kind, path, value.clone())?;
            }
            (None, Some(Value::Object(attributes))) => {
                for (key, value) in attributes {
                    for (path, value) in pathless(resource, key, value, rules)? {
                        if !is_read_only(resource, &path, rules) {
                            apply_at(resource, op.kind, &path, Some(value))?;
                        }
                    }
                }
            }
            _ => unreachable!("checked by parse"),
        }
    }
    Ok(())
}

/// A path-less value's member as (path, value) pairs: an attribute, a dotted or
/// schema-qualified path (as some clients send), or an extension object's attributes.
fn pathless(
    resource: &Map<String, Value>,
    key: &str,
    value: &Value,
    rules: &Rules<'_>,
) -> Result<Vec<(PatchPath, Value)>, ScimError> {
    let listed = |urn: &str| {
        rules.extensions.iter().any(|e| e.eq_ignore_ascii_case(urn))
            || resource
                .get("schemas")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(urn)))
    };
    if let (true, Value::Object(members)) = (listed(key), value) {
        return members
            .iter()
            .map(|(name, v)| {
                let mut attr = filter::attr_path(name)
                    .map_err(|e| ScimError::bad("invalidPath", format!("{key}:{name}: {}", e.0)))?;
                attr.schema = Some(key.to_owned());
                Ok((PatchPath { attr, filter: None }, v.clone()))
            })
            .collect();
    }
    let attr = filter::attr_path(key)
        .map_err(|e| ScimError::bad("invalidPath", format!("{key}: {}", e.0)))?;
    Ok(vec![(PatchPath { attr, filter: None }, value.clone())])
}

fn is_read_only(resource: &Map<String, Value>, path: &PatchPath, rules: &Rules<'_>) -> bool {
    let core = match path.attr.schema.as_deref() {
        None => true,
        Some(schema) => {
            filter::container(resource, Some(schema)).is_some_and(|c| std::ptr::eq(c, resource))
        }
    };
    core && rules
        .read_only
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&path.attr.name))
}

/// The object a path writes into, created for an extension schema when `create`.
fn container_mut<'a>(
    resource: &'a mut Map<String, Value>,
    schema: Option<&str>,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let Some(schema) = schema else {
        return Ok(Some(resource));
    };
    let key = key_ci(resource, schema);
    let core =
        filter::container(resource, Some(schema)).is_some_and(|c| std::ptr::eq(c, &*resource));
    if core && key.is_none() {
        return Ok(Some(resource));
    }
    let key = match key {
        Some(key) => key,
        None if create => {
            resource.insert(schema.to_owned(), Value::Object(Map::new()));
            schema.to_owned()
        }
        None => return Ok(None),
    };
    match resource.get_mut(&key) {
        Some(Value::Object(extension)) => Ok(Some(extension)),
        _ => Err(ScimError::bad(
            "invalidValue",
            format!("{schema} is not an extension object"),
        )),
    }
}

fn apply_at(
    resource: &mut Map<String, Value>,
    kind: Kind,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let create = kind != Kind::Remove;
    let Some(object) = container_mut(resource, path.attr.schema.as_deref(), create)? else {
        return Ok(()); // removing from an extension the resource does not have
    };
    let name = &path.attr.name;
    let key = key_ci(object, name).unwrap_or_else(|| name.clone());
    match (&path.filter, &path.attr.sub) {
        (None, None) => at_attribute(object, key, kind, value),
        (None, Some(sub)) => at_sub_attribute(object, key, sub, kind, value),
        (Some(filter), sub) => at_filtered(object, key, filter, sub.as_deref(), kind, value),
    }
}

fn at_attribute(
    object: &mut Map<String, Value>,
    key: String,
    kind: Kind,
    value: Option<Value>,
) -> Result<(), ScimError> {
    match (kind, object.get_mut(&key), value) {
        (Kind::Add, Some(Value::Array(items)), Some(value)) => append(items, value),
        (Kind::Add | Kind::Replace, Some(Value::Object(existing)), Some(Value::Object(new))) => {
            merge(existing, &new)
        }
        (Kind::Add | Kind::Replace, _, Some(value)) => {
            object.insert(key, value);
        }
        // `remove` with a value: take those values out (`members`, as Entra ID sends it).
        (Kind::Remove, Some(Value::Array(items)), Some(Value::Array(gone))) => {
            let gone: HashSet<String> = gone.iter().map(identity).collect();
            items.retain(|item| !gone.contains(&identity(item)));
            if items.is_empty() {
                object.remove(&key);
            }
        }
        (Kind::Remove, _, _) => {
            object.remove(&key);
        }
        (_, _, None) => unreachable!("add and replace carry a value"),
    }
    Ok(())
}

fn at_sub_attribute(
    object: &mut Map<String, Value>,
    key: String,
    sub: &str,
    kind: Kind,
    value: Option<Value>,
) -> Result<(), ScimError> {
    if kind == Kind::Remove {
        match object.get_mut(&key) {
            Some(Value::Object(o)) => {
                if let Some(k) = key_ci(o, sub) {
                    o.remove(&k);
                }
            }
            Some(Value::Array(items)) => {
                for o in items.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(k) = key_ci(o, sub) {
                        o.remove(&k);
                    }
                }
            }
            _ => {}
        }
        return Ok(());
    }
    let entry = object
        .entry(key.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    match entry {
        Value::Object(o) => {
            let k = key_ci(o, sub).unwrap_or_else(|| sub.to_owned());
            at_attribute(o, k, kind, value)
        }
        Value::Array(_) => Err(ScimError::bad(
            "invalidPath",
            format!("{key} is multi-valued: pick values with a filter, e.g. {key}[type eq \"work\"].{sub}"),
        )),
        _ => Err(ScimError::bad(
            "invalidPath",
            format!("{key} has no sub-attributes"),
        )),
    }
}

fn at_filtered(
    object: &mut Map<String, Value>,
    key: String,
    filter: &Filter,
    sub: Option<&str>,
    kind: Kind,
    value: Option<Value>,
) -> Result<(), ScimError> {
    let mut matched = 0;
    if let Some(Value::Array(items)) = object.get_mut(&key) {
        if kind == Kind::Remove && sub.is_none() {
            let before = items.len();
            items.retain(|item| !filter.matches(item));
            matched = before - items.len();
            if items.is_empty() {
                object.remove(&key);
            }
        } else {
            for item in items.iter_mut().filter(|item| filter.matches(item)) {
                matched += 1;
                set_in_value(item, sub, kind, value.clone())?;
            }
        }
    }
    match (matched, kind) {
        (0, Kind::Add) => {
            // RFC 7644 §3.5.2.1: add to a value that does not exist yet creates it, when the
            // filter says what it is (`emails[type eq "work"].value`).
            let Some(mut seed) = seed(filter) else {
                return Err(ScimError::bad(
                    "noTarget",
                    format!("no value of {key} matches the filter"),
                ));
            };
            set_in_value(&mut seed, sub, kind, value)?;
            let entry = object
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()));
            match entry {
                Value::Array(items) => items.push(seed),
                _ => {
                    return Err(ScimError::bad(
                        "invalidPath",
                        "not a multi-valued attribute",
                    ))
                }
            }
            Ok(())
        }
        (0, Kind::Replace) => Err(ScimError::bad(
            "noTarget",
            format!("no value of {key} matches the filter (RFC 7644 §3.5.2.3)"),
        )),
        _ => Ok(()),
    }
}

/// Applies the operation to one selected value of a multi-valued attribute.
fn set_in_value(
    item: &mut Value,
    sub: Option<&str>,
    kind: Kind,
    value: Option<Value>,
) -> Result<(), ScimError> {
    match (sub, item) {
        (Some(sub), Value::Object(o)) => {
            let k = key_ci(o, sub).unwrap_or_else(|| sub.to_owned());
            at_attribute(o, k, kind, value)
        }
        (None, item) => {
            match (kind, item, value) {
                (Kind::Add, Value::Object(o), Some(Value::Object(new))) => merge(o, &new),
                (_, item, Some(value)) => *item = value,
                (_, _, None) => {}
            }
            Ok(())
        }
        (Some(_), _) => Err(ScimError::bad(
            "invalidPath",
            "these values have no sub-attributes",
        )),
    }
}

/// The value a filter like `type eq "work"` (or an `and` of such) describes.
fn seed(filter: &Filter) -> Option<Value> {
    match filter {
        Filter::Compare(path, Op::Eq, literal)
            if path.schema.is_none() && path.sub.is_none() && !literal.is_null() =>
        {
            let mut o = Map::new();
            o.insert(path.name.clone(), literal.clone());
            Some(Value::Object(o))
        }
        Filter::And(a, b) => {
            let (Value::Object(mut a), Value::Object(b)) = (seed(a)?, seed(b)?) else {
                return None;
            };
            a.extend(b);
            Some(Value::Object(a))
        }
        _ => None,
    }
}

/// Merges sub-attributes: those named in `new` replace, the others stay.
fn merge(existing: &mut Map<String, Value>, new: &Map<String, Value>) {
    for (name, value) in new {
        let key = key_ci(existing, name).unwrap_or_else(|| name.clone());
        existing.insert(key, value.clone());
    }
}

/// Adds values to a multi-valued attribute, skipping ones it already has (by [`identity`]).
/// Each value is looked up in a set of the ones present, so adding n values to m costs
/// n + m, not n × m (a PATCH of a few thousand emails must not hold a worker for seconds).
fn append(items: &mut Vec<Value>, value: Value) {
    let new = match value {
        Value::Array(values) => values,
        value => vec![value],
    };
    let mut present: HashSet<String> = items.iter().map(identity).collect();
    for v in new {
        if present.insert(identity(&v)) {
            items.push(v);
        }
    }
}

/// Two values of a multi-valued attribute are the same when their `value` sub-attributes are
/// (a group member is its id), or when they are equal: this is that identity as text, for
/// sets (serde_json's maps are sorted here, so equal values print alike).
fn identity(v: &Value) -> String {
    match v.get("value") {
        Some(value) => format!("v{value}"),
        None => format!("w{v}"),
    }
}
