// Issue 15, problem 5: `tundra dump` exits non-zero on invalid input (a bad object, a file that is not YAML) and
// names it, `--skip-invalid` renders the valid rest with exit 0, and a NodePort outside the default range is
// accepted when the cluster's --service-node-port-range says so.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cliChild } from '../inspect/helpers/inspect'

const dir = mkdtempSync(join(tmpdir(), 'tundra-dump-exit-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const file = (name: string, text: string): string => {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}

const mixed = file(
  'mixed.yaml',
  `apiVersion: v1
kind: Service
metadata: {name: good}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bad}
spec: {clusterIP: 10.96.0.999, ports: [{port: 80}]}
`,
)
const notYaml = file('broken.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: x\n  : : [\n')
const lowPort = file(
  'low-port.yaml',
  `apiVersion: v1
kind: Service
metadata: {name: np}
spec: {type: NodePort, clusterIP: 10.96.0.11, ports: [{port: 80, nodePort: 20080}]}
`,
)

t.test('an invalid object: exit 1, named, nothing dumped', async t => {
  const r = await cliChild(['dump', '-f', mixed])
  t.equal(r.code, 1)
  t.equal(r.stdout, '', 'no partial rule set')
  t.match(r.stderr, /Service default\/bad: spec\.clusterIP/)
  t.match(r.stderr, /--skip-invalid/, 'the way out is named')
})

t.test('--skip-invalid: the valid rest, exit 0', async t => {
  const r = await cliChild(['dump', '-f', mixed, '--skip-invalid'])
  t.equal(r.code, 0)
  t.match(r.stdout, /default\/good/)
  t.notMatch(r.stdout, /default\/bad/)
  t.match(r.stderr, /Service default\/bad/, 'the skipped object is still reported')
})

t.test('a file that is not YAML: exit 1 with the position', async t => {
  const r = await cliChild(['dump', '-f', notYaml])
  t.equal(r.code, 1)
  t.match(r.stderr, /invalid YAML.*line \d+/)
})

t.test('NodePorts outside 30000-32767 with the cluster range given', async t => {
  const refused = await cliChild(['dump', '-f', lowPort])
  t.equal(refused.code, 1, 'the default range refuses 20080')
  const r = await cliChild(['dump', '-f', lowPort, '--service-node-port-range', '20000-22767'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /20080/)
})
