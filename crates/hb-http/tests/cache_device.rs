//! `cache@1.0` over HTTP (spec 05 §6.8): trusted writers store binaries, everyone else is
//! refused with the spec's status and text, and reads return the stored bytes.

mod common;

use std::sync::Arc;

use common::{get, key1, key2, post, send};
use hb_core::{Ctx, MemoryCache, Message, NodeHandle, Value};
use hb_http::Running;

/// A node whose only cache writer is key-1 (it signs its replies with key-2).
async fn start() -> Running {
    let node = Message::new().with("port", 0i64).with(
        "cache_writers",
        Value::list(vec![Value::text(&key1().address())]),
    );
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        Arc::new(MemoryCache::new(1000)),
        NodeHandle::new(node),
    );
    common::serve_ctx(ctx, Arc::new(key2())).await
}

#[tokio::test]
async fn trusted_writers_write_others_are_refused_and_reads_return_the_bytes() {
    let node = start().await;
    let data = "bytes kept by cache@1.0";
    let write = Message::new().with("body", data);

    // Signed by key-1, a cache writer: 200 and the data path.
    let r = send(node.addr, &post("/~cache@1.0/write", &write, Some(&key1()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let path = hb_core::cache::data_path(data.as_bytes());
    assert_eq!(r.header("path"), Some(path.as_str()), "{:?}", r.headers);

    // Unsigned, or signed by key-2: 403 with the spec's body.
    for signer in [None, Some(key2())] {
        let r = send(
            node.addr,
            &post("/~cache@1.0/write", &write, signer.as_ref()),
        )
        .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "Not authorized to write to the cache."),
            "signer {:?}",
            signer.map(|w| w.address())
        );
    }
    // A trusted write without a body: 400.
    let r = send(
        node.addr,
        &post(
            "/~cache@1.0/write",
            &Message::new().with("a", "1"),
            Some(&key1()),
        ),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (400, "No body to write."));

    // Reads return the bytes, by the data path and by a link a writer made.
    let r = send(node.addr, &get(&format!("/~cache@1.0/read?target={path}"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, data));
    let link = Message::new()
        .with("source", path.as_str())
        .with("destination", "my/name");
    let r = send(node.addr, &post("/~cache@1.0/link", &link, Some(&key2()))).await;
    assert_eq!(r.status, 400, "key-2 may not link: {}", r.text());
    let r = send(node.addr, &post("/~cache@1.0/link", &link, Some(&key1()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // (Query values are not percent-decoded, spec 02 §2: the `/` is written as is.)
    let r = send(node.addr, &get("/~cache@1.0/read?target=my/name")).await;
    assert_eq!((r.status, r.text().as_str()), (200, data));
    // Nothing there: 404.
    let r = send(node.addr, &get("/~cache@1.0/read?target=data/nothing")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    node.stop().await;
}
