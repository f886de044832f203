// Signed requests made by the real client libraries, captured so that tests can send
// them as they are or tampered.

import { createSigner as hbsigCreateSigner } from 'hbsig'
import { connect, createSigner as aoCreateSigner } from '@permaweb/aoconnect'

import { fetchT } from './node.mjs'
import { headerObject } from './verify-httpsig.mjs'

/**
 * A request signed by hbsig (HyperBEAM style: `@path` is a component, written `"path"`).
 * @returns {{url, method, headers, body?}}
 */
export async function hbsigSigned(jwk, baseUrl, fields) {
  const sign = hbsigCreateSigner(jwk, baseUrl)
  const signed = await sign(fields)
  return { url: signed.url, method: signed.method, headers: { ...signed.headers }, body: signed.body }
}

/**
 * The request aoconnect 0.0.98 (mainnet mode) makes for `request(fields)`, captured at
 * `fetch` and not sent. Header-only: aoconnect signs the sorted header names, no `@path`
 * (spec 07 §1.2).
 * @returns {{url, method, headers, body?}}
 */
export async function aoconnectSigned(jwk, baseUrl, fields) {
  const realFetch = globalThis.fetch
  let captured
  globalThis.fetch = async (url, init = {}) => {
    captured = { url: String(url), method: init.method ?? 'GET', headers: headerObject(init.headers ?? {}), body: init.body }
    return new Response('captured', { status: 200 })
  }
  try {
    const ao = connect({ MODE: 'mainnet', URL: baseUrl, signer: aoCreateSigner(jwk) })
    await ao.request(fields)
  } finally {
    globalThis.fetch = realFetch
  }
  if (!captured) throw new Error('aoconnect made no request')
  return captured
}

/** Sends a captured request (optionally with changes) and returns the Response. */
export function sendRequest(req, { headers = {}, body, url } = {}) {
  const h = { ...req.headers }
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) delete h[k]
    else h[k] = v
  }
  const method = req.method ?? 'GET'
  const b = body !== undefined ? body : req.body
  const init = { method, headers: h }
  if (b !== undefined && b !== null && method !== 'GET' && method !== 'HEAD') init.body = b
  return fetchT(url ?? req.url, init)
}

/**
 * The committer addresses a `committers` reply names: httpsig replies carry them as
 * header fields `1`, `2`, …; JSON replies as `{"1": …}`; a list body as text.
 * @returns {{list: string[], res: {status, headers, body}}}
 */
export async function committersOf(res) {
  const headers = headerObject(res.headers)
  const body = Buffer.from(await res.arrayBuffer()).toString('utf8')
  const list = []
  if ((headers['content-type'] || '').includes('json')) {
    try {
      const j = JSON.parse(body)
      for (let i = 1; i <= 64 && j[String(i)] !== undefined; i++) list.push(j[String(i)])
    } catch {
      // not JSON after all
    }
  }
  if (list.length === 0) {
    for (let i = 1; i <= 64 && headers[String(i)] !== undefined; i++) list.push(headers[String(i)])
  }
  return { list, res: { status: res.status, headers, body } }
}
