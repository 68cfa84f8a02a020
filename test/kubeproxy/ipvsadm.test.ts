// `tundra dump --format ipvsadm`: ipvsadm -Ln's layout (golden text), the virtual services kube-proxy's IPVS mode
// would make (every frontend, persistence from ClientIP affinity, the scheduler per Service), and live counts from
// conntrack (ActiveConn = established TCP, InActConn = the rest; a departed real server kept at weight 0).
import t from 'tap'
import { join } from 'node:path'
import { renderIpvsadm } from '../../src/kubeproxy/ipvsadm'
import { offlineView } from '../../src/inspect/offline'
import { inspectHandlers } from '../../src/inspect/handlers'
import type { DataplaneView, LiveClient } from '../../src/agent/view'
import type { ConntrackEntry } from '../../src/nat/ctview'
import { tempDir } from '../helpers/tmp'

t.test('ipvsadm -Ln layout', async t => {
  const text = renderIpvsadm([
    {
      protocol: 'TCP',
      address: '10.96.0.1',
      port: 443,
      scheduler: 'rr',
      persistent: 0,
      servers: [{ address: '172.18.0.2', port: 6443, weight: 1, activeConns: 3, inactiveConns: 12 }],
    },
    {
      protocol: 'UDP',
      address: 'fd00:96::a',
      port: 53,
      scheduler: 'sh',
      persistent: 10800,
      servers: [{ address: 'fd00:100::2', port: 53, weight: 0, activeConns: 0, inactiveConns: 1 }],
    },
  ])
  t.equal(
    text,
    [
      'IP Virtual Server version 1.2.1 (size=4096)',
      'Prot LocalAddress:Port Scheduler Flags',
      '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
      'TCP  10.96.0.1:443 rr',
      '  -> 172.18.0.2:6443              Masq    1      3          12        ',
      'UDP  [fd00:96::a]:53 sh persistent 10800',
      '  -> [fd00:100::2]:53             Masq    0      0          1         ',
      '',
    ].join('\n'),
  )
})

const MANIFEST = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, labels: {tundra.io/scheduler: lc}}
spec:
  type: NodePort
  clusterIP: 10.96.0.50
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  clusterIP: 10.96.0.53
  selector: {app: dns}
  ports: [{name: dns, port: 53, protocol: UDP, targetPort: 53}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.100.1.5]
- addresses: [10.100.1.4]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: default, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}]
endpoints:
- addresses: [10.100.1.9]
`

function entry(protocol: string, state: string, vs: [string, number], rs: [string, number]): ConntrackEntry {
  return {
    family: 4,
    protocol,
    state,
    orig: { src: '10.100.1.100', dst: vs[0], sport: 40000, dport: vs[1] },
    reply: { src: rs[0], dst: '10.100.1.100', sport: rs[1], dport: 40000 },
    expiresIn: 100,
    flags: [],
    service: 'x',
    svcPortId: 0,
    packets: [1, 1],
    bytes: [60, 60],
  }
}

t.test('offline: one virtual service per frontend, persistence, the scheduler; live: connection counts', async t => {
  const dir = tempDir(t, { 'svc.yaml': MANIFEST })
  const view = offlineView([join(dir, 'svc.yaml')], { nodeName: 'node1', nodeIP: '172.18.0.11', scheduler: 'rr', report: () => {} })
  const offline = String(await inspectHandlers(view).dump({ format: 'ipvsadm' }))
  t.equal(
    offline,
    [
      'IP Virtual Server version 1.2.1 (size=4096)',
      'Prot LocalAddress:Port Scheduler Flags',
      '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
      'TCP  10.96.0.50:80 lc persistent 10800',
      '  -> 10.100.1.4:8080              Masq    1      0          0         ',
      '  -> 10.100.1.5:8080              Masq    1      0          0         ',
      'TCP  172.18.0.11:30080 lc persistent 10800',
      '  -> 10.100.1.4:8080              Masq    1      0          0         ',
      '  -> 10.100.1.5:8080              Masq    1      0          0         ',
      'UDP  10.96.0.53:53 rr',
      '  -> 10.100.1.9:53                Masq    1      0          0         ',
      '',
    ].join('\n'),
  )
  const entries = [
    entry('tcp', 'ESTABLISHED', ['10.96.0.50', 80], ['10.100.1.4', 8080]),
    entry('tcp', 'ESTABLISHED', ['10.96.0.50', 80], ['10.100.1.4', 8080]),
    entry('tcp', 'TIME_WAIT', ['10.96.0.50', 80], ['10.100.1.5', 8080]),
    entry('tcp', 'ESTABLISHED', ['10.96.0.50', 80], ['10.100.1.7', 8080]),
    entry('udp', '', ['10.96.0.53', 53], ['10.100.1.9', 53]),
  ]
  const live = {
    conntrack: async (visit: (e: (typeof entries)[number]) => void) => {
      for (const e of entries) visit(e)
    },
  } as unknown as LiveClient
  const running: DataplaneView = Object.assign(Object.create(view) as DataplaneView, { live: () => live })
  const text = String(await inspectHandlers(running).dump({ format: 'ipvsadm' }))
  t.match(text, 'TCP  10.96.0.50:80 lc persistent 10800\n  -> 10.100.1.4:8080              Masq    1      2          0         \n')
  t.match(text, '  -> 10.100.1.5:8080              Masq    1      0          1         \n')
  t.match(text, '  -> 10.100.1.7:8080              Masq    0      1          0         \n', 'gone, connections left: weight 0')
  t.match(text, 'UDP  10.96.0.53:53 rr\n  -> 10.100.1.9:53                Masq    1      0          1         \n')
})
