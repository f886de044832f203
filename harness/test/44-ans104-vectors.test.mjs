// Static, no node: the verified ANS-104 vectors of spec 03 §7.2–7.4 reproduced with the
// pinned arbundles and arweave-js functions. This pins the JS libraries' behaviour that
// the node cross-checks (45-ans104-crosscheck) rely on.

import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'

import { loadJwk } from '../lib/node.mjs'
import {
  arbundles,
  createData,
  DataItem,
  serializeTags,
  deserializeTags,
  arweaveDeepHash,
  signatureDataParts,
  arweaveSignedItem,
  arbundlesSignedItem,
  Arweave,
} from '../lib/ans104.mjs'

const b64u = (b) => Buffer.from(b).toString('base64url')
const sha256 = (b) => crypto.createHash('sha256').update(b).digest()

/** A signer stand-in with an all-zero 512-byte owner: gives unsigned items (03 §7.4). */
const ZERO_OWNER_SIGNER = { publicKey: Buffer.alloc(512), signatureType: 1, signatureLength: 512, ownerLength: 512 }

describe('44 ANS-104 vectors (spec 03 §7.2–7.4)', () => {
  it('§7.2 Avro tag encoding: [a=1, Content-Type=text/plain]', () => {
    const tags = [
      { name: 'a', value: '1' },
      { name: 'Content-Type', value: 'text/plain' },
    ]
    const bytes = Buffer.from(serializeTags(tags))
    assert.equal(bytes.toString('hex'), '0402610231' + '18' + Buffer.from('Content-Type').toString('hex') + '14' + Buffer.from('text/plain').toString('hex') + '00')
    assert.deepEqual(deserializeTags(bytes), tags)
  })

  it('§7.2 no tags encode to empty bytes', () => {
    assert.equal(Buffer.from(serializeTags([])).length, 0)
  })

  it('§7.3 deep hash vectors with arweave-js and arbundles', async () => {
    const empty = 'pp59N_3H8ECp7Baq6E3iT6tKZT2sTeC9JH42urn-RdkonFoEqJPJUoWBL1zvyXB6'
    const one = 's3JakbadSkQjZqEGXPJwglrIcGm93JjpDYbgHgrarae9F9LMtllZYnXuu5UcS0ea'
    assert.equal(b64u(await arweaveDeepHash([])), empty)
    assert.equal(b64u(await arweaveDeepHash([Buffer.from('a')])), one)
    assert.equal(b64u(await arbundles.deepHash([])), empty)
    assert.equal(b64u(await arbundles.deepHash([Buffer.from('a')])), one)
  })

  it('§7.3 deep hash defined independently (sha384) agrees with arweave-js', async () => {
    const h = (...parts) => crypto.createHash('sha384').update(Buffer.concat(parts)).digest()
    const dh = (x) =>
      Array.isArray(x)
        ? x.reduce((acc, e) => h(acc, dh(e)), h(Buffer.from('list' + x.length)))
        : h(h(Buffer.from('blob' + x.length)), h(x))
    const sample = [Buffer.from('dataitem'), Buffer.from('1'), [Buffer.from('x'), Buffer.alloc(0)], crypto.randomBytes(100)]
    assert.deepEqual(Buffer.from(await arweaveDeepHash(sample)), dh(sample))
  })

  it('§7.4 the unsigned {a:"1", data:"hello"} item: 1055 bytes and unsigned_id', async () => {
    const item = createData('hello', ZERO_OWNER_SIGNER, { tags: [{ name: 'a', value: '1' }] })
    const raw = Buffer.from(item.getRaw())
    assert.equal(raw.length, 1055)
    const want = Buffer.concat([
      Buffer.from([1, 0]),
      Buffer.alloc(1024),
      Buffer.from('00000100000000000000060000000000000002026102310068656c6c6f', 'hex'),
    ])
    assert.equal(raw.toString('hex'), want.toString('hex'))
    const sd = Buffer.from(await item.getSignatureData())
    assert.equal(b64u(sha256(sd)), 'spRp-9HUjmYm8-AKptDcRUKR9KKqhn3-9bSIAoMqnRI')
    // The same signature data from arweave-js' deepHash over the §7.4 list.
    const parts = signatureDataParts({ owner: Buffer.alloc(512), tags: Buffer.from(serializeTags([{ name: 'a', value: '1' }])), data: Buffer.from('hello') })
    assert.deepEqual(Buffer.from(await arweaveDeepHash(parts)), sd)
  })

  it('§7.4 arbundles: signed item id = sha256(signature), PSS-SHA256 over the deep hash', async () => {
    const jwk = loadJwk('key-1')
    const { raw, id, item } = await arbundlesSignedItem(jwk, 'hello', { tags: [{ name: 'a', value: '1' }] })
    assert.equal(await DataItem.verify(raw), true)
    const sig = raw.subarray(2, 514)
    assert.equal(id, b64u(sha256(sig)))
    assert.deepEqual(raw.subarray(514, 1026), Buffer.from(jwk.n, 'base64url'))
    const dh = Buffer.from(await item.getSignatureData())
    const key = crypto.createPublicKey({ key: { kty: 'RSA', n: jwk.n, e: 'AQAB' }, format: 'jwk' })
    const ok = (saltLength) => crypto.verify('sha256', dh, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, sig)
    assert.equal(ok(crypto.constants.RSA_PSS_SALTLEN_AUTO), true)
    assert.equal(ok(478), true, 'arbundles signs with the maximum salt (spec 07 fact 1)')
    assert.equal(ok(32), false)
  })

  it('arweave-js: a hand-built item signed with Arweave.crypto.sign verifies in arbundles', async () => {
    const jwk = loadJwk('key-1')
    const target = crypto.createHash('sha256').update('target').digest()
    const anchor = crypto.createHash('sha256').update('anchor').digest()
    const { raw, id, deepHash } = await arweaveSignedItem(jwk, {
      tags: [{ name: 'Data-Protocol', value: 'ao' }, { name: 'Type', value: 'Message' }],
      data: Buffer.from('from arweave-js'),
      target,
      anchor,
    })
    assert.equal(await DataItem.verify(raw), true)
    const item = new DataItem(raw)
    assert.equal(item.id, id)
    assert.deepEqual(Buffer.from(await item.getSignatureData()), deepHash)
    assert.equal(item.target, b64u(target))
    assert.equal(item.anchor, b64u(anchor))
    assert.equal(await Arweave.crypto.verify(jwk.n, deepHash, raw.subarray(2, 514)), true)
  })

  it('a salt-32 signature (HyperBEAM style) verifies in arbundles too', async () => {
    const jwk = loadJwk('key-1')
    const owner = Buffer.from(jwk.n, 'base64url')
    const tags = Buffer.from(serializeTags([{ name: 'a', value: '1' }]))
    const dh = Buffer.from(await arweaveDeepHash(signatureDataParts({ owner, tags, data: Buffer.from('hello') })))
    const sig = Buffer.from(await Arweave.crypto.sign(jwk, dh, { saltLength: 32 }))
    const raw = Buffer.concat([Buffer.from([1, 0]), sig, owner, Buffer.from([0, 0]), Buffer.from('0100000000000000', 'hex'), Buffer.from('0600000000000000', 'hex'), tags, Buffer.from('hello')])
    assert.equal(await DataItem.verify(raw), true)
  })
})
