//! The store model of spec 05 §6.1 over an ordered key-value map, shared by the LMDB
//! and memory stores (the layout of the reference's RocksDB store, §6.3, with our own
//! encoding).
//!
//! * key = the path (segments joined by `/`);
//! * value = one tag byte and a payload: [`LINK`] + the target path, [`RAW`] + the
//!   bytes, or [`GROUP`] alone.
//!
//! A group's children are the keys below `group/`, found by ordered seeks, so adding a
//! child never rewrites the group (a group such as `data/` may hold millions).

use bytes::Bytes;

use crate::store::{EntryType, MAX_TREE_DEPTH, Op, StoreError, Tree, normalize, segments};

/// Tag of a link entry.
pub const LINK: u8 = 1;
/// Tag of a raw (simple) entry.
pub const RAW: u8 = 2;
/// Tag of a group entry.
pub const GROUP: u8 = 3;

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
        Some(&GROUP) if value.len() == 1 => Ok(Entry::Group),
        Some(&GROUP) => Err(corrupt("a group entry with a payload")),
        Some(other) => Err(corrupt(&format!("unknown entry tag {other}"))),
        None => Err(corrupt("an empty value")),
    }
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
    if let Some((at, _)) = &found
        && let Some(alt) = prefer(at)
        && let Some(preferred) = follow(view, store, &alt, false)?
    {
        found = Some(preferred);
    }
    match found {
        None | Some((_, Entry::Link(_))) => Ok(None),
        Some((_, Entry::Raw(b))) => Ok(Some(Tree::Bytes(b))),
        Some((at, Entry::Group)) => group_tree(view, store, &at, &mut Vec::new()).map(Some),
    }
}

/// The entry `path` names and where it is: a direct lookup (a link
/// target the cache wrote is a path without links along it), links followed; when
/// that finds nothing and `fallback` is set, resolved segment by segment (a link
/// along the path).
fn follow(
    view: &dyn KvRead,
    store: &str,
    path: &str,
    fallback: bool,
) -> Result<Option<(String, Entry)>, StoreError> {
    let mut at = normalized(path.to_owned());
    let mut resolved = !fallback;
    for _ in 0..=MAX_LINK_HOPS {
        match entry(view, store, &at)? {
            Some(Entry::Link(next)) => {
                at = normalized(next);
                resolved = !fallback;
            }
            Some(found) => return Ok(Some((at, found))),
            None if resolved || at.is_empty() => return Ok(None),
            None => {
                let full = resolve(view, store, &at)?;
                if full == at {
                    return Ok(None);
                }
                at = full;
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
fn normalized(path: String) -> String {
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        normalize(&path)
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
                    Some((_, Entry::Raw(b))) => Tree::Bytes(b),
                    Some((p, Entry::Group)) => group_tree(view, store, &p, chain)?,
                    Some((_, Entry::Link(_))) | None => {
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
/// last segment; the parent groups are created.
fn place(
    txn: &mut dyn KvWrite,
    store: &str,
    path: &str,
    limits: Limits,
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
        match entry(txn, store, &acc)? {
            None => {
                check_path(store, &acc, limits)?;
                txn.put(acc.as_bytes(), &[GROUP])?;
            }
            Some(Entry::Group) => {}
            Some(_) => {
                return Err(StoreError::InvalidPath {
                    store: store.to_owned(),
                    path: path.clone(),
                    reason: format!("`{acc}` is not a group"),
                });
            }
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
    for op in ops {
        match op {
            Op::Write(path, bytes) => {
                let at = place(txn, store, path, limits)?;
                let mut value = Vec::with_capacity(bytes.len() + 1);
                value.push(RAW);
                value.extend_from_slice(bytes);
                txn.put(at.as_bytes(), &value)?;
            }
            Op::Group(path) => {
                let at = place(txn, store, path, limits)?;
                match entry(txn, store, &at)? {
                    None => txn.put(at.as_bytes(), &[GROUP])?,
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
                let at = place(txn, store, &new, limits)?;
                if entry(txn, store, &at)?.is_some() {
                    continue;
                }
                let mut value = Vec::with_capacity(existing.len() + 1);
                value.push(LINK);
                value.extend_from_slice(existing.as_bytes());
                txn.put(at.as_bytes(), &value)?;
            }
        }
    }
    Ok(())
}
