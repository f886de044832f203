//! # hb-wasm
//!
//! The WebAssembly engine of hyperbeam-rs (spec 06 §2, §2.9): wasmtime with memory64
//! and exceptions, the aos modules' legacy exception opcodes rewritten and their
//! 64-bit memory lowered to a 32-bit one at load time,
//! compiled modules cached in memory and on disk, every import bound, emscripten's
//! `invoke_*` trampolines, per-call fuel (or wall-clock) budgets and a per-instance
//! memory cap; and, on top of it, the AO-Core devices that run WebAssembly processes:
//! [`wasm_64`] (`wasm-64@1.0`), [`wasi`] (`wasi@1.0`), [`json_iface`]
//! (`json-iface@1.0`) and [`genesis_wasm`] (`genesis-wasm@1.0`). The engine layer
//! ([`Engine`], [`Instance`], [`Imports`]) knows nothing about messages; the device
//! modules are where messages meet it.
//!
//! ## A tour
//!
//! * [`Engine`] — one per node. [`Engine::load`] takes module bytes, rewrites legacy
//!   exception handling and lowers a 64-bit memory under 4 GiB to a 32-bit one
//!   ([`eh`]), compiles, and caches by the sha256 of the bytes
//!   (in memory, and under [`EngineConfig::cache_dir`] so that a restart does not
//!   recompile).
//! * [`Module::instantiate`] binds every import: `invoke_*` and
//!   `_emscripten_throw_longjmp` inside the engine, everything else through the
//!   [`Imports`] trait the device layer implements (returning `None` gives the
//!   zero-result stub of spec 06 §2.3).
//! * [`Instance`] — [`Instance::call`] with numeric conversion of the arguments,
//!   memory helpers ([`Instance::read`], [`Instance::write`],
//!   [`Instance::write_string`], [`Instance::read_string`]), snapshots
//!   ([`Instance::snapshot`], [`Instance::restore_memory`], [`Instance::reset`]).
//! * Limits — [`InstanceConfig`]: fuel per call, a memory cap enforced by a
//!   `ResourceLimiter`, and optionally a wall-clock deadline per call. Failures are
//!   [`WasmError::Trap`] with a [`TrapKind`] and the trap text.
//! * [`aos::handle`] — the aos JSON ABI in one call.
//!
//! ## The devices
//!
//! An AO process on the WASM stack is `[wasi@1.0, json-iface@1.0, wasm-64@1.0,
//! multipass@1.0]` with two passes (spec 06 §2.6): WASI mounts itself as the stdlib of
//! the WASI imports and keeps a virtual file system in the state; json-iface writes the
//! message and the process as JSON into the module's memory (pass 1) and turns the
//! JSON answer into `results` (pass 2); wasm-64 owns the instance and makes the call.
//! `genesis-wasm@1.0` runs aoconnect's aos processes (`Module: <ID>`) on that stack.
//!
//! The live instance sits in the state's private area (`priv/wasm/instance`) as an
//! [`wasm_64::InstanceRef`]: the shared instance plus the generation of its memory the
//! state stands for, so that states sharing an instance never see each other's
//! memory. Imports are routed by [`wasm_64::Router`] to the device mounted at
//! `<out>/stdlib/<module>` of the state the call runs on (WASI natively, on the call's
//! memory; other devices through AO-Core resolution). A trap or an exhausted budget
//! rolls the memory back to the checkpoint taken before the slot and becomes the
//! slot's error result, so the process carries on. One [`Engine`] per module-cache
//! directory is shared by every instance of the node ([`wasm_64::engine`]); the node
//! options `wasm_fuel_per_message`, `wasm_memory_limit` and `wasm_cache_dir` set the
//! limits and the on-disk cache.
//!
//! ## Design notes
//!
//! **Legacy exception handling.** Each legacy `try … catch … catch_all … end` becomes
//! an outer `block`, one `block` per clause and a `try_table` whose catch clauses
//! land at the end of their clause's block; branch depths crossing the construct are
//! re-targeted (see [`eh`]). `rethrow` and `delegate` (unused by every fixture) are
//! rejected with an error naming the function. Modules without legacy opcodes are
//! not touched; in the others only the functions with a `try` are re-encoded.
//!
//! **Memory64 lowering** (docs/adr/0007). Wasmtime checks every access to a 64-bit
//! memory in code; a 32-bit one sits in a guarded 4 GiB reservation and needs no
//! check. A module whose one memory is 64-bit and under 4 GiB is compiled with a
//! 32-bit memory: each address goes through `select(wrap(a), 0xffffffff, a < 2³²)`,
//! so addresses of 4 GiB and more still trap as out of bounds. The module's pointers
//! stay 64-bit: the host reads iovecs and `size_t`s with the width the module
//! declares ([`eh::declares_memory64`]).
//!
//! **Module cache.** In memory, keyed by the sha256 of the bytes as given (before the
//! rewrite), least recently used dropped past [`EngineConfig::memory_cache_capacity`];
//! loads are serialised so a module is never compiled twice at once. On disk (when
//! [`EngineConfig::cache_dir`] is set): `Module::serialize` output plus its sha256,
//! written atomically under a directory named after wasmtime's compatibility hash
//! and the rewrite version, loaded through one audited `unsafe` function after the
//! checksum is verified.
//!
//! **Limits.** Fuel by default (deterministic: every node stops the same message at
//! the same instruction), set anew for each call ([`InstanceConfig::fuel_per_call`]);
//! optionally an epoch ticker for a wall-clock deadline per call. Memory and table
//! growth go through a `ResourceLimiter` ([`InstanceConfig::memory_limit`], default
//! 1 GiB): a refused growth makes `memory.grow` return -1, so emscripten's `malloc`
//! returns 0 and Lua raises "not enough memory" — the node is unharmed. After a trap
//! the instance stays usable but holds whatever state the trap left (see
//! [`Instance`]); [`Instance::reset`] goes back to a snapshot.
//!
//! **Emscripten.** `invoke_*` imports are trampolines in the engine (spec 06 §2.3.5):
//! save the shadow stack, call the table entry; if it traps or longjmps, restore the
//! stack, `setThrew(1, 0)` and return zeros. Budget traps (fuel, deadline), import
//! errors and wasm exceptions are never swallowed. `_emscripten_throw_longjmp` is the
//! longjmp they catch.
//!
//! **Determinism.** NaNs are canonicalised; the engine gives modules no clock, no
//! randomness and no environment of its own — all of that is up to the [`Imports`]
//! the device layer supplies.
//!
//! ## Numbers
//!
//! On the 2-core development machine, wasmtime 48, release build (`cargo test -p
//! hb-wasm --release -- --nocapture` and `cargo bench -p hb-wasm --bench aos`):
//! aos-2-pure-xs (554 KB) rewrites in 8 ms and compiles in 230 ms (3–7 s in a debug
//! build, whose Cranelift is unoptimised), loads from the disk cache in 2.5 ms and
//! from memory in 0.3 ms (the sha256 of the bytes); an instance takes 27 µs; one
//! `handle` of `X = X + 1` takes 284 µs (3,500 evaluations/s, fuel on), about 2
//! million fuel; `while true do end` runs out of the default fuel in 0.27 s.
//!
//! ```
//! use hb_wasm::{Engine, EngineConfig, InstanceConfig, Stubs, Value};
//!
//! // (module (func (export "add") (param i32 i32) (result i32)
//! //   local.get 0 local.get 1 i32.add))
//! let wasm = [
//!     0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f,
//!     0x7f, 0x01, 0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, 0x61, 0x64, 0x64,
//!     0x00, 0x00, 0x0a, 0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
//! ];
//! let engine = Engine::new(EngineConfig::default())?;
//! let module = engine.load(&wasm)?;
//! let mut instance = module.instantiate(Stubs, InstanceConfig::default())?;
//! // Integers and floats convert numerically to the parameter types.
//! let out = instance.call("add", &[Value::I64(40), Value::F64(2.0)])?;
//! assert_eq!(out, vec![Value::I32(42)]);
//! # Ok::<(), hb_wasm::WasmError>(())
//! ```

pub mod aos;
pub use hb_wasm_eh as eh;
mod engine;
mod error;
pub mod genesis_wasm;
pub mod imports;
mod instance;
pub mod json_iface;
pub mod wasi;
pub mod wasm_64;

pub use engine::{
    Engine, EngineConfig, ExportKind, INLINE_STACK, LoadSource, Module, run_inline_marked,
    stack_enough_for_wasm,
};
pub use error::{Trap, TrapKind, WasmError};
pub use imports::{
    FuncSig, HostError, ImportFunc, ImportResult, Imports, MemoryView, OutOfBounds, Stubs, Value,
    ValueType,
};
pub use instance::{DEFAULT_FUEL_PER_CALL, Instance, InstanceConfig};
