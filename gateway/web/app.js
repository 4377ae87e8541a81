// Collaborative canvas demo page. Plain ES modules, no build step, no external resources. The shared state —
// the connection, seq ordering, resync and resume, the offline queue and optimistic edits with rollback —
// is the canvas client library (clients/js), which the gateway serves at /client/; this file is the drawing UI.
import { createDocument, newObjectId as randomId } from '/client/index.js';

// ---------------------------------------------------------------- constants
const ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const PRESENCE_HEARTBEAT_MS = 4000;   // re-announce an idle cursor so peers keep it
const CURSOR_TTL_MS = 10000;          // drop a peer cursor not updated for 10 s
const DRAG_UPDATE_INTERVAL_MS = 150;  // throttled `update` frames while dragging
const DEFAULT_SIZE = { width: 120, height: 80 };
const TEXT_FONT_SIZE = 24;
const FONT_STACK = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif';
const NO_OBJECTS = new Map();

// ---------------------------------------------------------------- DOM
const $ = (id) => document.getElementById(id);
const canvas = $('canvas');
const ctx = canvas.getContext('2d');
const projectInput = $('project-input');
const nameInput = $('name-input');
const joinForm = $('join-form');
const colorInput = $('color-input');
const deleteBtn = $('delete-btn');
const statusBadge = $('status');
const statusText = $('status-text');
const saveState = $('save-state');
const peopleList = $('people-list');
const hint = $('hint');
const toolButtons = Array.from(document.querySelectorAll('[data-tool]'));

// ---------------------------------------------------------------- state
const params = new URLSearchParams(location.search);
const token = params.get('token') || '';

const state = {
  projectId: validId(params.get('project')) ? params.get('project') : 'demo',
  name: (params.get('name') || '').trim().slice(0, 40) || `guest-${1 + Math.floor(Math.random() * 999)}`,
  doc: null,                     // the live document of the project (canvas client)
  status: 'connecting',          // connecting | live | reconnecting | error
  statusText: 'connecting',
  saveState: '',                 // saving | saved | sent ('' before any edit)
  cursors: new Map(),            // clientId -> {clientId, name, x, y, by, lastSeen}
  selectedId: null,
  tool: 'select',
  color: colorInput.value,
  everLive: false,
};

// Interaction state (not part of the shared state).
let drag = null;    // {id, startX, startY, ox, oy, x, y, moved, lastSentAt, sentX, sentY}
let draft = null;   // {type, x0, y0, x1, y1}
let textAt = null;  // {x, y}
let pointer = null; // last pointer position over the canvas (canvas coordinates)

function validId(s) { return typeof s === 'string' && ID_RE.test(s); }

/** What is drawn: the server's objects with our pending edits applied. */
function view() { return state.doc ? state.doc.objects : NO_OBJECTS; }

// ---------------------------------------------------------------- test / debug hook
window.canvasApp = {
  get objects() { return Object.fromEntries(view()); },
  get objectsMap() { return view(); },
  get serverObjects() { return Object.fromEntries(state.doc ? state.doc.serverObjects : NO_OBJECTS); },
  get seq() { return state.doc ? state.doc.seq : 0; },
  get savedSeq() { return state.doc ? state.doc.savedSeq : null; },
  get saveState() { return state.saveState; },
  get status() { return state.status; },
  get statusText() { return state.statusText; },
  get projectId() { return state.projectId; },
  get clientId() { return state.doc ? state.doc.clientId : null; },
  get name() { return state.name; },
  get pendingCount() { return state.doc ? state.doc.pendingCount : 0; },
  get cursors() {
    const out = {};
    for (const [k, c] of state.cursors) out[k] = { ...c };
    return out;
  },
  get selectedId() { return state.selectedId; },
  get tool() { return state.tool; },
  get document() { return state.doc; },
};

// ---------------------------------------------------------------- the document
function setStatus(kind, text) {
  state.status = kind;
  state.statusText = text || kind;
  statusBadge.className = `badge ${kind}`;
  statusText.textContent = kind;
  statusBadge.title = state.statusText;
  updateControls();
  requestRender();
}

function socketBase() {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}`;
}

/** How the last (re)connect caught up: the missed edits only (resume) or the whole canvas (snapshot). */
function onDocumentSync(doc, sync) {
  if (doc !== state.doc) return;
  state.lastSyncVia = sync.via === 'resume' ? 'resumed' : 'snapshot';
  state.lastSync = sync.via === 'resume'
    ? `resumed at seq ${sync.seq} (${sync.missed} missed edit${sync.missed === 1 ? '' : 's'}, no reload)`
    : `full snapshot at seq ${sync.seq}`;
  if (state.status === 'live') showLive(doc);
}

/** The live badge, with how the last (re)connect caught up (its tooltip has the details). */
function showLive(doc) {
  const via = state.lastSync ? ` · ${state.lastSync}` : '';
  setStatus('live', `live · ${doc.url.replace(/^wss?:\/\//, '')}${via}`);
  if (state.lastSyncVia) statusText.textContent = `live · ${state.lastSyncVia}`;
}

function onDocumentStatus(doc, status) {
  if (doc !== state.doc) return;
  if (status === 'live') {
    state.everLive = true;
    showLive(doc);
    announcePresence();
  } else if (status === 'connecting') {
    setStatus(state.everLive ? 'reconnecting' : 'connecting', state.everLive ? 'reconnecting' : 'connecting');
  } else if (status === 'offline') {
    setStatus('reconnecting', 'reconnecting (connection lost, retrying)');
  }
  // "closed" comes with an error event (or from leaving the project), handled there.
}

function readableError(err) {
  switch (err.code) {
    case 'unauthorized': return token ? 'token rejected (401)' : 'login required: add ?token=<jwt> (401)';
    case 'forbidden': return `no access to project "${state.projectId}" (403)`;
    case 'bad_request': return err.status ? 'bad project id (400)' : `bad request: ${err.message}`;
    case 'too_large': return err.closeCode ? 'message too large (1009)' : `too large: ${err.message}`;
    default: return `${err.code}: ${err.message}`;
  }
}

function updateSaveState() {
  const doc = state.doc;
  let next = '';
  if (doc && (doc.pendingCount > 0 || (doc.savedSeq !== null && doc.savedSeq < doc.lastAckedSeq))) next = 'saving';
  else if (doc && doc.lastAckedSeq > 0) next = doc.savedSeq === null ? 'sent' : 'saved';
  else if (doc && doc.savedSeq !== null) next = 'saved';
  if (next === state.saveState) return;
  state.saveState = next;
  saveState.dataset.state = next;
  saveState.textContent = { saving: 'Saving…', saved: 'All changes saved', sent: 'All changes sent', '': '' }[next];
  saveState.title = next === 'sent' ? 'the server has not reported what is saved durably' : '';
}

function joinProject(projectId) {
  if (state.doc) state.doc.close();
  state.projectId = projectId;
  state.cursors.clear();
  state.selectedId = null;
  state.everLive = false;
  drag = null;
  draft = null;
  const doc = createDocument({ url: socketBase(), projectId, token: token || undefined });
  state.doc = doc;
  doc.on('status', (status) => onDocumentStatus(doc, status));
  doc.on('sync', (sync) => onDocumentSync(doc, sync));
  doc.on('change', onChange);
  doc.on('pending', updateSaveState);
  doc.on('saved', updateSaveState);
  doc.on('presence', onPresence);
  doc.on('error', (err) => {
    if (doc !== state.doc) return;
    if (doc.status === 'closed') setStatus('error', `error: ${readableError(err)}`);
    else toast(readableError(err), true);
  });
  setStatus('connecting', 'connecting');
  updateSaveState();
  renderPeople();
  syncUrl();
  document.title = `Canvas · ${projectId}`;
}

function redraw() {
  updateControls();
  requestRender();
}

function onChange(e) {
  if (e.rolledBack) toast(`${e.kind === 'snapshot' ? 'edit' : 'change'} rejected: ${e.error.code}: ${e.error.message}`, true);
  const objects = view();
  if (state.selectedId && !objects.has(state.selectedId)) select(null);
  if (drag && !objects.has(drag.id)) drag = null;
  updateSaveState();
  updateControls();
  requestRender();
}

// ---------------------------------------------------------------- presence
function onPresence(p) {
  if (p.left) {
    if (state.cursors.delete(p.clientId)) { renderPeople(); requestRender(); }
    return;
  }
  const prev = state.cursors.get(p.clientId);
  const c = {
    clientId: p.clientId,
    name: typeof p.name === 'string' && p.name ? p.name.slice(0, 40) : (p.by || 'anonymous'),
    x: Number(p.x) || 0,
    y: Number(p.y) || 0,
    by: p.by,
    lastSeen: Date.now(),
  };
  state.cursors.set(p.clientId, c);
  if (!prev || prev.name !== c.name) renderPeople();
  requestRender();
}

let presenceAnnouncedAt = 0;

// Without a pointer over the canvas we still announce ourselves (for "who's here") at (-1, -1):
// peers list such an entry but draw no cursor for it. The document throttles and resends after a reconnect.
function announcePresence() {
  if (!state.doc) return;
  presenceAnnouncedAt = Date.now();
  state.doc.setPresence({
    x: pointer ? Math.round(pointer.x) : -1,
    y: pointer ? Math.round(pointer.y) : -1,
    name: state.name,
  });
}
const queuePresence = announcePresence;
const flushPresence = announcePresence;

function colorFor(key) {
  let h = 0x811c9dc5; // FNV-1a, then spread by the golden angle so short ids get distinct hues
  for (const ch of String(key)) h = Math.imul(h ^ ch.codePointAt(0), 0x01000193) >>> 0;
  return `hsl(${Math.round((h % 1000) * 137.508) % 360} 68% 42%)`;
}

function renderPeople() {
  peopleList.textContent = '';
  const add = (name, key, me) => {
    const li = document.createElement('li');
    li.dataset.clientId = key || '';
    if (me) li.className = 'me';
    const av = document.createElement('span');
    av.className = 'avatar';
    av.style.background = colorFor(key || name);
    av.textContent = (name[0] || '?').toUpperCase();
    li.append(av, document.createTextNode(me ? `${name} (you)` : name));
    li.title = me ? 'you' : name;
    peopleList.append(li);
  };
  add(state.name, state.doc && state.doc.clientId, true);
  const others = [...state.cursors.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const c of others) add(c.name, c.clientId, false);
}

// ---------------------------------------------------------------- local edits
// Edits go to the document, which shows them at once, queues them while offline and rolls back what the
// server refuses (onChange tells the user).
function ignoreRefusal() { /* the rollback's change event already told the user */ }

function createObject(obj) {
  state.doc.create(obj).catch(ignoreRefusal);
  select(obj.id);
}

function updateObject(id, patch) {
  state.doc.update(id, patch).catch(ignoreRefusal);
  return true;
}

function deleteSelected() {
  const id = state.selectedId;
  if (!id || !view().has(id)) return;
  if (drag && drag.id === id) drag = null;
  state.doc.delete(id).catch(ignoreRefusal);
}

// ---------------------------------------------------------------- selection / tools / controls
function select(id) {
  state.selectedId = id;
  const o = id ? view().get(id) : null;
  if (o && typeof o.fill === 'string' && /^#[0-9a-fA-F]{6}$/.test(o.fill)) {
    colorInput.value = o.fill.toLowerCase();
    state.color = colorInput.value;
  }
  updateControls();
  requestRender();
}

const TOOL_HINTS = {
  select: 'Click an object to select it, drag to move. Delete removes it.',
  rect: 'Drag on the canvas to draw a rectangle (click for a default size).',
  ellipse: 'Drag on the canvas to draw an ellipse (click for a default size).',
  text: 'Click on the canvas to place text.',
};

function setTool(tool) {
  if (!TOOL_HINTS[tool]) return;
  state.tool = tool;
  for (const b of toolButtons) {
    const on = b.dataset.tool === tool;
    b.classList.toggle('active', on);
    b.setAttribute('aria-pressed', String(on));
  }
  canvas.className = `tool-${tool}`;
  updateControls();
}

let toastTimer = null;
let toastText = '';
let toastIsError = false;
function toast(text, isError) {
  toastText = text;
  toastIsError = !!isError;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toastText = ''; toastIsError = false; updateControls(); }, 4000);
  updateControls();
}

function updateControls() {
  deleteBtn.disabled = !state.selectedId;
  const n = view().size;
  const trouble = state.status === 'error' || state.status === 'reconnecting';
  const seq = state.doc ? state.doc.seq : 0;
  hint.classList.toggle('error', !!toastIsError || state.status === 'error');
  hint.textContent = toastText || (trouble ? state.statusText :
    `${TOOL_HINTS[state.tool]}   ·   ${n} object${n === 1 ? '' : 's'} · seq ${seq}`);
}

function syncUrl() {
  const p = new URLSearchParams(location.search);
  p.set('project', state.projectId);
  p.set('name', state.name);
  history.replaceState(null, '', `${location.pathname}?${p}`);
}

// ---------------------------------------------------------------- geometry
function num(v, d = 0) { const n = Number(v); return Number.isFinite(n) ? n : d; }

function bounds(o) {
  let x = num(o.x), y = num(o.y);
  let w = num(o.width, o.type === 'text' ? 0 : DEFAULT_SIZE.width);
  let h = num(o.height, o.type === 'text' ? 0 : DEFAULT_SIZE.height);
  if (o.type === 'text' && (!w || !h)) {
    const m = measureText(o);
    w = w || m.width; h = h || m.height;
  }
  if (w < 0) { x += w; w = -w; }
  if (h < 0) { y += h; h = -h; }
  return { x, y, w, h };
}

function drawnObject(o) {
  return drag && drag.id === o.id ? { ...o, x: drag.x, y: drag.y } : o;
}

function hitTest(px, py) {
  const list = [...view().values()];
  for (let i = list.length - 1; i >= 0; i -= 1) {
    const o = drawnObject(list[i]);
    const b = bounds(o);
    if (o.type === 'ellipse') {
      const rx = b.w / 2, ry = b.h / 2;
      if (rx <= 0 || ry <= 0) continue;
      const dx = (px - (b.x + rx)) / rx, dy = (py - (b.y + ry)) / ry;
      if (dx * dx + dy * dy <= 1) return o.id;
    } else if (px >= b.x - 2 && px <= b.x + b.w + 2 && py >= b.y - 2 && py <= b.y + b.h + 2) {
      return o.id;
    }
  }
  return null;
}

function fontFor(o) { return `${num(o.fontSize, TEXT_FONT_SIZE)}px ${FONT_STACK}`; }

function measureText(o) {
  const size = num(o.fontSize, TEXT_FONT_SIZE);
  const lines = String(o.text ?? '').split('\n');
  ctx.save();
  ctx.font = fontFor(o);
  let width = 0;
  for (const l of lines) width = Math.max(width, ctx.measureText(l).width);
  ctx.restore();
  return { width: Math.ceil(width) + 4, height: Math.ceil(lines.length * size * 1.25) };
}

// ---------------------------------------------------------------- rendering
let renderQueued = false;
let viewW = 0, viewH = 0, dpr = 1;

function requestRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
}

function resize() {
  dpr = window.devicePixelRatio || 1;
  viewW = canvas.clientWidth;
  viewH = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(viewW * dpr));
  canvas.height = Math.max(1, Math.round(viewH * dpr));
  requestRender();
}

function setFill(value, fallback) {
  ctx.fillStyle = fallback;
  if (typeof value === 'string' && value) ctx.fillStyle = value; // invalid colours are ignored by canvas
}

function drawGrid() {
  ctx.fillStyle = '#f6f7f9';
  ctx.fillRect(0, 0, viewW, viewH);
  ctx.fillStyle = '#d5dae2';
  const step = 24;
  for (let x = step; x < viewW; x += step) {
    for (let y = step; y < viewH; y += step) ctx.fillRect(x - 0.75, y - 0.75, 1.5, 1.5);
  }
}

function drawObject(o) {
  const b = bounds(o);
  ctx.save();
  ctx.lineWidth = 1;
  ctx.strokeStyle = 'rgba(20, 30, 50, 0.25)';
  if (o.type === 'rect') {
    setFill(o.fill, '#c9d3e3');
    ctx.beginPath();
    ctx.rect(b.x, b.y, b.w, b.h);
    ctx.fill();
    ctx.stroke();
  } else if (o.type === 'ellipse') {
    setFill(o.fill, '#c9d3e3');
    ctx.beginPath();
    ctx.ellipse(b.x + b.w / 2, b.y + b.h / 2, b.w / 2, b.h / 2, 0, 0, Math.PI * 2);
    ctx.fill();
    ctx.stroke();
  } else if (o.type === 'text') {
    setFill(o.fill, '#1f2430');
    ctx.font = fontFor(o);
    ctx.textBaseline = 'top';
    const size = num(o.fontSize, TEXT_FONT_SIZE);
    String(o.text ?? '').split('\n').forEach((line, i) => ctx.fillText(line, b.x + 2, b.y + i * size * 1.25));
  } else {
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = '#8a93a6';
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    ctx.fillStyle = '#8a93a6';
    ctx.font = `12px ${FONT_STACK}`;
    ctx.fillText(String(o.type).slice(0, 40), b.x + 4, b.y + 14);
  }
  // A label on a shape, if it carries one.
  if (o.type !== 'text' && typeof o.text === 'string' && o.text) {
    ctx.fillStyle = '#1f2430';
    ctx.font = `14px ${FONT_STACK}`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(o.text, b.x + b.w / 2, b.y + b.h / 2, Math.max(10, b.w - 8));
  }
  ctx.restore();
}

function drawSelection(o) {
  const b = bounds(o);
  ctx.save();
  ctx.strokeStyle = '#4f8cff';
  ctx.lineWidth = 1.5;
  ctx.setLineDash([5, 3]);
  ctx.strokeRect(b.x - 3, b.y - 3, b.w + 6, b.h + 6);
  ctx.setLineDash([]);
  ctx.fillStyle = '#fff';
  for (const [hx, hy] of [[b.x - 3, b.y - 3], [b.x + b.w + 3, b.y - 3], [b.x - 3, b.y + b.h + 3], [b.x + b.w + 3, b.y + b.h + 3]]) {
    ctx.fillRect(hx - 3.5, hy - 3.5, 7, 7);
    ctx.strokeRect(hx - 3.5, hy - 3.5, 7, 7);
  }
  ctx.restore();
}

function drawDraft() {
  const x = Math.min(draft.x0, draft.x1), y = Math.min(draft.y0, draft.y1);
  const w = Math.abs(draft.x1 - draft.x0), h = Math.abs(draft.y1 - draft.y0);
  ctx.save();
  ctx.globalAlpha = 0.5;
  ctx.fillStyle = state.color;
  ctx.beginPath();
  if (draft.type === 'ellipse') ctx.ellipse(x + w / 2, y + h / 2, w / 2, h / 2, 0, 0, Math.PI * 2);
  else ctx.rect(x, y, w, h);
  ctx.fill();
  ctx.globalAlpha = 1;
  ctx.setLineDash([5, 3]);
  ctx.strokeStyle = '#4f8cff';
  ctx.stroke();
  ctx.restore();
}

function drawCursor(c) {
  const color = colorFor(c.clientId);
  ctx.save();
  ctx.translate(c.x, c.y);
  ctx.beginPath();
  ctx.moveTo(0, 0);
  ctx.lineTo(0, 17);
  ctx.lineTo(4.5, 13);
  ctx.lineTo(8, 20);
  ctx.lineTo(10.5, 19);
  ctx.lineTo(7.2, 12.2);
  ctx.lineTo(12.5, 12.2);
  ctx.closePath();
  ctx.fillStyle = color;
  ctx.strokeStyle = '#fff';
  ctx.lineWidth = 1.5;
  ctx.fill();
  ctx.stroke();
  ctx.font = `600 12px ${FONT_STACK}`;
  const label = c.name;
  const tw = ctx.measureText(label).width;
  const lx = 12, ly = 20;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(lx, ly, tw + 12, 20, 6); else ctx.rect(lx, ly, tw + 12, 20);
  ctx.fillStyle = color;
  ctx.fill();
  ctx.fillStyle = '#fff';
  ctx.textBaseline = 'middle';
  ctx.fillText(label, lx + 6, ly + 10.5);
  ctx.restore();
}

function render() {
  renderQueued = false;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  drawGrid();
  for (const o of view().values()) drawObject(drawnObject(o));
  const sel = state.selectedId && view().get(state.selectedId);
  if (sel) drawSelection(drawnObject(sel));
  if (draft) drawDraft();
  for (const c of state.cursors.values()) if (c.x >= 0 && c.y >= 0) drawCursor(c);
  if (state.status !== 'live') {
    ctx.fillStyle = 'rgba(246, 247, 249, 0.55)';
    ctx.fillRect(0, 0, viewW, viewH);
  }
}

// ---------------------------------------------------------------- pointer input
function canvasPoint(ev) {
  const r = canvas.getBoundingClientRect();
  return { x: ev.clientX - r.left, y: ev.clientY - r.top };
}

function sendDragUpdate(force) {
  if (!drag || !drag.moved) return;
  const x = Math.round(drag.x), y = Math.round(drag.y);
  if (x === drag.sentX && y === drag.sentY) return;
  const now = performance.now();
  if (!force && now - drag.lastSentAt < DRAG_UPDATE_INTERVAL_MS) return;
  if (updateObject(drag.id, { x, y })) {
    drag.sentX = x; drag.sentY = y; drag.lastSentAt = now;
  }
}

canvas.addEventListener('pointerdown', (ev) => {
  if (ev.button !== 0) return;
  canvas.focus();
  const p = canvasPoint(ev);
  pointer = p;
  canvas.setPointerCapture(ev.pointerId);
  if (state.tool === 'select') {
    const id = hitTest(p.x, p.y);
    select(id);
    if (id) {
      const o = view().get(id);
      const ox = num(o.x), oy = num(o.y);
      drag = { id, startX: p.x, startY: p.y, ox, oy, x: ox, y: oy, moved: false, lastSentAt: 0, sentX: ox, sentY: oy };
    }
  } else if (state.tool === 'rect' || state.tool === 'ellipse') {
    draft = { type: state.tool, x0: p.x, y0: p.y, x1: p.x, y1: p.y };
  } else if (state.tool === 'text') {
    textAt = p;
  }
  requestRender();
});

canvas.addEventListener('pointermove', (ev) => {
  const p = canvasPoint(ev);
  pointer = p;
  queuePresence();
  if (drag) {
    drag.x = drag.ox + (p.x - drag.startX);
    drag.y = drag.oy + (p.y - drag.startY);
    if (!drag.moved && Math.hypot(p.x - drag.startX, p.y - drag.startY) > 2) drag.moved = true;
    sendDragUpdate(false);
    requestRender();
  } else if (draft) {
    draft.x1 = p.x; draft.y1 = p.y;
    requestRender();
  } else if (state.tool === 'select') {
    canvas.classList.toggle('over-object', !!hitTest(p.x, p.y));
  }
});

function finishPointer(ev, cancelled) {
  if (canvas.hasPointerCapture(ev.pointerId)) canvas.releasePointerCapture(ev.pointerId);
  if (drag) {
    if (!cancelled) sendDragUpdate(true);
    drag = null;
    redraw();
  }
  if (draft) {
    const d = draft;
    draft = null;
    if (!cancelled) {
      let x = Math.min(d.x0, d.x1), y = Math.min(d.y0, d.y1);
      let w = Math.abs(d.x1 - d.x0), h = Math.abs(d.y1 - d.y0);
      if (w < 5 && h < 5) { w = DEFAULT_SIZE.width; h = DEFAULT_SIZE.height; x = d.x0; y = d.y0; }
      createObject({
        id: randomId(), type: d.type,
        x: Math.round(x), y: Math.round(y), width: Math.round(Math.max(w, 1)), height: Math.round(Math.max(h, 1)),
        fill: state.color,
      });
      setTool('select');
    }
    requestRender();
  }
  if (textAt) {
    const at = textAt;
    textAt = null;
    if (!cancelled) {
      // Let the pointer sequence finish before the modal prompt.
      setTimeout(() => {
        const text = window.prompt('Text:', '');
        if (text === null || !text.trim()) return;
        const obj = { id: randomId(), type: 'text', x: Math.round(at.x), y: Math.round(at.y), text, fill: state.color, fontSize: TEXT_FONT_SIZE };
        const m = measureText(obj);
        obj.width = m.width; obj.height = m.height;
        createObject(obj);
        setTool('select');
      }, 0);
    }
  }
}

canvas.addEventListener('pointerleave', () => {
  if (drag || draft) return;
  pointer = null;
  flushPresence(); // hides our cursor for the others
});
canvas.addEventListener('pointerup', (ev) => finishPointer(ev, false));
canvas.addEventListener('pointercancel', (ev) => finishPointer(ev, true));

window.addEventListener('keydown', (ev) => {
  const t = ev.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === 'Delete' || ev.key === 'Backspace') { ev.preventDefault(); deleteSelected(); return; }
  if (ev.key === 'Escape') { drag = null; draft = null; select(null); redraw(); return; }
  const tool = { v: 'select', r: 'rect', e: 'ellipse', t: 'text' }[ev.key.toLowerCase()];
  if (tool) setTool(tool);
});

// ---------------------------------------------------------------- toolbar
for (const b of toolButtons) b.addEventListener('click', () => setTool(b.dataset.tool));
deleteBtn.addEventListener('click', deleteSelected);

colorInput.addEventListener('input', () => { state.color = colorInput.value; });
colorInput.addEventListener('change', () => {
  state.color = colorInput.value;
  const o = state.selectedId && view().get(state.selectedId);
  if (o && o.fill !== state.color) updateObject(o.id, { fill: state.color });
});

joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = projectInput.value.trim();
  if (!validId(id)) { toast('project id: 1-128 characters of A-Z a-z 0-9 _ . : -', true); return; }
  const name = nameInput.value.trim().slice(0, 40);
  if (name) state.name = name;
  nameInput.value = state.name;
  if (id !== state.projectId || state.status !== 'live') joinProject(id);
  else { syncUrl(); renderPeople(); flushPresence(); }
});

nameInput.addEventListener('change', () => {
  const name = nameInput.value.trim().slice(0, 40);
  if (!name) { nameInput.value = state.name; return; }
  state.name = name;
  syncUrl();
  renderPeople();
  flushPresence();
});


// ---------------------------------------------------------------- housekeeping
setInterval(() => {
  const now = Date.now();
  let changed = false;
  for (const [k, c] of state.cursors) {
    if (now - c.lastSeen > CURSOR_TTL_MS) { state.cursors.delete(k); changed = true; }
  }
  if (changed) { renderPeople(); requestRender(); }
  if (state.status === 'live' && now - presenceAnnouncedAt > PRESENCE_HEARTBEAT_MS) announcePresence();
}, 1000);

window.addEventListener('beforeunload', () => { if (state.doc) state.doc.close(); });
new ResizeObserver(resize).observe(canvas);

// ---------------------------------------------------------------- start
projectInput.value = state.projectId;
nameInput.value = state.name;
setTool('select');
resize();
joinProject(state.projectId);
