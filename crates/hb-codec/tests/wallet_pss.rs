//! Wallets and RSA-PSS against the fixture keys (spec 03 §9).

use hb_codec::rsa_pss::{self, Hash, sign, sign_with_salt_len, verify};
use hb_codec::{Wallet, WalletError};
use proptest::prelude::*;

const KEY1: &[u8] = include_bytes!("../../../tests/fixtures/key-1.json");
const KEY2: &[u8] = include_bytes!("../../../tests/fixtures/key-2.json");
const KEY1_ADDRESS: &str = "vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4";

fn key1() -> Wallet {
    Wallet::from_jwk_json(KEY1).expect("key-1 loads")
}

fn key2() -> Wallet {
    Wallet::from_jwk_json(KEY2).expect("key-2 loads")
}

#[test]
fn fixture_address_keyid_and_httpsig_name() {
    let w = key1();
    assert_eq!(w.address(), KEY1_ADDRESS);
    assert_eq!(w.public_modulus().len(), 512);
    assert_eq!(w.httpsig_name(), "http-sig-c68f7b82569eb48e");
    let n_b64: serde_json::Value = serde_json::from_slice(KEY1).expect("json");
    assert_eq!(w.keyid(), n_b64["n"].as_str().expect("n"));
    assert_eq!(
        hb_codec::wallet::address_of(w.public_modulus()),
        KEY1_ADDRESS
    );
    assert_ne!(key2().address(), KEY1_ADDRESS);
    // Debug never shows the private key.
    let dbg = format!("{w:?}");
    assert!(dbg.contains(KEY1_ADDRESS) && dbg.len() < 120, "{dbg}");
}

#[test]
fn jwk_round_trip_is_lossless() {
    let w = key1();
    let again = Wallet::from_jwk_json(w.to_jwk_json().as_bytes()).expect("reload");
    assert_eq!(again.address(), KEY1_ADDRESS);
    let ours: serde_json::Value = serde_json::from_str(&w.to_jwk_json()).expect("json");
    let theirs: serde_json::Value = serde_json::from_slice(KEY1).expect("json");
    for k in ["kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        assert_eq!(ours[k], theirs[k], "member {k}");
    }
}

#[test]
fn key_without_primes_loads() {
    let mut v: serde_json::Value = serde_json::from_slice(KEY1).expect("json");
    let obj = v.as_object_mut().expect("object");
    for k in ["p", "q", "dp", "dq", "qi"] {
        obj.remove(k);
    }
    let w = Wallet::from_jwk_json(v.to_string().as_bytes()).expect("n, e, d suffice");
    assert_eq!(w.address(), KEY1_ADDRESS);
    let sig = sign(&w, Hash::Sha256, b"x").expect("sign");
    assert!(verify(w.public_modulus(), Hash::Sha256, b"x", &sig));
}

fn with(member: &str, value: serde_json::Value) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(KEY1).expect("json");
    if value.is_null() {
        v.as_object_mut().expect("object").remove(member);
    } else {
        v[member] = value;
    }
    v.to_string().into_bytes()
}

#[test]
fn malformed_keys_are_errors() {
    use serde_json::json;
    let n: serde_json::Value = serde_json::from_slice(KEY1).expect("json");
    let n = n["n"].as_str().expect("n").to_owned();
    let mut other_n = n.clone().into_bytes();
    other_n[10] = if other_n[10] == b'A' { b'B' } else { b'A' };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "JWK JSON"),
        (b"not json".to_vec(), "JWK JSON"),
        (b"[1,2]".to_vec(), "JWK JSON"),
        (b"{}".to_vec(), "`kty`"),
        (with("kty", json!("EC")), "unsupported key type `EC`"),
        (with("n", serde_json::Value::Null), "`n`"),
        (with("d", serde_json::Value::Null), "`d`"),
        (with("n", json!("!!!")), "`n`"),
        (with("d", json!("")), "`d`"),
        (with("e", json!("Aw")), "exponent"),
        (with("e", json!(65537)), "JWK JSON"),
        (with("q", serde_json::Value::Null), "`q`"),
        (with("p", json!("AQ")), "valid RSA key"),
        (with("p", json!("AA")), "valid RSA key"),
        (with("q", json!("Ag")), "valid RSA key"),
        (with("d", json!("AQ")), "valid RSA key"),
        (
            with("n", json!(String::from_utf8(other_n).expect("ascii"))),
            "valid RSA key",
        ),
        (with("n", json!("AQAB")), "valid RSA key"),
        (with("n", json!("AA")), "valid RSA key"),
    ];
    for (json, want) in cases {
        let err = Wallet::from_jwk_json(&json).expect_err("must be rejected");
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "{} -> {msg}",
            String::from_utf8_lossy(&json[..json.len().min(60)])
        );
    }
    assert!(matches!(
        Wallet::load("/nonexistent/key.json"),
        Err(WalletError::Read { .. })
    ));
}

#[test]
fn sign_verify_round_trips_for_both_hashes() {
    for w in [key1(), key2()] {
        for hash in [Hash::Sha256, Hash::Sha512] {
            let msg = b"the signature base";
            let sig = sign(&w, hash, msg).expect("sign");
            assert_eq!(sig.len(), 512);
            assert!(verify(w.public_modulus(), hash, msg, &sig));
            // Wrong message, wrong hash.
            assert!(!verify(w.public_modulus(), hash, b"other", &sig));
            let other = if hash == Hash::Sha256 {
                Hash::Sha512
            } else {
                Hash::Sha256
            };
            assert!(!verify(w.public_modulus(), other, msg, &sig));
        }
    }
}

#[test]
fn verify_rejects_tampering_wrong_key_and_wrong_length() {
    let (w1, w2) = (key1(), key2());
    let msg = b"hello";
    let sig = sign(&w1, Hash::Sha512, msg).expect("sign");
    for bit in [0usize, 7, 8 * 100 + 3, 8 * 511 + 7] {
        let mut bad = sig.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !verify(w1.public_modulus(), Hash::Sha512, msg, &bad),
            "bit {bit}"
        );
    }
    assert!(!verify(w2.public_modulus(), Hash::Sha512, msg, &sig));
    assert!(!verify(w1.public_modulus(), Hash::Sha512, msg, &sig[1..]));
    let mut long = vec![0u8];
    long.extend_from_slice(&sig);
    assert!(!verify(w1.public_modulus(), Hash::Sha512, msg, &long));
    assert!(!verify(w1.public_modulus(), Hash::Sha512, msg, &[]));
    assert!(!verify(&[], Hash::Sha512, msg, &sig));
    // A signature value >= n is rejected, not reduced.
    assert!(!verify(
        w1.public_modulus(),
        Hash::Sha512,
        msg,
        &[0xff; 512]
    ));
    // Modulus given with a leading zero byte: lengths no longer match.
    let mut n0 = vec![0u8];
    n0.extend_from_slice(w1.public_modulus());
    assert!(!verify(&n0, Hash::Sha512, msg, &sig));
}

#[test]
fn verify_detects_any_salt_length() {
    let w = key1();
    let n = w.public_modulus();
    let msg = b"salted";
    for (hash, salts) in [
        (Hash::Sha512, [0usize, 32, 64, 512 - 64 - 2]),
        (Hash::Sha256, [0usize, 20, 32, 512 - 32 - 2]),
    ] {
        for salt in salts {
            let sig = sign_with_salt_len(&w, hash, msg, salt).expect("sign");
            assert_eq!(sig.len(), 512);
            assert!(verify(n, hash, msg, &sig), "{hash:?} salt {salt}");
            assert!(!verify(n, hash, b"salted!", &sig), "{hash:?} salt {salt}");
        }
    }
    // A salt longer than the maximum cannot be signed.
    assert!(sign_with_salt_len(&w, Hash::Sha512, msg, 512 - 64 - 1).is_err());
}

#[test]
fn prehashed_verify_checks_the_digest_length() {
    let w = key1();
    let sig = sign(&w, Hash::Sha256, b"m").expect("sign");
    let digest = Hash::Sha256.digest(b"m");
    assert!(rsa_pss::verify_prehashed(
        w.public_modulus(),
        Hash::Sha256,
        &digest,
        &sig
    ));
    assert!(!rsa_pss::verify_prehashed(
        w.public_modulus(),
        Hash::Sha256,
        &digest[1..],
        &sig
    ));
}

#[test]
fn generate_save_load_round_trip() {
    let started = std::time::Instant::now();
    let w = Wallet::generate().expect("generate");
    eprintln!("RSA-4096 generation took {:?}", started.elapsed());
    assert_eq!(w.public_modulus().len(), 512);
    assert_eq!(w.public_modulus()[0] & 0x80, 0x80);
    assert_eq!(w.address().len(), 43);
    let dir = std::env::temp_dir().join(format!("hb-codec-wallet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("wallet.json");
    w.save(&path).expect("save");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(matches!(w.save(&path), Err(WalletError::Exists(_))));
    let back = Wallet::load(&path).expect("load");
    assert_eq!(back.address(), w.address());
    let sig = sign(&back, Hash::Sha512, b"fresh").expect("sign");
    assert!(verify(w.public_modulus(), Hash::Sha512, b"fresh", &sig));
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    for k in ["kty", "n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        assert!(jwk[k].is_string(), "member {k}");
    }
    assert_eq!(jwk["e"], "AQAB");
    let _ = std::fs::remove_dir_all(&dir);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn verify_never_panics_on_arbitrary_signatures(
        sig in proptest::collection::vec(any::<u8>(), 512),
        short in proptest::collection::vec(any::<u8>(), 0..600),
        msg in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let w = key1();
        prop_assert!(!verify(w.public_modulus(), Hash::Sha512, &msg, &sig));
        prop_assert!(!verify(w.public_modulus(), Hash::Sha256, &msg, &short));
        // Arbitrary moduli too.
        let _ = verify(&short, Hash::Sha256, &msg, &sig);
        let _ = verify(&sig, Hash::Sha512, &msg, &sig);
    }
}
