//! `scheduler@1.0` over HTTP (spec 04 §2): a process and its messages get contiguous
//! slots, assignments are signed by the node and chained, schedules read back in
//! order, and bad input is refused without taking a slot.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use common::{get, get_with, key1, key2, post, post_with, send};
use hb_core::message::id_all;
use hb_core::{Cache, Message, Value};
use hb_devices::scheduler::next_chain;
use hb_store::{MemoryStore, MessageCache};

const JSON: &str = "accept: application/json\r\n";

fn process_def(scheduler: &str) -> Message {
    Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", scheduler)
        .with("execution-device", "test-device@1.0")
        .with("nonce", "1")
}

/// An integer of a JSON reply (json@1.0 writes typed values as text plus `ao-types`).
fn int(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::Number(n) => n.as_i64().unwrap(),
        serde_json::Value::String(s) => s.parse().unwrap(),
        other => panic!("not an integer: {other}"),
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(body));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_and_messages_get_contiguous_signed_chained_slots() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(Message::new(), cache.clone(), key2()).await;
    let addr = node.addr;
    let scheduler = key2().address();

    // The process: slot 0, its own ID is the process ID.
    let def = hb_codec::httpsig_commit::commit(&process_def(&scheduler), &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(
        addr,
        &post_with("/~scheduler@1.0/schedule", &def, None, JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = json(&r.body);
    assert_eq!(int(&a["slot"]), 0);
    assert_eq!(a["process"], pid.as_str());

    // Ten messages: slots 1..=10.
    for n in 1..=10i64 {
        let msg = Message::new()
            .with("type", "Message")
            .with("target", pid.as_str())
            .with("action", "Ping")
            .with("n", n);
        let r = send(
            addr,
            &post_with("/~scheduler@1.0/schedule", &msg, Some(&key1()), JSON),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(int(&json(&r.body)["slot"]), n);
    }

    // The stored assignments: signed by the node, chained over the bodies' IDs.
    let mut chain: Vec<u8> = Vec::new();
    for slot in 0..=10i64 {
        let Some(Value::Message(a)) = cache
            .read_path(&format!("assignments/{pid}/{slot}"))
            .unwrap()
        else {
            panic!("slot {slot} not stored");
        };
        assert_eq!(a.get("slot"), Some(&Value::Integer(slot)));
        assert_eq!(a.get_str("epoch"), Some("0"));
        assert_eq!(a.get_str("process"), Some(pid.as_str()));
        let body = a.get("body").and_then(Value::as_message).unwrap();
        chain = next_chain(&chain, &id_all(body).unwrap().to_human());
        assert_eq!(
            a.get_str("hash-chain"),
            Some(hb_core::id::b64url(&chain).as_str()),
            "slot {slot}"
        );
        assert_eq!(hb_core::message::committers_of(&a), vec![scheduler.clone()]);
        let cid = a
            .get("commitments")
            .and_then(Value::as_message)
            .and_then(|c| {
                c.iter()
                    .find(|(_, v)| v.as_message().is_some_and(|m| m.get("committer").is_some()))
                    .map(|(k, _)| k.to_string())
            })
            .unwrap();
        assert!(hb_codec::httpsig_commit::verify(&a, &cid).unwrap());
    }

    // GET schedule: in order, all eleven.
    let r = send(
        addr,
        &get_with(
            &format!("/~scheduler@1.0/schedule?target={pid}&from=0&to=10"),
            JSON,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = json(&r.body);
    assert!(page["continues"].to_string().contains("false"));
    for slot in 0..=10 {
        assert_eq!(int(&page["assignments"][slot.to_string()]["slot"]), slot);
    }
    let r = send(
        addr,
        &get(&format!(
            "/~scheduler@1.0/schedule?target={pid}&from=3&to=4&accept=application/aos-2"
        )),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let aos2 = json(&r.body);
    assert_eq!(aos2["edges"].as_array().unwrap().len(), 2);
    assert_eq!(aos2["edges"][0]["cursor"], 3);
    assert_eq!(aos2["page_info"]["process"], pid.as_str());

    // slot: the last assigned.
    let r = send(
        addr,
        &get_with(&format!("/~scheduler@1.0/slot?target={pid}"), JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(int(&json(&r.body)["current"]), 10);

    // Bad input takes no slot: an unknown process, a tampered signature, a process
    // without a scheduler.
    let stray = Message::new()
        .with("type", "Message")
        .with("target", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let r = send(
        addr,
        &post("/~scheduler@1.0/schedule", &stray, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let unscheduled = Message::new()
        .with("type", "Process")
        .with("device", "process@1.0");
    let r = send(
        addr,
        &post("/~scheduler@1.0/schedule", &unscheduled, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("No scheduler information provided."));
    let r = send(
        addr,
        &get_with(&format!("/~scheduler@1.0/slot?target={pid}"), JSON),
    )
    .await;
    assert_eq!(int(&json(&r.body)["current"]), 10);

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_get_distinct_contiguous_slots() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(Message::new(), cache.clone(), key2()).await;
    let addr = node.addr;
    let def = hb_codec::httpsig_commit::commit(&process_def(&key2().address()), &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~scheduler@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    const CLIENTS: i64 = 4;
    const EACH: i64 = 15;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let pid = pid.clone();
        tasks.push(tokio::spawn(async move {
            let mut slots = Vec::new();
            for n in 0..EACH {
                let msg = Message::new()
                    .with("type", "Message")
                    .with("target", pid.as_str())
                    .with("client", c)
                    .with("n", n);
                let r = send(
                    addr,
                    &post_with("/~scheduler@1.0/schedule", &msg, None, JSON),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text());
                slots.push(int(&json(&r.body)["slot"]));
            }
            slots
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=CLIENTS * EACH).collect::<Vec<_>>());
    node.stop().await;
}

/// The current slot of `pid`, as `GET /~scheduler@1.0/slot` answers it.
async fn current_slot(addr: std::net::SocketAddr, pid: &str) -> i64 {
    let r = send(
        addr,
        &get_with(&format!("/~scheduler@1.0/slot?target={pid}"), JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    int(&json(&r.body)["current"])
}

/// Bad input over HTTP gets a clear 4xx (or the documented 503) and stores nothing: the
/// schedule's current slot stays where it was and no assignment appears after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_takes_no_slot() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(Message::new(), cache.clone(), key2()).await;
    let addr = node.addr;
    let def = hb_codec::httpsig_commit::commit(
        &process_def(&key2().address()).with("nonce", "bad-input"),
        &key1(),
    )
    .unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ping = Message::new()
        .with("type", "Message")
        .with("target", pid.as_str())
        .with("action", "Ping");
    for _ in 0..2 {
        let r = send(
            addr,
            &post(&format!("/{pid}/schedule"), &ping, Some(&key1())),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let unchanged = async |what: &str| {
        assert_eq!(current_slot(addr, &pid).await, 2, "after {what}");
        assert!(
            cache
                .read_path(&format!("assignments/{pid}/3"))
                .unwrap()
                .is_none(),
            "nothing stored after {what}"
        );
    };

    // A message to a process nobody spawned: 404, whichever way it is addressed.
    let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let stray = Message::new()
        .with("type", "Message")
        .with("target", unknown);
    let r = send(
        addr,
        &post("/~scheduler@1.0/schedule", &stray, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = send(
        addr,
        &post(&format!("/{unknown}/schedule"), &stray, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        cache
            .read_path(&format!("assignments/{unknown}/0"))
            .unwrap()
            .is_none()
    );
    unchanged("messages to an unknown process").await;

    // A slot beyond the schedule: the documented 503, naming the phase and the slot.
    let r = send(addr, &get(&format!("/{pid}/compute?slot=999999"))).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("phase"), Some("get-schedule"), "{:?}", r.headers);
    assert_eq!(r.header("attempted-slot"), Some("3"), "{:?}", r.headers);
    assert!(r.text().contains("No assignment found for next slot."));
    unchanged("compute beyond the schedule").await;

    // Slots that are not integers: 400, saying so.
    for bad in ["abc", "1.5", "", "99999999999999999999"] {
        let r = send(addr, &get(&format!("/{pid}/compute?slot={bad}"))).await;
        assert_eq!(r.status, 400, "slot={bad}: {}", r.text());
        assert!(
            r.text().contains("`slot` must be an integer"),
            "{}",
            r.text()
        );
    }
    // Before the initial state (-1): 400, not a server error.
    let r = send(addr, &get(&format!("/{pid}/compute?slot=-5"))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("-1 (the initial state) or more"),
        "{}",
        r.text()
    );
    unchanged("compute with bad slots").await;

    // A signed message whose signed field was changed on the way: 400.
    let signed =
        String::from_utf8(post(&format!("/{pid}/schedule"), &ping, Some(&key1()))).unwrap();
    let tampered = signed.replace("action: Ping", "action: Pong");
    assert_ne!(tampered, signed);
    let r = send(addr, tampered.as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("does not verify"), "{}", r.text());
    // Its signature fields garbled: 400.
    let garbled = signed.replace("signature: ", "signature: (((");
    let r = send(addr, garbled.as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    // The same, tampered after signing, carried as the `body` of an unsigned request:
    // the scheduler verifies it and refuses it.
    let inner = hb_codec::httpsig_commit::commit(&ping, &key1())
        .unwrap()
        .with("action", "Pong");
    let r = send(
        addr,
        &post(
            &format!("/{pid}/schedule"),
            &Message::new().with("body", inner),
            None,
        ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not valid"), "{}", r.text());
    unchanged("tampered signatures").await;

    // An assignment-like message naming its own slot and hash chain is a message like
    // any other: it gets the next slot, and its keys stay in its body.
    let forged = ping
        .clone()
        .with("slot", 999_999i64)
        .with("hash-chain", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let r = send(
        addr,
        &post_with(&format!("/{pid}/schedule"), &forged, Some(&key1()), JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = json(&r.body);
    assert_eq!(int(&a["slot"]), 3);
    assert_ne!(
        a["hash-chain"],
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    assert_eq!(int(&a["body"]["slot"]), 999_999);
    assert_eq!(current_slot(addr, &pid).await, 3);
    node.stop().await;
}
