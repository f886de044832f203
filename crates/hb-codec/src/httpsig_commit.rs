//! RSA `httpsig@1.0` commitments (spec 03 §5.1–5.8): signing a message with a wallet,
//! verifying a commitment, and the keys a commitment covers; plus [`HttpsigDevice`],
//! the `httpsig@1.0` commitment device that `message@1.0` delegates to.
//!
//! The HTTP encoding and the HMAC ("unsigned") ID live in [`hb_core::httpsig`]; this
//! module adds what needs a key: the RSASSA-PSS-SHA512 commitment and the signature
//! base of §5.3, with the reference's deviations from RFC 9421 (derived components use
//! the plain message key verbatim, a missing component is an error, zero components
//! give a base starting with LF).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::httpsig::{
    DERIVED_COMPONENTS, HttpMessage, Signatures, content_digest, encode_rich_wire, hmac_id, to_http,
};
use hb_core::id::{Id, b64url_decode};
use hb_core::resolve::{Ctx, ResolveError};
use hb_core::sf::{self, BareItem, Item, Member, Parameters};
use hb_core::structured::{CodecError, to_tabm, unescape_key};
use hb_core::value::{Message, Value};
use rsa::sha2::Digest as _;
use thiserror::Error;

use crate::rsa_pss::{self, Hash};
use crate::wallet::{Wallet, WalletError, address_of, httpsig_name_of};

/// The device name, also the `commitment-device` of every commitment made here.
pub const DEVICE_NAME: &str = "httpsig@1.0";
/// The `alg` of RSA commitments.
pub const ALG_RSA: &str = "rsa-pss-sha512";
/// The `alg` of the HMAC commitment.
pub const ALG_HMAC: &str = "hmac-sha256";

/// What can go wrong committing or checking an httpsig commitment.
#[derive(Debug, Error)]
pub enum HttpsigError {
    /// The message cannot be encoded.
    #[error("codec error: {0}")]
    Codec(#[from] CodecError),
    /// The wallet could not sign.
    #[error("signing failed: {0}")]
    Wallet(#[from] WalletError),
    /// A signature component names a key the message does not have (§5.3).
    #[error("signature component `{0}` is missing from the message")]
    MissingComponent(String),
    /// The message has no commitment with this ID.
    #[error("commitment `{0}` not found")]
    NoCommitment(String),
    /// The commitment is malformed or of an unsupported kind.
    #[error("invalid commitment: {0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> HttpsigError {
    HttpsigError::Invalid(reason.into())
}

/// The header fields that are signature components of a TABM (§5.2 step 2, §5.7):
/// its HTTP encoding without `body-keys`, `signature` and `signature-input`, with
/// `content-digest` recomputed from the body, if there is one.
fn component_fields(tabm: &Message) -> Result<BTreeMap<String, Bytes>, HttpsigError> {
    let http = to_http(tabm)?;
    let mut headers = http.headers;
    for k in ["body-keys", "signature", "signature-input"] {
        headers.remove(k);
    }
    if let Some(body) = &http.body {
        headers.insert("content-digest".to_owned(), content_digest(body));
    }
    Ok(headers)
}

/// Refuses component names an RFC 8941 string cannot hold (the `signature-input`
/// lists them): only printable ASCII can be signed.
fn check_components(components: &[String]) -> Result<(), HttpsigError> {
    match components
        .iter()
        .find(|c| !c.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        Some(bad) => Err(invalid(format!(
            "the key `{bad}` cannot be signed: httpsig signature components are printable ASCII"
        ))),
        None => Ok(()),
    }
}

/// Sorted field names, then `@`-prefixed where derived (§5.2 step 3).
fn component_list<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<&String> = names.collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            if DERIVED_COMPONENTS.contains(&n.as_str()) {
                format!("@{n}")
            } else {
                n.clone()
            }
        })
        .collect()
}

/// `("c1" "c2" …);p1=v1;…`: the parameter line of a signature base and the member of a
/// `signature-input` dictionary.
fn inner_list(components: &[String], params: &Parameters) -> Vec<u8> {
    let items = components
        .iter()
        .map(|c| Item::new(BareItem::string(c.as_bytes())))
        .collect();
    let mut out = Vec::new();
    sf::write_member(&mut out, &Member::InnerList(items, params.clone()));
    out
}

/// The signature base of §5.3 over `components`, reading values from `fields`, with
/// the serialised parameter line `params` (as made by [`inner_list`]).
fn signature_base(
    components: &[String],
    fields: &BTreeMap<String, Bytes>,
    params: &[u8],
) -> Result<Vec<u8>, HttpsigError> {
    let mut out = Vec::new();
    if components.is_empty() {
        out.push(b'\n');
    }
    for c in components {
        let name = c.strip_prefix('@').unwrap_or(c).to_ascii_lowercase();
        let value = fields
            .get(&name)
            .ok_or_else(|| HttpsigError::MissingComponent(name.clone()))?;
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\": ");
        let mut v: &[u8] = value;
        while let [b' ', rest @ ..] = v {
            v = rest;
        }
        while let [rest @ .., b' '] = v {
            v = rest;
        }
        out.extend(v.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        out.push(b'\n');
    }
    out.extend_from_slice(b"\"@signature-params\": ");
    out.extend_from_slice(params);
    Ok(out)
}

/// The RSA signature base [`commit`] signs for `msg` (a rich message) with the public
/// key `keyid` (b64url modulus), and the component list it covers.
///
/// # Errors
/// The message cannot be encoded.
pub fn rsa_signature_base(
    msg: &Message,
    keyid: &str,
) -> Result<(Vec<u8>, Vec<String>, Parameters), HttpsigError> {
    let tabm = to_tabm(&msg.clone().without("commitments"))?;
    let fields = component_fields(&tabm)?;
    let components = component_list(fields.keys());
    check_components(&components)?;
    let mut params: Parameters = vec![
        ("alg".into(), BareItem::string(ALG_RSA)),
        ("keyid".into(), BareItem::string(keyid)),
    ];
    if let Some(hashpath) = msg.hashpath() {
        params.push(("tag".into(), BareItem::string(hashpath)));
    }
    let base = signature_base(&components, &fields, &inner_list(&components, &params))?;
    Ok((base, components, params))
}

fn is_hmac(c: &Message) -> bool {
    c.get_str("commitment-device") == Some(DEVICE_NAME) && c.get_str("alg") == Some(ALG_HMAC)
}

fn commitments_of(msg: &Message) -> Message {
    msg.get("commitments")
        .and_then(Value::as_message)
        .cloned()
        .unwrap_or_default()
}

/// Commits `msg` (a rich message) with `wallet` (§5.2): adds an RSA commitment and
/// recomputes the HMAC commitment (§5.6). Existing RSA commitments are kept
/// (multi-signature, §6.6).
///
/// # Errors
/// The message cannot be encoded, or signing fails.
pub fn commit(msg: &Message, wallet: &Wallet) -> Result<Message, HttpsigError> {
    let (base, components, params) = rsa_signature_base(msg, &wallet.keyid())?;
    let sig = rsa_pss::sign(wallet, Hash::Sha512, &base)?;
    let name = wallet.httpsig_name();
    let signature = sf::serialize_dictionary(&[(
        name.clone(),
        Member::Item(Item::new(BareItem::ByteSeq(sig.clone()))),
    )]);
    let mut signature_input = format!("{name}=").into_bytes();
    signature_input.extend_from_slice(&inner_list(&components, &params));
    let rsa = Message::new()
        .with("commitment-device", Value::text(DEVICE_NAME))
        .with("alg", Value::text(ALG_RSA))
        .with("committer", Value::text(&wallet.address()))
        .with("signature", Value::bin(signature))
        .with("signature-input", Value::bin(signature_input));
    let mut commitments = commitments_of(msg);
    commitments.insert(&Id::sha256(&sig).to_human(), Value::Message(rsa));
    with_hmac_commitment(&msg.clone().with("commitments", Value::Message(commitments)))
}

/// The httpsig HTTP encoding of `msg` (a rich message without commitments) signed with
/// `wallet`: the headers and body of `to_http(to_tabm(commit(msg, wallet)))`, computed
/// with one encoding of the message and one signature (the node signs every reply with
/// it, spec 05 §2.4 step 8). It signs the wire encoding ([`encode_rich_wire`]), so a
/// value HTTP fields cannot carry (a newline) travels in the body and the reply still
/// verifies as received. `sign` makes the RSA-PSS-SHA512 signature of
/// the base it is given; callers may memoise it (the same base may reuse a signature).
///
/// # Errors
/// The message cannot be encoded, or signing fails.
pub fn sign_http(
    msg: &Message,
    wallet: &Wallet,
    sign: impl FnOnce(&Wallet, &[u8]) -> Result<Vec<u8>, WalletError>,
) -> Result<HttpMessage, HttpsigError> {
    let mut http = encode_rich_wire(msg)?;
    let mut fields = http.headers.clone();
    fields.remove("body-keys");
    if let Some(body) = &http.body {
        fields.insert("content-digest".to_owned(), content_digest(body));
    }
    let components = component_list(fields.keys());
    check_components(&components)?;
    let mut params: Parameters = vec![
        ("alg".into(), BareItem::string(ALG_RSA)),
        ("keyid".into(), BareItem::string(wallet.keyid())),
    ];
    if let Some(hashpath) = msg.hashpath() {
        params.push(("tag".into(), BareItem::string(hashpath)));
    }
    let input = inner_list(&components, &params);
    let base = signature_base(&components, &fields, &input)?;
    let sig = sign(wallet, &base)?;
    let name = wallet.httpsig_name();
    let signature = sf::serialize_dictionary(&[(
        name.clone(),
        Member::Item(Item::new(BareItem::ByteSeq(sig))),
    )]);
    let mut signature_input = format!("{name}=").into_bytes();
    signature_input.extend_from_slice(&input);
    http.headers
        .insert("signature".to_owned(), Bytes::from(signature));
    http.headers
        .insert("signature-input".to_owned(), Bytes::from(signature_input));
    Ok(http)
}

/// The RSA-PSS-SHA512 signature of an httpsig signature base (the `sign` argument
/// [`sign_http`] takes when nothing is memoised).
///
/// # Errors
/// Signing fails.
pub fn sign_base(wallet: &Wallet, base: &[u8]) -> Result<Vec<u8>, WalletError> {
    rsa_pss::sign(wallet, Hash::Sha512, base)
}

/// Replaces the HMAC commitment of `msg` by a freshly computed one (§5.6 "reset HMAC").
///
/// # Errors
/// The message or an RSA commitment's signature fields cannot be encoded or parsed.
pub fn with_hmac_commitment(msg: &Message) -> Result<Message, HttpsigError> {
    reset_hmac(msg, |m| Ok(to_tabm(m)?))
}

/// [`with_hmac_commitment`] for a message already in TABM form (as [`from_http`]
/// returns it, with `commitments` in TABM form too).
///
/// # Errors
/// The message or an RSA commitment's signature fields cannot be encoded or parsed.
///
/// [`from_http`]: hb_core::httpsig::from_http
pub fn with_hmac_commitment_tabm(tabm: &Message) -> Result<Message, HttpsigError> {
    reset_hmac(tabm, |m| Ok(m.clone()))
}

fn reset_hmac(
    msg: &Message,
    tabm_of: impl Fn(&Message) -> Result<Message, HttpsigError>,
) -> Result<Message, HttpsigError> {
    let mut commitments = commitments_of(msg);
    let hmacs: Vec<String> = commitments
        .iter()
        .filter(|(_, c)| c.as_message().is_some_and(is_hmac))
        .map(|(k, _)| k.to_string())
        .collect();
    for k in hmacs {
        commitments.remove(&k);
    }
    let mut sigs: BTreeMap<String, Member> = BTreeMap::new();
    let mut inputs: BTreeMap<String, Member> = BTreeMap::new();
    for (_, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        if c.get_str("commitment-device") != Some(DEVICE_NAME) {
            continue;
        }
        for (field, into) in [("signature", &mut sigs), ("signature-input", &mut inputs)] {
            if let Some(text) = c.get(field).and_then(Value::as_bytes) {
                let dict =
                    sf::parse_dictionary(text).map_err(|e| invalid(format!("bad {field}: {e}")))?;
                into.extend(dict);
            }
        }
    }
    let msg = msg
        .clone()
        .with("commitments", Value::Message(commitments.clone()));
    let id = hmac_id(&tabm_of(&msg)?)?;
    let mut hmac = Message::new()
        .with("commitment-device", Value::text(DEVICE_NAME))
        .with("alg", Value::text(ALG_HMAC));
    if !sigs.is_empty() {
        let dict = |m: BTreeMap<String, Member>| {
            Value::bin(sf::serialize_dictionary(&m.into_iter().collect::<Vec<_>>()))
        };
        hmac.insert("signature", dict(sigs));
        hmac.insert("signature-input", dict(inputs));
    }
    commitments.insert(&id.to_human(), Value::Message(hmac));
    Ok(msg.with("commitments", Value::Message(commitments)))
}

/// Rebuilds the commitments of a decoded HTTP message from its `signature` and
/// `signature-input` fields (spec 03 §5.5), then adds the HMAC commitment (§5.6).
///
/// `tabm` is the TABM [`from_http`] returned and `sigs` the fields it set aside. Each
/// member `SN` of the `signature` dictionary becomes an RSA commitment whose ID is
/// `b64url(sha256(signature))` and whose committer is `b64url(sha256(modulus))`, the
/// modulus read from the `keyid` of the `SN` member of `signature-input` (base64url or
/// base64, optionally `publickey:`-prefixed). Without `signature` only the HMAC
/// commitment is added. The commitments are not verified here: see [`verify`].
///
/// # Errors
/// A field is not a structured-field dictionary, a signature is not a byte sequence,
/// a signature has no `signature-input` member, or that member has no usable `keyid`
/// or `alg`.
///
/// [`from_http`]: hb_core::httpsig::from_http
pub fn commitments_from_signatures(
    tabm: Message,
    sigs: &Signatures,
) -> Result<Message, HttpsigError> {
    let mut tabm = tabm;
    let mut commitments = commitments_of(&tabm);
    if let Some(sig_field) = &sigs.signature {
        let sig_dict = sf::parse_dictionary(sig_field).map_err(|e| {
            invalid(format!(
                "the `signature` field is not a structured-field dictionary: {e}"
            ))
        })?;
        let input_field = sigs
            .signature_input
            .as_ref()
            .ok_or_else(|| invalid("the message has `signature` but no `signature-input`"))?;
        let inputs = sf::parse_dictionary(input_field).map_err(|e| {
            invalid(format!(
                "the `signature-input` field is not a structured-field dictionary: {e}"
            ))
        })?;
        for (name, sig_member) in &sig_dict {
            let Member::Item(Item {
                bare: BareItem::ByteSeq(sig),
                ..
            }) = sig_member
            else {
                return Err(invalid(format!(
                    "signature `{name}` is not a byte sequence"
                )));
            };
            let input_member = member(&inputs, name).ok_or_else(|| {
                invalid(format!(
                    "signature `{name}` has no `signature-input` member"
                ))
            })?;
            let Member::InnerList(_, params) = input_member else {
                return Err(invalid(format!(
                    "the `signature-input` member `{name}` is not an inner list"
                )));
            };
            let param = |k: &str| {
                params
                    .iter()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| v.as_text())
            };
            let keyid = param("keyid").ok_or_else(|| {
                invalid(format!(
                    "the `signature-input` member `{name}` has no keyid"
                ))
            })?;
            let modulus = decode_keyid(keyid).ok_or_else(|| {
                invalid(format!(
                    "the keyid of signature `{name}` is not base64url or base64"
                ))
            })?;
            let alg = param("alg")
                .and_then(|a| std::str::from_utf8(a).ok())
                .ok_or_else(|| {
                    invalid(format!("the `signature-input` member `{name}` has no alg"))
                })?;
            let one =
                |m: &Member| Value::bin(sf::serialize_dictionary(&[(name.clone(), m.clone())]));
            let c = Message::new()
                .with("commitment-device", Value::text(DEVICE_NAME))
                .with("committer", Value::text(&address_of(&modulus)))
                .with("alg", Value::text(alg))
                .with("signature", one(sig_member))
                .with("signature-input", one(input_member));
            commitments.insert(&Id::sha256(sig).to_human(), Value::Message(c));
        }
    }
    tabm.insert("commitments", Value::Message(commitments));
    with_hmac_commitment_tabm(&tabm)
}

fn commitment<'a>(msg: &'a Message, id: &str) -> Result<&'a Message, HttpsigError> {
    msg.get("commitments")
        .and_then(Value::as_message)
        .and_then(|c| c.get(id))
        .and_then(Value::as_message)
        .ok_or_else(|| HttpsigError::NoCommitment(id.to_owned()))
}

/// Decodes an httpsig `keyid`: the RSA modulus in base64url or base64 (padded or not),
/// optionally prefixed `publickey:` (spec 07 §7).
pub fn decode_keyid(keyid: &[u8]) -> Option<Vec<u8>> {
    let k = keyid.strip_prefix(b"publickey:").unwrap_or(keyid);
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|e| e.decode(k).ok())
        .filter(|n| !n.is_empty())
}

/// Verifies commitment `commitment_id` of `msg` (§5.7). HMAC commitments are checked by
/// recomputing the HMAC ID; RSA commitments by rebuilding the signature base from the
/// message's HTTP encoding and the commitment's `signature-input` member.
///
/// A signed component missing from the message gives `Ok(false)`.
///
/// # Errors
/// No such commitment, an unsupported `alg`, malformed signature fields, or a message
/// that cannot be encoded.
pub fn verify(msg: &Message, commitment_id: &str) -> Result<bool, HttpsigError> {
    let c = commitment(msg, commitment_id)?;
    match c.get_str("alg") {
        Some(ALG_HMAC) => Ok(hmac_id(&to_tabm(msg)?)?.to_human() == commitment_id),
        Some(ALG_RSA) => verify_rsa(msg, c),
        other => Err(invalid(format!("unsupported alg {other:?}"))),
    }
}

/// The member `name` of a dictionary.
fn member<'a>(dict: &'a [(String, Member)], name: &str) -> Option<&'a Member> {
    dict.iter().find(|(n, _)| n == name).map(|(_, m)| m)
}

fn component_names(items: &[Item]) -> Result<Vec<String>, HttpsigError> {
    items
        .iter()
        .map(|i| match &i.bare {
            BareItem::String(s) => {
                String::from_utf8(s.clone()).map_err(|_| invalid("a component name is not UTF-8"))
            }
            _ => Err(invalid("a component is not a string")),
        })
        .collect()
}

/// The parameters as the reference rebuilds them on verification (§5.4): sorted by
/// name, only `created`, `expired`, `nonce`, `alg`, `keyid`, `tag`; integers stay
/// integers, everything else becomes a string.
fn verification_params(params: &Parameters) -> Parameters {
    let mut out: Parameters = params
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "created" | "expired" | "nonce" | "alg" | "keyid" | "tag"
            )
        })
        .map(|(k, v)| {
            let v = match v {
                BareItem::Integer(i) => BareItem::Integer(*i),
                BareItem::String(s) | BareItem::ByteSeq(s) => BareItem::String(s.clone()),
                BareItem::Token(t) => BareItem::string(t.as_bytes()),
                other => {
                    let mut text = Vec::new();
                    sf::write_bare_item(&mut text, other);
                    BareItem::String(text)
                }
            };
            (k.clone(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The parts of an RSA commitment a verifier needs.
struct RsaSignature {
    components: Vec<String>,
    params: Parameters,
    sig: Vec<u8>,
    modulus: Vec<u8>,
}

fn rsa_signature(c: &Message) -> Result<RsaSignature, HttpsigError> {
    let field = |name: &str| {
        c.get(name)
            .and_then(Value::as_bytes)
            .ok_or_else(|| invalid(format!("the commitment has no `{name}`")))
    };
    let inputs = sf::parse_dictionary(field("signature-input")?)
        .map_err(|e| invalid(format!("bad signature-input: {e}")))?;
    let sigs = sf::parse_dictionary(field("signature")?)
        .map_err(|e| invalid(format!("bad signature: {e}")))?;
    let committer = c
        .get_str("committer")
        .and_then(|a| b64url_decode(a.as_bytes()))
        .and_then(|a| <[u8; 32]>::try_from(a).ok());
    let name = match (committer, inputs.as_slice()) {
        (Some(address), _) => httpsig_name_of(&address),
        (None, [(only, _)]) => only.clone(),
        (None, _) => return Err(invalid("no committer to name the signature")),
    };
    let Some(Member::InnerList(items, params)) = member(&inputs, &name) else {
        return Err(invalid(format!("no signature-input member `{name}`")));
    };
    let Some(Member::Item(Item {
        bare: BareItem::ByteSeq(sig),
        ..
    })) = member(&sigs, &name)
    else {
        return Err(invalid(format!("no signature member `{name}`")));
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let alg = param("alg").and_then(BareItem::as_text);
    if alg != Some(ALG_RSA.as_bytes()) || c.get_str("alg") != Some(ALG_RSA) {
        return Err(invalid("signature-input alg is not rsa-pss-sha512"));
    }
    let modulus = param("keyid")
        .and_then(BareItem::as_text)
        .and_then(decode_keyid)
        .ok_or_else(|| invalid("missing or undecodable keyid"))?;
    Ok(RsaSignature {
        components: component_names(items)?,
        params: params.clone(),
        sig: sig.clone(),
        modulus,
    })
}

impl RsaSignature {
    /// Whether the signature verifies over `fields` with the parameter line `params`.
    fn verifies(
        &self,
        fields: &BTreeMap<String, Bytes>,
        params: &Parameters,
    ) -> Result<bool, HttpsigError> {
        let line = inner_list(&self.components, params);
        match signature_base(&self.components, fields, &line) {
            Ok(base) => Ok(rsa_pss::verify(
                &self.modulus,
                Hash::Sha512,
                &base,
                &self.sig,
            )),
            Err(HttpsigError::MissingComponent(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn verify_rsa(msg: &Message, c: &Message) -> Result<bool, HttpsigError> {
    let rsa = rsa_signature(c)?;
    let fields = component_fields(&to_tabm(msg)?)?;
    rsa.verifies(&fields, &verification_params(&rsa.params))
}

/// Verifies the RSA commitment `c` (as rebuilt by [`commitments_from_signatures`])
/// against the HTTP message exactly as it was received (RFC 9421 §3.2): the signature
/// base is built from the received field values, not from a re-encoding of the decoded
/// message, so signers whose encoding differs from ours in signed details (aoconnect's
/// unquoted `ao-types`, its list syntax) verify. `derived` gives the value of a derived
/// component (`path`, `method`, …) that did not arrive as a field. A signed
/// `content-digest` must match the body (either base64 alphabet).
///
/// # Errors
/// The commitment's signature fields are malformed.
pub fn verify_received(
    c: &Message,
    http: &HttpMessage,
    derived: &dyn Fn(&str) -> Option<Bytes>,
) -> Result<bool, HttpsigError> {
    let rsa = rsa_signature(c)?;
    let mut fields: BTreeMap<String, Bytes> = BTreeMap::new();
    for comp in &rsa.components {
        let name = comp.strip_prefix('@').unwrap_or(comp).to_ascii_lowercase();
        let value = http.headers.get(&name).cloned().or_else(|| {
            DERIVED_COMPONENTS
                .contains(&name.as_str())
                .then(|| derived(&name))
                .flatten()
        });
        let Some(value) = value else { return Ok(false) };
        if name == "content-digest" && !digest_matches(&value, http.body.as_deref()) {
            return Ok(false);
        }
        fields.insert(name, value);
    }
    Ok(rsa.verifies(&fields, &rsa.params)?
        || rsa.verifies(&fields, &verification_params(&rsa.params))?)
}

/// Why a received HTTP message was refused by [`from_http_verified`]; the texts complete
/// "the request …".
#[derive(Debug, Error)]
pub enum ReceivedError {
    /// The message (or a field describing its body) could not be decoded.
    #[error("could not be decoded: {0}")]
    Decode(#[from] CodecError),
    /// Its `signature`/`signature-input` fields are malformed.
    #[error("has malformed signature fields: {0}")]
    Malformed(HttpsigError),
    /// A signature does not verify.
    #[error("signature {0} does not verify")]
    BadSignature(String),
    /// A signature could not be checked.
    #[error("signature {0} could not be checked: {1}")]
    Unverifiable(String, HttpsigError),
}

/// A received HTTP message as a TABM, its signatures checked (spec 05 §2.2, 03 §5.5):
/// commitments are rebuilt from `signature`/`signature-input`; every RSA commitment
/// must verify over the fields as received ([`verify_received`]) or, failing that, the
/// reference's way (a re-encoding, [`verify`]); only the keys the signatures cover
/// survive, plus `commitments` with a recomputed HMAC commitment. An unsigned message
/// is returned whole.
///
/// # Errors
/// Undecodable input, malformed signature fields, or a signature that does not verify.
pub fn from_http_verified(
    http: &HttpMessage,
    derived: &dyn Fn(&str) -> Option<Bytes>,
) -> Result<Message, ReceivedError> {
    let (tabm, sigs) = hb_core::httpsig::from_http(http)?;
    if sigs.signature.is_none() {
        return Ok(tabm);
    }
    let tabm = commitments_from_signatures(tabm, &sigs).map_err(ReceivedError::Malformed)?;
    let rich = hb_core::structured::from_tabm(&tabm)?;
    let mut keep: std::collections::HashSet<String> =
        std::collections::HashSet::from(["commitments".to_owned()]);
    for (id, c) in commitments_of(&tabm).iter() {
        let Some(c) = c.as_message() else { continue };
        if c.get_str("alg") != Some(ALG_RSA) {
            continue;
        }
        let name = c
            .get("signature-input")
            .and_then(Value::as_bytes)
            .and_then(|b| sf::parse_dictionary(b).ok())
            .and_then(|d| d.into_iter().next().map(|(name, _)| name))
            .unwrap_or_else(|| "(unnamed)".to_owned());
        let ok = verify_received(c, http, derived).and_then(|ok| Ok(ok || verify(&rich, id)?));
        match ok {
            Ok(true) => {}
            Ok(false) => return Err(ReceivedError::BadSignature(name)),
            Err(e) => return Err(ReceivedError::Unverifiable(name, e)),
        }
        let keys = committed_keys(&rich, id).map_err(|e| ReceivedError::Unverifiable(name, e))?;
        keep.extend(keys);
    }
    let mut kept = Message::new();
    for (k, v) in tabm.iter() {
        if keep.contains(k.as_ref() as &str) {
            kept.insert(k, v.clone());
        }
    }
    with_hmac_commitment_tabm(&kept).map_err(ReceivedError::Malformed)
}

/// Whether a `content-digest` field (`sha-256=:<base64>:`, either alphabet, padded or
/// not) is the SHA-256 of `body`.
fn digest_matches(field: &[u8], body: Option<&[u8]>) -> bool {
    let want = content_digest(body.unwrap_or_default());
    if field == want.as_ref() {
        return true;
    }
    let Ok(dict) = sf::parse_dictionary(field) else {
        return lenient_digest(field, body.unwrap_or_default());
    };
    match member(&dict, "sha-256") {
        Some(Member::Item(Item {
            bare: BareItem::ByteSeq(d),
            ..
        })) => d.as_slice() == rsa::sha2::Sha256::digest(body.unwrap_or_default()).as_slice(),
        _ => lenient_digest(field, body.unwrap_or_default()),
    }
}

/// `sha-256=:<base64url>:`, which is not an RFC 8941 byte sequence.
fn lenient_digest(field: &[u8], body: &[u8]) -> bool {
    let Some(inner) = std::str::from_utf8(field)
        .ok()
        .and_then(|f| f.trim().strip_prefix("sha-256=:"))
        .and_then(|f| f.strip_suffix(':'))
    else {
        return false;
    };
    [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD, &STANDARD_NO_PAD]
        .iter()
        .any(|engine| {
            engine
                .decode(inner)
                .is_ok_and(|d| d.as_slice() == rsa::sha2::Sha256::digest(body).as_slice())
        })
}

/// The keys commitment `commitment_id` of `msg` covers (§5.8): the component names of
/// the first member of its `signature-input`, `signature` and `signature-input`, the
/// implicit (`empty-*` typed) keys when `ao-types` is signed, the top-level ID-like keys
/// when `ao-ids` is signed (an addition to §5.8, which lists `ao-ids` only), and the
/// body keys when `content-digest` is signed. A commitment without `signature-input`
/// covers nothing.
///
/// # Errors
/// No such commitment, malformed signature fields, or a message that cannot be encoded.
pub fn committed_keys(msg: &Message, commitment_id: &str) -> Result<Vec<String>, HttpsigError> {
    let c = commitment(msg, commitment_id)?;
    let Some(input) = c.get("signature-input").and_then(Value::as_bytes) else {
        return Ok(vec![]);
    };
    let inputs =
        sf::parse_dictionary(input).map_err(|e| invalid(format!("bad signature-input: {e}")))?;
    let Some((_, Member::InnerList(items, _))) = inputs.first() else {
        return Ok(vec![]);
    };
    let components: Vec<String> = component_names(items)?
        .into_iter()
        .map(|c| c.trim_start_matches('@').to_owned())
        .collect();
    let headers = to_http(&to_tabm(msg)?)?.headers;
    let mut keys = components.clone();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if components.iter().any(|c| c == "ao-types")
        && let Some(types) = headers.get("ao-types")
    {
        let dict =
            sf::parse_dictionary(types).map_err(|e| invalid(format!("bad ao-types: {e}")))?;
        for (k, m) in dict {
            if let Member::Item(i) = m
                && i.bare.as_text().is_some_and(|t| t.starts_with(b"empty-"))
            {
                keys.push(unescape_key(&k)?);
            }
        }
    }
    // The top-level ID-like keys travel inside `ao-ids` (§4.2 step 1): signing that
    // field signs them, so they are committed keys too (without this, keeping only the
    // committed keys of a signed message drops them and its signature breaks).
    if components.iter().any(|c| c == "ao-ids")
        && let Some(ids) = headers.get("ao-ids")
    {
        let dict = sf::parse_dictionary(ids).map_err(|e| invalid(format!("bad ao-ids: {e}")))?;
        keys.extend(dict.into_iter().map(|(k, _)| k));
    }
    if components.iter().any(|c| c == "content-digest") {
        keys.push("body".into());
        keys.push("inline-body-key".into());
        if let Some(k) = headers.get("inline-body-key") {
            keys.push(text(k));
        }
        if let Some(body_keys) = headers.get("body-keys") {
            let list =
                sf::parse_list(body_keys).map_err(|e| invalid(format!("bad body-keys: {e}")))?;
            for m in list {
                if let Member::Item(i) = m
                    && let Some(path) = i.bare.as_text()
                    && let Some(first) = path.split(|&b| b == b'/').find(|s| !s.is_empty())
                {
                    keys.push(text(first));
                }
            }
        }
    }
    keys.push("signature-input".into());
    keys.push("signature".into());
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    Ok(keys)
}

/// The `httpsig@1.0` commitment device: `commit` (signs with [`HttpsigDevice::wallet`]),
/// `verify` (the request's `commitment`, or every signed commitment), `committed` and
/// `id` (the HMAC ID).
#[derive(Debug, Clone, Default)]
pub struct HttpsigDevice {
    /// The key `commit` signs with; without one `commit` fails.
    pub wallet: Option<Arc<Wallet>>,
}

impl HttpsigDevice {
    /// A device that signs with `wallet`.
    pub fn new(wallet: Arc<Wallet>) -> Self {
        HttpsigDevice {
            wallet: Some(wallet),
        }
    }
}

fn device_error(func: &str, e: &HttpsigError) -> ResolveError {
    ResolveError::call(DEVICE_NAME, func, e.to_string())
}

impl Device for HttpsigDevice {
    fn name(&self) -> &'static str {
        DEVICE_NAME
    }

    fn functions(&self) -> &'static [&'static str] {
        &["commit", "verify", "committed", "id"]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, _ctx: &Ctx) -> DeviceResult {
        match call {
            Call::Function("commit") => {
                let wallet = self.wallet.as_ref().ok_or_else(|| {
                    ResolveError::call(
                        DEVICE_NAME,
                        "commit",
                        "this node has no wallet configured for httpsig@1.0 commitments",
                    )
                })?;
                let signed = commit(base, wallet).map_err(|e| device_error("commit", &e))?;
                Ok(Outcome::ok(Value::Message(signed)))
            }
            Call::Function("verify") => {
                let ids: Vec<String> = match req.get_str("commitment") {
                    Some(id) => vec![id.to_owned()],
                    None => commitments_of(base)
                        .iter()
                        .filter(|(_, c)| {
                            c.as_message().is_some_and(|c| c.get("committer").is_some())
                        })
                        .map(|(k, _)| k.to_string())
                        .collect(),
                };
                for id in ids {
                    match verify(base, &id) {
                        Ok(true) => {}
                        Ok(false) => return Ok(Outcome::ok(Value::boolean(false))),
                        Err(e) => return Ok(Outcome::error(Value::text(&e.to_string()))),
                    }
                }
                Ok(Outcome::ok(Value::boolean(true)))
            }
            Call::Function("committed") => {
                let all = commitments_of(base);
                let id = req
                    .get_str("commitment")
                    .map(str::to_owned)
                    .or_else(|| {
                        all.iter()
                            .find(|(_, c)| c.as_message().is_some_and(is_hmac))
                            .map(|(k, _)| k.to_string())
                    })
                    .or_else(|| all.keys().next().map(|k| k.to_string()));
                let keys = match id {
                    Some(id) => {
                        committed_keys(base, &id).map_err(|e| device_error("committed", &e))?
                    }
                    None => vec![],
                };
                Ok(Outcome::ok(Value::list(
                    keys.iter().map(|k| Value::text(k)).collect(),
                )))
            }
            Call::Function("id") => {
                let tabm = to_tabm(base)?;
                Ok(Outcome::ok(Value::text(&hmac_id(&tabm)?.to_human())))
            }
            Call::Function(other) | Call::Handler(other) | Call::Default(other) => {
                Err(ResolveError::call(DEVICE_NAME, other, "no such function"))
            }
        }
    }
}
