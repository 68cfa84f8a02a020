// Dead-export check (npm test): every exported value (function, class, constant) of a src/ module must be used by
// another module of the product (src/ or bench/). Exports used only by tests, or by nobody, are listed; the ones kept on purpose (test seams,
// entry points) are named in scripts/exports-allowed.txt with a reason. Usage: node scripts/check-exports.mjs [--all]
// (--all also prints the exports only tests use, with the test files that use them).
import ts from 'typescript'
import { readFileSync } from 'node:fs'
import { relative, resolve } from 'node:path'

const root = resolve(new URL('..', import.meta.url).pathname)
const rel = f => relative(root, f).split('\\').join('/')

const cfgPath = resolve(root, 'tsconfig.json')
const cfg = ts.getParsedCommandLineOfConfigFile(
  cfgPath,
  { noEmit: true },
  {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: d => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'))
    },
  },
)
const program = ts.createProgram({ rootNames: cfg.fileNames, options: cfg.options })
const checker = program.getTypeChecker()
const files = program.getSourceFiles().filter(f => !f.isDeclarationFile && !rel(f.fileName).startsWith('node_modules/'))

const resolveAlias = s => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s)

// The exports each src/ file declares itself (re-exports like `export * from` belong to the declaring file).
const exported = new Map() // symbol -> { file, name }
for (const f of files) {
  const file = rel(f.fileName)
  if (!file.startsWith('src/')) continue
  const mod = checker.getSymbolAtLocation(f)
  if (!mod) continue
  for (const e of checker.getExportsOfModule(mod)) {
    const s = resolveAlias(e)
    const decl = s.declarations?.[0]
    if (!decl || decl.getSourceFile() !== f) continue
    // Types (interfaces, type aliases) name the shapes of exported signatures: exporting them costs nothing at run time.
    if (!(s.flags & ts.SymbolFlags.Value)) continue
    if (!exported.has(s)) exported.set(s, { file, name: e.name })
  }
}

// Who refers to each exported symbol from another file: every identifier, so named and namespace imports,
// `import('...').T` types and re-exports through an index all count.
const users = new Map() // symbol -> Set<file>
for (const f of files) {
  const file = rel(f.fileName)
  const visit = node => {
    if (ts.isIdentifier(node)) {
      const s0 = checker.getSymbolAtLocation(node)
      if (s0) {
        const s = resolveAlias(s0)
        const home = exported.get(s)
        if (home && home.file !== file && !isReExport(node)) {
          let u = users.get(s)
          if (!u) users.set(s, (u = new Set()))
          u.add(file)
        }
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(f)
}

// `export { X } from './y'` and `export * from` only pass a name on; they are not a use.
function isReExport(id) {
  let n = id.parent
  while (n && !ts.isSourceFile(n)) {
    if (ts.isExportDeclaration(n)) return n.moduleSpecifier !== undefined
    if (ts.isStatement(n)) return false
    n = n.parent
  }
  return false
}

const allowed = new Map()
for (const line of readFileSync(resolve(root, 'scripts/exports-allowed.txt'), 'utf8').split('\n')) {
  const t = line.replace(/#.*/, '').trim()
  if (!t) continue
  const [key, ...why] = t.split(/\s+/)
  allowed.set(key, why.join(' '))
}

const dead = [],
  testOnly = []
const seen = new Set()
for (const [s, { file, name }] of exported) {
  const key = `${file}:${name}`
  seen.add(key)
  const u = [...(users.get(s) ?? [])]
  const product = u.filter(x => x.startsWith('src/') || x.startsWith('bench/'))
  if (product.length > 0) continue
  if (allowed.has(key) || allowed.has(`${file}:*`)) continue
  if (u.length === 0) dead.push(key)
  else testOnly.push(`${key}  (${u.join(', ')})`)
}
const stale = [...allowed.keys()].filter(k => !k.endsWith(':*') && !seen.has(k))

const all = process.argv.includes('--all')
for (const d of dead) console.log(`unused export: ${d}`)
for (const d of testOnly) console.log(`export used only by tests: ${d}`)
for (const k of stale) console.log(`scripts/exports-allowed.txt names an export that no longer exists: ${k}`)
const bad = dead.length + testOnly.length + stale.length
if (bad > 0) {
  console.log(`${bad} problem(s): delete the export (or the 'export' keyword), or list it in scripts/exports-allowed.txt with a reason`)
  process.exit(1)
}
if (all) console.log(`${exported.size} exports checked`)
