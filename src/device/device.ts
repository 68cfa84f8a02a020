// The one interface the dataplane talks to: a TUN (native/) or an in-memory pair for tests.

/** Bytes of `struct virtio_net_hdr` that precede every packet when the device uses IFF_VNET_HDR. */
export const VNET_HDR_LEN = 10

/**
 * Packets read in one native→JS crossing. The memory belongs to the device and is valid only during the callback;
 * the dataplane rewrites packets in place and writes them back from the same memory.
 * offsets[i] is where packet i's IP header starts; with vnet headers on, its virtio_net_hdr sits at
 * offsets[i] - VNET_HDR_LEN. lengths[i] counts the IP packet only.
 */
export interface Batch {
  readonly buf: Buffer
  readonly count: number
  readonly offsets: Uint32Array
  readonly lengths: Uint32Array
}

export interface DeviceStats {
  batches: number
  packets: number
  bytes: number
  writes: number
  writeErrors: number
  /** packets / batches: how well one native→JS crossing is amortised (optional: added after the first devices) */
  avgPacketsPerBatch?: number
}

export interface Device {
  readonly name: string
  /** true when every packet carries a virtio_net_hdr (offload path) */
  readonly vnetHdr: boolean
  start(onBatch: (batch: Batch) => void): void
  /**
   * Writes `count` packets; same layout as Batch (with vnet headers on, VNET_HDR_LEN bytes before each offset
   * must hold the header, zeroed for packets tundra built). Returns packets written.
   */
  writeBatch(buf: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number
  stats(): DeviceStats
  close(): Promise<void>
}
