// An independent RFC 9421 (HTTP Message Signatures) verifier for the HyperBEAM profile
// (spec 03 §5.3–5.5, spec 07 §2 and A.3), written on node:crypto for this harness.
// It never uses a client library's verify code (hbsig's `verify()` accepts anything,
// spec 07 §2).
//
// Profile:
//  * every member of the `signature` dictionary is matched with the same-named member
//    of `signature-input` (an inner list of component names with parameters);
//  * the base is `"<name>": <value>` lines, one per component, then
//    `"@signature-params": <the serialised signature-input member>`; a derived component
//    `@x` is written as `"x"` and takes the value of the message field `x` when there is
//    one (the reference does not derive components, 03 §5.3), otherwise the value derived
//    from the request (method, URL, status) per RFC 9421 §2.2;
//  * values are trimmed and every LF becomes a space;
//  * the key is the RSA modulus n from `keyid` (base64url or base64, optional
//    `publickey:` prefix), e = 65537; `rsa-pss-sha512` (or `-sha256`) with the salt
//    length auto-detected (JS clients use the maximum salt, HyperBEAM the digest length);
//  * the label should be `http-sig-<hex of sha256(n)[1..9]>` (03 §5.2 step 6);
//  * signer = base64url(sha256(n)); commitment id = base64url(sha256(signature bytes)).
//
// Content-digest (`sha-256=:…:` or `sha-512=:…:`, either base64 alphabet) is checked
// against the body separately (`checkContentDigest`).

import crypto from 'node:crypto'
import { parseDictionary, serializeMember, decodeB64Any } from './sf.mjs'

export const b64u = (b) => Buffer.from(b).toString('base64url')
export const sha256 = (b) => crypto.createHash('sha256').update(b).digest()

/** Lower-cased plain-object view of a fetch `Headers`, a Map or an object. */
export function headerObject(headers) {
  const out = {}
  if (!headers) return out
  if (typeof headers.forEach === 'function' && !(headers instanceof Map) && !Array.isArray(headers)) {
    headers.forEach((v, k) => {
      out[k.toLowerCase()] = String(v)
    })
    return out
  }
  const entries = headers instanceof Map ? headers.entries() : Object.entries(headers)
  for (const [k, v] of entries) {
    const lk = k.toLowerCase()
    out[lk] = lk in out ? `${out[lk]}, ${v}` : String(v)
  }
  return out
}

/** The modulus bytes named by a `keyid` value. */
export function modulusFromKeyid(keyid) {
  const text = keyid.replace(/^publickey:/, '')
  const n = decodeB64Any(text)
  if (n.length < 128) throw new Error(`keyid is not an RSA modulus (${n.length} bytes)`)
  return n
}

export const addressOfModulus = (n) => b64u(sha256(n))
export const labelForModulus = (n) => 'http-sig-' + sha256(n).subarray(1, 9).toString('hex')

function derivedValue(name, ctx) {
  const u = ctx.url ? new URL(ctx.url) : null
  switch (name) {
    case 'method':
      return ctx.method
    case 'path':
      return u?.pathname
    case 'query':
      return u ? u.search || '?' : undefined
    case 'authority':
      return u?.host
    case 'scheme':
      return u?.protocol.replace(/:$/, '')
    case 'target-uri':
      return u?.href
    case 'request-target':
      return u ? u.pathname + u.search : undefined
    case 'status':
      return ctx.status === undefined ? undefined : String(ctx.status)
    default:
      return undefined
  }
}

/** The signature base for one signature-input member (03 §5.3). Throws if a component is missing. */
export function signatureBase(member, fields, ctx = {}) {
  const lines = []
  for (const item of member.items) {
    if (item.type !== 'string') throw new Error(`component ${JSON.stringify(item)} is not a string`)
    const comp = item.value
    const name = comp.startsWith('@') ? comp.slice(1) : comp
    let value = fields[name.toLowerCase()]
    if (value === undefined && comp.startsWith('@')) value = derivedValue(name, ctx)
    if (value === undefined) throw new Error(`component ${comp} is missing from the message`)
    value = String(value).trim().replace(/\n/g, ' ')
    lines.push(`"${name.toLowerCase()}": ${value}`)
  }
  lines.push(`"@signature-params": ${serializeMember(member)}`)
  return lines.join('\n')
}

/**
 * Verifies every signature of a message.
 * @param {{headers, method?, url?, status?}} msg headers: fetch Headers or an object
 * @returns {{ok, signatures: Array, error?}} ok = at least one signature and all verify
 *   with a well-formed label.
 */
export function verifyHttpsig(msg) {
  const fields = headerObject(msg.headers)
  const ctx = { method: msg.method, url: msg.url, status: msg.status }
  if (!fields.signature || !fields['signature-input']) {
    return { ok: false, signatures: [], error: 'no signature/signature-input fields' }
  }
  let sigs, inputs
  try {
    sigs = parseDictionary(fields.signature)
    inputs = parseDictionary(fields['signature-input'])
  } catch (e) {
    return { ok: false, signatures: [], error: `malformed signature fields: ${e.message}` }
  }
  const out = []
  for (const [label, sigItem] of sigs) {
    const r = { label, ok: false }
    out.push(r)
    try {
      if (sigItem.type !== 'bytes') throw new Error('signature member is not a byte sequence')
      const member = inputs.get(label)
      if (!member || member.type !== 'inner') throw new Error(`no signature-input member ${label}`)
      r.components = member.items.map((i) => i.value)
      const alg = member.params.get('alg')?.value
      const keyid = member.params.get('keyid')?.value
      r.alg = alg
      r.keyid = keyid
      if (!keyid) throw new Error('no keyid')
      const hash = { 'rsa-pss-sha512': 'sha512', 'rsa-pss-sha256': 'sha256' }[alg]
      if (!hash) throw new Error(`unsupported alg ${alg}`)
      const n = modulusFromKeyid(keyid)
      r.signer = addressOfModulus(n)
      r.okLabel = label === labelForModulus(n)
      r.signatureBytes = sigItem.value
      r.commitmentId = b64u(sha256(sigItem.value))
      r.base = signatureBase(member, fields, ctx)
      const key = crypto.createPublicKey({ key: { kty: 'RSA', n: b64u(n), e: 'AQAB' }, format: 'jwk' })
      r.okSignature = crypto.verify(
        hash,
        Buffer.from(r.base, 'utf8'),
        { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto.constants.RSA_PSS_SALTLEN_AUTO },
        sigItem.value,
      )
      r.ok = r.okSignature && r.okLabel
    } catch (e) {
      r.error = e.message
    }
  }
  return { ok: out.length > 0 && out.every((r) => r.ok), signatures: out }
}

/**
 * Checks `content-digest` against the body.
 * @returns {{present, ok, alg?, error?}} present=false when there is no content-digest.
 */
export function checkContentDigest(headers, body) {
  const fields = headerObject(headers)
  const text = fields['content-digest']
  if (!text) return { present: false, ok: false }
  try {
    const dict = parseDictionary(text)
    const algs = { 'sha-256': 'sha256', 'sha-512': 'sha512' }
    let checked = 0
    for (const [name, item] of dict) {
      if (!algs[name]) continue
      if (item.type !== 'bytes') return { present: true, ok: false, error: `${name} is not a byte sequence` }
      const want = crypto.createHash(algs[name]).update(body ?? Buffer.alloc(0)).digest()
      if (!want.equals(item.value)) return { present: true, ok: false, alg: name, error: 'digest mismatch' }
      checked++
    }
    return checked ? { present: true, ok: true } : { present: true, ok: false, error: 'no known digest' }
  } catch (e) {
    return { present: true, ok: false, error: e.message }
  }
}

/** Verifies a fetch Response: signature(s) plus content-digest. Reads the body. */
export async function verifyResponse(res, { method = 'GET', url } = {}) {
  const body = Buffer.from(await res.arrayBuffer())
  const headers = headerObject(res.headers)
  const sig = verifyHttpsig({ headers, method, url: url ?? res.url, status: res.status })
  const digest = checkContentDigest(headers, body)
  return { ...sig, digest, headers, body, status: res.status }
}

/** The address of an Arweave JWK: base64url(sha256(n)). */
export const addressOfJwk = (jwk) => addressOfModulus(Buffer.from(jwk.n, 'base64url'))
