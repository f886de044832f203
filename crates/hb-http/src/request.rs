//! From an HTTP request to the singleton message the HyperPATH parser reads
//! (spec 05 §2.2, 02 §4.1).

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use thiserror::Error;

use std::collections::HashSet;

use hb_codec::httpsig_commit::{self, HttpsigError};
use hb_core::httpsig::{self, HttpMessage, Signatures};
use hb_core::sf;
use hb_core::structured::from_tabm;
use hb_core::{Message, Value};

use crate::ServerConfig;

/// Why a request could not become a message.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The body (or a field describing it) could not be decoded.
    #[error("the request could not be decoded: {0}")]
    Body(#[from] hb_core::structured::CodecError),
    /// The request's `signature`/`signature-input` fields are malformed.
    #[error("the request's signature fields are malformed: {0}")]
    Signatures(HttpsigError),
    /// A signature of the request does not verify.
    #[error("the request's signature {0} does not verify")]
    BadSignature(String),
    /// A signature of the request could not be checked.
    #[error("the request's signature {0} could not be checked: {1}")]
    Unverifiable(String, HttpsigError),
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
pub fn to_singleton(parts: &Parts, target: &str, body: Bytes) -> Result<Message, RequestError> {
    let mut http = HttpMessage::default();
    for name in parts.headers.keys() {
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
    let (msg, signatures) = httpsig::from_http(&http).map_err(RequestError::Body)?;
    let mut msg = if signatures.signature.is_some() {
        verified_signed(msg, &signatures)?
    } else {
        msg
    };
    msg.insert("method", Value::text(parts.method.as_str()));
    if !msg.contains("path") {
        msg.insert("path", Value::text(target));
    }
    Ok(msg)
}

/// The signature name (`SN`) of a rebuilt commitment, for error texts.
fn signature_name(c: &Message) -> String {
    c.get("signature-input")
        .and_then(Value::as_bytes)
        .and_then(|b| sf::parse_dictionary(b).ok())
        .and_then(|d| d.into_iter().next().map(|(name, _)| name))
        .unwrap_or_else(|| "(unnamed)".to_owned())
}

/// Rebuilds and verifies the commitments of a signed request's TABM and keeps only the
/// committed keys (and `commitments`, with a recomputed HMAC commitment).
fn verified_signed(tabm: Message, sigs: &Signatures) -> Result<Message, RequestError> {
    let tabm = httpsig_commit::commitments_from_signatures(tabm, sigs)
        .map_err(RequestError::Signatures)?;
    let rich = from_tabm(&tabm).map_err(RequestError::Body)?;
    let commitments = tabm
        .get("commitments")
        .and_then(Value::as_message)
        .cloned()
        .unwrap_or_default();
    let mut keep: HashSet<String> = HashSet::from(["commitments".to_owned()]);
    for (id, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        if c.get_str("alg") != Some(httpsig_commit::ALG_RSA) {
            continue;
        }
        let name = signature_name(c);
        match httpsig_commit::verify(&rich, id) {
            Ok(true) => {}
            Ok(false) => return Err(RequestError::BadSignature(name)),
            Err(e) => return Err(RequestError::Unverifiable(name, e)),
        }
        let keys = httpsig_commit::committed_keys(&rich, id)
            .map_err(|e| RequestError::Unverifiable(name, e))?;
        keep.extend(keys);
    }
    let mut kept = Message::new();
    for (k, v) in tabm.iter() {
        if keep.contains(k.as_ref() as &str) {
            kept.insert(k, v.clone());
        }
    }
    httpsig_commit::with_hmac_commitment_tabm(&kept).map_err(RequestError::Signatures)
}
