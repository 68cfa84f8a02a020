// The handlers against a live NatEngine (packets fed through engine.process, as the packet loop does), and the
// same handlers served on a control socket and asked with askAgent, as the CLI does against a running agent.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { askAgent, serveControl } from '../../src/agent/control'
import { inspectHandlers } from '../../src/inspect/handlers'
import { conntrackLine, formatConntrack, OFFLINE_CONNTRACK, type ConntrackResult } from '../../src/inspect/conntrack'
import { formatTrace, type Trace } from '../../src/inspect/trace'
import { formatServices, type ServicesReport } from '../../src/inspect/services'
import { NatAction } from '../../src/nat/verdict'
import { TCP_SYN } from '../../src/wire/tcp'
import { CASES, CLIENT, NGINX, PINNED, SVC_CHAIN, VIP, feed, handshake, liveView, quietView, tcp4 } from './helpers/inspect'

type List = Extract<ConntrackResult, { op: 'list' }>

t.test('conntrack: a SYN through the engine shows up with its service and endpoint; flush removes it', async t => {
  const { view, engine } = liveView()
  const h = inspectHandlers(view)
  const syn = feed(engine, tcp4(CLIENT, VIP, 40000, 8080, TCP_SYN))
  t.equal(syn.action, NatAction.FORWARD)
  t.ok(NGINX.includes(syn.dst))

  const list = (await h.conntrack({ op: 'list' })) as List
  t.equal(list.entries.length, 1)
  const e = list.entries[0]!
  t.equal(e.service, 'default/nginx-pod08')
  t.equal(e.endpoint, `${syn.dst}:80`)
  t.same(e.orig, { src: CLIENT, dst: VIP, sport: 40000, dport: 8080 })
  t.equal(e.state, 'SYN_SENT')
  t.equal(
    conntrackLine(e),
    `tcp      6 120 SYN_SENT src=${CLIENT} dst=${VIP} sport=40000 dport=8080 [UNREPLIED] src=${syn.dst} dst=${CLIENT} sport=80 dport=40000 service=default/nginx-pod08 endpoint=${syn.dst}:80`,
  )
  t.same(await h.conntrack({ op: 'count' }), { op: 'count', count: 1 })

  const flushed = await h.conntrack({ op: 'flush', filter: { service: 'default/nginx-pod08' } })
  t.same(flushed, { op: 'flush', flushed: 1 })
  t.same(await h.conntrack({ op: 'count' }), { op: 'count', count: 0 })
  t.equal(engine.conntrackEntries(0).length, 0)
})

t.test('conntrack: an established connection, and the filters', async t => {
  const { view, engine } = liveView()
  const h = inspectHandlers(view)
  const ep = handshake(engine, 41000)
  handshake(engine, 41001)
  const list = (await h.conntrack({})) as List
  t.equal(list.op, 'list', 'list is the default')
  t.equal(list.entries.length, 2)
  const first = list.entries.find(x => x.orig.sport === 41000)!
  t.equal(first.state, 'ESTABLISHED')
  t.equal(first.endpoint, ep)
  const line = conntrackLine(first)
  t.match(
    line,
    new RegExp(
      `^tcp {6}6 86400 ESTABLISHED src=${CLIENT} dst=${VIP} sport=41000 dport=8080 src=10\\.100\\.85\\.(246|253) dst=${CLIENT} sport=80 dport=41000 \\[ASSURED\\] service=default/nginx-pod08 endpoint=`,
    ),
  )
  t.notMatch(line, /UNREPLIED/)

  const count = async (filter: Record<string, unknown>): Promise<number> => ((await h.conntrack({ op: 'count', filter })) as { count: number }).count
  t.equal(await count({ src: CLIENT }), 2)
  t.equal(await count({ src: '10.100.85.9' }), 0)
  t.equal(await count({ dst: VIP }), 2)
  t.equal(await count({ dst: ep.split(':')[0] }), list.entries.filter(x => x.endpoint === ep).length, 'dst also matches the endpoint')
  t.equal(await count({ port: 41001 }), 1)
  t.equal(await count({ proto: 'udp' }), 0)
  t.equal(await count({ proto: 'tcp', service: 'default/nginx-pod08' }), 2)
  t.equal(await count({ service: 'default/other' }), 0)
  await t.rejects(
    Promise.resolve().then(() => h.conntrack({ op: 'list', filter: { src: 'nope' } })),
    /--src: "nope" is not an IP address/,
  )
  await t.rejects(
    Promise.resolve().then(() => h.conntrack({ op: 'delete' })),
    /op must be one of list, count, flush/,
  )

  t.same(await h.conntrack({ op: 'flush', filter: { port: 41001 } }), { op: 'flush', flushed: 1 }, 'flush takes only what the filter selects')
  const left = (await h.conntrack({})) as List
  t.same(
    left.entries.map(x => x.orig.sport),
    [41000],
  )
  const text = formatConntrack(left)
  t.match(text.stdout, /^tcp {6}6 86400 ESTABLISHED /)
  t.equal(text.stderr, 'tundra conntrack: 1 flow entries have been shown.\n')
})

t.test('trace online: an existing connection shows its conntrack endpoint; a new one is not decided yet', async t => {
  const { view, engine } = liveView()
  const ep = handshake(engine, 42000)
  const tr = (await inspectHandlers(view).trace({ src: `${CLIENT}:42000`, dst: `${VIP}:8080` })) as Trace
  t.equal(tr.live, true)
  t.equal(tr.verdict, 'tracked')
  t.equal(tr.pick!.how, 'conntrack')
  t.equal(tr.pick!.endpoint, ep)
  t.same(tr.path.slice(0, 3), ['PREROUTING', 'KUBE-SERVICES', SVC_CHAIN])
  t.equal(tr.conntrack!.direction, 'original')
  t.equal(`${tr.rewritten!.dst}:${tr.rewritten!.dport}`, ep)
  t.match(formatTrace(tr), /conntrack: +original direction of tcp ESTABLISHED/)

  // the reply direction: reverse NAT, no chain walk
  const [ip] = ep.split(':')
  const back = (await inspectHandlers(view).trace({ src: `${ip}:80`, dst: `${CLIENT}:42000` })) as Trace
  t.equal(back.verdict, 'tracked')
  t.equal(back.conntrack!.direction, 'reply')
  t.same(back.rewritten, { src: VIP, sport: 8080, dst: CLIENT, dport: 42000 })

  const fresh = (await inspectHandlers(view).trace({ src: `${CLIENT}:42001`, dst: `${VIP}:8080` })) as Trace
  t.equal(fresh.verdict, 'dnat')
  t.equal(fresh.pick!.how, 'hash')
})

t.test('services online: packets and new connections per service port', async t => {
  const { view, engine } = liveView()
  handshake(engine, 43000)
  const r = (await inspectHandlers(view).services({})) as ServicesReport
  t.equal(r.live, true)
  t.same(r.services[0]!.counters, { packets: 3, newConnections: 1 })
  const text = formatServices(r)
  t.match(text, /AFFINITY +PACKETS +NEW$/m)
  t.match(text, /int Cluster +None +3 +1$/m)
})

t.test('offline there is no conntrack', async t => {
  const { view } = quietView([PINNED])
  await t.rejects(
    Promise.resolve().then(() => inspectHandlers(view).conntrack({ op: 'list' })),
    { message: OFFLINE_CONNTRACK },
  )
})

t.test('round trip over a control socket: serveControl + askAgent', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-ctl-'))
  const sock = join(dir, 'control.sock')
  const { view, engine } = liveView()
  const server = await serveControl(sock, inspectHandlers(view))
  t.teardown(() => {
    server.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const ep = handshake(engine, 44000)

  const dump = await askAgent(sock, 'dump', { format: 'iptables-save' })
  t.equal(typeof dump, 'string')
  t.ok((dump as string).includes(`:${SVC_CHAIN} - [0:0]`))
  const tr = (await askAgent(sock, 'trace', { src: `${CLIENT}:44000`, dst: `${VIP}:8080`, proto: 'tcp' })) as Trace
  t.equal(tr.pick!.endpoint, ep)
  t.equal(
    formatTrace(tr),
    formatTrace((await inspectHandlers(view).trace({ src: `${CLIENT}:44000`, dst: `${VIP}:8080`, proto: 'tcp' })) as Trace),
    'same text online and in-process',
  )
  const svc = (await askAgent(sock, 'services')) as ServicesReport
  t.equal(svc.services[0]!.backends.length, 2)
  const list = (await askAgent(sock, 'conntrack', { op: 'list', filter: { src: CLIENT } })) as List
  t.equal(list.entries.length, 1)
  t.same(await askAgent(sock, 'conntrack', { op: 'flush', filter: {} }), { op: 'flush', flushed: 1 })
  await t.rejects(askAgent(sock, 'trace', { src: CLIENT, dst: 'bad!' }), /--dst: "bad!" is not an address/)
  await t.rejects(askAgent(sock, 'conntrack', { op: 'list', filter: { port: 'x' } }), /port must be a port number/)
})

t.test('trace online: a ClientIP affinity pin decides a new connection', async t => {
  const { view, engine } = liveView([join(CASES, 'affinity.yaml')])
  const sp = view.table().svcPorts.find(s => s !== undefined && s.affinityTimeout > 0)!
  const first = feed(engine, tcp4('10.100.1.5', sp.clusterIP, 1000, sp.port, TCP_SYN))
  t.equal(first.action, NatAction.FORWARD)
  const tr = (await inspectHandlers(view).trace({ src: '10.100.1.5:2000', dst: `${sp.clusterIP}:${sp.port}` })) as Trace
  t.equal(tr.verdict, 'dnat')
  t.equal(tr.pick!.how, 'affinity')
  t.equal(tr.pick!.endpoint, `${first.dst}:${first.dport}`)
  const step = tr.steps.find(s => s.balance)!
  t.match(
    step.rule,
    new RegExp(
      `-m recent --rcheck --seconds ${sp.affinityTimeout} --reap --name ${tr.pick!.chain} --mask 255\\.255\\.255\\.255 --rsource -j ${tr.pick!.chain}$`,
    ),
  )
  t.equal(tr.affinity!.pinned!.endpoint, tr.pick!.endpoint)
})
