// The wire contract of the pinned clients (spec 07 §1.2 aoconnect 0.0.98 mainnet, §3 WAO
// 0.35.7 `HB`), checked against a stub node (lib/stub-node.mjs, after spec 07 A.1) that
// records each request as it arrives: methods, paths (raw, as sent), headers,
// signature-input components, content types, ANS-104 item targets, tags (in order) and
// data, and the committed multipart bodies WAO sends. Nothing here needs our node: a
// client upgrade that changes what goes over the wire fails in this file, before
// anyone debugs the node.

import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'

import { connect, createSigner } from '@permaweb/aoconnect'
import { HB } from 'wao'
import { rsaid } from 'hbsig'

import { loadJwk, shorten } from '../lib/node.mjs'
import { startStub } from '../lib/stub-node.mjs'
import { parseMultipart, boundaryOf } from '../lib/multipart.mjs'
import { DataItem } from '../lib/ans104.mjs'
import { verifyHttpsig, checkContentDigest, addressOfJwk, labelForModulus, b64u, sha256 } from '../lib/verify-httpsig.mjs'
import { parseDictionary } from '../lib/sf.mjs'

const CLIENT = loadJwk('key-1')
const CLIENT_N = Buffer.from(CLIENT.n, 'base64url')
const CLIENT_ADDR = addressOfJwk(CLIENT)
const CLIENT_LABEL = labelForModulus(CLIENT_N)
const MODULE = b64u(sha256(Buffer.from('harness-99 module'))) // any 43-char ID

// The protocol tags aoconnect appends to every item (spec 07 §1.2).
const PROTO = (type = 'Message') => [
  { name: 'Data-Protocol', value: 'ao' },
  { name: 'Type', value: type },
  { name: 'Variant', value: 'ao.N.1' },
]
const JSON_READ = [
  { name: 'signing-format', value: 'ans104' },
  { name: 'accept-bundle', value: 'true' },
  { name: 'require-codec', value: 'application/json' },
  ...PROTO(),
]

/** The client-set headers of a captured request: fetch's own (host, accept, …) left out. */
const TRANSPORT = new Set(['host', 'connection', 'accept', 'accept-language', 'sec-fetch-mode', 'user-agent', 'accept-encoding', 'content-length'])
const clientHeaders = (req) => Object.keys(req.headers).filter((k) => !TRANSPORT.has(k)).sort()

const show = (req) => shorten({ method: req.method, url: req.url, headers: req.headers, body: req.body.length > 600 ? `${req.body.length} bytes` : req.body.toString('latin1') })

/** Asserts an ANS-104 POST as aoconnect sends it and returns the parsed, verified item. */
async function assertAns104(req, path, what) {
  assert.equal(req.method, 'POST', `${what}: method\n${show(req)}`)
  assert.equal(req.url, path, `${what}: path`)
  assert.deepEqual(clientHeaders(req), ['codec-device', 'content-type'], `${what}: the only client headers\n${show(req)}`)
  assert.equal(req.headers['content-type'], 'application/ans104', `${what}: content-type`)
  assert.equal(req.headers['codec-device'], 'ans104@1.0', `${what}: codec-device`)
  const item = new DataItem(req.body)
  assert.equal(item.signatureType, 1, `${what}: signature type 1 (Arweave RSA)`)
  assert.equal(await DataItem.verify(req.body), true, `${what}: arbundles verifies the item`)
  assert.ok(Buffer.from(item.rawOwner).equals(CLIENT_N), `${what}: owner = the signer's modulus`)
  assert.equal(item.anchor, '', `${what}: no anchor`)
  // RSA-PSS-SHA256 with the maximum salt (spec 07 §0 fact 1): 512 - 32 - 2 = 478 bytes.
  const key = crypto.createPublicKey({ key: { kty: 'RSA', n: CLIENT.n, e: 'AQAB' }, format: 'jwk' })
  const data = Buffer.from(await item.getSignatureData())
  const pss = (saltLength) => crypto.verify('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, item.rawSignature)
  assert.equal(pss(478), true, `${what}: PSS salt = 478 (maximum)`)
  assert.equal(pss(32), false, `${what}: PSS salt is not 32`)
  return item
}

/** The requests a client call makes, with its result. */
async function during(stub, fn) {
  const start = stub.requests.length
  const out = await fn()
  return { out, reqs: stub.requests.slice(start) }
}

/** Parses the signature fields of a captured httpsig request. */
function sigParams(headers) {
  const inputs = parseDictionary(headers['signature-input'])
  assert.equal(inputs.size, 1, 'one signature')
  const [[label, member]] = [...inputs]
  return { label, components: member.items.map((i) => i.value), alg: member.params.get('alg')?.value, keyid: member.params.get('keyid')?.value }
}

/** Asserts an hbsig/WAO committed multipart body and returns {inline, rsa, hmac}. */
function assertCommittedBody(req, what) {
  const { parts, closed } = parseMultipart(req.body, req.headers['content-type'])
  assert.ok(closed, `${what}: the multipart body is closed`)
  assert.equal(parts.length, 3, `${what}: an inline part and two commitment parts`)
  const [inline, ...commitments] = parts
  assert.equal(inline.disposition, 'inline', `${what}: first part is the inline part`)
  for (const c of commitments) {
    assert.match(c.disposition, /^form-data;name="body\/commitments\/[a-z0-9_-]{43}"$/, `${what}: part disposition (no space after ';', lower-cased id)`)
  }
  // body-keys names the parts, commitment IDs lower-cased (spec 07 §2 quirk).
  const bodyKeys = parseListOfStrings(req.headers['body-keys'])
  assert.deepEqual(bodyKeys, ['body', ...commitments.map((c) => c.name)], `${what}: body-keys`)
  const rsa = commitments.find((c) => c.headers.alg === 'rsa-pss-sha512')
  const hmac = commitments.find((c) => c.headers.alg === 'hmac-sha256')
  assert.ok(rsa && hmac, `${what}: an rsa-pss-sha512 and an hmac-sha256 commitment`)
  assert.deepEqual(rsa.order, ['content-disposition', 'alg', 'commitment-device', 'committer', 'signature', 'signature-input'])
  assert.deepEqual(hmac.order, ['content-disposition', 'alg', 'commitment-device', 'signature', 'signature-input'])
  assert.equal(rsa.headers['commitment-device'], 'httpsig@1.0')
  assert.equal(rsa.headers.committer, CLIENT_ADDR)
  assert.equal(rsa.name, `body/commitments/${rsaid({ signature: rsa.headers.signature }).toLowerCase()}`, `${what}: rsa part named by rsaid, lower-cased`)
  // hbsig puts the RSA signature in the hmac commitment too.
  assert.equal(hmac.headers.signature, rsa.headers.signature)
  assert.equal(hmac.headers['signature-input'], rsa.headers['signature-input'])
  const fields = { ...inline.headers }
  delete fields['content-disposition']
  return { inline, fields, rsa, hmac }
}

/** `"a", "b"` (an SF list of strings) → ['a', 'b']. */
function parseListOfStrings(text) {
  return [...String(text ?? '').matchAll(/"([^"]*)"/g)].map((m) => m[1])
}

/** Asserts WAO's outer httpsig on a POST: the components, alg, keyid, label; verifies. */
function assertOuterSig(req, stub, components, what) {
  const p = sigParams(req.headers)
  assert.deepEqual(p.components, components, `${what}: signature-input components`)
  assert.equal(p.alg, 'rsa-pss-sha512')
  assert.equal(p.keyid, CLIENT.n, `${what}: keyid = base64url modulus, no prefix`)
  assert.equal(p.label, CLIENT_LABEL)
  assert.equal(req.headers.path, req.url, `${what}: hbsig sends the path as a header too`)
  const v = verifyHttpsig({ headers: req.headers, method: req.method, url: stub.url + req.url })
  assert.ok(v.ok, `${what}: the outer signature verifies: ${shorten(v.signatures.map(({ signatureBytes, ...s }) => s))}`)
  assert.match(v.signatures[0].base, /^"path": /, `${what}: @path is written "path" in the base`)
  const d = checkContentDigest(req.headers, req.body)
  assert.ok(d.ok, `${what}: content-digest matches the body (${d.error})`)
  assert.match(req.headers['content-digest'], /^sha-256=:[A-Za-z0-9+/]+=*:$/, `${what}: content-digest in standard base64`)
  assert.match(req.headers['content-type'], /^multipart\/form-data; boundary="[A-Za-z0-9_-]{43}"$/, `${what}: content-type`)
  assert.equal(boundaryOf(req.headers['content-type']).length, 43)
}

describe('99 client contract: aoconnect 0.0.98 (mainnet) against a recording stub', () => {
  let stub
  let ao
  let pid
  before(async () => {
    stub = await startStub({ jwk: loadJwk('key-2') })
    ao = connect({ MODE: 'mainnet', URL: stub.url, signer: createSigner(CLIENT) })
  })
  after(async () => {
    await stub?.close()
  })

  it('spawn: GET /~meta@1.0/info/address (unsigned), then POST /push with the process item', async () => {
    const { out, reqs } = await during(stub, () => ao.spawn({ module: MODULE, tags: [{ name: 'Name', value: 'harness-99' }] }))
    assert.equal(reqs.length, 2, reqs.map(show).join('\n'))
    const [addr, push] = reqs
    assert.equal(addr.method, 'GET')
    assert.equal(addr.url, '/~meta@1.0/info/address')
    assert.deepEqual(clientHeaders(addr), [], 'the address request carries no client headers (no signature)')
    assert.equal(addr.body.length, 0)
    const item = await assertAns104(push, '/push', 'spawn')
    assert.equal(item.target, '', 'spawn: no target')
    assert.deepEqual(item.tags, [
      { name: 'device', value: 'process@1.0' },
      { name: 'scheduler-device', value: 'scheduler@1.0' },
      { name: 'push-device', value: 'push@1.0' },
      { name: 'execution-device', value: 'genesis-wasm@1.0' },
      { name: 'Authority', value: stub.address },
      { name: 'Scheduler', value: stub.address },
      { name: 'Module', value: MODULE },
      { name: 'Name', value: 'harness-99' },
      { name: 'signing-format', value: 'ans104' },
      { name: 'accept-bundle', value: 'true' },
      { name: 'accept-codec', value: 'httpsig@1.0' },
      ...PROTO('Process'),
    ])
    assert.equal(item.rawData.toString(), '1984', 'spawn: the default data')
    // The pid is read from the `process` reply header; the stub sets it to the item ID.
    assert.equal(out, item.id)
    pid = out
  })

  it('spawn without a `process` reply header fails ("Error spawning process")', async () => {
    // The only thing aoconnect reads from a spawn reply is that header (spec 07 §1.2):
    // a JSON body naming the process is not enough.
    stub.options.omitProcessHeader = true
    try {
      const out = await ao.spawn({ module: MODULE, data: 'x' }).then((r) => r, (e) => e)
      assert.ok(out instanceof Error, `spawn returned ${shorten(out)}`)
      assert.match(out.message, /Error spawning process/)
      assert.equal(stub.requests.at(-1).url, '/push')
    } finally {
      stub.options.omitProcessHeader = false
    }
  })

  it('message: POST /<pid>~process@1.0/push with the message item; slot from the JSON body', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const { out, reqs } = await during(stub, () => ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'X = 1' }))
    assert.equal(reqs.length, 1)
    const item = await assertAns104(reqs[0], `/${pid}~process@1.0/push`, 'message')
    assert.equal(item.target, pid)
    assert.deepEqual(item.tags, [{ name: 'Action', value: 'Eval' }, ...JSON_READ])
    assert.equal(item.rawData.toString(), 'X = 1')
    assert.equal(out, 1, 'the slot is `slot` of the JSON reply, as it is')
    const both = await ao.message({ process: pid, tags: [{ name: 'Action', value: 'Eval' }], data: 'X = 2', returnMessageId: true, returnAssignmentSlot: true })
    assert.deepEqual(both, { slot: 2, id: new DataItem(stub.requests.at(-1).body).id }, 'returnMessageId: `id` of the JSON reply')
  })

  it('result: POST /<pid>~process@1.0/compute/results=<slot>, data 1984; `raw` of the JSON reply', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const { out, reqs } = await during(stub, () => ao.result({ process: pid, slot: 1 }))
    assert.equal(reqs.length, 1)
    const item = await assertAns104(reqs[0], `/${pid}~process@1.0/compute/results=1`, 'result')
    assert.equal(item.target, pid)
    assert.deepEqual(item.tags, JSON_READ)
    assert.equal(item.rawData.toString(), '1984')
    assert.equal(out.Output.data, `echo:/${pid}~process@1.0/compute/results=1`)
  })

  it('results: POST /<pid>/slot/current (accept-codec httpsig), then POST /<pid>/compute/results=<that text>', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const { out, reqs } = await during(stub, () => ao.results({ process: pid, limit: 5, sort: 'ASC' }))
    assert.equal(reqs.length, 2, reqs.map(show).join('\n'))
    const cur = await assertAns104(reqs[0], `/${pid}/slot/current`, 'results (1)')
    assert.equal(cur.target, '', 'results (1): no target')
    assert.deepEqual(cur.tags, [
      { name: 'signing-format', value: 'ans104' },
      { name: 'accept-bundle', value: 'true' },
      { name: 'accept-codec', value: 'httpsig@1.0' },
      ...PROTO(),
    ])
    assert.equal(cur.rawData.length, 0, 'results (1): empty data')
    const res = await assertAns104(reqs[1], `/${pid}/compute/results=2`, 'results (2)')
    assert.equal(res.target, '')
    assert.deepEqual(res.tags, JSON_READ)
    assert.equal(res.rawData.length, 0)
    // One edge, cursor = the text of slot/current; limit and sort are ignored.
    assert.equal(out.edges.length, 1)
    assert.equal(out.edges[0].cursor, '2')
    assert.equal(out.edges[0].node.Output.data, `echo:/${pid}/compute/results=2`)
  })

  it('dryrun: POST /<pid>~process@1.0/as=execution/compute&K=V… (tags in the path only)', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const tags = [{ name: 'Action', value: 'Eval' }, { name: 'X-Two', value: 'v2' }]
    const { out, reqs } = await during(stub, () => ao.dryrun({ process: pid, tags, data: 'return X' }))
    assert.equal(reqs.length, 1)
    const item = await assertAns104(reqs[0], `/${pid}~process@1.0/as=execution/compute&Action=Eval&X-Two=v2`, 'dryrun')
    assert.equal(item.target, pid)
    assert.deepEqual(item.tags, JSON_READ, 'dryrun: the user tags are not in the item')
    assert.equal(item.rawData.toString(), 'return X')
    assert.equal(out.Output.data, `echo:/${pid}~process@1.0/as=execution/compute&Action=Eval&X-Two=v2`)
    // Values are not URL-encoded by aoconnect; fetch percent-encodes what a URL cannot hold.
    const { reqs: r2 } = await during(stub, () => ao.dryrun({ process: pid, tags: [{ name: 'Action', value: 'a b' }] }))
    assert.equal(r2[0].url, `/${pid}~process@1.0/as=execution/compute&Action=a%20b`)
    assert.equal(new DataItem(r2[0].body).rawData.toString(), '1984', 'dryrun: the default data')
  })

  it('request() httpsig: the sorted header names are the components, no @path; keyid base64url; max salt', async () => {
    const { out, reqs } = await during(stub, () => ao.request({ path: '/~meta@1.0/info', 'x-custom': 'abc', count: 7 }))
    assert.equal(out.status, 200)
    assert.equal(reqs.length, 1)
    const [req] = reqs
    assert.equal(req.method, 'GET')
    assert.equal(req.url, '/~meta@1.0/info')
    assert.equal(req.body.length, 0)
    assert.deepEqual(clientHeaders(req), ['ao-types', 'count', 'signature', 'signature-input', 'signing-format', 'x-custom'])
    assert.equal(req.headers['ao-types'], 'count=integer', 'aoconnect ao-types form: unquoted')
    assert.equal(req.headers['signing-format'], 'httpsig')
    const p = sigParams(req.headers)
    assert.deepEqual(p.components, ['ao-types', 'count', 'signing-format', 'x-custom'])
    assert.equal(p.alg, 'rsa-pss-sha512')
    assert.equal(p.keyid, CLIENT.n, 'keyid: base64url modulus without `publickey:`')
    assert.equal(p.label, CLIENT_LABEL)
    const v = verifyHttpsig({ headers: req.headers, method: 'GET', url: stub.url + req.url })
    assert.ok(v.ok, shorten(v))
    assert.equal(
      v.signatures[0].base,
      `"ao-types": count=integer\n"count": 7\n"signing-format": httpsig\n"x-custom": abc\n"@signature-params": ("ao-types" "count" "signing-format" "x-custom");alg="rsa-pss-sha512";keyid="${CLIENT.n}"`,
    )
    const key = crypto.createPublicKey({ key: { kty: 'RSA', n: CLIENT.n, e: 'AQAB' }, format: 'jwk' })
    const pss = (saltLength) =>
      crypto.verify('sha512', Buffer.from(v.signatures[0].base), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, v.signatures[0].signatureBytes)
    assert.equal(pss(446), true, 'PSS-SHA512 salt = 446 (maximum)')
    assert.equal(pss(64), false)
  })

  it("request() with 'signing-format': 'ans104': POST <path>, the fields as tags in order", async () => {
    const { out, reqs } = await during(stub, () => ao.request({ path: '/~meta@1.0/info', 'signing-format': 'ans104', foo: 'bar', count: 3 }))
    assert.equal(out.status, 200)
    assert.equal(reqs.length, 1)
    const item = await assertAns104(reqs[0], '/~meta@1.0/info', 'request(ans104)')
    assert.equal(item.target, '')
    assert.deepEqual(item.tags, [
      { name: 'signing-format', value: 'ans104' },
      { name: 'foo', value: 'bar' },
      { name: 'count', value: '3' },
      ...PROTO(),
    ])
  })
})

describe('99 client contract: WAO 0.35.7 HB against a recording stub', () => {
  let stub
  let hb
  let pid
  before(async () => {
    stub = await startStub({ jwk: loadJwk('key-2') })
  })
  after(async () => {
    await stub?.close()
  })

  it('init: GET /~meta@1.0/info/address (unsigned); operator from the signed `ao-result: body` reply', async () => {
    const { out, reqs } = await during(stub, () => new HB({ url: stub.url }).init(CLIENT))
    hb = out
    assert.equal(reqs.length, 1)
    assert.equal(reqs[0].method, 'GET')
    assert.equal(reqs[0].url, '/~meta@1.0/info/address')
    assert.deepEqual(clientHeaders(reqs[0]), [])
    assert.equal(hb.operator, stub.address)
    assert.equal(hb.addr, CLIENT_ADDR)
  })

  it('spawn: POST /~process@1.0/schedule, committed process message (test-device), signed @path/content-digest/content-type/scheduler', async () => {
    assert.ok(hb, 'no client (init failed)')
    const { out, reqs } = await during(stub, () => hb.spawn({}))
    assert.equal(reqs.length, 1, reqs.map(show).join('\n'))
    const [req] = reqs
    assert.equal(req.method, 'POST')
    assert.equal(req.url, '/~process@1.0/schedule')
    assert.deepEqual(clientHeaders(req), ['body-keys', 'content-digest', 'content-type', 'path', 'scheduler', 'signature', 'signature-input'])
    assert.equal(req.headers.scheduler, stub.address)
    assertOuterSig(req, stub, ['@path', 'content-digest', 'content-type', 'scheduler'], 'spawn')
    const { inline, fields, rsa } = assertCommittedBody(req, 'spawn')
    assert.deepEqual(inline.order, ['content-disposition', 'device', 'execution-device', 'random-seed', 'scheduler', 'type'])
    assert.equal(fields.device, 'process@1.0')
    assert.equal(fields['execution-device'], 'test-device@1.0')
    assert.equal(fields.scheduler, stub.address)
    assert.equal(fields.type, 'Process')
    assert.equal(Buffer.from(fields['random-seed'], 'base64').length, 16)
    // The commitment signs every field of the inline part, sorted.
    const v = verifyHttpsig({ headers: { ...fields, signature: rsa.headers.signature, 'signature-input': rsa.headers['signature-input'] } })
    assert.ok(v.ok, `the process commitment verifies over the inline part: ${shorten(v.signatures.map(({ signatureBytes, ...s }) => s))}`)
    assert.deepEqual(v.signatures[0].components, Object.keys(fields).sort())
    // The pid is `process` of the signed reply.
    assert.equal(out.pid, b64u(sha256(req.body)))
    pid = out.pid
  })

  it('spawnLegacy: stack@1.0 with device-stack genesis-wasm@1.0, patch@1.0 (an SF list typed by ao-types)', async () => {
    assert.ok(hb, 'no client (init failed)')
    const { reqs } = await during(stub, () => hb.spawnLegacy({ module: MODULE }))
    assert.equal(reqs.length, 1)
    assertOuterSig(reqs[0], stub, ['@path', 'content-digest', 'content-type', 'scheduler'], 'spawnLegacy')
    const { fields, rsa } = assertCommittedBody(reqs[0], 'spawnLegacy')
    assert.deepEqual(
      { ...fields, 'random-seed': '…' },
      {
        'ao-types': 'device-stack="list"',
        authority: stub.address,
        'data-protocol': 'ao',
        device: 'process@1.0',
        'device-stack': '"genesis-wasm@1.0", "patch@1.0"',
        'execution-device': 'stack@1.0',
        module: MODULE,
        'patch-from': '/results/outbox',
        'push-device': 'push@1.0',
        'random-seed': '…',
        scheduler: stub.address,
        type: 'Process',
        variant: 'ao.TN.1',
      },
    )
    const v = verifyHttpsig({ headers: { ...fields, signature: rsa.headers.signature, 'signature-input': rsa.headers['signature-input'] } })
    assert.ok(v.ok, 'the legacy process commitment verifies over the inline part')
  })

  it('schedule: POST /<pid>/schedule, committed message (type, target, action, data); `slot` of the signed reply', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const slots = []
    for (let i = 1; i <= 2; i++) {
      const { out, reqs } = await during(stub, () => hb.schedule({ pid, tags: { Action: 'Eval' }, data: `X = ${i}` }))
      assert.equal(reqs.length, 1)
      const [req] = reqs
      assert.equal(req.method, 'POST')
      assert.equal(req.url, `/${pid}/schedule`)
      assert.deepEqual(clientHeaders(req), ['body-keys', 'content-digest', 'content-type', 'path', 'signature', 'signature-input'])
      assertOuterSig(req, stub, ['@path', 'content-digest', 'content-type'], 'schedule')
      const { inline, fields, rsa } = assertCommittedBody(req, 'schedule')
      assert.deepEqual(inline.order, ['action', 'content-digest', 'content-disposition', 'data', 'target', 'type'])
      assert.deepEqual(fields, {
        action: 'Eval',
        'content-digest': `sha-256=:${sha256(Buffer.from(`X = ${i}`)).toString('base64')}:`,
        data: `X = ${i}`,
        target: pid,
        type: 'Message',
      })
      // hbsig signs `inline-body-key` (= data) although the part does not carry it: the
      // data is the inline body, bound by content-digest.
      const comps = sigParams(rsa.headers).components
      assert.deepEqual(comps, ['action', 'content-digest', 'inline-body-key', 'target', 'type'])
      const v = verifyHttpsig({ headers: { ...fields, 'inline-body-key': 'data', signature: rsa.headers.signature, 'signature-input': rsa.headers['signature-input'] } })
      assert.ok(v.ok, 'the message commitment verifies with inline-body-key: data')
      assert.equal(typeof out.slot, 'number', '`slot` typed integer by the reply\'s ao-types')
      slots.push(out.slot)
    }
    assert.deepEqual(slots, [1, 2])
  })

  it('compute, now, slot: unsigned GETs of …/~json@1.0/serialize', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const calls = [
      [() => hb.compute({ pid, slot: 2 }), `/${pid}/compute/~json@1.0/serialize?slot=2`],
      [() => hb.now({ pid }), `/${pid}/now/~json@1.0/serialize`],
      [() => hb.slot({ pid }), `/${pid}/slot/~json@1.0/serialize`],
      [() => hb.compute({ pid, slot: 1, path: 'results' }), `/${pid}/compute/results/~json@1.0/serialize?slot=1`],
      [() => hb.computeLegacy({ pid, slot: 2 }), `/${pid}/compute/~json@1.0/serialize?slot=2`],
    ]
    for (const [fn, path] of calls) {
      const { out, reqs } = await during(stub, fn)
      assert.equal(reqs.length, 1)
      assert.equal(reqs[0].method, 'GET')
      assert.equal(reqs[0].url, path)
      assert.deepEqual(clientHeaders(reqs[0]), [])
      assert.ok(out && typeof out === 'object', `${path}: parsed as JSON`)
    }
    // computeLegacy parses `results.json.body` (a JSON string).
    assert.deepEqual(await hb.computeLegacy({ pid, slot: 2 }), { Output: { data: 'slot 2' }, Messages: [] })
  })

  it('messages: GET /~scheduler@1.0/schedule?target=<pid>[&from&to]&accept=application/aos-2', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    const { out, reqs } = await during(stub, () => hb.messages({ pid }))
    assert.equal(reqs.length, 1)
    assert.equal(reqs[0].method, 'GET')
    assert.equal(reqs[0].url, `/~scheduler@1.0/schedule?target=${pid}&accept=application/aos-2`)
    assert.deepEqual(out.edges.map((e) => e.cursor), [0, 1, 2])
    const { reqs: r2 } = await during(stub, () => hb.messages({ pid, from: 1, to: 2 }))
    assert.equal(r2[0].url, `/~scheduler@1.0/schedule?target=${pid}&from=1&to=2&accept=application/aos-2`)
  })

  it('an unsigned reply is invisible to WAO: schedule() cannot read `slot` (spec 07 §0 fact 4)', async () => {
    assert.ok(pid, 'no pid (spawn failed)')
    stub.options.unsigned = true
    try {
      const res = await hb.schedule({ pid, tags: { Action: 'Eval' }, data: 'X = 3' }).then(
        (r) => r,
        (e) => e,
      )
      const last = stub.requests.at(-1)
      assert.equal(last.reply.headers.slot, '3', 'the stub did answer slot 3, unsigned')
      assert.ok(res instanceof Error || res.slot === undefined, `WAO read an unsigned slot: ${shorten(res)}`)
    } finally {
      stub.options.unsigned = false
    }
  })
})
