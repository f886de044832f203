//! Integration tests: a real node on an ephemeral loopback port, spoken to over HTTP.

use std::sync::Arc;
use std::time::Duration;

use hb_core::{Ctx, MemoryCache, Message, NodeHandle, Value};
use hb_http::{Running, ServerConfig, Service, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(config: ServerConfig) -> Running {
    let node = Message::new()
        .with("port", 0i64)
        .with("operator", "unclaimed")
        .with("test_key", "visible");
    let mut node = node;
    node.insert("priv_secret", "hidden".into());
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        Arc::new(MemoryCache::new(1000)),
        NodeHandle::new(node),
    );
    start_ctx(ctx, config).await
}

/// Serves `ctx` on an ephemeral loopback port, signing replies with key-2 (the node
/// wallet of these tests; key-1 signs requests).
async fn start_ctx(ctx: Ctx, config: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let service = Service::new(ctx, config).with_wallet(Arc::new(key2()));
    serve(listener, service).expect("serve")
}

/// A response as read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes as one request on a fresh connection and reads the response.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the node did not answer within 10 s");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Raw {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
    {
        body.truncate(len);
    }
    Raw {
        status,
        headers,
        body,
    }
}

async fn get(addr: std::net::SocketAddr, target: &str, extra: &str) -> Raw {
    let req =
        format!("GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{extra}\r\n");
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn readme_example_count_is_42() {
    let node = start(ServerConfig::default()).await;
    let r = get(
        node.addr,
        "/~message@1.0&greeting=Hello&count+integer=42/count",
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "42");
    assert_eq!(r.header("ao-result"), Some("body"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = get(node.addr, "/~message@1.0&greeting=%22Hello%22/greeting", "").await;
    assert_eq!(r.text(), "\"Hello\"", "untyped values keep their quotes");
    node.stop().await;
}

#[tokio::test]
async fn meta_info_as_json_hides_private_keys() {
    let node = start(ServerConfig::default()).await;
    let r = get(node.addr, "/~meta@1.0/info", "accept: application/json\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = r.text();
    assert!(
        text.starts_with('{') && text.contains("\"test_key\":\"visible\""),
        "{text}"
    );
    assert!(
        !text.contains("priv_secret") && !text.contains("hidden"),
        "{text}"
    );
    let r = get(node.addr, "/~meta@1.0/info/test_key", "").await;
    assert_eq!(r.text(), "visible");
    node.stop().await;
}

#[tokio::test]
async fn listener_basics_options_and_root_redirect() {
    let node = start(ServerConfig::default()).await;
    let r = raw(
        node.addr,
        b"OPTIONS /anything HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-headers"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, OPTIONS, PATCH")
    );
    let r = get(node.addr, "/", "").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/~meta@1.0/info"));
    node.stop().await;
}

#[tokio::test]
async fn status_mapping_missing_key_and_errors() {
    let node = start(ServerConfig::default()).await;
    let r = get(node.addr, "/~message@1.0&a=1/b", "").await;
    assert_eq!(r.status, 404);
    // The body is the atom `not_found`, typed through ao-types as the reference does.
    assert_eq!(r.text(), "\"not_found\"");
    assert!(
        r.header("ao-types")
            .is_some_and(|t| t.contains("body=\"atom\""))
    );
    let r = get(node.addr, "/~nope@1.0/x", "").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("nope@1.0"), "{}", r.text());
    node.stop().await;
}

#[tokio::test]
async fn headers_and_bodies_become_keys() {
    let node = start(ServerConfig::default()).await;
    // spec 05 checklist 6: POST /key1 with key1 in the request returns its value.
    let req = b"POST /key1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nkey1: Value1\r\ncontent-length: 0\r\n\r\n";
    let r = raw(node.addr, req).await;
    assert_eq!((r.status, r.text().as_str()), (200, "Value1"));
    let req =
        b"POST /body HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello";
    let r = raw(node.addr, req).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    // Scoped and typed header parameters.
    let r = get(node.addr, "/~message@1.0/n", "0.n+integer: 5\r\n").await;
    assert_eq!((r.status, r.text().as_str()), (200, "5"));
    node.stop().await;
}

#[tokio::test]
async fn results_are_cached_and_ids_load() {
    let node = start(ServerConfig::default()).await;
    let r = get(node.addr, "/~message@1.0&a=1/id", "").await;
    assert_eq!(r.status, 200);
    let id = r.text();
    assert_eq!(id.len(), 43, "{id}");
    node.stop().await;
}

/// A small deterministic generator, so that a failure can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random path made of the characters HyperPATHs give meaning to, plus junk.
fn random_path(rng: &mut XorShift) -> String {
    const PIECES: &[&str] = &[
        "/",
        "//",
        "~",
        "~message@1.0",
        "~meta@1.0",
        "~nope@9",
        "&",
        "&k=v",
        "+integer=",
        "+float=1.5",
        "+list=",
        "+map=",
        "+atom=x",
        "+resolve=",
        "+binary=x",
        "=",
        "(",
        ")",
        "(/a/b)",
        "?",
        "?x=1",
        "&x",
        ".",
        "0.",
        "1.k=v",
        "x.y=1",
        "%",
        "%2F",
        "%ZZ",
        "%25",
        "%41",
        "a",
        "keys",
        "id",
        "set",
        "remove",
        "info",
        "priv",
        "\"",
        ",",
        ";",
        "1",
        "-1",
        "99999999999999999999",
        "é",
        "%C3%A9",
        "path",
        "set-mode=explicit",
        "items",
        "body",
    ];
    let mut s = String::from("/");
    let n = 1 + rng.below(12);
    for _ in 0..n {
        if rng.below(20) == 0 {
            // An ID-length segment or an over-long one.
            let len = [32, 42, 43, 600][rng.below(4)];
            s.push_str(&"A".repeat(len));
        } else {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    // Request targets cannot carry raw non-ASCII, spaces or controls: escape them as a
    // client would.
    s.bytes()
        .map(|b| {
            if b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_thousand_bad_paths_never_break_the_node() {
    let node = start(ServerConfig::default()).await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut seen_4xx = 0;
    for i in 0..1000 {
        let path = random_path(&mut rng);
        let r = get(node.addr, &path, "").await;
        assert!(
            r.status < 500,
            "request {i} `{path}` gave {}: {}",
            r.status,
            r.text()
        );
        if r.status >= 400 {
            seen_4xx += 1;
            assert!(
                !r.body.is_empty(),
                "request {i} `{path}`: a {} with an empty body",
                r.status
            );
        }
    }
    assert!(seen_4xx > 500, "most random paths are refused ({seen_4xx})");
    // Still serving.
    let r = get(node.addr, "/~message@1.0&a+integer=7/a", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "7"));
    node.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_with_a_reason() {
    let config = ServerConfig {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let node = start(config).await;
    // A 100 KiB header.
    let big = "x".repeat(100 * 1024);
    let r = get(node.addr, "/~meta@1.0/info", &format!("x-big: {big}\r\n")).await;
    assert_eq!(r.status, 431, "{r:?}");
    assert!(r.text().contains("head"), "{}", r.text());
    // Too many header fields.
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let r = get(node.addr, "/~meta@1.0/info", &many).await;
    assert_eq!(r.status, 431);
    assert!(r.text().contains("header fields"), "{}", r.text());
    // A 20 KiB path.
    let r = get(node.addr, &format!("/{}", "a/".repeat(10 * 1024)), "").await;
    assert_eq!(r.status, 414);
    assert!(!r.body.is_empty());
    // A segment over 512 bytes.
    let r = get(node.addr, &format!("/{}", "b".repeat(600)), "").await;
    assert_eq!(r.status, 400);
    assert!(!r.body.is_empty());
    // A body over the limit.
    let body = vec![b'z'; 4096];
    let mut req = format!(
        "POST /body HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = raw(node.addr, &req).await;
    assert_eq!(r.status, 413);
    assert!(r.text().contains("1024"), "{}", r.text());
    // And the node carries on.
    let r = get(node.addr, "/~message@1.0&a+integer=1/a", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "1"));
    node.stop().await;
}

#[tokio::test]
async fn slow_requests_time_out() {
    let config = ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let node = start(config).await;
    let r = get(
        node.addr,
        "/~test-device@1.0/delay?duration+integer=2000",
        "",
    )
    .await;
    assert_eq!(r.status, 408);
    assert!(r.text().contains("longer"), "{}", r.text());
    node.stop().await;
}

#[tokio::test]
async fn meta_info_post_on_an_unclaimed_node_updates_it() {
    // `start` configures `operator: unclaimed`.
    let node = start(ServerConfig::default()).await;
    let req = b"POST /~meta@1.0/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntest-option: a\r\ncontent-length: 0\r\n\r\n";
    let r = raw(node.addr, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().starts_with("Node message updated. History: 1"),
        "{}",
        r.text()
    );
    let r = get(node.addr, "/~meta@1.0/info/test_option", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    node.stop().await;
}

#[tokio::test]
async fn meta_info_post_without_an_operator_signature_is_refused() {
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        Arc::new(MemoryCache::new(10)),
        NodeHandle::new(Message::new().with("port", 0i64)),
    );
    let node = start_ctx(ctx, ServerConfig::default()).await;
    let req = b"POST /~meta@1.0/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\nport: 1\r\ncontent-length: 0\r\n\r\n";
    let r = raw(node.addr, req).await;
    assert_eq!((r.status, r.text().as_str()), (400, "Unauthorized"));
    let r = get(node.addr, "/~meta@1.0/info/port", "").await;
    assert_eq!(r.text(), "0", "unchanged");
    node.stop().await;
}

/// A `request`/`response` hook handler for the hook tests (spec 05 checklist 18): its
/// `request` adds `added: value` to the base of the message list, or halts with `Bad`
/// when the request carries `halt`; its `response` counts responses.
struct HookDev;
static RESPONSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
impl hb_core::Device for HookDev {
    fn name(&self) -> &'static str {
        "hook-dev@1.0"
    }
    fn functions(&self) -> &'static [&'static str] {
        &["request", "response"]
    }
    fn call(
        &self,
        call: hb_core::Call<'_>,
        _: &Message,
        req: &Message,
        _: &Ctx,
    ) -> hb_core::DeviceResult {
        use hb_core::{Outcome, Value};
        if call.key() == "response" {
            RESPONSES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Ok(Outcome::ok(req.clone()));
        }
        let singleton = req
            .get("request")
            .and_then(Value::as_message)
            .cloned()
            .unwrap_or_default();
        if singleton.contains("halt") {
            return Ok(Outcome::error("Bad"));
        }
        let Some(Value::List(list)) = req.get("body") else {
            return Ok(Outcome::error("no list"));
        };
        let mut list = list.as_ref().clone();
        if let Some(Value::Message(base)) = list.first_mut() {
            base.insert("added", Value::text("value"));
        }
        Ok(Outcome::ok(req.clone().with("body", Value::list(list))))
    }
}

#[tokio::test]
async fn request_and_response_hooks() {
    let mut reg = hb_devices::registry();
    reg.register(Arc::new(HookDev));
    let handler = Message::new().with("device", "hook-dev@1.0");
    let on = Message::new()
        .with("request", handler.clone())
        .with("response", handler);
    let ctx = Ctx::new(
        Arc::new(reg),
        Arc::new(MemoryCache::new(100)),
        NodeHandle::new(Message::new().with("on", on)),
    );
    let node = start_ctx(ctx, ServerConfig::default()).await;
    let before = RESPONSES.load(std::sync::atomic::Ordering::SeqCst);
    let r = get(node.addr, "/added", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "value"));
    let r = get(node.addr, "/added", "halt: 1\r\n").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Bad"));
    // The response hook fires once per resolved request, not for the halted one.
    assert_eq!(
        RESPONSES.load(std::sync::atomic::Ordering::SeqCst) - before,
        1
    );
    node.stop().await;
}

#[tokio::test]
async fn multipart_bodies_become_nested_keys() {
    let node = start(ServerConfig::default()).await;
    // The httpsig encoding of {nested: {b: "2"}} (spec 03 §4.2), sent as a request body.
    let body = "--B\r\nb: 2\r\ncontent-disposition: form-data;name=\"nested\"\r\n--B--";
    let req = format!(
        "POST /nested/b HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary=\"B\"\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = raw(node.addr, req.as_bytes()).await;
    assert_eq!((r.status, r.text().as_str()), (200, "2"));
    // A broken multipart body is refused with a reason.
    let bad = "--B\r\nno closing boundary";
    let req = format!(
        "POST /nested HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary=\"B\"\r\ncontent-length: {}\r\n\r\n{bad}",
        bad.len()
    );
    let r = raw(node.addr, req.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("multipart"), "{}", r.text());
    node.stop().await;
}

// --- Signed requests (spec 03 §5.5, 05 §2.2, 07 §7 items 5–6) ---

const KEY1_JSON: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");

fn key1() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(KEY1_JSON).expect("key-1 loads")
}

fn key2() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-2.json"))
        .expect("key-2 loads")
}

async fn start_with(node: Message) -> Running {
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        Arc::new(MemoryCache::new(1000)),
        NodeHandle::new(node),
    );
    start_ctx(ctx, ServerConfig::default()).await
}

/// `msg` signed with key-1 and encoded as HTTP header lines plus a body.
fn signed_fields(msg: &Message) -> (String, Vec<u8>) {
    let signed = hb_codec::httpsig_commit::commit(msg, &key1()).expect("commit");
    let http = hb_core::httpsig::encode_rich(&signed).expect("encode");
    assert!(http.headers.contains_key("signature"), "{:?}", http.headers);
    let mut lines = String::new();
    for (k, v) in &http.headers {
        lines.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    (lines, http.body.map(|b| b.to_vec()).unwrap_or_default())
}

fn request_with(method: &str, target: &str, fields: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{fields}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Decodes a reply as a client does (spec 03 §4.3, §5.5) and checks its signatures
/// over the fields as received: returns the committers of the reply.
fn verified_committers(r: &Raw) -> Vec<String> {
    let mut http = hb_core::httpsig::HttpMessage::default();
    for (k, v) in &r.headers {
        if !matches!(
            k.as_str(),
            "content-length"
                | "date"
                | "access-control-allow-origin"
                | "access-control-allow-methods"
        ) {
            http.headers
                .insert(k.clone(), bytes::Bytes::from(v.clone()));
        }
    }
    http.body = (!r.body.is_empty()).then(|| bytes::Bytes::from(r.body.clone()));
    let tabm = hb_codec::httpsig_commit::from_http_verified(&http, &|_| None)
        .unwrap_or_else(|e| panic!("the reply {e}: {r:?}"));
    let rich = hb_core::structured::from_tabm(&tabm).expect("rich");
    hb_core::message::committers_of(&rich)
}

#[tokio::test]
async fn signed_requests_verify_and_keep_only_committed_keys() {
    let node = start(ServerConfig::default()).await;
    // Header-only signature, path not signed (the aoconnect style).
    let (fields, body) = signed_fields(&Message::new().with("key1", "Value1"));
    let r = raw(node.addr, &request_with("POST", "/key1", &fields, &body)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "Value1"));
    // The same signed fields on another (unsigned) path: not the cached result of the
    // first, although both requests have the same ID.
    let r = raw(
        node.addr,
        &request_with("POST", "/committers", &fields, &body),
    )
    .await;
    assert_eq!(r.header("1"), Some(key1().address().as_str()), "{r:?}");
    // A signed `path` (the hbsig `@path` style) with a body.
    let (fields, body) = signed_fields(
        &Message::new()
            .with("key1", "Value1")
            .with("path", "/key1")
            .with("body", "a body"),
    );
    assert!(fields.contains("path: /key1"), "{fields}");
    let r = raw(node.addr, &request_with("POST", "/key1", &fields, &body)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "Value1"));
    let r = raw(node.addr, &request_with("POST", "/body", &fields, &body)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Value1"),
        "path is signed"
    );
    // An unsigned extra header is dropped from a signed request.
    let (fields, body) = signed_fields(&Message::new().with("key1", "Value1"));
    let extra = format!("{fields}extra: E\r\n");
    let r = raw(node.addr, &request_with("POST", "/extra", &extra, &body)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // The signer is visible to devices.
    let r = raw(
        node.addr,
        &request_with("POST", "/commitments", &fields, &body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let whole = format!("{:?} {}", r.headers, r.text());
    assert!(whole.contains(&key1().address()), "{whole}");
    node.stop().await;
}

#[tokio::test]
async fn tampered_signed_requests_are_refused() {
    let node = start(ServerConfig::default()).await;
    let (fields, body) = signed_fields(&Message::new().with("key1", "Value1"));
    let tampered = fields.replace("key1: Value1", "key1: Value2");
    assert_ne!(tampered, fields);
    let r = raw(node.addr, &request_with("POST", "/key1", &tampered, &body)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let name = key1().httpsig_name();
    assert!(
        r.text()
            .contains(&format!("signature {name} does not verify")),
        "{}",
        r.text()
    );
    // A tampered body (content-digest mismatch).
    let (fields, body) = signed_fields(&Message::new().with("key1", "V").with("body", "abc"));
    let r = raw(node.addr, &request_with("POST", "/key1", &fields, b"abd")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(body, b"abc");
    // Malformed signature fields.
    let broken = fields.replace("signature: ", "signature: (((");
    let r = raw(node.addr, &request_with("POST", "/key1", &broken, &body)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("malformed signature fields"),
        "{}",
        r.text()
    );
    node.stop().await;
}

#[tokio::test]
async fn meta_info_post_signed_by_the_operator_updates_the_node() {
    let node = start_with(
        Message::new()
            .with("port", 0i64)
            .with("operator", key1().address().as_str()),
    )
    .await;
    // Unsigned: refused.
    let req = request_with("POST", "/~meta@1.0/info", "test-option: a\r\n", b"");
    let r = raw(node.addr, &req).await;
    assert_eq!((r.status, r.text().as_str()), (400, "Unauthorized"));
    // Signed by the operator: accepted.
    let (fields, body) = signed_fields(&Message::new().with("test-option", "b"));
    let r = raw(
        node.addr,
        &request_with("POST", "/~meta@1.0/info", &fields, &body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().starts_with("Node message updated. History: 1"),
        "{}",
        r.text()
    );
    let r = get(node.addr, "/~meta@1.0/info/test_option", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "b"));
    node.stop().await;
}

#[tokio::test]
async fn every_reply_is_signed_by_the_node() {
    let node = start(ServerConfig::default()).await;
    let me = key2().address();
    for target in [
        "/~message@1.0&greeting=Hello&count+integer=42/count",
        "/~meta@1.0/info",
        "/~meta@1.0/info/test_key",
        "/~message@1.0&a=1/missing",
        // A value HTTP fields cannot carry travels in the body, still signed.
        "/~message@1.0&a+integer=7&n=hello%0Aworld",
    ] {
        let r = get(node.addr, target, "").await;
        let label = r.header("signature-input").unwrap_or_default();
        assert!(
            label.starts_with(&format!("{}=(", key2().httpsig_name())),
            "{target}: {r:?}"
        );
        assert_eq!(verified_committers(&r), vec![me.clone()], "{target}");
    }
    // The same reply twice reuses the signature (memoised per signature base).
    let a = get(node.addr, "/~meta@1.0/info/test_key", "").await;
    let b = get(node.addr, "/~meta@1.0/info/test_key", "").await;
    assert_eq!(a.header("signature"), b.header("signature"));
    assert_eq!(a.text(), "visible");
    // A signed request's unsigned `accept` still picks the reply codec, and JSON
    // replies carry the node's commitment too.
    let (fields, body) = signed_fields(&Message::new().with("key1", "Value1"));
    let fields = format!("{fields}accept: application/json\r\n");
    let r = raw(
        node.addr,
        &request_with("POST", "/committers", &fields, &body),
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let text = r.text();
    assert!(text.contains(&key1().address()), "{text}");
    assert!(
        text.contains(&me) && text.contains("rsa-pss-sha512"),
        "{text}"
    );
    node.stop().await;
}

/// `msg` signed with key-1 as an ANS-104 data item's bytes.
fn signed_item(msg: &Message) -> Vec<u8> {
    use hb_codec::ans104;
    let signed = ans104::commit(msg, &key1()).expect("commit");
    ans104::message_to_item(&signed).expect("item").to_bytes()
}

fn ans104_request(target: &str, item: &[u8], extra: &str) -> Vec<u8> {
    request_with(
        "POST",
        target,
        &format!("content-type: application/ans104\r\ncodec-device: ans104@1.0\r\n{extra}"),
        item,
    )
}

#[tokio::test]
async fn ans104_requests_verify_and_replies_can_be_data_items() {
    use hb_codec::ans104::DataItem;
    let node = start(ServerConfig::default()).await;
    let item = signed_item(
        &Message::new()
            .with("Key1", "Value1")
            .with("data", "some data"),
    );
    let r = raw(node.addr, &ans104_request("/key1", &item, "")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "Value1"), "{r:?}");
    let r = raw(node.addr, &ans104_request("/committers", &item, "")).await;
    assert_eq!(r.header("1"), Some(key1().address().as_str()), "{r:?}");
    // Any byte flipped (signature, owner, tags, data) is refused with the reason.
    for at in [10, 600, item.len() - 20, item.len() - 1] {
        let mut bad = item.clone();
        bad[at] ^= 1;
        let r = raw(node.addr, &ans104_request("/key1", &bad, "")).await;
        assert_eq!(r.status, 400, "byte {at}: {r:?}");
        assert!(r.text().contains("data item"), "{}", r.text());
    }
    // An unsigned item carries no claim: refused.
    let unsigned = hb_codec::ans104::message_to_item(&Message::new().with("a", "1"))
        .expect("item")
        .to_bytes();
    let r = raw(node.addr, &ans104_request("/a", &unsigned, "")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not signed"), "{}", r.text());
    // Garbage is a 400 too.
    let r = raw(node.addr, &ans104_request("/a", b"\x01\x00short", "")).await;
    assert_eq!(r.status, 400, "{r:?}");
    // `accept-codec: ans104@1.0`: the reply is a data item signed by the node.
    let r = get(
        node.addr,
        "/~message@1.0&greeting=Hello/greeting",
        "accept-codec: ans104@1.0\r\n",
    )
    .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/ans104"),
        "{r:?}"
    );
    let reply = DataItem::parse(&r.body).expect("a data item");
    assert!(reply.verify());
    assert_eq!(hb_codec::wallet::address_of(&reply.owner), key2().address());
    let msg = hb_codec::ans104::item_to_message(&reply).expect("message");
    assert_eq!(msg.get("body"), Some(&Value::text("Hello")), "{msg:?}");
    node.stop().await;
}

/// A cache with a remote side that counts how often it is asked.
#[derive(Debug, Default)]
struct CountingRemote {
    local: MemoryCache,
    asked: std::sync::atomic::AtomicUsize,
}

impl hb_core::Cache for CountingRemote {
    fn read_result(&self, hashpath: &str) -> Option<Value> {
        self.local.read_result(hashpath)
    }
    fn write_result(&self, hashpath: &str, value: &Value) {
        self.local.write_result(hashpath, value);
    }
    fn read_message(&self, id: &hb_core::id::Id) -> Option<Message> {
        self.local.read_message(id)
    }
    fn write_message(&self, id: hb_core::id::Id, msg: &Message) {
        self.local.write_message(id, msg);
    }
    fn fetch_remote(&self, _id: &hb_core::id::Id) -> Option<Message> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Message::new().with("from", "afar"))
    }
}

/// An ID missing locally is fetched from the cache's remote side, unless the request
/// says `cache-control: only-if-cached` (what nodes send each other).
#[tokio::test]
async fn only_if_cached_requests_never_reach_remote_sources() {
    let cache = Arc::new(CountingRemote::default());
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry()),
        cache.clone(),
        NodeHandle::new(Message::new()),
    );
    let node = start_ctx(ctx, ServerConfig::default()).await;
    let id = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = get(
        node.addr,
        &format!("/{id}/from"),
        "cache-control: only-if-cached\r\n",
    )
    .await;
    assert_eq!(r.status, 504, "a cache miss (spec 01 §10): {r:?}");
    assert_eq!(r.header("cache-status"), Some("miss"));
    // The message itself (what a remote-node source asks for).
    let r = get(
        node.addr,
        &format!("/{id}"),
        "cache-control: only-if-cached\r\n",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(cache.asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    let r = get(node.addr, &format!("/{id}/from"), "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "afar"), "{r:?}");
    assert_eq!(cache.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    node.stop().await;
}
