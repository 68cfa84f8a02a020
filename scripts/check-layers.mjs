// Layer check (npm test): each folder of src/ may import only the folders its row below names (ARCHITECTURE.md,
// "Layers", explains the order). `types` means `import type` only. Known leaks are listed in EXCEPTIONS with a TODO;
// one that no longer occurs must be deleted from the list. Usage: node scripts/check-layers.mjs
import ts from 'typescript'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'

/** layer -> { layer it may import: 'all' | 'types' }. A folder of src/ missing here is an error. */
const ALLOWED = {
  wire: {},
  model: {},
  device: {},
  netns: {},
  k8s: { wire: 'all', model: 'all' },
  kubeproxy: { k8s: 'all', model: 'all' },
  dns: { wire: 'all', model: 'all', device: 'all' },
  nat: { wire: 'all', model: 'all' },
  dataplane: { wire: 'all', device: 'all', nat: 'all' },
  run: { wire: 'all', k8s: 'all', model: 'all', nat: 'all', dns: 'all' },
  metrics: { wire: 'all', nat: 'all', run: 'types' },
  agent: { wire: 'all', device: 'all', dataplane: 'all', nat: 'all', dns: 'all', k8s: 'all', model: 'all', netns: 'all', run: 'all', metrics: 'all' },
  lab: { wire: 'all', agent: 'all', kubeproxy: 'all', k8s: 'all', model: 'all', netns: 'all' },
  inspect: { wire: 'all', agent: 'all', lab: 'all', nat: 'all', dns: 'all', kubeproxy: 'all', k8s: 'all', model: 'all' },
  web: { wire: 'all', model: 'all', nat: 'all', agent: 'all', metrics: 'all', inspect: 'all' },
  daemon: { web: 'all', agent: 'all', run: 'all', metrics: 'all', inspect: 'all', device: 'all', nat: 'all', dns: 'all', k8s: 'all', model: 'all' },
  cli: 'any',
}

/** Layers that import nothing outside themselves: no Node built-ins, no packages (no I/O, no state). */
const PURE = new Set(['wire', 'model'])

/** Known leaks: `from` file imports `to` module (no extension) although the matrix says no. Each has a TODO. */
const EXCEPTIONS = []

const root = resolve(new URL('..', import.meta.url).pathname)
const rel = p => relative(root, p).split('\\').join('/')

function tsFiles(dir) {
  const out = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...tsFiles(p))
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p)
  }
  return out.sort()
}

/** Every module a file names: imports, re-exports, require(), import() and import('x').T; with types-only flags. */
function importsOf(file) {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true)
  const out = []
  const visit = node => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const c = node.importClause
      const typesOnly =
        !!c &&
        (c.isTypeOnly ||
          (!c.name &&
            !!c.namedBindings &&
            ts.isNamedImports(c.namedBindings) &&
            c.namedBindings.elements.length > 0 &&
            c.namedBindings.elements.every(e => e.isTypeOnly)))
      out.push({ spec: node.moduleSpecifier.text, typesOnly, line: lineOf(sf, node) })
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push({ spec: node.moduleSpecifier.text, typesOnly: node.isTypeOnly, line: lineOf(sf, node) })
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push({ spec: node.argument.literal.text, typesOnly: true, line: lineOf(sf, node) })
    } else if (
      ts.isCallExpression(node) &&
      node.arguments.length === 1 &&
      ts.isStringLiteral(node.arguments[0]) &&
      (node.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(node.expression) && node.expression.text === 'require'))
    ) {
      out.push({ spec: node.arguments[0].text, typesOnly: false, line: lineOf(sf, node) })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}
const lineOf = (sf, node) => sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1

const problems = []
const used = new Set()
const layers = new Set()
for (const abs of tsFiles(join(root, 'src'))) {
  const file = rel(abs)
  const from = file.split('/')[1]
  layers.add(from)
  const row = ALLOWED[from]
  if (row === undefined) {
    problems.push(`${file}: folder src/${from}/ has no row in scripts/check-layers.mjs ALLOWED`)
    continue
  }
  for (const { spec, typesOnly, line } of importsOf(abs)) {
    if (!spec.startsWith('.')) {
      if (PURE.has(from)) problems.push(`${file}:${line}: src/${from}/ is pure but imports '${spec}'`)
      continue
    }
    const target = rel(resolve(dirname(abs), spec)).replace(/\.(ts|js)$/, '')
    if (!target.startsWith('src/')) {
      problems.push(`${file}:${line}: imports '${spec}', outside src/`)
      continue
    }
    const to = target.split('/')[1]
    if (to === from || row === 'any') continue
    const may = row[to]
    if (may === 'all' || (may === 'types' && typesOnly)) continue
    const ex = EXCEPTIONS.find(([f, t]) => f === file && t === target)
    if (ex) {
      used.add(ex)
      continue
    }
    problems.push(`${file}:${line}: src/${from}/ may not import ${target}${may === 'types' ? ' (types only)' : ''}`)
  }
}
for (const l of Object.keys(ALLOWED)) if (!layers.has(l)) problems.push(`ALLOWED names src/${l}/, which does not exist`)
for (const ex of EXCEPTIONS) if (!used.has(ex)) problems.push(`EXCEPTIONS lists ${ex[0]} -> ${ex[1]}, which no longer happens: delete it`)

for (const p of problems) console.log(p)
if (problems.length > 0) {
  console.log(`${problems.length} layer problem(s): see ARCHITECTURE.md "Layers" (the matrix is in scripts/check-layers.mjs)`)
  process.exit(1)
}
