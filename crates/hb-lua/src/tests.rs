//! Tests of the engine: ABI, sandbox, determinism, snapshots, limits.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::*;

/// One engine per test binary; compiled modules are cached on disk so the child
/// processes of the cross-process test do not compile again.
fn engine() -> &'static LuaEngine {
    static ENGINE: OnceLock<LuaEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = hb_wasm::EngineConfig {
            cache_dir: Some(std::env::temp_dir().join("hb-lua-test-cache")),
            ..Default::default()
        };
        let wasm = hb_wasm::Engine::new(config).expect("wasm engine");
        LuaEngine::new(&wasm).expect("Lua engine")
    })
}

fn lua() -> Lua {
    engine().create(LuaConfig::default()).expect("instance")
}

fn int(i: i64) -> LuaValue {
    LuaValue::Integer(i)
}

fn s(text: &str) -> LuaValue {
    LuaValue::from(text)
}

#[test]
fn engine_module_hash_is_pinned() {
    assert_eq!(
        engine_sha256_hex(),
        ENGINE_SHA256,
        "the engine module changed: it is part of the determinism contract (pairs order, \
         fuel, snapshots); update ENGINE_SHA256 only on purpose"
    );
}

#[test]
fn engine_module_imports_only_what_the_host_provides() {
    let module = engine()
        .wasm_engine()
        .load(ENGINE_WASM)
        .expect("module loads");
    let mut imports: Vec<String> = module
        .import_funcs()
        .iter()
        .map(|i| format!("{}.{}", i.module, i.name))
        .collect();
    imports.sort();
    let expected = [
        "env._emscripten_throw_longjmp",
        "env.invoke_vii",
        "hb.host_call",
        "hb.host_result",
        "hb.output",
    ];
    for e in expected {
        assert!(imports.iter().any(|i| i == e), "missing import {e}");
    }
    for i in &imports {
        assert!(
            expected.contains(&i.as_str()) || i.starts_with("wasi_snapshot_preview1."),
            "unexpected import {i}"
        );
        assert_ne!(i, "wasi_snapshot_preview1.random_get", "no host randomness");
    }
}

#[test]
fn load_call_eval_and_values() {
    let mut lua = lua();
    let out = lua
        .load("m", "function add(a, b) return a + b end; return 1, 'x'")
        .expect("load");
    assert_eq!(out, vec![int(1), s("x")]);
    assert_eq!(
        lua.call("add", &[int(2), int(2)]).expect("call"),
        vec![int(4)]
    );
    assert_eq!(
        lua.call("add", &[int(1), LuaValue::Float(0.5)])
            .expect("call"),
        vec![LuaValue::Float(1.5)]
    );
    assert_eq!(lua.eval("4 / 2").expect("eval"), vec![LuaValue::Float(2.0)]);
    assert_eq!(lua.eval("x = 5").expect("statement"), vec![]);
    assert_eq!(
        lua.eval("x, nil, true").expect("eval"),
        vec![int(5), LuaValue::Nil, true.into()]
    );
    assert_eq!(
        lua.eval("math.maxinteger + 1 == math.mininteger")
            .expect("eval"),
        vec![true.into()]
    );

    // Binary strings and nested tables both ways.
    lua.load("echo", "function echo(...) return ... end")
        .expect("load");
    let nested: LuaValue = LuaTable::array([s("a"), LuaValue::string(vec![0, 255])])
        .with("k", LuaTable::new().with("deep", LuaValue::Float(-0.0)))
        .into();
    let mut back = lua
        .call("echo", std::slice::from_ref(&nested))
        .expect("echo");
    let mut expected = nested;
    if let (LuaValue::Table(a), LuaValue::Table(b)) = (&mut back[0], &mut expected) {
        a.sort();
        b.sort();
    }
    assert_eq!(back, vec![expected]);

    // Functions come back as opaque values; they cannot go in.
    let out = lua.eval("print, {f = print}").expect("eval");
    assert_eq!(out[0], LuaValue::Opaque("function".into()));
    assert!(matches!(
        lua.call("echo", &[LuaValue::Opaque("function".into())]),
        Err(LuaError::BadRequest(_))
    ));
}

#[test]
fn handler_style_call() {
    let mut lua = lua();
    lua.load(
        "h",
        "count = 0
         function handle(msg) count = count + msg.inc; return {count = count, from = msg.from} end",
    )
    .expect("load");
    for i in 1..=3 {
        let msg = LuaTable::new().with("inc", 2).with("from", "me");
        let out = lua.call("handle", &[msg.into()]).expect("call");
        let t = out[0].as_table().expect("table");
        assert_eq!(t.get_str("count"), Some(&int(2 * i)));
        assert_eq!(t.get_str("from"), Some(&s("me")));
    }
}

#[test]
fn lua_errors_are_results() {
    let mut lua = lua();
    match lua.eval("error('boom')") {
        Err(LuaError::Runtime {
            message, traceback, ..
        }) => {
            assert_eq!(message, "eval:1: boom");
            assert!(traceback.contains("stack traceback"), "{traceback}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match lua.eval("error({code = 7})") {
        Err(LuaError::Runtime { value, message, .. }) => {
            assert_eq!(
                value.as_table().and_then(|t| t.get_str("code")),
                Some(&int(7))
            );
            assert_eq!(message, "(error object is a table value)");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        matches!(lua.load("bad", "x = = 1"), Err(LuaError::Syntax(m)) if m.starts_with("bad:1:"))
    );
    assert!(matches!(
        lua.call("nope", &[]),
        Err(LuaError::Runtime { message, .. }) if message.contains("'nope' is not a function")
    ));
    // pcall, error objects and coroutines behave as in native Lua.
    let out = lua
        .eval(
            "(function()
               local ok, e = pcall(error, 'x', 0)
               local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1); error(b) end)
               local first = co(1)
               local ok2, e2 = pcall(co, 'in coroutine')
               local ok3, e3 = xpcall(function() error('h') end, function(m) return 'handled ' .. m end)
               return ok, e, first, ok2, e2, e3
             end)()",
        )
        .expect("eval");
    assert_eq!(
        out,
        vec![
            false.into(),
            s("x"),
            int(2),
            false.into(),
            s("eval:3: in coroutine"),
            s("handled eval:6: h")
        ]
    );
    // Deep recursion is a Lua error, not a trap.
    let err = lua
        .eval("(function() local function f(n) return f(n + 1) + 1 end return f(1) end)()")
        .expect_err("overflow");
    assert!(err.to_string().contains("stack overflow"), "{err}");
    // And the instance is fine afterwards.
    assert_eq!(lua.eval("1 + 1").expect("eval"), vec![int(2)]);
}

#[test]
fn host_calls() {
    let mut lua = lua();
    lua.set_host_call(
        |args: Vec<LuaValue>| -> Result<Vec<LuaValue>, HostCallError> {
            match args.first().and_then(LuaValue::as_str) {
                Some("add") => {
                    let a = args.get(1).and_then(LuaValue::as_integer).unwrap_or(0);
                    let b = args.get(2).and_then(LuaValue::as_integer).unwrap_or(0);
                    Ok(vec![LuaValue::Integer(a + b), "ok".into()])
                }
                Some("table") => Ok(vec![LuaTable::new().with("k", "v").into()]),
                Some("fail") => Err(HostCallError::Lua("host says no".into())),
                Some("abort") => Err(HostCallError::Abort("fatal".into())),
                _ => Ok(vec![]),
            }
        },
    );
    assert_eq!(
        lua.eval("_hb.call('add', 40, 2)").expect("eval"),
        vec![int(42), s("ok")]
    );
    assert_eq!(lua.eval("_hb.call('table').k").expect("eval"), vec![s("v")]);
    assert_eq!(
        lua.eval("select(2, pcall(_hb.call, 'fail'))")
            .expect("eval"),
        vec![s("host says no")]
    );
    assert!(
        lua.eval("_hb.call('x', print)").is_ok(),
        "opaque arguments reach the host as Opaque"
    );
    lua.eval("before_abort = 1").expect("eval");
    let err = lua.eval("pcall(_hb.call, 'abort')").expect_err("aborts");
    assert_eq!(err.trap_kind(), Some(TrapKind::Import));
    assert!(matches!(
        err,
        LuaError::Trap {
            rolled_back: true,
            ..
        }
    ));
    // Rolled back to the checkpoint taken at creation.
    assert_eq!(lua.eval("before_abort").expect("eval"), vec![LuaValue::Nil]);
    // The callback survives the rollback.
    assert_eq!(lua.eval("_hb.call('add', 1, 1)").expect("eval")[0], int(2));
    // Without a callback, _hb.call is a Lua error.
    let mut plain = self::lua();
    assert!(matches!(
        plain.eval("_hb.call('x')"),
        Err(LuaError::Runtime { .. })
    ));
}

#[test]
fn sandbox() {
    let mut lua = lua();
    lua.eval("print('a', 1, nil, 2.5) io.write('b', 'c')")
        .expect("print");
    assert_eq!(lua.take_output(), b"a\t1\tnil\t2.5\nbc");
    // Longer than Lua's buffer (LUAL_BUFFERSIZE), with a __tostring metamethod.
    lua.eval("print(string.rep('a', 10000), setmetatable({}, {__tostring = function() return 'T' end}), string.rep('b', 9000))")
        .expect("long print");
    let long = lua.take_output();
    assert_eq!(long.len(), 10000 + 1 + 1 + 1 + 9000 + 1);
    assert!(long.starts_with(b"aaaa") && long.ends_with(b"bbb\n"));
    assert_eq!(&long[10000..10003], b"\tT\t");
    assert_eq!(
        lua.eval("os.getenv('HOME')").expect("getenv"),
        vec![LuaValue::Nil]
    );
    for code in [
        "os.execute('ls')",
        "os.exit(1)",
        "os.remove('x')",
        "os.rename('a', 'b')",
        "os.tmpname()",
        "dofile('x')",
        "loadfile('x')",
        "package.loadlib('x', 'y')",
        "require('socket')",
        "io.open('x')",
    ] {
        assert!(
            matches!(lua.eval(code), Err(LuaError::Runtime { .. })),
            "{code} should fail"
        );
    }
    // Binary chunks are refused, text chunks and preloaded modules work.
    let out = lua
        .eval("load(string.dump(function() return 1 end))")
        .expect("load returns nil, message");
    assert_eq!(out[0], LuaValue::Nil);
    assert!(
        out[1].as_str().is_some_and(|m| m.contains("binary")),
        "{:?}",
        out[1]
    );
    assert_eq!(lua.eval("load('return 7')()").expect("load"), vec![int(7)]);
    assert_eq!(
        lua.eval("load('return x', 'n', 'bt', {x = 3})()")
            .expect("env"),
        vec![int(3)]
    );
    lua.eval("package.preload.m = function() return {v = 9} end")
        .expect("preload");
    assert_eq!(lua.eval("require('m').v").expect("require"), vec![int(9)]);
    assert_eq!(lua.eval("bit32.band(6, 3)").expect("bit32"), vec![int(2)]);
}

#[test]
fn clocks_and_random_are_set_by_the_host() {
    let mut a = lua();
    let mut b = lua();
    assert_eq!(
        a.eval("os.time(), os.clock()").expect("eval"),
        vec![int(0), LuaValue::Float(0.0)]
    );
    a.set_time(1_700_000_000_123_000_000);
    a.set_clock(1_500_000_000);
    assert_eq!(
        a.eval("os.time(), os.clock(), os.date('!%Y-%m-%d')")
            .expect("eval"),
        vec![int(1_700_000_000), LuaValue::Float(1.5), s("2023-11-14")]
    );
    let draw = "(function() local t = {} for i = 1, 5 do t[i] = math.random(1000) end return table.concat(t, ',') end)()";
    let default_a = a.eval(draw).expect("random");
    let default_b = b.eval(draw).expect("random");
    assert_eq!(default_a, default_b, "unseeded generators agree");
    a.set_random_seed(42).expect("seed");
    b.set_random_seed(42).expect("seed");
    let seeded = a.eval(draw).expect("random");
    assert_eq!(seeded, b.eval(draw).expect("random"));
    b.set_random_seed(43).expect("seed");
    assert_ne!(seeded, b.eval(draw).expect("random"));
}

const ORDER_SCRIPT: &str = "
    local t = {}
    for i = 1, 1000 do t['k' .. i] = i end
    t[{}] = 'table key'
    local out = {}
    for k, v in pairs(t) do out[#out + 1] = tostring(k) end
    return table.concat(out, ' ')";

fn pairs_order() -> Vec<u8> {
    let mut lua = lua();
    match lua.eval(ORDER_SCRIPT).expect("order").pop() {
        Some(LuaValue::String(s)) => s,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn pairs_order_is_identical_across_instances() {
    let a = pairs_order();
    let b = pairs_order();
    assert_eq!(a, b);
    // And not trivially sorted: it is Lua's hash order.
    assert!(!a.starts_with(b"k1 k2 k3 k4"));
}

/// The child side of `pairs_order_is_identical_across_processes`.
#[test]
fn child_process_pairs_order() {
    if std::env::var_os("HB_LUA_CHILD").is_none() {
        return;
    }
    let order = pairs_order();
    let mut lua = lua();
    lua.eval("x = {} for i = 1, 100 do x['v' .. i] = i * 1.5 end")
        .expect("setup");
    let snap = lua.snapshot().expect("snapshot");
    println!(
        "HB-LUA-CHILD {} {}",
        hex(&Sha256::digest(&order)),
        hex(&Sha256::digest(snap.as_bytes()))
    );
}

#[test]
fn pairs_order_is_identical_across_processes() {
    let exe = std::env::current_exe().expect("test binary");
    let run = || {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "tests::child_process_pairs_order",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HB_LUA_CHILD", "1")
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| {
                l.split_once("HB-LUA-CHILD ")
                    .map(|(_, r)| r.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no child output in {stdout}"))
    };
    let first = run();
    let second = run();
    assert_eq!(first, second);
    let here = hex(&Sha256::digest(pairs_order()));
    assert!(
        first.starts_with(&here),
        "in-process order {here} vs child {first}"
    );
}

#[test]
fn snapshot_and_restore() {
    let mut lua = lua();
    lua.load(
        "state",
        "greeting = 'hello'
         local n = 0
         function counter() n = n + 1; return n end
         gen = coroutine.create(function(a) while true do a = coroutine.yield(a * 2) end end)
         coroutine.resume(gen, 0)
         setmetatable(_G, {__index = function(_, k) return 'missing ' .. k end})",
    )
    .expect("load");
    lua.call("counter", &[]).expect("counter");
    let snap = lua.snapshot().expect("snapshot");
    // The original moves on; the copy does not see it.
    lua.eval("greeting = 'changed'").expect("eval");

    let bytes = snap.as_bytes().to_vec();
    let reread = Snapshot::from_bytes(bytes).expect("valid snapshot");
    let mut copy = engine()
        .restore(LuaConfig::default(), &reread)
        .expect("restore");
    assert_eq!(copy.eval("greeting").expect("eval"), vec![s("hello")]);
    assert_eq!(copy.call("counter", &[]).expect("call"), vec![int(2)]);
    assert_eq!(
        copy.eval("select(2, coroutine.resume(gen, 21))")
            .expect("eval"),
        vec![int(42)]
    );
    assert_eq!(
        copy.eval("undefined_thing").expect("eval"),
        vec![s("missing undefined_thing")]
    );
    assert!(matches!(
        copy.eval("error('e')"),
        Err(LuaError::Runtime { .. })
    ));
    assert_eq!(lua.eval("greeting").expect("eval"), vec![s("changed")]);

    // Restoring in place.
    lua.restore(&snap).expect("restore");
    assert_eq!(lua.eval("greeting").expect("eval"), vec![s("hello")]);

    // Equal states give equal bytes.
    let mut a = self::lua();
    let mut b = self::lua();
    for l in [&mut a, &mut b] {
        l.eval("t = {} for i = 1, 100 do t[i] = tostring(i) end")
            .expect("eval");
    }
    assert_eq!(
        a.snapshot().expect("a").as_bytes(),
        b.snapshot().expect("b").as_bytes()
    );
}

#[test]
fn snapshot_set_global_read_back_in_fresh_instance() {
    let mut lua = lua();
    lua.eval("answer = {value = 42, name = 'life'}")
        .expect("set");
    let snap = lua.snapshot().expect("snapshot");
    drop(lua);
    let mut fresh = engine()
        .restore(LuaConfig::default(), &snap)
        .expect("restore");
    // The restored memory is exactly the snapshot's.
    assert_eq!(fresh.snapshot().expect("again").as_bytes(), snap.as_bytes());
    assert_eq!(
        fresh.eval("answer.value, answer.name").expect("read"),
        vec![int(42), s("life")]
    );
}

#[test]
fn bad_snapshots_are_refused() {
    let mut lua = lua();
    let snap = lua.snapshot().expect("snapshot");
    let mut bytes = snap.as_bytes().to_vec();
    bytes[8] ^= 0xff; // the module hash
    let other = Snapshot::from_bytes(bytes).expect("well-formed");
    assert!(matches!(
        engine().restore(LuaConfig::default(), &other),
        Err(LuaError::Snapshot(_))
    ));
    let small = LuaConfig {
        memory_limit: 64 << 10,
        ..LuaConfig::default()
    };
    assert!(matches!(
        engine().restore(small, &snap),
        Err(LuaError::Snapshot(_))
    ));
}

#[test]
fn infinite_loop_runs_out_of_fuel_and_rolls_back() {
    let mut lua = lua();
    lua.eval("x = 1").expect("eval");
    lua.snapshot().expect("checkpoint");
    lua.eval("x = 2").expect("eval");
    for code in [
        "while true do end",
        "pcall(function() while true do end end)",
    ] {
        let started = Instant::now();
        let err = lua.eval(code).expect_err("runs out of fuel");
        let elapsed = started.elapsed();
        assert_eq!(err.trap_kind(), Some(TrapKind::OutOfFuel), "{err}");
        assert!(matches!(
            err,
            LuaError::Trap {
                rolled_back: true,
                ..
            }
        ));
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        // Back at the checkpoint, usable.
        assert_eq!(lua.eval("x").expect("eval"), vec![int(1)]);
        lua.eval("x = 2").expect("eval");
    }
}

#[test]
fn fuel_use_is_deterministic() {
    let script = "local t = {} for i = 1, 1000 do t['k' .. i] = i end local n = 0 for k, v in pairs(t) do n = n + v end return n";
    let mut used = Vec::new();
    for _ in 0..2 {
        let mut lua = lua();
        assert_eq!(lua.eval(script).expect("eval"), vec![int(500_500)]);
        used.push(lua.fuel_used());
    }
    assert_eq!(used[0], used[1]);
    assert!(used[0] > 100_000, "{used:?}");
}

#[test]
fn trap_without_checkpoint_poisons() {
    let config = LuaConfig {
        checkpoint_on_create: false,
        fuel_per_call: 10_000_000,
        ..LuaConfig::default()
    };
    let mut lua = engine().create(config).expect("instance");
    assert!(!lua.has_checkpoint());
    let err = lua.eval("while true do end").expect_err("trap");
    assert!(matches!(
        err,
        LuaError::Trap {
            rolled_back: false,
            ..
        }
    ));
    assert!(lua.is_poisoned());
    assert!(matches!(lua.eval("1"), Err(LuaError::Poisoned)));
    assert!(matches!(lua.snapshot(), Err(LuaError::Poisoned)));
    let good = self::lua().snapshot().expect("snapshot");
    lua.restore(&good).expect("restore");
    assert_eq!(lua.eval("1").expect("eval"), vec![int(1)]);
}

#[test]
fn memory_bomb_is_a_lua_error() {
    // string.rep builds its result byte by byte (about 100 fuel per byte), so give the
    // bomb enough fuel to reach the memory cap.
    let config = LuaConfig {
        memory_limit: 16 << 20,
        fuel_per_call: 10_000_000_000,
        ..LuaConfig::default()
    };
    let mut lua = engine().create(config).expect("instance");
    let bomb = "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) end";
    let started = Instant::now();
    let err = lua.eval(bomb).expect_err("out of memory");
    let elapsed = started.elapsed();
    assert!(
        matches!(err, LuaError::Memory(ref m) if m == "not enough memory"),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    // The state is consistent: Lua frees the table and carries on.
    assert_eq!(
        lua.eval("collectgarbage(); return 1 + 1").expect("eval"),
        vec![int(2)]
    );
    assert!(lua.memory_size() <= 16 << 20);
    // Caught inside Lua too.
    let out = lua
        .eval(
            "pcall(function() local t = {} for i = 1, 1e9 do t[i] = string.rep('y', 1000) end end)",
        )
        .expect("pcall catches it");
    assert_eq!(out, vec![false.into(), s("not enough memory")]);
    // Huge strings are refused by Lua itself.
    assert!(lua.eval("string.rep('x', 1 << 40)").is_err());

    // With the default limits the fuel runs out first: still an error, rolled back.
    let mut lua = self::lua();
    let err = lua.eval(bomb).expect_err("stopped");
    assert!(
        matches!(
            err,
            LuaError::Memory(_)
                | LuaError::Trap {
                    rolled_back: true,
                    ..
                }
        ),
        "{err:?}"
    );
    assert_eq!(lua.eval("1").expect("usable"), vec![int(1)]);
}

#[test]
fn output_limit() {
    let config = LuaConfig {
        output_limit: 100,
        ..LuaConfig::default()
    };
    let mut lua = engine().create(config).expect("instance");
    let err = lua
        .eval("for i = 1, 100 do print('0123456789') end")
        .expect_err("limit");
    assert!(err.to_string().contains("output limit exceeded"), "{err}");
    assert_eq!(lua.take_output().len(), 99);
    lua.eval("print('ok')").expect("room again");
}

#[test]
fn malformed_requests_are_errors() {
    let mut lua = lua();
    assert!(matches!(
        lua.call("a\0b", &[]),
        Err(LuaError::BadRequest(_))
    ));
    let deep = (0..200).fold(LuaValue::Nil, |v, _| LuaTable::array([v]).into());
    assert!(matches!(
        lua.call("print", &[deep]),
        Err(LuaError::BadRequest(_))
    ));
    // A cyclic table cannot come out.
    let err = lua
        .eval("(function() local t = {} t.t = t return t end)()")
        .expect_err("cycle");
    assert!(err.to_string().contains("nesting too deep"), "{err}");
    assert_eq!(
        lua.eval("'still fine'").expect("eval"),
        vec![s("still fine")]
    );
}

#[test]
fn nested_pcalls_and_c_stack_limits() {
    let mut lua = lua();
    lua.load(
        "nest",
        "function nest(n)
           if n == 0 then return 'bottom' end
           local ok, v = pcall(nest, n - 1)
           return v
         end",
    )
    .expect("load");
    // Each pcall is a round trip through the host's invoke_vii.
    assert_eq!(
        lua.call("nest", &[int(100)]).expect("nest"),
        vec![s("bottom")]
    );
    // Past Lua's C-level limit (200) it is a Lua error, caught by the innermost pcall.
    // That needs the 200 levels to fit in wasmtime's stack limit (hb-wasm's default
    // 1 MiB): they do in release builds; a debug build's host frames are larger, and
    // there the call traps (rolled back) after about 150 levels.
    match lua.call("nest", &[int(10_000)]) {
        Ok(out) => {
            assert!(
                out[0]
                    .as_str()
                    .is_some_and(|m| m.contains("stack overflow")),
                "{out:?}"
            )
        }
        Err(e) => {
            if !cfg!(debug_assertions) {
                panic!("release builds must hit Lua's limit first: {e}");
            }
            assert!(
                matches!(
                    e,
                    LuaError::Trap {
                        kind: TrapKind::StackOverflow,
                        rolled_back: true,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
    assert_eq!(lua.eval("1").expect("usable"), vec![int(1)]);
}

#[test]
fn instances_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Lua>();
    assert_send::<LuaEngine>();
    assert_send::<Snapshot>();
}

mod codec {
    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = LuaValue> {
        prop_oneof![
            any::<bool>().prop_map(LuaValue::Boolean),
            any::<i64>().prop_map(LuaValue::Integer),
            // Non-integral finite floats (integral ones become integer keys in Lua).
            (-1e9f64..1e9)
                .prop_filter("non-integral", |f| f.fract() != 0.0)
                .prop_map(LuaValue::Float),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(LuaValue::String),
        ]
    }

    /// Canonical form for comparison: tables sorted, duplicate keys merged (the last
    /// wins, as in Lua), NaN bits unified.
    fn canonical(v: LuaValue) -> LuaValue {
        match v {
            LuaValue::Float(f) if f.is_nan() => LuaValue::Float(f64::NAN),
            LuaValue::Table(t) => {
                let mut out = LuaTable::new();
                for (k, v) in t.entries {
                    out.entries.retain(|(ok, _)| ok != &k);
                    out.entries.push((canonical(k), canonical(v)));
                }
                out.sort();
                LuaValue::Table(out)
            }
            other => other,
        }
    }

    fn table() -> impl Strategy<Value = LuaValue> {
        let leaf = prop_oneof![key(), any::<f64>().prop_map(LuaValue::Float)];
        leaf.prop_recursive(3, 32, 6, |inner| {
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| LuaValue::Table(LuaTable { entries }))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Values survive Rust -> Lua -> Rust (the C codec and the Rust one agree).
        #[test]
        fn values_roundtrip_through_lua(values in proptest::collection::vec(table(), 0..4)) {
            let mut lua = lua();
            lua.load("echo", "function echo(...) return ... end").expect("load");
            let back = lua.call("echo", &values).expect("echo");
            let back: Vec<LuaValue> = back.into_iter().map(canonical).collect();
            let want: Vec<LuaValue> = values.into_iter().map(canonical).collect();
            // Compare NaN-insensitively through the encoding of the canonical forms.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            value::encode_list(&back, &mut a).expect("encode");
            value::encode_list(&want, &mut b).expect("encode");
            prop_assert_eq!(a, b);
        }

        /// The Rust decoder never panics on arbitrary bytes.
        #[test]
        fn decoder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = value::decode_list(&bytes);
            let _ = Snapshot::from_bytes(bytes);
        }
    }
}

#[test]
fn bad_configurations_are_errors() {
    let no_fuel = hb_wasm::Engine::new(hb_wasm::EngineConfig {
        fuel: false,
        ..Default::default()
    })
    .expect("engine");
    assert!(matches!(LuaEngine::new(&no_fuel), Err(LuaError::Engine(_))));
    // Less memory than the module starts with (the 1 MiB C stack alone).
    let tiny = LuaConfig {
        memory_limit: 64 << 10,
        ..LuaConfig::default()
    };
    assert!(matches!(engine().create(tiny), Err(LuaError::Engine(_))));
    // Too little fuel to even create the state.
    let starved = LuaConfig {
        fuel_per_call: 1_000,
        ..LuaConfig::default()
    };
    assert!(matches!(engine().create(starved), Err(LuaError::Engine(_))));
}
