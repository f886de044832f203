//! # hb-devices
//!
//! The devices a hyperbeam-rs node preloads, one file per device, named after it
//! (`meta.rs` is `meta@1.0`). [`preloaded`] is the one table that lists them; adding a
//! device is one file plus one line there. `message@1.0` lives in hb-core, because the
//! engine falls back to it.

use std::sync::Arc;

use hb_core::{Device, Registry};

pub mod flat;
pub mod json;
pub mod meta;
pub mod test_device;

/// The preloaded devices of this node (spec 05 §1.7), in one table.
pub fn preloaded() -> Vec<Arc<dyn Device>> {
    vec![
        Arc::new(hb_core::message::MessageDevice),
        Arc::new(flat::Flat),
        Arc::new(json::Json),
        Arc::new(meta::Meta),
        Arc::new(test_device::TestDevice),
    ]
}

/// A registry holding every preloaded device.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    for d in preloaded() {
        r.register(d);
    }
    r
}
