// TCP resets tundra originates: sent to the client of a connection whose endpoint went away, so it fails fast
// instead of retransmitting into a deleted pod. Full checksums (tundra builds these packets).
//
// The reset carries RST|ACK with seq = the next sequence number the endpoint would have sent (what the client
// expects, RFC 5961 §3.2 accepts it without a challenge ACK) and ack = the next one the client will send; before
// any reply (SYN_SENT) seq is 0 and the ACK acknowledges the client's SYN, which RFC 9293 requires in that state.

import { fillIpv4Checksum } from '../wire/ipv4'
import { fillTcpChecksum4, fillTcpChecksum6, TCP_ACK, TCP_RST } from '../wire/tcp'
import { set16, set32 } from '../wire/bytes'
import { IPPROTO_TCP } from '../wire/proto'
import { DEFAULT_TTL } from '../wire/build'

export const RST4_LEN = 40
export const RST6_LEN = 60

function writeTcp(out: Uint8Array, o: number, sport: number, dport: number, seq: number, ack: number): void {
  set16(out, o, sport)
  set16(out, o + 2, dport)
  set32(out, o + 4, seq)
  set32(out, o + 8, ack)
  out[o + 12] = 5 << 4
  out[o + 13] = TCP_RST | TCP_ACK
  set16(out, o + 14, 0)
  set16(out, o + 16, 0)
  set16(out, o + 18, 0)
}

/** Writes an IPv4 RST|ACK at outOff; returns 40, or 0 when it does not fit. */
export function buildTcpReset4(out: Uint8Array, outOff: number, src: number, dst: number, sport: number, dport: number, seq: number, ack: number): number {
  if (outOff < 0 || outOff + RST4_LEN > out.length) return 0
  out[outOff] = 0x45
  out[outOff + 1] = 0
  set16(out, outOff + 2, RST4_LEN)
  set16(out, outOff + 4, 0)
  set16(out, outOff + 6, 0x4000)
  out[outOff + 8] = DEFAULT_TTL
  out[outOff + 9] = IPPROTO_TCP
  set32(out, outOff + 12, src)
  set32(out, outOff + 16, dst)
  fillIpv4Checksum(out, outOff)
  writeTcp(out, outOff + 20, sport, dport, seq, ack)
  fillTcpChecksum4(out, outOff + 20, 20, src, dst)
  return RST4_LEN
}

/** Writes an IPv6 RST|ACK at outOff from the address words src/dst (4 each, at srcOff/dstOff); 60 or 0. */
export function buildTcpReset6(
  out: Uint8Array,
  outOff: number,
  words: Uint32Array,
  srcOff: number,
  dstOff: number,
  sport: number,
  dport: number,
  seq: number,
  ack: number,
): number {
  if (outOff < 0 || outOff + RST6_LEN > out.length) return 0
  set32(out, outOff, 0x60000000)
  set16(out, outOff + 4, 20)
  out[outOff + 6] = IPPROTO_TCP
  out[outOff + 7] = DEFAULT_TTL
  for (let i = 0; i < 4; i++) {
    set32(out, outOff + 8 + i * 4, words[srcOff + i]!)
    set32(out, outOff + 24 + i * 4, words[dstOff + i]!)
  }
  writeTcp(out, outOff + 40, sport, dport, seq, ack)
  fillTcpChecksum6(out, outOff + 40, 20, outOff + 8, outOff + 24)
  return RST6_LEN
}
