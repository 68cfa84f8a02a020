// The kernel's side of UDP write coalescing (src/dataplane/coalesce.ts), on a real TUN in a namespace: a run of
// datagrams merged into one USO super-packet and written once reaches local sockets as the same datagrams, one by
// one, in order, byte for byte (IPv4 and IPv6, a shorter last datagram). The loop-level rules are in
// test/dataplane/coalesce.test.ts.
import t from 'tap'
import { netnsSkip, topology } from '../helpers/netns'
import { fixtureCommand } from './fixtures/launch'

interface CaseReport {
  name: string
  datagrams: number
  writes: number
  written: number
  received: number
  sizes: number[]
  intact: boolean
  merged: number
}

t.test('a USO super-packet written to the TUN arrives as the datagrams it was made of', netnsSkip(), async t => {
  const topo = topology(t, 'uso')
  const ns = await topo.ns('uso')
  const r = await topo.exec(ns, fixtureCommand('uso-write', ns), { timeoutMs: 60_000 })
  const rep = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { cases?: CaseReport[]; writeErrors?: number; fatal?: string }
  t.notOk(rep.fatal, `fixture ran: ${rep.fatal ?? ''} ${r.stderr}`)
  t.equal(rep.writeErrors, 0, 'the kernel took every write')
  t.equal(rep.cases?.length, 3)
  for (const c of rep.cases ?? []) {
    t.equal(c.writes, 1, `${c.name}: one write`)
    t.equal(c.written, 1, `${c.name}: written`)
    t.equal(c.merged, c.datagrams - 1, `${c.name}: merged`)
    t.equal(c.received, c.datagrams, `${c.name}: every datagram received`)
    t.ok(c.intact, `${c.name}: in order, each with its own payload and size (${c.sizes.join(',')})`)
  }
})
