//! 10,000 random messages (nested, typed, lists, large binaries, some signed with RSA
//! through httpsig@1.0 or ANS-104) written through [`MessageCache::write`] to an
//! [`LmdbStore`] read back identical by every one of their IDs — the uncommitted ID
//! `write` returned, each commitment ID, and the message ID of spec 01 §6.5 — from a
//! fresh cache (nothing served from the in-memory front cache), then again after the
//! store is closed and reopened. Signed messages still verify after the round trip.
//!
//! Deterministic (seeded generator, `common::Gen`); the generator leaves out the inputs
//! docs/COMPATIBILITY.md lists as lossy for structured@1.0.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use common::{Gen, key1};
use hb_core::httpsig::message_id;
use hb_core::{Message, Value};
use hb_store::{Durability, LmdbStore, MessageCache, Store};

const COUNT: usize = 10_000;
const SEED: u64 = 0x5EED_0004;

/// How a message was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    None,
    Httpsig,
    Ans104,
}

/// One written message and every ID it must be readable by.
#[derive(Debug)]
struct Written {
    msg: Message,
    /// The uncommitted ID `write` returned.
    u: String,
    /// Every ID: `u`, the commitment IDs, the message ID.
    ids: BTreeSet<String>,
    signing: Signing,
}

/// What reading each uncommitted ID must give: messages with the same content share it
/// (one unsigned and signed, or signed twice: RSA-PSS signatures differ), and it reads
/// as the content with the commitments first stored for it — those of the first signed
/// message with that ID, or none. (Each commitment ID and each full message ID reads
/// back its own message exactly.)
fn expected_by_u(written: &[Written]) -> HashMap<&str, &Message> {
    let mut by_u: HashMap<&str, (&Message, bool)> = HashMap::new();
    for w in written {
        let signed = w.msg.get("commitments").is_some();
        match by_u.get(w.u.as_str()) {
            Some((_, true)) => {}
            Some((_, false)) if !signed => {}
            _ => {
                by_u.insert(&w.u, (&w.msg, signed));
            }
        }
    }
    by_u.into_iter().map(|(u, (m, _))| (u, m)).collect()
}

/// A message for ANS-104 signing: ASCII keys, binaries and integers only at the top
/// level (a data item's tags), sometimes a `data` body.
fn ans104_message(g: &mut Gen) -> Message {
    let mut m = Message::new();
    for _ in 0..g.rng.between(1, 6) {
        let k = g.key();
        let v = if g.rng.percent(30) {
            g.integer()
        } else {
            Value::text(&g.sf_text(40))
        };
        m.insert(&k, v);
    }
    if g.rng.percent(50) {
        let n = g.rng.between(1, 5000);
        m.insert("data", g.big_binary(n));
    }
    m
}

/// The `i`th message (deterministic for a generator state).
fn generate(g: &mut Gen, wallet: &hb_codec::Wallet, i: usize) -> (Message, Signing) {
    // About 2% signed with RSA (each signature takes milliseconds).
    match i % 100 {
        17 => {
            g.ascii_keys = true;
            let m = g.top_message(2, 10);
            g.ascii_keys = false;
            let signed = hb_codec::httpsig_commit::commit(&m, wallet)
                .unwrap_or_else(|e| panic!("message {i}: httpsig commit: {e}\n{m:?}"));
            (signed, Signing::Httpsig)
        }
        67 => {
            g.ascii_keys = true;
            let m = ans104_message(g);
            g.ascii_keys = false;
            let signed = hb_codec::ans104::commit(&m, wallet)
                .unwrap_or_else(|e| panic!("message {i}: ans104 commit: {e}\n{m:?}"));
            (signed, Signing::Ans104)
        }
        _ => {
            let mut m = match g.rng.below(20) {
                // Flat and small, the common case.
                0..=9 => g.top_message(0, 10),
                // Wide: up to 32 keys.
                10 => g.top_message(1, 32),
                _ => g.top_message(3, 8),
            };
            // About 0.15% carry a large binary (up to 1.5 MB, uncompressible; few, as
            // SHA-256 is slow in a debug build and each is hashed several times).
            if g.rng.below(2000) < 3 {
                let n = g.rng.between(128 * 1024, 1536 * 1024);
                let k = g.key();
                m.insert(&k, g.big_binary(n));
            }
            (m, Signing::None)
        }
    }
}

fn commitment_ids(msg: &Message) -> Vec<String> {
    msg.get("commitments")
        .and_then(Value::as_message)
        .map(|c| c.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default()
}

/// Reads every message by every ID through a fresh cache over `store`.
fn check_all(store: Arc<dyn Store>, written: &[Written], when: &str) {
    let cache = MessageCache::new(store);
    let by_u = expected_by_u(written);
    let started = Instant::now();
    let mut reads = 0usize;
    let mut shared = 0usize;
    for (i, w) in written.iter().enumerate() {
        for id in &w.ids {
            let want = if *id == w.u {
                by_u[id.as_str()]
            } else {
                &w.msg
            };
            if !std::ptr::eq(want, &w.msg) {
                shared += 1;
            }
            let got = cache
                .read(id)
                .unwrap_or_else(|e| panic!("{when}: message {i} by {id}: {e}"));
            match got {
                Some(Value::Message(back)) => {
                    if back != *want {
                        panic!(
                            "{when}: message {i} read by {id} differs\nwant {want:?}\nread {back:?}"
                        );
                    }
                }
                other => panic!("{when}: message {i} by {id}: {other:?}"),
            }
            reads += 1;
        }
        // The signatures still verify on what was read back (same bytes).
        if w.signing != Signing::None {
            let full = message_id(&w.msg).unwrap().to_human();
            let Some(Value::Message(back)) = cache.read(&full).unwrap() else {
                unreachable!()
            };
            for c in commitment_ids(&back) {
                let ok = match w.signing {
                    Signing::Httpsig => hb_codec::httpsig_commit::verify(&back, &c).unwrap(),
                    Signing::Ans104 => hb_codec::ans104::verify(&back, &c).unwrap(),
                    Signing::None => unreachable!(),
                };
                assert!(ok, "{when}: message {i}: commitment {c} does not verify");
            }
        }
    }
    eprintln!(
        "{when}: {reads} reads of {} messages ({shared} by an uncommitted ID shared with an earlier message) in {:.2?}",
        written.len(),
        started.elapsed()
    );
}

#[test]
fn ten_thousand_messages_read_back_by_every_id_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wallet = key1();
    let mut g = Gen::new(SEED);
    let mut written = Vec::with_capacity(COUNT);
    let (mut signed, mut large, mut bytes) = (0, 0, 0usize);
    {
        let store = Arc::new(LmdbStore::open(dir.path(), Durability::Relaxed).unwrap());
        let cache = MessageCache::new(store.clone());
        let started = Instant::now();
        for i in 0..COUNT {
            let (msg, signing) = generate(&mut g, &wallet, i);
            let u = cache
                .write(&msg)
                .unwrap_or_else(|e| panic!("message {i}: write: {e}\n{msg:?}"));
            let full = message_id(&msg).unwrap();
            let mut ids: BTreeSet<String> = commitment_ids(&msg).into_iter().collect();
            ids.insert(u.to_human());
            ids.insert(full.to_human());
            if signing == Signing::None {
                // Unsigned: the uncommitted ID is the message ID.
                assert_eq!(u, full, "message {i}");
            } else {
                signed += 1;
                assert!(ids.len() >= 2, "message {i}: {ids:?}");
            }
            let size = hb_core::structured::to_tabm(&msg)
                .map(|t| tabm_bytes(&t))
                .unwrap_or(0);
            bytes += size;
            if size > 64 * 1024 {
                large += 1;
            }
            written.push(Written {
                msg,
                u: u.to_human(),
                ids,
                signing,
            });
        }
        eprintln!(
            "wrote {COUNT} messages ({signed} signed, {large} over 64 KiB, {} MiB of values) in {:.2?}",
            bytes / (1024 * 1024),
            started.elapsed()
        );
        assert!(
            signed >= 150 && large >= 10,
            "{signed} signed, {large} large"
        );
        drop(cache);
        check_all(store, &written, "before reopening");
    }
    // Closed (every handle dropped) and opened again.
    let store = Arc::new(LmdbStore::open(dir.path(), Durability::Sync).unwrap());
    check_all(store, &written, "after reopening");
}

/// The bytes of the binaries of a TABM, nested ones included.
fn tabm_bytes(tabm: &Message) -> usize {
    tabm.iter()
        .map(|(_, v)| match v {
            Value::Binary(b) => b.len(),
            Value::Message(m) => tabm_bytes(m),
            _ => 0,
        })
        .sum()
}
