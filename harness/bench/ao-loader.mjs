// The baseline of bench/aos.sh: aos `Eval` messages through @permaweb/ao-loader 0.0.49
// with live memory (`UNSAFE_MEMORY`, no heap copies), as spec 07 A.5 measures it.
//
//   node --experimental-wasm-memory64 bench/ao-loader.mjs <module.wasm> [N] [ROUNDS]
//
// One process (one instance), one `handle` of `X = 0`, then ROUNDS rounds of N
// evaluations of `X = X + 1`, each round timed, then `return X`, which must answer
// ROUNDS × N. Prints the same lines as crates/hb-wasm/examples/aos_evals.rs:
//
//   load <ms>       ao-loader set up: compile + instantiate + emscripten runtime init
//   init <ms>       the first handle (X = 0)
//   round <i> <s>   round i: N evaluations, seconds
//   final <X>       the answer of `return X`
//
// The module is loaded through ao-loader's documented hook for a custom instantiation
// (passing a function as the binary: emscripten's `instantiateWasm`), because the
// fixture aos-2-pure-xs is a standalone (WASI-style) emscripten build, not one built
// for ao-loader's JS runtime:
// * two of its 14 imports are not in that runtime (`proc_exit`, `clock_time_get`):
//   they get the node's behaviour (spec 06 §2.3.1: a stub returning 0; errno 1 for the
//   clock); the other 12 are the runtime's own;
// * three exports the runtime calls once at start-up are absent
//   (`__wasm_call_ctors`, `emscripten_stack_init`, `emscripten_stack_get_end`): no-ops
//   (the node calls nothing before `handle` either, spec 06 §2.2.1).
// Everything per message is ao-loader's own code: `handle` through emscripten's `cwrap`
// (the JSON strings on the module's stack), `JSON.stringify` in, `JSON.parse` out.

import fs from 'node:fs'
import { performance } from 'node:perf_hooks'

import AoLoader from '@permaweb/ao-loader'

const [file, nArg = '1000', roundsArg = '1'] = process.argv.slice(2)
if (!file) {
  console.error('usage: node --experimental-wasm-memory64 bench/ao-loader.mjs <module.wasm> [N] [ROUNDS]')
  process.exit(2)
}
const N = Number(nArg)
const ROUNDS = Number(roundsArg)
const FORMAT = 'wasm64-unknown-emscripten-draft_2024_02_15'

const OWNER = 'OWNER_ADDRESS'
const PID = 'PROCESS_ID'
const env = {
  Process: { Id: PID, Owner: OWNER, Tags: [{ name: 'Authority', value: OWNER }] },
  Module: { Id: 'MODULE', Tags: [] },
}
let h = 0
const message = (code) => {
  h += 1
  return {
    Id: `MSG${h}`,
    Target: PID,
    Owner: OWNER,
    From: OWNER,
    'Block-Height': '1',
    Timestamp: String(1700000000000 + h),
    Module: 'MODULE',
    Tags: [{ name: 'Action', value: 'Eval' }],
    Data: code,
  }
}

const t0 = performance.now()
const module = await WebAssembly.compile(fs.readFileSync(file))
const instantiateWasm = (imports, receiveInstance) => {
  for (const { module: ns, name, kind } of WebAssembly.Module.imports(module)) {
    if (kind !== 'function' || typeof imports[ns]?.[name] === 'function') continue
    imports[ns] = { ...imports[ns], [name]: name === 'clock_time_get' ? () => 1 : () => 0 }
  }
  WebAssembly.instantiate(module, imports).then(
    (instance) => receiveInstance({
      exports: {
        ...instance.exports,
        __wasm_call_ctors() {},
        emscripten_stack_init() {},
        emscripten_stack_get_end: () => 0n,
      },
    }, module),
    (e) => {
      console.error(`instantiation failed: ${e}`)
      process.exit(1)
    },
  )
  return {}
}
const handle = await AoLoader(instantiateWasm, {
  format: FORMAT,
  inputEncoding: 'JSON-1',
  outputEncoding: 'JSON-1',
  memoryLimit: '1073741824',
  computeLimit: '9000000000000',
  extensions: [],
  UNSAFE_MEMORY: true,
})
console.log(`load ${(performance.now() - t0).toFixed(1)}`)

// ao-loader throws when aos answers `ok: false`; an Eval that fails inside Lua is
// `ok: true` with `Error` set, so check that too.
const run = async (code) => {
  const r = await handle(null, message(code), env)
  if (r.Error) throw new Error(`${code}: ${JSON.stringify(r.Error)}`)
  return r
}

let t = performance.now()
await run('X = 0')
console.log(`init ${(performance.now() - t).toFixed(1)}`)

for (let round = 1; round <= ROUNDS; round++) {
  t = performance.now()
  for (let i = 0; i < N; i++) await run('X = X + 1')
  console.log(`round ${round} ${((performance.now() - t) / 1000).toFixed(6)}`)
}
const out = (await run('return X')).Output
console.log(`final ${typeof out?.data === 'object' ? out.data.output : out?.data}`)
