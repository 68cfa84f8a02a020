// --probability text: what kube-proxy writes, and what iptables-save prints back (values read off iptables 1.8.9).
import t from 'tap'
import { formatFixedExact, iptablesSaveProbability, kubeProxyProbability, probabilityForRemaining } from '../../src/kubeproxy/probability'

t.test('kube-proxy writes %0.10f of 1/n', async t => {
  t.equal(kubeProxyProbability(2), '0.5000000000')
  t.equal(kubeProxyProbability(3), '0.3333333333')
  t.equal(kubeProxyProbability(6), '0.1666666667')
})

t.test('iptables-save shows the u32-rounded value with 11 decimals', async t => {
  // measured: iptables-restore these, iptables-save them back
  const seen: [number, string][] = [
    [2, '0.50000000000'],
    [3, '0.33333333349'],
    [4, '0.25000000000'],
    [5, '0.20000000019'],
    [6, '0.16666666651'],
    [7, '0.14285714272'],
    [10, '0.10000000009'],
    [100, '0.00999999978'],
    [2048, '0.00048828125'],
    [4096, '0.00024414062'],
  ]
  for (const [n, text] of seen) t.equal(probabilityForRemaining(n), text, `1/${n}`)
  t.equal(iptablesSaveProbability('1'), '1.00000000000')
})

t.test('exact decimal formatting rounds ties to even, unlike toFixed', async t => {
  t.equal(formatFixedExact(0.000244140625, 11), '0.00024414062')
  t.equal((0.000244140625).toFixed(11), '0.00024414063', 'the JS built-in would be off by one here')
  t.equal(formatFixedExact(2.5, 0), '2')
  t.equal(formatFixedExact(3.5, 0), '4')
  t.equal(formatFixedExact(0.1, 20), '0.10000000000000000555')
  t.equal(formatFixedExact(-1.25, 1), '-1.2')
})
