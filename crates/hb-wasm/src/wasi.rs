//! `wasi@1.0`: WASI preview 1 for the WASM stack, over a virtual file system kept in
//! the state (spec 06 §2.4; the reference's `dev_wasi`).
//!
//! `init` mounts the device as the stdlib of the `wasi_snapshot_preview1` imports (at
//! the fixed path `wasm/stdlib/wasi_snapshot_preview1`: WASI works with the WASM
//! member's output prefix `wasm`), and sets the descriptors and the file system:
//!
//! ```text
//! file-descriptors = {"0": {filename: "/dev/stdin", offset: 0}, "1": …stdout, "2": …stderr}
//! vfs              = {dev: {stdin: "", stdout: "", stderr: ""}}
//! ```
//!
//! Files are binaries and directories messages, so the whole file system is part of
//! the state and survives serialisation. `compute` is the identity.
//!
//! The functions (wasm64 layouts; wasm32 modules get the 32-bit ones):
//!
//! * `fd_write` writes each iovec at the descriptor's offset (overwriting, extending),
//!   advances the offset and stores the total at `nwritten`;
//! * `fd_read` copies from the descriptor's offset into each iovec and stores the
//!   total at `nread`;
//! * `clock_time_get` answers errno 1 and writes nothing: no clock, for determinism;
//! * `path_open` opens (with `O_CREAT`, `O_EXCL`, `O_TRUNC`) a file of the VFS under
//!   a new descriptor;
//! * every other WASI import is the zero stub.
//!
//! During a wasm call these run natively, on the call's memory (the WASM device routes
//! `wasi_snapshot_preview1` imports here when this device is mounted). Resolved as
//! AO-Core keys (base: the mount with `state`, request: `args`) they answer
//! `{state, results}` like any stdlib device, using the instance of the state.

use hb_core::device::{Call, Device, DeviceResult, Outcome};
use hb_core::value::is_private;
use hb_core::{Ctx, Message, ResolveError, Value};

use crate::imports::Value as WasmValue;
use crate::wasm_64::{self, lookup, put};
use crate::{HostError, ImportResult, MemoryView};

/// The device's name.
pub const NAME: &str = "wasi@1.0";

/// The largest file the VFS holds (a write past it fails with `EFBIG`).
pub const MAX_FILE_BYTES: usize = 64 << 20;

/// WASI errno values used here.
mod errno {
    pub const SUCCESS: i32 = 0;
    /// What `clock_time_get` answers (spec 06 §2.4.4).
    pub const NO_CLOCK: i32 = 1;
    pub const BADF: i32 = 8;
    pub const EXIST: i32 = 20;
    pub const FBIG: i32 = 22;
    pub const INVAL: i32 = 28;
    pub const ISDIR: i32 = 31;
    pub const NOENT: i32 = 44;
    pub const NOTDIR: i32 = 54;
}

/// `path_open`'s `oflags`.
const O_CREAT: u64 = 1;
const O_EXCL: u64 = 4;
const O_TRUNC: u64 = 8;

/// The `wasi@1.0` device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wasi;

impl Device for Wasi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn functions(&self) -> &'static [&'static str] {
        &[
            "init",
            "compute",
            "fd_write",
            "fd_read",
            "clock_time_get",
            "path_open",
        ]
    }

    fn call(&self, call: Call<'_>, base: &Message, req: &Message, _ctx: &Ctx) -> DeviceResult {
        match call.key() {
            "init" => Ok(Outcome::ok(init(base))),
            "compute" => Ok(Outcome::ok(base.clone())),
            f @ ("fd_write" | "fd_read" | "clock_time_get" | "path_open") => {
                Ok(as_stdlib(f, base, req))
            }
            other => Err(ResolveError::call(NAME, other, "no such function")),
        }
    }
}

/// The state after `init` (spec 06 §2.4.1).
fn init(base: &Message) -> Message {
    let mut state = base.clone();
    put(
        &mut state,
        "wasm/stdlib/wasi_snapshot_preview1",
        Some(Value::Message(Message::new().with("device", NAME))),
    );
    let fd =
        |name: &str| Value::Message(Message::new().with("filename", name).with("offset", 0i64));
    put(
        &mut state,
        "file-descriptors",
        Some(Value::Message(
            Message::new()
                .with("0", fd("/dev/stdin"))
                .with("1", fd("/dev/stdout"))
                .with("2", fd("/dev/stderr")),
        )),
    );
    put(
        &mut state,
        "vfs",
        Some(Value::Message(
            Message::new().with(
                "dev",
                Message::new()
                    .with("stdin", "")
                    .with("stdout", "")
                    .with("stderr", ""),
            ),
        )),
    );
    state
}

/// What a state's stdout holds.
pub fn stdout(state: &Message) -> Option<&[u8]> {
    lookup(state, "vfs/dev/stdout").and_then(Value::as_bytes)
}

/// A function resolved through AO-Core: base `{state, …}` (the mount), request
/// `{args}`; answers `{state, results}`.
fn as_stdlib(func: &str, base: &Message, req: &Message) -> Outcome {
    let Some(Value::Message(state)) = base.get("state") else {
        return Outcome::error_status(400, "wasi@1.0: the base has no `state`.");
    };
    let args = match req.get_ci("args") {
        Some(v) => match wasm_64::numbers(v, "args") {
            Ok(a) => a,
            Err(o) => return o,
        },
        None => vec![],
    };
    let mut next = state.clone();
    let result = if func == "clock_time_get" {
        Ok(Ok(Some(vec![WasmValue::I32(errno::NO_CLOCK)])))
    } else {
        let Some(instance) = wasm_64::instance_of(state, "wasm") else {
            return Outcome::error_status(
                400,
                "wasi@1.0: the state has no instance at priv/wasm/instance.",
            );
        };
        instance.with_memory(|memory| native(func, &args, memory, &mut next))
    };
    match result {
        Ok(Ok(Some(values))) => Outcome::ok(Message::new().with("state", next).with(
            "results",
            Value::list(values.iter().map(wasm_64::from_wasm).collect()),
        )),
        Ok(Ok(None)) => Outcome::not_found(),
        Ok(Err(e)) => Outcome::error_status(500, &format!("wasi@1.0 {func}: {e}")),
        Err(e) => wasm_64::slot_error(&e),
    }
}

/// A WASI import on the memory of the running call; `Ok(None)` for the functions this
/// device leaves to the stub.
pub(crate) fn native(
    func: &str,
    args: &[WasmValue],
    memory: &mut MemoryView<'_>,
    state: &mut Message,
) -> ImportResult {
    let code = match func {
        "fd_write" => fd_write(args, memory, state)?,
        "fd_read" => fd_read(args, memory, state)?,
        "clock_time_get" => errno::NO_CLOCK,
        "path_open" => path_open(args, memory, state)?,
        _ => return Ok(None),
    };
    Ok(Some(vec![WasmValue::I32(code)]))
}

/// Argument `i` as an unsigned address or count.
fn arg(args: &[WasmValue], i: usize) -> Result<u64, HostError> {
    args.get(i)
        .and_then(WasmValue::as_address)
        .ok_or_else(|| HostError::new(format!("argument {} is missing or not an integer", i + 1)))
}

/// An open descriptor: its file's path in the VFS and its offset.
struct Descriptor {
    key: String,
    path: Vec<String>,
    offset: usize,
}

/// The descriptor `fd` of the state.
fn descriptor(state: &Message, fd: i64) -> Option<Descriptor> {
    let key = fd.to_string();
    let entry = lookup(state, &format!("file-descriptors/{key}"))?.as_message()?;
    let path = vfs_path(entry.get_ci("filename")?.as_str()?)?;
    let offset = entry
        .get_ci("offset")
        .and_then(Value::as_int)
        .and_then(|o| usize::try_from(o).ok())
        .unwrap_or(0);
    Some(Descriptor { key, path, offset })
}

/// A file name as VFS keys: `/dev/stdout` → `[dev, stdout]` (`.` dropped, `..` up to
/// the root). `None` for names that reach into private keys or are empty.
fn vfs_path(name: &str) -> Option<Vec<String>> {
    let mut parts: Vec<String> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p if is_private(p) => return None,
            p => parts.push(p.to_owned()),
        }
    }
    (!parts.is_empty()).then_some(parts)
}

fn vfs_key(path: &[String]) -> String {
    format!("vfs/{}", path.join("/"))
}

/// The iovecs at `iovs` (16 bytes each in memory64, 8 in wasm32).
fn iovecs(memory: &MemoryView<'_>, iovs: u64, count: u64) -> Result<Vec<(u64, u64)>, HostError> {
    let width = if memory.is_memory64() { 8 } else { 4 };
    let total = count
        .checked_mul(2 * width)
        .filter(|t| *t <= memory.size())
        .ok_or_else(|| HostError::new("iovec count out of range"))?;
    let _ = memory.read(iovs, total)?;
    (0..count)
        .map(|i| {
            let at = iovs + i * 2 * width;
            Ok((memory.read_pointer(at)?, memory.read_pointer(at + width)?))
        })
        .collect()
}

/// `fd_write(fd, iovs, iovs_len, nwritten)` (spec 06 §2.4.2).
fn fd_write(
    args: &[WasmValue],
    memory: &mut MemoryView<'_>,
    state: &mut Message,
) -> Result<i32, HostError> {
    let fd = args.first().and_then(WasmValue::as_i64).unwrap_or(-1);
    let (iovs, count, nwritten) = (arg(args, 1)?, arg(args, 2)?, arg(args, 3)?);
    let Some(desc) = descriptor(state, fd) else {
        return Ok(errno::BADF);
    };
    let mut content = match lookup(state, &vfs_key(&desc.path)) {
        Some(Value::Binary(b)) => b.to_vec(),
        Some(Value::Message(_)) => return Ok(errno::ISDIR),
        _ => Vec::new(),
    };
    let mut offset = desc.offset;
    let mut total: u64 = 0;
    for (buf, len) in iovecs(memory, iovs, count)? {
        let bytes = memory.read(buf, len)?;
        let end = offset
            .checked_add(bytes.len())
            .filter(|e| *e <= MAX_FILE_BYTES);
        let Some(end) = end else {
            return Ok(errno::FBIG);
        };
        if content.len() < end {
            content.resize(end, 0);
        }
        content[offset..end].copy_from_slice(bytes);
        offset = end;
        total += len;
    }
    memory.write_pointer(nwritten, total)?;
    put(
        state,
        &vfs_key(&desc.path),
        Some(Value::from(bytes::Bytes::from(content))),
    );
    put(
        state,
        &format!("file-descriptors/{}/offset", desc.key),
        Some(Value::Integer(offset as i64)),
    );
    Ok(errno::SUCCESS)
}

/// `fd_read(fd, iovs, iovs_len, nread)` (spec 06 §2.4.3).
fn fd_read(
    args: &[WasmValue],
    memory: &mut MemoryView<'_>,
    state: &mut Message,
) -> Result<i32, HostError> {
    let fd = args.first().and_then(WasmValue::as_i64).unwrap_or(-1);
    let (iovs, count, nread) = (arg(args, 1)?, arg(args, 2)?, arg(args, 3)?);
    let Some(desc) = descriptor(state, fd) else {
        return Ok(errno::BADF);
    };
    let content = match lookup(state, &vfs_key(&desc.path)) {
        Some(Value::Binary(b)) => b.clone(),
        Some(Value::Message(_)) => return Ok(errno::ISDIR),
        _ => bytes::Bytes::new(),
    };
    let mut offset = desc.offset.min(content.len());
    let mut total: u64 = 0;
    for (buf, len) in iovecs(memory, iovs, count)? {
        let remaining = content.len() - offset;
        let n = usize::try_from(len).unwrap_or(usize::MAX).min(remaining);
        memory.write(buf, &content[offset..offset + n])?;
        offset += n;
        total += n as u64;
        if n == 0 {
            break;
        }
    }
    memory.write_pointer(nread, total)?;
    put(
        state,
        &format!("file-descriptors/{}/offset", desc.key),
        Some(Value::Integer(offset as i64)),
    );
    Ok(errno::SUCCESS)
}

/// `path_open(dirfd, dirflags, path, path_len, oflags, rights_base,
/// rights_inheriting, fdflags, opened_fd)` over the VFS (spec 06 §2.4.5 leaves the
/// form to the node): paths are relative to the VFS root.
fn path_open(
    args: &[WasmValue],
    memory: &mut MemoryView<'_>,
    state: &mut Message,
) -> Result<i32, HostError> {
    if args.len() < 9 {
        return Ok(errno::INVAL);
    }
    let (path_ptr, path_len, oflags, opened) =
        (arg(args, 2)?, arg(args, 3)?, arg(args, 4)?, arg(args, 8)?);
    let Ok(name) = std::str::from_utf8(memory.read(path_ptr, path_len)?).map(str::to_owned) else {
        return Ok(errno::INVAL);
    };
    let Some(path) = vfs_path(&name) else {
        return Ok(errno::NOENT);
    };
    let (dir, _) = path.split_at(path.len() - 1);
    if !dir.is_empty() {
        match lookup(state, &vfs_key(dir)) {
            Some(Value::Message(_)) => {}
            Some(_) => return Ok(errno::NOTDIR),
            None => return Ok(errno::NOENT),
        }
    }
    match lookup(state, &vfs_key(&path)) {
        Some(Value::Message(_)) => return Ok(errno::ISDIR),
        Some(_) if oflags & O_CREAT != 0 && oflags & O_EXCL != 0 => return Ok(errno::EXIST),
        Some(_) if oflags & O_TRUNC != 0 => {
            put(state, &vfs_key(&path), Some(Value::text("")));
        }
        Some(_) => {}
        None if oflags & O_CREAT != 0 => {
            put(state, &vfs_key(&path), Some(Value::text("")));
        }
        None => return Ok(errno::NOENT),
    }
    let used: Vec<i64> = match lookup(state, "file-descriptors") {
        Some(Value::Message(m)) => m.keys().filter_map(|k| k.parse().ok()).collect(),
        _ => vec![],
    };
    let fd = (3i64..).find(|n| !used.contains(n)).unwrap_or(3);
    let width_ok = u32::try_from(fd).is_ok();
    if !width_ok {
        return Ok(errno::INVAL);
    }
    memory.write_u32(opened, fd as u32)?;
    put(
        state,
        &format!("file-descriptors/{fd}"),
        Some(Value::Message(
            Message::new()
                .with("filename", format!("/{}", path.join("/")))
                .with("offset", 0i64),
        )),
    );
    Ok(errno::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vfs_paths() {
        assert_eq!(
            vfs_path("/dev/stdout"),
            Some(vec!["dev".to_owned(), "stdout".to_owned()])
        );
        assert_eq!(vfs_path("a/./b/../c"), Some(vec!["a".into(), "c".into()]));
        assert_eq!(vfs_path("/"), None);
        assert_eq!(vfs_path("/priv/x"), None);
    }
}
