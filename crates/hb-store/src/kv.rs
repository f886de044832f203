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

use crate::store::{EntryType, Op, StoreError, normalize, segments};

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
