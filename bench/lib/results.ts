// bench/RESULTS.md (committed): the latest full run as the machine, the conditions, the summary table, the control
// plane detail and the charts, written from a run's JSON with the charts copied to bench/results/ (bench/out/ is not
// committed). Rendering is pure (unit-tested); writeResults does the files.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join, relative } from 'node:path'
import { SECTIONS } from './args'
import { charts, fmt, fmtOver, hasCrefColumn, kernelColumns, rowCells, summarize, type BenchReport, type SummaryRow } from './report'
import { tickLabel } from './svg'

/** Captions of the charts, in the order RESULTS.md shows them. */
const CHARTS: readonly [string, string][] = [
  ['throughput.svg', 'TCP throughput through a ClusterIP'],
  ['pps.svg', 'UDP 64-byte datagrams'],
  ['latency.svg', 'Latency through a ClusterIP'],
  ['connections.svg', 'New connections per second'],
  ['firstpacket.svg', 'First vs last service'],
  ['sync.svg', 'Sync time against the number of services'],
  ['dns.svg', 'DNS queries per second'],
  ['churn.svg', 'Endpoint churn: change to dataplane'],
  ['churn-probe.svg', 'Endpoint churn: probe latency added'],
]

export interface ResultsOptions {
  /** the JSON the page is made from, as the page should name it (repo-relative) */
  readonly source: string
  /** folder of the charts relative to RESULTS.md */
  readonly chartDir: string
  /** a sentence about the conditions of the run, added to the automatic one */
  readonly note?: string
}

/** 1-minute load averages seen during the run: at the start and around every section. */
export function loadAverages(r: BenchReport): number[] {
  const first = (s: unknown): number => (typeof s === 'string' ? Number(s.trim().split(/\s+/)[0]) : NaN)
  const out = [first(r.meta['loadAverageAtStart'])]
  const sections = r.meta['sections']
  if (sections && typeof sections === 'object' && !Array.isArray(sections)) {
    for (const v of Object.values(sections as Record<string, { start?: string; end?: string }>)) out.push(first(v?.start), first(v?.end))
  }
  return out.filter(Number.isFinite)
}

/** How long the run took, s: meta.totalSeconds, else from the JSON's file name stamp minus meta.date. */
export function runSeconds(r: BenchReport, file?: string): number | undefined {
  const total = r.meta['totalSeconds']
  if (typeof total === 'number' && Number.isFinite(total)) return total
  const m = file ? /bench-(\d{4}-\d\d-\d\d)T(\d\d)-(\d\d)-(\d\d)-(\d{3})Z\.json$/.exec(basename(file)) : null
  const start = Date.parse(String(r.meta['date'] ?? ''))
  if (!m || !Number.isFinite(start)) return undefined
  const end = Date.parse(`${m[1]}T${m[2]}:${m[3]}:${m[4]}.${m[5]}Z`)
  return end > start ? (end - start) / 1000 : undefined
}

const cell = (s: string): string => s.replace(/\|/g, '\\|')

/**
 * The table's ratio column: the stdout table's comparison, except where the target is absolute (tundra's own value,
 * already in the tundra column): there tundra ÷ the fastest kernel contender, when one was measured.
 */
function ratioCell(r: SummaryRow, compare: string): string {
  if (r.compareKind !== 'value') return compare
  const k = Object.values(r.kernel).filter(v => Number.isFinite(v) && v > 0)
  if (k.length === 0 || !Number.isFinite(r.tundra)) return '–'
  const q = r.tundra / Math.min(...k)
  return `${q >= 0.1 ? q.toFixed(2) : q.toPrecision(2)}×`
}
const row = (cells: readonly string[]): string => `| ${cells.map(cell).join(' | ')} |`

/** The conditions paragraph: says so when the machine was loaded (1-minute load above half its CPUs). */
export function conditions(r: BenchReport, note?: string): string {
  const cpus = Number(r.meta['cpus']) || 1
  const loads = loadAverages(r)
  const parts: string[] = []
  if (loads.length > 0) {
    const start = loads[0]!
    const max = Math.max(...loads)
    // The load during the run is mostly the bench's own (iperf, sockperf, dnsperf, the dataplanes): only the start
    // says whether something else was on the machine.
    const loaded = start > cpus * 0.5
    const during = max > start ? ` and up to ${max.toFixed(2)} during the run (the bench's own load included)` : ''
    parts.push(
      loaded
        ? `**These numbers were taken while the machine was loaded**: load average ${start.toFixed(2)} at the start${during}, on ${cpus} CPUs ` +
            '(the 1-minute average at the start counts other work, or work that had just ended). Absolute numbers are lower and noisier than on an ' +
            'idle machine; the comparisons are fairer than the absolute values, since every e2e, first-packet and DNS round runs the ' +
            'contenders back to back (order rotated) and the table shows medians.'
        : `The machine was quiet: load average ${start.toFixed(2)} at the start${during}, on ${cpus} CPUs.`,
    )
  }
  if (note) parts.push(note)
  return parts.join(' ')
}

/** The control plane at every size: tundra's compile and change next to each kernel loader's full load and change. */
export function syncTable(r: BenchReport): string[] {
  if (!r.sync || r.sync.length === 0) return []
  const loaders = (['iptables-nft', 'iptables-legacy', 'nftables'] as const).filter(l => r.sync!.some(s => s.kernel[l] !== undefined))
  const head = ['services', 'tundra compile', 'tundra change', ...loaders.flatMap(l => [`${l} full`, `${l} change`])]
  const ms = (v: number | undefined, over: number | undefined): string =>
    typeof v === 'number' && Number.isFinite(v)
      ? v >= 10_000
        ? `${(v / 1000).toFixed(1)} s`
        : `${fmt(v, 'ms')} ms`
      : typeof over === 'number'
        ? fmtOver(over, 'ms')
        : '–'
  const lines = [row(head), row(head.map((_, i) => (i === 0 ? '---' : '---:')))]
  for (const s of r.sync) {
    lines.push(
      row([
        tickLabel(s.services),
        ms(s.compileMs, undefined),
        ms(s.updateMs, undefined),
        ...loaders.flatMap(l => {
          const k = s.kernel[l]
          if (!k) return ['', '']
          if (k.fullMs === undefined && k.fullOverMs === undefined) return [k.error ? 'failed' : 'not run', k.error ? 'failed' : 'not run']
          return [ms(k.fullMs, k.fullOverMs), k.fullOverMs !== undefined ? 'not measured' : ms(k.deltaMs, k.deltaOverMs)]
        }),
      ]),
    )
  }
  return lines
}

/**
 * The packet thread's longest single steps between two batches of packets, from the micro section: what an install or
 * a control-thread request holds it for (ARCHITECTURE.md: every request is bounded).
 */
export function packetThreadTable(r: BenchReport): string[] {
  const m = r.micro
  if (!m) return []
  const out: string[][] = []
  const us = (ns: number): string => (ns >= 1e6 ? `${fmt(ns / 1e6, 'ms')} ms` : `${fmt(ns / 1000, 'µs')} µs`)
  for (const x of m.results) {
    if (/^nat (image|conntrack) /.test(x.group) && /packet side/.test(x.name)) out.push([`${x.group}: ${x.name}`, us(x.nsPerOp)])
  }
  for (const x of m.oneShot ?? []) {
    if (/^nat (image|stale flush) /.test(x.name)) out.push([x.name, us(x.nsPerEntry * x.entries)])
  }
  if (out.length === 0) return []
  return [row(['step on the packet thread', 'time']), row(['---', '---:']), ...out.map(row)]
}

/** What was not measured, and why (skipped sections, unavailable contenders, loads stopped at the cap). */
export function notMeasured(r: BenchReport): string[] {
  const out: string[] = []
  for (const [s, why] of Object.entries(r.skipped ?? {})) out.push(`${s}: ${why}`)
  for (const c of r.e2e?.contenders ?? []) if (!c.available) out.push(`e2e ${c.contender}: ${c.error ?? 'not measured'}`)
  for (const c of r.firstpacket?.contenders ?? []) if (!c.available) out.push(`firstpacket ${c.contender}: ${c.error ?? 'not measured'}`)
  for (const c of r.dns?.contenders ?? []) if (!c.available) out.push(`dns ${c.name}: ${c.error ?? 'not measured'}`)
  for (const s of r.sync ?? []) {
    for (const [k, l] of Object.entries(s.kernel)) if (l?.skipped || l?.error) out.push(`sync ${tickLabel(s.services)} ${k}: ${l.error ?? l.skipped}`)
  }
  return out
}

/** How the dataplane CPU rows counted a TUN forwarder (tundra's agent, cref), when the e2e section ran. */
export function forwarderCpuNote(r: BenchReport): string {
  const how = r.e2e?.forwarderCpu
  if (how === undefined) return ''
  const base =
    ' Dataplane CPU is all softirq time; for tundra and cref plus their own CPU time outside softirq (the kernel charges ' +
    "a softirq tick to the running task too, and much of the forwarding runs in the forwarder's own write(): bench/lib/softirq.ts)"
  return how === 'perf'
    ? `${base}, the softirq share sampled with perf.`
    : `${base}; this run could not sample that share (${how}), so softirq in the forwarder's context is counted twice.`
}

/** bench/RESULTS.md for a report. */
export function renderResults(r: BenchReport, o: ResultsOptions, chartNames: readonly string[], seconds?: number): string {
  const meta = r.meta
  const str = (k: string): string => (typeof meta[k] === 'string' || typeof meta[k] === 'number' ? String(meta[k]) : '?')
  const date = new Date(String(meta['date'] ?? ''))
  const when = Number.isFinite(date.getTime()) ? `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC` : '?'
  const tools =
    meta['tools'] && typeof meta['tools'] === 'object' ? Object.values(meta['tools'] as Record<string, string>).filter(v => v && v !== 'unavailable') : []
  const mode = meta['quick'] === true ? '`--quick` (a smoke run: small sizes, one round)' : 'full'
  // the sections, when not all of them ran
  const only = Array.isArray(meta['only']) && meta['only'].length < SECTIONS.length ? (meta['only'] as string[]) : undefined
  const rows = summarize(r) // from the measurements, so an older JSON gets today's rows and targets
  const kernels = kernelColumns(rows)
  const cref = hasCrefColumn(rows)
  const threads = r.e2e?.packetThreads ?? 1
  const lines: string[] = [
    '# tundra benchmark results',
    '',
    `The latest full run of \`npm run bench\`, written by \`node dist/bench/results.js ${o.source}\` from that run's JSON ` +
      '(regenerate it rather than edit it; see [README.md](README.md) for what each section measures).',
    '',
  ]
  const cond = conditions(r, o.note)
  if (cond) lines.push(cond, '')
  lines.push(
    row(['', '']),
    row(['---', '---']),
    row(['date', when]),
    row(['CPU', `${str('cpuModel')}, ${str('cpus')} cores`]),
    row(['kernel', str('kernel')]),
    row(['Node', str('node')]),
    row([
      'run',
      `${mode}${only ? `, sections ${only.join(', ')}` : ''}; ${str('rounds')} rounds, ${str('seconds')} s per e2e measurement` +
        `${seconds !== undefined ? `; took ${(seconds / 60).toFixed(1)} min` : ''}`,
    ]),
    row(['load average at start', str('loadAverageAtStart')]),
    ...(tools.length > 0 ? [row(['tools', tools.join('; ')])] : []),
    '',
    '## Summary',
    '',
    'Medians. `ratio` is tundra ÷ the best kernel contender (throughput, packets, connections; dnsmasq for DNS; for sync ' +
      "times tundra ÷ the fastest kernel load, whose target is tundra's own time), or the µs tundra adds over the best kernel " +
      'contender (latency). A kernel load stopped at the time cap shows as "> N s".' +
      (cref
        ? ' `cref` is the C reference (bench/tools/cref.c: the same TUN, offloads and routing, DNAT in ' +
          (threads > 1
            ? `${threads} C threads on ${threads} TUN queues, one conntrack behind a spinlock; tundra ran ${threads} packet threads`
            : 'a single-threaded C loop') +
          ', no JavaScript); `vs cref` is tundra ÷ cref, or the µs tundra adds over it: the cost of Node and of ' +
          "tundra's design apart from the cost of the TUN itself (README.md: why cref trails the kernel)."
        : '') +
      forwarderCpuNote(r),
    '',
    row(['metric', 'unit', 'tundra', ...kernels, ...(cref ? ['vs cref'] : []), 'ratio', 'target', 'met?']),
    row(['---', '---', '---:', ...kernels.map(() => '---:'), ...(cref ? ['---:'] : []), '---:', '---', '---']),
    ...rows.map(x => row(rowCells(x, kernels, cref).map((c, i, a) => (i === a.length - 3 ? ratioCell(x, c) : i === a.length - 1 && c === '' ? '–' : c)))),
    '',
  )
  const sync = syncTable(r)
  if (sync.length > 0) {
    lines.push(
      '## Control plane at each size',
      '',
      'tundra: `compileNat` of the whole cluster, and `updateNat` + engine swap for one moved endpoint. Kernel: the same rules ' +
        "(`dumpRules`) loaded into an empty namespace, and kube-proxy's partial sync of the same change, each one " +
        '`ip netns exec … restore` process.',
      '',
      ...sync,
      '',
    )
  }
  const steps = packetThreadTable(r)
  if (steps.length > 0) {
    lines.push(
      "## The packet thread's longest steps",
      '',
      'What one install or one control-thread request holds the packet thread for (packets wait at most this long for ' +
        'it): a full NAT image is wrapped, a delta applied, conntrack is listed 4096 entries per request and stale flows ' +
        'are flushed 8192 slots per event-loop turn (micro section, 20 000 services, 1 M conntrack entries).',
      '',
      ...steps,
      '',
    )
  }
  const shown = CHARTS.filter(([name]) => chartNames.includes(name))
  if (shown.length > 0) {
    lines.push('## Charts', '')
    for (const [name, caption] of shown) lines.push(`### ${caption}`, '', `![${caption}](${o.chartDir}/${name})`, '')
  }
  const missing = notMeasured(r)
  if (missing.length > 0) lines.push('## Not measured', '', ...missing.map(m => `- ${m}`), '')
  return lines.join('\n')
}

/**
 * Writes `<benchDir>/RESULTS.md` and the run's charts as `<benchDir>/results/*.svg` (older charts there are removed).
 * `jsonPath` names the source in the page; returns the files written.
 */
export function writeResults(r: BenchReport, o: { benchDir: string; jsonPath: string; repoRoot: string; note?: string }): string[] {
  const dir = join(o.benchDir, 'results')
  mkdirSync(dir, { recursive: true })
  for (const f of readdirSync(dir)) if (f.endsWith('.svg')) rmSync(join(dir, f))
  const files: string[] = []
  const made = charts(r)
  for (const [name, svg] of made) {
    writeFileSync(join(dir, name), svg)
    files.push(join(dir, name))
  }
  const md = renderResults(
    r,
    { source: relative(o.repoRoot, o.jsonPath) || o.jsonPath, chartDir: 'results', ...(o.note ? { note: o.note } : {}) },
    made.map(([n]) => n),
    runSeconds(r, o.jsonPath),
  )
  const page = join(o.benchDir, 'RESULTS.md')
  writeFileSync(page, md)
  return [page, ...files]
}
