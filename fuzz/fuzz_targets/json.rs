//! Fuzzes the `json@1.0` decoders (spec 03 §10): the TABM form (`json::from_json`, as
//! `hb message` reads a message and the HTTP layer answers with it) and the plain form
//! (`json::from_plain_json`, the device's `deserialize`). Whatever the bytes: never a
//! panic, and whatever decodes re-encodes and decodes again to the same thing.
#![no_main]

use hb_core::{Message, Value, json, structured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tabm) = json::from_json(data) {
        // A decoded TABM encodes again (its values are strings and objects) ...
        let text = json::tabm_to_json_text(&tabm).expect("a decoded TABM re-encodes");
        let again = json::from_json(text.as_bytes()).expect("re-encoded JSON decodes");
        // Private keys (`priv`, spec 01 §2.4) are never encoded.
        assert_eq!(again, public(&tabm), "TABM JSON round trip");
        // ... and the rich decoding that follows it must not panic.
        if let Ok(rich) = structured::from_tabm(&tabm) {
            if let Ok(text) = json::to_json(&rich) {
                let _ = json::from_json(text.as_bytes()).expect("rich re-encoding decodes");
            }
        }
    }
    if let Ok(Value::Message(m)) = json::from_plain_json(data) {
        if let Ok(text) = json::to_plain_json(&m) {
            let _ = json::from_plain_json(text.as_bytes()).expect("plain re-encoding decodes");
        }
    }
});

/// `m` without private keys at any depth: what the JSON encoder writes.
fn public(m: &Message) -> Message {
    m.public()
        .map(|(k, v)| {
            let v = match v {
                Value::Message(inner) => Value::Message(public(inner)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}
