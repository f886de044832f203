//! `ans104@1.0`: ANS-104 data items as a message codec (spec 03 §7).
//!
//! * [`item`]: the binary data item ([`DataItem`], §7.1), its Avro tag block (§7.2), the
//!   SHA-384 deep hash (§7.3), signing payload, RSA-PSS signature and IDs (§7.4).
//! * [`bundle`]: HyperBEAM's bundles: data that is a map of items, indexed by unsigned
//!   ID, with a `bundle-map` manifest item (§7.5).
//! * [`convert`]: TABM ↔ data item (§7.6, §7.7) and the rich-message helpers
//!   [`message_to_item`], [`item_to_message`], [`deserialize_verified`].
//! * [`commit`](mod@commit): `ans104@1.0` commitments ([`commit()`], [`verify()`],
//!   [`committed_keys()`], §7.8) and the [`Ans104Device`].
//!
//! Every byte string handed to [`DataItem::parse`] is treated as hostile: lengths are
//! checked before use, nothing is allocated from a length field that the input does not
//! back with bytes, and nesting is bounded by [`MAX_DEPTH`]. No input makes this module
//! panic.
//!
//! Deliberate differences from the reference (for `docs/COMPATIBILITY.md`):
//! * An unsigned item whose tag names are not all normalised gets its `unsigned`
//!   commitment keyed by its **unsigned ID**, not by the all-zero ID (spec 03 §7.7 step
//!   5, §13 item 11): with the zero key every such message would share one ID.
//! * Items that carry `bundle-format`/`bundle-version` but no `bundle-map` (standard
//!   ANS-104 bundles), or that have an empty bundle body, are kept with their raw data
//!   and their bundle tags instead of failing to convert.
//! * Messages are encoded only with their `ans104@1.0` commitment; commitments made by
//!   other devices (httpsig) are left out instead of making the conversion fail.
//! * A message that would need more than 128 tags, a tag name longer than 1024 bytes or
//!   a tag value longer than 3072 bytes cannot be encoded (the reference encodes it and
//!   then fails to verify it); a data item's tags are checked when it is parsed.
//! * When checking `original-tags`, the bundle tags (`bundle-format`, `bundle-version`,
//!   `bundle-map`), which decoding removes from the message, are ignored, so a signed
//!   mixed-case bundle converts back to its item.
//! * `verify` also checks that a commitment's `committer` is the owner's address.
//! * A commitment's `trusted-keys` (set by the gateway store, spec 05 §6.5) decide its
//!   committed keys, as in the reference, but are not merged into the data item when
//!   the message is encoded (the reference merges them, so the item it rebuilds is not
//!   the one the gateway holds).

pub mod bundle;
pub mod commit;
pub mod convert;
pub mod item;

use hb_core::structured::CodecError;
use thiserror::Error;

use crate::wallet::WalletError;

pub use commit::{Ans104Device, commit, committed_keys, verify};
pub use convert::{
    deserialize_verified, item_to_message, item_to_tabm, message_to_item, tabm_to_item, verify_tree,
};
pub use item::{DataItem, Tag, deep_hash, deep_hash_blobs};

/// The device name, and the `commitment-device` of every commitment made here.
pub const DEVICE_NAME: &str = "ans104@1.0";
/// The `alg` of signed (RSA-PSS) commitments.
pub const ALG_RSA: &str = "rsa-pss";
/// The `alg` of the commitment that only records the original tags of an unsigned item.
pub const ALG_UNSIGNED: &str = "unsigned";
/// The content type of a serialised data item.
pub const CONTENT_TYPE: &str = "application/ans104";
/// The commitment key that lists the keys a node takes as committed on someone else's
/// word: the (normalised) tag names of an item read from an Arweave gateway whose
/// signature could not be checked (spec 05 §6.5, `ans104_trust_gql`). It belongs to
/// the commitment, never to the data item: it is not signed and not encoded.
pub const TRUSTED_KEYS: &str = "trusted-keys";
/// How deeply bundles may nest inside one another.
pub const MAX_DEPTH: usize = 32;

/// Why a data item could not be parsed, built, signed or verified. Tag numbers in the
/// messages count from 1.
#[derive(Debug, Error)]
pub enum Ans104Error {
    /// The input ends before a field is complete.
    #[error(
        "the data item is truncated: its {field} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: usize,
    },
    /// A signature type other than 1 (RSA-4096).
    #[error("signature type {0} is not supported; only type 1 (RSA-4096, Arweave) is")]
    UnsupportedSignatureType(u16),
    /// The presence byte of `target` or `anchor` is neither 0 nor 1.
    #[error("the {field} presence byte is {byte}; it must be 0 (absent) or 1 (present)")]
    BadPresenceByte {
        /// `target` or `anchor`.
        field: &'static str,
        /// The byte found.
        byte: u8,
    },
    /// More tags than ANS-104 allows.
    #[error("the data item has {0} tags; at most 128 are allowed")]
    TooManyTags(u64),
    /// A tag name longer than 1024 bytes.
    #[error("tag {index}'s name is {len} bytes; at most 1024 are allowed")]
    TagNameTooLong {
        /// The tag's position, from 1.
        index: usize,
        /// Its length in bytes.
        len: u64,
    },
    /// A tag value longer than 3072 bytes.
    #[error("tag {index}'s value is {len} bytes; at most 3072 are allowed")]
    TagValueTooLong {
        /// The tag's position, from 1.
        index: usize,
        /// Its length in bytes.
        len: u64,
    },
    /// A tag with an empty name.
    #[error("tag {0} has an empty name")]
    EmptyTagName(usize),
    /// The Avro tag block is malformed or inconsistent with the item header.
    #[error("the data item's tags are malformed: {0}")]
    BadTags(String),
    /// A tag name that cannot be a message key.
    #[error("tag {0}'s name is not valid UTF-8, so it cannot become a message key")]
    NonUtf8TagName(usize),
    /// The RSA-PSS signature does not verify.
    #[error("the data item's signature does not verify")]
    BadSignature,
    /// A nested item's signature does not verify.
    #[error("the signature of the data item at `{0}` inside the bundle does not verify")]
    BadNestedSignature(String),
    /// The bundle inside a data item is malformed.
    #[error("the data item's bundle is malformed: {0}")]
    Bundle(String),
    /// Bundles nest too deeply.
    #[error("the data item nests bundles more than {MAX_DEPTH} levels deep")]
    TooDeep,
    /// A message key that must hold an ANS-104 field holds something else.
    #[error("the `{field}` key cannot be encoded as the data item's {field}: {reason}")]
    BadField {
        /// The key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A value that no data item can hold.
    #[error("the value of `{key}` is a {ty}, which cannot be encoded as ANS-104")]
    Unencodable {
        /// The key.
        key: String,
        /// The value's type.
        ty: &'static str,
    },
    /// More than one `ans104@1.0` commitment.
    #[error(
        "ans104@1.0 supports one signature per message, but this message has {0} ans104@1.0 commitments"
    )]
    MultipleSignatures(usize),
    /// The `original-tags` of a commitment are malformed.
    #[error("the commitment's original-tags are malformed: {0}")]
    BadOriginalTags(String),
    /// The message's keys differ from what its `original-tags` record.
    #[error("the message's keys do not match the original-tags of its commitment: {0}")]
    InvalidOriginalTags(String),
    /// The message has no commitment with this ID.
    #[error("the message has no commitment `{0}`")]
    NoCommitment(String),
    /// A commitment is malformed or not an `ans104@1.0` one.
    #[error("invalid ans104@1.0 commitment: {0}")]
    InvalidCommitment(String),
    /// The wallet's key is not RSA-4096.
    #[error("ANS-104 needs an RSA-4096 key (512-byte modulus); this wallet's modulus is {0} bytes")]
    KeySize(usize),
    /// The structured codec failed.
    #[error("structured codec error: {0}")]
    Codec(#[from] CodecError),
    /// The wallet could not sign.
    #[error("signing failed: {0}")]
    Wallet(#[from] WalletError),
}
