// The real device: a Linux TUN (opened and read by native/tun.c) behind the Device interface, optionally with
// virtio_net_hdr + TSO/USO so that TCP and UDP arrive as 64 KB super-packets instead of MTU-sized ones.
import { execFile } from 'node:child_process'
import type { Batch, Device, DeviceStats } from './device'
import { VNET_HDR_LEN } from './device'
import { loadNative, OPEN_MULTI_QUEUE, OPEN_VNET_HDR, WRITE_STATS, WriteStat, type NativeReader, type NativeTun, type ReaderHandle } from './native'

/** TUNSETOFFLOAD bits (include/uapi/linux/if_tun.h). */
const TunOffload = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08, UFO: 0x10, USO4: 0x20, USO6: 0x40 } as const

/** What openTun asks for when offloads are on; USO4/USO6 are dropped on kernels older than 6.2. */
const WANTED_OFFLOADS = TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | TunOffload.USO4 | TunOffload.USO6

export interface TunOptions {
  /** interface name, at most 15 bytes; '' or a pattern like 'tun%d' lets the kernel pick */
  name: string
  /** prefix every packet with a virtio_net_hdr (default false) */
  vnetHdr?: boolean
  /** TUNSETOFFLOAD csum+TSO4/6(+USO4/6): receive GSO super-packets (default: same as vnetHdr; needs vnetHdr) */
  offloads?: boolean
  /** IFF_MULTI_QUEUE (default: queues > 1) */
  multiQueue?: boolean
  /** reader queues, each with its own fd and thread (default 1) */
  queues?: number
  /** set with `ip link` when given */
  mtu?: number
  /** set with `ip link` when given (the kernel default for TUN is 500 packets) */
  txqueuelen?: number
  /**
   * bring the link up with `ip link` (default true), and replace its qdisc with noqueue (`tc`): the TUN never stops
   * its queue (a full ring drops in the driver), so a qdisc only adds its lock and bypass check to every packet on
   * the sender's CPU (in-path DNS 209k -> 218k queries/s without it, bench/README "Tried and dropped"). When `tc`
   * fails the kernel's qdisc stays and `qdisc` says why: the TUN works either way.
   */
  up?: boolean
  /** slabs per queue the reader rotates through (default 4, 2..16) */
  slabs?: number
  /** bytes per slab (default 4 MiB; each read needs 64 KiB + header free) */
  slabBytes?: number
  /** most packets in one batch (default 4096) */
  maxBatch?: number
  /**
   * Where write() runs, and with it the kernel's forwarding work for every packet sent (the bulk of the cost).
   * 'queue' (default): on each queue's native thread, which reads the TUN too. writeBatch queues and returns;
   * packets of the batch being processed are written from where they are when the callback returns, others are
   * copied. 'js': on the JS thread, inside writeBatch (the JS thread then does that kernel work itself).
   */
  writeMode?: 'queue' | 'js'
  /**
   * Who reads the TUN. 'thread' (default): one native thread per queue hands batches to the JS thread.
   * 'inline': no threads; the JS thread's event loop polls the fds, reads a batch and writes the answers itself
   * (writeMode is then 'js'). One thread wakeup per batch instead of three: lower latency and more small packets
   * per second; the kernel's forwarding work for every write then runs on the JS thread.
   */
  io?: 'thread' | 'inline'
  /**
   * io 'inline': after the last packet, keep reading for this many µs before sleeping in the event loop (busy
   * polling, like SO_BUSY_POLL): the reply to what was just forwarded usually comes back within that time and is
   * then caught without a wakeup. Never when the process may run on one CPU only. 0 turns it off. Default 0.
   */
  busyPollUs?: number
  /**
   * bytes of each queue's ring for packets that must be copied (default 8 MiB, 256 KiB..1 GiB); when the ring or
   * its descriptors are full, writeBatch waits for the thread to make room (at most 200 ms per call)
   */
  writeRingBytes?: number
  /** called once per queue if reading fails for good (the device went away); default: a process warning */
  onError?: (err: Error) => void
}

export interface OffloadsAccepted {
  /** the TUNSETOFFLOAD bits the kernel took (0 when offloads are off) */
  readonly flags: number
  readonly csum: boolean
  readonly tso4: boolean
  readonly tso6: boolean
  readonly uso4: boolean
  readonly uso6: boolean
}

/** DeviceStats plus what only the TUN knows. */
export interface TunStats extends DeviceStats {
  avgPacketsPerBatch: number
  /** read() calls that returned a packet */
  reads: number
  readErrors: number
  /** times a reader found its next slab still held by JS (JS is the bottleneck) */
  slabWaits: number
  /** io 'inline': empty reads while busy polling */
  busyPolls: number
  writeEagain: number
  /** errno of the last failed write, 0 if none */
  lastWriteErrno: number
  writeBytes: number
  /** packets queued for the queue threads to write (writes lag behind by the backlog) */
  writeQueued: number
  /** of those, packets that were copied (not from the batch being processed) */
  writeCopied: number
  /** packets queued and not yet written (or failed) */
  writeBacklog: number
  /** the largest backlog seen after a writeBatch, in packets */
  writeBacklogMax: number
  /** times writeBatch found a queue full and waited for room (JS outpaces the kernel) */
  writeWaits: number
  /** total time writeBatch spent waiting for room */
  writeWaitMs: number
  /** packets given up on after waiting 200 ms for room (also in writeErrors, lastWriteErrno ENOBUFS) */
  writeDropped: number
  /** times a queue thread found packets to write (writes / drains = packets per drain) */
  writeDrains: number
}

export class TunOptionError extends TypeError {
  readonly code = 'ERR_INVALID_ARG_VALUE' as const
  override readonly name = 'TunOptionError'
}

interface MutableBatch {
  buf: Buffer
  count: number
  offsets: Uint32Array
  lengths: Uint32Array
}

interface Queue {
  readonly fd: number
  readonly reader: NativeReader
  readonly batches: MutableBatch[]
  /** the reader handle when its thread writes (writeMode 'queue'), null when writing on the JS thread */
  readonly writer: ReaderHandle | null
}

function offloadsFrom(flags: number): OffloadsAccepted {
  return {
    flags,
    csum: (flags & TunOffload.CSUM) !== 0,
    tso4: (flags & TunOffload.TSO4) !== 0,
    tso6: (flags & TunOffload.TSO6) !== 0,
    uso4: (flags & TunOffload.USO4) !== 0,
    uso6: (flags & TunOffload.USO6) !== 0,
  }
}

/** Runs `cmd args…`: undefined when it succeeded, else what went wrong (its stderr, or the spawn error). */
function tool(cmd: string, args: readonly string[]): Promise<string | undefined> {
  return new Promise(resolve => {
    execFile(cmd, args, (err, _stdout, stderr) => resolve(err ? String(stderr).trim() || err.message : undefined))
  })
}

async function ipLink(args: string[]): Promise<void> {
  const err = await tool('ip', ['link', 'set', ...args])
  if (err !== undefined) throw Object.assign(new Error(`ip link set ${args.join(' ')}: ${err}`), { code: 'ECOMMAND' })
}

/**
 * `tc qdisc replace dev <name> root noqueue` (the reason is on TunOptions.up): 'noqueue', or why the kernel's qdisc
 * stays (the TUN works either way). The bench's C reference sets its TUN up with this too.
 */
export async function setNoqueue(name: string): Promise<string> {
  const err = await tool('tc', ['qdisc', 'replace', 'dev', name, 'root', 'noqueue'])
  return err === undefined ? 'noqueue' : `kernel default (tc qdisc replace dev ${name} root noqueue: ${err})`
}

function intOption(name: string, v: number | undefined, def: number, min: number, max: number): number {
  if (v === undefined) return def
  if (!Number.isInteger(v) || v < min || v > max) throw new TunOptionError(`${name} must be an integer in ${min}..${max}, got ${v}`)
  return v
}

export class TunDevice implements Device {
  /** the interface's qdisc as openTun left it ('noqueue', or why not); '' for a queue a packet thread adopted */
  qdisc = ''
  readonly vnetHdr: boolean
  readonly offloadsAccepted: OffloadsAccepted
  private readonly queues: Queue[]
  private readonly hdrLen: number
  private readonly writeCounters = new Float64Array(4)
  private readonly readerCounters = new Float64Array(5)
  private readonly queueCounters = new Float64Array(WRITE_STATS)
  private writeFd: number
  private writer: ReaderHandle | null
  private started = false
  private refed = true
  private closed = false
  private batches = 0
  private packets = 0
  private bytes = 0
  private writes = 0

  /** Use openTun(). */
  constructor(
    private readonly native: NativeTun,
    readonly name: string,
    vnetHdr: boolean,
    offloads: number,
    fds: readonly number[],
    private readonly onError: (err: Error) => void,
    sizes: { slabs: number; slabBytes: number; maxBatch: number; writeMode: 'queue' | 'js'; writeRingBytes: number },
    readonly io: 'thread' | 'inline' = 'thread',
    private readonly busyPollUs = 0,
    /** false for a queue adopted by a packet thread: the host owns (and closes) the fd */
    private readonly ownsFds = true,
  ) {
    this.vnetHdr = vnetHdr
    this.hdrLen = vnetHdr ? VNET_HDR_LEN : 0
    this.offloadsAccepted = offloadsFrom(offloads)
    // Descriptors: room for two full batches, or one per KiB of ring (small copied packets), whichever is more.
    let slots = 64
    while (slots < Math.max(2 * sizes.maxBatch, sizes.writeRingBytes >> 10) && slots < 1 << 20) slots <<= 1
    const queued = sizes.writeMode === 'queue' && io === 'thread'
    this.queues = fds.map(fd => {
      const reader = queued
        ? native.readerCreate(fd, this.hdrLen, sizes.slabs, sizes.slabBytes, sizes.maxBatch, sizes.writeRingBytes, slots)
        : native.readerCreate(fd, this.hdrLen, sizes.slabs, sizes.slabBytes, sizes.maxBatch)
      const batches = reader.bufs.map((buf, i): MutableBatch => ({ buf, count: 0, offsets: reader.offsets[i]!, lengths: reader.lengths[i]! }))
      return { fd, reader, batches, writer: queued ? reader.handle : null }
    })
    this.writeFd = fds[0]!
    this.writer = this.queues[0]!.writer
  }

  /** One fd per queue (for diagnostics; the device owns them). */
  get fds(): readonly number[] {
    return this.queues.map(q => q.fd)
  }

  get queueCount(): number {
    return this.queues.length
  }

  get avgPacketsPerBatch(): number {
    return this.batches === 0 ? 0 : this.packets / this.batches
  }

  start(deliver: (batch: Batch) => void): void {
    if (this.closed) throw Object.assign(new Error(`TUN ${this.name} is closed`), { code: 'ERR_DEVICE_CLOSED' })
    if (this.started) throw Object.assign(new Error(`TUN ${this.name} was already started`), { code: 'ERR_INVALID_STATE' })
    this.started = true
    for (const q of this.queues) {
      const batches = q.batches
      const fd = q.fd
      const writer = q.writer
      const onBatch = (slab: number, count: number, bytes: number | NodeJS.ErrnoException): void => {
        const batch = slab >= 0 ? batches[slab] : undefined
        if (batch === undefined || typeof bytes !== 'number') {
          const err = typeof bytes === 'object' ? bytes : new Error(`TUN reader failed (errno ${count})`)
          err.message = `Reading TUN ${this.name} failed, its reader stopped: ${err.message}`
          this.onError(err)
          return
        }
        this.batches++
        this.packets += count
        this.bytes += bytes
        batch.count = count
        this.writeFd = fd // answers go out on the queue the batch came from
        this.writer = writer
        deliver(batch)
      }
      if (this.io === 'inline') this.native.readerStartInline(q.reader.handle, onBatch, this.busyPollUs)
      else this.native.readerStart(q.reader.handle, onBatch)
      if (!this.refed) this.native.readerRef(q.reader.handle, false)
    }
  }

  /**
   * writeMode 'queue': queues the packets for the queue thread and returns how many were queued (write() results
   * show up in stats(): writes, writeErrors, lastWriteErrno). Packets from the batch being processed are written
   * from the batch when the callback returns, so they must not be changed after this call; anything else is copied
   * and may be reused at once. When the queue is full this waits for room (writeWaits). 'js': writes right here
   * and returns how many were written.
   */
  writeBatch(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this.closed || count <= 0) return 0
    if (this.writer !== null) return this.native.readerWrite(this.writer, buf, offsets, lengths, count)
    const n = this.native.writeBatch(this.writeFd, buf, offsets, lengths, count, this.hdrLen, this.writeCounters)
    this.writes += n
    return n
  }

  stats(): TunStats {
    const w = this.writeCounters
    const r = [0, 0, 0, 0, 0]
    for (const q of this.queues) {
      // the readers' counters outlive close()
      this.native.readerStats(q.reader.handle, this.readerCounters)
      for (let i = 0; i < 5; i++) r[i]! += this.readerCounters[i]!
    }
    // Writes on the JS thread (writeMode 'js') and through the queues, summed.
    let writes = this.writes,
      eagain = w[0]!,
      errors = w[1]!,
      lastErrno = w[2]!,
      bytes = w[3]!
    let queued = 0,
      copied = 0,
      backlog = 0,
      backlogMax = 0,
      waits = 0,
      waitNs = 0,
      dropped = 0,
      drains = 0
    const c = this.queueCounters
    for (const q of this.queues) {
      if (q.writer === null) continue
      this.native.readerWriteStats(q.writer, c)
      writes += c[WriteStat.WRITES]!
      bytes += c[WriteStat.BYTES]!
      eagain += c[WriteStat.EAGAIN]!
      errors += c[WriteStat.ERRORS]! + c[WriteStat.INVALID]! + c[WriteStat.DROPPED]!
      if (c[WriteStat.LAST_ERRNO]! !== 0) lastErrno = c[WriteStat.LAST_ERRNO]!
      queued += c[WriteStat.QUEUED]!
      copied += c[WriteStat.COPIED]!
      backlog += c[WriteStat.QUEUED]! - c[WriteStat.WRITES]! - c[WriteStat.EAGAIN]! - c[WriteStat.ERRORS]!
      backlogMax = Math.max(backlogMax, c[WriteStat.MAX_BACKLOG]!)
      waits += c[WriteStat.WAITS]!
      waitNs += c[WriteStat.WAIT_NS]!
      dropped += c[WriteStat.DROPPED]!
      drains += c[WriteStat.DRAINS]!
    }
    return {
      batches: this.batches,
      packets: this.packets,
      bytes: this.bytes,
      writes,
      writeErrors: eagain + errors,
      avgPacketsPerBatch: this.avgPacketsPerBatch,
      reads: r[0]!,
      readErrors: r[1]!,
      slabWaits: r[2]!,
      busyPolls: r[4]!,
      writeEagain: eagain,
      lastWriteErrno: lastErrno,
      writeBytes: bytes,
      writeQueued: queued,
      writeCopied: copied,
      writeBacklog: backlog,
      writeBacklogMax: backlogMax,
      writeWaits: waits,
      writeWaitMs: waitNs / 1e6,
      writeDropped: dropped,
      writeDrains: drains,
    }
  }

  /** Whether a started device keeps the event loop alive (it does by default, like a listening socket). */
  ref(): this {
    this.refed = true
    for (const q of this.queues) this.native.readerRef(q.reader.handle, true)
    return this
  }
  unref(): this {
    this.refed = false
    for (const q of this.queues) this.native.readerRef(q.reader.handle, false)
    return this
  }

  /**
   * Stops the queue threads (each writes what was queued, then is joined), closes the fds; the kernel removes the
   * interface. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true
      for (const q of this.queues) this.native.readerStop(q.reader.handle)
      for (const q of this.queues) {
        if (!this.ownsFds) break
        try {
          this.native.close(q.fd)
        } catch {
          /* already gone */
        }
      }
    }
    return Promise.resolve()
  }
}

/**
 * Opens (creates) the TUN `opts.name` in the caller's network namespace, sets offloads, MTU and up, and returns it
 * ready to start(). Errors from the kernel carry the errno name as `code` (EPERM without CAP_NET_ADMIN, EBUSY when
 * the name is taken by another kind of device, EINVAL for a bad name).
 */
export async function openTun(opts: TunOptions): Promise<TunDevice> {
  const q = await openTunQueues(opts)
  const onError = opts.onError ?? ((err: Error) => process.emitWarning(err))
  const dev = new TunDevice(loadNative(), q.name, q.vnetHdr, q.offloads, q.fds, onError, q.sizes, q.io, q.busyPollUs)
  dev.qdisc = q.qdisc
  return dev
}

/**
 * An open TUN's queues as plain data (it crosses to packet threads, each adopting one fd with adoptTunQueue). The
 * opener owns the fds: closeTunQueues() closes them, and the kernel then removes the interface.
 */
export interface TunQueues {
  readonly name: string
  readonly vnetHdr: boolean
  /** TUNSETOFFLOAD bits the kernel took */
  readonly offloads: number
  readonly fds: readonly number[]
  readonly sizes: { slabs: number; slabBytes: number; maxBatch: number; writeMode: 'queue' | 'js'; writeRingBytes: number }
  readonly io: 'thread' | 'inline'
  readonly busyPollUs: number
  /** 'noqueue', or why the TUN kept the kernel's default qdisc */
  readonly qdisc: string
}

/** Opens the TUN like openTun, without readers: one fd per queue. */
export async function openTunQueues(opts: TunOptions): Promise<TunQueues> {
  const vnetHdr = opts.vnetHdr ?? false
  const offloads = opts.offloads ?? vnetHdr
  if (offloads && !vnetHdr) throw new TunOptionError('offloads need vnetHdr: GSO packets cannot be described without a virtio_net_hdr')
  const queues = intOption('queues', opts.queues, 1, 1, 64)
  const multiQueue = opts.multiQueue ?? queues > 1
  if (queues > 1 && !multiQueue) throw new TunOptionError('more than one queue needs multiQueue')
  if (opts.writeMode !== undefined && opts.writeMode !== 'queue' && opts.writeMode !== 'js') {
    throw new TunOptionError(`writeMode must be 'queue' or 'js', got ${String(opts.writeMode)}`)
  }
  if (opts.io !== undefined && opts.io !== 'thread' && opts.io !== 'inline') {
    throw new TunOptionError(`io must be 'thread' or 'inline', got ${String(opts.io)}`)
  }
  const sizes = {
    slabs: intOption('slabs', opts.slabs, 4, 2, 16),
    slabBytes: intOption('slabBytes', opts.slabBytes, 4 << 20, 128 << 10, 1 << 30),
    maxBatch: intOption('maxBatch', opts.maxBatch, 4096, 1, 1 << 20),
    writeMode: opts.writeMode ?? 'queue',
    writeRingBytes: intOption('writeRingBytes', opts.writeRingBytes, 8 << 20, 256 << 10, 1 << 30),
  }
  const link: string[] = []
  if (opts.mtu !== undefined) link.push('mtu', String(intOption('mtu', opts.mtu, 1500, 68, 65535)))
  if (opts.txqueuelen !== undefined) link.push('txqueuelen', String(intOption('txqueuelen', opts.txqueuelen, 500, 1, 1 << 20)))
  if (opts.up ?? true) link.push('up')
  const native = loadNative()
  const flags = (vnetHdr ? OPEN_VNET_HDR : 0) | (multiQueue ? OPEN_MULTI_QUEUE : 0)
  const fds: number[] = []
  try {
    const first = native.open(opts.name, flags)
    fds.push(first.fd)
    const name = first.name
    for (let i = 1; i < queues; i++) fds.push(native.open(name, flags).fd)
    // Without a vnet header the kernel must hand over finished packets, so offloads stay off (no call at all).
    const accepted = vnetHdr ? native.setOffload(first.fd, offloads ? WANTED_OFFLOADS : 0) : 0
    if (link.length > 0) await ipLink(['dev', name, ...link])
    const qdisc = (opts.up ?? true) ? await setNoqueue(name) : 'kernel default (link not brought up here)'
    const busyPollUs = intOption('busyPollUs', opts.busyPollUs, 0, 0, 1_000_000)
    return { name, vnetHdr, offloads: accepted, fds, sizes, io: opts.io ?? 'thread', busyPollUs, qdisc }
  } catch (e) {
    closeFds(fds)
    throw withFix(e, opts.name)
  }
}

/** A device over queue `i` of `q` (in a packet thread): it reads and writes that fd only and never closes it. */
export function adoptTunQueue(q: TunQueues, i: number, onError: (err: Error) => void): TunDevice {
  const fd = q.fds[i]
  if (fd === undefined) throw new TunOptionError(`TUN ${q.name} has ${q.fds.length} queues, no queue ${i}`)
  return new TunDevice(loadNative(), q.name, q.vnetHdr, q.offloads, [fd], onError, q.sizes, q.io, q.busyPollUs, false)
}

/** Closes the fds of openTunQueues (once no packet thread uses them). */
export function closeTunQueues(q: TunQueues): void {
  closeFds(q.fds)
}

function closeFds(fds: readonly number[]): void {
  const native = loadNative()
  for (const fd of fds) {
    try {
      native.close(fd)
    } catch {
      /* closing anyway */
    }
  }
}

/**
 * The fix, added to the kernel's message, when the TUN cannot be opened for lack of a device or of permission: the
 * usual causes are a container (recent containerd and runc no longer give unprivileged containers /dev/net/tun) and
 * a missing CAP_NET_ADMIN. The errno stays in `code`.
 */
function withFix(e: unknown, name: string): unknown {
  const err = e as NodeJS.ErrnoException
  if (err === null || typeof err !== 'object' || typeof err.message !== 'string') return e
  if (err.code === 'ENOENT' && err.syscall === 'open') {
    err.message +=
      ': there is no /dev/net/tun here. On a host: modprobe tun. In a container: run it privileged ' +
      '(deploy/daemonset.yaml does), or create the device node first (mknod /dev/net/tun c 10 200, needs CAP_MKNOD)'
  } else if ((err.code === 'EPERM' || err.code === 'EACCES') && err.syscall === 'open') {
    err.message +=
      ': not allowed to open /dev/net/tun. In a container the device must be allowed (run it privileged, ' +
      'as deploy/daemonset.yaml does: recent containerd and runc no longer allow it to unprivileged containers)'
  } else if (err.code === 'EPERM' && err.syscall === 'TUNSETIFF') {
    err.message +=
      `: creating TUN ${name} needs CAP_NET_ADMIN in this network namespace (run as root, or give the ` +
      'container NET_ADMIN / privileged, as deploy/daemonset.yaml does)'
  }
  return err
}
