// `node dist/bench/results.js [<run>.json] [--note <text>]`: writes bench/RESULTS.md and bench/results/*.svg from a
// bench run's JSON (default bench/out/latest.json). `npm run bench -- --write-results` does the same after a run, and
// `node dist/bench/main.js --results [<run>.json]` is this without a measurement.
import { readdirSync, readFileSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { repoRoot } from '../src/lab/up'
import { readReport } from './lib/report'
import { writeResults } from './lib/results'

/** latest.json is a copy of one time-stamped run: name that one (it carries the date in its name). */
export function stampedTwin(path: string): string {
  if (basename(path) !== 'latest.json') return path
  try {
    const text = readFileSync(path, 'utf8')
    const dir = dirname(path)
    const twin = readdirSync(dir)
      .filter(f => /^bench-.*\.json$/.test(f))
      .sort()
      .reverse()
      .find(f => readFileSync(join(dir, f), 'utf8') === text)
    return twin ? join(dir, twin) : path
  } catch {
    return path
  }
}

/** Writes RESULTS.md from `jsonPath`; returns the files written. */
export function resultsFromFile(jsonPath: string, note?: string): string[] {
  const root = repoRoot()
  const path = stampedTwin(resolve(jsonPath))
  const report = readReport(readFileSync(path, 'utf8'))
  if (report.meta['quick'] === true) process.stderr.write(`results: warning: ${path} is a --quick run; RESULTS.md is meant for a full one\n`)
  return writeResults(report, { benchDir: join(root, 'bench'), jsonPath: path, repoRoot: root, ...(note !== undefined ? { note } : {}) })
}

function main(argv: readonly string[]): number {
  let file: string | undefined
  let note: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node dist/bench/results.js [<run>.json (default bench/out/latest.json)] [--note <text>]\n')
      return 0
    }
    if (a === '--note') {
      note = argv[++i]
      if (note === undefined) {
        process.stderr.write('results: --note needs a value\n')
        return 2
      }
      continue
    }
    if (a.startsWith('--note=')) {
      note = a.slice('--note='.length)
      continue
    }
    if (a.startsWith('-') || file !== undefined) {
      process.stderr.write(`results: unexpected argument ${a}\n`)
      return 2
    }
    file = a
  }
  const files = resultsFromFile(file ?? join(repoRoot(), 'bench', 'out', 'latest.json'), note)
  process.stdout.write(`wrote ${files.map(f => f.replace(`${repoRoot()}/`, '')).join(', ')}\n`)
  return 0
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`results: ${(err as Error).message}\n`)
    process.exitCode = 1
  }
}
