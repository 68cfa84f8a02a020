// Chain names must equal kube-proxy's byte for byte: values from the seed's node and kube-proxy's own comments.
import t from 'tap'
import {
  base32,
  hashAndTruncate,
  nftServicePortChainNameBase,
  nftServicePortEndpointChainNameBase,
  portProtoHash,
  serviceExternalChainName,
  serviceFirewallChainName,
  servicePortChainName,
  servicePortEndpointChainName,
  servicePortPolicyLocalChainName,
} from '../../src/kubeproxy/names'
import { endpointString, servicePortName } from '../../src/model/names'

t.test('base32 matches RFC 4648 test vectors (Go StdEncoding)', async t => {
  const enc = (s: string): string => base32(new TextEncoder().encode(s))
  t.equal(enc(''), '')
  t.equal(enc('f'), 'MY======')
  t.equal(enc('fo'), 'MZXQ====')
  t.equal(enc('foo'), 'MZXW6===')
  t.equal(enc('foob'), 'MZXW6YQ=')
  t.equal(enc('fooba'), 'MZXW6YTB')
  t.equal(enc('foobar'), 'MZXW6YTBOI======')
})

t.test('seed golden: default/nginx-pod08 8080/TCP and its two endpoints', async t => {
  const spn = servicePortName('default', 'nginx-pod08', '')
  t.equal(spn, 'default/nginx-pod08')
  t.equal(servicePortChainName(spn, 'tcp'), 'KUBE-SVC-DDZHMK5AO3JF6KIZ')
  t.equal(servicePortEndpointChainName(spn, 'tcp', '10.100.85.246:80'), 'KUBE-SEP-ATSP76LQOJHSORE7')
  t.equal(servicePortEndpointChainName(spn, 'tcp', '10.100.85.253:80'), 'KUBE-SEP-FXZXKRS4RXLGILD5')
})

t.test('well-known chains every kubeadm cluster has', async t => {
  t.equal(servicePortChainName('default/kubernetes:https', 'tcp'), 'KUBE-SVC-NPX46M4PTMTKRN6Y')
  t.equal(servicePortChainName('kube-system/kube-dns:dns', 'udp'), 'KUBE-SVC-TCOU7JCQXEZGVUNU')
  t.equal(servicePortChainName('kube-system/kube-dns:dns-tcp', 'tcp'), 'KUBE-SVC-ERIFXISQEP7F7OF4')
  t.equal(servicePortChainName('kube-system/kube-dns:metrics', 'tcp'), 'KUBE-SVC-JD5MR3NA4I4DYORP')
})

t.test('the per-policy chains share one hash, only the prefix differs', async t => {
  const h = portProtoHash('ns/svc:p', 'udp')
  t.equal(h.length, 16)
  t.equal(servicePortChainName('ns/svc:p', 'udp'), `KUBE-SVC-${h}`)
  t.equal(servicePortPolicyLocalChainName('ns/svc:p', 'udp'), `KUBE-SVL-${h}`)
  t.equal(serviceExternalChainName('ns/svc:p', 'udp'), `KUBE-EXT-${h}`)
  t.equal(serviceFirewallChainName('ns/svc:p', 'udp'), `KUBE-FW-${h}`)
  t.not(servicePortChainName('ns/svc:p', 'tcp'), servicePortChainName('ns/svc:p', 'udp'), 'protocol is part of the hash')
  t.ok(servicePortChainName('ns/svc:p', 'tcp').length <= 28, 'iptables chain names are at most 28 characters')
})

t.test('endpoint strings join host and port like net.JoinHostPort', async t => {
  t.equal(endpointString('10.0.0.1', 80), '10.0.0.1:80')
  t.equal(endpointString('fd00::1', 80), '[fd00::1]:80')
})

t.test("nftables names: the example from kube-proxy's source", async t => {
  t.equal(nftServicePortChainNameBase('ns1', 'svc1', 'tcp', 'p80'), 'ULMVA6XW-ns1/svc1/tcp/p80')
  t.equal(nftServicePortEndpointChainNameBase('ns1', 'svc1', 'tcp', 'p80', '10.180.0.1', 80), '5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80')
  t.match(nftServicePortEndpointChainNameBase('ns', 's', 'tcp', '', 'fd00::1', 80), /^[A-Z2-7]{8}-ns\/s\/tcp\/__fd00\.\.1\/80$/, 'IPv6 colons become dots')
  const long = hashAndTruncate('x'.repeat(300))
  t.equal(long.length, 240)
  t.ok(long.endsWith('...'))
})
