//! Helpers shared by the integration tests: fixtures, the aos strings of spec 06
//! §2.5.4, and an import handler that records its calls.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::sync::{Arc, Mutex, OnceLock};

use hb_wasm::{Engine, EngineConfig, ImportFunc, ImportResult, Imports, MemoryView, Module, Value};

/// The shared fixtures directory (beside the repository, as in CI).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");

/// The bytes of a fixture; panics with a clear message when it is missing.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("fixture {name} is missing ({path}: {e}); the tests need shared/fixtures beside the repository")
    })
}

/// One engine per test binary (compiled modules are cached in it).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(EngineConfig::default()).expect("engine"))
}

/// A fixture loaded into the shared engine.
pub fn module(name: &str) -> Module {
    engine().load(&fixture(name)).expect("module loads")
}

/// `ENV` of spec 06 §2.5.4.
pub const ENV: &str = r#"{"Process":{"Id":"AOS","Owner":"FOOBAR","Tags":[{"name":"Name","value":"Thomas"}, {"name":"Authority","value":"FOOBAR"}]}}"#;

/// `MSG(c)` of spec 06 §2.5.4.
pub fn msg(code: &str) -> String {
    let mut data = String::new();
    for c in code.chars() {
        match c {
            '"' => data.push_str("\\\""),
            '\\' => data.push_str("\\\\"),
            '\n' => data.push_str("\\n"),
            '\t' => data.push_str("\\t"),
            c if (c as u32) < 0x20 => data.push_str(&format!("\\u{:04x}", c as u32)),
            c => data.push(c),
        }
    }
    format!(
        r#"{{"From":"FOOBAR","Block-Height":"1","Target":"AOS","Owner":"FOOBAR","Id":"1","Module":"W","Tags":[{{"name":"Action","value":"Eval"}}],"Data":"{data}"}}"#
    )
}

/// What the recording imports saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// `module.name` of every call, in order.
    pub calls: Vec<String>,
    /// Bytes written to fd 1.
    pub stdout: Vec<u8>,
}

/// Imports for the aos modules: `clock_time_get` answers errno 1 and writes nothing
/// (spec 06 §2.4.4), `fd_write` appends to a captured stdout (wasm32 or wasm64
/// iovecs), everything else is the zero stub. Every call is recorded.
pub fn recording_imports() -> (impl Imports, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let imports = move |f: &ImportFunc, args: &[Value], mem: &mut MemoryView<'_>| -> ImportResult {
        let mut seen = log.lock().expect("lock");
        seen.calls.push(format!("{}.{}", f.module, f.name));
        match (f.module.as_str(), f.name.as_str()) {
            ("wasi_snapshot_preview1", "clock_time_get") => Ok(Some(vec![Value::I32(1)])),
            ("wasi_snapshot_preview1", "fd_write") => {
                let addr = |v: &Value| v.as_address().unwrap_or_default();
                let (iovs, n, out) = (addr(&args[1]), addr(&args[2]), addr(&args[3]));
                let width = if mem.is_memory64() { 8 } else { 4 };
                let mut total = 0u64;
                for i in 0..n {
                    let at = iovs + i * 2 * width;
                    let buf = mem.read_pointer(at)?;
                    let len = mem.read_pointer(at + width)?;
                    let bytes = mem.read(buf, len)?.to_vec();
                    if addr(&args[0]) == 1 {
                        seen.stdout.extend_from_slice(&bytes);
                    }
                    total += len;
                }
                mem.write_pointer(out, total)?;
                Ok(Some(vec![Value::I32(0)]))
            }
            _ => Ok(None),
        }
    };
    (imports, seen)
}
