# -*- test-case-name: tests.test_admin -*-
"""
The admin listener's dashboard: one self-contained HTML page (no CDN, no
build step; its charts are SVG drawn by the page's own script). It reads
C{/status} every two seconds and C{/history} every five.
"""

DASHBOARD = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>twisted-proxy</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{--fg:#1d2430;--mute:#6a7382;--line:#dde2ea;--bg:#f6f8fb;--ok:#1a8f4c;--bad:#c62f2f;--warn:#c77c02}
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
header{display:flex;gap:2em;align-items:baseline;padding:.8em 1.5em;background:#fff;border-bottom:1px solid var(--line)}
header h1{font-size:1.2em;margin:0}
header span{color:var(--mute)}
main{padding:1em 1.5em;display:grid;gap:1em}
section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:.8em 1em}
section h2{font-size:1em;margin:.1em 0 .6em}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:1em}
.chart h3{font-size:.9em;margin:0 0 .3em;color:var(--mute);font-weight:600}
svg{width:100%;height:150px;display:block}
svg text{font-size:10px;fill:var(--mute)}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid var(--line);padding:.3em .6em;text-align:right;white-space:nowrap}
td:first-child,th:first-child,td.l,th.l{text-align:left}
th{color:var(--mute);font-weight:600}
.up{color:var(--ok)}.down{color:var(--bad)}.ejected{color:var(--warn)}
.legend span{display:inline-block;margin-right:1em;font-size:.85em}
.legend i{display:inline-block;width:10px;height:10px;margin-right:.3em;border-radius:2px}
.empty{color:var(--mute)}
.timeline rect{shape-rendering:crispEdges}
</style></head><body>
<header><h1>twisted-proxy</h1><span id="meta">loading...</span><span id="updated"></span></header>
<main>
<section><h2>Traffic, last 15 minutes</h2>
<div class="charts">
<div class="chart"><h3>requests per second</h3><svg id="c-rps"></svg><div class="legend" id="l-rps"></div></div>
<div class="chart"><h3>latency p99 (ms, last minute)</h3><svg id="c-p99"></svg><div class="legend" id="l-p99"></div></div>
<div class="chart"><h3>server errors (5xx) per second</h3><svg id="c-err"></svg><div class="legend" id="l-err"></div></div>
<div class="chart"><h3>bytes out per second</h3><svg id="c-bps"></svg><div class="legend" id="l-bps"></div></div>
</div></section>
<section><h2>Listeners</h2><table id="listeners"></table></section>
<section><h2>Routes</h2><table id="routes"></table></section>
<section><h2>Backends</h2><table id="backends"></table>
<h3 style="font-size:.9em;color:var(--mute)">server states, last 15 minutes</h3><div id="timeline"></div>
<table id="events"></table></section>
<section><h2>Caches</h2><table id="caches"></table>
<div class="chart"><h3>cache hits per second</h3><svg id="c-hits"></svg><div class="legend" id="l-hits"></div></div></section>
<section><h2>Last denials and errors</h2><table id="recent"></table></section>
<section id="workers-section" hidden><h2>Workers</h2><table id="workers"></table></section>
</main>
<script>
"use strict";
const COLORS = ["#2f6fd6", "#d6572f", "#2fa36b", "#8e44ad", "#c99a06", "#17a2b8", "#e83e8c", "#6c757d"];
const WINDOW = 15 * 60;
let history = {interval: 5, points: []};
let status = null;

function esc(s) {
  return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
    c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  return Number(v).toLocaleString(undefined, {maximumFractionDigits: digits === undefined ? 1 : digits});
}
function bytes(v) {
  if (v === null || v === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + " " + units[i];
}
function clock(t) {
  return new Date(t * 1000).toLocaleTimeString();
}
function setHTML(id, html) {
  const el = document.getElementById(id);
  if (el) el.innerHTML = html;
}

// a line chart: series = [{name, points: [[t, v], ...]}]
function chart(id, series, format) {
  const svg = document.getElementById(id);
  if (!svg) return;
  const w = svg.clientWidth || 400, h = svg.clientHeight || 150;
  const left = 48, right = 8, top = 8, bottom = 18;
  const now = Date.now() / 1000, t0 = now - WINDOW;
  let max = 0;
  for (const s of series) for (const p of s.points) if (p[1] !== null && p[1] > max) max = p[1];
  if (max <= 0) max = 1;
  const x = t => left + (w - left - right) * Math.max(0, t - t0) / WINDOW;
  const y = v => top + (h - top - bottom) * (1 - v / max);
  let out = "";
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, yy = y(v);
    out += `<line x1="${left}" x2="${w - right}" y1="${yy}" y2="${yy}" stroke="#eef1f5"/>`;
    out += `<text x="${left - 4}" y="${yy + 3}" text-anchor="end">${esc(format ? format(v) : num(v))}</text>`;
  }
  for (let m = 0; m <= 15; m += 5) {
    const xx = x(now - m * 60);
    out += `<text x="${xx}" y="${h - 4}" text-anchor="middle">${m ? "-" + m + " min" : "now"}</text>`;
  }
  series.forEach((s, i) => {
    let d = "", pen = "M";
    for (const p of s.points) {
      if (p[1] === null || p[1] === undefined) { pen = "M"; continue; }
      d += `${pen}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)} `;
      pen = "L";
    }
    if (d) out += `<path d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.6"/>`;
  });
  if (!series.length) out += `<text x="${w / 2}" y="${h / 2}" text-anchor="middle">no data yet</text>`;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.innerHTML = out;
  setHTML("l" + id.slice(1), series.map((s, i) =>
    `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join(""));
}

function seriesOf(group, key) {
  const names = new Set();
  for (const p of history.points) for (const n of Object.keys(p[group] || {})) names.add(n);
  return Array.from(names).map(name => ({
    name: name,
    points: history.points.map(p => [p.time, ((p[group] || {})[name] || {})[key] ?? null]),
  }));
}

function drawCharts() {
  chart("c-rps", seriesOf("listeners", "rps"));
  chart("c-p99", seriesOf("listeners", "p99"));
  chart("c-err", seriesOf("listeners", "errors_per_s"));
  chart("c-bps", seriesOf("listeners", "out_bps"), bytes);
  chart("c-hits", seriesOf("caches", "hits_per_s"));
}

function classes(byStatus) {
  const c = {"2": 0, "3": 0, "4": 0, "5": 0};
  for (const [s, n] of Object.entries(byStatus || {})) { const k = String(s)[0]; if (k in c) c[k] += n; }
  return c;
}

function lastPoint(name) {
  const points = history.points;
  if (!points.length) return {};
  return (points[points.length - 1].listeners || {})[name] || {};
}

function drawStatus() {
  const s = status;
  if (!s) return;
  const workers = s.workers || null;
  document.getElementById("meta").textContent =
    `version ${s.version} - configuration generation ${s.generation}, loaded ${s.loaded_at}` +
    (workers ? ` - ${workers.length} workers` : "");
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();

  let h = '<tr><th>listener</th><th class="l">kind</th><th>connections</th><th>tunnels</th><th>req/s</th>' +
    '<th>requests</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th><th>denied</th>' +
    '<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>upstream p99 ms</th><th>bytes out</th></tr>';
  for (const l of s.listeners || []) {
    const c = classes(l.by_status), lat = l.latency || {}, up = l.upstream_latency || {};
    h += `<tr><td>${esc(l.name)}</td><td class="l">${esc(l.kind)}</td><td>${num(l.connections, 0)}</td>` +
      `<td>${num(l.tunnels, 0)}</td><td>${num(lastPoint(l.name).rps)}</td><td>${num(l.requests, 0)}</td>` +
      `<td>${num(c["2"], 0)}</td><td>${num(c["3"], 0)}</td><td>${num(c["4"], 0)}</td><td>${num(c["5"], 0)}</td>` +
      `<td>${num(l.denied, 0)}</td><td>${num(lat.p50, 2)}</td><td>${num(lat.p90, 2)}</td><td>${num(lat.p99, 2)}</td>` +
      `<td>${num(up.p99, 2)}</td><td>${bytes(l.bytes_out)}</td></tr>`;
  }
  setHTML("listeners", h);

  h = '<tr><th>route</th><th class="l">listener</th><th class="l">backend</th><th>requests</th><th>2xx</th>' +
    '<th>3xx</th><th>4xx</th><th>5xx</th><th>p50 ms</th><th>p99 ms</th><th>upstream p50 ms</th><th>upstream p99 ms</th></tr>';
  let any = false;
  for (const l of s.listeners || []) for (const r of l.routes || []) {
    any = true;
    const c = r.by_class || {}, lat = r.latency || {}, up = r.upstream_latency || {};
    h += `<tr><td>${esc(r.name)}</td><td class="l">${esc(l.name)}</td><td class="l">${esc(r.backend)}</td>` +
      `<td>${num(r.requests, 0)}</td><td>${num(c["2xx"], 0)}</td><td>${num(c["3xx"], 0)}</td>` +
      `<td>${num(c["4xx"], 0)}</td><td>${num(c["5xx"], 0)}</td><td>${num(lat.p50, 2)}</td><td>${num(lat.p99, 2)}</td>` +
      `<td>${num(up.p50, 2)}</td><td>${num(up.p99, 2)}</td></tr>`;
  }
  setHTML("routes", any ? h : '<tr><td class="empty">no route has served a request yet</td></tr>');

  const details = s.backend_details || {};
  h = '<tr><th>backend</th><th class="l">server</th><th class="l">state</th><th class="l">since</th>' +
    '<th class="l">why</th><th>in flight</th><th>weight</th><th>queue</th><th class="l">last picks</th></tr>';
  const now = s.time || Date.now() / 1000;
  for (const [name, servers] of Object.entries(s.backends || {})) {
    const d = details[name] || {};
    for (const v of servers) {
      const state = !v.up ? "down" : (v.ejected ? "ejected" : "up");
      const picks = (d.picks || []).slice(-8).join(", ");
      h += `<tr><td>${esc(name)}</td><td class="l">${esc(v.server)}${v.backup ? " (backup)" : ""}</td>` +
        `<td class="l ${state}">${state}</td><td class="l">${v.changed_at ? clock(v.changed_at) : "-"}</td>` +
        `<td class="l">${esc(v.why)}</td><td>${num(v.in_flight, 0)}</td><td>${num(v.weight, 0)}</td>` +
        `<td>${num(d.queue, 0)}</td><td class="l">${esc(picks)}</td></tr>`;
    }
  }
  setHTML("backends", h);
  drawTimeline(s, details, now);

  h = '<tr><th>cache</th><th>entries</th><th>bytes</th><th>hit ratio</th><th>hits</th><th>misses</th>' +
    '<th>stale</th><th>revalidated</th><th>collapsed</th><th>evictions</th></tr>';
  for (const [name, c] of Object.entries(s.caches || {}))
    h += `<tr><td>${esc(name)}</td><td>${num(c.entries, 0)}</td><td>${bytes(c.bytes)}</td>` +
      `<td>${num(100 * (c.hit_ratio || 0))}%</td><td>${num(c.hits, 0)}</td><td>${num(c.misses, 0)}</td>` +
      `<td>${num(c.stale, 0)}</td><td>${num(c.revalidated, 0)}</td><td>${num(c.collapsed, 0)}</td>` +
      `<td>${num(c.evictions, 0)}</td></tr>`;
  setHTML("caches", Object.keys(s.caches || {}).length ? h : '<tr><td class="empty">no cache configured</td></tr>');

  const recent = (s.recent || []).slice(-30).reverse();
  h = '<tr><th class="l">time</th><th class="l">listener</th><th class="l">client</th><th class="l">request</th>' +
    '<th>status</th><th class="l">decision</th><th class="l">rule</th></tr>';
  for (const r of recent)
    h += `<tr><td class="l">${clock(r.time)}</td><td class="l">${esc(r.listener)}</td><td class="l">${esc(r.client)}</td>` +
      `<td class="l">${esc(r.method)} ${esc(r.url)}</td><td>${num(r.status, 0)}</td>` +
      `<td class="l">${esc(r.decision)}</td><td class="l">${esc(r.rule)}</td></tr>`;
  setHTML("recent", recent.length ? h : '<tr><td class="empty">none since start</td></tr>');

  const section = document.getElementById("workers-section");
  if (workers) {
    section.hidden = false;
    h = '<tr><th>worker</th><th>pid</th><th class="l">started</th><th>generation</th><th>connections</th>' +
      '<th>requests</th><th>CPU s</th></tr>';
    for (const w of workers)
      h += `<tr><td>${num(w.index, 0)}</td><td>${num(w.pid, 0)}</td><td class="l">${esc(w.started)}</td>` +
        `<td>${num(w.generation, 0)}</td><td>${num(w.connections, 0)}</td><td>${num(w.requests, 0)}</td>` +
        `<td>${num(w.cpu_seconds, 1)}</td></tr>`;
    setHTML("workers", h);
  }
}

// one row per server: green up, red down, amber ejected, over 15 minutes
function drawTimeline(s, details, now) {
  const rows = [];
  for (const [name, servers] of Object.entries(s.backends || {})) {
    const events = (details[name] || {}).events || [];
    for (const v of servers) {
      const mine = events.filter(e => e.server === v.server || v.server.endsWith("//" + e.server));
      rows.push({label: name + " " + v.server, events: mine, current: !v.up ? "down" : (v.ejected ? "ejected" : "up")});
    }
  }
  if (!rows.length) { setHTML("timeline", '<span class="empty">no backend</span>'); return; }
  const w = 900, rowH = 16, left = 260, h = rows.length * (rowH + 4) + 14, t0 = now - WINDOW;
  const x = t => left + (w - left - 4) * Math.max(0, t - t0) / WINDOW;
  const color = {up: "#1a8f4c", down: "#c62f2f", ejected: "#c77c02"};
  let out = "";
  rows.forEach((r, i) => {
    const yy = i * (rowH + 4);
    out += `<text x="0" y="${yy + 12}">${esc(r.label)}</text>`;
    // the state before the first change in the window is the opposite of that change, or the current one
    const inside = r.events.filter(e => e.time >= t0);
    let state = inside.length ? (inside[0].state === "up" ? "down" : "up") : r.current;
    let from = t0;
    const bar = (a, b, st) => `<rect x="${x(a)}" y="${yy}" width="${Math.max(1, x(b) - x(a))}" height="${rowH}" fill="${color[st] || "#999"}"><title>${esc(st)}</title></rect>`;
    let until = null;
    for (const e of inside) {
      if (state === "ejected" && until !== null && until < e.time) {
        // the ejection ended by itself before this change
        out += bar(from, until, "ejected");
        from = until; state = "up";
      }
      out += bar(from, e.time, state);
      state = e.state; from = e.time; until = e.until ?? null;
    }
    if (state === "ejected" && until !== null && until < now) {
      out += bar(from, until, "ejected");
      from = until; state = "up";
    }
    out += bar(from, now, state);
  });
  out += `<text x="${left}" y="${h - 2}">-15 min</text><text x="${w - 4}" y="${h - 2}" text-anchor="end">now</text>`;
  setHTML("timeline", `<svg class="timeline" viewBox="0 0 ${w} ${h}" style="height:${h}px">${out}</svg>`);

  const events = [];
  for (const [name, d] of Object.entries(details)) for (const e of d.events || []) events.push([name, e]);
  events.sort((a, b) => b[1].time - a[1].time);
  let h2 = '<tr><th class="l">time</th><th class="l">backend</th><th class="l">server</th><th class="l">state</th><th class="l">why</th></tr>';
  for (const [name, e] of events.slice(0, 15))
    h2 += `<tr><td class="l">${clock(e.time)}</td><td class="l">${esc(name)}</td><td class="l">${esc(e.server)}</td>` +
      `<td class="l ${esc(e.state)}">${esc(e.state)}</td><td class="l">${esc(e.why)}</td></tr>`;
  setHTML("events", events.length ? h2 : "");
}

async function loadStatus() {
  try {
    const r = await fetch("status", {cache: "no-store"});
    if (r.ok) { status = await r.json(); drawStatus(); }
  } catch (e) {
    document.getElementById("updated").textContent = "the proxy does not answer";
  }
}
async function loadHistory() {
  try {
    const r = await fetch("history", {cache: "no-store"});
    if (r.ok) { history = await r.json(); drawCharts(); drawStatus(); }
  } catch (e) {
    // shown by loadStatus
  }
}
loadStatus(); loadHistory();
setInterval(loadStatus, 2000);
setInterval(loadHistory, 5000);
window.addEventListener("resize", drawCharts);
</script></body></html>
"""
