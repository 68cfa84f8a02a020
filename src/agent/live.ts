// Live state for the inspection tools, from the engine that owns it. The control thread asks in bounded requests
// (a conntrack chunk, a batch of deletes, one lookup) and does the rest itself: decoding entries with its NAT table,
// matching filters, choosing what to delete. In-process (tests, tools) the same requests go straight to an engine.
import type { NatEngine } from '../nat/engine'
import type { NatTable } from '../nat/compile'
import { CT_CHUNK, ctChunkCount, forEachCtEntry, type ConntrackEntry } from '../nat/ctview'
import type { ExplainLive } from '../nat/decide'
import type { Family } from '../model/cluster'
import type { Link } from './link'
import { CT_DELETE_BATCH, ENDPOINT_RELEASE_BATCH, type PacketRequest, type TupleRef } from './packet-path'
import type { LiveClient, TupleQuery } from './view'
import { signalRows, type EndpointSnapshot } from '../nat/signals'
import { decodeFlows } from '../dataplane/observe'
import { LOOP_DROP_NAMES } from '../dataplane/loop'

/** The answers explain needs for one trace, as plain data. */
interface LookupData {
  readonly q: TupleQuery
  readonly tracked: { entry: ConntrackEntry; direction: 'original' | 'reply' } | null
  readonly pins: readonly (readonly [number, { endpoint: string; expiresIn: number }])[]
}

/** The bounded requests live state is made of. */
interface LivePort {
  ask<T>(req: PacketRequest): Promise<T>
}

const PROTO: Readonly<Record<string, number>> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 }

function liveOver(port: LivePort, table: () => NatTable | undefined): LiveClient {
  const name = (e: ConntrackEntry): ConntrackEntry => {
    const sp = e.svcPortId >= 0 ? table()?.svcPorts[e.svcPortId] : undefined
    return sp === undefined || e.service !== '' ? e : { ...e, service: `${sp.namespace}/${sp.name}` }
  }
  const conntrack = async (visit: (e: ConntrackEntry) => void): Promise<void> => {
    for (let c = 0; c >= 0; ) {
      const r = await port.ask<{ bytes: ArrayBuffer; next: number }>({ op: 'ctChunk', cursor: c, max: CT_CHUNK })
      forEachCtEntry(r.bytes, table(), visit)
      c = r.next
    }
  }
  return {
    serviceCounters: () => port.ask({ op: 'serviceCounters' }),
    endpointCounters: (release = []) => port.ask({ op: 'endpoints', release }),
    counters: () => port.ask({ op: 'counters' }),
    endpointSignals: async () => {
      const s = await port.ask<EndpointSnapshot>({ op: 'endpoints', release: [] })
      const t = table()
      return t === undefined ? [] : signalRows(t, s)
    },
    observe: async max => {
      const d = await port.ask<{ words: Uint32Array; times: Float64Array; names: Uint8Array; n: number; overwritten: number; originMs: number }>({
        op: 'observe',
        max,
      })
      return { flows: decodeFlows(d, LOOP_DROP_NAMES), overwritten: d.overwritten }
    },
    conntrack,
    conntrackCount: async () => {
      let n = 0
      for (let c = 0; c >= 0; ) {
        const r = await port.ask<{ bytes: ArrayBuffer; next: number }>({ op: 'ctChunk', cursor: c, max: CT_CHUNK })
        n += ctChunkCount(r.bytes)
        c = r.next
      }
      return n
    },
    deleteWhere: async pred => {
      // Deleted chunk by chunk, so a flush of a full table holds one chunk's tuples, never the whole table's. The
      // cursor has passed the entries deleted, so the scan neither misses nor repeats one.
      let deleted = 0
      const doomed: TupleRef[] = []
      const send = async (): Promise<void> => {
        for (let i = 0; i < doomed.length; i += CT_DELETE_BATCH) {
          deleted += await port.ask<number>({ op: 'ctDelete', tuples: doomed.slice(i, i + CT_DELETE_BATCH) })
        }
        doomed.length = 0
      }
      for (let c = 0; c >= 0; ) {
        const r = await port.ask<{ bytes: ArrayBuffer; next: number }>({ op: 'ctChunk', cursor: c, max: CT_CHUNK })
        forEachCtEntry(r.bytes, table(), e => {
          if (!pred(e)) return
          doomed.push({
            family: e.family,
            proto: PROTO[e.protocol] ?? Number(e.protocol),
            src: e.orig.src,
            dst: e.orig.dst,
            sport: e.orig.sport,
            dport: e.orig.dport,
          })
        })
        await send()
        c = r.next
      }
      return deleted
    },
    lookups: async (q, ids) => {
      const t = table()
      const svcPortIds: { id: number; family: Family }[] = []
      for (const id of ids) {
        const sp = t?.svcPorts[id]
        if (sp !== undefined) svcPortIds.push({ id, family: sp.family })
      }
      const d = await port.ask<LookupData>({ op: 'lookups', q, svcPortIds })
      return lookupsFrom({ ...d, tracked: d.tracked === null ? null : { ...d.tracked, entry: name(d.tracked.entry) } })
    },
  }
}

/** Explain's view of prefetched answers: the one tuple asked about, and the pins of the ids asked about. */
function lookupsFrom(d: LookupData): ExplainLive {
  const pins = new Map(d.pins)
  return {
    findConntrack: (family, proto, src, dst, sport, dport) =>
      family === d.q.family && proto === d.q.proto && src === d.q.src && dst === d.q.dst && sport === d.q.sport && dport === d.q.dport
        ? (d.tracked ?? undefined)
        : undefined,
    findAffinity: (sp, client) => (client === d.q.src ? pins.get(sp.id) : undefined),
  }
}

/** Live state of the packet thread at the other end of `link`, read against the control thread's table. */
export function linkLive(link: Link, table: () => NatTable): LiveClient {
  return liveOver({ ask: req => link.call(req) }, table)
}

/** Live state of an engine in this thread (tests, tools): the same requests, answered directly. */
export function engineLive(engine: NatEngine, now: () => number, counters: () => Record<string, number> = () => ({})): LiveClient {
  const ask = async (req: PacketRequest): Promise<unknown> => {
    switch (req.op) {
      case 'serviceCounters':
        return { packets: engine.svcPackets.slice(), newConnections: engine.svcNew.slice() }
      case 'endpoints':
        engine.book.release(req.release.slice(0, ENDPOINT_RELEASE_BATCH))
        return engine.book.snapshot(engine.msClock(), engine.tracking)
      case 'counters':
        return counters()
      case 'ctChunk':
        return engine.ctChunk(req.cursor, req.max, now())
      case 'ctDelete':
        return req.tuples.filter(t => engine.deleteTuple(t.family, t.proto, t.src, t.dst, t.sport, t.dport)).length
      case 'lookups': {
        const q = req.q
        const tracked = engine.findConntrack(q.family, q.proto, q.src, q.dst, q.sport, q.dport, now()) ?? null
        const pins: [number, { endpoint: string; expiresIn: number }][] = []
        for (const sp of req.svcPortIds) {
          const p = engine.findAffinity(sp, q.src, now())
          if (p) pins.push([sp.id, p])
        }
        return { q, tracked, pins }
      }
      default:
        throw new Error(`${req.op}: not a live request`)
    }
  }
  return liveOver({ ask: ask as LivePort['ask'] }, () => engine.table)
}
