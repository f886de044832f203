//! HyperPATH parsing: `hyperpath::parse` on representative paths and `from_singleton` on
//! a request as `curl` sends it. See docs/PERFORMANCE.md.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hb_core::{Message, Value, hyperpath};

/// The paths parsed, with the name each bench reports.
const PATHS: [(&str, &str); 3] = [
    (
        "typed_query",
        "/~message@1.0&greeting=Hello&count+integer=42/count",
    ),
    (
        "long_multi_step",
        "/~message@1.0&name=alice&age+integer=30&score+float=9.5&active+atom=true\
         /profile&city=Paris&zip+integer=75001/settings&theme=dark&limit+integer=10\
         /items/3&format=json/name?format=json&page+integer=2",
    ),
    (
        "sub_path",
        "/~message@1.0&a+integer=1&b=2/(~message@1.0&inner=yes&n+integer=7/inner)/a",
    ),
];

fn parse_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("hyperpath/parse");
    for (name, path) in PATHS {
        // A bench of an error path would measure the wrong thing: check first.
        hyperpath::parse(path).expect("bench path must parse");
        group.bench_function(name, |b| b.iter(|| hyperpath::parse(black_box(path))));
    }
    group.finish();
}

/// The singleton hb-http builds from `curl http://127.0.0.1:8734/~message@1.0&…/count`
/// with a few extra headers a browser-ish client sends.
fn curl_singleton() -> Message {
    Message::new()
        .with(
            "path",
            "/~message@1.0&greeting=Hello&count+integer=42/count",
        )
        .with("method", "GET")
        .with("host", "127.0.0.1:8734")
        .with("user-agent", "curl/8.5.0")
        .with("accept", "*/*")
        .with("accept-encoding", "gzip, deflate, br")
        .with("accept-language", "en-US,en;q=0.9")
        .with("connection", "keep-alive")
}

fn from_singleton(c: &mut Criterion) {
    let singleton = curl_singleton();
    hyperpath::from_singleton(&singleton).expect("bench singleton must parse");
    let bare = Message::new().with(
        "path",
        Value::text("/~message@1.0&greeting=Hello&count+integer=42/count"),
    );
    let mut group = c.benchmark_group("hyperpath/from_singleton");
    group.bench_function("path_only", |b| {
        b.iter(|| hyperpath::from_singleton(black_box(&bare)))
    });
    group.bench_function("curl_headers", |b| {
        b.iter(|| hyperpath::from_singleton(black_box(&singleton)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = parse_paths, from_singleton
}
criterion_main!(benches);
