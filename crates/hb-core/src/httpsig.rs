//! `httpsig@1.0` HTTP encoding of TABMs and the HMAC ("unsigned") ID (spec 03 §4–5.6).
//!
//! [`to_http`] lays a TABM out as HTTP headers and (possibly multipart) body exactly as
//! the reference does, byte for byte, because the multipart boundary and the
//! `content-digest` become signature components and hence part of every message ID.
//! [`hmac_id`] computes the HMAC commitment ID of a TABM and [`message_id`] the default
//! ID of a rich message.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::id::{Id, b64url};
use crate::sf::{self, BareItem, Member};
use crate::structured::{
    CodecError, float_to_text, is_empty_message, is_regenerable, to_tabm, write_list_text,
};
use crate::value::{Key, Message, Value, is_id_like, is_private};

/// Values longer than this many bytes go to the body instead of a header (03 §4.1).
pub const MAX_HEADER_LENGTH: usize = 4096;

const CRLF: &[u8] = b"\r\n";

/// Component names that RFC 9421 treats as derived: they are `@`-prefixed in component
/// lists (03 §5.2 step 3).
pub const DERIVED_COMPONENTS: [&str; 9] = [
    "method",
    "target-uri",
    "authority",
    "scheme",
    "request-target",
    "path",
    "query",
    "query-param",
    "status",
];

/// An HTTP message: lower-case header names to values, plus an optional body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpMessage {
    /// Header fields, sorted by name.
    pub headers: BTreeMap<String, Bytes>,
    /// The body, if any.
    pub body: Option<Bytes>,
}

/// The HTTP encoding with shared keys (internal form of [`HttpMessage`]).
struct Encoded {
    headers: BTreeMap<Key, Bytes>,
    body: Option<Bytes>,
}

/// A body part before flattening.
enum TopPart<'a> {
    Bin(&'a Bytes),
    Map(&'a Message),
}

/// A body part after flattening (03 §4.2 step 6).
enum FlatPart<'a> {
    /// A binary part.
    Bin(&'a Bytes),
    /// The small binary fields of a nested map (sorted by key).
    Fields(Vec<(&'a Key, &'a Bytes)>),
}

fn unencodable(k: &str) -> CodecError {
    CodecError::Unencodable(k.to_owned())
}

/// `sha-256=:<b64(sha256(body))>:`.
pub fn content_digest(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(56);
    out.extend_from_slice(b"sha-256=:");
    out.extend_from_slice(STANDARD.encode(Sha256::digest(body)).as_bytes());
    out.push(b':');
    Bytes::from(out)
}

/// Flattens a nested map part named `path` into `parts` (the reference's grouping).
fn flatten_map<'a>(
    path: &str,
    map: &'a Message,
    parts: &mut BTreeMap<String, FlatPart<'a>>,
    wire: bool,
) -> Result<(), CodecError> {
    let mut fields = Vec::new();
    for (k, v) in map.iter() {
        match v {
            Value::Message(m) => flatten_map(&format!("{path}/{k}"), m, parts, wire)?,
            Value::Binary(b) if b.len() > MAX_HEADER_LENGTH || (wire && !is_field_safe(b)) => {
                parts.insert(format!("{path}/{k}"), FlatPart::Bin(b));
            }
            Value::Binary(b) => fields.push((k, b)),
            _ => return Err(unencodable(&format!("{path}/{k}"))),
        }
    }
    if !fields.is_empty() {
        parts.insert(path.to_owned(), FlatPart::Fields(fields));
    }
    Ok(())
}

/// Encodes one multipart part (without the boundary line).
fn encode_part(out: &mut Vec<u8>, name: &str, part: &FlatPart<'_>, inline_key: &str) {
    fn disposition(out: &mut Vec<u8>, name: &str, inline_key: &str) {
        out.extend_from_slice(b"content-disposition: ");
        if name == inline_key {
            out.extend_from_slice(b"inline");
        } else {
            out.extend_from_slice(b"form-data;name=\"");
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        }
    }
    match part {
        FlatPart::Bin(b) => {
            disposition(out, name, inline_key);
            if !b.is_empty() {
                out.extend_from_slice(CRLF);
                out.extend_from_slice(CRLF);
                out.extend_from_slice(b);
            }
        }
        FlatPart::Fields(fields) => {
            let only_body = fields.len() == 1 && &**fields[0].0 == "body";
            let renamed;
            let name = if only_body {
                renamed = format!("{name}/body");
                renamed.as_str()
            } else {
                name
            };
            let mut first = true;
            let mut sep = |out: &mut Vec<u8>| {
                if !first {
                    out.extend_from_slice(CRLF);
                }
                first = false;
            };
            let mut body = None;
            let mut disposition_written = false;
            for (k, v) in fields {
                if &***k == "body" {
                    body = Some(*v);
                    continue;
                }
                if !disposition_written && &***k > "content-disposition" {
                    sep(out);
                    disposition(out, name, inline_key);
                    disposition_written = true;
                }
                sep(out);
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v);
            }
            if !disposition_written {
                sep(out);
                disposition(out, name, inline_key);
            }
            if let Some(b) = body.filter(|b| !b.is_empty()) {
                out.extend_from_slice(CRLF);
                out.extend_from_slice(CRLF);
                out.extend_from_slice(b);
            }
        }
    }
}

/// Whether a value travels unchanged as an HTTP field value (RFC 9110 §5.5): no control
/// bytes but tab, and no leading or trailing whitespace (receivers strip it).
pub fn is_field_safe(v: &[u8]) -> bool {
    let edge = |b: Option<&u8>| !matches!(b, Some(b' ' | b'\t'));
    edge(v.first()) && edge(v.last()) && v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// TABM -> HTTP encoding, steps 1–9 of 03 §4.2 (no signature headers). With `wire`, a
/// binary that cannot travel as a field value ([`is_field_safe`]) becomes a body part
/// like a long one (the reference would write it into a header, which HTTP cannot
/// carry; see docs/COMPATIBILITY.md).
fn encode(tabm: &Message, wire: bool) -> Result<Encoded, CodecError> {
    let mut headers: BTreeMap<Key, Bytes> = BTreeMap::new();
    let mut ao_ids: Vec<u8> = Vec::new();

    // Step 3: the inline key.
    let inline_key: &str = match tabm.get("inline-body-key") {
        Some(v) => v.as_str().ok_or_else(|| unencodable("inline-body-key"))?,
        None if tabm.contains("body") => "body",
        None if tabm.contains("data") => {
            headers.insert(Key::from("inline-body-key"), Bytes::from_static(b"data"));
            "data"
        }
        None => "body",
    };

    // Steps 1, 2 and 4.
    let mut top_parts: Vec<(&Key, TopPart<'_>)> = Vec::new();
    for (k, v) in tabm.iter() {
        let key: &str = k;
        if matches!(key, "commitments" | "signature" | "signature-input") || is_private(key) {
            continue;
        }
        match v {
            Value::Binary(b) if is_id_like(key.as_bytes()) => {
                if !ao_ids.is_empty() {
                    ao_ids.extend_from_slice(b", ");
                }
                ao_ids.extend_from_slice(key.as_bytes());
                ao_ids.push(b'=');
                sf::write_string(&mut ao_ids, b);
            }
            Value::Binary(b)
                if key == "body"
                    || key == inline_key
                    || b.len() > MAX_HEADER_LENGTH
                    || (wire && !is_field_safe(b)) =>
            {
                top_parts.push((k, TopPart::Bin(b)));
            }
            Value::Binary(b) => {
                headers.insert(k.clone(), b.clone());
            }
            Value::Message(m) => top_parts.push((k, TopPart::Map(m))),
            _ => return Err(unencodable(key)),
        }
    }
    if !ao_ids.is_empty() {
        headers.insert(Key::from("ao-ids"), Bytes::from(ao_ids));
    }

    // Step 5.
    if top_parts.is_empty() {
        return Ok(Encoded {
            headers,
            body: None,
        });
    }

    // Step 6.
    let mut parts: BTreeMap<String, FlatPart<'_>> = BTreeMap::new();
    for (k, p) in &top_parts {
        match p {
            TopPart::Bin(b) => {
                parts.insert(k.to_string(), FlatPart::Bin(b));
            }
            TopPart::Map(m) => flatten_map(k, m, &mut parts, wire)?,
        }
    }

    // Step 7.
    let body = if let (1, Some((name, FlatPart::Bin(b)))) = (parts.len(), parts.first_key_value())
        && name == inline_key
    {
        (*b).clone()
    } else if parts.is_empty() {
        // Only maps without fields: nothing to send.
        return Ok(Encoded {
            headers,
            body: None,
        });
    } else {
        // Step 8.
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(parts.len());
        let mut body_keys = Vec::new();
        let mut hasher = Sha256::new();
        for (n, (name, part)) in parts.iter().enumerate() {
            let mut e = Vec::new();
            encode_part(&mut e, name, part, inline_key);
            if n > 0 {
                hasher.update(CRLF);
                body_keys.extend_from_slice(b", ");
            }
            hasher.update(&e);
            sf::write_string(&mut body_keys, name.as_bytes());
            encoded.push(e);
        }
        let boundary = b64url(&hasher.finalize());
        let total: usize = encoded
            .iter()
            .map(|e| e.len() + boundary.len() + 6)
            .sum::<usize>()
            + boundary.len()
            + 6;
        let mut body = Vec::with_capacity(total);
        for (n, e) in encoded.iter().enumerate() {
            if n > 0 {
                body.extend_from_slice(CRLF);
            }
            body.extend_from_slice(b"--");
            body.extend_from_slice(boundary.as_bytes());
            body.extend_from_slice(CRLF);
            body.extend_from_slice(e);
        }
        body.extend_from_slice(CRLF);
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"--");
        headers.insert(Key::from("body-keys"), Bytes::from(body_keys));
        headers.insert(
            Key::from("content-type"),
            Bytes::from(format!("multipart/form-data; boundary=\"{boundary}\"")),
        );
        Bytes::from(body)
    };

    // Step 9.
    if !body.is_empty() {
        headers.insert(Key::from("content-digest"), content_digest(&body));
    }
    Ok(Encoded {
        headers,
        body: Some(body),
    })
}

fn is_hmac_commitment(c: &Message) -> bool {
    c.get_str("commitment-device") == Some("httpsig@1.0") && c.get_str("alg") == Some("hmac-sha256")
}

/// TABM -> HTTP message (spec 03 §4.2), exactly as the reference encodes it (the form
/// IDs and signatures are computed over).
pub fn to_http(tabm: &Message) -> Result<HttpMessage, CodecError> {
    http_of(tabm, false)
}

/// [`to_http`] for sending: values HTTP fields cannot carry go into the body.
pub fn to_http_wire(tabm: &Message) -> Result<HttpMessage, CodecError> {
    http_of(tabm, true)
}

fn http_of(tabm: &Message, wire: bool) -> Result<HttpMessage, CodecError> {
    let enc = encode(tabm, wire)?;
    let mut headers: BTreeMap<String, Bytes> = enc
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    // Step 10: the single HMAC commitment carries the combined signatures.
    if let Some(commitments) = tabm.get("commitments").and_then(Value::as_message) {
        let hmacs: Vec<&Message> = commitments
            .iter()
            .filter_map(|(_, c)| c.as_message())
            .filter(|c| is_hmac_commitment(c))
            .collect();
        if let [c] = hmacs.as_slice()
            && let (Some(Value::Binary(sig)), Some(Value::Binary(input))) =
                (c.get("signature"), c.get("signature-input"))
        {
            headers.insert("signature".to_owned(), sig.clone());
            headers.insert("signature-input".to_owned(), input.clone());
        }
        for (_, c) in commitments.iter() {
            if let Some(c) = c.as_message() {
                for (k, v) in c.iter() {
                    if k.starts_with("hashpath")
                        && let Value::Binary(b) = v
                    {
                        headers.insert(k.to_string(), b.clone());
                    }
                }
            }
        }
    }
    Ok(HttpMessage {
        headers,
        body: enc.body,
    })
}

/// The signature names and members of all RSA (non-HMAC httpsig) commitments, combined
/// and ordered by signature name (03 §5.6 step 2): returns the component list of the
/// first `signature-input` member, if there is one.
fn rsa_components(tabm: &Message) -> Result<Option<Vec<String>>, CodecError> {
    let Some(commitments) = tabm.get("commitments").and_then(Value::as_message) else {
        return Ok(None);
    };
    let mut first: Option<(String, Vec<String>)> = None;
    for (_, c) in commitments.iter() {
        let Some(c) = c.as_message() else { continue };
        if is_hmac_commitment(c) || c.get_str("commitment-device") != Some("httpsig@1.0") {
            continue;
        }
        let Some(input) = c.get("signature-input").and_then(Value::as_bytes) else {
            continue;
        };
        let dict = sf::parse_dictionary(input)
            .map_err(|e| CodecError::Other(format!("bad signature-input: {e}")))?;
        for (name, member) in dict {
            if first.as_ref().is_some_and(|(n, _)| *n <= name) {
                continue;
            }
            let Member::InnerList(items, _) = member else {
                return Err(CodecError::Other(format!(
                    "signature-input `{name}` is not an inner list"
                )));
            };
            let mut comps = Vec::with_capacity(items.len());
            for i in items {
                match i.bare {
                    BareItem::String(s) => comps
                        .push(String::from_utf8(s).map_err(|_| {
                            CodecError::Other("component name is not UTF-8".into())
                        })?),
                    _ => return Err(CodecError::Other("component is not a string".into())),
                }
            }
            first = Some((name, comps));
        }
    }
    Ok(first.map(|(_, c)| c))
}

/// The HMAC commitment ID of a TABM (spec 03 §5.6).
pub fn hmac_id(tabm: &Message) -> Result<Id, CodecError> {
    let components = rsa_components(tabm)?;
    match hmac_id_of(tabm, components.as_deref(), false)? {
        Ok(id) => Ok(id),
        // A signature made over the wire encoding (a value HTTP fields cannot carry,
        // moved into the body) covers fields only that encoding has.
        Err(missing) => hmac_id_of(tabm, components.as_deref(), true)?
            .map_err(|_| CodecError::Other(format!("signature component `{missing}` is missing"))),
    }
}

/// [`hmac_id`] over one encoding; `Ok(Err(name))` when signature component `name` is
/// not in it.
fn hmac_id_of(
    tabm: &Message,
    components: Option<&[String]>,
    wire: bool,
) -> Result<Result<Id, String>, CodecError> {
    let mut enc = encode(tabm, wire)?;
    enc.headers.remove("body-keys");
    if let Some(body) = &enc.body {
        enc.headers
            .insert(Key::from("content-digest"), content_digest(body));
    }

    // Component names, `@`-prefixed where derived, sorted after prefixing.
    let mut names: Vec<(bool, &str)> = match components {
        Some(c) => c
            .iter()
            .map(|c| c.trim_start_matches('@'))
            .map(|c| (is_derived(c), c))
            .collect(),
        None => enc.headers.keys().map(|k| (is_derived(k), &**k)).collect(),
    };
    names.sort_by(|a, b| prefixed(*a).cmp(prefixed(*b)));

    let mut mac = HMAC_AO.clone();
    for (_, name) in &names {
        let lower;
        let lookup: &str = if name.bytes().any(|c| c.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            &lower
        } else {
            name
        };
        let Some(value) = enc.headers.get(lookup) else {
            return Ok(Err(lookup.to_owned()));
        };
        mac.update(b"\"");
        mac.update(lookup.as_bytes());
        mac.update(b"\": ");
        update_value(&mut mac, value);
        mac.update(b"\n");
    }
    Ok(Ok(finish_base(mac, names.iter().copied())))
}

/// The HMAC-SHA256 state keyed with `ao` (03 §5.6 step 8), inner and outer pads already
/// absorbed; cloning it saves two compressions per ID. (HMAC zero-pads short keys to the
/// block size, so the padded key is the same key.)
static HMAC_AO: LazyLock<Hmac<Sha256>> = LazyLock::new(|| {
    let mut key = [0u8; 64];
    key[..2].copy_from_slice(b"ao");
    <Hmac<Sha256> as Mac>::new(&key.into())
});

/// Feeds a component value per 03 §5.3: leading and trailing spaces removed, every LF
/// replaced by a space.
fn update_value(mac: &mut Hmac<Sha256>, value: &[u8]) {
    let mut v = value;
    while let [b' ', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' '] = v {
        v = rest;
    }
    let mut chunks = v.split(|&c| c == b'\n');
    if let Some(c) = chunks.next() {
        mac.update(c);
    }
    for c in chunks {
        mac.update(b" ");
        mac.update(c);
    }
}

/// Ends a signature base whose component lines have been fed (03 §5.3): the
/// `@signature-params` line over the (derived?, name) components, then the ID.
fn finish_base<'a>(
    mut mac: Hmac<Sha256>,
    names: impl ExactSizeIterator<Item = (bool, &'a str)>,
) -> Id {
    if names.len() == 0 {
        mac.update(b"\n");
    }
    mac.update(b"\"@signature-params\": (");
    for (n, (derived, name)) in names.enumerate() {
        if n > 0 {
            mac.update(b" ");
        }
        mac.update(if derived { b"\"@" } else { b"\"" });
        mac.update(name.as_bytes());
        mac.update(b"\"");
    }
    mac.update(b");alg=\"hmac-sha256\";keyid=\"ao\"");
    Id(mac.finalize().into_bytes().into())
}

/// The bytes of a component name as it is sorted: `@`-prefixed when derived.
fn prefixed<'a>((derived, name): (bool, &'a str)) -> impl Iterator<Item = u8> + 'a {
    derived.then_some(b'@').into_iter().chain(name.bytes())
}

fn is_derived(name: &str) -> bool {
    DERIVED_COMPONENTS.contains(&name)
}

/// The ID of a rich message as `message@1.0`'s `id` with default parameters computes
/// it (spec 01 §6.5): no commitments -> the HMAC ID of its TABM; one -> that
/// commitment's ID; several -> SHA-256 of the sorted IDs joined by `", "`.
///
/// Small flat messages (the common case on the request path) take a fast path that
/// streams the signature base into the HMAC without building the TABM or the HTTP
/// encoding; see `fast_message_id` for when it applies. The result is the same.
pub fn message_id(msg: &Message) -> Result<Id, CodecError> {
    match fast_message_id(msg) {
        Some(id) => Ok(id),
        None => message_id_slow(msg),
    }
}

/// [`message_id`] the long way: through [`to_tabm`] and the HTTP encoding.
fn message_id_slow(msg: &Message) -> Result<Id, CodecError> {
    match msg.get("commitments") {
        Some(Value::Message(c)) if !c.is_empty() => {
            if c.len() == 1 {
                let key = c
                    .keys()
                    .next()
                    .ok_or_else(|| CodecError::Other("no commitment".into()))?;
                Id::from_human(key.as_bytes()).ok_or_else(|| {
                    CodecError::Other(format!("commitment key `{key}` is not an ID"))
                })
            } else {
                let mut ids: Vec<&str> = c.keys().map(|k| &**k).collect();
                ids.sort_unstable();
                let mut h = Sha256::new();
                for (n, id) in ids.iter().enumerate() {
                    if n > 0 {
                        h.update(b", ");
                    }
                    h.update(id.as_bytes());
                }
                Ok(Id(h.finalize().into()))
            }
        }
        Some(_) => hmac_id(&to_tabm(&msg.clone().without("commitments"))?),
        None => hmac_id(&to_tabm(msg)?),
    }
}

// ---------------------------------------------------------------------------------
// Fast paths for flat messages: `message_id` and `encode_rich`
// ---------------------------------------------------------------------------------

/// Most keys a message may have for the flat fast paths.
const FAST_MAX_KEYS: usize = 32;

/// The TABM/HTTP value of one header component of a flat message.
#[derive(Clone, Copy)]
enum FastValue<'a> {
    /// A binary header, as is.
    Bin(&'a Bytes),
    /// An integer, written as decimal text.
    Int(i64),
    /// Encoded text (float, atom, list) at this range of [`Flat::scratch`].
    Text(usize, usize),
    /// The `ao-types` dictionary of the collected types.
    AoTypes,
    /// The `content-digest` of the body.
    Digest,
}

#[derive(Clone, Copy)]
struct FastComponent<'a> {
    name: &'a str,
    /// Whether the name is a derived component (set by the ID path only).
    derived: bool,
    value: FastValue<'a>,
}

const NO_COMPONENT: FastComponent<'static> = FastComponent {
    name: "",
    derived: false,
    value: FastValue::Int(0),
};

/// The httpsig encoding of a flat rich message in pieces, as [`Flat::read`] finds them:
/// what both [`fast_message_id`] and the fast path of [`encode_rich_wire`] consume.
///
/// The header fields are `comps` (in message key order, then `content-digest` if
/// there is a body, then `ao-types` if there are types); the body is `body`.
///
/// The arrays are the caller's (initialised in place: moving them into a new `Flat`
/// would cost a copy of some kilobytes, a tenth of the time of an ID).
struct Flat<'a, 'f> {
    comps: &'f mut [FastComponent<'a>; FAST_MAX_KEYS + 2],
    ncomps: usize,
    /// The `ao-types` entries (unescaped key, type), in key order.
    types: &'f mut [(&'a str, &'static str); FAST_MAX_KEYS],
    ntypes: usize,
    /// The HTTP body: never [`FastValue::AoTypes`] or [`FastValue::Digest`], never empty.
    body: Option<FastValue<'a>>,
    /// The text of the [`FastValue::Text`] values.
    scratch: Vec<u8>,
    /// The `content-digest` of the body, `sha-256=:<44 base64 characters>:` (only
    /// meaningful when there is a body).
    digest: [u8; 54],
}

impl<'a, 'f> Flat<'a, 'f> {
    fn new(
        comps: &'f mut [FastComponent<'a>; FAST_MAX_KEYS + 2],
        types: &'f mut [(&'a str, &'static str); FAST_MAX_KEYS],
    ) -> Self {
        Flat {
            comps,
            ncomps: 0,
            types,
            ntypes: 0,
            body: None,
            scratch: Vec::new(),
            digest: [0u8; 54],
        }
    }

    /// Classifies every value of `msg` into header components, types and body, for the
    /// messages whose TABM → HTTP encoding is exactly that: a header per component, the
    /// `ao-types` dictionary and the inline `body` (with its `content-digest`), no
    /// multipart. `None` for everything else (the caller then takes the slow path,
    /// which also produces any error).
    ///
    /// It applies when the message has no `commitments` key, at most
    /// [`FAST_MAX_KEYS`] keys, every key already normalised (no upper-case character)
    /// and not ID-like (32/42/43 bytes), none of the keys `signature`,
    /// `signature-input`, `data`, `inline-body-key`, `ao-types`, `body-keys`, an
    /// `ao-types` dictionary short enough to be a header, and every value is
    /// * a binary (a non-empty one of at most [`MAX_HEADER_LENGTH`] bytes becomes a
    ///   header),
    /// * an integer, float or atom (its typed text, at most [`MAX_HEADER_LENGTH`] bytes),
    /// * a list whose first element is neither a map nor a list (its list text, bounded
    ///   likewise), or an empty list,
    /// * an empty message (or one holding only `priv`),
    ///
    /// except that `body` may hold a value of any length (it becomes the whole HTTP
    /// body). Private keys, `unsigned_id` and `content-digest` are dropped as
    /// [`to_tabm`] drops them.
    #[inline(always)]
    fn read(&mut self, msg: &'a Message) -> Option<()> {
        if msg.len() > FAST_MAX_KEYS || msg.contains("commitments") {
            return None;
        }
        // Nested maps and lists of maps/lists (body parts) are the common reason to
        // fall back: find them before encoding anything.
        if msg.iter().any(|(_, v)| match v {
            Value::Message(m) => !is_empty_message(m),
            Value::List(l) => matches!(l.first(), Some(Value::Message(_) | Value::List(_))),
            _ => false,
        }) {
            return None;
        }
        // An upper bound of the length of the `ao-types` dictionary: each entry is at
        // most `, ` + the key escaped (3 bytes per byte) + `="empty-message"`.
        let mut types_bound = 0;
        let scratch = &mut self.scratch;
        for (k, v) in msg.iter() {
            let key: &str = k;
            let normal = if key.is_ascii() {
                !key.bytes().any(|c| c.is_ascii_uppercase())
            } else {
                !key.chars().any(char::is_uppercase)
            };
            if !normal || is_id_like(key.as_bytes()) {
                return None;
            }
            if is_private(key) || is_regenerable(key) {
                continue;
            }
            if matches!(
                key,
                "signature"
                    | "signature-input"
                    | "data"
                    | "inline-body-key"
                    | "ao-types"
                    | "body-keys"
            ) {
                return None;
            }
            let is_body = key == "body";
            let text = |scratch: &mut Vec<u8>, start: usize| -> Option<FastValue<'a>> {
                (is_body || scratch.len() - start <= MAX_HEADER_LENGTH)
                    .then_some(FastValue::Text(start, scratch.len()))
            };
            let start = scratch.len();
            let (value, ty) = match v {
                Value::Binary(b) if b.is_empty() => (None, Some("empty-binary")),
                Value::Binary(b) if is_body || b.len() <= MAX_HEADER_LENGTH => {
                    (Some(FastValue::Bin(b)), None)
                }
                Value::Integer(i) => (Some(FastValue::Int(*i)), Some("integer")),
                Value::Float(f) => {
                    scratch.extend_from_slice(float_to_text(*f).as_bytes());
                    (Some(text(scratch, start)?), Some("float"))
                }
                Value::Atom(a) => {
                    sf::write_string(scratch, a.as_bytes());
                    (Some(text(scratch, start)?), Some("atom"))
                }
                Value::List(l) if l.is_empty() => (None, Some("empty-list")),
                Value::List(l) if !matches!(l[0], Value::Message(_) | Value::List(_)) => {
                    write_list_text(scratch, l).ok()?;
                    (Some(text(scratch, start)?), Some("list"))
                }
                Value::Message(m) if is_empty_message(m) => (None, Some("empty-message")),
                _ => return None,
            };
            if let Some(ty) = ty {
                self.types[self.ntypes] = (key, ty);
                self.ntypes += 1;
                types_bound += 3 * key.len() + 18;
            }
            match value {
                Some(value) if is_body => self.body = Some(value),
                Some(value) => {
                    self.comps[self.ncomps] = FastComponent {
                        name: key,
                        derived: false,
                        value,
                    };
                    self.ncomps += 1;
                }
                None => {}
            }
        }
        if types_bound > MAX_HEADER_LENGTH {
            // Possibly too long for a header (then a body part): leave it to the slow path.
            return None;
        }

        if let Some(b) = self.body {
            let mut buf = [0u8; 20];
            let bytes: &[u8] = match b {
                FastValue::Bin(b) => b,
                FastValue::Int(i) => int_text(i, &mut buf),
                FastValue::Text(s, e) => &self.scratch[s..e],
                FastValue::AoTypes | FastValue::Digest => return None,
            };
            self.digest[..9].copy_from_slice(b"sha-256=:");
            if STANDARD
                .encode_slice(Sha256::digest(bytes), &mut self.digest[9..53])
                .ok()?
                != 44
            {
                return None;
            }
            self.digest[53] = b':';
            self.comps[self.ncomps] = FastComponent {
                name: "content-digest",
                derived: false,
                value: FastValue::Digest,
            };
            self.ncomps += 1;
        }
        if self.ntypes > 0 {
            self.comps[self.ncomps] = FastComponent {
                name: "ao-types",
                derived: false,
                value: FastValue::AoTypes,
            };
            self.ncomps += 1;
        }
        Some(())
    }
}

/// Feeds the `ao-types` dictionary of `types` to `out` in pieces: `k1="t1", k2="t2"`
/// with the keys escaped as [`crate::structured::escape_key`] does (03 §3).
#[inline(always)]
fn ao_types_pieces(types: &[(&str, &str)], mut out: impl FnMut(&[u8])) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let keep = |c: u8| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'.' | b'-' | b'_' | b'/' | b'?' | b'&' | b'+')
    };
    for (n, (key, ty)) in types.iter().enumerate() {
        if n > 0 {
            out(b", ");
        }
        let mut rest = key.as_bytes();
        while !rest.is_empty() {
            let n = rest.iter().position(|&c| !keep(c)).unwrap_or(rest.len());
            out(&rest[..n]);
            if let Some(&c) = rest.get(n) {
                out(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
                rest = &rest[n + 1..];
            } else {
                rest = &[];
            }
        }
        out(b"=\"");
        out(ty.as_bytes());
        out(b"\"");
    }
}

/// Decimal text of an integer, like `i64::to_string`, in a stack buffer.
fn int_text(i: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = i.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

/// The HMAC ID of an uncommitted message, streamed straight from the rich message, for
/// the messages where that is exactly what `hmac_id(to_tabm(msg))` computes (see
/// [`Flat::read`]); `None` for everything else. The components of the signature base
/// are the header fields of the HTTP encoding.
fn fast_message_id(msg: &Message) -> Option<Id> {
    let mut comps = [NO_COMPONENT; FAST_MAX_KEYS + 2];
    let mut types = [("", ""); FAST_MAX_KEYS];
    let mut flat = Flat::new(&mut comps, &mut types);
    flat.read(msg)?;
    let comps = &mut flat.comps[..flat.ncomps];
    for c in comps.iter_mut() {
        c.derived = is_derived(c.name);
    }
    comps.sort_unstable_by(|a, b| prefixed((a.derived, a.name)).cmp(prefixed((b.derived, b.name))));

    let mut mac = HMAC_AO.clone();
    for c in comps.iter() {
        mac.update(b"\"");
        mac.update(c.name.as_bytes());
        mac.update(b"\": ");
        match c.value {
            FastValue::Bin(b) => update_value(&mut mac, b),
            FastValue::Int(i) => mac.update(int_text(i, &mut [0u8; 20])),
            FastValue::Text(s, e) => update_value(&mut mac, &flat.scratch[s..e]),
            FastValue::AoTypes => ao_types_pieces(&flat.types[..flat.ntypes], |p| mac.update(p)),
            FastValue::Digest => mac.update(&flat.digest),
        }
        mac.update(b"\n");
    }
    Some(finish_base(mac, comps.iter().map(|c| (c.derived, c.name))))
}

/// The header fields and body of a flat message's HTTP encoding, built from its pieces
/// (see [`Flat::read`]); `None` when the slow path must be taken.
fn fast_fields(msg: &Message) -> Option<HttpFields> {
    let mut comps = [NO_COMPONENT; FAST_MAX_KEYS + 2];
    let mut types = [("", ""); FAST_MAX_KEYS];
    let mut flat = Flat::new(&mut comps, &mut types);
    flat.read(msg)?;
    let Flat {
        comps,
        ncomps,
        types,
        ntypes,
        body,
        scratch,
        digest,
    } = &mut flat;
    let comps = &mut comps[..*ncomps];
    comps.sort_unstable_by(|a, b| a.name.cmp(b.name));

    // All generated text goes to one buffer (after the texts already in `scratch`),
    // shared by the values it holds.
    let mut text = std::mem::take(scratch);
    let int = |text: &mut Vec<u8>, i: i64| {
        let start = text.len();
        text.extend_from_slice(int_text(i, &mut [0u8; 20]));
        FastValue::Text(start, text.len())
    };
    for c in comps.iter_mut() {
        let start = text.len();
        c.value = match c.value {
            FastValue::Int(i) => int(&mut text, i),
            FastValue::AoTypes => {
                ao_types_pieces(&types[..*ntypes], |p| text.extend_from_slice(p));
                FastValue::Text(start, text.len())
            }
            FastValue::Digest => {
                text.extend_from_slice(&digest[..]);
                FastValue::Text(start, text.len())
            }
            v @ (FastValue::Bin(_) | FastValue::Text(..)) => v,
        };
    }
    if let Some(FastValue::Int(i)) = *body {
        *body = Some(int(&mut text, i));
    }
    let text = Bytes::from(text);
    let bytes = |v: FastValue<'_>| match v {
        FastValue::Bin(b) => b.clone(),
        FastValue::Text(s, e) => text.slice(s..e),
        // Replaced above.
        FastValue::Int(_) | FastValue::AoTypes | FastValue::Digest => Bytes::new(),
    };
    Some(HttpFields {
        headers: comps
            .iter()
            .map(|c| (c.name.to_owned(), bytes(c.value)))
            .collect(),
        body: body.map(bytes),
    })
}

/// An HTTP message as the fast encoder makes it: like [`HttpMessage`], with the header
/// fields in a vector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpFields {
    /// Header fields, sorted by name, names unique.
    pub headers: Vec<(String, Bytes)>,
    /// The body, if any.
    pub body: Option<Bytes>,
}

/// The httpsig HTTP encoding of a rich message: exactly
/// `to_http(&to_tabm(msg)?)`, header fields and body.
///
/// Flat messages (those [`message_id`] also takes its fast path for: no nested maps,
/// no multipart body, no commitments) are encoded directly from the rich message
/// without building the TABM; all others go through [`to_tabm`] and [`to_http`].
pub fn encode_rich(msg: &Message) -> Result<HttpMessage, CodecError> {
    match fast_fields(msg) {
        Some(f) => Ok(HttpMessage {
            headers: f.headers.into_iter().collect(),
            body: f.body,
        }),
        None => to_http(&to_tabm(msg)?),
    }
}

/// [`encode_rich`] for sending: exactly `to_http_wire(&to_tabm(msg)?)`.
pub fn encode_rich_wire(msg: &Message) -> Result<HttpMessage, CodecError> {
    match fast_fields(msg) {
        Some(f) if f.headers.iter().all(|(_, v)| is_field_safe(v)) => Ok(HttpMessage {
            headers: f.headers.into_iter().collect(),
            body: f.body,
        }),
        _ => to_http_wire(&to_tabm(msg)?),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::structured::from_tabm;

    fn m(pairs: Vec<(&str, Value)>) -> Message {
        Message::from_pairs(pairs)
    }

    /// Values HTTP fields cannot carry go into the body on the wire, and only there.
    #[test]
    fn wire_encoding_moves_unsafe_values_into_the_body() {
        assert!(is_field_safe(b"a b\tc") && is_field_safe(b""));
        for bad in [&b"a\nb"[..], b"a\rb", b" a", b"a ", b"\0", b"\x7f"] {
            assert!(!is_field_safe(bad), "{bad:?}");
        }
        let msg = m(vec![
            ("a", Value::text("1")),
            ("n", Value::text("hello\nworld")),
            ("x", Value::Message(m(vec![("y", Value::text("p\nq"))]))),
        ]);
        let plain = to_http(&msg).unwrap();
        assert_eq!(
            plain.headers.get("n").map(|v| &v[..]),
            Some(&b"hello\nworld"[..])
        );
        let wire = to_http_wire(&msg).unwrap();
        assert!(!wire.headers.contains_key("n"));
        let body = wire.body.clone().unwrap();
        assert!(body.windows(11).any(|w| w == b"hello\nworld"));
        let (back, _) = from_http(&wire).unwrap();
        assert_eq!(back.get_str("n"), Some("hello\nworld"));
        let x = back.get("x").and_then(Value::as_message).unwrap();
        assert_eq!(x.get_str("y"), Some("p\nq"));
        assert_eq!(encode_rich_wire(&msg).unwrap(), wire);
    }

    fn h(e: &HttpMessage, k: &str) -> String {
        String::from_utf8(
            e.headers
                .get(k)
                .unwrap_or_else(|| panic!("no header {k}"))
                .to_vec(),
        )
        .unwrap()
    }

    fn body(e: &HttpMessage) -> String {
        String::from_utf8(e.body.clone().unwrap().to_vec()).unwrap()
    }

    fn id(msg: &Message) -> String {
        message_id(msg).unwrap().to_human()
    }

    fn http(msg: &Message) -> HttpMessage {
        to_http(&to_tabm(msg).unwrap()).unwrap()
    }

    #[test]
    fn spec03_4_2_inline_body() {
        let e = http(&m(vec![
            ("a", Value::text("1")),
            ("body", Value::text("hello")),
        ]));
        assert_eq!(h(&e, "a"), "1");
        assert_eq!(body(&e), "hello");
        assert!(e.headers.contains_key("content-digest"));
        assert_eq!(e.headers.len(), 2);
        let e = http(&m(vec![
            ("a", Value::text("1")),
            ("data", Value::text("DATA")),
        ]));
        assert_eq!(h(&e, "a"), "1");
        assert_eq!(h(&e, "inline-body-key"), "data");
        assert_eq!(body(&e), "DATA");
        let e = http(&m(vec![("a", Value::text("1"))]));
        assert_eq!(e.body, None);
        assert_eq!(e.headers.len(), 1);
    }

    #[test]
    fn spec03_4_2_ao_ids() {
        let k = "IYkkrqlZNW_J-4T-5eFApZOMRl5P4VjvrcOXWvIqB1Q";
        let e = http(&m(vec![(k, Value::text("v")), ("a", Value::text("1"))]));
        assert_eq!(h(&e, "ao-ids"), format!("{k}=\"v\""));
        assert!(!e.headers.contains_key(k));
    }

    #[test]
    fn spec03_4_2_nested_multipart() {
        let e = http(&m(vec![
            ("a", Value::text("1")),
            ("nested", Value::Message(m(vec![("b", Value::text("2"))]))),
        ]));
        let b = "T8hSpMyOHsOwjtAeI6nSAiT1DgJeDXcnMSRadq1hGRc";
        assert_eq!(h(&e, "a"), "1");
        assert_eq!(h(&e, "body-keys"), "\"nested\"");
        assert_eq!(
            h(&e, "content-digest"),
            "sha-256=:HZQj6o5uPjkCC6qf/FbAhCCVMGjmo504RkOtx3g/eBo=:"
        );
        assert_eq!(
            h(&e, "content-type"),
            format!("multipart/form-data; boundary=\"{b}\"")
        );
        assert_eq!(
            body(&e),
            format!("--{b}\r\nb: 2\r\ncontent-disposition: form-data;name=\"nested\"\r\n--{b}--")
        );
        assert_eq!(e.headers.len(), 4);
    }

    #[test]
    fn spec03_4_2_nested_body_part() {
        let e = http(&m(vec![
            ("a", Value::text("1")),
            (
                "nested",
                Value::Message(m(vec![("body", Value::text("2"))])),
            ),
        ]));
        let b = "X5AHjDMsZhia2sCiuk4Dg2uxi-G9iECS9VOi6xqLQDA";
        assert_eq!(h(&e, "body-keys"), "\"nested\"");
        assert_eq!(
            h(&e, "content-type"),
            format!("multipart/form-data; boundary=\"{b}\"")
        );
        assert_eq!(
            body(&e),
            format!(
                "--{b}\r\ncontent-disposition: form-data;name=\"nested/body\"\r\n\r\n2\r\n--{b}--"
            )
        );
    }

    #[test]
    fn spec03_4_2_deep_nesting() {
        let msg = m(vec![(
            "a",
            Value::Message(m(vec![(
                "b",
                Value::Message(m(vec![("c", Value::text("X"))])),
            )])),
        )]);
        let e = http(&msg);
        let b = "H0TmA3pFFHwqRy2DMhdp1LLvy9lgq6jdrbTNIs9SI84";
        assert_eq!(h(&e, "body-keys"), "\"a/b\"");
        assert_eq!(
            h(&e, "content-type"),
            format!("multipart/form-data; boundary=\"{b}\"")
        );
        assert_eq!(
            h(&e, "content-digest"),
            "sha-256=:Tln3HmV7gfwWuf0ltbysvdwU3kc99jb5WWLJscQehuM=:"
        );
        assert_eq!(
            body(&e),
            format!("--{b}\r\nc: X\r\ncontent-disposition: form-data;name=\"a/b\"\r\n--{b}--")
        );
    }

    #[test]
    fn spec03_4_2_inline_and_form_parts() {
        let e = http(&m(vec![
            ("body", Value::text("BODY")),
            ("n", Value::Message(m(vec![("x", Value::text("1"))]))),
        ]));
        assert_eq!(h(&e, "body-keys"), "\"body\", \"n\"");
        let ct = h(&e, "content-type");
        let b = ct.split('"').nth(1).unwrap();
        let parts = [
            "content-disposition: inline\r\n\r\nBODY",
            "content-disposition: form-data;name=\"n\"\r\nx: 1",
        ];
        assert_eq!(b, b64url(&Sha256::digest(parts.join("\r\n"))));
        assert_eq!(
            body(&e),
            format!("--{b}\r\n{}\r\n--{b}\r\n{}\r\n--{b}--", parts[0], parts[1])
        );
    }

    #[test]
    fn spec03_4_2_list_of_maps_body() {
        let msg = m(vec![(
            "body",
            Value::list(vec![
                Value::Message(m(vec![("k", Value::text("v1"))])),
                Value::Message(m(vec![("k", Value::text("v2"))])),
            ]),
        )]);
        let e = http(&msg);
        assert_eq!(h(&e, "ao-types"), "body=\"list\"");
        assert_eq!(h(&e, "body-keys"), "\"body/1\", \"body/2\"");
        assert!(body(&e).contains("content-disposition: form-data;name=\"body/1\"\r\nk: v1"));
    }

    #[test]
    fn spec03_4_2_big_values_and_deep_parts() {
        let big = "x".repeat(5000);
        let msg = m(vec![
            ("big", Value::text(&big)),
            ("small", Value::text("s")),
            (
                "n",
                Value::Message(m(vec![
                    ("x", Value::text("1")),
                    ("y", Value::Message(m(vec![("z", Value::text("2"))]))),
                ])),
            ),
        ]);
        let e = http(&msg);
        assert_eq!(h(&e, "body-keys"), "\"big\", \"n\", \"n/y\"");
        assert_eq!(h(&e, "small"), "s");
        let b = body(&e);
        assert!(b.contains(&format!(
            "content-disposition: form-data;name=\"big\"\r\n\r\n{big}\r\n"
        )));
        assert!(b.contains("content-disposition: form-data;name=\"n/y\"\r\nz: 2"));
        // Exactly 4096 bytes stays a header.
        let e = http(&m(vec![("v", Value::text(&"y".repeat(4096)))]));
        assert_eq!(e.body, None);
    }

    #[test]
    fn spec03_5_6_hmac_vectors() {
        let cases: Vec<(Message, &str)> = vec![
            (
                Message::new(),
                "VnYnaoOvankqXk13s502zpiq9PIaqFHDRcIrTNhyqKQ",
            ),
            (
                m(vec![("a", Value::text("1"))]),
                "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s",
            ),
            (
                m(vec![("a", Value::Integer(1))]),
                "np3stvTlJELQLgarP2Iw5NuN6oFI_iMfrglyWWsK3ME",
            ),
            (
                m(vec![("a", Value::text("1")), ("b", Value::Integer(2))]),
                "aU8BUmgbZw0qlfQ-AZEy7EQwp1d7UaOHcRIOWvA17LE",
            ),
            (
                m(vec![
                    ("path", Value::text("/x")),
                    ("method", Value::text("GET")),
                    ("body", Value::text("B")),
                ]),
                "p07v-fWQoZZrWORzkhGxnE1qFrX6GuSA9LQpIxLpRbg",
            ),
            (
                m(vec![(
                    "a",
                    Value::Message(m(vec![(
                        "b",
                        Value::Message(m(vec![("c", Value::text("X"))])),
                    )])),
                )]),
                "MgSU6gLkR0WiqCizKUeqmNP-nH9F97lwn3mX1O9SIfo",
            ),
            (
                m(vec![
                    ("name", Value::text("Alice")),
                    ("age", Value::Integer(30)),
                    (
                        "tags",
                        Value::list(vec![Value::text("x"), Value::Integer(2)]),
                    ),
                    ("empty", Value::text("")),
                    ("body", Value::text("hello")),
                ]),
                "S81C4oOard8EJHAjL5tNp4SMhk7VWaOpsmRpMcI3lZY",
            ),
            (
                m(vec![
                    ("a", Value::text("1")),
                    ("data", Value::text("hello")),
                ]),
                "lztLrlQ5O5YtbuvSpCAqa3ddvCb3x2WzPeoWW4STvY4",
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(
                hmac_id(&to_tabm(&msg).unwrap()).unwrap().to_human(),
                want,
                "{msg:?}"
            );
            assert_eq!(message_id(&msg).unwrap().to_human(), want, "{msg:?}");
            if let Some(fast) = fast_message_id(&msg) {
                assert_eq!(fast.to_human(), want, "{msg:?}");
            }
        }
    }

    #[test]
    fn spec01_12_3_id_table() {
        assert_eq!(
            id(&Message::new()),
            "VnYnaoOvankqXk13s502zpiq9PIaqFHDRcIrTNhyqKQ"
        );
        assert_eq!(
            id(&m(vec![("a", Value::text("1"))])),
            "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s"
        );
        assert_eq!(
            id(&m(vec![("a", Value::Integer(1))])),
            "np3stvTlJELQLgarP2Iw5NuN6oFI_iMfrglyWWsK3ME"
        );
        assert_eq!(
            id(&m(vec![("a", Value::text("1")), ("b", Value::Integer(2))])),
            "aU8BUmgbZw0qlfQ-AZEy7EQwp1d7UaOHcRIOWvA17LE"
        );
        assert_eq!(
            id(&m(vec![
                ("path", Value::text("/x")),
                ("method", Value::text("GET")),
                ("body", Value::text("B"))
            ])),
            "p07v-fWQoZZrWORzkhGxnE1qFrX6GuSA9LQpIxLpRbg"
        );
        assert_eq!(
            id(&m(vec![(
                "a",
                Value::Message(m(vec![(
                    "b",
                    Value::Message(m(vec![("c", Value::text("X"))]))
                )]))
            )])),
            "MgSU6gLkR0WiqCizKUeqmNP-nH9F97lwn3mX1O9SIfo"
        );
        assert_eq!(
            id(&m(vec![
                ("name", Value::text("Alice")),
                ("age", Value::Integer(30)),
                (
                    "tags",
                    Value::list(vec![Value::text("x"), Value::Integer(2)])
                ),
                ("empty", Value::text("")),
                ("body", Value::text("hello")),
            ])),
            "S81C4oOard8EJHAjL5tNp4SMhk7VWaOpsmRpMcI3lZY"
        );
        assert_eq!(
            id(&m(vec![
                ("a", Value::text("1")),
                ("data", Value::text("hello"))
            ])),
            "lztLrlQ5O5YtbuvSpCAqa3ddvCb3x2WzPeoWW4STvY4"
        );
    }

    #[test]
    fn spec01_6_5_commitment_ids() {
        let a = "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s";
        let b = "VnYnaoOvankqXk13s502zpiq9PIaqFHDRcIrTNhyqKQ";
        let c1 = m(vec![("alg", Value::text("hmac-sha256"))]);
        let one = m(vec![
            ("x", Value::text("1")),
            (
                "commitments",
                Value::Message(m(vec![(a, Value::Message(c1.clone()))])),
            ),
        ]);
        assert_eq!(id(&one), a);
        let two = m(vec![(
            "commitments",
            Value::Message(m(vec![
                (a, Value::Message(c1.clone())),
                (b, Value::Message(c1)),
            ])),
        )]);
        assert_eq!(
            message_id(&two).unwrap(),
            Id::sha256(format!("{a}, {b}").as_bytes())
        );
        // An empty commitments map counts as none.
        let none = m(vec![
            ("a", Value::text("1")),
            ("commitments", Value::Message(Message::new())),
        ]);
        assert_eq!(id(&none), a);
    }

    #[test]
    fn spec03_5_6_hmac_ignores_signatures() {
        // The HMAC commitment's own signature fields are not components, and an RSA
        // commitment's component list decides the components.
        let rsa = m(vec![
            ("commitment-device", Value::text("httpsig@1.0")),
            ("alg", Value::text("rsa-pss-sha512")),
            ("signature", Value::text("http-sig-1=:AAAA:")),
            (
                "signature-input",
                Value::text(
                    "http-sig-1=(\"a\" \"ao-types\" \"b\");alg=\"rsa-pss-sha512\";keyid=\"k\"",
                ),
            ),
        ]);
        let signed = m(vec![
            ("a", Value::text("1")),
            ("b", Value::Integer(2)),
            (
                "commitments",
                Value::Message(m(vec![("X", Value::Message(rsa))])),
            ),
        ]);
        assert_eq!(
            hmac_id(&to_tabm(&signed).unwrap()).unwrap().to_human(),
            "aU8BUmgbZw0qlfQ-AZEy7EQwp1d7UaOHcRIOWvA17LE"
        );
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn httpsig_message_id_total(
            entries in proptest::collection::btree_map(
                "[a-zA-Z][a-z0-9-]{0,5}",
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..5000).prop_map(Value::bin),
                    any::<i64>().prop_map(Value::Integer),
                    proptest::collection::btree_map("[a-z]{1,4}", "[ -~]{0,8}", 0..4)
                        .prop_map(|m| Value::Message(Message::from_pairs(m))),
                ],
                0..6,
            )
        ) {
            let msg = Message::from_pairs(entries);
            let a = message_id(&msg).unwrap();
            prop_assert_eq!(a, hmac_id(&to_tabm(&msg).unwrap()).unwrap());
            to_http(&to_tabm(&msg).unwrap()).unwrap();
        }
    }

    #[test]
    fn httpsig_roundtrip_through_structured() {
        let msg = m(vec![
            ("a", Value::Integer(1)),
            ("n", Value::Message(m(vec![("x", Value::Float(1.5))]))),
        ]);
        let t = to_tabm(&msg).unwrap();
        assert_eq!(from_tabm(&t).unwrap(), msg);
        let e = to_http(&t).unwrap();
        assert_eq!(h(&e, "ao-types"), "a=\"integer\"");
        assert!(body(&e).contains("ao-types: x=\"float\""));
    }

    /// The messages the fast path is for do take it, and agree with the slow path.
    #[test]
    fn fast_message_id_applies() {
        let applies = [
            Message::new(),
            m(vec![("a", Value::Integer(1))]),
            m(vec![
                ("device", Value::text("message@1.0")),
                ("a", Value::Integer(1)),
                ("accept", Value::text("*/*")),
                ("host", Value::text("127.0.0.1:8734")),
                ("user-agent", Value::text("curl/8")),
            ]),
            m(vec![
                ("path", Value::text("a")),
                ("accept", Value::text("*/*")),
                ("host", Value::text("127.0.0.1:8734")),
                ("user-agent", Value::text("curl/8")),
            ]),
            m(vec![
                ("a", Value::Integer(1)),
                ("greeting", Value::text("Hello")),
                ("body", Value::text("Hello, world!")),
            ]),
            m(vec![
                ("method", Value::text(" GET\n ")),
                ("status", Value::Integer(-200)),
                ("min", Value::Integer(i64::MIN)),
                ("max", Value::Integer(i64::MAX)),
                ("x y", Value::Float(0.1)),
                ("ok", Value::boolean(true)),
                (
                    "l",
                    Value::list(vec![Value::text("a\"b"), Value::Integer(2)]),
                ),
                ("e", Value::list(vec![])),
                ("m", Value::Message(m(vec![("priv", Value::text("k"))]))),
                ("priv-key", Value::text("secret")),
                ("unsigned_id", Value::text("x")),
                ("content-digest", Value::text("x")),
                ("body", Value::Integer(7)),
            ]),
        ];
        for msg in applies {
            let fast = fast_message_id(&msg).unwrap_or_else(|| panic!("no fast path: {msg:?}"));
            assert_eq!(fast, message_id_slow(&msg).unwrap(), "{msg:?}");
        }
        let falls_back = [
            m(vec![(
                "a",
                Value::Message(m(vec![("b", Value::text("1"))])),
            )]),
            m(vec![("data", Value::text("1"))]),
            m(vec![(
                "big",
                Value::text(&"x".repeat(MAX_HEADER_LENGTH + 1)),
            )]),
            m(vec![("l", Value::list(vec![Value::list(vec![])]))]),
            m(vec![(&"k".repeat(43), Value::text("1"))]),
            Message::new().with("commitments", Message::new()),
        ];
        for msg in falls_back {
            assert!(fast_message_id(&msg).is_none(), "{msg:?}");
        }
        let mut upper = Message::new();
        upper.insert_key(Key::from("Upper"), Value::text("v"));
        assert!(fast_message_id(&upper).is_none());
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            20 => "[a-z0-9_-]{1,10}",
            12 => proptest::sample::select(vec![
                "path", "method", "status", "body", "query", "target-uri", "authority",
                "scheme", "request-target", "query-param", "accept", "host", "user-agent",
                "ao-ids", "content-type", "a", "b", "0", "-", "@x", "~y", "_z", "x y", "é",
                "body", "body",
            ]).prop_map(str::to_owned),
            1 => proptest::sample::select(vec![
                "data", "commitments", "signature", "signature-input", "ao-types",
                "unsigned_id", "content-digest", "priv", "priv-x", "private", "body-keys",
                "inline-body-key", "",
            ]).prop_map(str::to_owned),
            1 => "[A-Za-z]{1,4}",
            1 => "[a-z]{32}|[a-z]{42}|[a-z]{43}",
        ]
    }

    fn arb_binary() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => "[ -~\n]{0,24}".prop_map(|s| Value::text(&s)),
            1 => Just(Value::text("")),
            1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::bin),
            1 => proptest::collection::vec(any::<u8>(), 4090..4100).prop_map(Value::bin),
            1 => (4090..4100usize, any::<bool>(), any::<bool>()).prop_map(|(n, lead, trail)| {
                let mut v = vec![b'x'; n];
                if lead { v[0] = b' '; }
                if trail { v[n - 1] = b' '; }
                Value::bin(v)
            }),
        ]
    }

    fn arb_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            6 => arb_binary(),
            3 => any::<i64>().prop_map(Value::Integer),
            1 => (-1000i64..1000).prop_map(Value::Integer),
            2 => any::<f64>().prop_map(Value::Float),
            2 => "[a-z_\"\\\\ \n]{0,10}".prop_map(|s| Value::atom(&s)),
            1 => (2040..2050usize).prop_map(|n| Value::atom(&"\"".repeat(n))),
            1 => (4090..4100usize).prop_map(|n| Value::atom(&"q".repeat(n))),
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            30 => arb_scalar(),
            4 => proptest::collection::vec(arb_scalar(), 0..4).prop_map(Value::list),
            1 => proptest::collection::vec(arb_value_leaf(), 1..3).prop_map(Value::list),
            2 => proptest::collection::btree_map("[a-z]{1,4}|priv", arb_scalar(), 0..3)
                .prop_map(|m| Value::Message(Message::from_pairs(m))),
        ]
    }

    fn arb_value_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            arb_scalar(),
            proptest::collection::vec(arb_scalar(), 0..2).prop_map(Value::list),
            Just(Value::Message(m(vec![("k", Value::text("v"))]))),
        ]
    }

    /// A message with raw (possibly non-normalised) keys.
    fn raw_message(entries: Vec<(String, Value)>) -> Message {
        let mut msg = Message::new();
        for (k, v) in entries {
            msg.insert_key(Key::from(k.as_str()), v);
        }
        msg
    }

    /// `encode_rich` the long way.
    fn encode_rich_slow(msg: &Message) -> Result<HttpMessage, CodecError> {
        to_http(&to_tabm(msg)?)
    }

    /// An `ao-types` dictionary too long for a header makes a multipart body: the fast
    /// paths must not apply.
    #[test]
    fn fast_paths_long_ao_types() {
        for n in [1000, 1360, 1361, 2000, 4090] {
            let msg = Message::new()
                .with("k".repeat(n).as_str(), 1i64)
                .with("x%".repeat(n / 2).as_str(), Value::list(vec![]))
                .with("body", 2i64);
            assert_eq!(message_id(&msg).unwrap(), message_id_slow(&msg).unwrap());
            assert_eq!(encode_rich(&msg).unwrap(), encode_rich_slow(&msg).unwrap());
        }
    }

    /// The typical reply of the HTTP server takes the encoding fast path.
    #[test]
    fn encode_rich_reply() {
        let reply = m(vec![
            ("ao-result", Value::text("body")),
            ("body", Value::Integer(1)),
            ("status", Value::Integer(200)),
        ]);
        let fast = fast_fields(&reply).unwrap();
        let names: Vec<&str> = fast.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["ao-result", "ao-types", "content-digest", "status"]);
        let e = encode_rich(&reply).unwrap();
        assert_eq!(e, encode_rich_slow(&reply).unwrap());
        assert_eq!(h(&e, "ao-types"), "body=\"integer\", status=\"integer\"");
        assert_eq!(h(&e, "status"), "200");
        assert_eq!(body(&e), "1");
        assert_eq!(
            encode_rich_wire(&reply).unwrap(),
            HttpMessage {
                headers: fast.headers.into_iter().collect(),
                body: fast.body
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The fast path of `message_id` computes exactly what the slow path does, and
        /// is never taken where the slow path fails.
        #[test]
        fn fast_message_id_matches_slow(
            entries in proptest::collection::vec((arb_key(), arb_value()), 0..10)
        ) {
            // Raw keys, so that non-normalised ones reach the codec too.
            let msg = raw_message(entries);
            let slow = message_id_slow(&msg);
            match fast_message_id(&msg) {
                Some(fast) => prop_assert_eq!(Ok(fast), slow, "{:?}", msg),
                None => prop_assert_eq!(message_id(&msg), slow),
            }
        }

        /// `encode_rich` (and `encode_rich_wire`) encode exactly as `to_http` (and
        /// `to_http_wire`) of the TABM do, and fail where they fail.
        #[test]
        fn encode_rich_matches_slow(
            entries in proptest::collection::vec((arb_key(), arb_value()), 0..10)
        ) {
            let msg = raw_message(entries);
            let slow = encode_rich_slow(&msg);
            if fast_fields(&msg).is_some() {
                prop_assert!(slow.is_ok(), "{:?}", msg);
            }
            if let Some(f) = fast_fields(&msg) {
                prop_assert!(f.headers.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", f);
            }
            prop_assert_eq!(&encode_rich(&msg), &slow, "{:?}", msg);
            let wire_slow = to_tabm(&msg).and_then(|t| to_http_wire(&t));
            prop_assert_eq!(&encode_rich_wire(&msg), &wire_slow, "{:?}", msg);
        }
    }
}

/// What [`from_http`] keeps aside for the commitment layer: the request's
/// `signature` and `signature-input` fields, if it had them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signatures {
    /// The `signature` dictionary.
    pub signature: Option<Bytes>,
    /// The `signature-input` dictionary.
    pub signature_input: Option<Bytes>,
}

/// The most multipart parts a body may have (each becomes a key).
pub const MAX_PARTS: usize = 1024;

/// HTTP message -> TABM (spec 03 §4.3, steps 1–5 and 7): multipart bodies become
/// (nested) keys, `ao-ids` expands back into keys, `content-digest` and `hashpath*`
/// fields are dropped. Signature fields are returned beside the TABM: rebuilding
/// commitments from them is the commitment layer's work (§5.5).
pub fn from_http(http: &HttpMessage) -> Result<(Message, Signatures), CodecError> {
    let inline_key = http
        .headers
        .get("inline-body-key")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "body".to_owned());
    let mut flat = Message::new();
    for (k, v) in &http.headers {
        if k != "body" && k != "body-keys" {
            flat.insert_key(Key::from(k.as_str()), Value::Binary(v.clone()));
        }
    }
    if let Some(body) = http.body.as_ref().filter(|b| !b.is_empty()) {
        match multipart_boundary(http.headers.get("content-type"))? {
            Some(boundary) => {
                let mut body_keys: Vec<String> = Vec::new();
                for part in split_multipart(body, &boundary)? {
                    let (name, value) = parse_part(part, &inline_key)?;
                    let first = name
                        .split('/')
                        .find(|p| !p.is_empty())
                        .unwrap_or("")
                        .to_owned();
                    if !body_keys.contains(&first) {
                        body_keys.push(first);
                    }
                    flat.insert_key(Key::from(name), value);
                }
                let items: Vec<sf::Member> = body_keys
                    .iter()
                    .map(|k| sf::Member::Item(sf::Item::new(sf::BareItem::string(k.as_bytes()))))
                    .collect();
                flat.insert(
                    "body-keys",
                    Value::Binary(Bytes::from(sf::serialize_list(&items))),
                );
            }
            None => flat.insert_key(Key::from(inline_key.as_str()), Value::Binary(body.clone())),
        }
    }
    let mut tabm = crate::flat::from_flat(&flat)?;
    // Step 4: `ao-ids` back into keys.
    if let Some(Value::Binary(ids)) = tabm.remove("ao-ids") {
        let dict = sf::parse_dictionary(&ids)
            .map_err(|e| CodecError::Other(format!("bad ao-ids: {e}")))?;
        for (k, member) in dict {
            match member {
                sf::Member::Item(item) => match item.bare.as_text() {
                    Some(text) => tabm.insert_key(
                        Key::from(k.as_str()),
                        Value::Binary(Bytes::copy_from_slice(text)),
                    ),
                    None => {
                        return Err(CodecError::Other(format!(
                            "ao-ids member `{k}` is not text"
                        )));
                    }
                },
                sf::Member::InnerList(..) => {
                    return Err(CodecError::Other(format!("ao-ids member `{k}` is a list")));
                }
            }
        }
    }
    // Step 5 and 7.
    let sigs = Signatures {
        signature: tabm
            .remove("signature")
            .and_then(|v| v.as_bytes().map(Bytes::copy_from_slice)),
        signature_input: tabm
            .remove("signature-input")
            .and_then(|v| v.as_bytes().map(Bytes::copy_from_slice)),
    };
    tabm.remove("commitments");
    tabm.remove("content-digest");
    let hashpaths: Vec<Key> = tabm
        .keys()
        .filter(|k| k.starts_with("hashpath"))
        .cloned()
        .collect();
    for k in hashpaths {
        tabm.remove(&k);
    }
    Ok((tabm, sigs))
}

/// The `boundary` parameter of a `content-type` field, if it is multipart.
fn multipart_boundary(content_type: Option<&Bytes>) -> Result<Option<Vec<u8>>, CodecError> {
    let Some(ct) = content_type else {
        return Ok(None);
    };
    let Ok(item) = sf::parse_item(ct) else {
        return Ok(None);
    };
    Ok(item
        .params
        .iter()
        .find(|(k, _)| k == "boundary")
        .and_then(|(_, v)| v.as_text().map(<[u8]>::to_vec)))
}

/// The parts of a multipart body: between `--B CRLF` and `CRLF --B--`, split on `CRLF --B`.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<&'a [u8]>, CodecError> {
    let bad = |why: &str| CodecError::Other(format!("malformed multipart body: {why}"));
    let mut open = b"--".to_vec();
    open.extend_from_slice(boundary);
    let mut delimiter = b"\r\n".to_vec();
    delimiter.extend_from_slice(&open);
    let mut close = delimiter.clone();
    close.extend_from_slice(b"--");
    let start = body
        .strip_prefix(open.as_slice())
        .ok_or_else(|| bad("it does not start with the boundary"))?;
    let start = start
        .strip_prefix(b"\r\n")
        .ok_or_else(|| bad("no line break after the first boundary"))?;
    let end = find(start, &close).ok_or_else(|| bad("no closing boundary"))?;
    let mut parts = Vec::new();
    let mut rest = &start[..end];
    loop {
        if parts.len() >= MAX_PARTS {
            return Err(bad("too many parts"));
        }
        match find(rest, &delimiter) {
            Some(at) => {
                parts.push(&rest[..at]);
                let next = &rest[at + delimiter.len()..];
                rest = next.strip_prefix(b"\r\n").unwrap_or(next);
            }
            None => {
                parts.push(rest);
                break;
            }
        }
    }
    Ok(parts)
}

/// Linear-time substring search (bodies and boundaries come from the network).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// One part: its name (from `content-disposition`) and value (the raw body when the part
/// has no other headers, else the map of its headers plus a non-empty body).
fn parse_part(part: &[u8], inline_key: &str) -> Result<(String, Value), CodecError> {
    let (head, body) = match find(part, b"\r\n\r\n") {
        Some(at) => (&part[..at], &part[at + 4..]),
        None => (part, &b""[..]),
    };
    let mut disposition: Option<&[u8]> = None;
    let mut fields = Message::new();
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(at) = find(line, b": ") else {
            continue;
        };
        let name = std::str::from_utf8(&line[..at])
            .map_err(|_| CodecError::Other("a multipart header name is not UTF-8".into()))?;
        let value = &line[at + 2..];
        if name.eq_ignore_ascii_case("content-disposition") {
            disposition = Some(value);
        } else {
            fields.insert_key(
                Key::from(name),
                Value::Binary(Bytes::copy_from_slice(value)),
            );
        }
    }
    let disposition = disposition
        .ok_or_else(|| CodecError::Other("a multipart part has no content-disposition".into()))?;
    let name = if disposition.trim_ascii() == b"inline" {
        inline_key.to_owned()
    } else {
        disposition_name(disposition).ok_or_else(|| {
            CodecError::Other("a multipart part's content-disposition has no name".into())
        })?
    };
    let value = if fields.is_empty() {
        Value::Binary(Bytes::copy_from_slice(body))
    } else {
        if !body.is_empty() {
            fields.insert("body", Value::Binary(Bytes::copy_from_slice(body)));
        }
        Value::Message(fields)
    };
    Ok((name, value))
}

/// The `name` parameter of `form-data;name="x"`.
fn disposition_name(d: &[u8]) -> Option<String> {
    for param in d.split(|b| *b == b';').skip(1) {
        let param = param.trim_ascii();
        if let Some(v) = param.strip_prefix(b"name=") {
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            return std::str::from_utf8(v).ok().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use crate::structured::{from_tabm, to_tabm};

    fn roundtrip(rich: &Message) -> Message {
        let http = encode_rich(rich).unwrap();
        let (tabm, _) = from_http(&http).unwrap();
        from_tabm(&tabm).unwrap()
    }

    #[test]
    fn spec03_4_3_multipart_decodes_with_extra_keys() {
        let rich = Message::new()
            .with("a", "1")
            .with("nested", Message::new().with("b", "2"));
        let back = roundtrip(&rich);
        assert_eq!(back.get("a"), Some(&Value::text("1")));
        assert_eq!(back.get("nested"), rich.get("nested"));
        assert_eq!(back.get_str("body-keys"), Some("\"nested\""));
        assert!(
            back.get_str("content-type")
                .is_some_and(|c| c.starts_with("multipart/form-data"))
        );
    }

    #[test]
    fn bodies_inline_keys_lists_and_ids_round_trip() {
        let id = "IYkkrqlZNW_J-4T-5eFApZOMRl5P4VjvrcOXWvIqB1Q";
        let cases = vec![
            Message::new().with("a", "1").with("body", "hello"),
            Message::new().with("a", "1").with("data", "DATA"),
            Message::new()
                .with("body", "BODY")
                .with("n", Message::new().with("x", "1")),
            Message::new().with(
                "body",
                Value::list(vec![
                    Value::Message(Message::new().with("k", "v1")),
                    Value::Message(Message::new().with("k", "v2")),
                ]),
            ),
            Message::new().with("big", "x".repeat(5000)).with(
                "n",
                Message::new()
                    .with("x", "1")
                    .with("y", Message::new().with("z", "2")),
            ),
            Message::new().with(id, "v").with("n", 7i64),
        ];
        for rich in cases {
            let back = roundtrip(&rich);
            for (k, v) in rich.iter() {
                assert_eq!(back.get(k), Some(v), "key {k} of {rich:?} -> {back:?}");
            }
            // The unsigned ID survives the trip (the extra keys are not part of it).
            let clean = back
                .clone()
                .without("body-keys")
                .without("content-type")
                .without("inline-body-key");
            assert_eq!(
                message_id(&clean).unwrap(),
                message_id(&rich).unwrap(),
                "{rich:?}"
            );
        }
        let _ = to_tabm;
    }

    #[test]
    fn malformed_multipart_is_an_error() {
        let mut headers = BTreeMap::new();
        headers.insert(
            "content-type".to_owned(),
            Bytes::from_static(b"multipart/form-data; boundary=\"B\""),
        );
        for body in [
            &b"garbage"[..],
            b"--B\r\nno close",
            b"--B\r\nx: y\r\n\r\nv\r\n--B--",
        ] {
            let http = HttpMessage {
                headers: headers.clone(),
                body: Some(Bytes::copy_from_slice(body)),
            };
            assert!(
                from_http(&http).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn from_http_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                  boundary in "[A-Za-z0-9]{1,8}") {
            let mut headers = BTreeMap::new();
            headers.insert("content-type".to_owned(), Bytes::from(format!("multipart/form-data; boundary=\"{boundary}\"")));
            let mut b = format!("--{boundary}\r\n").into_bytes();
            b.extend_from_slice(&body);
            let http = HttpMessage { headers, body: Some(Bytes::from(b)) };
            let _ = from_http(&http);
        }
    }
}
