//! Fuzzes the HyperPATH parser (spec 02) with untrusted paths and header names.
//!
//! Run with `cargo +nightly fuzz run hyperpath` from `fuzz/`.

#![no_main]

use hb_core::hyperpath::{from_singleton, parse, to_singleton};
use hb_core::{Message, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The path as text, as the HTTP layer would see it.
    let text = String::from_utf8_lossy(data);
    if let Ok(list) = parse(&text) {
        // The inverse must not panic on anything the parser produces.
        let _ = to_singleton(&list);
    }

    // The raw bytes as a path, plus a few headers whose names and values come from the
    // input too: split at the first two NUL bytes into (path, header name, value).
    let mut parts = data.splitn(3, |&b| b == 0);
    let path = parts.next().unwrap_or_default();
    let name = String::from_utf8_lossy(parts.next().unwrap_or(b"x+integer"));
    let value = parts.next().unwrap_or(b"1");
    let singleton = Message::new()
        .with("path", Value::bin(path.to_vec()))
        .with("method", "GET")
        .with("accept", "*/*")
        .with("1.scoped", "v")
        .with(&name, Value::bin(value.to_vec()));
    if let Ok(list) = from_singleton(&singleton) {
        let _ = from_singleton(&to_singleton(&list));
    }
});
