// A UDP socket read and written in batches by the native addon (native/tun.c udpOpen…udpClose): one recvmmsg per
// batch into an area the caller reads in place, one call per batch, one sendmmsg for its answers. Nothing is
// allocated per datagram; the caller keeps its own offsets/lengths/peer-index arrays for what it sends.
import type { AddressInfo } from 'node:net'
import { loadNative } from './native'

/** Bytes per peer address in `peers`: a struct sockaddr_in or sockaddr_in6 as the kernel wrote it. */
export const UDP_PEER_BYTES = 28

declare const udpBrand: unique symbol
type UdpHandle = { readonly [udpBrand]: true }

/** The addon's functions for batched UDP, exactly as native/tun.c exports them. */
interface NativeUdp {
  udpOpen(
    address: string,
    port: number,
    maxDatagrams: number,
    slotBytes: number,
  ): { handle: UdpHandle; address: string; family: 'IPv4' | 'IPv6'; port: number; buf: Buffer; lengths: Uint32Array; peers: Uint8Array }
  udpStart(handle: UdpHandle, cb: (count: number) => void): void
  udpSend(
    handle: UdpHandle,
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    peers: Uint8Array,
    peerIdx: Uint32Array,
    count: number,
    counters: Float64Array,
  ): number
  udpStats(handle: UdpHandle, out: Float64Array): void
  udpClose(handle: UdpHandle): void
}

export interface BatchUdpOptions {
  /** datagrams per recvmmsg (1..1024) */
  readonly maxDatagrams: number
  /** bytes per datagram slot (512..65536); a longer datagram arrives cut short, its length says so */
  readonly slotBytes: number
}

/**
 * A bound UDP socket whose reads arrive as batches: `onBatch(count)` runs on the opening thread's event loop with
 * datagram i at `buf[i * slotBytes ..]`, `lengths[i]` bytes long (more than slotBytes: cut short), sent by the peer at
 * `peers[i * UDP_PEER_BYTES ..]`. The area is reused when onBatch returns: copy what must outlive it.
 */
export class BatchUdpSocket {
  readonly buf: Buffer
  readonly lengths: Uint32Array
  readonly peers: Uint8Array
  readonly slotBytes: number
  readonly maxDatagrams: number
  /**
   * Every send adds to it: [datagrams dropped for a full socket buffer (EAGAIN, ENOBUFS: not retried), dropped for
   * another reason (bad address, unreachable), last errno, bytes sent]
   */
  readonly counters = new Float64Array(4)
  private readonly native: NativeUdp
  private readonly handle: UdpHandle
  private readonly bound: AddressInfo
  private open = true

  /** Binds `address:port` (an IP address; port 0: the kernel picks) and starts reading. Throws errno errors (EADDRINUSE). */
  constructor(address: string, port: number, opts: BatchUdpOptions, onBatch: (count: number) => void) {
    const native = loadNative() as unknown as Partial<NativeUdp>
    if (typeof native.udpOpen !== 'function') {
      throw new Error('The native addon predates the batched UDP socket; run npm run build:native')
    }
    const n = native as NativeUdp
    const s = n.udpOpen(address, port, opts.maxDatagrams, opts.slotBytes)
    this.handle = s.handle
    this.buf = s.buf
    this.lengths = s.lengths
    this.peers = s.peers
    this.slotBytes = opts.slotBytes
    this.maxDatagrams = opts.maxDatagrams
    this.bound = { address: s.address, family: s.family, port: s.port }
    this.native = n
    n.udpStart(this.handle, onBatch)
  }

  get closed(): boolean {
    return !this.open
  }

  address(): AddressInfo {
    return { ...this.bound }
  }

  /**
   * sendmmsg of `buf[offsets[i] ..+ lengths[i]]` to the peer at `peers[peerIdx[i] * UDP_PEER_BYTES ..]` for i < count;
   * returns how many the kernel took. The rest are counted in `counters` (never retried, never waited for).
   */
  send(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, peers: Uint8Array, peerIdx: Uint32Array, count: number): number {
    return this.native.udpSend(this.handle, buf, offsets, lengths, peers, peerIdx, count, this.counters)
  }

  /** [recvmmsg calls, datagrams, batches, receive errors] */
  stats(): Float64Array {
    const out = new Float64Array(4)
    this.native.udpStats(this.handle, out)
    return out
  }

  /** Idempotent; the port is free when it returns and no onBatch runs afterwards. */
  close(): void {
    if (!this.open) return
    this.open = false
    this.native.udpClose(this.handle)
  }
}
