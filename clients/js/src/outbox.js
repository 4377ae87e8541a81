// The local edits the server has not acknowledged yet, in the order they were made: queued (not sent), sent on
// the current socket, or in doubt (sent on a socket that died before its answer came). The bound on it is the
// offline queue's bound. After a reconnect, `reconcile` decides from the server's state which edits in doubt
// were applied, so that none is applied twice and none is lost.

import { jsonEqual, patchObject } from './merge-patch.js';

export const QUEUED = 'queued';
export const SENT = 'sent';
export const IN_DOUBT = 'in-doubt';

export class Outbox {
  #entries = [];
  #limit;

  constructor(limit) {
    this.#limit = limit;
  }

  get size() {
    return this.#entries.length;
  }

  get isFull() {
    return this.#entries.length >= this.#limit;
  }

  add(entry) {
    this.#entries.push(entry);
  }

  /** Removes and returns the entry with this request id. */
  take(reqId) {
    const i = this.#entries.findIndex((e) => e.reqId === reqId);
    return i < 0 ? null : this.#entries.splice(i, 1)[0];
  }

  /** Removes every entry (the document is closing). */
  drain() {
    const all = this.#entries;
    this.#entries = [];
    return all;
  }

  /** Entries touching one object, oldest first. */
  forObject(id) {
    return this.#entries.filter((e) => e.id === id);
  }

  all() {
    return this.#entries;
  }

  oldestSentAt() {
    let oldest = Infinity;
    for (const e of this.#entries) if (e.state === SENT && e.sentAt < oldest) oldest = e.sentAt;
    return oldest;
  }

  /** The socket died: nobody will answer what was sent on it. */
  markSentInDoubt() {
    for (const e of this.#entries) if (e.state === SENT) e.state = IN_DOUBT;
  }

  /**
   * Decides each edit in doubt against the server's state. One socket's edits are applied in order, so per
   * object the applied ones are a prefix of its edits in doubt: the last one whose effect the state shows, and
   * every earlier one, count as applied and are removed; the rest go back to the queue to be sent again.
   * @param {ReadonlyMap<string, Record<string, unknown>>} confirmed the server's objects
   * @returns {object[]} the entries taken as applied, removed from the outbox
   */
  reconcile(confirmed) {
    const byObject = new Map();
    for (const e of this.#entries) {
      if (e.state !== IN_DOUBT) continue;
      if (!byObject.has(e.id)) byObject.set(e.id, []);
      byObject.get(e.id).push(e);
    }
    const applied = new Set();
    for (const [id, entries] of byObject) {
      const current = confirmed.get(id);
      let last = -1;
      for (let i = entries.length - 1; i >= 0; i -= 1) {
        if (looksApplied(entries[i], current)) {
          last = i;
          break;
        }
      }
      entries.forEach((e, i) => {
        if (i <= last) applied.add(e);
        else e.state = QUEUED;
      });
    }
    this.#entries = this.#entries.filter((e) => !applied.has(e));
    return [...applied];
  }
}

/**
 * Whether the server's object shows this edit's effect. A create counts when the object exists: ids made by
 * this library are random, so no other client makes the same one.
 */
function looksApplied(entry, current) {
  switch (entry.op) {
    case 'create':
      return current !== undefined;
    case 'delete':
      return current === undefined;
    default:
      return current !== undefined && jsonEqual(patchObject(current, entry.patch), current);
  }
}

/** The frame that sends this edit. */
export function editFrame(entry) {
  const frame = { type: entry.op, reqId: entry.reqId };
  if (entry.op === 'create') frame.object = entry.object;
  else frame.id = entry.id;
  if (entry.op === 'update') frame.patch = entry.patch;
  if (entry.ifVersion !== undefined) frame.ifVersion = entry.ifVersion;
  return frame;
}
