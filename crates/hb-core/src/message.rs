//! `message@1.0`: the identity device, and every message's default (spec 01 §6).
//!
//! It lives in hb-core because the engine itself falls back to it for every key no
//! other device handles (spec 01 §3.3 step 5).

use std::sync::Arc;

use crate::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome};
use crate::id::Id;
use crate::resolve::{Ctx, ResolveError};
use crate::value::{Message, Value, is_private, normalize_key};

/// The `message@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageDevice;

/// Keys of a `set` request that are never set (spec 01 §6: the "device keys").
const NOT_SET: &[&str] = &[
    "id",
    "commitments",
    "committers",
    "keys",
    "path",
    "set",
    "remove",
    "verify",
    "set-mode",
];

impl Device for MessageDevice {
    fn name(&self) -> &'static str {
        "message@1.0"
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::Function,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "get",
            "set",
            "set_path",
            "remove",
            "keys",
            "id",
            "commit",
            "committed",
            "committers",
            "verify",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call {
            Call::Default(key) | Call::Handler(key) => Ok(get(base, key)),
            Call::Function("get") => {
                let key = req.get("key").and_then(Value::as_str).unwrap_or("get");
                Ok(get(base, key))
            }
            Call::Function("set") => Ok(Outcome::ok(set(base, req))),
            Call::Function("set_path") => {
                let value = req.get("value").cloned().unwrap_or_else(|| Value::text(""));
                Ok(Outcome::ok(base.clone().with("path", value)))
            }
            Call::Function("remove") => Ok(Outcome::ok(remove(base, req))),
            Call::Function("keys") => {
                let keys = base.public().map(|(k, _)| Value::text(k)).collect();
                Ok(Outcome::ok(Value::list(keys)))
            }
            Call::Function("id") => Ok(Outcome::ok(Value::from(id(base, req)?.to_human()))),
            Call::Function("committers") => {
                let list = committers_of(base).into_iter().map(Value::from).collect();
                Ok(Outcome::ok(Value::list(list)))
            }
            Call::Function("commit") => delegate_commitment("commit", base, req, ctx),
            Call::Function("verify") => verify(base, req, ctx),
            Call::Function("committed") => {
                if commitments_of(base).is_none() {
                    return Ok(Outcome::ok(Value::list(vec![])));
                }
                delegate_commitment("committed", base, req, ctx)
            }
            Call::Function(other) => {
                Err(ResolveError::call(self.name(), other, "no such function"))
            }
        }
    }
}

/// The default `get`: exact key, then case-insensitive; private keys are never found.
fn get(base: &Message, key: &str) -> Outcome {
    if is_private(&normalize_key(key)) {
        return Outcome::not_found();
    }
    match base.get_ci(key) {
        Some(v) => Outcome::ok(v.clone()),
        None => Outcome::not_found(),
    }
}

/// `set` (spec 01 §6.3).
pub(crate) fn set(base: &Message, req: &Message) -> Message {
    let explicit = req.get("set-mode").and_then(Value::as_str) == Some("explicit");
    let mut out = base.clone();
    let mut changed = false;
    for (k, v) in req.public() {
        if NOT_SET.contains(&k.as_ref()) || v.is_atom("undefined") {
            continue;
        }
        if v.is_atom("unset") {
            changed |= out.remove(k).is_some();
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Message(old)), Value::Message(new)) if !explicit => {
                Value::Message(deep_merge(old, new))
            }
            _ => v.clone(),
        };
        if out.get(k) != Some(&merged) {
            changed = true;
            out.insert_key(k.clone(), merged);
        }
    }
    // A committed message whose content changes loses its commitments. Until the codecs
    // can tell which keys a commitment covers, any change counts.
    if changed && out.contains("commitments") {
        out.remove("commitments");
    }
    out
}

/// How [`matches`] compares two messages (spec 03 §6.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchMode {
    /// The same keys, all values equal.
    #[default]
    Strict,
    /// Only keys present in both are compared.
    OnlyPresent,
    /// Every key of the first is compared with the second's.
    Primary,
}

/// Keys that can be regenerated from the rest of a message, ignored by [`matches`].
const REGENERATED: &[&str] = &["unsigned_id", "content-digest"];
/// Codec artefacts [`matches`] also ignores at the top level.
const ARTEFACTS: &[&str] = &["content-type", "body-keys", "inline-body-key"];

/// Whether two messages carry the same content (spec 03 §6.9, the reference's
/// `hb_message:match`): regenerable keys, codec artefacts and private keys aside;
/// nested messages are compared strictly.
pub fn matches(a: &Message, b: &Message, mode: MatchMode) -> bool {
    let (a, b) = (minimized(a, ARTEFACTS), minimized(b, ARTEFACTS));
    let keys_equal = a.keys().eq(b.keys());
    if mode == MatchMode::Strict && !keys_equal {
        return false;
    }
    a.iter().all(|(k, va)| match (va, b.get(k)) {
        (_, None) => mode == MatchMode::OnlyPresent,
        (Value::Message(ma), Some(Value::Message(mb))) => matches(ma, mb, MatchMode::Strict),
        (va, Some(vb)) => va == vb,
    })
}

fn minimized(msg: &Message, extra: &[&str]) -> Message {
    let mut out = Message::new();
    for (k, v) in msg.iter() {
        if is_private(k) || REGENERATED.contains(&k.as_ref()) || extra.contains(&k.as_ref()) {
            continue;
        }
        let v = match v {
            Value::Message(m) => Value::Message(minimized(m, &[])),
            other => other.clone(),
        };
        out.insert_key(k.clone(), v);
    }
    out
}

/// Recursive merge: nested messages merge, other values replace.
pub fn deep_merge(old: &Message, new: &Message) -> Message {
    let mut out = old.clone();
    for (k, v) in new.iter() {
        let merged = match (out.get(k), v) {
            (Some(Value::Message(a)), Value::Message(b)) => Value::Message(deep_merge(a, b)),
            _ => v.clone(),
        };
        out.insert_key(k.clone(), merged);
    }
    out
}

/// `remove` with `item` or `items` (exact keys).
fn remove(base: &Message, req: &Message) -> Message {
    let mut out = base.clone();
    let mut drop = |v: &Value| {
        if let Some(k) = v.as_str() {
            out.remove(k);
        }
    };
    if let Some(item) = req.get("item") {
        drop(item);
    }
    match req.get("items") {
        Some(Value::List(items)) => items.iter().for_each(&mut drop),
        Some(v @ Value::Binary(_)) => drop(v),
        _ => {}
    }
    out
}

fn commitments_of(base: &Message) -> Option<&Message> {
    base.get("commitments")
        .and_then(Value::as_message)
        .filter(|c| !c.is_empty())
}

/// The `committer` of every commitment that has one.
pub fn committers_of(base: &Message) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    if let Some(c) = commitments_of(base) {
        for (_, com) in c.iter() {
            if let Some(who) = com.as_message().and_then(|m| m.get_str("committer"))
                && !out.iter().any(|o| o == who)
            {
                out.push(who.to_owned());
            }
        }
    }
    out
}

fn selector(v: Option<&Value>) -> Option<Vec<String>> {
    match v {
        Some(Value::List(l)) => Some(
            l.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(v) => v
            .as_str()
            .map(|s| vec![s.to_owned()])
            .or_else(|| v.as_atom().map(|a| vec![a.to_owned()])),
        None => None,
    }
}

/// The commitment IDs a request selects (spec 01 §6.7).
pub fn selected_commitments(base: &Message, req: &Message) -> Result<Vec<String>, ResolveError> {
    let Some(all) = commitments_of(base) else {
        return Ok(vec![]);
    };
    let committers = selector(req.get("committers")).unwrap_or_else(|| vec!["none".into()]);
    let committers_none = committers.len() == 1 && committers[0].eq_ignore_ascii_case("none");
    let commitments = selector(req.get("commitments")).unwrap_or_else(|| {
        vec![if committers_none {
            "all".into()
        } else {
            "none".into()
        }]
    });
    let mut out: Vec<String> = vec![];
    let with_committer = |who: &str| -> Vec<String> {
        all.iter()
            .filter(|(_, c)| c.as_message().and_then(|m| m.get_str("committer")) == Some(who))
            .map(|(k, _)| k.to_string())
            .collect()
    };
    if !committers_none {
        if committers.len() == 1 && committers[0].eq_ignore_ascii_case("all") {
            for who in committers_of(base) {
                out.extend(with_committer(&who));
            }
        } else {
            for who in &committers {
                let found = with_committer(who);
                if found.is_empty() {
                    return Err(ResolveError::BadRequest(format!(
                        "requested committer not found: {who}"
                    )));
                }
                out.extend(found);
            }
        }
    }
    match commitments.as_slice() {
        [one] if one.eq_ignore_ascii_case("none") => {}
        [one] if one.eq_ignore_ascii_case("all") => out.extend(all.keys().map(|k| k.to_string())),
        ids => {
            for id in ids {
                if !all.contains(id) {
                    return Err(ResolveError::BadRequest(format!(
                        "requested commitment not found: {id}"
                    )));
                }
                out.push(id.clone());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|id| seen.insert(id.clone()));
    Ok(out)
}

/// ID\*(M): the ID of a message with all of its commitments (spec 01 §6.5, `id` with
/// `commitments: all`); for an unsigned message, its content ID.
///
/// # Errors
/// The message cannot be encoded, or a commitment ID is not an ID.
pub fn id_all(msg: &Message) -> Result<Id, ResolveError> {
    id(msg, &Message::new())
}

/// `id` (spec 01 §6.5).
fn id(base: &Message, req: &Message) -> Result<Id, ResolveError> {
    let mut selected = selected_commitments(base, req)?;
    match selected.len() {
        0 => Ok(crate::httpsig::message_id(
            &base.clone().without("commitments"),
        )?),
        1 => Id::from_human(selected[0].as_bytes()).ok_or_else(|| {
            ResolveError::BadRequest(format!("commitment ID `{}` is not an ID", selected[0]))
        }),
        _ => {
            selected.sort();
            Ok(Id::sha256(selected.join(", ").as_bytes()))
        }
    }
}

/// The target of `commit`/`verify`/`committed` (spec 01 §6.11).
fn target<'a>(base: &'a Message, req: &'a Message) -> Option<&'a Message> {
    match req.get("target").and_then(Value::as_str) {
        None | Some("self") => Some(base),
        Some(key) => req
            .get(key)
            .or_else(|| req.get("body"))
            .and_then(Value::as_message),
    }
}

fn commitment_device_name(req: &Message, ctx: &Ctx) -> String {
    let node = ctx.node().get();
    let name = req
        .get_str("commitment-device")
        .or_else(|| node.get_str("commitment_device"))
        .unwrap_or("httpsig@1.0");
    match name {
        "structured@1.0" | "flat@1.0" | "json@1.0" => "httpsig@1.0".into(),
        other => other.into(),
    }
}

/// The commitment device `name`, needed for `purpose`.
fn commitment_device(
    ctx: &Ctx,
    name: &str,
    purpose: &str,
) -> Result<Arc<dyn Device>, ResolveError> {
    ctx.registry()
        .get(name)
        .cloned()
        .ok_or_else(|| ResolveError::DeviceNotLoadable {
            name: name.to_owned(),
            reason: format!(
                "the commitment device needed for `{purpose}` is not available on this node"
            ),
        })
}

fn delegate_commitment(
    func: &'static str,
    base: &Message,
    req: &Message,
    ctx: &Ctx,
) -> DeviceResult {
    let target = target(base, req).ok_or_else(|| {
        ResolveError::BadRequest(format!("{func}: the request's target is not a message"))
    })?;
    let name = commitment_device_name(req, ctx);
    let dev = commitment_device(ctx, &name, func)?;
    let f = dev
        .functions()
        .iter()
        .find(|f| **f == func)
        .copied()
        .ok_or_else(|| {
            ResolveError::call(&name, func, "this commitment device does not implement it")
        })?;
    dev.call(Call::Function(f), target, req, ctx)
}

/// `verify` (spec 01 §6.10): only commitments that have a committer are checked; an
/// unsigned message verifies.
fn verify(base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
    let Some(target) = target(base, req) else {
        return Err(ResolveError::BadRequest(
            "verify: the request's target is not a message".into(),
        ));
    };
    let Some(commitments) = commitments_of(target) else {
        return Ok(Outcome::ok(Value::boolean(true)));
    };
    for (cid, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        if c.get("committer").is_none() {
            continue;
        }
        let name = c
            .get_str("commitment-device")
            .unwrap_or("httpsig@1.0")
            .to_owned();
        let dev = commitment_device(ctx, &name, "verify")?;
        let mut with = target.clone();
        for (k, v) in c.iter().filter(|(k, _)| k.as_ref() != "commitment-device") {
            with.insert_key(k.clone(), v.clone());
        }
        let vreq = req.clone().with("commitment", Value::from(cid.to_string()));
        let out = dev.call(Call::Function("verify"), &with, &vreq, ctx)?;
        if !(out.is_ok() && out.value.is_atom("true")) {
            return Ok(Outcome::ok(Value::boolean(false)));
        }
    }
    Ok(Outcome::ok(Value::boolean(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec 03 §6.9's cases.
    #[test]
    fn match_modes() {
        let ab = Message::new().with("a", 1i64).with("b", 2i64);
        let a = Message::new().with("a", 1i64);
        let abc = ab.clone().with("c", 3i64);
        assert!(matches(&ab, &a, MatchMode::OnlyPresent));
        assert!(!matches(&a, &ab, MatchMode::Strict));
        assert!(matches(&ab, &abc, MatchMode::Primary));
        assert!(!matches(&abc, &ab, MatchMode::Primary));
        assert!(matches(&ab, &ab.clone(), MatchMode::Strict));
        assert!(!matches(
            &ab,
            &ab.clone().with("b", 3i64),
            MatchMode::OnlyPresent
        ));
        // Codec artefacts, regenerable and private keys do not count; nested maps are
        // compared strictly.
        let decoded = ab
            .clone()
            .with("body-keys", "\"x\"")
            .with("content-digest", "sha-256=:x:")
            .with("priv", Message::new().with("k", "v"));
        assert!(matches(&ab, &decoded, MatchMode::Strict));
        let nested = |m: &Message| Message::new().with("n", m.clone());
        assert!(!matches(&nested(&ab), &nested(&abc), MatchMode::Primary));
    }
}
