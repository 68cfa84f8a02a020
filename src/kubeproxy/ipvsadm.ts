// `tundra dump --format ipvsadm`: the virtual services kube-proxy's IPVS mode would program, printed as `ipvsadm -Ln`
// prints them (ipvsadm.c print_title / print_service_entry: the same header, column widths and flags), so an IPVS
// user can put the two side by side.
//
// kube-proxy's IPVS mode makes one virtual service per Service frontend (ClusterIP, each NodePort address, each
// externalIP and LoadBalancer IP) and port, forwards by masquerading ("Masq"), gives every real server weight 1 and
// turns ClientIP affinity into "persistent <timeout>". The caller (inspect/dump.ts) builds the list from tundra's
// compiled table, with ActiveConn (TCP ESTABLISHED) / InActConn (every other entry) from a running agent's
// conntrack; a real server that left but still has connections is listed with weight 0, as IPVS graceful
// termination keeps it.

/** One real server of a virtual service. */
export interface IpvsRealServer {
  readonly address: string
  readonly port: number
  readonly weight: number
  readonly activeConns: number
  readonly inactiveConns: number
}

/** One virtual service (protocol, address, port), as ipvsadm lists it. */
export interface IpvsVirtualService {
  readonly protocol: 'TCP' | 'UDP' | 'SCTP'
  readonly address: string
  readonly port: number
  /** IPVS scheduler name (tundra's `random`, not an IPVS scheduler, is printed as is) */
  readonly scheduler: string
  /** ClientIP affinity timeout in seconds; 0: not persistent */
  readonly persistent: number
  readonly servers: readonly IpvsRealServer[]
}

/** ipvsadm's version line: the IPVS version and connection hash table size of a stock kernel. */
const TITLE = 'IP Virtual Server version 1.2.1 (size=4096)'
const HEADER = 'Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn'
/** kube-proxy's IPVS mode always forwards by NAT. */
const FORWARD = 'Masq'

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}

const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length))

/** `ipvsadm -Ln` text of `services`, in the order given. */
export function renderIpvsadm(services: readonly IpvsVirtualService[]): string {
  const lines = [TITLE, HEADER]
  for (const vs of services) {
    // print_service_entry: "%s  %s %s", then " persistent %u"
    lines.push(`${vs.protocol}  ${hostPort(vs.address, vs.port)} ${vs.scheduler}${vs.persistent > 0 ? ` persistent ${vs.persistent}` : ''}`)
    for (const rs of vs.servers) {
      // "  -> %-28s %-7s %-6d %-10u %-10u"
      lines.push(
        `  -> ${pad(hostPort(rs.address, rs.port), 28)} ${pad(FORWARD, 7)} ${pad(String(rs.weight), 6)} ${pad(String(rs.activeConns), 10)} ${pad(String(rs.inactiveConns), 10)}`,
      )
    }
  }
  return lines.join('\n') + '\n'
}
