// The client against a scripted peer that speaks frames of the contract today's gateway does not send yet
// (resume's caught_up) or sends only under faults (unknown_outcome, saved at chosen seqs), and close codes that are
// hard to provoke from a real one (1013, 1008).
// The real-gateway tests in live.test.mjs cover the rest; these switch to real gateways as the features land.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { afterEach, test } from 'node:test';

import { WebSocketServer } from 'ws';

import { connect, createDocument } from '../src/index.js';
import { eventually } from './support/harness.mjs';
import { WebSocket } from './support/sockets.mjs';

const servers = [];
const docs = [];

afterEach(async () => {
  await Promise.all(docs.splice(0).map((doc) => doc.close()));
  for (const server of servers.splice(0)) {
    for (const client of server.clients) client.terminate();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A peer on a free port; `onConnection(socket, url, index)` scripts each connection. */
async function scriptedServer(onConnection) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(server);
  await once(server, 'listening');
  let index = 0;
  server.on('connection', (socket, request) => {
    socket.frames = [];
    socket.on('message', (data) => socket.frames.push(JSON.parse(String(data))));
    onConnection(socket, new URL(request.url, 'ws://x'), index++);
  });
  return { url: `ws://127.0.0.1:${server.address().port}`, server };
}

const send = (socket, frame) => socket.send(JSON.stringify(frame));

async function join(url) {
  const doc = await connect({ url, projectId: 'p1', WebSocket, backoff: { baseMs: 20, maxMs: 50 } });
  docs.push(doc);
  return doc;
}

test('resume: a reconnect with since applies the replayed edits and caught_up, and settles the edit in doubt', async () => {
  const sockets = [];
  const { url } = await scriptedServer((socket, requestUrl, index) => {
    sockets.push({ socket, requestUrl });
    if (index === 0) {
      send(socket, { type: 'snapshot', projectId: 'p1', seq: 5, clientId: 'c1', objects: [{ id: 'a', type: 'rect', version: 1 }] });
      // The update is applied but its ack is lost with the connection.
      socket.on('message', () => socket.terminate());
    } else {
      send(socket, { type: 'updated', id: 'a', patch: { x: 1 }, version: 2, seq: 6, by: 'alice' });
      send(socket, { type: 'created', object: { id: 'b', type: 'rect', version: 1 }, seq: 7, by: 'bob' });
      send(socket, { type: 'caught_up', seq: 7, savedSeq: 6, clientId: 'c2' });
    }
  });
  const doc = await join(url);
  assert.equal(doc.savedSeq, null, 'no savedSeq from the server means unknown');
  const changes = [];
  const saved = [];
  doc.on('change', (e) => changes.push(e));
  doc.on('saved', (seq) => saved.push(seq));

  const result = await doc.update('a', { x: 1 });
  assert.deepEqual(result, { id: 'a', version: 2, seq: 7 });
  assert.equal(sockets[1].requestUrl.searchParams.get('since'), '5');
  assert.equal(sockets[1].socket.frames.filter((f) => f.type === 'update').length, 0, 'not sent again');
  assert.equal(doc.seq, 7);
  assert.equal(doc.clientId, 'c2');
  assert.equal(doc.savedSeq, 6);
  assert.deepEqual(saved, [6]);
  // The optimistic edit, its replay (which brings the version), bob's create; no snapshot.
  assert.deepEqual(changes.map((e) => [e.kind, e.id, e.local, e.seq]),
    [['updated', 'a', true, null], ['updated', 'a', false, 6], ['created', 'b', false, 7]]);
  assert.deepEqual(doc.objects.get('a'), { id: 'a', type: 'rect', x: 1, version: 2 });
});

test('an edit in doubt that the server does not show is sent again after the reconnect', async () => {
  const { url } = await scriptedServer((socket, _url, index) => {
    send(socket, { type: 'snapshot', projectId: 'p1', seq: 5, objects: [{ id: 'a', type: 'rect', version: 1 }] });
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type !== 'update') return;
      if (index === 0) socket.terminate();
      else send(socket, { type: 'ack', reqId: frame.reqId, id: 'a', version: 2, seq: 6 });
    });
  });
  const doc = await join(url);
  assert.deepEqual(await doc.update('a', { x: 1 }), { id: 'a', version: 2, seq: 6 });
  assert.equal(doc.objects.get('a').x, 1);
});

test('saved only rises; savedSeq comes from snapshots and saved frames', async () => {
  const { url } = await scriptedServer((socket) => {
    send(socket, { type: 'snapshot', projectId: 'p1', seq: 9, savedSeq: 4, objects: [] });
    send(socket, { type: 'saved', seq: 9 });
    send(socket, { type: 'saved', seq: 8 });
  });
  const doc = createDocument({ url, projectId: 'p1', WebSocket });
  docs.push(doc);
  const saved = [];
  doc.on('saved', (seq) => saved.push(seq));
  await doc.ready;
  await eventually('savedSeq 9', () => doc.savedSeq === 9);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(doc.savedSeq, 9);
  assert.deepEqual(saved, [4, 9]);
});

test('close 1013 (try again later) reconnects; close 1008 stops and reports', async () => {
  const { url } = await scriptedServer((socket, _url, index) => {
    if (index === 0) {
      socket.close(1013, 'try again later');
      return;
    }
    send(socket, { type: 'snapshot', projectId: 'p1', seq: 1, objects: [] });
    setTimeout(() => socket.close(1008, 'token expired'), 50);
  });
  const doc = await join(url);
  assert.equal(doc.status, 'live');
  const errors = [];
  doc.on('error', (err) => errors.push(err));
  await eventually('closed', () => doc.status === 'closed');
  assert.equal(errors[0].code, 'policy_violation');
  assert.equal(errors[0].closeCode, 1008);
});

test('a resync refused with rate_limited is asked again after a pause', async () => {
  const { url } = await scriptedServer((socket) => {
    send(socket, { type: 'snapshot', projectId: 'p1', seq: 1, objects: [] });
    send(socket, { type: 'created', object: { id: 'late', type: 'rect', version: 1 }, seq: 3, by: 'bob' });
    let refused = false;
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type !== 'resync') return;
      if (!refused) {
        refused = true;
        send(socket, { type: 'error', reqId: frame.reqId, code: 'rate_limited', message: 'slow down' });
      } else {
        send(socket, { type: 'snapshot', reqId: frame.reqId, projectId: 'p1', seq: 3, objects: [{ id: 'late', type: 'rect', version: 1 }] });
      }
    });
  });
  const doc = await join(url);
  await eventually('resynced after the gap', () => doc.seq === 3 && doc.objects.has('late'));
});

test('unknown_outcome: the snapshot that follows decides the edit, without a reconnect', async () => {
  let connections = 0;
  const { url } = await scriptedServer((socket) => {
    connections += 1;
    send(socket, { type: 'snapshot', projectId: 'p1', seq: 5, clientId: 'c1', objects: [{ id: 'a', type: 'rect', x: 0, version: 1 }] });
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type === 'create') {
        // Applied, reply lost: the snapshot shows it.
        send(socket, { type: 'unknown_outcome', reqId: frame.reqId, message: 'may have been applied' });
        send(socket, { type: 'snapshot', projectId: 'p1', seq: 6, clientId: 'c1', objects: [
          { id: 'a', type: 'rect', x: 0, version: 1 }, { id: 'b', type: 'rect', version: 1 }] });
      } else if (frame.type === 'update' && socket.frames.filter((f) => f.type === 'update').length === 1) {
        // Not applied, reply lost: the snapshot does not show it, so the edit is sent again.
        send(socket, { type: 'unknown_outcome', reqId: frame.reqId, message: 'may have been applied' });
        send(socket, { type: 'snapshot', projectId: 'p1', seq: 6, clientId: 'c1', objects: [
          { id: 'a', type: 'rect', x: 0, version: 1 }, { id: 'b', type: 'rect', version: 1 }] });
      } else if (frame.type === 'update') {
        send(socket, { type: 'ack', reqId: frame.reqId, id: 'a', version: 2, seq: 7 });
      }
    });
  });
  const doc = await join(url);
  assert.deepEqual(await doc.create({ id: 'b', type: 'rect' }), { id: 'b', version: 1, seq: 6 });
  assert.deepEqual(await doc.update('a', { x: 1 }), { id: 'a', version: 2, seq: 7 });
  assert.equal(connections, 1, 'settled on the same socket');
  assert.equal(doc.objects.get('a').x, 1);
  assert.equal(doc.pendingCount, 0);
});
