//! aos processes on the WASM stack over HTTP (spec 06 §2.6–§2.8, the seed tutorial's
//! flows): the aos-2-pure-xs module in the node's cache, a process spawned on
//! `[wasi@1.0, json-iface@1.0, wasm-64@1.0, multipass@1.0]` and Eval messages
//! scheduled to it; a runaway message stopped by its fuel and a memory bomb by the
//! memory cap, with the process carrying on; a process whose worker was evicted
//! continuing from its stored snapshot; and an aoconnect-style `genesis-wasm@1.0`
//! spawn.
//!
//! The node's wasm engine (and so the compiled module) is shared by every node of this
//! test binary.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Reply, get, key1, key2, post, send};
use hb_core::message::id_all;
use hb_core::{Cache, Message, Value};
use hb_store::{MemoryStore, MessageCache};

const AOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/aos-2-pure-xs.wasm"
);

fn aos_bytes() -> Bytes {
    Bytes::from(std::fs::read(AOS).unwrap_or_else(|e| {
        panic!(
            "fixture {AOS} is missing ({e}); the tests need shared/fixtures beside the repository"
        )
    }))
}

fn new_cache() -> Arc<MessageCache> {
    Arc::new(MessageCache::new(Arc::new(MemoryStore::new())))
}

/// The tutorial's process: the AO stack over `image`, scheduled by the node (key 2),
/// signed by key 1.
fn aos_process(image: &str, nonce: &str) -> Message {
    let list = |items: &[&str]| Value::list(items.iter().map(|s| Value::text(s)).collect());
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "stack@1.0")
        .with(
            "device-stack",
            list(&["wasi@1.0", "json-iface@1.0", "wasm-64@1.0", "multipass@1.0"]),
        )
        .with("passes", 2i64)
        .with("output-prefix", "wasm")
        .with(
            "stack-keys",
            list(&["init", "compute", "snapshot", "normalize"]),
        )
        .with("image", image)
        .with("patch-from", "/results/outbox")
        .with("nonce", nonce);
    hb_codec::httpsig_commit::commit(&def, &key1()).unwrap()
}

async fn spawn(addr: std::net::SocketAddr, def: &Message) -> String {
    let r = send(addr, &post("/~process@1.0/schedule", def, None)).await;
    assert_eq!(r.status, 200, "spawn: {}", r.text());
    id_all(def).unwrap().to_human()
}

/// Schedules an Eval of `code`, signed by key 1; its slot.
async fn eval(addr: std::net::SocketAddr, pid: &str, code: &str) -> i64 {
    let msg = Message::new()
        .with("type", "Message")
        .with("target", pid)
        .with("action", "Eval")
        .with("data", code);
    let r = send(
        addr,
        &post(&format!("/{pid}/schedule"), &msg, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "schedule: {}", r.text());
    let r = send(addr, &get(&format!("/{pid}/slot/current"))).await;
    r.text().parse().unwrap()
}

async fn now_data(addr: std::net::SocketAddr, pid: &str) -> Reply {
    send(addr, &get(&format!("/{pid}/now/results/data"))).await
}

/// `results/data` of a slot.
async fn data_at(addr: std::net::SocketAddr, pid: &str, slot: i64) -> Reply {
    send(
        addr,
        &get(&format!("/{pid}/compute/results/data?slot={slot}")),
    )
    .await
}

/// The tutorial's evaluations, a runaway loop, a memory bomb, and the messages after
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aos_evaluations_over_http() {
    let cache = new_cache();
    let image = cache
        .write(&Message::new().with("body", aos_bytes()))
        .unwrap()
        .to_human();
    let options = Message::new()
        // About 0.1 s of wasm per message, and at most 32 MiB of memory.
        .with("wasm_fuel_per_message", 1_000_000_000i64)
        .with("wasm_memory_limit", 32i64 << 20);
    let node = common::start_node(options, cache.clone(), key2()).await;
    let addr = node.addr;
    let pid = spawn(addr, &aos_process(&image, "evals")).await;

    let started = Instant::now();
    eval(addr, &pid, "X = 10").await;
    eval(addr, &pid, "X = X * 2").await;
    assert_eq!(eval(addr, &pid, "return X").await, 3);
    let r = now_data(addr, &pid).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "20");
    eprintln!(
        "first evaluations (module compiled) in {:?}",
        started.elapsed()
    );

    for _ in 0..3 {
        eval(
            addr,
            &pid,
            r#"Count = (Count or 0) + 1; return "Count: " .. Count"#,
        )
        .await;
    }
    let slot = eval(addr, &pid, "return Count").await;
    assert_eq!(data_at(addr, &pid, slot - 1).await.text(), "Count: 3");
    assert_eq!(now_data(addr, &pid).await.text(), "3");

    let slot = eval(addr, &pid, r#"error("boom")"#).await;
    let r = data_at(addr, &pid, slot).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().ends_with("boom"), "{}", r.text());

    // A runaway loop: the slot's result is an error, within a second.
    let slot = eval(addr, &pid, "X = 0 while true do end").await;
    let t = Instant::now();
    let r = send(addr, &get(&format!("/{pid}/compute/results?slot={slot}"))).await;
    let took = t.elapsed();
    eprintln!("runaway loop stopped in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(r.status, 500, "{}", r.text());
    let r = send(
        addr,
        &get(&format!("/{pid}/compute/results/error?slot={slot}")),
    )
    .await;
    assert!(r.text().contains("fuel"), "{}", r.text());
    // The next message works, on the memory from before the loop (X = 20, not 0).
    let slot = eval(addr, &pid, "return X").await;
    assert_eq!(data_at(addr, &pid, slot).await.text(), "20");

    // A memory bomb stops at the cap: the memory cannot grow past it, Lua's allocation
    // fails, and aos says so.
    let t = Instant::now();
    let slot = eval(addr, &pid, r#"local s = "x" while true do s = s .. s end"#).await;
    let r = data_at(addr, &pid, slot).await;
    eprintln!("memory bomb stopped in {:?}", t.elapsed());
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("not enough memory"), "{}", r.text());
    let Some(Value::Message(stored)) = cache
        .read_path(&format!("computed/{pid}/slot/{slot}"))
        .unwrap()
    else {
        panic!("slot {slot} stored");
    };
    let memory = stored
        .get("snapshot")
        .and_then(Value::as_message)
        .and_then(|s| s.get("3"))
        .and_then(Value::as_message)
        .and_then(|w| w.get("body"))
        .and_then(Value::as_bytes)
        .map_or(0, <[u8]>::len);
    assert!(
        memory > 12 << 20 && memory <= 32 << 20,
        "the memory grew up to the cap: {memory} bytes"
    );
    let slot = eval(addr, &pid, "collectgarbage() return X + 1").await;
    assert_eq!(data_at(addr, &pid, slot).await.text(), "21");
    node.stop().await;
}

/// A process whose worker is evicted (`process_worker_max_idle: 0`: any request for
/// another process drops it) continues from its stored snapshot; the module is
/// uploaded through `cache@1.0`; an aoconnect-style spawn runs on `genesis-wasm@1.0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_from_snapshot_and_genesis_wasm() {
    let cache = new_cache();
    let options = Message::new()
        .with("process_worker_max_idle", 0i64)
        .with("cache_writers", key1().address().as_str());
    let node = common::start_node(options, cache.clone(), key2()).await;
    let addr = node.addr;

    // The module, uploaded by a trusted writer: its path is `data/<hash>`.
    let bytes = aos_bytes();
    let write = Message::new().with("body", bytes.clone());
    let r = send(addr, &post("/~cache@1.0/write", &write, Some(&key1()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let path = hb_core::cache::data_path(&bytes);
    assert!(r.text().contains(&path) || r.header("path") == Some(path.as_str()));

    let a = spawn(addr, &aos_process(&path, "restart")).await;
    eval(addr, &a, "X = 42").await;
    let r = now_data(addr, &a).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let Some(Value::Message(stored)) = cache.read_path(&format!("computed/{a}/slot/1")).unwrap()
    else {
        panic!("slot 1 stored");
    };
    assert!(
        stored.get("snapshot").is_some(),
        "slot 1 stored with a snapshot"
    );

    // A genesis-wasm process, as aoconnect spawns it (`module`, no stack): computing
    // it evicts A's worker.
    let module = cache
        .write(&Message::new().with("body", bytes.clone()))
        .unwrap()
        .to_human();
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "genesis-wasm@1.0")
        .with("module", module.as_str())
        .with("nonce", "genesis");
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let b = spawn(addr, &def).await;
    eval(addr, &b, "return 1 + 1").await;
    let r = now_data(addr, &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "2");

    // A again: its state comes back from the snapshot of slot 1.
    let slot = eval(addr, &a, "return X").await;
    let r = data_at(addr, &a, slot).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "42");
    let r = send(addr, &get(&format!("/{a}/compute/at-slot?slot=2"))).await;
    assert_eq!(r.text(), "2");
    node.stop().await;
}
