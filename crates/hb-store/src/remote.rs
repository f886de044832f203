//! Reading messages from another node (spec 05 §6.6, read side), and the constructor
//! of the node's remote sources ([`sources`]).
//!
//! [`RemoteNodeSource`] asks `GET <node>/<id>` for the message in the `httpsig@1.0`
//! encoding (the reference asks `<node>/~cache@1.0/read?target=<id>`; `GET /<id>` is
//! the same read through the node's cache on both implementations), checks every
//! signature the reply carries ([`from_http_verified`]) and keeps only what they
//! commit.
//!
//! # Which identity survives
//!
//! A node may sign its replies with its own key (ours signs every reply that has no
//! signer of its own). That signature says "this node answered this", not "this is the
//! message `<id>`", so the reply is accepted only when the requested ID can be checked
//! against what came back, in this order:
//!
//! 1. **Signed messages** come back with their original signatures (a reply that
//!    already has a signer is not re-signed): the requested ID must be one of the
//!    verified commitment IDs, or the message ID over all of them (spec 01 §6.5). The
//!    message is kept with those commitments, so the local cache can be read by every
//!    commitment ID afterwards.
//! 2. **Unsigned messages** are content-addressed: the requested ID must be the
//!    uncommitted ID (HMAC ID, spec 03 §5.6) of the reply's keys without the node's
//!    `commitments` (and without the `status` the reply adds). The node's own
//!    commitments are dropped: they attest the reply, not the message.
//! 3. Otherwise, for messages committed with `ans104@1.0` (which the `httpsig@1.0` reply
//!    cannot carry verbatim), the data item is asked for (`accept-codec: ans104@1.0`)
//!    and accepted when it is signed, verifies and its ID is the requested one.
//!
//! Anything else (a reply that is not the message asked for) is refused with a warning.
//!
//! # Nodes that read from each other
//!
//! Two nodes that list each other as remote sources would pass a miss back and forth:
//! A misses `<id>` and asks B, B misses and asks A, and so on, each request waiting on
//! the next until the timeouts. Two things bound this:
//!
//! * every request asks with `cache-control: only-if-cached` ([`ONLY_IF_CACHED`]); a
//!   hyperbeam-rs node answers such a request from its own store only (hb-http turns
//!   the directive off `ResolveOpts::remote_loads`), so `GET /<id>` never reaches its
//!   sources and a miss comes straight back (`cache@1.0/read` does not honour it yet);
//! * for nodes that do not honour the directive, each source also counts the fetches
//!   of each ID under way through it: when [`MAX_SAME_ID_IN_FLIGHT`] are, one more is
//!   answered "not found" at once, so a loop unwinds after at most
//!   `2 × MAX_SAME_ID_IN_FLIGHT` requests instead of waiting for timeouts. The price:
//!   more than that many *independent* requests for the same missing ID at the same
//!   moment see a miss from this source for the extra ones (the first fetch still fills
//!   the cache; a retry finds it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hb_codec::ans104::{self, DataItem};
use hb_codec::httpsig_commit::{ALG_HMAC, ReceivedError, from_http_verified};
use hb_core::httpsig::{self, HttpMessage};
use hb_core::id::Id;
use hb_core::sf;
use hb_core::structured::{from_tabm, to_tabm};
use hb_core::value::{Message, Value};

use parking_lot::Mutex;

use crate::cache::MessageSource;
use crate::gateway::{CONNECT_TIMEOUT, FETCH_TIMEOUT, GatewaySource};
use crate::store::StoreError;

/// The `cache-control` every read asks with (spec 01 §10): answer from the cache, do not
/// compute. See "Nodes that read from each other" in the module docs for what it does
/// and does not guard against.
pub const ONLY_IF_CACHED: &str = "only-if-cached";

/// How many fetches of one ID may be under way through one source at once; one more is
/// answered "not found" at once (the loop guard, see the module docs).
pub const MAX_SAME_ID_IN_FLIGHT: usize = 2;

/// Largest reply read by default.
pub const DEFAULT_MAX_REPLY: u64 = 64 * 1024 * 1024;

/// Another node as a [`MessageSource`]: read-only, remote.
#[derive(Debug)]
pub struct RemoteNodeSource {
    name: String,
    base: String,
    agent: ureq::Agent,
    max_reply: u64,
    fetch_timeout: Duration,
    /// How many fetches of each ID through this source are under way (the loop guard).
    in_flight: Mutex<HashMap<String, usize>>,
}

impl RemoteNodeSource {
    /// The node at `base` (`http://` or `https://`; a trailing `/` is ignored).
    ///
    /// # Errors
    /// `base` is not an `http://` or `https://` URL.
    pub fn new(base: &str) -> Result<Self, StoreError> {
        Self::with_timeouts(base, CONNECT_TIMEOUT, FETCH_TIMEOUT)
    }

    /// [`Self::new`] with other timeouts: `connect` for each connection, `total` for all
    /// the requests of one fetch.
    ///
    /// # Errors
    /// `base` is not an `http://` or `https://` URL.
    pub fn with_timeouts(
        base: &str,
        connect: Duration,
        total: Duration,
    ) -> Result<Self, StoreError> {
        let (base, agent) = crate::http::agent(base, "node", connect, total, 0)?;
        let name = format!("node {base}");
        Ok(RemoteNodeSource {
            name,
            base,
            agent,
            max_reply: DEFAULT_MAX_REPLY,
            fetch_timeout: total,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Replies larger than `bytes` are refused.
    #[must_use]
    pub fn with_max_reply(mut self, bytes: u64) -> Self {
        self.max_reply = bytes;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn remote(&self, reason: String) -> StoreError {
        StoreError::Remote {
            store: self.name.clone(),
            reason,
        }
    }

    /// `GET <node>/<id>` asking for `codec`: the status, the header fields (lower-case
    /// names, repeated fields joined with `, `) and the body.
    fn get(&self, id: &str, codec: &str, deadline: Instant) -> Result<Reply, StoreError> {
        let url = format!("{}/{id}", self.base);
        let left =
            crate::http::time_left(deadline, &format!("GET {url}")).map_err(|e| self.remote(e))?;
        let mut resp = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(left))
            .build()
            .header("accept-codec", codec)
            .header("cache-control", ONLY_IF_CACHED)
            .call()
            .map_err(|e| self.remote(format!("GET {url}: {e}")))?;
        let status = resp.status().as_u16();
        let headers = crate::http::response_headers(&resp);
        let body = crate::http::read_capped(&mut resp, self.max_reply, &format!("GET {url}"))
            .map_err(|e| self.remote(e.text()))?;
        Ok(Reply {
            url,
            status,
            http: HttpMessage {
                headers,
                body: (!body.is_empty()).then(|| Bytes::from(body)),
            },
        })
    }

    /// The `httpsig@1.0` reply as the message `id`, if it is that message.
    fn decode_httpsig(&self, id: &str, reply: &Reply) -> Result<Option<Message>, StoreError> {
        let status = reply.status.to_string();
        let path = format!("/{id}");
        let derived = |name: &str| -> Option<Bytes> {
            match name {
                "status" => Some(Bytes::from(status.clone())),
                "method" => Some(Bytes::from_static(b"GET")),
                "path" => Some(Bytes::from(path.clone())),
                _ => None,
            }
        };
        // A reply's `status` is transport (spec 05 §2.5): a node that adds it to a
        // message signed by someone else (ours does, and its `ao-types` then names it)
        // changes a signed field; the message as signed is the reply without it.
        let verified = from_http_verified(&reply.http, &derived).or_else(|e| {
            match (&e, without_added_status(&reply.http)) {
                (ReceivedError::BadSignature(_), Some(http)) => {
                    from_http_verified(&http, &derived).map_err(|_| e)
                }
                _ => Err(e),
            }
        });
        let tabm =
            verified.map_err(|e| self.remote(format!("GET {}: the reply {e}", reply.url)))?;
        let msg = from_tabm(&tabm).map_err(|e| {
            self.remote(format!(
                "GET {}: the reply cannot be decoded: {e}",
                reply.url
            ))
        })?;
        Ok(identify(id, msg))
    }

    /// The `ans104@1.0` reply as the message `id`, if it is that message's data item.
    fn decode_ans104(&self, id: &str, reply: &Reply) -> Result<Option<Message>, StoreError> {
        let body = reply.http.body.clone().unwrap_or_default();
        let mut item = DataItem::parse_bytes(&body).map_err(|e| {
            self.remote(format!(
                "GET {}: the reply is not a data item: {e}",
                reply.url
            ))
        })?;
        if !item.is_signed() || item.id().to_human() != id {
            return Ok(None);
        }
        // As for httpsig: a `status` tag the replying node added is not the signer's.
        if !item.verify()
            && let Some(stripped) = without_status_tag(&item)
            && stripped.verify()
        {
            item = stripped;
        }
        ans104::verify_tree(&item)
            .and_then(|()| ans104::item_to_message(&item))
            .map(Some)
            .map_err(|e| self.remote(format!("GET {}: the data item {id}: {e}", reply.url)))
    }
}

/// One fetch of an ID under way; leaving it (drop) counts it out.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<String, usize>>,
    id: String,
}

impl<'a> InFlight<'a> {
    /// Counts a fetch of `id` in, unless [`MAX_SAME_ID_IN_FLIGHT`] are under way.
    fn enter(map: &'a Mutex<HashMap<String, usize>>, id: &str) -> Option<Self> {
        let mut m = map.lock();
        let n = m.entry(id.to_owned()).or_insert(0);
        if *n >= MAX_SAME_ID_IN_FLIGHT {
            return None;
        }
        *n += 1;
        Some(InFlight {
            map,
            id: id.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.map.lock();
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.id);
            }
        }
    }
}

/// One reply.
#[derive(Debug)]
struct Reply {
    url: String,
    status: u16,
    http: HttpMessage,
}

/// The message `id` among the readings of a verified reply (see the module docs).
fn identify(id: &str, msg: Message) -> Option<Message> {
    let commitment_ids: Vec<String> = msg
        .get("commitments")
        .and_then(Value::as_message)
        .map(|c| c.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    let signed_by_others = msg
        .get("commitments")
        .and_then(Value::as_message)
        .is_some_and(|c| {
            c.iter().any(|(_, v)| {
                v.as_message()
                    .is_some_and(|c| c.get_str("alg") != Some(ALG_HMAC))
            })
        });
    if signed_by_others
        && (commitment_ids.iter().any(|c| c == id)
            || httpsig::message_id(&msg).is_ok_and(|m| m.to_human() == id))
    {
        return Some(msg);
    }
    let bare = msg.without("commitments");
    let stripped = bare.clone().without("status");
    [bare, stripped]
        .into_iter()
        .find(|m| uncommitted_id(m).is_some_and(|u| u.to_human() == id))
}

/// The reply without a `status` field that no signature covers, and without `status`
/// in its `ao-types` (the reference adds one to a message signed by someone else);
/// `None` when there is no such field.
pub fn without_added_status(http: &HttpMessage) -> Option<HttpMessage> {
    let covered = http.headers.get("signature-input").is_some_and(|si| {
        let si = String::from_utf8_lossy(si);
        si.contains("\"status\"") || si.contains("\"@status\"")
    });
    if covered || !http.headers.contains_key("status") {
        return None;
    }
    let mut out = http.clone();
    out.headers.remove("status");
    if let Some(types) = out.headers.remove("ao-types") {
        let mut dict = sf::parse_dictionary(&types).ok()?;
        dict.retain(|(k, _)| k != "status");
        if !dict.is_empty() {
            out.headers.insert(
                "ao-types".into(),
                Bytes::from(sf::serialize_dictionary(&dict)),
            );
        }
    }
    Some(out)
}

/// The item without its `status` tag and without `status` in its `ao-types` tag;
/// `None` when it has no `status` tag.
fn without_status_tag(item: &DataItem) -> Option<DataItem> {
    item.tag("status")?;
    let mut out = item.clone();
    out.tags.retain(|(n, _)| n.as_slice() != b"status");
    let mut keep = Vec::with_capacity(out.tags.len());
    for (n, v) in std::mem::take(&mut out.tags) {
        if n.as_slice() == b"ao-types" {
            let mut dict = sf::parse_dictionary(&v).ok()?;
            dict.retain(|(k, _)| k != "status");
            if !dict.is_empty() {
                keep.push((n, sf::serialize_dictionary(&dict)));
            }
        } else {
            keep.push((n, v));
        }
    }
    out.tags = keep;
    Some(out)
}

/// The uncommitted ID of a message without commitments (what the message cache files
/// it under).
fn uncommitted_id(msg: &Message) -> Option<Id> {
    let tabm = to_tabm(msg).ok()?;
    httpsig::hmac_id(&tabm.without("commitments")).ok()
}

impl MessageSource for RemoteNodeSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, id: &str) -> Result<Option<Message>, StoreError> {
        if id.len() != 43 || Id::from_human(id.as_bytes()).is_none() {
            return Ok(None);
        }
        let Some(_guard) = InFlight::enter(&self.in_flight, id) else {
            tracing::debug!(node = %self.base, %id,
                "this ID is already being fetched from the node {MAX_SAME_ID_IN_FLIGHT} times (a loop of nodes reading from each other?); answered as not found");
            return Ok(None);
        };
        let deadline = Instant::now()
            .checked_add(self.fetch_timeout)
            .unwrap_or_else(Instant::now);
        let reply = self.get(id, "httpsig@1.0", deadline)?;
        match reply.status {
            200 => {}
            404 => return Ok(None),
            s => return Err(self.remote(format!("GET {}: status {s}", reply.url))),
        }
        if let Some(msg) = self.decode_httpsig(id, &reply)? {
            return Ok(Some(msg));
        }
        let item = self.get(id, "ans104@1.0", deadline)?;
        if item.status == 200
            && let Some(msg) = self.decode_ans104(id, &item)?
        {
            return Ok(Some(msg));
        }
        tracing::warn!(node = %self.base, %id,
            "the node's reply is not the message asked for (no commitment or content ID matches); refused");
        Ok(None)
    }
}

/// The node's remote message sources, in the order they are asked: the Arweave
/// `gateway` (spec 05 §6.5; `None`, an empty text or `none` for none), then each node
/// of `nodes` (§6.6). A URL that is not `http://`/`https://` is left out with a warning.
/// The gateway serves items that do not verify on its word (the default of
/// `ans104_trust_gql`); see [`sources_with`].
pub fn sources(gateway: Option<&str>, nodes: &[String]) -> Vec<Arc<dyn MessageSource>> {
    sources_with(gateway, nodes, crate::gateway::DEFAULT_TRUST_GQL)
}

/// [`sources`], with the node option `ans104_trust_gql`: whether the gateway serves an
/// item that does not verify, its tag names marked as `trusted-keys` on its commitment
/// (`true`), or refuses it (`false`); see [`GatewaySource::with_trust_gql`].
pub fn sources_with(
    gateway: Option<&str>,
    nodes: &[String],
    trust_gql: bool,
) -> Vec<Arc<dyn MessageSource>> {
    let mut out: Vec<Arc<dyn MessageSource>> = Vec::new();
    if let Some(g) = gateway.map(str::trim)
        && !g.is_empty()
        && !g.eq_ignore_ascii_case("none")
    {
        match GatewaySource::new(g).map(|s| s.with_trust_gql(trust_gql)) {
            Ok(s) => out.push(Arc::new(s)),
            Err(e) => tracing::warn!(error = %e, "gateway left out"),
        }
    }
    for n in nodes {
        match RemoteNodeSource::new(n) {
            Ok(s) => out.push(Arc::new(s)),
            Err(e) => tracing::warn!(error = %e, "remote node left out"),
        }
    }
    out
}
