//! `router@1.0 register` between real nodes on loopback (spec 05 §7.7, §8): node B
//! registers its route with router node A by scheduling a signed registration on A's
//! `router` process (`node-process@1.0`, a `lua@5.3a` process on the aos library and
//! `builtin:router`); A's `route_provider` is that process's `now/routes`, so A then
//! relays matching requests to B. Without SEV-SNP hardware the registration carries no
//! attestation: a router accepts it only when its operator said so.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Reply, get, key1, key2, post, send, start_node, verified_committers};
use hb_core::{MemoryCache, Message, Value};
use hb_store::{MemoryStore, MessageCache};

/// The template B registers: A sends `/~meta@1.0/info/name` to B.
const TEMPLATE: &str = "^/~meta@1.0/info/name";

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A router node signing with `wallet`: its `router` process (accepting unattested
/// registrations when `accept` says so) provides its routes, and its `request` hook
/// relays the requests they match.
async fn start_router(name: &str, wallet: hb_codec::Wallet, accept: bool) -> hb_http::Running {
    // The modules as a list, or as `config.flat` gives them (`module/1`, `module/2`: a
    // numbered message); the accepting router is configured the second way.
    let modules = if accept {
        Value::Message(
            Message::new()
                .with("1", "builtin:aos")
                .with("2", "builtin:router"),
        )
    } else {
        Value::list(vec![
            Value::text("builtin:aos"),
            Value::text("builtin:router"),
        ])
    };
    let mut router = Message::new()
        .with("device", "process@1.0")
        .with("execution-device", "lua@5.3a")
        .with("module", modules);
    if accept {
        router.insert("accept-unattested", Value::text("true"));
    }
    let node = Message::new()
        .with("name", name)
        .with("address", wallet.address().as_str())
        .with("node_processes", Message::new().with("router", router))
        .with(
            "route_provider",
            Message::new().with("path", "/router~node-process@1.0/now/routes"),
        )
        .with(
            "on",
            Message::new().with(
                "request",
                Message::new()
                    .with("device", "router@1.0")
                    .with("path", "preprocess"),
            ),
        );
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    start_node(node, cache, wallet).await
}

/// A node (key-2, `name: B`, its own operator) that registers with the router at
/// `router`: configured with the `router_*` options (`without` leaves one out), then
/// its node message set once by the operator (`POST ~meta@1.0/info`, the one
/// `node_history` entry `register` needs) with its own URL as `router_prefix`.
/// B's `router_register_interval`: the least time between two registration attempts.
const REGISTER_INTERVAL_MS: i64 = 300;

async fn start_b(router: SocketAddr, without: Option<&str>) -> hb_http::Running {
    let mut node = Message::new()
        .with("name", "B")
        .with("address", key2().address().as_str())
        .with("node_history", Value::list(vec![]))
        .with("router_peer_location", url(router).as_str())
        .with("router_template", TEMPLATE)
        .with("router_price", 0i64)
        .with("router_register_interval", REGISTER_INTERVAL_MS);
    if let Some(k) = without {
        node.remove(k);
    }
    let b = start_node(node, Arc::new(MemoryCache::new(1000)), key2()).await;
    // Before that, `register` refuses: the node message was never set.
    let r = register(b.addr).await;
    assert!(
        r.text().contains("node history of exactly one entry"),
        "{r:?}"
    );
    let update = Message::new().with("router-prefix", url(b.addr).as_str());
    let r = send(b.addr, &post("/~meta@1.0/info", &update, Some(&key2()))).await;
    assert_eq!(r.status, 200, "{r:?}");
    b
}

async fn register(b: SocketAddr) -> Reply {
    send(b, &get("/~router@1.0/register")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_registers_and_the_router_relays_to_it() {
    let a = start_router("A", key1(), true).await;
    let b = start_b(a.addr, None).await;
    // Before: A answers its own name.
    let r = send(a.addr, &get("/~meta@1.0/info/name")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "A"));

    let r = register(b.addr).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "Route registered.");

    // A now relays the template's requests to B: B answers, and signed it.
    let r = send(a.addr, &get("/~meta@1.0/info/name")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "B"), "{r:?}");
    assert!(verified_committers(&r).contains(&key2().address()), "{r:?}");
    // The router process's routing table names B by its address.
    let r = send(
        a.addr,
        &get("/router~node-process@1.0/now/routes/1/nodes/1/wallet"),
    )
    .await;
    assert_eq!(r.text(), key2().address(), "{r:?}");
    // Other paths stay on A.
    let r = send(a.addr, &get("/~meta@1.0/info/address")).await;
    assert_eq!(r.text(), key1().address());

    // Once only.
    let r = register(b.addr).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("Route already registered."), "{r:?}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_refuses_unattested_registrations_by_default() {
    let c = start_router("C", key1(), false).await;
    let b = start_b(c.addr, None).await;
    let r = register(b.addr).await;
    assert_eq!(r.status, 403, "{r:?}");
    let all = format!("{} {}", r.text(), r.header("reason").unwrap_or_default());
    assert!(all.contains("Failed to register route."), "{all}");
    assert!(
        all.contains("accepts unattested registrations only"),
        "{all}"
    );
    // Not registered: C still answers itself, and B may try again, once the interval
    // between attempts has passed (right away it answers 429 and sends nothing).
    let r = send(c.addr, &get("/~meta@1.0/info/name")).await;
    assert_eq!(r.text(), "C");
    let r = register(b.addr).await;
    assert_eq!(r.status, 429, "{r:?}");
    let reason = r.header("reason").unwrap_or_default();
    assert!(
        reason.contains("attempts are at least 300 ms apart"),
        "{r:?}"
    );
    tokio::time::sleep(Duration::from_millis(REGISTER_INTERVAL_MS as u64 + 50)).await;
    let r = register(b.addr).await;
    assert_eq!(r.status, 403, "{r:?}");
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_options_and_unreachable_routers_are_clear() {
    let a = start_router("A", key1(), true).await;
    let b = start_b(a.addr, Some("router_price")).await;
    let r = register(b.addr).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.text().contains("Missing required opts: router_price"),
        "{r:?}"
    );
    b.stop().await;
    let gone = a.addr;
    a.stop().await;
    // A router that is gone: a failure that says so.
    let b = start_b(gone, None).await;
    let r = register(b.addr).await;
    assert!(r.status >= 500, "{r:?}");
    let all = format!("{} {}", r.text(), r.header("reason").unwrap_or_default());
    assert!(all.contains("Failed to register route."), "{all}");
    assert!(all.contains("cannot be reached"), "{all}");
    b.stop().await;
}
