// The one IP text parser family (src/wire/addr.ts): every bad input is `undefined`, nothing throws.
import t from 'tap'
import { canonicalIp, cidrPrefix, ipBytesToString, ipFamily, parseIpBytes, parseIpv4Cidr, parseIpWords, splitHostPort } from '../../src/wire/addr'

const BAD = ['', '1.2.3', '01.2.3.4', '1.2.3.4 ', '256.1.1.1', 'fe80::1%eth0', '[::1]', '1::2::3', '::ffff:1.2.3.04', 'x', '10.0.0.0/8']

t.test('ipFamily and parseIpWords agree, and reject what the API server rejects', async t => {
  t.equal(ipFamily('10.96.0.10'), 4)
  t.equal(ipFamily('fd00::a'), 6)
  t.equal(ipFamily('::ffff:1.2.3.4'), 6, 'an IPv4-mapped address is IPv6, as in Kubernetes')
  const w = new Uint32Array(5)
  t.equal(parseIpWords('10.96.0.10', 4, w, 0), 1)
  t.equal(w[0], 0x0a60000a)
  t.equal(parseIpWords('2001:db8::1', 6, w, 1), 5, 'returns the offset after the words')
  t.same([...w.subarray(1)], [0x20010db8, 0, 0, 1])
  t.equal(parseIpWords('2001:db8::1', 4, w, 0), undefined, 'the other family is not parsed')
  for (const bad of BAD) {
    t.equal(ipFamily(bad), undefined, JSON.stringify(bad))
    t.equal(parseIpBytes(bad), undefined, JSON.stringify(bad))
    t.equal(canonicalIp(bad), undefined, JSON.stringify(bad))
  }
  t.equal(ipFamily(undefined as unknown as string), undefined, 'never throws on a non-string')
})

t.test('bytes and canonical text round-trip (RFC 5952)', async t => {
  t.equal(ipBytesToString(parseIpBytes('10.0.0.1')!), '10.0.0.1')
  t.equal(ipBytesToString(parseIpBytes('FD00:10:244:2:0:0:0:66')!), 'fd00:10:244:2::66')
  t.equal(canonicalIp('2001:DB8::1'), '2001:db8::1')
  t.equal(canonicalIp('::ffff:10.0.0.1'), '::ffff:10.0.0.1')
})

t.test('CIDR prefixes and the packet loop form', async t => {
  t.equal(cidrPrefix('10.0.0.0/8', 32), 8)
  t.equal(cidrPrefix('10.0.0.0/08', 32), undefined, 'no leading zeros')
  t.equal(cidrPrefix('10.0.0.0/33', 32), undefined)
  t.equal(cidrPrefix('10.0.0.0', 32), undefined, 'a slash is required')
  t.same(parseIpv4Cidr('10.244.1.7/24'), { net: 0x0af40100, mask: 0xffffff00 }, 'host bits cleared')
  t.same(parseIpv4Cidr('0.0.0.0/0'), { net: 0, mask: 0 })
  t.equal(parseIpv4Cidr('fd00::/64'), undefined)
  t.equal(parseIpv4Cidr('10.0.0.0'), undefined)
})

t.test('splitHostPort takes an IP host and a port, as kube-proxy bind addresses', async t => {
  t.same(splitHostPort('0.0.0.0:10256'), { host: '0.0.0.0', port: 10256 })
  t.same(splitHostPort('[::]:10256'), { host: '::', port: 10256 })
  for (const bad of ['0.0.0.0', '::1:80', 'localhost:80', '[fe80::1%eth0]:80', '1.2.3.4:65536', '[::1]', ':80']) {
    t.equal(splitHostPort(bad), undefined, JSON.stringify(bad))
  }
})
