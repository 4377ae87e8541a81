// Types of the canvas client (hand-kept next to src/; `npm test` checks them with `tsc --noEmit`).

/** Any JSON value an object property may hold. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A canvas object as the server holds it: `version` is set by the server (absent on a pending create). */
export interface CanvasObject {
  id: string;
  type: string;
  version?: number;
  [property: string]: JsonValue | undefined;
}

/** What `create` takes: an object without `version`; `id` is generated when missing. */
export interface NewObject {
  id?: string;
  type: string;
  [property: string]: JsonValue | undefined;
}

/** An RFC 7396 merge patch: `null` removes a property; `id` and `type` cannot change. */
export type Patch = { [property: string]: JsonValue };

export type Status = 'connecting' | 'live' | 'offline' | 'closed';

/** Codes of the server's `error` frames, and the client's own. */
export type ErrorCode =
  | 'bad_request' | 'not_found' | 'conflict' | 'forbidden' | 'too_large' | 'rate_limited' | 'unavailable' | 'internal'
  | 'queue_full' | 'closed' | 'unauthorized' | 'policy_violation' | 'timeout';

export class CanvasError extends Error {
  constructor(code: ErrorCode | string, message: string,
    details?: { version?: number; status?: number; closeCode?: number; cause?: unknown });
  readonly name: 'CanvasError';
  /** The server's error code, or the client's (`queue_full`, `closed`, `unauthorized`, `policy_violation`). */
  readonly code: ErrorCode | string;
  /** The object's current version, on a `conflict` from `ifVersion`. */
  readonly version?: number;
  /** The HTTP status that refused the upgrade (400, 401, 403). */
  readonly status?: number;
  /** The close code that ended the connection for good (1008, 1009). */
  readonly closeCode?: number;
}

export interface Backoff {
  /** First retry waits up to this long (then 2×, 4×, … up to maxMs), each a uniformly random part of it. */
  baseMs: number;
  maxMs: number;
}

/** A constructor with the browser's WebSocket shape (the `ws` package's `WebSocket` fits). */
export type WebSocketConstructor = new (url: string) => {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
};

export interface ConnectOptions {
  /** A gateway base URL (`ws://host:port`), or several tried in turn on every (re)connect. */
  url: string | readonly string[];
  projectId: string;
  /** A JWT, or a function returning one, called before every (re)connect. Omit when auth is disabled. */
  token?: string | (() => string | Promise<string>);
  /** Defaults to `globalThis.WebSocket` (browsers, Node ≥ 22). */
  WebSocket?: WebSocketConstructor;
  /** Used to learn why an upgrade failed (HTTP 401/403); defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Most edits waiting for their ack (offline or in flight) before `queue_full`; default 1000. */
  maxQueue?: number;
  /** Reconnect delays; default `{ baseMs: 250, maxMs: 10000 }`. */
  backoff?: Backoff;
  /** Pause before resending an edit refused with `rate_limited` / `unavailable`; default `{ baseMs: 250, maxMs: 5000 }`. */
  retryPause?: Backoff;
  /** Sends of one edit refused with `rate_limited` / `unavailable` before it rejects; default 8. */
  maxRetries?: number;
  /** An edit unanswered for this long means the socket is dead (reconnect); default 20000. */
  ackTimeoutMs?: number;
  /** No snapshot / caught_up this long after connecting or a resync: reconnect; default 10000. */
  syncTimeoutMs?: number;
  pingIntervalMs?: number;
  /** Nothing received for this long: reconnect; default 45000. */
  idleTimeoutMs?: number;
  /** Least time between two presence frames; default 60. */
  presenceIntervalMs?: number;
}

export interface ChangeEvent {
  kind: 'created' | 'updated' | 'deleted' | 'snapshot';
  /** null for `snapshot`: the whole map was replaced, read `doc.objects`. */
  id: string | null;
  /** The object as the app now sees it (null when deleted, and for `snapshot`). */
  object: Readonly<CanvasObject> | null;
  /** The object as it was before this change (null when it was absent). */
  previous: Readonly<CanvasObject> | null;
  /** The seq of the edit, when the server's state moved (null for an optimistic local change). */
  seq: number | null;
  /** The user who made a remote edit. */
  by: string | null;
  /** A change made by this client: applied optimistically, acknowledged, or rolled back. */
  local: boolean;
  /** The server refused this client's edit and the object is back to what the server holds. */
  rolledBack?: true;
  error?: CanvasError;
}

export type PresenceEvent =
  | { clientId: string; by?: string; name?: string; x: number; y: number; left: false }
  | { clientId: string; left: true };

export interface Presence {
  x: number;
  y: number;
  name?: string;
}

export interface EditResult {
  id: string;
  version: number;
  seq: number;
}

export interface DeleteResult {
  id: string;
  seq: number;
}

/** How the document was brought up to date on a (re)connect or resync. */
export type SyncEvent =
  | { via: 'snapshot'; seq: number }
  /** Only the edits missed since the last seq it had (`missed` of them), then `caught_up`. */
  | { via: 'resume'; seq: number; missed: number };

export interface EventMap {
  change: ChangeEvent;
  sync: SyncEvent;
  /** The highest seq saved durably rose to this. */
  saved: number;
  status: Status;
  /** The number of edits not acknowledged yet changed (for a "Saving…" indicator). */
  pending: number;
  presence: PresenceEvent;
  error: CanvasError;
}

export class CanvasDocument {
  constructor(options: ConnectOptions);
  /** Resolves once the first snapshot (or caught_up) is applied. */
  readonly ready: Promise<CanvasDocument>;
  /** id → object, with this client's pending edits applied optimistically. Do not mutate. */
  readonly objects: ReadonlyMap<string, Readonly<CanvasObject>>;
  /** id → object as the server holds it at `seq`, without this client's pending edits. */
  readonly serverObjects: ReadonlyMap<string, Readonly<CanvasObject>>;
  /** The project's seq that `serverObjects` reflects. */
  readonly seq: number;
  /** Highest seq whose edits are all saved; null until the server says. */
  readonly savedSeq: number | null;
  /** This connection's id as others see it in presence; null before the first snapshot. */
  readonly clientId: string | null;
  readonly status: Status;
  /** Edits not acknowledged yet. */
  readonly pendingCount: number;
  /** Seq of this client's latest acknowledged edit (0 before any). */
  readonly lastAckedSeq: number;
  /** The gateway URL of the current (or last) connection. */
  readonly url: string;
  create(object: NewObject): Promise<EditResult>;
  update(id: string, patch: Patch, options?: { ifVersion?: number }): Promise<EditResult>;
  delete(id: string, options?: { ifVersion?: number }): Promise<DeleteResult>;
  /** Returns a function that removes the listener. */
  on<E extends keyof EventMap>(event: E, listener: (value: EventMap[E]) => void): () => void;
  setPresence(presence: Presence): void;
  close(): Promise<void>;
}

export const DEFAULTS: Readonly<Required<Omit<ConnectOptions, 'url' | 'projectId' | 'token' | 'WebSocket' | 'fetch'>>>;

/** A random object id (17 characters of `[A-Za-z0-9_-]`), as `create` makes when the object has none. */
export function newObjectId(): string;

/** Resolves with the document once its first snapshot (or caught_up) is applied. */
export function connect(options: ConnectOptions): Promise<CanvasDocument>;

/** A document that starts connecting at once, before it is live. */
export function createDocument(options: ConnectOptions): CanvasDocument;
