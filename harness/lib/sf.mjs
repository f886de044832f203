// A small RFC 8941 (Structured Field Values) parser and serialiser: enough for
// `signature`, `signature-input` and `content-digest` (dictionaries of byte sequences
// and inner lists of strings with parameters). Written for this harness.
//
// Values are represented as:
//   { type: 'string' | 'token' | 'integer' | 'decimal' | 'boolean' | 'bytes', value }
// Items carry `params` (a Map name -> bare item); inner lists are
//   { type: 'inner', items: [item...], params }.
// Byte sequences are decoded leniently: both the standard and the URL-safe base64
// alphabets are accepted (some clients write base64url, spec 07 §1.2).

export class SfError extends Error {}

class Parser {
  constructor(text) {
    this.s = text
    this.i = 0
  }
  peek() {
    return this.s[this.i]
  }
  eof() {
    return this.i >= this.s.length
  }
  fail(what) {
    throw new SfError(`${what} at offset ${this.i} in ${JSON.stringify(this.s.slice(0, 200))}`)
  }
  skipSP() {
    while (this.s[this.i] === ' ') this.i++
  }
  skipOWS() {
    while (this.s[this.i] === ' ' || this.s[this.i] === '\t') this.i++
  }
  key() {
    const c = this.peek()
    if (!c || !/[a-z*]/.test(c)) this.fail('expected a key')
    const start = this.i
    while (!this.eof() && /[a-z0-9_\-.*]/.test(this.peek())) this.i++
    return this.s.slice(start, this.i)
  }
  bareItem() {
    const c = this.peek()
    if (c === '"') return this.string()
    if (c === ':') return this.bytes()
    if (c === '?') return this.boolean()
    if (c === '-' || (c >= '0' && c <= '9')) return this.number()
    if (c && /[A-Za-z*]/.test(c)) return this.token()
    this.fail('expected a bare item')
  }
  string() {
    this.i++ // opening quote
    let out = ''
    for (;;) {
      if (this.eof()) this.fail('unterminated string')
      const c = this.s[this.i++]
      if (c === '\\') {
        const n = this.s[this.i++]
        if (n !== '"' && n !== '\\') this.fail('bad escape in string')
        out += n
      } else if (c === '"') {
        return { type: 'string', value: out }
      } else {
        const code = c.charCodeAt(0)
        if (code < 0x20 || code > 0x7e) this.fail('bad character in string')
        out += c
      }
    }
  }
  token() {
    const start = this.i
    this.i++
    while (!this.eof() && /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/.test(this.peek())) this.i++
    return { type: 'token', value: this.s.slice(start, this.i) }
  }
  bytes() {
    this.i++ // opening colon
    const end = this.s.indexOf(':', this.i)
    if (end < 0) this.fail('unterminated byte sequence')
    const text = this.s.slice(this.i, end)
    if (!/^[A-Za-z0-9+/\-_]*=*$/.test(text)) this.fail('bad byte sequence')
    this.i = end + 1
    return { type: 'bytes', value: decodeB64Any(text), text }
  }
  boolean() {
    this.i++
    const c = this.s[this.i++]
    if (c === '1') return { type: 'boolean', value: true }
    if (c === '0') return { type: 'boolean', value: false }
    this.fail('bad boolean')
  }
  number() {
    const m = /^-?[0-9]{1,15}(\.[0-9]{1,3})?/.exec(this.s.slice(this.i))
    if (!m) this.fail('bad number')
    this.i += m[0].length
    return m[1] ? { type: 'decimal', value: Number(m[0]) } : { type: 'integer', value: Number(m[0]) }
  }
  params() {
    const params = new Map()
    while (this.peek() === ';') {
      this.i++
      this.skipSP()
      const k = this.key()
      let v = { type: 'boolean', value: true }
      if (this.peek() === '=') {
        this.i++
        v = this.bareItem()
      }
      params.set(k, v)
    }
    return params
  }
  itemOrInner() {
    if (this.peek() === '(') {
      this.i++
      const items = []
      for (;;) {
        this.skipSP()
        if (this.peek() === ')') {
          this.i++
          break
        }
        if (this.eof()) this.fail('unterminated inner list')
        const it = this.bareItem()
        it.params = this.params()
        items.push(it)
        const c = this.peek()
        if (c !== ' ' && c !== ')') this.fail('bad inner list')
      }
      return { type: 'inner', items, params: this.params() }
    }
    const it = this.bareItem()
    it.params = this.params()
    return it
  }
  dictionary() {
    const dict = new Map()
    this.skipSP()
    if (this.eof()) return dict
    for (;;) {
      const k = this.key()
      let v
      if (this.peek() === '=') {
        this.i++
        v = this.itemOrInner()
      } else {
        v = { type: 'boolean', value: true, params: this.params() }
      }
      dict.set(k, v)
      this.skipOWS()
      if (this.eof()) return dict
      if (this.peek() !== ',') this.fail('expected a comma')
      this.i++
      this.skipOWS()
      if (this.eof()) this.fail('trailing comma')
    }
  }
}

/** Decodes base64 in either alphabet, with or without padding; throws on junk. */
export function decodeB64Any(text) {
  const std = text.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '')
  if (!/^[A-Za-z0-9+/]*$/.test(std) || std.length % 4 === 1) {
    throw new SfError(`not base64: ${text.slice(0, 40)}`)
  }
  return Buffer.from(std, 'base64')
}

/** Parses an RFC 8941 dictionary. Keys in insertion order. */
export function parseDictionary(text) {
  const p = new Parser(String(text))
  return p.dictionary()
}

function serializeBare(v) {
  switch (v.type) {
    case 'string':
      return '"' + v.value.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"'
    case 'token':
      return v.value
    case 'integer':
      return String(v.value)
    case 'decimal': {
      const s = v.value.toFixed(3).replace(/0+$/, '')
      return s.endsWith('.') ? s + '0' : s
    }
    case 'boolean':
      return v.value ? '?1' : '?0'
    case 'bytes':
      return ':' + Buffer.from(v.value).toString('base64') + ':'
    default:
      throw new SfError(`cannot serialise ${v.type}`)
  }
}

export function serializeParams(params) {
  let out = ''
  for (const [k, v] of params ?? []) {
    out += ';' + k
    if (!(v.type === 'boolean' && v.value === true)) out += '=' + serializeBare(v)
  }
  return out
}

/** Serialises an item or inner list (RFC 8941 §4.1). */
export function serializeMember(v) {
  if (v.type === 'inner') {
    return (
      '(' +
      v.items.map((it) => serializeBare(it) + serializeParams(it.params)).join(' ') +
      ')' +
      serializeParams(v.params)
    )
  }
  return serializeBare(v) + serializeParams(v.params)
}
