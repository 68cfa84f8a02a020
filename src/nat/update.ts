// updateNat: the copy-on-write update of a NatTable. Only the named services are recompiled; everything else (maps
// until their first change, endpoint sets, Maglev tables, service entries) is shared with the table it came from.

import type { Service } from '../model/cluster'
import type { CompiledService, HealthCheck, NatTable, SvcPort } from './compile'
import { cloneFamilyTable, cmp, compileService, finish, healthCheckOf, serviceKey } from './compile'
import { Scratch, type Ctx } from './compile'
import { Arena } from './endpoints'
import type { U32Map } from './hash'

/** Identifies a deleted service for updateNat. */
export interface ServiceRef {
  readonly namespace: string
  readonly name: string
}

/**
 * Recompiles only `changed` services (added or modified) and removes `deleted` ones, sharing everything else with
 * `table`, which stays untouched. Node addresses, CIDRs and options come from `table.config`, the node's zone from
 * `table.nodeZone`: change those with a full compileNat. Frontend conflicts are settled in update order here (compileNat settles them by name).
 */
export function updateNat(table: NatTable, changed: readonly Service[], deleted: readonly ServiceRef[] = []): NatTable {
  const touched = new Set<string>()
  for (const s of changed) touched.add(serviceKey(s.namespace, s.name))
  for (const d of deleted) touched.add(serviceKey(d.namespace, d.name))
  // The maps are copied on their first change only (U32Map.clone is copy-on-write).
  const v4 = cloneFamilyTable(table.v4)
  const v6 = cloneFamilyTable(table.v6)
  const svcPorts = table.svcPorts.slice()
  const svcChanges = new Map<string, CompiledService | undefined>()
  const hcChanges = new Map<string, HealthCheck | undefined>()
  const free = [...table.freeIds]
  const released = new Map<string, SvcPort>()
  const releasedIds = new Set<number>()
  const olds: CompiledService[] = []

  for (const key of touched) {
    svcChanges.set(key, undefined)
    if (table.healthChecks.has(key)) hcChanges.set(key, undefined)
    const old = table.services.get(key)
    if (old === undefined) continue
    olds.push(old)
    for (const id of old.svcPortIds) {
      const sp = svcPorts[id]
      if (sp !== undefined) released.set(sp.key, sp)
      releasedIds.add(id)
      svcPorts[id] = undefined
    }
  }
  const problems = table.problems.filter(p => !touched.has(p.object.replace(/^Service /, '')))
  const ctx: Ctx = {
    config: table.config,
    zone: table.nodeZone,
    v4,
    v6,
    svcPorts,
    free,
    nextUid: table.nextUid,
    problems,
    prevByKey: k => released.get(k),
    arena: new Arena(256),
    scratch: new Scratch(),
    replaceable: releasedIds,
  }
  const keyed = changed.map(s => ({ k: serviceKey(s.namespace, s.name), s }))
  keyed.sort((a, b) => cmp(a.k, b.k))
  const kept = new Set<string>()
  for (const { k, s } of keyed) {
    if (svcChanges.get(k) !== undefined) continue
    const cs = compileService(ctx, s, k)
    svcChanges.set(k, cs)
    const hc = healthCheckOf(ctx, cs)
    if (hc !== undefined) hcChanges.set(k, hc)
    ownedKeys(kept, 'f4', cs.fe4, v4.fe.kw)
    ownedKeys(kept, 'f6', cs.fe6, v6.fe.kw)
    ownedKeys(kept, 'v4', cs.vip4, v4.vip.kw)
    ownedKeys(kept, 'v6', cs.vip6, v6.vip.kw)
  }
  // What the old versions owned and no new version took over goes now.
  for (const old of olds) {
    removeOwned(v4.fe, 'f4', old.fe4, releasedIds, kept, true)
    removeOwned(v6.fe, 'f6', old.fe6, releasedIds, kept, true)
    removeOwned(v4.vip, 'v4', old.vip4, releasedIds, kept, false)
    removeOwned(v6.vip, 'v6', old.vip6, releasedIds, kept, false)
  }
  // Released ids nobody reclaimed become free only now, so a new service cannot take the id of one re-added above.
  for (const sp of released.values()) if (svcPorts[sp.id] === undefined) free.push(sp.id)
  free.sort((a, b) => a - b)
  const changedIds = new Set(releasedIds)
  for (const cs of svcChanges.values()) if (cs !== undefined) for (const id of cs.svcPortIds) changedIds.add(id)
  return finish(ctx, table.generation + 1, table.services.with(svcChanges), table.healthChecks.with(hcChanges), {
    from: table.generation,
    ids: Object.freeze([...changedIds].sort((a, b) => a - b)),
  })
}

function ownedKeys(into: Set<string>, tag: string, owned: readonly number[], kw: number): void {
  for (let r = 0; r < owned.length; r += kw) into.add(`${tag}:${owned.slice(r, r + kw).join(',')}`)
}

/** Deletes frontends (or VIPs) an old service version owned, unless kept by a new version or owned by another by now. */
function removeOwned(map: U32Map, tag: string, owned: readonly number[], mine: ReadonlySet<number>, kept: ReadonlySet<string>, isFe: boolean): void {
  const kw = map.kw
  for (let r = 0; r < owned.length; r += kw) {
    if (kept.size > 0 && kept.has(`${tag}:${owned.slice(r, r + kw).join(',')}`)) continue
    for (let i = 0; i < kw; i++) map.key[i] = owned[r + i]!
    const s = map.find()
    if (s < 0) continue
    const id = isFe ? Math.floor(map.vals[s]! / 4) : map.vals[s]!
    if (mine.has(id)) map.removeAt(s)
  }
}
