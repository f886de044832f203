//! Fuzzes the load-time rewrite of legacy exception handling (`hb_wasm_eh`, spec 06
//! §2.9): every module a process names is run through it before wasmtime sees it, and
//! modules are uploaded by anyone. Whatever the bytes: never a panic; and when the
//! input is a valid module (legacy exceptions allowed) that the rewrite accepts, the
//! output is a valid module without the legacy feature, with no legacy opcode left.
#![no_main]

use hb_wasm_eh::{has_legacy_eh, rewrite_legacy_eh};
use libfuzzer_sys::fuzz_target;
use wasmparser::{Validator, WasmFeatures};

fuzz_target!(|data: &[u8]| {
    let _ = has_legacy_eh(data);
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
