// `tundra run` seen from outside, in one lab node with no dataplane of its own:
// - after connections through a ClusterIP, /metrics has non-zero tundra_endpoint_* series labelled with the
//   service, port and endpoint; and every metric family run declares has data after traffic, except those named
//   below with the reason they may stay empty;
// - -v=4 with JSON logs shows each sync (kube-proxy's "SyncProxyRules complete", with v) and each changed object;
//   the default verbosity shows none of them;
// - nodePortAddresses: a NodePort answers on the node addresses it selects and not on the others (no DNAT: the
//   node's kernel refuses, as with kube-proxy), for an empty list (iptables: every node address), a CIDR, and
//   nftables mode's default `primary`;
// - --masquerade-all masquerades pod -> ClusterIP traffic too.
import t from 'tap'
import type { ChildProcess } from 'node:child_process'
import { netnsSkip } from '../helpers/netns'
import { labExec } from '../../src/lab/index'
import { restartRun, runLab, until } from './fixtures/run-lab'
import { readObjects, writeObject } from '../../src/lab/objects'
import type { EndpointSlice } from '../../src/k8s/types'

const skip = netnsSkip('curl', 'unshare')

/** An address added to node1's uplink for the test (the node's own is 172.18.0.11). */
const SECOND = '172.18.0.211'

/**
 * Families that may have no non-zero sample after the traffic below, and why. Everything else run declares must
 * show data (process_* and nodejs_* are prom-client's own and not checked).
 */
const MAY_BE_EMPTY: Readonly<Record<string, string>> = {
  kubeproxy_sync_proxy_rules_endpoint_changes_pending: 'nothing pending once synced',
  kubeproxy_sync_proxy_rules_service_changes_pending: 'nothing pending once synced',
  kubeproxy_sync_proxy_rules_no_local_endpoints_total: 'no service with a Local traffic policy',
  kubeproxy_network_programming_duration_seconds: 'the lab writes no endpoints.kubernetes.io/last-change-trigger-time',
  kubeproxy_sync_partial_proxy_rules_duration_seconds: 'no partial sync: nothing changes during the test',
  tundra_sync_errors_total: 'no sync fails',
  tundra_source_relists_total: 'manifests are not relisted',
  tundra_source_errors_total: 'no read fails',
  tundra_source_watch_connected: 'manifests have no watch stream',
  tundra_dns_tcp_connections: 'no DNS over TCP',
  tundra_dns_tcp_rejected_total: 'no DNS over TCP',
  tundra_dns_tcp_idle_closed_total: 'no DNS over TCP',
  coredns_forward_responses_errors_total: 'the upstream answers',
  coredns_forward_max_concurrent_rejects_total: 'one query at a time',
  coredns_cache_hits_total: 'each upstream name is asked once',
  coredns_cache_entries: "the lab's dnsmasq answers its host names with TTL 0 (local-ttl), which is not cached",
  tundra_drops_total: 'no packet of this traffic is dropped',
  tundra_batch_packets: 'an average since the previous scrape: zero when no packet came in between',
  tundra_dns_udp_send_dropped_total: 'a few queries: every answer fits the socket buffer',
  tundra_udp_coalesced_total: 'curl and one DNS query at a time: no run of UDP datagrams of one flow in a batch',
  tundra_endpoint_connections_failed_total: 'every connect succeeds',
  tundra_endpoint_resets_total: 'the connections end with FIN',
  tundra_endpoint_connections_active: 'every connection has closed by the scrape',
  tundra_endpoint_ejections_total: 'outlier ejection is off',
  tundra_endpoint_ejected: 'outlier ejection is off',
}

/** family name -> its sample lines (from the text format) */
function families(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  const names: string[] = []
  for (const line of text.split('\n')) {
    const m = /^# HELP (\S+) /.exec(line)
    if (m) {
      out.set(m[1]!, [])
      names.push(m[1]!)
      continue
    }
    if (line === '' || line.startsWith('#')) continue
    const series = line.slice(0, line.search(/[{ ]/))
    const fam = names.find(n => series === n || (series.startsWith(n + '_') && /_(bucket|sum|count|total)$/.test(series)))
    if (fam !== undefined) out.get(fam)!.push(line)
  }
  return out
}

const nonZero = (lines: readonly string[]): boolean => lines.some(l => Number(l.slice(l.lastIndexOf(' ') + 1)) !== 0)

t.test('tundra run: endpoint metrics, every family, verbosity, nodePortAddresses, masqueradeAll', { ...skip, timeout: 240_000 }, async t => {
  let log = ''
  const lab = await runLab(t, 'ro', () => log.slice(-4000))
  const { state, node, pod } = lab
  const external = (cmd: string[]) => labExec({ name: lab.name, target: { external: true }, cmd, timeoutMs: 20_000 })
  const srv = state.pods.find(p => p.name === 'srv')!
  const nodeIP = state.nodes[0]!.ip
  t.equal(nodeIP, '172.18.0.11', 'the lab node has the expected address')
  const add = await node(['ip', 'addr', 'add', `${SECOND}/24`, 'dev', 'eth0'])
  t.equal(add.code, 0, `a second node address on the uplink (${add.stderr})`)

  let run: ChildProcess | undefined
  const start = async (extra: string[]): Promise<void> => {
    log = ''
    run = await restartRun(lab, run, extra, d => {
      log += d
    })
    await until('tundra run to serve metrics', async () => (await metrics()).includes('kubeproxy_sync_proxy_rules_last_timestamp_seconds'))
  }
  const metrics = async (): Promise<string> => (await node(['curl', '-s', '127.0.0.1:10249/metrics'])).stdout
  /** curl's exit code and body for http://addr:30050/hostname from the host outside the cluster */
  const nodePort = async (addr: string): Promise<{ code: number; out: string }> => {
    const r = await external(['curl', '-sS', '-m', '3', `http://${addr}:30050/hostname`])
    return { code: r.code, out: r.stdout }
  }

  await t.test('metrics after traffic, verbose JSON logs', async t => {
    await start(['-v=4', '--logging-format', 'json'])
    for (let i = 0; i < 5; i++) {
      const r = await pod('cli', ['curl', '-sS', '-m', '5', 'http://perf:5003/hostname'])
      t.equal(r.stdout, 'srv', `connection ${i} through the ClusterIP by name (${r.stderr})`)
    }
    const ext = await pod('cli', ['nslookup', 'example.test'])
    t.match(ext.stdout, /172\.18\.0\.100/, 'a name outside the cluster through the upstream')
    await node(['curl', '-s', '-o', '/dev/null', '127.0.0.1:10256/healthz'])
    await node(['curl', '-s', '-o', '/dev/null', '127.0.0.1:10256/livez'])

    const text = await metrics()
    const ep = `namespace="default",service="perf",port="http",endpoint="${srv.ip}:8080"`
    const conns = new RegExp(`^tundra_endpoint_new_connections_total\\{${ep.replace(/[.[\]]/g, '\\$&')}\\} (\\d+)$`, 'm').exec(text)
    t.ok(conns !== null && Number(conns[1]) >= 5, `tundra_endpoint_new_connections_total{${ep}} counts the 5 connections (${conns?.[1]})`)
    const pkts = new RegExp(`^tundra_endpoint_packets_total\\{${ep.replace(/[.[\]]/g, '\\$&')}\\} (\\d+)$`, 'm').exec(text)
    t.ok(pkts !== null && Number(pkts[1]) >= 5 * 5, `tundra_endpoint_packets_total{${ep}} counts both directions (${pkts?.[1]})`)

    const fams = families(text)
    const empty: string[] = []
    for (const [name, lines] of fams) {
      if (name.startsWith('process_') || name.startsWith('nodejs_')) continue
      if (!nonZero(lines) && MAY_BE_EMPTY[name] === undefined) empty.push(name)
    }
    t.same(empty, [], 'every declared family that must have data has a non-zero sample')
    for (const name of Object.keys(MAY_BE_EMPTY)) t.ok(fams.has(name), `${name} is still declared (the allow-list is current)`)

    const json = log
      .split('\n')
      .filter(l => l.startsWith('{'))
      .map(l => JSON.parse(l) as { v: number; component?: string; msg: string })
    const complete = json.find(o => o.msg.startsWith('SyncProxyRules complete'))
    t.ok(complete, 'a V(2) line per sync, in kube-proxy words')
    t.equal(complete?.v, 2, 'JSON carries v')
    t.match(complete?.msg, /elapsed=[\d.]+ms full=true numServicePorts=[1-9]\d* numEndpoints=[1-9]/)
    t.ok(
      json.some(o => o.msg.startsWith('Syncing tundra rules')),
      'and one as it starts',
    )

    // an EndpointSlice edit: the changed service is logged at 4
    const slice = [...readObjects(state.manifests!).values()].find(o => o.kind === 'EndpointSlice') as EndpointSlice
    writeObject(state.manifests!, { ...slice, metadata: { ...slice.metadata, labels: { ...slice.metadata?.labels, touched: 'yes' } } })
    const changed = await until('the change to be logged', async () => log.split('\n').find(l => l.includes('Endpoints changed service=default/perf')))
    t.equal((JSON.parse(changed) as { v: number }).v, 4, 'a changed EndpointSlice is logged at V(4)')
  })

  await t.test('default verbosity: no V lines; nodePortAddresses with a CIDR', async t => {
    await start(['--nodeport-addresses', `${SECOND}/32`])
    t.notMatch(log, /SyncProxyRules complete|Syncing tundra rules/, 'nothing above level 0 by default')
    // nodePortAddresses: a CIDR selects the second address only
    t.same(await nodePort(SECOND), { code: 0, out: 'srv' }, 'the NodePort answers on the listed address')
    t.equal((await nodePort(nodeIP)).code, 7, 'and not on the node IP, which is not listed (connection refused)')
  })

  await t.test('nodePortAddresses unset: iptables mode serves every node address, nftables mode the primary', async t => {
    await start([])
    t.same(await nodePort(nodeIP), { code: 0, out: 'srv' }, 'iptables mode: the node IP')
    t.same(await nodePort(SECOND), { code: 0, out: 'srv' }, 'iptables mode: the other node address too')
    await start(['--proxy-mode', 'nftables'])
    t.same(await nodePort(nodeIP), { code: 0, out: 'srv' }, 'nftables mode (primary): the node IP')
    t.equal((await nodePort(SECOND)).code, 7, 'nftables mode (primary): not another node address')
  })

  await t.test('masqueradeAll: the endpoint sees the node, not the pod (issue 15: it was accepted and ignored)', async t => {
    const cli = state.pods.find(p => p.name === 'cli')!
    const seen = async (): Promise<string> => (await pod('cli', ['curl', '-sS', '-m', '5', 'http://10.96.0.50:5003/clientip'])).stdout.split(':')[0]!
    t.equal(await seen(), cli.ip, 'without it: pod to ClusterIP keeps the pod address')
    await start(['--masquerade-all'])
    t.equal(await seen(), nodeIP, '--masquerade-all: masqueraded to the node IP')
  })
  if (run !== undefined) run.kill('SIGTERM')
})
