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
//
// Dual-stack (clusterCIDR6 / serviceCIDR6 set): the same for IPv6 with `ip -6`: prefs 90, 91, 92 (from
// <clusterCIDR6>), 97 (ICMPv6 from lo to pods), the local rule moved 0 -> 100, table 190 default dev <tun>, and
// <serviceCIDR6> dev <tun> in main; IPv6 on the TUN and IPv6 forwarding. IPv6 has no accept_local and no rp_filter:
// packets tundra writes back with a local source are taken as they are. NDP between pods and the node never meets
// pref 92: link-local and multicast destinations are looked up strictly by interface, so table 190 (whose route is
// via the TUN) has no match for them and the lookup falls through to the local table.
import { must, run } from '../netns/netns'
import type { AgentConfig } from './config'

const TABLE = '190'
const NODE_PORTS = '30000-32767'
const BLACKHOLE6 = '2048'

export interface Wiring {
  undo(): Promise<void>
  /** the /32 routes into the TUN for externalIPs and LoadBalancer IPs (replaces the previous set) */
  setExternalRoutes(ips: readonly string[]): Promise<void>
}

/** Applies the rules in the current namespace; every step is recorded so undo() removes exactly what was added. */
/**
 * Applies the rules in the current namespace, idempotently: a restarted agent finds its predecessor's wiring and
 * takes it over. Blackhole fallbacks (metric 1000) sit under the TUN routes, so while no agent runs (a restart) pod
 * and service traffic is dropped rather than routed around tundra: an un-NATed reply would make the client send a
 * RST and kill a connection that the restored conntrack state could have carried on.
 */
export async function wire(cfg: AgentConfig, tun: string): Promise<Wiring> {
  const undo: string[][] = []
  const sysctl = async (key: string, value: string): Promise<void> => {
    const old = (await run(['sysctl', '-n', key])).stdout.trim()
    if (old === value) return // already so (in a container /proc/sys may be read-only: an init container set it)
    await must(['sysctl', '-qw', `${key}=${value}`])
    if (old && old !== value) undo.push(['sysctl', '-qw', `${key}=${old}`])
  }
  const ruleIn = (fam: '-4' | '-6') => async (pref: string, args: string[]): Promise<void> => {
    while ((await run(['ip', fam, 'rule', 'del', 'pref', pref])).code === 0) { /* a predecessor's: replace it */ }
    await must(['ip', fam, 'rule', 'add', 'pref', pref, ...args])
    undo.push(['ip', fam, 'rule', 'del', 'pref', pref])
  }
  const routeIn = (fam: '-4' | '-6') => async (args: string[]): Promise<void> => {
    await must(['ip', fam, 'route', 'replace', ...args])
    undo.push(['ip', fam, 'route', 'del', ...args])
  }
  const rule = ruleIn('-4')
  const route = routeIn('-4')
  /** the local table's rule from pref 0 to pref 100, so the rules above it see local destinations first */
  const moveLocalRule = async (fam: '-4' | '-6'): Promise<void> => {
    const rules = (await run(['ip', fam, 'rule', 'show'])).stdout
    if (/^0:\s+from all lookup local/m.test(rules)) {
      await ruleIn(fam)('100', ['lookup', 'local'])
      await must(['ip', fam, 'rule', 'del', 'pref', '0'])
      undo.push(['ip', fam, 'rule', 'add', 'pref', '0', 'lookup', 'local'])
    } else if (/^100:\s+from all lookup local/m.test(rules)) {
      undo.push(['ip', fam, 'rule', 'del', 'pref', '100'], ['ip', fam, 'rule', 'add', 'pref', '0', 'lookup', 'local'])
    }
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
    await route(['default', 'dev', tun, 'table', TABLE])
    await route(['blackhole', 'default', 'table', TABLE, 'metric', '1000'])
    await rule('90', ['iif', tun, 'lookup', 'local'])
    await rule('91', ['iif', tun, 'lookup', 'main'])
    await rule('92', ['from', cfg.clusterCIDR, 'lookup', TABLE])
    const uplinkRules: [string, string][] = [['udp', String(cfg.vxlan.port)], ['tcp', NODE_PORTS], ['udp', NODE_PORTS], ['sctp', NODE_PORTS]]
    for (const [i, [proto, ports]] of uplinkRules.entries()) {
      await rule(String(93 + i), ['iif', cfg.node.uplink, 'ipproto', proto, 'dport', ports, 'lookup', TABLE])
    }
    // ICMP errors the node itself sends to pods (fragmentation needed on the way to an endpoint) must be reverse-
    // translated like any reply: their inner header names the endpoint, which the client never talked to.
    await rule('97', ['iif', 'lo', 'ipproto', 'icmp', 'to', cfg.clusterCIDR, 'lookup', TABLE])
    await moveLocalRule('-4')
    await route([cfg.serviceCIDR, 'dev', tun])
    await route(['blackhole', cfg.serviceCIDR, 'metric', '1000'])
    if (cfg.clusterCIDR6 !== undefined || cfg.serviceCIDR6 !== undefined) {
      const rule6 = ruleIn('-6')
      const route6 = routeIn('-6')
      await sysctl('net.ipv6.conf.all.disable_ipv6', '0')
      await sysctl(`net.ipv6.conf.${tun}.disable_ipv6`, '0')
      await sysctl('net.ipv6.conf.all.forwarding', '1')
      await route6(['default', 'dev', tun, 'table', TABLE])
      // IPv6 routes default to metric 1024 (IPv4: 0), so the blackhole fallbacks sit at 2048 to stay under them
      await route6(['blackhole', 'default', 'table', TABLE, 'metric', BLACKHOLE6])
      await rule6('90', ['iif', tun, 'lookup', 'local'])
      await rule6('91', ['iif', tun, 'lookup', 'main'])
      if (cfg.clusterCIDR6 !== undefined) {
        await rule6('92', ['from', cfg.clusterCIDR6, 'lookup', TABLE])
        await rule6('97', ['iif', 'lo', 'ipproto', 'ipv6-icmp', 'to', cfg.clusterCIDR6, 'lookup', TABLE])
      }
      await moveLocalRule('-6')
      if (cfg.serviceCIDR6 !== undefined) {
        await route6([cfg.serviceCIDR6, 'dev', tun])
        await route6(['blackhole', cfg.serviceCIDR6, 'metric', BLACKHOLE6])
      }
    }
    // TCP DNS is served by a kernel socket on the DNS address (UDP is answered in the packet path)
    await must(['ip', 'addr', 'replace', `${cfg.dns.ip}/32`, 'dev', 'lo'])
    undo.push(['ip', 'addr', 'del', `${cfg.dns.ip}/32`, 'dev', 'lo'])
  } catch (err) {
    await unwind(undo)
    throw err
  }
  let external: string[] = []
  return {
    undo: async () => {
      for (const ip of external) await run(['ip', 'route', 'del', `${ip}/32`, 'dev', tun])
      external = []
      await unwind(undo)
    },
    setExternalRoutes: async ips => {
      const next = new Set(ips)
      for (const ip of external) if (!next.has(ip)) await run(['ip', 'route', 'del', `${ip}/32`, 'dev', tun])
      for (const ip of next) if ((await run(['ip', 'route', 'replace', `${ip}/32`, 'dev', tun])).code !== 0) next.delete(ip)
      external = [...next]
    },
  }
}

async function unwind(undo: string[][]): Promise<void> {
  for (const cmd of undo.splice(0).reverse()) await run(cmd)
}
