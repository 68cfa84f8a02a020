// /configz is a KubeProxyConfiguration, and bindAddressHardFail decides whether a busy port is fatal.
import t from 'tap'
import { get } from 'node:http'
import { createServer, type AddressInfo } from 'node:net'
import { TundraMetrics } from '../../src/metrics/registry'
import { startServers } from '../../src/metrics/server'
import { mergeFlags, parseKubeProxyConfig } from '../../src/run/kpconfig'
import { kubeProxyConfigurationOf } from '../../src/run/kpshape'
import type { SyncHealth } from '../../src/run/sync'

const health = (): SyncHealth => ({ healthy: true }) as unknown as SyncHealth

function fetchJson(port: number, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, res => {
      let body = ''
      res.on('data', (c: Buffer) => {
        body += c.toString()
      })
      res.on('end', () => resolve(JSON.parse(body)))
    }).on('error', reject)
  })
}

t.test('/configz: the running configuration in KubeProxyConfiguration shape, and it reads back as a config file', async t => {
  const cfg = mergeFlags(undefined, { masqueradeAll: true, clusterCidr: '10.244.0.0/16,fd00:244::/56', v: '2', iptablesLocalhostNodeports: 'false' })
  const srv = await startServers({
    metricsBindAddress: '127.0.0.1:0',
    healthzBindAddress: '127.0.0.1:0',
    metrics: new TundraMetrics({ defaultMetrics: false }),
    health,
    configz: () => kubeProxyConfigurationOf(cfg),
    log: () => {},
  })
  t.teardown(() => srv.close())
  const body = (await fetchJson(srv.metrics.port, '/configz')) as { 'kubeproxy.config.k8s.io': Record<string, unknown> }
  const kp = body['kubeproxy.config.k8s.io']
  t.equal(kp['kind'], 'KubeProxyConfiguration')
  t.equal(kp['apiVersion'], 'kubeproxy.config.k8s.io/v1alpha1')
  t.equal(kp['clusterCIDR'], '10.244.0.0/16,fd00:244::/56')
  t.match(kp['iptables'], { masqueradeAll: true, localhostNodePorts: false, masqueradeBit: 14, syncPeriod: '30s' })
  t.match(kp['logging'], { format: 'text', verbosity: 2 })
  const back = mergeFlags(parseKubeProxyConfig(JSON.stringify(kp), 'configz.json'), {})
  t.same(
    { ...back, file: undefined, warnings: [] },
    { ...cfg, mode: 'iptables', file: undefined, warnings: [] },
    'parsing /configz gives the same configuration (mode defaulted)',
  )
})

t.test('bindAddressHardFail: a busy port is fatal when true, logged and skipped when false', async t => {
  const busy = createServer()
  await new Promise<void>(r => busy.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    busy.close()
  })
  const port = (busy.address() as AddressInfo).port
  const base = { metricsBindAddress: '127.0.0.1:0', healthzBindAddress: `127.0.0.1:${port}`, metrics: new TundraMetrics({ defaultMetrics: false }), health }
  await t.rejects(startServers({ ...base, hardFail: true, log: () => {} }))
  const lines: string[] = []
  const srv = await startServers({ ...base, hardFail: false, log: l => lines.push(l) })
  t.teardown(() => srv.close())
  t.equal(srv.healthz.port, 0, 'no health server')
  t.ok(srv.metrics.port > 0, 'the metrics server still runs')
  t.match(lines.join('\n'), /bindAddressHardFail is false/)
})
