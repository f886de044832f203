//! The engine on the small fixtures (spec 06 checklist 24, 28–33) and on hand-written
//! modules: calls and conversions, imports, memory helpers, snapshots, the module
//! cache, budgets and the memory cap, traps, the `invoke_*` trampoline.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixture, module, recording_imports};
use hb_wasm::{
    Engine, EngineConfig, HostError, ImportFunc, ImportResult, InstanceConfig, LoadSource,
    MemoryView, Stubs, TrapKind, Value, WasmError,
};

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid wat")
}

/// Checklist 24: `fac` on test.wasm and test-64.wasm (the same bytes).
#[test]
fn fac() {
    for name in ["test.wasm", "test-64.wasm"] {
        let mut inst = module(name)
            .instantiate(Stubs, InstanceConfig::default())
            .expect("instantiate");
        for (n, want) in [(5.0, 120.0), (6.0, 720.0), (3.0, 6.0)] {
            assert_eq!(
                inst.call("fac", &[Value::F64(n)]).expect("fac"),
                [Value::F64(want)]
            );
        }
        // Integers convert numerically to the f64 parameter (spec 06 §2.2.2).
        assert_eq!(
            inst.call("fac", &[Value::I64(5)]).expect("fac"),
            [Value::F64(120.0)]
        );
        // No memory.
        assert!(matches!(inst.memory_size(), Err(WasmError::NoMemory)));
    }
}

#[test]
fn call_errors() {
    let mut inst = module("test.wasm")
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    assert!(matches!(
        inst.call("nope", &[]),
        Err(WasmError::NoSuchFunction(_))
    ));
    assert!(matches!(
        inst.call("fac", &[]),
        Err(WasmError::ArgumentCount {
            expected: 1,
            given: 0,
            ..
        })
    ));
    assert_eq!(inst.func_sig("fac").expect("sig").to_string(), "(F)F");
    assert!(!inst.trapped());
}

/// Float arguments for integer parameters: integral values convert, others fail.
#[test]
fn numeric_conversion() {
    let bytes = wat(r#"(module (func (export "add") (param i32 i64) (result i64)
        local.get 0 i64.extend_i32_s local.get 1 i64.add))"#);
    let mut inst = Engine::new(EngineConfig::default())
        .expect("engine")
        .load(&bytes)
        .expect("load")
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    assert_eq!(
        inst.call("add", &[Value::F64(2.0), Value::F32(40.0)])
            .expect("add"),
        [Value::I64(42)]
    );
    // i32 takes the low 32 bits of an integer.
    assert_eq!(
        inst.call("add", &[Value::I64((1 << 32) + 1), Value::I64(1)])
            .expect("add"),
        [Value::I64(2)]
    );
    let err = inst
        .call("add", &[Value::F64(2.5), Value::I32(1)])
        .expect_err("2.5 is not an integer");
    assert!(matches!(err, WasmError::Conversion { .. }), "{err}");
}

/// Checklist 28–29: pow_calculator with `my_lib.mul` = a*b; snapshot, then a fresh
/// instance restored from it.
#[test]
fn pow_calculator_with_host_import_and_snapshot() {
    let m = module("pow_calculator.wasm");
    let calls = Arc::new(Mutex::new(0usize));
    let counter = calls.clone();
    let imports = move |f: &ImportFunc, args: &[Value], _: &mut MemoryView<'_>| -> ImportResult {
        if (f.module.as_str(), f.name.as_str()) != ("my_lib", "mul") {
            return Ok(None);
        }
        *counter.lock().expect("lock") += 1;
        assert_eq!(f.sig.to_string(), "(ii)i");
        let (a, b) = (args[0].as_i64().unwrap_or(0), args[1].as_i64().unwrap_or(0));
        Ok(Some(vec![Value::I64(a * b)]))
    };
    let mut inst = m
        .instantiate(imports, InstanceConfig::default())
        .expect("instantiate");
    assert_eq!(
        inst.call("pow", &[Value::I64(2), Value::I64(5)])
            .expect("pow"),
        [Value::I32(32)]
    );
    assert!(*calls.lock().expect("lock") >= 4);
    assert_eq!(
        inst.call("pow", &[Value::I64(2), Value::I64(2)])
            .expect("pow"),
        [Value::I32(4)]
    );

    let snapshot = inst.snapshot().expect("snapshot");
    assert_eq!(snapshot.len(), 17 * 65536);
    let imports = inst.into_imports();
    let mut fresh = m
        .instantiate_from_snapshot(imports, InstanceConfig::default(), &snapshot)
        .expect("restore");
    assert_eq!(fresh.snapshot().expect("snapshot"), snapshot);
    assert_eq!(
        fresh
            .call("pow", &[Value::I64(2), Value::I64(2)])
            .expect("pow"),
        [Value::I32(4)]
    );
}

/// Checklist 30, 31, 33: test-print's memory, bounds and `hello()` with a wasm32
/// fd_write.
#[test]
fn test_print_memory_and_fd_write() {
    let (imports, seen) = recording_imports();
    let mut inst = module("test-print.wasm")
        .instantiate(imports, InstanceConfig::default())
        .expect("instantiate");
    assert_eq!(inst.memory_size().expect("size"), 65_536);
    assert_eq!(inst.memory_pages().expect("pages"), 1);
    assert!(!inst.is_memory64());
    assert_eq!(inst.read(66, 13).expect("read"), b"Hello, World!");
    assert!(matches!(
        inst.read(1_000_000, 13),
        Err(WasmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        inst.write(1_000_000, b"Hello, World!\n\0\0"),
        Err(WasmError::OutOfBounds { .. })
    ));
    // The last byte in bounds, and one past it.
    assert!(inst.write(65_535, b"x").is_ok());
    assert!(inst.write(65_535, b"xy").is_err());
    assert!(inst.read(65_536, 0).is_ok());
    assert!(inst.read(u64::MAX, 2).is_err());

    assert_eq!(inst.call("hello", &[]).expect("hello"), [Value::I32(22)]);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.stdout, b"Hello, World!\nHowdy!\n\0");
    assert_eq!(seen.calls, ["wasi_snapshot_preview1.fd_write"]);
    drop(seen);
    // Writing over the data afterwards works.
    inst.write(0, b"Hello, World!").expect("write");
    assert_eq!(inst.read(0, 13).expect("read"), b"Hello, World!");
}

/// Checklist 32: test-calling's malloc and the string helpers.
#[test]
fn test_calling_malloc_and_strings() {
    let mut inst = module("test-calling.wasm")
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    assert!(inst.is_memory64());
    assert_eq!(inst.memory_pages().expect("pages"), 258);
    assert_ne!(inst.malloc(100).expect("malloc(100)"), 0);
    assert!(matches!(
        inst.malloc(134_217_728),
        Err(WasmError::MallocFailed)
    ));
    let ptr = inst.write_string(b"Hello, World!").expect("write_string");
    assert_eq!(inst.read_string(ptr).expect("read_string"), "Hello, World!");
    assert_eq!(inst.read(ptr + 13, 1).expect("read"), [0]);
    assert!(matches!(
        inst.read_string(inst.memory_size().expect("size") + 1),
        Err(WasmError::OutOfBounds { .. })
    ));
}

/// `read_string` is bounded: no NUL before the end of memory is an error.
#[test]
fn unterminated_string() {
    let bytes = wat(r#"(module (memory (export "memory") 1) (data (i32.const 65532) "abcd"))"#);
    let inst = Engine::new(EngineConfig::default())
        .expect("engine")
        .load(&bytes)
        .expect("load")
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    assert!(matches!(
        inst.read_string(65532),
        Err(WasmError::UnterminatedString { .. })
    ));
    assert_eq!(inst.read_c_bytes(0, 16).expect("empty"), b"");
    assert!(matches!(
        inst.read_c_bytes(65532, 2),
        Err(WasmError::UnterminatedString { max: 2, .. })
    ));
}

/// The disk cache: a second engine on the same directory (a restart) loads the
/// compiled module without compiling; the same engine answers from memory; a
/// corrupted artifact is recompiled. Also measures aos-2-pure-xs's cold and warm
/// load times.
#[test]
fn restart_does_not_recompile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let wasm = fixture("aos-2-pure-xs.wasm");

    let engine = Engine::new(config.clone()).expect("engine");
    let t = Instant::now();
    let m = engine.load(&wasm).expect("load");
    let cold = t.elapsed();
    assert_eq!(m.source(), LoadSource::Compiled);
    let t = Instant::now();
    assert_eq!(
        engine.load(&wasm).expect("load").source(),
        LoadSource::Memory
    );
    let memory = t.elapsed();

    let restarted = Engine::new(config.clone()).expect("engine");
    let t = Instant::now();
    let m2 = restarted.load(&wasm).expect("load");
    let disk = t.elapsed();
    assert_eq!(m2.source(), LoadSource::Disk);
    assert_eq!(m2.hash(), m.hash());
    eprintln!("aos-2-pure-xs: cold compile {cold:?}, from disk {disk:?}, from memory {memory:?}");
    let mut inst = m2
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    let out =
        hb_wasm::aos::handle(&mut inst, &common::msg("return 1 + 1"), common::ENV).expect("handle");
    assert!(out.contains(r#""data":"2""#), "{out}");

    // Corrupt the artifact: the checksum catches it and the module is recompiled.
    let files: Vec<_> = walk(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("write");
    let again = Engine::new(config).expect("engine");
    assert_eq!(
        again.load(&wasm).expect("load").source(),
        LoadSource::Compiled
    );
}

/// Two threads loading the same module: it is compiled once.
#[test]
fn concurrent_loads_compile_once() {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let wasm = fixture("pow_calculator.wasm");
    let sources: Vec<LoadSource> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| engine.load(&wasm).expect("load").source()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(
        sources
            .iter()
            .filter(|&&s| s == LoadSource::Compiled)
            .count(),
        1,
        "{sources:?}"
    );
    assert_eq!(
        sources.iter().filter(|&&s| s == LoadSource::Memory).count(),
        1,
        "{sources:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Invalid modules are errors, not panics.
#[test]
fn invalid_modules() {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    assert!(matches!(
        engine.load(b"not wasm"),
        Err(WasmError::LegacyEh(_))
    ));
    let mut truncated = fixture("test.wasm");
    truncated.truncate(50);
    assert!(engine.load(&truncated).is_err());
    // Well-formed binary, invalid code (type error).
    let bad = wat(r#"(module (func (result i32) i64.const 1))"#);
    assert!(
        matches!(engine.load(&bad), Err(WasmError::InvalidModule(_))),
        "type error"
    );
}

const LOOP: &str = r#"(module
    (memory (export "memory") 1)
    (global $g (mut i32) (i32.const 0))
    (func (export "spin") (loop $l (br $l)))
    (func (export "bump") (result i32)
        global.get $g i32.const 1 i32.add global.set $g global.get $g))"#;

/// Fuel: the loop traps with OutOfFuel; the instance answers the next call.
#[test]
fn fuel_budget() {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let config = InstanceConfig {
        fuel_per_call: 100_000_000,
        ..InstanceConfig::default()
    };
    let mut inst = engine
        .load(&wat(LOOP))
        .expect("load")
        .instantiate(Stubs, config)
        .expect("instantiate");
    let t = Instant::now();
    let err = inst.call("spin", &[]).expect_err("out of fuel");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        err.trap().map(|t| t.kind),
        Some(TrapKind::OutOfFuel),
        "{err}"
    );
    assert!(inst.trapped());
    assert_eq!(inst.call("bump", &[]).expect("bump"), [Value::I32(1)]);
    assert!(inst.last_fuel_used().expect("fuel") > 0);
}

/// Epoch interruption: a wall-clock deadline per call, with the ticker thread.
#[test]
fn epoch_deadline() {
    let engine = Engine::new(EngineConfig {
        fuel: false,
        epoch_tick: Some(Duration::from_millis(10)),
        ..EngineConfig::default()
    })
    .expect("engine");
    assert!(!engine.fuel_enabled());
    let config = InstanceConfig {
        deadline: Duration::from_millis(200),
        ..InstanceConfig::default()
    };
    let mut inst = engine
        .load(&wat(LOOP))
        .expect("load")
        .instantiate(Stubs, config)
        .expect("instantiate");
    let t = Instant::now();
    let err = inst.call("spin", &[]).expect_err("deadline");
    let elapsed = t.elapsed();
    assert_eq!(
        err.trap().map(|t| t.kind),
        Some(TrapKind::Deadline),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert_eq!(inst.call("bump", &[]).expect("bump"), [Value::I32(1)]);
    assert_eq!(inst.last_fuel_used(), None);
}

/// The memory cap (default 1 GiB): growth past it returns -1 to the module.
#[test]
fn memory_cap() {
    let bytes = wat(r#"(module (memory (export "memory") 1)
        (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))"#);
    let m = Engine::new(EngineConfig::default())
        .expect("engine")
        .load(&bytes)
        .expect("load");
    let mut inst = m
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    // 1 page + 16384 pages = 1 GiB + 64 KiB: refused.
    assert_eq!(
        inst.call("grow", &[Value::I32(16384)]).expect("grow"),
        [Value::I32(-1)]
    );
    assert!(inst.limit_hit());
    // Up to exactly 1 GiB: allowed.
    assert_eq!(
        inst.call("grow", &[Value::I32(16383)]).expect("grow"),
        [Value::I32(1)]
    );
    assert_eq!(inst.memory_size().expect("size"), 1 << 30);
    assert_eq!(
        inst.call("grow", &[Value::I32(1)]).expect("grow"),
        [Value::I32(-1)]
    );

    // A smaller cap; restoring a snapshot beyond it fails cleanly.
    let small = InstanceConfig {
        memory_limit: 4 * 65536,
        ..InstanceConfig::default()
    };
    let mut inst = m.instantiate(Stubs, small.clone()).expect("instantiate");
    assert_eq!(
        inst.call("grow", &[Value::I32(3)]).expect("grow"),
        [Value::I32(1)]
    );
    assert_eq!(
        inst.call("grow", &[Value::I32(1)]).expect("grow"),
        [Value::I32(-1)]
    );
    let err = m
        .instantiate_from_snapshot(Stubs, small, &vec![1u8; 5 * 65536])
        .expect_err("snapshot beyond the cap");
    assert!(matches!(err, WasmError::Grow { .. }), "{err}");
}

/// Traps become typed errors with the trap text; an import's error stops the call.
#[test]
fn traps() {
    let bytes = wat(r#"(module
        (import "host" "fail" (func $fail))
        (import "host" "answer" (func $answer (param i64) (result i32)))
        (memory (export "memory") 1)
        (tag $e (param i32))
        (func (export "unreachable") unreachable)
        (func (export "oob") (result i32) i32.const 70000 i32.load)
        (func (export "div") (result i32) i32.const 1 i32.const 0 i32.div_s)
        (func (export "fail") call $fail)
        (func (export "answer") (result i32) i64.const 7 call $answer)
        (func $rec (export "recurse") (param i32) (result i32)
            local.get 0 i32.const 1 i32.add call $rec)
        (func (export "throw") i32.const 1 throw $e))"#);
    let imports = |f: &ImportFunc, args: &[Value], _: &mut MemoryView<'_>| -> ImportResult {
        match f.name.as_str() {
            "fail" => Err(HostError::new("device said no")),
            "answer" => Ok(Some(vec![Value::I64(args[0].as_i64().unwrap_or(0) * 6)])),
            _ => Ok(None),
        }
    };
    let mut inst = Engine::new(EngineConfig::default())
        .expect("engine")
        .load(&bytes)
        .expect("load")
        .instantiate(imports, InstanceConfig::default())
        .expect("instantiate");
    let kind = |r: Result<Vec<Value>, WasmError>| {
        let e = r.expect_err("trap");
        let t = e
            .trap()
            .unwrap_or_else(|| panic!("not a trap: {e}"))
            .clone();
        (t.kind, t.message)
    };
    let (k, m) = kind(inst.call("unreachable", &[]));
    assert_eq!(k, TrapKind::Unreachable);
    assert!(m.contains("unreachable"), "{m}");
    assert_eq!(kind(inst.call("oob", &[])).0, TrapKind::MemoryOutOfBounds);
    let (k, m) = kind(inst.call("div", &[]));
    assert_eq!(k, TrapKind::Other);
    assert!(m.contains("divide by zero"), "{m}");
    let (k, m) = kind(inst.call("fail", &[]));
    assert_eq!(k, TrapKind::Import);
    assert!(
        m.contains("host.fail") && m.contains("device said no"),
        "{m}"
    );
    assert_eq!(
        kind(inst.call("recurse", &[Value::I32(0)])).0,
        TrapKind::StackOverflow
    );
    assert_eq!(kind(inst.call("throw", &[])).0, TrapKind::UncaughtException);
    // The import's i64 answer converts to the i32 result; the instance still works.
    assert_eq!(inst.call("answer", &[]).expect("answer"), [Value::I32(42)]);
}

/// Imports the module declares with non-numeric signatures, and memories, tables,
/// globals and tags it imports, are all provided.
#[test]
fn every_import_is_bound() {
    let bytes = wat(r#"(module
        (import "env" "memory" (memory 1))
        (import "env" "table" (table 2 funcref))
        (import "env" "g" (global i64))
        (import "env" "tag" (tag (param i32)))
        (import "env" "refs" (func $refs (param externref) (result funcref)))
        (import "wasi_snapshot_preview1" "random_get" (func $rnd (param i32 i32) (result i32)))
        (func (export "run") (result i32)
            ref.null extern call $refs ref.is_null
            i32.const 0 i32.const 4 call $rnd i32.add
            global.get 0 i32.wrap_i64 i32.add
            i32.const 0 i32.load i32.add))"#);
    let m = Engine::new(EngineConfig::default())
        .expect("engine")
        .load(&bytes)
        .expect("load");
    assert_eq!(m.import_funcs().len(), 2);
    let mut inst = m
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    // refs → null (1), random_get → 0 and writes nothing, g = 0, memory zeroed.
    assert_eq!(inst.call("run", &[]).expect("run"), [Value::I32(1)]);
    assert_eq!(inst.memory_size().expect("imported memory"), 65536);
    assert_eq!(inst.stub_calls(), 1);
}

/// The emscripten `invoke_*` trampoline (spec 06 §2.3.5): results pass through; a
/// longjmp or a trap in the callee restores the shadow stack, calls `setThrew(1, 0)`
/// and returns zeros; a budget trap is not swallowed.
#[test]
fn invoke_trampoline() {
    let bytes = wat(r#"(module
        (import "env" "invoke_ii" (func $invoke_ii (param i32 i32) (result i32)))
        (import "env" "invoke_v" (func $invoke_v (param i32)))
        (import "env" "_emscripten_throw_longjmp" (func $throw_longjmp))
        (memory (export "memory") 1)
        (global $sp (mut i32) (i32.const 1000))
        (global $threw (mut i32) (i32.const 0))
        (global $threw_value (mut i32) (i32.const 0))
        (table (export "__indirect_function_table") 5 funcref)
        (elem (i32.const 0) $double $jump $trap $spin)
        (func $double (param i32) (result i32) local.get 0 i32.const 2 i32.mul)
        (func $jump (param i32) (result i32)
            global.get $sp i32.const 100 i32.sub global.set $sp
            call $throw_longjmp i32.const -1)
        (func $trap (param i32) (result i32)
            global.get $sp i32.const 50 i32.sub global.set $sp
            unreachable)
        (func $spin (loop $l (br $l)))
        (func (export "emscripten_stack_get_current") (result i32) global.get $sp)
        (func (export "_emscripten_stack_restore") (param i32) local.get 0 global.set $sp)
        (func (export "setThrew") (param i32 i32)
            global.get $threw i32.eqz if local.get 0 global.set $threw local.get 1 global.set $threw_value end)
        (func (export "call") (param i32 i32) (result i32)
            i32.const 0 global.set $threw
            local.get 0 local.get 1 call $invoke_ii)
        (func (export "threw") (result i32) global.get $threw)
        (func (export "sp") (result i32) global.get $sp)
        (func (export "spin") i32.const 3 call $invoke_v))"#);
    let m = Engine::new(EngineConfig::default())
        .expect("engine")
        .load(&bytes)
        .expect("load");
    let config = InstanceConfig {
        fuel_per_call: 50_000_000,
        ..InstanceConfig::default()
    };
    let mut inst = m.instantiate(Stubs, config).expect("instantiate");
    let i32s = |v: &[i32]| v.iter().map(|&x| Value::I32(x)).collect::<Vec<_>>();
    assert_eq!(
        inst.call("call", &i32s(&[0, 21])).expect("double"),
        [Value::I32(42)]
    );
    assert_eq!(inst.call("threw", &[]).expect("threw"), [Value::I32(0)]);
    for target in [1, 2] {
        // longjmp, then a trap: caught, zeros, stack restored, threw set.
        assert_eq!(
            inst.call("call", &i32s(&[target, 5])).expect("caught"),
            [Value::I32(0)]
        );
        assert_eq!(inst.call("threw", &[]).expect("threw"), [Value::I32(1)]);
        assert_eq!(inst.call("sp", &[]).expect("sp"), [Value::I32(1000)]);
    }
    // A null table entry traps like a `call_indirect` would: caught the same way.
    assert_eq!(
        inst.call("call", &i32s(&[4, 5])).expect("caught"),
        [Value::I32(0)]
    );
    assert_eq!(inst.call("threw", &[]).expect("threw"), [Value::I32(1)]);
    // A callee of another signature is a module bug: the call fails.
    let err = inst
        .call("call", &i32s(&[3, 0]))
        .expect_err("type mismatch");
    assert_eq!(err.trap().map(|t| t.kind), Some(TrapKind::Other), "{err}");
    let err = inst.call("spin", &[]).expect_err("fuel is not swallowed");
    assert_eq!(
        err.trap().map(|t| t.kind),
        Some(TrapKind::OutOfFuel),
        "{err}"
    );
    assert_eq!(inst.stub_calls(), 0, "invoke_* never reaches Imports");
}
