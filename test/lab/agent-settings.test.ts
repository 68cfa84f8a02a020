// `tundra lab up --failover / --outlier-ejection`: the flag values, and what reaches each node's agent config.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readAgentConfig } from '../../src/agent/config-file'
import { compileLab } from '../../src/lab/compile'
import { LabError, labUp, parseConnectFlag } from '../../src/lab/index'
import { agentConfig } from '../../src/lab/up'

const SEED = join(__dirname, '..', '..', 'examples/seed/seed.yaml')

t.test('flag values: bare or on, off, and key=value fields with durations in seconds', async t => {
  t.same(parseConnectFlag('failover', true), { enabled: true })
  t.same(parseConnectFlag('failover', 'on'), { enabled: true })
  t.same(parseConnectFlag('outlierEjection', 'off'), { enabled: false })
  t.same(parseConnectFlag('failover', 'synTimeout=300ms,maxRetries=2'), { enabled: true, synTimeout: 0.3, maxRetries: 2 })
  t.same(parseConnectFlag('outlierEjection', 'consecutiveFailures=3,baseEjectionTime=30s,maxEjectionPercent=50'), {
    enabled: true,
    consecutiveFailures: 3,
    baseEjectionTime: 30,
    maxEjectionPercent: 50,
  })
  t.same(parseConnectFlag('failover', 'enabled=false,synTimeout=1'), { enabled: false, synTimeout: 1 })
})

t.test('unknown fields, bad values and values out of the agent range are refused', async t => {
  t.throws(() => parseConnectFlag('failover', 'synTimout=300ms'), {
    name: 'LabError',
    message: /failover\.synTimout: unknown field \(known: enabled, synTimeout/,
  })
  t.throws(() => parseConnectFlag('failover', 'synTimeout=soon'), { message: /--failover: synTimeout=soon: expected a number/ })
  t.throws(() => parseConnectFlag('outlierEjection', 'maybe'), { message: /--outlier-ejection: "maybe": expected on, off or key=value/ })
  t.throws(() => parseConnectFlag('outlierEjection', 'maxEjectionPercent=500'), {
    message: /agent settings: outlier maxEjectionPercent must be 0-100, not 500/,
  })
  t.throws(() => parseConnectFlag('failover', 'enabled=1'), { message: /failover\.enabled: expected a boolean/ })
  t.ok(LabError)
})

t.test("each node's agent config carries the settings, and the agent reads it", async t => {
  const plan = compileLab({ name: 'seed', files: [SEED], nodes: 2, dataplane: 'none' })
  const settings = { failover: parseConnectFlag('failover', 'synTimeout=300ms'), outlierEjection: parseConnectFlag('outlierEjection', true) }
  const dir = mkdtempSync(join(tmpdir(), 'tundra-lab-settings-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const node of ['node1', 'node2']) {
    const cfg = agentConfig(plan, node, '/m', '/c', settings)
    t.same(cfg.failover, { enabled: true, synTimeout: 0.3 }, `${node}: failover`)
    t.same(cfg.outlierEjection, { enabled: true }, `${node}: outlier ejection`)
    const f = join(dir, `${node}.agent.json`)
    writeFileSync(f, JSON.stringify(cfg))
    t.same(readAgentConfig(f).failover, { enabled: true, synTimeout: 0.3 }, `${node}: the agent accepts it`)
  }
  const plain = agentConfig(plan, 'node1', '/m', '/c')
  t.notOk('failover' in plain, 'no flag: the agent default (off)')
  t.notOk('outlierEjection' in plain)
})

t.test('lab up refuses the settings with a kernel dataplane, before it builds anything', async t => {
  await t.rejects(labUp({ files: [SEED], name: 'ttsettings', dataplane: 'iptables', agentSettings: { failover: { enabled: true } }, log: () => {} }), {
    message: /not with --dataplane iptables/,
  })
  await t.rejects(labUp({ files: [SEED], name: 'ttsettings', agentSettings: { failover: { synTimeout: -1 } }, log: () => {} }), {
    message: /agent settings: failover synTimeout must be/,
  })
})
