// Section 3, memory: RSS per conntrack entry with 1 000 000 connections in a NatEngine (a fresh child process, so
// the delta is the engine's), next to the bytes its typed arrays hold; and RSS of the packet path flooded with SYNs up
// to the default conntrack cap, through a snapshot and a count as the control thread makes them, and after the flood
// aged out (issue 14, finding 7: a count decoded the whole table into objects, ~1.4 KB per entry, and V8 kept it).
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { progress } from '../lib/progress'

export interface MemoryResult {
  readonly entries: number
  readonly capacity: number
  readonly rssBefore: number
  readonly rssEmpty: number
  readonly rssFull: number
  /** (RSS full − RSS before the engine existed) / entries */
  readonly rssPerEntry: number
  /** (RSS full − RSS of the empty engine) / entries */
  readonly rssPerEntryIncremental: number
  readonly engineBytes: number
  readonly engineBytesPerEntry: number
  readonly engineBytesPerSlot: number
  readonly v6TableBytes: number
  readonly fillNsPerSyn: number
  readonly flood?: FloodResult
}

/** The SYN flood (tools/flood-child.ts): RSS in bytes at each step. */
export interface FloodResult {
  readonly cap: number
  readonly syns: number
  readonly entries: number
  /** before the packet path existed */
  readonly rssBefore: number
  /** the packet path built, its tables allocated, nothing tracked: the fixed base of the bound */
  readonly rssBase: number
  readonly rssAtCap: number
  readonly rssAfterSnapshot: number
  readonly rssAfterCount: number
  /** after a filtered count (every entry decoded a chunk at a time, nothing kept): V8 keeps some of the heap it grew */
  readonly rssAfterScan: number
  readonly rssAgedOut: number
  readonly entriesAgedOut: number
  readonly ctBytes: number
  readonly heapAtCap: number
  /** the most RSS the process ever had (getrusage) */
  readonly rssPeak: number
  readonly externalAtCap: number
}

/** The design's bound per conntrack entry (the arrays take 115 B per slot, conntrack.ts). */
export const BYTES_PER_ENTRY_BOUND = 128
/**
 * Working room on top of the idle packet path: what a snapshot or a count passes through the allocator (64 conntrack
 * chunks of up to 512 KiB at the cap, which malloc may keep after they are freed: 0-10 MB measured) and V8 heap growth.
 */
export const FLOOD_HEADROOM = 16 << 20

/** RSS the design allows at the cap: the idle packet path + 128 B per entry + 16 MiB headroom. */
export function floodBound(f: FloodResult): number {
  return f.rssBase + BYTES_PER_ENTRY_BOUND * f.cap + FLOOD_HEADROOM
}

/** What an operator sees at the cap: the most of the flood itself, a snapshot and a count. */
export function rssAtCap(f: FloodResult): number {
  return Math.max(f.rssAtCap, f.rssAfterSnapshot, f.rssAfterCount)
}

/** 262 144: the default conntrack cap (conntrack.ts), flooded with 15 % more distinct SYNs than fit. */
const FLOOD_CAP = 262144

function child(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--expose-gc', join(__dirname, '..', 'tools', script), ...args],
      { timeout: 300_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => (err ? reject(new Error(`${script} failed: ${stderr || err.message}`)) : resolve(stdout.trim())),
    )
  })
}

export async function runMemory(quick: boolean): Promise<MemoryResult> {
  const r = await runFill(quick)
  progress('memory', `flooding the packet path with SYNs up to the conntrack cap (${FLOOD_CAP}) in a child process`)
  const flood = JSON.parse(await child('flood-child.js', [String(FLOOD_CAP)])) as FloodResult
  const mb = (b: number): string => (b / 1048576).toFixed(1)
  progress(
    'memory',
    `RSS: idle packet path ${mb(flood.rssBase)} MB, at the cap ${mb(rssAtCap(flood))} MB (bound ${mb(floodBound(flood))} MB), after a filtered scan ${mb(flood.rssAfterScan)} MB, aged out ${mb(flood.rssAgedOut)} MB`,
  )
  return { ...r, flood }
}

async function runFill(_quick: boolean): Promise<MemoryResult> {
  const n = 1_000_000 // the target is stated at a million; a fill takes a few seconds even in --quick
  progress('memory', `filling a NatEngine with ${n} connections in a child process`)
  const r = JSON.parse(await child('memory-child.js', [String(n)])) as MemoryResult
  progress(
    'memory',
    `${r.entries} entries: RSS ${r.rssPerEntry.toFixed(1)} B/entry (incremental ${r.rssPerEntryIncremental.toFixed(1)}), engine arrays ${r.engineBytesPerEntry.toFixed(1)} B/entry (${r.engineBytesPerSlot.toFixed(1)} B/slot × ${r.capacity} slots)`,
  )
  return r
}
