//! Several nodes (issue 8): a process scheduled by node A and computed by node B, which
//! locates A (a scheduler-location record, or the `?hint=` of the process's `scheduler`),
//! fetches the assignments it lacks, verifies and keeps them, and computes the same
//! states as A. With A stopped, B still answers what it fetched, and a newer slot is a
//! quick 502. And three nodes: a front node C whose router sends the scheduling to A
//! and the computing to B (then A, when B is down).

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Reply, get, get_with, key1, key2, post, send, start_node, verified_committers};
use hb_core::message::id_all;
use hb_core::{Cache, Message, Value};
use hb_store::{MemoryStore, MessageCache};

const JSON: &str = "accept: application/json\r\n";

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Node A, the scheduler: key-2, its own memory store.
async fn start_a() -> (hb_http::Running, Arc<MessageCache>) {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = start_node(Message::new(), cache.clone(), key2()).await;
    (node, cache)
}

/// Node B, the compute node: key-1, a memory store that reads the IDs it lacks from
/// `remote` (node A), as the `remote_nodes` option sets it up.
async fn start_b(remote: &str) -> (hb_http::Running, Arc<MessageCache>) {
    let sources = hb_store::remote::sources(None, &[remote.to_owned()]);
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())).with_sources(sources));
    let node = start_node(Message::new(), cache.clone(), key1()).await;
    (node, cache)
}

/// Spawns `def` (signed by key-1) on `addr`; its process ID.
async fn spawn(addr: SocketAddr, def: &Message) -> String {
    let def = hb_codec::httpsig_commit::commit(def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "spawn: {}", r.text());
    pid
}

/// A POST that schedules a message signed by key-1 with `action` and `n` on `pid`.
fn schedule_request(pid: &str, action: &str, n: i64) -> Vec<u8> {
    let msg = Message::new()
        .with("type", "Message")
        .with("target", pid)
        .with("action", action)
        .with("n", n);
    post(&format!("/{pid}/schedule"), &msg, Some(&key1()))
}

/// Schedules a message signed by key-1 with `action` and `n` on `addr`; the reply.
async fn schedule(addr: SocketAddr, pid: &str, action: &str, n: i64) -> Reply {
    let r = send(addr, &schedule_request(pid, action, n)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// The ID of the stored message at `path`.
fn stored_id(cache: &MessageCache, path: &str) -> String {
    match Cache::read_path(cache, path).unwrap() {
        Some(Value::Message(m)) => id_all(&m).unwrap().to_human(),
        other => panic!("{path}: {other:?}"),
    }
}

fn int(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::Number(n) => n.as_i64().unwrap(),
        serde_json::Value::String(s) => s.parse().unwrap(),
        other => panic!("not an integer: {other}"),
    }
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// A's scheduler-location record (signed by A's key), given to B as a peer would.
async fn tell_location(b: SocketAddr, a_url: &str) {
    let record = Message::new()
        .with("data-protocol", "ao")
        .with("variant", "ao.N.1")
        .with("type", "scheduler-location")
        .with("url", a_url)
        .with("nonce", 1i64)
        .with("time-to-live", 3_600_000i64)
        .with("codec-device", "httpsig@1.0");
    let r = send(b, &post("/~scheduler@1.0/location", &record, Some(&key2()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_scheduled_on_one_node_computes_the_same_on_another() {
    let (a, cache_a) = start_a().await;
    let (b, cache_b) = start_b(&url(a.addr)).await;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "test-device@1.0")
        .with("nonce", "multi-node");
    let pid = spawn(a.addr, &def).await;
    for n in 1..=10 {
        schedule(a.addr, &pid, "Ping", n).await;
    }

    // B does not know where A is yet: a clear 404, nothing fetched.
    let r = send(
        b.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=3")),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("does not know"), "{}", r.text());
    tell_location(b.addr, &url(a.addr)).await;

    // B computes: the process definition from A (its remote source), the assignments
    // from A's scheduler, the states its own.
    let r = send(
        b.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=5")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "5"), "{}", r.text());
    let r = send(b.addr, &get(&format!("/{pid}~process@1.0/now/at-slot"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "10"), "{}", r.text());
    let r = send(
        a.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=10")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "10"), "{}", r.text());
    for slot in 0..=10 {
        let assignment = format!("assignments/{pid}/{slot}");
        assert_eq!(
            stored_id(&cache_a, &assignment),
            stored_id(&cache_b, &assignment),
            "assignment {slot}"
        );
        let state = format!("computed/{pid}/slot/{slot}");
        assert_eq!(
            stored_id(&cache_a, &state),
            stored_id(&cache_b, &state),
            "state {slot}"
        );
    }
    let seen = |addr| {
        let path = format!("/{pid}~process@1.0/compute/already-seen?slot=10");
        async move {
            let r = send(addr, &get_with(&path, JSON)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            // Each node signs its reply: the list without the signatures.
            let mut list = json(&r);
            list.as_object_mut().unwrap().remove("commitments");
            list
        }
    };
    let seen_b = seen(b.addr).await;
    assert_eq!(seen_b, seen(a.addr).await);
    assert_eq!(int(&seen_b["1"]), 10, "{seen_b}");
    assert_eq!(int(&seen_b["11"]), 0, "{seen_b}");

    // B's scheduler answers for the remote process: its current slot (asked of A) and
    // its schedule (from what B keeps).
    let r = send(
        b.addr,
        &get_with(&format!("/~scheduler@1.0/slot?target={pid}"), JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(int(&json(&r)["current"]), 10);
    assert_eq!(json(&r)["wallet-address"], key2().address().as_str());
    let r = send(
        b.addr,
        &get_with(
            &format!("/~scheduler@1.0/schedule?target={pid}&from=2&to=6"),
            JSON,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = json(&r);
    for slot in 2..=6 {
        assert_eq!(int(&page["assignments"][slot.to_string()]["slot"]), slot);
    }
    assert!(page["assignments"].get("7").is_none());

    // Two more messages on A; then A stops before B has read them.
    schedule(a.addr, &pid, "Ping", 11).await;
    schedule(a.addr, &pid, "Ping", 12).await;
    let state_a_12 = {
        let r = send(
            a.addr,
            &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=12")),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        stored_id(&cache_a, &format!("computed/{pid}/slot/12"))
    };
    let a_url = url(a.addr);
    a.stop().await;

    // What B fetched is B's: computed slots, and slots it fetched but never computed.
    for slot in [10, 3] {
        let r = send(
            b.addr,
            &get(&format!("/{pid}~process@1.0/compute/at-slot?slot={slot}")),
        )
        .await;
        assert_eq!((r.status, r.text()), (200, slot.to_string()), "slot {slot}");
    }
    let r = send(
        b.addr,
        &get_with(
            &format!("/~scheduler@1.0/schedule?target={pid}&from=0&to=10"),
            JSON,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(int(&json(&r)["assignments"]["10"]["slot"]), 10);

    // A newer slot needs A: a clear 502, at once.
    for path in [
        format!("/{pid}~process@1.0/compute/at-slot?slot=12"),
        format!("/{pid}~process@1.0/now/at-slot"),
        format!("/~scheduler@1.0/slot?target={pid}"),
    ] {
        expect_error(b.addr, &path, 502, &["cannot be reached", &a_url]).await;
    }

    // A back on another port (the same store): B follows A's new record and catches up
    // to the same state.
    let a2 = start_node(Message::new(), cache_a.clone(), key2()).await;
    let record = Message::new()
        .with("data-protocol", "ao")
        .with("variant", "ao.N.1")
        .with("type", "scheduler-location")
        .with("url", url(a2.addr).as_str())
        .with("nonce", 2i64);
    let r = send(
        b.addr,
        &post("/~scheduler@1.0/location", &record, Some(&key2())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        b.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=12")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "12"), "{}", r.text());
    assert_eq!(
        stored_id(&cache_b, &format!("computed/{pid}/slot/12")),
        state_a_12
    );
    a2.stop().await;
    b.stop().await;
}

/// The Lua process of the lua tests' determinism check, in short: it counts, and its
/// output depends on the assignment's time and the seeded random numbers.
const COUNTER: &str = r#"
function compute(base, req)
  Count = (Count or 0) + 1
  base.count = Count
  base.results = { output = { data = "Count: " .. Count .. " at " .. os.time() .. " r " .. math.random(1000000) } }
  return base
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lua_process_found_by_its_hint_computes_the_same_on_another_node() {
    let (a, cache_a) = start_a().await;
    let (b, cache_b) = start_b(&url(a.addr)).await;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with(
            "scheduler",
            format!("{}?hint={}", key2().address(), url(a.addr)).as_str(),
        )
        .with("execution-device", "lua@5.3a")
        .with("module", COUNTER)
        .with("nonce", "multi-node-lua");
    let pid = spawn(a.addr, &def).await;
    for n in 1..=4 {
        schedule(a.addr, &pid, "Count", n).await;
    }
    let output = |addr| {
        let pid = pid.clone();
        async move {
            let r = send(
                addr,
                &get(&format!(
                    "/{pid}~process@1.0/compute/results/output/data?slot=4"
                )),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.text()
        }
    };
    let on_b = output(b.addr).await;
    assert!(on_b.starts_with("Count: 5 at "), "{on_b}");
    assert_eq!(on_b, output(a.addr).await);
    let state = format!("computed/{pid}/slot/4");
    assert_eq!(stored_id(&cache_a, &state), stored_id(&cache_b, &state));
    a.stop().await;
    b.stop().await;
}

/// How long a request to the front node may take before the test fails (it must not
/// hang, whichever node is down).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// [`send`], failing the test if no reply comes within [`ANSWER_WITHIN`].
async fn send_within(addr: SocketAddr, req: &[u8]) -> Reply {
    let started = Instant::now();
    let r = tokio::time::timeout(ANSWER_WITHIN, send(addr, req))
        .await
        .unwrap_or_else(|_| panic!("no reply within {ANSWER_WITHIN:?}"));
    assert!(started.elapsed() < ANSWER_WITHIN, "{:?}", started.elapsed());
    r
}

/// A GET of `path` on `addr` answers `status` within [`ANSWER_WITHIN`], its text
/// naming each of `says`.
async fn expect_error(addr: SocketAddr, path: &str, status: u16, says: &[&str]) {
    let r = send_within(addr, &get(path)).await;
    assert_eq!(r.status, status, "{path}: {}", r.text());
    for s in says {
        assert!(r.text().contains(s), "{path}: no `{s}` in {}", r.text());
    }
}

/// The front node's routes, nested as the `config.flat` lines
///
/// ```text
/// routes/1/template: /(schedule|slot)(/|\?|$)
/// routes/1/node/prefix: <A>
/// routes/2/template: /(compute|now)(/|\?|$)
/// routes/2/nodes/1/prefix: <B>
/// routes/2/nodes/2/prefix: <A>
/// ```
///
/// give them: scheduling (`/~process@1.0/schedule`, `/<pid>/schedule`, `/<pid>/slot/…`,
/// `/~scheduler@1.0/slot`) to A; computing (`…/compute/…`, `…/now/…`) to B, then A —
/// no `strategy` is `All`, a multirequest asking the nodes in order until one replies
/// (`responses: 1`), so A computes when B cannot be reached.
fn front_routes(a: &str, b: &str) -> Message {
    let node = |url: &str| Message::new().with("prefix", url);
    Message::new()
        .with(
            "1",
            Message::new()
                .with("template", r"/(schedule|slot)(/|\?|$)")
                .with("node", node(a)),
        )
        .with(
            "2",
            Message::new()
                .with("template", r"/(compute|now)(/|\?|$)")
                .with(
                    "nodes",
                    Message::new().with("1", node(b)).with("2", node(a)),
                ),
        )
}

/// Issue 8: three nodes on loopback. A schedules, B computes, and C, the front node,
/// runs the router's `preprocess` request hook: a process and its messages sent to C
/// are scheduled by A, its slots computed through C by B, with the same states as A
/// computes; every reply is signed by the node that answered. With B stopped, C's
/// compute requests go to A (same results, signed by A) at once; with A stopped too, a
/// clear 502 naming both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_front_router_sends_scheduling_to_one_node_and_computing_to_another() {
    let (a, cache_a) = start_a().await;
    let (b, cache_b) = start_b(&url(a.addr)).await;
    tell_location(b.addr, &url(a.addr)).await;
    let (a_url, b_url) = (url(a.addr), url(b.addr));
    let (a_signs, b_signs) = (vec![key2().address()], vec![key1().address()]);
    let cache_c = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let hook = Message::new().with(
        "request",
        Message::new()
            .with("device", "router@1.0")
            .with("path", "preprocess"),
    );
    let c = start_node(
        Message::new()
            .with("routes", front_routes(&a_url, &b_url))
            .with("on", hook),
        cache_c.clone(),
        hb_codec::Wallet::generate().unwrap(),
    )
    .await;

    // Through C: the process and its messages go to A, which answers.
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "test-device@1.0")
        .with("nonce", "three-nodes");
    let pid = spawn(c.addr, &def).await;
    for n in 1..=10 {
        let r = schedule(c.addr, &pid, "Ping", n).await;
        assert_eq!(verified_committers(&r), a_signs, "A scheduled message {n}");
    }
    let r = send(c.addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "10"), "{r:?}");
    assert_eq!(verified_committers(&r), a_signs);
    let r = send(a.addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "10"), "{r:?}");

    // Through C, B computes each slot (fetching the assignments from A); A computes the
    // same results and states.
    for slot in 0..=10 {
        let path = format!("/{pid}~process@1.0/compute/at-slot?slot={slot}");
        let via_c = send(c.addr, &get(&path)).await;
        assert_eq!((via_c.status, via_c.text()), (200, slot.to_string()));
        assert_eq!(
            verified_committers(&via_c),
            b_signs,
            "B computed slot {slot}"
        );
        let on_a = send(a.addr, &get(&path)).await;
        assert_eq!(
            (on_a.status, on_a.text()),
            (200, via_c.text()),
            "slot {slot}"
        );
        let state = format!("computed/{pid}/slot/{slot}");
        assert_eq!(
            stored_id(&cache_b, &state),
            stored_id(&cache_a, &state),
            "state {slot}"
        );
        assert!(
            Cache::read_path(cache_c.as_ref(), &state)
                .unwrap()
                .is_none()
        );
    }
    let r = send(c.addr, &get(&format!("/{pid}~process@1.0/now/at-slot"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "10"), "{r:?}");
    assert_eq!(verified_committers(&r), b_signs);

    // An aos-style Lua process the same way: its output (which depends on each
    // assignment's time and the seeded random numbers) is the same on B as on A.
    let lua = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "lua@5.3a")
        .with("module", COUNTER)
        .with("nonce", "three-nodes-lua");
    let lua_pid = spawn(c.addr, &lua).await;
    for n in 1..=3 {
        schedule(c.addr, &lua_pid, "Count", n).await;
    }
    let path = format!("/{lua_pid}~process@1.0/compute/results/output/data?slot=3");
    let via_c = send(c.addr, &get(&path)).await;
    assert_eq!(via_c.status, 200, "{via_c:?}");
    assert!(via_c.text().starts_with("Count: 4 at "), "{}", via_c.text());
    assert_eq!(verified_committers(&via_c), b_signs);
    let on_a = send(a.addr, &get(&path)).await;
    assert_eq!((on_a.status, on_a.text()), (200, via_c.text()));
    let state = format!("computed/{lua_pid}/slot/3");
    assert_eq!(stored_id(&cache_b, &state), stored_id(&cache_a, &state));

    // B stops. C cannot reach it and asks A, which answers at once: what it computed,
    // and a slot it computes now.
    b.stop().await;
    let r = send_within(c.addr, &schedule_request(&pid, "Ping", 11)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(verified_committers(&r), a_signs);
    for (path, want) in [
        (format!("/{pid}~process@1.0/compute/at-slot?slot=10"), "10"),
        (format!("/{pid}~process@1.0/compute/at-slot?slot=11"), "11"),
        (format!("/{pid}~process@1.0/now/at-slot"), "11"),
        (
            format!("/{lua_pid}~process@1.0/compute/results/output/data?slot=3"),
            via_c.text().as_str(),
        ),
    ] {
        let r = send_within(c.addr, &get(&path)).await;
        assert_eq!((r.status, r.text().as_str()), (200, want), "{path}: {r:?}");
        assert_eq!(verified_committers(&r), a_signs, "{path}: A answered");
    }

    // A stops too: a clear 502 at once, naming the nodes C tried and why.
    a.stop().await;
    let path = format!("/{pid}~process@1.0/compute/at-slot?slot=11");
    let r = send_within(c.addr, &get(&path)).await;
    assert_eq!(r.status, 502, "{r:?}");
    for says in [
        "no_viable_responses",
        "none of the 2 nodes",
        "cannot be reached",
        &format!("{b_url}/{pid}"),
        &format!("{a_url}/{pid}"),
    ] {
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
    let r = send_within(c.addr, &schedule_request(&pid, "Ping", 12)).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.text().contains("cannot be reached"), "{}", r.text());
    assert!(r.text().contains(&a_url), "{}", r.text());
    c.stop().await;
}

/// What a scheduler node answers is verified: assignments signed by another key than
/// the scheduler's, or whose hash chain breaks, are refused with a 502 that says why,
/// and only the verified ones before them are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assignments_that_do_not_verify_are_refused() {
    // The process names key-2 as its scheduler, with a hint to node "A", which holds
    // (but does not know the process, so serves as they are) assignments that it did
    // not make properly.
    let cache_a = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let a = start_node(Message::new(), cache_a.clone(), key1()).await;
    let (b, cache_b) = start_b(&url(a.addr)).await;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with(
            "scheduler",
            format!("{}?hint={}", key2().address(), url(a.addr)).as_str(),
        )
        .with("execution-device", "test-device@1.0")
        .with("nonce", "forged");
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    Cache::store_message(cache_b.as_ref(), &def, std::slice::from_ref(&pid)).unwrap();

    let assignment = |slot: i64, body: &Message, prev: &[u8], signer: &hb_codec::Wallet| {
        let chain = hb_devices::scheduler::next_chain(prev, &id_all(body).unwrap().to_human());
        let a = Message::new()
            .with("path", "compute")
            .with("data-protocol", "ao")
            .with("variant", "ao.N.1")
            .with("process", pid.as_str())
            .with("epoch", "0")
            .with("slot", slot)
            .with("block-height", 0i64)
            .with("block-hash", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .with("block-timestamp", 0i64)
            .with("timestamp", 1_700_000_000_000i64)
            .with("hash-chain", hb_core::id::b64url(&chain).as_str())
            .with("body", body.clone());
        (hb_codec::httpsig_commit::commit(&a, signer).unwrap(), chain)
    };
    let msg = |n: i64| {
        hb_codec::httpsig_commit::commit(
            &Message::new()
                .with("type", "Message")
                .with("target", pid.as_str())
                .with("n", n),
            &key1(),
        )
        .unwrap()
    };
    let keep = |a: &Message, slot: i64| {
        Cache::store_message(cache_a.as_ref(), a, &[format!("assignments/{pid}/{slot}")]).unwrap();
    };
    // Slot 0, right; slot 1 chained to nothing (a broken chain).
    let (zero, _) = assignment(0, &def, b"", &key2());
    keep(&zero, 0);
    let (one, _) = assignment(1, &msg(1), b"", &key2());
    keep(&one, 1);
    let r = send(
        b.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=1")),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("hash-chain"), "{}", r.text());
    assert!(r.text().contains("slot 1"), "{}", r.text());
    let kept = |slot: i64| {
        Cache::read_path(cache_b.as_ref(), &format!("assignments/{pid}/{slot}"))
            .unwrap()
            .is_some()
    };
    assert!(
        kept(0) && !kept(1),
        "the verified slot 0 is kept, slot 1 is not"
    );
    let r = send(
        b.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=0")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "0"), "{}", r.text());

    // A process whose assignments are signed by A's own key (key-1), not key-2's.
    let def2 = hb_codec::httpsig_commit::commit(
        &def.clone().without("commitments").with("nonce", "forged-2"),
        &key1(),
    )
    .unwrap();
    let pid2 = id_all(&def2).unwrap().to_human();
    Cache::store_message(cache_b.as_ref(), &def2, std::slice::from_ref(&pid2)).unwrap();
    let a0 = Message::new()
        .with("process", pid2.as_str())
        .with("slot", 0i64)
        .with(
            "hash-chain",
            hb_core::id::b64url(&hb_devices::scheduler::next_chain(
                b"",
                &id_all(&def2).unwrap().to_human(),
            ))
            .as_str(),
        )
        .with("body", def2.clone());
    let a0 = hb_codec::httpsig_commit::commit(&a0, &key1()).unwrap();
    Cache::store_message(cache_a.as_ref(), &a0, &[format!("assignments/{pid2}/0")]).unwrap();
    let r = send(
        b.addr,
        &get(&format!("/{pid2}~process@1.0/compute/at-slot?slot=0")),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("scheduler"), "{}", r.text());
    assert!(
        Cache::read_path(cache_b.as_ref(), &format!("assignments/{pid2}/0"))
            .unwrap()
            .is_none()
    );
    a.stop().await;
    b.stop().await;
}

/// Two nodes that each name the other as the scheduler (neither is): the requests do
/// not bounce between them; B answers a clear error soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_pointing_at_each_other_do_not_loop() {
    let (a, _cache_a) = start_a().await;
    let (b, cache_b) = start_b(&url(a.addr)).await;
    // The scheduler is a third address; A and B both know it at the other's URL.
    let third = "Q".repeat(43);
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", third.as_str())
        .with("execution-device", "test-device@1.0");
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    for (cache, other) in [(&_cache_a, b.addr), (&cache_b, a.addr)] {
        Cache::store_message(cache.as_ref(), &def, std::slice::from_ref(&pid)).unwrap();
        let record = Message::new()
            .with("type", "scheduler-location")
            .with("url", url(other).as_str());
        Cache::store_message(
            cache.as_ref(),
            &record,
            &[format!("scheduler-locations/{third}/1")],
        )
        .unwrap();
    }
    for path in [
        format!("/{pid}~process@1.0/compute/at-slot?slot=0"),
        format!("/~scheduler@1.0/slot?target={pid}"),
        format!("/~scheduler@1.0/schedule?target={pid}"),
    ] {
        expect_error(b.addr, &path, 502, &["redirect"]).await;
    }
    a.stop().await;
    b.stop().await;
}

/// A stand-in Arweave gateway on loopback: every request gets `graphql` (the answer to
/// a GraphQL query). Serves `max` connections, for at most 30 s.
fn fake_gateway(graphql: Vec<u8>, max: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let started = Instant::now();
        for stream in listener.incoming().take(max) {
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // The head and a body of the announced length (a GraphQL query is small).
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                graphql.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&graphql);
        }
    });
    base
}

/// With neither a hint nor a record, B finds A through its gateway's GraphQL: the
/// newest `Type: Scheduler-Location` item signed by A's key, which B verifies and
/// keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_is_found_through_the_gateway() {
    let (a, cache_a) = start_a().await;
    // A's record as an ANS-104 item signed by A's key, as a gateway lists it.
    let item = hb_codec::ans104::DataItem {
        tags: vec![
            (b"Type".to_vec(), b"Scheduler-Location".to_vec()),
            (b"Variant".to_vec(), b"ao.N.1".to_vec()),
            (b"Url".to_vec(), url(a.addr).into_bytes()),
            (b"Time-To-Live".to_vec(), b"3600000".to_vec()),
        ],
        ..Default::default()
    }
    .signed(&key2())
    .unwrap();
    let b64 = hb_core::id::b64url;
    let tags: Vec<serde_json::Value> = item
        .tags
        .iter()
        .map(|(n, v)| {
            serde_json::json!({
                "name": String::from_utf8_lossy(n),
                "value": String::from_utf8_lossy(v)
            })
        })
        .collect();
    let graphql = serde_json::json!({ "data": { "transactions": { "edges": [ { "node": {
        "id": item.id().to_human(),
        "anchor": "",
        "signature": b64(&item.signature),
        "recipient": "",
        "owner": { "key": b64(&item.owner) },
        "fee": { "winston": "0" },
        "quantity": { "winston": "0" },
        "tags": tags,
        "data": { "size": "0" },
    } } ] } } })
    .to_string()
    .into_bytes();
    let gateway = fake_gateway(graphql, 4);

    let sources = hb_store::remote::sources(None, &[url(a.addr)]);
    let cache_b = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())).with_sources(sources));
    let b = start_node(
        Message::new().with("gateway", gateway.as_str()),
        cache_b.clone(),
        key1(),
    )
    .await;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "test-device@1.0")
        .with("nonce", "through-the-gateway");
    let pid = spawn(a.addr, &def).await;
    schedule(a.addr, &pid, "Ping", 1).await;
    schedule(a.addr, &pid, "Ping", 2).await;
    let r = send(b.addr, &get(&format!("/{pid}~process@1.0/now/at-slot"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "2"), "{}", r.text());
    // The record is B's now: found again without the gateway.
    let r = send(
        b.addr,
        &get_with(
            &format!("/~scheduler@1.0/location?address={}", key2().address()),
            JSON,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["body"]["url"], url(a.addr).as_str());
    let r = send(
        a.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=2")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let state = format!("computed/{pid}/slot/2");
    assert_eq!(stored_id(&cache_a, &state), stored_id(&cache_b, &state));
    a.stop().await;
    b.stop().await;
}

/// A scheduler URL that answers something else is a clear 502; one that never answers
/// is a 504 within `scheduler_remote_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unusable_scheduler_nodes_are_clear_errors() {
    let not_a_node = fake_gateway(br#"{"hello":"world"}"#.to_vec(), 4);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let b = start_node(
        Message::new().with("scheduler_remote_timeout", 500i64),
        cache.clone(),
        key1(),
    )
    .await;
    for (nonce, at, status, says) in [
        ("elsewhere", not_a_node.as_str(), 502, "not a schedule"),
        ("silent", silent_url.as_str(), 504, "in time"),
    ] {
        let def = Message::new()
            .with("device", "process@1.0")
            .with("type", "Process")
            .with(
                "scheduler",
                format!("{}?hint={at}", key2().address()).as_str(),
            )
            .with("execution-device", "test-device@1.0")
            .with("nonce", nonce);
        let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
        let pid = id_all(&def).unwrap().to_human();
        Cache::store_message(cache.as_ref(), &def, std::slice::from_ref(&pid)).unwrap();
        let path = format!("/{pid}~process@1.0/compute/at-slot?slot=0");
        expect_error(b.addr, &path, status, &[says]).await;
    }
    drop(silent);
    b.stop().await;
}
