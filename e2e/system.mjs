// Starts real cdn-origins and cdn-proxy (debug builds from `cargo test`) on
// loopback ports for browser tests, and stops them.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
/** A binary of the workspace (the debug builds by default). */
export const bin = (name) => join(root, process.env.CDN_BIN_DIR ?? 'target/debug', name);

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

/** Starts cdn-origin on port 0 and resolves with its address once it prints `listening on`. */
export function startOrigin(media, extra = []) {
  const child = spawn(bin('cdn-origin'), ['--listen', '127.0.0.1:0', '--media', media, '--fault-admin', ...extra],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
  return new Promise((ok, bad) => {
    child.stdout.once('data', (d) => {
      const m = /^listening on (\S+)/.exec(d.toString());
      m ? ok({ child, addr: m[1] }) : bad(new Error(`unexpected: ${d}`));
    });
    child.once('exit', (code) => bad(new Error(`cdn-origin exited ${code}`)));
  });
}

/**
 * Polls `check` every `every` ms until it returns `{ ok: true, value }` and
 * resolves with `value`; after `ms`, fails with what it saw last (a thrown
 * error counts as not ready yet).
 */
export async function waitFor(what, check, ms = 60000, every = 250) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const r = await check();
      if (r?.ok) return r.value;
      last = r?.value;
    } catch (e) { last = String(e); }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Starts cdn-proxy in front of `origins` (with its dashboard sidecar; `extraYaml`: more cdn.yaml lines) and waits until they are all up. */
export async function startProxy(origins, extraYaml = []) {
  const dir = mkdtempSync(join(tmpdir(), 'cdn-e2e-'));
  const [port, admin, dash] = [await freePort(), await freePort(), await freePort()];
  writeFileSync(join(dir, 'cdn.yaml'), [
    `listen: ["127.0.0.1:${port}"]`, `admin_listen: 127.0.0.1:${admin}`,
    'health: {interval: 200ms, timeout: 500ms, rise: 1, fall: 1}',
    `dashboard: {listen: 127.0.0.1:${dash}, interval: 500ms, web_root: ${root}/dashboard/web,`
      + ` chart_js: ${root}/dashboard/node_modules/chart.js/dist/chart.umd.js}`,
    'origins:',
    ...origins.map((o) => `  - address: ${o.addr}`),
    ...extraYaml,
  ].join('\n'));
  writeFileSync(join(dir, 'pingora.yaml'),
    `---\nversion: 1\nthreads: 2\npid_file: ${dir}/p.pid\nupgrade_sock: ${dir}/u.sock\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n`);
  const child = spawn(bin('cdn-proxy'), ['--cdn-conf', join(dir, 'cdn.yaml'), '-c', join(dir, 'pingora.yaml')],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('all origins up', async () => {
    const m = await (await fetch(`${url}/metrics`)).json();
    return { ok: m.global.origins_up === origins.length, value: m.global.origins_up };
  }, 20000, 50);
  return { child, url };
}

/** The browser flags this machine needs (no sandbox as root, no network beyond loopback). */
export const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--autoplay-policy=no-user-gesture-required'];
export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
