//! Reading ANS-104 data items from an Arweave gateway (spec 05 §6.5).
//!
//! [`GatewaySource`] asks `<gateway>/graphql` for the item's header fields (the
//! reference's `item_spec`: `id anchor signature recipient owner{key} fee{winston}
//! quantity{winston} tags{name value} data{size}`), fetches its data from
//! `<gateway>/raw/<id>` — or `<gateway>/<id>` when `/raw` is not served (arlocal 1.1.66
//! has no `/raw`) — rebuilds the data item, **verifies** it and converts it to a message
//! with [`ans104::item_to_message`].
//!
//! # Items that do not verify (`ans104_trust_gql`)
//!
//! Some gateways leave fields out of their GraphQL answers (arlocal drops the `anchor`
//! of bundled items), so an authentic item may not verify once rebuilt. With
//! [`GatewaySource::with_trust_gql`] on (the default, like the node option
//! `ans104_trust_gql`), such an item is served anyway, on the gateway's word: its one
//! `ans104@1.0` commitment gets [`TRUSTED_KEYS`] — the normalised (lower-cased) names of
//! its tags as a numbered map `{"1": name, "2": name, …}`, in tag order — which
//! `ans104@1.0`'s `committed` then answers as the committed keys, as in the reference.
//! The commitment itself still does not verify, and a warning is logged. With the
//! option off, the item is refused (not found, with a warning).
//!
//! Differences from the reference (`hb_store_gateway`, `hb_gateway_client`):
//! * With `ans104_trust_gql: false` an item that does not verify is refused; the
//!   reference serves it unmarked.
//! * Even with `ans104_trust_gql: true`, only the item's own signature is taken on
//!   trust. An item is refused whatever the option when its ID is not the SHA-256 of its
//!   signature (it is not the item asked for), when its tags break the ANS-104 limits,
//!   or when an item bundled in its data does not verify (the data is served as stored,
//!   not described by GraphQL). The anchor is tried both as base64url and as its raw 32
//!   bytes before the item counts as unverifiable.
//! * Only RSA (signature type 1, 512-byte signature) items are supported, as in
//!   `hb_codec::ans104`; ECDSA (65-byte) items are refused.
//! * Arweave L1 transactions (not data items) have a different signature payload and so
//!   do not verify as data items: without `ans104_trust_gql` they are refused; with it,
//!   one whose fields fit a data item (a 32-byte anchor or none) is served as an
//!   unverified item, as the reference serves it.
//! * The `subindex` tag filters are sent as escaped GraphQL string literals.
//! * Every request has a connect timeout and a total deadline per fetch, response
//!   bodies are capped, and after a transport failure (unreachable, timed out) the
//!   gateway is skipped for a short back-off so that a dead gateway does not slow every
//!   local miss.

use std::time::{Duration, Instant};

use hb_codec::ans104::{self, ALG_RSA, DEVICE_NAME, DataItem, TRUSTED_KEYS, Tag};
use hb_core::id::{Id, b64url_decode};
use hb_core::value::{Message, Value, list_to_message, normalize_key};
use parking_lot::Mutex;
use serde_json::Value as Json;

use crate::cache::MessageSource;
use crate::store::StoreError;

/// The public gateway the reference uses by default.
pub const DEFAULT_GATEWAY: &str = "https://arweave.net";
/// Connect timeout of every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total time one [`MessageSource::fetch`] may take (all its requests together).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an unreachable gateway is skipped.
pub const BACKOFF: Duration = Duration::from_secs(10);
/// Largest GraphQL response read (128 tags of 1 KiB + 3 KiB, base64url, fit easily).
const GRAPHQL_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest item data read by default.
pub const DEFAULT_MAX_DATA: u64 = 64 * 1024 * 1024;
/// Whether items that do not verify are served on the gateway's word by default (the
/// node option `ans104_trust_gql`, default `true` as in the reference).
pub const DEFAULT_TRUST_GQL: bool = true;
/// Redirects followed (gateways may redirect `/<id>` to a sandbox host).
const MAX_REDIRECTS: u32 = 5;

/// The header fields of a transaction needed to rebuild its data item (the reference's
/// `hb_gateway_client:item_spec/0`).
const ITEM_SPEC: &str = "node { id anchor signature recipient owner { key } fee { winston } \
                         quantity { winston } tags { name value } data { size } }";

/// An Arweave gateway as a [`MessageSource`]: read-only, remote.
#[derive(Debug)]
pub struct GatewaySource {
    name: String,
    base: String,
    agent: ureq::Agent,
    subindex: Vec<(String, String)>,
    max_data: u64,
    trust_gql: bool,
    fetch_timeout: Duration,
    backoff: Duration,
    down_until: Mutex<Option<Instant>>,
}

impl GatewaySource {
    /// A gateway at `base` (`http://` or `https://`, without a trailing path; a trailing
    /// `/` is ignored).
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
        let (base, agent) = crate::http::agent(base, "gateway", connect, total, MAX_REDIRECTS)?;
        let name = format!("gateway {base}");
        Ok(GatewaySource {
            name,
            base,
            agent,
            subindex: Vec::new(),
            max_data: DEFAULT_MAX_DATA,
            trust_gql: DEFAULT_TRUST_GQL,
            fetch_timeout: total,
            backoff: BACKOFF,
            down_until: Mutex::new(None),
        })
    }

    /// Only items carrying every one of these tags (`name`, `value`) are found (spec 05
    /// §6.5 `subindex`).
    #[must_use]
    pub fn with_subindex(mut self, tags: Vec<(String, String)>) -> Self {
        self.subindex = tags;
        self
    }

    /// Items whose data is larger than `bytes` are not fetched.
    #[must_use]
    pub fn with_max_data(mut self, bytes: u64) -> Self {
        self.max_data = bytes;
        self
    }

    /// Whether an item that does not verify is served on the gateway's word, its tag
    /// names marked as [`TRUSTED_KEYS`] on its commitment (`true`, the default, as the
    /// node option `ans104_trust_gql`), or refused (`false`). See the module docs.
    #[must_use]
    pub fn with_trust_gql(mut self, trust: bool) -> Self {
        self.trust_gql = trust;
        self
    }

    /// Whether items that do not verify are served (see [`Self::with_trust_gql`]).
    pub fn trust_gql(&self) -> bool {
        self.trust_gql
    }

    /// How long the gateway is skipped after a transport failure (zero: never).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The GraphQL request body that looks `id` up.
    fn graphql_body(&self, id: &str) -> String {
        let tags = if self.subindex.is_empty() {
            String::new()
        } else {
            let filters: Vec<String> = self
                .subindex
                .iter()
                .map(|(n, v)| format!("{{ name: {}, values: [{}] }}", gql_string(n), gql_string(v)))
                .collect();
            format!(", tags: [{}]", filters.join(", "))
        };
        let query = format!(
            "query($transactionIds: [ID!]!) {{ transactions(ids: $transactionIds{tags}, first: 1) \
             {{ edges {{ {ITEM_SPEC} }} }} }}"
        );
        serde_json::json!({ "query": query, "variables": { "transactionIds": [id] } }).to_string()
    }

    fn remote(&self, reason: String) -> StoreError {
        StoreError::Remote {
            store: self.name.clone(),
            reason,
        }
    }

    /// Records a transport failure (starts the back-off) and makes its error.
    fn transport(&self, what: &str, url: &str, e: &ureq::Error) -> StoreError {
        self.down(format!("{what} {url}: {e}"))
    }

    /// Starts the back-off and makes the error `reason`.
    fn down(&self, reason: String) -> StoreError {
        if !self.backoff.is_zero() {
            *self.down_until.lock() = Instant::now().checked_add(self.backoff);
        }
        self.remote(reason)
    }

    /// One request, bounded by `deadline`: (status, body capped at `limit`).
    fn request(
        &self,
        url: &str,
        body: Option<&str>,
        limit: u64,
        deadline: Instant,
    ) -> Result<(u16, Vec<u8>), StoreError> {
        let what = if body.is_some() { "POST" } else { "GET" };
        let left = crate::http::time_left(deadline, &format!("{what} {url}"))
            .map_err(|e| self.remote(e))?;
        let sent = match body {
            Some(json) => self
                .agent
                .post(url)
                .config()
                .timeout_global(Some(left))
                .build()
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .send(json),
            None => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(left))
                .build()
                .call(),
        };
        let mut resp = sent.map_err(|e| self.transport(what, url, &e))?;
        let status = resp.status().as_u16();
        let bytes =
            crate::http::read_capped(&mut resp, limit, &format!("{what} {url}")).map_err(|e| {
                match e {
                    crate::http::BodyError::Transport(t, _) => self.down(t),
                    too_large => self.remote(too_large.text()),
                }
            })?;
        Ok((status, bytes))
    }

    /// The GraphQL node of `id`, or `None` when the gateway does not know it.
    fn query(&self, id: &str, deadline: Instant) -> Result<Option<Json>, StoreError> {
        self.query_first(&self.graphql_body(id), deadline)
    }

    /// The first transaction node a GraphQL query (`body`, the JSON request) answers,
    /// or `None` when it answers none.
    fn query_first(&self, query: &str, deadline: Instant) -> Result<Option<Json>, StoreError> {
        let url = format!("{}/graphql", self.base);
        let (status, body) = self.request(&url, Some(query), GRAPHQL_LIMIT, deadline)?;
        if status != 200 {
            return Err(self.remote(format!("POST {url}: status {status}: {}", snippet(&body))));
        }
        let json: Json = serde_json::from_slice(&body)
            .map_err(|e| self.remote(format!("POST {url}: the answer is not JSON: {e}")))?;
        let edges = json
            .pointer("/data/transactions/edges")
            .and_then(Json::as_array);
        let Some(edges) = edges else {
            let errors = json.get("errors").map(Json::to_string).unwrap_or_default();
            return Err(self.remote(format!(
                "POST {url}: the answer has no data.transactions.edges {}",
                snippet(errors.as_bytes())
            )));
        };
        Ok(edges.first().and_then(|e| e.get("node")).cloned())
    }

    /// The item's data: `/raw/<id>`, falling back to `/<id>` when `/raw` fails with a
    /// status (not when the gateway cannot be reached).
    fn data(&self, id: &str, deadline: Instant) -> Result<Vec<u8>, StoreError> {
        let raw = format!("{}/raw/{id}", self.base);
        let (status, body) = self.request(&raw, None, self.max_data, deadline)?;
        if status == 200 {
            return Ok(body);
        }
        let plain = format!("{}/{id}", self.base);
        let (status2, body2) = self.request(&plain, None, self.max_data, deadline)?;
        if status2 == 200 {
            return Ok(body2);
        }
        Err(self.remote(format!(
            "the data of {id} is not served: GET {raw}: status {status}; GET {plain}: status {status2}"
        )))
    }

    /// The gateway's current block (`GET /block/current`): its timestamp (seconds),
    /// height and hash (`indep_hash`, as the gateway writes it). What a scheduler in
    /// production stamps its assignments with (spec 04 §2.4).
    ///
    /// # Errors
    /// The gateway is unreachable or answers something else.
    pub fn current_block(&self) -> Result<(i64, i64, String), StoreError> {
        let url = format!("{}/block/current", self.base);
        let deadline = Instant::now() + self.fetch_timeout;
        let (status, body) = self.request(&url, None, GRAPHQL_LIMIT, deadline)?;
        if status != 200 {
            return Err(self.remote(format!("GET {url}: status {status}: {}", snippet(&body))));
        }
        let json: Json = serde_json::from_slice(&body)
            .map_err(|e| self.remote(format!("GET {url}: the answer is not JSON: {e}")))?;
        let int = |k: &str| {
            json.get(k).and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
        };
        match (
            int("timestamp"),
            int("height"),
            json.get("indep_hash").and_then(Json::as_str),
        ) {
            (Some(ts), Some(height), Some(hash)) => Ok((ts, height, hash.to_owned())),
            _ => Err(self.remote(format!(
                "GET {url}: no timestamp, height and indep_hash in {}",
                snippet(&body)
            ))),
        }
    }
}

impl GatewaySource {
    /// The newest `Type: Scheduler-Location` record owned by `address` (spec 04 §2.11,
    /// the reference's `hb_gateway_client:scheduler_location`): the first transaction
    /// the gateway's GraphQL lists for that owner and tag (gateways list the newest
    /// first). Unlike [`MessageSource::fetch`], the item must verify whatever
    /// [`Self::with_trust_gql`] says: a record sends this node's requests somewhere, so
    /// it is never taken on the gateway's word. `None` when the gateway knows none, or
    /// only one that does not verify or is not owned by `address`.
    ///
    /// # Errors
    /// The gateway is unreachable (or skipped after a recent failure) or answers
    /// something else.
    pub fn scheduler_location(&self, address: &str) -> Result<Option<Message>, StoreError> {
        if address.len() != 43 || Id::from_human(address.as_bytes()).is_none() {
            return Ok(None);
        }
        if let Some(until) = *self.down_until.lock()
            && Instant::now() < until
        {
            return Err(self.remote(format!(
                "skipped for the location of {address}: unreachable a moment ago"
            )));
        }
        let deadline = Instant::now()
            .checked_add(self.fetch_timeout)
            .unwrap_or_else(Instant::now);
        let query = format!(
            "query($SchedulerAddrs: [String!]!) {{ transactions(owners: $SchedulerAddrs, \
             tags: [{{ name: \"Type\", values: [\"Scheduler-Location\"] }}], first: 1) \
             {{ edges {{ {ITEM_SPEC} }} }} }}"
        );
        let body =
            serde_json::json!({ "query": query, "variables": { "SchedulerAddrs": [address] } })
                .to_string();
        let Some(node) = self.query_first(&body, deadline)? else {
            return Ok(None);
        };
        let refused = |reason: &str| {
            tracing::warn!(gateway = %self.base, %address, %reason,
                "scheduler-location record refused");
            Ok(None)
        };
        let header = match Header::parse(&node) {
            Ok(h) => h,
            Err(reason) => return refused(&reason),
        };
        if header.data_size.is_some_and(|n| n > GRAPHQL_LIMIT) {
            return refused("its data is too large for a location record");
        }
        let data = if header.data_size == Some(0) {
            Vec::new()
        } else {
            let id = header.id.clone();
            self.data(&id, deadline)?
        };
        let item = match header.into_item(data) {
            Ok(Rebuilt::Verified(item)) => item,
            Ok(Rebuilt::Unverified(_, reason)) | Err(reason) => return refused(&reason),
        };
        if hb_codec::wallet::address_of(&item.owner) != address {
            return refused("it is not owned by the address asked for");
        }
        match ans104::item_to_message(&item) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => refused(&e.to_string()),
        }
    }
}

impl MessageSource for GatewaySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch(&self, id: &str) -> Result<Option<Message>, StoreError> {
        if id.len() != 43 || Id::from_human(id.as_bytes()).is_none() {
            return Ok(None);
        }
        if let Some(until) = *self.down_until.lock()
            && Instant::now() < until
        {
            return Err(self.remote(format!(
                "skipped for {id}: unreachable a moment ago (retrying after a {} s back-off)",
                self.backoff.as_secs()
            )));
        }
        let deadline = Instant::now()
            .checked_add(self.fetch_timeout)
            .unwrap_or_else(Instant::now);
        let Some(node) = self.query(id, deadline)? else {
            return Ok(None);
        };
        let header = match Header::parse(&node) {
            Ok(h) => h,
            Err(reason) => {
                tracing::warn!(gateway = %self.base, %id, %reason, "gateway item refused");
                return Ok(None);
            }
        };
        if header.id != id {
            return Err(self.remote(format!(
                "POST {}/graphql asked for {id} and answered with {}",
                self.base, header.id
            )));
        }
        if header.data_size.is_some_and(|n| n > self.max_data) {
            tracing::warn!(gateway = %self.base, %id, size = ?header.data_size, max = self.max_data,
                "gateway item refused: its data is too large");
            return Ok(None);
        }
        let data = if header.data_size == Some(0) {
            Vec::new()
        } else {
            self.data(id, deadline)?
        };
        if header.data_size.is_some_and(|n| n != data.len() as u64) {
            tracing::warn!(gateway = %self.base, %id, size = ?header.data_size, got = data.len(),
                "the gateway's data size differs from what it served");
        }
        let (item, unverified) = match header.into_item(data) {
            Ok(Rebuilt::Verified(item)) => (item, None),
            Ok(Rebuilt::Unverified(item, reason)) if self.trust_gql => (item, Some(reason)),
            Ok(Rebuilt::Unverified(_, reason)) => {
                tracing::warn!(gateway = %self.base, %id, %reason,
                    "gateway item refused: it does not verify (ans104_trust_gql is off)");
                return Ok(None);
            }
            Err(reason) => {
                tracing::warn!(gateway = %self.base, %id, %reason, "gateway item refused");
                return Ok(None);
            }
        };
        let msg = match ans104::item_to_message(&item) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(gateway = %self.base, %id, error = %e,
                    "gateway item refused: it cannot be converted to a message");
                return Ok(None);
            }
        };
        let Some(reason) = unverified else {
            return Ok(Some(msg));
        };
        match with_trusted_keys(msg, &item) {
            Ok(msg) => {
                tracing::warn!(gateway = %self.base, %id, %reason,
                    "gateway item does not verify; served on the gateway's word \
                     (ans104_trust_gql): its tag names are its commitment's trusted-keys");
                Ok(Some(msg))
            }
            Err(why) => {
                tracing::warn!(gateway = %self.base, %id, %reason, %why,
                    "gateway item refused: it does not verify and cannot be marked as trusted");
                Ok(None)
            }
        }
    }
}

/// What rebuilding an item from a gateway's answer gave.
#[derive(Debug)]
enum Rebuilt {
    /// The item verifies, and so do the items bundled in it.
    Verified(DataItem),
    /// The item's own signature does not verify under any reading of the anchor (the
    /// reason); everything else checks out.
    Unverified(DataItem, String),
}

/// `msg`, converted from `item` (which does not verify), with [`TRUSTED_KEYS`] — the
/// normalised names of the item's tags, a numbered map in tag order, as the reference
/// builds them — added to its one commitment, the item's `rsa-pss` one.
fn with_trusted_keys(mut msg: Message, item: &DataItem) -> Result<Message, String> {
    let id = item.id().to_human();
    let commitments = match msg.get("commitments") {
        Some(Value::Message(c)) => c,
        _ => return Err("the message has no commitment".into()),
    };
    let commitment = match commitments.get(&id) {
        Some(Value::Message(c))
            if commitments.len() == 1
                && c.get_str("commitment-device") == Some(DEVICE_NAME)
                && c.get_str("alg") == Some(ALG_RSA) =>
        {
            c
        }
        _ => {
            return Err(format!(
                "the message does not have exactly one {DEVICE_NAME} {ALG_RSA} commitment {id}"
            ));
        }
    };
    let names = item
        .tags
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            std::str::from_utf8(name)
                .map(|n| Value::text(&normalize_key(n)))
                .map_err(|_| format!("tag {}'s name is not UTF-8", i + 1))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    let commitment = commitment
        .clone()
        .with(TRUSTED_KEYS, Value::Message(list_to_message(&names)));
    msg.insert(
        "commitments",
        Value::Message(Message::new().with(&id, commitment)),
    );
    Ok(msg)
}

/// A data item's header fields as GraphQL gives them.
#[derive(Debug)]
struct Header {
    id: String,
    signature: [u8; ans104::item::SIGNATURE_LEN],
    owner: [u8; ans104::item::OWNER_LEN],
    target: Option<[u8; 32]>,
    /// The anchor readings to try: base64url-decoded, then raw bytes.
    anchors: Vec<Option<[u8; 32]>>,
    tags: Vec<Tag>,
    data_size: Option<u64>,
}

impl Header {
    fn parse(node: &Json) -> Result<Header, String> {
        let text = |key: &str| node.get(key).and_then(Json::as_str).unwrap_or("");
        let id = text("id").to_owned();
        let signature =
            b64url_decode(text("signature").as_bytes()).ok_or("the signature is not base64url")?;
        let signature: [u8; ans104::item::SIGNATURE_LEN] =
            signature.as_slice().try_into().map_err(|_| {
                format!(
                    "a {}-byte signature: only RSA (type 1, 512 bytes) items are supported",
                    signature.len()
                )
            })?;
        let owner = node
            .pointer("/owner/key")
            .and_then(Json::as_str)
            .and_then(|k| b64url_decode(k.as_bytes()))
            .ok_or("owner.key is missing or not base64url")?;
        let owner: [u8; ans104::item::OWNER_LEN] = owner
            .as_slice()
            .try_into()
            .map_err(|_| format!("owner.key is {} bytes, not 512", owner.len()))?;
        let target = match text("recipient") {
            "" => None,
            r => Some(
                b64url_decode(r.as_bytes())
                    .and_then(|t| <[u8; 32]>::try_from(t.as_slice()).ok())
                    .ok_or("the recipient is not a 32-byte base64url ID")?,
            ),
        };
        let anchors = match text("anchor") {
            "" => vec![None],
            a => {
                let mut v = Vec::new();
                if let Some(d) = b64url_decode(a.as_bytes())
                    .and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok())
                {
                    v.push(Some(d));
                }
                if let Ok(raw) = <[u8; 32]>::try_from(a.as_bytes()) {
                    v.push(Some(raw));
                }
                if v.is_empty() {
                    return Err(format!(
                        "the anchor `{}` is not 32 bytes",
                        snippet(a.as_bytes())
                    ));
                }
                v
            }
        };
        let mut tags = Vec::new();
        if let Some(list) = node.get("tags").and_then(Json::as_array) {
            if list.len() > ans104::item::MAX_TAGS {
                return Err(format!(
                    "{} tags; at most {} are allowed",
                    list.len(),
                    ans104::item::MAX_TAGS
                ));
            }
            for t in list {
                let (Some(n), Some(v)) = (
                    t.get("name").and_then(Json::as_str),
                    t.get("value").and_then(Json::as_str),
                ) else {
                    return Err("a tag without a text name and value".into());
                };
                tags.push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
            }
        }
        let data_size = match node.pointer("/data/size") {
            Some(Json::String(s)) => s.parse().ok(),
            Some(Json::Number(n)) => n.as_u64(),
            _ => None,
        };
        Ok(Header {
            id,
            signature,
            owner,
            target,
            anchors,
            tags,
            data_size,
        })
    }

    /// The data item with `data`: [`Rebuilt::Verified`] when its signature verifies
    /// under one of the readings of the anchor, else [`Rebuilt::Unverified`] with the
    /// first reading. Refused (`Err`) whatever the trust when its ID is not the SHA-256 of
    /// its signature, its tags break the ANS-104 limits or an item bundled in it does
    /// not verify.
    fn into_item(self, data: Vec<u8>) -> Result<Rebuilt, String> {
        let mut item = DataItem {
            signature: self.signature,
            owner: self.owner,
            target: self.target,
            anchor: None,
            tags: self.tags,
            data: data.into(),
        };
        if item.id().to_human() != self.id {
            return Err("the ID is not the SHA-256 of the signature".into());
        }
        ans104::item::check_tag_limits(&item.tags).map_err(|e| e.to_string())?;
        let mut last = String::from("no anchor reading");
        for &anchor in &self.anchors {
            item.anchor = anchor;
            match item.check() {
                Ok(()) => {
                    return ans104::verify_tree(&item)
                        .map(|()| Rebuilt::Verified(item))
                        .map_err(|e| e.to_string());
                }
                Err(e) => last = e.to_string(),
            }
        }
        item.anchor = self.anchors.first().copied().flatten();
        verify_bundled(&item)?;
        Ok(Rebuilt::Unverified(item, last))
    }
}

/// Verifies the items bundled in `item` (not `item` itself).
fn verify_bundled(item: &DataItem) -> Result<(), String> {
    let children = ans104::bundle::unbundle(item).map_err(|e| e.to_string())?;
    for (key, child) in children.into_iter().flatten() {
        if child.tag("ao-type") == Some(b"binary") {
            continue;
        }
        ans104::verify_tree(&child)
            .map_err(|e| format!("the item at `{key}` inside its bundle: {e}"))?;
    }
    Ok(())
}

/// A GraphQL string literal (JSON string syntax is valid GraphQL string syntax).
fn gql_string(s: &str) -> String {
    Json::String(s.to_owned()).to_string()
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    crate::http::excerpt(body, 200)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    /// What the stub answers: `(method, path) -> (status, body)`; anything else is 404.
    type Routes = Vec<(&'static str, String, u16, Vec<u8>)>;

    /// A request the stub received.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        body: String,
    }

    /// A loopback HTTP/1.1 stub serving at most `max` connections (one request each),
    /// for at most 20 s; returns its base URL and what it saw.
    fn stub(routes: Routes, max: usize) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            for stream in listener.incoming().take(max) {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_owned();
                let path = parts.next().unwrap_or("").to_owned();
                let mut length = 0usize;
                for _ in 0..100 {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                log.lock().push(Seen {
                    method: method.clone(),
                    path: path.clone(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let (status, answer) = routes
                    .iter()
                    .find(|(m, p, _, _)| *m == method && *p == path)
                    .map(|(_, _, s, b)| (*s, b.clone()))
                    .unwrap_or((404, b"Not Found".to_vec()));
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&answer);
            }
        });
        (base, seen)
    }

    fn key1() -> hb_codec::Wallet {
        hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json"))
            .unwrap()
    }

    fn signed_item(anchor: Option<[u8; 32]>) -> DataItem {
        DataItem {
            target: Some([7; 32]),
            anchor,
            tags: vec![
                (b"App-Name".to_vec(), b"hb-test".to_vec()),
                (b"Content-Type".to_vec(), b"text/plain".to_vec()),
            ],
            data: bytes::Bytes::from_static(b"gateway data"),
            ..DataItem::default()
        }
        .signed(&key1())
        .unwrap()
    }

    /// The GraphQL answer for `item` as arlocal gives it, with `anchor` as given.
    fn gql(item: &DataItem, anchor: &str) -> Vec<u8> {
        let b64 = hb_core::id::b64url;
        let tags: Vec<Json> = item
            .tags
            .iter()
            .map(|(n, v)| {
                serde_json::json!({
                    "name": String::from_utf8_lossy(n),
                    "value": String::from_utf8_lossy(v)
                })
            })
            .collect();
        serde_json::json!({ "data": { "transactions": { "edges": [ { "node": {
            "id": item.id().to_human(),
            "anchor": anchor,
            "signature": b64(&item.signature),
            "recipient": item.target.map(|t| b64(&t)).unwrap_or_default(),
            "owner": { "key": b64(&item.owner) },
            "fee": { "winston": "0" },
            "quantity": { "winston": "0" },
            "tags": tags,
            "data": { "size": item.data.len().to_string() },
        } } ] } } })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn fetches_verifies_and_converts_an_item_falling_back_to_the_plain_data_path() {
        let item = signed_item(None);
        let id = item.id().to_human();
        let routes = vec![
            ("POST", "/graphql".to_owned(), 200, gql(&item, "")),
            ("GET", format!("/{id}"), 200, item.data.to_vec()),
        ];
        let (base, seen) = stub(routes, 3);
        let src = GatewaySource::new(&format!("{base}/")).unwrap();
        assert_eq!(src.base(), base);
        let msg = src.fetch(&id).unwrap().unwrap();
        assert_eq!(msg.get_str("app-name"), Some("hb-test"));
        assert_eq!(msg.get_str("data"), Some("gateway data"));
        let expected = ans104::item_to_message(&item).unwrap();
        assert_eq!(msg, expected);
        assert_eq!(
            trusted_keys(&msg, &id),
            None,
            "a verified item is not marked"
        );
        let seen = seen.lock().clone();
        let paths: Vec<(&str, &str)> = seen
            .iter()
            .map(|s| (s.method.as_str(), s.path.as_str()))
            .collect();
        let raw = format!("/raw/{id}");
        let plain = format!("/{id}");
        assert_eq!(
            paths,
            [
                ("POST", "/graphql"),
                ("GET", raw.as_str()),
                ("GET", plain.as_str())
            ]
        );
        let q: Json = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(q["variables"]["transactionIds"][0], id.as_str());
        let query = q["query"].as_str().unwrap();
        for field in [
            "anchor",
            "signature",
            "recipient",
            "owner { key }",
            "tags { name value }",
            "data { size }",
            "first: 1",
        ] {
            assert!(query.contains(field), "{field} in {query}");
        }
    }

    /// A scheduler-location record is looked up by owner and `Type` tag, and kept only
    /// when it verifies and its owner is the address asked for.
    #[test]
    fn scheduler_locations_are_found_by_owner_and_type() {
        let record = DataItem {
            tags: vec![
                (b"Type".to_vec(), b"Scheduler-Location".to_vec()),
                (b"Url".to_vec(), b"http://su.example:8734".to_vec()),
                (b"Time-To-Live".to_vec(), b"3600000".to_vec()),
            ],
            ..DataItem::default()
        }
        .signed(&key1())
        .unwrap();
        let id = record.id().to_human();
        let owner = key1().address();
        let routes = vec![("POST", "/graphql".to_owned(), 200, gql(&record, ""))];
        let (base, seen) = stub(routes, 1);
        let src = GatewaySource::new(&base).unwrap();
        let msg = src.scheduler_location(&owner).unwrap().unwrap();
        assert_eq!(msg.get_str("url"), Some("http://su.example:8734"));
        assert_eq!(msg.get_str("type"), Some("Scheduler-Location"));
        let q: Json = serde_json::from_str(&seen.lock()[0].body).unwrap();
        assert_eq!(q["variables"]["SchedulerAddrs"][0], owner.as_str());
        let query = q["query"].as_str().unwrap();
        assert!(query.contains("owners: $SchedulerAddrs"), "{query}");
        assert!(query.contains("\"Scheduler-Location\""), "{query}");
        // The same record asked for as another address's: refused.
        let routes = vec![("POST", "/graphql".to_owned(), 200, gql(&record, ""))];
        let (base, _) = stub(routes, 1);
        let src = GatewaySource::new(&base).unwrap();
        assert!(src.scheduler_location(&key2_address()).unwrap().is_none());
        // Tampered (another URL under the same signature): refused, trusted or not.
        let mut forged = record.clone();
        forged.tags[1].1 = b"http://evil.example".to_vec();
        let mut answer: Json = serde_json::from_slice(&gql(&forged, "")).unwrap();
        answer["data"]["transactions"]["edges"][0]["node"]["id"] = Json::from(id.as_str());
        let routes = vec![(
            "POST",
            "/graphql".to_owned(),
            200,
            answer.to_string().into_bytes(),
        )];
        let (base, _) = stub(routes, 1);
        let src = GatewaySource::new(&base).unwrap().with_trust_gql(true);
        assert!(src.scheduler_location(&owner).unwrap().is_none());
        // None known, and not an address: none.
        let empty = br#"{"data":{"transactions":{"edges":[]}}}"#.to_vec();
        let (base, _) = stub(vec![("POST", "/graphql".to_owned(), 200, empty)], 1);
        let src = GatewaySource::new(&base).unwrap();
        assert!(src.scheduler_location(&owner).unwrap().is_none());
        assert!(src.scheduler_location("not-an-address").unwrap().is_none());
    }

    fn key2_address() -> String {
        hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-2.json"))
            .unwrap()
            .address()
    }

    #[test]
    fn the_anchor_is_read_as_base64url_or_as_raw_text() {
        let raw_anchor = *b"harness-anchor-0123456789abcdef!";
        for (item, shown) in [
            (
                signed_item(Some(raw_anchor)),
                String::from_utf8_lossy(&raw_anchor).into_owned(),
            ),
            (signed_item(Some([9; 32])), hb_core::id::b64url(&[9; 32])),
        ] {
            let id = item.id().to_human();
            let routes = vec![
                ("POST", "/graphql".to_owned(), 200, gql(&item, &shown)),
                ("GET", format!("/raw/{id}"), 200, item.data.to_vec()),
            ];
            let (base, _) = stub(routes, 2);
            let msg = GatewaySource::new(&base).unwrap().fetch(&id).unwrap();
            assert_eq!(
                msg,
                Some(ans104::item_to_message(&item).unwrap()),
                "{shown}"
            );
        }
        // A missing anchor (arlocal does not keep it): the item cannot verify; it is
        // served on the gateway's word, without the anchor, or refused.
        let item = signed_item(Some([9; 32]));
        let id = item.id().to_human();
        let routes = vec![
            ("POST", "/graphql".to_owned(), 200, gql(&item, "")),
            ("GET", format!("/raw/{id}"), 200, item.data.to_vec()),
        ];
        let (base, _) = stub(routes.clone(), 2);
        let msg = GatewaySource::new(&base)
            .unwrap()
            .fetch(&id)
            .unwrap()
            .unwrap();
        assert_eq!(msg.get("last_tx"), None);
        assert_eq!(msg.get_str("app-name"), Some("hb-test"));
        assert_eq!(
            trusted_keys(&msg, &id),
            Some(vec!["app-name".to_owned(), "content-type".to_owned()])
        );
        let (base, _) = stub(routes, 2);
        let strict = GatewaySource::new(&base).unwrap().with_trust_gql(false);
        assert_eq!(strict.fetch(&id).unwrap(), None);
    }

    /// The GraphQL answer for `item` with the value of its first tag replaced.
    fn gql_with_first_tag(item: &DataItem, value: &str) -> Vec<u8> {
        let mut body: Json = serde_json::from_slice(&gql(item, "")).unwrap();
        body["data"]["transactions"]["edges"][0]["node"]["tags"][0]["value"] = value.into();
        body.to_string().into_bytes()
    }

    /// The `trusted-keys` of the commitment `id` of `msg`, as a list of names.
    fn trusted_keys(msg: &Message, id: &str) -> Option<Vec<String>> {
        let c = msg
            .get("commitments")
            .and_then(Value::as_message)
            .and_then(|c| c.get(id))
            .and_then(Value::as_message)
            .unwrap();
        let t = c.get(TRUSTED_KEYS)?.as_message().unwrap();
        let list = hb_core::value::message_to_list(t).unwrap();
        Some(
            list.iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
        )
    }

    /// Serves `graphql` and `data` for `id` at `/raw/<id>` (two requests).
    fn serve(id: &str, graphql: Vec<u8>, data: &[u8]) -> String {
        let routes = vec![
            ("POST", "/graphql".to_owned(), 200, graphql),
            ("GET", format!("/raw/{id}"), 200, data.to_vec()),
        ];
        stub(routes, 2).0
    }

    #[test]
    fn unverifiable_items_are_served_with_their_tag_names_as_trusted_keys() {
        let item = signed_item(None);
        let id = item.id().to_human();
        // A tag the gateway misreports.
        let base = serve(&id, gql_with_first_tag(&item, "other"), &item.data);
        let src = GatewaySource::new(&base).unwrap();
        assert!(src.trust_gql(), "on by default, as in the reference");
        let msg = src.fetch(&id).unwrap().unwrap();
        assert_eq!(msg.get_str("app-name"), Some("other"), "the gateway's word");
        assert_eq!(msg.get_str("data"), Some("gateway data"));
        // Normalised names, in tag order, as a numbered map on the one commitment.
        let commitments = msg.get("commitments").and_then(Value::as_message).unwrap();
        assert_eq!(
            commitments.keys().map(|k| k.as_ref()).collect::<Vec<_>>(),
            [id.as_str()]
        );
        let c = commitments.get(&id).and_then(Value::as_message).unwrap();
        assert_eq!(
            c.get(TRUSTED_KEYS),
            Some(&Value::Message(
                Message::new()
                    .with("1", "app-name")
                    .with("2", "content-type")
            ))
        );
        // Everything else is the conversion of the item as the gateway describes it.
        let mut told = item.clone();
        told.tags[0].1 = b"other".to_vec();
        let plain = ans104::item_to_message(&told).unwrap();
        let unmarked = c.clone().without(TRUSTED_KEYS);
        assert_eq!(
            msg.clone()
                .with("commitments", Message::new().with(&id, unmarked)),
            plain
        );
        // The commitment still does not verify, but names its committed keys; the item
        // it encodes back to is the one the gateway described.
        assert!(!ans104::verify(&msg, &id).unwrap());
        let keys = ans104::committed_keys(&msg, &id).unwrap();
        for k in ["app-name", "content-type", "data", "target"] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        assert_eq!(ans104::message_to_item(&msg).unwrap(), told);

        // Data the gateway serves changed.
        let base = serve(&id, gql(&item, ""), b"gateway dat4");
        let msg = GatewaySource::new(&base)
            .unwrap()
            .fetch(&id)
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_str("data"), Some("gateway dat4"));
        assert_eq!(
            trusted_keys(&msg, &id),
            Some(vec!["app-name".to_owned(), "content-type".to_owned()])
        );
    }

    #[test]
    fn trusted_unverifiable_items_are_kept_by_the_message_cache() {
        let item = signed_item(None);
        let id = item.id().to_human();
        let base = serve(&id, gql_with_first_tag(&item, "other"), &item.data);
        let src = Arc::new(GatewaySource::new(&base).unwrap());
        let cache =
            crate::MessageCache::new(Arc::new(crate::MemoryStore::new())).with_sources(vec![src]);
        let Some(Value::Message(msg)) = cache.read(&id).unwrap() else {
            panic!("not found");
        };
        assert_eq!(
            trusted_keys(&msg, &id),
            Some(vec!["app-name".to_owned(), "content-type".to_owned()])
        );
        let Some(Value::Message(kept)) = cache.read_local(&id).unwrap() else {
            panic!("not kept");
        };
        assert_eq!(kept, msg);
    }

    #[test]
    fn with_trust_gql_off_items_that_do_not_verify_are_refused() {
        let item = signed_item(None);
        let id = item.id().to_human();
        for (graphql, data) in [
            // Different data.
            (gql(&item, ""), &b"gateway dat4"[..]),
            // A changed tag.
            (gql_with_first_tag(&item, "other"), &item.data[..]),
        ] {
            let base = serve(&id, graphql, data);
            let src = GatewaySource::new(&base).unwrap().with_trust_gql(false);
            assert!(!src.trust_gql());
            assert_eq!(src.fetch(&id).unwrap(), None);
        }
        // A verifying item is served either way, unmarked.
        let base = serve(&id, gql(&item, ""), &item.data);
        let src = GatewaySource::new(&base).unwrap().with_trust_gql(false);
        let msg = src.fetch(&id).unwrap().unwrap();
        assert_eq!(msg, ans104::item_to_message(&item).unwrap());
        assert_eq!(trusted_keys(&msg, &id), None);
    }

    #[test]
    fn some_items_are_refused_even_when_gql_is_trusted() {
        let item = signed_item(None);
        let id = item.id().to_human();
        // An ECDSA-sized signature.
        let mut body: Json = serde_json::from_slice(&gql(&item, "")).unwrap();
        body["data"]["transactions"]["edges"][0]["node"]["signature"] =
            hb_core::id::b64url(&[1; 65]).into();
        let (base, _) = stub(
            vec![(
                "POST",
                "/graphql".to_owned(),
                200,
                body.to_string().into_bytes(),
            )],
            1,
        );
        assert_eq!(GatewaySource::new(&base).unwrap().fetch(&id).unwrap(), None);
        // A signature whose SHA-256 is not the ID: not the item asked for.
        let mut body: Json = serde_json::from_slice(&gql(&item, "")).unwrap();
        body["data"]["transactions"]["edges"][0]["node"]["signature"] =
            hb_core::id::b64url(&[1; 512]).into();
        let base = serve(&id, body.to_string().into_bytes(), &item.data);
        assert_eq!(GatewaySource::new(&base).unwrap().fetch(&id).unwrap(), None);
        // No signature at all (all zeros): nothing to mark.
        let zero = DataItem {
            signature: [0; ans104::item::SIGNATURE_LEN],
            ..item.clone()
        };
        let zid = zero.id().to_human();
        let base = serve(&zid, gql(&zero, ""), &zero.data);
        assert_eq!(
            GatewaySource::new(&base).unwrap().fetch(&zid).unwrap(),
            None
        );
        // A bundled item that does not verify (the data is served as stored, so the
        // gateway's word does not cover it), whether the outer item verifies or not;
        // with a good bundled item, the same misreported outer item is served.
        let w = key1();
        let good = ans104::commit(&Message::new().with("x", "y"), &w).unwrap();
        for (inner, bad) in [(good.clone().with("x", "z"), true), (good, false)] {
            let outer =
                ans104::message_to_item(&Message::new().with("a", "1").with("inner", inner))
                    .unwrap()
                    .signed(&w)
                    .unwrap();
            assert!(outer.verify());
            assert_eq!(ans104::verify_tree(&outer).is_err(), bad);
            let oid = outer.id().to_human();
            let data = outer.data.to_vec();
            // (Its first tags are the bundle's: alter `a`, which does not change how
            // the data is read.)
            let mut altered: Json = serde_json::from_slice(&gql(&outer, "")).unwrap();
            for t in altered["data"]["transactions"]["edges"][0]["node"]["tags"]
                .as_array_mut()
                .unwrap()
            {
                if t["name"] == "a" {
                    t["value"] = "2".into();
                }
            }
            for graphql in [gql(&outer, ""), altered.to_string().into_bytes()] {
                let base = serve(&oid, graphql, &data);
                let got = GatewaySource::new(&base).unwrap().fetch(&oid).unwrap();
                assert_eq!(got.is_none(), bad, "{got:?}");
            }
        }
    }

    #[test]
    fn unknown_ids_and_non_ids_are_not_found() {
        let empty = br#"{"data":{"transactions":{"edges":[]}}}"#.to_vec();
        let (base, seen) = stub(vec![("POST", "/graphql".to_owned(), 200, empty)], 1);
        let src = GatewaySource::new(&base).unwrap();
        assert_eq!(src.fetch(&"A".repeat(43)).unwrap(), None);
        assert_eq!(src.fetch("not-an-id").unwrap(), None);
        assert_eq!(
            src.fetch(&"B".repeat(43)).unwrap(),
            None,
            "not canonical base64url"
        );
        assert_eq!(seen.lock().len(), 1, "only the real ID was asked for");
    }

    #[test]
    fn gateway_errors_name_the_url() {
        let (base, _) = stub(
            vec![("POST", "/graphql".to_owned(), 500, b"boom".to_vec())],
            1,
        );
        let e = GatewaySource::new(&base)
            .unwrap()
            .fetch(&"A".repeat(43))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("{base}/graphql")) && text.contains("500"),
            "{text}"
        );
        let (base, _) = stub(
            vec![("POST", "/graphql".to_owned(), 200, b"<html>".to_vec())],
            1,
        );
        let e = GatewaySource::new(&base)
            .unwrap()
            .fetch(&"A".repeat(43))
            .unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let (base, _) = stub(
            vec![(
                "POST",
                "/graphql".to_owned(),
                200,
                br#"{"errors":[{"message":"bad"}]}"#.to_vec(),
            )],
            1,
        );
        let e = GatewaySource::new(&base)
            .unwrap()
            .fetch(&"A".repeat(43))
            .unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        // The data is served nowhere.
        let item = signed_item(None);
        let (base, _) = stub(
            vec![("POST", "/graphql".to_owned(), 200, gql(&item, ""))],
            3,
        );
        let e = GatewaySource::new(&base)
            .unwrap()
            .fetch(&item.id().to_human())
            .unwrap_err();
        assert!(
            e.to_string().contains("/raw/") && e.to_string().contains("404"),
            "{e}"
        );
    }

    #[test]
    fn size_caps() {
        let item = signed_item(None);
        let id = item.id().to_human();
        // Announced too large: not fetched.
        let (base, seen) = stub(
            vec![("POST", "/graphql".to_owned(), 200, gql(&item, ""))],
            1,
        );
        let src = GatewaySource::new(&base).unwrap().with_max_data(4);
        assert_eq!(src.fetch(&id).unwrap(), None);
        assert_eq!(seen.lock().len(), 1);
        // Served larger than the cap.
        let mut body: Json = serde_json::from_slice(&gql(&item, "")).unwrap();
        body["data"]["transactions"]["edges"][0]["node"]["data"]["size"] = "1".into();
        let routes = vec![
            (
                "POST",
                "/graphql".to_owned(),
                200,
                body.to_string().into_bytes(),
            ),
            ("GET", format!("/raw/{id}"), 200, vec![b'x'; 64]),
        ];
        let (base, _) = stub(routes, 2);
        let e = GatewaySource::new(&base)
            .unwrap()
            .with_max_data(8)
            .fetch(&id)
            .unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn a_dead_gateway_fails_fast_and_is_then_skipped() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let src = GatewaySource::new(&base).unwrap();
        let t = Instant::now();
        let e = src.fetch(&"A".repeat(43)).unwrap_err();
        assert!(e.to_string().contains(&format!("{base}/graphql")), "{e}");
        let e = src.fetch(&"A".repeat(43)).unwrap_err();
        assert!(e.to_string().contains("skipped"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // Without a back-off, every fetch tries again.
        let src = GatewaySource::new(&base)
            .unwrap()
            .with_backoff(Duration::ZERO);
        for _ in 0..2 {
            assert!(
                !src.fetch(&"A".repeat(43))
                    .unwrap_err()
                    .to_string()
                    .contains("skipped")
            );
        }
    }

    #[test]
    fn a_gateway_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            // Accept one connection and hold it without answering, for at most 5 s.
            if let Ok((s, _)) = listener.accept() {
                std::thread::sleep(Duration::from_secs(5));
                drop(s);
            }
        });
        let src =
            GatewaySource::with_timeouts(&base, Duration::from_secs(1), Duration::from_millis(800))
                .unwrap();
        let t = Instant::now();
        let e = src.fetch(&"A".repeat(43)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(e.to_string().contains("graphql"), "{e}");
    }

    #[test]
    fn subindex_filters_are_escaped_into_the_query() {
        let src = GatewaySource::new("http://127.0.0.1:1")
            .unwrap()
            .with_subindex(vec![
                ("Type".into(), "Process".into()),
                ("Odd\"".into(), "a\\b".into()),
            ]);
        let body: Json = serde_json::from_str(&src.graphql_body("x")).unwrap();
        let q = body["query"].as_str().unwrap();
        assert!(
            q.contains(r#"tags: [{ name: "Type", values: ["Process"] }, { name: "Odd\"", values: ["a\\b"] }]"#),
            "{q}"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["", "arweave.net", "ftp://x", "https://", "http://h#f"] {
            assert!(GatewaySource::new(bad).is_err(), "{bad}");
        }
    }
}
