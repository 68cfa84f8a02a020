// Small statistics and number formatting for the benchmark report: medians over rounds, percentiles, ratios.

/** Median of the finite values; NaN when there are none. */
export function median(values: readonly number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  const mid = v.length >> 1
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2
}

/** Percentile p in [0, 100] by linear interpolation between closest ranks (numpy's default); NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (v.length === 0) return NaN
  if (v.length === 1) return v[0]!
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (v.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  return v[lo]! + (v[hi]! - v[lo]!) * (rank - lo)
}

export function mean(values: readonly number[]): number {
  const v = values.filter(Number.isFinite)
  return v.length === 0 ? NaN : v.reduce((a, b) => a + b, 0) / v.length
}

/** a / b, NaN when either is missing or b is 0. */
export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN
}

/** 3 significant digits with an SI suffix: 1234567 -> "1.23M", 0.00042 -> "420µ". */
export function si(n: number, unit = ''): string {
  if (!Number.isFinite(n)) return '–'
  if (n === 0) return `0${unit ? ` ${unit}` : ''}`
  const abs = Math.abs(n)
  const steps: readonly [number, string][] = [
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
    [1, ''],
    [1e-3, 'm'],
    [1e-6, 'µ'],
    [1e-9, 'n'],
  ]
  for (const [scale, prefix] of steps) {
    if (abs >= scale * 0.9995) return `${sig3(n / scale)}${unit ? ` ${prefix}${unit}` : prefix}`
  }
  return `${n.toExponential(2)}${unit ? ` ${unit}` : ''}`
}

/** Three significant digits, no exponent for ordinary magnitudes. */
export function sig3(n: number): string {
  if (!Number.isFinite(n)) return '–'
  const abs = Math.abs(n)
  if (abs >= 100) return n.toFixed(0)
  if (abs >= 10) return n.toFixed(1)
  if (abs >= 1) return n.toFixed(2)
  return n.toPrecision(3)
}

/** Fixed-point with `digits`, or "–" for a missing value. */
export function fixed(n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '–'
}
