// How `lab up --dataplane tundra` runs the agents, checked with a stand-in agent (test/fixtures/lab/fake-agent.mjs):
// one per node, inside the node's namespace, with its config; `lab up` waits for the control socket; `lab down`
// stops them; an agent that dies at start fails `lab up` with its log and leaves nothing behind.
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { listNamespaces, netnsSkip, run } from '../helpers/netns'
import { askAgent } from '../../src/agent/control'
import { agentConfig, compileLab, labDown, labStatus, labUp, loadLabState } from '../../src/lab/index'
import { readObjects } from '../../src/lab/objects'
import { isOurs } from '../../src/lab/proc'

const root = join(__dirname, '..', '..')
const NETEXEC = join(root, 'test/fixtures/lab/netexec.yaml')
const FAKE = join(root, 'test/fixtures/lab/fake-agent.mjs')
const skip = netnsSkip('nginx', 'dnsmasq', 'unshare')

let seq = 0
const uniqueName = (): string => `la${process.pid.toString(36)}${(seq++).toString(36)}`

t.test('one agent per node, in its namespace, with its config; down stops them', { ...skip, timeout: 120_000 }, async t => {
  const name = uniqueName()
  t.teardown(() => labDown(name, { log: () => {} }))
  const log: string[] = []
  const status = await labUp({ files: [NETEXEC], name, nodes: 2, dataplane: 'tundra', agentCommand: [process.execPath, FAKE], log: l => log.push(l) })
  t.ok(log.includes('[lab] tundra is up on node2'))
  t.same(
    status.nodes.map(n => n.ready),
    [true, true],
  )
  const state = loadLabState(name)
  const agents = state.processes.filter(p => p.role === 'agent')
  t.same(
    agents.map(a => [a.owner, a.ns]),
    [
      ['node1', `tundra-${name}-node1`],
      ['node2', `tundra-${name}-node2`],
    ],
  )
  t.same(agents[0]!.argv.slice(-5), [process.execPath, FAKE, 'agent', '--config', join(state.dir, 'node1.agent.json')])

  const plan = compileLab({ name, files: [NETEXEC], nodes: 2, dataplane: 'tundra' })
  for (const n of state.nodes) {
    const cfg = JSON.parse(readFileSync(n.agentConfig!, 'utf8')) as unknown
    t.same(cfg, agentConfig(plan, n.name, join(state.dir, 'manifests'), join(state.dir, `${n.name}.sock`)), `${n.name}'s config`)
    const seen = (await askAgent(n.control!, 'hello')) as { node: { name: string }; hostname: string; peers: unknown[] }
    t.same([seen.node.name, seen.hostname, seen.peers.length], [n.name, n.name, 1], `${n.name}'s agent read its config and runs with the node's hostname`)
    const netns = await run(['ip', 'netns', 'identify', String(agents.find(a => a.owner === n.name)!.pid)])
    t.equal(netns.stdout.trim(), n.ns, "in the node's namespace")
  }
  // the manifests the agents read: the computed cluster, with the pods' addresses
  const manifests = [...readObjects(join(state.dir, 'manifests')).values()]
  for (const p of status.pods)
    t.ok(
      manifests.some(o => o.kind === 'Pod' && o.status?.podIP === p.ip),
      `Pod with podIP ${p.ip}`,
    )
  t.ok(manifests.some(o => o.kind === 'EndpointSlice'))

  process.kill(agents[0]!.pid, 'SIGKILL')
  const end = Date.now() + 5000
  while (isOurs(agents[0]!) && Date.now() < end) await new Promise(r => setTimeout(r, 20))
  t.same(
    labStatus(name).nodes.map(n => n.ready),
    [false, true],
    'a dead agent makes its node NotReady',
  )
  await labDown(name, { log: () => {} })
  t.same(agents.filter(isOurs), [], 'agents stopped')
  t.same(
    listNamespaces().filter(ns => ns.startsWith(`tundra-${name}-`)),
    [],
  )
  t.notOk(existsSync(state.dir))
})

t.test('an agent that dies at start fails lab up with its log, and nothing is left', { ...skip, timeout: 120_000 }, async t => {
  const name = uniqueName()
  t.teardown(() => labDown(name, { log: () => {} }))
  await t.rejects(
    labUp({
      files: [NETEXEC],
      name,
      nodes: 1,
      dataplane: 'tundra',
      log: () => {},
      agentCommand: [process.execPath, '-e', 'console.error("cannot open /dev/net/tun"); process.exit(3)', '--'],
    }),
    { message: /the tundra agent on node1 exited .*\n.*cannot open \/dev\/net\/tun/ },
  )
  t.same(
    listNamespaces().filter(ns => ns.startsWith(`tundra-${name}-`)),
    [],
  )
  t.notOk(existsSync(`/run/tundra/labs/${name}`))
})
