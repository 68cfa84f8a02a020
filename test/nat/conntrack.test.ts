// Conntrack on its own: layout size, the TCP state machine and its timeouts, reaping, the size limit with early
// drop, hash-index integrity under churn, and snapshot/restore.
import t from 'tap'
import { Conntrack, CtFlag, CtStat, ORIG, REPLY, TcpState, TcpVerdict, TCP_STATE_NAMES } from '../../src/nat/conntrack'
import { ACK, FIN, RST, SYN } from './packets'

const NOW = 50000

/** Creates a DNAT entry client:cport -> vip:80 / ep:8080 -> client:cport (IPv4). */
function add(ct: Conntrack, client: number, cport: number, proto = 6, now = NOW): number {
  const k = ct.tk
  k[0] = client
  k[1] = 0x0a60000a
  k[2] = ((cport << 16) | 80) >>> 0
  k[3] = 0x0a640102
  k[4] = client
  k[5] = ((8080 << 16) | cport) >>> 0
  return ct.create(proto, 3, 0, now)
}

function look(ct: Conntrack, src: number, dst: number, sport: number, dport: number, proto = 6): number {
  ct.key[0] = src
  ct.key[1] = dst
  ct.key[2] = ((sport << 16) | dport) >>> 0
  return ct.lookup(proto)
}

t.test('bytes per entry, both hash slots included', async tt => {
  for (const max of [1000, 65536, 262144]) {
    const ct = new Conntrack({ family: 4, max })
    const per = ct.byteLength() / ct.capacity
    tt.ok(per <= 128, `IPv4, max ${max}: ${per} bytes per entry`)
    tt.ok(ct.capacity >= max)
  }
  const v6 = new Conntrack({ family: 6, max: 1000 })
  tt.equal(v6.byteLength() / v6.capacity, 163, 'IPv6 entries (wider tuples) as documented')
})

t.test('both tuples find the entry; directions are told apart', async tt => {
  const ct = new Conntrack({ family: 4, max: 100, seed: 1 })
  const e = add(ct, 0x0a640132, 40000)
  tt.equal(look(ct, 0x0a640132, 0x0a60000a, 40000, 80), e * 2 + ORIG)
  tt.equal(look(ct, 0x0a640102, 0x0a640132, 8080, 40000), e * 2 + REPLY)
  tt.equal(look(ct, 0x0a640102, 0x0a640132, 8080, 40000, 17), -1, 'protocol is part of the key')
  tt.equal(look(ct, 0x0a640132, 0x0a60000a, 40001, 80), -1)
  tt.ok(ct.flags[e]! & CtFlag.DNAT)
  tt.notOk(ct.flags[e]! & CtFlag.SNAT, 'client address and port kept: no SNAT flag')
})

t.test('TCP state machine with kube-proxy timeouts', async tt => {
  const ct = new Conntrack({ family: 4, max: 100 })
  const e = add(ct, 1, 1000)
  ct.setTcpState(e, TcpState.SYN_SENT, NOW)
  const steps: [number, number, string, number][] = [
    [REPLY, SYN | ACK, 'SYN_RECV', 60],
    [ORIG, ACK, 'ESTABLISHED', 86400],
    [REPLY, FIN | ACK, 'FIN_WAIT', 120],
    [ORIG, ACK, 'CLOSE_WAIT', 3600],
    [ORIG, FIN | ACK, 'LAST_ACK', 30],
    [REPLY, ACK, 'TIME_WAIT', 120],
  ]
  let now = NOW
  for (const [dir, flags, state, timeout] of steps) {
    now += 5
    tt.equal(ct.tcp(e, dir, flags, now), TcpVerdict.OK, `${state}`)
    tt.equal(TCP_STATE_NAMES[ct.state[e]!], state)
    tt.equal(ct.expires[e]! - now, timeout, `${state} timeout ${timeout}s`)
  }
  tt.ok(ct.flags[e]! & CtFlag.ASSURED, 'assured once established with a reply')
  tt.equal(ct.tcp(e, ORIG, SYN, now), TcpVerdict.REOPEN, 'SYN in TIME_WAIT reopens')
  // SYN_SENT expiry and RST -> CLOSE (10 s).
  const f = add(ct, 2, 1000)
  ct.setTcpState(f, TcpState.SYN_SENT, NOW)
  tt.equal(ct.expires[f]! - NOW, 120)
  tt.equal(ct.tcp(f, REPLY, RST | ACK, NOW), TcpVerdict.OK)
  tt.equal(TCP_STATE_NAMES[ct.state[f]!], 'CLOSE')
  tt.equal(ct.expires[f]! - NOW, 10)
})

t.test('invalid segments do not move the state', async tt => {
  const ct = new Conntrack({ family: 4, max: 100 })
  const e = add(ct, 1, 1000)
  ct.setTcpState(e, TcpState.SYN_SENT, NOW)
  const before = ct.expires[e]
  tt.equal(ct.tcp(e, ORIG, ACK, NOW + 1), TcpVerdict.INVALID, 'client ACK before SYN|ACK')
  tt.equal(ct.tcp(e, ORIG, 0, NOW + 1), TcpVerdict.INVALID, 'no flags at all')
  tt.equal(ct.tcp(e, REPLY, FIN, NOW + 1), TcpVerdict.INVALID, 'FIN before the handshake')
  tt.equal(ct.state[e], TcpState.SYN_SENT)
  tt.equal(ct.expires[e], before)
  tt.equal(ct.tcp(e, ORIG, SYN, NOW + 1), TcpVerdict.OK, 'retransmitted SYN')
  ct.tcp(e, REPLY, SYN | ACK, NOW + 1)
  ct.tcp(e, ORIG, ACK, NOW + 1)
  tt.equal(ct.tcp(e, ORIG, SYN | ACK, NOW + 1), TcpVerdict.INVALID, 'SYN|ACK from the client when established')
  tt.equal(ct.tcp(e, REPLY, SYN | ACK, NOW + 1), TcpVerdict.IGNORE, 'retransmitted SYN|ACK is ignored')
  tt.equal(ct.state[e], TcpState.ESTABLISHED)
})

t.test('UDP: 30 s unreplied, 120 s once replied', async tt => {
  const ct = new Conntrack({ family: 4, max: 100 })
  const e = add(ct, 1, 1000, 17)
  ct.touch(e, ORIG, NOW)
  tt.equal(ct.expires[e]! - NOW, 30)
  ct.touch(e, REPLY, NOW + 10)
  tt.equal(ct.expires[e]! - NOW - 10, 120)
  tt.ok(ct.flags[e]! & CtFlag.ASSURED)
  const i = add(ct, 2, 1000, 1)
  ct.touch(i, ORIG, NOW)
  tt.equal(ct.expires[i]! - NOW, 30, 'ICMP 30 s')
})

t.test('reap removes expired entries a slice at a time', async tt => {
  const ct = new Conntrack({ family: 4, max: 1024 })
  for (let i = 0; i < 1000; i++) {
    const e = add(ct, 0x0b000000 + i, 1000, 17)
    ct.expires[e] = NOW + (i % 2 === 0 ? 10 : 1000)
  }
  tt.equal(ct.reap(NOW + 20, 100), ct.stats[CtStat.REAPED])
  tt.ok(ct.count > 500, 'one slice does not do everything')
  for (let i = 0; i < 20; i++) ct.reap(NOW + 20, 100)
  tt.equal(ct.count, 500)
  let found = 0
  for (let i = 0; i < 1000; i++) if (look(ct, 0x0b000000 + i, 0x0a60000a, 1000, 80, 17) >= 0) found++
  tt.equal(found, 500, 'survivors are all still found')
})

t.test('max entries: early drop of unassured entries, then refusal', async tt => {
  const ct = new Conntrack({ family: 4, max: 64 })
  tt.equal(ct.capacity, 64)
  for (let i = 0; i < 64; i++) ct.touch(add(ct, 100 + i, 1000, 17), ORIG, NOW)
  tt.equal(ct.count, 64)
  const e = add(ct, 999, 1000, 17)
  tt.ok(e >= 0, 'a new connection evicts an unreplied one')
  tt.equal(ct.stats[CtStat.EARLY_DROP], 1)
  tt.equal(ct.count, 64)
  for (const x of ct.entries()) ct.touch(x, REPLY, NOW)
  tt.equal(add(ct, 1000, 1000, 17), -1, 'all assured: nothing to evict')
  tt.equal(ct.stats[CtStat.FULL], 1)
  // An expired entry is always fair game.
  for (const x of ct.entries()) ct.expires[x] = NOW - 1
  tt.ok(add(ct, 1001, 1000, 17) >= 0)
})

t.test('hash index stays consistent under random churn (model check)', async tt => {
  const ct = new Conntrack({ family: 4, max: 4096, seed: 42 })
  const model = new Map<number, number>() // client -> entry
  let x = 12345
  const rnd = (n: number): number => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    return x % n
  }
  for (let step = 0; step < 40000; step++) {
    const c = rnd(6000) + 1
    const have = model.get(c)
    if (have === undefined) {
      if (ct.count >= 4000) continue
      const e = add(ct, c, 7, 17)
      if (e >= 0) model.set(c, e)
    } else if (rnd(2) === 0) {
      ct.delete(have)
      model.delete(c)
    }
  }
  let bad = 0
  for (let c = 1; c <= 6000; c++) {
    const e = model.get(c)
    const o = look(ct, c, 0x0a60000a, 7, 80, 17)
    const r = look(ct, 0x0a640102, c, 8080, 7, 17)
    if (e === undefined ? o !== -1 || r !== -1 : o !== e * 2 || r !== e * 2 + 1) bad++
  }
  tt.equal(bad, 0)
  tt.equal(ct.count, model.size)
})

t.test('snapshot / restore round trip', async tt => {
  const a = new Conntrack({ family: 4, max: 256, seed: 1 })
  for (let i = 0; i < 50; i++) {
    const e = add(a, 0x0c000000 + i, 2000 + i)
    a.setTcpState(e, TcpState.ESTABLISHED, NOW)
    a.seqNext[e * 2] = 1000 + i
    a.counters[e * 4] = i
  }
  const gone = add(a, 0x0d000000, 1)
  a.expires[gone] = NOW + 1
  const snap = a.snapshot()
  const b = new Conntrack({ family: 4, max: 256, seed: 2 })
  tt.equal(b.restore(snap, NOW + 5), 50, 'expired entry left out')
  for (let i = 0; i < 50; i++) {
    const ref = look(b, 0x0a640102, 0x0c000000 + i, 8080, 2000 + i)
    tt.ok(ref >= 0 && (ref & 1) === REPLY, `reply tuple ${i} found`)
    const e = ref >>> 1
    if (b.state[e] !== TcpState.ESTABLISHED || b.seqNext[e * 2] !== 1000 + i || b.counters[e * 4] !== i || b.svcPort[e] !== 3) {
      tt.fail(`entry ${i} fields`)
    }
  }
  tt.throws(() => new Conntrack({ family: 6, max: 16 }).restore(snap, NOW), RangeError)
  tt.throws(() => b.restore(Buffer.alloc(8), NOW), RangeError)
})
