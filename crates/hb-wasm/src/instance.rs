//! Instances: imports bound, calls under a budget, memory access and snapshots.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{
    Caller, Extern, ExternType, Func, FuncType, Global, Memory, Ref, ResourceLimiter, Store, Table,
    Tag, Val, ValType,
};

use crate::engine::Module;
use crate::error::{Trap, TrapKind, WasmError};
use crate::imports::{ImportFunc, Imports, MemoryView, Value, ValueType};

/// Fuel given to each call by default: about 0.3 s of compute-bound wasm on a current
/// x86-64 core. Wasmtime charges about one unit per instruction of the module as
/// compiled, after the load-time rewrites (the memory64 lowering adds eight to each
/// memory access: measured 34 per ns on aos, 13 without the lowering). An aos
/// `handle` of a small evaluation uses about 4.7 million, the first one (Lua's boot)
/// 146 million; a Lua loop of 10 million additions 10 billion.
pub const DEFAULT_FUEL_PER_CALL: u64 = 10_000_000_000;

/// Limits for one instance.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Largest size, in bytes, a linear memory of the instance may have (at
    /// instantiation or by growing). A `memory.grow` beyond it fails (the module sees
    /// -1, so `malloc` returns 0). Default 1 GiB.
    pub memory_limit: u64,
    /// Largest number of elements a table may have. Default 1,000,000.
    pub table_elements_limit: u64,
    /// Fuel for each call into the instance when the engine meters fuel (the budget
    /// is set anew for every call; imports consume none). Default
    /// [`DEFAULT_FUEL_PER_CALL`].
    pub fuel_per_call: u64,
    /// Wall-clock budget of each call when the engine has an epoch ticker
    /// ([`crate::EngineConfig::epoch_tick`]); ignored otherwise. Default 10 s.
    pub deadline: Duration,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            memory_limit: 1 << 30,
            table_elements_limit: 1_000_000,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            deadline: Duration::from_secs(10),
        }
    }
}

/// A live instance of a [`Module`], with its imports `I`.
///
/// # State after a failed call
///
/// When a call traps (budget, out-of-bounds access, `unreachable`, an import error,
/// an uncaught exception) the wasm frames are unwound and the instance stays usable:
/// its memory and globals are exactly as the trap left them, which for a program
/// interrupted in the middle of its work (aos in the middle of a Lua evaluation) may
/// be half-updated. The instance undoes what it can: it drops an uncaught exception
/// and, for emscripten modules (exports `emscripten_stack_get_current` and
/// `_emscripten_stack_restore`), puts the shadow-stack pointer back where it was
/// before the call. Further calls are allowed, and [`Instance::trapped`] stays true
/// to tell the caller that the state is the trap's. To get back to a known state,
/// restore the last snapshot ([`Instance::reset`]); this is what the process devices
/// do (spec 06 §2.2.4).
pub struct Instance<I: Imports> {
    module: Module,
    config: InstanceConfig,
    store: Store<HostState<I>>,
    instance: wasmtime::Instance,
    memory: Option<Memory>,
    trapped: bool,
    last_fuel: Option<u64>,
}

impl<I: Imports> fmt::Debug for Instance<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("module", &self.module)
            .field("config", &self.config)
            .field("trapped", &self.trapped)
            .finish_non_exhaustive()
    }
}

/// The store's data.
pub(crate) struct HostState<I> {
    imports: I,
    limiter: Limiter,
    memory: Option<Memory>,
    memory64: bool,
    emscripten: Emscripten,
    stub_calls: u64,
}

/// The emscripten exports the `invoke_*` trampolines use.
#[derive(Clone, Copy, Default)]
struct Emscripten {
    table: Option<Table>,
    stack_get: Option<Func>,
    stack_restore: Option<Func>,
    set_threw: Option<Func>,
}

struct Limiter {
    memory: u64,
    table_elements: u64,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            self.hit = true;
            tracing::debug!(
                current,
                desired,
                limit = self.memory,
                "wasm memory growth refused"
            );
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
}

/// `env._emscripten_throw_longjmp`: unwinds to the nearest `invoke_*`.
#[derive(Debug, thiserror::Error)]
#[error("emscripten longjmp with no invoke_* frame to catch it")]
struct LongJmp;

/// An [`Imports`] call that returned an error.
#[derive(Debug, thiserror::Error)]
#[error("import {module}.{name} failed: {message}")]
struct ImportFailed {
    module: String,
    name: String,
    message: String,
}

impl Module {
    /// Instantiates the module with every import bound (see [`crate::imports`]) and
    /// the limits of `config`. Runs the module's own start section, if any, and
    /// nothing else (no `_start`, `main` or `_initialize`).
    pub fn instantiate<I: Imports>(
        &self,
        imports: I,
        config: InstanceConfig,
    ) -> Result<Instance<I>, WasmError> {
        let engine = &self.inner.engine;
        let mut store = Store::new(
            &engine.engine,
            HostState {
                imports,
                limiter: Limiter {
                    memory: config.memory_limit,
                    table_elements: config.table_elements_limit,
                    hit: false,
                },
                memory: None,
                memory64: false,
                emscripten: Emscripten::default(),
                stub_calls: 0,
            },
        );
        store.limiter(|s| &mut s.limiter);
        arm_budget(&mut store, engine.fuel, engine.epoch_tick, &config)?;

        let inst_err = |e: wasmtime::Error| WasmError::Instantiate(format!("{e:#}"));
        let mut externs: Vec<Extern> = Vec::new();
        let mut imported_memory = None;
        let mut funcs = self.inner.funcs.iter();
        for import in self.inner.module.imports() {
            let ext: Extern = match import.ty() {
                ExternType::Func(ty) => {
                    let info = funcs
                        .next()
                        .ok_or_else(|| WasmError::Instantiate("import list changed".into()))?;
                    bind_func(&mut store, ty, info).into()
                }
                ExternType::Memory(ty) => {
                    let m = Memory::new(&mut store, ty).map_err(inst_err)?;
                    imported_memory.get_or_insert(m);
                    m.into()
                }
                ExternType::Table(ty) => {
                    let init = Ref::null(ty.element().heap_type());
                    Table::new(&mut store, ty, init).map_err(inst_err)?.into()
                }
                ExternType::Global(ty) => {
                    let init = Val::default_for_ty(ty.content()).ok_or_else(|| {
                        WasmError::Instantiate(format!(
                            "cannot provide imported global {}.{}",
                            import.module(),
                            import.name()
                        ))
                    })?;
                    Global::new(&mut store, ty, init).map_err(inst_err)?.into()
                }
                ExternType::Tag(ty) => Tag::new(&mut store, &ty).map_err(inst_err)?.into(),
            };
            externs.push(ext);
        }
        let instance =
            wasmtime::Instance::new(&mut store, &self.inner.module, &externs).map_err(inst_err)?;

        let memory = instance
            .get_memory(&mut store, "memory")
            .or_else(|| {
                let exports: Vec<Extern> = instance
                    .exports(&mut store)
                    .map(|e| e.into_extern())
                    .collect();
                exports.into_iter().find_map(Extern::into_memory)
            })
            .or(imported_memory);
        // The width of the module's pointers: that of the memory it declares, even when
        // the compiled code has it lowered to 32 bits.
        let memory64 = memory.is_some() && self.inner.memory64;
        let emscripten = Emscripten {
            table: instance.get_table(&mut store, "__indirect_function_table"),
            stack_get: instance.get_func(&mut store, "emscripten_stack_get_current"),
            stack_restore: instance.get_func(&mut store, "_emscripten_stack_restore"),
            set_threw: instance.get_func(&mut store, "setThrew"),
        };
        let data = store.data_mut();
        data.memory = memory;
        data.memory64 = memory64;
        data.emscripten = emscripten;

        Ok(Instance {
            module: self.clone(),
            config,
            store,
            instance,
            memory,
            trapped: false,
            last_fuel: None,
        })
    }

    /// A fresh instance with its memory restored from `snapshot`
    /// ([`Instance::restore_memory`]).
    pub fn instantiate_from_snapshot<I: Imports>(
        &self,
        imports: I,
        config: InstanceConfig,
        snapshot: &[u8],
    ) -> Result<Instance<I>, WasmError> {
        let mut instance = self.instantiate(imports, config)?;
        instance.restore_memory(snapshot)?;
        Ok(instance)
    }
}

/// Sets the fuel and the deadline for the next call.
fn arm_budget<T>(
    store: &mut Store<T>,
    fuel: bool,
    epoch_tick: Option<Duration>,
    config: &InstanceConfig,
) -> Result<(), WasmError> {
    if fuel {
        store
            .set_fuel(config.fuel_per_call)
            .map_err(|e| WasmError::Config(format!("{e:#}")))?;
    }
    if let Some(tick) = epoch_tick {
        let ticks = config
            .deadline
            .as_nanos()
            .div_ceil(tick.as_nanos().max(1))
            .max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    }
    Ok(())
}

fn zero(ty: &ValType) -> Val {
    Val::default_for_ty(ty).unwrap_or(Val::I32(0))
}

/// The host function for one imported function.
fn bind_func<I: Imports>(store: &mut Store<HostState<I>>, ty: FuncType, info: &ImportFunc) -> Func {
    let result_types: Arc<[ValType]> = ty.results().collect();
    let first_is_int = matches!(
        info.sig.params.first(),
        Some(ValueType::I32 | ValueType::I64)
    );
    if info.name.starts_with("invoke") && first_is_int {
        return Func::new(&mut *store, ty, move |mut caller, params, results| {
            invoke(&mut caller, params, results, &result_types)
        });
    }
    if info.module == "env" && info.name == "_emscripten_throw_longjmp" {
        return Func::new(&mut *store, ty, |_, _, _| {
            Err(wasmtime::Error::new(LongJmp))
        });
    }
    if info.sig.is_numeric() {
        let info = Arc::new(info.clone());
        return Func::new(&mut *store, ty, move |mut caller, params, results| {
            delegate(&mut caller, &info, params, results)
        });
    }
    Func::new(&mut *store, ty, move |_, _, results| {
        for (r, t) in results.iter_mut().zip(result_types.iter()) {
            *r = zero(t);
        }
        Ok(())
    })
}

/// An import handled by the instance's [`Imports`].
fn delegate<I: Imports>(
    caller: &mut Caller<'_, HostState<I>>,
    info: &ImportFunc,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let args: Vec<Value> = params
        .iter()
        .map(|v| Value::from_wasmtime(v).unwrap_or(Value::I32(0)))
        .collect();
    let memory = caller.data().memory;
    let memory64 = caller.data().memory64;
    let mut no_memory: [u8; 0] = [];
    let (data, state): (&mut [u8], &mut HostState<I>) = match memory {
        Some(m) => m.data_and_store_mut(&mut *caller),
        None => (&mut no_memory, caller.data_mut()),
    };
    let mut view = MemoryView::new(data, memory64);
    let failed = |message: String| {
        wasmtime::Error::new(ImportFailed {
            module: info.module.clone(),
            name: info.name.clone(),
            message,
        })
    };
    match state.imports.call(info, &args, &mut view) {
        Ok(Some(values)) => {
            if values.len() != results.len() {
                return Err(failed(format!(
                    "returned {} value(s), the signature {} has {}",
                    values.len(),
                    info.sig,
                    results.len()
                )));
            }
            for ((r, v), t) in results.iter_mut().zip(values).zip(&info.sig.results) {
                *r = v.convert(*t).map_err(&failed)?.to_wasmtime();
            }
            Ok(())
        }
        Ok(None) => {
            state.stub_calls += 1;
            for (r, t) in results.iter_mut().zip(&info.sig.results) {
                *r = Value::I32(0).convert(*t).map_err(&failed)?.to_wasmtime();
            }
            Ok(())
        }
        Err(e) => Err(failed(e.message)),
    }
}

/// Whether an `invoke_*` trampoline catches this failure of its callee: emscripten
/// longjmps and wasm traps, but never a budget running out, an import's error or a
/// wasm exception (which keeps propagating through wasm handlers).
fn invoke_catches(e: &wasmtime::Error) -> bool {
    if e.is::<LongJmp>() {
        return true;
    }
    e.downcast_ref::<wasmtime::Trap>()
        .is_some_and(|t| !matches!(t, wasmtime::Trap::OutOfFuel | wasmtime::Trap::Interrupt))
}

/// `invoke_<sig>(index, args…)` with emscripten's semantics (spec 06 §2.3.5).
fn invoke<I: Imports>(
    caller: &mut Caller<'_, HostState<I>>,
    params: &[Val],
    results: &mut [Val],
    result_types: &[ValType],
) -> wasmtime::Result<()> {
    let em = caller.data().emscripten;
    let Some(table) = em.table else {
        return Err(wasmtime::Error::msg(
            "invoke_*: the module exports no __indirect_function_table",
        ));
    };
    let index = match params.first() {
        Some(Val::I32(i)) => u64::from(*i as u32),
        Some(Val::I64(i)) => *i as u64,
        _ => {
            return Err(wasmtime::Error::msg(
                "invoke_*: the first parameter is not an index",
            ));
        }
    };
    let saved = match em.stack_get {
        Some(f) => {
            let mut r = [Val::I32(0)];
            f.call(&mut *caller, &[], &mut r)?;
            Some(r[0])
        }
        None => None,
    };
    let outcome = match table.get(&mut *caller, index) {
        Some(Ref::Func(Some(f))) => f.call(&mut *caller, &params[1..], results),
        Some(_) => Err(wasmtime::Trap::IndirectCallToNull.into()),
        None => Err(wasmtime::Trap::TableOutOfBounds.into()),
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if invoke_catches(&e) => {
            if let (Some(sp), Some(restore)) = (saved, em.stack_restore) {
                restore.call(&mut *caller, &[sp], &mut [])?;
            }
            if let Some(set_threw) = em.set_threw {
                let args: Vec<Val> = set_threw
                    .ty(&*caller)
                    .params()
                    .zip([1i64, 0])
                    .map(|(t, v)| match t {
                        ValType::I64 => Val::I64(v),
                        _ => Val::I32(v as i32),
                    })
                    .collect();
                set_threw.call(&mut *caller, &args, &mut [])?;
            }
            for (r, t) in results.iter_mut().zip(result_types) {
                *r = zero(t);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl<I: Imports> Instance<I> {
    /// The module this is an instance of.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The instance's limits.
    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// The imports' host state.
    pub fn imports(&self) -> &I {
        &self.store.data().imports
    }

    /// The imports' host state, writable.
    pub fn imports_mut(&mut self) -> &mut I {
        &mut self.store.data_mut().imports
    }

    /// Drops the instance and gives back its imports.
    pub fn into_imports(self) -> I {
        self.store.into_data().imports
    }

    /// A fresh instance of the same module, with the same imports and limits, its
    /// memory restored from `snapshot` if one is given (spec 06 §2.2.4). The way back
    /// to a known state after a trap.
    pub fn reset(self, snapshot: Option<&[u8]>) -> Result<Instance<I>, WasmError> {
        let module = self.module.clone();
        let config = self.config.clone();
        let imports = self.into_imports();
        match snapshot {
            Some(s) => module.instantiate_from_snapshot(imports, config, s),
            None => module.instantiate(imports, config),
        }
    }

    /// Whether a call has failed since the instance was created (see "State after a
    /// failed call" above).
    pub fn trapped(&self) -> bool {
        self.trapped
    }

    /// Fuel used by the last call (`None` when fuel is off or before the first call).
    pub fn last_fuel_used(&self) -> Option<u64> {
        self.last_fuel
    }

    /// Whether a memory or table growth was refused because of the instance's limits.
    pub fn limit_hit(&self) -> bool {
        self.store.data().limiter.hit
    }

    /// How many import calls were answered by the stub (the [`Imports`] returned
    /// `None`).
    pub fn stub_calls(&self) -> u64 {
        self.store.data().stub_calls
    }

    /// The signature of an exported function.
    pub fn func_sig(&mut self, name: &str) -> Option<crate::FuncSig> {
        let f = self.instance.get_func(&mut self.store, name)?;
        Some(crate::FuncSig::from_wasmtime(&f.ty(&self.store)))
    }

    /// Calls the exported function `name`. Each argument is converted numerically to
    /// the parameter's type ([`Value::convert`]); the results come back with the
    /// function's result types. The call runs under the per-call budget.
    pub fn call(&mut self, name: &str, args: &[Value]) -> Result<Vec<Value>, WasmError> {
        let func = self
            .instance
            .get_func(&mut self.store, name)
            .ok_or_else(|| WasmError::NoSuchFunction(name.to_string()))?;
        let ty = func.ty(&self.store);
        if ty.params().len() != args.len() {
            return Err(WasmError::ArgumentCount {
                name: name.to_string(),
                expected: ty.params().len(),
                given: args.len(),
            });
        }
        let params = ty
            .params()
            .zip(args)
            .enumerate()
            .map(|(i, (t, a))| {
                a.convert(ValueType::from_wasmtime(&t))
                    .map(Value::to_wasmtime)
                    .map_err(|reason| WasmError::Conversion {
                        name: name.to_string(),
                        reason: format!("argument {}: {reason}", i + 1),
                    })
            })
            .collect::<Result<Vec<Val>, _>>()?;
        let mut results: Vec<Val> = ty.results().map(|t| zero(&t)).collect();
        self.call_func(func, &params, &mut results)?;
        results
            .iter()
            .map(|v| {
                Value::from_wasmtime(v).ok_or_else(|| WasmError::Conversion {
                    name: name.to_string(),
                    reason: "a result is not a number".into(),
                })
            })
            .collect()
    }

    fn call_func(
        &mut self,
        func: Func,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), WasmError> {
        let engine = &self.module.inner.engine;
        arm_budget(
            &mut self.store,
            engine.fuel,
            engine.epoch_tick,
            &self.config,
        )?;
        let em = self.store.data().emscripten;
        let saved_sp = match (em.stack_get, em.stack_restore) {
            (Some(get), Some(_)) => {
                let mut r = [Val::I32(0)];
                get.call(&mut self.store, &[], &mut r).ok().map(|()| r[0])
            }
            _ => None,
        };
        let outcome = func.call(&mut self.store, params, results);
        if engine.fuel {
            self.last_fuel = self
                .store
                .get_fuel()
                .ok()
                .map(|left| self.config.fuel_per_call.saturating_sub(left));
        }
        let Err(e) = outcome else {
            return Ok(());
        };
        let trap = classify(&e);
        self.trapped = true;
        tracing::debug!(kind = ?trap.kind, message = %trap.message, "wasm call failed");
        // Undo what can be undone: the pending exception, the shadow stack.
        if self.store.has_pending_exception() {
            let _ = self.store.take_pending_exception();
        }
        if let (Some(sp), Some(restore)) = (saved_sp, em.stack_restore) {
            let _ = arm_budget(
                &mut self.store,
                engine.fuel,
                engine.epoch_tick,
                &self.config,
            );
            if let Err(e) = restore.call(&mut self.store, &[sp], &mut []) {
                tracing::debug!(error = %format!("{e:#}"), "cannot restore the emscripten stack");
            }
        }
        Err(WasmError::Trap(trap))
    }

    fn memory(&self) -> Result<Memory, WasmError> {
        self.memory.ok_or(WasmError::NoMemory)
    }

    /// Size of the linear memory in bytes.
    pub fn memory_size(&self) -> Result<u64, WasmError> {
        Ok(self.memory()?.data_size(&self.store) as u64)
    }

    /// Size of the linear memory in pages.
    pub fn memory_pages(&self) -> Result<u64, WasmError> {
        Ok(self.memory()?.size(&self.store))
    }

    /// Whether the memory is a memory64 one.
    pub fn is_memory64(&self) -> bool {
        self.store.data().memory64
    }

    fn bounds(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, WasmError> {
        let size = self.memory_size()?;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(WasmError::OutOfBounds { offset, len, size }),
        }
    }

    /// The `len` bytes at `offset`; fails when any of them is outside the memory.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, WasmError> {
        let r = self.bounds(offset, len)?;
        Ok(self.memory()?.data(&self.store)[r].to_vec())
    }

    /// Writes `bytes` at `offset`; fails (writing nothing) when any byte would be
    /// outside the memory.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), WasmError> {
        let r = self.bounds(offset, bytes.len() as u64)?;
        let memory = self.memory()?;
        memory.data_mut(&mut self.store)[r].copy_from_slice(bytes);
        Ok(())
    }

    /// Runs `f` with a view of the memory (as an import would see it).
    pub fn with_memory<R>(
        &mut self,
        f: impl FnOnce(&mut MemoryView<'_>) -> R,
    ) -> Result<R, WasmError> {
        let memory = self.memory()?;
        let memory64 = self.is_memory64();
        let mut view = MemoryView::new(memory.data_mut(&mut self.store), memory64);
        Ok(f(&mut view))
    }

    /// Calls the module's `malloc(size)`; a null result is [`WasmError::MallocFailed`].
    pub fn malloc(&mut self, size: u64) -> Result<u64, WasmError> {
        let Some(sig) = self.func_sig("malloc") else {
            return Err(WasmError::NoSuchFunction("malloc".into()));
        };
        let arg = match sig.params.first() {
            Some(ValueType::I32) => {
                Value::I32(u32::try_from(size).map_err(|_| WasmError::MallocFailed)? as i32)
            }
            _ => Value::I64(i64::try_from(size).map_err(|_| WasmError::MallocFailed)?),
        };
        let result = self.call("malloc", &[arg])?;
        match result.first().and_then(Value::as_address) {
            Some(0) => Err(WasmError::MallocFailed),
            Some(ptr) => Ok(ptr),
            None => Err(WasmError::Conversion {
                name: "malloc".into(),
                reason: "does not return an address".into(),
            }),
        }
    }

    /// `malloc(len + 1)`, then the bytes and a NUL (spec 06 §2.9 item 6). Returns the
    /// address. The block is never freed (the allocation sequence is part of the
    /// process state).
    pub fn write_string(&mut self, bytes: &[u8]) -> Result<u64, WasmError> {
        let ptr = self.malloc(bytes.len() as u64 + 1)?;
        let r = self.bounds(ptr, bytes.len() as u64 + 1)?;
        let memory = self.memory()?;
        let data = &mut memory.data_mut(&mut self.store)[r];
        data[..bytes.len()].copy_from_slice(bytes);
        data[bytes.len()] = 0;
        Ok(ptr)
    }

    /// The bytes from `ptr` up to the first NUL, searching at most `max` bytes (and
    /// never past the end of memory).
    pub fn read_c_bytes(&self, ptr: u64, max: u64) -> Result<Vec<u8>, WasmError> {
        let size = self.memory_size()?;
        if ptr > size {
            return Err(WasmError::OutOfBounds {
                offset: ptr,
                len: 1,
                size,
            });
        }
        let len = max.min(size - ptr);
        let data = &self.memory()?.data(&self.store)[ptr as usize..(ptr + len) as usize];
        match data.iter().position(|&b| b == 0) {
            Some(n) => Ok(data[..n].to_vec()),
            None => Err(WasmError::UnterminatedString { ptr, max: len }),
        }
    }

    /// The UTF-8 string from `ptr` up to the first NUL (bounded by the end of
    /// memory).
    pub fn read_string(&self, ptr: u64) -> Result<String, WasmError> {
        let bytes = self.read_c_bytes(ptr, u64::MAX)?;
        String::from_utf8(bytes).map_err(|_| WasmError::NotUtf8 { ptr })
    }

    /// The whole linear memory (spec 06 §2.2.3): with emscripten modules, whose only
    /// mutable global (the shadow-stack pointer) is back at its initial value between
    /// calls, this is the complete state.
    pub fn snapshot(&self) -> Result<Vec<u8>, WasmError> {
        Ok(self.memory()?.data(&self.store).to_vec())
    }

    /// [`Instance::snapshot`] into `out`, a copy of an earlier memory of this
    /// instance that `zero` describes ([`update_copy`]): only what changed is
    /// written, and chunks known to be zero in the copy are not read.
    pub fn snapshot_into(&self, out: &mut Vec<u8>, zero: &mut Vec<bool>) -> Result<(), WasmError> {
        update_copy(out, zero, self.memory()?.data(&self.store));
        Ok(())
    }

    /// Writes `snapshot` over the memory from offset 0, first growing the memory to
    /// the snapshot's size when it is smaller (spec 06 §2.2.4; the memory cap
    /// applies). Bytes past the snapshot's end, if the memory is larger, are zeroed.
    pub fn restore_memory(&mut self, snapshot: &[u8]) -> Result<(), WasmError> {
        let memory = self.memory()?;
        let size = memory.data_size(&self.store) as u64;
        let wanted = snapshot.len() as u64;
        if wanted > size {
            let page = memory.page_size(&self.store);
            let delta = (wanted - size).div_ceil(page);
            memory
                .grow(&mut self.store, delta)
                .map_err(|e| WasmError::Grow {
                    wanted,
                    reason: format!("{e:#}"),
                })?;
        }
        let data = memory.data_mut(&mut self.store);
        data[..snapshot.len()].copy_from_slice(snapshot);
        data[snapshot.len()..].fill(0);
        Ok(())
    }
}

/// The chunk size of [`update_copy`]: a page.
const COPY_CHUNK: usize = 4096;

/// Whether `chunk` (at most [`COPY_CHUNK`] bytes) holds only zeros: a `memcmp`
/// against a zero page, which stops at the first non-zero byte.
fn is_zero(chunk: &[u8]) -> bool {
    static ZERO: [u8; COPY_CHUNK] = [0; COPY_CHUNK];
    chunk == &ZERO[..chunk.len()]
}

/// Makes `copy` equal to `data`. `zero` says, per 4 KiB chunk of `copy`, whether
/// that chunk is known to hold only zeros (`false` means unknown); it must never say
/// `true` of a chunk that is not (so it travels with its copy), is rebuilt when its
/// length does not match, and is kept up to date.
///
/// A checkpoint of a linear memory is taken before every slot, and the copy it
/// reuses is the previous slot's. An aos memory of 12 MiB has about 13 % of its
/// pages non-zero and 7 % changed by a message; the rest were never written, so
/// reading them in the memory is cheap, and their side of the copy is not read at
/// all. Copying the whole memory instead writes 12 MiB every slot.
///
/// A memory that grew since (an aos heap grows by a page every few dozen messages:
/// json-iface@1.0's strings are never freed) is compared over the old length and only
/// its new tail is appended; one that shrank (a fresh instance) is copied whole.
pub(crate) fn update_copy(copy: &mut Vec<u8>, zero: &mut Vec<bool>, data: &[u8]) {
    if copy.len() > data.len() {
        copy.clear();
        copy.extend_from_slice(data);
        zero.clear();
        zero.extend(copy.chunks(COPY_CHUNK).map(is_zero));
        return;
    }
    let old_len = copy.len();
    let chunks = old_len.div_ceil(COPY_CHUNK);
    if zero.len() != chunks {
        zero.clear();
        zero.resize(chunks, false);
    }
    let pairs = copy
        .chunks_mut(COPY_CHUNK)
        .zip(data[..old_len].chunks(COPY_CHUNK));
    for ((old, new), known_zero) in pairs.zip(zero.iter_mut()) {
        let same = if *known_zero {
            is_zero(new)
        } else {
            *old == *new
        };
        if !same {
            old.copy_from_slice(new);
        }
        // A chunk known to be zero that stayed so is not read again.
        if !(same && *known_zero) {
            *known_zero = is_zero(new);
        }
    }
    if data.len() > old_len {
        copy.extend_from_slice(&data[old_len..]);
        // From the first chunk the tail touches (a short last chunk grew).
        let from = old_len / COPY_CHUNK;
        zero.truncate(from);
        zero.extend(copy[from * COPY_CHUNK..].chunks(COPY_CHUNK).map(is_zero));
    }
}

/// A failed call as a [`Trap`].
fn classify(e: &wasmtime::Error) -> Trap {
    let kind = if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        match t {
            wasmtime::Trap::OutOfFuel => TrapKind::OutOfFuel,
            wasmtime::Trap::Interrupt => TrapKind::Deadline,
            wasmtime::Trap::StackOverflow => TrapKind::StackOverflow,
            wasmtime::Trap::UnreachableCodeReached => TrapKind::Unreachable,
            wasmtime::Trap::MemoryOutOfBounds => TrapKind::MemoryOutOfBounds,
            _ => TrapKind::Other,
        }
    } else if e.is::<wasmtime::ThrownException>() {
        TrapKind::UncaughtException
    } else if e.is::<LongJmp>() {
        TrapKind::UncaughtLongjmp
    } else if e.is::<ImportFailed>() {
        TrapKind::Import
    } else {
        TrapKind::Other
    };
    Trap {
        kind,
        message: format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{COPY_CHUNK, is_zero, update_copy};

    /// One change to a memory: its new length (in bytes) and writes into it.
    fn change() -> impl Strategy<Value = (usize, Vec<(usize, u8)>)> {
        (
            0..COPY_CHUNK * 6,
            proptest::collection::vec((0..COPY_CHUNK * 6, any::<u8>()), 0..8),
        )
    }

    proptest! {
        /// Through any sequence of growing, shrinking and written memories, the copy
        /// equals the memory and the map never calls a non-zero chunk zero.
        #[test]
        fn update_copy_keeps_its_invariants(changes in proptest::collection::vec(change(), 1..12)) {
            let (mut data, mut copy, mut zero) = (Vec::new(), Vec::new(), Vec::new());
            for (len, writes) in changes {
                // Mostly zero-filled growth, as a memory grows.
                data.resize(len, 0);
                for (at, byte) in writes {
                    if let Some(b) = data.get_mut(at) {
                        *b = byte;
                    }
                }
                update_copy(&mut copy, &mut zero, &data);
                prop_assert_eq!(&copy, &data);
                prop_assert_eq!(zero.len(), data.len().div_ceil(COPY_CHUNK));
                for (chunk, known_zero) in data.chunks(COPY_CHUNK).zip(&zero) {
                    prop_assert!(!known_zero || is_zero(chunk));
                }
            }
        }
    }

    /// The copy equals the data after every update, whatever the zero map said.
    #[test]
    fn update_copy_follows_every_change() {
        let n = COPY_CHUNK * 5 + 100;
        let mut data = vec![0u8; n];
        data[10] = 1;
        let (mut copy, mut zero) = (Vec::new(), Vec::new());
        update_copy(&mut copy, &mut zero, &data);
        assert_eq!(copy, data);
        assert_eq!(zero, [false, true, true, true, true, true]);
        // A zero chunk written, a non-zero chunk cleared, the short last chunk.
        data[COPY_CHUNK * 2 + 7] = 9;
        data[10] = 0;
        data[n - 1] = 3;
        update_copy(&mut copy, &mut zero, &data);
        assert_eq!(copy, data);
        assert_eq!(zero, [true, true, false, true, true, false]);
        // A map that does not fit is rebuilt, not trusted.
        data[COPY_CHUNK * 4] = 5;
        let mut wrong = vec![true; 2];
        update_copy(&mut copy, &mut wrong, &data);
        assert_eq!(copy, data);
        assert_eq!(wrong.len(), 6);
        // A map that knows nothing (all `false`) costs reads, never correctness.
        data[COPY_CHUNK * 4] = 6;
        let mut unknown = vec![false; 6];
        update_copy(&mut copy, &mut unknown, &data);
        assert_eq!(copy, data);
        assert_eq!(unknown, [true, true, false, true, false, false]);
        // A grown memory: the old part updated, the tail appended (here into the
        // short last chunk, and one chunk more, zero but for its last byte). The map
        // that travels with the copy is the last one used.
        let mut zero = unknown;
        data[COPY_CHUNK] = 8;
        data.extend_from_slice(&[4u8; 3]);
        data.resize(COPY_CHUNK * 7, 0);
        *data.last_mut().unwrap() = 1;
        update_copy(&mut copy, &mut zero, &data);
        assert_eq!(copy, data);
        assert_eq!(zero, [true, false, false, true, false, false, false]);
        // Grown by whole zero chunks: known zero at once.
        data.resize(COPY_CHUNK * 9, 0);
        update_copy(&mut copy, &mut zero, &data);
        assert_eq!(copy, data);
        assert_eq!(
            zero,
            [true, false, false, true, false, false, false, true, true]
        );
        // A memory that shrank (a fresh instance) is copied whole.
        data.truncate(COPY_CHUNK + 1);
        update_copy(&mut copy, &mut zero, &data);
        assert_eq!(copy, data);
        assert_eq!(zero, [true, false]);
    }
}
