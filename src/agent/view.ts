// What the inspection tools (`tundra dump|trace|services|conntrack`) read: the same snapshot the packet loop uses.
// A running agent implements it live; `-f manifests` builds an offline one (no engine: no conntrack, no counters).
import type { Cluster } from '../model/cluster'
import type { NatTable, ResolvedNatConfig } from '../nat/compile'
import type { NatEngine } from '../nat/engine'
import type { DnsServer } from '../dns/server'

export interface DataplaneView {
  cluster(): Cluster
  table(): NatTable
  natConfig(): ResolvedNatConfig
  /** live NAT state; undefined offline */
  engine(): NatEngine | undefined
  dns(): DnsServer
  /** the coarse clock (unix seconds) the engine runs on */
  now(): number
  /** packet-loop and device counters by name; {} offline */
  counters(): Record<string, number>
}
