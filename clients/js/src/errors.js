// The one error type the library rejects with: the server's error code (or a client-side one) kept as data, so
// that callers branch on `code`, never on message text.

/**
 * Codes the server sends in `error` frames, plus the client's own:
 * `queue_full` (the offline queue is at its bound), `closed` (the document was closed, or stopped for a
 * reason in `cause`), `unauthorized` (HTTP 401), `policy_violation` (close 1008), `timeout`.
 */
export class CanvasError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{ version?: number, status?: number, closeCode?: number, cause?: unknown }} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CanvasError';
    this.code = code;
    if (details.version !== undefined) this.version = details.version;
    if (details.status !== undefined) this.status = details.status;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
  }
}

/** @param {Record<string, unknown>} frame an `error` frame */
export function fromErrorFrame(frame) {
  const code = typeof frame.code === 'string' ? frame.code : 'internal';
  const message = typeof frame.message === 'string' ? frame.message : code;
  const version = typeof frame.version === 'number' ? frame.version : undefined;
  return new CanvasError(code, message, { version });
}
