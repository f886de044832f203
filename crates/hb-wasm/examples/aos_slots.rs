//! Computes N aos slots through `process@1.0` on an LMDB message cache (durable
//! commits, the node's default), in-process: where the time of a computed slot goes
//! once it is scheduled, and how much each slot adds to the store.
//!
//! ```sh
//! cargo run --release -p hb-wasm --example aos_slots -- [N] [SNAPSHOT_SLOTS]
//! ```
//!
//! Module: `../shared/fixtures/aos-2-pure-xs.wasm` beside the repository (`AOS_WASM`
//! overrides). Schedules `X = 0` and N times `X = X + 1`, then computes them all with
//! one request and checks `return X`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hb_codec::Wallet;
use hb_codec::httpsig_commit::commit;
use hb_core::message::id_all;
use hb_core::{Ctx, Message, NodeHandle, Outcome, Status, Value};
use hb_store::{Durability, LmdbStore, MessageCache};

fn wallet(name: &str) -> Wallet {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let json = std::fs::read(path.join(name)).expect("test wallet");
    Wallet::from_jwk_json(&json).expect("wallet")
}

fn ok(ctx: &Ctx, base: &Message, req: Message) -> Message {
    match ctx.resolve(Value::Message(base.clone()), req) {
        Ok(Outcome {
            status: Status::Ok,
            value: Value::Message(m),
        }) => m,
        other => panic!("not ok: {other:?}"),
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let every: Option<i64> = args.next().and_then(|a| a.parse().ok());
    let wasm = std::env::var("AOS_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/fixtures/aos-2-pure-xs.wasm")
        });
    let wasm = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));

    let dir = tempfile::tempdir().expect("temp dir");
    let store = LmdbStore::open(dir.path(), Durability::Sync).expect("lmdb");
    let cache = Arc::new(MessageCache::new(Arc::new(store)));
    let key1 = wallet("key-1.json");
    let key2 = Arc::new(wallet("key-2.json"));
    let mut options = Message::new();
    if let Some(every) = every {
        options.insert("process_snapshot_slots", Value::Integer(every));
    }
    let ctx = Ctx::new(
        Arc::new(hb_devices::registry_with_wallet(Some(key2.clone()))),
        cache.clone(),
        NodeHandle::new(options),
    );
    let image = cache
        .write(&Message::new().with("body", Bytes::from(wasm)))
        .expect("image")
        .to_human();
    let list = |items: &[&str]| Value::list(items.iter().map(|s| Value::text(s)).collect());
    let def = Message::new()
        .with("device", "process@1.0")
        .with("type", "Process")
        .with("scheduler", key2.address().as_str())
        .with("authority", key2.address().as_str())
        .with("execution-device", "stack@1.0")
        .with(
            "device-stack",
            list(&["WASI@1.0", "JSON-Iface@1.0", "WASM-64@1.0", "Multipass@1.0"]),
        )
        .with("output-prefix", "wasm")
        .with("passes", 2i64)
        .with(
            "stack-keys",
            list(&["init", "compute", "snapshot", "normalize"]),
        )
        .with("image", image);
    let def = commit(&def, &key1).expect("sign");
    let pid = id_all(&def).expect("id").to_human();
    ok(
        &ctx,
        &def,
        Message::new()
            .with("path", "schedule")
            .with("method", "POST")
            .with("body", def.clone()),
    );
    let schedule = |code: &str| {
        let msg = Message::new()
            .with("type", "Message")
            .with("target", pid.as_str())
            .with("action", "Eval")
            .with("data", code);
        let req = commit(&msg, &key1)
            .expect("sign")
            .with("path", "schedule")
            .with("method", "POST");
        ok(&ctx, &def, req)
            .get("slot")
            .and_then(Value::as_int)
            .expect("slot")
    };
    schedule("X = 0");
    let first = ok(
        &ctx,
        &def,
        Message::new().with("path", "compute").with("slot", 1),
    );
    assert!(first.get("results").is_some());
    let mut last = 0;
    for _ in 0..n {
        last = schedule("X = X + 1");
    }
    let answer = schedule("return X");
    let before = dir_bytes(dir.path());
    let t = Instant::now();
    ok(
        &ctx,
        &def,
        Message::new().with("path", "compute").with("slot", last),
    );
    let took = t.elapsed();
    let grown = dir_bytes(dir.path()).saturating_sub(before);
    let out = ok(
        &ctx,
        &def,
        Message::new().with("path", "compute").with("slot", answer),
    );
    let x = out
        .get("results")
        .and_then(Value::as_message)
        .and_then(|r| r.get("data"))
        .map(|v| String::from_utf8_lossy(&v.to_display_bytes()).into_owned());
    assert_eq!(x.as_deref(), Some(n.to_string().as_str()), "return X");
    println!(
        "{n} slots in {:.3} s: {:.1} slots/s, {:.2} ms/slot; store grew {:.1} MiB ({:.2} MiB/slot)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / n as f64,
        grown as f64 / (1 << 20) as f64,
        grown as f64 / (1 << 20) as f64 / n as f64,
    );
}
