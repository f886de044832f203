//! An in-memory store (tests, and nodes that keep nothing): the model of [`crate::kv`]
//! over a `BTreeMap` behind a lock. A batch is applied under the write lock, so readers
//! see all of it or none of it.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::kv::{self, KvRead, KvWrite, Limits, Scan, Visit};
use crate::store::{EntryType, Op, Store, StoreError, Tree};

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Bytes>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

const NAME: &str = "memory";
const LIMITS: Limits = Limits { max_key: 64 * 1024 };

fn seek_in(map: &BTreeMap<Vec<u8>, Bytes>, prefix: &[u8], from: &[u8]) -> Option<Vec<u8>> {
    map.range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
        .next()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(prefix))
        .cloned()
}

struct View<'a>(&'a BTreeMap<Vec<u8>, Bytes>);

impl KvRead for View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.0.get(key).cloned())
    }

    fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(seek_in(self.0, prefix, from))
    }

    fn scan(&self, prefix: &[u8], from: &[u8], visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let mut start = from.to_vec();
        loop {
            let mut next_start = None;
            for (key, value) in self
                .0
                .range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded))
            {
                if !key.starts_with(prefix) {
                    return Ok(());
                }
                match visit(key, value)? {
                    Scan::Next => {}
                    Scan::SeekTo(next) => {
                        next_start = Some(next);
                        break;
                    }
                    Scan::Stop => return Ok(()),
                }
            }
            match next_start {
                Some(next) => start = next,
                None => return Ok(()),
            }
        }
    }
}

/// A transaction: the changes are staged, then merged under the same write lock.
struct Txn<'a> {
    base: &'a BTreeMap<Vec<u8>, Bytes>,
    staged: BTreeMap<Vec<u8>, Bytes>,
}

impl KvRead for Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.staged.get(key).or_else(|| self.base.get(key)).cloned())
    }

    fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            match (
                seek_in(&self.staged, prefix, from),
                seek_in(self.base, prefix, from),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        )
    }
}

impl KvWrite for Txn<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.staged
            .insert(key.to_vec(), Bytes::copy_from_slice(value));
        Ok(())
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &str {
        NAME
    }

    fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        kv::read(&View(&self.map.read()), NAME, path)
    }

    fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError> {
        kv::kind(&View(&self.map.read()), NAME, path)
    }

    fn list(&self, path: &str) -> Result<Option<Vec<String>>, StoreError> {
        kv::list(&View(&self.map.read()), NAME, path)
    }

    fn resolve(&self, path: &str) -> Result<String, StoreError> {
        kv::resolve(&View(&self.map.read()), NAME, path)
    }

    fn read_tree(
        &self,
        path: &str,
        prefer: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Tree>, StoreError> {
        kv::read_tree(&View(&self.map.read()), NAME, path, prefer)
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut map = self.map.write();
        let mut txn = Txn {
            base: &map,
            staged: BTreeMap::new(),
        };
        kv::apply(&mut txn, NAME, ops, LIMITS)?;
        let staged = txn.staged;
        map.extend(staged);
        Ok(())
    }
}
