//! `local-name@1.0` and `node-process@1.0` over HTTP (spec 05 §8): the operator names
//! values; a node spawns, names and serves its own processes from `node_processes`.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use common::{get, key1, key2, post, send, start_node};
use hb_core::Message;
use hb_store::{MemoryStore, MessageCache};

/// A node signing with key-1 (its own operator), with `extra` options.
async fn start(extra: Message) -> hb_http::Running {
    let mut node = Message::new().with("address", key1().address().as_str());
    for (k, v) in extra.iter() {
        node.insert_key(k.clone(), v.clone());
    }
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    start_node(node, cache, key1()).await
}

/// Spec 05 §8 vector: POST register signed by the operator, then GET lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_name_register_then_lookup() {
    let node = start(Message::new()).await;
    let addr = node.addr;
    let reg = Message::new().with("key", "name1").with("value", "value1");
    // Not the operator: 403.
    let r = send(
        addr,
        &post("/~local-name@1.0/register", &reg, Some(&key2())),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // `{status: 403, message: "Unauthorized."}`: the text travels as a header.
    assert!(
        r.text().contains("Unauthorized.") || r.header("message") == Some("Unauthorized."),
        "{r:?}"
    );
    let r = send(addr, &post("/~local-name@1.0/register", &reg, None)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send(addr, &get("/~local-name@1.0/lookup?key=name1")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The operator.
    let r = send(
        addr,
        &post("/~local-name@1.0/register", &reg, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "Registered.");
    let r = send(addr, &get("/~local-name@1.0/lookup?key=name1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "value1");
    let r = send(addr, &get("/~local-name@1.0/name1")).await;
    assert_eq!(r.text(), "value1");
    node.stop().await;
}

/// A name in `node_processes` is spawned once (scheduler = this node, signed by it,
/// slot 0 here), registered, and then scheduled on and computed by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_process_spawns_registers_and_serves_by_name() {
    let def = Message::new()
        .with("device", "process@1.0")
        .with("execution-device", "lua@5.3a")
        .with("module", "builtin:aos");
    let node = start(Message::new().with("node_processes", Message::new().with("calc", def))).await;
    let addr = node.addr;
    // Unknown names: not found.
    let r = send(addr, &get("/nothing~node-process@1.0/slot/current")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // First use spawns it: slot 0 is the process itself, scheduled here.
    let r = send(addr, &get("/calc~node-process@1.0/slot/current")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "0");
    let r = send(addr, &get("/~local-name@1.0/lookup?key=calc")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.text();
    assert_eq!(pid.len(), 43);
    let r = send(addr, &get(&format!("/{pid}/scheduler"))).await;
    assert_eq!(r.text(), key1().address());
    // Scheduling by name reaches the same process; the node's wallet owns it.
    let eval = Message::new()
        .with("target", pid.as_str())
        .with("action", "Eval")
        .with("data", "return 6 * 7");
    let r = send(
        addr,
        &post("/calc~node-process@1.0/schedule", &eval, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.text(), "1");
    let r = send(addr, &get("/calc~node-process@1.0/now/results/output/data")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "42");
    // `spawn=false` does not spawn.
    let r = send(addr, &get("/other~node-process@1.0&spawn=false/slot")).await;
    assert_ne!(r.status, 200, "{}", r.text());
    node.stop().await;
}
