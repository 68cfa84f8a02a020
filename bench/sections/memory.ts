// Section 3, memory: RSS per conntrack entry with 1 000 000 connections in a NatEngine (a fresh child process, so
// the delta is the engine's), next to the bytes its typed arrays hold.
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
}

export function runMemory(_quick: boolean): Promise<MemoryResult> {
  const n = 1_000_000 // the target is stated at a million; a fill takes a few seconds even in --quick
  progress('memory', `filling a NatEngine with ${n} connections in a child process`)
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--expose-gc', join(__dirname, '..', 'tools', 'memory-child.js'), String(n)],
      { timeout: 300_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`memory child failed: ${stderr || err.message}`))
        const r = JSON.parse(stdout.trim()) as MemoryResult
        progress(
          'memory',
          `${r.entries} entries: RSS ${r.rssPerEntry.toFixed(1)} B/entry (incremental ${r.rssPerEntryIncremental.toFixed(1)}), engine arrays ${r.engineBytesPerEntry.toFixed(1)} B/entry (${r.engineBytesPerSlot.toFixed(1)} B/slot × ${r.capacity} slots)`,
        )
        resolve(r)
      },
    )
  })
}
