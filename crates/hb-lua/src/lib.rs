//! # hb-lua
//!
//! The engine under the `lua@5.3a` device: PUC Lua 5.3.6 compiled to wasm32-wasi at
//! build time (see `build.rs`) and run on wasmtime, so that a Lua process is
//!
//! * **deterministic** — the same calls give byte-identical results, `pairs()` order
//!   included, on every node and every run: heap addresses inside wasm are fixed by the
//!   module and the allocation history, the string-hash seed is a constant, the clocks
//!   and `math.random`'s seed are set by the host, NaNs are canonicalised;
//! * **snapshot-able** — [`Lua::snapshot`] is the linear memory plus the stack pointer;
//!   [`LuaEngine::restore`] gives an instance that behaves identically, in this process
//!   or another;
//! * **metered** — each call gets a fuel budget; an endless loop stops with
//!   [`LuaError::Trap`] (kind [`TrapKind::OutOfFuel`]) instead of hanging the node;
//! * **sandboxed** — a memory cap (Lua sees "not enough memory" and carries on), no
//!   files, no network, no processes, no environment.
//!
//! The design, its alternatives and its numbers are in `docs/adr/0005-lua-on-wasm.md`
//! and `/work/shared/spec/08-lua-wasm.md`.
//!
//! ## A tour
//!
//! ```
//! use hb_lua::{LuaConfig, LuaEngine, LuaValue, LuaTable};
//!
//! let engine = LuaEngine::standalone()?;              // compiles the module (cached)
//! let mut lua = engine.create(LuaConfig::default())?;  // luaL_newstate + libraries
//! lua.load("counter", "n = 0; function bump(t) n = n + t.by; return {n = n} end")?;
//! let out = lua.call("bump", &[LuaTable::new().with("by", 2).into()])?;
//! assert_eq!(out, vec![LuaValue::Table(LuaTable::new().with("n", 2))]);
//! assert_eq!(lua.eval("n * 10")?, vec![LuaValue::Integer(20)]);
//!
//! let snap = lua.snapshot()?;                          // bytes: store them anywhere
//! let mut copy = engine.restore(LuaConfig::default(), &snap)?;
//! assert_eq!(copy.eval("n")?, vec![LuaValue::Integer(2)]);
//! # Ok::<(), hb_lua::LuaError>(())
//! ```
//!
//! ## The guest
//!
//! Lua's standard libraries, with these changes (all in `c/glue.c`):
//!
//! * `print` and `io.write` append to the instance's output ([`Lua::take_output`]); `io`
//!   has nothing else;
//! * `os.time`/`os.date` read the host's clock ([`Lua::set_time`], default 0),
//!   `os.clock` the host's CPU clock ([`Lua::set_clock`], default 0); `os.getenv`
//!   returns nil; `os.execute`, `os.exit`, `os.remove`, `os.rename`, `os.tmpname`,
//!   `dofile`, `loadfile` and `package.loadlib` raise "… is not available";
//! * `load` only accepts text chunks (binary chunks could corrupt the VM);
//! * `require` finds modules in `package.preload` / `package.loaded` only;
//! * `math.random` is libc's `rand`, seeded by the host ([`Lua::set_random_seed`]) or by
//!   `math.randomseed`; `table.sort` never randomises its pivot;
//! * `_hb.call(...)` calls the host ([`Lua::set_host_call`]).
//!
//! ## Calls that do not finish
//!
//! A Lua error (including "not enough memory") is an ordinary result: the instance is
//! consistent and keeps working. A *trap* — fuel exhausted, a wasm trap, a host callback
//! aborting — interrupts C code in the middle of Lua's work, so the Lua state cannot be
//! trusted afterwards. The instance therefore **rolls back to its checkpoint**: the last
//! [`Lua::snapshot`] or [`Lua::restore`], or the freshly created state
//! ([`LuaConfig::checkpoint_on_create`], on by default). The call returns
//! [`LuaError::Trap`] with `rolled_back: true`, and the next call runs on the
//! checkpoint's state. Without a checkpoint the instance refuses further calls
//! ([`LuaError::Poisoned`]) until restored.
//!
//! ## Stack depth
//!
//! Lua limits nested C calls to 200 levels and raises "C stack overflow" (a Lua error,
//! deterministic) past them. Wasm runs on the calling thread's native stack under
//! wasmtime's `max_wasm_stack` (hb-wasm's default 1 MiB), whose use depends on the
//! build and the CPU, so Lua's limit must fire first. It does in release builds: each
//! `pcall` level is a round trip through the host (`invoke_vii`), and 200 of them fit.
//! In a debug build the host frames are several times larger and about 150 nested
//! `pcall`s exhaust the wasm stack (a [`TrapKind::StackOverflow`] trap, rolled back).
//! Call into Lua from a thread with a stack well above `max_wasm_stack` (Rust's spawned
//! threads have 2 MiB).

mod error;
mod host;
mod snapshot;
pub mod value;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{Global, InstancePre, Linker, Memory, Store, StoreLimitsBuilder, TypedFunc, Val};

pub use error::{HostCallError, LuaError, TrapKind};
pub use host::{HOST_CALL_FUEL, HostCall, NoHost};
pub use snapshot::Snapshot;
pub use value::{LuaTable, LuaValue};

use host::HostState;

/// The engine module: Lua 5.3.6 and the glue, built for wasm32-wasi by `build.rs`.
pub const ENGINE_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lua.wasm"));

/// The expected sha256 of [`ENGINE_WASM`] (hex). The module is part of the
/// determinism contract — `pairs()` orders, fuel counts and snapshots belong to it —
/// so a test fails when a toolchain or source change alters it.
pub const ENGINE_SHA256: &str = "aeb657df1c8b5dc995b8dc0f4a7dc40c941dacd3e7ba6dcc7b8c77893431f875";

/// Fuel per call by default: about 70 ms of compute-bound Lua on the development
/// machine (wasmtime charges about one unit per wasm instruction).
pub const DEFAULT_FUEL_PER_CALL: u64 = 1_000_000_000;

/// Limits of one instance.
#[derive(Debug, Clone)]
pub struct LuaConfig {
    /// Fuel for each call (load, call, eval, creation). Default
    /// [`DEFAULT_FUEL_PER_CALL`].
    pub fuel_per_call: u64,
    /// Largest linear memory, in bytes. When Lua needs more, it raises "not enough
    /// memory" ([`LuaError::Memory`]). Default 256 MiB.
    pub memory_limit: usize,
    /// Largest output ([`Lua::take_output`]) kept between two takes; `print` past it
    /// raises "output limit exceeded". Default 16 MiB.
    pub output_limit: usize,
    /// Keep the freshly created (or restored) state as the checkpoint a trap rolls
    /// back to. Costs one snapshot at creation (about 110 KB and 20 µs for a fresh
    /// state). Default on.
    pub checkpoint_on_create: bool,
}

impl Default for LuaConfig {
    fn default() -> Self {
        LuaConfig {
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            memory_limit: 256 << 20,
            output_limit: 16 << 20,
            checkpoint_on_create: true,
        }
    }
}

/// The compiled engine module, ready to instantiate. Cheap to clone (shared); one per
/// node is enough.
#[derive(Clone)]
pub struct LuaEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: hb_wasm::Engine,
    pre: InstancePre<HostState>,
    sha256: [u8; 32],
    /// Byte offsets of the 4 KiB chunks that are not zero in a fresh instance (the data
    /// segments): all a restore has to clear besides writing the snapshot's chunks.
    initial_chunks: Vec<usize>,
}

impl std::fmt::Debug for LuaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaEngine")
            .field("module_sha256", &hex(&self.inner.sha256))
            .finish_non_exhaustive()
    }
}

impl LuaEngine {
    /// Loads the engine module into `engine` (compiled once and cached there, in
    /// memory and in its cache directory) and binds its imports. The engine must meter
    /// fuel ([`hb_wasm::EngineConfig::fuel`]).
    pub fn new(engine: &hb_wasm::Engine) -> Result<Self, LuaError> {
        if !engine.fuel_enabled() {
            return Err(LuaError::Engine(
                "the wasm engine must meter fuel (EngineConfig::fuel)".into(),
            ));
        }
        let module = engine
            .load(ENGINE_WASM)
            .map_err(|e| LuaError::Engine(e.to_string()))?;
        let mut linker = Linker::new(engine.wasmtime());
        host::link(&mut linker).map_err(|e| LuaError::Engine(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(module.wasmtime())
            .map_err(|e| LuaError::Engine(format!("{e:#}")))?;
        // Which chunks of a fresh memory hold data segments.
        let initial_chunks = {
            let mut store = Store::new(
                engine.wasmtime(),
                HostState::new(StoreLimitsBuilder::new().build(), 0),
            );
            store.set_fuel(u64::MAX).map_err(engine_err)?;
            let instance = pre.instantiate(&mut store).map_err(engine_err)?;
            let memory = instance
                .get_memory(&mut store, "memory")
                .ok_or_else(|| LuaError::Engine("the engine module has no memory".into()))?;
            memory
                .data(&store)
                .chunks(snapshot::CHUNK)
                .enumerate()
                .filter(|(_, c)| c.iter().any(|&b| b != 0))
                .map(|(i, _)| i * snapshot::CHUNK)
                .collect()
        };
        Ok(LuaEngine {
            inner: Arc::new(EngineInner {
                engine: engine.clone(),
                pre,
                sha256: Sha256::digest(ENGINE_WASM).into(),
                initial_chunks,
            }),
        })
    }

    /// [`LuaEngine::new`] on a new wasm engine with the default configuration.
    pub fn standalone() -> Result<Self, LuaError> {
        let engine = hb_wasm::Engine::new(hb_wasm::EngineConfig::default())
            .map_err(|e| LuaError::Engine(e.to_string()))?;
        LuaEngine::new(&engine)
    }

    /// The wasm engine underneath.
    pub fn wasm_engine(&self) -> &hb_wasm::Engine {
        &self.inner.engine
    }

    /// The sha256 of [`ENGINE_WASM`].
    pub fn module_sha256(&self) -> [u8; 32] {
        self.inner.sha256
    }

    /// A fresh Lua state with the standard libraries (see the crate docs).
    pub fn create(&self, config: LuaConfig) -> Result<Lua, LuaError> {
        let mut lua = Lua::instantiate(self.clone(), config, None)?;
        let init = |lua: &mut Lua| -> wasmtime::Result<i32> {
            let start: TypedFunc<(), ()> =
                lua.instance.get_typed_func(&mut lua.store, "_initialize")?;
            start.call(&mut lua.store, ())?;
            let init: TypedFunc<(), i32> =
                lua.instance.get_typed_func(&mut lua.store, "hb_init")?;
            init.call(&mut lua.store, ())
        };
        match init(&mut lua) {
            Ok(0) => {}
            Ok(code) => {
                return Err(LuaError::Engine(format!(
                    "creating the Lua state failed (hb_init returned {code}; memory limit too low?)"
                )));
            }
            Err(e) => return Err(LuaError::Engine(format!("{e:#}"))),
        }
        if lua.config.checkpoint_on_create {
            lua.snapshot()?;
        }
        Ok(lua)
    }

    /// An instance restored from `snapshot`, which becomes its checkpoint. Fails when
    /// the snapshot was taken with another engine module or exceeds the memory limit.
    pub fn restore(&self, config: LuaConfig, snapshot: &Snapshot) -> Result<Lua, LuaError> {
        Lua::instantiate(self.clone(), config, Some(snapshot))
    }
}

#[derive(Clone)]
struct Exports {
    input: TypedFunc<u32, u32>,
    load: TypedFunc<u32, u32>,
    call: TypedFunc<u32, u32>,
    eval: TypedFunc<u32, u32>,
    seed: TypedFunc<u32, ()>,
    gc_kb: TypedFunc<(), i32>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Load,
    Call,
    Eval,
}

/// A live Lua state in its own wasm instance. `Send`, not `Sync`: one caller at a time.
pub struct Lua {
    engine: LuaEngine,
    config: LuaConfig,
    store: Store<HostState>,
    instance: wasmtime::Instance,
    memory: Memory,
    stack_pointer: Global,
    exports: Exports,
    checkpoint: Option<Snapshot>,
    poisoned: bool,
    last_fuel: u64,
}

impl std::fmt::Debug for Lua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lua")
            .field("config", &self.config)
            .field("memory_size", &self.memory_size())
            .field("checkpoint", &self.checkpoint.is_some())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn engine_err(e: wasmtime::Error) -> LuaError {
    LuaError::Engine(format!("{e:#}"))
}

impl Lua {
    /// A new wasm instance, fresh (not initialised) or restored from `snapshot`.
    fn instantiate(
        engine: LuaEngine,
        config: LuaConfig,
        snapshot: Option<&Snapshot>,
    ) -> Result<Lua, LuaError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(config.memory_limit)
            .table_elements(100_000)
            .instances(1)
            .build();
        let state = HostState::new(limits, config.output_limit);
        Lua::instantiate_with(engine, config, snapshot, state)
    }

    fn instantiate_with(
        engine: LuaEngine,
        config: LuaConfig,
        snapshot: Option<&Snapshot>,
        state: HostState,
    ) -> Result<Lua, LuaError> {
        if let Some(s) = snapshot {
            if s.module_sha256() != engine.inner.sha256 {
                return Err(LuaError::Snapshot(format!(
                    "taken with engine module {}, this is {}",
                    hex(&s.module_sha256()[..8]),
                    hex(&engine.inner.sha256[..8])
                )));
            }
            if s.memory_size() > config.memory_limit as u64 {
                return Err(LuaError::Snapshot(format!(
                    "its memory ({} bytes) exceeds the memory limit ({} bytes)",
                    s.memory_size(),
                    config.memory_limit
                )));
            }
        }
        let mut store = Store::new(engine.inner.engine.wasmtime(), state);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(config.fuel_per_call).map_err(engine_err)?;
        // Fuel is the deterministic limit; an epoch deadline (if the node's engine has
        // one) is pushed out of reach.
        store.set_epoch_deadline(1 << 40);
        let instance = engine
            .inner
            .pre
            .instantiate(&mut store)
            .map_err(engine_err)?;
        let missing = |what: &str| LuaError::Engine(format!("the engine module has no {what}"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory"))?;
        let table = instance
            .get_table(&mut store, "__indirect_function_table")
            .ok_or_else(|| missing("function table"))?;
        let stack_pointer = instance
            .get_global(&mut store, "__stack_pointer")
            .ok_or_else(|| missing("__stack_pointer"))?;
        let data = store.data_mut();
        data.memory = Some(memory);
        data.table = Some(table);
        data.stack_pointer = Some(stack_pointer);
        let exports = Exports {
            input: instance
                .get_typed_func(&mut store, "hb_input")
                .map_err(engine_err)?,
            load: instance
                .get_typed_func(&mut store, "hb_load")
                .map_err(engine_err)?,
            call: instance
                .get_typed_func(&mut store, "hb_call")
                .map_err(engine_err)?,
            eval: instance
                .get_typed_func(&mut store, "hb_eval")
                .map_err(engine_err)?,
            seed: instance
                .get_typed_func(&mut store, "hb_seed")
                .map_err(engine_err)?,
            gc_kb: instance
                .get_typed_func(&mut store, "hb_gc_kb")
                .map_err(engine_err)?,
        };
        let mut lua = Lua {
            engine,
            config,
            store,
            instance,
            memory,
            stack_pointer,
            exports,
            checkpoint: None,
            poisoned: false,
            last_fuel: 0,
        };
        if let Some(s) = snapshot {
            lua.write_snapshot(s)?;
            lua.checkpoint = Some(s.clone());
        }
        Ok(lua)
    }

    /// Writes `s` into this instance's memory, which must be fresh (just instantiated).
    fn write_snapshot(&mut self, s: &Snapshot) -> Result<(), LuaError> {
        let size = self.memory.data_size(&self.store) as u64;
        let wanted = s.memory_size();
        if wanted > size {
            let pages = (wanted - size).div_ceil(65536);
            self.memory
                .grow(&mut self.store, pages)
                .map_err(|e| LuaError::Snapshot(format!("cannot grow memory: {e:#}")))?;
        }
        let data = self.memory.data_mut(&mut self.store);
        if data.len() as u64 != wanted {
            return Err(LuaError::Snapshot(format!(
                "memory is {} bytes after growing, the snapshot has {wanted}",
                data.len()
            )));
        }
        // The memory is fresh: zero but for the data segments. Clearing just those and
        // writing the stored chunks touches only the pages that matter.
        for &offset in &self.engine.inner.initial_chunks {
            if let Some(chunk) = data.get_mut(offset..offset + snapshot::CHUNK) {
                chunk.fill(0);
            }
        }
        for (offset, bytes) in s.chunks() {
            data[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        self.stack_pointer
            .set(&mut self.store, Val::I32(s.stack_pointer() as i32))
            .map_err(|e| LuaError::Snapshot(format!("{e:#}")))
    }

    /// The engine this instance runs on.
    pub fn engine(&self) -> &LuaEngine {
        &self.engine
    }

    /// The instance's limits.
    pub fn config(&self) -> &LuaConfig {
        &self.config
    }

    /// Loads `source` (Lua text; binary chunks are refused) as a chunk named `name`
    /// and runs it; returns the chunk's return values.
    pub fn load(
        &mut self,
        name: &str,
        source: impl AsRef<[u8]>,
    ) -> Result<Vec<LuaValue>, LuaError> {
        let source = source.as_ref();
        let chunk_name = format!("={name}");
        let mut req = Vec::with_capacity(4 + chunk_name.len() + source.len());
        req.extend_from_slice(&(chunk_name.len() as u32).to_le_bytes());
        req.extend_from_slice(chunk_name.as_bytes());
        req.extend_from_slice(source);
        self.run(Op::Load, &req)
    }

    /// Calls the global function `function` with `args`; returns its results.
    pub fn call(&mut self, function: &str, args: &[LuaValue]) -> Result<Vec<LuaValue>, LuaError> {
        if function.as_bytes().contains(&0) {
            return Err(LuaError::BadRequest("function name contains NUL".into()));
        }
        let mut req = Vec::with_capacity(64);
        req.extend_from_slice(&(function.len() as u32).to_le_bytes());
        req.extend_from_slice(function.as_bytes());
        value::encode_list(args, &mut req).map_err(|e| LuaError::BadRequest(e.to_string()))?;
        self.run(Op::Call, &req)
    }

    /// Runs `source` like a REPL line: as `return <source>` when that compiles (an
    /// expression), else as a chunk. Chunk name `eval`.
    pub fn eval(&mut self, source: impl AsRef<[u8]>) -> Result<Vec<LuaValue>, LuaError> {
        self.run(Op::Eval, source.as_ref())
    }

    fn run(&mut self, op: Op, request: &[u8]) -> Result<Vec<LuaValue>, LuaError> {
        if self.poisoned {
            return Err(LuaError::Poisoned);
        }
        let len = u32::try_from(request.len())
            .ok()
            .filter(|&n| n < u32::MAX / 2)
            .ok_or_else(|| LuaError::BadRequest("request larger than 2 GiB".into()))?;
        self.store
            .set_fuel(self.config.fuel_per_call)
            .map_err(engine_err)?;
        let outcome = self.run_inner(op, request, len);
        self.last_fuel = self
            .config
            .fuel_per_call
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        match outcome {
            Ok(result) => result,
            Err(e) => Err(self.trapped(e)),
        }
    }

    /// The wasm side of a request. Outer error: a trap; inner: the call's result.
    fn run_inner(
        &mut self,
        op: Op,
        request: &[u8],
        len: u32,
    ) -> wasmtime::Result<Result<Vec<LuaValue>, LuaError>> {
        let ptr = self.exports.input.call(&mut self.store, len)?;
        if ptr == 0 {
            return Ok(Err(LuaError::Memory(
                "not enough memory for the request".into(),
            )));
        }
        if !host::write_bytes(self.memory.data_mut(&mut self.store), ptr, request) {
            return Ok(Err(LuaError::Protocol(
                "request buffer out of bounds".into(),
            )));
        }
        let func = match op {
            Op::Load => &self.exports.load,
            Op::Call => &self.exports.call,
            Op::Eval => &self.exports.eval,
        };
        let result = func.clone().call(&mut self.store, len)?;
        let data = self.memory.data(&self.store);
        let Some(header) = host::slice(data, result, 12) else {
            return Ok(Err(LuaError::Protocol(
                "result header out of bounds".into(),
            )));
        };
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (status, ptr, n) = (word(0), word(4), word(8));
        let Some(payload) = host::slice(data, ptr, n) else {
            return Ok(Err(LuaError::Protocol(
                "result payload out of bounds".into(),
            )));
        };
        Ok(parse_result(status, payload))
    }

    /// After a trap: roll back to the checkpoint, or poison the instance.
    fn trapped(&mut self, e: wasmtime::Error) -> LuaError {
        let (kind, message) = classify(&e);
        tracing::debug!(?kind, %message, "Lua call trapped");
        let rolled_back = match self.checkpoint.clone() {
            Some(checkpoint) => match self.rebuild(&checkpoint) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot roll the Lua instance back");
                    self.poisoned = true;
                    false
                }
            },
            None => {
                self.poisoned = true;
                false
            }
        };
        LuaError::Trap {
            kind,
            message,
            rolled_back,
        }
    }

    /// Replaces the wasm instance with a fresh one restored from `snapshot`, keeping
    /// the host-side settings (clocks, output, callback).
    fn rebuild(&mut self, snapshot: &Snapshot) -> Result<(), LuaError> {
        let old = self.store.data_mut();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit)
            .table_elements(100_000)
            .instances(1)
            .build();
        let mut state = HostState::new(limits, self.config.output_limit);
        state.output = std::mem::take(&mut old.output);
        state.time_ns = old.time_ns;
        state.clock_ns = old.clock_ns;
        state.host = std::mem::replace(&mut old.host, Box::new(NoHost));
        match Lua::instantiate_with(
            self.engine.clone(),
            self.config.clone(),
            Some(snapshot),
            state,
        ) {
            Ok(fresh) => {
                *self = fresh;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The whole state as a [`Snapshot`]; it also becomes the checkpoint a trap rolls
    /// back to. Fails on a poisoned instance.
    ///
    /// When nothing else holds the previous checkpoint (drop your copies first), its
    /// bytes are updated in place: only the 4 KiB chunks that changed are copied and
    /// nothing is allocated, so a checkpoint before every call stays cheap.
    pub fn snapshot(&mut self) -> Result<Snapshot, LuaError> {
        if self.poisoned {
            return Err(LuaError::Poisoned);
        }
        let sp = host::get_sp(&self.stack_pointer.get(&mut self.store));
        let memory = self.memory.data(&self.store);
        let sha256 = &self.engine.inner.sha256;
        // The previous checkpoint's bytes are reused when nothing else holds them: a
        // checkpoint before every call then copies only the chunks that changed.
        let snap = match self.checkpoint.take() {
            Some(previous) => Snapshot::recapture(previous, sha256, sp, memory),
            None => Snapshot::capture(sha256, sp, memory),
        };
        self.checkpoint = Some(snap.clone());
        Ok(snap)
    }

    /// Replaces the state with `snapshot` (in a fresh wasm instance), which becomes the
    /// checkpoint. Host-side settings (clocks, output, callback) are kept. Clears a
    /// poisoned state.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), LuaError> {
        self.rebuild(snapshot)
    }

    /// Whether a trap rolls back to a checkpoint.
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// Forgets the checkpoint (a trap then poisons the instance).
    pub fn clear_checkpoint(&mut self) {
        self.checkpoint = None;
    }

    /// Whether the instance refuses calls after a trap without checkpoint.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Sets the callback behind `_hb.call(...)`.
    pub fn set_host_call(&mut self, host: impl HostCall) {
        self.store.data_mut().host = Box::new(host);
    }

    /// Sets the realtime clock (`os.time()`, `os.date()`), in nanoseconds since the Unix
    /// epoch; e.g. the message's timestamp. Default 0.
    pub fn set_time(&mut self, unix_nanos: u64) {
        self.store.data_mut().time_ns = unix_nanos;
    }

    /// Sets the CPU clock `os.clock()` reports, in nanoseconds. Default 0.
    pub fn set_clock(&mut self, nanos: u64) {
        self.store.data_mut().clock_ns = nanos;
    }

    /// Seeds `math.random` (libc `srand`). The generator's state lives in the
    /// instance's memory, so it is part of snapshots.
    pub fn set_random_seed(&mut self, seed: u32) -> Result<(), LuaError> {
        if self.poisoned {
            return Err(LuaError::Poisoned);
        }
        self.store
            .set_fuel(self.config.fuel_per_call)
            .map_err(engine_err)?;
        match self.exports.seed.call(&mut self.store, seed) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.trapped(e)),
        }
    }

    /// The output written by `print`/`io.write` since the last take, and clears it.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.store.data_mut().output)
    }

    /// Fuel the last call used (including the host-call charges).
    pub fn fuel_used(&self) -> u64 {
        self.last_fuel
    }

    /// Size of the linear memory in bytes (it never shrinks).
    pub fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Lua's own heap size (`collectgarbage("count")`) in KiB.
    pub fn lua_memory_kb(&mut self) -> Result<u32, LuaError> {
        if self.poisoned {
            return Err(LuaError::Poisoned);
        }
        self.store
            .set_fuel(self.config.fuel_per_call)
            .map_err(engine_err)?;
        match self.exports.gc_kb.call(&mut self.store, ()) {
            Ok(kb) => Ok(kb.max(0) as u32),
            Err(e) => Err(self.trapped(e)),
        }
    }
}

/// A result status and payload (see `c/glue.c`) as a Rust result.
fn parse_result(status: u32, payload: &[u8]) -> Result<Vec<LuaValue>, LuaError> {
    let values = match value::decode_list(payload) {
        Ok(v) => v,
        Err(e) if status == 0 => return Err(LuaError::Protocol(e.to_string())),
        // An error whose payload could not even be allocated arrives empty.
        Err(_) => Vec::new(),
    };
    let text = |v: Option<&LuaValue>| match v {
        Some(LuaValue::String(s)) => String::from_utf8_lossy(s).into_owned(),
        Some(LuaValue::Integer(i)) => i.to_string(),
        Some(LuaValue::Float(f)) => format!("{f:?}"),
        Some(other) => format!("(error object is a {} value)", other.type_name()),
        None => "(no error message)".to_string(),
    };
    match status {
        0 => Ok(values),
        1 => {
            let mut it = values.into_iter();
            let value = it.next().unwrap_or(LuaValue::Nil);
            let traceback = it
                .next()
                .and_then(|t| t.as_str().map(str::to_string))
                .unwrap_or_default();
            Err(LuaError::Runtime {
                message: text(Some(&value)),
                value,
                traceback,
            })
        }
        2 => Err(LuaError::Syntax(text(values.first()))),
        3 => Err(LuaError::Memory(match values.first() {
            Some(v) => text(Some(v)),
            None => "not enough memory".into(),
        })),
        4 => Err(LuaError::ErrorHandler(text(values.first()))),
        5 => Err(LuaError::BadRequest(text(values.first()))),
        s => Err(LuaError::Protocol(format!("unknown result status {s}"))),
    }
}

/// A trap's kind and text.
fn classify(e: &wasmtime::Error) -> (TrapKind, String) {
    let kind = if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        match t {
            wasmtime::Trap::OutOfFuel => TrapKind::OutOfFuel,
            wasmtime::Trap::Interrupt => TrapKind::Deadline,
            wasmtime::Trap::StackOverflow => TrapKind::StackOverflow,
            wasmtime::Trap::UnreachableCodeReached => TrapKind::Unreachable,
            wasmtime::Trap::MemoryOutOfBounds => TrapKind::MemoryOutOfBounds,
            _ => TrapKind::Other,
        }
    } else if e.is::<host::Aborted>() {
        TrapKind::Import
    } else if e.is::<host::LongJmp>() {
        TrapKind::UncaughtLongjmp
    } else {
        TrapKind::Other
    };
    (kind, format!("{e:#}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of [`ENGINE_WASM`] in hex.
pub fn engine_sha256_hex() -> String {
    hex(&Sha256::digest(ENGINE_WASM))
}

#[cfg(test)]
mod tests;
