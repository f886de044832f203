//! Uploading signed ANS-104 data items to an Arweave gateway (issue 4).
//!
//! [`upload_items`] packs the items into a standard ANS-104 **binary bundle** (the
//! format bundlers and gateways index: a 32-byte little-endian item count, then for each
//! item its 32-byte little-endian size and its 32-byte **signed** ID, then the items
//! back to back; little-endian as arbundles writes them, where HyperBEAM's in-message
//! bundles use big-endian numbers), carries it as the inline data of an Arweave **v2 transaction** tagged
//! `Bundle-Format: binary` and `Bundle-Version: 2.0.0`, signs that transaction with the
//! node's wallet and posts it to `<gateway>/tx` (or, when larger, in chunks: below).
//! Gateways (and arlocal) unpack the bundle and index every item by its tags.
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
//! Bundles up to [`MAX_INLINE_DATA`] bytes go inline in `POST /tx`. Larger ones (up to
//! [`MAX_UPLOAD`]) are uploaded as Arweave v2 transactions are: the header is posted
//! without its data (`data` empty; `data_size` and `data_root` describe it), then
//! every chunk, in order, to `POST /chunk` as `{data_root, data_size, data_path,
//! offset, chunk}` — `data_path` the chunk's merkle proof ([`chunks`]: the left ID,
//! right ID and boundary note of each branch from the root down, then the chunk's
//! hash and end note), `offset` that of its last byte. (An empty last chunk, which
//! data of a multiple of 256 KiB has, is part of the root but not posted.)
//!
//! Limits: every request has a connect timeout and a total deadline ([`UPLOAD_TIMEOUT`],
//! plus [`CHUNKED_TIME_PER_MIB`] per MiB sent in chunks); a chunk is tried
//! [`CHUNK_TRIES`] times; the gateway's answers are capped in size.

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
/// Largest bundle sent inline in `POST /tx` (gateways refuse larger inline data);
/// larger ones are sent in chunks (`POST /chunk`).
pub const MAX_INLINE_DATA: usize = 10 * 1024 * 1024;
/// Largest bundle uploaded at all (it is held in memory, with its chunks' JSON one at
/// a time).
pub const MAX_UPLOAD: usize = 1 << 30;
/// Time added to the upload deadline per MiB sent in chunks.
pub const CHUNKED_TIME_PER_MIB: Duration = Duration::from_secs(2);
/// Tries of each `POST /chunk` (a transport error or a 5xx answer is tried again).
const CHUNK_TRIES: usize = 3;
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

/// A node of the Arweave merkle tree of some data.
enum Node {
    /// A chunk: its hash (`sha256(chunk)`) and the end offset of its bytes.
    Leaf {
        id: [u8; 32],
        hash: [u8; 32],
        end: usize,
    },
    /// Two subtrees; `boundary` is where the left one ends.
    Branch {
        id: [u8; 32],
        left: Box<Node>,
        right: Box<Node>,
        boundary: usize,
        end: usize,
    },
}

impl Node {
    fn id(&self) -> [u8; 32] {
        match self {
            Node::Leaf { id, .. } | Node::Branch { id, .. } => *id,
        }
    }

    fn end(&self) -> usize {
        match self {
            Node::Leaf { end, .. } | Node::Branch { end, .. } => *end,
        }
    }
}

/// The merkle tree of `data` (`None` when it is empty): leaves
/// `sha256(sha256(sha256(chunk)) ‖ sha256(note(end)))`, branches
/// `sha256(sha256(left) ‖ sha256(right) ‖ sha256(note(left end)))`; an odd node moves
/// up unchanged.
fn merkle_tree(data: &[u8]) -> Option<Node> {
    if data.is_empty() {
        return None;
    }
    let mut layer: Vec<Node> = chunk_ranges(data.len())
        .into_iter()
        .map(|(start, end)| {
            let hash = sha256(&[data.get(start..end).unwrap_or_default()]);
            let id = sha256(&[&sha256(&[&hash]), &sha256(&[&note(end)])]);
            Node::Leaf { id, hash, end }
        })
        .collect();
    while layer.len() > 1 {
        let mut next = Vec::with_capacity(layer.len().div_ceil(2));
        let mut nodes = layer.into_iter();
        while let Some(left) = nodes.next() {
            match nodes.next() {
                Some(right) => {
                    let boundary = left.end();
                    let id = sha256(&[
                        &sha256(&[&left.id()]),
                        &sha256(&[&right.id()]),
                        &sha256(&[&note(boundary)]),
                    ]);
                    next.push(Node::Branch {
                        id,
                        end: right.end(),
                        left: Box::new(left),
                        right: Box::new(right),
                        boundary,
                    });
                }
                None => next.push(left),
            }
        }
        layer = next;
    }
    layer.pop()
}

/// The Arweave `data_root` of `data`: the root of its merkle tree ([`merkle_tree`]).
/// Empty data has an empty root.
#[must_use]
pub fn data_root(data: &[u8]) -> Vec<u8> {
    merkle_tree(data)
        .map(|root| root.id().to_vec())
        .unwrap_or_default()
}

/// One chunk of an upload, with its merkle proof (`POST /chunk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where its bytes start in the data.
    pub start: usize,
    /// Where they end.
    pub end: usize,
    /// The proof (`data_path`): for each branch from the root down, the left ID, the
    /// right ID and the boundary note; then the chunk's hash and its end note.
    pub data_path: Vec<u8>,
}

impl Chunk {
    /// The offset `POST /chunk` takes: that of the chunk's last byte.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.end.saturating_sub(1)
    }
}

/// The chunks of `data` with their proofs, in order (none for empty data).
#[must_use]
pub fn chunks(data: &[u8]) -> Vec<Chunk> {
    fn walk(node: &Node, start: usize, prefix: &mut Vec<u8>, out: &mut Vec<Chunk>) {
        match node {
            Node::Leaf { hash, end, .. } => {
                let mut data_path = prefix.clone();
                data_path.extend_from_slice(hash);
                data_path.extend_from_slice(&note(*end));
                out.push(Chunk {
                    start,
                    end: *end,
                    data_path,
                });
            }
            Node::Branch {
                left,
                right,
                boundary,
                ..
            } => {
                let at = prefix.len();
                prefix.extend_from_slice(&left.id());
                prefix.extend_from_slice(&right.id());
                prefix.extend_from_slice(&note(*boundary));
                walk(left, start, prefix, out);
                walk(right, *boundary, prefix, out);
                prefix.truncate(at);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(root) = merkle_tree(data) {
        walk(&root, 0, &mut Vec::new(), &mut out);
    }
    out
}

/// The number a 32-byte note holds, if it fits.
fn note_value(bytes: &[u8]) -> Option<usize> {
    let (high, low) = bytes.split_at_checked(24)?;
    if high.iter().any(|&b| b != 0) {
        return None;
    }
    usize::try_from(u64::from_be_bytes(low.try_into().ok()?)).ok()
}

/// Checks a chunk proof as an Arweave node does: `data_path` leads from `root` to the
/// chunk holding byte `offset` of `size` bytes of data; returns the chunk's hash and
/// byte range. (Used to check [`chunks`]; also safe on any bytes.)
#[must_use]
pub fn validate_path(
    root: &[u8],
    offset: usize,
    size: usize,
    data_path: &[u8],
) -> Option<([u8; 32], usize, usize)> {
    let (mut id, mut left_bound, mut right_bound) = (<[u8; 32]>::try_from(root).ok()?, 0, size);
    let mut path = data_path;
    loop {
        if path.len() == 64 {
            let (hash, end) = path.split_at(32);
            let end = note_value(end)?;
            let want = sha256(&[&sha256(&[hash]), &sha256(&[&note(end)])]);
            if want != id || end <= left_bound || end > right_bound || offset >= end {
                return None;
            }
            return Some((hash.try_into().ok()?, left_bound, end));
        }
        let (branch, rest) = path.split_at_checked(96)?;
        let (l, r, b) = (&branch[..32], &branch[32..64], &branch[64..]);
        let boundary = note_value(b)?;
        if sha256(&[&sha256(&[l]), &sha256(&[r]), &sha256(&[&note(boundary)])]) != id {
            return None;
        }
        if offset < boundary {
            id = l.try_into().ok()?;
            right_bound = right_bound.min(boundary);
        } else {
            id = r.try_into().ok()?;
            left_bound = left_bound.max(boundary);
        }
        path = rest;
    }
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

    /// The JSON `POST /tx` takes (binary fields base64url, numbers as decimal strings),
    /// with the data inline.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        self.json(true)
    }

    /// [`Self::to_json`] without the data (`data` empty; `data_size` and `data_root`
    /// describe it): the header of a transaction whose data follows in chunks.
    #[must_use]
    pub fn header_json(&self) -> serde_json::Value {
        self.json(false)
    }

    fn json(&self, with_data: bool) -> serde_json::Value {
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
            "data": if with_data { b64url(&self.data) } else { String::new() },
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
/// No items, an unsigned item, a bundle larger than [`MAX_UPLOAD`], a gateway that is
/// not an http(s) URL, cannot be reached, or answers `/tx_anchor`, `/price`, `POST /tx`
/// or a `POST /chunk` with an error; each names the gateway and what it answered (and
/// which chunk).
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
    if items.is_empty() {
        return Err(Gateway::new(gateway, total)?.error("no data items to upload".to_owned()));
    }
    let data = bundle_data(items).map_err(|e| StoreError::Remote {
        store: format!("upload to gateway {gateway}"),
        reason: e,
    })?;
    let chunked = data.len() > MAX_INLINE_DATA;
    // Chunks take longer: more time for more bytes.
    let total = if chunked {
        let mib = u32::try_from(data.len() >> 20).unwrap_or(u32::MAX);
        total.saturating_add(CHUNKED_TIME_PER_MIB.saturating_mul(mib))
    } else {
        total
    };
    let gw = Gateway::new(gateway, total)?;
    if data.len() > MAX_UPLOAD {
        return Err(gw.error(format!(
            "the bundle is {} bytes; at most {MAX_UPLOAD} are uploaded",
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
    let json = if chunked {
        tx.header_json()
    } else {
        tx.to_json()
    };
    let (status, body) = gw.request("/tx", Some(&json.to_string()))?;
    // 208: the gateway already has this transaction.
    if !(200..300).contains(&status) {
        return Err(gw.error(format!(
            "POST {}/tx (transaction {id}): status {status}: {}",
            gw.base,
            snippet(&String::from_utf8_lossy(&body))
        )));
    }
    if chunked {
        post_chunks(&gw, &tx, &id)?;
    }
    tracing::info!(
        gateway = %gw.base, tx = %id, items = items.len(), bytes = tx.data.len(), chunked,
        "uploaded a bundle"
    );
    Ok(id)
}

/// Posts the data of `tx` (transaction `id`, whose header the gateway has) in chunks.
fn post_chunks(gw: &Gateway, tx: &L1Tx, id: &str) -> Result<(), StoreError> {
    let (root, size) = (b64url(&tx.data_root), tx.data.len().to_string());
    let all = chunks(&tx.data);
    let count = all.len();
    for (n, chunk) in all.into_iter().enumerate() {
        let bytes = tx.data.get(chunk.start..chunk.end).unwrap_or_default();
        if bytes.is_empty() {
            continue;
        }
        let body = json!({
            "data_root": root,
            "data_size": size,
            "data_path": b64url(&chunk.data_path),
            "offset": chunk.offset().to_string(),
            "chunk": b64url(bytes),
        })
        .to_string();
        let what = || {
            format!(
                "POST {}/chunk (chunk {} of {count}, bytes {}..{} of transaction {id})",
                gw.base,
                n + 1,
                chunk.start,
                chunk.end
            )
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let last = tries >= CHUNK_TRIES;
            match gw.request("/chunk", Some(&body)) {
                Ok((status, _)) if (200..300).contains(&status) => break,
                Ok((status, answer)) if status < 500 || last => {
                    return Err(gw.error(format!(
                        "{}: status {status}: {}",
                        what(),
                        snippet(&String::from_utf8_lossy(&answer))
                    )));
                }
                Err(e) if last => return Err(gw.error(format!("{}: {e}", what()))),
                Ok(_) | Err(_) => {
                    tracing::debug!(try_ = tries, "{}: trying again", what());
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    Ok(())
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

    /// Chunk proofs computed by arweave-js (`harness/scripts/l1-tx-vectors.mjs`,
    /// `merkle.generateTransactionChunks`): for each chunk its byte range, offset, proof
    /// length and the SHA-256 of the proof. 1310720 (5 × 256 KiB) has an empty last
    /// chunk, in the root but not among the chunks.
    #[test]
    fn chunk_proofs_match_arweave_js() {
        /// A chunk: start, end, proof length, SHA-256 of the proof.
        type Want = (usize, usize, usize, &'static str);
        let vectors: &[(usize, &[Want])] = &[
            (
                1000,
                &[(0, 1000, 64, "9KrLYV331535MzluGK_tCdPVT138vTljp1qde3svNn8")],
            ),
            (
                263_144,
                &[
                    (
                        0,
                        131_572,
                        160,
                        "HHoSItR1EmkjCcl2NkZysyFhEo-RBWv5ftP0RPsuGRo",
                    ),
                    (
                        131_572,
                        263_144,
                        160,
                        "BKHAP1MCfy-23gQeJA81k2WlXfJhN-eHaDwnr1lPT-8",
                    ),
                ],
            ),
            (
                600_000,
                &[
                    (
                        0,
                        262_144,
                        256,
                        "mPu5aTzp2mM9_dhNDmPXrcE0bhKHBI1z_h3jY6xuPbY",
                    ),
                    (
                        262_144,
                        524_288,
                        256,
                        "Dur-aAbndD4jFiMv_6_VJ58cjGpMogxMLUjf-EwquSk",
                    ),
                    (
                        524_288,
                        600_000,
                        160,
                        "CNDvvJCFuZdwQ1dymjFxTZMmS58V5gdg8iXrfPnm2OM",
                    ),
                ],
            ),
            (
                1_310_720,
                &[
                    (
                        0,
                        262_144,
                        352,
                        "3xFGFpPXnxvN08b4qUUUFCojxv-RcrVvsAJrXDAZK4o",
                    ),
                    (
                        262_144,
                        524_288,
                        352,
                        "HdV7OjujjG2_uszTXAN4EwQhmXzNXJIa0ZguAsGcEJ4",
                    ),
                    (
                        524_288,
                        786_432,
                        352,
                        "fRz83MGumZNRpCsHxLejMexR4UJ7m4JzQ8ymL76cSXs",
                    ),
                    (
                        786_432,
                        1_048_576,
                        352,
                        "kHtG8FtFZTTAD853k2qq2ZRftHcUyb9aUaa5U4RaiY4",
                    ),
                    (
                        1_048_576,
                        1_310_720,
                        256,
                        "j6w8TIsqFRoLNbwg4V7eXkw-IOgZU5L4bkOMLhPOVhA",
                    ),
                ],
            ),
        ];
        for &(n, want) in vectors {
            let data = payload(n);
            let got: Vec<Chunk> = chunks(&data)
                .into_iter()
                .filter(|c| c.end > c.start)
                .collect();
            assert_eq!(got.len(), want.len(), "size {n}");
            for (c, &(start, end, len, hash)) in got.iter().zip(want) {
                assert_eq!(
                    (c.start, c.end, c.offset()),
                    (start, end, end - 1),
                    "size {n}"
                );
                assert_eq!(c.data_path.len(), len, "size {n}");
                assert_eq!(
                    b64url(&sha256(&[&c.data_path])),
                    hash,
                    "size {n} chunk {start}"
                );
            }
        }
    }

    #[test]
    fn every_chunk_proof_validates_and_a_changed_one_does_not() {
        for n in [
            1,
            1000,
            262_144,
            263_144,
            600_000,
            1_310_720,
            2_621_440 + 77,
        ] {
            let data = payload(n);
            let root = data_root(&data);
            let all = chunks(&data);
            assert_eq!(
                all.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>(),
                chunk_ranges(n),
                "size {n}"
            );
            for c in all.iter().filter(|c| c.end > c.start) {
                let hash = sha256(&[&data[c.start..c.end]]);
                for at in [c.start, c.offset()] {
                    assert_eq!(
                        validate_path(&root, at, n, &c.data_path),
                        Some((hash, c.start, c.end)),
                        "size {n} offset {at}"
                    );
                }
                for i in [0, c.data_path.len() / 2, c.data_path.len() - 1] {
                    let mut bad = c.data_path.clone();
                    bad[i] ^= 1;
                    assert_eq!(validate_path(&root, c.offset(), n, &bad), None);
                }
                assert_eq!(validate_path(&root, c.offset(), n, &c.data_path[1..]), None);
            }
        }
        // Any bytes: no panic.
        assert_eq!(validate_path(&[0; 32], 0, 10, &[0xff; 64]), None);
        assert_eq!(validate_path(&[], 0, 10, &[]), None);
    }

    /// What a fake gateway answers to a request for `path` (the `n`th `/chunk`).
    type Respond = dyn Fn(&str, usize) -> (u16, String) + Send + Sync;

    /// A gateway on loopback that answers as `respond` says and records the requests it
    /// answered with 200.
    fn fake_gateway(
        respond: std::sync::Arc<Respond>,
    ) -> (String, std::sync::mpsc::Receiver<(String, String)>) {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let chunks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (tx, chunks, respond) = (tx.clone(), chunks.clone(), respond.clone());
                std::thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                        let mut len = 0;
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        let n = match path.as_str() {
                            "/chunk" => chunks.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                            _ => 0,
                        };
                        let (status, answer) = match path.as_str() {
                            "/tx_anchor" => (200, b64url(&[9; 32])),
                            p if p.starts_with("/price/") => (200, "1234".to_owned()),
                            p => respond(p, n),
                        };
                        if status == 200 {
                            let _ = tx.send((path, String::from_utf8(body).unwrap()));
                        }
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n",
                            answer.len()
                        );
                        out.write_all(head.as_bytes()).unwrap();
                        out.write_all(answer.as_bytes()).unwrap();
                    }
                });
            }
        });
        (url, rx)
    }

    #[test]
    fn bundles_over_the_inline_limit_are_posted_in_chunks() {
        let wallet = key1();
        let item = DataItem {
            tags: vec![(b"K".to_vec(), b"v".to_vec())],
            data: bytes::Bytes::from(payload(MAX_INLINE_DATA + 100_000)),
            ..DataItem::default()
        }
        .signed(&wallet)
        .unwrap();
        // The second chunk request fails once: it is tried again.
        let (url, seen) = fake_gateway(std::sync::Arc::new(|p: &str, n| match (p, n) {
            ("/chunk", 1) => (500, "try again".to_owned()),
            _ => (200, "{}".to_owned()),
        }));
        let id = upload_items(&url, &wallet, std::slice::from_ref(&item)).unwrap();
        let sent: Vec<(String, String)> = seen.try_iter().collect();
        let (_, header) = sent.iter().find(|(p, _)| p == "/tx").unwrap();
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(header["id"], id);
        assert_eq!(header["data"], "");
        let size: usize = header["data_size"].as_str().unwrap().parse().unwrap();
        let root = b64url_decode(header["data_root"].as_str().unwrap().as_bytes()).unwrap();
        // The header is first; the chunks follow in order, each with a valid proof.
        let posted: Vec<serde_json::Value> = sent
            .iter()
            .skip_while(|(p, _)| p != "/tx")
            .skip(1)
            .map(|(p, b)| {
                assert_eq!(p, "/chunk");
                serde_json::from_str(b).unwrap()
            })
            .collect();
        assert_eq!(posted.len(), size.div_ceil(MAX_CHUNK_SIZE));
        let mut data = Vec::new();
        for c in &posted {
            assert_eq!(c["data_root"], header["data_root"]);
            assert_eq!(c["data_size"], header["data_size"]);
            let offset: usize = c["offset"].as_str().unwrap().parse().unwrap();
            let bytes = b64url_decode(c["chunk"].as_str().unwrap().as_bytes()).unwrap();
            let path = b64url_decode(c["data_path"].as_str().unwrap().as_bytes()).unwrap();
            let (hash, start, end) = validate_path(&root, offset, size, &path).unwrap();
            assert_eq!((start, end), (data.len(), data.len() + bytes.len()));
            assert_eq!(hash, sha256(&[&bytes]));
            data.extend_from_slice(&bytes);
        }
        // What the chunks carry is the bundle the header signed.
        let mut tx = L1Tx::new(
            wallet.public_modulus(),
            vec![9; 32],
            "1234".into(),
            vec![
                (b"Bundle-Format".to_vec(), b"binary".to_vec()),
                (b"Bundle-Version".to_vec(), b"2.0.0".to_vec()),
            ],
            data,
        );
        assert_eq!(tx.data, bundle_data(std::slice::from_ref(&item)).unwrap());
        tx.signature = b64url_decode(header["signature"].as_str().unwrap().as_bytes()).unwrap();
        assert!(tx.verify());
        assert_eq!(b64url(&tx.id()), id);

        // Small bundles still go inline, in one request.
        let (url, seen) = fake_gateway(std::sync::Arc::new(|_: &str, _| (200, "{}".to_owned())));
        let small = DataItem::default().signed(&wallet).unwrap();
        upload_items(&url, &wallet, std::slice::from_ref(&small)).unwrap();
        let sent: Vec<(String, String)> = seen.try_iter().collect();
        assert!(sent.iter().all(|(p, _)| p != "/chunk"));
        let (_, header) = sent.iter().find(|(p, _)| p == "/tx").unwrap();
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_ne!(header["data"], "");
    }

    #[test]
    fn a_chunk_the_gateway_refuses_is_an_error_naming_it() {
        let wallet = key1();
        let item = DataItem {
            data: bytes::Bytes::from(payload(MAX_INLINE_DATA + 1)),
            ..DataItem::default()
        }
        .signed(&wallet)
        .unwrap();
        let (url, _) = fake_gateway(std::sync::Arc::new(|p: &str, _| match p {
            "/chunk" => (400, "invalid proof".to_owned()),
            _ => (200, "{}".to_owned()),
        }));
        let e = upload_items(&url, &wallet, &[item])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/chunk (chunk 1 of"), "{e}");
        assert!(e.contains("status 400: invalid proof"), "{e}");
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
