//! `stack@1.0`, `patch@1.0`, `dedup@1.0` and `multipass@1.0` over real HTTP (spec 04
//! §3–§4, 05 §9): a node on an ephemeral loopback port resolves stacks built from a
//! HyperPATH and from a POSTed message.

use std::sync::Arc;
use std::time::Duration;

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::{Ctx, MemoryCache, Message, NodeHandle, Registry, ResolveError, Status, Value};
use hb_http::{Running, ServerConfig, Service, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The spec's `A(sep, ok)` append device (04 §3.5).
#[derive(Debug)]
struct Append {
    name: &'static str,
    sep: &'static str,
}

impl Device for Append {
    fn name(&self) -> &'static str {
        self.name
    }
    fn functions(&self) -> &'static [&'static str] {
        &["append"]
    }
    fn call(&self, _: Call<'_>, base: &Message, req: &Message, _: &Ctx) -> DeviceResult {
        if base.get("pass").and_then(Value::as_int) == Some(3) {
            return Ok(Outcome::ok(base.clone()));
        }
        let (Some(existing), Some(new)) = (base.get_str("result"), req.get_str("bin")) else {
            return Err(ResolveError::BadRequest(
                "append needs `result` and `bin`".into(),
            ));
        };
        Ok(Outcome {
            status: Status::Ok,
            value: Value::Message(
                base.clone()
                    .with("result", format!("{existing}{}{new}", self.sep)),
            ),
        })
    }
}

fn key2() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-2.json"))
        .expect("test key loads")
}

/// A node with the preloaded devices plus two append devices.
async fn start() -> Running {
    let mut registry: Registry = hb_devices::registry();
    registry.register(Arc::new(Append {
        name: "append-one@1.0",
        sep: "!D1!",
    }));
    registry.register(Arc::new(Append {
        name: "append-two@1.0",
        sep: "_D2_",
    }));
    let ctx = Ctx::new(
        Arc::new(registry),
        Arc::new(MemoryCache::new(1000)),
        NodeHandle::new(Message::new().with("port", 0i64)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve(
        listener,
        Service::new(ctx, ServerConfig::default()).with_wallet(Arc::new(key2())),
    )
    .expect("serve")
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(addr: std::net::SocketAddr, req: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "no answer within 20 s");
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
    let len: Option<usize> = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = len {
        body.truncate(len);
    }
    Reply { status, body }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
}

fn post(target: &str, msg: &Message) -> Vec<u8> {
    let http = hb_core::httpsig::encode_rich(msg).expect("encode");
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

const STACK: &str =
    "/~stack@1.0&result=INIT&device-stack+list=\"append-one@1.0\",\"append-two@1.0\"";

#[tokio::test]
async fn a_fold_over_http() {
    let node = start().await;
    let r = send(node.addr, &get(&format!("{STACK}/append&bin=2/result"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "INIT!D1!2_D2_2");
    // With `stack-keys`, other keys are plain message keys: the stack's device and the
    // absent `pass` are restored after the fold.
    let limited = format!("{STACK}&stack-keys+list=\"append\"/append&bin=2");
    let r = send(node.addr, &get(&format!("{limited}/device"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "stack@1.0"));
    // Bookkeeping (spec 04 §3.6): the device replaced by the last transformation.
    let r = send(node.addr, &get(&format!("{limited}/previous-device"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "append-one@1.0"));
    let r = send(node.addr, &get(&format!("{limited}/pass"))).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn map_mode_and_transform_over_http() {
    let node = start().await;
    let r = send(
        node.addr,
        &get(&format!("{STACK}/append&bin=x&mode=Map/2/result")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "INIT_D2_x"));
    // `transform/K` runs member K alone.
    let r = send(
        node.addr,
        &get(&format!("{STACK}/transform/2/append&bin=y/result")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "INIT_D2_y"));
}

#[tokio::test]
async fn a_dedup_multipass_stack_over_http() {
    let node = start().await;
    let base = "/~stack@1.0&result=INIT&passes+integer=2\
        &device-stack+list=\"dedup@1.0\",\"append-one@1.0\",\"multipass@1.0\"";
    let r = send(node.addr, &get(&format!("{base}/append&bin=z/result"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "INIT!D1!z!D1!z"));
}

#[tokio::test]
async fn a_posted_runtime_and_patch_stack() {
    let node = start().await;
    let outbox = Message::new()
        .with(
            "1",
            Message::new()
                .with("method", "PATCH")
                .with("prices", Message::new().with("apple", 100i64)),
        )
        .with(
            "2",
            Message::new()
                .with("method", "GET")
                .with("target", "elsewhere"),
        );
    let msg = Message::new()
        .with("device", "stack@1.0")
        .with(
            "device-stack",
            Value::list(vec!["test-device@1.0".into(), "patch@1.0".into()]),
        )
        // Only `compute` runs through the stack; `state/…` are plain reads.
        .with("stack-keys", Value::list(vec!["compute".into()]))
        .with("patch-from", "/results/outbox")
        .with("patch-to", "/state")
        .with(
            "state",
            Message::new().with(
                "prices",
                Message::new().with("apple", 1000i64).with("pear", 7i64),
            ),
        )
        .with("results", Message::new().with("outbox", outbox));
    let r = send(node.addr, &post("/compute/state/prices/apple", &msg)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "100"));
    let r = send(node.addr, &post("/compute/state/prices/pear", &msg)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "7"));
    // The non-patch entry stays in the outbox.
    let r = send(node.addr, &post("/compute/results/outbox/2/target", &msg)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "elsewhere"));
    // A stack without `device-stack` is a clear 400, not a crash.
    let bad = Message::new().with("device", "stack@1.0");
    let r = send(node.addr, &post("/compute", &bad)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("device-stack"), "{}", r.text());
}
