//! Bad input and bad state: what the LMDB store and the message cache do when what is
//! asked for is not there, when the database file is corrupt, when the store is full,
//! and when the data directory cannot be written.
//!
//! * A missing path or ID is `Ok(None)` (not an error) at every level.
//! * A corrupt `data.mdb` (bytes flipped at many positions of a closed store): opening
//!   and reading give errors, `None` or the data — never a panic, and never a value
//!   other than the one written. Each corrupt copy is read in a child process (this
//!   test binary run again) so that a crash inside LMDB is seen as a crash. Every
//!   entry carries a checksum of its key and value (`hb_store::kv`): a flip inside a
//!   stored value, a packed copy, a group or a link entry is an error naming its path
//!   (a corrupt packed copy is read around, through the message's group); see
//!   [`corrupt_files_give_errors_or_none_never_a_panic`] for what is counted.
//! * A full store (a small map): `StoreError::Full` naming the path, and the store
//!   still reads everything written before, and takes writes again once reopened with
//!   a larger map.
//! * A read-only data directory: a clear error naming the directory. Tests run as root
//!   here, which permission bits do not stop: the check then runs as `nobody` through
//!   `setpriv` in a child process, or is skipped with a message saying so.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gen, Rng};
use hb_core::id::Id;
use hb_core::{Message, Value};
use hb_store::store::Packed;
use hb_store::{
    CacheError, Durability, EntryType, LmdbStore, MemoryStore, MessageCache, Store, StoreError,
};

/// Messages of the corrupt-file check (generated again by the child from this seed).
const CORRUPT_SEED: u64 = 0xBAD_5EED;
const CORRUPT_MESSAGES: usize = 60;
const CORRUPT_DIR: &str = "HB_BAD_STATE_CORRUPT_DIR";
const READONLY_DIR: &str = "HB_BAD_STATE_READONLY_DIR";

// ---------------------------------------------------------------------------------
// Missing
// ---------------------------------------------------------------------------------

fn missing_is_none(store: Arc<dyn Store>) {
    let name = store.name().to_owned();
    store.write("a/b", Bytes::from_static(b"v")).unwrap();
    assert_eq!(store.read("missing").unwrap(), None, "{name}");
    assert_eq!(store.read("a/missing").unwrap(), None, "{name}");
    assert_eq!(store.read("a/b/below-a-file").unwrap(), None, "{name}");
    assert_eq!(
        store.read("a").unwrap(),
        None,
        "{name}: a group is not data"
    );
    assert_eq!(store.kind("missing").unwrap(), None, "{name}");
    assert_eq!(store.list("missing").unwrap(), None, "{name}");
    assert_eq!(
        store.list("a/b").unwrap(),
        None,
        "{name}: a file is not a group"
    );
    assert_eq!(store.resolve("missing/x").unwrap(), "missing/x", "{name}");
    let cache = MessageCache::new(store);
    let id = Id::sha256(b"never written").to_human();
    assert_eq!(cache.read(&id).unwrap(), None, "{name}: a missing ID");
    assert_eq!(
        cache.read(&format!("data/{id}")).unwrap(),
        None,
        "{name}: a missing binary"
    );
    assert_eq!(cache.read(&format!("{id}/key")).unwrap(), None, "{name}");
    assert_eq!(cache.read("not an id").unwrap(), None, "{name}");
    let msg = Message::new().with("k", "v");
    let u = cache.write(&msg).unwrap().to_human();
    assert_eq!(cache.read(&format!("{u}/missing")).unwrap(), None, "{name}");
    assert_eq!(
        cache.read(&format!("{u}/k")).unwrap(),
        Some(Value::text("v")),
        "{name}"
    );
    let id = Id::sha256(b"no such result");
    assert_eq!(hb_core::Cache::read_message(&cache, &id), None, "{name}");
    assert_eq!(
        hb_core::Cache::read_result(&cache, &format!("{}/{}", id.to_human(), id.to_human())),
        None,
        "{name}"
    );
}

#[test]
fn missing_keys_and_ids_are_none() {
    missing_is_none(Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().unwrap();
    missing_is_none(Arc::new(
        LmdbStore::open(dir.path(), Durability::Sync).unwrap(),
    ));
}

// ---------------------------------------------------------------------------------
// Corrupt database file
// ---------------------------------------------------------------------------------

/// The messages of the corrupt-file check.
fn corrupt_messages() -> Vec<Message> {
    let mut g = Gen::new(CORRUPT_SEED);
    (0..CORRUPT_MESSAGES)
        .map(|i| {
            let mut m = g.top_message(2, 8);
            if i % 10 == 0 {
                // Some values larger than a page (LMDB overflow pages).
                m.insert("big", g.big_binary(20_000));
            }
            m
        })
        .collect()
}

/// What a reader of a corrupt store saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    open_failed: bool,
    /// Messages read back identical.
    same: usize,
    /// Messages read back different (a value changed, silently).
    different: usize,
    /// Reads that gave an error.
    errors: usize,
    /// Reads that gave nothing.
    none: usize,
    /// Packed copies whose check failed (the message is then read through its group).
    copy_errors: usize,
    /// Every path the reader reached (listing from the root, links followed a few
    /// levels deep, and `copy:<ID>` for each message's packed copy): what it read
    /// there — `V<hash>` bytes read, `E` an error, `N` nothing.
    values: BTreeMap<String, String>,
}

/// How deep the child's walk over every path goes.
const WALK_DEPTH: usize = 4;

/// Reads everything below `path` into `out` ([`Seen::values`]).
fn walk(store: &dyn Store, path: &str, depth: usize, out: &mut BTreeMap<String, String>) {
    let names = match store.list(path) {
        Ok(Some(names)) => names,
        Ok(None) => return,
        Err(_) => {
            out.insert(format!("list:{path}"), "E".into());
            return;
        }
    };
    for name in names {
        let at = if path.is_empty() {
            name
        } else {
            format!("{path}/{name}")
        };
        let seen = match store.kind(&at) {
            Ok(Some(EntryType::Composite)) => {
                if depth < WALK_DEPTH {
                    walk(store, &at, depth + 1, out);
                }
                continue;
            }
            Ok(Some(EntryType::Simple)) => match store.read(&at) {
                Ok(Some(b)) => format!("V{}", Id::sha256(&b).to_human()),
                Ok(None) => "N".into(),
                Err(_) => "E".into(),
            },
            Ok(None) => "N".into(),
            Err(_) => "E".into(),
        };
        out.insert(at, seen);
    }
}

/// The child: opens the store in `dir` and reads everything; prints a `SEEN` line and
/// one `VALUE <path> <what>` line per path it reached.
#[test]
fn child_corrupt_reader() {
    let Some(dir) = std::env::var_os(CORRUPT_DIR) else {
        return;
    };
    let mut seen = Seen::default();
    match LmdbStore::open(Path::new(&dir), Durability::Relaxed) {
        Err(_) => seen.open_failed = true,
        Ok(store) => {
            let store = Arc::new(store);
            let cache = MessageCache::new(store.clone());
            for msg in corrupt_messages() {
                let id = hb_core::httpsig::message_id(&msg).unwrap().to_human();
                match cache.read(&id) {
                    Ok(Some(Value::Message(m))) if m == msg => seen.same += 1,
                    Ok(Some(_)) => seen.different += 1,
                    Ok(None) => seen.none += 1,
                    Err(_) => seen.errors += 1,
                }
                let copy = match store.read_packed(&id, &|_| None) {
                    Ok(Some(Packed::Copy(c))) => format!("V{}", Id::sha256(&c).to_human()),
                    Ok(Some(Packed::Tree(_))) => "T".into(),
                    Ok(None) => "N".into(),
                    Err(StoreError::Corrupt { path, .. }) if path == id => {
                        seen.copy_errors += 1;
                        "E".into()
                    }
                    Err(_) => "E".into(),
                };
                seen.values.insert(format!("copy:{id}"), copy);
            }
            // Everything else that can be asked: listings, kinds, every value.
            walk(store.as_ref(), "", 0, &mut seen.values);
            if let Ok(Some(top)) = store.list("") {
                for name in top {
                    let _ = cache.read(&name);
                }
            }
            // A write to a corrupt store fails or succeeds; it must not panic either.
            let _ = cache.write(&Message::new().with("after", "corruption"));
        }
    }
    for (path, what) in &seen.values {
        println!("VALUE {path} {what}");
    }
    let Seen {
        open_failed,
        same,
        different,
        errors,
        none,
        copy_errors,
        ..
    } = seen;
    println!(
        "SEEN open_failed={open_failed} same={same} different={different} errors={errors} \
         none={none} copy_errors={copy_errors}"
    );
}

/// How long a reader of a corrupt copy may take before it counts as hung.
const READER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a reader of a corrupt copy gave no answer.
#[derive(Debug)]
enum NoAnswer {
    /// Killed by a signal (a crash inside LMDB).
    Crashed(i32),
    /// Still running after [`READER_TIMEOUT`] (killed then).
    Hung,
}

/// Reads the corrupt copy in `dir` in a child process.
fn read_corrupt_copy(dir: &Path) -> Result<Seen, NoAnswer> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_corrupt_reader",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CORRUPT_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = r.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + READER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err(NoAnswer::Hung);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    if let Some(signal) = status.signal() {
        return Err(NoAnswer::Crashed(signal));
    }
    assert!(
        status.success(),
        "the reader of a corrupt store failed ({status}): a panic?\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SEEN ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no SEEN line:\n{stdout}\n{stderr}"));
    let mut seen = Seen::default();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=').unwrap();
        let n = || v.parse::<usize>().unwrap();
        match k {
            "open_failed" => seen.open_failed = v == "true",
            "same" => seen.same = n(),
            "different" => seen.different = n(),
            "errors" => seen.errors = n(),
            "none" => seen.none = n(),
            "copy_errors" => seen.copy_errors = n(),
            other => panic!("unknown field {other}"),
        }
    }
    for l in stdout.lines() {
        if let Some(rest) = l.strip_prefix("VALUE ")
            && let Some((path, what)) = rest.rsplit_once(' ')
        {
            seen.values.insert(path.to_owned(), what.to_owned());
        }
    }
    Ok(seen)
}

#[test]
fn corrupt_files_give_errors_or_none_never_a_panic() {
    let original = tempfile::tempdir().unwrap();
    {
        let cache = MessageCache::new(Arc::new(
            LmdbStore::open(original.path(), Durability::Sync).unwrap(),
        ));
        for msg in corrupt_messages() {
            cache.write(&msg).unwrap();
        }
    }
    // (Before the clean read: its reader writes a message after reading.)
    let data = std::fs::read(original.path().join("data.mdb")).unwrap();
    let clean = read_corrupt_copy(original.path()).unwrap();
    assert_eq!(
        (
            clean.same,
            clean.different,
            clean.errors,
            clean.none,
            clean.copy_errors
        ),
        (CORRUPT_MESSAGES, 0, 0, 0, 0),
        "the intact store"
    );
    assert!(!clean.open_failed);
    let unread: Vec<_> = clean
        .values
        .iter()
        .filter(|(_, w)| !w.starts_with(['V', 'T']))
        .collect();
    assert!(unread.is_empty(), "the intact store: {unread:?}");
    let copies = clean
        .values
        .iter()
        .filter(|(p, w)| p.starts_with("copy:") && w.starts_with('V'))
        .count();
    let mut rng = Rng::new(CORRUPT_SEED);
    // Positions: the two meta pages (the first 8 KiB), then anywhere in the file.
    let mut positions: Vec<usize> = (0..24).map(|_| rng.below(8192.min(data.len()))).collect();
    positions.extend((0..96).map(|_| rng.below(data.len())));
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut crashes, mut hangs, mut silent) = (Vec::new(), Vec::new(), Vec::new());
    // Over all copies: values (and packed copies) reported corrupt, and gone without
    // an error.
    let (mut caught, mut gone, mut copies_caught) = (0usize, 0usize, 0usize);
    let mut gone_without_error = Vec::new();
    for (n, &at) in positions.iter().enumerate() {
        let copy = tempfile::tempdir().unwrap();
        let mut bytes = data.clone();
        let len = rng.between(1, 8).min(bytes.len() - at);
        for b in &mut bytes[at..at + len] {
            *b ^= u8::try_from(rng.between(1, 255)).unwrap();
        }
        std::fs::write(copy.path().join("data.mdb"), &bytes).unwrap();
        let flip = format!("flip {n} at byte {at} (+{len})");
        match read_corrupt_copy(copy.path()) {
            Err(NoAnswer::Crashed(signal)) => {
                crashes.push(format!("{flip}: killed by signal {signal}"));
                *outcomes.entry("crash").or_default() += 1;
            }
            Err(NoAnswer::Hung) => {
                hangs.push(flip);
                *outcomes.entry("hung").or_default() += 1;
            }
            Ok(seen) => {
                // A value read without an error must be the one written.
                let changed: Vec<String> = seen
                    .values
                    .iter()
                    .filter(|(path, what)| {
                        what.starts_with('V') && clean.values.get(*path) != Some(*what)
                    })
                    .map(|(path, _)| path.clone())
                    .collect();
                // (Also at paths the clean store has not: a name damaged in a listing.)
                let errors = seen.values.values().filter(|what| *what == "E").count();
                let missing = clean
                    .values
                    .keys()
                    .filter(|path| seen.values.get(*path).is_none_or(|w| w == "N"))
                    .count();
                caught += errors;
                copies_caught += seen.copy_errors;
                gone += missing;
                if seen.different > 0 || !changed.is_empty() {
                    let unread: Vec<_> = clean
                        .values
                        .keys()
                        .filter(|p| seen.values.get(*p).is_none_or(|w| w == "N" || w == "E"))
                        .take(8)
                        .collect();
                    silent.push(format!(
                        "{flip}: {} messages read back different; values changed: \
                         {changed:?}; paths gone or failing: {unread:?}",
                        seen.different
                    ));
                }
                let outcome = if seen.open_failed {
                    "open failed"
                } else if seen.different > 0 || !changed.is_empty() {
                    "a value changed silently"
                } else if seen.errors + errors + seen.copy_errors > 0 {
                    "corruption reported"
                } else if seen.none + missing > 0 {
                    let some: Vec<_> = clean
                        .values
                        .keys()
                        .filter(|p| seen.values.get(*p).is_none_or(|w| w == "N"))
                        .take(3)
                        .collect();
                    gone_without_error.push(format!(
                        "{flip}: {} messages and {missing} paths read nothing, e.g. {some:?}",
                        seen.none
                    ));
                    "entries gone, no error"
                } else {
                    "no effect seen"
                };
                *outcomes.entry(outcome).or_default() += 1;
            }
        }
    }
    eprintln!(
        "{} corrupt copies of a {} KiB data.mdb ({} paths and {copies} packed copies read \
         in each): {outcomes:?}; over all copies, {caught} reads of a path reported \
         corruption ({copies_caught} of a packed copy, read around), {gone} paths read \
         nothing without an error, {} read a changed value",
        positions.len(),
        data.len() / 1024,
        clean.values.len(),
        silent.len()
    );
    for c in &crashes {
        eprintln!("  LMDB crashed reading a corrupt file: {c}");
    }
    for g in &gone_without_error {
        eprintln!("  entries gone without an error: {g}");
    }
    // LMDB's own structures (page headers, branch pages, meta pages) are not ours to
    // check: a crash inside LMDB on a corrupt file is possible, and documented
    // (docs/PERFORMANCE.md, "Store"); a panic of ours is not (checked in
    // `read_corrupt_copy`), nor a reader that never returns, nor a value other than
    // the one written.
    assert!(
        hangs.is_empty(),
        "readers of corrupt copies hung (killed after {READER_TIMEOUT:?}): {hangs:?}"
    );
    assert!(
        silent.is_empty(),
        "values changed without an error: {silent:#?}"
    );
    assert!(caught > 0, "no flip was caught: the checks did not run?");
}

// ---------------------------------------------------------------------------------
// Full store
// ---------------------------------------------------------------------------------

#[test]
fn a_full_store_says_so_with_the_path_and_keeps_serving_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let map = 1 << 20; // 1 MiB
    let mut g = Gen::new(7);
    let mut written: Vec<(String, Message)> = Vec::new();
    let full = {
        let store = Arc::new(LmdbStore::open_with(dir.path(), Durability::Sync, map).unwrap());
        let cache = MessageCache::new(store.clone());
        let full = loop {
            let mut msg = g.top_message(1, 6);
            msg.insert("blob", g.big_binary(10_000));
            match cache.write(&msg) {
                Ok(id) => written.push((id.to_human(), msg)),
                Err(e) => break e,
            }
            assert!(written.len() < 1000, "a 1 MiB store never filled up");
        };
        let CacheError::Store(StoreError::Full {
            store: name, path, ..
        }) = &full
        else {
            panic!("not a full-store error: {full}");
        };
        assert!(name.contains(&dir.path().display().to_string()), "{full}");
        assert!(!path.is_empty(), "the path being written is named: {full}");
        assert!(full.to_string().contains("no space left"), "{full}");
        // Nothing of the failed batch, everything written before.
        let reader = MessageCache::new(store.clone());
        for (id, msg) in &written {
            assert_eq!(
                reader.read(id).unwrap(),
                Some(Value::Message(msg.clone())),
                "{id} after the store filled up"
            );
        }
        // A raw write fails the same way, and a read-only look still works.
        let e = store
            .write("x/big", Bytes::from(vec![7u8; 2 << 20]))
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Full { path, .. } if path.starts_with("x/big")),
            "{e}"
        );
        assert_eq!(store.kind("data").unwrap(), Some(EntryType::Composite));
        full
    };
    eprintln!(
        "{} messages fitted in a 1 MiB map; then: {full}",
        written.len()
    );
    // Reopened with a larger map, it holds everything and takes writes again.
    let store = Arc::new(LmdbStore::open_with(dir.path(), Durability::Sync, 64 << 20).unwrap());
    let cache = MessageCache::new(store);
    for (id, msg) in &written {
        assert_eq!(cache.read(id).unwrap(), Some(Value::Message(msg.clone())));
    }
    let more = Message::new().with("blob", g.big_binary(500_000));
    let id = cache.write(&more).unwrap();
    let fresh = MessageCache::new(cache.store().clone());
    assert_eq!(
        fresh.read(&id.to_human()).unwrap(),
        Some(Value::Message(more))
    );
}

// ---------------------------------------------------------------------------------
// Read-only data directory
// ---------------------------------------------------------------------------------

/// The child: tries the read-only cases on the directories under `base` and prints
/// one `RESULT <case>: <error>` line per case.
#[test]
fn child_readonly() {
    let Some(base) = std::env::var_os(READONLY_DIR).map(PathBuf::from) else {
        return;
    };
    for (case, dir) in [
        ("new store in a read-only directory", base.join("ro/new")),
        ("existing store not writable", base.join("existing")),
    ] {
        match LmdbStore::open(&dir, Durability::Sync) {
            Ok(store) => {
                let e = store.write("k", Bytes::from_static(b"v"));
                println!("RESULT {case}: opened; write gave {e:?}");
            }
            Err(e) => println!("RESULT {case}: {e}"),
        }
    }
}

#[test]
fn a_read_only_data_directory_is_a_clear_error_naming_it() {
    let base = tempfile::tempdir().unwrap();
    let ro = base.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let existing = base.path().join("existing");
    {
        let s = LmdbStore::open(&existing, Durability::Sync).unwrap();
        s.write("k", Bytes::from_static(b"v")).unwrap();
    }
    let read_only = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o555)).unwrap();
    };
    read_only(&ro);
    read_only(&existing);
    for f in ["data.mdb", "lock.mdb"] {
        std::fs::set_permissions(existing.join(f), std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    // The base must be reachable by the user the check runs as.
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let exe = std::env::current_exe().unwrap();
    let args = [
        "child_readonly",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ];
    // Whether we run as root: the files we just made are then owned by root.
    let as_root = std::fs::metadata(base.path())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut command = if as_root {
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(setpriv) = setpriv else {
            eprintln!(
                "SKIPPED a_read_only_data_directory_is_a_clear_error_naming_it: running as \
                 root (permission bits do not stop root) and setpriv (util-linux) is not \
                 installed to run the check as nobody"
            );
            return;
        };
        let mut c = Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .args(args);
        c
    } else {
        let mut c = Command::new(&exe);
        c.args(args);
        c
    };
    let out = command.env(READONLY_DIR, base.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the read-only check failed to run ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let results: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, rest)| rest))
        .collect();
    assert_eq!(results.len(), 2, "{stdout}\n{stderr}");
    for (line, dir) in results.iter().zip([ro.join("new"), existing]) {
        eprintln!("{line}");
        assert!(!line.contains("opened;"), "{line}");
        assert!(
            line.contains(&dir.display().to_string()),
            "the error names the directory {}: {line}",
            dir.display()
        );
        assert!(
            line.to_lowercase().contains("permission denied")
                || line.to_lowercase().contains("read-only"),
            "the error says why: {line}"
        );
    }
}
