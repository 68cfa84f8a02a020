// `tundra observe` on the control thread: drains the packet thread's flow ring into a bounded log of recent flows
// (sequence-numbered, so several watchers each get every flow), names the pods and services of each flow, and
// answers `{ since, last?, filters }` with the matching flows after `since`.
import type { DataplaneView, FlowRecord } from '../agent/view'
import { InspectError } from './common'

/** A flow as `tundra observe` prints it: the record plus names. */
export interface ObservedFlow extends FlowRecord {
  readonly seq: number
  /** "ns/name" of the source / destination / endpoint pod ('' none) */
  readonly srcPod: string
  readonly dstPod: string
  readonly endpointPod: string
  /** "ns/name" of the service the destination is a frontend of ('' none) */
  readonly service: string
}

export interface ObserveFilter {
  readonly pod?: string
  readonly service?: string
  readonly namespace?: string
  /** a kind (new, closed, rejected, dropped, dns-query, dns-answer, connect-failed, ejected) or "dns" */
  readonly verdict?: string
  readonly protocol?: string
}

export interface ObserveReply {
  readonly flows: readonly ObservedFlow[]
  /** the seq to ask `since` next */
  readonly next: number
  /** records the packet thread overwrote before they were read (since it started recording) */
  readonly overwritten: number
}

/** Flows the control side keeps for watchers. */
const LOG_SIZE = 16384
/** Records one drain asks for. */
const DRAIN_MAX = 8192

class FlowLog {
  private readonly flows: ObservedFlow[] = []
  private seq = 0
  overwritten = 0

  constructor(private readonly view: DataplaneView) {}

  async pull(): Promise<void> {
    const live = this.view.live()
    if (live?.observe === undefined) throw new InspectError('observe needs a running agent (--socket or --lab)')
    const { flows, overwritten } = await live.observe(DRAIN_MAX)
    this.overwritten = overwritten
    if (flows.length === 0) return
    const pods = new Map<string, string>()
    for (const p of this.view.cluster().pods) for (const ip of p.ips) pods.set(ip, `${p.namespace}/${p.name}`)
    const svcs = new Map<string, string>()
    for (const sp of this.view.table().svcPorts)
      if (sp !== undefined)
        for (const ip of [sp.clusterIP, ...sp.externalIPs, ...sp.loadBalancerIPs]) svcs.set(`${ip}:${sp.port}`, `${sp.namespace}/${sp.name}`)
    for (const f of flows) {
      const epAddr = f.endpoint.replace(/^\[?(.*?)\]?:\d+$/, '$1')
      this.flows.push({
        ...f,
        seq: ++this.seq,
        srcPod: pods.get(f.src) ?? '',
        dstPod: pods.get(f.dst) ?? '',
        endpointPod: epAddr === '' ? '' : (pods.get(epAddr) ?? ''),
        service: svcs.get(`${f.dst}:${f.dport}`) ?? '',
      })
    }
    if (this.flows.length > LOG_SIZE) this.flows.splice(0, this.flows.length - LOG_SIZE)
  }

  since(seq: number, filter: ObserveFilter, last?: number): ObserveReply {
    let out = this.flows.filter(f => f.seq > seq && matches(f, filter))
    if (last !== undefined) out = out.slice(-last)
    return { flows: out, next: this.seq, overwritten: this.overwritten }
  }
}

function matches(f: ObservedFlow, q: ObserveFilter): boolean {
  const podIs = (p: string, want: string): boolean => p !== '' && (p === want || p.endsWith(`/${want}`))
  if (q.pod !== undefined && !podIs(f.srcPod, q.pod) && !podIs(f.dstPod, q.pod) && !podIs(f.endpointPod, q.pod)) return false
  if (q.service !== undefined && f.service !== q.service && !f.service.endsWith(`/${q.service}`)) return false
  if (q.namespace !== undefined) {
    const ns = [f.srcPod, f.dstPod, f.endpointPod, f.service].map(x => x.split('/')[0])
    if (!ns.includes(q.namespace)) return false
  }
  if (q.verdict !== undefined && f.kind !== q.verdict && !(q.verdict === 'dns' && f.kind.startsWith('dns'))) return false
  if (q.protocol !== undefined && f.protocol !== q.protocol.toLowerCase()) return false
  return true
}

const logs = new WeakMap<DataplaneView, FlowLog>()

/** The `observe` control-socket command: `{ since?, last?, pod?, service?, namespace?, verdict?, protocol? }`. */
export async function observeOp(view: DataplaneView, args: Record<string, unknown>): Promise<ObserveReply> {
  let log = logs.get(view)
  if (log === undefined) {
    log = new FlowLog(view)
    logs.set(view, log)
  }
  await log.pull()
  const str = (k: string): string | undefined => {
    const v = args[k]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'string') throw new InspectError(`observe: ${k} must be a string`)
    return v
  }
  const since = args['since'] === undefined ? 0 : Number(args['since'])
  const last = args['last'] === undefined ? undefined : Number(args['last'])
  if (!Number.isInteger(since) || since < 0) throw new InspectError('observe: since must be a sequence number')
  if (last !== undefined && (!Number.isInteger(last) || last < 1)) throw new InspectError('observe: last must be a positive integer')
  const filter: ObserveFilter = {
    ...(str('pod') !== undefined ? { pod: str('pod')! } : {}),
    ...(str('service') !== undefined ? { service: str('service')! } : {}),
    ...(str('namespace') !== undefined ? { namespace: str('namespace')! } : {}),
    ...(str('verdict') !== undefined ? { verdict: str('verdict')! } : {}),
    ...(str('protocol') !== undefined ? { protocol: str('protocol')! } : {}),
  }
  return log.since(since, filter, last)
}

/** One line per flow, hubble-style. */
export function formatFlow(f: ObservedFlow): string {
  const ep = (addr: string, port: number, pod: string): string => `${addr.includes(':') ? `[${addr}]` : addr}:${port}${pod !== '' ? ` (${pod})` : ''}`
  const t = new Date(f.timeMs).toISOString().slice(11, 23)
  const head = `${t} ${f.kind.toUpperCase().padEnd(14)} ${f.protocol.padEnd(4)}`
  const from = ep(f.src, f.sport, f.srcPod)
  const to = ep(f.dst, f.dport, f.dstPod) + (f.service !== '' ? ` svc ${f.service}` : '')
  const via = f.endpoint !== '' ? ` -> ${f.endpoint}${f.endpointPod !== '' ? ` (${f.endpointPod})` : ''}` : ''
  const dns = f.dns !== undefined ? ` ${f.dns.name} type ${f.dns.qtype}${f.dns.rcode !== undefined ? ` rcode ${f.dns.rcode}` : ''}` : ''
  const why = f.reason !== '' ? ` reason ${f.reason}` : ''
  if (f.kind === 'ejected') return `${head} endpoint ${f.endpoint}${f.endpointPod !== '' ? ` (${f.endpointPod})` : ''} ejected after ${f.reason} failures`
  return `${head} ${from} => ${to}${via}${dns}${why}`
}
