// How a batch of desired-state changes reaches an agent: the few services that changed through updateNat, anything
// bigger (or of unknown scope) as a full compile. `tundra run` and `tundra agent` (the lab's) both go through here.
import { normalize, type NormalizeOptions } from '../k8s/normalize'
import type { Cluster, Service } from '../model/cluster'
import type { ServiceRef } from '../nat/update'
import type { ObjectStore } from './store'

/** Beyond this many changed services in one batch a full compile is as cheap as the incremental path. */
const INCREMENTAL_LIMIT = 256

/** What a batch is applied to (the agent). */
export interface ApplyTarget {
  apply(cluster: Cluster): void
  applyServices(changed: readonly Service[], deleted: readonly ServiceRef[]): void
}

export interface ApplyScope {
  readonly full: boolean
  /** "ns/name" of services whose Service or EndpointSlices changed */
  readonly services: ReadonlySet<string>
  readonly nodes: ReadonlySet<string>
}

/**
 * What the store holds was accepted by the API server (or the lab), which allocated NodePorts from its own
 * --service-node-port-range: like kube-proxy, take any port rather than re-checking against the default range.
 */
const AS_STORED: NormalizeOptions = { allocate: false, nodePortRange: [1, 65535] }

/** The whole desired state of the store (a full sync). */
export function clusterOf(store: ObjectStore, opts: NormalizeOptions = AS_STORED): Cluster {
  return normalize(store.objects(), opts).cluster
}

/** The changed services of a batch, each normalized from its own objects only (cost O(change)). */
function changedServices(store: ObjectStore, keys: Iterable<string>): { changed: Service[]; deleted: ServiceRef[] } {
  const changed: Service[] = []
  const deleted: ServiceRef[] = []
  for (const key of keys) {
    const objs = store.serviceObjects(key)
    const svc = objs.length > 0 ? normalize(objs, AS_STORED).cluster.services[0] : undefined
    if (svc) changed.push(svc)
    else {
      const [namespace, name] = key.split('/', 2) as [string, string]
      deleted.push({ namespace, name })
    }
  }
  return { changed, deleted }
}

/** Applies one batch; returns the full cluster when it did a full sync (the caller may need it, e.g. for peers). */
export function applyBatch(target: ApplyTarget, store: ObjectStore, batch: ApplyScope, full: () => Cluster = () => clusterOf(store)): Cluster | undefined {
  if (batch.full || batch.services.size > INCREMENTAL_LIMIT || batch.nodes.size > 0) {
    const cluster = full()
    target.apply(cluster)
    return cluster
  }
  const { changed, deleted } = changedServices(store, batch.services)
  target.applyServices(changed, deleted)
  return undefined
}
