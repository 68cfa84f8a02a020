// Lab manifests the bench generates: the scale lab (two clients, two nginx backends, N services in front of them) as a
// JSON `List` (much faster to read than N YAML documents), and first/last service of kube-proxy's KUBE-SERVICES walk.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Cluster } from '../../src/model/cluster'
import { renderIptablesSave } from '../../src/kubeproxy/iptables'
import { LAB } from '../../src/lab/plan'

export const SCALE_CLIENT_IP = '10.100.85.10'
/**
 * The client of the last service (firstpacket). With one client for both services, a source port it used toward the
 * first ClusterIP comes back toward the last one while the backend still holds that connection in TIME_WAIT; the
 * client's TCP timestamps differ per destination address, so the backend's PAWS check refuses the SYN and the
 * connect waits a 1 s retransmission (TcpExtPAWSTimewait at the backend): a client-side artefact that grew with
 * each round, for every contender alike.
 */
export const SCALE_CLIENT_LAST_IP = '10.100.85.13'
export const SCALE_BACKEND_IPS = ['10.100.85.11', '10.100.85.12'] as const

/** Service i's ClusterIP: 10.97.0.16 + i (room for 65 000). */
export function scaleVip(i: number): string {
  const k = 16 + i
  return `10.97.${(k >>> 8) & 0xff}.${k & 0xff}`
}

/** Writes `<dir>/scale-<n>.json` and returns its path. */
export function writeScaleManifest(dir: string, n: number): string {
  const pod = (name: string, ip: string, labels: Record<string, string>, nginx: boolean): object => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels, annotations: { [LAB.podIPAnnotation]: ip } },
    spec: {
      containers: nginx
        ? [{ name: 'nginx', image: 'nginx:1.25', ports: [{ containerPort: 80 }] }]
        : [{ name: 'tools', image: 'busybox', command: ['sleep', 'infinity'] }],
    },
  })
  const items: object[] = [
    pod('client', SCALE_CLIENT_IP, { role: 'client' }, false),
    pod('client-last', SCALE_CLIENT_LAST_IP, { role: 'client' }, false),
    pod('backend-1', SCALE_BACKEND_IPS[0], { app: 'backend' }, true),
    pod('backend-2', SCALE_BACKEND_IPS[1], { app: 'backend' }, true),
  ]
  for (let i = 0; i < n; i++) {
    items.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `s${String(i).padStart(5, '0')}`, namespace: 'default' },
      // explicit, in 10.97.0.0/16: the allocator could pick addresses inside the lab's pod range 10.100.0.0/16
      // (which lies inside the service range 10.96.0.0/12)
      spec: { clusterIP: scaleVip(i), selector: { app: 'backend' }, ports: [{ name: 'http', port: 80, targetPort: 80 }] },
    })
  }
  mkdirSync(dir, { recursive: true })
  const path = join(dir, `scale-${n}.json`)
  writeFileSync(path, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }))
  return path
}

/**
 * The ClusterIPs kube-proxy's iptables rules test first and last in KUBE-SERVICES for a lab's cluster (compileLab's
 * plan.cluster: reading back the lab's cluster.yaml is slow at 20 000 services); a new connection to the last one
 * walks every rule before it.
 */
export function firstAndLastService(cluster: Cluster, nodeName: string, nodeIP: string): { first: string; last: string; rules: number } {
  const text = renderIptablesSave(cluster, { clusterCIDR: LAB.clusterCIDR, nodeName, nodeIPs: [nodeIP] })
  const vips: string[] = []
  for (const line of text.split('\n')) {
    const m = /^-A KUBE-SERVICES -d (\d+\.\d+\.\d+\.\d+)\/32 -p tcp .*--dport 80 /.exec(line)
    if (m) vips.push(m[1]!)
  }
  if (vips.length === 0) throw new Error('no service rules in KUBE-SERVICES')
  return { first: vips[0]!, last: vips[vips.length - 1]!, rules: vips.length }
}
