// A browser plays the sample-like video through the proxy and seeks in it,
// over plain HTTP/1.1 and over HTTPS with HTTP/2.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { bin, freePort, startOrigin, startProxy, chromiumArgs, chromiumPath } from './system.mjs';

const children = [];
// No graceful teardown needed: kill at once, or Node waits out Pingora's grace period.
after(() => children.forEach((c) => c.kill('SIGKILL')));

/** A real H.264 file in a new folder, made the way `make sample` makes one (short, keyframe every second). */
function sampleFolder() {
  const media = mkdtempSync(join(tmpdir(), 'cdn-e2e-media-'));
  mkdirSync(media, { recursive: true });
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i',
    'testsrc2=size=320x240:rate=25:duration=20', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-g', '25',
    '-movflags', '+faststart', join(media, 'sample.mp4')]);
  return media;
}

/** Plays `/` on `base` in `browser`, seeks to 15 s, and checks it plays on; returns the page's protocol. */
async function playAndSeek(browser, base, shot) {
  const page = await browser.newPage({ viewport: { width: 480, height: 300 } });
  await page.goto(`${base}/healthz`);
  const r = await page.evaluate(async () => {
      document.body.innerHTML = '<video id=v muted width=320></video>';
      const v = document.getElementById('v');
      v.src = '/';
      await new Promise((ok, bad) => { v.onloadedmetadata = ok; v.onerror = () => bad(new Error(`media error ${v.error.code}`)); });
      await v.play();
      await new Promise((ok) => { const t = () => (v.currentTime > 0.5 ? ok() : setTimeout(t, 50)); t(); });
      v.currentTime = 15;
      await new Promise((ok) => { v.onseeked = ok; });
      const at = v.currentTime;
      await new Promise((ok) => { const t = () => (v.currentTime > at + 0.3 ? ok() : setTimeout(t, 50)); t(); });
      const protocol = performance.getEntriesByType('navigation')[0].nextHopProtocol;
      return { duration: v.duration, afterSeek: v.currentTime, paused: v.paused, protocol };
  });
  assert.ok(Math.abs(r.duration - 20) < 0.5, `duration ${r.duration}`);
  assert.ok(r.afterSeek >= 15 && r.afterSeek < 20, `position after the seek: ${r.afterSeek}`);
  assert.equal(r.paused, false);
  mkdirSync(join(import.meta.dirname, '..', 'artifacts'), { recursive: true });
  await page.screenshot({ path: join(import.meta.dirname, '..', 'artifacts', shot) });
  return r.protocol;
}

test('a browser plays and seeks the video through the proxy', async () => {
  const media = sampleFolder();
  const origins = await Promise.all([startOrigin(media), startOrigin(media)]);
  children.push(...origins.map((o) => o.child));
  const proxy = await startProxy(origins);
  children.push(proxy.child);

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    assert.equal(await playAndSeek(browser, proxy.url, 'playback.png'), 'http/1.1');
    // The seek was served with a Range request through the proxy.
    const prom = await (await fetch(`${proxy.url}/prometheus`)).text();
    assert.match(prom, /cdn_requests_total\{code="2xx",origin="127\.0\.0\.1:\d+"\} [1-9]/);
  } finally {
    await browser.close();
  }
});

test('a browser plays and seeks the video over HTTPS with HTTP/2', async () => {
  const media = sampleFolder();
  const origins = [await startOrigin(media)];
  children.push(...origins.map((o) => o.child));
  // A local CA and certificate, as `make run` makes them.
  const certs = mkdtempSync(join(tmpdir(), 'cdn-e2e-tls-'));
  execFileSync(bin('cdn-proxy'), ['dev-cert', '--dir', certs]);
  const https = await freePort();
  const proxy = await startProxy(origins, [
    'tls:', `  - listen: 127.0.0.1:${https}`,
    `    certificates: [{cert: ${certs}/cert.pem, key: ${certs}/key.pem}]`]);
  children.push(proxy.child);

  // Chromium trusts exactly this certificate's key (no blanket ignoring of errors).
  const leaf = new X509Certificate(readFileSync(join(certs, 'cert.pem')));
  const spki = createHash('sha256').update(leaf.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  const browser = await chromium.launch({ executablePath: chromiumPath,
    args: [...chromiumArgs, `--ignore-certificate-errors-spki-list=${spki}`] });
  try {
    assert.equal(await playAndSeek(browser, `https://127.0.0.1:${https}`, 'playback-https.png'), 'h2');
  } finally {
    await browser.close();
  }
});
