//! `flat@1.0` as a device (spec 03 §8): `serialize` writes the base message as
//! `key: value` lines of its flattened TABM, `deserialize` reads such text under
//! `target` (default `body`) back into a message.

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::{Ctx, Message, ResolveError, Value, flat, structured};

/// The `flat@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flat;

impl Device for Flat {
    fn name(&self) -> &'static str {
        "flat@1.0"
    }

    fn functions(&self) -> &'static [&'static str] {
        &["serialize", "deserialize"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, _ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "serialize" => {
                let tabm = structured::to_tabm(&base.without_private())?;
                let body = flat::serialize(&tabm)?;
                Ok(Outcome::ok(
                    Message::new()
                        .with("content-type", "text/plain")
                        .with("body", Value::Binary(body)),
                ))
            }
            "deserialize" => match hb_core::device::payload(base, req, "flat text") {
                Ok(text) => {
                    let tabm = flat::deserialize(&text)?;
                    Ok(Outcome::ok(structured::from_tabm(&tabm)?))
                }
                Err(refusal) => Ok(refusal),
            },
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}
