//! `json@1.0` as a device (spec 03 §10): `serialize` turns the base message into JSON,
//! `deserialize` reads the JSON under `target` (default `body`) into a message. Its
//! `commit`/`verify`/`committed` are httpsig's, through `message@1.0`.

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::{Ctx, Message, ResolveError, json};

/// The `json@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Device for Json {
    fn name(&self) -> &'static str {
        "json@1.0"
    }

    fn functions(&self) -> &'static [&'static str] {
        &["serialize", "deserialize", "content_type"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, _ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "content_type" => Ok(Outcome::ok("application/json")),
            "serialize" => {
                let body = json::to_plain_json(base)?;
                Ok(Outcome::ok(
                    Message::new()
                        .with("content-type", "application/json")
                        .with("body", body),
                ))
            }
            "deserialize" => match hb_core::device::payload(base, req, "JSON text") {
                Ok(text) => Ok(Outcome::ok(json::from_plain_json(&text)?)),
                Err(refusal) => Ok(refusal),
            },
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}
