//! `push@1.0`: delivering a process's outbox (spec 04 §5).
//!
//! `push` on a process either schedules the request's message first (no `slot` in the
//! request) and then pushes the slot it got, or pushes the given `slot`: it computes
//! that slot's `results`, and every outbox entry with a `target` is signed by this
//! node (with `from-process`, `type: Message`, `data-protocol: ao`, `variant:
//! ao.N.1`), scheduled on its target process and pushed in turn — recursively, until
//! the computed slots have empty outboxes. `result-depth` (default 1) says how many
//! levels of the reply carry their `results`; `push-mode` (`sync`, the default, or
//! `async`) whether the reply waits for the whole delivery tree or comes at once with
//! the slot while the delivery goes on in the background.
//!
//! Targets are processes known to this node (their definition in its cache). A target
//! scheduled by another node answers with a redirect; the entry then says where the
//! message should go (delivery across nodes is the multi-node issue's work).

use std::sync::Arc;

use hb_codec::Wallet;
use hb_codec::httpsig_commit;
use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::message::id_all;
use hb_core::{Ctx, Message, ResolveError, Value};

/// The device's name.
pub const NAME: &str = "push@1.0";

/// How deep a delivery tree may grow before it is cut (a process that always sends to
/// itself would otherwise push forever).
const MAX_HOPS: i64 = 64;

/// The `push@1.0` device; it signs what it delivers with the node's wallet.
#[derive(Debug, Clone)]
pub struct Push {
    /// The node's wallet.
    pub wallet: Option<Arc<Wallet>>,
}

impl Device for Push {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::None,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &["push"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "push" => Ok(self.push(base, req, ctx)),
            other => Err(ResolveError::call(NAME, other, "no such function")),
        }
    }
}

/// `base` as a process (its device `process@1.0`).
fn as_process(base: &Message) -> Message {
    base.clone().with("device", crate::process::NAME)
}

/// The process ID of a process message or state.
fn pid_of(process: &Message) -> Option<String> {
    let def = process
        .get("process")
        .and_then(Value::as_message)
        .unwrap_or(process);
    id_all(def).ok().map(|id| id.to_human())
}

/// An outcome's status code: its `status` key, else the atom's.
fn status_code(out: &Outcome) -> i64 {
    out.value
        .as_message()
        .and_then(|m| m.get("status"))
        .and_then(Value::as_int)
        .or_else(|| out.status.http_code().map(i64::from))
        .unwrap_or(200)
}

fn resolve(ctx: &Ctx, base: &Message, req: Message) -> Outcome {
    match ctx.internal().resolve(Value::Message(base.clone()), req) {
        Ok(out) => out,
        Err(e) => Outcome::error_status(i64::from(e.http_status()), &e.to_string()),
    }
}

impl Push {
    /// `push` (spec 04 §5.1).
    fn push(&self, base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
        let process = as_process(base);
        let Some(pid) = pid_of(&process) else {
            return Outcome::error_status(400, "The base is not a process.");
        };
        let depth = req.get("result-depth").and_then(Value::as_int).unwrap_or(1);
        // The ID of the message this request scheduled, if it scheduled one: the reply
        // names it (`id`), as aoconnect's `message({returnMessageId})` reads it.
        let mut message_id = None;
        let slot = match req.get("slot") {
            Some(s) => match s.as_int() {
                Some(s) => s,
                None => return Outcome::error_status(400, "`slot` must be an integer."),
            },
            None => {
                let body = match req.get("body") {
                    Some(Value::Message(m)) => m.clone(),
                    _ => req.clone(),
                };
                let scheduled = resolve(
                    ctx,
                    &process,
                    Message::new()
                        .with("path", "schedule")
                        .with("method", "POST")
                        .with("body", Value::Message(body.clone())),
                );
                let Some(assignment) = assignment_of(&scheduled) else {
                    return scheduled;
                };
                let kind = body
                    .get_str("type")
                    .or_else(|| {
                        body.get("body")
                            .and_then(Value::as_message)
                            .and_then(|b| b.get_str("type"))
                    })
                    .unwrap_or("Message");
                if kind.eq_ignore_ascii_case("process") {
                    return Outcome::ok(assignment);
                }
                message_id = scheduled_id(&assignment);
                match assignment.get("slot").and_then(Value::as_int) {
                    Some(s) => s,
                    None => return Outcome::error_status(500, "The assignment has no slot."),
                }
            }
        };
        let mode = req
            .get_str("push-mode")
            .or_else(|| base.get_str("push-mode"))
            .or_else(|| {
                base.get("process")
                    .and_then(Value::as_message)
                    .and_then(|p| p.get_str("push-mode"))
            })
            .unwrap_or("sync");
        if mode.eq_ignore_ascii_case("async") {
            let (this, ctx, process, pid2) = (self.clone(), ctx.clone(), process, pid.clone());
            let spawned = std::thread::Builder::new()
                .name("push".into())
                .spawn(move || {
                    let out = this.push_slot(&process, &pid2, slot, depth, 0, &ctx);
                    if !out.is_ok() {
                        tracing::warn!(process = %pid2, slot, result = ?out.value, "async push failed");
                    }
                });
            if let Err(e) = spawned {
                return Outcome::error_status(503, &format!("Cannot start the push: {e}"));
            }
            return Outcome::ok(with_id(
                Message::new()
                    .with("slot", slot)
                    .with("process", pid.as_str())
                    .with("push-mode", "async"),
                message_id.as_deref(),
            ));
        }
        let out = ctx.blocking(|| self.push_slot(&process, &pid, slot, depth, 0, ctx));
        match out {
            Outcome {
                status: Status::Ok,
                value: Value::Message(reply),
            } => Outcome::ok(with_id(reply, message_id.as_deref())),
            other => other,
        }
    }

    /// Pushes slot `slot` of `process` (spec 04 §5.2).
    fn push_slot(
        &self,
        process: &Message,
        pid: &str,
        slot: i64,
        depth: i64,
        hops: i64,
        ctx: &Ctx,
    ) -> Outcome {
        let computed = resolve(
            ctx,
            process,
            Message::new()
                .with("path", "compute/results")
                .with("slot", slot),
        );
        let results = match computed {
            Outcome {
                status: Status::Ok,
                value: Value::Message(m),
            } => m,
            Outcome {
                status: Status::Ok, ..
            } => Message::new(),
            other => return other,
        };
        let mut reply = if depth > 0 {
            results.without_private()
        } else {
            Message::new()
        };
        if let Some(outbox) = results.get("outbox").and_then(Value::as_message) {
            for (key, entry) in outbox.public() {
                let Some(m) = entry.as_message() else {
                    continue;
                };
                let delivered = if hops >= MAX_HOPS {
                    Message::new()
                        .with("response", "error")
                        .with("status", 508i64)
                        .with("reason", "The delivery tree is too deep.")
                } else {
                    self.deliver(pid, key, m, depth, hops, ctx)
                };
                reply.insert(key, Value::Message(delivered));
            }
        }
        reply.insert("slot", Value::Integer(slot));
        reply.insert("process", Value::text(pid));
        Outcome::ok(reply)
    }

    /// Delivers one outbox message (spec 04 §5.3).
    fn deliver(
        &self,
        origin: &str,
        key: &str,
        m: &Message,
        depth: i64,
        hops: i64,
        ctx: &Ctx,
    ) -> Message {
        let Some(target_id) = crate::scheduler::target_of(m) else {
            return Message::new()
                .with("response", "error")
                .with("status", 422i64)
                .with("outbox-index", key)
                .with("reason", "No target process found.")
                .with("message", Value::Message(m.clone()));
        };
        let target = target_id.as_str();
        let failed = |reason: &str| {
            Message::new()
                .with("response", "error")
                .with("target", target)
                .with("reason", reason)
        };
        let Ok(Some(Value::Message(definition))) = ctx.cache().read_path(target) else {
            return failed("Could not access target process!").with("status", 404i64);
        };
        let Some(wallet) = &self.wallet else {
            return failed("This node has no wallet to sign pushed messages.");
        };
        let unsigned = m
            .clone()
            .with("data-protocol", "ao")
            .with("variant", "ao.N.1")
            .with("type", "Message")
            .with("from-process", origin);
        let signed = match httpsig_commit::commit(&unsigned.without_private(), wallet) {
            Ok(s) => s,
            Err(e) => return failed(&format!("Cannot sign the message: {e}")),
        };
        let target_process = as_process(&definition);
        let scheduled = resolve(
            ctx,
            &target_process,
            Message::new()
                .with("path", "schedule")
                .with("method", "POST")
                .with("body", Value::Message(signed)),
        );
        if status_code(&scheduled) == 307 {
            let location = scheduled
                .value
                .as_message()
                .and_then(|r| r.get_str("location"))
                .unwrap_or("");
            return failed(&format!(
                "The target is scheduled by another node ({location}); cross-node delivery is not available."
            ))
            .with("status", 307i64);
        }
        let Some(assignment) = assignment_of(&scheduled) else {
            let mut entry = failed("The target did not schedule the message.");
            entry.insert("error", scheduled.value);
            return entry;
        };
        let slot = assignment.get("slot").and_then(Value::as_int).unwrap_or(-1);
        let id = scheduled_id(&assignment).unwrap_or_default();
        let Some(target_pid) = pid_of(&target_process) else {
            return failed("The target is not a process.");
        };
        let resulted = self.push_slot(&target_process, &target_pid, slot, depth - 1, hops + 1, ctx);
        Message::new()
            .with("id", id.as_str())
            .with("target", target)
            .with("slot", slot)
            .with("resulted-in", resulted.value)
    }
}

/// The ID of the message an assignment schedules.
fn scheduled_id(assignment: &Message) -> Option<String> {
    assignment
        .get("body")
        .and_then(Value::as_message)
        .and_then(|b| id_all(b).ok())
        .map(|id| id.to_human())
}

/// `reply` naming the pushed message (`id`), unless it has an `id` of its own.
fn with_id(mut reply: Message, id: Option<&str>) -> Message {
    if let Some(id) = id
        && !reply.contains("id")
    {
        reply.insert("id", Value::text(id));
    }
    reply
}

/// The assignment a schedule request answered, if it answered one.
fn assignment_of(out: &Outcome) -> Option<Message> {
    let m = out.value.as_message()?;
    (out.is_ok() && m.get("slot").is_some() && status_code(out) == 200).then(|| m.clone())
}
