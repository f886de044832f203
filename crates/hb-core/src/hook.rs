//! Hooks: handler messages the node runs at fixed points (spec 05 §5): `request` and
//! `response` around each HTTP request, `step` after every resolver step (spec 01 §5.2
//! stage 7), `start` at boot. The node message's key `on` maps a hook name to a handler
//! message or a list of them.

use crate::device::{Outcome, Status};
use crate::resolve::{Ctx, HashpathMode, ResolveError};
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
/// result feeds the next; the first error stops the chain.
pub fn run(
    ctx: &Ctx,
    name: &str,
    handlers: &[Message],
    req: Message,
) -> Result<Outcome, ResolveError> {
    let mut opts = ctx.opts;
    opts.hashpath = HashpathMode::Ignore;
    let ctx = ctx.with_opts(opts).without_step_hook();
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
