// Service NAT through the tundra dataplane, end to end with real clients (issue 4's acceptance): one 2-node lab
// (test/fixtures/tundra/nat.yaml), every check made from a pod or from the host outside the cluster, as a user would.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { FIXTURES, NETTOOL, PY, hostPort, tundraLab, waitFor } from '../fixtures/tundra/lab'
import type { EndpointConditions, EndpointSlice, KubeObject, Service } from '../../src/k8s/types'

const NAT = join(FIXTURES, 'nat.yaml')
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare', 'ping', 'python3', 'bash', 'sha256sum')

// cluster IPs pinned in nat.yaml
const WEB = '10.96.1.10'
const STICKY = '10.96.1.11'
const EMPTY = '10.96.1.12'
const SELF = '10.96.1.16'
const STREAM = '10.96.1.17'
const BIGFILE = '10.96.1.18'
const LB_IN_SERVICE_CIDR = '10.96.200.15'
const LB_OUTSIDE = '198.51.100.15'
const CLIENT_IP = '10.100.85.50'
const EXTERNAL_IP = '172.18.0.100'
// service extip's externalIP (nat.yaml) and the one the test moves it to; the outside host routes their /24 via node1
const EXT_SVC_IP = '172.18.1.50'
const EXT_SVC_IP2 = '172.18.1.51'
const EXT_NET = '172.18.1.0/24'

const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')
const uniq = (xs: readonly string[]): string[] => [...new Set(xs)].sort()
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('Service NAT on the tundra dataplane (2 nodes)', { ...skip, timeout: 240_000 }, async t => {
  const lab = await tundraLab(t, { prefix: 'tn', files: [NAT], nodes: 2 })
  const web = lab.podsOf('web')
  t.equal(web.length, 2, 'two web pods')
  const [node1, node2] = [lab.nodeIP('node1'), lab.nodeIP('node2')]
  t.same(web.map(w => lab.state.pods.find(p => p.name === w)!.node).sort(), ['node1', 'node2'], 'one web pod per node')

  await t.test('a ClusterIP spreads 400 new connections over its 2 endpoints (35-65 % each)', async t => {
    const r = await lab.tool('client', ['http', WEB, '80', '/hostname', '400'], { timeoutMs: 60_000 })
    t.equal(r.code, 0, r.stderr)
    const answers = lines(r.stdout).map(l => l.split('\t')[1] ?? '')
    t.equal(answers.length, 400, '400 answers')
    const counts = web.map(w => answers.filter(a => a === w).length)
    t.equal(counts[0]! + counts[1]!, 400, `only the endpoints answered: ${uniq(answers).join(', ')}`)
    for (const [i, c] of counts.entries()) t.ok(c >= 140 && c <= 260, `${web[i]} got ${c} of 400`)
  })

  await t.test('pod to service keeps the client pod address (/clientip)', async t => {
    const r = await lab.tool('client', ['http', WEB, '80', '/clientip', '10'])
    t.equal(r.code, 0, r.stderr)
    const seen = lines(r.stdout).map(l => l.split('\t')[1] ?? '')
    t.equal(seen.length, 10)
    t.ok(
      seen.every(s => hostPort(CLIENT_IP).test(s)),
      `backends saw ${uniq(seen.map(s => s.split(':')[0]!)).join(', ')}`,
    )
  })

  await t.test('sessionAffinity ClientIP: 50 requests from a pod land on one endpoint', async t => {
    const before = await lab.counters('node1')
    const r = await lab.tool('client', ['http', STICKY, '80', '/hostname', '50'])
    t.equal(r.code, 0, r.stderr)
    const answers = lines(r.stdout).map(l => l.split('\t')[1] ?? '')
    t.equal(answers.length, 50)
    t.equal(uniq(answers).length, 1, `one endpoint: ${uniq(answers).join(', ')}`)
    t.ok(web.includes(answers[0]!), 'an endpoint of the service')
    const after = await lab.counters('node1')
    t.ok(after['nat_affinity_hit']! - before['nat_affinity_hit']! >= 49, 'the agent counted the pinned connections')
  })

  await t.test('sessionAffinity ClientIP: 200 outside client addresses are each pinned (NodePort)', async t => {
    // 200 extra /32 addresses on the outside host, in the node network but not used by the lab (2 nodes, DNS .53, .100)
    const hosts = [...range(13, 52), ...range(54, 99), ...range(101, 214)].map(h => `172.18.0.${h}`)
    t.equal(hosts.length, 200)
    const add = await lab.ext(['ip', '-batch', '-'], { input: hosts.map(h => `addr add ${h}/32 dev eth0`).join('\n') + '\n' })
    t.equal(add.code, 0, add.stderr)
    t.teardown(() => lab.ext(['ip', '-batch', '-'], { input: hosts.map(h => `addr del ${h}/32 dev eth0`).join('\n') + '\n' }))
    const r = await lab.tool({ external: true }, ['http', node1, '30011', '/hostname', '3', ...hosts], { timeoutMs: 120_000 })
    t.equal(r.code, 0, r.stderr)
    const bySource = new Map<string, string[]>()
    for (const l of lines(r.stdout)) {
      const [src, body] = l.split('\t') as [string, string]
      bySource.set(src, [...(bySource.get(src) ?? []), body])
    }
    t.same([...bySource.keys()].sort(), [...hosts].sort(), 'every source address got answers')
    const unpinned = [...bySource].filter(([, a]) => a.length !== 3 || uniq(a).length !== 1 || !web.includes(a[0]!))
    t.same(unpinned, [], 'each address: 3 answers, all from one endpoint')
    const used = uniq([...bySource.values()].map(a => a[0]!))
    t.same(used, [...web].sort(), 'the 200 clients are spread over both endpoints')
  })

  await t.test('a service without endpoints refuses a TCP connection at once', async t => {
    const before = await lab.counters('node1')
    const c = await lab.pod('client', ['curl', '-sS', '-m', '5', `http://${EMPTY}/`])
    t.equal(c.code, 7, `curl exit 7 "could not connect" (a timeout would be 28): ${c.stderr.trim()}`)
    const p = await lab.tool('client', ['http', EMPTY, '80', '/', '1'])
    t.equal(lines(p.stdout)[0], '-\tERR Connection refused', 'the socket sees ECONNREFUSED')
    const after = await lab.counters('node1')
    t.ok(after['nat_reject_no_endpoints']! - before['nat_reject_no_endpoints']! >= 2, 'rejected for having no endpoints')
  })

  await t.test('NodePort, externalTrafficPolicy Cluster: every node answers, the backend sees that node', async t => {
    for (const [node, ip] of [
      ['node1', node1],
      ['node2', node2],
    ] as const) {
      const r = await lab.ext(['curl', '-sS', '-m', '5', `http://${ip}:30013/clientip`])
      t.equal(r.code, 0, `${node}: ${r.stderr}`)
      t.match(r.stdout, hostPort(ip), `via ${node}: the backend (on node1) sees ${node}'s address`)
    }
  })

  await t.test('NodePort, externalTrafficPolicy Local: the client address is kept; a node without endpoint is silent', async t => {
    const r = await lab.ext(['curl', '-sS', '-m', '5', `http://${node1}:30014/clientip`])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, hostPort(EXTERNAL_IP), 'the backend sees the outside host')
    const before = await lab.counters('node2')
    const n2 = await lab.ext(['curl', '-sS', '-m', '2', `http://${node2}:30014/clientip`])
    t.equal(n2.code, 28, `node2 (no local endpoint) does not answer: curl times out (${n2.stderr.trim()})`)
    const after = await lab.counters('node2')
    t.ok(after['nat_drop_no_local_endpoints']! > before['nat_drop_no_local_endpoints']!, 'node2 dropped it for having no local endpoint')
  })

  await t.test('LoadBalancer ingress IP from outside', async t => {
    const r = await lab.ext(['curl', '-sS', '-m', '5', `http://${LB_IN_SERVICE_CIDR}/clientip`])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, hostPort(node1), `${LB_IN_SERVICE_CIDR} (routed via node1) answers, masqueraded to node1`)
  })

  await t.test('a LoadBalancer IP and an externalIP outside the service CIDR, routed into the TUN by the agents', async t => {
    // Each agent adds a /32 into its TUN per externalIP and LoadBalancer ingress IP (ipMode VIP). The outside host
    // routes them via node1, as an L2/BGP load balancer or the admin owning the externalIP would.
    const tunRoutes = async (node: string): Promise<string[]> =>
      lines((await lab.node(node, ['ip', '-o', '-4', 'route', 'show', 'dev', 'tundra0'])).stdout).map(l => l.split(' ')[0]!)
    for (const node of ['node1', 'node2']) {
      const routes = await tunRoutes(node)
      t.ok(
        routes.includes(LB_OUTSIDE) && routes.includes(EXT_SVC_IP),
        `${node}: /32 routes into tundra0 for ${LB_OUTSIDE} and ${EXT_SVC_IP} (${routes.join(', ')})`,
      )
    }
    for (const dst of [`${LB_OUTSIDE}/32`, `${EXT_NET}`]) {
      const route = await lab.ext(['ip', 'route', 'add', dst, 'via', node1])
      t.equal(route.code, 0, route.stderr)
    }
    t.teardown(async () => {
      await lab.ext(['ip', 'route', 'del', `${LB_OUTSIDE}/32`])
      await lab.ext(['ip', 'route', 'del', EXT_NET])
    })
    for (const [what, ip] of [
      ['LoadBalancer', LB_OUTSIDE],
      ['externalIP', EXT_SVC_IP],
    ] as const) {
      const name = await lab.ext(['curl', '-sS', '-m', '5', `http://${ip}/hostname`])
      t.same([name.code, name.stdout], [0, 'solo'], `${what} ${ip} answers from outside ${name.stderr.trim()}`)
      const seen = await lab.ext(['curl', '-sS', '-m', '5', `http://${ip}/clientip`])
      t.match(seen.stdout, hostPort(node1), `${what}: masqueraded to node1 (externalTrafficPolicy Cluster)`)
      const fromPod = await lab.pod('client', ['curl', '-sS', '-m', '5', `http://${ip}/clientip`])
      // a pod too; externalTrafficPolicy Cluster masquerades it to the node, as kube-proxy's KUBE-EXT chain does
      t.match(fromPod.stdout, hostPort(node1), `${what}: a pod reaches it too, masqueraded to its node ${fromPod.stderr.trim()}`)
    }

    // the routes follow the manifests: the externalIP moves, the LoadBalancer IP goes away
    await lab.editManifests(objs =>
      objs.map(o => {
        if (o.kind !== 'Service') return o
        const svc = o as Service
        if (svc.metadata?.name === 'extip') return { ...svc, spec: { ...svc.spec, externalIPs: [EXT_SVC_IP2] } }
        if (svc.metadata?.name === 'lb') return { ...svc, status: { loadBalancer: { ingress: [{ ip: LB_IN_SERVICE_CIDR }] } } }
        return o
      }),
    )
    for (const node of ['node1', 'node2']) {
      const routes = await waitFor(
        `${node}'s TUN routes to follow the edit`,
        async () => {
          const r = await tunRoutes(node)
          return r.includes(EXT_SVC_IP2) && !r.includes(EXT_SVC_IP) && !r.includes(LB_OUTSIDE) ? r : undefined
        },
        5000,
      ).catch((err: Error) => err.message)
      t.ok(Array.isArray(routes), `${node}: ${EXT_SVC_IP2} routed into tundra0, ${EXT_SVC_IP} and ${LB_OUTSIDE} no longer (${String(routes)})`)
    }
    const moved = await lab.ext(['curl', '-sS', '-m', '5', `http://${EXT_SVC_IP2}/hostname`])
    t.same([moved.code, moved.stdout], [0, 'solo'], `the new externalIP ${EXT_SVC_IP2} answers from outside ${moved.stderr.trim()}`)
  })

  await t.test('hairpin: a backend reaching its own service lands on itself', async t => {
    const before = await lab.counters('node1')
    const name = await lab.pod('solo', ['curl', '-sS', '-m', '5', `http://${SELF}/hostname`])
    t.same([name.code, name.stdout], [0, 'solo'], name.stderr)
    const ip = await lab.pod('solo', ['curl', '-sS', '-m', '5', `http://${SELF}/clientip`])
    t.match(ip.stdout, hostPort(node1), 'masqueraded to the node, so the reply comes back through the NAT')
    const after = await lab.counters('node1')
    t.ok(after['nat_hairpin']! - before['nat_hairpin']! >= 2, 'counted as hairpin')
  })

  await t.test('UDP through a service', async t => {
    const r = await lab.pod('client', ['bash', '-c', `exec 3<>/dev/udp/${WEB}/81; printf hostname >&3; timeout 5 dd bs=512 count=1 status=none <&3`])
    t.ok(web.includes(r.stdout), `an endpoint answered: ${JSON.stringify(r.stdout)} ${r.stderr}`)
    // 4 KB datagrams: fragmented on the way in and out (pod MTU 1450), crossing nodes for the node2 endpoint
    const big = await lab.tool('client', ['udp-echo', WEB, '81', '4096', '12'])
    t.same(lines(big.stdout), Array(12).fill('ok 4096'), `4 KB echoes come back intact ${big.stderr}`)
  })

  await t.test('ping to a ClusterIP gets replies', async t => {
    const r = await lab.pod('client', ['ping', '-c', '3', '-i', '0.2', '-W', '2', WEB])
    t.equal(r.code, 0, r.stdout + r.stderr)
    t.match(r.stdout, /3 packets transmitted, 3 received/)
  })

  await t.test('PMTU: "fragmentation needed" from the client node reaches the backend translated', async t => {
    // big (nginx on node2) serves 2 MiB; the client's node-side interface gets MTU 1000, so node1's kernel answers the
    // backend's 1450-byte segments (sent to the client from the service address after reverse NAT) with ICMP
    // fragmentation-needed addressed to the ClusterIP. tundra must translate it back to the backend on node2.
    const data = randomBytes(2 << 20)
    writeFileSync(join(lab.state.dir, 'pods', 'default.big', 'nginx', 'html', 'big.bin'), data)
    const cali = lab.state.pods.find(p => p.name === 'client')!.hostVeth
    const set = await lab.node('node1', ['ip', 'link', 'set', cali, 'mtu', '1000'])
    t.equal(set.code, 0, set.stderr)
    t.teardown(() => lab.node('node1', ['ip', 'link', 'set', cali, 'mtu', '1450']))
    const before = await lab.counters('node1')
    const r = await lab.pod('client', ['sh', '-c', `curl -sS -m 30 http://${BIGFILE}/big.bin | sha256sum`], { timeoutMs: 40_000 })
    t.equal(r.stdout.split(' ')[0], sha256(data), `2 MiB arrive intact ${r.stderr}`)
    const after = await lab.counters('node1')
    t.ok(after['nat_icmp_error']! > before['nat_icmp_error']!, `node1 translated ICMP errors (${after['nat_icmp_error']! - before['nat_icmp_error']!})`)
    const route = await lab.pod('big', ['ip', 'route', 'get', CLIENT_IP])
    t.match(route.stdout, /mtu 1000/, 'the backend learned the path MTU to the client')
  })

  await t.test('PMTU, the other way: "fragmentation needed" about a client\'s DNATed packets', async t => {
    // Upload to solo (node1) through its service with solo's node-side interface at MTU 1000: node1's kernel answers
    // the client's DNATed segments with fragmentation-needed addressed to the client, whose inner header holds the
    // endpoint address. The client's socket (connected to the ClusterIP) only accepts it translated back.
    const file = join(lab.state.dir, 'upload.bin')
    writeFileSync(file, randomBytes(1 << 20))
    const cali = lab.state.pods.find(p => p.name === 'solo')!.hostVeth
    const set = await lab.node('node1', ['ip', 'link', 'set', cali, 'mtu', '1000'])
    t.equal(set.code, 0, set.stderr)
    t.teardown(() => lab.node('node1', ['ip', 'link', 'set', cali, 'mtu', '1450']))
    const direct = await lab.pod('client', [
      'curl',
      '-sS',
      '-m',
      '10',
      '-o',
      '/dev/null',
      '-w',
      '%{size_upload}',
      '--data-binary',
      `@${file}`,
      'http://10.100.85.20:8080/echo',
    ])
    t.same([direct.code, direct.stdout], [0, String(1 << 20)], `pod to pod: the client adapts ${direct.stderr}`)
    const before = await lab.counters('node1')
    const up = await lab.pod(
      'client',
      ['curl', '-sS', '-m', '10', '-o', '/dev/null', '-w', '%{size_upload}', '--data-binary', `@${file}`, `http://${SELF}/echo`],
      { timeoutMs: 15_000 },
    )
    const after = await lab.counters('node1')
    t.same([up.code, up.stdout], [0, String(1 << 20)], `through the ClusterIP: 1 MiB uploaded ${up.stderr.trim()}`)
    t.ok(
      after['nat_icmp_error']! > before['nat_icmp_error']!,
      `node1 sent its ICMP errors through the TUN to be translated (${after['nat_icmp_error']! - before['nat_icmp_error']!})`,
    )
    const route = await lab.pod('client', ['ip', 'route', 'get', SELF])
    t.match(route.stdout, /mtu 1000/, 'the client learned the path MTU toward the ClusterIP (the error named the service, not the endpoint)')
  })

  await t.test('removing an endpoint from the EndpointSlice resets its TCP connections and moves its UDP flows', async t => {
    const h = lab.stream('client', [PY, NETTOOL, 'hold', STREAM, '80', '81'])
    const backend = (await h.line(/^tcp /)).slice(4)
    t.ok(web.includes(backend), `the connection landed on ${backend}`)
    t.equal(await h.line(/^udp /), `udp ${backend}`, 'a UDP flow to the same endpoint')
    await h.line(/^ready$/)
    const before = await lab.counters('node1')
    // Only service stream's EndpointSlice changes, as when the controller drops an endpoint; the Pod stays (the agents
    // take EndpointSlices as given, like kube-proxy)
    const gone = lab.podIP(backend)
    await lab.editManifests(objs => objs.map(o => (sliceOf(o, 'stream') ? withoutEndpoint(o as EndpointSlice, gone) : o)))
    t.ok(
      lab.manifests().some(o => o.kind === 'Pod' && o.metadata?.name === backend),
      `the Pod ${backend} is still in the manifests`,
    )
    h.write('go\n')
    t.equal(await h.line(/^tcp-after /), 'tcp-after reset', 'the idle connection gets a RST')
    const other = web.find(w => w !== backend)!
    t.equal(await h.line(/^udp-after /), `udp-after ${other} ${other} ${other}`, 'the same UDP socket now reaches the other endpoint')
    t.equal(await h.exited, 0, h.stderr)
    const after = await lab.counters('node1')
    t.ok(after['nat_reset_sent']! > before['nat_reset_sent']!, 'the agent sent the reset')
    t.ok(after['nat_stale_flushed']! - before['nat_stale_flushed']! >= 2, 'the TCP and UDP entries were flushed')
    const fresh = await lab.tool('client', ['http', STREAM, '80', '/hostname', '10'])
    t.same(uniq(lines(fresh.stdout).map(l => l.split('\t')[1] ?? '')), [other], 'new connections go to the remaining endpoint only')
    const direct = await lab.pod('client', ['curl', '-sS', '-m', '5', `http://${gone}:8080/hostname`])
    t.equal(direct.stdout, backend, `the pod itself still answers at ${gone} ${direct.stderr}`)
  })

  await t.test('a source port reused for a direct connection to the endpoint a closed Service connection had', async t => {
    // The Service connection's entry lingers in TIME_WAIT with reply tuple endpoint:8080 -> client:PORT. The client
    // may reuse PORT toward endpoint:8080 itself (another 4-tuple to its kernel): that connection's replies must not
    // be reverse-translated by the old entry. Linux evicts such a closed entry (nf_nat_used_tuple_new).
    const src = `${lab.podIP('client')}:41234`
    const via = await lab.tool('client', ['http', STREAM, '80', '/hostname', '1', src])
    const backend = via.stdout.trim().split('\t')[1] ?? ''
    t.ok(web.includes(backend), `through the Service from ${src}: ${via.stdout.trim()} ${via.stderr}`)
    const direct = await lab.tool('client', ['http', lab.podIP(backend), '8080', '/hostname', '1', src])
    t.equal(direct.stdout.trim(), `${src}\t${backend}`, `then straight to ${lab.podIP(backend)}:8080 from the same port`)
  })

  await t.test('endpoint conditions: not ready leaves the rotation; all terminating but serving still carry traffic', async t => {
    const answers = async (n: number): Promise<string[]> => {
      const r = await lab.tool('client', ['http', WEB, '80', '/hostname', String(n)], { timeoutMs: 30_000 })
      return lines(r.stdout).map(l => l.split('\t')[1] ?? '')
    }
    const [notReady, ready] = web as [string, string]
    const conditions =
      (c: (ip: string) => EndpointConditions) =>
      (objs: KubeObject[]): KubeObject[] =>
        objs.map(o => {
          if (!sliceOf(o, 'web')) return o
          const s = o as EndpointSlice
          return { ...s, endpoints: (s.endpoints ?? []).map(e => ({ ...e, conditions: c(e.addresses?.[0] ?? '') })) }
        })
    await lab.editManifests(
      conditions(ip =>
        ip === lab.podIP(notReady) ? { ready: false, serving: false, terminating: false } : { ready: true, serving: true, terminating: false },
      ),
    )
    const one = await answers(20)
    t.same([one.length, uniq(one)], [20, [ready]], `${notReady} marked ready: false, serving: false: 20 new connections all go to ${ready}`)

    const before = await lab.counters('node1')
    await lab.editManifests(conditions(() => ({ ready: false, serving: true, terminating: true })))
    const all = await answers(40)
    t.equal(all.length, 40)
    t.same(uniq(all), [...web].sort(), 'every endpoint terminating but serving: traffic still flows, to both (KEP-1669 fallback)')
    const after = await lab.counters('node1')
    t.equal(after['nat_reject_no_endpoints'], before['nat_reject_no_endpoints'], 'nothing rejected for lack of endpoints')

    await lab.editManifests(conditions(() => ({ ready: false, serving: false, terminating: true })))
    const none = await lab.tool('client', ['http', WEB, '80', '/hostname', '1'])
    t.equal(lines(none.stdout)[0], '-\tERR Connection refused', 'terminating and no longer serving: no endpoint left, refused')
  })

  // IPv6 services: test/netns/tundra-ipv6.test.ts (a dual-stack lab)
})

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i)
}

/** an EndpointSlice of service `svc` (namespace default) */
function sliceOf(o: KubeObject, svc: string): boolean {
  return o.kind === 'EndpointSlice' && (o.metadata?.namespace ?? 'default') === 'default' && o.metadata?.labels?.['kubernetes.io/service-name'] === svc
}

function withoutEndpoint(s: EndpointSlice, ip: string): EndpointSlice {
  return { ...s, endpoints: (s.endpoints ?? []).filter(e => !(e.addresses ?? []).includes(ip)) }
}
