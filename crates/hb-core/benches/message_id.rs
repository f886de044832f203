//! `httpsig::message_id` (the HMAC ID of an uncommitted message) on a small and a nested
//! message. See docs/PERFORMANCE.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hb_core::{Message, Value, httpsig};

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

fn message_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("httpsig/message_id");
    for (name, msg) in [("small", small()), ("nested", nested())] {
        httpsig::message_id(&msg).expect("bench message must have an ID");
        group.bench_function(name, |b| b.iter(|| httpsig::message_id(black_box(&msg))));
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = message_id
}
criterion_main!(benches);
