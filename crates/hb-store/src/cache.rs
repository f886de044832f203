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
//! `U` and `W` also have a packed copy of the message they read as (the [`packed`]
//! format, at most [`PACKED_MAX`] bytes), written in the same batch
//! ([`Store::apply_packed`]) when the store keeps copies (LMDB: in a key space of their
//! own, next to the paths, [`crate::kv`]). Reading a message by ID is then one lookup
//! and a decoding with few allocations, instead of a walk over its group and the
//! structured codec. The layout above stays whole — a copy is an addition, checked
//! against what the group reads as when it is written, dropped when anything is placed
//! below the group or over it, and kept for `U` only while `signed/<U>` is empty (the
//! link methods here drop it when they fill it: `signed/` belongs to this cache).
//! Groups without a copy (older stores, large messages, nested messages, `ID/key`
//! paths) are read through the layout as before, as is a copy that does not decode or
//! fails its checksum. A message too large for a copy keeps a digest of its group's
//! shape instead ([`crate::kv`]), checked when it is read whole: a key lost below it
//! is an error, not a smaller message.
//!
//! Integrity: on LMDB and in memory every stored entry carries a checksum of its key
//! and value, checked on every read ([`crate::kv`]); a corrupt value is an error
//! naming its path (`StoreError::Corrupt`), never a different value.
//!
//! A message is written in one atomic batch: a reader sees all of it or nothing.
//! [`MessageCache::write`] commits durably before it returns. The engine's own writes
//! (the [`Cache`] trait: step messages and results, all recomputable) go through a
//! write-behind queue that a background thread commits in groups, so a request never
//! waits for a disk flush; until they are committed they are served from memory.

pub mod packed;

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
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

use crate::store::{Op, Pack, Packed, Store, StoreError, Tree, normalize};

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
/// A value read from the store enters the front cache when its path was read from the
/// store before, among the last [`SEEN`] to [`SEEN`] × 2 paths read so (the first read
/// of a path only notes it): one-off reads, such as a scan over many messages, do not
/// evict what is read again and again, and cost no insert (a key allocated, a message
/// evicted and dropped). A path read again only after more distinct paths than the
/// front cache holds would have been evicted before it was read again anyway.
const SEEN: usize = HOT_ENTRIES / 2;
/// The largest packed copy kept with a message's group ([`packed`]): messages up to
/// this size read in one lookup; larger ones are read through their group.
pub const PACKED_MAX: usize = 4096;
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
    queue: Mutex<Option<SyncSender<Batch>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    /// Recently written or read values by path (IDs, hashpaths, data paths).
    hot: Mutex<Hot>,
    /// Engine batches queued and not yet committed.
    pending: AtomicUsize,
}

/// The front cache: values by path, and the paths recently read from the store.
#[derive(Debug)]
struct Hot {
    lru: LruCache<String, Value>,
    /// Hashes of the paths read from the store lately, in two generations of up to
    /// [`SEEN`] each ([`Hot::seen`]).
    recent: HashSet<u64, BuildHasherDefault<Prehashed>>,
    older: HashSet<u64, BuildHasherDefault<Prehashed>>,
}

impl Hot {
    fn new() -> Self {
        let entries = NonZeroUsize::new(HOT_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Hot {
            lru: LruCache::new(entries),
            recent: HashSet::default(),
            older: HashSet::default(),
        }
    }

    /// Notes that `path` is being read from the store; true when it was lately, so
    /// that what is read enters the front cache.
    fn seen(&mut self, path: &str) -> bool {
        let h = path_hash(path);
        if self.recent.contains(&h) || self.older.contains(&h) {
            return true;
        }
        if self.recent.len() >= SEEN {
            std::mem::swap(&mut self.recent, &mut self.older);
            self.recent.clear();
        }
        self.recent.insert(h);
        false
    }
}

/// A 64-bit hash of a path, well mixed (the sets of [`Hot`] use it as it is). Not
/// keyed: a collision only lets a value into the front cache early.
fn path_hash(path: &str) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3 ^ path.len() as u64;
    let mut chunks = path.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    // SplitMix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The hasher of sets of [`path_hash`]es: the value is the hash.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An engine write: ops, and the packed copies to keep with them.
type Batch = (Vec<Op>, Vec<Pack>);

impl MessageCache {
    /// A message cache over `store`, with its write-behind thread.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let inner = Arc::new(Inner {
            store,
            hot: Mutex::new(Hot::new()),
            pending: AtomicUsize::new(0),
        });
        let (tx, rx) = sync_channel::<Batch>(QUEUE);
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
        let ids = self.write_batch(&[(msg.clone(), aliases.to_vec())])?;
        ids.into_iter().next().ok_or_else(|| {
            CacheError::Store(StoreError::Remote {
                store: "message cache".into(),
                reason: "a batch of one message wrote none".into(),
            })
        })
    }

    /// [`MessageCache::write_linked`] for several messages, in one atomic batch (one
    /// commit, one disk flush); returns their uncommitted IDs in order.
    ///
    /// # Errors
    /// As [`MessageCache::write`]: then nothing is written.
    pub fn write_batch(&self, batch: &[(Message, Vec<String>)]) -> Result<Vec<Id>, CacheError> {
        let mut all_ops = Vec::new();
        let mut all_packs = Vec::new();
        let mut written = Vec::with_capacity(batch.len());
        for (msg, aliases) in batch {
            let kept = kept_keys(msg);
            let (id, ops, packs) = message_ops(&kept)?;
            all_ops.extend(ops);
            all_packs.extend(packs);
            for a in aliases {
                all_ops.push(Op::Link {
                    existing: id.to_human(),
                    new: a.clone(),
                });
                all_packs.extend(self.copy_dropped_by(a));
            }
            written.push((id, kept));
        }
        self.inner.store.apply_packed(&all_ops, &all_packs)?;
        let mut hot = self.inner.hot.lock();
        Ok(written
            .into_iter()
            .map(|(id, kept)| {
                hot.lru.put(id.to_human(), Value::Message(kept));
                id
            })
            .collect())
    }

    /// Links `new` to `existing` durably (spec 05 §6.4 `link`).
    ///
    /// # Errors
    /// The store failed.
    pub fn link(&self, existing: &str, new: &str) -> Result<(), CacheError> {
        let op = Op::Link {
            existing: existing.to_owned(),
            new: new.to_owned(),
        };
        let packs: Vec<Pack> = self.copy_dropped_by(new).into_iter().collect();
        Ok(self.inner.store.apply_packed(&[op], &packs)?)
    }

    /// The packed copy a link at `new` makes stale: that of the group `U` when the link
    /// is `signed/<U>` (a reader of `U`'s copy does not look there).
    fn copy_dropped_by(&self, new: &str) -> Option<Pack> {
        let new = normalize(new);
        let (parent, last) = new.rsplit_once('/')?;
        preferred(last)?;
        // (The link is placed under its parent with the links along that followed.)
        // (Dropping a copy needlessly costs a read through the group only: when in
        // doubt, drop.)
        let signed = parent == "signed"
            || self
                .inner
                .store
                .resolve(parent)
                .map_or(true, |p| p == "signed");
        signed.then(|| Pack::Drop(last.to_owned()))
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
        let again = {
            let mut hot = self.inner.hot.lock();
            if let Some(v) = hot.lru.get(path) {
                return Ok(Some(v.clone()));
            }
            hot.seen(path)
        };
        let value = read_value(self.inner.store.as_ref(), path)?;
        if again && let Some(v) = &value {
            self.inner.hot.lock().lru.put(path.to_owned(), v.clone());
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
                        .lru
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
    fn enqueue(&self, batch: Batch) {
        let guard = self.queue.lock();
        let Some(q) = guard.as_ref() else {
            if let Err(e) = self.inner.store.apply_packed(&batch.0, &batch.1) {
                tracing::warn!(error = %e, "cache write failed");
            }
            return;
        };
        self.inner.pending.fetch_add(1, Ordering::AcqRel);
        if q.try_send(batch).is_err() {
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
fn write_behind(inner: &Inner, rx: &Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let (mut ops, mut packs) = first;
        let mut taken = 1;
        while taken < GROUP {
            match rx.try_recv() {
                Ok(more) => {
                    ops.extend(more.0);
                    packs.extend(more.1);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        // (Copies are checked against the whole group's result.)
        if !ops.is_empty()
            && let Err(e) = inner.store.apply_packed(&ops, &packs)
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
///
/// The packs keep a packed copy with `U` and with `W` (when small enough).
fn message_ops(kept: &Message) -> Result<(Id, Vec<Op>, Vec<Pack>), CacheError> {
    let codec = |source| CacheError::Codec {
        path: String::new(),
        source,
    };
    let tabm = to_tabm(kept).map_err(codec)?;
    let mut ops = Vec::new();
    let content = tabm.clone().without("commitments");
    let id = tabm_ops(&content, &mut ops, 0)?;
    let human = id.to_human();
    let mut packs: Vec<Pack> = pack(&human, &content).into_iter().collect();
    let Some(Value::Message(commitments)) = tabm.get("commitments") else {
        return Ok((id, ops, packs));
    };
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
    packs.extend(pack(&whole, &tabm));
    ops.push(Op::Link {
        existing: whole,
        new: signed_path(&human),
    });
    Ok((id, ops, packs))
}

/// The pack keeping a packed copy with `group`, written from `tabm`: what reading the
/// group gives (the rich message of [`read_value`]), when small enough; else an empty
/// copy, for which the store keeps a digest of the group, checked when it is read.
fn pack(group: &str, tabm: &Message) -> Option<Pack> {
    let mut size = 0;
    let expect = tree_of(tabm, 0, &mut size)?;
    let Tree::Group(children) = expect.clone() else {
        return None;
    };
    // Exactly what a reader decodes from the group (not `tabm` itself: the codec
    // normalises).
    let copy = (size <= PACKED_MAX)
        .then(|| from_tabm(&tree_to_tabm(children)).ok())
        .flatten()
        .and_then(|rich| packed::encode(&rich))
        .filter(|c| c.len() <= PACKED_MAX)
        .map(Bytes::from)
        .unwrap_or_default();
    Some(Pack::Keep {
        group: group.to_owned(),
        expect,
        unless: preferred(group),
        copy,
    })
}

/// What a group written from `tabm` by [`tabm_ops`] reads as ([`Store::read_tree`]),
/// adding the size of its binaries to `size`; `None` for what would not read back as
/// one group per map (a key that is empty or holds a `/`).
fn tree_of(tabm: &Message, depth: usize, size: &mut usize) -> Option<Tree> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut children = Vec::with_capacity(tabm.len());
    for (k, v) in tabm.iter() {
        if is_private(k) {
            continue;
        }
        if k.is_empty() || k.contains('/') {
            return None;
        }
        let tree = match v {
            Value::Binary(b) => {
                *size += b.len();
                Tree::Bytes(b.clone())
            }
            Value::Message(m) => tree_of(m, depth + 1, size)?,
            _ => return None,
        };
        children.push((k.to_string(), tree));
    }
    // (In the order of the keys, which is the store's: no key holds a `/`.)
    Some(Tree::Group(children))
}

/// Where the first signed form of the message with uncommitted ID `u` is linked.
fn signed_path(u: &str) -> String {
    format!("signed/{u}")
}

/// The path a read of `resolved` prefers: a message's uncommitted ID reads as its
/// first signed form, if one was stored.
fn preferred(resolved: &str) -> Option<String> {
    (resolved.len() == 43 && !resolved.contains('/')).then(|| signed_path(resolved))
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

/// Reads the value at `path`: a message (its packed copy, or decoded from its TABM) or
/// bytes.
fn read_value(store: &dyn Store, path: &str) -> Result<Option<Value>, CacheError> {
    // One consistent view of the whole message (one read transaction on LMDB).
    let found = match store.read_packed(path, &preferred) {
        Ok(found) => found,
        // A packed copy (or an entry on the way to it) that fails its check: the layout
        // is whole, read it (which reports what is corrupt there, if anything).
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::warn!(error = %e, %path, "a corrupt entry; reading the group");
            return read_tree_value(store, path);
        }
        Err(e) => return Err(e.into()),
    };
    match found {
        None => Ok(None),
        Some(Packed::Tree(tree)) => tree_value(path, tree).map(Some),
        Some(Packed::Copy(copy)) => match packed::decode(&copy) {
            Ok(msg) => Ok(Some(Value::Message(msg))),
            Err(e) => {
                // The layout is whole: read the message from it.
                tracing::warn!(error = %e, %path, "a corrupt packed copy; reading the group");
                read_tree_value(store, path)
            }
        },
    }
}

/// [`read_value`] without packed copies: the group walked, the TABM decoded.
fn read_tree_value(store: &dyn Store, path: &str) -> Result<Option<Value>, CacheError> {
    store
        .read_tree(path, &preferred)?
        .map(|tree| tree_value(path, tree))
        .transpose()
}

/// The value a tree read from the store stands for.
fn tree_value(path: &str, tree: Tree) -> Result<Value, CacheError> {
    match tree {
        Tree::Bytes(b) => Ok(Value::Binary(b)),
        Tree::Group(children) => {
            let tabm = tree_to_tabm(children);
            let rich = from_tabm(&tabm).map_err(|source| CacheError::Codec {
                path: path.to_owned(),
                source,
            })?;
            Ok(Value::Message(rich))
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
        let batch: Batch = match value {
            Value::Message(m) => match message_ops(&kept_keys(m)) {
                Ok((id, mut ops, packs)) => {
                    ops.push(Op::Link {
                        existing: id.to_human(),
                        new: at.clone(),
                    });
                    (ops, packs)
                }
                Err(e) => {
                    tracing::debug!(error = %e, %hashpath, "result not stored");
                    return;
                }
            },
            Value::Binary(b) => {
                let path = data_path(b);
                let ops = vec![
                    Op::Write(path.clone(), b.clone()),
                    Op::Link {
                        existing: path,
                        new: at.clone(),
                    },
                ];
                (ops, Vec::new())
            }
            // Other scalars have no store form of their own; they stay in memory.
            _ => (Vec::new(), Vec::new()),
        };
        // The private area (a live wasm instance, say) is never kept: it is not part of
        // the result, and it may hold far more memory than the entry accounts for.
        let kept = match value {
            Value::Message(m) => Value::Message(m.without_private()),
            other => other.clone(),
        };
        self.inner.hot.lock().lru.put(at, kept);
        if !batch.0.is_empty() {
            self.enqueue(batch);
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
            Ok((u, mut ops, packs)) => {
                if u != id {
                    ops.push(Op::Link {
                        existing: u.to_human(),
                        new: human.clone(),
                    });
                }
                self.inner.hot.lock().lru.put(human, Value::Message(kept));
                self.enqueue((ops, packs));
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

    fn store_messages(&self, batch: &[(Message, Vec<String>)]) -> Result<(), CacheOpError> {
        let first = batch
            .first()
            .and_then(|(_, a)| a.first())
            .map_or("", String::as_str);
        MessageCache::write_batch(self, batch)
            .map(|_| ())
            .map_err(|e| op_error(e, first))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::MemoryStore;
    use crate::store::EntryType;

    /// A memory store whose groups read as the packed copy it is given.
    #[derive(Debug)]
    struct WithCopies {
        store: MemoryStore,
        copy: Bytes,
    }

    impl Store for WithCopies {
        fn name(&self) -> &str {
            "with-copies"
        }

        fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
            self.store.read(path)
        }

        fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError> {
            self.store.kind(path)
        }

        fn list(&self, path: &str) -> Result<Option<Vec<String>>, StoreError> {
            self.store.list(path)
        }

        fn resolve(&self, path: &str) -> Result<String, StoreError> {
            self.store.resolve(path)
        }

        fn read_tree(
            &self,
            path: &str,
            prefer: &dyn Fn(&str) -> Option<String>,
        ) -> Result<Option<Tree>, StoreError> {
            self.store.read_tree(path, prefer)
        }

        fn read_packed(
            &self,
            path: &str,
            prefer: &dyn Fn(&str) -> Option<String>,
        ) -> Result<Option<Packed>, StoreError> {
            Ok(match self.store.read_tree(path, prefer)? {
                Some(Tree::Group(_)) => Some(Packed::Copy(self.copy.clone())),
                other => other.map(Packed::Tree),
            })
        }

        fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
            self.store.apply(ops)
        }
    }

    fn sample() -> Message {
        Message::new()
            .with("action", "Transfer")
            .with("quantity", 5i64)
            .with("ok", true)
            .with(
                "items",
                Value::list(vec![Value::text("a"), Value::Integer(1)]),
            )
            .with("nested", Message::new().with("k", "v").with("f", 0.5f64))
    }

    #[test]
    fn a_corrupt_copy_is_read_around_never_trusted() {
        let good = packed::encode(&sample()).unwrap();
        let mut corrupt: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        corrupt.push(vec![99, 0]);
        corrupt.push(vec![packed::VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let mut trailing = good.clone();
        trailing.push(0);
        corrupt.push(trailing);
        for bad in corrupt {
            let store = Arc::new(WithCopies {
                store: MemoryStore::new(),
                copy: Bytes::from(bad.clone()),
            });
            let cache = MessageCache::new(store.clone());
            let id = cache.write(&sample()).unwrap().to_human();
            let fresh = MessageCache::new(store);
            assert_eq!(
                fresh.read(&id).unwrap(),
                Some(Value::Message(sample())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn written_messages_keep_copies_of_what_they_read_as() {
        let (id, _, packs) = message_ops(&kept_keys(&sample())).unwrap();
        let [
            Pack::Keep {
                group,
                expect,
                unless,
                copy,
            },
        ] = &packs[..]
        else {
            panic!("{packs:?}")
        };
        assert_eq!(*group, id.to_human());
        assert_eq!(unless.as_deref(), Some(signed_path(group).as_str()));
        let Tree::Group(children) = expect.clone() else {
            unreachable!()
        };
        assert_eq!(
            packed::decode(copy).unwrap(),
            from_tabm(&tree_to_tabm(children)).unwrap()
        );
        assert_eq!(packed::decode(copy).unwrap(), sample());
        // Too large for a copy: an empty one (the store keeps a digest).
        let big = sample().with("data", Value::bin(vec![b'x'; PACKED_MAX + 1]));
        let packs = message_ops(&big).unwrap().2;
        assert!(
            matches!(&packs[..], [Pack::Keep { copy, .. }] if copy.is_empty()),
            "{packs:?}"
        );
    }

    #[test]
    fn the_front_cache_takes_what_is_read_twice() {
        let store = Arc::new(MemoryStore::new());
        let id = MessageCache::new(store.clone())
            .write(&sample())
            .unwrap()
            .to_human();
        let cache = MessageCache::new(store);
        let cached = |c: &MessageCache| c.inner.hot.lock().lru.contains(&id);
        assert_eq!(cache.read(&id).unwrap(), Some(Value::Message(sample())));
        assert!(!cached(&cache), "a first read is only noted");
        assert_eq!(cache.read(&id).unwrap(), Some(Value::Message(sample())));
        assert!(cached(&cache), "a second read is kept");
        // Notes of many other reads push the first ones out.
        let mut hot = Hot::new();
        assert!(!hot.seen("a"));
        assert!(hot.seen("a"));
        for i in 0..SEEN * 2 {
            hot.seen(&i.to_string());
        }
        assert!(!hot.seen("a"));
    }
}
