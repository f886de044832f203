//! Fuzzes the structured-field parsers and typed-value decoding (`ao-types`, typed
//! path keys) and the flat text codec: never a panic, whatever the bytes.
#![no_main]

use hb_core::{flat, sf, structured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sf::parse_list(data);
    let _ = sf::parse_dictionary(data);
    let _ = sf::parse_item(data);
    for ty in ["integer", "float", "atom", "list", "map"] {
        let _ = structured::decode_typed(ty, data);
    }
    if let Ok(tabm) = flat::deserialize(data) {
        let _ = structured::from_tabm(&tabm);
    }
});
