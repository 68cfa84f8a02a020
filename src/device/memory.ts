// An in-memory Device for tests: packets injected by the test arrive in batches laid out exactly like the TUN's
// (one slab, optional virtio_net_hdr before each packet), and every packet written is captured (or handed to a peer).
import type { Batch, Device, DeviceStats } from './device'
import { VNET_HDR_LEN } from './device'
import { readVnetHdr, writeVnetHdr, type VnetHdrFields } from './vnet'

export interface MemoryDeviceOptions {
  name?: string
  /** packets carry a virtio_net_hdr, as on a TUN opened with vnetHdr (default false) */
  vnetHdr?: boolean
  /** most packets per batch (default 256) */
  maxBatch?: number
  /** bytes of the slab one batch is laid out in (default 1 MiB) */
  slabBytes?: number
  /** deliver injected packets on the next turn of the event loop (default true); otherwise call flush() */
  autoFlush?: boolean
  /** keep copies of written packets in `written` (default true) */
  capture?: boolean
  /** overwrite the slab with 0xEE after each callback, so code that keeps batch memory fails loudly (default true) */
  poison?: boolean
}

/** A written packet as the device saw it: a copy of the IP packet and, with vnet headers, its header's fields. */
export interface CapturedPacket {
  readonly data: Buffer
  readonly vnet: VnetHdrFields | null
}

interface Pending {
  readonly data: Buffer
  readonly vnet: Partial<VnetHdrFields> | null
}

const ALIGN = 8

export class MemoryDevice implements Device {
  readonly name: string
  readonly vnetHdr: boolean
  /** packets written so far (when capture is on) */
  readonly written: CapturedPacket[] = []
  /** when set, written packets are injected into the peer instead of (as well as) being captured */
  peer: MemoryDevice | null = null

  private readonly slab: Buffer
  private readonly batch: { buf: Buffer; count: number; offsets: Uint32Array; lengths: Uint32Array }
  private readonly maxBatch: number
  private readonly autoFlush: boolean
  private readonly capture: boolean
  private readonly poison: boolean
  private queue: Pending[] = []
  private head = 0
  private onBatch: ((batch: Batch) => void) | null = null
  private scheduled = false
  private closed = false
  private delivering = false
  private failWrites = 0
  private readonly counters: DeviceStats = { batches: 0, packets: 0, bytes: 0, writes: 0, writeErrors: 0 }

  constructor(opts: MemoryDeviceOptions = {}) {
    this.name = opts.name ?? 'mem0'
    this.vnetHdr = opts.vnetHdr ?? false
    this.maxBatch = opts.maxBatch ?? 256
    this.autoFlush = opts.autoFlush ?? true
    this.capture = opts.capture ?? true
    this.poison = opts.poison ?? true
    this.slab = Buffer.alloc(opts.slabBytes ?? 1 << 20)
    this.batch = { buf: this.slab, count: 0, offsets: new Uint32Array(this.maxBatch), lengths: new Uint32Array(this.maxBatch) }
  }

  start(onBatch: (batch: Batch) => void): void {
    if (this.closed) throw Object.assign(new Error(`device ${this.name} is closed`), { code: 'ERR_DEVICE_CLOSED' })
    if (this.onBatch) throw Object.assign(new Error(`device ${this.name} was already started`), { code: 'ERR_INVALID_STATE' })
    this.onBatch = onBatch
    this.schedule()
  }

  /**
   * Queues a copy of one IP packet for delivery. With vnet headers, `vnet` fills the header (zero when omitted);
   * without them it must be absent.
   */
  inject(packet: Uint8Array, vnet?: Partial<VnetHdrFields>): void {
    if (this.closed) return
    if (vnet !== undefined && !this.vnetHdr) throw new TypeError(`device ${this.name} has no vnet headers`)
    const room = this.slab.length - (this.vnetHdr ? VNET_HDR_LEN : 0)
    if (packet.length === 0 || packet.length > room) throw new RangeError(`packet of ${packet.length} bytes does not fit a ${this.slab.length}-byte slab`)
    this.queue.push({ data: Buffer.from(packet), vnet: this.vnetHdr ? (vnet ?? {}) : null })
    this.schedule()
  }

  /** Packets injected and not yet delivered. */
  get pending(): number {
    return this.queue.length - this.head
  }

  /**
   * Delivers queued packets now, in batches of at most maxBatch (fewer when the slab fills); returns how many
   * batches were delivered. Does nothing before start() or when called from inside a batch callback.
   */
  flush(): number {
    const cb = this.onBatch
    if (!cb || this.closed || this.delivering) return 0
    let n = 0
    this.delivering = true
    try {
      while (this.pending > 0 && !this.closed) {
        const used = this.fill()
        const b = this.batch
        this.counters.batches++
        n++
        try {
          cb(b)
        } finally {
          if (this.poison) this.slab.fill(0xee, 0, used)
        }
      }
    } finally {
      this.delivering = false
    }
    return n
  }

  /** Resolves once every queued packet (including ones injected by deliveries along the way) has been delivered. */
  async drain(): Promise<void> {
    while (this.pending > 0 && this.onBatch && !this.closed) {
      this.flush()
      await new Promise<void>(resolve => setImmediate(resolve))
    }
  }

  /** Returns the captured packets and forgets them. */
  takeWritten(): CapturedPacket[] {
    return this.written.splice(0)
  }

  /** Fault injection: the next `n` packets written fail (counted in writeErrors, not captured). */
  failNextWrites(n: number): void {
    this.failWrites = n
  }

  writeBatch(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this.closed) return 0
    const hdr = this.vnetHdr ? VNET_HDR_LEN : 0
    let ok = 0
    for (let i = 0; i < count; i++) {
      const off = offsets[i]!
      const len = lengths[i]!
      if (this.failWrites > 0 || off < hdr || len === 0 || off + len > buf.length) {
        if (this.failWrites > 0) this.failWrites--
        this.counters.writeErrors++
        continue
      }
      const data = Buffer.from(buf.subarray(off, off + len))
      const vnet = hdr ? readVnetHdr(buf, off - hdr) : null
      if (this.capture) this.written.push({ data, vnet })
      if (this.peer) {
        if (this.peer.vnetHdr) this.peer.inject(data, vnet ?? {})
        else this.peer.inject(data)
      }
      ok++
    }
    this.counters.writes += ok
    return ok
  }

  stats(): DeviceStats {
    const c = this.counters
    return { ...c, avgPacketsPerBatch: c.batches === 0 ? 0 : c.packets / c.batches }
  }

  close(): Promise<void> {
    this.closed = true
    this.queue = []
    this.head = 0
    this.onBatch = null
    return Promise.resolve()
  }

  /** Lays the next packets out in the slab; returns the bytes used. */
  private fill(): number {
    const b = this.batch
    const hdr = this.vnetHdr ? VNET_HDR_LEN : 0
    let pos = 0
    let count = 0
    while (count < this.maxBatch && this.head < this.queue.length) {
      const p = this.queue[this.head]!
      if (pos + hdr + p.data.length > this.slab.length) break
      if (p.vnet) writeVnetHdr(this.slab, pos, p.vnet)
      p.data.copy(this.slab, pos + hdr)
      b.offsets[count] = pos + hdr
      b.lengths[count] = p.data.length
      this.counters.packets++
      this.counters.bytes += p.data.length
      count++
      pos = (pos + hdr + p.data.length + ALIGN - 1) & ~(ALIGN - 1)
      this.head++
    }
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
    }
    b.count = count
    return pos
  }

  private schedule(): void {
    if (!this.autoFlush || this.scheduled || !this.onBatch || this.pending === 0) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      this.flush()
    })
  }
}

/** Two memory devices wired back to back: what one writes, the other reads (and both still capture). */
export function memoryPair(opts: MemoryDeviceOptions = {}): [MemoryDevice, MemoryDevice] {
  const a = new MemoryDevice({ ...opts, name: `${opts.name ?? 'mem'}a` })
  const b = new MemoryDevice({ ...opts, name: `${opts.name ?? 'mem'}b` })
  a.peer = b
  b.peer = a
  return [a, b]
}
