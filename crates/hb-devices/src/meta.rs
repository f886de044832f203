//! `meta@1.0`: the node's own message (spec 05 §4).
//!
//! `GET ~meta@1.0/info` answers the node message without its private keys;
//! `POST ~meta@1.0/info` lets the operator update it; `build` describes this binary.

use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome};
use hb_core::message::committers_of;
use hb_core::value::is_private;
use hb_core::{Ctx, Message, ResolveError, Value};

/// The `meta@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta;

impl Device for Meta {
    fn name(&self) -> &'static str {
        "meta@1.0"
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            exports: Some(vec!["info".into(), "build".into()]),
            default: DefaultHandler::None,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &["info", "build"]
    }

    fn call(&self, call: Call<'_>, _base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "info" => info(req, ctx),
            "build" => Ok(Outcome::ok(build())),
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}

/// The node message as `info` shows it: private keys removed, `address` present.
pub fn public_node_message(node: &Message) -> Message {
    node.without_private()
}

fn info(req: &Message, ctx: &Ctx) -> DeviceResult {
    let method = req.get_str("method").unwrap_or("GET").to_ascii_uppercase();
    match method.as_str() {
        "GET" | "HEAD" => Ok(Outcome::ok(public_node_message(&ctx.node().get()))),
        "POST" => update(req, ctx),
        _ => Ok(Outcome::error("Unsupported Meta/info method.")),
    }
}

/// `POST info`: the operator (or anyone, on an unclaimed node) updates the node message.
fn update(req: &Message, ctx: &Ctx) -> DeviceResult {
    let node = ctx.node().get();
    if node
        .get("initialized")
        .is_some_and(|v| v.as_str() == Some("permanent") || v.is_atom("permanent"))
    {
        return Ok(Outcome::error(
            "The node message of this machine is already permanent. It cannot be changed.",
        ));
    }
    // The operator is the configured one, else the node's own address; only an explicit
    // `unclaimed` lets anyone update the node.
    let operator = node.get_str("operator").or_else(|| node.get_str("address"));
    let signers = committers_of(req);
    let allowed = match operator {
        Some("unclaimed") => true,
        Some(op) => signers.iter().any(|s| s == op),
        None => false,
    };
    if !allowed {
        return Ok(Outcome::error("Unauthorized"));
    }
    let mut history_len = 0;
    ctx.node().update(|current| {
        let mut next = current.clone();
        for (k, v) in req.public() {
            if k.as_ref() == "commitments" || is_private(k) {
                continue;
            }
            next.insert(&k.replace('-', "_"), v.clone());
        }
        let mut history = match current.get("node_history") {
            Some(Value::List(l)) => l.as_ref().clone(),
            _ => vec![],
        };
        history.insert(0, Value::Message(req.without_private()));
        history_len = history.len();
        next.insert("node_history", Value::list(history));
        next
    });
    Ok(Outcome::ok(
        Message::new()
            .with(
                "body",
                format!("Node message updated. History: {history_len}updates."),
            )
            .with("history-length", history_len as i64),
    ))
}

/// What `build` answers (spec 05 §4.2).
fn build() -> Message {
    let source = env!("HB_GIT_HASH");
    Message::new()
        .with("node", "hyperbeam-rs")
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("source", source)
        .with("source-short", source.get(..7).unwrap_or(source))
        .with(
            "build-time",
            env!("HB_BUILD_TIME").parse::<i64>().unwrap_or_default(),
        )
}
