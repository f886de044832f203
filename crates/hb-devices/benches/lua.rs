//! aos handler messages through the `lua@5.3a` device: each iteration computes one
//! process slot (`compute` on the device, resolved by the engine) whose message is an
//! `Inc` action matched by a handler that bumps a counter — the message and the state
//! converted to Lua, the aos library's `compute` (normalising the message, matching the
//! handler, building the result), the state converted back, the state saved for
//! rollback before the call. The goal is at least 10,000 messages/s (at most 100 µs
//! per message; criterion reports both the time and the rate).
//! `cargo bench -p hb-devices --bench lua` (about 30 s).
//!
//! * `aos_inc_handler`: one slot, as a process's worker computes it;
//! * `state_to_lua`, `result_from_lua`: the conversions of the state message to a Lua
//!   table and of the returned table back to a message, alone.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hb_core::{Ctx, MemoryCache, Message, NodeHandle, ResolveOpts, Value};
use hb_devices::lua::{AOS_MODULE, NAME, from_lua, message_to_lua};

const PID: &str = "PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP";
const OWNER: &str = "OOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO";

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}

fn context() -> Ctx {
    Ctx::new(
        Arc::new(hb_devices::registry()),
        Arc::new(MemoryCache::new(1000)),
        NodeHandle::new(Message::new()),
    )
    .with_opts(ResolveOpts::default().internal())
}

/// `m` with one RSA-PSS commitment `id` by `committer` (as a signed HTTP message
/// arrives; the signature itself is not checked by the device).
fn signed(m: Message, id: &str, committer: &str) -> Message {
    m.with(
        "commitments",
        Message::new().with(
            id,
            Message::new()
                .with("alg", "rsa-pss-sha512")
                .with("committer", committer)
                .with("commitment-device", "httpsig@1.0"),
        ),
    )
}

/// Computes slot `slot` of the process on `state`: the new state.
fn slot(ctx: &Ctx, state: &Message, slot: i64, body: Message) -> Message {
    let req = Message::new()
        .with("path", "compute")
        .with("slot", slot)
        .with("process", PID)
        .with("timestamp", 1_700_000_000_000i64 + slot)
        .with("body", body);
    let out = ctx
        .resolve(Value::Message(state.clone()), req)
        .expect("the slot resolves");
    assert!(out.is_ok(), "the slot computes: {out:?}");
    out.value.as_message().expect("a state").clone()
}

fn inc() -> Message {
    signed(Message::new().with("action", "Inc"), &"i".repeat(43), OWNER)
}

/// A process on the aos library with one `Inc` handler, after its first two slots.
fn process(ctx: &Ctx) -> Message {
    let process = signed(Message::new().with("type", "Process"), PID, OWNER);
    let mut state = Message::new()
        .with("device", NAME)
        .with("module", AOS_MODULE)
        .with("process", process);
    state = slot(ctx, &state, 0, Message::new().with("type", "Process"));
    slot(
        ctx,
        &state,
        1,
        signed(
            Message::new().with("action", "Eval").with(
                "data",
                "Handlers.add('Inc', { Action = 'Inc' }, function(m) N = (N or 0) + 1 end)",
            ),
            &"e".repeat(43),
            OWNER,
        ),
    )
}

fn bench(c: &mut Criterion) {
    let ctx = context();
    let mut state = process(&ctx);
    let mut next = 2i64;
    let mut group = c.benchmark_group("lua");
    group.throughput(Throughput::Elements(1));
    group.bench_function("aos_inc_handler", |b| {
        b.iter(|| {
            state = slot(&ctx, &state, next, inc());
            next += 1;
        })
    });
    // The handler ran once per message.
    let counted = slot(
        &ctx,
        &state,
        next,
        signed(
            Message::new().with("action", "Eval").with("data", "N"),
            &"n".repeat(43),
            OWNER,
        ),
    );
    let printed = counted
        .get("results")
        .and_then(Value::as_message)
        .and_then(|r| r.get("output"))
        .and_then(Value::as_message)
        .and_then(|o| o.get("data"))
        .map(|d| String::from_utf8_lossy(&d.to_display_bytes()).into_owned());
    assert_eq!(printed, Some((next - 2).to_string()), "one Inc per message");

    let plain = state.without_private();
    group.bench_function("state_to_lua", |b| {
        b.iter(|| black_box(message_to_lua(black_box(&plain))))
    });
    let table = message_to_lua(&plain);
    group.bench_function("result_from_lua", |b| {
        b.iter(|| black_box(from_lua(black_box(&table))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
