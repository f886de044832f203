//! The engine (one per node) and its module cache.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::eh::{self, REWRITE_VERSION};
use crate::error::WasmError;
use crate::imports::{FuncSig, ImportFunc};

/// How an [`Engine`] is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory for compiled modules, so that a restart does not recompile. `None`
    /// keeps compiled modules in memory only. The directory must be private to this
    /// node (see [`Engine::load`]).
    pub cache_dir: Option<PathBuf>,
    /// Deterministic metering: each call gets a fuel budget
    /// ([`crate::InstanceConfig::fuel_per_call`]) and traps with
    /// [`crate::TrapKind::OutOfFuel`] when it runs out. Costs 15–35 % of the speed of
    /// compute-bound code. Default on.
    pub fuel: bool,
    /// Wall-clock metering: a thread advances the engine's epoch every `epoch_tick`
    /// and each call gets a deadline ([`crate::InstanceConfig::deadline`]), trapping
    /// with [`crate::TrapKind::Deadline`]. Not deterministic (use fuel for that); a
    /// backstop for nodes that want one. Default off.
    pub epoch_tick: Option<Duration>,
    /// Maximum native stack used by wasm frames, in bytes (wasmtime's default is
    /// 512 KiB). Wasm runs on the calling thread's stack, which must be larger than
    /// this plus the host's own frames (Rust's spawned threads have 2 MiB).
    pub max_wasm_stack: usize,
    /// How many compiled modules the in-memory cache keeps (least recently used
    /// ones are dropped first; live instances keep theirs).
    pub memory_cache_capacity: usize,
    /// Compile a module's functions on several threads.
    pub parallel_compilation: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            fuel: true,
            epoch_tick: None,
            max_wasm_stack: 1 << 20,
            memory_cache_capacity: 64,
            parallel_compilation: true,
        }
    }
}

/// The node's WebAssembly engine: one wasmtime engine (memory64, exceptions,
/// NaN canonicalisation, fuel and/or epoch metering) and a cache of compiled modules
/// keyed by the sha256 of the module bytes as given.
///
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) fuel: bool,
    pub(crate) epoch_tick: Option<Duration>,
    /// `cache_dir/<engine key>`: artifacts of this engine build and configuration.
    artifact_dir: Option<PathBuf>,
    modules: Mutex<ModuleCache>,
    /// Held while a module is read from disk or compiled.
    loading: Mutex<()>,
    capacity: usize,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("fuel", &self.inner.fuel)
            .field("epoch_tick", &self.inner.epoch_tick)
            .field("artifact_dir", &self.inner.artifact_dir)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct ModuleCache {
    map: HashMap<[u8; 32], (Arc<ModuleInner>, u64)>,
    clock: u64,
}

/// Where [`Engine::load`] found a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already compiled in this process.
    Memory,
    /// Read from the on-disk cache (no compilation).
    Disk,
    /// Compiled now.
    Compiled,
}

impl Engine {
    /// A new engine. With `epoch_tick` set, starts the ticker thread (it stops by
    /// itself once the engine is dropped).
    pub fn new(config: EngineConfig) -> Result<Self, WasmError> {
        let mut c = wasmtime::Config::new();
        c.wasm_memory64(true)
            .wasm_exceptions(true)
            .collector(wasmtime::Collector::DeferredReferenceCounting)
            .consume_fuel(config.fuel)
            .epoch_interruption(config.epoch_tick.is_some())
            .max_wasm_stack(config.max_wasm_stack)
            // Determinism: the same NaN bits on every node.
            .cranelift_nan_canonicalization(true)
            // Backtraces would be captured on every trap and every host error (each
            // emscripten longjmp); trap texts do not need them.
            .wasm_backtrace_max_frames(None)
            .parallel_compilation(config.parallel_compilation);
        let engine = wasmtime::Engine::new(&c).map_err(|e| WasmError::Config(format!("{e:#}")))?;

        if let Some(tick) = config.epoch_tick {
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("hb-wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(tick);
                        match weak.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| WasmError::Config(format!("cannot start the epoch thread: {e}")))?;
        }

        let artifact_dir = config
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(engine_key(&engine)));
        Ok(Engine {
            inner: Arc::new(EngineInner {
                engine,
                fuel: config.fuel,
                epoch_tick: config.epoch_tick,
                artifact_dir,
                modules: Mutex::new(ModuleCache::default()),
                loading: Mutex::new(()),
                capacity: config.memory_cache_capacity.max(1),
            }),
        })
    }

    /// The wasmtime engine underneath.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// Whether calls are metered with fuel.
    pub fn fuel_enabled(&self) -> bool {
        self.inner.fuel
    }

    /// Compiles `wasm` (after the load-time rewrites: legacy exception handling, then a
    /// 64-bit memory of at most 4 GiB lowered to a 32-bit one) or takes it from
    /// the cache: in memory by the sha256 of `wasm`, then on disk under
    /// `cache_dir/<engine key>/<sha256>.cwasm`, where the engine key hashes the
    /// wasmtime version, its compilation settings and the rewrite version.
    ///
    /// Compiled artifacts are native code that is loaded without validation, so the
    /// cache directory must be one that only this node writes. Each file ends with the
    /// sha256 of its contents, checked before loading (a torn or corrupted file is
    /// recompiled, not loaded). Failing to read or write the disk cache is logged and
    /// otherwise ignored.
    pub fn load(&self, wasm: &[u8]) -> Result<Module, WasmError> {
        let hash: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(inner) = self.cached(&hash) {
            return Ok(Module {
                inner,
                source: LoadSource::Memory,
            });
        }
        // One load at a time: a second caller of the same module waits for the first
        // and then finds it in memory instead of compiling it again. (Compilation
        // already uses every core.)
        let _loading = self.inner.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = self.cached(&hash) {
            return Ok(Module {
                inner,
                source: LoadSource::Memory,
            });
        }
        let started = Instant::now();
        let (module, source) = match self.load_artifact(&hash) {
            Some(module) => (module, LoadSource::Disk),
            None => {
                let rewritten = eh::rewrite_legacy_eh(wasm)?;
                let lowered = eh::lower_memory64(&rewritten)?;
                let module = wasmtime::Module::new(
                    &self.inner.engine,
                    lowered.as_deref().unwrap_or(&rewritten),
                )
                .map_err(|e| WasmError::InvalidModule(format!("{e:#}")))?;
                self.store_artifact(&hash, &module);
                (module, LoadSource::Compiled)
            }
        };
        tracing::debug!(
            module = %hex(&hash[..8]),
            ?source,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "wasm module loaded"
        );
        let memory64 = eh::declares_memory64(wasm)?;
        let inner = Arc::new(ModuleInner::new(module, hash, memory64, self.inner.clone()));
        self.remember(hash, inner.clone());
        Ok(Module { inner, source })
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Arc<ModuleInner>> {
        let mut cache = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let now = cache.clock;
        cache.map.get_mut(hash).map(|(m, used)| {
            *used = now;
            m.clone()
        })
    }

    fn remember(&self, hash: [u8; 32], module: Arc<ModuleInner>) {
        let mut cache = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let now = cache.clock;
        cache.map.insert(hash, (module, now));
        while cache.map.len() > self.inner.capacity {
            let oldest = cache
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => cache.map.remove(&k),
                None => break,
            };
        }
    }

    fn artifact_path(&self, hash: &[u8; 32]) -> Option<PathBuf> {
        Some(
            self.inner
                .artifact_dir
                .as_ref()?
                .join(format!("{}.cwasm", hex(hash))),
        )
    }

    fn load_artifact(&self, hash: &[u8; 32]) -> Option<wasmtime::Module> {
        let path = self.artifact_path(hash)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read compiled wasm module");
                return None;
            }
        };
        let Some((artifact, sum)) = bytes.split_last_chunk::<32>() else {
            tracing::warn!(path = %path.display(), "compiled wasm module too short; recompiling");
            return None;
        };
        if Sha256::digest(artifact).as_slice() != sum {
            tracing::warn!(path = %path.display(), "compiled wasm module fails its checksum; recompiling");
            return None;
        }
        match deserialize_artifact(&self.inner.engine, artifact) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot load compiled wasm module; recompiling");
                None
            }
        }
    }

    fn store_artifact(&self, hash: &[u8; 32], module: &wasmtime::Module) {
        let Some(path) = self.artifact_path(hash) else {
            return;
        };
        let result = (|| -> Result<(), String> {
            let mut bytes = module.serialize().map_err(|e| format!("{e:#}"))?;
            let sum = Sha256::digest(&bytes);
            bytes.extend_from_slice(&sum);
            write_atomically(&path, &bytes).map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot store compiled wasm module");
        }
    }
}

/// Writes `bytes` to a unique temporary file beside `path`, then renames it over
/// `path`, so that readers see either no file or a complete one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Loads a compiled artifact produced by [`wasmtime::Module::serialize`].
#[allow(
    unsafe_code,
    reason = "wasmtime's only API for loading precompiled native code is unsafe"
)]
fn deserialize_artifact(
    engine: &wasmtime::Engine,
    artifact: &[u8],
) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: `Module::deserialize` trusts its input to be native code wasmtime itself
    // produced. The bytes come from `Engine::store_artifact`: `Module::serialize` of a
    // module this node compiled, written atomically (temporary file + rename) into
    // `cache_dir/<engine key>/`, a directory only this node writes; the engine key
    // hashes wasmtime's version and compilation settings (and wasmtime checks them
    // again in the artifact's header), and the file is named by the module's sha256.
    // The trailing sha256 of the artifact was verified by the caller, so a torn or
    // bit-rotten file never gets here. The slice is copied by wasmtime, not mapped.
    unsafe { wasmtime::Module::deserialize(engine, artifact) }
}

/// The directory name for this engine's artifacts: wasmtime's compatibility hash
/// (version and compilation settings) plus the rewrite version.
fn engine_key(engine: &wasmtime::Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.update(REWRITE_VERSION.to_le_bytes());
    let sum = h.0.finalize();
    format!("wasmtime-{}", hex(&sum[..12]))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled module. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
    source: LoadSource,
}

pub(crate) struct ModuleInner {
    pub(crate) module: wasmtime::Module,
    hash: [u8; 32],
    pub(crate) engine: Arc<EngineInner>,
    /// The imported functions, in import order.
    pub(crate) funcs: Arc<[ImportFunc]>,
    /// Whether the module as given declares a 64-bit memory: its pointers are 64-bit
    /// even when the compiled code has a lowered 32-bit memory.
    pub(crate) memory64: bool,
}

impl ModuleInner {
    fn new(
        module: wasmtime::Module,
        hash: [u8; 32],
        memory64: bool,
        engine: Arc<EngineInner>,
    ) -> Self {
        let funcs = module
            .imports()
            .enumerate()
            .filter_map(|(index, i)| match i.ty() {
                wasmtime::ExternType::Func(f) => Some(ImportFunc {
                    index,
                    module: i.module().to_string(),
                    name: i.name().to_string(),
                    sig: FuncSig::from_wasmtime(&f),
                }),
                _ => None,
            })
            .collect();
        ModuleInner {
            module,
            hash,
            engine,
            funcs,
            memory64,
        }
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("hash", &hex(&self.inner.hash))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What a module exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportKind {
    /// A function.
    Func(FuncSig),
    /// A linear memory.
    Memory,
    /// A table.
    Table,
    /// A global.
    Global,
    /// A tag.
    Tag,
}

impl Module {
    /// The sha256 of the module bytes as given to [`Engine::load`].
    pub fn hash(&self) -> [u8; 32] {
        self.inner.hash
    }

    /// Where [`Engine::load`] found this module.
    pub fn source(&self) -> LoadSource {
        self.source
    }

    /// The imported functions, in import order (other imports — memories, tables,
    /// globals, tags — are satisfied with fresh default objects at instantiation).
    pub fn import_funcs(&self) -> &[ImportFunc] {
        &self.inner.funcs
    }

    /// The exports, in order.
    pub fn exports(&self) -> Vec<(String, ExportKind)> {
        self.inner
            .module
            .exports()
            .map(|e| {
                let kind = match e.ty() {
                    wasmtime::ExternType::Func(f) => ExportKind::Func(FuncSig::from_wasmtime(&f)),
                    wasmtime::ExternType::Memory(_) => ExportKind::Memory,
                    wasmtime::ExternType::Table(_) => ExportKind::Table,
                    wasmtime::ExternType::Global(_) => ExportKind::Global,
                    wasmtime::ExternType::Tag(_) => ExportKind::Tag,
                };
                (e.name().to_string(), kind)
            })
            .collect()
    }

    /// The wasmtime module underneath.
    pub fn wasmtime(&self) -> &wasmtime::Module {
        &self.inner.module
    }
}

/// How much stack a thread must have left to call into wasm itself: the engine's
/// `max_wasm_stack` (1 MiB by default), and the host's frames around it.
pub const INLINE_STACK: usize = 4 << 20;

/// Whether this thread has [`INLINE_STACK`] of its stack left, so that a call into
/// wasm may run on it rather than on a thread with a large stack.
pub fn stack_enough_for_wasm() -> bool {
    stacker::remaining_stack().is_some_and(|left| left >= INLINE_STACK)
}

/// Runs `f` on this thread with the thread-local `mark` set meanwhile (so that calls
/// coming back to this thread know where they are, as on a thread of its own), and
/// restores it after; a panic is caught.
pub fn run_inline_marked<R>(
    mark: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    f: impl FnOnce() -> R,
) -> std::thread::Result<R> {
    let was = mark.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    mark.with(|c| c.set(was));
    result
}
