// A small reader for the multipart/form-data bodies hbsig (and so WAO's `HB`) sends
// (spec 07 §2: an inline part `content-disposition: inline`, parts
// `content-disposition: form-data;name="…"`, header-only parts allowed). Enough for
// assertions on captured requests; not a general MIME parser.

/** The boundary named by a `content-type` value, unquoted. */
export function boundaryOf(contentType) {
  const m = /;\s*boundary=("([^"]*)"|[^;\s]+)/i.exec(contentType ?? '')
  if (!m) throw new Error(`no boundary in content-type ${JSON.stringify(contentType)}`)
  return m[2] ?? m[1]
}

/**
 * Splits a multipart body into parts.
 * @returns {{parts: Array<{headers: Object, order: string[], body: Buffer, disposition: string, name?: string}>, closed: boolean}}
 *   `headers` lower-cased names → values; `order` the names as they came.
 */
export function parseMultipart(body, contentType) {
  const boundary = boundaryOf(contentType)
  const text = Buffer.from(body).toString('latin1')
  const delim = `--${boundary}`
  const chunks = text.split(delim)
  if (chunks.length < 2) throw new Error(`the body does not contain the boundary ${delim}`)
  const parts = []
  let closed = false
  for (let i = 1; i < chunks.length; i++) {
    let chunk = chunks[i]
    if (chunk.startsWith('--')) {
      closed = true
      break
    }
    if (chunk.startsWith('\r\n')) chunk = chunk.slice(2)
    if (chunk.endsWith('\r\n')) chunk = chunk.slice(0, -2)
    const split = chunk.indexOf('\r\n\r\n')
    const head = split < 0 ? chunk : chunk.slice(0, split)
    const rest = split < 0 ? '' : chunk.slice(split + 4)
    const headers = {}
    const order = []
    for (const line of head.split('\r\n')) {
      if (line === '') continue
      const colon = line.indexOf(':')
      if (colon < 0) throw new Error(`malformed part header line ${JSON.stringify(line)}`)
      const name = line.slice(0, colon).trim().toLowerCase()
      headers[name] = line.slice(colon + 1).trim()
      order.push(name)
    }
    const disposition = headers['content-disposition'] ?? ''
    const nm = /name="([^"]*)"/.exec(disposition)
    parts.push({ headers, order, body: Buffer.from(rest, 'latin1'), disposition, name: nm?.[1] })
  }
  return { parts, closed }
}
