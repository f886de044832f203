// Static checks, no node: the independent verifier against the real client libraries'
// signatures, and the signature-base shapes the pinned libraries produce (spec 07 §1.2,
// §2, A.3, A.7). A library upgrade that changes its wire format fails here first.

import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'

import { loadJwk } from '../lib/node.mjs'
import { hbsigSigned, aoconnectSigned } from '../lib/clients.mjs'
import { verifyHttpsig, checkContentDigest, addressOfJwk, labelForModulus } from '../lib/verify-httpsig.mjs'
import { parseDictionary, serializeMember } from '../lib/sf.mjs'

const KEY1_ADDRESS = 'vcaPe4JWnrSOCktDHBgXge-zWUb6JRkqbom5w9t7i-4'
const KEY1_LABEL = 'http-sig-c68f7b82569eb48e' // spec 03 §5.2 step 6
const URL_BASE = 'http://127.0.0.1:10000'

const jwk1 = loadJwk('key-1')
const n1 = Buffer.from(jwk1.n, 'base64url')

/** Recovers the PSS salt length of a signature (for pinning what the clients use). */
function verifiesWithSalt(base, sig, saltLength) {
  const key = crypto.createPublicKey({ key: { kty: 'RSA', n: jwk1.n, e: 'AQAB' }, format: 'jwk' })
  return crypto.verify('sha512', Buffer.from(base), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, sig)
}

describe('05 RFC 8941 subset', () => {
  it('parses and re-serialises a signature-input member', () => {
    const text = 'sig1=("@path" "a-b" "content-digest");alg="rsa-pss-sha512";keyid="x_y-z"'
    const d = parseDictionary(text)
    const m = d.get('sig1')
    assert.equal(m.type, 'inner')
    assert.deepEqual(m.items.map((i) => i.value), ['@path', 'a-b', 'content-digest'])
    assert.equal(m.params.get('alg').value, 'rsa-pss-sha512')
    assert.equal('sig1=' + serializeMember(m), text)
  })
  it('parses byte sequences in both base64 alphabets and several members', () => {
    const d = parseDictionary('a=:AQID:, b=:-_8=:, c=?1, n=42;x')
    assert.deepEqual([...d.get('a').value], [1, 2, 3])
    assert.deepEqual([...d.get('b').value], [0xfb, 0xff])
    assert.equal(d.get('c').value, true)
    assert.equal(d.get('n').value, 42)
    assert.equal(d.get('n').params.get('x').value, true)
  })
  it('rejects malformed input', () => {
    for (const bad of ['A=1', 'a=(', 'a="x', 'a=:!!:', 'a=1,', 'a=1 b=2']) {
      assert.throws(() => parseDictionary(bad), undefined, bad)
    }
  })
})

describe('05 test wallet facts', () => {
  it('key-1 address and signature label match spec 03', () => {
    assert.equal(addressOfJwk(jwk1), KEY1_ADDRESS)
    assert.equal(labelForModulus(n1), KEY1_LABEL)
  })
})

describe('05 hbsig 0.1.5 signatures', () => {
  it('the spec 07 A.7 request: exact base shape, verifies, signer = key-1', async () => {
    const req = await hbsigSigned(jwk1, URL_BASE, { path: '/~process@1.0/schedule', type: 'Message', action: 'Eval', count: 3 })
    assert.equal(req.url, `${URL_BASE}/~process@1.0/schedule`)
    const r = verifyHttpsig(req)
    assert.ok(r.ok, JSON.stringify(r.signatures.map((s) => s.error)))
    const s = r.signatures[0]
    assert.equal(s.label, KEY1_LABEL)
    assert.equal(s.signer, KEY1_ADDRESS)
    assert.equal(s.keyid, jwk1.n, 'keyid = base64url modulus')
    assert.equal(
      s.base,
      [
        '"path": /~process@1.0/schedule',
        '"action": Eval',
        '"ao-types": count="integer"',
        '"count": 3',
        '"type": Message',
        `"@signature-params": ("@path" "action" "ao-types" "count" "type");alg="rsa-pss-sha512";keyid="${jwk1.n}"`,
      ].join('\n'),
    )
    // JS signers use the maximum PSS salt (spec 07 fact 1): 512 - 64 - 2 = 446 bytes.
    assert.equal(verifiesWithSalt(s.base, s.signatureBytes, 446), true)
    assert.equal(verifiesWithSalt(s.base, s.signatureBytes, 64), false)
  })

  it('with a body: content-digest in standard base64, covered and matching', async () => {
    const req = await hbsigSigned(jwk1, URL_BASE, { path: '/x', action: 'Eval', data: 'X = X + 1' })
    const r = verifyHttpsig(req)
    assert.ok(r.ok)
    assert.ok(r.signatures[0].components.includes('content-digest'))
    assert.match(req.headers['content-digest'], /^sha-256=:[A-Za-z0-9+/]+=*:$/)
    assert.ok(checkContentDigest(req.headers, Buffer.from(String(req.body))).ok)
    assert.equal(checkContentDigest(req.headers, Buffer.from('X = X + 2')).ok, false)
  })

  it('tampered header, signature or keyid fail the verifier', async () => {
    const req = await hbsigSigned(jwk1, URL_BASE, { path: '/x', action: 'Eval', count: 3 })
    assert.ok(verifyHttpsig(req).ok)
    assert.equal(verifyHttpsig({ ...req, headers: { ...req.headers, action: 'Evil' } }).ok, false)
    assert.equal(verifyHttpsig({ ...req, headers: { ...req.headers, path: '/y' } }).ok, false)
    const sig = req.headers.signature
    const i = sig.indexOf('=:') + 10
    const flipped = sig.slice(0, i) + (sig[i] === 'A' ? 'B' : 'A') + sig.slice(i + 1)
    assert.equal(verifyHttpsig({ ...req, headers: { ...req.headers, signature: flipped } }).ok, false)
    const n2 = loadJwk('key-2').n
    const otherKey = req.headers['signature-input'].replace(jwk1.n, n2)
    assert.equal(verifyHttpsig({ ...req, headers: { ...req.headers, 'signature-input': otherKey } }).ok, false)
  })
})

describe('05 aoconnect 0.0.98 request() signatures', () => {
  it('the spec 07 A.7 request: header-only base, no @path, verifies', async () => {
    const req = await aoconnectSigned(jwk1, URL_BASE, { path: '/~meta@1.0/info', 'x-vector': 'aoconnect', count: 7 })
    assert.equal(req.method, 'GET')
    assert.equal(req.url, `${URL_BASE}/~meta@1.0/info`)
    const r = verifyHttpsig(req)
    assert.ok(r.ok, JSON.stringify(r.signatures.map((s) => s.error)))
    const s = r.signatures[0]
    assert.equal(s.label, KEY1_LABEL)
    assert.equal(s.signer, KEY1_ADDRESS)
    assert.equal(
      s.base,
      [
        '"ao-types": count=integer',
        '"count": 7',
        '"signing-format": httpsig',
        '"x-vector": aoconnect',
        `"@signature-params": ("ao-types" "count" "signing-format" "x-vector");alg="rsa-pss-sha512";keyid="${jwk1.n}"`,
      ].join('\n'),
    )
    assert.equal(verifiesWithSalt(s.base, s.signatureBytes, 446), true)
  })

  it('a tampered header fails the verifier', async () => {
    const req = await aoconnectSigned(jwk1, URL_BASE, { path: '/x', method: 'POST', 'x-custom': 'abc' })
    assert.ok(verifyHttpsig(req).ok)
    assert.equal(verifyHttpsig({ ...req, headers: { ...req.headers, 'x-custom': 'abd' } }).ok, false)
  })
})

describe('05 verifier: keyid forms and salt lengths', () => {
  // Our own signer, only to exercise the verifier's keyid parsing (std base64,
  // `publickey:` prefix) and a digest-length salt (what HyperBEAM itself uses).
  function signWith(keyidText, saltLength) {
    const comps = ['a', '@path']
    const params = `(${comps.map((c) => `"${c}"`).join(' ')});alg="rsa-pss-sha512";keyid="${keyidText}"`
    const base = `"a": 1\n"path": /p\n"@signature-params": ${params}`
    const key = crypto.createPrivateKey({ key: jwk1, format: 'jwk' })
    const sig = crypto.sign('sha512', Buffer.from(base), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength })
    return { headers: { a: '1', path: '/p', signature: `${KEY1_LABEL}=:${sig.toString('base64')}:`, 'signature-input': `${KEY1_LABEL}=${params}` } }
  }
  for (const [name, keyid] of [
    ['base64url', n1.toString('base64url')],
    ['standard base64', n1.toString('base64')],
    ['publickey: + base64', 'publickey:' + n1.toString('base64')],
  ]) {
    it(`keyid in ${name}, salt 64`, () => {
      const r = verifyHttpsig(signWith(keyid, 64))
      assert.ok(r.ok, JSON.stringify(r.signatures))
      assert.equal(r.signatures[0].signer, KEY1_ADDRESS)
    })
  }
  it('a derived component without a same-named field is derived from the request', () => {
    const m = signWith(jwk1.n, 32)
    delete m.headers.path
    assert.ok(verifyHttpsig({ ...m, method: 'GET', url: 'http://h/p' }).ok)
    assert.equal(verifyHttpsig({ ...m, method: 'GET', url: 'http://h/q' }).ok, false)
  })
})
