//! `scheduler@1.0` over HTTP, continued: processes and messages as signed ANS-104 data
//! items (as the JS clients send them), scheduler-location records and redirects, and
//! a node that schedules signed messages only.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use common::{get, get_with, key1, key2, post, post_with, send};
use hb_codec::ans104::convert::message_to_item;
use hb_core::Message;
use hb_store::{MemoryStore, MessageCache};

const JSON: &str = "accept: application/json\r\n";

fn cache() -> Arc<MessageCache> {
    Arc::new(MessageCache::new(Arc::new(MemoryStore::new())))
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// A POST of a signed data item.
fn post_item(target: &str, msg: &Message, signer: &hb_codec::Wallet) -> (String, Vec<u8>) {
    let item = message_to_item(msg).unwrap().signed(signer).unwrap();
    let id = item.id().to_human();
    let body = item.to_bytes();
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/ans104\r\ncodec-device: ans104@1.0\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    (id, req)
}

/// The `slot` of an assignment answered in httpsig form (a header field).
fn slot_of(r: &common::Reply) -> String {
    r.header("slot").unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_items_are_scheduled_and_the_process_is_their_id() {
    let node = common::start_node(Message::new(), cache(), key2()).await;
    let addr = node.addr;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "test-device@1.0")
        .with("data-protocol", "ao")
        .with("variant", "ao.N.1");
    let (pid, req) = post_item("/~scheduler@1.0/schedule", &def, &key1());
    let r = send(addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(slot_of(&r), "0");
    assert_eq!(r.header("process"), Some(pid.as_str()));
    let msg = Message::new()
        .with("type", "Message")
        .with("target", pid.as_str())
        .with("action", "Eval")
        .with("data", "X = 1");
    let (_, req) = post_item("/~scheduler@1.0/schedule", &msg, &key1());
    let r = send(addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(slot_of(&r), "1");
    // A data item with one byte flipped is refused and takes no slot.
    let (_, mut req) = post_item("/~scheduler@1.0/schedule", &msg, &key1());
    let at = req.len() - 3;
    req[at] ^= 1;
    let r = send(addr, &req).await;
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    let r = send(addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.text(), "1");
    // The message reached the process: computing slot 1 sees it.
    let r = send(
        addr,
        &get(&format!("/{pid}/compute/results/assignment-slot?slot=1")),
    )
    .await;
    assert_eq!(r.text(), "1");

    // aoconnect's way: spawn with `POST /push` (the reply's `process` header is the
    // process ID), message with `POST /<pid>~process@1.0/push` (a JSON reply with the
    // slot).
    let spawn = def.clone().with("nonce", "aoconnect");
    let (pid2, req) = post_item("/push", &spawn, &key1());
    let r = send(addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("process"), Some(pid2.as_str()));
    let msg2 = msg.clone().with("target", pid2.as_str());
    let (msg2_id, mut req) = post_item(&format!("/{pid2}~process@1.0/push"), &msg2, &key1());
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    req.splice(head_end + 2..head_end + 2, JSON.bytes());
    let r = send(addr, &req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pushed = json(&r.body);
    assert_eq!(pushed["slot"], "1", "{pushed}");
    assert_eq!(pushed["process"], pid2.as_str());
    // The pushed message's ID (aoconnect's `message({returnMessageId})` reads `id`).
    assert_eq!(pushed["id"], msg2_id.as_str(), "{pushed}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_records_and_redirects() {
    let node = common::start_node(Message::new().with("port", 9999i64), cache(), key2()).await;
    let addr = node.addr;
    let ours = key2().address();
    let theirs = key1().address();

    // Nothing known yet.
    let r = send(
        addr,
        &get(&format!("/~scheduler@1.0/location?address={theirs}")),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("No location found for address"));

    // The operator (the node's own wallet) asks for a record of this node: nonce 0.
    let ask = Message::new().with("url", "http://127.0.0.1:9999");
    let r = send(
        addr,
        &post_with("/~scheduler@1.0/location", &ask, Some(&key2()), JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let record = json(&r.body);
    assert_eq!(record["type"], "scheduler-location");
    assert_eq!(record["url"], "http://127.0.0.1:9999");
    let r = send(
        addr,
        &get_with(&format!("/~scheduler@1.0/location?address={ours}"), JSON),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r.body)["body"]["url"], "http://127.0.0.1:9999");

    // A nonce not above the known one is refused.
    let stale = Message::new().with("url", "http://x").with("nonce", 0i64);
    let r = send(
        addr,
        &post("/~scheduler@1.0/location", &stale, Some(&key2())),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("Known nonce higher than requested nonce.")
    );

    // A record signed by another scheduler is verified and kept; unsigned ones are not.
    let foreign = Message::new()
        .with("data-protocol", "ao")
        .with("variant", "ao.N.1")
        .with("type", "scheduler-location")
        .with("url", "http://127.0.0.1:1")
        .with("nonce", 3i64);
    let r = send(
        addr,
        &post("/~scheduler@1.0/record", &foreign, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(addr, &post("/~scheduler@1.0/location", &foreign, None)).await;
    assert_eq!(r.status, 400, "{}", r.text());

    // A process scheduled by that other node: a redirect to its record's URL, no slot.
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", theirs.as_str())
        .with("execution-device", "test-device@1.0");
    let r = send(addr, &post("/~scheduler@1.0/schedule", &def, Some(&key1()))).await;
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("location"), Some("http://127.0.0.1:1"));
    // …and with a hint, to the hint.
    let hinted = def.with(
        "scheduler",
        format!("{theirs}?hint=http://test.computer").as_str(),
    );
    let r = send(
        addr,
        &post("/~scheduler@1.0/schedule", &hinted, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("location"), Some("http://test.computer"));
    let r = send(addr, &get_with("/~scheduler@1.0/status", JSON)).await;
    let status = json(&r.body);
    assert!(
        status["processes"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_can_require_signed_messages() {
    let node = common::start_node(
        Message::new().with("scheduler_require_signed", "true"),
        cache(),
        key2(),
    )
    .await;
    let addr = node.addr;
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "test-device@1.0");
    let r = send(addr, &post("/~scheduler@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not signed"));
    let r = send(addr, &post("/~scheduler@1.0/schedule", &def, Some(&key1()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    node.stop().await;
}
