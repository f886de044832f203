//! The handler loop of `bench/lua.sh`, on hb-lua: prints calls per second of a
//! handler-like Lua function called from Lua itself (the VM's speed, comparable with
//! native `lua5.3`) and from the host (one `Lua::call` per message), fuel on.
//!
//! `cargo run --release -p hb-lua --example lua_loop -- [N]`

use std::time::Instant;

use hb_lua::{LuaConfig, LuaEngine, LuaTable, LuaValue};

/// Shared with bench/lua-handler.lua (the native side).
const HANDLER: &str = include_str!("../../../bench/lua-handler.lua");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let engine = LuaEngine::standalone()?;
    let config = LuaConfig {
        fuel_per_call: u64::MAX / 4,
        ..LuaConfig::default()
    };
    let mut lua = engine.create(config)?;
    lua.load("handler", HANDLER)?;

    let started = Instant::now();
    let out = lua.call("loop", &[LuaValue::Integer(n)])?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(out, vec![LuaValue::Integer(n)]);
    println!(
        "in_lua_calls_per_s {:.0} fuel {}",
        n as f64 / secs,
        lua.fuel_used()
    );

    let msg: LuaValue = LuaTable::new().with("inc", 1).with("from", "bench").into();
    let args = [msg];
    let host_n = (n / 10).max(1);
    let started = Instant::now();
    for _ in 0..host_n {
        lua.call("handle", &args)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("host_calls_per_s {:.0}", host_n as f64 / secs);

    let started = Instant::now();
    let snap = lua.snapshot()?;
    let snap_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let _copy = engine.restore(LuaConfig::default(), &snap)?;
    let restore_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "snapshot_bytes {} memory_bytes {} snapshot_ms {snap_ms:.3} restore_ms {restore_ms:.3}",
        snap.as_bytes().len(),
        lua.memory_size()
    );

    let mut spin = engine.create(LuaConfig::default())?;
    let started = Instant::now();
    let err = spin.eval("while true do end").err();
    println!(
        "infinite_loop_error_ms {:.1} ({})",
        started.elapsed().as_secs_f64() * 1e3,
        err.map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}
