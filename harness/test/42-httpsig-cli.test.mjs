// The CLI on client-signed httpsig messages: `hb message verify --from httpsig@1.0`
// accepts hbsig- and aoconnect-signed requests and rejects tampered ones, and
// `hb message id --from httpsig@1.0` gives the commitment IDs hbsig computes: the RSA
// commitment ID (`rsaid`, base64url(sha256(signature))) and the HMAC one (`hmacid`,
// the unsigned ID, spec 03 §5.6).

import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { rsaid, hmacid } from 'hbsig'

import { loadJwk, runHb } from '../lib/node.mjs'
import { hbsigSigned, aoconnectSigned } from '../lib/clients.mjs'
import { verifyHttpsig } from '../lib/verify-httpsig.mjs'

const jwk1 = loadJwk('key-1')
const BASE = 'http://127.0.0.1:10000'

/** The CLI's httpsig text form: header lines, a blank line, then the body. */
const asText = (req) => Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join('\n') + '\n\n' + (req.body ?? '')

function cli(args, req) {
  const r = runHb(args, { input: asText(req) })
  return { status: r.status, out: r.stdout.toString('utf8').trim(), stderr: r.stderr }
}

const requests = async () => [
  ['hbsig, headers only', await hbsigSigned(jwk1, BASE, { path: '/x', 'x-test': 'abc', count: 3 }), 'x-test'],
  ['hbsig, with a body', await hbsigSigned(jwk1, BASE, { path: '/x', 'x-test': 'abc', data: 'hello body' }), 'x-test'],
  ['hbsig, typed list', await hbsigSigned(jwk1, BASE, { path: '/x', tags: ['x', 2], 'x-test': 'abc' }), 'x-test'],
  ['aoconnect, text field', await aoconnectSigned(jwk1, BASE, { path: '/x', 'x-custom': 'abc' }), 'x-custom'],
]

describe('42 httpsig: the CLI on client-signed messages', () => {
  it('hb message verify --from httpsig@1.0: true for client-signed messages, false when tampered', async () => {
    for (const [name, req, field] of await requests()) {
      assert.ok(verifyHttpsig(req).ok, `${name}: independent verifier`)
      const good = cli(['message', 'verify', '--from', 'httpsig@1.0', '-'], req)
      assert.deepEqual([good.status, good.out], [0, 'true'], `${name}: ${good.stderr}`)
      const bad = cli(['message', 'verify', '--from', 'httpsig@1.0', '-'], { ...req, headers: { ...req.headers, [field]: 'tampered' } })
      assert.deepEqual([bad.status, bad.out], [1, 'false'], `${name} tampered: ${bad.stderr}`)
    }
  })

  it('hb message verify --from httpsig@1.0: an aoconnect integer field (`ao-types: count=integer`)', async () => {
    const req = await aoconnectSigned(jwk1, BASE, { path: '/x', 'x-custom': 'abc', count: 7 })
    assert.ok(verifyHttpsig(req).ok, 'independent verifier')
    const r = cli(['message', 'verify', '--from', 'httpsig@1.0', '-'], req)
    assert.deepEqual([r.status, r.out], [0, 'true'], r.stderr)
  })

  it('hb message id: --mode all/signed = hbsig rsaid, --mode none = hbsig hmacid', async () => {
    for (const [name, req] of await requests()) {
      const rsa = rsaid({ signature: req.headers.signature })
      assert.equal(verifyHttpsig(req).signatures[0].commitmentId, rsa)
      for (const mode of ['all', 'signed']) {
        const r = cli(['message', 'id', '--mode', mode, '--from', 'httpsig@1.0', '-'], req)
        assert.deepEqual([r.status, r.out], [0, rsa], `${name} --mode ${mode}: ${r.stderr}`)
      }
      const none = cli(['message', 'id', '--mode', 'none', '--from', 'httpsig@1.0', '-'], req)
      assert.deepEqual([none.status, none.out], [0, hmacid(req.headers)], `${name} --mode none: ${none.stderr}`)
    }
  })
})
