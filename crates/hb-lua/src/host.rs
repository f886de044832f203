//! The host side of the engine module's imports: the Emscripten-style setjmp/longjmp
//! trampoline, a deterministic WASI preview1 shim, and the `hb` module (host calls,
//! captured output).
//!
//! Every import the module has is bound here; [`crate::LuaEngine::new`] fails if the
//! module asks for anything else.

use std::sync::Arc;

use wasmtime::{Caller, Global, Linker, Memory, Ref, StoreLimits, Table, TypedFunc, Val};

use crate::error::HostCallError;
use crate::value::{self, LuaValue};

/// Fuel charged for each `_hb.call`, on top of one unit per byte crossing the
/// boundary: host work is otherwise free for the guest.
pub const HOST_CALL_FUEL: u64 = 10_000;

/// A callback for `_hb.call(...)` in Lua: receives the arguments, returns the results
/// (or an error, see [`HostCallError`]). Runs on the thread that called into Lua; it
/// cannot call back into the same instance.
pub trait HostCall: Send + 'static {
    /// Answers one `_hb.call`.
    fn call(&mut self, args: Vec<LuaValue>) -> Result<Vec<LuaValue>, HostCallError>;
}

impl<F> HostCall for F
where
    F: FnMut(Vec<LuaValue>) -> Result<Vec<LuaValue>, HostCallError> + Send + 'static,
{
    fn call(&mut self, args: Vec<LuaValue>) -> Result<Vec<LuaValue>, HostCallError> {
        self(args)
    }
}

/// The default callback: every `_hb.call` raises a Lua error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHost;

impl HostCall for NoHost {
    fn call(&mut self, _: Vec<LuaValue>) -> Result<Vec<LuaValue>, HostCallError> {
        Err(HostCallError::Lua(
            "no host functions are available to this Lua instance".into(),
        ))
    }
}

/// `env._emscripten_throw_longjmp`: unwinds the wasm frames to the nearest
/// `invoke_*` trampoline.
#[derive(Debug, thiserror::Error)]
#[error("longjmp with no setjmp to land in")]
pub(crate) struct LongJmp;

/// A host callback aborted the call.
#[derive(Debug, thiserror::Error)]
#[error("host call aborted: {0}")]
pub(crate) struct Aborted(pub String);

/// `proc_exit` was called.
#[derive(Debug, thiserror::Error)]
#[error("the module called proc_exit({0})")]
pub(crate) struct Exited(pub i32);

/// A function `invoke_vii` calls: `void (*)(lua_State *, void *)`.
pub(crate) type InvokeTarget = TypedFunc<(i32, i32), ()>;

/// The store's data.
pub(crate) struct HostState {
    pub limits: StoreLimits,
    /// Set right after instantiation.
    pub memory: Option<Memory>,
    pub table: Option<Table>,
    pub stack_pointer: Option<Global>,
    /// `print`/`io.write` output (and anything written to fd 1/2).
    pub output: Vec<u8>,
    pub output_limit: usize,
    /// WASI realtime clock (`os.time`, `os.date`), nanoseconds since the epoch.
    pub time_ns: u64,
    /// WASI monotonic and CPU clocks (`os.clock`), nanoseconds.
    pub clock_ns: u64,
    pub host: Box<dyn HostCall>,
    /// The encoded reply of the last host call, until `host_result` copies it.
    pub pending: Vec<u8>,
    /// `invoke_vii`'s view of the function table, by index (filled on first use).
    /// (`Arc`: cloning a `TypedFunc` clones its registered type, which is not cheap.)
    pub invoke_cache: Vec<Option<Arc<InvokeTarget>>>,
}

impl HostState {
    pub fn new(limits: StoreLimits, output_limit: usize) -> Self {
        HostState {
            limits,
            memory: None,
            table: None,
            stack_pointer: None,
            output: Vec::new(),
            output_limit,
            time_ns: 0,
            clock_ns: 0,
            host: Box::new(NoHost),
            pending: Vec::new(),
            invoke_cache: Vec::new(),
        }
    }
}

// WASI errno values.
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTCAPABLE: i32 = 76;

fn memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the module has no memory"))
}

/// The `len` bytes at `ptr`, or `None` when out of bounds.
pub(crate) fn slice(data: &[u8], ptr: u32, len: u32) -> Option<&[u8]> {
    let start = ptr as usize;
    data.get(start..start.checked_add(len as usize)?)
}

/// Copies `bytes` to `ptr`; `false` (nothing written) when out of bounds.
pub(crate) fn write_bytes(data: &mut [u8], ptr: u32, bytes: &[u8]) -> bool {
    let start = ptr as usize;
    match start
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(start..end))
    {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Appends to the captured output; false (nothing appended) past the limit.
fn append_output(state: &mut HostState, bytes: &[u8]) -> bool {
    if state.output.len().saturating_add(bytes.len()) > state.output_limit {
        return false;
    }
    state.output.extend_from_slice(bytes);
    true
}

/// Binds every import of the engine module.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    // --- setjmp/longjmp (Emscripten-style lowering, see c/sjlj.c) ---
    linker.func_wrap(
        "env",
        "invoke_vii",
        |mut caller: Caller<'_, HostState>, index: i32, a: i32, b: i32| -> wasmtime::Result<()> {
            let (Some(table), Some(sp)) = (caller.data().table, caller.data().stack_pointer) else {
                return Err(wasmtime::Error::msg("invoke_vii before instantiation"));
            };
            let saved = sp.get(&mut caller);
            // The table is static (never written after instantiation): look each entry
            // up once. (Lua 5.3 resizes every table with a hash part under
            // luaD_rawrunprotected, so this is a hot path.)
            let slot = index as u32 as usize;
            let cached = caller.data().invoke_cache.get(slot).cloned().flatten();
            let typed = match cached {
                Some(f) => f,
                None => {
                    let func = match table.get(&mut caller, slot as u64) {
                        Some(Ref::Func(Some(f))) => f,
                        Some(_) => return Err(wasmtime::Trap::IndirectCallToNull.into()),
                        None => return Err(wasmtime::Trap::TableOutOfBounds.into()),
                    };
                    let typed =
                        Arc::new(func.typed::<(i32, i32), ()>(&caller)?) as Arc<InvokeTarget>;
                    let cache = &mut caller.data_mut().invoke_cache;
                    if cache.len() <= slot {
                        cache.resize(slot + 1, None);
                    }
                    cache[slot] = Some(typed.clone());
                    typed
                }
            };
            match typed.call(&mut caller, (a, b)) {
                Ok(()) => Ok(()),
                // A longjmp: setThrew already recorded the target; put the stack back
                // and return, the caller's lowered code dispatches to its setjmp.
                Err(e) if e.is::<LongJmp>() => {
                    sp.set(&mut caller, saved)?;
                    Ok(())
                }
                // Traps (fuel, out of bounds, aborts) are never swallowed.
                Err(e) => Err(e),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "_emscripten_throw_longjmp",
        |_: Caller<'_, HostState>| -> wasmtime::Result<()> { Err(wasmtime::Error::new(LongJmp)) },
    )?;

    // --- hb: host calls and output ---
    linker.func_wrap(
        "hb",
        "output",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let mem = memory(&mut caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let bytes = slice(data, ptr as u32, len as u32)
                .ok_or_else(|| wasmtime::Error::msg("hb.output: out of bounds"))?;
            Ok(if append_output(state, bytes) { 0 } else { 1 })
        },
    )?;
    linker.func_wrap(
        "hb",
        "host_call",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let mem = memory(&mut caller)?;
            let args = {
                let data = mem.data(&caller);
                let bytes = slice(data, ptr as u32, len as u32)
                    .ok_or_else(|| wasmtime::Error::msg("hb.host_call: out of bounds"))?;
                value::decode_list(bytes)
            };
            let mut reply = Vec::new();
            match args {
                Err(e) => {
                    reply.push(1);
                    reply.extend_from_slice(format!("_hb.call: {e}").as_bytes());
                }
                Ok(args) => match caller.data_mut().host.call(args) {
                    Ok(results) => {
                        reply.push(0);
                        if let Err(e) = value::encode_list(&results, &mut reply) {
                            reply.clear();
                            reply.push(1);
                            reply.extend_from_slice(format!("_hb.call: {e}").as_bytes());
                        }
                    }
                    Err(HostCallError::Lua(message)) => {
                        reply.push(1);
                        reply.extend_from_slice(message.as_bytes());
                    }
                    Err(HostCallError::Abort(message)) => {
                        return Err(wasmtime::Error::new(Aborted(message)));
                    }
                },
            }
            if reply.len() > i32::MAX as usize / 2 {
                reply.clear();
                reply.push(1);
                reply.extend_from_slice(b"_hb.call: the reply is too large");
            }
            // Host work is free for the guest: charge for it.
            let cost = HOST_CALL_FUEL + len as u32 as u64 + reply.len() as u64;
            if let Ok(fuel) = caller.get_fuel() {
                caller.set_fuel(fuel.saturating_sub(cost))?;
            }
            let n = reply.len() as i32;
            caller.data_mut().pending = reply;
            Ok(n)
        },
    )?;
    linker.func_wrap(
        "hb",
        "host_result",
        |mut caller: Caller<'_, HostState>, dst: i32| -> wasmtime::Result<()> {
            let mem = memory(&mut caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let reply = std::mem::take(&mut state.pending);
            if !write_bytes(data, dst as u32, &reply) {
                return Err(wasmtime::Error::msg("hb.host_result: out of bounds"));
            }
            Ok(())
        },
    )?;

    link_wasi(linker)
}

/// WASI preview1, deterministic: clocks set by the host, no environment, no files, no
/// preopens, stdin at end of file, stdout/stderr captured, `proc_exit` a trap.
fn link_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    linker.func_wrap(
        W,
        "environ_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, size: i32| -> wasmtime::Result<i32> {
            let mem = memory(&mut caller)?;
            let data = mem.data_mut(&mut caller);
            let ok = write_bytes(data, count as u32, &0u32.to_le_bytes())
                && write_bytes(data, size as u32, &0u32.to_le_bytes());
            Ok(if ok { ESUCCESS } else { EFAULT })
        },
    )?;
    linker.func_wrap(W, "environ_get", |_: i32, _: i32| ESUCCESS)?;
    linker.func_wrap(
        W,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>,
         id: i32,
         _precision: i64,
         out: i32|
         -> wasmtime::Result<i32> {
            let t = match id {
                0 => caller.data().time_ns,      // REALTIME
                1..=3 => caller.data().clock_ns, // MONOTONIC, PROCESS/THREAD CPUTIME
                _ => return Ok(EINVAL),
            };
            let mem = memory(&mut caller)?;
            let ok = write_bytes(mem.data_mut(&mut caller), out as u32, &t.to_le_bytes());
            Ok(if ok { ESUCCESS } else { EFAULT })
        },
    )?;
    linker.func_wrap(W, "fd_close", |_: i32| EBADF)?;
    linker.func_wrap(W, "fd_fdstat_get", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(W, "fd_fdstat_set_flags", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(W, "fd_prestat_get", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(W, "fd_prestat_dir_name", |_: i32, _: i32, _: i32| EBADF)?;
    linker.func_wrap(W, "fd_renumber", |_: i32, _: i32| EBADF)?;
    linker.func_wrap(W, "fd_seek", |_: i32, _: i64, _: i32, _: i32| EBADF)?;
    linker.func_wrap(
        W,
        "fd_read",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         _iovs: i32,
         _n: i32,
         nread: i32|
         -> wasmtime::Result<i32> {
            if fd != 0 {
                return Ok(EBADF);
            }
            let mem = memory(&mut caller)?;
            let ok = write_bytes(mem.data_mut(&mut caller), nread as u32, &0u32.to_le_bytes());
            Ok(if ok { ESUCCESS } else { EFAULT })
        },
    )?;
    linker.func_wrap(
        W,
        "fd_write",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         iovs: i32,
         n: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let mem = memory(&mut caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let mut total: u32 = 0;
            for i in 0..n.max(0) as u32 {
                let Some(iov) = slice(data, (iovs as u32).wrapping_add(i * 8), 8) else {
                    return Ok(EFAULT);
                };
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Some(bytes) = slice(data, ptr, len) else {
                    return Ok(EFAULT);
                };
                // Past the output limit the bytes are dropped (stdio has no error path
                // the glue could report).
                append_output(state, bytes);
                total = total.wrapping_add(len);
            }
            let ok = write_bytes(data, nwritten as u32, &total.to_le_bytes());
            Ok(if ok { ESUCCESS } else { EFAULT })
        },
    )?;
    linker.func_wrap(
        W,
        "path_open",
        |_: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| ENOTCAPABLE,
    )?;
    linker.func_wrap(W, "path_remove_directory", |_: i32, _: i32, _: i32| {
        ENOTCAPABLE
    })?;
    linker.func_wrap(
        W,
        "path_rename",
        |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ENOTCAPABLE,
    )?;
    linker.func_wrap(W, "path_unlink_file", |_: i32, _: i32, _: i32| ENOTCAPABLE)?;
    linker.func_wrap(W, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(Exited(code)))
    })?;
    Ok(())
}

/// The stack pointer's value.
pub(crate) fn get_sp(global: &Val) -> u32 {
    match global {
        Val::I32(v) => *v as u32,
        _ => 0,
    }
}
