//! `httpsig@1.0` HTTP encoding of TABMs and the HMAC ("unsigned") ID (spec 03 §4–5.6).
//!
//! OWNER: helper B (codec). Signatures are fixed; bodies to be written.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::id::Id;
use crate::structured::CodecError;
use crate::value::Message;

/// An HTTP message: lower-case header names to values, plus an optional body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpMessage {
    /// Header fields, sorted by name.
    pub headers: BTreeMap<String, Bytes>,
    /// The body, if any.
    pub body: Option<Bytes>,
}

/// TABM -> HTTP message (spec 03 §4.2).
pub fn to_http(tabm: &Message) -> Result<HttpMessage, CodecError> {
    let _ = tabm;
    todo!()
}

/// The HMAC commitment ID of a TABM (spec 03 §5.6).
pub fn hmac_id(tabm: &Message) -> Result<Id, CodecError> {
    let _ = tabm;
    todo!()
}

/// The ID of a rich message as `message@1.0`'s `id` with default parameters computes
/// it (spec 01 §6.5): no commitments -> the HMAC ID of its TABM; one -> that
/// commitment's ID; several -> SHA-256 of the sorted IDs joined by `", "`.
pub fn message_id(msg: &Message) -> Result<Id, CodecError> {
    let _ = msg;
    todo!()
}
