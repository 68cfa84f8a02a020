// Loads the TUN addon (native/tun.c) once and types its functions; everything else in src/ uses tun.ts instead.
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'

/** The addon's functions, exactly as native/tun.c exports them. Errors carry `code` (errno name), `errno`, `syscall`. */
export interface NativeTun {
  /** flags: OPEN_VNET_HDR | OPEN_MULTI_QUEUE; an empty name lets the kernel choose (`tun0`, …) */
  open(name: string, flags: number): { fd: number; name: string }
  /** TUNSETOFFLOAD; retries without the USO bits on kernels that refuse them; returns the accepted flags */
  setOffload(fd: number, flags: number): number
  close(fd: number): void
  /** counters += [EAGAIN, other errors, last errno, bytes written]; returns packets written */
  writeBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, hdrLen: number, counters: Float64Array): number
  /** With writeRingBytes > 0 the reader gets a write queue that its thread writes (readerWrite). */
  readerCreate(fd: number, hdrLen: number, slabs: number, slabBytes: number, maxPackets: number, writeRingBytes?: number, writeSlots?: number): NativeReader
  /** cb(slab, count, bytes) per batch; cb(-1, errno, error) once if reading fails for good (the reader stops) */
  readerStart(handle: ReaderHandle, cb: (slab: number, count: number, bytes: number | NodeJS.ErrnoException) => void): void
  /**
   * The same callbacks without a thread: the JS thread's event loop polls the fd and calls cb with a batch read
   * right there (slab 0); the reader must have no write queue (answers go out with writeBatch).
   */
  readerStartInline(handle: ReaderHandle, cb: (slab: number, count: number, bytes: number | NodeJS.ErrnoException) => void, busyPollUs?: number): void
  readerRef(handle: ReaderHandle, ref: boolean): void
  /** Writes what was handed over, joins the thread; idempotent; no callback runs afterwards. */
  readerStop(handle: ReaderHandle): void
  /**
   * Queues `count` packets (with the hdrLen bytes before each) for the reader thread to write and returns how many
   * were queued. Packets in the slab of the batch being processed are handed over when the callback returns and
   * are not copied; others are copied, so their memory may be reused at once. Waits (bounded) for room when full.
   * Without a running thread (before start, after stop) it writes right here.
   */
  readerWrite(handle: ReaderHandle, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number
  /**
   * out = WriteStat order. writes/bytes/eagain/errors/lastErrno: write() results; drains: times the thread found
   * packets to write; queued (of which copied): accepted by readerWrite; invalid: refused by it (EINVAL); waits and
   * waitNs: readerWrite waiting for room; dropped: given up on after waiting (ENOBUFS); maxBacklog: most packets
   * queued and not yet written after a readerWrite.
   */
  readerWriteStats(handle: ReaderHandle, out: Float64Array): void
  /** out = [reads, readErrors, slabWaits, dispatches, busy polls (inline: empty reads while busy polling)] */
  readerStats(handle: ReaderHandle, out: Float64Array): void
}

declare const readerBrand: unique symbol
export type ReaderHandle = { readonly [readerBrand]: true }

/** Indexes into readerWriteStats' output. */
export const WriteStat = {
  WRITES: 0,
  BYTES: 1,
  EAGAIN: 2,
  ERRORS: 3,
  LAST_ERRNO: 4,
  DRAINS: 5,
  QUEUED: 6,
  COPIED: 7,
  INVALID: 8,
  WAITS: 9,
  WAIT_NS: 10,
  DROPPED: 11,
  MAX_BACKLOG: 12,
} as const
export const WRITE_STATS = 13

export interface NativeReader {
  readonly handle: ReaderHandle
  readonly bufs: Buffer[]
  readonly offsets: Uint32Array[]
  readonly lengths: Uint32Array[]
}

export const OPEN_VNET_HDR = 1
export const OPEN_MULTI_QUEUE = 2

/** The directory holding package.json, found from src/device (tap) or dist/src/device (compiled). */
export function repoRoot(from: string = __dirname): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`)
  }
}

/** Where the addon is expected: $TUNDRA_NATIVE, else native/build/Release/tundra_native.node under the repo root. */
export function addonPath(): string {
  return process.env['TUNDRA_NATIVE'] ?? join(repoRoot(), 'native', 'build', 'Release', 'tundra_native.node')
}

class NativeMissingError extends Error {
  readonly code = 'ERR_TUNDRA_NATIVE_MISSING' as const
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`The TUN addon is not built (${path}); run npm run build:native`, { cause })
  }
}

let cached: NativeTun | undefined

/** Loads the addon; throws NativeMissingError when it has not been built. */
export function loadNative(): NativeTun {
  if (cached) return cached
  const path = addonPath()
  try {
    cached = require(path) as NativeTun
  } catch (e) {
    if (!existsSync(path)) throw new NativeMissingError(path, e)
    throw e
  }
  return cached
}
