//! From an HTTP request to the singleton message the HyperPATH parser reads
//! (spec 05 §2.2, 02 §4.1).

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use thiserror::Error;

use hb_codec::ans104::{self, Ans104Error};
use hb_codec::httpsig_commit::{self, ReceivedError};
use hb_core::httpsig::HttpMessage;
use hb_core::{Message, Value};

use crate::ServerConfig;

/// Why a request could not become a message.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The request could not be decoded, or a signature of it is malformed or forged.
    #[error("the request {0}")]
    Httpsig(#[from] ReceivedError),
    /// An ANS-104 request body is malformed or forged.
    #[error("the request's ANS-104 data item is refused: {0}")]
    DataItem(#[from] Ans104Error),
    /// An ANS-104 request body is not signed.
    #[error(
        "the request's ANS-104 data item is not signed (its signature is all zeros); only signed items are accepted"
    )]
    UnsignedItem,
}

/// Checks the request head against the limits: the refusal is a 4xx status and a text
/// that says which limit was passed.
pub fn check_head<B>(req: &Request<B>, config: &ServerConfig) -> Result<(), (StatusCode, String)> {
    let target_len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if target_len > config.max_path_bytes {
        return Err((
            StatusCode::URI_TOO_LONG,
            format!(
                "The request path is {target_len} bytes long; this node accepts at most {}.",
                config.max_path_bytes
            ),
        ));
    }
    if req.headers().len() > config.max_headers {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "The request has {} header fields; this node accepts at most {}.",
                req.headers().len(),
                config.max_headers
            ),
        ));
    }
    let head: usize = target_len
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > config.max_head_bytes {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "The request head is {head} bytes; this node accepts at most {}.",
                config.max_head_bytes
            ),
        ));
    }
    Ok(())
}

/// The singleton of a request (spec 05 §2.2): the header fields (names lower-cased,
/// repeated fields joined by `, `) and the body, decoded as an httpsig message — a
/// multipart body becomes (nested) keys, a plain body the key `body` (or the one named
/// by `inline-body-key`) — plus `method` and `path` (the raw target with its query
/// string, unless the message names its own path).
///
/// A signed request (one with a `signature` field) has its commitments rebuilt (spec 03
/// §5.5); every RSA commitment must verify, else the request is refused. Only the keys
/// the signatures cover survive, plus `commitments` (05 §2.2); `method` and `path` are
/// added after that, so an unsigned path (aoconnect signs only headers, 07 §7) still
/// comes from the request target.
///
/// A request with `codec-device: ans104@1.0` or `content-type: application/ans104` is
/// instead its body, a signed ANS-104 data item, which must verify (spec 07 §1.2).
pub fn to_singleton(parts: &Parts, target: &str, body: Bytes) -> Result<Message, RequestError> {
    let mut msg = if is_ans104(parts) {
        ans104_singleton(&body)?
    } else {
        httpsig_singleton(parts, body)?
    };
    msg.insert("method", Value::text(parts.method.as_str()));
    if !msg.contains("path") {
        msg.insert("path", Value::text(target));
    }
    Ok(msg)
}

/// A request whose body is an ANS-104 data item (spec 07 §1.2: `codec-device:
/// ans104@1.0` or `content-type: application/ans104`).
fn is_ans104(parts: &Parts) -> bool {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    header("codec-device").is_some_and(|v| v == ans104::DEVICE_NAME)
        || header("content-type").is_some_and(|v| v.starts_with(ans104::CONTENT_TYPE))
}

/// The singleton of an ANS-104 request (spec 02 §4.1 step 2): the data item, which must
/// be signed and verify (nested items too), as a TABM with its commitment; the header
/// fields are not part of it.
fn ans104_singleton(body: &Bytes) -> Result<Message, RequestError> {
    let item = ans104::DataItem::parse_bytes(body)?;
    if !item.is_signed() {
        return Err(RequestError::UnsignedItem);
    }
    ans104::verify_tree(&item)?;
    Ok(ans104::item_to_tabm(&item)?)
}

/// Header fields that concern one connection only (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The singleton of an httpsig request: header fields and body, signatures checked.
fn httpsig_singleton(parts: &Parts, body: Bytes) -> Result<Message, RequestError> {
    let mut http = HttpMessage::default();
    let signed = parts.headers.contains_key("signature");
    for name in parts.headers.keys() {
        // Hop-by-hop fields (RFC 9110 §7.6.1) are about this connection, not the
        // message: an unsigned request does not keep them as keys (a reply, which
        // frames its own connection, could never give them back). A signer who
        // covered one keeps it.
        if !signed && HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let mut values = parts.headers.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (Some(one), None) => Bytes::copy_from_slice(one.as_bytes()),
            _ => {
                let mut joined: Vec<u8> = Vec::new();
                for (i, v) in parts.headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        joined.extend_from_slice(b", ");
                    }
                    joined.extend_from_slice(v.as_bytes());
                }
                Bytes::from(joined)
            }
        };
        // Header names are lower-case ASCII by construction (hyper normalises them).
        http.headers.insert(name.as_str().to_owned(), value);
    }
    http.body = (!body.is_empty()).then_some(body);
    // Derived components (RFC 9421 §2.2) a signer may cover without sending the field.
    let derived = |name: &str| -> Option<Bytes> {
        let text = match name {
            "method" => parts.method.as_str().to_owned(),
            "path" => parts.uri.path().to_owned(),
            "query" => format!("?{}", parts.uri.query().unwrap_or("")),
            "authority" => parts.headers.get("host")?.to_str().ok()?.to_owned(),
            "scheme" => "http".to_owned(),
            "request-target" => parts.uri.path_and_query()?.as_str().to_owned(),
            _ => return None,
        };
        Some(Bytes::from(text))
    };
    Ok(httpsig_commit::from_http_verified(&http, &derived)?)
}
