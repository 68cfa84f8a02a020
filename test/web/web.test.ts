// The web view without a lab: its settings (off by default, loopback only unless allowed, flag over env over
// config), its routes (the page, /api/state, 404, 405) and the state a live engine gives after five connections.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readAgentConfig } from '../../src/agent/config-file'
import { agentWebSettings } from '../../src/web/settings'
import { mergeFlags, parseKubeProxyConfig } from '../../src/run/kpconfig'
import { parseWebAddr, startWebView } from '../../src/web/server'
import type { WebSource } from '../../src/web/state'
import { handshake, liveView, VIP } from '../inspect/helpers/inspect'

t.test('settings: off by default; flag over TUNDRA_WEB_ADDR over config; non-loopback refused unless allowed', async t => {
  t.equal(agentWebSettings(undefined, undefined, {}), undefined, 'off')
  t.same(agentWebSettings(undefined, { addr: '127.0.0.1:9099' }, {}), { addr: '127.0.0.1:9099', allowRemote: false })
  t.same(agentWebSettings(undefined, { addr: '127.0.0.1:9099' }, { TUNDRA_WEB_ADDR: '[::1]:9100' }), { addr: '[::1]:9100', allowRemote: false })
  t.same(agentWebSettings({ addr: '127.0.0.2:1', allowRemote: false }, { addr: '127.0.0.1:9099' }, { TUNDRA_WEB_ADDR: '[::1]:9100' }), {
    addr: '127.0.0.2:1',
    allowRemote: false,
  })
  t.throws(() => agentWebSettings(undefined, { addr: '0.0.0.0:9099' }, {}), { message: /not loopback.*--web-allow-remote/ })
  t.throws(() => parseWebAddr('10.0.0.1:9099', false), { message: /not loopback/ })
  t.same(parseWebAddr('10.0.0.1:9099', true), { host: '10.0.0.1', port: 9099 })
  t.throws(() => parseWebAddr('localhost:9099', false), { message: /expected ip:port/ })
  t.throws(() => parseWebAddr('127.0.0.1', false), { message: /expected ip:port/ })
})

t.test('routes and state: five connections through the seed service, counted per endpoint', async t => {
  const { view, engine } = liveView()
  const used = new Map<string, number>()
  for (let i = 0; i < 5; i++) {
    const ep = handshake(engine, 41000 + i)
    used.set(ep, (used.get(ep) ?? 0) + 1)
  }
  const src: WebSource = {
    ...view,
    counters: async () => ({ drop_spoofed_source: 2, nat_drop_no_endpoints: 0, conntrack_entries: 5 }),
    dnsMetrics: async () => ({ requests: 3, responses: { NOERROR: 2, NXDOMAIN: 1 } }),
  }
  const web = await startWebView(src, { addr: '127.0.0.1:0' })
  t.teardown(() => web.close())
  const base = `http://127.0.0.1:${web.address.port}`

  const page = await fetch(`${base}/`)
  t.equal(page.status, 200)
  t.match(page.headers.get('content-type'), /^text\/html/)
  const html = await page.text()
  t.match(html, "fetch('api/state'")
  t.notMatch(html, /(src|href)="?https?:/, 'nothing loaded from the network')

  const res = await fetch(`${base}/api/state`)
  t.equal(res.status, 200)
  const s = (await res.json()) as {
    node: string
    services: { service: string; frontends: string[]; newConnections: number; endpoints: { endpoint: string; connections: number; bytes: number }[] }[]
    flows: { total: number; top: { to: string }[] }
    drops: Record<string, number>
    dns: { requests: number; responses: Record<string, number> }
  }
  t.equal(s.node, 'node1')
  const svc = s.services.find(x => x.service === 'default/nginx-pod08')!
  t.same(svc.frontends, [`ClusterIP ${VIP}:8080`])
  t.equal(svc.newConnections, 5)
  for (const e of svc.endpoints) {
    t.equal(e.connections, used.get(e.endpoint) ?? 0, `${e.endpoint}: its conntrack entries`)
    if (e.connections > 0) t.ok(e.bytes > 0, `${e.endpoint}: bytes`)
  }
  t.equal(s.flows.total, 5)
  t.equal(s.flows.top.length, 5)
  t.equal(s.flows.top[0]?.to, `${VIP}:8080`)
  t.same(s.drops, { spoofed_source: 2 }, 'non-zero drops only')
  t.same(s.dns, { requests: 3, responses: { NOERROR: 2, NXDOMAIN: 1 } })

  t.equal((await fetch(`${base}/nope`)).status, 404)
  t.equal((await fetch(`${base}/api/state`, { method: 'POST' })).status, 405)
})

t.test('tundra run: --web-addr / --web-allow-remote and the tundra.web section', async t => {
  t.same(mergeFlags(undefined, {}).tundra.web, { addr: '', allowRemote: false }, 'off by default')
  t.same(mergeFlags(undefined, { webAddr: '127.0.0.1:9099' }).tundra.web, { addr: '127.0.0.1:9099', allowRemote: false })
  t.same(mergeFlags(undefined, { webAddr: '10.0.0.1:9099', webAllowRemote: true }).tundra.web, { addr: '10.0.0.1:9099', allowRemote: true })
  const file = parseKubeProxyConfig(
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\ntundra:\n  web:\n    addr: "[::1]:9099"\n',
    'kp.yaml',
  )
  t.same(mergeFlags(file, {}).tundra.web, { addr: '[::1]:9099', allowRemote: false })
  t.throws(() => parseKubeProxyConfig('apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\ntundra:\n  web:\n    port: 1\n', 'kp.yaml'))
})

t.test('agent config: a web section is checked like the rest of the file', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-web-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const base = {
    node: { name: 'n1', ip: '172.18.0.11', podCIDR: '10.100.1.0/24', uplink: 'eth0' },
    clusterCIDR: '10.100.0.0/16',
    serviceCIDR: '10.96.0.0/12',
    manifests: [],
    dns: { ip: '10.96.0.10', zone: 'cluster.local', upstreams: [] },
    tun: { name: 'tundra0', vnetHdr: true },
    vxlan: { vni: 4096, port: 4789, peers: [] },
    control: '/run/x.sock',
  }
  const write = (extra: object): string => {
    const p = join(dir, 'agent.json')
    writeFileSync(p, JSON.stringify({ ...base, ...extra }))
    return p
  }
  t.same(readAgentConfig(write({ web: { addr: '127.0.0.1:9099' } })).web, { addr: '127.0.0.1:9099' })
  t.throws(() => readAgentConfig(write({ web: { addr: 9099 } })), { message: /agent\.json: web: expected/ })
  t.throws(() => readAgentConfig(write({ web: { addr: '127.0.0.1:1', allowRemote: 'yes' } })), { message: /web: expected/ })
})
