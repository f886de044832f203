//! `genesis-wasm@1.0`: legacy aos processes, run in the node (spec 06 §2.8).
//!
//! aoconnect spawns aos processes with `execution-device: genesis-wasm@1.0` (or none,
//! which means the same) and `Module: <aos module ID>`. The reference hands their
//! computation to a legacy compute unit running beside it; this node has none, so the
//! device runs them on the WASM stack instead: each of `init`, `compute`, `snapshot`
//! and `normalize` is resolved on the state as the stack
//!
//! ```text
//! device: stack@1.0
//! device-stack: [wasi@1.0, json-iface@1.0, wasm-64@1.0, multipass@1.0]
//! passes: 2, output-prefix: wasm, input-prefix: "" (so that `image` is read at the top)
//! stack-keys: [init, compute, snapshot, normalize]
//! image: the process's `module` (or `image`)
//! ```
//!
//! and after `compute`, as the reference's device does, `patch@1.0` with
//! `patch-from: /results/outbox` applies the `PATCH` messages of the outbox to the
//! state. The stack's configuration is taken off the state again afterwards (the state
//! keeps its own `device`, prefixes and `image`), so the process's state has the shape
//! of any other process's.
//!
//! A `compute` request without a message at `body` (not an assignment) is a dry run of
//! the request itself, as aoconnect's `dryrun` sends it (see [`dry_run_request`]).

use hb_core::device::{Call, Device, DeviceResult, Outcome, Status};
use hb_core::{Ctx, Message, ResolveError, Value};

use crate::wasm_64::text_of;

/// The device's name.
pub const NAME: &str = "genesis-wasm@1.0";

/// The stack legacy processes run on.
pub const STACK: [&str; 4] = ["wasi@1.0", "json-iface@1.0", "wasm-64@1.0", "multipass@1.0"];

/// The keys the stack carries (spec 06 §2.6).
const STACK_KEYS: [&str; 4] = ["init", "compute", "snapshot", "normalize"];

/// An unsigned definition of a process that runs the module `image` on [`STACK`]
/// directly (`execution-device: stack@1.0`), scheduled by `scheduler`, with the
/// outbox's `PATCH` messages applied (`patch-from`): the form a client that is not
/// aoconnect posts to `/~process@1.0/schedule` (the benches and tests do). Sign it
/// (and give it a `nonce` to make it unique) before posting.
pub fn process_definition(scheduler: &str, image: &str) -> Message {
    let list = |items: &[&str]| Value::list(items.iter().map(|s| Value::text(s)).collect());
    Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", scheduler)
        .with("execution-device", "stack@1.0")
        .with("device-stack", list(&STACK))
        .with("passes", 2i64)
        .with("output-prefix", "wasm")
        .with("stack-keys", list(&STACK_KEYS))
        .with("image", image)
        .with("patch-from", "/results/outbox")
}

/// The keys this device sets on the state for the stack, restored afterwards.
const CONFIG_KEYS: [&str; 9] = [
    "device",
    "device-stack",
    "passes",
    "stack-keys",
    "output-prefix",
    "input-prefix",
    "output-prefixes",
    "input-prefixes",
    "image",
];

/// The `genesis-wasm@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenesisWasm;

impl Device for GenesisWasm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn functions(&self) -> &'static [&'static str] {
        &STACK_KEYS
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let key = call.key();
        if !STACK_KEYS.contains(&key) {
            return Err(ResolveError::call(NAME, key, "no such function"));
        }
        let Some(image) = module_of(base) else {
            return Ok(Outcome::error_status(
                400,
                "genesis-wasm@1.0: the process names no `module` (or `image`) to run.",
            ));
        };
        let stack = as_stack(base, image);
        let req = if key == "compute" && !matches!(req.get("body"), Some(Value::Message(_))) {
            dry_run_request(base, req)
        } else {
            req.clone().with("path", key)
        };
        let out = ctx
            .internal()
            .resolve_step(Value::Message(stack), Value::Message(req))?;
        match out {
            Outcome {
                status: Status::Ok,
                value: Value::Message(state),
            } if key != "snapshot" => {
                let state = restore(state, base);
                if key == "compute" {
                    patch(state, ctx).map(Outcome::ok)
                } else {
                    Ok(Outcome::ok(state))
                }
            }
            other => Ok(other),
        }
    }
}

/// The module to run: `image` or `module` of the state, else of its `process`.
fn module_of(base: &Message) -> Option<String> {
    let own = |m: &Message| text_of(m.get_ci("image")).or_else(|| text_of(m.get_ci("module")));
    own(base).or_else(|| {
        base.get("process")
            .and_then(Value::as_message)
            .and_then(own)
    })
}

/// A `compute` request that is not an assignment (no message at `body`) is a dry run:
/// the reference hands such a request to its compute unit's `/dry-run`, with the
/// request itself as the message. aoconnect's `dryrun` sends exactly that:
/// `POST /<pid>~process@1.0/as=execution/compute&Action=Eval` with a signed data item
/// whose tags lack the `Action` its path adds. So the message is the request (its
/// signer is the message's `From`), evaluated as the next slot; its `Tags` are all its
/// keys rather than the item's signed tags alone (the ANS-104 `original-tags` are
/// dropped from this copy, which is never stored or scheduled).
fn dry_run_request(base: &Message, req: &Message) -> Message {
    let at = base.get("at-slot").and_then(Value::as_int).unwrap_or(-1);
    let mut message = req.clone().without("path").without("method");
    if let Some(Value::Message(commitments)) = message.get("commitments") {
        let commitments: Message = commitments
            .iter()
            .map(|(id, c)| match c {
                Value::Message(c) if c.get_str("commitment-device") == Some("ans104@1.0") => (
                    id.clone(),
                    Value::Message(c.clone().without("original-tags")),
                ),
                other => (id.clone(), other.clone()),
            })
            .collect();
        message.insert("commitments", Value::Message(commitments));
    }
    Message::new()
        .with("path", "compute")
        .with("slot", at + 1)
        .with("body", Value::Message(message))
}

/// The state as the stack of legacy processes.
fn as_stack(base: &Message, image: String) -> Message {
    base.clone()
        .without("output-prefixes")
        .without("input-prefixes")
        .with("device", "stack@1.0")
        .with(
            "device-stack",
            Value::list(STACK.iter().map(|d| Value::text(d)).collect()),
        )
        .with("passes", 2i64)
        .with(
            "stack-keys",
            Value::list(STACK_KEYS.iter().map(|k| Value::text(k)).collect()),
        )
        .with("output-prefix", "wasm")
        .with("input-prefix", "")
        .with("image", image)
}

/// The state with the base's own configuration keys back.
fn restore(mut state: Message, base: &Message) -> Message {
    for key in CONFIG_KEYS {
        match base.get(key) {
            Some(v) => state.insert(key, v.clone()),
            None => {
                state.remove(key);
            }
        }
    }
    if base.get("device").is_none() {
        state.insert("device", Value::text(NAME));
    }
    state
}

/// `patch@1.0` with `patch-from: /results/outbox` on the computed state; the state as
/// it is when there is nothing to patch.
fn patch(state: Message, ctx: &Ctx) -> Result<Message, ResolveError> {
    let device = state.get("device").cloned();
    let base = state.clone().with("device", "patch@1.0");
    let req = Message::new()
        .with("path", "compute")
        .with("patch-from", "/results/outbox");
    match ctx
        .internal()
        .resolve_step(Value::Message(base), Value::Message(req))?
    {
        Outcome {
            status: Status::Ok,
            value: Value::Message(mut patched),
        } => {
            match device {
                Some(d) => patched.insert("device", d),
                None => {
                    patched.remove("device");
                }
            }
            Ok(patched)
        }
        _ => Ok(state),
    }
}
