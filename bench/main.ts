// `npm run bench`: tundra against the kernel — in-process micro benchmarks, control-plane sync, first-packet cost at
// 20 000 services, memory per connection, end to end in network namespaces, and cluster DNS against dnsmasq.
// Progress on stderr, the summary table on stdout, JSON and SVG under bench/out/ (see bench/README.md).
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, hostname, release } from 'node:os'
import { join } from 'node:path'
import { isRoot, listNamespaces } from '../src/netns/netns'
import { repoRoot } from '../src/lab/up'
import { ArgsError, parseArgs, SECTIONS, USAGE, type Section } from './lib/args'
import { hookCleanup } from './lib/labs'
import { progress } from './lib/progress'
import { benchLabDown } from './lib/labs'
import { renderTable, summarize, writeOutputs, type BenchReport } from './lib/report'
import { writeResults } from './lib/results'
import { resultsFromFile } from './results'
import { runMicro } from './sections/micro'
import { runSync } from './sections/sync'
import { FIRSTPACKET_LAB_NAMES, runFirstPacket, type KeptLab } from './sections/firstpacket'
import { runMemory } from './sections/memory'
import { LAB_NAMES, runE2e } from './sections/e2e'
import { runDns } from './sections/dns'
import { CHURN_LAB_NAMES, runChurn } from './sections/churn'
import { FAILOVER_LAB_NAMES, runFailover } from './sections/failover'

const NEEDS_ROOT: readonly Section[] = ['sync', 'firstpacket', 'e2e', 'dns', 'churn', 'failover']

function version(cmd: string[]): string {
  try {
    return execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      .split('\n')[0]!
      .trim()
  } catch {
    return 'unavailable'
  }
}

/** Namespaces this run could have left: its own `tt-<pid>-` topologies and the bench labs. */
function leftovers(): string[] {
  const labs = [...Object.values(LAB_NAMES), 'bndns', ...FIRSTPACKET_LAB_NAMES, ...CHURN_LAB_NAMES, ...FAILOVER_LAB_NAMES].map(n => `tundra-${n}-`)
  return listNamespaces().filter(ns => ns.startsWith(`tt-${process.pid}-`) || labs.some(p => ns.startsWith(p)))
}

async function main(): Promise<number> {
  const root = repoRoot()
  let args: ReturnType<typeof parseArgs>
  try {
    args = parseArgs(process.argv.slice(2), join(root, 'bench', 'out'))
  } catch (err) {
    if (err instanceof ArgsError) {
      process.stderr.write(`bench: ${err.message}\n`)
      return 2
    }
    throw err
  }
  if (args.help) {
    process.stdout.write(USAGE)
    return 0
  }
  if (args.resultsFrom !== undefined) {
    const files = resultsFromFile(args.resultsFrom, args.note)
    process.stdout.write(`wrote ${files.map(f => f.replace(`${root}/`, '')).join(', ')}\n`)
    return 0
  }
  const started = Date.now()
  hookCleanup()
  const report: BenchReport = {
    meta: {
      date: new Date().toISOString(),
      host: hostname(),
      kernel: release(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '',
      node: process.version,
      quick: args.quick,
      only: args.sections,
      rounds: args.rounds,
      seconds: args.seconds,
      contenders: args.contenders,
      loadCapSeconds: args.loadCap,
      loadAverageAtStart: version(['cat', '/proc/loadavg']),
      tools: {
        iperf: version(['iperf', '-v']),
        sockperf: version(['sockperf', '--version']),
        dnsperf: version(['sh', '-c', 'dnsperf -h 2>&1 | tail -1']),
        iptables: version(['iptables', '--version']),
        nft: version(['nft', '--version']),
        dnsmasq: version(['dnsmasq', '--version']),
        nginx: version(['sh', '-c', 'nginx -v 2>&1']),
      },
    },
    skipped: {},
  }
  const work = join(args.out, 'work')
  const sectionLoad: Record<string, { start: string; end: string; seconds: number }> = {}
  report.meta['sections'] = sectionLoad
  progress('bench', `sections: ${args.sections.join(', ')}${args.quick ? ' (quick)' : ''}; rounds ${args.rounds}, ${args.seconds} s per e2e measurement`)
  let failed = 0
  // firstpacket's tundra lab, left up for dns (same services) when both run
  let kept: KeptLab | undefined
  try {
    for (const section of args.sections) {
      if (NEEDS_ROOT.includes(section) && !isRoot()) {
        report.skipped[section] = 'needs root (network namespaces)'
        progress(section, 'skipped: needs root')
        continue
      }
      const t0 = Date.now()
      const loadAtStart = readFileSync('/proc/loadavg', 'utf8').trim()
      try {
        switch (section) {
          case 'micro':
            report.micro = runMicro(args.quick)
            break
          case 'sync':
            report.sync = await runSync({ quick: args.quick, nft20k: args.nft20k, loadCapMs: args.loadCap * 1000 })
            break
          case 'firstpacket': {
            // cref is an e2e contender only (a fixed rule list, no service table to scale)
            const cs = args.contenders.filter(c => c !== 'cref' && (c !== 'nftables' || args.quick || args.nft20k))
            const keepTundra = args.sections.includes('dns') && cs.includes('tundra')
            const fp = await runFirstPacket({ quick: args.quick, rounds: args.rounds, seconds: args.seconds, contenders: cs, workDir: work, keepTundra })
            report.firstpacket = fp.result
            kept = fp.kept
            break
          }
          case 'memory':
            report.memory = await runMemory(args.quick)
            break
          case 'e2e':
            report.e2e = await runE2e(args.contenders, args.rounds, args.seconds, work, args.quick)
            break
          case 'churn':
            report.churn = await runChurn({
              quick: args.quick,
              contenders: args.contenders,
              nft20k: args.nft20k,
              loadCapMs: args.loadCap * 1000,
              workDir: work,
            })
            break
          case 'failover':
            report.failover = await runFailover({ quick: args.quick, workDir: work })
            break
          case 'dns': {
            const lab = kept
            kept = undefined // dns brings it down
            report.dns = await runDns({
              quick: args.quick,
              rounds: args.rounds,
              seconds: args.seconds,
              withTundraLab: args.contenders.includes('tundra'),
              workDir: work,
              ...(lab ? { lab } : {}),
            })
            break
          }
        }
        progress(section, `done in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
      } catch (err) {
        failed++
        report.skipped[section] = `failed: ${(err as Error).message}`
        progress(section, `FAILED: ${(err as Error).stack ?? String(err)}`)
      } finally {
        // the machine is shared: the load around each section says how much to trust it
        sectionLoad[section] = { start: loadAtStart, end: readFileSync('/proc/loadavg', 'utf8').trim(), seconds: (Date.now() - t0) / 1000 }
      }
    }
  } finally {
    if (kept) await benchLabDown(kept.name)
  }

  report.meta['totalSeconds'] = (Date.now() - started) / 1000
  report.summary = summarize(report)
  const files = writeOutputs(args.out, report)
  if (args.writeResults)
    files.push(
      ...writeResults(report, { benchDir: join(root, 'bench'), jsonPath: files[0]!, repoRoot: root, ...(args.note !== undefined ? { note: args.note } : {}) }),
    )
  process.stdout.write(
    `\ntundra bench${args.quick ? ' (quick)' : ''}: medians; "compare" is tundra/best kernel (or dnsmasq), µs added, or tundra's own value\n\n`,
  )
  process.stdout.write(renderTable(report.summary))
  for (const [s, why] of Object.entries(report.skipped)) process.stdout.write(`\n${s}: ${why}`)
  const notMeasured = [
    ...(report.e2e?.contenders ?? []).filter(c => !c.available).map(c => `e2e ${c.contender}: ${c.error ?? 'not measured'}`),
    ...(report.firstpacket?.contenders ?? []).filter(c => !c.available).map(c => `firstpacket ${c.contender}: ${c.error ?? 'not measured'}`),
    ...(report.dns?.contenders ?? []).filter(c => !c.available).map(c => `dns ${c.name}: ${c.error ?? 'not measured'}`),
    ...(report.churn?.sizes ?? []).flatMap(s =>
      s.contenders.filter(c => !c.available || c.error !== undefined).map(c => `churn ${s.services} ${c.contender}: ${c.error ?? 'not measured'}`),
    ),
  ]
  for (const line of notMeasured) process.stdout.write(`\n${line}`)
  process.stdout.write(`\n\nwrote ${files.map(f => f.replace(`${root}/`, '')).join(', ')}\n`)
  const left = leftovers()
  if (left.length > 0) {
    process.stdout.write(`WARNING: namespaces left behind: ${left.join(', ')}\n`)
    failed++
  }
  const took = (Date.now() - started) / 1000
  // the budget is for a whole run: --quick under 3 minutes, the full run under 20
  const budget = args.sections.length === SECTIONS.length ? (args.quick ? 3 : 20) : undefined
  const per = Object.entries(sectionLoad)
    .map(([k, v]) => `${k} ${v.seconds.toFixed(0)} s`)
    .join(', ')
  process.stdout.write(`bench took ${(took / 60).toFixed(1)} min (${per})${budget ? `; budget ${budget} min${took > budget * 60 ? ': OVER' : ''}` : ''}\n`)
  return failed === 0 ? 0 : 1
}

main().then(
  code => {
    process.exitCode = code
  },
  err => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  },
)
