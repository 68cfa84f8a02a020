// `tundra lab status`: the lab as `kubectl get nodes,pods,svc,endpointslices -o wide` would show it, or as JSON.
import { statSync } from 'node:fs'
import type { EndpointSlice, Service } from '../k8s/types'
import { readObjects, serviceState, sliceState } from './objects'
import { isOurs } from './proc'
import { loadLabState, type LabServiceState, type LabSliceState, type LabState } from './state'
import type { Dataplane } from './plan'

export interface LabStatus {
  readonly name: string
  readonly dataplane: Dataplane
  readonly phase: LabState['phase']
  readonly nodes: readonly { readonly name: string; readonly ip: string; readonly podCIDR: string; readonly podCIDR6?: string; readonly ready: boolean }[]
  readonly external: { readonly ip: string }
  readonly upstreamDns: { readonly ip: string }
  readonly pods: readonly {
    readonly namespace: string
    readonly name: string
    readonly ip: string
    readonly ip6?: string
    readonly node: string
    readonly ready: boolean
  }[]
  readonly services: readonly LabServiceState[]
  readonly endpointSlices: readonly LabSliceState[]
}

/** Current status: a pod is ready when it passed its probes and all its processes still run; a node when its agent does. */
export function statusOf(s: LabState): LabStatus {
  const alive = (owner: string): boolean => s.processes.filter(p => p.owner === owner).every(isOurs)
  return {
    name: s.name,
    dataplane: s.dataplane,
    phase: s.phase,
    nodes: s.nodes.map(n => ({
      name: n.name,
      ip: n.ip,
      podCIDR: n.podCIDR,
      ...(n.podCIDR6 === undefined ? {} : { podCIDR6: n.podCIDR6 }),
      ready: alive(n.name),
    })),
    external: { ip: s.external.ip },
    upstreamDns: { ip: s.upstreamDns.ip },
    pods: s.pods.map(p => ({
      namespace: p.namespace,
      name: p.name,
      ip: p.ip,
      ...(p.ip6 === undefined ? {} : { ip6: p.ip6 }),
      node: p.node,
      ready: p.ready && p.failingReadiness !== true && alive(`${p.namespace}/${p.name}`),
    })),
    ...servicesOf(s),
  }
}

const byNsName = (a: { namespace: string; name: string }, b: { namespace: string; name: string }): number =>
  a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0

/** Services and EndpointSlices as the agents read them (the manifests directory), or as older labs recorded them. */
function servicesOf(s: LabState): { services: LabServiceState[]; endpointSlices: LabSliceState[] } {
  let isDir = false
  try {
    isDir = s.manifests !== undefined && statSync(s.manifests).isDirectory()
  } catch {
    /* not there (yet) */
  }
  if (!isDir) return { services: s.services ?? [], endpointSlices: s.endpointSlices ?? [] }
  const services: LabServiceState[] = []
  const endpointSlices: LabSliceState[] = []
  for (const o of readObjects(s.manifests!).values()) {
    if (o.kind === 'Service') services.push(serviceState(o as Service))
    else if (o.kind === 'EndpointSlice') endpointSlices.push(sliceState(o as EndpointSlice))
  }
  return { services: services.sort(byNsName), endpointSlices: endpointSlices.sort(byNsName) }
}

export function labStatus(name?: string): LabStatus {
  return statusOf(loadLabState(name))
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => (r[i] ?? '').length)))
  return (
    rows
      .map(r =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3)))
          .join('')
          .trimEnd(),
      )
      .join('\n') + '\n'
  )
}

/** The human view: four kubectl-style tables. */
export function formatStatus(st: LabStatus): string {
  const out: string[] = [`lab ${st.name} (dataplane ${st.dataplane}, ${st.phase}); outside host ${st.external.ip}, upstream DNS ${st.upstreamDns.ip}\n`]
  out.push(
    table([
      ['NAME', 'STATUS', 'INTERNAL-IP', 'POD-CIDR'],
      ...st.nodes.map(n => [`node/${n.name}`, n.ready ? 'Ready' : 'NotReady', n.ip, n.podCIDR6 === undefined ? n.podCIDR : `${n.podCIDR},${n.podCIDR6}`]),
    ]),
  )
  if (st.pods.length > 0) {
    out.push(
      table([
        ['NAMESPACE', 'NAME', 'READY', 'STATUS', 'IP', 'NODE'],
        ...st.pods.map(p => [
          p.namespace,
          `pod/${p.name}`,
          p.ready ? '1/1' : '0/1',
          p.ready ? 'Running' : 'NotReady',
          p.ip6 === undefined ? p.ip : `${p.ip},${p.ip6}`,
          p.node,
        ]),
      ]),
    )
  }
  if (st.services.length > 0) {
    out.push(
      table([
        ['NAMESPACE', 'NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)'],
        ...st.services.map(s => [
          s.namespace,
          `service/${s.name}`,
          s.type,
          s.clusterIP === '' ? '<none>' : (s.clusterIPs ?? [s.clusterIP]).join(','),
          s.externalIPs.length > 0 ? s.externalIPs.join(',') : '<none>',
          s.ports.map(p => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol}`).join(',') || '<none>',
        ]),
      ]),
    )
  }
  if (st.endpointSlices.length > 0) {
    out.push(
      table([
        ['NAMESPACE', 'NAME', 'ADDRESSTYPE', 'PORTS', 'ENDPOINTS'],
        ...st.endpointSlices.map(e => [
          e.namespace,
          `endpointslice.discovery.k8s.io/${e.name}`,
          e.addressType,
          e.ports.map(p => p.split('/')[0]).join(',') || '<unset>',
          e.endpoints.join(',') || '<unset>',
        ]),
      ]),
    )
  }
  return out.join('\n')
}
