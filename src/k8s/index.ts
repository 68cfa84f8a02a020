// Manifests in, normalized Cluster out: the one call most users of src/k8s need.
import type { Problem } from '../model/cluster'
import { loadPaths, parseManifests } from './load'
import { normalize, type NormalizeOptions, type NormalizeResult } from './normalize'

export type { NormalizeOptions, NormalizeResult } from './normalize'

/** Reads files/directories and normalizes them; problems and warnings of both steps together. */
export function loadCluster(paths: readonly string[], opts: NormalizeOptions = {}): NormalizeResult {
  const loaded = loadPaths(paths)
  const n = normalize(loaded.objects, opts)
  const problems: Problem[] = [...loaded.problems, ...n.problems]
  return { ...n, problems, warnings: [...loaded.warnings, ...n.warnings] }
}

/** Same, from manifest text (e.g. stdin); `file` names it in problems. */
export function clusterFromText(text: string, file?: string, opts: NormalizeOptions = {}): NormalizeResult {
  const loaded = parseManifests(text, file)
  const n = normalize(loaded.objects, opts)
  return { ...n, problems: [...loaded.problems, ...n.problems], warnings: [...loaded.warnings, ...n.warnings] }
}
