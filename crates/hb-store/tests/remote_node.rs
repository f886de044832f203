//! `RemoteNodeSource` against a real node (hb-http on an ephemeral loopback port whose
//! cache is a `MessageCache`, replies signed with key-2), and a second cache that reads
//! through it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hb_core::value::Value;
use hb_core::{Ctx, Message, NodeHandle};
use hb_store::{MemoryStore, MessageCache, MessageSource, RemoteNodeSource};

fn key(n: u8) -> hb_codec::Wallet {
    let path = format!(
        "{}/../../tests/fixtures/key-{n}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    hb_codec::Wallet::from_jwk_json(&std::fs::read(path).unwrap()).unwrap()
}

fn commitment_ids(msg: &Message) -> Vec<String> {
    msg.get("commitments")
        .and_then(Value::as_message)
        .map(|c| c.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default()
}

/// A node serving `cache`, signing its replies with key-2.
async fn node(cache: Arc<MessageCache>) -> hb_http::Running {
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        cache,
        NodeHandle::new(Message::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc =
        hb_http::Service::new(ctx, hb_http::ServerConfig::default()).with_wallet(Arc::new(key(2)));
    hb_http::serve(listener, svc).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_signed_unsigned_and_ans104_messages_from_a_node() {
    let remote_cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    // An httpsig-signed message (key-1): its commitments travel with it.
    let plain = Message::new()
        .with("greeting", "hello")
        .with("count", 7i64)
        .with("body", "the body");
    let signed = hb_codec::httpsig_commit::commit(&plain, &key(1)).unwrap();
    let signed_u = remote_cache.write(&signed).unwrap().to_human();
    let signed_ids = commitment_ids(&signed);
    // An ANS-104 item (key-1).
    let item = hb_codec::ans104::commit(
        &Message::new().with("tag-a", "va").with("data", "item data"),
        &key(1),
    )
    .unwrap();
    let item_ids = commitment_ids(&item);
    remote_cache.write(&item).unwrap();
    // An unsigned message: content-addressed.
    let unsigned = Message::new().with("colour", "blue").with("n", 3i64);
    let unsigned_u = remote_cache.write(&unsigned).unwrap().to_human();

    let node = node(remote_cache).await;
    let base = format!("http://{}", node.addr);
    tokio::task::spawn_blocking(move || {
        let src = RemoteNodeSource::new(&base).unwrap();
        assert_eq!(src.name(), format!("node {base}"));

        // Signed: by the uncommitted ID and by each commitment ID.
        for id in std::iter::once(&signed_u).chain(&signed_ids) {
            let got = src.fetch(id).unwrap().unwrap_or_else(|| panic!("{id}"));
            assert_eq!(got.get_str("greeting"), Some("hello"), "{id}");
            assert_eq!(got.get("count"), Some(&Value::Integer(7)), "{id}");
            assert_eq!(got.get_str("body"), Some("the body"), "{id}");
            assert!(
                got.get("status").is_none(),
                "the reply's status is not kept"
            );
            let ids = commitment_ids(&got);
            for c in &signed_ids {
                assert!(ids.contains(c), "{id}: commitment {c} kept: {ids:?}");
            }
        }

        // ANS-104: by its ID (the data item comes back verbatim).
        for id in &item_ids {
            let got = src.fetch(id).unwrap().unwrap_or_else(|| panic!("{id}"));
            assert_eq!(got.get_str("tag-a"), Some("va"));
            assert_eq!(got.get_str("data"), Some("item data"));
            assert!(commitment_ids(&got).contains(id));
        }

        // Unsigned: its content is its ID; the node's own signature is dropped.
        let got = src.fetch(&unsigned_u).unwrap().unwrap();
        assert_eq!(got, unsigned);

        // Unknown IDs and non-IDs: not found.
        assert!(src.fetch(&"A".repeat(43)).unwrap().is_none());
        assert!(src.fetch("~meta@1.0").unwrap().is_none());

        // A second cache reading through the source keeps what it fetched.
        let local =
            MessageCache::new(Arc::new(MemoryStore::new())).with_sources(vec![Arc::new(src)]);
        let v = local.read(&signed_ids[0]).unwrap().unwrap();
        assert_eq!(v.as_message().unwrap().get_str("greeting"), Some("hello"));
        assert!(
            local
                .store()
                .read(&format!("{signed_u}/greeting"))
                .unwrap()
                .is_some()
        );
    })
    .await
    .unwrap();
}

#[test]
fn a_dead_node_is_an_error_that_names_the_url_quickly() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let src = RemoteNodeSource::new(&base).unwrap();
    let t = Instant::now();
    let e = src.fetch(&"A".repeat(43)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(e.to_string().contains(&base), "{e}");
}

#[test]
fn bad_urls_are_refused() {
    for bad in ["", "ftp://x", "http://", "127.0.0.1:8734", "http://h?x=1"] {
        assert!(RemoteNodeSource::new(bad).is_err(), "{bad}");
    }
    assert!(RemoteNodeSource::new("http://127.0.0.1:1/").is_ok());
}

#[test]
fn sources_in_order() {
    let s = hb_store::sources(
        Some("http://127.0.0.1:1984"),
        &["http://127.0.0.1:8734".into(), "not a url".into()],
    );
    let names: Vec<&str> = s.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "gateway http://127.0.0.1:1984",
            "node http://127.0.0.1:8734"
        ]
    );
    assert!(hb_store::sources(Some("none"), &[]).is_empty());
    assert!(hb_store::sources(Some(""), &[]).is_empty());
    assert!(hb_store::sources(None, &[]).is_empty());
}
