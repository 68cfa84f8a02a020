// `tundra lab up --failover --outlier-ejection` (agentSettings): the lab's real agents fail over and eject. One of
// three backends refuses (nft tcp reset in its namespace); every connect through the Service still succeeds and
// `tundra services` shows that backend ejected.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { askAgent } from '../../src/agent/control'
import type { ServicesReport } from '../../src/inspect/services'
import { labDown, labExec, labUp, loadLabState, parseConnectFlag } from '../../src/lab/index'
import { failoverManifest } from '../../bench/sections/failover'

const skip = netnsSkip('dnsmasq', 'unshare', 'nft', 'curl')
const VIP = '10.96.0.61'

const MANIFEST = failoverManifest(VIP)

t.test('lab agents with failover and ejection: a refusing backend loses no connect and is ejected', { ...skip, timeout: 120_000 }, async t => {
  const name = `lf${process.pid.toString(36)}`
  const dir = mkdtempSync(join(tmpdir(), 'tundra-lab-failover-'))
  t.teardown(async () => {
    await labDown(name, { log: () => {} })
    rmSync(dir, { recursive: true, force: true })
  })
  const file = join(dir, 'm.yaml')
  writeFileSync(file, MANIFEST)
  await labUp({
    files: [file],
    name,
    log: () => {},
    agentSettings: {
      failover: parseConnectFlag('failover', 'synTimeout=300ms'),
      outlierEjection: parseConnectFlag('outlierEjection', 'consecutiveFailures=3'),
    },
  })
  const nft = await labExec({
    name,
    target: { pod: 'web-a' },
    cmd: ['nft', 'add table inet tt; add chain inet tt in { type filter hook input priority 0; }; add rule inet tt in tcp dport 8080 reject with tcp reset'],
  })
  t.equal(nft.code, 0, nft.stderr)
  const r = await labExec({
    name,
    target: { pod: 'cli' },
    cmd: ['sh', '-c', `f=0; for i in $(seq 60); do curl -s -o /dev/null -m 2 http://${VIP}/hostname || f=$((f+1)); done; echo failed=$f`],
  })
  t.equal(r.stdout.trim(), 'failed=0', 'every connect succeeds')
  const control = loadLabState(name).nodes[0]!.control!
  const report = (await askAgent(control, 'services')) as ServicesReport
  const web = report.services.find(s => s.service === 'default/web')!
  // 60 connects: web-a is chosen at least 3 times but with a chance of about 1e-8
  t.equal((web.signals ?? []).filter(x => x.ejectedMs > 0).length, 1, 'the refusing backend is ejected')
})
