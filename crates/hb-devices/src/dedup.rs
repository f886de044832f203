//! `dedup@1.0`: lets each distinct request through a stack once (spec 05 §9.1; the
//! reference's `dev_dedup`).
//!
//! On the first pass of a stack (`pass` absent or 1) every key is handled alike: the
//! ID of the request, commitments included (ID*), is looked up in the base's `dedup`
//! list. A request seen before answers `skip` (ending the stack's fold); a new one is
//! added to the front of the list and answers `ok`. On later passes the base passes
//! through unchanged. `set` and `keys` are plain message keys.

use hb_core::device::{Call, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::resolve::id_of;
use hb_core::value::message_to_list;
use hb_core::{Ctx, Message, Value};

use crate::stack::plain_set;

/// The `dedup@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dedup;

impl Device for Dedup {
    fn name(&self) -> &'static str {
        "dedup@1.0"
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            handler: true,
            excludes: vec!["keys".into(), "set".into()],
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[]
    }

    fn call(&self, _call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let first_pass = base.get_ci("pass").is_none_or(|p| p.as_int() == Some(1));
        if !first_pass {
            return Ok(Outcome::ok(base.clone()));
        }
        let id = Value::from(id_of(req)?.to_human());
        let mut seen = match base.get_ci("dedup") {
            Some(Value::List(l)) => l.as_ref().clone(),
            Some(Value::Message(m)) => message_to_list(m).unwrap_or_default(),
            Some(one @ Value::Binary(_)) => vec![one.clone()],
            _ => vec![],
        };
        if seen.contains(&id) {
            return Ok(Outcome {
                status: Status::from_atom("skip"),
                value: Value::Message(base.clone()),
            });
        }
        seen.insert(0, id);
        let update = Message::new().with("dedup", Value::list(seen));
        Ok(Outcome::ok(plain_set(base, update, ctx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::tests::ctx;

    fn stack(members: &[&str]) -> Message {
        Message::new()
            .with("device", "stack@1.0")
            .with(
                "device-stack",
                Value::list(members.iter().map(|m| Value::text(m)).collect()),
            )
            .with("result", "INIT")
    }

    fn apply_all(base: Message, bins: &[&str]) -> Message {
        let ctx = ctx();
        let mut msg = base;
        for bin in bins {
            let req = Message::new().with("path", "append").with("bin", *bin);
            match ctx.resolve(Value::Message(msg), req).expect("resolves") {
                Outcome {
                    status: Status::Ok,
                    value: Value::Message(m),
                } => msg = m,
                other => panic!("expected a message, got {other:?}"),
            }
        }
        msg
    }

    #[test]
    fn vector_dedup_in_a_stack() {
        let out = apply_all(
            stack(&["dedup@1.0", "a-d2@1.0", "a-d3@1.0"]),
            &["_", "_", "/", "/"],
        );
        assert_eq!(out.get_str("result"), Some("INIT+D2_+D3_+D2/+D3/"));
        // Two distinct requests were recorded, newest first.
        let Some(Value::List(seen)) = out.get("dedup") else {
            panic!("no dedup list: {out:?}");
        };
        assert_eq!(seen.len(), 2);
        let newest = id_of(&Message::new().with("path", "append").with("bin", "/"))
            .expect("id")
            .to_human();
        assert_eq!(seen.first(), Some(&Value::from(newest)));
    }

    #[test]
    fn vector_dedup_with_multipass() {
        let base =
            stack(&["dedup@1.0", "a-d2@1.0", "a-d3@1.0", "multipass@1.0"]).with("passes", 2i64);
        let out = apply_all(base, &["_", "_", "/", "/"]);
        assert_eq!(
            out.get_str("result"),
            Some("INIT+D2_+D3_+D2_+D3_+D2/+D3/+D2/+D3/")
        );
    }

    #[test]
    fn direct_calls() {
        let ctx = ctx();
        let base = Message::new().with("device", "dedup@1.0").with("x", "1");
        let req = Message::new().with("path", "compute").with("n", 1i64);
        let once = ctx
            .resolve(Value::Message(base.clone()), req.clone())
            .expect("resolves");
        assert!(once.is_ok());
        let Value::Message(once) = once.value else {
            panic!("a message")
        };
        let twice = ctx
            .resolve(Value::Message(once.clone()), req.clone())
            .expect("resolves");
        assert_eq!(twice.status.as_str(), "skip");
        assert_eq!(twice.value, Value::Message(once.without_private()));
        // Later passes: unchanged, whatever the request.
        let later = once.without_private().with("pass", 2i64);
        let out = ctx
            .resolve(Value::Message(later.clone()), req)
            .expect("resolves");
        let Value::Message(out) = out.value else {
            panic!("a message")
        };
        assert_eq!(out.without_private(), later);
        // `keys` is a plain message key.
        let keys = ctx
            .resolve(Value::Message(base), Message::new().with("path", "keys"))
            .expect("resolves");
        assert_eq!(
            keys,
            Outcome::ok(Value::list(vec!["device".into(), "x".into()]))
        );
    }
}
