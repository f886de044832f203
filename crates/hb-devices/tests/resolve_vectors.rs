//! Conformance tests for the resolution engine: the vectors and checklist of spec 01
//! (§4–§9, §12.1), each run under the reference's four option sets where it applies.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;

use hb_core::device::{Call, DefaultHandler, Device, DeviceInfo, DeviceResult, Outcome, Status};
use hb_core::resolve::{CacheDirectives, HashpathMode, hashpath_of_step};
use hb_core::{Ctx, MemoryCache, Message, NodeHandle, ResolveOpts, Value};

/// A device whose handler answers every key but `set` (spec 01 §3.3 test facts).
struct HandlerDev {
    exports: Option<Vec<String>>,
    excludes: Vec<String>,
}
impl Device for HandlerDev {
    fn name(&self) -> &'static str {
        "handler-dev@1.0"
    }
    fn info(&self, _: &Message) -> DeviceInfo {
        DeviceInfo {
            handler: true,
            exports: self.exports.clone(),
            excludes: self.excludes.clone(),
            ..Default::default()
        }
    }
    fn functions(&self) -> &'static [&'static str] {
        &[]
    }
    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        if call.key() == "set" {
            let dev = ctx.registry().get("message@1.0").unwrap().clone();
            return dev.call(Call::Function("set"), base, req, ctx);
        }
        Ok(Outcome::ok("HANDLER VALUE"))
    }
}

/// Default-function device with an explicit key `state_key`.
struct DefaultDev;
impl Device for DefaultDev {
    fn name(&self) -> &'static str {
        "default-dev@1.0"
    }
    fn info(&self, _: &Message) -> DeviceInfo {
        DeviceInfo {
            default: DefaultHandler::Function,
            ..Default::default()
        }
    }
    fn functions(&self) -> &'static [&'static str] {
        &["state_key"]
    }
    fn call(&self, call: Call<'_>, _: &Message, _: &Message, _: &Ctx) -> DeviceResult {
        Ok(Outcome::ok(match call {
            Call::Function(_) => "STATE",
            _ => "DEFAULT",
        }))
    }
}

/// Functions of "arity" 1, 2 and 3 (spec 01 §3.4 "key from id device with args").
struct ArgsDev;
impl Device for ArgsDev {
    fn name(&self) -> &'static str {
        "args-dev@1.0"
    }
    fn functions(&self) -> &'static [&'static str] {
        &[
            "key_using_only_state",
            "key_using_state_and_msg",
            "key_using_all",
        ]
    }
    fn call(&self, call: Call<'_>, base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        let s = base.get_str("state_key").unwrap_or("").to_owned();
        let m = req.get_str("msg_key").unwrap_or("").to_owned();
        let o = ctx
            .node()
            .get()
            .get_str("opts_key")
            .unwrap_or("")
            .to_owned();
        Ok(Outcome::ok(match call.key() {
            "key_using_only_state" => s,
            "key_using_state_and_msg" => s + &m,
            _ => s + &m + &o,
        }))
    }
}

/// A device whose `set` appends `.` to `set_count` (spec 01 §12.1 "set with device"), and
/// whose `set` marks `modified: true` (for "deep set with device").
struct SetCountDev;
impl Device for SetCountDev {
    fn name(&self) -> &'static str {
        "set-count@1.0"
    }
    fn functions(&self) -> &'static [&'static str] {
        &["set"]
    }
    fn call(&self, _: Call<'_>, base: &Message, _: &Message, _: &Ctx) -> DeviceResult {
        let count = base.get_str("set_count").unwrap_or("").to_owned() + ".";
        Ok(Outcome::ok(base.clone().with("set_count", count)))
    }
}

fn ctx_with(opts: ResolveOpts) -> Ctx {
    let mut reg = hb_devices::registry();
    reg.register(Arc::new(DefaultDev));
    reg.register(Arc::new(ArgsDev));
    reg.register(Arc::new(SetCountDev));
    let node = Message::new().with("opts_key", "37");
    Ctx::new(
        Arc::new(reg),
        Arc::new(MemoryCache::default()),
        NodeHandle::new(node),
    )
    .with_opts(opts)
}

/// A context whose registry also holds a [`HandlerDev`] with these exports and excludes.
fn handler_ctx(exports: Option<Vec<String>>, excludes: Vec<String>) -> Ctx {
    let mut reg = hb_devices::registry();
    reg.register(Arc::new(HandlerDev { exports, excludes }));
    Ctx::new(
        Arc::new(reg),
        Arc::new(MemoryCache::default()),
        NodeHandle::default(),
    )
}

fn option_sets() -> Vec<(&'static str, ResolveOpts)> {
    let dirs = |d: &[&str]| CacheDirectives::parse(d);
    vec![
        (
            "no_cache",
            ResolveOpts {
                hashpath: HashpathMode::Ignore,
                cache_control: dirs(&["no-cache", "no-store"]),
                ..Default::default()
            },
        ),
        (
            "only_store",
            ResolveOpts {
                cache_control: dirs(&["no-cache"]),
                ..Default::default()
            },
        ),
        (
            "only_if_cached",
            ResolveOpts {
                hashpath: HashpathMode::Ignore,
                cache_control: dirs(&["only-if-cached"]),
                ..Default::default()
            },
        ),
        ("normal", ResolveOpts::default()),
    ]
}

fn all_sets(f: impl Fn(&Ctx)) {
    for (name, opts) in option_sets() {
        let ctx = ctx_with(opts);
        eprintln!("option set {name}");
        f(&ctx);
    }
}

fn msg(pairs: &[(&str, Value)]) -> Message {
    Message::from_pairs(pairs.iter().map(|(k, v)| (*k, v.clone())))
}

fn resolve_key(ctx: &Ctx, base: Message, key: &str) -> Outcome {
    ctx.resolve(Value::Message(base), Message::new().with("path", key))
        .unwrap()
}

fn ok(v: impl Into<Value>) -> Outcome {
    Outcome::ok(v)
}

#[test]
fn resolve_simple() {
    all_sets(|ctx| {
        assert_eq!(
            resolve_key(ctx, msg(&[("a", "RESULT".into())]), "a"),
            ok("RESULT")
        )
    });
}

#[test]
fn resolve_key_twice() {
    all_sets(|ctx| {
        let m = msg(&[("a", "1".into())]);
        assert_eq!(resolve_key(ctx, m.clone(), "a"), ok("1"));
        assert_eq!(resolve_key(ctx, m, "a"), ok("1"));
    });
}

#[test]
fn checklist_01_3_resolve_from_multiple_keys_hides_private() {
    all_sets(|ctx| {
        let m = msg(&[("a", "1".into()), ("priv_a", "2".into())]);
        assert_eq!(
            resolve_key(ctx, m.clone(), "keys"),
            ok(Value::list(vec!["a".into()]))
        );
        assert_eq!(resolve_key(ctx, m, "priv_a"), Outcome::not_found());
    });
}

#[test]
fn resolve_path_element() {
    all_sets(|ctx| {
        let m = msg(&[("path", Value::list(vec!["test_path".into()]))]);
        assert_eq!(
            resolve_key(ctx, m, "path"),
            ok(Value::list(vec!["test_path".into()]))
        );
        let m = msg(&[("Path", Value::list(vec!["a".into()]))]);
        assert_eq!(
            resolve_key(ctx, m, "Path"),
            ok(Value::list(vec!["a".into()]))
        );
    });
}

#[test]
fn checklist_01_4_resolve_binary_key_case_insensitive() {
    all_sets(|ctx| {
        let m = msg(&[("Test-Header", "1".into())]);
        assert_eq!(resolve_key(ctx, m.clone(), "Test-Header"), ok("1"));
        assert_eq!(resolve_key(ctx, m, "test-header"), ok("1"));
    });
}

#[test]
fn checklist_01_2_list_transform() {
    all_sets(|ctx| {
        let items: Vec<Value> = ["A", "B", "C", "D", "E"]
            .iter()
            .map(|s| Value::text(s))
            .collect();
        for (i, want) in ["A", "B", "C", "D", "E"].iter().enumerate() {
            let out = ctx
                .resolve(
                    Value::list(items.clone()),
                    Message::new().with("path", (i + 1).to_string()),
                )
                .unwrap();
            assert_eq!(out, ok(*want));
        }
    });
}

#[test]
fn key_from_id_device_with_args() {
    all_sets(|ctx| {
        let base = msg(&[("device", "args-dev@1.0".into()), ("state_key", "1".into())]);
        let req = |k: &str| Message::new().with("path", k).with("msg_key", "3");
        let r = |k| ctx.resolve(Value::Message(base.clone()), req(k)).unwrap();
        assert_eq!(r("key_using_only_state"), ok("1"));
        assert_eq!(r("key_using_state_and_msg"), ok("13"));
        assert_eq!(r("key_using_all"), ok("1337"));
    });
}

#[test]
fn checklist_01_6_device_with_handler_function() {
    let ctx = handler_ctx(None, vec![]);
    let m = msg(&[
        ("device", "handler-dev@1.0".into()),
        ("test_key", "BAD".into()),
    ]);
    assert_eq!(resolve_key(&ctx, m, "test_key"), ok("HANDLER VALUE"));
}

#[test]
fn checklist_01_7_device_with_default_handler_function() {
    all_sets(|ctx| {
        let m = msg(&[("device", "default-dev@1.0".into())]);
        assert_eq!(resolve_key(ctx, m.clone(), "state_key"), ok("STATE"));
        assert_eq!(resolve_key(ctx, m, "any_random_key"), ok("DEFAULT"));
    });
}

#[test]
fn device_exports() {
    let ctx = handler_ctx(Some(vec!["test1".into(), "Test2".into()]), vec![]);
    let m = msg(&[
        ("device", "handler-dev@1.0".into()),
        ("test3", "GOOD3".into()),
    ]);
    assert_eq!(resolve_key(&ctx, m.clone(), "test1"), ok("HANDLER VALUE"));
    assert_eq!(resolve_key(&ctx, m.clone(), "test2"), ok("HANDLER VALUE"));
    assert_eq!(resolve_key(&ctx, m.clone(), "test3"), ok("GOOD3"));
    assert_eq!(resolve_key(&ctx, m.clone(), "test5"), Outcome::not_found());
    let set = ctx
        .resolve(
            Value::Message(m),
            Message::new().with("path", "set").with("test4", "X"),
        )
        .unwrap();
    assert_eq!(
        set.value.as_message().unwrap().get("test4"),
        Some(&Value::text("X"))
    );
}

#[test]
fn device_excludes() {
    let ctx = handler_ctx(None, vec!["set".into()]);
    let m = msg(&[("device", "handler-dev@1.0".into())]);
    assert_eq!(
        resolve_key(&ctx, m.clone(), "test-key2"),
        ok("HANDLER VALUE")
    );
    let out = ctx
        .resolve(
            Value::Message(m),
            Message::new().with("path", "set").with("test-key2", "2"),
        )
        .unwrap();
    assert_eq!(
        out.value.as_message().unwrap().get("test-key2"),
        Some(&Value::text("2"))
    );
}

#[test]
fn denormalized_device_key() {
    all_sets(|ctx| {
        let m = msg(&[("Device", "test-device@1.0".into())]);
        assert_eq!(ctx.get("device", &m), Some(Value::text("test-device@1.0")));
        assert_eq!(resolve_key(ctx, m, "test_func"), ok("GOOD_FUNCTION"));
    });
}

#[test]
fn basic_and_recursive_get() {
    all_sets(|ctx| {
        let m = msg(&[("key1", "value1".into()), ("key2", "value2".into())]);
        assert_eq!(ctx.get("key1", &m), Some(Value::text("value1")));
        assert_eq!(ctx.get("key2", &m), Some(Value::text("value2")));
        let deep = msg(&[(
            "key2",
            Value::Message(msg(&[
                ("key3", "value3".into()),
                (
                    "key4",
                    Value::Message(msg(&[(
                        "key6",
                        Value::Message(msg(&[("key7", "value7".into())])),
                    )])),
                ),
            ])),
        )]);
        assert_eq!(ctx.get("key2/key3", &deep), Some(Value::text("value3")));
        assert_eq!(
            ctx.get("key2/key4/key6/key7", &deep),
            Some(Value::text("value7"))
        );
    });
}

#[test]
fn basic_set_and_set_with_device() {
    all_sets(|ctx| {
        let m = msg(&[("key1", "value1".into()), ("key2", "value2".into())]);
        let out = ctx.set(&m, "key1", "new_value1".into()).unwrap();
        assert_eq!(out.get("key1"), Some(&Value::text("new_value1")));
        assert_eq!(out.get("key2"), Some(&Value::text("value2")));
        let d = msg(&[
            ("device", "set-count@1.0".into()),
            ("state_key", "STATE".into()),
        ]);
        let once = ctx.set(&d, "x", "1".into()).unwrap();
        assert_eq!(once.get_str("set_count"), Some("."));
        let twice = ctx.set(&once, "x", "1".into()).unwrap();
        assert_eq!(twice.get_str("set_count"), Some(".."));
        assert_eq!(twice.get_str("state_key"), Some("STATE"));
    });
}

#[test]
fn checklist_01_15_set_semantics() {
    all_sets(|ctx| {
        let m = msg(&[("dangerous", "Value1".into())]);
        let set = |base: &Message, k: &str, v: Value| {
            ctx.resolve(
                Value::Message(base.clone()),
                Message::new().with("path", "set").with(k, v),
            )
            .unwrap()
            .value
            .as_message()
            .unwrap()
            .without_private()
        };
        assert_eq!(
            set(&m, "dangerous", "Value2".into()),
            msg(&[("dangerous", "Value2".into())])
        );
        assert_eq!(set(&m, "dangerous", Value::atom("unset")), Message::new());
        assert_eq!(set(&m, "test-key", Value::atom("undefined")), m);
        // Deep merge by default, shallow with set-mode: explicit.
        let nested = msg(&[(
            "a",
            Value::Message(msg(&[("x", "1".into()), ("y", "2".into())])),
        )]);
        let merged = set(&nested, "a", Value::Message(msg(&[("y", "3".into())])));
        assert_eq!(
            merged.get("a").unwrap().as_message().unwrap().get_str("x"),
            Some("1")
        );
        let explicit = ctx
            .resolve(
                Value::Message(nested),
                Message::new()
                    .with("path", "set")
                    .with("set-mode", "explicit")
                    .with("a", msg(&[("y", "3".into())])),
            )
            .unwrap();
        let a = explicit
            .value
            .as_message()
            .unwrap()
            .get("a")
            .unwrap()
            .as_message()
            .unwrap()
            .clone();
        assert_eq!(a, msg(&[("y", "3".into())]));
        // priv is kept.
        let mut p = msg(&[("a", "1".into())]);
        p.set_private("k", "v".into());
        let out = ctx
            .resolve(
                Value::Message(p),
                Message::new().with("path", "set").with("b", "2"),
            )
            .unwrap()
            .value
            .as_message()
            .unwrap()
            .clone();
        assert_eq!(out.get_private("k"), Some(&Value::text("v")));
    });
}

#[test]
fn checklist_01_16_remove_item_and_items() {
    all_sets(|ctx| {
        let m = msg(&[("key1", "v".into()), ("key2", "v".into())]);
        let r = |req: Message| ctx.resolve(Value::Message(m.clone()), req).unwrap().value;
        let one = r(Message::new().with("path", "remove").with("item", "key1"));
        assert_eq!(
            one.as_message().unwrap().without_private(),
            msg(&[("key2", "v".into())])
        );
        let both = r(Message::new()
            .with("path", "remove")
            .with("items", Value::list(vec!["key1".into(), "key2".into()])));
        assert_eq!(both.as_message().unwrap().without_private(), Message::new());
    });
}

#[test]
fn deep_set() {
    all_sets(|ctx| {
        let m = msg(&[("a", Value::Message(msg(&[("b", "RESULT".into())])))]);
        let out = hb_core::resolve::deep_set(ctx, &m, "a/b", "RESULT2".into()).unwrap();
        assert_eq!(
            out.without_private(),
            msg(&[("a", Value::Message(msg(&[("b", "RESULT2".into())])))])
        );
        let out = hb_core::resolve::deep_set(ctx, &Message::new(), "z/y/x", "1".into()).unwrap();
        assert_eq!(ctx.get("z/y/x", &out), Some(Value::text("1")));
        let out = hb_core::resolve::deep_set(ctx, &m, "a/b", Value::atom("unset")).unwrap();
        assert_eq!(
            out.get("a")
                .unwrap()
                .as_message()
                .unwrap()
                .without_private(),
            Message::new()
        );
    });
}

#[test]
fn start_as() {
    all_sets(|ctx| {
        let list = vec![
            Value::As(
                Arc::from("test-device@1.0"),
                Box::new(Value::Message(msg(&[("path", "".into())]))),
            ),
            Value::Message(msg(&[("path", "test_func".into())])),
        ];
        assert_eq!(ctx.resolve_many(list).unwrap(), ok("GOOD_FUNCTION"));
    });
}

#[test]
fn start_as_with_parameters() {
    all_sets(|ctx| {
        let inner = msg(&[
            ("device", "test-device@1.0".into()),
            (
                "test_func",
                Value::Message(msg(&[("test_key", "MESSAGE".into())])),
            ),
        ]);
        let list = vec![
            Value::As(Arc::from("message@1.0"), Box::new(Value::Message(inner))),
            Value::Message(msg(&[("path", "test_func".into())])),
        ];
        assert_eq!(ctx.resolve_many(list).unwrap(), ok("GOOD_FUNCTION"));
    });
}

fn as_test_message() -> Message {
    msg(&[
        ("device", "test-device@1.0".into()),
        (
            "test_func",
            Value::Message(msg(&[("test_key", "MESSAGE".into())])),
        ),
    ])
}

#[test]
fn as_path() {
    all_sets(|ctx| {
        let m = as_test_message();
        assert_eq!(ctx.get("test_func", &m), Some(Value::text("GOOD_FUNCTION")));
        let out = ctx
            .resolve_step(
                Value::Message(m),
                Value::As(
                    Arc::from("message@1.0"),
                    Box::new(Value::Message(msg(&[("path", "test_func".into())]))),
                ),
            )
            .unwrap();
        assert!(out.is_ok());
        assert_eq!(
            out.value.as_message().unwrap().get_str("test_key"),
            Some("MESSAGE")
        );
    });
}

#[test]
fn continue_as() {
    all_sets(|ctx| {
        let list = vec![
            Value::Message(as_test_message()),
            Value::As(Arc::from("message@1.0"), Box::new(Value::text(""))),
            Value::Message(msg(&[("path", "test_func".into())])),
            Value::Message(msg(&[("path", "test_key".into())])),
        ];
        assert_eq!(ctx.resolve_many(list).unwrap(), ok("MESSAGE"));
    });
}

#[test]
fn load_as() {
    // Skipped by the reference under no_cache; loading needs the cache.
    for (name, opts) in option_sets()
        .into_iter()
        .filter(|(n, _)| *n == "normal" || *n == "only_if_cached")
    {
        eprintln!("option set {name}");
        let ctx = ctx_with(opts);
        let m = as_test_message();
        let id = hb_core::httpsig::message_id(&m).unwrap();
        ctx.cache().write_message(id, &m);
        let list = vec![
            Value::As(
                Arc::from("message@1.0"),
                Box::new(Value::Message(msg(&[("path", id.to_human().into())]))),
            ),
            Value::Message(msg(&[("path", "test_func".into())])),
            Value::Message(msg(&[("path", "test_key".into())])),
        ];
        assert_eq!(ctx.resolve_many(list).unwrap(), ok("MESSAGE"));
    }
}

#[test]
fn checklist_01_9_pipeline_stops_at_first_error() {
    all_sets(|ctx| {
        let list = vec![
            Value::Message(msg(&[("a", Value::Message(msg(&[("b", 1i64.into())])))])),
            Value::Message(msg(&[("path", "a".into())])),
            Value::Message(msg(&[("path", "b".into())])),
            Value::Message(msg(&[("path", "c".into())])),
        ];
        assert_eq!(ctx.resolve_many(list).unwrap(), Outcome::not_found());
    });
}

#[test]
fn checklist_01_25_unknown_key_and_priv() {
    all_sets(|ctx| {
        let m = msg(&[("a", "1".into())]);
        assert_eq!(resolve_key(ctx, m.clone(), "nope"), Outcome::not_found());
        assert_eq!(resolve_key(ctx, m.clone(), "priv").status, Status::Error);
        assert_eq!(resolve_key(ctx, m, "priv/a").status, Status::Error);
    });
}

#[test]
fn checklist_01_5_unknown_device_fails() {
    let ctx = ctx_with(ResolveOpts::default());
    let m = msg(&[("device", "nope@1.0".into())]);
    let err = ctx
        .resolve(Value::Message(m), Message::new().with("path", "a"))
        .unwrap_err();
    assert!(err.to_string().contains("nope@1.0"), "{err}");
    // Device names are case-insensitive.
    let m = msg(&[("device", "Test-Device@1.0".into())]);
    assert_eq!(resolve_key(&ctx, m, "test_func"), ok("GOOD_FUNCTION"));
}

#[test]
fn checklist_01_8_every_step_carries_the_request_keys() {
    // resolve(M, {path:"a/b", x:1}): both steps see x (the args device echoes msg_key).
    let ctx = ctx_with(ResolveOpts::default());
    let inner = msg(&[("device", "args-dev@1.0".into()), ("state_key", "S".into())]);
    let m = msg(&[("a", Value::Message(inner))]);
    let out = ctx
        .resolve(
            Value::Message(m),
            Message::new()
                .with("path", "a/key_using_state_and_msg")
                .with("msg_key", "M"),
        )
        .unwrap();
    assert_eq!(out, ok("SM"));
}

#[test]
fn checklist_01_11_hashpath_vectors() {
    let ctx = ctx_with(ResolveOpts::default());
    let m = msg(&[(
        "a",
        Value::Message(msg(&[("b", Value::Message(msg(&[("c", "X".into())])))])),
    )]);
    let step1 = ctx
        .resolve(Value::Message(m.clone()), Message::new().with("path", "a"))
        .unwrap();
    assert_eq!(
        step1.value.as_message().unwrap().hashpath(),
        Some("MgSU6gLkR0WiqCizKUeqmNP-nH9F97lwn3mX1O9SIfo/a")
    );
    let out = ctx
        .resolve(
            Value::Message(m.clone()),
            Message::new().with("path", "a/b"),
        )
        .unwrap();
    assert_eq!(
        out.value.as_message().unwrap().hashpath(),
        Some("ymhbgra5Ek7ODp6_4Ht4mQHr1E0uAcdJe2_XT_-ZPlU/b")
    );
    assert_eq!(
        out.value.as_message().unwrap().without_private(),
        msg(&[("c", "X".into())])
    );
}

#[test]
fn checklist_01_12_request_keys_enter_the_hashpath() {
    let ctx = ctx_with(ResolveOpts::default());
    let m = msg(&[(
        "a",
        Value::Message(msg(&[("b", Value::Message(msg(&[("c", "X".into())])))])),
    )]);
    let out = ctx
        .resolve(
            Value::Message(m),
            Message::new().with("path", "a").with("x", "y"),
        )
        .unwrap();
    assert_eq!(
        out.value.as_message().unwrap().hashpath(),
        Some(
            "MgSU6gLkR0WiqCizKUeqmNP-nH9F97lwn3mX1O9SIfo/cC1_z0tLo1OguPd3e4nuy0eo-kVX3u6_-42Bjw9voLI"
        )
    );
}

#[test]
fn hashpath_of_set_vectors() {
    let ctx = ctx_with(ResolveOpts::default());
    let out = ctx
        .resolve(
            Value::Message(msg(&[("a", "1".into())])),
            Message::new().with("path", "set").with("b", "2"),
        )
        .unwrap();
    let m = out.value.as_message().unwrap();
    assert_eq!(
        m.without_private(),
        msg(&[("a", "1".into()), ("b", "2".into())])
    );
    assert_eq!(
        m.hashpath(),
        Some(
            "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s/KJkf4UyGN3LwipjE89LRonMRrxlaDWXReBKsUx8GV9M"
        )
    );
    let out = ctx
        .resolve(
            Value::Message(msg(&[("a", 1i64.into())])),
            Message::new()
                .with("path", "set")
                .with("a", Value::atom("unset")),
        )
        .unwrap();
    let m = out.value.as_message().unwrap();
    assert_eq!(m.without_private(), Message::new());
    assert_eq!(
        m.hashpath(),
        Some(
            "np3stvTlJELQLgarP2Iw5NuN6oFI_iMfrglyWWsK3ME/mJAQ1jc9GQadxtwnKrbCkvle3ZVVJl4wYeuuaRUwwsI"
        )
    );
}

#[test]
fn checklist_01_10_hashpath_modes() {
    let m = msg(&[("a", Value::Message(msg(&[("b", "1".into())])))]);
    let run = |mode| {
        let ctx = ctx_with(ResolveOpts {
            hashpath: mode,
            ..Default::default()
        });
        ctx.resolve(Value::Message(m.clone()), Message::new().with("path", "a"))
            .unwrap()
            .value
    };
    assert!(
        run(HashpathMode::Update)
            .as_message()
            .unwrap()
            .hashpath()
            .is_some()
    );
    assert!(
        run(HashpathMode::Ignore)
            .as_message()
            .unwrap()
            .hashpath()
            .is_none()
    );
    assert!(
        run(HashpathMode::Reset)
            .as_message()
            .unwrap()
            .hashpath()
            .is_none()
    );
}

#[test]
fn hashpath_is_87_bytes_with_two_ids() {
    let a = Value::Message(msg(&[("a", "1".into())]));
    let hp = hashpath_of_step(&a, &msg(&[("path", "a".into()), ("x", "y".into())])).unwrap();
    assert_eq!(hp.len(), 87);
}

#[test]
fn checklist_01_14_force_message() {
    let ctx = ctx_with(ResolveOpts {
        force_message: true,
        ..Default::default()
    });
    let out = resolve_key(&ctx, msg(&[("a", "X".into())]), "a");
    let m = out.value.as_message().unwrap();
    assert_eq!(m.get_str("ao-result"), Some("body"));
    assert_eq!(m.get_str("body"), Some("X"));
    assert!(m.hashpath().unwrap().ends_with("/a"));
}

#[test]
fn checklist_01_23_only_if_cached_without_lookup_executes() {
    let ctx = ctx_with(ResolveOpts::default());
    let out = ctx
        .resolve(
            Value::Message(msg(&[("a", "1".into())])),
            Message::new()
                .with("path", "a")
                .with("cache-control", Value::list(vec!["only-if-cached".into()])),
        )
        .unwrap();
    assert_eq!(out, ok("1"));
}

#[test]
fn checklist_01_24_lookup_misses() {
    let dirs = |d: &[&str]| CacheDirectives::parse(d);
    let ctx = ctx_with(ResolveOpts {
        cache_control: dirs(&["always", "only-if-cached"]),
        ..Default::default()
    });
    let out = resolve_key(&ctx, msg(&[("a", "1".into())]), "a");
    assert_eq!(out.status, Status::Error);
    assert_eq!(
        out.value.as_message().unwrap().get("status"),
        Some(&Value::Integer(504))
    );
    let ctx = ctx_with(ResolveOpts {
        cache_control: dirs(&["always"]),
        ..Default::default()
    });
    let missing = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
    let out = ctx
        .resolve_many(vec![
            Value::text(missing),
            Value::Message(msg(&[("path", "a".into())])),
        ])
        .unwrap();
    assert_eq!(
        out.value.as_message().unwrap().get("status"),
        Some(&Value::Integer(404))
    );
}

#[test]
fn cached_results_are_reused() {
    let dirs = |d: &[&str]| CacheDirectives::parse(d);
    let ctx = ctx_with(ResolveOpts {
        cache_control: dirs(&["always"]),
        ..Default::default()
    });
    let m = msg(&[("a", "1".into())]);
    assert_eq!(resolve_key(&ctx, m.clone(), "a"), ok("1"));
    // The stored base answers `ID/a` through its key links.
    let id = hb_core::httpsig::message_id(&m).unwrap();
    let out = ctx
        .resolve_many(vec![
            Value::text(&id.to_human()),
            Value::Message(msg(&[("path", "a".into())])),
        ])
        .unwrap();
    assert_eq!(out, ok("1"));
}

#[test]
fn id_of_unsigned_message() {
    let ctx = ctx_with(ResolveOpts::default());
    let out = resolve_key(&ctx, msg(&[("a", "1".into())]), "id");
    assert_eq!(out, ok("N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s"));
    let out = resolve_key(&ctx, Message::new(), "committers");
    assert_eq!(out, ok(Value::list(vec![])));
}

#[test]
fn bounded_recursion() {
    let ctx = ctx_with(ResolveOpts {
        max_depth: 4,
        ..Default::default()
    });
    let mut nested = vec![Value::Message(Message::new())];
    for _ in 0..10 {
        nested = vec![
            Value::Resolve(Arc::new(nested)),
            Value::Message(msg(&[("path", "keys".into())])),
        ];
    }
    assert!(ctx.resolve_many(nested).is_err());
}

fn committed_message() -> (Message, String, String) {
    let rsa = hb_core::Id::sha256(b"rsa signature").to_human();
    let hmac = hb_core::Id::sha256(b"hmac").to_human();
    assert_eq!((rsa.len(), hmac.len()), (43, 43));
    let commitments = Message::new()
        .with(
            &rsa,
            msg(&[
                ("commitment-device", "httpsig@1.0".into()),
                ("alg", "rsa-pss-sha512".into()),
                ("committer", "ADDR".into()),
            ]),
        )
        .with(
            &hmac,
            msg(&[
                ("commitment-device", "httpsig@1.0".into()),
                ("alg", "hmac-sha256".into()),
            ]),
        );
    (
        msg(&[
            ("a", "1".into()),
            ("commitments", Value::Message(commitments)),
        ]),
        rsa,
        hmac,
    )
}

#[test]
fn checklist_01_17_18_id_follows_commitment_selection() {
    let ctx = ctx_with(ResolveOpts::default());
    let (m, rsa, hmac) = committed_message();
    let id = |req: Message| {
        ctx.resolve(Value::Message(m.clone()), req.with("path", "id"))
            .unwrap()
    };
    // Default (committers: none => commitments: all): both, combined.
    let mut both = [rsa.clone(), hmac.clone()];
    both.sort();
    let combined = hb_core::Id::sha256(both.join(", ").as_bytes()).to_human();
    assert_eq!(id(Message::new()), ok(combined));
    // committers: all => only those with a committer.
    assert_eq!(
        id(Message::new().with("committers", "all")),
        ok(rsa.clone())
    );
    // committers: [ADDR] => that signer's.
    assert_eq!(
        id(Message::new().with("committers", Value::list(vec!["ADDR".into()]))),
        ok(rsa.clone())
    );
    // committers: [] => none selected => the fresh ID of the content alone.
    let fresh = hb_core::httpsig::message_id(&msg(&[("a", "1".into())]))
        .unwrap()
        .to_human();
    assert_eq!(
        id(Message::new().with("committers", Value::list(vec![]))),
        ok(fresh)
    );
    // An unknown committer is an error.
    let err = ctx
        .resolve(
            Value::Message(m.clone()),
            Message::new()
                .with("path", "id")
                .with("committers", Value::list(vec!["NOPE".into()])),
        )
        .unwrap_err();
    assert!(err.to_string().contains("NOPE"), "{err}");
}

#[test]
fn checklist_01_19_committers() {
    let ctx = ctx_with(ResolveOpts::default());
    assert_eq!(
        resolve_key(&ctx, msg(&[("a", "1".into())]), "committers"),
        ok(Value::list(vec![]))
    );
    let (m, _, _) = committed_message();
    assert_eq!(
        resolve_key(&ctx, m, "committers"),
        ok(Value::list(vec!["ADDR".into()]))
    );
}

#[test]
fn checklist_01_20_unsigned_messages_verify() {
    let ctx = ctx_with(ResolveOpts::default());
    assert_eq!(
        resolve_key(&ctx, msg(&[("a", "1".into())]), "verify"),
        ok(Value::boolean(true))
    );
}

#[test]
fn checklist_01_21_device_switching_from_paths() {
    let ctx = ctx_with(ResolveOpts::default());
    let run = |p: &str| {
        ctx.resolve_many(hb_core::hyperpath::parse(p).unwrap())
            .unwrap()
    };
    // As base: a new message with the device and the inline keys.
    let base = run("/~test-device@1.0&k=v");
    let base = base.value.as_message().unwrap().without_private();
    assert_eq!(
        base,
        msg(&[("device", "test-device@1.0".into()), ("k", "v".into())])
    );
    assert_eq!(run("/~test-device@1.0/test_func"), ok("GOOD_FUNCTION"));
    // Mid-path: switch the device of the current message.
    assert_eq!(
        run("/~message@1.0&test_func=X/~test-device@1.0/test_func"),
        ok("GOOD_FUNCTION")
    );
    // key~dev: run one key with the device switched.
    // (The first segment must not be 32, 42 or 43 bytes long, or it would be an ID.)
    assert_eq!(
        run("/~test-device@1.0&test_func=PLAINTEXT/test_func~message@1.0"),
        ok("PLAINTEXT")
    );
}

#[test]
fn message_base_shortcut_matches_the_device_sets() {
    let ctx = ctx_with(ResolveOpts::default());
    let req = msg(&[
        ("path", "".into()),
        ("a", "1".into()),
        ("n", 2i64.into()),
        ("keys", "not set".into()),
        ("skip", Value::atom("undefined")),
        ("nested", Value::Message(msg(&[("x", "1".into())]))),
    ]);
    let fast = ctx
        .subresolve(
            Value::Message(Message::new()),
            Some("message@1.0"),
            Value::Message(req.clone()),
        )
        .unwrap()
        .value;
    let with_device = ctx
        .set(&Message::new(), "device", "message@1.0".into())
        .unwrap();
    let general = ctx.set_many(&with_device, &req).unwrap();
    assert_eq!(fast, Value::Message(general));
    assert_eq!(fast.as_message().unwrap().get("keys"), None);
}

#[test]
fn step_count_is_bounded() {
    let ctx = ctx_with(ResolveOpts {
        max_steps: 8,
        ..Default::default()
    });
    let mut list = vec![Value::Message(msg(&[("a", "1".into())]))];
    list.extend((0..8).map(|_| Value::Message(msg(&[("path", "keys".into())]))));
    let err = ctx.resolve_many(list).unwrap_err();
    assert!(err.to_string().contains("at most 8"), "{err}");
}

/// A `step` hook handler that counts its calls and passes results through.
struct StepCounter;
static STEP_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
impl Device for StepCounter {
    fn name(&self) -> &'static str {
        "step-counter@1.0"
    }
    fn functions(&self) -> &'static [&'static str] {
        &["step"]
    }
    fn call(&self, _: Call<'_>, _: &Message, req: &Message, _: &Ctx) -> DeviceResult {
        STEP_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let status = req.get("status").cloned().unwrap_or(Value::atom("ok"));
        let body = req.get("body").cloned().unwrap_or(Value::atom("undefined"));
        Ok(Outcome::ok(
            Message::new().with("status", status).with("body", body),
        ))
    }
}

#[test]
fn step_hook() {
    let mut reg = hb_devices::registry();
    reg.register(Arc::new(StepCounter));
    let on = Message::new().with("step", msg(&[("device", "step-counter@1.0".into())]));
    let node = Message::new().with("on", on);
    let ctx = Ctx::new(
        Arc::new(reg),
        Arc::new(MemoryCache::default()),
        NodeHandle::new(node.clone()),
    )
    .with_step_hooks(&node);
    let m = msg(&[(
        "a",
        Value::Message(msg(&[("b", Value::Message(msg(&[("c", "1".into())])))])),
    )]);
    let before = STEP_CALLS.load(std::sync::atomic::Ordering::SeqCst);
    let out = ctx
        .resolve(Value::Message(m), Message::new().with("path", "a/b/c"))
        .unwrap();
    assert_eq!(out, ok("1"));
    let calls = STEP_CALLS.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(calls, 3, "one call per step");
}

#[test]
fn json_and_flat_devices_serialize_and_deserialize() {
    let ctx = ctx_with(ResolveOpts::default());
    let run = |p: &str| {
        ctx.resolve_many(hb_core::hyperpath::parse(p).unwrap())
            .unwrap()
    };
    let out = run("/~message@1.0&a+integer=1&b=x/serialize~json@1.0");
    let m = out.value.as_message().unwrap();
    assert_eq!(m.get_str("content-type"), Some("application/json"));
    assert_eq!(
        m.get_str("body"),
        // `key~dev` runs the key with the message's device switched, so it shows.
        Some(r#"{"a":1,"b":"x","device":"json@1.0"}"#)
    );
    let out = run("/~json@1.0&body=%7B%22a%22%3A1%7D/deserialize");
    assert_eq!(
        out.value.as_message().unwrap().get("a"),
        Some(&Value::Integer(1))
    );
    let out = run("/~json@1.0&other=1/deserialize");
    assert_eq!(out.status, Status::Error);
    let out = run("/~message@1.0&a+integer=1&b=x/serialize~flat@1.0");
    let body = out
        .value
        .as_message()
        .unwrap()
        .get_str("body")
        .unwrap()
        .to_owned();
    assert_eq!(
        body,
        "a: 1\nao-types: a=\"integer\"\nb: x\ndevice: flat@1.0\n"
    );
}
