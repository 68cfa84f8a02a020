// Addresses as uint32 words (1 for IPv4, 4 for IPv6) and CIDR lists as flat arrays, the form the NAT hot path reads.
//
// Text is parsed by wire/addr.ts (the one parser family); this file formats words as text and matches
// prefixes. A CIDR list is a Uint32Array of records [net words..., prefix] (aw + 1 words each).

import { cidrPrefix, ipFamily, parseIpWords } from '../wire/addr'
import { ipv4ToString } from '../wire/ipv4'
import { ipv6ToString } from '../wire/ipv6'
import { set32 } from '../wire/bytes'
import type { Family } from '../model/cluster'

/** Address words per family. */
export function addrWords(family: Family): number {
  return family === 4 ? 1 : 4
}

const BYTES16 = new Uint8Array(16)

/** Canonical text of the address in `words` at `off`. */
export function wordsToString(words: Uint32Array, off: number, family: Family): string {
  if (family === 4) return ipv4ToString(words[off]!)
  for (let i = 0; i < 4; i++) set32(BYTES16, i * 4, words[off + i]!)
  return ipv6ToString(BYTES16, 0)
}

/** Writes the address words at (words, off) as network-order bytes into out at outOff. */
export function wordsToBytes(words: Uint32Array, off: number, aw: number, out: Uint8Array, outOff: number): void {
  for (let i = 0; i < aw; i++) set32(out, outOff + i * 4, words[off + i]!)
}

/** Mask of the first `bits` (0..32) bits of a word. */
function prefixMask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0
}

/**
 * Parses CIDRs of one family into a flat list [net words..., prefix]*; entries of the other family are skipped,
 * bad ones reported through `bad`. A bare address counts as a full-length prefix; the prefix is read as everywhere
 * else (wire's cidrPrefix: decimal, no leading zeros).
 */
export function parseCidrList(cidrs: readonly string[], family: Family, bad?: (cidr: string) => void): Uint32Array {
  const aw = addrWords(family)
  const max = family === 4 ? 32 : 128
  const out: number[] = []
  const w = new Uint32Array(4)
  for (const c of cidrs) {
    const slash = c.indexOf('/')
    const addr = slash < 0 ? c : c.slice(0, slash)
    const f = ipFamily(addr)
    if (f === undefined) {
      bad?.(c)
      continue
    }
    if (f !== family) continue
    const bits = slash < 0 ? max : cidrPrefix(c, max)
    if (bits === undefined) {
      bad?.(c)
      continue
    }
    parseIpWords(addr, family, w, 0)
    for (let i = 0; i < aw; i++) out.push((w[i]! & prefixMask(bits - 32 * i)) >>> 0)
    out.push(bits)
  }
  return Uint32Array.from(out)
}

/** Whether the address at (a, off) lies in any CIDR of `list` (aw words each plus the prefix). Hot path. */
export function inCidrList(list: Uint32Array, aw: number, a: Uint32Array, off: number): boolean {
  const stride = aw + 1
  for (let r = 0; r < list.length; r += stride) if (cidrContains(list, r, aw, a, off)) return true
  return false
}

/** Whether the CIDR record at list[r] (aw words, then the prefix) holds the address at (a, off). Hot path. */
export function cidrContains(list: Uint32Array, r: number, aw: number, a: Uint32Array, off: number): boolean {
  const bits = list[r + aw]!
  for (let i = 0; i < aw; i++) {
    const m = prefixMask(bits - 32 * i)
    if ((a[off + i]! & m) >>> 0 !== list[r + i]) return false
  }
  return true
}

/** Text of each CIDR in the list, for dumps. */
export function cidrListToStrings(list: Uint32Array, family: Family): string[] {
  const aw = addrWords(family)
  const out: string[] = []
  for (let r = 0; r < list.length; r += aw + 1) out.push(`${wordsToString(list, r, family)}/${list[r + aw]!}`)
  return out
}

/** Whether the aw words at (a, ao) equal those at (b, bo). */
function wordsEqual(a: Uint32Array, ao: number, b: Uint32Array, bo: number, aw: number): boolean {
  for (let i = 0; i < aw; i++) if (a[ao + i] !== b[bo + i]) return false
  return true
}

/** Whether the address at (a, off) equals any of the `list` addresses (aw words each). */
export function inAddrList(list: Uint32Array, aw: number, a: Uint32Array, off: number): boolean {
  for (let r = 0; r < list.length; r += aw) if (wordsEqual(list, r, a, off, aw)) return true
  return false
}
