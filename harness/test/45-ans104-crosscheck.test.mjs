// ANS-104 both ways (spec 03 §7, spec 07 §5, §7.1–7.2):
//  * items signed by arbundles and by arweave-js verify in our node (HTTP: a POST with
//    `content-type: application/ans104`, `codec-device: ans104@1.0`; CLI: `hb message
//    verify --from ans104@1.0`), and the same items with one byte flipped are refused;
//  * items signed by our CLI (`hb message commit --device ans104@1.0 --to ans104@1.0`)
//    and replies the node signs as items (`accept-codec: ans104@1.0`) verify in
//    arbundles, and fail there with one byte flipped.

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

import { startNode, loadJwk, walletPath, runHb, tmpDir, fetchT } from '../lib/node.mjs'
import { committersOf, aoconnectSigned, sendRequest } from '../lib/clients.mjs'
import { addressOfJwk } from '../lib/verify-httpsig.mjs'
import { DataItem, arbundlesSignedItem, arweaveSignedItem, itemLayout, flipByte } from '../lib/ans104.mjs'

const jwk1 = loadJwk('key-1')
const ADDR1 = addressOfJwk(jwk1)
const b64u = (b) => Buffer.from(b).toString('base64url')
const sha256 = (b) => crypto.createHash('sha256').update(b).digest()

const TARGET = sha256(Buffer.from('harness target'))
// arbundles takes the anchor as a 32-byte string (its raw bytes), the target as base64url.
const ANCHOR = 'harness-anchor-0123456789abcdef!'

/** Positions to tamper with: signature, owner, target, anchor, tags and data. */
function tamperPositions(raw) {
  const l = itemLayout(raw)
  const pos = [
    ['signature type', 0],
    ['signature (start)', l.signature + 3],
    ['signature (end)', l.signature + 511],
    ['owner (start)', l.owner + 5],
    ['owner (end)', l.owner + 511],
  ]
  if (l.target !== null) pos.push(['target', l.target + 7])
  if (l.anchor !== null) pos.push(['anchor', l.anchor + 7])
  if (l.tagBytes > 0) {
    // (The u64 tag-count field is not covered by the signature — arbundles accepts an
    // item with it changed — so it is not a tamper position.)
    pos.push(['tags (first name byte)', l.tags + 2])
    pos.push(['tags (last value byte)', l.tags + l.tagBytes - 2])
  }
  if (l.length > l.data) {
    pos.push(['data (first byte)', l.data])
    pos.push(['data (last byte)', l.length - 1])
  }
  return pos
}

const postItem = (url, raw) =>
  fetchT(`${url}/committers`, {
    method: 'POST',
    headers: { 'content-type': 'application/ans104', 'codec-device': 'ans104@1.0' },
    body: raw,
  })

async function cases() {
  const plain = await arbundlesSignedItem(jwk1, 'hello', { tags: [{ name: 'a', value: '1' }] })
  const aoMessage = await arbundlesSignedItem(jwk1, 'X = X + 1', {
    tags: [
      { name: 'Action', value: 'Eval' },
      { name: 'Data-Protocol', value: 'ao' },
      { name: 'Type', value: 'Message' },
      { name: 'Variant', value: 'ao.N.1' },
    ],
    target: b64u(TARGET),
    anchor: ANCHOR,
  })
  const arweaveJs = await arweaveSignedItem(jwk1, {
    tags: [{ name: 'Content-Type', value: 'text/plain' }, { name: 'x', value: 'y' }],
    data: Buffer.from('signed with arweave-js'),
  })
  return [
    ['arbundles plain item', plain.raw],
    ['arbundles ao message (target, anchor, mixed-case tags)', aoMessage.raw],
    ['arweave-js item', arweaveJs.raw],
  ]
}

describe('45 ANS-104: JS-signed items verify in the node (HTTP)', () => {
  let node
  let items
  before(async () => {
    node = await startNode({ wallet: 'key-2' })
    items = await cases()
  })
  after(async () => {
    await node?.stop()
  })

  it('the JS items are valid in arbundles (sanity)', async () => {
    for (const [name, raw] of items) assert.equal(await DataItem.verify(raw), true, name)
  })

  it('POST /committers with each item answers the signer address', async () => {
    for (const [name, raw] of items) {
      const { list, res } = await committersOf(await postItem(node.url, raw))
      assert.equal(res.status, 200, `${name}: ${res.status} ${res.body}`)
      assert.deepEqual(list, [ADDR1], `${name}: committers ${JSON.stringify(res)}`)
    }
  })

  it('the same items with one byte flipped are refused (a 4xx status)', async () => {
    const accepted = []
    for (const [name, raw] of items) {
      for (const [where, at] of tamperPositions(raw)) {
        const bad = flipByte(raw, at)
        assert.equal(await DataItem.verify(bad).catch(() => false), false, `arbundles rejects ${name} / ${where}`)
        const res = await postItem(node.url, bad)
        const body = await res.text()
        if (res.status < 400 || res.status >= 500) accepted.push(`${name} / ${where} (byte ${at}) -> ${res.status} ${body.slice(0, 120)}`)
      }
    }
    assert.deepEqual(accepted, [], 'tampered items accepted')
  })
})

describe('45 ANS-104: aoconnect request() with signing-format ans104', () => {
  let node
  before(async () => {
    node = await startNode({ wallet: 'key-2' })
  })
  after(async () => {
    await node?.stop()
  })

  it('the item aoconnect POSTs (spec 07 §1.2) names key-1; one flipped byte is refused', async () => {
    const req = await aoconnectSigned(jwk1, node.url, { path: '/committers', method: 'POST', 'signing-format': 'ans104', 'x-custom': 'abc', data: 'hello' })
    assert.equal(req.headers['content-type'], 'application/ans104')
    assert.equal(req.headers['codec-device'], 'ans104@1.0')
    const raw = Buffer.from(req.body)
    assert.equal(await DataItem.verify(raw), true)
    const { list, res } = await committersOf(await sendRequest(req))
    assert.equal(res.status, 200, `${res.status} ${res.body}`)
    assert.deepEqual(list, [ADDR1])
    const l = itemLayout(raw)
    for (const at of [l.signature + 100, l.tags + 3, l.length - 1]) {
      const bad = await sendRequest(req, { body: flipByte(raw, at) })
      const text = await bad.text()
      assert.ok(bad.status >= 400 && bad.status < 500, `byte ${at}: ${bad.status} ${text.slice(0, 200)}`)
    }
  })
})

describe('45 ANS-104: the CLI', () => {
  let dir
  let ours = []
  before(async () => {
    dir = tmpDir('hb-harness-ans104-')
  })

  /** `hb message commit --device ans104@1.0 --to ans104@1.0` on a JSON message. */
  function commitWithCli(name, message) {
    const json = path.join(dir, `${name}.json`)
    fs.writeFileSync(json, JSON.stringify(message))
    const r = runHb(['message', 'commit', '--wallet', walletPath('key-1'), '--device', 'ans104@1.0', '--to', 'ans104@1.0', json])
    assert.equal(r.status, 0, `hb message commit exited ${r.status}: ${r.stderr}`)
    return r.stdout
  }

  function verifyWithCli(name, raw) {
    const file = path.join(dir, `${name}.item`)
    fs.writeFileSync(file, raw)
    const r = runHb(['message', 'verify', '--from', 'ans104@1.0', file])
    return { status: r.status, out: r.stdout.toString('utf8').trim(), stderr: r.stderr }
  }

  it('our {a:"1", data:"hello"} item verifies in arbundles and has the spec unsigned_id', async () => {
    const raw = commitWithCli('plain', { a: '1', data: 'hello' })
    assert.equal(await DataItem.verify(raw), true, 'arbundles DataItem.verify')
    const item = new DataItem(raw)
    assert.equal(item.signatureType, 1)
    assert.equal(item.owner, jwk1.n, 'owner = key-1 modulus')
    assert.deepEqual(item.tags, [{ name: 'a', value: '1' }])
    assert.equal(Buffer.from(item.rawData).toString(), 'hello')
    assert.equal(item.id, b64u(sha256(raw.subarray(2, 514))))
    // unsigned_id = sha256(signature data with a zero owner) (03 §7.4).
    const zeroOwner = Buffer.from(raw)
    zeroOwner.fill(0, 514, 1026)
    const sd = Buffer.from(await new DataItem(zeroOwner).getSignatureData())
    assert.equal(b64u(sha256(sd)), 'spRp-9HUjmYm8-AKptDcRUKR9KKqhn3-9bSIAoMqnRI')
    ours.push(['cli plain', raw])
  })

  it('our ao-style item (target, several tags) verifies in arbundles', async () => {
    const raw = commitWithCli('ao', { action: 'Eval', type: 'Message', data: 'X = X + 1', target: b64u(TARGET) })
    assert.equal(await DataItem.verify(raw), true, 'arbundles DataItem.verify')
    const item = new DataItem(raw)
    assert.equal(item.target, b64u(TARGET))
    const tags = Object.fromEntries(item.tags.map((t) => [t.name.toLowerCase(), t.value]))
    assert.equal(tags.action, 'Eval')
    assert.equal(tags.type, 'Message')
    assert.equal(Buffer.from(item.rawData).toString(), 'X = X + 1')
    ours.push(['cli ao', raw])
  })

  it('hb message verify --from ans104@1.0 accepts ours and the JS-signed items', async () => {
    const all = [...ours, ...(await cases())]
    assert.ok(all.length >= 3)
    for (const [name, raw] of all) {
      const r = verifyWithCli(name.replace(/\W+/g, '_'), raw)
      assert.deepEqual([r.status, r.out], [0, 'true'], `${name}: ${r.stderr}`)
    }
  })

  it('hb message verify --from ans104@1.0 rejects tampered items (false, exit 1)', async () => {
    const all = [...ours, ...(await cases())]
    const accepted = []
    for (const [name, raw] of all) {
      for (const [where, at] of tamperPositions(raw)) {
        const r = verifyWithCli('tampered', flipByte(raw, at))
        if (r.status !== 1 || r.out !== 'false') accepted.push(`${name} / ${where}: exit ${r.status}, "${r.out}" ${r.stderr.split('\n')[0].slice(0, 120)}`)
      }
    }
    assert.deepEqual(accepted, [])
  })

  it('our items with one byte flipped fail in arbundles too', async () => {
    assert.ok(ours.length > 0, 'no CLI item (see the tests above)')
    const accepted = []
    for (const [name, raw] of ours) {
      for (const [where, at] of tamperPositions(raw)) {
        let ok
        try {
          ok = await DataItem.verify(flipByte(raw, at))
        } catch {
          ok = false
        }
        if (ok) accepted.push(`${name} / ${where}`)
      }
    }
    assert.deepEqual(accepted, [])
  })

  it('the node answers `accept-codec: ans104@1.0` with an item it signed, valid in arbundles', async () => {
    const node = await startNode({ wallet: 'key-2' })
    try {
      const res = await fetchT(`${node.url}/~message@1.0&greeting=Hello/greeting`, {
        headers: { 'accept-codec': 'ans104@1.0' },
      })
      assert.equal(res.status, 200)
      assert.equal(res.headers.get('content-type'), 'application/ans104')
      const raw = Buffer.from(await res.arrayBuffer())
      assert.equal(await DataItem.verify(raw), true, 'arbundles DataItem.verify')
      const item = new DataItem(raw)
      assert.equal(item.owner, loadJwk('key-2').n, 'signed by the node wallet')
      assert.equal(b64u(sha256(Buffer.from(item.rawOwner))), node.address)
    } finally {
      await node.stop()
    }
  })

  it('our CLI item, POSTed to the node, answers key-1 as committer', async () => {
    assert.ok(ours.length > 0, 'no CLI item (see the tests above)')
    const node = await startNode({ wallet: 'key-2' })
    try {
      for (const [name, raw] of ours) {
        const { list, res } = await committersOf(await postItem(node.url, raw))
        assert.equal(res.status, 200, `${name}: ${res.status} ${res.body}`)
        assert.deepEqual(list, [ADDR1], name)
      }
    } finally {
      await node.stop()
    }
  })
})
