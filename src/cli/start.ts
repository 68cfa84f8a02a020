// `tundra start` (what `npm start` runs): the seed document's story, for real. It brings up the lab from
// examples/seed/, then shows each step as the command a user would type and what it printed, then keeps a live
// status line until Ctrl-C and takes the lab down (unless --detach).
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Command } from 'commander'
import { askAgent } from '../agent/control'
import { formatStatus, labDown, labExec, labStatus, labUp, loadLabState } from '../lab/index'

const REPO = join(__dirname, '..', '..', '..')
const SEED = join(REPO, 'examples', 'seed')
const AS_DOCUMENTED = join(REPO, 'examples', 'seed-as-documented', 'seed.yaml')
const SERVICE = 'nginx-pod08'
const VIP = '10.96.125.237'

const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s)

function heading(n: number, text: string): void {
  process.stdout.write(`\n${bold(`── ${n}. ${text}`)}\n`)
}

function shown(cmd: string, output: string): void {
  process.stdout.write(`$ ${cmd}\n${output.replace(/\s+$/, '')}\n`)
}

/** Runs our own CLI (so each step is exactly what a user can type) and returns what it printed. */
function tundra(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise(resolve => {
    const child = spawn(process.execPath, [join(__dirname, 'main.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', d => {
      out += d
    })
    child.stderr.on('data', d => {
      out += d
    })
    child.on('close', code => resolve({ code: code ?? 1, out }))
  })
}

interface StartOptions {
  name: string
  detach?: boolean
  asDocumented?: boolean
  nodes: number
}

async function story(o: StartOptions): Promise<boolean> {
  let ok = true
  const check = (cond: boolean, what: string): void => {
    process.stdout.write(cond ? `✔ ${what}\n` : `✘ ${what}\n`)
    if (!cond) ok = false
  }
  const inPod = async (cmd: string[]): Promise<string> => {
    const r = await labExec({ name: o.name, target: { pod: 'pod-client' }, cmd, timeoutMs: 20_000 })
    return r.stdout + r.stderr
  }
  const st = loadLabState(o.name)
  const client = st.pods.find(p => p.name === 'pod-client')
  const clientIP = client?.ip ?? '10.100.85.247'

  heading(1, 'The pods and the endpoints (kubectl get pod -o wide; kubectl get ep)')
  shown('tundra lab status', formatStatus(labStatus(o.name)))

  heading(2, 'pod-client asks the cluster DNS (tundra answers 10.96.0.10 itself, in its packet path)')
  const dns = await inPod(['dig', '+noall', '+answer', '+search', SERVICE])
  shown(`tundra lab exec pod-client -- dig +noall +answer +search ${SERVICE}`, dns)
  check(dns.includes(VIP), `${SERVICE}.default.svc.cluster.local resolves to ${VIP}`)

  heading(3, 'pod-client curls the service by name')
  const page = await inPod(['curl', '-sS', '-m', '5', `http://${SERVICE}:8080/`])
  const title = /<title>([^<]*)<\/title>/.exec(page)?.[1] ?? page.slice(0, 200)
  shown(`tundra lab exec pod-client -- curl -s http://${SERVICE}:8080/ | grep title`, `<title>${title}</title>`)
  check(page.includes('Welcome to nginx!'), 'nginx answered "Welcome to nginx!" through the ClusterIP')

  heading(4, "The path that request took, with kube-proxy's chain names")
  // trace the curl's own connection (its conntrack entry has the source port), so the trace shows what decided it
  let sport = 40000
  try {
    const ct = (await askAgent(loadLabState(o.name).nodes[0]!.control!, 'conntrack', { op: 'list', filter: { dst: VIP } })) as {
      entries?: { orig: { sport: number } }[]
    }
    sport = ct.entries?.[0]?.orig.sport ?? sport
  } catch {
    /* no entry: trace a new connection instead */
  }
  const trace = await tundra(['trace', '--lab', o.name, '--src', `${clientIP}:${sport}`, '--dst', `${VIP}:8080`, '--proto', 'tcp'])
  shown(`tundra trace --src ${clientIP}:${sport} --dst ${VIP}:8080`, trace.out)
  check(
    trace.code === 0 && trace.out.includes('KUBE-SVC-DDZHMK5AO3JF6KIZ') && trace.out.includes('KUBE-SEP-'),
    'PREROUTING → KUBE-SERVICES → KUBE-SVC-DDZHMK5AO3JF6KIZ → KUBE-SEP-… → DNAT to a pod',
  )

  heading(5, 'Can a Service be pinged?')
  const ping = await inPod(['ping', '-c', '3', '-i', '0.2', '-W', '1', VIP])
  shown(`tundra lab exec pod-client -- ping -c 3 ${VIP}`, ping)
  check(/ 0% packet loss/.test(ping), `${VIP} answers ping`)
  process.stdout.write(
    'With kube-proxy in iptables mode a ClusterIP does not answer: the KUBE-SERVICES rules match only the\n' +
      "service's protocol and port, and no interface owns the address. (IPVS mode answers, because it puts the\n" +
      'address on kube-ipvs0.) tundra answers echo requests to a ClusterIP itself (icmp mode "reply"), so ping\n' +
      'tells you the service exists; `"icmp": "reject"` or `"drop"` in the agent config gives the iptables behaviour.\n',
  )

  heading(6, 'The connections tundra is tracking')
  const ct = await tundra(['conntrack', 'list', '--lab', o.name])
  shown('tundra conntrack list', ct.out || '(none)')
  return ok
}

async function liveStatus(name: string, signal: AbortSignal): Promise<void> {
  const st = loadLabState(name)
  const sockets = st.nodes.map(n => n.control).filter((c): c is string => typeof c === 'string')
  process.stdout.write(`\n${bold('tundra is running')} (Ctrl-C takes the lab down)\n`)
  while (!signal.aborted) {
    let packets = 0,
      conns = 0,
      dns = 0,
      ct = 0
    for (const s of sockets) {
      try {
        const r = (await askAgent(s, 'stats', {}, 2000)) as { counters: Record<string, number> }
        const c = r.counters
        packets += c['packets'] ?? 0
        conns += c['nat_new'] ?? 0
        dns += (c['dnsAnswered'] ?? 0) + (c['dnsForwarded'] ?? 0)
        ct += c['conntrack_entries'] ?? 0
      } catch {
        /* agent busy or gone: the next tick says so */
      }
    }
    const line = `packets ${packets}  new connections ${conns}  DNS queries ${dns}  conntrack entries ${ct}`
    process.stdout.write(process.stdout.isTTY ? `\r\x1b[K${line}` : `${line}\n`)
    // timers/promises takes its abort listener off again when the time is up (one per tick would pile up on the signal)
    await sleep(process.stdout.isTTY ? 1000 : 10_000, undefined, { signal }).catch(() => undefined)
  }
  process.stdout.write('\n')
}

export function registerStart(program: Command): void {
  program
    .command('start')
    .description('the seed example: bring up its lab, walk its story (DNS, curl, trace, ping, conntrack), stay up until Ctrl-C')
    .option('--name <lab>', 'lab name', 'seed')
    .option('--nodes <n>', 'nodes', v => Number(v), 1)
    .option('--detach', 'leave the lab up and return (take it down with `tundra lab down`)')
    .option('--as-documented', "pin the pods to the document's addresses (10.100.85.246/.253), so the KUBE-SEP names match it too")
    .action(async (o: StartOptions) => {
      const abort = new AbortController()
      const onSignal = (): void => abort.abort()
      process.on('SIGINT', onSignal)
      process.on('SIGTERM', onSignal)
      let ok = false
      let up = false
      try {
        await labUp({ files: [o.asDocumented ? AS_DOCUMENTED : SEED], name: o.name, nodes: o.nodes, dataplane: 'tundra', signal: abort.signal })
        up = true
        ok = await story(o)
        process.stdout.write(ok ? `\n${bold('The seed story works end to end.')}\n` : `\n${bold('Some steps failed (✘ above).')}\n`)
        if (o.detach) {
          process.stdout.write(`The lab stays up: tundra lab exec --name ${o.name} pod-client -- curl -s http://${SERVICE}:8080/\n`)
          return
        }
        await liveStatus(o.name, abort.signal)
      } finally {
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
        if (up && (!o.detach || !ok)) {
          try {
            await labDown(o.name)
          } catch (err) {
            process.stderr.write(`tundra: lab down: ${(err as Error).message}\n`)
          }
        }
      }
      if (!ok) process.exitCode = 1
    })
}
