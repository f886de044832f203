//! aos-2-pure-xs through the json-iface ABI on wasmtime.
//!
//! * `handle/eval X = X + 1`: one `handle` call (malloc + copy of the message and
//!   environment JSON, the Lua evaluation, reading the answer) on one warm instance;
//!   the throughput line is evaluations per second. (The issue's target is 2× the
//!   rate of `@permaweb/ao-loader` on the same module; that baseline is measured by a
//!   separate node script, not here.)
//! * `instantiate`: a fresh instance of the compiled module (memory image included).
//! * `snapshot+restore`: copy the memory out and restore it into a fresh instance.
//!
//! Run: `cargo bench -p hb-wasm --bench aos`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hb_wasm::{Engine, EngineConfig, InstanceConfig, Stubs, aos};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/aos-2-pure-xs.wasm"
);

const ENV: &str = r#"{"Process":{"Id":"AOS","Owner":"FOOBAR","Tags":[{"name":"Name","value":"Thomas"}, {"name":"Authority","value":"FOOBAR"}]}}"#;

fn msg(code: &str) -> String {
    format!(
        r#"{{"From":"FOOBAR","Block-Height":"1","Target":"AOS","Owner":"FOOBAR","Id":"1","Module":"W","Tags":[{{"name":"Action","value":"Eval"}}],"Data":"{code}"}}"#
    )
}

fn bench(c: &mut Criterion) {
    let wasm =
        std::fs::read(FIXTURE).unwrap_or_else(|e| panic!("fixture {FIXTURE} is missing: {e}"));
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let module = engine.load(&wasm).expect("module");

    let mut inst = module
        .instantiate(Stubs, InstanceConfig::default())
        .expect("instantiate");
    let init = aos::handle(&mut inst, &msg("X = 0"), ENV).expect("handle");
    assert!(init.contains(r#""ok":true"#), "{init}");
    let eval = msg("X = X + 1");
    let mut group = c.benchmark_group("handle");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("eval X = X + 1", |b| {
        b.iter(|| black_box(aos::handle(&mut inst, black_box(&eval), ENV).expect("handle")))
    });
    group.finish();
    let x = aos::handle(&mut inst, &msg("return X"), ENV).expect("handle");
    assert!(x.contains(r#""data":""#), "{x}");

    c.bench_function("instantiate", |b| {
        b.iter(|| {
            black_box(
                module
                    .instantiate(Stubs, InstanceConfig::default())
                    .expect("instantiate"),
            )
        })
    });

    let snapshot = inst.snapshot().expect("snapshot");
    c.bench_function("snapshot+restore", |b| {
        b.iter(|| {
            let s = inst.snapshot().expect("snapshot");
            black_box(
                module
                    .instantiate_from_snapshot(Stubs, InstanceConfig::default(), &s)
                    .expect("restore"),
            )
        })
    });
    drop(snapshot);
}

criterion_group!(benches, bench);
criterion_main!(benches);
