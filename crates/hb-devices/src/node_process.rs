//! `node-process@1.0`: processes a node runs for itself, by name (spec 05 §8).
//!
//! Any key *name* answers the process registered under that name in
//! `local-name@1.0`. A name not registered yet (unless the request says `spawn:
//! false`) is spawned from the node option `node_processes` (a message: name → process
//! definition): the definition gets `scheduler` = this node's address (and `type:
//! Process` when it has no `type`, which our scheduler needs to take it as a process),
//! is signed with the node's wallet, scheduled on this node at slot 0, and its ID is
//! registered under the name. So `/router~node-process@1.0/schedule` schedules a
//! message on the node's `router` process and `/router~node-process@1.0/now/routes`
//! reads its current state.
//!
//! Errors: a name neither registered nor defined is `not_found`; a node without a
//! wallet cannot spawn (503); a failed spawn or registration is a 500 that says why.

use std::sync::Arc;

use hb_codec::Wallet;
use hb_core::device::{Call, Device, DeviceInfo, DeviceResult, Outcome};
use hb_core::message::id_all;
use hb_core::{Ctx, Message, Value};
use parking_lot::Mutex;

use crate::local_name;

/// The device's name.
pub const NAME: &str = "node-process@1.0";

/// The node option holding the process definitions (name → definition).
pub const DEFINITIONS_OPTION: &str = "node_processes";

/// The `node-process@1.0` device of a node signing with `wallet`.
#[derive(Debug, Default)]
pub struct NodeProcess {
    /// The node's wallet: it signs the processes it spawns.
    pub wallet: Option<Arc<Wallet>>,
    /// Held while a process is spawned, so that one name gets one process.
    spawning: Mutex<()>,
}

impl NodeProcess {
    /// The device of a node signing with `wallet`.
    pub fn new(wallet: Option<Arc<Wallet>>) -> Self {
        NodeProcess {
            wallet,
            spawning: Mutex::new(()),
        }
    }
}

impl Device for NodeProcess {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        crate::local_name::names_info()
    }

    fn functions(&self) -> &'static [&'static str] {
        &[]
    }

    fn call(&self, call: Call<'_>, _base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        Ok(self.lookup(call.key(), req, ctx))
    }
}

impl NodeProcess {
    /// The process named `name`: registered, or spawned from its definition.
    fn lookup(&self, name: &str, req: &Message, ctx: &Ctx) -> Outcome {
        if let Some(found) = registered(name, ctx) {
            return found;
        }
        let spawn = req
            .get("spawn")
            .is_none_or(|v| !(v.is_atom("false") || v.as_str() == Some("false")));
        if !spawn {
            return Outcome::not_found();
        }
        let _one_at_a_time = self.spawning.lock();
        // Another request may have spawned it while this one waited.
        if let Some(found) = registered(name, ctx) {
            return found;
        }
        self.spawn_register(name, ctx)
    }

    /// Spawns `node_processes[name]` on this node and registers it under `name`.
    fn spawn_register(&self, name: &str, ctx: &Ctx) -> Outcome {
        let node = ctx.node().get();
        let Some(definition) = node
            .get(DEFINITIONS_OPTION)
            .and_then(Value::as_message)
            .and_then(|defs| defs.get(name))
            .and_then(Value::as_message)
        else {
            return Outcome::not_found();
        };
        let Some(wallet) = self.wallet.as_deref() else {
            return Outcome::error_status(
                503,
                "This node has no wallet: it cannot sign the processes it spawns.",
            );
        };
        let mut definition = definition.clone();
        definition.insert("scheduler", Value::text(wallet.address().as_str()));
        if definition.get("type").is_none() {
            definition.insert("type", Value::text("Process"));
        }
        let signed = match hb_codec::httpsig_commit::commit(&definition, wallet) {
            Ok(s) => s,
            Err(e) => return failed(&format!("the process cannot be signed: {e}")),
        };
        let pid = match id_all(&signed) {
            Ok(id) => id.to_human(),
            Err(e) => return failed(&format!("the process has no ID: {e}")),
        };
        let schedule = Message::new()
            .with("path", "schedule")
            .with("method", "POST")
            .with("body", signed.clone());
        match ctx
            .internal()
            .resolve(Value::Message(signed.clone()), schedule)
        {
            Ok(out) if out.is_ok() => {}
            Ok(out) => {
                return failed(&format!(
                    "the process could not be scheduled: {}",
                    describe(&out.value)
                ));
            }
            Err(e) => return failed(&format!("the process could not be scheduled: {e}")),
        }
        if let Err(why) = local_name::register_direct(name, &Value::text(&pid), ctx) {
            return failure("Failed to register process.", &why);
        }
        Outcome::ok(signed)
    }
}

/// The process registered under `name`, if there is one.
fn registered(name: &str, ctx: &Ctx) -> Option<Outcome> {
    let pid = local_name::lookup(name, ctx)?;
    let Some(pid_text) = pid.as_str() else {
        return Some(Outcome::error_status(
            500,
            &format!("the name `{name}` is registered to a value that is not a process ID"),
        ));
    };
    Some(match ctx.internal().load(pid_text.as_bytes()) {
        Some(process) => Outcome::ok(process),
        None => Outcome::error_status(
            500,
            &format!("the process `{name}` ({pid_text}) is registered but not in the cache"),
        ),
    })
}

fn failed(why: &str) -> Outcome {
    failure("Failed to spawn process.", why)
}

/// A 500 saying `what` failed, and why.
fn failure(what: &str, why: &str) -> Outcome {
    Outcome::error(
        Message::new()
            .with("status", 500i64)
            .with("body", what)
            .with("details", why),
    )
}

/// A short text for an error answer.
fn describe(v: &Value) -> String {
    match v {
        Value::Message(m) => m
            .get_str("body")
            .or_else(|| m.get_str("message"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{m:?}")),
        other => other
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{other:?}")),
    }
}
