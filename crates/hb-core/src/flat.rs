//! `flat@1.0`: TABMs with nested messages flattened to `/`-joined keys, and their text
//! form of `key: value` lines (spec 03 §8). The HTTP decoder uses [`from_flat`] to
//! rebuild nested messages from multipart part names.

use bytes::Bytes;

use crate::structured::CodecError;
use crate::value::{Key, Message, Value};

/// TABM -> flat: nested messages become `/`-joined keys (empty parts dropped).
pub fn to_flat(tabm: &Message) -> Result<Message, CodecError> {
    let mut out = Message::new();
    flatten_into(&mut out, "", tabm)?;
    Ok(out)
}

fn flatten_into(out: &mut Message, prefix: &str, msg: &Message) -> Result<(), CodecError> {
    for (k, v) in msg.iter() {
        let key = match (prefix.is_empty(), k.is_empty()) {
            (_, true) => prefix.to_owned(),
            (true, false) => k.to_string(),
            (false, false) => format!("{prefix}/{k}"),
        };
        match v {
            Value::Message(m) => flatten_into(out, &key, m)?,
            Value::Binary(_) => out.insert_key(Key::from(key), v.clone()),
            other => {
                return Err(CodecError::Unencodable(format!(
                    "{key} (a {} in a TABM)",
                    other.type_name()
                )));
            }
        }
    }
    Ok(())
}

/// flat -> TABM: each key is split on `/` (empty parts dropped) and the value inserted
/// at that path; messages at the same path merge; a value that collides with another
/// value is an error (`path_collision`).
pub fn from_flat(flat: &Message) -> Result<Message, CodecError> {
    let mut out = Message::new();
    for (k, v) in flat.iter() {
        let parts: Vec<&str> = k.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(CodecError::Other(format!(
                "path_collision: empty key `{k}`"
            )));
        }
        insert_path(&mut out, &parts, v.clone(), k)?;
    }
    Ok(out)
}

fn insert_path(
    msg: &mut Message,
    parts: &[&str],
    value: Value,
    full: &str,
) -> Result<(), CodecError> {
    let collision = || {
        CodecError::Other(format!(
            "path_collision: `{full}` collides with another value"
        ))
    };
    match parts {
        [] => Err(collision()),
        [last] => {
            let merged = match (msg.get(last), value) {
                (None, v) => v,
                (Some(Value::Message(a)), Value::Message(b)) => Value::Message(merge(a, &b)?),
                _ => return Err(collision()),
            };
            msg.insert_key(Key::from(*last), merged);
            Ok(())
        }
        [first, rest @ ..] => {
            let mut inner = match msg.get(first) {
                None => Message::new(),
                Some(Value::Message(m)) => m.clone(),
                Some(_) => return Err(collision()),
            };
            insert_path(&mut inner, rest, value, full)?;
            msg.insert_key(Key::from(*first), Value::Message(inner));
            Ok(())
        }
    }
}

fn merge(a: &Message, b: &Message) -> Result<Message, CodecError> {
    let mut out = a.clone();
    for (k, v) in b.iter() {
        insert_path(&mut out, &[k.as_ref()], v.clone(), k)?;
    }
    Ok(out)
}

/// The text form: one `key: value` line per flat key, in key order.
pub fn serialize(tabm: &Message) -> Result<Bytes, CodecError> {
    let flat = to_flat(tabm)?;
    let mut out = Vec::new();
    for (k, v) in flat.iter() {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes().unwrap_or_default());
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// Reads the text form: lines split on LF, each on `": "`; lines without exactly one
/// separator are skipped.
pub fn deserialize(text: &[u8]) -> Result<Message, CodecError> {
    let mut flat = Message::new();
    for line in text.split(|b| *b == b'\n') {
        let seps = line.windows(2).filter(|w| *w == b": ").count();
        if seps != 1 {
            continue;
        }
        let Some(at) = line.windows(2).position(|w| w == b": ") else {
            continue;
        };
        let key = std::str::from_utf8(&line[..at])
            .map_err(|_| CodecError::Other("a flat key is not UTF-8".into()))?;
        flat.insert_key(
            Key::from(key),
            Value::Binary(Bytes::copy_from_slice(&line[at + 2..])),
        );
    }
    from_flat(&flat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structured::{from_tabm, to_tabm};

    #[test]
    fn spec03_8_flatten_example() {
        let rich = Message::new().with("a", 1i64).with(
            "b",
            Message::new()
                .with("c", "2")
                .with("d", Value::list(vec![Value::Integer(1), Value::Integer(2)])),
        );
        let flat = to_flat(&to_tabm(&rich).unwrap()).unwrap();
        let s = |k: &str| flat.get(k).and_then(Value::as_str).map(str::to_owned);
        assert_eq!(s("a").as_deref(), Some("1"));
        assert_eq!(s("ao-types").as_deref(), Some("a=\"integer\""));
        assert_eq!(s("b/ao-types").as_deref(), Some("d=\"list\""));
        assert_eq!(s("b/c").as_deref(), Some("2"));
        assert_eq!(
            s("b/d").as_deref(),
            Some("\"(ao-type-integer) 1\", \"(ao-type-integer) 2\"")
        );
        assert_eq!(from_tabm(&from_flat(&flat).unwrap()).unwrap(), rich);
    }

    #[test]
    fn spec03_8_text_example() {
        let rich = Message::new()
            .with("a", 1i64)
            .with("b", Message::new().with("c", "2"));
        let text = serialize(&to_tabm(&rich).unwrap()).unwrap();
        assert_eq!(&text[..], b"a: 1\nao-types: a=\"integer\"\nb/c: 2\n");
        assert_eq!(from_tabm(&deserialize(&text).unwrap()).unwrap(), rich);
    }

    #[test]
    fn collisions_are_errors() {
        let flat = Message::new().with("a", "1").with("a/b", "2");
        assert!(from_flat(&flat).is_err());
        let ok = Message::new().with("a/b", "1").with("a/c", "2");
        let t = from_flat(&ok).unwrap();
        assert_eq!(
            t.get("a").and_then(Value::as_message).map(Message::len),
            Some(2)
        );
    }

    #[test]
    fn odd_lines_are_skipped() {
        let m = deserialize(b"a: 1\nno separator\nb: x: y\n\n").unwrap();
        assert_eq!(m, Message::new().with("a", "1"));
    }
}
