//! `GatewaySource` against a running arlocal (spec 07 §5), and a node whose message cache
//! reads through it. Skipped unless these are set (the harness prints them; see
//! harness/README.md "Gateway"):
//!
//! * `HB_ARLOCAL`: arlocal's base URL (`http://127.0.0.1:<port>`);
//! * `HB_ARLOCAL_ID`: a signed, anchor-less data item uploaded there (inside a bundle);
//! * `HB_ARLOCAL_DATA` (optional): its data, as text;
//! * `HB_ARLOCAL_TAG` (optional): `name=value` of one of its tags.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hb_core::{Ctx, Message, NodeHandle};
use hb_store::{GatewaySource, MemoryStore, MessageCache, MessageSource};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_from_arlocal_through_the_gateway_source_and_a_node() {
    let (Some(arlocal), Some(id)) = (env("HB_ARLOCAL"), env("HB_ARLOCAL_ID")) else {
        eprintln!(
            "SKIPPED: set HB_ARLOCAL=<arlocal URL> and HB_ARLOCAL_ID=<item id> to run \
             (harness/test/50-arweave.test.mjs prints them)"
        );
        return;
    };
    let data = env("HB_ARLOCAL_DATA");
    let tag = env("HB_ARLOCAL_TAG").map(|t| {
        let (n, v) = t.split_once('=').expect("HB_ARLOCAL_TAG is name=value");
        (n.to_ascii_lowercase(), v.to_owned())
    });

    let gateway = Arc::new(GatewaySource::new(&arlocal).unwrap());
    let (direct, unknown) = {
        let (g, id) = (gateway.clone(), id.clone());
        tokio::task::spawn_blocking(move || (g.fetch(&id), g.fetch(&"A".repeat(43))))
            .await
            .unwrap()
    };
    let msg = direct
        .unwrap()
        .expect("arlocal has the item and it verifies");
    if let Some(d) = &data {
        assert_eq!(msg.get_str("data"), Some(d.as_str()));
    }
    if let Some((n, v)) = &tag {
        assert_eq!(msg.get_str(n), Some(v.as_str()));
    }
    assert_eq!(unknown.unwrap(), None);

    // A node (replies signed with a fresh key) whose cache reads through the gateway.
    let cache =
        Arc::new(MessageCache::new(Arc::new(MemoryStore::new())).with_sources(vec![gateway]));
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        cache,
        NodeHandle::new(Message::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = hb_http::serve(
        listener,
        hb_http::Service::new(ctx, hb_http::ServerConfig::default()),
    )
    .unwrap();
    let base = format!("http://{}", node.addr);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let get = |path: &str| {
            let mut r = agent.get(&format!("{base}{path}")).call().unwrap();
            let status = r.status().as_u16();
            (status, r.body_mut().read_to_string().unwrap_or_default())
        };
        if let Some((n, v)) = &tag {
            assert_eq!(get(&format!("/{id}/{n}")), (200, v.clone()));
        }
        if let Some(d) = &data {
            assert_eq!(get(&format!("/{id}/data")), (200, d.clone()));
        }
        let t = Instant::now();
        assert_eq!(get(&format!("/{}", "A".repeat(43))).0, 404);
        assert!(t.elapsed() < Duration::from_secs(10));
    })
    .await
    .unwrap();
}
