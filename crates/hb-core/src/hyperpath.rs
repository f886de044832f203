//! HyperPATH: the singleton request grammar (spec 02).
//!
//! OWNER: helper A (parser). Signatures are fixed; bodies to be written.

use thiserror::Error;

use crate::value::{Message, Value};

/// Why a HyperPATH was rejected. Every variant becomes a 400 response.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PathError {
    /// Placeholder until the parser lands.
    #[error("{0}")]
    Invalid(String),
}

/// Parses a singleton (a message whose `path` is a HyperPATH and whose other keys are
/// request parameters) into the message list `[Base, Step1, …]` (spec 02 §3.7).
/// Elements are `Value::Message`, `Value::Binary` (an ID), `Value::As` or
/// `Value::Resolve`.
pub fn from_singleton(singleton: &Message) -> Result<Vec<Value>, PathError> {
    let _ = singleton;
    todo!()
}

/// Parses a bare HyperPATH (a singleton with only `path`).
pub fn parse(path: &str) -> Result<Vec<Value>, PathError> {
    from_singleton(&Message::new().with("path", path))
}

/// The inverse (spec 02 §5): a message list back to a singleton.
pub fn to_singleton(list: &[Value]) -> Message {
    let _ = list;
    todo!()
}
