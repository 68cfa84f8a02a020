// The rules `tundra dump` prints are the kernel baseline: loaded into a node's iptables (lab --dataplane iptables)
// they must behave like tundra for the same clients — the same spread over endpoints and the same immediate
// refusal for a service without endpoints. Also `tundra capture` on the live tundra: a pcapng that tcpdump reads,
// with the request before (to the ClusterIP) and after (to the pod) translation.
import t from 'tap'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip, run } from '../helpers/netns'
import { labDown, labExec, labUp } from '../../src/lab/index'

const root = join(__dirname, '..', '..')
const CLI = join(root, 'dist/src/cli/main.js')
const MANIFEST = join(root, 'test/fixtures/parity/parity.yaml')
const skip = netnsSkip('curl', 'iptables-restore', 'tcpdump', 'unshare')
let seq = 0

for (const dataplane of ['tundra', 'iptables'] as const) {
  t.test(`${dataplane}: spread over two endpoints, refusal without endpoints`, { ...skip, timeout: 120_000 }, async t => {
    const name = `pa${process.pid.toString(36)}${seq++}`
    t.teardown(() => labDown(name, { log: () => {} }))
    const status = await labUp({ files: [MANIFEST], name, nodes: 1, dataplane, log: () => {}, readyTimeoutMs: 30_000 })
    const web = status.services.find(s => s.name === 'web')!
    const empty = status.services.find(s => s.name === 'empty')!
    // 200 new connections from one client, each a fresh TCP connection
    const r = await labExec({
      name,
      target: { pod: 'client' },
      timeoutMs: 60_000,
      cmd: ['sh', '-c', `for i in $(seq 200); do curl -sS -m 3 http://${web.clusterIP}/hostname; echo; done`],
    })
    t.equal(r.code, 0, r.stderr)
    const counts = new Map<string, number>()
    for (const line of r.stdout.split('\n').filter(Boolean)) counts.set(line, (counts.get(line) ?? 0) + 1)
    t.equal(counts.size, 2, `both endpoints answered: ${JSON.stringify([...counts])}`)
    for (const [pod, n] of counts) t.ok(n >= 70 && n <= 130, `${pod}: ${n} of 200 (35–65 %)`)
    const refused = await labExec({ name, target: { pod: 'client' }, cmd: ['curl', '-sS', '-m', '5', `http://${empty.clusterIP}/`] })
    t.equal(refused.code, 7, `no endpoints: connection refused at once, not a timeout (${refused.stderr.trim()})`)

    if (dataplane !== 'tundra') return
    const pcap = join('/tmp', `tt-capture-${process.pid}-${seq}.pcapng`)
    t.teardown(() => rmSync(pcap, { force: true }))
    const cap = run([process.execPath, CLI, 'capture', '--lab', name, '-i', 'web', '-w', pcap, '-c', '8', '--duration', '20'], { timeoutMs: 30_000 })
    // the capture is armed once the agent has the request; retry the curl until the capture is done
    let done = false
    void cap.then(() => {
      done = true
    })
    while (!done) {
      await labExec({ name, target: { pod: 'client' }, cmd: ['curl', '-sS', '-m', '2', `http://${web.clusterIP}/hostname`] })
    }
    const c = await cap
    t.equal(c.code, 0, c.stderr)
    t.ok(existsSync(pcap), 'the pcapng was written')
    const dump = await run(['tcpdump', '-nr', pcap])
    t.equal(dump.code, 0, dump.stderr)
    const client = status.pods.find(p => p.name === 'client')!.ip
    const pods = status.pods.filter(p => p.name.startsWith('web-')).map(p => p.ip)
    t.match(dump.stdout, `${client}.`, 'the client appears')
    t.ok(dump.stdout.includes(`> ${web.clusterIP}.80:`), 'before translation: to the ClusterIP')
    t.ok(
      pods.some(ip => dump.stdout.includes(`> ${ip}.8080:`)),
      'after translation: to a pod on 8080',
    )
  })
}
