// Planning live changes (`lab apply/delete/scale/set-ready`) against a lab on disk, with a scratch TUNDRA_LAB_ROOT:
// what changes for a given input, kubectl's lines, and errors that name file, object and field. No namespaces, no root:
// changes that make pods are only planned here (test/netns/lab-apply.test.ts carries them out).
import t from 'tap'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseManifests } from '../../src/k8s/load'
import type { EndpointSlice, KubeObject, Pod, Service } from '../../src/k8s/types'
import { commit, openLab, parseObjectRef, planApply, planDelete, planScale, planSetReady, type LabChange, type LabSession } from '../../src/lab/apply'
import { compileLab } from '../../src/lab/compile'
import { APPLIED_DIR, MANIFESTS_DIR, writeObject } from '../../src/lab/objects'
import { podState } from '../../src/lab/pods'
import { saveState, type LabState } from '../../src/lab/state'
import { labStatus } from '../../src/lab/status'

const root = join(__dirname, '..', '..')
const NETEXEC = join(root, 'test/fixtures/lab/netexec.yaml')
const scratch = mkdtempSync(join(tmpdir(), 'tundra-apply-'))
process.env['TUNDRA_LAB_ROOT'] = scratch
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

let seq = 0
/** A lab as `lab up` leaves it on disk (state, manifests/, applied/), without namespaces or processes. */
function fakeLab(files: string[], nodes = 1): LabSession {
  const name = `ap${seq++}`
  const plan = compileLab({ name, files, nodes, dataplane: 'none' })
  const dir = join(scratch, name)
  for (const d of [MANIFESTS_DIR, APPLIED_DIR]) mkdirSync(join(dir, d), { recursive: true })
  for (const o of plan.manifests) writeObject(join(dir, MANIFESTS_DIR), o)
  for (const o of plan.applied) writeObject(join(dir, APPLIED_DIR), o)
  const state: LabState = {
    version: 1,
    name,
    phase: 'up',
    createdAt: '2024-01-01T00:00:00.000Z',
    dataplane: 'none',
    dir,
    repo: root,
    namespaces: [],
    files: [],
    processes: [],
    net: { ns: `tundra-${name}-net`, bridge: 'br0' },
    nodes: plan.nodes.map(n => ({ name: n.name, ns: n.ns, ip: n.ip, podCIDR: n.podCIDR })),
    external: { ns: `tundra-${name}-ext`, ip: '172.18.0.100' },
    upstreamDns: { ns: `tundra-${name}-dns`, ip: '172.18.0.53' },
    pods: plan.pods.map(p => ({ ...podState(p), ready: true })),
    manifests: join(dir, MANIFESTS_DIR),
    warnings: [],
  }
  saveState(state)
  return openLab(name, { log: () => {} })
}

const objects = (text: string, file = 'in.yaml') => parseManifests(text, file).objects
const served = (c: LabChange, kind: string): KubeObject[] => [...c.served.values()].filter((o): o is KubeObject => o !== null && o.kind === kind)
const removed = (c: LabChange): string[] =>
  [...c.served.entries()]
    .filter(([, o]) => o === null)
    .map(([k]) => k)
    .sort()

const SERVICE = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080, targetPort: http}]
`
const DEPLOY = (replicas: number, ns = 'shop'): string => `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ${ns}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]
`

t.test("apply a new Service: a cluster IP, the controller's slice of the pods it selects, kubectl's line", async t => {
  const s = fakeLab([NETEXEC])
  const c = planApply(s, objects(SERVICE))
  t.same(c.lines, ['service/web created'])
  const [svc] = served(c, 'Service') as Service[]
  t.match(svc!.spec?.clusterIP, /^10\.(9[6-9]|10[0-9]|11[01])\./, 'allocated in the service CIDR')
  t.not(svc!.spec?.clusterIP, labStatus(s.state.name).services.find(x => x.name === 'backend')!.clusterIP)
  const [slice] = served(c, 'EndpointSlice') as EndpointSlice[]
  t.equal(slice!.metadata?.labels?.['kubernetes.io/service-name'], 'web')
  t.same(
    slice!.endpoints!.map(e => e.addresses![0]).sort(),
    s.state.pods
      .filter(p => p.name.startsWith('backend-'))
      .map(p => p.ip)
      .sort(),
    'every backend pod',
  )
  t.same(slice!.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }])
  t.same(c.addPods, [])

  // carried out: files written, status shows it; the same input again is unchanged
  t.same(await commit(s, c), ['service/web created'])
  t.ok(readdirSync(join(s.state.dir, MANIFESTS_DIR)).includes('service.shop.web.json'))
  t.ok(labStatus(s.state.name).services.some(x => x.name === 'web' && x.clusterIP === svc!.spec?.clusterIP))
  t.same(planApply(s, objects(SERVICE)).lines, ['service/web unchanged'])
  const again = openLab(s.state.name, { log: () => {} })
  t.same(planApply(again, objects(SERVICE)).lines, ['service/web unchanged'], 'also after reopening the lab')

  // configured: the cluster IP stays; a different one is refused (immutable)
  const changed = planApply(s, objects(SERVICE.replace('port: 8080', 'port: 9090')))
  t.same(changed.lines, ['service/web configured'])
  t.equal((served(changed, 'Service')[0] as Service).spec?.clusterIP, svc!.spec?.clusterIP)
  t.throws(() => planApply(s, objects(SERVICE.replace('spec:\n', 'spec:\n  clusterIP: 10.96.7.7\n'), 'web.yaml')), {
    message: /web\.yaml: Service shop\/web: spec\.clusterIP: .*field is immutable/,
  })
})

t.test('bad input names file, object and field, and nothing is planned', async t => {
  const s = fakeLab([NETEXEC])
  const before = readdirSync(join(s.state.dir, MANIFESTS_DIR)).sort()
  t.throws(() => planApply(s, objects(SERVICE.replace('port: 8080', 'port: 99999'), 'bad.yaml')), {
    message: /bad\.yaml: Service shop\/web: spec\.ports\[0\]\.port: /,
  })
  const taken = labStatus(s.state.name).services.find(x => x.name === 'backend')!
  t.throws(() => planApply(s, objects(SERVICE.replace('spec:\n', `spec:\n  clusterIP: ${taken.clusterIP}\n`), 'dup.yaml')), {
    message: /dup\.yaml: Service shop\/web: spec\.clusterIP: .*already allocated to Service shop\/backend/,
  })
  t.throws(
    () => planApply(s, objects(`${SERVICE}---\n${DEPLOY(1).replace('replicas: 1', 'replicas: -1')}`, 'two.yaml')),
    { message: /two\.yaml: Deployment shop\/web: spec\.replicas: / },
    'one bad object refuses the whole apply',
  )
  t.throws(() => planApply(s, objects(SERVICE.replace('spec:\n', 'spec:\n  ipFamilies: [IPv6]\n'), 'v6.yaml')), {
    message: /v6\.yaml: Service shop\/web: spec\.ipFamilies: this lab is IPv4-only/,
  })
  t.same(readdirSync(join(s.state.dir, MANIFESTS_DIR)).sort(), before, 'no file changed')
  t.throws(() => planDelete(s, [parseObjectRef('svc/nope', 'shop')]), { message: /Service shop\/nope: not found/ })
  const backendPod = s.state.pods.find(p => p.name.startsWith('backend-'))!
  t.throws(() => planDelete(s, [parseObjectRef(`pod/${backendPod.name}`, 'shop')]), { message: /made by ReplicaSet backend-.*scale or delete its Deployment/ })
  t.throws(() => parseObjectRef('web'), /give TYPE\/NAME/)
})

t.test("a Deployment's pods: created, scaled up and down, slices follow", async t => {
  const s = fakeLab([NETEXEC])
  const c = planApply(
    s,
    objects(
      `${DEPLOY(2)}---\n${SERVICE.replace('name: web,', 'name: websvc,').replace('app: backend', 'app: web').replace('targetPort: http', 'targetPort: 80')}`,
    ),
  )
  t.same(c.lines, ['deployment.apps/web created', 'service/websvc created'])
  t.equal(c.addPods.length, 2)
  t.ok(c.addPods.every(p => p.name.startsWith('web-') && p.namespace === 'shop' && p.containers[0]!.runtime === 'nginx'))
  const taken = new Set(s.state.pods.map(p => p.ip))
  t.ok(
    c.addPods.every(p => !taken.has(p.ip)),
    'new pods get free addresses',
  )
  const pods = served(c, 'Pod') as Pod[]
  t.same(pods.map(p => p.status?.podIP).sort(), c.addPods.map(p => p.ip).sort())
  const slice = served(c, 'EndpointSlice').find(o => o.metadata?.labels?.['kubernetes.io/service-name'] === 'websvc') as EndpointSlice
  t.same(slice.endpoints!.map(e => e.addresses![0]).sort(), c.addPods.map(p => p.ip).sort())

  // as if carried out (pods recorded in the state, objects written) to plan the next change on top
  s.state.pods.push(...c.addPods.map(p => ({ ...podState(p), ready: true })))
  c.addPods.length = 0
  await commit(s, c)
  const up = planScale(s, 'shop', 'web', 3)
  t.same(up.lines, ['deployment.apps/web scaled'])
  t.equal(up.addPods.length, 1)
  t.same(up.removePods, [])
  const grown = served(up, 'EndpointSlice').find(o => o.metadata?.labels?.['kubernetes.io/service-name'] === 'websvc') as EndpointSlice
  t.equal(grown.endpoints!.length, 3)

  const down = planScale(s, 'shop', 'web', 1)
  t.same(down.addPods, [])
  t.equal(down.removePods.length, 1)
  const shrunk = served(down, 'EndpointSlice').find(o => o.metadata?.labels?.['kubernetes.io/service-name'] === 'websvc') as EndpointSlice
  t.same(
    shrunk.endpoints!.map(e => e.addresses![0]),
    s.state.pods.filter(p => p.name.startsWith('web-') && p !== down.removePods[0]).map(p => p.ip),
  )
  t.same(removed(down), [`Pod/shop/${down.removePods[0]!.name}`])
  t.throws(() => planScale(s, 'shop', 'nope', 1), /deployment\.apps\/nope in namespace shop not found/)

  // delete the Deployment: its pods go, the Service's slice becomes the controller's empty placeholder
  const del = planDelete(s, [parseObjectRef('deploy/web', 'shop')])
  t.same(del.lines, ['deployment.apps/web deleted'])
  t.equal(del.removePods.length, 2)
  const empty = served(del, 'EndpointSlice').find(o => o.metadata?.labels?.['kubernetes.io/service-name'] === 'websvc') as EndpointSlice
  t.equal(empty.endpoints, null)
})

t.test("set-ready: the pod's endpoint says ready=false, and back", async t => {
  const s = fakeLab([NETEXEC])
  const pod = s.state.pods.find(p => p.name.startsWith('backend-'))!
  const c = planSetReady(s, 'shop', pod.name, false)
  t.same(c.lines, [`pod/${pod.name} not ready`])
  const slice = served(c, 'EndpointSlice')[0] as EndpointSlice
  const ep = slice.endpoints!.find(e => e.addresses![0] === pod.ip)!
  t.same(ep.conditions, { ready: false, serving: false, terminating: false })
  t.ok(slice.endpoints!.filter(e => e !== ep).every(e => e.conditions?.ready === true))
  await commit(s, c)
  t.equal(labStatus(s.state.name).pods.find(p => p.name === pod.name)!.ready, false, 'status shows it not ready')
  const back = planSetReady(s, 'shop', pod.name, true)
  t.ok((served(back, 'EndpointSlice')[0] as EndpointSlice).endpoints!.every(e => e.conditions?.ready === true))
  await commit(s, back)
  t.equal(labStatus(s.state.name).pods.find(p => p.name === pod.name)!.ready, true)
})

t.test("delete a Service: it and its slices go; kubectl's line", async t => {
  const s = fakeLab([NETEXEC])
  const c = planDelete(s, [parseObjectRef('svc/backend', 'shop')])
  t.same(c.lines, ['service/backend deleted'])
  t.same(
    removed(c).filter(k => k.startsWith('Service/')),
    ['Service/shop/backend'],
  )
  t.equal(removed(c).filter(k => k.startsWith('EndpointSlice/shop/backend-')).length, 1)
  t.same(c.removePods, [])
  await commit(s, c)
  t.notOk(labStatus(s.state.name).services.some(x => x.name === 'backend'))
  t.notOk(labStatus(s.state.name).endpointSlices.some(x => x.service === 'backend'))
  // delete -f: the objects a file names
  writeFileSync(
    join(scratch, 'client.yaml'),
    'apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: shop}\nspec: {containers: [{name: c, image: busybox}]}\n',
  )
  const pod = planDelete(s, [parseObjectRef('pod/client', 'shop')])
  t.same(pod.lines, ['pod/client deleted'])
  t.equal(pod.removePods[0]!.name, 'client')
})

t.test('topology-mode Auto: applied, with a warning that the lab writes no capacity-based hints for it', async t => {
  const s = fakeLab([NETEXEC])
  const annotated = SERVICE.replace('namespace: shop}', 'namespace: shop, annotations: {service.kubernetes.io/topology-mode: Auto}}')
  t.not(annotated, SERVICE)
  const c = planApply(s, objects(annotated))
  t.same(c.lines, ['service/web created'])
  t.match(c.warnings, [
    /in\.yaml: Service shop\/web: metadata\.annotations\[service\.kubernetes\.io\/topology-mode\]: .*use spec\.trafficDistribution: PreferClose/,
  ])
  t.same(planApply(s, objects(SERVICE)).warnings, [], 'no annotation, no warning')
})
