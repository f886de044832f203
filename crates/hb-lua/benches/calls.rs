//! Calls per second of a handler-like Lua function: takes a message table, bumps a
//! counter, returns a table. `cargo bench -p hb-lua --bench calls`; compare with
//! `bench/lua-native.sh` (the same loop in native `lua5.3`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hb_lua::{LuaConfig, LuaEngine, LuaTable, LuaValue};

const HANDLER: &str = "
count = 0
function handle(msg)
  count = count + msg.inc
  return {count = count, from = msg.from, ok = true}
end
function loop(n)
  local msg = {inc = 1, from = 'bench'}
  for i = 1, n do handle(msg) end
  return count
end";

fn bench(c: &mut Criterion) {
    let engine = LuaEngine::standalone().expect("engine");
    let mut lua = engine.create(LuaConfig::default()).expect("instance");
    lua.load("handler", HANDLER).expect("load");
    let msg: LuaValue = LuaTable::new().with("inc", 1).with("from", "bench").into();
    let args = [msg];

    let mut group = c.benchmark_group("lua");
    group.bench_function("host_call_handle", |b| {
        b.iter(|| black_box(lua.call("handle", black_box(&args)).expect("call")))
    });
    // The same handler called from Lua itself: the VM's speed without the boundary.
    group.bench_function("in_lua_handle_x1000", |b| {
        b.iter(|| black_box(lua.call("loop", &[LuaValue::Integer(1000)]).expect("loop")))
    });
    group.bench_function("eval_return_1", |b| {
        b.iter(|| black_box(lua.eval("1").expect("eval")))
    });
    group.bench_function("snapshot", |b| {
        b.iter(|| black_box(lua.snapshot().expect("snapshot")))
    });
    let snap = lua.snapshot().expect("snapshot");
    group.bench_function("restore_fresh_instance", |b| {
        b.iter(|| {
            black_box(
                engine
                    .restore(LuaConfig::default(), &snap)
                    .expect("restore"),
            )
        })
    });
    group.bench_function("create_instance", |b| {
        let config = LuaConfig {
            checkpoint_on_create: false,
            ..LuaConfig::default()
        };
        b.iter(|| black_box(engine.create(config.clone()).expect("create")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
