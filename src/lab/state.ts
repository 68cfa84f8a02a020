// A lab's persistent record, /run/tundra/labs/<lab>/state.json: everything `lab up` made, written before it is made,
// so `lab down` can remove it all even when `lab up` or an agent crashed halfway.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Dataplane } from './plan'

/** Overridable for tests that must not touch the real /run (TUNDRA_LAB_ROOT). */
export const labsRoot = (): string => process.env['TUNDRA_LAB_ROOT'] ?? '/run/tundra/labs'
export const labDir = (name: string): string => join(labsRoot(), name)
export const statePath = (name: string): string => join(labDir(name), 'state.json')

export type ProcessRole = 'agent' | 'nginx' | 'netexec' | 'dnsmasq'

export interface LabProcess {
  readonly pid: number
  /** /proc/<pid>/stat starttime: a recycled PID never matches, so `lab down` never kills a stranger */
  readonly startTime: number
  readonly role: ProcessRole
  /** network namespace it runs in */
  readonly ns: string
  /** pod `<namespace>/<name>`, node name, or 'external' / 'dns' */
  readonly owner: string
  readonly argv: readonly string[]
  readonly log: string
}

export interface LabNodeState {
  readonly name: string
  readonly ns: string
  readonly ip: string
  readonly podCIDR: string
  /** dual-stack labs: the node's IPv6 pod block */
  readonly podCIDR6?: string
  /** labels the manifests gave this node (a Node object of its name) */
  readonly labels?: Readonly<Record<string, string>>
  readonly agentConfig?: string
  readonly control?: string
}

export interface LabPodState {
  readonly namespace: string
  readonly name: string
  readonly ns: string
  readonly ip: string
  /** dual-stack labs: the pod's IPv6 address */
  readonly ip6?: string
  readonly node: string
  readonly hostVeth: string
  readonly hostname: string
  /** true once every server in the pod answered a probe from its node */
  readonly ready: boolean
  /** `lab set-ready --ready=false`: taken as a failing readiness probe (not ready, endpoints ready=false) */
  readonly failingReadiness?: boolean
  readonly probes: readonly string[]
}

export interface LabServicePortState {
  readonly name: string
  readonly port: number
  readonly targetPort: number | string
  readonly nodePort: number
  readonly protocol: string
}

export interface LabServiceState {
  readonly namespace: string
  readonly name: string
  readonly type: string
  readonly clusterIP: string
  /** every cluster IP, when there are two (a dual-stack Service) */
  readonly clusterIPs?: readonly string[]
  readonly externalIPs: readonly string[]
  readonly ports: readonly LabServicePortState[]
}

export interface LabSliceState {
  readonly namespace: string
  readonly name: string
  readonly service: string
  readonly addressType: string
  readonly ports: readonly string[]
  readonly endpoints: readonly string[]
}

export interface LabState {
  readonly version: 1
  readonly name: string
  phase: 'creating' | 'up' | 'failed'
  readonly createdAt: string
  readonly dataplane: Dataplane
  readonly dir: string
  /** where tundra's compiled JS was run from */
  readonly repo: string
  /** every namespace the lab made, recorded before it was created */
  namespaces: string[]
  /** files and directories outside `dir` (the /etc/netns/<ns> dirs) */
  files: string[]
  processes: LabProcess[]
  net: { readonly ns: string; readonly bridge: string }
  nodes: LabNodeState[]
  external: { readonly ns: string; readonly ip: string }
  upstreamDns: { readonly ns: string; readonly ip: string }
  pods: LabPodState[]
  /** labs without a manifests directory only (older ones): `lab status` reads Services and slices from there */
  services?: LabServiceState[]
  endpointSlices?: LabSliceState[]
  /** what the agents read: a directory with one file per object (objects.ts), or one file in older labs */
  manifests?: string
  warnings: string[]
}

export class LabError extends Error {
  readonly code = 'ELAB' as const
  override readonly name = 'LabError'
}

/** Writes the state atomically (a reader never sees half a file). */
export function saveState(state: LabState): void {
  const path = join(state.dir, 'state.json')
  writeFileSync(`${path}.tmp`, JSON.stringify(state, null, 2) + '\n')
  renameSync(`${path}.tmp`, path)
}

export function readState(name: string): LabState | undefined {
  const p = statePath(name)
  if (!existsSync(p)) return undefined
  const s = JSON.parse(readFileSync(p, 'utf8')) as LabState
  if (s.version !== 1) throw new LabError(`${p}: unknown state version ${String(s.version)}`)
  return s
}

/** The lab's state, or a LabError that says which labs there are. */
export function loadLabState(name?: string): LabState {
  const resolved = resolveLabName(name)
  const s = readState(resolved)
  if (!s) throw new LabError(`no lab named ${JSON.stringify(resolved)} is up${listHint()}`)
  return s
}

/** Names of labs with a state dir. */
export function listLabs(): string[] {
  try {
    return readdirSync(labsRoot(), { withFileTypes: true })
      .filter(d => d.isDirectory())
      .map(d => d.name)
      .sort()
  } catch {
    return []
  }
}

function listHint(): string {
  const labs = listLabs()
  return labs.length === 0 ? ' (no lab is up)' : ` (labs up: ${labs.join(', ')})`
}

/** `--name` may be left out when exactly one lab is up. */
export function resolveLabName(name?: string): string {
  if (name !== undefined) return name
  const labs = listLabs()
  if (labs.length === 1) return labs[0]!
  if (labs.length === 0) throw new LabError('no lab is up (start one with `tundra lab up -f <manifests>`)')
  throw new LabError(`several labs are up (${labs.join(', ')}): say which with --name`)
}

export function ensureLabsRoot(): void {
  mkdirSync(labsRoot(), { recursive: true })
}
