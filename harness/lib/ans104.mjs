// ANS-104 helpers for the tests: arbundles and arweave-js entry points, and a data item
// built and signed directly with arweave-js primitives (spec 03 §7.1–7.4).

import crypto from 'node:crypto'
import * as AB from '@dha-team/arbundles'
import Arweave from 'arweave'
import deepHashModule from 'arweave/node/lib/deepHash.js'

export const arbundles = AB.default ?? AB
export const { createData, ArweaveSigner, DataItem, serializeTags, deserializeTags } = arbundles
export const arweaveDeepHash = deepHashModule.default ?? deepHashModule
export { Arweave }

const u64le = (n) => {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(BigInt(n))
  return b
}

/** The deep-hash list of a data item (03 §7.4). */
export function signatureDataParts({ owner, target, anchor, tags, data }) {
  return [
    Buffer.from('dataitem'),
    Buffer.from('1'),
    Buffer.from('1'),
    owner,
    target ?? Buffer.alloc(0),
    anchor ?? Buffer.alloc(0),
    tags,
    data,
  ]
}

/**
 * A data item laid out by hand (03 §7.1) and signed with `Arweave.crypto.sign` over the
 * deep hash computed with arweave-js' own `deepHash`.
 * @returns {Promise<{raw: Buffer, id: string, deepHash: Buffer}>}
 */
export async function arweaveSignedItem(jwk, { tags = [], data = Buffer.alloc(0), target, anchor } = {}) {
  const owner = Buffer.from(jwk.n, 'base64url')
  const encodedTags = tags.length ? Buffer.from(serializeTags(tags)) : Buffer.alloc(0)
  const dataBuf = Buffer.from(data)
  const dh = Buffer.from(await arweaveDeepHash(signatureDataParts({ owner, target, anchor, tags: encodedTags, data: dataBuf })))
  const sig = Buffer.from(await Arweave.crypto.sign(jwk, dh))
  const field = (v) => (v ? Buffer.concat([Buffer.from([1]), v]) : Buffer.from([0]))
  const raw = Buffer.concat([
    Buffer.from([1, 0]),
    sig,
    owner,
    field(target),
    field(anchor),
    u64le(tags.length),
    u64le(encodedTags.length),
    encodedTags,
    dataBuf,
  ])
  return { raw, id: crypto.createHash('sha256').update(sig).digest('base64url'), deepHash: dh }
}

/** A data item signed by arbundles (`createData` + `ArweaveSigner`). */
export async function arbundlesSignedItem(jwk, data, opts = {}) {
  const signer = new ArweaveSigner(jwk)
  const item = createData(data, signer, opts)
  await item.sign(signer)
  return { raw: Buffer.from(item.getRaw()), id: item.id, item }
}

/** Offsets of an item's regions (03 §7.1) for targeted tampering. */
export function itemLayout(raw) {
  let off = 2 + 512 + 512
  const targetPresent = raw[off] === 1
  const target = targetPresent ? off + 1 : null
  off += targetPresent ? 33 : 1
  const anchorPresent = raw[off] === 1
  const anchor = anchorPresent ? off + 1 : null
  off += anchorPresent ? 33 : 1
  const tagCount = Number(raw.readBigUInt64LE(off))
  const tagBytes = Number(raw.readBigUInt64LE(off + 8))
  off += 16
  return { signature: 2, owner: 514, target, anchor, tagCount, tags: off, tagBytes, data: off + tagBytes, length: raw.length }
}

/** A copy of `raw` with the byte at `at` XOR-ed with `mask`. */
export function flipByte(raw, at, mask = 0x01) {
  const b = Buffer.from(raw)
  b[at] ^= mask
  return b
}
