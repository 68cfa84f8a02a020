// Readiness probes the lab runs from a node's namespace (as kubelet probes pods from the node): a TCP connect,
// a UDP round trip to netexec, or a DNS query to the upstream resolver.
import { connect } from 'node:net'
import { createSocket } from 'node:dgram'
import dnsPacket from 'dns-packet'

export type ProbeKind = 'tcp' | 'udp' | 'dns'
export interface ProbeTarget {
  readonly kind: ProbeKind
  readonly ip: string
  readonly port: number
}

export const formatTarget = (t: ProbeTarget): string => `${t.kind}:${t.ip}:${t.port}`

export function parseTarget(s: string): ProbeTarget {
  const m = /^(tcp|udp|dns):(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s)
  if (!m) throw new Error(`not a probe target (tcp|udp|dns:<ip>:<port>): ${s}`)
  return { kind: m[1] as ProbeKind, ip: m[2]!, port: Number(m[3]) }
}

/** A recursive query for `example.test. IN A`: enough to see a resolver answer. */
export function dnsQuery(id: number): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'example.test' }] })
}

/** One attempt; resolves true when the target answered within `timeoutMs`. */
export function probeOnce(t: ProbeTarget, timeoutMs = 500): Promise<boolean> {
  if (t.kind === 'tcp') {
    return new Promise(resolve => {
      const sock = connect({ host: t.ip, port: t.port })
      const done = (ok: boolean): void => {
        clearTimeout(timer)
        sock.destroy()
        resolve(ok)
      }
      const timer = setTimeout(() => done(false), timeoutMs)
      sock.once('connect', () => done(true))
      sock.once('error', () => done(false))
    })
  }
  return new Promise(resolve => {
    const sock = createSocket('udp4')
    const id = 0x7d00 | (process.pid & 0xff)
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      sock.close()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    sock.once('error', () => done(false))
    sock.on('message', msg => {
      if (t.kind === 'udp') done(true)
      else if (msg.length >= 12 && msg.readUInt16BE(0) === id && (msg.readUInt16BE(2) & 0x8000) !== 0) done(true)
    })
    sock.send(t.kind === 'udp' ? Buffer.from('hostname') : dnsQuery(id), t.port, t.ip)
  })
}

/** Probes every target until all answered or `timeoutMs` passed; calls onReady once per target. Returns the unready. */
export async function probeAll(targets: readonly ProbeTarget[], timeoutMs: number, onReady: (t: ProbeTarget) => void = () => {}): Promise<ProbeTarget[]> {
  let pending = [...targets]
  const end = Date.now() + timeoutMs
  while (pending.length > 0) {
    const results = await Promise.all(pending.map(t => probeOnce(t, Math.min(500, Math.max(50, end - Date.now())))))
    const still: ProbeTarget[] = []
    pending.forEach((t, i) => {
      if (results[i]) onReady(t)
      else still.push(t)
    })
    pending = still
    if (pending.length === 0 || Date.now() >= end) break
    await new Promise(r => setTimeout(r, 50))
  }
  return pending
}
