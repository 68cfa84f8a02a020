// tundra run's `tundra.icmpRateLimit`: read from the file, half-given settings completed with Linux's defaults,
// out-of-range values refused.
import t from 'tap'
import { mergeFlags, parseKubeProxyConfig } from '../../src/run/kpconfig'
import { ConfigError } from '../../src/run/schema'

const file = (tundra: unknown): string =>
  JSON.stringify({ apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', ...(tundra === undefined ? {} : { tundra }) })

t.test('icmpRateLimit is read from the tundra section', async t => {
  const cfg = mergeFlags(parseKubeProxyConfig(file({ icmpRateLimit: { perSecond: 10, burst: 3 } }), 'kp.yaml'), {}, { cpus: 1 })
  t.same(cfg.tundra.icmpRateLimit, { perSecond: 10, burst: 3 })
})

t.test('unset: the agent keeps its default', async t => {
  const cfg = mergeFlags(parseKubeProxyConfig(file(undefined), 'kp.yaml'), {}, { cpus: 1 })
  t.equal(cfg.tundra.icmpRateLimit, undefined)
})

t.test('one half given: the other is Linux default', async t => {
  const a = mergeFlags(parseKubeProxyConfig(file({ icmpRateLimit: { perSecond: 0 } }), 'kp.yaml'), {}, { cpus: 1 })
  t.same(a.tundra.icmpRateLimit, { perSecond: 0, burst: 50 })
  const b = mergeFlags(parseKubeProxyConfig(file({ icmpRateLimit: { burst: 7 } }), 'kp.yaml'), {}, { cpus: 1 })
  t.same(b.tundra.icmpRateLimit, { perSecond: 1000, burst: 7 })
})

t.test('out of range or unknown fields are refused, naming the field', async t => {
  t.throws(() => parseKubeProxyConfig(file({ icmpRateLimit: { perSecond: -1 } }), 'kp.yaml'), ConfigError)
  t.throws(() => parseKubeProxyConfig(file({ icmpRateLimit: { perSecond: 1, bursts: 2 } }), 'kp.yaml'), /icmpRateLimit\.bursts/)
})
