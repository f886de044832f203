//! Messages ↔ data items (spec 03 §7.6, §7.7).
//!
//! The TABM-level functions ([`tabm_to_item`], [`item_to_tabm`]) mirror the reference
//! codec's `to`/`from`; the rich-message helpers ([`message_to_item`],
//! [`item_to_message`], [`deserialize_verified`]) add the structured codec on top and
//! are what the HTTP layer and the CLI use.
//!
//! Encoding (TABM → item):
//! * an `ans104@1.0` commitment (at most one) is merged into the message: its `owner`,
//!   `signature`, `original-tags` (and `hashpath`) fill the item (its `trusted-keys`
//!   do not: they are the node's note, not signed content);
//! * `last_tx`, `target`, `owner`, `signature`, `data` are record fields (a 43-character
//!   value is base64url-decoded to 32 bytes when it decodes: for `data` too, a lossy
//!   quirk of the reference we keep for ID compatibility); `format`, `id`, `unsigned_id`
//!   and `tags` are ignored;
//! * other binaries that are UTF-8 and at most 128 bytes are tags, in key order; all
//!   other values (larger or non-UTF-8 binaries, nested messages) are items of a bundle
//!   ([`super::bundle`]); binaries are wrapped in an item tagged `ao-type: binary`;
//! * `original-tags`, when present, replace the tags, after checking that the message
//!   holds exactly the tags they record.
//!
//! Decoding (item → TABM) reverses this: tags become keys (lower-cased; duplicate
//! names become an RFC 8941 list of strings), bundles are unpacked, and a signed item's
//! `owner` and `signature` move into its commitment, with `original-tags` whenever the
//! message alone would not give back the item's exact tag list.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use hb_core::sf::{self, BareItem, Item, Member};
use hb_core::structured::{from_tabm, to_tabm};
use hb_core::value::{Key, Message, Value, is_private, message_to_list, normalize_key};

use super::bundle::{self, is_bundle_tag};
use super::item::{DataItem, FIXED_FIELD_LEN, OWNER_LEN, SIGNATURE_LEN, Tag, check_tag_limits};
use super::{ALG_RSA, ALG_UNSIGNED, Ans104Error, DEVICE_NAME, MAX_DEPTH, TRUSTED_KEYS};
use crate::wallet::address_of;

/// Binary values up to this size (and valid UTF-8) become tags; larger ones items.
pub const MAX_TAG_VALUE_INLINE: usize = 128;

/// Keys that name record fields the encoder ignores (they are recomputed or unused).
const IGNORED_FIELDS: [&str; 4] = ["format", "id", "unsigned_id", "tags"];

/// Tag names that do not come back as themselves when the message is encoded again:
/// record fields and commitment fields.
const NON_TAG_KEYS: [&str; 14] = [
    "format",
    "id",
    "unsigned_id",
    "last_tx",
    "owner",
    "tags",
    "target",
    "data",
    "signature",
    "original-tags",
    "commitments",
    "commitment-device",
    "committer",
    "alg",
];

/// Base64url that, like the reference's decoder, ignores padding and trailing bits.
const LENIENT_B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn key_of(name: &str) -> Key {
    Key::from(normalize_key(name).as_ref())
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------
// Message -> item
// ---------------------------------------------------------------------------------

/// Converts a rich message to a data item (§7.6): private keys are dropped, an existing
/// `ans104@1.0` commitment's signature, owner and original tags are honoured (so a
/// message decoded from a signed item gives back the identical item), commitments of
/// other devices are ignored.
///
/// # Errors
/// Several `ans104@1.0` commitments, a field key of the wrong size, a value the
/// structured codec cannot encode, tags out of limits, or keys that do not match the
/// commitment's `original-tags`.
pub fn message_to_item(msg: &Message) -> Result<DataItem, Ans104Error> {
    build_item(&to_tabm(&msg.without_private())?, 0)
}

/// Converts a TABM to a data item (the reference codec's `to`); as [`message_to_item`]
/// without the structured encoding.
///
/// # Errors
/// As [`message_to_item`].
pub fn tabm_to_item(tabm: &Message) -> Result<DataItem, Ans104Error> {
    build_item(tabm, 0)
}

/// The `ans104@1.0` commitments of `msg`, by ID.
pub(crate) fn ans104_commitments(msg: &Message) -> Vec<(Key, Message)> {
    match msg.get("commitments") {
        Some(Value::Message(all)) => all
            .iter()
            .filter_map(|(k, c)| Some((k.clone(), c.as_message()?.clone())))
            .filter(|(_, c)| c.get_str("commitment-device") == Some(DEVICE_NAME))
            .collect(),
        _ => Vec::new(),
    }
}

/// `msg` without `commitments`, with the fields of its one `ans104@1.0` commitment
/// (except `commitment-device`, `committer`, `alg`, `trusted-keys`) merged in.
fn merge_commitment(msg: &Message) -> Result<Message, Ans104Error> {
    if !matches!(msg.get("commitments"), Some(Value::Message(_))) {
        return Ok(msg.clone());
    }
    let ours = ans104_commitments(msg);
    let mut out = msg.clone().without("commitments");
    match ours.as_slice() {
        [] => {}
        [(_, c)] => merge_fields(&mut out, c),
        many => return Err(Ans104Error::MultipleSignatures(many.len())),
    }
    Ok(out)
}

/// Copies a commitment's fields, except `commitment-device`, `committer`, `alg` and
/// `trusted-keys` (which say who vouches for what, not what was signed), into `msg`.
pub(crate) fn merge_fields(msg: &mut Message, commitment: &Message) {
    for (k, v) in commitment.iter() {
        if !matches!(
            k.as_ref(),
            "commitment-device" | "committer" | "alg" | TRUSTED_KEYS
        ) {
            msg.insert_key(k.clone(), v.clone());
        }
    }
}

/// A 43-character value that decodes as base64url becomes its 32 bytes (the
/// reference's ID coercion of record fields).
fn coerce_id(b: &Bytes) -> Bytes {
    if b.len() == 43
        && let Ok(raw) = LENIENT_B64URL.decode(b)
        && raw.len() == 32
    {
        return Bytes::from(raw);
    }
    b.clone()
}

fn fixed<const N: usize>(field: &'static str, v: &Value) -> Result<[u8; N], Ans104Error> {
    let Value::Binary(b) = v else {
        return Err(Ans104Error::BadField {
            field,
            reason: format!("it is a {}, not a binary", v.type_name()),
        });
    };
    let b = coerce_id(b);
    <[u8; N]>::try_from(b.as_ref()).map_err(|_| Ans104Error::BadField {
        field,
        reason: if N == FIXED_FIELD_LEN {
            format!(
                "it must be 32 bytes (or 43 characters of base64url), not {} bytes",
                b.len()
            )
        } else {
            format!("it must be {N} bytes, not {}", b.len())
        },
    })
}

/// Reads `original-tags` (a numbered map of `{name, value}`, rich or TABM form; an
/// absent value is the empty string) as a tag list.
pub(crate) fn original_tags(v: &Value) -> Result<Vec<Tag>, Ans104Error> {
    let bad = |r: &str| Ans104Error::BadOriginalTags(r.to_owned());
    let list = match v {
        Value::Message(m) => message_to_list(m).ok_or_else(|| bad("its keys are not 1..N"))?,
        Value::List(l) => l.as_ref().clone(),
        other => {
            return Err(bad(&format!(
                "it is a {}, not a numbered map",
                other.type_name()
            )));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Message(e) = entry else {
                return Err(bad(&format!("entry {} is not a map", i + 1)));
            };
            let name = e
                .get("name")
                .and_then(Value::as_bytes)
                .ok_or_else(|| bad(&format!("entry {} has no binary `name`", i + 1)))?;
            let value = match e.get("value") {
                None => &[][..],
                Some(Value::Binary(b)) => b.as_ref(),
                Some(_) => return Err(bad(&format!("entry {}'s `value` is not a binary", i + 1))),
            };
            Ok((name.to_vec(), value.to_vec()))
        })
        .collect()
}

fn wrap_binary(b: Bytes) -> DataItem {
    DataItem {
        tags: vec![(b"ao-type".to_vec(), b"binary".to_vec())],
        data: b,
        ..DataItem::default()
    }
}

fn inline_tag_value(b: &[u8]) -> bool {
    b.len() <= MAX_TAG_VALUE_INLINE && std::str::from_utf8(b).is_ok()
}

/// TABM -> item, at nesting level `depth`.
fn build_item(tabm: &Message, depth: usize) -> Result<DataItem, Ans104Error> {
    if depth > MAX_DEPTH {
        return Err(Ans104Error::TooDeep);
    }
    let tabm = merge_commitment(tabm)?;
    let mut rest: BTreeMap<Key, Value> = tabm
        .iter()
        .filter(|(k, _)| !is_private(k))
        .map(|(k, v)| (key_of(k), v.clone()))
        .collect();
    let original = rest
        .remove("original-tags")
        .map(|v| original_tags(&v))
        .transpose()?
        .filter(|o| !o.is_empty());
    for k in IGNORED_FIELDS {
        rest.remove(k);
    }
    let anchor = rest
        .remove("last_tx")
        .map(|v| fixed::<FIXED_FIELD_LEN>("last_tx", &v))
        .transpose()?;
    let target = rest
        .remove("target")
        .map(|v| fixed::<FIXED_FIELD_LEN>("target", &v))
        .transpose()?;
    let owner = rest
        .remove("owner")
        .map(|v| fixed::<OWNER_LEN>("owner", &v))
        .transpose()?;
    let signature = rest
        .remove("signature")
        .map(|v| fixed::<SIGNATURE_LEN>("signature", &v))
        .transpose()?;
    let data = rest.remove("data");

    // Keys the original tags name stay tags whatever their size.
    let original_names: BTreeSet<Key> = original
        .iter()
        .flatten()
        .map(|(n, _)| key_of(&text_of(n)))
        .collect();
    let mut tags: Vec<Tag> = Vec::new();
    let mut items: BTreeMap<String, DataItem> = BTreeMap::new();
    for (k, v) in rest {
        match v {
            Value::Binary(b) if inline_tag_value(&b) || original_names.contains(&k) => {
                tags.push((k.as_bytes().to_vec(), b.to_vec()));
            }
            Value::Binary(b) => {
                items.insert(k.to_string(), wrap_binary(b));
            }
            Value::Message(m) => {
                items.insert(k.to_string(), build_item(&m, depth + 1)?);
            }
            other => {
                return Err(Ans104Error::Unencodable {
                    key: k.to_string(),
                    ty: other.type_name(),
                });
            }
        }
    }

    if let Some(orig) = original {
        check_original_tags(&orig, &tags)?;
        tags = orig;
    }

    let mut data_bytes = Bytes::new();
    match data {
        None => {}
        Some(Value::Binary(b)) if b.is_empty() => {}
        Some(Value::Binary(b)) => {
            let b = coerce_id(&b);
            if items.is_empty() {
                data_bytes = b;
            } else {
                items.insert("data".to_owned(), wrap_binary(b));
            }
        }
        Some(Value::Message(m)) => {
            items.insert("data".to_owned(), build_item(&m, depth + 1)?);
        }
        Some(other) => {
            return Err(Ans104Error::Unencodable {
                key: "data".to_owned(),
                ty: other.type_name(),
            });
        }
    }
    if !items.is_empty() {
        let (manifest, bundle_data) = bundle::build(&items);
        tags = bundle::with_bundle_tags(tags, &manifest.unsigned_id());
        data_bytes = Bytes::from(bundle_data);
    }
    check_tag_limits(&tags)?;
    Ok(DataItem {
        signature: signature.unwrap_or([0; SIGNATURE_LEN]),
        owner: owner.unwrap_or([0; OWNER_LEN]),
        target,
        anchor,
        tags,
        data: data_bytes,
    })
}

/// Checks that the message's tag keys are exactly those the original tags imply
/// (ignoring the bundle tags, which decoding removes).
fn check_original_tags(original: &[Tag], tags: &[Tag]) -> Result<(), Ans104Error> {
    let expected =
        dedup_tags(original).map_err(|e| Ans104Error::InvalidOriginalTags(e.to_string()))?;
    let given: BTreeMap<Key, Bytes> = tags
        .iter()
        .map(|(n, v)| (key_of(&text_of(n)), Bytes::copy_from_slice(v)))
        .collect();
    let keys: BTreeSet<&Key> = expected.keys().chain(given.keys()).collect();
    for k in keys {
        if is_bundle_tag(k.as_bytes()) {
            continue;
        }
        match (expected.get(k), given.get(k)) {
            (Some(e), Some(g)) if e == g => {}
            (Some(e), Some(g)) => {
                return Err(Ans104Error::InvalidOriginalTags(format!(
                    "`{k}` is {:?} in the message but {:?} in the original tags",
                    text_of(g),
                    text_of(e)
                )));
            }
            (Some(_), None) => {
                return Err(Ans104Error::InvalidOriginalTags(format!(
                    "`{k}` is in the original tags but not a tag of the message"
                )));
            }
            (None, _) => {
                return Err(Ans104Error::InvalidOriginalTags(format!(
                    "`{k}` is not in the original tags"
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Item -> message
// ---------------------------------------------------------------------------------

/// Tags as a map of normalised names; values of duplicate names are combined into an
/// RFC 8941 list of strings, in tag order (§7.7 step 2).
///
/// # Errors
/// A tag name that is not UTF-8.
pub fn dedup_tags(tags: &[Tag]) -> Result<BTreeMap<Key, Bytes>, Ans104Error> {
    let mut groups: BTreeMap<Key, Vec<&[u8]>> = BTreeMap::new();
    for (i, (name, value)) in tags.iter().enumerate() {
        let name = std::str::from_utf8(name).map_err(|_| Ans104Error::NonUtf8TagName(i + 1))?;
        groups.entry(key_of(name)).or_default().push(value);
    }
    Ok(groups
        .into_iter()
        .map(|(k, values)| {
            let v = match values.as_slice() {
                [one] => Bytes::copy_from_slice(one),
                many => {
                    let list: Vec<Member> = many
                        .iter()
                        .map(|v| Member::Item(Item::new(BareItem::String(v.to_vec()))))
                        .collect();
                    Bytes::from(sf::serialize_list(&list))
                }
            };
            (k, v)
        })
        .collect())
}

/// True when every tag name is already in normalised form.
fn names_normal(tags: &[Tag]) -> bool {
    tags.iter()
        .all(|(n, _)| std::str::from_utf8(n).is_ok_and(|s| normalize_key(s).as_ref() == s))
}

/// True when encoding the decoded message again gives back exactly `item.tags`
/// (normalised names, sorted, unique, short UTF-8 values, none that decoding turns
/// into something else); otherwise the commitment must record `original-tags`.
fn tags_reproducible(item: &DataItem, tag_map: &BTreeMap<Key, Bytes>, bundled: bool) -> bool {
    let mut expected: Vec<Tag> = Vec::with_capacity(tag_map.len());
    for (k, v) in tag_map {
        if bundled && is_bundle_tag(k.as_bytes()) {
            continue;
        }
        if NON_TAG_KEYS.contains(&k.as_ref()) || !inline_tag_value(v) {
            return false;
        }
        expected.push((k.as_bytes().to_vec(), v.to_vec()));
    }
    if bundled {
        let Some(id) = item.tag(bundle::MAP_TAG).and_then(hb_core::Id::from_human) else {
            return false;
        };
        expected = bundle::with_bundle_tags(expected, &id);
    }
    expected == item.tags
}

/// `original-tags`: `{"1": {name, value}, …}` with the names as they are.
fn original_tags_value(tags: &[Tag]) -> Value {
    Value::Message(
        tags.iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let entry = Message::new()
                    .with("name", Value::bin(n.clone()))
                    .with("value", Value::bin(v.clone()));
                (Key::from((i + 1).to_string()), Value::Message(entry))
            })
            .collect(),
    )
}

/// Converts a data item to a TABM (the reference codec's `from`, §7.7), unpacking
/// bundles. The item is not verified here (see [`verify_tree`]).
///
/// # Errors
/// A malformed bundle, nesting deeper than [`MAX_DEPTH`], or a tag name that is not
/// UTF-8.
pub fn item_to_tabm(item: &DataItem) -> Result<Message, Ans104Error> {
    tabm_of(item, 0)
}

fn nested_value(item: &DataItem, depth: usize) -> Result<Value, Ans104Error> {
    if item.tag("ao-type") == Some(b"binary") {
        return Ok(Value::Binary(item.data.clone()));
    }
    Ok(Value::Message(tabm_of(item, depth)?))
}

fn tabm_of(item: &DataItem, depth: usize) -> Result<Message, Ans104Error> {
    if depth > MAX_DEPTH {
        return Err(Ans104Error::TooDeep);
    }
    let children = bundle::unbundle(item)?;
    let bundled = children.is_some();
    let mut map: BTreeMap<Key, Value> = BTreeMap::new();
    match children {
        Some(children) => {
            for (k, child) in children {
                map.insert(key_of(&k), nested_value(&child, depth + 1)?);
            }
        }
        None if !item.data.is_empty() => {
            map.insert(Key::from("data"), Value::Binary(item.data.clone()));
        }
        None => {}
    }
    if let Some(a) = &item.anchor {
        map.insert(Key::from("last_tx"), Value::bin(a.to_vec()));
    }
    if let Some(t) = &item.target {
        map.insert(Key::from("target"), Value::bin(t.to_vec()));
    }
    let signed = item.is_signed();
    if !signed && item.owner.iter().any(|&b| b != 0) {
        map.insert(Key::from("owner"), Value::bin(item.owner.to_vec()));
    }
    let tag_map = dedup_tags(&item.tags)?;
    for (k, v) in &tag_map {
        map.insert(k.clone(), Value::Binary(v.clone()));
    }
    if bundled {
        for k in ["bundle-format", "bundle-map", "bundle-version"] {
            map.remove(k);
        }
    }
    if signed {
        for k in [
            "id",
            "owner",
            "signature",
            "commitment-device",
            "committer",
            "alg",
            "original-tags",
        ] {
            map.remove(k);
        }
        let mut c = Message::new()
            .with("commitment-device", DEVICE_NAME)
            .with("alg", ALG_RSA)
            .with("committer", address_of(&item.owner))
            .with("owner", Value::bin(item.owner.to_vec()))
            .with("signature", Value::bin(item.signature.to_vec()));
        if !tags_reproducible(item, &tag_map, bundled) {
            c.insert("original-tags", original_tags_value(&item.tags));
        }
        map.insert(
            Key::from("commitments"),
            Value::Message(Message::new().with(&item.id().to_human(), c)),
        );
    } else if !names_normal(&item.tags) {
        let c = Message::new()
            .with("commitment-device", DEVICE_NAME)
            .with("alg", ALG_UNSIGNED)
            .with("original-tags", original_tags_value(&item.tags));
        map.insert(
            Key::from("commitments"),
            Value::Message(Message::new().with(&item.unsigned_id().to_human(), c)),
        );
    }
    Ok(map.into_iter().collect())
}

/// Converts a data item to a rich message with its `commitments` (§7.7 followed by
/// the structured decoding). A signed item gets its `rsa-pss` commitment; the caller
/// must have verified it (see [`deserialize_verified`], [`verify_tree`]).
///
/// # Errors
/// As [`item_to_tabm`], or `ao-types` that do not decode.
pub fn item_to_message(item: &DataItem) -> Result<Message, Ans104Error> {
    Ok(from_tabm(&item_to_tabm(item)?)?)
}

/// Verifies every signed item in `item`'s tree (the item itself and the items of its
/// bundles, recursively). Unsigned items carry no claim and pass.
///
/// # Errors
/// [`Ans104Error::BadSignature`] for the item itself,
/// [`Ans104Error::BadNestedSignature`] (naming the key path) for a nested item, or a
/// malformed bundle.
pub fn verify_tree(item: &DataItem) -> Result<(), Ans104Error> {
    verify_at(item, "", 0)
}

fn verify_at(item: &DataItem, path: &str, depth: usize) -> Result<(), Ans104Error> {
    if depth > MAX_DEPTH {
        return Err(Ans104Error::TooDeep);
    }
    if item.is_signed() {
        match item.check() {
            Ok(()) => {}
            Err(Ans104Error::BadSignature) if !path.is_empty() => {
                return Err(Ans104Error::BadNestedSignature(path.to_owned()));
            }
            Err(e) => return Err(e),
        }
    }
    if item.tag("ao-type") == Some(b"binary") && depth > 0 {
        return Ok(());
    }
    if let Some(children) = bundle::unbundle(item)? {
        for (k, child) in children {
            let sub = if path.is_empty() {
                k
            } else {
                format!("{path}/{k}")
            };
            verify_at(&child, &sub, depth + 1)?;
        }
    }
    Ok(())
}

/// Parses a serialised data item, verifies every signature in it ([`verify_tree`]) and
/// converts it to a rich message with its commitments. Unsigned items are accepted.
///
/// # Errors
/// Malformed bytes, a signature that does not verify, or a failed conversion; the
/// error says which.
pub fn deserialize_verified(bytes: &[u8]) -> Result<Message, Ans104Error> {
    let item = DataItem::parse(bytes)?;
    verify_tree(&item)?;
    item_to_message(&item)
}
