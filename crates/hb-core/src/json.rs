//! JSON form of a TABM (the encoding of `json@1.0`, spec 03 §10): an object whose
//! values are strings or nested objects, keys in byte order.

use serde_json::{Map, Value as Json};

use crate::structured::{CodecError, to_tabm};
use crate::value::{Message, Value};

/// Encodes a rich message as JSON text (through its TABM; private keys are dropped).
pub fn to_json(msg: &Message) -> Result<String, CodecError> {
    tabm_to_json_text(&to_tabm(&msg.without_private())?)
}

/// Encodes a TABM as JSON text (private keys are dropped).
pub fn tabm_to_json_text(tabm: &Message) -> Result<String, CodecError> {
    let obj = tabm_to_json(tabm, NonUtf8::Refuse)?;
    serde_json::to_string(&obj).map_err(|e| CodecError::Other(e.to_string()))
}

/// The JSON of a TABM as a node's reply gives it: as [`tabm_to_json_text`], except
/// that
///
/// * a binary inside `commitments` that is not UTF-8 (the raw `owner` and `signature`
///   of an ANS-104 commitment, spec 03 §7.7) is written in base64url, where the codec
///   alone cannot write it (§10) — so that a state holding a process signed as a data
///   item (every process aoconnect spawns) can be a JSON reply;
/// * extra top-level keys whose values are JSON texts are embedded as they are
///   (parsed, so an object stays an object with its keys' own case). A key the TABM
///   has already is left as the TABM gives it.
///
/// # Errors
/// A binary outside `commitments` is not UTF-8, or an embedded value is not JSON.
pub fn reply_json_text(tabm: &Message, embedded: &[(&str, &[u8])]) -> Result<String, CodecError> {
    let mut obj = tabm_to_json(tabm, NonUtf8::InCommitmentsAsBase64url(false))?;
    if let Json::Object(map) = &mut obj {
        for (key, text) in embedded {
            if map.contains_key(*key) {
                continue;
            }
            let value: Json = serde_json::from_slice(text)
                .map_err(|e| CodecError::Other(format!("`{key}` is not JSON: {e}")))?;
            map.insert((*key).to_owned(), value);
        }
    }
    serde_json::to_string(&obj).map_err(|e| CodecError::Other(e.to_string()))
}

/// What becomes of a binary that is not UTF-8.
#[derive(Clone, Copy)]
enum NonUtf8 {
    /// An error (the codec, spec 03 §10).
    Refuse,
    /// base64url inside `commitments` (the flag: inside them already), else an error.
    InCommitmentsAsBase64url(bool),
}

fn tabm_to_json(tabm: &Message, bytes: NonUtf8) -> Result<Json, CodecError> {
    let mut obj = Map::new();
    for (k, v) in tabm.public() {
        let j = match v {
            Value::Binary(b) => match (std::str::from_utf8(b), bytes) {
                (Ok(text), _) => Json::String(text.to_owned()),
                (Err(_), NonUtf8::InCommitmentsAsBase64url(true)) => {
                    Json::String(crate::id::b64url(b))
                }
                (Err(_), _) => {
                    return Err(CodecError::Other(format!(
                        "key `{k}` is not valid UTF-8 and cannot be JSON"
                    )));
                }
            },
            Value::Message(m) => {
                let inner = match bytes {
                    NonUtf8::InCommitmentsAsBase64url(inside) => {
                        NonUtf8::InCommitmentsAsBase64url(inside || k.as_ref() == "commitments")
                    }
                    NonUtf8::Refuse => NonUtf8::Refuse,
                };
                tabm_to_json(m, inner)?
            }
            other => {
                return Err(CodecError::Unencodable(format!(
                    "{k} ({})",
                    other.type_name()
                )));
            }
        };
        obj.insert(k.to_string(), j);
    }
    Ok(Json::Object(obj))
}

/// Decodes JSON text into a TABM: strings stay binaries, objects become messages,
/// numbers, booleans and arrays are kept as their JSON text.
pub fn from_json(text: &[u8]) -> Result<Message, CodecError> {
    let j: Json = serde_json::from_slice(text)
        .map_err(|e| CodecError::Other(format!("invalid JSON: {e}")))?;
    match j {
        Json::Object(o) => Ok(object_to_tabm(&o)),
        _ => Err(CodecError::Other("a JSON message must be an object".into())),
    }
}

fn object_to_tabm(o: &Map<String, Json>) -> Message {
    let mut m = Message::new();
    for (k, v) in o {
        let value = match v {
            Json::String(s) => Value::text(s),
            Json::Object(inner) => Value::Message(object_to_tabm(inner)),
            other => Value::from(other.to_string()),
        };
        m.insert(k, value);
    }
    m
}

/// Plain JSON of a rich message, as `json@1.0`'s `serialize` gives it: integers and
/// floats as numbers, atoms as strings (`true`/`false` as booleans), lists as arrays,
/// nested messages as objects; private keys dropped.
pub fn to_plain_json(msg: &Message) -> Result<String, CodecError> {
    let v = plain_value(&Value::Message(msg.without_private()))?;
    serde_json::to_string(&v).map_err(|e| CodecError::Other(e.to_string()))
}

fn plain_value(v: &Value) -> Result<Json, CodecError> {
    Ok(match v {
        Value::Binary(b) => Json::String(
            std::str::from_utf8(b)
                .map_err(|_| CodecError::Other("a binary that is not UTF-8 cannot be JSON".into()))?
                .to_owned(),
        ),
        Value::Integer(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| CodecError::Other(format!("the float {f} cannot be JSON")))?,
        Value::Atom(a) if a.as_ref() == "true" => Json::Bool(true),
        Value::Atom(a) if a.as_ref() == "false" => Json::Bool(false),
        Value::Atom(a) if a.as_ref() == "null" => Json::Null,
        Value::Atom(a) => Json::String(a.to_string()),
        Value::List(l) => Json::Array(l.iter().map(plain_value).collect::<Result<_, _>>()?),
        Value::Message(m) => {
            let mut obj = Map::new();
            for (k, v) in m.public() {
                obj.insert(k.to_string(), plain_value(v)?);
            }
            Json::Object(obj)
        }
        other => return Err(CodecError::Unencodable(other.type_name().to_owned())),
    })
}

/// Reads plain JSON into a value: objects become messages, arrays lists, strings
/// binaries, integral numbers integers, other numbers floats, booleans and null atoms.
pub fn from_plain_json(text: &[u8]) -> Result<Value, CodecError> {
    let j: Json = serde_json::from_slice(text)
        .map_err(|e| CodecError::Other(format!("invalid JSON: {e}")))?;
    Ok(plain_to_value(&j))
}

fn plain_to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::atom("null"),
        Json::Bool(b) => Value::boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::text(s),
        Json::Array(a) => Value::list(a.iter().map(plain_to_value).collect()),
        Json::Object(o) => {
            let mut m = Message::new();
            for (k, v) in o {
                m.insert(k, plain_to_value(v));
            }
            Value::Message(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabm_json_round_trip() {
        let m = Message::new()
            .with("a", 1i64)
            .with("n", Message::new().with("b", "x"));
        let text = to_json(&m).unwrap();
        assert_eq!(
            text,
            r#"{"a":"1","ao-types":"a=\"integer\"","n":{"b":"x"}}"#
        );
        let back = crate::structured::from_tabm(&from_json(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn embedded_json_keeps_its_shape() {
        let tabm = Message::new().with("a", "1").with("b", "2");
        let text = reply_json_text(
            &tabm,
            &[
                (
                    "raw",
                    br#"{"Output":{"data":"20"},"Messages":[]}"#.as_slice(),
                ),
                ("a", b"\"not this\"".as_slice()),
            ],
        )
        .unwrap();
        assert_eq!(
            text,
            r#"{"a":"1","b":"2","raw":{"Output":{"data":"20"},"Messages":[]}}"#
        );
        assert!(reply_json_text(&tabm, &[("raw", b"{nope".as_slice())]).is_err());
    }

    #[test]
    fn reply_json_writes_commitment_bytes_in_base64url() {
        let commitment = Message::new()
            .with("committer", "abc")
            .with("signature", Value::bin(vec![0xff, 0x00, 0xfe]));
        let tabm = Message::new().with(
            "process",
            Message::new()
                .with("a", "1")
                .with("commitments", Message::new().with("id1", commitment)),
        );
        assert!(
            tabm_to_json_text(&tabm).is_err(),
            "the codec cannot write the bytes"
        );
        assert_eq!(
            reply_json_text(&tabm, &[]).unwrap(),
            r#"{"process":{"a":"1","commitments":{"id1":{"committer":"abc","signature":"_wD-"}}}}"#
        );
        // Outside `commitments`, bytes that are not UTF-8 still cannot be JSON.
        let bad = Message::new().with("x", Value::bin(vec![0xff]));
        assert!(reply_json_text(&bad, &[]).is_err());
    }

    #[test]
    fn plain_json_round_trip() {
        let m = Message::new()
            .with("a", 1i64)
            .with("f", 1.5)
            .with("ok", true)
            .with("l", Value::list(vec![Value::text("x"), Value::Integer(2)]))
            .with("n", Message::new().with("b", "x"));
        let text = to_plain_json(&m).unwrap();
        assert_eq!(
            text,
            r#"{"a":1,"f":1.5,"l":["x",2],"n":{"b":"x"},"ok":true}"#
        );
        assert_eq!(from_plain_json(text.as_bytes()).unwrap(), Value::Message(m));
        assert!(from_plain_json(b"{nope").is_err());
    }
}
