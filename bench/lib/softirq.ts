// How much of a dataplane process's CPU time was softirq work, so the e2e section counts that time once.
//
// The dataplane CPU of a TUN forwarder (tundra's agent, cref) is its own utime+stime plus all softirq time on the
// machine. With tick-based CPU accounting (this kernel: CONFIG_TICK_CPU_ACCOUNTING, no IRQ_TIME_ACCOUNTING) a tick
// that lands in softirq is charged to the softirq counter of /proc/stat *and* to the stime of whatever task was
// running. A TUN writer runs much of the forwarding in its own context: the backlog of the veth it forwarded to is
// processed when its write() re-enables bottom halves. Measured by hand (perf irq:softirq_entry/exit tracepoints, one
// TCP stream through tundra, 3 s): of 0.50 cores of softirq, 0.25 ran in the agent's context, and the agent's own
// 0.79 cores included them, so adding the two counted a quarter of the dataplane twice.
//
// The share is sampled with perf (cpu-clock on the process's threads, kernel call chains): a sample whose chain
// passes through the softirq entry is softirq work. The caller subtracts that share of the process's ticks.
import { rmSync } from 'node:fs'
import { haveCommand, run } from '../../src/netns/netns'

/** Samples of one process and how many of them were in softirq. */
export interface SoftirqSamples {
  readonly samples: number
  readonly softirq: number
}

/** The kernel's softirq entry (`handle_softirqs` since 6.8, `__do_softirq` before); every softirq runs through it. */
const SOFTIRQ_ENTRY = /\s(handle_softirqs|__do_softirq)(\+0x[0-9a-f]+)?\s*$/m

/**
 * `perf script -F tid,ip,sym` of a recording with call chains: one block per sample (a header line, then one frame
 * per line), blocks separated by blank lines. Counts the samples and those with the softirq entry in their chain.
 */
export function parseSoftirqSamples(text: string): SoftirqSamples {
  let samples = 0
  let softirq = 0
  for (const block of text.split(/\n\s*\n/)) {
    if (block.trim() === '') continue
    samples++
    if (SOFTIRQ_ENTRY.test(block)) softirq++
  }
  return { samples, softirq }
}

/**
 * Cores a TUN forwarder's dataplane used: all softirq, plus the process's own time outside softirq. `share` is the
 * fraction of the process's samples in softirq (undefined: not measured, and the process's whole time is added, as
 * the kernel's counters give it: an over-count).
 */
export function forwarderCores(softirqCores: number, processCores: number, share: number | undefined): number {
  const own = Number.isFinite(processCores) ? processCores : 0
  const outside = share !== undefined && share >= 0 && share <= 1 ? own * (1 - share) : own
  return softirqCores + outside
}

/** At least this many samples, or the share is not used (a process that barely ran, a perf that failed). */
export const MIN_SAMPLES = 200

/**
 * Starts sampling `pid` for `seconds` with perf; `done()` gives the share of its samples in softirq, or undefined
 * with the reason (no perf, too few samples, perf failed). The recording goes to `file`, removed afterwards.
 */
export function sampleSoftirq(pid: number, seconds: number, file: string): { done(): Promise<{ share?: number; samples: number; why?: string }> } {
  if (!haveCommand('perf')) return { done: async () => ({ samples: 0, why: 'perf is not installed (Debian: linux-perf)' }) }
  const rec = run(
    ['perf', 'record', '-q', '-e', 'cpu-clock', '-F', '999', '-g', '--kernel-callchains', '-p', String(pid), '-o', file, '--', 'sleep', String(seconds)],
    { timeoutMs: (seconds + 20) * 1000 },
  )
  return {
    async done() {
      try {
        const r = await rec
        if (r.code !== 0) return { samples: 0, why: `perf record exited ${r.code}: ${r.stderr.trim().split('\n').pop() ?? ''}` }
        const s = await run(['perf', 'script', '-i', file, '-F', 'tid,ip,sym'], { timeoutMs: 60_000 })
        if (s.code !== 0) return { samples: 0, why: `perf script exited ${s.code}: ${s.stderr.trim().split('\n').pop() ?? ''}` }
        const n = parseSoftirqSamples(s.stdout)
        if (n.samples < MIN_SAMPLES) return { samples: n.samples, why: `only ${n.samples} samples` }
        return { share: n.softirq / n.samples, samples: n.samples }
      } finally {
        rmSync(file, { force: true })
      }
    },
  }
}
