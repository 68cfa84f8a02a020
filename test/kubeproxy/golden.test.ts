// Every case in test/fixtures/k8s/cases.json, compared in full with its golden files (regenerate: node scripts/golden.mjs).
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadCluster } from '../../src/k8s/index'
import { dumpRules, type DumpOptions } from '../../src/kubeproxy/dump'
import type { NormalizeOptions } from '../../src/k8s/normalize'

const root = join(__dirname, '..', '..')
const goldenDir = join(root, 'test/fixtures/k8s/golden')

interface Case {
  name: string
  inputs: string[]
  normalize: NormalizeOptions
  proxy: DumpOptions
}

const { cases } = JSON.parse(readFileSync(join(root, 'test/fixtures/k8s/cases.json'), 'utf8')) as { cases: Case[] }

function golden(name: string): string | undefined {
  const p = join(goldenDir, name)
  return existsSync(p) ? readFileSync(p, 'utf8') : undefined
}

for (const c of cases) {
  t.test(c.name, async t => {
    const r = loadCluster(
      c.inputs.map(p => join(root, p)),
      c.normalize,
    )
    const rel = (s: string): string => s.split(`${root}/`).join('')
    const json = `${JSON.stringify(
      {
        cluster: r.cluster,
        ignored: r.ignored,
        problems: r.problems.map(p => (p.file !== undefined ? { ...p, file: rel(p.file) } : p)),
        warnings: r.warnings.map(rel),
      },
      null,
      2,
    )}\n`
    t.equal(json, golden(`${c.name}.cluster.json`), `${c.name}.cluster.json`)
    const d = dumpRules(r.cluster, c.proxy)
    t.equal(d.iptables, golden(`${c.name}.iptables`), `${c.name}.iptables`)
    t.equal(d.nft, golden(`${c.name}.nft`), `${c.name}.nft`)
    t.equal(d.ip6tables, golden(`${c.name}.ip6tables`), `${c.name}.ip6tables`)
    t.equal(d.nft6, golden(`${c.name}.nft6`), `${c.name}.nft6`)
  })
}

t.test('rendering is deterministic: input order does not matter', async t => {
  const c = cases.find(x => x.name === 'multiport')!
  const a = loadCluster(
    c.inputs.map(p => join(root, p)),
    c.normalize,
  )
  const b = loadCluster(
    [...cases.find(x => x.name === 'affinity')!.inputs, ...c.inputs].map(p => join(root, p)),
    c.normalize,
  )
  const onlyWeb = { ...b.cluster, services: b.cluster.services.filter(s => s.namespace === 'shop') }
  t.equal(dumpRules(onlyWeb, c.proxy).iptables, dumpRules(a.cluster, c.proxy).iptables)
})
