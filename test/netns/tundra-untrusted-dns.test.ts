// Untrusted input at the cluster DNS (issue 14), end to end from a pod with real dig: a 2 000-byte answer reaches a
// `+bufsize=4096` client (it used to be written with DF and lost at the pod's MTU), CHAOS version.bind is refused
// and never reaches the upstream, and a pod opening hundreds of DNS-over-TCP connections is capped.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { PY, tundraLab } from '../fixtures/tundra/lab'

const skip = netnsSkip('dnsmasq', 'unshare', 'dig', 'python3')
const Z = 'cluster.local'
const DNS_IP = '10.96.0.10'

/** A client pod and a headless service with 120 ready endpoints: a ~1 980-byte A answer. */
function manifests(): string {
  const eps = Array.from({ length: 120 }, (_, i) => `- addresses: [10.100.202.${i + 1}]\n  conditions: {ready: true}`).join('\n')
  return [
    'apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  annotations: {tundra.dev/pod-ip: 10.100.85.50}\nspec:\n  containers:\n  - {name: shell, image: busybox, command: [sleep, infinity]}\n',
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: big\nspec:\n  clusterIP: None\n  ports:\n  - {name: http, port: 80}\n',
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nports:\n- {name: http, port: 80, protocol: TCP}\nendpoints:\n${eps}\n`,
  ].join('---\n')
}

/** Opens n TCP connections to the DNS address from the pod at once and reports how many the server closed at once. */
const HOLD = `
import socket, sys, time, select
n = int(sys.argv[1]); conns = []
for _ in range(n):
    s = socket.socket(); s.settimeout(2)
    try: s.connect(('${DNS_IP}', 53)); conns.append(s)
    except OSError: pass
time.sleep(0.5)
closed = 0
for s in conns:
    r, _, _ = select.select([s], [], [], 0)
    if r:
        try:
            if s.recv(1) == b'': closed += 1
        except OSError: closed += 1
print(len(conns), closed)
`

t.test('untrusted input at the cluster DNS', { ...skip, timeout: 180_000 }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-untrusted-dns-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'big.yaml')
  writeFileSync(file, manifests())
  const lab = await tundraLab(t, { prefix: 'tu', files: [file], nodes: 1 })
  const dig = async (...args: string[]): Promise<string> => {
    const r = await lab.pod('client', ['dig', '+time=2', '+tries=2', ...args])
    if (r.code !== 0) throw new Error(`dig ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`)
    return r.stdout
  }
  const count = (out: string): number => Number(/ANSWER: (\d+)/.exec(out)?.[1] ?? -1)
  const node = lab.state.nodes[0]!.name

  await t.test('+bufsize=4096 for a 120-endpoint headless service gets all 120 (TC, then TCP)', async t => {
    const out = await dig('+bufsize=4096', `big.default.svc.${Z}`)
    t.match(out, /status: NOERROR/)
    t.equal(count(out), 120, 'every endpoint, where the client used to get no reply at all')
    const udp = await dig('+bufsize=4096', '+ignore', `big.default.svc.${Z}`)
    t.match(udp, /flags: [a-z ]*tc/, 'the UDP reply is fitted (TC) instead of lost')
    const msg = /MSG SIZE\s+rcvd: (\d+)/.exec(udp)
    t.ok(msg !== null && Number(msg[1]) <= 1232, `UDP reply ${msg?.[1]} bytes`)
  })

  await t.test('CHAOS version.bind is refused by tundra and never forwarded upstream', async t => {
    const before = (await lab.stats(node)).dns as { upstream: { requests: number } }
    const out = await dig('CH', 'TXT', 'version.bind')
    t.match(out, /status: REFUSED/)
    t.notMatch(out, /dnsmasq/i, "the upstream's version is not revealed")
    const after = (await lab.stats(node)).dns as { upstream: { requests: number } }
    t.equal(after.upstream.requests, before.upstream.requests, 'no upstream request')
  })

  await t.test('hundreds of DNS-over-TCP connections from a pod are capped; UDP and later TCP still answer', async t => {
    const r = await lab.pod('client', [PY, '-c', HOLD, '300'], { timeoutMs: 60_000 })
    t.equal(r.code, 0, r.stderr)
    const [opened, closed] = r.stdout.trim().split(' ').map(Number) as [number, number]
    t.ok(closed >= opened - 128 && closed > 0, `${opened} opened, ${closed} closed by the server (cap 128)`)
    const dns = (await lab.stats(node)).dns as { tcp: { rejected: number; open: number } }
    t.ok(dns.tcp.rejected >= 300 - 128, `rejected ${dns.tcp.rejected}`)
    t.match(await dig('+ignore', `big.default.svc.${Z}`), /status: NOERROR/, 'UDP still answers')
    t.equal(count(await dig('+tcp', `big.default.svc.${Z}`)), 120, 'and TCP, once the holder is gone')
  })
})
