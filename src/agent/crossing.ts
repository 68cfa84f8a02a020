// How desired state crosses from the control thread to the packet thread: the one place that decides what a NAT
// install and a zone install carry. Both sides are here so they cannot drift apart.
//
// Today an install carries the change itself (the whole cluster for a full sync, the changed services otherwise) and
// the packet side compiles it; the image contract in ARCHITECTURE.md replaces that with compiled, transferable tables.
import type { Cluster, Service } from '../model/cluster'
import { compileNat, updateNat, type NatTable, type ResolvedNatConfig, type ServiceRef } from '../nat/compile'
import type { NatEngine } from '../nat/engine'
import type { DnsServer } from '../dns/server'

export interface NatInstall {
  readonly config: ResolvedNatConfig
  /** a full sync: the whole desired state */
  readonly cluster?: Cluster
  /** an incremental sync: these services changed or were deleted */
  readonly changed?: readonly Service[]
  readonly deleted?: readonly ServiceRef[]
}

export type ZoneInstall = Record<string, never>

/** Control side: the install for a full sync. */
export function natFull(cluster: Cluster, config: ResolvedNatConfig): { install: NatInstall; transfer: ArrayBuffer[] } {
  return { install: { config, cluster }, transfer: [] }
}

/** Control side: the install for a few changed services. */
export function natChange(config: ResolvedNatConfig, changed: readonly Service[], deleted: readonly ServiceRef[]): { install: NatInstall; transfer: ArrayBuffer[] } {
  return { install: { config, changed, deleted }, transfer: [] }
}

export function zoneInstall(): { install: ZoneInstall; transfer: ArrayBuffer[] } {
  return { install: {}, transfer: [] }
}

/**
 * Packet side: keeps what the installs build on and applies them to the engine and the DNS server. A failing
 * install throws before anything is swapped, so the last good table keeps serving.
 */
export class PacketTables {
  private cluster: Cluster
  table: NatTable

  constructor(first: NatInstall) {
    this.cluster = first.cluster ?? { services: [], nodes: [], pods: [] }
    this.table = compileNat(this.cluster, first.config)
  }

  installNat(engine: NatEngine, install: NatInstall): { resets: number } {
    let table: NatTable
    let cluster: Cluster
    if (install.cluster !== undefined) {
      table = compileNat(install.cluster, install.config, this.table)
      cluster = install.cluster
    } else {
      const changed = install.changed ?? []
      const deleted = install.deleted ?? []
      table = updateNat(this.table, changed, deleted)
      cluster = { ...this.cluster, services: mergeServices(this.cluster.services, changed, deleted) }
    }
    this.table = table
    this.cluster = cluster
    return { resets: engine.swap(table).resets }
  }

  installZone(dns: DnsServer, _install: ZoneInstall): void {
    dns.setCluster(this.cluster)
  }
}

/** The services of `base` with `changed` replacing or adding by namespace/name and `deleted` removed. */
export function mergeServices(base: readonly Service[], changed: readonly Service[], deleted: readonly ServiceRef[]): Service[] {
  const gone = new Set(deleted.map(d => `${d.namespace}/${d.name}`))
  const byKey = new Map(changed.map(svc => [`${svc.namespace}/${svc.name}`, svc]))
  const out: Service[] = []
  for (const svc of base) {
    const key = `${svc.namespace}/${svc.name}`
    if (gone.has(key)) continue
    const next = byKey.get(key)
    out.push(next ?? svc)
    byKey.delete(key)
  }
  out.push(...byKey.values())
  return out
}
