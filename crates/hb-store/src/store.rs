//! The store interface (spec 05 §6.1): paths of `/`-joined segments naming *simple*
//! entries (bytes), *composite* entries (groups) and links; and [`Chain`], an ordered
//! list of stores that answers as the first viable one.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// Bytes.
    Simple,
    /// A group of named children.
    Composite,
}

/// Where a store keeps its data (spec 05 §6.1 `scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On this machine.
    Local,
    /// Behind the network (another node, a gateway).
    Remote,
}

/// One change of an atomic batch ([`Store::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite the simple entry at a path (parent groups are created).
    Write(String, Bytes),
    /// Create a group (idempotent).
    Group(String),
    /// Make `new` an alias of `existing`; a no-op when they are equal or when `new`
    /// already exists (an existing entry is never overwritten by a link).
    Link {
        /// The path the link points to.
        existing: String,
        /// The path of the link.
        new: String,
    },
}

/// Why a store operation failed. Every variant names the store and the path involved.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O error on a file of the store.
    #[error("{store}: I/O error on {path}: {source}")]
    Io {
        /// The store.
        store: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database reported an error.
    #[error("{store}: database error at `{path}`: {reason}")]
    Database {
        /// The store.
        store: String,
        /// The store path (key) involved.
        path: String,
        /// What the database said.
        reason: String,
    },
    /// The store is full (the disk, or the database's map).
    #[error("{store}: no space left writing `{path}`: {reason}")]
    Full {
        /// The store.
        store: String,
        /// The path being written.
        path: String,
        /// The underlying error.
        reason: String,
    },
    /// A stored value is not what the store wrote.
    #[error("{store}: corrupt entry at `{path}`: {reason}")]
    Corrupt {
        /// The store.
        store: String,
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store does not accept writes.
    #[error("{store}: read-only, cannot write `{path}`")]
    ReadOnly {
        /// The store.
        store: String,
        /// The path.
        path: String,
    },
    /// A path the store cannot hold (too long, empty segment, …).
    #[error("{store}: invalid path `{path}`: {reason}")]
    InvalidPath {
        /// The store.
        store: String,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Links that lead back to themselves, or too many of them.
    #[error("{store}: too many links resolving `{path}` (a cycle?)")]
    LinkLoop {
        /// The store.
        store: String,
        /// The path.
        path: String,
    },
    /// A remote store could not be reached or answered badly.
    #[error("{store}: {reason}")]
    Remote {
        /// The store.
        store: String,
        /// What happened.
        reason: String,
    },
}

/// A store (spec 05 §6.1). Reads follow links; writes go through [`Store::apply`],
/// which is atomic: after a crash either every change of a batch is there or none is.
pub trait Store: Send + Sync + fmt::Debug {
    /// A short name for errors and logs (`lmdb:/var/hb/store`).
    fn name(&self) -> &str;

    /// Local or remote.
    fn scope(&self) -> Scope {
        Scope::Local
    }

    /// The bytes of the simple entry at `path` (links followed); `None` when there is
    /// none (or the path is a group).
    ///
    /// # Errors
    /// The store failed, or what it holds is corrupt.
    fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError>;

    /// What `path` names (links followed), if anything.
    ///
    /// # Errors
    /// The store failed.
    fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError>;

    /// The child names of the group at `path` (links followed), sorted; `None` when
    /// `path` is not a group.
    ///
    /// # Errors
    /// The store failed.
    fn list(&self, path: &str) -> Result<Option<Vec<String>>, StoreError>;

    /// `path` with every link along it followed (spec 05 §6.2 `resolve`).
    ///
    /// # Errors
    /// The store failed, or the links loop.
    fn resolve(&self, path: &str) -> Result<String, StoreError>;

    /// The entry at `path` (links followed) read whole: its bytes, or a group with
    /// every child read the same way, recursively. When `prefer` names another path
    /// for the resolved one and that path has an entry, that entry is read instead.
    /// Stores with snapshots read it all in one consistent view (one read transaction);
    /// the default reads it through [`Store::resolve`], [`Store::kind`],
    /// [`Store::list`] and [`Store::read`].
    ///
    /// # Errors
    /// The store failed; a group contains itself through links
    /// ([`StoreError::LinkLoop`]); groups nest deeper than [`MAX_TREE_DEPTH`] or a
    /// listed child cannot be read ([`StoreError::Corrupt`]).
    fn read_tree(
        &self,
        path: &str,
        prefer: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Tree>, StoreError> {
        let mut at = self.resolve(path)?;
        if let Some(alt) = prefer(&at) {
            let alt = self.resolve(&alt)?;
            if self.kind(&alt)?.is_some() {
                at = alt;
            }
        }
        match self.kind(&at)? {
            None => Ok(None),
            Some(EntryType::Simple) => Ok(self.read(&at)?.map(Tree::Bytes)),
            Some(EntryType::Composite) => tree_by_parts(self, &at, &mut Vec::new()).map(Some),
        }
    }

    /// [`Store::read_tree`], except that a group (the one `path` leads to, or the one
    /// `prefer` names) that has a packed copy kept with it ([`Store::apply_packed`]) is
    /// returned as that copy instead of being read whole. A group with a copy is read
    /// as it is, without looking at the path `prefer` names for it: the copy was kept
    /// only while nothing was there ([`Pack::Keep`]'s `unless`). Stores that keep no
    /// copies (the default) answer as [`Store::read_tree`].
    ///
    /// # Errors
    /// As [`Store::read_tree`].
    fn read_packed(
        &self,
        path: &str,
        prefer: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Packed>, StoreError> {
        Ok(self.read_tree(path, prefer)?.map(Packed::Tree))
    }

    /// Applies a batch of changes atomically and durably (unless the store was opened
    /// in a relaxed durability mode).
    ///
    /// # Errors
    /// The store is read-only, full, or failed; then nothing of the batch is applied.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;

    /// [`Store::apply`], then, in the same atomic batch, keeps or drops packed copies of
    /// groups as `packs` say. A copy is an addition to the layout, never a replacement:
    /// a store keeps one only where it is exactly what the group reads as, and drops it
    /// when anything is placed below the group afterwards. Stores that keep no copies
    /// (the default) apply `ops` alone.
    ///
    /// # Errors
    /// As [`Store::apply`].
    fn apply_packed(&self, ops: &[Op], packs: &[Pack]) -> Result<(), StoreError> {
        let _ = packs;
        self.apply(ops)
    }

    /// Writes one simple entry.
    ///
    /// # Errors
    /// As [`Store::apply`].
    fn write(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.apply(&[Op::Write(path.to_owned(), bytes)])
    }

    /// Creates a group.
    ///
    /// # Errors
    /// As [`Store::apply`].
    fn make_group(&self, path: &str) -> Result<(), StoreError> {
        self.apply(&[Op::Group(path.to_owned())])
    }

    /// Makes `new` an alias of `existing`.
    ///
    /// # Errors
    /// As [`Store::apply`].
    fn make_link(&self, existing: &str, new: &str) -> Result<(), StoreError> {
        self.apply(&[Op::Link {
            existing: existing.to_owned(),
            new: new.to_owned(),
        }])
    }
}

/// A value read whole by [`Store::read_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// A simple entry.
    Bytes(Bytes),
    /// A group: its children by name, sorted.
    Group(Vec<(String, Tree)>),
}

/// What [`Store::read_packed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packed {
    /// The entry read whole, as [`Store::read_tree`] reads it.
    Tree(Tree),
    /// The packed copy kept with the group (the bytes [`Pack::Keep`] gave).
    Copy(Bytes),
}

/// What to do with the packed copy of a group ([`Store::apply_packed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pack {
    /// Keep `copy` with the group at `group` — provided that, once the batch's ops are
    /// applied, the group reads whole ([`Store::read_tree`], no preference) exactly as
    /// `expect`, and that nothing is at `unless` (the path a reader prefers to the
    /// group, if any). Otherwise any copy the group has is dropped.
    Keep {
        /// The group (a path without links along it).
        group: String,
        /// What the group must read as.
        expect: Tree,
        /// The path that must be empty: a reader of a group with a copy does not look
        /// there. Whoever puts something there later drops the copy ([`Pack::Drop`]).
        unless: Option<String>,
        /// The copy; empty to keep only a digest of `expect`, against which the group
        /// is checked when it is read whole (a group too large for a copy).
        copy: Bytes,
    },
    /// Drop the copy kept with the group at this path, if any.
    Drop(String),
}

/// How deeply [`Store::read_tree`] follows nested groups.
pub const MAX_TREE_DEPTH: usize = 64;

/// The group at `at` read whole through the store's single operations; `chain` holds
/// the groups being read (a group met again is a loop).
fn tree_by_parts<S: Store + ?Sized>(
    store: &S,
    at: &str,
    chain: &mut Vec<String>,
) -> Result<Tree, StoreError> {
    if chain.iter().any(|p| p == at) {
        return Err(StoreError::LinkLoop {
            store: store.name().to_owned(),
            path: at.to_owned(),
        });
    }
    if chain.len() >= MAX_TREE_DEPTH {
        return Err(StoreError::Corrupt {
            store: store.name().to_owned(),
            path: at.to_owned(),
            reason: format!("groups nested more than {MAX_TREE_DEPTH} deep"),
        });
    }
    chain.push(at.to_owned());
    let mut out = Vec::new();
    for name in store.list(at)?.unwrap_or_default() {
        let child = store.resolve(&format!("{at}/{name}"))?;
        let tree = match store.kind(&child)? {
            Some(EntryType::Simple) => store.read(&child)?.map(Tree::Bytes),
            Some(EntryType::Composite) => Some(tree_by_parts(store, &child, chain)?),
            None => None,
        };
        let tree = tree.ok_or_else(|| StoreError::Corrupt {
            store: store.name().to_owned(),
            path: format!("{at}/{name}"),
            reason: "listed but cannot be read".into(),
        })?;
        out.push((name, tree));
    }
    chain.pop();
    Ok(Tree::Group(out))
}

/// Stores tried in order (spec 05 §6.1 "Chains"): a read is answered by the first store
/// that has the path (a store that fails is logged and skipped); a batch lands in the
/// first store that accepts it (read-only stores are skipped).
#[derive(Debug, Clone)]
pub struct Chain {
    stores: Vec<Arc<dyn Store>>,
    name: String,
}

impl Chain {
    /// A chain of `stores`, first to last.
    pub fn new(stores: Vec<Arc<dyn Store>>) -> Self {
        let name = stores
            .iter()
            .map(|s| s.name().to_owned())
            .collect::<Vec<_>>()
            .join(" > ");
        Chain { stores, name }
    }

    /// The stores, first to last.
    pub fn stores(&self) -> &[Arc<dyn Store>] {
        &self.stores
    }

    /// The first answer of `f` that is `Some`, skipping stores that fail; the last
    /// error if every store failed.
    fn first<T>(
        &self,
        f: impl Fn(&dyn Store) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut last_err = None;
        for s in &self.stores {
            match f(s.as_ref()) {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(store = s.name(), error = %e, "store skipped");
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

impl Store for Chain {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        self.first(|s| s.read(path))
    }

    fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError> {
        self.first(|s| s.kind(path))
    }

    fn list(&self, path: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.first(|s| s.list(path))
    }

    fn resolve(&self, path: &str) -> Result<String, StoreError> {
        // The first store in which the path leads somewhere decides.
        for s in &self.stores {
            if let Ok(resolved) = s.resolve(path)
                && resolved != path
            {
                return Ok(resolved);
            }
        }
        Ok(path.to_owned())
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut last_err = None;
        for s in &self.stores {
            match s.apply(ops) {
                Ok(()) => return Ok(()),
                Err(e @ StoreError::ReadOnly { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| StoreError::ReadOnly {
            store: self.name.clone(),
            path: ops
                .first()
                .map(|op| match op {
                    Op::Write(p, _) | Op::Group(p) => p.clone(),
                    Op::Link { new, .. } => new.clone(),
                })
                .unwrap_or_default(),
        }))
    }
}

/// Splits a store path into its segments, ignoring empty ones (`a//b/` is `a/b`).
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// `path` with empty segments removed.
pub fn normalize(path: &str) -> String {
    segments(path).collect::<Vec<_>>().join("/")
}
