// Pod routing through the tundra dataplane, end to end with real clients (issue 3's acceptance): one 2-node lab
// (test/fixtures/tundra/routing.yaml plus the seed as documented), pod to pod on one node and across nodes, a 100 MB
// transfer, a service whose endpoints all live on the other node, the seed story, VXLAN on the wire as tcpdump sees it,
// a kernel vxlan peer added to and removed from a running agent, and `lab down` leaving nothing behind.
import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { listNamespaces, netnsSkip, topology } from '../helpers/netns'
import { FIXTURES, NETTOOL, PY, ROOT, tundraLab, waitFor } from '../fixtures/tundra/lab'
import { askAgent } from '../../src/agent/control'
import { labDown } from '../../src/lab/index'
import { isOurs } from '../../src/lab/proc'
import { vxlanMac } from '../../src/dataplane/vxlan'
import { parseIpv4 } from '../../src/wire/ipv4'

const ROUTING = join(FIXTURES, 'routing.yaml')
const SEED = join(ROOT, 'examples/seed-as-documented/seed.yaml')
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare', 'ping', 'python3', 'bash', 'tcpdump', 'bridge')

const CLIENT = '10.100.85.50'
const NEAR = '10.100.85.31'
const FAR = '10.100.86.31'
const REMOTE_SVC = '10.96.3.10'
// the kernel vxlan peer: a third host on the node network with a pod block of its own
const PEER_IP = '172.18.0.40'
const PEER_POD_IP = '10.100.120.1'
const PEER_POD_CIDR = '10.100.120.0/24'

const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')
const mac = (ip: string): string => [...vxlanMac(parseIpv4(ip)!)].map(b => b.toString(16).padStart(2, '0')).join(':')
const ipRe = (ip: string): string => ip.replace(/\./g, '\\.')

t.test('pod routing on the tundra dataplane (2 nodes)', { ...skip, timeout: 240_000 }, async t => {
  const lab = await tundraLab(t, { prefix: 'tr', files: [ROUTING, SEED], nodes: 2 })
  const [node1, node2] = [lab.nodeIP('node1'), lab.nodeIP('node2')]
  t.same(
    ['client', 'near', 'far'].map(p => lab.state.pods.find(x => x.name === p)!.node),
    ['node1', 'node1', 'node2'],
  )

  for (const [what, ip, name] of [
    ['on the same node', NEAR, 'near'],
    ['across nodes', FAR, 'far'],
  ] as const) {
    await t.test(`pod to pod ${what}: TCP, UDP, ping`, async t => {
      const tcp = await lab.pod('client', ['curl', '-sS', '-m', '5', `http://${ip}:8080/clientip`])
      t.match(tcp.stdout, new RegExp(`^${ipRe(CLIENT)}:\\d+$`), `TCP: ${name} sees the client's own address ${tcp.stderr}`)
      const udp = await lab.pod('client', ['bash', '-c', `exec 3<>/dev/udp/${ip}/8081; printf hostname >&3; timeout 5 dd bs=512 count=1 status=none <&3`])
      t.equal(udp.stdout, name, `UDP ${udp.stderr}`)
      const ping = await lab.pod('client', ['ping', '-c', '3', '-i', '0.2', '-W', '2', ip])
      t.match(ping.stdout, /3 packets transmitted, 3 received/, 'ping')
      const back = await lab.pod(name, ['ping', '-c', '2', '-i', '0.2', '-W', '2', CLIENT])
      t.match(back.stdout, /2 packets transmitted, 2 received/, 'and back')
    })
  }

  await t.test('100 MB across nodes arrive intact', async t => {
    const before = await lab.counters('node1')
    const sink = lab.stream('far', [PY, NETTOOL, 'recv', '9000'])
    await sink.line(/^listening$/)
    const send = await lab.tool('client', ['send', FAR, '9000', '100'], { timeoutMs: 90_000 })
    t.equal(send.code, 0, send.stderr)
    const [, sentBytes, sentSum] = lines(send.stdout)[0]!.split(' ')
    const [, gotBytes, gotSum] = (await sink.line(/^recv /, 30_000)).split(' ')
    t.equal(sentBytes, String(100 << 20), '100 MiB sent')
    t.same([gotBytes, gotSum], [sentBytes, sentSum], 'received the same bytes (sha256)')
    t.equal(await sink.exited, 0, sink.stderr)
    const after = await lab.counters('node1')
    t.ok(after['vxlanOut']! - before['vxlanOut']! > 70_000, `encapsulated toward node2 (${after['vxlanOut']! - before['vxlanOut']!} packets)`)
  })

  await t.test('a service whose endpoints all live on the other node', async t => {
    const r = await lab.tool('client', ['http', REMOTE_SVC, '80', '/hostname', '20'])
    const names = lines(r.stdout).map(l => l.split('\t')[1] ?? '')
    t.equal(names.length, 20)
    t.same([...new Set(names)].sort(), ['far', 'far2'], 'both remote endpoints answer, nothing else')
    const ip = await lab.pod('client', ['curl', '-sS', '-m', '5', `http://${REMOTE_SVC}/clientip`])
    t.match(ip.stdout, new RegExp(`^${ipRe(CLIENT)}:\\d+$`), 'the remote endpoint sees the client pod')
    const udp = await lab.pod('client', ['bash', '-c', `exec 3<>/dev/udp/${REMOTE_SVC}/81; printf hostname >&3; timeout 5 dd bs=512 count=1 status=none <&3`])
    t.ok(['far', 'far2'].includes(udp.stdout), `UDP through the service: ${udp.stdout} ${udp.stderr}`)
  })

  await t.test('the seed story: curl nginx-pod08:8080 by name', async t => {
    const r = await lab.pod('pod-client', ['curl', '-sS', '-m', '5', 'nginx-pod08:8080'])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, '<h1>Welcome to nginx!</h1>', 'from pod-client (node1)')
    const far = await lab.pod('far', ['curl', '-sS', '-m', '5', 'nginx-pod08:8080'])
    t.match(far.stdout, '<h1>Welcome to nginx!</h1>', `from far (node2: DNS on node2, endpoints on node1) ${far.stderr}`)
  })

  await t.test('VXLAN between nodes is what tcpdump decodes', async t => {
    const file = join(lab.state.dir, 'vxlan.pcap')
    const cap = lab.stream({ node: 'node1' }, [
      'timeout',
      '20',
      'tcpdump',
      '-i',
      'eth0',
      '-nn',
      '-U',
      '-Z',
      'root',
      '-c',
      '4',
      '-w',
      file,
      'udp',
      'port',
      '4789',
    ])
    await cap.stderrMatch(/listening on eth0/)
    const ping = await lab.pod('client', ['ping', '-c', '2', '-i', '0.2', '-W', '2', FAR])
    t.match(ping.stdout, /2 received/)
    t.equal(await cap.exited, 0, `tcpdump captured 4 packets: ${cap.stderr}`)
    const read = await lab.node('node1', ['tcpdump', '-r', file, '-nn'])
    const out = read.stdout
    t.match(out, new RegExp(`IP ${ipRe(node1)}\\.\\d+ > ${ipRe(node2)}\\.4789: VXLAN, flags \\[I\\] \\(0x08\\), vni 4096`), 'node1 → node2 VXLAN, VNI 4096')
    t.match(out, new RegExp(`IP ${ipRe(node2)}\\.\\d+ > ${ipRe(node1)}\\.4789: VXLAN, flags \\[I\\] \\(0x08\\), vni 4096`), 'and back')
    t.match(out, new RegExp(`IP ${ipRe(CLIENT)} > ${ipRe(FAR)}: ICMP echo request`), 'the inner packet decodes')
    t.match(out, new RegExp(`IP ${ipRe(FAR)} > ${ipRe(CLIENT)}: ICMP echo reply`))
  })

  await t.test('a kernel vxlan peer', async t => {
    // A third host on the node network (a namespace of ours with a port on the lab's bridge) that speaks VXLAN with
    // the Linux vxlan driver: VNI 4096, port 4789, static FDB and neighbour entries toward node1, pod block 10.100.120/24.
    const topo = topology(t, 'vx')
    const peer = await topo.ns('peer')
    const net = lab.state.net.ns
    await topo.veth(peer, 'eth0', net, 'p-kpeer')
    await topo.ip(net, 'link', 'set', 'p-kpeer', 'master', lab.state.net.bridge)
    await topo.addr(peer, 'eth0', `${PEER_IP}/24`)
    await topo.ip(peer, 'link', 'add', 'vxlan0', 'type', 'vxlan', 'id', '4096', 'dstport', '4789', 'local', PEER_IP, 'dev', 'eth0', 'nolearning')
    await topo.ip(peer, 'link', 'set', 'vxlan0', 'address', mac(PEER_IP), 'mtu', '1450', 'up')
    await topo.addr(peer, 'vxlan0', `${PEER_POD_IP}/32`)
    const gw = '10.100.85.0' // node1's block, flannel-style: a next hop whose neighbour entry is node1's VXLAN MAC
    await topo.ip(peer, 'route', 'add', '10.100.85.0/24', 'via', gw, 'dev', 'vxlan0', 'onlink')
    await topo.ip(peer, 'neigh', 'add', gw, 'lladdr', mac(node1), 'dev', 'vxlan0', 'nud', 'permanent')
    const fdb = await topo.exec(peer, ['bridge', 'fdb', 'add', mac(node1), 'dev', 'vxlan0', 'dst', node1])
    t.equal(fdb.code, 0, fdb.stderr)

    // As the lab runs it, node1's agent knows only node2 (vxlan.peers from the lab): VXLAN from anyone else is
    // dropped and counted (issue 14: no injection from a non-peer).
    const node1Ctl = lab.state.nodes.find(n => n.name === 'node1')!.control!
    const before = await lab.counters('node1')
    const oneWay = await topo.exec(peer, ['ping', '-c', '2', '-i', '0.2', '-W', '1', CLIENT])
    const after = await lab.counters('node1')
    t.equal(after['vxlanIn']! - before['vxlanIn']!, 0, "node1 does not decapsulate an unknown peer's VXLAN")
    t.ok((after['drop_vxlan_not_peer'] ?? 0) - (before['drop_vxlan_not_peer'] ?? 0) >= 2, 'dropped as vxlan_not_peer')
    t.match(oneWay.stdout, /2 packets transmitted, 0 received/, 'an unknown peer: nothing gets through')

    // The peer joins the running agent through its control socket: full interop, no restart.
    const added = (await askAgent(node1Ctl, 'peer', { op: 'add', node: 'kpeer', ip: PEER_IP, podCIDR: PEER_POD_CIDR })) as { peers: { node: string }[] }
    t.same(added.peers.map(p => p.node).sort(), ['kpeer', 'node2'], "node1's agent now has two VXLAN peers")
    const agentPid = lab.state.processes.find(p => p.role === 'agent' && p.owner === 'node1')!
    t.ok(isOurs(agentPid), 'the same agent process, still running')

    const ping = await topo.exec(peer, ['ping', '-c', '3', '-i', '0.2', '-W', '2', CLIENT])
    t.match(ping.stdout, /3 packets transmitted, 3 received/, 'kernel peer → pod on node1: ping')
    const back = await lab.pod('client', ['ping', '-c', '3', '-i', '0.2', '-W', '2', PEER_POD_IP])
    t.match(back.stdout, /3 packets transmitted, 3 received/, 'pod on node1 → kernel peer: ping')
    const curl = await topo.exec(peer, ['curl', '-sS', '-m', '5', `http://${NEAR}:8080/clientip`])
    t.match(curl.stdout, new RegExp(`^${ipRe(PEER_POD_IP)}:\\d+$`), `kernel peer → pod: TCP (inner checksum left to offload) ${curl.stderr}`)
    const server = topo.spawn(peer, [PY, '-m', 'http.server', '8000', '--bind', PEER_POD_IP, '--directory', FIXTURES])
    await waitFor(
      "the kernel peer's http server",
      async () => (await topo.exec(peer, ['curl', '-s', '-o', '/dev/null', `http://${PEER_POD_IP}:8000/`])).code === 0,
      10_000,
    )
    const fromPod = await lab.pod('client', ['curl', '-sS', '-m', '5', `http://${PEER_POD_IP}:8000/nettool.py`])
    t.equal(fromPod.stdout, readFileSync(NETTOOL, 'utf8'), `pod → kernel peer: TCP ${fromPod.stderr}`)
    await topo.stop(server)
    const far = await lab.pod('client', ['ping', '-c', '2', '-i', '0.2', '-W', '2', FAR])
    t.match(far.stdout, /2 packets transmitted, 2 received/, 'node2 is still reached')

    // and leaves it again
    const removed = (await askAgent(node1Ctl, 'peer', { op: 'remove', node: 'kpeer', ip: PEER_IP, podCIDR: PEER_POD_CIDR })) as { peers: { node: string }[] }
    t.same(
      removed.peers.map(p => p.node),
      ['node2'],
      'removed: node2 is the only peer again',
    )
    const gone = await topo.exec(peer, ['ping', '-c', '2', '-i', '0.2', '-W', '1', CLIENT])
    t.match(gone.stdout, /2 packets transmitted, 0 received/, 'a removed peer gets no replies')
    const bad = await askAgent(node1Ctl, 'peer', { op: 'add', node: 'bad', ip: 'nope', podCIDR: PEER_POD_CIDR }).then(
      () => 'accepted',
      (err: Error) => err.message,
    )
    t.match(bad, /not an IPv4 address/, 'a bad peer is refused')
  })

  await t.test('lab down leaves nothing behind', async t => {
    const state = lab.state
    const pids = state.processes
    t.ok(pids.filter(isOurs).length >= 9, 'dnsmasq, netexecs, nginx and both agents running before')
    await labDown(lab.name, { log: () => {} })
    t.same(
      listNamespaces().filter(ns => ns.startsWith(`tundra-${lab.name}-`)),
      [],
      'no namespaces',
    )
    t.same(existsSync('/etc/netns') ? readdirSync('/etc/netns').filter(d => d.startsWith(`tundra-${lab.name}-`)) : [], [], 'no /etc/netns dirs')
    t.notOk(existsSync(state.dir), 'no state dir')
    t.same(
      pids.filter(isOurs).map(p => `${p.role} ${p.owner} ${p.pid}`),
      [],
      'no process of the lab alive',
    )
  })
})
