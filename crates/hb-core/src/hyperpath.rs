//! HyperPATH: the singleton request grammar (spec 02).
//!
//! A *singleton* is one flat message whose `path` key holds a HyperPATH (a URL path plus
//! an optional query string) and whose other keys (HTTP headers, body fields, `method`,
//! …) are request parameters. [`from_singleton`] turns it into the message list
//! `[Base, Step1, Step2, …]` that the resolver folds over (spec 01 §4);
//! [`to_singleton`] is the inverse (spec 02 §5).
//!
//! The parser sees untrusted network input. It never panics, bounds its recursion
//! ([`MAX_NESTING`] levels of `( … )`), rejects over-long segments
//! ([`MAX_SEGMENT_LEN`]) and reports every rejection as a [`PathError`] whose text says
//! what was wrong (it becomes the body of a 400 response).
//!
//! ```
//! use hb_core::hyperpath::parse;
//! use hb_core::{Message, Value};
//!
//! let list = parse("/a/b&k=v").expect("valid path");
//! assert_eq!(
//!     list,
//!     vec![
//!         Value::Message(Message::new()),
//!         Value::Message(Message::new().with("path", "a")),
//!         Value::Message(Message::new().with("path", "b").with("k", "v")),
//!     ]
//! );
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::structured;
use crate::value::{Message, Value, is_id_like, is_private, normalize_key};

/// The longest path segment accepted, in bytes (spec 02 §2.3, `segment_too_long`).
pub const MAX_SEGMENT_LEN: usize = 512;

/// How deeply `( … )` sub-resolutions may nest (a guard against unbounded recursion;
/// the reference has no limit).
pub const MAX_NESTING: usize = 32;

/// How many elements one path may have (the reference has no limit; every element is
/// a message that the request's parameters are copied into).
pub const MAX_ELEMENTS: usize = 1024;

/// How much of an offending input an error message quotes.
const QUOTE_LIMIT: usize = 80;

/// Why a HyperPATH was rejected. Every variant becomes a 400 response, so each message
/// says what was wrong with the request.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PathError {
    /// The singleton has no `path` key.
    #[error("the request has no `path`")]
    MissingPath,
    /// The singleton's `path` is not a binary.
    #[error("the request `path` must be text, not a {0} value")]
    PathNotBinary(&'static str),
    /// A path segment is longer than [`MAX_SEGMENT_LEN`] (`segment_too_long`).
    #[error(
        "segment_too_long: a path segment is {len} bytes long, the limit is {MAX_SEGMENT_LEN} bytes (segment starts `{start}`)"
    )]
    SegmentTooLong {
        /// Length of the segment in bytes.
        len: usize,
        /// The start of the segment.
        start: String,
    },
    /// A malformed `%XX` escape (`cannot_decode`).
    #[error(
        "cannot_decode: invalid percent-escape in path segment `{0}` (`%` must be followed by two hex digits)"
    )]
    CannotDecode(String),
    /// A `+` inside the key part of a path segment (e.g. `/a+b`).
    #[error(
        "invalid path segment `{0}`: `+type` suffixes are only allowed on inline keys (`/a&k+integer=1`), query parameters and header names"
    )]
    PlusInKey(String),
    /// A parameter named `x.y` whose scope prefix is not a step index (`invalid_scope`).
    #[error(
        "invalid_scope: parameter `{0}` has exactly one `.` but the part before it is not a step index (a non-negative integer, base = 0)"
    )]
    InvalidScope(String),
    /// Sub-resolutions nested deeper than [`MAX_NESTING`].
    #[error("sub-resolutions `( … )` are nested more than {MAX_NESTING} levels deep")]
    TooDeep,
    /// More elements than [`MAX_ELEMENTS`].
    #[error("too_many_steps: the path has {0} elements; at most {MAX_ELEMENTS} are allowed")]
    TooManySteps(usize),
    /// A `~` with nothing after it.
    #[error("empty device name after `~` in path segment `{0}`")]
    EmptyDevice(String),
    /// A device written as a sub-resolution, `key~( … )`.
    #[error(
        "a device given as a sub-resolution (`~( … )`) is not supported, in path segment `{0}`"
    )]
    DeviceSubresolution(String),
    /// A typed key (`k+integer`) without `=value`.
    #[error("typed key `{key}+{ty}` has no value (write `{key}+{ty}=…`)")]
    TypedWithoutValue {
        /// The key name.
        key: String,
        /// The declared type.
        ty: String,
    },
    /// A typed key whose value is a parenthesised sub-path, e.g. `k+integer=(/a)`.
    #[error(
        "typed key `{key}+{ty}` cannot take a parenthesised sub-path as value (use `{key}=( … )` or a `{key}+resolve` header/query parameter)"
    )]
    TypedSubpath {
        /// The key name.
        key: String,
        /// The declared type.
        ty: String,
    },
    /// A typed header whose value is not text.
    #[error("typed parameter `{key}+{ty}` must have a text value, not a {found} value")]
    TypedNonBinary {
        /// The key name.
        key: String,
        /// The declared type.
        ty: String,
        /// The type of value found.
        found: &'static str,
    },
    /// The value of a typed key does not decode as its type (includes `unexpected_type`).
    #[error("cannot decode the value of `{key}+{ty}`: {reason}")]
    BadTypedValue {
        /// The key name.
        key: String,
        /// The declared type.
        ty: String,
        /// What the value decoder said.
        reason: String,
    },
    /// A key or device name that is not valid UTF-8 after percent-decoding.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A step message could not be normalised through the structured codec.
    #[error("cannot normalise a request message: {0}")]
    Codec(String),
}

// ---------------------------------------------------------------------------------------
// Lexical layer (spec 02 §2)
// ---------------------------------------------------------------------------------------

/// Index of the first byte of `s` that is one of `seps` at parenthesis depth 0.
fn find_depth0(s: &[u8], seps: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &c) in s.iter().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ if depth == 0 && seps.contains(&c) => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `s` at the first depth-0 byte of `seps`: `(before, Some((sep, after)))`.
fn split_first<'a>(s: &'a [u8], seps: &[u8]) -> (&'a [u8], Option<(u8, &'a [u8])>) {
    match find_depth0(s, seps) {
        Some(i) => (&s[..i], Some((s[i], &s[i + 1..]))),
        None => (s, None),
    }
}

/// Splits `s` on every depth-0 `sep`, keeping empty pieces.
fn split_all(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        match split_first(rest, &[sep]) {
            (piece, Some((_, after))) => {
                out.push(piece);
                rest = after;
            }
            (piece, None) => {
                out.push(piece);
                return out;
            }
        }
    }
}

/// The non-empty, parenthesis-aware `/`-separated parts of a raw path, without any
/// decoding (the splitting helper of spec 02 §8):
/// `/a/b&c=(/d/e)/f` → `["a", "b&c=(/d/e)", "f"]`.
pub fn path_parts(path: &[u8]) -> Vec<&[u8]> {
    split_all(path, b'/')
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect()
}

/// A bounded, lossy rendering of input for error messages.
fn quote(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    if text.chars().count() <= QUOTE_LIMIT {
        text.into_owned()
    } else {
        let mut short: String = text.chars().take(QUOTE_LIMIT).collect();
        short.push('…');
        short
    }
}

fn utf8<'a>(s: &'a [u8], what: &'static str) -> Result<&'a str, PathError> {
    std::str::from_utf8(s).map_err(|_| PathError::NotUtf8(what))
}

/// The inside of `( … )` if `s` is wrapped in parentheses.
fn unwrap_parens(s: &[u8]) -> Option<&[u8]> {
    if s.len() >= 2 && s.first() == Some(&b'(') && s.last() == Some(&b')') {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

/// Parses a singleton (a message whose `path` is a HyperPATH and whose other keys are
/// request parameters) into the message list `[Base, Step1, …]` (spec 02 §3.7).
/// Elements are `Value::Message`, `Value::Binary` (an ID), `Value::As` or
/// `Value::Resolve`.
pub fn from_singleton(singleton: &Message) -> Result<Vec<Value>, PathError> {
    let path = match singleton.get("path") {
        None => return Err(PathError::MissingPath),
        Some(Value::Binary(b)) => b,
        Some(other) => return Err(PathError::PathNotBinary(other.type_name())),
    };
    let params: Vec<(&str, &Value)> = singleton
        .iter()
        .filter(|(k, _)| k.as_ref() != "path")
        .map(|(k, v)| (k.as_ref(), v))
        .collect();
    parse_path(path, &params, 0)
}

/// Parses a bare HyperPATH (a singleton with only `path`).
pub fn parse(path: &str) -> Result<Vec<Value>, PathError> {
    parse_path(path.as_bytes(), &[], 0)
}

/// Parses a nested HyperPATH (the inside of `( … )` or a `+resolve` value).
fn parse_sub(path: &[u8], depth: usize) -> Result<Arc<Vec<Value>>, PathError> {
    parse_path(path, &[], depth + 1).map(Arc::new)
}

/// The parser proper: `path` with its query, plus the singleton's other keys.
fn parse_path(
    path: &[u8],
    headers: &[(&str, &Value)],
    depth: usize,
) -> Result<Vec<Value>, PathError> {
    if depth > MAX_NESTING {
        return Err(PathError::TooDeep);
    }
    let (path_part, query) = match split_first(path, b"?") {
        (p, Some((_, q))) => (p, Some(q)),
        (p, None) => (p, None),
    };

    // §2.3: segments, decoded twice and re-split.
    let mut elements = Vec::new();
    for raw in path_parts(path_part) {
        if raw.len() > MAX_SEGMENT_LEN {
            return Err(PathError::SegmentTooLong {
                len: raw.len(),
                start: quote(&raw[..QUOTE_LIMIT.min(raw.len())]),
            });
        }
        let bad = || PathError::CannotDecode(quote(raw));
        let once = structured::percent_decode(raw).ok_or_else(bad)?;
        let twice = structured::percent_decode(&once).ok_or_else(bad)?;
        for piece in path_parts(&twice) {
            elements.push(parse_segment(piece, depth)?);
        }
    }
    if elements.is_empty() {
        return Ok(elements);
    }
    if elements.len() > MAX_ELEMENTS {
        return Err(PathError::TooManySteps(elements.len()));
    }
    // §3.7 step 1: an empty base unless the first element provides one.
    if matches!(elements.first(), Some(Value::Message(_))) {
        elements.insert(0, Value::Message(Message::new()));
    }

    // §2.4: query parameters are merged over the other keys.
    let query_items = match query {
        Some(q) => parse_query(q, depth)?,
        None => Vec::new(),
    };
    if headers.is_empty() && query_items.is_empty() {
        // No parameters: only the normalisation of map elements remains.
        for el in &mut elements {
            normalise_element(el, &Message::new(), None)?;
        }
        return Ok(elements);
    }
    let mut raw_params: BTreeMap<Cow<'_, str>, Value> = BTreeMap::new();
    for (k, v) in headers {
        raw_params.insert(Cow::Borrowed(*k), (*v).clone());
    }
    for (k, v) in query_items {
        raw_params.insert(Cow::Owned(normalize_key(&k).into_owned()), v);
    }

    // §3.5–3.6: type, then group by scope.
    let mut globals = Message::new();
    let mut scoped: BTreeMap<usize, Message> = BTreeMap::new();
    for (key, value) in raw_params {
        let (name, ty) = match split_first(key.as_bytes(), b"+") {
            (n, Some((_, t))) => (utf8(n, "a parameter name")?, Some(utf8(t, "a type name")?)),
            (n, None) => (utf8(n, "a parameter name")?, None),
        };
        let value = match ty {
            Some(ty) => match typed_value(name, ty, value, depth)? {
                Some(v) => v,
                None => continue,
            },
            None => value,
        };
        match scope_of(name, &key)? {
            Some((n, rest)) => {
                if n < elements.len() {
                    scoped.entry(n).or_default().insert(rest, value);
                }
            }
            None => globals.insert(name, value),
        }
    }

    // §3.7 steps 3–5.
    for (i, el) in elements.iter_mut().enumerate() {
        normalise_element(el, &globals, scoped.get(&i))?;
    }
    Ok(elements)
}

/// `N.key` scoping (§3.6): `Some((N, key))`, `None` for a global key.
fn scope_of<'a>(name: &'a str, full_key: &str) -> Result<Option<(usize, &'a str)>, PathError> {
    let mut dots = name.match_indices('.');
    let Some((pos, _)) = dots.next() else {
        return Ok(None);
    };
    if dots.next().is_some() {
        return Ok(None);
    }
    let prefix = &name[..pos];
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PathError::InvalidScope(quote(full_key.as_bytes())));
    }
    // An index too large for usize is simply beyond the list (ignored).
    let n = prefix.parse::<usize>().unwrap_or(usize::MAX);
    Ok(Some((n, &name[pos + 1..])))
}

/// The query string (§2.4): not percent-decoded; `k` alone is `true`; `k=(p)` is a
/// sub-resolution.
fn parse_query(query: &[u8], depth: usize) -> Result<Vec<(String, Value)>, PathError> {
    let mut out = Vec::new();
    for item in split_all(query, b'&') {
        if item.is_empty() {
            continue;
        }
        let (k, v) = split_first(item, b"=");
        let key = utf8(k, "a query parameter name")?.to_owned();
        let value = match v {
            None => Value::boolean(true),
            Some((_, v)) => raw_value(v, depth)?,
        };
        out.push((key, value));
    }
    Ok(out)
}

/// An untyped inline or query value: `(p)` becomes a sub-resolution, anything else stays
/// raw bytes.
fn raw_value(v: &[u8], depth: usize) -> Result<Value, PathError> {
    match unwrap_parens(v) {
        Some(inner) => Ok(Value::Resolve(parse_sub(inner, depth)?)),
        None => Ok(Value::Binary(Bytes::copy_from_slice(v))),
    }
}

/// Applies a `+type` suffix (§3.5). `Ok(None)` means the key silently disappears (an
/// `integer` that decodes to something else, as in the reference).
fn typed_value(
    name: &str,
    ty: &str,
    value: Value,
    depth: usize,
) -> Result<Option<Value>, PathError> {
    let text = match &value {
        Value::Binary(b) => b,
        Value::Resolve(_) => {
            return Err(PathError::TypedSubpath {
                key: quote(name.as_bytes()),
                ty: quote(ty.as_bytes()),
            });
        }
        Value::Atom(a) if a.as_ref() == "true" => {
            return Err(PathError::TypedWithoutValue {
                key: quote(name.as_bytes()),
                ty: quote(ty.as_bytes()),
            });
        }
        other => {
            return Err(PathError::TypedNonBinary {
                key: quote(name.as_bytes()),
                ty: quote(ty.as_bytes()),
                found: other.type_name(),
            });
        }
    };
    if ty.eq_ignore_ascii_case("resolve") {
        return Ok(Some(Value::Resolve(parse_sub(text, depth)?)));
    }
    let integer = ty.eq_ignore_ascii_case("integer");
    match structured::decode_typed(ty, text) {
        Ok(v) if integer && !matches!(v, Value::Integer(_)) => Ok(None),
        Ok(v) => Ok(Some(v)),
        // The reference decodes `k+integer=1.5` to an unsupported value that the codec
        // round trip then drops: the key silently disappears (spec 02 §3.5).
        Err(_) if integer && is_sf_decimal(text) => Ok(None),
        Err(e) => Err(PathError::BadTypedValue {
            key: quote(name.as_bytes()),
            ty: quote(ty.as_bytes()),
            reason: e.to_string(),
        }),
    }
}

/// True if `text` is an RFC 8941 decimal item (`1.5`).
fn is_sf_decimal(text: &[u8]) -> bool {
    matches!(
        crate::sf::parse_item(text),
        Ok(crate::sf::Item {
            bare: crate::sf::BareItem::Decimal(_),
            ..
        })
    )
}

/// One decoded segment (§3.1–3.5).
fn parse_segment(seg: &[u8], depth: usize) -> Result<Value, PathError> {
    if is_id_like(seg) {
        return Ok(Value::Binary(Bytes::copy_from_slice(seg)));
    }
    if let Some(inner) = unwrap_parens(seg) {
        return Ok(Value::Resolve(parse_sub(inner, depth)?));
    }
    let (head, _) = split_first(seg, b"&~");
    let (mut msg, rest) = if find_depth0(head, b"=").is_some() {
        // The `Part=Value` shorthand that aoconnect sends (`compute/results=3`, spec 07
        // §1.2): `results=3` is `{path: results, results: "3"}`; `+type` may follow the
        // key (`results+integer=3`).
        let (name, _) = split_first(split_first(head, b"=").0, b"+");
        let mut msg = Message::new().with("path", Value::Binary(Bytes::copy_from_slice(name)));
        add_inline(&mut msg, head, depth)?;
        let rest = seg
            .get(head.len())
            .map(|sep| (*sep, &seg[head.len() + 1..]));
        (msg, rest)
    } else {
        let (key, rest) = split_first(seg, b"&~+");
        (
            Message::new().with("path", Value::Binary(Bytes::copy_from_slice(key))),
            rest,
        )
    };
    match rest {
        None => Ok(Value::Message(msg)),
        Some((b'+', _)) => Err(PathError::PlusInKey(quote(seg))),
        Some((b'~', after)) => {
            let (dev, inline) = split_first(after, b"&");
            if dev.is_empty() {
                return Err(PathError::EmptyDevice(quote(seg)));
            }
            if dev.first() == Some(&b'(') {
                return Err(PathError::DeviceSubresolution(quote(seg)));
            }
            let dev = utf8(dev, "a device name")?;
            if let Some((_, inline)) = inline {
                add_inline(&mut msg, inline, depth)?;
            }
            Ok(Value::As(Arc::from(dev), Box::new(Value::Message(msg))))
        }
        Some((_, inline)) => {
            add_inline(&mut msg, inline, depth)?;
            Ok(Value::Message(msg))
        }
    }
}

/// Inline keys `&k=v`, `&k`, `&k+type=v`, `&k=(p)` (§3.5).
fn add_inline(msg: &mut Message, inline: &[u8], depth: usize) -> Result<(), PathError> {
    for item in split_all(inline, b'&') {
        if item.is_empty() {
            continue;
        }
        let (name, value) = split_first(item, b"=");
        let (name, ty) = split_first(name, b"+");
        let name = utf8(name, "an inline key")?;
        let value = match value {
            None => Value::boolean(true),
            Some((_, v)) => raw_value(v, depth)?,
        };
        let value = match ty {
            None => value,
            Some((_, ty)) => match typed_value(name, utf8(ty, "a type name")?, value, depth)? {
                Some(v) => v,
                None => continue,
            },
        };
        msg.insert(name, value);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Assembly: parameters and normalisation (§3.7)
// ---------------------------------------------------------------------------------------

/// Applies the parameters to one element and normalises it, if it is a map element or
/// an `AS(dev, {path: ""…})`; other elements are left unchanged.
fn normalise_element(
    el: &mut Value,
    globals: &Message,
    scoped: Option<&Message>,
) -> Result<(), PathError> {
    match el {
        Value::Message(m) => {
            *m = normalise_step(merge_params(m, globals, scoped))?;
        }
        Value::As(_, inner) => {
            if let Value::Message(m) = inner.as_mut()
                && m.get("path").is_some_and(|p| p.as_bytes() == Some(b""))
            {
                *m = normalise_step(merge_params(m, globals, scoped))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Element keys, then global parameters, then scoped ones (each later one wins).
fn merge_params(el: &Message, globals: &Message, scoped: Option<&Message>) -> Message {
    let mut out = el.clone();
    for (k, v) in globals
        .iter()
        .chain(scoped.into_iter().flat_map(Message::iter))
    {
        out.insert_key(k.clone(), v.clone());
    }
    out
}

/// The structured-codec round trip of a step message (structured → TABM → structured):
/// lower-cases keys, drops private keys, applies `ao-types`, drops transaction-default
/// values. Messages made only of values whose round trip is the identity take an exact
/// shortcut; everything else goes through the codec.
fn normalise_step(m: Message) -> Result<Message, PathError> {
    if let Some(out) = fast_round_trip(&m, 0) {
        return Ok(out);
    }
    structured::to_tabm(&m)
        .and_then(|tabm| structured::from_tabm(&tabm))
        .map_err(|e| PathError::Codec(e.to_string()))
}

/// The round trip for messages it can do exactly, or `None` (use the codec).
fn fast_round_trip(m: &Message, depth: usize) -> Option<Message> {
    if depth > MAX_NESTING {
        return None;
    }
    let mut out: Option<Message> = None;
    for (k, v) in m.iter() {
        let key: &str = k;
        if key == "ao-types" || !key_is_normal(key) {
            return None;
        }
        if is_private(key)
            || key == "unsigned_id"
            || key == "content-digest"
            || is_tx_default(key, v)
        {
            out.get_or_insert_with(|| m.clone()).remove(key);
            continue;
        }
        match v {
            Value::Message(inner) => {
                let new = fast_round_trip(inner, depth + 1)?;
                if !new.ptr_eq(inner) && new != *inner {
                    out.get_or_insert_with(|| m.clone())
                        .insert_key(k.clone(), Value::Message(new));
                }
            }
            other if scalar_round_trips(other, true) => {}
            _ => return None,
        }
    }
    Some(out.unwrap_or_else(|| m.clone()))
}

fn key_is_normal(key: &str) -> bool {
    is_id_like(key.as_bytes()) || !key.chars().any(char::is_uppercase)
}

/// Values whose structured encoding decodes back to themselves. Inside lists, binaries
/// must be printable ASCII (RFC 8941 strings) and nested lists take the codec path.
fn scalar_round_trips(v: &Value, top: bool) -> bool {
    const MAX_DIGITS_15: u64 = 999_999_999_999_999;
    match v {
        Value::Binary(b) => top || b.iter().all(|c| (0x20..=0x7e).contains(c)),
        Value::Integer(i) => i.unsigned_abs() <= MAX_DIGITS_15,
        Value::Float(f) => f.is_finite(),
        Value::Atom(a) => a.bytes().all(|c| (0x20..=0x7e).contains(&c)),
        Value::Resolve(_) => top,
        Value::List(items) => top && items.iter().all(|i| scalar_round_trips(i, false)),
        Value::Message(_) | Value::As(..) | Value::Opaque(_) => false,
    }
}

/// Arweave transaction-record defaults that the structured codec drops (03 §2.6).
fn is_tx_default(key: &str, v: &Value) -> bool {
    let zeros = |b: &Bytes, n: usize| b.len() == n && b.iter().all(|&c| c == 0);
    match (key, v) {
        ("format", Value::Atom(a)) => a.as_ref() == "ans104",
        ("manifest", Value::Atom(a)) => a.as_ref() == "undefined",
        ("id" | "unsigned_id", Value::Binary(b)) => zeros(b, 32),
        ("owner" | "signature", Value::Binary(b)) => zeros(b, 512),
        ("last_tx" | "target" | "data" | "data_root", Value::Binary(b)) => b.is_empty(),
        ("tags" | "data_tree", Value::List(l)) => l.is_empty(),
        ("quantity" | "data_size" | "reward" | "denomination", Value::Integer(i)) => *i == 0,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// The inverse (§5)
// ---------------------------------------------------------------------------------------

/// The inverse (spec 02 §5): a message list back to a singleton.
///
/// IDs become `/ID`, sub-resolutions `/( … )`, map elements contribute their `path`;
/// `method` is copied unscoped; a key present in exactly one element `i` becomes
/// `i.key` (`i.key+integer` for integers), keys present in several stay global (last
/// value wins); a sub-resolution value of key `k` becomes `k+resolve`. Device-switch
/// elements are written back as `key~device&k=v…` segments.
pub fn to_singleton(list: &[Value]) -> Message {
    let mut path = Vec::new();
    let mut method: Option<Value> = None;
    let mut seen: BTreeMap<String, Vec<(usize, Value)>> = BTreeMap::new();
    for (i, el) in list.iter().enumerate() {
        match el {
            Value::Message(m) => {
                if let Some(p) = m.get("path").and_then(path_text) {
                    path.push(b'/');
                    encode_segment(&p, &mut path);
                }
                for (k, v) in m.iter() {
                    match (k.as_ref(), v) {
                        ("path", _) => {}
                        ("method", _) => method = Some(v.clone()),
                        (_, Value::Resolve(sub)) => seen
                            .entry(format!("{k}+resolve"))
                            .or_default()
                            .push((i, Value::Binary(Bytes::from(list_path(sub))))),
                        _ => seen.entry(k.to_string()).or_default().push((i, v.clone())),
                    }
                }
            }
            other => {
                path.push(b'/');
                element_segment(other, &mut path);
            }
        }
    }
    if path.is_empty() {
        path.push(b'/');
    }
    let mut out = Message::new().with("path", Value::Binary(Bytes::from(path)));
    if let Some(m) = method {
        out.insert("method", m);
    }
    for (k, mut occ) in seen {
        if occ.len() == 1
            && let Some((i, v)) = occ.pop()
        {
            match v {
                Value::Integer(n) => {
                    out.insert(&format!("{i}.{k}+integer"), Value::from(n.to_string()))
                }
                v => out.insert(&format!("{i}.{k}"), v),
            }
        } else if let Some((_, v)) = occ.pop() {
            out.insert(&k, v);
        }
    }
    out
}

/// The HyperPATH text of an in-flight value (a sub-resolution `( … )` or a device
/// switch `key~dev`), or `None` for any other value.
pub fn inflight_text(v: &Value) -> Option<Bytes> {
    match v {
        Value::Resolve(_) | Value::As(..) => {
            let mut out = Vec::new();
            element_segment(v, &mut out);
            Some(Bytes::from(out))
        }
        _ => None,
    }
}

/// A copy of `msg` in which every in-flight value, however deep, is replaced by its
/// HyperPATH text, so that the message can be hashed and encoded. Messages without
/// in-flight values are returned as they are.
pub fn settle_inflight(msg: &Message) -> Message {
    fn has(v: &Value) -> bool {
        match v {
            Value::Resolve(_) | Value::As(..) => true,
            Value::Message(m) => m.iter().any(|(_, v)| has(v)),
            Value::List(l) => l.iter().any(has),
            _ => false,
        }
    }
    fn settle(v: &Value) -> Value {
        match v {
            Value::Message(m) => Value::Message(settle_inflight(m)),
            Value::List(l) => Value::list(l.iter().map(settle).collect()),
            other => inflight_text(other)
                .map(Value::Binary)
                .unwrap_or_else(|| other.clone()),
        }
    }
    if !msg.iter().any(|(_, v)| has(v)) {
        return msg.clone();
    }
    msg.iter().map(|(k, v)| (k.clone(), settle(v))).collect()
}

/// The path (with its leading `/`) of a message list, used for sub-resolutions.
fn list_path(list: &[Value]) -> Vec<u8> {
    let mut path = Vec::new();
    for el in list {
        match el {
            Value::Message(m) => {
                if let Some(p) = m.get("path").and_then(path_text) {
                    path.push(b'/');
                    encode_segment(&p, &mut path);
                }
            }
            other => {
                path.push(b'/');
                element_segment(other, &mut path);
            }
        }
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

/// Writes a non-map element as one path segment (without the leading `/`).
fn element_segment(el: &Value, out: &mut Vec<u8>) {
    match el {
        Value::Resolve(sub) => {
            let inner = list_path(sub);
            out.push(b'(');
            out.extend_from_slice(inner.strip_prefix(b"/").unwrap_or(&inner));
            out.push(b')');
        }
        Value::As(dev, inner) => match inner.as_ref() {
            Value::Message(m) => {
                if let Some(p) = m.get("path").and_then(path_text) {
                    encode_segment(&p, out);
                }
                out.push(b'~');
                encode_segment(dev.as_bytes(), out);
                for (k, v) in m.iter().filter(|(k, _)| k.as_ref() != "path") {
                    inline_item(k, v, out);
                }
            }
            other => {
                if let Some(p) = path_text(other) {
                    encode_segment(&p, out);
                }
                out.push(b'~');
                encode_segment(dev.as_bytes(), out);
            }
        },
        other => {
            if let Some(p) = path_text(other) {
                encode_segment(&p, out);
            }
        }
    }
}

/// One `&k=v` inline item of a device-switch segment.
fn inline_item(k: &str, v: &Value, out: &mut Vec<u8>) {
    let (text, ty): (Cow<'_, [u8]>, Option<&str>) = match v {
        Value::Binary(b) => (Cow::Borrowed(b), None),
        Value::Atom(a) if a.as_ref() == "true" => {
            out.push(b'&');
            encode_segment(k.as_bytes(), out);
            return;
        }
        Value::Integer(n) => (Cow::Owned(n.to_string().into_bytes()), Some("integer")),
        Value::Resolve(sub) => {
            out.push(b'&');
            encode_segment(k.as_bytes(), out);
            out.extend_from_slice(b"=(");
            out.extend_from_slice(&list_path(sub));
            out.push(b')');
            return;
        }
        other => match structured::encode_value(other) {
            Ok((text, ty)) => (Cow::Owned(text.to_vec()), ty),
            Err(_) => return,
        },
    };
    out.push(b'&');
    encode_segment(k.as_bytes(), out);
    if let Some(ty) = ty {
        out.push(b'+');
        out.extend_from_slice(ty.as_bytes());
    }
    out.push(b'=');
    encode_segment(&text, out);
}

/// The text of a `path` value.
fn path_text(v: &Value) -> Option<Cow<'_, [u8]>> {
    match v {
        Value::Binary(b) => Some(Cow::Borrowed(b)),
        Value::Atom(a) => Some(Cow::Borrowed(a.as_bytes())),
        Value::Integer(i) => Some(Cow::Owned(i.to_string().into_bytes())),
        _ => None,
    }
}

/// Appends `text` escaped so that the parser's double percent-decoding gives it back:
/// `%` becomes `%2525`; `?`, `#`, control, space and non-ASCII bytes become `%XX`.
/// (Structural characters `/ & ~ + = ( )` cannot be protected: the parser splits on
/// them after decoding.)
fn encode_segment(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in text {
        match c {
            b'%' => out.extend_from_slice(b"%2525"),
            b'?' | b'#' | 0..=0x20 | 0x7f..=0xff => {
                out.push(b'%');
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use proptest::prelude::*;

    fn step(path: &str) -> Value {
        Value::Message(Message::new().with("path", path))
    }

    fn base() -> Value {
        Value::Message(Message::new())
    }

    #[test]
    fn simple_paths() {
        assert_eq!(parse("/a").unwrap(), vec![base(), step("a")]);
        assert_eq!(parse("a/b").unwrap(), vec![base(), step("a"), step("b")]);
        assert_eq!(parse("/").unwrap(), vec![]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn path_parts_helper() {
        let parts = |p: &str| -> Vec<String> {
            path_parts(p.as_bytes())
                .into_iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()
        };
        assert_eq!(parts("/a/b&c=(/d/e)/f"), ["a", "b&c=(/d/e)", "f"]);
        assert_eq!(parts("/a/(x/y/z)/c"), ["a", "(x/y/z)", "c"]);
        assert_eq!(parts("/a/b&K1=V1/c&K2=V2"), ["a", "b&K1=V1", "c&K2=V2"]);
        assert_eq!(parts("//a//b/"), ["a", "b"]);
        assert_eq!(parts("/a&b=(c/d"), ["a&b=(c/d"]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            structured::percent_decode(b"a%41%2f").unwrap().as_ref(),
            b"aA/"
        );
        assert!(structured::percent_decode(b"a%4").is_none());
        assert!(structured::percent_decode(b"a%G1").is_none());
        assert!(structured::percent_decode(b"%").is_none());
        assert_eq!(structured::percent_decode(b"a+b").unwrap().as_ref(), b"a+b");
    }

    #[test]
    fn nesting_limit() {
        // The innermost step is 44 bytes long so that no level is ID-sized (32/42/43).
        let nested = |n: usize| format!("/{}{}{}", "(".repeat(n), "a".repeat(44), ")".repeat(n));
        assert!(parse(&nested(MAX_NESTING)).is_ok());
        assert_eq!(parse(&nested(MAX_NESTING + 1)), Err(PathError::TooDeep));
        // Deep header `+resolve` values are bounded too.
        let deep = format!("/{}", nested(150).trim_start_matches('/'));
        let s = Message::new()
            .with("path", "/a")
            .with("k+resolve", deep.as_str());
        assert_eq!(from_singleton(&s), Err(PathError::TooDeep));
    }

    #[test]
    fn errors_are_descriptive() {
        let e = parse("/a+b").unwrap_err();
        assert!(e.to_string().contains("a+b"), "{e}");
        let e = parse("/a?x.y=1").unwrap_err();
        assert!(e.to_string().starts_with("invalid_scope"), "{e}");
        let e = parse(&format!("/{}", "x".repeat(600))).unwrap_err();
        assert!(e.to_string().starts_with("segment_too_long"), "{e}");
        let e = parse("/a%ZZ").unwrap_err();
        assert!(e.to_string().starts_with("cannot_decode"), "{e}");
    }

    #[test]
    fn fast_round_trip_drops_defaults_and_private_keys() {
        let m = Message::new()
            .with("a", "1")
            .with("data", "")
            .with("target", "t")
            .with("quantity", Value::Integer(0))
            .with("priv-x", "secret")
            .with("e", "");
        let out = fast_round_trip(&m, 0).unwrap();
        assert_eq!(
            out,
            Message::new()
                .with("a", "1")
                .with("target", "t")
                .with("e", "")
        );
        let untouched = Message::new().with("a", "1").with("n", Value::Integer(5));
        assert!(fast_round_trip(&untouched, 0).unwrap().ptr_eq(&untouched));
        assert!(fast_round_trip(&Message::new().with("ao-types", "a=\"integer\""), 0).is_none());
    }

    #[test]
    fn to_singleton_examples() {
        let l = vec![
            Value::Message(Message::new().with("test-key", "v")),
            Value::Message(Message::new().with("path", "a").with("test-key", "v")),
        ];
        assert_eq!(
            to_singleton(&l),
            Message::new().with("path", "/a").with("test-key", "v")
        );
        let l = vec![
            base(),
            step("a"),
            Value::Message(Message::new().with("path", "b").with("test-key", 123i64)),
            step("c"),
        ];
        assert_eq!(
            to_singleton(&l),
            Message::new()
                .with("path", "/a/b/c")
                .with("2.test-key+integer", "123")
        );
    }

    fn key_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,8}"
    }

    prop_compose! {
        fn simple_list()(
            globals in prop::collection::btree_map(key_name(), "[ -~]{1,12}", 0..3),
            base_only in prop::collection::btree_map(key_name(), "[ -~]{1,12}", 0..3),
            steps in prop::collection::vec(
                (key_name(), prop::collection::btree_map(key_name(), "[ -~]{1,12}", 0..3)),
                1..5,
            ),
        ) -> Vec<Value> {
            let mut base = Message::new();
            for (k, v) in &globals {
                base.insert(&format!("g-{k}"), Value::from(v.as_str()));
            }
            for (k, v) in &base_only {
                base.insert(&format!("b-{k}"), Value::from(v.as_str()));
            }
            let mut list = vec![Value::Message(base)];
            for (i, (p, own)) in steps.iter().enumerate() {
                let mut m = Message::new().with("path", p.as_str());
                for (k, v) in &globals {
                    m.insert(&format!("g-{k}"), Value::from(v.as_str()));
                }
                for (k, v) in own {
                    m.insert(&format!("s{i}-{k}"), Value::from(v.as_str()));
                }
                list.push(Value::Message(m));
            }
            list
        }
    }

    fn simple_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[ -~]{0,6}".prop_map(|s| Value::from(s.as_str())),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::bin),
            (-1_000_000_000_000_000i64..1_000_000_000_000_000).prop_map(Value::Integer),
            Just(Value::Integer(0)),
            (-1e6f64..1e6).prop_map(Value::Float),
            "[a-z_]{0,5}".prop_map(|s| Value::atom(&s)),
            Just(Value::atom("ans104")),
            prop::collection::vec(
                prop_oneof![
                    "[ -~]{0,4}".prop_map(|s| Value::from(s.as_str())),
                    (-99i64..99).prop_map(Value::Integer),
                    "[a-z]{1,4}".prop_map(|s| Value::atom(&s)),
                ],
                0..3
            )
            .prop_map(Value::list),
        ]
    }

    fn simple_message() -> impl Strategy<Value = Message> {
        let key = prop_oneof![
            "[a-z]{1,4}".boxed(),
            Just("data".to_owned()).boxed(),
            Just("quantity".to_owned()).boxed(),
            Just("target".to_owned()).boxed(),
            Just("format".to_owned()).boxed(),
            Just("tags".to_owned()).boxed(),
            Just("priv-x".to_owned()).boxed(),
            Just("content-digest".to_owned()).boxed(),
        ];
        let leaf = prop::collection::btree_map(key.clone(), simple_value(), 0..5);
        prop::collection::btree_map(
            key,
            prop_oneof![
                simple_value(),
                leaf.prop_map(|m| Value::Message(Message::from_pairs(m)))
            ],
            0..6,
        )
        .prop_map(Message::from_pairs)
    }

    proptest! {
        #[test]
        fn fast_round_trip_matches_codec(m in simple_message()) {
            if let Some(fast) = fast_round_trip(&m, 0) {
                let slow = structured::to_tabm(&m).and_then(|t| structured::from_tabm(&t));
                prop_assert_eq!(Ok(fast), slow);
            }
        }

        #[test]
        fn from_singleton_never_panics(path in ".{0,200}", header in ".{0,40}", value in ".{0,40}") {
            let _ = parse(&path);
            let s = Message::new()
                .with("path", path.as_str())
                .with(&header, value.as_str())
                .with("method", "GET");
            let _ = from_singleton(&s);
        }

        #[test]
        fn from_singleton_never_panics_on_path_syntax(
            path in "[/a-c()&~+=?%.0-9]{0,80}",
            header in "[a-c0-9.+]{1,12}",
        ) {
            let _ = parse(&path);
            let s = Message::new().with("path", path.as_str()).with(&header, "1");
            let _ = from_singleton(&s);
        }

        #[test]
        fn from_to_round_trip(list in simple_list()) {
            let singleton = to_singleton(&list);
            let back = from_singleton(&singleton).unwrap();
            prop_assert_eq!(back, list);
        }
    }
}
