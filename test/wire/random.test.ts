// Seeded property tests: random valid packets through natIpv4/natIpv6 (checksums must equal a from-scratch
// recompute by an independent reference), and random / truncated / lying packets through parsePacket (a drop verdict
// with the right reason, never a throw, never a read past the end). Rerun a failure with WIRE_SEED=<seed>.
import t from 'tap'
import { PacketInfo, parsePacket } from '../../src/wire/packet'
import { Drop, DROP_NAMES, PASS } from '../../src/wire/drop'
import { DST, SRC, natIpv4, natIpv6 } from '../../src/wire/l4rewrite'
import { mulberry32, testSeed } from '../helpers/seed'

const SEED = testSeed(t, 'WIRE_SEED')

const rnd = mulberry32(SEED)
const int = (n: number): number => Math.floor(rnd() * n)
function randomBytes(b: Buffer, off: number, len: number): void {
  for (let i = 0; i < len; i++) b[off + i] = int(256)
}

// ---- Reference arithmetic, written independently of src/wire ----

function refSum(b: Uint8Array, off: number, len: number, words: readonly number[]): number {
  let s = 0
  for (let i = 0; i < len; i += 2) s += b[off + i]! * 256 + (i + 1 < len ? b[off + i + 1]! : 0)
  for (const w of words) s += w
  return s
}
function refFold(s: number): number {
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536)
  return s
}
function refChecksum(b: Uint8Array, off: number, len: number, words: readonly number[] = []): number {
  return 0xffff - refFold(refSum(b, off, len, words))
}
function refCrc32c(b: Uint8Array, off: number, len: number): number {
  let c = 0xffffffff
  for (let i = 0; i < len; i++) {
    c ^= b[off + i]!
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
  }
  return ~c >>> 0
}

// ---- Random valid packets ----

type Mode = 'full' | 'partial' | 'zero'
const TCP = 6
const UDP = 17
const ICMP4 = 1
const ICMP6 = 58
const SCTP = 132

interface Pkt {
  buf: Buffer
  off: number
  len: number
  family: 4 | 6
  proto: number
  l4Off: number
  l4Len: number
  mode: Mode
  /** v6: bytes of extension headers; v4: bytes of options */
  extLen: number
  /** v6: type of the first extension header, -1 without */
  firstExt: number
}

function pseudoWords(p: Pkt, b: Buffer): number[] {
  if (p.family === 4) {
    const s = b.readUInt32BE(p.off + 12)
    const d = b.readUInt32BE(p.off + 16)
    return [s >>> 16, s & 0xffff, d >>> 16, d & 0xffff, p.proto, p.l4Len]
  }
  const w: number[] = []
  for (let i = 8; i < 40; i += 2) w.push(b.readUInt16BE(p.off + i))
  w.push(p.l4Len >>> 16, p.l4Len & 0xffff, p.proto)
  return w
}

/** Fills every checksum of packet p (layout) in buffer b from scratch. */
function finalize(p: Pkt, b: Buffer): void {
  if (p.family === 4) {
    b.writeUInt16BE(0, p.off + 10)
    b.writeUInt16BE(refChecksum(b, p.off, 20 + p.extLen), p.off + 10)
  }
  const l4 = p.l4Off
  if (p.proto === TCP || p.proto === UDP) {
    const at = l4 + (p.proto === TCP ? 16 : 6)
    b.writeUInt16BE(0, at)
    if (p.mode === 'zero') return
    if (p.mode === 'partial') {
      b.writeUInt16BE(refFold(pseudoWords(p, b).reduce((a, c) => a + c, 0)), at)
      return
    }
    let c = refChecksum(b, l4, p.l4Len, pseudoWords(p, b))
    if (p.proto === UDP && c === 0) c = 0xffff
    b.writeUInt16BE(c, at)
  } else if (p.proto === ICMP4) {
    b.writeUInt16BE(0, l4 + 2)
    b.writeUInt16BE(refChecksum(b, l4, p.l4Len), l4 + 2)
  } else if (p.proto === ICMP6) {
    b.writeUInt16BE(0, l4 + 2)
    b.writeUInt16BE(refChecksum(b, l4, p.l4Len, pseudoWords(p, b)), l4 + 2)
  } else if (p.proto === SCTP) {
    b.writeUInt32LE(0, l4 + 8)
    b.writeUInt32LE(refCrc32c(b, l4, p.l4Len), l4 + 8)
  }
}

function genPacket(family: 4 | 6 = rnd() < 0.5 ? 4 : 6): Pkt {
  const r = rnd()
  const proto = r < 0.42 ? TCP : r < 0.84 ? UDP : r < 0.95 ? (family === 4 ? ICMP4 : ICMP6) : SCTP
  const payload = rnd() < 0.1 ? 0 : int(rnd() < 0.95 ? 200 : 1400)
  let l4Len: number
  let tcpWords = 5
  if (proto === TCP) {
    tcpWords = rnd() < 0.5 ? 5 : 5 + int(11)
    l4Len = tcpWords * 4 + payload
  } else if (proto === SCTP) {
    l4Len = 12 + payload
  } else {
    l4Len = 8 + payload
  }
  // IP header and extension headers
  const exts: [number, number][] = [] // [type, length]
  let extLen = 0
  if (family === 4) {
    extLen = rnd() < 0.7 ? 0 : 4 * (1 + int(10))
  } else {
    const n = rnd() < 0.5 ? 0 : 1 + int(3)
    let fragUsed = false
    for (let i = 0; i < n; i++) {
      const k = int(5)
      if (k === 0 && i === 0) exts.push([0, 8 * (1 + int(3))])
      else if (k === 1) exts.push([43, 8 * (1 + int(3))])
      else if (k === 2 && !fragUsed) {
        exts.push([44, 8])
        fragUsed = true
      } else if (k === 3)
        exts.push([51, 4 * (2 + 2 * int(3))]) // AH: lengths 8, 16, 24
      else exts.push([60, 8 * (1 + int(3))])
    }
    extLen = exts.reduce((a, e) => a + e[1], 0)
  }
  const hdrLen = family === 4 ? 20 + extLen : 40 + extLen
  const len = hdrLen + l4Len
  const off = int(16)
  const buf = Buffer.alloc(off + len + int(16))
  randomBytes(buf, 0, buf.length) // garbage around the packet, and random option / ext / payload bytes
  const o = off
  if (family === 4) {
    buf[o] = 0x40 | (hdrLen >>> 2)
    buf.writeUInt16BE(len, o + 2)
    buf.writeUInt16BE(rnd() < 0.5 ? 0x4000 : 0, o + 6) // DF or nothing; never a fragment
    buf[o + 8] = 1 + int(255)
    buf[o + 9] = proto
  } else {
    buf[o] = 0x60 | (buf[o]! & 0x0f)
    buf.writeUInt16BE(len - 40, o + 4)
    buf[o + 6] = exts.length ? exts[0]![0] : proto
    let p = o + 40
    exts.forEach(([type, l], i) => {
      buf[p] = i + 1 < exts.length ? exts[i + 1]![0] : proto
      if (type === 44)
        buf.writeUInt16BE(0, p + 2) // atomic fragment: offset 0, M 0
      else if (type === 51) buf[p + 1] = l / 4 - 2
      else buf[p + 1] = l / 8 - 1
      p += l
    })
  }
  const l4 = o + hdrLen
  const mode: Mode = proto === TCP || proto === UDP ? (rnd() < 0.3 ? 'partial' : proto === UDP && family === 4 && rnd() < 0.15 ? 'zero' : 'full') : 'full'
  if (proto === TCP) {
    buf[l4 + 12] = tcpWords << 4
  } else if (proto === UDP) {
    buf.writeUInt16BE(l4Len, l4 + 4)
  } else if (proto === ICMP4 || proto === ICMP6) {
    buf[l4] = proto === ICMP4 ? (rnd() < 0.5 ? 8 : 0) : rnd() < 0.5 ? 128 : 129
    buf[l4 + 1] = 0
    buf.writeUInt16BE(1 + int(65535), l4 + 6) // seq != 0 keeps the message sum non-zero
  }
  const pkt: Pkt = { buf, off, len, family, proto, l4Off: l4, l4Len, mode, extLen, firstExt: exts.length ? exts[0]![0] : -1 }
  finalize(pkt, buf)
  return pkt
}

function hasPorts(proto: number): boolean {
  return proto === TCP || proto === UDP || proto === SCTP
}

// ---- NAT property test ----

t.test('NAT rewrites: incremental checksums equal a full recompute, 100k random packets', async t => {
  const N = 100_000
  const info = new PacketInfo()
  const failures: string[] = []
  const newAddr6 = Buffer.alloc(16)
  let partialChecked = 0
  let zeroKept = 0
  const seen = new Map<string, number>()
  for (let n = 0; n < N && failures.length < 5; n++) {
    const p = genPacket()
    const orig = Buffer.from(p.buf)
    const { buf, off, l4Off, proto, family } = p
    const partial = p.mode === 'partial'
    const key = `v${family}/${proto}/${p.mode}`
    seen.set(key, (seen.get(key) ?? 0) + 1)
    // The model: addresses and ports we expect after all operations.
    const addrLen = family === 4 ? 4 : 16
    const addr = [
      Buffer.from(buf.subarray(off + (family === 4 ? 12 : 8), off + (family === 4 ? 12 : 8) + addrLen)),
      Buffer.from(buf.subarray(off + (family === 4 ? 16 : 24), off + (family === 4 ? 16 : 24) + addrLen)),
    ]
    const ports = hasPorts(proto) ? [buf.readUInt16BE(l4Off), buf.readUInt16BE(l4Off + 2)] : [buf.readUInt16BE(l4Off + 4)]
    const ops: string[] = []
    const nOps = 1 + int(3)
    for (let k = 0; k < nOps; k++) {
      const which = rnd() < 0.5 ? SRC : DST
      const pi = hasPorts(proto) ? which : 0
      const rp = rnd()
      const newPort = rp < 0.15 ? -1 : rp < 0.25 ? ports[pi]! : int(65536)
      const keepAddr = rnd() < 0.1
      ops.push(`${which}:${keepAddr ? 'same' : 'new'}:${newPort}`)
      if (family === 4) {
        const a = keepAddr ? addr[which]!.readUInt32BE(0) : Math.floor(rnd() * 2 ** 32)
        natIpv4(buf, off, l4Off, proto, which, a, newPort, partial)
        addr[which]!.writeUInt32BE(a, 0)
      } else {
        if (keepAddr) addr[which]!.copy(newAddr6)
        else randomBytes(newAddr6, 0, 16)
        natIpv6(buf, off, l4Off, proto, which, newAddr6, 0, newPort, partial)
        newAddr6.copy(addr[which]!)
      }
      if (newPort >= 0) ports[pi] = newPort
    }
    // Expected: the original bytes with the model's fields written and every checksum recomputed from scratch.
    const want = Buffer.from(orig)
    addr[0]!.copy(want, off + (family === 4 ? 12 : 8))
    addr[1]!.copy(want, off + (family === 4 ? 16 : 24))
    if (hasPorts(proto)) {
      want.writeUInt16BE(ports[0]!, l4Off)
      want.writeUInt16BE(ports[1]!, l4Off + 2)
    } else {
      want.writeUInt16BE(ports[0]!, l4Off + 4)
    }
    finalize(p, want)
    if (!buf.equals(want)) {
      const diff: number[] = []
      for (let i = 0; i < buf.length; i++) if (buf[i] !== want[i]) diff.push(i - off)
      failures.push(`#${n} ${key} ops ${ops.join(',')}: bytes differ at packet offsets ${diff.slice(0, 6).join(',')}`)
      continue
    }
    if (p.mode === 'zero' && buf.readUInt16BE(l4Off + 6) !== 0) failures.push(`#${n} zero UDP checksum changed`)
    if (p.mode === 'zero') zeroKept++
    if (partial) {
      // Complete the way the kernel / a NIC would: sum L4 bytes with the partial field in place, invert.
      const at = l4Off + (proto === TCP ? 16 : 6)
      let done = refChecksum(buf, l4Off, p.l4Len)
      if (proto === UDP && done === 0) done = 0xffff // CSUM_MANGLED_0
      const field = buf.readUInt16BE(at)
      buf.writeUInt16BE(0, at)
      let full = refChecksum(buf, l4Off, p.l4Len, pseudoWords(p, buf))
      if (proto === UDP && full === 0) full = 0xffff
      buf.writeUInt16BE(field, at)
      if (done !== full) failures.push(`#${n} ${key} completed partial ${done} != full ${full}`)
      partialChecked++
    }
    const v = parsePacket(buf, off, p.len, info)
    if (v !== PASS) failures.push(`#${n} ${key} rewritten packet no longer parses: ${DROP_NAMES[v]}`)
    else if (hasPorts(proto) && (info.srcPort !== ports[0] || info.dstPort !== ports[1])) failures.push(`#${n} ports`)
    else if (family === 4 && (info.src !== addr[0]!.readUInt32BE(0) || info.dst !== addr[1]!.readUInt32BE(0))) failures.push(`#${n} addrs`)
  }
  t.same(failures, [], `seed ${SEED}`)
  t.ok(partialChecked > 20000, `partial (NEEDS_CSUM) packets completed: ${partialChecked}`)
  t.ok(zeroKept > 2000, `zero-checksum UDP/IPv4 packets kept at 0: ${zeroKept}`)
  for (const k of [
    'v4/6/full',
    'v4/6/partial',
    'v4/17/full',
    'v4/17/partial',
    'v4/17/zero',
    'v6/6/full',
    'v6/6/partial',
    'v6/17/full',
    'v6/17/partial',
    'v4/1/full',
    'v6/58/full',
    'v4/132/full',
    'v6/132/full',
  ]) {
    t.ok((seen.get(k) ?? 0) > 500, `covered ${k}: ${seen.get(k) ?? 0}`)
  }
})

// ---- Validator fuzzing ----

/** Properties every PASS must have; returns a complaint or ''. */
function invariants(buf: Buffer, off: number, len: number, info: PacketInfo): string {
  const end = off + len
  if (info.l3Off !== off) return 'l3Off'
  if (info.l3Len > len || info.l3Len < (info.family === 4 ? 20 : 40)) return `l3Len ${info.l3Len} of ${len}`
  if (info.family !== buf[off]! >>> 4) return 'family'
  const l3End = off + info.l3Len
  if (info.l4Off >= 0) {
    if (info.l4Off < off + (info.family === 4 ? 20 : 40)) return 'l4Off before the L4 header'
    if (info.l4Off + info.l4Len > l3End) return `L4 ${info.l4Off}+${info.l4Len} past ${l3End}`
    if (info.l4Off !== off + info.l3HdrLen) return 'l3HdrLen'
    if (info.l4Proto === TCP) {
      const doff = (buf[info.l4Off + 12]! >>> 4) * 4
      if (info.l4Len < 20 || doff < 20 || doff > info.l4Len) return 'tcp data offset'
    }
    if (hasPorts(info.l4Proto) && (info.srcPort !== buf.readUInt16BE(info.l4Off) || info.dstPort !== buf.readUInt16BE(info.l4Off + 2))) return 'ports'
    if (info.l4Proto === UDP && info.moreFragments === 0 && info.l4Len !== buf.readUInt16BE(info.l4Off + 4)) return 'udp length'
  } else if (info.isFragment !== 1 || info.fragOffset === 0) {
    return 'l4Off -1 without being a non-first fragment'
  }
  if (info.innerL3Off >= 0 && info.innerL3Off + (buf[info.innerL3Off]! >>> 4 === 4 ? 20 : 40) > l3End) return 'inner header past the end'
  if (info.innerL4Off >= 0 && info.innerL4Off + 8 > l3End) return 'inner L4 past the end'
  if (l3End > end) return 'past end'
  return ''
}

/** parsePacket of the same bytes placed in a bigger buffer with garbage after them must see exactly the same. */
function sameWithGarbage(buf: Buffer, off: number, len: number, verdict: number, info: PacketInfo, scratch: PacketInfo): string {
  const shift = int(5)
  const big = Buffer.alloc(shift + len + 64)
  randomBytes(big, 0, big.length)
  buf.copy(big, shift, off, off + len)
  const v = parsePacket(big, shift, len, scratch)
  if (v !== verdict) return `verdict ${DROP_NAMES[v]} with garbage after the end vs ${DROP_NAMES[verdict]}`
  if (v !== PASS) return ''
  const d = shift - off
  const fields: (keyof PacketInfo)[] = [
    'family',
    'l3Len',
    'l4Proto',
    'l4Len',
    'src',
    'dst',
    'srcPort',
    'dstPort',
    'tcpFlags',
    'icmpType',
    'icmpCode',
    'fragOffset',
    'moreFragments',
    'isFragment',
    'ttl',
    'innerL4Proto',
    'innerSrcPort',
    'innerDstPort',
  ]
  for (const f of fields) if (scratch[f] !== info[f]) return `field ${f} differs with garbage after the end`
  if (info.l4Off >= 0 && scratch.l4Off !== info.l4Off + d) return 'l4Off'
  return ''
}

t.test('random bytes: a verdict, never a throw', async t => {
  const info = new PacketInfo()
  const scratch = new PacketInfo()
  const counts = new Array<number>(DROP_NAMES.length).fill(0)
  const bad: string[] = []
  t.doesNotThrow(() => {
    for (let n = 0; n < 40000; n++) {
      const len = int(rnd() < 0.5 ? 64 : 400)
      const b = Buffer.alloc(len)
      randomBytes(b, 0, len)
      if (len > 0 && rnd() < 0.9) b[0] = (rnd() < 0.5 ? 0x40 : 0x60) | (b[0]! & 0x0f)
      if (len > 10 && rnd() < 0.5) {
        // Plausible lengths make the parser go deeper.
        if (b[0]! >>> 4 === 4) {
          b[0] = 0x45
          b.writeUInt16BE(len, 2)
          b[6]! &= 0x20
        } else b.writeUInt16BE(Math.max(0, len - 40), 4)
        if (len > 10 && rnd() < 0.7) b[b[0]! >>> 4 === 4 ? 9 : 6] = [1, 6, 17, 58, 132, 0, 43, 44, 60][int(9)]!
      }
      const v = parsePacket(b, 0, len, info)
      if (!(v >= 0 && v < DROP_NAMES.length)) bad.push(`verdict ${v}`)
      counts[v]!++
      if (v === PASS) {
        const e = invariants(b, 0, len, info)
        if (e) bad.push(`${e}: ${b.toString('hex')}`)
      }
      const g = sameWithGarbage(b, 0, len, v, info, scratch)
      if (g) bad.push(`${g}: ${b.toString('hex')}`)
    }
  })
  t.same(bad.slice(0, 5), [], `seed ${SEED}`)
  t.ok(counts[PASS]! > 1000, `some random packets pass (${counts[PASS]})`)
  const reasons = counts.map((c, i) => (c > 0 ? DROP_NAMES[i] : '')).filter(Boolean)
  t.ok(reasons.length >= 10, `many different verdicts: ${reasons.join(' ')}`)
})

t.test('every truncation of a valid packet is TRUNCATED', async t => {
  const info = new PacketInfo()
  const scratch = new PacketInfo()
  const bad: string[] = []
  let cases = 0
  t.doesNotThrow(() => {
    for (let n = 0; n < 300; n++) {
      const p = genPacket()
      if (parsePacket(p.buf, p.off, p.len, info) !== PASS) bad.push(`#${n} generated packet does not parse`)
      for (let cut = 0; cut < p.len; cut++) {
        cases++
        const v = parsePacket(p.buf, p.off, cut, info)
        if (v !== Drop.TRUNCATED) bad.push(`#${n} v${p.family} proto ${p.proto} cut at ${cut}/${p.len}: ${DROP_NAMES[v]}`)
        if (cut % 7 === 0) {
          const g = sameWithGarbage(p.buf, p.off, cut, v, info, scratch)
          if (g) bad.push(`#${n} cut ${cut}: ${g}`)
        }
      }
      // Exactly right, and with link padding after it, still passes.
      if (parsePacket(p.buf, p.off, p.buf.length - p.off, info) !== PASS || info.l3Len !== p.len) bad.push(`#${n} padding`)
    }
  })
  t.same(bad.slice(0, 5), [], `seed ${SEED}`)
  t.ok(cases > 30000, `${cases} truncations`)
})

type Lie = { name: string; applies: (p: Pkt) => boolean; apply: (p: Pkt, b: Buffer) => void; want: number | ((p: Pkt) => number) }

const LIES: Lie[] = [
  {
    name: 'v4 total length beyond the buffer',
    applies: p => p.family === 4,
    apply: (p, b) => b.writeUInt16BE(p.len + 1 + int(65535 - p.len), p.off + 2),
    want: Drop.TRUNCATED,
  },
  { name: 'v4 total length below 20', applies: p => p.family === 4, apply: (p, b) => b.writeUInt16BE(int(20), p.off + 2), want: Drop.BAD_TOTAL_LENGTH },
  {
    name: 'v4 IHL below 5',
    applies: p => p.family === 4,
    apply: (p, b) => {
      b[p.off] = 0x40 | int(5)
    },
    want: Drop.BAD_IHL,
  },
  {
    name: 'v4 IHL beyond the total length',
    applies: p => p.family === 4,
    apply: (p, b) => {
      const ihl = 4 * (6 + int(10))
      b[p.off] = 0x40 | (ihl >>> 2)
      b.writeUInt16BE(20 + int(Math.min(ihl - 1, p.len) - 20 + 1), p.off + 2) // within the buffer, below the IHL
    },
    want: Drop.BAD_IHL,
  },
  {
    name: 'v4 total length cuts the L4 header',
    applies: p => p.family === 4,
    apply: (p, b) => b.writeUInt16BE(20 + p.extLen + int(minL4(p.proto)), p.off + 2),
    want: Drop.BAD_L4_HEADER,
  },
  {
    name: 'TCP data offset below 5',
    applies: p => p.proto === TCP,
    apply: (p, b) => {
      b[p.l4Off + 12] = int(5) << 4
    },
    want: Drop.BAD_TCP_DATA_OFFSET,
  },
  {
    name: 'TCP data offset past the segment',
    applies: p => p.proto === TCP && p.l4Len < 60,
    apply: (p, b) => {
      b[p.l4Off + 12] = (Math.floor(p.l4Len / 4) + 1 + int(15 - Math.floor(p.l4Len / 4))) << 4
    },
    want: Drop.BAD_TCP_DATA_OFFSET,
  },
  {
    name: 'UDP length beyond the payload',
    applies: p => p.proto === UDP,
    apply: (p, b) => b.writeUInt16BE(p.l4Len + 1 + int(65535 - p.l4Len), p.l4Off + 4),
    want: Drop.BAD_UDP_LENGTH,
  },
  { name: 'UDP length below 8', applies: p => p.proto === UDP, apply: (p, b) => b.writeUInt16BE(int(8), p.l4Off + 4), want: Drop.BAD_UDP_LENGTH },
  {
    name: 'v6 payload length beyond the buffer',
    applies: p => p.family === 6,
    apply: (p, b) => b.writeUInt16BE(p.len - 40 + 1 + int(65535 - (p.len - 40)), p.off + 4),
    want: Drop.TRUNCATED,
  },
  {
    name: 'v6 payload length cuts the headers',
    applies: p => p.family === 6,
    apply: (p, b) => b.writeUInt16BE(int(p.extLen + minL4(p.proto)), p.off + 4),
    want: () => Drop.BAD_EXT_HEADER,
  }, // refined in the test: inside the chain vs. inside the L4 header
  {
    name: 'v6 extension header runs off the end',
    // The largest length byte claims 2048 bytes (AH: 1028), more than any generated payload (AH: most).
    applies: p => p.family === 6 && p.firstExt >= 0 && p.firstExt !== 44 && (p.firstExt !== 51 || p.len - 40 < 1028),
    apply: (p, b) => {
      b[p.off + 41] = 255
    },
    want: Drop.BAD_EXT_HEADER,
  },
]

function minL4(proto: number): number {
  return proto === TCP ? 20 : proto === SCTP ? 12 : 8
}

t.test('lying lengths get the matching drop reason', async t => {
  const info = new PacketInfo()
  const bad: string[] = []
  const tried = new Map<string, number>()
  t.doesNotThrow(() => {
    for (let n = 0; n < 30000; n++) {
      const p = genPacket()
      const lies = LIES.filter(l => l.applies(p))
      const lie = lies[int(lies.length)]!
      const b = Buffer.from(p.buf)
      lie.apply(p, b)
      let want = typeof lie.want === 'number' ? lie.want : lie.want(p)
      if (lie.name === 'v6 payload length cuts the headers') {
        const plen = b.readUInt16BE(p.off + 4)
        // Cut inside (or right after) some extension header: the chain runs off the end. Past it: no L4 header.
        want = plen < p.extLen ? Drop.BAD_EXT_HEADER : Drop.BAD_L4_HEADER
      }
      tried.set(lie.name, (tried.get(lie.name) ?? 0) + 1)
      const v = parsePacket(b, p.off, p.len, info)
      if (v !== want) bad.push(`#${n} ${lie.name} (v${p.family} proto ${p.proto}): ${DROP_NAMES[v]}, want ${DROP_NAMES[want]}`)
    }
  })
  t.same(bad.slice(0, 5), [], `seed ${SEED}`)
  for (const l of LIES) t.ok((tried.get(l.name) ?? 0) > 100, `tried: ${l.name}`)
})

t.test('mutated valid packets: a verdict, never a throw; every PASS is self-consistent', async t => {
  const info = new PacketInfo()
  const scratch = new PacketInfo()
  const bad: string[] = []
  let passed = 0
  t.doesNotThrow(() => {
    for (let n = 0; n < 30000; n++) {
      const p = genPacket()
      const b = p.buf
      const flips = 1 + int(4)
      for (let k = 0; k < flips; k++) {
        const at = p.off + int(Math.min(p.len, 100))
        b[at] = rnd() < 0.5 ? int(256) : b[at]! ^ (1 << int(8))
      }
      const len = rnd() < 0.2 ? int(p.len + 1) : p.len
      const v = parsePacket(b, p.off, len, info)
      if (!(v >= 0 && v < DROP_NAMES.length)) bad.push(`verdict ${v}`)
      if (v === PASS) {
        passed++
        const e = invariants(b, p.off, len, info)
        if (e) bad.push(`#${n} ${e}: ${b.subarray(p.off, p.off + len).toString('hex')}`)
      }
      const g = sameWithGarbage(b, p.off, len, v, info, scratch)
      if (g) bad.push(`#${n} ${g}`)
    }
  })
  t.same(bad.slice(0, 5), [], `seed ${SEED}`)
  t.ok(passed > 3000, `mutations that still pass: ${passed}`)
})

t.test('ICMP errors wrapped around random packets parse, and cut quotes are BAD_ICMP_ERROR', async t => {
  const info = new PacketInfo()
  const bad: string[] = []
  for (let n = 0; n < 5000; n++) {
    const inner = genPacket()
    const family = inner.family
    const hdr = family === 4 ? 20 : 40
    const quoteMin =
      inner.l4Off - inner.off + (inner.proto === TCP || inner.proto === UDP || inner.proto === SCTP || inner.proto === ICMP4 || inner.proto === ICMP6 ? 8 : 0)
    const q = Math.min(inner.len, quoteMin + int(inner.len - quoteMin + 1))
    const b = Buffer.alloc(hdr + 8 + q)
    inner.buf.copy(b, hdr + 8, inner.off, inner.off + q)
    if (family === 4) {
      b[0] = 0x45
      b.writeUInt16BE(b.length, 2)
      b[9] = 1
      b[20] = [3, 11, 12][int(3)]!
    } else {
      b[0] = 0x60
      b.writeUInt16BE(b.length - 40, 4)
      b[6] = 58
      b[40] = 1 + int(4)
    }
    const v = parsePacket(b, 0, b.length, info)
    if (v !== PASS) {
      bad.push(`#${n} quote of ${q} bytes: ${DROP_NAMES[v]}`)
      continue
    }
    const d = hdr + 8 - inner.off
    if (info.innerL3Off !== hdr + 8 || info.innerL4Off !== inner.l4Off + d || info.innerL4Proto !== inner.proto) {
      bad.push(`#${n} inner offsets ${info.innerL4Off} vs ${inner.l4Off + d}`)
    }
    if (hasPorts(inner.proto) && (info.innerSrcPort !== b.readUInt16BE(inner.l4Off + d) || info.innerDstPort !== b.readUInt16BE(inner.l4Off + d + 2))) {
      bad.push(`#${n} inner ports`)
    }
    // One byte less than the minimum quote is not enough to find the connection.
    const cut = b.subarray(0, hdr + 8 + quoteMin - 1)
    if (family === 4) cut.writeUInt16BE(cut.length, 2)
    else cut.writeUInt16BE(cut.length - 40, 4)
    const w = parsePacket(cut, 0, cut.length, info)
    if (w !== Drop.BAD_ICMP_ERROR) bad.push(`#${n} quote cut to ${quoteMin - 1}: ${DROP_NAMES[w]}`)
  }
  t.same(bad.slice(0, 5), [], `seed ${SEED}`)
})
