//! Lua values as they cross the host/guest boundary, and their binary encoding.
//!
//! # Encoding
//!
//! Little-endian; one tag byte per value, then:
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0 | nil | – |
//! | 1 | false | – |
//! | 2 | true | – |
//! | 3 | integer | `i64` |
//! | 4 | float | `f64` bits |
//! | 5 | string | `u32` length, bytes |
//! | 6 | table | `u32` n, then n (key, value) pairs |
//! | 7 | opaque (function, userdata, thread; only from Lua) | `u32` length, type name |
//!
//! A *value list* (arguments, results) is a `u32` count followed by the values. The guest
//! writes table pairs in `next` order, which is deterministic but not meaningful; use
//! [`LuaTable::sort`] for a canonical order. Nesting is limited to [`MAX_DEPTH`] levels
//! on both sides (a cyclic table fails to encode inside Lua).

use std::cmp::Ordering;
use std::fmt;

/// Deepest table nesting accepted by either side (the glue's `HB_MAX_DEPTH`).
pub const MAX_DEPTH: usize = 100;

/// Most values in one value list (arguments or results); Lua's C stack limits calls
/// to a few hundred values anyway.
pub const MAX_LIST: usize = 250;

const T_NIL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_INT: u8 = 3;
const T_FLOAT: u8 = 4;
const T_STRING: u8 = 5;
const T_TABLE: u8 = 6;
const T_OPAQUE: u8 = 7;

/// A Lua value.
#[derive(Debug, Clone, PartialEq)]
pub enum LuaValue {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Boolean(bool),
    /// An integer (Lua 5.3's integer subtype).
    Integer(i64),
    /// A float (`4.0` stays a float).
    Float(f64),
    /// A string: raw bytes, not necessarily UTF-8.
    String(Vec<u8>),
    /// A table.
    Table(LuaTable),
    /// A value that cannot cross the boundary (function, userdata, thread), with its
    /// Lua type name. Only produced by the guest; passing one into Lua is an error.
    Opaque(String),
}

/// A Lua table as an ordered list of key/value pairs (keys are never nil or NaN).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LuaTable {
    /// The pairs, in the order they were produced (Lua's `next` order for tables
    /// that come from the guest).
    pub entries: Vec<(LuaValue, LuaValue)>,
}

impl LuaTable {
    /// An empty table.
    pub fn new() -> Self {
        LuaTable::default()
    }

    /// A sequence: keys 1..=n.
    pub fn array(items: impl IntoIterator<Item = LuaValue>) -> Self {
        LuaTable {
            entries: items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (LuaValue::Integer(i as i64 + 1), v))
                .collect(),
        }
    }

    /// Adds a pair (no check for duplicates: the last one wins inside Lua).
    pub fn push(&mut self, key: impl Into<LuaValue>, value: impl Into<LuaValue>) {
        self.entries.push((key.into(), value.into()));
    }

    /// Builder form of [`LuaTable::push`].
    pub fn with(mut self, key: impl Into<LuaValue>, value: impl Into<LuaValue>) -> Self {
        self.push(key, value);
        self
    }

    /// The value of the first pair whose key equals `key` (integers and floats with
    /// the same value are equal, as in Lua).
    pub fn get(&self, key: &LuaValue) -> Option<&LuaValue> {
        self.entries
            .iter()
            .find(|(k, _)| k.lua_eq(key))
            .map(|(_, v)| v)
    }

    /// [`LuaTable::get`] with a string key.
    pub fn get_str(&self, key: &str) -> Option<&LuaValue> {
        self.get(&LuaValue::from(key))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sorts the pairs by key with [`LuaValue::total_cmp`], recursively in nested
    /// tables (keys and values): a canonical form independent of Lua's hash order.
    pub fn sort(&mut self) {
        for (k, v) in &mut self.entries {
            k.sort_tables();
            v.sort_tables();
        }
        self.entries.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The values in key order when the keys are exactly the integers 1..=n (in any
    /// order); `None` otherwise. The empty table is the empty sequence.
    pub fn as_sequence(&self) -> Option<Vec<&LuaValue>> {
        let n = self.entries.len();
        let mut out: Vec<Option<&LuaValue>> = vec![None; n];
        for (k, v) in &self.entries {
            let i = match k {
                LuaValue::Integer(i) => *i,
                _ => return None,
            };
            let slot = usize::try_from(i).ok().filter(|&i| i >= 1 && i <= n)?;
            if out[slot - 1].replace(v).is_some() {
                return None;
            }
        }
        out.into_iter().collect()
    }
}

impl LuaValue {
    /// A string value from bytes.
    pub fn string(bytes: impl Into<Vec<u8>>) -> Self {
        LuaValue::String(bytes.into())
    }

    /// The Lua type name (`"nil"`, `"number"`, …; opaque values give theirs).
    pub fn type_name(&self) -> &str {
        match self {
            LuaValue::Nil => "nil",
            LuaValue::Boolean(_) => "boolean",
            LuaValue::Integer(_) | LuaValue::Float(_) => "number",
            LuaValue::String(_) => "string",
            LuaValue::Table(_) => "table",
            LuaValue::Opaque(name) => name,
        }
    }

    /// The string's bytes, if it is a string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            LuaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The string as UTF-8, if it is a string and valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer, if it is one.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            LuaValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float (integers convert).
    pub fn as_number(&self) -> Option<f64> {
        match self {
            LuaValue::Integer(i) => Some(*i as f64),
            LuaValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The table, if it is one.
    pub fn as_table(&self) -> Option<&LuaTable> {
        match self {
            LuaValue::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Lua's raw equality for keys: numbers compare by value across subtypes.
    fn lua_eq(&self, other: &LuaValue) -> bool {
        match (self, other) {
            (LuaValue::Integer(a), LuaValue::Float(b))
            | (LuaValue::Float(b), LuaValue::Integer(a)) => (*a as f64) == *b && (*b as i64) == *a,
            _ => self == other,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            LuaValue::Nil => 0,
            LuaValue::Boolean(_) => 1,
            LuaValue::Integer(_) | LuaValue::Float(_) => 2,
            LuaValue::String(_) => 3,
            LuaValue::Table(_) => 4,
            LuaValue::Opaque(_) => 5,
        }
    }

    /// A total order for canonical sorting: nil < booleans < numbers < strings <
    /// tables < opaque values; numbers by value (an integer before an equal float),
    /// strings bytewise, tables pair by pair.
    pub fn total_cmp(&self, other: &LuaValue) -> Ordering {
        use LuaValue as V;
        match (self, other) {
            (V::Boolean(a), V::Boolean(b)) => a.cmp(b),
            (V::Integer(a), V::Integer(b)) => a.cmp(b),
            (V::Float(a), V::Float(b)) => a.total_cmp(b),
            (V::Integer(a), V::Float(b)) => cmp_int_float(*a, *b),
            (V::Float(a), V::Integer(b)) => cmp_int_float(*b, *a).reverse(),
            (V::String(a), V::String(b)) => a.cmp(b),
            (V::Table(a), V::Table(b)) => {
                for ((ka, va), (kb, vb)) in a.entries.iter().zip(&b.entries) {
                    let o = ka.total_cmp(kb).then_with(|| va.total_cmp(vb));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.entries.len().cmp(&b.entries.len())
            }
            (V::Opaque(a), V::Opaque(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn sort_tables(&mut self) {
        if let LuaValue::Table(t) = self {
            t.sort();
        }
    }
}

/// Integer vs float; on equal values the integer sorts first.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less; // NaN (never a key) sorts after every number
    }
    let fi = i as f64;
    match fi.partial_cmp(&f).unwrap_or(Ordering::Equal) {
        Ordering::Equal => {
            // `i as f64` rounds; compare exactly where the float is an integer.
            // 2^63 and -2^63 are exact floats.
            const TWO_63: f64 = 9_223_372_036_854_775_808.0;
            if f >= TWO_63 {
                Ordering::Less
            } else if f < -TWO_63 {
                Ordering::Greater
            } else {
                i.cmp(&(f as i64)).then(Ordering::Less)
            }
        }
        o => o,
    }
}

impl From<bool> for LuaValue {
    fn from(v: bool) -> Self {
        LuaValue::Boolean(v)
    }
}
impl From<i64> for LuaValue {
    fn from(v: i64) -> Self {
        LuaValue::Integer(v)
    }
}
impl From<i32> for LuaValue {
    fn from(v: i32) -> Self {
        LuaValue::Integer(v.into())
    }
}
impl From<f64> for LuaValue {
    fn from(v: f64) -> Self {
        LuaValue::Float(v)
    }
}
impl From<&str> for LuaValue {
    fn from(v: &str) -> Self {
        LuaValue::String(v.as_bytes().to_vec())
    }
}
impl From<String> for LuaValue {
    fn from(v: String) -> Self {
        LuaValue::String(v.into_bytes())
    }
}
impl From<Vec<u8>> for LuaValue {
    fn from(v: Vec<u8>) -> Self {
        LuaValue::String(v)
    }
}
impl From<LuaTable> for LuaValue {
    fn from(v: LuaTable) -> Self {
        LuaValue::Table(v)
    }
}

/// Lua-like text: strings as is (lossy UTF-8), numbers as Lua prints them for
/// integers, tables as `{k = v, …}` in their stored order.
impl fmt::Display for LuaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LuaValue::Nil => f.write_str("nil"),
            LuaValue::Boolean(b) => write!(f, "{b}"),
            LuaValue::Integer(i) => write!(f, "{i}"),
            LuaValue::Float(x) => write!(f, "{x:?}"),
            LuaValue::String(s) => f.write_str(&String::from_utf8_lossy(s)),
            LuaValue::Table(t) => {
                f.write_str("{")?;
                for (i, (k, v)) in t.entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "[{k}] = {v}")?;
                }
                f.write_str("}")
            }
            LuaValue::Opaque(name) => write!(f, "<{name}>"),
        }
    }
}

/// Malformed encoded values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Lua value encoding: {0}")]
pub struct DecodeError(pub String);

/// Values that cannot be encoded for the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot pass this value to Lua: {0}")]
pub struct EncodeError(pub String);

/// Appends the encoding of a value list.
pub fn encode_list(values: &[LuaValue], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if values.len() > MAX_LIST {
        return Err(EncodeError(format!(
            "{} values (at most {MAX_LIST})",
            values.len()
        )));
    }
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for v in values {
        encode_value(v, out, 0)?;
    }
    Ok(())
}

fn encode_len(len: usize) -> Result<[u8; 4], EncodeError> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| EncodeError(format!("length {len} does not fit in 32 bits")))
}

fn encode_value(v: &LuaValue, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    if depth >= MAX_DEPTH {
        return Err(EncodeError(format!("tables nest deeper than {MAX_DEPTH}")));
    }
    match v {
        LuaValue::Nil => out.push(T_NIL),
        LuaValue::Boolean(false) => out.push(T_FALSE),
        LuaValue::Boolean(true) => out.push(T_TRUE),
        LuaValue::Integer(i) => {
            out.push(T_INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        LuaValue::Float(x) => {
            out.push(T_FLOAT);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        LuaValue::String(s) => {
            out.push(T_STRING);
            out.extend_from_slice(&encode_len(s.len())?);
            out.extend_from_slice(s);
        }
        LuaValue::Table(t) => {
            out.push(T_TABLE);
            out.extend_from_slice(&encode_len(t.entries.len())?);
            for (k, v) in &t.entries {
                match k {
                    LuaValue::Nil => return Err(EncodeError("a table key is nil".into())),
                    LuaValue::Float(x) if x.is_nan() => {
                        return Err(EncodeError("a table key is NaN".into()));
                    }
                    _ => {}
                }
                encode_value(k, out, depth + 1)?;
                encode_value(v, out, depth + 1)?;
            }
        }
        LuaValue::Opaque(name) => {
            return Err(EncodeError(format!("an opaque {name} value")));
        }
    }
    Ok(())
}

/// Decodes a complete value list (no trailing bytes).
pub fn decode_list(bytes: &[u8]) -> Result<Vec<LuaValue>, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let n = r.u32()? as usize;
    if n > bytes.len() {
        return Err(DecodeError(format!("{n} values in {} bytes", bytes.len())));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.value(0)?);
    }
    if r.pos != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes",
            bytes.len() - r.pos
        )));
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| DecodeError(format!("truncated at byte {}", self.pos)))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn value(&mut self, depth: usize) -> Result<LuaValue, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError(format!("nested deeper than {MAX_DEPTH}")));
        }
        let tag = self.take(1)?[0];
        Ok(match tag {
            T_NIL => LuaValue::Nil,
            T_FALSE => LuaValue::Boolean(false),
            T_TRUE => LuaValue::Boolean(true),
            T_INT => LuaValue::Integer(self.u64()? as i64),
            T_FLOAT => LuaValue::Float(f64::from_bits(self.u64()?)),
            T_STRING => {
                let n = self.u32()? as usize;
                LuaValue::String(self.take(n)?.to_vec())
            }
            T_TABLE => {
                let n = self.u32()? as usize;
                // Each pair takes at least two bytes.
                if n > (self.bytes.len() - self.pos) / 2 {
                    return Err(DecodeError(format!("table of {n} pairs is truncated")));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                }
                LuaValue::Table(LuaTable { entries })
            }
            T_OPAQUE => {
                let n = self.u32()? as usize;
                LuaValue::Opaque(String::from_utf8_lossy(self.take(n)?).into_owned())
            }
            t => return Err(DecodeError(format!("unknown tag {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: Vec<LuaValue>) {
        let mut buf = Vec::new();
        encode_list(&values, &mut buf).expect("encodes");
        assert_eq!(decode_list(&buf).expect("decodes"), values);
    }

    #[test]
    fn values_roundtrip() {
        roundtrip(vec![]);
        roundtrip(vec![
            LuaValue::Nil,
            true.into(),
            false.into(),
            LuaValue::Integer(i64::MIN),
            LuaValue::Float(-0.5),
            "héllo".into(),
            LuaValue::string(vec![0, 255, 1]),
            LuaTable::array(["a".into(), 2.into()])
                .with("k", LuaTable::new().with(1, 2.5))
                .into(),
        ]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(decode_list(&[]).is_err());
        assert!(decode_list(&[1, 0, 0, 0]).is_err());
        assert!(decode_list(&[1, 0, 0, 0, 9]).is_err());
        assert!(decode_list(&[1, 0, 0, 0, 5, 255, 255, 255, 255]).is_err());
        assert!(decode_list(&[1, 0, 0, 0, 6, 255, 255, 255, 255]).is_err());
        assert!(decode_list(&[0, 0, 0, 0, 0]).is_err(), "trailing byte");
        // Deep nesting is refused, not a stack overflow.
        let mut deep = vec![1, 0, 0, 0];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[6, 1, 0, 0, 0, 0]);
        }
        assert!(decode_list(&deep).is_err());
        // Every prefix of a valid encoding fails cleanly.
        let mut buf = Vec::new();
        let v: LuaValue = LuaTable::new()
            .with("a", LuaTable::array([1.into()]))
            .into();
        encode_list(&[v], &mut buf).expect("encodes");
        for n in 0..buf.len() {
            assert!(decode_list(&buf[..n]).is_err());
        }
    }

    #[test]
    fn unencodable_values() {
        let mut buf = Vec::new();
        assert!(encode_list(&[LuaValue::Opaque("function".into())], &mut buf).is_err());
        let nil_key: LuaValue = LuaTable::new().with(LuaValue::Nil, 1).into();
        assert!(encode_list(&[nil_key], &mut buf).is_err());
        let too_many = vec![LuaValue::Nil; MAX_LIST + 1];
        assert!(encode_list(&too_many, &mut buf).is_err());
    }

    #[test]
    fn canonical_sort() {
        let mut t = LuaTable::new()
            .with("b", 1)
            .with(2.5, 1)
            .with(2, 1)
            .with("a", LuaTable::new().with("z", 1).with("y", 2))
            .with(true, 1);
        t.sort();
        let keys: Vec<String> = t.entries.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["true", "2", "2.5", "a", "b"]);
        let inner = t.get_str("a").and_then(LuaValue::as_table).expect("table");
        assert_eq!(inner.entries[0].0, LuaValue::from("y"));
        assert_eq!(
            LuaValue::Integer(2).total_cmp(&LuaValue::Float(2.0)),
            Ordering::Less
        );
        assert_eq!(
            LuaValue::Integer(i64::MAX).total_cmp(&LuaValue::Float(9.3e18)),
            Ordering::Less
        );
    }

    #[test]
    fn sequences() {
        let t = LuaTable::new().with(2, "b").with(1, "a");
        let seq = t.as_sequence().expect("a sequence");
        assert_eq!(seq, [&LuaValue::from("a"), &LuaValue::from("b")]);
        assert!(
            LuaTable::new()
                .with(1, 1)
                .with(3, 1)
                .as_sequence()
                .is_none()
        );
        assert!(LuaTable::new().with("1", 1).as_sequence().is_none());
        assert_eq!(LuaTable::new().as_sequence(), Some(vec![]));
        assert_eq!(
            LuaTable::new().with(1, 1).get(&LuaValue::Float(1.0)),
            Some(&1.into())
        );
    }
}
