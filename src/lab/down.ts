// `tundra lab down`: removes everything a lab made — processes (by recorded PID), namespaces, /etc/netns dirs, state —
// from state.json, and by name prefix for whatever a crash left unrecorded.
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { deleteNamespaceSync, listNamespaces } from '../netns/netns'
import { labNameError, labPrefix } from './plan'
import { stopProcesses } from './proc'
import { LabError, labDir, listLabs, readState, type LabState } from './state'

export interface LabDownResult {
  readonly name: string
  /** false when there was nothing of this lab to remove */
  readonly found: boolean
  readonly stopped: readonly number[]
  readonly namespaces: readonly string[]
}

/** Labs known by state dir or only by leftover namespaces (`tundra-<lab>-…`; lab names have no '-'). */
export function knownLabs(): string[] {
  const names = new Set(listLabs())
  for (const ns of listNamespaces()) {
    const m = /^tundra-([a-z][a-z0-9]*)-/.exec(ns)
    if (m) names.add(m[1]!)
  }
  return [...names].sort()
}

export async function labDown(name?: string, opts: { log?: (line: string) => void } = {}): Promise<LabDownResult> {
  const say = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  if (name === undefined) {
    const labs = knownLabs()
    if (labs.length === 0) return { name: '', found: false, stopped: [], namespaces: [] }
    if (labs.length > 1) throw new LabError(`several labs are up (${labs.join(', ')}): say which with --name`)
    name = labs[0]!
  }
  const bad = labNameError(name)
  if (bad) throw new LabError(bad)

  let state: LabState | undefined
  try {
    state = readState(name)
  } catch (err) {
    say(`[lab] warning: unreadable state, removing by name: ${(err as Error).message}`)
  }
  const prefix = labPrefix(name)
  const namespaces = [...new Set([...(state?.namespaces ?? []), ...listNamespaces().filter(ns => ns.startsWith(prefix))])]
  const etcDirs = [
    ...new Set([
      ...(state?.files ?? []),
      ...(existsSync('/etc/netns')
        ? readdirSync('/etc/netns')
            .filter(d => d.startsWith(prefix))
            .map(d => join('/etc/netns', d))
        : []),
    ]),
  ]
  const dir = labDir(name)
  if (!state && namespaces.length === 0 && etcDirs.length === 0 && !existsSync(dir)) return { name, found: false, stopped: [], namespaces: [] }

  const procs = state?.processes ?? []
  say(`[lab] stopping ${procs.length} processes of lab ${name}`)
  const stopped = await stopProcesses(procs)

  // Pods before nodes before the network, the reverse of creation: each delete also kills what still runs inside.
  const live = new Set(listNamespaces())
  const toDelete = namespaces.filter(ns => live.has(ns)).reverse()
  for (const [i, ns] of toDelete.entries()) {
    deleteNamespaceSync(ns)
    if ((i + 1) % 10 === 0 || i + 1 === toDelete.length) say(`[lab] deleting namespaces… ${i + 1}/${toDelete.length}`)
  }
  const still = listNamespaces().filter(ns => ns.startsWith(prefix))
  for (const d of etcDirs) rmSync(d, { recursive: true, force: true })
  rmSync(dir, { recursive: true, force: true })
  if (still.length > 0) throw new LabError(`could not delete namespaces ${still.join(', ')}`)
  say(`[lab] lab ${name} is down`)
  return { name, found: true, stopped, namespaces: toDelete }
}
