// Dependency-free SVG charts for the benchmark report: grouped bars (contenders side by side per metric) and lines
// (a value against the number of services). Output is deterministic text, so a chart diffs like any file.

export interface Series {
  readonly name: string
  /** one value per category (bars) or per x (lines); NaN leaves a gap */
  readonly values: readonly number[]
}

export interface BarChart {
  readonly title: string
  readonly unit: string
  readonly categories: readonly string[]
  readonly series: readonly Series[]
}

export interface LineChart {
  readonly title: string
  readonly unit: string
  readonly xLabel: string
  readonly x: readonly number[]
  readonly series: readonly Series[]
  /** logarithmic y axis (for times spanning decades) */
  readonly logY?: boolean
  /** logarithmic x axis */
  readonly logX?: boolean
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f']
const W = 720
const H = 400
const M = { top: 40, right: 170, bottom: 60, left: 70 }

/** Escapes text for an SVG text node or attribute. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** A short label for an axis tick: 12000 -> 12k, 0.5 -> 0.5. */
export function tickLabel(v: number): string {
  const abs = Math.abs(v)
  if (abs >= 1e9) return `${trim(v / 1e9)}G`
  if (abs >= 1e6) return `${trim(v / 1e6)}M`
  if (abs >= 1e3) return `${trim(v / 1e3)}k`
  return trim(v)
}

function trim(v: number): string {
  return String(Number(v.toPrecision(3)))
}

/** About `count` round tick values covering [lo, hi] (1, 2, 5 × 10^k steps). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1]
  if (hi <= lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo))
  const raw = (hi - lo) / Math.max(1, count)
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw) ?? 10 * mag
  const out: number[] = []
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)))
  if (out[out.length - 1]! < hi) out.push(Number((out[out.length - 1]! + step).toPrecision(12)))
  return out
}

/** Powers of ten covering [lo, hi] (lo > 0). */
export function logTicks(lo: number, hi: number): number[] {
  const a = Math.floor(Math.log10(lo))
  const b = Math.ceil(Math.log10(hi))
  const out: number[] = []
  for (let k = a; k <= Math.max(b, a + 1); k++) out.push(10 ** k)
  return out
}

function frame(title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n')
}

/** One entry per series; a parenthesised tail of a name (`label (note)`) goes on a second, smaller line. */
function legend(series: readonly Series[]): string[] {
  let y = M.top + 10
  return series.map((s, i) => {
    const x = W - M.right + 15
    const cut = s.name.indexOf(' (')
    const [label, note] = cut > 0 ? [s.name.slice(0, cut), s.name.slice(cut + 1)] : [s.name, '']
    const out =
      `<rect x="${x}" y="${y - 9}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>` +
      `<text x="${x + 18}" y="${y + 1}">${esc(label)}</text>` +
      (note ? `<text x="${x + 18}" y="${y + 14}" font-size="10" fill="#555">${esc(note)}</text>` : '')
    y += note ? 32 : 20
    return out
  })
}

const f1 = (n: number): string => n.toFixed(1)

/** Grouped vertical bars: one group per category, one bar per series. */
export function barChart(c: BarChart): string {
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const all = c.series.flatMap(s => s.values).filter(Number.isFinite)
  const ticks = niceTicks(0, all.length === 0 ? 1 : Math.max(...all))
  const top = ticks[ticks.length - 1]!
  const y = (v: number): number => M.top + ph - (v / top) * ph
  const body: string[] = []
  for (const t of ticks) {
    body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${f1(y(t))}" y2="${f1(y(t))}" stroke="#ddd"/>`)
    body.push(`<text x="${M.left - 6}" y="${f1(y(t) + 4)}" text-anchor="end">${esc(tickLabel(t))}</text>`)
  }
  const groupW = pw / Math.max(1, c.categories.length)
  const barW = (groupW * 0.8) / Math.max(1, c.series.length)
  c.categories.forEach((cat, ci) => {
    const gx = M.left + ci * groupW + groupW * 0.1
    c.series.forEach((s, si) => {
      const v = s.values[ci]
      if (v === undefined || !Number.isFinite(v)) return
      const x = gx + si * barW
      body.push(
        `<rect x="${f1(x)}" y="${f1(y(v))}" width="${f1(barW * 0.92)}" height="${f1(M.top + ph - y(v))}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${s.name} ${cat}: ${tickLabel(v)} ${c.unit}`)}</title></rect>`,
      )
    })
    body.push(`<text x="${f1(M.left + ci * groupW + groupW / 2)}" y="${M.top + ph + 18}" text-anchor="middle">${esc(cat)}</text>`)
  })
  body.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<text x="18" y="${M.top + ph / 2}" transform="rotate(-90 18 ${M.top + ph / 2})" text-anchor="middle">${esc(c.unit)}</text>`)
  return frame(c.title, [...body, ...legend(c.series)])
}

/** Lines with markers against a numeric x axis; gaps where a value is missing. */
export function lineChart(c: LineChart): string {
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const ys = c.series.flatMap(s => s.values).filter(v => Number.isFinite(v) && (!c.logY || v > 0))
  const xs = c.x.filter(v => Number.isFinite(v) && (!c.logX || v > 0))
  const xlo = xs.length ? Math.min(...xs) : 0
  const xhi = xs.length ? Math.max(...xs) : 1
  let ylo: number
  let yhi: number
  let yticks: number[]
  if (c.logY) {
    yticks = logTicks(ys.length ? Math.min(...ys) : 1, ys.length ? Math.max(...ys) : 10)
    ylo = yticks[0]!
    yhi = yticks[yticks.length - 1]!
  } else {
    yticks = niceTicks(0, ys.length ? Math.max(...ys) : 1)
    ylo = 0
    yhi = yticks[yticks.length - 1]!
  }
  const tx = (v: number): number => (c.logX ? Math.log10(v) : v)
  const ty = (v: number): number => (c.logY ? Math.log10(v) : v)
  const x0 = tx(xlo)
  const x1 = xhi === xlo ? x0 + 1 : tx(xhi)
  const px = (v: number): number => M.left + ((tx(v) - x0) / (x1 - x0)) * pw
  const py = (v: number): number => M.top + ph - ((ty(v) - ty(ylo)) / (ty(yhi) - ty(ylo) || 1)) * ph
  const body: string[] = []
  for (const t of yticks) {
    body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${f1(py(t))}" y2="${f1(py(t))}" stroke="#ddd"/>`)
    body.push(`<text x="${M.left - 6}" y="${f1(py(t) + 4)}" text-anchor="end">${esc(tickLabel(t))}</text>`)
  }
  for (const v of c.x) {
    if (!Number.isFinite(v) || (c.logX && v <= 0)) continue
    body.push(`<text x="${f1(px(v))}" y="${M.top + ph + 18}" text-anchor="middle">${esc(tickLabel(v))}</text>`)
  }
  c.series.forEach((s, si) => {
    const color = PALETTE[si % PALETTE.length]
    let path = ''
    let pen = false
    s.values.forEach((v, i) => {
      const xv = c.x[i]
      if (xv === undefined || !Number.isFinite(v) || (c.logY && v <= 0)) {
        pen = false
        return
      }
      path += `${pen ? 'L' : 'M'}${f1(px(xv))},${f1(py(v))} `
      pen = true
      body.push(
        `<circle cx="${f1(px(xv))}" cy="${f1(py(v))}" r="3.5" fill="${color}"><title>${esc(`${s.name} @ ${tickLabel(xv)}: ${tickLabel(v)} ${c.unit}`)}</title></circle>`,
      )
    })
    if (path) body.push(`<path d="${path.trim()}" fill="none" stroke="${color}" stroke-width="2"/>`)
  })
  body.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<text x="${M.left + pw / 2}" y="${H - 15}" text-anchor="middle">${esc(c.xLabel)}</text>`)
  body.push(
    `<text x="18" y="${M.top + ph / 2}" transform="rotate(-90 18 ${M.top + ph / 2})" text-anchor="middle">${esc(c.unit + (c.logY ? ' (log)' : ''))}</text>`,
  )
  return frame(c.title, [...body, ...legend(c.series)])
}
