//! # hb-store
//!
//! Where a node keeps what it has computed and been given (spec 05 §6).
//!
//! * [`Store`]: the store interface of spec 05 §6.1 — paths naming bytes, groups and
//!   links; every batch of changes atomic.
//! * [`LmdbStore`]: the embedded default, LMDB through `heed`, durable by default;
//!   [`MemoryStore`]: the same model in memory; [`FsStore`]: files, directories and
//!   symbolic links under a prefix (spec 05 §6.2); [`Chain`]: stores tried in order.
//! * [`MessageCache`]: the content-addressed message cache of spec 05 §6.4 over any
//!   store, which is also the engine's [`hb_core::Cache`].
//! * [`RemoteNodeSource`] and [`RemoteNodeStore`]: another node, read as a message
//!   source and written as a store (spec 05 §6.6).
//! * [`upload_items`]: signed data items to an Arweave gateway, as a standard ANS-104
//!   bundle in an Arweave transaction signed by the node's wallet (issue 4).

pub mod cache;
pub mod fs;
pub mod gateway;
pub mod http;
pub mod kv;
pub mod lmdb;
pub mod memory;
pub mod remote;
pub mod remote_store;
pub mod store;
pub mod upload;

pub use cache::{CacheError, MessageCache, MessageSource};
pub use fs::FsStore;
pub use gateway::GatewaySource;
pub use lmdb::{Durability, LmdbStore};
pub use memory::MemoryStore;
pub use remote::{RemoteNodeSource, sources};
pub use remote_store::RemoteNodeStore;
pub use store::{Chain, EntryType, Op, Scope, Store, StoreError};
pub use upload::upload_items;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The model of spec 05 §6.1–6.3, on every local store.
    pub(crate) fn model(s: &dyn Store) {
        assert_eq!(s.read("missing").unwrap(), None);
        s.write("a/b/c", Bytes::from_static(b"v")).unwrap();
        assert_eq!(s.read("a/b/c").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.kind("a/b").unwrap(), Some(EntryType::Composite));
        assert_eq!(s.kind("a/b/c").unwrap(), Some(EntryType::Simple));
        assert_eq!(s.read("a/b").unwrap(), None, "a group is not data");
        // Links: `a/alt` -> `a/b`; paths through it resolve (spec 05 §6.2 example).
        s.make_link("a/b", "a/alt").unwrap();
        assert_eq!(s.resolve("a/alt/c").unwrap(), "a/b/c");
        assert_eq!(s.read("a/alt/c").unwrap().as_deref(), Some(&b"v"[..]));
        // A link never overwrites; linking a path to itself is a no-op.
        s.write("x", Bytes::from_static(b"1")).unwrap();
        s.make_link("a/b/c", "x").unwrap();
        assert_eq!(s.read("x").unwrap().as_deref(), Some(&b"1"[..]));
        s.make_link("x", "x").unwrap();
        // Writing through a link writes into its target.
        s.write("a/alt/d", Bytes::from_static(b"w")).unwrap();
        assert_eq!(s.read("a/b/d").unwrap().as_deref(), Some(&b"w"[..]));
        // Lists: direct children only, sorted, siblings that share a prefix included.
        s.write("a/b-x", Bytes::from_static(b"s")).unwrap();
        s.write("a/b0", Bytes::from_static(b"t")).unwrap();
        assert_eq!(s.list("a").unwrap().unwrap(), ["alt", "b", "b-x", "b0"]);
        assert_eq!(s.list("a/alt").unwrap().unwrap(), ["c", "d"]);
        assert_eq!(s.list("x").unwrap(), None);
        assert_eq!(s.list("").unwrap().unwrap(), ["a", "x"]);
        // A link loop is an error, not a hang.
        s.make_link("loop2", "loop1").unwrap();
        s.make_link("loop1", "loop2").unwrap();
        assert!(matches!(
            s.read("loop1/k"),
            Err(StoreError::LinkLoop { .. })
        ));
        // A batch that fails applies nothing.
        let bad = [
            Op::Write("ok/1".into(), Bytes::from_static(b"1")),
            Op::Write("x/under-a-file".into(), Bytes::from_static(b"2")),
        ];
        assert!(s.apply(&bad).is_err());
        assert_eq!(s.read("ok/1").unwrap(), None, "nothing of a failed batch");
    }

    #[test]
    fn memory_store_model() {
        model(&MemoryStore::new());
    }

    #[test]
    fn lmdb_store_model_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LmdbStore::open(dir.path(), Durability::Sync).unwrap();
            model(&s);
            // One handle per directory per process.
            let again = LmdbStore::open(dir.path(), Durability::Sync);
            assert!(again.is_err());
        }
        let s = LmdbStore::open(dir.path(), Durability::Relaxed).unwrap();
        assert_eq!(s.read("a/alt/c").unwrap().as_deref(), Some(&b"v"[..]));
        s.sync().unwrap();
    }

    #[test]
    fn fs_store_model_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FsStore::open(dir.path()).unwrap();
            model(&s);
            // One handle per prefix.
            assert!(FsStore::open(dir.path()).is_err());
            // The layout of spec 05 §6.2: files, directories, relative symbolic links.
            let root = s.root().to_path_buf();
            assert_eq!(std::fs::read(root.join("a/b/c")).unwrap(), b"v");
            assert!(root.join("a/b").is_dir());
            assert_eq!(
                std::fs::read_link(root.join("a/alt")).unwrap(),
                std::path::Path::new("../a/b")
            );
            assert_eq!(s.list("").unwrap().unwrap(), ["a", "loop1", "loop2", "x"]);
        }
        let s = FsStore::open_with(dir.path(), Durability::Relaxed).unwrap();
        assert_eq!(s.read("a/alt/c").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.read("ok/1").unwrap(), None);
    }

    #[test]
    fn fs_paths_never_leave_the_prefix() {
        let outer = tempfile::tempdir().unwrap();
        let prefix = outer.path().join("store");
        let s = FsStore::open(&prefix).unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        for bad in [
            "../secret",
            "a/../../secret",
            "./x",
            "a/./b",
            "nul\0here",
            ".hb-journal",
            ".hb-tmp/x",
            "..",
        ] {
            let bad = bad.to_owned();
            for r in [
                s.read(&bad).map(|_| ()),
                s.kind(&bad).map(|_| ()),
                s.list(&bad).map(|_| ()),
                s.resolve(&bad).map(|_| ()),
                s.write(&bad, Bytes::from_static(b"x")),
                s.make_group(&bad),
                s.make_link("a", &bad),
                s.make_link(&bad, "a"),
            ] {
                assert!(
                    matches!(r, Err(StoreError::InvalidPath { ref path, .. }) if *path == bad),
                    "{bad:?}: {r:?}"
                );
            }
        }
        // An absolute path is a path under the prefix, as in every store.
        s.write("/abs/x", Bytes::from_static(b"1")).unwrap();
        assert!(prefix.join("abs/x").is_file());
        // Too long for a file name: refused with the path named.
        let e = s.write(&"k".repeat(300), Bytes::new()).unwrap_err();
        assert!(e.to_string().contains("at most 255 bytes"), "{e}");
        // A link planted on the disk that points outside is not followed.
        std::os::unix::fs::symlink(outer.path().join("secret"), prefix.join("out")).unwrap();
        std::os::unix::fs::symlink("../secret", prefix.join("out2")).unwrap();
        for p in ["out", "out2"] {
            assert!(matches!(s.read(p), Err(StoreError::Corrupt { .. })), "{p}");
        }
        // Nothing was written outside the prefix.
        let mut names: Vec<_> = std::fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["secret", "store"]);
        assert_eq!(std::fs::read(outer.path().join("secret")).unwrap(), b"s");
    }

    #[test]
    fn lmdb_rejects_keys_it_cannot_hold_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = LmdbStore::open(dir.path(), Durability::Sync).unwrap();
        let long = "k".repeat(600);
        let e = s.write(&long, Bytes::from_static(b"v")).unwrap_err();
        assert!(e.to_string().contains("at most 511 bytes"), "{e}");
    }

    #[test]
    fn chain_reads_first_viable_and_writes_first_writable() {
        let a = std::sync::Arc::new(MemoryStore::new());
        let b = std::sync::Arc::new(MemoryStore::new());
        b.write("only-b", Bytes::from_static(b"b")).unwrap();
        let chain = Chain::new(vec![a.clone(), b.clone()]);
        assert_eq!(chain.read("only-b").unwrap().as_deref(), Some(&b"b"[..]));
        chain.write("new", Bytes::from_static(b"n")).unwrap();
        assert!(a.read("new").unwrap().is_some() && b.read("new").unwrap().is_none());
    }
}
