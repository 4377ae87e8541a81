// Reconnect delays: capped exponential backoff with full jitter (a uniformly random delay between 0 and the
// capped exponential), so that thousands of clients dropped by one gateway do not come back in lockstep.

export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 250, maxMs: 10_000 });

/**
 * @param {number} attempt 0 for the first retry
 * @param {{ baseMs: number, maxMs: number }} backoff
 * @param {() => number} [random] in [0, 1)
 */
export function fullJitterDelay(attempt, backoff, random = Math.random) {
  const ceiling = Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
