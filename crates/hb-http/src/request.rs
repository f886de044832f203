//! From an HTTP request to the singleton message the HyperPATH parser reads
//! (spec 05 §2.2, 02 §4.1).

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use thiserror::Error;

use hb_core::httpsig::{self, HttpMessage};
use hb_core::{Message, Value};

use crate::ServerConfig;

/// Why a request could not become a message.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The body (or a field describing it) could not be decoded.
    #[error("the request could not be decoded: {0}")]
    Body(#[from] hb_core::structured::CodecError),
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
/// Signature fields are set aside: checking them, and keeping only committed keys of
/// signed requests, is the commitment layer's work.
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
    let (mut msg, _signatures) = httpsig::from_http(&http).map_err(RequestError::Body)?;
    msg.insert("method", Value::text(parts.method.as_str()));
    if !msg.contains("path") {
        msg.insert("path", Value::text(target));
    }
    Ok(msg)
}
