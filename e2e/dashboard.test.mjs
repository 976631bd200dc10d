// The dashboard in a real browser, through the proxy's public listener.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startOrigin, startProxy, chromiumArgs, chromiumPath } from './system.mjs';

const children = [];
after(() => children.forEach((c) => c.kill('SIGKILL')));

test('the dashboard shows live data and an origin going down', async () => {
  const media = mkdtempSync(join(tmpdir(), 'cdn-e2e-dash-'));
  writeFileSync(join(media, 'sample.mp4'), randomBytes(2 * 1024 * 1024));
  const origins = await Promise.all([0, 1, 2].map(() => startOrigin(media)));
  children.push(...origins.map((o) => o.child));
  const cacheDir = mkdtempSync(join(tmpdir(), 'cdn-e2e-cache-'));
  const proxy = await startProxy(origins, [`cache: {dir: ${cacheDir}}`]);
  children.push(proxy.child);

  // Traffic for the charts: ranged requests, eight at a time, until the test ends.
  let traffic = true;
  const load = (async () => {
    while (traffic) {
      await Promise.all(Array.from({ length: 8 }, () =>
        fetch(`${proxy.url}/`, { headers: { range: 'bytes=0-262143' } }).then((r) => r.arrayBuffer()).catch(() => null)));
      // And media GETs, answered from slices (the media path).
      await fetch(`${proxy.url}/videos/sample.mp4`).then((r) => r.arrayBuffer()).catch(() => null);
    }
  })();

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${proxy.url}/dashboard`);
    // The page received frames over /ws and its charts have data.
    await page.waitForFunction(() => window.dashboard?.connected && window.dashboard.frames >= 3, null, { timeout: 20000 });
    await page.waitForFunction(() => {
      const has = (id) => Chart.getChart(id).data.datasets.some((d) => d.data.some((v) => v > 0));
      return ['c-rpm', 'c-bw', 'c-mem', 'c-media', 'c-cache', 'o-tp', 'o-share'].every(has);
    }, null, { timeout: 20000 });
    // Repeat views of the media file are cache hits: the hit ratio rises.
    await page.waitForFunction(() => Chart.getChart('c-cache').data.datasets[0].data.some((v) => v >= 50), null, { timeout: 20000 });
    // The memory chart plots the media path's read buffers (a number in every frame).
    const buffers = await page.evaluate(() => Chart.getChart('c-mem').data.datasets[1].data.filter((v) => v !== null));
    assert.ok(buffers.length > 0 && buffers.every(Number.isFinite), JSON.stringify(buffers));
    // The origins served slices of the media GETs (the slices column).
    await page.waitForFunction(() => [...document.querySelectorAll('#origins tbody tr')]
      .some((tr) => Number(tr.cells[10].textContent) > 0), null, { timeout: 20000 });
    // The table lists every origin, up.
    const rows = () => page.$$eval('#origins tbody tr', (trs) => trs.map((tr) => ({
      addr: tr.cells[0].textContent.trim(), state: tr.cells[1].textContent.trim() })));
    const before = await rows();
    assert.deepEqual(before.map((r) => r.addr).sort(), origins.map((o) => o.addr).sort());
    assert.ok(before.every((r) => r.state === 'up'), JSON.stringify(before));

    // A slow origin: the table says why it scores what it does (its latency points).
    const slow = origins[2];
    const res = await fetch(`http://${slow.addr}/admin/faults`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"latency_ms": 40}' });
    assert.equal(res.status, 200);
    await page.waitForFunction((addr) => [...document.querySelectorAll('#origins tbody tr')]
      .some((tr) => tr.cells[0].textContent.trim() === addr && /latency \d+/.test(tr.querySelector('td.why').textContent)
        && tr.querySelector('td.why .seg')),
    slow.addr, { timeout: 20000 });
    await fetch(`http://${slow.addr}/admin/faults`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"reset": true}' });

    // Kill one origin: the page shows it as down (or ejected) by itself.
    const victim = origins[1];
    victim.child.kill('SIGKILL');
    await page.waitForFunction((addr) => [...document.querySelectorAll('#origins tbody tr')]
      .some((tr) => tr.cells[0].textContent.trim() === addr && /down|ejected/.test(tr.cells[1].textContent)),
    victim.addr, { timeout: 20000 });
    const after = await rows();
    assert.ok(after.filter((r) => r.addr !== victim.addr).every((r) => r.state === 'up'), JSON.stringify(after));

    // The tier bounds are drawn on the score chart.
    const bounds = await page.evaluate(() => Chart.getChart('o-score').data.datasets.filter((d) => d.borderDash).length);
    assert.equal(bounds, 3);
    assert.deepEqual(errors, []);
    const artifacts = join(import.meta.dirname, '..', 'artifacts');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });
  } finally {
    traffic = false;
    await load;
    await browser.close();
  }
});
