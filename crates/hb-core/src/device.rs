//! Devices: the single extension point of AO-Core (spec 01 §3).
//!
//! A device is a table of functions over messages. The engine finds the function for a
//! key with the exact algorithm of spec 01 §3.3 ([`DeviceInfo`] gives the device's
//! `handler`, `default`, `exports` and `excludes`), then calls [`Device::call`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::resolve::{Ctx, ResolveError};
use crate::value::{Message, Value, normalize_key};

/// The status of a device result (the reference's result-tuple atom).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `ok`: HTTP 200.
    Ok,
    /// `error`: HTTP 400.
    Error,
    /// `created`: HTTP 201.
    Created,
    /// `not_found`: HTTP 404.
    NotFound,
    /// `failure`: HTTP 500.
    Failure,
    /// `unavailable`: HTTP 503.
    Unavailable,
    /// Any other atom (`skip`, …): HTTP 200 unless the result says otherwise.
    Other(Arc<str>),
}

impl Status {
    /// The atom's name.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Created => "created",
            Status::NotFound => "not_found",
            Status::Failure => "failure",
            Status::Unavailable => "unavailable",
            Status::Other(s) => s,
        }
    }

    /// The status atom of that name.
    pub fn from_atom(name: &str) -> Status {
        match name {
            "ok" => Status::Ok,
            "error" => Status::Error,
            "created" => Status::Created,
            "not_found" => Status::NotFound,
            "failure" => Status::Failure,
            "unavailable" => Status::Unavailable,
            other => Status::Other(Arc::from(other)),
        }
    }

    /// The HTTP code of a status atom (spec 05 §2.5), if it has one.
    pub fn http_code(&self) -> Option<u16> {
        Some(match self {
            Status::Ok => 200,
            Status::Created => 201,
            Status::Error => 400,
            Status::NotFound => 404,
            Status::Failure => 500,
            Status::Unavailable => 503,
            Status::Other(_) => return None,
        })
    }
}

/// A device result: a status and a value (the reference's `{Status, Value}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The status atom.
    pub status: Status,
    /// The value.
    pub value: Value,
}

impl Outcome {
    /// `{ok, V}`.
    pub fn ok(value: impl Into<Value>) -> Outcome {
        Outcome {
            status: Status::Ok,
            value: value.into(),
        }
    }

    /// `{error, V}`.
    pub fn error(value: impl Into<Value>) -> Outcome {
        Outcome {
            status: Status::Error,
            value: value.into(),
        }
    }

    /// `{error, not_found}`: what a missing key resolves to.
    pub fn not_found() -> Outcome {
        Outcome {
            status: Status::Error,
            value: Value::atom("not_found"),
        }
    }

    /// `{error, #{status => Code, body => Text}}`.
    pub fn error_status(code: i64, body: &str) -> Outcome {
        Outcome::error(Message::new().with("status", code).with("body", body))
    }

    /// True when the status is `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// What a device does for keys it has no function for (`default` in its info).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum DefaultHandler {
    /// Nothing: such keys fall back to `message@1.0`.
    #[default]
    None,
    /// The device's own [`Device::call`] with [`Call::Default`].
    Function,
    /// Delegate to another device by name.
    Device(String),
}

/// A device's `info` (spec 01 §3.2).
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    /// The device handles every exported key itself ([`Call::Handler`]).
    pub handler: bool,
    /// What to do with keys the device does not implement.
    pub default: DefaultHandler,
    /// If set, only these keys (normalised) are device keys.
    pub exports: Option<Vec<String>>,
    /// Keys that are not device keys even though implemented.
    pub excludes: Vec<String>,
}

impl DeviceInfo {
    /// "Is key K exported" (spec 01 §3.2).
    pub fn is_exported(&self, key: &str) -> bool {
        if key == "info" {
            return true;
        }
        if self.excludes.iter().any(|e| normalize_key(e) == key) {
            return false;
        }
        match &self.exports {
            Some(list) => list.iter().any(|e| normalize_key(e) == key),
            None => true,
        }
    }
}

/// How the engine calls a device for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// One of the device's own functions, named as in [`Device::functions`].
    Function(&'a str),
    /// The device's handler, for any exported key (the key is given).
    Handler(&'a str),
    /// The device's default function, for a key it does not implement.
    Default(&'a str),
}

impl Call<'_> {
    /// The function name or key this call is for.
    pub fn key(&self) -> &str {
        match self {
            Call::Function(k) | Call::Handler(k) | Call::Default(k) => k,
        }
    }
}

/// The result of a device call: an outcome, or an exception (the reference's `throw`).
pub type DeviceResult = Result<Outcome, ResolveError>;

/// A device: a named table of functions over messages.
pub trait Device: Send + Sync + 'static {
    /// The device's name, e.g. `message@1.0`.
    fn name(&self) -> &'static str;

    /// The device's info for a given base message.
    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo::default()
    }

    /// The functions the device implements, named with `_` where keys use `-`
    /// (the engine maps `-` to `_` before matching, spec 01 §3.3).
    fn functions(&self) -> &'static [&'static str];

    /// Runs a function. `base` is the message being operated on, `req` the request
    /// (its `path` is the key being resolved).
    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult;
}

/// The devices a node can load, by normalised name (spec 05 §1.7).
#[derive(Clone, Default)]
pub struct Registry {
    devices: HashMap<String, Arc<dyn Device>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.devices.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("devices", &names).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry holding the devices of this crate (`message@1.0`).
    pub fn with_core() -> Self {
        let mut r = Registry::new();
        r.register(Arc::new(crate::message::MessageDevice));
        r
    }

    /// Adds (or replaces) a device under its own name.
    pub fn register(&mut self, device: Arc<dyn Device>) {
        self.devices
            .insert(normalize_key(device.name()).into_owned(), device);
    }

    /// Finds a device by name (case-insensitive, spec 01 §3.1).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Device>> {
        self.devices
            .get(name)
            .or_else(|| self.devices.get(normalize_key(name).as_ref()))
    }

    /// The names of all devices, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.devices.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// What a codec's `deserialize` (or `from`) reads: the binary under the request's
/// `target` key of the base (default `body`), or the error outcome that says why there
/// is none (`what` names the expected content, e.g. `JSON text`).
pub fn payload(base: &Message, req: &Message, what: &str) -> Result<bytes::Bytes, Outcome> {
    let target = req.get_str("target").unwrap_or("body");
    match base.get_ci(target) {
        Some(Value::Binary(text)) => Ok(text.clone()),
        Some(other) => Err(Outcome::error_status(
            400,
            &format!("`{target}` holds a {}, not {what}", other.type_name()),
        )),
        None => Err(Outcome::error_status(
            404,
            &format!("{what} not found in the base message. Searched for: {target}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_rules() {
        let info = DeviceInfo {
            exports: Some(vec!["test1".into(), "Test2".into()]),
            excludes: vec!["set".into()],
            ..Default::default()
        };
        assert!(info.is_exported("info"));
        assert!(info.is_exported("test1"));
        assert!(info.is_exported("test2"));
        assert!(!info.is_exported("test3"));
        assert!(!info.is_exported("set"));
        assert!(DeviceInfo::default().is_exported("anything"));
    }

    #[test]
    fn status_codes() {
        assert_eq!(Status::from_atom("not_found").http_code(), Some(404));
        assert_eq!(Status::from_atom("unavailable").http_code(), Some(503));
        assert_eq!(Status::from_atom("skip").http_code(), None);
    }
}
