// An HLS stream (a playlist and its segments, made with ffmpeg) played and
// sought in Chromium through a route other than /videos: hls.js over Media
// Source Extensions, or the browser's own HLS where it has one.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startOrigin, startProxy, chromiumArgs, chromiumPath, waitFor } from './system.mjs';

const children = [];
after(() => children.forEach((c) => c.kill('SIGKILL')));

test('an HLS stream plays and seeks through the /hls/ route', async () => {
  // 12 s of video in 2 s MPEG-TS segments, with a VOD playlist.
  const media = mkdtempSync(join(tmpdir(), 'cdn-e2e-hls-'));
  mkdirSync(join(media, 'hls'));
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i',
    'testsrc2=size=320x240:rate=25:duration=12', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-g', '25',
    '-f', 'hls', '-hls_time', '2', '-hls_playlist_type', 'vod',
    '-hls_segment_filename', join(media, 'hls', 'seg%03d.ts'), join(media, 'hls', 'index.m3u8')]);
  const origins = await Promise.all([startOrigin(media), startOrigin(media)]);
  children.push(...origins.map((o) => o.child));
  const log = join(media, 'access.log');
  // Only /hls/ reaches the origins; its .ts segments take the media path.
  const proxy = await startProxy(origins, ['routes: [{prefix: /hls/}]', `access_log: {format: json, path: ${log}}`]);
  children.push(proxy.child);

  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  try {
    const page = await browser.newPage({ viewport: { width: 480, height: 300 } });
    await page.goto(`${proxy.url}/healthz`);
    await page.addScriptTag({ path: join(import.meta.dirname, 'node_modules', 'hls.js', 'dist', 'hls.min.js') });
    const r = await page.evaluate(async () => {
      document.body.innerHTML = '<video id=v muted width=320></video>';
      const v = document.getElementById('v');
      const src = '/hls/index.m3u8';
      let player = 'native';
      if (window.Hls && Hls.isSupported()) {
        player = 'hls.js';
        const hls = new Hls();
        hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) v.dataset.error = `${d.type} ${d.details}`; });
        hls.loadSource(src);
        hls.attachMedia(v);
      } else {
        v.src = src;
      }
      await new Promise((ok, bad) => {
        v.onloadedmetadata = ok;
        v.onerror = () => bad(new Error(`media error ${v.error?.code} ${v.dataset.error ?? ''}`));
        setTimeout(() => bad(new Error(`no metadata: ${v.dataset.error ?? 'timeout'}`)), 20000);
      });
      await v.play();
      await new Promise((ok) => { const t = () => (v.currentTime > 0.5 ? ok() : setTimeout(t, 50)); t(); });
      v.currentTime = 8;
      await new Promise((ok) => { v.onseeked = ok; });
      const at = v.currentTime;
      await new Promise((ok) => { const t = () => (v.currentTime > at + 0.3 ? ok() : setTimeout(t, 50)); t(); });
      return { player, duration: v.duration, afterSeek: v.currentTime, paused: v.paused };
    });
    assert.ok(Math.abs(r.duration - 12) < 0.5, `duration ${r.duration}`);
    assert.ok(r.afterSeek >= 8 && r.afterSeek < 12, `position after the seek: ${r.afterSeek}`);
    assert.equal(r.paused, false);
    mkdirSync(join(import.meta.dirname, '..', 'artifacts'), { recursive: true });
    await page.screenshot({ path: join(import.meta.dirname, '..', 'artifacts', 'hls.png') });

    // The playlist and segments came through the route, from the origins, with their streaming types.
    const lines = await waitFor('segments in the access log', () => {
      const all = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const segs = all.filter((l) => /^\/hls\/seg\d+\.ts$/.test(l.target) && l.status === 200 && l.origin);
      return { ok: segs.length >= 2 && all.some((l) => l.target === '/hls/index.m3u8'), value: all.length };
    }, 10000, 100);
    assert.ok(lines > 2);
    const seg = await fetch(`${proxy.url}/hls/seg000.ts`);
    assert.equal(seg.headers.get('content-type'), 'video/mp2t');
    const list = await fetch(`${proxy.url}/hls/index.m3u8`);
    assert.equal(list.headers.get('content-type'), 'application/vnd.apple.mpegurl');
    // Outside the route: the edge's own 404.
    assert.equal((await fetch(`${proxy.url}/videos/`)).status, 404);
    console.log(`played with ${r.player}`);
  } finally {
    await browser.close();
  }
});
