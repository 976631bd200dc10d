// The live dashboard: one WebSocket, charts created once, fixed-length
// buffers updated in place, `update('none')` per frame (no animation).
'use strict';

const POINTS = 300;                 // five minutes at one frame a second
const COLORS = ['#58a6ff', '#3fb950', '#d29922', '#f85149', '#bc8cff', '#39c5cf', '#ff9bce', '#a5d6ff'];
const labels = new Array(POINTS).fill('');
const state = { frames: 0, lastTs: 0, snapshot: null, origins: new Map(), connected: false };
window.dashboard = state;           // read by the browser tests

Chart.defaults.color = '#8393a4';
Chart.defaults.borderColor = '#25303c';
Chart.defaults.animation = false;
Chart.defaults.font.size = 11;

const series = () => new Array(POINTS).fill(null);
function lineChart(id, yTitle, datasets, extra = {}) {
  return new Chart(document.getElementById(id), {
    type: 'line',
    data: { labels, datasets: datasets.map((d, i) => ({ borderColor: d.color ?? COLORS[i], backgroundColor: 'transparent',
      borderWidth: 1.5, pointRadius: 0, spanGaps: true, data: series(), ...d })) },
    options: { responsive: true, maintainAspectRatio: false, animation: false, normalized: true,
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { display: datasets.length > 1 || extra.legend, labels: { boxWidth: 10 } } },
      scales: { x: { ticks: { maxTicksLimit: 6, maxRotation: 0 }, title: { display: true, text: 'time' } },
                y: { beginAtZero: true, title: { display: true, text: yTitle }, ...extra.y } } },
  });
}

const g = {
  rpm: lineChart('c-rpm', 'requests / min', [{ label: 'req/min' }]),
  streams: lineChart('c-streams', 'streams', [{ label: 'streams' }]),
  bw: lineChart('c-bw', 'Mbps', [{ label: 'Mbps' }]),
  rt: lineChart('c-rt', 'ms', [{ label: 'average' }, { label: 'p95', color: COLORS[2] }]),
  cpu: lineChart('c-cpu', '% of one core', [{ label: 'CPU %' }]),
  mem: lineChart('c-mem', 'MiB', [{ label: 'resident MiB' }, { label: 'media read buffers MiB', color: COLORS[2] }]),
  media: lineChart('c-media', 'per second', [{ label: 'slices/s' }, { label: 'resumes/s', color: COLORS[2] },
    { label: 'cut/s', color: COLORS[3] }]),
  // Each the mean of the last 10 frames that had traffic (none of them: a gap).
  cache: lineChart('c-cache', '%', [{ label: 'hit ratio (requests)' }, { label: 'origin offload (bytes)', color: COLORS[1] }],
    { legend: true, y: { max: 100 } }),
};
// The last frames' cache figures, for the 10-frame averages.
const recent = [];
// The media counters of the previous frame, for per-second rates.
let lastMedia = null;
const o = {
  tp: lineChart('o-tp', 'Mbps', [], { legend: true }),
  score: lineChart('o-score', 'score (0–100)', [], { legend: true, y: { max: 100 } }),
  cpu: lineChart('o-cpu', 'CPU %', [], { legend: true, y: { max: 100 } }),
  mem: lineChart('o-mem', 'memory %', [], { legend: true }),
  share: lineChart('o-share', '% of requests', [], { legend: true, y: { max: 100 } }),
};
const tierLines = [];               // dashed tier bounds on the score chart

function push(arr, v) { arr.shift(); arr.push(v); }

// Per-origin datasets are added once, when an origin first appears; never rebuilt.
function originIndex(address) {
  if (state.origins.has(address)) return state.origins.get(address);
  const i = state.origins.size;
  const color = COLORS[i % COLORS.length];
  for (const c of Object.values(o)) {
    c.data.datasets.push({ label: address, borderColor: color, backgroundColor: 'transparent', borderWidth: 1.5,
      pointRadius: 0, spanGaps: true, data: series() });
  }
  state.origins.set(address, i);
  return i;
}

function drawTierBounds(bounds) {
  if (tierLines.length) return;
  bounds.forEach((b, k) => {
    const ds = { label: `tier ${k}/${k + 1}`, borderColor: '#566575', borderDash: [4, 4], borderWidth: 1,
      pointRadius: 0, data: new Array(POINTS).fill(b) };
    tierLines.push(ds);
    o.score.data.datasets.unshift(ds);
  });
}

// The score's inputs, in the order of /metrics' score_points, with their colours.
const INPUTS = [['latency', '#f85149'], ['queue', '#d29922'], ['errors', '#ff9bce'], ['cpu', '#58a6ff'], ['memory', '#bc8cff']];

// Why an origin scores what it does: one bar segment per input (its points out of 100).
function scoreBreakdown(x) {
  const p = x.score_points ?? {};
  const parts = INPUTS.filter(([k]) => p[k] > 0.05);
  const bar = parts.map(([k, c]) => `<span class="seg" style="width:${p[k].toFixed(1)}%;background:${c}" title="${k} ${p[k].toFixed(1)}"></span>`).join('');
  const text = parts.map(([k]) => `${k} ${p[k].toFixed(0)}`).join(' · ') || 'at par with the fleet';
  return `<span class="bar">${bar}</span><small>${text}</small>`;
}

function ago(ms) { return ms ? `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago` : 'never'; }

function renderTable(s) {
  const rows = s.origins.map((x) => `<tr class="${x.state}">
    <td>${x.address}${x.source !== 'static' ? ` <small>(${x.source})</small>` : ''}</td>
    <td class="state"><span class="state-${x.state}">${x.state}</span></td>
    <td>${x.tier}</td><td>${x.score.toFixed(1)}</td><td class="why">${scoreBreakdown(x)}</td>
    <td>${x.inputs.response_time_ms.toFixed(1)} <small>(${x.inputs.latency_ratio.toFixed(1)}×)</small></td><td>${x.in_flight}</td>
    <td>${x.requests_per_sec.toFixed(1)}</td><td>${x.throughput_mbps.toFixed(1)}</td>
    <td>${(x.request_share * 100).toFixed(0)}%</td><td>${x.slices_total ?? 0}</td><td>${x.errors_total}</td>
    <td>${ago(x.last_health_check.unix_ms)}${x.last_health_check.ok ? '' : ' (failed)'}</td></tr>`);
  document.querySelector('#origins tbody').innerHTML = rows.join('');
}

function onFrame(s) {
  if (s.timestamp_ms <= state.lastTs) return;   // history and live may overlap by one frame
  state.lastTs = s.timestamp_ms;
  state.frames += 1;
  state.snapshot = s;
  push(labels, new Date(s.timestamp_ms).toLocaleTimeString([], { hour12: false }));
  const G = s.global;
  push(g.rpm.data.datasets[0].data, G.requests_per_minute);
  push(g.streams.data.datasets[0].data, G.concurrent_streams);
  push(g.bw.data.datasets[0].data, G.bandwidth_mbps);
  push(g.rt.data.datasets[0].data, G.response_time_avg_ms);
  push(g.rt.data.datasets[1].data, G.response_time_p95_ms);
  push(g.cpu.data.datasets[0].data, G.cpu_percent);
  push(g.mem.data.datasets[0].data, G.memory_bytes / 1048576);
  const M = G.media ?? {};
  push(g.mem.data.datasets[1].data, M.buffered_bytes / 1048576);
  const rate = (k) => (lastMedia ? Math.max(0, (M[k] - lastMedia.m[k]) / Math.max(0.001, (s.timestamp_ms - lastMedia.ts) / 1000)) : null);
  push(g.media.data.datasets[0].data, rate('slices_total'));
  push(g.media.data.datasets[1].data, rate('resumes_total'));
  push(g.media.data.datasets[2].data, lastMedia ? rate('resume_aborts_total') + rate('broken_total') : null);
  lastMedia = { m: M, ts: s.timestamp_ms };
  recent.push({ hit: G.cache?.hit_ratio ?? null, offload: G.origin_offload ?? null });
  if (recent.length > 10) recent.shift();
  const mean = (k) => {
    const v = recent.map((r) => r[k]).filter((x) => x !== null);
    return v.length ? (100 * v.reduce((a, b) => a + b, 0)) / v.length : null;
  };
  push(g.cache.data.datasets[0].data, G.cache ? mean('hit') : null);
  push(g.cache.data.datasets[1].data, mean('offload'));
  drawTierBounds(s.tier_bounds);
  const seen = new Set();
  for (const x of s.origins) {
    const i = originIndex(x.address);
    seen.add(i);
    const up = x.state === 'up';
    push(o.tp.data.datasets[i].data, x.throughput_mbps);
    push(o.score.data.datasets[i + tierLines.length].data, x.score);
    push(o.cpu.data.datasets[i].data, up ? x.inputs.cpu * 100 : null);
    push(o.mem.data.datasets[i].data, up ? x.inputs.memory * 100 : null);
    push(o.share.data.datasets[i].data, x.request_share * 100);
  }
  // Origins gone from the snapshot get gaps, not stale values.
  for (const [, i] of state.origins) {
    if (seen.has(i)) continue;
    for (const c of [o.tp, o.cpu, o.mem, o.share]) push(c.data.datasets[i].data, null);
    push(o.score.data.datasets[i + tierLines.length].data, null);
  }
  for (const c of [...Object.values(g), ...Object.values(o)]) c.update('none');
  renderTable(s);
  document.getElementById('summary').textContent = `${G.origins_up}/${G.origins_total} origins up`;
  document.getElementById('updated').textContent = new Date(s.timestamp_ms).toLocaleTimeString([], { hour12: false });
}

function setConn(text) {
  const el = document.getElementById('conn');
  el.textContent = text;
  el.className = `badge ${text}`;
  state.connected = text === 'live';
}

let backoff = 1000;
function connect() {
  // The proxy may serve the socket elsewhere (endpoints.dashboard_socket); the page says where.
  const path = document.body.dataset.socket || '/ws';
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`);
  ws.onopen = () => { setConn('live'); backoff = 1000; };
  ws.onmessage = (ev) => { try { onFrame(JSON.parse(ev.data)); } catch (e) { console.error('bad frame', e); } };
  ws.onclose = () => {
    setConn('reconnecting');
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}
connect();
