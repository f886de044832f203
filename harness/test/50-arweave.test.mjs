// Arweave through arlocal 1.1.66 (spec 07 §5, §8 row `50-arweave`; spec 05 §6.5):
//  * data items signed by arbundles (key-1) are uploaded to arlocal inside an ANS-104
//    bundle in an L1 transaction (arweave-js), mined, and found by tag through arlocal's
//    GraphQL; arlocal serves their data at `/<id>` (it has no `/raw/<id>`);
//  * our node, started with `--set gateway=<arlocal>`, loads an item by ID through its
//    gateway store (GraphQL with the reference's item_spec, data from `/raw/<id>` or the
//    `/<id>` fallback, signature verified) and serves its keys at `/<id>/<key>`;
//  * an unknown ID, a tampered ID and an item whose anchor arlocal does not keep (so its
//    signature cannot be checked) get 404 quickly, never a hang.
// Not covered yet: uploads made by the node itself (the node has no upload path).
//
// With HB_ARLOCAL_CARGO=1 the Rust check crates/hb-store/tests/gateway_arlocal.rs also
// runs against this arlocal (GatewaySource alone and behind an in-process node).

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'

import { startNode, loadJwk, fetchT, REPO_DIR } from '../lib/node.mjs'
import { startArlocal, graphql, uploadBundle } from '../lib/arlocal.mjs'
import { arbundles, createData, ArweaveSigner, Arweave } from '../lib/ans104.mjs'


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

  it('unknown, tampered and unverifiable IDs get 404 quickly', async () => {
    const flip = (id) => (id[5] === 'A' ? 'B' : 'A')
    const tampered = item.id.slice(0, 5) + flip(item.id) + item.id.slice(6)
    for (const id of ['A'.repeat(43), tampered, anchored.id]) {
      const t = Date.now()
      const res = await fetchT(`${node.url}/${id}`, {}, 20000)
      await res.text()
      assert.equal(res.status, 404, id)
      assert.ok(Date.now() - t < 15000, `${id}: ${Date.now() - t} ms`)
    }
  })

  it('the Rust gateway check passes against this arlocal (HB_ARLOCAL_CARGO=1)', async (t) => {
    if (process.env.HB_ARLOCAL_CARGO !== '1') {
      t.skip('set HB_ARLOCAL_CARGO=1 to run cargo test -p hb-store --test gateway_arlocal here')
      return
    }
    const r = spawnSync('cargo', ['test', '-p', 'hb-store', '--test', 'gateway_arlocal', '--', '--nocapture'], {
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
