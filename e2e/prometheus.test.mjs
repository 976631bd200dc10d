// A real Prometheus (Debian's package) with conf/prometheus.local.yml,
// pointed at this test's ports, scrapes the proxy and every origin.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort, startOrigin, startProxy, waitFor } from './system.mjs';

const children = [];
after(() => children.forEach((c) => c.kill('SIGKILL')));

test('Prometheus scrapes the proxy and every origin, all targets up', async () => {
  const media = mkdtempSync(join(tmpdir(), 'cdn-e2e-prom-'));
  writeFileSync(join(media, 'sample.mp4'), 'not really a video, but bytes');
  const origins = await Promise.all([startOrigin(media), startOrigin(media)]);
  children.push(...origins.map((o) => o.child));
  const proxy = await startProxy(origins);
  children.push(proxy.child);
  for (let i = 0; i < 20; i++) await (await fetch(`${proxy.url}/`)).arrayBuffer();

  // The project's config with only the addresses changed.
  const dir = mkdtempSync(join(tmpdir(), 'cdn-e2e-prom-data-'));
  const config = readFileSync(resolve(import.meta.dirname, '..', 'conf', 'prometheus.local.yml'), 'utf8')
    .replace('"127.0.0.1:8080"', `"${new URL(proxy.url).host}"`)
    .replace('["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]', JSON.stringify(origins.map((o) => o.addr)))
    // The rules file, relative to conf/ in the repository.
    .replace('"../deploy/prometheus/rules.yml"', JSON.stringify(resolve(import.meta.dirname, '..', 'deploy', 'prometheus', 'rules.yml')));
  assert.ok(config.includes('scrape_interval: 1s') && config.includes(JSON.stringify(origins.map((o) => o.addr))));
  writeFileSync(join(dir, 'prometheus.yml'), config);
  const port = await freePort();
  const prom = spawn(process.env.PROMETHEUS ?? 'prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(prom);
  const api = `http://127.0.0.1:${port}/api/v1`;

  const targets = await waitFor('every target up', async () => {
    const t = (await (await fetch(`${api}/targets`)).json()).data.activeTargets;
    return { ok: t.length === 3 && t.every((x) => x.health === 'up'), value: t };
  });
  assert.deepEqual(targets.map((t) => t.labels.job).sort(), ['cdn-origin', 'cdn-origin', 'cdn-proxy']);
  assert.ok(targets.every((t) => t.scrapeInterval === '1s'));

  const query = async (q) => (await (await fetch(`${api}/query?query=${encodeURIComponent(q)}`)).json()).data.result;
  const proxied = await waitFor('cdn_requests_total', async () => {
    const r = await query('sum(cdn_requests_total{code="2xx"})');
    return { ok: r.length === 1 && Number(r[0].value[1]) >= 20, value: Number(r[0]?.value[1]) };
  });
  assert.ok(proxied >= 20);
  const up = await query('cdn_origin_up == 1');
  assert.equal(up.length, 2);
  const originSeries = await query('origin_requests_total{code="2xx"}');
  assert.equal(originSeries.length, 2, 'both origins scraped');

  // Both expositions pass promtool's lint (naming, units, types).
  for (const url of [`${proxy.url}/prometheus`, `http://${origins[0].addr}/metrics`]) {
    const text = await (await fetch(url)).text();
    const lint = spawnSync(process.env.PROMTOOL ?? 'promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(lint.status, 0, `${url}: ${lint.stdout}${lint.stderr}`);
  }

  // The rules are loaded and evaluated: recording rules give series, no alert rule errs.
  const groups = (await (await fetch(`${api}/rules`)).json()).data.groups;
  assert.deepEqual(groups.map((g) => g.name).sort(), ['cdn.alerts', 'cdn.recording']);
  await waitFor('recording rules evaluated', async () => {
    const g = (await (await fetch(`${api}/rules`)).json()).data.groups;
    const rules = g.flatMap((x) => x.rules);
    return { ok: rules.every((r) => r.health === 'ok'), value: rules.filter((r) => r.health !== 'ok') };
  });
  const rate = await waitFor('cdn:requests:rate1m', async () => {
    await (await fetch(`${proxy.url}/`)).arrayBuffer();   // traffic for the rate
    const r = await query('cdn:requests:rate1m{code="2xx"}');
    return { ok: r.length === 1 && Number(r[0].value[1]) > 0, value: r };
  });
  assert.ok(rate.length === 1);

  // Every query of the Grafana dashboard parses and runs here; the traffic
  // and origin panels have data.
  const dashboard = JSON.parse(readFileSync(resolve(import.meta.dirname, '..', 'deploy', 'grafana', 'dashboards', 'cdn.json'), 'utf8'));
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr.replaceAll('$__rate_interval', '10s') })));
  assert.ok(exprs.length >= 20, `${exprs.length} queries`);
  for (const { title, expr } of exprs) {
    const r = await (await fetch(`${api}/query?query=${encodeURIComponent(expr)}`)).json();
    assert.equal(r.status, 'success', `${title}: ${expr}: ${JSON.stringify(r)}`);
  }
  for (const title of ['Requests per second, by status class', 'TTFB heatmap', 'Load score (tier bounds 25/50/75 by default)', 'Origins up']) {
    const { expr } = exprs.find((e) => e.title === title);
    await waitFor(`data for "${title}"`, async () => {
      await (await fetch(`${proxy.url}/`)).arrayBuffer();
      const r = await query(expr);
      return { ok: r.length > 0, value: r };
    });
  }
});
