// The in-memory device: batches laid out like the TUN's, write capture, pairs, fault injection.
import t from 'tap'
import type { Batch } from '../../src/device/device'
import { VNET_HDR_LEN } from '../../src/device/device'
import { MemoryDevice, memoryPair } from '../../src/device/memory'
import { GsoType, readVnetHdr, VnetFlags } from '../../src/device/vnet'

/** A recognisable "packet": n bytes of value v (the device does not parse). */
const pkt = (n: number, v: number): Buffer => Buffer.alloc(n, v)

/** Copies what a batch held, since its memory is only valid during the callback. */
function snapshot(b: Batch): { count: number; packets: Buffer[]; offsets: number[] } {
  const packets: Buffer[] = []
  const offsets: number[] = []
  for (let i = 0; i < b.count; i++) {
    packets.push(Buffer.from(b.buf.subarray(b.offsets[i]!, b.offsets[i]! + b.lengths[i]!)))
    offsets.push(b.offsets[i]!)
  }
  return { count: b.count, packets, offsets }
}

t.test('injected packets arrive in batches of at most maxBatch, in order', async t => {
  const dev = new MemoryDevice({ maxBatch: 4, autoFlush: false })
  const seen: ReturnType<typeof snapshot>[] = []
  dev.start(b => seen.push(snapshot(b)))
  for (let i = 0; i < 10; i++) dev.inject(pkt(20 + i, i))
  t.equal(dev.pending, 10)
  t.equal(dev.flush(), 3, 'three batches')
  t.same(
    seen.map(s => s.count),
    [4, 4, 2],
  )
  t.same(
    seen.flatMap(s => s.packets),
    Array.from({ length: 10 }, (_, i) => pkt(20 + i, i)),
    'same bytes, same order',
  )
  t.ok(
    seen.every(s => s.offsets.every(o => o % 8 === 0)),
    'packets start 8-byte aligned, as the TUN reader lays them',
  )
  t.same(dev.stats(), { batches: 3, packets: 10, bytes: 245, writes: 0, writeErrors: 0, avgPacketsPerBatch: 10 / 3 })
  t.equal(dev.flush(), 0, 'nothing left')
})

t.test('a full slab ends a batch early', async t => {
  const dev = new MemoryDevice({ slabBytes: 4096, maxBatch: 100, autoFlush: false })
  const counts: number[] = []
  dev.start(b => counts.push(b.count))
  for (let i = 0; i < 5; i++) dev.inject(pkt(1500, i))
  dev.flush()
  t.same(counts, [2, 2, 1])
  t.throws(() => dev.inject(pkt(5000, 1)), RangeError, 'a packet larger than the slab is refused')
})

t.test('autoFlush delivers on the next turn of the event loop', async t => {
  const dev = new MemoryDevice()
  const counts: number[] = []
  dev.inject(pkt(30, 1))
  dev.start(b => counts.push(b.count))
  dev.inject(pkt(30, 2))
  dev.inject(pkt(30, 3))
  t.same(counts, [], 'nothing synchronously')
  await dev.drain()
  t.same(counts, [3], 'one batch with everything that was waiting')
})

t.test('vnet headers precede each packet and are captured on write', async t => {
  const dev = new MemoryDevice({ vnetHdr: true, autoFlush: false })
  t.ok(dev.vnetHdr)
  const hdrs: ReturnType<typeof readVnetHdr>[] = []
  dev.start(b => {
    for (let i = 0; i < b.count; i++) hdrs.push(readVnetHdr(b.buf, b.offsets[i]! - VNET_HDR_LEN))
    dev.writeBatch(b.buf, b.offsets, b.lengths, b.count)
  })
  dev.inject(pkt(60, 7), { flags: VnetFlags.NEEDS_CSUM, gsoType: GsoType.TCPV4, gsoSize: 1448, hdrLen: 52, csumStart: 20, csumOffset: 16 })
  dev.inject(pkt(40, 8))
  dev.flush()
  t.same(hdrs[0], { flags: 1, gsoType: 1, hdrLen: 52, gsoSize: 1448, csumStart: 20, csumOffset: 16 })
  t.same(hdrs[1], { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 }, 'zero header when none given')
  const w = dev.takeWritten()
  t.equal(w.length, 2)
  t.same(w[0]!.data, pkt(60, 7))
  t.same(w[0]!.vnet, hdrs[0], 'the header written back is captured')
  t.same(dev.written, [], 'takeWritten empties the capture')
  t.throws(() => new MemoryDevice().inject(pkt(20, 1), { flags: 1 }), TypeError, 'headers need a vnet device')
})

t.test('writes: capture, bounds, fault injection, counters', async t => {
  const dev = new MemoryDevice()
  const buf = Buffer.alloc(100)
  buf.fill(1, 0, 40)
  buf.fill(2, 40, 100)
  t.equal(dev.writeBatch(buf, Uint32Array.of(0, 40, 90), Uint32Array.of(40, 60, 20), 3), 2, 'out-of-bounds packet refused')
  t.same(
    dev.written.map(p => p.data),
    [pkt(40, 1), pkt(60, 2)],
  )
  t.equal(dev.written[0]!.vnet, null)
  buf.fill(9)
  t.same(dev.written[0]!.data, pkt(40, 1), 'captured packets are copies')
  dev.failNextWrites(1)
  t.equal(dev.writeBatch(buf, Uint32Array.of(0, 10), Uint32Array.of(10, 10), 2), 1, 'the first write fails on purpose')
  t.same(dev.stats(), { batches: 0, packets: 0, bytes: 0, writes: 3, writeErrors: 2, avgPacketsPerBatch: 0 })
  const noCapture = new MemoryDevice({ capture: false })
  t.equal(noCapture.writeBatch(buf, Uint32Array.of(0), Uint32Array.of(10), 1), 1)
  t.same(noCapture.written, [], 'capture: false keeps nothing')
})

t.test('batch memory is poisoned after the callback (catches code that keeps it)', async t => {
  const dev = new MemoryDevice({ autoFlush: false })
  let kept: Buffer | null = null
  dev.start(b => {
    kept = b.buf.subarray(b.offsets[0]!, b.offsets[0]! + b.lengths[0]!)
  })
  dev.inject(pkt(16, 0x42))
  dev.flush()
  t.same(kept, Buffer.alloc(16, 0xee))
  const keep = new MemoryDevice({ autoFlush: false, poison: false })
  keep.start(b => {
    kept = b.buf.subarray(b.offsets[0]!, b.offsets[0]! + b.lengths[0]!)
  })
  keep.inject(pkt(16, 0x42))
  keep.flush()
  t.same(kept, pkt(16, 0x42), 'poison: false leaves it')
})

t.test('a pair: what one writes, the other reads', async t => {
  const [a, b] = memoryPair({ vnetHdr: true })
  t.equal(a.name, 'mema')
  t.equal(b.name, 'memb')
  const atB: Buffer[] = []
  b.start(batch => {
    for (const p of snapshot(batch).packets) atB.push(p)
  })
  a.start(batch => a.writeBatch(batch.buf, batch.offsets, batch.lengths, batch.count)) // a reflects into b
  a.inject(pkt(30, 1), { flags: VnetFlags.NEEDS_CSUM, csumStart: 20, csumOffset: 6 })
  a.inject(pkt(31, 2))
  await a.drain()
  await b.drain()
  t.same(atB, [pkt(30, 1), pkt(31, 2)])
  t.equal(a.written.length, 2, 'and a still captures')
})

t.test('flush from inside a callback does not re-enter; close stops delivery', async t => {
  const dev = new MemoryDevice({ autoFlush: false, maxBatch: 1 })
  const counts: number[] = []
  dev.start(b => {
    counts.push(b.count)
    t.equal(dev.flush(), 0, 're-entrant flush is a no-op')
  })
  dev.inject(pkt(10, 1))
  dev.inject(pkt(10, 2))
  t.equal(dev.flush(), 2)
  t.throws(() => dev.start(() => undefined), { code: 'ERR_INVALID_STATE' })
  dev.inject(pkt(10, 3))
  await dev.close()
  t.equal(dev.flush(), 0)
  t.equal(dev.pending, 0, 'close drops what was queued')
  t.equal(dev.writeBatch(Buffer.alloc(10), Uint32Array.of(0), Uint32Array.of(10), 1), 0, 'writes after close do nothing')
  t.throws(() => dev.start(() => undefined), { code: 'ERR_DEVICE_CLOSED' })
})
