// Section 5, endpoint churn: at 1 000 / 10 000 / 20 000 services (--quick: 1 000), 10 endpoint changes per second
// (scale up, scale down, readiness flips) while a probe sends 1 000 UDP round trips per second through a ClusterIP
// (each a new flow; bench/tools/churn-probe.ts) and dnsperf queries the cluster DNS. Per contender: the probe's
// latency with churn against the same run without it (added p50 / p99.9 / max), probes and DNS answers lost, and
// change-to-dataplane time (kube-proxy's network_programming_duration): every few changes the probed service's ready
// endpoint flips to the other echo pod, and the time from that change to the send of the first probe the new pod
// answers is one sample (resolution: one probe interval, 1 ms). The next flip waits until the last one was seen.
//
// Contenders: tundra's agent, driven today by rewriting the manifests file it watches (it reloads everything: the
// numbers show that); the kernel driven as kube-proxy drives it, a sync loop that, whenever changes are pending and
// no sync runs, writes them as one partial update (`iptables-restore --noflush` of the changed chains plus the ones
// kube-proxy always rewrites, or one `nft -f` transaction; lib/ruleset-delta.ts), with no minSyncPeriod (its best
// case). How a change reaches a contender is `applyChange` alone.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { compileLab } from '../../src/lab/compile'
import { repoRoot } from '../../src/lab/up'
import { LAB } from '../../src/lab/plan'
import { haveCommand } from '../../src/netns/netns'
import { askAgent } from '../../src/agent/control'
import { labApply, openLab, type LabSession, type LabState } from '../../src/lab/index'
import type { KubeObject } from '../../src/k8s/types'
import type { Cluster, Endpoint, Service } from '../../src/model/cluster'
import { renderIptablesSave } from '../../src/kubeproxy/iptables'
import { renderNft } from '../../src/kubeproxy/nftables'
import type { Contender } from '../lib/args'
import { benchLabDown, benchLabUp, dropTopology, newTopology } from '../lib/labs'
import { scaleVip } from '../lib/manifests'
import { errorSummary, progress } from '../lib/progress'
import {
  iptablesDelta,
  KUBE_PROXY_ALWAYS,
  nftDelta,
  parseIptablesSave,
  parseNftScript,
  patchIptables,
  patchNft,
  type IptablesDump,
  type NftDump,
} from '../lib/ruleset-delta'
import { nodeDwellUs, readSll2Udp } from '../lib/pcap'
import { percentile } from '../lib/stats'
import { dnsmasqCommand, nsRun, waitListening } from '../lib/tools'
import { capsAt, timedIn } from './sync'
import { parseDnsperf } from './dns'

// ---- the plan: sizes, contenders, durations (pure, unit-tested) ----

export const CHURN_CONTENDERS: readonly Contender[] = ['tundra', 'iptables-nft', 'nftables']
const NAMES: Record<Contender, string> = { tundra: 'bctundra', 'iptables-nft': 'bciptnft', 'iptables-legacy': 'bciptleg', nftables: 'bcnft', cref: 'bccref' }
export const CHURN_LAB_NAMES = Object.values(NAMES)

/** endpoint changes per second, probes per second, DNS queries per second */
export const CHANGES_PER_SECOND = 10
export const PROBES_PER_SECOND = 1000
export const DNS_QPS = 500
/** every FLIP_EVERY-th change flips the probed service (when the last flip has been seen) */
export const FLIP_EVERY = 5
/** the probe keeps going this long after the last change, so a late flip is still seen */
const TAIL_SECONDS = 2

export interface ChurnPlan {
  readonly sizes: readonly number[]
  readonly baselineSeconds: number
  readonly churnSeconds: number
}

/**
 * `sizes`: TUNDRA_CHURN_SIZES (comma-separated service counts, e.g. `20000`) replaces the plan's sizes, to measure one
 * size again without the others (the durations stay the plan's).
 */
export function churnPlan(quick: boolean, sizes: string | undefined = process.env['TUNDRA_CHURN_SIZES']): ChurnPlan {
  const plan = quick ? { sizes: [1000], baselineSeconds: 3, churnSeconds: 7 } : { sizes: [1000, 10_000, 20_000], baselineSeconds: 10, churnSeconds: 20 }
  if (sizes === undefined || sizes.trim() === '') return plan
  const list = sizes.split(',').map(s => Number(s.trim()))
  if (!list.every(n => Number.isInteger(n) && n >= 1 && n <= 100_000)) throw new Error(`TUNDRA_CHURN_SIZES: expected service counts 1..100000, got ${sizes}`)
  return { ...plan, sizes: list }
}

/**
 * The contenders at n services: tundra, iptables-restore (nf_tables backend), nft -f. nftables only at 1 000 unless
 * --nft20k (its lab loads the whole rule set with nft -f first: minutes from 10 000 on); iptables-legacy is not a
 * churn contender (kube-proxy's partial sync is the same; sync measures the backend).
 */
export function churnContendersAt(n: number, wanted: readonly Contender[], nft20k: boolean): Contender[] {
  return CHURN_CONTENDERS.filter(c => wanted.includes(c) && (c !== 'nftables' || n <= 1000 || nft20k))
}

// ---- the lab: client, two echo pods behind the probed service, a DNS pod, n services with explicit slices ----

export const PROBE_VIP = '10.98.0.10'
export const PROBE_PORT = 9000
const CLIENT_IP = '10.100.85.10'
export const ECHO = [
  { name: 'echo-a', ip: '10.100.85.11' },
  { name: 'echo-b', ip: '10.100.85.12' },
] as const
const DNS_POD_IP = '10.100.85.13'
export const PROBE_SERVICE = 'probe'
const SLICE_LABEL = 'kubernetes.io/service-name'

export const fillerName = (i: number): string => `s${String(i).padStart(5, '0')}`
/** Filler i's endpoint slot j (8 per service) in 10.128.0.0/9: addresses nothing answers on; only rules use them. */
export const fillerEndpoint = (i: number, j: number): string => {
  const k = 0x0a800000 + i * 8 + j + 1
  return `${k >>> 24}.${(k >>> 16) & 0xff}.${(k >>> 8) & 0xff}.${k & 0xff}`
}
const MAX_SLOTS = 8

export interface EndpointState {
  readonly ip: string
  readonly ready: boolean
}

export interface EndpointChange {
  readonly kind: 'scale-up' | 'scale-down' | 'ready-flip' | 'probe-flip'
  readonly service: string
  /** the service's endpoints after the change (what its EndpointSlice then says) */
  readonly endpoints: readonly EndpointState[]
}

/** The EndpointSlice a service's endpoints are written as (explicit: the services have no selector). */
export function sliceObject(service: string, endpoints: readonly EndpointState[]): object {
  const [port, protocol, name] = service === PROBE_SERVICE ? [PROBE_PORT, 'UDP', 'echo'] : service === 'kube-dns' ? [53, 'UDP', 'dns'] : [80, 'TCP', 'http']
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    // kube-dns is the cluster DNS Service: kube-system's, as in a cluster (the only Service that may hold the DNS address)
    metadata: { name: `${service}-churn`, namespace: service === 'kube-dns' ? 'kube-system' : 'default', labels: { [SLICE_LABEL]: service } },
    addressType: 'IPv4',
    ports: [{ name, port, protocol }],
    endpoints: endpoints.map(e => ({ addresses: [e.ip], conditions: { ready: e.ready, serving: e.ready, terminating: false } })),
  }
}

/** Writes `<dir>/churn-<n>.json` (a List: fast to read) and returns its path. */
export function writeChurnManifest(dir: string, n: number): string {
  const pod = (name: string, ip: string, labels: Record<string, string>, udpPort?: number): object => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels, annotations: { [LAB.podIPAnnotation]: ip } },
    spec: {
      containers:
        udpPort !== undefined
          ? [{ name: 'netexec', image: 'registry.k8s.io/e2e-test-images/agnhost:2.47', ports: [{ containerPort: udpPort, protocol: 'UDP' }] }]
          : [{ name: 'tools', image: 'busybox', command: ['sleep', 'infinity'] }],
    },
  })
  const svc = (name: string, ip: string, port: number, protocol: string): object => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: name === 'kube-dns' ? 'kube-system' : 'default' },
    spec: { clusterIP: ip, ports: [{ name: protocol === 'TCP' ? 'http' : name === 'kube-dns' ? 'dns' : 'echo', port, targetPort: port, protocol }] },
  })
  const items: object[] = [
    pod('client', CLIENT_IP, { role: 'client' }),
    ...ECHO.map(e => pod(e.name, e.ip, { app: 'echo' }, PROBE_PORT)),
    pod('dns', DNS_POD_IP, { app: 'dns' }),
    svc(PROBE_SERVICE, PROBE_VIP, PROBE_PORT, 'UDP'),
    sliceObject(PROBE_SERVICE, [
      { ip: ECHO[0].ip, ready: true },
      { ip: ECHO[1].ip, ready: false },
    ]),
    // the cluster DNS address: tundra answers it in its packet path; for the kernel, dnsmasq in the dns pod behind it
    svc('kube-dns', LAB.dnsIP, 53, 'UDP'),
    sliceObject('kube-dns', [{ ip: DNS_POD_IP, ready: true }]),
  ]
  for (let i = 0; i < n; i++) {
    items.push(svc(fillerName(i), scaleVip(i), 80, 'TCP'))
    items.push(
      sliceObject(fillerName(i), [
        { ip: fillerEndpoint(i, 0), ready: true },
        { ip: fillerEndpoint(i, 1), ready: true },
      ]),
    )
  }
  mkdirSync(dir, { recursive: true })
  const path = join(dir, `churn-${n}.json`)
  writeFileSync(path, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }))
  return path
}

/**
 * The stream of changes, deterministic for a seed: filler changes picked at random (scale up to 8 endpoints, scale
 * down to 1, or flip one endpoint's readiness while another stays ready: a service never loses its last ready
 * endpoint, so the top-level chains never change) and, on request, the probed service's ready endpoint flipped.
 */
export class ChurnSchedule {
  private readonly eps = new Map<number, EndpointState[]>()
  private seed: number
  /** the echo pod that answers the probe now */
  probeTarget: string = ECHO[0].name

  constructor(
    readonly services: number,
    seed = 0x9e3779b9,
  ) {
    this.seed = seed >>> 0 || 1
  }

  private rand(): number {
    let x = this.seed
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.seed = x >>> 0
    return this.seed / 0x100000000
  }

  private of(i: number): EndpointState[] {
    let e = this.eps.get(i)
    if (!e) {
      e = [
        { ip: fillerEndpoint(i, 0), ready: true },
        { ip: fillerEndpoint(i, 1), ready: true },
      ]
      this.eps.set(i, e)
    }
    return e
  }

  next(): EndpointChange {
    const i = Math.floor(this.rand() * this.services)
    const eps = this.of(i)
    const r = this.rand()
    const ready = eps.filter(e => e.ready).length
    let kind: EndpointChange['kind']
    if (r < 1 / 3 && eps.length < MAX_SLOTS) {
      kind = 'scale-up'
      const used = new Set(eps.map(e => e.ip))
      let j = 0
      while (used.has(fillerEndpoint(i, j))) j++
      eps.push({ ip: fillerEndpoint(i, j), ready: true })
    } else if (r < 2 / 3 && eps.length > 1 && (ready > 1 || !eps[eps.length - 1]!.ready)) {
      kind = 'scale-down'
      eps.pop()
    } else {
      kind = 'ready-flip'
      // a not-ready endpoint becomes ready, or a ready one not ready when another stays ready
      const k = eps.findIndex(e => !e.ready)
      if (k >= 0) eps[k] = { ip: eps[k]!.ip, ready: true }
      else if (eps.length > 1) eps[eps.length - 1] = { ip: eps[eps.length - 1]!.ip, ready: false }
      else eps.push({ ip: fillerEndpoint(i, eps.length), ready: false }) // one endpoint: add a not-ready one
    }
    return { kind, service: fillerName(i), endpoints: eps.map(e => ({ ...e })) }
  }

  /** The probed service's other echo pod becomes its ready endpoint (a readiness flip of both). */
  flipProbe(): EndpointChange {
    this.probeTarget = this.probeTarget === ECHO[0].name ? ECHO[1].name : ECHO[0].name
    return { kind: 'probe-flip', service: PROBE_SERVICE, endpoints: ECHO.map(e => ({ ip: e.ip, ready: e.name === this.probeTarget })) }
  }
}

// ---- how a change reaches a contender ----

export interface ChangeDriver {
  apply(change: EndpointChange): void
  /** resolves when every change handed over has been applied (or failed) */
  settle(): Promise<void>
  readonly syncMs: number[]
  readonly errors: string[]
}

export interface ChurnLab {
  readonly contender: Contender
  readonly state: LabState
  readonly client: string
  readonly driver: ChangeDriver
  /** tundra: the agent's control socket (its reload count) */
  readonly control?: string
}

/**
 * The one place a change is handed to a contender. tundra: `tundra lab apply` of the service's EndpointSlice, through
 * the lab's in-process API (as a user's `kubectl apply` of the slice: the lab rewrites that object's file and the
 * agent re-reads that one file); the kernel: kube-proxy's sync loop.
 */
export function applyChange(lab: ChurnLab, change: EndpointChange): void {
  lab.driver.apply(change)
}

/** tundra: each change is one `labApply` of the changed EndpointSlice, in order; syncMs is the apply's own time. */
class LabDriver implements ChangeDriver {
  readonly syncMs: number[] = []
  readonly errors: string[] = []
  private chain: Promise<void> = Promise.resolve()

  constructor(private readonly session: LabSession) {}

  apply(change: EndpointChange): void {
    const object = sliceObject(change.service, change.endpoints) as KubeObject
    this.chain = this.chain.then(async () => {
      const t0 = process.hrtime.bigint()
      try {
        await labApply(this.session, [{ object }])
        this.syncMs.push(Number(process.hrtime.bigint() - t0) / 1e6)
      } catch (err) {
        if (this.errors.length < 10) this.errors.push((err as Error).message)
      }
    })
  }

  settle(): Promise<void> {
    return this.chain
  }
}

/** The agent's reloads and the time of its last (its control socket does not answer while a reload blocks it: asked again). */
async function agentStats(control: string, timeoutMs: number): Promise<{ reloads: number; lastSyncMs: number }> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      const r = (await askAgent(control, 'stats', {}, Math.min(10_000, timeoutMs))) as { counters?: { reloads?: number }; lastSyncMs?: number }
      return { reloads: r.counters?.reloads ?? NaN, lastSyncMs: r.lastSyncMs ?? NaN }
    } catch (err) {
      if (Date.now() > end) throw err
    }
  }
}

type KernelLoader = 'iptables-nft' | 'nftables'

/**
 * kube-proxy's sync loop against the kernel: changes are recorded; when none is being written, everything pending is
 * written as one partial update from the state last written (chains of the changed services, rendered alone before
 * and after, patched into the full dump; lib/ruleset-delta.ts). No minSyncPeriod: each sync starts when the last ends.
 */
class KernelDriver implements ChangeDriver {
  readonly syncMs: number[] = []
  readonly errors: string[] = []
  private readonly pending = new Map<string, Service>()
  private readonly current = new Map<string, Service>()
  private running: Promise<void> | undefined
  private ipt: IptablesDump | undefined
  private nft: NftDump | undefined

  constructor(
    private readonly loader: KernelLoader,
    private readonly ns: string,
    private readonly cluster: Cluster,
    private readonly opts: { clusterCIDR: string; nodeName: string; nodeIPs: string[] },
    full: string,
    private readonly capMs: number,
  ) {
    for (const s of cluster.services) this.current.set(s.name, s)
    if (loader === 'nftables') this.nft = parseNftScript(full)
    else this.ipt = parseIptablesSave(full)
  }

  apply(change: EndpointChange): void {
    const svc = this.current.get(change.service)
    if (!svc) {
      this.errors.push(`no service ${change.service}`)
      return
    }
    this.pending.set(change.service, withEndpoints(svc, change.endpoints))
    this.running ??= this.loop().finally(() => {
      this.running = undefined
    })
  }

  settle(): Promise<void> {
    return this.running ?? Promise.resolve()
  }

  private async loop(): Promise<void> {
    while (this.pending.size > 0) {
      const after = [...this.pending.values()]
      this.pending.clear()
      const before = after.map(s => this.current.get(s.name)!)
      try {
        const { next, text } = kernelPatch(this.ipt ?? this.nft!, this.cluster, before, after, this.opts)
        const cmd = this.loader === 'nftables' ? ['nft', '-f', '-'] : ['iptables-restore', '--noflush']
        const r = await timedIn(this.ns, cmd, text, this.capMs)
        if (r.capped) throw new Error(`partial sync stopped at the ${this.capMs / 1000} s cap`)
        this.syncMs.push(r.ms)
        if (this.ipt) this.ipt = next as IptablesDump
        else this.nft = next as NftDump
        for (const s of after) this.current.set(s.name, s)
      } catch (err) {
        // the kernel keeps what it had: the next sync starts from the state last written (this change is counted lost)
        if (this.errors.length < 10) this.errors.push((err as Error).message)
      }
    }
  }
}

/**
 * The partial update for services changing from `before` to `after` (same order) on top of the applied dump, and the
 * full state after it: the changed services rendered alone, before and after, patched into the dump. Throws for a
 * change that would rewrite a chain listing every service (a service losing its last endpoint), which the patch
 * cannot express; the schedule never makes one.
 */
export function kernelPatch<D extends IptablesDump | NftDump>(
  applied: D,
  cluster: Cluster,
  before: readonly Service[],
  after: readonly Service[],
  opts: { clusterCIDR: string; nodeName: string; nodeIPs: string[] },
): { next: D; text: string } {
  const alone = (services: readonly Service[]): Cluster => ({ ...cluster, services: [...services] })
  if ('tables' in applied) {
    const b = parseIptablesSave(renderIptablesSave(alone(before), opts))
    const a = parseIptablesSave(renderIptablesSave(alone(after), opts))
    for (const name of KUBE_PROXY_ALWAYS) {
      const x = b.tables.get('nat')?.chains.get(name)?.rules ?? []
      const y = a.tables.get('nat')?.chains.get(name)?.rules ?? []
      if (x.join('\n') !== y.join('\n')) throw new Error(`a change that rewrites ${name}: the patch cannot express it`)
    }
    const next = patchIptables(applied, b, a)
    return { next: next as D, text: iptablesDelta(applied, next).text }
  }
  const b = parseNftScript(renderNft(alone(before), { ...opts, family: 4 }))
  const a = parseNftScript(renderNft(alone(after), { ...opts, family: 4 }))
  const next = patchNft(applied as NftDump, b, a)
  return { next: next as D, text: nftDelta(applied as NftDump, next).text }
}

/** The service with its endpoints replaced by `eps`, each shaped like its first (ports, node) as the loader makes it. */
export function withEndpoints(svc: Service, eps: readonly EndpointState[]): Service {
  const tpl = svc.endpoints[0]
  if (!tpl) throw new Error(`service ${svc.name} has no endpoint to copy`)
  const endpoints: Endpoint[] = eps.map(e => ({ ...tpl, ip: e.ip, ready: e.ready, serving: e.ready, terminating: false }))
  return { ...svc, endpoints }
}

// ---- measurements ----

export interface PhaseResult {
  readonly seconds: number
  readonly probesSent: number
  readonly probesReplied: number
  /** no reply within 1 s, or not sent because 5 000 probes were already waiting */
  readonly probesLost: number
  /** not sent: the probe client fell behind (not the dataplane's doing) */
  readonly probesSkipped: number
  readonly p50Us: number
  readonly p999Us: number
  readonly maxUs: number
  /**
   * How long the node held the probe's packets (bench/lib/pcap.ts: from arriving on the sender's veth to leaving on
   * the receiver's), p99.9 and max, µs; packets timed. The round trip above also holds the probe's and the echo pod's
   * own waits for a CPU: this is the dataplane's part.
   */
  readonly dwellP999Us: number
  readonly dwellMaxUs: number
  readonly dwellPackets: number
  readonly dnsSent: number
  readonly dnsLost: number
  /** endpoint changes handed to the contender */
  readonly changes: number
}

export interface ChurnContender {
  readonly contender: Contender
  available: boolean
  error?: string
  labUpSeconds: number
  baseline?: PhaseResult
  churn?: PhaseResult
  /** change-to-dataplane samples, ms */
  readonly flipsMs: number[]
  /** flips not seen by the end of the run: the time they had waited, ms (lower bounds) */
  readonly flipsUnseenMs: number[]
  /** kernel: partial syncs written during churn; tundra: the agent's reloads */
  syncs: number
  /** kernel: median partial sync (ip netns exec + restore), ms; tundra: the agent's last reload, ms */
  syncP50Ms: number
  driverErrors: string[]
  addedP50Us: number
  addedP999Us: number
  addedMaxUs: number
  /** over seen and unseen flips (unseen ones count with the time they had waited) */
  c2dP50Ms: number
  c2dP99Ms: number
}

export interface ChurnSize {
  readonly services: number
  readonly contenders: ChurnContender[]
}

export interface ChurnResult {
  readonly changesPerSecond: number
  readonly probesPerSecond: number
  readonly dnsQps: number
  readonly baselineSeconds: number
  readonly churnSeconds: number
  readonly sizes: ChurnSize[]
}

/** Added latency and change-to-dataplane percentiles from the raw figures (pure). */
export function finishContender(c: ChurnContender): void {
  const b = c.baseline
  const m = c.churn
  c.addedP50Us = b && m ? m.p50Us - b.p50Us : NaN
  c.addedP999Us = b && m ? m.p999Us - b.p999Us : NaN
  c.addedMaxUs = b && m ? m.maxUs - b.maxUs : NaN
  const all = [...c.flipsMs, ...c.flipsUnseenMs]
  c.c2dP50Ms = percentile(all, 50)
  c.c2dP99Ms = percentile(all, 99)
}

export interface ProbeReport {
  sent: number
  replied: number
  lost: number
  skipped: number
  stalled: number
  seconds: number
  rttUs: number[]
  switches: { sendNs: string; name: string }[]
}

export interface ChurnOptions {
  readonly quick: boolean
  readonly contenders: readonly Contender[]
  readonly nft20k: boolean
  readonly loadCapMs: number
  readonly workDir: string
}

export async function runChurn(o: ChurnOptions): Promise<ChurnResult> {
  const plan = churnPlan(o.quick)
  const result: ChurnResult = {
    changesPerSecond: CHANGES_PER_SECOND,
    probesPerSecond: PROBES_PER_SECOND,
    dnsQps: DNS_QPS,
    baselineSeconds: plan.baselineSeconds,
    churnSeconds: plan.churnSeconds,
    sizes: [],
  }
  if (!haveCommand('dnsperf')) throw new Error('dnsperf is not installed (scripts/bootstrap installs it)')
  for (const n of plan.sizes) {
    const cs = churnContendersAt(n, o.contenders, o.nft20k)
    const size: ChurnSize = { services: n, contenders: [] }
    result.sizes.push(size)
    await runSize(n, cs, plan, o, size)
  }
  return result
}

async function runSize(n: number, cs: readonly Contender[], plan: ChurnPlan, o: ChurnOptions, size: ChurnSize): Promise<void> {
  const manifest = writeChurnManifest(o.workDir, n)
  progress('churn', `${n} services: planning the lab (${cs.join(', ')})`)
  const labPlan = compileLab({ name: 'bcplan', files: [manifest], nodes: 1, dataplane: 'none' })
  const queries = join(o.workDir, `churn-queries-${n}`)
  const hosts = join(o.workDir, `churn-hosts-${n}`)
  const names = labPlan.cluster.services
    .filter(s => s.name.startsWith('s') && s.clusterIPs[0])
    .map(s => [`${s.name}.${s.namespace}.svc.${LAB.zone}`, s.clusterIPs[0]!] as const)
  writeFileSync(hosts, names.map(([name, ip]) => `${ip} ${name}`).join('\n') + '\n')
  writeFileSync(queries, names.map(([name]) => `${name} A`).join('\n') + '\n')
  const results: ChurnContender[] = cs.map(c => ({
    contender: c,
    available: false,
    labUpSeconds: NaN,
    flipsMs: [],
    flipsUnseenMs: [],
    syncs: 0,
    syncP50Ms: NaN,
    driverErrors: [],
    addedP50Us: NaN,
    addedP999Us: NaN,
    addedMaxUs: NaN,
    c2dP50Ms: NaN,
    c2dP99Ms: NaN,
  }))
  size.contenders.push(...results)
  const procs = newTopology('churn')
  const labs = new Map<Contender, ChurnLab>()
  try {
    const bringUp = async (r: ChurnContender): Promise<void> => {
      const c = r.contender
      try {
        const t0 = Date.now()
        const st = await benchLabUp({
          name: NAMES[c],
          files: [manifest],
          section: 'churn',
          readyTimeoutMs: 240_000,
          keepLogsIn: o.workDir,
          dataplane: c === 'tundra' ? 'tundra' : c === 'nftables' ? 'nftables' : 'iptables',
          ...(c === 'iptables-nft' ? { iptablesBackend: 'nft' as const } : {}),
        })
        r.labUpSeconds = (Date.now() - t0) / 1000
        const pod = (name: string): string => st.pods.find(p => p.name === name)!.ns
        const client = pod('client')
        // the probe binds ports below 61000; everything else the client opens (dnsperf) takes ports above
        await nsRun(client, ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=61000 65000'], 10_000)
        let driver: ChangeDriver
        if (c === 'tundra') {
          const control = st.nodes[0]!.control
          if (control === undefined) throw new Error('the lab records no control socket for node1')
          driver = new LabDriver(openLab(st.name, { log: () => {} }))
        } else {
          const dnsNs = pod('dns')
          procs.spawn(dnsNs, dnsmasqCommand(hosts, DNS_POD_IP))
          await waitListening(dnsNs, 'udp', 53)
          const node = st.nodes[0]!
          const opts = { clusterCIDR: LAB.clusterCIDR, nodeName: node.name, nodeIPs: [node.ip] }
          const full = c === 'nftables' ? renderNft(labPlan.cluster, { ...opts, family: 4 }) : readFileSync(join(st.dir, `${node.name}.iptables`), 'utf8')
          driver = new KernelDriver(c === 'nftables' ? 'nftables' : 'iptables-nft', node.ns, labPlan.cluster, opts, full, capsAt(n, o.loadCapMs).delta)
        }
        const lab: ChurnLab = { contender: c, state: st, client, driver, ...(c === 'tundra' ? { control: st.nodes[0]!.control! } : {}) }
        const check = await probeOnce(lab, procs, 1, 10000)
        if (check.replied === 0) throw new Error(`no probe through ${PROBE_VIP}:${PROBE_PORT} was answered`)
        labs.set(c, lab)
        r.available = true
        progress('churn', `${n} services: ${c} is up (${r.labUpSeconds.toFixed(0)} s)`)
      } catch (err) {
        r.error = errorSummary(err)
        progress('churn', `${n} services: ${c}: not measured: ${r.error}`)
        await benchLabDown(NAMES[c])
      }
    }
    // as firstpacket: at scale tundra's lab next to the kernel labs one after another; small ones all at once
    const lane = async (rs: ChurnContender[]): Promise<void> => {
      for (const r of rs) await bringUp(r)
    }
    if (n >= 10_000) await Promise.all([lane(results.filter(r => r.contender === 'tundra')), lane(results.filter(r => r.contender !== 'tundra'))])
    else await Promise.all(results.map(bringUp))

    for (const r of results) {
      const lab = labs.get(r.contender)
      if (!lab) continue
      try {
        r.baseline = await phase(lab, procs, queries, plan.baselineSeconds, 11000, o.workDir, undefined)
        progress('churn', `${n} services: ${r.contender.padEnd(12)} baseline ${line(r.baseline)}`)
        const sched = new ChurnSchedule(n)
        const portBase = 11000 + Math.ceil(plan.baselineSeconds * PROBES_PER_SECOND) + 1000
        const before = lab.control !== undefined ? await agentStats(lab.control, 120_000) : undefined
        r.churn = await phase(lab, procs, queries, plan.churnSeconds, portBase, o.workDir, { sched, flips: r.flipsMs, unseen: r.flipsUnseenMs })
        const after = lab.control !== undefined ? await agentStats(lab.control, 120_000) : undefined
        r.syncs = before && after ? after.reloads - before.reloads : lab.driver.syncMs.length
        r.syncP50Ms = after ? after.lastSyncMs : percentile(lab.driver.syncMs, 50)
        r.driverErrors = [...lab.driver.errors]
        finishContender(r)
        progress(
          'churn',
          `${n} services: ${r.contender.padEnd(12)} churn    ${line(r.churn)}; change→dataplane p50 ${r.c2dP50Ms.toFixed(1)} ms p99 ${r.c2dP99Ms.toFixed(1)} ms (${r.flipsMs.length} flips seen, ${r.flipsUnseenMs.length} not), ${r.syncs} ${r.contender === 'tundra' ? 'reloads' : 'syncs'} (${r.syncP50Ms.toFixed(0)} ms ${r.contender === 'tundra' ? `the last; lab apply p50 ${applyMs(lab, 50)} p99 ${applyMs(lab, 99)} ms` : 'median'})${r.driverErrors.length ? `; errors: ${r.driverErrors.slice(0, 2).join(' | ')}` : ''}`,
        )
      } catch (err) {
        r.error = errorSummary(err)
        progress('churn', `${n} services: ${r.contender}: failed: ${r.error}`)
      }
    }
  } finally {
    await dropTopology(procs)
    for (const c of cs) await benchLabDown(NAMES[c])
  }
}

/** tundra: how long the lab's apply took (the API write, part of change-to-dataplane), from the bench process, ms. */
function applyMs(lab: ChurnLab, p: number): string {
  return percentile(lab.driver.syncMs, p).toFixed(1)
}

function line(p: PhaseResult): string {
  return `probe p50 ${p.p50Us.toFixed(0)} µs p99.9 ${p.p999Us.toFixed(0)} µs max ${p.maxUs.toFixed(0)} µs (node dwell p99.9 ${p.dwellP999Us.toFixed(0)} µs max ${p.dwellMaxUs.toFixed(0)} µs), ${p.probesLost}/${p.probesSent} lost; DNS ${p.dnsLost}/${p.dnsSent} lost${p.changes ? `; ${p.changes} changes` : ''}`
}

/**
 * The probe tool's stdout, fed in chunks as they come (pure): `switch <sendNs> <name>` lines go to `onSwitch`, the
 * first of them (the first answer at all) also settles `answering`; the closing JSON line is the report.
 */
export class ProbeOutput {
  report: ProbeReport | undefined
  /** resolves at the probe's first answer: the flow of probes is running */
  readonly answering: Promise<void>
  private answered: () => void = () => {}
  private buf = ''

  constructor(private readonly onSwitch?: (sendNs: bigint, name: string) => void) {
    this.answering = new Promise(resolve => (this.answered = resolve))
  }

  push(chunk: string): void {
    this.buf += chunk
    let nl: number
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const l = this.buf.slice(0, nl)
      this.buf = this.buf.slice(nl + 1)
      if (l.startsWith('switch ')) {
        const [, ns, name] = l.split(' ')
        this.answered()
        this.onSwitch?.(BigInt(ns!), name!)
      } else if (l.startsWith('{')) {
        this.report = JSON.parse(l) as ProbeReport
      }
    }
  }
}

/**
 * Runs the probe tool in the client for `seconds`; `onSwitch` sees each change of the answering pod as it happens,
 * `answering` resolves at its first answer (and rejects if it ends without one).
 */
function startProbe(
  lab: ChurnLab,
  procs: ReturnType<typeof newTopology>,
  seconds: number,
  portBase: number,
  onSwitch?: (sendNs: bigint, name: string) => void,
): { child: ChildProcess; done: Promise<ProbeReport>; answering: Promise<void> } {
  const tool = join(repoRoot(), 'dist', 'bench', 'tools', 'churn-probe.js')
  const child = procs.spawn(lab.client, [
    process.execPath,
    tool,
    '--host',
    PROBE_VIP,
    '--port',
    String(PROBE_PORT),
    '--rate',
    String(PROBES_PER_SECOND),
    '--seconds',
    String(seconds),
    '--port-base',
    String(portBase),
  ])
  const out = new ProbeOutput(onSwitch)
  let err = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < 2000) err += d
  })
  child.stdout?.setEncoding('utf8').on('data', (d: string) => out.push(d))
  const done = new Promise<ProbeReport>((resolve, reject) => {
    child.on('close', code =>
      out.report ? resolve(out.report) : reject(new Error(`churn-probe exited ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`)),
    )
  })
  const answering = Promise.race([out.answering, done.then(() => Promise.reject(new Error('the probe ended without an answer')))])
  answering.catch(() => {}) // awaited only with churn; done reports the failure otherwise
  return { child, done, answering }
}

/**
 * tcpdump of the probe's packets on every interface of the lab's node namespace, for one phase: bounded by count
 * (every probe is seen at most four times each way) and stopped (by its PID) when the phase ends. `stop` reads the
 * file, removes it and returns the node's dwell per packet, µs.
 */
async function startCapture(lab: ChurnLab, procs: ReturnType<typeof newTopology>, file: string, seconds: number): Promise<{ stop(): Promise<number[]> }> {
  const node = lab.state.nodes[0]!
  const bound = Math.ceil((seconds + TAIL_SECONDS) * PROBES_PER_SECOND) * 8
  const child = procs.spawn(node.ns, [
    'tcpdump',
    '-i',
    'any',
    '-n',
    '-s',
    '96',
    '-B',
    '8192',
    '--time-stamp-precision=nano',
    '-c',
    String(bound),
    '-w',
    file,
    `udp port ${PROBE_PORT}`,
  ])
  let err = ''
  const listening = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump in ${node.ns} did not start: ${err.trim()}`)), 10_000)
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 2000) err += d
      if (err.includes('listening on')) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.once('exit', code => {
      clearTimeout(timer)
      reject(new Error(`tcpdump exited ${code}: ${err.trim()}`))
    })
  })
  await listening
  return {
    async stop(): Promise<number[]> {
      await procs.stop(child)
      try {
        return nodeDwellUs(readSll2Udp(readFileSync(file)), PROBE_PORT)
      } finally {
        rmSync(file, { force: true })
      }
    },
  }
}

async function probeOnce(lab: ChurnLab, procs: ReturnType<typeof newTopology>, seconds: number, portBase: number): Promise<ProbeReport> {
  return startProbe(lab, procs, seconds, portBase).done
}

/** One measurement: probe + dnsperf for `seconds` (+ the tail with churn), and with `churn` the stream of changes. */
async function phase(
  lab: ChurnLab,
  procs: ReturnType<typeof newTopology>,
  queries: string,
  seconds: number,
  portBase: number,
  workDir: string,
  churn: { sched: ChurnSchedule; flips: number[]; unseen: number[] } | undefined,
): Promise<PhaseResult> {
  let flip: { t: bigint; target: string } | undefined
  const onSwitch = (sendNs: bigint, name: string): void => {
    if (flip && name === flip.target && sendNs >= flip.t) {
      churn!.flips.push(Number(sendNs - flip.t) / 1e6)
      flip = undefined
    }
  }
  const probeSeconds = seconds + (churn ? TAIL_SECONDS : 0)
  const capture = await startCapture(lab, procs, join(workDir, `churn-${lab.contender}-${churn ? 'churn' : 'baseline'}.pcap`), probeSeconds).catch(
    (err: unknown) => {
      progress('churn', `${lab.contender}: no dwell capture: ${errorSummary(err)}`)
      return undefined
    },
  )
  const probe = startProbe(lab, procs, probeSeconds, portBase, onSwitch)
  const dns = nsRun(
    lab.client,
    ['dnsperf', '-s', LAB.dnsIP, '-d', queries, '-l', String(probeSeconds), '-Q', String(DNS_QPS), '-t', '1'],
    (probeSeconds + 30) * 1000,
  )
  let changes = 0
  if (churn) {
    // The probe is a new process: it takes 50-200 ms to send its first probe. A change before that would time the
    // probe's start-up as the first flip's change-to-dataplane (it did: 63-172 ms, the p99 of every run).
    await probe.answering
    const t0 = process.hrtime.bigint()
    const every = 1e9 / CHANGES_PER_SECOND
    for (let k = 0; k < seconds * CHANGES_PER_SECOND; k++) {
      const wait = Number(t0 + BigInt(Math.round(k * every)) - process.hrtime.bigint()) / 1e6
      if (wait > 0) await new Promise(r => setTimeout(r, wait))
      if (k % FLIP_EVERY === 0 && flip === undefined) {
        const change = churn.sched.flipProbe()
        flip = { t: process.hrtime.bigint(), target: churn.sched.probeTarget }
        applyChange(lab, change)
      } else {
        applyChange(lab, churn.sched.next())
      }
      changes++
    }
  }
  const [rep, d] = await Promise.all([probe.done, dns])
  if (flip) churn!.unseen.push(Number(process.hrtime.bigint() - flip.t) / 1e6)
  const dwell = capture
    ? await capture.stop().catch((err: unknown) => {
        progress('churn', `${lab.contender}: dwell capture unreadable: ${errorSummary(err)}`)
        return []
      })
    : []
  await lab.driver.settle()
  const dp = parseDnsperf(d.stdout)
  return {
    seconds: probeSeconds,
    probesSent: rep.sent + rep.stalled,
    probesReplied: rep.replied,
    probesLost: rep.lost + rep.stalled,
    probesSkipped: rep.skipped,
    p50Us: percentile(rep.rttUs, 50),
    p999Us: percentile(rep.rttUs, 99.9),
    maxUs: percentile(rep.rttUs, 100),
    dwellP999Us: percentile(dwell, 99.9),
    dwellMaxUs: percentile(dwell, 100),
    dwellPackets: dwell.length,
    dnsSent: dp ? dp.completed + dp.lost : NaN,
    dnsLost: dp ? dp.lost : NaN,
    changes,
  }
}
