// A live copy of one project's objects: the server's state at `seq` (what acks, broadcasts, snapshots and resumes
// say) with this client's unacknowledged edits applied on top, kept in order by the protocol's seq rules. This is
// where a gap in seq turns into a resync, an edit refused by the server is rolled back, an edit whose socket died
// is settled against what the server holds, and the app hears about each change exactly once.

import { DEFAULT_BACKOFF, fullJitterDelay } from './backoff.js';
import { Connection, normalizeBaseUrl } from './connection.js';
import { CanvasError, fromErrorFrame } from './errors.js';
import { Emitter } from './emitter.js';
import { isPlainObject, jsonEqual, patchObject } from './merge-patch.js';
import { editFrame, IN_DOUBT, Outbox, QUEUED, SENT } from './outbox.js';

export const DEFAULTS = Object.freeze({
  maxQueue: 1000,
  backoff: DEFAULT_BACKOFF,
  /** Pause before an edit refused with `rate_limited` or `unavailable` is sent again (doubling up to maxMs). */
  retryPause: Object.freeze({ baseMs: 250, maxMs: 5000 }),
  /** Sends of one edit refused with `rate_limited` or `unavailable` before it is given up. */
  maxRetries: 8,
  /** An edit not answered by then means the socket is dead. */
  ackTimeoutMs: 20_000,
  /** A snapshot (or caught_up) not received by then after connecting or a resync: reconnect. */
  syncTimeoutMs: 10_000,
  pingIntervalMs: 15_000,
  /** Nothing received for this long on an open socket: reconnect. */
  idleTimeoutMs: 45_000,
  /** The gateway accepts 20 presence updates a second; the latest one is sent at most this often. */
  presenceIntervalMs: 60,
});

const RETRIED_CODES = new Set(['rate_limited', 'unavailable']);
const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
const TICK_MS = 1000;

export class CanvasDocument {
  #emitter = new Emitter();
  #options;
  #connection;
  #outbox;
  /** The server's objects as of `#seq`. */
  #confirmed = new Map();
  /** `#confirmed` with the outbox applied: what the app sees. */
  #view = new Map();
  #seq = 0;
  #savedSeq = null;
  #clientId = null;
  #status = 'connecting';
  #lastAckedSeq = 0;
  /** A snapshot has been applied, so a reconnect can ask to resume from `#seq`. */
  #hasState = false;
  /** The current socket has delivered its first snapshot or caught_up: edits may be sent on it. */
  #socketSynced = false;
  /** Waiting for a snapshot or caught_up: `{ reqId, buffer, initial, timer }`; sequenced frames wait in buffer. */
  #sync = null;
  /** Replaying a buffer under a new snapshot: one `snapshot` change event instead of one per object. */
  #bulk = false;
  #reqCounter = 0;
  #pauseUntil = 0;
  #pauseLevel = 0;
  #pauseTimer = null;
  #presence = null;
  #presenceSentAt = -Infinity;
  #presenceTimer = null;
  #lastReceivedAt = 0;
  #lastPingAt = 0;
  #tick = null;
  #ready;
  #settleReady;
  #closing = null;

  /** @param {import('../index.js').ConnectOptions} options */
  constructor(options) {
    if (!isPlainObject(options)) throw new TypeError('connect needs an options object');
    const { url, projectId, token } = options;
    const urls = (Array.isArray(url) ? url : [url]).map(normalizeBaseUrl);
    if (urls.length === 0) throw new TypeError('url must name at least one gateway');
    if (typeof projectId !== 'string' || projectId === '') throw new TypeError('projectId must be a non-empty string');
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== 'function') {
      throw new TypeError('no WebSocket implementation: pass one as the WebSocket option (e.g. the ws package)');
    }
    this.#options = {
      ...DEFAULTS,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
    };
    this.#outbox = new Outbox(this.#options.maxQueue);
    this.#ready = new Promise((resolve, reject) => {
      this.#settleReady = { resolve, reject };
    });
    this.#ready.catch(() => {}); // a document nobody awaits must not raise an unhandled rejection
    this.#connection = new Connection({
      urls,
      projectId,
      token,
      WebSocket: WebSocketImpl,
      fetch: options.fetch ?? globalThis.fetch?.bind(globalThis),
      backoff: this.#options.backoff,
      events: {
        since: () => (this.#hasState ? this.#seq : null),
        connecting: () => this.#setStatus('connecting'),
        open: () => this.#onOpen(),
        frame: (text) => this.#onFrame(text),
        down: () => this.#onDown(),
        fatal: (err) => this.#onFatal(err),
        problem: (err) => this.#emitter.emit('error', err),
      },
    });
    this.#tick = setInterval(() => this.#onTick(), TICK_MS);
    this.#connection.start();
  }

  /** Resolves with the document once its first snapshot (or caught_up) is applied. */
  get ready() {
    return this.#ready.then(() => this);
  }

  /** id -> object, with this client's pending edits applied (a pending create has no `version` yet). */
  get objects() {
    return this.#view;
  }

  /** id -> object as the server holds it at `seq`, without this client's pending edits. */
  get serverObjects() {
    return this.#confirmed;
  }

  get seq() {
    return this.#seq;
  }

  /** Highest seq whose edits are all saved durably; null while the server has not said. */
  get savedSeq() {
    return this.#savedSeq;
  }

  get clientId() {
    return this.#clientId;
  }

  get status() {
    return this.#status;
  }

  /** Edits made here and not acknowledged yet (queued, in flight, or being settled after a reconnect). */
  get pendingCount() {
    return this.#outbox.size;
  }

  /** Seq of the latest edit of this client that the server acknowledged (0 before any). */
  get lastAckedSeq() {
    return this.#lastAckedSeq;
  }

  /** The gateway URL of the current (or last) connection. */
  get url() {
    return this.#connection.url;
  }

  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  create(object) {
    if (!isPlainObject(object)) return Promise.reject(new CanvasError('bad_request', 'an object must be a JSON object'));
    const id = object.id ?? newObjectId();
    const { version: _serverOwned, ...props } = object;
    return this.#enqueue({ op: 'create', id, object: { ...structuredClone(props), id } });
  }

  update(id, patch, { ifVersion } = {}) {
    if (!isPlainObject(patch)) return Promise.reject(new CanvasError('bad_request', 'a patch must be a JSON object'));
    return this.#enqueue({ op: 'update', id, patch: structuredClone(patch), ifVersion });
  }

  delete(id, { ifVersion } = {}) {
    return this.#enqueue({ op: 'delete', id, ifVersion });
  }

  /** This client's cursor for the others; the latest value is sent (throttled) and sent again after a reconnect. */
  setPresence(presence) {
    if (!isPlainObject(presence)) throw new TypeError('presence must be an object { x, y, name? }');
    this.#presence = { x: presence.x, y: presence.y, ...(presence.name !== undefined ? { name: presence.name } : {}) };
    this.#sendPresence();
  }

  /** Closes the socket; edits not acknowledged yet reject with code `closed`. */
  close() {
    if (this.#closing) return this.#closing;
    const err = new CanvasError('closed', 'the document was closed');
    this.#shutDown(err);
    this.#closing = this.#connection.close();
    return this.#closing;
  }

  // ------------------------------------------------------------------ local edits

  #enqueue(edit) {
    if (this.#status === 'closed') return Promise.reject(new CanvasError('closed', 'the document is closed'));
    if (typeof edit.id !== 'string' || edit.id === '') {
      return Promise.reject(new CanvasError('bad_request', 'an object id must be a non-empty string'));
    }
    if (this.#outbox.isFull) {
      return Promise.reject(new CanvasError('queue_full',
        `${this.#outbox.size} edits are waiting for the server (maxQueue ${this.#options.maxQueue})`));
    }
    return new Promise((resolve, reject) => {
      this.#outbox.add({ ...edit, reqId: this.#nextReqId(), state: QUEUED, sentAt: 0, retries: 0, resolve, reject });
      this.#refresh(edit.id, { seq: null, by: null, local: true });
      this.#pendingChanged();
      this.#flush();
    });
  }

  /**
   * Sends what waits, oldest first. Edits of different objects are pipelined; an object's next edit waits for
   * the answer to its previous one, so a refused-and-retried edit (`rate_limited`) can never land after a later
   * edit of the same object, and at most one edit per object is ever in doubt.
   */
  #flush() {
    if (!this.#socketSynced || Date.now() < this.#pauseUntil) return;
    const busy = new Set();
    for (const entry of this.#outbox.all()) {
      if (entry.state !== QUEUED || busy.has(entry.id)) {
        busy.add(entry.id);
        continue;
      }
      if (!this.#connection.send(editFrame(entry))) return;
      entry.state = SENT;
      entry.sentAt = Date.now();
      busy.add(entry.id);
    }
  }

  /** The server asked to slow down (or was briefly unavailable): hold every send for a growing pause. */
  #pause() {
    const ceiling = Math.min(this.#options.retryPause.maxMs, this.#options.retryPause.baseMs * 2 ** this.#pauseLevel);
    this.#pauseLevel = Math.min(this.#pauseLevel + 1, 20);
    const delay = ceiling / 2 + fullJitterDelay(0, { baseMs: ceiling / 2, maxMs: ceiling / 2 });
    this.#pauseUntil = Math.max(this.#pauseUntil, Date.now() + delay);
    clearTimeout(this.#pauseTimer);
    // The pause is over when its timer fires, whatever Date.now() says then: Node may fire a timer a fraction of a
    // millisecond before the wall clock reaches it, and a flush still held by the pause would then never come.
    this.#pauseTimer = setTimeout(() => {
      this.#pauseUntil = 0;
      this.#flush();
    }, this.#pauseUntil - Date.now());
  }

  // ------------------------------------------------------------------ connection events

  #onOpen() {
    this.#lastReceivedAt = Date.now();
    this.#socketSynced = false;
    this.#beginSync(null, true);
  }

  #onDown() {
    this.#endSync();
    this.#socketSynced = false;
    this.#outbox.markSentInDoubt();
    clearTimeout(this.#presenceTimer);
    this.#setStatus('offline');
  }

  #onFatal(err) {
    this.#shutDown(err);
    this.#emitter.emit('error', err);
  }

  #shutDown(err) {
    clearInterval(this.#tick);
    clearTimeout(this.#pauseTimer);
    clearTimeout(this.#presenceTimer);
    this.#endSync();
    this.#socketSynced = false;
    this.#settleReady.reject(err);
    const dropped = this.#outbox.drain();
    for (const entry of dropped) {
      this.#refresh(entry.id, { seq: null, by: null, local: true, rolledBack: true, error: err });
      entry.reject(err);
    }
    if (dropped.length) this.#pendingChanged();
    this.#setStatus('closed');
  }

  #onTick() {
    if (!this.#connection.isOpen) return;
    const now = Date.now();
    if (now - this.#lastReceivedAt > this.#options.idleTimeoutMs) {
      this.#connection.restart('nothing received');
    } else if (now - this.#outbox.oldestSentAt() > this.#options.ackTimeoutMs) {
      this.#connection.restart('edit not acknowledged');
    } else if (now - this.#lastPingAt > this.#options.pingIntervalMs) {
      this.#lastPingAt = now;
      this.#connection.send({ type: 'ping', reqId: this.#nextReqId() });
    }
  }

  // ------------------------------------------------------------------ incoming frames

  #onFrame(text) {
    this.#lastReceivedAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!isPlainObject(frame)) return;
    switch (frame.type) {
      case 'snapshot':
        this.#onSnapshot(frame);
        break;
      case 'caught_up':
        this.#onCaughtUp(frame);
        break;
      case 'created':
      case 'updated':
      case 'deleted':
      case 'ack':
        this.#onSequenced(frame);
        break;
      case 'error':
        this.#onError(frame);
        break;
      case 'unknown_outcome':
        this.#onUnknownOutcome(frame);
        break;
      case 'saved':
        this.#noteSaved(frame.seq);
        break;
      case 'presence':
        if (typeof frame.clientId === 'string' && frame.clientId !== this.#clientId) {
          const { clientId, by, name, x, y } = frame;
          this.#emitter.emit('presence', { clientId, by, name, x, y, left: false });
        }
        break;
      case 'presence_left':
        this.#emitter.emit('presence', { clientId: frame.clientId, left: true });
        break;
      default:
        break; // pong, and message types this version does not know
    }
  }

  /** A frame carrying seq: an ack of ours or a broadcast of someone's edit. */
  #onSequenced(frame) {
    if (typeof frame.seq !== 'number') return;
    if (this.#sync) {
      this.#sync.buffer.push(frame);
      return;
    }
    if (frame.seq <= this.#seq) {
      // The state already holds this edit (a snapshot or resume was newer): settle an ack, apply nothing.
      if (frame.type === 'ack') this.#settleAck(frame, false);
      return;
    }
    if (frame.seq !== this.#seq + 1) {
      this.#beginSync(this.#sendResync(), false);
      this.#sync?.buffer.push(frame);
      return;
    }
    this.#seq = frame.seq;
    if (frame.type === 'ack') this.#settleAck(frame, true);
    else this.#applyBroadcast(frame);
  }

  #applyBroadcast(frame) {
    const meta = { seq: frame.seq, by: typeof frame.by === 'string' ? frame.by : null, local: false };
    if (frame.type === 'created') {
      if (!isPlainObject(frame.object) || typeof frame.object.id !== 'string') return;
      this.#confirmed.set(frame.object.id, frame.object);
      this.#refresh(frame.object.id, meta);
    } else if (frame.type === 'updated') {
      const current = this.#confirmed.get(frame.id);
      if (!current) {
        this.#resyncFromScratch();
        return;
      }
      this.#confirmed.set(frame.id, { ...patchObject(current, frame.patch), version: frame.version });
      this.#refresh(frame.id, meta);
    } else {
      this.#confirmed.delete(frame.id);
      this.#refresh(frame.id, meta);
    }
  }

  /** Our edit's ack. `apply`: the state does not hold it yet (its seq is the next one). */
  #settleAck(frame, apply) {
    const entry = this.#outbox.take(frame.reqId);
    if (!entry) {
      // An ack we cannot place would leave the state without its edit.
      if (apply) this.#resyncFromScratch();
      return;
    }
    if (apply) {
      if (entry.op === 'create') {
        this.#confirmed.set(entry.id, { ...entry.object, version: frame.version });
      } else if (entry.op === 'update') {
        const current = this.#confirmed.get(entry.id);
        if (current) this.#confirmed.set(entry.id, { ...patchObject(current, entry.patch), version: frame.version });
        else this.#resyncFromScratch();
      } else {
        this.#confirmed.delete(entry.id);
      }
    }
    this.#lastAckedSeq = Math.max(this.#lastAckedSeq, frame.seq);
    this.#pauseLevel = 0;
    this.#refresh(entry.id, { seq: frame.seq, by: null, local: true });
    entry.resolve(entry.op === 'delete'
      ? { id: entry.id, seq: frame.seq }
      : { id: entry.id, version: frame.version, seq: frame.seq });
    this.#pendingChanged();
    this.#flush();
  }

  /**
   * The server sent the edit on but lost the reply: it may or may not be applied. The edit is in doubt, like one
   * sent on a socket that died, and the fresh snapshot the server sends next decides it (a snapshot that never
   * comes restarts the connection, which decides it too).
   */
  #onUnknownOutcome(frame) {
    const entry = this.#outbox.all().find((e) => e.reqId === frame.reqId && e.state === SENT);
    if (!entry) return;
    entry.state = IN_DOUBT;
    this.#beginSync(null, false);
  }

  #onError(frame) {
    const err = fromErrorFrame(frame);
    if (this.#sync && frame.reqId !== undefined && frame.reqId === this.#sync.reqId) {
      if (RETRIED_CODES.has(err.code)) {
        const sync = this.#sync;
        setTimeout(() => {
          if (this.#sync === sync) sync.reqId = this.#sendResync();
        }, this.#options.retryPause.baseMs * 4);
      } else {
        this.#connection.restart('resync refused');
      }
      return;
    }
    const entry = frame.reqId === undefined ? null : this.#outbox.all().find((e) => e.reqId === frame.reqId);
    if (!entry) {
      this.#emitter.emit('error', err);
      return;
    }
    if (RETRIED_CODES.has(err.code) && entry.retries < this.#options.maxRetries) {
      entry.retries += 1;
      entry.state = QUEUED;
      this.#pause();
      return;
    }
    this.#outbox.take(entry.reqId);
    this.#refresh(entry.id, { seq: null, by: null, local: true, rolledBack: true, error: err });
    entry.reject(err);
    this.#pendingChanged();
    this.#flush();
  }

  #noteSaved(seq) {
    if (typeof seq !== 'number' || (this.#savedSeq !== null && seq <= this.#savedSeq)) return;
    this.#savedSeq = seq;
    this.#emitter.emit('saved', seq);
  }

  // ------------------------------------------------------------------ snapshot, resume and resync

  /** Starts waiting for a snapshot or caught_up (after connecting, `initial`; or after a resync request). */
  #beginSync(reqId, initial) {
    if (this.#sync || !this.#connection.isOpen) return;
    const timer = setTimeout(() => this.#connection.restart('no snapshot'), this.#options.syncTimeoutMs);
    this.#sync = { reqId, buffer: [], initial, timer };
  }

  #endSync() {
    const sync = this.#sync;
    if (sync) clearTimeout(sync.timer);
    this.#sync = null;
    return sync;
  }

  /** Asks to resume from `#seq` (a server that cannot, or does not know resume, sends a snapshot instead). */
  #sendResync() {
    const reqId = this.#nextReqId();
    const frame = { type: 'resync', reqId };
    if (this.#hasState) frame.since = this.#seq;
    this.#connection.send(frame);
    return reqId;
  }

  /** The state cannot be trusted from `#seq` on: ask for a full snapshot. */
  #resyncFromScratch() {
    this.#hasState = false;
    if (!this.#sync) this.#beginSync(this.#sendResync(), false);
  }

  #onSnapshot(frame) {
    this.#confirmed = new Map();
    for (const object of Array.isArray(frame.objects) ? frame.objects : []) {
      if (isPlainObject(object) && typeof object.id === 'string') this.#confirmed.set(object.id, object);
    }
    if (typeof frame.seq === 'number') this.#seq = frame.seq;
    if (typeof frame.clientId === 'string') this.#clientId = frame.clientId;
    this.#hasState = true;
    // Any snapshot is the whole state, whether asked for or sent because the gateway lost its subscription.
    const sync = this.#endSync();
    this.#bulk = true;
    try {
      if (sync) this.#replay(sync.buffer);
    } finally {
      this.#bulk = false;
    }
    this.#rebuildView();
    this.#emitter.emit('change', {
      kind: 'snapshot', id: null, object: null, previous: null, seq: this.#seq, by: null, local: false,
    });
    this.#noteSaved(frame.savedSeq);
    this.#emitter.emit('sync', { via: 'snapshot', seq: this.#seq });
    this.#synced(sync ? sync.initial : !this.#socketSynced);
  }

  #onCaughtUp(frame) {
    const sync = this.#sync;
    if (!sync || (sync.reqId !== null && frame.reqId !== sync.reqId)) return;
    if (typeof frame.clientId === 'string') this.#clientId = frame.clientId;
    this.#endSync();
    const before = this.#seq;
    this.#replay(sync.buffer);
    this.#emitter.emit('sync', { via: 'resume', seq: this.#seq, missed: this.#seq - before });
    if (!this.#sync && typeof frame.seq === 'number' && this.#seq < frame.seq) {
      this.#beginSync(this.#sendResync(), false); // the replay did not reach the seq the server named
    }
    this.#noteSaved(frame.savedSeq);
    if (this.#sync) {
      this.#sync.initial ||= sync.initial;
      return;
    }
    this.#synced(sync.initial);
  }

  /** Frames that waited for a snapshot or caught_up, in seq order (a resend and a replay may repeat a seq). */
  #replay(buffer) {
    buffer.sort((a, b) => a.seq - b.seq);
    for (const frame of buffer) this.#onSequenced(frame);
  }

  /** The state is whole again. On a new socket: settle edits in doubt, go live, send what waited. */
  #synced(initial) {
    if (!initial) {
      this.#settleInDoubt();
      this.#flush();
      return;
    }
    this.#socketSynced = true;
    this.#connection.healthy();
    this.#settleInDoubt();
    this.#setStatus('live');
    this.#settleReady.resolve();
    this.#presenceSentAt = -Infinity;
    this.#sendPresence();
    this.#flush();
  }

  /** Decides every edit in doubt from the state just made whole: applied ones resolve, the rest are sent again. */
  #settleInDoubt() {
    const settled = this.#outbox.reconcile(this.#confirmed);
    for (const entry of settled) {
      const current = this.#confirmed.get(entry.id);
      this.#refresh(entry.id, { seq: this.#seq, by: null, local: true });
      entry.resolve(entry.op === 'delete' || !current
        ? { id: entry.id, seq: this.#seq }
        : { id: entry.id, version: current.version, seq: this.#seq });
    }
    if (settled.length) this.#pendingChanged();
  }

  // ------------------------------------------------------------------ the view

  /** Recomputes one object of the view and tells the app when it changed. */
  #refresh(id, meta) {
    const before = this.#view.get(id);
    let after = this.#confirmed.get(id);
    for (const entry of this.#outbox.forObject(id)) after = applyLocal(after, entry);
    if (after === undefined) this.#view.delete(id);
    else this.#view.set(id, after);
    if (this.#bulk || (before === undefined && after === undefined)) return;
    if (before !== undefined && after !== undefined && jsonEqual(before, after)) return;
    const kind = before === undefined ? 'created' : after === undefined ? 'deleted' : 'updated';
    this.#emitter.emit('change', {
      kind,
      id,
      object: after ?? null,
      previous: before ?? null,
      seq: meta.seq,
      by: meta.by,
      local: meta.local,
      ...(meta.rolledBack ? { rolledBack: true, error: meta.error } : {}),
    });
  }

  #rebuildView() {
    const view = new Map(this.#confirmed);
    for (const entry of this.#outbox.all()) {
      const next = applyLocal(view.get(entry.id), entry);
      if (next === undefined) view.delete(entry.id);
      else view.set(entry.id, next);
    }
    this.#view = view;
  }

  // ------------------------------------------------------------------ presence and status

  #sendPresence() {
    clearTimeout(this.#presenceTimer);
    this.#presenceTimer = null;
    if (!this.#presence || !this.#socketSynced) return;
    const wait = this.#options.presenceIntervalMs - (Date.now() - this.#presenceSentAt);
    if (wait > 0) {
      this.#presenceTimer = setTimeout(() => this.#sendPresence(), wait);
      return;
    }
    if (this.#connection.send({ type: 'presence', ...this.#presence })) this.#presenceSentAt = Date.now();
  }

  #pendingChanged() {
    this.#emitter.emit('pending', this.#outbox.size);
  }

  #setStatus(status) {
    if (this.#status === status || this.#status === 'closed') return;
    this.#status = status;
    this.#emitter.emit('status', status);
  }

  #nextReqId() {
    this.#reqCounter += 1;
    return `c${this.#reqCounter}`;
  }
}

function applyLocal(object, entry) {
  if (entry.op === 'create') return { ...entry.object };
  if (entry.op === 'update') return object === undefined ? undefined : patchObject(object, entry.patch);
  return undefined;
}

/** A random object id (17 characters of `[A-Za-z0-9_-]`), what `create` uses when the object has none. */
export function newObjectId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  let id = 'o';
  for (const b of bytes) id += ID_ALPHABET[b & 63];
  return id;
}
