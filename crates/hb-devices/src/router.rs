//! `router@1.0`: where a node sends the messages it does not answer itself (spec 05 §7).
//!
//! A *route* is a message: a `template` (a path regular expression, or a message whose
//! keys a request must have), then either one `node` (a URL text, used verbatim as the
//! whole request URL, or a node map) or a list of `nodes` with a `strategy` (`All`,
//! `Random`, `By-Base`, `By-Weight`, `Nearest`) and how many to `choose`. A node map
//! turns the request's path into a URL: `prefix` (URL = prefix ‖ path), `suffix` (path
//! ‖ suffix) or `match` + `with` (a regular-expression replacement), and may carry
//! client `opts`. [`route`] is the whole algorithm of §7.3; `relay@1.0` sends through it.
//!
//! The routes are the node option `routes` — a list of route messages, a numbered
//! message, or (our extension, so that `--set routes=…` and `config.flat` can give
//! them) the JSON text of a list — or, when the option `route_provider` is set, what
//! resolving that message gives, on every lookup.
//!
//! Device keys (§7.4): `info`; `routes` (`GET` the list; a `POST` signed by one of
//! `route_owners`, by default the operator, adds the request as a route, kept sorted by
//! `priority`); `route` (the node for the request's `route-path` or `path`); `match`
//! (the first of the *base's* `routes` the request matches); `preprocess` (a `request`
//! hook that hands matching requests to `relay@1.0`, §7.5); `register` (§7.7: schedules
//! a signed registration on the router node's `router` process, without attestation —
//! this node cannot make one — and reads whether the router took it; one attempt at a
//! time, at least `router_register_interval` ms apart, 10 s by default).
//!
//! Regular expressions are Rust's `regex` (linear time, size-limited: a hostile
//! template cannot stall the node), searched unanchored as the reference's `re:run`.
//! Errors are answers with a status and a text: a request no route matches is a 404.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hb_codec::Wallet;
use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::id::Id;
use hb_core::message::{MessageDevice, committers_of};
use hb_core::resolve::mark_volatile;
use hb_core::value::{is_private, list_to_message, message_to_list};
use hb_core::{Ctx, Message, ResolveError, Value};
use parking_lot::Mutex;
use regex::Regex;

/// The device's name.
pub const NAME: &str = "router@1.0";

/// Largest compiled size of a route's regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How many compiled templates are kept (the cache is emptied when full).
const REGEX_CACHE_ENTRIES: usize = 512;

/// The strategies a route may name (spec 05 §7.3).
pub const STRATEGIES: [&str; 5] = ["All", "Random", "By-Base", "By-Weight", "Nearest"];

/// The `router@1.0` device.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// The node's wallet: it signs the registrations `register` sends.
    pub wallet: Option<Arc<Wallet>>,
    /// When this node last tried to register; held while it tries.
    register_gate: Arc<Mutex<Option<Instant>>>,
}

impl Router {
    /// The device, signing registrations with `wallet`.
    pub fn new(wallet: Option<Arc<Wallet>>) -> Self {
        Router {
            wallet,
            register_gate: Arc::default(),
        }
    }
}

/// The least time between two attempts of `register` to reach the router node, unless
/// the node option `router_register_interval` (ms) says otherwise: anyone may call
/// `register` (as on the reference), and each attempt sends two requests.
const REGISTER_INTERVAL: Duration = Duration::from_secs(10);

impl Device for Router {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            exports: Some(
                ["info", "routes", "route", "match", "register", "preprocess"]
                    .map(String::from)
                    .to_vec(),
            ),
            default: DefaultHandler::None,
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &["info", "routes", "route", "match", "register", "preprocess"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        Ok(match call.key() {
            "info" => Outcome::ok(info()),
            "routes" => routes_key(req, ctx),
            "route" => route_key(req, ctx),
            "match" => match_key(base, req, ctx),
            "register" => register(ctx, self.wallet.as_deref(), &self.register_gate),
            "preprocess" => preprocess(req, ctx),
            other => return Err(ResolveError::call(NAME, other, "no such function")),
        })
    }
}

/// Why a request has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No route matches (the reference's `no_matches`).
    NoMatches,
    /// A route matched but cannot be applied (a node without rules, a bad strategy…).
    Invalid(String),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::NoMatches => f.write_str("no route matches"),
            RouteError::Invalid(why) => f.write_str(why),
        }
    }
}

/// A result as a device answers it: the value itself for internal callers; for HTTP
/// requests (`force_message`) a message marked volatile, because routes change while
/// a request's hashpath does not, so a cached answer would go stale.
pub(crate) fn answer(ctx: &Ctx, value: Value) -> Outcome {
    answer_with(ctx, Status::Ok, value)
}

/// [`answer`] with another status.
pub(crate) fn answer_with(ctx: &Ctx, status: Status, value: Value) -> Outcome {
    if !ctx.opts.force_message {
        return Outcome { status, value };
    }
    let mut m = match value {
        Value::Message(m) => m,
        Value::List(l) => list_to_message(&l),
        other => Message::new().with("ao-result", "body").with("body", other),
    };
    mark_volatile(&mut m);
    Outcome {
        status,
        value: Value::Message(m),
    }
}

/// `info` (spec 05 §7.4).
fn info() -> Message {
    let api = |d: &str| Message::new().with("description", d);
    Message::new().with("status", 200i64).with(
        "body",
        Message::new()
            .with(
                "description",
                "Router device for handling outbound message routing",
            )
            .with("version", "1.0")
            .with(
                "api",
                Message::new()
                    .with("info", api("Get device info"))
                    .with(
                        "routes",
                        api("Get or add routes").with("method", "GET or POST"),
                    )
                    .with(
                        "route",
                        api("Find a route for a message").with(
                            "required_params",
                            Message::new().with("route-path", "Path to route"),
                        ),
                    )
                    .with("match", api("Match a message against available routes"))
                    .with(
                        "register",
                        api("Register a route with a remote router node"),
                    )
                    .with(
                        "preprocess",
                        api("Preprocess a request to check if it should be relayed"),
                    ),
            ),
    )
}

// ---------------------------------------------------------------------------------
// Routes

/// The routes a value holds: a list of route messages, a numbered message (`1`, `2`,
/// …), or the JSON text of a list (our extension for text-only configuration).
///
/// # Errors
/// The value is none of these, or an element is not a message.
pub fn routes_from(v: &Value) -> Result<Vec<Message>, String> {
    let items: Vec<Value> = match v {
        Value::List(l) => l.as_ref().clone(),
        Value::Message(m) => message_to_list(m).ok_or_else(|| {
            "`routes` is a message whose keys are not the numbers 1..N".to_owned()
        })?,
        Value::Binary(b) => {
            let text = String::from_utf8_lossy(b);
            let text = text.trim();
            if text.is_empty() {
                return Ok(vec![]);
            }
            let parsed = hb_core::json::from_plain_json(text.as_bytes())
                .map_err(|e| format!("`routes` text is not a JSON list of routes: {e}"))?;
            return match parsed {
                Value::List(_) | Value::Message(_) => routes_from(&parsed),
                _ => Err("`routes` text is not a JSON list of routes".into()),
            };
        }
        other => {
            return Err(format!(
                "`routes` is a {}, not a list of routes",
                other.type_name()
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Value::Message(m) => Ok(m),
            other => Err(format!(
                "route {} is a {}, not a message",
                i + 1,
                other.type_name()
            )),
        })
        .collect()
}

/// The node's routes: what resolving `route_provider` gives when that option is set,
/// else the option `routes` (none when absent).
///
/// # Errors
/// The provider fails, or what it (or the option) holds is not a list of routes.
pub fn node_routes(ctx: &Ctx) -> Result<Vec<Message>, String> {
    let node = ctx.node().get();
    if let Some(provider) = node.get("route_provider") {
        let singleton = match provider {
            Value::Message(m) => m.clone(),
            Value::Binary(_) => Message::new().with("path", provider.clone()),
            other => {
                return Err(format!(
                    "`route_provider` is a {}, not a message",
                    other.type_name()
                ));
            }
        };
        let list = hb_core::hyperpath::from_singleton(&singleton)
            .map_err(|e| format!("the route provider's path is invalid: {e}"))?;
        return match ctx.internal().resolve_many(list) {
            Ok(out) if out.is_ok() => routes_from(&out.value),
            Ok(out) => Err(format!(
                "the route provider answered `{}`: {:?}",
                out.status.as_str(),
                out.value
            )),
            Err(e) => Err(format!("the route provider failed: {e}")),
        };
    }
    match node.get("routes") {
        None => Ok(vec![]),
        Some(v) => routes_from(v),
    }
}

/// The path a message is routed by: its `route-path` if present, else its `path`.
pub fn target_path(msg: &Message) -> Option<&str> {
    msg.get_str("route-path")
        .or_else(|| msg.get_str("path"))
        .filter(|p| !p.is_empty())
}

/// Whether `path` is an explicit URL (`http://…` or `https://…`).
pub fn is_url(path: &str) -> bool {
    path.starts_with("http://") || path.starts_with("https://")
}

/// What [`match_routes`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Matched {
    /// The path is itself a URL (spec 05 §7.2: an explicit route).
    Explicit(String),
    /// Route number `index` (1-based, as `routes/<index>` reads it).
    Route {
        /// Its 1-based position.
        index: usize,
        /// The route.
        route: Message,
    },
}

impl Matched {
    /// The matched route as `match` answers it: with `reference` (`routes/<index>`,
    /// or `explicit`).
    pub fn to_message(&self) -> Message {
        match self {
            Matched::Explicit(url) => Message::new()
                .with("node", url.as_str())
                .with("reference", "explicit"),
            Matched::Route { index, route } => route
                .clone()
                .with("reference", format!("routes/{index}").as_str()),
        }
    }
}

/// The first route `msg` matches (spec 05 §7.2): an explicit URL path matches at
/// once; otherwise routes are tried in order.
pub fn match_routes(msg: &Message, routes: &[Message]) -> Option<Matched> {
    let path = target_path(msg);
    if let Some(p) = path
        && is_url(p)
    {
        return Some(Matched::Explicit(p.to_owned()));
    }
    routes.iter().enumerate().find_map(|(i, r)| {
        template_matches(msg, path, r.get("template")).then(|| Matched::Route {
            index: i + 1,
            route: r.clone(),
        })
    })
}

/// Whether a route's template matches: none matches everything, a text is a path
/// regular expression, a message a set of keys the request must have.
fn template_matches(msg: &Message, path: Option<&str>, template: Option<&Value>) -> bool {
    match template {
        None => true,
        Some(Value::Binary(_)) => match (path, template.and_then(Value::as_str)) {
            (Some(p), Some(re)) => regex_matches(p, re),
            _ => false,
        },
        Some(Value::Message(t)) => map_matches(t, msg),
        Some(_) => false,
    }
}

/// `regex` searched (unanchored) in `path`, both given a leading `/` if they lack one
/// (spec 05 §7.2). An invalid expression matches nothing.
///
/// An expression anchored with `^` gets its `/` after the anchor (`^api` is `^/api`):
/// the reference puts it before (`/^api`), so anchored templates never match there.
pub fn regex_matches(path: &str, regex: &str) -> bool {
    let path = with_slash(path);
    let pattern = match regex.strip_prefix('^') {
        Some(rest) => format!("^{}", with_slash(rest)),
        None => with_slash(regex).into_owned(),
    };
    compiled(&pattern).is_some_and(|re| re.is_match(&path))
}

fn with_slash(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with('/') {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(format!("/{s}"))
    }
}

/// A compiled expression, from a small cache (templates are matched on every request).
fn compiled(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().get(pattern) {
        return hit.clone();
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .ok();
    let mut guard = cache.lock();
    if guard.len() >= REGEX_CACHE_ENTRIES {
        guard.clear();
    }
    guard.insert(pattern.to_owned(), re.clone());
    re
}

/// Whether every key of `template` is in `msg` with an equal value (nested messages
/// compared the same way).
pub fn map_matches(template: &Message, msg: &Message) -> bool {
    template.public().all(|(k, want)| match msg.get(k) {
        Some(have) => values_match(want, have),
        None => false,
    })
}

fn values_match(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Message(w), Value::Message(h)) => map_matches(w, h),
        (Value::List(w), Value::List(h)) => {
            w.len() == h.len() && w.iter().zip(h.iter()).all(|(a, b)| values_match(a, b))
        }
        (Value::Message(_) | Value::List(_), _) | (_, Value::Message(_) | Value::List(_)) => false,
        (w, h) => w == h || w.to_display_bytes() == h.to_display_bytes(),
    }
}

// ---------------------------------------------------------------------------------
// Applying routes

/// The URL one node gives for `path` (spec 05 §7.1): `opts` first (the answer is then
/// `{uri, opts}`), then `prefix`, `suffix`, `match`/`with`.
///
/// # Errors
/// The node has none of these rules, or its `match` is not a valid expression.
pub fn apply_node(node: &Value, path: &str) -> Result<Value, String> {
    let node = match node {
        Value::Binary(_) => return Ok(node.clone()),
        Value::Message(m) => m,
        other => return Err(format!("a node is a {}, not a message", other.type_name())),
    };
    if let Some(opts) = node.get("opts") {
        let uri = apply_node(&Value::Message(node.clone().without("opts")), path)?;
        return Ok(Value::Message(
            Message::new().with("uri", uri).with("opts", opts.clone()),
        ));
    }
    if let Some(prefix) = node.get_str("prefix") {
        return Ok(Value::from(format!("{prefix}{path}")));
    }
    if let Some(suffix) = node.get_str("suffix") {
        return Ok(Value::from(format!("{path}{suffix}")));
    }
    if let (Some(pattern), Some(with)) = (node.get_str("match"), node.get_str("with")) {
        let re = compiled(pattern)
            .ok_or_else(|| format!("the node's `match` `{pattern}` is not a valid expression"))?;
        return Ok(Value::from(replace_all(&re, path, with)));
    }
    Err("the node has none of `prefix`, `suffix`, `match`/`with`".into())
}

/// Every match of `re` in `text` replaced by `with`, read as the reference's
/// `re:replace` reads it: `&` is the whole match, `\N` (or `\g{N}`) group N, `\&` and
/// `\\` the characters themselves.
fn replace_all(re: &Regex, text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let Some(whole) = caps.get(0) else { continue };
        out.push_str(&text[last..whole.start()]);
        let mut chars = with.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '&' => out.push_str(whole.as_str()),
                '\\' => match chars.peek().copied() {
                    Some(d) if d.is_ascii_digit() => {
                        let mut n = 0usize;
                        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                            n = n.saturating_mul(10).saturating_add(d as usize);
                            chars.next();
                        }
                        out.push_str(caps.get(n).map_or("", |m| m.as_str()));
                    }
                    Some('g') => {
                        chars.next();
                        let mut name = String::new();
                        if chars.peek() == Some(&'{') {
                            chars.next();
                            for d in chars.by_ref() {
                                if d == '}' {
                                    break;
                                }
                                name.push(d);
                            }
                        }
                        let group = name
                            .parse::<usize>()
                            .ok()
                            .and_then(|n| caps.get(n))
                            .or_else(|| caps.name(&name));
                        out.push_str(group.map_or("", |m| m.as_str()));
                    }
                    Some(other) => {
                        out.push(other);
                        chars.next();
                    }
                    None => out.push('\\'),
                },
                other => out.push(other),
            }
        }
        last = whole.end();
        if whole.start() == whole.end() && whole.end() >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// The nodes of a route (`nodes`: a list or a numbered message).
fn nodes_of(route: &Message) -> Result<Vec<Value>, RouteError> {
    match route.get("nodes") {
        Some(Value::List(l)) => Ok(l.as_ref().clone()),
        Some(Value::Message(m)) => message_to_list(m).ok_or_else(|| {
            RouteError::Invalid("the route's `nodes` is not a list of nodes".into())
        }),
        Some(other) => Err(RouteError::Invalid(format!(
            "the route's `nodes` is a {}, not a list",
            other.type_name()
        ))),
        None => Err(RouteError::Invalid(
            "the matching route has neither `node` nor `nodes`".into(),
        )),
    }
}

/// A node with its rules applied: a map gains `uri` (and `opts`); a text stays the URL.
fn applied(node: &Value, path: &str) -> Value {
    match (node, apply_node(node, path)) {
        (Value::Message(m), Ok(Value::Binary(uri))) => {
            Value::Message(m.clone().with("uri", Value::Binary(uri)))
        }
        (Value::Message(m), Ok(Value::Message(r))) => {
            let mut out = m.clone();
            for (k, v) in r.iter() {
                out.insert_key(k.clone(), v.clone());
            }
            Value::Message(out)
        }
        (other, _) => other.clone(),
    }
}

/// Route `msg` over `routes` (spec 05 §7.3): the URL text, `{uri, opts}`, or — for a
/// route whose nodes are all wanted (`All`) or several chosen — the route with its
/// `nodes` applied (each with `uri`).
///
/// # Errors
/// [`RouteError::NoMatches`], or the matching route cannot be applied.
pub fn route(msg: &Message, routes: &[Message], rng: &mut Rng) -> Result<Value, RouteError> {
    let path = target_path(msg).unwrap_or("/").to_owned();
    let route = match match_routes(msg, routes) {
        None => return Err(RouteError::NoMatches),
        Some(Matched::Explicit(url)) => return Ok(Value::from(url)),
        Some(Matched::Route { route, .. }) => route,
    };
    match route.get("node") {
        Some(v @ Value::Binary(_)) => return Ok(v.clone()),
        Some(v @ Value::Message(_)) => {
            return apply_node(v, &path).map_err(RouteError::Invalid);
        }
        Some(other) => {
            return Err(RouteError::Invalid(format!(
                "the route's `node` is a {}, not a URL or a node",
                other.type_name()
            )));
        }
        None => {}
    }
    let nodes = nodes_of(&route)?;
    let strategy = route.get_str("strategy").unwrap_or("All");
    if strategy.eq_ignore_ascii_case("all") {
        let all: Vec<Value> = nodes.iter().map(|n| applied(n, &path)).collect();
        return Ok(Value::Message(route.with("nodes", Value::list(all))));
    }
    let n = match route.get("choose") {
        None => 1,
        Some(v) => match v.as_int() {
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => {
                return Err(RouteError::Invalid(
                    "the route's `choose` is not a positive integer".into(),
                ));
            }
        },
    };
    let base = base_of(&path);
    let chosen = choose(n, strategy, &base, nodes, rng).map_err(RouteError::Invalid)?;
    match chosen.as_slice() {
        [] => Err(RouteError::Invalid("the route has no nodes".into())),
        [one] => apply_node(one, &path).map_err(RouteError::Invalid),
        many => {
            let all: Vec<Value> = many.iter().map(|n| applied(n, &path)).collect();
            Ok(Value::Message(route.with("nodes", Value::list(all))))
        }
    }
}

// ---------------------------------------------------------------------------------
// Strategies

/// The base a path is routed by (spec 05 §7.3): its first segment if that is an ID;
/// else the part of it before the first `~`, `?` or `&` if that is one; else the
/// SHA-256 of the first segment.
pub fn base_of(path: &str) -> [u8; 32] {
    let first = path.split('/').find(|p| !p.is_empty()).unwrap_or("");
    if let Some(id) = native_id(first) {
        return id;
    }
    let head = first.split(['~', '?', '&']).next().unwrap_or("");
    if let Some(id) = native_id(head) {
        return id;
    }
    Id::sha256(first.as_bytes()).0
}

/// A 43-character ID (or 32 raw bytes) as its 32 bytes.
fn native_id(s: &str) -> Option<[u8; 32]> {
    match s.len() {
        43 => Id::from_human(s.as_bytes()).map(|id| id.0),
        32 => s.as_bytes().try_into().ok(),
        _ => None,
    }
}

/// Chooses `n` of `nodes` with `strategy` for `base` (spec 05 §7.3). Chosen nodes are
/// taken out of the candidates, so no node is chosen twice; asking for more nodes than
/// there are gives them all.
///
/// # Errors
/// An unknown strategy.
pub fn choose(
    n: usize,
    strategy: &str,
    base: &[u8; 32],
    mut nodes: Vec<Value>,
    rng: &mut Rng,
) -> Result<Vec<Value>, String> {
    let n = n.min(nodes.len());
    let mut out = Vec::with_capacity(n);
    match strategy.to_ascii_lowercase().as_str() {
        "all" => return Ok(nodes),
        "random" => {
            for _ in 0..n {
                let i = rng.below(nodes.len());
                out.push(nodes.remove(i));
            }
        }
        "by-weight" => {
            for _ in 0..n {
                let weights: Vec<f64> = nodes.iter().map(weight_of).collect();
                let total: f64 = weights.iter().sum();
                let i = if total > 0.0 && total.is_finite() {
                    let mut r = rng.unit() * total;
                    let mut pick = weights.len() - 1;
                    for (i, w) in weights.iter().enumerate() {
                        if r < *w {
                            pick = i;
                            break;
                        }
                        r -= w;
                    }
                    pick
                } else {
                    rng.below(nodes.len())
                };
                out.push(nodes.remove(i));
            }
        }
        "by-base" => {
            for _ in 0..n {
                let i = mod_small(base, nodes.len());
                out.push(nodes.remove(i));
            }
        }
        "nearest" => {
            let mut scored: Vec<(Option<[u8; 32]>, Value)> = nodes
                .into_iter()
                .map(|node| {
                    let d = node
                        .as_message()
                        .and_then(|m| m.get_str("wallet"))
                        .and_then(native_id)
                        .map(|w| field_distance(&w, base));
                    (d, node)
                })
                .collect();
            // Nodes without a wallet are farthest; ties keep the list order.
            scored.sort_by(|(a, _), (b, _)| match (a, b) {
                (Some(a), Some(b)) => a.cmp(b),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
            out.extend(scored.into_iter().take(n).map(|(_, node)| node));
        }
        _ => {
            return Err(format!(
                "unknown strategy `{strategy}` (known: {})",
                STRATEGIES.join(", ")
            ));
        }
    }
    Ok(out)
}

/// A node's numeric `weight` (missing, negative or unreadable: 0).
fn weight_of(node: &Value) -> f64 {
    let w = match node.as_message().and_then(|m| m.get("weight")) {
        Some(Value::Integer(i)) => *i as f64,
        Some(Value::Float(f)) => *f,
        Some(v) => v
            .as_str()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0),
        None => 0.0,
    };
    if w.is_finite() && w > 0.0 { w } else { 0.0 }
}

/// `h mod m` for a 256-bit big-endian `h` (`m` > 0).
fn mod_small(h: &[u8; 32], m: usize) -> usize {
    let m = m.max(1) as u128;
    let mut r: u128 = 0;
    for b in h {
        r = (r * 256 + u128::from(*b)) % m;
    }
    r as usize
}

/// `min(|a − b|, 2²⁵⁶ − |a − b|)` of two 256-bit big-endian numbers.
fn field_distance(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let diff = if a >= b { sub(a, b) } else { sub(b, a) };
    if diff == [0u8; 32] {
        return diff;
    }
    // 2²⁵⁶ − d is the two's complement of d in 256 bits.
    let wrapped = sub(&[0u8; 32], &diff);
    diff.min(wrapped)
}

/// `a − b` modulo 2²⁵⁶ (big-endian).
fn sub(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    out
}

/// A small pseudo-random generator (splitmix64) for the `Random` and `By-Weight`
/// strategies: seeded from the process's hash keys in production, from a fixed seed in
/// tests. Load spreading needs no cryptographic randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn seeded(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from the standard library's per-process random hash keys
    /// and the time.
    pub fn from_entropy() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        Rng(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n.max(1) as u128) >> 64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------
// Device keys

/// `routes`: the list (`GET`), or a route added by an owner (`POST`).
fn routes_key(req: &Message, ctx: &Ctx) -> Outcome {
    let method = req.get_str("method").unwrap_or("GET");
    let routes = match node_routes(ctx) {
        Ok(r) => r,
        Err(e) => return Outcome::error_status(500, &e),
    };
    if !method.eq_ignore_ascii_case("POST") {
        return answer(
            ctx,
            Value::list(routes.into_iter().map(Value::Message).collect()),
        );
    }
    let owners = route_owners(&ctx.node().get());
    let signers = verified_signers(req, ctx);
    if !signers.iter().any(|s| owners.contains(s)) {
        return Outcome::error_status(
            403,
            "not_authorized: only a request signed by one of the node's `route_owners` \
             (by default its operator) may add a route",
        );
    }
    let new_route = route_of_request(req);
    let mut all = routes;
    all.push(new_route);
    // A stable sort: routes without a `priority` come last, equal ones keep their order.
    all.sort_by_key(|r| {
        r.get("priority")
            .and_then(Value::as_int)
            .map_or((1, 0), |p| (0, p))
    });
    let list = Value::list(all.into_iter().map(Value::Message).collect());
    ctx.node().update(|n| n.clone().with("routes", list));
    answer(ctx, Value::text("Route added."))
}

/// The keys of a request that are about the request, not the route it adds.
const REQUEST_KEYS: [&str; 13] = [
    "path",
    "method",
    "commitments",
    "signature",
    "signature-input",
    "content-digest",
    "content-length",
    "content-type",
    "host",
    "body-keys",
    "ao-types",
    "inline-body-key",
    "hashpath",
];

/// The route a `POST routes` request adds: the request without its transport keys.
fn route_of_request(req: &Message) -> Message {
    let mut route = Message::new();
    for (k, v) in req.iter() {
        if !is_private(k) && !REQUEST_KEYS.contains(&k.as_ref()) {
            route.insert_key(k.clone(), v.clone());
        }
    }
    route
}

/// Who may add routes: the option `route_owners` (a list, or text of addresses
/// separated by commas or spaces), else the operator (the node's address when no
/// `operator` is set).
fn route_owners(node: &Message) -> Vec<String> {
    match node.get("route_owners") {
        Some(v) => texts(v),
        None => node
            .get_str("operator")
            .or_else(|| node.get_str("address"))
            .map(|o| vec![o.to_owned()])
            .unwrap_or_default(),
    }
}

/// The texts of a list, or of a text separated by commas or spaces.
pub(crate) fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l
            .iter()
            .filter_map(|x| x.as_str().map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .collect(),
        other => other
            .as_str()
            .unwrap_or("")
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// The signers of `req` whose signatures hold: those of the request as the HTTP layer
/// received and verified it (when `req` carries its commitments), else those of a
/// message whose commitments verify now.
pub(crate) fn verified_signers(req: &Message, ctx: &Ctx) -> Vec<String> {
    let signers = committers_of(req);
    if signers.is_empty() {
        return signers;
    }
    let received = ctx
        .request()
        .is_some_and(|r| r.get("commitments") == req.get("commitments"));
    let verify = Message::new().with("path", "verify");
    let verifies = || {
        matches!(
            MessageDevice.call(Call::Function("verify"), req, &verify, &ctx.internal()),
            Ok(out) if out.is_ok() && out.value.is_atom("true")
        )
    };
    if received || verifies() {
        signers
    } else {
        vec![]
    }
}

/// `route` (spec 05 §7.3) over the node's routes.
fn route_key(req: &Message, ctx: &Ctx) -> Outcome {
    let routes = match node_routes(ctx) {
        Ok(r) => r,
        Err(e) => return Outcome::error_status(500, &e),
    };
    match route(req, &routes, &mut Rng::from_entropy()) {
        Ok(v) => answer(ctx, v),
        Err(RouteError::NoMatches) => Outcome::error_status(
            404,
            &format!(
                "no_matches: no route of this node matches `{}`",
                target_path(req).unwrap_or("")
            ),
        ),
        Err(RouteError::Invalid(why)) => Outcome::error_status(500, &why),
    }
}

/// `match`: the request's `route-path`/`path` against the base's `routes`.
fn match_key(base: &Message, req: &Message, ctx: &Ctx) -> Outcome {
    let routes = match base.get("routes") {
        None => vec![],
        Some(v) => match routes_from(v) {
            Ok(r) => r,
            Err(e) => return Outcome::error_status(400, &e),
        },
    };
    let mut probe = req.clone();
    if let Some(p) = target_path(req) {
        probe.insert("path", Value::text(p));
    }
    match match_routes(&probe, &routes) {
        Some(m) => answer(ctx, Value::Message(m.to_message())),
        None => Outcome::error_status(
            404,
            &format!(
                "no_matching_route: no route of the base matches `{}`",
                target_path(req).unwrap_or("")
            ),
        ),
    }
}

/// The message list that relays `request` with `relay@1.0` (spec 05 §7.5, §7.6).
pub fn relay_list(request: &Value) -> Value {
    Value::list(vec![
        Value::Message(Message::new().with("device", crate::relay::NAME)),
        Value::Message(
            Message::new()
                .with("path", "call")
                .with("target", "body")
                .with("body", request.clone()),
        ),
    ])
}

/// `preprocess` (spec 05 §7.5): a `request` hook that relays the requests a route of
/// the node matches, and leaves the others to the node (or refuses them, with
/// `router_preprocess_default: error`).
fn preprocess(req: &Message, ctx: &Ctx) -> Outcome {
    let Some(Value::Message(raw)) = req.get("request") else {
        return Outcome::error_status(
            400,
            "preprocess is a `request` hook: it needs the raw request as `request`",
        );
    };
    let routes = match node_routes(ctx) {
        Ok(r) => r,
        Err(e) => return Outcome::error_status(500, &e),
    };
    let body = if match_routes(raw, &routes).is_some() {
        relay_list(&Value::Message(raw.clone()))
    } else {
        let node = ctx.node().get();
        match node.get_str("router_preprocess_default").unwrap_or("local") {
            "error" => Value::list(vec![Value::Message(
                Message::new()
                    .with("status", 404i64)
                    .with("message", "No matching template found in the given routes."),
            )]),
            _ => req
                .get("body")
                .cloned()
                .unwrap_or_else(|| Value::list(vec![])),
        }
    };
    Outcome::ok(Message::new().with("body", body))
}

/// The options `register` needs (spec 05 §7.7).
const REGISTER_OPTS: [&str; 4] = [
    "router_peer_location",
    "router_prefix",
    "router_price",
    "router_template",
];

/// `register` (spec 05 §7.7): registers this node's route with the router node at
/// `router_peer_location`, by scheduling a signed `{path: register, route: {prefix,
/// template, price}}` on that node's `router` process
/// (`/router~node-process@1.0/schedule`), then reading that slot's result there: the
/// router process says whether it took the route. This node has no SEV-SNP hardware
/// and `snp@1.0` is not implemented, so the registration carries no attestation: it
/// says `attestation: none`, and only routers configured to accept that take it.
///
/// At most one attempt runs at a time, and attempts are [`REGISTER_INTERVAL`] (or
/// `router_register_interval` ms) apart (`gate` holds the time of the last one); a call
/// in between answers 429 without sending anything.
fn register(ctx: &Ctx, wallet: Option<&Wallet>, gate: &Mutex<Option<Instant>>) -> Outcome {
    let node = ctx.node().get();
    if node
        .get("router_registered")
        .is_some_and(|v| v.is_atom("true") || v.as_str() == Some("true"))
    {
        return Outcome::error("Route already registered.");
    }
    let history = match node.get("node_history") {
        Some(Value::List(l)) => l.len(),
        _ => 0,
    };
    if history != 1 {
        return Outcome::error_status(
            400,
            &format!("register needs a node history of exactly one entry; this node has {history}"),
        );
    }
    let missing: Vec<&str> = REGISTER_OPTS
        .iter()
        .copied()
        .filter(|k| node.get(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Outcome::error(format!("Missing required opts: {}", missing.join(", ")).as_str());
    }
    let Some(wallet) = wallet else {
        return register_failed(503, "this node has no wallet to sign the registration");
    };
    let Some(mut last) = gate.try_lock() else {
        return register_failed(429, "another registration is under way");
    };
    let interval = node
        .get("router_register_interval")
        .and_then(Value::as_uint)
        .map_or(REGISTER_INTERVAL, Duration::from_millis);
    if let Some(at) = *last
        && at.elapsed() < interval
    {
        return register_failed(
            429,
            &format!(
                "the last attempt was {} ms ago; attempts are at least {} ms apart",
                at.elapsed().as_millis(),
                interval.as_millis()
            ),
        );
    }
    let outcome = send_registration(ctx, &node, wallet);
    // The interval runs from the end of an attempt.
    *last = Some(Instant::now());
    outcome
}

/// One attempt of `register`: schedules the signed registration on the router node
/// and reads that slot's result there.
fn send_registration(ctx: &Ctx, node: &Message, wallet: &Wallet) -> Outcome {
    let opt = |k: &str| node.get(k).cloned().unwrap_or_else(|| Value::text(""));
    let Some(peer) = node.get_str("router_peer_location") else {
        return register_failed(400, "`router_peer_location` is not a text");
    };
    let peer = peer.trim_end_matches('/');
    let registration = Message::new()
        .with("path", "register")
        .with(
            "route",
            Message::new()
                .with("prefix", opt("router_prefix"))
                .with("template", opt("router_template"))
                .with("price", opt("router_price")),
        )
        .with("attestation", "none");
    let signed = match hb_codec::httpsig_commit::commit(&registration, wallet) {
        Ok(s) => s,
        Err(e) => return register_failed(500, &format!("the registration cannot be signed: {e}")),
    };
    let url = format!("{peer}/router~node-process@1.0/schedule");
    let request = Message::new().with("body", signed);
    let reply = match ask_router(ctx, node, "POST", &url, &request, || {
        format!("the router refused to schedule it ({url})")
    }) {
        Ok(reply) => reply,
        Err(failed) => return failed,
    };
    let Some(slot) = reply.get("slot").and_then(Value::as_int) else {
        return register_failed(
            502,
            &format!("the router scheduled the registration but gave no slot ({url})"),
        );
    };
    // The router process decides at compute time: read the slot's result.
    let url = format!("{peer}/router~node-process@1.0/compute/results={slot}");
    let results = match ask_router(ctx, node, "GET", &url, &Message::new(), || {
        format!("the router's result for slot {slot} is unavailable")
    }) {
        Ok(results) => results,
        Err(failed) => return failed,
    };
    if let Some(err) = results.get("error") {
        let why = err
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{err:?}"));
        return register_failed(403, &format!("the router refused the registration: {why}"));
    }
    // The aos library skips a message whose signature it does not trust without an
    // error: only its output says so.
    let output = results
        .get("output")
        .and_then(Value::as_message)
        .and_then(|o| o.get_str("data"))
        .unwrap_or_default();
    if output.contains("Message is not trusted.") {
        return register_failed(
            403,
            "the router refused the registration: its process does not trust the signature",
        );
    }
    ctx.node()
        .update(|n| n.clone().with("router_registered", Value::atom("true")));
    answer(ctx, Value::text("Route registered."))
}

/// `method` `msg` to the router node at `url` (a URL the operator configured): its
/// reply when the status is below 400, else `register_failed` with the peer's status
/// and `refused()`, followed by what the peer said (or with why it cannot be reached).
fn ask_router(
    ctx: &Ctx,
    node: &Message,
    method: &str,
    url: &str,
    msg: &Message,
    refused: impl FnOnce() -> String,
) -> Result<Message, Outcome> {
    match ctx.blocking(|| crate::relay::send_direct(method, url, msg, node)) {
        Ok((code, reply)) if code < 400 => Ok(reply),
        Ok((code, reply)) => Err(register_failed(
            code,
            &format!("{}: {}", refused(), reply_text(&reply)),
        )),
        Err((code, why)) => Err(register_failed(code, &why)),
    }
}

/// `"Failed to register route."` with its reason.
fn register_failed(code: u16, why: &str) -> Outcome {
    let message = Message::new()
        .with("status", i64::from(code))
        .with("body", "Failed to register route.")
        .with("reason", why);
    if code >= 500 {
        Outcome {
            status: Status::Failure,
            value: Value::Message(message),
        }
    } else {
        Outcome::error(message)
    }
}

/// A peer's reply as a short text.
fn reply_text(reply: &Message) -> String {
    reply
        .get_str("body")
        .or_else(|| reply.get_str("reason"))
        .or_else(|| reply.get_str("message"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{reply:?}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::sync::Arc;

    use hb_codec::Wallet;
    use hb_core::{MemoryCache, NodeHandle};

    fn r(template: Value, node: &str) -> Message {
        Message::new().with("template", template).with("node", node)
    }

    fn at(path: &str) -> Message {
        Message::new().with("path", path)
    }

    fn node_of(routes: &[Message], msg: &Message) -> Option<String> {
        match match_routes(msg, routes)? {
            Matched::Route { route, .. } => route.get_str("node").map(str::to_owned),
            Matched::Explicit(u) => Some(u),
        }
    }

    fn ctx(node: Message) -> Ctx {
        Ctx::new(
            Arc::new(crate::registry()),
            Arc::new(MemoryCache::new(16)),
            NodeHandle::new(node),
        )
    }

    fn key1() -> Wallet {
        Wallet::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/key-1.json"
        ))
        .unwrap()
    }

    fn id_text(n: u8) -> String {
        let mut b = [0u8; 32];
        b[31] = n;
        Id(b).to_human()
    }

    /// Spec 05 §7.2 vectors: regex templates.
    #[test]
    fn regex_templates_match_unanchored() {
        let routes = [
            r(Value::text("/.*/compute"), "incorrect"),
            r(Value::text("/.*/schedule"), "correct"),
        ];
        assert_eq!(
            node_of(&routes, &at("/abc/schedule")).as_deref(),
            Some("correct")
        );
        assert_eq!(
            node_of(&routes, &at("/a/b/c/schedule")).as_deref(),
            Some("correct")
        );
        assert_eq!(node_of(&routes, &at("/a/b/c/bad-key")), None);
        // Unanchored: `/graphql` matches any path containing it; `*` matches anything.
        assert!(regex_matches("/x/graphql/y", "/graphql"));
        assert!(regex_matches("anything", "*"));
        assert!(regex_matches("no-slash", "^/no-slash$"));
        // An invalid expression matches nothing.
        assert!(!regex_matches("/a", "(unclosed"));
        // `route-path` wins over `path`.
        let m = at("/x/compute").with("route-path", "/x/schedule");
        assert_eq!(node_of(&routes, &m).as_deref(), Some("correct"));
        // Explicit URLs match at once.
        assert_eq!(
            match_routes(&at("https://example.com/x"), &routes),
            Some(Matched::Explicit("https://example.com/x".into()))
        );
    }

    /// Spec 05 §7.2 vectors: message templates and a fallback route.
    #[test]
    fn map_templates_and_fallback() {
        let mut routes = vec![
            r(
                Value::Message(Message::new().with("other-key", "other-value")),
                "incorrect",
            ),
            r(
                Value::Message(Message::new().with("special-key", "special-value")),
                "correct",
            ),
        ];
        let special = at("/x").with("special-key", "special-value");
        assert_eq!(node_of(&routes, &special).as_deref(), Some("correct"));
        let other = at("/x").with("special-key", "special-value2");
        assert_eq!(node_of(&routes, &other), None);
        routes.push(Message::new().with("node", "fallback"));
        assert_eq!(node_of(&routes, &other).as_deref(), Some("fallback"));
        // Nested templates compare recursively; integers match their text.
        let t = Message::new().with("n", Message::new().with("k", 5i64));
        assert!(map_matches(
            &t,
            &Message::new().with("n", Message::new().with("k", "5").with("x", "y"))
        ));
        assert!(!map_matches(&t, &Message::new().with("n", "5")));
    }

    #[test]
    fn node_rules() {
        let prefix = Value::Message(Message::new().with("prefix", "http://a:1"));
        assert_eq!(
            apply_node(&prefix, "/p/q").unwrap(),
            Value::text("http://a:1/p/q")
        );
        let suffix = Value::Message(Message::new().with("suffix", "?x=1"));
        assert_eq!(apply_node(&suffix, "/p").unwrap(), Value::text("/p?x=1"));
        let replace = Value::Message(
            Message::new()
                .with("match", "^/proxy/([a-z]+)/(.*)$")
                .with("with", "http://\\1.example/\\2&"),
        );
        assert_eq!(
            apply_node(&replace, "/proxy/abc/x").unwrap(),
            Value::text("http://abc.example/x/proxy/abc/x")
        );
        let all = Value::Message(Message::new().with("match", "a").with("with", "b"));
        assert_eq!(apply_node(&all, "/aXa").unwrap(), Value::text("/bXb"));
        let with_opts = Value::Message(
            Message::new()
                .with("prefix", "http://a:1")
                .with("opts", Message::new().with("http_connect_timeout", 100i64)),
        );
        let v = apply_node(&with_opts, "/p").unwrap();
        let m = v.as_message().unwrap();
        assert_eq!(m.get_str("uri"), Some("http://a:1/p"));
        assert!(m.get("opts").is_some());
        assert!(apply_node(&Value::Message(Message::new()), "/p").is_err());
    }

    /// Spec 05 §7.3 vectors: `Nearest` and `By-Base` with base h = 5.
    #[test]
    fn nearest_and_by_base_vectors() {
        let base_text = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAU";
        let base = base_of(&format!("/{base_text}/slot"));
        assert_eq!(base[31], 5);
        assert_eq!(base_of(&format!("/{base_text}~process@1.0/slot")), base);
        let n = |name: &str, wallet: &str| {
            Value::Message(Message::new().with("name", name).with("wallet", wallet))
        };
        let nodes = vec![
            n("n1", &id_text(1)),
            n("n2", &id_text(10)),
            n("n3", "__________________________________________8"),
        ];
        let names = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .map(|n| n.as_message().unwrap().get_str("name").unwrap().to_owned())
                .collect()
        };
        let mut rng = Rng::seeded(1);
        let nearest = choose(2, "Nearest", &base, nodes.clone(), &mut rng).unwrap();
        assert_eq!(names(nearest), ["n1", "n2"]);
        let by_base = choose(2, "By-Base", &base, nodes.clone(), &mut rng).unwrap();
        assert_eq!(names(by_base), ["n3", "n2"]);
        // Distances wrap around the 2^256 field: n3 is 6 away from 5.
        let max = [0xffu8; 32];
        let mut five = [0u8; 32];
        five[31] = 5;
        let d = field_distance(&max, &five);
        assert_eq!(d[31], 6);
        assert!(d[..31].iter().all(|b| *b == 0));
        assert_eq!(field_distance(&five, &five), [0u8; 32]);
        // A non-ID first segment routes by its SHA-256.
        assert_eq!(base_of("/~meta@1.0/info"), Id::sha256(b"~meta@1.0").0);
        assert!(choose(1, "Fastest", &base, nodes, &mut rng).is_err());
    }

    #[test]
    fn random_and_weighted_with_fixed_seeds() {
        let nodes: Vec<Value> = (0..5)
            .map(|i| Value::Message(Message::new().with("i", i as i64).with("weight", i as i64)))
            .collect();
        let idx = |v: &[Value]| -> Vec<i64> {
            v.iter()
                .map(|n| n.as_message().unwrap().get("i").unwrap().as_int().unwrap())
                .collect()
        };
        let base = [0u8; 32];
        // The same seed gives the same choice; no node twice.
        let a = choose(3, "Random", &base, nodes.clone(), &mut Rng::seeded(42)).unwrap();
        let b = choose(3, "Random", &base, nodes.clone(), &mut Rng::seeded(42)).unwrap();
        assert_eq!(idx(&a), idx(&b));
        let mut seen = idx(&a);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        // Every node can come first.
        let mut firsts = std::collections::BTreeSet::new();
        let mut rng = Rng::seeded(7);
        for _ in 0..200 {
            firsts.insert(idx(&choose(1, "Random", &base, nodes.clone(), &mut rng).unwrap())[0]);
        }
        assert_eq!(firsts.len(), 5);
        // By weight: weight 0 is never chosen while others remain; 4 wins most often.
        let mut counts = [0usize; 5];
        let mut rng = Rng::seeded(3);
        for _ in 0..2000 {
            let c = choose(1, "By-Weight", &base, nodes.clone(), &mut rng).unwrap();
            counts[idx(&c)[0] as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!(counts[4] > counts[1] * 2, "{counts:?}");
        let four = choose(4, "By-Weight", &base, nodes.clone(), &mut Rng::seeded(9)).unwrap();
        let mut got = idx(&four);
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4]);
        // More than there are: all of them.
        assert_eq!(
            choose(9, "Random", &base, nodes, &mut Rng::seeded(1))
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn route_results() {
        let routes = vec![
            r(Value::text("^/text/"), "http://verbatim:1/x"),
            Message::new()
                .with("template", "^/map/")
                .with("node", Message::new().with("prefix", "http://b:2")),
            Message::new().with("template", "^/all/").with(
                "nodes",
                Value::list(vec![
                    Value::Message(Message::new().with("prefix", "http://c:3")),
                    Value::Message(Message::new().with("prefix", "http://d:4")),
                ]),
            ),
            Message::new()
                .with("template", "^/two/")
                .with("strategy", "By-Base")
                .with("choose", 2i64)
                .with(
                    "nodes",
                    Value::list(vec![
                        Value::Message(Message::new().with("prefix", "http://c:3")),
                        Value::Message(Message::new().with("prefix", "http://d:4")),
                        Value::Message(Message::new().with("prefix", "http://e:5")),
                    ]),
                ),
            Message::new()
                .with("template", "^/one/")
                .with("strategy", "Random")
                .with(
                    "nodes",
                    Value::list(vec![Value::Message(
                        Message::new().with("prefix", "http://f:6"),
                    )]),
                ),
        ];
        let mut rng = Rng::seeded(1);
        let go = |p: &str, rng: &mut Rng| route(&at(p), &routes, rng);
        assert_eq!(
            go("/text/a", &mut rng).unwrap(),
            Value::text("http://verbatim:1/x")
        );
        assert_eq!(
            go("/map/a?b=c", &mut rng).unwrap(),
            Value::text("http://b:2/map/a?b=c")
        );
        let all = go("/all/z", &mut rng).unwrap();
        let nodes = all.as_message().unwrap().get("nodes").unwrap().clone();
        let Value::List(nodes) = nodes else { panic!() };
        assert_eq!(
            nodes[1].as_message().unwrap().get_str("uri"),
            Some("http://d:4/all/z")
        );
        let two = go("/two/z", &mut rng).unwrap();
        let Some(Value::List(two)) = two.as_message().unwrap().get("nodes").cloned() else {
            panic!()
        };
        assert_eq!(two.len(), 2);
        assert!(two.iter().all(|n| n.as_message().unwrap().contains("uri")));
        assert_eq!(
            go("/one/z", &mut rng).unwrap(),
            Value::text("http://f:6/one/z")
        );
        assert_eq!(go("/none", &mut rng), Err(RouteError::NoMatches));
        assert_eq!(
            go("http://explicit:9/p", &mut rng).unwrap(),
            Value::text("http://explicit:9/p")
        );
    }

    #[test]
    fn routes_from_every_shape() {
        let one = Message::new().with("template", "/a").with("node", "n");
        let list = Value::list(vec![Value::Message(one.clone())]);
        assert_eq!(routes_from(&list).unwrap(), vec![one.clone()]);
        let numbered = Value::Message(Message::new().with("1", one.clone()));
        assert_eq!(routes_from(&numbered).unwrap(), vec![one.clone()]);
        let json = Value::text(r#"[{"template":"/a","node":"n"}]"#);
        assert_eq!(routes_from(&json).unwrap(), vec![one]);
        assert!(routes_from(&Value::text("[1]")).is_err());
        assert!(routes_from(&Value::text("{not json")).is_err());
        assert!(routes_from(&Value::Integer(1)).is_err());
        assert_eq!(routes_from(&Value::text("  ")).unwrap(), vec![]);
    }

    /// Spec 05 §7.4 vector: an operator-signed POST adds a route, sorted by priority.
    #[test]
    fn routes_post_needs_an_owner() {
        let wallet = key1();
        let node = Message::new()
            .with("operator", wallet.address().as_str())
            .with(
                "routes",
                Value::list(vec![Value::Message(
                    Message::new()
                        .with("template", "/some/path")
                        .with("node", "old")
                        .with("priority", 10i64),
                )]),
            );
        let ctx = ctx(node);
        let new = Message::new()
            .with("template", "/some/new/path")
            .with("node", "new")
            .with("priority", 15i64);
        // Unsigned: refused.
        let unsigned = new.clone().with("method", "POST").with("path", "routes");
        let out = routes_key(&unsigned, &ctx);
        assert!(!out.is_ok());
        assert_eq!(
            out.value.as_message().unwrap().get("status"),
            Some(&Value::Integer(403))
        );
        // Signed by someone else: refused. A forged committer: refused.
        let forged = unsigned.clone().with(
            "commitments",
            Message::new().with(
                "x",
                Message::new().with("committer", wallet.address().as_str()),
            ),
        );
        assert!(!routes_key(&forged, &ctx).is_ok());
        // Signed by the operator: added, and sorted by priority.
        let signed = hb_codec::httpsig_commit::commit(&new, &wallet).unwrap();
        let req = signed.with("method", "POST").with("path", "routes");
        let out = routes_key(&req, &ctx);
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(out.value, Value::text("Route added."));
        let routes = node_routes(&ctx).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].get_str("node"), Some("new"));
        assert!(!routes[1].contains("commitments") && !routes[1].contains("method"));
        // A lower priority goes first.
        let first = hb_codec::httpsig_commit::commit(
            &Message::new().with("node", "first").with("priority", 1i64),
            &wallet,
        )
        .unwrap()
        .with("method", "POST");
        assert!(routes_key(&first, &ctx).is_ok());
        let nodes: Vec<_> = node_routes(&ctx)
            .unwrap()
            .iter()
            .map(|r| r.get_str("node").unwrap().to_owned())
            .collect();
        assert_eq!(nodes, ["first", "old", "new"]);
        // GET lists them.
        let got = routes_key(&Message::new().with("method", "GET"), &ctx);
        let Value::List(l) = got.value else { panic!() };
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn route_and_match_keys() {
        let node = Message::new().with(
            "routes",
            r#"[{"template":"/.*/schedule","node":"correct"}]"#,
        );
        let ctx = ctx(node);
        let out = route_key(&Message::new().with("route-path", "/abc/schedule"), &ctx);
        assert_eq!(out.value, Value::text("correct"));
        let miss = route_key(&Message::new().with("route-path", "/abc/other"), &ctx);
        assert_eq!(
            miss.value.as_message().unwrap().get("status"),
            Some(&Value::Integer(404))
        );
        // `match` reads the base's routes.
        let base = Message::new().with(
            "routes",
            Value::list(vec![
                Value::Message(r(Value::text("/x"), "one")),
                Value::Message(r(Value::text("/y"), "two")),
            ]),
        );
        let m = match_key(&base, &Message::new().with("route-path", "/y"), &ctx);
        let m = m.value.as_message().unwrap().clone();
        assert_eq!(m.get_str("node"), Some("two"));
        assert_eq!(m.get_str("reference"), Some("routes/2"));
        assert!(!match_key(&base, &Message::new().with("route-path", "/z"), &ctx).is_ok());
    }

    #[test]
    fn preprocess_relays_matches_and_keeps_the_rest() {
        let node = Message::new().with(
            "routes",
            r#"[{"template":"^/remote/","node":{"prefix":"http://b:1"}}]"#,
        );
        let ctx = ctx(node.clone());
        let list = Value::list(vec![Value::Message(Message::new())]);
        let hook = |path: &str| {
            Message::new()
                .with("request", Message::new().with("path", path))
                .with("body", list.clone())
        };
        let out = preprocess(&hook("/remote/x"), &ctx);
        let Some(Value::List(body)) = out.value.as_message().unwrap().get("body").cloned() else {
            panic!()
        };
        assert_eq!(
            body[0].as_message().unwrap().get_str("device"),
            Some("relay@1.0")
        );
        assert_eq!(
            body[1].as_message().unwrap().get_str("target"),
            Some("body")
        );
        let local = preprocess(&hook("/local"), &ctx);
        assert_eq!(local.value.as_message().unwrap().get("body"), Some(&list));
        let strict = super::tests::ctx(node.with("router_preprocess_default", "error"));
        let refused = preprocess(&hook("/local"), &strict);
        let Some(Value::List(body)) = refused.value.as_message().unwrap().get("body").cloned()
        else {
            panic!()
        };
        assert_eq!(
            body[0].as_message().unwrap().get("status"),
            Some(&Value::Integer(404))
        );
    }

    #[test]
    fn route_provider_is_resolved() {
        let provider = Message::new().with("path", "/test-key/routes").with(
            "test-key",
            Message::new().with(
                "routes",
                Value::list(vec![Value::Message(
                    Message::new()
                        .with("template", "*")
                        .with("node", "testnode"),
                )]),
            ),
        );
        let ctx = ctx(Message::new().with("route_provider", provider));
        let routes = node_routes(&ctx).unwrap();
        assert_eq!(routes[0].get_str("node"), Some("testnode"));
    }

    #[test]
    fn register_checks() {
        let gate = Mutex::new(None);
        let out = register(
            &ctx(Message::new().with("router_registered", true)),
            None,
            &gate,
        );
        assert_eq!(out.value, Value::text("Route already registered."));
        let history = Value::list(vec![Value::Message(Message::new())]);
        let out = register(
            &ctx(Message::new().with("node_history", history.clone())),
            None,
            &gate,
        );
        assert_eq!(
            out.value,
            Value::text(
                "Missing required opts: router_peer_location, router_prefix, router_price, router_template"
            )
        );
        let mut full = Message::new().with("node_history", history);
        for k in REGISTER_OPTS {
            full.insert(k, Value::text("x"));
        }
        // Without a wallet it cannot sign the registration.
        let out = register(&ctx(full.clone()), None, &gate);
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(503)));
        assert_eq!(m.get_str("body"), Some("Failed to register route."));
        // A router that cannot be reached: the reason says so.
        full.insert("router_peer_location", Value::text("http://127.0.0.1:1"));
        full.insert("http_connect_timeout", Value::Integer(200));
        let wallet = key1();
        let out = register(&ctx(full.clone()), Some(&wallet), &gate);
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get_str("body"), Some("Failed to register route."));
        assert!(
            m.get_str("reason").unwrap().contains("cannot be reached"),
            "{m:?}"
        );
        // Straight after: refused without trying (nothing listens at port 1 either
        // way; the reason tells which path answered).
        let out = register(&ctx(full.clone()), Some(&wallet), &gate);
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(429)), "{m:?}");
        assert!(
            m.get_str("reason")
                .unwrap()
                .contains("at least 10000 ms apart"),
            "{m:?}"
        );
        // While an attempt is under way.
        *gate.lock() = None;
        let held = gate.lock();
        let out = register(&ctx(full.clone()), Some(&wallet), &gate);
        drop(held);
        let m = out.value.as_message().unwrap();
        assert_eq!(m.get("status"), Some(&Value::Integer(429)), "{m:?}");
        assert!(m.get_str("reason").unwrap().contains("under way"), "{m:?}");
        // Once the interval has passed, it tries again.
        *gate.lock() = Instant::now().checked_sub(REGISTER_INTERVAL);
        let out = register(&ctx(full), Some(&wallet), &gate);
        let m = out.value.as_message().unwrap();
        assert!(
            m.get_str("reason").unwrap().contains("cannot be reached"),
            "{m:?}"
        );
    }
}
