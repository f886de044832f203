//! `cache@1.0`: the node's message cache over HTTP (spec 05 §6.8).
//!
//! * `read`: the message or binary at `target` (an ID, a commitment ID, a `data/<hash>`
//!   path, a link, or any of these followed by keys). With `accept:
//!   application/aos-2` a message is answered as `{body: <JSON-struct text>,
//!   content-type: application/aos-2}` (the JSON-struct of spec 04 §2.8).
//! * `write`: for requests signed by a key listed in the node option `cache_writers`:
//!   `type` `single` (the default) stores the binary `body` and answers `{status: 200,
//!   path: data/<hash>}`; `batch` does the same for every entry of `body` (each a
//!   message with its own `body`). Other requests get the statuses and texts of the
//!   spec's table.
//! * `link`: for the same writers, makes `destination` an alias of `source`.
//!
//! Writes go through the engine's [`hb_core::Cache`] path operations, which a
//! persistent cache carries out durably before answering.

use hb_core::cache::CacheOpError;
use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::json_struct::json_struct;
use hb_core::message::committers_of;
use hb_core::{Ctx, Id, Message, ResolveError, Value};

/// The `cache@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheDevice;

/// The reply to a write by someone not in `cache_writers`.
pub const NOT_AUTHORIZED: &str = "Not authorized to write to the cache.";
/// The reply to a write without a body.
pub const NO_BODY: &str = "No body to write.";
/// The reply to a write of anything but a binary, or of an unknown `type`.
pub const INVALID_WRITE: &str = "Invalid write type.";

impl Device for CacheDevice {
    fn name(&self) -> &'static str {
        "cache@1.0"
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            exports: Some(vec!["read".into(), "write".into(), "link".into()]),
            default: DefaultHandler::None,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &["read", "write", "link"]
    }

    fn call(&self, call: Call<'_>, _base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        // Every operation may wait: on a disk flush (durable writes) or on the network
        // (reads of IDs the store lacks go to its remote sources). Off the async workers.
        match call.key() {
            "read" => Ok(ctx.blocking(|| read(req, ctx))),
            "write" => Ok(ctx.blocking(|| write(req, ctx))),
            "link" => Ok(ctx.blocking(|| link(req, ctx))),
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}

/// A cache failure as a reply: a path the cache cannot hold is the caller's error
/// (400), anything else the node's (500).
fn failed(e: &CacheOpError) -> Outcome {
    match e {
        CacheOpError::InvalidPath { .. } => Outcome::error_status(400, &e.to_string()),
        _ => Outcome {
            status: Status::Failure,
            value: Message::new()
                .with("status", 500i64)
                .with("body", e.to_string())
                .into(),
        },
    }
}

fn read(req: &Message, ctx: &Ctx) -> Outcome {
    let Some(target) = req.get_str("target") else {
        return Outcome::error_status(400, "No `target` to read.");
    };
    // The message cache reads IDs, links and raw `data/` entries alike, so the
    // reference's fallback (a raw store read of `target`) is part of this one read.
    // A request that said `only-if-cached` (another node asking) reads an ID from
    // this node's store alone, never from its remote sources.
    let local_id = (!ctx.opts.remote_loads)
        .then(|| Id::from_human(target.as_bytes()))
        .flatten();
    let read = match local_id {
        Some(id) => Ok(ctx.cache().read_message(&id).map(Value::Message)),
        None => ctx.cache().read_path(target),
    };
    let value = match read {
        Ok(Some(v)) => v,
        Ok(None) => return Outcome::not_found(),
        Err(e) => return failed(&e),
    };
    match (&value, req.get_str("accept")) {
        (Value::Message(m), Some("application/aos-2")) => match json_struct(m) {
            Ok(j) => Outcome::ok(
                Message::new()
                    .with("body", j.to_string())
                    .with("content-type", "application/aos-2"),
            ),
            Err(e) => Outcome::error_status(
                500,
                &format!("cannot render `{target}` as application/aos-2: {e}"),
            ),
        },
        _ => Outcome::ok(value),
    }
}

/// The addresses in the node option `cache_writers`: a list, or a text of addresses
/// separated by commas or spaces (as `config.flat` and `--set` give it).
fn cache_writers(ctx: &Ctx) -> Vec<String> {
    let node = ctx.node().get();
    let texts = |v: &Value| -> Vec<String> {
        match v {
            Value::List(l) => l
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Value::Message(m) => m
                .iter()
                .filter_map(|(_, x)| x.as_str().map(str::to_owned))
                .collect(),
            other => other
                .as_str()
                .map(|s| {
                    s.split([',', ' '])
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    node.get("cache_writers").map(texts).unwrap_or_default()
}

/// Some signer of `req` is a trusted cache writer. (Signatures of HTTP requests are
/// verified before devices see them.)
fn trusted(req: &Message, ctx: &Ctx) -> bool {
    let writers = cache_writers(ctx);
    committers_of(req).iter().any(|s| writers.contains(s))
}

fn write(req: &Message, ctx: &Ctx) -> Outcome {
    if !trusted(req, ctx) {
        return Outcome::error_status(403, NOT_AUTHORIZED);
    }
    match req
        .get("type")
        .and_then(|t| t.as_str().or_else(|| t.as_atom()))
    {
        None | Some("single") => write_single(req, ctx),
        Some("batch") => {
            let Some(Value::Message(entries)) = req.get("body") else {
                return Outcome::error_status(400, INVALID_WRITE);
            };
            let mut out = Message::new();
            for (k, entry) in entries.iter() {
                let result = match entry {
                    Value::Message(m) => write_single(m, ctx),
                    _ => Outcome::error_status(400, INVALID_WRITE),
                };
                out.insert_key(k.clone(), result.value);
            }
            Outcome::ok(out)
        }
        Some(_) => Outcome::error_status(400, INVALID_WRITE),
    }
}

/// One write (spec 05 §6.8): a binary `body` without `location`; or, with `operation:
/// link`, a link of `destination` to `source` (as the reference's `link` does).
fn write_single(msg: &Message, ctx: &Ctx) -> Outcome {
    let operation = msg
        .get("operation")
        .and_then(|o| o.as_str().or_else(|| o.as_atom()))
        .unwrap_or("write");
    match (operation, msg.get("body"), msg.get("location")) {
        ("write", None, _) => Outcome::error_status(400, NO_BODY),
        ("write", Some(Value::Binary(bytes)), None) => match ctx.cache().write_binary(bytes) {
            Ok(path) => Outcome::ok(
                Message::new()
                    .with("status", 200i64)
                    .with("path", path.as_str()),
            ),
            Err(e) => failed(&e),
        },
        ("link", _, _) => link_paths(msg, ctx),
        _ => Outcome::error_status(400, INVALID_WRITE),
    }
}

fn link(req: &Message, ctx: &Ctx) -> Outcome {
    if !trusted(req, ctx) {
        return Outcome::error(Value::atom("not_authorized"));
    }
    link_paths(req, ctx)
}

fn link_paths(msg: &Message, ctx: &Ctx) -> Outcome {
    let (Some(source), Some(destination)) = (msg.get_str("source"), msg.get_str("destination"))
    else {
        return Outcome::error_status(400, "A link needs `source` and `destination`.");
    };
    match ctx.cache().link(source, destination) {
        Ok(()) => Outcome::ok(Message::new().with("status", 200i64)),
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::sync::Arc;

    use hb_core::httpsig;
    use hb_core::{MemoryCache, NodeHandle};
    use serde_json::Value as Json;

    const KEY1: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");
    const KEY2: &[u8] = include_bytes!("../../../tests/fixtures/key-2.json");

    fn ctx(writers: Value) -> Ctx {
        Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(MemoryCache::new(100)),
            NodeHandle::new(Message::new().with("cache_writers", writers)),
        )
    }

    fn key(k: &[u8]) -> hb_codec::Wallet {
        hb_codec::Wallet::from_jwk_json(k).unwrap()
    }

    fn call(ctx: &Ctx, key: &str, req: Message) -> Outcome {
        CacheDevice
            .call(Call::Function(key), &Message::new(), &req, ctx)
            .unwrap()
    }

    fn signed(k: &[u8], msg: Message) -> Message {
        hb_codec::httpsig_commit::commit(&msg, &key(k)).unwrap()
    }

    fn status_body(o: &Outcome) -> (i64, String) {
        let m = o.value.as_message().unwrap();
        (
            m.get("status").and_then(Value::as_int).unwrap(),
            m.get_str("body").unwrap_or_default().to_owned(),
        )
    }

    #[test]
    fn writes_need_a_trusted_signer_and_a_binary_body() {
        let me = key(KEY1).address();
        let ctx = ctx(Value::list(vec![Value::text(&me)]));
        let refused = (403, NOT_AUTHORIZED.to_owned());
        assert_eq!(
            status_body(&call(&ctx, "write", Message::new().with("body", "x"))),
            refused
        );
        let by2 = signed(KEY2, Message::new().with("body", "x"));
        assert_eq!(status_body(&call(&ctx, "write", by2)), refused);
        let none = signed(KEY1, Message::new().with("a", "1"));
        assert_eq!(
            status_body(&call(&ctx, "write", none)),
            (400, NO_BODY.into())
        );
        for bad in [
            Message::new().with("body", Message::new().with("a", "1")),
            Message::new().with("body", "x").with("location", "here"),
            Message::new().with("body", "x").with("type", "other"),
        ] {
            assert_eq!(
                status_body(&call(&ctx, "write", signed(KEY1, bad.clone()))),
                (400, INVALID_WRITE.into()),
                "{bad:?}"
            );
        }
        let ok = call(
            &ctx,
            "write",
            signed(KEY1, Message::new().with("body", "hello")),
        );
        assert!(ok.is_ok());
        let path = ok
            .value
            .as_message()
            .unwrap()
            .get_str("path")
            .unwrap()
            .to_owned();
        assert_eq!(path, hb_core::cache::data_path(b"hello"));
        let back = call(&ctx, "read", Message::new().with("target", path.as_str()));
        assert_eq!(back, Outcome::ok(Value::text("hello")));
        // A batch writes every entry; each has its own answer.
        let batch = Message::new().with("type", "batch").with(
            "body",
            Message::new()
                .with("one", Message::new().with("body", "1"))
                .with("two", Message::new().with("nobody", "2")),
        );
        let out = call(&ctx, "write", signed(KEY1, batch));
        let out = out.value.as_message().unwrap().clone();
        let one = out.get("one").and_then(Value::as_message).unwrap();
        assert_eq!(
            one.get_str("path").unwrap(),
            hb_core::cache::data_path(b"1")
        );
        let two = out.get("two").and_then(Value::as_message).unwrap();
        assert_eq!(two.get_str("body"), Some(NO_BODY));
    }

    #[test]
    fn links_need_a_trusted_signer() {
        let ctx = ctx(Value::text(&format!("someone, {}", key(KEY1).address())));
        let req = Message::new()
            .with("source", hb_core::cache::data_path(b"v").as_str())
            .with("destination", "named");
        let out = call(&ctx, "link", req.clone());
        assert_eq!(out, Outcome::error(Value::atom("not_authorized")));
        call(
            &ctx,
            "write",
            signed(KEY1, Message::new().with("body", "v")),
        );
        let out = call(&ctx, "link", signed(KEY1, req));
        assert!(out.is_ok(), "{out:?}");
        let back = call(&ctx, "read", Message::new().with("target", "named"));
        assert_eq!(back, Outcome::ok(Value::text("v")));
        let miss = call(&ctx, "read", Message::new().with("target", "nothing"));
        assert_eq!(miss, Outcome::not_found());
    }

    #[test]
    fn aos2_reads_answer_the_json_struct() {
        let ctx = ctx(Value::list(vec![]));
        let msg = signed(
            KEY1,
            Message::new()
                .with("data", "hello")
                .with("block-height", 7i64)
                .with("target", "t"),
        );
        let id = httpsig::message_id(&msg).unwrap();
        ctx.cache().write_message(id, &msg);
        let out = call(
            &ctx,
            "read",
            Message::new()
                .with("target", id.to_human().as_str())
                .with("accept", "application/aos-2"),
        );
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get_str("content-type"), Some("application/aos-2"));
        let j: Json = serde_json::from_str(m.get_str("body").unwrap()).unwrap();
        assert_eq!(j["Id"], id.to_human());
        assert_eq!(j["Owner"], key(KEY1).address());
        assert_eq!(j["From"], key(KEY1).address());
        assert_eq!(j["Data"], "hello");
        assert_eq!(j["Target"], "t");
        let tags = j["Tags"].as_array().unwrap();
        assert!(tags.contains(&serde_json::json!({"name": "Block-Height", "value": "7"})));
        assert!(tags.iter().any(|t| t["name"] == "Ao-Types"));
    }

    /// A source that has one message, and counts the times it was asked.
    #[derive(Debug)]
    struct OneMessage(Message, std::sync::atomic::AtomicUsize);

    impl hb_store::MessageSource for OneMessage {
        fn name(&self) -> &str {
            "one-message"
        }
        fn fetch(&self, id: &str) -> Result<Option<Message>, hb_store::StoreError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let own = httpsig::message_id(&self.0).unwrap().to_human();
            Ok((own == id).then(|| self.0.clone()))
        }
    }

    #[test]
    fn only_if_cached_reads_never_ask_the_remote_sources() {
        let remote = Message::new().with("greeting", "from afar");
        let id = httpsig::message_id(&remote).unwrap().to_human();
        let source = Arc::new(OneMessage(remote, Default::default()));
        let cache = hb_store::MessageCache::new(Arc::new(hb_store::MemoryStore::new()))
            .with_sources(vec![source.clone()]);
        let ctx = Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(cache),
            NodeHandle::new(Message::new()),
        );
        let req = Message::new().with("target", id.as_str());
        // What another node sends (`only-if-cached`, which the HTTP layer turns into
        // `remote_loads: false`): a miss, and the source is not asked.
        let local = ctx.with_opts(hb_core::ResolveOpts {
            remote_loads: false,
            ..ctx.opts
        });
        assert_eq!(call(&local, "read", req.clone()), Outcome::not_found());
        assert_eq!(source.1.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Anyone else: read through the source, and kept.
        let out = call(&ctx, "read", req.clone());
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get_str("greeting"), Some("from afar"));
        assert_eq!(source.1.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Now local: `only-if-cached` finds it.
        let again = call(&local, "read", req);
        assert_eq!(
            again.value.as_message().unwrap().get_str("greeting"),
            Some("from afar")
        );
    }
}
