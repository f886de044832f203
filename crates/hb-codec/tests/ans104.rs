//! `ans104@1.0` conformance (spec 03 §7, checklist items 19–24) against the fixture key.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use hb_codec::Wallet;
use hb_codec::ans104::item::{DeepHashItem, encode_tags};
use hb_codec::ans104::{
    ALG_RSA, ALG_UNSIGNED, Ans104Device, Ans104Error, DEVICE_NAME, DataItem, Tag, commit,
    committed_keys, deep_hash, deserialize_verified, item_to_message, item_to_tabm,
    message_to_item, verify,
};
use hb_codec::rsa_pss::{self, Hash};
use hb_core::id::{Id, b64url};
use hb_core::message::MessageDevice;
use hb_core::{Call, Ctx, Device, MemoryCache, Message, NodeHandle, Registry, Value};
use proptest::prelude::*;
use rsa::sha2::{Digest as _, Sha256};

const KEY1: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");
const KEY1_ADDRESS: &str = "vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4";

fn key1() -> Wallet {
    Wallet::from_jwk_json(KEY1).expect("key-1 loads")
}

fn tag(n: &str, v: &str) -> Tag {
    (n.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn tags_of(item: &DataItem) -> Vec<(String, String)> {
    item.tags
        .iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn commitments(m: &Message) -> &Message {
    m.get("commitments")
        .and_then(Value::as_message)
        .expect("commitments")
}

fn only_commitment(m: &Message) -> (String, Message) {
    let c = commitments(m);
    assert_eq!(c.len(), 1, "{c:?}");
    let (k, v) = c.iter().next().expect("one");
    (k.to_string(), v.as_message().expect("map").clone())
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------

#[test]
fn checklist_03_20_avro_tag_vector() {
    let tags = vec![tag("a", "1"), tag("Content-Type", "text/plain")];
    assert_eq!(
        encode_tags(&tags),
        hex("04 02 61 02 31 18 436F6E74656E742D54797065 14 746578742F706C61696E 00")
    );
}

#[test]
fn checklist_03_20_deep_hash_vectors() {
    assert_eq!(
        b64url(&deep_hash(&DeepHashItem::List(vec![]))),
        "pp59N_3H8ECp7Baq6E3iT6tKZT2sTeC9JH42urn-RdkonFoEqJPJUoWBL1zvyXB6"
    );
    assert_eq!(
        b64url(&deep_hash(&DeepHashItem::List(vec![DeepHashItem::Blob(
            b"a"
        )]))),
        "s3JakbadSkQjZqEGXPJwglrIcGm93JjpDYbgHgrarae9F9LMtllZYnXuu5UcS0ea"
    );
}

#[test]
fn checklist_03_19_unsigned_item_layout_and_unsigned_id() {
    let msg = Message::new().with("a", "1").with("data", "hello");
    let item = message_to_item(&msg).expect("encode");
    let bytes = item.to_bytes();
    assert_eq!(bytes.len(), 1055);
    let mut expected = vec![0x01, 0x00];
    expected.extend_from_slice(&[0; 1024]);
    expected.extend(hex(
        "00 00 0100000000000000 0600000000000000 02 02 61 02 31 00 68656c6c6f",
    ));
    assert_eq!(bytes, expected);
    assert_eq!(
        item.unsigned_id().to_human(),
        "spRp-9HUjmYm8-AKptDcRUKR9KKqhn3-9bSIAoMqnRI"
    );
    assert!(!item.is_signed());
    assert!(!item.verify(), "an unsigned item does not verify");

    // Parsing gives the same item back, and it decodes to the same message.
    let parsed = DataItem::parse(&bytes).expect("parse");
    assert_eq!(parsed, item);
    assert_eq!(parsed.to_bytes(), bytes);
    assert_eq!(item_to_message(&parsed).expect("decode"), msg);
}

#[test]
fn checklist_03_19_target_and_anchor_layout() {
    let item = DataItem {
        target: Some([7; 32]),
        anchor: Some([9; 32]),
        data: Bytes::from_static(b"x"),
        ..DataItem::default()
    };
    let bytes = item.to_bytes();
    assert_eq!(bytes.len(), 2 + 1024 + 33 + 33 + 16 + 1);
    assert_eq!(bytes[1026], 1);
    assert_eq!(&bytes[1027..1059], &[7; 32]);
    assert_eq!(bytes[1059], 1);
    assert_eq!(&bytes[1060..1092], &[9; 32]);
    assert_eq!(&bytes[1092..1108], &[0; 16]);
    assert_eq!(DataItem::parse(&bytes).expect("parse"), item);

    // Through a message: `target` and `last_tx` as 43-character IDs become raw bytes.
    let msg = Message::new()
        .with("target", b64url(&[7; 32]))
        .with("last_tx", b64url(&[9; 32]))
        .with("data", "x");
    assert_eq!(message_to_item(&msg).expect("encode"), item);
    let back = item_to_message(&item).expect("decode");
    assert_eq!(back.get("target"), Some(&Value::bin(vec![7u8; 32])));
    assert_eq!(back.get("last_tx"), Some(&Value::bin(vec![9u8; 32])));
    // Other sizes cannot be encoded.
    let err = message_to_item(&Message::new().with("target", "short")).expect_err("size");
    assert!(err.to_string().contains("32 bytes"), "{err}");
}

#[test]
fn checklist_03_22_bundle_vector() {
    let msg = Message::new()
        .with("a", 1i64)
        .with("b", Message::new().with("c", "2"));
    let item = message_to_item(&msg).expect("encode");
    assert_eq!(
        tags_of(&item),
        [
            ("bundle-format", "binary"),
            ("bundle-version", "2.0.0"),
            ("a", "1"),
            ("ao-types", "a=\"integer\""),
            ("bundle-map", "45MMwYV_h5KoFdVO_EwgpofXSUbiu37QcVMkaiMB3x0"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );

    // The bundle: 2 items (manifest first), indexed by unsigned ID.
    let data = &item.data;
    assert_eq!(&data[..31], &[0; 31]);
    assert_eq!(data[31], 2);
    let manifest_id = &data[64..96];
    let b_id = &data[128..160];
    assert_eq!(
        b64url(manifest_id),
        "45MMwYV_h5KoFdVO_EwgpofXSUbiu37QcVMkaiMB3x0"
    );
    assert_eq!(b64url(b_id), "OBSMSOSvUmfvcgJ9e3OSX-bG2dlyJZ1-rZb3xTBiZ7s");
    let items = hb_codec::ans104::bundle::split(data).expect("split");
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0].data.as_ref(),
        b"{\"b\":\"OBSMSOSvUmfvcgJ9e3OSX-bG2dlyJZ1-rZb3xTBiZ7s\"}"
    );
    assert_eq!(
        tags_of(&items[0]),
        [("data-protocol", "bundle-map"), ("variant", "0.0.1")]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    assert_eq!(items[1].tags, vec![tag("c", "2")]);
    assert_eq!(
        items[1].unsigned_id().to_human(),
        "OBSMSOSvUmfvcgJ9e3OSX-bG2dlyJZ1-rZb3xTBiZ7s"
    );

    // And back, without the bundle tags.
    let parsed = DataItem::parse(&item.to_bytes()).expect("parse");
    assert_eq!(item_to_message(&parsed).expect("decode"), msg);
}

#[test]
fn checklist_03_22_large_and_binary_values_become_items() {
    let long = "x".repeat(129);
    let exactly = "y".repeat(128);
    let msg = Message::new()
        .with("long", long.as_str())
        .with("exact", exactly.as_str())
        .with("raw", Value::bin(vec![0xff, 0xfe]));
    let item = message_to_item(&msg).expect("encode");
    let names: Vec<String> = tags_of(&item).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["bundle-format", "bundle-version", "exact", "bundle-map"]
    );
    let items = hb_codec::ans104::bundle::split(&item.data).expect("split");
    // manifest, long, raw: binaries wrapped with `ao-type: binary`.
    assert_eq!(items.len(), 3);
    let manifest: serde_json::Value = serde_json::from_slice(&items[0].data).expect("json");
    let keys: Vec<&String> = manifest.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["long", "raw"]);
    for it in &items[1..] {
        assert_eq!(it.tags, vec![tag("ao-type", "binary")]);
    }
    assert_eq!(items[1].data.as_ref(), long.as_bytes());
    assert_eq!(items[2].data.as_ref(), [0xff, 0xfe]);
    let back = item_to_message(&DataItem::parse(&item.to_bytes()).expect("parse")).expect("decode");
    assert_eq!(back, msg);
}

#[test]
fn data_with_items_is_wrapped_under_data() {
    let msg = Message::new()
        .with("data", "payload")
        .with("n", Message::new().with("k", "v"));
    let item = message_to_item(&msg).expect("encode");
    let items = hb_codec::ans104::bundle::split(&item.data).expect("split");
    let manifest: serde_json::Value = serde_json::from_slice(&items[0].data).expect("json");
    assert_eq!(
        manifest
            .as_object()
            .expect("object")
            .keys()
            .collect::<Vec<_>>(),
        ["data", "n"]
    );
    assert_eq!(items[1].data.as_ref(), b"payload");
    assert_eq!(items[1].tags, vec![tag("ao-type", "binary")]);
    assert_eq!(
        item_to_message(&item).expect("decode"),
        msg,
        "data and items both come back"
    );
}

#[test]
fn body_has_no_special_meaning() {
    let item = message_to_item(&Message::new().with("body", "D")).expect("encode");
    assert_eq!(item.tags, vec![tag("body", "D")]);
    assert!(item.data.is_empty());
}

#[test]
fn quirk_43_character_data_is_decoded() {
    let id = b64url(&[5; 32]);
    let item = message_to_item(&Message::new().with("data", id.as_str())).expect("encode");
    assert_eq!(item.data.as_ref(), &[5; 32]);
}

#[test]
fn checklist_03_24_duplicate_tags_become_a_list() {
    let item = DataItem {
        tags: vec![tag("Dup", "v"), tag("x", "1"), tag("dup", "w\"q")],
        ..DataItem::default()
    };
    let tabm = item_to_tabm(&item).expect("decode");
    assert_eq!(tabm.get_str("dup"), Some(r#""v", "w\"q""#));
    assert_eq!(tabm.get_str("x"), Some("1"));
    // Non-normalised names: an `unsigned` commitment records the original tags, keyed
    // by the unsigned ID (deliberate deviation from the reference's all-zero key).
    let (id, c) = only_commitment(&tabm);
    assert_eq!(id, item.unsigned_id().to_human());
    assert_eq!(c.get_str("alg"), Some(ALG_UNSIGNED));
    assert_eq!(c.get_str("commitment-device"), Some(DEVICE_NAME));
    let rich = item_to_message(&item).expect("decode");
    // Back to the identical item.
    assert_eq!(message_to_item(&rich).expect("encode"), item);
    assert!(verify(&rich, &id).expect("verify unsigned"));
}

// ---------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------

#[test]
fn checklist_03_21_rsa_pss_sha256_salt_32_over_the_deep_hash() {
    let w = key1();
    let item = DataItem {
        tags: vec![tag("a", "1")],
        data: Bytes::from_static(b"hello"),
        ..DataItem::default()
    }
    .signed(&w)
    .expect("sign");
    assert!(item.verify());
    assert_eq!(item.owner.as_slice(), w.public_modulus());
    assert_eq!(item.id(), Id::sha256(&item.signature));
    // The unsigned ID does not depend on the owner or signature.
    assert_eq!(
        item.unsigned_id().to_human(),
        "spRp-9HUjmYm8-AKptDcRUKR9KKqhn3-9bSIAoMqnRI"
    );
    // An independent PSS check with the salt length pinned to 32.
    let key = rsa::PublicKey::new(
        rsa::BoxedUint::from_be_slice_vartime(&item.owner),
        rsa::BoxedUint::from(65537u64),
    )
    .expect("key");
    let digest = Sha256::digest(item.signature_data());
    key.verify(
        rsa::Pss::<Sha256> {
            blinded: false,
            digest: Sha256::new(),
            salt_len: Some(32),
        },
        &digest,
        &item.signature,
    )
    .expect("PSS-SHA256 with a 32-byte salt");

    // JS signers use the maximum salt length: that verifies too.
    let mut js = item.clone();
    let sig = rsa_pss::sign_with_salt_len(&w, Hash::Sha256, &js.signature_data(), 512 - 32 - 2)
        .expect("sign");
    js.signature.copy_from_slice(&sig);
    assert!(js.verify());
    let round = DataItem::parse(&js.to_bytes()).expect("parse");
    assert!(round.verify());
}

/// Flips one byte at each of several offsets of `bytes`; every variant must either
/// fail to parse or fail to verify.
fn assert_tamper_fails(bytes: &[u8], offsets: &[usize]) {
    for &off in offsets {
        let mut t = bytes.to_vec();
        t[off] ^= 0x01;
        if let Ok(item) = DataItem::parse(&t) {
            assert!(!item.verify(), "flipping byte {off} still verifies");
        }
        assert!(deserialize_verified(&t).is_err(), "byte {off}");
    }
}

#[test]
fn tampered_items_fail_verification() {
    let w = key1();
    let item = DataItem {
        target: Some([1; 32]),
        tags: vec![tag("Test-Tag", "v"), tag("other", "w")],
        data: Bytes::from_static(b"DATA"),
        ..DataItem::default()
    }
    .signed(&w)
    .expect("sign");
    let bytes = item.to_bytes();
    assert!(deserialize_verified(&bytes).is_ok());
    let tags_at = 2 + 1024 + 33 + 1 + 16;
    let offsets = [
        2,               // signature
        300,             // signature
        513,             // last signature byte
        514,             // owner
        1000,            // owner
        1030,            // target
        tags_at + 3,     // tag name
        tags_at + 11,    // tag value
        bytes.len() - 1, // data
        bytes.len() - 4, // data
    ];
    assert_tamper_fails(&bytes, &offsets);
    // A re-signed item with a foreign signature fails as well.
    let mut other = item.clone();
    other.data = Bytes::from_static(b"OTHER");
    assert!(!other.verify());
    let err = deserialize_verified(&other.to_bytes()).expect_err("bad signature");
    assert!(matches!(err, Ans104Error::BadSignature));
    assert_eq!(err.to_string(), "the data item's signature does not verify");
}

#[test]
fn checklist_03_23_mixed_case_signed_item_roundtrip() {
    let w = key1();
    let item = DataItem {
        tags: vec![tag("Test-Tag", "v"), tag("other", "w")],
        data: Bytes::from_static(b"DATA"),
        ..DataItem::default()
    }
    .signed(&w)
    .expect("sign");
    let bytes = item.to_bytes();
    let msg = deserialize_verified(&bytes).expect("verified");
    assert_eq!(msg.get_str("data"), Some("DATA"));
    assert_eq!(msg.get_str("other"), Some("w"));
    assert_eq!(msg.get_str("test-tag"), Some("v"));
    let keys: Vec<&str> = msg.keys().map(|k| k.as_ref()).collect();
    assert_eq!(keys, ["commitments", "data", "other", "test-tag"]);
    let (id, c) = only_commitment(&msg);
    assert_eq!(id, item.id().to_human());
    assert_eq!(c.get_str("alg"), Some(ALG_RSA));
    assert_eq!(c.get_str("commitment-device"), Some(DEVICE_NAME));
    assert_eq!(c.get_str("committer"), Some(KEY1_ADDRESS));
    assert_eq!(
        c.get("owner"),
        Some(&Value::bin(w.public_modulus().to_vec()))
    );
    assert_eq!(
        c.get("signature"),
        Some(&Value::bin(item.signature.to_vec()))
    );
    let orig = c
        .get("original-tags")
        .and_then(Value::as_message)
        .expect("original-tags");
    let entry = |n: &str| {
        orig.get(n)
            .and_then(Value::as_message)
            .expect("entry")
            .clone()
    };
    assert_eq!(entry("1").get_str("name"), Some("Test-Tag"));
    assert_eq!(entry("1").get_str("value"), Some("v"));
    assert_eq!(entry("2").get_str("name"), Some("other"));
    assert_eq!(entry("2").get_str("value"), Some("w"));

    // Back to the identical item, which verifies.
    let again = message_to_item(&msg).expect("encode");
    assert_eq!(again, item);
    assert_eq!(again.to_bytes(), bytes);
    assert!(again.verify());
    assert!(verify(&msg, &id).expect("verify"));

    // Changing a value or the original tags breaks it.
    let changed = msg.clone().with("other", "x");
    assert!(!verify(&changed, &id).expect("verify"));
    let err = message_to_item(&changed).expect_err("original tags");
    assert!(matches!(err, Ans104Error::InvalidOriginalTags(_)), "{err}");
}

#[test]
fn lowercase_but_unsorted_or_long_tags_keep_their_order() {
    // The reference loses these on re-encoding; we record original-tags for them.
    let w = key1();
    let long = "L".repeat(300);
    let item = DataItem {
        tags: vec![tag("zeta", "1"), tag("alpha", "2"), tag("long", &long)],
        ..DataItem::default()
    }
    .signed(&w)
    .expect("sign");
    let msg = deserialize_verified(&item.to_bytes()).expect("verified");
    assert_eq!(msg.get_str("long"), Some(long.as_str()));
    let (id, c) = only_commitment(&msg);
    assert!(c.get("original-tags").is_some());
    assert_eq!(message_to_item(&msg).expect("encode"), item);
    assert!(verify(&msg, &id).expect("verify"));

    // Sorted lowercase short tags need no original-tags.
    let plain = DataItem {
        tags: vec![tag("alpha", "2"), tag("zeta", "1")],
        ..DataItem::default()
    }
    .signed(&w)
    .expect("sign");
    let msg = deserialize_verified(&plain.to_bytes()).expect("verified");
    let (_, c) = only_commitment(&msg);
    assert!(c.get("original-tags").is_none(), "{c:?}");
    assert_eq!(message_to_item(&msg).expect("encode"), plain);
}

#[test]
fn commit_verify_and_committed_keys() {
    let w = key1();
    let msg = Message::new()
        .with("a", "1")
        .with("n", 5i64)
        .with("e", "")
        .with("nested", Message::new().with("x", "y"))
        .with("big", "z".repeat(500));
    let signed = commit(&msg, &w).expect("commit");
    let (id, c) = only_commitment(&signed);
    assert_eq!(c.get_str("committer"), Some(KEY1_ADDRESS));
    assert_eq!(c.get_str("alg"), Some(ALG_RSA));
    assert!(verify(&signed, &id).expect("verify"));
    // The commitment's ID is the signed item's ID.
    let item = message_to_item(&signed).expect("encode");
    assert_eq!(item.id().to_human(), id);
    assert!(item.verify());
    // Through bytes and back: same commitment, still verifies.
    let back = deserialize_verified(&item.to_bytes()).expect("verified");
    assert_eq!(back, signed);

    let keys: BTreeSet<String> = committed_keys(&signed, &id)
        .expect("committed")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = [
        "a",
        "ao-types",
        "big",
        "data",
        "e",
        "id",
        "last_tx",
        "n",
        "nested",
        "owner",
        "signature",
        "target",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(keys, expected);

    // Tampering.
    assert!(!verify(&signed.clone().with("a", "2"), &id).expect("verify"));
    assert!(!verify(&signed.clone().with("extra", "x"), &id).expect("verify"));
    let mut wrong_committer = c.clone();
    wrong_committer.insert("committer", Value::text(&b64url(&[0; 32])));
    let forged = signed
        .clone()
        .with("commitments", Message::new().with(&id, wrong_committer));
    assert!(!verify(&forged, &id).expect("verify"));
    assert!(matches!(
        verify(&signed, "nope"),
        Err(Ans104Error::NoCommitment(_))
    ));
}

#[test]
fn commit_moves_hashpath_into_the_commitment_and_keeps_original_tags() {
    let w = key1();
    let msg = Message::new().with("a", "1").with("hashpath", "hp");
    let signed = commit(&msg, &w).expect("commit");
    assert!(signed.get("hashpath").is_none());
    let (id, c) = only_commitment(&signed);
    assert_eq!(c.get_str("hashpath"), Some("hp"));
    assert!(verify(&signed, &id).expect("verify"));
    let item = message_to_item(&signed).expect("encode");
    assert!(item.tag("hashpath").is_some());

    // Committing a message decoded from an unsigned mixed-case item keeps its tags.
    let unsigned = DataItem {
        tags: vec![tag("Zed", "1"), tag("Alpha", "2")],
        ..DataItem::default()
    };
    let msg = item_to_message(&unsigned).expect("decode");
    let signed = commit(&msg, &w).expect("commit");
    let (id, c) = only_commitment(&signed);
    assert!(c.get("original-tags").is_some());
    assert!(verify(&signed, &id).expect("verify"));
    let item = message_to_item(&signed).expect("encode");
    assert_eq!(item.tags, unsigned.tags);
    assert!(item.verify());
}

#[test]
fn nested_signed_items_verify_and_tampering_is_named() {
    let w = key1();
    let inner = commit(&Message::new().with("k", "v"), &w).expect("commit");
    let outer = Message::new().with("inner", inner.clone()).with("t", "1");
    let item = message_to_item(&outer).expect("encode");
    let bytes = item.to_bytes();
    let back = deserialize_verified(&bytes).expect("verified");
    assert_eq!(back, outer);
    let inner_back = back
        .get("inner")
        .and_then(Value::as_message)
        .expect("inner");
    let (id, _) = only_commitment(inner_back);
    assert!(verify(inner_back, &id).expect("verify"));

    // Corrupt the inner item's signature: the manifest still finds it (unsigned IDs do
    // not cover signatures), and verification names it.
    let mut items = hb_codec::ans104::bundle::split(&item.data).expect("split");
    items[1].signature[10] ^= 1;
    let mut tampered = item.clone();
    let mut map = std::collections::BTreeMap::new();
    map.insert("inner".to_owned(), items[1].clone());
    let (manifest, data) = hb_codec::ans104::bundle::build(&map);
    tampered.data = Bytes::from(data);
    tampered.tags =
        hb_codec::ans104::bundle::with_bundle_tags(vec![tag("t", "1")], &manifest.unsigned_id());
    let err = deserialize_verified(&tampered.to_bytes()).expect_err("tampered");
    assert_eq!(
        err.to_string(),
        "the signature of the data item at `inner` inside the bundle does not verify"
    );
}

#[test]
fn a_manifest_names_each_bundled_copy_once() {
    // Equal values are bundled twice (same unsigned ID) and both come back.
    let big = "q".repeat(300);
    let msg = Message::new()
        .with("a", big.as_str())
        .with("b", big.as_str());
    let item = message_to_item(&msg).expect("encode");
    assert_eq!(item_to_message(&item).expect("decode"), msg);

    // One copy named twice is refused: otherwise shared sub-bundles would let a small
    // input decode into an exponentially large message.
    let child = DataItem {
        tags: vec![tag("ao-type", "binary")],
        data: Bytes::from(big.clone()),
        ..DataItem::default()
    };
    let cid = child.unsigned_id();
    let manifest = hb_codec::ans104::bundle::manifest_item(&[("a", cid), ("b", cid)]);
    let u256 = |n: usize| {
        let mut b = vec![0u8; 24];
        b.extend_from_slice(&(n as u64).to_be_bytes());
        b
    };
    let (mb, cb) = (manifest.to_bytes(), child.to_bytes());
    let mut data = u256(2);
    data.extend(u256(mb.len()));
    data.extend_from_slice(&manifest.unsigned_id().0);
    data.extend(u256(cb.len()));
    data.extend_from_slice(&cid.0);
    data.extend(mb);
    data.extend(cb);
    let bomb = DataItem {
        tags: hb_codec::ans104::bundle::with_bundle_tags(vec![], &manifest.unsigned_id()),
        data: Bytes::from(data),
        ..DataItem::default()
    };
    let err = item_to_message(&bomb).expect_err("named twice");
    assert!(err.to_string().contains("fewer times"), "{err}");
}

#[test]
fn multiple_ans104_commitments_are_rejected() {
    let c = Message::new()
        .with("commitment-device", DEVICE_NAME)
        .with("alg", ALG_RSA);
    let msg = Message::new().with("a", "1").with(
        "commitments",
        Message::new()
            .with(&"A".repeat(43), c.clone())
            .with(&"B".repeat(43), c),
    );
    let err = message_to_item(&msg).expect_err("multisig");
    assert!(matches!(err, Ans104Error::MultipleSignatures(2)), "{err}");
}

// ---------------------------------------------------------------------------------
// Strict parsing
// ---------------------------------------------------------------------------------

/// The bytes of an unsigned item with these raw header counts and tag block.
fn raw_item(count: u64, tags: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 0];
    out.extend_from_slice(&[0; 1024]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    out.extend_from_slice(tags);
    out.extend_from_slice(data);
    out
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let name = "n".repeat(2000);
    let tags = vec![tag("a", "1"), tag("b", "2"), tag(&name, "3")];
    let err = DataItem::parse(&raw_item(3, &encode_tags(&tags), b"")).expect_err("long");
    assert_eq!(
        err.to_string(),
        "tag 3's name is 2000 bytes; at most 1024 are allowed"
    );

    let value = "v".repeat(3073);
    let err = DataItem::parse(&raw_item(1, &encode_tags(&[tag("a", &value)]), b""))
        .expect_err("long value");
    assert_eq!(
        err.to_string(),
        "tag 1's value is 3073 bytes; at most 3072 are allowed"
    );

    let many: Vec<Tag> = (0..129).map(|i| tag(&format!("t{i}"), "x")).collect();
    let err = DataItem::parse(&raw_item(129, &encode_tags(&many), b"")).expect_err("many");
    assert_eq!(
        err.to_string(),
        "the data item has 129 tags; at most 128 are allowed"
    );

    let err = DataItem::parse(&[2, 0]).expect_err("type");
    assert!(err.to_string().contains("signature type 2"), "{err}");
    let err = DataItem::parse(&[1, 0, 0]).expect_err("short");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Declared tag block longer than the input.
    let mut b = raw_item(1, &encode_tags(&[tag("a", "1")]), b"");
    let len_at = 2 + 1024 + 2 + 8;
    b[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(DataItem::parse(&b).is_err());
    // Count and block disagree.
    let b = raw_item(2, &encode_tags(&[tag("a", "1")]), b"");
    assert!(DataItem::parse(&b).is_err());
    // No tags but a tag block.
    let b = raw_item(0, &[0], b"");
    assert!(DataItem::parse(&b).is_err());
    // A bad presence byte.
    let mut b = raw_item(0, &[], b"");
    b[1026] = 2;
    let err = DataItem::parse(&b).expect_err("presence");
    assert!(err.to_string().contains("presence byte is 2"), "{err}");
    // Too many tags when encoding a message.
    let mut m = Message::new();
    for i in 0..129 {
        m.insert(&format!("k{i:03}"), Value::text("v"));
    }
    let err = message_to_item(&m).expect_err("too many");
    assert!(err.to_string().contains("129 tags"), "{err}");
}

// ---------------------------------------------------------------------------------
// The device, alone and through message@1.0
// ---------------------------------------------------------------------------------

fn ctx_with(dev: Ans104Device) -> Ctx {
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
    let ctx = ctx_with(Ans104Device::new(Arc::new(key1())));
    let md = MessageDevice;
    let msg = Message::new().with("a", "1").with("b", 2i64);
    let req = Message::new().with("commitment-device", DEVICE_NAME);
    let out = md
        .call(Call::Function("commit"), &msg, &req, &ctx)
        .expect("commit");
    assert!(out.is_ok(), "{out:?}");
    let signed = out.value.as_message().expect("message").clone();
    let (id, c) = only_commitment(&signed);
    assert_eq!(c.get_str("commitment-device"), Some(DEVICE_NAME));

    let v = md
        .call(Call::Function("verify"), &signed, &Message::new(), &ctx)
        .expect("verify");
    assert!(v.value.is_atom("true"), "{v:?}");
    let tampered = signed.clone().with("a", "x");
    let v = md
        .call(Call::Function("verify"), &tampered, &Message::new(), &ctx)
        .expect("verify");
    assert!(v.value.is_atom("false"), "{v:?}");

    for req in [Message::new().with("committers", "all"), Message::new()] {
        let out = md
            .call(Call::Function("id"), &signed, &req, &ctx)
            .expect("id");
        assert_eq!(out.value.as_str(), Some(id.as_str()), "{req:?}");
    }

    let committed = md
        .call(
            Call::Function("committed"),
            &signed,
            &Message::new().with("commitment-device", DEVICE_NAME),
            &ctx,
        )
        .expect("committed");
    let Value::List(l) = &committed.value else {
        panic!("not a list: {committed:?}")
    };
    let keys: BTreeSet<&str> = l.iter().filter_map(Value::as_str).collect();
    assert!(
        keys.is_superset(&BTreeSet::from(["a", "ao-types", "b", "data"])),
        "{keys:?}"
    );

    // serialize / deserialize.
    let dev = Ans104Device::default();
    let ser = dev
        .call(Call::Function("serialize"), &signed, &Message::new(), &ctx)
        .expect("serialize");
    let ser = ser.value.as_message().expect("message").clone();
    assert_eq!(ser.get_str("content-type"), Some("application/ans104"));
    let de = dev
        .call(Call::Function("deserialize"), &ser, &Message::new(), &ctx)
        .expect("deserialize");
    assert!(de.is_ok(), "{de:?}");
    assert_eq!(de.value.as_message(), Some(&signed));
    let body = ser.get("body").and_then(Value::as_bytes).expect("body");
    let mut bad = body.to_vec();
    bad[100] ^= 1;
    let de = dev
        .call(
            Call::Function("deserialize"),
            &Message::new().with("body", Value::bin(bad)),
            &Message::new(),
            &ctx,
        )
        .expect("deserialize");
    assert!(!de.is_ok());

    // to / from / id / content_type.
    let to = dev
        .call(Call::Function("to"), &signed, &Message::new(), &ctx)
        .expect("to");
    assert_eq!(to.value.as_bytes(), Some(body));
    let from = dev
        .call(
            Call::Function("from"),
            &Message::new().with("body", to.value.clone()),
            &Message::new(),
            &ctx,
        )
        .expect("from");
    let tabm = from.value.as_message().expect("tabm");
    assert_eq!(tabm.get_str("b"), Some("2"));
    assert_eq!(tabm.get_str("ao-types"), Some("b=\"integer\""));
    let out = dev
        .call(Call::Function("id"), &signed, &Message::new(), &ctx)
        .expect("id");
    assert_eq!(out.value.as_str(), Some(id.as_str()));
}

#[test]
fn device_commit_without_wallet_fails() {
    let ctx = ctx_with(Ans104Device::default());
    let err = MessageDevice
        .call(
            Call::Function("commit"),
            &Message::new().with("a", "1"),
            &Message::new().with("commitment-device", DEVICE_NAME),
            &ctx,
        )
        .expect_err("no wallet");
    assert!(err.to_string().contains("wallet"), "{err}");
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

/// Keys with a special meaning in ANS-104 or the structured codec, left out of the
/// round-trip property: record fields (`target`, `last_tx`, `owner`, `signature` must be
/// IDs/keys; `format`, `id`, `tags` are dropped), forced-tag fields whose default values
/// vanish (`quantity`, `reward`, `denomination`, `manifest`), commitment fields, the
/// bundle tags and the `ao-type` wrapper marker.
const SPECIAL: &[&str] = &[
    "format",
    "id",
    "last_tx",
    "owner",
    "tags",
    "target",
    "signature",
    "quantity",
    "manifest",
    "reward",
    "denomination",
    "commitments",
    "committer",
    "alg",
    "commitment-device",
    "original-tags",
    "ao-type",
    "ao-types",
    "bundle-format",
    "bundle-version",
    "bundle-map",
];

fn arb_key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,7}".prop_filter("special key", |k| {
        !SPECIAL.contains(&k.as_str()) && !k.starts_with("priv")
    })
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(|s| Value::text(&s)),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::bin),
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(Value::Integer),
    ]
}

/// Maps of at most 12 keys (well under the 32 beyond which the reference's key order is
/// unreproducible, §13 item 8), nested up to 3 levels.
fn arb_message() -> impl Strategy<Value = Message> {
    let leaf_map = prop::collection::btree_map(arb_key(), arb_leaf(), 0..12);
    leaf_map
        .prop_map(Message::from_pairs)
        .prop_recursive(3, 40, 6, |inner| {
            prop::collection::btree_map(
                arb_key(),
                prop_oneof![3 => arb_leaf(), 1 => inner.prop_map(Value::Message)],
                0..12,
            )
            .prop_map(Message::from_pairs)
        })
}

/// A message that often has a `data` key (a record field with its own rules): a leaf,
/// or a nested message that travels as the bundle item `data`.
fn arb_message_with_data() -> impl Strategy<Value = Message> {
    (
        arb_message(),
        prop::option::of(prop_oneof![
            arb_leaf(),
            arb_message().prop_map(Value::Message)
        ]),
    )
        .prop_map(|(m, data)| match data {
            Some(d) => m.with("data", d),
            None => m,
        })
}

/// Removes the lossy cases of spec §7.6 / §13 from a generated message: a `data` value
/// of exactly 43 characters (decoded to 32 bytes, §13 item 10) or an empty `data`
/// (a transaction default, dropped on decoding, §2.6 / §13 item 3).
fn without_lossy(m: &Message) -> Message {
    let mut out = Message::new();
    for (k, v) in m.iter() {
        let v = match v {
            Value::Message(inner) => Value::Message(without_lossy(inner)),
            other => other.clone(),
        };
        if k.as_ref() == "data"
            && let Value::Binary(b) = &v
            && (b.len() == 43 || b.is_empty())
        {
            continue;
        }
        out.insert_key(k.clone(), v);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn message_item_roundtrip(m in arb_message_with_data()) {
        let m = without_lossy(&m);
        let item = message_to_item(&m).expect("encode");
        let bytes = item.to_bytes();
        let parsed = DataItem::parse(&bytes).expect("parse");
        prop_assert_eq!(&parsed, &item);
        let back = item_to_message(&parsed).expect("decode");
        prop_assert_eq!(back, m);
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        if let Ok(item) = DataItem::parse(&bytes) {
            prop_assert_eq!(item.to_bytes(), bytes.clone());
            let _ = item_to_message(&item);
        }
        let _ = deserialize_verified(&bytes);
    }

    #[test]
    fn mutated_items_never_panic(
        m in arb_message_with_data(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = message_to_item(&without_lossy(&m)).expect("encode").to_bytes();
        for (i, x) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(item) = DataItem::parse(&bytes) {
            prop_assert_eq!(item.to_bytes(), bytes.clone());
            let _ = item_to_message(&item);
            let _ = hb_codec::ans104::verify_tree(&item);
        }
        let _ = deserialize_verified(&bytes);
    }
}
