// `mode: ipvs`: ipvs.scheduler (default rr), ipvs timeouts over conntrack's, excludeCIDRs and graceful
// termination reach the agent; ping to a ClusterIP rejected as kube-proxy's KUBE-IPVS-FILTER does; the ipvs section
// outside mode ipvs warns; tundra.scheduler applies in any mode. Then the compiled table really schedules so.
import t from 'tap'
import { conntrackTimeoutsOf, mergeFlags, parseKubeProxyConfig } from '../../src/run/kpconfig'
import { compileNat } from '../../src/nat/compile'
import { REC_SCHED_SHIFT, REC_WORDS, Rec, natImage } from '../../src/nat/image'
import { Sched } from '../../src/nat/sched'

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n'
const resolve = (yaml: string, flags: Record<string, unknown> = {}) => mergeFlags(parseKubeProxyConfig(HEAD + yaml, 'kp.yaml'), flags)

t.test('mode ipvs: rr by default, ipvs.scheduler taken, icmp reject', async t => {
  const c = resolve('mode: ipvs\n')
  t.equal(c.tundra.scheduler, 'rr', "kube-proxy's IPVS default")
  t.equal(c.tundra.icmp, 'reject', 'a ClusterIP answers ping with port unreachable, as KUBE-IPVS-FILTER REJECTs it')
  t.equal(resolve('mode: ipvs\nipvs: {scheduler: lc}\n').tundra.scheduler, 'lc')
  t.equal(resolve('mode: ipvs\nipvs: {scheduler: lc}\ntundra: {scheduler: sh}\n').tundra.scheduler, 'sh', 'tundra.scheduler wins')
  t.equal(resolve('mode: ipvs\ntundra: {icmp: reply}\n').tundra.icmp, 'reply', 'pre-1.27 IPVS: the host answers')
})

t.test('other modes: random (mh with lb maglev); tundra.scheduler applies; the ipvs section warns', async t => {
  t.equal(resolve('').tundra.scheduler, 'random')
  t.equal(resolve('tundra: {lb: maglev}\n').tundra.scheduler, 'mh')
  t.equal(resolve('mode: nftables\ntundra: {scheduler: wrr}\n').tundra.scheduler, 'wrr')
  const c = resolve('mode: iptables\nipvs: {scheduler: lc}\n')
  t.equal(c.tundra.scheduler, 'random')
  t.match(c.warnings.join('\n'), /ipvs\.scheduler has no effect \(kube-proxy reads the ipvs section in mode ipvs only/)
})

t.test('ipvs timeouts replace conntrack timeouts in mode ipvs only', async t => {
  const y = 'ipvs: {tcpTimeout: 15m, tcpFinTimeout: 30s, udpTimeout: 20s}\nconntrack: {tcpEstablishedTimeout: 2h, udpTimeout: 45s}\n'
  t.same(conntrackTimeoutsOf(resolve(`mode: ipvs\n${y}`)), { tcpEstablished: 900, tcpCloseWait: 3600, udp: 20, udpStream: 20, tcpFinWait: 30 })
  t.same(conntrackTimeoutsOf(resolve(`mode: iptables\n${y}`)), { tcpEstablished: 7200, tcpCloseWait: 3600, udp: 45, udpStream: 120 })
  t.same(conntrackTimeoutsOf(resolve('mode: ipvs\n')), { tcpEstablished: 86400, tcpCloseWait: 3600, udp: 30, udpStream: 120 }, 'unset: conntrack.*')
})

t.test('flags: --ipvs-scheduler, --scheduler, bad names refused', async t => {
  t.equal(mergeFlags(undefined, { proxyMode: 'ipvs', ipvsScheduler: 'sh' }).tundra.scheduler, 'sh')
  t.equal(mergeFlags(undefined, { scheduler: 'lc' }).tundra.scheduler, 'lc')
  t.throws(() => mergeFlags(undefined, { ipvsScheduler: 'dh' }), /--ipvs-scheduler/)
  t.throws(() => resolve('mode: ipvs\nipvs: {scheduler: nq}\n'), /ipvs\.scheduler: "nq" is not supported: tundra does not implement IPVS's nq/)
  t.throws(() => resolve('mode: ipvs\nipvs: {excludeCIDRs: [10.0.0.0/33]}\n'), /ipvs\.excludeCIDRs: item 0: expected a CIDR/)
})

t.test('the scheduler reaches the compiled table, per Service label too', async t => {
  const c = resolve('mode: ipvs\nipvs: {scheduler: wlc}\n')
  const ep = {
    ip: '10.100.1.10',
    family: 4 as const,
    ready: true,
    serving: true,
    terminating: false,
    ports: [{ name: '', protocol: 'TCP' as const, port: 80 }],
  }
  const svc = (name: string, labels: Record<string, string>) => ({
    namespace: 'default',
    name,
    type: 'ClusterIP' as const,
    clusterIPs: [name === 'a' ? '10.96.0.20' : '10.96.0.21'],
    headless: false,
    ipFamilies: [4 as const],
    externalIPs: [],
    loadBalancerIngress: [],
    loadBalancerSourceRanges: [],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Cluster' as const,
    internalTrafficPolicy: 'Cluster' as const,
    healthCheckNodePort: 0,
    publishNotReadyAddresses: false,
    ports: [{ name: '', protocol: 'TCP' as const, port: 80, targetPort: 80, nodePort: 0 }],
    endpoints: [ep],
    labels,
  })
  const table = compileNat(
    { services: [svc('a', {}), svc('b', { 'tundra.io/scheduler': 'sh' })], nodes: [], pods: [] },
    { nodeName: 'n', nodeIPs: ['192.168.1.10'], clusterCIDRs: ['10.100.0.0/16'], scheduler: c.tundra.scheduler },
  )
  const img = natImage(table)
  const schedOf = (name: string): number => {
    const id = table.svcPorts.findIndex(sp => sp?.name === name)
    return img.records[id * REC_WORDS + Rec.FLAGS]! >>> REC_SCHED_SHIFT
  }
  t.equal(schedOf('a'), Sched.WLC)
  t.equal(schedOf('b'), Sched.SH)
})
