// The containerised system, for real: deploy/compose.yaml (with the test's
// Prometheus override) on a Docker engine. Run by deploy/test/run.sh, which
// builds the images and sets the environment read below; the steps run in
// order and each builds on the one before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { waitFor } from '../../e2e/system.mjs';

const root = resolve(import.meta.dirname, '..', '..');
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through deploy/test/run.sh (make test-docker)`);
  return v;
};
const project = env('CDN_E2E_PROJECT');
const compose = env('CDN_E2E_COMPOSE').split(' ');
const proxy = `http://127.0.0.1:${env('CDN_HTTP_PORT')}`;
const prometheus = `http://127.0.0.1:${env('CDN_PROMETHEUS_PORT')}`;
const sample = readFileSync(resolve(root, 'media', 'sample.mp4'));

/** Runs the compose command of run.sh on this project; returns its stdout. */
function dc(...args) {
  return execFileSync(compose[0], [...compose.slice(1), '-p', project,
    '-f', 'deploy/compose.yaml', '-f', 'deploy/test/compose.test.yaml', ...args],
  { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Opens a WebSocket (RFC 6455) on raw TCP and resolves with the payload of
 * the first text frame. Raw, so that every byte after the 101 counts: the
 * server's first frames may arrive in the same segment as the handshake.
 */
function firstWebSocketText(url, ms = 10000) {
  const { hostname, port, pathname } = new URL(url);
  const key = randomBytes(16).toString('base64');
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  return new Promise((ok, bad) => {
    const sock = connect(Number(port), hostname);
    const timer = setTimeout(() => { sock.destroy(); bad(new Error(`no text frame within ${ms} ms`)); }, ms);
    const done = (err, text) => { clearTimeout(timer); sock.destroy(); err ? bad(err) : ok(text); };
    let buf = Buffer.alloc(0);
    let upgraded = false;
    sock.on('error', (e) => done(e));
    sock.on('connect', () => sock.write(`GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n`
      + `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!/^HTTP\/1\.1 101 /.test(head)) return done(new Error(`no upgrade: ${head.split('\r\n')[0]}`));
        if (!head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) return done(new Error('wrong Sec-WebSocket-Accept'));
        upgraded = true;
        buf = buf.subarray(end + 4);
      }
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
      if (buf.length < at + len) return;
      if (opcode !== 1) return done(new Error(`first frame has opcode ${opcode}, not text`));
      done(null, buf.subarray(at, at + len).toString('utf8'));
    });
  });
}

const metrics = async () => (await fetch(`${proxy}/metrics`)).json();
const upOrigins = (m) => m.origins.filter((o) => o.state === 'up');

/**
 * Clients fetching random 64 KiB ranges of the sample, `n` at a time, until
 * stopped: every response must be a byte-exact 206, else it counts as failed.
 */
function startLoad(n = 8) {
  const stats = { ok: 0, failed: 0, errors: [] };
  let running = true;
  const client = async () => {
    while (running) {
      const start = Math.floor(Math.random() * (sample.length - 65536));
      const end = start + 65535;
      try {
        const r = await fetch(`${proxy}/`, { headers: { range: `bytes=${start}-${end}` } });
        const body = Buffer.from(await r.arrayBuffer());
        if (r.status === 206 && body.equals(sample.subarray(start, end + 1))) stats.ok++;
        else { stats.failed++; stats.errors.push(`${r.status} ${body.length} bytes`); }
      } catch (e) {
        stats.failed++; stats.errors.push(e.cause?.message ?? e.message);
      }
    }
  };
  const clients = Array.from({ length: n }, client);
  stats.stop = async () => { running = false; await Promise.all(clients); return stats; };
  return stats;
}

test('up with 3 origins: every container turns healthy and the proxy sees 3 origins up', async () => {
  dc('up', '-d', '--no-build', '--scale', 'origin=3');
  await waitFor('the proxy to see 3 origins up', async () => {
    const m = await metrics();
    return { ok: upOrigins(m).length === 3, value: m.origins.map((o) => o.state) };
  }, 120000);
  const health = await waitFor('every container healthy', async () => {
    const ids = dc('ps', '-q').trim().split('\n');
    const states = ids.map((id) => execFileSync('docker',
      ['inspect', '--format', '{{.Config.Image}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}', id],
      { encoding: 'utf8' }).trim());
    const checked = states.filter((s) => !s.includes('no-healthcheck'));
    return { ok: checked.length === 4 && checked.every((s) => s.endsWith(' healthy')), value: states };
  });
  assert.equal(health.length, 5, 'proxy, 3 origins and Prometheus are running');
});

test('the containers run as a non-root user', () => {
  for (const service of ['proxy', 'origin']) {
    const id = dc('ps', '-q', service).trim().split('\n')[0];
    const user = execFileSync('docker', ['inspect', '--format', '{{.Config.User}}', id], { encoding: 'utf8' }).trim();
    assert.equal(user, 'cdn', `${service} runs as ${user || 'root'}`);
  }
});

test('a range of the video plays through the proxy on its published port', async () => {
  const r = await fetch(`${proxy}/`, { headers: { range: 'bytes=1000-1999' } });
  assert.equal(r.status, 206);
  assert.equal(r.headers.get('content-range'), `bytes 1000-1999/${sample.length}`);
  assert.match(r.headers.get('x-served-by') ?? '', /:8000$/);
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(sample.subarray(1000, 2000)));
  const head = await fetch(`${proxy}/`, { method: 'HEAD' });
  assert.equal(head.headers.get('content-length'), String(sample.length));
});

test('the cache, in its volume, serves a repeat view; the admin API needs its token', async () => {
  const get = () => fetch(`${proxy}/videos/sample.mp4`, { headers: { range: 'bytes=0-99999' } });
  const first = await get();
  assert.ok(Buffer.from(await first.arrayBuffer()).equals(sample.subarray(0, 100000)));
  assert.equal(first.headers.get('x-cache'), 'MISS');
  const again = await get();
  assert.equal(again.headers.get('x-cache'), 'HIT', 'the proxy could write its cache volume');
  assert.ok(Buffer.from(await again.arrayBuffer()).equals(sample.subarray(0, 100000)));
  const admin = `http://127.0.0.1:${env('CDN_ADMIN_PORT')}`;
  assert.equal((await fetch(`${admin}/origins`)).status, 401, 'no token');
  const wrong = { authorization: 'Bearer not-the-token-0123456789' };
  assert.equal((await fetch(`${admin}/origins`, { headers: wrong })).status, 401, 'a wrong token');
  const auth = { authorization: `Bearer ${env('CDN_ADMIN_TOKEN')}` };
  const cache = await (await fetch(`${admin}/cache`, { headers: auth })).json();
  assert.ok(cache.slices >= 1, JSON.stringify(cache));
});

test('the dashboard page, its WebSocket and the Prometheus text are served on the same port', async () => {
  const page = await fetch(`${proxy}/dashboard`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<canvas/);
  const chart = await fetch(`${proxy}/dashboard/vendor/chart.umd.js`);
  assert.equal(chart.status, 200, 'Chart.js is in the image');
  const snapshot = JSON.parse(await firstWebSocketText(`${proxy}/ws`));
  assert.equal(typeof snapshot.global?.requests_total, 'number', 'a metrics snapshot');
  const text = await (await fetch(`${proxy}/prometheus`)).text();
  assert.match(text, /^cdn_origin_up\{/m);
});

test('/metrics shows 3 origins, found through the compose service name', async () => {
  const m = await metrics();
  assert.equal(m.origins.length, 3, JSON.stringify(m.origins.map((o) => o.address)));
  assert.ok(m.origins.every((o) => o.source === 'origin:8000'), 'every origin comes from the dns: entry');
  assert.equal(m.global.origins_up, 3);
});

test('scale to 5: the new origins take traffic within seconds, with no failed request', async () => {
  const load = startLoad();
  try {
    dc('up', '-d', '--no-deps', '--no-recreate', '--no-build', '--scale', 'origin=5', 'origin');
    const served = await waitFor('5 origins up, each serving', async () => {
      const m = await metrics();
      const serving = upOrigins(m).filter((o) => o.requests_total > 0);
      return { ok: serving.length === 5, value: m.origins.map((o) => `${o.address} ${o.state} ${o.requests_total}`) };
    });
    assert.equal(served.length, 5);
  } finally {
    const s = await load.stop();
    assert.equal(s.failed, 0, `failed requests: ${s.errors.slice(0, 5).join('; ')}`);
    assert.ok(s.ok > 50, `${s.ok} requests succeeded`);
  }
});

test('stopping an origin container under load fails no request', async () => {
  const load = startLoad();
  try {
    const victim = dc('ps', '-q', 'origin').trim().split('\n')[0];
    await waitFor('some traffic before the stop', async () => ({ ok: load.ok > 50, value: load.ok }));
    execFileSync('docker', ['stop', victim]);
    await waitFor('the proxy to see 4 origins up', async () => {
      const m = await metrics();
      return { ok: upOrigins(m).length === 4, value: m.origins.map((o) => `${o.address} ${o.state}`) };
    });
    // Keep the load on a while longer with the origin gone.
    const before = load.ok;
    await waitFor('more traffic after the stop', async () => ({ ok: load.ok > before + 100, value: load.ok }));
  } finally {
    const s = await load.stop();
    assert.equal(s.failed, 0, `failed requests: ${s.errors.slice(0, 5).join('; ')}`);
  }
});

test('Prometheus scrapes the proxy and every running origin, all up, and origins read their cgroup limits', async () => {
  const api = `${prometheus}/api/v1`;
  const targets = await waitFor('1 proxy and 4 origin targets, all up', async () => {
    const t = (await (await fetch(`${api}/targets`)).json()).data.activeTargets;
    const ok = t.length === 5 && t.every((x) => x.health === 'up');
    return { ok, value: ok ? t : t.map((x) => `${x.labels.job} ${x.scrapeUrl} ${x.health}`) };
  });
  assert.deepEqual(targets.map((t) => t.labels.job).sort(),
    ['cdn-origin', 'cdn-origin', 'cdn-origin', 'cdn-origin', 'cdn-proxy']);
  const q = async (expr) => (await (await fetch(`${api}/query?query=${encodeURIComponent(expr)}`)).json()).data.result;
  const origins = await waitFor('the cdn_origin_up series for 4 origins', async () => {
    const r = await q('sum(cdn_origin_up)');
    return { ok: r.length === 1 && Number(r[0].value[1]) === 4, value: r };
  });
  assert.ok(origins);
  // compose.yaml gives each origin cpus and mem_limit: the origins' own
  // load reports must be measured against those, not the host.
  const mem = await q('origin_memory_utilization_ratio');
  assert.equal(mem.length, 4);
  assert.ok(mem.every((s) => s.metric.source === 'cgroup'), JSON.stringify(mem.map((s) => s.metric.source)));
  const cpu = await q('origin_cpu_utilization_ratio');
  assert.ok(cpu.every((s) => s.metric.source === 'cgroup'), JSON.stringify(cpu.map((s) => s.metric.source)));
});

test('down removes every container and network the test created', () => {
  dc('down', '--volumes', '--remove-orphans', '--timeout', '5');
  const left = execFileSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${project}`],
    { encoding: 'utf8' }).trim();
  assert.equal(left, '', 'no container of the project is left');
  const nets = execFileSync('docker', ['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`],
    { encoding: 'utf8' }).trim();
  assert.equal(nets, '', 'no network of the project is left');
});
