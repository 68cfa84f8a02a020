// The agent config's tun settings (packetThreads, and the TUNDRA_* overrides): honoured when they fit, refused with
// the field or variable named when they do not.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readAgentConfig } from '../../src/agent/config-file'
import { tunOverrides } from '../../src/agent/config'

const BASE = {
  node: { name: 'n1', ip: '172.18.0.2', podCIDR: '10.100.1.0/24', uplink: 'eth0' },
  clusterCIDR: '10.100.0.0/16',
  serviceCIDR: '10.96.0.0/12',
  manifests: [],
  dns: { ip: '10.96.0.10', zone: 'cluster.local', upstreams: [] },
  tun: { name: 'tundra0', vnetHdr: true },
  vxlan: { vni: 4096, port: 4789, peers: [] },
  control: '/tmp/x.sock',
}

t.test('tun.packetThreads', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-cfg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const read = (tun: Record<string, unknown>): unknown => {
    const f = join(dir, 'agent.json')
    writeFileSync(f, JSON.stringify({ ...BASE, tun: { ...BASE.tun, ...tun } }))
    return readAgentConfig(f).tun
  }
  t.match(read({ packetThreads: 2 }), { packetThreads: 2 }, 'two threads (queues follow)')
  t.match(read({ packetThreads: 4, queues: 4, io: 'inline' }), { packetThreads: 4, queues: 4 }, 'queues equal to it')
  t.match(read({ packetThreads: 1, queues: 3, io: 'thread' }), { packetThreads: 1 }, 'one thread: queues and io as before')
  t.throws(() => read({ packetThreads: 0 }), /tun\.packetThreads: expected an integer 1\.\.64, got 0/)
  t.throws(() => read({ packetThreads: 1.5 }), /tun\.packetThreads/)
  t.throws(() => read({ packetThreads: 2, queues: 3 }), /tun\.queues \(3\) must equal tun\.packetThreads \(2\)/)
  t.throws(() => read({ packetThreads: 2, io: 'thread' }), /tun\.io "thread" with tun\.packetThreads > 1/)
})

t.test('failover and outlier ejection are refused with packetThreads > 1', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-cfg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const read = (extra: Record<string, unknown>): unknown => {
    const f = join(dir, 'agent.json')
    writeFileSync(f, JSON.stringify({ ...BASE, ...extra }))
    return readAgentConfig(f).tun
  }
  const two = { tun: { ...BASE.tun, packetThreads: 2 } }
  t.throws(() => read({ ...two, failover: { enabled: true } }), /failover\.enabled: not supported with tun\.packetThreads 2/)
  t.throws(() => read({ ...two, outlierEjection: { enabled: true } }), /outlierEjection\.enabled: not supported with tun\.packetThreads 2/)
  t.match(read({ ...two, signals: { enabled: true }, failover: { enabled: false } }), { packetThreads: 2 }, 'signals stay allowed')
  t.match(read({ failover: { enabled: true }, outlierEjection: { enabled: true } }), { name: 'tundra0' }, 'one thread: allowed')
})

t.test('TUNDRA_* overrides of tun are checked as the config file is', async t => {
  t.same(tunOverrides({}), {}, 'none set: nothing overridden')
  t.same(tunOverrides({ TUNDRA_PACKET_THREADS: '2', TUNDRA_BUSY_POLL_US: '0', TUNDRA_TUN_QUEUES: '2', TUNDRA_TUN_IO: 'inline' }), {
    packetThreads: 2,
    busyPollUs: 0,
    queues: 2,
    io: 'inline',
  })
  t.throws(() => tunOverrides({ TUNDRA_PACKET_THREADS: 'two' }), /TUNDRA_PACKET_THREADS: expected an integer 1\.\.64, got "two"/)
  t.throws(() => tunOverrides({ TUNDRA_PACKET_THREADS: '0' }), /TUNDRA_PACKET_THREADS: expected an integer 1\.\.64/)
  t.throws(() => tunOverrides({ TUNDRA_TUN_QUEUES: '' }), /TUNDRA_TUN_QUEUES/)
  t.throws(() => tunOverrides({ TUNDRA_BUSY_POLL_US: '-1' }), /TUNDRA_BUSY_POLL_US: expected an integer 0\.\.1000000/)
  t.throws(() => tunOverrides({ TUNDRA_TUN_IO: 'threads' }), /TUNDRA_TUN_IO: expected "inline" or "thread", got "threads"/)
})
