//! `local-name@1.0`: names this node gives to values (spec 05 §8).
//!
//! `lookup` with `key` answers the value registered under that name, or `not_found`;
//! any other key *k* is a `lookup` of *k* (`GET /~local-name@1.0/router`). `register`
//! with `key` and `value`, signed by the node's admin (its `operator`, or its own
//! address when it has none; anyone when the operator is `unclaimed`), writes the
//! value to the cache, links it at `local-name@1.0/<key>` and puts the name in the
//! node message's `local_names`, where lookups find it first; a name missing there is
//! read from the cache at `local-name@1.0/<key>` (so names survive a restart on a
//! persistent store) and kept there. Anyone else's `register` is a 403.
//!
//! [`register_direct`] registers without the admin check, for devices of this node
//! (`node-process@1.0` names the processes it spawns).

use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome};
use hb_core::message::id_all;
use hb_core::{Ctx, Message, ResolveError, Value};

use crate::router::{answer, verified_signers};

/// The device's name.
pub const NAME: &str = "local-name@1.0";

/// The node option holding the registered names (a message: name → value).
pub const NAMES_OPTION: &str = "local_names";

/// The info of a device whose every key is a name (this one, `node-process@1.0`): keys
/// it does not implement go to its default function, but for the message keys.
pub(crate) fn names_info() -> DeviceInfo {
    DeviceInfo {
        default: DefaultHandler::Function,
        excludes: ["keys", "set", "set-path", "id", "commit", "verify"]
            .map(String::from)
            .to_vec(),
        ..DeviceInfo::default()
    }
}

/// The `local-name@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalName;

impl Device for LocalName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        names_info()
    }

    fn functions(&self) -> &'static [&'static str] {
        &["lookup", "register"]
    }

    fn call(&self, call: Call<'_>, _base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        Ok(match call {
            Call::Function("lookup") => match req.get_str("key") {
                Some(key) => lookup_answer(key, ctx),
                None => Outcome::error_status(400, "lookup needs a `key`."),
            },
            Call::Function("register") => register(req, ctx),
            Call::Default(key) | Call::Handler(key) => lookup_answer(key, ctx),
            Call::Function(other) => {
                return Err(ResolveError::call(NAME, other, "no such function"));
            }
        })
    }
}

/// The cache path of a name.
fn link_path(key: &str) -> String {
    format!("{NAME}/{key}")
}

/// Whether `key` may name something: not empty, no `/` (it is one path segment).
fn valid_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('/') && key.len() <= 256
}

/// The value registered under `key`: the node message's `local_names`, else the
/// cache (then kept in the node message).
pub fn lookup(key: &str, ctx: &Ctx) -> Option<Value> {
    if !valid_key(key) {
        return None;
    }
    let node = ctx.node().get();
    if let Some(v) = node
        .get(NAMES_OPTION)
        .and_then(Value::as_message)
        .and_then(|names| names.get(key))
    {
        return Some(v.clone());
    }
    let stored = ctx.cache().read_path(&link_path(key)).ok().flatten()?;
    remember(key, &stored, ctx);
    Some(stored)
}

fn lookup_answer(key: &str, ctx: &Ctx) -> Outcome {
    match lookup(key, ctx) {
        Some(v) => answer(ctx, v),
        None => Outcome::not_found(),
    }
}

/// Puts `key → value` in the node message's `local_names`.
fn remember(key: &str, value: &Value, ctx: &Ctx) {
    ctx.node().update(|n| {
        let mut names = n
            .get(NAMES_OPTION)
            .and_then(Value::as_message)
            .cloned()
            .unwrap_or_default();
        names.insert(key, value.clone());
        n.clone().with(NAMES_OPTION, names)
    });
}

/// Whether `req` is signed (with signatures that hold) by the node's admin: its
/// `operator`, else its own address; anyone when the operator is `unclaimed`
/// (spec 05 §4.3).
pub fn is_admin(req: &Message, ctx: &Ctx) -> bool {
    let node = ctx.node().get();
    match node.get_str("operator").or_else(|| node.get_str("address")) {
        Some("unclaimed") => true,
        Some(op) => verified_signers(req, ctx).iter().any(|s| s == op),
        None => false,
    }
}

/// `register`: the admin names a value.
fn register(req: &Message, ctx: &Ctx) -> Outcome {
    if !is_admin(req, ctx) {
        return Outcome::error(
            Message::new()
                .with("status", 403i64)
                .with("message", "Unauthorized."),
        );
    }
    let Some(key) = req.get_str("key") else {
        return Outcome::error_status(400, "register needs a `key`.");
    };
    let Some(value) = req.get("value") else {
        return Outcome::error_status(400, "register needs a `value`.");
    };
    match register_direct(key, value, ctx) {
        Ok(()) => answer(ctx, Value::text("Registered.")),
        Err(why) => Outcome::error_status(500, &why),
    }
}

/// Registers `key → value` without an admin check: writes the value to the cache,
/// links it at `local-name@1.0/<key>` and puts it in the node message.
///
/// # Errors
/// The key is not one path segment, or the value is neither a binary nor a message,
/// or the cache cannot store it.
pub fn register_direct(key: &str, value: &Value, ctx: &Ctx) -> Result<(), String> {
    if !valid_key(key) {
        return Err(format!(
            "`{key}` cannot be a name: a name is 1 to 256 bytes without `/`"
        ));
    }
    let cache = ctx.cache();
    let path = link_path(key);
    let stored = match value {
        Value::Binary(b) => cache.write_binary(b).and_then(|p| cache.link(&p, &path)),
        Value::Message(m) => {
            let id = id_all(m).map_err(|e| format!("the value has no ID: {e}"))?;
            match cache.store_message(m, std::slice::from_ref(&path)) {
                Ok(_) => Ok(()),
                Err(_) => {
                    cache.write_message(id, m);
                    cache.link(&id.to_human(), &path)
                }
            }
        }
        other => {
            return Err(format!(
                "a {} cannot be registered: the value must be a binary or a message",
                other.type_name()
            ));
        }
    };
    stored.map_err(|e| format!("the name could not be stored: {e}"))?;
    remember(key, value, ctx);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::sync::Arc;

    use hb_codec::Wallet;
    use hb_core::{MemoryCache, NodeHandle};

    fn key1() -> Wallet {
        Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json")).unwrap()
    }

    fn ctx(node: Message) -> Ctx {
        Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(MemoryCache::new(16)),
            NodeHandle::new(node),
        )
    }

    fn call(ctx: &Ctx, path: &str, req: Message) -> Outcome {
        ctx.resolve(
            Value::Message(Message::new().with("device", NAME)),
            req.with("path", path),
        )
        .unwrap()
    }

    /// Spec 05 §8 vector: the operator registers `name1 → value1`; lookups find it.
    #[test]
    fn operator_registers_and_lookups_find() {
        let op = key1();
        let ctx = ctx(Message::new().with("operator", op.address().as_str()));
        assert!(!call(&ctx, "lookup", Message::new().with("key", "name1")).is_ok());
        let reg = Message::new().with("key", "name1").with("value", "value1");
        // Unsigned: 403 Unauthorized.
        let out = call(&ctx, "register", reg.clone());
        assert!(!out.is_ok());
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(403)));
        assert_eq!(m.get_str("message"), Some("Unauthorized."));
        // Signed by the operator.
        let signed = hb_codec::httpsig_commit::commit(&reg, &op).unwrap();
        let out = call(&ctx, "register", signed);
        assert_eq!(out.value, Value::text("Registered."), "{out:?}");
        let out = call(&ctx, "lookup", Message::new().with("key", "name1"));
        assert_eq!(out.value, Value::text("value1"));
        // Any other key is a lookup.
        assert_eq!(
            call(&ctx, "name1", Message::new()).value,
            Value::text("value1")
        );
        // Kept in the cache too: a fresh node message finds it there.
        ctx.node().update(|n| n.clone().without(NAMES_OPTION));
        assert_eq!(lookup("name1", &ctx), Some(Value::text("value1")));
        assert!(lookup("../x", &ctx).is_none());
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        let ctx = ctx(Message::new().with("operator", "unclaimed"));
        let out = call(
            &ctx,
            "register",
            Message::new().with("key", "a/b").with("value", "v"),
        );
        assert!(!out.is_ok());
        let out = call(&ctx, "register", Message::new().with("key", "a"));
        assert!(!out.is_ok());
        let msg = Message::new().with("x", "y");
        assert!(register_direct("m", &Value::Message(msg.clone()), &ctx).is_ok());
        assert_eq!(lookup("m", &ctx), Some(Value::Message(msg)));
    }
}
