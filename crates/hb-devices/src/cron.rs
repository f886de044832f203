//! `cron@1.0`: runs a HyperPATH later, once or at an interval (spec 04 §6).
//!
//! * `once?cron-path=P&…` runs `P` once in the background, with the request's other
//!   keys as its parameters.
//! * `every?cron-path=P&interval=N-unit&…` runs `P` at once, then again every interval
//!   until it is stopped. Intervals are `<amount>-<unit>` with the unit matched by prefix
//!   (`millisecond…`, `second…`, `minute…`, `hour…`, `day…`, any case): see
//!   [`parse_interval`].
//! * `stop?task=ID` stops a task; `info` describes the device.
//!
//! `once` and `every` answer the task ID at once: ID\*(request), the ID of the request as
//! the device received it. Over HTTP that is a bare body (`ao-result: body`), marked
//! `cache-control: no-store` so that the same request made again is run again rather
//! than answered from the result cache.
//!
//! # Runs
//!
//! Each run takes the path an HTTP request takes: the request (`path` = the cron path)
//! is parsed with the node's HyperPATH parser ([`hyperpath::from_singleton`]), the
//! node's `request` hook sees the message list, the engine resolves it with the HTTP
//! options ([`ResolveOpts::http`]) and the node's `step` hooks, within
//! [`RUN_TIME_LIMIT`], and the `response` hook sees the result. Results are logged.
//!
//! Each task is one OS thread of its own (this crate has no async runtime). The thread
//! waits on a condition variable between runs, so `stop` takes effect at once when the
//! task is waiting; a run already under way is finished (threads cannot be killed), but
//! no run starts after `stop` has returned. A run that fails is logged, and the next one
//! still waits a full interval (the reference re-runs at once: spec 04 §6.3 quirk). At
//! most [`MAX_TASKS`] tasks run on one node.
//!
//! # Persistence
//!
//! Tasks survive a restart when the node's cache is persistent (one that implements
//! [`hb_core::Cache::store_message`]; on other caches they live in memory only):
//!
//! ```text
//! cron/tasks/<task-id>/<n>    -> the task record {task, kind, interval, request}
//! cron/stopped/<task-id>/<n>  -> cron/tasks/<task-id>/<n>   (a tombstone)
//! ```
//!
//! `<n>` counts the registrations of one task ID (the same request registered again
//! after a stop is registration `n + 1`): a store link never overwrites, so a stop
//! cannot be undone in place, and each registration gets a fresh path instead. The
//! record is written durably before the task ID is answered. A stop, and the end of a
//! `once` run, adds the tombstone. At start, [`resume`] restarts every task whose last
//! registration has no tombstone (a `once` task that had not finished runs again), and
//! [`shutdown`] stops a node's task threads without forgetting their tasks.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hb_core::cache::CacheOpError;
use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::message::id_all;
use hb_core::resolve::{Resolved, force_message};
use hb_core::{Ctx, Id, Message, ResolveError, ResolveOpts, Value, hook, hyperpath};
use parking_lot::{Condvar, Mutex};

/// The device's name.
pub const NAME: &str = "cron@1.0";

/// The most tasks one node runs at a time (each is a thread).
pub const MAX_TASKS: usize = 1024;

/// How long one run may take: the HTTP server's default request timeout.
pub const RUN_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Where task records are linked, by task ID and registration number.
const TASKS: &str = "cron/tasks";
/// Where tombstones of stopped and finished tasks are linked.
const STOPPED: &str = "cron/stopped";

/// The longest single wait of a task thread: long intervals are waited in pieces, so
/// that no deadline computation can overflow.
const WAIT_PIECE: Duration = Duration::from_secs(3600);

/// The private call [`resume`] makes. Not in [`Device::functions`], so the engine never
/// routes a request to it.
const RESUME: &str = "cron internal: resume";
/// The private call [`shutdown`] makes (as [`RESUME`]).
const SHUTDOWN: &str = "cron internal: shutdown";

/// The error strings of spec 04 §6.
const NO_CRON_PATH: &str = "No cron path found in message.";
const NO_INTERVAL: &str = "No interval found in message.";
const NO_TASK: &str = "No task ID found in message.";
const TASK_NOT_FOUND: &str = "Task not found.";

/// Why an interval was refused; its text is the error body (spec 04 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntervalError {
    /// The unit is none of the known ones (the unit as given).
    InvalidUnit(String),
    /// The amount is not a positive integer, there is no `-`, or the interval is too
    /// long to count in milliseconds.
    InvalidValue,
}

impl std::fmt::Display for IntervalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntervalError::InvalidUnit(unit) => write!(f, "Invalid time unit: {unit}"),
            IntervalError::InvalidValue => f.write_str("Invalid interval value."),
        }
    }
}

impl std::error::Error for IntervalError {}

/// Parses an interval, `<decimal amount>-<unit>`, into milliseconds (spec 04 §6.3). The
/// unit is matched by prefix, in any case: `millisecond…` ×1, `second…` ×1000,
/// `minute…` ×60 000, `hour…` ×3 600 000, `day…` ×86 400 000. The amount must be > 0.
///
/// # Errors
/// [`IntervalError::InvalidValue`] for a missing `-`, an amount that is not a positive
/// integer or an interval beyond `u64` milliseconds; [`IntervalError::InvalidUnit`] for
/// an unknown unit.
pub fn parse_interval(text: &str) -> Result<u64, IntervalError> {
    let (amount, unit) = text.split_once('-').ok_or(IntervalError::InvalidValue)?;
    // As the reference: the amount is read first, then the unit.
    let amount: u64 = amount.parse().map_err(|_| IntervalError::InvalidValue)?;
    let lower = unit.to_lowercase();
    let factor: u64 = [
        ("millisecond", 1),
        ("second", 1_000),
        ("minute", 60_000),
        ("hour", 3_600_000),
        ("day", 86_400_000),
    ]
    .iter()
    .find(|(name, _)| lower.starts_with(name))
    .map(|(_, f)| *f)
    .ok_or_else(|| IntervalError::InvalidUnit(unit.to_owned()))?;
    match amount.checked_mul(factor) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(IntervalError::InvalidValue),
    }
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Run once.
    Once,
    /// Run now, then every so many milliseconds.
    Every(u64),
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Scheduled or running.
    Active,
    /// Stopped by `stop`: no more runs, tombstoned.
    Stopped,
    /// The node is going away: no more runs, kept for [`resume`].
    Shutdown,
    /// A `once` task that has run.
    Finished,
}

/// One task: its ID, its registration number in the store, its life and its thread.
#[derive(Debug)]
struct Task {
    id: String,
    /// The registration number, when the task is stored.
    generation: Option<u64>,
    life: Mutex<Life>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Task {
    fn new(id: &str, generation: Option<u64>) -> Self {
        Task {
            id: id.to_owned(),
            generation,
            life: Mutex::new(Life::Active),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        }
    }

    fn is_active(&self) -> bool {
        *self.life.lock() == Life::Active
    }

    /// Moves an active task to `to` and wakes its thread; false if it was not active.
    fn halt(&self, to: Life) -> bool {
        let mut life = self.life.lock();
        if *life != Life::Active {
            return false;
        }
        *life = to;
        self.wake.notify_all();
        true
    }

    /// Waits `d` unless the task is halted first; true if it is still active.
    fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let mut life = self.life.lock();
        loop {
            if *life != Life::Active {
                return false;
            }
            let left = match deadline {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => WAIT_PIECE,
            };
            if left.is_zero() {
                return true;
            }
            self.wake.wait_for(&mut life, left.min(WAIT_PIECE));
        }
    }
}

/// The running tasks of one node, by task ID.
#[derive(Debug, Default)]
struct Tasks {
    running: Mutex<HashMap<String, Arc<Task>>>,
}

impl Tasks {
    /// Removes `task` from the table, if it is still the entry of its ID.
    fn remove_if_same(&self, task: &Arc<Task>) {
        let mut running = self.running.lock();
        if running.get(&task.id).is_some_and(|t| Arc::ptr_eq(t, task)) {
            running.remove(&task.id);
        }
    }
}

/// The `cron@1.0` device of one node: the node's tasks.
#[derive(Debug, Default)]
pub struct Cron {
    tasks: Arc<Tasks>,
}

impl Device for Cron {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            exports: Some(vec![
                "info".into(),
                "once".into(),
                "every".into(),
                "stop".into(),
            ]),
            default: DefaultHandler::None,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &["info", "once", "every", "stop"]
    }

    fn call(&self, call: Call<'_>, _base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call {
            Call::Function("info") => Ok(Outcome::ok(info())),
            Call::Function("once") => Ok(ctx.blocking(|| self.once(req, ctx))),
            Call::Function("every") => Ok(ctx.blocking(|| self.every(req, ctx))),
            Call::Function("stop") => Ok(ctx.blocking(|| self.stop(req, ctx))),
            Call::Function(RESUME) => Ok(Outcome::ok(self.resume(ctx) as i64)),
            Call::Function(SHUTDOWN) => Ok(Outcome::ok(self.shutdown() as i64)),
            other => Err(ResolveError::call(NAME, other.key(), "no such function")),
        }
    }
}

/// `info` (spec 04 §6.1).
fn info() -> Message {
    Message::new().with("status", 200i64).with(
        "body",
        Message::new()
            .with("description", "Cron device for scheduling messages")
            .with("version", "1.0")
            .with(
                "paths",
                Message::new()
                    .with("info", "Get device info")
                    .with("once", "Schedule a one-time message")
                    .with("every", "Schedule a recurring message")
                    .with("stop", "Stop a scheduled task {task}"),
            ),
    )
}

/// The answer to `once` and `every`: the task ID as a bare body, never cached.
fn task_reply(id: &str) -> Outcome {
    Outcome::ok(
        Message::new()
            .with("ao-result", "body")
            .with("body", id)
            .with("cache-control", "no-store"),
    )
}

/// The cron path of a request, or the error to answer with.
fn cron_path(req: &Message) -> Result<String, Outcome> {
    match req.get("cron-path") {
        None => Err(Outcome::error(NO_CRON_PATH)),
        Some(v) => match v.as_str() {
            Some(p) if !p.is_empty() => Ok(p.to_owned()),
            _ => Err(Outcome::error_status(
                400,
                "`cron-path` must be a HyperPATH (text).",
            )),
        },
    }
}

/// The request each run makes: the original one without `drop`, private keys and
/// `cron-path`, with `path` = the cron path.
fn run_request(req: &Message, path: &str, drop: &[&str]) -> Message {
    let mut out = req.without_private();
    out.remove("cron-path");
    for k in drop {
        out.remove(k);
    }
    out.with("path", path)
}

impl Cron {
    /// `once` (spec 04 §6.2).
    fn once(&self, req: &Message, ctx: &Ctx) -> Outcome {
        let path = match cron_path(req) {
            Ok(p) => p,
            Err(o) => return o,
        };
        self.register(req, Kind::Once, run_request(req, &path, &[]), ctx)
    }

    /// `every` (spec 04 §6.3).
    fn every(&self, req: &Message, ctx: &Ctx) -> Outcome {
        let path = match cron_path(req) {
            Ok(p) => p,
            Err(o) => return o,
        };
        let Some(interval) = req.get("interval") else {
            return Outcome::error(NO_INTERVAL);
        };
        let ms = match interval.as_str().map(parse_interval) {
            Some(Ok(ms)) => ms,
            Some(Err(e)) => return Outcome::error(e.to_string()),
            None => return Outcome::error(IntervalError::InvalidValue.to_string()),
        };
        let request = run_request(req, &path, &["interval"]);
        self.register(req, Kind::Every(ms), request, ctx)
    }

    /// Registers a task for `req` (stored first, where the cache can) and starts it.
    fn register(&self, req: &Message, kind: Kind, request: Message, ctx: &Ctx) -> Outcome {
        let id = match id_all(req) {
            Ok(id) => id.to_human(),
            Err(e) => {
                return Outcome::error_status(400, &format!("The request has no ID: {e}"));
            }
        };
        // A path that cannot be parsed would fail at every run: refuse it now.
        if let Err(e) = hyperpath::from_singleton(&request) {
            return Outcome::error_status(400, &format!("Invalid `cron-path`: {e}"));
        }
        let mut running = self.tasks.running.lock();
        if running.get(&id).is_some_and(|t| t.is_active()) {
            // The same request again: it is scheduled already.
            return task_reply(&id);
        }
        let active = running.values().filter(|t| t.is_active()).count();
        if active >= MAX_TASKS {
            return Outcome::error_status(
                503,
                &format!("This node runs at most {MAX_TASKS} cron tasks."),
            );
        }
        let generation = persist(&id, kind, &request, ctx);
        let task = Arc::new(Task::new(&id, generation));
        match self.spawn(task.clone(), kind, request, ctx) {
            Ok(()) => {
                running.insert(id.clone(), task);
                task_reply(&id)
            }
            Err(e) => {
                tombstone(&task, ctx);
                Outcome::error_status(503, &format!("Cannot start the cron task: {e}"))
            }
        }
    }

    /// Starts the thread of `task`.
    fn spawn(
        &self,
        task: Arc<Task>,
        kind: Kind,
        request: Message,
        ctx: &Ctx,
    ) -> std::io::Result<()> {
        let (tasks, ctx, worker) = (self.tasks.clone(), ctx.clone(), task.clone());
        let handle = std::thread::Builder::new()
            .name("cron".into())
            .spawn(move || match kind {
                Kind::Once => once_thread(&worker, &tasks, &request, &ctx),
                Kind::Every(ms) => every_thread(&worker, &request, Duration::from_millis(ms), &ctx),
            })?;
        *task.thread.lock() = Some(handle);
        Ok(())
    }

    /// `stop` (spec 04 §6.4).
    fn stop(&self, req: &Message, ctx: &Ctx) -> Outcome {
        let Some(task_value) = req.get("task") else {
            return Outcome::error(NO_TASK);
        };
        let Some(id) = task_value.as_str() else {
            return Outcome::error(TASK_NOT_FOUND);
        };
        let found = {
            let mut running = self.tasks.running.lock();
            match running.get(id) {
                Some(t) if t.is_active() => running.remove(id),
                _ => None,
            }
        };
        let stopped = match found {
            Some(task) => {
                task.halt(Life::Stopped);
                tombstone(&task, ctx);
                // The thread ends by itself once its current run (if any) is over.
                task.thread.lock().take();
                true
            }
            // A stored task this node is not running (it was not resumed): stopping it
            // keeps it from being resumed. Only IDs reach the store.
            None => match Id::from_human(id.as_bytes()).and_then(|_| live_generation(id, ctx)) {
                Some(generation) => {
                    tombstone(&Task::new(id, Some(generation)), ctx);
                    true
                }
                None => false,
            },
        };
        if !stopped {
            return Outcome::error(TASK_NOT_FOUND);
        }
        tracing::info!(task = %id, "cron task stopped");
        Outcome::ok(
            Message::new()
                .with("status", 200i64)
                .with(
                    "body",
                    Message::new()
                        .with("message", "Task stopped successfully")
                        .with("task_id", id),
                )
                .with("cache-control", "no-store"),
        )
    }

    /// Starts every stored task that is neither stopped nor running; returns how many.
    fn resume(&self, ctx: &Ctx) -> usize {
        let mut started = 0;
        for (id, generation, record) in stored_tasks(ctx) {
            let Some((kind, request)) = parse_record(&record) else {
                tracing::warn!(task = %id, "a stored cron task cannot be read; skipped");
                continue;
            };
            let mut running = self.tasks.running.lock();
            if running.get(&id).is_some_and(|t| t.is_active()) {
                continue;
            }
            if running.values().filter(|t| t.is_active()).count() >= MAX_TASKS {
                tracing::warn!(task = %id, "too many cron tasks; a stored one is not resumed");
                continue;
            }
            let task = Arc::new(Task::new(&id, Some(generation)));
            match self.spawn(task.clone(), kind, request, ctx) {
                Ok(()) => {
                    running.insert(id, task);
                    started += 1;
                }
                Err(e) => tracing::warn!(task = %id, error = %e, "cannot resume a cron task"),
            }
        }
        if started > 0 {
            tracing::info!(tasks = started, "cron tasks resumed");
        }
        started
    }

    /// Stops every task thread (their stored records stay) and waits for them to end;
    /// returns how many tasks were active.
    fn shutdown(&self) -> usize {
        let tasks: Vec<Arc<Task>> = self.tasks.running.lock().drain().map(|(_, t)| t).collect();
        let active = tasks.iter().filter(|t| t.halt(Life::Shutdown)).count();
        for t in &tasks {
            let handle = t.thread.lock().take();
            if let Some(h) = handle
                && h.thread().id() != std::thread::current().id()
            {
                let _ = h.join();
            }
        }
        active
    }
}

/// The thread of an `every` task: run, wait an interval, again, until halted.
fn every_thread(task: &Task, request: &Message, interval: Duration, ctx: &Ctx) {
    while task.is_active() {
        run_logged(&task.id, request, ctx);
        if !task.wait(interval) {
            break;
        }
    }
}

/// The thread of a `once` task: run (unless halted first), then the task is done.
fn once_thread(task: &Arc<Task>, tasks: &Tasks, request: &Message, ctx: &Ctx) {
    if !task.is_active() {
        return;
    }
    run_logged(&task.id, request, ctx);
    task.halt(Life::Finished);
    tombstone(task, ctx);
    tasks.remove_if_same(task);
}

/// One run, its result or failure logged; a panic is caught so the task lives on.
fn run_logged(id: &str, request: &Message, ctx: &Ctx) {
    let path = request.get_str("path").unwrap_or_default().to_owned();
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| run(request, ctx)));
    match out {
        Ok(Ok(o)) if o.is_ok() => tracing::debug!(task = %id, %path, "cron run done"),
        Ok(Ok(o)) => {
            tracing::info!(task = %id, %path, status = o.status.as_str(), result = ?o.value, "cron run answered an error");
        }
        Ok(Err(e)) => tracing::warn!(task = %id, %path, error = %e, "cron run failed"),
        Err(_) => tracing::error!(task = %id, %path, "cron run panicked"),
    }
}

/// Sends `request` (a singleton: `path` plus parameters) through the node's request
/// pipeline, as the HTTP server does: the HyperPATH parser, the `request` hook, the
/// engine with the HTTP options and `step` hooks, the `response` hook.
fn run(request: &Message, ctx: &Ctx) -> Resolved {
    let node = ctx.node().get();
    let opts = ResolveOpts {
        max_depth: ctx.opts.max_depth,
        max_steps: ctx.opts.max_steps,
        ..ResolveOpts::http()
    };
    let ctx = ctx
        .with_opts(opts)
        .with_time_limit(RUN_TIME_LIMIT)
        .with_step_hooks(&node);
    let list = match hook::request_list(&ctx, &node, request)? {
        Ok(list) => list,
        Err(halted) => return Ok(halted),
    };
    let out = ctx.resolve_many(list);
    let handlers = hook::handlers(&node, "response");
    if handlers.is_empty() {
        return out;
    }
    let body = match &out {
        Ok(o) => force_message(o.clone()).value,
        Err(e) => Value::Message(
            Message::new()
                .with("status", i64::from(e.http_status()))
                .with("body", e.to_string()),
        ),
    };
    let req = Message::new()
        .with("request", request.clone())
        .with("body", body);
    hook::run(&ctx, "response", &handlers, req)
}

// ---------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------

fn task_path(id: &str, generation: u64) -> String {
    format!("{TASKS}/{id}/{generation}")
}

fn stopped_path(id: &str, generation: u64) -> String {
    format!("{STOPPED}/{id}/{generation}")
}

/// The numbers under a group of the store (none if there is no group, or no store).
fn numbers(group: &str, ctx: &Ctx) -> Result<Vec<u64>, CacheOpError> {
    Ok(ctx
        .cache()
        .list(group)?
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect())
}

/// Stores the record of a new registration of task `id`; its registration number, or
/// `None` when the cache cannot store it (the task then lives in memory only).
fn persist(id: &str, kind: Kind, request: &Message, ctx: &Ctx) -> Option<u64> {
    let stored = numbers(&format!("{TASKS}/{id}"), ctx).and_then(|taken| {
        let generation = taken.iter().max().map_or(0, |n| n.saturating_add(1));
        let mut record = Message::new()
            .with("task", id)
            .with("request", request.clone());
        match kind {
            Kind::Once => record.insert("kind", Value::text("once")),
            Kind::Every(ms) => {
                record.insert("kind", Value::text("every"));
                record.insert(
                    "interval",
                    Value::Integer(i64::try_from(ms).unwrap_or(i64::MAX)),
                );
            }
        }
        ctx.cache()
            .store_message(&record, &[task_path(id, generation)])?;
        Ok(generation)
    });
    match stored {
        Ok(generation) => Some(generation),
        Err(CacheOpError::Unsupported { .. }) => {
            tracing::debug!(task = %id, "this cache keeps no cron tasks; the task will not survive a restart");
            None
        }
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "cannot store a cron task; it will not survive a restart");
            None
        }
    }
}

/// Marks a stored task stopped (or finished), so that it is not resumed.
fn tombstone(task: &Task, ctx: &Ctx) {
    let Some(generation) = task.generation else {
        return;
    };
    let (from, to) = (
        task_path(&task.id, generation),
        stopped_path(&task.id, generation),
    );
    if let Err(e) = ctx.cache().link(&from, &to) {
        tracing::warn!(task = %task.id, error = %e, "cannot mark a stored cron task stopped; it may be resumed at the next start");
    }
}

/// The last registration number of stored task `id`, unless it is tombstoned.
fn live_generation(id: &str, ctx: &Ctx) -> Option<u64> {
    let last = numbers(&format!("{TASKS}/{id}"), ctx)
        .ok()?
        .into_iter()
        .max()?;
    let stopped = numbers(&format!("{STOPPED}/{id}"), ctx).ok()?;
    (!stopped.contains(&last)).then_some(last)
}

/// Every stored task that is not tombstoned: its ID, registration number and record.
fn stored_tasks(ctx: &Ctx) -> Vec<(String, u64, Message)> {
    let ids = match ctx.cache().list(TASKS) {
        Ok(ids) => ids.unwrap_or_default(),
        Err(CacheOpError::Unsupported { .. }) => return vec![],
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the stored cron tasks");
            return vec![];
        }
    };
    let mut out = Vec::new();
    for id in ids {
        if Id::from_human(id.as_bytes()).is_none() {
            continue;
        }
        let Some(generation) = live_generation(&id, ctx) else {
            continue;
        };
        match ctx.cache().read_path(&task_path(&id, generation)) {
            Ok(Some(Value::Message(record))) => out.push((id, generation, record)),
            Ok(_) => tracing::warn!(task = %id, "a stored cron task has no record"),
            Err(e) => tracing::warn!(task = %id, error = %e, "cannot read a stored cron task"),
        }
    }
    out
}

/// The kind and run request of a stored task record.
fn parse_record(record: &Message) -> Option<(Kind, Message)> {
    let request = record.get("request")?.as_message()?.clone();
    let kind = match record.get_str("kind")? {
        "once" => Kind::Once,
        "every" => Kind::Every(record.get("interval")?.as_uint().filter(|ms| *ms > 0)?),
        _ => return None,
    };
    Some((kind, request))
}

// ---------------------------------------------------------------------------------------
// Node start and stop
// ---------------------------------------------------------------------------------------

/// Restarts the stored tasks of the node whose context is `ctx` (call it once the
/// node's context exists, before serving); returns how many were started. Tasks already
/// running are left alone, so calling it twice is harmless.
pub fn resume(ctx: &Ctx) -> usize {
    internal_call(ctx, RESUME)
}

/// Stops the task threads of the node whose context is `ctx` and waits for them to end
/// (a run under way is finished first); their stored tasks stay, for [`resume`] at the
/// next start. Returns how many tasks were active. The threads hold the node's context,
/// so a node whose tasks are not shut down keeps its cache (and store) open.
pub fn shutdown(ctx: &Ctx) -> usize {
    internal_call(ctx, SHUTDOWN)
}

/// Calls one of the device's private functions on the node's own `cron@1.0`.
fn internal_call(ctx: &Ctx, function: &str) -> usize {
    let Some(device) = ctx.registry().get(NAME).cloned() else {
        return 0;
    };
    let empty = Message::new();
    match device.call(Call::Function(function), &empty, &empty, ctx) {
        Ok(Outcome {
            status: Status::Ok,
            value: Value::Integer(n),
        }) => usize::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::test_device::test_record;
    use hb_core::NodeHandle;
    use hb_store::{MemoryStore, MessageCache};

    fn ctx_on(cache: Arc<dyn hb_core::Cache>) -> Ctx {
        Ctx::new(
            Arc::new(crate::registry()),
            cache,
            NodeHandle::new(Message::new()),
        )
        .with_opts(ResolveOpts::http())
    }

    fn ctx() -> Ctx {
        ctx_on(Arc::new(hb_core::MemoryCache::new(1000)))
    }

    /// Resolves a request the way the HTTP server does (a singleton).
    fn call(ctx: &Ctx, singleton: Message) -> Outcome {
        let list = hyperpath::from_singleton(&singleton).unwrap();
        ctx.resolve_many(list).unwrap()
    }

    fn get(ctx: &Ctx, path: &str) -> Outcome {
        call(ctx, Message::new().with("path", path).with("method", "GET"))
    }

    fn unique(label: &str) -> String {
        format!(
            "{label}-{}",
            Id::sha256(format!("{label}{:?}", Instant::now()).as_bytes())
        )
    }

    fn count(test_id: &str) -> u64 {
        test_record(test_id).map_or(0, |r| r.count)
    }

    fn body_text(o: &Outcome) -> String {
        match &o.value {
            Value::Message(m) => m.get_str("body").unwrap_or_default().to_owned(),
            other => other.as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Waits (up to `limit`) until `f` holds.
    fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f()
    }

    #[test]
    fn interval_table() {
        let table = [
            ("100-milliseconds", 100),
            ("500-milliseconds", 500),
            ("30-seconds", 30_000),
            ("1-second", 1_000),
            ("5-minutes", 300_000),
            ("2-hours", 7_200_000),
            ("1-hour", 3_600_000),
            ("1-day", 86_400_000),
            ("3-Days", 259_200_000),
            ("1-MILLISECOND", 1),
            ("+2-seconds", 2_000),
            ("1-Secondly", 1_000),
        ];
        for (text, ms) in table {
            assert_eq!(parse_interval(text), Ok(ms), "{text}");
        }
        assert_eq!(
            parse_interval("10-fortnights"),
            Err(IntervalError::InvalidUnit("fortnights".into()))
        );
        assert_eq!(
            parse_interval("0-seconds"),
            Err(IntervalError::InvalidValue)
        );
        for bad in [
            "seconds",
            "x-seconds",
            "-5-seconds",
            "",
            "5",
            " 5-seconds",
            "99999999999999999999-days",
            "18446744073709551615-days",
        ] {
            assert_eq!(
                parse_interval(bad),
                Err(IntervalError::InvalidValue),
                "{bad:?}"
            );
        }
        for (bad, unit) in [
            ("5-ms", "ms"),
            ("2-secs", "secs"),
            ("1-", ""),
            ("1-weeks", "weeks"),
        ] {
            assert_eq!(
                parse_interval(bad),
                Err(IntervalError::InvalidUnit(unit.into())),
                "{bad}"
            );
        }
        assert_eq!(
            IntervalError::InvalidUnit("Fortnights".into()).to_string(),
            "Invalid time unit: Fortnights"
        );
        assert_eq!(
            IntervalError::InvalidValue.to_string(),
            "Invalid interval value."
        );
    }

    #[test]
    fn error_strings() {
        let ctx = ctx();
        let cases = [
            ("/~cron@1.0/once", NO_CRON_PATH),
            ("/~cron@1.0/every?interval=1-second", NO_CRON_PATH),
            (
                "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func",
                NO_INTERVAL,
            ),
            (
                "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func&interval=10-fortnights",
                "Invalid time unit: fortnights",
            ),
            (
                "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func&interval=0-seconds",
                "Invalid interval value.",
            ),
            (
                "/~cron@1.0/every?cron-path=/~test-device@1.0/test_func&interval=soon",
                "Invalid interval value.",
            ),
            ("/~cron@1.0/stop", NO_TASK),
            ("/~cron@1.0/stop?task=nope", TASK_NOT_FOUND),
            (
                "/~cron@1.0/stop?task=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                TASK_NOT_FOUND,
            ),
        ];
        for (path, text) in cases {
            let out = get(&ctx, path);
            assert_eq!(out.status, Status::Error, "{path}: {out:?}");
            assert_eq!(body_text(&out), text, "{path}");
        }
        // Over HTTP an error status is 400.
        assert_eq!(Status::Error.http_code(), Some(400));
    }

    #[test]
    fn info_describes_the_device() {
        let out = get(&ctx(), "/~cron@1.0/info");
        let Value::Message(m) = &out.value else {
            panic!("{out:?}")
        };
        assert_eq!(m.get("status"), Some(&Value::Integer(200)));
        let body = m.get("body").and_then(Value::as_message).unwrap();
        assert_eq!(
            body.get_str("description"),
            Some("Cron device for scheduling messages")
        );
        let paths = body.get("paths").and_then(Value::as_message).unwrap();
        for k in ["info", "once", "every", "stop"] {
            assert!(paths.contains(k), "{k}");
        }
    }

    #[test]
    fn once_runs_the_path_with_the_request_keys() {
        let ctx = ctx();
        let test_id = unique("once");
        let singleton = Message::new()
            .with("path", "/~cron@1.0/once")
            .with("method", "GET")
            .with("cron-path", "/~test-device@1.0/update_state")
            .with("test-id", test_id.as_str())
            .with("message", "Hello");
        let out = call(&ctx, singleton.clone());
        assert!(out.is_ok(), "{out:?}");
        let id = body_text(&out);
        assert_eq!(id.len(), 43, "{id}");
        // The task ID is ID*(request as the device received it).
        let list = hyperpath::from_singleton(&singleton).unwrap();
        let Value::Message(received) = &list[1] else {
            panic!("{list:?}")
        };
        assert_eq!(id, id_all(received).unwrap().to_human());
        assert!(eventually(Duration::from_secs(2), || test_record(&test_id)
            .is_some_and(|r| r.state.is_some())));
        let state = test_record(&test_id).unwrap().state.unwrap();
        assert_eq!(state.get_str("test-id"), Some(test_id.as_str()));
        assert_eq!(state.get_str("message"), Some("Hello"));
        assert_eq!(state.get_str("path"), Some("update_state"));
        assert!(!state.contains("cron-path"));
        // Finished: there is nothing to stop.
        assert!(eventually(Duration::from_secs(2), || {
            get(&ctx, &format!("/~cron@1.0/stop?task={id}")).status == Status::Error
        }));
        let again = get(&ctx, &format!("/~cron@1.0/stop?task={id}"));
        assert_eq!(body_text(&again), TASK_NOT_FOUND);
    }

    #[test]
    fn every_runs_until_stopped() {
        let ctx = ctx();
        let test_id = unique("every");
        let out = get(
            &ctx,
            &format!(
                "/~cron@1.0/every?interval=100-milliseconds&cron-path=/~test-device@1.0/increment_counter&test-id={test_id}"
            ),
        );
        assert!(out.is_ok(), "{out:?}");
        let id = body_text(&out);
        std::thread::sleep(Duration::from_millis(450));
        let seen = count(&test_id);
        assert!((3..=6).contains(&seen), "{seen} runs in ~450 ms at 100 ms");
        let stop = get(&ctx, &format!("/~cron@1.0/stop?task={id}"));
        let Value::Message(m) = &stop.value else {
            panic!("{stop:?}")
        };
        assert_eq!(m.get("status"), Some(&Value::Integer(200)));
        let body = m.get("body").and_then(Value::as_message).unwrap();
        assert_eq!(body.get_str("message"), Some("Task stopped successfully"));
        assert_eq!(body.get_str("task_id"), Some(id.as_str()));
        let at_stop = count(&test_id);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(count(&test_id), at_stop, "no run after stop");
        let again = get(&ctx, &format!("/~cron@1.0/stop?task={id}"));
        assert_eq!(again.status, Status::Error);
        assert_eq!(body_text(&again), TASK_NOT_FOUND);
    }

    #[test]
    fn the_same_request_twice_is_one_task_and_runs_again_after_a_stop() {
        let ctx = ctx();
        let test_id = unique("twice");
        let path = format!(
            "/~cron@1.0/every?interval=1-hour&cron-path=/~test-device@1.0/increment_counter&test-id={test_id}"
        );
        let first = body_text(&get(&ctx, &path));
        let second = body_text(&get(&ctx, &path));
        assert_eq!(first, second);
        assert!(eventually(Duration::from_secs(1), || count(&test_id) == 1));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count(&test_id), 1, "one task, one immediate run");
        assert!(get(&ctx, &format!("/~cron@1.0/stop?task={first}")).is_ok());
        // Registered again: a new run, not a cached answer.
        assert_eq!(body_text(&get(&ctx, &path)), first);
        assert!(eventually(Duration::from_secs(1), || count(&test_id) == 2));
        assert!(get(&ctx, &format!("/~cron@1.0/stop?task={first}")).is_ok());
    }

    #[test]
    fn a_failing_run_still_waits_an_interval() {
        let ctx = ctx();
        let test_id = unique("fail");
        // Each run counts, then fails (the counter's answer has no `missing-key`).
        let out = get(
            &ctx,
            &format!(
                "/~cron@1.0/every?interval=200-milliseconds&cron-path=/~test-device@1.0/increment_counter/missing-key&test-id={test_id}"
            ),
        );
        assert!(out.is_ok(), "{out:?}");
        let id = body_text(&out);
        std::thread::sleep(Duration::from_millis(500));
        assert!(get(&ctx, &format!("/~cron@1.0/stop?task={id}")).is_ok());
        let runs = count(&test_id);
        assert!(
            (2..=3).contains(&runs),
            "{runs} failed runs in 500 ms at 200 ms"
        );
        // A bad cron path is refused when registered.
        let bad = get(&ctx, "/~cron@1.0/once?cron-path=/a~&test-id=x");
        assert_eq!(bad.status, Status::Error, "{bad:?}");
    }

    #[test]
    fn tasks_survive_a_restart_and_stops_are_kept() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        let node = |store: &Arc<MemoryStore>| ctx_on(Arc::new(MessageCache::new(store.clone())));
        let test_id = unique("restart");
        let stopped_id = unique("restart-stopped");
        let once_id = unique("restart-once");
        let every = |t: &str| {
            format!(
                "/~cron@1.0/every?interval=100-milliseconds&cron-path=/~test-device@1.0/increment_counter&test-id={t}"
            )
        };
        let first = node(&store);
        let task = body_text(&get(&first, &every(&test_id)));
        let stopped = body_text(&get(&first, &every(&stopped_id)));
        assert!(get(&first, &format!("/~cron@1.0/stop?task={stopped}")).is_ok());
        let once = body_text(&get(
            &first,
            &format!(
                "/~cron@1.0/once?cron-path=/~test-device@1.0/increment_counter&test-id={once_id}"
            ),
        ));
        assert!(eventually(Duration::from_secs(1), || count(&once_id) == 1));
        // A finished `once` task is tombstoned.
        assert!(eventually(Duration::from_secs(1), || live_generation(
            &once, &first
        )
        .is_none()));
        assert!(eventually(Duration::from_secs(1), || count(&test_id) >= 2));
        assert_eq!(live_generation(&task, &first), Some(0));
        assert_eq!(live_generation(&stopped, &first), None);
        assert_eq!(shutdown(&first), 1, "the one live `every` task");
        drop(first);
        let before = count(&test_id);
        let stopped_before = count(&stopped_id);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(count(&test_id), before, "no runs while the node is down");

        let second = node(&store);
        assert_eq!(resume(&second), 1, "only the live `every` task comes back");
        assert_eq!(resume(&second), 0, "resuming twice starts nothing new");
        assert!(eventually(Duration::from_secs(1), || count(&test_id) >= before + 2));
        assert_eq!(count(&stopped_id), stopped_before);
        assert_eq!(
            count(&once_id),
            1,
            "a finished `once` task is not run again"
        );
        // The resumed task is stopped by its ID, and stays stopped.
        assert!(get(&second, &format!("/~cron@1.0/stop?task={task}")).is_ok());
        assert_eq!(shutdown(&second), 0);
        let third = node(&store);
        assert_eq!(resume(&third), 0);
        assert_eq!(
            body_text(&get(&third, &format!("/~cron@1.0/stop?task={task}"))),
            TASK_NOT_FOUND
        );
        assert_eq!(
            body_text(&get(&third, &format!("/~cron@1.0/stop?task={once}"))),
            TASK_NOT_FOUND
        );
    }
}
