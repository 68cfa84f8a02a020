// The cluster DNS server: answers cluster names in the packet path from an installed zone image (install(): a full
// image in O(1), a delta in O(change); compiled elsewhere by ZoneCompiler), forwards everything else upstream, and
// offers kernel-socket front ends (UDP, TCP) for use where in-path answering is not possible and for tests. The UDP
// front end reads and answers in batches (device/udp.ts: recvmmsg, one call per batch, one sendmmsg of its answers).
//
// answerInPlace() is the contract with the dataplane:
//   > 0  bytes of reply written at out[outOff..] (the caller swaps IP/UDP headers and sends it back)
//   0    drop silently (not a query, shorter than a header, or no room for even a header)
//   -1   not ours: hand a copy of the query to forward() and send what its callback gets

import { lookup } from 'node:dns/promises'
import * as net from 'node:net'
import type { AddressInfo } from 'node:net'
import dnsPacket from 'dns-packet'
import { BatchUdpSocket, UDP_PEER_BYTES } from '../device/udp'
import type { Cluster } from '../model/cluster'
import { AUTOPATH, EXTERNAL, NOT_OURS, Responder } from './answer'
import {
  DNS_HEADER_LEN,
  DNS_MAX_TCP,
  DnsFlag,
  QCLASS_IN,
  QType,
  QTypeName,
  Query,
  Rcode,
  RcodeName,
  Verdict,
  VerdictName,
  parseQuery,
  replyLimit,
  udpLimit,
  writeBareResponse,
} from './message'
import { Upstream, type UpstreamStats } from './upstream'
import { ZoneCompiler, type FullZoneImage, type ZoneImage, type ZoneOptions } from './image'
import { InstalledZone } from './installed'

export const Transport = { UDP: 0, TCP: 1 } as const
export type Transport = (typeof Transport)[keyof typeof Transport]

export interface DnsServerOptions extends ZoneOptions {
  /** upstream resolvers ("1.1.1.1", "10.0.0.2:53", "[2001:db8::1]:53"); when absent, read resolvConf */
  readonly upstream?: readonly string[]
  /** default /etc/resolv.conf */
  readonly resolvConf?: string
  readonly upstreamTimeoutMs?: number
  readonly cacheSize?: number
  /** UDP payload size advertised in our OPT records; default 1232 (DNS flag day 2020) */
  readonly ednsSize?: number
  /** CoreDNS-autopath-style search-path shortcut for `<name>.<ns>.svc.<zone>` misses; default off */
  readonly autopath?: boolean
  /** a TCP connection that completes no query for this long is closed (trickled bytes do not count); default 10 s */
  readonly tcpIdleMs?: number
  /** TCP connections open at once; more are closed at accept and counted (tcpRejected); default 128 */
  readonly maxTcpConnections?: number
  /** client queries waiting on upstream at once; more are dropped and counted; default 1000 */
  readonly maxPending?: number
}

export interface DnsMetrics {
  /** by qtype name (TYPEn for others) */
  readonly queries: Record<string, number>
  /** by rcode name, for every reply sent, forwarded ones included */
  readonly responses: Record<string, number>
  /** UDP socket front end: replies the kernel did not take (socket buffer full, send error); not retried */
  readonly udpSendDropped: number
  /** malformed queries by reason: drops (short, response) and FORMERR/NOTIMP replies */
  readonly malformed: Record<string, number>
  readonly truncated: number
  readonly forwarded: number
  readonly autopath: number
  readonly upstream: Readonly<UpstreamStats> & { readonly cacheSize: number }
  /** every query that parsed, answered here or forwarded (coredns_dns_requests_total) */
  readonly requests: number
  /**
   * time to answer, as CoreDNS's coredns_dns_request_duration_seconds: `counts[i]` answers took at most `bounds[i]`
   * seconds and more than the bound before it (not cumulative), the last slot is +Inf. Answers written in the packet
   * path are observed as 0 (answered within their batch; no clock read per packet); forwarded ones from forward() to
   * the reply.
   */
  readonly duration: { readonly bounds: readonly number[]; readonly counts: readonly number[]; readonly sum: number; readonly count: number }
  /** TCP front end: connections refused at the cap, and closed idle (or not reading) */
  readonly tcp: { readonly open: number; readonly rejected: number; readonly closedIdle: number }
  readonly zone: { readonly names: number; readonly serial: number; readonly compileErrors: number }
}

const QTYPE_SLOTS = 257
/** CoreDNS's plugin.TimeBuckets: ExponentialBuckets(0.00025, 2, 16), 0.25 ms to 8.192 s */
const DNS_DURATION_BUCKETS: readonly number[] = Array.from({ length: 16 }, (_, i) => 0.00025 * 2 ** i)
/** reply bytes queued to one TCP client before it counts as not reading (four largest replies) */
const TCP_MAX_BACKLOG = 4 * (DNS_MAX_TCP + 2)
/** UDP socket front end: datagrams per recvmmsg (and replies per sendmmsg) */
const UDP_BATCH = 64
/** UDP socket front end: bytes per query slot; a longer query is dropped and counted (malformed: truncated) */
const UDP_SLOT_BYTES = 4096

/** Counters as typed arrays: bumping one on the fast path is a single indexed add. */
export class DnsStats {
  readonly queries = new Float64Array(QTYPE_SLOTS)
  readonly responses = new Float64Array(32)
  readonly malformed = new Float64Array(VerdictName.length)
  truncated = 0
  forwarded = 0
  autopath = 0
  /** TCP connections closed at accept because maxTcpConnections were open */
  tcpRejected = 0
  /** TCP connections closed for completing no query within tcpIdleMs, or for not reading their replies */
  tcpClosedIdle = 0
  /** compile problems (objects skipped) in the installed zone */
  compileErrors = 0
  /** UDP socket front end: replies the kernel did not take (socket buffer full or a send error) */
  udpSendDropped = 0
  requests = 0
  /** per DNS_DURATION_BUCKETS bound, then +Inf; fixed counters, nothing allocated per query */
  readonly durationCounts = new Float64Array(DNS_DURATION_BUCKETS.length + 1)
  durationSum = 0

  /** One answer that took `seconds`. */
  observe(seconds: number): void {
    let i = 0
    while (i < DNS_DURATION_BUCKETS.length && seconds > DNS_DURATION_BUCKETS[i]!) i++
    this.durationCounts[i]!++
    this.durationSum += seconds
  }

  countReply(reply: Uint8Array, off: number, n: number): void {
    if (n < DNS_HEADER_LEN) return
    this.responses[reply[off + 3]! & 0x0f]!++
    if (reply[off + 2]! & (DnsFlag.TC >>> 8)) this.truncated++
  }
}

export class DnsServer {
  readonly stats = new DnsStats()
  readonly upstream: Upstream
  private readonly current = new InstalledZone()
  private readonly opts: DnsServerOptions
  private readonly q = new Query()
  private readonly responder: Responder
  private readonly ednsSize: number
  private readonly scratch = new Uint8Array(DNS_MAX_TCP)
  private readonly udpOut = Buffer.alloc(DNS_MAX_TCP)
  /** UDP socket front end: one batch's replies, then one send; where each is, and which query (peer) it answers */
  private readonly udpReplies: Buffer
  private readonly udpReplyOffs = new Uint32Array(UDP_BATCH)
  private readonly udpReplyLens = new Uint32Array(UDP_BATCH)
  private readonly udpReplyPeer = new Uint32Array(UDP_BATCH)
  /** a forwarded query's answer, sent alone: offset 0, its length, peer 0 (of the peer copied out of the batch) */
  private readonly udpOneOff = new Uint32Array(1)
  private readonly udpOneLen = new Uint32Array(1)
  private readonly udpOnePeer = new Uint32Array(1)
  /** the largest UDP reply answerInPlace writes: a batch is sent early when less room than this is left */
  private readonly udpReplyMax: number
  private readonly tcpOut = Buffer.alloc(DNS_MAX_TCP + 2)
  private readonly udpSockets = new Set<BatchUdpSocket>()
  private readonly tcpServers = new Set<net.Server>()
  private readonly tcpConns = new Set<net.Socket>()
  private readonly autopathOn: boolean

  constructor(opts: DnsServerOptions = {}) {
    this.opts = opts
    this.ednsSize = opts.ednsSize ?? 1232
    this.responder = new Responder(this.ednsSize)
    this.udpReplyMax = udpLimit(true, DNS_MAX_TCP, this.ednsSize)
    this.udpReplies = Buffer.allocUnsafe(Math.max(this.udpReplyMax, Math.min(UDP_BATCH * this.udpReplyMax, 256 << 10)))
    this.autopathOn = opts.autopath ?? false
    this.install(new ZoneCompiler(opts).full({ services: [], nodes: [], pods: [] }))
    const dnsIPs = typeof opts.dnsIP === 'string' ? [opts.dnsIP] : [...(opts.dnsIP ?? ['10.96.0.10'])]
    this.upstream = new Upstream({
      ...(opts.upstream !== undefined ? { servers: opts.upstream } : {}),
      ...(opts.resolvConf !== undefined ? { resolvConf: opts.resolvConf } : {}),
      ...(opts.upstreamTimeoutMs !== undefined ? { timeoutMs: opts.upstreamTimeoutMs } : {}),
      ...(opts.cacheSize !== undefined ? { cacheSize: opts.cacheSize } : {}),
      ...(opts.maxPending !== undefined ? { maxPending: opts.maxPending } : {}),
      ednsSize: this.ednsSize,
      exclude: dnsIPs,
    })
  }

  /** The zone answering right now (origin, ttl, serial, size). */
  get zone(): InstalledZone {
    return this.current
  }

  /**
   * Install a zone image made by a ZoneCompiler (on the control thread): a full image wraps its buffers, a delta
   * rewrites the slots it names. A delta that does not fit the installed zone throws ZoneImageError and changes
   * nothing (send a full image: ZoneCompiler.snapshot()).
   */
  install(img: ZoneImage): void {
    this.current.install(img)
    this.stats.compileErrors = img.problems
  }

  /**
   * Convenience for tests and tools: compile a whole snapshot here and install it (the agent compiles on its control
   * thread instead). On a compile error the old zone stays live and the error propagates. The SOA serial only grows.
   */
  setCluster(cluster: Cluster): FullZoneImage {
    const img = new ZoneCompiler(this.opts).full(cluster, this.current.serial + 1)
    this.install(img)
    return img
  }

  /** See the file comment. transport: 0 = UDP (reply fitted to 512 or the client's EDNS size), 1 = TCP. */
  answerInPlace(buf: Uint8Array, off: number, len: number, out: Uint8Array, outOff: number, outMax: number, transport: number): number {
    const n = this.answerInternal(buf, off, len, out, outOff, outMax, transport, true, this.autopathOn)
    return n < 0 ? NOT_OURS : n
  }

  /**
   * Bytes written, 0 (drop), or why it is not answered here: NOT_OURS (upstream), AUTOPATH (walk the search path) or
   * EXTERNAL (complete the CNAME chain upstream; the target is responder.external). `external`: a chain leaving the
   * zone returns EXTERNAL instead of the in-zone part.
   */
  private answerInternal(
    buf: Uint8Array,
    off: number,
    len: number,
    out: Uint8Array,
    outOff: number,
    outMax: number,
    transport: number,
    count: boolean,
    autopath: boolean,
    external = true,
  ): number {
    const q = this.q
    const stats = this.stats
    const v = parseQuery(buf, off, len, q)
    if (v !== Verdict.OK) {
      if (count) stats.malformed[v]!++
      if (v === Verdict.DROP_SHORT || v === Verdict.DROP_RESPONSE) return 0
      const rcode = v === Verdict.NOTIMP_OPCODE ? Rcode.NOTIMP : Rcode.FORMERR
      const n = writeBareResponse(buf, off, q, out, outOff, outMax, rcode, false, this.ednsSize)
      if (count) stats.countReply(out, outOff, n)
      return n
    }
    if (count) {
      stats.queries[q.qtype < QTYPE_SLOTS - 1 ? q.qtype : QTYPE_SLOTS - 1]!++
      stats.requests++
    }
    const limit = replyLimit(q, transport, outMax, this.ednsSize)
    let n: number
    if (q.edns && q.ednsVersion > 0) {
      n = writeBareResponse(buf, off, q, out, outOff, limit, Rcode.BADVERS, true, this.ednsSize)
    } else if (q.qtype === QType.AXFR || q.qtype === QType.IXFR) {
      // no zone transfers (CoreDNS without the transfer plugin)
      n = writeBareResponse(buf, off, q, out, outOff, limit, Rcode.REFUSED, true, this.ednsSize)
    } else if (q.qclass !== QCLASS_IN) {
      // CHAOS (version.bind, hostname.bind, id.server), HESIOD, ANY: refused here, never forwarded, so a pod cannot
      // learn the upstream's software or version through us (CoreDNS answers CH only with the chaos plugin)
      n = writeBareResponse(buf, off, q, out, outOff, limit, Rcode.REFUSED, true, this.ednsSize)
    } else {
      n = this.responder.answer(this.current, q, buf, off, out, outOff, limit, autopath, external)
      if (n < 0) {
        if (count) stats.forwarded++
        return n
      }
    }
    if (count) {
      if (q.edns && q.ednsVersion > 0 && n > 0) stats.responses[Rcode.BADVERS]!++
      else stats.countReply(out, outOff, n)
      if (n > 0) stats.durationCounts[0]!++
    }
    return n
  }

  /**
   * Resolve a query answerInPlace() returned -1 for (a copy: the callback runs later). The callback gets the reply
   * with the client's ID, fitted to the transport; it is not called for queries that deserve no reply.
   */
  forward(query: Uint8Array, cb: (answer: Buffer) => void, transport: number = Transport.UDP): void {
    const n = this.answerInternal(query, 0, query.length, this.scratch, 0, this.scratch.length, transport, false, this.autopathOn)
    if (n > 0) {
      cb(Buffer.from(this.scratch.subarray(0, n)))
      return
    }
    if (n === 0) return
    const t = transport === Transport.TCP ? 1 : 0
    const started = performance.now()
    const done = (answer: Buffer): void => {
      this.stats.countReply(answer, 0, answer.length)
      this.stats.observe((performance.now() - started) / 1000)
      cb(answer)
    }
    if (n === AUTOPATH) this.autopath(query, done, t)
    else if (n === EXTERNAL) this.chaseExternal(query, this.responder.external, done, t)
    else this.upstream.forward(query, done, t)
  }

  /**
   * A CNAME chain that leaves the zone (an ExternalName service): the in-zone part from the zone, then the target's
   * records from upstream, in one reply, as CoreDNS's kubernetes plugin answers (stub resolvers such as glibc's do not
   * chase a CNAME themselves). The rcode is the target's (RFC 6604); when upstream fails, the in-zone part alone.
   */
  private chaseExternal(query: Uint8Array, target: string, cb: (answer: Buffer) => void, transport: 0 | 1): void {
    const n = this.answerInternal(query, 0, query.length, this.scratch, 0, this.scratch.length, Transport.TCP, false, false, false)
    if (n <= 0) return
    let pkt: dnsPacket.DecodedPacket
    let own: dnsPacket.DecodedPacket
    let wire: Buffer
    try {
      own = dnsPacket.decode(Buffer.from(this.scratch.subarray(0, n)))
      pkt = dnsPacket.decode(Buffer.from(query))
      const type = pkt.questions?.[0]?.type
      if (type === undefined) return
      wire = dnsPacket.encode({ type: 'query', id: 0, flags: DnsFlag.RD, questions: [{ name: target, type, class: 'IN' }] })
    } catch {
      this.upstream.forward(query, cb, transport)
      return
    }
    const question = pkt.questions![0]!
    this.upstream.forward(
      wire,
      answer => {
        let up: (dnsPacket.DecodedPacket & { rcode?: string }) | undefined
        try {
          up = dnsPacket.decode(answer)
        } catch {
          up = undefined
        }
        const ok = up !== undefined && (up.rcode === 'NOERROR' || up.rcode === 'NXDOMAIN')
        const upAnswers = ok ? (up!.answers ?? []) : []
        cb(
          this.encodeReply(
            pkt,
            question,
            {
              answers: [...(own.answers ?? []), ...upAnswers],
              authorities: ok && upAnswers.length === 0 ? (up!.authorities ?? []) : (own.authorities ?? []),
              rcode: ok && up!.rcode === 'NXDOMAIN' ? Rcode.NXDOMAIN : Rcode.NOERROR,
              aa: true,
            },
            transport,
          ),
        )
      },
      Transport.TCP,
    )
  }

  /** Our OPT record for a reply to a query that carried `optIn` (none when it carried none), as RFC 6891 asks. */
  private optAnswer(optIn: dnsPacket.OptAnswer | undefined): dnsPacket.Answer[] {
    if (optIn === undefined) return []
    return [
      {
        name: '.',
        type: 'OPT',
        udpPayloadSize: this.ednsSize,
        extendedRcode: 0,
        ednsVersion: 0,
        flags: optIn.flags & 0x8000,
        flag_do: optIn.flag_do,
        options: [],
      },
    ]
  }

  /** A reply to `pkt` built with dns-packet (slow paths only), fitted to the transport: too big for UDP sets TC. */
  private encodeReply(
    pkt: dnsPacket.DecodedPacket,
    question: dnsPacket.Question,
    r: { answers: dnsPacket.Answer[]; authorities: dnsPacket.Answer[]; rcode: number; aa: boolean },
    transport: 0 | 1,
  ): Buffer {
    const optIn = (pkt.additionals ?? []).find(a => a.type === 'OPT') as dnsPacket.OptAnswer | undefined
    const reply: dnsPacket.Packet = {
      type: 'response',
      id: pkt.id ?? 0,
      flags: ((pkt.flags ?? 0) & (DnsFlag.RD | DnsFlag.CD)) | DnsFlag.RA | (r.aa ? DnsFlag.AA : 0) | r.rcode,
      questions: [question],
      answers: r.answers,
      authorities: r.authorities,
      additionals: this.optAnswer(optIn),
    }
    let wire = dnsPacket.encode(reply)
    const limit = transport === 1 ? DNS_MAX_TCP : udpLimit(optIn !== undefined, optIn?.udpPayloadSize ?? 0, this.ednsSize)
    if (wire.length > limit) wire = dnsPacket.encode({ ...reply, flags: (reply.flags ?? 0) | DnsFlag.TC, answers: [], authorities: [] })
    return wire
  }

  /** answerInPlace, then forward() when it is not ours: what the socket front ends do with each query. */
  handle(query: Buffer, transport: number, cb: (answer: Buffer) => void): void {
    const out = transport === Transport.TCP ? this.tcpOut : this.udpOut
    const n = this.answerInPlace(query, 0, query.length, out, 0, DNS_MAX_TCP, transport)
    if (n > 0) cb(Buffer.from(out.subarray(0, n)))
    else if (n < 0) this.forward(query, cb, transport)
  }

  // ---- autopath ---------------------------------------------------------------------------------------------------

  /**
   * `<x>.<ns>.svc.<zone>` does not exist: walk the rest of a pod's search path here instead of making the client do
   * it (CoreDNS autopath), answering with a CNAME from the asked name to the first name that has records. Assumes the
   * client lives in <ns>, the first search domain; a miss everywhere is the original NXDOMAIN.
   */
  private autopath(query: Uint8Array, cb: (answer: Buffer) => void, transport: 0 | 1): void {
    this.stats.autopath++
    const zone = this.current
    let pkt: dnsPacket.DecodedPacket
    try {
      pkt = dnsPacket.decode(Buffer.from(query))
    } catch {
      this.upstream.forward(query, cb, transport)
      return
    }
    const question = pkt.questions?.[0]
    if (question === undefined) return
    const labels = question.name.replace(/\.$/, '').split('.')
    const base = labels.slice(0, labels.length - zone.originLabels - 2).join('.')
    const qtype = question.type
    const qt = QTYPE_BY_NAME[qtype] ?? 0
    const respond = (target: string | null, answers: dnsPacket.Answer[]): void => {
      if (target === null) {
        // nothing matched: the NXDOMAIN the zone gives for the asked name
        const n = this.answerInternal(query, 0, query.length, this.scratch, 0, this.scratch.length, transport, false, false, false)
        if (n > 0) cb(Buffer.from(this.scratch.subarray(0, n)))
        return
      }
      const cname: dnsPacket.Answer = { name: question.name, type: 'CNAME', ttl: zone.ttl, data: target }
      const optIn = (pkt.additionals ?? []).find(a => a.type === 'OPT') as dnsPacket.OptAnswer | undefined
      const reply: dnsPacket.Packet = {
        type: 'response',
        id: pkt.id ?? 0,
        flags: ((pkt.flags ?? 0) & (DnsFlag.RD | DnsFlag.CD)) | DnsFlag.RA,
        questions: [question],
        answers: [cname, ...answers],
        additionals: this.optAnswer(optIn),
      }
      let wire = dnsPacket.encode(reply)
      const limit = transport === 1 ? DNS_MAX_TCP : udpLimit(optIn !== undefined, optIn?.udpPayloadSize ?? 0, this.ednsSize)
      if (wire.length > limit) wire = dnsPacket.encode({ ...reply, flags: (reply.flags ?? 0) | DnsFlag.TC, answers: [] })
      cb(wire)
    }
    // in-zone candidates first, answered synchronously from the zone. An address name without this family counts as
    // found (CNAME + NODATA), so parallel A and AAAA lookups agree on the name.
    const other = qtype === 'A' ? 'AAAA' : qtype === 'AAAA' ? 'A' : undefined
    for (const cand of [`${base}.svc.${zone.origin}`, `${base}.${zone.origin}`]) {
      const sub = this.ask(cand, qtype, qt)
      if (sub === null || sub.rcode !== 'NOERROR') continue
      if ((sub.answers?.length ?? 0) > 0) {
        respond(cand, sub.answers ?? [])
        return
      }
      if (other !== undefined && (this.ask(cand, other, QTYPE_BY_NAME[other] ?? 0)?.answers?.length ?? 0) > 0) {
        respond(cand, [])
        return
      }
    }
    // then the bare name, upstream
    let wire: Buffer
    try {
      wire = dnsPacket.encode({ type: 'query', id: 0, flags: DnsFlag.RD, questions: [{ name: base, type: qtype }] })
    } catch {
      respond(null, [])
      return
    }
    this.forward(
      wire,
      answer => {
        let d: dnsPacket.DecodedPacket
        try {
          d = dnsPacket.decode(answer)
        } catch {
          respond(null, [])
          return
        }
        const rcode = (d as { rcode?: string }).rcode
        // NOERROR, even without answers: the bare name exists (CNAME + NODATA keeps A and AAAA consistent)
        if (rcode === 'NOERROR') respond(base, d.answers ?? [])
        else respond(null, [])
      },
      Transport.TCP,
    )
  }

  /** A synchronous in-zone lookup through the fast path, decoded; null when the name is not ours. */
  private ask(name: string, type: dnsPacket.RecordType, qt: number): (dnsPacket.DecodedPacket & { rcode?: string }) | null {
    if (qt === 0) return null
    let wire: Buffer
    try {
      wire = dnsPacket.encode({ type: 'query', id: 0, flags: 0, questions: [{ name, type }] })
    } catch {
      return null
    }
    const n = this.answerInternal(wire, 0, wire.length, this.scratch, 0, this.scratch.length, Transport.TCP, false, false, false)
    if (n <= 0) return null
    return dnsPacket.decode(Buffer.from(this.scratch.subarray(0, n)))
  }

  // ---- kernel-socket front ends -----------------------------------------------------------------------------------

  /**
   * Serve UDP on host:port (port 0: the kernel picks) and resolve with the bound address. Queries are read in batches
   * (one recvmmsg) and answered in place into one reply area, sent with one sendmmsg per batch; a query that is not
   * ours is copied out and forwarded, and its answer sent alone. Replies the kernel does not take are counted
   * (udpSendDropped), never retried.
   */
  async listenUdp(host: string, port: number): Promise<AddressInfo> {
    // a name is looked up as dgram's bind did (IPv4 unless it is an IPv6 literal)
    const address = net.isIP(host) !== 0 ? host : (await lookup(host, { family: 4 })).address
    const sock: BatchUdpSocket = new BatchUdpSocket(address, port, { maxDatagrams: UDP_BATCH, slotBytes: UDP_SLOT_BYTES }, count =>
      this.onUdpBatch(sock, count),
    )
    this.udpSockets.add(sock)
    return sock.address()
  }

  /** One batch read by a UDP socket: answers into udpReplies (sent together), forwards copy the query out. */
  private onUdpBatch(sock: BatchUdpSocket, count: number): void {
    const rx = sock.buf
    const lens = sock.lengths
    const slot = sock.slotBytes
    const out = this.udpReplies
    const offs = this.udpReplyOffs
    const rlens = this.udpReplyLens
    const peer = this.udpReplyPeer
    let at = 0
    let k = 0
    for (let i = 0; i < count; i++) {
      const len = lens[i]!
      const off = i * slot
      if (len > slot) {
        // longer than any query we take: cut short by the kernel, so nothing in it can be trusted
        this.stats.malformed[Verdict.FORMERR_TRUNCATED]!++
        continue
      }
      if (out.length - at < this.udpReplyMax) {
        this.udpSend(sock, out, k)
        at = 0
        k = 0
      }
      const n = this.answerInPlace(rx, off, len, out, at, out.length - at, Transport.UDP)
      if (n > 0) {
        offs[k] = at
        rlens[k] = n
        peer[k] = i
        k++
        at += n
      } else if (n < 0) {
        const query = Buffer.from(rx.subarray(off, off + len))
        const from = Buffer.from(sock.peers.subarray(i * UDP_PEER_BYTES, (i + 1) * UDP_PEER_BYTES))
        this.forward(query, answer => this.udpSendOne(sock, answer, from), Transport.UDP)
      }
    }
    if (k > 0) this.udpSend(sock, out, k)
  }

  /** The batch's first k replies, to the peers of the queries they answer. */
  private udpSend(sock: BatchUdpSocket, out: Buffer, k: number): void {
    const sent = sock.send(out, this.udpReplyOffs, this.udpReplyLens, sock.peers, this.udpReplyPeer, k)
    this.stats.udpSendDropped += k - sent
  }

  /** A forwarded query's answer (later, outside any batch), to the peer copied from the batch. */
  private udpSendOne(sock: BatchUdpSocket, answer: Buffer, peer: Uint8Array): void {
    if (sock.closed) return
    this.udpOneOff[0] = 0
    this.udpOneLen[0] = answer.length
    this.udpOnePeer[0] = 0
    this.stats.udpSendDropped += 1 - sock.send(answer, this.udpOneOff, this.udpOneLen, peer, this.udpOnePeer, 1)
  }

  listenTcp(host: string, port: number): Promise<AddressInfo> {
    const idle = this.opts.tcpIdleMs ?? 10_000
    const server = net.createServer(conn => {
      this.tcpConns.add(conn)
      conn.setNoDelay(true)
      // idle means no complete query: a client trickling a byte at a time cannot hold a connection slot
      const timer = setTimeout(() => {
        this.stats.tcpClosedIdle++
        conn.destroy()
      }, idle)
      timer.unref()
      conn.on('error', () => conn.destroy())
      conn.on('close', () => {
        clearTimeout(timer)
        this.tcpConns.delete(conn)
      })
      let acc: Buffer = Buffer.alloc(0)
      conn.on('data', (chunk: Buffer) => {
        acc = acc.length === 0 ? chunk : Buffer.concat([acc, chunk])
        while (acc.length >= 2) {
          const len = acc.readUInt16BE(0)
          if (acc.length < 2 + len) break
          const msg = Buffer.from(acc.subarray(2, 2 + len))
          acc = acc.subarray(2 + len)
          timer.refresh()
          this.handle(msg, Transport.TCP, answer => {
            if (conn.destroyed) return
            if (conn.writableLength > TCP_MAX_BACKLOG) {
              // the client asks and never reads: its replies would pile up here without bound
              this.stats.tcpClosedIdle++
              conn.destroy()
              return
            }
            const frame = Buffer.allocUnsafe(2 + answer.length)
            frame.writeUInt16BE(answer.length, 0)
            answer.copy(frame, 2)
            conn.write(frame)
          })
        }
      })
    })
    server.maxConnections = this.opts.maxTcpConnections ?? 128
    server.on('drop', () => {
      this.stats.tcpRejected++
    })
    this.tcpServers.add(server)
    return new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve(server.address() as AddressInfo)
      })
    })
  }

  /** Close the front ends and the upstream sockets. */
  async close(): Promise<void> {
    for (const s of this.udpSockets) s.close()
    this.udpSockets.clear()
    for (const c of this.tcpConns) c.destroy()
    const closing = [...this.tcpServers].map(s => new Promise<void>(r => s.close(() => r())))
    this.tcpServers.clear()
    this.upstream.close()
    await Promise.all(closing)
  }

  // ---- metrics ----------------------------------------------------------------------------------------------------

  metrics(): DnsMetrics {
    const s = this.stats
    const named = (arr: Float64Array, name: (i: number) => string): Record<string, number> => {
      const out: Record<string, number> = {}
      arr.forEach((v, i) => {
        if (v > 0) out[name(i)] = v
      })
      return out
    }
    return {
      queries: named(s.queries, i => (i === QTYPE_SLOTS - 1 ? 'OTHER' : (QTypeName[i] ?? `TYPE${i}`))),
      responses: named(s.responses, i => RcodeName[i] ?? `RCODE${i}`),
      udpSendDropped: s.udpSendDropped,
      malformed: named(s.malformed, i => VerdictName[i] ?? `verdict${i}`),
      truncated: s.truncated,
      forwarded: s.forwarded,
      autopath: s.autopath,
      upstream: { ...this.upstream.stats, cacheSize: this.upstream.cacheSize },
      requests: s.requests,
      duration: {
        bounds: DNS_DURATION_BUCKETS,
        counts: Array.from(s.durationCounts),
        sum: s.durationSum,
        count: s.durationCounts.reduce((a, b) => a + b, 0),
      },
      tcp: { open: this.tcpConns.size, rejected: s.tcpRejected, closedIdle: s.tcpClosedIdle },
      zone: { names: this.current.size, serial: this.current.serial, compileErrors: s.compileErrors },
    }
  }
}

const QTYPE_BY_NAME: Readonly<Record<string, number>> = Object.fromEntries(Object.entries(QTypeName).map(([k, v]) => [v, Number(k)]))
