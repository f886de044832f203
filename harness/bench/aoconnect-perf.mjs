// aoconnect 0.0.98 (mainnet mode) `message` + `result` round trips: the client-side
// floor against the stub node, then our node, in one run (spec 07 §8 row `60-perf`;
// issue 8). Not a `node --test` file: it prints a table and exits non-zero only when
// something is wrong (a call fails, a check fails, the wall-clock cap is hit).
//
//   node bench/aoconnect-perf.mjs [N]        # from harness/; N defaults to 1000
//
// Environment: HB_BIN (the `hb` binary, as for the tests: relative paths are taken
// from harness/; bench/aoconnect.sh passes the release build), AOS_WASM (default
// ../shared/fixtures/aos-2-pure-xs.wasm beside the repository), AOC_CAP_S (wall-clock
// cap for the whole run, default 1800 s), AOC_CALL_MS (cap per call, default 60000),
// AOC_NODE_ARGS (extra `hb serve` arguments, split on spaces; none by default).
//
// 1. Floor: lib/stub-node.mjs (the recording stand-in of 99-client-contract) on an
//    ephemeral 127.0.0.1 port, in this process. aoconnect spawns (untimed), sends one
//    untimed `message` `X = 0` + `result` (warm-up), then N times, one after the other:
//    `message` (Eval `X = (X or 0) + 1`) then `result` of its slot, each call timed.
//    The stub answers from memory and does not verify the item (it reads the item's
//    ID, one SHA-256), so this is aoconnect's own cost on this machine: building and
//    RSA-4096 signing a data item per call, the HTTP round trip on loopback, parsing.
// 2. Node: arlocal (lib/arlocal.mjs) on a free port, the aos module
//    (aos-2-pure-xs.wasm) uploaded to it as 60-aoconnect-aos does (a data item with
//    real aos module tags in a bundle in a mined L1 tx); `hb serve` (lib/node.mjs:
//    fresh data directory, wallet key-2, 127.0.0.1, `--gateway <arlocal>`); aoconnect
//    spawns an aos process on the module (`execution-device: genesis-wasm@1.0`),
//    untimed `X = 0` + `result` (the node fetches the module from arlocal and compiles
//    it here), then the same N timed round trips. Finally a `dryrun` of `return X`
//    must answer N, and `GET /<pid>/slot/current` must be the last message's slot.
//    The gateway is the way the node learns of an aos module that aoconnect can name
//    (the module's ANS-104 ID, as on mainnet); arlocal is only read at spawn.
//
// The same signer (tests/fixtures/key-1.json) and the same recording `fetch` wrapper
// are used on both sides. Every message's slot must be the previous one + 1 and every
// result must have no `Error`. On a failure the last requests (method, path, item
// tags, data) and replies (status, headers, body) are printed.
//
// The table: mean ms per call of each type on the stub and on the node, node minus
// stub (the node's own share: its work plus whatever the HTTP exchange costs beyond
// the stub's), percentiles, round trips per second end to end, and CPU per round trip
// (this process, the node) read from process.cpuUsage() and /proc/<pid>/stat.

import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { performance } from 'node:perf_hooks'

import { connect, createSigner } from '@permaweb/aoconnect'

import { startNode, loadJwk, fetchT, REPO_DIR } from '../lib/node.mjs'
import { startArlocal, uploadBundle, aosModuleTags } from '../lib/arlocal.mjs'
import { startStub } from '../lib/stub-node.mjs'
import { arbundles, createData, ArweaveSigner, DataItem, Arweave } from '../lib/ans104.mjs'

const N = Number(process.argv[2] ?? process.env.N ?? 1000)
if (!Number.isInteger(N) || N < 1 || N > 100000) {
  console.error('usage: node bench/aoconnect-perf.mjs [N]   (1 <= N <= 100000)')
  process.exit(2)
}
const CAP_S = Number(process.env.AOC_CAP_S ?? 1800)
const CALL_MS = Number(process.env.AOC_CALL_MS ?? 60000)
// Extra `hb serve` arguments, for experiments (e.g. `--set store_sync=false`).
const NODE_ARGS = (process.env.AOC_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)
const AOS_WASM = process.env.AOS_WASM
  ? path.resolve(process.env.AOS_WASM)
  : path.resolve(REPO_DIR, '..', 'shared', 'fixtures', 'aos-2-pure-xs.wasm')

const EVAL = [{ name: 'Action', value: 'Eval' }]
const INCREMENT = 'X = (X or 0) + 1'

const log = (...a) => console.error(...a)

// --- children, cleanup, the wall-clock cap -----------------------------------------------

const handles = [] // {name, stop}, stopped in reverse order
let cleaning
function cleanup() {
  cleaning ??= (async () => {
    for (const h of handles.reverse()) {
      try {
        await h.stop()
      } catch (e) {
        log(`stopping ${h.name}: ${e.message}`)
      }
    }
  })()
  return cleaning
}
let dying = false
async function die(message, code = 1) {
  // Only the first reason is reported: calls in flight fail once their server stops.
  if (dying) return new Promise(() => {})
  dying = true
  log(`error: ${message}`)
  await cleanup()
  process.exit(code)
}
const cap = setTimeout(() => die(`the wall-clock cap of ${CAP_S} s was reached (AOC_CAP_S)`), CAP_S * 1000)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => die(`stopped by ${sig}`, 130))

// --- a recording fetch: the last few requests and replies, for failure reports -------------

const realFetch = globalThis.fetch
const ring = []
function recordingFetch(input, init = {}) {
  const entry = { method: init.method ?? input?.method ?? 'GET', url: String(input?.url ?? input), headers: init.headers, body: init.body }
  ring.push(entry)
  if (ring.length > 4) ring.shift()
  return realFetch(input, { ...init, signal: init.signal ?? AbortSignal.timeout(CALL_MS) }).then(
    (res) => {
      entry.res = res.clone()
      return res
    },
    (e) => {
      entry.error = String(e?.message ?? e)
      throw e
    },
  )
}
globalThis.fetch = recordingFetch

async function describeRing() {
  const out = []
  for (const e of ring) {
    const lines = [`  ${e.method} ${e.url}`]
    if (e.headers) lines.push(`    request headers: ${JSON.stringify(Object.fromEntries(new Headers(e.headers)))}`)
    if (e.body instanceof Uint8Array && e.body.length > 0) {
      try {
        const item = new DataItem(Buffer.from(e.body))
        lines.push(`    ANS-104 item ${item.id}: target ${JSON.stringify(item.target)}, tags ${JSON.stringify(item.tags)}, data ${JSON.stringify(Buffer.from(item.rawData).toString('utf8').slice(0, 300))}`)
      } catch {
        lines.push(`    body: ${e.body.length} bytes`)
      }
    }
    if (e.error) lines.push(`    -> error ${e.error}`)
    else if (e.res) {
      let text
      try {
        text = await e.res.text()
      } catch (err) {
        text = `(unreadable: ${err.message})`
      }
      lines.push(`    -> ${e.res.status}, headers ${JSON.stringify(Object.fromEntries(e.res.headers))}`)
      lines.push(`    -> body ${JSON.stringify(text.slice(0, 2000))}`)
    } else lines.push('    -> (no reply yet)')
    out.push(lines.join('\n'))
  }
  return out.join('\n')
}

/** Runs an aoconnect call; on a throw or a failed check, dies with the last exchanges. */
async function call(what, fn, check) {
  let out
  try {
    out = await fn()
  } catch (e) {
    return die(`${what} failed: ${e.message}\nlast requests:\n${await describeRing()}`)
  }
  const problem = check?.(out)
  if (problem) return die(`${what}: ${problem}: ${JSON.stringify(out).slice(0, 1500)}\nlast requests:\n${await describeRing()}`)
  return out
}

/** `Output.data` of a result as text. */
function outputText(res) {
  const d = typeof res?.Output === 'string' ? res.Output : res?.Output?.data
  if (d === undefined || d === null) return undefined
  if (typeof d === 'string') return d
  if (typeof d === 'object' && typeof d.output === 'string') return d.output
  return JSON.stringify(d)
}
const hasError = (res) => res?.Error !== undefined && res?.Error !== null && res?.Error !== ''

// --- CPU ------------------------------------------------------------------------------------

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100
/** CPU seconds (user + system) of a process, from /proc/<pid>/stat. */
function cpuOf(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / CLK_TCK // utime, stime (fields 14, 15)
  } catch {
    return NaN
  }
}
const selfCpu = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

// --- the measured loop ------------------------------------------------------------------------

/**
 * spawn, untimed `X = 0` + result, then N timed message + result round trips.
 * @returns {{pid, setup: {spawn, first}, message: number[], result: number[], wall, cpu: {self, node?}, lastSlot}}
 */
async function run(side, ao, spawnArgs, nodePid) {
  let t = performance.now()
  const pid = await call(`${side}: spawn`, () => ao.spawn(spawnArgs), (p) => (/^[A-Za-z0-9_-]{43}$/.test(p ?? '') ? undefined : 'not a process ID'))
  const spawnMs = performance.now() - t
  t = performance.now()
  const first = Number(await call(`${side}: message(X = 0)`, () => ao.message({ process: pid, tags: EVAL, data: 'X = 0' }), (s) => (Number.isInteger(Number(s)) ? undefined : 'no slot')))
  await call(`${side}: result(X = 0)`, () => ao.result({ process: pid, slot: first }), (r) => (hasError(r) ? 'Error in the result' : undefined))
  const firstMs = performance.now() - t

  log(`${side}: ${N} x (message + result)...`)
  const message = new Float64Array(N)
  const result = new Float64Array(N)
  let slot = first
  const cpu0 = { self: selfCpu(), node: nodePid ? cpuOf(nodePid) : NaN }
  const w0 = performance.now()
  for (let i = 0; i < N; i++) {
    t = performance.now()
    const s = await call(`${side}: message ${i + 1}/${N}`, () => ao.message({ process: pid, tags: EVAL, data: INCREMENT }), (got) =>
      Number(got) === slot + 1 ? undefined : `slot ${JSON.stringify(got)}, expected ${slot + 1}`,
    )
    const t1 = performance.now()
    await call(`${side}: result ${i + 1}/${N} (slot ${s})`, () => ao.result({ process: pid, slot: s }), (r) =>
      r && typeof r === 'object' && !hasError(r) ? undefined : 'no result or an Error in it',
    )
    const t2 = performance.now()
    message[i] = t1 - t
    result[i] = t2 - t1
    slot = Number(s)
    if ((i + 1) % 200 === 0 && i + 1 < N) log(`${side}: ${i + 1}/${N}`)
  }
  const wall = performance.now() - w0
  const cpu = { self: selfCpu() - cpu0.self, node: nodePid ? cpuOf(nodePid) - cpu0.node : NaN }
  return { pid, setup: { spawn: spawnMs, first: firstMs }, message, result, wall, cpu, firstSlot: first, lastSlot: slot }
}

// --- statistics and the table -------------------------------------------------------------------

const mean = (a) => a.reduce((s, x) => s + x, 0) / a.length
function pct(a, p) {
  const s = Float64Array.from(a).sort()
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a')
const sum = (a, b) => a.map((x, i) => x + b[i])

function table(stub, node) {
  const rows = []
  const line = (label, s, n, diff) => rows.push(`${label.padEnd(38)}${s.padStart(10)}${n.padStart(10)}${(diff ?? '').padStart(14)}`)
  line('', 'stub', 'node', 'node - stub')
  const calls = [
    ['message', stub.message, node.message],
    ['result', stub.result, node.result],
    ['message + result', sum(stub.message, stub.result), sum(node.message, node.result)],
  ]
  for (const [name, s, n] of calls) line(`${name}: mean ms/call`, f2(mean(s)), f2(mean(n)), f2(mean(n) - mean(s)))
  const rate = (r) => (N / r.wall) * 1000
  line('end to end: round trips (messages)/s', rate(stub).toFixed(1), rate(node).toFixed(1))
  // On the stub side "this process" also runs the stub's replies.
  line('CPU ms per round trip: this process', f2((stub.cpu.self / N) * 1000), f2((node.cpu.self / N) * 1000))
  line('CPU ms per round trip: hb serve', '', f2((node.cpu.node / N) * 1000))
  // A node that slows down as the process grows shows here.
  const tenth = Math.max(1, Math.floor(N / 10))
  const ends = (a) => `${f2(mean(a.slice(0, tenth)))} / ${f2(mean(a.slice(-tenth)))}`
  rows.push(`round trip mean ms, first / last ${tenth}: stub ${ends(calls[2][1])}, node ${ends(calls[2][2])}`)
  rows.push('')
  rows.push(`${'ms/call'.padEnd(26)}${['median', 'p90', 'p99', 'max'].map((h) => h.padStart(9)).join('')}`)
  for (const [name, s, n] of calls) {
    for (const [where, a] of [['stub', s], ['node', n]]) {
      rows.push(`${`${name}, ${where}`.padEnd(26)}${[pct(a, 50), pct(a, 90), pct(a, 99), Math.max(...a)].map((v) => f2(v).padStart(9)).join('')}`)
    }
  }
  return rows.join('\n')
}

// --- main ---------------------------------------------------------------------------------------

if (!fs.existsSync(AOS_WASM)) await die(`the aos module is missing: ${AOS_WASM} (set AOS_WASM)`)
const jwk = loadJwk('key-1')
const signer = createSigner(jwk)

// 1. the stub
const stubServer = await startStub({ jwk: loadJwk('key-2') })
handles.push({ name: 'stub', stop: () => stubServer.close() })
log(`stub: ${stubServer.url}`)
const stubAo = connect({ MODE: 'mainnet', URL: stubServer.url, signer })
// The stub keeps every request it gets; the bench does not need them.
const stubRequests = stubServer.requests
const trim = setInterval(() => stubRequests.splice(0, stubRequests.length), 1000)
const stub = await run('stub', stubAo, { module: 'x'.repeat(43), tags: [{ name: 'Name', value: 'aoconnect-perf' }] })
clearInterval(trim)
await stubServer.close()
handles.pop()

// 2. arlocal, the module, our node
let t = performance.now()
const ar = await startArlocal()
handles.push({ name: 'arlocal', stop: () => ar.stop() })
const item = createData(fs.readFileSync(AOS_WASM), new ArweaveSigner(jwk), { tags: aosModuleTags() })
const arweave = Arweave.init({ host: '127.0.0.1', port: ar.port, protocol: 'http' })
globalThis.fetch = realFetch // arweave-js and arlocal's helpers: not recorded
const {
  itemIds: [moduleId],
} = await uploadBundle({ url: ar.url, arweave, arbundles, jwk, items: [item] })
const uploadMs = performance.now() - t
t = performance.now()
let node
try {
  node = await startNode({ extraArgs: ['--gateway', ar.url, ...NODE_ARGS] })
} catch (e) {
  await die(`hb serve: ${e.message}`)
}
handles.push({ name: 'hb serve', stop: () => node.stop() })
const nodeStartMs = performance.now() - t
log(`arlocal: ${ar.url} (module ${moduleId}); hb serve: ${node.url} (pid ${node.pid}, log ${node.logPath})`)
globalThis.fetch = recordingFetch
const nodeAo = connect({ MODE: 'mainnet', URL: node.url, signer })
const arCpu0 = cpuOf(ar.pid)
const onNode = await run('node', nodeAo, { module: moduleId, tags: [{ name: 'Name', value: 'aoconnect-perf' }] }, node.pid)
const arCpu = cpuOf(ar.pid) - arCpu0

// the checks after the loop
const dry = await call('node: dryrun(return X)', () => nodeAo.dryrun({ process: onNode.pid, tags: EVAL, data: 'return X' }))
const x = outputText(dry)
if (x !== String(N)) await die(`dryrun \`return X\` answered ${JSON.stringify(x)}, not ${N}: ${JSON.stringify(dry).slice(0, 1500)}\nlast requests:\n${await describeRing()}`)
globalThis.fetch = realFetch
const cur = await fetchT(`${node.url}/${onNode.pid}/slot/current`)
const curText = (await cur.text()).trim()
if (cur.status !== 200 || Number(curText) !== onNode.lastSlot) {
  await die(`GET /${onNode.pid}/slot/current: ${cur.status} ${JSON.stringify(curText.slice(0, 300))}, expected ${onNode.lastSlot} (the dry-run must take no slot)`)
}
const storeBytes = (() => {
  try {
    const r = spawnSync('du', ['-sb', path.join(node.dir, 'data')])
    return Number(r.stdout.toString().split('\t')[0])
  } catch {
    return NaN
  }
})()
await cleanup()
clearTimeout(cap)

console.log(`aoconnect 0.0.98 (mainnet): ${N} sequential message (Eval \`${INCREMENT}\`) + result round trips, one signer (key-1)`)
console.log(`stub = harness/lib/stub-node.mjs (the client-side floor); node = release hb serve, aos-2-pure-xs from arlocal\n`)
console.log(table(stub, onNode))
console.log()
console.log(`spec 07 §8 floors (another machine, stub verifying each item): message 7.3, result 6.6 ms/call`)
console.log(`checks: dryrun return X = ${x} (expected ${N}); slots ${onNode.firstSlot + 1}..${onNode.lastSlot}, slot/current = ${curText} after the dry-run`)
console.log(
  `set-up (untimed): stub spawn ${f2(stub.setup.spawn)} ms, X = 0 + result ${f2(stub.setup.first)} ms; ` +
    `node: arlocal + module upload ${(uploadMs / 1000).toFixed(2)} s, hb serve ready ${(nodeStartMs / 1000).toFixed(2)} s, ` +
    `spawn ${f2(onNode.setup.spawn)} ms, X = 0 + result ${f2(onNode.setup.first)} ms (module fetched and compiled)`,
)
console.log(`arlocal CPU during the node loop: ${f2(arCpu * 1000)} ms; node store after the run: ${(storeBytes / 1e6).toFixed(1)} MB`)
