//! `stack@1.0`: runs a key through an ordered stack of devices (spec 04 §3; the
//! reference's `dev_stack`).
//!
//! The base names its members in `device-stack` (a list, or a message keyed `1`..`N`).
//! Whatever key is resolved on the stack is resolved on every member in turn:
//!
//! * **Fold** mode (the default) threads one state through the members: each member's
//!   result is the next member's base. Members answer `ok` (continue), `skip` (stop the
//!   fold), `pass` (start again at member 1 with `pass` incremented), or fail (the
//!   `error_strategy` node option, or the base's `error-strategy`, decides: `throw`, the
//!   default, raises; `stop` returns an `error` result). A member that does not
//!   implement the key is skipped. A member's `ok` answer that is not a message (a
//!   plain value) is the stack's answer at once; a message answer becomes the state, so
//!   a key holding a message is read through the stack only with `stack-keys` set.
//!   Folds are limited to [`MAX_PASSES`] passes.
//! * **Map** mode (`mode: Map` on the request or the base) runs every member on the
//!   base and collects the `ok` results under the members' keys.
//!
//! To run a member, the stack *transforms* the message: it sets `device` to the member
//! and records its bookkeeping (`device-key`, prefixes, `previous-*`, spec 04 §3.4), so
//! the member sees an ordinary message of its own device. After a fold the stack's
//! `device`, the prefixes and the caller's `pass` are restored (spec 04 §3.2 step 5).
//!
//! `set` and `keys` are plain message keys; with `stack-keys` only the keys listed
//! there go through the stack. The key `transform` gives a message on which any key
//! `K` answers the base transformed to member `K` (so `/transform/K/key` runs one
//! member alone).

use std::sync::Arc;

use hb_core::device::{Call, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::message::MessageDevice;
use hb_core::value::{is_private, list_to_message};
use hb_core::{Ctx, Message, ResolveError, Value};

/// The `stack@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stack;

/// The public key that marks the message `transform` returns: on such a message every
/// key names the member to transform to. (The reference marks it by swapping in an
/// anonymous device, which a message on the wire cannot carry.)
pub const TRANSFORMER_KEY: &str = "stack-transformer";

/// How many passes one fold may take before the stack gives up. A member that always
/// answers `pass` (or `multipass@1.0` with a huge `passes`) would otherwise loop
/// forever; the reference has no limit.
pub const MAX_PASSES: i64 = 1_000;

/// Longest excerpt of a failed member's result quoted in an error.
const MAX_ERROR_EXCERPT: usize = 512;

impl Device for Stack {
    fn name(&self) -> &'static str {
        "stack@1.0"
    }

    fn info(&self, base: &Message) -> DeviceInfo {
        DeviceInfo {
            handler: true,
            excludes: vec!["set".into(), "keys".into()],
            exports: stack_keys(base),
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let key = call.key();
        if base.contains(TRANSFORMER_KEY) {
            let clean = base.clone().without(TRANSFORMER_KEY);
            return Ok(match transform(&clean, &Value::text(key), key, ctx)? {
                Some(m) => Outcome::ok(m),
                None => Outcome::not_found(),
            });
        }
        if key == "transform" {
            return Ok(Outcome::ok(
                base.clone().with(TRANSFORMER_KEY, Value::boolean(true)),
            ));
        }
        let mode = text_of(req.get_ci("mode"))
            .or_else(|| text_of(base.get_ci("mode")))
            .unwrap_or_else(|| "Fold".to_owned());
        match mode.as_str() {
            "Fold" => fold(key, base, req, ctx),
            "Map" => map(base, req, ctx),
            other => Ok(Outcome::error_status(
                400,
                &format!("stack@1.0: unknown `mode` `{other}`; use `Fold` or `Map`"),
            )),
        }
    }
}

/// The keys `stack-keys` limits the stack to, if the base has it.
fn stack_keys(base: &Message) -> Option<Vec<String>> {
    let keys = match base.get_ci("stack-keys")? {
        Value::List(l) => l.iter().filter_map(|v| text_of(Some(v))).collect(),
        Value::Message(m) => m.public().filter_map(|(_, v)| text_of(Some(v))).collect(),
        other => text_of(Some(other)).into_iter().collect(),
    };
    Some(keys)
}

/// A text or atom value as a string.
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Atom(a) => Some(a.to_string()),
        other => other.as_str().map(str::to_owned),
    }
}

/// The prefix a member reads its inputs under (`input-prefix`, default empty).
pub fn input_prefix(base: &Message) -> String {
    text_of(base.get_ci("input-prefix")).unwrap_or_default()
}

/// The prefix a member writes its outputs under (`output-prefix`, default empty).
pub fn output_prefix(base: &Message) -> String {
    text_of(base.get_ci("output-prefix")).unwrap_or_default()
}

/// A member's default prefix: its output prefix.
pub fn prefix(base: &Message) -> String {
    output_prefix(base)
}

/// `set` with plain `message@1.0` semantics (deep merge; the atom `unset` removes a key,
/// `undefined` leaves it alone), whatever the base's device.
pub fn plain_set(base: &Message, update: Message, ctx: &Ctx) -> Result<Message, ResolveError> {
    let req = update.with("path", "set");
    match MessageDevice.call(Call::Function("set"), base, &req, ctx)? {
        Outcome {
            status: Status::Ok,
            value: Value::Message(m),
        } => Ok(m),
        other => Err(ResolveError::call(
            "message@1.0",
            "set",
            format!("set failed: {}", excerpt(&other.value)),
        )),
    }
}

/// Looks `key` up in a member table (`device-stack`, `input-prefixes`, …) that is a
/// message or a list (1-based).
fn lookup<'a>(table: &'a Value, key: &str) -> Option<&'a Value> {
    match table {
        Value::Message(m) => m.get_ci(key),
        Value::List(l) => {
            let i: usize = key.parse().ok()?;
            l.get(i.checked_sub(1)?)
        }
        _ => None,
    }
}

/// The base's `device-stack` (or, as the seed tutorial writes it, `execution-stack`),
/// checked to be a table of members.
fn device_stack(msg: &Message) -> Result<&Value, ResolveError> {
    match msg
        .get_ci("device-stack")
        .or_else(|| msg.get_ci("execution-stack"))
    {
        Some(v @ (Value::Message(_) | Value::List(_))) => Ok(v),
        Some(other) => Err(ResolveError::BadRequest(format!(
            "stack@1.0: `device-stack` must be a list or a message of devices, not a {}",
            other.type_name()
        ))),
        None => Err(ResolveError::BadRequest(
            "stack@1.0: the message has no valid `device-stack`".into(),
        )),
    }
}

/// Transforms `msg` to the member under `key` (spec 04 §3.4): `None` when there is no
/// such member. `key_value` is what `device-key` records (the member's number in a fold,
/// its key otherwise).
pub fn transform(
    msg: &Message,
    key_value: &Value,
    key: &str,
    ctx: &Ctx,
) -> Result<Option<Message>, ResolveError> {
    let stack = device_stack(msg)?;
    let Some(member) = lookup(stack, key) else {
        return Ok(None);
    };
    let undefined = || Value::atom("undefined");
    let prefix_for = |table: &str| {
        msg.get_ci(table)
            .and_then(|t| lookup(t, key))
            .cloned()
            .unwrap_or_else(undefined)
    };
    let current = |k: &str| msg.get_ci(k).cloned().unwrap_or_else(undefined);
    let update = Message::new()
        .with("device", member.clone())
        .with("device-key", key_value.clone())
        .with("input-prefix", prefix_for("input-prefixes"))
        .with("output-prefix", prefix_for("output-prefixes"))
        .with("previous-device", current("device"))
        .with("previous-input-prefix", current("input-prefix"))
        .with("previous-output-prefix", current("output-prefix"));
    plain_set(msg, update, ctx).map(Some)
}

/// Resolves the request on a transformed message, as one internal step (no result
/// caching or hashpaths for the intermediate states; the stack's own step has them).
fn run_member(ctx: &Ctx, msg: Message, req: &Message) -> DeviceResult {
    ctx.internal()
        .resolve_step(Value::Message(msg), Value::Message(req.clone()))
}

/// Whether an exception is a resource limit, which no error strategy swallows.
fn is_limit(e: &ResolveError) -> bool {
    matches!(e, ResolveError::Timeout(_) | ResolveError::TooDeep(_))
}

/// A short text of a value for error messages.
fn excerpt(v: &Value) -> String {
    let mut s = format!("{v:?}");
    if s.len() > MAX_ERROR_EXCERPT {
        let mut end = MAX_ERROR_EXCERPT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// What went wrong with a member.
enum Failure {
    /// It answered with a status the stack does not continue on.
    Outcome(Outcome),
    /// It raised.
    Exception(ResolveError),
}

/// The `error_strategy` of this resolution: the base's `error-strategy`, else the node
/// option `error_strategy`, else `throw`.
fn stops_on_error(base: &Message, ctx: &Ctx) -> bool {
    let node = ctx.node().get();
    let strategy = text_of(base.get_ci("error-strategy"))
        .or_else(|| text_of(node.get("error_strategy")))
        .or_else(|| text_of(node.get("error-strategy")));
    strategy.as_deref() == Some("stop")
}

/// Applies the error strategy to a failed member (the reference's `maybe_error`).
fn member_failed(
    key: &str,
    base: &Message,
    member: usize,
    failure: Failure,
    ctx: &Ctx,
) -> DeviceResult {
    let device = text_of(
        device_stack(base)
            .ok()
            .and_then(|s| lookup(s, &member.to_string())),
    )
    .unwrap_or_default();
    if stops_on_error(base, ctx) {
        let (status, details) = match &failure {
            Failure::Outcome(o) => (o.status.as_str().to_owned(), o.value.clone()),
            Failure::Exception(e) => ("exception".to_owned(), Value::from(e.to_string())),
        };
        return Ok(Outcome::error(
            Message::new()
                .with("body", "stack_call_failed")
                .with("device-key", member as i64)
                .with("device", device)
                .with("key", key)
                .with("member-status", status)
                .with("details", details),
        ));
    }
    match failure {
        Failure::Exception(e) => Err(e),
        Failure::Outcome(o) => Err(ResolveError::call(
            "stack@1.0",
            key,
            format!(
                "device {member} (`{device}`) of the stack failed: {} {}",
                o.status.as_str(),
                excerpt(&o.value)
            ),
        )),
    }
}

/// Fold mode (spec 04 §3.2).
fn fold(key: &str, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
    let init_device = base.get_ci("device").cloned();
    let starting_pass = base.get_ci("pass").cloned();
    let mut msg = plain_set(base, Message::new().with("pass", 1i64), ctx)?;
    let mut member: usize = 1;
    let mut passes: i64 = 1;
    loop {
        if member > 1
            && msg.get_ci("device-stack").is_none()
            && msg.get_ci("execution-stack").is_none()
        {
            return Err(ResolveError::BadRequest(format!(
                "stack@1.0: member {} answered `{key}` with a message that is not the \
                 stack's state (it has no `device-stack`); to read keys of the state \
                 itself, list the stack's own keys in `stack-keys`",
                member - 1
            )));
        }
        let Some(transformed) = transform(
            &msg,
            &Value::Integer(member as i64),
            &member.to_string(),
            ctx,
        )?
        else {
            break;
        };
        let out = match run_member(ctx, transformed.clone(), req) {
            Ok(out) => out,
            Err(e) if is_limit(&e) => return Err(e),
            Err(e) => return member_failed(key, &msg, member, Failure::Exception(e), ctx),
        };
        match (out.status.as_str(), out.value) {
            ("ok", Value::Message(next)) => {
                msg = next;
                member += 1;
            }
            ("error", Value::Atom(a)) if a.as_ref() == "not_found" => {
                // The member does not implement the key: skip it.
                msg = transformed;
                member += 1;
            }
            ("ok", raw) => return Ok(Outcome::ok(raw)),
            ("skip", Value::Message(next)) => {
                msg = next;
                break;
            }
            ("pass", Value::Message(next)) => {
                passes += 1;
                if passes > MAX_PASSES {
                    return Err(ResolveError::call(
                        "stack@1.0",
                        key,
                        format!("the stack took more than {MAX_PASSES} passes"),
                    ));
                }
                let pass = next
                    .get_ci("pass")
                    .and_then(Value::as_int)
                    .unwrap_or(1)
                    .saturating_add(1);
                msg = plain_set(&next, Message::new().with("pass", pass), ctx)?;
                member = 1;
            }
            (_, value) => {
                let failed = Outcome {
                    status: out.status,
                    value,
                };
                return member_failed(key, &msg, member, Failure::Outcome(failed), ctx);
            }
        }
    }
    restore(msg, init_device, starting_pass, ctx).map(Outcome::ok)
}

/// After a fold: the stack's own device, the prefixes from before the last member and
/// the caller's `pass` come back; `device-key` goes (spec 04 §3.2 step 5). The
/// `previous-*` keys stay, as in the reference (spec 04 §3.6).
fn restore(
    msg: Message,
    device: Option<Value>,
    pass: Option<Value>,
    ctx: &Ctx,
) -> Result<Message, ResolveError> {
    let unset = || Value::atom("unset");
    let previous = |k: &str| {
        msg.get_ci(k)
            .cloned()
            .unwrap_or_else(|| Value::atom("undefined"))
    };
    let update = Message::new()
        .with("device", device.unwrap_or_else(unset))
        .with("input-prefix", previous("previous-input-prefix"))
        .with("output-prefix", previous("previous-output-prefix"))
        .with("device-key", unset())
        .with("device-stack-previous", unset())
        .with("pass", pass.unwrap_or_else(unset));
    plain_set(&msg, update, ctx)
}

/// Map mode (spec 04 §3.3): every member on the base; the `ok` results by member key.
fn map(base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
    let members = match device_stack(base)? {
        Value::List(l) => list_to_message(l),
        Value::Message(m) => m.clone(),
        _ => Message::new(),
    };
    let mut out = Message::new();
    for (key, _) in members.iter() {
        if is_private(key) || matches!(key.as_ref(), "path" | "hashpath") {
            continue;
        }
        let Some(transformed) = transform(base, &Value::text(key), key, ctx)? else {
            continue;
        };
        let result = run_member(ctx, transformed, req)?;
        if result.is_ok() {
            out.insert_key(Arc::clone(key), result.value);
        }
    }
    Ok(Outcome::ok(out))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hb_core::device::DefaultHandler;
    use hb_core::resolve::deep_set;
    use hb_core::{MemoryCache, NodeHandle, Registry};

    /// The spec's `A(sep, status)`: `append` adds `sep ‖ bin` to `result`, answering
    /// with `status`, except on pass 3, where it answers `ok` with the base unchanged.
    /// With `special`, it also has a key `special` that sets `output = 1337`.
    #[derive(Debug)]
    pub(crate) struct Append {
        pub name: &'static str,
        pub sep: &'static str,
        pub status: &'static str,
        pub special: bool,
    }

    impl Append {
        pub(crate) fn new(name: &'static str, sep: &'static str, status: &'static str) -> Self {
            Append {
                name,
                sep,
                status,
                special: false,
            }
        }
    }

    impl Device for Append {
        fn name(&self) -> &'static str {
            self.name
        }
        fn functions(&self) -> &'static [&'static str] {
            if self.special {
                &["append", "special"]
            } else {
                &["append"]
            }
        }
        fn call(&self, call: Call<'_>, base: &Message, req: &Message, _: &Ctx) -> DeviceResult {
            match call.key() {
                "append" => {
                    if base.get("pass") == Some(&Value::Integer(3)) {
                        return Ok(Outcome::ok(base.clone()));
                    }
                    let (Some(existing), Some(new)) = (base.get_str("result"), req.get_str("bin"))
                    else {
                        return Ok(Outcome::error("append needs `result` and `bin`"));
                    };
                    let result = format!("{existing}{}{new}", self.sep);
                    Ok(Outcome {
                        status: Status::from_atom(self.status),
                        value: Value::Message(base.clone().with("result", result)),
                    })
                }
                "special" => Ok(Outcome::ok(base.clone().with("output", 1337i64))),
                other => Err(ResolveError::call(self.name, other, "no such function")),
            }
        }
    }

    /// For any key K: sets K to its value followed by `-Cool` (spec 04 §3.1's D).
    #[derive(Debug)]
    struct MakeCool;

    impl Device for MakeCool {
        fn name(&self) -> &'static str {
            "make-cool@1.0"
        }
        fn info(&self, _: &Message) -> DeviceInfo {
            DeviceInfo {
                handler: true,
                excludes: vec!["keys".into(), "set".into()],
                ..Default::default()
            }
        }
        fn functions(&self) -> &'static [&'static str] {
            &[]
        }
        fn call(&self, call: Call<'_>, base: &Message, _: &Message, _: &Ctx) -> DeviceResult {
            let key = call.key();
            let Some(v) = base.get_str(key) else {
                return Ok(Outcome::not_found());
            };
            Ok(Outcome::ok(base.clone().with(key, format!("{v}-Cool"))))
        }
    }

    /// `prefix_set`: reads `<input-prefix>/<key>` from the request and writes it to
    /// `<output-prefix>/<key>` of the base (the reference's prefix test device).
    #[derive(Debug)]
    struct PrefixSet;

    impl Device for PrefixSet {
        fn name(&self) -> &'static str {
            "prefix-set@1.0"
        }
        fn info(&self, _: &Message) -> DeviceInfo {
            DeviceInfo {
                default: DefaultHandler::None,
                ..Default::default()
            }
        }
        fn functions(&self) -> &'static [&'static str] {
            &["prefix_set"]
        }
        fn call(&self, _: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
            let (inp, out) = (input_prefix(base), output_prefix(base));
            let key = req.get_str("key").unwrap_or_default();
            let value = ctx
                .get(&format!("{inp}/{key}"), req)
                .unwrap_or(Value::atom("not_found"));
            Ok(Outcome::ok(deep_set(
                ctx,
                base,
                &format!("{out}/{key}"),
                value,
            )?))
        }
    }

    /// A member that always fails.
    #[derive(Debug)]
    struct Broken;

    impl Device for Broken {
        fn name(&self) -> &'static str {
            "broken@1.0"
        }
        fn functions(&self) -> &'static [&'static str] {
            &["append"]
        }
        fn call(&self, _: Call<'_>, _: &Message, _: &Message, _: &Ctx) -> DeviceResult {
            Ok(Outcome::error_status(422, "broken on purpose"))
        }
    }

    pub(crate) fn registry() -> Registry {
        let mut r = Registry::with_core();
        for d in crate::preloaded(None) {
            r.register(d);
        }
        r.register(Arc::new(Append::new("a-d1-bang@1.0", "!D1!", "ok")));
        r.register(Arc::new(Append::new("a-d2-under@1.0", "_D2_", "ok")));
        for (name, sep) in [
            ("a-d1@1.0", "+D1"),
            ("a-d2@1.0", "+D2"),
            ("a-d3@1.0", "+D3"),
            ("a-d4@1.0", "+D4"),
            ("a-d5@1.0", "+D5"),
            ("a-d6@1.0", "+D6"),
            ("a-d7@1.0", "+D7"),
            ("a-d8@1.0", "+D8"),
        ] {
            r.register(Arc::new(Append::new(name, sep, "ok")));
        }
        r.register(Arc::new(Append::new("a-d1-skip@1.0", "+D1", "skip")));
        r.register(Arc::new(Append::new("a-d1-pass@1.0", "+D1", "pass")));
        r.register(Arc::new(Append {
            special: true,
            ..Append::new("a-d2-special@1.0", "+D2", "ok")
        }));
        r.register(Arc::new(MakeCool));
        r.register(Arc::new(PrefixSet));
        r.register(Arc::new(Broken));
        r
    }

    pub(crate) fn ctx_with(node: Message) -> Ctx {
        Ctx::new(
            Arc::new(registry()),
            Arc::new(MemoryCache::new(100)),
            NodeHandle::new(node),
        )
    }

    pub(crate) fn ctx() -> Ctx {
        ctx_with(Message::new())
    }

    fn stack(members: &[&str]) -> Message {
        Message::new()
            .with("device", "stack@1.0")
            .with(
                "device-stack",
                Value::list(members.iter().map(|m| Value::text(m)).collect()),
            )
            .with("result", "INIT")
    }

    fn append(bin: &str) -> Message {
        Message::new().with("path", "append").with("bin", bin)
    }

    fn resolve(ctx: &Ctx, base: &Message, req: Message) -> Outcome {
        ctx.resolve(Value::Message(base.clone()), req)
            .expect("resolves")
    }

    fn resolve_msg(ctx: &Ctx, base: &Message, req: Message) -> Message {
        match resolve(ctx, base, req) {
            Outcome {
                status: Status::Ok,
                value: Value::Message(m),
            } => m,
            other => panic!("expected an ok message, got {other:?}"),
        }
    }

    /// Plain nested lookup (`{as, message@1.0, M}`).
    fn at<'a>(msg: &'a Message, path: &str) -> Option<&'a Value> {
        let mut parts = path.split('/');
        let mut v = msg.get(parts.next()?)?;
        for p in parts {
            v = v.as_message()?.get(p)?;
        }
        Some(v)
    }

    fn result_of(m: &Message) -> &str {
        m.get_str("result").unwrap_or("<none>")
    }

    #[test]
    fn vector_two_members_fold() {
        let ctx = ctx();
        let base = stack(&["a-d1-bang@1.0", "a-d2-under@1.0"]);
        let out = resolve_msg(&ctx, &base, append("2"));
        assert_eq!(result_of(&out), "INIT!D1!2_D2_2");
    }

    #[test]
    fn vector_eight_members() {
        let ctx = ctx();
        let names: Vec<String> = (1..=8).map(|i| format!("a-d{i}@1.0")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let out = resolve_msg(&ctx, &stack(&refs), append("2"));
        assert_eq!(result_of(&out), "INIT+D12+D22+D32+D42+D52+D62+D72+D82");
    }

    #[test]
    fn vector_numbered_message_stack_too() {
        let ctx = ctx();
        let base = Message::new()
            .with("device", "stack@1.0")
            .with(
                "device-stack",
                Message::new().with("1", "a-d1@1.0").with("2", "a-d2@1.0"),
            )
            .with("result", "INIT");
        let out = resolve_msg(&ctx, &base, append("2"));
        assert_eq!(result_of(&out), "INIT+D12+D22");
    }

    #[test]
    fn vector_reinvocation() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0", "a-d2@1.0"]);
        let once = resolve_msg(&ctx, &base, append("2"));
        assert_eq!(result_of(&once), "INIT+D12+D22");
        let twice = resolve_msg(&ctx, &once, append("3"));
        assert_eq!(result_of(&twice), "INIT+D12+D22+D13+D23");
    }

    #[test]
    fn vector_skip() {
        let ctx = ctx();
        let out = resolve_msg(&ctx, &stack(&["a-d1-skip@1.0", "a-d2@1.0"]), append("2"));
        assert_eq!(result_of(&out), "INIT+D12");
        // The stack's own bookkeeping is restored after a skip too.
        assert_eq!(out.get_str("device"), Some("stack@1.0"));
        assert!(out.get("pass").is_none());
    }

    #[test]
    fn vector_pass() {
        let ctx = ctx();
        let out = resolve_msg(&ctx, &stack(&["a-d1-pass@1.0"]), append("_"));
        assert_eq!(result_of(&out), "INIT+D1_+D1_");
    }

    #[test]
    fn vector_not_found_member_is_skipped() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0", "a-d2-special@1.0"]);
        let out = resolve_msg(&ctx, &base, append("_"));
        assert_eq!(result_of(&out), "INIT+D1_+D2_");
        let special = resolve(&ctx, &out, Message::new().with("path", "special/output"));
        assert_eq!(special, Outcome::ok(1337i64));
    }

    #[test]
    fn vector_map_mode() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0", "a-d2@1.0"]);
        let out = resolve_msg(&ctx, &base, append("/").with("mode", "Map"));
        assert_eq!(
            at(&out, "1/result").and_then(Value::as_str),
            Some("INIT+D1/")
        );
        assert_eq!(
            at(&out, "2/result").and_then(Value::as_str),
            Some("INIT+D2/")
        );
        // A fresh message: only the members' keys.
        assert_eq!(out.public().count(), 2);
    }

    #[test]
    fn map_mode_from_the_base_and_exact_mode_names() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0", "a-d2@1.0"]).with("mode", "Map");
        let out = resolve_msg(&ctx, &base, append("/"));
        assert_eq!(
            at(&out, "2/result").and_then(Value::as_str),
            Some("INIT+D2/")
        );
        // The request's mode wins over the base's.
        let out = resolve_msg(&ctx, &base, append("/").with("mode", "Fold"));
        assert_eq!(result_of(&out), "INIT+D1/+D2/");
        // Modes are compared exactly.
        let out = resolve(&ctx, &base, append("/").with("mode", "map"));
        assert_eq!(out.status, Status::Error);
    }

    fn prefix_stack() -> Message {
        Message::new().with("device", "stack@1.0").with(
            "device-stack",
            Message::new()
                .with("1", "prefix-set@1.0")
                .with("2", "prefix-set@1.0"),
        )
    }

    fn prefix_req() -> Message {
        Message::new()
            .with("path", "prefix_set")
            .with("key", "example")
    }

    #[test]
    fn vector_no_prefix() {
        let ctx = ctx();
        let out = resolve_msg(&ctx, &prefix_stack(), prefix_req().with("example", 1i64));
        assert_eq!(out.get("example"), Some(&Value::Integer(1)));
    }

    #[test]
    fn vector_output_prefixes() {
        let ctx = ctx();
        let base = prefix_stack().with(
            "output-prefixes",
            Message::new().with("1", "out1/").with("2", "out2/"),
        );
        let out = resolve_msg(&ctx, &base, prefix_req().with("example", 1i64));
        assert_eq!(at(&out, "out1/example"), Some(&Value::Integer(1)));
        assert_eq!(at(&out, "out2/example"), Some(&Value::Integer(1)));
    }

    #[test]
    fn vector_input_and_output_prefixes() {
        let ctx = ctx();
        let base = prefix_stack()
            .with(
                "input-prefixes",
                Message::new().with("1", "in1/").with("2", "in2/"),
            )
            .with(
                "output-prefixes",
                Message::new().with("1", "out1/").with("2", "out2/"),
            );
        let req = prefix_req()
            .with("in1", Message::new().with("example", 1i64))
            .with("in2", Message::new().with("example", 2i64));
        let out = resolve_msg(&ctx, &base, req);
        assert_eq!(at(&out, "out1/example"), Some(&Value::Integer(1)));
        assert_eq!(at(&out, "out2/example"), Some(&Value::Integer(2)));
        // Bookkeeping (spec 04 §3.6): the prefixes from before the last member come
        // back, and the `previous-*` keys of the last transformation stay.
        assert_eq!(out.get_str("input-prefix"), Some("in1/"));
        assert_eq!(out.get_str("output-prefix"), Some("out1/"));
        assert_eq!(out.get_str("previous-input-prefix"), Some("in1/"));
        assert_eq!(out.get_str("previous-device"), Some("prefix-set@1.0"));
        assert!(out.get("device-key").is_none());
    }

    #[test]
    fn prefixes_are_inherited_when_not_per_member() {
        let ctx = ctx();
        let base = prefix_stack()
            .with("output-prefix", "combined-out/")
            .with("input-prefix", "combined-in/");
        let req = prefix_req().with("combined-in", Message::new().with("example", 1i64));
        let out = resolve_msg(&ctx, &base, req);
        assert_eq!(at(&out, "combined-out/example"), Some(&Value::Integer(1)));
        assert_eq!(out.get_str("output-prefix"), Some("combined-out/"));
    }

    #[test]
    fn vector_transform() {
        let ctx = ctx();
        let base = Message::new()
            .with("device", "stack@1.0")
            .with(
                "device-stack",
                Message::new().with("make-cool", "make-cool@1.0"),
            )
            .with("value", "Super");
        let out = resolve_msg(
            &ctx,
            &base,
            Message::new().with("path", "/transform/make-cool/value"),
        );
        assert_eq!(out.get_str("value"), Some("Super-Cool"));
        assert_eq!(out.get_str("device"), Some("make-cool@1.0"));
        // An unknown member is not found.
        let missing = resolve(
            &ctx,
            &base,
            Message::new().with("path", "/transform/nothing"),
        );
        assert_eq!(missing, Outcome::not_found());
    }

    #[test]
    fn checklist_30_pass_and_device_restored() {
        let ctx = ctx();
        // Absent before: absent after.
        let out = resolve_msg(&ctx, &stack(&["a-d1-pass@1.0"]), append("_"));
        assert!(out.get("pass").is_none());
        assert_eq!(out.get_str("device"), Some("stack@1.0"));
        assert!(out.get("device-key").is_none());
        assert_eq!(out.get_str("previous-device"), Some("a-d1-pass@1.0"));
        // Present before: the same value after.
        let base = stack(&["a-d1@1.0", "a-d2@1.0"]).with("pass", 7i64);
        let out = resolve_msg(&ctx, &base, append("x"));
        assert_eq!(out.get("pass"), Some(&Value::Integer(7)));
        assert_eq!(result_of(&out), "INIT+D1x+D2x");
    }

    #[test]
    fn checklist_31_member_without_the_key_is_skipped() {
        let ctx = ctx();
        // test-device@1.0 has no `append`: it is stepped over.
        let base = stack(&["test-device@1.0", "a-d2@1.0", "test-device@1.0"]);
        let out = resolve_msg(&ctx, &base, append("!"));
        assert_eq!(result_of(&out), "INIT+D2!");
    }

    #[test]
    fn raw_results_return_at_once() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0"]);
        let out = resolve(&ctx, &base, Message::new().with("path", "result"));
        assert_eq!(out, Outcome::ok("INIT"));
    }

    #[test]
    fn set_and_keys_are_plain_message_keys() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0"]);
        let set = resolve_msg(
            &ctx,
            &base,
            Message::new().with("path", "set").with("x", "1"),
        );
        assert_eq!(set.get_str("x"), Some("1"));
        assert_eq!(set.get_str("device"), Some("stack@1.0"));
        assert!(set.get("pass").is_none());
    }

    #[test]
    fn stack_keys_limit_what_goes_through() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0"]).with("stack-keys", Value::list(vec!["other".into()]));
        // `append` is not a stack key: it is a plain (missing) message key.
        let out = resolve(&ctx, &base, append("2"));
        assert_eq!(out, Outcome::not_found());
        let base = base.with("stack-keys", Value::list(vec!["append".into()]));
        let out = resolve_msg(&ctx, &base, append("2"));
        assert_eq!(result_of(&out), "INIT+D12");
    }

    #[test]
    fn error_strategy_throw_and_stop() {
        let base = stack(&["a-d1@1.0", "broken@1.0", "a-d2@1.0"]);
        // Default `throw`: an exception naming the member.
        let err = ctx()
            .resolve(Value::Message(base.clone()), append("2"))
            .expect_err("the stack raises");
        assert!(err.to_string().contains("broken@1.0"), "{err}");
        assert_eq!(err.http_status(), 500);
        // `stop` (node option): an error result.
        let ctx = ctx_with(Message::new().with("error_strategy", "stop"));
        let out = resolve(&ctx, &base, append("2"));
        assert_eq!(out.status, Status::Error);
        let body = out.value.as_message().expect("an error message");
        assert_eq!(body.get_str("body"), Some("stack_call_failed"));
        assert_eq!(body.get("device-key"), Some(&Value::Integer(2)));
        assert_eq!(body.get_str("device"), Some("broken@1.0"));
    }

    #[test]
    fn error_strategy_from_the_base() {
        let base = stack(&["broken@1.0"]).with("error-strategy", "stop");
        let out = resolve(&ctx(), &base, append("2"));
        assert_eq!(out.status, Status::Error);
        let body = out.value.as_message().expect("an error message");
        assert_eq!(body.get_str("member-status"), Some("error"));
        assert_eq!(
            body.get("details")
                .and_then(Value::as_message)
                .and_then(|d| d.get("status")),
            Some(&Value::Integer(422))
        );
    }

    #[test]
    fn bad_stacks_are_errors_not_panics() {
        let ctx = ctx();
        let no_stack = Message::new().with("device", "stack@1.0");
        let err = ctx
            .resolve(Value::Message(no_stack), append("2"))
            .expect_err("no device-stack");
        assert_eq!(err.http_status(), 400);
        let bad = Message::new()
            .with("device", "stack@1.0")
            .with("device-stack", "a-d1@1.0");
        assert!(ctx.resolve(Value::Message(bad), append("2")).is_err());
        // An unknown member device, a member that is a message: not loadable (400).
        for members in [
            Value::list(vec![Value::text("nope@9.9")]),
            Value::list(vec![Value::Message(Message::new().with("x", "y"))]),
        ] {
            let base = stack(&[]).with("device-stack", members);
            let err = ctx
                .resolve(Value::Message(base), append("2"))
                .expect_err("not loadable");
            assert!(
                matches!(err, ResolveError::DeviceNotLoadable { .. }),
                "{err}"
            );
        }
        // Members are numbered from 1: a `0` member is never reached.
        let base = stack(&[]).with("device-stack", Message::new().with("0", "a-d1@1.0"));
        let out = resolve_msg(&ctx, &base, append("2"));
        assert_eq!(result_of(&out), "INIT");
        // A stack that contains itself stops at the depth limit.
        let selfish = stack(&["stack@1.0"]);
        let err = ctx
            .resolve(Value::Message(selfish), append("2"))
            .expect_err("recursion is bounded");
        assert!(matches!(err, ResolveError::TooDeep(_)), "{err}");
    }

    #[test]
    fn endless_passes_are_bounded() {
        let ctx = ctx();
        let base = stack(&["multipass@1.0"]).with("passes", i64::MAX);
        let err = ctx
            .resolve(Value::Message(base), Message::new().with("path", "compute"))
            .expect_err("bounded");
        assert!(err.to_string().contains("passes"), "{err}");
    }

    #[test]
    fn message_values_read_through_the_stack_need_stack_keys() {
        let ctx = ctx();
        let base = stack(&["a-d1@1.0", "a-d2@1.0"]).with("state", Message::new().with("x", "1"));
        // `state` is a message: member 1's answer becomes the fold's state, which is
        // not a stack (as in the reference); the error says what to do.
        let err = ctx
            .resolve(
                Value::Message(base.clone()),
                Message::new().with("path", "state/x"),
            )
            .expect_err("not a stack state");
        assert_eq!(err.http_status(), 400);
        assert!(err.to_string().contains("stack-keys"), "{err}");
        let base = base.with("stack-keys", Value::list(vec!["append".into()]));
        let out = resolve(&ctx, &base, Message::new().with("path", "state/x"));
        assert_eq!(out, Outcome::ok("1"));
    }

    #[test]
    fn empty_stack_folds_to_the_base() {
        let ctx = ctx();
        let out = resolve_msg(&ctx, &stack(&[]), append("2"));
        assert_eq!(result_of(&out), "INIT");
        assert_eq!(out.get_str("device"), Some("stack@1.0"));
    }
}
