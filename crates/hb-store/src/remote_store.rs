//! Another node's cache as a [`Store`] (spec 05 §6.6, `hb_store_remote_node`, scope
//! remote): reads through `GET <node>/~cache@1.0/read`, writes and links through signed
//! `POST`s to `cache@1.0` (spec 05 §6.8).
//!
//! # What this store can hold
//!
//! The remote `cache@1.0/write` takes bytes and files them under the path *it*
//! computes, `data/<base64url(SHA-256(bytes))>` ([`hb_core::cache::data_path`]): a
//! caller cannot choose the path. So [`Op::Write`] is accepted only for that path of
//! its bytes; a write to any other path is refused with [`StoreError::InvalidPath`]
//! (give the content a name with [`Op::Link`] instead: `link(data/<hash>, my/name)`).
//! Groups are not a thing the remote cache exposes: [`Op::Group`] is a no-op, and
//! [`Store::list`] answers `None`. [`Store::resolve`] is the identity (the remote node
//! follows its links itself when it reads).
//!
//! # Not atomic
//!
//! [`Store::apply`] is one HTTP request per change, in order, and **cannot be atomic**:
//! when a request fails, the changes before it stay applied on the remote node and the
//! ones after it are not sent. (Every write path is checked before anything is sent, so
//! a batch refused for a bad path sends nothing.) Writes and links are idempotent, so
//! repeating a batch that failed halfway is safe.
//!
//! # Trust
//!
//! Reads of `data/<hash>` paths are checked against the hash (a mismatch is
//! [`StoreError::Corrupt`]); other paths are taken as the node answers them. Writes and
//! links are signed (`httpsig@1.0`, RSA-PSS) with the wallet given to
//! [`RemoteNodeStore::new`]; the remote node accepts them only if that wallet's address
//! is in its `cache_writers` option (else 403).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hb_codec::Wallet;
use hb_codec::httpsig_commit;
use hb_core::cache::data_path;
use hb_core::httpsig;
use hb_core::value::{Message, Value};

use crate::gateway::{CONNECT_TIMEOUT, FETCH_TIMEOUT};
use crate::remote::DEFAULT_MAX_REPLY;
use crate::store::{EntryType, Op, Scope, Store, StoreError, normalize};

/// How much of an error reply's body is quoted in the error.
const ERROR_TEXT_LIMIT: usize = 512;

/// Another node's `cache@1.0` as a writable, remote [`Store`] (see the module docs:
/// writes only to `data/<hash>` paths, and [`Store::apply`] is not atomic).
#[derive(Debug)]
pub struct RemoteNodeStore {
    name: String,
    base: String,
    agent: ureq::Agent,
    wallet: Arc<Wallet>,
    max_reply: u64,
}

impl RemoteNodeStore {
    /// The node at `base` (`http://` or `https://`; a trailing `/` is ignored), signing
    /// writes and links with `wallet`.
    ///
    /// # Errors
    /// `base` is not an `http://` or `https://` URL.
    pub fn new(base: &str, wallet: Arc<Wallet>) -> Result<Self, StoreError> {
        Self::with_timeouts(base, wallet, CONNECT_TIMEOUT, FETCH_TIMEOUT)
    }

    /// [`Self::new`] with other timeouts: `connect` for each connection, `total` for
    /// each request.
    ///
    /// # Errors
    /// `base` is not an `http://` or `https://` URL.
    pub fn with_timeouts(
        base: &str,
        wallet: Arc<Wallet>,
        connect: Duration,
        total: Duration,
    ) -> Result<Self, StoreError> {
        let (base, agent) = crate::http::agent(base, "remote-node", connect, total, 0)?;
        Ok(RemoteNodeStore {
            name: format!("remote-node {base}"),
            base,
            agent,
            wallet,
            max_reply: DEFAULT_MAX_REPLY,
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

    fn invalid(&self, path: &str, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidPath {
            store: self.name.clone(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// `path` as it travels in the `target` query value. The node does not
    /// percent-decode query values (spec 02 §2), so only characters that need no
    /// escaping are allowed.
    fn target(&self, path: &str) -> Result<String, StoreError> {
        let p = normalize(path);
        if p.is_empty() {
            return Err(self.invalid(path, "an empty path names nothing on a remote node"));
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.~/@:".contains(*c)))
        {
            return Err(self.invalid(
                path,
                format!("{c:?} cannot be sent in a `target` query value"),
            ));
        }
        Ok(p)
    }

    /// The status, the `ao-result` field and the body of a reply (the body read up to
    /// the reply limit).
    fn finish(
        &self,
        what: &str,
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<(u16, Option<String>, Bytes), StoreError> {
        let status = resp.status().as_u16();
        let ao_result = resp
            .headers()
            .get("ao-result")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = crate::http::read_capped(&mut resp, self.max_reply, what)
            .map_err(|e| self.remote(e.text()))?;
        Ok((status, ao_result, Bytes::from(body)))
    }

    /// A signed `POST <node>/~cache@1.0/<key>` of `msg`; `Ok` with the reply's
    /// `path` field on 200, else an error naming the URL, the status and the reply.
    fn post(&self, key: &str, msg: &Message, path: &str) -> Result<Option<String>, StoreError> {
        let url = format!("{}/~cache@1.0/{key}", self.base);
        let what = format!("POST {url} (`{path}`)");
        let signed = httpsig_commit::commit(msg, &self.wallet)
            .map_err(|e| self.remote(format!("{what}: cannot sign the request: {e}")))?;
        let http = httpsig::encode_rich(&signed)
            .map_err(|e| self.remote(format!("{what}: cannot encode the request: {e}")))?;
        let mut req = self.agent.post(&url);
        for (name, value) in &http.headers {
            req = req.header(name.as_str(), value.as_ref());
        }
        let resp = req
            .send(http.body.as_deref().unwrap_or_default())
            .map_err(|e| self.remote(format!("{what}: {e}")))?;
        let path_field = resp
            .headers()
            .get("path")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let (status, _, body) = self.finish(&what, resp)?;
        if status != 200 {
            return Err(self.remote(format!("{what}: status {status}: {}", excerpt(&body))));
        }
        Ok(path_field)
    }

    /// One change (the write's path already checked).
    fn send(&self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::Group(_) => Ok(()),
            Op::Write(path, bytes) => {
                let msg = Message::new().with("body", Value::Binary(bytes.clone()));
                let expected = data_path(bytes);
                match self.post("write", &msg, path)? {
                    Some(got) if got.trim_matches('/') != expected => Err(self.remote(format!(
                        "POST {}/~cache@1.0/write (`{path}`): the node filed the bytes under `{got}`, not `{expected}`",
                        self.base
                    ))),
                    _ => Ok(()),
                }
            }
            Op::Link { existing, new } => {
                let (existing, new) = (normalize(existing), normalize(new));
                if existing == new {
                    return Ok(());
                }
                if existing.is_empty() || new.is_empty() {
                    return Err(self.invalid(
                        if new.is_empty() { &new } else { &existing },
                        "an empty path names nothing on a remote node",
                    ));
                }
                let msg = Message::new()
                    .with("source", existing.as_str())
                    .with("destination", new.as_str());
                self.post("link", &msg, &new).map(|_| ())
            }
        }
    }
}

/// At most [`ERROR_TEXT_LIMIT`] characters of a reply body, as text.
fn excerpt(body: &[u8]) -> String {
    crate::http::excerpt(body, ERROR_TEXT_LIMIT)
}

impl Store for RemoteNodeStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn scope(&self) -> Scope {
        Scope::Remote
    }

    /// `GET <node>/~cache@1.0/read?target=<path>`: the bytes when the node answers with
    /// a binary (`ao-result: body`); `None` on 404, and when the path holds a message
    /// (not bytes: read messages with [`crate::RemoteNodeSource`]).
    fn read(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        let target = self.target(path)?;
        let url = format!("{}/~cache@1.0/read?target={target}", self.base);
        let what = format!("GET {url}");
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.remote(format!("{what}: {e}")))?;
        let (status, ao_result, body) = self.finish(&what, resp)?;
        match status {
            200 => {}
            404 => return Ok(None),
            s => return Err(self.remote(format!("{what}: status {s}: {}", excerpt(&body)))),
        }
        if ao_result.as_deref() != Some("body") {
            return Ok(None);
        }
        if target
            .strip_prefix("data/")
            .is_some_and(|hash| !hash.contains('/'))
        {
            let expected = data_path(&body);
            if expected != target {
                return Err(StoreError::Corrupt {
                    store: self.name.clone(),
                    path: target,
                    reason: format!("{what}: the bytes received hash to `{expected}`"),
                });
            }
        }
        Ok(Some(body))
    }

    fn kind(&self, path: &str) -> Result<Option<EntryType>, StoreError> {
        Ok(self.read(path)?.map(|_| EntryType::Simple))
    }

    fn list(&self, _path: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(None)
    }

    fn resolve(&self, path: &str) -> Result<String, StoreError> {
        Ok(path.to_owned())
    }

    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        // Check every write before sending anything.
        for op in ops {
            if let Op::Write(path, bytes) = op {
                let expected = data_path(bytes);
                if normalize(path) != expected {
                    return Err(self.invalid(
                        path,
                        format!(
                            "a remote node's cache@1.0 files bytes only under their own data path; these bytes go to `{expected}` (link a name to it instead)"
                        ),
                    ));
                }
            }
        }
        ops.iter().try_for_each(|op| self.send(op))
    }
}
