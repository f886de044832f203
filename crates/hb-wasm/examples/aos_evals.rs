//! The raw-compute half of `bench/aos.sh`: aos `Eval` messages through the engine
//! directly (no node, no devices), measured the way `harness/bench/ao-loader.mjs`
//! measures `@permaweb/ao-loader` on the same module, with the same JSON.
//!
//! ```text
//! cargo run --release -p hb-wasm --example aos_evals -- <module.wasm> [N] [ROUNDS] [fuel|no-fuel] [loader-json|node-json]
//! ```
//!
//! `loader-json` (the default) is the JSON of the ao-loader script: a short message and
//! environment, ~0.5 KB together. `node-json` is the JSON a node gives the module for
//! the end-to-end run's messages: `json-iface@1.0`'s own encoders
//! (`json_iface::message_json`, `env_json`) on an aos process and Eval messages, all
//! signed with `tests/fixtures/key-1.json` as `harness/bench/aos-node.mjs` signs them
//! (~2.1 KB together: the message's signature, the process's tags). Each Eval is
//! signed once per code; each message then gets its own nonce and `Id`, as they would.
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

use std::collections::HashMap;
use std::time::Instant;

use hb_codec::Wallet;
use hb_codec::httpsig_commit::commit;
use hb_core::Message;
use hb_core::message::id_all;
use hb_wasm::{
    Engine, EngineConfig, ImportFunc, ImportResult, InstanceConfig, MemoryView, Value, aos,
    genesis_wasm, json_iface,
};
use sha2::Digest;

/// The environment of every call (the same as the ao-loader script's).
const ENV: &str = r#"{"Process":{"Id":"PROCESS_ID","Owner":"OWNER_ADDRESS","Tags":[{"name":"Authority","value":"OWNER_ADDRESS"}]},"Module":{"Id":"MODULE","Tags":[]}}"#;

/// The JSON a node gives the module (`node-json`): the environment, and the message
/// text of each code with a nonce and an `Id` to replace per message.
struct NodeJson {
    env: String,
    wallet: Wallet,
    pid: String,
    image: hb_core::Value,
    /// Per code: the signed message's JSON and its `Id`.
    templates: HashMap<String, (String, String)>,
}

/// Stands for the nonce in a message template (replaced per message).
const NONCE: &str = "NONCE-OF-THE-MESSAGE";

impl NodeJson {
    fn new(wasm: &[u8]) -> Result<Self, Box<dyn std::error::Error>> {
        let wallet = Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json"))?;
        let image = format!("data/{}", hb_core::id::b64url(&sha2::Sha256::digest(wasm)));
        // The process `harness/bench/aos-node.mjs` spawns.
        let address = wallet.address();
        let process = commit(
            &genesis_wasm::process_definition(address.as_str(), &image).with("nonce", "bench-aos"),
            &wallet,
        )?;
        let image = hb_core::Value::text(&image);
        let pid = id_all(&process)?.to_human();
        Ok(NodeJson {
            env: json_iface::env_json(&process)?,
            wallet,
            pid,
            image,
            templates: HashMap::new(),
        })
    }

    /// The `h`-th message, evaluating `code`.
    fn message(&mut self, h: u64, code: &str) -> Result<String, Box<dyn std::error::Error>> {
        if !self.templates.contains_key(code) {
            let signed = commit(
                &Message::new()
                    .with("type", "Message")
                    .with("target", self.pid.as_str())
                    .with("action", "Eval")
                    .with("data", code)
                    .with("nonce", NONCE),
                &self.wallet,
            )?;
            let id = id_all(&signed)?.to_human();
            let json = json_iface::message_json(
                &signed,
                Some(&self.image),
                Some(&hb_core::Value::Integer(0)),
            )?;
            if !json.contains(NONCE) || !json.contains(&id) {
                return Err(format!("no nonce or Id to replace in {json}").into());
            }
            self.templates.insert(code.to_string(), (json, id));
        }
        let (json, id) = &self.templates[code];
        Ok(json
            .replace(NONCE, &h.to_string())
            .replace(id.as_str(), &format!("{h:0>43}")))
    }
}

/// The `h`-th message, evaluating `code` (the same JSON text `JSON.stringify` gives
/// for the ao-loader script's message).
fn loader_message(h: u64, code: &str) -> String {
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
    let path = args.next().ok_or(
        "usage: aos_evals <module.wasm> [N] [ROUNDS] [fuel|no-fuel] [loader-json|node-json]",
    )?;
    let n: u64 = args.next().map_or(Ok(1000), |a| a.parse())?;
    let rounds: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let fuel = match args.next().as_deref() {
        None | Some("fuel") => true,
        Some("no-fuel") => false,
        Some(other) => return Err(format!("`{other}`: expected fuel or no-fuel").into()),
    };
    let node_json = match args.next().as_deref() {
        None | Some("loader-json") => false,
        Some("node-json") => true,
        Some(other) => {
            return Err(format!("`{other}`: expected loader-json or node-json").into());
        }
    };
    let wasm = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut node = node_json.then(|| NodeJson::new(&wasm)).transpose()?;
    let env = node.as_ref().map_or(ENV, |n| n.env.as_str()).to_string();

    let t = Instant::now();
    let engine = Engine::new(EngineConfig {
        fuel,
        ..EngineConfig::default()
    })?;
    let module = engine.load(&wasm)?;
    println!("load {:.1}", t.elapsed().as_secs_f64() * 1e3);

    let mut h = 0u64;
    let mut next = |code: &str| -> Result<String, Box<dyn std::error::Error>> {
        h += 1;
        match node.as_mut() {
            Some(n) => n.message(h, code),
            None => Ok(loader_message(h, code)),
        }
    };
    let t = Instant::now();
    let mut instance = module.instantiate(imports, InstanceConfig::default())?;
    output_data(&aos::handle(&mut instance, &next("X = 0")?, &env)?)?;
    println!("init {:.1}", t.elapsed().as_secs_f64() * 1e3);

    for round in 1..=rounds {
        // The messages are built before the clock starts, as ao-loader's are built by
        // the script (cheaply) inside its loop; building them is not what is measured.
        let msgs = (0..n)
            .map(|_| next("X = X + 1"))
            .collect::<Result<Vec<String>, _>>()?;
        let t = Instant::now();
        for m in &msgs {
            let answer = aos::handle(&mut instance, m, &env)?;
            // A failed evaluation would make the round look fast: check each one
            // cheaply (the full parse is done for the final answer).
            if !answer.contains(r#""ok":true"#) {
                return Err(format!("handle failed: {answer}").into());
            }
        }
        println!("round {round} {:.6}", t.elapsed().as_secs_f64());
    }
    let x = output_data(&aos::handle(&mut instance, &next("return X")?, &env)?)?;
    println!("final {x}");
    Ok(())
}
