//! Uploading signed ANS-104 data items to an Arweave gateway (issue 4).
//!
//! [`upload_items`] packs the items into a standard ANS-104 **binary bundle** (the
//! format bundlers and gateways index: a 32-byte little-endian item count, then for each
//! item its 32-byte little-endian size and its 32-byte **signed** ID, then the items
//! back to back; little-endian as arbundles writes them, where HyperBEAM's in-message
//! bundles use big-endian numbers), carries it as the inline data of an Arweave **v2 transaction** tagged
//! `Bundle-Format: binary` and `Bundle-Version: 2.0.0`, signs that transaction with the
//! node's wallet and posts it to `<gateway>/tx`. Gateways (and arlocal) unpack the
//! bundle and index every item by its tags.
//!
//! The transaction ([`L1Tx`]):
//! * `last_tx` is the gateway's `GET /tx_anchor`, `reward` its `GET /price/<bytes>`;
//! * `data_root` is the root of the Arweave merkle tree of the data ([`data_root`]:
//!   256 KiB chunks, the last two rebalanced when the last would be under 32 KiB);
//! * the signature is RSA-PSS SHA-256 over the deep hash of
//!   `["2", owner, target, quantity, reward, last_tx, [[name, value]…], data_size,
//!   data_root]`, and the ID is the SHA-256 of the signature.
//!
//! These are HyperBEAM's standard bundles, not the bundles it nests inside messages
//! (`hb_codec::ans104::bundle`, indexed by unsigned IDs, with a `bundle-map`).
//!
//! Limits: the data is sent inline, so a bundle is at most [`MAX_INLINE_DATA`] bytes
//! (no chunk upload); every request has a connect timeout and a total deadline; the
//! gateway's answers are capped in size.

use std::time::{Duration, Instant};

use hb_codec::ans104::item::DeepHashItem;
use hb_codec::ans104::{DataItem, Tag, deep_hash};
use hb_codec::rsa_pss::{self, Hash};
use hb_codec::{Wallet, WalletError};
use hb_core::id::{b64url, b64url_decode};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::store::StoreError;

/// Largest chunk of the Arweave merkle tree.
pub const MAX_CHUNK_SIZE: usize = 256 * 1024;
/// Smallest last chunk: when the last chunk would be smaller, the last two are split
/// in half instead.
pub const MIN_CHUNK_SIZE: usize = 32 * 1024;
/// Largest bundle sent inline in `POST /tx` (gateways refuse larger inline data).
pub const MAX_INLINE_DATA: usize = 10 * 1024 * 1024;
/// Connect timeout of every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total time one upload may take (all its requests together).
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read from `/tx_anchor`, `/price` and `/tx`.
const ANSWER_LIMIT: u64 = 64 * 1024;

/// Sha-256 of the concatenation of `parts`.
fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `n` as a 32-byte big-endian "note".
fn note(n: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    let be = (n as u64).to_be_bytes();
    out[24..].copy_from_slice(&be);
    out
}

/// The `(start, end)` byte ranges of the Arweave chunks of `len` bytes of data. As in
/// arweave-js, data whose length is a multiple of 256 KiB ends with an empty chunk,
/// which takes part in the merkle root.
fn chunk_ranges(len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(len / MAX_CHUNK_SIZE + 1);
    let mut start = 0;
    let mut rest = len;
    while rest >= MAX_CHUNK_SIZE {
        let next = rest - MAX_CHUNK_SIZE;
        let size = if next > 0 && next < MIN_CHUNK_SIZE {
            rest.div_ceil(2)
        } else {
            MAX_CHUNK_SIZE
        };
        out.push((start, start + size));
        start += size;
        rest -= size;
    }
    out.push((start, start + rest));
    out
}

/// The Arweave `data_root` of `data`: the root of the merkle tree whose leaves are
/// `sha256(sha256(sha256(chunk)) ‖ sha256(note(end)))` and whose branches are
/// `sha256(sha256(left) ‖ sha256(right) ‖ sha256(note(left end)))`; an odd node moves up
/// unchanged. Empty data has an empty root.
#[must_use]
pub fn data_root(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    // (node id, end offset of the bytes it covers)
    let mut layer: Vec<([u8; 32], usize)> = chunk_ranges(data.len())
        .into_iter()
        .map(|(start, end)| {
            let chunk = data.get(start..end).unwrap_or_default();
            let id = sha256(&[&sha256(&[&sha256(&[chunk])]), &sha256(&[&note(end)])]);
            (id, end)
        })
        .collect();
    while layer.len() > 1 {
        layer = layer
            .chunks(2)
            .map(|pair| match pair {
                [(l, l_end), (r, r_end)] => (
                    sha256(&[&sha256(&[l]), &sha256(&[r]), &sha256(&[&note(*l_end)])]),
                    *r_end,
                ),
                [one] => *one,
                _ => ([0; 32], 0), // `chunks(2)` never yields an empty slice
            })
            .collect();
    }
    layer.first().map(|(id, _)| id.to_vec()).unwrap_or_default()
}

/// A standard ANS-104 binary bundle of `items`: the count, then (size, signed ID) for
/// each item, all as 32-byte little-endian numbers, then the items.
///
/// # Errors
/// An item is not signed.
pub fn bundle_data(items: &[DataItem]) -> Result<Vec<u8>, String> {
    let bodies: Vec<Vec<u8>> = items.iter().map(DataItem::to_bytes).collect();
    let mut out =
        Vec::with_capacity(32 + 64 * items.len() + bodies.iter().map(Vec::len).sum::<usize>());
    let le32 = |n: usize| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(n as u64).to_le_bytes());
        b
    };
    out.extend_from_slice(&le32(items.len()));
    for (i, (item, body)) in items.iter().zip(&bodies).enumerate() {
        if !item.is_signed() {
            return Err(format!(
                "item {} (unsigned ID {}) is not signed; only signed items can be bundled",
                i + 1,
                item.unsigned_id().to_human()
            ));
        }
        out.extend_from_slice(&le32(body.len()));
        out.extend_from_slice(&item.id().0);
    }
    for body in bodies {
        out.extend_from_slice(&body);
    }
    Ok(out)
}

/// An Arweave v2 (format 2) transaction with its data inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Tx {
    /// The signer's RSA modulus.
    pub owner: Vec<u8>,
    /// The recipient's address, or empty.
    pub target: Vec<u8>,
    /// Winston transferred to `target`, in decimal.
    pub quantity: String,
    /// The fee in winston, in decimal.
    pub reward: String,
    /// The anchor (`GET /tx_anchor`), possibly empty.
    pub last_tx: Vec<u8>,
    /// The tags, as bytes.
    pub tags: Vec<Tag>,
    /// The data.
    pub data: Vec<u8>,
    /// [`data_root`] of `data`.
    pub data_root: Vec<u8>,
    /// The RSA-PSS signature; empty until signed.
    pub signature: Vec<u8>,
}

impl L1Tx {
    /// An unsigned transaction of `owner` carrying `data`, no transfer.
    #[must_use]
    pub fn new(
        owner: &[u8],
        last_tx: Vec<u8>,
        reward: String,
        tags: Vec<Tag>,
        data: Vec<u8>,
    ) -> Self {
        L1Tx {
            owner: owner.to_vec(),
            target: Vec::new(),
            quantity: "0".to_owned(),
            reward,
            last_tx,
            tags,
            data_root: data_root(&data),
            data,
            signature: Vec::new(),
        }
    }

    /// The deep hash the signature covers.
    #[must_use]
    pub fn signature_data(&self) -> [u8; 48] {
        let size = self.data.len().to_string();
        let tags = self
            .tags
            .iter()
            .map(|(n, v)| DeepHashItem::List(vec![DeepHashItem::Blob(n), DeepHashItem::Blob(v)]))
            .collect();
        deep_hash(&DeepHashItem::List(vec![
            DeepHashItem::Blob(b"2"),
            DeepHashItem::Blob(&self.owner),
            DeepHashItem::Blob(&self.target),
            DeepHashItem::Blob(self.quantity.as_bytes()),
            DeepHashItem::Blob(self.reward.as_bytes()),
            DeepHashItem::Blob(&self.last_tx),
            DeepHashItem::List(tags),
            DeepHashItem::Blob(size.as_bytes()),
            DeepHashItem::Blob(&self.data_root),
        ]))
    }

    /// Signs with `wallet` (RSA-PSS SHA-256 over [`Self::signature_data`]); the owner
    /// becomes the wallet's modulus.
    ///
    /// # Errors
    /// The signing failed.
    pub fn sign(&mut self, wallet: &Wallet) -> Result<(), WalletError> {
        self.owner = wallet.public_modulus().to_vec();
        self.signature = rsa_pss::sign(wallet, Hash::Sha256, &self.signature_data())?;
        Ok(())
    }

    /// Whether the signature verifies against the owner.
    #[must_use]
    pub fn verify(&self) -> bool {
        rsa_pss::verify(
            &self.owner,
            Hash::Sha256,
            &self.signature_data(),
            &self.signature,
        )
    }

    /// The ID: SHA-256 of the signature.
    #[must_use]
    pub fn id(&self) -> [u8; 32] {
        sha256(&[&self.signature])
    }

    /// The JSON `POST /tx` takes (binary fields base64url, numbers as decimal strings).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let tags: Vec<serde_json::Value> = self
            .tags
            .iter()
            .map(|(n, v)| json!({ "name": b64url(n), "value": b64url(v) }))
            .collect();
        json!({
            "format": 2,
            "id": b64url(&self.id()),
            "last_tx": b64url(&self.last_tx),
            "owner": b64url(&self.owner),
            "tags": tags,
            "target": b64url(&self.target),
            "quantity": self.quantity,
            "data": b64url(&self.data),
            "data_size": self.data.len().to_string(),
            "data_root": b64url(&self.data_root),
            "reward": self.reward,
            "signature": b64url(&self.signature),
        })
    }
}

/// One gateway's upload session: its base URL and an agent with bounded timeouts.
struct Gateway {
    base: String,
    agent: ureq::Agent,
    deadline: Instant,
}

impl Gateway {
    fn new(base: &str, total: Duration) -> Result<Self, StoreError> {
        let (base, agent) =
            crate::http::agent(base, "upload to gateway", CONNECT_TIMEOUT, total, 0)?;
        Ok(Gateway {
            agent,
            deadline: Instant::now()
                .checked_add(total)
                .unwrap_or_else(Instant::now),
            base,
        })
    }

    fn error(&self, reason: String) -> StoreError {
        StoreError::Remote {
            store: format!("upload to gateway {}", self.base),
            reason,
        }
    }

    /// One request: (status, body capped at [`ANSWER_LIMIT`]).
    fn request(&self, path: &str, json_body: Option<&str>) -> Result<(u16, Vec<u8>), StoreError> {
        let url = format!("{}{path}", self.base);
        let what = if json_body.is_some() { "POST" } else { "GET" };
        let left = crate::http::time_left(self.deadline, &format!("{what} {url}"))
            .map_err(|e| self.error(e))?;
        let sent = match json_body {
            Some(body) => self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(left))
                .build()
                .header("content-type", "application/json")
                .send(body),
            None => self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(left))
                .build()
                .call(),
        };
        let mut resp = sent.map_err(|e| self.error(format!("{what} {url}: {e}")))?;
        let status = resp.status().as_u16();
        let body = crate::http::read_capped(&mut resp, ANSWER_LIMIT, &format!("{what} {url}"))
            .map_err(|e| self.error(e.text()))?;
        Ok((status, body))
    }

    /// A GET that must answer 200; its body as trimmed text.
    fn get_text(&self, path: &str) -> Result<String, StoreError> {
        let (status, body) = self.request(path, None)?;
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        if status != 200 {
            return Err(self.error(format!(
                "GET {}{path}: status {status}: {}",
                self.base,
                snippet(&text)
            )));
        }
        Ok(text)
    }

    fn anchor(&self) -> Result<Vec<u8>, StoreError> {
        let text = self.get_text("/tx_anchor")?;
        match b64url_decode(text.as_bytes()) {
            Some(bytes) if bytes.len() <= 64 => Ok(bytes),
            _ => Err(self.error(format!(
                "GET {}/tx_anchor: `{}` is not a base64url anchor",
                self.base,
                snippet(&text)
            ))),
        }
    }

    fn price(&self, bytes: usize) -> Result<String, StoreError> {
        let text = self.get_text(&format!("/price/{bytes}"))?;
        if text.is_empty() || text.len() > 40 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(format!(
                "GET {}/price/{bytes}: `{}` is not a winston amount",
                self.base,
                snippet(&text)
            )));
        }
        Ok(text)
    }
}

/// At most 300 characters of `text`, for error messages.
fn snippet(text: &str) -> String {
    crate::http::excerpt(text.as_bytes(), 300)
}

/// Uploads signed `items` to the gateway at `gateway` as one ANS-104 binary bundle in
/// an Arweave v2 transaction signed by `wallet` (see the module documentation), and
/// returns the transaction's ID (base64url).
///
/// # Errors
/// No items, an unsigned item, a bundle larger than [`MAX_INLINE_DATA`], a gateway
/// that is not an http(s) URL, cannot be reached, or answers `/tx_anchor`, `/price` or
/// `POST /tx` with an error; each names the gateway and what it answered.
pub fn upload_items(
    gateway: &str,
    wallet: &Wallet,
    items: &[DataItem],
) -> Result<String, StoreError> {
    upload_items_with_timeout(gateway, wallet, items, UPLOAD_TIMEOUT)
}

/// [`upload_items`] with another total deadline.
///
/// # Errors
/// As [`upload_items`].
pub fn upload_items_with_timeout(
    gateway: &str,
    wallet: &Wallet,
    items: &[DataItem],
    total: Duration,
) -> Result<String, StoreError> {
    let gw = Gateway::new(gateway, total)?;
    if items.is_empty() {
        return Err(gw.error("no data items to upload".to_owned()));
    }
    let data = bundle_data(items).map_err(|e| gw.error(e))?;
    if data.len() > MAX_INLINE_DATA {
        return Err(gw.error(format!(
            "the bundle is {} bytes; at most {MAX_INLINE_DATA} are sent inline (chunk upload is not supported)",
            data.len()
        )));
    }
    let last_tx = gw.anchor()?;
    let reward = gw.price(data.len())?;
    let tags = vec![
        (b"Bundle-Format".to_vec(), b"binary".to_vec()),
        (b"Bundle-Version".to_vec(), b"2.0.0".to_vec()),
    ];
    let mut tx = L1Tx::new(wallet.public_modulus(), last_tx, reward, tags, data);
    tx.sign(wallet)
        .map_err(|e| gw.error(format!("cannot sign the transaction: {e}")))?;
    let id = b64url(&tx.id());
    let (status, body) = gw.request("/tx", Some(&tx.to_json().to_string()))?;
    // 208: the gateway already has this transaction.
    if !(200..300).contains(&status) {
        return Err(gw.error(format!(
            "POST {}/tx (transaction {id}): status {status}: {}",
            gw.base,
            snippet(&String::from_utf8_lossy(&body))
        )));
    }
    tracing::info!(gateway = %gw.base, tx = %id, items = items.len(), "uploaded a bundle");
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use hb_codec::ans104::bundle;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect()
    }

    fn key1() -> Wallet {
        Wallet::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/key-1.json"
        ))
        .unwrap()
    }

    /// Vectors computed by arweave-js (`harness/scripts/l1-tx-vectors.mjs`,
    /// `merkle.computeRootHash`); 262144 ends with an empty chunk, 263144 rebalances
    /// its last two chunks, 600000 has an odd number of leaves.
    #[test]
    fn data_root_matches_arweave_js() {
        for (n, want) in [
            (1, "C-oVPHGXV7rlH-K69yK3jqgU9uefMIcrvOC9UszbHss"),
            (1000, "hrjwq8AHHCYBw5BZyHsXf_vmsOOjcu3-de_zi_y2i8E"),
            (262_144, "RV2kVY6hso4TjWRzG4r_QMO7bJ4qLAEwRPzvRw0B1ko"),
            (263_144, "f5Cg3uKArCDqBUvxZ2pcSbQS5E1PLNy7Abwsat87Dcs"),
            (600_000, "gHjjfYFFD4zQl_XnaniDwxLG2MHGgHoX1B-qOxfZt3k"),
        ] {
            assert_eq!(b64url(&data_root(&payload(n))), want, "size {n}");
        }
        assert!(data_root(&[]).is_empty());
    }

    #[test]
    fn chunking_rules() {
        assert_eq!(chunk_ranges(10), [(0, 10)]);
        assert_eq!(
            chunk_ranges(MAX_CHUNK_SIZE),
            [(0, MAX_CHUNK_SIZE), (MAX_CHUNK_SIZE, MAX_CHUNK_SIZE)]
        );
        assert_eq!(chunk_ranges(263_144), [(0, 131_572), (131_572, 263_144)]);
        assert_eq!(chunk_ranges(600_000).len(), 3);
    }

    /// The deep hash of the same transaction as arweave-js's `getSignatureData()`
    /// (`harness/scripts/l1-tx-vectors.mjs`); the signature verifies and the ID is the
    /// SHA-256 of the signature.
    #[test]
    fn deep_hash_signature_and_id() {
        let wallet = key1();
        let tags = vec![
            (b"Bundle-Format".to_vec(), b"binary".to_vec()),
            (b"Bundle-Version".to_vec(), b"2.0.0".to_vec()),
        ];
        let mut tx = L1Tx::new(
            wallet.public_modulus(),
            vec![7; 48],
            "65595508".to_owned(),
            tags,
            payload(1000),
        );
        assert_eq!(
            b64url(&tx.signature_data()),
            "FE93GBJbYb4K-if3d63t3NGf8zCv106FdMK5RmacwcsRpUyCcAaH8L3krWhkZle9"
        );
        tx.sign(&wallet).unwrap();
        assert!(tx.verify());
        assert_eq!(tx.signature.len(), 512);
        assert_eq!(tx.id(), sha256(&[&tx.signature]));
        let j = tx.to_json();
        assert_eq!(j["id"], b64url(&tx.id()));
        assert_eq!(j["data_size"], "1000");
        assert_eq!(j["target"], "");
        assert_eq!(j["tags"][0]["name"], b64url(b"Bundle-Format"));
        let mut other = tx.clone();
        other.reward = "1".to_owned();
        assert!(!other.verify());
    }

    #[test]
    fn bundle_layout_and_unsigned_refusal() {
        let wallet = key1();
        let a = DataItem {
            tags: vec![(b"K".to_vec(), b"v".to_vec())],
            data: bytes::Bytes::from_static(b"one"),
            ..DataItem::default()
        };
        let b = DataItem {
            data: bytes::Bytes::from_static(b"two two"),
            ..DataItem::default()
        };
        assert!(
            bundle_data(std::slice::from_ref(&a))
                .unwrap_err()
                .contains("not signed")
        );
        let (a, b) = (a.signed(&wallet).unwrap(), b.signed(&wallet).unwrap());
        let data = bundle_data(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(&data[..8], &2u64.to_le_bytes());
        assert!(data[8..32].iter().all(|&x| x == 0));
        assert_eq!(&data[32..40], &(a.to_bytes().len() as u64).to_le_bytes());
        assert_eq!(&data[64..96], &a.id().0);
        assert_eq!(&data[128..160], &b.id().0);
        // The items follow the 32 + 2 × 64 header bytes, back to back.
        let la = a.to_bytes().len();
        assert_eq!(DataItem::parse(&data[160..160 + la]).unwrap(), a);
        assert_eq!(DataItem::parse(&data[160 + la..]).unwrap(), b);
        // HyperBEAM's in-message bundles (hb_codec::ans104::bundle, big-endian like
        // the reference's `:256/integer`) are a different format: this one is not one.
        assert!(bundle::split(&bytes::Bytes::from(data)).is_err());
    }

    #[test]
    fn bad_gateways_are_named() {
        let wallet = key1();
        let item = DataItem::default().signed(&wallet).unwrap();
        let e = upload_items("ftp://x", &wallet, std::slice::from_ref(&item)).unwrap_err();
        assert!(e.to_string().contains("ftp://x"), "{e}");
        let e = upload_items("http://127.0.0.1:9", &wallet, &[]).unwrap_err();
        assert!(e.to_string().contains("no data items"), "{e}");
        // Nothing listens on port 9 (discard) on loopback: a quick transport error.
        let e = upload_items_with_timeout(
            "http://127.0.0.1:9",
            &wallet,
            &[item],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("http://127.0.0.1:9/tx_anchor"),
            "{e}"
        );
    }
}
