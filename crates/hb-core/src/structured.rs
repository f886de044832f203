//! `structured@1.0`: rich messages <-> TABM, `ao-types`, typed value text (spec 03 §2–3).
//!
//! A TABM ("type-annotated binary message", 01 §2.6) holds only binaries and nested
//! TABMs; every other value is written as text and its type recorded in the per-level
//! `ao-types` dictionary. [`to_tabm`] and [`from_tabm`] convert in both directions,
//! [`decode_typed`] is the value decoder shared with typed HyperPATH keys (02 §3.5).
//!
//! Deliberate deviation (spec 03 §2.5): [`decode_typed`] accepts integers of more than 15
//! digits (up to the `i64` range); the reference rejects them although it writes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::sf::{self, BareItem, Member};
use crate::value::{Key, Message, Value, is_id_like, is_private, message_to_list, normalize_key};

/// What can go wrong converting between rich messages and TABM.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CodecError {
    /// A type name that the value decoder does not know (`binary` included).
    #[error("unexpected type `{0}`")]
    UnexpectedType(String),
    /// Text that does not parse as the declared type.
    #[error("cannot decode {ty} value: {reason}")]
    BadValue { ty: String, reason: String },
    /// A value that cannot be encoded.
    #[error("cannot encode value of key `{0}`")]
    Unencodable(String),
    /// Anything else, with a reason.
    #[error("{0}")]
    Other(String),
}

fn bad(ty: &str, reason: impl Into<String>) -> CodecError {
    CodecError::BadValue {
        ty: ty.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------

/// True when `k` is already in normalised form (01 §2.2).
fn key_is_normal(k: &str) -> bool {
    is_id_like(k.as_bytes()) || !k.chars().any(char::is_uppercase)
}

/// The normalised form of a key, sharing storage when it already is normalised.
fn norm_key(k: &Key) -> Key {
    if key_is_normal(k) {
        k.clone()
    } else {
        Key::from(normalize_key(k))
    }
}

/// Escapes an `ao-types` key (spec 03 §3): bytes outside `a–z 0–9 . - _ / ? & +`
/// become `%` and two lower-case hex digits.
pub fn escape_key(key: &str) -> String {
    fn keep(c: u8) -> bool {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'.' | b'-' | b'_' | b'/' | b'?' | b'&' | b'+')
    }
    if key.bytes().all(keep) {
        return key.to_owned();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(key.len() * 3);
    for c in key.bytes() {
        if keep(c) {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0xf)]));
        }
    }
    out
}

/// Decodes `%XX` escapes (either case of hex digit); every other byte, `+` included,
/// stays as it is. `None` on a bad escape. Borrows when there is nothing to decode.
pub(crate) fn percent_decode(s: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if !s.contains(&b'%') {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

/// Reverses [`escape_key`]: `%XX` (either case of hex digit) becomes the byte. Fails
/// when the result is not UTF-8.
pub fn unescape_key(key: &str) -> Result<String, CodecError> {
    if !key.contains('%') {
        return Ok(key.to_owned());
    }
    let out = percent_decode(key.as_bytes())
        .ok_or_else(|| bad("ao-types", format!("bad escape in key `{key}`")))?
        .into_owned();
    String::from_utf8(out).map_err(|_| bad("ao-types", format!("key `{key}` is not UTF-8")))
}

// ---------------------------------------------------------------------------------
// Rich -> TABM
// ---------------------------------------------------------------------------------

/// Keys the structured codec drops because they are regenerated (spec 03 §2.1 step 2).
pub(crate) fn is_regenerable(k: &str) -> bool {
    k == "unsigned_id" || k == "content-digest"
}

pub(crate) fn is_empty_message(m: &Message) -> bool {
    m.is_empty() || (m.len() == 1 && m.contains("priv"))
}

/// True when `msg` is already exactly what [`to_tabm`] would produce from it, so that
/// the conversion can share it (the common case on the hot path: TABMs, and messages of
/// binaries only).
fn is_clean_tabm(msg: &Message) -> bool {
    msg.iter().all(|(k, v)| {
        key_is_normal(k)
            && !is_private(k)
            && !is_regenerable(k)
            && match v {
                Value::Binary(b) => !b.is_empty(),
                Value::Message(m) => !is_empty_message(m) && is_clean_tabm(m),
                Value::Resolve(_) | Value::As(..) => true,
                _ => false,
            }
    })
}

/// Rich message -> TABM (the reference codec's `from`, spec 03 §2.1).
pub fn to_tabm(msg: &Message) -> Result<Message, CodecError> {
    if is_clean_tabm(msg) {
        return Ok(msg.clone());
    }
    let mut out: BTreeMap<Key, Value> = BTreeMap::new();
    let mut types: Vec<(Key, &'static str)> = Vec::new();
    let mut renamed = false;
    for (k, v) in msg.iter() {
        let key = norm_key(k);
        renamed |= !Arc::ptr_eq(&key, k);
        if is_private(&key) || is_regenerable(&key) {
            continue;
        }
        let (value, ty): (Option<Value>, Option<&'static str>) = match v {
            Value::Binary(b) if b.is_empty() => (None, Some("empty-binary")),
            Value::Binary(_) | Value::Resolve(_) | Value::As(..) => (Some(v.clone()), None),
            Value::List(l) if l.is_empty() => (None, Some("empty-list")),
            Value::Message(m) if is_empty_message(m) => (None, Some("empty-message")),
            Value::Message(m) => (Some(Value::Message(to_tabm(m)?)), None),
            Value::List(l) if matches!(l[0], Value::Message(_) | Value::List(_)) => {
                let numbered = numbered_message(l);
                (Some(Value::Message(to_tabm(&numbered)?)), Some("list"))
            }
            other => {
                let (text, ty) =
                    encode_value(other).map_err(|_| CodecError::Unencodable(key.to_string()))?;
                (Some(Value::Binary(text)), ty)
            }
        };
        if let Some(ty) = ty {
            types.push((key.clone(), ty));
        } else if renamed {
            // A later key normalising onto an earlier typed one replaces it.
            types.retain(|(k, _)| *k != key);
        }
        match value {
            Some(v) => {
                out.insert(key, v);
            }
            None => {
                out.remove(&key);
            }
        }
    }
    if !types.is_empty() {
        if renamed {
            // Keep the last entry of each key, in key order.
            types.reverse();
            types.sort_by(|a, b| a.0.cmp(&b.0));
            types.dedup_by(|a, b| a.0 == b.0);
        }
        out.insert(
            Key::from("ao-types"),
            Value::Binary(Bytes::from(types_dictionary(&types))),
        );
    }
    Ok(out.into_iter().collect())
}

/// `{"1": a, "2": b, …}` from a list.
fn numbered_message(items: &[Value]) -> Message {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| (Key::from((i + 1).to_string()), v.clone()))
        .collect()
}

/// `k1="t1", k2="t2"` with escaped keys.
fn types_dictionary(types: &[(Key, &'static str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(types.len() * 20);
    for (n, (k, ty)) in types.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(escape_key(k).as_bytes());
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(ty.as_bytes());
        out.push(b'"');
    }
    out
}

/// Encodes one value as (TABM text, type name); `None` type for plain binaries.
pub fn encode_value(v: &Value) -> Result<(Bytes, Option<&'static str>), CodecError> {
    match v {
        Value::Binary(b) => Ok((b.clone(), None)),
        Value::Integer(i) => Ok((Bytes::from(i.to_string()), Some("integer"))),
        Value::Float(f) => Ok((Bytes::from(float_to_text(*f)), Some("float"))),
        Value::Atom(a) => Ok((Bytes::from(sf::string_item(a.as_bytes())), Some("atom"))),
        Value::List(l) => {
            let mut out = Vec::new();
            write_list_text(&mut out, l)?;
            Ok((Bytes::from(out), Some("list")))
        }
        Value::Message(_) | Value::Resolve(_) | Value::As(..) | Value::Opaque(_) => {
            Err(CodecError::Unencodable(v.type_name().to_owned()))
        }
    }
}

/// The list text of spec 03 §2.4.
pub(crate) fn write_list_text(out: &mut Vec<u8>, items: &[Value]) -> Result<(), CodecError> {
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        match item {
            Value::Binary(b) => sf::write_string(out, b),
            other => {
                let mut inner = Vec::with_capacity(32);
                inner.extend_from_slice(b"(ao-type-");
                match other {
                    Value::List(l) => {
                        inner.extend_from_slice(b"list) ");
                        write_list_text(&mut inner, l)?;
                    }
                    _ => {
                        let (text, ty) = encode_value(other)?;
                        inner.extend_from_slice(ty.unwrap_or("binary").as_bytes());
                        inner.extend_from_slice(b") ");
                        inner.extend_from_slice(&text);
                    }
                }
                sf::write_string(out, &inner);
            }
        }
    }
    Ok(())
}

/// Float text like C's `%.20e` (spec 03 §2.3): Rust's `{:.20e}` gives the same exactly
/// rounded digits, with the exponent written `e-1` instead of `e-01`.
pub fn float_to_text(f: f64) -> String {
    let s = format!("{f:.20e}");
    let Some(epos) = s.rfind('e') else {
        return s; // inf / NaN
    };
    let (mantissa, exp) = s.split_at(epos);
    let exp = &exp[1..];
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let mut out = String::with_capacity(mantissa.len() + 5);
    out.push_str(mantissa);
    out.push('e');
    out.push(sign);
    if digits.len() < 2 {
        out.push('0');
    }
    out.push_str(digits);
    out
}

// ---------------------------------------------------------------------------------
// TABM -> rich
// ---------------------------------------------------------------------------------

/// Parses an `ao-types` dictionary into (unescaped key, type name) pairs, sorted by key.
fn parse_types(text: &[u8]) -> Result<Vec<(String, String)>, CodecError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let dict = sf::parse_dictionary(text).map_err(|e| bad("ao-types", e.to_string()))?;
    let mut out = Vec::with_capacity(dict.len());
    for (k, m) in dict {
        let ty = match m {
            Member::Item(sf::Item {
                bare: BareItem::String(s) | BareItem::ByteSeq(s),
                ..
            }) => s,
            Member::Item(sf::Item {
                bare: BareItem::Token(t),
                ..
            }) => t.into_bytes(),
            _ => return Err(bad("ao-types", format!("type of `{k}` is not a string"))),
        };
        let ty = String::from_utf8(ty).map_err(|_| bad("ao-types", "type name is not UTF-8"))?;
        let key = normalize_key(&unescape_key(&k)?).into_owned();
        out.push((key, ty));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// TABM -> rich message (the reference codec's `to`, spec 03 §2.2), including the
/// transaction-default filtering of §2.6.
pub fn from_tabm(tabm: &Message) -> Result<Message, CodecError> {
    let types = match tabm.get("ao-types") {
        None => Vec::new(),
        Some(Value::Binary(b)) => parse_types(b)?,
        Some(_) => return Err(bad("ao-types", "not a binary")),
    };
    let type_of = |k: &str| -> Option<&str> {
        types
            .binary_search_by(|(tk, _)| tk.as_str().cmp(k))
            .ok()
            .map(|i| types[i].1.as_str())
    };
    let mut out: BTreeMap<Key, Value> = BTreeMap::new();
    for (k, ty) in &types {
        let empty = match ty.as_str() {
            "empty-binary" => Value::Binary(Bytes::new()),
            "empty-list" => Value::list(Vec::new()),
            "empty-message" => Value::Message(Message::new()),
            _ => continue,
        };
        out.insert(Key::from(k.as_str()), empty);
    }
    for (k, v) in tabm.iter() {
        if &**k == "ao-types" {
            continue;
        }
        let key = norm_key(k);
        let ty = type_of(&key);
        let value = match v {
            Value::Binary(b) => match ty {
                Some(t) if !t.starts_with("empty-") => decode_typed(t, b)?,
                _ => v.clone(),
            },
            Value::Message(m) => {
                let decoded = from_tabm(m)?;
                if ty.is_some_and(|t| t.eq_ignore_ascii_case("list")) {
                    let items = message_to_list(&decoded)
                        .ok_or_else(|| bad("list", format!("`{key}` is not a numbered map")))?;
                    Value::list(items)
                } else {
                    Value::Message(decoded)
                }
            }
            other => other.clone(),
        };
        out.insert(key, value);
    }
    out.retain(|k, v| !is_tx_default(k, v));
    Ok(out.into_iter().collect())
}

/// True when `v` is the Arweave transaction-record default of the field named `k`
/// (spec 03 §2.6).
fn is_tx_default(k: &str, v: &Value) -> bool {
    fn zeros(v: &Value, n: usize) -> bool {
        v.as_bytes()
            .is_some_and(|b| b.len() == n && b.iter().all(|&c| c == 0))
    }
    fn empty_bin(v: &Value) -> bool {
        v.as_bytes().is_some_and(<[u8]>::is_empty)
    }
    fn empty_list(v: &Value) -> bool {
        matches!(v, Value::List(l) if l.is_empty())
    }
    match k {
        "format" => v.is_atom("ans104"),
        "id" | "unsigned_id" => zeros(v, 32),
        "owner" | "signature" => zeros(v, 512),
        "last_tx" | "target" | "data" | "data_root" => empty_bin(v),
        "tags" | "data_tree" => empty_list(v),
        "quantity" | "data_size" | "reward" | "denomination" => matches!(v, Value::Integer(0)),
        "manifest" => v.is_atom("undefined"),
        _ => false,
    }
}

/// Decodes the text of a typed value (spec 03 §2.5): `integer`, `float`, `atom`, `list`,
/// `map`; type names are case-insensitive.
pub fn decode_typed(ty: &str, text: &[u8]) -> Result<Value, CodecError> {
    if ty.eq_ignore_ascii_case("integer") {
        decode_integer(text)
    } else if ty.eq_ignore_ascii_case("float") {
        decode_float(text)
    } else if ty.eq_ignore_ascii_case("atom") {
        let item = sf::parse_item(text).map_err(|e| bad("atom", e.to_string()))?;
        match item.bare {
            BareItem::String(s) => String::from_utf8(s)
                .map(|s| Value::Atom(Arc::from(s)))
                .map_err(|_| bad("atom", "not UTF-8")),
            BareItem::Token(t) => Ok(Value::Atom(Arc::from(t))),
            BareItem::Boolean(b) => Ok(Value::boolean(b)),
            _ => Err(bad("atom", "not a string or token")),
        }
    } else if ty.eq_ignore_ascii_case("list") {
        let list = match sf::parse_list(text) {
            Ok(list) => list,
            // aoconnect writes lists unquoted (spec 07 §1.2, §7 item 5).
            Err(e) => return aoconnect_list(text).ok_or_else(|| bad("list", e.to_string())),
        };
        let mut out = Vec::with_capacity(list.len());
        for m in list {
            match m {
                Member::Item(i) => out.push(item_value(i.bare)?),
                Member::InnerList(..) => return Err(bad("list", "inner lists are not supported")),
            }
        }
        Ok(Value::list(out))
    } else if ty.eq_ignore_ascii_case("map") {
        let dict = sf::parse_dictionary(text).map_err(|e| bad("map", e.to_string()))?;
        let mut out = Message::new();
        for (k, m) in dict {
            match m {
                Member::Item(i) => out.insert(&k, item_value(i.bare)?),
                Member::InnerList(..) => return Err(bad("map", "inner lists are not supported")),
            }
        }
        Ok(Value::Message(out))
    } else {
        Err(CodecError::UnexpectedType(ty.to_owned()))
    }
}

/// An integer: an RFC 8941 integer item, or (deliberately more permissive than the
/// reference) a plain decimal integer of more than 15 digits that fits in `i64`.
fn decode_integer(text: &[u8]) -> Result<Value, CodecError> {
    match sf::parse_item(text) {
        Ok(sf::Item {
            bare: BareItem::Integer(i),
            ..
        }) => Ok(Value::Integer(i)),
        Ok(_) => Err(bad("integer", "not an integer")),
        Err(e) => {
            let t = text.trim_ascii();
            let digits = t.strip_prefix(b"-").unwrap_or(t);
            if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .map(Value::Integer)
                    .ok_or_else(|| bad("integer", "out of range"))
            } else {
                Err(bad("integer", e.to_string()))
            }
        }
    }
}

/// The Erlang float syntax: `[+-]digits.digits([eE][+-]digits)?`.
fn decode_float(text: &[u8]) -> Result<Value, CodecError> {
    let err = || {
        bad(
            "float",
            format!("`{}` is not a float", String::from_utf8_lossy(text)),
        )
    };
    let digits = |s: &[u8]| -> usize { s.iter().take_while(|c| c.is_ascii_digit()).count() };
    let mut rest = text;
    if let Some((b'+' | b'-', r)) = rest.split_first() {
        rest = r;
    }
    let n = digits(rest);
    if n == 0 || rest.get(n) != Some(&b'.') {
        return Err(err());
    }
    rest = &rest[n + 1..];
    let n = digits(rest);
    if n == 0 {
        return Err(err());
    }
    rest = &rest[n..];
    if let Some((b'e' | b'E', r)) = rest.split_first() {
        rest = r;
        if let Some((b'+' | b'-', r)) = rest.split_first() {
            rest = r;
        }
        let n = digits(rest);
        if n == 0 {
            return Err(err());
        }
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        return Err(err());
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| f.is_finite())
        .map(Value::Float)
        .ok_or_else(err)
}

/// A list or dictionary member's bare value as a rich value (spec 03 §2.5 `list`).
/// A list in aoconnect's dialect: members joined by `,` without quoting, each
/// `(ao-type-<type>) <text>` or plain text (`(ao-type-binary) x,(ao-type-integer) 2`).
/// `None` if a member is not of that shape (or is quoted: then it was meant as RFC 8941).
fn aoconnect_list(text: &[u8]) -> Option<Value> {
    let mut out = Vec::new();
    for member in text.split(|&b| b == b',') {
        let member = member.trim_ascii_start();
        if member.first() == Some(&b'"') {
            // A quoted string: RFC 8941 syntax, which did not parse.
            return None;
        }
        let Some(rest) = member.strip_prefix(b"(ao-type-") else {
            out.push(Value::Binary(Bytes::copy_from_slice(member)));
            continue;
        };
        let split = rest.windows(2).position(|w| w == b") ")?;
        let ty = std::str::from_utf8(rest.get(..split)?).ok()?;
        let value = rest.get(split + 2..)?;
        out.push(if ty.eq_ignore_ascii_case("binary") {
            Value::Binary(Bytes::copy_from_slice(value))
        } else {
            decode_typed(ty, value).ok()?
        });
    }
    Some(Value::list(out))
}

fn item_value(bare: BareItem) -> Result<Value, CodecError> {
    Ok(match bare {
        BareItem::Integer(i) => Value::Integer(i),
        BareItem::Decimal(d) => Value::Float(d),
        BareItem::String(s) => {
            if let Some(rest) = s.strip_prefix(b"(ao-type-") {
                let split = rest
                    .windows(2)
                    .position(|w| w == b") ")
                    .ok_or_else(|| bad("list", "typed item without `) `"))?;
                let ty = std::str::from_utf8(&rest[..split])
                    .map_err(|_| bad("list", "type name is not UTF-8"))?;
                return decode_typed(ty, &rest[split + 2..]);
            }
            Value::Binary(Bytes::from(s))
        }
        BareItem::Token(t) => Value::Atom(Arc::from(t)),
        BareItem::ByteSeq(b) => Value::Binary(Bytes::from(b)),
        BareItem::Boolean(b) => Value::boolean(b),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pairs: Vec<(&str, Value)>) -> Message {
        Message::from_pairs(pairs)
    }

    /// Spec 07 §7 item 5: aoconnect's `ao-types` (`k=integer`, unquoted) and its
    /// unquoted lists decode like hbsig's quoted forms.
    #[test]
    fn aoconnect_ao_types_dialect() {
        let tabm = m(vec![
            ("a", Value::text("7")),
            ("l", Value::text("(ao-type-binary) x,(ao-type-integer) 2")),
            ("ao-types", Value::text("a=integer,l=list")),
        ]);
        let rich = from_tabm(&tabm).unwrap();
        assert_eq!(rich.get("a"), Some(&Value::Integer(7)));
        assert_eq!(
            rich.get("l"),
            Some(&Value::list(vec![Value::text("x"), Value::Integer(2)]))
        );
        let hbsig = m(vec![
            ("a", Value::text("7")),
            ("l", Value::text(r#""x", "(ao-type-integer) 2""#)),
            ("ao-types", Value::text(r#"a="integer", l="list""#)),
        ]);
        assert_eq!(from_tabm(&hbsig).unwrap(), rich);
    }

    fn s(v: &Value) -> &str {
        v.as_str().unwrap()
    }

    #[test]
    fn spec03_2_1_ao_types_example() {
        let msg = m(vec![
            ("name", Value::text("Alice")),
            ("age", Value::Integer(30)),
            (
                "tags",
                Value::list(vec![Value::text("x"), Value::Integer(2)]),
            ),
            ("empty", Value::text("")),
            ("body", Value::text("hello")),
        ]);
        let t = to_tabm(&msg).unwrap();
        assert_eq!(
            s(t.get("ao-types").unwrap()),
            r#"age="integer", empty="empty-binary", tags="list""#
        );
        assert_eq!(s(t.get("age").unwrap()), "30");
        assert_eq!(s(t.get("tags").unwrap()), r#""x", "(ao-type-integer) 2""#);
        assert_eq!(s(t.get("name").unwrap()), "Alice");
        assert_eq!(s(t.get("body").unwrap()), "hello");
        assert!(!t.contains("empty"));
        assert_eq!(t.len(), 5);
        assert_eq!(from_tabm(&t).unwrap(), msg);
    }

    #[test]
    fn spec03_2_1_all_types_example() {
        let msg = m(vec![
            ("a", Value::Integer(1)),
            ("b", Value::Integer(-22)),
            ("c", Value::Float(1.5)),
            ("d", Value::boolean(true)),
            (
                "e",
                Value::list(vec![Value::Integer(1), Value::text("x"), Value::Float(2.0)]),
            ),
            ("f", Value::text("")),
            ("g", Value::list(vec![])),
            ("h", Value::Message(Message::new())),
            ("i", Value::atom("some_atom")),
            ("Upper", Value::text("v")),
        ]);
        let t = to_tabm(&msg).unwrap();
        let got: Vec<(String, String)> = t
            .iter()
            .map(|(k, v)| (k.to_string(), s(v).to_string()))
            .collect();
        let want: Vec<(String, String)> = [
            ("a", "1"),
            (
                "ao-types",
                r#"a="integer", b="integer", c="float", d="atom", e="list", f="empty-binary", g="empty-list", h="empty-message", i="atom""#,
            ),
            ("b", "-22"),
            ("c", "1.50000000000000000000e+00"),
            ("d", "\"true\""),
            ("e", r#""(ao-type-integer) 1", "x", "(ao-type-float) 2.00000000000000000000e+00""#),
            ("i", "\"some_atom\""),
            ("upper", "v"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(from_tabm(&t).unwrap(), msg);
    }

    #[test]
    fn spec03_2_1_drops_private_and_regenerable() {
        let msg = m(vec![
            ("content-digest", Value::text("x")),
            ("unsigned_id", Value::text("y")),
            ("k", Value::text("v")),
            ("priv", Value::Message(m(vec![("a", Value::text("b"))]))),
            ("private", Value::text("p")),
        ]);
        assert_eq!(to_tabm(&msg).unwrap(), m(vec![("k", Value::text("v"))]));
    }

    #[test]
    fn spec03_2_1_nested_lists() {
        let msg = m(vec![
            (
                "l",
                Value::list(vec![
                    Value::list(vec![Value::Integer(1), Value::Integer(2)]),
                    Value::list(vec![Value::text("a")]),
                ]),
            ),
            (
                "m",
                Value::list(vec![
                    Value::Message(m(vec![("x", Value::Integer(1))])),
                    Value::Message(m(vec![("y", Value::text("z"))])),
                ]),
            ),
        ]);
        let t = to_tabm(&msg).unwrap();
        assert_eq!(s(t.get("ao-types").unwrap()), r#"l="list", m="list""#);
        let l = t.get("l").unwrap().as_message().unwrap();
        assert_eq!(
            s(l.get("1").unwrap()),
            r#""(ao-type-integer) 1", "(ao-type-integer) 2""#
        );
        assert_eq!(s(l.get("2").unwrap()), r#""a""#);
        assert_eq!(s(l.get("ao-types").unwrap()), r#"1="list", 2="list""#);
        assert_eq!(l.len(), 3);
        let mm = t.get("m").unwrap().as_message().unwrap();
        let m1 = mm.get("1").unwrap().as_message().unwrap();
        assert_eq!(s(m1.get("x").unwrap()), "1");
        assert_eq!(s(m1.get("ao-types").unwrap()), r#"x="integer""#);
        assert_eq!(
            mm.get("2").unwrap(),
            &Value::Message(m(vec![("y", Value::text("z"))]))
        );
        assert_eq!(mm.len(), 2);
        assert_eq!(from_tabm(&t).unwrap(), msg);

        let mixed = m(vec![(
            "l",
            Value::list(vec![
                Value::Message(m(vec![("a", Value::Integer(1))])),
                Value::Integer(2),
            ]),
        )]);
        let t = to_tabm(&mixed).unwrap();
        let l = t.get("l").unwrap().as_message().unwrap();
        assert_eq!(s(l.get("2").unwrap()), "2");
        assert_eq!(s(l.get("ao-types").unwrap()), r#"2="integer""#);
        assert_eq!(
            s(l.get("1").unwrap().as_message().unwrap().get("a").unwrap()),
            "1"
        );
        assert_eq!(from_tabm(&t).unwrap(), mixed);

        // A scalar-first list containing a map cannot be encoded.
        let bad = m(vec![(
            "l",
            Value::list(vec![
                Value::Integer(2),
                Value::Message(m(vec![("a", Value::text("b"))])),
            ]),
        )]);
        assert!(matches!(to_tabm(&bad), Err(CodecError::Unencodable(k)) if k == "l"));
    }

    #[test]
    fn spec03_2_3_float_text() {
        assert_eq!(float_to_text(1.0), "1.00000000000000000000e+00");
        assert_eq!(float_to_text(1.5), "1.50000000000000000000e+00");
        assert_eq!(float_to_text(0.1), "1.00000000000000005551e-01");
        assert_eq!(float_to_text(-2.25), "-2.25000000000000000000e+00");
        assert_eq!(float_to_text(1e100), "1.00000000000000001590e+100");
        assert_eq!(float_to_text(0.0), "0.00000000000000000000e+00");
        assert_eq!(float_to_text(1e-300), "1.00000000000000002506e-300");
        assert_eq!(float_to_text(5e-324), "4.94065645841246544177e-324");
        assert_eq!(float_to_text(f64::MAX), "1.79769313486231570815e+308");
        for f in [1.0, 1.5, 0.1, -2.25, 1e100, 1e-300, 123456.789] {
            assert_eq!(
                decode_typed("float", float_to_text(f).as_bytes()).unwrap(),
                Value::Float(f)
            );
        }
    }

    #[test]
    fn spec03_2_3_float_decoding_syntax() {
        assert_eq!(
            decode_typed("float", b"1.0e3").unwrap(),
            Value::Float(1000.0)
        );
        assert_eq!(decode_typed("float", b"-0.5").unwrap(), Value::Float(-0.5));
        assert!(decode_typed("float", b"1e3").is_err());
        assert!(decode_typed("float", b"1").is_err());
        assert!(decode_typed("float", b".5").is_err());
        assert!(decode_typed("float", b"1.").is_err());
        assert!(decode_typed("float", b"1.0e").is_err());
    }

    #[test]
    fn spec03_2_4_list_text() {
        let l = Value::list(vec![
            Value::list(vec![Value::Integer(1), Value::text("a")]),
            Value::Float(2.5),
            Value::atom("foo"),
        ]);
        let (text, ty) = encode_value(&l).unwrap();
        assert_eq!(ty, Some("list"));
        assert_eq!(
            &text[..],
            br#""(ao-type-list) \"(ao-type-integer) 1\", \"a\"", "(ao-type-float) 2.50000000000000000000e+00", "(ao-type-atom) \"foo\"""#
        );
        assert_eq!(decode_typed("list", &text).unwrap(), l);
        // Non-ASCII encodes but does not decode.
        let (text, _) = encode_value(&Value::list(vec![Value::text("ü")])).unwrap();
        assert!(decode_typed("list", &text).is_err());
    }

    #[test]
    fn spec03_2_5_value_decoder() {
        assert_eq!(
            decode_typed("integer", b"999999999999999").unwrap(),
            Value::Integer(999_999_999_999_999)
        );
        assert_eq!(decode_typed("Integer", b"-7").unwrap(), Value::Integer(-7));
        // Deliberate deviation: longer integers are accepted.
        assert_eq!(
            decode_typed("integer", b"1234567890123456").unwrap(),
            Value::Integer(1_234_567_890_123_456)
        );
        assert!(decode_typed("integer", b"99999999999999999999").is_err());
        assert!(decode_typed("integer", b"1.5").is_err());
        assert!(decode_typed("integer", b"abc").is_err());
        assert_eq!(decode_typed("atom", b"true").unwrap(), Value::boolean(true));
        assert_eq!(decode_typed("ATOM", b"\"ok\"").unwrap(), Value::atom("ok"));
        assert_eq!(
            decode_typed("list", b"a,b").unwrap(),
            Value::list(vec![Value::atom("a"), Value::atom("b")])
        );
        assert_eq!(
            decode_typed("list", br#""x", "y""#).unwrap(),
            Value::list(vec![Value::text("x"), Value::text("y")])
        );
        assert_eq!(
            decode_typed("list", b"1, 1.5, ?0, :aGk=:").unwrap(),
            Value::list(vec![
                Value::Integer(1),
                Value::Float(1.5),
                Value::boolean(false),
                Value::text("hi")
            ])
        );
        assert_eq!(
            decode_typed("map", br#"a=1, b="s", c"#).unwrap(),
            Value::Message(m(vec![
                ("a", Value::Integer(1)),
                ("b", Value::text("s")),
                ("c", Value::boolean(true))
            ]))
        );
        assert_eq!(
            decode_typed("map", br#"key1="val1";key2=true"#).unwrap(),
            Value::Message(m(vec![("key1", Value::text("val1"))]))
        );
        assert!(decode_typed("map", b"a=(1 2)").is_err());
        assert_eq!(
            decode_typed("binary", b"x"),
            Err(CodecError::UnexpectedType("binary".into()))
        );
        assert!(matches!(
            decode_typed("nope", b"x"),
            Err(CodecError::UnexpectedType(_))
        ));
    }

    #[test]
    fn spec03_2_6_transaction_defaults() {
        let msg = m(vec![
            ("a", Value::Integer(1)),
            ("data", Value::text("")),
            ("quantity", Value::Integer(0)),
            ("target", Value::text("t")),
        ]);
        let back = from_tabm(&to_tabm(&msg).unwrap()).unwrap();
        assert_eq!(
            back,
            m(vec![("a", Value::Integer(1)), ("target", Value::text("t"))])
        );
        let zeros = m(vec![
            ("id", Value::bin(vec![0u8; 32])),
            ("owner", Value::bin(vec![0u8; 512])),
        ]);
        assert_eq!(from_tabm(&zeros).unwrap(), Message::new());
    }

    #[test]
    fn spec03_3_key_escaping() {
        assert_eq!(escape_key("A"), "%41");
        assert_eq!(escape_key("Z"), "%5a");
        assert_eq!(escape_key("hello World"), "hello%20%57orld");
        assert_eq!(escape_key("ü"), "%c3%bc");
        assert_eq!(escape_key("a.b-c_d/e?f&g+h"), "a.b-c_d/e?f&g+h");
        assert_eq!(unescape_key("%c3%BC").unwrap(), "ü");
        assert_eq!(unescape_key("hello%20%57orld").unwrap(), "hello World");
        assert!(unescape_key("%zz").is_err());
        // An ID-like key keeps its case and is escaped in ao-types.
        let id = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
        let msg = m(vec![(id, Value::Integer(5))]);
        let t = to_tabm(&msg).unwrap();
        let types = s(t.get("ao-types").unwrap());
        assert!(types.starts_with("%41%42%43"), "{types}");
        assert_eq!(from_tabm(&t).unwrap(), msg);
    }

    #[test]
    fn structured_in_flight_values_kept() {
        let res = Value::Resolve(Arc::new(vec![Value::text("x")]));
        let msg = m(vec![("r", res.clone()), ("n", Value::Integer(1))]);
        let t = to_tabm(&msg).unwrap();
        assert_eq!(t.get("r"), Some(&res));
        assert_eq!(from_tabm(&t).unwrap(), msg);
    }

    #[test]
    fn structured_clean_tabm_is_shared() {
        let msg = m(vec![
            ("a", Value::text("1")),
            ("n", Value::Message(m(vec![("b", Value::text("2"))]))),
        ]);
        let t = to_tabm(&msg).unwrap();
        assert!(t.ptr_eq(&msg));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::bin),
            any::<i64>().prop_map(Value::Integer),
            "[a-z_]{1,6}".prop_map(|a| Value::atom(&a)),
            proptest::collection::vec("[ -~]{0,6}", 0..4)
                .prop_map(|l| Value::list(l.into_iter().map(Value::from).collect())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            proptest::collection::btree_map("[a-z][a-z0-9-]{0,5}", inner, 0..4)
                .prop_map(|m| Value::Message(Message::from_pairs(m)))
        })
    }

    fn strip_defaults(msg: &Message) -> Message {
        msg.iter()
            .filter(|(k, v)| !is_private(k) && !is_tx_default(k, v))
            .map(|(k, v)| {
                let v = match v {
                    Value::Message(n) => Value::Message(strip_defaults(n)),
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn structured_roundtrip(entries in proptest::collection::btree_map("[a-z][a-z0-9-]{0,5}", arb_value(), 0..6)) {
            let msg = Message::from_pairs(entries);
            let t = to_tabm(&msg).unwrap();
            prop_assert!(t.iter().all(|(_, v)| matches!(v, Value::Binary(_) | Value::Message(_))));
            prop_assert_eq!(from_tabm(&t).unwrap(), strip_defaults(&msg));
        }
    }
}
