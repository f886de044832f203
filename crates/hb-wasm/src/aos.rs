//! The aos JSON ABI (spec 06 §2.5.3–2.5.4): `handle(msg_json, env_json) -> json`.
//!
//! A thin helper over [`Instance`]: the device `json-iface@1.0` builds the two JSON
//! documents from messages; this only moves strings in and out of the module.

use crate::error::WasmError;
use crate::imports::{Imports, Value};
use crate::instance::Instance;

/// Calls `handle` the way the reference does: `malloc` + copy + NUL for the message
/// JSON, then for the environment JSON (in that order, never freed), then
/// `handle(msg_ptr, env_ptr)`, and reads the NUL-terminated UTF-8 string at the
/// returned address.
pub fn handle<I: Imports>(
    instance: &mut Instance<I>,
    msg_json: &str,
    env_json: &str,
) -> Result<String, WasmError> {
    let msg = instance.write_string(msg_json.as_bytes())?;
    let env = instance.write_string(env_json.as_bytes())?;
    let results = instance.call("handle", &[Value::I64(msg as i64), Value::I64(env as i64)])?;
    let ptr = results
        .first()
        .and_then(Value::as_address)
        .ok_or_else(|| WasmError::Conversion {
            name: "handle".into(),
            reason: "does not return an address".into(),
        })?;
    instance.read_string(ptr)
}
