// Live state for the inspection tools, answered by the packet thread's engine: one set of answers whichever thread
// asks. In-process (tests, tools) `engineLive` calls them directly; a running agent's control thread reaches them
// through the thread link (`linkLive`), which carries only plain data.
import type { NatEngine, ConntrackEntry } from '../nat/engine'
import type { ExplainLive } from '../nat/explain'
import { flushMatching, type ConntrackFilterArgs } from '../inspect/conntrack'
import type { Link } from './link'
import type { LiveClient, TupleQuery } from './view'

/** The answers explain needs for one trace, as plain data. */
export interface LookupData {
  readonly q: TupleQuery
  readonly tracked: { entry: ConntrackEntry; direction: 'original' | 'reply' } | null
  readonly pins: readonly (readonly [number, { endpoint: string; expiresIn: number }])[]
}

function lookupData(engine: NatEngine, q: TupleQuery, svcPortIds: readonly number[], now: number): LookupData {
  const tracked = engine.findConntrack(q.family, q.proto, q.src, q.dst, q.sport, q.dport, now) ?? null
  const pins: [number, { endpoint: string; expiresIn: number }][] = []
  for (const id of svcPortIds) {
    const sp = engine.table.svcPorts[id]
    const pin = sp === undefined ? undefined : engine.findAffinity(sp, q.src, now)
    if (pin !== undefined) pins.push([id, pin])
  }
  return { q, tracked, pins }
}

/** Explain's view of prefetched answers: the one tuple asked about, and the pins of the ids asked about. */
function lookupsFrom(d: LookupData): ExplainLive {
  const pins = new Map(d.pins)
  return {
    findConntrack: (family, proto, src, dst, sport, dport) =>
      family === d.q.family && proto === d.q.proto && src === d.q.src && dst === d.q.dst && sport === d.q.sport && dport === d.q.dport
        ? d.tracked ?? undefined : undefined,
    findAffinity: (sp, client) => (client === d.q.src ? pins.get(sp.id) : undefined),
  }
}

export type LiveRequest =
  | { op: 'live'; method: 'serviceCounters' }
  | { op: 'live'; method: 'conntrack' }
  | { op: 'live'; method: 'flush'; filter: ConntrackFilterArgs }
  | { op: 'live'; method: 'lookups'; q: TupleQuery; svcPortIds: readonly number[] }

/** Packet side: one live request against the engine (plain data in, plain data out). */
export function answerLive(engine: NatEngine, req: LiveRequest, now: number): unknown {
  switch (req.method) {
    case 'serviceCounters': return { packets: engine.svcPackets.slice(), newConnections: engine.svcNew.slice() }
    case 'conntrack': return engine.conntrackEntries(now)
    case 'flush': return flushMatching(engine, req.filter)
    case 'lookups': return lookupData(engine, req.q, req.svcPortIds, now)
  }
}

/** Live state of an engine in this thread. */
export function engineLive(engine: NatEngine, now: () => number, counters: () => Record<string, number> = () => ({})): LiveClient {
  const ask = (req: LiveRequest): unknown => answerLive(engine, req, now())
  return {
    serviceCounters: async () => ask({ op: 'live', method: 'serviceCounters' }) as { packets: Float64Array; newConnections: Float64Array },
    conntrack: async () => ask({ op: 'live', method: 'conntrack' }) as ConntrackEntry[],
    flush: async filter => ask({ op: 'live', method: 'flush', filter }) as number,
    lookups: async (q, svcPortIds) => lookupsFrom(ask({ op: 'live', method: 'lookups', q, svcPortIds }) as LookupData),
    counters: async () => counters(),
  }
}

/** Live state of the packet thread at the other end of `link`. */
export function linkLive(link: Link): LiveClient {
  return {
    serviceCounters: () => link.call({ op: 'live', method: 'serviceCounters' } satisfies LiveRequest),
    conntrack: () => link.call({ op: 'live', method: 'conntrack' } satisfies LiveRequest),
    flush: filter => link.call({ op: 'live', method: 'flush', filter } satisfies LiveRequest),
    lookups: async (q, svcPortIds) => lookupsFrom(await link.call<LookupData>({ op: 'live', method: 'lookups', q, svcPortIds } satisfies LiveRequest)),
    counters: () => link.call({ op: 'counters' }),
  }
}
