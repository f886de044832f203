//! The packed copies kept with stored messages (docs/adr/0004, `cache::packed`) change
//! no answer: every read by every ID gives exactly what reading the message's group
//! gives (the layout of spec 05 §6.4, walked and decoded as before the copies), also
//! after the store changes under a copy — a key linked into a message's group, a
//! `signed/<U>` link made later (directly or through a linked parent), a group written
//! over, a signed form stored after the unsigned one.
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Gen, key1};
use hb_core::httpsig::message_id;
use hb_core::structured::from_tabm;
use hb_core::{Message, Value};
use hb_store::cache::PACKED_MAX;
use hb_store::store::{Packed, Tree};
use hb_store::{Durability, LmdbStore, MessageCache, Store};

/// What the cache's reads prefer: a message's uncommitted ID reads as its first signed
/// form (`signed/<U>`).
fn prefer(resolved: &str) -> Option<String> {
    (resolved.len() == 43 && !resolved.contains('/')).then(|| format!("signed/{resolved}"))
}

fn tree_to_tabm(children: Vec<(String, Tree)>) -> Message {
    let mut out = Message::new();
    for (k, t) in children {
        let v = match t {
            Tree::Bytes(b) => Value::Binary(b),
            Tree::Group(g) => Value::Message(tree_to_tabm(g)),
        };
        out.insert(&k, v);
    }
    out
}

/// `path` read as before packed copies: the group walked, the TABM decoded.
fn walked(store: &dyn Store, path: &str) -> Option<Value> {
    match store.read_tree(path, &prefer).unwrap()? {
        Tree::Bytes(b) => Some(Value::Binary(b)),
        Tree::Group(children) => Some(Value::Message(from_tabm(&tree_to_tabm(children)).unwrap())),
    }
}

/// Reads `path` through a fresh cache (nothing from its front cache) and checks it
/// against the walk; true when the read was answered by a packed copy.
fn check(store: &Arc<LmdbStore>, path: &str) -> bool {
    let cache = MessageCache::new(store.clone());
    let read = cache.read_local(path).unwrap();
    let want = walked(store.as_ref(), path);
    assert_eq!(read, want, "`{path}` reads differently from its group");
    matches!(
        store.read_packed(path, &prefer).unwrap(),
        Some(Packed::Copy(_))
    )
}

fn open(dir: &tempfile::TempDir) -> Arc<LmdbStore> {
    Arc::new(LmdbStore::open(dir.path(), Durability::Relaxed).unwrap())
}

#[test]
fn every_read_by_every_id_is_what_the_group_reads_as() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let cache = MessageCache::new(store.clone());
    let wallet = key1();
    let mut g = Gen::new(0x5EED_00C0);
    let mut ids: Vec<String> = Vec::new();
    let mut unsigned = Vec::new();
    for i in 0..1500 {
        let msg = match i % 50 {
            17 => {
                g.ascii_keys = true;
                let m = g.top_message(2, 10);
                g.ascii_keys = false;
                // Sometimes stored unsigned first, then signed (same uncommitted ID).
                if i % 100 == 17 {
                    ids.push(cache.write(&m).unwrap().to_human());
                }
                hb_codec::httpsig_commit::commit(&m, &wallet).unwrap()
            }
            37 => {
                g.ascii_keys = true;
                let m = g.top_message(0, 8);
                g.ascii_keys = false;
                hb_codec::ans104::commit(&m, &wallet).unwrap()
            }
            _ => match i % 7 {
                0 => g.top_message(3, 8),
                1 => g.top_message(1, 32),
                _ => g.top_message(0, 10),
            },
        };
        let Ok(u) = cache.write(&msg) else { continue };
        let u = u.to_human();
        if let Some(Value::Message(c)) = msg.get("commitments") {
            ids.extend(c.keys().map(ToString::to_string));
            ids.push(message_id(&msg).unwrap().to_human());
        } else {
            unsigned.push(u.clone());
        }
        ids.push(u);
    }
    for id in &ids {
        check(&store, id);
    }
    // Every unsigned message with a small copy reads from it (larger ones through their
    // group).
    let (mut small, mut copies) = (0, 0);
    for u in &unsigned {
        let has = check(&store, u);
        let Some(Value::Message(m)) = cache.read(u).unwrap() else {
            unreachable!()
        };
        let size = hb_store::cache::packed::encode(&m).unwrap().len();
        if size <= PACKED_MAX / 2 {
            small += 1;
            assert!(has, "`{u}` ({size} bytes packed) has no copy: {m:?}");
        }
        copies += usize::from(has);
    }
    assert!(small * 2 > unsigned.len(), "{small} small messages");
    eprintln!(
        "{} reads by ID; {copies} of {} unsigned messages read from a packed copy",
        ids.len() + unsigned.len(),
        unsigned.len()
    );
    // Keys of messages, by path (`ID/key`, nested ones too): as before.
    for u in unsigned.iter().take(200) {
        let Some(Value::Message(m)) = cache.read(u).unwrap() else {
            unreachable!()
        };
        for (k, v) in m.iter() {
            if k.contains('/') || !matches!(v, Value::Binary(_) | Value::Message(_)) {
                continue;
            }
            check(&store, &format!("{u}/{k}"));
        }
    }
}

#[test]
fn copies_follow_later_changes_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let cache = MessageCache::new(store.clone());
    let msg = |n: i64| {
        Message::new()
            .with("action", "Transfer")
            .with("n", n)
            .with("nested", Message::new().with("k", "v").with("n", n))
    };

    // A key linked into a message's group: the copy goes, the key is read.
    let u = cache.write(&msg(1)).unwrap().to_human();
    assert!(check(&store, &u));
    let data = cache.write_binary(&Bytes::from_static(b"extra")).unwrap();
    store.make_link(&data, &format!("{u}/extra")).unwrap();
    assert!(!check(&store, &u));
    let Some(Value::Message(m)) = MessageCache::new(store.clone()).read(&u).unwrap() else {
        unreachable!()
    };
    assert_eq!(m.get("extra"), Some(&Value::text("extra")));
    // Written again: the batch's own copy is checked against the group and refused.
    cache.write(&msg(1)).unwrap();
    assert!(!check(&store, &u));

    // `signed/<U>` linked later: U reads as what it links to.
    let u2 = cache.write(&msg(2)).unwrap().to_human();
    let other = cache.write(&msg(3)).unwrap().to_human();
    assert!(check(&store, &u2));
    cache.link(&other, &format!("signed/{u2}")).unwrap();
    check(&store, &u2);
    let Some(Value::Message(m)) = MessageCache::new(store.clone()).read(&u2).unwrap() else {
        unreachable!()
    };
    assert_eq!(m.get("n"), Some(&Value::Integer(3)));

    // … also through a parent that is a link to `signed`.
    let u4 = cache.write(&msg(4)).unwrap().to_human();
    assert!(check(&store, &u4));
    cache.link("signed", "also-signed").unwrap();
    cache.link(&other, &format!("also-signed/{u4}")).unwrap();
    check(&store, &u4);
    let Some(Value::Message(m)) = MessageCache::new(store.clone()).read(&u4).unwrap() else {
        unreachable!()
    };
    assert_eq!(m.get("n"), Some(&Value::Integer(3)));

    // A group written over: the bytes are read.
    let u5 = cache.write(&msg(5)).unwrap().to_human();
    assert!(check(&store, &u5));
    store.write(&u5, Bytes::from_static(b"now bytes")).unwrap();
    assert!(!check(&store, &u5));
    assert_eq!(
        MessageCache::new(store.clone()).read(&u5).unwrap(),
        Some(Value::text("now bytes"))
    );

    // The signed form stored after the unsigned one: U reads as the signed form.
    let wallet = key1();
    let plain = Message::new().with("action", "Eval").with("data", "1 + 1");
    let u6 = cache.write(&plain).unwrap().to_human();
    assert!(check(&store, &u6));
    let signed = hb_codec::httpsig_commit::commit(&plain, &wallet).unwrap();
    assert_eq!(cache.write(&signed).unwrap().to_human(), u6);
    assert!(check(&store, &u6), "the signed form has a copy");
    let Some(Value::Message(m)) = MessageCache::new(store.clone()).read(&u6).unwrap() else {
        unreachable!()
    };
    assert_eq!(m, signed);
    // And the unsigned one written again changes nothing.
    cache.write(&plain).unwrap();
    assert!(check(&store, &u6));
    let Some(Value::Message(m)) = MessageCache::new(store.clone()).read(&u6).unwrap() else {
        unreachable!()
    };
    assert_eq!(m, signed);

    // The root's listing shows paths only.
    let top = store.list("").unwrap().unwrap();
    assert!(
        top.iter().all(|name| !name.starts_with('\u{fffd}')),
        "{top:?}"
    );
    assert!(top.contains(&u) && top.contains(&"signed".to_owned()));

    // All of it after reopening.
    drop(cache);
    drop(store);
    let store = open(&dir);
    for p in [&u, &u2, &u4, &u5, &u6] {
        check(&store, p);
    }
}
