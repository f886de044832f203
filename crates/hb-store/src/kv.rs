//! The store model of spec 05 §6.1 over an ordered key-value map, shared by the LMDB
//! and memory stores (the layout of the reference's RocksDB store, §6.3, with our own
//! encoding).
//!
//! * key = the path (segments joined by `/`);
//! * value = one tag byte and a payload: [`LINK`] + the target path, [`RAW`] + the
//!   bytes, or [`GROUP`] alone — or [`GROUP`] + [`HAS_COPY`] for a group that has a
//!   packed copy ([`crate::Store::apply_packed`]).
//!
//! A group's children are the keys below `group/`, found by ordered seeks, so adding a
//! child never rewrites the group (a group such as `data/` may hold millions).
//!
//! Packed copies (what a group reads as, in a form opaque here) are kept apart from the
//! paths, at the key [`COPIES`] + the group's path: `0xff` starts no UTF-8 text, so no
//! path can name them, and they sort after every path, together, so that reading one
//! touches a compact part of the map rather than pages full of other groups'
//! children. An empty value there is no copy. A copy is kept only while it is exact:
//! anything placed below its group, or written over it, drops it.

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
/// The byte after [`GROUP`] in the entry of a group that has a packed copy.
pub const HAS_COPY: u8 = 1;
/// The first byte of the key of a packed copy (never the first byte of a path).
pub const COPIES: u8 = 0xff;

/// How many links a path may cross.
const MAX_LINK_HOPS: usize = 64;

/// Read access to an ordered byte map (one consistent snapshot).
pub trait KvRead {
    /// The value at `key`.
    ///
    /// # Errors
    /// The backend failed.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;

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

/// Decodes the value stored at `path`.
///
/// # Errors
/// The value is not one this module writes.
pub fn decode(store: &str, path: &str, value: Bytes) -> Result<Entry, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        store: store.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    match value.first() {
        Some(&LINK) => String::from_utf8(value[1..].to_vec())
            .map(Entry::Link)
            .map_err(|_| corrupt("a link target that is not UTF-8")),
        Some(&RAW) => Ok(Entry::Raw(value.slice(1..))),
        Some(&GROUP) if value.len() == 1 || value[1..] == [HAS_COPY] => Ok(Entry::Group),
        Some(&GROUP) => Err(corrupt("a group entry with a payload")),
        Some(other) => Err(corrupt(&format!("unknown entry tag {other}"))),
        None => Err(corrupt("an empty value")),
    }
}

/// True for the entry of a group that has a packed copy.
fn has_copy(value: &[u8]) -> bool {
    value == [GROUP, HAS_COPY]
}

/// The key of the packed copy of the group at `path` in a map that keeps copies among
/// the paths ([`KvRead::get_copy`]'s default).
fn copy_key(path: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 1);
    key.push(COPIES);
    key.extend_from_slice(path);
    key
}

/// The packed copy of the group at `path`, if it has one.
fn copy_of(view: &dyn KvRead, path: &str) -> Result<Option<Bytes>, StoreError> {
    Ok(view.get_copy(path.as_bytes())?.filter(|c| !c.is_empty()))
}

/// The entry at `path` exactly (no link following).
fn entry(view: &dyn KvRead, store: &str, path: &str) -> Result<Option<Entry>, StoreError> {
    view.get(path.as_bytes())?
        .map(|v| decode(store, path, v))
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
        Some((at, Entry::Group, _)) => group_tree(view, store, &at, &mut Vec::new()).map(Some),
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
    if let Some(copy) = copy_of(view, &direct)? {
        return Ok(Some(Packed::Copy(copy)));
    }
    let mut found = follow(view, store, path, true)?;
    if let Some((at, Entry::Group, value)) = &found
        && has_copy(value)
        && *at != direct
        && let Some(copy) = copy_of(view, at)?
    {
        return Ok(Some(Packed::Copy(copy)));
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
        Some((at, Entry::Group, value)) => match has_copy(&value) {
            true => match copy_of(view, &at)? {
                Some(copy) => Ok(Some(Packed::Copy(copy))),
                None => {
                    group_tree(view, store, &at, &mut Vec::new()).map(|t| Some(Packed::Tree(t)))
                }
            },
            false => group_tree(view, store, &at, &mut Vec::new()).map(|t| Some(Packed::Tree(t))),
        },
    }
}

/// The entry `path` names, where it is, and its stored value: a direct lookup (a link
/// target the cache wrote is a path without links along it), links followed; when
/// that finds nothing and `fallback` is set, resolved segment by segment (a link
/// along the path).
fn follow<'p>(
    view: &dyn KvRead,
    store: &str,
    path: &'p str,
    fallback: bool,
) -> Result<Option<(Cow<'p, str>, Entry, Bytes)>, StoreError> {
    let mut at = normalized(Cow::Borrowed(path));
    let mut resolved = !fallback;
    for _ in 0..=MAX_LINK_HOPS {
        match view.get(at.as_bytes())? {
            Some(value) => {
                // (A group needs no decoding, nor a second handle on its value.)
                let found = if value[..] == [GROUP] || has_copy(&value) {
                    Entry::Group
                } else {
                    decode(store, &at, value.clone())?
                };
                if let Entry::Link(next) = found {
                    at = normalized(Cow::Owned(next));
                    resolved = !fallback;
                } else {
                    return Ok(Some((at, found, value)));
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
        // The tag first, so that a value is copied once (into its own `Bytes`).
        let decoded = match value.split_first() {
            Some((&RAW, bytes)) => Ok(Entry::Raw(Bytes::copy_from_slice(bytes))),
            Some((&LINK, target)) => match std::str::from_utf8(target) {
                Ok(t) => Ok(Entry::Link(t.to_owned())),
                Err(_) => decode(store, "", Bytes::copy_from_slice(value)),
            },
            _ => decode(store, "", Bytes::copy_from_slice(value)),
        };
        let entry = match decoded {
            Ok(entry) => entry,
            Err(StoreError::Corrupt { store, reason, .. }) => {
                return Err(StoreError::Corrupt {
                    store,
                    path: format!("{at}/{name}"),
                    reason,
                });
            }
            Err(e) => return Err(e),
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
            Entry::Link(target) => match view.get(target.as_bytes())? {
                Some(v) if v.first() == Some(&RAW) => Tree::Bytes(v.slice(1..)),
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
                txn.put(acc.as_bytes(), &[GROUP])?;
                true
            }
            Some(v) if v[..] == [GROUP] => true,
            Some(v) if has_copy(&v) => {
                copies.push(acc.clone());
                true
            }
            Some(v) => decode(store, &acc, v)? == Entry::Group,
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
                let mut value = Vec::with_capacity(bytes.len() + 1);
                value.push(RAW);
                value.extend_from_slice(bytes);
                if let Some(old) = txn.put_new(at.as_bytes(), &value)? {
                    // Written over a group: its copy goes with it.
                    if has_copy(&old) {
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
                        txn.put(at.as_bytes(), &[GROUP])?;
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
                let mut value = Vec::with_capacity(existing.len() + 1);
                value.push(LINK);
                value.extend_from_slice(existing.as_bytes());
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
    txn.put(group.as_bytes(), &[GROUP])?;
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
    if value.first() != Some(&GROUP) {
        return Ok(());
    }
    let copy = match keep {
        Some((expect, unless, copy)) if !copy.is_empty() => {
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
            exact.then_some(copy)
        }
        _ => None,
    };
    match copy {
        Some(copy) => {
            if !has_copy(&value) {
                txn.put(at.as_bytes(), &[GROUP, HAS_COPY])?;
            }
            txn.put_copy(at.as_bytes(), copy)?;
        }
        None if has_copy(&value) => drop_copy(txn, &at)?,
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
        assert_eq!(stored(&map), [GROUP, HAS_COPY]);
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
        assert_eq!(stored(&map), [GROUP]);
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
        assert_eq!(stored(&map), [GROUP]);
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
        let group = |v: &'static [u8]| decode("t", "g", Bytes::from_static(v));
        assert_eq!(group(&[GROUP]).unwrap(), Entry::Group);
        assert_eq!(group(&[GROUP, HAS_COPY]).unwrap(), Entry::Group);
        assert!(group(&[GROUP, 7]).is_err());
        assert!(group(&[GROUP, HAS_COPY, 0]).is_err());
        // A flag without a copy: the group is walked.
        let mut map = Map::default();
        message(&mut map);
        map.put(b"m", &[GROUP, HAS_COPY]).unwrap();
        assert!(matches!(
            read(&map, "m"),
            Some(Packed::Tree(Tree::Group(_)))
        ));
    }
}
