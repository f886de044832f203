//! The filesystem store (spec 05 §6.2): entries are files under `<prefix>/<path>`,
//! groups are directories, links are symbolic links.
//!
//! # Paths
//!
//! Every path is untrusted. A path is split on `/` (empty segments are ignored, so a
//! leading `/` names the same entry as without it: store paths are always relative to
//! the prefix); a segment that is `.` or `..`, contains NUL, is not a single plain file
//! name on this platform, is longer than 255 bytes, or starts with the reserved `.hb-`
//! is refused with [`StoreError::InvalidPath`] — for reads too. Link targets read from
//! the disk are checked the same way and must stay under the prefix, so no path or link
//! reaches outside it.
//!
//! Links are written as *relative* symbolic links (`<prefix>/a/b/k -> ../../data/x`),
//! so the tree can be browsed with ordinary tools and moved as a whole; the store
//! follows them itself ([`Store::resolve`]), never through the OS. Absolute targets
//! under the prefix are accepted when reading.
//!
//! # What is atomic
//!
//! * **One file** is always complete: it is written to a temporary file in
//!   `<prefix>/.hb-tmp/`, flushed (`fsync`), then `rename`d into place, and the
//!   directory is flushed. Readers (in any process) see the old file or the new one,
//!   never part of one. A link is created by one `symlink` call, a group by one
//!   `mkdir`.
//! * **A batch** ([`Store::apply`]) is checked completely before anything changes:
//!   an invalid path or a conflict (a write below a file, a group over a file) fails the
//!   batch with nothing changed, and so does a failure while staging file contents
//!   (disk full): the temporary files are removed.
//! * **Crash atomicity of a batch** comes from a redo journal: a batch of more than one
//!   change is written as `<prefix>/.hb-journal` (renamed into place, flushed) before
//!   the first change, and removed after the last. Every change is idempotent (rename a
//!   staged file if it is still staged, `mkdir`/`symlink` unless present), so
//!   [`FsStore::open`] after a crash replays a journal it finds and the batch is
//!   complete. A crash before the journal is in place leaves only staged temporary
//!   files, which `open` removes.
//! * **Isolation** holds within this process: readers of this handle wait while a batch
//!   is committed, so they see all of it or none. Another process reading the same
//!   directory can see a batch half-committed (each file still whole). One handle at a
//!   time may open a prefix (a lock on `<prefix>/.hb-lock`, so one process).
//! * An I/O error *during* the commit (after the journal is in place) leaves the batch
//!   partly applied; the error says so, and the journal stays, so the next `open`
//!   completes it.
//!
//! [`Durability::Relaxed`] skips every `fsync` and the journal: files are still whole
//! and batches still checked first, but a machine crash may lose or split batches.
//!
//! Unlike the key-value stores, a write cannot replace a group (a directory) with a
//! file: that is refused.
//!
//! # Integrity
//!
//! A file holds exactly its value (`cat` shows it), so the checks live beside it:
//!
//! * Every file the store writes carries an extended attribute `user.hb.crc32`: the
//!   CRC-32 (IEEE, 4 bytes, big-endian, so `getfattr -e hex` shows the number) of the
//!   file's store path (`a/b/c`, relative to the prefix), a NUL byte, then the contents.
//!   It is set on the temporary file before the `rename`, so it arrives with the
//!   contents. Every read fetches it from the opened file (one `fgetxattr`) and checks
//!   it: a mismatch, or an attribute that is not 4 bytes, is [`StoreError::Corrupt`]
//!   naming the path, never damaged bytes. The path is covered too, so a file moved or
//!   copied (with its attributes) to another path inside the store reads as corrupt
//!   there; moving or copying the whole prefix is fine. A file reached through a link in
//!   the middle of its path is checked against the path it was written at.
//! * A file without the attribute (written by hand, by an older version, or with its
//!   attributes lost on a copy) is read as it is — except `data/<hash>`, the message
//!   cache's content-addressed binaries, which must then hash (SHA-256) to their name.
//!   With the attribute, the CRC is the check: it catches the same storage faults, and
//!   SHA-256 ran ~25× slower when measured (1.8 ms against 65 µs per MiB; ADR 0004).
//! * On a filesystem without user extended attributes (setting one fails with
//!   `ENOTSUP`), the store notes it once (logged at `info`) and writes and reads without
//!   checksums from then on; only the `data/<hash>` check remains. Any other failure to
//!   set the attribute fails the write.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::lmdb::Durability;
use crate::store::{EntryType, Op, Store, StoreError, segments};

/// How many links a path may cross.
const MAX_LINK_HOPS: usize = 64;
/// The longest segment (a file name) in bytes.
const MAX_SEGMENT: usize = 255;
/// Names starting with this are the store's own files, never entries.
const RESERVED: &str = ".hb-";
const TMP_DIR: &str = ".hb-tmp";
const JOURNAL: &str = ".hb-journal";
const LOCK: &str = ".hb-lock";
const JOURNAL_MAGIC: &[u8; 8] = b"HBFSJ\x00\x00\x01";
/// The extended attribute holding a file's checksum ([`checksum`]).
const CHECKSUM_ATTR: &str = "user.hb.crc32";
/// The size of a checksum.
const SUM: usize = 4;

/// The filesystem store.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    name: String,
    durability: Durability,
    /// Whether files get, and are checked against, a checksum attribute: false once the
    /// filesystem has refused extended attributes.
    checksums: AtomicBool,
    /// Serialises batches of this handle.
    writer: Mutex<()>,
    /// Readers share it; a batch takes it exclusively while it commits.
    gate: RwLock<()>,
    /// Held (locked) while the store is open.
    _lock: File,
}

/// What is at a path, links not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    /// A link, with the store path it points to.
    Link(String),
}

/// File contents to stage.
#[derive(Debug)]
struct Staged {
    /// The name of the staged file (within the batch).
    name: String,
    /// The store path it is renamed to (its checksum covers it).
    at: String,
    bytes: Bytes,
}

/// One change on the disk, as planned (and journaled).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    MkDir(String),
    /// Rename the staged file (a name in `.hb-tmp`) to the path.
    Put {
        at: String,
        staged: String,
    },
    /// A link at `at` to the store path `target`.
    Symlink {
        at: String,
        target: String,
    },
}

impl FsStore {
    /// Opens (creating it if needed) the store under `prefix`, flushing every batch to
    /// disk before `apply` returns.
    ///
    /// # Errors
    /// As [`FsStore::open_with`].
    pub fn open(prefix: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(prefix, Durability::Sync)
    }

    /// Opens (creating it if needed) the store under `prefix`; completes a batch a
    /// crash interrupted and removes leftover temporary files.
    ///
    /// # Errors
    /// The directory cannot be created or opened, another process has it open, or an
    /// interrupted batch cannot be completed; the error names the path.
    pub fn open_with(prefix: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let given = prefix.as_ref().to_path_buf();
        let name = format!("fs:{}", given.display());
        let io = |path: &Path, source| StoreError::Io {
            store: name.clone(),
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&given).map_err(|e| io(&given, e))?;
        let root = given.canonicalize().map_err(|e| io(&given, e))?;
        let lock_path = root.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Database {
                    store: name,
                    path: String::new(),
                    reason: format!(
                        "in use: {} is locked by another handle",
                        lock_path.display()
                    ),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
        }
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let store = FsStore {
            root,
            name,
            durability,
            checksums: AtomicBool::new(ATTRIBUTES_SUPPORTED),
            writer: Mutex::new(()),
            gate: RwLock::new(()),
            _lock: lock,
        };
        store.recover()?;
        Ok(store)
    }

    /// The directory the store lives in (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_err(&self, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            store: self.name.clone(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(&self, path: &str, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidPath {
            store: self.name.clone(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// The checked segments of an untrusted store path.
    fn check<'p>(&self, path: &'p str) -> Result<Vec<&'p str>, StoreError> {
        let segs: Vec<&str> = segments(path).collect();
        for seg in &segs {
            if let Some(reason) = segment_problem(seg) {
                return Err(self.invalid(path, reason));
            }
        }
        Ok(segs)
    }

    /// The file system path of a checked store path.
    fn disk(&self, path: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(segments(path));
        p
    }

    /// What is at `path` on the disk, links not followed.
    fn node_on_disk(&self, path: &str) -> Result<Option<Node>, StoreError> {
        let disk = self.disk(path);
        let meta = match fs::symlink_metadata(&disk) {
            Ok(m) => m,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(self.io_err(&disk, e)),
        };
        let ft = meta.file_type();
        Ok(Some(if ft.is_dir() {
            Node::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(&disk).map_err(|e| self.io_err(&disk, e))?;
            Node::Link(self.link_target(path, &target)?)
        } else {
            // Regular files (and anything else a user put there) are simple entries;
            // reading a non-file fails with an I/O error naming it.
            Node::File
        }))
    }

    /// The store path a link at `at` with file system target `target` points to.
    fn link_target(&self, at: &str, target: &Path) -> Result<String, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            store: self.name.clone(),
            path: at.to_owned(),
            reason: format!("link target `{}` {reason}", target.display()),
        };
        let (mut out, rest): (Vec<String>, &Path) = if target.is_absolute() {
            let rest = target
                .strip_prefix(&self.root)
                .map_err(|_| corrupt("is outside the store"))?;
            (Vec::new(), rest)
        } else {
            let mut dir: Vec<String> = segments(at).map(str::to_owned).collect();
            dir.pop();
            (dir, target)
        };
        for c in rest.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    if out.pop().is_none() {
                        return Err(corrupt("is outside the store"));
                    }
                }
                Component::Normal(s) => {
                    let s = s.to_str().ok_or_else(|| corrupt("is not UTF-8"))?;
                    if let Some(reason) = segment_problem(s) {
                        return Err(corrupt(&reason));
                    }
                    out.push(s.to_owned());
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(corrupt("is not a path inside the store"));
                }
            }
        }
        if out.is_empty() {
            return Err(corrupt("names the store's root"));
        }
        Ok(out.join("/"))
    }

    /// `path` with every link along it followed, looking entries up with `lookup`.
    fn resolve_with(
        &self,
        path: &str,
        lookup: &mut dyn FnMut(&str) -> Result<Option<Node>, StoreError>,
    ) -> Result<String, StoreError> {
        let segs = self.check(path)?;
        let mut acc = String::new();
        let mut hops = 0;
        for (i, seg) in segs.iter().enumerate() {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(seg);
            loop {
                match lookup(&acc)? {
                    Some(Node::Link(target)) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Err(StoreError::LinkLoop {
                                store: self.name.clone(),
                                path: path.to_owned(),
                            });
                        }
                        acc = target;
                    }
                    Some(_) => break,
                    None => {
                        // Nothing further down exists: the rest is taken as it is.
                        for rest in &segs[i + 1..] {
                            acc.push('/');
                            acc.push_str(rest);
                        }
                        return Ok(acc);
                    }
                }
            }
        }
        Ok(acc)
    }

    fn resolve_on_disk(&self, path: &str) -> Result<String, StoreError> {
        self.resolve_with(path, &mut |p| self.node_on_disk(p))
    }

    /// The kind of the entry at a resolved path.
    fn kind_at(&self, at: &str) -> Result<Option<EntryType>, StoreError> {
        if at.is_empty() {
            return Ok(Some(EntryType::Composite));
        }
        Ok(match self.node_on_disk(at)? {
            Some(Node::Dir) => Some(EntryType::Composite),
            Some(Node::File) => Some(EntryType::Simple),
            Some(Node::Link(_)) | None => None,
        })
    }

    /// Plans `ops` against the disk plus the batch's own earlier changes.
    fn plan(&self, ops: &[Op]) -> Result<(Vec<Action>, Vec<Staged>), StoreError> {
        let mut overlay: HashMap<String, Node> = HashMap::new();
        let mut actions = Vec::new();
        let mut contents = Vec::new();
        for op in ops {
            match op {
                Op::Write(path, bytes) => {
                    let at = self.place(path, &mut overlay, &mut actions)?;
                    if lookup(self, &overlay, &at)? == Some(Node::Dir) {
                        return Err(self.invalid(&at, "a group is there already"));
                    }
                    let staged = format!("{}", contents.len());
                    contents.push(Staged {
                        name: staged.clone(),
                        at: at.clone(),
                        bytes: bytes.clone(),
                    });
                    overlay.insert(at.clone(), Node::File);
                    actions.push(Action::Put { at, staged });
                }
                Op::Group(path) => {
                    let at = self.place(path, &mut overlay, &mut actions)?;
                    match lookup(self, &overlay, &at)? {
                        None => {
                            overlay.insert(at.clone(), Node::Dir);
                            actions.push(Action::MkDir(at));
                        }
                        Some(Node::Dir | Node::Link(_)) => {}
                        Some(Node::File) => {
                            return Err(self.invalid(&at, "a simple entry is there already"));
                        }
                    }
                }
                Op::Link { existing, new } => {
                    let target = self.check(existing)?.join("/");
                    if target.is_empty() {
                        return Err(self.invalid(existing, "a link cannot point to the root"));
                    }
                    if target == self.check(new)?.join("/") {
                        continue;
                    }
                    let at = self.place(new, &mut overlay, &mut actions)?;
                    if lookup(self, &overlay, &at)?.is_some() {
                        continue;
                    }
                    overlay.insert(at.clone(), Node::Link(target.clone()));
                    actions.push(Action::Symlink { at, target });
                }
            }
        }
        Ok((actions, contents))
    }

    /// Where to create `path`: its parent resolved, plus its last segment; missing
    /// parent groups are planned.
    fn place(
        &self,
        path: &str,
        overlay: &mut HashMap<String, Node>,
        actions: &mut Vec<Action>,
    ) -> Result<String, StoreError> {
        let segs = self.check(path)?;
        let Some((last, parent)) = segs.split_last() else {
            return Err(self.invalid(path, "an empty path"));
        };
        let parent = self.resolve_with(&parent.join("/"), &mut |p| lookup(self, overlay, p))?;
        let mut acc = String::new();
        for seg in segments(&parent) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(seg);
            match lookup(self, overlay, &acc)? {
                None => {
                    overlay.insert(acc.clone(), Node::Dir);
                    actions.push(Action::MkDir(acc.clone()));
                }
                Some(Node::Dir) => {}
                Some(_) => return Err(self.invalid(path, format!("`{acc}` is not a group"))),
            }
        }
        Ok(if parent.is_empty() {
            (*last).to_owned()
        } else {
            format!("{parent}/{last}")
        })
    }

    /// Writes the staged contents to temporary files, with their checksums (flushed);
    /// returns their names.
    fn stage(&self, batch: &str, contents: &[Staged]) -> Result<Vec<PathBuf>, StoreError> {
        let mut done = Vec::with_capacity(contents.len());
        for Staged { name, at, bytes } in contents {
            let path = self.root.join(TMP_DIR).join(format!("{batch}-{name}"));
            let result = (|| {
                let mut f = File::options().write(true).create_new(true).open(&path)?;
                f.write_all(bytes)?;
                self.put_checksum(&f, at, bytes)?;
                if self.durability == Durability::Sync {
                    f.sync_all()?;
                }
                Ok(())
            })();
            done.push(path.clone());
            if let Err(e) = result {
                remove_all(&done);
                return Err(self.full_or_io(&path, e));
            }
        }
        Ok(done)
    }

    fn full_or_io(&self, path: &Path, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
            StoreError::Full {
                store: self.name.clone(),
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        } else {
            self.io_err(path, e)
        }
    }

    /// Sets the checksum attribute of a staged file, unless the filesystem keeps none.
    fn put_checksum(&self, file: &File, at: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.checksums.load(Ordering::Relaxed) {
            return Ok(());
        }
        match set_attribute(file, &checksum(at, bytes)) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                self.no_checksums(&e);
                Ok(())
            }
            other => other,
        }
    }

    /// The checksum attribute of an opened file, if it has one.
    fn stored_checksum(&self, file: &File, disk: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.checksums.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match get_attribute(file) {
            Ok(sum) => Ok(sum),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                self.no_checksums(&e);
                Ok(None)
            }
            Err(e) => Err(self.io_err(disk, e)),
        }
    }

    /// Stops setting and reading checksum attributes: the filesystem has none.
    fn no_checksums(&self, e: &io::Error) {
        if self.checksums.swap(false, Ordering::Relaxed) {
            tracing::info!(
                store = %self.name,
                error = %e,
                "the filesystem keeps no extended attributes: files are stored and read without checksums (data/<hash> is still checked against its name)"
            );
        }
    }

    /// The bytes of the file at the resolved store path `at`, checked.
    fn read_file(&self, at: &str) -> Result<Option<Bytes>, StoreError> {
        let disk = self.disk(at);
        let mut file = match File::open(&disk) {
            Ok(f) => f,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(self.io_err(&disk, e)),
        };
        let stored = self.stored_checksum(&file, &disk)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| self.io_err(&disk, e))?;
        self.verify(at, &disk, stored.as_deref(), &bytes)?;
        Ok(Some(Bytes::from(bytes)))
    }

    /// Checks the bytes read from the file at `at` against its checksum attribute
    /// (`stored`) or, without one, a `data/<hash>` file against its name.
    fn verify(
        &self,
        at: &str,
        disk: &Path,
        stored: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            store: self.name.clone(),
            path: at.to_owned(),
            reason,
        };
        let Some(stored) = stored else {
            return if is_data_path(at) && hb_core::cache::data_path(bytes) != at {
                Err(corrupt(format!(
                    "the {} bytes of {} do not hash to their name (SHA-256)",
                    bytes.len(),
                    disk.display()
                )))
            } else {
                Ok(())
            };
        };
        let Ok(stored) = <[u8; SUM]>::try_from(stored) else {
            return Err(corrupt(format!(
                "the checksum attribute `{CHECKSUM_ATTR}` of {} has {} bytes, not {SUM}",
                disk.display(),
                stored.len()
            )));
        };
        if checksum(at, bytes) == stored {
            return Ok(());
        }
        // Reached through a link in the middle of the path (`m/k` with `m -> m2`), the
        // file was written, and its checksum made, at another path. Only on a mismatch,
        // so a read costs nothing more.
        if let Some(written_at) = self.store_path_of(disk)
            && written_at != at
            && checksum(&written_at, bytes) == stored
        {
            return Ok(());
        }
        Err(corrupt(format!(
            "the {} bytes of {} do not match their checksum (CRC-32 in `{CHECKSUM_ATTR}`)",
            bytes.len(),
            disk.display()
        )))
    }

    /// The store path of the file at `disk` with every link followed (by the OS), if
    /// it is inside the store.
    fn store_path_of(&self, disk: &Path) -> Option<String> {
        let real = fs::canonicalize(disk).ok()?;
        let rel = real.strip_prefix(&self.root).ok()?;
        let segs = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(segs.join("/"))
    }

    /// Carries out actions (idempotently); returns the directories that changed.
    fn execute(&self, batch: &str, actions: &[Action]) -> Result<BTreeSet<PathBuf>, StoreError> {
        let mut dirs = BTreeSet::new();
        for action in actions {
            match action {
                Action::MkDir(at) => {
                    let disk = self.disk(at);
                    match fs::create_dir(&disk) {
                        Ok(()) => {}
                        Err(e)
                            if e.kind() == io::ErrorKind::AlreadyExists
                                && fs::symlink_metadata(&disk).is_ok_and(|m| m.is_dir()) => {}
                        Err(e) => return Err(self.full_or_io(&disk, e)),
                    }
                    dirs.insert(parent_dir(&disk));
                }
                Action::Put { at, staged } => {
                    let from = self.root.join(TMP_DIR).join(format!("{batch}-{staged}"));
                    let to = self.disk(at);
                    match fs::rename(&from, &to) {
                        Ok(()) => {}
                        // Replaying a journal: moved into place before the crash.
                        Err(e) if e.kind() == io::ErrorKind::NotFound && !from.exists() => {}
                        Err(e) => return Err(self.io_err(&to, e)),
                    }
                    dirs.insert(parent_dir(&to));
                }
                Action::Symlink { at, target } => {
                    let disk = self.disk(at);
                    match symlink(&relative_target(at, target), &disk) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(self.full_or_io(&disk, e)),
                    }
                    dirs.insert(parent_dir(&disk));
                }
            }
        }
        Ok(dirs)
    }

    fn sync_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if self.durability == Durability::Relaxed {
            return Ok(());
        }
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| self.io_err(dir, e))
    }

    fn sync_dirs(&self, dirs: &BTreeSet<PathBuf>) -> Result<(), StoreError> {
        for d in dirs {
            self.sync_dir(d)?;
        }
        Ok(())
    }

    /// Writes the journal of a batch and puts it in place (flushed).
    fn write_journal(&self, batch: &str, actions: &[Action]) -> Result<(), StoreError> {
        let tmp = self.root.join(TMP_DIR).join(format!("{batch}-journal"));
        let bytes = encode_journal(batch, actions);
        let result = (|| {
            let mut f = File::options().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(self.full_or_io(&tmp, e));
        }
        let journal = self.root.join(JOURNAL);
        fs::rename(&tmp, &journal).map_err(|e| self.io_err(&journal, e))?;
        self.sync_dir(&self.root)
    }

    fn remove_journal(&self) -> Result<(), StoreError> {
        let journal = self.root.join(JOURNAL);
        match fs::remove_file(&journal) {
            Ok(()) => self.sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err(&journal, e)),
        }
    }

    /// Completes a journaled batch, then removes leftover temporary files.
    fn recover(&self) -> Result<(), StoreError> {
        let journal = self.root.join(JOURNAL);
        match fs::read(&journal) {
            Ok(bytes) => {
                let (batch, actions) =
                    decode_journal(&bytes).ok_or_else(|| StoreError::Corrupt {
                        store: self.name.clone(),
                        path: journal.display().to_string(),
                        reason: "the journal of an interrupted batch cannot be read".into(),
                    })?;
                for action in &actions {
                    match action {
                        Action::MkDir(at) | Action::Put { at, .. } => self.check(at)?,
                        Action::Symlink { at, target } => {
                            self.check(target)?;
                            self.check(at)?
                        }
                    };
                }
                tracing::info!(store = %self.name, changes = actions.len(), "completing an interrupted batch");
                let dirs = self.execute(&batch, &actions)?;
                self.sync_dirs(&dirs)?;
                self.remove_journal()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err(&journal, e)),
        }
        let tmp = self.root.join(TMP_DIR);
        let entries = fs::read_dir(&tmp).map_err(|e| self.io_err(&tmp, e))?;
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(())
    }
}

/// What is at `path`: the batch's own change if any, else the disk.
fn lookup(
    store: &FsStore,
    overlay: &HashMap<String, Node>,
    path: &str,
) -> Result<Option<Node>, StoreError> {
    match overlay.get(path) {
        Some(n) => Ok(Some(n.clone())),
        None => store.node_on_disk(path),
    }
}

/// Why a segment is not allowed, if it is not.
fn segment_problem(seg: &str) -> Option<String> {
    if seg == "." || seg == ".." {
        return Some(format!("`{seg}` segments are not allowed"));
    }
    if seg.contains('\0') {
        return Some("a segment contains NUL".into());
    }
    if seg.len() > MAX_SEGMENT {
        return Some(format!(
            "a segment of {} bytes; this store holds segments of at most {MAX_SEGMENT} bytes",
            seg.len()
        ));
    }
    if seg.starts_with(RESERVED) {
        return Some(format!("segments starting with `{RESERVED}` are reserved"));
    }
    let mut parts = Path::new(seg).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(s)), None) if s == seg => None,
        _ => Some(format!("`{seg}` is not a plain file name")),
    }
}

/// The checksum of a file at store path `at` with contents `bytes`: CRC-32 (IEEE) of the
/// path, a NUL byte (in no path), then the contents; big-endian.
fn checksum(at: &str, bytes: &[u8]) -> [u8; SUM] {
    let mut h = crc32fast::Hasher::new();
    h.update(at.as_bytes());
    h.update(&[0]);
    h.update(bytes);
    h.finalize().to_be_bytes()
}

/// Whether `at` names a content-addressed binary of the message cache, `data/<hash>`
/// (spec 05 §6.4).
fn is_data_path(at: &str) -> bool {
    at.strip_prefix("data/")
        .is_some_and(|name| name.len() == 43 && !name.contains('/'))
}

/// Whether this platform has extended attributes at all.
#[cfg(unix)]
const ATTRIBUTES_SUPPORTED: bool = xattr::SUPPORTED_PLATFORM;
#[cfg(not(unix))]
const ATTRIBUTES_SUPPORTED: bool = false;

/// The checksum attribute of an opened file (`fgetxattr`), if it has one.
#[cfg(unix)]
fn get_attribute(file: &File) -> io::Result<Option<Vec<u8>>> {
    xattr::FileExt::get_xattr(file, CHECKSUM_ATTR)
}

/// Sets the checksum attribute of an opened file (`fsetxattr`).
#[cfg(unix)]
fn set_attribute(file: &File, sum: &[u8]) -> io::Result<()> {
    xattr::FileExt::set_xattr(file, CHECKSUM_ATTR, sum)
}

#[cfg(not(unix))]
fn get_attribute(_file: &File) -> io::Result<Option<Vec<u8>>> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(not(unix))]
fn set_attribute(_file: &File, _sum: &[u8]) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Not there: missing, or a file where a directory was expected.
fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn parent_dir(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = fs::remove_file(p);
    }
}

/// The relative file system target of a link at store path `at` to store path `target`:
/// up to the prefix, then down (`x/y/k` to `data/h` is `../../data/h`).
fn relative_target(at: &str, target: &str) -> PathBuf {
    let mut p = PathBuf::new();
    for _ in 1..segments(at).count() {
        p.push("..");
    }
    p.extend(segments(target));
    p
}

#[cfg(unix)]
fn symlink(target: &Path, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _at: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the filesystem store needs symbolic links (Unix)",
    ))
}

/// A unique name for a batch's temporary files.
fn batch_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The journal: magic, the batch name, then per action a tag and its strings.
fn encode_journal(batch: &str, actions: &[Action]) -> Vec<u8> {
    let mut out = JOURNAL_MAGIC.to_vec();
    put_str(&mut out, batch);
    for a in actions {
        match a {
            Action::MkDir(at) => {
                out.push(1);
                put_str(&mut out, at);
            }
            Action::Put { at, staged } => {
                out.push(2);
                put_str(&mut out, at);
                put_str(&mut out, staged);
            }
            Action::Symlink { at, target } => {
                out.push(3);
                put_str(&mut out, at);
                put_str(&mut out, target);
            }
        }
    }
    out.push(0);
    out
}

fn decode_journal(bytes: &[u8]) -> Option<(String, Vec<Action>)> {
    fn take_str(rest: &mut &[u8]) -> Option<String> {
        let (len, tail) = rest.split_first_chunk::<8>()?;
        let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (s, tail) = tail.split_at(len);
        *rest = tail;
        String::from_utf8(s.to_vec()).ok()
    }
    let mut rest = bytes.strip_prefix(JOURNAL_MAGIC.as_slice())?;
    let batch = take_str(&mut rest)?;
    if batch.contains('/') || batch.contains("..") {
        return None;
    }
    let mut actions = Vec::new();
    loop {
        let (&tag, tail) = rest.split_first()?;
        rest = tail;
        actions.push(match tag {
            // The end: a journal is complete or not used at all.
            0 => return rest.is_empty().then_some((batch, actions)),
            1 => Action::MkDir(take_str(&mut rest)?),
            2 => {
                let at = take_str(&mut rest)?;
                let staged = take_str(&mut rest)?;
                if !staged.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Action::Put { at, staged }
            }
            3 => Action::Symlink {
                at: take_str(&mut rest)?,
                target: take_str(&mut rest)?,
            },
            _ => return None,
        });
    }
}

impl Store for FsStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        let _r = self.gate.read();
        let at = self.resolve_on_disk(path)?;
        if self.kind_at(&at)? != Some(EntryType::Simple) {
            return Ok(None);
        }
        self.read_file(&at)
    }

    fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError> {
        let _r = self.gate.read();
        let at = self.resolve_on_disk(path)?;
        self.kind_at(&at)
    }

    fn list(&self, path: &str) -> Result<Option<Vec<String>>, StoreError> {
        let _r = self.gate.read();
        let at = self.resolve_on_disk(path)?;
        if self.kind_at(&at)? != Some(EntryType::Composite) {
            return Ok(None);
        }
        let disk = self.disk(&at);
        let entries = match fs::read_dir(&disk) {
            Ok(e) => e,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(self.io_err(&disk, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_err(&disk, e))?;
            // Names this store cannot have written (not UTF-8, reserved) are not entries.
            if let Some(name) = entry.file_name().to_str()
                && segment_problem(name).is_none()
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(Some(out))
    }

    fn resolve(&self, path: &str) -> Result<String, StoreError> {
        let _r = self.gate.read();
        self.resolve_on_disk(path)
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let _w = self.writer.lock();
        let (actions, contents) = self.plan(ops)?;
        if actions.is_empty() {
            return Ok(());
        }
        let batch = batch_name();
        let staged = self.stage(&batch, &contents)?;
        let journaled = actions.len() > 1 && self.durability == Durability::Sync;
        if journaled {
            // The staged files are durable before the journal names them.
            let ready = self
                .sync_dir(&self.root.join(TMP_DIR))
                .and_then(|()| self.write_journal(&batch, &actions));
            if let Err(e) = ready {
                remove_all(&staged);
                return Err(e);
            }
        }
        let committed = {
            let _g = self.gate.write();
            self.execute(&batch, &actions)
        };
        let dirs = match committed {
            Ok(dirs) => dirs,
            Err(e) if !journaled => {
                // One change, not made: nothing of the batch is there.
                remove_all(&staged);
                return Err(e);
            }
            Err(e) => {
                tracing::error!(store = %self.name, error = %e, journaled, "a batch failed half-way; it is completed when the store is opened again");
                return Err(e);
            }
        };
        self.sync_dirs(&dirs)?;
        if journaled {
            self.remove_journal()?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_and_garbage() {
        let actions = vec![
            Action::MkDir("a".into()),
            Action::Put {
                at: "a/b".into(),
                staged: "0".into(),
            },
            Action::Symlink {
                at: "c".into(),
                target: "a/b".into(),
            },
        ];
        let bytes = encode_journal("1-2-3", &actions);
        assert_eq!(decode_journal(&bytes), Some(("1-2-3".to_owned(), actions)));
        for cut in 0..bytes.len() {
            assert_eq!(decode_journal(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_journal(b"garbage"), None);
    }

    #[test]
    fn an_interrupted_batch_is_completed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let ops = [
            Op::Write("m/k".into(), Bytes::from_static(b"v")),
            Op::Group("m2".into()),
            Op::Link {
                existing: "m/k".into(),
                new: "alias".into(),
            },
        ];
        {
            let s = FsStore::open(dir.path()).unwrap();
            let (actions, contents) = s.plan(&ops).unwrap();
            let batch = batch_name();
            s.stage(&batch, &contents).unwrap();
            s.write_journal(&batch, &actions).unwrap();
            // The "crash": only the first changes reached the disk.
            s.execute(&batch, &actions[..2]).unwrap();
            assert_eq!(s.read("alias").unwrap(), None);
        }
        let s = FsStore::open(dir.path()).unwrap();
        assert_eq!(s.read("alias").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.kind("m2").unwrap(), Some(EntryType::Composite));
        assert!(!s.root().join(JOURNAL).exists());
        assert_eq!(fs::read_dir(s.root().join(TMP_DIR)).unwrap().count(), 0);
        assert_eq!(s.list("").unwrap().unwrap(), ["alias", "m", "m2"]);
    }

    #[test]
    fn a_batch_staged_but_not_journaled_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FsStore::open(dir.path()).unwrap();
            let (_, contents) = s
                .plan(&[Op::Write("a".into(), Bytes::from_static(b"1"))])
                .unwrap();
            s.stage(&batch_name(), &contents).unwrap();
        }
        let s = FsStore::open(dir.path()).unwrap();
        assert_eq!(s.list("").unwrap().unwrap(), Vec::<String>::new());
        assert_eq!(fs::read_dir(s.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn writes_replace_files_whole_and_never_replace_groups() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        s.write("f", Bytes::from_static(b"old")).unwrap();
        s.write("f", Bytes::from_static(b"new")).unwrap();
        assert_eq!(s.read("f").unwrap().as_deref(), Some(&b"new"[..]));
        s.make_group("g").unwrap();
        let e = s.write("g", Bytes::from_static(b"x")).unwrap_err();
        assert!(e.to_string().contains("`g`"), "{e}");
        assert_eq!(s.kind("g").unwrap(), Some(EntryType::Composite));
    }

    /// Flips the lowest bit of the byte at `offset` of a file, in place (the file keeps
    /// its inode, so its attributes).
    fn flip(path: &Path, offset: u64) {
        use std::io::{Seek as _, SeekFrom};
        let mut f = File::options().read(true).write(true).open(path).unwrap();
        let mut b = [0u8];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[0] ^= 1;
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&b).unwrap();
    }

    /// Replaces a file with a new one holding `bytes` and no attributes.
    fn rewrite_by_hand(path: &Path, bytes: &[u8]) {
        fs::remove_file(path).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// Whether the store keeps checksum attributes (call after a write); says so when
    /// it does not, and the checks that need them are skipped.
    fn keeps_checksums(s: &FsStore) -> bool {
        let on = s.checksums.load(Ordering::Relaxed);
        if !on {
            eprintln!(
                "note: no user extended attributes under {}: checksum assertions skipped",
                s.root().display()
            );
        }
        on
    }

    #[track_caller]
    fn assert_corrupt_at(r: Result<Option<Bytes>, StoreError>, want: &str) {
        match r {
            Err(StoreError::Corrupt { ref path, .. }) if path == want => {
                let msg = r.unwrap_err().to_string();
                assert!(msg.contains(want), "{msg}");
            }
            other => panic!("not a corrupt entry at `{want}`: {other:?}"),
        }
    }

    #[test]
    fn a_flipped_byte_is_corrupt_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        let value = b"a value of some length";
        s.write("m/k", Bytes::from_static(value)).unwrap();
        s.make_link("m/k", "alias").unwrap();
        let file = s.root().join("m/k");
        // The file is the value, nothing more.
        assert_eq!(fs::read(&file).unwrap(), value);
        assert_eq!(s.read("m/k").unwrap().as_deref(), Some(&value[..]));
        if !keeps_checksums(&s) {
            return;
        }
        let attr = get_attribute(&File::open(&file).unwrap()).unwrap().unwrap();
        assert_eq!(attr, checksum("m/k", value));
        for offset in [0, 7, value.len() as u64 - 1] {
            flip(&file, offset);
            assert_corrupt_at(s.read("m/k"), "m/k");
            // Through a link, the error names the file that is damaged.
            assert_corrupt_at(s.read("alias"), "m/k");
            flip(&file, offset);
            assert_eq!(s.read("alias").unwrap().as_deref(), Some(&value[..]));
        }
        // A byte more, or one less, is caught as well.
        fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"!")
            .unwrap();
        assert_corrupt_at(s.read("m/k"), "m/k");
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(3)
            .unwrap();
        assert_corrupt_at(s.read("m/k"), "m/k");
        // The tree is still usable around the damaged file.
        assert_eq!(s.kind("m/k").unwrap(), Some(EntryType::Simple));
        s.write("m/k", Bytes::from_static(b"fixed")).unwrap();
        assert_eq!(s.read("alias").unwrap().as_deref(), Some(&b"fixed"[..]));
    }

    #[test]
    fn an_altered_data_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        let value = vec![7u8; 5000];
        let path = hb_core::cache::data_path(&value);
        s.write(&path, Bytes::from(value.clone())).unwrap();
        s.make_link(&path, "msg/key").unwrap();
        let file = s.root().join(&path);
        assert_eq!(s.read("msg/key").unwrap().as_deref(), Some(&value[..]));
        if keeps_checksums(&s) {
            // Checked by its CRC.
            flip(&file, 4321);
            assert_corrupt_at(s.read(&path), &path);
            assert_corrupt_at(s.read("msg/key"), &path);
        }
        // Without the attribute (say, copied in by hand), by its name.
        let mut altered = value.clone();
        altered[4321] ^= 1;
        rewrite_by_hand(&file, &altered);
        assert_corrupt_at(s.read(&path), &path);
        let e = s.read("msg/key").unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
        rewrite_by_hand(&file, &value);
        assert_eq!(s.read("msg/key").unwrap().as_deref(), Some(&value[..]));
        // Only `data/<43 characters>` is content-addressed.
        s.write("data/short", Bytes::from_static(b"x")).unwrap();
        rewrite_by_hand(&s.root().join("data/short"), b"y");
        assert_eq!(s.read("data/short").unwrap().as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn files_without_the_attribute_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        fs::create_dir(s.root().join("by-hand")).unwrap();
        fs::write(s.root().join("by-hand/v"), b"typed in").unwrap();
        assert_eq!(
            s.read("by-hand/v").unwrap().as_deref(),
            Some(&b"typed in"[..])
        );
        // A store file whose attribute was lost is taken as it is, changes and all.
        s.write("w", Bytes::from_static(b"written")).unwrap();
        rewrite_by_hand(&s.root().join("w"), b"edited");
        assert_eq!(s.read("w").unwrap().as_deref(), Some(&b"edited"[..]));
        // An empty file, with and without the attribute.
        s.write("e", Bytes::new()).unwrap();
        assert_eq!(s.read("e").unwrap().as_deref(), Some(&b""[..]));
        fs::write(s.root().join("e2"), b"").unwrap();
        assert_eq!(s.read("e2").unwrap().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_malformed_attribute_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        s.write("k", Bytes::from_static(b"v")).unwrap();
        if !keeps_checksums(&s) {
            return;
        }
        let file = File::open(s.root().join("k")).unwrap();
        for bad in [&b""[..], b"abc", b"abcde", &[0u8; 300]] {
            set_attribute(&file, bad).unwrap();
            assert_corrupt_at(s.read("k"), "k");
        }
    }

    #[test]
    fn a_batch_reads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..1_000_003u32).map(|n| (n * 31 % 251) as u8).collect();
        let data = hb_core::cache::data_path(&big);
        let values: Vec<(String, Bytes)> = vec![
            (data.clone(), Bytes::from(big)),
            ("m/a".into(), Bytes::from_static(b"1")),
            ("m/b".into(), Bytes::new()),
            ("m/n/deep".into(), Bytes::from_static(b"\x00\xff binary")),
            ("top".into(), Bytes::from_static(b"top")),
            // Overwritten in the same batch.
            ("m/a".into(), Bytes::from_static(b"2")),
        ];
        let mut ops: Vec<Op> = values
            .iter()
            .map(|(p, v)| Op::Write(p.clone(), v.clone()))
            .collect();
        ops.push(Op::Link {
            existing: data.clone(),
            new: "m/big".into(),
        });
        ops.push(Op::Link {
            existing: "m".into(),
            new: "alias".into(),
        });
        let expect = |s: &FsStore| {
            for (p, v) in &values[1..5] {
                let want = if p == "m/a" { &b"2"[..] } else { &v[..] };
                assert_eq!(s.read(p).unwrap().as_deref(), Some(want), "{p}");
                assert_eq!(fs::read(s.root().join(p)).unwrap(), want, "{p}");
            }
            assert_eq!(s.read(&data).unwrap(), Some(values[0].1.clone()));
            assert_eq!(s.read("alias/big").unwrap(), Some(values[0].1.clone()));
            assert_eq!(s.read("alias/n/deep").unwrap(), Some(values[3].1.clone()));
        };
        {
            let s = FsStore::open(dir.path()).unwrap();
            s.apply(&ops).unwrap();
            expect(&s);
            if keeps_checksums(&s) {
                for p in [&data[..], "m/a", "m/b", "m/n/deep", "top"] {
                    let f = File::open(s.root().join(p)).unwrap();
                    assert_eq!(get_attribute(&f).unwrap().map(|a| a.len()), Some(SUM));
                }
            }
        }
        let s = FsStore::open_with(dir.path(), Durability::Relaxed).unwrap();
        expect(&s);
        s.apply(&ops).unwrap();
        expect(&s);
    }

    #[test]
    fn a_file_behind_a_link_inside_its_path_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        s.write("m2/k", Bytes::from_static(b"v")).unwrap();
        s.make_link("m2", "m").unwrap();
        // `alias -> m/k`: resolved as `m/k`, which the OS follows to `m2/k`.
        s.make_link("m/k", "alias").unwrap();
        assert_eq!(s.resolve("alias").unwrap(), "m/k");
        assert_eq!(s.read("alias").unwrap().as_deref(), Some(&b"v"[..]));
        if keeps_checksums(&s) {
            flip(&s.root().join("m2/k"), 0);
            assert_corrupt_at(s.read("alias"), "m/k");
            assert_corrupt_at(s.read("m2/k"), "m2/k");
        }
    }

    #[test]
    fn without_attributes_only_data_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        // What a filesystem refusing attributes (ENOTSUP) leads to.
        s.no_checksums(&io::Error::from(io::ErrorKind::Unsupported));
        s.no_checksums(&io::Error::from(io::ErrorKind::Unsupported));
        assert!(!s.checksums.load(Ordering::Relaxed));
        let data = hb_core::cache::data_path(b"bin");
        s.write(&data, Bytes::from_static(b"bin")).unwrap();
        s.write("k", Bytes::from_static(b"value")).unwrap();
        for p in [&data[..], "k"] {
            let f = File::open(s.root().join(p)).unwrap();
            if let Ok(attr) = get_attribute(&f) {
                assert_eq!(attr, None, "{p}");
            }
        }
        flip(&s.root().join("k"), 0);
        assert_eq!(s.read("k").unwrap().as_deref(), Some(&b"walue"[..]));
        flip(&s.root().join(&data), 0);
        assert_corrupt_at(s.read(&data), &data);
    }

    #[test]
    fn data_paths() {
        assert!(is_data_path(&hb_core::cache::data_path(b"x")));
        assert!(!is_data_path("data/x"));
        assert!(!is_data_path("data"));
        assert!(!is_data_path(
            "m/data/0123456789012345678901234567890123456789012"
        ));
        assert!(!is_data_path(
            "data/0123456789012345678901234567890123456789012/x"
        ));
        // The path is part of the checksum, and cannot run into the contents.
        assert_ne!(checksum("ab", b"c"), checksum("a", b"bc"));
        assert_ne!(checksum("a", b"v"), checksum("b", b"v"));
    }

    #[test]
    fn relative_targets() {
        assert_eq!(relative_target("c", "a/b"), PathBuf::from("a/b"));
        assert_eq!(
            relative_target("x/y/k", "data/h"),
            PathBuf::from("../../data/h")
        );
    }
}
