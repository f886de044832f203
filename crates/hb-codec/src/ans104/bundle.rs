//! HyperBEAM bundles (spec 03 §7.5): a data item whose data is a map of data items.
//!
//! * data = `u256be(count)` ‖ per item `u256be(size) ‖ unsigned_id` ‖ the items;
//! * the first item is the manifest: tags `data-protocol: bundle-map`, `variant: 0.0.1`,
//!   data = JSON `{"<key>": "<b64url unsigned_id>", …}` in key order;
//! * the parent's tags are `bundle-format: binary`, `bundle-version: 2.0.0`, its other
//!   tags, then `bundle-map: <b64url manifest unsigned_id>`.
//!
//! Unlike standard ANS-104 bundles, the index holds *unsigned* IDs, and items are found
//! by the unsigned ID computed from their bytes (the index IDs are not trusted).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use hb_core::Id;

use super::Ans104Error;
use super::item::{DataItem, Tag};

/// The tag that marks a bundle's format.
pub const FORMAT_TAG: (&str, &str) = ("bundle-format", "binary");
/// The tag that marks a bundle's version.
pub const VERSION_TAG: (&str, &str) = ("bundle-version", "2.0.0");
/// The tag naming the manifest item.
pub const MAP_TAG: &str = "bundle-map";

/// True for the three tags bundling adds (`bundle-format`, `bundle-version`,
/// `bundle-map`).
#[must_use]
pub fn is_bundle_tag(name: &[u8]) -> bool {
    matches!(name, b"bundle-format" | b"bundle-version" | b"bundle-map")
}

fn tag(name: &str, value: &str) -> Tag {
    (name.as_bytes().to_vec(), value.as_bytes().to_vec())
}

fn write_u256(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[0; 24]);
    out.extend_from_slice(&n.to_be_bytes());
}

fn read_u256(bytes: &[u8]) -> Option<u64> {
    let (high, low) = bytes.split_at_checked(24)?;
    if high.iter().any(|&b| b != 0) {
        return None;
    }
    Some(u64::from_be_bytes(low.try_into().ok()?))
}

/// The manifest item of a bundle whose items have these keys and unsigned IDs.
#[must_use]
pub fn manifest_item(index: &[(&str, Id)]) -> DataItem {
    let mut map = serde_json::Map::new();
    for (k, id) in index {
        map.insert((*k).to_owned(), serde_json::Value::String(id.to_human()));
    }
    // Serialising a map of strings cannot fail.
    let json = serde_json::to_vec(&map).unwrap_or_default();
    DataItem {
        tags: vec![tag("data-protocol", "bundle-map"), tag("variant", "0.0.1")],
        data: Bytes::from(json),
        ..DataItem::default()
    }
}

/// Serialises `items` (keyed by normalised message key) as a bundle: returns the
/// manifest item and the bundle data.
#[must_use]
pub fn build(items: &BTreeMap<String, DataItem>) -> (DataItem, Vec<u8>) {
    let serialised: Vec<(&str, Id, Vec<u8>)> = items
        .iter()
        .map(|(k, item)| (k.as_str(), item.unsigned_id(), item.to_bytes()))
        .collect();
    let index: Vec<(&str, Id)> = serialised.iter().map(|(k, id, _)| (*k, *id)).collect();
    let manifest = manifest_item(&index);
    let manifest_pair = (manifest.unsigned_id(), manifest.to_bytes());
    let all: Vec<(&Id, &Vec<u8>)> = std::iter::once((&manifest_pair.0, &manifest_pair.1))
        .chain(serialised.iter().map(|(_, id, b)| (id, b)))
        .collect();
    let size: usize = all.iter().map(|(_, b)| 64 + b.len()).sum();
    let mut data = Vec::with_capacity(32 + size);
    write_u256(&mut data, all.len() as u64);
    for (id, bytes) in &all {
        write_u256(&mut data, bytes.len() as u64);
        data.extend_from_slice(&id.0);
    }
    for (_, bytes) in &all {
        data.extend_from_slice(bytes);
    }
    (manifest, data)
}

/// The tags of a bundle's parent: `bundle-format`, `bundle-version`, then `tags` less
/// the first occurrence of those two and less every `bundle-map` tag, then `bundle-map`
/// naming the manifest.
#[must_use]
pub fn with_bundle_tags(tags: Vec<Tag>, manifest_id: &Id) -> Vec<Tag> {
    let format = tag(FORMAT_TAG.0, FORMAT_TAG.1);
    let version = tag(VERSION_TAG.0, VERSION_TAG.1);
    let mut rest = tags;
    for t in [&format, &version] {
        if let Some(i) = rest.iter().position(|x| x == t) {
            rest.remove(i);
        }
    }
    let mut out = vec![format, version];
    out.extend(rest.into_iter().filter(|(n, _)| n != MAP_TAG.as_bytes()));
    out.push(tag(MAP_TAG, &manifest_id.to_human()));
    out
}

fn bad(reason: impl Into<String>) -> Ans104Error {
    Ans104Error::Bundle(reason.into())
}

/// Splits bundle data into its items (not recursively).
///
/// # Errors
/// A count or size that does not fit the data, trailing bytes, or an item that does not
/// parse.
pub fn split(data: &Bytes) -> Result<Vec<DataItem>, Ans104Error> {
    let count = data
        .get(..32)
        .and_then(read_u256)
        .ok_or_else(|| bad("the item count is missing or too large"))?;
    let room = (data.len().saturating_sub(32) / 64) as u64;
    if count > room {
        return Err(bad(format!(
            "it declares {count} items but has room for at most {room}"
        )));
    }
    // count <= room, which fits in usize.
    let count = count as usize;
    let items_start = 32 + 64 * count;
    let mut items = Vec::with_capacity(count);
    let mut pos = items_start;
    for i in 0..count {
        let entry = 32 + 64 * i;
        let size = data
            .get(entry..entry + 32)
            .and_then(read_u256)
            .ok_or_else(|| bad(format!("the size of item {} is too large", i + 1)))?;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(s))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                bad(format!(
                    "item {} is declared as {size} bytes, more than remain",
                    i + 1
                ))
            })?;
        let item = DataItem::parse_bytes(&data.slice(pos..end))
            .map_err(|e| bad(format!("item {}: {e}", i + 1)))?;
        items.push(item);
        pos = end;
    }
    if pos != data.len() {
        return Err(bad(format!(
            "{} bytes follow the last item",
            data.len() - pos
        )));
    }
    Ok(items)
}

/// If `item` is a HyperBEAM bundle (first `bundle-format` tag `binary`, first
/// `bundle-version` tag `2.0.0`, a `bundle-map` tag and non-empty data), its items by
/// manifest key, in manifest order; otherwise `None` (a plain item, a standard ANS-104
/// bundle without manifest, or a detached bundle).
///
/// # Errors
/// A malformed bundle: bad layout, missing manifest, manifest not a JSON object of IDs,
/// or an ID the bundle does not hold.
pub fn unbundle(item: &DataItem) -> Result<Option<Vec<(String, DataItem)>>, Ans104Error> {
    let marked = item.tag(FORMAT_TAG.0) == Some(FORMAT_TAG.1.as_bytes())
        && item.tag(VERSION_TAG.0) == Some(VERSION_TAG.1.as_bytes());
    let Some(map_id) = item.tag(MAP_TAG).filter(|_| marked) else {
        return Ok(None);
    };
    if item.data.is_empty() {
        return Ok(None);
    }
    let map_id = Id::from_human(map_id).ok_or_else(|| bad("the bundle-map tag is not an ID"))?;
    let items = split(&item.data)?;
    // Each manifest entry takes its own copy of an item: a bundle that names one item
    // many times must hold it that many times, so the work and the size of the decoded
    // message stay proportional to the input (no "zip bomb" of shared sub-bundles).
    let mut unused: HashMap<Id, Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate().rev() {
        unused.entry(it.unsigned_id()).or_default().push(i);
    }
    let mut take = |id: &Id| {
        unused
            .get_mut(id)
            .and_then(Vec::pop)
            .and_then(|i| items.get(i))
    };
    let manifest = take(&map_id).ok_or_else(|| {
        bad(format!(
            "the manifest {} named by bundle-map is not in the bundle",
            map_id.to_human()
        ))
    })?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&manifest.data)
        .map_err(|e| bad(format!("the manifest is not a JSON object: {e}")))?;
    let mut out = Vec::with_capacity(map.len());
    for (key, v) in map {
        let id = v
            .as_str()
            .and_then(|s| Id::from_human(s.as_bytes()))
            .ok_or_else(|| bad(format!("the manifest entry `{key}` is not an ID")))?;
        let child = take(&id).ok_or_else(|| {
            bad(format!(
                "the manifest entry `{key}` names {}, which the bundle does not hold \
                 (or holds fewer times than the manifest names it)",
                id.to_human()
            ))
        })?;
        out.push((key, child.clone()));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u256_roundtrip_and_limits() {
        let mut out = Vec::new();
        write_u256(&mut out, 258);
        assert_eq!(out.len(), 32);
        assert_eq!(read_u256(&out), Some(258));
        out[0] = 1;
        assert_eq!(read_u256(&out), None);
        assert_eq!(read_u256(&[0; 31]), None);
    }

    #[test]
    fn split_rejects_bad_layouts() {
        let mut data = Vec::new();
        write_u256(&mut data, 1_000_000);
        assert!(split(&Bytes::from(data)).is_err());
        let mut data = Vec::new();
        write_u256(&mut data, 1);
        write_u256(&mut data, u64::MAX);
        data.extend_from_slice(&[0; 32]);
        assert!(split(&Bytes::from(data)).is_err());
        let mut data = Vec::new();
        write_u256(&mut data, 0);
        assert_eq!(split(&Bytes::from(data.clone())).unwrap(), vec![]);
        data.push(7);
        assert!(split(&Bytes::from(data)).is_err());
    }

    #[test]
    fn bundle_tags_order() {
        let id = Id([7; 32]);
        let tags = vec![
            tag("a", "1"),
            tag("bundle-map", "old"),
            tag("bundle-version", "2.0.0"),
        ];
        let out = with_bundle_tags(tags, &id);
        let names: Vec<&[u8]> = out.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(
            names,
            [
                b"bundle-format".as_slice(),
                b"bundle-version",
                b"a",
                b"bundle-map"
            ]
        );
        assert_eq!(out[3].1, id.to_human().into_bytes());
    }
}
