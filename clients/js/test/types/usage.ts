// Compiled (never run) by types.test.mjs: the declarations describe the API as the README shows it, and
// reject what the API does not allow.
import { CanvasDocument, CanvasError, connect, createDocument, DEFAULTS, newObjectId } from 'canvas-client';
import type { ChangeEvent, ConnectOptions, EditResult, PresenceEvent, Status } from 'canvas-client';

declare const SomeWebSocket: ConnectOptions['WebSocket'];

export async function quickStart(): Promise<void> {
  const doc = await connect({
    url: ['ws://127.0.0.1:8080', 'ws://127.0.0.1:8081'],
    projectId: 'p1',
    token: async () => 'jwt',
    WebSocket: SomeWebSocket,
    maxQueue: 100,
  });
  const created: EditResult = await doc.create({ type: 'rect', x: 1, style: { fill: '#f00' }, tags: ['a'] });
  const updated = await doc.update(created.id, { x: 2, style: null }, { ifVersion: created.version });
  const deleted: { id: string; seq: number } = await doc.delete(updated.id, { ifVersion: updated.version });
  const seqs: number[] = [doc.seq, deleted.seq, doc.lastAckedSeq, doc.pendingCount];
  const saved: number | null = doc.savedSeq;
  const clientId: string | null = doc.clientId;
  const status: Status = doc.status;
  const version: number | undefined = doc.objects.get('o1')?.version;
  const off = doc.on('change', (e: ChangeEvent) => {
    if (e.kind === 'snapshot') return;
    const id: string | null = e.id;
    if (e.rolledBack) console.log(id, e.error?.code);
  });
  off();
  doc.on('saved', (seq) => seq.toFixed());
  doc.on('status', (s) => s.toUpperCase());
  doc.on('pending', (count) => count + doc.serverObjects.size);
  doc.on('presence', (p: PresenceEvent) => (p.left ? p.clientId : p.x + p.y));
  doc.on('error', (err) => err.code);
  doc.setPresence({ x: 1, y: 2, name: 'Ada' });
  await doc.close();
  console.log(seqs, saved, clientId, status, version, DEFAULTS.maxQueue);

  const later: CanvasDocument = createDocument({ url: 'ws://127.0.0.1:8080', projectId: 'p1', token: 'jwt' });
  await later.ready;
  try {
    await later.create({ id: newObjectId(), type: 'rect' });
  } catch (err) {
    if (err instanceof CanvasError && err.code === 'conflict') console.log(err.version, err.status, err.closeCode);
  }

  // @ts-expect-error the type is required
  await doc.create({ x: 1 });
  // @ts-expect-error objects is read only
  doc.objects.set('x', { id: 'x', type: 'rect' });
  // @ts-expect-error no such event
  doc.on('snapshot', () => {});
  // @ts-expect-error a patch is an object
  await doc.update('x', 5);
  // @ts-expect-error projectId is required
  await connect({ url: 'ws://127.0.0.1:8080' });
  // @ts-expect-error the status is not writable
  doc.status = 'live';
}
