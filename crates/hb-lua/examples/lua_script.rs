//! Runs a Lua file on hb-lua and prints its results and the time taken (fuel on):
//! `cargo run --release -p hb-lua --example lua_script -- FILE [REPEATS]`.

use std::time::Instant;

use hb_lua::{LuaConfig, LuaEngine};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: lua_script FILE [REPEATS]")?;
    let repeats: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let source = std::fs::read(&path)?;
    let engine = LuaEngine::standalone()?;
    let config = LuaConfig {
        fuel_per_call: u64::MAX / 4,
        ..LuaConfig::default()
    };
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let mut lua = engine.create(config.clone())?;
        let started = Instant::now();
        let out = lua.load(&path, &source)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        best = best.min(ms);
        println!("{ms:.1} ms, fuel {}, results {out:?}", lua.fuel_used());
    }
    println!("best {best:.1} ms");
    Ok(())
}
