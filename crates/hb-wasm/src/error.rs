//! The crate's error type.

use std::fmt;

use crate::eh::EhError;

/// Everything that can go wrong loading, instantiating or calling a module.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The engine configuration was rejected by wasmtime.
    #[error("wasm engine configuration: {0}")]
    Config(String),
    /// The legacy exception-handling rewrite failed (malformed module, or `rethrow` /
    /// `delegate`).
    #[error(transparent)]
    LegacyEh(#[from] EhError),
    /// The module did not validate or compile.
    #[error("invalid wasm module: {0}")]
    InvalidModule(String),
    /// Instantiation failed (a start function trapped, the memory cap is below the
    /// module's initial memory, …).
    #[error("wasm instantiation failed: {0}")]
    Instantiate(String),
    /// No exported function of that name.
    #[error("no exported function `{0}`")]
    NoSuchFunction(String),
    /// Wrong number of arguments for an exported function.
    #[error("`{name}` takes {expected} argument(s), {given} given")]
    ArgumentCount {
        /// The export.
        name: String,
        /// Its number of parameters.
        expected: usize,
        /// The number of arguments given.
        given: usize,
    },
    /// An argument or result that cannot be converted to the wasm type.
    #[error("`{name}`: {reason}")]
    Conversion {
        /// The export or import.
        name: String,
        /// What did not convert.
        reason: String,
    },
    /// The call trapped, ran out of budget, or an import failed.
    #[error("{0}")]
    Trap(Trap),
    /// The instance has no linear memory.
    #[error("the wasm instance has no memory")]
    NoMemory,
    /// A memory access outside the linear memory.
    #[error("memory access out of bounds: {len} byte(s) at {offset}, memory is {size} bytes")]
    OutOfBounds {
        /// Start of the access.
        offset: u64,
        /// Its length.
        len: u64,
        /// The memory's size in bytes.
        size: u64,
    },
    /// The module's `malloc` returned 0.
    #[error("malloc failed")]
    MallocFailed,
    /// No NUL byte between the pointer and the end of memory (or the bound).
    #[error("no NUL terminator within {max} bytes of {ptr}")]
    UnterminatedString {
        /// The string's address.
        ptr: u64,
        /// How far it was searched.
        max: u64,
    },
    /// The string is not UTF-8.
    #[error("string at {ptr} is not UTF-8")]
    NotUtf8 {
        /// The string's address.
        ptr: u64,
    },
    /// Growing the memory for a snapshot, or another growth, failed.
    #[error("cannot grow memory to {wanted} bytes: {reason}")]
    Grow {
        /// The size needed.
        wanted: u64,
        /// Why it failed (memory maximum, memory cap).
        reason: String,
    },
}

/// A failed call: what stopped it and the engine's text for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// The class of failure.
    pub kind: TrapKind,
    /// The trap text (for example `wasm trap: wasm `unreachable` instruction executed`).
    pub message: String,
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Classes of [`Trap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrapKind {
    /// The per-call fuel budget ran out.
    OutOfFuel,
    /// The per-call wall-clock deadline passed (epoch interruption).
    Deadline,
    /// The wasm stack limit was reached.
    StackOverflow,
    /// An `unreachable` instruction.
    Unreachable,
    /// An out-of-bounds memory access by the module.
    MemoryOutOfBounds,
    /// A wasm exception nobody caught.
    UncaughtException,
    /// An emscripten `longjmp` with no `invoke_*` frame to land in.
    UncaughtLongjmp,
    /// A host import returned an error.
    Import,
    /// Any other trap (division by zero, bad conversion, indirect call mismatch, …).
    Other,
}

impl TrapKind {
    /// Whether the trap is a budget running out (fuel or deadline), which an
    /// `invoke_*` trampoline must never swallow.
    pub fn is_budget(self) -> bool {
        matches!(self, TrapKind::OutOfFuel | TrapKind::Deadline)
    }
}

impl WasmError {
    /// The trap, when the error is one.
    pub fn trap(&self) -> Option<&Trap> {
        match self {
            WasmError::Trap(t) => Some(t),
            _ => None,
        }
    }
}
