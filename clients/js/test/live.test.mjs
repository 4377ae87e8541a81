// The client against real gateways (two, on one Redis, with a saver and dynalite behind them): convergence,
// optimistic edits and their rollback, failover while editing, token refresh, the offline queue, seq gaps,
// rate limits and the endings that stop a document.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, before, describe, test } from 'node:test';

import { CanvasError, connect, createDocument } from '../src/index.js';
import { eventually, freePort, Harness, makeToken, projectId, sleep } from './support/harness.mjs';
import { tappedWebSocket, WebSocket } from './support/sockets.mjs';

const FAST_BACKOFF = { baseMs: 50, maxMs: 300 };

let harness;
let g1;
let g2;
const open = [];

before(async () => {
  harness = await Harness.start();
  [g1, g2] = await Promise.all([harness.gateway(), harness.gateway()]);
});

after(async () => {
  await harness?.stop();
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((doc) => doc.close()));
});

/** A connected document, closed after the test. */
async function join(options) {
  const doc = await connect({ WebSocket, token: makeToken('alice'), backoff: FAST_BACKOFF, ...options });
  open.push(doc);
  return doc;
}

function plain(doc) {
  return Object.fromEntries([...doc.objects].sort(([a], [b]) => a.localeCompare(b)));
}

async function serverObjects(gateway, project) {
  const response = await fetch(`${gateway.http}/api/projects/${project}/objects`, {
    headers: { authorization: `Bearer ${makeToken('reader')}` },
  });
  assert.equal(response.status, 200);
  const body = await response.json();
  return Object.fromEntries(body.objects.sort((a, b) => a.id.localeCompare(b.id)).map((o) => [o.id, o]));
}

describe('two documents on two gateways', () => {
  test('converge on the same objects, seq and versions', async () => {
    const project = projectId('converge');
    const a = await join({ url: g1.url, projectId: project });
    const b = await join({ url: g2.url, projectId: project, token: makeToken('bob') });
    const remote = [];
    b.on('change', (e) => { if (!e.local) remote.push(e); });

    const edits = [];
    for (let i = 0; i < 10; i += 1) {
      edits.push(a.create({ id: `a${i}`, type: 'rect', x: i }));
      edits.push(b.create({ id: `b${i}`, type: 'ellipse', y: i }));
    }
    await Promise.all(edits);
    await Promise.all([a.update('b3', { x: 30, fill: '#f00' }), b.update('a3', { nested: { k: [1, 2] } })]);
    await Promise.all([a.delete('b4'), b.delete('a4')]);

    await eventually('both documents at the same seq', () => a.seq === 24 && b.seq === 24);
    assert.deepEqual(plain(a), plain(b));
    assert.deepEqual(plain(a), await serverObjects(g1, project));
    assert.equal(a.objects.get('a3').nested.k[1], 2);
    assert.equal(a.objects.get('b3').version, 2);
    assert.equal(a.objects.has('a4'), false);
    assert.equal(a.pendingCount, 0);
    // b heard about each of a's edits once, in seq order, with its author.
    const fromA = remote.filter((e) => e.by === 'alice');
    assert.equal(fromA.length, 12);
    assert.deepEqual(fromA.map((e) => e.seq), [...fromA.map((e) => e.seq)].sort((x, y) => x - y));
  });
});

describe('optimistic edits', () => {
  test('show at once, and a conflict rolls the edit back with a change event', async () => {
    const project = projectId('conflict');
    const a = await join({ url: g1.url, projectId: project });
    const b = await join({ url: g2.url, projectId: project, token: makeToken('bob') });
    await a.create({ id: 'shared', type: 'rect', fill: 'red' });
    await eventually('b sees the object', () => b.objects.get('shared')?.fill === 'red');

    const changes = [];
    b.on('change', (e) => changes.push(e));
    const attempt = b.create({ id: 'shared', type: 'rect', fill: 'blue' });
    // Optimistic: b shows its own version before the server answers.
    assert.equal(b.objects.get('shared').fill, 'blue');
    assert.equal(b.serverObjects.get('shared').fill, 'red');
    assert.equal(b.pendingCount, 1);
    await assert.rejects(attempt, (err) => err instanceof CanvasError && err.code === 'conflict');
    assert.equal(b.objects.get('shared').fill, 'red');
    assert.equal(b.objects.get('shared').version, 1);
    assert.equal(b.pendingCount, 0);
    const rollback = changes.find((e) => e.rolledBack);
    assert.ok(rollback, 'a change event tells the app about the rollback');
    assert.equal(rollback.kind, 'updated');
    assert.equal(rollback.local, true);
    assert.equal(rollback.object.fill, 'red');
    assert.equal(rollback.previous.fill, 'blue');
    assert.equal(rollback.error.code, 'conflict');
  });

  test('an update of a missing object is rolled back with not_found', async () => {
    const doc = await join({ url: g1.url, projectId: projectId('missing') });
    await assert.rejects(doc.update('nope', { x: 1 }), { code: 'not_found' });
    assert.equal(doc.objects.size, 0);
  });

  test('a create without an id gets a random one, and the ack brings the version', async () => {
    const doc = await join({ url: g1.url, projectId: projectId('ids') });
    const result = await doc.create({ type: 'text', text: 'hi', version: 99 });
    assert.match(result.id, /^[A-Za-z0-9_-]{17}$/);
    assert.equal(result.version, 1);
    assert.equal(doc.objects.get(result.id).version, 1);
    assert.equal(doc.objects.get(result.id).text, 'hi');
  });
});

describe('failover', () => {
  test('a gateway killed while the client keeps editing: it moves to the other URL and every edit lands in order', async () => {
    const doomed = await harness.gateway();
    const project = projectId('failover');
    const tap = tappedWebSocket();
    const doc = await join({ url: [doomed.url, g2.url], projectId: project, WebSocket: tap.WebSocket });
    const watcher = await join({ url: g2.url, projectId: project, token: makeToken('bob') });
    assert.equal(doc.url, doomed.url);
    await doc.create({ id: 'moving', type: 'rect', x: 0 });
    const statuses = [];
    doc.on('status', (s) => statuses.push(s));

    const sentBefore = tap.sent.length;
    const killed = doomed.kill();
    // Editing goes on at once: the first of these go out on the dying socket (their fate unknown to the client
    // until it reconnects), the rest wait in the queue.
    const edits = [];
    for (let i = 1; i <= 20; i += 1) edits.push(doc.update('moving', { x: i }));
    for (let i = 0; i < 5; i += 1) edits.push(doc.create({ id: `n${i}`, type: 'rect', order: i }));
    edits.push(doc.delete('n0'));
    await killed;
    const results = await Promise.all(edits);

    assert.equal(doc.url, g2.url);
    const onDyingSocket = tap.sentOn.slice(sentBefore).filter((socket) => socket === 0).length;
    assert.ok(onDyingSocket > 0, 'some edits went out on the dying socket and had to be settled after the reconnect');
    assert.ok(statuses.includes('offline') && statuses.at(-1) === 'live', `statuses: ${statuses}`);
    assert.ok(results.every((r) => typeof r.seq === 'number'));
    // Per object, the edits were applied in the order they were made (objects are independent of each other).
    const increasing = (list) => list.every((r, i) => i === 0 || r.seq > list[i - 1].seq);
    const updates = results.slice(0, 20);
    assert.ok(increasing(updates), `update seqs: ${updates.map((r) => r.seq)}`);
    assert.deepEqual(updates.map((r) => r.version), Array.from({ length: 20 }, (_, i) => i + 2));
    assert.ok(increasing(results.slice(20, 25)));
    assert.ok(results[25].seq > results[20].seq, 'n0 was deleted after it was created');
    assert.equal(doc.objects.get('moving').x, 20);
    assert.equal(doc.pendingCount, 0);
    await eventually('the watcher converges', () => watcher.seq === doc.seq);
    assert.deepEqual(plain(watcher), plain(doc));
    assert.deepEqual(plain(doc), await serverObjects(g2, project));
    assert.equal(doc.objects.has('n0'), false);
    assert.equal(doc.objects.get('n4').order, 4);
  });

  test('an edit whose ack was lost with its socket is settled from the server state, not applied twice', async () => {
    let dropped = 0;
    const tap = tappedWebSocket({
      // Lose the ack of the create (the edit is applied), then the connection.
      drop: (frame) => frame.type === 'ack' && frame.id === 'once' && dropped++ === 0,
      afterDrop: (socket) => socket.cut(),
    });
    const project = projectId('in-doubt');
    const doc = await join({ url: [g1.url, g2.url], projectId: project, WebSocket: tap.WebSocket });
    const result = await doc.create({ id: 'once', type: 'rect' });
    assert.equal(result.id, 'once');
    assert.equal(result.version, 1);
    assert.equal(tap.sockets.length, 2, 'the client reconnected');
    assert.equal(tap.sent.filter((f) => f.type === 'create').length, 1, 'the create was not sent again');
    await doc.update('once', { x: 5 });
    assert.deepEqual(await serverObjects(g1, project), { once: { id: 'once', type: 'rect', x: 5, version: 2 } });
  });

  test('a close with 1001 (gateway shutting down) reconnects, calling the token function again', async () => {
    const leaving = await harness.gateway();
    const project = projectId('token');
    let calls = 0;
    const token = async () => {
      calls += 1;
      return makeToken(`user-${calls}`);
    };
    const doc = await join({ url: [leaving.url, g1.url], projectId: project, token });
    const watcher = await join({ url: g2.url, projectId: project, token: makeToken('bob') });
    assert.equal(calls, 1);
    const authors = [];
    watcher.on('change', (e) => authors.push(e.by));
    await doc.create({ id: 'before', type: 'rect' });

    await leaving.terminate();
    await eventually('the document is live on the other gateway', () => doc.status === 'live' && doc.url === g1.url);
    assert.equal(calls, 2, 'the token function was called for the reconnect');
    await doc.create({ id: 'after', type: 'rect' });
    await eventually('the watcher sees both edits', () => authors.length === 2);
    assert.deepEqual(authors, ['user-1', 'user-2'], 'the second connection used the fresh token');
  });
});

describe('the offline queue', () => {
  test('holds up to maxQueue edits while offline, refuses the next, and sends them in order once live', async () => {
    const port = await freePort();
    const project = projectId('queue');
    const doc = createDocument({
      url: `ws://127.0.0.1:${port}`, projectId: project, token: makeToken('alice'), WebSocket, maxQueue: 5,
      backoff: FAST_BACKOFF,
    });
    open.push(doc);
    await sleep(100);
    assert.notEqual(doc.status, 'live');
    const counts = [];
    doc.on('pending', (count) => counts.push(count));
    const queued = [doc.create({ id: 'q', type: 'rect', n: 0 })];
    for (let i = 1; i < 5; i += 1) queued.push(doc.update('q', { n: i }));
    assert.equal(doc.objects.get('q').n, 4, 'queued edits show optimistically');
    await assert.rejects(doc.create({ id: 'over', type: 'rect' }), (err) => err.code === 'queue_full');
    assert.equal(doc.objects.has('over'), false);
    assert.equal(doc.pendingCount, 5);

    await harness.gateway({}, port);
    await doc.ready;
    const results = await Promise.all(queued);
    assert.deepEqual(results.map((r) => r.version), [1, 2, 3, 4, 5]);
    assert.deepEqual(counts, [1, 2, 3, 4, 5, 4, 3, 2, 1, 0], 'pending events follow the queue');
    assert.deepEqual((await serverObjects(g1, project)).q, { id: 'q', type: 'rect', n: 4, version: 5 });
  });

  test('closing the document rejects what is still queued', async () => {
    const port = await freePort();
    const doc = createDocument({ url: `ws://127.0.0.1:${port}`, projectId: projectId('closed'), WebSocket });
    const pending = doc.create({ type: 'rect' });
    await doc.close();
    await assert.rejects(pending, { code: 'closed' });
    await assert.rejects(doc.ready, { code: 'closed' });
    assert.equal(doc.status, 'closed');
  });
});

describe('sequence rules', () => {
  test('a seq gap (a lost broadcast) triggers a resync and the document converges', async () => {
    let lost = 0;
    const tap = tappedWebSocket({ drop: (frame) => frame.type === 'updated' && lost++ === 0 });
    const project = projectId('gap');
    const writer = await join({ url: g1.url, projectId: project });
    const reader = await join({ url: g2.url, projectId: project, WebSocket: tap.WebSocket });
    await writer.create({ id: 'g', type: 'rect', x: 0 });
    for (let i = 1; i <= 5; i += 1) await writer.update('g', { x: i });
    await eventually('the reader catches up', () => reader.seq === writer.seq && reader.objects.get('g')?.x === 5);
    assert.ok(lost >= 2, 'an updated frame was lost and a later one showed the gap');
    assert.ok(tap.sent.some((f) => f.type === 'resync' && f.since === 1), 'resync asked to resume after seq 1');
    assert.deepEqual(plain(reader), plain(writer));
  });

  test('a reconnect asks to resume from its seq and takes the snapshot a server without resume sends', async () => {
    const tap = tappedWebSocket();
    const project = projectId('since');
    const doc = await join({ url: [g1.url, g2.url], projectId: project, WebSocket: tap.WebSocket });
    await doc.create({ id: 's', type: 'rect' });
    const other = await join({ url: g2.url, projectId: project });
    tap.sockets[0].cut();
    await other.update('s', { x: 1 }); // made while the document is away
    await eventually('live again with the edit', () => doc.status === 'live' && doc.objects.get('s')?.x === 1);
    assert.match(tap.urls[1], /[?&]since=1(&|$)/);
    assert.equal(doc.seq, 2);
  });

  test('resume: a reconnect with since gets the missed edits and caught_up, no snapshot', async () => {
      const tap = tappedWebSocket();
      const project = projectId('resume');
      // The reconnect asks for a token first: holding that back keeps the client away until both edits are made.
      let gate = Promise.resolve();
      let release = () => {};
      const token = async () => {
        await gate;
        return makeToken('alice');
      };
      const doc = await join({ url: [g1.url, g2.url], projectId: project, WebSocket: tap.WebSocket, token });
      await doc.create({ id: 'r', type: 'rect' });
      const other = await join({ url: g2.url, projectId: project });
      const changes = [];
      const syncs = [];
      doc.on('change', (e) => changes.push(e));
      doc.on('sync', (e) => syncs.push(e));
      gate = new Promise((resolve) => {
        release = resolve;
      });
      tap.sockets[0].cut();
      await other.update('r', { x: 1 });
      await other.create({ id: 'r2', type: 'rect' });
      release();
      await eventually('live again', () => doc.status === 'live' && doc.seq === 3);
      // `saved` watermarks come whenever the saver finishes a pass: they are not part of the replay.
      const replayed = tap.received.filter((f) => f.type !== 'saved');
      const caughtUp = replayed.findIndex((f, i) => i > 0 && f.type === 'caught_up');
      const second = replayed.slice(caughtUp - 2, caughtUp + 1);
      assert.deepEqual(second.map((f) => f.type), ['updated', 'created', 'caught_up']);
      assert.ok(!tap.received.slice(1).some((f) => f.type === 'snapshot'), 'no second snapshot');
      assert.deepEqual(changes.map((e) => e.kind), ['updated', 'created']);
      assert.deepEqual(syncs, [{ via: 'resume', seq: 3, missed: 2 }]);
      assert.deepEqual(plain(doc), plain(other));
    });
});

describe('server limits and refusals', () => {
  test('rate_limited edits are sent again after a pause and all land, in order per object', async () => {
    const strict = await harness.gateway({ CANVAS_MAX_EDITS_PER_SECOND: '20', CANVAS_EDIT_BURST: '3' });
    const tap = tappedWebSocket();
    const project = projectId('rate');
    const doc = await join({ url: strict.url, projectId: project, WebSocket: tap.WebSocket, retryPause: { baseMs: 50, maxMs: 400 } });
    const edits = [];
    for (let i = 0; i < 12; i += 1) edits.push(doc.create({ id: `r${i}`, type: 'rect', n: 0 }));
    for (let i = 1; i <= 6; i += 1) edits.push(doc.update('r0', { n: i }));
    await Promise.all(edits);
    const limited = tap.received.filter((f) => f.type === 'error' && f.code === 'rate_limited');
    assert.ok(limited.length > 0, 'the gateway did refuse some edits');
    const server = await serverObjects(g1, project);
    assert.equal(Object.keys(server).length, 12);
    assert.equal(server.r0.n, 6);
    assert.equal(server.r0.version, 7);
  });

  test('a frame over the gateway limit (close 1009) stops the document and reports it', async () => {
    const doc = await join({ url: g1.url, projectId: projectId('huge') });
    const errors = [];
    doc.on('error', (err) => errors.push(err));
    const huge = doc.create({ type: 'text', text: 'x'.repeat(300 * 1024) });
    await assert.rejects(huge, (err) => err.code === 'too_large' && err.closeCode === 1009);
    assert.equal(doc.status, 'closed');
    assert.equal(errors[0]?.closeCode, 1009);
    await assert.rejects(doc.create({ type: 'rect' }), { code: 'closed' });
  });

  test('HTTP 401 and 403 before the upgrade stop connecting and reject connect()', async () => {
    await assert.rejects(connect({ url: g1.url, projectId: projectId('auth'), WebSocket, token: 'not-a-jwt' }),
      (err) => err.code === 'unauthorized' && err.status === 401);
    await assert.rejects(connect({
      url: g1.url, projectId: projectId('auth'), WebSocket, token: makeToken('carol', { other: 'editor' }),
    }), (err) => err.code === 'forbidden' && err.status === 403);
  });
});

describe('conditional edits and saved', () => {
  test('ifVersion: a stale conditional update is refused with conflict and the current version', async () => {
    const project = projectId('if-version');
    const a = await join({ url: g1.url, projectId: project });
    const b = await join({ url: g2.url, projectId: project, token: makeToken('bob') });
    const { version } = await a.create({ id: 'v', type: 'rect', x: 0 });
    await eventually('b sees it', () => b.objects.has('v'));
    await b.update('v', { x: 1 }, { ifVersion: version });
    await assert.rejects(a.update('v', { x: 2 }, { ifVersion: version }),
      (err) => err.code === 'conflict' && err.version === 2);
    await eventually('a rolled back to the server copy', () => a.objects.get('v')?.x === 1);
    await assert.rejects(a.delete('v', { ifVersion: 1 }), { code: 'conflict' });
    await a.delete('v', { ifVersion: 2 });
  });

  test('saved: savedSeq arrives with the snapshot and rises to cover acked edits', async () => {
    const doc = await join({ url: g1.url, projectId: projectId('saved') });
    assert.equal(typeof doc.savedSeq, 'number');
    const saved = [];
    doc.on('saved', (seq) => saved.push(seq));
    const { seq } = await doc.create({ type: 'rect' });
    await eventually('the saver persisted the edit', () => doc.savedSeq >= seq);
    assert.ok(saved.at(-1) >= seq);
  });
});

describe('the demo page', () => {
  test('the gateway serves every library module at /client/ exactly as it is in src/', async () => {
    const src = new URL('../src/', import.meta.url);
    const files = fs.readdirSync(src).filter((f) => f.endsWith('.js'));
    assert.ok(files.includes('index.js'));
    for (const file of files) {
      const response = await fetch(`${g1.http}/client/${file}`);
      assert.equal(response.status, 200, `/client/${file}`);
      assert.match(response.headers.get('content-type'), /^text\/javascript/);
      assert.equal(await response.text(), fs.readFileSync(new URL(file, src), 'utf8'), `/client/${file} is stale`);
    }
    assert.equal((await fetch(`${g1.http}/client/nope.js`)).status, 404);
    const page = await (await fetch(`${g1.http}/app.js`)).text();
    assert.match(page, /from '\/client\/index\.js'/, 'the demo page imports the library');
  });
});
