//! From a resolution result to an HTTP response (spec 05 §2.4 steps 5–9, §2.5, §2.6).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use hb_core::device::{Outcome, Status};
use hb_core::{Ctx, Message, ResolveError, Value, httpsig, json, structured};

use crate::sign::Signer;
use hb_codec::ans104;

/// The CORS headers every response carries (message keys of the same name win).
const CORS: [(&str, &str); 2] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, POST, PUT, DELETE, OPTIONS",
    ),
];

/// Which codec encodes the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCodec {
    /// `httpsig@1.0`: fields as headers, `body` as the body (the default).
    Httpsig,
    /// `json@1.0`: the TABM as a JSON object.
    Json,
    /// `ans104@1.0`: the message as a signed data item.
    Ans104,
}

/// The reply codec a request asks for (spec 05 §2.6): `require-codec` (what aoconnect
/// sends), then `accept-codec`, then `accept`, each read from the request message or,
/// when the message lacks it (a signed request keeps only its signed keys), from the
/// request's own header field. `accept-bundle` needs nothing: nested messages always
/// travel inline.
pub fn choose_codec(request: &Message, headers: &hyper::HeaderMap) -> ReplyCodec {
    let field = |name: &str| {
        request
            .get_str(name)
            .map(str::to_owned)
            .or_else(|| headers.get(name)?.to_str().ok().map(str::to_owned))
    };
    for name in ["require-codec", "accept-codec", "accept"] {
        if let Some(c) = field(name).as_deref().and_then(codec_named) {
            return c;
        }
    }
    ReplyCodec::Httpsig
}

/// The codec a field value names: a device (`json@1.0`), a bare codec name, or media
/// types (`application/json`, `device/json@1.0`, lists of them).
fn codec_named(value: &str) -> Option<ReplyCodec> {
    let named = |name: &str| match name.trim().to_ascii_lowercase().as_str() {
        "json@1.0" | "json" => Some(ReplyCodec::Json),
        "httpsig@1.0" | "httpsig" => Some(ReplyCodec::Httpsig),
        "ans104@1.0" | "ans104" => Some(ReplyCodec::Ans104),
        _ => None,
    };
    value.split(',').find_map(|item| {
        let media = item.split(';').next().unwrap_or("").trim();
        let name = media
            .strip_prefix("application/")
            .or_else(|| media.strip_prefix("device/"))
            .unwrap_or(media);
        named(name)
    })
}

/// The message a resolution answers with (spec 05 §2.4 steps 5–6): literals wrapped as
/// `{ao-result: body, body}`, errors as `{status, body}`, and `status` embedded.
pub fn result_message(outcome: Result<Outcome, ResolveError>) -> Message {
    let (status, value) = match outcome {
        Ok(o) => (o.status, o.value),
        Err(e) => {
            let code = e.http_status();
            if code >= 500 {
                tracing::warn!(error = %e, "request failed");
            } else {
                tracing::debug!(error = %e, "request refused");
            }
            (
                Status::Error,
                Value::Message(
                    Message::new()
                        .with("status", code as i64)
                        .with("body", e.to_string()),
                ),
            )
        }
    };
    embed_status(&status, force_message(value))
}

/// Step 5 of the meta pipeline: a literal result becomes `{ao-result: body, body}`.
fn force_message(value: Value) -> Message {
    match value {
        Value::Message(m) => {
            if m.public().count() == 2 && m.contains("status") && m.contains("body") {
                m.with("ao-result", "body")
            } else {
                m
            }
        }
        Value::List(l) => hb_core::value::list_to_message(&l),
        other => Message::new().with("ao-result", "body").with("body", other),
    }
}

/// Where the HTTP status of a message signed by someone else is kept: adding `status`
/// to it (and to its signed `ao-types`) would break that signature, so the code travels
/// on the status line only. Private, so never sent.
const SIGNED_STATUS: &str = "priv-http-status";

/// Spec 05 §2.5: the numeric `status` of a result (of a message signed by someone
/// else, without a `status` of its own: only the HTTP status line carries it).
fn embed_status(status: &Status, mut msg: Message) -> Message {
    let from_atom = |v: &Value| v.as_atom().and_then(|a| Status::from_atom(a).http_code());
    let code = if let Some(c) = msg.get("body").and_then(from_atom) {
        c as i64
    } else {
        match msg.get("status") {
            Some(Value::Integer(i)) => *i,
            Some(v @ Value::Atom(_)) => from_atom(v).unwrap_or(200) as i64,
            Some(v) => v
                .as_int()
                .unwrap_or_else(|| status.http_code().unwrap_or(200) as i64),
            None => status.http_code().unwrap_or(200) as i64,
        }
    };
    let key = if !msg.contains("status") && !hb_core::message::committers_of(&msg).is_empty() {
        SIGNED_STATUS
    } else {
        "status"
    };
    msg.insert(key, Value::Integer(code));
    msg
}

/// Encodes a result message with a codec; with a signer, the reply is signed by the
/// node unless the message already has a signer (spec 05 §2.4 step 8: a relayed or
/// scheduler-signed message is returned unchanged).
pub fn encode(
    msg: &Message,
    codec: ReplyCodec,
    signer: Option<(&Signer, &Ctx)>,
) -> Response<Full<Bytes>> {
    let code = msg
        .get("status")
        .or_else(|| msg.get(SIGNED_STATUS))
        .and_then(Value::as_int)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut public = hb_core::hyperpath::settle_inflight(&msg.without_private());
    let signed_by_others = !hb_core::message::committers_of(&public).is_empty();
    if !signed_by_others {
        // A result that echoes a request carries its framing headers as keys; the
        // reply's own framing is the server's (a stale `content-length` would be wrong).
        for key in FRAMING {
            public.remove(key);
        }
    }
    let signer = signer.filter(|_| !signed_by_others);
    let encoded = match (codec, signer) {
        (ReplyCodec::Httpsig, None) => encode_httpsig(&public),
        (ReplyCodec::Json, None) => encode_json(&public),
        (ReplyCodec::Httpsig, Some((signer, ctx))) => signer
            .sign_http(&public.without("commitments"), ctx)
            .map(|http| {
                (
                    http.headers.into_iter().collect(),
                    http.body.unwrap_or_default(),
                )
            })
            .map_err(|e| e.to_string()),
        (ReplyCodec::Json, Some((signer, ctx))) => signer
            .commit(&public.without("commitments"), ctx)
            .map_err(|e| e.to_string())
            .and_then(|signed| encode_json(&signed)),
        (ReplyCodec::Ans104, None) => encode_ans104(&public),
        (ReplyCodec::Ans104, Some((signer, ctx))) => signer
            .commit_ans104(&public.without("commitments"), ctx)
            .map_err(|e| e.to_string())
            .and_then(|signed| encode_ans104(&signed)),
    };
    match encoded {
        Ok((headers, body)) => build(code, headers, body),
        Err(e) => plain_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("The result could not be encoded: {e}"),
        ),
    }
}

type Encoded = (Vec<(String, Bytes)>, Bytes);

fn encode_httpsig(msg: &Message) -> Result<Encoded, String> {
    let http = httpsig::encode_rich_wire(msg).map_err(|e| e.to_string())?;
    Ok((
        http.headers.into_iter().collect(),
        http.body.unwrap_or_default(),
    ))
}

fn encode_json(msg: &Message) -> Result<Encoded, String> {
    let tabm = structured::to_tabm(msg).map_err(|e| e.to_string())?;
    let raw: Vec<(&str, &[u8])> = process_answer(msg)
        .map(|a| ("raw", a))
        .into_iter()
        .collect();
    let body = json::reply_json_text(&tabm, &raw).map_err(|e| e.to_string())?;
    let mut headers = vec![
        ("codec-device".to_owned(), Bytes::from_static(b"json@1.0")),
        (
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        ),
    ];
    for (k, v) in tabm.public() {
        if let Value::Binary(b) = v
            && k.as_ref() != "body"
        {
            headers.push((k.to_string(), b.clone()));
        }
    }
    Ok((headers, Bytes::from(body)))
}

/// The JSON answer of an AO process that a result carries (`json`, or `results/json`,
/// of content type `application/json`: what `json-iface@1.0` and the reference's
/// delegated compute keep), when it is a JSON object. A JSON reply also gives it,
/// parsed, as `raw`: aoconnect 0.0.98 reads a `result`, `results` or `dryrun` from
/// `raw` (`Output`, `Messages`, `Spawns`, `Assignments`, `Error` in their own case;
/// spec 07 §1.2, §7 item 4), which the TABM form (lower-case keys, no arrays) cannot
/// give.
fn process_answer(msg: &Message) -> Option<&[u8]> {
    fn answer(m: &Message) -> Option<&[u8]> {
        let json = m.get("json")?.as_message()?;
        let is_json = json
            .get_str("content-type")
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        match json.get("body") {
            Some(Value::Binary(b)) if is_json && b.trim_ascii_start().starts_with(b"{") => {
                Some(b.as_ref())
            }
            _ => None,
        }
    }
    answer(msg).or_else(|| answer(msg.get("results")?.as_message()?))
}

/// The data item of a message (spec 05 §2.6): only its signers' commitments travel.
fn encode_ans104(msg: &Message) -> Result<Encoded, String> {
    let item = ans104::message_to_item(msg).map_err(|e| e.to_string())?;
    let headers = vec![
        (
            "codec-device".to_owned(),
            Bytes::from_static(ans104::DEVICE_NAME.as_bytes()),
        ),
        (
            "content-type".to_owned(),
            Bytes::from_static(ans104::CONTENT_TYPE.as_bytes()),
        ),
    ];
    Ok((headers, Bytes::from(item.to_bytes())))
}

/// Header fields that frame an HTTP/1.1 message or its connection: the server writes
/// them for each reply, never from a message's keys. (`host` is not one of them: in a
/// reply it frames nothing, and a message stored from an unsigned request keeps it,
/// so a reply without it would not be that message — another node reading it by ID
/// could not match the ID.)
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
];

fn build(code: StatusCode, fields: Vec<(String, Bytes)>, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = code;
    let headers = resp.headers_mut();
    for (k, v) in CORS {
        headers.insert(k, HeaderValue::from_static(v));
    }
    for (k, v) in fields {
        if FRAMING.contains(&k.as_str()) {
            continue;
        }
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_maybe_shared(v),
        ) {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            _ => tracing::debug!(key = %k, "field cannot travel as an HTTP header; left out"),
        }
    }
    resp
}

/// A plain-text response for refusals that happen before resolution.
pub fn plain_error(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = build(code, vec![], Bytes::from(format!("{text}\n")));
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `OPTIONS` on any path (spec 05 §2.1).
pub fn options() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("*"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS, PATCH"),
    );
    resp
}

/// `GET /`: a redirect to the node's default request.
pub fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut resp = build(StatusCode::FOUND, vec![], Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert("location", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_choice() {
        let m = |k: &str, v: &str| Message::new().with(k, v);
        let none = hyper::HeaderMap::new();
        let choose = |msg: &Message| choose_codec(msg, &none);
        assert_eq!(choose(&m("accept", "application/json")), ReplyCodec::Json);
        assert_eq!(choose(&m("accept-codec", "json@1.0")), ReplyCodec::Json);
        assert_eq!(
            choose(&m("require-codec", "application/json")),
            ReplyCodec::Json
        );
        assert_eq!(
            choose(&m("require-codec", "application/json").with("accept-codec", "httpsig@1.0")),
            ReplyCodec::Json
        );
        assert_eq!(choose(&m("accept", "*/*")), ReplyCodec::Httpsig);
        assert_eq!(choose(&m("accept-codec", "ans104@1.0")), ReplyCodec::Ans104);
        assert_eq!(
            choose(&m("accept", "application/ans104")),
            ReplyCodec::Ans104
        );
        assert_eq!(choose(&Message::new()), ReplyCodec::Httpsig);
        // A signed request keeps only its signed keys; the header field still counts.
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "accept",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        assert_eq!(choose_codec(&Message::new(), &headers), ReplyCodec::Json);
        assert_eq!(
            choose_codec(&m("accept-codec", "httpsig@1.0"), &headers),
            ReplyCodec::Httpsig
        );
    }

    #[test]
    fn status_embedding() {
        let nf = embed_status(&Status::Error, force_message(Value::atom("not_found")));
        assert_eq!(nf.get("status"), Some(&Value::Integer(404)));
        let err = embed_status(&Status::Error, force_message(Value::text("bad")));
        assert_eq!(err.get("status"), Some(&Value::Integer(400)));
        let ok = embed_status(&Status::Ok, force_message(Value::Integer(42)));
        assert_eq!(ok.get("status"), Some(&Value::Integer(200)));
        assert_eq!(ok.get_str("ao-result"), Some("body"));
        let redirect = embed_status(&Status::Ok, Message::new().with("status", "307"));
        assert_eq!(redirect.get("status"), Some(&Value::Integer(307)));
        // A message signed by someone else gains no `status` (it would break the
        // signature); the code still reaches the status line.
        let signed = Message::new().with("a", "1").with(
            "commitments",
            Message::new().with("c1", Message::new().with("committer", "someone")),
        );
        let kept = embed_status(
            &Status::Error,
            force_message(Value::Message(signed.clone())),
        );
        assert_eq!(kept.without_private(), signed);
        assert_eq!(encode(&kept, ReplyCodec::Httpsig, None).status(), 400);
    }
}
