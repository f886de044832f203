//! `structured@1.0`: rich messages <-> TABM, `ao-types`, typed value text (spec 03 §2–3).
//!
//! OWNER: helper B (codec). Signatures are fixed; bodies to be written.

use bytes::Bytes;
use thiserror::Error;

use crate::value::{Message, Value};

/// What can go wrong converting between rich messages and TABM.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CodecError {
    /// A type name that the value decoder does not know (`binary` included).
    #[error("unexpected type `{0}`")]
    UnexpectedType(String),
    /// Text that does not parse as the declared type.
    #[error("cannot decode {ty} value: {reason}")]
    BadValue { ty: String, reason: String },
    /// A value that cannot be encoded.
    #[error("cannot encode value of key `{0}`")]
    Unencodable(String),
    /// Anything else, with a reason.
    #[error("{0}")]
    Other(String),
}

/// Rich message -> TABM (the reference codec's `from`, spec 03 §2.1).
pub fn to_tabm(msg: &Message) -> Result<Message, CodecError> {
    let _ = msg;
    todo!()
}

/// TABM -> rich message (the reference codec's `to`, spec 03 §2.2), including the
/// transaction-default filtering of §2.6.
pub fn from_tabm(tabm: &Message) -> Result<Message, CodecError> {
    let _ = tabm;
    todo!()
}

/// Decodes the text of a typed value (spec 03 §2.5): `integer`, `float`, `atom`, `list`,
/// `map`; type names are case-insensitive.
pub fn decode_typed(ty: &str, text: &[u8]) -> Result<Value, CodecError> {
    let _ = (ty, text);
    todo!()
}

/// Encodes one value as (TABM text, type name); `None` type for plain binaries.
pub fn encode_value(v: &Value) -> Result<(Bytes, Option<&'static str>), CodecError> {
    let _ = v;
    todo!()
}

/// Float text like C's `%.20e` (spec 03 §2.3).
pub fn float_to_text(f: f64) -> String {
    format!("{f:.20e}")
}
