//! `httpsig::message_id` (the HMAC ID of an uncommitted message) on a small and a nested
//! message, and the httpsig encoding of a typical HTTP reply. See docs/PERFORMANCE.md.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hb_core::{Message, Value, httpsig, structured};

fn small() -> Message {
    Message::new()
        .with("a", 1i64)
        .with("greeting", "Hello")
        .with("body", "Hello, world!")
}

fn nested() -> Message {
    let inner = Message::new()
        .with("name", "alice")
        .with("age", 30i64)
        .with("score", 9.5f64)
        .with("active", true)
        .with(
            "tags",
            Value::list(vec!["a".into(), "b".into(), "c".into()]),
        );
    let deeper = Message::new()
        .with("city", "Paris")
        .with("zip", 75001i64)
        .with("profile", inner.clone());
    Message::new()
        .with("type", "Process")
        .with("data-protocol", "ao")
        .with("variant", "ao.TN.1")
        .with("owner", inner)
        .with("settings", deeper)
        .with(
            "items",
            Value::list(vec![1i64.into(), 2i64.into(), 3i64.into()]),
        )
        .with("body", "x".repeat(256).as_str())
}

/// The base message of `GET /~message@1.0&a+integer=1/a` as the HTTP node builds it.
fn request_base() -> Message {
    Message::new()
        .with("device", "message@1.0")
        .with("a", 1i64)
        .with("accept", "*/*")
        .with("host", "127.0.0.1:8734")
        .with("user-agent", "curl/8")
}

/// The step request of the same HTTP request.
fn request_step() -> Message {
    Message::new()
        .with("path", "a")
        .with("accept", "*/*")
        .with("host", "127.0.0.1:8734")
        .with("user-agent", "curl/8")
}

fn message_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("httpsig/message_id");
    for (name, msg) in [
        ("small", small()),
        ("nested", nested()),
        ("request_base", request_base()),
        ("request_step", request_step()),
    ] {
        httpsig::message_id(&msg).expect("bench message must have an ID");
        group.bench_function(name, |b| b.iter(|| httpsig::message_id(black_box(&msg))));
    }
    group.finish();
}

/// The hb-core half of answering `GET /~message@1.0&a+integer=1/a`: the result message
/// `{ao-result: body, body: 1, status: 200}` to TABM, then to HTTP header fields and body
/// (`integer_body`), and the same with the direct encodings `httpsig::encode_rich` and
/// `httpsig::encode_rich_wire` (the one the server uses).
fn reply_encode(c: &mut Criterion) {
    let reply = Message::new()
        .with("ao-result", "body")
        .with("body", 1i64)
        .with("status", 200i64);
    let encode = |m: &Message| {
        let tabm = structured::to_tabm(m).expect("reply must encode");
        httpsig::to_http(&tabm).expect("reply must encode")
    };
    encode(&reply);
    let mut group = c.benchmark_group("httpsig/reply_encode");
    group.bench_function("integer_body", |b| b.iter(|| encode(black_box(&reply))));
    assert_eq!(
        httpsig::encode_rich(&reply).expect("reply must encode"),
        encode(&reply)
    );
    group.bench_function("encode_rich/integer_body", |b| {
        b.iter(|| httpsig::encode_rich(black_box(&reply)))
    });
    group.bench_function("encode_rich_wire/integer_body", |b| {
        b.iter(|| httpsig::encode_rich_wire(black_box(&reply)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = message_id, reply_encode
}
criterion_main!(benches);
