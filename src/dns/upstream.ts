// Forwarding for names outside the cluster zone: upstream resolvers over UDP (TCP when the answer comes back
// truncated), one timeout per attempt then the next server, SERVFAIL when every server failed, and a size-capped LRU
// cache of whole answers (positive TTL = smallest answer TTL, negative TTL = RFC 2308 SOA rule) whose TTLs age as
// they are served. Identical questions in flight share one upstream exchange.
//
// Replies to clients keep the client's ID, RD/CD bits and question bytes (original case); the upstream's OPT is dropped
// and ours is added when the client sent one; an answer larger than the client may receive over UDP loses its
// additional section, then everything (TC=1).

import { randomInt } from 'node:crypto'
import * as dgram from 'node:dgram'
import { readFileSync } from 'node:fs'
import * as net from 'node:net'
import dnsPacket from 'dns-packet'
import {
  DNS_HEADER_LEN,
  DNS_MAX_TCP,
  DnsFlag,
  OPT_RR_LEN,
  QType,
  Query,
  Rcode,
  Verdict,
  parseQuery,
  skipName,
  udpLimit,
  writeBareResponse,
  writeHeader,
  writeOpt,
} from './message'
import { set16 as put16, set32 as put32 } from '../wire/bytes'

export interface UpstreamServer {
  readonly host: string
  readonly port: number
}

export interface UpstreamOptions {
  /** "1.1.1.1", "1.1.1.1:5353", "[2001:db8::1]:53", "2001:db8::1"; when absent or empty, read `resolvConf` */
  readonly servers?: readonly string[]
  /** default /etc/resolv.conf */
  readonly resolvConf?: string
  /** addresses never forwarded to (our own service IP: a resolv.conf naming it would loop) */
  readonly exclude?: readonly string[]
  /** per attempt; default 2000 ms */
  readonly timeoutMs?: number
  /** cached answers; default 10000 */
  readonly cacheSize?: number
  /** caps, as CoreDNS cache: 3600 s positive, 1800 s negative */
  readonly maxTtl?: number
  readonly maxNegativeTtl?: number
  /** UDP payload size we advertise to upstreams and clients; default 1232 */
  readonly ednsSize?: number
  /** a server that timed out or refused is tried last for this long; default 5000 ms */
  readonly holdDownMs?: number
  /**
   * client queries waiting on upstream at once (coalesced ones included); past it a query is dropped and counted
   * (`overflow`), as CoreDNS forward's max_concurrent; default 1000
   */
  readonly maxPending?: number
}

export interface UpstreamStats {
  requests: number
  cacheHits: number
  cacheMisses: number
  coalesced: number
  /** seconds, summed over upstream exchanges that produced an answer */
  latencySum: number
  latencyCount: number
  timeouts: number
  errors: number
  tcpFallbacks: number
  /** SERVFAIL we made up because every upstream failed */
  servfail: number
  /** queries dropped because maxPending were already waiting on upstream */
  overflow: number
}

/** Parse resolv.conf text: the `nameserver` addresses, in order. */
export function parseResolvConf(text: string): string[] {
  const out: string[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim()
    const m = /^nameserver\s+(\S+)$/.exec(line)
    if (m !== null) out.push(m[1]!.replace(/%.*$/, ''))
  }
  return out
}

/** "host", "host:port", "[v6]:port" or a bare IPv6 address → server (port 53 by default). */
export function parseServer(spec: string): UpstreamServer {
  const s = spec.trim()
  const br = /^\[([^\]]+)\](?::(\d+))?$/.exec(s)
  if (br !== null) return { host: br[1]!, port: br[2] !== undefined ? Number(br[2]) : 53 }
  if (net.isIPv6(s)) return { host: s, port: 53 }
  const m = /^([^:]+)(?::(\d+))?$/.exec(s)
  if (m === null || !net.isIP(m[1]!)) throw new RangeError(`Bad upstream server ${JSON.stringify(spec)}`)
  const port = m[2] !== undefined ? Number(m[2]) : 53
  if (!(port > 0 && port < 65536)) throw new RangeError(`Bad upstream port in ${JSON.stringify(spec)}`)
  return { host: m[1]!, port }
}

/** The client side of one forwarded query: what its reply must echo. */
interface Waiter {
  readonly id: number
  readonly flags: number
  readonly question: Buffer
  readonly edns: boolean
  readonly ednsSize: number
  readonly ednsDo: boolean
  readonly transport: number
  readonly cb: (answer: Buffer) => void
}

/** An upstream answer, ready to be re-served: sections after the question, OPT removed. */
interface CacheEntry {
  readonly rcode: number
  readonly ad: boolean
  readonly an: number
  readonly ns: number
  readonly ar: number
  readonly body: Buffer
  readonly arStart: number
  readonly ttlOffsets: readonly number[]
  readonly storedAt: number
  readonly expiresAt: number
}

interface Flight {
  readonly key: string
  readonly waiters: Waiter[]
  /** the query we send upstream (our ID patched in per attempt) */
  readonly wire: Buffer
  readonly qname: Buffer
  readonly qtype: number
  readonly qclass: number
  readonly tried: Set<number>
  attempt: number
  started: number
  timer?: NodeJS.Timeout
  id: number
  server: number
  done: boolean
}

class UdpConn {
  readonly sock: dgram.Socket
  readonly pending = new Map<number, Flight>()
  connected = false
  private readonly queue: Buffer[] = []

  constructor(
    readonly server: UpstreamServer,
    onMessage: (c: UdpConn, m: Buffer) => void,
    onError: (c: UdpConn) => void,
  ) {
    this.sock = dgram.createSocket(net.isIPv6(server.host) ? 'udp6' : 'udp4')
    this.sock.on('message', m => onMessage(this, m))
    // connected UDP sockets report ICMP port-unreachable as ECONNREFUSED: fail over at once instead of timing out
    this.sock.on('error', () => onError(this))
    this.sock.connect(server.port, server.host, () => {
      this.connected = true
      for (const b of this.queue.splice(0)) this.sock.send(b)
    })
    this.sock.unref()
  }

  send(b: Buffer): void {
    if (this.connected) this.sock.send(b)
    else this.queue.push(b)
  }

  close(): void {
    try {
      this.sock.close()
    } catch {
      // already closed
    }
  }
}

export class Upstream {
  readonly servers: readonly UpstreamServer[]
  readonly stats: UpstreamStats = {
    requests: 0,
    cacheHits: 0,
    cacheMisses: 0,
    coalesced: 0,
    latencySum: 0,
    latencyCount: 0,
    timeouts: 0,
    errors: 0,
    tcpFallbacks: 0,
    servfail: 0,
    overflow: 0,
  }
  /** client queries waiting on an upstream exchange now (bounded by maxPending) */
  pending = 0
  private readonly maxPending: number
  private readonly timeoutMs: number
  private readonly cacheCap: number
  private readonly maxTtl: number
  private readonly maxNegTtl: number
  private readonly ednsSize: number
  private readonly holdDownMs: number
  private readonly cache = new Map<string, CacheEntry>()
  private readonly flights = new Map<string, Flight>()
  private readonly conns: (UdpConn | undefined)[]
  private readonly downUntil: number[]
  private readonly sockets = new Set<net.Socket>()
  private readonly q = new Query()
  private closed = false

  constructor(opts: UpstreamOptions = {}) {
    let specs = opts.servers ?? []
    if (specs.length === 0) {
      try {
        specs = parseResolvConf(readFileSync(opts.resolvConf ?? '/etc/resolv.conf', 'utf8'))
      } catch {
        specs = []
      }
    }
    const exclude = new Set(opts.exclude ?? [])
    this.servers = specs.map(parseServer).filter(s => !exclude.has(s.host))
    this.timeoutMs = opts.timeoutMs ?? 2000
    this.cacheCap = opts.cacheSize ?? 10000
    this.maxTtl = opts.maxTtl ?? 3600
    this.maxNegTtl = opts.maxNegativeTtl ?? 1800
    this.ednsSize = opts.ednsSize ?? 1232
    this.holdDownMs = opts.holdDownMs ?? 5000
    this.maxPending = opts.maxPending ?? 1000
    this.conns = this.servers.map(() => undefined)
    this.downUntil = this.servers.map(() => 0)
  }

  get cacheSize(): number {
    return this.cache.size
  }

  clearCache(): void {
    this.cache.clear()
  }

  /**
   * Resolve `query` (a client's wire query) upstream and call `cb` once with the reply for that client, or never when
   * the query is not worth an answer (a response, shorter than a header). transport 0 = UDP (reply fitted to the
   * client's payload size), 1 = TCP.
   */
  forward(query: Uint8Array, cb: (answer: Buffer) => void, transport: 0 | 1 = 0): void {
    const q = this.q
    const v = parseQuery(query, 0, query.length, q)
    if (v !== Verdict.OK) {
      if (v === Verdict.DROP_SHORT || v === Verdict.DROP_RESPONSE) return
      const out = Buffer.allocUnsafe(DNS_HEADER_LEN)
      const n = writeBareResponse(query, 0, q, out, 0, out.length, v === Verdict.NOTIMP_OPCODE ? Rcode.NOTIMP : Rcode.FORMERR, false, this.ednsSize)
      cb(out.subarray(0, n))
      return
    }
    this.stats.requests++
    const w: Waiter = {
      id: q.id,
      flags: q.flags,
      question: Buffer.from(query.subarray(DNS_HEADER_LEN, q.questionEnd)),
      edns: q.edns,
      ednsSize: q.ednsSize,
      ednsDo: q.ednsDo,
      transport,
      cb,
    }
    const cd = (q.flags & DnsFlag.CD) !== 0
    const key = `${Buffer.from(q.name.subarray(0, q.nameLen)).toString('latin1')}/${q.qtype}/${q.qclass}/${q.ednsDo ? 1 : 0}${cd ? 1 : 0}`
    const now = Date.now()
    const hit = this.cache.get(key)
    if (hit !== undefined) {
      if (hit.expiresAt > now) {
        this.cache.delete(key)
        this.cache.set(key, hit)
        this.stats.cacheHits++
        cb(this.reply(w, hit, now))
        return
      }
      this.cache.delete(key)
    }
    this.stats.cacheMisses++
    if (this.servers.length === 0 || this.closed) {
      this.stats.servfail++
      cb(servfail(w, this.ednsSize))
      return
    }
    if (this.pending >= this.maxPending) {
      this.stats.overflow++
      return
    }
    this.pending++
    const flying = this.flights.get(key)
    if (flying !== undefined) {
      this.stats.coalesced++
      flying.waiters.push(w)
      return
    }
    // our upstream query: the client's question, RD, the client's CD, EDNS with the client's DO bit
    const wire = Buffer.alloc(DNS_HEADER_LEN + w.question.length + OPT_RR_LEN)
    writeHeader(wire, 0, 0, DnsFlag.RD | (cd ? DnsFlag.CD : 0), 1, 0, 0, 1)
    w.question.copy(wire, DNS_HEADER_LEN)
    writeOpt(wire, DNS_HEADER_LEN + w.question.length, this.ednsSize, 0, q.ednsDo)
    const f: Flight = {
      key,
      waiters: [w],
      wire,
      qname: Buffer.from(q.name.subarray(0, q.nameLen)),
      qtype: q.qtype,
      qclass: q.qclass,
      tried: new Set(),
      attempt: 0,
      started: now,
      id: 0,
      server: -1,
      done: false,
    }
    this.flights.set(key, f)
    this.next(f)
  }

  /** Stop: fail what is in flight with SERVFAIL, close sockets. */
  close(): void {
    this.closed = true
    for (const f of [...this.flights.values()]) this.fail(f)
    for (const c of this.conns) c?.close()
    for (const s of this.sockets) s.destroy()
  }

  // ---- exchanges ------------------------------------------------------------------------------------------------

  /** Send to the best server not yet tried for this flight, or give up with SERVFAIL. */
  private next(f: Flight): void {
    if (f.done) return
    const now = Date.now()
    let pick = -1
    for (let pass = 0; pass < 2 && pick < 0; pass++) {
      for (let i = 0; i < this.servers.length; i++) {
        if (f.tried.has(i)) continue
        if (pass === 0 && this.downUntil[i]! > now) continue
        pick = i
        break
      }
    }
    if (pick < 0 || this.closed) {
      this.fail(f)
      return
    }
    f.tried.add(pick)
    f.server = pick
    f.attempt++
    f.started = now
    const conn = this.conn(pick)
    let id = randomInt(0, 65536)
    while (conn.pending.has(id)) id = (id + 1) & 0xffff
    f.id = id
    put16(f.wire, 0, id)
    conn.pending.set(id, f)
    f.timer = setTimeout(() => {
      if (conn.pending.get(id) !== f) return
      conn.pending.delete(id)
      this.stats.timeouts++
      this.downUntil[pick] = Date.now() + this.holdDownMs
      this.next(f)
    }, this.timeoutMs)
    f.timer.unref()
    conn.send(Buffer.from(f.wire))
  }

  private conn(i: number): UdpConn {
    let c = this.conns[i]
    if (c === undefined) {
      c = new UdpConn(
        this.servers[i]!,
        (cc, m) => this.onUdp(cc, m),
        cc => this.onUdpError(cc, i),
      )
      this.conns[i] = c
    }
    return c
  }

  private onUdpError(c: UdpConn, i: number): void {
    this.stats.errors++
    this.downUntil[i] = Date.now() + this.holdDownMs
    // a socket that never connected (no route, bad address) is rebuilt on next use; a connected one stays
    if (!c.connected && this.conns[i] === c) {
      this.conns[i] = undefined
      c.close()
    }
    const failed = [...c.pending.values()]
    c.pending.clear()
    for (const f of failed) {
      clearTimeout(f.timer)
      this.next(f)
    }
  }

  private onUdp(c: UdpConn, m: Buffer): void {
    if (m.length < DNS_HEADER_LEN) return
    const f = c.pending.get(m.readUInt16BE(0))
    if (f === undefined || !matchesQuestion(m, f)) return
    c.pending.delete(f.id)
    clearTimeout(f.timer)
    if (m[2]! & (DnsFlag.TC >>> 8)) {
      this.stats.tcpFallbacks++
      this.tcp(this.servers[f.server]!, f, full => this.onAnswer(f, full ?? m))
      return
    }
    this.onAnswer(f, m)
  }

  /** One length-framed exchange over a fresh TCP connection; cb(null) on any failure. */
  private tcp(server: UpstreamServer, f: Flight, cb: (answer: Buffer | null) => void): void {
    let done = false
    let acc = Buffer.alloc(0)
    const s = net.connect({ host: server.host, port: server.port })
    this.sockets.add(s)
    const finish = (b: Buffer | null): void => {
      if (done) return
      done = true
      s.destroy()
      this.sockets.delete(s)
      cb(b)
    }
    s.setTimeout(this.timeoutMs, () => finish(null))
    s.on('error', () => finish(null))
    s.on('close', () => finish(null))
    s.on('connect', () => {
      const frame = Buffer.alloc(2 + f.wire.length)
      frame.writeUInt16BE(f.wire.length, 0)
      f.wire.copy(frame, 2)
      s.write(frame)
    })
    s.on('data', chunk => {
      acc = Buffer.concat([acc, chunk])
      if (acc.length < 2) return
      const len = acc.readUInt16BE(0)
      if (acc.length < 2 + len) return
      const m = acc.subarray(2, 2 + len)
      finish(m.length >= DNS_HEADER_LEN && m.readUInt16BE(0) === f.id && matchesQuestion(m, f) ? Buffer.from(m) : null)
    })
  }

  private onAnswer(f: Flight, m: Buffer): void {
    if (f.done) return
    const rcode = m[3]! & 0x0f
    const entry = parseAnswer(m, f, this.maxTtl, this.maxNegTtl)
    if (entry === null || ((rcode === Rcode.SERVFAIL || rcode === Rcode.REFUSED) && f.tried.size < this.servers.length)) {
      // unusable, or this server would not help: another server may
      if (entry === null) this.stats.errors++
      this.next(f)
      return
    }
    this.stats.latencySum += (Date.now() - f.started) / 1000
    this.stats.latencyCount++
    this.downUntil[f.server] = 0
    f.done = true
    this.flights.delete(f.key)
    this.pending -= f.waiters.length
    const truncated = (m[2]! & (DnsFlag.TC >>> 8)) !== 0
    if (!truncated && entry.expiresAt > entry.storedAt) {
      this.cache.set(f.key, entry)
      while (this.cache.size > this.cacheCap) {
        const oldest = this.cache.keys().next()
        if (oldest.done === true) break
        this.cache.delete(oldest.value)
      }
    }
    const now = Date.now()
    for (const w of f.waiters) {
      const r = this.reply(w, entry, now)
      if (truncated && w.transport === 0) r[2] = r[2]! | (DnsFlag.TC >>> 8)
      w.cb(r)
    }
  }

  private fail(f: Flight): void {
    if (f.done) return
    f.done = true
    clearTimeout(f.timer)
    this.flights.delete(f.key)
    this.pending -= f.waiters.length
    for (const w of f.waiters) {
      this.stats.servfail++
      w.cb(servfail(w, this.ednsSize))
    }
  }

  /** A client's reply from an answer: its ID, flags and question; TTLs aged; fitted to what it may receive. */
  private reply(w: Waiter, e: CacheEntry, now: number): Buffer {
    const limit = w.transport === 1 ? DNS_MAX_TCP : udpLimit(w.edns, w.ednsSize, this.ednsSize)
    const opt = w.edns ? OPT_RR_LEN : 0
    const head = DNS_HEADER_LEN + w.question.length
    let bodyLen = e.body.length
    let an = e.an
    let ns = e.ns
    let ar = e.ar
    let tc = false
    if (head + bodyLen + opt > limit) {
      if (head + e.arStart + opt <= limit) {
        bodyLen = e.arStart
        ar = 0
      } else {
        bodyLen = 0
        an = ns = ar = 0
        tc = true
      }
    }
    const out = Buffer.allocUnsafe(head + bodyLen + opt)
    const ad = e.ad && (w.ednsDo || (w.flags & DnsFlag.AD) !== 0)
    const flags = DnsFlag.QR | (w.flags & (DnsFlag.RD | DnsFlag.CD)) | DnsFlag.RA | (ad ? DnsFlag.AD : 0) | (tc ? DnsFlag.TC : 0) | (e.rcode & 0x0f)
    writeHeader(out, 0, w.id, flags, 1, an, ns, ar + (opt ? 1 : 0))
    w.question.copy(out, DNS_HEADER_LEN)
    e.body.copy(out, head, 0, bodyLen)
    const age = Math.floor((now - e.storedAt) / 1000)
    if (age > 0) {
      for (const t of e.ttlOffsets) {
        if (t + 4 > bodyLen) break
        const ttl = e.body.readUInt32BE(t)
        put32(out, head + t, ttl > age ? ttl - age : 0)
      }
    }
    if (opt) writeOpt(out, head + bodyLen, this.ednsSize, e.rcode, w.ednsDo)
    return out
  }
}

function servfail(w: Waiter, ednsSize: number): Buffer {
  const opt = w.edns ? OPT_RR_LEN : 0
  const out = Buffer.allocUnsafe(DNS_HEADER_LEN + w.question.length + opt)
  const flags = DnsFlag.QR | (w.flags & (DnsFlag.RD | DnsFlag.CD)) | DnsFlag.RA | Rcode.SERVFAIL
  writeHeader(out, 0, w.id, flags, 1, 0, 0, opt ? 1 : 0)
  w.question.copy(out, DNS_HEADER_LEN)
  if (opt) writeOpt(out, DNS_HEADER_LEN + w.question.length, ednsSize, Rcode.SERVFAIL, w.ednsDo)
  return out
}

/** The answer's question is ours: one question, same name (case-insensitive), type and class. */
function matchesQuestion(m: Buffer, f: Flight): boolean {
  if (!(m[2]! & 0x80) || m.readUInt16BE(4) !== 1) return false
  let p = DNS_HEADER_LEN
  const n = f.qname
  if (p + n.length + 4 > m.length) return false
  for (let i = 0; i < n.length; i++) {
    let c = m[p + i]!
    if (c >= 0x41 && c <= 0x5a) c |= 0x20
    if (c !== n[i]) return false
  }
  p += n.length
  return m.readUInt16BE(p) === f.qtype && m.readUInt16BE(p + 2) === f.qclass
}

/**
 * Index an upstream answer for re-serving, or null when it is malformed. The OPT RR is cut out; when it is not the
 * last record, later names could point past it, so the message is re-encoded without it instead.
 */
function parseAnswer(m: Buffer, f: Flight, maxTtl: number, maxNegTtl: number): CacheEntry | null {
  const bodyStart = DNS_HEADER_LEN + f.qname.length + 4
  const an = m.readUInt16BE(6)
  const ns = m.readUInt16BE(8)
  const ar = m.readUInt16BE(10)
  const rcode = m[3]! & 0x0f
  const ttlOffsets: number[] = []
  let p = bodyStart
  let minAnswerTtl = Infinity
  let negTtl = -1
  let optStart = -1
  let optEnd = -1
  let arStart = -1
  let arCount = 0
  for (let i = 0; i < an + ns + ar; i++) {
    if (i === an + ns) arStart = p
    const start = p
    p = skipName(m, p, m.length)
    if (p < 0 || p + 10 > m.length) return null
    const type = m.readUInt16BE(p)
    const ttl = m.readUInt32BE(p + 4)
    const rdlen = m.readUInt16BE(p + 8)
    const end = p + 10 + rdlen
    if (end > m.length) return null
    if (type === QType.OPT) {
      if (i < an + ns || optStart >= 0) return null
      optStart = start
      optEnd = end
    } else {
      ttlOffsets.push(p + 4)
      if (i < an) minAnswerTtl = Math.min(minAnswerTtl, ttl)
      else if (i < an + ns && type === QType.SOA && rdlen >= 20) negTtl = Math.min(ttl, m.readUInt32BE(end - 4))
      if (i >= an + ns) arCount++
    }
    p = end
  }
  if (arStart < 0) arStart = p
  if (optStart >= 0 && optEnd !== p) {
    try {
      const d = dnsPacket.decode(m)
      d.additionals = (d.additionals ?? []).filter(a => a.type !== 'OPT')
      const re = dnsPacket.encode({ ...d, type: 'response' })
      re.writeUInt16BE(m.readUInt16BE(2), 2)
      return parseAnswer(re, f, maxTtl, maxNegTtl)
    } catch {
      return null
    }
  }
  const bodyEnd = optStart >= 0 ? optStart : p
  const body = Buffer.from(m.subarray(bodyStart, bodyEnd))
  const now = Date.now()
  let ttl = 0
  if (rcode === Rcode.NOERROR && an > 0) ttl = Math.min(minAnswerTtl, maxTtl)
  else if ((rcode === Rcode.NOERROR || rcode === Rcode.NXDOMAIN) && negTtl >= 0) ttl = Math.min(negTtl, maxNegTtl)
  return {
    rcode,
    ad: (m[3]! & DnsFlag.AD) !== 0,
    an,
    ns,
    ar: arCount,
    body,
    arStart: arStart - bodyStart,
    ttlOffsets: ttlOffsets.map(o => o - bodyStart),
    storedAt: now,
    expiresAt: now + ttl * 1000,
  }
}
