// Steers a node's pod, service and uplink traffic into tundra's TUN, and takes exactly that back out on exit.
//
//   pref 90   iif <tun>            lookup local     packets tundra wrote back: deliver or route normally
//   pref 91   iif <tun>            lookup main
//   pref 92   from <clusterCIDR>   lookup 190       every packet a pod sends  -> TUN
//   pref 93-96 iif <uplink> udp 4789 / tcp,udp,sctp 30000-32767  lookup 190   VXLAN and NodePorts -> TUN
//             (by protocol and port, not every packet from the uplink: the kernel answers ARP for the node's own
//              address only when the route lookup for it with iif <uplink> says "local")
//   pref 100                       lookup local     (moved from pref 0, so the rules above see local destinations)
//   table 190: default dev <tun>;  main: <serviceCIDR> dev <tun> (the node's own processes reaching services)
import { must, run } from '../netns/netns'
import type { AgentConfig } from './config'

const TABLE = '190'
const NODE_PORTS = '30000-32767'

export interface Wiring { undo(): Promise<void> }

/** Applies the rules in the current namespace; every step is recorded so undo() removes exactly what was added. */
export async function wire(cfg: AgentConfig, tun: string): Promise<Wiring> {
  const undo: string[][] = []
  const step = async (add: string[], del: string[]): Promise<void> => { await must(add); undo.push(del) }
  const sysctl = async (key: string, value: string): Promise<void> => {
    const old = (await run(['sysctl', '-n', key])).stdout.trim()
    await must(['sysctl', '-qw', `${key}=${value}`])
    if (old && old !== value) undo.push(['sysctl', '-qw', `${key}=${old}`])
  }
  try {
    await must(['ip', 'link', 'set', tun, 'up'])
    await sysctl('net.ipv4.ip_forward', '1')
    await sysctl('net.ipv4.conf.all.rp_filter', '0')
    await sysctl(`net.ipv4.conf.${tun}.rp_filter`, '0')
    // tundra writes packets whose source is a local address (masqueraded replies, VXLAN, node→service)
    await sysctl(`net.ipv4.conf.${tun}.accept_local`, '1')
    // Early demux attaches a local socket to a packet before routing (the DNS address is local), and the kernel
    // then refuses to forward it: a pod's ACK to 10.96.0.10:53 would never reach the TUN.
    await sysctl('net.ipv4.ip_early_demux', '0')
    await sysctl('net.ipv4.tcp_early_demux', '0')
    await sysctl('net.ipv4.udp_early_demux', '0')
    await step(['ip', 'route', 'add', 'default', 'dev', tun, 'table', TABLE], ['ip', 'route', 'del', 'default', 'dev', tun, 'table', TABLE])
    await step(['ip', 'rule', 'add', 'pref', '90', 'iif', tun, 'lookup', 'local'], ['ip', 'rule', 'del', 'pref', '90'])
    await step(['ip', 'rule', 'add', 'pref', '91', 'iif', tun, 'lookup', 'main'], ['ip', 'rule', 'del', 'pref', '91'])
    await step(['ip', 'rule', 'add', 'pref', '92', 'from', cfg.clusterCIDR, 'lookup', TABLE], ['ip', 'rule', 'del', 'pref', '92'])
    const uplinkRules: [string, string][] = [['udp', String(cfg.vxlan.port)], ['tcp', NODE_PORTS], ['udp', NODE_PORTS], ['sctp', NODE_PORTS]]
    for (const [i, [proto, ports]] of uplinkRules.entries()) {
      const pref = String(93 + i)
      await step(['ip', 'rule', 'add', 'pref', pref, 'iif', cfg.node.uplink, 'ipproto', proto, 'dport', ports, 'lookup', TABLE], ['ip', 'rule', 'del', 'pref', pref])
    }
    const rules = (await run(['ip', 'rule', 'show'])).stdout
    if (/^0:\s+from all lookup local/m.test(rules)) {
      await step(['ip', 'rule', 'add', 'pref', '100', 'lookup', 'local'], ['ip', 'rule', 'del', 'pref', '100'])
      await step(['ip', 'rule', 'del', 'pref', '0'], ['ip', 'rule', 'add', 'pref', '0', 'lookup', 'local'])
    }
    await step(['ip', 'route', 'add', cfg.serviceCIDR, 'dev', tun], ['ip', 'route', 'del', cfg.serviceCIDR, 'dev', tun])
    // TCP DNS is served by a kernel socket on the DNS address (UDP is answered in the packet path)
    await step(['ip', 'addr', 'add', `${cfg.dns.ip}/32`, 'dev', 'lo'], ['ip', 'addr', 'del', `${cfg.dns.ip}/32`, 'dev', 'lo'])
  } catch (err) {
    await unwind(undo)
    throw err
  }
  return { undo: () => unwind(undo) }
}

async function unwind(undo: string[][]): Promise<void> {
  for (const cmd of undo.splice(0).reverse()) await run(cmd)
}
