// `tundra capture`: a pcapng of what the packet loop sees, before and/or after translation, with the verdict of each
// packet as a comment. The loop holds `capture: Capture | null`; when nobody captures the cost is that null check.
import { openSync, writeSync, closeSync } from 'node:fs'
import { NAT_ACTION_NAMES } from '../nat/verdict'

/** LINKTYPE_RAW: each record starts with an IPv4 or IPv6 header. */
const LINKTYPE_RAW = 101
const SNAPLEN = 65535

/** Verdict names by NatAction code, as the packet comments show them. */
export const CAPTURE_VERDICTS: readonly string[] = NAT_ACTION_NAMES

export interface CaptureOptions {
  readonly path: string
  /** IPv4 addresses (as unsigned ints) of interest: a packet matches when its source or destination is one; empty = all */
  readonly addresses: readonly number[]
  readonly pre: boolean
  readonly post: boolean
  /** stop after this many records */
  readonly maxRecords: number
}

export class Capture {
  records = 0
  private readonly fd: number
  private readonly match: Set<number> | null
  private closed = false
  private readonly hdr = Buffer.alloc(28)

  constructor(
    readonly opts: CaptureOptions,
    private readonly onDone: (c: Capture) => void,
  ) {
    this.fd = openSync(opts.path, 'w')
    this.match = opts.addresses.length > 0 ? new Set(opts.addresses.map(a => a >>> 0)) : null
    writeSync(this.fd, sectionHeader())
    writeSync(this.fd, interfaceDescription())
  }

  get done(): boolean {
    return this.closed
  }

  wants(src: number, dst: number): boolean {
    return this.match === null || this.match.has(src >>> 0) || this.match.has(dst >>> 0)
  }

  /** Records one packet (a copy is written out at once: the loop's buffer is reused). */
  record(buf: Buffer, off: number, len: number, comment: string): void {
    if (this.closed) return
    const capLen = Math.min(len, SNAPLEN)
    const pad = (4 - (capLen % 4)) % 4
    const text = Buffer.from(comment, 'utf8')
    const optLen = 4 + text.length + ((4 - (text.length % 4)) % 4) + 4
    const total = 28 + capLen + pad + optLen + 4
    const now = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000))
    const h = this.hdr
    h.writeUInt32LE(6, 0) // Enhanced Packet Block
    h.writeUInt32LE(total, 4)
    h.writeUInt32LE(0, 8) // interface 0
    h.writeUInt32LE(Number(now >> 32n), 12)
    h.writeUInt32LE(Number(now & 0xffffffffn), 16)
    h.writeUInt32LE(capLen, 20)
    h.writeUInt32LE(len, 24)
    const tail = Buffer.alloc(pad + optLen + 4)
    let o = pad
    tail.writeUInt16LE(1, o) // opt_comment
    tail.writeUInt16LE(text.length, o + 2)
    text.copy(tail, o + 4)
    o += 4 + text.length + ((4 - (text.length % 4)) % 4)
    o += 4 // opt_endofopt
    tail.writeUInt32LE(total, o)
    writeSync(this.fd, h)
    writeSync(this.fd, buf, off, capLen)
    writeSync(this.fd, tail)
    if (++this.records >= this.opts.maxRecords) this.close()
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    closeSync(this.fd)
    this.onDone(this)
  }
}

function sectionHeader(): Buffer {
  const b = Buffer.alloc(28)
  b.writeUInt32LE(0x0a0d0d0a, 0)
  b.writeUInt32LE(28, 4)
  b.writeUInt32LE(0x1a2b3c4d, 8)
  b.writeUInt16LE(1, 12)
  b.writeUInt16LE(0, 14)
  b.writeBigInt64LE(-1n, 16) // section length unknown
  b.writeUInt32LE(28, 24)
  return b
}

function interfaceDescription(): Buffer {
  // 8 (type,len) + 8 (linktype,reserved,snaplen) + 8 (if_tsresol option padded) + 4 (opt_endofopt) + 4 (len) = 32
  const b = Buffer.alloc(32)
  b.writeUInt32LE(1, 0)
  b.writeUInt32LE(32, 4)
  b.writeUInt16LE(LINKTYPE_RAW, 8)
  b.writeUInt16LE(0, 10)
  b.writeUInt32LE(SNAPLEN, 12)
  b.writeUInt16LE(9, 16)
  b.writeUInt16LE(1, 18)
  b.writeUInt8(6, 20)
  b.writeUInt32LE(0, 24)
  b.writeUInt32LE(32, 28)
  return b
}
