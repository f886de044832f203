//! `RemoteNodeStore` (spec 05 §6.6, write side) against a real node (hb-http on an
//! ephemeral loopback port, `cache_writers` = key-1, replies signed with key-2), and
//! the loop guard of `RemoteNodeSource` with two nodes that read from each other.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hb_core::cache::data_path;
use hb_core::{Ctx, Message, NodeHandle, Value};
use hb_store::{
    EntryType, MemoryStore, MessageCache, MessageSource, Op, RemoteNodeSource, RemoteNodeStore,
    Scope, Store, StoreError,
};

fn key(n: u8) -> Arc<hb_codec::Wallet> {
    let path = format!(
        "{}/../../tests/fixtures/key-{n}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Arc::new(hb_codec::Wallet::from_jwk_json(&std::fs::read(path).unwrap()).unwrap())
}

/// A node on `listener` serving `cache`, whose only cache writer is key-1 (replies
/// signed with key-2).
fn node(listener: tokio::net::TcpListener, cache: Arc<MessageCache>) -> hb_http::Running {
    let opts = Message::new().with(
        "cache_writers",
        Value::list(vec![Value::text(&key(1).address())]),
    );
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        cache,
        NodeHandle::new(opts),
    );
    let svc = hb_http::Service::new(ctx, hb_http::ServerConfig::default()).with_wallet(key(2));
    hb_http::serve(listener, svc).unwrap()
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// `GET <url>`: status and body.
fn get(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_links_through_cache_writes_and_reads_back() {
    let running = node(
        listener().await,
        Arc::new(MessageCache::new(Arc::new(MemoryStore::new()))),
    );
    let base = format!("http://{}", running.addr);
    tokio::task::spawn_blocking(move || {
        let store = RemoteNodeStore::new(&base, key(1)).unwrap();
        assert_eq!(store.scope(), Scope::Remote);
        assert_eq!(store.name(), format!("remote-node {base}"));
        let data = Bytes::from_static(b"bytes written through the remote-node store");
        let path = data_path(&data);

        assert_eq!(store.read(&path).unwrap(), None, "nothing there yet");
        assert_eq!(store.kind(&path).unwrap(), None);
        store.write(&path, data.clone()).unwrap();

        // Readable by anyone through cache@1.0/read, and through the store.
        let (status, body) = get(&format!("{base}/~cache@1.0/read?target={path}"));
        assert_eq!((status, body.as_slice()), (200, data.as_ref()));
        assert_eq!(store.read(&path).unwrap(), Some(data.clone()));
        assert_eq!(store.read(&format!("/{path}")).unwrap(), Some(data.clone()));
        assert_eq!(store.kind(&path).unwrap(), Some(EntryType::Simple));

        // A name for it: a link, read through the store and over HTTP.
        store.make_link(&path, "names/greeting").unwrap();
        assert_eq!(store.read("names/greeting").unwrap(), Some(data.clone()));
        let (status, body) = get(&format!("{base}/~cache@1.0/read?target=names/greeting"));
        assert_eq!((status, body.as_slice()), (200, data.as_ref()));
        store.make_link("x/y", "x/y").unwrap();

        // Identity resolve, no lists, groups are no-ops; a batch of several changes.
        assert_eq!(store.resolve("names/greeting").unwrap(), "names/greeting");
        assert_eq!(store.list("names").unwrap(), None);
        let more = Bytes::from_static(b"second");
        store
            .apply(&[
                Op::Group("g".into()),
                Op::Write(data_path(&more), more.clone()),
                Op::Link {
                    existing: data_path(&more),
                    new: "names/second".into(),
                },
            ])
            .unwrap();
        assert_eq!(store.read("names/second").unwrap(), Some(more));

        // A write anywhere but the bytes' own data path: refused before sending.
        let other = Bytes::from_static(b"never sent");
        let e = store
            .apply(&[
                Op::Write(data_path(&other), other.clone()),
                Op::Write("my/file".into(), other.clone()),
            ])
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::InvalidPath { path, .. } if path == "my/file"),
            "{e}"
        );
        assert!(e.to_string().contains(&data_path(&other)), "{e}");
        assert_eq!(
            store.read(&data_path(&other)).unwrap(),
            None,
            "nothing sent"
        );

        // Paths that cannot travel in a query value are refused with the path named.
        let e = store.read("a b&c").unwrap_err();
        assert!(e.to_string().contains("a b&c"), "{e}");
    })
    .await
    .unwrap();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_not_in_cache_writers_gets_a_clear_403() {
    let running = node(
        listener().await,
        Arc::new(MessageCache::new(Arc::new(MemoryStore::new()))),
    );
    let base = format!("http://{}", running.addr);
    tokio::task::spawn_blocking(move || {
        let store = RemoteNodeStore::new(&base, key(2)).unwrap();
        let data = Bytes::from_static(b"refused");
        let path = data_path(&data);
        let e = store.write(&path, data).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Remote { .. }), "{text}");
        for part in [
            format!("POST {base}/~cache@1.0/write"),
            "status 403".to_owned(),
            "Not authorized to write to the cache.".to_owned(),
            path.clone(),
        ] {
            assert!(text.contains(&part), "{part:?} in {text}");
        }
        let e = store.make_link(&path, "n").unwrap_err().to_string();
        assert!(e.contains(&format!("POST {base}/~cache@1.0/link")), "{e}");
        assert!(!e.contains("status 200"), "{e}");
    })
    .await
    .unwrap();
    running.stop().await;
}

#[test]
fn a_dead_node_fails_fast_with_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let store = RemoteNodeStore::new(&base, key(1)).unwrap();
    let data = Bytes::from_static(b"x");
    let t = Instant::now();
    let e = store.write(&data_path(&data), data).unwrap_err();
    assert!(e.to_string().contains(&base), "{e}");
    let e = store.read("data/x").unwrap_err();
    assert!(e.to_string().contains(&base), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    for bad in ["", "ftp://x", "127.0.0.1:8734"] {
        assert!(RemoteNodeStore::new(bad, key(1)).is_err(), "{bad}");
    }
}

#[test]
fn the_source_asks_only_if_cached() {
    // A one-shot server that records the request and answers 404.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    });
    let src = RemoteNodeSource::new(&base).unwrap();
    assert!(src.fetch(&"A".repeat(43)).unwrap().is_none());
    let head = seen.join().unwrap();
    assert!(head.contains("cache-control: only-if-cached"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_read_from_each_other_answer_a_miss_quickly() {
    let (la, lb) = (listener().await, listener().await);
    let (a_url, b_url) = (
        format!("http://{}", la.local_addr().unwrap()),
        format!("http://{}", lb.local_addr().unwrap()),
    );
    let source = |url: &str| -> Vec<Arc<dyn MessageSource>> {
        vec![Arc::new(
            RemoteNodeSource::with_timeouts(url, Duration::from_secs(5), Duration::from_secs(60))
                .unwrap(),
        )]
    };
    let cache_a =
        Arc::new(MessageCache::new(Arc::new(MemoryStore::new())).with_sources(source(&b_url)));
    let cache_b =
        Arc::new(MessageCache::new(Arc::new(MemoryStore::new())).with_sources(source(&a_url)));
    // A message only B has; A finds it through B.
    let only_b = Message::new().with("kept-by", "b");
    let only_b_id = cache_b.write(&only_b).unwrap().to_human();
    let (a, b) = (node(la, cache_a), node(lb, cache_b));
    tokio::task::spawn_blocking(move || {
        let src = RemoteNodeSource::new(&a_url).unwrap();
        let missing = hb_core::id::Id::sha256(b"nobody has this").to_human();
        let t = Instant::now();
        assert!(src.fetch(&missing).unwrap().is_none());
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a miss took {:?}",
            t.elapsed()
        );
        // A node-to-node read (`only-if-cached`) is answered from A's store alone…
        assert!(src.fetch(&only_b_id).unwrap().is_none());
        // …while a client's request makes A fetch the message from B.
        let mut reply = ureq::get(format!("{a_url}/{only_b_id}/kept-by"))
            .call()
            .unwrap();
        assert_eq!(reply.body_mut().read_to_string().unwrap(), "b");
        // And again: the guard counted every fetch out.
        let t = Instant::now();
        assert!(src.fetch(&missing).unwrap().is_none());
        assert!(t.elapsed() < Duration::from_secs(10));
    })
    .await
    .unwrap();
    a.stop().await;
    b.stop().await;
}
