//! The raw-compute half of `bench/aos.sh`: aos `Eval` messages through the engine
//! directly (no node, no devices), measured the way `harness/bench/ao-loader.mjs`
//! measures `@permaweb/ao-loader` on the same module, with the same JSON.
//!
//! ```text
//! cargo run --release -p hb-wasm --example aos_evals -- <module.wasm> [N] [ROUNDS] [fuel|no-fuel]
//! ```
//!
//! One instance (live memory, as a node's process worker keeps it), one `handle` of
//! `X = 0`, then `ROUNDS` rounds of `N` evaluations of `X = X + 1`, each round timed,
//! then `return X`, which must answer `ROUNDS × N`. Prints one line per measurement,
//! for the script to read:
//!
//! ```text
//! load <ms>          engine + compile (the legacy-exception rewrite included)
//! init <ms>          instantiate + the first handle (X = 0)
//! round <i> <s>      round i: N evaluations, seconds
//! final <X>          the answer of `return X`
//! ```
//!
//! Fuel is on by default, as in the node (`EngineConfig::default()`,
//! `InstanceConfig::default()`). The imports are the zero stubs of spec 06 §2.3,
//! except `clock_time_get`, which answers errno 1 as `wasi@1.0` does.

use std::time::Instant;

use hb_wasm::{
    Engine, EngineConfig, ImportFunc, ImportResult, InstanceConfig, MemoryView, Value, aos,
};

/// The environment of every call (the same as the ao-loader script's).
const ENV: &str = r#"{"Process":{"Id":"PROCESS_ID","Owner":"OWNER_ADDRESS","Tags":[{"name":"Authority","value":"OWNER_ADDRESS"}]},"Module":{"Id":"MODULE","Tags":[]}}"#;

/// The `h`-th message, evaluating `code` (the same JSON text `JSON.stringify` gives
/// for the ao-loader script's message).
fn message(h: u64, code: &str) -> String {
    format!(
        r#"{{"Id":"MSG{h}","Target":"PROCESS_ID","Owner":"OWNER_ADDRESS","From":"OWNER_ADDRESS","Block-Height":"1","Timestamp":"{}","Module":"MODULE","Tags":[{{"name":"Action","value":"Eval"}}],"Data":"{code}"}}"#,
        1_700_000_000_000u64 + h
    )
}

fn imports(f: &ImportFunc, _: &[Value], _: &mut MemoryView<'_>) -> ImportResult {
    if f.name == "clock_time_get" {
        Ok(Some(vec![Value::I32(1)]))
    } else {
        Ok(None)
    }
}

/// `response.Output.data` of a `handle` answer; an error if aos said `ok: false`.
fn output_data(answer: &str) -> Result<String, String> {
    let json: serde_json::Value =
        serde_json::from_str(answer).map_err(|e| format!("not JSON ({e}): {answer}"))?;
    if json.get("ok") != Some(&serde_json::Value::Bool(true)) {
        return Err(format!("handle failed: {answer}"));
    }
    match json.pointer("/response/Output/data") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("no Output.data: {answer}")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: aos_evals <module.wasm> [N] [ROUNDS] [fuel|no-fuel]")?;
    let n: u64 = args.next().map_or(Ok(1000), |a| a.parse())?;
    let rounds: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let fuel = match args.next().as_deref() {
        None | Some("fuel") => true,
        Some("no-fuel") => false,
        Some(other) => return Err(format!("`{other}`: expected fuel or no-fuel").into()),
    };
    let wasm = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;

    let t = Instant::now();
    let engine = Engine::new(EngineConfig {
        fuel,
        ..EngineConfig::default()
    })?;
    let module = engine.load(&wasm)?;
    println!("load {:.1}", t.elapsed().as_secs_f64() * 1e3);

    let mut h = 0u64;
    let mut next = |code: &str| {
        h += 1;
        message(h, code)
    };
    let t = Instant::now();
    let mut instance = module.instantiate(imports, InstanceConfig::default())?;
    output_data(&aos::handle(&mut instance, &next("X = 0"), ENV)?)?;
    println!("init {:.1}", t.elapsed().as_secs_f64() * 1e3);

    for round in 1..=rounds {
        // The messages are built before the clock starts, as ao-loader's are built by
        // the script (cheaply) inside its loop; building them is not what is measured.
        let msgs: Vec<String> = (0..n).map(|_| next("X = X + 1")).collect();
        let t = Instant::now();
        for m in &msgs {
            let answer = aos::handle(&mut instance, m, ENV)?;
            // A failed evaluation would make the round look fast: check each one
            // cheaply (the full parse is done for the final answer).
            if !answer.contains(r#""ok":true"#) {
                return Err(format!("handle failed: {answer}").into());
            }
        }
        println!("round {round} {:.6}", t.elapsed().as_secs_f64());
    }
    let x = output_data(&aos::handle(&mut instance, &next("return X"), ENV)?)?;
    println!("final {x}");
    Ok(())
}
