//! # hb-core
//!
//! The heart of hyperbeam-rs: the AO-Core message model ([`Message`], [`Value`]), the
//! codecs that give a message its identity ([`structured`], [`httpsig`], [`sf`]), the
//! HyperPATH parser ([`hyperpath`]) and the resolution engine ([`resolve`]) that applies
//! requests to messages through [`Device`]s.
//!
//! Spec references in the docs (`01 §3.3`) point into `shared/spec/`.

pub mod cache;
pub mod device;
pub mod hyperpath;
pub mod httpsig;
pub mod id;
pub mod resolve;
pub mod sf;
pub mod structured;
pub mod value;

pub use id::Id;
pub use value::{Key, Message, Value};
