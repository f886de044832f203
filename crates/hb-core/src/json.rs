//! JSON form of a TABM (the encoding of `json@1.0`, spec 03 §10): an object whose
//! values are strings or nested objects, keys in byte order.

use serde_json::{Map, Value as Json};

use crate::structured::{CodecError, to_tabm};
use crate::value::{Message, Value};

/// Encodes a rich message as JSON text (through its TABM; private keys are dropped).
pub fn to_json(msg: &Message) -> Result<String, CodecError> {
    let tabm = to_tabm(&msg.without_private())?;
    let obj = tabm_to_json(&tabm)?;
    serde_json::to_string(&obj).map_err(|e| CodecError::Other(e.to_string()))
}

fn tabm_to_json(tabm: &Message) -> Result<Json, CodecError> {
    let mut obj = Map::new();
    for (k, v) in tabm.public() {
        let j = match v {
            Value::Binary(b) => Json::String(
                std::str::from_utf8(b)
                    .map_err(|_| {
                        CodecError::Other(format!(
                            "key `{k}` is not valid UTF-8 and cannot be JSON"
                        ))
                    })?
                    .to_owned(),
            ),
            Value::Message(m) => tabm_to_json(m)?,
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
