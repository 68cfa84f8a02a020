// DNS message framing (RFC 1035 §4.1, RFC 6891 EDNS0): a validating parser for one-question queries that reads straight
// from the caller's buffer, the writers every answer path shares, and the compressing encoder the zone compiler uses.
//
//                                   1  1  1  1  1  1
//     0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
//   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//   |                      ID                       |
//   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//   |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
//   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//   |            QDCOUNT / ANCOUNT / NSCOUNT / ARCOUNT (16 bits each)         |
//   +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//
// Question: QNAME (length-prefixed labels, root = 0), QTYPE (16), QCLASS (16). A label length byte with the top bits 11
// is a compression pointer (RFC 1035 §4.1.4), 01/10 are reserved. OPT pseudo-RR (RFC 6891 §6.1.2): NAME = root,
// TYPE = 41, CLASS = requestor's UDP payload size, TTL = EXTENDED-RCODE(8) | VERSION(8) | DO(1) | Z(15).
//
// The parser never throws: it returns a Verdict and leaves the parsed fields in a reusable Query.
import { set16 as put16 } from '../wire/bytes'

export const DNS_HEADER_LEN = 12
export const DNS_MAX_NAME = 255
const DNS_MAX_UDP_PLAIN = 512
export const DNS_MAX_TCP = 65535

/** Byte offsets of the header fields. */
export const DnsField = {
  ID: 0,
  FLAGS: 2,
  QDCOUNT: 4,
  ANCOUNT: 6,
  NSCOUNT: 8,
  ARCOUNT: 10,
} as const

/** Bits of the 16-bit flags word. */
export const DnsFlag = {
  QR: 0x8000,
  OPCODE: 0x7800,
  AA: 0x0400,
  TC: 0x0200,
  RD: 0x0100,
  RA: 0x0080,
  Z: 0x0040,
  AD: 0x0020,
  CD: 0x0010,
  RCODE: 0x000f,
} as const

export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  /** extended (RFC 6891): upper 8 bits travel in the OPT TTL */
  BADVERS: 16,
} as const

export const RcodeName: readonly string[] = [
  'NOERROR',
  'FORMERR',
  'SERVFAIL',
  'NXDOMAIN',
  'NOTIMP',
  'REFUSED',
  'YXDOMAIN',
  'YXRRSET',
  'NXRRSET',
  'NOTAUTH',
  'NOTZONE',
  'RCODE11',
  'RCODE12',
  'RCODE13',
  'RCODE14',
  'RCODE15',
  'BADVERS',
]

export const QType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
} as const

export const QTypeName: Readonly<Record<number, string>> = {
  1: 'A',
  2: 'NS',
  5: 'CNAME',
  6: 'SOA',
  12: 'PTR',
  15: 'MX',
  16: 'TXT',
  28: 'AAAA',
  33: 'SRV',
  41: 'OPT',
  43: 'DS',
  46: 'RRSIG',
  48: 'DNSKEY',
  64: 'SVCB',
  65: 'HTTPS',
  251: 'IXFR',
  252: 'AXFR',
  255: 'ANY',
  257: 'CAA',
}

export const QCLASS_IN = 1

/** RFC 6891 §6.1.3: the DO bit in the OPT TTL word. */
export const EDNS_DO = 0x8000

/** What parseQuery concluded. Values index the malformed-query counters. */
export const Verdict = {
  OK: 0,
  /** shorter than a header: there is no ID to answer to */
  DROP_SHORT: 1,
  /** QR=1: never answer a response (reflection loops) */
  DROP_RESPONSE: 2,
  NOTIMP_OPCODE: 3,
  FORMERR_QDCOUNT: 4,
  /** label type 01/10 (reserved) */
  FORMERR_LABEL: 5,
  /** compression pointer in the question: nothing earlier to point to, so always a loop or garbage */
  FORMERR_POINTER: 6,
  FORMERR_NAME_LONG: 7,
  FORMERR_TRUNCATED: 8,
  /** OPT not at the root name, or more than one OPT */
  FORMERR_OPT: 9,
  /** a meta type (OPT) asked as a question */
  FORMERR_QTYPE: 10,
} as const
export type Verdict = (typeof Verdict)[keyof typeof Verdict]

export const VerdictName: readonly string[] = ['ok', 'short', 'response', 'opcode', 'qdcount', 'label', 'pointer', 'name_too_long', 'truncated', 'opt', 'qtype']

/** FNV-1a offset basis; names hash over their lowercase wire bytes, root byte included. */
export const FNV_BASIS = 0x811c9dc5

export function fnv1a(bytes: Uint8Array, start: number, end: number): number {
  let h = FNV_BASIS
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193)
  return h
}

/** One parsed query, reused across packets: fields are valid only after parseQuery returned OK (or NOTIMP). */
export class Query {
  id = 0
  flags = 0
  opcode = 0
  qtype = 0
  qclass = 0
  /** wire length of QNAME including the root byte (1..255) */
  nameLen = 0
  /** number of labels, root excluded */
  labels = 0
  /** absolute offset in the query buffer just past QCLASS */
  questionEnd = 0
  /** FNV-1a of the lowercase wire name */
  hash = 0
  /** lowercase wire-format QNAME */
  readonly name = new Uint8Array(DNS_MAX_NAME + 1)
  /** offset in `name` of each label's length byte */
  readonly labelOff = new Uint8Array(128)
  edns = false
  ednsSize = 0
  ednsVersion = 0
  ednsDo = false

  /** The question name as text (lowercase, no trailing dot, '' for the root); allocates, so not for the fast path. */
  nameText(): string {
    return wireToText(this.name, 0)
  }
}

/**
 * Validate a query and fill `q`. Reads only inside [off, off+len). Names in the answer/authority sections are skipped
 * without following pointers (a pointer ends a name), so no input can make this loop.
 */
export function parseQuery(buf: Uint8Array, off: number, len: number, q: Query): Verdict {
  if (len < DNS_HEADER_LEN) return Verdict.DROP_SHORT
  const end = off + len
  const flags = (buf[off + 2]! << 8) | buf[off + 3]!
  q.id = (buf[off]! << 8) | buf[off + 1]!
  q.flags = flags
  q.opcode = (flags & DnsFlag.OPCODE) >>> 11
  q.edns = false
  q.ednsSize = 0
  q.ednsVersion = 0
  q.ednsDo = false
  q.nameLen = 0
  if (flags & DnsFlag.QR) return Verdict.DROP_RESPONSE
  if (q.opcode !== 0) return Verdict.NOTIMP_OPCODE
  if (buf[off + 4] !== 0 || buf[off + 5] !== 1) return Verdict.FORMERR_QDCOUNT

  // QNAME: lowercase into q.name and hash in the same pass.
  const name = q.name
  const labelOff = q.labelOff
  let p = off + DNS_HEADER_LEN
  let n = 0
  let labels = 0
  let h = FNV_BASIS
  for (;;) {
    if (p >= end) return Verdict.FORMERR_TRUNCATED
    const l = buf[p]!
    if (l === 0) {
      name[n++] = 0
      h = Math.imul(h, 0x01000193)
      p++
      break
    }
    if (l & 0xc0) return (l & 0xc0) === 0xc0 ? Verdict.FORMERR_POINTER : Verdict.FORMERR_LABEL
    if (n + l + 2 > DNS_MAX_NAME) return Verdict.FORMERR_NAME_LONG
    if (p + 1 + l > end) return Verdict.FORMERR_TRUNCATED
    labelOff[labels++] = n
    name[n++] = l
    h = Math.imul(h ^ l, 0x01000193)
    for (let i = 1; i <= l; i++) {
      let c = buf[p + i]!
      if (c >= 0x41 && c <= 0x5a) c |= 0x20
      name[n++] = c
      h = Math.imul(h ^ c, 0x01000193)
    }
    p += l + 1
  }
  if (p + 4 > end) return Verdict.FORMERR_TRUNCATED
  q.nameLen = n
  q.labels = labels
  q.hash = h
  q.qtype = (buf[p]! << 8) | buf[p + 1]!
  q.qclass = (buf[p + 2]! << 8) | buf[p + 3]!
  p += 4
  q.questionEnd = p
  if (q.qtype === QType.OPT) return Verdict.FORMERR_QTYPE

  const an = (buf[off + 6]! << 8) | buf[off + 7]!
  const ns = (buf[off + 8]! << 8) | buf[off + 9]!
  const ar = (buf[off + 10]! << 8) | buf[off + 11]!
  for (let i = 0; i < an + ns; i++) {
    p = skipRecord(buf, p, end)
    if (p < 0) return Verdict.FORMERR_TRUNCATED
  }
  for (let i = 0; i < ar; i++) {
    if (p + 11 <= end && buf[p] === 0 && buf[p + 1] === 0 && buf[p + 2] === QType.OPT) {
      if (q.edns) return Verdict.FORMERR_OPT
      const rdlen = (buf[p + 9]! << 8) | buf[p + 10]!
      if (p + 11 + rdlen > end) return Verdict.FORMERR_TRUNCATED
      q.edns = true
      q.ednsSize = (buf[p + 3]! << 8) | buf[p + 4]!
      q.ednsVersion = buf[p + 6]!
      q.ednsDo = (buf[p + 7]! & 0x80) !== 0
      p += 11 + rdlen
      continue
    }
    const start = p
    p = skipRecord(buf, p, end)
    if (p < 0) return Verdict.FORMERR_TRUNCATED
    // an OPT under any name other than the root is malformed (RFC 6891 §6.1.1)
    if (recordType(buf, start, end) === QType.OPT) return Verdict.FORMERR_OPT
  }
  return Verdict.OK
}

/** Skip a (possibly compressed) name; returns the offset after it, or -1 when it runs past `end`. */
export function skipName(buf: Uint8Array, p: number, end: number): number {
  for (let hops = 0; hops < 128; hops++) {
    if (p >= end) return -1
    const l = buf[p]!
    if (l === 0) return p + 1
    if ((l & 0xc0) === 0xc0) return p + 2 <= end ? p + 2 : -1
    if (l & 0xc0) return -1
    p += l + 1
  }
  return -1
}

/** Skip one resource record; -1 when malformed or truncated. */
export function skipRecord(buf: Uint8Array, p: number, end: number): number {
  p = skipName(buf, p, end)
  if (p < 0 || p + 10 > end) return -1
  const rdlen = (buf[p + 8]! << 8) | buf[p + 9]!
  p += 10 + rdlen
  return p <= end ? p : -1
}

function recordType(buf: Uint8Array, p: number, end: number): number {
  p = skipName(buf, p, end)
  return p < 0 ? -1 : (buf[p]! << 8) | buf[p + 1]!
}

// ---- writers shared by the answer paths -------------------------------------------------------------------------

// Big-endian stores are wire's (src/wire/bytes, one definition); the DNS modules import them as put16/put32.

/** Response flags for a query: QR, opcode, RD and CD echoed, RA set (we recurse via the upstreams). */
export function responseFlags(queryFlags: number, aa: boolean, tc: boolean, rcode: number): number {
  return DnsFlag.QR | (queryFlags & (DnsFlag.OPCODE | DnsFlag.RD | DnsFlag.CD)) | DnsFlag.RA | (aa ? DnsFlag.AA : 0) | (tc ? DnsFlag.TC : 0) | (rcode & 0x0f)
}

export function writeHeader(out: Uint8Array, o: number, id: number, flags: number, qd: number, an: number, ns: number, ar: number): void {
  put16(out, o, id)
  put16(out, o + 2, flags)
  put16(out, o + 4, qd)
  put16(out, o + 6, an)
  put16(out, o + 8, ns)
  put16(out, o + 10, ar)
}

export const OPT_RR_LEN = 11

/** OPT pseudo-RR with no options; returns the new offset. */
export function writeOpt(out: Uint8Array, o: number, udpSize: number, rcode: number, dnssecOk: boolean): number {
  out[o] = 0
  put16(out, o + 1, QType.OPT)
  put16(out, o + 3, udpSize)
  out[o + 5] = rcode >>> 4
  out[o + 6] = 0
  out[o + 7] = dnssecOk ? 0x80 : 0
  out[o + 8] = 0
  put16(out, o + 9, 0)
  return o + OPT_RR_LEN
}

// The last pair of views copyInto compared. `.buffer` is a getter V8 runs in C++ (a call out of optimised code on
// every answer), and the dataplane copies between the same few views over and over: the packet batch's slab and the
// reply area. A view's buffer never changes, so the cached result stays exact.
let lastDst: Uint8Array | undefined
let lastSrc: Uint8Array | undefined
let lastShared = false

function sameMemory(dst: Uint8Array, src: Uint8Array): boolean {
  if (dst !== lastDst || src !== lastSrc) {
    lastShared = dst.buffer === src.buffer
    lastDst = dst
    lastSrc = src
  }
  return lastShared
}

/** Copy n bytes; safe when `src` and `dst` are views of the same memory. Allocation-free for the common short copy. */
export function copyInto(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, n: number): void {
  if (n <= 0) return
  if (sameMemory(dst, src)) {
    const d = dst.byteOffset + dstOff
    const s = src.byteOffset + srcOff
    if (d === s) return
    if (d > s && d < s + n) {
      for (let i = n - 1; i >= 0; i--) dst[dstOff + i] = src[srcOff + i]!
      return
    }
  }
  if (n < 96) {
    for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i]!
  } else {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff)
  }
}

/**
 * A reply with no records: header, the question when `withQuestion` (the query parsed that far), and an OPT when the
 * query had one. Used for FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS. Returns bytes written, 0 when `outMax` is too
 * small for even a header.
 */
export function writeBareResponse(
  query: Uint8Array,
  off: number,
  q: Query,
  out: Uint8Array,
  outOff: number,
  outMax: number,
  rcode: number,
  withQuestion: boolean,
  ednsSize: number,
): number {
  const qlen = withQuestion ? q.questionEnd - (off + DNS_HEADER_LEN) : 0
  const withOpt = q.edns && withQuestion
  const need = DNS_HEADER_LEN + qlen + (withOpt ? OPT_RR_LEN : 0)
  if (need > outMax) {
    if (DNS_HEADER_LEN > outMax) return 0
    return writeBareResponse(query, off, q, out, outOff, outMax, rcode, false, ednsSize)
  }
  const id = q.id
  const flags = responseFlags(q.flags, false, false, rcode)
  if (qlen > 0) copyInto(out, outOff + DNS_HEADER_LEN, query, off + DNS_HEADER_LEN, qlen)
  writeHeader(out, outOff, id, flags, withQuestion ? 1 : 0, 0, 0, withOpt ? 1 : 0)
  let o = outOff + DNS_HEADER_LEN + qlen
  if (withOpt) o = writeOpt(out, o, ednsSize, rcode, q.ednsDo)
  return o - outOff
}

/**
 * The largest UDP reply a client gets: its EDNS size (at least 512; 512 without EDNS), but never more than `maxUdp`,
 * the size we advertise (1232 by default, DNS flag day 2020). A reply over the path MTU would be dropped on the way
 * (DF) and the client would get nothing; fitted, it gets TC and retries over TCP. The one rule for every UDP reply:
 * in-path answers, forwarded ones and the slow paths.
 */
export function udpLimit(edns: boolean, clientSize: number, maxUdp: number): number {
  if (!edns) return DNS_MAX_UDP_PLAIN
  const lim = clientSize < maxUdp ? clientSize : maxUdp
  return lim > DNS_MAX_UDP_PLAIN ? lim : DNS_MAX_UDP_PLAIN
}

/** Payload limit for a reply: TCP 65535, UDP udpLimit(); never more than outMax. */
export function replyLimit(q: Query, transport: number, outMax: number, maxUdp: number): number {
  const lim = transport === 1 ? DNS_MAX_TCP : udpLimit(q.edns, q.ednsSize, maxUdp)
  return lim < outMax ? lim : outMax
}

// ---- names as text ----------------------------------------------------------------------------------------------

/** Lowercase, strip the trailing dot; '' is the root. */
export function normalizeName(name: string): string {
  let s = name.toLowerCase()
  while (s.endsWith('.')) s = s.slice(0, -1)
  return s
}

/** Text name → wire bytes (no compression). Labels longer than 63 or names longer than 255 bytes throw. */
export function nameToWire(name: string): Uint8Array {
  const n = normalizeName(name)
  if (n === '') return Uint8Array.of(0)
  // Each dot becomes a length byte, plus the first length byte and the root: n.length + 2 bytes.
  if (n.length + 2 > DNS_MAX_NAME) throw new RangeError(`Name too long: ${name}`)
  const out = new Uint8Array(n.length + 2)
  let lenAt = 0
  let w = 1
  for (let i = 0; i <= n.length; i++) {
    const c = i < n.length ? n.charCodeAt(i) : 0x2e
    if (c !== 0x2e) {
      out[w++] = c & 0xff // latin1, as the wire has it
      continue
    }
    const len = w - lenAt - 1
    if (len === 0 || len > 63) throw new RangeError(`Bad label in ${JSON.stringify(name)}`)
    out[lenAt] = len
    lenAt = w++
  }
  out[lenAt] = 0
  return out
}

/** Uncompressed wire name at `p` → text (no trailing dot). */
export function wireToText(buf: Uint8Array, p: number): string {
  const out: string[] = []
  for (;;) {
    const l = buf[p]
    if (l === undefined || l === 0 || l > 63) break
    out.push(Buffer.from(buf.subarray(p + 1, p + 1 + l)).toString('latin1'))
    p += l + 1
  }
  return out.join('.')
}

// ---- compressing encoder for compile time -----------------------------------------------------------------------

/**
 * Appends records to a message body that will sit at absolute offset `base` of a reply, compressing names against
 * each other and against the question name (always at offset 12). Compile-time only: it allocates freely.
 */
export class MessageWriter {
  private readonly bytes: number[] = []
  private readonly names = new Map<string, number>()

  constructor(
    private readonly base: number,
    questionName?: string,
  ) {
    if (questionName !== undefined) this.remember(normalizeName(questionName), DNS_HEADER_LEN)
  }

  get length(): number {
    return this.bytes.length
  }

  private remember(name: string, at: number): void {
    let n = name
    let o = at
    while (n !== '') {
      if (o < 0x4000 && !this.names.has(n)) this.names.set(n, o)
      const dot = n.indexOf('.')
      o += (dot < 0 ? n.length : dot) + 1
      n = dot < 0 ? '' : n.slice(dot + 1)
    }
  }

  u8(v: number): void {
    this.bytes.push(v & 0xff)
  }

  u16(v: number): void {
    this.bytes.push((v >>> 8) & 0xff, v & 0xff)
  }

  u32(v: number): void {
    this.bytes.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff)
  }

  raw(b: Uint8Array): void {
    for (const x of b) this.bytes.push(x)
  }

  name(text: string, compress: boolean): void {
    const n = normalizeName(text)
    const at = this.base + this.bytes.length
    let rest = n
    while (rest !== '') {
      const ptr = compress ? this.names.get(rest) : undefined
      if (ptr !== undefined) {
        this.u16(0xc000 | ptr)
        // the whole name was known: so were its suffixes (and offsets past a pointer would not hold them)
        if (rest !== n) this.remember(n, at)
        return
      }
      const dot = rest.indexOf('.')
      const end = dot < 0 ? rest.length : dot
      this.bytes.push(end)
      for (let i = 0; i < end; i++) this.bytes.push(rest.charCodeAt(i) & 0xff) // latin1
      rest = dot < 0 ? '' : rest.slice(dot + 1)
    }
    this.u8(0)
    this.remember(n, at)
  }

  /** Start an RR; returns the offset of RDLENGTH, to be closed with endRdata(). */
  beginRecord(owner: string, type: number, ttl: number): number {
    this.name(owner, true)
    this.u16(type)
    this.u16(QCLASS_IN)
    this.u32(ttl)
    const at = this.bytes.length
    this.u16(0)
    return at
  }

  endRdata(rdlenAt: number): void {
    const len = this.bytes.length - rdlenAt - 2
    this.bytes[rdlenAt] = len >>> 8
    this.bytes[rdlenAt + 1] = len & 0xff
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes)
  }
}
