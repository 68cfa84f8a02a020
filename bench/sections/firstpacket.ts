// Section 2b, first-packet cost at scale: a lab with 20 000 services in front of two nginx pods, new HTTP connections
// per second to the service kube-proxy's KUBE-SERVICES tests first and to the one it tests last. With iptables every
// new connection to the last walks ~20 000 rules; tundra (and nftables' verdict map) look it up in one probe.
import { compileLab } from '../../src/lab/compile'
import { join } from 'node:path'
import { repoRoot } from '../../src/lab/up'
import { haveCommand } from '../../src/netns/netns'
import type { Contender } from '../lib/args'
import { benchLabDown, benchLabUp } from '../lib/labs'
import { firstAndLastService, writeScaleManifest } from '../lib/manifests'
import { errorSummary, progress } from '../lib/progress'
import { median, ratio } from '../lib/stats'
import { nsRun, parseConnect } from '../lib/tools'

export interface FirstPacketContender {
  readonly contender: Contender
  available: boolean
  error?: string
  readonly first: number[]
  readonly last: number[]
  firstMedian: number
  lastMedian: number
  /** last / first: 1.0 means the 20 000th service costs what the first does */
  lastOverFirst: number
  labUpSeconds: number
}

export interface FirstPacketResult {
  readonly services: number
  readonly firstVip: string
  readonly lastVip: string
  readonly seconds: number
  readonly rounds: number
  readonly contenders: FirstPacketContender[]
}

const NAMES: Record<Contender, string> = { tundra: 'bftundra', 'iptables-nft': 'bfiptnft', 'iptables-legacy': 'bfiptleg', nftables: 'bfnft' }

export async function runFirstPacket(o: { quick: boolean; rounds: number; seconds: number; contenders: readonly Contender[]; workDir: string }): Promise<FirstPacketResult> {
  const n = o.quick ? 1000 : 20_000
  const manifest = writeScaleManifest(o.workDir, n)
  const cluster = compileLab({ name: 'bfplan', files: [manifest], nodes: 1, dataplane: 'none' }).cluster
  const { first, last } = firstAndLastService(cluster, 'node1', '172.18.0.11')
  progress('firstpacket', `${n} services; KUBE-SERVICES tests ${first} first and ${last} last`)
  const tool = join(repoRoot(), 'dist', 'bench', 'tools', 'connect.js')
  const results: FirstPacketContender[] = []
  for (const c of o.contenders) {
    const r: FirstPacketContender = { contender: c, available: false, first: [], last: [], firstMedian: NaN, lastMedian: NaN, lastOverFirst: NaN, labUpSeconds: NaN }
    results.push(r)
    if (c === 'iptables-legacy' && !haveCommand('iptables-legacy-restore')) { r.error = 'iptables-legacy-restore is not installed'; continue }
    const name = NAMES[c]
    try {
      progress('firstpacket', `bringing up ${c} with ${n} services (${name})`)
      const t0 = Date.now()
      const st = await benchLabUp({
        name, files: [manifest], section: 'firstpacket', readyTimeoutMs: 180_000, keepLogsIn: o.workDir,
        dataplane: c === 'tundra' ? 'tundra' : c === 'nftables' ? 'nftables' : 'iptables',
        ...(c === 'iptables-legacy' ? { iptablesBackend: 'legacy' as const } : c === 'iptables-nft' ? { iptablesBackend: 'nft' as const } : {}),
      })
      r.labUpSeconds = (Date.now() - t0) / 1000
      const client = st.pods.find(p => p.name === 'client')!.ns
      await nsRun(client, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=10000 65000'], 10_000)
      const conn = async (vip: string, secs: number): Promise<number> => {
        const res = await nsRun(client, [process.execPath, tool, '--host', vip, '--port', '80', '--seconds', String(secs), '--concurrency', '16'], (secs + 30) * 1000)
        const rep = parseConnect(res.stdout)
        return rep && rep.connections > 0 ? rep.perSecond : NaN
      }
      if (!(await conn(last, 0.5) > 0)) throw new Error(`no connection to ${last}:80 worked`)
      r.available = true
      for (let round = 0; round < o.rounds; round++) {
        const order: ('first' | 'last')[] = round % 2 === 0 ? ['first', 'last'] : ['last', 'first']
        for (const which of order) {
          const v = await conn(which === 'first' ? first : last, o.seconds)
          r[which].push(v)
          progress('firstpacket', `round ${round + 1}/${o.rounds} ${c}: ${which} service ${v.toFixed(0)} new conn/s`)
        }
      }
    } catch (err) {
      r.error = errorSummary(err)
      progress('firstpacket', `${c}: not measured: ${r.error}`)
    } finally {
      await benchLabDown(name)
    }
    r.firstMedian = median(r.first)
    r.lastMedian = median(r.last)
    r.lastOverFirst = ratio(r.lastMedian, r.firstMedian)
  }
  return { services: n, firstVip: first, lastVip: last, seconds: o.seconds, rounds: o.rounds, contenders: results }
}
