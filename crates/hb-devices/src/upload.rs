//! `upload@1.0` (our extension, issue 4): uploads a signed ANS-104 data item to the
//! node's Arweave gateway, so that it can be found there by its tags.
//!
//! `POST /~upload@1.0/item` with the item itself as the request (`content-type:
//! application/ans104`; the HTTP layer verifies it and hands the device the message
//! with its `ans104@1.0` commitment). The device rebuilds the exact item from the keys
//! that commitment covers, checks that it is the signed item (same ID, signature
//! verifies), and uploads it with [`hb_store::upload_items`]: one ANS-104 binary bundle
//! in an Arweave transaction signed by the node's wallet, posted to the node option
//! `gateway`. It answers `{status: 200, id: <item ID>, tx: <transaction ID>}`.
//!
//! Refusals: 503 when the node has no wallet or no gateway (`gateway` unset, empty or
//! `none`); 400 when the request is not one signed ANS-104 item; 502 when the gateway
//! refuses the upload or cannot be reached (the text names it).
//!
//! The reference has no such device (later versions upload through `arweave@2.9`, which
//! its source here does not include).

use std::sync::Arc;

use hb_codec::Wallet;
use hb_codec::ans104::{self, DataItem};
use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::{Ctx, Message, ResolveError, Value};

/// The `upload@1.0` device; it signs uploads with [`Upload::wallet`].
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The node's wallet; without one every upload is refused.
    pub wallet: Option<Arc<Wallet>>,
}

/// The one `ans104@1.0` RSA commitment of `req`, by ID.
fn signed_commitment(req: &Message) -> Result<String, String> {
    let ids: Vec<String> = match req.get("commitments") {
        Some(Value::Message(all)) => all
            .iter()
            .filter(|(_, c)| {
                c.as_message().is_some_and(|c| {
                    c.get_str("commitment-device") == Some(ans104::DEVICE_NAME)
                        && c.get_str("alg") == Some(ans104::ALG_RSA)
                })
            })
            .map(|(k, _)| k.to_string())
            .collect(),
        _ => Vec::new(),
    };
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(
            "the request is not a signed ANS-104 data item: send the item itself as \
                   the body with `content-type: application/ans104`"
                .to_owned(),
        ),
        many => Err(format!(
            "the request carries {} ANS-104 signatures; exactly one item is uploaded at a time",
            many.len()
        )),
    }
}

/// The exact signed item the request is: its committed keys, rebuilt and checked.
///
/// # Errors
/// The reason, for a 400 answer.
pub fn signed_item(req: &Message) -> Result<DataItem, String> {
    let id = signed_commitment(req)?;
    let keys = ans104::committed_keys(req, &id)
        .map_err(|e| format!("the item's commitment {id} cannot be read: {e}"))?;
    let mut msg = Message::new();
    for k in keys.iter().map(String::as_str).chain(["commitments"]) {
        if let Some(v) = req.get(k) {
            msg.insert(k, v.clone());
        }
    }
    let item = ans104::message_to_item(&msg)
        .map_err(|e| format!("the item {id} cannot be rebuilt from the request: {e}"))?;
    if item.id().to_human() != id || !item.verify() {
        return Err(format!(
            "the item rebuilt from the request is not the signed item {id} (it has ID {})",
            item.id().to_human()
        ));
    }
    Ok(item)
}

impl Upload {
    fn item(&self, req: &Message, ctx: &Ctx) -> Outcome {
        let Some(wallet) = self.wallet.clone() else {
            return Outcome::error_status(
                503,
                "this node has no wallet, so it cannot sign uploads (upload@1.0)",
            );
        };
        let node = ctx.node().get();
        let gateway = node
            .get("gateway")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        if gateway.is_empty() || gateway.eq_ignore_ascii_case("none") {
            return Outcome::error_status(
                503,
                "this node has no gateway to upload to (set the node option `gateway`)",
            );
        }
        let item = match signed_item(req) {
            Ok(item) => item,
            Err(reason) => return Outcome::error_status(400, &reason),
        };
        let id = item.id().to_human();
        let uploaded =
            ctx.blocking(|| hb_store::upload_items(&gateway, &wallet, std::slice::from_ref(&item)));
        match uploaded {
            Ok(tx) => Outcome::ok(
                Message::new()
                    .with("status", 200)
                    .with("id", id)
                    .with("tx", tx),
            ),
            Err(e) => {
                tracing::warn!(%gateway, item = %id, error = %e, "upload@1.0: upload failed");
                Outcome::error_status(502, &format!("the upload of {id} failed: {e}"))
            }
        }
    }
}

impl Device for Upload {
    fn name(&self) -> &'static str {
        "upload@1.0"
    }

    fn functions(&self) -> &'static [&'static str] {
        &["item"]
    }

    fn call(&self, call: Call<'_>, _base: &Message, req: &Message, ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "item" => Ok(self.item(req, ctx)),
            other => Err(ResolveError::call(self.name(), other, "no such function")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hb_core::{MemoryCache, NodeHandle, Registry};

    fn key1() -> Wallet {
        Wallet::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/key-1.json"
        ))
        .unwrap()
    }

    fn signed() -> DataItem {
        DataItem {
            tags: vec![
                (b"App-Name".to_vec(), b"upload-test".to_vec()),
                (b"Mixed-Case".to_vec(), b"Value".to_vec()),
            ],
            data: Bytes::from_static(b"payload"),
            ..DataItem::default()
        }
        .signed(&key1())
        .unwrap()
    }

    fn ctx(node: Message) -> Ctx {
        Ctx::new(
            Arc::new(Registry::new()),
            Arc::new(MemoryCache::new(16)),
            NodeHandle::new(node),
        )
    }

    /// The request as the HTTP layer builds it: the item's TABM plus `method`, `path`.
    fn request(item: &DataItem) -> Message {
        let mut req = ans104::item_to_tabm(item).unwrap();
        req.insert("method", Value::text("POST"));
        req.insert("path", Value::text("/~upload@1.0/item"));
        req
    }

    #[test]
    fn rebuilds_the_exact_signed_item() {
        let item = signed();
        let req = request(&item);
        assert_eq!(signed_item(&req).unwrap(), item);
        // The structured form too.
        let rich = ans104::item_to_message(&item)
            .unwrap()
            .with("method", "POST");
        assert_eq!(signed_item(&rich).unwrap(), item);
    }

    #[test]
    fn refuses_unsigned_and_tampered_requests() {
        let plain = Message::new().with("a", "b");
        assert!(
            signed_item(&plain)
                .unwrap_err()
                .contains("application/ans104")
        );
        let mut req = request(&signed());
        req.insert("app-name", Value::text("changed"));
        assert!(signed_item(&req).is_err());
    }

    #[test]
    fn needs_a_wallet_and_a_gateway() {
        let req = request(&signed());
        let code = |o: Outcome| {
            o.value
                .as_message()
                .and_then(|m| m.get("status"))
                .and_then(Value::as_int)
        };
        let no_wallet = Upload { wallet: None }.item(&req, &ctx(Message::new()));
        assert_eq!(code(no_wallet), Some(503));
        let dev = Upload {
            wallet: Some(Arc::new(key1())),
        };
        for node in [Message::new(), Message::new().with("gateway", "none")] {
            let o = dev.item(&req, &ctx(node));
            assert!(!o.is_ok());
            assert_eq!(code(o), Some(503));
        }
        let bad = dev.item(
            &Message::new(),
            &ctx(Message::new().with("gateway", "http://127.0.0.1:9")),
        );
        assert_eq!(code(bad), Some(400));
        // Nothing listens on the discard port: a 502 naming the gateway.
        let down = dev.item(
            &req,
            &ctx(Message::new().with("gateway", "http://127.0.0.1:9")),
        );
        let m = down.value.as_message().unwrap().clone();
        assert_eq!(m.get("status").and_then(Value::as_int), Some(502));
        assert!(m.get_str("body").unwrap().contains("http://127.0.0.1:9"));
    }
}
