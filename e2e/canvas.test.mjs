// Browser end-to-end test of the canvas demo page served by a running gateway.
//
//   cd e2e && npm ci && CANVAS_URL=http://127.0.0.1:8080 node --test
//
// Env: CANVAS_URL (default http://127.0.0.1:8080), ARTIFACTS_DIR (default ../target/e2e-artifacts),
//      CHROMIUM_PATH (default /usr/bin/chromium), CANVAS_TOKEN / CANVAS_TOKEN_2 (optional JWTs for
//      page 1 / page 2 when the gateway runs with auth; page 2 falls back to CANVAS_TOKEN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.CANVAS_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const ARTIFACTS = process.env.ARTIFACTS_DIR
  ? path.resolve(process.env.ARTIFACTS_DIR)
  : path.resolve(HERE, '../target/e2e-artifacts');
const TOKEN1 = process.env.CANVAS_TOKEN || '';
const TOKEN2 = process.env.CANVAS_TOKEN_2 || TOKEN1;
const WAIT_MS = 10_000;  // every single wait
const TEST_MS = 60_000;  // the whole test
const PROJECT = `e2e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

function log(msg) { console.log(`[e2e] ${msg}`); }

// Last resort if something (a hung browser) outlives the test's own timeout; unref'd, so it never delays a clean exit.
setTimeout(() => {
  console.error(`E2E FAILED: hard timeout (${TEST_MS + 20_000} ms), exiting`);
  process.exit(1);
}, TEST_MS + 20_000).unref();

function pageUrl(name, token) {
  const q = new URLSearchParams({ project: PROJECT, name });
  if (token) q.set('token', token);
  return `${BASE}/?${q}`;
}

// Resolve or reject within `ms`, whatever the promise does.
function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]);
}

test('two browsers draw, move and reload a shape on the same project', { timeout: TEST_MS }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  log(`server ${BASE}, project ${PROJECT}, artifacts ${ARTIFACTS}`);

  // Fail fast and clearly when nothing serves the page.
  try {
    const res = await fetch(`${BASE}/`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200, `GET ${BASE}/ returned HTTP ${res.status}`);
    const html = await res.text();
    assert.match(html, /<canvas/i, `GET ${BASE}/ did not return the canvas page`);
  } catch (e) {
    throw new Error(`E2E: the canvas page is not reachable at ${BASE}/ (set CANVAS_URL to a running gateway): ${e.message}`);
  }

  const browser = await within(WAIT_MS, 'launching chromium', chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    timeout: WAIT_MS,
  }));
  t.after(() => within(WAIT_MS, 'closing chromium', browser.close()).catch((e) => log(e.message)));

  const pages = {};
  const logs = { page1: [], page2: [] };
  const pageErrors = [];
  for (const [key, name, token] of [['page1', 'alice-e2e', TOKEN1], ['page2', 'bob-e2e', TOKEN2]]) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.setDefaultNavigationTimeout(WAIT_MS);
    page.on('console', (m) => logs[key].push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => { pageErrors.push(`${key}: ${e.message}`); logs[key].push(`pageerror: ${e.message}`); });
    page.on('dialog', (d) => d.dismiss().catch(() => {}));
    pages[key] = { page, name, url: pageUrl(name, token) };
  }
  const p1 = pages.page1.page;
  const p2 = pages.page2.page;

  let shot = 0;
  async function screenshots(label) {
    shot += 1;
    const n = String(shot).padStart(2, '0');
    for (const key of ['page1', 'page2']) {
      const file = path.join(ARTIFACTS, `${n}-${label}-${key}.png`);
      await pages[key].page.screenshot({ path: file, timeout: WAIT_MS }).catch((e) => log(`screenshot ${file} failed: ${e.message}`));
    }
  }

  const state = (page) => page.evaluate(() => {
    const a = window.canvasApp;
    return a ? { status: a.status, statusText: a.statusText, projectId: a.projectId, clientId: a.clientId, seq: a.seq,
      pending: a.pendingCount, objects: a.objects, cursors: a.cursors } : null;
  }).catch((e) => ({ unavailable: e.message }));

  // Wait until fn(arg) is truthy in the page; bounded by WAIT_MS.
  const waitIn = (page, fn, arg, what) => page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 })
    .catch((e) => {
      const where = page === p1 ? 'page 1' : 'page 2';
      throw new Error(/Timeout/i.test(e.message) ? `${where}: no ${what} within ${WAIT_MS / 1000} s` : `${where}: ${e.message}`);
    });

  let step = 'start';
  const run = async (name, fn) => { step = name; log(`step: ${name}`); return fn(); };

  try {
    await run('open both pages and wait until live', async () => {
      for (const key of ['page1', 'page2']) {
        await pages[key].page.goto(pages[key].url, { waitUntil: 'load', timeout: WAIT_MS });
      }
      for (const page of [p1, p2]) {
        await waitIn(page, (pid) => window.canvasApp && window.canvasApp.status === 'live' && window.canvasApp.projectId === pid, PROJECT,
          'live connection (status "live" after the first snapshot)');
      }
      await screenshots('connected');
    });

    const box = await run('measure the canvas', async () => {
      const b = await p1.locator('#canvas').boundingBox();
      assert.ok(b && b.width > 500 && b.height > 400, `canvas is too small or hidden: ${JSON.stringify(b)}`);
      return b;
    });

    const start = { x: 200, y: 150 };
    const size = { w: 160, h: 110 };
    const rect = await run('draw a rectangle in page 1 with the mouse', async () => {
      await p1.click('[data-tool="rect"]');
      await p1.mouse.move(box.x + start.x, box.y + start.y);
      await p1.mouse.down();
      await p1.mouse.move(box.x + start.x + size.w / 2, box.y + start.y + size.h / 2, { steps: 5 });
      await p1.mouse.move(box.x + start.x + size.w, box.y + start.y + size.h, { steps: 5 });
      await p1.mouse.up();
      const handle = await waitIn(p1, () => {
        const a = window.canvasApp;
        const rects = Object.values(a.objects).filter((o) => o.type === 'rect');
        return rects.length === 1 && a.pendingCount === 0 && rects[0].version !== undefined ? rects[0] : null;
      }, undefined, 'acknowledged rectangle after drawing (one rect, ack with version received)');
      const o = await handle.jsonValue();
      assert.ok(/^[A-Za-z0-9_-]+$/.test(o.id), `object id ${o.id} has unexpected characters`);
      assert.ok(Math.abs(o.x - start.x) <= 2 && Math.abs(o.y - start.y) <= 2, `rectangle at ${o.x},${o.y}, expected ~${start.x},${start.y}`);
      assert.ok(Math.abs(o.width - size.w) <= 2 && Math.abs(o.height - size.h) <= 2, `rectangle is ${o.width}x${o.height}, expected ~${size.w}x${size.h}`);
      assert.equal(typeof o.fill, 'string', 'rectangle has no fill');
      log(`page 1 created ${o.id} at ${o.x},${o.y} (${o.width}x${o.height}, version ${o.version})`);
      return o;
    });

    await run('page 1 shows its edit as sent (or saved, once the server reports saves)', async () => {
      await waitIn(p1, () => ['sent', 'saved'].includes(window.canvasApp.saveState)
        && document.getElementById('save-state').textContent.startsWith('All changes'), undefined,
      '"All changes sent" / "All changes saved" after the ack');
    });

    await run('page 2 receives the rectangle', async () => {
      await waitIn(p2, (r) => {
        const o = window.canvasApp.objects[r.id];
        return o && o.type === 'rect' && o.x === r.x && o.y === r.y && o.width === r.width && o.height === r.height && o.fill === r.fill;
      }, rect, `\`created\` broadcast of ${rect.id} (rect at ${rect.x},${rect.y})`);
      await screenshots('drawn');
    });

    const delta = { x: 180, y: 120 };
    const moved = await run('drag the rectangle in page 1', async () => {
      await p1.click('[data-tool="select"]');
      const cx = box.x + rect.x + rect.width / 2;
      const cy = box.y + rect.y + rect.height / 2;
      await p1.mouse.move(cx, cy);
      await p1.mouse.down();
      await p1.mouse.move(cx + delta.x / 2, cy + delta.y / 2, { steps: 8 });
      await p1.mouse.move(cx + delta.x, cy + delta.y, { steps: 8 });
      await p1.mouse.up();
      const handle = await waitIn(p1, (r) => {
        const a = window.canvasApp;
        const o = a.serverObjects[r.id];
        return a.pendingCount === 0 && o && o.x !== r.x ? o : null;
      }, rect, `acknowledged move of ${rect.id}`);
      const o = await handle.jsonValue();
      assert.ok(Math.abs(o.x - (rect.x + delta.x)) <= 2 && Math.abs(o.y - (rect.y + delta.y)) <= 2,
        `after the drag the rectangle is at ${o.x},${o.y}, expected ~${rect.x + delta.x},${rect.y + delta.y}`);
      assert.equal(o.width, rect.width, 'the drag changed the width');
      log(`page 1 moved ${o.id} to ${o.x},${o.y} (version ${o.version})`);
      return o;
    });

    await run('page 2 sees the new position', async () => {
      await waitIn(p2, (r) => {
        const o = window.canvasApp.objects[r.id];
        return o && o.x === r.x && o.y === r.y;
      }, moved, `\`updated\` broadcast moving ${moved.id} to ${moved.x},${moved.y}`);
      await screenshots('moved');
    });

    await run("page 2 sees page 1's cursor (presence)", async () => {
      // Move the mouse in page 1 (presence is throttled, so move a few times).
      for (let i = 0; i < 6; i += 1) {
        await p1.mouse.move(box.x + 600 + i * 10, box.y + 420 + i * 5, { steps: 2 });
        await p1.waitForTimeout(60);
      }
      // The page announces itself at (-1,-1) before its pointer is over the canvas: wait for the real position.
      const handle = await waitIn(p2, (name) => {
        const c = Object.values(window.canvasApp.cursors).find((x) => x.name === name && x.x >= 500 && x.y >= 400);
        return c || null;
      }, pages.page1.name, `presence cursor of ${pages.page1.name} over the canvas`);
      const cursor = await handle.jsonValue();
      assert.ok(cursor.clientId, 'the cursor entry has no clientId');
      assert.ok(Number.isFinite(cursor.x) && Number.isFinite(cursor.y), 'the cursor entry has no position');
      const p1Client = await p1.evaluate(() => window.canvasApp.clientId);
      if (p1Client) assert.equal(cursor.clientId, p1Client, 'the cursor clientId is not page 1\'s clientId from its snapshot');
      await waitIn(p2, (name) => document.getElementById('people-list').textContent.includes(name), pages.page1.name,
        `"${pages.page1.name}" in the who's-here list`);
      log(`page 2 shows ${cursor.name}'s cursor at ${cursor.x},${cursor.y}`);
      await screenshots('presence');
    });

    await run('page 2 reloads and gets the rectangle from the snapshot', async () => {
      await p2.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitIn(p2, () => window.canvasApp && window.canvasApp.status === 'live', undefined, 'live connection after reload');
      await waitIn(p2, (r) => {
        const o = window.canvasApp.objects[r.id];
        return o && o.type === 'rect' && o.x === r.x && o.y === r.y && o.width === r.width;
      }, moved, `${moved.id} at ${moved.x},${moved.y} in the snapshot after reload`);
      await screenshots('reloaded');
    });

    assert.deepEqual(pageErrors, [], `uncaught errors in the page: ${pageErrors.join('; ')}`);
    log('all steps passed');
  } catch (err) {
    await screenshots('failure');
    const dump = { step, project: PROJECT, base: BASE, page1: await state(p1), page2: await state(p2), logs, pageErrors };
    const dumpFile = path.join(ARTIFACTS, 'failure-state.json');
    try { fs.writeFileSync(dumpFile, JSON.stringify(dump, null, 2)); } catch (_) { /* ignore */ }
    const msg = [
      `E2E FAILED at step "${step}": ${err.message.split('\n')[0]}`,
      `  server: ${BASE}  project: ${PROJECT}`,
      `  page 1: ${JSON.stringify({ status: dump.page1?.statusText, seq: dump.page1?.seq, objects: Object.keys(dump.page1?.objects || {}).length })}`,
      `  page 2: ${JSON.stringify({ status: dump.page2?.statusText, seq: dump.page2?.seq, objects: Object.keys(dump.page2?.objects || {}).length })}`,
      `  screenshots and ${path.basename(dumpFile)} (state + browser console) in ${ARTIFACTS}`,
    ].join('\n');
    console.error(msg);
    const e = new Error(msg);
    e.cause = err;
    throw e;
  }
});
