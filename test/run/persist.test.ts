// The last known state file: round trip, atomic, bounded, validated on read (a bad file is refused, never half-used).
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadLastState, saveLastState } from '../../src/run/persist'
import type { KubeObject } from '../../src/k8s/types'
import { tempDir } from '../helpers/tmp'

const objects = [
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'kubernetes', namespace: 'default' }, spec: { clusterIP: '10.96.0.1', ports: [{ port: 443 }] } },
  { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'kubernetes', namespace: 'default' }, addressType: 'IPv4', endpoints: [] },
  { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node1' }, spec: { podCIDR: '10.100.1.0/24' } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } },
] as unknown as KubeObject[]

t.test('round trip keeps Services, EndpointSlices and Nodes only', async t => {
  const path = join(tempDir(t), 'state')
  t.equal(loadLastState(path), undefined, 'no file: nothing')
  saveLastState(path, objects)
  t.notOk(existsSync(`${path}.tmp`), 'no temporary file left')
  const s = loadLastState(path)
  if (s === undefined || s instanceof Error) throw new Error(`not loaded: ${String(s)}`)
  t.same(
    s.objects.map(o => o.kind),
    ['Service', 'EndpointSlice', 'Node'],
  )
  t.match(s.savedAt, /^\d{4}-/)
})

t.test('a damaged, edited, foreign or oversized file is refused with the reason', async t => {
  const dir = tempDir(t)
  const path = join(dir, 'state')
  saveLastState(path, objects)
  const good = readFileSync(path, 'utf8')
  writeFileSync(path, good.slice(0, good.length / 2))
  t.match(String(loadLastState(path)), /not JSON/, 'truncated')
  writeFileSync(path, good.replace('10.96.0.1', '10.96.0.2'))
  t.match(String(loadLastState(path)), /checksum mismatch/, 'edited')
  writeFileSync(path, '{"version":9}')
  t.match(String(loadLastState(path)), /not a tundra last-state file/, 'another version')
  saveLastState(path, objects)
  t.match(String(loadLastState(path, 100)), /over the bound of 100/, 'over the size bound on read')
  t.throws(() => saveLastState(join(dir, 'big'), objects, 100), /over the bound/, 'and on write')
  t.notOk(existsSync(join(dir, 'big')), 'nothing written then')
  const forged = JSON.stringify([{ kind: 'Secret', metadata: { name: 'x' } }])
  const { createHash } = await import('node:crypto')
  writeFileSync(path, `{"version":1,"savedAt":"x","sha256":"${createHash('sha256').update(forged).digest('hex')}","objects":${forged}}`)
  t.match(String(loadLastState(path)), /objects\[0\]: not a Service, EndpointSlice or Node/, 'a kind it never saves')
})
