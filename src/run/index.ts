// `tundra run`'s building blocks, for the agent: where desired state comes from, when it is applied, how it is
// configured. See each module's header.
import type { RunConfig } from './kpconfig'
import { FileSource } from './files'
import { ApiSource, type WatchOptions } from './watch'
import type { DesiredStateSource } from './source'

export * from './store'
export * from './source'
export * from './sync'
export * from './kpconfig'
export { ApiSource, loadKubeConfig, loadClientNode, GoneError, ApiError, type WatchOptions } from './watch'
export { FileSource, type FileSourceOptions, type ReloadResult } from './files'
export { Backoff, type BackoffOptions } from './backoff'

/** `-f manifests` given: the files; otherwise the API server named by cfg.kubeconfig (or in-cluster). */
export function createSource(
  cfg: RunConfig,
  opts: {
    readonly manifests?: readonly string[]
    readonly nodeName: string
    readonly log?: (line: string) => void
    readonly watch?: Partial<WatchOptions>
  },
): DesiredStateSource {
  if (opts.manifests !== undefined && opts.manifests.length > 0) {
    return new FileSource(opts.manifests, opts.log !== undefined ? { log: opts.log } : {})
  }
  return new ApiSource({
    kubeconfig: cfg.kubeconfig,
    nodeName: opts.nodeName,
    resyncSeconds: cfg.configSyncPeriod,
    ...(opts.log !== undefined ? { log: opts.log } : {}),
    ...opts.watch,
  })
}
