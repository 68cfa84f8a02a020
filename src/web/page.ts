// The web view's one page: static HTML with inline CSS and JS (no build step, nothing fetched but /api/state). It
// polls /api/state every second and redraws in place; rates (connections/s, DNS queries/s) come from two polls.
// Every value is written with textContent, so names from the cluster are never parsed as HTML.

const WEB_POLL_MS = 1000

const CSS = `
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:16px;margin:0}
main{padding:12px 16px;display:grid;grid-template-columns:2fr 1fr;gap:16px}
section{background:#fff;border:1px solid #dde1e8;border-radius:4px;padding:8px 12px}
section.wide{grid-column:1/3}
h2{font-size:14px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:2px 8px;border-bottom:1px solid #eef0f4;white-space:nowrap}
th{font-weight:600;color:#56607a}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.svc td{background:#eef3fb;font-weight:600}
tr.ep td:first-child{padding-left:24px}
.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34}.dim{color:#8a93a6}
#status.stale{color:#ffb4ab}
`

// Plain ES2017 for any browser; no frameworks.
const JS = `
'use strict'
var POLL_MS = ${WEB_POLL_MS}
var prev = null
function el(tag, text, cls) { var e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e }
function row(cells, cls) { var tr = el('tr'); if (cls) tr.className = cls; cells.forEach(function (c) { if (c instanceof Node) { var td = el('td'); td.appendChild(c); tr.appendChild(td) } else if (typeof c === 'number') tr.appendChild(el('td', fmt(c), 'n')); else tr.appendChild(el('td', c)) }); return tr }
function fmt(n) { if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G'; if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M'; if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k'; return String(Math.round(n * 10) / 10) }
function fill(id, rows) { var tb = document.getElementById(id); while (tb.firstChild) tb.removeChild(tb.firstChild); rows.forEach(function (r) { tb.appendChild(r) }) }
function rate(now, before, dt) { return before === undefined || dt <= 0 ? 0 : Math.max(0, (now - before) / dt) }
function ejection(e) { if (e.ejected === true) return el('span', 'ejected' + (e.ejectedFor ? ' ' + e.ejectedFor : ''), 'bad'); if (typeof e.ejection === 'string' && e.ejection !== '') return el('span', e.ejection, e.ejection === 'ejected' ? 'bad' : ''); return el('span', '', '') }
function render(s) {
  var dt = prev ? (s.time - prev.time) / 1000 : 0
  var prevSvc = {}; if (prev) prev.services.forEach(function (p) { prevSvc[p.id] = p })
  document.getElementById('node').textContent = 'node ' + s.node
  document.getElementById('conntrack').textContent = fmt(s.conntrackEntries) + ' connections tracked'
  var svcRows = []
  s.services.forEach(function (v) {
    var p = prevSvc[v.id]
    svcRows.push(row([v.servicePortName + ' (' + v.protocol + ')', v.frontends.join(', '), v.policy + '; affinity ' + v.affinity, v.packets, v.newConnections, rate(v.newConnections, p && p.newConnections, dt), ''], 'svc'))
    if (v.endpoints.length === 0) svcRows.push(row(['(no endpoints)', '', '', '', '', '', ''], 'ep'))
    v.endpoints.forEach(function (e) {
      var st = el('span', e.state + (e.active ? '' : ', not used'), e.state === 'ready' ? 'ok' : 'bad')
      var where = e.local ? 'local' : 'remote' + (e.node ? ' ' + e.node : '')
      svcRows.push(row([e.endpoint, (e.pod || '') + ' ' + where, st, e.packets, e.connections, e.bytes, ejection(e)], 'ep'))
    })
  })
  fill('services', svcRows)
  fill('flows', s.flows.top.map(function (f) { return row([f.protocol, f.state, f.client, f.to, f.endpoint, f.service, f.packets, f.bytes, f.expiresIn + 's']) }))
  document.getElementById('flowtotal').textContent = 'top ' + s.flows.top.length + ' of ' + s.flows.total + ' by bytes'
  var drops = Object.keys(s.drops).sort()
  fill('drops', drops.length === 0 ? [row(['none', ''])] : drops.map(function (k) { return row([k, s.drops[k]]) }))
  var codes = Object.keys(s.dns.responses).sort()
  var pdns = prev ? prev.dns : null
  var dnsRows = [row(['queries', s.dns.requests, rate(s.dns.requests, pdns && pdns.requests, dt)])]
  codes.forEach(function (c) { dnsRows.push(row([c, s.dns.responses[c], rate(s.dns.responses[c], pdns && pdns.responses[c], dt)])) })
  fill('dns', dnsRows)
  document.getElementById('status').textContent = 'updated ' + new Date(s.time).toLocaleTimeString()
  document.getElementById('status').className = ''
  prev = s
}
function poll() {
  fetch('api/state', { cache: 'no-store' }).then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json() }).then(render).catch(function (err) {
    var st = document.getElementById('status'); st.textContent = 'no answer: ' + err.message; st.className = 'stale'
  }).then(function () { setTimeout(poll, POLL_MS) })
}
poll()
`

export const WEB_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tundra</title><meta name="viewport" content="width=device-width">
<style>${CSS}</style></head>
<body>
<header><h1>tundra</h1><span id="node">…</span><span id="conntrack"></span><span id="status">loading</span></header>
<main>
<section class="wide"><h2>Services → endpoints</h2><table>
<thead><tr><th>service port / endpoint</th><th>frontends / pod</th><th>policy / state</th><th>packets</th><th>new conns / tracked</th><th>conn/s / bytes</th><th>ejection</th></tr></thead>
<tbody id="services"></tbody></table></section>
<section class="wide"><h2>Top flows <span id="flowtotal" class="dim"></span></h2><table>
<thead><tr><th>proto</th><th>state</th><th>client</th><th>to</th><th>endpoint</th><th>service</th><th>packets</th><th>bytes</th><th>expires</th></tr></thead>
<tbody id="flows"></tbody></table></section>
<section><h2>Drops by reason</h2><table><thead><tr><th>reason</th><th>packets</th></tr></thead><tbody id="drops"></tbody></table></section>
<section><h2>DNS</h2><table><thead><tr><th>rcode</th><th>total</th><th>per second</th></tr></thead><tbody id="dns"></tbody></table></section>
</main>
<script>${JS}</script>
</body></html>
`
