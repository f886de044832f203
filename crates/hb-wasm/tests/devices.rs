//! The WASM devices through AO-Core resolution (spec 06 §5, checklist 24–29, 34,
//! 36–44), on a context built on `hb_devices::registry()` and a message cache: the
//! fixtures' modules, the AO process stack on aos-2-pure-xs, processes with their
//! snapshots, `genesis-wasm@1.0`, and the recovery from a trap.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fixture;
use hb_codec::Wallet;
use hb_codec::httpsig_commit::commit;
use hb_core::message::{MatchMode, id_all, matches};
use hb_core::{Cache, Ctx, Message, NodeHandle, Outcome, Value};
use hb_store::{MemoryStore, MessageCache};
use hb_wasm::json_iface::WASM_ERROR;
use hb_wasm::wasm_64::{FUEL_OPTION, instance_of};

fn key1() -> Wallet {
    Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json")).unwrap()
}

fn key2() -> Arc<Wallet> {
    static KEY: std::sync::OnceLock<Arc<Wallet>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        Arc::new(
            Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-2.json")).unwrap(),
        )
    })
    .clone()
}

/// A node: the preloaded devices (the scheduler signing with key 2), a message cache
/// over memory, and the node options `options`.
struct Node {
    ctx: Ctx,
    cache: Arc<MessageCache>,
}

impl Node {
    fn new(options: Message) -> Node {
        let cache = Arc::new(MessageCache::new(Arc::new(MemoryStore::new())));
        Node::with_cache(options, cache)
    }

    /// A node over an existing cache, with fresh devices (no live process workers):
    /// what a restarted node sees.
    fn with_cache(options: Message, cache: Arc<MessageCache>) -> Node {
        let ctx = Ctx::new(
            Arc::new(hb_devices::registry_with_wallet(Some(key2()))),
            cache.clone(),
            NodeHandle::new(options),
        );
        Node { ctx, cache }
    }

    /// Writes `{body: <fixture>}` to the cache; its ID.
    fn image(&self, name: &str) -> String {
        let msg = Message::new().with("body", Bytes::from(fixture(name)));
        self.cache.write(&msg).unwrap().to_human()
    }

    fn resolve(&self, base: &Message, req: Message) -> Outcome {
        self.ctx
            .resolve(Value::Message(base.clone()), req)
            .unwrap_or_else(|e| panic!("resolution raised: {e}"))
    }

    fn ok(&self, base: &Message, req: Message) -> Message {
        let out = self.resolve(base, req);
        match out {
            Outcome {
                status: hb_core::Status::Ok,
                value: Value::Message(m),
            } => m,
            other => panic!("not ok: {other:?}"),
        }
    }

    /// Schedules the signed process definition (slot 0); its ID.
    fn spawn(&self, def: &Message) -> String {
        let req = Message::new()
            .with("path", "schedule")
            .with("method", "POST")
            .with("body", def.clone());
        let out = self.resolve(def, req);
        assert!(out.is_ok(), "spawn: {out:?}");
        id_all(def).unwrap().to_human()
    }

    /// Schedules `msg` signed by key 1 on the process; its slot.
    fn schedule(&self, def: &Message, msg: Message) -> i64 {
        let signed = commit(&msg, &key1()).unwrap();
        let req = signed.with("path", "schedule").with("method", "POST");
        let assignment = self.ok(def, req);
        assignment.get("slot").and_then(Value::as_int).unwrap()
    }

    fn compute(&self, def: &Message, slot: i64) -> Message {
        self.ok(
            def,
            Message::new().with("path", "compute").with("slot", slot),
        )
    }
}

fn get<'a>(msg: &'a Message, path: &str) -> Option<&'a Value> {
    let mut v: Option<&Value> = None;
    let mut cur = msg;
    for part in path.split('/') {
        let next = match v {
            None => cur.get_ci(part),
            Some(Value::Message(m)) => {
                cur = m;
                cur.get_ci(part)
            }
            Some(Value::List(l)) => l.get(part.parse::<usize>().ok()? - 1),
            Some(_) => None,
        };
        v = Some(next?);
    }
    v
}

fn text(msg: &Message, path: &str) -> String {
    match get(msg, path) {
        Some(v) => String::from_utf8_lossy(&v.to_display_bytes()).into_owned(),
        None => panic!("no {path} in {msg:?}"),
    }
}

fn floats(v: f64) -> Value {
    Value::list(vec![Value::Float(v)])
}

// ---------------------------------------------------------------------------------
// wasm-64@1.0 on its own.

/// Checklist 24.
#[test]
fn fac_through_init_and_compute() {
    let node = Node::new(Message::new());
    for name in ["test.wasm", "test-64.wasm"] {
        let base = Message::new()
            .with("device", "wasm-64@1.0")
            .with("image", node.image(name));
        let state = node.ok(&base, Message::new().with("path", "init"));
        let state = state
            .with("function", "fac")
            .with("parameters", floats(5.0));
        let state = node.ok(&state, Message::new().with("path", "compute"));
        assert_eq!(
            get(&state, "results/output"),
            Some(&floats(120.0)),
            "{name}"
        );
        assert_eq!(text(&state, "results/type"), "ok");
    }
}

/// Checklist 25: a process whose stack is `[WASM-64@1.0]`, two scheduled messages.
/// (Slot 0 is the process itself here; the messages are slots 1 and 2.)
#[test]
fn a_process_of_wasm_64_alone() {
    let node = Node::new(Message::new());
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "stack@1.0")
        .with(
            "device-stack",
            Value::list(vec![Value::text("WASM-64@1.0")]),
        )
        .with("image", node.image("test-64.wasm"));
    let def = commit(&def, &key1()).unwrap();
    node.spawn(&def);
    let msg = |n: f64| {
        Message::new()
            .with("function", "fac")
            .with("parameters", floats(n))
    };
    assert_eq!(node.schedule(&def, msg(5.0)), 1);
    assert_eq!(node.schedule(&def, msg(6.0)), 2);
    let s1 = node.compute(&def, 1);
    assert_eq!(get(&s1, "results/output"), Some(&floats(120.0)));
    let s2 = node.compute(&def, 2);
    assert_eq!(get(&s2, "results/output"), Some(&floats(720.0)));
}

/// Checklist 26, through resolution: `init/compute/results` with the image as `body`,
/// unsigned and signed.
#[test]
fn init_compute_results_with_the_image_as_body() {
    let node = Node::new(Message::new());
    let base = Message::new()
        .with("device", "WASM-64@1.0")
        .with("function", "fac")
        .with("parameters", floats(3.0))
        .with("body", Bytes::from(fixture("test-64.wasm")));
    let path = || Message::new().with("path", "init/compute/results");
    let results = node.ok(&base, path());
    assert_eq!(get(&results, "output/1"), Some(&Value::Float(6.0)));
    let signed = commit(&base, &key1()).unwrap();
    let results = node.ok(&signed, path());
    assert_eq!(get(&results, "output/1"), Some(&Value::Float(6.0)));
}

/// Checklist 27: prefixes.
#[test]
fn prefixes_place_the_instance() {
    let node = Node::new(Message::new());
    let image = node.image("test.wasm");
    let base = Message::new()
        .with("device", "WASM-64@1.0")
        .with("input-prefix", "test-in")
        .with("test-in", Message::new().with("image", image.as_str()));
    let state = node.ok(&base, Message::new().with("path", "init"));
    let private = state.private().unwrap();
    assert!(matches!(private.get("instance"), Some(Value::Opaque(_))));
    assert!(private.get("import-resolver").is_some());
    assert!(instance_of(&state, "").is_some());

    let base = Message::new()
        .with("device", "WASM-64@1.0")
        .with("output-prefix", "wasm")
        .with("input-prefix", "process")
        .with("process", Message::new().with("image", image.as_str()));
    let state = node.ok(&base, Message::new().with("path", "init"));
    let wasm = state
        .private()
        .unwrap()
        .get("wasm")
        .unwrap()
        .as_message()
        .unwrap();
    assert!(matches!(wasm.get("instance"), Some(Value::Opaque(_))));
    assert!(wasm.get("import-resolver").is_some());
    // Resolved publicly, the private area is not there.
    let out = node.resolve(&state, Message::new().with("path", "priv"));
    assert!(!out.is_ok());

    // No image anywhere.
    let out = node.resolve(
        &Message::new().with("device", "wasm-64@1.0"),
        Message::new().with("path", "init"),
    );
    assert!(!out.is_ok());
    assert!(format!("{:?}", out.value).contains("No viable image found in /image."));
}

fn pow_base(node: &Node) -> (Message, Message) {
    let image = Message::new()
        .with("device", "WASM-64@1.0")
        .with("image", node.image("pow_calculator.wasm"));
    let extras = Message::new().with("function", "pow").with(
        "stdlib",
        Message::new().with("my_lib", Message::new().with("device", "Test-Device@1.0")),
    );
    (image, extras)
}

fn merged(a: &Message, b: &Message) -> Message {
    let mut m = a.clone();
    for (k, v) in b.iter() {
        m.insert_key(k.clone(), v.clone());
    }
    m
}

/// Checklist 28: an import answered by a device mounted at `stdlib/my_lib`.
#[test]
fn imports_resolve_through_the_stdlib_device() {
    let node = Node::new(Message::new());
    let (image, extras) = pow_base(&node);
    let state = node.ok(&image, Message::new().with("path", "init"));
    let params = Value::list(vec![Value::Integer(2), Value::Integer(5)]);
    let state = merged(&state, &extras).with("parameters", params);
    let state = node.ok(&state, Message::new().with("path", "compute"));
    assert_eq!(
        get(&state, "results/output"),
        Some(&Value::list(vec![Value::Integer(32)]))
    );
    // The `import` key resolves one call the same way, and stubs unknown modules.
    let call = |module: &str| {
        Message::new()
            .with("path", "import")
            .with("module", module)
            .with("func", "mul")
            .with(
                "args",
                Value::list(vec![Value::Integer(6), Value::Integer(7)]),
            )
            .with("func-sig", "(ii)i")
    };
    let answer = node.ok(&state, call("my_lib"));
    assert_eq!(
        answer.get("results"),
        Some(&Value::list(vec![Value::Integer(42)]))
    );
    let answer = node.ok(&state, call("nobody"));
    assert_eq!(
        answer.get("results"),
        Some(&Value::list(vec![Value::Integer(0)]))
    );
}

/// Checklist 29: snapshot, then a fresh base computes from it without `init`.
#[test]
fn snapshot_then_compute_from_a_fresh_base() {
    let node = Node::new(Message::new());
    let (image, extras) = pow_base(&node);
    let params = Value::list(vec![Value::Integer(2), Value::Integer(2)]);
    let extras = extras.with("parameters", params);
    let state = node.ok(&image, Message::new().with("path", "init"));
    let state = node.ok(
        &merged(&state, &extras),
        Message::new().with("path", "compute"),
    );
    let four = Value::list(vec![Value::Integer(4)]);
    assert_eq!(get(&state, "results/output"), Some(&four));
    let snapshot = node.ok(&state, Message::new().with("path", "snapshot"));
    assert_eq!(snapshot.public().count(), 1, "only `body`");
    let memory = snapshot.get("body").and_then(Value::as_bytes).unwrap();
    assert_eq!(memory.len(), 17 * 65536);

    let fresh = merged(&image, &extras).with("snapshot", snapshot);
    let out = node.resolve(
        &fresh,
        Message::new().with("path", "compute/results/output"),
    );
    assert_eq!(out.value, four);

    // Without instance or snapshot: the reference's error.
    let out = node.resolve(
        &merged(&image, &extras),
        Message::new().with("path", "compute"),
    );
    assert!(format!("{:?}", out.value).contains("no_wasm_instance_or_snapshot"));
}

/// Checklist 51 and 52 (cheap, so here too): no function is no call; a parameter that
/// is not a number is an error.
#[test]
fn no_function_and_bad_parameters() {
    let node = Node::new(Message::new());
    let base = Message::new()
        .with("device", "wasm-64@1.0")
        .with("image", node.image("test.wasm"));
    let state = node.ok(&base, Message::new().with("path", "init"));
    let same = node.ok(&state, Message::new().with("path", "compute"));
    assert!(same.get("results").is_none());
    let out = node.resolve(
        &state
            .clone()
            .with("function", "fac")
            .with("parameters", Value::list(vec![Value::text("five")])),
        Message::new().with("path", "compute"),
    );
    assert!(!out.is_ok());
    // A trap in a bare compute (unknown export): status 500 with the text.
    let out = node.resolve(
        &state.with("function", "nope"),
        Message::new().with("path", "compute"),
    );
    assert!(!out.is_ok());
    assert!(format!("{:?}", out.value).contains("nope"), "{out:?}");
}

// ---------------------------------------------------------------------------------
// wasi@1.0.

/// Checklist 34: the state after WASI's `init`, and its serialisation.
#[test]
fn wasi_init_state_round_trips_through_httpsig() {
    let node = Node::new(Message::new());
    let base = Message::new()
        .with("device", "stack@1.0")
        .with(
            "device-stack",
            Value::list(vec![Value::text("WASI@1.0"), Value::text("Multipass@1.0")]),
        )
        .with("passes", 2i64)
        .with("stack-keys", Value::list(vec![Value::text("init")]));
    let state = node.ok(&base, Message::new().with("path", "init"));
    for (fd, file) in [
        ("0", "/dev/stdin"),
        ("1", "/dev/stdout"),
        ("2", "/dev/stderr"),
    ] {
        assert_eq!(
            text(&state, &format!("file-descriptors/{fd}/filename")),
            file
        );
        assert_eq!(
            get(&state, &format!("file-descriptors/{fd}/offset")),
            Some(&Value::Integer(0))
        );
    }
    for f in ["stdin", "stdout", "stderr"] {
        assert_eq!(text(&state, &format!("vfs/dev/{f}")), "");
    }
    assert_eq!(
        text(&state, "wasm/stdlib/wasi_snapshot_preview1/device"),
        "wasi@1.0"
    );
    let round_trip = |m: &Message| {
        let tabm = hb_core::structured::to_tabm(m).unwrap();
        let http = hb_core::httpsig::to_http(&tabm).unwrap();
        let (back, _) = hb_core::httpsig::from_http(&http).unwrap();
        hb_core::structured::from_tabm(&back).unwrap()
    };
    let public = state.without_private();
    assert!(matches(&round_trip(&public), &public, MatchMode::Strict));
    let vfs = state.get("vfs").and_then(Value::as_message).unwrap();
    assert!(matches(&round_trip(vfs), vfs, MatchMode::Strict));
}

// ---------------------------------------------------------------------------------
// The AO process stack on aos-2-pure-xs.

const STACK: [&str; 4] = ["WASI@1.0", "JSON-Iface@1.0", "WASM-64@1.0", "Multipass@1.0"];

fn list(items: &[&str]) -> Value {
    Value::list(items.iter().map(|s| Value::text(s)).collect())
}

fn eval(pid: &str, code: &str) -> Message {
    Message::new()
        .with("type", "Message")
        .with("target", pid)
        .with("action", "Eval")
        .with("data", code)
}

/// Checklist 36: the reference's `generate_stack`, computing one signed Eval.
#[test]
fn full_stack_evaluates_return_1_plus_1() {
    let node = Node::new(Message::new());
    let process = commit(
        &Message::new()
            .with("type", "Process")
            .with("image", node.image("aos-2-pure-xs.wasm"))
            .with("scheduler", key2().address().as_str())
            .with("authority", key2().address().as_str()),
        &key1(),
    )
    .unwrap();
    let pid = id_all(&process).unwrap().to_human();
    let stack = Message::new()
        .with("device", "Stack@1.0")
        .with("device-stack", list(&STACK))
        .with("input-prefix", "process")
        .with("output-prefix", "wasm")
        .with("passes", 2i64)
        .with("stack-keys", list(&["init", "compute"]))
        .with("process", process);
    let state = node.ok(&stack, Message::new().with("path", "init"));
    assert_eq!(state.get_str("function"), Some("handle"));
    let req = commit(
        &Message::new()
            .with("path", "compute")
            .with("body", commit(&eval(&pid, "return 1+1"), &key1()).unwrap())
            .with("block-height", 1i64),
        &key1(),
    )
    .unwrap();
    let state = node.ok(&state, req);
    assert_eq!(text(&state, "results/data"), "2");
    assert_eq!(text(&state, "results/wasm/type"), "ok");
}

/// A signed aos process on the stack (the reference's `test_aos_process`), with
/// `patch@1.0` in the stack when `patch` is set.
fn aos_process(node: &Node, nonce: &str, patch: bool) -> (Message, String) {
    aos_process_of(node, &node.image("aos-2-pure-xs.wasm"), nonce, patch)
}

/// [`aos_process`] on the module stored at `image`.
fn aos_process_of(node: &Node, image: &str, nonce: &str, patch: bool) -> (Message, String) {
    let mut stack = STACK.to_vec();
    if patch {
        stack.insert(3, "patch@1.0");
    }
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("authority", key2().address().as_str())
        .with("execution-device", "stack@1.0")
        .with("device-stack", list(&stack))
        .with("output-prefix", "wasm")
        .with("passes", 2i64)
        .with(
            "stack-keys",
            list(&["init", "compute", "snapshot", "normalize"]),
        )
        .with("patch-from", "/results/outbox")
        .with("image", image)
        .with("nonce", nonce);
    let def = commit(&def, &key1()).unwrap();
    let pid = node.spawn(&def);
    (def, pid)
}

/// Checklist 37 and 44.
#[test]
fn aos_process_slots_now_and_lua_errors() {
    let node = Node::new(Message::new());
    let (def, pid) = aos_process(&node, "slots", false);
    assert_eq!(node.schedule(&def, eval(&pid, "return 1+1")), 1);
    assert_eq!(node.schedule(&def, eval(&pid, "return 2+2")), 2);
    assert_eq!(text(&node.compute(&def, 1), "results/data"), "2");
    assert_eq!(text(&node.compute(&def, 2), "results/data"), "4");
    let now = node.resolve(&def, Message::new().with("path", "now/results/data"));
    assert_eq!(now.value, Value::text("4"), "now/results/data");
    // Asking for the slot again after `now`: the stored result.
    assert_eq!(text(&node.compute(&def, 2), "results/data"), "4");

    // A Lua error is a result (status ok), its text in `data`.
    assert_eq!(node.schedule(&def, eval(&pid, "error(\"boom\")")), 3);
    let state = node.compute(&def, 3);
    assert!(text(&state, "results/data").ends_with("boom"));
    assert!(get(&state, "results/status").is_none());
}

/// Checklist 38: a cold node (fresh devices over the same cache) continues from the
/// stored snapshot (a snapshot at every slot, as the reference's tests set it).
#[test]
fn restore_from_the_stored_snapshot() {
    let every_slot = Message::new().with("process_snapshot_slots", 1i64);
    let node = Node::new(every_slot.clone());
    let (def, pid) = aos_process(&node, "restore", false);
    node.schedule(&def, eval(&pid, "X = 42"));
    node.schedule(&def, eval(&pid, "X = 1337"));
    node.schedule(&def, eval(&pid, "return X"));
    let s2 = node.compute(&def, 2);
    assert_eq!(get(&s2, "at-slot"), Some(&Value::Integer(2)));
    // The state's ID does not depend on the snapshot: it is stored apart.
    let state = node
        .cache
        .read_path(&format!("computed/{pid}/slot/2"))
        .unwrap();
    let Some(Value::Message(state)) = state else {
        panic!("slot 2 stored");
    };
    assert!(state.get("snapshot").is_none());
    let snapshot = node
        .cache
        .read_path(&format!("computed/{pid}/snapshot/2"))
        .unwrap();
    let Some(Value::Message(snapshot)) = snapshot else {
        panic!("snapshot of slot 2 stored");
    };
    let memory = get(&snapshot, "3/body").and_then(Value::as_bytes).unwrap();
    assert_eq!(memory.len() % 65536, 0);

    let cold = Node::with_cache(every_slot, node.cache.clone());
    let s3 = cold.compute(&def, 3);
    assert_eq!(text(&s3, "results/data"), "1337");
}

/// The default snapshot policy: the first slot a worker computes is snapshotted,
/// later ones only when they have cost ten times that snapshot; a worker dropped for
/// idleness stores its live state's snapshot, from which a cold node continues.
#[test]
fn default_policy_and_dropped_workers_snapshot() {
    let idle = Message::new().with("process_worker_max_idle", 0i64);
    let node = Node::new(idle.clone());
    let (def, pid) = aos_process(&node, "policy", false);
    node.schedule(&def, eval(&pid, "X = 42"));
    node.schedule(&def, eval(&pid, "X = 1337"));
    node.compute(&def, 2);
    let snapshots = |node: &Node| -> Vec<i64> {
        let mut slots: Vec<i64> = node
            .cache
            .list(&format!("computed/{pid}/snapshot"))
            .unwrap()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        slots.sort_unstable();
        slots
    };
    // Slot 0 (the first computed); slots 1 and 2 cost far less than a 12 MiB snapshot.
    assert_eq!(snapshots(&node), vec![0]);

    // Another process's request drops the idle worker, which stores slot 2 first.
    let (other, _) = aos_process(&node, "policy-other", false);
    node.compute(&other, 0);
    assert_eq!(snapshots(&node), vec![0, 2]);

    node.schedule(&def, eval(&pid, "return X"));
    let cold = Node::with_cache(idle, node.cache.clone());
    assert_eq!(text(&cold.compute(&def, 3), "results/data"), "1337");
}

/// A module message's `Memory-Limit` tag (aos modules are published with one) caps
/// its instances' memory below the node's `wasm_memory_limit`.
#[test]
fn the_modules_memory_limit_caps_its_memory() {
    let node = Node::new(Message::new().with("process_snapshot_slots", 1i64));
    let module = Message::new()
        .with("body", Bytes::from(fixture("aos-2-pure-xs.wasm")))
        .with("memory-limit", "16-mb");
    let image = node.cache.write(&module).unwrap().to_human();
    let (def, pid) = aos_process_of(&node, &image, "memory-limit", false);
    node.schedule(&def, eval(&pid, "X = 7"));
    let bomb = node.schedule(
        &def,
        eval(&pid, r#"local s = "x" while true do s = s .. s end"#),
    );
    let state = node.compute(&def, bomb);
    assert!(
        text(&state, "results/data").contains("not enough memory"),
        "{state:?}"
    );
    let Some(Value::Message(snapshot)) = node
        .cache
        .read_path(&format!("computed/{pid}/snapshot/{bomb}"))
        .unwrap()
    else {
        panic!("the bomb's slot has a snapshot");
    };
    let memory = get(&snapshot, "3/body").and_then(Value::as_bytes).unwrap();
    assert!(memory.len() <= 16 << 20, "{} bytes", memory.len());
    let next = node.schedule(&def, eval(&pid, "return X"));
    assert_eq!(text(&node.compute(&def, next), "results/data"), "7");
}

/// Checklist 39.
#[test]
fn state_persists_between_slots() {
    let node = Node::new(Message::new());
    let (def, pid) = aos_process(&node, "persist", false);
    node.schedule(&def, eval(&pid, "X=1"));
    node.schedule(&def, eval(&pid, "return 2"));
    node.schedule(&def, eval(&pid, "return X"));
    assert_eq!(text(&node.compute(&def, 3), "results/data"), "1");
}

/// Checklist 40, 41, 42 and 43: the outbox, with `patch@1.0` in the stack.
#[test]
fn outbox_entries_and_patches() {
    let node = Node::new(Message::new());
    let (def, pid) = aos_process(&node, "outbox", true);
    let image = def.get_str("image").unwrap().to_owned();
    node.schedule(
        &def,
        eval(
            &pid,
            "table.insert(ao.outbox.Messages, { Target = ao.id, Action = \"State\", \
             Data = { Deep = 4, Bool = true } })",
        ),
    );
    node.schedule(
        &def,
        eval(
            &pid,
            "table.insert(ao.outbox.Messages, { Target = ao.id, Action = \"State\", \
             Data = { [\"content-type\"] = \"text/html\", body = \"<h1>Hello, world!</h1>\" } })",
        ),
    );
    node.schedule(
        &def,
        eval(
            &pid,
            "Send({ Target = ao.id, Action = \"Ping\" }) \
             table.insert(ao.outbox.Messages, { method = \"PATCH\", x = \"banana\" })",
        ),
    );
    let s1 = node.compute(&def, 1);
    assert_eq!(
        get(&s1, "results/outbox/1/data/Deep"),
        Some(&Value::Integer(4))
    );
    assert_eq!(text(&s1, "results/outbox/1/data/bool"), "true");
    assert_eq!(text(&s1, "results/outbox/1/action"), "State");
    assert_eq!(text(&s1, "results/outbox/1/target"), pid);

    let s2 = node.compute(&def, 2);
    let data = get(&s2, "results/outbox/1/data")
        .and_then(Value::as_message)
        .unwrap();
    assert_eq!(data.get_str("body"), Some("<h1>Hello, world!</h1>"));
    assert_eq!(data.get_str("content-type"), Some("text/html"));
    // As the HTTP form reads it: the data of outbox entry 1 at slot 2.
    let out = node.ok(
        &def,
        Message::new()
            .with("path", "compute/results/outbox/1/data")
            .with("slot", 2i64),
    );
    assert_eq!(out.get_str("body"), Some("<h1>Hello, world!</h1>"));

    let s3 = node.compute(&def, 3);
    assert_eq!(
        s3.get_str("x"),
        Some("banana"),
        "the PATCH message patched the state"
    );
    // The patch left the outbox; the `Send` stays, with aos's tags.
    let outbox = get(&s3, "results/outbox")
        .and_then(Value::as_message)
        .unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let (_, sent) = outbox.iter().next().unwrap();
    let sent = sent.as_message().unwrap();
    assert_eq!(sent.get_str("action"), Some("Ping"));
    assert_eq!(sent.get_str("data-protocol"), Some("ao"));
    assert!(sent.get("anchor").is_some() && sent.get("tags").is_some());

    for state in [&s1, &s2, &s3] {
        let outbox = get(state, "results/outbox")
            .and_then(Value::as_message)
            .unwrap();
        for (_, entry) in outbox.iter() {
            let entry = entry.as_message().unwrap();
            assert_eq!(entry.get_str("from-process"), Some(pid.as_str()));
            assert_eq!(entry.get_str("from-image"), Some(image.as_str()));
        }
    }
}

/// A trap (here: the fuel runs out) is the slot's error result; the memory is as
/// before the message and the next message works. A dry run from an older state, and
/// the live state afterwards, each see their own memory.
#[test]
fn a_trap_is_the_slots_result_and_the_process_carries_on() {
    let node = Node::new(Message::new().with(FUEL_OPTION, 500_000_000i64));
    let (def, pid) = aos_process(&node, "trap", false);
    node.schedule(&def, eval(&pid, "X = 10"));
    node.schedule(&def, eval(&pid, "X = X + 1 while true do end"));
    node.schedule(&def, eval(&pid, "X = X * 2 return X"));
    assert_eq!(text(&node.compute(&def, 1), "results/data"), "");
    let t = Instant::now();
    let s2 = node.compute(&def, 2);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(get(&s2, "results/status"), Some(&Value::Integer(500)));
    assert_eq!(text(&s2, "results/body"), WASM_ERROR);
    assert!(text(&s2, "results/error").contains("fuel"), "{s2:?}");
    assert_eq!(text(&s2, "results/wasm/type"), "error");
    // X was 10 before the failed message, and is again.
    let s3 = node.compute(&def, 3);
    assert_eq!(text(&s3, "results/data"), "20");

    // States that share the instance each see their own memory: a dry run from the
    // live state changes nothing for the next one from it, and a state whose memory
    // is gone (neither live nor the last snapshot) is refused rather than run on the
    // wrong memory.
    let dry = |state: &Message, code: &str| {
        let prepared = state
            .clone()
            .without("results")
            .with("device", "stack@1.0")
            .with("input-prefix", "process");
        let req = Message::new()
            .with("path", "compute")
            .with("body", commit(&eval(&pid, code), &key1()).unwrap());
        node.ctx.resolve(Value::Message(prepared), req)
    };
    let data = |r: Result<Outcome, hb_core::ResolveError>| match r {
        Ok(Outcome {
            value: Value::Message(m),
            ..
        }) => text(&m, "results/data"),
        other => panic!("{other:?}"),
    };
    assert_eq!(data(dry(&s3, "X = 99 return X")), "99");
    assert_eq!(data(dry(&s3, "return X")), "20");
    let stale = dry(&s2, "return X");
    assert!(format!("{stale:?}").contains("moved on"), "{stale:?}");
    node.schedule(&def, eval(&pid, "return X"));
    assert_eq!(text(&node.compute(&def, 4), "results/data"), "20");
}

/// `genesis-wasm@1.0`: an aos process as aoconnect spawns it (`module`, no stack).
#[test]
fn genesis_wasm_runs_aos_processes_in_the_node() {
    let node = Node::new(Message::new());
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2().address().as_str())
        .with("execution-device", "genesis-wasm@1.0")
        .with("module", node.image("aos-2-pure-xs.wasm"))
        .with("nonce", "genesis");
    let def = commit(&def, &key1()).unwrap();
    let pid = node.spawn(&def);
    node.schedule(&def, eval(&pid, "return 1 + 1"));
    node.schedule(
        &def,
        eval(
            &pid,
            "table.insert(ao.outbox.Messages, { method = \"PATCH\", y = \"kiwi\" }) return 3",
        ),
    );
    let s1 = node.compute(&def, 1);
    assert_eq!(text(&s1, "results/data"), "2");
    assert_eq!(s1.get_str("device"), Some("process@1.0"));
    assert!(
        s1.get("device-stack").is_none(),
        "the stack's keys are not left behind"
    );
    let s2 = node.compute(&def, 2);
    assert_eq!(text(&s2, "results/data"), "3");
    assert_eq!(
        s2.get_str("y"),
        Some("kiwi"),
        "genesis-wasm applies PATCH messages"
    );
    // Its snapshot restores on a cold node.
    node.schedule(&def, eval(&pid, "return 40 + 2"));
    let cold = Node::with_cache(Message::new(), node.cache.clone());
    assert_eq!(text(&cold.compute(&def, 3), "results/data"), "42");
}

// ---------------------------------------------------------------------------------
// WASI through the stack: the imports answered on the call's memory, the VFS in the
// state.

fn wasi_stack(image: Value, function: &str) -> Message {
    Message::new()
        .with("device", "stack@1.0")
        .with("device-stack", list(&["WASI@1.0", "WASM-64@1.0"]))
        .with("output-prefix", "wasm")
        .with("stack-keys", list(&["init", "compute"]))
        .with("image", image)
        .with("function", function)
}

/// Checklist 33: test-print's `hello()` writes through a wasm32 `fd_write`.
#[test]
fn wasi_fd_write_from_a_wasm32_module() {
    let node = Node::new(Message::new());
    let base = wasi_stack(Value::text(&node.image("test-print.wasm")), "hello");
    let state = node.ok(&base, Message::new().with("path", "init"));
    let state = node.ok(&state, Message::new().with("path", "compute"));
    assert_eq!(
        get(&state, "results/wasm/output"),
        Some(&Value::list(vec![Value::Integer(22)]))
    );
    let stdout = hb_wasm::wasi::stdout(&state).unwrap();
    assert!(stdout.starts_with(b"Hello, World!\nHowdy!\n"), "{stdout:?}");
    assert_eq!(
        get(&state, "file-descriptors/1/offset"),
        Some(&Value::Integer(stdout.len() as i64))
    );
}

/// `path_open`, `fd_write`, `fd_read` and `clock_time_get` on the VFS.
#[test]
fn wasi_files_in_the_state() {
    let wasm = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "path_open"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write"
            (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_read"
            (func $read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "clock_time_get"
            (func $clock (param i32 i64 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 0) "notes/a.txt")
          (data (i32.const 16) "hello")
          (data (i32.const 32) "\10\00\00\00\05\00\00\00")
          (data (i32.const 40) "\c8\00\00\00\10\00\00\00")
          (func (export "run") (result i32)
            (local $missing i32) (local $err i32)
            ;; a file in a directory that does not exist
            (local.set $missing (call $open (i32.const 3) (i32.const 0) (i32.const 0)
              (i32.const 11) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0)
              (i32.const 100)))
            ;; create a.txt (fd at 100), write "hello" (count at 104)
            (local.set $err (i32.or (local.get $err) (call $open (i32.const 3) (i32.const 0)
              (i32.const 6) (i32.const 5) (i32.const 1) (i64.const 0) (i64.const 0)
              (i32.const 0) (i32.const 100))))
            (local.set $err (i32.or (local.get $err) (call $write (i32.load (i32.const 100))
              (i32.const 32) (i32.const 1) (i32.const 104))))
            ;; open it again (fd at 108) and read it into 200 (count at 112)
            (local.set $err (i32.or (local.get $err) (call $open (i32.const 3) (i32.const 0)
              (i32.const 6) (i32.const 5) (i32.const 0) (i64.const 0) (i64.const 0)
              (i32.const 0) (i32.const 108))))
            (local.set $err (i32.or (local.get $err) (call $read (i32.load (i32.const 108))
              (i32.const 40) (i32.const 1) (i32.const 112))))
            (i32.add
              (i32.add
                (i32.mul (local.get $missing) (i32.const 1000000))
                (i32.mul (call $clock (i32.const 0) (i64.const 0) (i32.const 300))
                         (i32.const 100000)))
              (i32.add
                (i32.mul (local.get $err) (i32.const 10000))
                (i32.add (i32.mul (i32.load (i32.const 112)) (i32.const 1000))
                         (i32.load8_u (i32.const 200)))))))"#,
    )
    .unwrap();
    let node = Node::new(Message::new());
    let base = wasi_stack(Value::from(Bytes::from(wasm)), "run");
    let state = node.ok(&base, Message::new().with("path", "init"));
    let state = node.ok(&state, Message::new().with("path", "compute"));
    // ENOENT (44), no clock (1), no other error, 5 bytes read, 'h'.
    assert_eq!(
        get(&state, "results/wasm/output"),
        Some(&Value::list(vec![Value::Integer(44_105_104)]))
    );
    assert_eq!(text(&state, "vfs/a.txt"), "hello");
    assert_eq!(text(&state, "file-descriptors/3/filename"), "/a.txt");
    assert_eq!(
        get(&state, "file-descriptors/3/offset"),
        Some(&Value::Integer(5))
    );
    assert_eq!(
        get(&state, "file-descriptors/4/offset"),
        Some(&Value::Integer(5))
    );
}

/// aos-2-pure writes debug text to stdout (two iovecs): it lands in the VFS.
#[test]
fn aos_2_pure_stdout_in_the_vfs() {
    let node = Node::new(Message::new());
    let process = commit(
        &Message::new()
            .with("type", "Process")
            .with("image", node.image("aos-2-pure.wasm")),
        &key1(),
    )
    .unwrap();
    let pid = id_all(&process).unwrap().to_human();
    let stack = Message::new()
        .with("device", "stack@1.0")
        .with("device-stack", list(&STACK))
        .with("input-prefix", "process")
        .with("output-prefix", "wasm")
        .with("passes", 2i64)
        .with("stack-keys", list(&["init", "compute"]))
        .with("process", process);
    let state = node.ok(&stack, Message::new().with("path", "init"));
    // (aos-2-pure seeds its random numbers from the block height: it must be a number.)
    let req = Message::new()
        .with("path", "compute")
        .with("body", commit(&eval(&pid, "return 1+1"), &key1()).unwrap())
        .with("block-height", 1i64);
    let state = node.ok(&state, req);
    assert_eq!(text(&state, "results/data"), "2");
    let stdout = String::from_utf8_lossy(hb_wasm::wasi::stdout(&state).unwrap()).into_owned();
    assert!(stdout.contains("HELLO FROM LUA"), "{stdout}");
}

/// Two computations from one state, interleaved (the writes of one, then all of the
/// other, then the call of the first): the first is refused rather than run on the
/// other's memory, and the state still computes afterwards.
#[test]
fn interleaved_computations_do_not_mix() {
    let node = Node::new(Message::new());
    let process = commit(
        &Message::new()
            .with("type", "Process")
            .with("image", node.image("aos-2-pure-xs.wasm")),
        &key1(),
    )
    .unwrap();
    let pid = id_all(&process).unwrap().to_human();
    let stack = Message::new()
        .with("device", "stack@1.0")
        .with("device-stack", list(&STACK))
        .with("input-prefix", "process")
        .with("output-prefix", "wasm")
        .with("passes", 2i64)
        .with("stack-keys", list(&["init", "compute"]))
        .with("process", process);
    let state = node.ok(&stack, Message::new().with("path", "init"));
    let req = |code: &str| {
        Message::new()
            .with("path", "compute")
            .with("body", commit(&eval(&pid, code), &key1()).unwrap())
            .with("block-height", 1i64)
    };
    // First: json-iface's writes only.
    let written = node.ok(
        &state
            .clone()
            .with("device", "json-iface@1.0")
            .with("pass", 1i64),
        req("return 'first'"),
    );
    assert!(matches!(
        get(&written, "parameters/1"),
        Some(Value::Integer(_))
    ));
    // Second, all of it, from the same state.
    let second = node.ok(&state, req("return 'second'"));
    assert_eq!(text(&second, "results/data"), "second");
    // First's call: refused.
    let out = node.resolve(
        &written.with("device", "wasm-64@1.0"),
        Message::new().with("path", "compute"),
    );
    assert!(!out.is_ok());
    assert!(
        format!("{out:?}").contains("another computation"),
        "{out:?}"
    );
    // The state itself computes, on its own memory.
    let again = node.ok(&state, req("return 'again'"));
    assert_eq!(text(&again, "results/data"), "again");
}

/// On a thread with stack enough (as the `hb` binary's request threads), calls into
/// wasm run on that thread itself: imports that call back in, traps and limits, and
/// aos processes behave as on threads of their own.
#[test]
fn calls_run_inline_on_a_big_stack() {
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            imports_resolve_through_the_stdlib_device();
            a_trap_is_the_slots_result_and_the_process_carries_on();
            the_modules_memory_limit_caps_its_memory();
            aos_process_slots_now_and_lua_errors();
        })
        .unwrap()
        .join()
        .unwrap();
}
