//! `relay@1.0` and `router@1.0` between two real nodes on loopback (spec 05 §7): node A
//! relays (by peer, by URL, by its routes, and through the `preprocess` request hook)
//! to node B, whose signed answer comes back unchanged; with B stopped, A answers a
//! clear 502 at once; the operator adds routes with a signed POST.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Reply, get, key1, key2, post, send, start_node, verified_committers};
use hb_core::{Cache, MemoryCache, Message, Value};
use hb_store::{MemoryStore, MessageCache};

/// A node message naming the node (`name`) and its address.
fn node_message(name: &str, wallet: &hb_codec::Wallet) -> Message {
    Message::new()
        .with("name", name)
        .with("address", wallet.address().as_str())
}

/// Node B: key-2, `name: B`.
async fn start_b() -> hb_http::Running {
    start_node(
        node_message("B", &key2()),
        Arc::new(MemoryCache::new(1000)),
        key2(),
    )
    .await
}

/// Node A: key-1, `name: A`, plus `extra`.
async fn start_a(extra: Message) -> hb_http::Running {
    start_a_with(extra, Arc::new(MemoryCache::new(1000))).await
}

/// Node A on `cache`.
async fn start_a_with(extra: Message, cache: Arc<dyn Cache>) -> hb_http::Running {
    let mut node = node_message("A", &key1());
    for (k, v) in extra.iter() {
        node.insert_key(k.clone(), v.clone());
    }
    start_node(node, cache, key1()).await
}

/// A cache that stores processes (a message cache over a memory store).
fn durable() -> Arc<dyn Cache> {
    Arc::new(MessageCache::new(Arc::new(MemoryStore::new())))
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_call_reaches_the_allowed_peer_and_keeps_its_signature() {
    let b = start_b().await;
    let allow = Message::new().with("relay_allow_hosts", b.addr.to_string().as_str());
    let a = start_a(allow).await;
    let b_address = key2().address();

    // By peer: B's answer, signed by B (not re-signed by A).
    let r = send(
        a.addr,
        &get(&format!(
            "/~relay@1.0/call?relay-path=/~meta@1.0/info/name&relay-peer={}",
            url(b.addr)
        )),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "B"), "{r:?}");
    assert_eq!(verified_committers(&r), vec![b_address.clone()]);

    // The seed tutorial's form: the URL as `path`.
    let r = send(
        a.addr,
        &get(&format!(
            "/~relay@1.0/call?method=GET&path={}/~meta@1.0/info/address",
            url(b.addr)
        )),
    )
    .await;
    assert_eq!((r.status, r.text()), (200, b_address.clone()), "{r:?}");

    // A host that is not on the list: refused, nothing sent.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let r = send(
        a.addr,
        &get(&format!(
            "/~relay@1.0/call?relay-path=/~meta@1.0/info&relay-peer=http://{}",
            elsewhere.local_addr().unwrap()
        )),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.text().contains("relay_allow_hosts"), "{}", r.text());

    // `cast` answers at once.
    let r = send(
        a.addr,
        &get(&format!(
            "/~relay@1.0/cast?relay-path=/~meta@1.0/info&relay-peer={}",
            url(b.addr)
        )),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"), "{r:?}");

    // B's own errors come back as B's: a missing key is B's 404.
    let r = send(
        a.addr,
        &get(&format!(
            "/~relay@1.0/call?relay-path=/~meta@1.0/info/no-such-key&relay-peer={}",
            url(b.addr)
        )),
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_send_to_the_other_node_and_fail_clearly_when_it_is_down() {
    let b = start_b().await;
    // Routes as the text `--set routes=…` gives: `/~meta@1.0/info/name` and paths
    // starting `/relayed` go to B.
    let routes = format!(
        r#"[{{"template":"^/~meta@1.0/info/name","node":{{"prefix":"{b}"}}}},
            {{"template":"^/relayed","node":{{"prefix":"{b}"}}}}]"#,
        b = url(b.addr)
    );
    // The router's `preprocess` as the request hook: matching requests go to B, the
    // others stay on A.
    let hook = Message::new().with(
        "request",
        Message::new()
            .with("device", "router@1.0")
            .with("path", "preprocess"),
    );
    let hooked = start_a(
        Message::new()
            .with("routes", routes.as_str())
            .with("on", hook),
    )
    .await;
    let a = start_a(Message::new().with("routes", routes.as_str())).await;

    // Through the hook.
    let r = send(hooked.addr, &get("/relayed?relayed=yes")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "yes"), "{r:?}");
    assert_eq!(
        verified_committers(&r),
        vec![key2().address()],
        "B answered"
    );
    let r = send(hooked.addr, &get("/local?local=yes")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "yes"), "{r:?}");
    assert_eq!(
        verified_committers(&r),
        vec![key1().address()],
        "A answered"
    );
    // relay@1.0 with no peer follows the same routes (no allow list needed).
    let r = send(
        a.addr,
        &get("/~relay@1.0/call?relay-path=/~meta@1.0/info/name"),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "B"), "{r:?}");
    assert_eq!(verified_committers(&r), vec![key2().address()]);
    // The router answers where a path goes.
    let r = send(
        a.addr,
        &get("/~router@1.0/route?route-path=/~meta@1.0/info/name"),
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (200, format!("{}/~meta@1.0/info/name", url(b.addr)))
    );
    let r = send(a.addr, &get("/~router@1.0/route?route-path=/elsewhere")).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.text().contains("no_matches"), "{}", r.text());

    // B stops: A answers a clear 502 at once instead of hanging.
    b.stop().await;
    for (node, path) in [
        (hooked.addr, "/relayed?relayed=yes"),
        (a.addr, "/~relay@1.0/call?relay-path=/~meta@1.0/info/name"),
    ] {
        let started = Instant::now();
        let r = send(node, &get(path)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert!(r.text().contains("cannot be reached"), "{}", r.text());
    }
    // A itself carries on.
    let r = send(hooked.addr, &get("/local?local=yes")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "yes"));
    let r = send(a.addr, &get("/~meta@1.0/info/name")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "A"));
    hooked.stop().await;
    a.stop().await;
}

/// The router's `preprocess` as the node's `request` hook.
fn preprocess_hook() -> Message {
    Message::new().with(
        "request",
        Message::new()
            .with("device", "router@1.0")
            .with("path", "preprocess"),
    )
}

/// A process on `test-device@1.0` whose scheduler is `scheduler` (an address).
fn process_def(scheduler: &str) -> Message {
    Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", scheduler)
        .with("execution-device", "test-device@1.0")
        .with("nonce", "relay-router-test")
}

/// Schedules the signed process `def` and then each of the signed `msgs` on the node at
/// `addr` (the same bytes whichever node they go to).
async fn schedule(addr: SocketAddr, pid: &str, def: &Message, msgs: &[Message]) {
    let r = send(addr, &post("/~process@1.0/schedule", def, None)).await;
    assert_eq!(r.status, 200, "{r:?}");
    for m in msgs {
        let r = send(addr, &post(&format!("/{pid}/schedule"), m, None)).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// `n` messages to process `pid`, signed by key-1.
fn messages(pid: &str, n: i64) -> Vec<Message> {
    (1..=n)
        .map(|i| {
            let m = Message::new()
                .with("type", "Message")
                .with("target", pid)
                .with("n", i);
            hb_codec::httpsig_commit::commit(&m, &key1()).unwrap()
        })
        .collect()
}

/// A reply as the node signed it: status, the header fields but the signature's bytes
/// (RSA-PSS signatures are randomised) and the date, and the body.
fn signed_reply(r: &Reply) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let headers = r
        .headers
        .iter()
        .filter(|(k, _)| k != "signature" && k != "date")
        .cloned()
        .collect();
    (r.status, headers, r.body.clone())
}

/// A node with the router's `preprocess` as its `request` hook resolves the paths no
/// route matches itself, exactly as a node without the hook does: paths with a
/// `~device` base, an ID base switched to a device, sub-resolutions and plain keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preprocess_leaves_unrouted_device_paths_to_the_node() {
    // A route that none of these paths matches (its node is never reached).
    let routes = r#"[{"template":"^/relayed","node":{"prefix":"http://127.0.0.1:9"}}]"#;
    let hooked = start_a_with(
        Message::new()
            .with("routes", routes)
            .with("on", preprocess_hook()),
        durable(),
    )
    .await;
    let plain = start_a_with(Message::new().with("routes", routes), durable()).await;

    // The same process, scheduled by A's address, on both nodes.
    let def = hb_codec::httpsig_commit::commit(&process_def(&key1().address()), &key2()).unwrap();
    let pid = hb_core::message::id_all(&def).unwrap().to_human();
    let msgs = messages(&pid, 3);
    schedule(hooked.addr, &pid, &def, &msgs).await;
    schedule(plain.addr, &pid, &def, &msgs).await;

    let paths = [
        "/~meta@1.0/info/address".to_owned(),
        "/~meta@1.0/info/name".to_owned(),
        format!("/{pid}~process@1.0/compute/at-slot?slot=2"),
        format!("/{pid}~process@1.0/compute/results/assignment-slot?slot=3"),
        format!("/{pid}/compute/at-slot?slot=3"),
        format!("/{pid}/slot/current"),
        format!("/{pid}~process@1.0/compute/results?slot=2"),
        "/~message@1.0&a=1/a".to_owned(),
        "/~message@1.0&a=1&b=2".to_owned(),
        "/local?local=yes".to_owned(),
    ];
    for path in &paths {
        let with_hook = send(hooked.addr, &get(path)).await;
        let without = send(plain.addr, &get(path)).await;
        assert_eq!(with_hook.status, 200, "{path}: {with_hook:?}");
        // The same reply, signed over the same signature base.
        assert_eq!(signed_reply(&with_hook), signed_reply(&without), "{path}");
        assert_eq!(verified_committers(&with_hook), vec![key1().address()]);
    }
    let r = send(hooked.addr, &get("/~meta@1.0/info/address")).await;
    assert_eq!(r.text(), key1().address());
    let r = send(
        hooked.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=2")),
    )
    .await;
    assert_eq!(r.text(), "2");
    let r = send(hooked.addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.text(), "3");
    hooked.stop().await;
    plain.stop().await;
}

/// A node with the router's `preprocess` hook relays the process paths its routes
/// match to the process's scheduler (B), whose signed answers come back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preprocess_relays_routed_process_paths() {
    let b = start_node(node_message("B", &key2()), durable(), key2()).await;
    let def = hb_codec::httpsig_commit::commit(&process_def(&key2().address()), &key1()).unwrap();
    let pid = hb_core::message::id_all(&def).unwrap().to_human();
    schedule(b.addr, &pid, &def, &messages(&pid, 3)).await;
    let routes = format!(
        r#"[{{"template":"/.*~process@1.0/.*","node":{{"prefix":"{b}"}}}},
            {{"template":"/{pid}/(schedule|slot)","node":{{"prefix":"{b}"}}}}]"#,
        b = url(b.addr)
    );
    let a = start_a_with(
        Message::new()
            .with("routes", routes.as_str())
            .with("on", preprocess_hook()),
        durable(),
    )
    .await;
    let b_address = key2().address();

    // A has never heard of the process: only B can answer these.
    let r = send(
        a.addr,
        &get(&format!("/{pid}~process@1.0/compute/at-slot?slot=2")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "2"), "{r:?}");
    assert_eq!(
        verified_committers(&r),
        vec![b_address.clone()],
        "B answered"
    );
    let r = send(
        a.addr,
        &get(&format!(
            "/{pid}~process@1.0/compute/results/assignment-slot?slot=3"
        )),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "3"), "{r:?}");
    assert_eq!(verified_committers(&r), vec![b_address.clone()]);
    let r = send(a.addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "3"), "{r:?}");
    assert_eq!(verified_committers(&r), vec![b_address.clone()]);

    // Paths no route matches stay on A (and fail there: A has not the process).
    let r = send(a.addr, &get("/~meta@1.0/info/name")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "A"), "{r:?}");
    let r = send(a.addr, &get(&format!("/{pid}/compute/at-slot?slot=2"))).await;
    assert_ne!(r.status, 200, "{r:?}");

    // A new message goes through A to B's schedule, and the slot read through A moves on.
    let more = hb_codec::httpsig_commit::commit(
        &Message::new()
            .with("type", "Message")
            .with("target", pid.as_str())
            .with("n", 4i64),
        &key1(),
    )
    .unwrap();
    let r = send(a.addr, &post(&format!("/{pid}/schedule"), &more, None)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(verified_committers(&r), vec![b_address.clone()]);
    let r = send(b.addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.text(), "4", "B scheduled it");
    let r = send(a.addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "4"), "{r:?}");
    a.stop().await;
    b.stop().await;
}

/// Spec 05 §7.4 vector: the operator adds a route with a signed POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_adds_routes() {
    let operator = key1();
    let routes = Value::list(vec![Value::Message(
        Message::new()
            .with("template", "/some/path")
            .with("node", "old")
            .with("priority", 10i64),
    )]);
    let a = start_a(
        Message::new()
            .with("operator", operator.address().as_str())
            .with("routes", routes),
    )
    .await;
    let new = Message::new()
        .with("template", "/some/new/path")
        .with("node", "new")
        .with("priority", 15i64);
    // Unsigned, or signed by someone else: refused.
    let r = send(a.addr, &post("/~router@1.0/routes", &new, None)).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = send(a.addr, &post("/~router@1.0/routes", &new, Some(&key2()))).await;
    assert_eq!(r.status, 403, "{r:?}");
    // By the operator: added.
    let r = send(a.addr, &post("/~router@1.0/routes", &new, Some(&operator))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Route added."),
        "{r:?}"
    );
    let r = send(a.addr, &get("/~router@1.0/routes/2/node")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "new"), "{r:?}");
    let r = send(
        a.addr,
        &get("/~router@1.0/route?route-path=/x/some/new/path"),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "new"), "{r:?}");
    // `info` describes the device.
    let r = send(a.addr, &get("/~router@1.0/info/body/version")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "1.0"), "{r:?}");
    a.stop().await;
}
