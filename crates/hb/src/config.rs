//! Node configuration: a typed struct loaded from `config.flat` (the reference's
//! format, spec 05 §1.3), environment variables and flags, in rising precedence.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hb_core::{Message, Value};
use thiserror::Error;

/// A configuration value that cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// A value of the wrong shape.
    #[error("config key `{key}`: `{value}` is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The config file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Whether the node serves requests (`initialized`, spec 05 §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initialized {
    /// Serving.
    True,
    /// Only `~meta@1.0/info` is served.
    False,
    /// Serving, and the node message can no longer change.
    Permanent,
}

/// Where a node keeps messages and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// LMDB in `<data_dir>/store` (durable).
    Lmdb,
    /// The message cache over an in-memory store (nothing survives a restart).
    Memory,
}

/// The typed configuration of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// TCP port (`port`, env `HB_PORT`).
    pub port: u16,
    /// Address to bind (`bind`, env `HB_BIND`); loopback unless the operator says otherwise.
    pub bind: IpAddr,
    /// Where the node keeps its data (`data_dir`, env `HB_DATA_DIR`).
    pub data_dir: PathBuf,
    /// The node's wallet file (`priv_key_location`, env `HB_KEY`); by default
    /// `hyperbeam-key.json` in the data directory, created on first start.
    pub wallet: Option<PathBuf>,
    /// Public host name (`host`).
    pub host: String,
    /// Arweave gateway (`gateway`).
    pub gateway: String,
    /// Other nodes asked for IDs this node's store lacks (`remote_nodes`: base URLs
    /// separated by commas or spaces), after the gateway. They are asked with
    /// `cache-control: only-if-cached`, so a miss never bounces between nodes.
    pub remote_nodes: Vec<String>,
    /// `debug` or `prod` (`mode`, env `HB_MODE`).
    pub mode: String,
    /// The node's operator address, or `unclaimed` (`operator`).
    pub operator: Option<String>,
    /// Whether the node serves requests (`initialized`).
    pub initialized: Initialized,
    /// Where `GET /` redirects (`default_req`).
    pub default_req: String,
    /// Largest request body in bytes (`max_body_bytes`).
    pub max_body_bytes: usize,
    /// Largest request head in bytes (`max_head_bytes`).
    pub max_head_bytes: usize,
    /// Time a request may take (`request_timeout`, milliseconds).
    pub request_timeout: Duration,
    /// Entries of the in-memory cache of the offline commands (`cache_entries`).
    pub cache_entries: usize,
    /// Where messages and results are kept (`store`): LMDB under the data directory
    /// (the default) or memory only.
    pub store: StoreKind,
    /// Whether every store commit is flushed to disk before it is acknowledged
    /// (`store_sync`, default `true`; `false` is the relaxed mode of docs/adr/0004).
    pub store_sync: bool,
    /// Whether an item read from the gateway that does not verify (its GraphQL answer
    /// lacks a field, such as the anchor) is served on the gateway's word, its tag names
    /// marked as `trusted-keys` on its commitment (`ans104_trust_gql`, default `true` as
    /// in the reference; spec 05 §6.5), or refused (`false`; the reference serves it
    /// unmarked).
    pub ans104_trust_gql: bool,
    /// Any other key of the config file, kept as text in the node message.
    pub extra: BTreeMap<String, String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            port: 8734,
            bind: IpAddr::from([127, 0, 0, 1]),
            data_dir: PathBuf::from("hb-data"),
            wallet: None,
            host: "localhost".into(),
            gateway: "https://arweave.net".into(),
            remote_nodes: Vec::new(),
            mode: "debug".into(),
            operator: None,
            initialized: Initialized::True,
            default_req: "/~meta@1.0/info".into(),
            max_body_bytes: 16 * 1024 * 1024,
            max_head_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(60),
            cache_entries: 100_000,
            store: StoreKind::Lmdb,
            store_sync: true,
            ans104_trust_gql: true,
            extra: BTreeMap::new(),
        }
    }
}

/// The leaves of a TOML value as `config.flat` pairs under `key`.
fn flatten_toml(key: String, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten_toml(format!("{key}/{k}"), v, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_toml(format!("{key}/{}", i + 1), v, out);
            }
        }
        toml::Value::String(s) => out.push((key, s.clone())),
        other => out.push((key, other.to_string())),
    }
}

/// Sets `value` at the path `key` of `m`, a key with `/` making nested messages
/// (spec 05 §1.3: `a/b: c` is `{a: {b: c}}`). What is in the way is replaced.
fn insert_nested(m: &mut Message, key: &str, value: Value) {
    match key.split_once('/') {
        Some((first, rest)) if !first.is_empty() && !rest.is_empty() => {
            let mut inner = m
                .get(first)
                .and_then(Value::as_message)
                .cloned()
                .unwrap_or_default();
            insert_nested(&mut inner, rest, value);
            m.insert(first, Value::Message(inner));
        }
        _ => m.insert(key, value),
    }
}

/// Parses `config.flat` text into `(key, value)` pairs: one `key: value` per line, keys
/// with `-` turned into `_`; lines without exactly one `": "` are ignored.
pub fn parse_flat(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            if line.matches(": ").count() != 1 {
                return None;
            }
            let (k, v) = line.split_once(": ")?;
            let k = k.trim();
            if k.is_empty() || k.starts_with('#') {
                return None;
            }
            Some((k.replace('-', "_"), v.trim_end_matches('\r').to_owned()))
        })
        .collect()
}

fn parse_num<T: std::str::FromStr>(
    key: &str,
    value: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        expected,
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::BadValue {
            key: key.into(),
            value: value.into(),
            expected: "`true` or `false`",
        }),
    }
}

impl NodeConfig {
    /// Applies one `key = value` setting, validating it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        // The option's name is the first segment, `-` read as `_`; the segments of a
        // nested key (`routes/1/node/prefix`) below it are kept as written.
        let key = match key.split_once('/') {
            Some((option, rest)) => format!("{}/{rest}", option.replace('-', "_")),
            None => key.replace('-', "_"),
        };
        match key.as_str() {
            "port" => self.port = parse_num(&key, value, "a port number (0-65535)")?,
            "bind" => self.bind = parse_num(&key, value, "an IP address")?,
            "data_dir" => self.data_dir = PathBuf::from(value),
            "priv_key_location" | "wallet" => self.wallet = Some(PathBuf::from(value)),
            "host" => self.host = value.into(),
            "gateway" => self.gateway = value.into(),
            "remote_nodes" => {
                self.remote_nodes = value
                    .split([',', ' '])
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = self
                    .remote_nodes
                    .iter()
                    .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
                {
                    return Err(ConfigError::BadValue {
                        key,
                        value: bad.clone(),
                        expected: "http:// or https:// URLs separated by commas",
                    });
                }
            }
            "mode" => match value {
                "debug" | "prod" => self.mode = value.into(),
                _ => {
                    return Err(ConfigError::BadValue {
                        key,
                        value: value.into(),
                        expected: "`debug` or `prod`",
                    });
                }
            },
            "operator" => self.operator = Some(value.into()),
            "initialized" => {
                self.initialized = match value {
                    "true" => Initialized::True,
                    "false" => Initialized::False,
                    "permanent" => Initialized::Permanent,
                    _ => {
                        return Err(ConfigError::BadValue {
                            key,
                            value: value.into(),
                            expected: "`true`, `false` or `permanent`",
                        });
                    }
                }
            }
            "default_req" => self.default_req = value.into(),
            "max_body_bytes" => self.max_body_bytes = parse_num(&key, value, "a number of bytes")?,
            "max_head_bytes" => self.max_head_bytes = parse_num(&key, value, "a number of bytes")?,
            "request_timeout" => {
                self.request_timeout =
                    Duration::from_millis(parse_num(&key, value, "a number of milliseconds")?)
            }
            "cache_entries" => self.cache_entries = parse_num(&key, value, "a number of entries")?,
            "store" => {
                self.store = match value {
                    "lmdb" => StoreKind::Lmdb,
                    "memory" => StoreKind::Memory,
                    _ => {
                        return Err(ConfigError::BadValue {
                            key,
                            value: value.into(),
                            expected: "`lmdb` or `memory`",
                        });
                    }
                }
            }
            "store_sync" => self.store_sync = parse_bool(&key, value)?,
            "ans104_trust_gql" => self.ans104_trust_gql = parse_bool(&key, value)?,
            _ => {
                self.extra.insert(key, value.into());
            }
        }
        Ok(())
    }

    /// Loads a configuration file over the current values: TOML when its name ends in
    /// `.toml` ([`NodeConfig::load_toml`]), else `config.flat` lines.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        {
            self.load_toml(path)
        } else {
            self.load_flat(path)
        }
    }

    /// Loads a TOML file over the current values: each leaf is set as the `config.flat`
    /// key its path names — tables nest (`[routes.1.node]` or `routes = [{…}]`: array
    /// items are numbered from 1, as the flat form numbers them), and numbers and
    /// booleans are read as their text.
    pub fn load_toml(&mut self, path: &Path) -> Result<(), ConfigError> {
        let unreadable = |reason: String| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| unreadable(format!("not TOML: {}", e.message())))?;
        let mut pairs = Vec::new();
        for (k, v) in &table {
            flatten_toml(k.clone(), v, &mut pairs);
        }
        for (k, v) in pairs {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// Loads a `config.flat` file over the current values.
    pub fn load_flat(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        for (k, v) in parse_flat(&text) {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// The LMDB store's directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Where the node's wallet lives.
    pub fn wallet_path(&self) -> PathBuf {
        self.wallet
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hyperbeam-key.json"))
    }

    /// The node message served by `~meta@1.0/info` (spec 05 §1.5), derived from this
    /// configuration and the node's address.
    pub fn node_message(&self, address: Option<&str>) -> Message {
        let mut m = Message::new()
            .with("port", self.port as i64)
            .with("host", self.host.as_str())
            .with("gateway", self.gateway.as_str())
            .with("mode", Value::atom(&self.mode))
            .with(
                "initialized",
                Value::atom(match self.initialized {
                    Initialized::True => "true",
                    Initialized::False => "false",
                    Initialized::Permanent => "permanent",
                }),
            )
            .with("default_req", self.default_req.as_str())
            .with("commitment_device", "httpsig@1.0")
            .with("default_codec", "httpsig@1.0")
            .with(
                "cache_control",
                Value::list(vec!["no-cache".into(), "no-store".into()]),
            )
            .with("load_remote_devices", false)
            .with("ans104_trust_gql", self.ans104_trust_gql)
            .with("node_history", Value::list(vec![]))
            .with("node", "hyperbeam-rs")
            .with("version", env!("CARGO_PKG_VERSION"))
            .with(
                "preloaded_devices",
                Value::list(
                    hb_devices::registry()
                        .names()
                        .into_iter()
                        .map(Value::text)
                        .collect(),
                ),
            );
        if self.store == StoreKind::Lmdb {
            // Compiled WebAssembly modules survive restarts beside the store.
            m.insert(
                "wasm_cache_dir",
                Value::from(self.data_dir.join("wasm").display().to_string()),
            );
        }
        if !self.remote_nodes.is_empty() {
            m.insert(
                "remote_nodes",
                Value::list(self.remote_nodes.iter().map(|u| Value::text(u)).collect()),
            );
        }
        if let Some(op) = &self.operator {
            m.insert("operator", Value::text(op));
        }
        if let Some(address) = address {
            m.insert("address", Value::text(address));
        }
        for (k, v) in &self.extra {
            insert_nested(&mut m, k, Value::text(v));
        }
        m
    }

    /// The HTTP server's limits.
    pub fn server_config(&self) -> hb_http::ServerConfig {
        hb_http::ServerConfig {
            max_head_bytes: self.max_head_bytes,
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            default_req: self.default_req.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec05_checklist_21_flat_example() {
        let text = "port: 1234\nhost: https://ao.computer\nawait-inprogress: false\n";
        let mut c = NodeConfig::default();
        for (k, v) in parse_flat(text) {
            c.set(&k, &v).expect("valid");
        }
        assert_eq!(c.port, 1234);
        assert_eq!(c.host, "https://ao.computer");
        assert_eq!(
            c.extra.get("await_inprogress").map(String::as_str),
            Some("false")
        );
    }

    #[test]
    fn flat_ignores_odd_lines() {
        let pairs = parse_flat("a: 1\nno separator\nb: x: y\n\nc: 3");
        assert_eq!(
            pairs,
            vec![("a".into(), "1".into()), ("c".into(), "3".into())]
        );
    }

    #[test]
    fn bad_values_are_clear() {
        let mut c = NodeConfig::default();
        let e = c.set("port", "eighty").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `port`: `eighty` is not a port number (0-65535)"
        );
        assert!(c.set("mode", "fast").is_err());
        assert!(c.set("initialized", "maybe").is_err());
    }

    #[test]
    fn ans104_trust_gql_is_a_typed_boolean_in_the_node_message() {
        let mut c = NodeConfig::default();
        assert!(c.ans104_trust_gql, "on by default, as in the reference");
        assert_eq!(
            c.node_message(None).get("ans104_trust_gql"),
            Some(&Value::from(true))
        );
        for (v, want) in [("false", false), ("true", true)] {
            c.set("ans104-trust-gql", v).unwrap();
            assert_eq!(c.ans104_trust_gql, want);
            assert_eq!(
                c.node_message(None).get("ans104_trust_gql"),
                Some(&Value::from(want))
            );
        }
        let pairs = parse_flat("ans104_trust_gql: false\n");
        for (k, v) in pairs {
            c.set(&k, &v).unwrap();
        }
        assert!(!c.ans104_trust_gql);
        assert!(!c.extra.contains_key("ans104_trust_gql"));
        let e = c.set("ans104_trust_gql", "yes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `ans104_trust_gql`: `yes` is not `true` or `false`"
        );
        assert!(c.set("store_sync", "maybe").is_err());
    }

    #[test]
    fn remote_nodes_are_urls() {
        let mut c = NodeConfig::default();
        c.set("remote-nodes", "http://127.0.0.1:9001, https://b.example")
            .unwrap();
        assert_eq!(
            c.remote_nodes,
            vec!["http://127.0.0.1:9001", "https://b.example"]
        );
        let m = c.node_message(None);
        assert_eq!(
            m.get("remote_nodes"),
            Some(&Value::list(vec![
                Value::text("http://127.0.0.1:9001"),
                Value::text("https://b.example")
            ]))
        );
        let e = c.set("remote_nodes", "127.0.0.1:9001").unwrap_err();
        assert!(e.to_string().contains("`127.0.0.1:9001`"), "{e}");
    }

    #[test]
    fn nested_flat_keys_make_nested_messages() {
        let mut c = NodeConfig::default();
        let text = "routes/1/template: /~meta@1.0/.*\nroutes/1/node/prefix: http://127.0.0.1:9\n\
                    on/request/device: router@1.0\non/request/path: preprocess\n";
        for (k, v) in parse_flat(text) {
            c.set(&k, &v).unwrap();
        }
        let m = c.node_message(None);
        let routes = m.get("routes").and_then(Value::as_message).unwrap();
        let first = routes.get("1").and_then(Value::as_message).unwrap();
        assert_eq!(first.get_str("template"), Some("/~meta@1.0/.*"));
        assert_eq!(
            first
                .get("node")
                .and_then(Value::as_message)
                .and_then(|n| n.get_str("prefix")),
            Some("http://127.0.0.1:9")
        );
        let on = m.get("on").and_then(Value::as_message).unwrap();
        let request = on.get("request").and_then(Value::as_message).unwrap();
        assert_eq!(request.get_str("device"), Some("router@1.0"));
        assert_eq!(request.get_str("path"), Some("preprocess"));
    }

    #[test]
    fn toml_gives_the_same_node_message_as_config_flat() {
        let dir = tempfile::tempdir().unwrap();
        let flat = dir.path().join("config.flat");
        std::fs::write(
            &flat,
            "port: 1234\nawait-inprogress: false\nroutes/1/template: /a\n\
             routes/1/node/prefix: http://127.0.0.1:9\nroutes/2/template: /b\n\
             routes/2/node/prefix: http://127.0.0.1:10\n",
        )
        .unwrap();
        let toml = dir.path().join("node.toml");
        std::fs::write(
            &toml,
            "port = 1234\nawait-inprogress = false\n\n\
             [[routes]]\ntemplate = \"/a\"\nnode = { prefix = \"http://127.0.0.1:9\" }\n\n\
             [[routes]]\ntemplate = \"/b\"\n[routes.node]\nprefix = \"http://127.0.0.1:10\"\n",
        )
        .unwrap();
        let (mut a, mut b) = (NodeConfig::default(), NodeConfig::default());
        a.load_file(&flat).unwrap();
        b.load_file(&toml).unwrap();
        assert_eq!(b.port, 1234);
        assert_eq!(a, b);
        assert_eq!(a.node_message(None), b.node_message(None));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "port = [").unwrap();
        let err = NodeConfig::default().load_file(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
        assert!(err.to_string().contains("not TOML"), "{err}");
    }
}
