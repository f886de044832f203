//! RSA httpsig commitments against the fixture key (spec 03 §4.4, §5).

use std::collections::BTreeSet;
use std::sync::Arc;

use hb_codec::Wallet;
use hb_codec::httpsig_commit::{
    ALG_HMAC, ALG_RSA, HttpsigDevice, HttpsigError, commit, committed_keys, decode_keyid,
    rsa_signature_base, verify,
};
use hb_core::httpsig::to_http;
use hb_core::id::{Id, b64_decode};
use hb_core::message::MessageDevice;
use hb_core::structured::to_tabm;
use hb_core::{Call, Ctx, Device, MemoryCache, Message, NodeHandle, Registry, Value};
use proptest::prelude::*;

const KEY1: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");
const UNSIGNED_AB: &str = "aU8BUmgbZw0qlfQ-AZEy7EQwp1d7UaOHcRIOWvA17LE";
const SN: &str = "http-sig-c68f7b82569eb48e";

fn key1() -> Wallet {
    Wallet::from_jwk_json(KEY1).expect("key-1 loads")
}

fn key1_n() -> String {
    let jwk: serde_json::Value = serde_json::from_slice(KEY1).expect("json");
    jwk["n"].as_str().expect("n").to_owned()
}

fn ab() -> Message {
    Message::new().with("a", "1").with("b", 2i64)
}

fn commitments(m: &Message) -> &Message {
    m.get("commitments")
        .and_then(Value::as_message)
        .expect("commitments")
}

/// (RSA commitment ID, HMAC commitment ID).
fn ids(m: &Message) -> (String, String) {
    let mut rsa = None;
    let mut hmac = None;
    for (k, c) in commitments(m).iter() {
        match c.as_message().and_then(|c| c.get_str("alg")) {
            Some(ALG_RSA) => rsa = Some(k.to_string()),
            Some(ALG_HMAC) => hmac = Some(k.to_string()),
            other => panic!("unexpected alg {other:?}"),
        }
    }
    (rsa.expect("rsa"), hmac.expect("hmac"))
}

#[test]
fn rsa_signature_base_vector() {
    let w = key1();
    assert_eq!(w.keyid(), key1_n());
    let msg = Message::new()
        .with("path", "/x")
        .with("method", "GET")
        .with("body", "B")
        .with("n", 1i64);
    let (base, _, _) = rsa_signature_base(&msg, &w.keyid()).expect("base");
    let base = String::from_utf8(base).expect("utf8");
    let expected = "\"ao-types\": n=\"integer\"\n\
        \"content-digest\": sha-256=:335w5QIVRPSDS77mSp43if68S+gUcN9inK1t2wMyClw=:\n\
        \"method\": GET\n\
        \"n\": 1\n\
        \"path\": /x\n\
        \"@signature-params\": (\"ao-types\" \"content-digest\" \"@method\" \"n\" \"@path\");\
        alg=\"rsa-pss-sha512\";keyid=\"";
    assert_eq!(base, format!("{expected}{}\"", key1_n()));

    // The committed message verifies, and its signature is over exactly that base.
    let signed = commit(&msg, &w).expect("commit");
    let (rsa, hmac) = ids(&signed);
    assert!(verify(&signed, &rsa).expect("verify rsa"));
    assert!(verify(&signed, &hmac).expect("verify hmac"));
    let c = commitments(&signed)
        .get(&rsa)
        .and_then(Value::as_message)
        .expect("rsa commitment");
    let sig_text = c.get_str("signature").expect("signature");
    let b64 = sig_text
        .strip_prefix(&format!("{SN}=:"))
        .and_then(|s| s.strip_suffix(':'))
        .expect("signature shape");
    let sig = b64_decode(b64.as_bytes()).expect("b64");
    assert!(hb_codec::rsa_pss::verify(
        w.public_modulus(),
        hb_codec::Hash::Sha512,
        base.as_bytes(),
        &sig
    ));
}

#[test]
fn zero_components_base_starts_with_lf() {
    let (base, comps, _) = rsa_signature_base(&Message::new(), "k").expect("base");
    assert!(comps.is_empty());
    assert_eq!(
        base,
        b"\n\"@signature-params\": ();alg=\"rsa-pss-sha512\";keyid=\"k\"".to_vec()
    );
}

#[test]
fn hashpath_becomes_tag() {
    let mut msg = ab();
    msg.set_private("hashpath", Value::text("h1/h2"));
    let (base, _, _) = rsa_signature_base(&msg, "k").expect("base");
    assert!(base.ends_with(b";alg=\"rsa-pss-sha512\";keyid=\"k\";tag=\"h1/h2\""));
    let signed = commit(&msg, &key1()).expect("commit");
    let (rsa, _) = ids(&signed);
    assert!(verify(&signed, &rsa).expect("verify"));
}

#[test]
fn signed_ab_header_shape_and_ids() {
    let w = key1();
    let signed = commit(&ab(), &w).expect("commit");
    let (rsa, hmac) = ids(&signed);

    // §4.4: the HTTP encoding of the signed message.
    let http = to_http(&to_tabm(&signed).expect("tabm")).expect("http");
    let h = |k: &str| String::from_utf8(http.headers[k].to_vec()).expect("utf8");
    assert_eq!(h("a"), "1");
    assert_eq!(h("b"), "2");
    assert_eq!(h("ao-types"), "b=\"integer\"");
    assert_eq!(
        h("signature-input"),
        format!(
            "{SN}=(\"a\" \"ao-types\" \"b\");alg=\"rsa-pss-sha512\";keyid=\"{}\"",
            key1_n()
        )
    );
    let sig = h("signature");
    let b64 = sig
        .strip_prefix(&format!("{SN}=:"))
        .and_then(|s| s.strip_suffix(':'))
        .expect("signature shape");
    assert_eq!(b64.len(), 684);
    let sig = b64_decode(b64.as_bytes()).expect("b64");

    // IDs: RSA = b64url(sha256(sig)); HMAC = the unsigned ID.
    assert_eq!(rsa, Id::sha256(&sig).to_human());
    assert_eq!(hmac, UNSIGNED_AB);
    let c = commitments(&signed)
        .get(&rsa)
        .and_then(Value::as_message)
        .expect("rsa");
    assert_eq!(c.get_str("committer"), Some(w.address().as_str()));
    assert_eq!(c.get_str("commitment-device"), Some("httpsig@1.0"));
    assert_eq!(
        hb_core::httpsig::message_id(&ab()).expect("id").to_human(),
        UNSIGNED_AB
    );

    assert!(verify(&signed, &rsa).expect("verify"));
    assert!(verify(&signed, &hmac).expect("verify hmac"));

    // Committed keys (§5.8).
    let keys: BTreeSet<String> = committed_keys(&signed, &rsa)
        .expect("committed")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = ["b", "ao-types", "a", "signature-input", "signature"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(keys, expected);
    let via_hmac: BTreeSet<String> = committed_keys(&signed, &hmac)
        .expect("committed")
        .into_iter()
        .collect();
    assert_eq!(via_hmac, expected);
}

#[test]
fn tampering_fails_verification() {
    let signed = commit(&ab(), &key1()).expect("commit");
    let (rsa, hmac) = ids(&signed);
    let changed = signed.clone().with("a", "2");
    assert!(!verify(&changed, &rsa).expect("verify"));
    assert!(!verify(&changed, &hmac).expect("verify hmac"));
    let retyped = signed.clone().with("b", "2");
    assert!(!verify(&retyped, &rsa).expect("verify"));
    // A signed key removed: false, not an error.
    let removed = signed.clone().without("a");
    assert!(!verify(&removed, &rsa).expect("verify"));
    // An unsigned key added: still verifies (it is not a component).
    let added = signed.clone().with("c", "3");
    assert!(verify(&added, &rsa).expect("verify"));
    assert!(matches!(
        verify(&signed, "nope"),
        Err(HttpsigError::NoCommitment(_))
    ));
}

#[test]
fn nested_and_typed_messages_roundtrip() {
    let msg = Message::new()
        .with("a", "1")
        .with("n", Message::new().with("x", "1"))
        .with("e", "")
        .with("l", Value::list(vec![Value::text("x"), Value::from(2i64)]))
        .with("f", 1.5f64);
    let signed = commit(&msg, &key1()).expect("commit");
    let (rsa, hmac) = ids(&signed);
    assert!(verify(&signed, &rsa).expect("verify"));
    assert!(verify(&signed, &hmac).expect("verify hmac"));
    let keys: BTreeSet<String> = committed_keys(&signed, &rsa)
        .expect("committed")
        .into_iter()
        .collect();
    for k in [
        "n",
        "inline-body-key",
        "body",
        "e",
        "content-type",
        "content-digest",
        "ao-types",
        "a",
        "signature-input",
        "signature",
    ] {
        assert!(keys.contains(k), "missing {k} in {keys:?}");
    }
    let changed = signed.with("n", Message::new().with("x", "2"));
    assert!(!verify(&changed, &rsa).expect("verify"));
}

#[test]
fn keyid_forms() {
    let w = key1();
    let n = w.public_modulus().to_vec();
    let url = w.keyid();
    let std = hb_core::id::b64(&n);
    assert_eq!(decode_keyid(url.as_bytes()), Some(n.clone()));
    assert_eq!(decode_keyid(std.as_bytes()), Some(n.clone()));
    assert_eq!(
        decode_keyid(format!("publickey:{url}").as_bytes()),
        Some(n.clone())
    );
    assert_eq!(decode_keyid(format!("publickey:{std}").as_bytes()), Some(n));
    assert_eq!(decode_keyid(b"***"), None);
}

fn ctx_with(dev: HttpsigDevice) -> Ctx {
    let mut reg = Registry::with_core();
    reg.register(Arc::new(dev));
    Ctx::new(
        Arc::new(reg),
        Arc::new(MemoryCache::default()),
        NodeHandle::default(),
    )
}

#[test]
fn device_through_message_device() {
    let ctx = ctx_with(HttpsigDevice::new(Arc::new(key1())));
    let md = MessageDevice;
    let out = md
        .call(Call::Function("commit"), &ab(), &Message::new(), &ctx)
        .expect("commit");
    assert!(out.is_ok());
    let signed = out.value.as_message().expect("message").clone();
    let (rsa, hmac) = ids(&signed);

    let v = md
        .call(Call::Function("verify"), &signed, &Message::new(), &ctx)
        .expect("verify");
    assert!(v.value.is_atom("true"), "{v:?}");
    let tampered = signed.clone().with("a", "x");
    let v = md
        .call(Call::Function("verify"), &tampered, &Message::new(), &ctx)
        .expect("verify");
    assert!(v.value.is_atom("false"), "{v:?}");

    // id with committers "all" = the one RSA commitment's ID; default = the combination.
    let id_all = md
        .call(
            Call::Function("id"),
            &signed,
            &Message::new().with("committers", "all"),
            &ctx,
        )
        .expect("id");
    assert_eq!(id_all.value.as_str(), Some(rsa.as_str()));
    let id_none = md
        .call(
            Call::Function("id"),
            &signed,
            &Message::new().with("commitments", "none"),
            &ctx,
        )
        .expect("id");
    assert_eq!(id_none.value.as_str(), Some(UNSIGNED_AB));
    let mut both = [rsa.clone(), hmac.clone()];
    both.sort();
    let id_default = md
        .call(Call::Function("id"), &signed, &Message::new(), &ctx)
        .expect("id");
    assert_eq!(
        id_default.value.as_str(),
        Some(Id::sha256(both.join(", ").as_bytes()).to_human().as_str())
    );

    let committed = md
        .call(Call::Function("committed"), &signed, &Message::new(), &ctx)
        .expect("committed");
    let Some(Value::List(l)) = Some(&committed.value) else {
        panic!("not a list: {committed:?}")
    };
    let keys: BTreeSet<&str> = l.iter().filter_map(Value::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["a", "ao-types", "b", "signature", "signature-input"])
    );

    let dev = HttpsigDevice::default();
    let id = dev
        .call(Call::Function("id"), &ab(), &Message::new(), &ctx)
        .expect("id");
    assert_eq!(id.value.as_str(), Some(UNSIGNED_AB));
}

#[test]
fn device_commit_without_wallet_fails() {
    let ctx = ctx_with(HttpsigDevice::default());
    let err = MessageDevice
        .call(Call::Function("commit"), &ab(), &Message::new(), &ctx)
        .expect_err("no wallet");
    assert!(err.to_string().contains("wallet"), "{err}");
}

#[test]
fn multi_signature_keeps_both_rsa_commitments() {
    let w = key1();
    let once = commit(&ab(), &w).expect("commit");
    let twice = commit(&once, &w).expect("commit");
    // The same key signs twice with fresh salts: two RSA commitments, one HMAC.
    let all = commitments(&twice);
    assert_eq!(all.len(), 3);
    for (id, c) in all.iter() {
        let c = c.as_message().expect("commitment");
        assert!(verify(&twice, id).expect("verify"), "{c:?}");
        if c.get_str("alg") == Some(ALG_HMAC) {
            assert_eq!(id.as_ref(), UNSIGNED_AB);
        }
    }
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        Just(format!("{SN}=:AAAA:")),
        Just(format!(
            "{SN}=(\"a\");alg=\"rsa-pss-sha512\";keyid=\"AQAB\""
        )),
        Just(format!(
            "{SN}=(\"a\" \"zz\");alg=\"rsa-pss-sha512\";keyid=\"publickey:AQAB\""
        )),
        Just("x=();alg=\"hmac-sha256\"".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn verify_never_panics_on_garbage(
        alg in prop_oneof![Just("rsa-pss-sha512".to_owned()), Just("hmac-sha256".to_owned()), "[a-z-]{0,12}"],
        committer in prop_oneof![Just(key1_address()), "[A-Za-z0-9_-]{0,50}"],
        sig in arb_text(),
        input in arb_text(),
        with_sig in any::<bool>(),
        with_input in any::<bool>(),
    ) {
        let mut c = Message::new()
            .with("commitment-device", "httpsig@1.0")
            .with("alg", alg.as_str())
            .with("committer", committer.as_str());
        if with_sig {
            c.insert("signature", Value::text(&sig));
        }
        if with_input {
            c.insert("signature-input", Value::text(&input));
        }
        let id = "x".repeat(43);
        let msg = ab().with("commitments", Message::new().with(&id, c));
        let _ = verify(&msg, &id);
        let _ = committed_keys(&msg, &id);
    }
}

fn key1_address() -> String {
    "vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4".to_owned()
}
