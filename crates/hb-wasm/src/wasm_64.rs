//! `wasm-64@1.0`: runs a WebAssembly image on messages (spec 06 §2.2–§2.3; the
//! reference's `dev_wasm`).
//!
//! * `init` loads the image (`<in>/image`: an ID read from the node's cache, a message
//!   with a `body`, or the bytes; else the base's `body`) into the node's [`Engine`]
//!   and instantiates it with every import bound; the live instance goes to the
//!   state's private area, `priv/<out>/instance`.
//! * `compute` (pass 1 only) calls `function` with `parameters` (from `body/…` of the
//!   request, the request, or the base) and writes `results/<out>/type` and
//!   `results/<out>/output`.
//! * `snapshot` answers `{body: <linear memory>}`; `normalize` makes sure there is a
//!   live instance, restoring one from `snapshot/<device-key>/body` (or
//!   `snapshot/body`) when there is none.
//! * `terminate` drops the instance; `import` resolves one import call through the
//!   device mounted at `<out>/stdlib/<module>` (spec 06 §2.3).
//!
//! ## The instance and the states that hold it
//!
//! The instance is mutable, but AO-Core states are values: many states (the live state
//! of a process, the one a dry run started from, an old result still in a cache) may
//! hold the same instance. So `priv/<out>/instance` holds an [`InstanceRef`]: the
//! shared instance plus the *generation* of its memory that this state stands for.
//! Every successful call gives the memory a new generation (numbers are never reused)
//! and the returned state a new reference. Before the instance is used for a state, its
//! memory is brought back to that state's generation: that is a no-op in the common
//! case, and otherwise a restore from the *checkpoint* (the memory at the start of the
//! current transaction, or the last snapshot). A state whose memory is neither live nor
//! checkpointed can no longer be used (it would be normalised again from a snapshot).
//!
//! A slot's writes and its call form a *transaction*: `json-iface@1.0` writes the
//! message (opening it; the state it returns carries the transaction's token) and this
//! device calls `handle` (closing it). If another computation used the instance in
//! between — a dry run racing the process's worker — the call is refused
//! ([`SlotError::Interrupted`]) rather than run on the other's memory.
//!
//! ## Limits and traps
//!
//! Each call gets the node option `wasm_fuel_per_message` in fuel (default
//! [`crate::DEFAULT_FUEL_PER_CALL`], about 0.3 s) and each instance may grow its
//! memory to `wasm_memory_limit` bytes (default 1 GiB). A trap, an exhausted budget or
//! a failed import rolls the memory back to the checkpoint taken before the slot's
//! first write (free when the process snapshots every slot, as it does by default),
//! so the instance is exactly as before the message. Inside a stack or a process the
//! failure is the slot's result (`results/<out>/type = error`, `results/<out>/output`
//! = the trap text; `json-iface@1.0` turns it into the slot's error results) and the
//! process carries on; a bare `compute` answers status 500 with the trap text.
//!
//! Calls into wasm run where at least 4 MiB of stack is left (the `hb` binary's request
//! threads have 16 MiB), else on a thread of their own with an 8 MiB stack, so that
//! neither the depth of the resolution that led to the call nor the module's recursion
//! can overflow a server thread; a panic there is an error, not a crash.
//!
//! ## The engine
//!
//! One [`Engine`] per module-cache directory per OS process ([`engine`]): its compiled
//! modules are shared by every instance. The node option `wasm_cache_dir` (set by the
//! `hb` binary to `<data_dir>/wasm` when the node keeps its data on disk) keeps the
//! compiled modules across restarts.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::value::{Opaque, is_private, message_to_list, normalize_key};
use hb_core::{Ctx, Id, Message, ResolveError, Value};
use parking_lot::{Mutex, MutexGuard};

use crate::imports::Value as WasmValue;
use crate::{
    DEFAULT_FUEL_PER_CALL, Engine, EngineConfig, HostError, ImportFunc, ImportResult, Imports,
    Instance, InstanceConfig, MemoryView, WasmError,
};

/// The device's name.
pub const NAME: &str = "wasm-64@1.0";
/// Node option: fuel for each call into an instance.
pub const FUEL_OPTION: &str = "wasm_fuel_per_message";
/// Node option: the largest linear memory, in bytes, an instance may have.
pub const MEMORY_OPTION: &str = "wasm_memory_limit";
/// Node option: where compiled modules are kept on disk.
pub const CACHE_DIR_OPTION: &str = "wasm_cache_dir";
/// Default of [`MEMORY_OPTION`]: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// The stack of the threads wasm runs on.
const WASM_THREAD_STACK: usize = 8 << 20;
/// What `priv/<out>/import-resolver` names: the key that resolves imports.
const IMPORT_RESOLVER: &str = "wasm-64@1.0/import";

/// The `wasm-64@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wasm64;

impl Device for Wasm64 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "init",
            "compute",
            "snapshot",
            "normalize",
            "terminate",
            "import",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "init" => Ok(init(base, ctx)),
            "compute" => Ok(compute(base, req, ctx)),
            "snapshot" => Ok(snapshot(base, ctx)),
            "normalize" => Ok(normalized(base, ctx).map_or_else(|o| o, Outcome::ok)),
            "terminate" => Ok(terminate(base)),
            "import" => Ok(import(base, req, ctx)),
            other => Err(ResolveError::call(NAME, other, "no such function")),
        }
    }
}

// ---------------------------------------------------------------------------------
// Message helpers shared by the WASM devices.

/// A text, atom or integer value as a string.
pub(crate) fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Atom(a) => Some(a.to_string()),
        Value::Integer(i) => Some(i.to_string()),
        other => other.as_str().map(str::to_owned),
    }
}

/// The prefix a stack member reads its inputs under (spec 06 §2.1).
pub(crate) fn input_prefix(base: &Message) -> String {
    text_of(base.get_ci("input-prefix")).unwrap_or_default()
}

/// The prefix a stack member writes its state under.
pub(crate) fn output_prefix(base: &Message) -> String {
    text_of(base.get_ci("output-prefix")).unwrap_or_default()
}

/// Path segments joined by `/`, empty segments dropped (`results//output` is
/// `results/output`).
pub(crate) fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The public value at a `/`-separated path (keys case-insensitive, list items
/// numbered from 1).
pub(crate) fn lookup<'a>(msg: &'a Message, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let first = parts.next()?;
    if is_private(first) {
        return None;
    }
    let mut v = msg.get_ci(first)?;
    for p in parts {
        if is_private(p) {
            return None;
        }
        v = match v {
            Value::Message(m) => m.get_ci(p)?,
            Value::List(l) => l.get(p.parse::<usize>().ok()?.checked_sub(1)?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// `msg` with `value` at the path (`None` removes it, and the levels it empties);
/// missing levels become messages.
fn set_in(msg: &Message, parts: &[&str], value: Option<Value>) -> Message {
    let mut out = msg.clone();
    match parts {
        [] => {}
        [last] => match value {
            Some(v) => out.insert(last, v),
            None => {
                out.remove(&normalize_key(last));
            }
        },
        [first, rest @ ..] => {
            let inner = match out.get(&normalize_key(first)) {
                Some(Value::Message(m)) => m.clone(),
                _ if value.is_none() => return out,
                _ => Message::new(),
            };
            let removing = value.is_none();
            let inner = set_in(&inner, rest, value);
            if removing && inner.is_empty() {
                // A removal leaves no empty levels behind.
                out.remove(&normalize_key(first));
            } else {
                out.insert(first, Value::Message(inner));
            }
        }
    }
    out
}

/// Sets (or, with `None`, removes) the public value at a path of a state, with plain
/// message semantics. The state's own `commitments` go: its content changed.
pub(crate) fn put(msg: &mut Message, path: &str, value: Option<Value>) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    *msg = set_in(msg, &parts, value);
    msg.remove("commitments");
}

/// `priv/<out>/<key>`.
fn priv_get<'a>(msg: &'a Message, out: &str, key: &str) -> Option<&'a Value> {
    let mut m = msg.private()?;
    for p in out.split('/').filter(|p| !p.is_empty()) {
        m = m.get(&normalize_key(p))?.as_message()?;
    }
    m.get(key)
}

/// Sets (or removes) `priv/<out>/<key>`.
fn priv_set(msg: &mut Message, out: &str, key: &str, value: Option<Value>) {
    let private = msg.private().cloned().unwrap_or_default();
    let mut parts: Vec<&str> = out.split('/').filter(|p| !p.is_empty()).collect();
    parts.push(key);
    let private = set_in(&private, &parts, value);
    if private.is_empty() {
        msg.remove("priv");
    } else {
        msg.insert("priv", Value::Message(private));
    }
}

/// Whether the message names `device` (case-insensitively).
pub(crate) fn is_device(msg: &Message, device: &str) -> bool {
    text_of(msg.get_ci("device")).is_some_and(|d| d.eq_ignore_ascii_case(device))
}

/// A wasm value as an AO-Core value.
pub(crate) fn from_wasm(v: &WasmValue) -> Value {
    match *v {
        WasmValue::I32(i) => Value::Integer(i.into()),
        WasmValue::I64(i) => Value::Integer(i),
        WasmValue::F32(f) => Value::Float(f.into()),
        WasmValue::F64(f) => Value::Float(f),
    }
}

/// An AO-Core number as a wasm value (converted to the exact type by the engine).
pub(crate) fn to_wasm(v: &Value) -> Option<WasmValue> {
    match v {
        Value::Integer(i) => Some(WasmValue::I64(*i)),
        Value::Float(f) => Some(WasmValue::F64(*f)),
        _ => None,
    }
}

/// A list of numbers (a list, or a message numbered `1`..`N`) as wasm values.
pub(crate) fn numbers(v: &Value, what: &str) -> Result<Vec<WasmValue>, Outcome> {
    let items = match v {
        Value::List(l) => l.to_vec(),
        Value::Message(m) => message_to_list(m).ok_or_else(|| {
            Outcome::error_status(400, &format!("`{what}` must be a list of numbers."))
        })?,
        other => {
            return Err(Outcome::error_status(
                400,
                &format!(
                    "`{what}` must be a list of numbers, not a {}.",
                    other.type_name()
                ),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            to_wasm(item).ok_or_else(|| {
                Outcome::error_status(
                    400,
                    &format!(
                        "`{what}` item {} is a {}; every item must be an integer or a float.",
                        i + 1,
                        item.type_name()
                    ),
                )
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The engine and the limits.

/// The node's engine: one per module-cache directory (node option `wasm_cache_dir`,
/// none by default) in this OS process, created on first use and shared by every
/// instance, so that a module is compiled once.
///
/// # Errors
/// wasmtime rejected the engine configuration.
pub fn engine(ctx: &Ctx) -> Result<Engine, WasmError> {
    static ENGINES: Mutex<BTreeMap<Option<PathBuf>, Engine>> = Mutex::new(BTreeMap::new());
    let dir = ctx
        .node()
        .get()
        .get(CACHE_DIR_OPTION)
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let mut engines = ENGINES.lock();
    if let Some(e) = engines.get(&dir) {
        return Ok(e.clone());
    }
    let engine = Engine::new(EngineConfig {
        cache_dir: dir.clone(),
        ..EngineConfig::default()
    })?;
    engines.insert(dir, engine.clone());
    Ok(engine)
}

/// The limits of new instances, from the node options `wasm_fuel_per_message` and
/// `wasm_memory_limit`.
pub fn instance_config(ctx: &Ctx) -> InstanceConfig {
    let node = ctx.node().get();
    let positive = |key: &str| node.get(key).and_then(Value::as_uint).filter(|v| *v > 0);
    InstanceConfig {
        memory_limit: positive(MEMORY_OPTION).unwrap_or(DEFAULT_MEMORY_LIMIT),
        fuel_per_call: positive(FUEL_OPTION).unwrap_or(DEFAULT_FUEL_PER_CALL),
        ..InstanceConfig::default()
    }
}

// ---------------------------------------------------------------------------------
// Instances held by states.

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// Set on the threads that run wasm: a lock attempt there comes from an import,
    /// which must not wait for an instance (it may be its own).
    static ON_WASM_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` where there is stack enough for wasm (see the module docs): on this
/// thread when at least [`crate::INLINE_STACK`] of its stack is left, else on a thread of its
/// own with a large stack.
pub(crate) fn on_wasm_stack<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, SlotError> {
    if crate::stack_enough_for_wasm() {
        // Imports that call back in come to this thread: marked as a wasm thread
        // meanwhile, as the threads of their own are.
        return crate::run_inline_marked(&ON_WASM_THREAD, f)
            .map_err(|_| SlotError::Thread("the wasm call panicked".into()));
    }
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("hb-wasm".into())
            .stack_size(WASM_THREAD_STACK)
            .spawn_scoped(s, || {
                ON_WASM_THREAD.with(|c| c.set(true));
                f()
            })
            .map_err(|e| SlotError::Thread(format!("cannot start a thread for wasm: {e}")))?;
        handle
            .join()
            .map_err(|_| SlotError::Thread("the wasm call panicked".into()))
    })
}

/// Why an instance could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// `terminate` dropped it, or restoring it failed.
    #[error("the WebAssembly instance was terminated")]
    Terminated,
    /// The memory moved on from this state and the state's memory is gone.
    #[error("the WebAssembly instance has moved on from this state and no longer has its memory")]
    MovedOn,
    /// Another computation used the instance between the writes of this state's
    /// transaction and its call.
    #[error(
        "the WebAssembly instance was used by another computation between the writes and the call; try again"
    )]
    Interrupted,
    /// An import tried to use an instance that is running.
    #[error("the WebAssembly instance is running a call (an import cannot re-enter it)")]
    Busy,
    /// The engine failed (loading, instantiating, calling).
    #[error(transparent)]
    Wasm(#[from] WasmError),
    /// The thread for the call could not run.
    #[error("{0}")]
    Thread(String),
}

/// The memory a rollback goes back to.
#[derive(Clone)]
enum Checkpoint {
    /// The module's initial memory (a fresh instance).
    Fresh,
    /// A copy of the memory, with which of its 4 KiB chunks are known to be zero
    /// (for the next checkpoint that reuses the buffer; see `update_copy`).
    Memory(Bytes, Vec<bool>),
}

/// The linear memory of an instance; empty when it has none (its state is then
/// nothing a snapshot can hold).
fn memory_of(instance: &Instance<Router>) -> Result<Bytes, WasmError> {
    match instance.snapshot() {
        Ok(m) => Ok(Bytes::from(m)),
        Err(WasmError::NoMemory) => Ok(Bytes::new()),
        Err(e) => Err(e),
    }
}

/// A memory to go back to: an empty one is the fresh instance.
fn checkpoint_of(memory: Bytes) -> Checkpoint {
    if memory.is_empty() {
        Checkpoint::Fresh
    } else {
        Checkpoint::Memory(memory, Vec::new())
    }
}

/// The live instance behind a family of states.
struct Slot {
    instance: Option<Instance<Router>>,
    /// The generation of the current memory.
    generation: u64,
    /// The memory of one generation, to go back to.
    checkpoint: Option<(u64, Checkpoint)>,
    /// The open transaction (writes made, the call not yet): the generation it
    /// started from and its token.
    txn: Option<(u64, u64)>,
}

impl Slot {
    fn live(&mut self) -> Result<&mut Instance<Router>, SlotError> {
        self.instance.as_mut().ok_or(SlotError::Terminated)
    }

    /// Whether the memory of `generation` is available (live or checkpointed).
    fn has(&self, generation: u64) -> bool {
        self.instance.is_some()
            && (self.generation == generation
                || self
                    .checkpoint
                    .as_ref()
                    .is_some_and(|(g, _)| *g == generation))
    }

    /// Back to the checkpoint: a fresh instance with the checkpoint's memory.
    fn rollback(&mut self) -> Result<(), SlotError> {
        let Some((generation, checkpoint)) = self.checkpoint.clone() else {
            return Err(SlotError::MovedOn);
        };
        let instance = self.instance.take().ok_or(SlotError::Terminated)?;
        let restored = on_wasm_stack(move || match &checkpoint {
            Checkpoint::Fresh => instance.reset(None),
            Checkpoint::Memory(m, _) => instance.reset(Some(m)),
        })?;
        self.txn = None;
        match restored {
            Ok(instance) => {
                self.instance = Some(instance);
                self.generation = generation;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot restore a wasm instance; it is dropped");
                self.checkpoint = None;
                Err(e.into())
            }
        }
    }

    /// Makes the memory that of `generation`, or, with `txn`, that of the open
    /// transaction `txn` (whose writes the caller wants): any other open transaction
    /// is rolled back.
    fn enter(&mut self, generation: u64, txn: Option<u64>) -> Result<(), SlotError> {
        self.live()?;
        if let Some(token) = txn {
            // The writes of that transaction are in the memory only if nothing else
            // used the instance meanwhile.
            return if self.txn == Some((generation, token)) && self.generation == generation {
                Ok(())
            } else {
                Err(SlotError::Interrupted)
            };
        }
        if self.txn.is_none() && self.generation == generation {
            return Ok(());
        }
        match &self.checkpoint {
            Some((g, _)) if *g == generation => self.rollback(),
            _ => Err(SlotError::MovedOn),
        }
    }

    /// Opens a transaction at `generation`, with a checkpoint of that memory (taken
    /// only if the last checkpoint is of another generation); its token.
    fn begin(&mut self, generation: u64) -> Result<u64, SlotError> {
        self.enter(generation, None)?;
        if self
            .checkpoint
            .as_ref()
            .is_none_or(|(g, _)| *g != generation)
        {
            // The previous checkpoint's buffer, unless a snapshot still shares it:
            // brought up to date, it is written only where the memory changed.
            let (mut buffer, mut zero) = match self.checkpoint.take() {
                Some((_, Checkpoint::Memory(old, zero))) => match old.try_into_mut() {
                    Ok(old) => (Vec::from(old), zero),
                    Err(_) => (Vec::new(), Vec::new()),
                },
                _ => (Vec::new(), Vec::new()),
            };
            self.checkpoint = Some((
                generation,
                match self.live()?.snapshot_into(&mut buffer, &mut zero) {
                    Ok(()) if !buffer.is_empty() => Checkpoint::Memory(Bytes::from(buffer), zero),
                    Ok(()) | Err(WasmError::NoMemory) => Checkpoint::Fresh,
                    Err(e) => return Err(e.into()),
                },
            ));
        }
        let token = next_generation();
        self.txn = Some((generation, token));
        Ok(token)
    }

    /// Closes the transaction after a successful call: the memory is a new generation.
    fn commit(&mut self) -> u64 {
        self.generation = next_generation();
        self.txn = None;
        self.generation
    }
}

/// What `priv/<out>/instance` holds: the instance, the generation of its memory that
/// the state holding it stands for, and the transaction the state has open (after
/// `json-iface@1.0` wrote the message, before `wasm-64@1.0` calls).
pub struct InstanceRef {
    slot: Arc<Mutex<Slot>>,
    generation: u64,
    txn: Option<u64>,
}

impl fmt::Debug for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceRef")
            .field("generation", &self.generation)
            .field("txn", &self.txn)
            .finish_non_exhaustive()
    }
}

/// A successful call.
#[derive(Debug)]
pub struct Called {
    /// The function's results.
    pub results: Vec<WasmValue>,
    /// The state as the imports left it.
    pub state: Message,
    /// The instance at its new generation.
    pub instance: InstanceRef,
}

/// A failed call.
#[derive(Debug)]
pub struct CallFailed {
    /// What failed.
    pub error: SlotError,
    /// The instance for the caller's state, its memory as before the transaction
    /// (when the rollback succeeded).
    pub instance: InstanceRef,
}

impl InstanceRef {
    /// A new instance of `image` (its memory restored from `snapshot` if given), with
    /// the node's engine and limits (the memory cap lowered to the module's
    /// `Memory-Limit`, if it gives a lower one); its imports resolve under
    /// `<out>/stdlib`.
    ///
    /// # Errors
    /// The image does not load, or the instance cannot be created or restored.
    pub(crate) fn start(
        ctx: &Ctx,
        image: &Image,
        out: &str,
        snapshot: Option<Bytes>,
    ) -> Result<InstanceRef, SlotError> {
        let module = engine(ctx)?.load(&image.bytes)?;
        let mut config = instance_config(ctx);
        if let Some(limit) = image.memory_limit {
            config.memory_limit = config.memory_limit.min(limit);
        }
        let router = Router {
            prefix: out.to_owned(),
            scope: None,
        };
        let snapshot = snapshot.filter(|s| !s.is_empty());
        let instance = on_wasm_stack(|| match &snapshot {
            Some(s) => module.instantiate_from_snapshot(router, config, s),
            None => module.instantiate(router, config),
        })??;
        let generation = next_generation();
        let checkpoint = snapshot.map_or(Checkpoint::Fresh, checkpoint_of);
        Ok(InstanceRef {
            slot: Arc::new(Mutex::new(Slot {
                instance: Some(instance),
                generation,
                checkpoint: Some((generation, checkpoint)),
                txn: None,
            })),
            generation,
            txn: None,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Slot>, SlotError> {
        if ON_WASM_THREAD.with(Cell::get) {
            self.slot.try_lock().ok_or(SlotError::Busy)
        } else {
            Ok(self.slot.lock())
        }
    }

    fn at(&self, generation: u64, txn: Option<u64>) -> InstanceRef {
        InstanceRef {
            slot: self.slot.clone(),
            generation,
            txn,
        }
    }

    /// Whether this state's memory is still available (an instance in use by another
    /// thread counts as available).
    pub fn usable(&self) -> bool {
        self.slot
            .try_lock()
            .is_none_or(|slot| slot.has(self.generation))
    }

    /// Runs `f` on the instance as the first part of a transaction (the writes before
    /// a call): the memory is checkpointed first, and rolled back if `f` fails. The
    /// reference returned is the state's with the transaction open, for the call.
    ///
    /// # Errors
    /// The instance is unusable for this state, or `f` failed.
    pub fn prepare<R: Send>(
        &self,
        f: impl FnOnce(&mut Instance<Router>) -> Result<R, WasmError> + Send,
    ) -> Result<(R, InstanceRef), SlotError> {
        let mut slot = self.lock()?;
        let token = slot.begin(self.generation)?;
        let instance = slot.live()?;
        let failure = match on_wasm_stack(|| f(instance)) {
            Ok(Ok(r)) => return Ok((r, self.at(self.generation, Some(token)))),
            Ok(Err(e)) => e.into(),
            Err(e) => e,
        };
        if let Err(e) = slot.rollback() {
            tracing::warn!(error = %e, "wasm rollback failed");
        }
        Err(failure)
    }

    /// Calls the exported `func` with `args` in this state's transaction (or a new
    /// one); imports see `state` (and may change it). On failure the memory is rolled
    /// back to before the transaction.
    ///
    /// # Errors
    /// The instance is unusable for this state, or the call failed.
    pub fn call(
        &self,
        ctx: &Ctx,
        state: &Message,
        func: &str,
        args: &[WasmValue],
    ) -> Result<Called, CallFailed> {
        let failed = |error| CallFailed {
            error,
            instance: self.at(self.generation, None),
        };
        let mut slot = self.lock().map_err(failed)?;
        match self.txn {
            Some(token) => slot.enter(self.generation, Some(token)),
            None => slot.begin(self.generation).map(|_| ()),
        }
        .map_err(failed)?;
        let instance = slot.live().map_err(failed)?;
        instance.imports_mut().scope = Some(Scope {
            ctx: ctx.clone(),
            state: state.clone(),
        });
        let outcome = on_wasm_stack(|| instance.call(func, args));
        let scope = instance.imports_mut().scope.take();
        let failure = match outcome {
            Ok(Ok(results)) => {
                let generation = slot.commit();
                return Ok(Called {
                    results,
                    state: scope.map_or_else(|| state.clone(), |s| s.state),
                    instance: self.at(generation, None),
                });
            }
            Ok(Err(e)) => SlotError::Wasm(e),
            Err(e) => e,
        };
        if let Err(e) = slot.rollback() {
            tracing::warn!(error = %e, "wasm rollback failed");
        }
        Err(failed(failure))
    }

    /// Reads from the instance at this state's memory.
    ///
    /// # Errors
    /// The instance is unusable for this state.
    pub fn read<R>(&self, f: impl FnOnce(&Instance<Router>) -> R) -> Result<R, SlotError> {
        let mut slot = self.lock()?;
        slot.enter(self.generation, self.txn)?;
        Ok(f(slot.live()?))
    }

    /// Runs `f` on the memory, outside any call (for imports resolved through AO-Core
    /// rather than from inside a call). The change belongs to this state's
    /// generation.
    ///
    /// # Errors
    /// The instance is unusable for this state, or has no memory.
    pub fn with_memory<R>(&self, f: impl FnOnce(&mut MemoryView<'_>) -> R) -> Result<R, SlotError> {
        let mut slot = self.lock()?;
        slot.enter(self.generation, self.txn)?;
        Ok(slot.live()?.with_memory(f)?)
    }

    /// The linear memory of this state (spec 06 §2.2.3); it becomes the checkpoint.
    ///
    /// # Errors
    /// The instance is unusable for this state.
    pub fn snapshot(&self) -> Result<Bytes, SlotError> {
        let mut slot = self.lock()?;
        slot.enter(self.generation, None)?;
        let memory = memory_of(slot.live()?)?;
        slot.checkpoint = Some((self.generation, checkpoint_of(memory.clone())));
        Ok(memory)
    }

    /// Drops the instance (every state holding it loses it).
    pub fn terminate(&self) {
        if let Ok(mut slot) = self.lock() {
            slot.instance = None;
            slot.checkpoint = None;
            slot.txn = None;
        }
    }
}

/// The instance reference of a state, if it has one.
pub fn instance_of(state: &Message, out: &str) -> Option<Arc<InstanceRef>> {
    match priv_get(state, out, "instance")? {
        Value::Opaque(o) => o.downcast::<InstanceRef>(),
        _ => None,
    }
}

pub(crate) fn install(state: &mut Message, out: &str, instance: InstanceRef) {
    priv_set(
        state,
        out,
        "instance",
        Some(Value::Opaque(Opaque::new(instance))),
    );
    priv_set(
        state,
        out,
        "import-resolver",
        Some(Value::text(IMPORT_RESOLVER)),
    );
}

/// A failure of an instance as an error outcome: a module that does not load is the
/// caller's error, anything else the node's.
pub(crate) fn slot_error(e: &SlotError) -> Outcome {
    let code = match e {
        SlotError::Wasm(WasmError::InvalidModule(_) | WasmError::LegacyEh(_)) => 400,
        _ => 500,
    };
    Outcome::error_status(code, &e.to_string())
}

// ---------------------------------------------------------------------------------
// Imports.

/// The imports of an instance made by this device: every call is routed to the device
/// mounted at `<out>/stdlib/<module>` of the state the call runs on (spec 06 §2.3);
/// `wasi@1.0` mounts are answered natively (they need the memory); modules without a
/// mount answer the zero stub.
pub struct Router {
    prefix: String,
    scope: Option<Scope>,
}

/// What the imports of a running call see.
struct Scope {
    ctx: Ctx,
    state: Message,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("prefix", &self.prefix)
            .field("in_call", &self.scope.is_some())
            .finish()
    }
}

impl Imports for Router {
    fn call(
        &mut self,
        import: &ImportFunc,
        args: &[WasmValue],
        memory: &mut MemoryView<'_>,
    ) -> ImportResult {
        let Some(scope) = self.scope.as_mut() else {
            return Ok(None);
        };
        let mount_path = join(&[&self.prefix, "stdlib", &import.module]);
        let Some(Value::Message(mount)) = lookup(&scope.state, &mount_path).cloned() else {
            return Ok(None);
        };
        if is_device(&mount, crate::wasi::NAME) {
            return crate::wasi::native(&import.name, args, memory, &mut scope.state);
        }
        let resolved = resolve_import(
            &scope.ctx,
            &scope.state,
            &self.prefix,
            &import.module,
            &import.name,
            &import.sig.to_string(),
            args.iter().map(from_wasm).collect(),
        )
        .map_err(HostError::new)?;
        let Some((state, results)) = resolved else {
            return Ok(None);
        };
        scope.state = state;
        results
            .iter()
            .map(|v| {
                to_wasm(v).ok_or_else(|| {
                    HostError::new(format!(
                        "{}.{} answered a {}, not a number",
                        import.module,
                        import.name,
                        v.type_name()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Resolves one import through AO-Core (spec 06 §2.3 step 2): `func` on the device
/// mounted at `<out>/stdlib/<module>` of `state`, with that mount's `state` set to
/// `state` and the request `{module, func, args, func-sig}`; the answer's `state` and
/// `results`. `None` when there is no mount or the device lacks the function (the stub
/// answers).
pub(crate) fn resolve_import(
    ctx: &Ctx,
    state: &Message,
    out: &str,
    module: &str,
    func: &str,
    sig: &str,
    args: Vec<Value>,
) -> Result<Option<(Message, Vec<Value>)>, String> {
    let mount_path = join(&[out, "stdlib", module]);
    let Some(Value::Message(mount)) = lookup(state, &mount_path) else {
        return Ok(None);
    };
    if mount.get_ci("device").is_none() {
        return Ok(None);
    }
    let base = mount.clone().with("state", Value::Message(state.clone()));
    let req = Message::new()
        .with("path", func)
        .with("module", module)
        .with("func", func)
        .with("args", Value::list(args))
        .with("func-sig", sig);
    match ctx
        .internal()
        .resolve_step(Value::Message(base), Value::Message(req))
    {
        Ok(out) if out.is_ok() => {
            let Value::Message(answer) = out.value else {
                return Err(format!(
                    "{module}.{func} answered a {}, not a message with `state` and `results`",
                    out.value.type_name()
                ));
            };
            let next = match answer.get("state") {
                Some(Value::Message(s)) => s.clone(),
                _ => state.clone(),
            };
            let results = match answer.get("results") {
                Some(Value::List(l)) => l.to_vec(),
                Some(Value::Message(m)) => message_to_list(m).unwrap_or_default(),
                Some(v) => vec![v.clone()],
                None => vec![],
            };
            Ok(Some((next, results)))
        }
        Ok(out) if out.value.is_atom("not_found") => Ok(None),
        Ok(out) => Err(format!(
            "{module}.{func} failed: {} {:?}",
            out.status.as_str(),
            out.value
        )),
        Err(e) => Err(format!("{module}.{func} failed: {e}")),
    }
}

// ---------------------------------------------------------------------------------
// The keys.

/// A module to instantiate: its bytes, and the `Memory-Limit` its message gives (aos
/// modules are published with tags such as `Memory-Limit: 1-gb`).
pub(crate) struct Image {
    bytes: Bytes,
    memory_limit: Option<u64>,
}

impl Image {
    fn bytes(bytes: Bytes) -> Image {
        Image {
            bytes,
            memory_limit: None,
        }
    }

    /// The image a module message holds in its `body` (or `data`).
    fn of_message(m: &Message) -> Option<Image> {
        Some(Image {
            bytes: body_of(m)?,
            memory_limit: m.get_ci("memory-limit").and_then(memory_limit),
        })
    }
}

/// A `Memory-Limit` value in bytes: a number of bytes, or a number and a unit (`b`,
/// `kb`, `mb`, `gb`, `tb`, powers of 1,024; `1-gb`, `512-mb`, `16mb`).
fn memory_limit(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_int() {
        return u64::try_from(n).ok().filter(|n| *n > 0);
    }
    let text = text_of(Some(v))?.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.trim_start_matches(['-', ' ', '_']) {
        "" | "b" => 0,
        "kb" | "k" | "kib" => 10,
        "mb" | "m" | "mib" => 20,
        "gb" | "g" | "gib" => 30,
        "tb" | "t" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift).filter(|n| *n > 0)
}

/// The image (spec 06 §2.2.1 step 1).
pub(crate) fn image(base: &Message, ctx: &Ctx) -> Result<Image, Outcome> {
    let inp = input_prefix(base);
    match lookup(base, &join(&[&inp, "image"])) {
        Some(Value::Binary(b)) => image_from_binary(b, ctx),
        Some(Value::Message(m)) => Image::of_message(m)
            .ok_or_else(|| Outcome::error_status(400, "The image message has no `body`.")),
        Some(other) => Err(Outcome::error_status(
            400,
            &format!(
                "`{}` is a {}, not an image ID, message or binary.",
                join(&[&inp, "image"]),
                other.type_name()
            ),
        )),
        None => match base.get_ci("body") {
            Some(Value::Binary(b)) => Ok(Image::bytes(b.clone())),
            _ => Err(Outcome::error_status(
                400,
                &format!("No viable image found in {inp}/image."),
            )),
        },
    }
}

/// A binary `image`: module bytes, or an ID (or cache path such as `data/<hash>`) to
/// read the module from.
fn image_from_binary(b: &Bytes, ctx: &Ctx) -> Result<Image, Outcome> {
    if b.starts_with(b"\0asm") {
        return Ok(Image::bytes(b.clone()));
    }
    let reference = std::str::from_utf8(b)
        .ok()
        .filter(|t| t.len() <= 1024)
        .filter(|t| (t.len() == 43 && Id::from_human(t.as_bytes()).is_some()) || t.contains('/'));
    match reference {
        Some(r) => read_image(r, ctx),
        None => Ok(Image::bytes(b.clone())),
    }
}

fn body_of(m: &Message) -> Option<Bytes> {
    match m.get_ci("body").or_else(|| m.get_ci("data")) {
        Some(Value::Binary(b)) => Some(b.clone()),
        _ => None,
    }
}

/// Reads an image from the node's cache (which reads through to its remote sources).
fn read_image(path: &str, ctx: &Ctx) -> Result<Image, Outcome> {
    let found = match ctx.blocking(|| ctx.cache().read_path(path)) {
        Ok(Some(v)) => Some(v),
        Ok(None) => ctx.load(path.as_bytes()).map(Value::Message),
        Err(e) => {
            return Err(Outcome::error_status(
                500,
                &format!("Cannot read the WASM image `{path}`: {e}"),
            ));
        }
    };
    match found {
        Some(Value::Binary(b)) => Ok(Image::bytes(b)),
        Some(Value::Message(m)) => Image::of_message(&m).ok_or_else(|| {
            Outcome::error_status(400, &format!("The WASM image `{path}` has no `body`."))
        }),
        _ => Err(Outcome::error_status(
            404,
            &format!("WASM image `{path}` not found."),
        )),
    }
}

/// The live instance of a state, if it has one its memory is available for.
fn usable_instance(state: &Message, out: &str) -> Option<Arc<InstanceRef>> {
    instance_of(state, out).filter(|i| i.usable())
}

/// `init` (spec 06 §2.2.1). Later passes of a stack keep the instance the first made.
fn init(base: &Message, ctx: &Ctx) -> Outcome {
    let out = output_prefix(base);
    let later_pass = base
        .get_ci("pass")
        .and_then(Value::as_int)
        .is_some_and(|p| p > 1);
    if later_pass && usable_instance(base, &out).is_some() {
        return Outcome::ok(base.clone());
    }
    let image = match image(base, ctx) {
        Ok(i) => i,
        Err(o) => return o,
    };
    match ctx.blocking(|| InstanceRef::start(ctx, &image, &out, None)) {
        Ok(instance) => {
            let mut state = base.clone();
            install(&mut state, &out, instance);
            Outcome::ok(state)
        }
        Err(e) => slot_error(&e),
    }
}

/// `normalize` (spec 06 §2.2.4): the state with a live instance (restored from its
/// snapshot if needed) and without its public `snapshot`.
pub(crate) fn normalized(base: &Message, ctx: &Ctx) -> Result<Message, Outcome> {
    normalized_as(base, ctx, text_of(base.get_ci("device-key")))
}

/// The key of the `wasm-64@1.0` member in the base's `device-stack`, if it has one:
/// where a stack's snapshot keeps this device's memory.
pub(crate) fn member_key(base: &Message) -> Option<String> {
    let is_wasm = |v: &Value| text_of(Some(v)).is_some_and(|d| d.eq_ignore_ascii_case(NAME));
    match base.get_ci("device-stack")? {
        Value::List(l) => l.iter().position(is_wasm).map(|i| (i + 1).to_string()),
        Value::Message(m) => m
            .iter()
            .find(|(_, v)| is_wasm(v))
            .map(|(k, _)| k.to_string()),
        _ => None,
    }
}

/// [`normalized`], the snapshot looked up under `snapshot/<key>/body`.
pub(crate) fn normalized_as(
    base: &Message,
    ctx: &Ctx,
    key: Option<String>,
) -> Result<Message, Outcome> {
    let out = output_prefix(base);
    let mut state = base.clone();
    if usable_instance(base, &out).is_none() {
        let memory = key
            .as_deref()
            .and_then(|k| lookup(base, &join(&["snapshot", k, "body"])))
            .or_else(|| lookup(base, "snapshot/body"));
        let Some(Value::Binary(memory)) = memory else {
            if instance_of(base, &out).is_some() {
                return Err(slot_error(&SlotError::MovedOn));
            }
            return Err(Outcome::error_status(400, "no_wasm_instance_or_snapshot"));
        };
        let image = image(base, ctx)?;
        let instance = ctx
            .blocking(|| InstanceRef::start(ctx, &image, &out, Some(memory.clone())))
            .map_err(|e| slot_error(&e))?;
        install(&mut state, &out, instance);
    }
    if state.contains("snapshot") {
        put(&mut state, "snapshot", None);
    }
    Ok(state)
}

/// Whether a failed call is the result of a slot (inside a stack or a process) rather
/// than the answer to a bare `compute`.
fn part_of_a_computation(base: &Message) -> bool {
    base.contains("device-key") || base.contains("process") || base.contains("device-stack")
}

/// `compute` (spec 06 §2.2.2).
fn compute(base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
    let state = match normalized(base, ctx) {
        Ok(s) => s,
        Err(o) => return o,
    };
    if base
        .get_ci("pass")
        .and_then(Value::as_int)
        .is_some_and(|p| p != 1)
    {
        return Outcome::ok(state);
    }
    let first = |key: &str| {
        lookup(req, &join(&["body", key]))
            .or_else(|| req.get_ci(key))
            .or_else(|| state.get_ci(key))
    };
    let Some(function) = first("function") else {
        return Outcome::ok(state);
    };
    let Some(function) = text_of(Some(function)) else {
        return Outcome::error_status(400, "`function` must be the name of an export.");
    };
    let args = match first("parameters") {
        None => vec![],
        Some(v) => match numbers(v, "parameters") {
            Ok(a) => a,
            Err(o) => return o,
        },
    };
    let out = output_prefix(&state);
    let Some(instance) = instance_of(&state, &out) else {
        return Outcome::error_status(500, "no_wasm_instance_or_snapshot");
    };
    match ctx.blocking(|| instance.call(ctx, &state, &function, &args)) {
        Ok(called) => {
            let mut next = called.state;
            priv_set(
                &mut next,
                &out,
                "instance",
                Some(Value::Opaque(Opaque::new(called.instance))),
            );
            let output = called.results.iter().map(from_wasm).collect();
            put(
                &mut next,
                &join(&["results", &out, "type"]),
                Some(Value::text("ok")),
            );
            put(
                &mut next,
                &join(&["results", &out, "output"]),
                Some(Value::list(output)),
            );
            Outcome::ok(next)
        }
        Err(CallFailed {
            error: SlotError::Wasm(e),
            instance,
        }) if part_of_a_computation(base) => {
            tracing::debug!(error = %e, "wasm call failed; the slot's result is an error");
            let mut next = state;
            priv_set(
                &mut next,
                &out,
                "instance",
                Some(Value::Opaque(Opaque::new(instance))),
            );
            put(
                &mut next,
                &join(&["results", &out, "type"]),
                Some(Value::text("error")),
            );
            put(
                &mut next,
                &join(&["results", &out, "output"]),
                Some(Value::from(e.to_string())),
            );
            Outcome::ok(next)
        }
        Err(failed) => slot_error(&failed.error),
    }
}

/// `snapshot` (spec 06 §2.2.3).
fn snapshot(base: &Message, ctx: &Ctx) -> Outcome {
    let state = match normalized(base, ctx) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let out = output_prefix(&state);
    let Some(instance) = instance_of(&state, &out) else {
        return Outcome::error_status(500, "no_wasm_instance_or_snapshot");
    };
    match instance.snapshot() {
        Ok(memory) => Outcome::ok(Message::new().with("body", Value::Binary(memory))),
        Err(e) => slot_error(&e),
    }
}

/// `terminate` (spec 06 §2.2.5).
fn terminate(base: &Message) -> Outcome {
    let out = output_prefix(base);
    if let Some(instance) = instance_of(base, &out) {
        instance.terminate();
    }
    let mut state = base.clone();
    priv_set(&mut state, &out, "instance", None);
    priv_set(&mut state, &out, "import-resolver", None);
    Outcome::ok(state)
}

/// `import` (spec 06 §2.3): one import call resolved on the base, as `{state,
/// results}`; the stub (`results: [0]`) when nothing provides it.
fn import(base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
    let (Some(module), Some(func)) = (text_of(req.get_ci("module")), text_of(req.get_ci("func")))
    else {
        return Outcome::error_status(400, "`import` needs `module` and `func`.");
    };
    let args = match req.get_ci("args") {
        None => vec![],
        Some(v) => match numbers(v, "args") {
            Ok(a) => a.iter().map(from_wasm).collect(),
            Err(o) => return o,
        },
    };
    let sig = text_of(req.get_ci("func-sig")).unwrap_or_default();
    let out = output_prefix(base);
    match resolve_import(ctx, base, &out, &module, &func, &sig, args) {
        Ok(Some((state, results))) => Outcome::ok(
            Message::new()
                .with("state", state)
                .with("results", Value::list(results)),
        ),
        Ok(None) => Outcome::ok(
            Message::new()
                .with("state", base.clone())
                .with("results", Value::list(vec![Value::Integer(0)])),
        ),
        Err(e) => Outcome::error_status(500, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits() {
        let limit = |t: &str| memory_limit(&Value::text(t));
        assert_eq!(limit("1-gb"), Some(1 << 30));
        assert_eq!(limit("512-mb"), Some(512 << 20));
        assert_eq!(limit("16MB"), Some(16 << 20));
        assert_eq!(limit("4-GiB"), Some(4 << 30));
        assert_eq!(limit("65536"), Some(65536));
        assert_eq!(memory_limit(&Value::Integer(4096)), Some(4096));
        for bad in ["", "gb", "1-zb", "-1-gb", "0", "99999999999999999999-tb"] {
            assert_eq!(limit(bad), None, "{bad}");
        }
        assert_eq!(memory_limit(&Value::Integer(-5)), None);
    }

    #[test]
    fn paths() {
        assert_eq!(join(&["results", "", "output"]), "results/output");
        assert_eq!(join(&["", "image"]), "image");
        let m = Message::new().with(
            "a",
            Message::new().with("B", Value::list(vec![Value::Integer(7)])),
        );
        assert_eq!(lookup(&m, "a/b/1"), Some(&Value::Integer(7)));
        assert_eq!(lookup(&m, "A/b/2"), None);
        let mut m = m;
        put(&mut m, "a/c/d", Some(Value::Integer(1)));
        assert_eq!(lookup(&m, "a/c/d"), Some(&Value::Integer(1)));
        assert_eq!(lookup(&m, "a/b/1"), Some(&Value::Integer(7)));
        put(&mut m, "a/c", None);
        assert_eq!(lookup(&m, "a/c"), None);
        put(&mut m, "x/y", None);
        assert!(!m.contains("x"));
        priv_set(&mut m, "wasm", "k", Some(Value::Integer(1)));
        assert_eq!(priv_get(&m, "wasm", "k"), Some(&Value::Integer(1)));
        assert_eq!(
            lookup(&m, "priv/wasm/k"),
            None,
            "private keys are not public"
        );
        priv_set(&mut m, "wasm", "k", None);
        assert!(!m.contains("priv"));
    }
}
