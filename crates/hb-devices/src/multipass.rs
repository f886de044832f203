//! `multipass@1.0`: asks a stack for more passes (spec 05 §9.2; the reference's
//! `dev_multipass`).
//!
//! Every key but `set` and `keys` (plain message keys) answers `pass` with the base
//! while the base's `pass` (default 1) is below its `passes` (default 1), and `ok`
//! once it is not: in a stack, the members run `passes` times.

use hb_core::device::{Call, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::{Ctx, Message, Value};

/// The `multipass@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Multipass;

impl Device for Multipass {
    fn name(&self) -> &'static str {
        "multipass@1.0"
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

    fn call(&self, _call: Call<'_>, base: &Message, _req: &Message, _ctx: &Ctx) -> DeviceResult {
        let counter = |key: &str| match base.get_ci(key) {
            None => Ok(1),
            Some(v) => v.as_int().ok_or_else(|| {
                Outcome::error_status(
                    400,
                    &format!(
                        "multipass@1.0: `{key}` must be an integer, not a {}",
                        v.type_name()
                    ),
                )
            }),
        };
        let (passes, pass) = match (counter("passes"), counter("pass")) {
            (Ok(passes), Ok(pass)) => (passes, pass),
            (Err(e), _) | (_, Err(e)) => return Ok(e),
        };
        let status = if pass < passes {
            Status::from_atom("pass")
        } else {
            Status::Ok
        };
        Ok(Outcome {
            status,
            value: Value::Message(base.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::tests::ctx;

    fn run(base: Message) -> Outcome {
        ctx()
            .resolve(Value::Message(base), Message::new().with("path", "Compute"))
            .expect("resolves")
    }

    #[test]
    fn vector_basic_multipass() {
        let base = Message::new()
            .with("device", "multipass@1.0")
            .with("passes", 2i64)
            .with("pass", 1i64);
        let out = run(base.clone());
        assert_eq!(out.status.as_str(), "pass");
        assert_eq!(out.value, Value::Message(base.clone()));
        let out = run(base.with("pass", 2i64));
        assert_eq!(out.status, Status::Ok);
    }

    #[test]
    fn defaults_text_counters_and_bad_values() {
        let base = Message::new().with("device", "multipass@1.0");
        assert_eq!(run(base.clone()).status, Status::Ok);
        // Counters that crossed HTTP as text still count.
        let out = run(base.clone().with("passes", "3").with("pass", "2"));
        assert_eq!(out.status.as_str(), "pass");
        let out = run(base.with("passes", "many"));
        assert_eq!(out.status, Status::Error);
    }

    #[test]
    fn three_passes_in_a_stack() {
        let base = Message::new()
            .with("device", "stack@1.0")
            .with(
                "device-stack",
                Value::list(vec!["a-d1@1.0".into(), "multipass@1.0".into()]),
            )
            .with("passes", 3i64)
            .with("result", "INIT");
        let out = ctx()
            .resolve(
                Value::Message(base),
                Message::new().with("path", "append").with("bin", "."),
            )
            .expect("resolves");
        let Value::Message(out) = out.value else {
            panic!("a message")
        };
        // Passes 1 and 2 append; on pass 3 the append device answers unchanged.
        assert_eq!(out.get_str("result"), Some("INIT+D1.+D1."));
        assert!(out.get("pass").is_none());
    }
}
