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
