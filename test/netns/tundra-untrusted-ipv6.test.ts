// Pods are untrusted over IPv6 too (issue 14): a pod with a raw socket cannot send from an IPv6 address that is not
// its own, and a packet to an IPv6 address nobody owns (service CIDR, pod CIDR) is processed at most twice.
// One 1-node dual-stack lab (test/fixtures/tundra/ipv6.yaml); forgeries are shown not delivered with a barrier
// datagram from the client's real address sent after them on the same path.
import t from 'tap'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { FIXTURES, tundraLab } from '../fixtures/tundra/lab'

const skip = netnsSkip('curl', 'dnsmasq', 'unshare', 'ping', 'nft')
const TOOL = join(FIXTURES, 'untrusted.cjs')
const NODE = process.execPath
const CLIENT6 = 'fd00:10:100:1::50'
const WEB6 = 'fd00:10:96::100'
const PORT = '9999'

const delta = (a: Record<string, number>, b: Record<string, number>, k: string): number => (b[k] ?? 0) - (a[k] ?? 0)

t.test('untrusted pods over IPv6 (1 node, dual-stack)', { ...skip, timeout: 180_000 }, async t => {
  const lab = await tundraLab(t, { prefix: 'tu6', files: [join(FIXTURES, 'ipv6.yaml')], nodes: 1 })
  const [web1, web2] = lab.podsOf('web').map(n => lab.state.pods.find(p => p.name === n)!)
  t.ok(web1?.ip6 !== undefined && web2?.ip6 !== undefined, 'the web pods have IPv6 addresses')

  await t.test('a pod cannot send from an IPv6 address that is not its own', async t => {
    const spoofed = async (): Promise<number> => {
      const r = await lab.node('node1', ['nft', 'list', 'counter', 'inet', 'tundra-lab-antispoof', 'spoofed'])
      return Number(/packets (\d+)/.exec(r.stdout)?.[1] ?? -1)
    }
    const nft0 = await spoofed()
    const l = lab.stream(web1!.name, [NODE, TOOL, 'listen', PORT, '6'])
    await l.line(/^listening$/)
    const forgeries = [web2!.ip6!, WEB6, '2001:db8::1', 'fd00:10:100:7::9']
    for (const src of forgeries) {
      const r = await lab.pod('client', [NODE, TOOL, 'spoof', src, web1!.ip6!, PORT, `forged-${src}`])
      t.equal(r.code, 0, `raw socket send from ${src}: ${r.stderr}`)
    }
    const b = await lab.pod('client', [NODE, TOOL, 'spoof', CLIENT6, web1!.ip6!, PORT, 'barrier-6'])
    t.equal(b.code, 0, b.stderr)
    await l.line(/barrier-6$/)
    t.same(
      l.lines.filter(x => x.startsWith('from ')),
      [`from ${CLIENT6} barrier-6`],
      "only the client's own address got through",
    )
    t.equal((await spoofed()) - nft0, forgeries.length, "each forgery dropped on the client's veth and counted")
  })

  await t.test('an IPv6 address nobody owns is processed at most twice', async t => {
    for (const [what, ip] of [
      ['a service address that is no ClusterIP', 'fd00:10:96::999'],
      ['an unused pod address', 'fd00:10:100:1::999'],
    ] as const) {
      const before = await lab.counters('node1')
      await lab.pod('client', ['ping', '-6', '-c', '5', '-i', '0.2', '-W', '1', '-t', '255', ip])
      const after = await lab.counters('node1')
      const p = delta(before, after, 'packets')
      t.ok(p <= 5 * 2 + 10, `${what}: ${p} packets processed for 5 echoes (a loop would be ~5 x 127)`)
      if (ip.startsWith('fd00:10:96:')) t.equal(delta(before, after, 'drop_no_service'), 5, 'dropped as no_service')
    }
  })
})
