// SyncRunner: kube-proxy's batching (minSyncPeriod / syncPeriod), failure retry, timings and health — on a manual clock.
import t from 'tap'
import { SyncRunner, nodeEligible, type SyncBatch, type SyncRecord } from '../../src/run/sync'
import { ObjectStore, type ChangeSet } from '../../src/run/store'
import { FakeClock } from './helpers/clock'

function change(p: Partial<{ services: string[]; endpoints: string[]; nodes: string[]; full: boolean; trigger: Record<string, number[]> }>): ChangeSet {
  return {
    services: new Set(p.services ?? []),
    endpoints: new Set(p.endpoints ?? []),
    nodes: new Set(p.nodes ?? []),
    other: new Set(),
    full: p.full ?? false,
    serviceEvents: (p.services ?? []).length,
    endpointEvents: (p.endpoints ?? []).length,
    triggerTimes: new Map(Object.entries(p.trigger ?? {})),
  }
}

function setup(opts: { fail?: () => boolean; block?: boolean } = {}) {
  const clock = new FakeClock()
  const batches: SyncBatch[] = []
  const records: SyncRecord[] = []
  const latencies: number[] = []
  let release: (() => void) | undefined
  const runner = new SyncRunner({
    minSyncPeriodMs: 1000,
    syncPeriodMs: 30_000,
    clock,
    log: () => {},
    apply: async b => {
      batches.push(b)
      if (opts.block === true)
        await new Promise<void>(r => {
          release = r
        })
      if (opts.fail?.() === true) throw new Error('apply failed')
    },
    observer: { synced: r => records.push(r), programmingLatency: s => latencies.push(s) },
  })
  return { clock, runner, batches, records, latencies, release: () => release?.() }
}

t.test('first sync is full, at start; changes queued before start join it', async t => {
  const { clock, runner, batches } = setup()
  runner.queue(change({ services: ['default/a'] }))
  await clock.advance(5000)
  t.equal(batches.length, 0, 'nothing before start()')
  runner.start()
  await clock.advance(0)
  t.equal(batches.length, 1)
  t.equal(batches[0]!.full, true)
  t.equal(batches[0]!.reason, 'initial')
  t.same([...batches[0]!.services], ['default/a'])
})

t.test('changes are coalesced: at most one sync per minSyncPeriod, the union of services', async t => {
  const { clock, runner, batches } = setup()
  runner.start()
  await clock.advance(0)
  runner.queue(change({ services: ['default/a'] }))
  runner.queue(change({ endpoints: ['default/b'] }))
  await clock.advance(999)
  t.equal(batches.length, 1, 'the initial sync only: min period not over')
  runner.queue(change({ endpoints: ['default/a', 'default/c'] }))
  await clock.advance(1)
  t.equal(batches.length, 2)
  t.same([...batches[1]!.services].sort(), ['default/a', 'default/b', 'default/c'])
  t.equal(batches[1]!.full, false)
  t.equal(batches[1]!.reason, 'changes')
  t.equal(batches[1]!.change.endpointEvents, 3)
  // quiet for a while: the next change runs at once
  await clock.advance(5000)
  runner.queue(change({ services: ['default/d'] }))
  await clock.advance(0)
  t.equal(batches.length, 3)
  t.same([...batches[2]!.services], ['default/d'])
})

t.test('a full sync at least every syncPeriod; a full change makes the batch full', async t => {
  const { clock, runner, batches } = setup()
  runner.start()
  await clock.advance(0)
  await clock.advance(30_000)
  t.equal(batches.length, 2)
  t.equal(batches[1]!.reason, 'periodic')
  t.equal(batches[1]!.full, true)
  t.equal(batches[1]!.services.size, 0)
  await clock.advance(2000)
  runner.queue(change({ full: true }))
  await clock.advance(0)
  t.equal(batches[2]!.full, true)
  runner.requestFull()
  await clock.advance(1000)
  t.equal(batches[3]!.full, true)
  t.equal(batches[3]!.reason, 'requested')
})

t.test('a failed sync keeps its changes and retries as a full sync after syncPeriod; health turns bad after 2 x syncPeriod', async t => {
  let failing = true
  const { clock, runner, batches, records } = setup({ fail: () => failing })
  runner.start()
  await clock.advance(0)
  t.equal(records[0]!.ok, false)
  t.equal(runner.stats().errors, 1)
  t.equal(runner.health().healthy, true, 'not yet: within 2 x syncPeriod')
  await clock.advance(30_000)
  t.equal(batches.length, 2)
  t.equal(batches[1]!.reason, 'retry')
  t.equal(batches[1]!.full, true)
  await clock.advance(30_001)
  t.equal(runner.health().healthy, false, 'the initial change waited over 60 s')
  failing = false
  runner.queue(change({ services: ['default/x'] }))
  await clock.advance(1000)
  const last = batches[batches.length - 1]!
  t.equal(last.full, true, 'still full after failures')
  t.ok(last.services.has('default/x'))
  t.equal(runner.health().healthy, true)
  const r = records[records.length - 1]!
  t.equal(runner.health().lastUpdated, r.startMs + r.durationMs)
})

t.test('a hung apply: health goes bad 2 x syncPeriod after the change was queued', async t => {
  const { clock, runner, release } = setup({ block: true })
  runner.start()
  await clock.advance(0)
  t.equal(runner.health().healthy, true)
  await clock.advance(60_000)
  t.equal(runner.health().healthy, true, 'exactly 2 x syncPeriod is still fine')
  await clock.advance(1)
  t.equal(runner.health().healthy, false)
  t.equal(runner.health().oldestPending, clock.now() - 60_001)
  release()
  await runner.whenIdle()
  t.equal(runner.health().healthy, true)
})

t.test('network programming latency from last-change-trigger-time; older than the runner is not measured', async t => {
  const { clock, runner, latencies, records } = setup()
  runner.start()
  await clock.advance(10_000)
  const now = clock.now()
  runner.queue(change({ endpoints: ['default/a'], trigger: { 'default/a': [now - 2000, now - 500] } }))
  runner.queue(change({ endpoints: ['default/b'], trigger: { 'default/b': [now - 3_600_000] } }))
  await clock.advance(0) // the last sync is 10 s old: this one runs at once
  t.same(latencies, [2, 0.5])
  t.equal(records[records.length - 1]!.services, 2)
  t.equal(runner.stats().pendingEndpointChanges, 0)
})

t.test('pending stats and node eligibility', async t => {
  const { clock, runner } = setup()
  runner.start()
  await clock.advance(0)
  runner.queue(change({ services: ['default/a'], endpoints: ['default/a', 'default/b'] }))
  t.same({ s: runner.stats().pendingServiceChanges, e: runner.stats().pendingEndpointChanges }, { s: 1, e: 2 })
  t.equal(runner.stats().lastQueuedMs, clock.now())

  const store = new ObjectStore()
  store.upsert({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' } })
  runner.followNode(store, 'n1')
  t.equal(runner.health().nodeEligible, true)
  store.upsert({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', deletionTimestamp: '2025-01-01T00:00:00Z' } })
  t.equal(runner.health().nodeEligible, false)
  t.equal(nodeEligible(undefined), true, 'no Node object: eligible (kube-proxy waits for it otherwise)')
  await runner.stop()
})
