// Starting and stopping our node (`hb serve`) for the tests, and running the `hb` CLI.
// Every wait is bounded; processes are stopped by the pid recorded at spawn.

import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const HARNESS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const REPO_DIR = path.resolve(HARNESS_DIR, '..')
export const FIXTURES_DIR = path.join(REPO_DIR, 'tests', 'fixtures')

/** The `hb` binary: $HB_BIN, else ../target/debug/hb relative to harness/. */
export function hbBin() {
  const bin = process.env.HB_BIN
    ? path.resolve(HARNESS_DIR, process.env.HB_BIN)
    : path.join(REPO_DIR, 'target', 'debug', 'hb')
  if (!fs.existsSync(bin)) {
    throw new Error(`hb binary not found at ${bin}; build it with \`cargo build -p hb\` or set HB_BIN`)
  }
  return bin
}

/** Path of a test wallet fixture (`key-1`, `key-2`). */
export const walletPath = (name) => path.join(FIXTURES_DIR, `${name}.json`)
export const loadJwk = (name) => JSON.parse(fs.readFileSync(walletPath(name), 'utf8'))

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Nodes still running when this process exits are killed (by pid) so that a failed or
// interrupted test never leaves one behind.
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

/** `fetch` with a wall-clock cap (default 15 s). */
export function fetchT(url, init = {}, ms = 15000) {
  return fetch(url, { ...init, signal: AbortSignal.timeout(ms) })
}

/**
 * Starts `hb serve` on a free loopback port with a temporary data directory and a
 * temporary copy of a test wallet. Polls `GET /~meta@1.0/info/address` for at most
 * `readyMs` (30 s). Retries with another port (at most 3 attempts) if the process dies
 * before it is ready (e.g. the port was taken in the meantime).
 */
export async function startNode({ wallet = 'key-2', readyMs = 30000, extraArgs = [] } = {}) {
  const bin = hbBin()
  let lastError
  for (let attempt = 1; attempt <= 3; attempt++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-harness-'))
    const walletCopy = path.join(dir, 'wallet.json')
    fs.copyFileSync(walletPath(wallet), walletCopy)
    fs.chmodSync(walletCopy, 0o600)
    const port = await freePort()
    const logPath = path.join(dir, 'node.log')
    const logFd = fs.openSync(logPath, 'a')
    const args = [
      'serve',
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--data-dir', path.join(dir, 'data'),
      '--wallet', walletCopy,
      // Off the network unless a test names a gateway (arlocal).
      ...(extraArgs.some((a) => String(a).includes('gateway')) ? [] : ['--gateway', 'none']),
      ...extraArgs,
    ]
    const child = spawn(bin, args, { stdio: ['ignore', logFd, logFd], env: { ...process.env, HB_LOG: process.env.HB_LOG || 'info' } })
    fs.closeSync(logFd)
    live.add(child.pid)
    let exited = null
    child.on('exit', (code, signal) => {
      exited = { code, signal }
      live.delete(child.pid)
    })
    const url = `http://127.0.0.1:${port}`
    const node = {
      url,
      port,
      pid: child.pid,
      dir,
      walletPath: walletCopy,
      logPath,
      log: () => (fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : ''),
      stop: () => stopProcess(child, dir),
    }
    const deadline = Date.now() + readyMs
    // Every wait below is bounded by `deadline` (and each probe by 2 s).
    while (Date.now() < deadline && !exited) {
      try {
        const res = await fetchT(`${url}/~meta@1.0/info/address`, {}, 2000)
        const text = await res.text()
        if (res.status === 200 && /^[A-Za-z0-9_-]{43}$/.test(text.trim())) {
          node.address = text.trim()
          return node
        }
      } catch {
        // not listening yet
      }
      await sleep(100)
    }
    lastError = new Error(
      `node did not become ready (attempt ${attempt}, port ${port}, exited ${JSON.stringify(exited)}):\n${node.log().slice(-2000)}`,
    )
    await node.stop()
    if (!exited) break // it ran but never answered: another port will not help
  }
  throw lastError
}

/**
 * Stops a child by its pid: `signal` (SIGINT: the node's graceful stop), then SIGKILL
 * after 5 s; removes its temporary directory `dir` (unless HB_KEEP_TMP is set).
 */
export async function stopProcess(child, dir, signal = 'SIGINT') {
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((r) => child.once('exit', r))
    try {
      process.kill(child.pid, signal)
    } catch {
      // already gone
    }
    const t = setTimeout(() => {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }, 5000)
    let cap
    await Promise.race([gone, new Promise((r) => (cap = setTimeout(r, 7000)))])
    clearTimeout(t)
    clearTimeout(cap)
  }
  if (dir && !process.env.HB_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true })
}

/**
 * Runs the `hb` CLI synchronously (30 s cap). stdout is a Buffer (items are binary).
 * @returns {{status, stdout: Buffer, stderr: string}}
 */
export function runHb(args, { input, timeoutMs = 30000 } = {}) {
  const r = spawnSync(hbBin(), args, { input, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 })
  if (r.error) throw r.error
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr.toString('utf8') }
}

/** A temporary directory removed at process exit. */
export function tmpDir(prefix = 'hb-harness-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  process.on('exit', () => {
    if (!process.env.HB_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** JSON text of a value with long strings cut (for assertion messages). */
export function shorten(value, max = 160) {
  return JSON.stringify(
    value,
    (_k, v) => (typeof v === 'string' && v.length > max ? `${v.slice(0, max)}…(${v.length} chars)` : v),
    1,
  )
}
