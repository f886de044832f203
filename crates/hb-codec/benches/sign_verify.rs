//! Signing, verifying and IDs with the fixture wallet `tests/fixtures/key-1.json`
//! (RSA-4096): raw RSASSA-PSS-SHA512 sign and verify, an httpsig commitment of a typical
//! small response (what signing a reply costs) and its verification, and the message IDs
//! of that response. `bench/sign_verify.sh` runs this next to `openssl speed rsa4096` and
//! prints the ratios; see docs/PERFORMANCE.md.

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hb_codec::httpsig_commit::{self, ALG_RSA};
use hb_codec::rsa_pss::{self, Hash};
use hb_codec::{Wallet, httpsig_commit::rsa_signature_base};
use hb_core::httpsig::{self, hmac_id};
use hb_core::structured::to_tabm;
use hb_core::{Message, Value};

fn wallet() -> Wallet {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-1.json"
    );
    Wallet::load(path).expect("the fixture wallet loads")
}

/// A typical small reply: `{ao-result: body, body: <200 bytes of JSON-ish text>,
/// status: 200}`.
fn response() -> Message {
    let body = format!(
        "{{\"ok\":true,\"process\":\"{}\",\"slot\":4711,\"output\":\"{}\"}}",
        "x".repeat(43),
        "Hello from the process. ".repeat(5)
    );
    assert!((180..=220).contains(&body.len()), "{}", body.len());
    Message::new()
        .with("ao-result", "body")
        .with("body", body.as_str())
        .with("status", 200i64)
}

/// The ID of the RSA commitment of a committed message.
fn rsa_commitment_id(signed: &Message) -> String {
    signed
        .get("commitments")
        .and_then(Value::as_message)
        .and_then(|c| {
            c.iter()
                .find(|(_, c)| c.as_message().and_then(|c| c.get_str("alg")) == Some(ALG_RSA))
                .map(|(id, _)| id.to_string())
        })
        .expect("an RSA commitment")
}

/// Raw RSASSA-PSS-SHA512 over the response's own signature base (what `commit` signs).
fn rsa(c: &mut Criterion) {
    let w = wallet();
    let (base, _, _) = rsa_signature_base(&response(), &w.keyid()).expect("signature base");
    let sig = rsa_pss::sign(&w, Hash::Sha512, &base).expect("sign");
    assert!(rsa_pss::verify(
        w.public_modulus(),
        Hash::Sha512,
        &base,
        &sig
    ));
    let mut group = c.benchmark_group("sign_verify");
    group.bench_function("rsa_pss_sign", |b| {
        b.iter(|| rsa_pss::sign(&w, Hash::Sha512, black_box(&base)))
    });
    group.bench_function("rsa_pss_verify", |b| {
        b.iter(|| rsa_pss::verify(w.public_modulus(), Hash::Sha512, black_box(&base), &sig))
    });
    group.finish();
}

/// `httpsig_commit::commit` of the response (signing a reply) and `verify` of its RSA
/// and HMAC commitments.
fn httpsig(c: &mut Criterion) {
    let w = wallet();
    let msg = response();
    let signed = httpsig_commit::commit(&msg, &w).expect("commit");
    let rsa_id = rsa_commitment_id(&signed);
    let hmac = hmac_id(&to_tabm(&msg).expect("tabm"))
        .expect("hmac")
        .to_human();
    assert!(httpsig_commit::verify(&signed, &rsa_id).expect("verify"));
    assert!(httpsig_commit::verify(&signed, &hmac).expect("verify hmac"));
    let mut group = c.benchmark_group("sign_verify");
    group.bench_function("commit_response", |b| {
        b.iter(|| httpsig_commit::commit(black_box(&msg), &w))
    });
    group.bench_function("verify_response_rsa", |b| {
        b.iter(|| httpsig_commit::verify(black_box(&signed), &rsa_id))
    });
    group.bench_function("verify_response_hmac", |b| {
        b.iter(|| httpsig_commit::verify(black_box(&signed), &hmac))
    });
    group.finish();
}

/// IDs: `message@1.0`'s `id` of the response unsigned (the HMAC ID, streaming fast path)
/// and signed (the combination of its two commitment IDs), and `hmac_id` of its TABM
/// (the full encoding, as the HMAC commitment is computed).
fn ids(c: &mut Criterion) {
    let w = wallet();
    let msg = response();
    let tabm = to_tabm(&msg).expect("tabm");
    let signed = httpsig_commit::commit(&msg, &w).expect("commit");
    assert_eq!(
        httpsig::message_id(&msg).expect("id"),
        hmac_id(&tabm).expect("hmac id")
    );
    let mut group = c.benchmark_group("sign_verify");
    group.bench_function("id_response", |b| {
        b.iter(|| httpsig::message_id(black_box(&msg)))
    });
    group.bench_function("hmac_id_response_tabm", |b| {
        b.iter(|| hmac_id(black_box(&tabm)))
    });
    group.bench_function("id_signed_response", |b| {
        b.iter(|| httpsig::message_id(black_box(&signed)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = rsa, httpsig, ids
}
criterion_main!(benches);
