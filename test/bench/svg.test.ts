// The bench's SVG charts: well-formed, deterministic, escaped, gaps for missing values.
import t from 'tap'
import { barChart, esc, lineChart, logTicks, niceTicks, tickLabel } from '../../bench/lib/svg'

t.test('ticks', async t => {
  t.same(niceTicks(0, 10), [0, 2, 4, 6, 8, 10])
  t.same(niceTicks(0, 0.9, 3), [0, 0.5, 1])
  t.same(logTicks(3, 250), [1, 10, 100, 1000])
  t.equal(tickLabel(20000), '20k')
  t.equal(tickLabel(1.5e6), '1.5M')
  t.equal(tickLabel(0.25), '0.25')
})

t.test('bar chart', async t => {
  const svg = barChart({
    title: 'A & B <test>',
    unit: 'Gbit/s',
    categories: ['1 stream', '4 streams'],
    series: [
      { name: 'tundra', values: [10, NaN] },
      { name: 'iptables', values: [8, 9] },
    ],
  })
  t.ok(svg.startsWith('<svg '), 'an svg element')
  t.ok(svg.trimEnd().endsWith('</svg>'))
  t.match(svg, 'A &amp; B &lt;test&gt;', 'title escaped')
  t.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, 3, 'three bars: the missing value leaves a gap')
  t.equal(
    svg,
    barChart({
      title: 'A & B <test>',
      unit: 'Gbit/s',
      categories: ['1 stream', '4 streams'],
      series: [
        { name: 'tundra', values: [10, NaN] },
        { name: 'iptables', values: [8, 9] },
      ],
    }),
    'deterministic',
  )
})

t.test('line chart', async t => {
  const svg = lineChart({
    title: 'sync',
    unit: 'ms',
    xLabel: 'services',
    x: [1000, 10000, 20000],
    logY: true,
    series: [
      { name: 'a', values: [1, 10, 100] },
      { name: 'b', values: [NaN, 5, 50] },
    ],
  })
  t.equal((svg.match(/<path /g) ?? []).length, 2)
  t.equal((svg.match(/<circle /g) ?? []).length, 5)
  t.match(svg, /<path d="M[\d.]+,[\d.]+ L[\d.]+,[\d.]+ L/, 'series a is one polyline')
  t.equal(esc('"<&>"'), '&quot;&lt;&amp;&gt;&quot;')
})

t.test('a reader sees the values, the range of the rounds and the caption without hovering', async t => {
  const svg = barChart({
    title: 'UDP',
    unit: 'kpps',
    categories: ['received', 'sent'],
    caption: 'AMD EPYC, 2 CPUs; kernel 6.1; 2026-12-07 02:25 UTC; 3 rounds × 3 s',
    series: [
      { name: 'tundra', values: [98.3, 168], min: [89, 147], max: [103, 178], notes: ['(41 % lost)', undefined] },
      { name: 'iptables-nft', values: [152, 153] },
    ],
  })
  const values = [...svg.matchAll(/<text class="value"[^>]*>([^<]*)<\/text>/g)].map(m => m[1])
  t.same(values, ['98.3', '152', '168', '153'], 'every bar has its value printed')
  t.match(svg, />\(41 % lost\)<\/text>/, 'the loss is printed on the bar')
  t.match(svg, /<text class="caption"[^>]*>AMD EPYC, 2 CPUs; kernel 6\.1; 2026-12-07 02:25 UTC; 3 rounds × 3 s<\/text>/)
  t.equal((svg.match(/<path class="range"/g) ?? []).length, 2, 'min–max whiskers where rounds differ')
  t.match(svg, /whiskers: lowest and highest round/)
})

t.test('notes too long for their bars are listed under the legend, one line each, not on top of each other', async t => {
  const svg = barChart({
    title: 'UDP',
    unit: 'kpps',
    categories: ['received', 'sent'],
    series: [
      { name: 'tundra', values: [96, 134], notes: ['(28 % lost, 28 at the socket)', undefined] },
      { name: 'iptables-legacy', values: [144, 146], notes: ['(1.2 % lost, 1.2 at the socket)', undefined] },
      { name: 'cref', values: [9, 181], notes: ['(48 % lost, 22 at the socket)', undefined] },
    ],
  })
  const notes = [...svg.matchAll(/<text class="note" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)<\/text>/g)].map(m => ({ x: m[1], y: Number(m[2]), text: m[3] }))
  t.same(
    notes.map(n => n.text),
    ['(1.2 % lost, 1.2 at the socket)', 'tundra, received:', '28 % lost, 28 at the socket', 'cref, received:', '48 % lost, 22 at the socket'],
    'the tall bar keeps its note; the short ones are named in the list',
  )
  const listed = notes.slice(1)
  for (let i = 1; i < listed.length; i++) t.ok(listed[i]!.y - listed[i - 1]!.y >= 11, `line ${i + 1} of the list is below line ${i}`)
  t.ok(
    listed.every(n => Number(n.x) > 600),
    'in the right margin, clear of the bars',
  )
})

t.test('one colour per contender in every chart', async t => {
  const fill = (svg: string, name: string): string | undefined => new RegExp(`fill="(#[0-9a-f]{6})"><title>${name} `).exec(svg)?.[1]
  const a = barChart({
    title: 'a',
    unit: 'x',
    categories: ['c'],
    series: [
      { name: 'tundra', values: [1] },
      { name: 'cref', values: [2] },
    ],
  })
  const b = barChart({
    title: 'b',
    unit: 'x',
    categories: ['c'],
    series: [
      { name: 'cref', values: [2] },
      { name: 'iptables-nft', values: [1] },
      { name: 'tundra', values: [3] },
    ],
  })
  t.ok(fill(a, 'tundra'))
  t.equal(fill(a, 'tundra'), fill(b, 'tundra'), 'tundra')
  t.equal(fill(a, 'cref'), fill(b, 'cref'), 'cref, whatever its position')
  t.not(fill(a, 'tundra'), fill(a, 'cref'))
  const line = lineChart({ title: 'l', unit: 'ms', xLabel: 'services', x: [1000], series: [{ name: 'tundra p50', values: [1] }] })
  t.match(line, new RegExp(`<circle [^>]*fill="${fill(a, 'tundra')}"`), 'a line chart series named "tundra p50" too')
})

t.test('a service-count axis has round ticks at real distances', async t => {
  const svg = lineChart({ title: 's', unit: 'ms', xLabel: 'services', x: [1000, 10000, 20000], series: [{ name: 'a', values: [1, 2, 3] }] })
  const ticks = [...svg.matchAll(/<text class="xtick" x="([\d.]+)"[^>]*>([^<]*)<\/text>/g)].map(m => [Number(m[1]), m[2]] as const)
  t.same(
    ticks.map(x => x[1]),
    ['0', '5k', '10k', '15k', '20k'],
  )
  const at = (label: string): number => ticks.find(x => x[1] === label)![0]
  t.equal(Math.round(at('20k') - at('10k')), Math.round(at('10k') - at('0')), '10k sits halfway to 20k')
})

t.test('no whisker note when every series had one round', async t => {
  const svg = barChart({ title: 'x', unit: 'u', categories: ['c'], series: [{ name: 'tundra', values: [1], min: [NaN], max: [NaN] }] })
  t.notMatch(svg, /whiskers/)
  t.notMatch(svg, /class="range"/)
})
