//! Snapshots: the whole state of a Lua instance as bytes.
//!
//! The engine module has one mutable global, `__stack_pointer`, and a static function
//! table, so the state between calls is the linear memory plus that global. Memory is
//! stored sparsely in 4 KiB chunks: chunks that are all zero (most of the 1 MiB C stack,
//! freed heap that was never used) are left out.
//!
//! # Format (version 1, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `HBLUASN1` |
//! | 32 | sha256 of the engine module ([`crate::ENGINE_SHA256`]) |
//! | 4 | `__stack_pointer` |
//! | 8 | linear memory size in bytes (a multiple of 64 KiB) |
//! | 4 | n: number of chunks stored |
//! | n × (4 + 4096) | chunk index (strictly increasing), chunk bytes |
//!
//! Chunks not listed are zero. The encoding of a given memory is unique, so equal states
//! give equal snapshot bytes.

use std::sync::Arc;

use crate::error::LuaError;

/// Bytes per stored chunk.
pub const CHUNK: usize = 4096;
const MAGIC: &[u8; 8] = b"HBLUASN1";
const HEADER: usize = 8 + 32 + 4 + 8 + 4;
const WASM_PAGE: u64 = 65536;

/// A snapshot of a Lua instance ([`crate::Lua::snapshot`]). Cheap to clone (shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    bytes: Arc<[u8]>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("bytes", &self.bytes.len())
            .field("memory_size", &self.memory_size())
            .finish()
    }
}

impl Snapshot {
    /// Encodes `memory` and the stack pointer.
    pub(crate) fn capture(module_sha256: &[u8; 32], stack_pointer: u32, memory: &[u8]) -> Self {
        let zero = [0u8; CHUNK];
        let chunks: Vec<(u32, &[u8])> = memory
            .chunks(CHUNK)
            .enumerate()
            .filter(|(_, c)| *c != &zero[..c.len()])
            .map(|(i, c)| (i as u32, c))
            .collect();
        let mut out = Vec::with_capacity(HEADER + chunks.len() * (4 + CHUNK));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(module_sha256);
        out.extend_from_slice(&stack_pointer.to_le_bytes());
        out.extend_from_slice(&(memory.len() as u64).to_le_bytes());
        out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for (i, c) in chunks {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(c);
            // The last chunk of a memory is always whole (64 KiB pages), but pad anyway.
            out.resize(out.len() + (CHUNK - c.len()), 0);
        }
        Snapshot { bytes: out.into() }
    }

    /// [`Snapshot::capture`] into the bytes of `previous` (a snapshot of the same
    /// instance, held nowhere else) when the same chunks are stored: only the chunks
    /// that changed are copied, and no memory is allocated. Otherwise a new capture.
    /// The result is the same bytes either way.
    pub(crate) fn recapture(
        mut previous: Snapshot,
        module_sha256: &[u8; 32],
        stack_pointer: u32,
        memory: &[u8],
    ) -> Self {
        let reusable = previous.bytes.len() >= HEADER
            && previous.memory_size() == memory.len() as u64
            && previous.bytes[8..40] == module_sha256[..]
            && memory.len().is_multiple_of(CHUNK);
        if reusable
            && let Some(bytes) = Arc::get_mut(&mut previous.bytes)
            && update_chunks(&mut bytes[HEADER..], memory)
        {
            bytes[40..44].copy_from_slice(&stack_pointer.to_le_bytes());
            return previous;
        }
        Snapshot::capture(module_sha256, stack_pointer, memory)
    }

    /// Checks and wraps snapshot bytes (from [`Snapshot::as_bytes`], possibly stored
    /// elsewhere). Does not check which engine made it; restoring does.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Result<Self, LuaError> {
        let s = Snapshot {
            bytes: bytes.into(),
        };
        s.validate()?;
        Ok(s)
    }

    /// The encoded snapshot.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The sha256 of the engine module the snapshot was taken with.
    pub fn module_sha256(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.bytes[8..40]);
        h
    }

    pub(crate) fn stack_pointer(&self) -> u32 {
        u32::from_le_bytes(self.bytes[40..44].try_into().unwrap_or_default())
    }

    /// Size of the linear memory it restores, in bytes.
    pub fn memory_size(&self) -> u64 {
        u64::from_le_bytes(self.bytes[44..52].try_into().unwrap_or_default())
    }

    fn chunk_count(&self) -> usize {
        u32::from_le_bytes(self.bytes[52..56].try_into().unwrap_or_default()) as usize
    }

    /// The stored chunks: (byte offset in memory, 4 KiB of bytes).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, &[u8])> {
        self.bytes[HEADER..].chunks_exact(4 + CHUNK).map(|c| {
            let idx = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
            (idx * CHUNK, &c[4..])
        })
    }

    fn validate(&self) -> Result<(), LuaError> {
        let bad = |m: &str| Err(LuaError::Snapshot(m.to_string()));
        if self.bytes.len() < HEADER || &self.bytes[..8] != MAGIC {
            return bad("not an hb-lua snapshot (magic)");
        }
        let size = self.memory_size();
        if !size.is_multiple_of(WASM_PAGE) || size > 1 << 32 {
            return bad("memory size is not a whole number of wasm pages up to 4 GiB");
        }
        let n = self.chunk_count();
        let body = self.bytes.len() - HEADER;
        if !body.is_multiple_of(4 + CHUNK) || body / (4 + CHUNK) != n {
            return bad("length does not match the chunk count");
        }
        let max_chunks = (size / CHUNK as u64) as usize;
        let mut previous: Option<usize> = None;
        for c in self.bytes[HEADER..].chunks_exact(4 + CHUNK) {
            let idx = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
            if idx >= max_chunks || previous.is_some_and(|p| idx <= p) {
                return bad("chunk indices out of range or not increasing");
            }
            previous = Some(idx);
        }
        if self.stack_pointer() as u64 > size {
            return bad("stack pointer outside memory");
        }
        Ok(())
    }
}

/// Brings stored chunks (`stored`: index and bytes, as in the format) up to date with
/// `memory` when the non-zero chunks of `memory` are exactly the stored ones; false
/// (and `stored` partly updated) when they are not.
fn update_chunks(stored: &mut [u8], memory: &[u8]) -> bool {
    let zero = [0u8; CHUNK];
    let mut entries = stored.chunks_exact_mut(4 + CHUNK);
    let mut next = entries.next();
    for (i, c) in memory.chunks_exact(CHUNK).enumerate() {
        let stored_here = next
            .as_ref()
            .is_some_and(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize == i);
        if stored_here {
            if let Some(entry) = next.take() {
                let bytes = &mut entry[4..];
                if c == &zero[..] {
                    return false;
                }
                if bytes != c {
                    bytes.copy_from_slice(c);
                }
            }
            next = entries.next();
        } else if c != &zero[..] {
            return false;
        }
    }
    next.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_is_sparse_and_roundtrips() {
        let mut memory = vec![0u8; 2 * WASM_PAGE as usize];
        memory[5] = 1;
        memory[70_000] = 2;
        let s = Snapshot::capture(&[7; 32], 1234, &memory);
        assert_eq!(s.as_bytes().len(), HEADER + 2 * (4 + CHUNK));
        let s2 = Snapshot::from_bytes(s.as_bytes().to_vec()).expect("valid");
        assert_eq!(s2.memory_size(), memory.len() as u64);
        assert_eq!(s2.stack_pointer(), 1234);
        assert_eq!(s2.module_sha256(), [7; 32]);
        let mut back = vec![0u8; memory.len()];
        for (off, bytes) in s2.chunks() {
            back[off..off + CHUNK].copy_from_slice(bytes);
        }
        assert_eq!(back, memory);
    }

    #[test]
    fn recapture_gives_the_bytes_of_a_capture() {
        let mut memory = vec![0u8; 2 * WASM_PAGE as usize];
        memory[5] = 1;
        memory[70_000] = 2;
        let first = Snapshot::capture(&[7; 32], 1, &memory);
        // The same chunks, changed: updated in place.
        memory[6] = 3;
        let expected = Snapshot::capture(&[7; 32], 2, &memory);
        let again = Snapshot::recapture(first, &[7; 32], 2, &memory);
        assert_eq!(again.as_bytes(), expected.as_bytes());
        // Other chunks (one more, one fewer, none), other sizes, a shared previous one.
        let mut cases = Vec::new();
        let mut more = memory.clone();
        more[100_000] = 9;
        cases.push(more);
        let mut fewer = memory.clone();
        fewer[70_000] = 0;
        cases.push(fewer);
        cases.push(vec![0u8; memory.len()]);
        let mut bigger = memory.clone();
        bigger.resize(3 * WASM_PAGE as usize, 0);
        cases.push(bigger);
        for case in cases {
            let previous = Snapshot::capture(&[7; 32], 2, &memory);
            let expected = Snapshot::capture(&[7; 32], 4, &case);
            assert_eq!(
                Snapshot::recapture(previous, &[7; 32], 4, &case).as_bytes(),
                expected.as_bytes()
            );
        }
        let previous = Snapshot::capture(&[7; 32], 2, &memory);
        let held = previous.clone();
        memory[7] = 4;
        let expected = Snapshot::capture(&[7; 32], 2, &memory);
        assert_eq!(
            Snapshot::recapture(previous, &[7; 32], 2, &memory).as_bytes(),
            expected.as_bytes()
        );
        assert_ne!(
            held.as_bytes(),
            expected.as_bytes(),
            "the held copy is untouched"
        );
    }

    #[test]
    fn malformed_snapshots_are_errors() {
        let memory = vec![1u8; WASM_PAGE as usize];
        let good = Snapshot::capture(&[0; 32], 0, &memory).as_bytes().to_vec();
        assert!(Snapshot::from_bytes(Vec::new()).is_err());
        for n in [0, 8, HEADER, good.len() - 1] {
            assert!(
                Snapshot::from_bytes(good[..n].to_vec()).is_err(),
                "prefix {n}"
            );
        }
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert!(Snapshot::from_bytes(bad_magic).is_err());
        let mut bad_index = good.clone();
        bad_index[HEADER..HEADER + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Snapshot::from_bytes(bad_index).is_err());
        let mut bad_size = good.clone();
        bad_size[44..52].copy_from_slice(&7u64.to_le_bytes());
        assert!(Snapshot::from_bytes(bad_size).is_err());
        assert!(Snapshot::from_bytes(good).is_ok());
    }
}
