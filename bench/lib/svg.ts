// Dependency-free SVG charts for the benchmark report: grouped bars (contenders side by side per metric) and lines
// (a value against the number of services). Output is deterministic text, so a chart diffs like any file.

export interface Series {
  readonly name: string
  /** one value per category (bars) or per x (lines); NaN leaves a gap */
  readonly values: readonly number[]
  /** the lowest and highest value over the rounds, per value (bars: drawn as a min–max whisker) */
  readonly min?: readonly number[]
  readonly max?: readonly number[]
  /** per value: a second line printed under the value on the bar (e.g. "41 % lost") */
  readonly notes?: readonly (string | undefined)[]
  /** the colour key (a contender); default: the name up to its first space */
  readonly key?: string
  /** a dashed line (lines only: the second figure of the same contender, e.g. p99 next to p50) */
  readonly dashed?: boolean
}

export interface BarChart {
  readonly title: string
  readonly unit: string
  readonly categories: readonly string[]
  readonly series: readonly Series[]
  /** small print under the chart: machine, kernel, date, rounds */
  readonly caption?: string
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
  readonly caption?: string
}

/**
 * One colour per contender in every chart (the one palette map): a series is coloured by its key, or by its name up
 * to the first space ("tundra p50" → tundra). Names not listed take the fallback palette in order.
 */
export const CONTENDER_COLORS: Readonly<Record<string, string>> = {
  tundra: '#1f77b4',
  'tundra-lab': '#1f77b4',
  'tundra-socket': '#17becf',
  'iptables-nft': '#d62728',
  'iptables-legacy': '#ff7f0e',
  nftables: '#2ca02c',
  nft: '#2ca02c',
  cref: '#9467bd',
  dnsmasq: '#8c564b',
}
const PALETTE = ['#e377c2', '#7f7f7f', '#bcbd22', '#393b79', '#637939', '#843c39']

/** The colour of a series: its contender's, else the i-th fallback. */
export function colorOf(s: Pick<Series, 'name' | 'key'>, i: number): string {
  const key = s.key ?? s.name.split(' ')[0]!
  return CONTENDER_COLORS[key] ?? PALETTE[i % PALETTE.length]!
}

const W = 800
const H = 420
const M = { top: 40, right: 180, bottom: 74, left: 70 }

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

function frame(title: string, body: string[], caption?: string): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    ...body,
    ...(caption ? [`<text class="caption" x="8" y="${H - 8}" font-size="10" fill="#555">${esc(caption)}</text>`] : []),
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
    const swatch = s.dashed
      ? `<line x1="${x}" x2="${x + 12}" y1="${y - 3}" y2="${y - 3}" stroke="${colorOf(s, i)}" stroke-width="2" stroke-dasharray="4 2"/>`
      : `<rect x="${x}" y="${y - 9}" width="12" height="12" fill="${colorOf(s, i)}"/>`
    const out =
      swatch +
      `<text x="${x + 18}" y="${y + 1}">${esc(label)}</text>` +
      (note ? `<text x="${x + 18}" y="${y + 14}" font-size="10" fill="#555">${esc(note)}</text>` : '')
    y += note ? 32 : 20
    return out
  })
}

const f1 = (n: number): string => n.toFixed(1)
/** about how wide one character of the 11-px value labels is */
const CHAR_PX = 6.5
const rot = (x: number, y: number): string => `rotate(-90 ${f1(x)} ${f1(y)})`

/** Grouped vertical bars: one group per category, one bar per series. */
export function barChart(c: BarChart): string {
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const groupW = pw / Math.max(1, c.categories.length)
  const barW = (groupW * 0.8) / Math.max(1, c.series.length)
  const bw = barW * 0.92
  // headroom: every printed value must fit between its bar (or whisker) and the top of the plot
  let top = 1
  for (const s of c.series) {
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return
      const hi = Math.max(v, Number.isFinite(s.max?.[i] ?? NaN) ? s.max![i]! : v)
      const text = valueLabel(v)
      const px = bw >= text.length * CHAR_PX ? 18 : text.length * CHAR_PX + 10
      top = Math.max(top, (hi * ph) / Math.max(ph / 4, ph - px))
    })
  }
  const ticks = niceTicks(0, top)
  top = ticks[ticks.length - 1]!
  const y = (v: number): number => M.top + ph - (Math.max(0, v) / top) * ph
  const body: string[] = []
  // notes too long for their bar, listed under the legend (under the axis they ran into each other)
  const overflow: [string, string][] = []
  for (const t of ticks) {
    body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${f1(y(t))}" y2="${f1(y(t))}" stroke="#ddd"/>`)
    body.push(`<text x="${M.left - 6}" y="${f1(y(t) + 4)}" text-anchor="end">${esc(tickLabel(t))}</text>`)
  }
  c.categories.forEach((cat, ci) => {
    const gx = M.left + ci * groupW + groupW * 0.1
    c.series.forEach((s, si) => {
      const v = s.values[ci]
      if (v === undefined || !Number.isFinite(v)) return
      const x = gx + si * barW
      const cx = x + bw / 2
      const lo = s.min?.[ci]
      const hi = s.max?.[ci]
      const range =
        lo !== undefined && hi !== undefined && Number.isFinite(lo) && Number.isFinite(hi) && hi > lo ? ` (rounds ${valueLabel(lo)}–${valueLabel(hi)})` : ''
      body.push(
        `<rect x="${f1(x)}" y="${f1(y(v))}" width="${f1(bw)}" height="${f1(M.top + ph - y(v))}" fill="${colorOf(s, si)}"><title>${esc(`${s.name} ${cat}: ${valueLabel(v)} ${c.unit}${range}`)}</title></rect>`,
      )
      let labelY = y(v)
      if (range) {
        const w = Math.min(8, bw / 2)
        body.push(
          `<path class="range" d="M${f1(cx)},${f1(y(lo!))} V${f1(y(hi!))} M${f1(cx - w / 2)},${f1(y(lo!))} H${f1(cx + w / 2)} M${f1(cx - w / 2)},${f1(y(hi!))} H${f1(cx + w / 2)}" stroke="#222" stroke-width="1" fill="none"/>`,
        )
        labelY = Math.min(labelY, y(hi!))
      }
      const text = valueLabel(v)
      // the value on the bar: above it, upright when the bar is wide enough, else turned to run up the bar's axis
      if (bw >= text.length * CHAR_PX)
        body.push(`<text class="value" x="${f1(cx)}" y="${f1(labelY - 4)}" text-anchor="middle" font-size="11">${esc(text)}</text>`)
      else
        body.push(`<text class="value" x="${f1(cx + 3.5)}" y="${f1(labelY - 4)}" transform="${rot(cx + 3.5, labelY - 4)}" font-size="10">${esc(text)}</text>`)
      // a note (e.g. the loss) runs up inside the bar, in white, when the bar is tall enough; else under the axis
      const note = s.notes?.[ci]
      if (note) {
        const bottom = M.top + ph
        if (bottom - y(v) >= note.length * CHAR_PX + 8)
          body.push(
            `<text class="note" x="${f1(cx + 3.5)}" y="${f1(bottom - 4)}" transform="${rot(cx + 3.5, bottom - 4)}" font-size="10" fill="white">${esc(note)}</text>`,
          )
        else overflow.push([`${s.name}${c.categories.length > 1 ? `, ${cat}` : ''}:`, note.replace(/^\((.*)\)$/, '$1')])
      }
    })
    // a category name wider than its group goes on two lines
    const cut = cat.length * CHAR_PX + 12 > groupW ? cat.lastIndexOf(' ') : -1
    const lines = cut > 0 ? [cat.slice(0, cut), cat.slice(cut + 1)] : [cat]
    lines.forEach((l, li) =>
      body.push(`<text x="${f1(M.left + ci * groupW + groupW / 2)}" y="${M.top + ph + 18 + li * 14}" text-anchor="middle">${esc(l)}</text>`),
    )
  })
  body.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<text x="18" y="${M.top + ph / 2}" transform="rotate(-90 18 ${M.top + ph / 2})" text-anchor="middle">${esc(c.unit)}</text>`)
  const ranged = c.series.some(s => s.values.some((_, i) => (s.max?.[i] ?? NaN) > (s.min?.[i] ?? NaN)))
  if (ranged)
    body.push(`<text x="${M.left}" y="${M.top + ph + 50}" font-size="10" fill="#555">bars: median of the rounds; whiskers: lowest and highest round</text>`)
  let ny = M.top + 10 + c.series.reduce((h, s) => h + (s.name.indexOf(' (') > 0 ? 32 : 20), 0) + 6
  // two lines each: whose bar, then the note (the margin is narrow)
  for (const [whose, n] of overflow) {
    body.push(`<text class="note" x="${W - M.right + 15}" y="${ny}" font-size="9" fill="#333">${esc(whose)}</text>`)
    body.push(`<text class="note" x="${W - M.right + 23}" y="${ny + 11}" font-size="9" fill="#333">${esc(n)}</text>`)
    ny += 26
  }
  return frame(c.title, [...body, ...legend(c.series)], c.caption)
}

/** A value as printed on a bar: three significant digits, k/M for large ones. */
export function valueLabel(v: number): string {
  if (!Number.isFinite(v)) return '–'
  const a = Math.abs(v)
  if (a >= 1e3) return tickLabel(Number(v.toPrecision(3)))
  if (a >= 100) return v.toFixed(0)
  if (a >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

/** Lines with markers against a numeric x axis; gaps where a value is missing. */
export function lineChart(c: LineChart): string {
  const pw = W - M.left - M.right
  const ph = H - M.top - M.bottom
  const ys = c.series.flatMap(s => s.values).filter(v => Number.isFinite(v) && (!c.logY || v > 0))
  const xs = c.x.filter(v => Number.isFinite(v) && (!c.logX || v > 0))
  // a linear x axis starts at 0 with round ticks (1k, 10k and 20k services sit at their real distances)
  const xticks = c.logX ? logTicks(xs.length ? Math.min(...xs) : 1, xs.length ? Math.max(...xs) : 10) : niceTicks(0, xs.length ? Math.max(...xs) : 1)
  const xlo = xticks[0]!
  const xhi = xticks[xticks.length - 1]!
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
  for (const v of xticks) {
    body.push(`<line x1="${f1(px(v))}" x2="${f1(px(v))}" y1="${M.top}" y2="${M.top + ph}" stroke="#eee"/>`)
    body.push(`<text class="xtick" x="${f1(px(v))}" y="${M.top + ph + 18}" text-anchor="middle">${esc(tickLabel(v))}</text>`)
  }
  c.series.forEach((s, si) => {
    const color = colorOf(s, si)
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
    if (path) body.push(`<path d="${path.trim()}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`)
  })
  body.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="black"/>`)
  body.push(`<text x="${M.left + pw / 2}" y="${M.top + ph + 38}" text-anchor="middle">${esc(c.xLabel)}</text>`)
  body.push(
    `<text x="18" y="${M.top + ph / 2}" transform="rotate(-90 18 ${M.top + ph / 2})" text-anchor="middle">${esc(c.unit + (c.logY ? ' (log)' : ''))}</text>`,
  )
  return frame(c.title, [...body, ...legend(c.series)], c.caption)
}
