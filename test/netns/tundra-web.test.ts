// The live web view in a real browser: a seed lab whose agent serves the view (TUNDRA_WEB_ADDR, inherited by the
// lab's agents) on 127.0.0.1:9099 inside the node's namespace; after curl traffic from pod-client, headless Chromium
// run in that namespace loads the page and its DOM shows the seed's service, its endpoints and non-zero counters.
// A screenshot is saved to bench/out/web-view.png. Chromium is killed by PID on timeout.
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip, run } from '../helpers/netns'
import { labDown, labExec, labUp, loadLabState } from '../../src/lab/index'

const root = join(__dirname, '..', '..')
const SEED = join(root, 'examples/seed/seed.yaml')
const WEB = '127.0.0.1:9099'
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare', 'chromium')

/** Runs headless Chromium in `ns`; kills it (by PID) after `timeoutMs`. */
function chromium(ns: string, args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, 'chromium', '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', d => {
      stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', d => {
      stderr += d
    })
    const timer = setTimeout(() => {
      // its own process group: chromium's helpers go with it
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
    }, timeoutMs)
    child.once('error', err => {
      clearTimeout(timer)
      reject(err)
    })
    child.once('close', code => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

t.test('seed lab: Chromium shows the services, endpoints and live counters', { ...skip, timeout: 180_000 }, async t => {
  const name = `wv${process.pid.toString(36)}`
  const before = process.env['TUNDRA_WEB_ADDR']
  process.env['TUNDRA_WEB_ADDR'] = WEB
  t.teardown(async () => {
    if (before === undefined) delete process.env['TUNDRA_WEB_ADDR']
    else process.env['TUNDRA_WEB_ADDR'] = before
    await labDown(name, { log: () => {} })
  })
  const status = await labUp({ files: [SEED], name, nodes: 1, dataplane: 'tundra', log: () => {}, readyTimeoutMs: 30_000 })
  const ns = loadLabState(name).nodes[0]!.ns
  for (let i = 0; i < 5; i++) {
    const r = await labExec({ name, target: { pod: 'pod-client' }, cmd: ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://nginx-pod08:8080/'] })
    t.equal(r.stdout, '200', `curl ${i}`)
  }

  // the JSON the page polls, from the node's namespace (the view listens on its loopback only)
  const api = await run(['ip', 'netns', 'exec', ns, 'curl', '-s', `http://${WEB}/api/state`])
  const state = JSON.parse(api.stdout) as {
    services: { service: string; newConnections: number; endpoints: { endpoint: string }[] }[]
    dns: { requests: number }
  }
  const seed = state.services.find(s => s.service === 'default/nginx-pod08')
  t.ok(seed, 'the seed service is in /api/state')
  t.equal(seed?.newConnections, 5, 'five connections counted')
  t.equal(seed?.endpoints.length, 2, 'two endpoints')
  t.ok(state.dns.requests > 0, 'DNS queries counted')
  // not on the node network address, nor in the root namespace
  const remote = await run(['ip', 'netns', 'exec', ns, 'curl', '-s', '-m', '2', `http://${status.nodes[0]!.ip}:9099/`])
  t.not(remote.code, 0, 'not served on the node address')

  const dir = mkdtempSync(join(tmpdir(), 'tundra-web-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const url = `http://${WEB}/`
  const dom = await chromium(ns, [`--user-data-dir=${join(dir, 'profile')}`, '--virtual-time-budget=5000', '--dump-dom', url])
  t.equal(dom.code, 0, dom.stderr.slice(-500))
  t.match(dom.stdout, '<td>default/nginx-pod08 (TCP)</td>', "the seed's service port")
  t.match(dom.stdout, 'ClusterIP 10.96.125.237:8080', 'its ClusterIP')
  for (const e of seed?.endpoints ?? []) t.match(dom.stdout, `<td>${e.endpoint}</td>`, `endpoint ${e.endpoint}`)
  // the service row's new-connection counter, as rendered by the page
  t.match(
    dom.stdout,
    /<tr class="svc"><td>default\/nginx-pod08 \(TCP\)<\/td><td>[^<]*<\/td><td>[^<]*<\/td><td class="n">[1-9]\d*<\/td><td class="n">5<\/td>/,
    'packets and new connections',
  )
  t.match(dom.stdout, /<span id="status" class="">updated /, 'the page polled /api/state')
  t.match(dom.stdout, /<td>NOERROR<\/td><td class="n">[1-9]/, 'DNS answers by rcode')

  const out = join(root, 'bench/out')
  if (!existsSync(out)) mkdirSync(out, { recursive: true })
  const png = join(out, 'web-view.png')
  const shot = await chromium(ns, [
    `--user-data-dir=${join(dir, 'profile2')}`,
    '--virtual-time-budget=5000',
    '--window-size=1280,900',
    `--screenshot=${png}`,
    url,
  ])
  t.equal(shot.code, 0, shot.stderr.slice(-500))
  t.ok(existsSync(png), `screenshot saved: ${png}`)
})
