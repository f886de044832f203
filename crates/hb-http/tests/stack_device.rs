//! `stack@1.0`, `patch@1.0`, `dedup@1.0` and `multipass@1.0` over real HTTP (spec 04
//! §3–§4, 05 §9): a node on an ephemeral loopback port resolves stacks built from a
//! HyperPATH and from a POSTed message.

mod common;

use std::sync::Arc;

use common::{get, key2, send};
use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::{Ctx, MemoryCache, Message, NodeHandle, Registry, ResolveError, Status, Value};
use hb_http::Running;

fn post(target: &str, msg: &Message) -> Vec<u8> {
    common::post(target, msg, None)
}

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
    common::serve_ctx(ctx, Arc::new(key2())).await
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
