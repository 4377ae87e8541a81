// One WebSocket at a time to one of the gateway URLs, and the rules for getting another: a fresh token for every
// attempt, the next URL in turn, capped exponential backoff with full jitter between attempts, and which endings
// are final (HTTP 400/401/403 before the upgrade, close codes 1008 and 1009) rather than a reason to retry.
// It knows nothing of documents: it hands frames up and reports the socket going up or down.

import { fullJitterDelay } from './backoff.js';
import { CanvasError } from './errors.js';

const OPEN = 1;

/** Close codes after which reconnecting would meet the same refusal. */
const FINAL_CLOSE_CODES = new Map([
  [1008, ['policy_violation', 'the gateway closed the connection (1008: policy violation or expired token)']],
  [1009, ['too_large', 'the gateway closed the connection (1009: a frame was over its size limit)']],
]);

/** HTTP answers to the upgrade that retrying would get again. */
const FINAL_STATUSES = new Map([
  [400, ['bad_request', 'the gateway refused the project id (HTTP 400)']],
  [401, ['unauthorized', 'the gateway refused the token (HTTP 401)']],
  [403, ['forbidden', 'the token grants no access to this project (HTTP 403)']],
]);

/** `ws://host:port` (or http, wss, https; an optional path prefix) without a trailing slash. */
export function normalizeBaseUrl(url) {
  if (typeof url !== 'string' || !/^(wss?|https?):\/\//i.test(url)) {
    throw new TypeError(`url must be a ws:// or wss:// gateway URL, got ${JSON.stringify(url)}`);
  }
  return url.replace(/^http/i, 'ws').replace(/\/+$/, '');
}

export class Connection {
  #urls;
  #projectId;
  #token;
  #WebSocket;
  #fetch;
  #backoff;
  #events;
  #socket = null;
  #urlIndex = -1;
  #attempt = 0;
  #retryTimer = null;
  #closed = false;
  #generation = 0;

  /**
   * @param {object} options
   * @param {string[]} options.urls
   * @param {string} options.projectId
   * @param {string | (() => string | Promise<string>) | undefined} options.token
   * @param {any} options.WebSocket
   * @param {typeof fetch | undefined} options.fetch
   * @param {{ baseMs: number, maxMs: number }} options.backoff
   * @param {{ since: () => number | null, connecting: () => void, open: () => void, frame: (text: string) => void,
   *           down: (why: string, delayMs: number) => void, fatal: (err: CanvasError) => void,
   *           problem: (err: CanvasError) => void }} options.events
   */
  constructor(options) {
    this.#urls = options.urls;
    this.#projectId = options.projectId;
    this.#token = options.token;
    this.#WebSocket = options.WebSocket;
    this.#fetch = options.fetch;
    this.#backoff = options.backoff;
    this.#events = options.events;
  }

  /** The base URL of the current (or last) attempt. */
  get url() {
    return this.#urls[Math.max(0, this.#urlIndex)];
  }

  get isOpen() {
    return this.#socket !== null && this.#socket.readyState === OPEN;
  }

  start() {
    this.#connect();
  }

  /** The document is in sync on this socket: the next drop starts the backoff from the beginning again. */
  healthy() {
    this.#attempt = 0;
  }

  send(message) {
    if (!this.isOpen) return false;
    this.#socket.send(JSON.stringify(message));
    return true;
  }

  /** Drops the current socket (it looks dead or out of sync) and connects again. */
  restart(why) {
    const socket = this.#socket;
    if (!socket) return;
    this.#detach(socket);
    closeQuietly(socket, 4000, why);
    this.#down(why);
  }

  /** Closes for good; resolves once the socket has closed (or at once when there is none). */
  close() {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    const socket = this.#socket;
    if (!socket) return Promise.resolve();
    this.#detach(socket);
    return new Promise((resolve) => {
      const done = () => resolve();
      if (typeof socket.addEventListener === 'function') socket.addEventListener('close', done);
      else socket.onclose = done;
      // A socket that never finishes its closing handshake must not hold `close()` up.
      setTimeout(done, 1000);
      closeQuietly(socket, 1000, 'client closed');
    });
  }

  async #connect() {
    if (this.#closed) return;
    const generation = ++this.#generation;
    this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
    const base = this.#urls[this.#urlIndex];
    this.#events.connecting();
    let token;
    try {
      token = await this.#currentToken();
    } catch (err) {
      if (generation !== this.#generation) return;
      this.#events.problem(new CanvasError('unauthorized', 'the token function failed', { cause: err }));
      this.#down('token function failed');
      return;
    }
    if (generation !== this.#generation || this.#closed) return;
    const query = new URLSearchParams();
    if (token) query.set('token', token);
    const since = this.#events.since();
    if (since !== null) query.set('since', String(since));
    const path = `/ws/projects/${encodeURIComponent(this.#projectId)}`;
    const search = query.toString();
    const url = `${base}${path}${search ? `?${search}` : ''}`;
    let socket;
    try {
      socket = new this.#WebSocket(url);
    } catch (err) {
      this.#events.problem(new CanvasError('unavailable', `cannot open ${base}`, { cause: err }));
      this.#down('cannot open socket');
      return;
    }
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.#events.open();
    };
    socket.onmessage = (event) => {
      this.#events.frame(typeof event.data === 'string' ? event.data : String(event.data));
    };
    socket.onerror = () => {}; // a close event always follows
    socket.onclose = (event) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      if (opened) this.#closedAfterOpen(event);
      else this.#failedUpgrade(base, token, generation);
    };
  }

  #closedAfterOpen(event) {
    const final = FINAL_CLOSE_CODES.get(event.code);
    if (final) {
      this.#stop(new CanvasError(final[0], final[1], { closeCode: event.code }));
      return;
    }
    // 1001 (gateway shutting down), 1013 (try again later), 1006 (the gateway went away) and the rest.
    this.#down(`closed ${event.code}`);
  }

  // A browser hides why an upgrade failed, so ask the objects endpoint, which applies the same checks.
  async #failedUpgrade(base, token, generation) {
    let status = null;
    if (this.#fetch) {
      try {
        const url = `${base.replace(/^ws/i, 'http')}/api/projects/${encodeURIComponent(this.#projectId)}/objects`;
        const headers = token ? { authorization: `Bearer ${token}` } : {};
        const response = await this.#fetch(url, { headers, cache: 'no-store' });
        status = response.status;
        await response.body?.cancel?.();
      } catch {
        // The gateway is unreachable: an ordinary reason to retry.
      }
    }
    if (generation !== this.#generation || this.#closed) return;
    const final = FINAL_STATUSES.get(status);
    if (final) {
      this.#stop(new CanvasError(final[0], final[1], { status }));
      return;
    }
    this.#down(status === null ? 'gateway unreachable' : `upgrade refused (HTTP ${status})`);
  }

  #down(why) {
    if (this.#closed) return;
    const delay = fullJitterDelay(this.#attempt, this.#backoff);
    this.#attempt += 1;
    this.#generation += 1;
    this.#events.down(why, delay);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #stop(err) {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#events.fatal(err);
  }

  #detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = null;
    socket.onerror = () => {};
    if (this.#socket === socket) this.#socket = null;
  }

  async #currentToken() {
    const token = typeof this.#token === 'function' ? await this.#token() : this.#token;
    if (token !== undefined && token !== null && typeof token !== 'string') {
      throw new TypeError('the token must be a string');
    }
    return token || '';
  }
}

function closeQuietly(socket, code, reason) {
  try {
    socket.close(code, reason);
  } catch {
    // Already closed or closing.
  }
}
