//! The binary ANS-104 data item (spec 03 §7.1–7.4): layout, Avro tags, deep hash,
//! signing payload, RSA-PSS signature and IDs.

use std::fmt;

use bytes::Bytes;
use hb_core::Id;
use rsa::sha2::{Digest as _, Sha384};

use super::Ans104Error;
use crate::rsa_pss::{self, Hash};
use crate::wallet::Wallet;

/// Length of an RSA-4096 signature.
pub const SIGNATURE_LEN: usize = 512;
/// Length of an RSA-4096 owner (the modulus).
pub const OWNER_LEN: usize = 512;
/// Length of a target or an anchor.
pub const FIXED_FIELD_LEN: usize = 32;
/// At most this many tags (verification limit).
pub const MAX_TAGS: usize = 128;
/// At most this many bytes in a tag name (verification limit).
pub const MAX_TAG_NAME_LEN: usize = 1024;
/// At most this many bytes in a tag value.
pub const MAX_TAG_VALUE_LEN: usize = 3072;
/// The only supported signature type: RSA-4096 (written little-endian: `01 00`).
pub const SIGNATURE_TYPE_RSA: u16 = 1;

/// A tag: (name, value), bytes as they are on the wire.
pub type Tag = (Vec<u8>, Vec<u8>);

/// An ANS-104 data item with signature type 1 (RSA-4096).
///
/// An unsigned item has an all-zero signature (and usually an all-zero owner). The
/// fields are public; [`DataItem::parse`] guarantees the tag limits of §7.2, and
/// [`DataItem::verify`] checks them again.
#[derive(Clone, PartialEq, Eq)]
pub struct DataItem {
    /// The RSA-PSS signature; all zeros when unsigned.
    pub signature: [u8; SIGNATURE_LEN],
    /// The signer's RSA modulus `n`, big-endian; all zeros when unsigned.
    pub owner: [u8; OWNER_LEN],
    /// The optional 32-byte target.
    pub target: Option<[u8; FIXED_FIELD_LEN]>,
    /// The optional 32-byte anchor (`last_tx`).
    pub anchor: Option<[u8; FIXED_FIELD_LEN]>,
    /// The tags, in order.
    pub tags: Vec<Tag>,
    /// The data.
    pub data: Bytes,
}

impl Default for DataItem {
    fn default() -> Self {
        DataItem {
            signature: [0; SIGNATURE_LEN],
            owner: [0; OWNER_LEN],
            target: None,
            anchor: None,
            tags: Vec::new(),
            data: Bytes::new(),
        }
    }
}

impl fmt::Debug for DataItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut d = f.debug_struct("DataItem");
        if self.is_signed() {
            d.field("id", &self.id());
        }
        d.field("unsigned_id", &self.unsigned_id());
        if let Some(t) = &self.target {
            d.field("target", &hb_core::id::b64url(t));
        }
        if let Some(a) = &self.anchor {
            d.field("anchor", &hb_core::id::b64url(a));
        }
        let tags: Vec<(String, String)> =
            self.tags.iter().map(|(n, v)| (text(n), text(v))).collect();
        d.field("tags", &tags)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Ans104Error> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (head, _) = rest.split_at_checked(n).ok_or(Ans104Error::Truncated {
            field,
            needed: n as u64,
            available: rest.len(),
        })?;
        self.pos += n;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Ans104Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u64_le(&mut self, field: &'static str) -> Result<u64, Ans104Error> {
        Ok(u64::from_le_bytes(self.array::<8>(field)?))
    }

    fn optional(&mut self, field: &'static str) -> Result<Option<[u8; 32]>, Ans104Error> {
        match self.array::<1>(field)? {
            [0] => Ok(None),
            [1] => Ok(Some(self.array::<FIXED_FIELD_LEN>(field)?)),
            [byte] => Err(Ans104Error::BadPresenceByte { field, byte }),
        }
    }
}

impl DataItem {
    /// Parses a serialised data item (§7.1). Strict: the signature type must be 1, the
    /// presence bytes 0 or 1, the tag count and byte length in the header must match the
    /// Avro block exactly, the block must be in canonical form (so [`Self::to_bytes`]
    /// gives back the same bytes), and the limits of §7.2 hold (≤ 128 tags, names 1–1024
    /// bytes, values ≤ 3072 bytes). Everything after the tags is the data.
    ///
    /// # Errors
    /// Any malformed, truncated or out-of-limits input, with the reason.
    pub fn parse(bytes: &[u8]) -> Result<DataItem, Ans104Error> {
        Self::parse_bytes(&Bytes::copy_from_slice(bytes))
    }

    /// As [`Self::parse`], sharing the data with `bytes` instead of copying it.
    ///
    /// # Errors
    /// As [`Self::parse`].
    pub fn parse_bytes(bytes: &Bytes) -> Result<DataItem, Ans104Error> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let sig_type = u16::from_le_bytes(r.array::<2>("signature type")?);
        if sig_type != SIGNATURE_TYPE_RSA {
            return Err(Ans104Error::UnsupportedSignatureType(sig_type));
        }
        let signature = r.array::<SIGNATURE_LEN>("signature")?;
        let owner = r.array::<OWNER_LEN>("owner")?;
        let target = r.optional("target")?;
        let anchor = r.optional("anchor")?;
        let count = r.u64_le("tag count")?;
        let tags_len = r.u64_le("tag block length")?;
        if count > MAX_TAGS as u64 {
            return Err(Ans104Error::TooManyTags(count));
        }
        let tags = if count == 0 {
            if tags_len != 0 {
                return Err(Ans104Error::BadTags(format!(
                    "the header declares no tags but a {tags_len}-byte tag block"
                )));
            }
            Vec::new()
        } else {
            let available = r.remaining();
            let len = usize::try_from(tags_len)
                .ok()
                .filter(|&l| l <= available)
                .ok_or(Ans104Error::Truncated {
                    field: "tag block",
                    needed: tags_len,
                    available,
                })?;
            let block = r.take(len, "tag block")?;
            // `count` is at most 128 here.
            decode_tags(block, count as usize)?
        };
        let data = bytes.slice(r.pos.min(bytes.len())..);
        Ok(DataItem {
            signature,
            owner,
            target,
            anchor,
            tags,
            data,
        })
    }

    /// The serialised item (§7.1).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let tags = encode_tags(&self.tags);
        let mut out = Vec::with_capacity(2 + 1024 + 66 + 16 + tags.len() + self.data.len());
        out.extend_from_slice(&SIGNATURE_TYPE_RSA.to_le_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.owner);
        for field in [&self.target, &self.anchor] {
            match field {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(v);
                }
                None => out.push(0),
            }
        }
        let (count, len) = if self.tags.is_empty() {
            (0u64, 0u64)
        } else {
            (self.tags.len() as u64, tags.len() as u64)
        };
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&tags);
        out.extend_from_slice(&self.data);
        out
    }

    /// True when the signature is not all zeros.
    #[must_use]
    pub fn is_signed(&self) -> bool {
        self.signature.iter().any(|&b| b != 0)
    }

    /// The deep hash the signature covers (§7.4): `DH(["dataitem", "1", "1", owner,
    /// target, anchor, tags, data])`.
    #[must_use]
    pub fn signature_data(&self) -> [u8; 48] {
        self.signature_data_with_owner(&self.owner)
    }

    fn signature_data_with_owner(&self, owner: &[u8]) -> [u8; 48] {
        let tags = encode_tags(&self.tags);
        let target: &[u8] = self.target.as_ref().map_or(&[], |t| t.as_slice());
        let anchor: &[u8] = self.anchor.as_ref().map_or(&[], |a| a.as_slice());
        deep_hash_blobs(&[
            b"dataitem",
            b"1",
            b"1",
            owner,
            target,
            anchor,
            &tags,
            &self.data,
        ])
    }

    /// The signed ID: `sha256(signature)` (meaningful only when signed).
    #[must_use]
    pub fn id(&self) -> Id {
        Id::sha256(&self.signature)
    }

    /// The unsigned ID: `sha256` of the signature data computed with an all-zero owner.
    #[must_use]
    pub fn unsigned_id(&self) -> Id {
        Id::sha256(&self.signature_data_with_owner(&[0; OWNER_LEN]))
    }

    /// Signs the item with `wallet`: sets the owner to the wallet's modulus and the
    /// signature to RSASSA-PSS (SHA-256, salt 32) over [`Self::signature_data`].
    ///
    /// # Errors
    /// The wallet is not RSA-4096, or signing fails.
    pub fn sign(&mut self, wallet: &Wallet) -> Result<(), Ans104Error> {
        let n = wallet.public_modulus();
        self.owner = n.try_into().map_err(|_| Ans104Error::KeySize(n.len()))?;
        let sig = rsa_pss::sign(wallet, Hash::Sha256, &self.signature_data())?;
        self.signature = sig
            .as_slice()
            .try_into()
            .map_err(|_| Ans104Error::KeySize(sig.len()))?;
        Ok(())
    }

    /// Builder form of [`Self::sign`].
    ///
    /// # Errors
    /// As [`Self::sign`].
    pub fn signed(mut self, wallet: &Wallet) -> Result<DataItem, Ans104Error> {
        self.sign(wallet)?;
        Ok(self)
    }

    /// True when the item is signed, its tags are within the limits of §7.2 and its
    /// signature verifies against its owner (any PSS salt length is accepted).
    #[must_use]
    pub fn verify(&self) -> bool {
        self.check().is_ok()
    }

    /// [`Self::verify`] with the reason for a failure.
    ///
    /// # Errors
    /// [`Ans104Error::BadSignature`] for an unsigned item or a signature that does not
    /// verify; a tag-limit error for tags out of limits.
    pub fn check(&self) -> Result<(), Ans104Error> {
        check_tag_limits(&self.tags)?;
        if !self.is_signed()
            || !rsa_pss::verify(
                &self.owner,
                Hash::Sha256,
                &self.signature_data(),
                &self.signature,
            )
        {
            return Err(Ans104Error::BadSignature);
        }
        Ok(())
    }

    /// The value of the first tag named exactly `name`.
    #[must_use]
    pub fn tag(&self, name: &str) -> Option<&[u8]> {
        self.tags
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// Checks the tag limits of §7.2: at most 128 tags, names 1–1024 bytes, values at most
/// 3072 bytes.
///
/// # Errors
/// The first limit broken.
pub fn check_tag_limits(tags: &[Tag]) -> Result<(), Ans104Error> {
    if tags.len() > MAX_TAGS {
        return Err(Ans104Error::TooManyTags(tags.len() as u64));
    }
    for (i, (name, value)) in tags.iter().enumerate() {
        check_tag(i + 1, name.len() as u64, value.len() as u64)?;
    }
    Ok(())
}

fn check_tag(index: usize, name_len: u64, value_len: u64) -> Result<(), Ans104Error> {
    if name_len == 0 {
        return Err(Ans104Error::EmptyTagName(index));
    }
    if name_len > MAX_TAG_NAME_LEN as u64 {
        return Err(Ans104Error::TagNameTooLong {
            index,
            len: name_len,
        });
    }
    if value_len > MAX_TAG_VALUE_LEN as u64 {
        return Err(Ans104Error::TagValueTooLong {
            index,
            len: value_len,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Avro tags (§7.2)
// ---------------------------------------------------------------------------------

/// ZigZag-maps a signed integer (`n >= 0` → `2n`, `n < 0` → `-2n - 1`).
#[must_use]
pub fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Reverses [`zigzag`].
#[must_use]
pub fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Appends `v` as a little-endian base-128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`, advancing it. At most 10 bytes; overflow is an error.
///
/// # Errors
/// The input ends inside the varint, or it does not fit in 64 bits.
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Ans104Error> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or_else(|| Ans104Error::BadTags("the tag block ends inside a number".into()))?;
        *pos += 1;
        let part = u64::from(byte & 0x7f);
        if shift == 63 && part > 1 {
            return Err(Ans104Error::BadTags("a number overflows 64 bits".into()));
        }
        v |= part << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Ans104Error::BadTags("a number overflows 64 bits".into()))
}

fn write_avro_bytes(out: &mut Vec<u8>, s: &[u8]) {
    write_varint(out, zigzag(s.len() as i64));
    out.extend_from_slice(s);
}

/// Encodes tags as an Avro array of `{name, value}` records in one block (§7.2):
/// `zigzag(count) ‖ (string name ‖ string value)* ‖ 00`; no tags → no bytes.
#[must_use]
pub fn encode_tags(tags: &[Tag]) -> Vec<u8> {
    if tags.is_empty() {
        return Vec::new();
    }
    let size: usize = tags.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
    let mut out = Vec::with_capacity(size + 11);
    write_varint(&mut out, zigzag(tags.len() as i64));
    for (name, value) in tags {
        write_avro_bytes(&mut out, name);
        write_avro_bytes(&mut out, value);
    }
    out.push(0);
    out
}

/// Reads a non-negative Avro length at `*pos` that must not exceed `limit`.
fn read_len(buf: &[u8], pos: &mut usize, what: &str) -> Result<u64, Ans104Error> {
    let n = unzigzag(read_varint(buf, pos)?);
    u64::try_from(n).map_err(|_| Ans104Error::BadTags(format!("{what} is negative ({n})")))
}

fn read_slice<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    len: u64,
    what: &str,
) -> Result<&'a [u8], Ans104Error> {
    let rest = buf.get(*pos..).unwrap_or_default();
    let slice = usize::try_from(len)
        .ok()
        .and_then(|l| rest.get(..l))
        .ok_or_else(|| {
            Ans104Error::BadTags(format!(
                "{what} is {len} bytes but only {} remain in the tag block",
                rest.len()
            ))
        })?;
    *pos += slice.len();
    Ok(slice)
}

/// Decodes an Avro tag block that must hold exactly `expected` tags (≤ 128) in a single
/// block, end with the `00` terminator, fill `block` exactly, respect the limits of
/// §7.2 and be canonically encoded.
///
/// # Errors
/// Any deviation, with the reason.
pub fn decode_tags(block: &[u8], expected: usize) -> Result<Vec<Tag>, Ans104Error> {
    let mut pos = 0;
    let count = unzigzag(read_varint(block, &mut pos)?);
    if count < 0 {
        return Err(Ans104Error::BadTags(
            "Avro blocks with a byte size (negative count) are not supported".into(),
        ));
    }
    if count as u64 != expected as u64 {
        return Err(Ans104Error::BadTags(format!(
            "the header declares {expected} tags but the tag block holds {count}"
        )));
    }
    let mut tags = Vec::with_capacity(expected.min(MAX_TAGS));
    for index in 1..=expected {
        let name_len = read_len(block, &mut pos, "a tag name's length")?;
        check_tag(index, name_len, 0)?;
        let name = read_slice(block, &mut pos, name_len, "a tag name")?;
        let value_len = read_len(block, &mut pos, "a tag value's length")?;
        check_tag(index, name_len, value_len)?;
        let value = read_slice(block, &mut pos, value_len, "a tag value")?;
        tags.push((name.to_vec(), value.to_vec()));
    }
    if read_varint(block, &mut pos)? != 0 {
        return Err(Ans104Error::BadTags(
            "the tags are not followed by the 0 that ends the Avro array".into(),
        ));
    }
    if pos != block.len() {
        return Err(Ans104Error::BadTags(format!(
            "the tag block is {} bytes but the tags end after {pos}",
            block.len()
        )));
    }
    if encode_tags(&tags) != block {
        return Err(Ans104Error::BadTags(
            "the tag block is not canonically encoded (over-long numbers)".into(),
        ));
    }
    Ok(tags)
}

// ---------------------------------------------------------------------------------
// Deep hash (§7.3)
// ---------------------------------------------------------------------------------

/// A deep-hash input: a blob or a list of inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeepHashItem<'a> {
    /// A byte string.
    Blob(&'a [u8]),
    /// A list.
    List(Vec<DeepHashItem<'a>>),
}

fn sha384(parts: &[&[u8]]) -> [u8; 48] {
    let mut h = Sha384::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn blob_hash(b: &[u8]) -> [u8; 48] {
    let tag = sha384(&[b"blob", b.len().to_string().as_bytes()]);
    sha384(&[&tag, &sha384(&[b])])
}

fn list_hash<T>(items: &[T], hash: impl Fn(&T) -> [u8; 48]) -> [u8; 48] {
    let mut acc = sha384(&[b"list", items.len().to_string().as_bytes()]);
    for item in items {
        acc = sha384(&[&acc, &hash(item)]);
    }
    acc
}

/// The Arweave deep hash (SHA-384) of a blob or a (nested) list.
#[must_use]
pub fn deep_hash(item: &DeepHashItem<'_>) -> [u8; 48] {
    match item {
        DeepHashItem::Blob(b) => blob_hash(b),
        DeepHashItem::List(l) => list_hash(l, deep_hash),
    }
}

/// The deep hash of a flat list of blobs.
#[must_use]
pub fn deep_hash_blobs(blobs: &[&[u8]]) -> [u8; 48] {
    list_hash(blobs, |b| blob_hash(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_core::id::b64url;

    #[test]
    fn zigzag_and_varints() {
        for (n, z) in [
            (0i64, 0u64),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (64, 128),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ] {
            assert_eq!(zigzag(n), z);
            assert_eq!(unzigzag(z), n);
        }
        for v in [0u64, 1, 127, 128, 300, 16383, 16384, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
        let mut out = Vec::new();
        write_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        // 11 continuation bytes, a truncated number, a tenth byte above 1: errors.
        let mut pos = 0;
        assert!(read_varint(&[0xff; 11], &mut pos).is_err());
        pos = 0;
        assert!(read_varint(&[0x80], &mut pos).is_err());
        pos = 0;
        let mut big = vec![0xff; 9];
        big.push(0x02);
        assert!(read_varint(&big, &mut pos).is_err());
    }

    #[test]
    fn avro_vector() {
        let tags: Vec<Tag> = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"Content-Type".to_vec(), b"text/plain".to_vec()),
        ];
        let mut expected = vec![0x04, 0x02, b'a', 0x02, b'1', 0x18];
        expected.extend_from_slice(b"Content-Type");
        expected.push(0x14);
        expected.extend_from_slice(b"text/plain");
        expected.push(0);
        assert_eq!(encode_tags(&tags), expected);
        assert_eq!(decode_tags(&expected, 2).unwrap(), tags);
        assert!(encode_tags(&[]).is_empty());
        // Empty value: a single 00.
        let t: Vec<Tag> = vec![(b"k".to_vec(), Vec::new())];
        assert_eq!(encode_tags(&t), [0x02, 0x02, b'k', 0x00, 0x00]);
        assert_eq!(decode_tags(&[0x02, 0x02, b'k', 0x00, 0x00], 1).unwrap(), t);
    }

    #[test]
    fn avro_rejects_malformed_blocks() {
        // Count disagrees with the header.
        assert!(decode_tags(&[0x02, 0x02, b'k', 0x00, 0x00], 2).is_err());
        // Negative count.
        assert!(decode_tags(&[0x01, 0x02, b'k', 0x00, 0x00], 1).is_err());
        // Missing terminator, trailing bytes, empty name, over-long value length.
        assert!(decode_tags(&[0x02, 0x02, b'k', 0x00], 1).is_err());
        assert!(decode_tags(&[0x02, 0x02, b'k', 0x00, 0x00, 0x00], 1).is_err());
        assert!(decode_tags(&[0x02, 0x00, 0x00, 0x00], 1).is_err());
        assert!(decode_tags(&[0x02, 0x02, b'k', 0x7e, 0x00], 1).is_err());
        // Non-canonical (padded) varint for the name length.
        assert!(decode_tags(&[0x02, 0x82, 0x00, b'k', 0x00, 0x00], 1).is_err());
        // A name of 1025 bytes.
        let long: Vec<Tag> = vec![(vec![b'n'; 1025], b"v".to_vec())];
        let err = decode_tags(&encode_tags(&long), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tag 1's name is 1025 bytes; at most 1024 are allowed"
        );
    }

    #[test]
    fn deep_hash_vectors() {
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
        assert_eq!(
            deep_hash_blobs(&[b"a"]),
            deep_hash(&DeepHashItem::List(vec![DeepHashItem::Blob(b"a")]))
        );
        assert_eq!(deep_hash_blobs(&[]), deep_hash(&DeepHashItem::List(vec![])));
    }
}
