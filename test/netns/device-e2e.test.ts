// The first end-to-end path: client → node → server where the node's kernel hands every forwarded packet to a TUN
// and a JS reflector (test/netns/fixtures/reflector.ts) writes it straight back. Proves ping, HTTP, a 100 MB
// transfer and batching through the real device, with offloads (vnet header + TSO/USO) on and off.
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, openSync, writeSync, closeSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { netnsSkip, topology, waitFor, type Topology } from '../helpers/netns'
import { fixtureCommand } from './fixtures/launch'

const BIG_MB = 100
const TABLE = '100'

interface Stats {
  event: string
  batches: number
  packets: number
  bytes: number
  writes: number
  writeErrors: number
  avgPacketsPerBatch: number
  slabWaits: number
  final?: boolean
  [k: string]: unknown
}

/** JSON lines from a fixture's stdout, awaited one event at a time. */
class Lines {
  private readonly seen: Record<string, unknown>[] = []
  private waiters: { event: string; resolve: (v: Record<string, unknown>) => void }[] = []
  private buf = ''
  stderr = ''
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => {
      this.buf += d.toString()
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i)
        this.buf = this.buf.slice(i + 1)
        let obj: Record<string, unknown>
        try {
          obj = JSON.parse(line) as Record<string, unknown>
        } catch {
          continue
        }
        const w = this.waiters.find(x => x.event === obj['event'] || obj['event'] === 'error')
        if (w) {
          this.waiters = this.waiters.filter(x => x !== w)
          w.resolve(obj)
        } else this.seen.push(obj)
      }
    })
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString()
    })
  }

  next(event: string, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const i = this.seen.findIndex(o => o['event'] === event || o['event'] === 'error')
    if (i >= 0) return Promise.resolve(this.seen.splice(i, 1)[0]!)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${event} from fixture in ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs)
      const done = (v: Record<string, unknown>): void => {
        clearTimeout(timer)
        resolve(v)
      }
      this.waiters.push({ event, resolve: done })
      this.child.once('exit', code => {
        clearTimeout(timer)
        reject(new Error(`fixture exited ${code} waiting for ${event}; stderr: ${this.stderr}`))
      })
    })
  }

  async stats(): Promise<Stats> {
    const p = this.next('stats')
    this.child.stdin?.write('stats\n')
    return p as unknown as Promise<Stats>
  }
}

/** 100 MB of random bytes in the web root, with its sha256. */
function makeBigFile(path: string): string {
  const h = createHash('sha256')
  const fd = openSync(path, 'w')
  try {
    for (let i = 0; i < BIG_MB; i++) {
      const chunk = randomBytes(1 << 20)
      h.update(chunk)
      writeSync(fd, chunk)
    }
  } finally {
    closeSync(fd)
  }
  return h.digest('hex')
}

function nginxConf(dir: string, listen: string): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  sendfile on;
  server { listen ${listen}; root ${dir}/www; }
}
`
}

async function plumb(topo: Topology): Promise<{ client: string; node: string; server: string }> {
  const client = await topo.ns('client')
  const node = await topo.ns('node')
  const server = await topo.ns('server')
  await topo.veth(client, 'eth0', node, 'vc')
  await topo.veth(server, 'eth0', node, 'vs')
  await topo.addr(client, 'eth0', '10.0.1.2/24')
  await topo.addr(node, 'vc', '10.0.1.1/24')
  await topo.addr(node, 'vs', '10.0.2.1/24')
  await topo.addr(server, 'eth0', '10.0.2.2/24')
  await topo.ip(client, 'route', 'add', 'default', 'via', '10.0.1.1')
  await topo.ip(server, 'route', 'add', 'default', 'via', '10.0.2.1')
  await topo.sysctl(node, 'net.ipv4.ip_forward', '1')
  // Packets come back from the TUN with sources that route via the veths: no reverse-path filtering.
  await topo.sysctl(node, 'net.ipv4.conf.all.rp_filter', '0')
  await topo.sysctl(node, 'net.ipv4.conf.default.rp_filter', '0')
  return { client, node, server }
}

/** Steers everything arriving on the two veths into the TUN; what the TUN writes back uses the main table. */
async function steer(topo: Topology, node: string, tun: string): Promise<void> {
  await topo.sysctl(node, `net.ipv4.conf.${tun}.rp_filter`, '0')
  await topo.ip(node, 'route', 'add', 'default', 'dev', tun, 'table', TABLE)
  await topo.ip(node, 'rule', 'add', 'pref', '100', 'iif', 'vc', 'lookup', TABLE)
  await topo.ip(node, 'rule', 'add', 'pref', '101', 'iif', 'vs', 'lookup', TABLE)
}

t.test('client → node (TUN reflector) → server', netnsSkip('ping', 'curl', 'iperf3', 'nginx', 'sha256sum', 'bash', 'tc'), async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-device-e2e-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'www'))
  mkdirSync(join(dir, 'tmp'))
  const body = `hello from the server namespace ${process.pid}\n`
  writeFileSync(join(dir, 'www', 'hello.txt'), body)
  const bigSum = makeBigFile(join(dir, 'www', 'big.bin'))
  const report: Record<string, unknown> = {}

  // The reader thread with and without offloads, and the inline reader (the JS thread polls the TUN) with them.
  for (const [offloads, io] of [
    [true, 'thread'],
    [false, 'thread'],
    [true, 'inline'],
  ] as const) {
    const mode = `offloads ${offloads ? 'on' : 'off'}, io ${io}`
    await t.test(mode, async t => {
      const topo = topology(t, `off${offloads ? 1 : 0}${io === 'inline' ? 'i' : ''}`)
      const { client, node, server } = await plumb(topo)

      const tunOpts = { name: 'tun0', vnetHdr: offloads, offloads, txqueuelen: 1000, io, ...(io === 'inline' ? { busyPollUs: 50 } : {}) }
      const cmd = fixtureCommand('reflector', node, [JSON.stringify(tunOpts)])
      const refl = topo.spawn(node, cmd, { stdio: ['pipe', 'pipe', 'pipe'] })
      const out = new Lines(refl)
      const ready = await out.next('ready')
      t.equal(ready['event'], 'ready', `reflector is up: ${JSON.stringify(ready)}`)
      if (ready['event'] !== 'ready') return
      const accepted = ready['offloadsAccepted'] as { tso4: boolean; tso6: boolean; flags: number }
      if (offloads) t.ok(accepted.tso4 && accepted.tso6, `TSO accepted (flags 0x${accepted.flags.toString(16)})`)
      else t.equal(accepted.flags, 0, 'no offloads without a vnet header')
      await steer(topo, node, String(ready['name']))
      const qdisc = await topo.exec(node, ['tc', 'qdisc', 'show', 'dev', String(ready['name'])])
      t.match(qdisc.stdout, /^qdisc noqueue /, 'the TUN has no qdisc: its driver never stops the queue, so one only costs')

      // nginx in the server namespace; readiness checked from inside that namespace (no TUN on that path).
      writeFileSync(join(dir, `nginx-${offloads}-${io}.conf`), nginxConf(dir, '10.0.2.2:8080'))
      topo.spawn(server, ['nginx', '-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, `nginx-${offloads}-${io}.conf`)])
      await waitFor('nginx', async () => (await topo.exec(server, ['curl', '-sf', 'http://10.0.2.2:8080/hello.txt'])).code === 0)

      const s0 = await out.stats()
      const ping = await topo.exec(client, ['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.0.2.2'], { timeoutMs: 15_000 })
      t.equal(
        ping.code,
        0,
        `ping -c 3 10.0.2.2: ${ping.stdout
          .split('\n')
          .filter(l => l.includes('received'))
          .join('')}`,
      )
      const s1 = await out.stats()
      t.ok(s1.packets - s0.packets >= 6, `the echo requests and replies went through the TUN (${s1.packets - s0.packets} packets)`)

      const hello = await topo.exec(client, ['curl', '-sS', '--max-time', '10', 'http://10.0.2.2:8080/hello.txt'])
      t.equal(hello.code, 0, `curl exited 0 ${hello.stderr}`)
      t.equal(hello.stdout, body, 'curl gets the body nginx serves')

      const big = await topo.exec(
        client,
        [
          'bash',
          '-o',
          'pipefail',
          '-c',
          `curl -sS --fail --max-time 120 -w '%{stderr}%{speed_download} %{size_download}\\n' http://10.0.2.2:8080/big.bin | sha256sum`,
        ],
        { timeoutMs: 150_000 },
      )
      t.equal(big.code, 0, `100 MB download exited 0 ${big.stderr}`)
      t.equal(big.stdout.split(' ')[0], bigSum, `${BIG_MB} MB arrive intact (sha256)`)
      const [speed, size] = big.stderr.trim().split('\n').pop()!.split(' ').map(Number)
      t.equal(size, BIG_MB << 20, 'every byte arrived')
      const s2 = await out.stats()
      const gbps = ((speed ?? 0) * 8) / 1e9
      const tcpBatch = (s2.packets - s1.packets) / Math.max(1, s2.batches - s1.batches)
      const tcpAvgBytes = (s2.bytes - s1.bytes) / Math.max(1, s2.packets - s1.packets)
      t.ok(s2.writes > s1.writes, 'the reflector wrote packets back')
      if (offloads) t.ok(tcpAvgBytes > 3000, `super-packets arrive through the TUN (average ${tcpAvgBytes.toFixed(0)} bytes)`)
      else t.ok(tcpAvgBytes <= 1500, `MTU-sized packets without offloads (average ${tcpAvgBytes.toFixed(0)} bytes)`)

      // UDP flood: the JS side falls behind, so each crossing must carry many packets.
      const iperf = topo.spawn(server, ['iperf3', '-s', '-1', '-B', '10.0.2.2', '-p', '5201'])
      await waitFor('iperf3 server', async () => (await topo.exec(server, ['ss', '-Hltn', 'sport = :5201'])).stdout.includes('5201'))
      const s3 = await out.stats()
      const flood = await topo.exec(client, ['iperf3', '-c', '10.0.2.2', '-p', '5201', '-u', '-b', '0', '-l', '64', '-t', '2', '-J'], { timeoutMs: 30_000 })
      const s4 = await out.stats()
      await topo.stop(iperf)
      t.equal(flood.code, 0, `iperf3 UDP flood ran ${flood.code === 0 ? '' : flood.stdout.slice(0, 400) + flood.stderr}`)
      const floodBatch = (s4.packets - s3.packets) / Math.max(1, s4.batches - s3.batches)
      t.ok(floodBatch > 8, `under a UDP flood each native→JS crossing carries > 8 packets (${floodBatch.toFixed(1)})`)
      let udp: Record<string, unknown> = {}
      try {
        const j = JSON.parse(flood.stdout) as { end: { sum: { packets: number; lost_percent: number; seconds: number } } }
        udp = { sentPps: Math.round(j.end.sum.packets / j.end.sum.seconds), lostPercent: Number(j.end.sum.lost_percent.toFixed(1)) }
      } catch {
        /* informative only */
      }

      // SIGTERM: the reflector closes the TUN (joining its reader thread) and exits promptly.
      const t0 = Date.now()
      const final = out.next('stats')
      await topo.stop(refl, 5000)
      const exitMs = Date.now() - t0
      const last = (await final) as unknown as Stats
      t.ok(last.final, 'final stats on SIGTERM')
      t.equal(refl.exitCode, 0, 'reflector exits 0 on SIGTERM')
      t.ok(exitMs < 2000, `reflector exits promptly on SIGTERM (${exitMs} ms)`)
      t.equal(last.writeErrors, 0, 'no write errors')
      if (io === 'inline') {
        t.equal(last.writes, last.packets, 'inline: every packet read was written back, on the JS thread')
        if (cpus().length > 1) t.ok(Number(last['busyPolls']) > 0, `inline: it kept polling after packets (${String(last['busyPolls'])} empty reads)`)
      } else {
        t.equal(last['writeDropped'], 0, 'nothing dropped waiting for room in the write queue')
        t.equal(last['writeBacklog'], 0, 'the queue thread wrote everything before the reflector exited')
      }

      report[mode] = {
        curlGbps: Number(gbps.toFixed(2)),
        tcpPacketsPerBatch: Number(tcpBatch.toFixed(1)),
        tcpAvgPacketBytes: Math.round(tcpAvgBytes),
        udpFloodPacketsPerBatch: Number(floodBatch.toFixed(1)),
        udpFloodPacketsThroughTun: s4.packets - s3.packets,
        ...udp,
        slabWaits: last.slabWaits,
        writeCopied: last['writeCopied'],
        writeWaits: last['writeWaits'],
        exitMs,
        total: { batches: last.batches, packets: last.packets, avgPacketsPerBatch: Number(last.avgPacketsPerBatch.toFixed(1)) },
      }
    })
  }
  t.comment(`device e2e measurements: ${JSON.stringify(report)}`)
})
