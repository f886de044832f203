//! Replies frame themselves: a result that echoes a request's framing headers as keys
//! (`content-length`, `connection`, …) never puts them on the reply.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use common::{key2, send};
use hb_core::Message;
use hb_store::{MemoryStore, MessageCache};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_framing_headers_do_not_frame_the_reply() {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(Message::new(), cache, key2()).await;
    // The base of `/~message@1.0` is the request's keys: `content-length: 3`, `body`,
    // and a value too long for a header, which moves the reply's body to multipart.
    let req = format!(
        "POST /~message@1.0 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nbig: {}\r\ncontent-length: 3\r\n\r\nxyz",
        "a".repeat(5000)
    );
    let r = send(node.addr, req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let declared: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(declared, r.body.len());
    assert!(declared > 3, "the reply is the whole message, not 3 bytes");
    assert_eq!(
        r.headers
            .iter()
            .filter(|(k, _)| k == "content-length")
            .count(),
        1
    );
    node.stop().await;
}
