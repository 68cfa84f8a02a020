// `npm run bench` options: which sections, how long, which contenders. Pure, so it is unit-tested.
import { join } from 'node:path'

// dns right after firstpacket: it reuses firstpacket's tundra lab (same services) instead of bringing up another
export const SECTIONS = ['micro', 'sync', 'firstpacket', 'dns', 'memory', 'e2e', 'churn', 'failover'] as const
export type Section = (typeof SECTIONS)[number]

/** Names accepted by --only besides the sections themselves. */
const ALIASES: Readonly<Record<string, readonly Section[]>> = {
  control: ['sync', 'firstpacket'],
  'control-plane': ['sync', 'firstpacket'],
  memory: ['memory'],
  all: SECTIONS,
}

export const CONTENDERS = ['tundra', 'iptables-nft', 'iptables-legacy', 'nftables', 'cref'] as const
export type Contender = (typeof CONTENDERS)[number]

export interface BenchArgs {
  readonly quick: boolean
  readonly sections: readonly Section[]
  /** e2e rounds (contenders interleaved within each round) */
  readonly rounds: number
  /** seconds per e2e measurement */
  readonly seconds: number
  readonly contenders: readonly Contender[]
  /** output directory for JSON and SVG */
  readonly out: string
  /** also load the 20 000-service nftables ruleset (slow: ~4× the 10 000 one); churn: nftables at every size */
  readonly nft20k: boolean
  /** time cap of one full kernel rule load at 20 000 services in the sync section, seconds (reported as "> cap") */
  readonly loadCap: number
  /** after the run, write bench/RESULTS.md and bench/results/*.svg from its JSON */
  readonly writeResults: boolean
  /** measure nothing: write bench/RESULTS.md from this JSON (`--results [file]`, default <out>/latest.json) */
  readonly resultsFrom?: string
  /** a line for RESULTS.md about the conditions of the run (`--note`) */
  readonly note?: string
  readonly help: boolean
}

export class ArgsError extends Error {
  readonly code = 'EARGS' as const
  override readonly name = 'ArgsError'
}

export const USAGE = `usage: npm run bench -- [--quick] [--only <section>[,<section>…]] [options]

sections: ${SECTIONS.join(', ')} (control = sync + firstpacket)
  --quick              one round, small sizes, short measurements: a smoke run (about 2–3 minutes)
  --only <list>        run only these sections (repeatable, comma-separated)
  --rounds <n>         e2e, firstpacket and dns rounds, contenders interleaved in each (default 3, quick 1)
  --seconds <s>        seconds per e2e and firstpacket measurement (default 3, quick 1)
  --contenders <list>  of ${CONTENDERS.join(', ')} (default all)
  --out <dir>          where the JSON and SVG files go (default bench/out)
  --load-cap <s>       stop a full kernel rule load of 20 000 services after this long, report "> s" (default 120;
                       smaller rule sets get a proportional share, at least 20 s)
  --nft20k             also load the 20 000-service ruleset with nft -f (minutes); churn: nftables above 1 000
  --write-results      after the run, write bench/RESULTS.md and bench/results/*.svg
  --results [file]     measure nothing: write bench/RESULTS.md from a run's JSON (default <out>/latest.json)
  --note <text>        a line for RESULTS.md about the conditions of the run
`

export function parseArgs(argv: readonly string[], defaultOut: string): BenchArgs {
  let quick = false
  let help = false
  let nft20k = false
  let writeResults = false
  let resultsFrom: string | undefined
  let note: string | undefined
  let loadCap: number | undefined
  const only: Section[] = []
  let rounds: number | undefined
  let seconds: number | undefined
  let contenders: Contender[] | undefined
  let out = defaultOut
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const eq = arg.indexOf('=')
    const flag = eq >= 0 && arg.startsWith('--') ? arg.slice(0, eq) : arg
    const value = (): string => {
      const v = eq >= 0 && arg.startsWith('--') ? arg.slice(eq + 1) : argv[++i]
      if (v === undefined || v === '') throw new ArgsError(`${flag} needs a value`)
      return v
    }
    const positive = (): number => {
      const v = value()
      const n = Number(v)
      if (!Number.isFinite(n) || n <= 0) throw new ArgsError(`${flag}: not a positive number: ${v}`)
      return n
    }
    switch (flag) {
      case '--quick':
        quick = true
        break
      case '--help':
      case '-h':
        help = true
        break
      case '--nft20k':
        nft20k = true
        break
      case '--write-results':
        writeResults = true
        break
      case '--results': {
        // the file is optional: the next argument is taken only when it is not another flag
        const next = eq >= 0 ? arg.slice(eq + 1) : argv[i + 1]
        if (next !== undefined && next !== '' && !next.startsWith('--')) {
          resultsFrom = next
          if (eq < 0) i++
        } else resultsFrom = ''
        break
      }
      case '--note':
        note = value()
        break
      case '--load-cap':
        loadCap = positive()
        break
      case '--only':
        for (const name of value()
          .split(',')
          .map(s => s.trim())
          .filter(Boolean)) {
          const list = (SECTIONS as readonly string[]).includes(name) ? [name as Section] : ALIASES[name]
          if (!list) throw new ArgsError(`--only: unknown section ${JSON.stringify(name)} (sections: ${SECTIONS.join(', ')}, control)`)
          for (const s of list) if (!only.includes(s)) only.push(s)
        }
        break
      case '--rounds':
        rounds = Math.round(positive())
        break
      case '--seconds':
        seconds = positive()
        break
      case '--contenders':
        contenders = []
        for (const name of value()
          .split(',')
          .map(s => s.trim())
          .filter(Boolean)) {
          if (!(CONTENDERS as readonly string[]).includes(name)) throw new ArgsError(`--contenders: unknown ${JSON.stringify(name)} (${CONTENDERS.join(', ')})`)
          if (!contenders.includes(name as Contender)) contenders.push(name as Contender)
        }
        break
      case '--out':
        out = value()
        break
      default:
        throw new ArgsError(`unknown argument ${arg}\n${USAGE}`)
    }
  }
  return {
    quick,
    help,
    nft20k,
    writeResults,
    ...(resultsFrom !== undefined ? { resultsFrom: resultsFrom === '' ? join(out, 'latest.json') : resultsFrom } : {}),
    ...(note !== undefined ? { note } : {}),
    loadCap: loadCap ?? 120,
    sections: only.length > 0 ? SECTIONS.filter(s => only.includes(s)) : [...SECTIONS],
    rounds: rounds ?? (quick ? 1 : 3),
    seconds: seconds ?? (quick ? 1 : 3),
    contenders: contenders ?? [...CONTENDERS],
    out,
  }
}
