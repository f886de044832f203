//! `test-device@1.0`: a small device for testing the engine and execution stacks
//! (spec 05 §14; the reference's `dev_test`).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome};
use hb_core::{Ctx, Message, ResolveError, Value};

/// The `test-device@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestDevice;

/// The longest `delay` honoured, so that a request cannot park a worker for long.
const MAX_DELAY_MS: i64 = 5_000;

/// How many `test-id`s `update_state` and `increment_counter` keep track of at most.
const MAX_TEST_IDS: usize = 1024;

/// What `update_state` and `increment_counter` recorded for one `test-id` (the
/// reference's test worker process, for the `cron@1.0` tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestRecord {
    /// How often `increment_counter` was called.
    pub count: u64,
    /// The last request `update_state` was called with.
    pub state: Option<Message>,
}

/// The records, by `test-id`, of every node in this process.
static RECORDS: LazyLock<parking_lot::Mutex<HashMap<String, TestRecord>>> =
    LazyLock::new(|| parking_lot::Mutex::new(HashMap::new()));

/// What was recorded for `test_id`, if anything.
pub fn test_record(test_id: &str) -> Option<TestRecord> {
    RECORDS.lock().get(test_id).cloned()
}

/// Updates (or, with a no-op `update`, reads) the record of the request's `test-id`;
/// the answer is never cached, so each call reaches the device.
fn record(req: &Message, update: impl FnOnce(&mut TestRecord)) -> Outcome {
    let Some(test_id) = req.get_str("test-id") else {
        return Outcome::error("No test ID found in message.");
    };
    let mut records = RECORDS.lock();
    if records.len() >= MAX_TEST_IDS && !records.contains_key(test_id) {
        return Outcome::error_status(503, "Too many test IDs.");
    }
    let entry = records.entry(test_id.to_owned()).or_default();
    update(entry);
    Outcome::ok(
        Message::new()
            .with("test-id", test_id)
            .with("count", i64::try_from(entry.count).unwrap_or(i64::MAX))
            .with("cache-control", "no-store"),
    )
}

impl Device for TestDevice {
    fn name(&self) -> &'static str {
        "test-device@1.0"
    }

    fn info(&self, _base: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::Device("message@1.0".into()),
            ..Default::default()
        }
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "info",
            "test_func",
            "compute",
            "init",
            "restore",
            "snapshot",
            "mul",
            "delay",
            "update_state",
            "increment_counter",
            "counter",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "info" => Ok(Outcome::ok(
                Message::new().with("status", 200i64).with(
                    "body",
                    Message::new()
                        .with(
                            "description",
                            "Test device for testing the AO-Core framework",
                        )
                        .with("version", "1.0"),
                ),
            )),
            "test_func" => Ok(Outcome::ok("GOOD_FUNCTION")),
            "compute" => {
                let slot = ctx.get("slot", req).unwrap_or(Value::atom("not_found"));
                let mut seen = match ctx.get("already-seen", base) {
                    Some(Value::List(l)) => l.as_ref().clone(),
                    _ => vec![],
                };
                seen.insert(0, slot.clone());
                let mut results = Message::new().with("assignment-slot", slot);
                // A scheduled message's `outbox` becomes the slot's outbox: processes on
                // this device send what their messages ask them to (for push tests).
                if let Some(outbox) = req
                    .get("body")
                    .and_then(Value::as_message)
                    .and_then(|b| b.get("outbox"))
                    .filter(|o| o.as_message().is_some())
                {
                    results.insert("outbox", outbox.clone());
                }
                let update = Message::new()
                    .with("random-key", "random-value")
                    .with("results", results)
                    .with("already-seen", Value::list(seen));
                Ok(Outcome::ok(ctx.set_many(base, &update)?))
            }
            "init" => {
                let update = Message::new().with("already-seen", Value::list(vec![]));
                Ok(Outcome::ok(ctx.set_many(base, &update)?))
            }
            "restore" => match ctx.get("already-seen", base) {
                None => Ok(Outcome::error("No viable state to restore.")),
                Some(seen) => {
                    let mut out = base.clone();
                    let started = Message::new().with("started-state", seen);
                    out.set_private("test-key", Value::Message(started));
                    Ok(Outcome::ok(out))
                }
            },
            "snapshot" => Ok(Outcome::ok(Message::new())),
            "mul" => {
                let state = base
                    .get("state")
                    .cloned()
                    .unwrap_or(Value::atom("not_found"));
                let args = match req.get("args") {
                    Some(Value::List(l)) if l.len() == 2 => l.clone(),
                    _ => {
                        return Err(ResolveError::BadRequest(
                            "mul needs `args`: a list of two integers".into(),
                        ));
                    }
                };
                let (Some(a), Some(b)) = (args[0].as_int(), args[1].as_int()) else {
                    return Err(ResolveError::BadRequest(
                        "mul needs two integer arguments".into(),
                    ));
                };
                let product = a.checked_mul(b).ok_or_else(|| {
                    ResolveError::BadRequest("mul: the product overflows 64 bits".into())
                })?;
                Ok(Outcome::ok(Message::new().with("state", state).with(
                    "results",
                    Value::list(vec![Value::Integer(product)]),
                )))
            }
            "delay" => {
                let ms = ctx
                    .get("duration", base)
                    .or_else(|| ctx.get("duration", req))
                    .and_then(|v| v.as_int())
                    .unwrap_or(750)
                    .clamp(0, MAX_DELAY_MS);
                ctx.sleep(Duration::from_millis(ms as u64))?;
                let body = ctx
                    .get("body", req)
                    .unwrap_or_else(|| Value::text("Timer fired."));
                Ok(Outcome::ok(Message::new().with("body", body)))
            }
            "update_state" => Ok(record(req, |r| r.state = Some(req.without_private()))),
            "increment_counter" => Ok(record(req, |r| r.count = r.count.saturating_add(1))),
            // Reads the counter (over HTTP, from another process).
            "counter" => Ok(record(req, |_| {})),
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}
