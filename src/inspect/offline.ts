// `tundra dump|trace|services -f manifests`: a DataplaneView built from files instead of a running agent.
//
// Manifests as a user writes them (a Deployment, a Service, Pods without addresses) describe nothing a node could
// route yet, so they are "run" the way `tundra lab up` would run them: pods placed on node1.. and given lab
// addresses, EndpointSlices computed. Manifests that already carry addresses (the lab's computed manifests, a
// cluster dump, hand-written EndpointSlices) are taken as they are.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import type { SchedulerName } from '../nat/sched'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Cluster, Problem } from '../model/cluster'
import type { DataplaneView } from '../agent/view'
import { loadCluster } from '../k8s/index'
import { loadPaths } from '../k8s/load'
import { validateAll } from '../k8s/validate'
import { compileLab, formatProblem, LabManifestError } from '../lab/compile'
import { LAB } from '../lab/plan'
import { compileNat, type NatConfig } from '../nat/compile'
import { ipFamily } from '../wire/addr'
import { DnsServer } from '../dns/server'
import { InspectError } from './common'

export interface OfflineOptions {
  /** the node to act as; default the first Node of the manifests, or node1 */
  readonly nodeName?: string
  /** its address; default that Node's first address, or 172.18.0.11 (the lab's node1) */
  readonly nodeIP?: string
  /** pod network (kube-proxy --cluster-cidr); default 10.100.0.0/16 */
  readonly clusterCIDR?: string
  /** nodes to place address-less pods on, as `lab up --nodes` (default 1) */
  readonly nodes?: number
  readonly dnsIP?: string
  readonly zone?: string
  readonly lb?: 'random' | 'maglev'
  /** endpoint scheduler of Services without a tundra.io/scheduler label (default random) */
  readonly scheduler?: SchedulerName
  readonly icmpMode?: 'reply' | 'reject' | 'drop'
  /** the API server's --service-node-port-range (default 30000-32767) */
  readonly nodePortRange?: readonly [number, number]
  /** where problems and warnings go, one line each; default stderr */
  readonly report?: (line: string) => void
}

export interface OfflineView extends DataplaneView {
  /** objects skipped, as `file: object: field: reason` lines were reported */
  readonly problems: readonly Problem[]
  readonly warnings: readonly string[]
  /** whether pods were placed and addressed like `lab up` does */
  readonly placed: boolean
}

export const OFFLINE_DEFAULTS = {
  nodeName: 'node1',
  nodeIP: '172.18.0.11',
  clusterCIDR: LAB.clusterCIDR,
  dnsIP: LAB.dnsIP,
  zone: LAB.zone,
} as const

/** Manifests a node could not route as they are: pods without addresses, no endpoints anywhere, no nodes. */
function needsPlacement(c: Cluster): boolean {
  return c.nodes.length === 0 && c.pods.some(p => p.ips.length === 0) && c.services.every(s => s.endpoints.length === 0)
}

/**
 * Runs the manifests as `lab up` would (compileLab). When some objects are invalid, only the valid ones are run, so
 * one bad object does not leave every service without endpoints: they are written to a scratch dir, one file per
 * source file, and names in what comes back are mapped to the source files again.
 */
function placeLikeLab(
  files: readonly string[],
  someInvalid: boolean,
  nodes: number,
  nodePortRange?: readonly [number, number],
): { cluster: Cluster; warnings: string[] } | { problems: Problem[]; warnings: string[] } {
  const range = nodePortRange !== undefined ? { nodePortRange } : {}
  let inputs = [...files]
  const back = new Map<string, string>()
  let dir: string | undefined
  if (someInvalid) {
    const valid = validateAll(loadPaths(files).objects, range).objects
    dir = mkdtempSync(join(tmpdir(), 'tundra-inspect-'))
    const groups = new Map<string, unknown[]>()
    for (const l of valid) {
      const f = l.file ?? '<input>'
      const g = groups.get(f) ?? []
      g.push(l.object)
      groups.set(f, g)
    }
    inputs = []
    let i = 0
    for (const [f, items] of groups) {
      const tmp = join(dir, `${String(i++).padStart(4, '0')}.json`)
      writeFileSync(tmp, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }))
      inputs.push(tmp)
      back.set(tmp, f)
    }
  }
  const unmap = (text: string): string => {
    for (const [tmp, f] of back) text = text.split(tmp).join(f)
    return text
  }
  try {
    if (inputs.length === 0) return { problems: [], warnings: [] }
    const plan = compileLab({ name: 'inspect', files: inputs, nodes, dataplane: 'none', ...range })
    return { cluster: plan.cluster, warnings: plan.warnings.map(unmap) }
  } catch (err) {
    if (!(err instanceof LabManifestError)) throw new InspectError((err as Error).message)
    return {
      problems: err.problems.map(p => (p.file !== undefined ? { ...p, file: unmap(p.file) } : p)),
      warnings: [],
    }
  } finally {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  }
}

export function offlineView(files: readonly string[], opts: OfflineOptions = {}): OfflineView {
  if (files.length === 0) throw new InspectError('give at least one manifest file or directory (-f)')
  // A missing file is a usage error, not a problem to skip: nothing useful comes from inspecting nothing.
  for (const f of files) if (!existsSync(f)) throw new InspectError(`${f}: no such file or directory`)
  const report =
    opts.report ??
    ((line: string) => {
      process.stderr.write(line + '\n')
    })

  const loaded = loadCluster(files, {
    expandDeployments: true,
    endpointSliceController: true,
    ...(opts.nodePortRange !== undefined ? { nodePortRange: opts.nodePortRange } : {}),
  })
  let cluster = loaded.cluster
  let problems: Problem[] = loaded.problems
  const warnings: string[] = [...loaded.warnings]
  let placed = false
  if (needsPlacement(cluster)) {
    const r = placeLikeLab(files, problems.length > 0, opts.nodes ?? 1, opts.nodePortRange)
    if ('cluster' in r) {
      cluster = r.cluster
      placed = true
    } else {
      const seen = new Set(problems.map(formatProblem))
      problems = [...problems, ...r.problems.filter(p => !seen.has(formatProblem(p)))]
      warnings.push('pods were not given addresses (see the problems above): services show no endpoints')
    }
    warnings.push(...r.warnings.filter(w => !warnings.includes(w)))
  }

  const node = opts.nodeName !== undefined ? cluster.nodes.find(n => n.name === opts.nodeName) : cluster.nodes[0]
  if (opts.nodeName !== undefined && node === undefined && opts.nodeIP === undefined && cluster.nodes.length > 0) {
    throw new InspectError(
      `no node ${JSON.stringify(opts.nodeName)} in the manifests (nodes: ${cluster.nodes.map(n => n.name).join(', ')}); give --node-ip too to act as it anyway`,
    )
  }
  const nodeName = opts.nodeName ?? node?.name ?? OFFLINE_DEFAULTS.nodeName
  const nodeIP = opts.nodeIP ?? node?.addresses.find(a => ipFamily(a) === 4) ?? node?.addresses[0] ?? OFFLINE_DEFAULTS.nodeIP
  if (ipFamily(nodeIP) === undefined) throw new InspectError(`--node-ip: ${JSON.stringify(nodeIP)} is not an IP address`)
  const clusterCIDR = opts.clusterCIDR ?? OFFLINE_DEFAULTS.clusterCIDR

  const natConfig: NatConfig = {
    nodeName,
    nodeIPs: [nodeIP],
    clusterCIDRs: [clusterCIDR],
    ...(opts.lb !== undefined ? { lb: opts.lb } : {}),
    ...(opts.scheduler !== undefined ? { scheduler: opts.scheduler } : {}),
    ...(opts.icmpMode !== undefined ? { icmpMode: opts.icmpMode } : {}),
  }
  const table = compileNat(cluster, natConfig)
  for (const p of table.problems) {
    if (p.object === 'config') {
      const flag = p.field === 'clusterCIDRs' ? '--cluster-cidr' : p.field === 'nodeIPs' ? '--node-ip' : p.field
      throw new InspectError(`${flag}: ${p.reason}`)
    }
  }
  problems = [...problems, ...table.problems]

  // Never forwards offline: no upstreams, and /etc/resolv.conf is not read.
  const dns = new DnsServer({ zone: opts.zone ?? OFFLINE_DEFAULTS.zone, dnsIP: opts.dnsIP ?? OFFLINE_DEFAULTS.dnsIP, upstream: [], resolvConf: '/dev/null' })
  dns.setCluster(cluster)

  for (const p of problems) report(formatProblem(p))
  for (const w of warnings) report(`warning: ${w}`)

  return {
    problems,
    warnings,
    placed,
    cluster: () => cluster,
    table: () => table,
    natConfig: () => table.config,
    live: () => undefined,
    dns: () => dns,
    now: () => Math.floor(Date.now() / 1000),
  }
}
