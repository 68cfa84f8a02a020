// The bench's C reference contender (bench/tools/cref.c) in the e2e lab: curl through both ClusterIPs reaches the
// right backends and gets its answers back from the service address, so cref's figures are those of a working DNAT.
// With one TUN queue, and with two (TUNDRA_PACKET_THREADS=2: one thread per queue over one conntrack, where a flow's
// two directions may arrive on different queues).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip, topology } from '../helpers/netns'
import { labDown, labExec, labUp, loadLabState } from '../../src/lab/index'
import { manifestPath, SOLO_VIP, startCref, WEB_VIP } from '../../bench/sections/e2e'
import { crefBinary } from '../../bench/lib/tools'
import { repoRoot } from '../../src/lab/up'

const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare', 'cc')

const accessLog = (name: string, pod: string): number =>
  readFileSync(join(loadLabState(name).dir, 'pods', `default.${pod}`, 'nginx', 'access.log'), 'utf8')
    .split('\n')
    .filter(Boolean).length

for (const queues of [1, 2]) {
  t.test(`cref on ${queues} queue(s) DNATs both services of the e2e lab, both directions`, { ...skip, timeout: 120_000 }, async t => {
    const name = `tc${queues}${process.pid.toString(36)}`
    const saved = process.env['TUNDRA_PACKET_THREADS']
    process.env['TUNDRA_PACKET_THREADS'] = String(queues)
    t.teardown(() => {
      if (saved === undefined) delete process.env['TUNDRA_PACKET_THREADS']
      else process.env['TUNDRA_PACKET_THREADS'] = saved
    })
    t.ok(crefBinary(repoRoot()), 'cref builds')
    t.teardown(() => labDown(name, { log: () => {} }))
    await labUp({ files: [manifestPath()], name, nodes: 1, dataplane: 'none', log: () => {}, readyTimeoutMs: 30_000 })
    const procs = topology(t, 'cref')
    const pid = await startCref(loadLabState(name), procs)
    t.ok(pid > 0)
    const curl = async (vip: string, n: number): Promise<void> => {
      const r = await labExec({
        name,
        target: { pod: 'client' },
        cmd: ['sh', '-c', `for i in $(seq ${n}); do curl -sS -m 5 -o /dev/null -w '%{remote_ip} %{http_code}\\n' http://${vip}/ || exit 1; done`],
      })
      t.equal(r.code, 0, r.stderr)
      t.same([...new Set(r.stdout.trim().split('\n'))], [`${vip} 200`], `answers come from ${vip}`)
    }
    const before = [accessLog(name, 'backend-1'), accessLog(name, 'backend-2')]
    await curl(SOLO_VIP, 5)
    t.equal(accessLog(name, 'backend-1') - before[0]!, 5, 'solo: backend-1 only')
    t.equal(accessLog(name, 'backend-2') - before[1]!, 0)
    await curl(WEB_VIP, 40)
    t.ok(accessLog(name, 'backend-1') - before[0]! > 5 && accessLog(name, 'backend-2') - before[1]! > 0, 'web: both backends')
    t.equal(accessLog(name, 'backend-1') + accessLog(name, 'backend-2') - before[0]! - before[1]!, 45)
    const q = await labExec({ name, target: { node: 'node1' }, cmd: ['ls', '/sys/class/net/tundra0/queues'] })
    t.equal(q.stdout.split(/\s+/).filter(x => x.startsWith('rx-')).length, queues, `the TUN has ${queues} queue(s)`)
  })
}
