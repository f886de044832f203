//! `lua@5.3a` over HTTP (spec 06 §1): the seed's serverless form, modules by ID, a
//! Lua process counting its messages, limits (an endless loop, a memory bomb) that
//! stop one message and not the process, and determinism across two nodes.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, key1, key2, post, send};
use hb_core::message::id_all;
use hb_core::{Cache, Message};
use hb_store::{MemoryStore, MessageCache};

async fn node(options: Message) -> (hb_http::Running, Arc<MessageCache>) {
    let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
    let node = common::start_node(options, cache.clone(), key2()).await;
    (node, cache)
}

/// Percent-encodes what a URL path cannot carry as it is.
fn url(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~()=*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serverless_scripts_and_modules_by_id() {
    let (node, cache) = node(Message::new()).await;
    let addr = node.addr;

    // The seed: GET /~lua@5.3a&script=return 2 + 2/result -> 4.
    let r = send(
        addr,
        &get(&format!("/~lua@5.3a&script={}/result", url("return 2 + 2"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "4");
    let r = send(
        addr,
        &get(&format!(
            "/~lua@5.3a&script={}/result",
            url("return 3 * 0.5")
        )),
    )
    .await;
    assert!(r.text().starts_with("1.5"), "{}", r.text());

    // A key of the base is read without Lua.
    let r = send(addr, &get("/~lua@5.3a&script=x&answer=42/answer")).await;
    assert_eq!(r.text(), "42");

    // A module stored in the node's cache, called by ID: a function by key.
    let module = Message::new()
        .with("content-type", "application/lua")
        .with(
            "body",
            "function sum(base) local s = 0 for _, v in ipairs(base.values) do s = s + tonumber(v) end return s end\n\
             function greet(base, req) return 'Hello, ' .. (req.name or 'world') .. '!' end\n\
             function fail() error('deliberate failure') end",
        );
    let id = id_all(&module).unwrap();
    cache.write_message(id, &module);
    let id = id.to_human();
    let r = send(
        addr,
        &get(&format!("/~lua@5.3a&module={id}&values+list=1,2,3,4/sum")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "10");
    let r = send(
        addr,
        &get(&format!("/~lua@5.3a&module={id}/greet?name=Alice")),
    )
    .await;
    assert_eq!(r.text(), "Hello, Alice!");
    let r = send(addr, &get(&format!("/~lua@5.3a&module={id}/fail"))).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("deliberate failure"), "{}", r.text());
    let missing = "b".repeat(43);
    let r = send(addr, &get(&format!("/~lua@5.3a&module={missing}/sum"))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("not found"), "{}", r.text());

    // An endless loop with the default budget: an error within a second.
    let started = Instant::now();
    let r = send(
        addr,
        &get(&format!(
            "/~lua@5.3a&script={}/result",
            url("while true do end")
        )),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("instruction budget"), "{}", r.text());

    // The sorted global functions.
    let r = send(
        addr,
        &common::get_with(
            &format!("/~lua@5.3a&module={id}/functions"),
            "accept: application/json\r\n",
        ),
    )
    .await;
    assert!(r.text().contains("greet"), "{}", r.text());

    node.stop().await;
}

/// The Lua process of these tests: an aos-style counter, plus messages that loop
/// forever or exhaust memory.
const COUNTER: &str = r#"
function compute(base, req)
  local action = req.body and req.body.action
  if action == "Spin" then while true do end end
  if action == "Bomb" then
    local t = {}
    while true do t[#t + 1] = string.rep("x", 1 << 20) .. #t end
  end
  if action == "Keys" then
    local t = {}
    for i = 1, 1000 do t["key-" .. i] = i end
    local order = {}
    for k in pairs(t) do order[#order + 1] = k end
    base.results = { output = { data = table.concat(order, ",") } }
    return base
  end
  Count = (Count or 0) + 1
  base.count = Count
  base.results = { output = { data = "Count: " .. Count .. " at " .. os.time() .. " r " .. math.random(1000000) } }
  return base
end
"#;

fn process_def(nonce: &str) -> Message {
    Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "lua@5.3a")
        .with("module", COUNTER)
        .with("nonce", nonce)
}

async fn spawn(addr: std::net::SocketAddr, nonce: &str) -> String {
    let def = hb_codec::httpsig_commit::commit(&process_def(nonce), &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "spawn: {}", r.text());
    pid
}

async fn schedule(addr: std::net::SocketAddr, pid: &str, action: &str) {
    let msg = Message::new()
        .with("type", "Message")
        .with("target", pid)
        .with("action", action);
    let r = send(
        addr,
        &post(&format!("/{pid}/schedule"), &msg, Some(&key1())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn output(addr: std::net::SocketAddr, pid: &str) -> String {
    let r = send(addr, &get(&format!("/{pid}/now/results/output/data"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lua_process_counts_and_survives_loops_and_bombs() {
    // The default budget; a smaller memory cap, so that the bomb goes off quickly.
    let (node, _) = node(Message::new().with("lua_memory_limit", 64i64 << 20)).await;
    let addr = node.addr;
    let pid = spawn(addr, "counter").await;
    // Slot 0 (the process message itself) counts too.
    for _ in 0..3 {
        schedule(addr, &pid, "Count").await;
    }
    let out = output(addr, &pid).await;
    assert!(out.starts_with("Count: 4 at "), "{out}");
    let r = send(addr, &get(&format!("/{pid}/now/count"))).await;
    assert_eq!(r.text(), "4");

    // A dry run computes on the latest state and changes nothing.
    let dry = Message::new()
        .with("method", "POST")
        .with("dryrun", Message::new().with("action", "Count"));
    let r = send(
        addr,
        &post(&format!("/{pid}/compute/results/output/data"), &dry, None),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("Count: 5 at "), "{}", r.text());
    let r = send(addr, &get(&format!("/{pid}/now/count"))).await;
    assert_eq!(r.text(), "4", "the dry run left the state alone");

    // An endless loop: an error result within a second; the process goes on.
    schedule(addr, &pid, "Spin").await;
    let started = Instant::now();
    let out = output(addr, &pid).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.contains("instruction budget"), "{out}");
    schedule(addr, &pid, "Count").await;
    assert!(output(addr, &pid).await.starts_with("Count: 5 at "));

    // A memory bomb: stopped, and the process goes on.
    schedule(addr, &pid, "Bomb").await;
    let out = output(addr, &pid).await;
    assert!(
        out.contains("memory") || out.contains("instruction budget"),
        "{out}"
    );
    schedule(addr, &pid, "Count").await;
    assert!(output(addr, &pid).await.starts_with("Count: 6 at "));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_compute_the_same_results() {
    // One signed process definition, spawned on both nodes (the same process ID).
    let def = hb_codec::httpsig_commit::commit(&process_def("determinism"), &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let (node, cache) = node(Message::new()).await;
        let addr = node.addr;
        // The serverless form: pairs() over 1,000 string keys.
        let script = "local t = {} for i = 1, 1000 do t['k' .. i] = i end \
                      local o = {} for k in pairs(t) do o[#o + 1] = k end \
                      return table.concat(o, ',')";
        let r = send(
            addr,
            &get(&format!("/~lua@5.3a&script={}/result", url(script))),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let serverless = r.text();
        assert_eq!(serverless.split(',').count(), 1000);
        // The same process on both nodes.
        let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
        assert_eq!(r.status, 200, "spawn: {}", r.text());
        schedule(addr, &pid, "Keys").await;
        let keys = output(addr, &pid).await;
        assert_eq!(keys.split(',').count(), 1000);
        // The state of slot 1 (its ID covers the Lua results and the count).
        let Some(hb_core::Value::Message(state)) =
            cache.read_path(&format!("computed/{pid}/slot/1")).unwrap()
        else {
            panic!("slot 1 not stored");
        };
        let state_id = id_all(&state).unwrap().to_human();
        outputs.push((serverless, keys, state_id));
        node.stop().await;
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_ne!(
        outputs[0].1.split(',').take(5).collect::<Vec<_>>(),
        vec!["key-1", "key-2", "key-3", "key-4", "key-5"],
        "hash order, not insertion order"
    );
}

/// Records which node computed each slot (from the node option `test_node_name`): a
/// slot computed again after a restart would show the second node's name.
const WITNESS: &str = r#"
function compute(base, req)
  local status, name = ao.resolve({ path = "/~meta@1.0/info/test_node_name" })
  Count = (Count or 0) + 1
  base.count = Count
  base["computed-by"] = (base["computed-by"] or "") .. Count .. "=" .. tostring(name) .. ";"
  base.results = { output = { data = "Count: " .. Count } }
  return base
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_continues_from_the_snapshot() {
    let store = Arc::new(MemoryStore::new());
    let start = |name: &'static str| {
        let cache = Arc::new(MessageCache::new(store.clone()));
        common::start_node(
            Message::new()
                .with("test_node_name", name)
                .with("process_snapshot_slots", 1i64),
            cache,
            key2(),
        )
    };
    let node = start("first").await;
    let addr = node.addr;
    let def = process_def("restart").with("module", WITNESS);
    let def = hb_codec::httpsig_commit::commit(&def, &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "spawn: {}", r.text());
    for _ in 0..3 {
        schedule(addr, &pid, "Count").await;
    }
    assert_eq!(output(addr, &pid).await, "Count: 4");
    node.stop().await;

    // A new node on the same store: `now` answers the same state; one more message is
    // computed by it, on the restored Lua state, without recomputing slots 0-3.
    let node = start("second").await;
    let addr = node.addr;
    assert_eq!(output(addr, &pid).await, "Count: 4");
    schedule(addr, &pid, "Count").await;
    assert_eq!(output(addr, &pid).await, "Count: 5");
    let r = send(addr, &get(&format!("/{pid}/now/computed-by"))).await;
    assert_eq!(
        r.text(),
        "1=first;2=first;3=first;4=first;5=second;",
        "only slot 4 was computed by the restarted node"
    );
    node.stop().await;
}

/// An aos-style process (the project's library, `builtin:aos`) in the seed tutorial's
/// stack: `lua@5.3a`, then `patch@1.0` moving patch messages from the outbox into the
/// state.
fn aos_def(nonce: &str) -> Message {
    Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "stack@1.0")
        .with(
            "execution-stack",
            hb_core::Value::list(vec![
                hb_core::Value::text("lua@5.3a"),
                hb_core::Value::text("patch@1.0"),
            ]),
        )
        .with("patch-from", "/results/outbox")
        .with("module", "builtin:aos")
        .with("authority", key2().address().as_str())
        .with("allowedsender", key1().address().as_str())
        .with("nonce", nonce)
}

async fn spawn_aos(addr: std::net::SocketAddr, nonce: &str) -> String {
    let def = hb_codec::httpsig_commit::commit(&aos_def(nonce), &key1()).unwrap();
    let pid = id_all(&def).unwrap().to_human();
    let r = send(addr, &post("/~process@1.0/schedule", &def, None)).await;
    assert_eq!(r.status, 200, "spawn: {}", r.text());
    pid
}

fn eval_msg(pid: &str, code: &str) -> Message {
    Message::new()
        .with("type", "Message")
        .with("target", pid)
        .with("action", "Eval")
        .with("data", code)
}

async fn schedule_msg(addr: std::net::SocketAddr, pid: &str, msg: &Message) {
    let r = send(addr, &post(&format!("/{pid}/schedule"), msg, Some(&key1()))).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aos_handlers_update_state_with_patch() {
    let (node, _) = node(Message::new()).await;
    let addr = node.addr;
    let pid = spawn_aos(addr, "update-state").await;

    // The seed's handler, verbatim.
    let handler = "Handlers.add('Update-State', { Action = 'Update-State' }, function(msg)\n  if msg.From == ao.env.Process.Tags.AllowedSender then\n    Send({ device = 'patch@1.0', cache = msg.Data })\n    print('Updated State!')\n  end\nend)";
    schedule_msg(addr, &pid, &eval_msg(&pid, handler)).await;
    let update = Message::new()
        .with("type", "Message")
        .with("target", pid.as_str())
        .with("action", "Update-State")
        .with("data", "the state, patched");
    schedule_msg(addr, &pid, &update).await;
    assert_eq!(output(addr, &pid).await, "Updated State!");
    let r = send(addr, &get(&format!("/{pid}~process@1.0/now/cache"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "the state, patched");

    // The aos counter, through Eval.
    for _ in 0..3 {
        schedule_msg(
            addr,
            &pid,
            &eval_msg(&pid, "Count = (Count or 0) + 1; print('Count: ' .. Count)"),
        )
        .await;
    }
    assert_eq!(output(addr, &pid).await, "Count: 3");
    schedule_msg(addr, &pid, &eval_msg(&pid, "return Count * 10")).await;
    assert_eq!(output(addr, &pid).await, "30");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aos_ping_pong_of_ten_messages() {
    let (node, _) = node(Message::new()).await;
    let addr = node.addr;
    let pid = spawn_aos(addr, "ping-pong").await;
    // The seed's PingScript: a handler that pings itself until Count reaches 10.
    let script = "Handlers.add('Ping', { Action = 'Ping' }, function(m) \
                    Count = tonumber(m.Count) or 0 \
                    if Count < 10 then Send({ Target = ao.id, Action = 'Ping', Count = Count + 1 }) end \
                  end) \
                  Send({ Target = ao.id, Action = 'Ping', Count = 1 })";
    let r = send(
        addr,
        &post(
            &format!("/{pid}/push"),
            &eval_msg(&pid, script),
            Some(&key1()),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Slot 1 is the Eval; the ten pings are slots 2-11.
    let r = send(addr, &get(&format!("/{pid}/slot/current"))).await;
    assert_eq!(r.text(), "11");
    schedule_msg(addr, &pid, &eval_msg(&pid, "return Count")).await;
    assert_eq!(output(addr, &pid).await, "10");
    node.stop().await;
}

/// Spec 06 §5 item 19: a Lua `request` hook answering every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lua_request_hook_answers_every_request() {
    let hook = Message::new()
        .with("device", "lua@5.3a")
        .with(
            "module",
            Message::new().with("content-type", "application/lua").with(
                "body",
                "function request(base, req, opts) return 'ok', { body = { { body = 'i like turtles' } } } end",
            ),
        );
    let (node, _) = node(Message::new().with("on", Message::new().with("request", hook))).await;
    // Whatever the path: device switches (`~meta@1.0`), ID bases, sub-resolutions.
    for path in [
        "/hello",
        "/anything/else?x=1",
        "/~meta@1.0/info/address",
        "/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq~process@1.0/compute/at-slot?slot=3",
        "/a/(~message@1.0&b=2/b)",
    ] {
        let r = send(node.addr, &get(path)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "i like turtles", "{path}");
    }
    node.stop().await;
}
