// dashboard.mjs — drive Debian's chromium (headless, --no-sandbox) with playwright-core against a
// running serving-api: the dashboard must render the map, the chart, the max-magnitude tile and
// the latest-events table from Redis, then show a live event without a reload.
//
// usage: node dashboard.mjs URL SCREENSHOT_DIR
// Protocol with the Python driver (tests/integration/test_serving_browser.py), one JSON object per
// stdout line: {"stage":"rendered",...} -> the driver publishes an event and writes its id on
// stdin -> {"stage":"live",...}. Exit status 0 only when every check passed.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import path from 'node:path';

const [url, shots] = process.argv.slice(2);
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let status = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('requestfailed', (r) => errors.push('request failed: ' + r.url()));
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready="1"]', { timeout: 20000 });
  await page.waitForSelector('#live-status[data-state="live"]', { timeout: 20000 });
  const rendered = await page.evaluate(() => ({
    countries: Number(document.getElementById('land').dataset.countries || 0),
    landPaths: document.querySelectorAll('#land path').length,
    circles: document.querySelectorAll('#quakes circle').length,
    chartPoints: Number(document.getElementById('chart').dataset.points || 0),
    chartTotal: Number(document.getElementById('chart').dataset.total || 0),
    chartCanvas: document.querySelectorAll('#chart canvas').length,
    tile: document.getElementById('tile-max-value').textContent,
    tileCount: document.getElementById('tile-count-value').textContent,
    rows: [...document.querySelectorAll('#latest tbody tr')].map((tr) => tr.dataset.id),
  }));
  await page.screenshot({ path: path.join(shots, 'dashboard.png'), fullPage: true });
  say({ stage: 'rendered', ...rendered, errors });
  const id = (await nextLine()).trim();
  await page.waitForSelector(`#latest tbody tr[data-id="${id}"]`, { timeout: 20000 });
  const live = await page.evaluate((eid) => ({
    firstRow: document.querySelector('#latest tbody tr').dataset.id,
    circle: !!document.querySelector(`#quakes circle[data-id="${eid}"]`),
    tile: document.getElementById('tile-max-value').textContent,
    rows: document.querySelectorAll('#latest tbody tr').length,
  }), id);
  await page.screenshot({ path: path.join(shots, 'dashboard-live.png'), fullPage: true });
  say({ stage: 'live', ...live, errors });
  status = 0;
} catch (e) {
  say({ stage: 'error', error: String(e && e.stack || e) });
} finally {
  await browser.close();
  lines.close();
}
process.exit(status);
