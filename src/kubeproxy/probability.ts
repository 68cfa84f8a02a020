// The `--probability` text of kube-proxy's statistic rules, exactly as `iptables-save` prints it after a round trip.
//
// kube-proxy writes fmt.Sprintf("%0.10f", 1/n); iptables stores lround(2^31 * p) as a u32 and iptables-save prints
// that back with "%.11f". So 1/2 is written 0.5000000000 but shows as 0.50000000000, and 1/3 shows as 0.33333333349.

/** Exact decimal rendering of a finite double with `digits` decimals, ties to even (Go's strconv and glibc agree). */
export function formatFixedExact(x: number, digits: number): string {
  if (!Number.isFinite(x)) throw new RangeError('not a finite number')
  const negative = x < 0 || Object.is(x, -0)
  const view = new DataView(new ArrayBuffer(8))
  view.setFloat64(0, Math.abs(x))
  const hi = view.getUint32(0)
  const lo = view.getUint32(4)
  const biased = (hi >>> 20) & 0x7ff
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo)
  let exp: number
  if (biased === 0) exp = -1074
  else {
    mant |= 1n << 52n
    exp = biased - 1075
  }
  // x = mant * 2^exp; scaled = x * 10^digits = num / den
  let num = mant * 10n ** BigInt(digits)
  let den = 1n
  if (exp >= 0) num <<= BigInt(exp)
  else den <<= BigInt(-exp)
  let q = num / den
  const r2 = (num % den) * 2n
  if (r2 > den || (r2 === den && (q & 1n) === 1n)) q += 1n
  let s = q.toString()
  if (digits > 0) {
    s = s.padStart(digits + 1, '0')
    s = `${s.slice(0, -digits)}.${s.slice(-digits)}`
  }
  return (negative && q !== 0n ? '-' : '') + s
}

/** What kube-proxy passes to iptables-restore for 1/n. */
export function kubeProxyProbability(n: number): string {
  return formatFixedExact(1 / n, 10)
}

/** What iptables-save prints for a probability given as `text` (libxt_statistic: lround(0x80000000 * p), "%.11f"). */
export function iptablesSaveProbability(text: string): string {
  const p = Number(text) // strtod and Number agree: both round to nearest
  const stored = Math.round(0x80000000 * p) >>> 0
  return formatFixedExact(stored / 0x80000000, 11)
}

/** The probability string shown by iptables-save on a kube-proxy node for the i-th of n remaining endpoints (1/n). */
export function probabilityForRemaining(n: number): string {
  return iptablesSaveProbability(kubeProxyProbability(n))
}
