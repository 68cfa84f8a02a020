// Parsers of what the load tools print (captured output, abridged).
import t from 'tap'
import {
  crefRules,
  parseConnect,
  parseIperfTcpCsv,
  parseIperfUdpServerCsv,
  parsePidStat,
  parseProcStat,
  parseSnmpUdp,
  parseSockperf,
} from '../../bench/lib/tools'
import { parseDnsblast, parseDnsperf } from '../../bench/sections/dns'
import { manifestPath } from '../../bench/sections/e2e'
import { compileLab } from '../../src/lab/compile'

t.test('iperf2 CSV', async t => {
  t.equal(parseIperfTcpCsv('19700101000000,10.100.85.10,38246,10.96.200.11,5001,1,0.0-3.0,4189454396,11124026535\n'), 11124026535)
  const four = [1, 2, 3, 4].map(i => `19700101000000,10.100.85.10,5909${i},10.96.200.10,5001,${i},0.0-3.0,1,1000`).join('\n')
  t.equal(parseIperfTcpCsv(four), 4000, 'streams summed')
  t.equal(parseIperfTcpCsv(`${four}\n19700101000000,10.100.85.10,0,10.96.200.10,5001,-1,0.0-3.0,4,3999\n`), 3999, 'the SUM line when present')
  t.ok(Number.isNaN(parseIperfTcpCsv('connect failed: No route to host')))
  const u = parseIperfUdpServerCsv('19700101000000,10.100.85.10,35641,10.100.85.12,5002,1,0.0-2.0,8445708,33770640,0.001,35204,167168,21.059,0')!
  t.equal(u.sent, 167168)
  t.equal(u.received, 167168 - 35204)
  t.equal(u.rxPps, (167168 - 35204) / 2)
  t.ok(Math.abs(u.lossPct - 21.059) < 0.01)
  t.equal(parseIperfUdpServerCsv('Server listening on UDP port 5001'), undefined)
})

t.test('/proc/net/snmp Udp counters', async t => {
  const snmp = `Icmp: InMsgs InErrors
Icmp: 0 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 352135 0 190147 12 190147 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`
  const u = parseSnmpUdp(snmp)!
  t.equal(u['RcvbufErrors'], 190147, 'by name, not UdpLite')
  t.equal(u['InDatagrams'], 352135)
  t.equal(parseSnmpUdp('Ip: Forwarding\nIp: 1\n'), undefined, 'no Udp lines')
  t.equal(parseSnmpUdp('Udp: InDatagrams NoPorts\nUdp: 1\n'), undefined, 'names and values disagree')
})

t.test('sockperf', async t => {
  const out = `sockperf: \x1b[2;35m====> avg-latency=34.811 (std-dev=232.418)\x1b[0m
sockperf: \x1b[2;35mTotal 22249 observations\x1b[0m; each percentile contains 222.49 observations
sockperf: ---> percentile 99.000 =  194.638
sockperf: ---> percentile 90.000 =   62.037
sockperf: ---> percentile 50.000 =   15.223
`
  t.same(parseSockperf(out), { p50: 15.223, p99: 194.638, avg: 34.811, observations: 22249 })
  t.equal(parseSockperf('sockperf: ERROR'), undefined)
})

t.test('dnsperf', async t => {
  const out = `Statistics:

  Queries sent:         68086
  Queries completed:    68080 (99.99%)
  Queries lost:         6 (0.01%)

  Response codes:       NOERROR 68080 (100.00%)
  Average packet size:  request 45, response 61
  Run time (s):         2.001
  Queries per second:   34025.0

  Average Latency (s):  0.004817 (min 0.000020, max 0.051540)
  Latency StdDev (s):   0.002131
`
  const r = parseDnsperf(out)!
  t.equal(r.qps, 34025)
  t.equal(r.completed, 68080)
  t.equal(r.lost, 6)
  t.ok(Math.abs(r.avgLatencyMs - 4.817) < 1e-9)
  t.ok(Math.abs(r.stddevLatencyMs - 2.131) < 1e-9)
  t.equal(parseDnsperf('nothing'), undefined)
})

t.test('connect tool, /proc', async t => {
  t.same(parseConnect('{"connections":10,"errors":0,"seconds":1,"perSecond":10,"p50Ms":1,"p99Ms":2}\n'), {
    connections: 10,
    errors: 0,
    seconds: 1,
    perSecond: 10,
    p50Ms: 1,
    p99Ms: 2,
  })
  t.equal(parseConnect(''), undefined)
  t.same(parseProcStat('cpu  405960 0 132790 2520209 1282 3 7284 0 0 0\ncpu0 1 2 3\n'), {
    irq: 3,
    softirq: 7284,
    total: 405960 + 132790 + 2520209 + 1282 + 3 + 7284,
  })
  const stat = '1234 (node (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0 5000 0 0'
  t.equal(parsePidStat(stat), 325, 'utime + stime, after a comm with spaces and parentheses')
})

t.test('crefRules: one rule per IPv4 ClusterIP port with ready endpoints, from the e2e lab', async t => {
  const cluster = compileLab({ name: 'bncref', files: [manifestPath()], nodes: 1, dataplane: 'none' }).cluster
  const rules = crefRules(cluster)
  t.ok(rules.includes('tcp:10.96.200.11:80=10.100.85.11:80'), 'solo: one endpoint')
  t.ok(rules.includes('udp:10.96.200.10:11111=10.100.85.11:11111,10.100.85.12:11111'), 'web: both endpoints, UDP')
  t.notOk(rules.some(r => r.startsWith('sctp')))
})

t.test('dnsblast JSON line', async t => {
  const r = parseDnsblast('warming up\n{"completed":973252,"lost":32,"notNoerror":5,"sendErrors":0,"seconds":5.000,"qps":194611.6,"avgLatencyMs":0.9956}\n')!
  t.equal(r.qps, 194611.6)
  t.equal(r.completed, 973252)
  t.equal(r.lost, 32)
  t.equal(r.notNoerror, 5)
  t.equal(r.avgLatencyMs, 0.9956)
  t.ok(Number.isNaN(r.stddevLatencyMs), 'dnsblast gives no deviation')
  t.equal(parseDnsblast('dnsblast: need -s, -d and -l (1..3600 seconds)\n'), undefined, 'a usage error is no result')
  t.equal(parseDnsblast('{"completed":1,'), undefined, 'a cut line is no result')
  t.equal(parseDnsblast('{"completed":1}'), undefined, 'no q/s, no result')
})
