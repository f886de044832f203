//! The LMDB store (through `heed`), the node's embedded default: the model of
//! [`crate::kv`] in one LMDB database under `<dir>`.
//!
//! Durability: every batch is one LMDB write transaction, committed with `fsync`
//! ([`Durability::Sync`], the default), so a batch that returned `Ok` survives a crash
//! of the process or the machine, and a crash in the middle of a batch leaves none of
//! it. [`Durability::Relaxed`] opens the environment with `NO_SYNC`: commits reach the
//! OS but are flushed only by [`LmdbStore::sync`] or the OS; a process crash loses
//! nothing, a machine crash may lose the last commits (never half of one).
//!
//! Integrity: every entry carries a checksum of its key and value, checked on every
//! read ([`crate::kv`]). A store created before checksums (no format marker, entries
//! present) is opened as format 1: its old entries are read unchecked (binaries by
//! hash are checked against their names), new ones are written with checksums; a new
//! store is marked format 2, where an entry without a checksum is an error.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;
use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError};

use crate::kv::{self, KvRead, KvWrite, Limits, Scan, Visit};
use crate::store::{EntryType, Op, Pack, Packed, Store, StoreError, Tree};

/// When commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every batch is flushed to disk before `apply` returns.
    #[default]
    Sync,
    /// Batches are flushed by the OS or by [`LmdbStore::sync`].
    Relaxed,
}

/// The LMDB store.
#[derive(Debug)]
pub struct LmdbStore {
    env: Env,
    db: Database<RawBytes, RawBytes>,
    dir: PathBuf,
    name: String,
    limits: Limits,
    format: u8,
}

/// The size of the memory map: the largest the store can grow to. The file grows as
/// data is written; the map is only address space.
const MAP_SIZE: usize = 1 << 40;

/// Directories opened by this process: LMDB forbids opening one environment twice in a
/// process, which is what makes heed's `open` unsafe.
static OPENED: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

impl LmdbStore {
    /// Opens (creating it if needed) the store in `dir`.
    ///
    /// # Errors
    /// The directory cannot be created or opened (read-only, no space, another handle
    /// in this process), with the path in the error.
    pub fn open(dir: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(dir, durability, MAP_SIZE)
    }

    /// [`LmdbStore::open`] with a map of `map_size` bytes: the most the store can hold
    /// (rounded up to a multiple of 64 KiB); beyond it, writes fail with
    /// [`StoreError::Full`] and the store keeps serving what it holds. Opening an
    /// existing store with a larger map grows it.
    ///
    /// # Errors
    /// As [`LmdbStore::open`]; also a map smaller than the data already stored.
    pub fn open_with(
        dir: impl AsRef<Path>,
        durability: Durability,
        map_size: usize,
    ) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let name = format!("lmdb:{}", dir.display());
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            store: name.clone(),
            path: dir.clone(),
            source,
        })?;
        let canonical = dir.canonicalize().map_err(|source| StoreError::Io {
            store: name.clone(),
            path: dir.clone(),
            source,
        })?;
        {
            let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
            if !opened.insert(canonical.clone()) {
                return Err(StoreError::Database {
                    store: name,
                    path: String::new(),
                    reason: "this process has the store open already".into(),
                });
            }
        }
        let result = Self::open_env(&dir, &name, durability, map_size);
        if result.is_err() {
            OPENED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&canonical);
        }
        let (env, db, format) = result?;
        let limits = Limits {
            max_key: env.max_key_size(),
        };
        Ok(LmdbStore {
            env,
            db,
            dir: canonical,
            name,
            limits,
            format,
        })
    }

    #[allow(
        unsafe_code,
        reason = "heed's open is unsafe only because LMDB forbids opening one environment \
                  twice in a process; `open` guarantees that with the OPENED set"
    )]
    fn open_env(
        dir: &Path,
        name: &str,
        durability: Durability,
        map_size: usize,
    ) -> Result<(Env, Database<RawBytes, RawBytes>, u8), StoreError> {
        let mut options = EnvOpenOptions::new();
        // LMDB wants whole pages: 64 KiB is a multiple of every usual page size.
        let map_size = map_size.div_ceil(1 << 16).max(1) << 16;
        options.map_size(map_size).max_dbs(1);
        if durability == Durability::Relaxed {
            // SAFETY: NO_SYNC only changes when LMDB flushes; it cannot break memory
            // safety (a machine crash may lose the last commits, documented above).
            unsafe {
                options.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: `open` inserted this directory into OPENED before calling us, so the
        // environment is not open elsewhere in this process.
        let env = unsafe { options.open(dir) }.map_err(|e| match e {
            // Opening fails on the directory's files (not writable, no space, …).
            heed::Error::Io(source) => StoreError::Io {
                store: name.to_owned(),
                path: dir.to_path_buf(),
                source,
            },
            other => heed_error(name, &dir.display().to_string(), other),
        })?;
        let mut wtxn = env.write_txn().map_err(|e| heed_error(name, "", e))?;
        let db = env
            .create_database(&mut wtxn, None)
            .map_err(|e| heed_error(name, "", e))?;
        let format = Self::format_of(&mut wtxn, db, name)?;
        wtxn.commit().map_err(|e| heed_error(name, "", e))?;
        Ok((env, db, format))
    }

    /// The store's format, from its marker; a store without one is marked: format 2
    /// when it is empty (new), else format 1 (written before checksums).
    fn format_of(
        wtxn: &mut heed::RwTxn<'_>,
        db: Database<RawBytes, RawBytes>,
        name: &str,
    ) -> Result<u8, StoreError> {
        let key = kv::FORMAT_KEY;
        let at = String::from_utf8_lossy(key).into_owned();
        if let Some(marker) = db.get(wtxn, key).map_err(|e| heed_error(name, &at, e))? {
            return Ok(kv::marker_format(marker).unwrap_or_else(|| {
                // Unreadable: entries without checksums are read too (they may be
                // there); entries with checksums are checked all the same.
                tracing::error!(store = name, "a corrupt format marker; reading as format 1");
                1
            }));
        }
        let empty = db
            .first(wtxn)
            .map_err(|e| heed_error(name, &at, e))?
            .is_none();
        let format = if empty { kv::FORMAT } else { 1 };
        db.put(wtxn, key, &kv::format_marker(format))
            .map_err(|e| heed_error(name, &at, e))?;
        Ok(format)
    }

    /// The format of the store's entries: 2 (every entry checked) for stores created
    /// since checksums, 1 for older ones ([`crate::kv`]).
    pub fn format(&self) -> u8 {
        self.format
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes every commit to disk (needed only in [`Durability::Relaxed`]).
    ///
    /// # Errors
    /// The flush failed.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.env
            .force_sync()
            .map_err(|e| heed_error(&self.name, "", e))
    }

    fn view<R>(
        &self,
        f: impl FnOnce(&dyn KvRead) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let rtxn = self
            .env
            .read_txn()
            .map_err(|e| heed_error(&self.name, "", e))?;
        f(&Reader {
            txn: &rtxn,
            db: self.db,
            name: &self.name,
            format: self.format,
        })
    }
}

impl Drop for LmdbStore {
    fn drop(&mut self) {
        OPENED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.dir);
    }
}

/// A heed error as a store error: a full map or disk is [`StoreError::Full`], a
/// read-only file system [`StoreError::ReadOnly`].
fn heed_error(store: &str, path: &str, e: heed::Error) -> StoreError {
    match e {
        heed::Error::Mdb(MdbError::MapFull) => StoreError::Full {
            store: store.to_owned(),
            path: path.to_owned(),
            reason: "the LMDB map is full".into(),
        },
        heed::Error::Io(io) if io.raw_os_error() == Some(28) => StoreError::Full {
            store: store.to_owned(),
            path: path.to_owned(),
            reason: io.to_string(),
        },
        heed::Error::Io(io) if matches!(io.raw_os_error(), Some(13 | 30)) => StoreError::ReadOnly {
            store: store.to_owned(),
            path: format!("{path} ({io})"),
        },
        other => StoreError::Database {
            store: store.to_owned(),
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn lmdb_get(
    txn: &heed::RoTxn<'_>,
    db: Database<RawBytes, RawBytes>,
    name: &str,
    key: &[u8],
) -> Result<Option<Bytes>, StoreError> {
    db.get(txn, key)
        .map(|v| v.map(Bytes::copy_from_slice))
        .map_err(|e| heed_error(name, &String::from_utf8_lossy(key), e))
}

fn lmdb_seek(
    txn: &heed::RoTxn<'_>,
    db: Database<RawBytes, RawBytes>,
    name: &str,
    prefix: &[u8],
    from: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    // LMDB refuses an empty key, even as a range bound.
    let start = if from.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(from)
    };
    let range = (start, Bound::Unbounded);
    let mut iter = db
        .range(txn, &range)
        .map_err(|e| heed_error(name, &String::from_utf8_lossy(from), e))?;
    match iter.next() {
        Some(Ok((k, _))) if k.starts_with(prefix) => Ok(Some(k.to_vec())),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(e)) => Err(heed_error(name, &String::from_utf8_lossy(from), e)),
    }
}

/// [`KvRead::scan`] with an LMDB cursor: one positioning, then steps.
fn lmdb_scan(
    txn: &heed::RoTxn<'_>,
    db: Database<RawBytes, RawBytes>,
    name: &str,
    prefix: &[u8],
    from: &[u8],
    visit: &mut Visit<'_>,
) -> Result<(), StoreError> {
    let error = |at: &[u8], e| heed_error(name, &String::from_utf8_lossy(at), e);
    let mut start = from.to_vec();
    loop {
        // LMDB refuses an empty key, even as a range bound.
        let bound = if start.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Included(start.as_slice())
        };
        let range = (bound, Bound::Unbounded);
        let mut iter = db.range(txn, &range).map_err(|e| error(&start, e))?;
        // The smallest key the next step may return (a corrupt tree can go back).
        let mut floor = start.clone();
        let next_start = loop {
            match iter.next() {
                None => return Ok(()),
                Some(Err(e)) => return Err(error(&floor, e)),
                Some(Ok((key, value))) => {
                    if !key.starts_with(prefix) {
                        return Ok(());
                    }
                    if key < floor.as_slice() {
                        let mut e = kv::out_of_order(&floor, key);
                        if let StoreError::Corrupt { store, .. } = &mut e {
                            name.clone_into(store);
                        }
                        return Err(e);
                    }
                    match visit(key, value)? {
                        Scan::Next => {
                            floor.clear();
                            floor.extend_from_slice(key);
                            floor.push(0);
                        }
                        Scan::SeekTo(next) => break next,
                        Scan::Stop => return Ok(()),
                    }
                }
            }
        };
        drop(iter);
        start = next_start;
    }
}

struct Reader<'a> {
    txn: &'a heed::RoTxn<'a>,
    db: Database<RawBytes, RawBytes>,
    name: &'a str,
    format: u8,
}

impl KvRead for Reader<'_> {
    fn format(&self) -> u8 {
        self.format
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        lmdb_get(self.txn, self.db, self.name, key)
    }

    fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        lmdb_seek(self.txn, self.db, self.name, prefix, from)
    }

    fn scan(&self, prefix: &[u8], from: &[u8], visit: &mut Visit<'_>) -> Result<(), StoreError> {
        lmdb_scan(self.txn, self.db, self.name, prefix, from, visit)
    }
}

struct Writer<'a, 'e> {
    txn: &'a mut heed::RwTxn<'e>,
    db: Database<RawBytes, RawBytes>,
    name: &'a str,
    format: u8,
}

impl KvRead for Writer<'_, '_> {
    fn format(&self) -> u8 {
        self.format
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        lmdb_get(self.txn, self.db, self.name, key)
    }

    fn seek(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        lmdb_seek(self.txn, self.db, self.name, prefix, from)
    }

    fn scan(&self, prefix: &[u8], from: &[u8], visit: &mut Visit<'_>) -> Result<(), StoreError> {
        lmdb_scan(self.txn, self.db, self.name, prefix, from, visit)
    }
}

impl KvWrite for Writer<'_, '_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put(self.txn, key, value)
            .map_err(|e| heed_error(self.name, &String::from_utf8_lossy(key), e))
    }

    fn put_new(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Bytes>, StoreError> {
        self.db
            .get_or_put(self.txn, key, value)
            .map(|old| old.map(Bytes::copy_from_slice))
            .map_err(|e| heed_error(self.name, &String::from_utf8_lossy(key), e))
    }
}

impl Store for LmdbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        self.view(|v| kv::read(v, &self.name, path))
    }

    fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError> {
        self.view(|v| kv::kind(v, &self.name, path))
    }

    fn list(&self, path: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.view(|v| kv::list(v, &self.name, path))
    }

    fn resolve(&self, path: &str) -> Result<String, StoreError> {
        self.view(|v| kv::resolve(v, &self.name, path))
    }

    fn read_tree(
        &self,
        path: &str,
        prefer: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Tree>, StoreError> {
        self.view(|v| kv::read_tree(v, &self.name, path, prefer))
    }

    fn read_packed(
        &self,
        path: &str,
        prefer: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Packed>, StoreError> {
        self.view(|v| kv::read_packed(v, &self.name, path, prefer))
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.apply_packed(ops, &[])
    }

    fn apply_packed(&self, ops: &[Op], packs: &[Pack]) -> Result<(), StoreError> {
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(|e| heed_error(&self.name, "", e))?;
        let mut writer = Writer {
            txn: &mut wtxn,
            db: self.db,
            name: &self.name,
            format: self.format,
        };
        // On error the transaction is dropped, which aborts it: nothing is applied.
        kv::apply_packed(&mut writer, &self.name, ops, packs, self.limits)?;
        wtxn.commit().map_err(|e| heed_error(&self.name, "", e))
    }
}
