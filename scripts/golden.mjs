// Regenerates the golden files under test/fixtures/k8s/golden/ from the cases in test/fixtures/k8s/cases.json.
// Run it only on purpose (`node scripts/golden.mjs`), then review the diff: the goldens are what the tests hold us to.
//
// It does not import from dist/: it compiles just src/k8s and src/kubeproxy (and what they import) with the TypeScript
// compiler API into a temporary directory under node_modules/.cache, so it works whatever state the rest of the tree
// (and dist/) is in.
// `node scripts/golden.mjs --check` compares instead of writing, and exits 1 on any difference.
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))
const ts = require('typescript')
const check = process.argv.includes('--check')

// inside node_modules/.cache so the compiled files resolve 'yaml' from the repo's node_modules
mkdirSync(join(root, 'node_modules/.cache'), { recursive: true })
const out = mkdtempSync(join(root, 'node_modules/.cache/tundra-golden-'))
try {
  const entries = ['src/k8s/index.ts', 'src/kubeproxy/dump.ts'].map(p => join(root, p))
  const program = ts.createProgram(entries, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    esModuleInterop: true,
    strict: true,
    skipLibCheck: true,
    types: ['node'],
    rootDir: root,
    outDir: out,
  })
  const diagnostics = ts.getPreEmitDiagnostics(program).filter(d => d.category === ts.DiagnosticCategory.Error)
  if (diagnostics.length > 0) {
    process.stderr.write(
      ts.formatDiagnostics(diagnostics, {
        getCanonicalFileName: f => f,
        getCurrentDirectory: () => root,
        getNewLine: () => '\n',
      }),
    )
    process.exit(1)
  }
  program.emit()
  writeFileSync(join(out, 'package.json'), '{"type":"commonjs"}')
  const load = p => require(join(out, p))
  const { loadCluster } = load('src/k8s/index.js')
  const { dumpRules } = load('src/kubeproxy/dump.js')

  const { cases } = JSON.parse(readFileSync(join(root, 'test/fixtures/k8s/cases.json'), 'utf8'))
  const goldenDir = join(root, 'test/fixtures/k8s/golden')
  mkdirSync(goldenDir, { recursive: true })
  const expected = new Set()
  let differences = 0
  for (const c of cases) {
    const r = loadCluster(
      c.inputs.map(p => join(root, p)),
      c.normalize,
    )
    const rel = s => s.split(root + '/').join('')
    const files = {
      [`${c.name}.cluster.json`]:
        JSON.stringify(
          {
            cluster: r.cluster,
            ignored: r.ignored,
            problems: r.problems.map(p => (p.file ? { ...p, file: rel(p.file) } : p)),
            warnings: r.warnings.map(rel),
          },
          null,
          2,
        ) + '\n',
    }
    const d = dumpRules(r.cluster, c.proxy)
    files[`${c.name}.iptables`] = d.iptables
    files[`${c.name}.nft`] = d.nft
    if (d.ip6tables !== undefined) files[`${c.name}.ip6tables`] = d.ip6tables
    if (d.nft6 !== undefined) files[`${c.name}.nft6`] = d.nft6
    for (const [name, text] of Object.entries(files)) {
      expected.add(name)
      const path = join(goldenDir, name)
      const old = existsSync(path) ? readFileSync(path, 'utf8') : undefined
      if (old === text) continue
      differences++
      if (check) process.stdout.write(`differs: ${name}\n`)
      else {
        writeFileSync(path, text)
        process.stdout.write(`${old === undefined ? 'wrote' : 'updated'} ${name}\n`)
      }
    }
  }
  for (const f of readdirSync(goldenDir)) {
    if (!expected.has(f)) {
      differences++
      if (check) process.stdout.write(`stale: ${f}\n`)
      else {
        rmSync(join(goldenDir, f))
        process.stdout.write(`removed ${f}\n`)
      }
    }
  }
  process.stdout.write(`${differences === 0 ? 'goldens up to date' : `${differences} golden file(s) ${check ? 'differ' : 'changed'}`}\n`)
  if (check && differences > 0) process.exitCode = 1
} finally {
  rmSync(out, { recursive: true, force: true })
}
