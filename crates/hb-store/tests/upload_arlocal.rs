//! Uploads over the inline limit (issue 4, `upload@1.0`): a signed data item of more
//! than 10 MiB is uploaded to a running arlocal with [`hb_store::upload_items`] — the
//! transaction header, then its data in 256 KiB chunks with their merkle proofs
//! (`POST /chunk`) — and read back through the gateway store ([`GatewaySource`]:
//! arlocal's GraphQL, then the item's data), identical. Skipped unless `HB_ARLOCAL` is
//! arlocal's base URL (`harness/test/50-arweave.test.mjs` runs it with
//! `HB_ARLOCAL_CARGO=1`; or start one with `node harness/lib/arlocal.mjs <port> <dir>`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use hb_codec::ans104::DataItem;
use hb_store::upload::MAX_INLINE_DATA;
use hb_store::{GatewaySource, MessageSource, upload_items};

fn wallet(name: &str) -> hb_codec::Wallet {
    hb_codec::Wallet::load(format!(
        "{}/../../tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut r = agent.get(url).call().unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn an_item_over_ten_mib_is_uploaded_in_chunks_and_read_back_through_the_gateway() {
    let Some(arlocal) = std::env::var("HB_ARLOCAL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("SKIPPED: set HB_ARLOCAL=<arlocal URL> to run");
        return;
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    // The node's wallet pays for the transaction: fund it.
    let node = wallet("key-2");
    let address = hb_core::id::b64url(&hb_core::id::Id::sha256(node.public_modulus()).0);
    let (status, _) = get(
        &agent,
        &format!("{arlocal}/mint/{address}/1000000000000000"),
    );
    assert_eq!(status, 200);

    // A signed item of ~10.4 MiB (not a multiple of the chunk size; incompressible).
    let mut x: u64 = 0x5eed;
    let data: Vec<u8> = (0..MAX_INLINE_DATA + 400_000 + 1234)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect();
    let tag = format!("big-{}", std::process::id());
    let item = DataItem {
        tags: vec![
            (b"App-Name".to_vec(), b"hb-upload-chunks".to_vec()),
            (b"Upload-Tag".to_vec(), tag.clone().into_bytes()),
        ],
        data: Bytes::from(data.clone()),
        ..DataItem::default()
    }
    .signed(&wallet("key-1"))
    .unwrap();
    let id = item.id().to_human();
    let t = Instant::now();
    let tx = upload_items(&arlocal, &node, std::slice::from_ref(&item)).unwrap();
    eprintln!(
        "uploaded {} bytes in transaction {tx} in {:?}",
        data.len(),
        t.elapsed()
    );

    // arlocal unpacks the bundle once every chunk is there; a block makes it visible.
    let gateway = GatewaySource::new(&arlocal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let msg = loop {
        assert_eq!(get(&agent, &format!("{arlocal}/mine")).0, 200);
        if let Ok(Some(msg)) = gateway.fetch(&id) {
            break msg;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not served by arlocal 90 s after its upload"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(msg.get_str("upload-tag"), Some(tag.as_str()));
    let got = msg
        .get("data")
        .and_then(hb_core::Value::as_bytes)
        .expect("the item has its data");
    assert!(got[..] == data[..], "the data read back differs");
    // arlocal serves the L1 transaction's header with the data size it was given.
    let (status, body) = get(&agent, &format!("{arlocal}/tx/{tx}"));
    assert_eq!(status, 200, "{body}");
    let header: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        header["data_size"].as_str(),
        Some(
            item.to_bytes()
                .len()
                .saturating_add(96)
                .to_string()
                .as_str()
        )
    );
}
