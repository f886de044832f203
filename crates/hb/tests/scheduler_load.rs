//! `scheduler@1.0` and `process@1.0` under load, against the real `hb` binary on its
//! default store (LMDB, every commit synchronous):
//!
//! * 8 concurrent clients × 500 messages get 4,000 distinct, contiguous slots, read back
//!   in order over HTTP, hash-chained and signed by the node (checked in the store after
//!   the node is gone, which also shows they were on disk);
//! * a node killed (SIGKILL) while 8 clients post loses no acknowledged slot, leaves no
//!   gap and no broken hash chain, continues at the next slot when restarted, and
//!   computes from its latest stored snapshot, not from slot 0 (three kills in a row);
//! * a Lua process gives the same `pairs()` order, outputs and state IDs in two `hb
//!   serve` processes with fresh data directories.
//!
//! Run with `--nocapture` to see the timings.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hb_core::id::b64url;
use hb_core::message::{committers_of, id_all};
use hb_core::{Cache, Message, Value};
use hb_devices::scheduler::{assignment_path, next_chain};
use hb_store::{Durability, LmdbStore, MessageCache, Op, Store};

const CLIENTS: i64 = 8;
const EACH: i64 = 500;

// --- the node -------------------------------------------------------------------------

/// A running `hb serve` (stopped by pid, with SIGKILL, when dropped).
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    /// `hb serve` on a free loopback port, its data (and its log, `hb.log`) in `dir`.
    fn start(dir: &Path) -> Node {
        Node::start_with(dir, &[])
    }

    /// [`Node::start`] with more arguments for `hb serve`.
    fn start_with(dir: &Path, extra: &[&str]) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hb.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hb"))
            .args(["serve", "--port", "0", "--gateway", "none"])
            // A snapshot at every slot (the reference's default): the tests below
            // check that a restarted node resumes from the one at the slot computed.
            .args(["--set", "process_snapshot_slots=1", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("HB_LOG", "warn")
            // No config.flat lying around is picked up.
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start hb serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hb serve did not start: {line:?} (see {})", dir.display());
        };
        let addr = addr.to_owned();
        Node { child, addr }
    }

    /// SIGKILL, by pid: no chance to flush or finish anything.
    fn kill(mut self) {
        self.child.kill().expect("kill hb by pid");
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh data directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hb-sched-load-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- HTTP -----------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One request on a fresh connection (`connection: close`). An error when the node
/// goes away before the whole reply arrived: such a request was not acknowledged.
fn exchange(addr: &str, req: &[u8]) -> std::io::Result<Reply> {
    let broken = |what: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what);
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| broken("no response head"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| broken("no status"))?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = length {
        if body.len() < len {
            return Err(broken("truncated body"));
        }
        body.truncate(len);
    }
    Ok(Reply { status, body })
}

fn get(addr: &str, target: &str, extra: &str) -> Reply {
    let req = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n");
    exchange(addr, req.as_bytes()).unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

/// A POST of `msg` as HTTP header fields (and body), the way clients send messages,
/// asking for a JSON reply.
fn post_request(target: &str, msg: &Message) -> Vec<u8> {
    // Values that cannot be header fields (a newline in Lua source) go as body parts.
    let http = hb_core::httpsig::encode_rich_wire(msg).expect("encode");
    let body = http.body.map(|b| b.to_vec()).unwrap_or_default();
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\naccept: application/json\r\n"
    );
    for (k, v) in &http.headers {
        req.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut req = req.into_bytes();
    req.extend_from_slice(&body);
    req
}

/// An integer of a JSON reply (json@1.0 writes typed values as text plus `ao-types`).
fn int(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::Number(n) => n.as_i64().unwrap(),
        serde_json::Value::String(s) => s.parse().unwrap(),
        other => panic!("not an integer: {other}"),
    }
}

const JSON: &str = "accept: application/json\r\n";

// --- processes and messages -------------------------------------------------------------

fn key1() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json"))
        .expect("key-1")
}

/// The node's address, as it serves it and as its wallet file (created in the data
/// directory on first start) says.
fn node_address(node: &Node, dir: &Path) -> String {
    let served = get(&node.addr, "/~meta@1.0/info/address", "");
    assert_eq!(served.status, 200, "{}", served.text());
    let file = hb_codec::Wallet::load(dir.join("hyperbeam-key.json"))
        .unwrap()
        .address();
    assert_eq!(served.text(), file);
    file
}

/// Spawns a `test-device@1.0` process scheduled by `scheduler` (its definition signed by
/// key-1); returns its ID. It takes slot 0.
fn spawn(addr: &str, scheduler: &str, nonce: &str) -> String {
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", scheduler)
        .with("execution-device", "test-device@1.0")
        .with("nonce", nonce);
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = exchange(addr, &post_request("/~process@1.0/schedule", &def)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(int(&a["slot"]), 0);
    assert_eq!(a["process"], pid.as_str());
    pid
}

/// The unsigned message `n` of `client` to `pid`.
fn message(pid: &str, client: i64, n: i64) -> Message {
    Message::new()
        .with("type", "Message")
        .with("target", pid)
        .with("client", client)
        .with("n", n)
}

/// POSTs message `n` of `client` to `/<pid>/schedule`: `Ok(Some(slot))` when
/// acknowledged (200), `Ok(None)` with the reply for any other status, `Err` when the
/// node went away.
fn schedule(addr: &str, pid: &str, client: i64, n: i64) -> std::io::Result<Result<i64, Reply>> {
    let r = exchange(
        addr,
        &post_request(&format!("/{pid}/schedule"), &message(pid, client, n)),
    )?;
    if r.status != 200 {
        return Ok(Err(r));
    }
    let a = r.json();
    assert_eq!(a["process"], pid, "{}", r.text());
    Ok(Ok(int(&a["slot"])))
}

fn current(addr: &str, pid: &str) -> i64 {
    let r = get(addr, &format!("/{pid}/slot/current"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().parse().unwrap()
}

// --- the store, read after the node is gone ---------------------------------------------

/// What the node's store holds for a process.
struct Stored {
    /// `(client, n)` of the message of each slot, by slot.
    bodies: Vec<(Option<i64>, Option<i64>)>,
    /// `hash-chain` of each slot, by slot.
    chains: Vec<String>,
    /// The slots with a computed state (`computed/<pid>/slot/<n>`), sorted.
    computed: Vec<i64>,
}

/// The numeric children of `path`, sorted.
fn numbered(cache: &MessageCache, path: &str) -> Vec<i64> {
    let mut all: Vec<i64> = Cache::list(cache, path)
        .unwrap()
        .unwrap_or_default()
        .iter()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("`{path}/{n}`")))
        .collect();
    all.sort_unstable();
    all
}

/// Reads the schedule of `pid` from the LMDB store in `dir` (the node must be stopped)
/// and checks it: slots contiguous from 0, each assignment for `pid` at its slot, the hash
/// chain over every message's ID unbroken (spec 04 §2.5), signed by the node (each
/// signature verified when `verify` is set).
fn read_store(dir: &Path, pid: &str, node: &str, verify: bool) -> Stored {
    let store = LmdbStore::open(dir.join("store"), Durability::Sync).unwrap();
    let cache = MessageCache::new(Arc::new(store));
    let slots = numbered(&cache, &format!("assignments/{pid}"));
    let last = slots.last().copied().unwrap_or(-1);
    assert_eq!(
        slots,
        (0..=last).collect::<Vec<_>>(),
        "stored slots are contiguous from 0"
    );
    let mut chain = Vec::new();
    let mut stored = Stored {
        bodies: Vec::new(),
        chains: Vec::new(),
        computed: numbered(&cache, &format!("computed/{pid}/slot")),
    };
    for slot in 0..=last {
        let Some(Value::Message(a)) = cache.read(&assignment_path(pid, slot)).unwrap() else {
            panic!("slot {slot} is listed but not readable");
        };
        assert_eq!(a.get("slot"), Some(&Value::Integer(slot)));
        assert_eq!(a.get_str("process"), Some(pid));
        let body = a.get("body").and_then(Value::as_message).unwrap();
        chain = next_chain(&chain, &id_all(body).unwrap().to_human());
        let link = b64url(&chain);
        assert_eq!(
            a.get_str("hash-chain"),
            Some(link.as_str()),
            "hash chain at slot {slot}"
        );
        assert_eq!(committers_of(&a), vec![node.to_owned()], "slot {slot}");
        if verify {
            let cid = a
                .get("commitments")
                .and_then(Value::as_message)
                .and_then(|c| {
                    c.iter()
                        .find(|(_, v)| v.as_message().is_some_and(|m| m.get("committer").is_some()))
                        .map(|(k, _)| k.to_string())
                })
                .unwrap();
            assert!(
                hb_codec::httpsig_commit::verify(&a, &cid).unwrap(),
                "the node's signature of slot {slot} verifies"
            );
        }
        let key = |k: &str| body.get(k).and_then(Value::as_int);
        stored.bodies.push((key("client"), key("n")));
        stored.chains.push(link);
    }
    stored
}

/// The computed state of `slot` in the store in `dir` (the node must be stopped).
fn stored_state(cache: &MessageCache, pid: &str, slot: i64) -> Message {
    match cache.read(&format!("computed/{pid}/slot/{slot}")).unwrap() {
        Some(Value::Message(m)) => m,
        other => panic!("no computed state at slot {slot}: {other:?}"),
    }
}

/// Adds `key: value` to the stored state of `slot` (in its group, in place). A node that
/// later computes from this state carries the key along; one that starts from `init`
/// and recomputes the slots cannot have it.
fn mark_state(dir: &Path, pid: &str, slot: i64, key: &str, value: &str) {
    let store = Arc::new(LmdbStore::open(dir.join("store"), Durability::Sync).unwrap());
    let group = store
        .resolve(&format!("computed/{pid}/slot/{slot}"))
        .unwrap();
    store
        .apply(&[Op::Write(
            format!("{group}/{key}"),
            bytes::Bytes::copy_from_slice(value.as_bytes()),
        )])
        .unwrap();
    let cache = MessageCache::new(store);
    let state = stored_state(&cache, pid, slot);
    assert_eq!(state.get_str(key), Some(value));
    assert!(
        cache
            .read_path(&format!("computed/{pid}/snapshot/{slot}"))
            .unwrap()
            .is_some(),
        "slot {slot} has a snapshot"
    );
    assert_eq!(state.get("at-slot"), Some(&Value::Integer(slot)));
}

/// A number that differs from run to run (no `rand` crate here).
fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

// --- the tests ------------------------------------------------------------------------

/// 8 clients × 500 POSTs at once: 4,000 distinct slots 1..=4000, none lost, none
/// duplicated; `GET schedule` pages (at most 1001, `continues`) return them in order
/// with the message each client was told; the store holds them contiguous,
/// hash-chained and signed by the node.
#[test]
fn concurrent_clients_get_distinct_contiguous_durable_slots() {
    let start = Instant::now();
    let dir = TempDir::new("concurrent");
    let node = Node::start(&dir.0);
    let address = node_address(&node, &dir.0);
    let pid = spawn(&node.addr, &address, &format!("load-{}", random()));
    let started = start.elapsed();

    let posting = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addr, pid) = (node.addr.clone(), pid.clone());
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|n| match schedule(&addr, &pid, client, n) {
                        Ok(Ok(slot)) => (slot, client, n),
                        Ok(Err(r)) => panic!("client {client}, message {n}: {r:?}"),
                        Err(e) => panic!("client {client}, message {n}: {e}"),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut told: HashMap<i64, (i64, i64)> = HashMap::new();
    for t in threads {
        for (slot, client, n) in t.join().unwrap() {
            let earlier = told.insert(slot, (client, n));
            assert!(earlier.is_none(), "slot {slot} given twice");
        }
    }
    let posted = posting.elapsed();
    let total = CLIENTS * EACH;
    let mut slots: Vec<i64> = told.keys().copied().collect();
    slots.sort_unstable();
    assert_eq!(slots, (1..=total).collect::<Vec<_>>());
    assert_eq!(current(&node.addr, &pid), total);

    // Pages of at most 1001 assignments, in order, until `continues` is false.
    let reading = Instant::now();
    let mut pages = Vec::new();
    let mut from = 0;
    while from <= total {
        let target = format!("/~scheduler@1.0/schedule?target={pid}&from={from}&to={total}");
        let r = get(&node.addr, &target, JSON);
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        let to = (from + 1000).min(total);
        let assignments = page["assignments"].as_object().unwrap();
        assert_eq!(assignments.len() as i64, to - from + 1, "page from {from}");
        let continues = page["continues"].to_string().contains("true");
        assert_eq!(
            continues,
            total - from > 1000,
            "continues, page from {from}"
        );
        // The legacy page lists them as an ordered array.
        let r = get(
            &node.addr,
            &format!("{target}&accept=application/aos-2"),
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let cursors: Vec<i64> = r.json()["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| int(&e["cursor"]))
            .collect();
        assert_eq!(cursors, (from..=to).collect::<Vec<_>>(), "in order");
        pages.push(page);
        from = to + 1;
    }
    assert_eq!(pages.len(), 4);
    let read = reading.elapsed();
    node.kill();

    // The store, read with the node gone: what the pages said, chained and signed.
    let checking = Instant::now();
    let stored = read_store(&dir.0, &pid, &address, true);
    assert_eq!(stored.bodies.len() as i64, total + 1);
    assert_eq!(stored.bodies[0], (None, None), "slot 0 is the process");
    for (slot, (client, n)) in &told {
        let slot_ix = usize::try_from(*slot).unwrap();
        assert_eq!(
            stored.bodies[slot_ix],
            (Some(*client), Some(*n)),
            "slot {slot} holds the message its client was told"
        );
    }
    let mut seen = 0;
    for page in &pages {
        for (key, a) in page["assignments"].as_object().unwrap() {
            let slot: i64 = key.parse().unwrap();
            let slot_ix = usize::try_from(slot).unwrap();
            assert_eq!(int(&a["slot"]), slot);
            assert_eq!(a["hash-chain"], stored.chains[slot_ix].as_str());
            if slot > 0 {
                assert_eq!(
                    (int(&a["body"]["client"]), int(&a["body"]["n"])),
                    told[&slot]
                );
            }
            seen += 1;
        }
    }
    assert_eq!(seen, total + 1);
    eprintln!(
        "concurrent: node up and process spawned in {started:.1?}; {total} POSTs by \
         {CLIENTS} clients in {posted:.1?} ({:.0}/s); {} pages read in {read:.1?}; \
         store checked (chain, {} signatures) in {:.1?}; total {:.1?}",
        total as f64 / posted.as_secs_f64(),
        pages.len(),
        total + 1,
        checking.elapsed(),
        start.elapsed()
    );
}

/// Three times in a row: while 8 clients post, the node is killed (SIGKILL) at a random
/// moment after at least 200 acknowledgements. Every acknowledged slot is in the store
/// with the message it was acknowledged for, the slots are contiguous and the hash chain
/// intact; the restarted node answers the same current slot and continues at the next.
///
/// Before each kill the process is computed to a slot N (every computed slot is stored
/// with a snapshot); with the node down, the test writes a marker key into the stored
/// state of N. After the restart, computing to M > N must carry the marker: the node
/// resumed from the snapshot at N. A node that started from `init` and replayed the
/// slots from 0 could not have it (and the state at N is the only one holding it).
#[test]
fn a_killed_node_loses_no_acknowledged_slot_and_resumes_from_its_snapshot() {
    let start = Instant::now();
    let dir = TempDir::new("crash");
    let mut node = Node::start(&dir.0);
    let address = node_address(&node, &dir.0);
    let pid = spawn(&node.addr, &address, &format!("crash-{}", random()));
    // Every slot ever acknowledged: slot -> (client, n).
    let mut acked: HashMap<i64, (i64, i64)> = HashMap::new();
    acked.insert(0, (-1, -1));
    // (N, M) of each round: computed to N before the kill, to M after the restart.
    let mut rounds: Vec<(i64, i64)> = Vec::new();
    const ROUNDS: i64 = 3;
    for round in 1..=ROUNDS {
        let round_start = Instant::now();
        let before = acked.len();
        let threshold = 200 + random() % 300;
        let got: Arc<Mutex<Vec<(i64, i64, i64)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (addr, pid) = (node.addr.clone(), pid.clone());
                let (got, stop) = (got.clone(), stop.clone());
                std::thread::spawn(move || {
                    // Numbered per round so that every message differs.
                    let base = round * 1_000_000;
                    for n in base..base + 2000 {
                        if stop.load(Ordering::Relaxed) {
                            return None;
                        }
                        match schedule(&addr, &pid, client, n) {
                            Ok(Ok(slot)) => got.lock().unwrap().push((slot, client, n)),
                            // Refused while the node was up: a failure.
                            Ok(Err(r)) => return Some(format!("client {client}: {r:?}")),
                            // The node is gone.
                            Err(_) => return None,
                        }
                    }
                    None
                })
            })
            .collect();
        let wait_for = |count: u64| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while (got.lock().unwrap().len() as u64) < count {
                assert!(Instant::now() < deadline, "no {count} acknowledgements");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // Compute to the newest acknowledged slot while the clients post.
        wait_for(100);
        let n = got.lock().unwrap().iter().map(|a| a.0).max().unwrap();
        let r = get(&node.addr, &format!("/{pid}/compute/at-slot?slot={n}"), "");
        assert_eq!((r.status, r.text()), (200, n.to_string()), "compute to {n}");
        wait_for(threshold);
        node.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            if let Some(failure) = t.join().unwrap() {
                panic!("round {round}: {failure}");
            }
        }
        let got = std::mem::take(&mut *got.lock().unwrap());
        for (slot, client, n) in &got {
            let earlier = acked.insert(*slot, (*client, *n));
            assert!(earlier.is_none(), "slot {slot} acknowledged twice");
        }

        // The store after the kill: every acknowledged slot, contiguous, chained.
        let stored = read_store(&dir.0, &pid, &address, false);
        let last = stored.bodies.len() as i64 - 1;
        for (slot, (client, n)) in &acked {
            assert!(*slot <= last, "acknowledged slot {slot} lost (last {last})");
            if *slot > 0 {
                let slot_ix = usize::try_from(*slot).unwrap();
                assert_eq!(stored.bodies[slot_ix], (Some(*client), Some(*n)), "{slot}");
            }
        }
        // Computed before the kill: every slot up to N, each with a snapshot.
        assert_eq!(stored.computed.last(), Some(&n));
        assert_eq!(stored.computed, (0..=n).collect::<Vec<_>>());
        let marker = format!("test-marker-{round}");
        mark_state(&dir.0, &pid, n, &marker, &format!("round {round}"));

        // Restarted: the same current slot; new messages continue after it.
        node = Node::start(&dir.0);
        assert_eq!(current(&node.addr, &pid), last);
        // This round's slots as the restarted node serves them: each acknowledged one
        // with its message, the chain as stored.
        let first = rounds.last().map_or(1, |(_, m)| m + 1);
        let r = get(
            &node.addr,
            &format!("/~scheduler@1.0/schedule?target={pid}&from={first}&to={last}"),
            JSON,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        let served = page["assignments"].as_object().unwrap();
        assert_eq!(served.len() as i64, last - first + 1);
        for slot in first..=last {
            let a = &served[&slot.to_string()];
            let slot_ix = usize::try_from(slot).unwrap();
            assert_eq!(a["hash-chain"], stored.chains[slot_ix].as_str());
            if let Some((client, n)) = acked.get(&slot) {
                let body = (int(&a["body"]["client"]), int(&a["body"]["n"]));
                assert_eq!(body, (*client, *n), "slot {slot} as served");
            }
        }
        for k in 1..=3 {
            let slot = schedule(&node.addr, &pid, 99, round * 1_000_000 + 10_000 + k)
                .unwrap()
                .unwrap();
            assert_eq!(slot, last + k);
            acked.insert(slot, (99, round * 1_000_000 + 10_000 + k));
        }
        let m = last + 3;
        assert!(m > n);
        // Computed to M from the snapshot at N: the marker came along.
        let r = get(&node.addr, &format!("/{pid}/compute/{marker}?slot={m}"), "");
        assert_eq!(
            (r.status, r.text()),
            (200, format!("round {round}")),
            "computing to {m} resumed from the snapshot at {n}"
        );
        // Asking for the initial state (slot -1, never stored) does not throw the live
        // state away: one more slot is computed from it, marker and all, not replayed
        // from `init`.
        let r = get(&node.addr, &format!("/{pid}/compute/at-slot?slot=-1"), "");
        assert_eq!((r.status, r.text()), (200, "-1".to_owned()));
        let k = round * 1_000_000 + 10_004;
        let slot = schedule(&node.addr, &pid, 99, k).unwrap().unwrap();
        assert_eq!(slot, m + 1);
        acked.insert(slot, (99, k));
        let m = m + 1;
        let r = get(&node.addr, &format!("/{pid}/compute/{marker}?slot={m}"), "");
        assert_eq!(
            (r.status, r.text()),
            (200, format!("round {round}")),
            "slot {m} computed from the live state at {}",
            m - 1
        );
        let r = get(
            &node.addr,
            &format!("/{pid}/compute/results/assignment-slot?slot={m}"),
            "",
        );
        assert_eq!((r.status, r.text()), (200, m.to_string()));
        rounds.push((n, m));
        eprintln!(
            "crash round {round}: {} acknowledged before the kill (threshold {threshold}), \
             last stored slot {last}, computed to {n} before and {m} after: {:.1?}",
            acked.len() - before - 4,
            round_start.elapsed()
        );
    }
    node.kill();

    // Finally: all of it, signatures verified; each computed state holds the markers of
    // the rounds whose N it comes after, and only those.
    let checking = Instant::now();
    let stored = read_store(&dir.0, &pid, &address, true);
    let last = stored.bodies.len() as i64 - 1;
    let (_, m_last) = rounds[rounds.len() - 1];
    assert_eq!(last, m_last);
    let mut slots: Vec<i64> = acked.keys().copied().collect();
    slots.sort_unstable();
    assert!(slots.iter().all(|s| *s <= last));
    assert_eq!(stored.computed, (0..=m_last).collect::<Vec<_>>());
    let store = LmdbStore::open(dir.0.join("store"), Durability::Sync).unwrap();
    let cache = MessageCache::new(Arc::new(store));
    for slot in 0..=m_last {
        let state = stored_state(&cache, &pid, slot);
        assert_eq!(state.get("at-slot"), Some(&Value::Integer(slot)));
        for (round, (n, _)) in rounds.iter().enumerate() {
            let marker = format!("test-marker-{}", round + 1);
            assert_eq!(
                state.get(&marker).is_some(),
                slot >= *n,
                "slot {slot}: {marker} (set at slot {n})"
            );
        }
    }
    // The last state saw every slot once, newest first.
    let seen = stored_state(&cache, &pid, m_last);
    assert_eq!(
        seen.get("already-seen"),
        Some(&Value::list(
            (0..=m_last).rev().map(Value::Integer).collect()
        ))
    );
    eprintln!(
        "crash: {ROUNDS} rounds, {} slots, rounds (N, M) {rounds:?}; final store check in \
         {:.1?}; total {:.1?}",
        last + 1,
        checking.elapsed(),
        start.elapsed()
    );
}

/// A Lua process for [`a_lua_process_is_the_same_in_two_os_processes`]: each message
/// counts and prints the `pairs()` order of 1,000 string keys.
const KEYS: &str = r#"
function compute(base, req)
  local t = {}
  for i = 1, 1000 do t["key-" .. i] = i end
  local order = {}
  for k in pairs(t) do order[#order + 1] = k end
  Count = (Count or 0) + 1
  base.count = Count
  base.results = { output = { data = Count .. ":" .. table.concat(order, ",") } }
  return base
end
"#;

/// Determinism across OS processes (issue 7): two `hb serve` processes with fresh data
/// directories (the same wallet, so the same scheduler and process ID) get the same
/// signed process and messages; `pairs()` over 1,000 string keys gives the same order
/// on both (and not insertion order), in the serverless form and in every slot, and the
/// state stored at every slot has the same ID on both.
#[test]
fn a_lua_process_is_the_same_in_two_os_processes() {
    let wallet = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-2.json"
    );
    let scheduler = hb_codec::Wallet::load(wallet).unwrap().address();
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", scheduler.as_str())
        .with("execution-device", "lua@5.3a")
        .with("module", KEYS)
        .with("nonce", "two-os-processes");
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let messages: Vec<Message> = (0..3)
        .map(|n| {
            let m = Message::new()
                .with("type", "Message")
                .with("target", pid.as_str())
                .with("action", "Keys")
                .with("n", n);
            hb_codec::httpsig_commit::commit(&m, &key1()).unwrap()
        })
        .collect();
    let serverless = "/~lua@5.3a&script=local%20t%20%3D%20%7B%7D%20for%20i%20%3D%201%2C%201000%20do%20t%5B'k'%20..%20i%5D%20%3D%20i%20end%20local%20o%20%3D%20%7B%7D%20for%20k%20in%20pairs(t)%20do%20o%5B%23o%20%2B%201%5D%20%3D%20k%20end%20return%20table.concat(o%2C%20'%2C')/result";
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let dir = TempDir::new(&format!("lua-{name}"));
        let node = Node::start_with(&dir.0, &["--wallet", wallet]);
        let r = get(&node.addr, serverless, "");
        assert_eq!(r.status, 200, "{}", r.text());
        let keys = r.text();
        assert_eq!(keys.split(',').count(), 1000);
        let r = exchange(&node.addr, &post_request("/~process@1.0/schedule", &def)).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        for m in &messages {
            let r = exchange(&node.addr, &post_request(&format!("/{pid}/schedule"), m)).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let mut outputs = Vec::new();
        for slot in 1..=3 {
            let r = get(
                &node.addr,
                &format!("/{pid}/compute/results/output/data?slot={slot}"),
                "",
            );
            assert_eq!(r.status, 200, "{}", r.text());
            outputs.push(r.text());
        }
        drop(node);
        let store = LmdbStore::open(dir.0.join("store"), Durability::Sync).unwrap();
        let cache = MessageCache::new(Arc::new(store));
        let states: Vec<String> = (0..=3)
            .map(|slot| {
                id_all(&stored_state(&cache, &pid, slot))
                    .unwrap()
                    .to_human()
            })
            .collect();
        runs.push((keys, outputs, states));
    }
    assert_eq!(runs[0], runs[1], "the two OS processes differ");
    let (keys, outputs, _) = &runs[0];
    assert_ne!(
        keys.split(',').take(3).collect::<Vec<_>>(),
        ["k1", "k2", "k3"],
        "hash order, not insertion order"
    );
    assert!(outputs[2].starts_with("4:key-"), "{}", outputs[2]);
}
