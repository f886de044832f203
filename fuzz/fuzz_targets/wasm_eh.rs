//! Fuzzes the load-time rewrites (`hb_wasm_eh`, spec 06 §2.9): the legacy exception
//! handling rewrite and the memory64 lowering. Every module a process names is run
//! through them before wasmtime sees it, and modules are uploaded by anyone. Whatever
//! the bytes: never a panic; when the input is a valid module (legacy exceptions
//! allowed) that the rewrite accepts, the output is a valid module without the legacy
//! feature, with no legacy opcode left; a lowered module is valid and has a 32-bit
//! memory.
#![no_main]

use hb_wasm_eh::{declares_memory64, has_legacy_eh, lower_memory64, rewrite_legacy_eh};
use libfuzzer_sys::fuzz_target;
use wasmparser::{Validator, WasmFeatures};

fuzz_target!(|data: &[u8]| {
    let _ = has_legacy_eh(data);
    let _ = declares_memory64(data);
    if let Ok(Some(lowered)) = lower_memory64(data) {
        if let Err(e) = Validator::new_with_features(WasmFeatures::all()).validate_all(&lowered) {
            panic!("the lowering gave an invalid module: {e}");
        }
        assert_eq!(declares_memory64(&lowered).ok(), Some(false), "still memory64");
    }
    let Ok(out) = rewrite_legacy_eh(data) else {
        return;
    };
    let legacy = WasmFeatures::default() | WasmFeatures::LEGACY_EXCEPTIONS;
    if Validator::new_with_features(legacy).validate_all(data).is_ok() {
        if let Err(e) = Validator::new_with_features(WasmFeatures::default()).validate_all(&out) {
            panic!("a valid module was rewritten into an invalid one: {e}");
        }
        assert_eq!(has_legacy_eh(&out).ok(), Some(false), "legacy opcodes left");
    }
});
