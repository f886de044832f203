// Arweave through arlocal 1.1.66 (spec 07 §5, §8 row `50-arweave`; spec 05 §6.5):
//  * data items signed by arbundles (key-1) are uploaded to arlocal inside an ANS-104
//    bundle in an L1 transaction (arweave-js), mined, and found by tag through arlocal's
//    GraphQL; arlocal serves their data at `/<id>` (it has no `/raw/<id>`);
//  * our node, started with `--set gateway=<arlocal>`, loads an item by ID through its
//    gateway store (GraphQL with the reference's item_spec, data from `/raw/<id>` or the
//    `/<id>` fallback, signature verified) and serves its keys at `/<id>/<key>`;
//  * an unknown ID, a tampered ID and an item whose anchor arlocal does not keep (so its
//    signature cannot be checked) get 404 quickly, never a hang — the last only with
//    `ans104_trust_gql=false`; by default it is served, marked `trusted-keys`.
//  * uploads made by the node itself (issue 4): an item signed by arbundles is POSTed
//    to our node's `upload@1.0` (`POST /~upload@1.0/item`, started with `--gateway
//    <arlocal>`), which posts it to arlocal in an ANS-104 bundle in an L1 transaction
//    signed with the node's wallet; after `GET /mine` arlocal's GraphQL finds it by its
//    tag, and a second node with an empty store serves it through its gateway store;
//    an item over 10 MiB goes up the same way with the bundle's data in chunks
//    (`POST /chunk`, merkle proofs) after the transaction header, and is served whole.
//
// With HB_ARLOCAL_CARGO=1 the Rust checks crates/hb-store/tests/gateway_arlocal.rs
// (GatewaySource alone and behind an in-process node) and upload_arlocal.rs (a chunked
// upload of more than 10 MiB read back through GatewaySource) also run against this
// arlocal.

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'

import { startNode, loadJwk, fetchT, REPO_DIR } from '../lib/node.mjs'
import { startArlocal, graphql, uploadBundle, mint, mine } from '../lib/arlocal.mjs'
import { arbundles, arbundlesSignedItem, createData, ArweaveSigner, Arweave } from '../lib/ans104.mjs'

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))


const APP = 'hb-harness-50'
const GREETING = 'hello from arlocal'
const DATA = 'gateway item one'

describe('arweave: arlocal and the gateway store', () => {
  let ar
  let node
  let item // signed, no anchor: verifiable from arlocal's GraphQL answer
  let anchored // signed with an anchor that arlocal's GraphQL does not return
  let txId

  before(async () => {
    ar = await startArlocal()
    const jwk = loadJwk('key-1')
    const signer = new ArweaveSigner(jwk)
    item = createData(DATA, signer, {
      tags: [
        { name: 'App-Name', value: APP },
        { name: 'Content-Type', value: 'text/plain' },
        { name: 'Greeting', value: GREETING },
      ],
      target: 'A'.repeat(43),
    })
    anchored = createData('anchored item', signer, {
      tags: [{ name: 'App-Name', value: APP }],
      anchor: 'harness-anchor-0123456789abcdef!',
    })
    const arweave = Arweave.init({ host: '127.0.0.1', port: ar.port, protocol: 'http' })
    ;({ txId } = await uploadBundle({ url: ar.url, arweave, arbundles, jwk, items: [item, anchored] }))
    node = await startNode({ extraArgs: ['--set', `gateway=${ar.url}`] })
  })

  after(async () => {
    await node?.stop()
    await ar?.stop()
  })

  it('arlocal GraphQL finds the bundled items by tag, with the reference item_spec fields', async () => {
    const byTag = await graphql(
      ar.url,
      `query($app: [String!]!) { transactions(tags: [{ name: "App-Name", values: $app }]) { edges { node { id } } } }`,
      { app: [APP] },
    )
    const ids = byTag.transactions.edges.map((e) => e.node.id).sort()
    assert.deepEqual(ids, [item.id, anchored.id].sort())
    // The query shape of hb_gateway_client:read/2.
    const spec = `node { id anchor signature recipient owner { key } fee { winston } quantity { winston } tags { name value } data { size } }`
    const one = await graphql(
      ar.url,
      `query($transactionIds: [ID!]!) { transactions(ids: $transactionIds, first: 1){ edges { ${spec} } } }`,
      { transactionIds: [item.id] },
    )
    const n = one.transactions.edges[0].node
    assert.equal(n.id, item.id)
    assert.equal(Buffer.from(n.signature, 'base64url').length, 512)
    assert.equal(n.owner.key, loadJwk('key-1').n)
    assert.equal(n.recipient, 'A'.repeat(43))
    assert.equal(n.data.size, String(Buffer.byteLength(DATA)))
    assert.deepEqual(
      n.tags.find((t) => t.name === 'Greeting'),
      { name: 'Greeting', value: GREETING },
    )
    // What arlocal loses: the anchor of bundled items.
    const a = await graphql(
      ar.url,
      `query($ids: [ID!]!) { transactions(ids: $ids) { edges { node { anchor } } } }`,
      { ids: [anchored.id] },
    )
    assert.equal(a.transactions.edges[0].node.anchor, '')
    assert.ok(txId)
  })

  it('arlocal serves item data at /<id> but has no /raw/<id>', async () => {
    const plain = await fetchT(`${ar.url}/${item.id}`)
    assert.equal(plain.status, 200)
    assert.equal(await plain.text(), DATA)
    const raw = await fetchT(`${ar.url}/raw/${item.id}`)
    await raw.text()
    assert.equal(raw.status, 404)
  })

  it('the node loads the item by ID through its gateway store', async () => {
    const tag = await fetchT(`${node.url}/${item.id}/greeting`)
    assert.equal(tag.status, 200, await tag.clone().text())
    assert.equal(await tag.text(), GREETING)
    const data = await fetchT(`${node.url}/${item.id}/data`)
    assert.equal(data.status, 200)
    assert.equal(await data.text(), DATA)
    // Now in the node's own store: served again without arlocal's help.
    const again = await fetchT(`${node.url}/${item.id}/app-name`)
    assert.equal(again.status, 200)
    assert.equal(await again.text(), APP)
  })

  it('unknown and tampered IDs get 404 quickly', async () => {
    const flip = (id) => (id[5] === 'A' ? 'B' : 'A')
    const tampered = item.id.slice(0, 5) + flip(item.id) + item.id.slice(6)
    for (const id of ['A'.repeat(43), tampered]) {
      const t = Date.now()
      const res = await fetchT(`${node.url}/${id}`, {}, 20000)
      await res.text()
      assert.equal(res.status, 404, id)
      assert.ok(Date.now() - t < 15000, `${id}: ${Date.now() - t} ms`)
    }
  })

  it('an item that cannot verify is served on GraphQL trust (ans104_trust_gql, default), refused without it', async () => {
    // arlocal drops the anchor, so the rebuilt item's signature cannot be checked: with
    // the default `ans104_trust_gql: true` the node serves it, its tag names marked as
    // `trusted-keys` on its commitment (the reference's behaviour).
    const tag = await fetchT(`${node.url}/${anchored.id}/app-name`, {}, 20000)
    assert.equal(tag.status, 200, await tag.clone().text())
    assert.equal(await tag.text(), APP)
    const strict = await startNode({
      extraArgs: ['--set', `gateway=${ar.url}`, '--set', 'ans104_trust_gql=false'],
    })
    try {
      const t = Date.now()
      const res = await fetchT(`${strict.url}/${anchored.id}`, {}, 20000)
      await res.text()
      assert.equal(res.status, 404)
      assert.ok(Date.now() - t < 15000, `${Date.now() - t} ms`)
    } finally {
      await strict.stop()
    }
  })

  it('an item POSTed to our upload@1.0 reaches arlocal and is found by its tag', async () => {
    const tag = `up-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`
    const UPLOAD_DATA = 'uploaded through our node'
    const signed = await arbundlesSignedItem(loadJwk('key-1'), UPLOAD_DATA, {
      tags: [
        { name: 'App-Name', value: APP },
        { name: 'Upload-Tag', value: tag },
        { name: 'Content-Type', value: 'text/plain' },
      ],
    })
    // The uploading node signs the L1 transaction with its wallet (key-2): fund it.
    const arweave = Arweave.init({ host: '127.0.0.1', port: ar.port, protocol: 'http' })
    await mint(ar.url, await arweave.wallets.jwkToAddress(loadJwk('key-2')))
    const uploader = await startNode({ extraArgs: ['--gateway', ar.url] })
    let reader
    try {
      const res = await fetchT(
        `${uploader.url}/~upload@1.0/item`,
        { method: 'POST', headers: { 'content-type': 'application/ans104' }, body: signed.raw },
        60000,
      )
      const text = await res.text()
      assert.equal(res.status, 200, text)
      assert.equal(res.headers.get('id'), signed.id, text)
      const tx = res.headers.get('tx')
      assert.match(tx ?? '', /^[A-Za-z0-9_-]{43}$/, text)
      await mine(ar.url)
      // arweave-js verifies the node's L1 transaction (deep hash, data_root, RSA-PSS, ID).
      const l1json = await (await fetchT(`${ar.url}/tx/${tx}`)).json()
      const l1tx = arweave.transactions.fromRaw(l1json)
      assert.equal(l1tx.id, tx)
      assert.equal(l1tx.owner, loadJwk('key-2').n)
      assert.ok(await arweave.transactions.verify(l1tx), JSON.stringify({ ...l1json, data: undefined }).slice(0, 1500))

      // arlocal indexed the L1 transaction and, from its bundle, the item by its tag.
      const l1 = await graphql(ar.url, `query($ids: [ID!]!) { transactions(ids: $ids) { edges { node { id tags { name value } } } } }`, { ids: [tx] })
      assert.deepEqual(
        l1.transactions.edges[0]?.node.tags.filter((t) => t.name.startsWith('Bundle-')),
        [{ name: 'Bundle-Format', value: 'binary' }, { name: 'Bundle-Version', value: '2.0.0' }],
      )
      let found = []
      for (let i = 0; i < 20 && found.length === 0; i++) {
        if (i > 0) await sleep(250)
        const byTag = await graphql(
          ar.url,
          `query($v: [String!]!) { transactions(tags: [{ name: "Upload-Tag", values: $v }]) { edges { node { id } } } }`,
          { v: [tag] },
        )
        found = byTag.transactions.edges.map((e) => e.node)
      }
      assert.deepEqual(found.map((n) => n.id), [signed.id])
      // (arlocal 1.1.66 answers `bundledIn: null` for bundled items, so the link to
      // `tx` is not checked here.)
      const data = await fetchT(`${ar.url}/${signed.id}`)
      assert.equal(await data.text(), UPLOAD_DATA)

      // A node with an empty store, same gateway, loads it through its gateway store.
      reader = await startNode({ extraArgs: ['--gateway', ar.url] })
      let got
      for (let i = 0; i < 10; i++) {
        got = await fetchT(`${reader.url}/${signed.id}/upload-tag`, {}, 20000)
        if (got.status === 200) break
        await got.text()
        await sleep(500)
      }
      assert.equal(got.status, 200)
      assert.equal(await got.text(), tag)
    } finally {
      await reader?.stop()
      await uploader.stop()
    }
  })

  it('an item over 10 MiB POSTed to our upload@1.0 goes up in chunks and is served back', async () => {
    const tag = `big-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`
    // ~10.5 MiB, not a multiple of the 256 KiB chunk size, incompressible.
    const BIG = Buffer.alloc(10 * 1024 * 1024 + 500_000 + 4321)
    let x = 0x12345678
    for (let i = 0; i < BIG.length; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0
      BIG[i] = x >>> 24
    }
    const signed = await arbundlesSignedItem(loadJwk('key-1'), BIG, {
      tags: [
        { name: 'App-Name', value: APP },
        { name: 'Upload-Tag', value: tag },
      ],
    })
    const arweave = Arweave.init({ host: '127.0.0.1', port: ar.port, protocol: 'http' })
    await mint(ar.url, await arweave.wallets.jwkToAddress(loadJwk('key-2')))
    const uploader = await startNode({ extraArgs: ['--gateway', ar.url] })
    let reader
    try {
      const res = await fetchT(
        `${uploader.url}/~upload@1.0/item`,
        { method: 'POST', headers: { 'content-type': 'application/ans104' }, body: signed.raw },
        120000,
      )
      const text = await res.text()
      assert.equal(res.status, 200, text.slice(0, 2000))
      assert.equal(res.headers.get('id'), signed.id, text.slice(0, 2000))
      const tx = res.headers.get('tx')
      // The L1 transaction went up without inline data: its header says how much.
      const l1json = await (await fetchT(`${ar.url}/tx/${tx}`)).json()
      assert.equal(Number(l1json.data_size), signed.raw.length + 96)
      // arlocal unpacks the bundle once all its chunks are there; a block shows it.
      let found = []
      for (let i = 0; i < 60 && found.length === 0; i++) {
        if (i > 0) await sleep(500)
        await mine(ar.url)
        const byTag = await graphql(
          ar.url,
          `query($v: [String!]!) { transactions(tags: [{ name: "Upload-Tag", values: $v }]) { edges { node { id } } } }`,
          { v: [tag] },
        )
        found = byTag.transactions.edges.map((e) => e.node)
      }
      assert.deepEqual(found.map((n) => n.id), [signed.id])
      // A node with an empty store, same gateway, serves it whole.
      reader = await startNode({ extraArgs: ['--gateway', ar.url] })
      const got = await fetchT(`${reader.url}/${signed.id}/data`, {}, 60000)
      assert.equal(got.status, 200)
      const body = Buffer.from(await got.arrayBuffer())
      assert.equal(body.length, BIG.length)
      assert.ok(body.equals(BIG), 'the data read back through the gateway differs')
    } finally {
      await reader?.stop()
      await uploader.stop()
    }
  })

  it('the Rust gateway check passes against this arlocal (HB_ARLOCAL_CARGO=1)', async (t) => {
    if (process.env.HB_ARLOCAL_CARGO !== '1') {
      t.skip('set HB_ARLOCAL_CARGO=1 to run cargo test -p hb-store --test gateway_arlocal --test upload_arlocal here')
      return
    }
    const args = ['test', '-p', 'hb-store', '--test', 'gateway_arlocal', '--test', 'upload_arlocal', '--', '--nocapture']
    const r = spawnSync('cargo', args, {
      cwd: REPO_DIR,
      timeout: 600000,
      encoding: 'utf8',
      env: {
        ...process.env,
        HB_ARLOCAL: ar.url,
        HB_ARLOCAL_ID: item.id,
        HB_ARLOCAL_DATA: DATA,
        HB_ARLOCAL_TAG: `Greeting=${GREETING}`,
      },
    })
    const out = `${r.stdout}\n${r.stderr}`
    assert.equal(r.status, 0, out.slice(-3000))
    assert.ok(!out.includes('SKIPPED'), out.slice(-3000))
  })
})
