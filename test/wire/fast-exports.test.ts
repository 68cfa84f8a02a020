// Every module's exports object keeps V8's fast properties. TypeScript compiles `export { x } from './y'` to a data
// property that is then redefined as a getter, which turns the whole exports object into a dictionary: every
// `module_1.NAME` read in compiled code (constants, functions, on the packet path per packet) then goes through
// V8's generic load instead of an inline one (measured: answerInPlace 330 -> 220 ns/op once dns/message, wire/packet,
// device/vnet and nat/engine stopped re-exporting). Import a name from the module that defines it instead.
// Reads the built modules (dist/, what the agent runs): run `npx tsc -p tsconfig.json` first (npm test does).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join, relative } from 'node:path'

const root = join(__dirname, '../..')
const dist = join(root, 'dist/src')

/** Facades that only re-export for tests and the CLI (no product module reads through them on a hot path). */
const FACADES = new Set(['inspect/index.js', 'lab/index.js', 'run/index.js'])
/** Entry points that start a program or a thread when loaded. */
const ENTRY = /(^cli\/main\.js$|-main\.js$|(^|\/)(control|packet)-thread\.js$)/

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(e =>
    e.isDirectory() ? modules(join(dir, e.name)) : e.name.endsWith('.js') ? [relative(dist, join(dir, e.name))] : [],
  )
}

/** The modules (paths under `dir`) whose exports object is in dictionary mode, as V8 reports it. */
function slowModules(dir: string, list: readonly string[]): string[] {
  const script = `
    const out = []
    for (const m of ${JSON.stringify(list)}) if (!%HasFastProperties(require(${JSON.stringify(dir)} + '/' + m))) out.push(m)
    process.stdout.write(JSON.stringify(out))`
  return JSON.parse(execFileSync(process.execPath, ['--allow-natives-syntax', '-e', script], { encoding: 'utf8', timeout: 60_000 }))
}

t.test('exports objects stay in fast mode', { skip: existsSync(dist) ? false : 'dist/ not built' }, async t => {
  const list = modules(dist).filter(m => !FACADES.has(m) && !ENTRY.test(m))
  t.ok(list.length > 100, `found the built modules (${list.length})`)
  t.same(slowModules(dist, list), [], 'no module re-exports a name it imports (import it from where it is defined)')
})

t.test('the check tells a re-exporting module apart', async t => {
  const dir = t.testdir({
    // what tsc emits for `export const A = 1; export { B } from './b'` and for `export const A = 1` alone
    'reexport.js':
      '"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\nexports.B = exports.A = void 0;\nexports.A = 1;\n' +
      'var b_1 = require("./b");\nObject.defineProperty(exports, "B", { enumerable: true, get: function () { return b_1.B; } });\n',
    'plain.js': '"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\nexports.A = void 0;\nexports.A = 1;\n',
    'b.js': '"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\nexports.B = void 0;\nexports.B = 2;\n',
  })
  t.same(slowModules(dir, ['reexport.js', 'plain.js', 'b.js']), ['reexport.js'])
})
