// npm test: type-check, lint, dead-export and layer checks, unit tests (parallel), then network-namespace tests (serially, they share the kernel),
// and one closing line `N passed, M failed` that CI reads.
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

function files(dir, pred) {
  const out = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) {
      if (name !== 'helpers' && name !== 'fixtures') out.push(...files(p, pred))
    } else if (pred(p)) out.push(p)
  }
  return out.sort()
}

function run(cmd, args) {
  return new Promise(resolve => {
    let text = ''
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] })
    child.stdout.on('data', d => {
      process.stdout.write(d)
      text += d.toString()
    })
    child.on('error', err => {
      console.log(`${cmd}: ${err.message}`)
      resolve({ code: 1, text })
    })
    child.on('close', code => resolve({ code: code ?? 1, text }))
  })
}

// tap's closing summary: `# { total: 12, pass: 11, fail: 1, skip: 2 }`
function counts(text) {
  const m = [...text.matchAll(/^# \{ (.*) \}$/gm)].pop()
  const c = { pass: 0, fail: 0, skip: 0, todo: 0 }
  if (!m) return c
  for (const part of m[1].split(',')) {
    const [k, v] = part.split(':').map(s => s.trim())
    if (k in c) c[k] = Number(v)
  }
  return c
}

const argv = process.argv.slice(2)
const only = argv.filter(a => !a.startsWith('-'))
const isTest = p => p.endsWith('.test.ts') && (only.length === 0 || only.some(o => p.includes(o)))
const all = files('test', isTest)
const netns = all.filter(p => p.startsWith(join('test', 'netns')))
const unit = all.filter(p => !netns.includes(p))

let passed = 0,
  failed = 0,
  skipped = 0
// Static checks first, each one line: typecheck, lint, format, dead exports, layers (ARCHITECTURE.md).
for (const [name, cmd, args] of [
  ['typecheck (tsc --noEmit)', 'npx', ['tsc', '-p', 'tsconfig.json', '--noEmit']],
  ['lint (biome)', 'node_modules/.bin/biome', ['lint', '--error-on-warnings', 'src', 'bench', 'test', 'scripts']],
  ['format (biome format; npm run format fixes it)', 'node_modules/.bin/biome', ['format', 'src', 'bench', 'test', 'scripts']],
  ['dead exports (scripts/check-exports.mjs)', 'node', ['scripts/check-exports.mjs']],
  ['layers (scripts/check-layers.mjs)', 'node', ['scripts/check-layers.mjs']],
]) {
  const r = await run(cmd, args)
  console.log(r.code === 0 ? `ok - ${name}` : `not ok - ${name}`)
  if (r.code === 0) passed++
  else failed++
}

for (const [set, jobs] of [
  [unit, 2],
  [netns, 1],
]) {
  if (set.length === 0) continue
  const r = await run('npx', ['tap', '--reporter=terse', `--jobs=${jobs}`, ...set])
  const c = counts(r.text)
  passed += c.pass
  failed += c.fail
  skipped += c.skip
  if (r.code !== 0 && c.fail === 0) {
    failed++
    console.log(`not ok - tap exited ${r.code}`)
  }
}
console.log(skipped ? `${passed} passed, ${failed} failed, ${skipped} skipped` : `${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
