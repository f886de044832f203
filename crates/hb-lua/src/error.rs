//! The crate's error type.

pub use hb_wasm::TrapKind;

use crate::value::LuaValue;

/// Everything that can go wrong creating, calling, snapshotting or restoring a Lua
/// instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LuaError {
    /// A Lua runtime error (`error(...)`, a failed operation), not caught by Lua.
    #[error("{message}")]
    Runtime {
        /// The error value as text (the string itself, or `(error object is a …
        /// value)`).
        message: String,
        /// The error value as raised.
        value: LuaValue,
        /// Lua's traceback at the point of the error.
        traceback: String,
    },
    /// The chunk did not compile.
    #[error("{0}")]
    Syntax(String),
    /// Lua ran out of memory: the instance's memory cap was reached (Lua's
    /// `LUA_ERRMEM`). The instance is consistent and stays usable.
    #[error("{0}")]
    Memory(String),
    /// An error while handling an error (Lua's `LUA_ERRERR`).
    #[error("error in error handling: {0}")]
    ErrorHandler(String),
    /// An argument cannot be passed to Lua, or the request was malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The call did not finish: its fuel ran out, or the wasm code trapped, or a host
    /// callback aborted it. The Lua state it interrupted is not consistent, so the
    /// instance was rolled back to its checkpoint (`rolled_back`), or, without one,
    /// it refuses further calls ([`LuaError::Poisoned`]) until restored.
    #[error("{message}")]
    Trap {
        /// What stopped the call.
        kind: TrapKind,
        /// The engine's (or the callback's) text.
        message: String,
        /// Whether the instance is now back at its last checkpoint.
        rolled_back: bool,
    },
    /// A previous call trapped and there was no checkpoint to roll back to: restore a
    /// snapshot ([`crate::Lua::restore`]) before calling again.
    #[error("the Lua instance was interrupted by a trap and has no checkpoint to roll back to")]
    Poisoned,
    /// A snapshot is malformed, belongs to another engine build, or exceeds the
    /// instance's memory cap.
    #[error("bad snapshot: {0}")]
    Snapshot(String),
    /// The engine could not be set up (configuration, compilation, instantiation).
    #[error("Lua engine: {0}")]
    Engine(String),
    /// The guest answered something that does not follow the ABI (a bug, or an
    /// engine/glue mismatch).
    #[error("Lua engine protocol error: {0}")]
    Protocol(String),
}

impl LuaError {
    /// Whether this is an error raised by Lua code or by the Lua runtime (as opposed to
    /// the call being interrupted or the host failing).
    pub fn is_lua_error(&self) -> bool {
        matches!(
            self,
            LuaError::Runtime { .. }
                | LuaError::Syntax(_)
                | LuaError::Memory(_)
                | LuaError::ErrorHandler(_)
        )
    }

    /// The trap kind, when the call was interrupted.
    pub fn trap_kind(&self) -> Option<TrapKind> {
        match self {
            LuaError::Trap { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// What a host callback ([`crate::HostCall`]) returns instead of values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCallError {
    /// Raised as a Lua error inside `_hb.call` (Lua code may `pcall` it).
    #[error("{0}")]
    Lua(String),
    /// Stops the whole call, like a trap ([`LuaError::Trap`] with
    /// [`TrapKind::Import`]); the instance is rolled back.
    #[error("{0}")]
    Abort(String),
}
