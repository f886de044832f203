//! Resolving `message@1.0` keys through the engine, with the context `hb serve` builds.
//! See docs/PERFORMANCE.md.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hb_core::{Ctx, MemoryCache, Message, NodeHandle, ResolveOpts, Value, hyperpath};

/// The same context as `hb serve` (crates/hb/src/main.rs `context()`), with the
/// default cache size and a small node message.
fn context() -> Ctx {
    let registry = Arc::new(hb_devices::registry());
    let cache = Arc::new(MemoryCache::new(100_000));
    let node = Message::new()
        .with("port", 8734i64)
        .with("host", "localhost")
        .with("mode", Value::atom("debug"));
    Ctx::new(registry, cache, NodeHandle::new(node))
}

const PATH: &str = "/~message@1.0&a+integer=1/a";

fn resolve_path(c: &mut Criterion) {
    let base = context();
    let list = hyperpath::parse(PATH).expect("bench path must parse");
    let mut group = c.benchmark_group("resolve/message_a");
    for (name, opts) in [
        ("default_opts", ResolveOpts::default()),
        ("http_opts", ResolveOpts::http()),
    ] {
        let ctx = base.with_opts(opts);
        let out = ctx
            .resolve_many(list.clone())
            .expect("bench path must resolve");
        assert!(out.is_ok(), "bench path must resolve to ok: {out:?}");
        group.bench_function(name, |b| {
            b.iter(|| ctx.resolve_many(black_box(list.clone())))
        });
    }
    // What one HTTP request costs in hb-core: parse, then resolve with HTTP options.
    let ctx = base.with_opts(ResolveOpts::http());
    group.bench_function("parse_and_http_opts", |b| {
        b.iter(|| {
            let list = hyperpath::parse(black_box(PATH)).expect("bench path must parse");
            ctx.resolve_many(list)
        })
    });
    // The singleton hb-http builds from `curl` (three headers and `method`): what
    // `from_singleton` then `resolve_many` see for one request.
    let singleton = Message::new()
        .with("path", PATH)
        .with("method", "GET")
        .with("host", "127.0.0.1:8734")
        .with("user-agent", "curl/8.5.0")
        .with("accept", "*/*");
    group.bench_function("curl_singleton_http_opts", |b| {
        b.iter(|| {
            let list = hyperpath::from_singleton(black_box(&singleton))
                .expect("bench singleton must parse");
            ctx.resolve_many(list)
        })
    });
    group.finish();
}

fn get_key(c: &mut Criterion) {
    let ctx = context();
    let msg = Message::from_pairs((0..20).map(|i| (format!("key-{i:02}"), format!("value {i}"))));
    assert_eq!(msg.len(), 20);
    assert_eq!(
        ctx.get("key-10", &msg),
        Some(Value::text("value 10")),
        "bench key must resolve"
    );
    let mut group = c.benchmark_group("resolve/get_20_keys");
    group.bench_function("ctx_get", |b| {
        b.iter(|| ctx.get(black_box("key-10"), black_box(&msg)))
    });
    // The floor: a plain map lookup with no engine involved.
    group.bench_function("map_get", |b| {
        b.iter(|| black_box(&msg).get(black_box("key-10")).cloned())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = resolve_path, get_key
}
criterion_main!(benches);
