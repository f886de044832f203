// client → node: requests signed by hbsig (HyperBEAM style, `@path` signed) and by
// aoconnect's header-only `request()` are accepted, and the node names the right
// committer; tampered requests are refused with a 4xx (spec 07 §7.5, §8 `40-httpsig-crosscheck`).
// Every reply is also checked to be signed by the node.

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'

import { startNode, loadJwk, shorten } from '../lib/node.mjs'
import { hbsigSigned, aoconnectSigned, sendRequest, committersOf } from '../lib/clients.mjs'
import { verifyHttpsig, addressOfJwk, checkContentDigest } from '../lib/verify-httpsig.mjs'

const jwk1 = loadJwk('key-1')
const jwk2 = loadJwk('key-2')
const ADDR1 = addressOfJwk(jwk1)
const ADDR2 = addressOfJwk(jwk2)

/** Sends a signed request to `committers` and checks the reply names exactly `want`. */
async function expectCommitters(req, want, what) {
  const sent = verifyHttpsig(req)
  assert.ok(sent.ok, `${what}: the client's request does not verify independently: ${shorten(sent.signatures)}`)
  const res = await sendRequest(req)
  const { list, res: r } = await committersOf(res)
  assert.equal(r.status, 200, `${what}: ${req.method} ${req.url} -> ${r.status}: ${r.body}\nrequest headers: ${shorten(req.headers)}`)
  assert.deepEqual(list, want, `${what}: committers reply ${shorten(r)}`)
  const reply = verifyHttpsig({ headers: r.headers, method: req.method, url: req.url, status: r.status })
  assert.ok(reply.ok, `${what}: the reply is not signed by the node: ${shorten(reply)}`)
}

async function expectRefused(req, changes, what) {
  const res = await sendRequest(req, changes)
  const body = await res.text()
  // A refusal of bad input is a 4xx (a 5xx would mean the node failed on it).
  assert.ok(res.status >= 400 && res.status < 500, `${what}: expected a 4xx status, got ${res.status}: ${body.slice(0, 300)}`)
  return { status: res.status, body }
}

/** A copy of the signature field with one base64 character of the signature changed. */
function flipSignature(sigField, at = 40) {
  const i = sigField.indexOf('=:') + 2 + at
  const c = sigField[i]
  return sigField.slice(0, i) + (c === 'A' ? 'B' : 'A') + sigField.slice(i + 1)
}

describe('40 httpsig: client → node', () => {
  let node
  before(async () => {
    node = await startNode({ wallet: 'key-2' })
  })
  after(async () => {
    await node?.stop()
  })

  describe('hbsig (@path signed)', () => {
    it('headers only: POST /committers names key-1', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc', count: 3 })
      assert.ok(verifyHttpsig(req).signatures[0].components.includes('@path'))
      await expectCommitters(req, [ADDR1], 'hbsig headers only')
    })

    it('with a body (inline-body-key, content-digest): names key-1', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc', data: 'hello body' })
      assert.ok(req.headers['content-digest'])
      await expectCommitters(req, [ADDR1], 'hbsig with body')
    })

    it('typed fields (hbsig ao-types form: list, empty-binary, atom): names key-1', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', tags: ['x', 2], empty: '', flag: true, count: 3 })
      assert.match(req.headers['ao-types'], /tags="list"/)
      await expectCommitters(req, [ADDR1], 'hbsig typed fields')
    })

    it('signed by key-2: names key-2', async () => {
      const req = await hbsigSigned(jwk2, node.url, { path: '/committers', action: 'Eval' })
      await expectCommitters(req, [ADDR2], 'hbsig key-2')
    })

    it('an unsigned accept: application/json added after signing is ignored or answered in JSON', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc' })
      const res = await sendRequest(req, { headers: { accept: 'application/json' } })
      const { list, res: r } = await committersOf(res)
      assert.equal(r.status, 200, r.body)
      assert.deepEqual(list, [ADDR1], shorten(r))
    })

    it('a tampered header field is refused', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc', count: 3 })
      await expectRefused(req, { headers: { 'x-test': 'abd' } }, 'x-test changed')
      await expectRefused(req, { headers: { count: '4' } }, 'count changed')
    })

    it('a process and a message, each the signed request itself (@path covered), are scheduled as sent', async () => {
      const scheduler = await (await fetch(`${node.url}/~meta@1.0/info/address`)).text()
      const spawn = await hbsigSigned(jwk1, node.url, {
        path: '/~process@1.0/schedule', device: 'process@1.0', type: 'Process',
        scheduler, 'execution-device': 'test-device@1.0', nonce: 'hbsig-schedule',
      })
      let res = await sendRequest(spawn)
      assert.equal(res.status, 200, `spawn: ${res.headers.get('reason')} ${await res.text()}`)
      const pid = res.headers.get('process')
      assert.match(pid ?? '', /^[A-Za-z0-9_-]{43}$/)
      const msg = await hbsigSigned(jwk1, node.url, { path: `/${pid}/schedule`, type: 'Message', target: pid, action: 'Eval', count: 3 })
      res = await sendRequest(msg)
      assert.equal(res.status, 200, `message: ${res.headers.get('reason')} ${await res.text()}`)
      assert.equal(res.headers.get('slot'), '1')
      res = await fetch(`${node.url}/${pid}/compute/results/assignment-slot?slot=1`)
      assert.equal([res.status, await res.text()].join(' '), '200 1')
      // The same message with a field changed after signing is still refused.
      const again = await hbsigSigned(jwk1, node.url, { path: `/${pid}/schedule`, type: 'Message', target: pid, action: 'Eval', count: 3 })
      await expectRefused(again, { headers: { count: '4' } }, 'count changed')
    })

    it('a tampered path field is refused', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc' })
      await expectRefused(req, { headers: { path: '/id' } }, 'path changed')
    })

    it('a tampered body (content-digest mismatch) is refused', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc', data: 'hello body' })
      assert.equal(checkContentDigest(req.headers, Buffer.from('hello bodz')).ok, false)
      await expectRefused(req, { body: 'hello bodz' }, 'body changed, digest kept')
    })

    it('a tampered body with a recomputed content-digest is refused (the digest is signed)', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc', data: 'hello body' })
      const other = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc', data: 'hello bodz' })
      await expectRefused(req, { body: 'hello bodz', headers: { 'content-digest': other.headers['content-digest'] } }, 'body + digest changed')
    })

    it('a tampered signature is refused', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc' })
      await expectRefused(req, { headers: { signature: flipSignature(req.headers.signature) } }, 'signature byte changed')
      await expectRefused(req, { headers: { signature: flipSignature(req.headers.signature, 600) } }, 'last signature bytes changed')
    })

    it("another message's valid signature is refused", async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc' })
      const other = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'xyz' })
      await expectRefused(req, { headers: { signature: other.headers.signature } }, 'signature of another message')
    })

    it('a signature-input naming another key is refused', async () => {
      const req = await hbsigSigned(jwk1, node.url, { path: '/committers', 'x-test': 'abc' })
      const input = req.headers['signature-input'].replace(jwk1.n, jwk2.n)
      await expectRefused(req, { headers: { 'signature-input': input } }, 'keyid of key-2')
    })
  })

  describe('aoconnect request() (header-only, no @path)', () => {
    it('POST /committers with a text field names key-1', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'x-custom': 'abc' })
      await expectCommitters(req, [ADDR1], 'aoconnect POST')
    })

    it('GET /committers names key-1', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', 'x-custom': 'abc' })
      assert.equal(req.method, 'GET')
      await expectCommitters(req, [ADDR1], 'aoconnect GET')
    })

    it('an integer field (aoconnect ao-types form `count=integer`) is accepted', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'x-custom': 'abc', count: 7 })
      assert.equal(req.headers['ao-types'], 'count=integer')
      await expectCommitters(req, [ADDR1], 'aoconnect integer field')
    })

    it('a list field (aoconnect form `(ao-type-integer) 2`) is accepted', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'x-custom': 'abc', list: ['a', 2] })
      await expectCommitters(req, [ADDR1], 'aoconnect list field')
    })

    it('a tampered header field is refused', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'x-custom': 'abc' })
      await expectRefused(req, { headers: { 'x-custom': 'abd' } }, 'x-custom changed')
    })

    it('a tampered signature is refused', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'x-custom': 'abc' })
      await expectRefused(req, { headers: { signature: flipSignature(req.headers.signature) } }, 'signature byte changed')
    })

    it('an unsigned extra field is not counted as committed (the committers stay the same)', async () => {
      const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'x-custom': 'abc' })
      const res = await sendRequest(req, { headers: { 'x-unsigned': 'zzz' } })
      const { list, res: r } = await committersOf(res)
      assert.equal(r.status, 200, r.body)
      assert.deepEqual(list, [ADDR1])
    })
  })
})
