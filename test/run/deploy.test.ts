// deploy/: the ConfigMap's configuration is valid for tundra as shipped, RBAC is exactly list/watch of what the
// watch reads, and the DaemonSet has what the brief requires.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { mergeFlags, parseKubeProxyConfig } from '../../src/run/kpconfig'

const DEPLOY = join(__dirname, '..', '..', 'deploy')
// biome-ignore lint/suspicious/noExplicitAny: parsed YAML, read along paths the assertions name
type Doc = Record<string, any>
const docs = (file: string): Doc[] => parseAllDocuments(readFileSync(join(DEPLOY, file), 'utf8')).map(d => d.toJS() as Doc)

t.test('the ConfigMap holds a valid KubeProxyConfiguration with a tundra section, no warnings', async t => {
  const [cm] = docs('configmap.yaml')
  const p = parseKubeProxyConfig(cm!['data']['config.yaml'], 'configmap.yaml')
  t.same(p.warnings, [])
  const c = mergeFlags(p, { hostnameOverride: 'node-1' })
  t.equal(c.tundra.dns.ip, '10.96.0.10')
  t.equal(c.tundra.snapshot.path, '/var/lib/tundra/nat.snapshot')
  t.equal(c.healthzBindAddress, '0.0.0.0:10256')
})

t.test('RBAC: list and watch of services, nodes, endpointslices, nothing more', async t => {
  const [sa, role, binding] = docs('rbac.yaml')
  t.equal(sa!['kind'], 'ServiceAccount')
  const rules = (role!['rules'] as { apiGroups: string[]; resources: string[]; verbs: string[] }[])
    .flatMap(r => r.apiGroups.flatMap(g => r.resources.map(res => `${g}/${res}:${[...r.verbs].sort().join(',')}`)))
    .sort()
  t.same(rules, ['/nodes:list,watch', '/services:list,watch', 'discovery.k8s.io/endpointslices:list,watch'])
  t.same(binding!['subjects'], [{ kind: 'ServiceAccount', name: 'tundra', namespace: 'kube-system' }])
})

t.test('DaemonSet: host network, privileged (the TUN), node-critical, tolerations, probes on the health port', async t => {
  const [ds] = docs('daemonset.yaml')
  const spec = ds!['spec']['template']['spec']
  t.equal(spec.hostNetwork, true)
  t.equal(spec.priorityClassName, 'system-node-critical')
  t.same(spec.tolerations, [{ operator: 'Exists' }])
  t.equal(spec.serviceAccountName, 'tundra')
  const c = spec.containers[0]
  // privileged: recent container runtimes no longer give unprivileged containers /dev/net/tun (deploy/README.md)
  t.equal(c.securityContext.privileged, true)
  t.equal(
    spec.volumes.find((v: Doc) => v['name'] === 'dev-net-tun'),
    undefined,
    'no hostPath for the device: a privileged container has it',
  )
  t.same(
    spec.volumes.find((v: Doc) => v['name'] === 'run').hostPath,
    { path: '/run/tundra', type: 'DirectoryOrCreate' },
    'the wiring journal and control socket',
  )
  t.same(spec.volumes.find((v: Doc) => v['name'] === 'state').hostPath, { path: '/var/lib/tundra', type: 'DirectoryOrCreate' }, 'the last known state')
  t.equal(c.livenessProbe.httpGet.port, 10256)
  t.ok((c.args as string[]).includes('--config=/etc/tundra/config.yaml'))
})

t.test('Dockerfile: a supported Node LTS', async t => {
  const froms = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8').match(/^FROM node:(\d+)/gm) ?? []
  t.ok(froms.length >= 2, 'build and runtime stages')
  for (const f of froms) t.ok(Number(/(\d+)$/.exec(f)![1]) >= 22, `${f}: Node 22 or later (Node 20 is end of life)`)
})
