// The package's entry point: `connect` to a project's live document, or `createDocument` to hold one before it
// is live (for a page that shows "connecting…"). See the README for the rules behind them.

import { CanvasDocument } from './document.js';

export { CanvasDocument, DEFAULTS, newObjectId } from './document.js';
export { CanvasError } from './errors.js';

/** A document that starts connecting at once; `await doc.ready` for its first snapshot. */
export function createDocument(options) {
  return new CanvasDocument(options);
}

/** Resolves once the document's first snapshot (or caught_up) is applied; rejects if it can never connect. */
export async function connect(options) {
  const doc = new CanvasDocument(options);
  try {
    return await doc.ready;
  } catch (err) {
    await doc.close();
    throw err;
  }
}
