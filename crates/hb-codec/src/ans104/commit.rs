//! `ans104@1.0` commitments (spec 03 §7.8) and the [`Ans104Device`].
//!
//! A commitment is `{commitment-device: "ans104@1.0", alg: "rsa-pss", committer, owner,
//! signature [, original-tags] [, trusted-keys] [, hashpath]}` under
//! `b64url(sha256(signature))`, so a message signed this way has that ID as its
//! `message@1.0` ID (mode `all`, and the default, since ANS-104 allows one signature
//! and adds no HMAC commitment).

use std::collections::HashSet;
use std::sync::Arc;

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::resolve::{Ctx, ResolveError};
use hb_core::sf::{self, Member};
use hb_core::structured::{to_tabm, unescape_key};
use hb_core::value::{Message, Value, message_to_list, normalize_key};

use super::convert::{
    MAX_TAG_VALUE_INLINE, ans104_commitments, deserialize_verified, item_to_tabm, merge_fields,
    message_to_item, original_tags, verify_tree,
};
use super::item::DataItem;
use super::{ALG_RSA, ALG_UNSIGNED, Ans104Error, CONTENT_TYPE, DEVICE_NAME, TRUSTED_KEYS};
use crate::wallet::{Wallet, address_of};

/// Keys every ANS-104 commitment covers (the record fields).
const ALWAYS_COMMITTED: [&str; 6] = ["id", "last_tx", "owner", "target", "signature", "data"];

/// Signs `msg` (a rich message) as an ANS-104 data item with `wallet` (§7.8).
///
/// The result is `msg` without a top-level `hashpath` (moved into the commitment; it is
/// signed as a tag) and with `commitments` = exactly the new commitment: ANS-104 carries
/// one signature, so earlier commitments (an `unsigned` ans104 one, httpsig ones) are
/// replaced. The `original-tags` of an earlier `ans104@1.0` commitment are honoured
/// and kept. Private keys are not signed but stay in the result.
///
/// # Errors
/// The message cannot be encoded (see [`message_to_item`]), or signing fails.
pub fn commit(msg: &Message, wallet: &Wallet) -> Result<Message, Ans104Error> {
    let public = msg.without_private();
    let original = ans104_commitments(&public)
        .into_iter()
        .find_map(|(_, c)| c.get("original-tags").cloned());
    let hashpath = public.get("hashpath").cloned();
    let mut base = public.without("commitments");
    if let Some(o) = &original {
        base.insert("original-tags", o.clone());
    }
    let item = message_to_item(&base)?.signed(wallet)?;
    let mut c = Message::new()
        .with("commitment-device", DEVICE_NAME)
        .with("alg", ALG_RSA)
        .with("committer", wallet.address())
        .with("owner", Value::bin(item.owner.to_vec()))
        .with("signature", Value::bin(item.signature.to_vec()));
    if let Some(o) = original {
        c.insert("original-tags", o);
    }
    if let Some(h) = hashpath {
        c.insert("hashpath", h);
    }
    Ok(msg
        .clone()
        .without("hashpath")
        .with("commitments", Message::new().with(&item.id().to_human(), c)))
}

fn commitment<'a>(msg: &'a Message, id: &str) -> Result<&'a Message, Ans104Error> {
    let c = msg
        .get("commitments")
        .and_then(Value::as_message)
        .and_then(|c| c.get(id))
        .and_then(Value::as_message)
        .ok_or_else(|| Ans104Error::NoCommitment(id.to_owned()))?;
    match c.get_str("commitment-device") {
        Some(DEVICE_NAME) => Ok(c),
        other => Err(Ans104Error::InvalidCommitment(format!(
            "commitment `{id}` was made by {}, not {DEVICE_NAME}",
            other.unwrap_or("an unnamed device")
        ))),
    }
}

/// The data item commitment `c` of `msg` claims to sign: `msg` without private keys,
/// `commitments` and the `committer`/`alg` that `message@1.0` copies in from the
/// commitment, with the commitment's fields merged.
fn rebuild(msg: &Message, c: &Message) -> Result<DataItem, Ans104Error> {
    let mut m = msg.without_private().without("commitments");
    for k in ["committer", "alg"] {
        if m.get(k).is_some() && m.get(k) == c.get(k) {
            m.remove(k);
        }
    }
    merge_fields(&mut m, c);
    message_to_item(&m)
}

/// Verifies commitment `commitment_id` of `msg` (§7.8): rebuilds the data item from the
/// message and the commitment's owner, signature and original tags, and checks that its
/// ID is `commitment_id`, its signature verifies and the `committer` is the owner's
/// address. An `unsigned` commitment verifies when `commitment_id` is the rebuilt
/// item's unsigned ID. A message that no longer matches its `original-tags` gives
/// `Ok(false)`.
///
/// # Errors
/// No such commitment, a commitment of another device or with an unknown `alg`, or a
/// message that cannot be encoded as a data item.
pub fn verify(msg: &Message, commitment_id: &str) -> Result<bool, Ans104Error> {
    let c = commitment(msg, commitment_id)?;
    let item = match rebuild(msg, c) {
        Ok(item) => item,
        Err(Ans104Error::InvalidOriginalTags(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    match c.get_str("alg") {
        Some(ALG_RSA) => {
            if item.id().to_human() != commitment_id {
                return Ok(false);
            }
            if let Some(who) = c.get("committer")
                && who.as_str() != Some(address_of(&item.owner).as_str())
            {
                return Ok(false);
            }
            Ok(item.verify())
        }
        Some(ALG_UNSIGNED) => Ok(item.unsigned_id().to_human() == commitment_id),
        other => Err(Ans104Error::InvalidCommitment(format!(
            "unsupported alg {other:?}"
        ))),
    }
}

/// The keys commitment `commitment_id` of `msg` covers (§7.8): the (normalised) names
/// in its [`TRUSTED_KEYS`] list, or else of its original tags, or, without either and
/// only if it verifies, of the rebuilt item's tags; plus the keys that travel as
/// bundle items (nested messages, binaries too large or not UTF-8 for a tag); the
/// `empty-*` keys of `ao-types` when `ao-types` is committed; and always `id`,
/// `last_tx`, `owner`, `target`, `signature`, `data`. A commitment without trusted
/// keys or original tags that does not verify covers nothing.
///
/// `trusted-keys` are taken as they are, as the reference does: they are the word of
/// whoever built the commitment (this node's gateway store, for an item whose signature
/// it could not check; spec 05 §6.5), not a proof. [`verify()`] still answers `false`
/// for such a commitment.
///
/// # Errors
/// No such commitment, malformed `trusted-keys`, `original-tags` or `ao-types`, or a
/// message that cannot be encoded.
pub fn committed_keys(msg: &Message, commitment_id: &str) -> Result<Vec<String>, Ans104Error> {
    let c = commitment(msg, commitment_id)?;
    let mut names: Vec<String> = match (c.get(TRUSTED_KEYS), c.get("original-tags")) {
        (Some(t), _) => trusted_keys(t)?,
        (None, Some(o)) => original_tags(o)?
            .into_iter()
            .map(|(n, _)| tag_key(&n))
            .collect(),
        (None, None) => {
            if !verify(msg, commitment_id)? {
                return Ok(vec![]);
            }
            rebuild(msg, c)?
                .tags
                .into_iter()
                .map(|(n, _)| tag_key(&n))
                .collect()
        }
    };
    let tabm = to_tabm(&msg.without_private().without("commitments"))?;
    for (k, v) in tabm.iter() {
        let is_item = match v {
            Value::Message(_) => true,
            Value::Binary(b) => b.len() > MAX_TAG_VALUE_INLINE || std::str::from_utf8(b).is_err(),
            _ => false,
        };
        if is_item {
            names.push(k.to_string());
        }
    }
    if names.iter().any(|n| n == "ao-types")
        && let Some(types) = tabm.get("ao-types").and_then(Value::as_bytes)
    {
        let dict = sf::parse_dictionary(types).map_err(|e| {
            Ans104Error::InvalidCommitment(format!("the message's ao-types do not parse: {e}"))
        })?;
        for (k, m) in dict {
            if let Member::Item(i) = m
                && i.bare.as_text().is_some_and(|t| t.starts_with(b"empty-"))
            {
                names.push(unescape_key(&k)?);
            }
        }
    }
    names.extend(ALWAYS_COMMITTED.iter().map(|k| (*k).to_owned()));
    let mut seen = HashSet::new();
    names.retain(|k| {
        !matches!(
            k.as_str(),
            "bundle-format" | "bundle-version" | "bundle-map"
        ) && seen.insert(k.clone())
    });
    Ok(names)
}

/// Reads [`TRUSTED_KEYS`]: a numbered map (or list) of key names, normalised.
fn trusted_keys(v: &Value) -> Result<Vec<String>, Ans104Error> {
    let bad = |r: String| Ans104Error::InvalidCommitment(format!("its {TRUSTED_KEYS} {r}"));
    let list = match v {
        Value::Message(m) => {
            message_to_list(m).ok_or_else(|| bad("have keys other than 1..N".into()))?
        }
        Value::List(l) => l.as_ref().clone(),
        other => return Err(bad(format!("are a {}, not a list", other.type_name()))),
    };
    list.iter()
        .enumerate()
        .map(|(i, k)| {
            k.as_str()
                .map(|k| normalize_key(k).into_owned())
                .ok_or_else(|| bad(format!("entry {} is not text", i + 1)))
        })
        .collect()
}

/// The message key a tag name becomes: lower-cased, except ID-like names, which keep
/// their case (spec 01 §2.2), as the conversion of an item to a message names them.
fn tag_key(name: &[u8]) -> String {
    normalize_key(&String::from_utf8_lossy(name)).into_owned()
}

/// The `ans104@1.0` device: `commit` (signs with [`Ans104Device::wallet`]), `verify`
/// (the request's `commitment`, or every signed `ans104@1.0` commitment), `committed`,
/// `id` (the signed ID, or the unsigned ID of an unsigned message), `serialize` /
/// `deserialize` (message ↔ `{content-type, body}` with the item bytes; incoming
/// items must verify), `to` (message → item bytes), `from` (item bytes → TABM) and
/// `content_type`.
#[derive(Debug, Clone, Default)]
pub struct Ans104Device {
    /// The key `commit` signs with; without one `commit` fails.
    pub wallet: Option<Arc<Wallet>>,
}

impl Ans104Device {
    /// A device that signs with `wallet`.
    pub fn new(wallet: Arc<Wallet>) -> Self {
        Ans104Device {
            wallet: Some(wallet),
        }
    }
}

fn device_error(func: &str, e: &Ans104Error) -> ResolveError {
    ResolveError::call(DEVICE_NAME, func, e.to_string())
}

impl Device for Ans104Device {
    fn name(&self) -> &'static str {
        DEVICE_NAME
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "commit",
            "verify",
            "committed",
            "id",
            "to",
            "from",
            "serialize",
            "deserialize",
            "content_type",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, _ctx: &Ctx) -> DeviceResult {
        let Call::Function(func) = call else {
            return Err(ResolveError::call(
                DEVICE_NAME,
                call.key(),
                "no such function",
            ));
        };
        match func {
            "commit" => {
                let wallet = self.wallet.as_ref().ok_or_else(|| {
                    ResolveError::call(
                        DEVICE_NAME,
                        "commit",
                        "this node has no wallet configured for ans104@1.0 commitments",
                    )
                })?;
                let signed = commit(base, wallet).map_err(|e| device_error("commit", &e))?;
                Ok(Outcome::ok(Value::Message(signed)))
            }
            "verify" => {
                let ids: Vec<String> = match req.get_str("commitment") {
                    Some(id) => vec![id.to_owned()],
                    None => ans104_commitments(base)
                        .into_iter()
                        .filter(|(_, c)| c.get("committer").is_some())
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
            "committed" => {
                let ours = ans104_commitments(base);
                let id = req.get_str("commitment").map(str::to_owned).or_else(|| {
                    ours.iter()
                        .find(|(_, c)| c.get_str("alg") == Some(ALG_RSA))
                        .or(ours.first())
                        .map(|(k, _)| k.to_string())
                });
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
            "id" => {
                let item = message_to_item(base).map_err(|e| device_error("id", &e))?;
                let id = if item.is_signed() {
                    item.id()
                } else {
                    item.unsigned_id()
                };
                Ok(Outcome::ok(Value::from(id.to_human())))
            }
            "to" => {
                let item = message_to_item(base).map_err(|e| device_error("to", &e))?;
                Ok(Outcome::ok(Value::bin(item.to_bytes())))
            }
            "serialize" => {
                let item = message_to_item(base).map_err(|e| device_error("serialize", &e))?;
                Ok(Outcome::ok(
                    Message::new()
                        .with("content-type", CONTENT_TYPE)
                        .with("body", Value::bin(item.to_bytes())),
                ))
            }
            "from" => match hb_core::device::payload(base, req, "ANS-104 data item") {
                Ok(bytes) => {
                    let tabm = DataItem::parse_bytes(&bytes)
                        .and_then(|item| verify_tree(&item).map(|()| item))
                        .and_then(|item| item_to_tabm(&item));
                    Ok(match tabm {
                        Ok(tabm) => Outcome::ok(Value::Message(tabm)),
                        Err(e) => Outcome::error_status(400, &e.to_string()),
                    })
                }
                Err(refusal) => Ok(refusal),
            },
            "deserialize" => match hb_core::device::payload(base, req, "ANS-104 data item") {
                Ok(bytes) => Ok(match deserialize_verified(&bytes) {
                    Ok(msg) => Outcome::ok(Value::Message(msg)),
                    Err(e) => Outcome::error_status(400, &e.to_string()),
                }),
                Err(refusal) => Ok(refusal),
            },
            "content_type" => Ok(Outcome::ok(CONTENT_TYPE)),
            other => Err(ResolveError::call(DEVICE_NAME, other, "no such function")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::ans104::item_to_message;
    use std::collections::BTreeSet;

    fn key1() -> Wallet {
        Wallet::from_jwk_json(include_bytes!("../../../../tests/fixtures/key-1.json")).unwrap()
    }

    /// A signed item with `tags`, and the same item with its first tag's value changed
    /// after signing (what a gateway that misreports a tag serves): it keeps its ID but
    /// no longer verifies.
    fn signed_and_altered(tags: &[(&str, &str)]) -> (DataItem, DataItem) {
        let item = DataItem {
            tags: tags
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            data: bytes::Bytes::from_static(b"some data"),
            ..DataItem::default()
        }
        .signed(&key1())
        .unwrap();
        let mut altered = item.clone();
        altered.tags[0].1 = b"altered".to_vec();
        assert!(!altered.verify());
        assert_eq!(altered.id(), item.id());
        (item, altered)
    }

    /// `msg` with `trusted` as the `trusted-keys` of its one commitment.
    fn with_trusted(msg: &Message, trusted: Value) -> (Message, String) {
        let (id, c) = ans104_commitments(msg).pop().unwrap();
        let c = c.with(TRUSTED_KEYS, trusted);
        let id = id.to_string();
        (
            msg.clone().with("commitments", Message::new().with(&id, c)),
            id,
        )
    }

    fn names(list: &[&str]) -> Value {
        Value::Message(hb_core::value::list_to_message(
            &list.iter().map(|n| Value::text(n)).collect::<Vec<_>>(),
        ))
    }

    fn set(keys: Vec<String>) -> BTreeSet<String> {
        keys.into_iter().collect()
    }

    const ALWAYS: [&str; 6] = ["data", "id", "last_tx", "owner", "signature", "target"];

    #[test]
    fn trusted_keys_are_the_committed_keys_of_a_commitment_that_does_not_verify() {
        let (_, altered) = signed_and_altered(&[("a", "1"), ("b", "2")]);
        let msg = item_to_message(&altered).unwrap();
        let id = altered.id().to_human();
        assert!(!verify(&msg, &id).unwrap());
        assert_eq!(committed_keys(&msg, &id).unwrap(), Vec::<String>::new());

        let (trusted, id2) = with_trusted(&msg, names(&["a", "B"]));
        assert_eq!(id2, id);
        let expected: BTreeSet<String> = ["a", "b"]
            .iter()
            .chain(ALWAYS.iter())
            .map(|k| (*k).to_owned())
            .collect();
        assert_eq!(set(committed_keys(&trusted, &id).unwrap()), expected);
        // The note is not a proof.
        assert!(!verify(&trusted, &id).unwrap());
        // A list works as well as a numbered map.
        let (listed, _) = with_trusted(&msg, Value::list(vec![Value::text("a"), Value::text("b")]));
        assert_eq!(set(committed_keys(&listed, &id).unwrap()), expected);
    }

    #[test]
    fn trusted_keys_come_before_original_tags() {
        let (_, altered) = signed_and_altered(&[("App-Name", "x"), ("Zeta", "z")]);
        let msg = item_to_message(&altered).unwrap();
        let id = altered.id().to_human();
        let c = commitment(&msg, &id).unwrap();
        assert!(c.get("original-tags").is_some(), "mixed case: {c:?}");
        let (trusted, _) = with_trusted(&msg, names(&["app-name"]));
        let keys = set(committed_keys(&trusted, &id).unwrap());
        assert!(
            keys.contains("app-name") && !keys.contains("zeta"),
            "{keys:?}"
        );
    }

    #[test]
    fn trusted_keys_are_not_part_of_the_data_item() {
        let (item, _) = signed_and_altered(&[("a", "1"), ("b", "2")]);
        let msg = item_to_message(&item).unwrap();
        let (trusted, id) = with_trusted(&msg, names(&["a", "b"]));
        assert_eq!(message_to_item(&trusted).unwrap(), item);
        assert!(verify(&trusted, &id).unwrap());
    }

    #[test]
    fn malformed_trusted_keys_are_an_error() {
        let (_, altered) = signed_and_altered(&[("a", "1")]);
        let msg = item_to_message(&altered).unwrap();
        for bad in [
            Value::text("a"),
            Value::Message(Message::new().with("x", "a")),
            Value::list(vec![Value::Message(Message::new())]),
        ] {
            let (m, id) = with_trusted(&msg, bad.clone());
            let e = committed_keys(&m, &id).unwrap_err();
            assert!(e.to_string().contains(TRUSTED_KEYS), "{bad:?}: {e}");
        }
    }
}
