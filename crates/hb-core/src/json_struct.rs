//! The JSON-struct of a message (spec 04 §2.8): the legacy JSON shape of an AO message
//! (`Id`, `Owner`, `From`, `Tags`, `Target`, `Data`, …) that `application/aos-2`
//! schedules and reads answer, and that `json-iface@1.0` hands to aos modules.

use serde_json::{Map, Value as Json};

use crate::httpsig;
use crate::message::committers_of;
use crate::structured::to_tabm;
use crate::value::{Message, Value};

/// Keys a JSON-struct carries as fields rather than tags.
const STRUCT_FIELDS: [&str; 7] = [
    "id",
    "anchor",
    "owner",
    "data",
    "target",
    "signature",
    "commitments",
];

/// The JSON-struct of a message (spec 04 §2.8, shared with json-iface): `Anchor`,
/// `Data`, `From`, `Id`, `Owner`, `Signature`, `Tags`, `Target`, in that (sorted)
/// order.
///
/// # Errors
/// The message cannot be converted to its type-annotated form or has no ID.
pub fn json_struct(msg: &Message) -> Result<Json, crate::structured::CodecError> {
    let msg = msg.without_private();
    let tabm = to_tabm(&msg)?;
    let text = |k: &str| -> String {
        match tabm.get(k) {
            Some(Value::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    };
    let id = httpsig::message_id(&msg)?.to_human();
    let owner = committers_of(&msg).into_iter().next().unwrap_or_default();
    let from = match tabm.get("from-process") {
        Some(Value::Binary(b)) => human_id(b),
        _ => owner.clone(),
    };
    let signature = match tabm.get("signature") {
        Some(Value::Binary(b)) if b.len() == 512 => crate::id::b64url(b),
        Some(Value::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let target = match tabm.get("target") {
        Some(Value::Binary(b)) => human_id(b),
        _ => String::new(),
    };
    let mut out = Map::new();
    out.insert("Anchor".into(), Json::String(text("anchor")));
    out.insert("Data".into(), Json::String(text("data")));
    out.insert("From".into(), Json::String(from));
    out.insert("Id".into(), Json::String(id));
    out.insert("Owner".into(), Json::String(owner));
    out.insert("Signature".into(), Json::String(signature));
    out.insert("Tags".into(), Json::Array(tags(&msg, &tabm)));
    out.insert("Target".into(), Json::String(target));
    Ok(Json::Object(out))
}

/// A 32-byte native ID in its human form; anything else as text.
fn human_id(b: &[u8]) -> String {
    if b.len() == 32 {
        crate::id::b64url(b)
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// `Tags` of a JSON-struct: the ANS-104 original tags when the message has them,
/// otherwise every other key of the TABM in header case (`block-height` →
/// `Block-Height`).
fn tags(msg: &Message, tabm: &Message) -> Vec<Json> {
    let tag = |name: String, value: String| {
        let mut t = Map::new();
        t.insert("name".into(), Json::String(name));
        t.insert("value".into(), Json::String(value));
        Json::Object(t)
    };
    let original = msg
        .get("commitments")
        .and_then(Value::as_message)
        .and_then(|cs| {
            cs.iter().find_map(|(_, c)| {
                let c = c.as_message()?;
                (c.get_str("commitment-device") == Some("ans104@1.0"))
                    .then(|| c.get("original-tags").and_then(Value::as_message))
                    .flatten()
            })
        });
    if let Some(original) = original {
        let mut numbered: Vec<(u64, &Message)> = original
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_message()?)))
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        return numbered
            .into_iter()
            .map(|(_, t)| {
                let s = |k| value_text(t.get(k));
                tag(s("name"), s("value"))
            })
            .collect();
    }
    tabm.iter()
        .filter(|(k, _)| !STRUCT_FIELDS.contains(&k.as_ref()))
        .filter_map(|(k, v)| match v {
            Value::Binary(b) => Some(tag(header_case(k), String::from_utf8_lossy(b).into_owned())),
            // Nested messages have no tag form.
            _ => None,
        })
        .collect()
}

fn value_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(other) => String::from_utf8_lossy(&other.to_display_bytes()).into_owned(),
        None => String::new(),
    }
}

/// `block-height` → `Block-Height`.
fn header_case(key: &str) -> String {
    key.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
