//! The HTTP client every remote store and source shares: one checked base URL and one
//! `ureq` agent configuration.

use std::time::Duration;

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
