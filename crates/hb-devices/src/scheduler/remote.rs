//! Schedules kept by another node (spec 04 §2.8 "remote case", §2.9, §2.10, §2.11).
//!
//! A node computes any process, not only those it schedules. When `slot`, `next` or
//! `GET schedule` is asked about a process whose definition names another scheduler
//! (its `scheduler`, else `scheduler-location`), this node:
//!
//! 1. **locates** that scheduler: the `?hint=<url>` of the address, else the newest
//!    scheduler-location record of the address kept here (`POST location` stores those
//!    others send), else the newest `Type: Scheduler-Location` record the node's
//!    `gateway` lists for that owner through GraphQL (verified, then kept here);
//! 2. **asks** the scheduler node, over HTTP: `GET <node>/~scheduler@1.0/slot?target=`
//!    for the current slot, `GET <node>/~scheduler@1.0/schedule?target=&from=&to=` for
//!    the assignments it lacks, [`REMOTE_PAGE`] per request, always continuing from
//!    the highest slot it holds;
//! 3. **verifies** every assignment before keeping it: `process` is the process, the
//!    slots are contiguous, it is signed (httpsig, RSA, the key bound to the address)
//!    by one of the scheduler addresses the definition names, and its `hash-chain`
//!    continues the previous slot's over ID\*(`body`) (§2.5; the reference's restart
//!    quirk, which links from the previous value's text, is accepted as well);
//! 4. **keeps** the verified assignments at the same paths as its own
//!    (`assignments/<PID>/<slot>`, §2.13), so later reads and computations are local
//!    and go on when the scheduler node is down.
//!
//! The reply's own signature (a node signs its replies) is checked when present, but
//! the trust is in the assignments' signatures: an answer that does not verify is
//! refused with what was wrong, and the verified assignments before it are kept.
//!
//! Bounded: every request has a connect timeout (`http_connect_timeout`, 5000 ms) and
//! a total one (`scheduler_remote_timeout`, 30000 ms), replies are capped
//! (`scheduler_remote_max_reply_bytes`, 64 MiB), a 307 is followed at most
//! [`MAX_HOPS`] times, one `GET schedule` fetches at most [`MAX_PAGES`] pages, and one
//! fetch per process runs at a time (the others wait for it, then read what it kept).
//! Errors are answers: 502 when the scheduler node cannot be reached or its answer is
//! refused, 504 when it does not answer in time, 404 when its location is unknown.
//!
//! With `scheduler_follow_redirects: false`, `slot` and `GET schedule` answer the 307
//! redirect instead (the reference's behaviour); `next` always fetches, as the
//! reference's does. The requests this node sends say `scheduler-follow-redirects:
//! false` ([`NO_FORWARD`]): the node asked answers for the processes it schedules (or
//! whose definition it lacks) from its store, and with a redirect for the others; it
//! never asks on, so two nodes that name each other as the scheduler cannot bounce a
//! request between them. Only `ao.N.1` schedulers are read: a legacy (`ao.TN.1`)
//! scheduler is refused with a 502 that says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hb_codec::httpsig_commit;
use hb_core::device::Outcome;
use hb_core::id::b64url;
use hb_core::message::id_all;
use hb_core::{Ctx, Id, Message, Value};
use parking_lot::Mutex;
use percent_encoding::percent_decode_str;

use super::{
    Chain, Refusal, Scheduler, assignment_path, bare_id, committed_only, id_text, is_process,
    latest_location, location_path, next_chain, refuse, stored_head,
};
use crate::relay::{Answer, Limits};

/// Assignments asked for in one request.
pub const REMOTE_PAGE: i64 = 256;

/// Pages one `GET schedule` fetches at most; the rest is fetched by later requests.
pub const MAX_PAGES: usize = 8;

/// Redirects (307) from scheduler nodes followed at most.
pub const MAX_HOPS: usize = 3;

/// Largest reply read when the node sets no `scheduler_remote_max_reply_bytes`.
pub const DEFAULT_MAX_REPLY: u64 = 64 * 1024 * 1024;

/// Whose schedule a process is.
pub(super) enum Whose {
    /// This node's, or not known to be another's: answered from the local store.
    Local,
    /// Another node's: the process definition, which names the scheduler.
    Remote(Box<Message>),
}

/// The limits of requests to scheduler nodes: `http_connect_timeout`,
/// `scheduler_remote_timeout` (else relay@1.0's 30 s) and
/// `scheduler_remote_max_reply_bytes` (else [`DEFAULT_MAX_REPLY`]).
fn limits(ctx: &Ctx) -> Limits {
    Limits::read(
        &ctx.node().get(),
        None,
        &["scheduler_remote_timeout"],
        "scheduler_remote_max_reply_bytes",
        DEFAULT_MAX_REPLY,
    )
}

/// The request key (and header field) this node sends with its requests to scheduler
/// nodes: the node asked answers from its store, or with a redirect, and never asks
/// further itself, so nodes that name each other cannot bounce a request between
/// them (the redirects are followed by the asking node, at most [`MAX_HOPS`] times).
pub const NO_FORWARD: &str = "scheduler-follow-redirects";

/// Whether `slot` and `GET schedule` fetch from a remote scheduler (`true`, the
/// default) or answer the redirect: the node's `scheduler_follow_redirects`, and the
/// request's [`NO_FORWARD`].
pub(super) fn follows_redirects(ctx: &Ctx, req: &Message) -> bool {
    let node = ctx.node().get();
    let off =
        |v: Option<&Value>| v.is_some_and(|v| v.is_atom("false") || v.as_str() == Some("false"));
    !off(node.get("scheduler_follow_redirects")) && !off(req.get(NO_FORWARD))
}

/// The definition of `pid` if this node has it: the base's `process`, the base
/// itself, or the stored message (which the node's remote sources may supply, unless
/// the request said `only-if-cached`).
fn known_definition(pid: &str, base: &Message, ctx: &Ctx) -> Option<Message> {
    let is_pid = |m: &Message| id_text(m).is_ok_and(|id| id == pid);
    if let Some(p) = base.get("process").and_then(Value::as_message)
        && is_pid(p)
    {
        return Some(p.clone());
    }
    if is_process(base) && is_pid(base) {
        return Some(base.clone());
    }
    ctx.load(pid.as_bytes())
}

/// The scheduler entries a definition names (`scheduler`, else `scheduler-location`),
/// each possibly with a `?hint=`.
fn scheduler_entries(definition: &Message) -> Vec<String> {
    definition
        .get_str("scheduler")
        .or_else(|| definition.get_str("scheduler-location"))
        .unwrap_or("")
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .filter(|a| !a.is_empty())
        .collect()
}

/// The `hint` of a scheduler entry (`<address>?hint=<url>`, `&`-separated), decoded.
fn hint_of(entry: &str) -> Option<String> {
    entry
        .split(['?', '&'])
        .skip(1)
        .find_map(|kv| kv.strip_prefix("hint="))
        .map(|h| percent_decode_str(h).decode_utf8_lossy().into_owned())
        .filter(|h| !h.is_empty())
}

/// The node URL of a scheduler location (spec 04 §2.11): `scheme://authority`, the
/// path and query dropped.
///
/// # Errors
/// Not an `http://` or `https://` URL with a host (and no user information).
pub fn node_url(location: &str) -> Result<String, String> {
    let location = location.trim();
    let uri: ureq::http::Uri = location
        .parse()
        .map_err(|e| format!("`{location}` is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(format!("`{location}` is not an http:// or https:// URL")),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("`{location}` names no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{location}` carries user information"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// Where the scheduler a definition names is, as far as this node knows without
/// asking anyone: the hint of one of its entries, else the newest location record
/// held for one of its addresses. `(url, variant)`.
pub(super) fn known_target(definition: &Message, ctx: &Ctx) -> Option<(String, String)> {
    let entries = scheduler_entries(definition);
    if let Some(hint) = entries.iter().find_map(|e| hint_of(e)) {
        return Some((hint, "ao.N.1".into()));
    }
    addresses(&entries)
        .iter()
        .find_map(|address| latest_location(address, ctx))
        .map(|(_, record)| record_target(&record))
}

/// The `(url, variant)` a scheduler-location record points at.
fn record_target(record: &Message) -> (String, String) {
    let url = record
        .get_str("url")
        .or_else(|| record.get_str("location"))
        .unwrap_or("/")
        .to_owned();
    let variant = record.get_str("variant").unwrap_or("ao.N.1").to_owned();
    (url, variant)
}

/// The addresses of `entries` (hints removed).
fn addresses(entries: &[String]) -> Vec<String> {
    entries.iter().map(|e| bare_id(e).to_owned()).collect()
}

/// Whether `a` carries an RSA `httpsig@1.0` commitment by one of `schedulers` that
/// verifies, its `committer` being the address of the key that signed.
fn signed_by(a: &Message, schedulers: &[String]) -> Result<(), String> {
    let commitments = a
        .get("commitments")
        .and_then(Value::as_message)
        .ok_or("it is not signed")?;
    let mut why = String::from("no commitment by the process's scheduler");
    for (cid, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        let Some(committer) = c.get_str("committer") else {
            continue;
        };
        if !schedulers.iter().any(|s| s == committer) {
            continue;
        }
        if c.get_str("commitment-device").unwrap_or("httpsig@1.0") != "httpsig@1.0" {
            why = format!(
                "the scheduler's commitment uses {}, which is not read here",
                c.get_str("commitment-device").unwrap_or("?")
            );
            continue;
        }
        match key_address(c) {
            Some(address) if address == committer => {}
            _ => {
                why = format!("commitment {cid} names {committer}, but another key signed it");
                continue;
            }
        }
        match httpsig_commit::verify(a, cid) {
            Ok(true) => return Ok(()),
            Ok(false) => why = format!("the scheduler's signature {cid} does not verify"),
            Err(e) => why = format!("the scheduler's signature {cid} cannot be checked: {e}"),
        }
    }
    Err(why)
}

/// The address of the key (`keyid`) of an httpsig commitment's `signature-input`.
fn key_address(c: &Message) -> Option<String> {
    let input = c.get("signature-input").and_then(Value::as_bytes)?;
    let dict = hb_core::sf::parse_dictionary(input).ok()?;
    let (_, member) = dict.first()?;
    let hb_core::sf::Member::InnerList(_, params) = member else {
        return None;
    };
    let keyid = params
        .iter()
        .find(|(k, _)| k == "keyid")
        .and_then(|(_, v)| v.as_text())?;
    let modulus = httpsig_commit::decode_keyid(keyid)?;
    Some(hb_codec::wallet::address_of(&modulus))
}

/// Checks a fetched assignment for slot `slot` of `pid`, after the chain value `prev`
/// (empty before slot 0); its committed keys and its chain value when it is right.
fn check_assignment(
    a: &Value,
    pid: &str,
    slot: i64,
    prev: &[u8],
    schedulers: &[String],
) -> Result<(Message, Vec<u8>), String> {
    let a = a.as_message().ok_or("it is not a message")?;
    let kept = committed_only(a).map_err(|e| format!("its commitments are invalid: {e}"))?;
    match kept.get_str("process") {
        Some(p) if p == pid => {}
        other => return Err(format!("it is for process {other:?}, not {pid}")),
    }
    match kept.get("slot").and_then(Value::as_int) {
        Some(s) if s == slot => {}
        other => return Err(format!("its slot is {other:?}, not {slot}")),
    }
    signed_by(&kept, schedulers)?;
    let body = kept
        .get("body")
        .and_then(Value::as_message)
        .ok_or("it has no message as its body")?;
    let body_id = id_all(body)
        .map_err(|e| format!("its body has no ID: {e}"))?
        .to_human();
    let chain = kept
        .get_str("hash-chain")
        .and_then(|c| Id::from_human(c.as_bytes()))
        .ok_or("it has no 43-character hash-chain")?;
    let linked = next_chain(prev, &body_id) == chain.0
        || (!prev.is_empty() && next_chain(b64url(prev).as_bytes(), &body_id) == chain.0);
    if !linked {
        return Err(format!(
            "its hash-chain does not continue slot {}'s over its body {body_id}",
            slot.saturating_sub(1)
        ));
    }
    Ok((kept, chain.0.to_vec()))
}

/// `GET <node><path>`, following at most [`MAX_HOPS`] redirects to other nodes; the
/// decoded reply and the node that gave it.
fn get(node: &str, path: &str, limits: Limits) -> Result<(String, Answer), Refusal> {
    let mut node = node.to_owned();
    for _ in 0..=MAX_HOPS {
        let reply = get_once(&node, path, limits)?;
        if reply.code == 307
            && let Some(next) = reply.location.as_deref().map(node_url)
        {
            node = next.map_err(|why| {
                refuse(
                    502,
                    &format!("The scheduler node at {node} redirects to an unusable place: {why}"),
                )
            })?;
            continue;
        }
        return Ok((node, reply));
    }
    Err(refuse(
        502,
        &format!("The scheduler nodes redirect more than {MAX_HOPS} times, ending at {node}"),
    ))
}

fn get_once(node: &str, path: &str, limits: Limits) -> Result<Answer, Refusal> {
    let request = Message::new()
        .with("accept-codec", "httpsig@1.0")
        .with(NO_FORWARD, "false");
    crate::relay::send_to("GET", &format!("{node}{path}"), &request, limits).map_err(
        |(code, why)| match code {
            504 => refuse(
                504,
                &format!("The scheduler node did not answer in time: {why}"),
            ),
            _ => refuse(502, &format!("The scheduler node failed: {why}")),
        },
    )
}

/// A non-200 reply as a refusal.
fn unexpected(node: &str, what: &str, reply: &Answer) -> Refusal {
    let said = reply
        .msg
        .get("body")
        .and_then(Value::as_str)
        .map(|b| b.chars().take(300).collect::<String>())
        .unwrap_or_default();
    refuse(
        502,
        &format!(
            "The scheduler node at {node} answered {what} with status {}: {said}",
            reply.code
        ),
    )
}

/// The assignments of one page of a remote schedule, ordered by their `slot`, and
/// whether the scheduler says more follow.
fn fetch_page(
    node: &str,
    pid: &str,
    from: i64,
    to: i64,
    limits: Limits,
) -> Result<(String, Vec<Value>, bool), Refusal> {
    let path = format!("/~scheduler@1.0/schedule?target={pid}&from={from}&to={to}");
    let (node, reply) = get(node, &path, limits)?;
    if reply.code != 200 {
        return Err(unexpected(&node, "the schedule", &reply));
    }
    let is_schedule = reply
        .msg
        .get_str("type")
        .is_some_and(|t| t.eq_ignore_ascii_case("schedule"))
        || reply.msg.get("assignments").is_some();
    if !is_schedule {
        return Err(refuse(
            502,
            &format!("The scheduler node at {node} answered something that is not a schedule"),
        ));
    }
    let continues = reply
        .msg
        .get("continues")
        .is_some_and(|v| v.is_atom("true") || v.as_str() == Some("true"));
    let mut list: Vec<Value> = match reply.msg.get("assignments") {
        Some(Value::Message(m)) => m.iter().map(|(_, v)| v.clone()).collect(),
        Some(Value::List(l)) => l.as_ref().clone(),
        None => Vec::new(),
        Some(other) => {
            return Err(refuse(
                502,
                &format!(
                    "The scheduler node at {node} answered a schedule whose assignments are a {}",
                    other.type_name()
                ),
            ));
        }
    };
    let slot_of = |v: &Value| {
        v.as_message()
            .and_then(|m| m.get("slot"))
            .and_then(Value::as_int)
            .unwrap_or(i64::MAX)
    };
    list.sort_by_key(slot_of);
    Ok((node, list, continues))
}

impl Scheduler {
    /// Whose schedule `pid` is: this node's when it serves it, or when its definition
    /// is unknown here or names this node (or no scheduler); another node's when the
    /// definition names another scheduler.
    pub(super) fn whose(&self, pid: &str, base: &Message, ctx: &Ctx) -> Whose {
        if self.servers.lock().contains_key(pid) {
            return Whose::Local;
        }
        match known_definition(pid, base, ctx) {
            Some(def) if matches!(self.schedules(&def), Ok(false)) => Whose::Remote(Box::new(def)),
            _ => Whose::Local,
        }
    }

    /// The URL (and variant) of the scheduler a definition names: its hint, else its
    /// newest location record here, else the gateway's (spec 04 §2.11).
    fn locate(&self, definition: &Message, ctx: &Ctx) -> Result<(String, String), Refusal> {
        if let Some(target) = known_target(definition, ctx) {
            return Ok(target);
        }
        let addresses = addresses(&scheduler_entries(definition));
        let mut failure = None;
        if let Some(gateway) = self.gateway_source(ctx) {
            for address in &addresses {
                match ctx.blocking(|| gateway.scheduler_location(address)) {
                    Ok(Some(record)) => {
                        let nonce = record.get("nonce").and_then(Value::as_int).unwrap_or(0);
                        if let Err(e) = ctx
                            .cache()
                            .store_message(&record, &[location_path(address, nonce)])
                        {
                            tracing::warn!(%address, error = %e, "cannot keep a scheduler location");
                        }
                        return Ok(record_target(&record));
                    }
                    Ok(None) => {}
                    Err(e) => failure = Some(e.to_string()),
                }
            }
        }
        let named = addresses.join(", ");
        Err(match failure {
            Some(why) => refuse(
                502,
                &format!("The location of scheduler {named} cannot be looked up: {why}"),
            ),
            None => refuse(
                404,
                &format!(
                    "The process is scheduled by {named}, whose location this node does not know."
                ),
            ),
        })
    }

    /// The node URL of the scheduler a definition names, for `ao.N.1` schedulers.
    fn scheduler_node(&self, definition: &Message, ctx: &Ctx) -> Result<String, Refusal> {
        let (url, variant) = self.locate(definition, ctx)?;
        if variant != "ao.N.1" {
            return Err(refuse(
                502,
                &format!(
                    "The process's scheduler at {url} is a {variant} scheduler, whose schedules this node does not read."
                ),
            ));
        }
        node_url(&url).map_err(|why| {
            refuse(
                502,
                &format!("The process's scheduler location is unusable: {why}"),
            )
        })
    }

    /// `slot` of a process another node schedules (spec 04 §2.9, remote): its current
    /// slot as that node answers it.
    pub(super) fn remote_slot(&self, pid: &str, definition: &Message, ctx: &Ctx) -> Outcome {
        let limits = limits(ctx);
        let asked = self.scheduler_node(definition, ctx).and_then(|node| {
            let (node, reply) = get(&node, &format!("/~scheduler@1.0/slot?target={pid}"), limits)?;
            if reply.code != 200 {
                return Err(unexpected(&node, "the current slot", &reply));
            }
            Ok((node, reply.msg))
        });
        let (node, answer) = match asked {
            Ok(a) => a,
            Err(refusal) => return *refusal,
        };
        let Some(current) = answer.get("current").and_then(Value::as_int) else {
            return Outcome::error_status(
                502,
                &format!("The scheduler node at {node} answered no current slot for {pid}"),
            );
        };
        let int = |k: &str| answer.get(k).and_then(Value::as_int).unwrap_or(0);
        let text = |k: &str| answer.get_str(k).unwrap_or("").to_owned();
        Outcome::ok(
            Message::new()
                .with("process", pid)
                .with("current", current)
                .with("timestamp", int("timestamp"))
                .with("block-height", int("block-height"))
                .with("block-hash", text("block-hash").as_str())
                .with("cache-control", "no-store")
                .with("wallet-address", text("wallet-address").as_str()),
        )
    }

    /// The lock that lets one fetch of `pid`'s schedule run at a time.
    fn fetch_lock(&self, pid: &str) -> Arc<Mutex<()>> {
        let mut locks = self.fetching.lock();
        // Bounded: locks nobody holds are dropped.
        if locks.len() > 256 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(pid.to_owned()).or_default().clone()
    }

    /// Fetches, verifies and keeps the assignments of `pid` (scheduled by the node the
    /// definition names) after the highest slot held here, until slot `want` is held,
    /// the scheduler has no more, or [`MAX_PAGES`] pages were read. Whether more may
    /// follow.
    pub(super) fn sync(
        &self,
        pid: &str,
        definition: &Message,
        want: i64,
        max_pages: usize,
        ctx: &Ctx,
    ) -> Result<bool, Refusal> {
        let limits = limits(ctx);
        let lock = self.fetch_lock(pid);
        let wait = limits.connect + limits.total + Duration::from_secs(1);
        let Some(_held) = lock.try_lock_for(wait) else {
            return Err(refuse(
                503,
                &format!("Another request is fetching the schedule of {pid}; try again."),
            ));
        };
        let mut head: Chain = stored_head(pid, ctx)?;
        if head.slot >= want {
            return Ok(false);
        }
        let schedulers = addresses(&scheduler_entries(definition));
        let mut node = self.scheduler_node(definition, ctx)?;
        let mut more = false;
        for _ in 0..max_pages {
            if head.slot >= want {
                break;
            }
            ctx.check_deadline()
                .map_err(|e| refuse(504, &e.to_string()))?;
            let from = head.slot.saturating_add(1);
            let to = from.saturating_add(REMOTE_PAGE - 1);
            let (answered_by, list, continues) = fetch_page(&node, pid, from, to, limits)?;
            node = answered_by;
            let mut batch = Vec::new();
            let mut refused = None;
            for a in &list {
                let expected = head.slot.saturating_add(1);
                let slot = a
                    .as_message()
                    .and_then(|m| m.get("slot"))
                    .and_then(Value::as_int);
                if slot.is_some_and(|s| s < expected) {
                    continue;
                }
                if expected > to {
                    break;
                }
                match check_assignment(a, pid, expected, &head.chain, &schedulers) {
                    Ok((kept, chain)) => {
                        batch.push((kept, vec![assignment_path(pid, expected)]));
                        head = Chain {
                            slot: expected,
                            chain,
                            generation: head.generation,
                        };
                    }
                    Err(why) => {
                        refused = Some(format!(
                            "The scheduler node at {node} sent slot {expected} of {pid}, which is refused: {why}"
                        ));
                        break;
                    }
                }
            }
            let got = batch.len();
            if !batch.is_empty() {
                ctx.cache().store_messages(&batch).map_err(|e| {
                    refuse(500, &format!("Cannot keep the fetched assignments: {e}"))
                })?;
                tracing::debug!(process = %pid, %node, from, count = got, "fetched assignments");
            }
            if let Some(why) = refused {
                tracing::warn!(process = %pid, %node, reason = %why, "remote assignment refused");
                return Err(refuse(502, &why));
            }
            more = continues || i64::try_from(got).is_ok_and(|g| g >= REMOTE_PAGE);
            if !more {
                break;
            }
        }
        Ok(more)
    }
}

/// Per-process fetch locks.
pub(super) type FetchLocks = Mutex<HashMap<String, Arc<Mutex<()>>>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn node_urls_and_hints() {
        assert_eq!(
            node_url("http://127.0.0.1:8734/some/path?x=1").unwrap(),
            "http://127.0.0.1:8734"
        );
        assert_eq!(
            node_url("https://su.example").unwrap(),
            "https://su.example"
        );
        assert!(node_url("ftp://x").is_err());
        assert!(node_url("http://user@host/").is_err());
        assert!(node_url("/").is_err());
        assert!(node_url("").is_err());
        assert_eq!(
            hint_of("addr?hint=http%3A%2F%2Fnode%3A1234&x=1").as_deref(),
            Some("http://node:1234")
        );
        assert_eq!(hint_of("addr").as_deref(), None);
        assert_eq!(hint_of("addr?hint=%zz%4").as_deref(), Some("%zz%4"));
    }

    #[test]
    fn fetched_assignments_are_checked() {
        let wallet = hb_codec::Wallet::from_jwk_json(include_bytes!(
            "../../../../tests/fixtures/key-2.json"
        ))
        .unwrap();
        let other = hb_codec::Wallet::from_jwk_json(include_bytes!(
            "../../../../tests/fixtures/key-1.json"
        ))
        .unwrap();
        let pid = "P".repeat(43);
        let body = Message::new().with("type", "Message").with("n", 1i64);
        let body_id = id_all(&body).unwrap().to_human();
        let prev = next_chain(b"", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let assignment = |slot: i64, chain: &[u8], signer: &hb_codec::Wallet| {
            let a = Message::new()
                .with("process", pid.as_str())
                .with("slot", slot)
                .with("hash-chain", b64url(chain).as_str())
                .with("body", body.clone());
            Value::Message(httpsig_commit::commit(&a, signer).unwrap())
        };
        let schedulers = vec![wallet.address()];
        let good = next_chain(&prev, &body_id);
        let (kept, chain) =
            check_assignment(&assignment(1, &good, &wallet), &pid, 1, &prev, &schedulers).unwrap();
        assert_eq!(chain, good);
        assert_eq!(kept.get("slot"), Some(&Value::Integer(1)));
        // The reference's restart quirk links from the previous value's text.
        let quirk = next_chain(b64url(&prev).as_bytes(), &body_id);
        assert!(
            check_assignment(&assignment(1, &quirk, &wallet), &pid, 1, &prev, &schedulers).is_ok()
        );
        // Wrong slot, wrong chain, wrong signer, another process, tampered.
        let err =
            |v: &Value, slot: i64| check_assignment(v, &pid, slot, &prev, &schedulers).unwrap_err();
        assert!(err(&assignment(1, &good, &wallet), 2).contains("slot"));
        assert!(err(&assignment(1, &prev, &wallet), 1).contains("hash-chain"));
        assert!(err(&assignment(1, &good, &other), 1).contains("scheduler"));
        let Value::Message(signed) = assignment(1, &good, &wallet) else {
            unreachable!()
        };
        let tampered = signed
            .clone()
            .with("slot", 1i64)
            .with("body", Message::new());
        assert!(!err(&Value::Message(tampered), 1).is_empty());
        let elsewhere = check_assignment(
            &Value::Message(signed),
            &"Q".repeat(43),
            1,
            &prev,
            &schedulers,
        )
        .unwrap_err();
        assert!(elsewhere.contains("process"), "{elsewhere}");
        assert!(err(&Value::text("x"), 1).contains("not a message"));
        // A commitment that names the scheduler but was made with another key.
        let Value::Message(forged) = assignment(1, &good, &other) else {
            unreachable!()
        };
        let mut commitments = forged
            .get("commitments")
            .and_then(Value::as_message)
            .unwrap()
            .clone();
        let keys: Vec<String> = commitments.keys().map(|k| k.to_string()).collect();
        for k in keys {
            if let Some(Value::Message(c)) = commitments.get(&k).cloned()
                && c.get("committer").is_some()
            {
                commitments.insert(
                    &k,
                    Value::Message(c.with("committer", wallet.address().as_str())),
                );
            }
        }
        let forged = forged.with("commitments", commitments);
        let why = err(&Value::Message(forged), 1);
        assert!(
            why.contains("another key") || why.contains("invalid"),
            "{why}"
        );
    }
}
