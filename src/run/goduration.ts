// Go's time.Duration text, as KubeProxyConfiguration durations are written ("30s", "1h0m0s"), in seconds.
const UNIT_SECONDS: Readonly<Record<string, number>> = { ns: 1e-9, us: 1e-6, µs: 1e-6, μs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }

/** Go's time.ParseDuration, in seconds; undefined when it is not one. */
export function parseGoDuration(text: string): number | undefined {
  let s = text
  let sign = 1
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1
    s = s.slice(1)
  }
  if (s === '0') return 0
  if (s === '') return undefined
  const re = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y
  let total = 0
  let pos = 0
  while (pos < s.length) {
    re.lastIndex = pos
    const m = re.exec(s)
    if (m === null) return undefined
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!
    pos = re.lastIndex
  }
  return sign * total
}

/** Seconds as Go prints a duration ("1h0m0s", "30s", "1.5s"). */
export function formatGoDuration(seconds: number): string {
  if (seconds === 0) return '0s'
  const neg = seconds < 0
  let s = Math.abs(seconds)
  if (s < 1) return `${neg ? '-' : ''}${+(s * 1000).toFixed(6)}ms`
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  s = +(s - m * 60).toFixed(9)
  const out = h > 0 ? `${h}h${m}m${s}s` : m > 0 ? `${m}m${s}s` : `${s}s`
  return (neg ? '-' : '') + out
}
