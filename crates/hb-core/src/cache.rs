//! The resolver's cache (spec 01 §10): computed results by hashpath, messages by ID.
//!
//! [`Cache`] is what the engine needs; [`MemoryCache`] is a bounded in-memory
//! implementation. Persistent stores implement the same trait.
//!
//! Besides results and messages, a cache may offer the path operations of the message
//! cache (spec 05 §6.4) that `cache@1.0` (§6.8) exposes: [`Cache::read_path`],
//! [`Cache::write_binary`] and [`Cache::link`]. Their default implementations cover
//! what the four engine methods can (reading an ID) and refuse the rest.

use std::num::NonZeroUsize;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use thiserror::Error;

use crate::id::{Id, b64url};
use crate::value::{Message, Value};

/// Why a path operation of a [`Cache`] failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CacheOpError {
    /// This cache does not offer the operation.
    #[error("this cache cannot {what} (`{path}`)")]
    Unsupported {
        /// The operation.
        what: &'static str,
        /// The path involved.
        path: String,
    },
    /// The path is not one the cache can hold.
    #[error("invalid cache path `{path}`: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The cache (its store) failed; the text names the path.
    #[error("{0}")]
    Failed(String),
}

/// `data/<base64url(SHA-256(bytes))>`: where the message cache keeps a binary (spec 05
/// §6.4).
pub fn data_path(bytes: &[u8]) -> String {
    format!("data/{}", b64url(&Id::sha256(bytes).0))
}

/// How many aliases a path read may follow in a [`MemoryCache`].
const MAX_ALIAS_HOPS: usize = 64;

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

    /// A message this cache lacks, fetched from elsewhere (a gateway, another node) and
    /// kept. May block on the network for seconds: the engine calls it through its
    /// blocking hook, after [`Cache::read_message`] found nothing. The default has no
    /// elsewhere.
    fn fetch_remote(&self, id: &Id) -> Option<Message> {
        let _ = id;
        None
    }

    /// The value at a cache path (spec 05 §6.4 "Reading a path"): a message ID, a
    /// commitment ID, `data/<hash>`, a link made by [`Cache::link`], or such a path
    /// followed by keys of the message there. `None` when the cache has nothing there.
    ///
    /// The default answers IDs through [`Cache::read_message`].
    ///
    /// # Errors
    /// The cache failed, or the path is not one it can hold.
    fn read_path(&self, path: &str) -> Result<Option<Value>, CacheOpError> {
        let path = path.trim_matches('/');
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        let Some(id) = Id::from_human(first.as_bytes()) else {
            return Ok(None);
        };
        Ok(self
            .read_message(&id)
            .and_then(|m| follow_keys(Value::Message(m), rest)))
    }

    /// Stores a binary at `data/<hash>` (durably, where the cache is persistent) and
    /// returns that path.
    ///
    /// # Errors
    /// The cache cannot store binaries, or failed.
    fn write_binary(&self, bytes: &Bytes) -> Result<String, CacheOpError> {
        Err(CacheOpError::Unsupported {
            what: "store binaries",
            path: data_path(bytes),
        })
    }

    /// Makes `new` an alias of `existing` (durably, where the cache is persistent); a
    /// no-op when they are equal or `new` exists already.
    ///
    /// # Errors
    /// The cache cannot link, or failed.
    fn link(&self, existing: &str, new: &str) -> Result<(), CacheOpError> {
        let _ = existing;
        Err(CacheOpError::Unsupported {
            what: "link paths",
            path: new.to_owned(),
        })
    }

    /// Stores `msg` (only its committed keys when it is signed) and makes each path of
    /// `aliases` a link to it, in one atomic write that is durable, where the cache is
    /// persistent, when this returns: a reader sees all of it or none of it. Returns
    /// the message's uncommitted ID. What the scheduler acknowledges goes through here.
    ///
    /// # Errors
    /// The cache cannot store messages durably, the message cannot be encoded, or the
    /// store failed (then nothing is written).
    fn store_message(&self, msg: &Message, aliases: &[String]) -> Result<Id, CacheOpError> {
        let _ = msg;
        Err(CacheOpError::Unsupported {
            what: "store messages durably",
            path: aliases.first().cloned().unwrap_or_default(),
        })
    }

    /// [`Cache::store_message`] for several messages, in order, as one atomic write where
    /// the cache can (a scheduler commits the assignments ready at once together: one
    /// disk flush for many). The default stores them one by one: on an error, those
    /// before the failing one may be stored.
    ///
    /// # Errors
    /// As [`Cache::store_message`].
    fn store_messages(&self, batch: &[(Message, Vec<String>)]) -> Result<(), CacheOpError> {
        for (msg, aliases) in batch {
            self.store_message(msg, aliases)?;
        }
        Ok(())
    }

    /// The names directly under the group at `path` (links along it followed), sorted;
    /// `None` when there is no group there.
    ///
    /// # Errors
    /// The cache cannot list paths, or failed.
    fn list(&self, path: &str) -> Result<Option<Vec<String>>, CacheOpError> {
        Err(CacheOpError::Unsupported {
            what: "list paths",
            path: path.to_owned(),
        })
    }
}

/// The value under `keys` (`/`-separated) of `value`; `value` itself when there are none.
fn follow_keys(value: Value, keys: &str) -> Option<Value> {
    let mut v = value;
    for key in keys.split('/').filter(|k| !k.is_empty()) {
        if crate::value::is_private(key) {
            return None;
        }
        v = v.as_message()?.get(key)?.clone();
    }
    Some(v)
}

/// A bounded in-memory cache; the least recently used entries are evicted first.
#[derive(Debug)]
pub struct MemoryCache {
    results: Mutex<LruCache<String, Value>>,
    messages: Mutex<LruCache<Id, Message>>,
    /// Binaries by `data/<hash>` path, and aliases ([`Cache::link`]).
    paths: Mutex<LruCache<String, PathEntry>>,
}

/// What a [`MemoryCache`] keeps at a path.
#[derive(Debug, Clone)]
enum PathEntry {
    Binary(Bytes),
    Alias(String),
}

impl MemoryCache {
    /// A cache holding at most `capacity` results and `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        MemoryCache {
            results: Mutex::new(LruCache::new(cap)),
            messages: Mutex::new(LruCache::new(cap)),
            paths: Mutex::new(LruCache::new(cap)),
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
        let kept = match value {
            Value::Message(m) => Value::Message(m.without_private()),
            other => other.clone(),
        };
        self.results.lock().put(hashpath.to_owned(), kept);
    }

    fn read_message(&self, id: &Id) -> Option<Message> {
        self.messages.lock().get(id).cloned()
    }

    fn write_message(&self, id: Id, msg: &Message) {
        self.messages.lock().put(id, msg.without_private());
    }

    fn read_path(&self, path: &str) -> Result<Option<Value>, CacheOpError> {
        let mut path = path.trim_matches('/').to_owned();
        for _ in 0..MAX_ALIAS_HOPS {
            // The longest prefix of the path that names an entry.
            let mut found = None;
            let mut end = path.len();
            loop {
                let head = &path[..end];
                if let Some(e) = self.paths.lock().get(head).cloned() {
                    found = Some((e, path[end..].trim_start_matches('/').to_owned()));
                    break;
                }
                match head.rfind('/') {
                    Some(i) => end = i,
                    None => break,
                }
            }
            match found {
                Some((PathEntry::Binary(b), rest)) => {
                    return Ok(rest.is_empty().then_some(Value::Binary(b)));
                }
                Some((PathEntry::Alias(target), rest)) => {
                    path = if rest.is_empty() {
                        target
                    } else {
                        format!("{target}/{rest}")
                    };
                }
                None => {
                    let (first, rest) = path.split_once('/').unwrap_or((&path, ""));
                    let Some(id) = Id::from_human(first.as_bytes()) else {
                        return Ok(None);
                    };
                    let msg = self.messages.lock().get(&id).cloned();
                    return Ok(msg.and_then(|m| follow_keys(Value::Message(m), rest)));
                }
            }
        }
        Err(CacheOpError::InvalidPath {
            path: path.clone(),
            reason: "too many aliases (a cycle?)".into(),
        })
    }

    fn write_binary(&self, bytes: &Bytes) -> Result<String, CacheOpError> {
        let path = data_path(bytes);
        self.paths
            .lock()
            .put(path.clone(), PathEntry::Binary(bytes.clone()));
        Ok(path)
    }

    fn link(&self, existing: &str, new: &str) -> Result<(), CacheOpError> {
        let (existing, new) = (existing.trim_matches('/'), new.trim_matches('/'));
        if new.is_empty() || existing.is_empty() {
            return Err(CacheOpError::InvalidPath {
                path: if new.is_empty() { new } else { existing }.to_owned(),
                reason: "an empty path".into(),
            });
        }
        if existing == new {
            return Ok(());
        }
        let mut paths = self.paths.lock();
        if !paths.contains(new) {
            paths.put(new.to_owned(), PathEntry::Alias(existing.to_owned()));
        }
        Ok(())
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

    #[test]
    fn paths_binaries_and_links() {
        let c = MemoryCache::new(16);
        let id = Id::sha256(b"m");
        c.write_message(
            id,
            &Message::new()
                .with("a", "1")
                .with("n", Message::new().with("b", "2")),
        );
        let bin = Bytes::from_static(b"Simple unsigned data item");
        let path = c.write_binary(&bin).unwrap();
        assert_eq!(path, data_path(&bin));
        assert_eq!(
            c.read_path(&path).unwrap(),
            Some(Value::Binary(bin.clone()))
        );
        assert_eq!(
            c.read_path(&format!("{id}/n/b")).unwrap(),
            Some(Value::text("2"))
        );
        c.link(&path, "alias/one").unwrap();
        c.link(&id.to_human(), "msg").unwrap();
        c.link("elsewhere", "msg").unwrap(); // never overwrites
        assert_eq!(c.read_path("alias/one").unwrap(), Some(Value::Binary(bin)));
        assert_eq!(c.read_path("msg/a").unwrap(), Some(Value::text("1")));
        assert_eq!(c.read_path("nothing").unwrap(), None);
        c.link("loop-b", "loop-a").unwrap();
        c.link("loop-a", "loop-b").unwrap();
        assert!(c.read_path("loop-a").is_err());
    }

    /// A cache that implements only the engine methods.
    #[derive(Debug)]
    struct EngineOnly(MemoryCache);

    impl Cache for EngineOnly {
        fn read_result(&self, h: &str) -> Option<Value> {
            self.0.read_result(h)
        }
        fn write_result(&self, h: &str, v: &Value) {
            self.0.write_result(h, v);
        }
        fn read_message(&self, id: &Id) -> Option<Message> {
            self.0.read_message(id)
        }
        fn write_message(&self, id: Id, msg: &Message) {
            self.0.write_message(id, msg);
        }
    }

    #[test]
    fn defaults_read_ids_and_refuse_writes() {
        let c = EngineOnly(MemoryCache::new(4));
        let id = Id::sha256(b"m");
        c.write_message(id, &Message::new().with("a", "1"));
        assert_eq!(
            c.read_path(&format!("/{id}/a")).unwrap(),
            Some(Value::text("1"))
        );
        assert_eq!(c.read_path("data/x").unwrap(), None);
        assert!(matches!(
            c.write_binary(&Bytes::new()),
            Err(CacheOpError::Unsupported { .. })
        ));
        assert!(matches!(
            c.link("a", "b"),
            Err(CacheOpError::Unsupported { .. })
        ));
    }
}
