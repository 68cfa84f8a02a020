// Address parsing and canonical text: what validation accepts and what every output prints.
import t from 'tap'
import { canonicalCIDR, cidrContains, compareIP, parseCIDR, parseIP } from '../../src/k8s/ip'
import { canonicalIp } from '../../src/wire/addr'
import { ClusterIPAllocator, NodePortAllocator } from '../../src/k8s/allocate'

t.test('IPv4: strict dotted quads', async t => {
  t.equal(canonicalIp('10.96.0.1'), '10.96.0.1')
  for (const bad of ['10.96.0', '10.96.0.256', '010.1.1.1', '1.2.3.4.5', ' 1.2.3.4', '1.2.3.-1', '']) t.equal(parseIP(bad), undefined, bad)
})

t.test('IPv6: RFC 5952 canonical form', async t => {
  t.equal(canonicalIp('FD00:10:244:2:0:0:0:66'), 'fd00:10:244:2::66')
  t.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1', 'the first of two equal zero runs is compressed')
  t.equal(canonicalIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1', 'a single zero group is not compressed')
  t.equal(canonicalIp('::'), '::')
  t.equal(canonicalIp('::1'), '::1')
  t.equal(canonicalIp('::ffff:10.0.0.1'), '::ffff:10.0.0.1')
  for (const bad of [':::', '1::2::3', 'fe80::1%eth0', '12345::', '1:2:3:4:5:6:7:8:9', 'g::1']) t.equal(parseIP(bad), undefined, bad)
})

t.test('CIDRs: host bits cleared, containment, family', async t => {
  t.equal(canonicalCIDR('10.244.7.7/16'), '10.244.0.0/16')
  t.equal(canonicalCIDR('fd00:10:244::1/56'), 'fd00:10:244::/56')
  t.equal(parseCIDR('10.0.0.0/33'), undefined)
  t.equal(parseCIDR('10.0.0.0'), undefined)
  t.equal(parseCIDR('10.0.0.0/08'), undefined)
  const c = parseCIDR('192.168.0.0/23')!
  t.ok(cidrContains(c, parseIP('192.168.1.255')!))
  t.notOk(cidrContains(c, parseIP('192.168.2.0')!))
  t.notOk(cidrContains(c, parseIP('::ffff:192.168.1.1')!), 'families never match across')
})

t.test('numeric order, IPv4 first', async t => {
  t.same(['10.0.0.10', 'fd00::1', '10.0.0.9', '9.0.0.0'].sort(compareIP), ['9.0.0.0', '10.0.0.9', '10.0.0.10', 'fd00::1'])
})

t.test('allocators', async t => {
  const a = new ClusterIPAllocator(['10.96.0.0/29'])
  const got = ['a', 'b', 'c', 'd', 'e'].map(n => a.allocate('ns', n, 4))
  t.same(
    got.map(x => x ?? '').sort(compareIP),
    ['10.96.0.2', '10.96.0.3', '10.96.0.4', '10.96.0.5', '10.96.0.6'],
    'network, .1 and broadcast skipped (.10 is outside)',
  )
  t.equal(a.allocate('ns', 'f', 4), undefined, 'full')
  t.equal(a.allocate('ns', 'f', 6), undefined, 'no IPv6 range')
  t.throws(() => new ClusterIPAllocator(['10.0.0.0/8', '11.0.0.0/8']), RangeError)
  const p = new NodePortAllocator([30000, 30002], [30001])
  t.same([p.allocate('x'), p.allocate('y'), p.allocate('z')].sort(), [30000, 30002, undefined].sort())
})
