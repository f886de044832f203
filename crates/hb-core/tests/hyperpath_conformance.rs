//! Conformance tests for the HyperPATH parser: every example of spec 02 §8 and the
//! conformance checklist items 1–14 of spec 02.

#![allow(clippy::unwrap_used, reason = "tests")]

// Everything lives in a module named `hyperpath` so that `cargo test -p hb-core hyperpath`
// selects these tests too.
mod hyperpath {
    use std::sync::Arc;

    use hb_core::hyperpath::{PathError, from_singleton, parse, path_parts, to_singleton};
    use hb_core::{Message, Value};

    const ID: &str = "BOogk_XAI3bvNWnxNxwxmvOfglZt17o4MOVAdPNZ_ew";

    /// A message from `(key, value)` pairs.
    fn m<const N: usize>(pairs: [(&str, Value); N]) -> Value {
        let mut msg = Message::new();
        for (k, v) in pairs {
            msg.insert(k, v);
        }
        Value::Message(msg)
    }

    fn t(s: &str) -> Value {
        Value::text(s)
    }

    fn int(i: i64) -> Value {
        Value::Integer(i)
    }

    fn yes() -> Value {
        Value::boolean(true)
    }

    fn base() -> Value {
        m([])
    }

    fn step(p: &str) -> Value {
        m([("path", t(p))])
    }

    fn res(items: Vec<Value>) -> Value {
        Value::Resolve(Arc::new(items))
    }

    fn as_(dev: &str, inner: Value) -> Value {
        Value::As(Arc::from(dev), Box::new(inner))
    }

    fn id() -> Value {
        t(ID)
    }

    /// Parses `path` with the given headers.
    fn from(path: &str, headers: &[(&str, Value)]) -> Result<Vec<Value>, PathError> {
        let mut s = Message::new().with("path", path);
        for (k, v) in headers {
            s.insert(k, v.clone());
        }
        from_singleton(&s)
    }

    fn ok(path: &str) -> Vec<Value> {
        parse(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ok_with(path: &str, headers: &[(&str, Value)]) -> Vec<Value> {
        from(path, headers).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The element at `i`, as a message.
    fn msg_at(list: &[Value], i: usize) -> &Message {
        list[i]
            .as_message()
            .unwrap_or_else(|| panic!("element {i} is not a message: {list:?}"))
    }

    #[test]
    fn id_constant_is_43_bytes() {
        assert_eq!(ID.len(), 43);
    }

    // ---------------------------------------------------------------------------------------
    // Spec 02 §8: the examples table
    // ---------------------------------------------------------------------------------------

    #[test]
    fn table_simple_paths() {
        assert_eq!(ok("/a"), vec![base(), step("a")]);
        assert_eq!(ok("a"), vec![base(), step("a")]);
        assert_eq!(ok("/a/b/c"), vec![base(), step("a"), step("b"), step("c")]);
        assert_eq!(ok("/"), vec![]);
        assert_eq!(ok(""), vec![]);
        assert_eq!(ok("//a//b/"), vec![base(), step("a"), step("b")]);
    }

    #[test]
    fn table_header_on_every_element() {
        assert_eq!(
            ok_with("/a", &[("a", t("b"))]),
            vec![m([("a", t("b"))]), m([("path", t("a")), ("a", t("b"))])]
        );
    }

    #[test]
    fn table_id_base() {
        let p = format!("/{ID}/a");
        assert_eq!(ok(&p), vec![id(), step("a")]);
        assert_eq!(
            ok_with(&p, &[("a", t("b"))]),
            vec![id(), m([("path", t("a")), ("a", t("b"))])]
        );
    }

    #[test]
    fn table_device_switches() {
        assert_eq!(
            ok("/a~test-device@1.0"),
            vec![as_("test-device@1.0", step("a"))]
        );
        assert_eq!(
            ok("/~test-device@1.0/a"),
            vec![as_("test-device@1.0", step("")), step("a")]
        );
        assert_eq!(
            ok("/a/~message@1.0/b"),
            vec![base(), step("a"), as_("message@1.0", step("")), step("b")]
        );
        assert_eq!(
            ok("/~process@1.0&k=v/a"),
            vec![
                as_("process@1.0", m([("k", t("v")), ("path", t(""))])),
                step("a")
            ]
        );
        assert_eq!(
            ok(&format!("/{ID}~process@1.0/a")),
            vec![as_("process@1.0", m([("path", id())])), step("a")]
        );
    }

    #[test]
    fn table_inline_keys() {
        assert_eq!(
            ok("/a&k1=v1&k2"),
            vec![
                base(),
                m([("path", t("a")), ("k1", t("v1")), ("k2", yes())])
            ]
        );
    }

    #[test]
    fn table_typed_inline_keys() {
        assert_eq!(
            ok("/a&k+integer=12&f+float=1.5&t+atom=true&l+list=1,2"),
            vec![
                base(),
                m([
                    ("path", t("a")),
                    ("k", int(12)),
                    ("f", Value::Float(1.5)),
                    ("t", yes()),
                    ("l", Value::list(vec![int(1), int(2)])),
                ])
            ]
        );
        assert_eq!(
            ok("/a&l+list=\"x\", \"y\""),
            vec![
                base(),
                m([("path", t("a")), ("l", Value::list(vec![t("x"), t("y")]))])
            ]
        );
        assert_eq!(
            ok("/a&m+map=x=1;y=2"),
            vec![base(), m([("path", t("a")), ("m", m([("x", int(1))]))])]
        );
    }

    #[test]
    fn table_subresolutions() {
        assert_eq!(
            ok("/a&k=(/b/c)"),
            vec![
                base(),
                m([
                    ("path", t("a")),
                    ("k", res(vec![base(), step("b"), step("c")]))
                ])
            ]
        );
        assert_eq!(
            ok("/a/(b/c)/d"),
            vec![
                base(),
                step("a"),
                res(vec![base(), step("b"), step("c")]),
                step("d")
            ]
        );
        let l = ok("/part1/part2&test=1&b=(/x/y)/part3");
        assert_eq!(
            l,
            vec![
                base(),
                step("part1"),
                m([
                    ("path", t("part2")),
                    ("test", t("1")),
                    ("b", res(vec![base(), step("x"), step("y")]))
                ]),
                step("part3"),
            ]
        );
    }

    #[test]
    fn table_query_parameters() {
        assert_eq!(
            ok("/a?x=1&y=2"),
            vec![
                m([("x", t("1")), ("y", t("2"))]),
                m([("path", t("a")), ("x", t("1")), ("y", t("2"))])
            ]
        );
        assert_eq!(
            ok("/a/b?1.x=1&y+integer=2"),
            vec![
                m([("y", int(2))]),
                m([("path", t("a")), ("x", t("1")), ("y", int(2))]),
                m([("path", t("b")), ("y", int(2))]),
            ]
        );
        assert_eq!(
            ok("/a/b?0.x=1"),
            vec![m([("x", t("1"))]), step("a"), step("b")]
        );
        assert_eq!(
            ok("/a?x"),
            vec![m([("x", yes())]), m([("path", t("a")), ("x", yes())])]
        );
    }

    #[test]
    fn table_scoped_headers() {
        let l = ok_with("/a/b/c", &[("2.test-key", t("test-value"))]);
        assert_eq!(
            l,
            vec![
                base(),
                step("a"),
                m([("path", t("b")), ("test-key", t("test-value"))]),
                step("c")
            ]
        );
        let l = ok_with("/a/b/c", &[("2.test-key+integer", t("123"))]);
        assert_eq!(msg_at(&l, 2).get("test-key"), Some(&int(123)));
        assert!(!msg_at(&l, 1).contains("test-key"));
        let l = ok_with("/a/b/c", &[("2.test-key+resolve", t("/x/y/z"))]);
        assert_eq!(
            msg_at(&l, 2).get("test-key"),
            Some(&res(vec![base(), step("x"), step("y"), step("z")]))
        );
        assert!(!msg_at(&l, 3).contains("test-key"));
    }

    #[test]
    fn table_inline_keys_with_method() {
        let l = ok_with("/a/b&k1=v1/c&k2=v2", &[("method", t("POST"))]);
        assert_eq!(
            l,
            vec![
                m([("method", t("POST"))]),
                m([("path", t("a")), ("method", t("POST"))]),
                m([("path", t("b")), ("k1", t("v1")), ("method", t("POST"))]),
                m([("path", t("c")), ("k2", t("v2")), ("method", t("POST"))]),
            ]
        );
    }

    #[test]
    fn table_mixed_headers() {
        let l = ok_with(
            "/a/b",
            &[
                ("x", t("1")),
                ("2.y", t("2")),
                ("z+integer", t("3")),
                ("method", t("POST")),
            ],
        );
        assert_eq!(
            l,
            vec![
                m([("method", t("POST")), ("x", t("1")), ("z", int(3))]),
                m([
                    ("method", t("POST")),
                    ("path", t("a")),
                    ("x", t("1")),
                    ("z", int(3))
                ]),
                m([
                    ("method", t("POST")),
                    ("path", t("b")),
                    ("x", t("1")),
                    ("y", t("2")),
                    ("z", int(3))
                ]),
            ]
        );
    }

    #[test]
    fn table_encoded_slash_and_errors() {
        assert_eq!(
            ok("/a%2Fb/c"),
            vec![base(), step("a"), step("b"), step("c")]
        );
        assert!(matches!(parse("/a+b"), Err(PathError::PlusInKey(_))));
        assert!(matches!(parse("/a?x.y=1"), Err(PathError::InvalidScope(_))));
        assert!(matches!(parse("/a%ZZ"), Err(PathError::CannotDecode(_))));
    }

    #[test]
    fn table_message_device_examples() {
        // Untyped values keep their quote characters.
        assert_eq!(
            ok("/~message@1.0&greeting=\"Hello\"&count+integer=42/greeting"),
            vec![
                as_(
                    "message@1.0",
                    m([
                        ("path", t("")),
                        ("greeting", t("\"Hello\"")),
                        ("count", int(42))
                    ])
                ),
                step("greeting"),
            ]
        );
        assert_eq!(
            ok("/~message@1.0&items+list=\"apple\",1,\"banana\",2/items/1"),
            vec![
                as_(
                    "message@1.0",
                    m([
                        ("path", t("")),
                        (
                            "items",
                            Value::list(vec![t("apple"), int(1), t("banana"), int(2)])
                        )
                    ])
                ),
                step("items"),
                step("1"),
            ]
        );
    }

    #[test]
    fn table_path_parts_helper() {
        let parts = |p: &str| -> Vec<Vec<u8>> {
            path_parts(p.as_bytes())
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect()
        };
        assert_eq!(
            parts("/a/b&c=(/d/e)/f"),
            vec![b"a".to_vec(), b"b&c=(/d/e)".to_vec(), b"f".to_vec()]
        );
        assert_eq!(
            parts("/a/(x/y/z)/c"),
            vec![b"a".to_vec(), b"(x/y/z)".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            parts("/a/b&K1=V1/c&K2=V2"),
            vec![b"a".to_vec(), b"b&K1=V1".to_vec(), b"c&K2=V2".to_vec()]
        );
    }

    // ---------------------------------------------------------------------------------------
    // Spec 02 conformance checklist
    // ---------------------------------------------------------------------------------------

    #[test]
    fn checklist_02_1_basic_path_and_root() {
        assert_eq!(ok("/a"), vec![base(), step("a")]);
        assert_eq!(ok("/"), vec![]);
        // A bare binary path is the same as `{path: binary}`.
        assert_eq!(
            from_singleton(&Message::new().with("path", "/a")).unwrap(),
            vec![base(), step("a")]
        );
        assert_eq!(from_singleton(&Message::new()), Err(PathError::MissingPath));
        // Case is preserved in path values.
        assert_eq!(ok("/Abc/DEF"), vec![base(), step("Abc"), step("DEF")]);
    }

    #[test]
    fn checklist_02_2_empty_segments_and_long_segments() {
        assert_eq!(ok("//a//b/"), vec![base(), step("a"), step("b")]);
        assert_eq!(ok("///"), vec![]);
        let ok512 = format!("/{}", "x".repeat(512));
        assert_eq!(parse(&ok512).unwrap().len(), 2);
        let long = format!("/a/{}/b", "x".repeat(513));
        let err = parse(&long).unwrap_err();
        assert!(
            matches!(err, PathError::SegmentTooLong { len: 513, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("segment_too_long"));
    }

    #[test]
    fn checklist_02_3_percent_decoding_twice() {
        assert_eq!(
            ok("/a%2Fb/c"),
            vec![base(), step("a"), step("b"), step("c")]
        );
        assert_eq!(ok("/a%252Fb"), vec![base(), step("a"), step("b")]);
        assert_eq!(ok("/a%41"), vec![base(), step("aA")]);
        assert_eq!(ok("/a%20b"), vec![base(), step("a b")]);
        assert_eq!(ok("/a%2fb"), vec![base(), step("a"), step("b")]);
        // `+` is not a space.
        assert!(matches!(parse("/a+b"), Err(PathError::PlusInKey(_))));
        // Bad escapes, at either decoding.
        assert!(matches!(parse("/a%ZZ"), Err(PathError::CannotDecode(_))));
        assert!(matches!(parse("/a%2"), Err(PathError::CannotDecode(_))));
        assert!(matches!(parse("/a%25zz"), Err(PathError::CannotDecode(_))));
        // The query string is not decoded.
        assert_eq!(
            ok("/a?x=a%20b"),
            vec![
                m([("x", t("a%20b"))]),
                m([("path", t("a")), ("x", t("a%20b"))])
            ]
        );
    }

    #[test]
    fn checklist_02_4_depth_aware_splitting() {
        // An unclosed `(` makes the rest one token.
        assert_eq!(
            ok("/a&b=(c/d"),
            vec![base(), m([("path", t("a")), ("b", t("(c/d"))])]
        );
        // A `?` inside parentheses belongs to the nested path.
        assert_eq!(
            ok("/a&x=(/b/c?q=1)"),
            vec![
                base(),
                m([
                    ("path", t("a")),
                    (
                        "x",
                        res(vec![
                            m([("q", t("1"))]),
                            m([("path", t("b")), ("q", t("1"))]),
                            m([("path", t("c")), ("q", t("1"))]),
                        ])
                    )
                ])
            ]
        );
        // `&` inside parentheses in the query string.
        assert_eq!(
            ok("/a?k=(/b&x=1)&y=2"),
            vec![
                m([
                    ("k", res(vec![base(), m([("path", t("b")), ("x", t("1"))])])),
                    ("y", t("2"))
                ]),
                m([
                    ("path", t("a")),
                    ("k", res(vec![base(), m([("path", t("b")), ("x", t("1"))])])),
                    ("y", t("2"))
                ]),
            ]
        );
        // Parentheses not spanning the whole segment are literal.
        assert_eq!(ok("/a(b)c/d"), vec![base(), step("a(b)c"), step("d")]);
        // An unmatched `)` is an ordinary character.
        assert_eq!(ok("/a)/b"), vec![base(), step("a)"), step("b")]);
    }

    #[test]
    fn checklist_02_5_id_segments() {
        let id32 = "keykeykeykeykeykeykeykeykeykeyke";
        assert_eq!(id32.len(), 32);
        assert_eq!(ok(&format!("/{id32}")), vec![t(id32)]);
        let id42 = "x".repeat(42);
        assert_eq!(ok(&format!("/{id42}/a")), vec![t(&id42), step("a")]);
        assert_eq!(ok(&format!("/{ID}")), vec![id()]);
        // An ID later in the path is a request as-is.
        assert_eq!(ok(&format!("/a/{ID}")), vec![base(), step("a"), id()]);
        // Not 31, 33 or 44.
        for n in [31, 33, 41, 44] {
            let s = "y".repeat(n);
            assert_eq!(ok(&format!("/{s}")), vec![base(), step(&s)], "{n}");
        }
        // The 42-byte collision of spec 02 §3.1.
        let seg = "~message@1.0&items+list=\"apple\",1,\"banana\"";
        assert_eq!(seg.len(), 42);
        assert_eq!(ok(&format!("/{seg}/items")), vec![t(seg), step("items")]);
    }

    #[test]
    fn checklist_02_6_device_switch() {
        assert_eq!(
            ok("/a~dev@1.0&k=v"),
            vec![as_("dev@1.0", m([("path", t("a")), ("k", t("v"))]))]
        );
        assert_eq!(ok("/~dev@1.0/a"), vec![as_("dev@1.0", step("")), step("a")]);
        // `~` after an inline key is part of its value.
        assert_eq!(
            ok("/a&k=v~dev@1.0"),
            vec![base(), m([("path", t("a")), ("k", t("v~dev@1.0"))])]
        );
        assert!(matches!(parse("/a~"), Err(PathError::EmptyDevice(_))));
        assert!(matches!(
            parse("/a~(x/y)"),
            Err(PathError::DeviceSubresolution(_))
        ));
    }

    #[test]
    fn checklist_02_7_inline_keys() {
        assert_eq!(
            ok("/a&k=v&f&s=(/x)"),
            vec![
                base(),
                m([
                    ("path", t("a")),
                    ("k", t("v")),
                    ("f", yes()),
                    ("s", res(vec![base(), step("x")]))
                ])
            ]
        );
        // An empty value is an empty binary.
        assert_eq!(
            ok("/a&k="),
            vec![base(), m([("path", t("a")), ("k", t(""))])]
        );
    }

    #[test]
    fn checklist_02_8_typed_keys() {
        let one = |q: &str| -> Result<Option<Value>, PathError> {
            parse(&format!("/a&{q}")).map(|l| msg_at(&l, 1).get("k").cloned())
        };
        assert_eq!(one("k+integer=-7").unwrap(), Some(int(-7)));
        assert_eq!(one("k+Integer=12").unwrap(), Some(int(12)));
        assert_eq!(
            one("k+integer=999999999999999").unwrap(),
            Some(int(999_999_999_999_999))
        );
        // A decimal under `integer` makes the key disappear.
        assert_eq!(one("k+integer=1.5").unwrap(), None);
        assert!(one("k+integer=abc").is_err());
        assert_eq!(one("k+float=1.0e3").unwrap(), Some(Value::Float(1000.0)));
        assert_eq!(one("k+float=-0.5").unwrap(), Some(Value::Float(-0.5)));
        assert!(one("k+float=1").is_err());
        assert_eq!(one("k+atom=ok").unwrap(), Some(Value::atom("ok")));
        assert_eq!(
            one("k+list=a,b").unwrap(),
            Some(Value::list(vec![Value::atom("a"), Value::atom("b")]))
        );
        assert_eq!(
            one("k+map=a=1, b=\"s\", c").unwrap(),
            Some(m([("a", int(1)), ("b", t("s")), ("c", yes())]))
        );
        assert_eq!(
            one("k+map=key1=\"val1\";key2=true").unwrap(),
            Some(m([("key1", t("val1"))]))
        );
        let err = one("k+binary=x").unwrap_err();
        assert!(matches!(err, PathError::BadTypedValue { .. }), "{err:?}");
        assert!(err.to_string().contains("unexpected type"), "{err}");
        assert!(one("k+nonsense=x").is_err());
        // Typed keys need a value, and not a parenthesised one.
        assert!(matches!(
            one("k+integer"),
            Err(PathError::TypedWithoutValue { .. })
        ));
        assert!(matches!(
            one("k+resolve=(/x)"),
            Err(PathError::TypedSubpath { .. })
        ));
        // `resolve` in headers and query.
        let l = ok("/a?k+resolve=/x/y");
        assert_eq!(
            msg_at(&l, 1).get("k"),
            Some(&res(vec![base(), step("x"), step("y")]))
        );
        let l = ok_with("/a", &[("k+resolve", t("/x"))]);
        assert_eq!(msg_at(&l, 0).get("k"), Some(&res(vec![base(), step("x")])));
        // Typed boolean items work in headers.
        let l = ok_with("/a", &[("k+list", t("?1, ?0"))]);
        assert_eq!(
            msg_at(&l, 1).get("k"),
            Some(&Value::list(vec![yes(), Value::boolean(false)]))
        );
    }

    #[test]
    fn checklist_02_9_scoping() {
        let l = ok_with(
            "/a/b",
            &[("0.k", t("base")), ("1.k", t("a")), ("2.k", t("b"))],
        );
        assert_eq!(msg_at(&l, 0).get("k"), Some(&t("base")));
        assert_eq!(msg_at(&l, 1).get("k"), Some(&t("a")));
        assert_eq!(msg_at(&l, 2).get("k"), Some(&t("b")));
        // Beyond the list: ignored.
        assert_eq!(
            ok_with("/a/b", &[("5.h", t("x"))]),
            vec![base(), step("a"), step("b")]
        );
        // One dot with a non-integer prefix: invalid_scope (headers and query).
        let err = from("/a", &[("x.y", t("1"))]).unwrap_err();
        assert!(matches!(err, PathError::InvalidScope(_)));
        assert!(err.to_string().starts_with("invalid_scope"));
        assert!(matches!(
            parse("/a?-1.k=1"),
            Err(PathError::InvalidScope(_))
        ));
        assert!(matches!(parse("/a?.k=1"), Err(PathError::InvalidScope(_))));
        // Zero or two dots: global.
        let l = ok_with("/a", &[("x.y.z", t("1"))]);
        assert_eq!(msg_at(&l, 0).get("x.y.z"), Some(&t("1")));
        assert_eq!(msg_at(&l, 1).get("x.y.z"), Some(&t("1")));
        // Inline keys are not scoped.
        assert_eq!(
            ok("/a&1.k=v"),
            vec![base(), m([("path", t("a")), ("1.k", t("v"))])]
        );
    }

    #[test]
    fn checklist_02_10_parameter_precedence() {
        // Globals go everywhere, scoped override globals, parameters override inline keys.
        let l = ok_with("/a/b&k=inline", &[("k", t("global")), ("1.k", t("scoped"))]);
        assert_eq!(msg_at(&l, 0).get("k"), Some(&t("global")));
        assert_eq!(msg_at(&l, 1).get("k"), Some(&t("scoped")));
        assert_eq!(msg_at(&l, 2).get("k"), Some(&t("global")));
        assert_eq!(
            ok("/a&k=1?k=2"),
            vec![m([("k", t("2"))]), m([("path", t("a")), ("k", t("2"))])]
        );
        // A query key wins over a header of the same name.
        let l = ok_with("/a?h=q", &[("h", t("header"))]);
        assert_eq!(msg_at(&l, 1).get("h"), Some(&t("q")));
        // A global `path` overrides every path.
        assert_eq!(
            ok("/a/b?path=zzz"),
            vec![step("zzz"), step("zzz"), step("zzz")]
        );
        // A body is just another global parameter.
        let l = ok_with("/a/b", &[("body", t("xyz"))]);
        assert_eq!(
            l,
            vec![
                m([("body", t("xyz"))]),
                m([("path", t("a")), ("body", t("xyz"))]),
                m([("path", t("b")), ("body", t("xyz"))]),
            ]
        );
    }

    #[test]
    fn checklist_02_11_parameters_not_applied_to_id_res_as() {
        let l = ok_with("/a~dev@1.0/b", &[("h", t("1"))]);
        assert_eq!(
            l,
            vec![
                as_("dev@1.0", step("a")),
                m([("path", t("b")), ("h", t("1"))])
            ]
        );
        let l = ok_with(&format!("/{ID}/(x)/b"), &[("h", t("1")), ("0.s", t("2"))]);
        assert_eq!(
            l,
            vec![
                id(),
                res(vec![base(), step("x")]),
                m([("path", t("b")), ("h", t("1"))])
            ]
        );
        // `AS(dev, {path: ""})` does receive them.
        let l = ok_with("/~dev@1.0/b", &[("h", t("1"))]);
        assert_eq!(
            l,
            vec![
                as_("dev@1.0", m([("path", t("")), ("h", t("1"))])),
                m([("path", t("b")), ("h", t("1"))])
            ]
        );
    }

    #[test]
    fn checklist_02_12_structured_normalisation() {
        // Keys are lower-cased.
        assert_eq!(
            ok("/a&K=V"),
            vec![base(), m([("path", t("a")), ("k", t("V"))])]
        );
        // Private keys are removed.
        let l = ok_with("/a", &[("private-thing", t("x")), ("ok", t("y"))]);
        assert_eq!(
            l,
            vec![m([("ok", t("y"))]), m([("path", t("a")), ("ok", t("y"))])]
        );
        // Transaction-default values vanish.
        let l = ok_with(
            "/a",
            &[
                ("quantity+integer", t("0")),
                ("data", t("")),
                ("target", t("t")),
            ],
        );
        assert_eq!(
            l,
            vec![
                m([("target", t("t"))]),
                m([("path", t("a")), ("target", t("t"))])
            ]
        );
        // A present `ao-types` is applied...
        let l = ok_with("/x", &[("ao-types", t("a=\"integer\"")), ("a", t("1"))]);
        assert_eq!(
            l,
            vec![m([("a", int(1))]), m([("path", t("x")), ("a", int(1))])]
        );
        // ...except in an element whose own values are typed: its fresh `ao-types` replaces
        // the header's (spec 02 §3.7 step 5).
        let l = ok_with(
            "/x&k+integer=5/y",
            &[("ao-types", t("a=\"integer\"")), ("a", t("1"))],
        );
        assert_eq!(
            l,
            vec![
                m([("a", int(1))]),
                m([("path", t("x")), ("k", int(5)), ("a", t("1"))]),
                m([("path", t("y")), ("a", int(1))]),
            ]
        );
    }

    #[test]
    fn checklist_02_13_subresolution_segments() {
        assert_eq!(
            ok("/a/(x/y/z)/z"),
            vec![
                base(),
                step("a"),
                res(vec![base(), step("x"), step("y"), step("z")]),
                step("z"),
            ]
        );
        // In first position it provides the base.
        assert_eq!(
            ok("/(/b/c)/d"),
            vec![res(vec![base(), step("b"), step("c")]), step("d")]
        );
        // Nested.
        assert_eq!(ok("/((a))"), vec![res(vec![res(vec![base(), step("a")])])]);
    }

    #[test]
    fn checklist_02_14_to_singleton() {
        let cases: Vec<(Vec<Value>, Message)> = vec![
            (
                vec![
                    m([("test-key", t("v"))]),
                    m([("path", t("a")), ("test-key", t("v"))]),
                ],
                Message::new().with("path", "/a").with("test-key", "v"),
            ),
            (
                vec![
                    base(),
                    step("a"),
                    m([("path", t("b")), ("test-key", t("v"))]),
                    step("c"),
                ],
                Message::new()
                    .with("path", "/a/b/c")
                    .with("2.test-key", "v"),
            ),
            (
                vec![
                    base(),
                    step("a"),
                    m([("path", t("b")), ("test-key", int(123))]),
                    step("c"),
                ],
                Message::new()
                    .with("path", "/a/b/c")
                    .with("2.test-key+integer", "123"),
            ),
            (
                vec![id(), m([("method", t("GET")), ("path", t("some-other"))])],
                Message::new()
                    .with("path", format!("/{ID}/some-other"))
                    .with("method", "GET"),
            ),
            (
                vec![
                    base(),
                    step("a"),
                    res(vec![base(), step("x"), step("y"), step("z")]),
                    step("z"),
                ],
                Message::new().with("path", "/a/(x/y/z)/z"),
            ),
            (
                vec![
                    base(),
                    step("a"),
                    m([
                        ("path", t("b")),
                        (
                            "test-key",
                            res(vec![base(), step("x"), step("y"), step("z")]),
                        ),
                    ]),
                    step("c"),
                ],
                Message::new()
                    .with("path", "/a/b/c")
                    .with("2.test-key+resolve", "/x/y/z"),
            ),
        ];
        for (list, singleton) in cases {
            assert_eq!(to_singleton(&list), singleton, "to({list:?})");
            assert_eq!(
                from_singleton(&singleton).unwrap(),
                list,
                "from(to({list:?}))"
            );
        }
        // Device switches are written back as segments.
        let l = vec![
            as_("process@1.0", m([("path", t("")), ("k", t("v"))])),
            step("a"),
        ];
        assert_eq!(from_singleton(&to_singleton(&l)).unwrap(), l);
    }
}

/// The `Part=Value` shorthand aoconnect sends (spec 07 §1.2).
mod part_value_shorthand {
    use hb_core::hyperpath::parse;
    use hb_core::{Message, Value};

    fn step(m: &[(&str, Value)]) -> Value {
        Value::Message(Message::from_pairs(m.iter().map(|(k, v)| (*k, v.clone()))))
    }

    #[test]
    fn checklist_07_results_equals_slot() {
        let got = parse("/compute/results=3").expect("parses");
        assert_eq!(
            got,
            vec![
                Value::Message(Message::new()),
                step(&[("path", "compute".into())]),
                step(&[("path", "results".into()), ("results", "3".into())]),
            ]
        );
    }

    #[test]
    fn typed_shorthand_and_inline_keys() {
        let got = parse("/results+integer=3&x=y").expect("parses");
        assert_eq!(
            got[1],
            step(&[
                ("path", "results".into()),
                ("results", Value::Integer(3)),
                ("x", "y".into())
            ])
        );
    }

    #[test]
    fn dryrun_as_equals_execution() {
        let got = parse("/as=execution/compute&Action=Info").expect("parses");
        assert_eq!(
            got[1],
            step(&[("path", "as".into()), ("as", "execution".into())])
        );
        assert_eq!(
            got[2],
            step(&[("path", "compute".into()), ("action", "Info".into())])
        );
    }

    #[test]
    fn plus_without_a_value_is_still_refused() {
        assert!(parse("/a+b").is_err());
    }
}

#[test]
fn element_count_is_bounded() {
    use hb_core::hyperpath::{MAX_ELEMENTS, PathError, parse};
    let ok = "/a".repeat(MAX_ELEMENTS - 1);
    assert_eq!(parse(&ok).map(|l| l.len()), Ok(MAX_ELEMENTS));
    let too_many = "/a".repeat(MAX_ELEMENTS + 1);
    assert_eq!(
        parse(&too_many),
        Err(PathError::TooManySteps(MAX_ELEMENTS + 1))
    );
}
