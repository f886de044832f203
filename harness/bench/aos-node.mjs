// The end-to-end half of bench/aos.sh: an aos process on our node, driven over HTTP
// with signed requests (hbsig, key-1), as a client would.
//
//   node bench/aos-node.mjs <node URL> <module.wasm> <wallet.json> [N] [CONCURRENCY]
//
// 1. Uploads the module (`POST /~cache@1.0/write`, signed; the node must list the
//    wallet's address in `cache_writers`) and spawns a process on the WASM stack
//    (`POST /~process@1.0/schedule`: `[wasi@1.0, json-iface@1.0, wasm-64@1.0,
//    multipass@1.0]` over the uploaded image, scheduled by the node), schedules
//    `X = 0` and computes it (slot 1): the module is compiled and instantiated here,
//    before anything is timed.
// 2. Signs N `Eval` messages of `X = X + 1` (before timing: signing is the client's
//    cost, not the node's), then POSTs them to `/<pid>/schedule` from CONCURRENCY
//    workers (default 8), timed: every reply must be a 200 with a `slot`.
// 3. Schedules `return X` (slot N + 2), then times one
//    `GET /<pid>/compute/results/data?slot=<N + 1>`: the N evaluations computed, each
//    state stored, nothing computed before. Then reads slot N + 2, which must be N.
// 4. Overlapped, as a busy process runs: signs N more Evals (untimed), then POSTs them
//    from CONCURRENCY workers while one reader keeps computing up to the highest slot
//    answered so far (`GET /<pid>/compute/results/data?slot=<that slot>`, again as soon
//    as the last one returns), timed until every one of the N is scheduled and
//    computed. Then `return X` must be 2N.
//
// Prints, for the script to read:
//
//   pid <process ID>
//   start <ms>            upload + spawn + X = 0 scheduled and computed
//   sign <s>              client-side signing of the N messages (not in any rate)
//   schedule <s> <n>      the N POSTs; n = how many got a 200 with a slot
//   slots <first> <last>  the slots the N messages got
//   compute <s> <slots>   the timed GET; slots = how many it computed
//   final <X>             `return X`
//   again <s>             the same GET again (the stored result)
//   overlap <s> <n> <r>   step 4: the N scheduled and computed, overlapped, in r reads
//   overlap-final <X>     `return X` after step 4
//
// Messages are signed without `@path` (`sign(fields, {path: false})`: the header-only
// form aoconnect uses). hbsig's default form, whose signature also covers `@path`, is
// scheduled as well (the scheduler keeps the request as received when it was signed).

import fs from 'node:fs'
import http from 'node:http'
import { performance } from 'node:perf_hooks'

import { createSigner } from 'hbsig'

const [url, wasmFile, walletFile, nArg = '1000', concArg = '8'] = process.argv.slice(2)
if (!url || !wasmFile || !walletFile) {
  console.error('usage: node bench/aos-node.mjs <node URL> <module.wasm> <wallet.json> [N] [CONCURRENCY]')
  process.exit(2)
}
const N = Number(nArg)
const CONCURRENCY = Number(concArg)
const sign = createSigner(JSON.parse(fs.readFileSync(walletFile, 'utf8')), url)
// Signed without `@path`, as aoconnect signs (see above).
const signed = (fields) => sign(fields, { path: false })

const fail = (what) => {
  console.error(`error: ${what}`)
  process.exit(1)
}

// Requests go through node:http on keep-alive connections, one per worker: `fetch`
// costs about 2 ms of CPU a request here, which on a 2-core machine is taken from the
// node being measured. One more connection is kept for the reader of step 4.
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY + 1 })
const send = (req, ms = 60000) =>
  new Promise((resolve, reject) => {
    const r = http.request(req.url, { method: req.method, headers: req.headers, agent, timeout: ms }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () =>
        resolve({
          status: res.statusCode,
          headers: { get: (name) => res.headers[name.toLowerCase()] ?? null },
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      )
      res.on('error', reject)
    })
    r.on('timeout', () => r.destroy(new Error(`no answer in ${ms} ms: ${req.url}`)))
    r.on('error', reject)
    if (req.body !== undefined) r.write(req.body)
    r.end()
  })

const get = (path, ms = 3600000) => send({ url: url + path, method: 'GET', headers: {} }, ms)

// --- 1. module, process, X = 0 ---------------------------------------------------------
let t = performance.now()
const up = await send(await sign({ path: '/~cache@1.0/write', body: fs.readFileSync(wasmFile) }))
const image = up.headers.get('path')
if (up.status !== 200 || !image) fail(`upload: ${up.status} ${up.text.slice(0, 300)}`)

const scheduler = (await get('/~meta@1.0/info/address', 15000)).text
if (scheduler.length !== 43) fail(`no node address: ${scheduler}`)
const spawn = await send(await signed({
  path: '/~process@1.0/schedule',
  device: 'process@1.0',
  type: 'Process',
  scheduler,
  'execution-device': 'stack@1.0',
  'device-stack': ['wasi@1.0', 'json-iface@1.0', 'wasm-64@1.0', 'multipass@1.0'],
  passes: 2,
  'output-prefix': 'wasm',
  'stack-keys': ['init', 'compute', 'snapshot', 'normalize'],
  image,
  'patch-from': '/results/outbox',
  nonce: `bench-aos-${process.pid}-${Date.now()}`,
}))
const pid = spawn.headers.get('process')
if (spawn.status !== 200 || spawn.headers.get('slot') !== '0' || pid?.length !== 43) {
  fail(`spawn: ${spawn.status} ${spawn.text.slice(0, 300)}`)
}
console.log(`pid ${pid}`)

let counter = 0
const evalMessage = (code) => signed({
  path: `/${pid}/schedule`,
  type: 'Message',
  target: pid,
  action: 'Eval',
  data: code,
  // Every message different, whatever its code.
  nonce: String(++counter),
})
const schedule = async (req) => {
  const r = await send(req)
  const slot = Number(r.headers.get('slot'))
  if (r.status !== 200 || !Number.isInteger(slot)) fail(`schedule: ${r.status} ${r.text.slice(0, 300)}`)
  return slot
}
const dataAt = async (slot) => {
  const r = await get(`/${pid}/compute/results/data?slot=${slot}`)
  if (r.status !== 200) fail(`compute to slot ${slot}: ${r.status} ${r.text.slice(0, 300)}`)
  return r.text
}

const initSlot = await schedule(await evalMessage('X = 0'))
if (initSlot !== 1) fail(`X = 0 got slot ${initSlot}`)
await dataAt(initSlot)
console.log(`start ${(performance.now() - t).toFixed(1)}`)

// --- 2. N messages, signed, then scheduled ---------------------------------------------
t = performance.now()
const requests = []
for (let i = 0; i < N; i++) requests.push(await evalMessage('X = X + 1'))
console.log(`sign ${((performance.now() - t) / 1000).toFixed(3)}`)

// Schedules `reqs` from CONCURRENCY workers, pushing each slot got onto `slots` as
// it is answered.
const scheduleAll = async (reqs, slots) => {
  let next = 0
  const worker = async () => {
    while (next < reqs.length) {
      const req = reqs[next++]
      slots.push(await schedule(req))
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, reqs.length) }, worker))
}
const slots = []
t = performance.now()
await scheduleAll(requests, slots)
const scheduleSecs = (performance.now() - t) / 1000
slots.sort((a, b) => a - b)
console.log(`schedule ${scheduleSecs.toFixed(3)} ${slots.length}`)
const first = slots[0]
const last = slots[slots.length - 1]
console.log(`slots ${first} ${last}`)
if (first !== initSlot + 1 || last !== initSlot + N) fail(`the ${N} messages got slots ${first}..${last}`)

// --- 3. compute --------------------------------------------------------------------------
const checkSlot = await schedule(await evalMessage('return X'))
if (checkSlot !== last + 1) fail(`return X got slot ${checkSlot}, not ${last + 1}`)
t = performance.now()
await dataAt(last)
console.log(`compute ${((performance.now() - t) / 1000).toFixed(3)} ${last - initSlot}`)
console.log(`final ${await dataAt(checkSlot)}`)
t = performance.now()
await dataAt(last)
console.log(`again ${((performance.now() - t) / 1000).toFixed(3)}`)

// --- 4. overlapped: scheduling while a reader computes -------------------------------------
const more = []
for (let i = 0; i < N; i++) more.push(await evalMessage('X = X + 1'))
const moreSlots = []
let scheduled = false
let reads = 0
const reader = async () => {
  // The highest slot answered so far: every slot below it is stored (the scheduler
  // stores in slot order before it answers).
  let done = checkSlot
  for (;;) {
    const top = moreSlots.length ? Math.max(...moreSlots) : done
    if (top > done) {
      await dataAt(top)
      reads += 1
      done = top
    } else if (scheduled) {
      return done
    } else {
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
  }
}
t = performance.now()
const computing = reader()
await scheduleAll(more, moreSlots)
scheduled = true
const computedTo = await computing
const overlapSecs = (performance.now() - t) / 1000
if (moreSlots.length !== N || computedTo !== checkSlot + N) {
  fail(`overlapped: ${moreSlots.length} of ${N} scheduled, computed to slot ${computedTo}, not ${checkSlot + N}`)
}
console.log(`overlap ${overlapSecs.toFixed(3)} ${moreSlots.length} ${reads}`)
const finalSlot = await schedule(await evalMessage('return X'))
console.log(`overlap-final ${await dataAt(finalSlot)}`)
