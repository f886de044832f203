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
use common::{Reply, get, get_with, key1, key2, post, send};
use hb_core::message::id_all;
use hb_core::{Cache, Id, Message};
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
    let def = hb_devices::genesis_wasm::process_definition(key2().address().as_str(), image)
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
    // Asked for as aoconnect's `result()` asks: a computed slot, its `Error` in `raw`.
    let r = send(
        addr,
        &get_with(
            &format!("/{pid}~process@1.0/compute/results={slot}"),
            "accept: application/json\r\n",
        ),
    )
    .await;
    let answer = json_of(&r);
    let error = answer["raw"]["Error"].as_str().unwrap_or_default();
    assert!(error.contains("fuel"), "{answer}");
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
    // The memory as it is now (the process's snapshot of its latest state).
    let r = send(addr, &get(&format!("/{pid}/now/snapshot/3/body"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let memory = r.body.len();
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
    let snapshot_of = |slot: i64| {
        cache
            .read_path(&format!("computed/{a}/snapshot/{slot}"))
            .unwrap()
            .is_some()
    };
    // The default policy: the worker's first slot; slot 1 cost far less than that.
    assert!(snapshot_of(0) && !snapshot_of(1));

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
    // A's worker, dropped, stored its live state's snapshot first.
    assert!(
        snapshot_of(1),
        "slot 1's snapshot stored when A's worker was dropped"
    );

    // A again: its state comes back from the snapshot of slot 1.
    let slot = eval(addr, &a, "return X").await;
    let r = data_at(addr, &a, slot).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "42");
    let r = send(addr, &get(&format!("/{a}/compute/at-slot?slot=2"))).await;
    assert_eq!(r.text(), "2");
    node.stop().await;
}

/// A POST of a data item signed by key 1 with the tags exactly as given (aoconnect's
/// mixed case, so the item keeps `original-tags`); the item's ID and the request.
fn aoconnect_item(
    target_path: &str,
    to: Option<&str>,
    tags: &[(&str, &str)],
    data: &str,
) -> (String, Vec<u8>) {
    let mut item = hb_codec::ans104::DataItem {
        target: to.map(|t| Id::from_human(t.as_bytes()).unwrap().0),
        tags: tags
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        data: Bytes::from(data.to_owned()),
        ..Default::default()
    };
    item.sign(&key1()).unwrap();
    let body = item.to_bytes();
    let mut req = format!(
        "POST {target_path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/ans104\r\ncodec-device: ans104@1.0\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    (item.id().to_human(), req)
}

/// The tags aoconnect 0.0.98 puts on a message, result or dry-run item (spec 07 §1.2).
const AOCONNECT_JSON: [(&str, &str); 6] = [
    ("signing-format", "ans104"),
    ("accept-bundle", "true"),
    ("require-codec", "application/json"),
    ("Data-Protocol", "ao"),
    ("Type", "Message"),
    ("Variant", "ao.N.1"),
];

fn json_of(r: &Reply) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// aoconnect's mainnet calls on a `genesis-wasm@1.0` aos process (spec 07 §1.2): the
/// pushed message's `id`; `compute/results=<slot or message ID>` answering that slot's
/// result as `raw` (`Output`, `Error` in their own case), also for an earlier slot;
/// and a dry run (`as=execution/compute&Action=Eval`, the tag only in the path) that
/// sees the state, takes no slot and answers a JSON reply although the state holds a
/// process signed as a data item.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aoconnect_calls_on_a_genesis_wasm_process() {
    let cache = new_cache();
    let module = cache
        .write(&Message::new().with("body", aos_bytes()))
        .unwrap()
        .to_human();
    let node = common::start_node(Message::new(), cache.clone(), key2()).await;
    let addr = node.addr;
    let scheduler = key2().address();
    let (pid, req) = aoconnect_item(
        "/push",
        None,
        &[
            ("device", "process@1.0"),
            ("scheduler-device", "scheduler@1.0"),
            ("push-device", "push@1.0"),
            ("execution-device", "genesis-wasm@1.0"),
            ("Authority", scheduler.as_str()),
            ("Scheduler", scheduler.as_str()),
            ("Module", module.as_str()),
            ("signing-format", "ans104"),
            ("accept-bundle", "true"),
            ("accept-codec", "httpsig@1.0"),
            ("Data-Protocol", "ao"),
            ("Type", "Process"),
            ("Variant", "ao.N.1"),
        ],
        "1984",
    );
    let r = send(addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("process"), Some(pid.as_str()));

    let push = format!("/{pid}~process@1.0/push");
    let message = |code: &str| {
        let mut tags = vec![("Action", "Eval")];
        tags.extend(AOCONNECT_JSON);
        aoconnect_item(&push, Some(&pid), &tags, code)
    };
    let mut ids = Vec::new();
    for (n, code) in ["X = 10", "return X", "X = X * 2"].iter().enumerate() {
        let (id, req) = message(code);
        let pushed = json_of(&send(addr, &req).await);
        assert_eq!(pushed["slot"], (n + 1).to_string(), "{pushed}");
        assert_eq!(pushed["id"], id.as_str(), "{pushed}");
        ids.push(id);
    }

    let result = |path: String| {
        let (_, req) = aoconnect_item(&path, Some(&pid), &AOCONNECT_JSON, "1984");
        async move { json_of(&send(addr, &req).await) }
    };
    // The latest slot, then an earlier one by slot and by message ID: each its own.
    let r = result(format!("/{pid}~process@1.0/compute/results=3")).await;
    assert!(r["raw"]["Output"].is_object(), "{r}");
    assert!(r["raw"].get("Error").is_none(), "{r}");
    let r = result(format!("/{pid}~process@1.0/compute/results=2")).await;
    assert_eq!(r["raw"]["Output"]["data"], "10", "{r}");
    let r = result(format!("/{pid}~process@1.0/compute/results={}", ids[1])).await;
    assert_eq!(r["raw"]["Output"]["data"], "10", "{r}");
    // `results()`: the path without the device.
    let r = result(format!("/{pid}/compute/results=2")).await;
    assert_eq!(r["raw"]["Output"]["data"], "10", "{r}");
    let (_, req) = aoconnect_item(
        &format!("/{pid}~process@1.0/compute/results=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some(&pid),
        &AOCONNECT_JSON,
        "1984",
    );
    assert_eq!(send(addr, &req).await.status, 404);

    // The dry run: the tag is in the path only, the code in the item's data.
    let dry = |code: &str| {
        let (_, req) = aoconnect_item(
            &format!("/{pid}~process@1.0/as=execution/compute&Action=Eval"),
            Some(&pid),
            &AOCONNECT_JSON,
            code,
        );
        async move { json_of(&send(addr, &req).await) }
    };
    let r = dry("return X").await;
    assert_eq!(r["raw"]["Output"]["data"], "20", "{r}");
    let r = dry("X = 99 return X").await;
    assert_eq!(r["raw"]["Output"]["data"], "99", "{r}");
    assert_eq!(
        send(addr, &get(&format!("/{pid}/slot/current")))
            .await
            .text(),
        "3"
    );
    let (_, req) = message("return X");
    assert_eq!(json_of(&send(addr, &req).await)["slot"], "4");
    let r = result(format!("/{pid}~process@1.0/compute/results=4")).await;
    assert_eq!(
        r["raw"]["Output"]["data"], "20",
        "a dry run changes nothing: {r}"
    );

    // A Lua error reaches `raw` as `Error`.
    let (_, req) = message(r#"error("boom")"#);
    assert_eq!(json_of(&send(addr, &req).await)["slot"], "5");
    let r = result(format!("/{pid}~process@1.0/compute/results=5")).await;
    assert!(
        r["raw"]["Error"]
            .as_str()
            .is_some_and(|e| e.ends_with("boom")),
        "{r}"
    );
    node.stop().await;
}
