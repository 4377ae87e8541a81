// WebSocket classes for the tests: the real `ws` client, wrapped so that a test can see the URLs and frames a
// document uses, lose chosen incoming frames (as an at-most-once fan-out can), or cut the connection.

import WebSocket from 'ws';

export { WebSocket };

/**
 * @param {{ drop?: (frame: any) => boolean, afterDrop?: (socket: any) => void }} [options]
 *   drop: incoming frames it returns true for never reach the document; afterDrop: called with the socket after
 *   each dropped frame (e.g. to cut the connection).
 */
export function tappedWebSocket({ drop, afterDrop } = {}) {
  const tap = { urls: [], received: [], sent: [], sentOn: [], sockets: [] };
  tap.WebSocket = class TappedWebSocket {
    constructor(url) {
      tap.urls.push(url);
      tap.sockets.push(this);
      this.inner = new WebSocket(url);
      this.onopen = this.onmessage = this.onclose = null;
      this.onerror = null;
      this.inner.onopen = (event) => this.onopen?.(event);
      this.inner.onerror = (event) => this.onerror?.(event);
      this.inner.onclose = (event) => this.onclose?.(event);
      this.inner.onmessage = (event) => {
        const frame = JSON.parse(String(event.data));
        tap.received.push(frame);
        if (drop?.(frame)) {
          afterDrop?.(this);
          return;
        }
        this.onmessage?.(event);
      };
    }

    get readyState() {
      return this.inner.readyState;
    }

    send(data) {
      tap.sent.push(JSON.parse(data));
      tap.sentOn.push(tap.sockets.indexOf(this));
      this.inner.send(data);
    }

    close(code, reason) {
      this.inner.close(code, reason);
    }

    addEventListener(type, listener) {
      this.inner.addEventListener(type, listener);
    }

    /** Drops the TCP connection without a closing handshake, as a dead network does. */
    cut() {
      this.inner.terminate();
    }
  };
  return tap;
}
