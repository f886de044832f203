//! Load-time lowering of a 64-bit linear memory to a 32-bit one, with the same
//! behaviour (docs/adr/0007-memory64-lowering.md).
//!
//! Wasmtime cannot reserve address space for a 64-bit memory, so every load and store
//! of a memory64 module gets an explicit bounds check (the bound loaded from the
//! instance, a compare, a Spectre-safe select). A 32-bit memory lives in a 4 GiB
//! reservation with guard pages, where accesses need no check at all. The aos modules
//! declare memory64 but at most 2 GiB (32,768 pages), so every address they can use
//! fits in 32 bits: [`lower_memory64`] rewrites such a module to a 32-bit memory.
//!
//! The rewrite keeps every result and every trap of the original:
//!
//! * an address (or a length of `memory.fill`/`memory.copy`) below 4 GiB is wrapped
//!   to 32 bits, and then the 32-bit memory's own check (address + offset against the
//!   size) is the original's. An address of 4 GiB or more is out of bounds in the
//!   original (its memory is smaller than 4 GiB); it becomes `0xffffffff` (a `select`,
//!   no branch), which is out of bounds in the 32-bit memory too, so the trap is the
//!   same "out of bounds memory access";
//! * an access whose static offset is 4 GiB or more always traps in the original; it
//!   is replaced by an access that is out of bounds (`i32.load8_u offset=0xffffffff`
//!   at address `0xffffffff`), the same trap;
//! * `memory.size` answers an i64 again (`i64.extend_i32_u`); `memory.grow` with a
//!   delta of 2³² pages or more answers -1 without growing, as the original does (no
//!   memory may exceed its maximum, below 4 GiB);
//! * data segment offsets become `i32.const` of the same value.
//!
//! Only modules with exactly one memory, defined (not imported), 64-bit, not shared,
//! with 64 KiB pages and a maximum of at most 65,535 pages, whose data segments have
//! constant offsets below 4 GiB, are lowered; atomics or anything else the lowering
//! does not know make the output invalid, and then the module is left as it is. The
//! pointers the module passes to its imports are still 64-bit values: hosts must take
//! the pointer width from the original module ([`declares_memory64`]).

use wasm_encoder::{BlockType, ConstExpr, DataSection, Encode, Instruction, MemArg, ValType};
use wasmparser::{
    BinaryReader, DataKind, DataSectionReader, FunctionBody, FunctionSectionReader,
    MemorySectionReader, Operator, TypeRef, Validator, WasmFeatures,
};

use crate::{
    EhError, ModuleInfo, SECTION_CODE, SECTION_IMPORT, Section, code_reader, for_each_import,
    reader_for, split_sections, write_section,
};

const SECTION_FUNCTION: u8 = 3;
const SECTION_MEMORY: u8 = 5;
const SECTION_DATA: u8 = 11;

/// The largest maximum (in 64 KiB pages) of a lowered memory: one page short of
/// 4 GiB, so that address `0xffffffff` is out of bounds in every lowered memory.
const MAX_PAGES: u64 = (1 << 16) - 1;
/// The most locals (parameters included) a valid function has: wasmparser's limit.
const MAX_LOCALS: u32 = 50_000;

/// The largest address or static offset a 32-bit memory can take.
const MAX_32: u64 = u32::MAX as u64;

/// Whether the module's memory (defined or imported) is a 64-bit one: the width of
/// the pointers it passes to its imports, whether or not it is lowered.
pub fn declares_memory64(wasm: &[u8]) -> Result<bool, EhError> {
    let sections = split_sections(wasm)?;
    Ok(memories(&sections)?.first().is_some_and(|m| m.ty.memory64))
}

/// The module with its 64-bit memory lowered to a 32-bit one (see the module docs), or
/// `None` when the module is not one this lowering applies to. An error only for bytes
/// that are not a module.
pub fn lower_memory64(wasm: &[u8]) -> Result<Option<Vec<u8>>, EhError> {
    let sections = split_sections(wasm)?;
    let memories = memories(&sections)?;
    let [Memory { imported, ty }] = memories.as_slice() else {
        return Ok(None);
    };
    if *imported
        || !ty.memory64
        || ty.shared
        || ty.page_size_log2.is_some()
        || ty.maximum.is_none_or(|max| max > MAX_PAGES)
        || ty.initial > MAX_PAGES
    {
        return Ok(None);
    }
    let data = match sections.iter().find(|s| s.id == SECTION_DATA) {
        Some(section) => match lower_data(section)? {
            Some(data) => Some(data),
            None => return Ok(None),
        },
        None => None,
    };

    let info = ModuleInfo::read(&sections)?;
    let func_types = function_types(&sections)?;
    let mut out = Vec::with_capacity(wasm.len() + wasm.len() / 8);
    out.extend_from_slice(&wasm[..8]);
    for section in &sections {
        match section.id {
            SECTION_MEMORY => {
                let mut memories = wasm_encoder::MemorySection::new();
                memories.memory(wasm_encoder::MemoryType {
                    minimum: ty.initial,
                    maximum: ty.maximum,
                    memory64: false,
                    shared: false,
                    page_size_log2: None,
                });
                write_section(&mut out, SECTION_MEMORY, &section_body(&memories));
            }
            SECTION_CODE => {
                let mut code = Vec::with_capacity(section.data.len() + section.data.len() / 8);
                let bodies = code_reader(section)?;
                bodies.count().encode(&mut code);
                for (i, body) in bodies.into_iter().enumerate() {
                    let body = body?;
                    let params = func_types
                        .get(i)
                        .and_then(|&t| info.types.get(t as usize))
                        .and_then(Option::as_ref)
                        .map(|(params, _)| params.len() as u32);
                    let Some(params) = params else {
                        return Ok(None);
                    };
                    match lower_body(wasm, &body, params)? {
                        Some(lowered) => lowered.encode(&mut code),
                        None => wasm[body.range()].encode(&mut code),
                    }
                }
                write_section(&mut out, SECTION_CODE, &code);
            }
            SECTION_DATA => {
                write_section(
                    &mut out,
                    SECTION_DATA,
                    data.as_deref().unwrap_or(section.data),
                );
            }
            _ => out.extend_from_slice(section.raw),
        }
    }
    // Anything the lowering does not know (atomics, say) leaves an ill-typed module:
    // then the original is used as it is.
    let valid = Validator::new_with_features(WasmFeatures::all()).validate_all(&out);
    Ok(valid.is_ok().then_some(out))
}

/// A memory of the module, imported or defined.
struct Memory {
    imported: bool,
    ty: wasmparser::MemoryType,
}

fn memories(sections: &[Section<'_>]) -> Result<Vec<Memory>, EhError> {
    let mut out = Vec::new();
    for section in sections {
        match section.id {
            SECTION_IMPORT => for_each_import(section, |ty| {
                if let TypeRef::Memory(ty) = ty {
                    out.push(Memory { imported: true, ty });
                }
            })?,
            SECTION_MEMORY => {
                for ty in MemorySectionReader::new(reader_for(section))? {
                    out.push(Memory {
                        imported: false,
                        ty: ty?,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The type index of every defined function.
fn function_types(sections: &[Section<'_>]) -> Result<Vec<u32>, EhError> {
    let mut out = Vec::new();
    for section in sections.iter().filter(|s| s.id == SECTION_FUNCTION) {
        for ty in FunctionSectionReader::new(reader_for(section))? {
            out.push(ty?);
        }
    }
    Ok(out)
}

/// The contents of a section built by wasm-encoder (without its id and size).
fn section_body(section: &impl Encode) -> Vec<u8> {
    let mut framed = Vec::new();
    section.encode(&mut framed);
    let mut reader = BinaryReader::new(&framed, 0);
    match reader.read_var_u32() {
        Ok(_) => framed[reader.original_position()..].to_vec(),
        Err(_) => framed,
    }
}

/// The data section with every active segment's offset as an `i32.const`; `None`
/// when a segment's offset is not a constant below 4 GiB (no lowering).
fn lower_data(section: &Section<'_>) -> Result<Option<Vec<u8>>, EhError> {
    let mut data = DataSection::new();
    for segment in DataSectionReader::new(reader_for(section))? {
        let segment = segment?;
        match segment.kind {
            DataKind::Passive => {
                data.passive(segment.data.iter().copied());
            }
            DataKind::Active {
                memory_index,
                offset_expr,
            } => {
                let mut ops = offset_expr.get_operators_reader();
                let (Operator::I64Const { value }, Operator::End) = (ops.read()?, ops.read()?)
                else {
                    return Ok(None);
                };
                let Ok(offset) = u32::try_from(value) else {
                    return Ok(None);
                };
                if !ops.eof() {
                    return Ok(None);
                }
                data.active(
                    memory_index,
                    &ConstExpr::i32_const(offset as i32),
                    segment.data.iter().copied(),
                );
            }
        }
    }
    Ok(Some(section_body(&data)))
}

/// How an instruction uses the memory, for the lowering.
enum Use {
    /// Not at all: copied as it is.
    None,
    /// An address on top of the stack (loads).
    Address {
        offset: u64,
    },
    /// An address, then one value of this type on top (stores, lane loads and stores).
    AddressThen {
        offset: u64,
        value: ValType,
    },
    Size,
    Grow,
    /// `memory.fill`: address, byte (i32), length.
    Fill,
    /// `memory.copy`: destination, source, length.
    Copy,
    /// `memory.init`: address, then an i32 offset and length in the segment.
    Init,
}

fn memory_use(op: &Operator<'_>) -> Use {
    use Operator as O;
    let store = |memarg: &wasmparser::MemArg, value| Use::AddressThen {
        offset: memarg.offset,
        value,
    };
    match op {
        O::I32Load { memarg }
        | O::I64Load { memarg }
        | O::F32Load { memarg }
        | O::F64Load { memarg }
        | O::I32Load8S { memarg }
        | O::I32Load8U { memarg }
        | O::I32Load16S { memarg }
        | O::I32Load16U { memarg }
        | O::I64Load8S { memarg }
        | O::I64Load8U { memarg }
        | O::I64Load16S { memarg }
        | O::I64Load16U { memarg }
        | O::I64Load32S { memarg }
        | O::I64Load32U { memarg }
        | O::V128Load { memarg }
        | O::V128Load8x8S { memarg }
        | O::V128Load8x8U { memarg }
        | O::V128Load16x4S { memarg }
        | O::V128Load16x4U { memarg }
        | O::V128Load32x2S { memarg }
        | O::V128Load32x2U { memarg }
        | O::V128Load8Splat { memarg }
        | O::V128Load16Splat { memarg }
        | O::V128Load32Splat { memarg }
        | O::V128Load64Splat { memarg }
        | O::V128Load32Zero { memarg }
        | O::V128Load64Zero { memarg } => Use::Address {
            offset: memarg.offset,
        },
        O::I32Store { memarg } | O::I32Store8 { memarg } | O::I32Store16 { memarg } => {
            store(memarg, ValType::I32)
        }
        O::I64Store { memarg }
        | O::I64Store8 { memarg }
        | O::I64Store16 { memarg }
        | O::I64Store32 { memarg } => store(memarg, ValType::I64),
        O::F32Store { memarg } => store(memarg, ValType::F32),
        O::F64Store { memarg } => store(memarg, ValType::F64),
        O::V128Store { memarg }
        | O::V128Load8Lane { memarg, .. }
        | O::V128Load16Lane { memarg, .. }
        | O::V128Load32Lane { memarg, .. }
        | O::V128Load64Lane { memarg, .. }
        | O::V128Store8Lane { memarg, .. }
        | O::V128Store16Lane { memarg, .. }
        | O::V128Store32Lane { memarg, .. }
        | O::V128Store64Lane { memarg, .. } => store(memarg, ValType::V128),
        O::MemorySize { .. } => Use::Size,
        O::MemoryGrow { .. } => Use::Grow,
        O::MemoryFill { .. } => Use::Fill,
        O::MemoryCopy { .. } => Use::Copy,
        O::MemoryInit { .. } => Use::Init,
        _ => Use::None,
    }
}

/// Locals a lowered function adds after its own, allocated as they are first needed.
struct Scratch {
    /// Index of the first added local.
    base: u32,
    /// Type of each added local, in index order.
    added: Vec<ValType>,
}

impl Scratch {
    /// The `n`-th added local of type `ty` (the i64 at `n = 0` holds addresses while
    /// they are checked).
    fn get(&mut self, ty: ValType, n: usize) -> u32 {
        let mut seen = 0;
        for (i, t) in self.added.iter().enumerate() {
            if *t == ty {
                if seen == n {
                    return self.base + i as u32;
                }
                seen += 1;
            }
        }
        for _ in seen..n {
            self.added.push(ty);
        }
        self.added.push(ty);
        self.base + self.added.len() as u32 - 1
    }
}

/// An access that is always out of bounds, for one the original module makes with a
/// static offset of 4 GiB or more: the same trap, "out of bounds memory access".
fn emit_out_of_bounds(out: &mut Vec<u8>) {
    Instruction::I32Const(-1).encode(out);
    Instruction::I32Load8U(MemArg {
        offset: MAX_32,
        align: 0,
        memory_index: 0,
    })
    .encode(out);
    Instruction::Drop.encode(out);
}

/// Turns the i64 address (or length) on top of the stack into an i32: itself when it
/// is below 4 GiB, else `0xffffffff`, which no memory of at most 65,535 pages holds
/// (so the access traps as out of bounds). A `select`, not a branch: no new blocks.
fn emit_wrap(out: &mut Vec<u8>, scratch: &mut Scratch) {
    let a = scratch.get(ValType::I64, 0);
    Instruction::LocalSet(a).encode(out);
    Instruction::I32Const(-1).encode(out);
    Instruction::LocalGet(a).encode(out);
    Instruction::I32WrapI64.encode(out);
    Instruction::LocalGet(a).encode(out);
    Instruction::I64Const(MAX_32 as i64).encode(out);
    Instruction::I64GtU.encode(out);
    Instruction::Select.encode(out);
}

/// One function body with its memory instructions lowered; `None` if it has none.
fn lower_body(
    wasm: &[u8],
    body: &FunctionBody<'_>,
    params: u32,
) -> Result<Option<Vec<u8>>, EhError> {
    let range = body.range();
    let mut locals = body.get_locals_reader()?;
    let mut declared = params;
    let groups = locals.get_count();
    for _ in 0..groups.min(MAX_LOCALS + 1) {
        let (count, _) = locals.read()?;
        declared = declared.saturating_add(count);
    }
    if groups > MAX_LOCALS || declared > MAX_LOCALS {
        // Invalid anyway; left as it is (the module then fails validation and is not
        // lowered), and the local indices below cannot overflow.
        return Ok(None);
    }
    let mut ops = body.get_operators_reader()?;
    let locals_end = ops.original_position();
    // Where the groups start: after the count.
    let groups_start = {
        let mut r = BinaryReader::new(&wasm[range.start..locals_end], range.start);
        r.read_var_u32()?;
        r.original_position()
    };

    let mut scratch = Scratch {
        base: declared,
        added: Vec::new(),
    };
    let mut code = Vec::with_capacity(range.end - locals_end + 64);
    let mut lowered_any = false;
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read()?;
        let raw = &wasm[start..ops.original_position()];
        let usage = memory_use(&op);
        if !matches!(usage, Use::None) {
            lowered_any = true;
        }
        match usage {
            Use::None => code.extend_from_slice(raw),
            Use::Address { offset } | Use::AddressThen { offset, .. } if offset > MAX_32 => {
                // Always out of bounds in the original: the same trap, then nothing.
                emit_out_of_bounds(&mut code);
                Instruction::Unreachable.encode(&mut code);
            }
            Use::Address { .. } => {
                emit_wrap(&mut code, &mut scratch);
                code.extend_from_slice(raw);
            }
            Use::AddressThen { value, .. } => {
                let v = scratch.get(value, usize::from(value == ValType::I64));
                Instruction::LocalSet(v).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                Instruction::LocalGet(v).encode(&mut code);
                code.extend_from_slice(raw);
            }
            Use::Size => {
                code.extend_from_slice(raw);
                Instruction::I64ExtendI32U.encode(&mut code);
            }
            Use::Grow => {
                let a = scratch.get(ValType::I64, 0);
                Instruction::LocalTee(a).encode(&mut code);
                Instruction::I64Const(MAX_32 as i64).encode(&mut code);
                Instruction::I64GtU.encode(&mut code);
                Instruction::If(BlockType::Result(ValType::I64)).encode(&mut code);
                Instruction::I64Const(-1).encode(&mut code);
                Instruction::Else.encode(&mut code);
                Instruction::LocalGet(a).encode(&mut code);
                Instruction::I32WrapI64.encode(&mut code);
                code.extend_from_slice(raw);
                Instruction::I64ExtendI32S.encode(&mut code);
                Instruction::End.encode(&mut code);
            }
            Use::Fill => {
                let n = scratch.get(ValType::I64, 1);
                let byte = scratch.get(ValType::I32, 0);
                Instruction::LocalSet(n).encode(&mut code);
                Instruction::LocalSet(byte).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                Instruction::LocalGet(byte).encode(&mut code);
                Instruction::LocalGet(n).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                code.extend_from_slice(raw);
            }
            Use::Copy => {
                let n = scratch.get(ValType::I64, 1);
                let source = scratch.get(ValType::I64, 2);
                Instruction::LocalSet(n).encode(&mut code);
                Instruction::LocalSet(source).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                Instruction::LocalGet(source).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                Instruction::LocalGet(n).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                code.extend_from_slice(raw);
            }
            Use::Init => {
                let n = scratch.get(ValType::I32, 0);
                let source = scratch.get(ValType::I32, 1);
                Instruction::LocalSet(n).encode(&mut code);
                Instruction::LocalSet(source).encode(&mut code);
                emit_wrap(&mut code, &mut scratch);
                Instruction::LocalGet(source).encode(&mut code);
                Instruction::LocalGet(n).encode(&mut code);
                code.extend_from_slice(raw);
            }
        }
    }
    if !lowered_any {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(code.len() + (locals_end - range.start) + 16);
    (groups + scratch.added.len() as u32).encode(&mut out);
    out.extend_from_slice(&wasm[groups_start..locals_end]);
    for ty in &scratch.added {
        1u32.encode(&mut out);
        ty.encode(&mut out);
    }
    out.extend_from_slice(&code);
    Ok(Some(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wasmtime::{Engine, Instance, Module, Store, Trap, Val};

    /// Every instruction the lowering changes, on a memory64 memory of 1..4 pages with
    /// an active and a passive data segment.
    const MODULE: &str = r#"(module
        (memory (export "memory") i64 1 4)
        (data (i64.const 16) "hello")
        (data $p "passive!")
        (func (export "load8") (param i64) (result i32) local.get 0 i32.load8_u)
        (func (export "load64") (param i64) (result i64) local.get 0 i64.load offset=8)
        (func (export "far") (param i64) (result i32)
            local.get 0 i32.load offset=0x100000000)
        (func (export "store") (param i64 i64) (result i64)
            local.get 0 local.get 1 i64.store offset=3
            local.get 0 i64.load offset=3)
        (func (export "storef") (param i64 f64) (result f64)
            local.get 0 local.get 1 f64.store
            local.get 0 f64.load)
        (func (export "farstore") (param i64) local.get 0 i32.const 1 i32.store offset=0x100000000)
        (func (export "size") (result i64) memory.size)
        (func (export "grow") (param i64) (result i64) local.get 0 memory.grow)
        (func (export "fill") (param i64 i64) (result i64)
            local.get 0 i32.const 7 local.get 1 memory.fill
            local.get 0 i64.load)
        (func (export "copy") (param i64 i64 i64) (result i64)
            local.get 0 local.get 1 local.get 2 memory.copy
            local.get 0 i64.load)
        (func (export "init") (param i64 i32 i32) (result i64)
            local.get 0 local.get 1 local.get 2 memory.init $p
            local.get 0 i64.load))"#;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_memory64(true);
        Engine::new(&config).unwrap()
    }

    /// The original module and its lowered form, compiled.
    fn both(text: &str) -> [(Engine, Module); 2] {
        let original = wat::parse_str(text).unwrap();
        let lowered = lower_memory64(&original).unwrap().expect("lowered");
        assert!(declares_memory64(&original).unwrap());
        assert!(!declares_memory64(&lowered).unwrap());
        [original, lowered].map(|wasm| {
            let engine = engine();
            let module = Module::new(&engine, &wasm).unwrap();
            (engine, module)
        })
    }

    /// What a call did: its results as bits, or the trap it stopped with.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        Values(Vec<u128>),
        Trap(Trap),
    }

    fn call(engine: &Engine, module: &Module, f: &str, args: &[Val]) -> Outcome {
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, module, &[]).unwrap();
        let func = instance.get_func(&mut store, f).unwrap();
        let mut results = vec![Val::I64(0); func.ty(&store).results().len()];
        match func.call(&mut store, args, &mut results) {
            Ok(()) => Outcome::Values(
                results
                    .iter()
                    .map(|v| match *v {
                        Val::I32(x) => x as u32 as u128,
                        Val::I64(x) => x as u64 as u128,
                        Val::F64(x) => u128::from(x),
                        ref other => panic!("unexpected result {other:?}"),
                    })
                    .collect(),
            ),
            Err(e) => Outcome::Trap(*e.downcast_ref::<Trap>().unwrap()),
        }
    }

    /// Calls `f(args)` on both modules and checks they agree; returns the outcome.
    fn same(modules: &[(Engine, Module); 2], f: &str, args: &[Val]) -> Outcome {
        let [a, b] = modules.each_ref().map(|(e, m)| call(e, m, f, args));
        assert_eq!(a, b, "{f}({args:?})");
        a
    }

    const PAGE: u64 = 65536;
    const ADDRESSES: [u64; 12] = [
        0,
        16,
        PAGE - 9,
        PAGE - 8,
        PAGE,
        3 * PAGE,
        u32::MAX as u64 - 3,
        u32::MAX as u64,
        1 << 32,
        (1 << 32) + 16,
        1 << 63,
        u64::MAX,
    ];

    #[test]
    fn lowered_module_behaves_like_the_original() {
        let m = both(MODULE);
        let oob = Outcome::Trap(Trap::MemoryOutOfBounds);
        let i64v = |x: u64| Val::I64(x as i64);

        // In bounds: the data segment is where it was, at the same address.
        assert_eq!(
            same(&m, "load8", &[i64v(16)]),
            Outcome::Values(vec![b'h' as u128])
        );
        assert_eq!(same(&m, "load8", &[i64v(PAGE)]), oob);
        assert_eq!(same(&m, "load8", &[i64v(1 << 32)]), oob);
        assert_eq!(same(&m, "load8", &[i64v((1 << 32) + 16)]), oob);
        assert_eq!(same(&m, "far", &[i64v(0)]), oob);
        assert_eq!(same(&m, "farstore", &[i64v(0)]), oob);
        assert_eq!(same(&m, "size", &[]), Outcome::Values(vec![1]));
        for a in ADDRESSES {
            same(&m, "load8", &[i64v(a)]);
            same(&m, "load64", &[i64v(a)]);
            same(&m, "store", &[i64v(a), i64v(0x0102_0304_0506_0708)]);
            same(&m, "storef", &[i64v(a), Val::F64(1.5f64.to_bits())]);
            same(&m, "fill", &[i64v(a), i64v(8)]);
            same(&m, "fill", &[i64v(16), i64v(a)]);
            same(&m, "copy", &[i64v(a), i64v(16), i64v(8)]);
            same(&m, "copy", &[i64v(32), i64v(a), i64v(8)]);
            same(&m, "copy", &[i64v(32), i64v(16), i64v(a)]);
            same(&m, "init", &[i64v(a), Val::I32(0), Val::I32(8)]);
            same(&m, "grow", &[i64v(a)]);
        }
        assert_eq!(
            same(&m, "store", &[i64v(PAGE - 11), i64v(42)]),
            Outcome::Values(vec![42])
        );
        assert_eq!(same(&m, "store", &[i64v(PAGE - 10), i64v(42)]), oob);
        assert_eq!(
            same(&m, "copy", &[i64v(64), i64v(16), i64v(5)]),
            Outcome::Values(vec![u128::from(u64::from_le_bytes(*b"hello\0\0\0"))])
        );
        assert_eq!(
            same(&m, "init", &[i64v(8), Val::I32(0), Val::I32(8)]),
            Outcome::Values(vec![u128::from(u64::from_le_bytes(*b"passive!"))])
        );
        assert_eq!(same(&m, "grow", &[i64v(3)]), Outcome::Values(vec![1]));
        assert_eq!(
            same(&m, "grow", &[i64v(4)]),
            Outcome::Values(vec![u64::MAX as u128])
        );
        assert_eq!(
            same(&m, "grow", &[i64v((1 << 32) + 1)]),
            Outcome::Values(vec![u64::MAX as u128])
        );
        assert_eq!(same(&m, "fill", &[i64v(0), i64v(1 << 32)]), oob);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any addresses and lengths: the same results and the same traps.
        #[test]
        fn any_address_gives_the_same_outcome(
            a in prop_oneof![0u64..3 * PAGE, any::<u64>(), (0u64..64).prop_map(|k| (1 << 32) - 32 + k)],
            b in prop_oneof![0u64..PAGE + 64, any::<u64>()],
            n in prop_oneof![0u64..64, any::<u64>()],
        ) {
            thread_local!(static MODULES: [(Engine, Module); 2] = both(MODULE));
            MODULES.with(|m| {
                let i64v = |x: u64| Val::I64(x as i64);
                same(m, "load64", &[i64v(a)]);
                same(m, "store", &[i64v(a), i64v(b)]);
                same(m, "fill", &[i64v(a), i64v(n)]);
                same(m, "copy", &[i64v(a), i64v(b), i64v(n)]);
                same(m, "init", &[i64v(a), Val::I32(b as i32), Val::I32(n as i32)]);
                same(m, "grow", &[i64v(n)]);
            });
        }
    }

    #[test]
    fn modules_the_lowering_does_not_apply_to() {
        for text in [
            // No memory; a 32-bit one; two memories.
            "(module)",
            "(module (memory 1 2))",
            "(module (memory i64 1 2) (memory i64 1 2))",
            // Imported; no maximum; a maximum of 4 GiB.
            r#"(module (import "env" "memory" (memory i64 1 2)))"#,
            "(module (memory i64 1))",
            "(module (memory i64 1 65536))",
            // A data offset that is not a constant; one of 4 GiB.
            r#"(module (global $g (import "env" "g") i64) (memory i64 1 2) (data (global.get $g) "x"))"#,
            r#"(module (memory i64 1 2) (data (i64.const 0x100000000) "x"))"#,
            // Shared (atomics).
            r#"(module (memory i64 1 2 shared)
                (func (param i64) (result i64) local.get 0 i64.atomic.load))"#,
        ] {
            let wasm = wat::parse_str(text).unwrap();
            assert_eq!(lower_memory64(&wasm).unwrap(), None, "{text}");
        }
        // An unshared memory with an atomic access: lowering it would be ill-typed.
        let wasm = wat::parse_str(
            "(module (memory i64 1 2) (func (param i64) (result i64) local.get 0 i64.atomic.load))",
        )
        .unwrap();
        assert_eq!(lower_memory64(&wasm).unwrap(), None);
        assert!(lower_memory64(b"\0asm\x01\0\0\0\x05\x7f").is_err());
    }

    /// A function declaring more locals than a valid module may have (2³² - 1): not
    /// lowered, and no index arithmetic overflows.
    #[test]
    fn too_many_locals_are_left_alone() {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend([1, 4, 1, 0x60, 0, 0]); // type: () -> ()
        wasm.extend([3, 2, 1, 0]); // one function of that type
        wasm.extend([5, 4, 1, 0x05, 1, 2]); // memory i64 1 2
        // One body: 0xffffffff locals of i32; i64.const 0, i64.load, drop, end.
        let body = [
            1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x7f, 0x42, 0, 0x29, 3, 0, 0x1a, 0x0b,
        ];
        wasm.extend([10, body.len() as u8 + 2, 1, body.len() as u8]);
        wasm.extend(body);
        assert!(declares_memory64(&wasm).unwrap());
        assert_eq!(lower_memory64(&wasm).unwrap(), None);
    }

    /// The aos modules (after the exception rewrite) are lowered, to valid modules;
    /// the engine tests run them.
    #[test]
    fn aos_fixtures_are_lowered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");
        for name in [
            "aos-2-pure-xs.wasm",
            "aos-2-pure.wasm",
            "test-standalone-wex-aos.wasm",
            "test-calling.wasm",
        ] {
            let wasm = std::fs::read(format!("{dir}/{name}")).unwrap();
            let wasm = crate::rewrite_legacy_eh(&wasm).unwrap();
            let started = std::time::Instant::now();
            let lowered = lower_memory64(&wasm).unwrap();
            eprintln!("{name}: lowered in {:?}", started.elapsed());
            let lowered = lowered.unwrap_or_else(|| panic!("{name} was not lowered"));
            assert!(declares_memory64(&wasm).unwrap(), "{name}");
            assert!(!declares_memory64(&lowered).unwrap(), "{name}");
        }
    }

    /// Truncated and corrupted modules give errors or `None`, never panics.
    #[test]
    fn mutated_inputs_do_not_panic() {
        let wasm = wat::parse_str(MODULE).unwrap();
        for len in 0..wasm.len() {
            let _ = lower_memory64(&wasm[..len]);
            let _ = declares_memory64(&wasm[..len]);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5_000 {
            let mut m = wasm.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % m.len() as u64) as usize;
                m[i] = (state >> 32) as u8;
            }
            if let Ok(Some(out)) = lower_memory64(&m) {
                Validator::new_with_features(WasmFeatures::all())
                    .validate_all(&out)
                    .unwrap();
            }
        }
    }
}
