//! The packed copy of a stored message: the rich message (what reading its group and
//! decoding the TABM gives) in one compact value, kept in the message's group entry
//! ([`crate::Store::apply_packed`]) so that a read is one lookup and a decoding with few
//! allocations — binaries are slices of the one buffer read.
//!
//! ```text
//! copy    = VERSION message
//! message = count entry*              keys in strictly increasing byte order
//! entry   = len key value             key: UTF-8
//! value   = 0 len bytes               binary
//!         | 1 zigzag                  integer (zigzag varint)
//!         | 2 bits                    float (8 bytes, little-endian IEEE 754)
//!         | 3 len name                atom (UTF-8)
//!         | 4 count value*            list
//!         | 5 message                 nested message
//! count, len, zigzag: unsigned LEB128 varints of at most 10 bytes
//! ```
//!
//! The copy is a cache of the layout, never the only form of anything: a copy that does
//! not decode is an error the reader answers by reading the group itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use hb_core::value::{Key, Message, Value};
use thiserror::Error;

/// The format version, the first byte of every copy.
pub const VERSION: u8 = 1;

/// How deeply lists and messages may nest in a copy.
pub const MAX_NESTING: usize = 64;

const BINARY: u8 = 0;
const INTEGER: u8 = 1;
const FLOAT: u8 = 2;
const ATOM: u8 = 3;
const LIST: u8 = 4;
const MESSAGE: u8 = 5;

/// Keys each thread keeps for decoding ([`key`]): the keys of stored messages are few
/// and repeat, so a decoded key is most often a shared one, not a new allocation.
const INTERNED: usize = 4096;
/// The longest key kept.
const INTERNED_LEN: usize = 64;

thread_local! {
    static KEYS: RefCell<HashMap<Box<[u8]>, Key, BuildHasherDefault<KeyHasher>>> =
        RefCell::new(HashMap::default());
}

/// The key with these bytes: a shared one when this thread has met it before; `None`
/// when they are not UTF-8.
fn key(bytes: &[u8]) -> Option<Key> {
    let found = KEYS.with(|keys| keys.borrow().get(bytes).cloned());
    if found.is_some() {
        return found;
    }
    let key: Key = Arc::from(std::str::from_utf8(bytes).ok()?);
    if bytes.len() <= INTERNED_LEN {
        KEYS.with(|keys| {
            let mut keys = keys.borrow_mut();
            if keys.len() < INTERNED {
                keys.insert(bytes.into(), key.clone());
            }
        });
    }
    Some(key)
}

/// FNV-1a over 8-byte words (keys are short; a bounded table of keys that only saves
/// allocations needs no keyed hash).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // A final mix, so that the high bits (hashbrown's tags) vary too.
        let h = self.0 ^ (self.0 >> 32);
        h.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (h >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x0100_0000_01b3);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Why a packed copy does not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackedError {
    /// The copy ends in the middle of something.
    #[error("the packed copy ends early (at byte {0})")]
    Truncated(usize),
    /// A version this code does not read.
    #[error("packed copy version {0} is not known")]
    Version(u8),
    /// An unknown value tag.
    #[error("unknown value tag {tag} at byte {at} of the packed copy")]
    Tag {
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// Something else that this module never writes.
    #[error("bad packed copy at byte {at}: {reason}")]
    Bad {
        /// Where.
        at: usize,
        /// What.
        reason: &'static str,
    },
}

/// The copy of `msg`; `None` when it holds a value that has no stored form (the
/// in-flight `Resolve` and `As`) or nests deeper than [`MAX_NESTING`].
pub fn encode(msg: &Message) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(VERSION);
    message(&mut out, msg, 0)?;
    Some(out)
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit.
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn len(out: &mut Vec<u8>, n: usize) {
    varint(out, n as u64);
}

fn message(out: &mut Vec<u8>, msg: &Message, depth: usize) -> Option<()> {
    if depth >= MAX_NESTING {
        return None;
    }
    len(out, msg.len());
    for (k, v) in msg.iter() {
        len(out, k.len());
        out.extend_from_slice(k.as_bytes());
        value(out, v, depth)?;
    }
    Some(())
}

fn value(out: &mut Vec<u8>, v: &Value, depth: usize) -> Option<()> {
    match v {
        Value::Binary(b) => {
            out.push(BINARY);
            len(out, b.len());
            out.extend_from_slice(b);
        }
        Value::Integer(i) => {
            out.push(INTEGER);
            // Zigzag: small magnitudes of either sign take few bytes.
            varint(out, ((i << 1) ^ (i >> 63)) as u64);
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Atom(a) => {
            out.push(ATOM);
            len(out, a.len());
            out.extend_from_slice(a.as_bytes());
        }
        Value::List(items) => {
            if depth + 1 >= MAX_NESTING {
                return None;
            }
            out.push(LIST);
            len(out, items.len());
            for item in items.iter() {
                value(out, item, depth + 1)?;
            }
        }
        Value::Message(m) => {
            out.push(MESSAGE);
            message(out, m, depth + 1)?;
        }
        Value::Resolve(_) | Value::As(..) | Value::Opaque(_) => return None,
    }
    Some(())
}

/// The message a copy holds.
///
/// # Errors
/// The copy is not one [`encode`] wrote (truncated, corrupt, another version).
pub fn decode(copy: &Bytes) -> Result<Message, PackedError> {
    let mut r = Reader { buf: copy, at: 0 };
    match r.byte()? {
        VERSION => {}
        other => return Err(PackedError::Version(other)),
    }
    let msg = r.message(0)?;
    if r.at != copy.len() {
        return Err(r.bad("bytes after the message"));
    }
    Ok(msg)
}

struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn bad(&self, reason: &'static str) -> PackedError {
        PackedError::Bad {
            at: self.at,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, PackedError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(PackedError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, PackedError> {
        let mut n: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.bad("a varint of more than 64 bits"));
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.bad("a varint of more than 10 bytes"))
    }

    /// A count or length, at most the bytes left (every item takes at least one).
    fn count(&mut self) -> Result<usize, PackedError> {
        let n = self.varint()?;
        let left = self.buf.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(PackedError::Truncated(self.buf.len())),
        }
    }

    /// The next `n` bytes, as a range of the buffer.
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, PackedError> {
        let start = self.at;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(PackedError::Truncated(self.buf.len()))?;
        self.at = end;
        Ok(start..end)
    }

    fn text(&mut self) -> Result<&str, PackedError> {
        let n = self.count()?;
        let range = self.take(n)?;
        std::str::from_utf8(&self.buf[range]).map_err(|_| self.bad("text that is not UTF-8"))
    }

    fn message(&mut self, depth: usize) -> Result<Message, PackedError> {
        if depth >= MAX_NESTING {
            return Err(self.bad("nested too deeply"));
        }
        let n = self.count()?;
        let mut entries: Vec<(Key, Value)> = Vec::with_capacity(n);
        let mut last: Option<std::ops::Range<usize>> = None;
        for _ in 0..n {
            let n = self.count()?;
            let range = self.take(n)?;
            let bytes = &self.buf[range.clone()];
            if last.is_some_and(|l| self.buf[l] >= *bytes) {
                return Err(self.bad("keys out of order"));
            }
            let key = key(bytes).ok_or_else(|| self.bad("a key that is not UTF-8"))?;
            last = Some(range);
            entries.push((key, self.value(depth)?));
        }
        // (Sorted and distinct: the map is built in one pass, no search per key.)
        Ok(entries.into_iter().collect())
    }

    fn value(&mut self, depth: usize) -> Result<Value, PackedError> {
        let at = self.at;
        Ok(match self.byte()? {
            BINARY => {
                let n = self.count()?;
                let range = self.take(n)?;
                Value::Binary(self.buf.slice(range))
            }
            INTEGER => {
                let z = self.varint()?;
                // Zigzag back: the sign in the low bit.
                Value::Integer((z >> 1) as i64 ^ -((z & 1) as i64))
            }
            FLOAT => {
                let range = self.take(8)?;
                let mut bits = [0u8; 8];
                bits.copy_from_slice(&self.buf[range]);
                Value::Float(f64::from_bits(u64::from_le_bytes(bits)))
            }
            ATOM => Value::Atom(Arc::from(self.text()?)),
            LIST => {
                if depth + 1 >= MAX_NESTING {
                    return Err(self.bad("nested too deeply"));
                }
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::list(items)
            }
            MESSAGE => Value::Message(self.message(depth + 1)?),
            tag => return Err(PackedError::Tag { tag, at }),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;

    use super::*;

    /// Values equal, floats by their bits (NaN included).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::List(x), Value::List(y)) => {
                x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b))
            }
            (Value::Message(x), Value::Message(y)) => same_message(x, y),
            _ => a == b,
        }
    }

    fn same_message(a: &Message, b: &Message) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
    }

    fn round_trip(msg: &Message) -> Message {
        let copy = Bytes::from(encode(msg).expect("encodes"));
        decode(&copy).expect("decodes")
    }

    /// Every kind of value, nested messages and lists, empty ones, edge numbers.
    fn every_kind() -> Message {
        let nested = Message::new()
            .with("inner", "text")
            .with("n", -1i64)
            .with("deeper", Message::new().with("x", Value::list(vec![])));
        Message::new()
            .with("binary", "hello")
            .with("empty-binary", Value::bin(Bytes::new()))
            .with("bytes", Value::bin(vec![0u8, 255, 0x80, 10]))
            .with("zero", 0i64)
            .with("min", i64::MIN)
            .with("max", i64::MAX)
            .with("minus", -300i64)
            .with("float", 1.5f64)
            .with("neg-float", -0.0f64)
            .with("inf", f64::INFINITY)
            .with("atom", Value::atom("ok"))
            .with("true", true)
            .with("empty-atom", Value::atom(""))
            .with(
                "list",
                Value::list(vec![
                    Value::text("a"),
                    Value::Integer(2),
                    Value::Float(3.25),
                    Value::atom("b"),
                    Value::list(vec![Value::Message(nested.clone())]),
                    Value::Message(Message::new()),
                ]),
            )
            .with("empty-list", Value::list(vec![]))
            .with("message", nested)
            .with("empty-message", Message::new())
            .with("ünïcode-kéy", "välue")
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let msg = every_kind();
        assert!(same_message(&round_trip(&msg), &msg));
        assert_eq!(round_trip(&msg), msg);
        assert_eq!(round_trip(&Message::new()), Message::new());
        let nan = Message::new().with("nan", f64::NAN);
        assert!(same_message(&round_trip(&nan), &nan));
    }

    #[test]
    fn binaries_are_slices_of_the_copy() {
        let copy = Bytes::from(encode(&Message::new().with("k", "value")).unwrap());
        let msg = decode(&copy).unwrap();
        let b = msg.get("k").and_then(Value::as_bytes).unwrap();
        let inside = copy.as_ptr_range();
        assert!(inside.contains(&b.as_ptr()), "not a copy of the bytes");
    }

    #[test]
    fn in_flight_values_and_deep_nesting_have_no_copy() {
        let resolve = Message::new().with("r", Value::Resolve(Arc::new(vec![])));
        assert_eq!(encode(&resolve), None);
        let as_ = Message::new().with("a", Value::As("d@1.0".into(), Box::new(Value::text("x"))));
        assert_eq!(encode(&as_), None);
        let opaque = Message::new().with("o", Value::Opaque(hb_core::value::Opaque::new(1u8)));
        assert_eq!(encode(&opaque), None);
        let mut deep = Message::new().with("leaf", 1i64);
        for _ in 0..MAX_NESTING {
            deep = Message::new().with("m", deep);
        }
        assert_eq!(encode(&deep), None);
        let mut list = Value::Integer(1);
        for _ in 0..MAX_NESTING {
            list = Value::list(vec![list]);
        }
        assert_eq!(encode(&Message::new().with("l", list)), None);
        // Just inside the limit.
        let mut ok = Message::new().with("leaf", 1i64);
        for _ in 0..MAX_NESTING - 1 {
            ok = Message::new().with("m", ok);
        }
        assert_eq!(round_trip(&ok), ok);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let copy = encode(&every_kind()).unwrap();
        for n in 0..copy.len() {
            let cut = Bytes::copy_from_slice(&copy[..n]);
            assert!(
                decode(&cut).is_err(),
                "a copy cut at {n} of {} decoded",
                copy.len()
            );
        }
    }

    #[test]
    fn corrupt_copies_are_errors() {
        let ok = encode(&Message::new().with("a", "x").with("b", 1i64)).unwrap();
        let bad = |mut bytes: Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
            f(&mut bytes);
            decode(&Bytes::from(bytes))
        };
        // Another version.
        assert_eq!(bad(ok.clone(), &|b| b[0] = 9), Err(PackedError::Version(9)));
        // Bytes after the message.
        assert!(bad(ok.clone(), &|b| b.push(0)).is_err());
        // An unknown tag (the first value's tag is at 4: version, count, len, `a`).
        assert_eq!(
            bad(ok.clone(), &|b| b[4] = 77),
            Err(PackedError::Tag { tag: 77, at: 4 })
        );
        // Keys out of order, and repeated.
        let swapped = [VERSION, 2, 1, b'b', INTEGER, 0, 1, b'a', INTEGER, 0];
        assert!(decode(&Bytes::copy_from_slice(&swapped)).is_err());
        let twice = [VERSION, 2, 1, b'a', INTEGER, 0, 1, b'a', INTEGER, 0];
        assert!(decode(&Bytes::copy_from_slice(&twice)).is_err());
        // A key and an atom that are not UTF-8.
        let key = [VERSION, 1, 1, 0xff, INTEGER, 0];
        assert!(decode(&Bytes::copy_from_slice(&key)).is_err());
        let atom = [VERSION, 1, 1, b'a', ATOM, 1, 0xff];
        assert!(decode(&Bytes::copy_from_slice(&atom)).is_err());
        // A count far larger than the copy, and an over-long varint.
        let huge = [VERSION, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode(&Bytes::copy_from_slice(&huge)).is_err());
        let long = [
            VERSION, 1, 1, b'a', INTEGER, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x01,
        ];
        assert!(decode(&Bytes::copy_from_slice(&long)).is_err());
        let wide = [
            VERSION, 1, 1, b'a', INTEGER, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02,
        ];
        assert!(decode(&Bytes::copy_from_slice(&wide)).is_err());
        // Nesting deeper than the limit.
        let mut deep = vec![VERSION];
        for _ in 0..=MAX_NESTING {
            deep.extend_from_slice(&[1, 1, b'm', MESSAGE]);
        }
        deep.push(0);
        assert!(decode(&Bytes::from(deep)).is_err());
        assert!(decode(&Bytes::new()).is_err());
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::bin),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Float),
            "[a-z0-9-]{0,12}".prop_map(|s| Value::atom(&s)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::list),
                proptest::collection::btree_map("[a-z0-9-]{0,10}", inner, 0..6).prop_map(|m| {
                    Value::Message(
                        m.into_iter()
                            .map(|(k, v)| (Key::from(k.as_str()), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        proptest::collection::btree_map("[a-zA-Z0-9-]{0,12}|\\PC{0,6}", arb_value(), 0..10)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(k, v)| (Key::from(k.as_str()), v))
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn messages_round_trip(msg in arb_message()) {
            let back = round_trip(&msg);
            prop_assert!(same_message(&back, &msg), "{msg:?} came back as {back:?}");
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&Bytes::from(bytes));
        }

        #[test]
        fn damaged_copies_decode_or_fail_without_panicking(
            msg in arb_message(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut copy = encode(&msg).unwrap();
            let i = at.index(copy.len());
            copy[i] = byte;
            let _ = decode(&Bytes::from(copy));
        }
    }
}
