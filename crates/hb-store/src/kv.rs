//! The store model of spec 05 §6.1 over an ordered key-value map, shared by the LMDB
//! and memory stores (the layout of the reference's RocksDB store, §6.3, with our own
//! encoding).
//!
//! * key = the path (segments joined by `/`);
//! * value = one tag byte, a payload and a checksum: [`LINK`] + the target path,
//!   [`RAW`] + the bytes, or [`GROUP`] alone — or [`GROUP`] + [`HAS_COPY`] for a group
//!   that has a packed copy ([`crate::Store::apply_packed`]), [`GROUP`] +
//!   [`HAS_DIGEST`] for one that keeps a digest — each tag with
//!   [`CHECKED`] set and followed by the CRC-32 of the key and of the value before it
//!   (4 bytes, little-endian; [`checksum`]).
//!
//! A group's children are the keys below `group/`, found by ordered seeks, so adding a
//! child never rewrites the group (a group such as `data/` may hold millions).
//!
//! Packed copies (what a group reads as, in a form opaque here) are kept apart from the
//! paths, at the key [`COPIES`] + the group's path: `0xff` starts no UTF-8 text, so no
//! path can name them, and they sort after every path, together, so that reading one
//! touches a compact part of the map rather than pages full of other groups'
//! children. An empty value there is no copy; a copy is [`COPY`] + the copy + the
//! checksum of the key and what comes before it; a group too large for a copy may keep
//! a [`DIGEST`] of what it reads as there instead. A copy or digest is kept only while
//! it is exact: anything placed below its group, or written over it, drops it.
//!
//! **Integrity.** Every value read is checked against its checksum, which also covers
//! its key: a value changed on the disk, moved to another key or cut short is a
//! [`StoreError::Corrupt`] naming the path, never a different answer. Stores written
//! before checksums (format 1: the same tags without [`CHECKED`], copies without a
//! tag) stay readable: a map whose [`KvRead::format`] is 1 also accepts those unchecked
//! entries, and checks those that hold a binary by its hash (`data/<hash>`) against
//! their name instead. A map of format 2 (every store created since) refuses them: a
//! tag changed on the disk is an error too.

use bytes::Bytes;

use std::borrow::Cow;

use crate::store::{
    EntryType, MAX_TREE_DEPTH, Op, Pack, Packed, StoreError, Tree, normalize, segments,
};

/// Tag of a link entry.
pub const LINK: u8 = 1;
/// Tag of a raw (simple) entry.
pub const RAW: u8 = 2;
/// Tag of a group entry.
pub const GROUP: u8 = 3;
/// Set in the tag of an entry that ends with its checksum (format 2).
pub const CHECKED: u8 = 0x10;
/// The first byte of a packed copy that ends with its checksum (format 2; a copy of
/// format 1 starts with the copy itself).
pub const COPY: u8 = 0x14;
/// The first byte of a digest kept in place of a packed copy: a group too large for a
/// copy keeps the digest of what it reads as ([`tree_digest`]), checked when it is
/// read whole, so that an entry lost below it (its key damaged, its page gone) is an
/// error rather than a message with a key less.
pub const DIGEST: u8 = 0x15;
/// The byte after [`GROUP`] in the entry of a group that has a packed copy.
pub const HAS_COPY: u8 = 1;
/// The byte after [`GROUP`] in the entry of a group that keeps a [`DIGEST`] instead.
pub const HAS_DIGEST: u8 = 2;
/// The first byte of the key of a packed copy (never the first byte of a path).
pub const COPIES: u8 = 0xff;
/// The key of the map's format marker ([`format_marker`]): after every copy's key
/// (`0xff` is in no path).
pub const FORMAT_KEY: &[u8] = b"\xff\xffformat";
/// The format of the entries this module writes.
pub const FORMAT: u8 = 2;
/// The size of a checksum.
const SUM: usize = 4;

/// The checksum of the value `value` (without its checksum) at key `key`: CRC-32
/// (IEEE) of the key, then of the value.
pub fn checksum(key: &[u8], value: &[u8]) -> [u8; SUM] {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(value);
    h.finalize().to_le_bytes()
}

/// The stored value of an entry at `key`: `tag` (with [`CHECKED`] set), `payload`,
/// the checksum.
pub fn encode(key: &[u8], tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len() + SUM);
    out.push(tag | CHECKED);
    out.extend_from_slice(payload);
    let sum = checksum(key, &out);
    out.extend_from_slice(&sum);
    out
}

/// `value` without its checksum, when the checksum is that of `value` at `key` (and
/// something, a tag at least, comes before it).
fn checked<'v>(key: &[&[u8]], value: &'v [u8]) -> Option<&'v [u8]> {
    let split = value.len().checked_sub(SUM).filter(|&n| n > 0)?;
    let (body, sum) = value.split_at(split);
    let mut h = crc32fast::Hasher::new();
    for part in key {
        h.update(part);
    }
    h.update(body);
    (h.finalize().to_le_bytes() == sum).then_some(body)
}

/// The value of the format marker of a map of format `format`.
pub fn format_marker(format: u8) -> Vec<u8> {
    let mut out = vec![format];
    out.extend_from_slice(&checksum(FORMAT_KEY, &[format]));
    out
}

/// The format a marker value names; `None` when it is not one [`format_marker`] wrote.
pub fn marker_format(value: &[u8]) -> Option<u8> {
    match checked(&[FORMAT_KEY], value)? {
        [f @ (1 | 2)] => Some(*f),
        _ => None,
    }
}

/// How many links a path may cross.
const MAX_LINK_HOPS: usize = 64;

/// Read access to an ordered byte map (one consistent snapshot).
pub trait KvRead {
    /// The value at `key`.
    ///
    /// # Errors
    /// The backend failed.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;

    /// The format of the map's entries ([`FORMAT`] unless the map was written before
    /// checksums: then 1, and entries without a checksum are read too).
    fn format(&self) -> u8 {
        FORMAT
    }

    /// The smallest key `>= from` that starts with `prefix`.
    ///
    /// # Errors
    /// The backend failed.
    fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The packed copy of the group at path `group` (the copies' own key space; by
    /// default the keys [`COPIES`] + the path of this map).
    ///
    /// # Errors
    /// The backend failed.
    fn get_copy(&self, group: &[u8]) -> Result<Option<Bytes>, StoreError> {
        // (On the stack: this is every message read's one lookup.)
        let mut key = [0u8; 256];
        match key.get_mut(1..=group.len()) {
            Some(rest) => {
                rest.copy_from_slice(group);
                key[0] = COPIES;
                self.get(&key[..=group.len()])
            }
            None => self.get(&copy_key(group)),
        }
    }

    /// Visits, in order, the keys that start with `prefix` from `from` on, with their
    /// values; `visit` says where to go next. The default seeks and gets key by key;
    /// backends with cursors step through.
    ///
    /// # Errors
    /// The backend failed, or `visit` did.
    fn scan(&self, prefix: &[u8], from: &[u8], visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let mut from = from.to_vec();
        while let Some(key) = self.seek(prefix, &from)? {
            if key < from {
                return Err(out_of_order(&from, &key));
            }
            let Some(value) = self.get(&key)? else { break };
            match visit(&key, &value)? {
                Scan::Next => {
                    from = key;
                    from.push(0);
                }
                Scan::SeekTo(next) => from = next,
                Scan::Stop => break,
            }
        }
        Ok(())
    }
}

/// A seek that went back: only a corrupt database does that.
pub fn out_of_order(from: &[u8], found: &[u8]) -> StoreError {
    StoreError::Corrupt {
        store: String::new(),
        path: String::from_utf8_lossy(from).into_owned(),
        reason: format!(
            "a seek from here found `{}`: keys out of order",
            String::from_utf8_lossy(found)
        ),
    }
}

/// What [`KvRead::scan`] calls with each key and its value.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Scan, StoreError> + 'a;

/// Where [`KvRead::scan`] goes after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// To the next key.
    Next,
    /// To the first key `>=` this one.
    SeekTo(Vec<u8>),
    /// Nowhere: the scan ends.
    Stop,
}

/// Read and write access inside one atomic transaction.
pub trait KvWrite: KvRead {
    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// The backend failed (full, read-only, …).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Sets `key` to `value` if `key` has no value; otherwise changes nothing and
    /// returns the value it has. (One lookup where the backend can.)
    ///
    /// # Errors
    /// As [`KvWrite::put`].
    fn put_new(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Bytes>, StoreError> {
        match self.get(key)? {
            Some(old) => Ok(Some(old)),
            None => self.put(key, value).map(|()| None),
        }
    }

    /// Sets the packed copy of the group at path `group`; an empty `copy` removes it
    /// ([`KvRead::get_copy`]).
    ///
    /// # Errors
    /// The backend failed.
    fn put_copy(&mut self, group: &[u8], copy: &[u8]) -> Result<(), StoreError> {
        self.put(&copy_key(group), copy)
    }
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A link to a path.
    Link(String),
    /// Bytes.
    Raw(Bytes),
    /// A group.
    Group,
}

/// An entry as stored, its payload borrowed from the value.
enum Parsed<'v> {
    Link(&'v str),
    Raw(&'v [u8]),
    /// A group, and what it keeps: 0, [`HAS_COPY`] or [`HAS_DIGEST`].
    Group(u8),
}

/// A [`StoreError::Corrupt`] at `key`.
fn corrupt_at(store: &str, key: &[u8], reason: String) -> StoreError {
    StoreError::Corrupt {
        store: store.to_owned(),
        path: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

/// Checks and parses the value stored at `key` in a map of format `format`.
fn parse<'v>(
    store: &str,
    key: &[u8],
    value: &'v [u8],
    format: u8,
) -> Result<Parsed<'v>, StoreError> {
    let corrupt = |reason: String| corrupt_at(store, key, reason);
    let Some(&first) = value.first() else {
        return Err(corrupt("an empty value".into()));
    };
    let (tag, payload, sum) = if first & CHECKED != 0 {
        let body = checked(&[key], value).ok_or_else(|| {
            corrupt(format!(
                "checksum mismatch: the {} bytes stored are not what was written",
                value.len()
            ))
        })?;
        (first & !CHECKED, &body[1..], true)
    } else if format < FORMAT {
        (first, &value[1..], false)
    } else {
        return Err(corrupt(format!(
            "an entry without a checksum (tag {first}) in a store of format {format}"
        )));
    };
    match tag {
        LINK => std::str::from_utf8(payload)
            .map(Parsed::Link)
            .map_err(|_| corrupt("a link target that is not UTF-8".into())),
        RAW => {
            if !sum {
                check_named(store, key, payload)?;
            }
            Ok(Parsed::Raw(payload))
        }
        GROUP => match payload {
            [] => Ok(Parsed::Group(0)),
            [kept @ (HAS_COPY | HAS_DIGEST)] => Ok(Parsed::Group(*kept)),
            _ => Err(corrupt("a group entry with a payload".into())),
        },
        other => Err(corrupt(format!("unknown entry tag {other}"))),
    }
}

/// Checks bytes stored without a checksum at `data/<hash>` against their name.
fn check_named(store: &str, key: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
    let Some(name) = key.strip_prefix(b"data/") else {
        return Ok(());
    };
    if name.len() != 43 || name.contains(&b'/') {
        return Ok(());
    }
    if hb_core::cache::data_path(bytes).as_bytes() == key {
        Ok(())
    } else {
        Err(corrupt_at(
            store,
            key,
            format!(
                "the {} bytes stored do not hash to their name (SHA-256)",
                bytes.len()
            ),
        ))
    }
}

/// Decodes the value stored at `path` (a map of the current [`FORMAT`]).
///
/// # Errors
/// The value is not one this module writes, or not what it wrote there.
pub fn decode(store: &str, path: &str, value: Bytes) -> Result<Entry, StoreError> {
    decode_in(store, path, &value, FORMAT).map(|(e, _)| e)
}

/// Decodes the value stored at `path` in a map of format `format`: the entry, and
/// what a group keeps next to it (0, [`HAS_COPY`] or [`HAS_DIGEST`]).
fn decode_in(
    store: &str,
    path: &str,
    value: &Bytes,
    format: u8,
) -> Result<(Entry, u8), StoreError> {
    Ok(match parse(store, path.as_bytes(), value, format)? {
        Parsed::Link(t) => (Entry::Link(t.to_owned()), 0),
        Parsed::Raw(b) => (Entry::Raw(value.slice_ref(b)), 0),
        Parsed::Group(kept) => (Entry::Group, kept),
    })
}

/// True for the entry of a group that may have a packed copy: read without checking
/// (whoever drops a copy needlessly costs a read through the group, nothing more).
fn may_have_copy(value: &[u8]) -> bool {
    matches!(value, [t, HAS_COPY | HAS_DIGEST, ..] if t & !CHECKED == GROUP)
}

/// The key of the packed copy of the group at `path` in a map that keeps copies among
/// the paths ([`KvRead::get_copy`]'s default).
fn copy_key(path: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 1);
    key.push(COPIES);
    key.extend_from_slice(path);
    key
}

/// The stored value, at the copy of the group at `path`, of `tag` + `body`: [`COPY`]
/// and a packed copy, or [`DIGEST`] and a digest.
fn encode_copy(path: &[u8], tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len() + SUM);
    out.push(tag);
    out.extend_from_slice(body);
    let mut h = crc32fast::Hasher::new();
    h.update(&[COPIES]);
    h.update(path);
    h.update(&out);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out
}

/// What a group keeps next to it.
enum Kept {
    /// A packed copy.
    Copy(Bytes),
    /// The digest of what it reads as ([`tree_digest`]).
    Digest([u8; SUM]),
}

/// The digest of a group read whole: CRC-32 of its shape — every name, the kind and
/// size of every value, nested groups in place — enough to tell an entry lost or
/// added below it (each value is checked by its own checksum).
pub fn tree_digest(tree: &Tree) -> [u8; SUM] {
    fn feed(h: &mut crc32fast::Hasher, tree: &Tree) {
        match tree {
            Tree::Bytes(b) => {
                h.update(b"b");
                h.update(&(b.len() as u64).to_le_bytes());
            }
            Tree::Group(children) => {
                h.update(b"g");
                h.update(&(children.len() as u64).to_le_bytes());
                for (name, child) in children {
                    h.update(&(name.len() as u64).to_le_bytes());
                    h.update(name.as_bytes());
                    feed(h, child);
                }
            }
        }
    }
    let mut h = crc32fast::Hasher::new();
    feed(&mut h, tree);
    h.finalize().to_le_bytes()
}

/// What the group at `path` keeps next to it, if anything, checked.
fn copy_of(view: &dyn KvRead, store: &str, path: &str) -> Result<Option<Kept>, StoreError> {
    let Some(stored) = view.get_copy(path.as_bytes())? else {
        return Ok(None);
    };
    let corrupt = |reason: String| corrupt_at(store, path.as_bytes(), reason);
    let body = |stored: &Bytes| {
        checked(&[&[COPIES], path.as_bytes()], stored)
            .map(<[u8]>::len)
            .ok_or_else(|| {
                corrupt(format!(
                    "its packed copy: checksum mismatch: the {} bytes stored are not what \
                     was written",
                    stored.len()
                ))
            })
    };
    match stored.first() {
        None => Ok(None),
        Some(&COPY) => {
            let end = body(&stored)?;
            Ok(Some(Kept::Copy(stored.slice(1..end))))
        }
        Some(&DIGEST) => {
            let end = body(&stored)?;
            let digest = stored
                .get(1..end)
                .and_then(|d| <[u8; SUM]>::try_from(d).ok())
                .ok_or_else(|| corrupt("its digest has the wrong size".into()))?;
            Ok(Some(Kept::Digest(digest)))
        }
        Some(_) if view.format() < FORMAT => Ok(Some(Kept::Copy(stored))),
        Some(&first) => Err(corrupt(format!(
            "its packed copy has no checksum (first byte {first}) in a store of format {}",
            view.format()
        ))),
    }
}

/// The group at `at` read whole, checked against its digest.
fn digest_tree(
    view: &dyn KvRead,
    store: &str,
    at: &str,
    digest: [u8; SUM],
) -> Result<Tree, StoreError> {
    let tree = group_tree(view, store, at, &mut Vec::new())?;
    if tree_digest(&tree) != digest {
        return Err(corrupt_at(
            store,
            at.as_bytes(),
            "what the group holds is not what was written (an entry below it is lost or \
             added: its digest differs)"
                .into(),
        ));
    }
    Ok(tree)
}

/// The group at `at` (which keeps a digest when `digest`) read whole.
fn whole_group(view: &dyn KvRead, store: &str, at: &str, digest: bool) -> Result<Tree, StoreError> {
    match digest
        .then(|| copy_of(view, store, at))
        .transpose()?
        .flatten()
    {
        Some(Kept::Digest(d)) => digest_tree(view, store, at, d),
        _ => group_tree(view, store, at, &mut Vec::new()),
    }
}

/// A group's packed copy, or the group read whole (checked against its digest).
fn packed_group(
    view: &dyn KvRead,
    store: &str,
    at: &str,
    kept: Option<Kept>,
) -> Result<Packed, StoreError> {
    Ok(match kept {
        Some(Kept::Copy(copy)) => Packed::Copy(copy),
        Some(Kept::Digest(d)) => Packed::Tree(digest_tree(view, store, at, d)?),
        None => Packed::Tree(group_tree(view, store, at, &mut Vec::new())?),
    })
}

/// The entry at `path` exactly (no link following).
fn entry(view: &dyn KvRead, store: &str, path: &str) -> Result<Option<Entry>, StoreError> {
    view.get(path.as_bytes())?
        .map(|v| decode_in(store, path, &v, view.format()).map(|(e, _)| e))
        .transpose()
}

/// `path` with every link along it followed (spec 05 §6.2).
///
/// # Errors
/// The backend failed, or the links loop.
pub fn resolve(view: &dyn KvRead, store: &str, path: &str) -> Result<String, StoreError> {
    let mut acc = String::new();
    let mut hops = 0;
    for seg in segments(path) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(seg);
        while let Some(Entry::Link(target)) = entry(view, store, &acc)? {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(StoreError::LinkLoop {
                    store: store.to_owned(),
                    path: path.to_owned(),
                });
            }
            acc = normalize(&target);
        }
    }
    Ok(acc)
}

/// The bytes at `path`, links followed.
///
/// # Errors
/// The backend failed, the links loop, or the entry is corrupt.
pub fn read(view: &dyn KvRead, store: &str, path: &str) -> Result<Option<Bytes>, StoreError> {
    let at = resolve(view, store, path)?;
    Ok(match entry(view, store, &at)? {
        Some(Entry::Raw(b)) => Some(b),
        _ => None,
    })
}

/// What `path` names, links followed.
///
/// # Errors
/// As [`read`].
pub fn kind(view: &dyn KvRead, store: &str, path: &str) -> Result<Option<EntryType>, StoreError> {
    let at = resolve(view, store, path)?;
    Ok(match entry(view, store, &at)? {
        Some(Entry::Raw(_)) => Some(EntryType::Simple),
        Some(Entry::Group) => Some(EntryType::Composite),
        Some(Entry::Link(_)) | None => None,
    })
}

/// The children of the group at `path` (the root when `path` is empty), sorted.
///
/// # Errors
/// As [`read`].
pub fn list(view: &dyn KvRead, store: &str, path: &str) -> Result<Option<Vec<String>>, StoreError> {
    let at = resolve(view, store, path)?;
    if !at.is_empty() && entry(view, store, &at)? != Some(Entry::Group) {
        return Ok(None);
    }
    let prefix = if at.is_empty() {
        Vec::new()
    } else {
        format!("{at}/").into_bytes()
    };
    let mut out: Vec<String> = Vec::new();
    let mut from = prefix.clone();
    // Bounded: every round moves `from` past one key or one child's subtree.
    while let Some(key) = view.seek(&prefix, &from)? {
        // Past the paths: the packed copies (only the root's listing gets there).
        if key.first() == Some(&COPIES) {
            break;
        }
        // A seek never goes back, unless the database is corrupt: then stop rather
        // than loop (the bound above relies on it).
        if key < from || !key.starts_with(&prefix) {
            return Err(StoreError::Corrupt {
                store: store.to_owned(),
                path: at,
                reason: format!(
                    "a seek from `{}` found `{}`: keys out of order",
                    String::from_utf8_lossy(&from),
                    String::from_utf8_lossy(&key)
                ),
            });
        }
        let rest = &key[prefix.len()..];
        let (child, deeper) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        let name = String::from_utf8_lossy(child).into_owned();
        if out.last() != Some(&name) && !name.is_empty() {
            out.push(name);
        }
        // (`b`, `b-x`, then `b/...`: a name can come back once; sorted and deduplicated
        // below.)
        from = if deeper {
            // Past every key below `child/`: `/` + 1 is `0`.
            let mut next = prefix.clone();
            next.extend_from_slice(child);
            next.push(b'/' + 1);
            next
        } else {
            let mut next = key.clone();
            next.push(0);
            next
        };
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// The entry at `path` (links followed) read whole in `view` ([`crate::Store::read_tree`]):
/// one lookup per link and per value, the children of a group found in one scan.
///
/// # Errors
/// As [`crate::Store::read_tree`].
pub fn read_tree(
    view: &dyn KvRead,
    store: &str,
    path: &str,
    prefer: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Tree>, StoreError> {
    let mut found = follow(view, store, path, true)?;
    if let Some((at, ..)) = &found
        && let Some(alt) = prefer(at)
        && let Some((p, entry, value)) = follow(view, store, &alt, false)?
    {
        found = Some((Cow::Owned(p.into_owned()), entry, value));
    }
    match found {
        None | Some((_, Entry::Link(_), _)) => Ok(None),
        Some((_, Entry::Raw(b), _)) => Ok(Some(Tree::Bytes(b))),
        Some((at, Entry::Group, kept)) => {
            whole_group(view, store, &at, kept == HAS_DIGEST).map(Some)
        }
    }
}

/// [`read_tree`], with a group that has a packed copy answered by that copy
/// ([`crate::Store::read_packed`]): a message the cache packed is one lookup (plus one
/// per link on the way), with no look at the path `prefer` names for it.
///
/// # Errors
/// As [`read_tree`].
pub fn read_packed(
    view: &dyn KvRead,
    store: &str,
    path: &str,
    prefer: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Packed>, StoreError> {
    // Most often `path` is the group itself (a message's ID): one lookup. (A copy is
    // kept only for a group, and dropped when anything is written over it.)
    let direct = normalized(Cow::Borrowed(path));
    if let Some(kept) = copy_of(view, store, &direct)? {
        return packed_group(view, store, &direct, Some(kept)).map(Some);
    }
    let mut found = follow(view, store, path, true)?;
    if let Some((at, Entry::Group, kept)) = &found
        && *kept != 0
        && *at != direct
        && let Some(kept) = copy_of(view, store, at)?
    {
        return packed_group(view, store, at, Some(kept)).map(Some);
    }
    if let Some((at, ..)) = &found
        && let Some(alt) = prefer(at)
        && let Some((p, entry, value)) = follow(view, store, &alt, false)?
    {
        found = Some((Cow::Owned(p.into_owned()), entry, value));
    }
    match found {
        None | Some((_, Entry::Link(_), _)) => Ok(None),
        Some((_, Entry::Raw(b), _)) => Ok(Some(Packed::Tree(Tree::Bytes(b)))),
        Some((at, Entry::Group, kept)) => {
            let kept = (kept != 0)
                .then(|| copy_of(view, store, &at))
                .transpose()?
                .flatten();
            packed_group(view, store, &at, kept).map(Some)
        }
    }
}

/// The entry `path` names, where it is, and what a group keeps ([`decode_in`]):
/// a direct lookup (a link
/// target the cache wrote is a path without links along it), links followed; when
/// that finds nothing and `fallback` is set, resolved segment by segment (a link
/// along the path).
fn follow<'p>(
    view: &dyn KvRead,
    store: &str,
    path: &'p str,
    fallback: bool,
) -> Result<Option<(Cow<'p, str>, Entry, u8)>, StoreError> {
    let mut at = normalized(Cow::Borrowed(path));
    let mut resolved = !fallback;
    for _ in 0..=MAX_LINK_HOPS {
        match view.get(at.as_bytes())? {
            Some(value) => {
                let (found, kept) = decode_in(store, &at, &value, view.format())?;
                if let Entry::Link(next) = found {
                    at = normalized(Cow::Owned(next));
                    resolved = !fallback;
                } else {
                    return Ok(Some((at, found, kept)));
                }
            }
            None if resolved || at.is_empty() => return Ok(None),
            None => {
                let full = resolve(view, store, &at)?;
                if full == at {
                    return Ok(None);
                }
                at = Cow::Owned(full);
                resolved = true;
            }
        }
    }
    Err(StoreError::LinkLoop {
        store: store.to_owned(),
        path: path.to_owned(),
    })
}

/// `path` normalised, without a copy when it is already.
fn normalized(path: Cow<'_, str>) -> Cow<'_, str> {
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        Cow::Owned(normalize(&path))
    } else {
        path
    }
}

/// The group at `at` read whole; `chain` holds the groups being read.
fn group_tree(
    view: &dyn KvRead,
    store: &str,
    at: &str,
    chain: &mut Vec<String>,
) -> Result<Tree, StoreError> {
    if chain.iter().any(|p| p == at) {
        return Err(StoreError::LinkLoop {
            store: store.to_owned(),
            path: at.to_owned(),
        });
    }
    if chain.len() >= MAX_TREE_DEPTH {
        return Err(StoreError::Corrupt {
            store: store.to_owned(),
            path: at.to_owned(),
            reason: format!("groups nested more than {MAX_TREE_DEPTH} deep"),
        });
    }
    // The direct children and their entries, in one scan.
    let prefix = format!("{at}/").into_bytes();
    let mut children: Vec<(String, Entry)> = Vec::new();
    let mut orphan: Option<String> = None;
    let format = view.format();
    view.scan(&prefix, &prefix, &mut |key, value| {
        let rest = &key[prefix.len()..];
        if let Some(slash) = rest.iter().position(|&b| b == b'/') {
            // Below a child group: skip its subtree. (A key below a child that has
            // no entry of its own is a child that cannot be read.)
            let child = &rest[..slash];
            // (Not necessarily the last child: `b`, `b-x`, then `b/…` sort so.)
            if !children.iter().rev().any(|(n, _)| n.as_bytes() == child) {
                orphan = Some(String::from_utf8_lossy(child).into_owned());
                return Ok(Scan::Stop);
            }
            let mut next = key[..prefix.len() + slash].to_vec();
            next.push(b'/' + 1);
            return Ok(Scan::SeekTo(next));
        }
        let name = String::from_utf8_lossy(rest).into_owned();
        // Checked in place, so that a value is copied once (into its own `Bytes`).
        let entry = match parse(store, key, value, format)? {
            Parsed::Raw(bytes) => Entry::Raw(Bytes::copy_from_slice(bytes)),
            Parsed::Link(target) => Entry::Link(target.to_owned()),
            Parsed::Group(_) => Entry::Group,
        };
        children.push((name, entry));
        Ok(Scan::Next)
    })?;
    if let Some(name) = orphan {
        return Err(StoreError::Corrupt {
            store: store.to_owned(),
            path: format!("{at}/{name}"),
            reason: "listed but cannot be read".into(),
        });
    }
    chain.push(at.to_owned());
    let mut out = Vec::with_capacity(children.len());
    for (name, entry) in children {
        let tree = match entry {
            Entry::Raw(b) => Tree::Bytes(b),
            Entry::Group => group_tree(view, store, &format!("{at}/{name}"), chain)?,
            // The usual case first: a link straight to a value.
            Entry::Link(target) => match view
                .get(target.as_bytes())?
                .map(|v| decode_in(store, &target, &v, format))
                .transpose()?
            {
                Some((Entry::Raw(b), _)) => Tree::Bytes(b),
                _ => match follow(view, store, &target, true)? {
                    Some((_, Entry::Raw(b), _)) => Tree::Bytes(b),
                    Some((p, Entry::Group, _)) => group_tree(view, store, &p, chain)?,
                    Some((_, Entry::Link(_), _)) | None => {
                        return Err(StoreError::Corrupt {
                            store: store.to_owned(),
                            path: format!("{at}/{name}"),
                            reason: format!("listed but cannot be read (a link to `{target}`)"),
                        });
                    }
                },
            },
        };
        out.push((name, tree));
    }
    chain.pop();
    Ok(Tree::Group(out))
}

/// Limits a backend puts on keys.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest key, in bytes.
    pub max_key: usize,
}

fn check_path(store: &str, path: &str, limits: Limits) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::InvalidPath {
        store: store.to_owned(),
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("an empty path".into()));
    }
    if path.len() > limits.max_key {
        return Err(invalid(format!(
            "{} bytes long; this store holds paths of at most {} bytes",
            path.len(),
            limits.max_key
        )));
    }
    Ok(())
}

/// The path at which to create `path`: its parent resolved through links, plus its
/// last segment; the parent groups are created. The parent groups that have a packed
/// copy are added to `copies` (whatever is put at the path must drop those).
fn place(
    txn: &mut dyn KvWrite,
    store: &str,
    path: &str,
    limits: Limits,
    copies: &mut Vec<String>,
) -> Result<String, StoreError> {
    let path = normalize(path);
    let (parent, last) = match path.rsplit_once('/') {
        Some((p, l)) => (resolve(txn, store, p)?, l),
        None => (String::new(), path.as_str()),
    };
    let mut acc = String::new();
    for seg in segments(&parent) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(seg);
        let group = match txn.get(acc.as_bytes())? {
            None => {
                check_path(store, &acc, limits)?;
                txn.put(acc.as_bytes(), &encode(acc.as_bytes(), GROUP, &[]))?;
                true
            }
            Some(v) => match decode_in(store, &acc, &v, txn.format())? {
                (Entry::Group, kept) => {
                    if kept != 0 {
                        copies.push(acc.clone());
                    }
                    true
                }
                _ => false,
            },
        };
        if !group {
            return Err(StoreError::InvalidPath {
                store: store.to_owned(),
                path: path.clone(),
                reason: format!("`{acc}` is not a group"),
            });
        }
    }
    let at = if parent.is_empty() {
        last.to_owned()
    } else {
        format!("{parent}/{last}")
    };
    check_path(store, &at, limits)?;
    Ok(at)
}

/// Applies `ops` inside one transaction.
///
/// # Errors
/// The backend failed or a path is invalid; the caller aborts the transaction.
pub fn apply(
    txn: &mut dyn KvWrite,
    store: &str,
    ops: &[Op],
    limits: Limits,
) -> Result<(), StoreError> {
    // Groups above the op's path that have a packed copy: what the op puts there
    // makes the copy stale, so it is dropped.
    let mut copies = Vec::new();
    let drop_copies = |txn: &mut dyn KvWrite, copies: &mut Vec<String>| {
        copies
            .drain(..)
            .try_for_each(|group| drop_copy(txn, &group))
    };
    for op in ops {
        copies.clear();
        match op {
            Op::Write(path, bytes) => {
                let at = place(txn, store, path, limits, &mut copies)?;
                let value = encode(at.as_bytes(), RAW, bytes);
                if let Some(old) = txn.put_new(at.as_bytes(), &value)? {
                    // Written over a group: its copy goes with it.
                    if may_have_copy(&old) {
                        txn.put_copy(at.as_bytes(), &[])?;
                    }
                    txn.put(at.as_bytes(), &value)?;
                }
                drop_copies(txn, &mut copies)?;
            }
            Op::Group(path) => {
                let at = place(txn, store, path, limits, &mut copies)?;
                match entry(txn, store, &at)? {
                    None => {
                        txn.put(at.as_bytes(), &encode(at.as_bytes(), GROUP, &[]))?;
                        drop_copies(txn, &mut copies)?;
                    }
                    Some(Entry::Group | Entry::Link(_)) => {}
                    Some(Entry::Raw(_)) => {
                        return Err(StoreError::InvalidPath {
                            store: store.to_owned(),
                            path: at,
                            reason: "a simple entry is there already".into(),
                        });
                    }
                }
            }
            Op::Link { existing, new } => {
                let (existing, new) = (normalize(existing), normalize(new));
                if existing == new {
                    continue;
                }
                let at = place(txn, store, &new, limits, &mut copies)?;
                if entry(txn, store, &at)?.is_some() {
                    continue;
                }
                let value = encode(at.as_bytes(), LINK, existing.as_bytes());
                txn.put(at.as_bytes(), &value)?;
                drop_copies(txn, &mut copies)?;
            }
        }
    }
    Ok(())
}

/// [`apply`], then keeps or drops the packed copies `packs` name
/// ([`crate::Store::apply_packed`]), in the same transaction.
///
/// # Errors
/// As [`apply`].
pub fn apply_packed(
    txn: &mut dyn KvWrite,
    store: &str,
    ops: &[Op],
    packs: &[Pack],
    limits: Limits,
) -> Result<(), StoreError> {
    apply(txn, store, ops, limits)?;
    for pack in packs {
        keep_or_drop(txn, store, pack)?;
    }
    Ok(())
}

/// Drops the packed copy of the group at `group` (which has one).
fn drop_copy(txn: &mut dyn KvWrite, group: &str) -> Result<(), StoreError> {
    txn.put(group.as_bytes(), &encode(group.as_bytes(), GROUP, &[]))?;
    txn.put_copy(group.as_bytes(), &[])
}

/// Applies one [`Pack`].
fn keep_or_drop(txn: &mut dyn KvWrite, store: &str, pack: &Pack) -> Result<(), StoreError> {
    let (group, keep) = match pack {
        Pack::Keep {
            group,
            expect,
            unless,
            copy,
        } => (group, Some((expect, unless, copy))),
        Pack::Drop(group) => (group, None),
    };
    let at = normalize(group);
    let Some(value) = txn.get(at.as_bytes())? else {
        return Ok(());
    };
    let kept = match decode_in(store, &at, &value, txn.format()) {
        Ok((Entry::Group, kept)) => kept,
        Ok(_) => return Ok(()),
        // A corrupt entry is left as it is (its reads fail), without a copy.
        Err(_) if may_have_copy(&value) => return txn.put_copy(at.as_bytes(), &[]),
        Err(_) => return Ok(()),
    };
    let copy = match keep {
        Some((expect, unless, copy)) => {
            // What cannot be read gets no copy (its reads keep failing as they do);
            // the batch itself still applies.
            let unreadable = |e: StoreError| match e {
                StoreError::Corrupt { .. } | StoreError::LinkLoop { .. } => Ok(false),
                e => Err(e),
            };
            let free = match unless {
                Some(u) => {
                    follow(txn, store, u, false).map_or_else(unreadable, |f| Ok(f.is_none()))?
                }
                None => true,
            };
            let exact = free
                && group_tree(txn, store, &at, &mut Vec::new())
                    .map_or_else(unreadable, |tree| Ok(tree == *expect))?;
            exact.then(|| match copy.is_empty() {
                false => (HAS_COPY, encode_copy(at.as_bytes(), COPY, copy)),
                true => (
                    HAS_DIGEST,
                    encode_copy(at.as_bytes(), DIGEST, &tree_digest(expect)),
                ),
            })
        }
        None => None,
    };
    match copy {
        Some((flag, copy)) => {
            if kept != flag {
                txn.put(at.as_bytes(), &encode(at.as_bytes(), GROUP, &[flag]))?;
            }
            txn.put_copy(at.as_bytes(), &copy)?;
        }
        None if kept != 0 => drop_copy(txn, &at)?,
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::collections::BTreeMap;

    use super::*;

    /// An ordered map in memory, with the default copy key space ([`COPIES`] + path).
    #[derive(Default)]
    struct Map(BTreeMap<Vec<u8>, Bytes>);

    impl KvRead for Map {
        fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
            Ok(self.0.get(key).cloned())
        }

        fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self
                .0
                .range(from.to_vec()..)
                .next()
                .map(|(k, _)| k.clone())
                .filter(|k| k.starts_with(prefix)))
        }
    }

    impl KvWrite for Map {
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.0.insert(key.to_vec(), Bytes::copy_from_slice(value));
            Ok(())
        }
    }

    const LIMITS: Limits = Limits { max_key: 511 };

    fn no_preference(_: &str) -> Option<String> {
        None
    }

    fn prefer_signed(at: &str) -> Option<String> {
        (!at.contains('/')).then(|| format!("signed/{at}"))
    }

    /// A group `m` with two keys (one a link to a value), and the pack for it.
    fn message(map: &mut Map) -> Pack {
        let ops = [
            Op::Write("data/h".into(), Bytes::from_static(b"big")),
            Op::Group("m".into()),
            Op::Write("m/a".into(), Bytes::from_static(b"1")),
            Op::Link {
                existing: "data/h".into(),
                new: "m/b".into(),
            },
        ];
        apply(map, "t", &ops, LIMITS).unwrap();
        Pack::Keep {
            group: "m".into(),
            expect: Tree::Group(vec![
                ("a".into(), Tree::Bytes(Bytes::from_static(b"1"))),
                ("b".into(), Tree::Bytes(Bytes::from_static(b"big"))),
            ]),
            unless: Some("signed/m".into()),
            copy: Bytes::from_static(b"COPY"),
        }
    }

    fn read(map: &Map, path: &str) -> Option<Packed> {
        read_packed(map, "t", path, &prefer_signed).unwrap()
    }

    /// The entry of the group `m`.
    fn stored(map: &Map) -> Vec<u8> {
        map.get(b"m").unwrap().unwrap().to_vec()
    }

    fn copy() -> Option<Packed> {
        Some(Packed::Copy(Bytes::from_static(b"COPY")))
    }

    #[test]
    fn a_copy_is_kept_only_when_exact_and_read_in_place_of_the_group() {
        let mut map = Map::default();
        let pack = message(&mut map);
        let walked = read_tree(&map, "t", "m", &no_preference).unwrap();
        apply_packed(&mut map, "t", &[], std::slice::from_ref(&pack), LIMITS).unwrap();
        assert_eq!(stored(&map), encode(b"m", GROUP, &[HAS_COPY]));
        assert_eq!(read(&map, "m"), copy());
        assert_eq!(read(&map, "/m/"), copy());
        // Through a link, too; the group itself still reads whole.
        apply(
            &mut map,
            "t",
            &[Op::Link {
                existing: "m".into(),
                new: "alias".into(),
            }],
            LIMITS,
        )
        .unwrap();
        assert_eq!(read(&map, "alias"), copy());
        assert_eq!(read_tree(&map, "t", "m", &no_preference).unwrap(), walked);
        assert_eq!(kind(&map, "t", "m").unwrap(), Some(EntryType::Composite));
        assert_eq!(
            list(&map, "t", "m").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        // The copies are no paths.
        assert_eq!(
            list(&map, "t", "").unwrap(),
            Some(vec!["alias".into(), "data".into(), "m".into()])
        );

        // Not what the group reads as: no copy (and an old one is dropped).
        let Pack::Keep {
            group,
            unless,
            copy: c,
            ..
        } = pack.clone()
        else {
            unreachable!()
        };
        let wrong = Pack::Keep {
            group,
            expect: Tree::Group(vec![]),
            unless,
            copy: c,
        };
        apply_packed(&mut map, "t", &[], &[wrong], LIMITS).unwrap();
        assert_eq!(stored(&map), encode(b"m", GROUP, &[]));
        assert!(matches!(read(&map, "m"), Some(Packed::Tree(_))));

        // Something at the preferred path: no copy, and the preferred entry is read.
        apply_packed(&mut map, "t", &[], std::slice::from_ref(&pack), LIMITS).unwrap();
        assert_eq!(read(&map, "m"), copy());
        apply_packed(
            &mut map,
            "t",
            &[Op::Link {
                existing: "data/h".into(),
                new: "signed/m".into(),
            }],
            &[Pack::Drop("m".into())],
            LIMITS,
        )
        .unwrap();
        assert_eq!(
            read(&map, "m"),
            Some(Packed::Tree(Tree::Bytes(Bytes::from_static(b"big"))))
        );
        apply_packed(&mut map, "t", &[], &[pack], LIMITS).unwrap();
        assert_eq!(stored(&map), encode(b"m", GROUP, &[]));
    }

    #[test]
    fn what_changes_a_group_drops_its_copy() {
        let changes: Vec<Vec<Op>> = vec![
            vec![Op::Write("m/c".into(), Bytes::from_static(b"new"))],
            vec![Op::Write("m/a".into(), Bytes::from_static(b"2"))],
            vec![Op::Group("m/sub".into())],
            vec![Op::Link {
                existing: "data/h".into(),
                new: "m/c".into(),
            }],
            // Through a link to the group.
            vec![
                Op::Link {
                    existing: "m".into(),
                    new: "alias".into(),
                },
                Op::Write("alias/c".into(), Bytes::from_static(b"new")),
            ],
            // Written over.
            vec![Op::Write("m".into(), Bytes::from_static(b"bytes"))],
        ];
        for ops in changes {
            let mut map = Map::default();
            let pack = message(&mut map);
            apply_packed(&mut map, "t", &[], &[pack], LIMITS).unwrap();
            assert_eq!(read(&map, "m"), copy());
            apply(&mut map, "t", &ops, LIMITS).unwrap();
            assert_ne!(read(&map, "m"), copy(), "{ops:?}");
            assert_eq!(
                map.get(&copy_key(b"m")).unwrap().map(|c| c.len()),
                Some(0),
                "{ops:?}"
            );
        }
        // What changes nothing keeps it: a link that exists, a group that exists,
        // something elsewhere.
        let mut map = Map::default();
        let pack = message(&mut map);
        apply_packed(&mut map, "t", &[], &[pack], LIMITS).unwrap();
        let ops = [
            Op::Link {
                existing: "elsewhere".into(),
                new: "m/b".into(),
            },
            Op::Group("m".into()),
            Op::Write("n/a".into(), Bytes::from_static(b"1")),
        ];
        apply(&mut map, "t", &ops, LIMITS).unwrap();
        assert_eq!(read(&map, "m"), copy());
    }

    #[test]
    fn group_entries_with_and_without_a_copy_decode() {
        let group = |v: &[u8]| decode("t", "g", Bytes::copy_from_slice(v));
        assert_eq!(group(&encode(b"g", GROUP, &[])).unwrap(), Entry::Group);
        assert_eq!(
            group(&encode(b"g", GROUP, &[HAS_COPY])).unwrap(),
            Entry::Group
        );
        assert!(group(&encode(b"g", GROUP, &[7])).is_err());
        assert!(group(&encode(b"g", GROUP, &[HAS_COPY, 0])).is_err());
        // A flag without a copy: the group is walked.
        let mut map = Map::default();
        message(&mut map);
        map.put(b"m", &encode(b"m", GROUP, &[HAS_COPY])).unwrap();
        assert!(matches!(
            read(&map, "m"),
            Some(Packed::Tree(Tree::Group(_)))
        ));
    }

    /// A map of format 1 (written before checksums), with entries of both formats.
    #[derive(Default)]
    struct Old(Map);

    impl KvRead for Old {
        fn format(&self) -> u8 {
            1
        }

        fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
            self.0.get(key)
        }

        fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.seek(prefix, from)
        }
    }

    impl KvWrite for Old {
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.0.put(key, value)
        }
    }

    fn corrupt_at_path(r: Result<impl std::fmt::Debug, StoreError>, want: &str) {
        match r {
            Err(StoreError::Corrupt { path, .. }) if path == want => {}
            other => panic!("not a corrupt entry at `{want}`: {other:?}"),
        }
    }

    #[test]
    fn every_changed_byte_of_an_entry_is_an_error_naming_its_path() {
        let mut map = Map::default();
        let pack = message(&mut map);
        apply_packed(&mut map, "t", &[], &[pack], LIMITS).unwrap();
        let keys: Vec<Vec<u8>> = map.0.keys().cloned().collect();
        for key in keys {
            let good = map.0[&key].clone();
            if good.is_empty() {
                continue;
            }
            let path = if key[0] == COPIES {
                String::from_utf8(key[1..].to_vec()).unwrap()
            } else {
                String::from_utf8(key.clone()).unwrap()
            };
            for i in 0..good.len() {
                for flip in [0x01u8, 0x10, 0x80, 0xff] {
                    let mut bad = good.to_vec();
                    bad[i] ^= flip;
                    map.0.insert(key.clone(), Bytes::from(bad));
                    let r = if key[0] == COPIES {
                        read_packed(&map, "t", &path, &no_preference).map(|_| ())
                    } else if path == "m" || path == "data" {
                        kind(&map, "t", &path).map(|_| ())
                    } else if path.starts_with("m/") {
                        read_tree(&map, "t", "m", &no_preference).map(|_| ())
                    } else {
                        super::read(&map, "t", &path).map(|_| ())
                    };
                    corrupt_at_path(r, &path);
                }
            }
            // Cut short, or moved to another key.
            map.0.insert(key.clone(), good.slice(..good.len() - 1));
            if key[0] != COPIES {
                corrupt_at_path(kind(&map, "t", &path), &path);
            }
            map.0.insert(key.clone(), good);
        }
        let moved = map.0[b"m/a".as_slice()].clone();
        map.0.insert(b"m/z".to_vec(), moved);
        corrupt_at_path(read_tree(&map, "t", "m", &no_preference), "m/z");
    }

    #[test]
    fn entries_without_checksums_are_read_only_in_a_map_of_format_1() {
        let legacy: [(&[u8], Vec<u8>); 4] = [
            (b"g", vec![GROUP, HAS_COPY]),
            (b"g/a", vec![RAW, b'1']),
            (b"g/b", [&[LINK][..], b"data/x"].concat()),
            (b"data/x", vec![RAW, b'2']),
        ];
        let mut old = Old::default();
        for (k, v) in &legacy {
            old.put(k, v).unwrap();
        }
        old.put(&copy_key(b"g"), &[1, 2, 3]).unwrap();
        let want = Tree::Group(vec![
            ("a".into(), Tree::Bytes(Bytes::from_static(b"1"))),
            ("b".into(), Tree::Bytes(Bytes::from_static(b"2"))),
        ]);
        assert_eq!(
            read_tree(&old, "t", "g", &no_preference).unwrap(),
            Some(want)
        );
        assert_eq!(
            read_packed(&old, "t", "g", &no_preference).unwrap(),
            Some(Packed::Copy(Bytes::from_static(&[1, 2, 3])))
        );
        // New writes into it carry checksums; both read side by side.
        apply(
            &mut old,
            "t",
            &[Op::Write("g/c".into(), Bytes::from_static(b"3"))],
            LIMITS,
        )
        .unwrap();
        assert_eq!(old.0.0[b"g/c".as_slice()], encode(b"g/c", RAW, b"3"));
        assert_eq!(
            super::read(&old, "t", "g/c").unwrap(),
            Some(Bytes::from_static(b"3"))
        );
        // The same entries in a map of format 2: errors naming their paths.
        let mut new = Map::default();
        for (k, v) in &legacy {
            new.put(k, v).unwrap();
        }
        new.put(&copy_key(b"g"), &[1, 2, 3]).unwrap();
        corrupt_at_path(kind(&new, "t", "g"), "g");
        corrupt_at_path(super::read(&new, "t", "data/x"), "data/x");
        corrupt_at_path(read_packed(&new, "t", "g", &no_preference), "g");
    }

    #[test]
    fn old_binaries_are_checked_against_their_hash_names() {
        let bytes = b"some bytes stored by hash";
        let path = hb_core::cache::data_path(bytes);
        let mut old = Old::default();
        old.put(path.as_bytes(), &[&[RAW][..], bytes].concat())
            .unwrap();
        assert_eq!(
            super::read(&old, "t", &path).unwrap().as_deref(),
            Some(&bytes[..])
        );
        old.put(path.as_bytes(), &[&[RAW][..], b"other bytes"].concat())
            .unwrap();
        corrupt_at_path(super::read(&old, "t", &path), &path);
        // Other paths have no name to check against.
        old.put(b"k", &[RAW, b'x']).unwrap();
        assert!(super::read(&old, "t", "k").unwrap().is_some());
    }

    #[test]
    fn a_group_with_a_digest_that_lost_an_entry_is_an_error() {
        let mut map = Map::default();
        let Pack::Keep {
            group,
            expect,
            unless,
            ..
        } = message(&mut map)
        else {
            unreachable!()
        };
        let digest = Pack::Keep {
            group,
            expect: expect.clone(),
            unless,
            copy: Bytes::new(),
        };
        apply_packed(&mut map, "t", &[], &[digest], LIMITS).unwrap();
        assert_eq!(stored(&map), encode(b"m", GROUP, &[HAS_DIGEST]));
        // Read whole, and checked.
        assert_eq!(read(&map, "m"), Some(Packed::Tree(expect.clone())));
        assert_eq!(
            read_tree(&map, "t", "m", &no_preference).unwrap(),
            Some(expect)
        );
        // An entry lost below it (its key damaged: it is elsewhere now).
        let lost = map.0.remove(b"m/a".as_slice()).unwrap();
        map.0.insert(b"n/a".to_vec(), lost);
        corrupt_at_path(read_packed(&map, "t", "m", &no_preference), "m");
        corrupt_at_path(read_tree(&map, "t", "m", &no_preference), "m");
        // Something written below it later drops the digest, as it drops a copy.
        apply(
            &mut map,
            "t",
            &[Op::Write("m/c".into(), Bytes::from_static(b"3"))],
            LIMITS,
        )
        .unwrap();
        assert_eq!(stored(&map), encode(b"m", GROUP, &[]));
        assert!(read_tree(&map, "t", "m", &no_preference).is_ok());
    }

    #[test]
    fn short_and_crafted_values_are_errors_not_panics() {
        // Whatever the bytes: an error (or an entry), never a panic. A value that is a
        // checksum alone (of the key and nothing) is refused too.
        let key = b"g";
        let sum_alone = checksum(key, &[]).to_vec();
        let copy_sum_alone = {
            let mut h = crc32fast::Hasher::new();
            h.update(&[COPIES]);
            h.update(key);
            h.finalize().to_le_bytes().to_vec()
        };
        let mut values: Vec<Vec<u8>> = vec![sum_alone, copy_sum_alone];
        for len in 0..=6 {
            for first in [0u8, LINK, RAW, GROUP, 0x11, 0x12, 0x13, COPY, DIGEST, 0xff] {
                let mut v = vec![first; len.min(1)];
                v.resize(len, 0xab);
                values.push(v);
            }
        }
        for v in values {
            let _ = decode("t", "g", Bytes::from(v.clone()));
            let mut map = Map::default();
            map.put(key, &encode(key, GROUP, &[HAS_DIGEST])).unwrap();
            map.put(&copy_key(key), &v).unwrap();
            let _ = read_packed(&map, "t", "g", &no_preference);
            let _ = read_tree(&map, "t", "g", &no_preference);
            map.put(key, &v).unwrap();
            let _ = kind(&map, "t", "g");
        }
    }

    #[test]
    fn the_format_marker_round_trips_and_is_checked() {
        for f in [1, 2] {
            assert_eq!(marker_format(&format_marker(f)), Some(f));
        }
        let mut bad = format_marker(2);
        bad[0] = 1;
        assert_eq!(marker_format(&bad), None);
        assert_eq!(marker_format(&[]), None);
        assert_eq!(marker_format(&format_marker(3)), None);
    }
}
