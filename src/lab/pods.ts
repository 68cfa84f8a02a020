// Making and removing a lab's pods on the system: namespaces, Calico's wiring, the containers' servers, readiness
// probes from the node. `lab up` and `lab apply` both go through here; every namespace, file and process is recorded in
// the state before it is made, so `lab down` finds it whatever fails.
import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { deleteNamespaceSync, listNamespaces, must, run } from '../netns/netns'
import { renderNginxConf, WELCOME_HTML } from './nginx'
import { LAB, podHostsFile, podResolvConf, type PlannedPod } from './plan'
import { formatTarget, type ProbeTarget } from './probe'
import { inNamespace, isOurs, logTail, startDetached, stopProcesses } from './proc'
import { LabError, saveState, type LabPodState, type LabProcess, type LabState, type ProcessRole } from './state'

export interface LabRuntime {
  readonly state: LabState
  readonly say: (line: string) => void
  readonly timeoutMs: number
  /** this node binary */
  readonly node: string
  readonly scripts: { readonly netexec: string; readonly probe: string }
  /** MTU of pod interfaces (default 1450: room for VXLAN between nodes, as Calico configures) */
  readonly podMTU?: number
  readonly signal?: AbortSignal
}

export function checkAborted(rt: LabRuntime): void {
  if (rt.signal?.aborted) throw new LabError('interrupted')
}

/** `ip -n <ns> -batch -`: many changes, one process. */
export const ipBatch = (ns: string, lines: readonly string[]): Promise<string> => must(['ip', '-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n' })

export const sysctls = (ns: string, kv: Readonly<Record<string, string>>): Promise<string> =>
  must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)])

/**
 * Anti-spoofing on the pods' veths, as Calico does for its workload interfaces: a packet a pod sends must come from
 * that pod's own address (the set holds interface . address pairs); anything else is dropped in the raw hook, before
 * routing, and counted in the named counter `spoofed` (`nft list counter inet tundra-lab-antispoof spoofed`).
 * IPv6 link-local and unspecified sources stay allowed: neighbour discovery and DAD use them. Strict rp_filter cannot
 * do this here: rule 92 (from <clusterCIDR> → the TUN) makes the reverse lookup of pod-to-pod traffic point at the TUN.
 */
const ANTISPOOF_TABLE = 'tundra-lab-antispoof'
const ANTISPOOF_RULESET = `table inet ${ANTISPOOF_TABLE} {
  counter spoofed {}
  set pods4 { type ifname . ipv4_addr; }
  set pods6 { type ifname . ipv6_addr; }
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    iifname "cali*" meta nfproto ipv4 iifname . ip saddr != @pods4 counter name "spoofed" drop
    iifname "cali*" meta nfproto ipv6 ip6 saddr != fe80::/10 ip6 saddr != :: iifname . ip6 saddr != @pods6 counter name "spoofed" drop
  }
}
`

/** Allows (or stops allowing) each pod's own addresses on its veth in the node's anti-spoofing table. */
async function antiSpoof(
  nodeNs: string,
  pods: readonly { readonly hostVeth: string; readonly ip: string; readonly ip6?: string }[],
  op: 'add' | 'delete',
): Promise<void> {
  if (pods.length === 0) return
  const nft = (input: string): Promise<string> => must(['ip', 'netns', 'exec', nodeNs, 'nft', '-f', '-'], { input })
  if (op === 'add' && (await run(['ip', 'netns', 'exec', nodeNs, 'nft', 'list', 'table', 'inet', ANTISPOOF_TABLE])).code !== 0) await nft(ANTISPOOF_RULESET)
  const lines: string[] = []
  for (const p of pods) {
    lines.push(`${op} element inet ${ANTISPOOF_TABLE} pods4 { "${p.hostVeth}" . ${p.ip} }`)
    if (p.ip6 !== undefined) lines.push(`${op} element inet ${ANTISPOOF_TABLE} pods6 { "${p.hostVeth}" . ${p.ip6} }`)
  }
  if (op === 'add') await nft(lines.join('\n') + '\n')
  else for (const l of lines) await run(['ip', 'netns', 'exec', nodeNs, 'nft', l]) // gone with the node: fine
}

/** A file under /etc/netns/<ns>/ (bind-mounted over /etc by `ip netns exec`), its dir recorded first. */
export function etcFile(state: LabState, ns: string, file: string, text: string): void {
  const dir = join('/etc/netns', ns)
  if (!state.files.includes(dir)) {
    state.files.push(dir)
    saveState(state)
  }
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, file), text)
}

/** Creates namespaces (each recorded before it exists) with loopback up. */
export async function createNamespaces(rt: LabRuntime, namespaces: readonly string[], what = 'namespaces'): Promise<void> {
  for (const [i, ns] of namespaces.entries()) {
    checkAborted(rt)
    rt.state.namespaces.push(ns)
    saveState(rt.state)
    await must(['ip', 'netns', 'add', ns])
    await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
    if ((i + 1) % 10 === 0 || i + 1 === namespaces.length) rt.say(`[lab] creating ${what}… ${i + 1}/${namespaces.length}`)
  }
}

/** A pod's record in the state (not ready until its probes answer). */
export function podState(p: PlannedPod): LabPodState {
  return {
    namespace: p.namespace,
    name: p.name,
    ns: p.ns,
    ip: p.ip,
    ...(p.ip6 === undefined ? {} : { ip6: p.ip6 }),
    node: p.node,
    hostVeth: p.hostVeth,
    hostname: p.hostname,
    ready: false,
    probes: probesOf(p).map(formatTarget),
  }
}

/** What must answer before a pod counts as ready: each TCP port by connect, each netexec UDP port by a round trip. */
export function probesOf(p: PlannedPod): ProbeTarget[] {
  const out: ProbeTarget[] = []
  for (const c of p.containers) {
    for (const port of c.tcpPorts) out.push({ kind: 'tcp', ip: p.ip, port })
    if (c.runtime === 'netexec') for (const port of c.udpPorts) out.push({ kind: 'udp', ip: p.ip, port })
  }
  return out
}

/**
 * Wires pods (their namespaces exist) as Calico does: a veth into the node with a /32 route, the pod's default route
 * via 169.254.1.1 answered by proxy ARP; resolv.conf and hosts as kubelet writes them. IPv6 when the pod has an address.
 */
export async function wirePods(rt: LabRuntime, nodes: readonly { readonly name: string; readonly ns: string }[], pods: readonly PlannedPod[]): Promise<void> {
  const mtu = String(rt.podMTU ?? 1450)
  for (const p of pods) {
    if (p.ip6 !== undefined) {
      await sysctls(p.ns, { 'net.ipv6.conf.all.disable_ipv6': '0', 'net.ipv6.conf.default.disable_ipv6': '0', 'net.ipv6.conf.default.accept_dad': '0' })
    }
  }
  for (const [i, p] of pods.entries()) {
    checkAborted(rt)
    const node = nodes.find(n => n.name === p.node)
    if (!node) throw new LabError(`pod ${p.namespace}/${p.name}: no node ${p.node}`)
    await ipBatch(node.ns, [
      `link add ${p.hostVeth} mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${p.ns}`,
      `link set ${p.hostVeth} address ee:ee:ee:ee:ee:ee`,
      `link set ${p.hostVeth} up`,
      `route add ${p.ip}/32 dev ${p.hostVeth} scope link`,
      ...(p.ip6 === undefined ? [] : [`addr add ${LAB.podGateway6}/64 dev ${p.hostVeth} nodad`, `route add ${p.ip6}/128 dev ${p.hostVeth}`]),
    ])
    await ipBatch(p.ns, [
      'link set eth0 up',
      `addr add ${p.ip}/32 dev eth0`,
      `route add ${LAB.podGateway} dev eth0 scope link`,
      `route add default via ${LAB.podGateway} dev eth0`,
      ...(p.ip6 === undefined ? [] : [`addr add ${p.ip6}/128 dev eth0 nodad`, `route add default via ${LAB.podGateway6} dev eth0`]),
    ])
    etcFile(rt.state, p.ns, 'resolv.conf', podResolvConf(p.namespace))
    etcFile(rt.state, p.ns, 'hosts', podHostsFile(p))
    if ((i + 1) % 10 === 0 || i + 1 === pods.length) rt.say(`[lab] wiring pods… ${i + 1}/${pods.length}`)
  }
  for (const n of nodes) {
    const vs = pods.filter(p => p.node === n.name).map(p => p.hostVeth)
    const kv: Record<string, string> = {}
    // proxy_delay 0: answer ARP for 169.254.1.1 at once (the default waits up to 0.8 s), as Calico sets it
    for (const v of vs) {
      kv[`net.ipv4.conf.${v}.proxy_arp`] = '1'
      kv[`net.ipv4.neigh.${v}.proxy_delay`] = '0'
    }
    if (vs.length > 0) await sysctls(n.ns, kv)
    await antiSpoof(
      n.ns,
      pods.filter(p => p.node === n.name),
      'add',
    )
  }
}

/** Starts a long-running process in a namespace, recorded in the state as soon as it runs. */
export async function startProcess(
  rt: LabRuntime,
  role: ProcessRole,
  ns: string,
  owner: string,
  hostname: string,
  argv: readonly string[],
  log: string,
): Promise<void> {
  checkAborted(rt)
  const full = inNamespace(ns, hostname, argv)
  const d = await startDetached(full, log)
  const proc: LabProcess = { pid: d.pid, startTime: d.startTime, role, ns, owner, argv: full, log }
  rt.state.processes.push(proc)
  saveState(rt.state)
}

const podDir = (state: LabState, p: { namespace: string; name: string }): string => join(state.dir, 'pods', `${p.namespace}.${p.name}`)

/** Every pod's containers: nginx for nginx images, netexec on the declared ports for the rest. */
export async function startContainers(rt: LabRuntime, pods: readonly PlannedPod[]): Promise<void> {
  const withServers = pods.filter(p => p.containers.some(c => c.runtime !== 'none'))
  for (const [i, p] of withServers.entries()) {
    const dirOf = podDir(rt.state, p)
    mkdirSync(dirOf, { recursive: true })
    for (const c of p.containers) {
      if (c.runtime === 'nginx') {
        const dir = join(dirOf, c.name)
        for (const d of ['html', 'tmp']) mkdirSync(join(dir, d), { recursive: true })
        chmodSync(join(dir, 'tmp'), 0o1777) // workers run as nobody
        writeFileSync(join(dir, 'html', 'index.html'), WELCOME_HTML)
        writeFileSync(join(dir, 'nginx.conf'), renderNginxConf(dir, c.tcpPorts, p.ip6 !== undefined))
        await startProcess(
          rt,
          'nginx',
          p.ns,
          `${p.namespace}/${p.name}`,
          p.hostname,
          ['nginx', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')],
          join(dir, 'nginx.out'),
        )
      } else if (c.runtime === 'netexec') {
        await startProcess(
          rt,
          'netexec',
          p.ns,
          `${p.namespace}/${p.name}`,
          p.hostname,
          [
            rt.node,
            rt.scripts.netexec,
            ...c.tcpPorts.flatMap(port => ['--http-port', String(port)]),
            ...c.udpPorts.flatMap(port => ['--udp-port', String(port)]),
            ...(p.ip6 === undefined ? [] : ['--ipv6']),
          ],
          join(dirOf, `${c.name}.log`),
        )
      }
    }
    if ((i + 1) % 10 === 0 || i + 1 === withServers.length) rt.say(`[lab] starting containers… ${i + 1}/${withServers.length} pods`)
  }
}

/**
 * Probes from each node, as kubelet does, until every listed pod (and extra target) answers; marks pods ready in the
 * state as they do. A server that exits meanwhile fails at once, with its log.
 */
export async function waitReady(
  rt: LabRuntime,
  nodes: readonly { readonly name: string; readonly ns: string }[],
  pods: ReadonlySet<string>,
  extra: ReadonlyMap<string, readonly string[]> = new Map(),
): Promise<void> {
  const { state } = rt
  const key = (p: LabPodState): string => `${p.namespace}/${p.name}`
  const mine = (): LabPodState[] => state.pods.filter(p => pods.has(key(p)))
  const total = mine().length
  const readyPods = (): number => mine().filter(p => p.ready).length
  const seen = new Set<string>()
  const markReady = (): void => {
    state.pods = state.pods.map(p => (p.ready || !pods.has(key(p)) || !p.probes.every(t => seen.has(t)) ? p : { ...p, ready: true }))
    saveState(state)
  }
  markReady() // pods without servers
  rt.say(`[lab] waiting for pods… ${readyPods()}/${total} ready`)
  const jobs = nodes
    .map(n => {
      const targets = [
        ...mine()
          .filter(p => p.node === n.name)
          .flatMap(p => p.probes),
        ...(extra.get(n.name) ?? []),
      ]
      return targets.length === 0 ? undefined : { node: n, targets }
    })
    .filter(j => j !== undefined)
  const children = jobs.map(j =>
    spawn('ip', ['netns', 'exec', j.node.ns, rt.node, rt.scripts.probe, '--timeout', String(rt.timeoutMs), ...j.targets], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  )
  let failure: Error | undefined
  const fail = (e: Error): void => {
    if (!failure) {
      failure = e
      for (const c of children) c.kill('SIGKILL')
    }
  }
  const done = children.map(
    (child, i) =>
      new Promise<void>(resolve => {
        let out = ''
        let err = ''
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d
          let nl: number
          while ((nl = out.indexOf('\n')) >= 0) {
            const line = out.slice(0, nl)
            out = out.slice(nl + 1)
            const m = /^ready (\S+)$/.exec(line)
            if (!m) continue
            seen.add(m[1]!)
            const before = readyPods()
            markReady()
            if (readyPods() !== before) rt.say(`[lab] waiting for pods… ${readyPods()}/${total} ready`)
          }
        })
        child.stderr.setEncoding('utf8').on('data', (d: string) => {
          err += d
        })
        child.on('close', code => {
          if (code !== 0 && !failure) {
            const rest = jobs[i]!.targets.filter(t => !seen.has(t))
            fail(new LabError(`not ready after ${rt.timeoutMs} ms on ${jobs[i]!.node.name}: ${rest.join(', ')}${err ? ` (${err.trim()})` : ''}`))
          }
          resolve()
        })
      }),
  )
  // A server that exits while we wait is a failure now, with its log, not a timeout later.
  const watch = setInterval(() => {
    if (rt.signal?.aborted) return fail(new LabError('interrupted'))
    // `lab up` watches every server it started (DNS and the outside host too); `lab apply` only the new pods'
    const dead = state.processes.find(p => (extra.size > 0 || pods.has(p.owner)) && !isOurs(p))
    if (dead) fail(new LabError(`${dead.role} of ${dead.owner} exited (log ${dead.log}):\n${logTail(dead.log)}`))
  }, 100)
  try {
    await Promise.all(done)
  } finally {
    clearInterval(watch)
  }
  if (failure) throw failure
}

/**
 * Removes pods from the system and the state: their processes, namespaces (which takes the veth and the node's /32
 * route with them), /etc/netns dirs and pod dirs.
 */
export async function removePods(state: LabState, pods: readonly LabPodState[]): Promise<void> {
  if (pods.length === 0) return
  const owners = new Set(pods.map(p => `${p.namespace}/${p.name}`))
  const nss = new Set(pods.map(p => p.ns))
  const procs = state.processes.filter(p => owners.has(p.owner))
  await stopProcesses(procs)
  for (const n of state.nodes)
    await antiSpoof(
      n.ns,
      pods.filter(p => p.node === n.name),
      'delete',
    )
  const live = new Set(listNamespaces())
  for (const ns of nss) if (live.has(ns)) deleteNamespaceSync(ns)
  for (const p of pods) {
    rmSync(join('/etc/netns', p.ns), { recursive: true, force: true })
    rmSync(podDir(state, p), { recursive: true, force: true })
  }
  state.processes = state.processes.filter(p => !owners.has(p.owner))
  state.namespaces = state.namespaces.filter(ns => !nss.has(ns))
  state.files = state.files.filter(f => !pods.some(p => f === join('/etc/netns', p.ns)))
  state.pods = state.pods.filter(p => !owners.has(`${p.namespace}/${p.name}`))
  saveState(state)
}
