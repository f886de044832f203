//! `structured@1.0` as a device (spec 03 §1–2): the codec between rich messages and
//! TABM. `from` gives the base message's TABM (every value a binary or a nested map,
//! types in `ao-types`), `to` decodes a TABM base back into a rich message.
//! `commit`, `verify` and `committed` are `httpsig@1.0`'s (spec 03 §1).

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::{Ctx, Message, ResolveError, structured};

/// The `structured@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Structured;

impl Device for Structured {
    fn name(&self) -> &'static str {
        "structured@1.0"
    }

    fn functions(&self) -> &'static [&'static str] {
        &["from", "to", "commit", "verify", "committed"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "from" => Ok(Outcome::ok(structured::to_tabm(&base.without_private())?)),
            "to" => Ok(Outcome::ok(structured::from_tabm(&base.without_private())?)),
            f @ ("commit" | "verify" | "committed") => {
                let httpsig = ctx.registry().get("httpsig@1.0").cloned().ok_or_else(|| {
                    ResolveError::call(self.name(), f, "httpsig@1.0 is not loaded on this node")
                })?;
                let f = httpsig
                    .functions()
                    .iter()
                    .copied()
                    .find(|g| *g == f)
                    .ok_or_else(|| ResolveError::call(self.name(), f, "httpsig@1.0 lacks it"))?;
                httpsig.call(Call::Function(f), base, req, ctx)
            }
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Arc;

    use hb_core::{MemoryCache, NodeHandle, Value};

    fn ctx() -> hb_core::Ctx {
        hb_core::Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(MemoryCache::new(10)),
            NodeHandle::new(hb_core::Message::new()),
        )
    }

    /// Spec 03 §2.1: `from` is the TABM (types in `ao-types`), `to` reverses it.
    #[test]
    fn from_and_to_through_the_engine() {
        let ctx = ctx();
        let run = |p: &str| {
            ctx.resolve_many(hb_core::hyperpath::parse(p).unwrap())
                .unwrap()
        };
        let tabm = run("/~message@1.0&a+integer=1&b=x/~structured@1.0/from");
        let tabm = tabm.value.as_message().cloned().unwrap();
        assert_eq!(tabm.get_str("a"), Some("1"));
        assert_eq!(tabm.get_str("ao-types"), Some(r#"a="integer""#));
        // `ao-types` cannot be given in a path (the parser types the path's own keys),
        // so `to` is called directly on the TABM `from` gave.
        use hb_core::device::{Call, Device as _};
        let rich = super::Structured
            .call(Call::Function("to"), &tabm, &hb_core::Message::new(), &ctx)
            .unwrap();
        let rich = rich.value.as_message().cloned().unwrap();
        assert_eq!(rich.get("a"), Some(&Value::Integer(1)));
        assert_eq!(rich.get_str("b"), Some("x"));
    }
}
