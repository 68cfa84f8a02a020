// What the inspection tools (`tundra dump|trace|services|conntrack`) read: the compiled state on the control thread,
// and, from a running agent, live state that the packet thread hands over on request (each request bounded).
// `-f manifests` builds an offline view (no live state: no conntrack, no counters).
import type { Cluster, Family } from '../model/cluster'
import type { NatTable, ResolvedNatConfig } from '../nat/compile'
import type { ConntrackEntry } from '../nat/ctview'
import type { ExplainLive } from '../nat/decide'
import type { DnsServer } from '../dns/server'
import type { EndpointSnapshot, SignalRow } from '../nat/signals'
import type { FlowRecord } from '../dataplane/observe'
export type { FlowRecord } from '../dataplane/observe'

/** A 5-tuple as trace asks the packet thread about it. */
export interface TupleQuery {
  readonly family: Family
  readonly proto: number
  readonly src: string
  readonly dst: string
  readonly sport: number
  readonly dport: number
}

/** Live state, asked of the packet thread. */
export interface LiveClient {
  /** packets and new connections per service port id, since start */
  serviceCounters(): Promise<{ readonly packets: Float64Array; readonly newConnections: Float64Array }>
  /**
   * the per-endpoint book (nat/signals.ts): packets, new connections and, with connect tracking, signals per
   * (service port id, endpoint) slot, since the endpoint was first used; frees `release` first (slots whose endpoint
   * left the table; at most ENDPOINT_RELEASE_BATCH are taken). The one release protocol: only the metrics poller
   * passes `release`.
   */
  endpointCounters(release?: readonly number[]): Promise<EndpointSnapshot>
  /**
   * Visits every entry, read and decoded a bounded chunk at a time; nothing is kept, so a count or a filtered list of
   * a full table costs one chunk of objects, not one per entry (issue 14: a count at the cap took ~0.5 GB).
   */
  conntrack(visit: (e: ConntrackEntry) => void): Promise<void>
  /** how many entries there are, from the chunks' headers (nothing decoded: `tundra conntrack count` at the cap) */
  conntrackCount(): Promise<number>
  /** deletes the entries `pred` selects (conntrack -D); how many */
  deleteWhere(pred: (e: ConntrackEntry) => boolean): Promise<number>
  /** the conntrack entry of this tuple and the affinity pins of `client` for these service port ids, as explain reads them */
  lookups(q: TupleQuery, svcPortIds: readonly number[]): Promise<ExplainLive>
  /** packet-loop, device and NAT counters by name */
  counters(): Promise<Record<string, number>>
  /** the book's golden signals and ejection state as rows (nat/signals.ts signalRows); [] when signals are off */
  endpointSignals?(): Promise<SignalRow[]>
  /** flows recorded since the last call (the first call starts recording; dataplane/observe.ts), and how many were lost */
  observe?(max: number): Promise<{ flows: FlowRecord[]; overwritten: number }>
}

export interface DataplaneView {
  cluster(): Cluster
  table(): NatTable
  natConfig(): ResolvedNatConfig
  /** live state; undefined offline */
  live(): LiveClient | undefined
  dns(): DnsServer
  /** the coarse clock (unix seconds) the engine runs on */
  now(): number
}
