//! Crash safety of the LMDB store under the message cache: a writer process
//! (`common::crash_writer`, also `examples/crash_writer.rs`) writes messages durably
//! and acknowledges each on stdout after `write` returned `Ok`; it is killed with
//! SIGKILL at a random moment (seeded), 20 times, on the same store. After each kill:
//!
//! * the store opens;
//! * every acknowledged ID (of every round so far) reads back identical to the message
//!   written (generated again from the round's seed);
//! * every top-level message group that appeared since the last check reads without
//!   error, and one that was not acknowledged (the write in flight at the kill) is
//!   exactly the next message of the round: nothing half-written is visible;
//! * every new `data/<hash>` entry holds bytes whose SHA-256 is its name.
//!
//! The writer is this test binary itself, run again (`std::env::current_exe`) with
//! `HB_CRASH_WRITER=<dir>` for its one test [`child_writer`]; without that variable
//! that test does nothing.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Gen, Rng, crash_message};
use hb_core::id::{Id, b64url};
use hb_core::{Message, Value};
use hb_store::{Durability, LmdbStore, MessageCache, Store};

const ROUNDS: u64 = 20;
const SEED: u64 = 0xC0A5_4000;
const WRITER_DIR: &str = "HB_CRASH_WRITER";
const WRITER_SEED: &str = "HB_CRASH_WRITER_SEED";

/// The writer, when this binary is run as one (see the module documentation).
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(WRITER_DIR) else {
        return;
    };
    let seed = std::env::var(WRITER_SEED).unwrap().parse().unwrap();
    common::crash_writer(Path::new(&dir), seed);
}

/// Runs the writer on `dir` with `seed`, kills it after `delay`, and returns the
/// acknowledged `(index, ID)` pairs.
fn run_and_kill(dir: &Path, seed: u64, delay: Duration) -> Vec<(u64, String)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_DIR, dir)
        .env(WRITER_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        all
    });
    std::thread::sleep(delay);
    // `Child::kill` sends SIGKILL on Unix.
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        still_running,
        "the writer stopped before it was killed ({status}):\n{stderr}"
    );
    let out = reader.join().unwrap();
    let text = String::from_utf8_lossy(&out);
    // Only whole lines: a line cut by the kill was not acknowledged.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    whole
        .lines()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(|l| {
            let (i, id) = l.split_once(' ').unwrap();
            (i.parse().unwrap(), id.to_owned())
        })
        .collect()
}

/// The messages of a round, generated again.
struct Round {
    generator: Gen,
    messages: Vec<Message>,
}

impl Round {
    fn new(seed: u64) -> Self {
        Round {
            generator: Gen::new(seed),
            messages: Vec::new(),
        }
    }

    fn message(&mut self, i: u64) -> &Message {
        let i = usize::try_from(i).unwrap();
        while self.messages.len() <= i {
            let m = crash_message(&mut self.generator);
            self.messages.push(m);
        }
        &self.messages[i]
    }
}

fn read_message(cache: &MessageCache, id: &str) -> Message {
    match cache.read(id) {
        Ok(Some(Value::Message(m))) => m,
        other => panic!("{id}: {other:?}"),
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_and_nothing_half_written_is_visible() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(SEED);
    // Every acknowledged ID: the round and index of its message.
    let mut acked: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut rounds: HashMap<u64, Round> = HashMap::new();
    let mut seen_groups: BTreeSet<String> = BTreeSet::new();
    let mut seen_data: BTreeSet<String> = BTreeSet::new();
    let (mut in_flight, mut total_bytes) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let seed = SEED + round;
        let delay = Duration::from_millis(u64::try_from(rng.between(20, 900)).unwrap());
        let acks = run_and_kill(dir.path(), seed, delay);
        rounds.entry(round).or_insert_with(|| Round::new(seed));
        for (i, id) in &acks {
            acked.insert(id.clone(), (round, *i));
        }
        let next = acks.last().map_or(0, |(i, _)| i + 1);

        // The store opens, and every acknowledged write reads back identical.
        let store = Arc::new(LmdbStore::open(dir.path(), Durability::Sync).unwrap());
        let cache = MessageCache::new(store.clone());
        for (id, (round_of, i)) in &acked {
            let want = rounds.get_mut(round_of).unwrap().message(*i).clone();
            let got = read_message(&cache, id);
            assert!(
                got == want,
                "round {round}: acknowledged message {i} of round {round_of} ({id}) differs"
            );
        }

        // Every new top-level group reads; one not acknowledged is the message that
        // was being written at the kill, whole.
        let r = rounds.get_mut(&round).unwrap();
        let unacked_candidates: HashMap<String, u64> = (next..next + 2)
            .map(|i| {
                let id = hb_core::httpsig::message_id(r.message(i)).unwrap();
                (id.to_human(), i)
            })
            .collect();
        let top = store.list("").unwrap().unwrap_or_default();
        for name in top.iter().filter(|n| n.len() == 43) {
            if !seen_groups.insert(name.clone()) {
                continue;
            }
            let got = read_message(&cache, name);
            if !acked.contains_key(name) {
                // Not acknowledged: the write in flight (or a nested message of an
                // acknowledged one, which has its own group).
                if let Some(i) = unacked_candidates.get(name) {
                    assert!(
                        got == *r.message(*i),
                        "round {round}: the message in flight ({i}) is visible but not whole"
                    );
                    in_flight += 1;
                }
            }
        }

        // Every new binary is whole.
        let data = store.list("data").unwrap().unwrap_or_default();
        for name in data {
            if !seen_data.insert(name.clone()) {
                continue;
            }
            let bytes = store.read(&format!("data/{name}")).unwrap().unwrap();
            assert_eq!(
                b64url(&Id::sha256(&bytes).0),
                name,
                "round {round}: data/{name} is not whole"
            );
            total_bytes += bytes.len();
        }
        eprintln!(
            "round {round}: killed after {delay:?}, {} acknowledged ({} in all)",
            acks.len(),
            acked.len()
        );
        drop(cache);
        drop(store);
    }
    eprintln!(
        "{ROUNDS} kills: {} acknowledged messages read back; {} in-flight messages found whole; \
         {} groups and {} binaries ({} MiB) checked; {:.1?}",
        acked.len(),
        in_flight,
        seen_groups.len(),
        seen_data.len(),
        total_bytes / (1024 * 1024),
        started.elapsed()
    );
    assert!(
        acked.len() >= 100,
        "too few writes were acknowledged to show anything: {}",
        acked.len()
    );
}
