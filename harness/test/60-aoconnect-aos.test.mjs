// aoconnect 0.0.98 in mainnet mode against an aos module read through the gateway
// (issue 6; spec 07 §1.2, §8 row `20-aoconnect-mainnet`):
//  * the aos module (shared/fixtures/aos-2-pure-xs.wasm) is uploaded to arlocal as a
//    data item with the tags of a real aos module, inside an ANS-104 bundle in a mined
//    L1 transaction;
//  * our node is started with `--gateway <arlocal>` and knows nothing else of it;
//  * aoconnect `connect({MODE:'mainnet', URL: node, signer})` spawns a process on that
//    module (`POST /push`, `execution-device: genesis-wasm@1.0`), sends Eval messages
//    (`POST /<pid>~process@1.0/push`), reads each one's `result` (`compute/results=N`)
//    and `results()`, and a `dryrun` of `return X` answers `20` without taking a slot
//    (`as=execution/compute`, checked against `GET /<pid>/slot/current`);
//  * the aos counter: three `Count = (Count or 0) + 1` messages print `Count: 3`; a Lua
//    `error()` reaches the result as `Error`;
//  * `result()` of an earlier slot, by slot number and by message ID, is that slot's
//    (not the latest state's).
// The node must answer JSON replies with `raw` (spec 07 §1.2, §7 item 4) and `push`
// replies with the message's `id`.
//
// Every request aoconnect makes goes through a recording `fetch`, so that a failure
// shows what the node answered (aoconnect itself only says "Error getting result").

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

import { connect, createSigner } from '@permaweb/aoconnect'

import { startNode, loadJwk, fetchT, REPO_DIR } from '../lib/node.mjs'
import { startArlocal, graphql, uploadBundle, aosModuleTags } from '../lib/arlocal.mjs'
import { arbundles, createData, ArweaveSigner, Arweave } from '../lib/ans104.mjs'

const MODULE_TAGS = aosModuleTags()

// shared/fixtures sits beside the repository (as for crates/hb-http/tests/wasm_process.rs).
const AOS_WASM = path.resolve(REPO_DIR, '..', 'shared', 'fixtures', 'aos-2-pure-xs.wasm')

// --- every request aoconnect makes, with the node's answer ---------------------------

const trail = []

/** The ID of an ANS-104 data item body (sha256 of its 512-byte signature), if it is one. */
function itemIdOf(body) {
  if (!(body instanceof Uint8Array) || body.length < 1026 || body[0] !== 1 || body[1] !== 0) return undefined
  return crypto.createHash('sha256').update(body.subarray(2, 514)).digest('base64url')
}
const realFetch = globalThis.fetch
function recordingFetch(input, init = {}) {
  const url = String(input?.url ?? input)
  const method = init.method ?? input?.method ?? 'GET'
  const entry = { method, url, started: Date.now(), itemId: itemIdOf(init.body) }
  trail.push(entry)
  // Each call is bounded: a hung node fails the test instead of the runner's timeout.
  const signal = init.signal ?? AbortSignal.timeout(60000)
  return realFetch(input, { ...init, signal }).then(
    async (res) => {
      entry.status = res.status
      entry.ms = Date.now() - entry.started
      entry.process = res.headers.get('process') ?? undefined
      try {
        const text = await res.clone().text()
        entry.body = text.slice(0, 600)
        if ((res.headers.get('content-type') ?? '').includes('json')) {
          try {
            entry.json = JSON.parse(text)
          } catch {
            // not JSON after all: the body snippet says what it was
          }
        }
      } catch (e) {
        entry.body = `(unreadable: ${e.message})`
      }
      return res
    },
    (e) => {
      entry.error = String(e?.message ?? e)
      entry.ms = Date.now() - entry.started
      throw e
    },
  )
}

/** The last `n` requests, for assertion messages. */
function lastRequests(n = 3) {
  return trail
    .slice(-n)
    .map((e) => {
      const where = `${e.method} ${e.url.replace(/^https?:\/\/[^/]+/, '')}`
      const what = e.error ? `error ${e.error}` : `${e.status} (${e.ms} ms) ${e.body ?? ''}`
      return `  ${where}\n    -> ${what}`
    })
    .join('\n')
}

/** Runs an aoconnect call; on a throw, says which call and what the node answered. */
async function call(what, fn) {
  const before = trail.length
  try {
    return await fn()
  } catch (e) {
    const n = Math.max(1, trail.length - before)
    throw new Error(`${what} failed: ${e.message}\nrequests:\n${lastRequests(n)}`, { cause: e })
  }
}

/** `Output.data` of a result as text (aos puts the printed text or returned value there). */
function outputText(res) {
  const out = res?.Output
  if (out === undefined || out === null) return undefined
  if (typeof out === 'string') return out
  const d = out.data
  if (d === undefined || d === null) return undefined
  if (typeof d === 'string') return d
  if (typeof d === 'object' && typeof d.output === 'string') return d.output
  return JSON.stringify(d)
}

/** Asserts an aos result has no `Error` and its output contains `expected`. */
function assertOk(res, expected, what) {
  const show = JSON.stringify(res).slice(0, 1500)
  assert.ok(res && typeof res === 'object', `${what}: no result object: ${show}`)
  assert.ok(res.Error === undefined || res.Error === null || res.Error === '', `${what}: Error in the result: ${show}`)
  if (expected !== undefined) {
    const text = outputText(res)
    assert.ok(typeof text === 'string', `${what}: no Output.data: ${show}`)
    assert.ok(text.includes(expected), `${what}: Output.data ${JSON.stringify(text)} lacks ${JSON.stringify(expected)}: ${show}`)
  }
}

async function currentSlot(url, pid) {
  const res = await fetchT(`${url}/${pid}/slot/current`)
  const text = await res.text()
  assert.equal(res.status, 200, `GET /${pid}/slot/current: ${res.status} ${text.slice(0, 500)}`)
  const n = Number(text.trim())
  assert.ok(Number.isInteger(n), `GET /${pid}/slot/current: not an integer: ${JSON.stringify(text.slice(0, 200))}`)
  return n
}

describe('aoconnect (mainnet) and an aos module from the gateway', () => {
  let ar
  let node
  let ao
  let moduleId
  let pid
  let returnSlot // {slot, id} of the message `return X` (X = 20)
  const timings = {}

  before(async () => {
    assert.ok(fs.existsSync(AOS_WASM), `the aos fixture is missing: ${AOS_WASM} (shared/fixtures must sit beside the repository)`)
    let t = Date.now()
    ar = await startArlocal()
    const jwk = loadJwk('key-1')
    const item = createData(fs.readFileSync(AOS_WASM), new ArweaveSigner(jwk), { tags: MODULE_TAGS })
    const arweave = Arweave.init({ host: '127.0.0.1', port: ar.port, protocol: 'http' })
    ;({
      itemIds: [moduleId],
    } = await uploadBundle({ url: ar.url, arweave, arbundles, jwk, items: [item] }))
    timings.upload = Date.now() - t
    t = Date.now()
    node = await startNode({ extraArgs: ['--gateway', ar.url] })
    timings.nodeStart = Date.now() - t
    globalThis.fetch = recordingFetch
    ao = connect({ MODE: 'mainnet', URL: node.url, signer: createSigner(jwk) })
  })

  after(async () => {
    globalThis.fetch = realFetch
    if (Object.keys(timings).length) console.log(`# 60-aoconnect-aos timings (ms): ${JSON.stringify(timings)}`)
    await node?.stop()
    await ar?.stop()
  })

  it('arlocal holds the module with its tags, found by GraphQL', async () => {
    const data = await graphql(
      ar.url,
      `query($ids: [ID!]!) { transactions(ids: $ids) { edges { node { id tags { name value } data { size } } } } }`,
      { ids: [moduleId] },
    )
    const n = data.transactions.edges[0]?.node
    assert.ok(n, `arlocal GraphQL does not know the module item ${moduleId}`)
    assert.equal(n.data.size, String(fs.statSync(AOS_WASM).size))
    assert.deepEqual(n.tags, MODULE_TAGS)
  })

  it('spawn: the pid is the spawn item id, scheduled by the node', async () => {
    const t = Date.now()
    pid = await call('spawn', () => ao.spawn({ module: moduleId, tags: [{ name: 'Name', value: 'harness-60' }] }))
    timings.spawn = Date.now() - t
    assert.match(pid ?? '', /^[A-Za-z0-9_-]{43}$/, `spawn returned ${JSON.stringify(pid)}\n${lastRequests(2)}`)
    // aoconnect asked the node for its address (the scheduler) first.
    assert.ok(
      trail.some((e) => e.url.endsWith('/~meta@1.0/info/address') && e.status === 200 && e.body === node.address),
      `no pre-spawn GET /~meta@1.0/info/address answered with the node address\n${lastRequests(3)}`,
    )
    const push = trail.findLast((e) => e.url.endsWith('/push'))
    assert.equal(push.process, pid)
    assert.equal(pid, push.itemId, 'the pid is the ID of the spawn data item')
    assert.equal(await currentSlot(node.url, pid), 0, 'a new process is at slot 0 (its spawn)')
  })

  it('message + result: Eval `X = 10`, then `X = X * 2`', async () => {
    assert.ok(pid, 'no process (spawn failed)')
    let previous = await currentSlot(node.url, pid)
    for (const code of ['X = 10', 'X = X * 2']) {
      let t = Date.now()
      const slot = await call(`message(${code})`, () =>
        ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: code }),
      )
      timings[`message ${code}`] = Date.now() - t
      assert.ok(Number(slot) === previous + 1, `message(${code}) gave slot ${JSON.stringify(slot)}, expected ${previous + 1}\n${lastRequests(1)}`)
      previous = Number(slot)
      t = Date.now()
      const res = await call(`result(${code})`, () => ao.result({ process: pid, slot }))
      timings[`result ${code}`] = Date.now() - t
      assertOk(res, undefined, `result(${code})`)
      // aoconnect fills in defaults when the reply lacks `raw`: check the reply itself.
      const reply = trail.at(-1)
      assert.ok(
        reply.json?.raw && typeof reply.json.raw.Output === 'object' && Array.isArray(reply.json.raw.Messages),
        `result(${code}): the node's JSON reply has no raw {Output, Messages}:\n${lastRequests(1)}`,
      )
    }
    // result() by message id as well (aoconnect puts it where the slot goes).
    const both = await call('message(returnMessageId)', () =>
      ao.message({
        process: pid,
        tags: [{ name: 'Action', value: 'Eval' }],
        data: 'return X',
        returnMessageId: true,
        returnAssignmentSlot: true,
      }),
    )
    assert.equal(Number(both.slot), previous + 1, JSON.stringify(both))
    const sent = trail.findLast((e) => e.url.endsWith('~process@1.0/push'))
    assert.equal(both.id, sent.itemId, `returnMessageId gives the ID of the message's data item: ${JSON.stringify(both)}`)
    const bySlot = await call('result(return X)', () => ao.result({ process: pid, slot: both.slot }))
    assertOk(bySlot, '20', 'result(return X)')
    returnSlot = both
  })

  it('dryrun `return X` answers 20 and takes no slot', async () => {
    assert.ok(pid, 'no process (spawn failed)')
    const before = await currentSlot(node.url, pid)
    const t = Date.now()
    const res = await call('dryrun(return X)', () =>
      ao.dryrun({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'return X' }),
    )
    timings.dryrun = Date.now() - t
    assertOk(res, undefined, 'dryrun(return X)')
    assert.equal(outputText(res), '20', `dryrun Output: ${JSON.stringify(res).slice(0, 800)}`)
    assert.equal(await currentSlot(node.url, pid), before, 'the dry-run took a slot')
    // A dry-run changes no state: a second one sees X unchanged, a real message after it
    // gets the next slot.
    const again = await call('dryrun(X = 99; return X)', () =>
      ao.dryrun({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'X = 99; return X' }),
    )
    assert.equal(outputText(again), '99', JSON.stringify(again).slice(0, 800))
    const slot = await call('message(return X) after dryruns', () =>
      ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'return X' }),
    )
    assert.equal(Number(slot), before + 1)
    const res2 = await call('result(return X) after dryruns', () => ao.result({ process: pid, slot }))
    assert.equal(outputText(res2), '20', `the dry-run's X = 99 leaked: ${JSON.stringify(res2).slice(0, 800)}`)
  })

  it('results(): one edge at the current slot', async () => {
    assert.ok(pid, 'no process (spawn failed)')
    const slot = await currentSlot(node.url, pid)
    const res = await call('results', () => ao.results({ process: pid }))
    assert.equal(res.edges?.length, 1, JSON.stringify(res).slice(0, 800))
    assert.equal(String(res.edges[0].cursor).trim(), String(slot))
    assertOk(res.edges[0].node, '20', 'results().edges[0].node')
  })

  it('the aos counter: three `Count = (Count or 0) + 1` then `print("Count: " .. Count)`', async () => {
    assert.ok(pid, 'no process (spawn failed)')
    let slot
    for (let i = 0; i < 3; i++) {
      slot = await call(`count message ${i + 1}`, () =>
        ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'Count = (Count or 0) + 1' }),
      )
    }
    const printed = await call('print message', () =>
      ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'print("Count: " .. Count)' }),
    )
    assert.equal(Number(printed), Number(slot) + 1)
    const res = await call('result(print)', () => ao.result({ process: pid, slot: printed }))
    assertOk(res, 'Count: 3', 'result(print Count)')
    // An Error in aos reaches the result as `Error`, not as a failed request.
    const bad = await call('message(error)', () =>
      ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'error("harness boom")' }),
    )
    const err = await call('result(error)', () => ao.result({ process: pid, slot: bad }))
    assert.match(JSON.stringify(err.Error ?? err.Output ?? err), /harness boom/, JSON.stringify(err).slice(0, 800))
  })

  it('result() of an earlier slot, by slot and by message ID, is that slot\'s', async () => {
    assert.ok(returnSlot, 'no earlier `return X` message (an earlier test failed)')
    const bySlot = await call('result(earlier slot)', () => ao.result({ process: pid, slot: returnSlot.slot }))
    assert.equal(outputText(bySlot), '20', `result of slot ${returnSlot.slot}: ${JSON.stringify(bySlot).slice(0, 800)}`)
    const byId = await call('result(earlier message id)', () => ao.result({ process: pid, message: returnSlot.id }))
    assert.equal(outputText(byId), '20', `result of message ${returnSlot.id}: ${JSON.stringify(byId).slice(0, 800)}`)
  })
})
