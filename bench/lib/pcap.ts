// How long the node held each probe packet, from a `tcpdump -i any` capture in the node's namespace (pure, tested).
// The probe's round trip also holds the probe's and the echo pod's own scheduling on the shared CPUs; this separates
// the dataplane's part. Every contender is timed between the same two points: the packet's first appearance that is
// not outgoing (it arrives from the sender's veth) and its last outgoing one (it leaves on the receiver's veth).
// Whatever the node does in between (kernel NAT, or a trip out to the TUN and back for tundra) is the dwell.

const MAGIC_US = 0xa1b2c3d4
const MAGIC_NS = 0xa1b23c4d
const GLOBAL_HEADER = 24
const RECORD_HEADER = 16
/** LINKTYPE_LINUX_SLL2: what `tcpdump -i any` writes */
export const LINKTYPE_SLL2 = 276
const SLL2_HEADER = 20
const SLL2_PROTOCOL = 0
const SLL2_PKTTYPE = 10
/** PACKET_OUTGOING: sent by this host (the other types are kinds of received) */
export const PKTTYPE_OUTGOING = 4
const ETHERTYPE_IPV4 = 0x0800
const IPPROTO_UDP = 17

export interface CapturedUdp {
  /** capture time, ns (the capture's own clock: only differences mean anything) */
  readonly ns: bigint
  readonly outgoing: boolean
  readonly sport: number
  readonly dport: number
}

export class PcapError extends Error {
  override readonly name = 'PcapError'
}

/**
 * The IPv4 UDP packets of an SLL2 pcap (µs or ns timestamps, either byte order). Other packets are skipped; a record
 * cut short at the end of the file (tcpdump stopped mid-write) ends the list.
 */
export function readSll2Udp(buf: Buffer): CapturedUdp[] {
  if (buf.length < GLOBAL_HEADER) throw new PcapError(`pcap: ${buf.length} bytes, shorter than its header`)
  const le = buf.readUInt32LE(0) === MAGIC_US || buf.readUInt32LE(0) === MAGIC_NS
  const magic = le ? buf.readUInt32LE(0) : buf.readUInt32BE(0)
  if (magic !== MAGIC_US && magic !== MAGIC_NS) throw new PcapError(`pcap: unknown magic 0x${buf.readUInt32BE(0).toString(16)}`)
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o))
  const linktype = u32(20) & 0xffff
  if (linktype !== LINKTYPE_SLL2) throw new PcapError(`pcap: link type ${linktype}, expected ${LINKTYPE_SLL2} (tcpdump -i any)`)
  const fracNs = magic === MAGIC_NS ? 1n : 1000n
  const out: CapturedUdp[] = []
  for (let o = GLOBAL_HEADER; o + RECORD_HEADER <= buf.length; ) {
    const sec = u32(o)
    const frac = u32(o + 4)
    const caplen = u32(o + 8)
    const p = o + RECORD_HEADER
    o = p + caplen
    if (o > buf.length) break
    if (caplen < SLL2_HEADER + 20 + 4 || buf.readUInt16BE(p + SLL2_PROTOCOL) !== ETHERTYPE_IPV4) continue
    const ip = p + SLL2_HEADER
    const ihl = (buf[ip]! & 0x0f) * 4
    if (buf[ip]! >> 4 !== 4 || ihl < 20 || buf[ip + 9] !== IPPROTO_UDP || SLL2_HEADER + ihl + 4 > caplen) continue
    out.push({
      ns: BigInt(sec) * 1_000_000_000n + BigInt(frac) * fracNs,
      outgoing: buf[p + SLL2_PKTTYPE] === PKTTYPE_OUTGOING,
      sport: buf.readUInt16BE(ip + ihl),
      dport: buf.readUInt16BE(ip + ihl + 2),
    })
  }
  return out
}

/**
 * Per probe packet (a request to `port` from a source port used once, or its reply), the time from its first
 * non-outgoing appearance to its last outgoing one, in µs. Packets not seen both ways are left out.
 */
export function nodeDwellUs(packets: readonly CapturedUdp[], port: number): number[] {
  const first = new Map<number, bigint>()
  const last = new Map<number, bigint>()
  for (const p of packets) {
    // requests keyed by their source port, replies by their destination port (negative: the other direction)
    const key = p.dport === port ? p.sport : p.sport === port ? -p.dport : undefined
    if (key === undefined) continue
    if (!p.outgoing) {
      if (!first.has(key)) first.set(key, p.ns)
    } else if (first.has(key)) last.set(key, p.ns)
  }
  const out: number[] = []
  for (const [k, t] of last) out.push(Number(t - first.get(k)!) / 1000)
  return out
}
