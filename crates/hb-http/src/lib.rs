//! # hb-http
//!
//! The HTTP face of a node (spec 05 §2): each request becomes a singleton message, the
//! HyperPATH parser turns it into a message list, the engine resolves it, and the result
//! becomes a response (httpsig headers and body by default, JSON when asked).
//!
//! Untrusted input is bounded everywhere: the request head, the path, the body and the
//! time a request may take. Every refusal is a 4xx response whose body says why.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use hb_core::device::{Outcome, Status};
use hb_core::{BlockingHook, Ctx, Message, ResolveError, ResolveOpts, Value, hook};

pub mod reply;
pub mod request;
pub mod sign;

pub use sign::Signer;

/// Limits and timeouts of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request head (request line plus headers) answered with a message; a head
    /// larger than four times this is cut off by the protocol layer.
    pub max_head_bytes: usize,
    /// Largest request target (path plus query).
    pub max_path_bytes: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed to receive a request head.
    pub header_timeout: Duration,
    /// Time allowed for a whole request, body and resolution included.
    pub request_timeout: Duration,
    /// Where `GET /` redirects to.
    pub default_req: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_head_bytes: 64 * 1024,
            max_path_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            default_req: "/~meta@1.0/info".into(),
        }
    }
}

/// A node's HTTP service: the resolution context plus the server limits.
#[derive(Debug, Clone)]
pub struct Service {
    ctx: Ctx,
    config: Arc<ServerConfig>,
    /// Signs every reply; `None` only for nodes without a wallet (tests).
    signer: Option<Arc<Signer>>,
}

impl Service {
    /// A service resolving with `ctx` (its options are replaced by the HTTP options).
    pub fn new(ctx: Ctx, config: ServerConfig) -> Self {
        let opts = ResolveOpts {
            max_depth: ctx.opts.max_depth,
            max_steps: ctx.opts.max_steps,
            ..ResolveOpts::http()
        };
        Service {
            ctx: ctx.with_opts(opts).with_blocking_hook(blocking_hook()),
            config: Arc::new(config),
            signer: None,
        }
    }

    /// The same service, signing every reply with `wallet` (spec 05 §2.4 step 8).
    #[must_use]
    pub fn with_wallet(mut self, wallet: Arc<hb_codec::Wallet>) -> Self {
        self.signer = Some(Arc::new(Signer::new(wallet)));
        self
    }

    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let timeout = self.config.request_timeout;
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            (
                std::time::Instant::now(),
                req.method().clone(),
                req.uri().to_string(),
            )
        });
        let resp = match tokio::time::timeout(timeout, self.handle_inner(req)).await {
            Ok(resp) => resp,
            Err(_) => reply::plain_error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "The request took longer than the node allows ({} ms).",
                    timeout.as_millis()
                ),
            ),
        };
        if let Some((started, method, target)) = logged {
            let elapsed_us = started.elapsed().as_micros() as u64;
            let status = resp.status().as_u16();
            tracing::debug!(%method, %target, status, elapsed_us, "request");
        }
        resp
    }

    async fn handle_inner(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() == Method::OPTIONS {
            return reply::options();
        }
        if let Err((code, why)) = request::check_head(&req, &self.config) {
            return reply::plain_error(code, &why);
        }
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if (target == "/" || target.is_empty()) && req.method() == Method::GET {
            return reply::redirect(&self.config.default_req);
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.config.max_body_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_big {
                    reply::plain_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!(
                            "The request body is larger than {} bytes.",
                            self.config.max_body_bytes
                        ),
                    )
                } else {
                    reply::plain_error(
                        StatusCode::BAD_REQUEST,
                        &format!("The request body could not be read: {e}"),
                    )
                };
            }
        };
        let singleton = match request::to_singleton(&parts, &target, body) {
            Ok(s) => s,
            Err(e) => return reply::plain_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        // Resolution is CPU work of a few microseconds: it runs here, on the async worker,
        // because handing it to another thread costs more than it does. Devices that
        // block (sleeps, long computations) go through the context's blocking hook, and
        // the deadline bounds the whole resolution.
        let node = self.ctx.node().get();
        let mut ctx = self
            .ctx
            .with_time_limit(self.config.request_timeout)
            .with_step_hooks(&node);
        // `only-if-cached` (what one node sends another): answer from this node's store
        // alone, never from its remote sources, so a miss cannot bounce between nodes.
        // A signed request, verified as received: devices that check signatures may
        // rely on it where re-encoding cannot reproduce what was signed (`@path`).
        if !hb_core::message::committers_of(&singleton).is_empty() {
            ctx = ctx.with_request(singleton.clone());
        }
        if hb_core::resolve::CacheDirectives::of_message(&singleton).only_if_cached {
            ctx = ctx.with_opts(ResolveOpts {
                remote_loads: false,
                ..ctx.opts
            });
        }
        let (outcome, halted) = match resolve_request(&ctx, &node, &singleton) {
            Ok(Step::Halted(out)) => (Ok(out), true),
            Ok(Step::Resolved(out)) => (Ok(out), false),
            Err(e) => (Err(e), false),
        };
        let mut result = reply::result_message(outcome);
        // The `response` hook sees the result and may replace it (spec 05 §2.4 step 7);
        // a request the `request` hook halted is answered as it is.
        let handlers = hook::handlers(&node, "response");
        if !handlers.is_empty() && !halted {
            let req = Message::new()
                .with("request", singleton.clone())
                .with("body", result);
            result = match hook::run(&ctx, "response", &handlers, req) {
                Ok(Outcome {
                    status: Status::Ok,
                    value: Value::Message(m),
                }) => reply::result_message(Ok(Outcome::ok(
                    m.get("body")
                        .cloned()
                        .unwrap_or(Value::Message(Message::new())),
                ))),
                other => reply::result_message(other),
            };
        }
        let codec = reply::choose_codec(&singleton, &parts.headers);
        let signer = self.signer.as_deref().map(|s| (s, &ctx));
        reply::encode(&result, codec, signer)
    }
}

/// How a request ended before its reply.
enum Step {
    /// The `request` hook stopped it with this result.
    Halted(Outcome),
    /// It was resolved.
    Resolved(Outcome),
}

/// Parses a request's singleton, runs the node's `request` hook on the message list
/// (spec 05 §2.4 step 3), then resolves it.
fn resolve_request(ctx: &Ctx, node: &Message, singleton: &Message) -> Result<Step, ResolveError> {
    match hook::request_list(ctx, node, singleton)? {
        Ok(list) => ctx.resolve_many(list).map(Step::Resolved),
        Err(halted) => Ok(Step::Halted(halted)),
    }
}

/// Blocking work on a multi-threaded runtime moves the runtime's other tasks off this
/// thread first; elsewhere it simply runs.
fn blocking_hook() -> BlockingHook {
    BlockingHook(Arc::new(|work: &mut dyn FnMut()| {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(work);
        } else {
            work();
        }
    }))
}

/// A running server: its address, and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    /// The address the server listens on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (it runs until [`Running::stop`] or a fatal error).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Starts serving on an already bound listener.
pub fn serve(listener: TcpListener, service: Service) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let header_timeout = service.config.header_timeout;
    // The protocol layer's own limits sit above ours, so that requests between the two
    // get an answer that says which limit they passed.
    let max_buf = service.config.max_head_bytes.saturating_mul(4).max(8192);
    let max_headers = service.config.max_headers.saturating_mul(4).max(16);
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let svc = service.clone();
            tokio::spawn(async move {
                let handler = service_fn(move |req| {
                    let svc = svc.clone();
                    async move { Ok::<_, Infallible>(svc.handle(req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(max_buf)
                    .max_headers(max_headers)
                    .serve_connection(TokioIo::new(stream), handler);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(Running { addr, stop, task })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use hb_core::{MemoryCache, NodeHandle};

    const PID: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";

    /// A node message with routes none of [`local_paths`] matches, and `hook` as its
    /// `request` hook.
    fn node(hook: Option<Message>) -> Message {
        let routes =
            r#"[{"template":"/.*~process@1.0/.*","node":{"prefix":"http://127.0.0.1:9"}}]"#;
        let node = Message::new()
            .with("name", "A")
            .with("address", "the-address")
            .with("routes", routes);
        match hook {
            Some(h) => node.with("on", Message::new().with("request", h)),
            None => node,
        }
    }

    fn preprocess() -> Message {
        Message::new()
            .with("device", "router@1.0")
            .with("path", "preprocess")
    }

    /// The context an HTTP request resolves with.
    fn ctx(node: &Message) -> Ctx {
        let ctx = Ctx::new(
            Arc::new(hb_devices::registry()),
            Arc::new(MemoryCache::new(256)),
            NodeHandle::new(node.clone()),
        );
        Service::new(ctx, ServerConfig::default())
            .ctx
            .with_step_hooks(node)
    }

    fn local_paths() -> [&'static str; 6] {
        [
            "/~meta@1.0/info/address",
            "/~message@1.0&a=1&b=2/set&c=3",
            "/~message@1.0&a=1&b=2/set&c=3/c",
            "/~message@1.0&x=y&k=x/(~message@1.0&p=k/p)",
            "/local?local=yes",
            "/~message@1.0&a=1/no-such-key",
        ]
    }

    /// With the router's `preprocess` as the `request` hook, a request no route
    /// matches resolves exactly as without the hook: the same outcome, hashpath
    /// included.
    #[test]
    fn preprocess_without_a_match_changes_nothing() {
        let (hooked, plain) = (node(Some(preprocess())), node(None));
        let (hooked_ctx, plain_ctx) = (ctx(&hooked), ctx(&plain));
        for path in local_paths() {
            let singleton = Message::new().with("path", path).with("method", "GET");
            let with_hook = resolve_request(&hooked_ctx, &hooked, &singleton).unwrap();
            let without = resolve_request(&plain_ctx, &plain, &singleton).unwrap();
            let (Step::Resolved(with_hook), Step::Resolved(without)) = (with_hook, without) else {
                panic!("{path}: the hook halted the request");
            };
            assert_eq!(with_hook, without, "{path}");
            assert_eq!(
                with_hook.is_ok(),
                !path.ends_with("no-such-key"),
                "{path}: {with_hook:?}"
            );
        }
        let singleton = Message::new().with("path", local_paths()[1]);
        let Ok(Step::Resolved(out)) = resolve_request(&hooked_ctx, &hooked, &singleton) else {
            panic!()
        };
        assert_eq!(out.status, Status::Ok);
        assert!(out.value.as_message().unwrap().hashpath().is_some());
    }

    /// A request a route matches becomes the relay of the raw request.
    #[test]
    fn preprocess_with_a_match_relays_the_raw_request() {
        let hooked = node(Some(preprocess()));
        let ctx = ctx(&hooked);
        let singleton = Message::new()
            .with(
                "path",
                format!("/{PID}~process@1.0/compute/at-slot?slot=3").as_str(),
            )
            .with("method", "GET");
        let list = hook::request_list(&ctx, &hooked, &singleton)
            .unwrap()
            .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].as_message().unwrap().get_str("device"),
            Some("relay@1.0")
        );
        let call = list[1].as_message().unwrap();
        assert_eq!(call.get_str("path"), Some("call"));
        assert_eq!(call.get("body"), Some(&Value::Message(singleton)));
    }
}
