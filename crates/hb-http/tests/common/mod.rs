//! What the HTTP integration tests share: the fixture wallets, a node on an ephemeral
//! loopback port, raw HTTP/1.1 requests and replies, and who signed a reply.

#![allow(dead_code, reason = "each test file uses a part")]

use std::sync::Arc;
use std::time::Duration;

use hb_core::{Cache, Ctx, Message, NodeHandle};
use hb_http::{Running, ServerConfig, Service, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub fn key(json: &[u8]) -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(json).expect("test key loads")
}

pub fn key1() -> hb_codec::Wallet {
    key(include_bytes!("../../../../tests/fixtures/key-1.json"))
}

pub fn key2() -> hb_codec::Wallet {
    key(include_bytes!("../../../../tests/fixtures/key-2.json"))
}

/// A node with node message `node` and cache `cache`, whose devices and replies sign
/// with `wallet`, on 127.0.0.1 at an ephemeral port.
pub async fn start_node(node: Message, cache: Arc<dyn Cache>, wallet: hb_codec::Wallet) -> Running {
    let wallet = Arc::new(wallet);
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry_with_wallet(Some(wallet.clone()))),
        cache,
        NodeHandle::new(node),
    );
    serve_ctx(ctx, wallet).await
}

/// A node resolving with `ctx` (its own devices and cache), replies signed by `wallet`,
/// on 127.0.0.1 at an ephemeral port.
pub async fn serve_ctx(ctx: Ctx, wallet: Arc<hb_codec::Wallet>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve(
        listener,
        Service::new(ctx, ServerConfig::default()).with_wallet(wallet),
    )
    .expect("serve")
}

/// Status, lower-cased headers and body of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one raw request (with `connection: close`) and reads the whole reply.
pub async fn send(addr: std::net::SocketAddr, req: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "no answer within 30 s");
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

/// A POST of `msg` (signed by `signer` if given) to `target`, with `extra` header lines.
pub fn post_with(
    target: &str,
    msg: &Message,
    signer: Option<&hb_codec::Wallet>,
    extra: &str,
) -> Vec<u8> {
    let msg = match signer {
        Some(w) => hb_codec::httpsig_commit::commit(msg, w).expect("commit"),
        None => msg.clone(),
    };
    // The wire form: values that cannot be header fields (a newline in Lua source)
    // travel as body parts, as a real client sends them.
    let http = hb_core::httpsig::encode_rich_wire(&msg).expect("encode");
    let body = http.body.map(|b| b.to_vec()).unwrap_or_default();
    let mut req = format!("POST {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}");
    for (k, v) in &http.headers {
        req.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut req = req.into_bytes();
    req.extend_from_slice(&body);
    req
}

/// A POST of `msg` (signed by `signer` if given) to `target`.
pub fn post(target: &str, msg: &Message, signer: Option<&hb_codec::Wallet>) -> Vec<u8> {
    post_with(target, msg, signer, "")
}

/// A GET of `target`, with `extra` header lines.
pub fn get_with(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n").into_bytes()
}

/// A GET of `target`.
pub fn get(target: &str) -> Vec<u8> {
    get_with(target, "")
}

/// The committers of a reply whose signatures verify over the fields as received.
pub fn verified_committers(r: &Reply) -> Vec<String> {
    let mut http = hb_core::httpsig::HttpMessage::default();
    for (k, v) in &r.headers {
        if !matches!(
            k.as_str(),
            "content-length"
                | "date"
                | "connection"
                | "access-control-allow-origin"
                | "access-control-allow-methods"
        ) {
            http.headers
                .insert(k.clone(), bytes::Bytes::from(v.clone()));
        }
    }
    http.body = (!r.body.is_empty()).then(|| bytes::Bytes::from(r.body.clone()));
    let status = r.status.to_string();
    let derived = move |name: &str| (name == "status").then(|| bytes::Bytes::from(status.clone()));
    let tabm = hb_codec::httpsig_commit::from_http_verified(&http, &derived)
        .unwrap_or_else(|e| panic!("the reply {e}: {r:?}"));
    let rich = hb_core::structured::from_tabm(&tabm).expect("rich");
    hb_core::message::committers_of(&rich)
}
