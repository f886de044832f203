//! `relay@1.0`: sends a message to another node or HTTP endpoint and answers with the
//! reply (spec 05 §7.6, §3).
//!
//! * `call` sends the *target* — the base, or `request[request.target]` (else
//!   `request.body`) when the request names a `target` — and answers the peer's reply
//!   as a message (a signed reply keeps the peer's signature, so a client sees who
//!   answered). Path, method and body are the first found of the target's own `path`,
//!   `method`, `body`, then `relay-path`, `relay-method`, `relay-body` (request, then
//!   base), then the request's and the base's `method`/`body` (§7.6).
//! * `cast` does the same in the background and answers `"OK"` at once.
//! * `request` is a `request` hook handler that relays every request (§7.6).
//!
//! Where it goes:
//!
//! 1. a path that is a URL (`http://…`, `https://…`) is the request URL — the seed
//!    tutorial's `/~relay@1.0/call?method=GET&path=https://…` too;
//! 2. else a peer named by `relay-peer` or `peer` (or `node`, when it is a URL) gets the
//!    path appended;
//! 3. else `router@1.0` routes the message over the node's `routes` (§3.3): one URL, or
//!    several nodes asked as a multirequest (`responses`, `accept-status`, `parallel`,
//!    from the route or the message's `multirequest-<opt>` keys).
//!
//! # Not an open proxy
//!
//! The targets of 1 and 2 come from whoever sends the request, so they are refused
//! (403) unless their host is in the node option `relay_allow_hosts`: a list, or a text
//! of entries separated by commas or spaces, each `host`, `host:port`, `*.domain` or
//! `*` (anything; an open proxy, on purpose). It is empty by default: only the routes
//! the operator configured are relayed to. URLs that carry user information
//! (`http://a@b/`) are refused everywhere, redirects are not followed (a 3xx reply is
//! answered as it is), and the path a route's `prefix` is joined to always starts with
//! `/`, so a request cannot move a route to another host.
//!
//! # Bounded
//!
//! Every request has a connect timeout (`http_connect_timeout`, 5000 ms) and a total
//! one (`relay_timeout`, else `http_request_send_timeout`, 30000 ms — below the HTTP
//! server's 60 s, so the relay's own error arrives first); a route node's `opts` may set
//! both. Replies larger than `relay_max_reply_bytes` (16 MiB) are refused, at most
//! [`MAX_NODES`] nodes are asked by one multirequest, and at most [`MAX_CASTS`] casts
//! run at once. Errors are answers: 400 for a request that cannot be relayed, 403 for a
//! refused host, 404 when no route matches, 502 when the peer cannot be reached (or its
//! reply is too large or forged), 504 when it does not answer in time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hb_codec::Wallet;
use hb_codec::ans104::{self, DataItem};
use hb_codec::httpsig_commit::{self, ReceivedError, from_http_verified};
use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::httpsig::{self, HttpMessage};
use hb_core::message::{MessageDevice, committers_of};
use hb_core::structured::from_tabm;
use hb_core::{Ctx, Message, ResolveError, Value};
use hb_store::http::BodyError;

use crate::router::{self, Rng, RouteError, answer, answer_with, is_url, texts};

/// The device's name.
pub const NAME: &str = "relay@1.0";

/// Connect timeout when the node sets none (`http_connect_timeout`), in ms.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Total time of one request when the node sets none (`relay_timeout`), in ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Largest reply read when the node sets no `relay_max_reply_bytes`.
pub const DEFAULT_MAX_REPLY: u64 = 16 * 1024 * 1024;

/// Longest timeout a setting may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// How many casts may run at once; more are refused (503).
pub const MAX_CASTS: usize = 64;

/// How many nodes one multirequest asks at most.
pub const MAX_NODES: usize = 32;

/// The key a URL split by the HyperPATH parser is gathered under (see
/// [`Relay::default_key`]).
const SPLIT_KEY: &str = "relay-split-url";

/// Keys that instruct the relay and are not sent (of a target nobody signed).
const CONTROL_KEYS: [&str; 18] = [
    "relay-path",
    "relay-method",
    "relay-body",
    "relay-peer",
    "peer",
    "target",
    "requires-sign",
    "http-client",
    SPLIT_KEY,
    "content-length",
    "content-digest",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "accept-encoding",
];

/// Header fields of a reply that frame its connection, not the message.
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Casts under way.
static CASTS: AtomicUsize = AtomicUsize::new(0);

/// The `relay@1.0` device; it signs targets that ask for it (`requires-sign`) with
/// the node's wallet.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    /// The node's wallet.
    pub wallet: Option<Arc<Wallet>>,
}

impl Device for Relay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::Function,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &["call", "cast", "request"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call {
            Call::Function("call") => Ok(self.relay_call(base, req, ctx, None)),
            Call::Function("cast") => Ok(self.cast(base, req, ctx)),
            Call::Function("request") => Ok(request_hook(req)),
            Call::Default(key) => self.default_key(key, base, req, ctx),
            other => Err(ResolveError::call(NAME, other.key(), "no such function")),
        }
    }
}

/// The `request` hook handler (spec 05 §7.6): relay the whole request.
fn request_hook(req: &Message) -> Outcome {
    let raw = req
        .get("request")
        .cloned()
        .unwrap_or_else(|| Value::Message(Message::new()));
    Outcome::ok(Message::new().with("body", router::relay_list(&raw)))
}

impl Relay {
    /// `call`; `url` is the request URL when the request's path is one.
    fn relay_call(&self, base: &Message, req: &Message, ctx: &Ctx, url: Option<&str>) -> Outcome {
        let prepared = match self.prepare(base, req, ctx, url) {
            Ok(p) => p,
            Err(refused) => return refused,
        };
        let unwrap = !ctx.opts.force_message;
        let (status, value) = ctx.blocking(|| prepared.dispatch(unwrap));
        answer_with(ctx, status, value)
    }

    /// `cast`: checked and routed now, sent in the background.
    fn cast(&self, base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
        let prepared = match self.prepare(base, req, ctx, None) {
            Ok(p) => p,
            Err(refused) => return refused,
        };
        let Some(slot) = CastSlot::take() else {
            return Outcome::error_status(
                503,
                &format!("relay@1.0 already has {MAX_CASTS} casts under way; try again later"),
            );
        };
        let spawned = std::thread::Builder::new()
            .name("relay-cast".into())
            .spawn(move || {
                let _slot = slot;
                let (status, value) = prepared.dispatch(true);
                if !matches!(status, Status::Ok | Status::Created) {
                    tracing::warn!(path = %prepared.path, result = ?value, "relay@1.0 cast failed");
                }
            });
        if let Err(e) = spawned {
            return Outcome::error_status(503, &format!("relay@1.0 cannot start the cast: {e}"));
        }
        answer(ctx, Value::text("OK"))
    }

    /// Keys that are not functions. The seed tutorial's
    /// `/~relay@1.0/call?method=GET&path=https://…` gives every message of the path the
    /// URL as its `path`: the base is then resolved along the URL's pieces (`https:`,
    /// the host, …), which are gathered and otherwise ignored, and the request whose
    /// path is the whole URL is relayed there. Other keys are `message@1.0`'s.
    fn default_key(&self, key: &str, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let full = req.get_str("path").unwrap_or("");
        if is_url(full) {
            return Ok(self.relay_call(base, req, ctx, Some(full)));
        }
        if (key == "http:" || key == "https:") && base.get(SPLIT_KEY).is_none() {
            return Ok(Outcome::ok(
                base.clone().with(SPLIT_KEY, format!("{key}/").as_str()),
            ));
        }
        if let Some(so_far) = base.get_str(SPLIT_KEY) {
            let joined = format!("{so_far}/{key}");
            return Ok(Outcome::ok(base.clone().with(SPLIT_KEY, joined.as_str())));
        }
        // Anything else is the message's own: `set` (the engine sets a base's keys
        // through its device), `keys`, a key of the base…
        let own = MessageDevice
            .functions()
            .iter()
            .find(|f| f.len() == key.len() && f.replace('_', "-") == key.replace('_', "-"));
        match own {
            Some(f) => MessageDevice.call(Call::Function(f), base, req, ctx),
            None => MessageDevice.call(Call::Default(key), base, req, ctx),
        }
    }

    /// Everything a relay needs before it sends: the message, its method and path,
    /// where it goes. `Err` is the answer for a request that cannot be relayed.
    fn prepare(
        &self,
        base: &Message,
        req: &Message,
        ctx: &Ctx,
        url: Option<&str>,
    ) -> Result<Prepared, Outcome> {
        let (target, target_from_req) = find_target(base, req)?;
        let node = ctx.node().get();
        let limits = Limits::of(&node, None);
        let path = match url {
            Some(u) => u.to_owned(),
            None => first_text(&[
                (&target, "path"),
                (req, "relay-path"),
                (base, "relay-path"),
                (base, "path"),
            ])
            .ok_or_else(|| {
                Outcome::error_status(
                    400,
                    "relay@1.0 needs a path to relay to: `relay-path`, or the target's `path`",
                )
            })?
            .to_owned(),
        };
        let method = first_text(&[
            (&target, "method"),
            (req, "relay-method"),
            (base, "relay-method"),
            (req, "method"),
            (base, "method"),
        ])
        .unwrap_or("GET")
        .to_ascii_uppercase();
        if !["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"].contains(&method.as_str())
        {
            return Err(Outcome::error_status(
                400,
                &format!("relay@1.0 does not send `{method}` requests"),
            ));
        }
        let body = body_of(base, req, &target, target_from_req);
        let multi_msg = target.clone();
        let mut msg = outgoing(&target, body);
        if is_true(target.get("requires-sign")) {
            let Some(wallet) = &self.wallet else {
                return Err(Outcome::error_status(
                    503,
                    "the target asks to be signed (`requires-sign`), but this node has no wallet",
                ));
            };
            msg = ctx
                .blocking(|| httpsig_commit::commit(&msg, wallet))
                .map_err(|e| {
                    Outcome::error_status(500, &format!("relay@1.0 cannot sign the target: {e}"))
                })?;
        }
        let allow = node.get("relay_allow_hosts").map(texts).unwrap_or_default();
        let peer = first_text(&[
            (req, "relay-peer"),
            (base, "relay-peer"),
            (req, "peer"),
            (base, "peer"),
        ])
        .or_else(|| first_text(&[(req, "node"), (base, "node")]).filter(|n| is_url(n)));
        let dest = if is_url(&path) {
            Dest::One(requested(&path, &allow, limits)?)
        } else if let Some(peer) = peer {
            let peer = peer.trim_end_matches('/');
            if !is_url(peer) {
                return Err(Outcome::error_status(
                    400,
                    &format!("the peer `{peer}` is not an http:// or https:// URL"),
                ));
            }
            requested(peer, &allow, limits)?;
            let url = format!("{peer}{}", normalise_path(&path));
            Dest::One(requested(&url, &allow, limits)?)
        } else {
            routed(&msg, &multi_msg, &normalise_path(&path), ctx, limits)?
        };
        Ok(Prepared {
            method,
            path,
            msg,
            dest,
        })
    }
}

/// One cast under way; dropping it counts it out.
struct CastSlot;

impl CastSlot {
    fn take() -> Option<CastSlot> {
        if CASTS.fetch_add(1, Ordering::SeqCst) >= MAX_CASTS {
            CASTS.fetch_sub(1, Ordering::SeqCst);
            None
        } else {
            Some(CastSlot)
        }
    }
}

impl Drop for CastSlot {
    fn drop(&mut self) {
        CASTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The message to send (spec 05 §7.6): the base, or `request[request.target]` (else
/// `request.body`) when the request names a `target`; whether it came from the request.
fn find_target(base: &Message, req: &Message) -> Result<(Message, bool), Outcome> {
    let Some(key) = req.get_str("target") else {
        return Ok((base.clone(), false));
    };
    [req.get(key), req.get("body")]
        .into_iter()
        .flatten()
        .find_map(Value::as_message)
        .map(|m| (m.clone(), true))
        .ok_or_else(|| {
            Outcome::error_status(
                400,
                &format!("`target` names `{key}`, which holds no message to relay"),
            )
        })
}

/// The first non-empty text among `(message, key)` places.
fn first_text<'a>(places: &[(&'a Message, &str)]) -> Option<&'a str> {
    places
        .iter()
        .find_map(|(m, k)| m.get_str(k).filter(|s| !s.is_empty()))
}

/// The body to send (spec 05 §7.6). When the target is a message of the request, the
/// request's `body` is not a candidate: it is (or holds) the target itself.
fn body_of(
    base: &Message,
    req: &Message,
    target: &Message,
    target_from_req: bool,
) -> Option<Value> {
    let mut places: Vec<(&Message, &str)> =
        vec![(target, "body"), (req, "relay-body"), (base, "relay-body")];
    if !target_from_req {
        places.push((req, "body"));
        places.push((base, "body"));
    }
    places.iter().find_map(|(m, k)| m.get(k).cloned())
}

fn is_true(v: Option<&Value>) -> bool {
    v.is_some_and(|v| v.is_atom("true") || v.as_str() == Some("true"))
}

/// The message as it is sent: without `path` and `host` (they are the request line's),
/// and — unless someone signed it, which any change would break — without the keys
/// that instruct the relay, the connection's framing fields, its `method` (the
/// request line's) and a `device` that is this device; `body` is the chosen body.
fn outgoing(target: &Message, body: Option<Value>) -> Message {
    let signed = !committers_of(target).is_empty();
    let mut msg = target.without_private();
    msg.remove("path");
    msg.remove("host");
    if signed {
        return msg;
    }
    for k in CONTROL_KEYS {
        msg.remove(k);
    }
    msg.remove("method");
    if msg.get_str("node").is_some_and(is_url) {
        msg.remove("node");
    }
    if msg
        .get_str("device")
        .is_some_and(|d| d.eq_ignore_ascii_case(NAME))
    {
        msg.remove("device");
    }
    match body {
        Some(b) => msg.insert("body", b),
        None => {
            msg.remove("body");
        }
    }
    msg
}

/// A path as it is sent (spec 05 §3.1): a leading `/`, no empty segments before the
/// query.
fn normalise_path(path: &str) -> String {
    let (p, q) = match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    };
    let mut out = String::with_capacity(path.len() + 1);
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    out.push_str(q);
    out
}

/// Time and size limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) connect: Duration,
    pub(crate) total: Duration,
    pub(crate) max_reply: u64,
}

impl Limits {
    /// The node's limits, overridden by a route node's `opts`.
    fn of(node: &Message, opts: Option<&Message>) -> Limits {
        Limits::read(
            node,
            opts,
            &["relay_timeout", "http_request_send_timeout"],
            "relay_max_reply_bytes",
            DEFAULT_MAX_REPLY,
        )
    }

    /// Limits read from `opts`, else `node`: `http_connect_timeout`, the first of
    /// `total_keys` set, and `max_reply_key` (else `default_max_reply`), in ms and
    /// bytes, each key also in its dashed form; timeouts at most [`MAX_TIMEOUT`].
    pub(crate) fn read(
        node: &Message,
        opts: Option<&Message>,
        total_keys: &[&str],
        max_reply_key: &str,
        default_max_reply: u64,
    ) -> Limits {
        let get = |keys: &[&str]| -> Option<u64> {
            keys.iter().find_map(|k| {
                let dashed = k.replace('_', "-");
                [opts, Some(node)]
                    .into_iter()
                    .flatten()
                    .find_map(|m| m.get(k).or_else(|| m.get(&dashed)).and_then(Value::as_uint))
            })
        };
        let ms = |v: u64| Duration::from_millis(v.max(1)).min(MAX_TIMEOUT);
        Limits {
            connect: ms(get(&["http_connect_timeout"]).unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS)),
            total: ms(get(total_keys).unwrap_or(DEFAULT_TIMEOUT_MS)),
            max_reply: get(&[max_reply_key]).unwrap_or(default_max_reply),
        }
    }
}

/// One URL to send to.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    /// The URL, escaped for sending.
    url: String,
    limits: Limits,
}

/// Where a relay goes.
#[derive(Debug)]
enum Dest {
    One(Target),
    Many { nodes: Vec<Target>, multi: Multi },
}

/// The multirequest options (spec 05 §3.3).
#[derive(Debug, Clone, PartialEq)]
struct Multi {
    responses: usize,
    accept: Accept,
    parallel: bool,
}

/// Which reply statuses a multirequest counts.
#[derive(Debug, Clone, PartialEq)]
enum Accept {
    All,
    Codes(Vec<i64>),
}

impl Accept {
    fn of(v: &Value) -> Accept {
        let codes = match v {
            Value::Integer(i) => vec![*i],
            Value::List(l) => l.iter().filter_map(Value::as_int).collect(),
            other => {
                let text = other.as_str().unwrap_or("All");
                if text.trim().eq_ignore_ascii_case("all") {
                    return Accept::All;
                }
                text.split(',')
                    .filter_map(|c| c.trim().parse().ok())
                    .collect()
            }
        };
        Accept::Codes(codes)
    }

    fn admits(&self, code: u16) -> bool {
        match self {
            Accept::All => true,
            Accept::Codes(c) => c.contains(&i64::from(code)),
        }
    }
}

/// A URL the request chose: it must be an http(s) URL whose host is allowed.
fn requested(url: &str, allow: &[String], limits: Limits) -> Result<Target, Outcome> {
    let (encoded, host, port) = parse_url(url).map_err(|why| Outcome::error_status(400, &why))?;
    if !host_allowed(&host, port, allow) {
        return Err(Outcome::error_status(
            403,
            &format!(
                "relay@1.0 does not relay to `{host}:{port}`: it is not in this node's \
                 `relay_allow_hosts` (the node relays to its own `routes`, and to the \
                 hosts that option lists)"
            ),
        ));
    }
    Ok(Target {
        url: encoded,
        limits,
    })
}

/// A URL a route gave (configured by the operator, so trusted), checked for shape.
fn route_target(uri: &str, limits: Limits) -> Result<Target, Outcome> {
    let (encoded, _, _) = parse_url(uri).map_err(|why| {
        Outcome::error_status(500, &format!("the node's route gave a bad URL: {why}"))
    })?;
    Ok(Target {
        url: encoded,
        limits,
    })
}

/// Sends `msg` with `method` to `url` with the node's time and size limits, and
/// answers the peer's status and decoded reply (its signature checked). For URLs the
/// node's operator configured (such as `router_peer_location`): no allow-list check.
///
/// # Errors
/// The URL is not an http(s) URL, the peer cannot be reached, or its reply does not
/// decode: the status to answer with and why.
pub(crate) fn send_direct(
    method: &str,
    url: &str,
    msg: &Message,
    node: &Message,
) -> Result<(u16, Message), (u16, String)> {
    send_to(method, url, msg, Limits::of(node, None)).map(|a| (a.code, a.msg))
}

/// Sends `msg` (its keys as the request's fields) with `method` to `url` within
/// `limits`, following no redirect: the peer's decoded reply (its signature checked).
/// No allow-list check: for URLs the node itself chose.
///
/// # Errors
/// The URL is not an http(s) URL (400), the peer cannot be reached or its reply does
/// not decode (502), or no reply came in time (504): the status and why.
pub(crate) fn send_to(
    method: &str,
    url: &str,
    msg: &Message,
    limits: Limits,
) -> Result<Answer, (u16, String)> {
    let (encoded, _, _) = parse_url(url).map_err(|why| (400, format!("`{url}`: {why}")))?;
    exchange(
        method,
        msg,
        &Target {
            url: encoded,
            limits,
        },
    )
}

/// A routed node (`uri` plus `opts`) as a target.
fn node_target(node: &Value, node_msg: &Message, base: Limits) -> Result<Target, Outcome> {
    match node {
        Value::Binary(_) => route_target(node.as_str().unwrap_or(""), base),
        Value::Message(m) => {
            let uri = m.get_str("uri").ok_or_else(|| {
                Outcome::error_status(
                    500,
                    "a node of the matching route has no URL (none of `prefix`, `suffix`, `match`/`with`)",
                )
            })?;
            let limits = match m.get("opts").and_then(Value::as_message) {
                Some(opts) => Limits::of(node_msg, Some(opts)),
                None => base,
            };
            route_target(uri, limits)
        }
        other => Err(Outcome::error_status(
            500,
            &format!("a route node is a {}, not a URL", other.type_name()),
        )),
    }
}

/// Where the node's routes send `msg` at `path` (spec 05 §3.3).
fn routed(
    msg: &Message,
    multi_msg: &Message,
    path: &str,
    ctx: &Ctx,
    limits: Limits,
) -> Result<Dest, Outcome> {
    let routes = router::node_routes(ctx).map_err(|e| Outcome::error_status(500, &e))?;
    let probe = msg.clone().with("path", path);
    let node = ctx.node().get();
    match router::route(&probe, &routes, &mut Rng::from_entropy()) {
        Err(RouteError::NoMatches) => Err(Outcome::error_status(
            404,
            &format!(
                "relay@1.0 has nowhere to send `{path}`: no route of this node matches it, \
                 and the request names no `relay-peer` (or http:// URL)"
            ),
        )),
        Err(RouteError::Invalid(why)) => Err(Outcome::error_status(
            500,
            &format!("the node's route for `{path}` cannot be used: {why}"),
        )),
        Ok(v @ Value::Binary(_)) => Ok(Dest::One(node_target(&v, &node, limits)?)),
        Ok(Value::Message(m)) if m.contains("uri") => {
            Ok(Dest::One(node_target(&Value::Message(m), &node, limits)?))
        }
        Ok(Value::Message(route)) => {
            let nodes = match route.get("nodes") {
                Some(Value::List(l)) => l.as_ref().clone(),
                _ => vec![],
            };
            if nodes.is_empty() {
                return Err(Outcome::error_status(
                    500,
                    &format!("the node's route for `{path}` has no nodes"),
                ));
            }
            let nodes = nodes
                .iter()
                .take(MAX_NODES)
                .map(|n| node_target(n, &node, limits))
                .collect::<Result<Vec<_>, _>>()?;
            let opt = |k: &str| {
                multi_msg
                    .get(&format!("multirequest-{k}"))
                    .or_else(|| route.get(k))
            };
            let multi = Multi {
                responses: opt("responses")
                    .and_then(Value::as_int)
                    .map_or(1, |n| usize::try_from(n.max(1)).unwrap_or(1)),
                accept: opt("accept-status").map_or(Accept::All, Accept::of),
                parallel: is_true(opt("parallel")),
            };
            Ok(Dest::Many { nodes, multi })
        }
        Ok(other) => Err(Outcome::error_status(
            500,
            &format!(
                "the node's route for `{path}` gave a {}, not a URL",
                other.type_name()
            ),
        )),
    }
}

/// `url` escaped for sending, its host (lower case, IPv6 without brackets) and port.
fn parse_url(url: &str) -> Result<(String, String, u16), String> {
    let encoded = encode_url(url);
    let uri: ureq::http::Uri = encoded
        .parse()
        .map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` names no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{url}` carries user information (`…@`), which relay@1.0 does not send"
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((encoded, host, port))
}

/// `url` with the bytes a request target cannot carry (spaces, quotes, `#`, braces,
/// non-ASCII, …) percent-escaped after its authority.
fn encode_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let (head, rest) = url.split_at(path_start);
    let mut out = String::with_capacity(url.len() + 8);
    out.push_str(head);
    for b in rest.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `host:port` is allowed by the entries of `relay_allow_hosts`.
fn host_allowed(host: &str, port: u16, entries: &[String]) -> bool {
    entries.iter().any(|entry| {
        let e = entry.trim().to_ascii_lowercase();
        let e = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .unwrap_or(&e);
        let e = e.split('/').next().unwrap_or("").trim_end_matches('.');
        if e == "*" {
            return true;
        }
        let (h, p) = split_host_port(e);
        let host_ok = match h.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => h == host,
        };
        host_ok && p.is_none_or(|p| p == port)
    })
}

/// `host[:port]` of an allow-list entry (IPv6 hosts in brackets, or bare without a port).
fn split_host_port(e: &str) -> (&str, Option<u16>) {
    if let Some(rest) = e.strip_prefix('[') {
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (h, port);
    }
    match e.matches(':').count() {
        1 => {
            let (h, p) = e.split_once(':').unwrap_or((e, ""));
            // A port that does not parse matches no port at all.
            (h, Some(p.parse().unwrap_or(0)))
        }
        _ => (e, None),
    }
}

/// A relay ready to send.
#[derive(Debug)]
struct Prepared {
    method: String,
    path: String,
    msg: Message,
    dest: Dest,
}

/// A peer's reply, decoded.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) code: u16,
    pub(crate) msg: Message,
    /// The reply's `ao-result` field.
    ao_result: Option<String>,
    /// The reply's `location` field (of a redirect).
    pub(crate) location: Option<String>,
}

/// Why there is no reply: the status to answer with and the reason.
type Failed = (u16, String);

impl Prepared {
    /// Sends, and answers as `call` does. `unwrap` returns only the value an
    /// `ao-result` reply names (spec 05 §3.2), for internal callers.
    fn dispatch(&self, unwrap: bool) -> (Status, Value) {
        match &self.dest {
            Dest::One(t) => match exchange(&self.method, &self.msg, t) {
                Ok(a) => as_result(a, unwrap),
                Err((code, why)) => failed(code, &why),
            },
            Dest::Many { nodes, multi } => {
                let (answers, errors) = if multi.parallel {
                    parallel(&self.method, &self.msg, nodes, multi)
                } else {
                    serial(&self.method, &self.msg, nodes, multi)
                };
                match answers.len() {
                    0 => failed(
                        502,
                        &format!(
                            "no_viable_responses: none of the {} nodes of the route for `{}` gave an admissible reply{}",
                            nodes.len(),
                            self.path,
                            if errors.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", errors.join("; "))
                            }
                        ),
                    ),
                    1 if multi.responses == 1 => {
                        let mut answers = answers;
                        match answers.pop() {
                            Some(a) => as_result(a, unwrap),
                            None => failed(502, "no reply"),
                        }
                    }
                    _ => (
                        Status::Ok,
                        Value::list(answers.into_iter().map(|a| Value::Message(a.msg)).collect()),
                    ),
                }
            }
        }
    }
}

/// A failure as the device answers it.
fn failed(code: u16, why: &str) -> (Status, Value) {
    let status = if code >= 500 {
        Status::Failure
    } else {
        Status::Error
    };
    (
        status,
        Value::Message(
            Message::new()
                .with("status", i64::from(code))
                .with("body", why),
        ),
    )
}

/// A reply as the device answers it: the status atom of its code (spec 05 §3.2), and
/// the message (or the value its `ao-result` names, when `unwrap`).
fn as_result(a: Answer, unwrap: bool) -> (Status, Value) {
    let status = match a.code {
        201 => Status::Created,
        c if c < 400 => Status::Ok,
        c if c < 500 => Status::Error,
        _ => Status::Failure,
    };
    if unwrap && let Some(key) = &a.ao_result {
        return match a.msg.get(key) {
            Some(v) => (status, v.clone()),
            None => (
                Status::Failure,
                Value::from(format!("Result key '{key}' not found in the peer's reply")),
            ),
        };
    }
    (status, Value::Message(a.msg))
}

/// Asks the nodes in order until enough admissible replies came.
fn serial(
    method: &str,
    msg: &Message,
    nodes: &[Target],
    multi: &Multi,
) -> (Vec<Answer>, Vec<String>) {
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for t in nodes {
        if answers.len() >= multi.responses {
            break;
        }
        match exchange(method, msg, t) {
            Ok(a) if multi.accept.admits(a.code) => answers.push(a),
            Ok(a) => errors.push(format!("{}: status {}", t.url, a.code)),
            Err((_, why)) => errors.push(why),
        }
    }
    (answers, errors)
}

/// Asks all nodes at once; answers once enough admissible replies came (the others
/// end on their own, within their timeouts).
fn parallel(
    method: &str,
    msg: &Message,
    nodes: &[Target],
    multi: &Multi,
) -> (Vec<Answer>, Vec<String>) {
    let (tx, rx) = std::sync::mpsc::channel::<(String, Result<Answer, Failed>)>();
    let mut started = 0;
    let mut errors = Vec::new();
    for t in nodes {
        let (tx, method, msg, t) = (tx.clone(), method.to_owned(), msg.clone(), t.clone());
        let spawned = std::thread::Builder::new()
            .name("relay-multi".into())
            .spawn(move || {
                let r = exchange(&method, &msg, &t);
                let _ = tx.send((t.url.clone(), r));
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => errors.push(format!("cannot start a request: {e}")),
        }
    }
    drop(tx);
    let longest = nodes
        .iter()
        .map(|t| t.limits.connect + t.limits.total)
        .max()
        .unwrap_or_default();
    let deadline = Instant::now() + longest + Duration::from_secs(1);
    let mut answers = Vec::new();
    for _ in 0..started {
        if answers.len() >= multi.responses {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(a))) if multi.accept.admits(a.code) => answers.push(a),
            Ok((url, Ok(a))) => errors.push(format!("{url}: status {}", a.code)),
            Ok((_, Err((_, why)))) => errors.push(why),
            Err(_) => break,
        }
    }
    (answers, errors)
}

/// One request and its decoded reply.
fn exchange(method: &str, msg: &Message, t: &Target) -> Result<Answer, Failed> {
    let what = format!("{method} {}", t.url);
    let http = httpsig::encode_rich_wire(msg)
        .map_err(|e| (400, format!("{what}: the message cannot be encoded: {e}")))?;
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(t.url.as_str());
    for (name, value) in &http.headers {
        if name == "host" || FRAMING.contains(&name.as_str()) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_ref());
    }
    let request = builder
        .body(http.body.map(|b| b.to_vec()).unwrap_or_default())
        .map_err(|e| (400, format!("{what}: the request cannot be built: {e}")))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(t.limits.connect))
        .timeout_global(Some(t.limits.total))
        .max_redirects(0)
        .user_agent(concat!("hyperbeam-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut resp = agent.run(request).map_err(|e| transport(&what, t, e))?;
    let code = resp.status().as_u16();
    let headers = hb_store::http::response_headers(&resp);
    let body = match hb_store::http::read_capped(&mut resp, t.limits.max_reply, &what) {
        Ok(b) => Bytes::from(b),
        Err(BodyError::TooLarge(text)) => return Err((502, text)),
        Err(BodyError::Transport(_, e)) => return Err(transport(&what, t, e)),
    };
    let request_path = t
        .url
        .find("://")
        .and_then(|i| t.url[i + 3..].find('/').map(|j| i + 3 + j))
        .map_or("/", |i| &t.url[i..]);
    let request_path = request_path.split('?').next().unwrap_or("/");
    let field = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let (ao_result, location) = (field("ao-result"), field("location"));
    let msg = decode(code, headers, body, method, request_path)
        .map_err(|why| (502, format!("{what}: {why}")))?;
    Ok(Answer {
        code,
        msg,
        ao_result,
        location,
    })
}

/// A transport failure as an answer: 504 for a timeout, else 502.
fn transport(what: &str, t: &Target, e: ureq::Error) -> Failed {
    match e {
        ureq::Error::Timeout(_) => (
            504,
            format!(
                "{what}: no reply within the relay's time limit ({} ms, connect {} ms)",
                t.limits.total.as_millis(),
                t.limits.connect.as_millis()
            ),
        ),
        other => (502, format!("{what}: the peer cannot be reached: {other}")),
    }
}

/// A reply as a message: an `ans104@1.0` item, or an httpsig message whose signatures
/// must verify (the peer's own keys kept); an unsigned reply that does not decode is
/// `{status, body, content-type}`. (Also how `scheduler@1.0` reads scheduler nodes.)
pub(crate) fn decode(
    code: u16,
    headers: BTreeMap<String, Bytes>,
    body: Bytes,
    method: &str,
    path: &str,
) -> Result<Message, String> {
    let codec = headers
        .get("codec-device")
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase());
    if codec.as_deref() == Some(ans104::DEVICE_NAME) {
        let item = DataItem::parse_bytes(&body)
            .map_err(|e| format!("the reply is not a data item: {e}"))?;
        if item.is_signed() {
            ans104::verify_tree(&item)
                .map_err(|e| format!("the reply's data item does not verify: {e}"))?;
        }
        return ans104::item_to_message(&item)
            .map_err(|e| format!("the reply's data item cannot be read: {e}"));
    }
    let signed = headers.contains_key("signature");
    let raw = |headers: &BTreeMap<String, Bytes>, body: &Bytes| {
        let mut m = Message::new().with("status", i64::from(code));
        if let Some(ct) = headers.get("content-type") {
            m.insert("content-type", Value::Binary(ct.clone()));
        }
        if !body.is_empty() {
            m.insert("body", Value::Binary(body.clone()));
        }
        m
    };
    let http = HttpMessage {
        headers: headers.clone(),
        body: (!body.is_empty()).then(|| body.clone()),
    };
    let status_text = code.to_string();
    let derived = |name: &str| -> Option<Bytes> {
        match name {
            "status" => Some(Bytes::from(status_text.clone())),
            "method" => Some(Bytes::from(method.to_owned())),
            "path" => Some(Bytes::from(path.to_owned())),
            _ => None,
        }
    };
    let verified = from_http_verified(&http, &derived).or_else(|e| {
        match (&e, hb_store::remote::without_added_status(&http)) {
            (ReceivedError::BadSignature(_), Some(stripped)) => {
                from_http_verified(&stripped, &derived).map_err(|_| e)
            }
            _ => Err(e),
        }
    });
    let mut msg = match verified.map(|tabm| from_tabm(&tabm)) {
        Ok(Ok(m)) => m,
        Ok(Err(_)) | Err(ReceivedError::Decode(_)) if !signed => return Ok(raw(&headers, &body)),
        Ok(Err(e)) => return Err(format!("the signed reply cannot be decoded: {e}")),
        Err(e) if signed => return Err(format!("the reply {e}")),
        Err(_) => return Ok(raw(&headers, &body)),
    };
    if !signed {
        for k in FRAMING {
            msg.remove(k);
        }
        msg.insert("status", Value::Integer(i64::from(code)));
    }
    Ok(msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use hb_core::{MemoryCache, NodeHandle};

    fn ctx(node: Message) -> Ctx {
        Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(MemoryCache::new(16)),
            NodeHandle::new(node),
        )
    }

    fn status_of(o: &Outcome) -> Option<i64> {
        o.value
            .as_message()
            .and_then(|m| m.get("status"))
            .and_then(Value::as_int)
    }

    fn body_text(o: &Outcome) -> String {
        o.value
            .as_message()
            .and_then(|m| m.get_str("body"))
            .unwrap_or("")
            .to_owned()
    }

    /// A one-shot HTTP server on loopback answering `reply` to `n` requests; the
    /// handle gives back what it received.
    fn serve(reply: &'static [u8], n: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (mut s, _) = l.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = s.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                }
                seen.push(String::from_utf8_lossy(&got).into_owned());
                s.write_all(reply).unwrap();
            }
            seen
        });
        (port, h)
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    const JSON_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"a\": true}";

    #[test]
    fn allow_list_entries() {
        let list = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(!host_allowed("127.0.0.1", 80, &[]));
        assert!(host_allowed("127.0.0.1", 9, &list(&["127.0.0.1"])));
        assert!(host_allowed("127.0.0.1", 9, &list(&["127.0.0.1:9"])));
        assert!(!host_allowed("127.0.0.1", 10, &list(&["127.0.0.1:9"])));
        assert!(host_allowed(
            "api.example.com",
            443,
            &list(&["*.example.com"])
        ));
        assert!(!host_allowed("example.com", 443, &list(&["*.example.com"])));
        assert!(!host_allowed(
            "evilexample.com",
            443,
            &list(&["*.example.com"])
        ));
        assert!(host_allowed("a.b", 1, &list(&["x", "*"])));
        assert!(host_allowed("::1", 8080, &list(&["[::1]:8080"])));
        assert!(host_allowed("::1", 1, &list(&["::1"])));
        assert!(host_allowed(
            "example.com",
            443,
            &list(&["https://EXAMPLE.com/"])
        ));
        assert!(!host_allowed("127.0.0.1", 9, &list(&["127.0.0.1:x"])));
        // Entries from a text option.
        let t = texts(&Value::text("a.com, 127.0.0.1:9 b.org"));
        assert_eq!(t, ["a.com", "127.0.0.1:9", "b.org"]);
    }

    #[test]
    fn urls_are_checked_and_escaped() {
        let (enc, host, port) = parse_url("http://127.0.0.1:9/~meta@1.0/info?x=a b#c").unwrap();
        assert_eq!(enc, "http://127.0.0.1:9/~meta@1.0/info?x=a%20b%23c");
        assert_eq!((host.as_str(), port), ("127.0.0.1", 9));
        assert_eq!(parse_url("https://Example.COM/x").unwrap().1, "example.com");
        assert_eq!(parse_url("https://example.com").unwrap().2, 443);
        assert_eq!(parse_url("http://[::1]:8/").unwrap().1, "::1");
        assert!(parse_url("http://allowed.com@evil.com/").is_err());
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http:///nohost").is_err());
        assert_eq!(normalise_path("a//b/?x=//y"), "/a/b?x=//y");
        assert_eq!(normalise_path(""), "/");
    }

    /// By default nothing the request names is relayed to: no network is touched.
    #[test]
    fn explicit_targets_need_the_allow_list() {
        let port = closed_port();
        let relay = Relay::default();
        let base = Message::new().with("device", NAME);
        let ctx = ctx(Message::new());
        for req in [
            Message::new().with("relay-path", format!("http://127.0.0.1:{port}/x").as_str()),
            Message::new()
                .with("relay-path", "/x")
                .with("peer", format!("http://127.0.0.1:{port}").as_str()),
        ] {
            let out = relay.relay_call(&base, &req.with("path", "call"), &ctx, None);
            assert_eq!(status_of(&out), Some(403), "{out:?}");
            assert!(body_text(&out).contains("relay_allow_hosts"));
        }
        // A path with no route and no peer: 404 that says so.
        let out = relay.relay_call(
            &base,
            &Message::new().with("path", "call").with("relay-path", "/x"),
            &ctx,
            None,
        );
        assert_eq!(status_of(&out), Some(404));
        // No path at all: 400.
        let out = relay.relay_call(&base, &Message::new().with("path", "call"), &ctx, None);
        assert_eq!(status_of(&out), Some(400));
        // A method relay does not send: 400.
        let out = relay.relay_call(
            &base,
            &Message::new()
                .with("relay-path", "/x")
                .with("relay-method", "CONNECT"),
            &ctx,
            None,
        );
        assert_eq!(status_of(&out), Some(400));
    }

    /// An allowed host that is down: a 502 that names it, quickly.
    #[test]
    fn unreachable_peer_is_a_clear_502() {
        let port = closed_port();
        let ctx =
            ctx(Message::new().with("relay_allow_hosts", format!("127.0.0.1:{port}").as_str()));
        let started = Instant::now();
        let out = Relay::default().relay_call(
            &Message::new(),
            &Message::new().with("relay-path", format!("http://127.0.0.1:{port}/x").as_str()),
            &ctx,
            None,
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.status, Status::Failure);
        assert_eq!(status_of(&out), Some(502));
        assert!(
            body_text(&out).contains(&format!("127.0.0.1:{port}")),
            "{out:?}"
        );
    }

    /// A silent peer: 504 after the relay's time limit.
    #[test]
    fn silent_peer_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ctx = ctx(Message::new()
            .with("relay_allow_hosts", "127.0.0.1")
            .with("relay_timeout", 300i64));
        let started = Instant::now();
        let out = Relay::default().relay_call(
            &Message::new(),
            &Message::new().with("relay-path", format!("http://127.0.0.1:{port}/x").as_str()),
            &ctx,
            None,
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(status_of(&out), Some(504), "{out:?}");
        drop(l);
    }

    /// A plain HTTP endpoint: its reply as a message; the relay's keys are not sent.
    #[test]
    fn plain_endpoint_reply() {
        let (port, server) = serve(JSON_REPLY, 1);
        let ctx = ctx(Message::new().with("relay_allow_hosts", "127.0.0.1"));
        let base = Message::new()
            .with("device", NAME)
            .with(
                "relay-path",
                format!("http://127.0.0.1:{port}/data?q=1").as_str(),
            )
            .with("x-custom", "kept");
        let out =
            Relay::default().relay_call(&base, &Message::new().with("path", "call"), &ctx, None);
        assert!(out.is_ok(), "{out:?}");
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(200)));
        assert_eq!(m.get_str("body"), Some("{\"a\": true}"));
        assert_eq!(m.get_str("content-type"), Some("application/json"));
        assert!(!m.contains("content-length") && !m.contains("connection"));
        let seen = server.join().unwrap();
        let head = seen[0].to_ascii_lowercase();
        assert!(head.starts_with("get /data?q=1 http/1.1"), "{head}");
        assert!(head.contains("x-custom: kept"));
        assert!(
            !head.contains("relay-path") && !head.contains("device:"),
            "{head}"
        );
    }

    /// The seed tutorial's form, through the engine: `?method=GET&path=<URL>`.
    #[test]
    fn seed_form_through_the_engine() {
        let (port, server) = serve(JSON_REPLY, 1);
        let ctx =
            ctx(Message::new().with("relay_allow_hosts", format!("127.0.0.1:{port}").as_str()));
        let singleton = Message::new().with("method", "GET").with(
            "path",
            format!("/~relay@1.0/call?method=GET&path=http://127.0.0.1:{port}/api/data").as_str(),
        );
        let list = hb_core::hyperpath::from_singleton(&singleton).unwrap();
        let out = ctx.resolve_many(list).unwrap();
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(
            out.value.as_message().unwrap().get_str("body"),
            Some("{\"a\": true}")
        );
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /api/data HTTP/1.1"), "{}", seen[0]);
        // Other keys are the message's: a missing one is not found.
        let bad = Message::new().with("path", "/~relay@1.0&k=v/nonsense");
        let list = hb_core::hyperpath::from_singleton(&bad).unwrap();
        assert!(!ctx.resolve_many(list).unwrap().is_ok());
        let k = Message::new().with("path", "/~relay@1.0&k=v/k");
        let list = hb_core::hyperpath::from_singleton(&k).unwrap();
        assert_eq!(ctx.resolve_many(list).unwrap().value, Value::text("v"));
    }

    /// A route sends without the allow list; a multirequest skips a dead node.
    #[test]
    fn routed_single_and_multirequest() {
        let (port, server) = serve(JSON_REPLY, 2);
        let dead = closed_port();
        let routes = format!(
            r#"[{{"template":"^/one/","node":{{"prefix":"http://127.0.0.1:{port}"}}}},
                {{"template":"^/many/","nodes":[{{"prefix":"http://127.0.0.1:{dead}"}},{{"prefix":"http://127.0.0.1:{port}"}}]}}]"#
        );
        let ctx = ctx(Message::new().with("routes", routes.as_str()));
        let relay = Relay::default();
        let one = relay.relay_call(
            &Message::new(),
            &Message::new().with("relay-path", "one/x"),
            &ctx,
            None,
        );
        assert_eq!(status_of(&one), Some(200), "{one:?}");
        let many = relay.relay_call(
            &Message::new(),
            &Message::new().with("relay-path", "/many/y"),
            &ctx,
            None,
        );
        assert_eq!(status_of(&many), Some(200), "{many:?}");
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /one/x "), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /many/y "), "{}", seen[1]);
        // Only dead nodes: no viable responses, 502.
        let routes =
            format!(r#"[{{"nodes":[{{"prefix":"http://127.0.0.1:{dead}"}}],"parallel":true}}]"#);
        let ctx2 = super::tests::ctx(Message::new().with("routes", routes.as_str()));
        let none = relay.relay_call(
            &Message::new(),
            &Message::new().with("relay-path", "/z"),
            &ctx2,
            None,
        );
        assert_eq!(status_of(&none), Some(502));
        assert!(body_text(&none).contains("no_viable_responses"), "{none:?}");
    }

    #[test]
    fn target_path_method_and_body_precedence() {
        let base = Message::new()
            .with("relay-path", "/from-base")
            .with("method", "PUT");
        let req = Message::new()
            .with("target", "msg")
            .with(
                "msg",
                Message::new().with("path", "/from-target").with("k", "v"),
            )
            .with("relay-method", "POST")
            .with("body", "ignored: the target is the request's");
        let (t, from_req) = find_target(&base, &req).unwrap();
        assert!(from_req);
        assert_eq!(t.get_str("path"), Some("/from-target"));
        assert_eq!(body_of(&base, &req, &t, from_req), None);
        let out = outgoing(&t, None);
        assert_eq!(out, Message::new().with("k", "v"));
        // A target nobody signed loses the relay's keys; the body chosen is sent.
        let plain = Message::new()
            .with("device", NAME)
            .with("relay-path", "/p")
            .with("method", "GET")
            .with("keep", "1");
        let sent = outgoing(&plain, Some(Value::text("b")));
        assert_eq!(sent, Message::new().with("keep", "1").with("body", "b"));
        assert!(find_target(&base, &Message::new().with("target", "none")).is_err());
        // `Accept` forms.
        assert_eq!(Accept::of(&Value::text("All")), Accept::All);
        assert!(Accept::of(&Value::text("200, 201")).admits(201));
        assert!(!Accept::of(&Value::Integer(200)).admits(404));
    }

    #[test]
    fn cast_answers_at_once() {
        let port = closed_port();
        let ctx = ctx(Message::new().with("relay_allow_hosts", "127.0.0.1"));
        let out = Relay::default().cast(
            &Message::new(),
            &Message::new().with("relay-path", format!("http://127.0.0.1:{port}/x").as_str()),
            &ctx,
        );
        assert_eq!(out.value, Value::text("OK"));
        // Refusals come at once too.
        let out = Relay::default().cast(
            &Message::new(),
            &Message::new().with("relay-path", "http://elsewhere.example/x"),
            &ctx,
        );
        assert_eq!(status_of(&out), Some(403));
    }

    #[test]
    fn request_hook_relays_the_raw_request() {
        let raw = Message::new().with("path", "/~meta@1.0/info");
        let out = request_hook(&Message::new().with("request", raw.clone()));
        let Some(Value::List(body)) = out.value.as_message().unwrap().get("body").cloned() else {
            panic!()
        };
        assert_eq!(
            body[1].as_message().unwrap().get("body"),
            Some(&Value::Message(raw))
        );
    }
}
