// `tundra conntrack list|count|flush`: the NAT engine's connection table, filtered and printed in the spirit of
// `conntrack -L` (original tuple, reply tuple, flags), plus the service and endpoint each connection was sent to.
import type { DataplaneView } from '../agent/view'
import type { Family } from '../model/cluster'
import type { ConntrackEntry } from '../nat/ctview'
import type { NatTable } from '../nat/compile'
import { canonicalIp } from '../wire/addr'
import { endpointString } from '../model/names'
import { InspectError, optChoice, optPort, optString } from './common'

export const CONNTRACK_OPS = ['list', 'count', 'flush'] as const
export type ConntrackOp = (typeof CONNTRACK_OPS)[number]
export const CONNTRACK_PROTOCOLS = ['tcp', 'udp', 'sctp', 'icmp'] as const

/** Every given field must match. */
export interface ConntrackFilterArgs {
  /** the original source (the client) */
  readonly src?: string
  /** the address the client connected to, or the endpoint it was translated to */
  readonly dst?: string
  readonly proto?: (typeof CONNTRACK_PROTOCOLS)[number]
  /** "ns/name" (every port) or a kube-proxy service port name "ns/name:port" */
  readonly service?: string
  /** any port of either tuple */
  readonly port?: number
  readonly family?: Family
}

export interface ConntrackArgs {
  readonly op: ConntrackOp
  readonly filter: ConntrackFilterArgs
}

export interface ConntrackRow extends ConntrackEntry {
  /** where the connection goes: the reply tuple's source, "ip:port" */
  readonly endpoint: string
}

export type ConntrackResult =
  | { readonly op: 'list'; readonly entries: readonly ConntrackRow[] }
  | { readonly op: 'count'; readonly count: number }
  | { readonly op: 'flush'; readonly flushed: number }

export const OFFLINE_CONNTRACK = 'conntrack needs a running agent: manifests (-f) have no connection state; use --socket PATH or --lab NAME'

function addrArg(v: string | undefined, what: string): string | undefined {
  if (v === undefined) return undefined
  const c = canonicalIp(v)
  if (c === undefined) throw new InspectError(`${what}: ${JSON.stringify(v)} is not an IP address`)
  return c
}

export function parseConntrackArgs(args: Record<string, unknown>): ConntrackArgs {
  const op = optChoice(args, 'op', CONNTRACK_OPS) ?? 'list'
  const f = (args['filter'] ?? {}) as Record<string, unknown>
  if (typeof f !== 'object' || f === null || Array.isArray(f)) throw new InspectError('filter must be an object')
  const src = addrArg(optString(f, 'src'), '--src')
  const dst = addrArg(optString(f, 'dst'), '--dst')
  const proto = optChoice(f, 'proto', CONNTRACK_PROTOCOLS)
  const service = optString(f, 'service')
  if (service !== undefined && !/^[^/\s]+\/[^/\s]+$/.test(service)) throw new InspectError(`--service: ${JSON.stringify(service)} is not namespace/name`)
  const port = optPort(f, 'port')
  const family = f['family'] === undefined ? undefined : Number(f['family'])
  if (family !== undefined && family !== 4 && family !== 6) throw new InspectError(`family must be 4 or 6, not ${JSON.stringify(f['family'])}`)
  return {
    op,
    filter: {
      ...(src !== undefined ? { src } : {}),
      ...(dst !== undefined ? { dst } : {}),
      ...(proto !== undefined ? { proto } : {}),
      ...(service !== undefined ? { service } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(family !== undefined ? { family: family as Family } : {}),
    },
  }
}

interface Tuples {
  readonly family: Family
  readonly protocol: string
  readonly orig: { readonly src: string; readonly dst: string; readonly sport: number; readonly dport: number }
  readonly reply: { readonly src: string; readonly dst: string; readonly sport: number; readonly dport: number }
  /** "ns/name" and the service port name, '' when none */
  readonly service: string
  readonly servicePortName: string
}

function matches(f: ConntrackFilterArgs, t: Tuples): boolean {
  if (f.family !== undefined && t.family !== f.family) return false
  if (f.proto !== undefined && t.protocol !== f.proto && !(f.proto === 'icmp' && t.protocol === 'icmpv6')) return false
  if (f.src !== undefined && t.orig.src !== f.src) return false
  if (f.dst !== undefined && t.orig.dst !== f.dst && t.reply.src !== f.dst) return false
  if (f.service !== undefined && t.service !== f.service && t.servicePortName !== f.service) return false
  if (f.port !== undefined) {
    const p = f.port
    if (t.orig.sport !== p && t.orig.dport !== p && t.reply.sport !== p && t.reply.dport !== p) return false
  }
  return true
}

function serviceKey(table: NatTable, id: number): { service: string; servicePortName: string } {
  const sp = id >= 0 ? table.svcPorts[id] : undefined
  return sp === undefined ? { service: '', servicePortName: '' } : { service: `${sp.namespace}/${sp.name}`, servicePortName: sp.servicePortName }
}

/** list, count or flush against the live state; offline there is none. */
export async function conntrackOp(view: DataplaneView, args: ConntrackArgs): Promise<ConntrackResult> {
  const live = view.live()
  if (live === undefined) throw new InspectError(OFFLINE_CONNTRACK)
  const table = view.table()
  if (args.op === 'flush') return { op: 'flush', flushed: await live.deleteWhere(e => matches(args.filter, { ...e, ...serviceKey(table, e.svcPortId) })) }
  // Entries are matched as they stream past: a count keeps a number, a list only the rows it shows; a count with no
  // filter reads only the chunks' headers.
  const f = args.filter
  if (args.op === 'count' && Object.values(f).every(v => v === undefined)) return { op: 'count', count: await live.conntrackCount() }
  const rows: ConntrackRow[] = []
  let count = 0
  await live.conntrack(e => {
    if (!matches(f, { ...e, ...serviceKey(table, e.svcPortId) })) return
    count++
    if (args.op === 'list') rows.push({ ...e, endpoint: endpointString(e.reply.src, e.reply.sport) })
  })
  if (args.op === 'count') return { op: 'count', count }
  return { op: 'list', entries: rows }
}

const PROTO_NUMBERS: Readonly<Record<string, number>> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 }

/** One entry as a `conntrack -L` line, with tundra's service and endpoint at the end. */
export function conntrackLine(e: ConntrackRow): string {
  const t = (x: ConntrackEntry['orig']): string => `src=${x.src} dst=${x.dst} sport=${x.sport} dport=${x.dport}`
  const parts = [`${e.protocol.padEnd(8)} ${PROTO_NUMBERS[e.protocol] ?? 0} ${e.expiresIn}`]
  if (e.state !== '') parts.push(e.state)
  parts.push(t(e.orig))
  if (!e.flags.includes('replied')) parts.push('[UNREPLIED]')
  parts.push(t(e.reply))
  if (e.flags.includes('assured')) parts.push('[ASSURED]')
  if (e.service !== '') parts.push(`service=${e.service}`)
  if (e.flags.includes('dnat')) parts.push(`endpoint=${e.endpoint}`)
  return parts.join(' ')
}

export function formatConntrack(r: ConntrackResult): { stdout: string; stderr: string } {
  if (r.op === 'count') return { stdout: `${r.count}\n`, stderr: '' }
  if (r.op === 'flush') return { stdout: '', stderr: `tundra conntrack: ${r.flushed} flow entries have been deleted.\n` }
  return {
    stdout: r.entries.map(e => conntrackLine(e) + '\n').join(''),
    stderr: `tundra conntrack: ${r.entries.length} flow entries have been shown.\n`,
  }
}
