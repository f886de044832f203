//! `process@1.0` over HTTP (spec 04 §1): a process on `test-device@1.0` computes its
//! slots, answers `now`, `slot/current` and cached slots, stores each slot's state with
//! a snapshot, and a dry run takes no slot.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use common::{get, key1, key2, post, send};
use hb_core::cache::CacheOpError;
use hb_core::message::id_all;
use hb_core::{Cache, Message, Value};
use hb_store::{MemoryStore, MessageCache};

fn process_def(scheduler: &str) -> Message {
    Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", scheduler)
        .with("execution-device", "test-device@1.0")
        .with("nonce", "process-test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_computes_its_slots() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    // A snapshot at every slot, as the reference's tests set it.
    let every_slot = Message::new().with("process_snapshot_slots", 1i64);
    let node = common::start_node(every_slot, cache.clone(), key2()).await;
    let addr = node.addr;
    let def = hb_codec::httpsig_commit::commit(&process_def(&key2().address()), &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for n in 1..=5i64 {
        let msg = Message::new()
            .with("type", "Message")
            .with("target", pid.as_str())
            .with("n", n);
        let r = send(
            addr,
            &post(&format!("/{pid}/schedule"), &msg, Some(&key1())),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // slot/current: the bare number.
    let r = send(addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "5");

    // compute at slot 3, then a key of it.
    let r = send(
        addr,
        &get(&format!("/{pid}/compute/results/assignment-slot?slot=3")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "3");
    let r = send(addr, &get(&format!("/{pid}/compute/at-slot?slot=3"))).await;
    assert_eq!(r.text(), "3");

    // now: slot 5.
    let r = send(addr, &get(&format!("/{pid}/now/results/assignment-slot"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "5");

    // `now` is the state of the moment: after one more message, the same request
    // answers slot 6 (it is never served from the result cache), and so does
    // `compute` without a slot.
    let msg = Message::new()
        .with("type", "Message")
        .with("target", pid.as_str())
        .with("n", 6i64);
    let r = send(
        addr,
        &post(&format!("/{pid}/schedule"), &msg, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(addr, &get(&format!("/{pid}/now/results/assignment-slot"))).await;
    assert_eq!(r.text(), "6");
    let r = send(addr, &get(&format!("/{pid}/compute/at-slot"))).await;
    assert_eq!(r.text(), "6");

    // Each computed slot is stored under both cache paths, its snapshot apart.
    for slot in 0..=5i64 {
        let state = stored_state(&cache, &pid, slot);
        assert_eq!(state.get("at-slot"), Some(&Value::Integer(slot)));
        assert!(state.get("snapshot").is_none());
        assert!(
            cache
                .read_path(&format!("computed/{pid}/snapshot/{slot}"))
                .unwrap()
                .is_some(),
            "slot {slot} has a snapshot"
        );
        let id = id_all(&state).unwrap().to_human();
        assert!(
            cache
                .read_path(&format!("computed/{pid}/{id}"))
                .unwrap()
                .is_some()
        );
    }

    // A dry run answers from the latest state and takes no slot.
    let dry = Message::new()
        .with("method", "POST")
        .with("dryrun", Message::new().with("data", "return 1"));
    let r = send(
        addr,
        &post(
            &format!("/{pid}/compute/results/assignment-slot"),
            &dry,
            None,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "7");
    let r = send(addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.text(), "6");

    // Beyond the schedule: a clear error with the phase and the slot.
    let r = send(addr, &get(&format!("/{pid}/compute?slot=9"))).await;
    assert_eq!(r.status, 503, "{}", r.text());

    node.stop().await;
}

/// The state stored for `slot` of `pid` (`computed/<pid>/slot/<slot>`); panics when
/// there is none.
fn stored_state(cache: &MessageCache, pid: &str, slot: i64) -> Message {
    match cache
        .read_path(&format!("computed/{pid}/slot/{slot}"))
        .unwrap()
    {
        Some(Value::Message(state)) => state,
        other => panic!("slot {slot} not stored: {other:?}"),
    }
}

/// One request that computes more slots than a batch of states (64) writes the full
/// batches on a writer thread while it computes on: when it answers, every slot's
/// state is stored, and a second node on the same store answers a slot of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_run_stores_every_state_before_it_answers() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(Message::new(), cache.clone(), key2()).await;
    let addr = node.addr;
    let pid = spawn(addr, "long-run").await;
    const LAST: i64 = 150;
    schedule_messages(addr, &pid, LAST).await;
    let r = send(addr, &get(&format!("/{pid}/compute/at-slot?slot={LAST}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), LAST.to_string());
    for slot in 0..=LAST {
        let state = stored_state(&cache, &pid, slot);
        assert_eq!(state.get("at-slot"), Some(&Value::Integer(slot)));
    }
    node.stop().await;
    // A fresh node on the same store (no live state) answers slot 100.
    let again = common::start_node(Message::new(), cache.clone(), key2()).await;
    let r = send(
        again.addr,
        &get(&format!("/{pid}/compute/results/assignment-slot?slot=100")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "100");
    again.stop().await;
}

/// A message cache whose batch writes fail once they hold the state of a slot at or
/// above `fail_from` (a full disk, say), and that records every state slot it was asked
/// to write.
#[derive(Debug)]
struct FailingStates {
    inner: MessageCache,
    fail_from: i64,
    asked: std::sync::Mutex<Vec<i64>>,
}

impl FailingStates {
    /// The slots of the states in `batch` (`computed/<pid>/slot/<n>` aliases).
    fn slots(batch: &[(Message, Vec<String>)]) -> Vec<i64> {
        batch
            .iter()
            .flat_map(|(_, aliases)| aliases)
            .filter_map(|a| {
                a.strip_prefix("computed/")?
                    .split_once("/slot/")?
                    .1
                    .parse()
                    .ok()
            })
            .collect()
    }
}

impl Cache for FailingStates {
    fn read_result(&self, hashpath: &str) -> Option<Value> {
        Cache::read_result(&self.inner, hashpath)
    }
    fn write_result(&self, hashpath: &str, value: &Value) {
        Cache::write_result(&self.inner, hashpath, value)
    }
    fn read_message(&self, id: &hb_core::id::Id) -> Option<Message> {
        Cache::read_message(&self.inner, id)
    }
    fn write_message(&self, id: hb_core::id::Id, msg: &Message) {
        Cache::write_message(&self.inner, id, msg)
    }
    fn read_path(&self, path: &str) -> Result<Option<Value>, CacheOpError> {
        Cache::read_path(&self.inner, path)
    }
    fn write_binary(&self, bytes: &bytes::Bytes) -> Result<String, CacheOpError> {
        Cache::write_binary(&self.inner, bytes)
    }
    fn link(&self, existing: &str, new: &str) -> Result<(), CacheOpError> {
        Cache::link(&self.inner, existing, new)
    }
    fn store_message(
        &self,
        msg: &Message,
        aliases: &[String],
    ) -> Result<hb_core::id::Id, CacheOpError> {
        Cache::store_message(&self.inner, msg, aliases)
    }
    fn store_messages(&self, batch: &[(Message, Vec<String>)]) -> Result<(), CacheOpError> {
        let slots = Self::slots(batch);
        self.asked.lock().unwrap().extend(&slots);
        if slots.iter().any(|&s| s >= self.fail_from) {
            return Err(CacheOpError::Failed("the disk is full (test)".into()));
        }
        Cache::store_messages(&self.inner, batch)
    }
    fn list(&self, path: &str) -> Result<Option<Vec<String>>, CacheOpError> {
        Cache::list(&self.inner, path)
    }
}

/// A long run whose state writes start failing (the second batch of 64, on the writer
/// thread) stops computing there and answers that failure: the states before the
/// failing batch are stored, nothing after it is written, and the slot it stopped at
/// is in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_state_write_stops_a_long_run() {
    let cache = Arc::new(FailingStates {
        inner: MessageCache::new(Arc::new(MemoryStore::new())),
        fail_from: 100,
        asked: std::sync::Mutex::default(),
    });
    // Snapshots (and the writes before them) only at slot 0: full batches of 64.
    let opts = Message::new().with("process_snapshot_slots", 1000);
    let node = common::start_node(opts, cache.clone(), key2()).await;
    let addr = node.addr;
    let pid = spawn(addr, "failing-writes").await;
    const LAST: i64 = 400;
    schedule_messages(addr, &pid, LAST).await;
    let r = send(addr, &get(&format!("/{pid}/compute/at-slot?slot={LAST}"))).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("Cannot store the state"), "{}", r.text());
    assert!(r.text().contains("the disk is full (test)"), "{}", r.text());
    // Slot 0 is written alone (its snapshot is due), then full batches of 64 go to the
    // writer thread: 1..=64 is stored, 65..=128 fails.
    for slot in 0..=64 {
        assert_eq!(
            stored_state(&cache.inner, &pid, slot).get("at-slot"),
            Some(&Value::Integer(slot))
        );
    }
    for slot in [65, 100, 128, 129] {
        let path = format!("computed/{pid}/slot/{slot}");
        assert_eq!(cache.inner.read_path(&path).unwrap(), None, "{path}");
    }
    // The writer stopped at the failing batch: nothing after it was asked for.
    let asked = cache.asked.lock().unwrap().clone();
    assert_eq!(asked, (0..=128).collect::<Vec<i64>>());
    // And the computing stopped there too, not at 400: at the next full batch (slot
    // 192), or the one after it (256) when the failing batch was still being written
    // as the next one was queued.
    let attempted = r
        .header("attempted-slot")
        .unwrap_or_else(|| panic!("no attempted-slot: {:?} {}", r.headers, r.text()));
    assert!(
        ["192", "256"].contains(&attempted),
        "stopped at slot {attempted}"
    );
    node.stop().await;
}

/// Schedules messages `n = 1..=last` on `pid` (slots 1..=last).
async fn schedule_messages(addr: std::net::SocketAddr, pid: &str, last: i64) {
    for n in 1..=last {
        let msg = Message::new()
            .with("type", "Message")
            .with("target", pid)
            .with("n", n);
        let r = send(addr, &post(&format!("/{pid}/schedule"), &msg, None)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Spawns a test-device process scheduled by `node` and returns its ID.
async fn spawn(addr: std::net::SocketAddr, nonce: &str) -> String {
    let def = hb_codec::httpsig_commit::commit(
        &process_def(&key2().address()).with("nonce", nonce),
        &key1(),
    )
    .unwrap();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    id_all(&def).unwrap().to_human()
}

async fn current(addr: std::net::SocketAddr, pid: &str) -> String {
    send(addr, &get(&format!("/{pid}/slot/current")))
        .await
        .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_delivers_outboxes_recursively_sync_and_async() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(Message::new(), cache, key2()).await;
    let addr = node.addr;
    let (p1, p2, p3) = (
        spawn(addr, "one").await,
        spawn(addr, "two").await,
        spawn(addr, "three").await,
    );
    // P1's message asks it to send to P2 (which then sends to P3) and to P3.
    let outbox = |nested: bool| {
        let to_p2 = Message::new()
            .with("target", p2.as_str())
            .with("action", "Ping");
        let to_p2 = if nested {
            to_p2.with(
                "outbox",
                Message::new().with("1", Message::new().with("target", p3.as_str())),
            )
        } else {
            to_p2
        };
        Message::new()
            .with("1", to_p2)
            .with("2", Message::new().with("target", p3.as_str()))
            .with("3", Message::new().with("action", "Nowhere"))
    };
    let msg = Message::new()
        .with("type", "Message")
        .with("target", p1.as_str())
        .with("outbox", outbox(true));
    let r = send(
        addr,
        &common::post_with(
            &format!("/{p1}/push"),
            &msg,
            Some(&key1()),
            "accept: application/json\r\n",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tree: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(tree["process"], p1.as_str());
    assert_eq!(tree["1"]["target"], p2.as_str());
    assert_eq!(tree["1"]["resulted-in"]["1"]["target"], p3.as_str());
    assert_eq!(tree["2"]["target"], p3.as_str());
    assert!(tree["3"]["reason"].to_string().contains("No target"));
    assert_eq!(current(addr, &p2).await, "1");
    assert_eq!(current(addr, &p3).await, "2");

    // The delivered message: signed by the node, from P1.
    let r = send(
        addr,
        &get(&format!("/{p2}/compute/results/assignment-slot?slot=1")),
    )
    .await;
    assert_eq!(r.text(), "1");
    let r = send(
        addr,
        &get(&format!("/{p2}/schedule/assignments/1/body/from-process")),
    )
    .await;
    assert_eq!(r.text(), p1);
    let r = send(
        addr,
        &common::get_with(
            &format!("/{p2}/schedule/assignments/1/body"),
            "accept: application/json\r\n",
        ),
    )
    .await;
    assert!(r.text().contains(&key2().address()), "{}", r.text());

    // Async: the reply comes at once; the delivery completes in the background.
    let msg = Message::new()
        .with("type", "Message")
        .with("target", p1.as_str())
        .with("push-mode", "async")
        .with("outbox", outbox(false));
    let r = send(addr, &post(&format!("/{p1}/push"), &msg, Some(&key1()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut delivered = false;
    for _ in 0..100 {
        if current(addr, &p3).await == "3" && current(addr, &p2).await == "2" {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        delivered,
        "the async push delivered within 10 s: {} {} {}",
        r.text(),
        current(addr, &p2).await,
        current(addr, &p3).await
    );
    node.stop().await;
}

/// Spec 04 §7 item 4, with the stack written the seed tutorial's way
/// (`execution-stack`), and item 10's snapshot paths; workers evicted after every
/// request (`process_worker_max_idle: 0`) still compute the same states.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stack_of_two_test_devices_and_evicted_workers() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(
        Message::new()
            .with("process_worker_max_idle", 0i64)
            .with("process_snapshot_slots", 1i64),
        cache.clone(),
        key2(),
    )
    .await;
    let addr = node.addr;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "stack@1.0")
        .with(
            "execution-stack",
            Value::list(vec![
                Value::text("test-device@1.0"),
                Value::text("test-device@1.0"),
            ]),
        );
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let msg = Message::new()
        .with("type", "Message")
        .with("target", pid.as_str());
    let r = send(
        addr,
        &post(&format!("/{pid}/schedule"), &msg, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        addr,
        &get(&format!("/{pid}/compute/results/assignment-slot?slot=1")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "1");
    let state = stored_state(&cache, &pid, 1);
    assert_eq!(
        state.get("already-seen"),
        Some(&Value::list(
            [1i64, 1, 0, 0].into_iter().map(Value::Integer).collect()
        ))
    );
    assert!(
        cache
            .read_path(&format!("computed/{pid}/snapshot/1"))
            .unwrap()
            .is_some()
    );
    // More slots, each computed by a fresh worker from the stored state.
    for _ in 0..3 {
        let r = send(
            addr,
            &post(&format!("/{pid}/schedule"), &msg, Some(&key1())),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for slot in 2..=4i64 {
        let r = send(
            addr,
            &get(&format!(
                "/{pid}/compute/results/assignment-slot?slot={slot}"
            )),
        )
        .await;
        assert_eq!(r.text(), slot.to_string());
    }
    let state = stored_state(&cache, &pid, 4);
    let seen: Vec<i64> = [4i64, 4, 3, 3, 2, 2, 1, 1, 0, 0].to_vec();
    assert_eq!(
        state.get("already-seen"),
        Some(&Value::list(seen.into_iter().map(Value::Integer).collect()))
    );
    node.stop().await;
}
