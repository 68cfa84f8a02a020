import t from 'tap'
import { LINKTYPE_SLL2, nodeDwellUs, PcapError, PKTTYPE_OUTGOING, readSll2Udp } from '../../bench/lib/pcap'

interface Pkt {
  ns: number
  ifindex: number
  outgoing: boolean
  sport: number
  dport: number
  proto?: number
}

/** A pcap as `tcpdump -i any --time-stamp-precision=nano -w` writes it (or with µs stamps, or big-endian). */
function pcap(pkts: readonly Pkt[], o: { micro?: boolean; be?: boolean; linktype?: number } = {}): Buffer {
  const w32 = (b: Buffer, v: number, at: number): void => {
    if (o.be) b.writeUInt32BE(v, at)
    else b.writeUInt32LE(v, at)
  }
  const head = Buffer.alloc(24)
  w32(head, o.micro ? 0xa1b2c3d4 : 0xa1b23c4d, 0)
  w32(head, 65535, 16)
  w32(head, o.linktype ?? LINKTYPE_SLL2, 20)
  const recs = pkts.map(p => {
    const body = Buffer.alloc(20 + 20 + 8)
    body.writeUInt16BE(0x0800, 0)
    body.writeInt32BE(p.ifindex, 4)
    body.writeUInt16BE(1, 8)
    body[10] = p.outgoing ? PKTTYPE_OUTGOING : 0
    body[11] = 6
    body[20] = 0x45
    body[29] = p.proto ?? 17
    body.writeUInt16BE(p.sport, 40)
    body.writeUInt16BE(p.dport, 42)
    const rh = Buffer.alloc(16)
    w32(rh, Math.floor(p.ns / 1e9), 0)
    w32(rh, o.micro ? Math.floor((p.ns % 1e9) / 1000) : p.ns % 1e9, 4)
    w32(rh, body.length, 8)
    w32(rh, body.length, 12)
    return Buffer.concat([rh, body])
  })
  return Buffer.concat([head, ...recs])
}

// A request through tundra: in from the client's veth, out to the TUN, back from it, out to the echo pod's veth.
const tundraTrip: Pkt[] = [
  { ns: 5_000_001_000, ifindex: 3, outgoing: false, sport: 10001, dport: 9000 },
  { ns: 5_000_002_000, ifindex: 7, outgoing: true, sport: 10001, dport: 9000 },
  { ns: 5_000_005_000, ifindex: 7, outgoing: false, sport: 10001, dport: 9000 },
  { ns: 5_000_006_500, ifindex: 5, outgoing: true, sport: 10001, dport: 9000 },
  // its reply through the kernel's path only: in from the echo pod, out to the client
  { ns: 5_000_100_000, ifindex: 5, outgoing: false, sport: 9000, dport: 10001 },
  { ns: 5_000_103_000, ifindex: 3, outgoing: true, sport: 9000, dport: 10001 },
]

t.test('dwell runs from the first arrival to the last departure of each probe packet', async t => {
  const got = nodeDwellUs(readSll2Udp(pcap(tundraTrip)), 9000)
  t.same(
    got.sort((a, b) => a - b),
    [3, 5.5],
  )
})

t.test('packets seen only arriving, other ports and other protocols are left out', async t => {
  const pkts: Pkt[] = [
    ...tundraTrip,
    { ns: 6_000_000_000, ifindex: 3, outgoing: false, sport: 10002, dport: 9000 }, // dropped in the node
    { ns: 6_000_000_000, ifindex: 3, outgoing: false, sport: 10003, dport: 53 },
    { ns: 6_000_001_000, ifindex: 5, outgoing: true, sport: 10003, dport: 53 },
    { ns: 6_000_000_000, ifindex: 3, outgoing: false, sport: 10004, dport: 9000, proto: 6 },
    { ns: 6_000_009_000, ifindex: 5, outgoing: true, sport: 10004, dport: 9000, proto: 6 },
  ]
  t.equal(nodeDwellUs(readSll2Udp(pcap(pkts)), 9000).length, 2)
})

t.test('µs stamps and big-endian files read the same; a record cut short at the end is dropped', async t => {
  t.same(nodeDwellUs(readSll2Udp(pcap(tundraTrip, { micro: true })), 9000).sort(), [3, 5])
  t.same(nodeDwellUs(readSll2Udp(pcap(tundraTrip, { be: true })), 9000).sort(), [3, 5.5])
  const full = pcap(tundraTrip)
  t.equal(readSll2Udp(full.subarray(0, full.length - 10)).length, tundraTrip.length - 1)
})

t.test('a file that is not an SLL2 pcap is refused with its reason', async t => {
  t.throws(() => readSll2Udp(Buffer.alloc(10)), PcapError)
  t.throws(() => readSll2Udp(Buffer.alloc(24)), /unknown magic/)
  t.throws(() => readSll2Udp(pcap(tundraTrip, { linktype: 1 })), /link type 1, expected 276/)
})
