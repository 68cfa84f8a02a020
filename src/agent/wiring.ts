// Steers a node's pod, service and uplink traffic into tundra's TUN, and takes exactly that back out on exit.
//
//   pref 90   iif <tun>            lookup local     packets tundra wrote back: deliver or route normally
//   pref 91   iif <tun>            lookup main
//   pref 92   from <clusterCIDR>   lookup 190       every packet a pod sends  -> TUN
//   pref 93-96 iif <uplink> udp 4789 / tcp,udp,sctp 30000-32767  lookup 190   VXLAN and NodePorts -> TUN
//             (by protocol and port, not every packet from the uplink: the kernel answers ARP for the node's own
//              address only when the route lookup for it with iif <uplink> says "local")
//   pref 97   iif lo icmp to <clusterCIDR>  lookup 190   ICMP errors the node sends to pods
//   pref 98   iif lo to 127.0.0.0/8 dport 30000-32767  lookup 190   localhostNodePorts only: a node process to
//             127.0.0.1:<nodePort> (with route_localnet on the TUN, so loopback addresses may cross it)
//   pref 100                       lookup local     (moved from pref 0, so the rules above see local destinations)
//   table 190: default dev <tun> src <node IP>;  main: <serviceCIDR> dev <tun> src <node IP> (the node's own
//             processes reaching services), unreachable <clusterCIDR> metric 1000 (a pod address nobody owns: host unreachable, never a
//             bounce between the kernel and the TUN; pods' /32 routes and other routes for pod blocks win over it)
//   `src <node IP>`: what the node itself sends into the TUN (its processes to services, the ICMP errors its kernel
//   sends to pods and to service addresses) comes from the node, not from the first global address the kernel
//   would pick (the DNS address on lo), which no peer accepts as an inner VXLAN source
//
// Dual-stack (clusterCIDR6 / serviceCIDR6 set): the same for IPv6 with `ip -6`: prefs 90, 91, 92 (from
// <clusterCIDR6>), 97 (ICMPv6 from lo to pods), the local rule moved 0 -> 100, table 190 default dev <tun>, and
// <serviceCIDR6> dev <tun> in main; IPv6 on the TUN and IPv6 forwarding. IPv6 has no accept_local and no rp_filter:
// packets tundra writes back with a local source are taken as they are. NDP between pods and the node never meets
// pref 92: link-local and multicast destinations are looked up strictly by interface, so table 190 (whose route is
// via the TUN) has no match for them and the lookup falls through to the local table.
//
// Every change is also written to a journal (`journalPath(cfg)`, beside the control socket: /run is a tmpfs, so the
// journal lives exactly as long as the wiring does, across restarts but not across a reboot). A restarted agent
// merges its predecessor's journal, keeping the sysctl values found before the first start; `tundra run --cleanup`
// (cleanupWiring) replays it, so the node's routing ends up exactly as it was before tundra.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { must, run } from '../netns/netns'
import type { AgentConfig } from './config'

const TABLE = '190'
const JOURNAL_VERSION = 1
/** more undo steps than any wiring makes: a bigger journal is not ours, or corrupt */
const JOURNAL_MAX_STEPS = 256
const NODE_PORTS = '30000-32767'
const BLACKHOLE6 = '2048'
/** localhostNodePorts: the loopback destinations steered into the TUN */
const LOOPBACK_NET = '127.0.0.0/8'

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
export async function wire(cfg: AgentConfig, tun: string, localhostNodePorts = false): Promise<Wiring> {
  const journal = journalPath(cfg)
  // a journal that does not validate is not trusted (and not run); this start's own journal replaces it
  const inherited = (() => {
    try {
      return readJournal(journal) ?? []
    } catch {
      return []
    }
  })()
  const undo: string[][] = []
  const record = (...steps: string[][]): void => {
    undo.push(...steps)
    writeJournal(journal, merge(inherited, undo))
  }
  const sysctl = async (key: string, value: string): Promise<void> => {
    const old = (await run(['sysctl', '-n', key])).stdout.trim()
    if (old === value) return // already so (in a container /proc/sys may be read-only: an init container set it)
    await must(['sysctl', '-qw', `${key}=${value}`])
    if (old && old !== value) record(['sysctl', '-qw', `${key}=${old}`])
  }
  const ruleIn =
    (fam: '-4' | '-6') =>
    async (pref: string, args: string[]): Promise<void> => {
      while ((await run(['ip', fam, 'rule', 'del', 'pref', pref])).code === 0) {
        /* a predecessor's: replace it */
      }
      await must(['ip', fam, 'rule', 'add', 'pref', pref, ...args])
      record(['ip', fam, 'rule', 'del', 'pref', pref])
    }
  const routeIn =
    (fam: '-4' | '-6') =>
    async (args: string[]): Promise<void> => {
      await must(['ip', fam, 'route', 'replace', ...args])
      record(['ip', fam, 'route', 'del', ...args])
    }
  const rule = ruleIn('-4')
  const route = routeIn('-4')
  /** the local table's rule from pref 0 to pref 100, so the rules above it see local destinations first */
  const moveLocalRule = async (fam: '-4' | '-6'): Promise<void> => {
    const rules = (await run(['ip', fam, 'rule', 'show'])).stdout
    if (/^0:\s+from all lookup local/m.test(rules)) {
      await ruleIn(fam)('100', ['lookup', 'local'])
      await must(['ip', fam, 'rule', 'del', 'pref', '0'])
      record(['ip', fam, 'rule', 'add', 'pref', '0', 'lookup', 'local'])
    } else if (/^100:\s+from all lookup local/m.test(rules)) {
      record(['ip', fam, 'rule', 'del', 'pref', '100'], ['ip', fam, 'rule', 'add', 'pref', '0', 'lookup', 'local'])
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
    await route(['default', 'dev', tun, 'table', TABLE, 'src', cfg.node.ip])
    await route(['blackhole', 'default', 'table', TABLE, 'metric', '1000'])
    await route(['unreachable', cfg.clusterCIDR, 'metric', '1000'])
    await rule('90', ['iif', tun, 'lookup', 'local'])
    await rule('91', ['iif', tun, 'lookup', 'main'])
    await rule('92', ['from', cfg.clusterCIDR, 'lookup', TABLE])
    const uplinkRules: [string, string][] = [
      ['udp', String(cfg.vxlan.port)],
      ['tcp', NODE_PORTS],
      ['udp', NODE_PORTS],
      ['sctp', NODE_PORTS],
    ]
    for (const [i, [proto, ports]] of uplinkRules.entries()) {
      await rule(String(93 + i), ['iif', cfg.node.uplink, 'ipproto', proto, 'dport', ports, 'lookup', TABLE])
    }
    // ICMP errors the node itself sends to pods (fragmentation needed on the way to an endpoint) must be reverse-
    // translated like any reply: their inner header names the endpoint, which the client never talked to.
    await rule('97', ['iif', 'lo', 'ipproto', 'icmp', 'to', cfg.clusterCIDR, 'lookup', TABLE])
    if (localhostNodePorts) {
      // Only on the TUN (kube-proxy sets it for all interfaces): 127/8 from the uplink stays a martian the kernel drops.
      await sysctl(`net.ipv4.conf.${tun}.route_localnet`, '1')
      await rule('98', ['iif', 'lo', 'to', LOOPBACK_NET, 'dport', NODE_PORTS, 'lookup', TABLE])
    }
    await moveLocalRule('-4')
    await route([cfg.serviceCIDR, 'dev', tun, 'src', cfg.node.ip])
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
        await route6(['unreachable', cfg.clusterCIDR6, 'metric', BLACKHOLE6])
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
    record(['ip', 'addr', 'del', `${cfg.dns.ip}/32`, 'dev', 'lo'])
  } catch (err) {
    await unwind(merge(inherited, undo))
    rmSync(journal, { force: true })
    throw err
  }
  let external: string[] = []
  return {
    undo: async () => {
      for (const ip of external) await run(['ip', 'route', 'del', `${ip}/32`, 'dev', tun])
      external = []
      await unwind(merge(inherited, undo))
      rmSync(journal, { force: true })
    },
    setExternalRoutes: async ips => {
      const next = new Set(ips)
      for (const ip of external) if (!next.has(ip)) await run(['ip', 'route', 'del', `${ip}/32`, 'dev', tun])
      for (const ip of next) if ((await run(['ip', 'route', 'replace', `${ip}/32`, 'dev', tun, 'src', cfg.node.ip])).code !== 0) next.delete(ip)
      external = [...next]
    },
  }
}

async function unwind(undo: string[][]): Promise<void> {
  for (const cmd of undo.splice(0).reverse()) await run(cmd)
}

/**
 * Whether a predecessor's wiring is in place (this start is a restart, after a crash or an upgrade): its journal is
 * there. Read before wire() writes this start's own.
 */
export function wiredBefore(cfg: Pick<AgentConfig, 'control'>): boolean {
  return existsSync(journalPath(cfg))
}

/** Where the wiring journal of an agent lives: beside its control socket. */
function journalPath(cfg: Pick<AgentConfig, 'control'>): string {
  return `${cfg.control}.wiring`
}

/**
 * The predecessor's steps first, then this agent's that are new; a sysctl keeps the predecessor's value (the one
 * found before tundra first ran: this agent found tundra's own value and recorded nothing, or a value changed since).
 */
function merge(inherited: readonly string[][], mine: readonly string[][]): string[][] {
  const sysctlKey = (step: readonly string[]): string | undefined => (step[0] === 'sysctl' ? step[2]?.split('=')[0] : undefined)
  const seen = new Set(inherited.map(s => sysctlKey(s) ?? JSON.stringify(s)))
  const out = inherited.map(s => [...s])
  for (const step of mine) {
    const k = sysctlKey(step) ?? JSON.stringify(step)
    if (!seen.has(k)) {
      seen.add(k)
      out.push([...step])
    }
  }
  return out
}

/** Only `ip` and `sysctl` with plain arguments: the journal is run as root by --cleanup, so nothing else passes. */
function validStep(step: unknown): step is string[] {
  return (
    Array.isArray(step) &&
    step.length >= 2 &&
    step.length <= 16 &&
    (step[0] === 'ip' || step[0] === 'sysctl') &&
    step.every(a => typeof a === 'string' && a.length > 0 && a.length <= 128 && /^[\w.:/=@-]+$/.test(a))
  )
}

/** The journal's undo steps, or undefined when there is none; a journal that does not validate is reported. */
function readJournal(path: string): string[][] | undefined {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
  const j = (() => {
    try {
      return JSON.parse(text) as { version?: unknown; undo?: unknown }
    } catch {
      return undefined
    }
  })()
  if (j === undefined || j.version !== JOURNAL_VERSION || !Array.isArray(j.undo) || j.undo.length > JOURNAL_MAX_STEPS || !j.undo.every(validStep)) {
    throw new Error(`${path}: not a tundra wiring journal (version ${JOURNAL_VERSION}); remove it if tundra's wiring is gone`)
  }
  return j.undo as string[][]
}

function writeJournal(path: string, undo: readonly string[][]): void {
  const tmp = `${path}.tmp`
  writeFileSync(tmp, JSON.stringify({ version: JOURNAL_VERSION, undo }) + '\n', { mode: 0o600 })
  renameSync(tmp, path)
}

/** What cleanupWiring needs when there is no journal: the settings the wiring was made from. */
export type WiringPlan = Pick<AgentConfig, 'clusterCIDR' | 'serviceCIDR' | 'clusterCIDR6' | 'serviceCIDR6' | 'control'> & {
  readonly dnsIP: string
  readonly tun: string
}

/**
 * Removes tundra's wiring (`tundra run --cleanup`): replays the journal when there is one; otherwise removes what
 * wire() adds for these settings (rules 90-98 that point at table 190 or come from the TUN, table 190, the service
 * CIDR routes, the cluster CIDR's unreachable fallback, the local rule back at pref 0, the DNS address) -- sysctls cannot be restored then, and the result
 * says so. Returns what it did, one line each. Idempotent.
 */
export async function cleanupWiring(plan: WiringPlan): Promise<string[]> {
  const done: string[] = []
  const path = journalPath(plan)
  const steps = readJournal(path)
  if (steps !== undefined) {
    for (const cmd of [...steps].reverse()) if ((await run(cmd)).code === 0) done.push(cmd.join(' '))
    rmSync(path, { force: true })
    done.push(`removed ${path}`)
  } else {
    done.push(`no journal at ${path}: removing what tundra adds for these settings (sysctls left as they are)`)
    const fams: ['-4' | '-6', string | undefined, string | undefined][] = [
      ['-4', plan.clusterCIDR, plan.serviceCIDR],
      ['-6', plan.clusterCIDR6, plan.serviceCIDR6],
    ]
    for (const [fam, cluster, svc] of fams) {
      const rules = (await run(['ip', fam, 'rule', 'show'])).stdout
      for (const line of rules.split('\n')) {
        const m = /^(9[0-8]):\s+(.*)$/.exec(line)
        if (m && (m[2]!.includes(`lookup ${TABLE}`) || m[2]!.includes(`iif ${plan.tun} `))) {
          if ((await run(['ip', fam, 'rule', 'del', 'pref', m[1]!])).code === 0) done.push(`ip ${fam} rule del pref ${m[1]}`)
        }
      }
      if (/^100:\s+from all lookup local/m.test(rules)) {
        if (!/^0:\s+from all lookup local/m.test(rules)) await run(['ip', fam, 'rule', 'add', 'pref', '0', 'lookup', 'local'])
        await run(['ip', fam, 'rule', 'del', 'pref', '100'])
        done.push(`ip ${fam} rule: local table back at pref 0`)
      }
      if ((await run(['ip', fam, 'route', 'flush', 'table', TABLE])).code === 0) done.push(`ip ${fam} route flush table ${TABLE}`)
      if (cluster !== undefined) {
        const r = ['unreachable', cluster, 'metric', fam === '-4' ? '1000' : BLACKHOLE6]
        if ((await run(['ip', fam, 'route', 'del', ...r])).code === 0) done.push(`ip ${fam} route del ${r.join(' ')}`)
      }
      if (svc !== undefined) {
        for (const r of [
          ['blackhole', svc],
          [svc, 'dev', plan.tun],
        ]) {
          while ((await run(['ip', fam, 'route', 'del', ...r])).code === 0) done.push(`ip ${fam} route del ${r.join(' ')}`)
        }
      }
    }
    if ((await run(['ip', 'addr', 'del', `${plan.dnsIP}/32`, 'dev', 'lo'])).code === 0) done.push(`ip addr del ${plan.dnsIP}/32 dev lo`)
  }
  return done
}
