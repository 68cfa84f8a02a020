// The agent's two threads, seen from a pod: while the control thread is busy or dies, the packet thread keeps
// translating with the last tables it installed; a new control thread takes over and changes apply again.
// The control thread is made to stall and to crash through test-only control commands (TUNDRA_TEST_HOOKS=1).
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { askAgent } from '../../src/agent/control'
import { ROOT, tundraLab, waitFor } from '../fixtures/tundra/lab'

const SEED = join(ROOT, 'examples', 'seed', 'seed.yaml')
const VIP = '10.96.125.237'
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare')

t.test('the packet path keeps serving while the control thread stalls or crashes', { ...skip, timeout: 180_000 }, async t => {
  process.env['TUNDRA_TEST_HOOKS'] = '1' // the agents the lab starts inherit it
  t.teardown(() => {
    delete process.env['TUNDRA_TEST_HOOKS']
  })
  const lab = await tundraLab(t, { prefix: 'th', files: [SEED], nodes: 1 })
  const node = lab.state.nodes[0]!
  const curl = async (): Promise<boolean> => {
    const r = await lab.pod('pod-client', ['curl', '-s', '-m', '1', `http://${VIP}:8080/`])
    return r.code === 0 && r.stdout.includes('Welcome to nginx!')
  }
  t.ok(await curl(), 'curl through the ClusterIP works')

  // a control thread busy for 4 s: five curls with a 1 s limit each, all inside the stall
  let stallDone = false
  const stall = askAgent(node.control!, 'test-stall', { ms: 4000 }, 20_000).then(() => {
    stallDone = true
  })
  await waitFor(
    'the stall to start',
    async () => {
      // the control socket is served by the control thread: it stops answering while it stalls
      const answered = await Promise.race([
        askAgent(node.control!, 'hello', {}, 2000).then(
          () => true,
          () => false,
        ),
        new Promise<boolean>(r => setTimeout(() => r(false), 200)),
      ])
      return !answered
    },
    5000,
    10,
  )
  const during: boolean[] = []
  for (let i = 0; i < 5; i++) during.push(await curl())
  t.equal(stallDone, false, 'the curls ran while the control thread was still stalled')
  t.same(during, [true, true, true, true, true], 'every curl answered within 1 s during the stall')
  await stall

  // a control thread that dies: traffic goes on, a new one takes over
  await askAgent(node.control!, 'test-crash')
  const afterCrash: boolean[] = []
  for (let i = 0; i < 3; i++) afterCrash.push(await curl())
  t.same(afterCrash, [true, true, true], 'curl works right after the control thread died')
  const counters = await waitFor(
    'a new control thread to answer',
    async () => {
      try {
        return await lab.counters(node.name)
      } catch {
        return undefined
      }
    },
    20_000,
    100,
  )
  t.equal(counters['control_restarts'], 1, 'the restart is counted')
  const log = readFileSync(join(lab.state.dir, `${node.name}.agent.log`), 'utf8')
  t.match(log, /control thread failed: Error: test-crash/, 'the failure is logged')
  t.match(log, /the dataplane keeps serving the last tables/)
  t.ok(await curl(), 'curl still works')

  // the new control thread applies changes: the Service's port moves from 8080 to 8081
  await lab.editManifests(objs =>
    objs.map(o =>
      o.kind === 'Service' && o.metadata?.name === 'nginx-pod08'
        ? ({ ...o, spec: { ...(o.spec as object), ports: [{ port: 8081, targetPort: 80, protocol: 'TCP' }] } } as typeof o)
        : o,
    ),
  )
  await waitFor(
    'the new port to answer',
    async () => {
      const r = await lab.pod('pod-client', ['curl', '-s', '-m', '1', `http://${VIP}:8081/`])
      return r.stdout.includes('Welcome to nginx!')
    },
    10_000,
    100,
  )
  t.pass('a change after the restart reaches the dataplane')
})

const UDP_LAB = `apiVersion: v1
kind: Pod
metadata: {name: echo, labels: {app: echo}}
spec:
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.47
    ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: shell, image: busybox, command: [sleep, infinity]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  clusterIP: 10.96.7.7
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: udp, port: 81, targetPort: udp, protocol: UDP}
`

t.test('conntrack list of a large table runs while traffic continues', { ...skip, timeout: 240_000 }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-threads-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'lab.yaml'), UDP_LAB)
  const lab = await tundraLab(t, { prefix: 'tc', files: [join(dir, 'lab.yaml')], nodes: 1 })
  const node = lab.state.nodes[0]!
  const spray = await lab.tool('client', ['udp-spray', '10.96.7.7', '81', '60000'], { timeoutMs: 60_000 })
  t.equal(spray.code, 0, spray.stderr)
  const entries = await waitFor(
    'the flows to reach conntrack',
    async () => {
      const n = (await lab.counters(node.name))['conntrack_entries'] ?? 0
      return n >= 20_000 ? n : undefined
    },
    30_000,
    200,
  )
  t.ok(entries >= 20_000, `${entries} conntrack entries`)

  // Listings back to back on the control socket, and curls with a 1 s limit while one is in flight.
  const windows: [number, number][] = []
  let listed = 0
  let stop = false
  const lister = (async () => {
    while (!stop) {
      const t0 = Date.now()
      const r = (await askAgent(node.control!, 'conntrack', { op: 'list' }, 60_000)) as { entries: unknown[] }
      windows.push([t0, Date.now()])
      listed = Math.max(listed, r.entries.length)
    }
  })()
  const requests: { t0: number; t1: number; ok: boolean }[] = []
  const inside = (): typeof requests => requests.filter(q => windows.some(([a, b]) => a <= q.t0 && q.t1 <= b))
  const deadline = Date.now() + 60_000
  while (inside().length < 5 && Date.now() < deadline) {
    const t0 = Date.now()
    const r = await lab.pod('client', ['curl', '-s', '-m', '1', 'http://10.96.7.7/hostname'])
    requests.push({ t0, t1: Date.now(), ok: r.code === 0 && r.stdout.trim() === 'echo' })
  }
  stop = true
  await lister
  t.ok(listed >= 20_000, `a listing returned ${listed} entries`)
  t.ok(inside().length >= 5, `${inside().length} requests ran while a listing was in flight`)
  t.same(
    requests.filter(q => !q.ok),
    [],
    `every one of ${requests.length} requests answered within 1 s`,
  )
})
