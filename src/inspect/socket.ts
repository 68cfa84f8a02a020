// Which agent an online `tundra dump|trace|services|conntrack` talks to: --socket, or a lab node's agent.
import { listLabs, loadLabState } from '../lab/state'
import { InspectError } from './common'

export interface SocketChoice {
  readonly socket?: string
  readonly lab?: string
  readonly node?: string
}

export const NO_AGENT = 'no running tundra found: use -f manifests or --socket'

/** --socket as given; else the lab's (named, or the only one up) node's control socket (named, or the first node). */
export function resolveSocket(o: SocketChoice): string {
  if (o.socket !== undefined) {
    if (o.lab !== undefined || o.node !== undefined) throw new InspectError('give --socket or --lab/--node, not both')
    return o.socket
  }
  let lab = o.lab
  if (lab === undefined) {
    const labs = listLabs()
    if (labs.length === 0) throw new InspectError(NO_AGENT)
    if (labs.length > 1) throw new InspectError(`several labs are up (${labs.join(', ')}): say which with --lab (or use --socket)`)
    lab = labs[0]!
  }
  let state: ReturnType<typeof loadLabState>
  try {
    state = loadLabState(lab)
  } catch (err) {
    throw new InspectError((err as Error).message)
  }
  const node = o.node !== undefined ? state.nodes.find(n => n.name === o.node) : state.nodes[0]
  if (node === undefined) {
    throw new InspectError(`lab ${lab} has no node ${JSON.stringify(o.node)} (nodes: ${state.nodes.map(n => n.name).join(', ') || 'none'})`)
  }
  if (node.control === undefined) {
    throw new InspectError(`lab ${lab} runs no tundra agent on ${node.name} (dataplane ${state.dataplane}): use -f manifests`)
  }
  return node.control
}
