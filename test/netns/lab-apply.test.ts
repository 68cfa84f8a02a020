// Live changes to a running lab on the tundra dataplane, through the CLI as a user types them: apply a Service and a
// Deployment, scale up and down, flip a pod's readiness, delete the Service, and a bad manifest that changes nothing.
// Every change is awaited by polling what a user sees (curl, dig), bounded, never by sleeping.
import t from 'tap'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip, run, type RunResult } from '../helpers/netns'
import { labDown, labExec, labStatus, labUp, loadLabState } from '../../src/lab/index'

const root = join(__dirname, '..', '..')
const CLI = join(root, 'dist/src/cli/main.js')
const skip = netnsSkip('curl', 'dnsmasq', 'unshare', 'dig')
const name = `lp${process.pid.toString(36)}`
const dir = mkdtempSync(join(tmpdir(), 'tundra-lab-apply-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const BASE = `apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: curl, image: curlimages/curl, command: [sleep, infinity]}]
`
const WEB = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.47
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-h}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 8080}]
`

const cli = (args: readonly string[]): Promise<RunResult> => run([process.execPath, CLI, ...args, '--name', name], { timeoutMs: 120_000 })
const client = (cmd: string[]): Promise<RunResult> => labExec({ name, target: { pod: 'client' }, cmd, timeoutMs: 30_000 })
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** Retries `check` until it holds (bounded): the way a user re-runs a command until a change shows. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

/** The pod names `n` new connections to the ClusterIP reach (one curl each). */
async function hostnames(n: number): Promise<string[]> {
  const r = await client(['sh', '-c', `for i in $(seq ${n}); do curl -sS -m 2 http://web/hostname; echo; done`])
  return r.stdout.split('\n').filter(Boolean)
}
const digShort = async (qname: string): Promise<string[]> =>
  (await client(['dig', '+short', '+time=1', '+tries=1', qname])).stdout.split('\n').filter(Boolean).sort()
const webPods = (): { name: string; ip: string }[] =>
  loadLabState(name)
    .pods.filter(p => p.name.startsWith('web-'))
    .map(p => ({ name: p.name, ip: p.ip }))

t.test('lab apply, scale, set-ready and delete on a running tundra lab', { ...skip, timeout: 300_000 }, async t => {
  t.teardown(() => labDown(name, { log: () => {} }))
  writeFileSync(join(dir, 'base.yaml'), BASE)
  writeFileSync(join(dir, 'web.yaml'), WEB)
  await labUp({ files: [join(dir, 'base.yaml')], name, nodes: 1, dataplane: 'tundra', log: () => {}, readyTimeoutMs: 60_000 })

  // apply: kubectl's lines; the ClusterIP answers by name and DNS resolves it
  const applied = await cli(['lab', 'apply', '-f', join(dir, 'web.yaml')])
  t.equal(applied.code, 0, applied.stderr)
  t.equal(applied.stdout, 'deployment.apps/web created\nservice/web created\nservice/web-h created\n')
  const vip = labStatus(name).services.find(s => s.name === 'web')!.clusterIP
  const [first] = webPods()
  t.ok(first, 'one web pod')
  await until('curl http://web/ to reach the new pod', async () => (await hostnames(1))[0] === first!.name)
  t.same(await digShort('web.default.svc.cluster.local'), [vip], 'dig resolves the new Service')
  t.same(await digShort('web-h.default.svc.cluster.local'), [first!.ip], 'headless: the pod')
  const again = await cli(['lab', 'apply', '-f', join(dir, 'web.yaml')])
  t.equal(again.stdout, 'deployment.apps/web unchanged\nservice/web unchanged\nservice/web-h unchanged\n')

  // scale up: the new pod gets connections
  const up = await cli(['lab', 'scale', 'deploy/web', '--replicas', '2'])
  t.equal(up.code, 0, up.stderr)
  t.equal(up.stdout, 'deployment.apps/web scaled\n')
  const pods = webPods()
  t.equal(pods.length, 2)
  const second = pods.find(p => p.name !== first!.name)!
  await until('the new pod to get connections', async () => (await hostnames(10)).includes(second.name))

  // set-ready false: headless DNS drops the pod, NAT stops picking it
  const nr = await cli(['lab', 'set-ready', `pod/${second.name}`, '--ready=false'])
  t.equal(nr.code, 0, nr.stderr)
  t.equal(nr.stdout, `pod/${second.name} not ready\n`)
  await until(
    'headless DNS to drop the not-ready pod',
    async () => JSON.stringify(await digShort('web-h.default.svc.cluster.local')) === JSON.stringify([first!.ip]),
  )
  t.same([...new Set(await hostnames(12))], [first!.name], 'every new connection goes to the ready pod')
  t.equal(labStatus(name).pods.find(p => p.name === second.name)!.ready, false, 'status shows it not ready')
  const ready = await cli(['lab', 'set-ready', `pod/${second.name}`, '--ready=true'])
  t.equal(ready.code, 0, ready.stderr)
  await until('headless DNS to list both pods again', async () => (await digShort('web-h.default.svc.cluster.local')).length === 2)

  // scale down: new connections only go to the remaining pod; its namespace is gone
  const down = await cli(['lab', 'scale', 'deploy/web', '--replicas', '1'])
  t.equal(down.code, 0, down.stderr)
  const left = webPods()
  t.equal(left.length, 1)
  await until(
    'headless DNS to list only the remaining pod',
    async () => JSON.stringify(await digShort('web-h.default.svc.cluster.local')) === JSON.stringify([left[0]!.ip]),
  )
  t.same([...new Set(await hostnames(10))], [left[0]!.name], 'new connections reach only the remaining pod')
  t.notOk(
    (await run(['ip', 'netns', 'list'])).stdout.includes(`tundra-${name}-default.${pods.find(p => p.name !== left[0]!.name)!.name}`),
    "the removed pod's namespace is gone",
  )

  // a bad manifest: non-zero exit naming file, object and field; nothing changes
  const manifests = join(loadLabState(name).dir, 'manifests')
  const filesBefore = readdirSync(manifests).sort()
  const statusBefore = JSON.stringify(labStatus(name))
  writeFileSync(join(dir, 'bad.yaml'), WEB.replace('replicas: 1', 'replicas: 3').replace('port: 80,', 'port: 99999,'))
  const bad = await cli(['lab', 'apply', '-f', join(dir, 'bad.yaml')])
  t.equal(bad.code, 1)
  t.match(bad.stderr, `${join(dir, 'bad.yaml')}: Service default/web: spec.ports[0].port: `)
  t.same(readdirSync(manifests).sort(), filesBefore, 'no object file changed')
  t.equal(JSON.stringify(labStatus(name)), statusBefore, 'status unchanged')
  t.equal(webPods().length, 1, 'no pod made')

  // delete svc: the name is gone from DNS
  const del = await cli(['lab', 'delete', 'svc/web'])
  t.equal(del.code, 0, del.stderr)
  t.equal(del.stdout, 'service/web deleted\n')
  await until('dig to answer NXDOMAIN', async () =>
    /status: NXDOMAIN/.test((await client(['dig', '+time=1', '+tries=1', 'web.default.svc.cluster.local'])).stdout),
  )
  const missing = await cli(['lab', 'delete', 'svc/web'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /Service default\/web: not found/)

  // lab down removes the pods apply made too
  await labDown(name, { log: () => {} })
  t.same(
    (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter(l => l.startsWith(`tundra-${name}-`)),
    [],
  )
})
