//! `json-iface@1.0`: the legacy AO ABI, `handle(msg_json, env_json) -> json`, between
//! AO-Core messages and an aos module (spec 06 §2.5; the reference's `dev_json_iface`).
//!
//! In the AO process stack (`[wasi@1.0, json-iface@1.0, wasm-64@1.0, multipass@1.0]`,
//! two passes) it runs twice per slot:
//!
//! * **pass 1** (prepare): the message (`body` of the assignment) and the process
//!   become JSON — the JSON-struct of spec 04 §2.8 (after putting the first signer's
//!   signature in `Signature`) plus `Module` (the process's image) and `Block-Height`
//!   (the assignment's; either is the text `not_found` when missing, as in the
//!   reference), and `{"Process": <JSON-struct of the process>}` — compact,
//!   keys in byte order. Both are written into the module's memory (`malloc` + copy +
//!   NUL, message first, never freed) and the state gets `function = handle` and
//!   `parameters = [msg_ptr, env_ptr]` for `wasm-64@1.0`;
//! * **pass 2** (results): the JSON at the returned pointer becomes `results`:
//!   `data` (`Output.data`, or `Error`), `outbox` (`"1"`…`"N"`: each message of
//!   `Messages` with its keys lower-cased, one key per tag, `from-process` and
//!   `from-image`), `patches` (the tags of each of `patches` as a message) and, as the
//!   reference's delegated compute keeps it, `json` = `{content-type:
//!   application/json, body: <the module's response as JSON text>}` (`Output`,
//!   `Messages`, `Error`, … with their own case; the HTTP layer gives it to aoconnect
//!   as `raw`).
//!
//! A failed evaluation — a trap or an exhausted budget in pass 1 (`results/<out>/type =
//! error`), an answer that is not JSON, `ok: false`, or JSON of no known shape — is the
//! slot's result, `results = {status: 500, body: <what failed>, error: <detail>}`, with
//! status `ok`: the slot is computed, the instance is as before the message (the WASM
//! device rolled it back), and the process carries on with the next message. (The
//! reference answers `error` here, which leaves a process unable to pass the slot.)

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::json_struct::json_struct;
use hb_core::message::{committers_of, deep_merge, id_all};
use hb_core::{Ctx, Message, ResolveError, Value};
use serde_json::Value as Json;

use crate::wasm_64::{self, join, lookup, output_prefix, put, text_of};

/// The device's name.
pub const NAME: &str = "json-iface@1.0";

/// `results/body` when the WASM call failed.
pub const WASM_ERROR: &str = "WASM execution error.";
/// `results/body` when the module's answer is not JSON.
pub const JSON_ERROR: &str = "JSON error parsing result output.";
/// `results/body` when the module answered `ok: false`.
pub const MODULE_ERROR: &str = "The process failed to handle the message.";
/// `results/body` when the answer has neither `Output` nor `Error`.
pub const INVALID_RESULTS: &str = "Invalid results from the process.";

/// The `json-iface@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonIface;

impl Device for JsonIface {
    fn name(&self) -> &'static str {
        NAME
    }

    fn functions(&self) -> &'static [&'static str] {
        &["init", "compute"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "init" => {
                let mut state = base.clone();
                put(&mut state, "function", Some(Value::text("handle")));
                Ok(Outcome::ok(state))
            }
            "compute" => Ok(match base.get_ci("pass").and_then(Value::as_int) {
                Some(1) => prepare(base, req, ctx),
                Some(2) => results(base, ctx),
                _ => Outcome::ok(base.clone()),
            }),
            other => Err(ResolveError::call(NAME, other, "no such function")),
        }
    }
}

/// The process's image: `process/image`, else `process/module` (processes spawned by
/// aoconnect name their module so), else the state's `image`.
fn image_of(base: &Message) -> Option<Value> {
    let process = base.get("process").and_then(Value::as_message);
    process
        .and_then(|p| p.get_ci("image").or_else(|| p.get_ci("module")))
        .or_else(|| base.get_ci("image"))
        .cloned()
}

/// A value as JSON (numbers as numbers, the rest as text).
fn value_json(v: &Value) -> Json {
    match v {
        Value::Integer(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Atom(a) => Json::String(a.to_string()),
        other => Json::String(String::from_utf8_lossy(&other.to_display_bytes()).into_owned()),
    }
}

/// Compact JSON with object keys in byte order (spec 06 §2.5.2: the bytes written
/// decide the module's allocations, so they must be the reference's).
pub fn encode_sorted(v: &Json) -> String {
    fn write(v: &Json, out: &mut String) {
        match v {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Json::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(v) = m.get(k) {
                        write(v, out);
                    }
                }
                out.push('}');
            }
            Json::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The signature of the message's first signer, as the reference's "denormalising"
/// puts it at the top level.
fn first_signature(message: &Message) -> Option<Value> {
    let signer = committers_of(message).into_iter().next()?;
    let commitments = message.get("commitments")?.as_message()?;
    commitments.iter().find_map(|(_, c)| {
        let c = c.as_message()?;
        (c.get_str("committer") == Some(signer.as_str()))
            .then(|| c.get("signature").cloned())
            .flatten()
    })
}

/// The message JSON of pass 1.
pub fn message_json(
    message: &Message,
    image: Option<&Value>,
    block_height: Option<&Value>,
) -> Result<String, String> {
    let mut denormalized = message.clone();
    if !denormalized.contains("signature")
        && let Some(sig) = first_signature(message)
    {
        denormalized.insert("signature", sig);
    }
    let mut json = json_struct(&denormalized).map_err(|e| e.to_string())?;
    // A missing value is what the reference's encoder makes of its `not_found`: the
    // text `not_found` (aos needs both fields to be there).
    let or_not_found = |v: Option<&Value>| v.map_or_else(|| Json::from("not_found"), value_json);
    if let Json::Object(o) = &mut json {
        o.insert("Module".into(), or_not_found(image));
        o.insert("Block-Height".into(), or_not_found(block_height));
    }
    Ok(encode_sorted(&json))
}

/// The environment JSON of pass 1: `{"Process": <JSON-struct of the process>}`.
pub fn env_json(process: &Message) -> Result<String, String> {
    let process = json_struct(process).map_err(|e| e.to_string())?;
    let mut env = serde_json::Map::new();
    env.insert("Process".into(), process);
    Ok(encode_sorted(&Json::Object(env)))
}

/// Pass 1 (spec 06 §2.5.2).
fn prepare(base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
    let Some(Value::Message(process)) = base.get("process") else {
        return Outcome::error_status(
            400,
            "json-iface@1.0 needs the process definition at `process`.",
        );
    };
    let Some(Value::Message(message)) = req.get_ci("body") else {
        return Outcome::error_status(
            400,
            "json-iface@1.0 needs the message to evaluate as the request's `body`.",
        );
    };
    let image = image_of(base);
    let encoded = message_json(message, image.as_ref(), req.get_ci("block-height"))
        .and_then(|m| env_json(process).map(|e| (m, e)));
    let (msg, env) = match encoded {
        Ok(pair) => pair,
        Err(e) => {
            return Outcome::error_status(
                400,
                &format!("json-iface@1.0: cannot encode the message: {e}"),
            );
        }
    };
    // The instance (restored from a snapshot if the state has none yet).
    let key = wasm_64::member_key(base);
    let mut state = match wasm_64::normalized_as(base, ctx, key) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let out = output_prefix(&state);
    let Some(instance) = wasm_64::instance_of(&state, &out) else {
        return Outcome::error_status(500, "no_wasm_instance_or_snapshot");
    };
    let written = ctx.blocking(|| {
        instance.prepare(|inst| {
            let m = inst.write_string(msg.as_bytes())?;
            let e = inst.write_string(env.as_bytes())?;
            Ok((m, e))
        })
    });
    match written {
        Ok(((m, e), open)) => {
            // The state holds the open transaction: the call must find these writes.
            wasm_64::install(&mut state, &out, open);
            put(&mut state, "function", Some(Value::text("handle")));
            put(
                &mut state,
                "parameters",
                Some(Value::list(vec![
                    Value::Integer(m as i64),
                    Value::Integer(e as i64),
                ])),
            );
            Outcome::ok(state)
        }
        Err(e) => wasm_64::slot_error(&e),
    }
}

/// `results/json`: the module's answer as JSON text, marked as such.
fn answer_json(answer: &Json) -> Message {
    Message::new()
        .with("content-type", "application/json")
        .with("body", answer.to_string())
}

/// The state with the slot's error results (see the module docs); `results/json` says
/// what failed as an answer's `Error`.
fn failed(mut state: Message, body: &str, detail: Option<Value>) -> Outcome {
    let error = match text_of(detail.as_ref()) {
        Some(d) => format!("{body} ({d})"),
        None => body.to_owned(),
    };
    let mut answer = serde_json::Map::new();
    answer.insert("Error".into(), Json::String(error));
    let mut results = Message::new()
        .with("status", 500i64)
        .with("body", body)
        .with("json", answer_json(&Json::Object(answer)));
    if let Some(d) = detail {
        results.insert("error", d);
    }
    merge_results(&mut state, results);
    Outcome::ok(state)
}

fn merge_results(state: &mut Message, new: Message) {
    let merged = match state.get("results") {
        Some(Value::Message(old)) => deep_merge(old, &new),
        _ => new,
    };
    put(state, "results", Some(Value::Message(merged)));
}

/// JSON as a message value: objects become messages (keys normalised), arrays lists,
/// `true`/`false`/`null` atoms.
pub fn json_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::atom("null"),
        Json::Bool(b) => Value::boolean(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Integer)
            .or_else(|| n.as_f64().map(Value::Float))
            .unwrap_or_else(|| Value::atom("null")),
        Json::String(s) => Value::text(s),
        Json::Array(a) => Value::list(a.iter().map(json_to_value).collect()),
        Json::Object(o) => {
            let mut m = Message::new();
            for (k, v) in o.iter().filter(|(k, _)| !k.is_empty()) {
                m.insert(k, json_to_value(v));
            }
            Value::Message(m)
        }
    }
}

/// The `tags` list of a JSON object (any case of the key).
fn tags(obj: &serde_json::Map<String, Json>) -> impl Iterator<Item = (&str, &Json)> {
    obj.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("tags"))
        .filter_map(|(_, v)| v.as_array())
        .flatten()
        .filter_map(|t| {
            let name = t.get("name")?.as_str().filter(|n| !n.is_empty())?;
            Some((name, t.get("value")?))
        })
}

/// The reference's `tags_to_map`: a message of `name → value` from the tags.
fn tags_to_map(j: &Json) -> Value {
    let mut m = Message::new();
    if let Some(obj) = j.as_object() {
        for (name, value) in tags(obj) {
            m.insert(name, json_to_value(value));
        }
    }
    Value::Message(m)
}

/// One outbox entry (spec 06 §2.5.6).
fn outbox_entry(obj: &serde_json::Map<String, Json>, pid: &str, image: Option<&Value>) -> Message {
    let mut m = Message::new();
    for (k, v) in obj.iter().filter(|(k, _)| !k.is_empty()) {
        m.insert(k, json_to_value(v));
    }
    for (name, value) in tags(obj) {
        m.insert(name, json_to_value(value));
    }
    m.insert("from-process", Value::text(pid));
    if let Some(image) = image {
        m.insert("from-image", image.clone());
    }
    m
}

/// The data, messages and patches of a response (the reference's
/// `normalize_results`, plus a bare `Output` value as the data).
fn normalize_results(resp: &Json) -> Option<(Json, Vec<Json>, Vec<Json>)> {
    let list = |key: &str| {
        resp.get(key)
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let output = resp.get("Output");
    if let Some(data) = output.and_then(|o| o.get("data")) {
        return Some((data.clone(), list("Messages"), list("patches")));
    }
    if let Some(error) = resp.get("Error") {
        return Some((error.clone(), vec![], vec![]));
    }
    match output {
        Some(o) if !o.is_object() && !o.is_null() => {
            Some((o.clone(), list("Messages"), list("patches")))
        }
        _ => None,
    }
}

/// Pass 2 (spec 06 §2.5.6).
fn results(base: &Message, _ctx: &Ctx) -> Outcome {
    let out = output_prefix(base);
    let state = base.clone();
    let kind = text_of(lookup(base, &join(&["results", &out, "type"])));
    if kind
        .as_deref()
        .is_some_and(|k| k.eq_ignore_ascii_case("error"))
    {
        let detail = lookup(base, &join(&["results", &out, "output"])).cloned();
        return failed(state, WASM_ERROR, detail);
    }
    let pointer = match lookup(base, &join(&["results", &out, "output"])) {
        Some(Value::List(l)) => l.first().and_then(Value::as_int),
        Some(v) => v.as_int(),
        None => None,
    };
    let Some(pointer) = pointer.and_then(|p| u64::try_from(p).ok()) else {
        return failed(
            state,
            JSON_ERROR,
            Some(Value::text("the call returned no pointer")),
        );
    };
    let Some(instance) = wasm_64::instance_of(base, &out) else {
        return Outcome::error_status(500, "no_wasm_instance_or_snapshot");
    };
    let text = match instance.read(|inst| inst.read_string(pointer)) {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return failed(state, JSON_ERROR, Some(Value::from(e.to_string()))),
        Err(e) => return wasm_64::slot_error(&e),
    };
    let json: Json = match serde_json::from_str(&text) {
        Ok(j) => j,
        Err(e) => return failed(state, JSON_ERROR, Some(Value::from(e.to_string()))),
    };
    if json.get("ok") != Some(&Json::Bool(true)) {
        let detail = json.get("error").map(json_to_value);
        return failed(state, MODULE_ERROR, detail);
    }
    let Some((data, messages, patches)) = json.get("response").and_then(normalize_results) else {
        return failed(state, INVALID_RESULTS, None);
    };
    let Some(Value::Message(process)) = base.get("process") else {
        return Outcome::error_status(
            400,
            "json-iface@1.0 needs the process definition at `process`.",
        );
    };
    let pid = match id_all(process) {
        Ok(id) => id.to_human(),
        Err(e) => return Outcome::error_status(400, &format!("the process has no ID: {e}")),
    };
    let image = image_of(base);
    let outbox: Message = messages
        .iter()
        .filter_map(Json::as_object)
        .enumerate()
        .map(|(i, m)| {
            (
                std::sync::Arc::from((i + 1).to_string()),
                Value::Message(outbox_entry(m, &pid, image.as_ref())),
            )
        })
        .collect();
    let results = Message::new()
        .with("outbox", outbox)
        .with(
            "patches",
            Value::list(patches.iter().map(tags_to_map).collect()),
        )
        .with("data", json_to_value(&data))
        .with("json", answer_json(&json["response"]));
    let mut state = state;
    merge_results(&mut state, results);
    Outcome::ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_compact_json() {
        let j: Json = serde_json::from_str(r#"{"b":1,"a":{"z":[1,2.5,"x\"y"],"c":null},"A":true}"#)
            .unwrap_or_default();
        assert_eq!(
            encode_sorted(&j),
            r#"{"A":true,"a":{"c":null,"z":[1,2.5,"x\"y"]},"b":1}"#
        );
    }

    #[test]
    fn outbox_entries_merge_tags() {
        let j: Json = serde_json::from_str(
            r#"{"Target":"T","Anchor":"00","Data":{"Deep":4},"Tags":[{"name":"Action","value":"State"},{"name":"Target","value":"U"}]}"#,
        )
        .unwrap_or_default();
        let m = outbox_entry(
            j.as_object().unwrap_or(&serde_json::Map::new()),
            "P",
            Some(&Value::text("I")),
        );
        assert_eq!(m.get_str("target"), Some("U"), "tags win");
        assert_eq!(m.get_str("action"), Some("State"));
        assert_eq!(m.get_str("anchor"), Some("00"));
        assert!(matches!(m.get("tags"), Some(Value::List(_))));
        assert_eq!(lookup(&m, "data/Deep"), Some(&Value::Integer(4)));
        assert_eq!(m.get_str("from-process"), Some("P"));
        assert_eq!(m.get_str("from-image"), Some("I"));
    }
}
