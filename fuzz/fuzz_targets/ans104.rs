//! Fuzzes the ANS-104 data-item parser and everything that reads its output: bundles,
//! signature checks and the conversion to messages. Never a panic, whatever the bytes;
//! and whatever parses serialises back to exactly the same bytes.
#![no_main]

use hb_codec::ans104::{self, DataItem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(item) = DataItem::parse(data) else {
        return;
    };
    assert_eq!(item.to_bytes(), data, "parse/serialise is not the identity");
    let _ = item.unsigned_id();
    let _ = ans104::verify_tree(&item);
    if let Ok(msg) = ans104::item_to_message(&item) {
        // The message must convert back without panicking (it may legitimately fail,
        // e.g. for tags whose names collide after lower-casing).
        if let Ok(again) = ans104::message_to_item(&msg) {
            let _ = again.to_bytes();
        }
    }
});
