//! Rebuilding commitments from `signature`/`signature-input` fields (spec 03 §5.5).

use bytes::Bytes;
use hb_codec::Wallet;
use hb_codec::httpsig_commit::{
    ALG_HMAC, ALG_RSA, HttpsigError, commit, commitments_from_signatures, verify,
};
use hb_core::httpsig::{Signatures, from_http, to_http};
use hb_core::structured::{from_tabm, to_tabm};
use hb_core::{Message, Value};

const KEY1: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");

fn key1() -> Wallet {
    Wallet::from_jwk_json(KEY1).expect("key-1 loads")
}

fn commitments(m: &Message) -> Message {
    m.get("commitments")
        .and_then(Value::as_message)
        .cloned()
        .expect("commitments")
}

/// Signs `msg`, encodes it to HTTP (§4.4 shape), decodes it and rebuilds.
fn roundtrip(msg: &Message) -> (Message, Message) {
    let signed = commit(msg, &key1()).expect("commit");
    let http = to_http(&to_tabm(&signed).expect("tabm")).expect("http");
    assert!(http.headers.contains_key("signature"));
    let (tabm, sigs) = from_http(&http).expect("from_http");
    let rebuilt = commitments_from_signatures(tabm, &sigs).expect("rebuild");
    (signed, rebuilt)
}

#[test]
fn rebuilt_commitments_match_the_signed_ones() {
    for msg in [
        Message::new().with("a", "1").with("b", 2i64),
        Message::new()
            .with("key1", "Value1")
            .with("path", "/key1")
            .with("body", "some body"),
        Message::new().with("nested", Message::new().with("x", "y")),
    ] {
        let (signed, rebuilt) = roundtrip(&msg);
        let want = commitments(&signed);
        let got = commitments(&rebuilt);
        let keys = |m: &Message| m.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(&want), keys(&got), "same commitment IDs");
        for (id, c) in want.iter() {
            let c = c.as_message().expect("commitment");
            let r = got.get(id).and_then(Value::as_message).expect("rebuilt");
            for field in ["commitment-device", "alg", "committer"] {
                assert_eq!(c.get_str(field), r.get_str(field), "{id} {field}");
            }
            if c.get_str("alg") == Some(ALG_RSA) {
                assert_eq!(r.get_str("committer"), Some(key1().address().as_str()));
                for field in ["signature", "signature-input"] {
                    assert_eq!(c.get(field), r.get(field), "{id} {field}");
                }
            } else {
                assert_eq!(c.get_str("alg"), Some(ALG_HMAC));
            }
        }
        // The rich form of the rebuilt message verifies.
        let rich = from_tabm(&rebuilt).expect("rich");
        for (id, c) in got.iter() {
            if c.as_message().and_then(|c| c.get_str("alg")) == Some(ALG_RSA) {
                assert!(verify(&rich, id).expect("verify"), "{id}");
            }
        }
    }
}

#[test]
fn base64_and_publickey_keyids_give_the_same_committer() {
    let (_, rebuilt) = roundtrip(&Message::new().with("a", "1"));
    let signed = commit(&Message::new().with("a", "1"), &key1()).expect("commit");
    let http = to_http(&to_tabm(&signed).expect("tabm")).expect("http");
    let input = String::from_utf8(http.headers["signature-input"].to_vec()).expect("utf8");
    let keyid = key1().keyid();
    let std_b64 = keyid.replace('-', "+").replace('_', "/");
    let input = input.replace(&keyid, &format!("publickey:{std_b64}"));
    let (tabm, mut sigs) = from_http(&http).expect("from_http");
    sigs.signature_input = Some(Bytes::from(input));
    let other = commitments_from_signatures(tabm, &sigs).expect("rebuild");
    let committer = |m: &Message| {
        commitments(m)
            .iter()
            .filter_map(|(_, c)| c.as_message().and_then(|c| c.get_str("committer")))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(committer(&rebuilt), committer(&other));
    assert_eq!(committer(&other), vec![key1().address()]);
}

#[test]
fn unsigned_message_gets_only_the_hmac_commitment() {
    let tabm = Message::new().with("a", "1");
    let out = commitments_from_signatures(tabm, &Signatures::default()).expect("rebuild");
    let c = commitments(&out);
    assert_eq!(c.len(), 1);
    let (id, hmac) = c.iter().next().expect("one");
    assert_eq!(
        id.as_ref() as &str,
        "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s"
    );
    assert_eq!(
        hmac.as_message().and_then(|m| m.get_str("alg")),
        Some(ALG_HMAC)
    );
}

#[test]
fn malformed_signature_fields_are_clear_errors() {
    let sig = "sn1=:AAAA:";
    let input = r#"sn1=("a");alg="rsa-pss-sha512";keyid="AQAB""#;
    let cases: [(Option<&str>, Option<&str>, &str); 6] = [
        (Some("not a dict ("), Some(input), "`signature` field"),
        (Some(sig), None, "no `signature-input`"),
        (Some(sig), Some("(((("), "`signature-input` field"),
        (Some("sn1=42"), Some(input), "not a byte sequence"),
        (
            Some("sn2=:AAAA:"),
            Some(input),
            "no `signature-input` member",
        ),
        (
            Some(sig),
            Some(r#"sn1=("a");alg="rsa-pss-sha512""#),
            "no keyid",
        ),
    ];
    for (s, i, want) in cases {
        let sigs = Signatures {
            signature: s.map(|s| Bytes::from(s.to_owned())),
            signature_input: i.map(|s| Bytes::from(s.to_owned())),
        };
        match commitments_from_signatures(Message::new().with("a", "1"), &sigs) {
            Err(HttpsigError::Invalid(msg)) => assert!(msg.contains(want), "{msg} vs {want}"),
            other => panic!("{s:?} {i:?}: {other:?}"),
        }
    }
}

/// `sign_http` (one encoding, one signature: how the node signs replies) gives exactly
/// the HTTP encoding of `commit`, and the rebuilt commitment verifies.
#[test]
fn sign_http_equals_the_encoding_of_commit() {
    use hb_codec::httpsig_commit::{sign_base, sign_http};
    let wallet = key1();
    for msg in [
        Message::new().with("status", 200i64).with("body", "hello"),
        Message::new()
            .with("ao-result", "body")
            .with("body", Value::Integer(42))
            .with("status", 200i64),
        Message::new()
            .with("nested", Message::new().with("x", "y"))
            .with("big", "z".repeat(5000))
            .with(
                "list",
                Value::list(vec![Value::Integer(1), Value::text("a")]),
            ),
        Message::new(),
    ] {
        // Reuse one signature for both, so the outputs must be byte-identical.
        let mut sig = None;
        let fast = sign_http(&msg, &wallet, |w, base| {
            let s = sign_base(w, base)?;
            sig = Some(s.clone());
            Ok(s)
        })
        .expect("sign_http");
        let signed = commit(&msg, &wallet).expect("commit");
        let slow = to_http(&to_tabm(&signed).expect("tabm")).expect("http");
        let names =
            |h: &hb_core::httpsig::HttpMessage| h.headers.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&fast), names(&slow));
        for (k, v) in &slow.headers {
            if k != "signature" {
                assert_eq!(fast.headers.get(k), Some(v), "{k}");
            }
        }
        assert_eq!(fast.body, slow.body);
        let (tabm, sigs) = from_http(&fast).expect("from_http");
        let rebuilt = commitments_from_signatures(tabm, &sigs).expect("rebuild");
        let rich = from_tabm(&rebuilt).expect("rich");
        let rsa_id = hb_core::id::Id::sha256(&sig.expect("signed")).to_human();
        assert!(verify(&rich, &rsa_id).expect("verify"), "{msg:?}");
    }
}

/// A key an RFC 8941 string cannot hold is refused up front, with the key named.
#[test]
fn non_ascii_keys_cannot_be_signed() {
    let msg = Message::new().with("é", "1");
    let e = commit(&msg, &key1()).expect_err("refused");
    assert!(
        e.to_string().contains("the key `é` cannot be signed"),
        "{e}"
    );
}
