//! The content-addressed message cache (spec 05 §6.4) over any [`Store`].
//!
//! Layout:
//!
//! ```text
//! data/<b64url(sha256(v))>            every binary value, once
//! <U>/                                 a group per message, U = its uncommitted ID
//! <U>/<key>      = bytes              a binary of at most INLINE_MAX (128) bytes
//! <U>/<key>      -> data/<hash>       a link per larger binary
//! <U>/<key>      -> <U2>              a link per nested message (U2: its uncommitted
//!                                      ID, or a content hash when it holds signatures)
//! <W>/<key>      -> (as <U>/<key>)    a signed message whole: W = its ID (spec 01
//! <W>/commitments -> <C>               §6.5), or a content hash when that is U
//! <commitment ID> -> <W>              an alias per commitment
//! signed/<U>     -> <W>               the first signed form of U (what U reads as)
//! hashpaths/<left>/<right> -> <U> or data/<hash>    computed results (engine cache)
//! ```
//!
//! A message is written in one atomic batch: a reader sees all of it or nothing.
//! [`MessageCache::write`] commits durably before it returns. The engine's own writes
//! (the [`Cache`] trait: step messages and results, all recomputable) go through a
//! write-behind queue that a background thread commits in groups, so a request never
//! waits for a disk flush; until they are committed they are served from memory.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use hb_core::cache::{CacheOpError, data_path};
use hb_core::id::Id;
use hb_core::structured::{CodecError, from_tabm, to_tabm};
use hb_core::value::{Message, Value, is_private};
use hb_core::{Cache, httpsig};
use lru::LruCache;
use parking_lot::Mutex;
use thiserror::Error;

use crate::store::{Op, Store, StoreError, Tree};

/// Why the message cache could not read or write.
#[derive(Debug, Error)]
pub enum CacheError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The message cannot be encoded, or what the store holds cannot be decoded.
    #[error("cannot convert the message at `{path}`: {source}")]
    Codec {
        /// The path (or ID) of the message.
        path: String,
        /// The codec error.
        source: CodecError,
    },
    /// A group that holds itself (through links).
    #[error("the message at `{0}` contains itself")]
    Cycle(String),
    /// A listed key that cannot be read.
    #[error("key `{key}` of the message at `{path}` is listed but cannot be read")]
    Missing {
        /// The message.
        path: String,
        /// The key.
        key: String,
    },
    /// Messages nested deeper than [`MAX_DEPTH`].
    #[error("the message at `{0}` is nested too deeply")]
    TooDeep(String),
    /// A `device` key whose value is a message (spec 05 §6.4 step 4).
    #[error("a `device` key must not hold a message")]
    DeviceMessage,
}

/// How deeply stored messages may nest.
pub const MAX_DEPTH: usize = 64;
/// Entries of the in-memory front cache.
const HOT_ENTRIES: usize = 16 * 1024;
/// Pending engine writes; beyond that, engine cache writes are dropped (they are
/// recomputable) rather than making requests wait.
const QUEUE: usize = 64 * 1024;
/// Engine writes committed per batch at most.
const GROUP: usize = 1024;

/// Somewhere messages the local store lacks can be fetched by ID: an Arweave gateway
/// (spec 05 §6.5) or another node (§6.6). Sources are read-only and remote.
pub trait MessageSource: Send + Sync + std::fmt::Debug {
    /// A short name for errors and logs.
    fn name(&self) -> &str;

    /// The message with this ID (43 characters of base64url), if the source has it.
    ///
    /// # Errors
    /// The source could not be reached or answered with something unusable.
    fn fetch(&self, id: &str) -> Result<Option<Message>, StoreError>;
}

/// The message cache. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct MessageCache {
    inner: Arc<Inner>,
    sources: Vec<Arc<dyn MessageSource>>,
    queue: Mutex<Option<SyncSender<Vec<Op>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    /// Recently written or read values by path (IDs, hashpaths, data paths).
    hot: Mutex<LruCache<String, Value>>,
    /// Engine batches queued and not yet committed.
    pending: AtomicUsize,
}

impl MessageCache {
    /// A message cache over `store`, with its write-behind thread.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let entries = NonZeroUsize::new(HOT_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        let inner = Arc::new(Inner {
            store,
            hot: Mutex::new(LruCache::new(entries)),
            pending: AtomicUsize::new(0),
        });
        let (tx, rx) = sync_channel::<Vec<Op>>(QUEUE);
        let worker = inner.clone();
        let writer = std::thread::Builder::new()
            .name("hb-cache-writer".into())
            .spawn(move || write_behind(&worker, &rx))
            .map_err(|e| tracing::error!(error = %e, "cannot start the cache writer"))
            .ok();
        MessageCache {
            inner,
            sources: Vec::new(),
            queue: Mutex::new(writer.as_ref().map(|_| tx)),
            writer: Mutex::new(writer),
        }
    }

    /// The same cache, reading IDs it lacks through `sources` (in order) and keeping
    /// what they return.
    #[must_use]
    pub fn with_sources(mut self, sources: Vec<Arc<dyn MessageSource>>) -> Self {
        self.sources = sources;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Writes a binary (`data/<hash>`), durably; returns its path.
    ///
    /// # Errors
    /// The store failed.
    pub fn write_binary(&self, bytes: &Bytes) -> Result<String, CacheError> {
        let path = data_path(bytes);
        self.inner
            .store
            .apply(&[Op::Write(path.clone(), bytes.clone())])?;
        Ok(path)
    }

    /// Writes a message (spec 05 §6.4) durably, in one atomic batch, and returns its
    /// uncommitted ID. Only its committed keys are kept when it is signed; it can then
    /// be read by that ID and by each commitment ID.
    ///
    /// # Errors
    /// The message cannot be encoded, or the store failed (then nothing is written).
    pub fn write(&self, msg: &Message) -> Result<Id, CacheError> {
        self.write_linked(msg, &[])
    }

    /// [`MessageCache::write`], with each path of `aliases` made a link to the message
    /// in the same atomic batch.
    ///
    /// # Errors
    /// As [`MessageCache::write`].
    pub fn write_linked(&self, msg: &Message, aliases: &[String]) -> Result<Id, CacheError> {
        let kept = kept_keys(msg);
        let (id, mut ops) = message_ops(&kept)?;
        ops.extend(aliases.iter().map(|a| Op::Link {
            existing: id.to_human(),
            new: a.clone(),
        }));
        self.inner.store.apply(&ops)?;
        self.inner
            .hot
            .lock()
            .put(id.to_human(), Value::Message(kept));
        Ok(id)
    }

    /// Links `new` to `existing` durably (spec 05 §6.4 `link`).
    ///
    /// # Errors
    /// The store failed.
    pub fn link(&self, existing: &str, new: &str) -> Result<(), CacheError> {
        Ok(self.inner.store.make_link(existing, new)?)
    }

    /// The value at `path` (an ID, a data path or any path through links): a message,
    /// or the bytes of a simple entry. `None` when the store has nothing there.
    ///
    /// # Errors
    /// The store failed, or what it holds is corrupt or cyclic.
    /// An ID missing locally is asked of the sources (which may take seconds).
    ///
    /// # Errors
    /// The store failed, or what it holds is corrupt or cyclic.
    pub fn read(&self, path: &str) -> Result<Option<Value>, CacheError> {
        match self.read_local(path)? {
            None if Id::from_human(path.as_bytes()).is_some() => {
                Ok(self.fetch_remote(path).map(Value::Message))
            }
            found => Ok(found),
        }
    }

    /// [`MessageCache::read`] without asking the sources.
    ///
    /// # Errors
    /// As [`MessageCache::read`].
    pub fn read_local(&self, path: &str) -> Result<Option<Value>, CacheError> {
        if let Some(v) = self.inner.hot.lock().get(path) {
            return Ok(Some(v.clone()));
        }
        let value = read_value(self.inner.store.as_ref(), path)?;
        if let Some(v) = &value {
            self.inner.hot.lock().put(path.to_owned(), v.clone());
        }
        Ok(value)
    }

    /// The message `id` from the first source that has it, kept in the local store.
    fn fetch_remote(&self, id: &str) -> Option<Message> {
        for source in &self.sources {
            match source.fetch(id) {
                Ok(Some(msg)) => {
                    match self.write(&msg) {
                        Ok(u) if u.to_human() != id => {
                            if let Err(e) = self.link(&u.to_human(), id) {
                                tracing::warn!(error = %e, %id, "cannot alias a fetched message");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, %id, "cannot keep a fetched message"),
                    }
                    self.inner
                        .hot
                        .lock()
                        .put(id.to_owned(), Value::Message(msg.clone()));
                    return Some(msg);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(source = source.name(), error = %e, %id, "source failed"),
            }
        }
        None
    }

    /// Waits (at most ten seconds) until every queued engine write is committed.
    pub fn flush(&self) {
        for _ in 0..10_000 {
            if self.inner.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        tracing::warn!("cache writes still pending after 10 s");
    }

    /// Queues an engine write; dropped (with a debug log) when the queue is full.
    fn enqueue(&self, ops: Vec<Op>) {
        let guard = self.queue.lock();
        let Some(q) = guard.as_ref() else {
            if let Err(e) = self.inner.store.apply(&ops) {
                tracing::warn!(error = %e, "cache write failed");
            }
            return;
        };
        self.inner.pending.fetch_add(1, Ordering::AcqRel);
        if q.try_send(ops).is_err() {
            self.inner.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("cache write queue full; a recomputable entry is not stored");
        }
    }
}

impl Drop for MessageCache {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is pending and stop.
        self.queue.lock().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }
}

/// The write-behind loop: commits queued batches in groups of up to [`GROUP`].
fn write_behind(inner: &Inner, rx: &Receiver<Vec<Op>>) {
    while let Ok(first) = rx.recv() {
        let mut ops = first;
        let mut taken = 1;
        while taken < GROUP {
            match rx.try_recv() {
                Ok(more) => {
                    ops.extend(more);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        if !ops.is_empty()
            && let Err(e) = inner.store.apply(&ops)
        {
            tracing::warn!(error = %e, entries = taken, "cache write failed");
        }
        inner.pending.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// The keys of `msg` its signatures cover (all of them when it has no signer), plus
/// `commitments`.
fn kept_keys(msg: &Message) -> Message {
    match committed_keys(msg) {
        Some(keys) => {
            let mut out = Message::new();
            for (k, v) in msg.iter() {
                if k.as_ref() == "commitments" || keys.contains(k.as_ref()) {
                    out.insert_key(k.clone(), v.clone());
                }
            }
            out
        }
        None => msg.clone(),
    }
    .without_private()
}

/// The union of the keys covered by `msg`'s signed commitments; `None` when it has no
/// signed commitment (or a commitment's keys cannot be determined: then all are kept).
fn committed_keys(msg: &Message) -> Option<HashSet<String>> {
    let commitments = msg.get("commitments").and_then(Value::as_message)?;
    let mut keys = HashSet::new();
    let mut signed = false;
    for (id, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        if c.get("committer").is_none() {
            continue;
        }
        signed = true;
        let found = match c.get_str("commitment-device") {
            Some(hb_codec::ans104::DEVICE_NAME) => {
                hb_codec::ans104::committed_keys(msg, id).map_err(|e| e.to_string())
            }
            _ => hb_codec::httpsig_commit::committed_keys(msg, id).map_err(|e| e.to_string()),
        };
        match found {
            Ok(k) => keys.extend(k),
            Err(e) => {
                tracing::debug!(error = %e, "committed keys unknown; keeping every key");
                return None;
            }
        }
    }
    signed.then_some(keys)
}

/// The batch that writes `kept` (a message already reduced by [`kept_keys`]) and its
/// uncommitted ID.
///
/// The group `U` holds the message's content only: the same content is also every
/// other message's nested message with that ID, and may be signed more than once (two
/// signers, or one signer twice: RSA-PSS signatures differ), so commitments stored
/// under `U` would show up in the wrong places. A signed message is kept whole in its
/// own group `W` — named by its ID (all commitments, spec 01 §6.5), or by a hash of `U`
/// and its commitments when that ID is `U` — holding `U`'s links plus `commitments`;
/// each commitment ID is an alias of `W`, and `signed/<U>` links to the first `W`
/// stored for `U`, which is what reading `U` returns (spec 05 §6.4: a signed message
/// reads back by its uncommitted ID too).
fn message_ops(kept: &Message) -> Result<(Id, Vec<Op>), CacheError> {
    let codec = |source| CacheError::Codec {
        path: String::new(),
        source,
    };
    let tabm = to_tabm(kept).map_err(codec)?;
    let mut ops = Vec::new();
    let id = tabm_ops(&tabm.clone().without("commitments"), &mut ops, 0)?;
    let Some(Value::Message(commitments)) = tabm.get("commitments") else {
        return Ok((id, ops));
    };
    let human = id.to_human();
    // U's own entries (links and inline bytes), replicated under W below.
    let entries: Vec<(String, Entry)> = {
        let own = format!("{human}/");
        ops.iter()
            .filter_map(|op| match op {
                Op::Link { existing, new } => new
                    .strip_prefix(&own)
                    .map(|key| (key.to_owned(), Entry::Link(existing.clone()))),
                Op::Write(at, b) => at
                    .strip_prefix(&own)
                    .map(|key| (key.to_owned(), Entry::Inline(b.clone()))),
                Op::Group(_) => None,
            })
            .collect()
    };
    let commitments_group = tabm_ops(commitments, &mut ops, 1)?.to_human();
    let whole = httpsig::message_id(kept)
        .ok()
        .map(|f| f.to_human())
        .filter(|f| *f != human)
        .unwrap_or_else(|| {
            Id::sha256(format!("{human}\0commitments\0{commitments_group}").as_bytes()).to_human()
        });
    ops.push(Op::Group(whole.clone()));
    for (key, entry) in entries {
        ops.push(entry.op(format!("{whole}/{key}")));
    }
    ops.push(Op::Link {
        existing: commitments_group,
        new: format!("{whole}/commitments"),
    });
    for alias in commitments.keys() {
        if alias.as_ref() != human && alias.as_ref() != whole {
            ops.push(Op::Link {
                existing: whole.clone(),
                new: alias.to_string(),
            });
        }
    }
    ops.push(Op::Link {
        existing: whole,
        new: signed_path(&human),
    });
    Ok((id, ops))
}

/// Where the first signed form of the message with uncommitted ID `u` is linked.
fn signed_path(u: &str) -> String {
    format!("signed/{u}")
}

/// Keys a message's uncommitted ID leaves out (`commitments`, `signature`) or narrows
/// (`signature-input`: the HMAC ID then covers only the components it names).
const UNCOVERED: [&str; 3] = ["commitments", "signature", "signature-input"];

/// Binaries up to this size are kept in their message's group entry itself instead of
/// behind a link to `data/<hash>`: one lookup less per key when a message is read
/// (docs/adr/0004). Larger ones are stored once, by hash.
pub const INLINE_MAX: usize = 128;

/// What a message's key holds in the store.
enum Entry {
    /// The bytes themselves.
    Inline(Bytes),
    /// A link to `data/<hash>` or to a nested message's group.
    Link(String),
}

impl Entry {
    /// What the entry stands for, for content hashes: the data path of inline bytes,
    /// the target of a link.
    fn identity(&self) -> String {
        match self {
            Entry::Inline(b) => data_path(b),
            Entry::Link(target) => target.clone(),
        }
    }

    /// The op that puts the entry at `at`.
    fn op(self, at: String) -> Op {
        match self {
            Entry::Inline(b) => Op::Write(at, b),
            Entry::Link(existing) => Op::Link { existing, new: at },
        }
    }
}

/// Adds the ops writing a TABM (spec 05 §6.4 steps 3–4) and returns the ID of its group:
/// its uncommitted ID — except for a nested message holding one of [`UNCOVERED`] (a
/// commitment, a signed nested message): two of those differing only in their
/// signatures have one uncommitted ID, and as a link never overwrites, the second
/// would read back with the first one's signature. Such a group is named by a hash of
/// its uncommitted ID and every key's target instead.
fn tabm_ops(tabm: &Message, ops: &mut Vec<Op>, depth: usize) -> Result<Id, CacheError> {
    if depth > MAX_DEPTH {
        return Err(CacheError::TooDeep(String::new()));
    }
    let uncommitted = httpsig::hmac_id(&tabm.clone().without("commitments")).map_err(|source| {
        CacheError::Codec {
            path: String::new(),
            source,
        }
    })?;
    let mut entries: Vec<(&str, Entry)> = Vec::with_capacity(tabm.len());
    for (k, v) in tabm.iter() {
        if is_private(k) {
            continue;
        }
        let entry = match v {
            Value::Binary(b) if b.len() <= INLINE_MAX => Entry::Inline(b.clone()),
            Value::Binary(b) => {
                let path = data_path(b);
                ops.push(Op::Write(path.clone(), b.clone()));
                Entry::Link(path)
            }
            Value::Message(m) => {
                if k.as_ref() == "device" {
                    return Err(CacheError::DeviceMessage);
                }
                Entry::Link(tabm_ops(m, ops, depth + 1)?.to_human())
            }
            other => {
                return Err(CacheError::Codec {
                    path: format!("{}/{k}", uncommitted.to_human()),
                    source: CodecError::Other(format!(
                        "a TABM holds only binaries and messages, not a {}",
                        other.type_name()
                    )),
                });
            }
        };
        entries.push((k.as_ref(), entry));
    }
    let id = if depth > 0 && entries.iter().any(|(k, _)| UNCOVERED.contains(k)) {
        let mut content = uncommitted.0.to_vec();
        for (k, entry) in &entries {
            content.extend_from_slice(k.as_bytes());
            content.push(0);
            content.extend_from_slice(entry.identity().as_bytes());
            content.push(0);
        }
        Id::sha256(&content)
    } else {
        uncommitted
    };
    let u = id.to_human();
    ops.push(Op::Group(u.clone()));
    for (k, entry) in entries {
        ops.push(entry.op(format!("{u}/{k}")));
    }
    Ok(id)
}

/// Reads the value at `path`: a message (decoded from its TABM) or bytes.
fn read_value(store: &dyn Store, path: &str) -> Result<Option<Value>, CacheError> {
    // A message's uncommitted ID reads as its first signed form, if one was stored.
    let prefer = |resolved: &str| {
        (resolved.len() == 43 && !resolved.contains('/')).then(|| signed_path(resolved))
    };
    // One consistent view of the whole message (one read transaction on LMDB).
    match store.read_tree(path, &prefer)? {
        None => Ok(None),
        Some(Tree::Bytes(b)) => Ok(Some(Value::Binary(b))),
        Some(Tree::Group(children)) => {
            let tabm = tree_to_tabm(children);
            let rich = from_tabm(&tabm).map_err(|source| CacheError::Codec {
                path: path.to_owned(),
                source,
            })?;
            Ok(Some(Value::Message(rich)))
        }
    }
}

/// A group read whole as a TABM: binaries and nested messages.
fn tree_to_tabm(children: Vec<(String, Tree)>) -> Message {
    let mut out = Message::new();
    for (k, t) in children {
        let v = match t {
            Tree::Bytes(b) => Value::Binary(b),
            Tree::Group(g) => Value::Message(tree_to_tabm(g)),
        };
        out.insert(&k, v);
    }
    out
}

/// The store path of a computed result.
fn result_path(hashpath: &str) -> String {
    format!("hashpaths/{hashpath}")
}

impl Cache for MessageCache {
    fn read_result(&self, hashpath: &str) -> Option<Value> {
        let at = result_path(hashpath);
        match self.read_local(&at) {
            Ok(Some(v)) => return Some(v),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, %hashpath, "cache read failed"),
        }
        // `ID/key`: key `key` of the stored message `ID` (spec 01 §10.5).
        let (left, right) = hashpath.split_once('/')?;
        if is_private(right) || right.contains('/') {
            return None;
        }
        Id::from_human(left.as_bytes())?;
        match self.read_local(left) {
            Ok(Some(Value::Message(m))) => m.get(right).cloned(),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, id = %left, "cache read failed");
                None
            }
        }
    }

    fn write_result(&self, hashpath: &str, value: &Value) {
        let at = result_path(hashpath);
        let ops = match value {
            Value::Message(m) => match message_ops(&kept_keys(m)) {
                Ok((id, mut ops)) => {
                    ops.push(Op::Link {
                        existing: id.to_human(),
                        new: at.clone(),
                    });
                    ops
                }
                Err(e) => {
                    tracing::debug!(error = %e, %hashpath, "result not stored");
                    return;
                }
            },
            Value::Binary(b) => {
                let path = data_path(b);
                vec![
                    Op::Write(path.clone(), b.clone()),
                    Op::Link {
                        existing: path,
                        new: at.clone(),
                    },
                ]
            }
            // Other scalars have no store form of their own; they stay in memory.
            _ => Vec::new(),
        };
        self.inner.hot.lock().put(at, value.clone());
        if !ops.is_empty() {
            self.enqueue(ops);
        }
    }

    fn fetch_remote(&self, id: &Id) -> Option<Message> {
        MessageCache::fetch_remote(self, &id.to_human())
    }

    fn read_message(&self, id: &Id) -> Option<Message> {
        match self.read_local(&id.to_human()) {
            Ok(Some(Value::Message(m))) => Some(m),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, %id, "cache read failed");
                None
            }
        }
    }

    fn write_message(&self, id: Id, msg: &Message) {
        let human = id.to_human();
        let kept = kept_keys(msg);
        match message_ops(&kept) {
            Ok((u, mut ops)) => {
                if u != id {
                    ops.push(Op::Link {
                        existing: u.to_human(),
                        new: human.clone(),
                    });
                }
                self.inner.hot.lock().put(human, Value::Message(kept));
                self.enqueue(ops);
            }
            Err(e) => tracing::debug!(error = %e, %id, "message not stored"),
        }
    }

    fn read_path(&self, path: &str) -> Result<Option<Value>, CacheOpError> {
        MessageCache::read(self, path).map_err(|e| op_error(e, path))
    }

    fn write_binary(&self, bytes: &Bytes) -> Result<String, CacheOpError> {
        MessageCache::write_binary(self, bytes).map_err(|e| op_error(e, &data_path(bytes)))
    }

    fn link(&self, existing: &str, new: &str) -> Result<(), CacheOpError> {
        MessageCache::link(self, existing, new).map_err(|e| op_error(e, new))
    }

    fn store_message(&self, msg: &Message, aliases: &[String]) -> Result<Id, CacheOpError> {
        MessageCache::write_linked(self, msg, aliases)
            .map_err(|e| op_error(e, aliases.first().map_or("", String::as_str)))
    }

    fn list(&self, path: &str) -> Result<Option<Vec<String>>, CacheOpError> {
        let store = self.inner.store.as_ref();
        let at = store
            .resolve(path)
            .map_err(|e| op_error(CacheError::Store(e), path))?;
        store
            .list(&at)
            .map_err(|e| op_error(CacheError::Store(e), path))
    }
}

/// A message cache error as the engine's [`CacheOpError`].
fn op_error(e: CacheError, path: &str) -> CacheOpError {
    match e {
        CacheError::Store(StoreError::InvalidPath { path, reason, .. }) => {
            CacheOpError::InvalidPath { path, reason }
        }
        other => CacheOpError::Failed(format!("`{path}`: {other}")),
    }
}
