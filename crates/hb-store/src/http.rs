//! The HTTP client every remote store and source shares: one checked base URL and one
//! `ureq` agent configuration; and the reading of a reply (its headers, its body up to
//! a limit), which relay@1.0 shares too.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::store::StoreError;

/// The checked base URL (no trailing `/`) and an agent for it: replies of every status
/// are answers (not errors), at most `redirects` redirects, `connect` per connection,
/// `total` per request. `kind` names the store in the error.
///
/// # Errors
/// `base` is not an `http://` or `https://` URL.
pub(crate) fn agent(
    base: &str,
    kind: &str,
    connect: Duration,
    total: Duration,
    redirects: u32,
) -> Result<(String, ureq::Agent), StoreError> {
    let base = base.trim().trim_end_matches('/').to_owned();
    let scheme_ok = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"));
    if !scheme_ok.is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' '])) {
        return Err(StoreError::Remote {
            store: format!("{kind} {base}"),
            reason: format!("`{base}` is not an http:// or https:// base URL"),
        });
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(connect))
        .timeout_global(Some(total))
        .max_redirects(redirects)
        .user_agent(concat!("hyperbeam-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    Ok((base, agent))
}

/// The time left before `deadline`, or the reason there is none (`what` names the
/// request, e.g. `GET <url>`).
pub(crate) fn time_left(deadline: std::time::Instant, what: &str) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        Err(format!("{what}: no time left for the request"))
    } else {
        Ok(left)
    }
}

/// The headers of `resp` by name, the values of a repeated header joined with `, `.
pub fn response_headers<B>(resp: &ureq::http::Response<B>) -> BTreeMap<String, Bytes> {
    let mut headers = BTreeMap::new();
    for name in resp.headers().keys() {
        let mut joined: Vec<u8> = Vec::new();
        for (i, v) in resp.headers().get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        headers.insert(name.as_str().to_owned(), Bytes::from(joined));
    }
    headers
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit (the server is up, its answer unusable).
    TooLarge(String),
    /// The connection failed while reading (the text, and what `ureq` said, e.g. a
    /// timeout).
    Transport(String, ureq::Error),
}

impl BodyError {
    /// The error text.
    pub fn text(self) -> String {
        match self {
            BodyError::TooLarge(t) | BodyError::Transport(t, _) => t,
        }
    }
}

/// The body of `resp`, read up to `limit` bytes; a larger body is an error, not a
/// truncation. The error text starts with `what`.
pub fn read_capped(
    resp: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, BodyError> {
    match resp.body_mut().with_config().limit(limit).read_to_vec() {
        Ok(b) => Ok(b),
        Err(ureq::Error::BodyExceedsLimit(n)) => Err(BodyError::TooLarge(format!(
            "{what}: the reply is larger than {n} bytes"
        ))),
        Err(e) => Err(BodyError::Transport(format!("{what}: {e}"), e)),
    }
}

/// At most `max` characters of a reply body as text, for error messages.
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        s.push('…');
    }
    if s.is_empty() {
        "(empty reply)".into()
    } else {
        s
    }
}
