// IPv6 Services through the tundra dataplane, end to end (issue 4's acceptance: "an IPv6 service works"): a 1-node
// dual-stack lab (test/fixtures/tundra/ipv6.yaml; IPv6 is not carried between nodes), every check made from a pod
// with curl, ping and dig, as a user would.
import t from 'tap'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { FIXTURES, PY, tundraLab } from '../fixtures/tundra/lab'

const IPV6 = join(FIXTURES, 'ipv6.yaml')
const skip = netnsSkip('curl', 'dig', 'ping', 'dnsmasq', 'unshare', 'python3', 'bash')

// pinned in ipv6.yaml
const WEB6 = 'fd00:10:96::100'
const DUAL4 = '10.96.3.10'
const CLIENT6 = 'fd00:10:100:1::50'

const lines = (s: string): string[] => s.split('\n').filter(l => l !== '')
const uniq = (xs: readonly string[]): string[] => [...new Set(xs)].sort()

t.test('IPv6 Services on the tundra dataplane (1 node, dual-stack pods)', { ...skip, timeout: 180_000 }, async t => {
  const lab = await tundraLab(t, { prefix: 't6', files: [IPV6], nodes: 1 })
  const web = lab.podsOf('web')
  t.equal(web.length, 2, 'two web pods')
  const dual = lab.status.services.find(s => s.name === 'dual')!
  const dual6 = (dual.clusterIPs ?? []).find(ip => ip.includes(':'))
  t.ok(dual6 !== undefined && dual6.startsWith('fd00:10:96::'), `dual has an IPv6 cluster IP (${String(dual.clusterIPs)})`)
  t.equal(lab.state.pods.find(p => p.name === 'client')!.ip6, CLIENT6, 'the client pod has its IPv6 address')

  /** `n` GETs of `path` from the client pod, one connection each; the bodies */
  const curl = async (ip: string, port: number, path: string, n: number): Promise<string[]> => {
    const host = ip.includes(':') ? `[${ip}]` : ip
    const script = `for i in $(seq ${n}); do curl -g -sS --max-time 3 http://${host}:${port}${path}; echo; done`
    const r = await lab.pod('client', ['bash', '-c', script], { timeoutMs: 60_000 })
    t.equal(r.code, 0, `curl ${host}: ${r.stderr}`)
    return lines(r.stdout)
  }

  await t.test('pods are dual-stack and reach each other over IPv6 directly', async t => {
    const addr = await lab.pod('client', ['ip', '-6', 'addr', 'show', 'dev', 'eth0'])
    t.match(addr.stdout, `inet6 ${CLIENT6}/128`)
    const target = lab.state.pods.find(p => p.name === web[0])!
    t.ok(target.ip6, 'web pod has an IPv6 address')
    const body = await curl(target.ip6!, 8080, '/hostname', 1)
    t.same(body, [web[0]])
  })

  await t.test('an IPv6-only ClusterIP spreads connections over both endpoints', async t => {
    const answers = await curl(WEB6, 80, '/hostname', 40)
    t.equal(answers.length, 40, '40 answers')
    t.same(uniq(answers), [...web].sort(), `both endpoints answered: ${uniq(answers).join(', ')}`)
    for (const w of web) {
      const c = answers.filter(a => a === w).length
      t.ok(c >= 5, `${w} got ${c} of 40`)
    }
  })

  await t.test("the endpoint sees the client pod's IPv6 address (/clientip)", async t => {
    const seen = await curl(WEB6, 80, '/clientip', 5)
    t.equal(seen.length, 5)
    const re = new RegExp(`^${CLIENT6.replace(/[.:]/g, '\\$&')}:\\d+$`)
    t.ok(
      seen.every(s => re.test(s)),
      `backends saw ${uniq(seen).join(', ')}`,
    )
  })

  await t.test('UDP to the IPv6 ClusterIP', async t => {
    const script = [
      'import socket',
      's = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)',
      's.settimeout(2)',
      `s.sendto(b'clientip', ('${WEB6}', 81))`,
      'print(s.recv(200).decode())',
    ].join('\n')
    const r = await lab.pod('client', [PY, '-c', script])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout.trim(), new RegExp(`^${CLIENT6.replace(/[.:]/g, '\\$&')}:\\d+$`), 'the endpoint answered and saw the client')
  })

  await t.test('a dual-stack Service answers on both cluster IPs', async t => {
    t.same(uniq(await curl(dual6!, 80, '/hostname', 20)), [...web].sort(), 'IPv6 cluster IP: both endpoints')
    t.same(uniq(await curl(DUAL4, 80, '/hostname', 20)), [...web].sort(), 'IPv4 cluster IP: both endpoints')
    const v4client = await curl(DUAL4, 80, '/clientip', 1)
    t.match(v4client[0], /^10\.100\.85\.50:\d+$/, 'IPv4 clients stay IPv4')
  })

  await t.test('ping -6 of the IPv6 ClusterIP gets a reply', async t => {
    const r = await lab.pod('client', ['ping', '-6', '-c', '2', '-i', '0.2', '-W', '2', WEB6])
    t.equal(r.code, 0, `${r.stdout}${r.stderr}`)
    t.match(r.stdout, /2 received/)
    t.match(r.stdout, `from ${WEB6}`)
  })

  await t.test('dig AAAA returns the IPv6 cluster IP', async t => {
    const dig = async (type: string, name: string): Promise<string[]> => {
      const r = await lab.pod('client', ['dig', '+time=2', '+tries=2', '+short', type, name])
      t.equal(r.code, 0, r.stderr)
      return lines(r.stdout).sort()
    }
    t.same(await dig('AAAA', 'web6.default.svc.cluster.local'), [WEB6])
    t.same(await dig('A', 'web6.default.svc.cluster.local'), [], 'an IPv6-only Service has no A record')
    t.same(await dig('AAAA', 'dual.default.svc.cluster.local'), [dual6])
    t.same(await dig('A', 'dual.default.svc.cluster.local'), [DUAL4])
  })

  await t.test('the agent NATed IPv6 and lab status shows the IPv6 addresses', async t => {
    const c = await lab.counters('node1')
    t.ok((c['nat_new'] ?? 0) > 0 && (c['nat_echo_reply'] ?? 0) > 0, `connections were NATed, pings answered (new ${c['nat_new']}, echo ${c['nat_echo_reply']})`)
    t.ok(
      lab.status.pods.some(p => p.ip6 === CLIENT6),
      'status lists pod IPv6 addresses',
    )
    t.ok(lab.status.nodes[0]!.podCIDR6 === 'fd00:10:100:1::/64', "status lists the node's IPv6 pod block")
  })
})
