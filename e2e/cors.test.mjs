// CORS in a real browser: a player page on another origin reads a range
// through the proxy (the browser's preflight answered by the edge), and a
// page on an origin that is not allowed is refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { freePort, startOrigin, startProxy, chromiumArgs, chromiumPath } from './system.mjs';

const children = [];
const servers = [];
after(() => {
  children.forEach((c) => c.kill('SIGKILL'));
  servers.forEach((s) => s.close());
});

/** A site on its own port: one empty page, the "player". */
async function site() {
  const port = await freePort();
  const server = createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>player</title>');
  });
  await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
  servers.push(server);
  return `http://127.0.0.1:${port}`;
}

/** From the page: a ranged GET with a header that needs a preflight. */
function readRange(url) {
  return fetch(url, { headers: { range: 'bytes=0-99', 'x-request-id': 'player-page-1' } })
    .then(async (r) => ({
      status: r.status,
      contentRange: r.headers.get('content-range'),
      id: r.headers.get('x-request-id'),
      bytes: (await r.arrayBuffer()).byteLength,
    }))
    .catch((e) => ({ refused: String(e) }));
}

test('a player on an allowed site reads ranges; another site is refused', async () => {
  const media = mkdtempSync(join(tmpdir(), 'cdn-e2e-cors-'));
  writeFileSync(join(media, 'sample.mp4'), randomBytes(1024 * 1024));
  const origin = await startOrigin(media);
  children.push(origin.child);
  const [allowed, other] = [await site(), await site()];
  const proxy = await startProxy([origin], [`cors: {allowed_origins: ["${allowed}"]}`]);
  children.push(proxy.child);

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    const page = await browser.newPage();
    await page.goto(`${allowed}/`);
    const got = await page.evaluate(readRange, `${proxy.url}/videos/sample.mp4`);
    assert.deepEqual(got, {
      status: 206, contentRange: 'bytes 0-99/1048576', id: 'player-page-1', bytes: 100,
    });

    await page.goto(`${other}/`);
    const refused = await page.evaluate(readRange, `${proxy.url}/videos/sample.mp4`);
    assert.ok(refused.refused?.includes('Failed to fetch'), JSON.stringify(refused));
  } finally {
    await browser.close();
  }
});
