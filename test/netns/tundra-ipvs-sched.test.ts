// The other IPVS schedulers with real clients (issue 17: "netns tests with real clients for every scheduler's
// distribution"; rr, sh and lc are in tundra-ipvs.test.ts). A lab (tundra agent) with 3 netexec endpoints behind
// Services that pick their scheduler by the tundra.io/scheduler label:
//   random  60 connections reach every endpoint, and none gets them all
//   wrr     EndpointSlices carry no weights (every endpoint weighs 1), so it rotates exactly like rr
//   wlc     (every weight 1) like lc: with 2 long connections open, new ones go to the third endpoint
//   mh      Maglev hashes the connection's tuple (select.ts flowHash: addresses, ports, protocol): the same client
//           port always lands on the same endpoint, and many client ports spread over every endpoint (with a control:
//           the same reused tuples through wrr move, so what holds them still under mh is the hash)
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { PY, tundraLab } from '../fixtures/tundra/lab'
import { answers, assertLeastLoaded, assertRotation, PY_ASK, schedManifest } from './fixtures/sched-lab'

const skip = netnsSkip('curl', 'unshare', 'python3')

const WEB = ['10.100.85.21', '10.100.85.22', '10.100.85.23']
const RANDOM = '10.96.8.10'
const WRR = '10.96.8.11'
const WLC = '10.96.8.12'
const MH = '10.96.8.13'

const manifest = (): string =>
  schedManifest(
    WEB,
    [['client', '10.100.85.60']],
    [
      ['web-random', RANDOM, 'random'],
      ['web-wrr', WRR, 'wrr'],
      ['web-wlc', WLC, 'wlc'],
      ['web-mh', MH, 'mh'],
    ],
  )

const count = (a: readonly string[], w: string): number => a.filter(x => x === w).length

/**
 * argv[3] rounds of: for each client port in argv[2] (comma-separated), a connection to argv[1]:80 bound to that port,
 * one request, then an abortive close (RST, so no TIME_WAIT keeps the port): prints "<port> <backend>". The next SYN
 * of the same tuple finds a closed conntrack entry, which tundra deletes (TcpVerdict.REOPEN): the scheduler picks again.
 */
const PORTS = `${PY_ASK}
for _ in range(int(sys.argv[3])):
    for port in [int(p) for p in sys.argv[2].split(",")]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.settimeout(5)
        s.bind(("0.0.0.0", port))
        s.connect((sys.argv[1], 80))
        print(port, ask(s), flush=True)
        s.close()
`

t.test('IPVS schedulers random, wrr, wlc, mh by Service label, real clients', { ...skip, timeout: 240_000 }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tt-ipvs-sched-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'sched.yaml'), manifest())
  const lab = await tundraLab(t, { prefix: 'tw', files: [join(dir, 'sched.yaml')], nodes: 1 })
  const web = lab.podsOf('web').sort((a, b) => lab.podIP(a).localeCompare(lab.podIP(b)))
  t.equal(web.length, 3)

  await t.test('random: 60 connections reach every endpoint, none gets them all', async t => {
    const r = await lab.tool('client', ['http', RANDOM, '80', '/hostname', '60'], { timeoutMs: 90_000 })
    t.equal(r.code, 0, r.stderr)
    const a = answers(r.stdout)
    t.equal(a.length, 60)
    t.ok(
      a.every(x => web.includes(x)),
      'every answer is an endpoint of the service',
    )
    const counts = web.map(w => count(a, w))
    for (const [i, w] of web.entries()) t.ok(counts[i]! > 0, `${w} answered (${counts[i]} of 60)`)
    t.ok(
      counts.every(c => c < 60),
      `no endpoint got all 60 (${counts.join(', ')})`,
    )
  })

  await t.test('wrr: every weight is 1, so 30 connections rotate exactly like rr', async t => {
    await assertRotation(t, lab, WRR, web)
  })

  await t.test('wlc: with 2 long connections open, new ones go to the third endpoint', async t => {
    await assertLeastLoaded(t, lab, WLC, web)
  })

  /** client port -> the backends its connections reached, in order */
  const byPort = async (t: Test, svc: string, ports: readonly number[], rounds: number): Promise<Map<string, string[]>> => {
    const r = await lab.pod('client', [PY, '-c', PORTS, svc, ports.join(','), String(rounds)], { timeoutMs: 90_000 })
    t.equal(r.code, 0, r.stderr)
    const out = new Map<string, string[]>()
    for (const line of r.stdout.split('\n').filter(l => l !== '')) {
      const [port, backend] = line.split(' ')
      out.set(port!, [...(out.get(port!) ?? []), backend!])
    }
    return out
  }

  await t.test('a reused client tuple is scheduled again (the control for mh: wrr moves it)', async t => {
    // 2 ports x 3 rounds through wrr's rotation of 3: the same port lands on a different endpoint each round, so a
    // stable endpoint per port below is mh's hash and not a conntrack entry left from the previous connection.
    const got = await byPort(t, WRR, [42000, 42001], 3)
    for (const [port, b] of got) t.equal(new Set(b).size, 3, `port ${port} through wrr: 3 endpoints in 3 rounds (${b.join(', ')})`)
  })

  await t.test('mh: the same tuple always lands on one endpoint; many tuples use every endpoint', async t => {
    const got = await byPort(
      t,
      MH,
      Array.from({ length: 30 }, (_, i) => 41000 + i),
      3,
    )
    t.equal(got.size, 30, 'every client port got its answers')
    for (const [port, b] of got) {
      t.equal(b.length, 3, `port ${port}: 3 connections`)
      t.equal(new Set(b).size, 1, `port ${port}: one endpoint for all 3 connections (${b.join(', ')})`)
      t.ok(web.includes(b[0]!), `port ${port}: an endpoint of the service`)
    }
    const used = new Set([...got.values()].map(b => b[0]!))
    t.equal(used.size, 3, `30 client ports spread over all 3 endpoints (${[...used].join(', ')})`)
  })
})
