//! Message IDs: 32 bytes, shown as 43 characters of unpadded base64url (spec 01 §2.4).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// A native (32-byte) message ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The ID as 43 characters of base64url.
    pub fn to_human(&self) -> String {
        b64url(&self.0)
    }

    /// Parses a 43-character human ID (or takes 32 raw bytes as they are).
    pub fn from_human(s: &[u8]) -> Option<Id> {
        match s.len() {
            32 => s.try_into().ok().map(Id),
            43 => {
                let v = URL_SAFE_NO_PAD.decode(s).ok()?;
                v.as_slice().try_into().ok().map(Id)
            }
            _ => None,
        }
    }

    /// SHA-256 of some bytes, as an ID.
    pub fn sha256(data: &[u8]) -> Id {
        Id(Sha256::digest(data).into())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.to_human())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_human())
    }
}

/// Unpadded base64url (RFC 4648 §5).
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes unpadded base64url.
pub fn b64url_decode(data: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(data).ok()
}

/// Standard base64 with padding (used in RFC 8941 byte sequences).
pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard padded base64.
pub fn b64_decode(data: &[u8]) -> Option<Vec<u8>> {
    STANDARD.decode(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_roundtrip() {
        let id = Id::sha256(b"hello");
        let h = id.to_human();
        assert_eq!(h.len(), 43);
        assert_eq!(Id::from_human(h.as_bytes()), Some(id));
        assert_eq!(Id::from_human(b"short"), None);
    }
}
