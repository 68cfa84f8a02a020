// The TUN addon: error paths that need no device (any user), then a real TUN inside a throwaway namespace (root).
import t from 'tap'
import { closeSync, existsSync, openSync } from 'node:fs'
import { addonPath, loadNative, repoRoot, WRITE_STATS, WriteStat, type ReaderHandle } from '../../src/device/native'
import { openTun, TunOptionError } from '../../src/device/tun'
import { isRoot, netnsSkip, topology } from '../helpers/netns'
import { fixtureCommand } from '../netns/fixtures/launch'

const built = existsSync(addonPath())
// Root CI runs scripts/bootstrap, which builds the addon: a missing one there is a failure, not a skip.
const needAddon = { skip: built || isRoot() ? false : `addon not built (${addonPath()}); npm run build:native` }

t.test('the addon is found from src/ and from dist/', async t => {
  t.ok(existsSync(`${repoRoot()}/package.json`))
  t.equal(repoRoot(`${repoRoot()}/dist/src/device`), repoRoot(), 'dist/src/device walks up to the same root')
  t.match(addonPath(), /native\/build\/Release\/tundra_native\.node$/)
})

t.test('addon error paths (nothing is created)', needAddon, async t => {
  const n = loadNative()
  for (const f of [
    'open',
    'setOffload',
    'close',
    'writeBatch',
    'readerWrite',
    'readerWriteStats',
    'readerCreate',
    'readerStart',
    'readerRef',
    'readerStop',
    'readerStats',
  ]) {
    t.type((n as unknown as Record<string, unknown>)[f], 'function', f)
  }
  t.throws(
    () => n.open('a-name-that-is-far-too-long', 0),
    { code: 'EINVAL', errno: 22, syscall: 'TUNSETIFF', message: /at most 15 bytes/ },
    'a name over 15 bytes is refused before any syscall',
  )
  t.throws(() => n.open(42 as unknown as string, 0), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => n.setOffload(-1, 1), { code: 'EBADF', syscall: 'TUNSETOFFLOAD' })
  t.throws(() => n.close(-1), { code: 'EBADF' })

  const counters = new Float64Array(4)
  const buf = Buffer.alloc(100)
  t.equal(n.writeBatch(-1, buf, Uint32Array.of(10, 10), Uint32Array.of(20, 20), 2, 10, counters), 0, 'nothing written to a bad fd')
  t.same([...counters], [0, 2, 9, 0], 'two errors, errno EBADF')
  counters.fill(0)
  t.equal(n.writeBatch(-1, buf, Uint32Array.of(5, 90, 10), Uint32Array.of(20, 20, 0), 3, 10, counters), 0)
  t.same([...counters], [0, 3, 22, 0], 'header before the buffer, past its end, empty: EINVAL, no syscall')
  t.throws(() => n.writeBatch(-1, buf, Uint32Array.of(0), Uint32Array.of(1), 2, 0, counters), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => n.writeBatch(-1, buf, new Uint16Array(1) as unknown as Uint32Array, Uint32Array.of(1), 1, 0, counters), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => n.writeBatch(-1, buf, Uint32Array.of(0), Uint32Array.of(1), 1, 0, new Float64Array(2)), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => n.readerCreate(-1, 10, 4, 4096, 64), { code: 'ERR_OUT_OF_RANGE' }, 'a slab must hold a 64 KB packet')
  t.throws(() => n.readerCreate(-1, 10, 1, 1 << 20, 64), { code: 'ERR_OUT_OF_RANGE' }, 'at least two slabs')

  // A reader that is created and stopped without ever starting holds nothing.
  const r = n.readerCreate(-1, 10, 2, 1 << 17, 8)
  t.equal(r.bufs.length, 2)
  t.equal(r.bufs[0]!.length, 1 << 17)
  t.equal(r.offsets[1]!.length, 8)
  n.readerStop(r.handle)
  n.readerStop(r.handle)
  t.throws(() => n.readerStart(r.handle, () => undefined), { code: 'ERR_INVALID_STATE' })
})

// The write queue needs no TUN: before readerStart (and after readerStop) readerWrite writes on the calling thread,
// so the bookkeeping can be checked on a bad fd and on /dev/null. (Through a running thread: tun-probe.)
t.test('write queue without a running thread (fds that are not TUNs)', needAddon, async t => {
  const n = loadNative()
  const stats = (h: ReaderHandle): Record<keyof typeof WriteStat, number> => {
    const out = new Float64Array(WRITE_STATS)
    n.readerWriteStats(h, out)
    return Object.fromEntries(Object.entries(WriteStat).map(([k, i]) => [k, out[i]!])) as Record<keyof typeof WriteStat, number>
  }
  t.throws(() => n.readerCreate(-1, 10, 2, 1 << 17, 8, 64 << 10, 64), { code: 'ERR_OUT_OF_RANGE' }, 'the ring must hold two 64 KB packets')
  t.throws(() => n.readerCreate(-1, 10, 2, 1 << 17, 8, 1 << 20, 100), { code: 'ERR_OUT_OF_RANGE' }, 'slots must be a power of two')
  const plain = n.readerCreate(-1, 10, 2, 1 << 17, 8)
  t.throws(() => n.readerWrite(plain.handle, Buffer.alloc(1), Uint32Array.of(0), Uint32Array.of(1), 1), {
    code: 'ERR_INVALID_ARG_TYPE',
    message: /no write queue/,
  })
  t.throws(() => n.readerWriteStats({} as ReaderHandle, new Float64Array(WRITE_STATS)), { code: 'ERR_INVALID_ARG_TYPE' })
  n.readerStop(plain.handle)

  // A bad fd: invalid packets are refused up front (EINVAL), the valid one fails in write() (EBADF).
  const bad = n.readerCreate(-1, 10, 2, 1 << 17, 8, 1 << 20, 64)
  const buf = Buffer.alloc(100)
  t.equal(n.readerWrite(bad.handle, buf, Uint32Array.of(10, 5, 90, 10), Uint32Array.of(20, 20, 20, 0), 4), 1, 'one queued, three refused')
  t.throws(() => n.readerWrite(bad.handle, buf, Uint32Array.of(10), Uint32Array.of(20), 2), { code: 'ERR_OUT_OF_RANGE' })
  t.match(stats(bad.handle), { QUEUED: 1, INVALID: 3, ERRORS: 1, LAST_ERRNO: 9, WRITES: 0, DROPPED: 0 })
  n.readerStop(bad.handle)
  t.equal(n.readerWrite(bad.handle, buf, Uint32Array.of(10), Uint32Array.of(20), 1), 0, 'nothing is queued after stop')

  // /dev/null: every packet written, in whatever sizes; memory reused right after the call.
  const devNull = openSync('/dev/null', 'w')
  try {
    const r = n.readerCreate(devNull, 10, 2, 1 << 17, 8, 256 << 10, 64)
    const pkt = Buffer.alloc(70_000)
    let queued = 0,
      bytes = 0
    for (let i = 0; i < 200; i++) {
      const len = 1 + ((i * 7919) % 65_000)
      queued += n.readerWrite(r.handle, pkt, Uint32Array.of(10, 10), Uint32Array.of(len, 100), 2)
      bytes += len + 100
      pkt.fill(i)
    }
    n.readerStop(r.handle)
    t.equal(queued, 400)
    t.match(
      stats(r.handle),
      { QUEUED: 400, COPIED: 400, WRITES: 400, BYTES: bytes, ERRORS: 0, DROPPED: 0, WAITS: 0 },
      'outside a batch callback every packet is copied; all written',
    )
  } finally {
    closeSync(devNull)
  }
})

// Names the kernel would refuse anyway: if validation ever regressed, nothing could be created in this namespace.
t.test('openTun validates options before touching the kernel', async t => {
  const err = await openTun({ name: 'bad/name', offloads: true }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(err instanceof TunOptionError && err instanceof TypeError, 'a TunOptionError (a TypeError)')
  t.match(err, { code: 'ERR_INVALID_ARG_VALUE', name: 'TunOptionError', message: /offloads need vnetHdr/ })
  await t.rejects(openTun({ name: 'bad/name', queues: 0 }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.rejects(openTun({ name: 'bad/name', queues: 2, multiQueue: false }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.rejects(openTun({ name: 'bad/name', mtu: 10 }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.rejects(openTun({ name: 'bad/name', slabs: 1 }), { code: 'ERR_INVALID_ARG_VALUE' })
})

t.test('without CAP_NET_ADMIN the kernel says EPERM', { skip: isRoot() ? 'running as root' : !built && 'addon not built' }, async t => {
  await t.rejects(openTun({ name: 'tx0' }), { code: 'EPERM', syscall: 'TUNSETIFF' })
})

interface ProbeReport {
  badName: { code: string } | null
  tooLong: { code: string } | null
  offloadsWithoutVnet: { code: string } | null
  busy: { code: string } | null
  multiQueue: { queues: number; distinctFds: number }
  multiQueueCloseMs: number
  deletedUnderReader: unknown
  deletedUnderInlineReader: unknown
  offloadsAccepted: { flags: number; csum: boolean; tso4: boolean; tso6: boolean }
  udpEcho: string[] | string
  udpVnetHdr: string | null
  tcpEcho: { bytes: number; intact: boolean } | string
  tcpGsoVnetHdr: string | null
  maxPacket: number
  stats: { batches: number; packets: number; writes: number; writeErrors: number; avgPacketsPerBatch: number }
  mirroredAtClose: number
  copiedAtClose: number
  statsAfterClose: { writes: number; writeQueued: number; writeBacklog: number; writeDropped: number }
  closeMs: number
  writeAfterClose: number
  linkGone: boolean
  backpressure: {
    sent: number
    seenByJs: number
    tunDropped: number
    qdiscDropped: number
    inOrder: boolean
    slabWaits: number
    readErrors: number
    writeErrors: number
  }
  writeBackpressure: {
    queued: number
    received: number
    inOrder: boolean
    writes: number
    writeCopied: number
    writeWaits: number
    writeDropped: number
    writeErrors: number
  }
  fatal?: unknown
}

for (const vnetHdr of [true, false]) {
  t.test(`a real TUN in a namespace (vnetHdr ${vnetHdr})`, netnsSkip(), async t => {
    const topo = topology(t, 'tunprobe')
    const ns = await topo.ns('probe')
    const t0 = Date.now()
    const r = await topo.exec(ns, fixtureCommand('tun-probe', ns, [JSON.stringify({ vnetHdr })]), { timeoutMs: 60_000 })
    const runMs = Date.now() - t0
    t.equal(r.code, 0, `probe exited 0 by itself (nothing kept it alive) ${r.stderr}`)
    const rep = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as ProbeReport
    t.notOk(rep.fatal, 'no fatal error')
    t.equal(rep.badName?.code, 'EINVAL', 'a name the kernel rejects: EINVAL')
    t.equal(rep.tooLong?.code, 'EINVAL', 'a name too long: EINVAL')
    t.equal(rep.offloadsWithoutVnet?.code, 'ERR_INVALID_ARG_VALUE')
    t.equal(rep.busy?.code, 'EBUSY', 'the same name twice without multiqueue: EBUSY')
    t.same(rep.multiQueue, { queues: 2, distinctFds: 2 }, 'two queues, two fds')
    t.equal(rep.deletedUnderReader, 'EBADFD', 'deleting the link under a running reader reports EBADFD through onError')
    t.equal(rep.deletedUnderInlineReader, 'EBADFD', 'the same under the inline reader')
    if (vnetHdr)
      t.ok(
        rep.offloadsAccepted.csum && rep.offloadsAccepted.tso4 && rep.offloadsAccepted.tso6,
        `offloads accepted: 0x${rep.offloadsAccepted.flags.toString(16)}`,
      )
    else t.equal(rep.offloadsAccepted.flags, 0)
    t.same(rep.udpEcho, ['10.9.0.2:7777 udp-0', '10.9.0.2:7777 udp-1', '10.9.0.2:7777 udp-2'], 'UDP mirrored through the TUN')
    t.same(rep.tcpEcho, { bytes: 2 << 20, intact: true }, 'a 2 MB TCP stream mirrored through the TUN arrives intact')
    if (vnetHdr) {
      t.equal(rep.udpVnetHdr, '01000000000014000600', 'UDP: NEEDS_CSUM at 20+6')
      t.match(rep.tcpGsoVnetHdr, /^0101....a80514001000$/, 'TCP: NEEDS_CSUM, TSO v4, gso_size 1448, csum at 20+16')
      t.ok(rep.maxPacket > 1500, `super-packets arrive (largest ${rep.maxPacket} bytes)`)
    } else {
      t.equal(rep.udpVnetHdr, null)
      t.ok(rep.maxPacket <= 1500, `MTU-sized packets without offloads (largest ${rep.maxPacket})`)
    }
    t.ok(rep.stats.batches > 0 && rep.stats.packets >= rep.stats.batches, `counters: ${JSON.stringify(rep.stats)}`)
    t.equal(rep.stats.writeErrors, 0)
    t.same(
      rep.statsAfterClose,
      { writes: rep.mirroredAtClose, writeQueued: rep.mirroredAtClose, writeBacklog: 0, writeDropped: 0 },
      'the queue thread wrote every mirrored packet by the time close() returned',
    )
    t.ok(
      rep.copiedAtClose >= 3 && rep.copiedAtClose < rep.mirroredAtClose,
      `UDP from the scratch buffer was copied (${rep.copiedAtClose}), the batch's own packets were not`,
    )
    t.ok(rep.closeMs < 500, `close is prompt (${rep.closeMs.toFixed(1)} ms; mostly the kernel unregistering the link)`)
    t.ok(rep.multiQueueCloseMs < 500, `closing two started queues is prompt (${rep.multiQueueCloseMs.toFixed(1)} ms)`)
    t.equal(rep.writeAfterClose, 0, 'writes after close do nothing')
    t.ok(rep.linkGone, 'closing the fds removes the interface')
    const bp = rep.backpressure
    t.ok(bp.slabWaits > 0, `a slow consumer makes the reader wait for slabs (${bp.slabWaits} waits)`)
    t.equal(
      bp.seenByJs + bp.tunDropped + bp.qdiscDropped,
      bp.sent,
      `every datagram reached JS or was dropped by the kernel before the TUN (${JSON.stringify(bp)})`,
    )
    t.ok(bp.inOrder, 'in order across slab rotations, no duplicates')
    t.equal(bp.readErrors + bp.writeErrors, 0)
    const wb = rep.writeBackpressure
    t.match(
      wb,
      { queued: 200, writes: 200, writeCopied: 200, writeDropped: 0, writeErrors: 0, inOrder: true },
      `400 KB in one writeBatch through a 256 KiB ring: all queued and written, in order (${JSON.stringify(wb)})`,
    )
    t.ok(wb.writeWaits > 0, `writeBatch waited for the queue thread to make room (${wb.writeWaits} times)`)
    t.ok(wb.received > 0, `datagrams reached the socket (${wb.received}; the rest overflowed its buffer)`)
    t.comment(`probe ran in ${runMs} ms`)
  })
}
