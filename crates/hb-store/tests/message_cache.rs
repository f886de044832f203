//! The message cache (spec 05 §6.4) on the memory, LMDB and filesystem stores.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;

use bytes::Bytes;
use hb_core::{Cache, Message, Value};
use hb_store::{Durability, FsStore, LmdbStore, MemoryStore, MessageCache, Store};

const KEY1: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");

fn key1() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(KEY1).expect("key-1")
}

fn sample() -> Message {
    Message::new()
        .with("a", "1")
        .with("n", 42i64)
        .with("f", 1.5f64)
        .with("l", Value::list(vec![Value::Integer(1), Value::text("x")]))
        .with("e", "")
        .with(
            "nested",
            Message::new()
                .with("x", "y")
                .with("deeper", Message::new().with("z", 7i64)),
        )
        .with("big", "b".repeat(10_000))
}

/// Spec 05 §6.4 test vectors and round trips, on one store.
fn vectors(store: Arc<dyn Store>) {
    let cache = MessageCache::new(store);
    // A binary reads back from its path.
    let b = Bytes::from_static(b"Simple unsigned data item");
    let path = cache.write_binary(&b).unwrap();
    assert!(path.starts_with("data/"));
    assert_eq!(cache.read(&path).unwrap(), Some(Value::Binary(b)));
    // `{}` reads back as `{}` by its ID.
    let empty = cache.write(&Message::new()).unwrap();
    assert_eq!(
        empty.to_human(),
        "VnYnaoOvankqXk13s502zpiq9PIaqFHDRcIrTNhyqKQ"
    );
    assert_eq!(
        cache.read(&empty.to_human()).unwrap(),
        Some(Value::Message(Message::new()))
    );
    // A typed, nested message round-trips; its ID is its uncommitted ID.
    let msg = sample();
    let id = cache.write(&msg).unwrap();
    assert_eq!(id, hb_core::httpsig::message_id(&msg).unwrap());
    assert_eq!(
        cache.read(&id.to_human()).unwrap(),
        Some(Value::Message(msg.clone()))
    );
    // A signed message reads back by its uncommitted ID and by its commitment ID.
    let signed = hb_codec::httpsig_commit::commit(&Message::new().with("a", "1"), &key1()).unwrap();
    let u = cache.write(&signed).unwrap();
    assert_eq!(u.to_human(), "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s");
    let signed_id = hb_core::httpsig::message_id(&signed).unwrap();
    assert_ne!(signed_id, u);
    for by in [u.to_human(), signed_id.to_human()] {
        let Some(Value::Message(back)) = cache.read(&by).unwrap() else {
            panic!("{by} not found")
        };
        assert_eq!(back, signed, "read by {by}");
        let commitments = back.get("commitments").and_then(Value::as_message).unwrap();
        let rsa: Vec<_> = commitments
            .iter()
            .filter(|(_, c)| c.as_message().is_some_and(|c| c.get("committer").is_some()))
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(rsa.len(), 1);
        assert!(
            hb_codec::httpsig_commit::verify(&back, &rsa[0]).unwrap(),
            "verifies"
        );
    }
    // Keys of a stored message are paths too.
    assert_eq!(
        cache.read(&format!("{id}/nested/x")).unwrap(),
        Some(Value::text("y"))
    );
    assert_eq!(cache.read("nothing-here").unwrap(), None);
}

#[test]
fn message_cache_on_memory() {
    vectors(Arc::new(MemoryStore::new()));
}

#[test]
fn message_cache_on_lmdb_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = Arc::new(LmdbStore::open(dir.path(), Durability::Sync).unwrap());
        vectors(store.clone());
        let cache = MessageCache::new(store);
        id = cache.write(&sample()).unwrap();
        // Engine writes: a result by hashpath, committed by the write-behind thread.
        cache.write_result("A/B", &Value::Message(Message::new().with("r", "1")));
        cache.write_result("A/C", &Value::text("bin"));
        cache.write_message(
            hb_core::id::Id::sha256(b"x"),
            &Message::new().with("k", "v"),
        );
        cache.flush();
    }
    let cache = MessageCache::new(Arc::new(
        LmdbStore::open(dir.path(), Durability::Sync).unwrap(),
    ));
    assert_eq!(
        cache.read(&id.to_human()).unwrap(),
        Some(Value::Message(sample()))
    );
    assert_eq!(
        cache.read_result("A/B"),
        Some(Value::Message(Message::new().with("r", "1")))
    );
    assert_eq!(cache.read_result("A/C"), Some(Value::text("bin")));
    assert_eq!(
        cache.read_message(&hb_core::id::Id::sha256(b"x")),
        Some(Message::new().with("k", "v"))
    );
    // `ID/key` finds a key of a stored message (spec 01 §10.5).
    assert_eq!(
        cache.read_result(&format!("{id}/a")),
        Some(Value::text("1"))
    );
}

#[test]
fn message_cache_on_fs_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let store = Arc::new(FsStore::open(dir.path()).unwrap());
        vectors(store.clone());
        let cache = MessageCache::new(store);
        id = cache.write(&sample()).unwrap();
        cache.write_result("A/B", &Value::Message(Message::new().with("r", "1")));
        cache.flush();
    }
    // The layout of spec 05 §6.4 on disk: a directory per message, an entry per key —
    // small binaries in place, larger ones a link to `data/<hash>`.
    let root = dir.path().canonicalize().unwrap();
    let u = root.join(id.to_human());
    assert!(u.is_dir());
    assert_eq!(std::fs::read(u.join("a")).unwrap(), b"1", "inline");
    let link = std::fs::read_link(u.join("big")).unwrap();
    assert!(link.starts_with("../data"), "{}", link.display());
    assert_eq!(
        std::fs::read(u.join("big")).unwrap(),
        "b".repeat(10_000).as_bytes(),
        "the OS follows it too"
    );
    let cache = MessageCache::new(Arc::new(FsStore::open(dir.path()).unwrap()));
    assert_eq!(
        cache.read(&id.to_human()).unwrap(),
        Some(Value::Message(sample()))
    );
    assert_eq!(
        cache.read_result("A/B"),
        Some(Value::Message(Message::new().with("r", "1")))
    );
}

/// The path operations `cache@1.0` uses, through the engine's trait, on every store;
/// durable: a fresh cache over the same store sees them.
#[test]
fn path_operations_through_the_cache_trait() {
    let dir = tempfile::tempdir().unwrap();
    type Opener = Box<dyn Fn() -> Arc<dyn Store>>;
    let stores: Vec<(&str, Opener)> = vec![
        ("fs", {
            let p = dir.path().join("fs");
            Box::new(move || Arc::new(FsStore::open(&p).unwrap()))
        }),
        ("lmdb", {
            let p = dir.path().join("lmdb");
            Box::new(move || Arc::new(LmdbStore::open(&p, Durability::Sync).unwrap()))
        }),
    ];
    for (name, open) in stores {
        let bin = Bytes::from_static(b"raw bytes");
        let path;
        {
            let cache: Box<dyn Cache> = Box::new(MessageCache::new(open()));
            path = cache.write_binary(&bin).unwrap();
            assert_eq!(path, hb_core::cache::data_path(&bin), "{name}");
            cache.link(&path, "named/thing").unwrap();
        }
        let cache: Box<dyn Cache> = Box::new(MessageCache::new(open()));
        for p in [path.as_str(), "named/thing", "/named/thing"] {
            assert_eq!(
                cache.read_path(p).unwrap(),
                Some(Value::Binary(bin.clone())),
                "{name}: {p}"
            );
        }
        assert_eq!(cache.read_path("named/other").unwrap(), None, "{name}");
    }
    // A path that would leave the filesystem store's prefix is refused, named.
    let cache = MessageCache::new(Arc::new(FsStore::open(dir.path().join("fs2")).unwrap()));
    let e = Cache::read_path(&cache, "../../etc/passwd").unwrap_err();
    assert!(e.to_string().contains("../../etc/passwd"), "{e}");
    assert!(Cache::link(&cache, "data/x", "../escape").is_err());
}

/// A source that has one message, and counts how often it is asked.
#[derive(Debug)]
struct OneMessage(Message, std::sync::atomic::AtomicUsize);

impl hb_store::MessageSource for OneMessage {
    fn name(&self) -> &str {
        "one"
    }
    fn fetch(&self, id: &str) -> Result<Option<Message>, hb_store::StoreError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mine = hb_core::httpsig::message_id(&self.0).unwrap().to_human();
        Ok((id == mine).then(|| self.0.clone()))
    }
}

#[test]
fn ids_missing_locally_are_fetched_from_sources_and_kept() {
    let remote = Message::new().with("from", "afar");
    let id = hb_core::httpsig::message_id(&remote).unwrap().to_human();
    let source = Arc::new(OneMessage(remote.clone(), Default::default()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cache = MessageCache::new(store.clone()).with_sources(vec![source.clone()]);
    assert_eq!(
        cache.read(&id).unwrap(),
        Some(Value::Message(remote.clone()))
    );
    assert_eq!(source.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Kept locally: a fresh cache over the same store finds it without the source.
    let local = MessageCache::new(store);
    assert_eq!(local.read(&id).unwrap(), Some(Value::Message(remote)));
    // A path that is not an ID is never sent to sources.
    assert_eq!(cache.read("not/an/id").unwrap(), None);
    assert_eq!(source.1.load(std::sync::atomic::Ordering::SeqCst), 1);
}
