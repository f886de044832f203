//! Data directories written before entries carried checksums (store format 1) stay
//! readable: `tests/fixtures/store-v1/data.mdb` is an LMDB store written by the code of
//! commit 4c517c6 (the last without checksums) with [`write_v1_fixture`] below. Every
//! message and binary in it reads back as written, through its packed copy and through
//! its group; new writes into it carry checksums and are verified; old values that hold
//! a binary by its hash (`data/<hash>`) are checked against their names instead.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hb_core::{Message, Value};
use hb_store::store::Packed;
use hb_store::{Durability, LmdbStore, MessageCache, Store, StoreError};

const FIXTURE: &str = "tests/fixtures/store-v1/data.mdb";

/// Deterministic bytes (a small LCG): large binaries that do not compress.
fn noise(seed: u64, n: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// The messages of the fixture: every kind of value; small ones (a packed copy each),
/// one larger than a packed copy (read through its group), binaries larger than the
/// inline limit (`data/<hash>`), and one larger than an LMDB page.
fn messages() -> Vec<Message> {
    let nested = Message::new()
        .with("inner", "text")
        .with("n", -7i64)
        .with("deeper", Message::new().with("x", Value::list(vec![])));
    vec![
        Message::new()
            .with("action", "Transfer")
            .with("quantity", 1_000_000i64)
            .with("recipient", "Sfx4Y2oH5A6OQL1fLcvWRlkTQ8H2Kk3jFq7wzU0c5Zs")
            .with("data", "{\"a\": [1, 2, 3], \"b\": \"c\"}"),
        Message::new()
            .with("float", 1.5f64)
            .with("atom", Value::atom("ok"))
            .with("flag", true)
            .with(
                "list",
                Value::list(vec![Value::text("a"), Value::Integer(2), Value::atom("b")]),
            )
            .with("nested", nested.clone()),
        Message::new()
            .with("kind", "with a medium binary")
            .with("blob", Value::bin(noise(1, 1000))),
        Message::new()
            .with("kind", "larger than a packed copy")
            .with("blob", Value::bin(noise(2, 6000)))
            .with("nested", nested),
        Message::new()
            .with("kind", "larger than a page")
            .with("blob", Value::bin(noise(3, 20_000))),
        Message::new(),
    ]
}

/// A binary written by itself (`data/<hash>`).
fn lone_binary() -> Bytes {
    noise(4, 3000)
}

/// Writes the fixture with the code of the day. Run only at commit 4c517c6 (before
/// checksums) to make a format-1 store:
/// `cargo test -p hb-store --test store_format -- --ignored write_v1_fixture`.
#[test]
#[ignore = "writes the format-1 fixture; meaningful only with the code before checksums"]
fn write_v1_fixture() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(LmdbStore::open(dir.path(), Durability::Sync).unwrap());
        let cache = MessageCache::new(store.clone());
        for msg in messages() {
            let id = cache.write(&msg).unwrap();
            cache
                .link(&id.to_human(), &format!("aliases/{}", id.to_human()))
                .unwrap();
        }
        cache.write_binary(&lone_binary()).unwrap();
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::copy(dir.path().join("data.mdb"), &out).unwrap();
}

/// A copy of the fixture to open (LMDB writes its lock file next to the data).
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    std::fs::copy(&src, dir.path().join("data.mdb")).unwrap();
    dir
}

fn prefer(resolved: &str) -> Option<String> {
    (resolved.len() == 43 && !resolved.contains('/')).then(|| format!("signed/{resolved}"))
}

#[test]
fn a_format_1_store_reads_back_whole_and_takes_new_writes() {
    let dir = fixture_copy();
    let store = Arc::new(LmdbStore::open(dir.path(), Durability::Sync).unwrap());
    assert_eq!(store.format(), 1, "the fixture is a store of format 1");
    let cache = MessageCache::new(store.clone());
    let mut copies = 0;
    for msg in messages() {
        let id = hb_core::httpsig::message_id(&msg).unwrap().to_human();
        let want = Some(Value::Message(msg.clone()));
        assert_eq!(cache.read(&id).unwrap(), want, "{id}");
        assert_eq!(cache.read(&format!("aliases/{id}")).unwrap(), want, "{id}");
        // Through the group as well as through the packed copy.
        assert!(store.read_tree(&id, &prefer).unwrap().is_some());
        if matches!(
            store.read_packed(&id, &prefer).unwrap(),
            Some(Packed::Copy(_))
        ) {
            copies += 1;
        }
    }
    assert!(
        copies >= 4,
        "the fixture's small messages have packed copies"
    );
    let data = hb_core::cache::data_path(&lone_binary());
    assert_eq!(store.read(&data).unwrap(), Some(lone_binary()));

    // New writes into the old store: checksummed, and both kinds read side by side.
    let new = Message::new()
        .with("written", "after the upgrade")
        .with("blob", Value::bin(noise(5, 2000)));
    let id = cache.write(&new).unwrap().to_human();
    drop(cache);
    drop(store);
    let store = Arc::new(LmdbStore::open(dir.path(), Durability::Sync).unwrap());
    assert_eq!(
        store.format(),
        1,
        "a format-1 store stays one: it holds old entries"
    );
    let cache = MessageCache::new(store.clone());
    assert_eq!(cache.read(&id).unwrap(), Some(Value::Message(new)));
    for msg in messages() {
        let id = hb_core::httpsig::message_id(&msg).unwrap().to_human();
        assert_eq!(cache.read(&id).unwrap(), Some(Value::Message(msg)));
    }
}

#[test]
fn an_old_binary_is_checked_against_its_name() {
    let dir = fixture_copy();
    // Flip a byte inside the lone binary (found by its bytes in the file).
    let file = dir.path().join("data.mdb");
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = &lone_binary()[100..132];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the binary is in the file");
    bytes[at + 5] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let store = LmdbStore::open(dir.path(), Durability::Sync).unwrap();
    let data = hb_core::cache::data_path(&lone_binary());
    let e = store.read(&data).unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt { path, .. } if *path == data),
        "{e}"
    );
    assert!(e.to_string().contains(&data), "{e}");
}

#[test]
fn a_new_store_is_of_format_2_and_stays_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LmdbStore::open(dir.path(), Durability::Sync).unwrap();
        assert_eq!(store.format(), 2);
        store.write("k", Bytes::from_static(b"v")).unwrap();
    }
    let store = LmdbStore::open(dir.path(), Durability::Sync).unwrap();
    assert_eq!(store.format(), 2);
    assert_eq!(store.read("k").unwrap(), Some(Bytes::from_static(b"v")));
    // The format marker is no path.
    assert_eq!(store.list("").unwrap().unwrap(), ["k"]);
}
