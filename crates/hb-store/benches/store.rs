//! Message reads and writes through the message cache on LMDB, against raw LMDB gets
//! and puts of the same bytes measured in the same run. `bench/store.sh` runs this and
//! prints the rates and ratios; see docs/PERFORMANCE.md ("Store").
//!
//! * `read_store`: `MessageCache::read` of a typical 10-key message by its ID, the ID
//!   not in the in-memory front cache (the reads cycle over more messages than it
//!   holds, and than it remembers reads of): the store path — one read transaction,
//!   the message's packed copy, its decoding, the front cache's miss.
//! * `read_packed`, `decode_packed`: its two parts — the store's (`Store::read_packed`:
//!   one read transaction, one lookup) and the packed copy's decoding.
//! * `read_tree`, `decode`: the same read through the message's group (messages
//!   without a packed copy: older stores, large messages, `ID/key` paths) — the
//!   store's part (one read transaction: links, groups, values) and the structured
//!   codec's (TABM -> message).
//! * `read_hot`: the same read of an ID the front cache holds.
//! * `raw_get`: one LMDB get (in its own read transaction, the value copied out) of a
//!   value holding the same bytes as one message (its TABM's values), keyed by the
//!   message's ID, the keys visited in `read_store`'s order: the same lookups the store
//!   path makes, without the store. (IDs are hashes, so that order is random in key
//!   order, as every read of messages by ID is.)
//! * `raw_get_in_key_order`, for comparison: the same gets with the values keyed
//!   `raw/<n>` and visited in key order, so that each get finds its page where the
//!   previous one left it: LMDB's best case, which no read by ID meets.
//! * `write`: `MessageCache::write` of a new 10-key message (IDs, encoding, one atomic
//!   batch); `raw_put`: one LMDB put of the same bytes in its own write transaction.
//!
//! * `check_crc32`, `check_sha256`: what checking a stored 64 KiB value costs — the
//!   CRC-32 every entry carries (key and value), or the SHA-256 a `data/<hash>` name
//!   would allow (docs/adr/0004: why the CRC is the check on every read).
//!
//! Both sides run with `NO_SYNC` (`Durability::Relaxed`): the rates are those of the
//! code, not of the disk's flushes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hb_core::structured::to_tabm;
use hb_core::{Message, Value};
use hb_store::{Durability, LmdbStore, MessageCache, Store};
use heed::types::Bytes as RawBytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};

/// More messages than the front cache holds (16 Ki entries), so cyclic reads miss it.
const MESSAGES: usize = 40_000;

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

/// A typical 10-key message (an AO message as a process receives it); `n` makes it
/// unique.
fn message(n: usize) -> Message {
    Message::new()
        .with("type", "Message")
        .with("variant", "ao.TN.1")
        .with("data-protocol", "ao")
        .with("action", "Transfer")
        .with("target", "x1mGvpNG2dVNqQ1XkBXH7rRhSWbYNwD7tXUxp5AAl5s")
        .with("recipient", "vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4")
        .with("quantity", i64::try_from(n).unwrap_or(i64::MAX) + 1000)
        .with("nonce", format!("{n}").as_str())
        .with(
            "timestamp",
            1_700_000_000_000i64 + i64::try_from(n).unwrap_or(0),
        )
        .with(
            "data",
            format!(
                "{{\"note\":\"transfer number {n}\",\"memo\":\"{}\"}}",
                "m".repeat(40)
            )
            .as_str(),
        )
}

/// The bytes of a message's TABM values, concatenated: what a raw get returns.
fn raw_bytes(msg: &Message) -> Vec<u8> {
    let tabm = to_tabm(msg).expect("a TABM");
    let mut out = Vec::new();
    for (k, v) in tabm.iter() {
        out.extend_from_slice(k.as_bytes());
        if let Value::Binary(b) = v {
            out.extend_from_slice(b);
        }
    }
    out
}

#[allow(
    unsafe_code,
    reason = "the raw baseline opens its own heed environment, once, in a fresh directory"
)]
fn raw_env(dir: &std::path::Path) -> (Env, Database<RawBytes, RawBytes>) {
    let mut options = EnvOpenOptions::new();
    options.map_size(1 << 34).max_dbs(1);
    // SAFETY: this directory is new and opened once in this process (the condition of
    // heed's `open`); NO_SYNC only changes when LMDB flushes.
    let env = unsafe {
        options.flags(EnvFlags::NO_SYNC);
        options.open(dir)
    }
    .expect("the raw environment opens");
    let mut wtxn = env.write_txn().expect("a write transaction");
    let db: Database<RawBytes, RawBytes> = env
        .create_database(&mut wtxn, None)
        .expect("the raw database");
    wtxn.commit().expect("commit");
    (env, db)
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store =
        Arc::new(LmdbStore::open(dir.path().join("store"), Durability::Relaxed).expect("store"));
    let writer = MessageCache::new(store.clone());
    let (env, db) = raw_env(&{
        let p = dir.path().join("raw");
        std::fs::create_dir_all(&p).expect("raw dir");
        p
    });
    let (env_by_id, db_by_id) = raw_env(&{
        let p = dir.path().join("raw-by-id");
        std::fs::create_dir_all(&p).expect("raw dir");
        p
    });
    let mut ids = Vec::with_capacity(MESSAGES);
    let mut keys = Vec::with_capacity(MESSAGES);
    let mut wtxn = env.write_txn().expect("a write transaction");
    let mut wtxn_by_id = env_by_id.write_txn().expect("a write transaction");
    for n in 0..MESSAGES {
        let msg = message(n);
        let id = writer.write(&msg).expect("write").to_human();
        let key = format!("raw/{n:08}");
        db.put(&mut wtxn, key.as_bytes(), &raw_bytes(&msg))
            .expect("raw put");
        db_by_id
            .put(&mut wtxn_by_id, id.as_bytes(), &raw_bytes(&msg))
            .expect("raw put");
        ids.push(id);
        keys.push(key);
    }
    wtxn.commit().expect("commit");
    wtxn_by_id.commit().expect("commit");
    drop(writer);
    let reader = MessageCache::new(store.clone());
    let mut group = c.benchmark_group("store");
    let mut i = 0;
    group.bench_function("read_store", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            reader
                .read(black_box(&ids[i]))
                .expect("read")
                .expect("found")
        })
    });
    // The read of a message through its group, as messages without a packed copy are
    // read: the store's part alone (one read transaction: links, groups, values; no
    // decoding, no front cache) and, below, the decoding alone (the structured codec,
    // TABM -> message). Then the parts of `read_store`: the store's (the packed copy,
    // one lookup) and the copy's decoding.
    let mut i = 0;
    let none = |_: &str| None;
    group.bench_function("read_tree", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            store
                .read_tree(black_box(&ids[i]), &none)
                .expect("read")
                .expect("found")
        })
    });
    let mut i = 0;
    // (What the message cache prefers: a message's signed form.)
    let prefer = |at: &str| (at.len() == 43 && !at.contains('/')).then(|| format!("signed/{at}"));
    group.bench_function("read_packed", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            store
                .read_packed(black_box(&ids[i]), &prefer)
                .expect("read")
                .expect("found")
        })
    });
    let tabm = to_tabm(&message(1)).expect("a TABM");
    group.bench_function("decode", |b| {
        b.iter(|| hb_core::structured::from_tabm(black_box(&tabm)).expect("decodes"))
    });
    let rich = hb_core::structured::from_tabm(&tabm).expect("decodes");
    let copy = Bytes::from(hb_store::cache::packed::encode(&rich).expect("a packed copy"));
    group.bench_function("decode_packed", |b| {
        b.iter(|| hb_store::cache::packed::decode(black_box(&copy)).expect("decodes"))
    });
    let hot = &ids[0];
    // (The front cache takes what is read twice within a while.)
    reader.read(hot).expect("read");
    reader.read(hot).expect("read");
    group.bench_function("read_hot", |b| {
        b.iter(|| reader.read(black_box(hot)).expect("read").expect("found"))
    });
    // The baseline of the targets: the same lookups as `read_store` (the same keys in
    // the same order), on raw LMDB.
    let mut i = 0;
    group.bench_function("raw_get", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            let rtxn = env_by_id.read_txn().expect("a read transaction");
            let v = db_by_id
                .get(&rtxn, black_box(ids[i].as_bytes()))
                .expect("get")
                .expect("found");
            Bytes::copy_from_slice(v)
        })
    });
    // For comparison only: the same bytes under keys in the order they are visited
    // (neighbours share pages): LMDB's best case.
    let mut i = 0;
    group.bench_function("raw_get_in_key_order", |b| {
        b.iter(|| {
            i = (i + 1) % MESSAGES;
            let rtxn = env.read_txn().expect("a read transaction");
            let v = db
                .get(&rtxn, black_box(keys[i].as_bytes()))
                .expect("get")
                .expect("found");
            Bytes::copy_from_slice(v)
        })
    });
    group.finish();
}

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store =
        Arc::new(LmdbStore::open(dir.path().join("store"), Durability::Relaxed).expect("store"));
    let cache = MessageCache::new(store);
    let (env, db) = raw_env(&{
        let p = dir.path().join("raw");
        std::fs::create_dir_all(&p).expect("raw dir");
        p
    });
    let mut group = c.benchmark_group("store");
    let mut n = 0;
    group.bench_function("write", |b| {
        b.iter(|| {
            n += 1;
            cache.write(black_box(&message(n))).expect("write")
        })
    });
    let mut n = 0;
    let bytes = raw_bytes(&message(0));
    group.bench_function("raw_put", |b| {
        b.iter(|| {
            n += 1;
            let mut wtxn = env.write_txn().expect("a write transaction");
            db.put(&mut wtxn, format!("raw/{n:08}").as_bytes(), &bytes)
                .expect("put");
            wtxn.commit().expect("commit");
        })
    });
    group.finish();
}

/// The two checks a stored value could get, on 64 KiB.
fn checks(c: &mut Criterion) {
    use sha2::Digest as _;
    let value: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    let key = b"data/0123456789012345678901234567890123456789012";
    let mut group = c.benchmark_group("store");
    group.bench_function("check_crc32", |b| {
        b.iter(|| hb_store::kv::checksum(black_box(key), black_box(&value)))
    });
    group.bench_function("check_sha256", |b| {
        b.iter(|| sha2::Sha256::digest(black_box(&value)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = reads, writes, checks
}
criterion_main!(benches);
