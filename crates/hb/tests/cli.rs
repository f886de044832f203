//! The `hb` binary as a newcomer uses it: `hb resolve` and `hb serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn hb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hb"))
}

#[test]
fn resolve_prints_the_value() {
    let out = hb()
        .args(["resolve", "/~message@1.0&a+integer=7/a"])
        .output()
        .expect("run hb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "7\n");
}

#[test]
fn resolve_reports_missing_keys_and_bad_paths() {
    let out = hb()
        .args(["resolve", "/~message@1.0&a=1/b"])
        .output()
        .expect("run hb");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "not_found");
    let out = hb().args(["resolve", "/a%ZZ"]).output().expect("run hb");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid path"));
}

#[test]
fn resolve_messages_print_as_json() {
    let out = hb()
        .args(["resolve", "/~message@1.0&a=1&b+integer=2"])
        .output()
        .expect("run hb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["a"], "1");
    assert_eq!(v["b"], "2");
    assert_eq!(v["device"], "message@1.0");
}

#[test]
fn bad_config_values_are_clear_errors() {
    let out = hb()
        .args(["serve", "--port", "0", "--set", "mode=fast"])
        .output()
        .expect("run hb");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`mode`") && err.contains("fast"), "{err}");
}

/// Starts `hb serve --port 0` (no gateway: tests stay off the network) with extra
/// arguments; returns the child and its address.
fn serve(extra: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    let mut child = hb()
        .args(["serve", "--port", "0", "--gateway", "none"])
        .args(extra)
        .env("HB_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hb serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("address line")
        .to_owned();
    (child, addr)
}

/// One GET on a fresh connection; the whole response as text.
fn http_get(addr: &str, target: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp
}

#[test]
fn serve_answers_http_and_creates_its_wallet() {
    let dir = std::env::temp_dir().join(format!("hb-cli-test-{}", std::process::id()));
    let (mut child, addr) = serve(&["--data-dir".as_ref(), dir.as_os_str()]);
    let resp = http_get(&addr, "/~message@1.0&greeting=Hello&count+integer=42/count");
    let address = http_get(&addr, "/~meta@1.0/info/address");
    child.kill().expect("stop hb by pid");
    let _ = child.wait();
    let key = dir.join("hyperbeam-key.json");
    let wallet = hb()
        .args(["wallet", "address"])
        .arg(&key)
        .output()
        .expect("run hb");
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&key)
            .expect("wallet file")
            .permissions()
            .mode()
            & 0o777
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n42"), "{resp}");
    let expected = String::from_utf8_lossy(&wallet.stdout).trim().to_owned();
    assert_eq!(expected.len(), 43);
    assert!(
        address.ends_with(&format!("\r\n\r\n{expected}")),
        "{address}"
    );
    #[cfg(unix)]
    assert_eq!(mode, 0o600);
}

#[test]
fn serve_uses_the_wallet_it_is_given() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-1.json"
    );
    let dir = std::env::temp_dir().join(format!("hb-cli-test-w-{}", std::process::id()));
    let (mut child, addr) = serve(&[
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--wallet".as_ref(),
        key.as_ref(),
    ]);
    let address = http_get(&addr, "/~meta@1.0/info/address");
    child.kill().expect("stop hb by pid");
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        address.ends_with("\r\n\r\nvcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4"),
        "{address}"
    );
}

#[test]
fn wallet_address_prints_the_fixture_address() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-1.json"
    );
    let out = hb()
        .args(["wallet", "address", key])
        .output()
        .expect("run hb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4\n"
    );
    let out = hb()
        .args(["wallet", "address", "/nonexistent/key.json"])
        .output()
        .expect("run hb");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the key file"));
}

#[test]
fn wallet_new_creates_a_private_key_file_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("hb-cli-wallet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("wallet.json");
    let out = hb()
        .args(["wallet", "new"])
        .arg(&file)
        .output()
        .expect("run hb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(address.len(), 43);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = hb()
        .args(["wallet", "address"])
        .arg(&file)
        .output()
        .expect("run hb");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), address);
    let before = std::fs::read(&file).expect("read");
    let out = hb()
        .args(["wallet", "new"])
        .arg(&file)
        .output()
        .expect("run hb");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&file).expect("read"), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn message_id_reads_json_from_stdin() {
    let id = |input: &str, args: &[&str]| {
        let mut all = vec!["id"];
        all.extend_from_slice(args);
        message_cmd(&all, input)
    };
    let out = id(r#"{"a":"1"}"#, &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "N0nIQ3Vna7YDxuRsaVTYeYS4glkmxD4HrUbZIwIvN_s\n"
    );
    // spec 01 §12.3: {a:"1", b:2}, here in its JSON (TABM) form, in every mode.
    for mode in ["all", "signed", "none"] {
        let out = id(
            r#"{"a":"1","ao-types":"b=\"integer\"","b":"2"}"#,
            &["--mode", mode],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "aU8BUmgbZw0qlfQ-AZEy7EQwp1d7UaOHcRIOWvA17LE\n",
            "{mode}"
        );
    }
    let out = id("not json", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid JSON"));
}

/// Runs `hb message …` with `input` on standard input.
fn message_cmd(args: &[&str], input: &str) -> std::process::Output {
    message_cmd_bytes(args, input.as_bytes())
}

/// [`message_cmd`] with binary input.
fn message_cmd_bytes(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = hb()
        .arg("message")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hb");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    child.wait_with_output().expect("wait")
}

#[test]
fn message_commit_verify_and_convert() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-1.json"
    );
    let input = r#"{"a":"1","ao-types":"b=\"integer\"","b":"2"}"#;
    let signed = message_cmd(&["commit", "--wallet", key], input);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let signed = String::from_utf8_lossy(&signed.stdout).into_owned();
    assert!(
        signed.contains("vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4"),
        "{signed}"
    );
    let ok = message_cmd(&["verify"], &signed);
    assert_eq!(
        (ok.status.code(), String::from_utf8_lossy(&ok.stdout).trim()),
        (Some(0), "true")
    );
    let tampered = signed.replacen("\"a\": \"1\"", "\"a\": \"2\"", 1);
    assert_ne!(tampered, signed);
    let bad = message_cmd(&["verify"], &tampered);
    assert_eq!(
        (
            bad.status.code(),
            String::from_utf8_lossy(&bad.stdout).trim()
        ),
        (Some(1), "false")
    );
    // The content's own ID is unchanged by signing.
    let none = message_cmd(&["id", "--mode", "none"], &signed);
    assert_eq!(
        String::from_utf8_lossy(&none.stdout).trim(),
        "aU8BUmgbZw0qlfQ-AZEy7EQwp1d7UaOHcRIOWvA17LE"
    );
    let flat = message_cmd(
        &["convert", "--to", "flat@1.0"],
        r#"{"a":"1","n":{"b":"2"}}"#,
    );
    assert_eq!(String::from_utf8_lossy(&flat.stdout), "a: 1\nn/b: 2\n");
}

/// `--from`/`--to` every codec: ANS-104 items and httpsig text signed, verified,
/// tampered and converted.
#[test]
fn message_codecs_from_and_to() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-1.json"
    );
    let input = r#"{"Greeting":"Hello","data":"some data"}"#;
    // ANS-104: a signed item, verified, then tampered.
    let item = message_cmd(
        &[
            "commit",
            "--wallet",
            key,
            "--device",
            "ans104@1.0",
            "--to",
            "ans104@1.0",
        ],
        input,
    );
    assert!(
        item.status.success(),
        "{}",
        String::from_utf8_lossy(&item.stderr)
    );
    let item = item.stdout;
    assert_eq!(&item[..2], &[1, 0], "signature type 1");
    let ok = message_cmd_bytes(&["verify", "--from", "ans104@1.0"], &item);
    assert_eq!(
        (ok.status.code(), String::from_utf8_lossy(&ok.stdout).trim()),
        (Some(0), "true")
    );
    let mut bad = item.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let no = message_cmd_bytes(&["verify", "--from", "ans104@1.0"], &bad);
    assert_eq!(
        (no.status.code(), String::from_utf8_lossy(&no.stdout).trim()),
        (Some(1), "false")
    );
    // The item's ID is its commitment's: sha256(signature).
    let id = message_cmd_bytes(&["id", "--from", "ans104@1.0"], &item);
    let sig = &item[2..514];
    let want = hb_core::id::Id::sha256(sig).to_human();
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), want);
    // Its content as httpsig text (tag names lower-cased, `data` inline).
    let http = message_cmd_bytes(
        &["convert", "--from", "ans104@1.0", "--to", "httpsig@1.0"],
        &item,
    );
    let http = String::from_utf8_lossy(&http.stdout).into_owned();
    assert!(
        http.contains("greeting: Hello\n") && http.ends_with("\nsome data"),
        "{http}"
    );
    // httpsig text: signed, verified, tampered, converted back to JSON.
    let signed = message_cmd(&["commit", "--wallet", key, "--to", "httpsig@1.0"], input);
    let signed = String::from_utf8_lossy(&signed.stdout).into_owned();
    assert!(
        signed.contains("signature-input: http-sig-c68f7b82569eb48e="),
        "{signed}"
    );
    let ok = message_cmd(&["verify", "--from", "httpsig@1.0"], &signed);
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "true", "{ok:?}");
    let no = message_cmd(
        &["verify", "--from", "httpsig@1.0"],
        &signed.replace("greeting: Hello", "greeting: Hullo"),
    );
    assert_eq!(
        (no.status.code(), String::from_utf8_lossy(&no.stdout).trim()),
        (Some(1), "false")
    );
    assert!(String::from_utf8_lossy(&no.stderr).contains("does not verify"));
    let json = message_cmd(
        &["convert", "--from", "httpsig@1.0", "--to", "json@1.0"],
        &signed,
    );
    let json = String::from_utf8_lossy(&json.stdout).into_owned();
    assert!(
        json.contains("\"greeting\": \"Hello\"") && json.contains("commitments"),
        "{json}"
    );
    // flat text in, JSON out.
    let back = message_cmd(
        &["convert", "--from", "flat@1.0", "--to", "json@1.0"],
        "a: 1\nn/b: 2\n",
    );
    let back = String::from_utf8_lossy(&back.stdout).into_owned();
    assert!(back.contains("\"b\": \"2\""), "{back}");
    // An unknown codec is a clear error.
    let err = message_cmd(&["convert", "--from", "nope@1.0", "--to", "json@1.0"], "{}");
    assert!(String::from_utf8_lossy(&err.stderr).contains("--from nope@1.0"));
}

// --- `hb store ls` / `hb store get` ---

/// A fresh data directory for one test.
fn store_test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hb-cli-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn store_cmd(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    hb().arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("HB_LOG", "warn")
        .output()
        .expect("run hb store")
}

fn key1() -> hb_codec::Wallet {
    hb_codec::Wallet::from_jwk_json(include_bytes!("../../../tests/fixtures/key-1.json"))
        .expect("key-1")
}

#[test]
fn store_ls_and_get_show_what_the_node_keeps() {
    use hb_core::{Message, Value};
    let dir = store_test_dir("ls-get");
    let msg = Message::new()
        .with("a", "1")
        .with("big", "z".repeat(200))
        .with("n", 42i64)
        .with("nested", Message::new().with("x", "y"));
    let raw: &[u8] = &[0xff, 0x00, 0xfe, b'\n'];
    let (id, signed_u, signed_id, commitment_ids, data);
    {
        // Written as the node writes: the message cache over LMDB in <data-dir>/store.
        let store =
            hb_store::LmdbStore::open(dir.join("store"), hb_store::Durability::Sync).unwrap();
        let cache = hb_store::MessageCache::new(std::sync::Arc::new(store));
        id = cache.write(&msg).unwrap().to_human();
        let signed =
            hb_codec::httpsig_commit::commit(&Message::new().with("k", "v"), &key1()).unwrap();
        signed_u = cache.write(&signed).unwrap().to_human();
        signed_id = hb_core::httpsig::message_id(&signed).unwrap().to_human();
        commitment_ids = signed
            .get("commitments")
            .and_then(Value::as_message)
            .unwrap()
            .keys()
            .map(|k| k.to_string())
            .collect::<Vec<_>>();
        data = cache.write_binary(&bytes::Bytes::from_static(raw)).unwrap();
        // A message that cannot be JSON (a binary that is not UTF-8).
        cache
            .write(&Message::new().with("bin", Value::bin(raw.to_vec())))
            .unwrap();
    }
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    // The root: groups with `/`, commitment IDs as links to their message.
    let out = store_cmd(&dir, &["ls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = text(&out).lines().map(str::to_owned).collect();
    assert!(lines.contains(&"data/".to_owned()), "{lines:?}");
    assert!(lines.contains(&format!("{id}/")), "{lines:?}");
    // A commitment ID is a link to a group holding the signed message.
    assert!(
        lines.iter().any(|l| commitment_ids.iter().any(|c| {
            [&signed_u, &signed_id]
                .iter()
                .any(|to| *l == format!("{c} -> {to}/"))
        })),
        "{lines:?}"
    );
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "sorted");

    // A message: an entry per key — small values in place, larger ones and nested
    // messages links.
    let out = store_cmd(&dir, &["ls", &id]);
    let listing = text(&out);
    assert!(listing.lines().any(|l| l == "a"), "{listing}");
    assert!(listing.contains("big -> data/"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("nested -> ") && l.ends_with('/')),
        "{listing}"
    );

    // get: a message as JSON, by uncommitted and by commitment ID.
    let out = store_cmd(&dir, &["get", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (v["a"].as_str(), v["nested"]["x"].as_str()),
        (Some("1"), Some("y"))
    );
    assert_eq!(v["n"], "42");
    let out = store_cmd(&dir, &["get", &signed_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["k"], "v");
    assert!(v["commitments"].is_object());
    // A key of a message, and bytes, raw.
    let out = store_cmd(&dir, &["get", &format!("{id}/nested/x")]);
    assert_eq!(out.stdout, b"y");
    let out = store_cmd(&dir, &["get", &data]);
    assert_eq!(out.stdout, raw, "bytes exactly");
    // Another codec on request; httpsig text when JSON cannot hold the message.
    let out = store_cmd(&dir, &["get", &id, "--to", "flat@1.0"]);
    assert!(text(&out).contains("nested/x: y"), "{}", text(&out));

    // Misses: exit 1, the path named.
    let out = store_cmd(&dir, &["get", "no/such/thing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "not found: no/such/thing"
    );
    // An ID may start with `-` (base64url): a path, not an option.
    let dashed = format!("-{}", &id[1..]);
    for cmd in ["get", "ls"] {
        let out = store_cmd(&dir, &[cmd, &dashed]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("not found: {dashed}")),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = store_cmd(&dir, &["ls", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found: nothing-here"));
    let missing = dir.join("absent");
    let out = store_cmd(&missing, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&missing.display().to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!missing.exists(), "hb store never creates a data directory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_get_prints_httpsig_text_for_messages_json_cannot_hold() {
    use hb_core::{Message, Value};
    let dir = store_test_dir("httpsig");
    let id;
    {
        let store =
            hb_store::LmdbStore::open(dir.join("store"), hb_store::Durability::Sync).unwrap();
        let cache = hb_store::MessageCache::new(std::sync::Arc::new(store));
        id = cache
            .write(
                &Message::new()
                    .with("bin", Value::bin(vec![0xff, 0xfe]))
                    .with("t", "ok"),
            )
            .unwrap()
            .to_human();
    }
    let out = store_cmd(&dir, &["get", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("t: ok"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real node: a `cache@1.0` write signed by a trusted writer is kept in the node's
/// store; after the node stops, `hb store get` prints it.
#[test]
fn cache_writes_through_a_node_are_kept_in_its_store() {
    let dir = store_test_dir("serve");
    let writers = format!("cache_writers={}", key1().address());
    let (mut child, addr) = serve(&[
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--set".as_ref(),
        writers.as_ref(),
    ]);
    let body = "kept by the node";
    let signed =
        hb_codec::httpsig_commit::commit(&hb_core::Message::new().with("body", body), &key1())
            .unwrap();
    let http = hb_core::httpsig::encode_rich(&signed).unwrap();
    let payload = http.body.map(|b| b.to_vec()).unwrap_or_default();
    let mut req = "POST /~cache@1.0/write HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_owned();
    for (k, v) in &http.headers {
        req.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", payload.len()));
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(&payload).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    child.kill().expect("stop hb by pid");
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let path = hb_core::cache::data_path(body.as_bytes());
    assert!(resp.contains(&format!("path: {path}")), "{resp}");
    let out = store_cmd(&dir, &["get", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), body);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hb serve` resumes the `cron@1.0` tasks kept in its store: an `every` task
/// registered before the node was killed runs again in the next node process.
#[test]
fn serve_resumes_stored_cron_tasks() {
    let dir = store_test_dir("cron");
    let test_id = format!("cli-cron-{}", std::process::id());
    let body = |resp: &str| resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    let count = |addr: &str| {
        let resp = http_get(
            addr,
            &format!("/~test-device@1.0/counter/count?test-id={test_id}"),
        );
        body(&resp).and_then(|b| b.parse::<u64>().ok())
    };
    let wait_for_runs = |addr: &str, n: u64| {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if count(addr).is_some_and(|c| c >= n) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    let args = ["--data-dir".as_ref(), dir.as_os_str()];

    let (mut child, addr) = serve(&args);
    let resp = http_get(
        &addr,
        &format!(
            "/~cron@1.0/every?interval=200-milliseconds&cron-path=/~test-device@1.0/increment_counter&test-id={test_id}"
        ),
    );
    let ran = wait_for_runs(&addr, 2);
    child.kill().expect("stop hb by pid");
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let task = body(&resp).unwrap_or_default();
    assert_eq!(task.len(), 43, "{resp}");
    assert!(ran, "the task ran in the first node");

    // A new process: its counters start at zero, so any count is the resumed task's.
    let (mut child, addr) = serve(&args);
    let resumed = wait_for_runs(&addr, 2);
    let stop = http_get(&addr, &format!("/~cron@1.0/stop?task={task}"));
    child.kill().expect("stop hb by pid");
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(resumed, "the stored task runs after the restart");
    assert!(stop.starts_with("HTTP/1.1 200"), "{stop}");
}

/// `remote_nodes`: a node asks another for the IDs its own store lacks. A process
/// spawned on node A is read by its ID at node B, which was started with
/// `--set remote_nodes=http://<A>`; a node without the setting answers 404.
#[test]
fn remote_nodes_are_read_through() {
    let dir_a = store_test_dir("remote-a");
    let dir_b = store_test_dir("remote-b");
    let dir_c = store_test_dir("remote-c");
    let (mut a, addr_a) = serve(&["--data-dir".as_ref(), dir_a.as_os_str()]);
    let remote = format!("remote_nodes=http://{addr_a}");
    let (mut b, addr_b) = serve(&[
        "--data-dir".as_ref(),
        dir_b.as_os_str(),
        "--set".as_ref(),
        remote.as_ref(),
    ]);
    let (mut c, addr_c) = serve(&["--data-dir".as_ref(), dir_c.as_os_str()]);

    let info = http_get(&addr_a, "/~meta@1.0/info/address");
    let scheduler = info.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut s = TcpStream::connect(&addr_a).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "POST /~process@1.0/schedule HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         device: process@1.0\r\ntype: Process\r\nexecution-device: test-device@1.0\r\n\
         scheduler: {scheduler}\r\nnonce: remote-nodes\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut spawned = String::new();
    s.read_to_string(&mut spawned).expect("read");
    let pid = spawned
        .lines()
        .find_map(|l| l.strip_prefix("process: "))
        .map(str::trim)
        .map(str::to_owned);
    let at_b = pid
        .as_ref()
        .map(|p| http_get(&addr_b, &format!("/{p}/execution-device")));
    let at_c = pid
        .as_ref()
        .map(|p| http_get(&addr_c, &format!("/{p}/type")));
    for child in [&mut a, &mut b, &mut c] {
        child.kill().expect("stop hb by pid");
        let _ = child.wait();
    }
    for d in [&dir_a, &dir_b, &dir_c] {
        let _ = std::fs::remove_dir_all(d);
    }
    assert!(spawned.starts_with("HTTP/1.1 200"), "{spawned}");
    let (at_b, at_c) = (at_b.expect("a process ID"), at_c.expect("a process ID"));
    assert!(at_b.starts_with("HTTP/1.1 200"), "{at_b}");
    assert!(at_b.ends_with("\r\n\r\ntest-device@1.0"), "{at_b}");
    assert!(at_c.starts_with("HTTP/1.1 404"), "{at_c}");
}
