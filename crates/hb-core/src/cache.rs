//! The resolver's cache (spec 01 §10): computed results by hashpath, messages by ID.
//!
//! [`Cache`] is what the engine needs; [`MemoryCache`] is a bounded in-memory
//! implementation. Persistent stores implement the same trait.

use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;

use crate::id::Id;
use crate::value::{Message, Value};

/// Where the engine reads and writes results and messages.
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// The result cached under a hashpath (`Left/Right`).
    fn read_result(&self, hashpath: &str) -> Option<Value>;
    /// Records a result under a hashpath.
    fn write_result(&self, hashpath: &str, value: &Value);
    /// A message by its ID (43-character human form or 32 raw bytes).
    fn read_message(&self, id: &Id) -> Option<Message>;
    /// Stores a message under an ID.
    fn write_message(&self, id: Id, msg: &Message);
}

/// A bounded in-memory cache; the least recently used entries are evicted first.
#[derive(Debug)]
pub struct MemoryCache {
    results: Mutex<LruCache<String, Value>>,
    messages: Mutex<LruCache<Id, Message>>,
}

impl MemoryCache {
    /// A cache holding at most `capacity` results and `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        MemoryCache {
            results: Mutex::new(LruCache::new(cap)),
            messages: Mutex::new(LruCache::new(cap)),
        }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCache::new(10_000)
    }
}

impl Cache for MemoryCache {
    fn read_result(&self, hashpath: &str) -> Option<Value> {
        if let Some(v) = self.results.lock().get(hashpath) {
            return Some(v.clone());
        }
        // A lookup of `ID/key` finds key `key` of stored message `ID` (spec 01 §10.5).
        let (left, right) = hashpath.split_once('/')?;
        let id = Id::from_human(left.as_bytes())?;
        let msg = self.messages.lock().get(&id)?.clone();
        msg.get(right)
            .filter(|_| !crate::value::is_private(right))
            .cloned()
    }

    fn write_result(&self, hashpath: &str, value: &Value) {
        self.results.lock().put(hashpath.to_owned(), value.clone());
    }

    fn read_message(&self, id: &Id) -> Option<Message> {
        self.messages.lock().get(id).cloned()
    }

    fn write_message(&self, id: Id, msg: &Message) {
        self.messages.lock().put(id, msg.without_private());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_key_links() {
        let c = MemoryCache::new(2);
        let id = Id::sha256(b"m");
        c.write_message(
            id,
            &Message::new().with("a", "1").with("priv", Message::new()),
        );
        assert_eq!(c.read_result(&format!("{id}/a")), Some(Value::text("1")));
        assert_eq!(c.read_result(&format!("{id}/priv")), None);
        c.write_result("x/1", &Value::Integer(1));
        c.write_result("x/2", &Value::Integer(2));
        c.write_result("x/3", &Value::Integer(3));
        assert_eq!(c.read_result("x/1"), None, "evicted");
        assert_eq!(c.read_result("x/3"), Some(Value::Integer(3)));
    }
}
