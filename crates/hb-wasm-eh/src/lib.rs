//! Load-time rewrite of the *legacy* exception-handling opcodes (spec 06 §2.9 item 1).
//!
//! The aos modules were built with an emscripten that emits the phase-3 ("legacy")
//! exception-handling encoding: `try (bt) … catch $t … catch_all … end`. Wasmtime only
//! implements the standardised form (`try_table` + `exnref`) and refuses to compile the
//! legacy opcodes, so [`rewrite_legacy_eh`] translates every legacy `try` into the
//! equivalent standard construct before the module reaches the compiler:
//!
//! ```text
//! try (bt)                         block (bt)                           ;; "outer"
//!   BODY                             block (P -> params of tag n)      ;; clause n
//! catch $t1                            …
//!   H1                                   block (P -> params of tag 1)  ;; clause 1
//! …                                        try_table (bt) (catch $t1 0) … (catch_all n-1)
//! catch_all                                  BODY
//!   Hn                                     end
//! end                                      br outer
//!                                        end
//!                                        H1
//!                                        br outer
//!                                      end
//!                                      …
//!                                    end
//!                                    Hn
//!                                  end
//! ```
//!
//! The first clause gets the innermost block, so that `try_table`'s catch clause *i*
//! targets label *i*. Every branch (`br`, `br_if`, `br_table`, `br_on_*`, the labels of
//! an existing `try_table`) is re-targeted: the rewriter keeps the control stack of the
//! original function and of the emitted one side by side and maps each original label
//! to the emitted label that continues at the same place (a branch to a legacy `try`
//! from its body goes to the `try_table`, from a handler to the outer block), so depths
//! crossing a rewritten construct are shifted by the number of blocks added in between.
//!
//! `rethrow` and `delegate` would need `catch_ref`/`throw_ref` and extra locals; no
//! fixture uses them and they are rejected with [`EhError::Unsupported`]. Modules
//! without legacy opcodes are returned untouched ([`Cow::Borrowed`]); in a module that
//! has them only the functions that contain a legacy `try` are re-encoded, every other
//! byte (sections, other function bodies, custom sections) is copied as is. If a tag
//! has several parameters, or a `try` block type has parameters, the block types the
//! rewrite needs are appended to the type section (existing type indices are
//! unchanged).

use std::borrow::Cow;
use std::collections::HashMap;

use wasm_encoder::{BlockType as NewBlockType, Catch as NewCatch, Encode, Instruction, ValType};
use wasmparser::{
    BinaryReader, BlockType, CodeSectionReader, CompositeInnerType, FunctionBody,
    ImportSectionReader, Imports, Operator, TagSectionReader, TypeRef, TypeSectionReader,
    WasmFeatures,
};

mod memory64;

pub use memory64::{declares_memory64, lower_memory64};

/// Version of the load-time rewrites (this one and [`lower_memory64`]); part of the
/// key of compiled artifacts on disk, so that a change to a rewrite never reuses code
/// compiled from an older one.
pub const REWRITE_VERSION: u32 = 2;

/// Why a module could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum EhError {
    /// The bytes are not a well-formed WebAssembly module.
    #[error("malformed wasm module at byte {offset}: {message}")]
    Malformed {
        /// Byte offset in the module.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// A legacy construct the rewrite does not translate.
    #[error(
        "legacy exception handling: `{op}` in function {func} is not supported \
         (only try/catch/catch_all are rewritten)"
    )]
    Unsupported {
        /// Index of the function (imports included).
        func: u32,
        /// The instruction.
        op: &'static str,
    },
    /// The function's control structure or types do not add up.
    #[error("legacy exception handling: function {func}: {message}")]
    Invalid {
        /// Index of the function (imports included).
        func: u32,
        /// What was wrong.
        message: String,
    },
}

impl From<wasmparser::BinaryReaderError> for EhError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        EhError::Malformed {
            offset: e.offset(),
            message: e.message().to_string(),
        }
    }
}

/// Rewrites the legacy exception-handling opcodes of `wasm` into standard ones.
///
/// Returns the input itself when it has no legacy opcodes.
pub fn rewrite_legacy_eh(wasm: &[u8]) -> Result<Cow<'_, [u8]>, EhError> {
    let sections = split_sections(wasm)?;
    let Some(code) = sections.iter().find(|s| s.id == SECTION_CODE) else {
        return Ok(Cow::Borrowed(wasm));
    };

    // Module facts the rewrite needs: function types, tag types, imported functions.
    let info = ModuleInfo::read(&sections)?;

    // Pass 1: which functions use legacy opcodes, and the clauses of each of their `try`s.
    let mut bodies = Vec::new();
    let mut any_legacy = false;
    for (i, body) in code_reader(code)?.into_iter().enumerate() {
        let body = body?;
        let tries = scan_function(&body, info.imported_funcs + i as u32)?;
        any_legacy |= tries.is_some();
        bodies.push((body, tries));
    }
    if !any_legacy {
        return Ok(Cow::Borrowed(wasm));
    }
    let mut new_types = NewTypes {
        base: info.type_count,
        list: Vec::new(),
        index: HashMap::new(),
    };
    let mut code_out = Vec::with_capacity(code.data.len() + 64);
    bodies.len().encode(&mut code_out);
    for (i, (body, tries)) in bodies.iter().enumerate() {
        let func = info.imported_funcs + i as u32;
        let range = body.range();
        match tries {
            None => wasm[range].encode(&mut code_out),
            Some(tries) => {
                let rewritten = Rewriter {
                    wasm,
                    func,
                    info: &info,
                    new_types: &mut new_types,
                }
                .rewrite(body, tries)?;
                rewritten.encode(&mut code_out);
            }
        }
    }

    let mut out = Vec::with_capacity(wasm.len() + 256);
    out.extend_from_slice(&wasm[..8]);
    for section in &sections {
        match section.id {
            SECTION_CODE => write_section(&mut out, SECTION_CODE, &code_out),
            SECTION_TYPE if !new_types.list.is_empty() => {
                let mut reader = BinaryReader::new(section.data, section.offset);
                let groups = reader.read_var_u32()?;
                let entries = &section.data[reader.original_position() - section.offset..];
                let mut data = Vec::with_capacity(section.data.len() + 32);
                (groups + new_types.list.len() as u32).encode(&mut data);
                data.extend_from_slice(entries);
                for (params, results) in &new_types.list {
                    data.push(0x60);
                    params.as_slice().encode(&mut data);
                    results.as_slice().encode(&mut data);
                }
                write_section(&mut out, SECTION_TYPE, &data);
            }
            _ => out.extend_from_slice(section.raw),
        }
    }
    if !new_types.list.is_empty() && !sections.iter().any(|s| s.id == SECTION_TYPE) {
        return Err(EhError::Malformed {
            offset: 8,
            message: "module uses tags but has no type section".into(),
        });
    }
    Ok(Cow::Owned(out))
}

/// Whether `wasm` contains any legacy exception-handling opcode.
pub fn has_legacy_eh(wasm: &[u8]) -> Result<bool, EhError> {
    let sections = split_sections(wasm)?;
    let Some(code) = sections.iter().find(|s| s.id == SECTION_CODE) else {
        return Ok(false);
    };
    let imported_funcs = ModuleInfo::read(&sections)?.imported_funcs;
    for (i, body) in code_reader(code)?.into_iter().enumerate() {
        if scan_function(&body?, imported_funcs + i as u32)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

const SECTION_TYPE: u8 = 1;
const SECTION_IMPORT: u8 = 2;
const SECTION_CODE: u8 = 10;
const SECTION_TAG: u8 = 13;

/// One top-level section: its id, its contents and its bytes including the header.
struct Section<'a> {
    id: u8,
    /// Offset of `data` in the module.
    offset: usize,
    data: &'a [u8],
    raw: &'a [u8],
}

fn split_sections(wasm: &[u8]) -> Result<Vec<Section<'_>>, EhError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(EhError::Malformed {
            offset: 0,
            message: "not a WebAssembly binary (bad magic)".into(),
        });
    }
    if wasm[4..8] != [1, 0, 0, 0] {
        return Err(EhError::Malformed {
            offset: 4,
            message: "not a core WebAssembly module (version/layer is not 1)".into(),
        });
    }
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < wasm.len() {
        let start = pos;
        let id = wasm[pos];
        let mut reader = BinaryReader::new(&wasm[pos + 1..], pos + 1);
        let size = reader.read_var_u32()? as usize;
        let offset = reader.original_position();
        let end = offset
            .checked_add(size)
            .filter(|&end| end <= wasm.len())
            .ok_or_else(|| EhError::Malformed {
                offset: start,
                message: format!("section {id} runs past the end of the module"),
            })?;
        sections.push(Section {
            id,
            offset,
            data: &wasm[offset..end],
            raw: &wasm[start..end],
        });
        pos = end;
    }
    Ok(sections)
}

fn write_section(out: &mut Vec<u8>, id: u8, data: &[u8]) {
    out.push(id);
    data.encode(out);
}

fn reader_for<'a>(section: &Section<'a>) -> BinaryReader<'a> {
    BinaryReader::new_features(section.data, section.offset, WasmFeatures::all())
}

fn code_reader<'a>(code: &Section<'a>) -> Result<CodeSectionReader<'a>, EhError> {
    Ok(CodeSectionReader::new(reader_for(code))?)
}

/// A clause of a legacy `try`.
#[derive(Clone, Copy, Debug)]
enum Clause {
    Catch(u32),
    CatchAll,
}

/// Pass 1 over one function: `None` when it has no legacy opcode, else the clauses of
/// each `try`, in the order the `try`s appear.
fn scan_function(body: &FunctionBody<'_>, func: u32) -> Result<Option<Vec<Vec<Clause>>>, EhError> {
    let mut ops = body.get_operators_reader()?;
    let mut tries: Vec<Vec<Clause>> = Vec::new();
    // For each open frame: the index of its `try` if it is a legacy `try`.
    let mut stack: Vec<Option<usize>> = vec![None];
    while !ops.eof() {
        match ops.read()? {
            Operator::Try { .. } => {
                stack.push(Some(tries.len()));
                tries.push(Vec::new());
            }
            op @ (Operator::Catch { .. } | Operator::CatchAll) => {
                let clause = match op {
                    Operator::Catch { tag_index } => Clause::Catch(tag_index),
                    _ => Clause::CatchAll,
                };
                match stack.last() {
                    Some(Some(t)) => tries[*t].push(clause),
                    _ => {
                        return Err(EhError::Invalid {
                            func,
                            message: "`catch` outside a `try`".into(),
                        });
                    }
                }
            }
            Operator::Delegate { .. } => {
                return Err(EhError::Unsupported {
                    func,
                    op: "delegate",
                });
            }
            Operator::Rethrow { .. } => {
                return Err(EhError::Unsupported {
                    func,
                    op: "rethrow",
                });
            }
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. } => stack.push(None),
            Operator::End => {
                stack.pop();
            }
            _ => {}
        }
    }
    Ok((!tries.is_empty()).then_some(tries))
}

/// Calls `f` with the type of each import of an import section, in order.
fn for_each_import(section: &Section<'_>, mut f: impl FnMut(TypeRef)) -> Result<(), EhError> {
    for imports in ImportSectionReader::new(reader_for(section))? {
        match imports? {
            Imports::Single(_, import) => f(import.ty),
            Imports::Compact1 { items, .. } => {
                for item in items {
                    f(item?.ty);
                }
            }
            Imports::Compact2 { ty, names, .. } => {
                for name in names {
                    name?;
                    f(ty);
                }
            }
        }
    }
    Ok(())
}

/// What the rewrite needs to know about the module.
struct ModuleInfo {
    /// Function types by type index (`None` for struct/array types).
    types: Vec<Option<(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>)>>,
    /// Total number of types.
    type_count: u32,
    /// Type index of each tag (imported tags first).
    tags: Vec<u32>,
    /// Number of imported functions (function indices of bodies start there).
    imported_funcs: u32,
}

impl ModuleInfo {
    fn read(sections: &[Section<'_>]) -> Result<Self, EhError> {
        let mut info = ModuleInfo {
            types: Vec::new(),
            type_count: 0,
            tags: Vec::new(),
            imported_funcs: 0,
        };
        for section in sections {
            match section.id {
                SECTION_TYPE => {
                    for group in TypeSectionReader::new(reader_for(section))? {
                        for sub in group?.into_types() {
                            info.types.push(match &sub.composite_type.inner {
                                CompositeInnerType::Func(f) => {
                                    Some((f.params().to_vec(), f.results().to_vec()))
                                }
                                _ => None,
                            });
                        }
                    }
                    info.type_count = info.types.len() as u32;
                }
                SECTION_IMPORT => for_each_import(section, |ty| match ty {
                    TypeRef::Func(_) | TypeRef::FuncExact(_) => info.imported_funcs += 1,
                    TypeRef::Tag(t) => info.tags.push(t.func_type_idx),
                    _ => {}
                })?,
                SECTION_TAG => {
                    for tag in TagSectionReader::new(reader_for(section))? {
                        info.tags.push(tag?.func_type_idx);
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    fn func_type(
        &self,
        index: u32,
        func: u32,
    ) -> Result<&(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>), EhError> {
        self.types
            .get(index as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| EhError::Invalid {
                func,
                message: format!("type {index} is not a function type"),
            })
    }
}

/// Function types appended to the type section for the handler blocks.
struct NewTypes {
    base: u32,
    list: Vec<(Vec<ValType>, Vec<ValType>)>,
    index: HashMap<(Vec<ValType>, Vec<ValType>), u32>,
}

impl NewTypes {
    fn get(&mut self, params: Vec<ValType>, results: Vec<ValType>) -> u32 {
        let key = (params, results);
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.base + self.list.len() as u32;
        self.list.push(key.clone());
        self.index.insert(key, i);
        i
    }
}

/// A frame of the original function's control stack.
#[derive(Clone, Copy, Debug)]
enum Frame {
    /// `block`, `loop`, `if`, `try_table`, or the function itself: one emitted label.
    Plain {
        /// Index (in the emitted control stack) of the label it maps to.
        target: usize,
    },
    /// A legacy `try`, emitted as outer block + one block per clause + `try_table`.
    Try {
        /// Where a branch to the `try` lands: the `try_table` while in the body, the
        /// outer block while in a handler.
        target: usize,
        /// Index of the outer block.
        outer: usize,
        /// Number of clauses seen so far (0 = in the body).
        seen: usize,
    },
}

impl Frame {
    fn target(&self) -> usize {
        match *self {
            Frame::Plain { target } | Frame::Try { target, .. } => target,
        }
    }
}

struct Rewriter<'a, 'n> {
    wasm: &'a [u8],
    func: u32,
    info: &'a ModuleInfo,
    new_types: &'n mut NewTypes,
}

impl Rewriter<'_, '_> {
    fn invalid(&self, message: impl Into<String>) -> EhError {
        EhError::Invalid {
            func: self.func,
            message: message.into(),
        }
    }

    fn val_type(&self, ty: wasmparser::ValType) -> Result<ValType, EhError> {
        ValType::try_from(ty).map_err(|e| self.invalid(format!("value type: {e}")))
    }

    fn block_type(&self, ty: BlockType) -> Result<NewBlockType, EhError> {
        NewBlockType::try_from(ty).map_err(|e| self.invalid(format!("block type: {e}")))
    }

    /// The parameters of a `try`'s block type.
    fn block_params(&self, ty: BlockType) -> Result<Vec<wasmparser::ValType>, EhError> {
        match ty {
            BlockType::Empty | BlockType::Type(_) => Ok(Vec::new()),
            BlockType::FuncType(i) => Ok(self.info.func_type(i, self.func)?.0.clone()),
        }
    }

    /// The block type of a clause's block: the `try`'s parameters to the tag's parameters.
    fn clause_block_type(
        &mut self,
        try_params: &[wasmparser::ValType],
        clause: Clause,
    ) -> Result<NewBlockType, EhError> {
        let results: Vec<wasmparser::ValType> = match clause {
            Clause::CatchAll => Vec::new(),
            Clause::Catch(tag) => {
                let ty = *self
                    .info
                    .tags
                    .get(tag as usize)
                    .ok_or_else(|| self.invalid(format!("unknown tag {tag}")))?;
                let (params, results) = self.info.func_type(ty, self.func)?;
                if !results.is_empty() {
                    return Err(self.invalid(format!("tag {tag} has results")));
                }
                params.clone()
            }
        };
        if try_params.is_empty() && results.len() <= 1 {
            return match results.first() {
                None => Ok(NewBlockType::Empty),
                Some(&t) => Ok(NewBlockType::Result(self.val_type(t)?)),
            };
        }
        let params = try_params
            .iter()
            .map(|&t| self.val_type(t))
            .collect::<Result<Vec<_>, _>>()?;
        let results = results
            .iter()
            .map(|&t| self.val_type(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NewBlockType::FunctionType(
            self.new_types.get(params, results),
        ))
    }

    /// Pass 2 over one function: its body with every legacy `try` rewritten.
    fn rewrite(
        mut self,
        body: &FunctionBody<'_>,
        tries: &[Vec<Clause>],
    ) -> Result<Vec<u8>, EhError> {
        let mut ops = body.get_operators_reader()?;
        let range = body.range();
        let mut out = Vec::with_capacity(range.len() + 64);
        // The locals, copied as they are.
        out.extend_from_slice(&self.wasm[range.start..ops.original_position()]);

        let mut frames = vec![Frame::Plain { target: 0 }];
        // Height of the emitted control stack (the function's own label is index 0).
        let mut height = 1usize;
        let mut next_try = 0usize;

        // Maps a relative depth of the original code to one of the emitted code.
        let depth = |frames: &[Frame], height: usize, d: u32| -> Option<u32> {
            let frame = frames.get(frames.len().checked_sub(1 + d as usize)?)?;
            u32::try_from(height - 1 - frame.target()).ok()
        };
        macro_rules! map {
            ($d:expr) => {
                depth(&frames, height, $d)
                    .ok_or_else(|| self.invalid(format!("branch depth {} out of range", $d)))?
            };
        }

        while !ops.eof() {
            let start = ops.original_position();
            let op = ops.read()?;
            let raw = &self.wasm[start..ops.original_position()];
            match op {
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                    out.extend_from_slice(raw);
                    frames.push(Frame::Plain { target: height });
                    height += 1;
                }
                Operator::TryTable { try_table } => {
                    let catches = try_table
                        .catches
                        .iter()
                        .map(|c| {
                            Ok(match *c {
                                wasmparser::Catch::One { tag, label } => NewCatch::One {
                                    tag,
                                    label: map!(label),
                                },
                                wasmparser::Catch::OneRef { tag, label } => NewCatch::OneRef {
                                    tag,
                                    label: map!(label),
                                },
                                wasmparser::Catch::All { label } => {
                                    NewCatch::All { label: map!(label) }
                                }
                                wasmparser::Catch::AllRef { label } => {
                                    NewCatch::AllRef { label: map!(label) }
                                }
                            })
                        })
                        .collect::<Result<Vec<_>, EhError>>()?;
                    Instruction::TryTable(self.block_type(try_table.ty)?, catches.into())
                        .encode(&mut out);
                    frames.push(Frame::Plain { target: height });
                    height += 1;
                }
                Operator::Try { blockty } => {
                    let clauses = tries
                        .get(next_try)
                        .ok_or_else(|| self.invalid("try count changed between passes"))?;
                    next_try += 1;
                    let bt = self.block_type(blockty)?;
                    let params = self.block_params(blockty)?;
                    let outer = height;
                    Instruction::Block(bt).encode(&mut out);
                    height += 1;
                    // The last clause's block outermost, the first's innermost.
                    for &clause in clauses.iter().rev() {
                        Instruction::Block(self.clause_block_type(&params, clause)?)
                            .encode(&mut out);
                        height += 1;
                    }
                    let catches: Vec<NewCatch> = clauses
                        .iter()
                        .enumerate()
                        .map(|(i, c)| match *c {
                            Clause::Catch(tag) => NewCatch::One {
                                tag,
                                label: i as u32,
                            },
                            Clause::CatchAll => NewCatch::All { label: i as u32 },
                        })
                        .collect();
                    Instruction::TryTable(bt, catches.into()).encode(&mut out);
                    frames.push(Frame::Try {
                        target: height,
                        outer,
                        seen: 0,
                    });
                    height += 1;
                }
                Operator::Catch { .. } | Operator::CatchAll => {
                    let Some(Frame::Try {
                        target,
                        outer,
                        seen,
                    }) = frames.last_mut()
                    else {
                        return Err(self.invalid("`catch` outside a `try`"));
                    };
                    if *seen == 0 {
                        // End of the body: close the try_table, leave with its results.
                        Instruction::End.encode(&mut out);
                        height -= 1;
                    }
                    // End of the body or of the previous handler: jump past the construct,
                    // then close this clause's block, which the catch lands at the end of.
                    Instruction::Br((height - 1 - *outer) as u32).encode(&mut out);
                    Instruction::End.encode(&mut out);
                    height -= 1;
                    *seen += 1;
                    *target = *outer;
                }
                Operator::End => match frames.pop() {
                    Some(Frame::Plain { .. }) => {
                        out.extend_from_slice(raw);
                        height -= 1;
                    }
                    Some(Frame::Try { seen, .. }) => {
                        if seen == 0 {
                            // A `try` without clauses: close the try_table.
                            Instruction::End.encode(&mut out);
                            height -= 1;
                        }
                        // Close the outer block (the last handler falls through to it).
                        Instruction::End.encode(&mut out);
                        height -= 1;
                    }
                    None => return Err(self.invalid("unbalanced `end`")),
                },
                Operator::Br { relative_depth } => {
                    Instruction::Br(map!(relative_depth)).encode(&mut out)
                }
                Operator::BrIf { relative_depth } => {
                    Instruction::BrIf(map!(relative_depth)).encode(&mut out)
                }
                Operator::BrOnNull { relative_depth } => {
                    Instruction::BrOnNull(map!(relative_depth)).encode(&mut out)
                }
                Operator::BrOnNonNull { relative_depth } => {
                    Instruction::BrOnNonNull(map!(relative_depth)).encode(&mut out)
                }
                Operator::BrTable { targets } => {
                    let mut labels = Vec::with_capacity(targets.len() as usize);
                    for t in targets.targets() {
                        let t = t?;
                        labels.push(map!(t));
                    }
                    Instruction::BrTable(labels.into(), map!(targets.default())).encode(&mut out);
                }
                Operator::BrOnCast {
                    relative_depth,
                    from_ref_type,
                    to_ref_type,
                }
                | Operator::BrOnCastFail {
                    relative_depth,
                    from_ref_type,
                    to_ref_type,
                } => {
                    let relative_depth = map!(relative_depth);
                    let from_ref_type = from_ref_type
                        .try_into()
                        .map_err(|e| self.invalid(format!("ref type: {e}")))?;
                    let to_ref_type = to_ref_type
                        .try_into()
                        .map_err(|e| self.invalid(format!("ref type: {e}")))?;
                    let ins = if matches!(op, Operator::BrOnCast { .. }) {
                        Instruction::BrOnCast {
                            relative_depth,
                            from_ref_type,
                            to_ref_type,
                        }
                    } else {
                        Instruction::BrOnCastFail {
                            relative_depth,
                            from_ref_type,
                            to_ref_type,
                        }
                    };
                    ins.encode(&mut out);
                }
                Operator::Delegate { .. } => {
                    return Err(EhError::Unsupported {
                        func: self.func,
                        op: "delegate",
                    });
                }
                Operator::Rethrow { .. } => {
                    return Err(EhError::Unsupported {
                        func: self.func,
                        op: "rethrow",
                    });
                }
                // Other label-carrying instructions, from proposals no aos module uses.
                Operator::BrOnCastDescEq { .. } | Operator::BrOnCastDescEqFail { .. } => {
                    return Err(EhError::Unsupported {
                        func: self.func,
                        op: "br_on_cast_desc_eq (next to a legacy try)",
                    });
                }
                Operator::Resume { .. }
                | Operator::ResumeThrow { .. }
                | Operator::ResumeThrowRef { .. } => {
                    return Err(EhError::Unsupported {
                        func: self.func,
                        op: "resume (next to a legacy try)",
                    });
                }
                _ => out.extend_from_slice(raw),
            }
        }
        if !frames.is_empty() || height != 0 {
            return Err(self.invalid("function body ends inside a block"));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use hb_wasm::{Engine, EngineConfig, InstanceConfig, Stubs, Value};

    fn parse(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    /// Rewrites, checks the output validates without the legacy feature and has no
    /// legacy opcode left, and returns it.
    fn rewrite(wasm: &[u8]) -> Vec<u8> {
        assert!(has_legacy_eh(wasm).unwrap());
        let out = rewrite_legacy_eh(wasm).unwrap().into_owned();
        wasmparser::Validator::new_with_features(WasmFeatures::default())
            .validate_all(&out)
            .unwrap_or_else(|e| panic!("rewritten module does not validate: {e}"));
        assert!(!has_legacy_eh(&out).unwrap());
        out
    }

    /// Runs `f(args)` of the (rewritten) module.
    fn run(wasm: &[u8], f: &str, args: &[i32]) -> Vec<Value> {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let mut inst = engine
            .load(wasm)
            .unwrap()
            .instantiate(Stubs, InstanceConfig::default())
            .unwrap();
        let args: Vec<Value> = args.iter().map(|&a| Value::I32(a)).collect();
        inst.call(f, &args).unwrap()
    }

    fn i32s(v: &[i32]) -> Vec<Value> {
        v.iter().map(|&x| Value::I32(x)).collect()
    }

    #[test]
    fn modules_without_legacy_eh_pass_through() {
        let wasm = parse(
            r#"(module (tag $e) (func (export "f") (result i32)
                (block $h (try_table (catch_all $h) (throw $e))) i32.const 1))"#,
        );
        assert!(!has_legacy_eh(&wasm).unwrap());
        let out = rewrite_legacy_eh(&wasm).unwrap();
        assert!(matches!(out, Cow::Borrowed(b) if b.as_ptr() == wasm.as_ptr()));
        let empty = parse("(module)");
        assert!(matches!(
            rewrite_legacy_eh(&empty).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn try_catch_with_value() {
        let wasm = rewrite(&parse(
            r#"(module
                (tag $e (param i32))
                (func (export "f") (param i32) (result i32)
                    try (result i32)
                        local.get 0
                        if local.get 0 throw $e end
                        i32.const 1
                    catch $e
                        i32.const 100 i32.add
                    catch_all
                        i32.const -1
                    end))"#,
        ));
        assert_eq!(run(&wasm, "f", &[0]), i32s(&[1]));
        assert_eq!(run(&wasm, "f", &[5]), i32s(&[105]));
    }

    #[test]
    fn nested_try_and_catch_all() {
        let wasm = rewrite(&parse(
            r#"(module
                (tag $a (param i32))
                (tag $b)
                (func $thrower (param i32)
                    local.get 0 i32.const 1 i32.eq if i32.const 7 throw $a end
                    local.get 0 i32.const 2 i32.eq if throw $b end)
                (func (export "f") (param i32) (result i32)
                    try (result i32)
                        try (result i32)
                            local.get 0 call $thrower
                            i32.const 10
                        catch $a
                            ;; 7 on the stack
                            i32.const 20 i32.add
                        end
                    catch_all
                        i32.const 30
                    end)
                (func (export "g") (param i32) (result i32)
                    ;; a throw inside a handler goes to the enclosing try
                    try (result i32)
                        try (result i32)
                            i32.const 1 throw $a
                        catch $a
                            drop local.get 0 call $thrower i32.const 40
                        end
                    catch $b
                        i32.const 50
                    end))"#,
        ));
        assert_eq!(run(&wasm, "f", &[0]), i32s(&[10]));
        assert_eq!(run(&wasm, "f", &[1]), i32s(&[27]));
        assert_eq!(run(&wasm, "f", &[2]), i32s(&[30]));
        assert_eq!(run(&wasm, "g", &[0]), i32s(&[40]));
        assert_eq!(run(&wasm, "g", &[2]), i32s(&[50]));
    }

    #[test]
    fn branches_crossing_the_construct() {
        let wasm = rewrite(&parse(
            r#"(module
                (tag $e (param i32))
                (func (export "from_handler") (param i32) (result i32)
                    block $out (result i32)
                        try (result i32)
                            local.get 0 throw $e
                        catch $e
                            ;; branch out of the handler, past the try
                            local.get 0 i32.const 3 i32.gt_s br_if $out
                            drop i32.const 9 br $out
                        end
                        i32.const 1000 i32.add
                    end)
                (func (export "from_body") (param i32) (result i32)
                    block $out (result i32)
                        block $mid (result i32)
                            try (result i32)
                                local.get 0 local.get 0
                                ;; 0: to $mid, 1: to $out, else: to the end of the try
                                br_table $mid $out 0
                            catch_all
                                i32.const -1
                            end
                            i32.const 5 i32.add br $out
                        end
                        i32.const 6 i32.add
                    end)
                (func (export "to_try_label") (param i32) (result i32)
                    try (result i32)
                        local.get 0 throw $e
                    catch $e
                        ;; br 0 = to the end of the try, with its result
                        i32.const 2 i32.mul br 0
                    end)
                (func (export "loop_in_try") (param i32) (result i32)
                    (local $i i32)
                    try (result i32)
                        loop $l
                            local.get $i i32.const 1 i32.add local.tee $i
                            local.get 0 i32.lt_s br_if $l
                        end
                        local.get $i throw $e
                    catch $e
                    end))"#,
        ));
        assert_eq!(run(&wasm, "from_handler", &[5]), i32s(&[5]));
        assert_eq!(run(&wasm, "from_handler", &[1]), i32s(&[9]));
        assert_eq!(run(&wasm, "from_body", &[0]), i32s(&[6]));
        assert_eq!(run(&wasm, "from_body", &[1]), i32s(&[1]));
        assert_eq!(run(&wasm, "from_body", &[7]), i32s(&[12]));
        assert_eq!(run(&wasm, "to_try_label", &[21]), i32s(&[42]));
        assert_eq!(run(&wasm, "loop_in_try", &[4]), i32s(&[4]));
    }

    #[test]
    fn try_without_clauses_and_try_table_inside() {
        let wasm = rewrite(&parse(
            r#"(module
                (tag $e (param i32))
                (func (export "f") (param i32) (result i32)
                    block $h (result i32)
                        try (result i32)
                            try (result i32)
                                ;; a standard try_table whose label crosses both trys
                                try_table (result i32) (catch $e $h)
                                    local.get 0 throw $e
                                end
                            end
                        catch $e
                            i32.const 1 i32.add
                        end
                        i32.const 100 i32.add
                    end))"#,
        ));
        assert_eq!(run(&wasm, "f", &[3]), i32s(&[3]));
    }

    #[test]
    fn multi_value_tags_and_block_params_add_types() {
        let legacy = parse(
            r#"(module
                (type $bt (func (param i32) (result i32)))
                (tag $pair (param i32 i64))
                (func (export "f") (param i32) (result i32)
                    local.get 0
                    try (type $bt)
                        i64.const 5 throw $pair
                    catch $pair
                        i32.wrap_i64 i32.add
                    end)
                (func (export "g") (result i32)
                    try (result i32)
                        i32.const 3 i64.const 4 throw $pair
                    catch $pair
                        i32.wrap_i64 i32.mul
                    end))"#,
        );
        let wasm = rewrite(&legacy);
        assert_eq!(run(&wasm, "f", &[2]), i32s(&[7]));
        assert_eq!(run(&wasm, "g", &[]), i32s(&[12]));
    }

    #[test]
    fn rethrow_and_delegate_are_rejected() {
        let rethrow = parse(
            r#"(module (tag $e) (func
                try throw $e catch $e rethrow 0 end))"#,
        );
        let err = rewrite_legacy_eh(&rethrow).unwrap_err();
        assert!(
            matches!(err, EhError::Unsupported { op: "rethrow", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`rethrow`"), "{err}");
        let delegate = parse(
            r#"(module (tag $e) (func
                try try throw $e delegate 0 catch_all end))"#,
        );
        let err = rewrite_legacy_eh(&delegate).unwrap_err();
        assert!(
            matches!(err, EhError::Unsupported { op: "delegate", .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_input() {
        assert!(matches!(
            rewrite_legacy_eh(b"\0asm"),
            Err(EhError::Malformed { .. })
        ));
        assert!(matches!(
            rewrite_legacy_eh(b"\0asm\x0d\0\x01\0"),
            Err(EhError::Malformed { .. })
        ));
        // A section running past the end.
        assert!(matches!(
            rewrite_legacy_eh(b"\0asm\x01\0\0\0\x01\x7f"),
            Err(EhError::Malformed { .. })
        ));
    }

    /// The aos fixtures: the rewrite leaves a module that validates with exceptions
    /// and memory64 and without the legacy feature (the integration tests compile
    /// and run them).
    #[test]
    fn aos_fixtures_rewrite_to_valid_modules() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");
        for name in [
            "aos-2-pure-xs.wasm",
            "aos-2-pure.wasm",
            "test-standalone-wex-aos.wasm",
        ] {
            let path = format!("{dir}/{name}");
            let wasm =
                std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path} is missing: {e}"));
            let started = std::time::Instant::now();
            let out = rewrite(&wasm);
            eprintln!(
                "{name}: rewritten in {:?}, {} -> {} bytes",
                started.elapsed(),
                wasm.len(),
                out.len()
            );
            // Only the one function with the try changed size; everything else is as it was.
            assert!(
                out.len() > wasm.len() && out.len() < wasm.len() + 64,
                "{name}"
            );
        }
        for name in [
            "test-wasi-aos.wasm",
            "test-calling.wasm",
            "pow_calculator.wasm",
        ] {
            let wasm = std::fs::read(format!("{dir}/{name}")).unwrap();
            assert!(
                matches!(rewrite_legacy_eh(&wasm).unwrap(), Cow::Borrowed(_)),
                "{name}"
            );
        }
    }

    /// Corrupted and truncated inputs give errors, never panics.
    #[test]
    fn mutated_inputs_do_not_panic() {
        let wasm = parse(
            r#"(module
                (type $bt (func (param i32) (result i32)))
                (tag $e (param i32 i64))
                (func (export "f") (param i32) (result i32)
                    block $out (result i32)
                        local.get 0
                        try (type $bt)
                            i64.const 1 throw $e
                        catch $e
                            i32.wrap_i64 i32.add br $out
                        catch_all
                            i32.const 3
                        end
                    end)
                (func (result i32)
                    try (result i32) i32.const 1 catch_all i32.const 2 end))"#,
        );
        for len in 0..wasm.len() {
            let _ = rewrite_legacy_eh(&wasm[..len]);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut m = wasm.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() % m.len() as u64) as usize;
                m[i] = next() as u8;
            }
            if let Ok(out) = rewrite_legacy_eh(&m) {
                // Whatever comes out is at least a sequence of well-formed sections.
                split_sections(&out).unwrap();
            }
        }
    }
}
