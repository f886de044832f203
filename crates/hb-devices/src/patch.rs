//! `patch@1.0`: moves data from one path of a message to another (spec 04 §4; the
//! reference's `dev_patch`).
//!
//! * `patches` (also `compute`): the entries of the source that are patches (their
//!   `method` is `PATCH`, or their `device` is `patch@1.0`) are merged, in key order,
//!   into the destination; the other entries stay at the source.
//! * `all`: the whole source value is merged into the destination and the source key
//!   is removed.
//! * `init`, `normalize`, `snapshot` answer the base unchanged, so the device can sit
//!   in an execution stack (typically after the runtime, with
//!   `patch-from: /results/outbox`).
//!
//! The source is the first of the request's `patch-from`, the base's `patch-from`, the
//! request's `from`, the base's `from` (default `/`); the destination likewise with
//! `patch-to`/`to`. A source path starting with `base:` or `req:` is read from the base
//! or from the request.

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::resolve::{deep_set, path_parts};
use hb_core::value::{is_private, list_to_message};
use hb_core::{Ctx, Message, ResolveError, Value};

use crate::stack::plain_set;

/// The `patch@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Patch;

/// The most segments a source or destination path may have (each is a level of
/// nesting to build).
pub const MAX_PATH_DEPTH: usize = 64;

/// Which entries of the source move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only the patch entries.
    Patches,
    /// Everything.
    All,
}

impl Device for Patch {
    fn name(&self) -> &'static str {
        "patch@1.0"
    }

    fn functions(&self) -> &'static [&'static str] {
        &["all", "compute", "init", "normalize", "patches", "snapshot"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "init" | "normalize" | "snapshot" => Ok(Outcome::ok(base.clone())),
            "patches" | "compute" => move_data(Mode::Patches, base, req, ctx),
            "all" => move_data(Mode::All, base, req, ctx),
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}

/// The first parameter found, as a path text: the request's `patch-<name>`, the base's
/// `patch-<name>`, the request's `<name>`, the base's `<name>`; `/` when none is set.
fn parameter(name: &str, base: &Message, req: &Message) -> Result<String, Outcome> {
    let patch_name = format!("patch-{name}");
    let found = [
        req.get_ci(&patch_name),
        base.get_ci(&patch_name),
        req.get_ci(name),
        base.get_ci(name),
    ]
    .into_iter()
    .flatten()
    .next();
    match found {
        None => Ok("/".to_owned()),
        Some(v) => match v.as_str() {
            Some(s) => Ok(s.to_owned()),
            None => Err(Outcome::error_status(
                400,
                &format!(
                    "patch@1.0: `{patch_name}` must be a path, not a {}",
                    v.type_name()
                ),
            )),
        },
    }
}

/// Where the source is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Base,
    Request,
}

/// Splits a source path into its origin (`base:`/`req:` on the first segment, default
/// the base) and the key path (segments joined by `/`, empty for the root).
fn source_of(raw: &str) -> (Origin, String) {
    let parts = path_parts(&Value::text(raw));
    let Some((first, rest)) = parts.split_first() else {
        return (Origin::Base, String::new());
    };
    let origin = match first.split_once(':') {
        Some(("base", key)) => Some((Origin::Base, key)),
        Some(("req", key)) => Some((Origin::Request, key)),
        _ => None,
    };
    match origin {
        Some((origin, key)) => {
            let path: Vec<&str> = std::iter::once(key)
                .chain(rest.iter().map(String::as_str))
                .filter(|p| !p.is_empty())
                .collect();
            (origin, path.join("/"))
        }
        None => (Origin::Base, parts.join("/")),
    }
}

/// The path as key parts, without empty segments.
fn key_path(raw: &str) -> String {
    path_parts(&Value::text(raw)).join("/")
}

/// Whether a source entry is a patch: a message whose `method` is `PATCH` or whose
/// `device` is `patch@1.0`.
fn is_patch(v: &Value) -> bool {
    v.as_message().is_some_and(|m| {
        m.get_ci("method").and_then(Value::as_str) == Some("PATCH")
            || m.get_ci("device").and_then(Value::as_str) == Some("patch@1.0")
    })
}

/// The unified `patches`/`all` executor (spec 04 §4).
fn move_data(mode: Mode, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
    let raw_from = match parameter("from", base, req) {
        Ok(p) => p,
        Err(o) => return Ok(o),
    };
    let to = match parameter("to", base, req) {
        Ok(p) => key_path(&p),
        Err(o) => return Ok(o),
    };
    let (origin, from) = source_of(&raw_from);
    for path in [&from, &to] {
        if path.split('/').count() > MAX_PATH_DEPTH {
            return Ok(Outcome::error_status(
                400,
                &format!("patch@1.0: paths may have at most {MAX_PATH_DEPTH} segments"),
            ));
        }
    }
    let from_msg = match origin {
        Origin::Base => base,
        Origin::Request => req,
    };
    // 1. The source value.
    let source = if from.is_empty() {
        Value::Message(from_msg.clone())
    } else {
        match ctx.get(&from, from_msg) {
            Some(v) => v,
            None => return Ok(Outcome::not_found()),
        }
    };
    // 2. What moves, and what stays at the source.
    let (to_write, rest) = match mode {
        Mode::All => (source, Value::atom("unset")),
        Mode::Patches => {
            let entries = match &source {
                Value::Message(m) => m.clone(),
                Value::List(l) => list_to_message(l),
                other => {
                    return Ok(Outcome::error_status(
                        400,
                        &format!(
                            "patch@1.0: the source `{raw_from}` is a {}, not a message of messages",
                            other.type_name()
                        ),
                    ));
                }
            };
            let mut patches = Vec::new();
            let mut rest = Message::new();
            for (k, v) in entries.iter() {
                if !is_private(k) && is_patch(v) {
                    patches.push(v);
                } else {
                    rest.insert_key(k.clone(), v.clone());
                }
            }
            // 4. One map of all patches, in key order. `method` marks a patch and
            // `device` would re-route the destination: neither is copied (the
            // reference copies `device`, spec 04 §4 quirk). Reserved keys (`path`,
            // `commitments`, …) are never set.
            let mut merged = Message::new();
            for p in patches {
                if let Value::Message(p) = p {
                    let p = p.clone().without("method").without("device");
                    merged = plain_set(&merged, p, ctx)?;
                }
            }
            (Value::Message(merged), Value::Message(rest))
        }
    };
    // 3. Replace the source (through a placeholder, so that the remainder replaces the
    // old value rather than merging into it). The patches always land in the base:
    // with a `req:` source the reference returns the modified request instead (spec 04
    // §4 quirk), which would drop the state, so the request's copy is not kept.
    let target = match origin {
        Origin::Request => base.clone(),
        Origin::Base if from.is_empty() => match rest {
            Value::Message(rest) => rest,
            _ => Message::new(),
        },
        Origin::Base => {
            let placeholder = deep_set(ctx, base, &from, Value::text("patch-error"))?;
            deep_set(ctx, &placeholder, &from, rest)?
        }
    };
    // 5. Deep-merge at the destination.
    if to.is_empty() && !matches!(to_write, Value::Message(_)) {
        return Ok(Outcome::error_status(
            400,
            &format!(
                "patch@1.0: cannot merge a {} into the root of the message",
                to_write.type_name()
            ),
        ));
    }
    Ok(Outcome::ok(deep_set(ctx, &target, &to, to_write)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::tests::ctx;
    use hb_core::Status;

    fn at<'a>(msg: &'a Message, path: &str) -> Option<&'a Value> {
        let mut parts = path.split('/');
        let mut v = msg.get(parts.next()?)?;
        for p in parts {
            v = v.as_message()?.get(p)?;
        }
        Some(v)
    }

    fn prices(pairs: &[(&str, i64)]) -> Message {
        let mut m = Message::new();
        for (k, v) in pairs {
            m.insert(k, Value::Integer(*v));
        }
        Message::new().with("prices", m)
    }

    fn ok_msg(out: Outcome) -> Message {
        match out {
            Outcome {
                status: Status::Ok,
                value: Value::Message(m),
            } => m,
            other => panic!("expected an ok message, got {other:?}"),
        }
    }

    fn run(base: &Message, req: Message) -> Outcome {
        ctx()
            .resolve(Value::Message(base.clone()), req)
            .expect("resolves")
    }

    fn outbox_state() -> Message {
        Message::new()
            .with("device", "patch@1.0")
            .with(
                "results",
                Message::new().with(
                    "outbox",
                    Message::new()
                        .with(
                            "1",
                            prices(&[("apple", 100), ("banana", 200)]).with("method", "PATCH"),
                        )
                        .with("2", prices(&[("apple", 1000)]).with("method", "GET")),
                ),
            )
            .with("other-message", "other-value")
            .with("patch-to", "/")
            .with("patch-from", "/results/outbox")
    }

    #[test]
    fn vector_uninitialized_patch() {
        let out = ok_msg(run(&outbox_state(), Message::new().with("path", "compute")));
        assert_eq!(at(&out, "prices/apple"), Some(&Value::Integer(100)));
        assert_eq!(at(&out, "prices/banana"), Some(&Value::Integer(200)));
        assert!(at(&out, "results/outbox/1").is_none());
        assert_eq!(
            at(&out, "results/outbox/2/prices/apple"),
            Some(&Value::Integer(1000))
        );
        assert_eq!(out.get_str("other-message"), Some("other-value"));
        // `method` is not copied.
        assert!(out.get("method").is_none());
        // `patches` is the same function.
        let same = ok_msg(run(&outbox_state(), Message::new().with("path", "patches")));
        assert_eq!(same.without_private(), out.without_private());
    }

    #[test]
    fn vector_signed_patch_to_submessage() {
        let wallet =
            hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json"))
                .expect("test key");
        let patch = hb_codec::httpsig_commit::commit(
            &prices(&[("apple", 100), ("banana", 200)]).with("method", "PATCH"),
            &wallet,
        )
        .expect("signs");
        assert!(patch.contains("commitments"));
        let base = Message::new()
            .with("device", "patch@1.0")
            .with(
                "results",
                Message::new().with("outbox", Message::new().with("1", patch)),
            )
            .with("state", prices(&[("apple", 1000)]))
            .with("other-message", "other-value")
            .with("patch-to", "/state")
            .with("patch-from", "/results/outbox");
        let out = ok_msg(run(&base, Message::new().with("path", "compute")));
        assert_eq!(at(&out, "state/prices/apple"), Some(&Value::Integer(100)));
        assert_eq!(at(&out, "state/prices/banana"), Some(&Value::Integer(200)));
        // The commitments of the patch are not copied into the state.
        assert!(at(&out, "state/commitments").is_none());
        assert_eq!(
            at(&out, "results/outbox").and_then(Value::as_message),
            Some(&Message::new())
        );
    }

    #[test]
    fn vector_all_mode() {
        let base = Message::new()
            .with("device", "patch@1.0")
            .with(
                "input",
                Message::new().with(
                    "zones",
                    Message::new()
                        .with(
                            "1",
                            prices(&[("apple", 100), ("banana", 200)]).with("method", "PATCH"),
                        )
                        .with("2", prices(&[("orange", 300)]).with("method", "GET")),
                ),
            )
            .with("state", prices(&[("apple", 1000)]));
        let req = Message::new()
            .with("path", "all")
            .with("patch-to", "/state")
            .with("patch-from", "/input/zones");
        let out = ok_msg(run(&base, req));
        assert_eq!(at(&out, "state/1/prices/apple"), Some(&Value::Integer(100)));
        assert_eq!(
            at(&out, "state/2/prices/orange"),
            Some(&Value::Integer(300))
        );
        assert_eq!(at(&out, "state/prices/apple"), Some(&Value::Integer(1000)));
        assert!(at(&out, "input/zones").is_none());
    }

    #[test]
    fn vector_req_prefix() {
        let base = Message::new()
            .with("device", "patch@1.0")
            .with("state", prices(&[("apple", 1000)]))
            .with("keep", "me");
        let req = Message::new()
            .with("path", "all")
            .with("patch-from", "req:/results/outbox/1")
            .with("patch-to", "/state")
            .with(
                "results",
                Message::new().with(
                    "outbox",
                    Message::new().with(
                        "1",
                        prices(&[("apple", 100), ("banana", 200)]).with("method", "PATCH"),
                    ),
                ),
            );
        let out = ok_msg(run(&base, req));
        assert_eq!(at(&out, "state/prices/apple"), Some(&Value::Integer(100)));
        assert_eq!(at(&out, "state/prices/banana"), Some(&Value::Integer(200)));
        assert!(at(&out, "results/outbox/1").is_none());
        // The base is what is patched (and returned), not the request.
        assert_eq!(out.get_str("keep"), Some("me"));
        assert!(out.get("path").is_none());
    }

    #[test]
    fn base_prefix_and_from_to_fallbacks() {
        let base = Message::new()
            .with("device", "patch@1.0")
            .with(
                "box",
                Message::new().with("a", Message::new().with("method", "PATCH").with("x", "1")),
            )
            .with("from", "/box");
        // `from` on the base, `to` on the request; `base:` is the default origin.
        let out = ok_msg(run(
            &base,
            Message::new().with("path", "compute").with("to", "/dest"),
        ));
        assert_eq!(at(&out, "dest/x").and_then(Value::as_str), Some("1"));
        let out = ok_msg(run(
            &base,
            Message::new()
                .with("path", "compute")
                .with("patch-from", "base:box"),
        ));
        assert_eq!(out.get_str("x"), Some("1"));
    }

    #[test]
    fn device_patches_count_but_device_is_not_copied() {
        let base = Message::new().with("device", "patch@1.0").with(
            "box",
            Message::new().with(
                "a",
                Message::new()
                    .with("device", "patch@1.0")
                    .with("x", "banana"),
            ),
        );
        let req = Message::new()
            .with("path", "compute")
            .with("patch-from", "/box")
            .with("patch-to", "/state");
        let out = ok_msg(run(&base, req));
        assert_eq!(at(&out, "state/x").and_then(Value::as_str), Some("banana"));
        assert!(at(&out, "state/device").is_none());
    }

    #[test]
    fn identities_and_errors() {
        let base = outbox_state();
        for key in ["init", "normalize", "snapshot"] {
            let out = ok_msg(run(&base, Message::new().with("path", key)));
            assert_eq!(out.without_private(), base);
        }
        // A missing source is not found.
        let out = run(
            &base,
            Message::new()
                .with("path", "compute")
                .with("patch-from", "/nothing/here"),
        );
        assert_eq!(out, Outcome::not_found());
        // A binary source in `patches` mode, a non-path parameter, a binary into the
        // root: errors, not panics.
        let out = run(
            &base,
            Message::new()
                .with("path", "compute")
                .with("patch-from", "/other-message"),
        );
        assert_eq!(out.status, Status::Error);
        let out = run(
            &base,
            Message::new()
                .with("path", "compute")
                .with("patch-from", Message::new()),
        );
        assert_eq!(out.status, Status::Error);
        let out = run(
            &base,
            Message::new()
                .with("path", "all")
                .with("patch-from", "/other-message"),
        );
        assert_eq!(out.status, Status::Error);
        // Absurdly deep destinations are refused before anything is built.
        let deep = "/a".repeat(10_000);
        let out = run(
            &base,
            Message::new()
                .with("path", "compute")
                .with("patch-to", deep),
        );
        assert_eq!(out.status, Status::Error);
    }

    #[test]
    fn source_paths() {
        assert_eq!(source_of("/"), (Origin::Base, String::new()));
        assert_eq!(source_of("/a/b"), (Origin::Base, "a/b".into()));
        assert_eq!(source_of("req:/a/b"), (Origin::Request, "a/b".into()));
        assert_eq!(source_of("req:a/b"), (Origin::Request, "a/b".into()));
        assert_eq!(source_of("base:a"), (Origin::Base, "a".into()));
        assert_eq!(source_of("x:y/z"), (Origin::Base, "x:y/z".into()));
    }

    #[test]
    fn in_a_stack_after_another_device() {
        // spec 04 §8: an execution stack of a runtime and patch@1.0.
        let ctx = ctx();
        let base = Message::new()
            .with("device", "stack@1.0")
            .with(
                "device-stack",
                Value::list(vec!["test-device@1.0".into(), "patch@1.0".into()]),
            )
            .with("patch-from", "/results/outbox")
            .with(
                "results",
                Message::new().with(
                    "outbox",
                    Message::new().with(
                        "1",
                        Message::new().with("method", "PATCH").with("x", "banana"),
                    ),
                ),
            );
        let out = ctx
            .resolve(
                Value::Message(base),
                Message::new().with("path", "compute").with("slot", 1i64),
            )
            .expect("resolves");
        let out = ok_msg(out);
        assert_eq!(out.get_str("x"), Some("banana"));
        assert_eq!(out.get_str("device"), Some("stack@1.0"));
        assert_eq!(
            at(&out, "results/assignment-slot"),
            Some(&Value::Integer(1))
        );
        assert!(at(&out, "results/outbox/1").is_none());
    }
}
