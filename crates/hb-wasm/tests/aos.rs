//! aos-2-pure-xs through the raw json-iface ABI (spec 06 §2.5.4; checklist 30, 35,
//! 44–48), the budget and memory limits on it, and the other aos builds.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{ENV, fixture, module, msg, recording_imports};
use hb_wasm::{Imports, Instance, InstanceConfig, Stubs, TrapKind, WasmError, aos};

fn response<I: Imports>(instance: &mut Instance<I>, code: &str) -> serde_json::Value {
    let out = aos::handle(instance, &msg(code), ENV).expect("handle");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("aos answered non-JSON ({e}): {out:?}"))
}

fn data(v: &serde_json::Value) -> &str {
    v["response"]["Output"]["data"]
        .as_str()
        .unwrap_or_else(|| panic!("no Output.data in {v}"))
}

/// Serialises the CPU-heavy tests of this binary, so that the timing of one is not
/// the contention of the others (2 cores).
fn heavy() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn aos_instance() -> Instance<Stubs> {
    module("aos-2-pure-xs.wasm")
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate")
}

/// Checklist 35 and 46.
#[test]
fn return_1_plus_1_and_only_clock_time_get_is_called() {
    let (imports, seen) = recording_imports();
    let mut inst = module("aos-2-pure-xs.wasm")
        .instantiate(imports, InstanceConfig::default())
        .expect("instantiate");
    let r = response(&mut inst, "return 1 + 1");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(data(&r), "2");
    // More of the vectors on the same instance: still no other import.
    assert_eq!(data(&response(&mut inst, "X = 42")), "");
    assert_eq!(data(&response(&mut inst, "return X")), "42");
    assert_eq!(data(&response(&mut inst, "print(\"hi\")")), "hi");
    assert!(response(&mut inst, "error(\"boom\")")["response"]["Error"].is_string());
    let seen = seen.lock().expect("lock");
    assert_eq!(
        seen.calls,
        ["wasi_snapshot_preview1.clock_time_get"],
        "only one clock call"
    );
    assert!(seen.stdout.is_empty());
}

/// Checklist 30 (Rust value: 192 pages; the reference reports 193) and 47.
#[test]
fn memory_and_imports() {
    let m = module("aos-2-pure-xs.wasm");
    let mut names: Vec<String> = m
        .import_funcs()
        .iter()
        .map(|f| format!("{}.{} {}", f.module, f.name, f.sig))
        .collect();
    names.sort();
    let mut expected = [
        "wasi_snapshot_preview1.fd_close (i)i",
        "wasi_snapshot_preview1.fd_write (iIII)i",
        "wasi_snapshot_preview1.proc_exit (i)",
        "wasi_snapshot_preview1.fd_seek (iIiI)i",
        "wasi_snapshot_preview1.fd_read (iIII)i",
        "wasi_snapshot_preview1.environ_sizes_get (II)i",
        "wasi_snapshot_preview1.environ_get (II)i",
        "wasi_snapshot_preview1.clock_time_get (iII)i",
        "env.__syscall_unlinkat (iIi)i",
        "env._emscripten_system (I)i",
        "env.__syscall_rmdir (I)i",
        "env.__syscall_renameat (iIiI)i",
        "env.__syscall_readlinkat (iIII)i",
        "env.__syscall_dup3 (iii)i",
    ];
    expected.sort();
    assert_eq!(names, expected);
    // All stubbed (zeros): the module still works.
    let mut inst = aos_instance();
    assert_eq!(inst.memory_pages().expect("pages"), 192);
    assert!(inst.is_memory64());
    assert_eq!(data(&response(&mut inst, "return 1 + 1")), "2");
    assert_eq!(inst.stub_calls(), 1, "clock_time_get answered by the stub");
}

/// Checklist 44.
#[test]
fn lua_error_is_a_response() {
    let mut inst = aos_instance();
    let r = response(&mut inst, "error(\"boom\")");
    assert_eq!(r["ok"], true, "{r}");
    let error = r["response"]["Error"]
        .as_str()
        .unwrap_or_else(|| panic!("no Error in {r}"));
    assert!(error.ends_with("boom"), "{error}");
    assert!(r["response"]["Output"].is_null(), "{r}");
}

/// Checklist 48: Lua's protected calls go through the rewritten try/catch.
#[test]
fn pcall_catches_through_the_rewritten_exception_handling() {
    let mut inst = aos_instance();
    let r = response(
        &mut inst,
        r#"local ok, e = pcall(error, "inner"); return tostring(ok) .. ":" .. e"#,
    );
    assert_eq!(data(&r), "false:inner");
    // Nested protected calls and an error after a caught one.
    let r = response(
        &mut inst,
        r#"local ok, e = pcall(function() local ok2, e2 = pcall(error, "deep"); error("outer:" .. e2) end)
           return tostring(ok) .. ":" .. e"#,
    );
    assert!(
        data(&r).starts_with("false:") && data(&r).ends_with("outer:deep"),
        "{r}"
    );
    assert_eq!(data(&response(&mut inst, "return 2 + 3")), "5");
}

/// Checklist 45 and spec 06 §2.5.5.
#[test]
fn snapshot_restores_into_a_fresh_instance() {
    let mut inst = aos_instance();
    assert_eq!(data(&response(&mut inst, "X = 42")), "");
    assert_eq!(data(&response(&mut inst, "return ao.id")), "AOS");
    let snapshot = inst.snapshot().expect("snapshot");
    assert_eq!(snapshot.len() as u64, inst.memory_size().expect("size"));

    let mut fresh = module("aos-2-pure-xs.wasm")
        .instantiate_from_snapshot(Stubs, InstanceConfig::default(), &snapshot)
        .expect("restore");
    assert_eq!(data(&response(&mut fresh, "return X")), "42");
    // The original carries on independently.
    assert_eq!(data(&response(&mut inst, "X = 7 return X")), "7");
    assert_eq!(data(&response(&mut fresh, "return X")), "42");
}

/// A snapshot larger than the module's initial memory: the fresh memory grows first.
#[test]
fn restore_grows_the_memory() {
    let mut inst = aos_instance();
    let r = response(
        &mut inst,
        r#"Big = string.rep("y", 20 * 1024 * 1024) return #Big"#,
    );
    assert_eq!(data(&r), "20971520");
    let pages = inst.memory_pages().expect("pages");
    assert!(pages > 192, "memory grew ({pages} pages)");
    let snapshot = inst.snapshot().expect("snapshot");
    let mut fresh = aos_instance()
        .reset(Some(&snapshot))
        .expect("reset with snapshot");
    assert_eq!(fresh.memory_pages().expect("pages"), pages);
    assert_eq!(data(&response(&mut fresh, "return #Big + 1")), "20971521");
}

/// An infinite loop stops within a second (fuel), and the instance restored from the
/// last snapshot answers the next message.
#[test]
fn infinite_loop_runs_out_of_fuel() {
    let _heavy = heavy();
    let mut inst = aos_instance();
    assert_eq!(data(&response(&mut inst, "X = 1")), "");
    let snapshot = inst.snapshot().expect("snapshot");
    let t = Instant::now();
    let err = aos::handle(&mut inst, &msg("while true do end"), ENV).expect_err("must not finish");
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let trap = err.trap().unwrap_or_else(|| panic!("not a trap: {err}"));
    assert_eq!(trap.kind, TrapKind::OutOfFuel, "{trap}");
    assert!(trap.message.contains("fuel"), "{trap}");
    assert!(inst.trapped());
    eprintln!("infinite loop stopped after {elapsed:?}: {trap}");

    // The same instance still answers (the shadow stack was restored)…
    assert_eq!(data(&response(&mut inst, "return 40 + 2")), "42");
    // …and one restored from the snapshot is back to the known state.
    let mut inst = inst.reset(Some(&snapshot)).expect("reset");
    assert!(!inst.trapped());
    assert_eq!(data(&response(&mut inst, "X = X + 1 return X")), "2");
}

/// Inside `pcall` too: the budget trap is not a Lua error.
#[test]
fn pcall_cannot_catch_the_budget() {
    let _heavy = heavy();
    let mut inst = aos_instance();
    let err = aos::handle(
        &mut inst,
        &msg("pcall(function() while true do end end)"),
        ENV,
    )
    .expect_err("must not finish");
    assert_eq!(
        err.trap().map(|t| t.kind),
        Some(TrapKind::OutOfFuel),
        "{err}"
    );
}

/// The memory bomb of the issue.
const BOMB: &str = r#"local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1e6) end"#;

/// A memory bomb stops at the cap: growth is refused, malloc returns NULL and Lua
/// reports "not enough memory"; the process (and the test) carries on. (The fuel
/// budget is raised so that the memory cap, not the fuel, stops it.)
#[test]
fn memory_bomb_stops_at_the_cap() {
    let _heavy = heavy();
    let config = InstanceConfig {
        memory_limit: 64 << 20,
        fuel_per_call: 100_000_000_000,
        ..InstanceConfig::default()
    };
    let mut inst = module("aos-2-pure-xs.wasm")
        .instantiate(Stubs, config)
        .expect("instantiate");
    let t = Instant::now();
    let out = aos::handle(&mut inst, &msg(BOMB), ENV);
    eprintln!(
        "memory bomb (64 MiB cap) ended after {:?}: {out:?}",
        t.elapsed()
    );
    assert!(inst.limit_hit(), "the cap was reached");
    assert!(inst.memory_size().expect("size") <= 64 << 20);
    let json = out.expect("aos reports the failed allocation as a Lua error");
    assert!(json.contains("not enough memory"), "{json}");
    // The instance carries on (Lua freed the table).
    assert_eq!(
        data(&response(&mut inst, "collectgarbage() return 1 + 1")),
        "2"
    );
}

/// Under the default limits the same bomb is stopped too (by whichever limit comes
/// first: the fuel, with this bomb), without harm to the node.
#[test]
fn memory_bomb_default_limits() {
    let _heavy = heavy();
    let mut inst = aos_instance();
    let t = Instant::now();
    let out = aos::handle(&mut inst, &msg(BOMB), ENV);
    eprintln!(
        "memory bomb (default limits) ended after {:?}: {out:?}",
        t.elapsed()
    );
    assert!(inst.memory_size().expect("size") <= 1 << 30);
    match out {
        Ok(json) => assert!(json.contains("not enough memory"), "{json}"),
        Err(e) => assert!(e.trap().is_some(), "{e}"),
    }
}

/// A memory cap below the module's initial memory: instantiation fails cleanly.
#[test]
fn cap_below_initial_memory() {
    let config = InstanceConfig {
        memory_limit: 1 << 20,
        ..InstanceConfig::default()
    };
    let err = module("aos-2-pure-xs.wasm")
        .instantiate(Stubs, config)
        .expect_err("12 MiB module under a 1 MiB cap");
    assert!(matches!(err, WasmError::Instantiate(_)), "{err}");
}

fn ping(name: &str) {
    let mut inst = module(name)
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    let out = aos::handle(&mut inst, &msg("ping"), ENV).expect("handle");
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["response"]["Output"], "sent pong reply", "{out}");
}

/// The minimal ping module with legacy exception handling.
#[test]
fn standalone_wex_aos_ping() {
    ping("test-standalone-wex-aos.wasm");
}

/// The ping module built with JS-style exceptions: needs the `invoke_*` trampoline.
#[test]
fn wasi_aos_ping_through_invoke() {
    let m = module("test-wasi-aos.wasm");
    assert!(m.import_funcs().iter().any(|f| f.name == "invoke_vjj"));
    ping("test-wasi-aos.wasm");
}

/// aos-2-pure (96 MiB memory): same answer; its debug prints go through fd_write with
/// two iovecs.
#[test]
fn aos_2_pure_with_stdout() {
    let (imports, seen) = recording_imports();
    let mut inst = module("aos-2-pure.wasm")
        .instantiate(imports, InstanceConfig::default())
        .expect("instantiate");
    assert_eq!(data(&response(&mut inst, "return 1 + 1")), "2");
    let seen = seen.lock().expect("lock");
    let stdout = String::from_utf8_lossy(&seen.stdout);
    assert!(stdout.contains("HELLO FROM LUA"), "{stdout}");
}

/// The fixture's bytes are what the README says (a guard against a changed fixture).
#[test]
fn fixture_hash() {
    let m = hb_wasm::Engine::new(hb_wasm::EngineConfig::default())
        .expect("engine")
        .load(&fixture("test.wasm"))
        .expect("load");
    assert_eq!(
        m.hash()[..8],
        [0x0e, 0x49, 0x98, 0x80, 0xac, 0x16, 0x84, 0x67]
    );
}
