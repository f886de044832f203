// Prints the Arweave v2 transaction vectors that crates/hb-store/src/upload.rs tests
// against (hardcoded there): data_root for a few payload sizes and the deep hash of a
// transaction with fixed fields and the chunk proofs of a few payloads, all computed
// by arweave-js. Run from harness/:
//   node scripts/l1-tx-vectors.mjs
// The payload of size n is the bytes (i * 7 + 3) % 251 for i in 0..n.

import Arweave from 'arweave'
import Transaction from 'arweave/node/lib/transaction.js'
import * as merkle from 'arweave/node/lib/merkle.js'

import { loadJwk } from '../lib/node.mjs'

const Tx = Transaction.default ?? Transaction
const b64u = (b) => Buffer.from(b).toString('base64url')
const payload = (n) => {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) % 251
  return b
}

for (const n of [1, 1000, 262144, 263144, 600000]) {
  const root = await merkle.computeRootHash(payload(n))
  console.log(`data_root ${n} ${b64u(root)}`)
}

// Chunk proofs (POST /chunk): for each chunk, its offset (last byte) and the SHA-256
// of its data_path.
for (const n of [1000, 263144, 600000, 1310720]) {
  const { chunks, proofs } = await merkle.generateTransactionChunks(payload(n))
  for (let i = 0; i < chunks.length; i++) {
    const path = proofs[i].proof
    const h = Buffer.from(await crypto.subtle.digest('SHA-256', path)).toString('base64url')
    console.log(`chunk ${n} ${i} ${chunks[i].minByteRange}..${chunks[i].maxByteRange} offset ${proofs[i].offset} path ${path.length} ${h}`)
  }
}

const jwk = loadJwk('key-1')
const data = payload(1000)
const tx = new Tx({
  format: 2,
  owner: jwk.n,
  last_tx: b64u(Buffer.alloc(48, 7)),
  reward: '65595508',
  quantity: '0',
  target: '',
  data: b64u(data),
  data_size: String(data.length),
})
tx.addTag('Bundle-Format', 'binary')
tx.addTag('Bundle-Version', '2.0.0')
await tx.prepareChunks(data)
console.log(`deep_hash ${b64u(await tx.getSignatureData())}`)
const arweave = Arweave.init({})
await arweave.transactions.sign(tx, jwk)
console.log(`signed_id_matches_sha256_sig ${tx.id === b64u(await Arweave.crypto.hash(Buffer.from(tx.signature, 'base64url')))}`)
