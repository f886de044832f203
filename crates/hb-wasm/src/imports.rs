//! Values, signatures and the host side of imports.
//!
//! Every function a module imports is bound when it is instantiated (spec 06 §2.3):
//!
//! * `invoke_*` (any import module) is the emscripten indirect-call trampoline,
//!   implemented by the engine itself (§2.3.5), and `env._emscripten_throw_longjmp`
//!   raises the longjmp those trampolines catch; neither reaches [`Imports`];
//! * every other import with a numeric signature (i32/i64/f32/f64) is delegated to the
//!   instance's [`Imports`] implementation, which answers with result values, with
//!   `None` ("not mine": every result is 0, nothing is written — the stub of §2.3 step 3)
//!   or with an error (the call stops, §2.3 step 4);
//! * imports with a non-numeric signature (v128, references) are stubs returning zero
//!   or null.

use std::fmt;

/// A wasm value type as seen by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 128-bit vector (never delegated to [`Imports`]).
    V128,
    /// Any reference type (never delegated to [`Imports`]).
    Ref,
}

impl ValueType {
    /// The letter of spec 06 §2.3's `func-sig` strings: `i` i32, `I` i64, `f` f32,
    /// `F` f64 (and `v`, `r` for the types that never reach a device).
    pub fn letter(self) -> char {
        match self {
            ValueType::I32 => 'i',
            ValueType::I64 => 'I',
            ValueType::F32 => 'f',
            ValueType::F64 => 'F',
            ValueType::V128 => 'v',
            ValueType::Ref => 'r',
        }
    }

    /// Whether values of this type are [`Value`]s.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ValueType::I32 | ValueType::I64 | ValueType::F32 | ValueType::F64
        )
    }

    pub(crate) fn from_wasmtime(ty: &wasmtime::ValType) -> Self {
        match ty {
            wasmtime::ValType::I32 => ValueType::I32,
            wasmtime::ValType::I64 => ValueType::I64,
            wasmtime::ValType::F32 => ValueType::F32,
            wasmtime::ValType::F64 => ValueType::F64,
            wasmtime::ValType::V128 => ValueType::V128,
            wasmtime::ValType::Ref(_) => ValueType::Ref,
        }
    }
}

/// A numeric wasm value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// 32-bit integer.
    I32(i32),
    /// 64-bit integer.
    I64(i64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::I32(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::F32(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v:?}"),
            Value::F64(v) => write!(f, "{v:?}"),
        }
    }
}

impl Value {
    /// The value's type.
    pub fn ty(&self) -> ValueType {
        match self {
            Value::I32(_) => ValueType::I32,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as a signed integer, if it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an address: an i32 is read unsigned (wasm32 pointers), an i64 as
    /// its bits (wasm64 pointers).
    pub fn as_address(&self) -> Option<u64> {
        match *self {
            Value::I32(v) => Some(u64::from(v as u32)),
            Value::I64(v) => Some(v as u64),
            _ => None,
        }
    }

    /// The value as a float, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// Converts numerically to `ty` (spec 06 §2.2.2): an integer becomes an i32 (its
    /// low 32 bits) or an i64, or the float nearest to it; a float becomes an f32/f64,
    /// or an integer when it is integral and in range (no reinterpretation of bits).
    pub fn convert(self, ty: ValueType) -> Result<Value, String> {
        let int = self.as_i64();
        Ok(match (ty, int) {
            (ValueType::I32, Some(i)) => Value::I32(i as i32),
            (ValueType::I64, Some(i)) => Value::I64(i),
            (ValueType::F32, Some(i)) => Value::F32(i as f32),
            (ValueType::F64, Some(i)) => Value::F64(i as f64),
            (ValueType::F32, None) => match self {
                Value::F32(v) => Value::F32(v),
                _ => Value::F32(self.as_f64().unwrap_or_default() as f32),
            },
            (ValueType::F64, None) => Value::F64(self.as_f64().unwrap_or_default()),
            (ValueType::I32 | ValueType::I64, None) => {
                let f = self.as_f64().unwrap_or_default();
                let (lo, hi) = if ty == ValueType::I32 {
                    (f64::from(i32::MIN), f64::from(i32::MAX))
                } else {
                    (i64::MIN as f64, i64::MAX as f64)
                };
                if f.fract() != 0.0 || !(lo..=hi).contains(&f) {
                    return Err(format!("{f:?} is not an integer of the parameter's type"));
                }
                if ty == ValueType::I32 {
                    Value::I32(f as i32)
                } else {
                    Value::I64(f as i64)
                }
            }
            (ValueType::V128 | ValueType::Ref, _) => {
                return Err(format!("cannot pass a number as a {ty:?}"));
            }
        })
    }

    pub(crate) fn to_wasmtime(self) -> wasmtime::Val {
        match self {
            Value::I32(v) => wasmtime::Val::I32(v),
            Value::I64(v) => wasmtime::Val::I64(v),
            Value::F32(v) => wasmtime::Val::F32(v.to_bits()),
            Value::F64(v) => wasmtime::Val::F64(v.to_bits()),
        }
    }

    pub(crate) fn from_wasmtime(v: &wasmtime::Val) -> Option<Value> {
        Some(match *v {
            wasmtime::Val::I32(v) => Value::I32(v),
            wasmtime::Val::I64(v) => Value::I64(v),
            wasmtime::Val::F32(v) => Value::F32(f32::from_bits(v)),
            wasmtime::Val::F64(v) => Value::F64(f64::from_bits(v)),
            _ => return None,
        })
    }
}

/// A function signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FuncSig {
    /// Parameter types.
    pub params: Vec<ValueType>,
    /// Result types.
    pub results: Vec<ValueType>,
}

impl FuncSig {
    pub(crate) fn from_wasmtime(ty: &wasmtime::FuncType) -> Self {
        FuncSig {
            params: ty.params().map(|t| ValueType::from_wasmtime(&t)).collect(),
            results: ty.results().map(|t| ValueType::from_wasmtime(&t)).collect(),
        }
    }

    /// Whether every parameter and result is numeric.
    pub fn is_numeric(&self) -> bool {
        self.params
            .iter()
            .chain(&self.results)
            .all(|t| t.is_numeric())
    }
}

/// The compact form of spec 06 §2.3: `(iIII)i` for `(i32,i64,i64,i64)->i32`.
impl fmt::Display for FuncSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for t in &self.params {
            write!(f, "{}", t.letter())?;
        }
        f.write_str(")")?;
        for t in &self.results {
            write!(f, "{}", t.letter())?;
        }
        Ok(())
    }
}

/// An imported function, as declared by the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportFunc {
    /// Position among the module's imports (all kinds).
    pub index: usize,
    /// Import module name (`wasi_snapshot_preview1`, `env`, …).
    pub module: String,
    /// Import field name (`fd_write`, …).
    pub name: String,
    /// Its signature.
    pub sig: FuncSig,
}

/// The instance's linear memory, lent to an import while it runs.
///
/// Reads and writes fail, rather than wrap or truncate, when any byte of the range
/// lies outside the memory. Growing the memory is not possible from an import.
#[derive(Debug)]
pub struct MemoryView<'a> {
    data: &'a mut [u8],
    memory64: bool,
}

/// A memory access outside the linear memory, from an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("memory access out of bounds: {len} byte(s) at {offset}, memory is {size} bytes")]
pub struct OutOfBounds {
    /// Start of the access.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The memory's size.
    pub size: u64,
}

impl<'a> MemoryView<'a> {
    /// A view of `data`; `memory64` tells how the module's pointers are laid out.
    pub fn new(data: &'a mut [u8], memory64: bool) -> Self {
        MemoryView { data, memory64 }
    }

    /// Size in bytes (0 when the module has no memory).
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether the memory is a memory64 one (pointers and `size_t` are 64-bit).
    pub fn is_memory64(&self) -> bool {
        self.memory64
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, OutOfBounds> {
        let oob = OutOfBounds {
            offset,
            len,
            size: self.size(),
        };
        let end = offset.checked_add(len).ok_or(oob)?;
        if end > self.size() {
            return Err(oob);
        }
        Ok(offset as usize..end as usize)
    }

    /// The `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        let r = self.range(offset, len)?;
        Ok(&self.data[r])
    }

    /// Writes `bytes` at `offset`.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let r = self.range(offset, bytes.len() as u64)?;
        self.data[r].copy_from_slice(bytes);
        Ok(())
    }

    /// Little-endian u32 at `offset`.
    pub fn read_u32(&self, offset: u64) -> Result<u32, OutOfBounds> {
        let b = self.read(offset, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Little-endian u64 at `offset`.
    pub fn read_u64(&self, offset: u64) -> Result<u64, OutOfBounds> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.read(offset, 8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u32.
    pub fn write_u32(&mut self, offset: u64, v: u32) -> Result<(), OutOfBounds> {
        self.write(offset, &v.to_le_bytes())
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&mut self, offset: u64, v: u64) -> Result<(), OutOfBounds> {
        self.write(offset, &v.to_le_bytes())
    }

    /// A pointer-sized value (u32 in wasm32, u64 in memory64) at `offset`.
    pub fn read_pointer(&self, offset: u64) -> Result<u64, OutOfBounds> {
        if self.memory64 {
            self.read_u64(offset)
        } else {
            self.read_u32(offset).map(u64::from)
        }
    }

    /// Writes a pointer-sized value (truncated to 32 bits in wasm32).
    pub fn write_pointer(&mut self, offset: u64, v: u64) -> Result<(), OutOfBounds> {
        if self.memory64 {
            self.write_u64(offset, v)
        } else {
            self.write_u32(offset, v as u32)
        }
    }

    /// The bytes from `offset` up to (not including) the first NUL, searching at most
    /// `max` bytes; `None` when there is no NUL in that range.
    pub fn read_c_string(&self, offset: u64, max: u64) -> Result<Option<&[u8]>, OutOfBounds> {
        let len = max.min(self.size().saturating_sub(offset));
        let bytes = self.read(offset, len)?;
        Ok(bytes.iter().position(|&b| b == 0).map(|n| &bytes[..n]))
    }

    /// The whole memory.
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// The whole memory, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }
}

/// An import that failed: the wasm call stops with [`crate::TrapKind::Import`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    /// What went wrong.
    pub message: String,
}

impl HostError {
    /// An error with this text.
    pub fn new(message: impl Into<String>) -> Self {
        HostError {
            message: message.into(),
        }
    }
}

impl From<OutOfBounds> for HostError {
    fn from(e: OutOfBounds) -> Self {
        HostError::new(e.to_string())
    }
}

/// What an import returns: `Some(results)` (converted numerically to the import's
/// result types; the count must match), or `None` for "not provided here" (every
/// result 0, no memory written — spec 06 §2.3 step 3).
pub type ImportResult = Result<Option<Vec<Value>>, HostError>;

/// The host side of a module's imports: where the device layer routes each call
/// (AO-Core devices, WASI, stubs).
///
/// One value per instance, owned by it ([`crate::Instance::imports`] gives it back),
/// so it can also hold per-instance state (a captured stdout, a virtual file system).
/// It is called on the thread that called into the instance; imports cannot call
/// back into the module.
pub trait Imports: Send + 'static {
    /// Answers one call of `import` with `args` (already typed as the signature says).
    fn call(
        &mut self,
        import: &ImportFunc,
        args: &[Value],
        memory: &mut MemoryView<'_>,
    ) -> ImportResult;
}

/// Every import answers zeros (spec 06 §2.3 stubs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stubs;

impl Imports for Stubs {
    fn call(&mut self, _: &ImportFunc, _: &[Value], _: &mut MemoryView<'_>) -> ImportResult {
        Ok(None)
    }
}

impl<F> Imports for F
where
    F: FnMut(&ImportFunc, &[Value], &mut MemoryView<'_>) -> ImportResult + Send + 'static,
{
    fn call(
        &mut self,
        import: &ImportFunc,
        args: &[Value],
        memory: &mut MemoryView<'_>,
    ) -> ImportResult {
        self(import, args, memory)
    }
}

impl Imports for Box<dyn Imports> {
    fn call(
        &mut self,
        import: &ImportFunc,
        args: &[Value],
        memory: &mut MemoryView<'_>,
    ) -> ImportResult {
        (**self).call(import, args, memory)
    }
}
