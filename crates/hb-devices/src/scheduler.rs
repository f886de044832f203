//! `scheduler@1.0`: the scheduling unit (spec 04 §2).
//!
//! Messages posted to a process are given consecutive slots by the node that schedules
//! it. Each slot is recorded as an *assignment*: a message signed by the node's wallet
//! that carries the slot, the process ID, times, a hash chain over every scheduled
//! message's ID (§2.5) and the message itself as `body`.
//!
//! * `POST schedule` (every key but the ones below is an alias of `schedule`): assign
//!   the request's `body` (or the request itself) the next slot. The reply is the
//!   assignment, and it is sent only once the assignment is durably stored
//!   ([`hb_core::Cache::store_message`]): an acknowledged slot survives a crash.
//! * `GET schedule` (`from`, `to`, inclusive, at most 1001 per page; `accept:
//!   application/aos-2` for the legacy JSON page), `slot`, `status`, `next` (used by
//!   `process@1.0`'s compute loop), `checkpoint` (identity).
//! * `location` (§2.12): `GET` answers the newest scheduler-location record of an
//!   address; `POST` keeps a verified record signed by others, or signs a new record
//!   of this node when its own wallet signed the request (`POST record` is an alias).
//!   A process scheduled by another node is answered with a redirect (307) to its
//!   `?hint=` or to the URL of its scheduler's record.
//!
//! Assignments carry the gateway's current block in `prod` mode (read every 15 s) and
//! zeros otherwise, as the reference does. Node options: `verify_assignments` (default
//! true), `scheduler_require_signed` (default false: unsigned messages are scheduled,
//! as by the reference), `scheduler_location_ttl`.
//!
//! One [`Server`] per process serialises slot numbering. Its lock is held only to take
//! the next slot and hash-chain link; signing (the costly part) runs outside it, so
//! concurrent requests sign in parallel; the durable writes then happen strictly in slot
//! order, so the store never holds slot *n + 1* without slot *n*. If signing or a write
//! fails, the counter goes back to the last stored slot and the requests that had taken
//! later slots are refused: never a hole, never a duplicate.
//!
//! The store layout is spec 04 §2.13: `assignments/<PID>/<slot>` links to the stored
//! assignment. A server that starts (first use after a restart) continues from the
//! highest stored slot and its hash chain.
//!
//! Processes another node schedules are computed here too: `slot`, `next` and `GET
//! schedule` locate that node, fetch the assignments this node lacks, verify them and
//! keep them at the same paths (see [`remote`]).

pub mod remote;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hb_codec::Wallet;
use hb_codec::httpsig_commit;
use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome};
use hb_core::id::b64url;
use hb_core::message::{MessageDevice, committers_of, id_all};
use hb_core::{Ctx, Id, Message, Value};
use hb_store::GatewaySource;
use parking_lot::{Condvar, Mutex};
use percent_encoding::percent_decode_str;
use serde_json::{Value as Json, json};

use hb_core::json_struct::json_struct;

/// The device's name.
pub const NAME: &str = "scheduler@1.0";

/// The most assignments one `GET schedule` page holds (spec 04 §2.8: `to - from` is cut
/// to 1000, the range being inclusive).
pub const PAGE: i64 = 1000;

/// The block hash of assignments made without an Arweave clock (debug mode).
const ZERO_HASH: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The `scheduler@1.0` device of one node: its wallet and its per-process servers.
pub struct Scheduler {
    wallet: Option<Arc<Wallet>>,
    servers: Mutex<HashMap<String, Arc<Server>>>,
    /// The client of the node's `gateway` (its URL with it): the Arweave clock of
    /// production nodes and scheduler-location lookups use it.
    gateway: Mutex<Option<(String, Arc<GatewaySource>)>>,
    /// The clock's last reading.
    last_block: Mutex<Option<(Instant, Clock)>>,
    /// One fetch of a remote schedule at a time per process.
    fetching: remote::FetchLocks,
}

/// `(timestamp, block-height, block-hash)` stamped on assignments and pages.
type Clock = (i64, i64, String);

/// How long a block read from the gateway is used before it is read again.
const CLOCK_REFRESH: Duration = Duration::from_secs(15);

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("processes", &self.servers.lock().len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// The scheduler of a node that signs with `wallet` (without one it can read
    /// schedules but not assign).
    pub fn new(wallet: Option<Arc<Wallet>>) -> Self {
        Scheduler {
            wallet,
            servers: Mutex::new(HashMap::new()),
            gateway: Mutex::new(None),
            last_block: Mutex::new(None),
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// The clock of new assignments (spec 04 §2.4): in `prod` mode the gateway's
    /// current block, read at most every 15 s (the last one kept when the gateway
    /// fails); otherwise, as the reference's debug mode, zeros.
    fn block_clock(&self, ctx: &Ctx) -> Clock {
        let node = ctx.node().get();
        let prod = node
            .get("mode")
            .is_some_and(|m| m.as_atom().or_else(|| m.as_str()) == Some("prod"));
        if !prod {
            return debug_clock();
        }
        if let Some((at, clock)) = self.last_block.lock().as_ref()
            && at.elapsed() < CLOCK_REFRESH
        {
            return clock.clone();
        }
        let source = self.gateway_source(ctx);
        let read = source.map(|g| ctx.blocking(|| g.current_block()));
        let mut last = self.last_block.lock();
        match read {
            Some(Ok(clock)) => {
                *last = Some((Instant::now(), clock.clone()));
                clock
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the current block");
                last.as_ref().map_or_else(debug_clock, |(_, c)| c.clone())
            }
            None => debug_clock(),
        }
    }

    /// The node's gateway (none when `gateway` is unset or `none`), made once and kept
    /// while the option stays the same: the clock of assignments and scheduler-location
    /// lookups ([`remote`]) read it.
    fn gateway_source(&self, ctx: &Ctx) -> Option<Arc<GatewaySource>> {
        let node = ctx.node().get();
        let gateway = node.get_str("gateway").unwrap_or("none").trim();
        if gateway.is_empty() || gateway.eq_ignore_ascii_case("none") {
            return None;
        }
        let mut held = self.gateway.lock();
        if let Some((url, g)) = held.as_ref()
            && url == gateway
        {
            return Some(g.clone());
        }
        match GatewaySource::new(gateway) {
            Ok(g) => {
                let g = Arc::new(g);
                *held = Some((gateway.to_owned(), g.clone()));
                Some(g)
            }
            Err(e) => {
                tracing::warn!(error = %e, gateway, "cannot use the gateway");
                None
            }
        }
    }

    fn address(&self) -> Option<String> {
        self.wallet.as_ref().map(|w| w.address())
    }
}

/// The slot counter of one process.
struct Server {
    pid: String,
    /// The next slot to hand out: the last slot taken and the chain after it.
    taken: Mutex<Chain>,
    /// The last slot durably stored, and the signed assignments waiting to be.
    stored: Mutex<Stored>,
    /// Signalled whenever `stored` moves (or is reset).
    turn: Condvar,
}

/// What is durable, and what waits to be written in slot order.
struct Stored {
    /// The last slot durably stored and the chain after it.
    at: Chain,
    /// Signed assignments (or why signing failed) by slot, each with its chain.
    ready: std::collections::BTreeMap<i64, (Chain, Result<Message, String>)>,
    /// Whether a request is writing a batch now.
    writing: bool,
    /// For the last generations given up after a failure: the last slot they stored.
    ended: Vec<(u64, i64)>,
}

impl Stored {
    /// Whether slot `slot` taken in `generation` is durably stored; `None` while it
    /// may still be.
    fn outcome(&self, generation: u64, slot: i64) -> Option<bool> {
        if self.at.generation == generation {
            return (self.at.slot >= slot).then_some(true);
        }
        let end = self.ended.iter().find(|(g, _)| *g == generation);
        Some(end.is_some_and(|(_, last)| slot <= *last))
    }
}

/// A position in a schedule: a slot, the hash chain after it, and the generation of
/// the counter (bumped when a failure rewinds it, so stale reservations are refused).
#[derive(Clone)]
struct Chain {
    slot: i64,
    chain: Vec<u8>,
    generation: u64,
}

/// Why a request could not be scheduled: the outcome to answer with.
type Refusal = Box<Outcome>;

fn refuse(code: i64, text: &str) -> Refusal {
    Box::new(Outcome::error_status(code, text))
}

impl Device for Scheduler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::Function,
            excludes: vec!["set".into(), "keys".into()],
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "schedule",
            "slot",
            "status",
            "next",
            "checkpoint",
            "location",
            "record",
            "info",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call {
            Call::Function("info") => Ok(Outcome::ok(info())),
            Call::Function("status") => Ok(Outcome::ok(self.status())),
            Call::Function("checkpoint") => Ok(Outcome::ok(base.clone())),
            Call::Function("slot") => Ok(ctx.blocking(|| self.slot(base, req, ctx))),
            Call::Function("next") => Ok(ctx.blocking(|| self.next(base, ctx))),
            Call::Function("location" | "record") => Ok(ctx.blocking(|| {
                if method(req) == "POST" {
                    self.post_location(base, req, ctx)
                } else {
                    self.get_location(req, ctx)
                }
            })),
            // `schedule`, and every other key (spec 04 §2.1).
            _ => {
                if method(req) == "POST" {
                    Ok(ctx
                        .blocking(|| self.post(base, req, ctx).unwrap_or_else(|refusal| *refusal)))
                } else {
                    let clock = self.block_clock(ctx);
                    Ok(ctx.blocking(|| self.get_schedule(base, req, &clock, ctx)))
                }
            }
        }
    }
}

fn info() -> Message {
    Message::new()
        .with(
            "description",
            "The scheduling unit: orders messages into slots",
        )
        .with("version", "1.0")
}

/// The request's method, upper-cased (`GET` when it has none).
fn method(req: &Message) -> String {
    req.get_str("method").unwrap_or("GET").to_ascii_uppercase()
}

/// An ID without its `?hint=…`/`&…` suffix.
pub fn bare_id(id: &str) -> &str {
    id.split(['?', '&']).next().unwrap_or(id)
}

/// The process a message is for: its `target`, as a 43-character ID (a data item's
/// target field arrives as 32 raw bytes), without any `?hint=…`.
pub fn target_of(msg: &Message) -> Option<String> {
    match msg.get("target")? {
        Value::Binary(b) if b.len() == 32 => Some(b64url(b)),
        Value::Binary(b) if !b.is_empty() => {
            std::str::from_utf8(b).ok().map(|t| bare_id(t).to_owned())
        }
        _ => None,
    }
}

/// ID\*(M) in its 43-character form.
fn id_text(msg: &Message) -> Result<String, Refusal> {
    id_all(msg)
        .map(|id| id.to_human())
        .map_err(|e| refuse(400, &format!("The message has no ID: {e}")))
}

fn is_process(msg: &Message) -> bool {
    msg.get_str("type")
        .is_some_and(|t| t.eq_ignore_ascii_case("process"))
}

/// The process a read request is about (spec 04 §2.2).
fn process_of(base: &Message, req: &Message) -> Result<String, Refusal> {
    if let Some(target) = target_of(req) {
        return Ok(target);
    }
    // The seed tutorial names the process with a `process` key (the reference ignores
    // it): accepted when it is an ID.
    if let Some(p) = req.get_str("process").filter(|p| p.len() == 43) {
        return Ok(p.to_owned());
    }
    if is_process(req) {
        return id_text(req);
    }
    if let Some(p) = base.get("process").and_then(Value::as_message) {
        return id_text(p);
    }
    if is_process(base) {
        return id_text(base);
    }
    id_text(req)
}

/// The committed keys of `msg` (and its `commitments`): what the signers vouch for.
/// Unsigned messages (no commitment with a committer) are kept whole.
///
/// # Errors
/// A commitment's covered keys cannot be determined.
pub fn committed_only(msg: &Message) -> Result<Message, String> {
    let Some(commitments) = msg.get("commitments").and_then(Value::as_message) else {
        return Ok(msg.clone());
    };
    let mut keys: Vec<String> = Vec::new();
    let mut signed = false;
    for (cid, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        if c.get("committer").is_none() {
            continue;
        }
        signed = true;
        let found = match c.get_str("commitment-device").unwrap_or("httpsig@1.0") {
            "ans104@1.0" => {
                // A data item without `original-tags` is rebuilt from the message's
                // keys, so the keys the HTTP layer adds to every request (`path`,
                // `method`; never tags of a client's item) must be left out first.
                let bare = msg.clone().without("path").without("method");
                hb_codec::ans104::commit::committed_keys(&bare, cid).map_err(|e| e.to_string())?
            }
            "httpsig@1.0" => httpsig_commit::committed_keys(msg, cid).map_err(|e| e.to_string())?,
            other => return Err(format!("unknown commitment device `{other}`")),
        };
        keys.extend(found);
    }
    if !signed {
        return Ok(msg.clone());
    }
    let mut out = Message::new();
    for (k, v) in msg.iter() {
        if k.as_ref() == "commitments" || keys.iter().any(|c| c == k.as_ref()) {
            out.insert_key(k.clone(), v.clone());
        }
    }
    Ok(out)
}

/// Whether every signed commitment of `msg` verifies (an unsigned message does).
fn verifies(msg: &Message, ctx: &Ctx) -> bool {
    // As `message@1.0`, whatever the message's own device.
    let req = Message::new().with("path", "verify");
    matches!(
        MessageDevice.call(Call::Function("verify"), msg, &req, &ctx.internal()),
        Ok(out) if out.is_ok() && out.value.is_atom("true")
    )
}

/// The message to schedule when it is the HTTP request itself (no `body`) and the
/// request arrived signed: the request as received and verified, with its own `path`
/// (an hbsig client signs `@path`; the step's message has the HyperPATH key instead,
/// so its re-encoding cannot verify). `None` for anything else.
fn received_original(req: &Message, given: &Message, ctx: &Ctx) -> Option<Message> {
    let received = ctx.request()?;
    let same = req.get("body").is_none()
        && given.get("commitments").is_some()
        && given.get("commitments") == received.get("commitments");
    same.then(|| committed_only(received).ok()).flatten()
}

/// The key the execution device runs for a message: its own `path` when that names
/// one key, else `compute`. A `path` that routed the message here (`/<pid>/schedule`,
/// `/~process@1.0/schedule`: several segments, or `schedule` itself) is not one.
fn execution_path(msg: &Message) -> String {
    let path = match msg.get("path") {
        Some(Value::Binary(_)) => msg.get_str("path").unwrap_or(""),
        Some(Value::List(l)) if l.len() == 1 => l[0].as_str().unwrap_or(""),
        _ => "",
    };
    let key = path.trim_matches('/');
    if key.is_empty() || key.contains('/') || key.contains('~') || key == "schedule" {
        "compute".into()
    } else {
        key.to_owned()
    }
}

/// The clock without Arweave (the reference's debug mode): zeros.
fn debug_clock() -> Clock {
    (0, 0, ZERO_HASH.to_owned())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The next link of a hash chain (spec 04 §2.5).
pub fn next_chain(prev: &[u8], message_id: &str) -> Vec<u8> {
    let mut input = Vec::with_capacity(prev.len() + message_id.len());
    input.extend_from_slice(prev);
    input.extend_from_slice(message_id.as_bytes());
    Id::sha256(&input).0.to_vec()
}

/// Store path of an assignment.
pub fn assignment_path(pid: &str, slot: i64) -> String {
    format!("assignments/{pid}/{slot}")
}

/// The highest stored slot of a process and the chain after it (spec 04 §2.6 "on
/// start"); `-1` and an empty chain for a new schedule.
fn stored_head(pid: &str, ctx: &Ctx) -> Result<Chain, Refusal> {
    let cache = ctx.cache();
    let names = cache
        .list(&format!("assignments/{pid}"))
        .map_err(|e| refuse(500, &format!("Cannot read the schedule: {e}")))?
        .unwrap_or_default();
    let Some(last) = names.iter().filter_map(|n| n.parse::<i64>().ok()).max() else {
        return Ok(Chain {
            slot: -1,
            chain: Vec::new(),
            generation: 0,
        });
    };
    let assignment = read_assignment(pid, last, ctx)?.ok_or_else(|| {
        refuse(
            500,
            &format!("Slot {last} of {pid} is listed but unreadable"),
        )
    })?;
    let chain = assignment
        .get_str("hash-chain")
        .and_then(|c| Id::from_human(c.as_bytes()))
        .ok_or_else(|| refuse(500, &format!("Slot {last} of {pid} has no hash chain")))?;
    Ok(Chain {
        slot: last,
        chain: chain.0.to_vec(),
        generation: 0,
    })
}

/// The stored assignment of `slot`, if there is one.
fn read_assignment(pid: &str, slot: i64, ctx: &Ctx) -> Result<Option<Message>, Refusal> {
    match ctx.cache().read_path(&assignment_path(pid, slot)) {
        Ok(Some(Value::Message(m))) => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) => Err(refuse(
            500,
            &format!("Cannot read slot {slot} of {pid}: {e}"),
        )),
    }
}

impl Scheduler {
    /// The live server of `pid`, started from the store when it has none yet.
    fn server(&self, pid: &str, ctx: &Ctx) -> Result<Arc<Server>, Refusal> {
        if let Some(s) = self.servers.lock().get(pid) {
            return Ok(s.clone());
        }
        let head = stored_head(pid, ctx)?;
        let mut servers = self.servers.lock();
        // Another request may have started it meanwhile: the first one stays.
        let server = servers.entry(pid.to_owned()).or_insert_with(|| {
            Arc::new(Server {
                pid: pid.to_owned(),
                taken: Mutex::new(head.clone()),
                stored: Mutex::new(Stored {
                    at: head,
                    ready: std::collections::BTreeMap::new(),
                    writing: false,
                    ended: Vec::new(),
                }),
                turn: Condvar::new(),
            })
        });
        Ok(server.clone())
    }

    /// Whether this node schedules the process `definition`.
    fn schedules(&self, definition: &Message) -> Result<bool, Refusal> {
        let location = definition
            .get_str("scheduler")
            .or_else(|| definition.get_str("scheduler-location"))
            .ok_or_else(|| refuse(400, "No scheduler information provided."))?;
        let ours = self.address().unwrap_or_default();
        Ok(location
            .split(',')
            .any(|a| bare_id(a.trim().trim_matches('"')) == ours))
    }

    /// `POST schedule` (spec 04 §2.3).
    fn post(&self, base: &Message, req: &Message, ctx: &Ctx) -> Result<Outcome, Refusal> {
        let Some(wallet) = self.wallet.clone() else {
            return Err(refuse(
                503,
                "This node has no wallet: it cannot sign assignments.",
            ));
        };
        let given = match req.get("body") {
            Some(Value::Message(m)) => m.clone(),
            _ => req.clone(),
        };
        let mut msg = committed_only(&given).map_err(|reason| {
            Box::new(Outcome::error(
                Message::new()
                    .with("status", 400i64)
                    .with(
                        "body",
                        "Message invalid: Committed components cannot be validated.",
                    )
                    .with("reason", reason.as_str()),
            ))
        })?;
        let node = ctx.node().get();
        let flag = |key: &str| {
            node.get(key)
                .map(|v| v.as_atom().or_else(|| v.as_str()).unwrap_or(""))
        };
        if flag("scheduler_require_signed") == Some("true") && committers_of(&msg).is_empty() {
            return Err(refuse(
                400,
                "Message is not signed: this node schedules signed messages only.",
            ));
        }
        let verify = flag("verify_assignments") != Some("false");
        if verify && !verifies(&msg, ctx) {
            if let Some(original) = received_original(req, &given, ctx) {
                msg = original;
            } else {
                return Err(Box::new(Outcome::error(
                    Message::new()
                        .with("status", 400i64)
                        .with("body", "Message is not valid.")
                        .with("reason", "Given message does not correctly validate."),
                )));
            }
        }
        let msg_id = id_text(&msg)?;
        let pid = if is_process(&msg) {
            msg_id.clone()
        } else {
            match target_of(&msg) {
                Some(t) => t,
                None => process_of(base, req)?,
            }
        };
        if !self.servers.lock().contains_key(&pid) {
            let definition = self.definition(&pid, &msg, base, ctx)?;
            if !self.schedules(&definition)? {
                return Ok(redirect(&definition, ctx));
            }
            if is_process(&msg) {
                // Readable by the process ID (ID*: all commitments) as well.
                ctx.cache()
                    .store_message(&msg, std::slice::from_ref(&pid))
                    .map_err(|e| refuse(500, &format!("Cannot store the process: {e}")))?;
            }
        }
        let server = self.server(&pid, ctx)?;
        let clock = self.block_clock(ctx);
        server
            .assign(&msg, &msg_id, &wallet, clock, ctx)
            .map(|a| Outcome::ok(Value::Message(a)))
    }

    /// The definition of process `pid`: the message itself, the base (or its
    /// `process`), or the stored definition.
    fn definition(
        &self,
        pid: &str,
        msg: &Message,
        base: &Message,
        ctx: &Ctx,
    ) -> Result<Message, Refusal> {
        if let Some(p) = base.get("process").and_then(Value::as_message) {
            return Ok(p.clone());
        }
        if is_process(msg) {
            return Ok(msg.clone());
        }
        if is_process(base) && id_text(base).is_ok_and(|id| id == pid) {
            return Ok(base.clone());
        }
        match ctx.cache().read_path(pid) {
            Ok(Some(Value::Message(m))) => Ok(m),
            Ok(_) => Err(refuse(404, &format!("Process not found: {pid}"))),
            Err(e) => Err(refuse(500, &format!("Cannot read process {pid}: {e}"))),
        }
    }

    /// `slot` (spec 04 §2.9).
    fn slot(&self, base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
        let pid = match process_of(base, req) {
            Ok(pid) => pid,
            Err(refusal) => return *refusal,
        };
        if let remote::Whose::Remote(definition) = self.whose(&pid, base, ctx) {
            return if remote::follows_redirects(ctx, req) {
                self.remote_slot(&pid, &definition, ctx)
            } else {
                redirect(&definition, ctx)
            };
        }
        let current = match self.servers.lock().get(&pid) {
            Some(s) => Ok(s.stored.lock().at.slot),
            None => stored_head(&pid, ctx).map(|c| c.slot),
        };
        let current = match current {
            Ok(c) => c,
            Err(refusal) => return *refusal,
        };
        let (timestamp, height, hash) = self.block_clock(ctx);
        Outcome::ok(
            Message::new()
                .with("process", pid.as_str())
                .with("current", current)
                .with("timestamp", timestamp)
                .with("block-height", height)
                .with("block-hash", hash.as_str())
                .with("cache-control", "no-store")
                .with(
                    "wallet-address",
                    self.address().unwrap_or_default().as_str(),
                ),
        )
    }

    /// `status` (spec 04 §2.7).
    fn status(&self) -> Message {
        let mut pids: Vec<String> = self.servers.lock().keys().cloned().collect();
        pids.sort();
        Message::new()
            .with("address", self.address().unwrap_or_default().as_str())
            .with(
                "processes",
                Value::list(pids.iter().map(|p| Value::text(p)).collect()),
            )
            .with("cache-control", "no-store")
    }
}

/// The reply for a process another node schedules (spec 04 §2.11): a redirect to the
/// hint of its scheduler address, else to the URL of that address's latest
/// scheduler-location record known here.
fn redirect(definition: &Message, ctx: &Ctx) -> Outcome {
    let location = definition
        .get_str("scheduler")
        .or_else(|| definition.get_str("scheduler-location"))
        .unwrap_or("");
    match remote::known_target(definition, ctx) {
        Some((url, variant)) => Outcome::ok(
            Message::new()
                .with("status", 307i64)
                .with("location", url.as_str())
                .with("body", format!("Redirecting to scheduler: {url}").as_str())
                .with("variant", variant.as_str()),
        ),
        None => Outcome::error_status(
            404,
            &format!(
                "The process is scheduled by {location}, whose location this node does not know."
            ),
        ),
    }
}

/// Store path of a scheduler-location record: one per address and nonce, so the
/// newest is the highest nonce (links never overwrite; spec 04 §2.13's quirk avoided).
fn location_path(address: &str, nonce: i64) -> String {
    format!("scheduler-locations/{address}/{nonce}")
}

/// The newest scheduler-location record of `address` this node holds, with its nonce.
fn latest_location(address: &str, ctx: &Ctx) -> Option<(i64, Message)> {
    if address.is_empty() {
        return None;
    }
    let names = ctx
        .cache()
        .list(&format!("scheduler-locations/{address}"))
        .ok()
        .flatten()?;
    let nonce = names.iter().filter_map(|n| n.parse::<i64>().ok()).max()?;
    match ctx.cache().read_path(&location_path(address, nonce)) {
        Ok(Some(Value::Message(m))) => Some((nonce, m)),
        _ => None,
    }
}

impl Scheduler {
    /// `GET location` (spec 04 §2.12): the newest record of `address` (this node's by
    /// default).
    fn get_location(&self, req: &Message, ctx: &Ctx) -> Outcome {
        let address = req
            .get_str("address")
            .map(str::to_owned)
            .or_else(|| self.address())
            .unwrap_or_default();
        match latest_location(&address, ctx) {
            Some((_, record)) => Outcome::ok(Message::new().with("body", Value::Message(record))),
            None => {
                Outcome::error_status(404, &format!("No location found for address: {address}"))
            }
        }
    }

    /// `POST location` (and its alias `POST record`, spec 04 §2.12): keep a record
    /// signed by others after verifying it, or, for a request signed by this node's
    /// operator (its own wallet), sign and keep a new record of this node.
    fn post_location(&self, base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
        let given = match req.get_str("target").and_then(|k| req.get(k)) {
            Some(Value::Message(m)) => m.clone(),
            _ => req.clone(),
        };
        let record = match committed_only(&given) {
            Ok(r) => r,
            Err(reason) => {
                return Outcome::error(
                    Message::new()
                        .with("status", 400i64)
                        .with("body", "Failed to store new scheduler location.")
                        .with("reason", reason.as_str()),
                );
            }
        };
        let signers = committers_of(&record);
        let ours = self.address().unwrap_or_default();
        let operator = signers.contains(&ours);
        let subject = if operator {
            ours.clone()
        } else {
            signers.first().cloned().unwrap_or_default()
        };
        let existing = latest_location(&subject, ctx).map_or(-1, |(n, _)| n);
        let requested = record
            .get("nonce")
            .and_then(Value::as_int)
            .unwrap_or(existing + 1);
        if requested <= existing {
            return Outcome::error(
                Message::new()
                    .with("status", 400i64)
                    .with("body", "Known nonce higher than requested nonce.")
                    .with("requested-nonce", requested)
                    .with("existing-nonce", existing)
                    .with(
                        "signers",
                        Value::list(signers.iter().map(|s| Value::text(s)).collect()),
                    ),
            );
        }
        if !operator {
            if signers.is_empty() || !verifies(&record, ctx) {
                return Outcome::error(
                    Message::new()
                        .with("status", 400i64)
                        .with("body", "Failed to store new scheduler location.")
                        .with("reason", "The record is not signed, or does not verify."),
                );
            }
            let aliases: Vec<String> = signers
                .iter()
                .map(|s| location_path(s, requested))
                .collect();
            return match ctx.cache().store_message(&record, &aliases) {
                Ok(_) => Outcome::ok(record),
                Err(e) => Outcome::error_status(500, &format!("Cannot store the record: {e}")),
            };
        }
        let Some(wallet) = &self.wallet else {
            return Outcome::error_status(503, "This node has no wallet to sign its record.");
        };
        let node = ctx.node().get();
        let url = req.get_str("url").map(str::to_owned).unwrap_or_else(|| {
            let host = node.get_str("host").unwrap_or("localhost");
            let port = node.get("port").and_then(Value::as_int).unwrap_or(8734);
            let scheme = match node.get_str("protocol") {
                None | Some("http1") => "http",
                Some(_) => "https",
            };
            format!("{scheme}://{host}:{port}")
        });
        let ttl = base
            .get("time-to-live")
            .or_else(|| req.get("time-to-live"))
            .and_then(Value::as_int)
            .or_else(|| node.get("scheduler_location_ttl").and_then(Value::as_int))
            .unwrap_or(604_800_000);
        let codec = base
            .get_str("accept-codec")
            .or_else(|| req.get_str("accept-codec"))
            .unwrap_or("httpsig@1.0")
            .to_owned();
        let fresh = Message::new()
            .with("data-protocol", "ao")
            .with("variant", "ao.N.1")
            .with("type", "scheduler-location")
            .with("url", url.as_str())
            .with("nonce", requested)
            .with("time-to-live", ttl)
            .with("codec-device", codec.as_str());
        let signed = match codec.as_str() {
            "ans104@1.0" => {
                hb_codec::ans104::commit::commit(&fresh, wallet).map_err(|e| e.to_string())
            }
            _ => httpsig_commit::commit(&fresh, wallet).map_err(|e| e.to_string()),
        };
        let signed = match signed {
            Ok(m) => m,
            Err(e) => return Outcome::error_status(500, &format!("Cannot sign the record: {e}")),
        };
        match ctx
            .cache()
            .store_message(&signed, &[location_path(&ours, requested)])
        {
            Ok(_) => Outcome::ok(signed),
            Err(e) => Outcome::error_status(500, &format!("Cannot store the record: {e}")),
        }
    }
}

impl Server {
    /// Gives `msg` the next slot: take it, sign the assignment, store it in slot order.
    fn assign(
        &self,
        msg: &Message,
        msg_id: &str,
        wallet: &Wallet,
        clock: Clock,
        ctx: &Ctx,
    ) -> Result<Message, Refusal> {
        let mine = {
            let mut taken = self.taken.lock();
            taken.slot += 1;
            taken.chain = next_chain(&taken.chain, msg_id);
            taken.clone()
        };
        let (block_ts, height, hash) = clock;
        let assignment = Message::new()
            .with("path", execution_path(msg).as_str())
            .with("data-protocol", "ao")
            .with("variant", "ao.N.1")
            .with("process", self.pid.as_str())
            .with("epoch", "0")
            .with("slot", mine.slot)
            .with("block-height", height)
            .with("block-hash", hash.as_str())
            .with("block-timestamp", block_ts)
            .with("timestamp", now_ms())
            .with("hash-chain", b64url(&mine.chain).as_str())
            .with("body", Value::Message(msg.clone()));
        let signed = httpsig_commit::commit(&assignment, wallet)
            .map_err(|e| format!("Cannot sign the assignment: {e}"));
        let mut stored = self.stored.lock();
        if stored.at.generation != mine.generation {
            return Err(stale());
        }
        stored
            .ready
            .insert(mine.slot, (mine.clone(), signed.clone()));
        // Group commit: whoever finds the next slot ready and nobody writing writes every
        // consecutive ready assignment in one batch (one disk flush); the others wait
        // until their slot is stored. Bounded: each round stores a slot, fails, or waits
        // for one of those.
        loop {
            match stored.outcome(mine.generation, mine.slot) {
                Some(true) => return signed.map_err(|why| refuse(500, &why)),
                Some(false) => return Err(stale()),
                None => {}
            }
            if stored.writing || !stored.ready.contains_key(&(stored.at.slot + 1)) {
                self.turn.wait(&mut stored);
                continue;
            }
            let mut batch = Vec::new();
            let mut last: Option<Chain> = None;
            let mut failure: Option<String> = None;
            let mut next = stored.at.slot + 1;
            while let Some((chain, result)) = stored.ready.remove(&next) {
                match result {
                    Ok(a) => {
                        batch.push((a, vec![assignment_path(&self.pid, next)]));
                        last = Some(chain);
                    }
                    Err(why) => {
                        failure = Some(why);
                        break;
                    }
                }
                next += 1;
            }
            stored.writing = true;
            drop(stored);
            let written = if batch.is_empty() {
                Ok(())
            } else {
                ctx.cache()
                    .store_messages(&batch)
                    .map_err(|e| format!("Cannot store the assignments: {e}"))
            };
            stored = self.stored.lock();
            stored.writing = false;
            match (written, failure) {
                (Ok(()), None) => {
                    if let Some(chain) = last {
                        stored.at = chain;
                    }
                }
                (Ok(()), Some(why)) | (Err(why), _) => {
                    tracing::error!(process = %self.pid, error = %why, "scheduling failed");
                    // Rewind to what the store holds; later reservations are refused.
                    let head = stored_head(&self.pid, ctx).unwrap_or_else(|_| stored.at.clone());
                    let ended = (stored.at.generation, head.slot);
                    stored.ended.push(ended);
                    if stored.ended.len() > 16 {
                        stored.ended.remove(0);
                    }
                    stored.at = Chain {
                        generation: ended.0 + 1,
                        ..head
                    };
                    stored.ready.clear();
                    *self.taken.lock() = stored.at.clone();
                    self.turn.notify_all();
                    return match stored.outcome(mine.generation, mine.slot) {
                        Some(true) => signed.map_err(|why| refuse(500, &why)),
                        _ => Err(refuse(500, &why)),
                    };
                }
            }
            self.turn.notify_all();
        }
    }
}

/// The refusal of a request whose slot was given up after an earlier failure.
fn stale() -> Refusal {
    refuse(
        503,
        "An earlier assignment of this process could not be stored; send the message again.",
    )
}

impl Scheduler {
    /// `next` (spec 04 §2.10): the assignment after the state's `at-slot`, from the
    /// local store; for a process another node schedules, fetched from that node when
    /// the store lacks it ([`remote`]).
    fn next(&self, base: &Message, ctx: &Ctx) -> Outcome {
        let pid = match process_of(base, &Message::new()) {
            Ok(pid) => pid,
            Err(refusal) => return *refusal,
        };
        let last = base.get("at-slot").and_then(Value::as_int).unwrap_or(-1);
        let Some(wanted) = last.checked_add(1) else {
            return Outcome::error_status(503, "No assignment found for next slot.");
        };
        let found = |ctx: &Ctx| match read_assignment(&pid, wanted, ctx) {
            Ok(Some(a)) if a.get("slot").and_then(Value::as_int) == Some(wanted) => {
                Ok(Some(Outcome::ok(
                    Message::new()
                        .with("body", Value::Message(a))
                        .with("state", Value::Message(base.clone())),
                )))
            }
            Ok(_) => Ok(None),
            Err(refusal) => Err(refusal),
        };
        match found(ctx) {
            Ok(Some(out)) => return out,
            Ok(None) => {}
            Err(refusal) => return *refusal,
        }
        if let remote::Whose::Remote(definition) = self.whose(&pid, base, ctx) {
            if let Err(refusal) = self.sync(&pid, &definition, wanted, 1, ctx) {
                return *refusal;
            }
            match found(ctx) {
                Ok(Some(out)) => return out,
                Ok(None) => {}
                Err(refusal) => return *refusal,
            }
        }
        Outcome::error_status(503, "No assignment found for next slot.")
    }

    /// `GET schedule` (spec 04 §2.8): for a process another node schedules, the
    /// assignments this node lacks in the range are fetched first ([`remote`]), or,
    /// with `scheduler_follow_redirects: false`, the redirect is the answer.
    fn get_schedule(&self, base: &Message, req: &Message, clock: &Clock, ctx: &Ctx) -> Outcome {
        let pid = match process_of(base, req) {
            Ok(pid) => pid,
            Err(refusal) => return *refusal,
        };
        let remote::Whose::Remote(definition) = self.whose(&pid, base, ctx) else {
            return get_schedule(base, req, clock, ctx, false);
        };
        if !remote::follows_redirects(ctx, req) {
            return redirect(&definition, ctx);
        }
        let from = int_key(req, "from").unwrap_or(0).max(0);
        let to = int_key(req, "to");
        let want = to
            .unwrap_or(i64::MAX)
            .min(from.saturating_add(PAGE))
            .max(from);
        match self.sync(&pid, &definition, want, remote::MAX_PAGES, ctx) {
            Ok(more) => get_schedule(base, req, clock, ctx, more && to.is_none()),
            Err(refusal) => *refusal,
        }
    }
}

/// A request key read as an integer (`from=5` arrives as text).
fn int_key(req: &Message, key: &str) -> Option<i64> {
    req.get(key).and_then(Value::as_int)
}

/// `GET schedule` (spec 04 §2.8) from the local store; `more`: the page continues
/// whatever its range says (a remote schedule not fetched to its end).
fn get_schedule(base: &Message, req: &Message, clock: &Clock, ctx: &Ctx, more: bool) -> Outcome {
    let pid = match process_of(base, req) {
        Ok(pid) => pid,
        Err(refusal) => return *refusal,
    };
    let from = int_key(req, "from").unwrap_or(0).max(0);
    let last = match stored_head(&pid, ctx) {
        Ok(head) => head.slot,
        Err(refusal) => return *refusal,
    };
    let to = int_key(req, "to").unwrap_or(last);
    let (to, continues) = if to.saturating_sub(from) > PAGE {
        (from + PAGE, true)
    } else {
        (to, more)
    };
    let mut assignments = Vec::new();
    let mut slot = from;
    while slot <= to {
        match read_assignment(&pid, slot, ctx) {
            Ok(Some(a)) => assignments.push(a),
            Ok(None) => break,
            Err(refusal) => return *refusal,
        }
        slot += 1;
    }
    let accept = req.get_str("accept").unwrap_or("application/http");
    let accept = percent_decode_str(accept).decode_utf8_lossy();
    if accept.contains("application/aos-2") {
        return aos2_page(&pid, &assignments, continues, clock);
    }
    let (timestamp, height, hash) = clock;
    let mut page = Message::new();
    for a in assignments {
        let slot = a.get("slot").and_then(Value::as_int).unwrap_or(0);
        page.insert(&slot.to_string(), Value::Message(a));
    }
    Outcome::ok(
        Message::new()
            .with("type", "schedule")
            .with("process", pid.as_str())
            .with("continues", Value::boolean(continues))
            .with("timestamp", *timestamp)
            .with("block-height", *height)
            .with("block-hash", hash.as_str())
            .with("assignments", page),
    )
}

/// `accept` with its escaped slashes decoded (the reference compares it decoded:
/// `application%2Faos-2` is `application/aos-2`).
/// The legacy `application/aos-2` page (spec 04 §2.8).
fn aos2_page(pid: &str, assignments: &[Message], continues: bool, clock: &Clock) -> Outcome {
    let (timestamp, height, hash) = clock;
    let mut edges = Vec::with_capacity(assignments.len());
    for a in assignments {
        let body = a.get("body").and_then(Value::as_message).cloned();
        let message = match body.as_ref().map(json_struct) {
            Some(Ok(j)) => j,
            Some(Err(e)) => {
                return Outcome::error_status(500, &format!("Cannot render a message: {e}"));
            }
            None => Json::Null,
        };
        let assignment = match json_struct(&a.clone().without("body")) {
            Ok(j) => j,
            Err(e) => {
                return Outcome::error_status(500, &format!("Cannot render an assignment: {e}"));
            }
        };
        edges.push(json!({
            "cursor": a.get("slot").and_then(Value::as_int).unwrap_or(0),
            "node": { "message": message, "assignment": assignment },
        }));
    }
    let page = json!({
        "page_info": {
            "process": pid,
            "has_next_page": continues,
            "timestamp": timestamp.to_string(),
            "block-height": height.to_string(),
            "block-hash": hash,
        },
        "edges": edges,
    });
    Outcome::ok(
        Message::new()
            .with("content-type", "application/json")
            .with("body", page.to_string().as_str()),
    )
}

/// The first committer of a message (its signer), if any.
pub fn signer(msg: &Message) -> Option<String> {
    committers_of(msg).into_iter().next()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// A message cache whose next batch write fails when `fail` is set.
    #[derive(Debug)]
    struct Flaky {
        inner: hb_store::MessageCache,
        fail: std::sync::atomic::AtomicBool,
    }

    impl hb_core::Cache for Flaky {
        fn read_result(&self, h: &str) -> Option<Value> {
            self.inner.read_result(h)
        }
        fn write_result(&self, h: &str, v: &Value) {
            self.inner.write_result(h, v);
        }
        fn read_message(&self, id: &Id) -> Option<Message> {
            hb_core::Cache::read_message(&self.inner, id)
        }
        fn write_message(&self, id: Id, m: &Message) {
            hb_core::Cache::write_message(&self.inner, id, m);
        }
        fn read_path(&self, p: &str) -> Result<Option<Value>, hb_core::cache::CacheOpError> {
            hb_core::Cache::read_path(&self.inner, p)
        }
        fn list(&self, p: &str) -> Result<Option<Vec<String>>, hb_core::cache::CacheOpError> {
            hb_core::Cache::list(&self.inner, p)
        }
        fn store_message(
            &self,
            m: &Message,
            a: &[String],
        ) -> Result<Id, hb_core::cache::CacheOpError> {
            hb_core::Cache::store_message(&self.inner, m, a)
        }
        fn store_messages(
            &self,
            batch: &[(Message, Vec<String>)],
        ) -> Result<(), hb_core::cache::CacheOpError> {
            if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(hb_core::cache::CacheOpError::Failed("disk full".into()));
            }
            hb_core::Cache::store_messages(&self.inner, batch)
        }
    }

    /// A failed write takes no slot: the next message gets it, and the chain goes on
    /// from the last stored assignment.
    #[test]
    fn a_failed_write_leaves_no_hole() {
        let wallet = Arc::new(
            Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-2.json")).unwrap(),
        );
        let cache = Arc::new(Flaky {
            inner: hb_store::MessageCache::new(Arc::new(hb_store::MemoryStore::new())),
            fail: std::sync::atomic::AtomicBool::new(false),
        });
        let ctx = Ctx::new(
            Arc::new(crate::registry_with_wallet(Some(wallet.clone()))),
            cache.clone(),
            hb_core::NodeHandle::new(Message::new()),
        );
        let scheduler = Scheduler::new(Some(wallet.clone()));
        let def = Message::new()
            .with("type", "Process")
            .with("scheduler", wallet.address().as_str());
        let post = |body: &Message| {
            let req = Message::new()
                .with("method", "POST")
                .with("body", Value::Message(body.clone()));
            scheduler.post(&Message::new(), &req, &ctx)
        };
        let pid = id_all(&def).unwrap().to_human();
        let slot = |o: &Outcome| o.value.as_message().and_then(|m| m.get("slot")).cloned();
        assert_eq!(slot(&post(&def).unwrap()), Some(Value::Integer(0)));
        let msg = |n: i64| {
            Message::new()
                .with("type", "Message")
                .with("target", pid.as_str())
                .with("n", n)
        };
        assert_eq!(slot(&post(&msg(1)).unwrap()), Some(Value::Integer(1)));
        cache.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let refused = post(&msg(2)).unwrap_err();
        assert!(format!("{:?}", refused.value).contains("disk full"));
        let next = post(&msg(3)).unwrap();
        assert_eq!(slot(&next), Some(Value::Integer(2)));
        // The chain links slot 2 to slot 1.
        let one = read_assignment(&pid, 1, &ctx).unwrap().unwrap();
        let prev = Id::from_human(one.get_str("hash-chain").unwrap().as_bytes()).unwrap();
        let body = next.value.as_message().unwrap().get("body").unwrap();
        let expected = next_chain(
            &prev.0,
            &id_all(body.as_message().unwrap()).unwrap().to_human(),
        );
        assert_eq!(
            next.value.as_message().unwrap().get_str("hash-chain"),
            Some(b64url(&expected).as_str())
        );
        assert!(read_assignment(&pid, 3, &ctx).unwrap().is_none());
    }

    /// Spec 04 §2.5's vectors.
    #[test]
    fn hash_chain_vectors() {
        let a = next_chain(b"", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(b64url(&a), "DwBzhbb51LfusnSGBa_hqYSgo7-j8BTQnip4TOnlzRo");
        let b = next_chain(&a, "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
        assert_eq!(b64url(&b), "81JifZwe0XErrxaaoF-51ALLgfLH1SKLtxFJBtq5bXQ");
        // The reference's restart quirk (the stored text as the previous link).
        let quirk = next_chain(
            b"DwBzhbb51LfusnSGBa_hqYSgo7-j8BTQnip4TOnlzRo",
            "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        );
        assert_eq!(
            b64url(&quirk),
            "OAnedWUz8JsZm7llqm1FpaZay4yxKYBFo9aUn_dneaU"
        );
    }

    #[test]
    fn execution_paths() {
        let m = |p: &str| Message::new().with("path", p);
        assert_eq!(execution_path(&Message::new()), "compute");
        assert_eq!(execution_path(&m("register")), "register");
        assert_eq!(execution_path(&m("/~process@1.0/schedule")), "compute");
        assert_eq!(execution_path(&m("schedule")), "compute");
        assert_eq!(
            execution_path(&Message::new().with("path", Value::list(vec![Value::text("init")]))),
            "init"
        );
    }

    #[test]
    fn hints() {
        assert_eq!(bare_id("abc?hint=http://x"), "abc");
        assert_eq!(bare_id("abc&hint=http://x"), "abc");
        let def = Message::new().with("scheduler", "addr?hint=http://test.computer");
        let ctx = Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(hb_core::MemoryCache::new(10)),
            hb_core::NodeHandle::new(Message::new()),
        );
        let out = redirect(&def, &ctx);
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(307)));
        assert_eq!(m.get_str("location"), Some("http://test.computer"));
    }
}
