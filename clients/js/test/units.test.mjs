// The pure parts: merge patches as the server applies them, reconnect delays, and how edits in doubt are settled.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_BACKOFF, fullJitterDelay } from '../src/backoff.js';
import { jsonEqual, patchObject } from '../src/merge-patch.js';
import { IN_DOUBT, Outbox, QUEUED } from '../src/outbox.js';

test('merge patch: null removes, objects merge, arrays replace, id/type/version stay', () => {
  const object = { id: 'o', type: 'rect', version: 3, x: 1, style: { fill: 'red', line: { w: 1 } }, tags: [1, 2] };
  const patched = patchObject(object, {
    id: 'other', type: 'ellipse', version: 9, x: null, style: { line: { w: 2 }, fill: null }, tags: [3], y: { a: null },
  });
  assert.deepEqual(patched, { id: 'o', type: 'rect', version: 3, style: { line: { w: 2 } }, tags: [3], y: {} });
  assert.equal(object.x, 1, 'the original is untouched');
});

test('jsonEqual ignores key order and tells arrays from objects', () => {
  assert.ok(jsonEqual({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1 }));
  assert.ok(!jsonEqual({ a: [] }, { a: {} }));
  assert.ok(!jsonEqual({ a: 1 }, { a: 1, b: undefined }));
});

test('full jitter: each delay lies in [0, min(max, base * 2^attempt))', () => {
  for (const [attempt, ceiling] of [[0, 250], [1, 500], [3, 2000], [6, 10_000], [40, 10_000]]) {
    assert.equal(fullJitterDelay(attempt, DEFAULT_BACKOFF, () => 0), 0);
    assert.equal(fullJitterDelay(attempt, DEFAULT_BACKOFF, () => 0.999999), ceiling - 1);
  }
  const delays = Array.from({ length: 200 }, () => fullJitterDelay(4, DEFAULT_BACKOFF));
  assert.ok(delays.every((d) => d >= 0 && d < 4000));
  assert.ok(new Set(delays).size > 50, 'delays are spread, not in lockstep');
});

function entry(op, id, extra = {}) {
  return { reqId: `${op}-${id}-${Math.random()}`, op, id, state: IN_DOUBT, ...extra };
}

test('reconcile: per object, the last edit the server shows and all before it count as applied', () => {
  const outbox = new Outbox(10);
  const edits = [
    entry('create', 'a', { object: { id: 'a', type: 'rect' } }),
    entry('update', 'a', { patch: { x: 1 } }),
    entry('update', 'a', { patch: { x: 2 } }),
    entry('update', 'b', { patch: { y: 5 } }),
    entry('delete', 'c'),
    entry('create', 'd', { object: { id: 'd', type: 'rect' } }),
    entry('update', 'e', { patch: { z: 1 } }),
  ];
  edits.forEach((e) => outbox.add(e));
  outbox.add({ ...entry('update', 'a', { patch: { x: 3 } }), state: QUEUED });
  const confirmed = new Map([
    ['a', { id: 'a', type: 'rect', x: 1, version: 2 }], // create and x=1 applied, x=2 not
    ['b', { id: 'b', type: 'rect', y: 5, version: 4 }], // applied
    ['e', { id: 'e', type: 'rect', z: 0, version: 1 }], // not applied
  ]); // c is gone (delete applied); d is missing (create not applied)
  const applied = outbox.reconcile(confirmed);
  assert.deepEqual(applied.map((e) => `${e.op}:${e.id}`).sort(), ['create:a', 'delete:c', 'update:a', 'update:b'].sort());
  assert.deepEqual(outbox.all().map((e) => [e.op, e.id, e.patch?.x ?? null, e.state]), [
    ['update', 'a', 2, QUEUED],
    ['create', 'd', null, QUEUED],
    ['update', 'e', null, QUEUED],
    ['update', 'a', 3, QUEUED],
  ]);
});
