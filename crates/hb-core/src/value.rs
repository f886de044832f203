//! The message model: [`Value`], [`Message`] and key normalisation (spec 01 §2).
//!
//! A [`Message`] is an immutable, cheaply clonable map from normalised keys to values.
//! Keys are kept in byte order, which is the order every codec and the reference use.
//! Updating a message clones the map only when it is shared (copy on write).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A key of a message: always in normalised form (spec 01 §2.2).
pub type Key = Arc<str>;

/// Any value a message can hold (spec 01 §2.1).
#[derive(Clone, PartialEq)]
pub enum Value {
    /// A byte string: the default type.
    Binary(Bytes),
    /// An integer. The reference has arbitrary precision; we hold 64 bits (see COMPATIBILITY).
    Integer(i64),
    /// An IEEE double.
    Float(f64),
    /// A symbolic constant; booleans are the atoms `true` and `false`.
    Atom(Arc<str>),
    /// An ordered list of values.
    List(Arc<Vec<Value>>),
    /// A nested message.
    Message(Message),
    /// In flight only: a deferred sub-resolution of a message list (the reference's
    /// `{resolve, Steps}`), produced by `( … )` in a HyperPATH.
    Resolve(Arc<Vec<Value>>),
    /// In flight only: a device switch (the reference's `{as, Device, Msg}`), produced by
    /// `~device@version` in a HyperPATH. The inner value is a message or an ID binary.
    As(Arc<str>, Box<Value>),
    /// In memory only: a live object a device keeps in a message's private area (a
    /// WASM instance, spec 04 §1.9 `priv`). Never encoded, stored, hashed or sent.
    Opaque(Opaque),
}

/// A live object held by a [`Value::Opaque`]: shared, and equal only to itself.
#[derive(Clone)]
pub struct Opaque(Arc<dyn std::any::Any + Send + Sync>);

impl Opaque {
    /// Wraps `value`.
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Self {
        Opaque(Arc::new(value))
    }

    /// The object, if it is a `T`.
    pub fn downcast<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.clone().downcast::<T>().ok()
    }
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<opaque>")
    }
}

impl PartialEq for Opaque {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Value {
    /// A binary value from anything that becomes bytes.
    pub fn bin(b: impl Into<Bytes>) -> Value {
        Value::Binary(b.into())
    }

    /// A binary value from text.
    pub fn text(s: &str) -> Value {
        Value::Binary(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// An atom.
    pub fn atom(s: &str) -> Value {
        Value::Atom(Arc::from(s))
    }

    /// The atom `true` or `false`.
    pub fn boolean(b: bool) -> Value {
        Value::atom(if b { "true" } else { "false" })
    }

    /// A list value.
    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(items))
    }

    /// The bytes of a binary value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a binary value that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The nested message, if this is one.
    pub fn as_message(&self) -> Option<&Message> {
        match self {
            Value::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The atom's name, if this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Value::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// True if this is the atom named `name`.
    pub fn is_atom(&self, name: &str) -> bool {
        self.as_atom() == Some(name)
    }

    /// An integer, also accepting decimal text.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            Value::Binary(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// [`Value::as_int`] when it is not negative: counts, sizes, durations.
    pub fn as_uint(&self) -> Option<u64> {
        self.as_int().and_then(|i| u64::try_from(i).ok())
    }

    /// The name of this value's type as used in `ao-types` (and in errors).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Binary(_) => "binary",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Atom(_) => "atom",
            Value::List(_) => "list",
            Value::Message(_) => "message",
            Value::Resolve(_) => "resolve",
            Value::As(..) => "as",
            Value::Opaque(_) => "opaque",
        }
    }

    /// Text for display in plain responses: binaries as they are, numbers and atoms as
    /// their text.
    pub fn to_display_bytes(&self) -> Bytes {
        match self {
            Value::Binary(b) => b.clone(),
            Value::Integer(i) => Bytes::from(i.to_string()),
            Value::Float(f) => Bytes::from(crate::structured::float_to_text(*f)),
            Value::Atom(a) => Bytes::copy_from_slice(a.as_bytes()),
            other => Bytes::from(format!("{other:?}")),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => write!(f, "{s:?}"),
                Err(_) => write!(f, "<<{} bytes>>", b.len()),
            },
            Value::Integer(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Atom(a) => write!(f, "'{a}'"),
            Value::List(l) => f.debug_list().entries(l.iter()).finish(),
            Value::Message(m) => m.fmt(f),
            Value::Resolve(l) => write!(f, "RES{:?}", l),
            Value::As(d, m) => write!(f, "AS({d}, {m:?})"),
            Value::Opaque(o) => o.fmt(f),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::text(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Binary(Bytes::from(s))
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::boolean(b)
    }
}
impl From<Message> for Value {
    fn from(m: Message) -> Self {
        Value::Message(m)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::list(l)
    }
}
impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Binary(b)
    }
}

/// A message: a map of normalised keys to values (spec 01 §2).
#[derive(Clone, Default, PartialEq)]
pub struct Message(Arc<BTreeMap<Key, Value>>);

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Message {
    /// The empty message.
    pub fn new() -> Self {
        Message::default()
    }

    /// Builds a message from pairs, normalising each key.
    pub fn from_pairs<K: AsRef<str>, V: Into<Value>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut m = Message::new();
        for (k, v) in pairs {
            m.insert(k.as_ref(), v.into());
        }
        m
    }

    /// Number of keys (private ones included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Exact lookup of an already normalised key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Lookup as the default device does it: exact key, then the normalised key, then a
    /// case-insensitive match (spec 01 §2.2).
    pub fn get_ci(&self, key: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(key) {
            return Some(v);
        }
        let norm = normalize_key(key);
        if let Some(v) = self.0.get(norm.as_ref()) {
            return Some(v);
        }
        self.0
            .iter()
            .find(|(k, _)| normalize_key(k) == norm)
            .map(|(_, v)| v)
    }

    /// Text of a binary value under `key`.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// True if `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Inserts (or replaces) a value, normalising the key.
    pub fn insert(&mut self, key: &str, value: Value) {
        Arc::make_mut(&mut self.0).insert(key_of(key), value);
    }

    /// Inserts with a key that is already normalised.
    pub fn insert_key(&mut self, key: Key, value: Value) {
        Arc::make_mut(&mut self.0).insert(key, value);
    }

    /// Builder form of [`Message::insert`].
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value.into());
        self
    }

    /// Removes a key (exact match), returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        if !self.0.contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.0).remove(key)
    }

    /// Builder form of [`Message::remove`].
    pub fn without(mut self, key: &str) -> Self {
        self.remove(key);
        self
    }

    /// Keys in byte order.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.0.keys()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.0.iter()
    }

    /// Entries whose key is not private.
    pub fn public(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.0.iter().filter(|(k, _)| !is_private(k))
    }

    /// The message without private keys (the reference's "reset").
    pub fn without_private(&self) -> Message {
        if !self.0.keys().any(|k| is_private(k)) {
            return self.clone();
        }
        Message(Arc::new(
            self.0
                .iter()
                .filter(|(k, _)| !is_private(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))
    }

    /// The private area (`priv`), if any.
    pub fn private(&self) -> Option<&Message> {
        self.get("priv").and_then(Value::as_message)
    }

    /// Reads a key of the private area.
    pub fn get_private(&self, key: &str) -> Option<&Value> {
        self.private().and_then(|p| p.get(key))
    }

    /// Sets a key of the private area.
    pub fn set_private(&mut self, key: &str, value: Value) {
        let mut p = self.private().cloned().unwrap_or_default();
        p.insert(key, value);
        self.insert_key(Arc::from("priv"), Value::Message(p));
    }

    /// Removes a key of the private area (and the area itself when it becomes empty).
    pub fn remove_private(&mut self, key: &str) {
        if let Some(p) = self.private()
            && p.contains(key)
        {
            let p = p.clone().without(key);
            if p.is_empty() {
                self.remove("priv");
            } else {
                self.insert_key(Arc::from("priv"), Value::Message(p));
            }
        }
    }

    /// The hashpath recorded in the private area.
    pub fn hashpath(&self) -> Option<&str> {
        self.get_private("hashpath").and_then(Value::as_str)
    }

    /// Mutable access to the underlying map (copy on write).
    pub fn map_mut(&mut self) -> &mut BTreeMap<Key, Value> {
        Arc::make_mut(&mut self.0)
    }

    /// The underlying map.
    pub fn map(&self) -> &BTreeMap<Key, Value> {
        &self.0
    }

    /// True if the two messages share storage (a cheap identity test).
    pub fn ptr_eq(&self, other: &Message) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromIterator<(Key, Value)> for Message {
    fn from_iter<T: IntoIterator<Item = (Key, Value)>>(iter: T) -> Self {
        Message(Arc::new(iter.into_iter().collect()))
    }
}

/// "ID-like": any byte string of length 32, 42 or 43 (spec 01 §2.4).
pub fn is_id_like(b: &[u8]) -> bool {
    matches!(b.len(), 32 | 42 | 43)
}

/// A key is private iff its normalised form starts with `priv` (spec 01 §2.5).
pub fn is_private(key: &str) -> bool {
    key.len() >= 4 && key.as_bytes()[..4].eq_ignore_ascii_case(b"priv")
}

/// Normalises a key (spec 01 §2.2): ID-like keys are kept as they are, every other key
/// is lower-cased with full Unicode lower-case mapping. Borrows when nothing changes.
pub fn normalize_key(key: &str) -> Cow<'_, str> {
    if is_id_like(key.as_bytes()) || !key.chars().any(char::is_uppercase) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(key.to_lowercase())
    }
}

/// A normalised key, allocated once.
fn key_of(key: &str) -> Key {
    match normalize_key(key) {
        Cow::Borrowed(k) => Key::from(k),
        Cow::Owned(k) => Key::from(k),
    }
}

/// Converts a list into the numbered message `{"1": a, "2": b, …}` (spec 01 §2.3).
pub fn list_to_message(items: &[Value]) -> Message {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| (Key::from((i + 1).to_string()), v.clone()))
        .collect()
}

/// Converts a numbered message (keys exactly `1..=N`) back into a list. A message with
/// no public keys is the empty list; a gap or another key gives `None`.
pub fn message_to_list(msg: &Message) -> Option<Vec<Value>> {
    let public: Vec<(&Key, &Value)> = msg.public().collect();
    let mut out: Vec<Option<Value>> = vec![None; public.len()];
    for (k, v) in public {
        let i: usize = k.parse().ok()?;
        if i == 0 || i > out.len() {
            return None;
        }
        out[i - 1] = Some(v.clone());
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_from_values() {
        assert_eq!(Value::Integer(-3).as_int(), Some(-3));
        assert_eq!(Value::Integer(-3).as_uint(), None);
        assert_eq!(Value::Integer(5).as_uint(), Some(5));
        assert_eq!(Value::text(" 7 ").as_uint(), Some(7));
        assert_eq!(Value::text("-7").as_uint(), None);
        assert_eq!(Value::text("seven").as_uint(), None);
        assert_eq!(Value::Float(7.0).as_uint(), None);
    }

    #[test]
    fn checklist_01_1_key_normalisation() {
        assert_eq!(normalize_key("Test-Header"), "test-header");
        assert_eq!(normalize_key("ÄB"), "äb");
        assert_eq!(normalize_key("test_key"), "test_key");
        let id43 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
        assert_eq!(id43.len(), 43);
        assert_eq!(normalize_key(id43), id43);
    }

    #[test]
    fn checklist_01_3_private_keys() {
        for k in ["priv", "private", "priv_foo", "privilege", "priv-x", "PRIV"] {
            assert!(is_private(k), "{k}");
        }
        assert!(!is_private("pri"));
        assert!(!is_private("a"));
    }

    #[test]
    fn list_message_roundtrip() {
        let l = vec![Value::text("a"), Value::text("b"), Value::text("c")];
        let m = list_to_message(&l);
        assert_eq!(m.get("2"), Some(&Value::text("b")));
        assert_eq!(message_to_list(&m), Some(l));
        assert_eq!(message_to_list(&Message::new()), Some(vec![]));
        let gap = Message::new().with("1", "a").with("3", "c");
        assert_eq!(message_to_list(&gap), None);
    }

    #[test]
    fn case_insensitive_get() {
        let m = Message::new().with("Test-Header", "1");
        assert_eq!(m.get_ci("Test-Header"), Some(&Value::text("1")));
        assert_eq!(m.get_ci("test-header"), Some(&Value::text("1")));
        assert_eq!(m.get_ci("TEST-HEADER"), Some(&Value::text("1")));
    }

    #[test]
    fn copy_on_write() {
        let a = Message::new().with("x", 1i64);
        let mut b = a.clone();
        assert!(a.ptr_eq(&b));
        b.insert("y", Value::Integer(2));
        assert!(!a.contains("y"));
        assert!(b.contains("y"));
    }
}
