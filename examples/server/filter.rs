//! SCIM filters and attribute paths (RFC 7644 §3.4.2.2, §3.5.2): parsed once, evaluated
//! on the stored JSON documents.
//!
//! The whole filter grammar is understood: `eq ne co sw ew gt ge lt le pr`, `and` (binding
//! tighter than `or`), `not (…)`, parentheses, value paths (`emails[type eq "work"]`),
//! sub-attributes (`name.familyName`) and schema-qualified names
//! (`urn:ietf:params:scim:schemas:core:2.0:User:userName`). Attribute names and operators
//! are case-insensitive; string comparisons are too, except for the attributes RFC 7643
//! marks `caseExact` (`id`, `externalId`, `meta.version`, `meta.location`).

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Why a filter or path could not be parsed (the `detail` of a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

fn error<T>(detail: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(detail.into()))
}

/// `[schema ":"] name ["." sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN the name was qualified with, if any.
    pub schema: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare(AttrPath, Op, Value),
    /// `attr[filter]`: some value of `attr` matches `filter` (evaluated on that value).
    Has(AttrPath, Box<Filter>),
}

/// A PATCH `path`: `attrPath`, or `valuePath` optionally followed by `.subAttr`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    /// The value filter of `attr[filter]`.
    pub filter: Option<Filter>,
}

// ---- tokens --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// A quoted JSON string, unescaped.
    Str(String),
    /// Anything else: names, paths, operators, keywords, numbers, `true`, `false`, `null`.
    Word(String),
}

fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' | b')' | b'[' | b']' => {
                tokens.push(match bytes[i] {
                    b'(' => Token::Open,
                    b')' => Token::Close,
                    b'[' => Token::OpenBracket,
                    _ => Token::CloseBracket,
                });
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return error("a string is not closed"),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                match serde_json::from_str::<String>(&input[start..i]) {
                    Ok(s) => tokens.push(Token::Str(s)),
                    Err(_) => return error(format!("invalid string {}", &input[start..i])),
                }
            }
            _ => {
                let start = i;
                while i < bytes.len() && !b" \t\r\n()[]\"".contains(&bytes[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(input[start..i].to_owned()));
            }
        }
    }
    Ok(tokens)
}

// ---- parsing -------------------------------------------------------------------------------

/// Parses a `filter` query parameter.
pub fn parse(input: &str) -> Result<Filter, ParseError> {
    let mut p = Parser::new(tokenize(input)?, 0);
    if p.tokens.is_empty() {
        return error("the filter is empty");
    }
    let filter = p.or()?;
    match p.peek() {
        None => Ok(filter),
        Some(t) => error(format!("unexpected {}", describe(t))),
    }
}

/// Parses a PATCH operation's `path`.
pub fn parse_path(input: &str) -> Result<PatchPath, ParseError> {
    let tokens = tokenize(input)?;
    match tokens.as_slice() {
        [Token::Word(w)] => Ok(PatchPath {
            attr: attr_path(w)?,
            filter: None,
        }),
        [Token::Word(w), Token::OpenBracket, ..] => {
            let mut attr = attr_path(w)?;
            if attr.sub.is_some() {
                return error("a value filter applies to an attribute, not a sub-attribute");
            }
            let mut p = Parser::new(tokens, 2);
            let filter = p.or()?;
            p.expect(&Token::CloseBracket)?;
            match &p.tokens[p.at..] {
                [] => {}
                [Token::Word(rest)] if rest.starts_with('.') => {
                    let sub = &rest[1..];
                    check_name(sub)?;
                    attr.sub = Some(sub.to_owned());
                }
                _ => return error("only \".subAttribute\" may follow a value filter"),
            }
            Ok(PatchPath {
                attr,
                filter: Some(filter),
            })
        }
        _ => error(format!("{input:?} is not an attribute path")),
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Open => "\"(\"".into(),
        Token::Close => "\")\"".into(),
        Token::OpenBracket => "\"[\"".into(),
        Token::CloseBracket => "\"]\"".into(),
        Token::Str(s) => format!("{s:?}"),
        Token::Word(w) => format!("{w:?}"),
    }
}

/// `ATTRNAME = ALPHA *(nameChar)`, `nameChar = "-" / "_" / DIGIT / ALPHA`; `$ref` too.
fn check_name(name: &str) -> Result<(), ParseError> {
    let mut chars = name.chars();
    let ok = name == "$ref"
        || chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        error(format!("{name:?} is not an attribute name"))
    }
}

/// `[URI ":"] ATTRNAME *1subAttr`.
/// Whether a name starts with `urn:` (any case) and has more after it: a schema URN, as a
/// prefix of an attribute path or as the key of an extension's attributes. Never slices
/// inside a character (`"abcé"` is a plain name, not a panic).
pub fn is_urn(name: &str) -> bool {
    name.len() > 4
        && name
            .get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"))
}

pub fn attr_path(word: &str) -> Result<AttrPath, ParseError> {
    let (schema, rest) = if is_urn(word) {
        match word.rfind(':') {
            Some(at) => (Some(word[..at].to_owned()), &word[at + 1..]),
            None => (None, word),
        }
    } else {
        (None, word)
    };
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    check_name(name)?;
    if let Some(sub) = sub {
        check_name(sub)?;
    }
    Ok(AttrPath {
        schema,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// How deep parentheses, `not(..)` and value filters (`emails[..]`) may nest, and how many
/// attribute expressions one filter may hold: far above any real filter, far below what would
/// exhaust a worker's stack (the parser and the evaluation recurse once per level and term).
const MAX_DEPTH: usize = 32;
const MAX_TERMS: usize = 256;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn new(tokens: Vec<Token>, at: usize) -> Self {
        Parser {
            tokens,
            at,
            depth: 0,
            terms: 0,
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, want: &Token) -> Result<(), ParseError> {
        match self.next() {
            Some(t) if t == *want => Ok(()),
            Some(t) => error(format!(
                "expected {}, found {}",
                describe(want),
                describe(&t)
            )),
            None => error(format!("expected {}, found the end", describe(want))),
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    /// One level of nesting: the whole filter, or what a `(`, `not(` or `[` opens.
    fn or(&mut self) -> Result<Filter, ParseError> {
        if self.depth == MAX_DEPTH {
            return error(format!("the filter nests deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let filter = self.or_terms();
        self.depth -= 1;
        filter
    }

    fn or_terms(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        if self.keyword("not") && self.tokens.get(self.at + 1) == Some(&Token::Open) {
            self.at += 2;
            let inner = self.or()?;
            self.expect(&Token::Close)?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                self.expect(&Token::Close)?;
                Ok(inner)
            }
            Some(Token::Word(w)) => self.attribute_expression(&w),
            Some(t) => error(format!("expected an attribute, found {}", describe(&t))),
            None => error("expected an attribute, found the end"),
        }
    }

    fn attribute_expression(&mut self, word: &str) -> Result<Filter, ParseError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return error(format!("the filter has more than {MAX_TERMS} terms"));
        }
        let path = attr_path(word)?;
        if self.peek() == Some(&Token::OpenBracket) {
            if path.sub.is_some() {
                return error("a value filter applies to an attribute, not a sub-attribute");
            }
            self.at += 1;
            let inner = self.or()?;
            self.expect(&Token::CloseBracket)?;
            return Ok(Filter::Has(path, Box::new(inner)));
        }
        let name = match self.next() {
            Some(Token::Word(op)) => op.to_ascii_lowercase(),
            Some(t) => return error(format!("expected an operator, found {}", describe(&t))),
            None => return error(format!("expected an operator after {word:?}")),
        };
        let op = match name.as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => return error(format!("{other:?} is not a comparison operator")),
        };
        let value = match self.next() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => match serde_json::from_str::<serde_json::Number>(&w) {
                    Ok(n) => Value::Number(n),
                    Err(_) => return error(format!("{w:?} is not a value (strings are quoted)")),
                },
            },
            Some(t) => return error(format!("expected a value, found {}", describe(&t))),
            None => return error(format!("expected a value after {word} {name}")),
        };
        let ordering = matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
        let substring = matches!(op, Op::Co | Op::Sw | Op::Ew);
        if (ordering && matches!(value, Value::Bool(_) | Value::Null))
            || (substring && !value.is_string())
        {
            return error(format!("{value} cannot be compared with {name}"));
        }
        Ok(Filter::Compare(path, op, value))
    }
}

// ---- evaluation ----------------------------------------------------------------------------

/// The value of `name` in `object`, attribute names being case-insensitive.
pub fn get_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The key under which `object` holds `name`, if it does.
pub fn key_ci(object: &Map<String, Value>, name: &str) -> Option<String> {
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

/// The object a schema-qualified path reads from: the resource itself for its core schema,
/// the extension's object for an extension schema.
pub fn container<'a>(
    resource: &'a Map<String, Value>,
    schema: Option<&str>,
) -> Option<&'a Map<String, Value>> {
    let Some(schema) = schema else {
        return Some(resource);
    };
    if let Some(Value::Object(extension)) = get_ci(resource, schema) {
        return Some(extension);
    }
    let core = resource
        .get("schemas")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .and_then(Value::as_str);
    core.filter(|core| core.eq_ignore_ascii_case(schema))
        .map(|_| resource)
}

impl Filter {
    /// Whether the resource (or, inside `[…]`, the multi-valued attribute's value) matches.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(inner) => !inner.matches(resource),
            Filter::Present(path) => values(resource, path).iter().any(|v| present(v)),
            Filter::Compare(path, op, literal) => {
                let found = values(resource, path);
                let exact = case_exact(path);
                match op {
                    // `eq null` is "has no value", `ne null` "has one" (only eq and ne
                    // parse with null).
                    _ if literal.is_null() => found.iter().any(|v| present(v)) == (*op == Op::Ne),
                    Op::Ne => !found.iter().any(|v| compare(v, Op::Eq, literal, exact)),
                    op => found.iter().any(|v| compare(v, *op, literal, exact)),
                }
            }
            Filter::Has(path, inner) => elements(resource, path).iter().any(|v| inner.matches(v)),
        }
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn case_exact(path: &AttrPath) -> bool {
    let name = path.name.to_ascii_lowercase();
    let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
    matches!(
        (name.as_str(), sub.as_deref()),
        ("id" | "externalid", None) | ("meta", Some("version" | "location"))
    )
}

/// The values of the attribute a path names (without its sub-attribute), multi-valued
/// attributes flattened: what `attr[filter]` filters.
fn elements<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let top = resource
        .as_object()
        .and_then(|object| container(object, path.schema.as_deref()))
        .and_then(|c| get_ci(c, &path.name));
    flatten(top)
}

/// Every value the path reaches, multi-valued attributes flattened. A multi-valued complex
/// attribute compared without a sub-attribute is compared on its `value` sub-attribute.
fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let items = elements(resource, path);
    let multi_valued = items.len() > 1 || resource_is_array(resource, path);
    let mut out = Vec::new();
    for item in items {
        match (item, &path.sub) {
            (Value::Object(o), Some(sub)) => out.extend(flatten(get_ci(o, sub))),
            (Value::Object(o), None) if multi_valued => out.extend(flatten(get_ci(o, "value"))),
            (v, None) => out.push(v),
            (_, Some(_)) => {}
        }
    }
    out
}

fn resource_is_array(resource: &Value, path: &AttrPath) -> bool {
    resource
        .as_object()
        .and_then(|object| container(object, path.schema.as_deref()))
        .and_then(|c| get_ci(c, &path.name))
        .is_some_and(Value::is_array)
}

fn flatten(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    }
}

fn compare(found: &Value, op: Op, literal: &Value, exact: bool) -> bool {
    match (found, literal) {
        (Value::String(a), Value::String(b)) => {
            let (a, b) = if exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                Op::Co => a.contains(&b),
                Op::Sw => a.starts_with(&b),
                Op::Ew => a.ends_with(&b),
                // Timestamps are stored as `YYYY-MM-DDTHH:MM:SSZ`: they order as strings.
                op => ordered(a.cmp(&b), op),
            }
        }
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|o| ordered(o, op)),
            _ => false,
        },
        (Value::Bool(a), Value::Bool(b)) => match op {
            Op::Eq => a == b,
            Op::Ne => a != b,
            _ => false,
        },
        _ => false,
    }
}

fn ordered(o: Ordering, op: Op) -> bool {
    match op {
        Op::Eq => o == Ordering::Equal,
        Op::Ne => o != Ordering::Equal,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}
