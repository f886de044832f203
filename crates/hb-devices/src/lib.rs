//! # hb-devices
//!
//! The devices a hyperbeam-rs node preloads, one file per device, named after it
//! (`meta.rs` is `meta@1.0`). [`preloaded`] is the one table that lists them; adding a
//! device is one file plus one line there. `message@1.0` lives in hb-core, because the
//! engine falls back to it; `httpsig@1.0`'s commitments live in hb-codec with the keys
//! they need.

use std::sync::Arc;

use hb_codec::Wallet;
use hb_codec::httpsig_commit::HttpsigDevice;
use hb_core::{Device, Registry};

pub mod cache;
pub mod cron;
pub mod dedup;
pub mod flat;
pub mod json;
pub mod local_name;
pub mod lua;
pub mod meta;
pub mod multipass;
pub mod node_process;
pub mod patch;
pub mod process;
pub mod push;
pub mod relay;
pub mod router;
pub mod scheduler;
pub mod stack;
pub mod structured;
pub mod test_device;
pub mod upload;

/// The WebAssembly devices live beside their engine, in hb-wasm.
pub use hb_wasm::{genesis_wasm, json_iface, wasi, wasm_64};

/// The preloaded devices of a node whose wallet is `wallet` (spec 05 §1.7), in one
/// table. Without a wallet the node can verify commitments but not make them.
pub fn preloaded(wallet: Option<Arc<Wallet>>) -> Vec<Arc<dyn Device>> {
    vec![
        Arc::new(hb_core::message::MessageDevice),
        Arc::new(hb_codec::ans104::Ans104Device {
            wallet: wallet.clone(),
        }),
        Arc::new(cache::CacheDevice),
        Arc::new(cron::Cron::default()),
        Arc::new(dedup::Dedup),
        Arc::new(flat::Flat),
        Arc::new(genesis_wasm::GenesisWasm),
        Arc::new(HttpsigDevice {
            wallet: wallet.clone(),
        }),
        Arc::new(json::Json),
        Arc::new(json_iface::JsonIface),
        Arc::new(local_name::LocalName),
        Arc::new(lua::Lua),
        Arc::new(meta::Meta),
        Arc::new(multipass::Multipass),
        Arc::new(node_process::NodeProcess::new(wallet.clone())),
        Arc::new(patch::Patch),
        Arc::new(process::Process::default()),
        Arc::new(push::Push {
            wallet: wallet.clone(),
        }),
        Arc::new(relay::Relay {
            wallet: wallet.clone(),
        }),
        Arc::new(router::Router::new(wallet.clone())),
        Arc::new(scheduler::Scheduler::new(wallet.clone())),
        Arc::new(stack::Stack),
        Arc::new(structured::Structured),
        Arc::new(test_device::TestDevice),
        Arc::new(upload::Upload { wallet }),
        Arc::new(wasi::Wasi),
        Arc::new(wasm_64::Wasm64),
    ]
}

/// A registry holding every preloaded device, for a node without a wallet.
pub fn registry() -> Registry {
    registry_with_wallet(None)
}

/// A registry holding every preloaded device, signing with `wallet`.
pub fn registry_with_wallet(wallet: Option<Arc<Wallet>>) -> Registry {
    let mut r = Registry::new();
    for d in preloaded(wallet.clone()) {
        r.register(d);
    }
    r
}
