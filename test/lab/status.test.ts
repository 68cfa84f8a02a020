// Lab state on disk and the status views, with a scratch TUNDRA_LAB_ROOT (no namespaces, no root).
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { procStartTime } from '../../src/lab/proc'
import { listLabs, loadLabState, resolveLabName, saveState, type LabState } from '../../src/lab/state'
import { formatStatus, labStatus } from '../../src/lab/status'

const scratch = mkdtempSync(join(tmpdir(), 'tundra-labs-'))
process.env['TUNDRA_LAB_ROOT'] = scratch
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

function fakeLab(name: string, processes: LabState['processes'] = []): LabState {
  const dir = join(scratch, name)
  mkdirSync(dir, { recursive: true })
  const s: LabState = {
    version: 1,
    name,
    phase: 'up',
    createdAt: '2024-01-01T00:00:00.000Z',
    dataplane: 'none',
    dir,
    repo: '/repo',
    namespaces: [],
    files: [],
    processes,
    net: { ns: `tundra-${name}-net`, bridge: 'br0' },
    nodes: [{ name: 'node1', ns: `tundra-${name}-node1`, ip: '172.18.0.11', podCIDR: '10.100.85.0/24' }],
    external: { ns: `tundra-${name}-ext`, ip: '172.18.0.100' },
    upstreamDns: { ns: `tundra-${name}-dns`, ip: '172.18.0.53' },
    pods: [
      {
        namespace: 'default',
        name: 'web',
        ns: 'x',
        ip: '10.100.85.246',
        node: 'node1',
        hostVeth: 'cali0',
        hostname: 'web',
        ready: true,
        probes: ['tcp:10.100.85.246:80'],
      },
      {
        namespace: 'default',
        name: 'pod-client',
        ns: 'y',
        ip: '10.100.85.247',
        node: 'node1',
        hostVeth: 'cali1',
        hostname: 'pod-client',
        ready: true,
        probes: [],
      },
    ],
    services: [
      {
        namespace: 'default',
        name: 'web',
        type: 'NodePort',
        clusterIP: '10.96.125.237',
        externalIPs: [],
        ports: [{ name: '', port: 8080, targetPort: 80, nodePort: 30080, protocol: 'TCP' }],
      },
    ],
    endpointSlices: [{ namespace: 'default', name: 'web-abcde', service: 'web', addressType: 'IPv4', ports: ['80/TCP'], endpoints: ['10.100.85.246'] }],
    warnings: [],
  }
  saveState(s)
  return s
}

t.test('--name may be left out only when exactly one lab is up', async t => {
  t.throws(() => resolveLabName(), /no lab is up/)
  fakeLab('one')
  t.equal(resolveLabName(), 'one')
  t.equal(loadLabState().name, 'one')
  fakeLab('two')
  t.same(listLabs(), ['one', 'two'])
  t.throws(() => resolveLabName(), /several labs are up \(one, two\): say which with --name/)
  t.equal(resolveLabName('two'), 'two')
  t.throws(() => loadLabState('three'), /no lab named "three" is up \(labs up: one, two\)/)
  rmSync(join(scratch, 'one'), { recursive: true })
  rmSync(join(scratch, 'two'), { recursive: true })
})

t.test('status: a pod is ready while its processes live; the JSON has the contract shape', async t => {
  const self = { pid: process.pid, startTime: procStartTime(process.pid)! }
  fakeLab('st', [{ ...self, role: 'nginx', ns: 'x', owner: 'default/web', argv: [], log: '' }])
  const st = labStatus('st')
  t.match(st, {
    name: 'st',
    nodes: [{ name: 'node1', ip: '172.18.0.11', podCIDR: '10.100.85.0/24' }],
    external: { ip: '172.18.0.100' },
    pods: [
      { namespace: 'default', name: 'web', ip: '10.100.85.246', node: 'node1', ready: true },
      { name: 'pod-client', ready: true },
    ],
    services: [
      {
        namespace: 'default',
        name: 'web',
        type: 'NodePort',
        clusterIP: '10.96.125.237',
        ports: [{ name: '', port: 8080, targetPort: 80, nodePort: 30080, protocol: 'TCP' }],
      },
    ],
  })
  // same PID, another start time: a recycled PID is not our nginx
  fakeLab('st', [{ ...self, startTime: self.startTime + 1, role: 'nginx', ns: 'x', owner: 'default/web', argv: [], log: '' }])
  t.equal(labStatus('st').pods[0]!.ready, false)
  const text = formatStatus(labStatus('st'))
  t.match(text, /^NAME\s+STATUS\s+INTERNAL-IP\s+POD-CIDR\nnode\/node1\s+Ready\s+172\.18\.0\.11\s+10\.100\.85\.0\/24$/m)
  t.match(text, /^default\s+pod\/web\s+0\/1\s+NotReady\s+10\.100\.85\.246\s+node1$/m)
  t.match(text, /^default\s+service\/web\s+NodePort\s+10\.96\.125\.237\s+<none>\s+8080:30080\/TCP$/m)
  t.match(text, /^default\s+endpointslice\.discovery\.k8s\.io\/web-abcde\s+IPv4\s+80\s+10\.100\.85\.246$/m)
  rmSync(join(scratch, 'st'), { recursive: true })
})

t.test('dual-stack: status shows IPv6 pod blocks, pod addresses and cluster IPs', async t => {
  const s = fakeLab('dual')
  s.nodes = [{ ...s.nodes[0]!, podCIDR6: 'fd00:10:100:1::/64' }]
  s.pods = [{ ...s.pods[0]!, ip6: 'fd00:10:100:1::246' }]
  s.services = [{ ...s.services![0]!, clusterIPs: ['10.96.125.237', 'fd00:10:96::5'] }]
  saveState(s)
  const st = labStatus('dual')
  t.equal(st.pods[0]!.ip6, 'fd00:10:100:1::246')
  const text = formatStatus(st)
  t.match(text, '10.100.85.0/24,fd00:10:100:1::/64')
  t.match(text, '10.100.85.246,fd00:10:100:1::246')
  t.match(text, '10.96.125.237,fd00:10:96::5')
  rmSync(join(scratch, 'dual'), { recursive: true, force: true })
})
