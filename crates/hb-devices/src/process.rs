//! `process@1.0`: AO processes (spec 04 §1).
//!
//! A process is a message whose device is `process@1.0`. It computes nothing itself:
//! each operation runs on the process as one of its sub-devices ("run as", §1.3):
//! `schedule` and `slot` as its `scheduler-device` (default `scheduler@1.0`),
//! `compute`, `snapshot` and the dry-run as its `execution-device`, `push` as its
//! `push-device` (default `push@1.0`). Any other key reads the process message.
//!
//! `compute` (§1.5) folds the scheduled assignments into the process state slot by
//! slot. Each process has a *worker* here: the live state kept in memory between
//! requests (so computing slot *n + 1* after slot *n* runs one slot), one computation
//! at a time per process. Every computed slot is written to the process cache
//! (`computed/<PID>/slot/<n>` and `computed/<PID>/<state ID>`, §1.10), and a
//! snapshot of the execution state (`computed/<PID>/snapshot/<n>`) when the snapshot
//! policy says so; a worker idle for longer than `process_worker_max_idle` stores a
//! snapshot of its live state and is dropped, and, like after a restart, its process
//! later continues from its latest stored snapshot.
//!
//! Options (node message): `process_snapshot_slots` (snapshot every N slots; the
//! reference's `process_cache_frequency` is read too), `process_snapshot_time`
//! (seconds: also snapshot when that long has passed since the last one); without
//! them a snapshot is taken when the slots since the last one cost ten times what it
//! did, or a minute has passed ([`SnapshotPolicy`]). `process_worker_max_idle`
//! (milliseconds, default 300000).
//!
//! Dry runs compute a request against the latest state without scheduling it or
//! storing anything: `POST compute` with a `dryrun` message, and aoconnect's
//! `/<pid>~process@1.0/as=execution/compute&K=V` (the `as` key answers the latest
//! state prepared for the named role, on which the next step runs directly).
//!
//! `results` on a computed state reads its results; with `results: <slot or message
//! ID>` in the request (aoconnect's `/<pid>~process@1.0/compute/results=N`) it answers
//! that slot's results instead, computed if need be.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome};
use hb_core::message::id_all;
use hb_core::resolve::mark_volatile;
use hb_core::{Ctx, Message, ResolveError, Value};
use parking_lot::Mutex;

use crate::scheduler::committed_only;

/// The device's name.
pub const NAME: &str = "process@1.0";

/// How many live workers a node keeps at most; the least recently used goes first.
const MAX_WORKERS: usize = 1024;

/// How many of a process's latest slots `results=<message ID>` looks through.
const RESULTS_SEARCH_SLOTS: usize = 4096;

/// The `process@1.0` device of one node: its live workers.
#[derive(Default)]
pub struct Process {
    workers: Mutex<HashMap<String, Arc<Mutex<Worker>>>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("workers", &self.workers.lock().len())
            .finish()
    }
}

/// The live state of one process.
struct Worker {
    /// The last computed state, if one is live.
    state: Option<Message>,
    /// When the worker was last used.
    used: Instant,
    /// The slot of the latest snapshot stored of (or restored into) the live state.
    snapshot_slot: Option<i64>,
    /// When that snapshot was stored or restored.
    snapshot_at: Instant,
    /// What the latest snapshot cost to take and store.
    snapshot_cost: Duration,
    /// The computing time spent on slots since then.
    since_snapshot: Duration,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            state: None,
            used: Instant::now(),
            snapshot_slot: None,
            snapshot_at: Instant::now(),
            snapshot_cost: Duration::ZERO,
            since_snapshot: Duration::ZERO,
        }
    }

    /// Takes a snapshot of `state` (at slot `n`) and stores it at
    /// `computed/<pid>/snapshot/<n>`; the cost is measured for the policy.
    fn store_snapshot(&mut self, pid: &str, n: i64, state: &Message, ctx: &Ctx) {
        let started = Instant::now();
        let stored = snapshot(state, ctx).and_then(|snap| {
            ctx.cache()
                .store_message(&snap, &[snapshot_path(pid, n)])
                .map_err(|e| ResolveError::call(NAME, "snapshot", e.to_string()))
        });
        match stored {
            Ok(_) => {
                self.snapshot_slot = Some(n);
                self.snapshot_at = Instant::now();
                self.snapshot_cost = started.elapsed();
                self.since_snapshot = Duration::ZERO;
            }
            Err(e) => tracing::warn!(process = %pid, slot = n, error = %e, "no snapshot"),
        }
    }

    /// Stores a snapshot of the live state if it is newer than the latest one (a
    /// worker about to be dropped: the process later continues from there).
    fn flush(&mut self, pid: &str, ctx: &Ctx) {
        let Some(state) = self.state.take() else {
            return;
        };
        let at = state.get("at-slot").and_then(Value::as_int).unwrap_or(-1);
        if at >= 0 && self.snapshot_slot.is_none_or(|s| s < at) {
            self.store_snapshot(pid, at, &state, ctx);
        }
    }
}

/// When a computed slot's snapshot is taken (§1.8; docs/adr/0006).
///
/// With `process_snapshot_slots` (or the reference's `process_cache_frequency`) set,
/// at every slot that it divides, and when `process_snapshot_time` seconds have
/// passed since the last one, if that is set too. By default the cost decides: a
/// snapshot when the slots computed since the last one took [`SNAPSHOT_COST_RATIO`]
/// times what that snapshot cost, or when [`DEFAULT_SNAPSHOT_SECS`] (or
/// `process_snapshot_time`) have passed; and the first slot a worker computes. So a
/// small state is kept at nearly every slot, while a 12 MiB aos memory is not copied,
/// hashed and written at every one, and snapshots take at most about a tenth of the
/// computing time. A worker dropped (idle, or the least recently used) stores its
/// live state's snapshot first.
#[derive(Debug, Clone, Copy)]
struct SnapshotPolicy {
    every: Option<i64>,
    every_secs: Option<Duration>,
}

/// See [`SnapshotPolicy`].
const SNAPSHOT_COST_RATIO: u32 = 10;

/// See [`SnapshotPolicy`].
const DEFAULT_SNAPSHOT_SECS: u64 = 60;

impl SnapshotPolicy {
    fn of(ctx: &Ctx) -> SnapshotPolicy {
        SnapshotPolicy {
            every: int_opt(ctx, "process_snapshot_slots")
                .or_else(|| int_opt(ctx, "process_cache_frequency"))
                .map(|n| n.max(1)),
            every_secs: int_opt(ctx, "process_snapshot_time")
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }
    }

    /// Whether slot `n`, just computed by `worker`, is snapshotted.
    fn due(&self, n: i64, worker: &Worker) -> bool {
        let elapsed = worker.snapshot_at.elapsed();
        match self.every {
            Some(every) => n % every == 0 || self.every_secs.is_some_and(|d| elapsed >= d),
            None => {
                worker.snapshot_slot.is_none()
                    || worker.since_snapshot >= worker.snapshot_cost * SNAPSHOT_COST_RATIO
                    || elapsed
                        >= self
                            .every_secs
                            .unwrap_or(Duration::from_secs(DEFAULT_SNAPSHOT_SECS))
            }
        }
    }
}

/// The roles a process delegates to (§1.3) and their default devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Scheduler,
    Execution,
    Push,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Execution => "execution",
            Role::Push => "push",
        }
    }

    fn default_device(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler@1.0",
            Role::Execution => "genesis-wasm@1.0",
            Role::Push => "push@1.0",
        }
    }

    fn named(name: &str) -> Option<Role> {
        match name.to_ascii_lowercase().as_str() {
            "scheduler" => Some(Role::Scheduler),
            "execution" => Some(Role::Execution),
            "push" => Some(Role::Push),
            _ => None,
        }
    }
}

impl Device for Process {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::None,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "compute", "now", "schedule", "slot", "push", "snapshot", "as", "results",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "schedule" | "slot" => run_as(Role::Scheduler, base, req, ctx),
            "push" => run_as(Role::Push, base, req, ctx),
            "snapshot" => snapshot(&ensure_process_key(base, ctx), ctx).map(Outcome::ok),
            "compute" => self.compute(base, req, ctx),
            "now" => self.now(base, ctx),
            "as" => self.prepared_as(base, req, ctx),
            "results" => self.results(base, req, ctx),
            other => Err(ResolveError::call(NAME, other, "no such function")),
        }
    }
}

/// The process ID of a state: ID\*(`process`).
fn process_id(state: &Message) -> Result<String, ResolveError> {
    let def = state
        .get("process")
        .and_then(Value::as_message)
        .unwrap_or(state);
    Ok(id_all(def)?.to_human())
}

/// `state` with a `process` key (§1.4): the committed-only definition. A state never
/// carries the definition's top-level commitments (its keys move on).
fn ensure_process_key(base: &Message, ctx: &Ctx) -> Message {
    if base
        .get("process")
        .is_some_and(|p| p.as_message().is_some())
    {
        return base.clone();
    }
    let signed = base
        .get("commitments")
        .and_then(Value::as_message)
        .is_some_and(|c| !c.is_empty());
    let definition = if signed {
        committed_only(base).unwrap_or_else(|_| base.clone())
    } else {
        // Commitments lost (a committed key was overwritten): the stored original.
        id_all(base)
            .ok()
            .and_then(|id| ctx.cache().read_message(&id))
            .unwrap_or_else(|| base.clone())
    };
    let mut state = base.clone().without("commitments");
    state.insert("process", Value::Message(definition));
    state
}

/// The device a role runs on, named by `<role>-device` (or the default).
fn role_device(state: &Message, role: Role) -> String {
    let key = format!("{}-device", role.key());
    let from_def = || {
        state
            .get("process")
            .and_then(Value::as_message)
            .and_then(|p| p.get_str(&key).map(str::to_owned))
    };
    let named = state.get_str(&key).map(str::to_owned).or_else(from_def);
    if role == Role::Execution
        && state
            .get("process")
            .and_then(Value::as_message)
            .unwrap_or(state)
            .get_str("variant")
            == Some("ao.TN.1")
    {
        return "genesis-wasm@1.0".into();
    }
    named.unwrap_or_else(|| role.default_device().into())
}

/// `state` prepared to run as `role` (§1.3 steps 1–4), and the device it had.
fn prepare(state: &Message, role: Role, ctx: &Ctx) -> (Message, Option<Value>, String) {
    let mut prepared = ensure_process_key(state, ctx);
    let original = prepared.get("device").cloned();
    let device = role_device(&prepared, role);
    prepared.insert("device", Value::text(&device));
    if prepared.get("input-prefix").is_none() {
        prepared.insert("input-prefix", Value::text("process"));
    }
    if let Some(prefixes) = prepared
        .get(&format!("{}-output-prefixes", role.key()))
        .cloned()
    {
        prepared.insert("output-prefixes", prefixes);
    }
    (prepared, original, device)
}

/// Resolves `req` on `state` as `role` (§1.3), restoring the process device on a
/// message result that still has the role's device.
fn run_as(role: Role, state: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
    let (prepared, original, device) = prepare(state, role, ctx);
    let out = ctx
        .internal()
        .resolve(Value::Message(prepared), req.clone())?;
    Ok(restore_device(out, &device, original))
}

fn restore_device(out: Outcome, device: &str, original: Option<Value>) -> Outcome {
    match out {
        Outcome {
            status: hb_core::device::Status::Ok,
            value: Value::Message(mut m),
        } if m.get_str("device") == Some(device) => {
            match original {
                Some(d) => m.insert("device", d),
                None => {
                    m.remove("device");
                }
            }
            Outcome::ok(m)
        }
        other => other,
    }
}

/// `snapshot` (§1.8): the execution device's snapshot of `state`, as a map.
fn snapshot(state: &Message, ctx: &Ctx) -> Result<Message, ResolveError> {
    let req = Message::new().with("path", "snapshot").with("mode", "Map");
    let out = run_as(Role::Execution, state, &req, ctx)?;
    let mut snap = match out.value {
        Value::Message(m) if out.status == hb_core::device::Status::Ok => m,
        _ => Message::new(),
    };
    snap.insert("cache-control", Value::list(vec![Value::text("store")]));
    Ok(snap)
}

/// An integer option of the node message.
fn int_opt(ctx: &Ctx, key: &str) -> Option<i64> {
    ctx.node().get().get(key).and_then(Value::as_int)
}

/// A failed computation: the error map with `phase` and `attempted-slot` (§1.5).
fn phase_error(out: Outcome, phase: &str, slot: i64) -> Outcome {
    let mut m = match out.value {
        Value::Message(m) => m,
        other => Message::new().with("error", other),
    };
    m.insert("phase", Value::text(phase));
    m.insert("attempted-slot", Value::Integer(slot));
    Outcome {
        status: out.status,
        value: Value::Message(m),
    }
}

/// Process cache paths (§1.10).
fn slot_path(pid: &str, slot: i64) -> String {
    format!("computed/{pid}/slot/{slot}")
}

/// Where the snapshot of a slot is stored (the seed tutorial's path; the reference
/// keeps it inside the slot's state instead).
fn snapshot_path(pid: &str, slot: i64) -> String {
    format!("computed/{pid}/snapshot/{slot}")
}

/// The latest stored snapshot at or below `limit`, in the state of its slot (under
/// `snapshot`, as §1.8 stores it). Data stored before snapshots had their own path
/// kept them inside the slot's state: those are found too.
fn latest_snapshot(pid: &str, limit: i64, ctx: &Ctx) -> Option<(i64, Message)> {
    let names = ctx
        .cache()
        .list(&format!("computed/{pid}/snapshot"))
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut slots: Vec<i64> = names
        .iter()
        .filter_map(|n| n.parse().ok())
        .filter(|n| *n <= limit)
        .collect();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    // Bounded: two reads per stored snapshot at most.
    for slot in slots {
        let snap = match ctx.cache().read_path(&snapshot_path(pid, slot)) {
            Ok(Some(Value::Message(m))) => m,
            _ => continue,
        };
        if let Some(mut state) = read_slot(pid, slot, ctx) {
            state.insert("snapshot", Value::Message(snap));
            return Some((slot, state));
        }
    }
    latest(pid, Some("snapshot"), Some(limit), ctx)
}

/// The stored state of `slot`, if any.
fn read_slot(pid: &str, slot: i64, ctx: &Ctx) -> Option<Message> {
    match ctx.cache().read_path(&slot_path(pid, slot)) {
        Ok(Some(Value::Message(m))) => Some(m),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(process = %pid, slot, error = %e, "cannot read a computed slot");
            None
        }
    }
}

/// `latest(P, required, limit)` (§1.10): the highest stored slot `≤ limit` whose state
/// has `required` (a key), with that state.
fn latest(
    pid: &str,
    required: Option<&str>,
    limit: Option<i64>,
    ctx: &Ctx,
) -> Option<(i64, Message)> {
    let names = ctx
        .cache()
        .list(&format!("computed/{pid}/slot"))
        .ok()
        .flatten()?;
    let mut slots: Vec<i64> = names
        .iter()
        .filter_map(|n| n.parse().ok())
        .filter(|n| limit.is_none_or(|l| *n <= l))
        .collect();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    // Bounded: one read per stored slot at most.
    for slot in slots {
        if let Some(state) = read_slot(pid, slot, ctx)
            && required.is_none_or(|k| state.get(k).is_some())
        {
            return Some((slot, state));
        }
    }
    None
}

/// How many computed states [`Process::run_slots`] writes in one batch at most: a run
/// of many slots pays one disk flush per batch, not per slot (states are derived
/// data: a crash mid-run loses only states a later request computes again).
const STATE_BATCH: usize = 64;

/// Computed states not yet written, with their cache paths.
type Pending = Vec<(Message, Vec<String>)>;

/// Queues the state of `slot` for the process cache (§1.10). Its snapshot, if one is
/// taken, is stored apart ([`snapshot_path`]): the state's ID does not depend on the
/// snapshot policy.
fn queue_state(pid: &str, slot: i64, state: &Message, pending: &mut Pending) -> Result<(), String> {
    let stored = state.without_private();
    let id = id_all(&stored).map_err(|e| e.to_string())?.to_human();
    let aliases = vec![slot_path(pid, slot), format!("computed/{pid}/{id}")];
    pending.push((stored, aliases));
    Ok(())
}

/// Writes the queued states, durably, in one batch.
fn store_states(batch: Pending, ctx: &Ctx) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    ctx.cache()
        .store_messages(&batch)
        .map_err(|e| e.to_string())
}

/// A thread that writes batches of computed states in the order it gets them, while
/// the computing thread goes on. At most one batch waits for it (bounded memory).
struct StateWriter<'scope> {
    batches: std::sync::mpsc::SyncSender<Pending>,
    thread: std::thread::ScopedJoinHandle<'scope, Result<(), String>>,
}

impl<'scope> StateWriter<'scope> {
    /// The writer, or `None` when no thread can be started (the caller then writes
    /// itself).
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        ctx: &'env Ctx,
    ) -> Option<Self> {
        let (batches, received) = std::sync::mpsc::sync_channel::<Pending>(1);
        let thread = std::thread::Builder::new()
            .name("hb-state-writer".into())
            .spawn_scoped(scope, move || {
                // The first failure ends the thread: the next `send` fails, so the
                // computing thread stops there, and `finish` says why.
                for batch in received {
                    store_states(batch, ctx)?;
                }
                Ok(())
            });
        match thread {
            Ok(thread) => Some(StateWriter { batches, thread }),
            Err(e) => {
                tracing::warn!(error = %e, "no state writer thread; writing on the computing thread");
                None
            }
        }
    }

    /// Queues `batch` (waiting while another one is queued); `false` when the
    /// writer has stopped after a failure ([`StateWriter::finish`] says which).
    fn send(&self, batch: Pending) -> bool {
        self.batches.send(batch).is_ok()
    }

    /// Waits until every batch sent is written; the first failure, if any.
    fn finish(self) -> Result<(), String> {
        drop(self.batches);
        self.thread
            .join()
            .unwrap_or_else(|_| Err("the state writer panicked".to_owned()))
    }
}

impl Process {
    /// The worker of `pid` (created empty), after dropping workers idle too long.
    fn worker(&self, pid: &str, ctx: &Ctx) -> Arc<Mutex<Worker>> {
        let max_idle = Duration::from_millis(
            int_opt(ctx, "process_worker_max_idle")
                .map_or(300_000, |v| u64::try_from(v).unwrap_or(0)),
        );
        let mut dropped = Vec::new();
        let worker = {
            let mut workers = self.workers.lock();
            // Drop idle workers, skipping busy ones; and keep the map bounded.
            let idle: Vec<String> = workers
                .iter()
                .filter(|(id, w)| {
                    id.as_str() != pid && w.try_lock().is_some_and(|w| w.used.elapsed() >= max_idle)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in idle {
                dropped.extend(workers.remove_entry(&id));
            }
            if workers.len() >= MAX_WORKERS
                && let Some(oldest) = workers
                    .iter()
                    .filter(|(id, _)| id.as_str() != pid)
                    .filter_map(|(id, w)| w.try_lock().map(|w| (id.clone(), w.used)))
                    .min_by_key(|(_, used)| *used)
                    .map(|(id, _)| id)
            {
                dropped.extend(workers.remove_entry(&oldest));
            }
            workers
                .entry(pid.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(Worker::new())))
                .clone()
        };
        // Outside the map's lock: their snapshots take a while.
        for (id, w) in dropped {
            w.lock().flush(&id, ctx);
        }
        worker
    }

    /// `compute` (§1.5).
    fn compute(&self, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let base = ensure_process_key(base, ctx);
        let pid = process_id(&base)?;
        if let Some(dry) = req.get("dryrun").and_then(Value::as_message) {
            return self.dry_run(&base, &pid, dry, ctx);
        }
        let Some(slot) = req.get("slot") else {
            // The latest stored state, else compute to the current slot.
            return match ctx.blocking(|| latest(&pid, None, None, ctx)) {
                Some((_, state)) => {
                    let mut state = as_result(state);
                    mark_volatile(&mut state);
                    Ok(Outcome::ok(state))
                }
                None => self.now(&base, ctx),
            };
        };
        let Some(target) = slot.as_int() else {
            return Ok(Outcome::error_status(
                400,
                &format!(
                    "`slot` must be an integer, not {:?}",
                    String::from_utf8_lossy(&slot.to_display_bytes())
                ),
            ));
        };
        if target < -1 {
            return Ok(Outcome::error_status(
                400,
                &format!("`slot` must be -1 (the initial state) or more, not {target}"),
            ));
        }
        ctx.blocking(|| self.compute_to(&base, &pid, target, ctx))
    }

    /// The state after slot `target`, computed from the live state, the latest stored
    /// snapshot, or the start.
    fn compute_to(&self, base: &Message, pid: &str, target: i64, ctx: &Ctx) -> DeviceResult {
        let worker = self.worker(pid, ctx);
        let mut worker = worker.lock();
        worker.used = Instant::now();
        let live_at = worker
            .state
            .as_ref()
            .and_then(|s| s.get("at-slot"))
            .and_then(Value::as_int);
        if live_at == Some(target)
            && let Some(state) = &worker.state
        {
            return Ok(Outcome::ok(as_result(state.clone())));
        }
        if let Some(stored) = read_slot(pid, target, ctx) {
            return Ok(Outcome::ok(as_result(stored)));
        }
        // A live state past the target stays live: the target is computed aside, from
        // a stored snapshot (an earlier slot asked for must not throw the live one away).
        let mut state = match worker
            .state
            .take_if(|_| live_at.is_none_or(|at| at < target))
        {
            Some(state) if live_at.is_some() => state,
            _ => {
                let (state, restored) = self.load(base, pid, target, ctx)?;
                if let Some(slot) = restored {
                    worker.snapshot_slot = Some(slot);
                    worker.snapshot_at = Instant::now();
                    worker.since_snapshot = Duration::ZERO;
                }
                state
            }
        };
        let result = self.run_slots(&mut state, &mut worker, pid, target, ctx);
        if worker.state.is_none() {
            worker.state = Some(state.clone());
        }
        match result {
            Ok(()) => Ok(Outcome::ok(as_result(state))),
            Err(out) => Ok(out),
        }
    }

    /// The state to start computing from (§1.5 step 4): the latest stored snapshot at
    /// or below `target`, normalised (and its slot), else the initialised process.
    fn load(
        &self,
        base: &Message,
        pid: &str,
        target: i64,
        ctx: &Ctx,
    ) -> Result<(Message, Option<i64>), ResolveError> {
        if let Some((slot, mut state)) = latest_snapshot(pid, target, ctx) {
            let req = Message::new().with("path", "normalize");
            let out = run_as(Role::Execution, &state, &req, ctx)?;
            if let (true, Value::Message(m)) = (out.is_ok(), out.value) {
                state = m;
            }
            state.remove("snapshot");
            return Ok((state, Some(slot)));
        }
        let req = Message::new().with("path", "init");
        let out = run_as(Role::Execution, base, &req, ctx)?;
        let mut state = match out.value {
            Value::Message(m) if out.status == hb_core::device::Status::Ok => m,
            // An execution device without `init` keeps the process as it is.
            _ => ensure_process_key(base, ctx),
        };
        state.insert("initialized", Value::text("true"));
        state.insert("at-slot", Value::Integer(-1));
        Ok((state, None))
    }

    /// Runs slots until `state` is at `target` (§1.5 steps 5–6), storing each: every
    /// state computed is stored when this returns, whether it succeeded or not.
    fn run_slots(
        &self,
        state: &mut Message,
        worker: &mut Worker,
        pid: &str,
        target: i64,
        ctx: &Ctx,
    ) -> Result<(), Outcome> {
        let mut pending = Pending::new();
        let (result, stored) = std::thread::scope(|scope| {
            // Full batches go to a writer thread, started with the first one, so that
            // a long run computes the next slots while the last batch is written; a
            // request for a few slots starts no thread.
            let mut writer: Option<StateWriter<'_>> = None;
            let mut flush = |batch: Pending| -> Result<(), String> {
                if writer.is_none() && batch.len() >= STATE_BATCH {
                    writer = StateWriter::start(scope, ctx);
                }
                let Some(w) = writer.take() else {
                    return store_states(batch, ctx);
                };
                if w.send(batch) {
                    writer = Some(w);
                    Ok(())
                } else {
                    // It stopped on a failure: that failure is the answer.
                    w.finish().and(Err("the state writer stopped".to_owned()))
                }
            };
            let result =
                self.run_slots_queued(state, worker, pid, target, ctx, &mut pending, &mut flush);
            let written = writer.map_or(Ok(()), StateWriter::finish);
            // After the writer's batches, and only if they were all written: the states
            // stay in slot order on disk, with no gap before a stored one.
            let stored = written.and_then(|()| store_states(std::mem::take(&mut pending), ctx));
            (result, stored)
        });
        let at = state.get("at-slot").and_then(Value::as_int).unwrap_or(-1);
        match (stored, result) {
            (Err(e), Ok(())) => Err(phase_error(
                Outcome::error_status(500, &format!("Cannot store the state: {e}")),
                "compute",
                at,
            )),
            (_, result) => result,
        }
    }

    /// [`Process::run_slots`], the states queued in `pending` (handed to `flush`
    /// every [`STATE_BATCH`] slots and when a snapshot is taken).
    #[allow(clippy::too_many_arguments)]
    fn run_slots_queued(
        &self,
        state: &mut Message,
        worker: &mut Worker,
        pid: &str,
        target: i64,
        ctx: &Ctx,
        pending: &mut Pending,
        flush: &mut dyn FnMut(Pending) -> Result<(), String>,
    ) -> Result<(), Outcome> {
        let policy = SnapshotPolicy::of(ctx);
        // Bounded: every round applies one slot, and the slot number only grows.
        loop {
            let cur = state.get("at-slot").and_then(Value::as_int).unwrap_or(-1);
            if cur >= target {
                if cur > target {
                    return Err(phase_error(
                        Outcome::error_status(500, "The state is past the requested slot."),
                        "compute",
                        target,
                    ));
                }
                return Ok(());
            }
            ctx.check_deadline().map_err(|e| {
                phase_error(
                    Outcome::error_status(408, &e.to_string()),
                    "compute",
                    cur + 1,
                )
            })?;
            let next = run_as(
                Role::Scheduler,
                state,
                &Message::new().with("path", "next"),
                ctx,
            )
            .map_err(|e| {
                phase_error(
                    Outcome::error_status(500, &e.to_string()),
                    "get-schedule",
                    cur + 1,
                )
            })?;
            let assignment = match next {
                Outcome {
                    status: hb_core::device::Status::Ok,
                    value: Value::Message(m),
                } => match m.get("body").and_then(Value::as_message) {
                    Some(a) => a.clone(),
                    None => {
                        return Err(phase_error(
                            Outcome::error_status(503, "No assignment found for next slot."),
                            "get-schedule",
                            cur + 1,
                        ));
                    }
                },
                other => return Err(phase_error(other, "get-schedule", cur + 1)),
            };
            let n = assignment
                .get("slot")
                .and_then(Value::as_int)
                .unwrap_or(cur + 1);
            let mut req = assignment;
            if req.get("path").is_none() {
                req.insert("path", Value::text("compute"));
            }
            state.remove("results");
            let started = Instant::now();
            let out = run_as(Role::Execution, state, &req, ctx).map_err(|e| {
                phase_error(Outcome::error_status(500, &e.to_string()), "compute", n)
            })?;
            match out {
                Outcome {
                    status: hb_core::device::Status::Ok,
                    value: Value::Message(m),
                } => *state = m,
                other => return Err(phase_error(other, "compute", n)),
            }
            state.insert("at-slot", Value::Integer(n));
            worker.since_snapshot += started.elapsed();
            let due = policy.due(n, worker);
            let queued = queue_state(pid, n, state, pending).and_then(|()| {
                if due || pending.len() >= STATE_BATCH {
                    flush(std::mem::take(pending))
                } else {
                    Ok(())
                }
            });
            if let Err(e) = queued {
                return Err(phase_error(
                    Outcome::error_status(500, &format!("Cannot store the state: {e}")),
                    "compute",
                    n,
                ));
            }
            if due {
                worker.store_snapshot(pid, n, state, ctx);
            }
        }
    }

    /// `now` (§1.7): the state at the scheduler's current slot.
    fn now(&self, base: &Message, ctx: &Ctx) -> DeviceResult {
        let base = ensure_process_key(base, ctx);
        let slot = match current_slot(&base, ctx)? {
            Ok(slot) => slot,
            Err(out) => return Ok(out),
        };
        if slot < 0 {
            return Ok(Outcome::error_status(
                404,
                "The process has no scheduled messages.",
            ));
        }
        let pid = process_id(&base)?;
        let mut out = ctx.blocking(|| self.compute_to(&base, &pid, slot, ctx))?;
        // The state at this moment: the same request answers differently after the
        // next message, so neither it nor what is read from it is cached.
        if let Value::Message(state) = &mut out.value {
            mark_volatile(state);
        }
        Ok(out)
    }

    /// The latest computed state (live, stored, or computed now).
    fn latest_state(&self, base: &Message, ctx: &Ctx) -> Result<Message, Outcome> {
        match self.now(base, ctx) {
            Ok(Outcome {
                status: hb_core::device::Status::Ok,
                value: Value::Message(m),
            }) => Ok(m),
            Ok(other) => Err(other),
            Err(e) => Err(Outcome::error_status(
                i64::from(e.http_status()),
                &e.to_string(),
            )),
        }
    }

    /// A dry run (the seed tutorial's `POST compute` with `dryrun`): `dry` applied to
    /// the latest state as the next slot's message, nothing scheduled or stored.
    fn dry_run(&self, base: &Message, pid: &str, dry: &Message, ctx: &Ctx) -> DeviceResult {
        let state = match self.latest_state(base, ctx) {
            Ok(s) => s,
            Err(out) => return Ok(out),
        };
        let at = state.get("at-slot").and_then(Value::as_int).unwrap_or(-1);
        let req = Message::new()
            .with("path", "compute")
            .with("process", pid)
            .with("slot", at + 1)
            .with("body", Value::Message(dry.clone()));
        let mut state = state;
        state.remove("results");
        run_as(Role::Execution, &state, &req, ctx)
    }

    /// `as` (`/<pid>~process@1.0/as=execution/compute&K=V`): the latest state
    /// prepared for the role named by the request's `as`; the next step then runs on
    /// that role's device directly (a dry run of the execution device).
    fn prepared_as(&self, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let Some(role) = req.get_str("as").and_then(Role::named) else {
            return Ok(Outcome::error_status(
                400,
                "`as` names a role of the process: execution, scheduler or push.",
            ));
        };
        let state = if role == Role::Execution {
            match self.latest_state(base, ctx) {
                Ok(s) => s,
                Err(out) => return Ok(out),
            }
        } else {
            ensure_process_key(base, ctx)
        };
        let (mut prepared, _, _) = prepare(&state, role, ctx);
        prepared.remove("results");
        Ok(Outcome::ok(prepared))
    }

    /// `results` of a computed state. With `results` in the request — aoconnect's
    /// `result` asks for `/<pid>~process@1.0/compute/results=<slot or message ID>`
    /// (spec 07 §1.2; `results=N` is `{path: results, results: N}`) — the results of
    /// that slot, or of the slot that holds that message, computed if need be: the
    /// `compute` before it, without a slot, stands for the latest state, whose results
    /// are another slot's once the process has moved on. Without it, the state's own
    /// `results`, read as any other key.
    fn results(&self, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let Some(wanted) = req.get("results") else {
            let plain = base.clone().with("device", "message@1.0");
            return ctx.internal().resolve_step(
                Value::Message(plain),
                Value::Message(Message::new().with("path", "results")),
            );
        };
        let process = match base.get("process") {
            Some(Value::Message(def)) => ensure_process_key(def, ctx),
            _ => ensure_process_key(base, ctx),
        };
        let pid = process_id(&process)?;
        let slot = match wanted.as_int() {
            Some(n) => n,
            None => {
                let id = String::from_utf8_lossy(&wanted.to_display_bytes()).into_owned();
                let current = match current_slot(&process, ctx)? {
                    Ok(slot) => slot,
                    Err(out) => return Ok(out),
                };
                match ctx.blocking(|| slot_of_message(&pid, id.trim(), current, ctx)) {
                    Some(n) => n,
                    None => {
                        return Ok(Outcome::error_status(
                            404,
                            &format!(
                                "`results={id}`: no slot among the latest {RESULTS_SEARCH_SLOTS} of {pid} holds that message."
                            ),
                        ));
                    }
                }
            }
        };
        if base.get("at-slot").and_then(Value::as_int) == Some(slot)
            && let Some(results) = base.get("results")
        {
            return Ok(Outcome::ok(match results {
                Value::Message(r) => Value::Message(computed_results(r)),
                other => other.clone(),
            }));
        }
        let out = self.compute(&process, &Message::new().with("slot", slot), ctx)?;
        match out.value {
            Value::Message(state) if out.is_ok() => Ok(match state.get("results") {
                Some(Value::Message(r)) => Outcome::ok(Value::Message(computed_results(r))),
                Some(r) => Outcome::ok(r.clone()),
                None => {
                    Outcome::error_status(404, &format!("Slot {slot} of {pid} has no results."))
                }
            }),
            _ => Ok(out),
        }
    }
}

/// The scheduler's current slot of the process (-1: nothing scheduled), or the
/// scheduler's failure.
fn current_slot(process: &Message, ctx: &Ctx) -> Result<Result<i64, Outcome>, ResolveError> {
    let current = run_as(
        Role::Scheduler,
        process,
        &Message::new().with("path", "slot"),
        ctx,
    )?;
    Ok(current
        .value
        .as_message()
        .and_then(|m| m.get("current"))
        .and_then(Value::as_int)
        .ok_or_else(|| phase_error(current.clone(), "get-schedule", 0)))
}

/// The slot that holds the message `id` (its ID, or one of its commitments'), among
/// the latest [`RESULTS_SEARCH_SLOTS`] assignments of `pid` (the newest first, from
/// the `current` slot down).
fn slot_of_message(pid: &str, id: &str, current: i64, ctx: &Ctx) -> Option<i64> {
    let oldest = current
        .saturating_sub(RESULTS_SEARCH_SLOTS as i64 - 1)
        .max(0);
    (oldest..=current).rev().find(|slot| {
        let path = crate::scheduler::assignment_path(pid, *slot);
        let Ok(Some(Value::Message(assignment))) = ctx.cache().read_path(&path) else {
            return false;
        };
        let Some(Value::Message(body)) = assignment.get("body") else {
            return false;
        };
        body.get("commitments")
            .and_then(Value::as_message)
            .is_some_and(|c| c.contains(id))
            || id_all(body).is_ok_and(|own| own.to_human() == id)
    })
}

/// The results of a computed slot as `results=<slot>` answers them. A slot whose
/// evaluation failed (a trap, an exhausted budget: `json-iface@1.0`'s `status: 500`
/// results) was computed all the same, and its AO answer (`json`) says so in `Error`:
/// the answer is a success, as a compute unit gives it (aoconnect's `result()` throws
/// on an error status instead of returning the `Error`).
fn computed_results(results: &Message) -> Message {
    if results.get("json").is_some() {
        results.clone().without("status")
    } else {
        results.clone()
    }
}

/// A computed state as answered: with the process device, without its snapshot.
fn as_result(mut state: Message) -> Message {
    state.remove("snapshot");
    state.insert("device", Value::text(NAME));
    state
}
