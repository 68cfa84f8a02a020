// IPVS schedulers and IPVS mode with real clients (issue 17's acceptance).
//  1. A lab (tundra agent) with 3 netexec endpoints behind Services that pick their scheduler by label: rr answers
//     in exact rotation, sh keeps each client on one endpoint, lc sends new connections to the endpoint that has no
//     long-lived one open.
//  2. `tundra run` with `mode: ipvs` (run.yaml's one-node lab): the ClusterIP answers ping with port unreachable and
//     rejects a port it does not serve (kube-proxy's KUBE-IPVS-FILTER), ipvs.tcpTimeout is the established timeout
//     `tundra conntrack` shows, `tundra dump --format ipvsadm` reports the live connection, and when the endpoint
//     leaves, the held connection goes on (graceful termination) while ipvsadm shows the server at weight 0.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { PY, Streamed, tundraLab } from '../fixtures/tundra/lab'
import { readObjects, writeObject } from '../../src/lab/objects'
import type { EndpointSlice } from '../../src/k8s/types'
import { execArgv } from '../../src/lab/index'
import { CLI, runLab, until } from './fixtures/run-lab'

const skip = netnsSkip('curl', 'unshare', 'ping', 'python3')

const WEB = ['10.100.85.11', '10.100.85.12', '10.100.85.13']
const RR = '10.96.7.10'
const SH = '10.96.7.11'
const LC = '10.96.7.12'

const manifest = (): string => {
  const svc = (name: string, ip: string, sched: string): string => `---
apiVersion: v1
kind: Service
metadata: {name: ${name}, labels: {tundra.io/scheduler: ${sched}}}
spec:
  clusterIP: ${ip}
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
`
  return `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {tundra.dev/pod-ips: "${WEB.join(',')}"}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.47, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, annotations: {tundra.dev/pod-ip: 10.100.85.50}}
spec: {containers: [{name: shell, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client2, annotations: {tundra.dev/pod-ip: 10.100.85.51}}
spec: {containers: [{name: shell, image: busybox}]}
${svc('web-rr', RR, 'rr')}${svc('web-sh', SH, 'sh')}${svc('web-lc', LC, 'lc')}`
}

const answers = (out: string): string[] =>
  out
    .split('\n')
    .filter(l => l !== '')
    .map(l => l.split('\t')[1] ?? '')

/**
 * Opens `n` keep-alive connections, one request each, prints the backend of each ("held <name>"), then for every line
 * on stdin asks each connection again ("again <name>" or "again ERR <why>"); holds them until stdin ends.
 */
const HOLD = `
import socket, sys
REQ = b"GET /hostname HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
def ask(s):
    s.sendall(REQ)
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    n = int([l.split(b":")[1] for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += s.recv(4096)
    return body.decode()
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 80), timeout=5)
    print("held", ask(s), flush=True)
    socks.append(s)
print("ready", flush=True)
for _ in sys.stdin:
    for s in socks:
        try:
            print("again", ask(s), flush=True)
        except Exception as e:
            print("again ERR", type(e).__name__, flush=True)
`

t.test('IPVS schedulers by Service label, real clients (tundra agent lab)', { ...skip, timeout: 180_000 }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tt-ipvs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'ipvs.yaml'), manifest())
  const lab = await tundraLab(t, { prefix: 'tv', files: [join(dir, 'ipvs.yaml')], nodes: 1 })
  const web = lab.podsOf('web').sort((a, b) => lab.podIP(a).localeCompare(lab.podIP(b)))
  t.equal(web.length, 3)

  await t.test('rr: 30 connections, exactly 10 per endpoint, in rotation', async t => {
    const r = await lab.tool('client', ['http', RR, '80', '/hostname', '30'], { timeoutMs: 60_000 })
    t.equal(r.code, 0, r.stderr)
    const a = answers(r.stdout)
    t.equal(a.length, 30)
    for (const w of web) t.equal(a.filter(x => x === w).length, 10, `${w}: 10 of 30`)
    for (let i = 3; i < 30; i++) t.equal(a[i], a[i - 3], `answer ${i} repeats answer ${i - 3}`)
  })

  await t.test('sh: each client always lands on one endpoint', async t => {
    for (const client of ['client', 'client2']) {
      const r = await lab.tool(client, ['http', SH, '80', '/hostname', '20'], { timeoutMs: 60_000 })
      t.equal(r.code, 0, r.stderr)
      const a = answers(r.stdout)
      t.equal(a.length, 20)
      t.equal(new Set(a).size, 1, `${client}: one endpoint (${[...new Set(a)].join(', ')})`)
      t.ok(web.includes(a[0]!), `${client}: an endpoint of the service`)
    }
  })

  await t.test('lc: with 2 long connections open, new ones go to the third endpoint', async t => {
    const hold = lab.stream('client', [PY, '-c', HOLD, LC, '2'])
    await hold.line(/^ready$/, 15_000)
    const held = hold.lines.filter(l => l.startsWith('held ')).map(l => l.slice(5))
    t.equal(new Set(held).size, 2, `the two held connections are on two endpoints (${held.join(', ')})`)
    const free = web.find(w => !held.includes(w))!
    const r = await lab.tool('client', ['http', LC, '80', '/hostname', '6'], { timeoutMs: 60_000 })
    t.equal(r.code, 0, r.stderr)
    t.same(answers(r.stdout), Array(6).fill(free), `each short connection (closed before the next) goes to ${free}`)
    hold.stop()
  })
})

t.test('tundra run in mode ipvs: ping, unserved ports, ipvs.tcpTimeout, ipvsadm', { ...skip, timeout: 180_000 }, async t => {
  let log = ''
  const { state, procs, pod } = await runLab(t, 'ti', () => log)
  const sock = join(state.dir, 'ipvs-control.sock')
  const config = join(state.dir, 'kube-proxy.yaml')
  writeFileSync(
    config,
    `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
hostnameOverride: node1
clusterCIDR: 10.100.0.0/16
mode: ipvs
ipvs: {scheduler: rr, tcpTimeout: 7m, syncPeriod: 2s, minSyncPeriod: 0s, strictARP: true}
tundra:
  dns: {upstreams: [172.18.0.53]}
  snapshot: {path: ${join(state.dir, 'ipvs.conntrack')}}
  control: ${sock}
`,
  )
  const [file, ...args] = execArgv(state, { node: 'node1' }, [process.execPath, CLI, 'run', '-f', state.manifests!, '--config', config])
  const child = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    log += d
  })
  procs.push(child)
  const cli = (cmd: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      const c = spawn(process.execPath, [CLI, ...cmd, '--socket', sock], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
      c.on('close', code => (code === 0 ? resolve(out) : reject(new Error(`tundra ${cmd.join(' ')}: exit ${code}`))))
    })
  await until(
    'tundra run to answer on the ClusterIP',
    async () => (await pod('cli', ['curl', '-sS', '-m', '3', 'http://10.96.0.50:5003/hostname'])).stdout === 'srv',
    60_000,
  )
  t.match(log, /ipvs\.strictARP: true has no effect \(tundra binds no Service IP/, 'strictARP: the warning says why')

  const ping = await pod('cli', ['ping', '-c', '1', '-W', '2', '10.96.0.50'])
  t.not(ping.code, 0, 'no echo reply')
  t.match(ping.stdout, /Destination Port Unreachable/, 'ICMP port unreachable, as KUBE-IPVS-FILTER REJECTs it')

  const unserved = await pod('cli', ['curl', '-sS', '-m', '3', 'http://10.96.0.50:9999/'])
  t.not(unserved.code, 0)
  t.match(unserved.stderr, /Connection refused|Couldn't connect/, `an unserved port is refused at once (${unserved.stderr.trim()})`)

  const [hf, ...ha] = execArgv(state, { pod: 'cli' }, [PY, '-c', HOLD, '10.96.0.50', '1', '5003'])
  const hold = new Streamed(spawn(hf!, ha, { stdio: ['pipe', 'pipe', 'pipe'] }))
  procs.push(hold.child)
  await hold.line(/^ready$/, 15_000)
  const entries = await until(
    'the held connection in tundra conntrack',
    async () => {
      const list = JSON.parse(await cli(['conntrack', 'list', '-o', 'json'])) as { entries: { state: string; expiresIn: number }[] }
      const est = list.entries.filter(e => e.state === 'ESTABLISHED')
      return est.length > 0 ? est : undefined
    },
    20_000,
  )
  t.ok(
    entries.every(e => e.expiresIn > 400 && e.expiresIn <= 420),
    `ESTABLISHED expires within ipvs.tcpTimeout 7m (expiresIn ${entries.map(e => e.expiresIn).join(', ')})`,
  )
  const ipvsadm = await cli(['dump', '--format', 'ipvsadm'])
  t.match(ipvsadm, /TCP {2}10\.96\.0\.50:5003 rr\n {2}-> 10\.100\.\d+\.\d+:8080 +Masq +1 +[1-9]/, `ipvsadm shows the active connection:\n${ipvsadm}`)

  // Graceful termination: the only endpoint stops being ready. New connections are refused, the held one goes on.
  const manifests = state.manifests!
  const slices = [...readObjects(manifests).values()].filter(o => o.kind === 'EndpointSlice') as EndpointSlice[]
  for (const sl of slices)
    writeObject(manifests, { ...sl, endpoints: (sl.endpoints ?? []).map(e => ({ ...e, conditions: { ...e.conditions, ready: false } })) })
  await until('the endpoint to leave rotation', async () => (await pod('cli', ['curl', '-sS', '-m', '2', 'http://10.96.0.50:5003/hostname'])).code === 7)
  hold.write('\n')
  t.equal(await hold.line(/^again /, 10_000), 'again srv', 'the held connection still answers (weight 0, no reset)')
  const after = await cli(['dump', '--format', 'ipvsadm'])
  t.match(after, /TCP {2}10\.96\.0\.50:5003 rr\n {2}-> 10\.100\.\d+\.\d+:8080 +Masq +0 +1 /, `ipvsadm lists the leaving server at weight 0:\n${after}`)
  hold.stop()
})
