// Cluster DNS through the tundra dataplane, end to end with real clients (issue 6's acceptance): one 1-node lab
// (test/fixtures/tundra/dns.yaml); every question asked from a pod with dig (UDP and TCP), getent (glibc through the
// pod's resolv.conf) or a python3 socket, as a user would.
import t from 'tap'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { FIXTURES, tundraLab } from '../fixtures/tundra/lab'

const DNS = join(FIXTURES, 'dns.yaml')
const skip = netnsSkip('dnsmasq', 'unshare', 'dig', 'getent', 'python3')

const Z = 'cluster.local'
const DNS_IP = '10.96.0.10'
const WEB_IP = '10.96.2.10'
const API_IP = '10.96.2.20'
const H1 = '10.100.85.21'
const H2 = '10.100.85.22'
const CLIENT = '10.100.85.50'
const EXTERNAL = '172.18.0.100'

const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')
const sorted = (xs: readonly string[]): string[] => [...xs].sort()

t.test('cluster DNS on the tundra dataplane', { ...skip, timeout: 180_000 }, async t => {
  const lab = await tundraLab(t, { prefix: 'td', files: [DNS], nodes: 1 })
  /** dig from the client pod: bounded (2 s per try, 2 tries); its whole output */
  const dig = async (...args: string[]): Promise<string> => {
    const r = await lab.pod('client', ['dig', '+time=2', '+tries=2', ...args])
    if (r.code !== 0) throw new Error(`dig ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`)
    return r.stdout
  }
  const short = async (name: string, type = 'A', tcp = false): Promise<string[]> => sorted(lines(await dig('+short', ...(tcp ? ['+tcp'] : []), type, name)))
  const getent = (...args: string[]): Promise<{ code: number; stdout: string }> => lab.pod('client', ['getent', ...args])
  const status = (out: string): string => /status: (\w+)/.exec(out)?.[1] ?? `no status in ${out}`
  const flags = (out: string): string[] => (/;; flags: ([a-z ]+);/.exec(out)?.[1] ?? '').split(' ')
  const count = (out: string, section: 'ANSWER' | 'AUTHORITY'): number => Number(new RegExp(`${section}: (\\d+)`).exec(out)?.[1] ?? -1)

  for (const tcp of [false, true]) {
    const via = tcp ? 'TCP' : 'UDP'
    await t.test(`records over ${via}`, async t => {
      t.same(await short(`web.default.svc.${Z}`, 'A', tcp), [WEB_IP], 'A of a ClusterIP service')
      t.same(await short(`hl.default.svc.${Z}`, 'A', tcp), [H1, H2], 'headless: one A per ready endpoint')
      t.same(await short(`mixed.default.svc.${Z}`, 'A', tcp), ['10.100.200.1', '10.100.200.2'], 'headless: the not-ready endpoint is left out')
      t.same(await short(`h1.hl.default.svc.${Z}`, 'A', tcp), [H1], 'pod hostname record <hostname>.<subdomain>.<ns>.svc')
      t.same(await short(`h2.hl.default.svc.${Z}`, 'A', tcp), [H2])
      t.same(await short(`_http._tcp.web.default.svc.${Z}`, 'SRV', tcp), [`0 100 80 web.default.svc.${Z}.`], 'SRV for a named port')
      t.same(
        await short(`_http._tcp.hl.default.svc.${Z}`, 'SRV', tcp),
        [`0 50 8080 h1.hl.default.svc.${Z}.`, `0 50 8080 h2.hl.default.svc.${Z}.`],
        'headless SRV: a target per endpoint',
      )
      t.same(await short(WEB_IP.split('.').reverse().join('.') + '.in-addr.arpa', 'PTR', tcp), [`web.default.svc.${Z}.`], 'PTR of a service IP')
      t.ok(
        (await short(H1.split('.').reverse().join('.') + '.in-addr.arpa', 'PTR', tcp)).includes(`h1.hl.default.svc.${Z}.`),
        "PTR of an endpoint IP names the pod's hostname record",
      )
      t.same(await short(`dns-version.${Z}`, 'TXT', tcp), ['"1.1.0"'], 'schema version')
      t.same(await short(`${CLIENT.replace(/\./g, '-')}.default.pod.${Z}`, 'A', tcp), [CLIENT], 'pod A record a-b-c-d.<ns>.pod')
      t.same(await short('example.test', 'A', tcp), [EXTERNAL], 'a name outside the zone is forwarded upstream')
      const ext = await dig('+noall', '+answer', ...(tcp ? ['+tcp'] : []), `ext.default.svc.${Z}`)
      t.match(ext, /^ext\.default\.svc\.cluster\.local\.\s+\d+\s+IN\s+CNAME\s+example\.test\.$/m, 'ExternalName: CNAME')
      t.match(ext, new RegExp(`^example\\.test\\.\\s+\\d+\\s+IN\\s+A\\s+${EXTERNAL.replace(/\./g, '\\.')}$`, 'm'), 'followed through the upstream')
    })
  }

  await t.test("through the pod's resolv.conf (glibc)", async t => {
    const web = await getent('hosts', 'web')
    t.same([web.code, web.stdout.trim().split(/\s+/)], [0, [WEB_IP, `web.default.svc.${Z}`]], 'search path: web')
    const api = await getent('hosts', 'api.other')
    t.same([api.code, api.stdout.trim().split(/\s+/)], [0, [API_IP, `api.other.svc.${Z}`]], 'search path: api.other')
    const h2 = await getent('hosts', 'h2.hl')
    t.same(h2.stdout.trim().split(/\s+/), [H2, `h2.hl.default.svc.${Z}`])
    const ext = await getent('hosts', 'ext')
    t.equal(ext.code, 0, 'an ExternalName resolves to an address')
    t.equal(ext.stdout.trim().split(/\s+/)[0], EXTERNAL)
    const up = await getent('hosts', 'example.test')
    t.equal(up.stdout.trim().split(/\s+/)[0], EXTERNAL, 'upstream name')
    const hl = await getent('ahosts', 'hl')
    t.same(sorted([...new Set(lines(hl.stdout).map(l => l.split(/\s+/)[0]!))]), [H1, H2], 'ahosts: A and AAAA in parallel, headless addresses')
    const nx = await getent('hosts', 'nosuch')
    t.equal(nx.code, 2, 'a missing name is not found (every search domain answered NXDOMAIN)')
  })

  await t.test('negative answers: NXDOMAIN and NODATA carry the SOA', async t => {
    const nx = await dig(`nosuch.default.svc.${Z}`)
    t.equal(status(nx), 'NXDOMAIN', 'missing service')
    t.match(nx, /^cluster\.local\.\s+\d+\s+IN\s+SOA\s+ns\.dns\.cluster\.local\. hostmaster\.cluster\.local\./m)
    const aaaa = await dig('AAAA', `web.default.svc.${Z}`)
    t.same([status(aaaa), count(aaaa, 'ANSWER'), count(aaaa, 'AUTHORITY')], ['NOERROR', 0, 1], 'AAAA of an IPv4-only service: NODATA')
    t.match(aaaa, /IN\s+SOA/)
    const ns = await dig(`default.svc.${Z}`)
    t.same([status(ns), count(ns, 'ANSWER'), count(ns, 'AUTHORITY')], ['NOERROR', 0, 1], 'a namespace name exists without records: NODATA')
  })

  await t.test('case-insensitive; the question comes back in its own case; AA set', async t => {
    const out = await dig('WeB.DeFaulT.svc.CLUSTER.local')
    t.equal(status(out), 'NOERROR')
    t.ok(flags(out).includes('aa'), `flags ${flags(out).join(' ')}`)
    t.match(out, /^;WeB\.DeFaulT\.svc\.CLUSTER\.local\.\s+IN\s+A$/m, 'question echoed')
    t.match(out, new RegExp(`^WeB\\.DeFaulT\\.svc\\.CLUSTER\\.local\\.\\s+\\d+\\s+IN\\s+A\\s+${WEB_IP.replace(/\./g, '\\.')}$`, 'm'))
  })

  await t.test('truncation and EDNS', async t => {
    const many = `many.default.svc.${Z}`
    const cut = await dig('+noedns', '+ignore', many)
    t.ok(flags(cut).includes('tc'), 'without EDNS 60 A records do not fit 512 bytes: TC')
    const retried = await dig('+noedns', many)
    t.match(retried, /Truncated, retrying in TCP mode/, 'dig falls back to TCP')
    t.equal(count(retried, 'ANSWER'), 60, 'and gets every endpoint')
    const big = await dig('+bufsize=1232', many)
    t.notMatch(big, /Truncated/, 'EDNS 1232: fits over UDP')
    t.equal(count(big, 'ANSWER'), 60)
    t.notOk(flags(big).includes('tc'))
    const small = await dig('+bufsize=700', '+ignore', many)
    t.ok(flags(small).includes('tc'), 'EDNS 700: does not fit, TC')
    const badvers = await dig('+edns=1', '+noednsnegotiation', `web.default.svc.${Z}`)
    t.equal(status(badvers), 'BADVERS', 'EDNS version 1: BADVERS')
  })

  await t.test('malformed queries get FORMERR (or nothing) and the server keeps answering', async t => {
    const good = query(0x4242, `web.default.svc.${Z}`)
    const payloads = [
      // garbage after a query header: the question cannot be read
      '13370100000100000000000042' + 'ff'.repeat(29),
      '0102030405', // shorter than a header
      '123401000001000000000000c00c00010001', // a name that is a compression pointer to itself
      '12340100000100000000000003777777c00c00010001', // a loop one label later
      // random bytes, any header
      ...Array.from({ length: 5 }, (_, i) => Buffer.from(Array.from({ length: 30 + i * 7 }, (_, j) => (j * 97 + i * 31 + 7) & 0xff)).toString('hex')),
      good,
    ]
    const r = await lab.tool('client', ['dns-raw', DNS_IP, ...payloads])
    t.equal(r.code, 0, r.stderr)
    const replies = lines(r.stdout)
    t.equal(replies.length, payloads.length)
    for (const [i, reply] of replies.slice(0, -1).entries()) {
      if (reply === 'none') {
        t.pass(`payload ${i}: dropped`)
        continue
      }
      const b = Buffer.from(reply.slice(6), 'hex')
      const rcode = b[3]! & 0x0f
      t.ok((b[2]! & 0x80) !== 0 && (rcode === 1 || rcode === 4), `payload ${i}: a response with FORMERR or NOTIMP (rcode ${rcode})`)
    }
    for (const i of [0, 2, 3]) t.equal(Buffer.from(replies[i]!.slice(6), 'hex')[3]! & 0x0f, 1, `payload ${i}: FORMERR`)
    t.equal(replies[1], 'none', 'a truncated header is dropped')
    const last = Buffer.from(replies.at(-1)!.slice(6), 'hex')
    t.same([last.readUInt16BE(0), last[3]! & 0x0f, last.readUInt16BE(6)], [0x4242, 0, 1], 'the next normal query is answered')
    t.same(await short(`web.default.svc.${Z}`), [WEB_IP], 'and dig still works')
  })

  await t.test('parallel A and AAAA from one socket never stall', async t => {
    const r = await lab.tool('client', ['dns-parallel', DNS_IP, `web.default.svc.${Z}`, '50'])
    t.equal(r.code, 0, r.stderr)
    const rounds = lines(r.stdout)
    t.same(
      rounds.filter(l => !l.startsWith('round ')),
      [],
      'no stalls',
    )
    t.equal(rounds.length, 50)
    t.ok(
      rounds.every(l => / 0 0$/.test(l)),
      'both NOERROR every round',
    )
    const up = await lab.tool('client', ['dns-parallel', DNS_IP, 'example.test', '20'])
    t.same(
      lines(up.stdout).filter(l => !l.startsWith('round ')),
      [],
      'forwarded names: no stalls either',
    )
  })

  await t.test("the node's own processes: the UDP socket front end on the DNS address", async t => {
    // from the node's namespace the query reaches the socket on lo (batched recvmmsg/sendmmsg), not the TUN
    const ask = async (...args: string[]): Promise<string[]> =>
      sorted(lines((await lab.node('node1', ['dig', '+time=2', '+tries=2', '+short', `@${DNS_IP}`, ...args])).stdout))
    t.same(await ask(`web.default.svc.${Z}`), [WEB_IP], 'a cluster name')
    t.same(await ask(`hl.default.svc.${Z}`), [H1, H2], 'headless')
    t.same(await ask('example.test'), [EXTERNAL], 'forwarded upstream and answered to the asking socket')
  })

  await t.test('DNS traffic creates no conntrack entries', async t => {
    const before = await lab.counters('node1')
    const udp = await dig('+short', `web.default.svc.${Z}`, `hl.default.svc.${Z}`, 'example.test', `nosuch.default.svc.${Z}`)
    const tcp = await dig('+short', '+tcp', `web.default.svc.${Z}`, 'example.test')
    t.ok(udp.includes(WEB_IP) && tcp.includes(WEB_IP))
    const after = await lab.counters('node1')
    t.ok(after['dnsAnswered']! - before['dnsAnswered']! >= 3, 'UDP queries answered in the packet path')
    t.ok(after['dnsForwarded']! > before['dnsForwarded']!, 'and forwarded')
    t.equal(after['nat_new'], before['nat_new'], 'no new NAT connection')
    t.equal(after['conntrack_entries'], before['conntrack_entries'], 'conntrack unchanged')
  })
})

/** A plain recursive query for `name` A (hex). */
function query(id: number, name: string): string {
  const labels = name.split('.').map(l => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]))
  const header = Buffer.alloc(12)
  header.writeUInt16BE(id, 0)
  header.writeUInt16BE(0x0100, 2)
  header.writeUInt16BE(1, 4)
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]).toString('hex')
}
