//! The AO-Core resolution engine (spec 01 §4–§10).
//!
//! [`Ctx::resolve_many`] folds a message list `[Base, Step1, …]` through
//! [`Ctx::resolve_step`], which applies one request to one message in the reference's
//! stage order: special forms, cache lookup, validation, device lookup, execution,
//! sub-resolution, hashpath linking and result caching.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::cache::Cache;
use crate::device::{Call, DefaultHandler, Device, Outcome, Registry, Status};
use crate::hyperpath::PathError;
use crate::id::{Id, b64url};
use crate::structured::CodecError;
use crate::value::{Key, Message, Value, is_id_like, list_to_message, normalize_key};

/// An exception raised during resolution (the reference's `throw`s). Each becomes an
/// HTTP response with [`ResolveError::http_status`] and its text as the body.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ResolveError {
    /// A message names a device this node cannot load.
    #[error("device not loadable: `{name}`: {reason}")]
    DeviceNotLoadable {
        /// The device name as given.
        name: String,
        /// Why.
        reason: String,
    },
    /// A message the request needs (by ID) is not in the cache.
    #[error("Message necessary to resolve request not found: {0}")]
    NecessaryMessageNotFound(String),
    /// A device function failed.
    #[error("{device} could not resolve `{key}`: {reason}")]
    DeviceCall {
        /// The device.
        device: String,
        /// The key being resolved.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A value could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),
    /// The HyperPATH could not be parsed.
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    /// The request ran past its deadline.
    #[error("The request took longer than the node allows ({0} ms).")]
    Timeout(u64),
    /// Resolution nested deeper than the node allows.
    #[error("Request creates infinite recursion (nesting deeper than {0}).")]
    TooDeep(u32),
}

impl ResolveError {
    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            ResolveError::DeviceNotLoadable { .. }
            | ResolveError::BadRequest(_)
            | ResolveError::Codec(_)
            | ResolveError::Path(_) => 400,
            ResolveError::NecessaryMessageNotFound(_) => 404,
            ResolveError::DeviceCall { .. } => 500,
            ResolveError::Timeout(_) => 408,
            ResolveError::TooDeep(_) => 508,
        }
    }

    /// A device-call failure for `key` on `device`.
    pub fn call(device: &str, key: &str, reason: impl Into<String>) -> Self {
        ResolveError::DeviceCall {
            device: device.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Result of a resolution: an outcome, or an exception.
pub type Resolved = Result<Outcome, ResolveError>;

/// What to do with hashpaths of results (option `hashpath`, spec 01 §5.2 stage 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashpathMode {
    /// Record the new hashpath in the result's private area.
    #[default]
    Update,
    /// Leave results as they are.
    Ignore,
    /// Remove any hashpath from results.
    Reset,
}

/// The options of one resolution (the reference's `Opts` entries that the engine reads).
#[derive(Debug, Clone, Copy)]
pub struct ResolveOpts {
    /// Hashpath handling.
    pub hashpath: HashpathMode,
    /// Cache directives of the node (`cache_control`).
    pub cache_control: CacheDirectives,
    /// Turn every step result into a message (`force_message`, spec 01 §5.4).
    pub force_message: bool,
    /// Skip the cache when the key is literally in the base (`cache_lookup_hueristics`).
    pub cache_lookup_heuristics: bool,
    /// How deep resolutions may nest before the request is refused.
    pub max_depth: u32,
    /// How many steps one message list may have.
    pub max_steps: usize,
    /// Whether a message missing from the cache may be fetched from the cache's remote
    /// sources (off for requests that say `cache-control: only-if-cached`, which is
    /// what one node sends another: no request bounces between nodes).
    pub remote_loads: bool,
}

impl Default for ResolveOpts {
    fn default() -> Self {
        ResolveOpts {
            hashpath: HashpathMode::Update,
            cache_control: CacheDirectives::NO_CACHE_NO_STORE,
            force_message: false,
            cache_lookup_heuristics: false,
            max_depth: 64,
            max_steps: 1024,
            remote_loads: true,
        }
    }
}

impl ResolveOpts {
    /// The options of HTTP-originated resolutions: the defaults plus the reference's
    /// `http_extra_opts` (`force_message: true, cache_control: [always]`).
    pub fn http() -> Self {
        ResolveOpts {
            force_message: true,
            cache_control: CacheDirectives::ALWAYS,
            ..Default::default()
        }
    }

    /// The options of internal helper calls: no hashpaths, no caching, no wrapping.
    pub fn internal(&self) -> Self {
        ResolveOpts {
            hashpath: HashpathMode::Ignore,
            cache_control: CacheDirectives::NO_CACHE_NO_STORE,
            force_message: false,
            cache_lookup_heuristics: false,
            max_depth: self.max_depth,
            max_steps: self.max_steps,
            remote_loads: self.remote_loads,
        }
    }
}

/// Everything a resolution needs besides the messages: devices, cache, the node
/// message and the options. Cheap to clone: what every request shares sits behind one
/// reference count.
#[derive(Debug, Clone)]
pub struct Ctx {
    shared: Arc<Shared>,
    /// Options of this resolution.
    pub opts: ResolveOpts,
    depth: u32,
    deadline: Option<(Instant, Duration)>,
    step_hook: Option<Arc<[Message]>>,
    /// The signed request this resolution answers, as the HTTP layer received and
    /// verified it (against the received bytes, derived components included).
    request: Option<Arc<Message>>,
}

/// The parts of a context that every resolution of a node shares.
#[derive(Debug, Clone)]
struct Shared {
    registry: Arc<Registry>,
    cache: Arc<dyn Cache>,
    node: NodeHandle,
    blocking: Option<BlockingHook>,
}

/// How a context runs work that blocks its thread (sleeps, long computations): the
/// HTTP server hands such work to its runtime so that other requests keep flowing.
#[derive(Clone)]
pub struct BlockingHook(pub Arc<BlockingFn>);

/// The function a [`BlockingHook`] holds: it runs the work it is given.
pub type BlockingFn = dyn Fn(&mut dyn FnMut()) + Send + Sync;

impl std::fmt::Debug for BlockingHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockingHook")
    }
}

/// The node message, shared by every request and replaced as a whole on update
/// (`POST ~meta@1.0/info`).
#[derive(Debug, Clone, Default)]
pub struct NodeHandle(Arc<parking_lot::RwLock<Message>>);

impl NodeHandle {
    /// A handle holding `node`.
    pub fn new(node: Message) -> Self {
        NodeHandle(Arc::new(parking_lot::RwLock::new(node)))
    }

    /// The current node message.
    pub fn get(&self) -> Message {
        self.0.read().clone()
    }

    /// Replaces the node message with `f(current)`.
    pub fn update(&self, f: impl FnOnce(&Message) -> Message) {
        let mut guard = self.0.write();
        let next = f(&guard);
        *guard = next;
    }
}

/// The settings derived from cache-control directives (spec 01 §10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheSettings {
    /// Store results.
    pub store: bool,
    /// Look results up.
    pub lookup: bool,
    /// Fail rather than execute on a miss.
    pub only_if_cached: bool,
}

impl CacheSettings {
    /// Applies one source of directives over these settings.
    fn apply(&mut self, d: CacheDirectives) {
        if let Some(store) = d.store {
            self.store = store;
        }
        if let Some(lookup) = d.lookup {
            self.lookup = lookup;
        }
        if d.only_if_cached {
            self.only_if_cached = true;
        }
    }
}

/// The cache-control directives of one source (a message or the node options), parsed
/// (spec 01 §10.1): what each says about storing, looking up and only-if-cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheDirectives {
    /// `always`/`store` => true, `no-store` => false.
    pub store: Option<bool>,
    /// `always`/`cache` => true, `no-cache` => false.
    pub lookup: Option<bool>,
    /// `only-if-cached`.
    pub only_if_cached: bool,
}

impl CacheDirectives {
    /// `[no-cache, no-store]`: neither look up nor store.
    pub const NO_CACHE_NO_STORE: CacheDirectives = CacheDirectives {
        store: Some(false),
        lookup: Some(false),
        only_if_cached: false,
    };
    /// `[always]`: look up and store.
    pub const ALWAYS: CacheDirectives = CacheDirectives {
        store: Some(true),
        lookup: Some(true),
        only_if_cached: false,
    };

    /// Parses directives (case-insensitive; each item may hold several, comma-separated).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Self {
        let mut words: Vec<String> = Vec::new();
        for item in items {
            for w in item.as_ref().split(',') {
                words.push(w.trim().trim_matches('"').to_ascii_lowercase());
            }
        }
        let has = |d: &str| words.iter().any(|x| x == d);
        let mut out = CacheDirectives {
            only_if_cached: has("only-if-cached"),
            ..Default::default()
        };
        if has("always") {
            out.store = Some(true);
            out.lookup = Some(true);
        } else {
            if has("no-store") {
                out.store = Some(false);
            } else if has("store") {
                out.store = Some(true);
            }
            if has("no-cache") {
                out.lookup = Some(false);
            } else if has("cache") {
                out.lookup = Some(true);
            }
        }
        out
    }

    /// The directives of a message's `cache-control` key (a directive or a list).
    pub fn of_message(msg: &Message) -> Self {
        let text = |v: &Value| match v {
            Value::Atom(a) => Some(a.to_string()),
            other => other.as_str().map(str::to_owned),
        };
        match msg.get("cache-control") {
            None => CacheDirectives::default(),
            Some(Value::List(l)) => {
                CacheDirectives::parse(&l.iter().filter_map(text).collect::<Vec<_>>())
            }
            Some(v) => CacheDirectives::parse(&text(v).into_iter().collect::<Vec<_>>()),
        }
    }
}

impl Ctx {
    /// A context with default options.
    pub fn new(registry: Arc<Registry>, cache: Arc<dyn Cache>, node: NodeHandle) -> Self {
        Ctx {
            shared: Arc::new(Shared {
                registry,
                cache,
                node,
                blocking: None,
            }),
            opts: ResolveOpts::default(),
            depth: 0,
            deadline: None,
            step_hook: None,
            request: None,
        }
    }

    /// The same context with the `step` hook handlers of node message `node`
    /// (spec 05 §5).
    pub fn with_step_hooks(&self, node: &Message) -> Ctx {
        let handlers = crate::hook::handlers(node, "step");
        Ctx {
            step_hook: (!handlers.is_empty()).then(|| Arc::from(handlers)),
            ..self.clone()
        }
    }

    /// The same context without a `step` hook (hook handlers run without one).
    pub fn without_step_hook(&self) -> Ctx {
        Ctx {
            step_hook: None,
            request: None,
            ..self.clone()
        }
    }

    /// The devices this node can load.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Where results and messages are cached.
    pub fn cache(&self) -> &dyn Cache {
        self.shared.cache.as_ref()
    }

    /// The node message (what `~meta@1.0/info` shows).
    pub fn node(&self) -> &NodeHandle {
        &self.shared.node
    }

    /// The same context with other options.
    pub fn with_opts(&self, opts: ResolveOpts) -> Ctx {
        Ctx {
            opts,
            ..self.clone()
        }
    }

    /// The same context answering `request`, a signed request whose signatures the
    /// caller verified against the bytes it received (see [`Ctx::request`]).
    pub fn with_request(&self, request: Message) -> Ctx {
        Ctx {
            request: Some(Arc::new(request)),
            ..self.clone()
        }
    }

    /// The signed request this resolution answers, verified as received. A device
    /// that checks a message's signatures may take this as the signed original of a
    /// message with the same commitments: re-encoding cannot always reproduce what a
    /// signer covered (an hbsig client signs `@path`, the request's path, which the
    /// HyperPATH replaces with each step's key).
    pub fn request(&self) -> Option<&Message> {
        self.request.as_deref()
    }

    /// The same context for internal helper calls (spec 01 §11).
    pub fn internal(&self) -> Ctx {
        self.with_opts(self.opts.internal())
    }

    /// The same context with a time limit: resolution stops with
    /// [`ResolveError::Timeout`] once `limit` has passed from now.
    pub fn with_time_limit(&self, limit: Duration) -> Ctx {
        Ctx {
            deadline: Some((Instant::now() + limit, limit)),
            ..self.clone()
        }
    }

    /// The same context with a hook for blocking work.
    pub fn with_blocking_hook(&self, hook: BlockingHook) -> Ctx {
        let shared = Shared {
            blocking: Some(hook),
            ..self.shared.as_ref().clone()
        };
        Ctx {
            shared: Arc::new(shared),
            ..self.clone()
        }
    }

    /// Fails once the deadline has passed.
    pub fn check_deadline(&self) -> Result<(), ResolveError> {
        match self.deadline {
            Some((at, limit)) if Instant::now() >= at => {
                Err(ResolveError::Timeout(limit.as_millis() as u64))
            }
            _ => Ok(()),
        }
    }

    /// Runs work that blocks the thread through the context's blocking hook.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut out: Option<R> = None;
        {
            let mut f = Some(f);
            let mut run = || {
                if let Some(f) = f.take() {
                    out = Some(f());
                }
            };
            if let Some(hook) = &self.shared.blocking {
                (hook.0)(&mut run);
            }
            // Runs the work here if the hook did not (a no-op if it did).
            run();
        }
        match out {
            Some(r) => r,
            None => unreachable!("the work ran above"),
        }
    }

    /// Sleeps (as blocking work), but never past the deadline: a sleep cut short by it
    /// is a [`ResolveError::Timeout`].
    pub fn sleep(&self, d: Duration) -> Result<(), ResolveError> {
        let remaining = self
            .deadline
            .map(|(at, _)| at.saturating_duration_since(Instant::now()));
        let cut = remaining.is_some_and(|r| r < d);
        self.blocking(|| std::thread::sleep(remaining.map_or(d, |r| r.min(d))));
        if cut { self.check_deadline() } else { Ok(()) }
    }

    fn deeper(&self) -> Result<Ctx, ResolveError> {
        if self.depth >= self.opts.max_depth {
            return Err(ResolveError::TooDeep(self.opts.max_depth));
        }
        Ok(Ctx {
            depth: self.depth + 1,
            ..self.clone()
        })
    }

    /// Cache settings for a lookup (sources Msg2 < Msg1 < Opts).
    pub fn lookup_settings(&self, msg1: &Message, msg2: &Message) -> CacheSettings {
        let mut s = CacheSettings::default();
        s.apply(CacheDirectives::of_message(msg2));
        s.apply(CacheDirectives::of_message(msg1));
        s.apply(self.opts.cache_control);
        s
    }

    /// Cache settings for storing (sources Msg2 < Msg3 < Opts). A result that says
    /// `no-store` itself (a scheduler's `slot`: it changes with every message) is never
    /// stored, whatever the node's directives.
    fn store_settings(&self, msg2: &Message, msg3: &Value) -> CacheSettings {
        let mut s = CacheSettings::default();
        s.apply(CacheDirectives::of_message(msg2));
        let mut volatile = false;
        if let Value::Message(m3) = msg3 {
            volatile = is_volatile(m3);
            s.apply(CacheDirectives::of_message(m3));
        }
        s.apply(self.opts.cache_control);
        if volatile || self.opts.hashpath == HashpathMode::Ignore || uncacheable(msg2) {
            s.store = false;
        }
        s
    }

    /// `resolve(Msg1, Msg2)`: splits Msg2's path into parts and runs each as a step
    /// whose request is Msg2 with that one part as its path (spec 01 §4.1).
    pub fn resolve(&self, base: Value, req: Message) -> Resolved {
        let parts = match req.get("path") {
            Some(p) => path_parts(p),
            None => vec![],
        };
        if parts.len() <= 1 {
            return self.resolve_many(vec![base, Value::Message(req)]);
        }
        let mut list = Vec::with_capacity(parts.len() + 1);
        list.push(base);
        for part in parts {
            list.push(Value::Message(req.clone().with("path", part)));
        }
        self.resolve_many(list)
    }

    /// Resolves a key path (`a/b/c`) on a message, as `hb_ao:get` does: `Some` value on
    /// success, `None` on any error.
    pub fn get(&self, path: &str, base: &Message) -> Option<Value> {
        let ctx = self.internal();
        match ctx.resolve(
            Value::Message(base.clone()),
            Message::new().with("path", path),
        ) {
            Ok(o) if o.is_ok() => Some(o.value),
            _ => None,
        }
    }

    /// Sets one key through the base's device (the device-aware `set`, spec 01 §9).
    pub fn set(&self, base: &Message, key: &str, value: Value) -> Result<Message, ResolveError> {
        let req = if key == "path" {
            Message::new().with("path", "set_path").with("value", value)
        } else {
            Message::new().with("path", "set").with(key, value)
        };
        self.set_with(base, req)
    }

    /// Sets every key of `values` on `base` through the base's device.
    pub fn set_many(&self, base: &Message, values: &Message) -> Result<Message, ResolveError> {
        let req: Message = values
            .public()
            .filter(|(k, _)| k.as_ref() != "path")
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(std::iter::once((Key::from("path"), Value::text("set"))))
            .collect();
        self.set_with(base, req)
    }

    fn set_with(&self, base: &Message, req: Message) -> Result<Message, ResolveError> {
        // An internal step (no cache, no hashpath, no wrapping) is exactly the device
        // call: make it directly.
        let ctx = self.internal().deeper()?;
        let out = ctx.call_device(base, &req, "set")?;
        match out {
            Outcome {
                status: Status::Ok,
                value: Value::Message(m),
            } => Ok(m),
            other => Err(ResolveError::call(
                "message@1.0",
                "set",
                format!("set failed: {:?}", other.value),
            )),
        }
    }

    /// Folds a message list through the engine (spec 01 §4 `resolve_many`).
    pub fn resolve_many(&self, list: Vec<Value>) -> Resolved {
        if list.len() > self.opts.max_steps {
            return Err(ResolveError::BadRequest(format!(
                "the path has {} steps; this node resolves at most {}",
                list.len(),
                self.opts.max_steps
            )));
        }
        let ctx = self.deeper()?;
        let mut items = list.into_iter();
        let Some(first) = items.next() else {
            return Err(ResolveError::BadRequest(
                "empty path: nothing to resolve".into(),
            ));
        };
        let mut rest = items.peekable();
        if rest.peek().is_none() {
            return ctx.resolve_single(first);
        }
        let mut current = first;
        for req in rest {
            let out = ctx.resolve_step(current, req)?;
            if !out.is_ok() {
                return Ok(out);
            }
            current = out.value;
        }
        Ok(Outcome::ok(current))
    }

    /// A one-element list. The reference returns the element unevaluated; we evaluate
    /// the forms that describe a message (see docs/COMPATIBILITY.md).
    fn resolve_single(&self, item: Value) -> Resolved {
        match item {
            Value::Binary(ref b) if is_id_like(b) => Ok(match self.load(b) {
                Some(m) => Outcome::ok(m),
                None => Outcome::not_found(),
            }),
            Value::Resolve(steps) => self.resolve_many(steps.as_ref().clone()),
            Value::As(..) => self.normalise_base(item),
            other => Ok(Outcome::ok(other)),
        }
    }

    /// Loads a message by ID-like binary from the cache, or from the cache's remote
    /// sources (off the async workers: it may wait on the network).
    pub fn load(&self, id: &[u8]) -> Option<Message> {
        let id = Id::from_human(id)?;
        self.cache().read_message(&id).or_else(|| {
            self.opts
                .remote_loads
                .then(|| self.blocking(|| self.cache().fetch_remote(&id)))
                .flatten()
        })
    }

    /// Stage 1 rules 1–3 and 5 for a base: evaluates `{as, …}` and `{resolve, …}`.
    fn normalise_base(&self, msg1: Value) -> Resolved {
        match msg1 {
            Value::As(dev, inner) => match *inner {
                Value::Binary(ref id) if is_id_like(id) => {
                    let inner = Message::new().with("path", Value::Binary(id.clone()));
                    self.normalise_base(Value::As(dev, Box::new(Value::Message(inner))))
                }
                Value::Message(ref params)
                    if params
                        .get("path")
                        .and_then(Value::as_bytes)
                        .is_some_and(is_id_like) =>
                {
                    let id = params
                        .get("path")
                        .and_then(Value::as_bytes)
                        .unwrap_or_default();
                    let loaded = self.load(id).ok_or_else(|| {
                        ResolveError::NecessaryMessageNotFound(
                            String::from_utf8_lossy(id).into_owned(),
                        )
                    })?;
                    let mut merged = loaded;
                    for (k, v) in params.iter().filter(|(k, _)| k.as_ref() != "path") {
                        merged.insert_key(k.clone(), v.clone());
                    }
                    let merged = self.set(&merged, "device", Value::text(&dev))?;
                    Ok(Outcome::ok(merged))
                }
                other => self.subresolve(Value::Message(Message::new()), Some(&dev), other),
            },
            Value::Resolve(steps) => self.resolve_many(steps.as_ref().clone()),
            other => Ok(Outcome::ok(other)),
        }
    }

    /// `subresolve(Base, Dev, Req)` (spec 01 §7.2).
    pub fn subresolve(&self, base: Value, dev: Option<&str>, req: Value) -> Resolved {
        let req = match req {
            Value::Message(m) => m,
            other => Message::new().with("path", other),
        };
        let mut base = match base {
            Value::Binary(ref id) if is_id_like(id) => self.load(id).ok_or_else(|| {
                ResolveError::NecessaryMessageNotFound(String::from_utf8_lossy(id).into_owned())
            })?,
            Value::Message(m) => m,
            Value::List(l) => list_to_message(&l),
            other => return Ok(Outcome::ok(other)),
        };
        let has_path = match req.get("path") {
            None => false,
            Some(Value::Binary(b)) => !b.is_empty(),
            Some(_) => true,
        };
        if let Some(dev) = dev {
            // The common `/~message@1.0&k=v…` base: both device-aware sets below would be
            // message@1.0's own `set` on an empty message; make the one call directly.
            if !has_path && base.is_empty() && normalize_key(dev) == "message@1.0" {
                let base = Message::new().with("device", Value::text(dev));
                return Ok(Outcome::ok(crate::message::set(&base, &req)));
            }
            base = self.set(&base, "device", Value::text(dev))?;
        }
        if !has_path {
            if req.public().any(|(k, _)| k.as_ref() != "path") {
                base = self.set_many(&base, &req)?;
            }
            return Ok(Outcome::ok(base));
        }
        self.resolve(Value::Message(base), req)
    }

    /// Applies one request to one message (spec 01 §5): Msg1 + Msg2 → Msg3.
    pub fn resolve_step(&self, msg1: Value, msg2: Value) -> Resolved {
        self.check_deadline()?;
        let ctx = self.deeper()?;
        // Stage 1: special forms.
        if let Value::As(dev, inner) = msg2 {
            let req = match *inner {
                Value::Message(m) => Value::Message(m),
                other => Value::Message(Message::new().with("path", other)),
            };
            let base = match msg1 {
                Value::As(..) | Value::Resolve(_) => match ctx.normalise_base(msg1)? {
                    o if o.is_ok() => o.value,
                    o => return Ok(o),
                },
                other => other,
            };
            return ctx.subresolve(base, Some(&dev), req);
        }
        let msg1 = match msg1 {
            Value::As(..) | Value::Resolve(_) => match ctx.normalise_base(msg1)? {
                o if o.is_ok() => o.value,
                o => return Ok(o),
            },
            other => other,
        };
        let msg2 = match msg2 {
            Value::Resolve(steps) => {
                let mut opts = ctx.opts;
                opts.force_message = false;
                match ctx.with_opts(opts).resolve_many(steps.as_ref().clone())? {
                    o if o.is_ok() => o.value,
                    o => return Ok(o),
                }
            }
            other => other,
        };
        let msg1 = match msg1 {
            Value::List(l) => Value::Message(list_to_message(&l)),
            other => other,
        };
        let msg2 = match msg2 {
            Value::Message(m) => m,
            other => Message::new().with("path", other),
        };
        ctx.execute(msg1, msg2)
    }

    /// Stages 2–10 of a step, after the special forms are settled.
    fn execute(&self, msg1: Value, msg2: Message) -> Resolved {
        let mut link: Option<StepLink> = None;
        // Stage 2: cache lookup.
        // A base that says `no-store` (a scheduler's `slot`, a status) is volatile: what
        // is read from it is neither looked up nor stored, or it would be read stale.
        let volatile = matches!(&msg1, Value::Message(m1) if is_volatile(m1));
        let (lookup, only_if_cached) = match &msg1 {
            Value::Message(m1) => {
                let s = self.lookup_settings(m1, &msg2);
                let heuristic_skip = self.opts.cache_lookup_heuristics
                    && !s.only_if_cached
                    && msg2
                        .get("path")
                        .and_then(Value::as_str)
                        .is_some_and(|k| m1.contains(k));
                (s.lookup && !heuristic_skip && !volatile, s.only_if_cached)
            }
            _ => {
                let s = self.lookup_settings(&Message::new(), &msg2);
                (s.lookup, s.only_if_cached)
            }
        };
        let mut msg1 = msg1;
        if lookup {
            let l = link_step(&msg1, &msg2)?;
            // POSTs and signed requests are not served from the result cache (see
            // `uncacheable`); an ID base is still loaded.
            if !uncacheable(&msg2)
                && let Some(hit) = self.cache().read_result(&l.hashpath)
            {
                return Ok(Outcome::ok(hit));
            }
            if only_if_cached {
                return Ok(Outcome::error(
                    Message::new()
                        .with("status", 504i64)
                        .with("cache-status", "miss")
                        .with("body", "Computed result not available in cache."),
                ));
            }
            if let Value::Binary(id) = &msg1
                && is_id_like(id)
            {
                match self.load(id) {
                    Some(m) => msg1 = Value::Message(m),
                    None => {
                        return Ok(Outcome::error_status(
                            404,
                            "Necessary messages not found in cache.",
                        ));
                    }
                }
            } else {
                link = Some(l);
            }
        }
        // Stage 3: validation.
        let Value::Message(msg1) = msg1 else {
            return Ok(Outcome::not_found());
        };
        // Stages 5–6: device lookup and execution.
        let key = match msg2.get("path") {
            Some(p) => path_parts(p).into_iter().next().unwrap_or_default(),
            None => String::new(),
        };
        let mut out = self.call_device(&msg1, &msg2, &key)?;
        if self.opts.force_message {
            out = force_message(out);
        }
        // Stage 7: the step hook sees the step and may replace its result.
        if let Some(handlers) = &self.step_hook {
            let req = Message::new()
                .with("base", msg1.clone())
                .with("request", msg2.clone())
                .with("status", Value::atom(out.status.as_str()))
                .with("body", out.value);
            let hooked = crate::hook::run(self, "step", handlers, req)?;
            out = match hooked {
                Outcome {
                    status: Status::Ok,
                    value: Value::Message(m),
                } => {
                    let status = m
                        .get("status")
                        .and_then(Value::as_atom)
                        .map_or(Status::Ok, Status::from_atom);
                    let value = m
                        .get("body")
                        .cloned()
                        .unwrap_or_else(|| Value::atom("undefined"));
                    Outcome { status, value }
                }
                other => return Ok(other),
            };
        }
        // Stage 8: sub-resolution.
        if out.is_ok()
            && let Value::Resolve(steps) = &out.value
        {
            let steps = steps.as_ref().clone();
            out = self.resolve_many(steps)?;
        }
        // Stage 9: cryptographic linking.
        if let Value::Message(m3) = &mut out.value {
            if out.status == Status::Ok {
                match self.opts.hashpath {
                    HashpathMode::Update => {
                        let l = match link.take() {
                            Some(l) => l,
                            None => link_step(&Value::Message(msg1.clone()), &msg2)?,
                        };
                        m3.set_private("hashpath", Value::from(l.hashpath.clone()));
                        link = Some(l);
                    }
                    HashpathMode::Reset => m3.remove_private("hashpath"),
                    HashpathMode::Ignore => {}
                }
            } else {
                m3.remove_private("hashpath");
            }
        }
        // What is read from a volatile message is volatile too: its hashpath is as
        // blind to the moment as its base's.
        if volatile && let Value::Message(m3) = &mut out.value {
            mark_volatile(m3);
        }
        // Stage 10: result caching.
        if out.is_ok() && !volatile && self.store_settings(&msg2, &out.value).store {
            let l = match link {
                Some(l) => l,
                None => link_step(&Value::Message(msg1.clone()), &msg2)?,
            };
            self.store_step(&msg1, &msg2, &l, &out.value);
        }
        Ok(out)
    }

    /// Stage 10 (spec 01 §10.3): the result under its hashpath, and the messages by ID.
    /// A base that carries a hashpath was itself the stored result of an earlier step,
    /// and a request of only `path` is spelled out in the hashpath: neither is written
    /// again.
    fn store_step(&self, msg1: &Message, msg2: &Message, link: &StepLink, result: &Value) {
        if let Some(id) = link.msg1_id {
            self.cache().write_message(id, msg1);
        }
        if let Some(id) = link.msg2_id {
            self.cache().write_message(id, msg2);
        }
        // A literal wrapped for transport (`ao-result`) is kept by hashpath only: it is
        // not a message anyone will load by ID.
        if let Value::Message(m3) = result
            && !m3.contains("ao-result")
            && let Ok(id) = id_of(m3)
        {
            self.cache().write_message(id, m3);
        }
        self.cache().write_result(&link.hashpath, result);
    }

    /// The device of a message (spec 01 §3.1).
    pub fn device_of(&self, msg: &Message) -> Result<Arc<dyn Device>, ResolveError> {
        match msg.get_ci("device") {
            None => self.device_named("message@1.0"),
            Some(v) => {
                let name = match v {
                    Value::Binary(_) => v.as_str().map(str::to_owned),
                    Value::Atom(a) => Some(a.to_string()),
                    _ => None,
                };
                match name {
                    Some(n) if is_id_like(n.as_bytes()) => Err(ResolveError::DeviceNotLoadable {
                        name: n,
                        reason: "loading devices by ID is not supported by this node".into(),
                    }),
                    Some(n) => self.device_named(&n),
                    None => Err(ResolveError::DeviceNotLoadable {
                        name: format!("{v:?}"),
                        reason: "a device is named by text such as `message@1.0`".into(),
                    }),
                }
            }
        }
    }

    fn device_named(&self, name: &str) -> Result<Arc<dyn Device>, ResolveError> {
        self.registry()
            .get(name)
            .cloned()
            .ok_or_else(|| ResolveError::DeviceNotLoadable {
                name: name.to_owned(),
                reason: "not a preloaded device of this node".into(),
            })
    }

    /// Finds the function for `key` (spec 01 §3.3) and calls it.
    fn call_device(&self, msg1: &Message, msg2: &Message, key: &str) -> Resolved {
        let norm = normalize_key(key);
        let mut dev = self.device_of(msg1)?;
        for _ in 0..8 {
            let info = dev.info(msg1);
            let exported = info.is_exported(&norm);
            if exported {
                if info.handler {
                    return dev.call(Call::Handler(&norm), msg1, msg2, self);
                }
                // Function names are keys with `-` read as `_` (spec 01 §3.3).
                let named = |f: &&&str| {
                    f.len() == norm.len()
                        && f.bytes()
                            .zip(norm.bytes())
                            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
                };
                if let Some(f) = dev.functions().iter().find(named) {
                    return dev.call(Call::Function(f), msg1, msg2, self);
                }
                match info.default {
                    DefaultHandler::Function => {
                        return dev.call(Call::Default(&norm), msg1, msg2, self);
                    }
                    DefaultHandler::Device(name) => {
                        dev = self.device_named(&name)?;
                        continue;
                    }
                    DefaultHandler::None => {}
                }
            }
            if dev.name() == "message@1.0" {
                return Err(ResolveError::call(
                    "message@1.0",
                    key,
                    "default device could not resolve key",
                ));
            }
            dev = self.device_named("message@1.0")?;
        }
        Err(ResolveError::call(
            dev.name(),
            key,
            "device default chain is too long",
        ))
    }
}

/// `set(Msg1, Path, Value)` (spec 01 §9): sets a value at a `/`-separated key path,
/// through the device of every message on the way; missing levels become messages.
pub fn deep_set(
    ctx: &Ctx,
    base: &Message,
    path: &str,
    value: Value,
) -> Result<Message, ResolveError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    deep_set_parts(ctx, base, &parts, value)
}

fn deep_set_parts(
    ctx: &Ctx,
    base: &Message,
    parts: &[&str],
    value: Value,
) -> Result<Message, ResolveError> {
    match parts {
        [] => match value {
            Value::Message(m) => ctx.set_many(base, &m),
            other => Err(ResolveError::BadRequest(format!(
                "cannot set a {} at the root",
                other.type_name()
            ))),
        },
        [key] => ctx.set(base, key, value),
        [key, rest @ ..] => match ctx.get(key, base) {
            Some(Value::Message(inner)) => {
                let inner = deep_set_parts(ctx, &inner, rest, value)?;
                let req = Message::new()
                    .with("path", "set")
                    .with("set-mode", "explicit")
                    .with(key, inner);
                ctx.set_with(base, req)
            }
            _ => {
                let inner = deep_set_parts(ctx, &Message::new(), rest, value)?;
                Ok(base.clone().with(key, inner))
            }
        },
    }
}

/// `force_message` (spec 01 §5.4): every step result becomes a message.
pub fn force_message(out: Outcome) -> Outcome {
    let value = match out.value {
        Value::List(l) => Value::Message(list_to_message(&l)),
        v @ Value::Resolve(_) => v,
        Value::Message(m) => {
            let exactly_status_body = m.len() == 2 && m.contains("status") && m.contains("body");
            if exactly_status_body
                && m.get("status").and_then(Value::as_atom) == Some(out.status.as_str())
            {
                Value::Message(m.with("ao-result", "body"))
            } else {
                Value::Message(m)
            }
        }
        other => Value::Message(Message::new().with("ao-result", "body").with("body", other)),
    };
    Outcome {
        status: out.status,
        value,
    }
}

/// Splits a request path into parts (spec 01 §4.1 / 02 §6): `/`-separated, empty parts
/// dropped; a list is flattened; other values become their text.
pub fn path_parts(path: &Value) -> Vec<String> {
    match path {
        Value::Binary(b) => String::from_utf8_lossy(b)
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::List(l) => l.iter().flat_map(path_parts).collect(),
        Value::Atom(a) => vec![a.to_string()],
        Value::Integer(i) => vec![i.to_string()],
        _ => vec![],
    }
}

/// The ID of a message as hashpaths use it. Requests may carry in-flight values
/// (`k=(sub/path)`), which have no wire form: they count as their HyperPATH text.
pub fn id_of(msg: &Message) -> Result<Id, ResolveError> {
    Ok(crate::httpsig::message_id(
        &crate::hyperpath::settle_inflight(msg),
    )?)
}

/// The private key that marks a message as volatile: see [`mark_volatile`].
const VOLATILE: &str = "volatile";

/// Marks `msg` as volatile: a device's answer that stands for a moment rather than for
/// its request (a process's `now`, whose hashpath is the same at every slot). Neither
/// it nor anything read from it is looked up in or stored to the result cache. The
/// mark lives in the private area, so the message's IDs and encodings do not change.
pub fn mark_volatile(msg: &mut Message) {
    msg.set_private(VOLATILE, Value::atom("true"));
}

/// Whether `msg` is volatile: marked by [`mark_volatile`], or saying `no-store` itself
/// (a scheduler's `slot`, a status).
pub fn is_volatile(msg: &Message) -> bool {
    msg.get_private(VOLATILE).is_some() || CacheDirectives::of_message(msg).store == Some(false)
}

/// Whether a step's result is kept out of the result cache (neither read nor written):
/// a `POST` asks for an effect (a new slot, a write), which an earlier result must not
/// stand for when the same request comes again; and a signed request's ID (so the
/// step's hashpath) covers only its committed keys, so two steps that differ in an
/// uncommitted key (the unsigned `path` of an aoconnect request, spec 07 §7) would
/// share a hashpath.
fn uncacheable(msg2: &Message) -> bool {
    is_post(msg2) || has_commitments(msg2)
}

fn is_post(msg2: &Message) -> bool {
    msg2.get_str("method")
        .is_some_and(|m| m.eq_ignore_ascii_case("post"))
}

fn has_commitments(msg2: &Message) -> bool {
    msg2.get("commitments")
        .and_then(Value::as_message)
        .is_some_and(|c| !c.is_empty())
}

/// hashpath(Msg) (spec 01 §8.2).
pub fn hashpath_of(msg: &Value) -> Result<String, ResolveError> {
    match msg {
        Value::Binary(b) => Ok(b64url(&Id::sha256(b).0)),
        Value::Message(m) => match m.hashpath() {
            Some(hp) => Ok(hp.to_owned()),
            None => Ok(id_of(m)?.to_human()),
        },
        Value::List(l) => hashpath_of(&Value::Message(list_to_message(l))),
        other => Err(ResolveError::BadRequest(format!(
            "cannot compute the hashpath of a {}",
            other.type_name()
        ))),
    }
}

/// hashpath(Msg1, Msg2) (spec 01 §8.3).
pub fn hashpath_of_step(msg1: &Value, msg2: &Message) -> Result<String, ResolveError> {
    Ok(link_step(msg1, msg2)?.hashpath)
}

/// A step's hashpath, with the message IDs computed on the way (so that storing the
/// step does not compute them again).
#[derive(Debug, Clone)]
pub struct StepLink {
    /// hashpath(Msg1, Msg2).
    pub hashpath: String,
    /// The ID of Msg1, when its hashpath was its ID.
    pub msg1_id: Option<Id>,
    /// The ID of Msg2, when it carries keys besides `path`.
    pub msg2_id: Option<Id>,
}

/// Computes hashpath(Msg1, Msg2) (spec 01 §8.3).
pub fn link_step(msg1: &Value, msg2: &Message) -> Result<StepLink, ResolveError> {
    let mut msg1_id = None;
    let hp1 = match msg1 {
        Value::Message(m) if m.hashpath().is_none() => {
            let id = id_of(m)?;
            msg1_id = Some(id);
            id.to_human()
        }
        other => hashpath_of(other)?,
    };
    let only_path = msg2
        .keys()
        .all(|k| matches!(k.as_ref(), "path" | "hashpath" | "priv"));
    let mut msg2_id = None;
    let right = match msg2.get("path") {
        Some(p) if only_path => path_parts(p).into_iter().next().unwrap_or_default(),
        _ => {
            let id = id_of(msg2)?;
            msg2_id = Some(id);
            id.to_human()
        }
    };
    let alg = match msg1 {
        Value::Message(m) => m
            .get("hashpath-alg")
            .and_then(Value::as_str)
            .unwrap_or("sha-256-chain"),
        _ => "sha-256-chain",
    };
    let left = match hp1.split_once('/') {
        None => hp1,
        Some((p1, p2)) => {
            let a = Id::from_human(p1.as_bytes()).ok_or_else(|| {
                ResolveError::BadRequest(format!("hashpath `{hp1}` does not start with an ID"))
            })?;
            let b = match Id::from_human(p2.as_bytes()).filter(|_| p2.len() == 43) {
                Some(id) => id.0.to_vec(),
                None => p2.as_bytes().to_vec(),
            };
            mix(alg, &a, &b)?.to_human()
        }
    };
    Ok(StepLink {
        hashpath: format!("{left}/{right}"),
        msg1_id,
        msg2_id,
    })
}

/// The hashpath mixing functions (spec 01 §8.3).
pub fn mix(alg: &str, a: &Id, b: &[u8]) -> Result<Id, ResolveError> {
    let mut buf = Vec::with_capacity(32 + b.len());
    buf.extend_from_slice(&a.0);
    buf.extend_from_slice(b);
    let chained = Id::sha256(&buf);
    match alg {
        "sha-256-chain" => Ok(chained),
        "accumulate-256" => {
            // (A + chain(A, B)) mod 2^256, big-endian.
            let mut out = [0u8; 32];
            let mut carry = 0u16;
            for i in (0..32).rev() {
                let s = a.0[i] as u16 + chained.0[i] as u16 + carry;
                out[i] = (s & 0xff) as u8;
                carry = s >> 8;
            }
            Ok(Id(out))
        }
        other => Err(ResolveError::BadRequest(format!(
            "unknown hashpath-alg `{other}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checklist_01_13_sha256_chain() {
        let mut a = [0u8; 32];
        a[31] = 1;
        let mut b = [0u8; 32];
        b[31] = 2;
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert_eq!(
            mix("sha-256-chain", &Id(a), &b).ok(),
            Some(Id::sha256(&both))
        );
    }

    #[test]
    fn checklist_01_22_cache_control_precedence() {
        assert_eq!(
            CacheDirectives::parse(&["no-cache", "no-store"]),
            CacheDirectives::NO_CACHE_NO_STORE
        );
        assert_eq!(CacheDirectives::parse(&["Always"]), CacheDirectives::ALWAYS);
        let d = |s: &[&str]| CacheDirectives::parse(s);
        // Msg2 no-store, Msg3 no-cache, Opts always -> store and lookup.
        let mut s = CacheSettings::default();
        s.apply(d(&["no-store"]));
        s.apply(d(&["no-cache"]));
        s.apply(d(&["always"]));
        assert_eq!((s.store, s.lookup), (true, true));
        // Msg2 always, Msg3 no-store, Opts [] -> store false, lookup true.
        let mut s = CacheSettings::default();
        s.apply(d(&["always"]));
        s.apply(d(&["no-store"]));
        s.apply(d(&[]));
        assert_eq!((s.store, s.lookup), (false, true));
        let mut s = CacheSettings::default();
        s.apply(d(&["only-if-cached"]));
        assert_eq!((s.store, s.lookup, s.only_if_cached), (false, false, true));
        assert_eq!(
            CacheSettings::default(),
            CacheSettings {
                store: false,
                lookup: false,
                only_if_cached: false
            }
        );
    }

    #[test]
    fn path_parts_split() {
        assert_eq!(path_parts(&Value::text("a//b/")), vec!["a", "b"]);
        assert!(path_parts(&Value::text("/")).is_empty());
        let l = Value::list(vec![
            Value::text("a"),
            Value::list(vec![Value::text("b"), Value::text("//b")]),
            Value::text("c"),
        ]);
        assert_eq!(path_parts(&l), vec!["a", "b", "b", "c"]);
    }
}
