// The DNS section's load generator (bench/tools/dnsblast.c) against dnsmasq in a namespace pair: it counts answers,
// tells error answers apart, counts unanswered queries as lost, and stops on time.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip, topology } from '../helpers/netns'
import { dnsblastBinary, dnsmasqCommand, waitListening } from '../../bench/lib/tools'
import { parseDnsblast } from '../../bench/sections/dns'
import { repoRoot } from '../../src/lab/up'

const skip = netnsSkip('dnsmasq', 'cc')

t.test('dnsblast against dnsmasq and against a server that never answers', { ...skip, timeout: 60_000 }, async t => {
  const bin = dnsblastBinary(repoRoot())
  if (!bin) return t.fail('dnsblast builds')
  const dir = t.testdir({})
  const hosts = join(dir, 'hosts')
  const queries = join(dir, 'queries')
  writeFileSync(hosts, '10.97.0.1 a.default.svc.cluster.local\n10.97.0.2 b.default.svc.cluster.local\n10.97.0.3 c.default.svc.cluster.local\n')
  // three names dnsmasq holds and one it does not: a quarter of the answers are errors (REFUSED, no upstream)
  writeFileSync(queries, ['a', 'b', 'c', 'nothing'].map(n => `${n}.default.svc.cluster.local A`).join('\n') + '\n# a comment line\n')
  const topo = topology(t, 'blast')
  const cli = await topo.ns('c')
  const srv = await topo.ns('s')
  await topo.veth(cli, 'eth0', srv, 'eth0')
  await topo.addr(cli, 'eth0', '10.99.0.1/24')
  await topo.addr(srv, 'eth0', '10.99.0.2/24')
  await topo.addr(srv, 'eth0', '10.99.0.3/24')
  topo.spawn(srv, dnsmasqCommand(hosts, '10.99.0.2'))
  await waitListening(srv, 'udp', 53)

  const r = await topo.exec(cli, [bin, '-s', '10.99.0.2', '-d', queries, '-l', '1', '-c', '2', '-q', '16'], { timeoutMs: 20_000 })
  t.equal(r.code, 0, r.stderr)
  const rep = parseDnsblast(r.stdout)
  if (!rep) return t.fail(`no summary: ${r.stdout} ${r.stderr}`)
  t.ok(rep.completed > 100, `answers counted (${rep.completed})`)
  t.equal(rep.lost, 0, 'nothing lost on an idle pair')
  const share = rep.notNoerror! / rep.completed
  t.ok(share > 0.2 && share < 0.3, `a quarter of the answers are errors (${share.toFixed(3)})`)
  t.ok(rep.qps > 0 && rep.qps <= rep.completed, 'q/s from the answers within the run')

  // A socket that reads and never answers: every query is lost, after at most the run, a timeout and the drain.
  topo.spawn(srv, [process.execPath, '-e', "const s = require('node:dgram').createSocket('udp4'); s.on('message', () => {}); s.bind(53, '10.99.0.3')"])
  await waitListening(srv, 'udp', 53)
  const t0 = Date.now()
  const silent = await topo.exec(cli, [bin, '-s', '10.99.0.3', '-d', queries, '-l', '1', '-c', '2', '-q', '16'], { timeoutMs: 20_000 })
  const took = Date.now() - t0
  const s = parseDnsblast(silent.stdout)
  if (!s) return t.fail(`no summary: ${silent.stdout} ${silent.stderr}`)
  t.equal(s.completed, 0)
  t.equal(s.qps, 0)
  t.ok(s.lost >= 16, `the window's queries are lost (${s.lost})`)
  t.ok(took < 6000, `stops on time (${took} ms)`)

  const bad = await topo.exec(cli, [bin, '-s', 'not-an-address', '-d', queries, '-l', '1'], { timeoutMs: 10_000 })
  t.not(bad.code, 0, 'a bad server address is refused')
  t.match(bad.stderr, /-s must be an IPv4 address/)
})
