//! Hooks: handler messages the node runs at fixed points (spec 05 §5): `request` and
//! `response` around each HTTP request, `step` after every resolver step (spec 01 §5.2
//! stage 7), `start` at boot. The node message's key `on` maps a hook name to a handler
//! message or a list of them.

use crate::device::{Outcome, Status};
use crate::resolve::{Ctx, ResolveError};
use crate::value::{Message, Value};

/// The handlers of hook `name` in a node message (`on/<name>`).
pub fn handlers(node: &Message, name: &str) -> Vec<Message> {
    let Some(on) = node.get("on").and_then(Value::as_message) else {
        return vec![];
    };
    match on.get(name) {
        Some(Value::Message(h)) => vec![h.clone()],
        Some(Value::List(l)) => l.iter().filter_map(|v| v.as_message().cloned()).collect(),
        _ => vec![],
    }
}

/// What a request's singleton resolves as (spec 05 §2.4 steps 2–3): its HyperPATH's
/// message list, passed through the node's `request` hook. `Ok(Err(outcome))` when the
/// hook answered the request itself (an error or an unexpected result).
///
/// # Errors
/// The path does not parse, the hook raised, or it returned no message list.
pub fn request_list(
    ctx: &Ctx,
    node: &Message,
    singleton: &Message,
) -> Result<Result<Vec<Value>, Outcome>, ResolveError> {
    let list = crate::hyperpath::from_singleton(singleton)?;
    let handlers = handlers(node, "request");
    if handlers.is_empty() {
        return Ok(Ok(list));
    }
    let req = Message::new()
        .with("request", singleton.clone())
        .with("body", Value::list(list));
    match run(ctx, "request", &handlers, req)? {
        Outcome {
            status: Status::Ok,
            value: Value::Message(m),
        } => match m.get("body") {
            Some(Value::List(l)) => Ok(Ok(l.as_ref().clone())),
            Some(Value::Message(m)) => Ok(Ok(crate::value::message_to_list(m).unwrap_or_default())),
            _ => Err(ResolveError::BadRequest(
                "the request hook returned no message list".into(),
            )),
        },
        halted => Ok(Err(halted)),
    }
}

/// Runs hook `name` with `handlers` on request `req` (spec 05 §5): each handler's
/// result feeds the next; the first error stops the chain. Handlers resolve with the
/// node's own options and `hashpath: ignore`, whatever the options of `ctx`.
pub fn run(
    ctx: &Ctx,
    name: &str,
    handlers: &[Message],
    req: Message,
) -> Result<Outcome, ResolveError> {
    // A handler runs with the node's own options plus `hashpath: ignore` (the
    // reference resolves it with the node message), never with those of the request
    // that fired the hook: the HTTP extras (results cached and looked up by hashpath,
    // forced messages) belong to the request's own resolution (spec 05 §2.4 steps 3–4).
    // A hook request is no step anyone stores a result for, and often has no ID to
    // look one up by: the `request` hook's `body` is the in-flight message list
    // (device switches, ID bases, sub-resolutions), which has no structured encoding.
    // `internal`: the node's defaults (no result-cache lookup or store, no forced
    // message) with `hashpath: ignore`; the depth, step and remote-load limits kept.
    let ctx = ctx.internal().without_step_hook();
    let mut current = req;
    for h in handlers {
        let path = h.get("path").cloned().unwrap_or_else(|| Value::text(name));
        let method = h
            .get("method")
            .cloned()
            .unwrap_or_else(|| Value::text("GET"));
        let settings = h.get("hook").and_then(Value::as_message);
        if settings
            .and_then(|s| s.get("commit-request"))
            .is_some_and(|v| v.is_atom("true") || v.as_str() == Some("true"))
        {
            return Ok(failure(
                name,
                "asks for `commit-request`, which needs a node wallet",
            ));
        }
        let request = current.clone().with("path", path).with("method", method);
        let out = match ctx.resolve(Value::Message(h.clone()), request) {
            Ok(out) => out,
            Err(e) => return Ok(failure(name, &format!("raised an exception: {e}"))),
        };
        let mode = settings
            .and_then(|s| s.get_str("result"))
            .unwrap_or("return");
        let out = match (mode, out) {
            ("ignore", o) if o.is_ok() => Outcome::ok(current.clone()),
            ("error", o) if o.is_ok() => Outcome {
                status: Status::Error,
                value: o.value,
            },
            (_, o) => o,
        };
        match out.status {
            Status::Ok => match out.value {
                Value::Message(m) => current = m,
                other => {
                    return Ok(failure(
                        name,
                        &format!("returned a {} instead of a message", other.type_name()),
                    ));
                }
            },
            Status::Error => return Ok(out),
            _ => return Ok(failure(name, "returned unexpected result.")),
        }
    }
    Ok(Outcome::ok(current))
}

fn failure(name: &str, what: &str) -> Outcome {
    Outcome {
        status: Status::Failure,
        value: Value::from(format!("Handler for hook `{name}` {what}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::{Call, Device, DeviceResult, Registry};
    use crate::resolve::{NodeHandle, ResolveOpts, link_step};
    use crate::{Cache, MemoryCache};

    /// A hook handler device: `echo` answers `{body, request}` as it received them
    /// (what a router `preprocess` that matches no route does), `rewrite` replaces
    /// the message list.
    struct HookTest;

    impl Device for HookTest {
        fn name(&self) -> &'static str {
            "hook-test@1.0"
        }

        fn functions(&self) -> &'static [&'static str] {
            &["echo", "rewrite"]
        }

        fn call(&self, call: Call<'_>, _base: &Message, req: &Message, _ctx: &Ctx) -> DeviceResult {
            let body = req.get("body").cloned().unwrap_or(Value::atom("none"));
            let request = req.get("request").cloned().unwrap_or(Value::atom("none"));
            Ok(match call.key() {
                "echo" => Outcome::ok(Message::new().with("body", body).with("request", request)),
                _ => Outcome::ok(Message::new().with(
                    "body",
                    Value::list(vec![
                        Value::Message(Message::new().with("answer", "42")),
                        Value::Message(Message::new().with("path", "answer")),
                    ]),
                )),
            })
        }
    }

    const PID: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";

    /// Paths whose message lists hold device switches, IDs and sub-resolutions: in
    /// flight values with no structured encoding.
    fn paths() -> Vec<String> {
        vec![
            "/~meta@1.0/info/address".into(),
            format!("/{PID}~process@1.0/compute/at-slot?slot=3"),
            format!("/{PID}/slot"),
            format!("/{PID}/schedule?from=0"),
            "/~message@1.0&a=1/a".into(),
            "/a/(~message@1.0&b=2/b)/c".into(),
            "/plain?x=1".into(),
        ]
    }

    /// A node with `handler` as its `request` hook, resolving as the HTTP layer does
    /// (results cached and looked up by hashpath).
    fn node_ctx(cache: Arc<dyn Cache>, handler: Option<Message>) -> (Ctx, Message) {
        let mut registry = Registry::with_core();
        registry.register(Arc::new(HookTest));
        let node = match handler {
            Some(h) => Message::new().with("on", Message::new().with("request", h)),
            None => Message::new(),
        };
        let ctx = Ctx::new(Arc::new(registry), cache, NodeHandle::new(node.clone()))
            .with_opts(ResolveOpts::http());
        (ctx, node)
    }

    fn handler(path: &str) -> Message {
        Message::new()
            .with("device", "hook-test@1.0")
            .with("path", path)
    }

    #[test]
    fn request_hook_gets_lists_with_device_switches() {
        let (ctx, node) = node_ctx(Arc::new(MemoryCache::new(64)), Some(handler("echo")));
        for path in paths() {
            let singleton = Message::new()
                .with("path", path.as_str())
                .with("accept", "x");
            let parsed = crate::hyperpath::from_singleton(&singleton).unwrap();
            // What the handler receives: the raw singleton and the parsed list.
            let req = Message::new()
                .with("request", singleton.clone())
                .with("body", Value::list(parsed.clone()));
            let out = run(&ctx, "request", &handlers(&node, "request"), req).unwrap();
            assert_eq!(out.status, Status::Ok, "{path}: {out:?}");
            let seen = out.value.as_message().unwrap();
            assert_eq!(
                seen.get("request"),
                Some(&Value::Message(singleton.clone()))
            );
            assert_eq!(
                seen.get("body"),
                Some(&Value::list(parsed.clone())),
                "{path}"
            );
            // And what the node goes on to resolve: the list, unchanged.
            let list = request_list(&ctx, &node, &singleton).unwrap().unwrap();
            assert_eq!(list, parsed, "{path}");
        }
    }

    #[test]
    fn request_hook_rewrites_the_list() {
        let (ctx, node) = node_ctx(Arc::new(MemoryCache::new(64)), Some(handler("rewrite")));
        for path in paths() {
            let singleton = Message::new().with("path", path.as_str());
            let list = request_list(&ctx, &node, &singleton).unwrap().unwrap();
            assert_eq!(list.len(), 2, "{path}");
            // Resolved as the HTTP layer resolves: the result forced into a message.
            let out = ctx.resolve_many(list).unwrap();
            let body = out.value.as_message().and_then(|m| m.get("body"));
            assert_eq!(body, Some(&Value::text("42")), "{path}");
        }
    }

    #[test]
    fn no_hook_keeps_the_list() {
        let (ctx, node) = node_ctx(Arc::new(MemoryCache::new(64)), None);
        for path in paths() {
            let singleton = Message::new().with("path", path.as_str());
            let list = request_list(&ctx, &node, &singleton).unwrap().unwrap();
            assert_eq!(list, crate::hyperpath::from_singleton(&singleton).unwrap());
        }
    }

    /// A hook handler runs with the node's own options, not the HTTP request's: its
    /// resolution neither reads nor writes the result cache.
    #[test]
    fn hook_resolution_skips_the_result_cache() {
        let cache = Arc::new(MemoryCache::new(64));
        let h = handler("echo");
        let (ctx, node) = node_ctx(cache.clone(), Some(h.clone()));
        let req = Message::new()
            .with("request", Message::new().with("path", "/plain"))
            .with("body", Value::list(vec![Value::Message(Message::new())]));
        // A result stored where an HTTP-style lookup of this handler step would find it.
        let step = req.clone().with("path", "echo").with("method", "GET");
        let link = link_step(&Value::Message(h), &step).unwrap();
        let stale = Value::Message(Message::new().with("body", "stale"));
        cache.write_result(&link.hashpath, &stale);
        let out = run(&ctx, "request", &handlers(&node, "request"), req.clone()).unwrap();
        assert_eq!(
            out.value.as_message().unwrap().get("body"),
            req.get("body"),
            "{out:?}"
        );
    }
}
