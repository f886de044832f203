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
pub mod flat;
pub mod hook;
pub mod httpsig;
pub mod hyperpath;
pub mod id;
pub mod json;
pub mod json_struct;
pub mod message;
pub mod resolve;
pub mod sf;
pub mod structured;
pub mod value;

pub use cache::{Cache, MemoryCache};
pub use device::{
    Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Registry, Status,
};
pub use id::Id;
pub use resolve::{BlockingHook, Ctx, HashpathMode, NodeHandle, ResolveError, ResolveOpts};
pub use value::{Key, Message, Value};
