//! Fuzzes the HTTP -> TABM decoder (multipart bodies, `ao-ids`, unflattening) and the
//! structured decoding that follows it: never a panic, whatever the bytes.
#![no_main]

use bytes::Bytes;
use hb_core::httpsig::{HttpMessage, from_http};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks how much of the input is the content-type; the rest is the body.
    let Some((&split, rest)) = data.split_first() else { return };
    let at = (split as usize).min(rest.len());
    let (ct, body) = rest.split_at(at);
    let mut http = HttpMessage::default();
    http.headers.insert("content-type".into(), Bytes::copy_from_slice(ct));
    http.headers.insert("ao-ids".into(), Bytes::copy_from_slice(&ct[..ct.len().min(16)]));
    http.body = Some(Bytes::copy_from_slice(body));
    if let Ok((tabm, _)) = from_http(&http) {
        let _ = hb_core::structured::from_tabm(&tabm);
    }
    // Also as a plain multipart body behind a fixed boundary.
    let mut http = HttpMessage::default();
    http.headers.insert("content-type".into(), Bytes::from_static(b"multipart/form-data; boundary=\"B\""));
    http.body = Some(Bytes::copy_from_slice(data));
    let _ = from_http(&http);
});
