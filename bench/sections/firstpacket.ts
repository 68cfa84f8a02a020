// Section 2b, first-packet cost at scale: a lab with 20 000 services in front of two nginx pods, new HTTP connections
// per second to the service kube-proxy's KUBE-SERVICES tests first and to the one it tests last. With iptables every
// new connection to the last walks ~20 000 rules; tundra (and nftables' verdict map) look it up in one probe.
// One lab per contender, all up together, rounds interleaved; tundra's lab can be handed on to the dns section.
import { compileLab } from '../../src/lab/compile'
import { join } from 'node:path'
import { repoRoot } from '../../src/lab/up'
import { haveCommand } from '../../src/netns/netns'
import type { LabState } from '../../src/lab/index'
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

const NAMES: Record<Contender, string> = { tundra: 'bftundra', 'iptables-nft': 'bfiptnft', 'iptables-legacy': 'bfiptleg', nftables: 'bfnft', cref: 'bfcref' }
export const FIRSTPACKET_LAB_NAMES = Object.values(NAMES)

/** The services of the first-packet labs: 1 000 in --quick, 20 000 otherwise (dns uses the same). */
export const scaleServices = (quick: boolean): number => (quick ? 1000 : 20_000)

/** A lab left up for a later section (dns reuses the tundra one): whoever takes it brings it down. */
export interface KeptLab {
  readonly name: string
  readonly state: LabState
  readonly manifest: string
  readonly services: number
}

export interface FirstPacketOptions {
  readonly quick: boolean
  readonly rounds: number
  readonly seconds: number
  readonly contenders: readonly Contender[]
  readonly workDir: string
  /** leave tundra's lab up and hand it back (for dns) instead of bringing it down */
  readonly keepTundra?: boolean
}

export async function runFirstPacket(o: FirstPacketOptions): Promise<{ result: FirstPacketResult; kept?: KeptLab }> {
  const n = scaleServices(o.quick)
  const manifest = writeScaleManifest(o.workDir, n)
  const cluster = compileLab({ name: 'bfplan', files: [manifest], nodes: 1, dataplane: 'none' }).cluster
  const { first, last } = firstAndLastService(cluster, 'node1', '172.18.0.11')
  progress('firstpacket', `${n} services; KUBE-SERVICES tests ${first} first and ${last} last`)
  const tool = join(repoRoot(), 'dist', 'bench', 'tools', 'connect.js')
  const results: FirstPacketContender[] = o.contenders.map(c => ({
    contender: c,
    available: false,
    first: [],
    last: [],
    firstMedian: NaN,
    lastMedian: NaN,
    lastOverFirst: NaN,
    labUpSeconds: NaN,
  }))
  const clients = new Map<Contender, { first: string; last: string }>()
  const states = new Map<Contender, LabState>()
  let kept: KeptLab | undefined
  const conn = async (client: string, vip: string, secs: number): Promise<number> => {
    const res = await nsRun(
      client,
      [process.execPath, tool, '--host', vip, '--port', '80', '--seconds', String(secs), '--concurrency', '16'],
      (secs + 30) * 1000,
    )
    const rep = parseConnect(res.stdout)
    return rep && rep.connections > 0 ? rep.perSecond : NaN
  }
  try {
    // At scale, two lanes: tundra's lab (its agent compiling the services is most of its bring-up) next to the kernel
    // labs one after another (each loads its whole rule set in one restore, CPU-bound: two at once on 2 CPUs only slow
    // each other, and the lab's restore has a time limit). Small (--quick) labs all come up at once. All stay up: the
    // rounds interleave the contenders.
    progress('firstpacket', `bringing up ${o.contenders.join(', ')} with ${n} services`)
    const bringUp = async (r: FirstPacketContender): Promise<void> => {
      const c = r.contender
      if (c === 'iptables-legacy' && !haveCommand('iptables-legacy-restore')) {
        r.error = 'iptables-legacy-restore is not installed'
        return
      }
      const name = NAMES[c]
      try {
        const t0 = Date.now()
        const st = await benchLabUp({
          name,
          files: [manifest],
          section: 'firstpacket',
          readyTimeoutMs: 240_000,
          keepLogsIn: o.workDir,
          dataplane: c === 'tundra' ? 'tundra' : c === 'nftables' ? 'nftables' : 'iptables',
          ...(c === 'iptables-legacy' ? { iptablesBackend: 'legacy' as const } : c === 'iptables-nft' ? { iptablesBackend: 'nft' as const } : {}),
        })
        r.labUpSeconds = (Date.now() - t0) / 1000
        // one client per service: see SCALE_CLIENT_LAST_IP
        const client = { first: st.pods.find(p => p.name === 'client')!.ns, last: st.pods.find(p => p.name === 'client-last')!.ns }
        for (const ns of [client.first, client.last]) {
          await nsRun(ns, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=10000 65000'], 10_000)
        }
        if (!((await conn(client.last, last, 0.5)) > 0)) throw new Error(`no connection to ${last}:80 worked`)
        clients.set(c, client)
        states.set(c, st)
        r.available = true
        progress('firstpacket', `${c} is up (${r.labUpSeconds.toFixed(0)} s)`)
      } catch (err) {
        r.error = errorSummary(err)
        progress('firstpacket', `${c}: not measured: ${r.error}`)
        await benchLabDown(name)
      }
    }
    const lane = async (rs: FirstPacketContender[]): Promise<void> => {
      for (const r of rs) await bringUp(r)
    }
    if (n >= 10_000) await Promise.all([lane(results.filter(r => r.contender === 'tundra')), lane(results.filter(r => r.contender !== 'tundra'))])
    else await Promise.all(results.map(bringUp))
    const live = results.filter(r => r.available)
    for (let round = 0; round < o.rounds; round++) {
      // rotate the contenders and alternate first/last each round, as e2e does
      const order = live.map((_, i) => live[(i + round) % live.length]!)
      for (const r of order) {
        for (const which of round % 2 === 0 ? (['first', 'last'] as const) : (['last', 'first'] as const)) {
          const v = await conn(clients.get(r.contender)![which], which === 'first' ? first : last, o.seconds)
          r[which].push(v)
          progress('firstpacket', `round ${round + 1}/${o.rounds} ${r.contender.padEnd(15)} ${which} service ${v.toFixed(0)} new conn/s`)
        }
      }
    }
    const t = states.get('tundra')
    if (o.keepTundra && t) kept = { name: NAMES.tundra, state: t, manifest, services: n }
  } finally {
    for (const c of o.contenders) if (!(kept && c === 'tundra')) await benchLabDown(NAMES[c])
  }
  for (const r of results) {
    r.firstMedian = median(r.first)
    r.lastMedian = median(r.last)
    r.lastOverFirst = ratio(r.lastMedian, r.firstMedian)
  }
  return { result: { services: n, firstVip: first, lastVip: last, seconds: o.seconds, rounds: o.rounds, contenders: results }, ...(kept ? { kept } : {}) }
}
