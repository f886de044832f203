//! `cache@1.0` over HTTP (spec 05 §6.8): trusted writers store binaries, everyone else is
//! refused with the spec's status and text, and reads return the stored bytes.

use std::sync::Arc;
use std::time::Duration;

use hb_core::{Ctx, MemoryCache, Message, NodeHandle, Value};
use hb_http::{Running, ServerConfig, Service, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn key(json: &[u8]) -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(json).expect("test key loads")
}

fn key1() -> hb_codec::Wallet {
    key(include_bytes!("../../../tests/fixtures/key-1.json"))
}

fn key2() -> hb_codec::Wallet {
    key(include_bytes!("../../../tests/fixtures/key-2.json"))
}

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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve(
        listener,
        Service::new(ctx, ServerConfig::default()).with_wallet(Arc::new(key2())),
    )
    .expect("serve")
}

/// Status, lower-cased headers and body of a response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn send(addr: std::net::SocketAddr, req: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "no answer within 10 s");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
    {
        body.truncate(len);
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A POST of `msg` (signed by `signer` if given) to `target`.
fn post(target: &str, msg: &Message, signer: Option<&hb_codec::Wallet>) -> Vec<u8> {
    let msg = match signer {
        Some(w) => hb_codec::httpsig_commit::commit(msg, w).expect("commit"),
        None => msg.clone(),
    };
    let http = hb_core::httpsig::encode_rich(&msg).expect("encode");
    let body = http.body.map(|b| b.to_vec()).unwrap_or_default();
    let mut req = format!("POST {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for (k, v) in &http.headers {
        req.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut req = req.into_bytes();
    req.extend_from_slice(&body);
    req
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
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
