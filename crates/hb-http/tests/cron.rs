//! `cron@1.0` over HTTP (spec 04 §6, conformance items 41–45): `once` and `every`
//! answer a task ID at once and run their path through the node's request pipeline;
//! `stop` stops a task; stored tasks come back after a restart.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, get_with, key1, send};
use hb_core::{Cache, Ctx, Message, NodeHandle};
use hb_devices::cron;
use hb_devices::test_device::test_record;
use hb_http::{Running, ServerConfig, Service, serve};
use hb_store::{Durability, LmdbStore, MemoryStore, MessageCache};
use tokio::net::TcpListener;

/// A test ID no other test (or run) uses.
fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cron-{label}-{}-{nanos}", std::process::id())
}

fn count(test_id: &str) -> u64 {
    test_record(test_id).map_or(0, |r| r.count)
}

/// Waits (at most `limit`) until `f` holds; whether it does.
async fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

fn every_path(test_id: &str, interval: &str) -> String {
    format!(
        "/~cron@1.0/every?test-id={test_id}&interval={interval}&cron-path=/~test-device@1.0/increment_counter"
    )
}

/// A node on `cache` whose context the test keeps (for `cron::resume`/`shutdown`).
async fn start(cache: Arc<dyn Cache>) -> (Running, Ctx) {
    let wallet = Arc::new(key1());
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry_with_wallet(Some(wallet.clone()))),
        cache,
        NodeHandle::new(Message::new()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = serve(
        listener,
        Service::new(ctx.clone(), ServerConfig::default()).with_wallet(wallet),
    )
    .unwrap();
    (running, ctx)
}

/// The JSON body of a reply.
fn json(r: &common::Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runs_at_its_interval_until_stopped() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let (node, _ctx) = start(cache).await;
    let addr = node.addr;
    let test_id = unique("every");

    let registered = Instant::now();
    let r = send(addr, &get(&every_path(&test_id, "500-milliseconds"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("ao-result"), Some("body"));
    let task = r.text();
    assert_eq!(task.len(), 43, "a bare task ID: {task}");
    // The first run is immediate (well before the first interval is over).
    assert!(eventually(Duration::from_millis(400), || count(&test_id) >= 1).await);
    // At least 3 runs in 1.6 s (at 0, 0.5, 1.0 and 1.5 s).
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(registered.elapsed())).await;
    let runs = count(&test_id);
    assert!((3..=5).contains(&runs), "{runs} runs in 1.6 s at 500 ms");

    let stop = format!("/~cron@1.0/stop?task={task}");
    let r = send(addr, &get_with(&stop, "accept: application/json\r\n")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json(&r);
    assert_eq!(
        body["body"]["message"], "Task stopped successfully",
        "{body}"
    );
    assert_eq!(body["body"]["task_id"], task.as_str(), "{body}");
    let at_stop = count(&test_id);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(count(&test_id), at_stop, "no run after the stop");

    // Stopped already: unknown.
    let r = send(addr, &get(&stop)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text(), "Task not found.");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_runs_its_path_with_the_request_keys() {
    let (node, _ctx) = start(Arc::new(hb_core::MemoryCache::new(1000))).await;
    let addr = node.addr;
    let test_id = unique("once");
    let r = send(
        addr,
        &get(&format!(
            "/~cron@1.0/once?cron-path=/~test-device@1.0/update_state&test-id={test_id}&message=Hello"
        )),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().len(), 43, "{}", r.text());
    assert!(
        eventually(Duration::from_secs(1), || {
            test_record(&test_id).is_some_and(|t| t.state.is_some())
        })
        .await
    );
    let state = test_record(&test_id).unwrap().state.unwrap();
    assert_eq!(state.get_str("message"), Some("Hello"));
    assert_eq!(state.get_str("test-id"), Some(test_id.as_str()));
    assert_eq!(state.get_str("method"), Some("GET"));
    assert!(!state.contains("cron-path"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_documented_errors() {
    let (node, _ctx) = start(Arc::new(hb_core::MemoryCache::new(1000))).await;
    let addr = node.addr;
    let cases = [
        (
            "/~cron@1.0/once?test-id=x",
            "No cron path found in message.",
        ),
        (
            "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func",
            "No interval found in message.",
        ),
        (
            "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func&interval=10-fortnights",
            "Invalid time unit: fortnights",
        ),
        (
            "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func&interval=0-seconds",
            "Invalid interval value.",
        ),
        ("/~cron@1.0/stop", "No task ID found in message."),
        ("/~cron@1.0/stop?task=../../etc", "Task not found."),
    ];
    for (path, text) in cases {
        let r = send(addr, &get(path)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.text(), text, "{path}");
    }
    node.stop().await;
}

/// Opens the LMDB store in `dir`, waiting (at most 5 s) for an earlier handle of this
/// process to be released.
async fn open_store(dir: &std::path::Path) -> Arc<dyn Cache> {
    let start = Instant::now();
    loop {
        match LmdbStore::open(dir, Durability::Relaxed) {
            Ok(store) => return Arc::new(MessageCache::new(Arc::new(store))),
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("reopen: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_task_survives_a_restart() {
    let dir = std::env::temp_dir().join(unique("store"));
    let test_id = unique("restart");

    let (node, ctx) = start(open_store(&dir).await).await;
    let r = send(node.addr, &get(&every_path(&test_id, "200-milliseconds"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let task = r.text();
    assert!(eventually(Duration::from_secs(2), || count(&test_id) >= 2).await);
    // The node goes away: server, task threads, context, store.
    node.stop().await;
    assert_eq!(cron::shutdown(&ctx), 1);
    drop(ctx);
    let at_stop = count(&test_id);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count(&test_id), at_stop, "no runs while the node is down");

    // A new node on the same store picks the task up.
    let (node, ctx) = start(open_store(&dir).await).await;
    assert_eq!(cron::resume(&ctx), 1);
    assert!(
        eventually(Duration::from_secs(2), || count(&test_id) >= at_stop + 3).await,
        "{} runs after the restart",
        count(&test_id) - at_stop
    );
    // Still the same task: stopped by its ID, over HTTP.
    let stop = format!("/~cron@1.0/stop?task={task}");
    let r = send(node.addr, &get(&stop)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stopped_at = count(&test_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&test_id), stopped_at, "no run after the stop");
    node.stop().await;
    assert_eq!(cron::shutdown(&ctx), 0);
    drop(ctx);

    // Stopped tasks stay stopped.
    let (node, ctx) = start(open_store(&dir).await).await;
    assert_eq!(cron::resume(&ctx), 0);
    let r = send(node.addr, &get(&stop)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text(), "Task not found.");
    node.stop().await;
    cron::shutdown(&ctx);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
}
