//! `lua@5.3a`: runs Lua 5.3 on messages (spec 06 §1; the reference's `dev_lua`).
//!
//! The Lua state is an [`hb_lua::Lua`] instance (Lua 5.3.6 compiled to wasm32 and run on
//! wasmtime, docs/adr/0005-lua-on-wasm.md): deterministic (`pairs()` order included),
//! metered, memory-capped and snapshot-able.
//!
//! ## Keys (spec 06 §1.1)
//!
//! * `keys`, `set` and every key the base already has are plain message keys;
//! * `init` loads the modules (§1.2–§1.3) into a fresh state kept privately at
//!   `priv/state`; `snapshot` answers `{body: <state bytes>}` ([`hb_lua::Snapshot`]);
//!   `normalize` restores `priv/state` from `snapshot/<device-key>/body` or
//!   `snapshot/body` when the base has no live state; `functions` lists the global
//!   functions, sorted;
//! * any other key `K` (including `compute`) calls the global Lua function named by the
//!   request's `body/function`, its `function`, the base's `function`, else `K`, with the
//!   first of `body/parameters`, `parameters` (request, then base) as arguments, by
//!   default `(base, request, {})` (§1.4). One returned value `V` answers `ok, V`; two
//!   values `S, V` answer status `S` with `V`. A table result is a message that keeps
//!   the state; anything else is answered as it is.
//!
//! Modules come from `module`: an ID read from the node's cache (a binary, or a module
//! message), a message whose `content-type` is `application/lua` (or `text/x-lua`)
//! with the source in `body` (or `data`), any other message (each value a module, in
//! key order), or a list. Extensions (docs/COMPATIBILITY.md): an inline binary that is
//! not an ID is the source itself, and without `module` the base's `script` is the
//! module, whose returned value answers the key `result` (so
//! `GET /~lua@5.3a&script=return 2 + 2/result` answers `4`).
//!
//! ## The `ao` library (§1.8)
//!
//! After the modules run, the global `ao` table (created if the modules made none) gets
//! `ao.resolve(...)` (returns a status and a value), `ao.get(path[, base])`,
//! `ao.set(base, key, value)` / `ao.set(base, table)` and `ao.event(...)`, which call the
//! node through `_hb.call`; the installer captures that function before any module
//! runs and removes the `_hb` global, so user code can neither use nor replace it.
//! With `device-sandbox` (a list of device names) on the base, `ao.resolve` refuses
//! requests that name any other device.
//!
//! ## Determinism and limits
//!
//! Before a call whose request carries a `timestamp` (an assignment), `os.time()` is
//! set to that timestamp and `math.random` is seeded from the assignment (slot,
//! timestamp, block height and the IDs of the message's commitments); without one the
//! clock stays where it was and the generator goes on. Each call gets the node option
//! `lua_fuel_per_message` in fuel (default [`hb_lua::DEFAULT_FUEL_PER_CALL`], about
//! 70 ms) and the state may grow to `lua_memory_limit` bytes (default
//! [`DEFAULT_MEMORY_LIMIT`]). A call that runs out of fuel (an endless loop) or traps
//! answers an error and leaves the state as it was before the call; running out of
//! memory is a Lua error (`not enough memory`).
//!
//! ## The state and the messages that hold it
//!
//! As with `wasm-64@1.0`, many messages may hold the same live state, so `priv/state`
//! holds a [`LuaRef`]: the shared instance plus the *generation* that message stands
//! for. A call that answers a message gives the state a new generation; before a call
//! the instance is checkpointed ([`hb_lua::Lua::snapshot`]), so a message of the
//! previous generation (a dry run's base, a failed call's base) can still be served by
//! restoring that checkpoint. Inside a process (`compute` on a base with `process`), a
//! failed call is the slot's result (`results/error`, `results/output/data`), the state
//! unchanged, and the process carries on.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use hb_core::device::{Call, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::hyperpath::from_singleton;
use hb_core::value::{Opaque, is_private, message_to_list, normalize_key};
use hb_core::{Ctx, Message, Value};
use hb_lua::{LuaConfig, LuaEngine, LuaError, LuaTable, LuaValue, Snapshot};
use parking_lot::{Mutex, MutexGuard};

/// The device's name.
pub const NAME: &str = "lua@5.3a";
/// Node option: fuel for each call into Lua.
pub const FUEL_OPTION: &str = "lua_fuel_per_message";
/// Node option: the largest memory, in bytes, of one Lua state.
pub const MEMORY_OPTION: &str = "lua_memory_limit";
/// Default of [`MEMORY_OPTION`]: 256 MiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
/// The stack of the threads Lua runs on (see hb-lua's "Stack depth").
const LUA_THREAD_STACK: usize = 16 << 20;
/// How deeply module collections may nest.
const MAX_MODULE_DEPTH: usize = 8;
/// The private key of the live state.
const STATE_KEY: &str = "state";
/// The private key of the `script` chunk's returned value (the `result` extension).
const SCRIPT_RESULT_KEY: &str = "lua-script-result";

/// The module value that names the project's aos-compatible library
/// ([`AOS_LIBRARY`]).
pub const AOS_MODULE: &str = "builtin:aos";
/// The aos-compatible process library (spec 06 §1.12–§1.13), written for this node.
pub const AOS_LIBRARY: &str = include_str!("lua/aos.lua");
/// The module value that names the project's router process script ([`ROUTER_SCRIPT`]).
pub const ROUTER_MODULE: &str = "builtin:router";
/// The router process (spec 05 §7.7), on the aos library: the `register` handler and
/// the `routes` state key that `route_provider` reads.
pub const ROUTER_SCRIPT: &str = include_str!("lua/router.lua");

/// Keys the device leaves to `message@1.0`, besides the base's own keys.
const PLAIN_KEYS: &[&str] = &[
    "keys",
    "set",
    "set-path",
    "remove",
    "id",
    "commit",
    "committers",
    "verify",
    "encode",
    "decode",
];

/// The `lua@5.3a` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lua;

impl Device for Lua {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, base: &Message) -> DeviceInfo {
        let mut excludes: Vec<String> = PLAIN_KEYS.iter().map(|k| (*k).to_owned()).collect();
        excludes.extend(base.public().map(|(k, _)| k.to_string()));
        DeviceInfo {
            handler: true,
            excludes,
            ..DeviceInfo::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        Ok(match call.key() {
            "init" => init(base, ctx).unwrap_or_else(|o| o),
            "snapshot" => snapshot(base, ctx),
            "normalize" => normalized(base, ctx).map_or_else(|o| o, Outcome::ok),
            "functions" => functions(base, ctx),
            key => call_function(key, base, req, ctx),
        })
    }
}

// ---------------------------------------------------------------------------------
// Engine and limits.

/// The node's Lua engine, on the node's wasm engine (one per module-cache directory).
fn engine(ctx: &Ctx) -> Result<LuaEngine, Outcome> {
    static ENGINES: Mutex<BTreeMap<Option<String>, LuaEngine>> = Mutex::new(BTreeMap::new());
    let dir = ctx
        .node()
        .get()
        .get(hb_wasm::wasm_64::CACHE_DIR_OPTION)
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut engines = ENGINES.lock();
    if let Some(e) = engines.get(&dir) {
        return Ok(e.clone());
    }
    let fail = |e: String| Outcome::error_status(500, &format!("Cannot start Lua: {e}"));
    let wasm = hb_wasm::wasm_64::engine(ctx).map_err(|e| fail(e.to_string()))?;
    let engine = LuaEngine::new(&wasm).map_err(|e| fail(e.to_string()))?;
    engines.insert(dir, engine.clone());
    Ok(engine)
}

/// The limits of new states, from the node options.
pub fn lua_config(ctx: &Ctx) -> LuaConfig {
    let node = ctx.node().get();
    let positive = |key: &str| node.get(key).and_then(Value::as_uint).filter(|v| *v > 0);
    LuaConfig {
        fuel_per_call: positive(FUEL_OPTION).unwrap_or(hb_lua::DEFAULT_FUEL_PER_CALL),
        memory_limit: usize::try_from(positive(MEMORY_OPTION).unwrap_or(DEFAULT_MEMORY_LIMIT))
            .unwrap_or(usize::MAX),
        ..LuaConfig::default()
    }
}

// ---------------------------------------------------------------------------------
// Live states held by messages.

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// Set on the threads that run Lua: a lock taken there comes from `ao.resolve`,
    /// which must not wait for a state (it may be its own).
    static ON_LUA_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Work for a Lua thread: runs the call and returns what delivers its result.
type Job = Box<dyn FnOnce() -> Box<dyn FnOnce() + Send> + Send>;

/// The Lua threads waiting for work, each with its number and its queue.
static IDLE_WORKERS: Mutex<Vec<(u64, mpsc::Sender<Job>)>> = Mutex::new(Vec::new());
/// Numbers the Lua threads.
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);
/// How many Lua threads may wait for work; more end after their call.
const MAX_IDLE_WORKERS: usize = 16;
/// How long a Lua thread waits for work before it ends.
const WORKER_IDLE_TIME: Duration = Duration::from_secs(30);

/// Runs `f` where there is stack enough for Lua: on this thread when at least
/// [`hb_wasm::INLINE_STACK`] of its stack is left (the node's request threads, a Lua thread),
/// else on one of the Lua threads, kept for the next calls (starting a thread with a
/// 16 MiB stack for every call cost more than the call), waiting for it.
fn on_lua_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    if hb_wasm::stack_enough_for_wasm() {
        // Calls made from Lua (`ao.resolve`) come back to this thread: marked as a Lua
        // thread meanwhile, as the Lua threads are.
        return hb_wasm::run_inline_marked(&ON_LUA_THREAD, f)
            .map_err(|_| "the Lua call panicked".to_owned());
    }
    let (tx, rx) = mpsc::sync_channel::<std::thread::Result<R>>(1);
    let mut job: Job = Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        Box::new(move || {
            // The caller waits for it; it only stops waiting if it panicked itself.
            let _ = tx.send(result);
        })
    });
    loop {
        let idle = IDLE_WORKERS.lock().pop();
        match idle {
            Some((_, worker)) => match worker.send(job) {
                Ok(()) => break,
                // The thread ended (it cannot, once taken from the list; but if it
                // did, another one takes the job).
                Err(mpsc::SendError(back)) => job = back,
            },
            None => {
                spawn_worker(job)?;
                break;
            }
        }
    }
    match rx.recv() {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err("the Lua call panicked".to_owned()),
        Err(_) => Err("the Lua thread stopped before answering".to_owned()),
    }
}

/// Starts a Lua thread with `first` as its first job.
fn spawn_worker(first: Job) -> Result<(), String> {
    let id = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("hb-lua".into())
        .stack_size(LUA_THREAD_STACK)
        .spawn(move || {
            ON_LUA_THREAD.with(|c| c.set(true));
            let mut job = first;
            loop {
                let deliver = job();
                // Waiting for work before the answer is delivered, so that the
                // caller's next call finds this thread.
                let wait = {
                    let mut idle = IDLE_WORKERS.lock();
                    let wait = idle.len() < MAX_IDLE_WORKERS;
                    if wait {
                        idle.push((id, tx.clone()));
                    }
                    wait
                };
                deliver();
                if !wait {
                    return;
                }
                job = match rx.recv_timeout(WORKER_IDLE_TIME) {
                    Ok(next) => next,
                    Err(_) => {
                        let mut idle = IDLE_WORKERS.lock();
                        match idle.iter().position(|(i, _)| *i == id) {
                            Some(at) => {
                                // Nobody can send to it any more.
                                idle.swap_remove(at);
                                return;
                            }
                            None => {
                                // A caller took it from the list: its job is coming.
                                drop(idle);
                                match rx.recv() {
                                    Ok(next) => next,
                                    Err(_) => return,
                                }
                            }
                        }
                    }
                };
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start a thread for Lua: {e}"))
}

/// The live instance behind a family of messages.
struct Slot {
    lua: Option<hb_lua::Lua>,
    /// The generation of the instance's current state.
    generation: u64,
    /// A snapshot of one generation, to go back to.
    saved: Option<(u64, Snapshot)>,
}

impl Slot {
    fn has(&self, generation: u64) -> bool {
        self.lua.is_some()
            && (self.generation == generation
                || self.saved.as_ref().is_some_and(|(g, _)| *g == generation))
    }

    /// Brings the instance to `generation`.
    fn enter(&mut self, generation: u64) -> Result<&mut hb_lua::Lua, String> {
        let lua = self.lua.as_mut().ok_or("the Lua state is gone")?;
        if self.generation == generation && !lua.is_poisoned() {
            return Ok(lua);
        }
        match &self.saved {
            Some((g, snap)) if *g == generation => {
                lua.restore(snap).map_err(|e| e.to_string())?;
                self.generation = generation;
                Ok(lua)
            }
            _ => Err(
                "the Lua state has moved on from this message and no longer has its state".into(),
            ),
        }
    }

    /// Checkpoints the current generation (if not already).
    fn checkpoint(&mut self) -> Result<(), String> {
        if self
            .saved
            .as_ref()
            .is_some_and(|(g, _)| *g == self.generation)
        {
            return Ok(());
        }
        let lua = self.lua.as_mut().ok_or("the Lua state is gone")?;
        // Let go of the previous one first: the instance reuses its bytes when nothing
        // else holds them. (The instance is not poisoned here: `enter` restored it.)
        self.saved = None;
        let snap = lua.snapshot().map_err(|e| e.to_string())?;
        self.saved = Some((self.generation, snap));
        Ok(())
    }
}

/// What `priv/state` holds: the live instance and the generation of its state that the
/// message holding it stands for.
pub struct LuaRef {
    slot: Arc<Mutex<Slot>>,
    generation: u64,
}

impl fmt::Debug for LuaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuaRef")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Why a call into Lua failed.
enum Failure {
    /// Lua raised an error (or the call was interrupted): the answer says what.
    Lua(LuaError),
    /// The state could not be used.
    State(String),
}

impl Failure {
    fn text(&self) -> String {
        match self {
            Failure::Lua(e) => lua_error_text(e),
            Failure::State(s) => s.clone(),
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Failure::Lua(e) => lua_error_outcome(e),
            Failure::State(s) => Outcome::error_status(500, s),
        }
    }
}

/// The settings of one call.
struct CallSetup {
    ctx: Ctx,
    sandbox: Option<Arc<Vec<String>>>,
    time_ms: Option<u64>,
    seed: Option<u32>,
}

impl LuaRef {
    fn new(lua: hb_lua::Lua, saved: Option<Snapshot>) -> LuaRef {
        let generation = next_generation();
        LuaRef {
            slot: Arc::new(Mutex::new(Slot {
                lua: Some(lua),
                generation,
                saved: saved.map(|s| (generation, s)),
            })),
            generation,
        }
    }

    fn at(&self, generation: u64) -> LuaRef {
        LuaRef {
            slot: self.slot.clone(),
            generation,
        }
    }

    /// Locks the slot. `wait` is false on a Lua thread: a lock taken there comes from
    /// `ao.resolve`, which must not wait for a state (it may be its own).
    fn lock(slot: &Mutex<Slot>, wait: bool) -> Result<MutexGuard<'_, Slot>, Failure> {
        if wait {
            Ok(slot.lock())
        } else {
            slot.try_lock().ok_or_else(|| {
                Failure::State(
                    "the Lua state is running a call (ao.resolve cannot re-enter it)".into(),
                )
            })
        }
    }

    /// Whether this message's state is still available.
    fn usable(&self) -> bool {
        self.slot
            .try_lock()
            .is_none_or(|slot| slot.has(self.generation))
    }

    /// Runs `f` on the state of this generation. With `commit`, a success makes the
    /// instance's state a new generation (returned); otherwise (and after any failure)
    /// the message keeps this generation, restored from the checkpoint when next used.
    fn run<R: Send + 'static>(
        &self,
        setup: CallSetup,
        commit: bool,
        f: impl FnOnce(&mut hb_lua::Lua) -> Result<R, LuaError> + Send + 'static,
    ) -> Result<(R, LuaRef), Failure> {
        let ctx = setup.ctx.clone();
        let shared = self.slot.clone();
        let wait = !ON_LUA_THREAD.with(Cell::get);
        let generation = self.generation;
        let outcome = ctx.blocking(|| {
            on_lua_stack(move || -> Result<(R, u64), Failure> {
                let mut guard = LuaRef::lock(&shared, wait)?;
                let slot: &mut Slot = &mut guard;
                slot.enter(generation).map_err(Failure::State)?;
                slot.checkpoint().map_err(Failure::State)?;
                let Some(lua) = slot.lua.as_mut() else {
                    return Err(Failure::State("the Lua state is gone".into()));
                };
                let sandbox = setup.sandbox.clone();
                let host_ctx = setup.ctx.clone();
                lua.set_host_call(move |args: Vec<LuaValue>| {
                    Ok(host_call(&host_ctx, sandbox.as_deref(), args))
                });
                if let Some(ms) = setup.time_ms {
                    lua.set_time(ms.saturating_mul(1_000_000));
                }
                let result = match setup.seed {
                    Some(seed) => lua.set_random_seed(seed).and_then(|()| f(lua)),
                    None => f(lua),
                };
                lua.set_host_call(hb_lua::NoHost);
                // Anything written by `print` belongs to the call that made it.
                lua.take_output();
                match result {
                    Ok(r) => {
                        // Committed or not, the call may have changed the state: it
                        // is a new generation.
                        slot.generation = next_generation();
                        Ok((r, slot.generation))
                    }
                    Err(e) => {
                        // A trap rolled the instance back to the checkpoint (this
                        // generation); a Lua error may have left changes behind.
                        let rolled_back = matches!(
                            e,
                            LuaError::Trap {
                                rolled_back: true,
                                ..
                            }
                        );
                        slot.generation = if rolled_back {
                            generation
                        } else {
                            next_generation()
                        };
                        if lua.is_poisoned() {
                            slot.lua = None;
                        }
                        Err(Failure::Lua(e))
                    }
                }
            })
        });
        let (r, generation_now) = outcome.map_err(Failure::State)??;
        let next = if commit {
            self.at(generation_now)
        } else {
            self.at(self.generation)
        };
        Ok((r, next))
    }

    /// The state of this generation as a snapshot (which becomes the checkpoint).
    fn snapshot(&self, ctx: &Ctx) -> Result<Snapshot, Failure> {
        let shared = self.slot.clone();
        let wait = !ON_LUA_THREAD.with(Cell::get);
        let generation = self.generation;
        ctx.blocking(|| {
            on_lua_stack(move || -> Result<Snapshot, Failure> {
                let mut guard = LuaRef::lock(&shared, wait)?;
                let slot: &mut Slot = &mut guard;
                slot.enter(generation).map_err(Failure::State)?;
                slot.checkpoint().map_err(Failure::State)?;
                match &slot.saved {
                    Some((_, s)) => Ok(s.clone()),
                    None => Err(Failure::State("no snapshot taken".into())),
                }
            })
        })
        .map_err(Failure::State)?
    }
}

/// The live state of a message, if it has one.
pub fn state_of(msg: &Message) -> Option<Arc<LuaRef>> {
    match msg.get_private(STATE_KEY)? {
        Value::Opaque(o) => o.downcast::<LuaRef>(),
        _ => None,
    }
}

fn usable_state(msg: &Message) -> Option<Arc<LuaRef>> {
    state_of(msg).filter(|s| s.usable())
}

fn install(msg: &mut Message, state: LuaRef) {
    msg.set_private(STATE_KEY, Value::Opaque(Opaque::new(state)));
}

// ---------------------------------------------------------------------------------
// Value conversion (spec 06 §1.5).

/// An AO-Core value as a Lua value. Private keys, live objects and in-flight forms are
/// left out.
pub fn to_lua(v: &Value) -> LuaValue {
    match v {
        Value::Binary(b) => LuaValue::String(b.to_vec()),
        Value::Integer(i) => LuaValue::Integer(*i),
        Value::Float(f) => LuaValue::Float(*f),
        Value::Atom(a) => match a.as_ref() {
            "true" => LuaValue::Boolean(true),
            "false" => LuaValue::Boolean(false),
            other => LuaValue::from(other),
        },
        Value::List(items) => LuaValue::Table(LuaTable::array(items.iter().map(to_lua))),
        Value::Message(m) => message_to_lua(m),
        Value::Resolve(_) | Value::As(..) | Value::Opaque(_) => LuaValue::Nil,
    }
}

/// A message as a Lua table: an array when its keys are exactly `1..N`.
pub fn message_to_lua(m: &Message) -> LuaValue {
    if let Some(items) = message_to_list(m) {
        return LuaValue::Table(LuaTable::array(items.iter().map(to_lua)));
    }
    let mut t = LuaTable::new();
    for (k, v) in m.public() {
        let v = to_lua(v);
        if v != LuaValue::Nil {
            t.push(LuaValue::from(k.as_ref()), v);
        }
    }
    LuaValue::Table(t)
}

/// The index of a sequence key: an integer, or a decimal string without sign or
/// leading zero.
fn sequence_index(k: &LuaValue) -> Option<i64> {
    match k {
        LuaValue::Integer(i) => Some(*i),
        LuaValue::String(s) => {
            let text = std::str::from_utf8(s).ok()?;
            if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            text.parse().ok()
        }
        _ => None,
    }
}

/// A Lua value as an AO-Core value; `None` for nil and values that cannot cross
/// (functions, userdata, threads).
pub fn from_lua(v: &LuaValue) -> Option<Value> {
    Some(match v {
        LuaValue::Nil | LuaValue::Opaque(_) => return None,
        LuaValue::Boolean(b) => Value::boolean(*b),
        LuaValue::Integer(i) => Value::Integer(*i),
        LuaValue::Float(f) => Value::Float(*f),
        LuaValue::String(s) => Value::Binary(Bytes::copy_from_slice(s)),
        LuaValue::Table(t) => table_to_value(t),
    })
}

fn table_to_value(t: &LuaTable) -> Value {
    let n = t.entries.len();
    let mut seq: Vec<Option<&LuaValue>> = vec![None; n];
    let is_seq = t.entries.iter().all(|(k, v)| {
        match sequence_index(k)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i >= 1 && i <= n)
        {
            Some(i) if seq[i - 1].is_none() => {
                seq[i - 1] = Some(v);
                true
            }
            _ => false,
        }
    });
    if is_seq {
        return Value::list(seq.into_iter().flatten().filter_map(from_lua).collect());
    }
    let mut m = Message::new();
    for (k, v) in &t.entries {
        let key = match k {
            LuaValue::String(s) => String::from_utf8_lossy(s).into_owned(),
            LuaValue::Integer(i) => i.to_string(),
            LuaValue::Float(f) => hb_core::structured::float_to_text(*f),
            LuaValue::Boolean(b) => b.to_string(),
            _ => continue,
        };
        if key.is_empty() || is_private(&key) {
            continue;
        }
        if let Some(v) = from_lua(v) {
            m.insert(&key, v);
        }
    }
    Value::Message(m)
}

// ---------------------------------------------------------------------------------
// Modules (spec 06 §1.2).

/// One module: its chunk name and source.
struct Module {
    name: String,
    source: Bytes,
}

/// The modules of a base, and whether they come from `script` (the extension).
fn modules(base: &Message, ctx: &Ctx) -> Result<(Vec<Module>, bool), Outcome> {
    let mut out = Vec::new();
    match base.get_ci("module") {
        Some(v) => {
            collect(v, ctx, &mut out, 0)?;
            if out.is_empty() {
                return Err(Outcome::error_status(400, "no-modules-found"));
            }
            Ok((out, false))
        }
        None => match base.get_ci("script") {
            Some(Value::Binary(src)) => {
                out.push(Module {
                    name: "script".into(),
                    source: src.clone(),
                });
                Ok((out, true))
            }
            Some(other) => Err(Outcome::error_status(
                400,
                &format!(
                    "`script` must be Lua source text, not a {}.",
                    other.type_name()
                ),
            )),
            None => Err(Outcome::error(Value::text("no-modules-found"))),
        },
    }
}

fn is_lua_module(m: &Message) -> bool {
    m.get_ci("content-type")
        .and_then(Value::as_str)
        .is_some_and(|t| {
            let t = t.split(';').next().unwrap_or_default().trim();
            t.eq_ignore_ascii_case("application/lua") || t.eq_ignore_ascii_case("text/x-lua")
        })
}

fn collect(v: &Value, ctx: &Ctx, out: &mut Vec<Module>, depth: usize) -> Result<(), Outcome> {
    if depth > MAX_MODULE_DEPTH {
        return Err(Outcome::error_status(400, "Lua modules nest too deeply."));
    }
    match v {
        Value::Binary(b) if b.as_ref() == AOS_MODULE.as_bytes() => {
            out.push(Module {
                name: "hb-aos".into(),
                source: Bytes::from_static(AOS_LIBRARY.as_bytes()),
            });
            Ok(())
        }
        Value::Binary(b) if b.as_ref() == ROUTER_MODULE.as_bytes() => {
            out.push(Module {
                name: "hb-router".into(),
                source: Bytes::from_static(ROUTER_SCRIPT.as_bytes()),
            });
            Ok(())
        }
        Value::Binary(b) => {
            let as_id = std::str::from_utf8(b).ok().filter(|t| {
                t.len() == 43
                    && t.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            });
            match as_id {
                Some(id) => collect(&read_module(id, ctx)?, ctx, out, depth + 1),
                None => {
                    // Extension: inline source.
                    out.push(Module {
                        name: format!("module-{}", out.len() + 1),
                        source: b.clone(),
                    });
                    Ok(())
                }
            }
        }
        Value::Message(m) if is_lua_module(m) => {
            let source = match m.get_ci("body").or_else(|| m.get_ci("data")) {
                Some(Value::Binary(b)) => b.clone(),
                _ => {
                    return Err(Outcome::error(
                        Message::new()
                            .with("status", 404i64)
                            .with("body", "The Lua module message has no `body` or `data`.")
                            .with("module", Value::Message(m.clone())),
                    ));
                }
            };
            let name = match m.get_ci("name").and_then(Value::as_str) {
                Some(n) => n.to_owned(),
                None => hb_core::message::id_all(m)
                    .map(|id| id.to_human())
                    .unwrap_or_else(|_| format!("module-{}", out.len() + 1)),
            };
            out.push(Module { name, source });
            Ok(())
        }
        Value::Message(m) => {
            for (_, item) in m.public() {
                collect(item, ctx, out, depth + 1)?;
            }
            Ok(())
        }
        Value::List(items) => {
            for item in items.iter() {
                collect(item, ctx, out, depth + 1)?;
            }
            Ok(())
        }
        other => Err(Outcome::error_status(
            400,
            &format!("A Lua module cannot be a {}.", other.type_name()),
        )),
    }
}

/// Reads a module by ID from the node's cache.
fn read_module(id: &str, ctx: &Ctx) -> Result<Value, Outcome> {
    let found = match ctx.blocking(|| ctx.cache().read_path(id)) {
        Ok(Some(v)) => Some(v),
        Ok(None) => ctx.load(id.as_bytes()).map(Value::Message),
        Err(e) => {
            return Err(Outcome::error_status(
                500,
                &format!("Cannot read the Lua module '{id}': {e}"),
            ));
        }
    };
    match found {
        // A stored binary is the source (never another ID).
        Some(Value::Binary(b)) => Ok(Value::Message(
            Message::new()
                .with("content-type", "application/lua")
                .with("name", id)
                .with("body", Value::Binary(b)),
        )),
        Some(Value::Message(m)) => {
            if is_lua_module(&m) {
                Ok(Value::Message(m))
            } else if m.get_ci("body").is_some() && !m.contains("module") {
                // A message uploaded without a content type: its body is the source.
                Ok(Value::Message(m.with("content-type", "application/lua")))
            } else {
                Ok(Value::Message(m))
            }
        }
        _ => Err(Outcome::error_status(
            404,
            &format!("Lua module '{id}' not found."),
        )),
    }
}

// ---------------------------------------------------------------------------------
// Installing the host library and the sandbox.

/// Runs before the modules: captures `_hb.call` and prepares the `ao` functions.
const PRELUDE: &str = r#"
local call = _hb.call
_hb = nil
local lib = {
  resolve = function(...) return call("resolve", ...) end,
  get = function(...) return call("get", ...) end,
  set = function(...) return call("set", ...) end,
  event = function(...) return call("event", ...) end,
}
local names = { "event", "get", "resolve", "set" }
function __hb_install_ao()
  if type(ao) ~= "table" then ao = {} end
  for _, name in ipairs(names) do ao[name] = lib[name] end
end
function __hb_find_function(name)
  local want, found = string.lower(name), nil
  for k, v in pairs(_G) do
    if type(k) == "string" and type(v) == "function" and string.lower(k) == want
      and (found == nil or k < found) then
      found = k
    end
  end
  return found
end
function __hb_sandbox(paths)
  for _, entry in ipairs(paths) do
    local parts = {}
    for p in string.gmatch(entry[1], "[^/%.]+") do parts[#parts + 1] = p end
    local t = _G
    for i = 1, #parts - 1 do
      local nt = rawget(t, parts[i])
      if type(nt) ~= "table" then t = nil break end
      t = nt
    end
    if t ~= nil and #parts > 0 then rawset(t, parts[#parts], entry[2]) end
  end
end
"#;

/// The global function (prepared by the prelude) that finds a global function by its
/// name without case: the first in byte order.
const FIND_FUNCTION: &str = "__hb_find_function";

/// Runs after the modules (and the sandbox).
const POSTLUDE: &str = "__hb_install_ao(); __hb_install_ao = nil; __hb_sandbox = nil";

/// The reference's default sandbox list (spec 06 §1.7).
const DEFAULT_SANDBOX: &[&str] = &[
    "io",
    "file",
    "os/execute",
    "os/exit",
    "os/getenv",
    "os/remove",
    "os/rename",
    "os/tmpname",
    "package",
    "loadfile",
    "require",
    "dofile",
    "load",
    "loadstring",
];

/// The sandbox of a base as `{path, replacement}` pairs (an array of pairs, so the
/// order is the message's).
fn sandbox_spec(base: &Message) -> Result<Option<LuaValue>, Outcome> {
    let sandboxed = || LuaValue::from("sandboxed");
    let pairs: Vec<(String, LuaValue)> = match base.get_ci("sandbox") {
        None => return Ok(None),
        Some(Value::Atom(a)) if a.as_ref() == "false" => return Ok(None),
        Some(Value::Binary(b)) if b.as_ref() == b"false" => return Ok(None),
        Some(Value::Atom(a)) if a.as_ref() == "true" => DEFAULT_SANDBOX
            .iter()
            .map(|p| ((*p).to_owned(), sandboxed()))
            .collect(),
        Some(Value::Binary(b)) if b.as_ref() == b"true" => DEFAULT_SANDBOX
            .iter()
            .map(|p| ((*p).to_owned(), sandboxed()))
            .collect(),
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(|p| (p.to_owned(), sandboxed())))
            .collect(),
        Some(Value::Message(m)) => match message_to_list(m) {
            Some(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(|p| (p.to_owned(), sandboxed())))
                .collect(),
            None => m
                .public()
                .map(|(k, v)| (k.to_string(), to_lua(v)))
                .collect(),
        },
        Some(other) => {
            return Err(Outcome::error_status(
                400,
                &format!(
                    "`sandbox` must be true, a list of paths or a map of paths, not a {}.",
                    other.type_name()
                ),
            ));
        }
    };
    Ok(Some(LuaValue::Table(LuaTable::array(
        pairs
            .into_iter()
            .map(|(p, v)| LuaValue::Table(LuaTable::array([LuaValue::from(p), v]))),
    ))))
}

/// The device names `ao.resolve` may use (`device-sandbox`), checked against the
/// node's devices.
fn device_sandbox(base: &Message, ctx: &Ctx) -> Result<Option<Arc<Vec<String>>>, Outcome> {
    let items = match base.get_ci("device-sandbox") {
        None => return Ok(None),
        Some(Value::List(l)) => l.to_vec(),
        Some(Value::Message(m)) => message_to_list(m).unwrap_or_default(),
        Some(Value::Binary(b)) => vec![Value::Binary(b.clone())],
        Some(other) => {
            return Err(Outcome::error_status(
                400,
                &format!(
                    "`device-sandbox` must be a list of device names, not a {}.",
                    other.type_name()
                ),
            ));
        }
    };
    let mut names = Vec::new();
    for item in items {
        let Some(name) = item.as_str() else {
            return Err(Outcome::error_status(
                400,
                "`device-sandbox` must list device names.",
            ));
        };
        if ctx.registry().get(name).is_none() {
            return Err(Outcome::error_status(
                400,
                &format!("`device-sandbox` names `{name}`, which is not a device of this node."),
            ));
        }
        names.push(normalize_key(name).into_owned());
    }
    Ok(Some(Arc::new(names)))
}

// ---------------------------------------------------------------------------------
// Host calls (`_hb.call`, behind `ao.*`).

fn status_name(s: &Status) -> String {
    s.as_str().to_owned()
}

fn host_call(ctx: &Ctx, sandbox: Option<&Vec<String>>, args: Vec<LuaValue>) -> Vec<LuaValue> {
    let mut args = args.into_iter();
    let op = args.next().and_then(|v| v.as_str().map(str::to_owned));
    let rest: Vec<LuaValue> = args.collect();
    let error = |text: String| vec![LuaValue::from("error"), LuaValue::from(text)];
    match op.as_deref() {
        Some("resolve") => match resolve_list(&rest, sandbox) {
            Err(e) => error(e),
            Ok(list) => match ctx.internal().resolve_many(list) {
                Ok(out) => vec![LuaValue::from(status_name(&out.status)), to_lua(&out.value)],
                Err(e) => error(e.to_string()),
            },
        },
        Some("get") => {
            let (path, base) = match (rest.first(), rest.get(1)) {
                (Some(LuaValue::String(p)), b) => (p.clone(), b),
                (Some(b @ LuaValue::Table(_)), Some(LuaValue::String(p))) => (p.clone(), Some(b)),
                _ => return vec![LuaValue::Nil],
            };
            let base = match base.and_then(from_lua) {
                Some(Value::Message(m)) => m,
                Some(Value::List(l)) => hb_core::value::list_to_message(&l),
                _ => Message::new(),
            };
            let path = String::from_utf8_lossy(&path).into_owned();
            match ctx.get(&path, &base) {
                Some(v) => vec![to_lua(&v)],
                None => vec![LuaValue::Nil],
            }
        }
        Some("set") => {
            let base = match rest.first().and_then(from_lua) {
                Some(Value::Message(m)) => m,
                Some(Value::List(l)) => hb_core::value::list_to_message(&l),
                _ => Message::new(),
            };
            let set = match (rest.get(1), rest.get(2)) {
                (Some(LuaValue::String(k)), v) => {
                    let key = String::from_utf8_lossy(k).into_owned();
                    match v.and_then(from_lua) {
                        Some(value) => hb_core::resolve::deep_set(ctx, &base, &key, value),
                        None => Ok(base.clone().without(&key)),
                    }
                }
                (Some(t @ LuaValue::Table(_)), _) => match from_lua(t) {
                    Some(Value::Message(m)) => ctx.set_many(&base, &m),
                    Some(Value::List(l)) => {
                        ctx.set_many(&base, &hb_core::value::list_to_message(&l))
                    }
                    _ => Ok(base.clone()),
                },
                _ => Ok(base.clone()),
            };
            match set {
                Ok(m) => vec![message_to_lua(&m)],
                Err(e) => error(e.to_string()),
            }
        }
        Some("event") => {
            let text: Vec<String> = rest.iter().map(|v| format!("{v:?}")).collect();
            tracing::debug!(target: "lua", event = %text.join(" "), "ao.event");
            vec![LuaValue::from("ok")]
        }
        _ => error("unknown host call".into()),
    }
}

/// The messages `ao.resolve(...)` resolves, checked against the device sandbox.
fn resolve_list(args: &[LuaValue], sandbox: Option<&Vec<String>>) -> Result<Vec<Value>, String> {
    let list = match args {
        [one @ LuaValue::Table(t)] if t.get_str("path").is_some() => {
            let Some(Value::Message(m)) = from_lua(one) else {
                return Err("the request is not a message".into());
            };
            from_singleton(&m).map_err(|e| e.to_string())?
        }
        [base, LuaValue::String(path)] if !matches!(base, LuaValue::String(_)) => {
            let base = from_lua(base).unwrap_or_else(|| Value::Message(Message::new()));
            let path = String::from_utf8_lossy(path).into_owned();
            let mut list = vec![base];
            list.extend(
                path.split('/')
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::Message(Message::new().with("path", p))),
            );
            list
        }
        items if !items.is_empty() => items.iter().map(resolve_item).collect::<Result<_, _>>()?,
        _ => return Err("ao.resolve needs a request".into()),
    };
    if let Some(allowed) = sandbox {
        for item in &list {
            check_devices(item, allowed)?;
        }
    }
    Ok(list)
}

/// One element of a list form: `{"as", device, msg}` is "msg as device".
fn resolve_item(v: &LuaValue) -> Result<Value, String> {
    if let LuaValue::Table(t) = v
        && let Some(seq) = t.as_sequence()
        && seq.len() == 3
        && seq[0].as_str() == Some("as")
    {
        let device = seq[1].as_str().ok_or("`as` needs a device name")?;
        let inner = from_lua(seq[2]).unwrap_or_else(|| Value::Message(Message::new()));
        return Ok(Value::As(Arc::from(device), Box::new(inner)));
    }
    from_lua(v).ok_or_else(|| "ao.resolve cannot resolve nil".to_owned())
}

/// Fails if `v` names a device outside `allowed`.
fn check_devices(v: &Value, allowed: &[String]) -> Result<(), String> {
    let ok = |name: &str| allowed.iter().any(|a| *a == normalize_key(name));
    match v {
        Value::As(dev, inner) => {
            if !ok(dev) {
                return Err(format!(
                    "device `{dev}` is not allowed by the device sandbox"
                ));
            }
            check_devices(inner, allowed)
        }
        Value::Message(m) => {
            if let Some(dev) = m.get_ci("device").and_then(Value::as_str)
                && !ok(dev)
            {
                return Err(format!(
                    "device `{dev}` is not allowed by the device sandbox"
                ));
            }
            Ok(())
        }
        Value::Resolve(items) => items.iter().try_for_each(|i| check_devices(i, allowed)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// The keys.

/// A Lua error as the device's error value (spec 06 §1.4).
fn lua_error_outcome(e: &LuaError) -> Outcome {
    let mut m = Message::new()
        .with("status", 500i64)
        .with("body", lua_error_text(e));
    if let LuaError::Runtime { traceback, .. } = e
        && !traceback.is_empty()
    {
        m.insert("trace", Value::text(traceback));
    }
    Outcome::error(m)
}

fn lua_error_text(e: &LuaError) -> String {
    match e {
        LuaError::Trap {
            kind: hb_lua::TrapKind::OutOfFuel,
            ..
        } => "The Lua call ran out of its instruction budget (lua_fuel_per_message) and was stopped; the state is as before the call.".into(),
        LuaError::Trap { message, .. } => {
            format!("The Lua call was stopped: {message}; the state is as before the call.")
        }
        other => other.to_string(),
    }
}

/// The per-call settings for a request: the clock and the random seed of an
/// assignment.
fn setup(ctx: &Ctx, base: &Message, req: &Message) -> Result<CallSetup, Outcome> {
    let sandbox = device_sandbox(base, ctx)?;
    let body = req.get("body").and_then(Value::as_message);
    let timestamp = req
        .get("timestamp")
        .or_else(|| body.and_then(|b| b.get("timestamp")))
        .and_then(Value::as_uint);
    let seed = timestamp.map(|t| {
        // FNV-1a over what identifies the assignment.
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u32::from(*b);
                h = h.wrapping_mul(0x0100_0193);
            }
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0193);
        };
        eat(&t.to_le_bytes());
        for key in ["slot", "block-height", "process"] {
            if let Some(v) = req.get(key) {
                eat(&v.to_display_bytes());
            }
        }
        if let Some(commitments) = body
            .and_then(|b| b.get("commitments"))
            .and_then(Value::as_message)
        {
            for k in commitments.keys() {
                eat(k.as_bytes());
            }
        }
        h
    });
    Ok(CallSetup {
        ctx: ctx.clone(),
        sandbox,
        time_ms: timestamp,
        seed,
    })
}

/// `init` (spec 06 §1.3): the base with a live state, made from its modules.
fn init(base: &Message, ctx: &Ctx) -> Result<Outcome, Outcome> {
    if usable_state(base).is_some() {
        return Ok(Outcome::ok(base.clone()));
    }
    create(base, ctx).map(Outcome::ok)
}

fn create(base: &Message, ctx: &Ctx) -> Result<Message, Outcome> {
    let (modules, script) = modules(base, ctx)?;
    let sandbox = sandbox_spec(base)?;
    // A name that is not a device fails `init` (spec 06 §1.8).
    device_sandbox(base, ctx)?;
    let engine = engine(ctx)?;
    let config = lua_config(ctx);
    let created = ctx
        .blocking(|| {
            on_lua_stack(
                move || -> Result<(hb_lua::Lua, Option<LuaValue>), LuaError> {
                    let mut lua = engine.create(config)?;
                    lua.load("hb-prelude", PRELUDE)?;
                    let mut first = None;
                    for m in &modules {
                        let values = lua.load(&m.name, &m.source)?;
                        if script {
                            first = values.into_iter().next();
                        }
                    }
                    if let Some(spec) = &sandbox {
                        lua.call("__hb_sandbox", std::slice::from_ref(spec))?;
                    }
                    lua.load("hb-postlude", POSTLUDE)?;
                    lua.take_output();
                    Ok((lua, first))
                },
            )
        })
        .map_err(|e| Outcome::error_status(500, &e))?;
    let (lua, first) = created.map_err(|e| lua_error_outcome(&e))?;
    let mut state = base.clone();
    install(&mut state, LuaRef::new(lua, None));
    if let Some(v) = first.as_ref().and_then(from_lua) {
        state.set_private(SCRIPT_RESULT_KEY, v);
    }
    Ok(state)
}

/// The base with a usable live state: as it is, restored from its snapshot, or
/// initialised.
fn ensure(base: &Message, ctx: &Ctx) -> Result<Message, Outcome> {
    if usable_state(base).is_some() {
        return Ok(base.clone());
    }
    if snapshot_bytes(base).is_some() {
        return normalized(base, ctx);
    }
    if state_of(base).is_some() {
        // Starting over from the modules would silently lose the state.
        return Err(Outcome::error_status(
            500,
            "The Lua state has moved on from this message and no longer has its state; use a later state or one with a snapshot.",
        ));
    }
    create(base, ctx)
}

fn snapshot_bytes(base: &Message) -> Option<&Bytes> {
    let key = base
        .get_ci("device-key")
        .map(|v| String::from_utf8_lossy(&v.to_display_bytes()).into_owned());
    let snap = base.get_ci("snapshot")?.as_message()?;
    let from_key = key
        .as_deref()
        .and_then(|k| snap.get_ci(k))
        .and_then(Value::as_message)
        .and_then(|m| m.get_ci("body"));
    match from_key.or_else(|| snap.get_ci("body"))? {
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// `normalize` (spec 06 §1.9).
fn normalized(base: &Message, ctx: &Ctx) -> Result<Message, Outcome> {
    if usable_state(base).is_some() {
        return Ok(base.clone());
    }
    let Some(bytes) = snapshot_bytes(base) else {
        return Err(Outcome::error_status(500, "no_lua_state_snapshot_found"));
    };
    let snap = Snapshot::from_bytes(bytes.to_vec())
        .map_err(|e| Outcome::error_status(400, &format!("Cannot restore the Lua state: {e}")))?;
    let engine = engine(ctx)?;
    let config = lua_config(ctx);
    let restored = snap.clone();
    let lua = ctx
        .blocking(|| on_lua_stack(move || engine.restore(config, &restored)))
        .map_err(|e| Outcome::error_status(500, &e))?
        .map_err(|e| Outcome::error_status(400, &format!("Cannot restore the Lua state: {e}")))?;
    let mut state = base.clone();
    install(&mut state, LuaRef::new(lua, Some(snap)));
    Ok(state)
}

/// `snapshot` (spec 06 §1.9).
fn snapshot(base: &Message, ctx: &Ctx) -> Outcome {
    let Some(state) = state_of(base) else {
        return Outcome::error_status(500, "Cannot snapshot Lua state: state not initialized.");
    };
    match state.snapshot(ctx) {
        Ok(s) => Outcome::ok(
            Message::new().with("body", Value::Binary(Bytes::copy_from_slice(s.as_bytes()))),
        ),
        Err(f) => f.outcome(),
    }
}

/// Lists the global functions, sorted.
const FUNCTIONS: &str = "local t = {} for k, v in pairs(_G) do if type(v) == 'function' and type(k) == 'string' and k:sub(1, 5) ~= '__hb_' then t[#t + 1] = k end end table.sort(t) return t";

/// `functions` (spec 06 §1.10).
fn functions(base: &Message, ctx: &Ctx) -> Outcome {
    let state = match ensure(base, ctx) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let Some(lua) = state_of(&state) else {
        return Outcome::error_status(500, "no Lua state");
    };
    let setup = CallSetup {
        ctx: ctx.clone(),
        sandbox: None,
        time_ms: None,
        seed: None,
    };
    match lua.run(setup, false, |l| l.eval(FUNCTIONS)) {
        Ok((values, _)) => {
            let list = values
                .first()
                .and_then(from_lua)
                .unwrap_or_else(|| Value::list(vec![]));
            Outcome::ok(list)
        }
        Err(f) => f.outcome(),
    }
}

/// The first of `body/<key>` and `<key>` of the request, then `<key>` of the base.
fn first<'a>(key: &str, base: &'a Message, req: &'a Message) -> Option<&'a Value> {
    req.get("body")
        .and_then(Value::as_message)
        .and_then(|b| b.get_ci(key))
        .or_else(|| req.get_ci(key))
        .or_else(|| base.get_ci(key))
}

/// Whether a failed call is a process slot's result rather than the answer.
fn part_of_a_computation(key: &str, base: &Message) -> bool {
    key == "compute" && (base.contains("process") || base.contains("device-key"))
}

/// Calls a global function (spec 06 §1.4).
fn call_function(key: &str, base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
    let state = match ensure(base, ctx) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let Some(lua) = state_of(&state) else {
        return Outcome::error_status(500, "no Lua state");
    };
    let function = match first("function", &state, req) {
        None => key.to_owned(),
        Some(v) => match v.as_str() {
            Some(f) if !f.is_empty() => f.to_owned(),
            _ => {
                return Outcome::error_status(400, "`function` must name a global Lua function.");
            }
        },
    };
    let args = match first("parameters", &state, req) {
        None => vec![
            message_to_lua(&state.without_private()),
            message_to_lua(&req.without_private()),
            LuaValue::Table(LuaTable::new()),
        ],
        Some(Value::List(items)) => items.iter().map(to_lua).collect(),
        Some(Value::Message(m)) => match message_to_list(m) {
            Some(items) => items.iter().map(to_lua).collect(),
            None => vec![message_to_lua(m)],
        },
        Some(other) => vec![to_lua(other)],
    };
    let script_result = state.get_private(SCRIPT_RESULT_KEY).cloned();
    let script_mode = function == "result" && script_result.is_some();
    let setup = match setup(ctx, &state, req) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let name = function.clone();
    let called = lua.run(setup, true, move |l| {
        let function = name;
        if script_mode {
            let defined = l.eval("return type(result) == 'function'")?;
            if defined.first() != Some(&LuaValue::Boolean(true)) {
                return Ok(None);
            }
        }
        match l.call(&function, &args) {
            // Paths are lower-cased: `ListTable` arrives as `listtable`. A global
            // function whose name matches without case is called instead.
            Err(LuaError::Runtime { message, .. })
                if message.starts_with(&format!("global '{function}' is not a function")) =>
            {
                let found = l.call(FIND_FUNCTION, &[LuaValue::from(function.as_str())])?;
                match found.first().and_then(LuaValue::as_str) {
                    Some(name) => l.call(name, &args).map(Some),
                    None => l.call(&function, &args).map(Some),
                }
            }
            other => other.map(Some),
        }
    });
    let (values, next) = match called {
        Ok((Some(values), next)) => (values, next),
        Ok((None, _)) => {
            return Outcome::ok(script_result.unwrap_or_else(|| Value::text("")));
        }
        Err(f) if part_of_a_computation(key, base) => {
            let text = f.text();
            tracing::debug!(error = %text, "Lua call failed; the slot's result is an error");
            let mut next = state.clone();
            next.insert(
                "results",
                Value::Message(
                    Message::new()
                        .with("status", 500i64)
                        .with("error", text.as_str())
                        .with("output", Message::new().with("data", text.as_str())),
                ),
            );
            return Outcome::ok(next);
        }
        Err(f) => return f.outcome(),
    };
    let (status, value) = match values.len() {
        1 => (
            Status::Ok,
            values.into_iter().next().unwrap_or(LuaValue::Nil),
        ),
        2 => {
            let mut it = values.into_iter();
            let s = it.next().unwrap_or(LuaValue::Nil);
            let v = it.next().unwrap_or(LuaValue::Nil);
            match s.as_str() {
                Some(s) => (Status::from_atom(s), v),
                None => {
                    return Outcome::error_status(
                        500,
                        &format!(
                            "`{function}` returned two values; the first must be a status string, not a {}.",
                            s.type_name()
                        ),
                    );
                }
            }
        }
        n => {
            return Outcome::error_status(
                500,
                &format!(
                    "`{function}` returned {n} values; a Lua function called by the device returns a value, or a status and a value."
                ),
            );
        }
    };
    let value = match from_lua(&value) {
        Some(Value::Message(mut m)) => {
            if let Some(private) = state.private() {
                m.insert("priv", Value::Message(private.clone()));
            }
            m.remove_private(SCRIPT_RESULT_KEY);
            install(&mut m, next);
            Value::Message(m)
        }
        Some(v) => v,
        None => Value::text(""),
    };
    Outcome { status, value }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use hb_core::{NodeHandle, ResolveOpts};

    const SCRIPT: &str = r#"
function assoctable() return { a = 1, b = 2, c = 3 } end
function ListTable() return { 1, 2, 3 } end
function error_response() return "error", "Very bad, but Lua caught it." end
function hello(base, req, opts)
  base.hello = req.name or "world"
  return base
end
function getenv() return os.getenv("PWD") end
function boom() error("kaboom") end
function resolve_hello()
  local status, v = ao.resolve({ path = "/hello", hello = "Hello, AO world!" })
  return v
end
function resolve_relay()
  local status, v = ao.resolve({ path = "/~relay@1.0/call?relay-path=/x" })
  return status
end
function set_k(base) return ao.set(base, "k", "v") end
function event() return ao.event("x") end
function bump() Count = (Count or 0) + 1 return Count end
function count() return Count end
function conv() return { ["1"] = "x", ["2"] = "y" }, nil end
function strlist() return { ["1"] = "x", ["2"] = "y" } end
function empty() return {} end
function float() return 4.0 end
function bools() return { t = true, f = false } end
function arr(base) return #base.items end
function spin() while true do end end
function bomb() local t = {} while true do t[#t + 1] = string.rep("x", 1 << 20) .. #t end end
function keyorder()
  local t = {}
  for i = 1, 1000 do t["key" .. i] = i end
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  return table.concat(out, ",")
end
function rand() return math.random(1, 1000000) .. ":" .. os.time() end
function compute(base, req)
  base.results = { output = { body = 42 } }
  return base
end
"#;

    fn ctx_with(node: Message) -> Ctx {
        Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(hb_core::MemoryCache::new(1000)),
            NodeHandle::new(node),
        )
        .with_opts(ResolveOpts::default().internal())
    }

    fn ctx() -> Ctx {
        ctx_with(Message::new())
    }

    fn module(src: &str) -> Message {
        Message::new()
            .with("content-type", "application/lua")
            .with("body", src)
    }

    fn base() -> Message {
        Message::new()
            .with("device", NAME)
            .with("module", module(SCRIPT))
    }

    fn resolve(ctx: &Ctx, base: &Message, path: &str) -> Outcome {
        ctx.resolve(
            Value::Message(base.clone()),
            Message::new().with("path", path),
        )
        .unwrap()
    }

    fn resolve_req(ctx: &Ctx, base: &Message, req: Message) -> Outcome {
        ctx.resolve(Value::Message(base.clone()), req).unwrap()
    }

    fn body(o: &Outcome) -> String {
        o.value
            .as_message()
            .and_then(|m| m.get("body"))
            .map(|b| String::from_utf8_lossy(&b.to_display_bytes()).into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn checklist_1_to_5_calls_and_results() {
        let ctx = ctx();
        let b = base().with("parameters", Value::list(vec![]));
        let o = resolve(&ctx, &b, "assoctable/b");
        assert_eq!(o, Outcome::ok(Value::Integer(2)));
        let o = resolve(&ctx, &b, "ListTable");
        assert_eq!(
            o.value,
            Value::list(vec![1i64.into(), 2i64.into(), 3i64.into()])
        );
        let o = resolve(&ctx, &b, "error_response");
        assert_eq!(o.status, Status::Error);
        assert_eq!(o.value, Value::text("Very bad, but Lua caught it."));

        // Two modules as a list: both work.
        let two = Message::new().with("device", NAME).with(
            "module",
            Value::list(vec![
                Value::Message(module(SCRIPT)),
                Value::Message(module("function test_second_script() return 4 end")),
            ]),
        );
        assert_eq!(
            resolve(&ctx, &two, "test_second_script").value,
            Value::Integer(4)
        );
        assert!(resolve(&ctx, &two, "ListTable").is_ok());

        // Default arguments: (base, req, {}).
        let b = base().with("test-value", 42i64);
        let o = resolve(&ctx, &b, "hello");
        let m = o.value.as_message().unwrap();
        assert_eq!(m.get("test-value"), Some(&Value::Integer(42)));
        assert_eq!(m.get("hello"), Some(&Value::text("world")));
        assert!(state_of(m).is_some(), "the state stays with the result");
        let o = resolve_req(
            &ctx,
            &b,
            Message::new().with("path", "hello").with("name", "Alice"),
        );
        assert_eq!(
            o.value.as_message().unwrap().get("hello"),
            Some(&Value::text("Alice"))
        );
        // 13: a key of the base is read without Lua.
        assert_eq!(resolve(&ctx, &b, "test-value").value, Value::Integer(42));
    }

    #[test]
    fn checklist_6_function_and_parameters_override() {
        let ctx = ctx();
        let o = resolve_req(
            &ctx,
            &base(),
            Message::new()
                .with("path", "anything")
                .with("function", "arr")
                .with(
                    "parameters",
                    Value::list(vec![Value::Message(Message::new().with(
                        "items",
                        Value::list(vec![Value::text("a"), Value::text("b")]),
                    ))]),
                ),
        );
        assert_eq!(o.value, Value::Integer(2));
    }

    #[test]
    fn checklist_7_8_sandbox() {
        let ctx = ctx();
        let b = Message::new()
            .with("device", NAME)
            .with("sandbox", Value::boolean(true))
            .with(
                "module",
                module("Top = require and 'ok' function getenv() return os.getenv('PWD') end function top() return Top end"),
            );
        let o = resolve(&ctx, &b, "getenv");
        assert_eq!(o.status, Status::Error, "{o:?}");
        assert_eq!(resolve(&ctx, &b, "top").value, Value::text("ok"));
        // Without the sandbox: os.getenv answers nil (no environment).
        let o = resolve(&ctx, &base(), "getenv");
        assert!(o.is_ok(), "{o:?}");
    }

    #[test]
    fn checklist_9_to_11_ao_library() {
        let ctx = ctx();
        let o = resolve(&ctx, &base(), "resolve_hello");
        assert_eq!(o.value, Value::text("Hello, AO world!"));
        let sandboxed = base().with(
            "device-sandbox",
            Value::list(vec![Value::text("message@1.0")]),
        );
        assert_eq!(
            resolve(&ctx, &sandboxed, "resolve_hello").value,
            Value::text("Hello, AO world!")
        );
        assert_eq!(
            resolve(&ctx, &sandboxed, "resolve_relay").value,
            Value::text("error")
        );
        let bad = base().with("device-sandbox", Value::list(vec![Value::text("nope@9.9")]));
        assert!(!resolve(&ctx, &bad, "init").is_ok());
        let o = resolve(&ctx, &base(), "set_k");
        assert_eq!(
            o.value.as_message().unwrap().get("k"),
            Some(&Value::text("v"))
        );
        assert_eq!(resolve(&ctx, &base(), "event").value, Value::text("ok"));
        // User code cannot reach the host function.
        let b = Message::new()
            .with("device", NAME)
            .with("module", module("function f() return type(_hb) end"));
        assert_eq!(resolve(&ctx, &b, "f").value, Value::text("nil"));
    }

    #[test]
    fn checklist_12_15_errors() {
        let ctx = ctx();
        let o = resolve(&ctx, &base(), "boom");
        assert_eq!(o.status, Status::Error);
        let m = o.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(500)));
        assert!(body(&o).contains("kaboom"), "{o:?}");
        // Missing module.
        let o = resolve(&ctx, &Message::new().with("device", NAME), "x");
        assert_eq!(o.value, Value::text("no-modules-found"));
        // Unknown module ID.
        let id = "b".repeat(43);
        let o = resolve(
            &ctx,
            &Message::new()
                .with("device", NAME)
                .with("module", id.as_str()),
            "x",
        );
        assert_eq!(body(&o), format!("Lua module '{id}' not found."));
        // A missing function.
        let o = resolve(&ctx, &base(), "nope");
        assert_eq!(o.status, Status::Error);
        assert!(body(&o).contains("nope"), "{o:?}");
        // A syntax error fails init.
        let o = resolve(
            &ctx,
            &Message::new()
                .with("device", NAME)
                .with("module", module("x = = 1")),
            "init",
        );
        assert!(!o.is_ok());
    }

    #[test]
    fn checklist_14_functions() {
        let o = resolve(&ctx(), &base(), "functions");
        let Value::List(names) = o.value else {
            panic!("{o:?}")
        };
        for f in ["assoctable", "hello", "compute", "print"] {
            assert!(names.contains(&Value::text(f)), "{f}");
        }
        let mut sorted = names.to_vec();
        sorted.sort_by(|a, b| a.as_bytes().cmp(&b.as_bytes()));
        assert_eq!(sorted, *names);
    }

    #[test]
    fn checklist_16_snapshot_and_normalize() {
        let ctx = ctx();
        let o = resolve(&ctx, &base(), "init");
        let state = o.value.as_message().unwrap().clone();
        // Calls on the state through a message result keep it.
        let b = state.clone().with("function", "bump");
        let out = resolve(&ctx, &b, "compute");
        assert_eq!(out.value, Value::Integer(1));
        // `bump` returned a number: no state was carried, the base still has Count nil.
        let o = resolve(&ctx, &state, "count");
        assert_eq!(o.value, Value::text(""), "{o:?}");
        let setter = Message::new().with("device", NAME).with(
            "module",
            module("function put(base) X = 1337 return base end function get() return X end"),
        );
        let s1 = resolve(&ctx, &setter, "put")
            .value
            .as_message()
            .unwrap()
            .clone();
        let snap = resolve(&ctx, &s1, "snapshot");
        assert!(snap.is_ok(), "{snap:?}");
        let cold = setter.with("snapshot", snap.value.clone());
        let restored = resolve(&ctx, &cold, "normalize");
        let restored = restored.value.as_message().unwrap().clone();
        assert_eq!(resolve(&ctx, &restored, "get").value, Value::Integer(1337));
        // Without a live state and without a snapshot: an error.
        let o = resolve(&ctx, &base(), "snapshot");
        assert!(!o.is_ok());
        let o = resolve(
            &ctx,
            &Message::new()
                .with("device", NAME)
                .with("module", module("")),
            "normalize",
        );
        assert!(!o.is_ok());
    }

    #[test]
    fn checklist_17_conversion() {
        let ctx = ctx();
        assert_eq!(
            resolve(&ctx, &base(), "strlist").value,
            Value::list(vec![Value::text("x"), Value::text("y")])
        );
        assert_eq!(resolve(&ctx, &base(), "empty").value, Value::list(vec![]));
        assert_eq!(resolve(&ctx, &base(), "float").value, Value::Float(4.0));
        let o = resolve(&ctx, &base(), "bools");
        let m = o.value.as_message().unwrap();
        assert_eq!(m.get("t"), Some(&Value::boolean(true)));
        assert_eq!(m.get("f"), Some(&Value::boolean(false)));
        // A numbered message arrives as an array.
        let o = resolve_req(
            &ctx,
            &base(),
            Message::new().with("path", "arr").with(
                "parameters",
                Value::list(vec![Value::Message(Message::new().with(
                    "items",
                    Message::new().with("1", "a").with("2", "b").with("3", "c"),
                ))]),
            ),
        );
        assert_eq!(o.value, Value::Integer(3));
        // Round trips.
        let m = Message::new()
            .with("i", 7i64)
            .with("f", 0.5f64)
            .with("s", "text")
            .with("b", Value::boolean(true))
            .with("l", Value::list(vec![1i64.into(), Value::text("x")]))
            .with(
                "n",
                Message::new().with("deep", Message::new().with("x", 1i64)),
            );
        assert_eq!(from_lua(&message_to_lua(&m)), Some(Value::Message(m)));
    }

    #[test]
    fn checklist_18_compute_in_a_process_state() {
        let ctx = ctx();
        let b = base().with("process", Message::new().with("type", "Process"));
        let o = resolve(&ctx, &b, "compute/results/output/body");
        assert_eq!(o.value, Value::Integer(42));
    }

    #[test]
    fn checklist_22_determinism() {
        let ctx = ctx();
        let a = resolve(&ctx, &base(), "keyorder").value;
        let b = resolve(&ctx, &base(), "keyorder").value;
        assert_eq!(a, b);
        // The generator is seeded from the assignment.
        let req = |ts: i64| {
            Message::new()
                .with("path", "rand")
                .with("timestamp", ts)
                .with("slot", 3i64)
        };
        let r1 = resolve_req(&ctx, &base(), req(1_700_000_000_000)).value;
        let r2 = resolve_req(&ctx, &base(), req(1_700_000_000_000)).value;
        let r3 = resolve_req(&ctx, &base(), req(1_700_000_001_000)).value;
        assert_eq!(r1, r2);
        assert_ne!(r1, r3);
        assert!(
            String::from_utf8_lossy(&r1.to_display_bytes()).ends_with(":1700000000"),
            "{r1:?}"
        );
    }

    #[test]
    fn checklist_23_script_result() {
        let ctx = ctx();
        let b = Message::new()
            .with("device", NAME)
            .with("script", "return 2 + 2");
        assert_eq!(resolve(&ctx, &b, "result").value, Value::Integer(4));
        let b = Message::new()
            .with("device", NAME)
            .with("script", "return 1 / 2");
        assert_eq!(resolve(&ctx, &b, "result").value, Value::Float(0.5));
    }

    #[test]
    fn limits_stop_calls_and_the_state_goes_on() {
        let ctx = ctx_with(
            Message::new()
                .with(FUEL_OPTION, 50_000_000i64)
                .with(MEMORY_OPTION, 64i64 << 20),
        );
        let state = resolve(&ctx, &base(), "init")
            .value
            .as_message()
            .unwrap()
            .clone();
        let set = resolve(&ctx, &state.clone().with("function", "bump"), "x");
        assert_eq!(set.value, Value::Integer(1));
        let started = std::time::Instant::now();
        let o = resolve(&ctx, &state, "spin");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(o.status, Status::Error);
        assert!(body(&o).contains("instruction budget"), "{o:?}");
        let o = resolve(&ctx, &state, "bomb");
        assert_eq!(o.status, Status::Error);
        assert!(
            body(&o).contains("memory") || body(&o).contains("budget"),
            "{o:?}"
        );
        // The state still works.
        assert_eq!(
            resolve(&ctx, &state, "assoctable/a").value,
            Value::Integer(1)
        );
    }

    fn signed(m: Message, id: &str, committer: &str) -> Message {
        m.with(
            "commitments",
            Message::new().with(
                id,
                Message::new()
                    .with("alg", "rsa-pss-sha512")
                    .with("committer", committer)
                    .with("commitment-device", "httpsig@1.0"),
            ),
        )
    }

    const PID: &str = "PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP";
    const OWNER: &str = "OOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO";

    /// Computes one aos slot on `state`; the new state.
    fn aos_slot(ctx: &Ctx, state: &Message, slot: i64, body: Message) -> Message {
        let req = Message::new()
            .with("path", "compute")
            .with("slot", slot)
            .with("process", PID)
            .with("timestamp", 1_700_000_000_000i64 + slot)
            .with("body", body);
        let o = resolve_req(ctx, state, req);
        assert!(o.is_ok(), "{o:?}");
        o.value.as_message().unwrap().clone()
    }

    /// A lua@5.3a process on the aos library, before slot 0.
    fn aos_process(process: Message) -> Message {
        Message::new()
            .with("device", NAME)
            .with("module", AOS_MODULE)
            .with("process", process)
    }

    /// An `Eval` of `code` by the owner, with a commitment ID made of `n`.
    fn eval(code: &str, n: &str) -> Message {
        signed(
            Message::new().with("action", "Eval").with("data", code),
            &n.repeat(43),
            OWNER,
        )
    }

    fn at(state: &Message, path: &str) -> Option<Value> {
        let mut v = Value::Message(state.clone());
        for p in path.split('/') {
            v = match v {
                Value::Message(m) => m.get(p)?.clone(),
                Value::List(l) => l.get(p.parse::<usize>().ok()?.checked_sub(1)?)?.clone(),
                _ => return None,
            };
        }
        Some(v)
    }

    fn data(state: &Message) -> Value {
        at(state, "results/output/data").unwrap_or(Value::text("<none>"))
    }

    #[test]
    fn checklist_20_21_aos_library() {
        let ctx = ctx();
        let process = signed(
            Message::new()
                .with("type", "Process")
                .with("authority", OWNER)
                .with("allowedsender", OWNER),
            PID,
            OWNER,
        );
        let state = aos_process(process);
        let state = aos_slot(&ctx, &state, 0, Message::new().with("type", "Process"));
        let state = aos_slot(
            &ctx,
            &state,
            1,
            eval(
                "Count = 0; function add() Send({Target = 'Foo', Data = 'Bar'}); Count = Count + 1 end; add(); return Count",
                "a",
            ),
        );
        assert_eq!(data(&state), Value::text("1"));
        let outbox = at(&state, "results/outbox").unwrap();
        let Value::List(outbox) = outbox else {
            panic!("{outbox:?}")
        };
        assert_eq!(outbox.len(), 1);
        let m = outbox[0].as_message().unwrap();
        assert_eq!(m.get("target"), Some(&Value::text("Foo")));
        assert_eq!(m.get("data"), Some(&Value::text("Bar")));
        assert_eq!(m.get("reference"), Some(&Value::text("1")));

        // A stranger's message claiming another process.
        let stranger = signed(
            Message::new()
                .with("action", "Eval")
                .with("data", "1 + 1")
                .with("from-process", "1234"),
            &"s".repeat(43),
            "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS",
        );
        let state = aos_slot(&ctx, &state, 2, stranger);
        assert_eq!(data(&state), Value::text("Message is not trusted."));

        // Handlers: one added by Eval runs on a matching message; print is the output.
        let state = aos_slot(
            &ctx,
            &state,
            3,
            eval(
                "Handlers.add('Ping', { Action = 'Ping' }, function(m) Count = Count + 1; print('pong ' .. Count .. ' ' .. m.From:sub(1, 3)); Send({ Target = m.From, Action = 'Pong' }) end)",
                "b",
            ),
        );
        let ping = signed(
            Message::new().with("action", "Ping"),
            &"c".repeat(43),
            OWNER,
        );
        let state = aos_slot(&ctx, &state, 4, ping);
        assert_eq!(data(&state), Value::text("pong 2 OOO"));
        // The state keeps the globals across slots; errors are reported.
        let state = aos_slot(&ctx, &state, 5, eval("Count", "d"));
        assert_eq!(data(&state), Value::text("2"));
        let state = aos_slot(&ctx, &state, 6, eval("error('boom')", "e"));
        assert!(
            String::from_utf8_lossy(&data(&state).to_display_bytes()).contains("boom"),
            "{:?}",
            data(&state)
        );
        // Unhandled messages go to the Inbox; ao.env has the process's tags.
        let other = signed(
            Message::new().with("action", "Other"),
            &"f".repeat(43),
            OWNER,
        );
        let state = aos_slot(&ctx, &state, 7, other);
        let state = aos_slot(
            &ctx,
            &state,
            8,
            eval(
                "#Inbox .. ' ' .. ao.env.Process.Tags.AllowedSender:sub(1, 2) .. ' ' .. ao.id:sub(1, 2)",
                "g",
            ),
        );
        assert_eq!(data(&state), Value::text("1 OO PP"));
        // The json module: sorted keys, escapes, and back.
        let state = aos_slot(
            &ctx,
            &state,
            9,
            eval(
                r#"require('json').encode({ b = 1, a = { 1, 2.5, "x\n" }, c = true })"#,
                "h",
            ),
        );
        assert_eq!(
            data(&state),
            Value::text(r#"{"a":[1,2.5,"x\n"],"b":1,"c":true}"#)
        );
        let state = aos_slot(
            &ctx,
            &state,
            10,
            eval(
                r#"local j = require('json').decode('{"x":[1,2.5,"\\u00e9"],"y":null}') return j.x[3] .. math.type(j.x[1]) .. #j.x"#,
                "i",
            ),
        );
        assert_eq!(data(&state), Value::text("éinteger3"));
        // JSON data is decoded for handlers.
        let state = aos_slot(
            &ctx,
            &state,
            11,
            eval(
                "Handlers.add('J', { Action = 'J' }, function(m) print(m.Data.n + 1) end)",
                "j",
            ),
        );
        let json_msg = signed(
            Message::new()
                .with("action", "J")
                .with("content-type", "application/json")
                .with("data", r#"{"n": 41}"#),
            &"k".repeat(43),
            OWNER,
        );
        let state = aos_slot(&ctx, &state, 12, json_msg);
        assert_eq!(data(&state), Value::text("42"));
    }

    /// On a thread with stack enough (as the `hb` binary's request threads), calls run
    /// on that thread itself, `ao.resolve` coming back to it included, and the limits,
    /// errors and the aos library behave as on the Lua threads.
    #[test]
    fn calls_run_inline_on_a_big_stack() {
        std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(|| {
                assert!(hb_wasm::stack_enough_for_wasm());
                checklist_9_to_11_ao_library();
                checklist_12_15_errors();
                limits_stop_calls_and_the_state_goes_on();
                checklist_20_21_aos_library();
                assert!(
                    !ON_LUA_THREAD.with(Cell::get),
                    "the mark is taken off again"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// `Send(...).onReply(fn)` (and its alias `receive`): the reply from the target,
    /// carrying `X-Reference` = the sent message's `Reference`, runs `fn` once; a
    /// second reply with the same reference is not handled by it (it goes to the
    /// Inbox).
    #[test]
    fn aos_on_reply() {
        let ctx = ctx();
        let other = "F".repeat(43);
        let process = signed(
            Message::new()
                .with("type", "Process")
                .with("authority", OWNER),
            PID,
            OWNER,
        );
        let state = aos_process(process);
        let reply = |reference: &str, data: &str, n: &str| {
            signed(
                Message::new()
                    .with("action", "Answer")
                    .with("data", data)
                    .with("from-process", other.as_str())
                    .with("x-reference", reference),
                &n.repeat(43),
                OWNER,
            )
        };
        let state = aos_slot(&ctx, &state, 0, Message::new().with("type", "Process"));
        let state = aos_slot(
            &ctx,
            &state,
            1,
            eval(
                &format!(
                    "Send({{ Target = '{other}', Action = 'Ask' }}).onReply(function(m) Answer = m.Data; print('got ' .. m.Data) end); \
                     Send({{ Target = '{other}', Action = 'Ask2' }}).receive(function(m) Answer2 = m.Data end); return #Handlers.list"
                ),
                "a",
            ),
        );
        assert_eq!(data(&state), Value::text("2"), "one once-handler per reply");
        let outbox = at(&state, "results/outbox").unwrap();
        let Value::List(outbox) = outbox else {
            panic!("{outbox:?}")
        };
        let references: Vec<_> = outbox
            .iter()
            .map(|m| m.as_message().unwrap().get("reference").cloned())
            .collect();
        assert_eq!(
            references,
            vec![Some(Value::text("1")), Some(Value::text("2"))]
        );
        // A reply to the first message runs its handler, which then goes away.
        let state = aos_slot(&ctx, &state, 2, reply("1", "forty-two", "b"));
        assert_eq!(data(&state), Value::text("got forty-two"));
        let state = aos_slot(&ctx, &state, 3, reply("2", "second", "c"));
        let state = aos_slot(&ctx, &state, 4, reply("1", "again", "d"));
        let state = aos_slot(
            &ctx,
            &state,
            5,
            eval(
                "Answer .. ' ' .. Answer2 .. ' ' .. #Handlers.list .. ' ' .. #Inbox",
                "e",
            ),
        );
        assert_eq!(data(&state), Value::text("forty-two second 0 1"));
    }
}
