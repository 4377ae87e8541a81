// Collaborative canvas demo client. Plain JS, no build step, no external resources.
// Speaks only the public WebSocket protocol (see the project's protocol docs):
//   snapshot / created / updated / deleted / ack / error / pong, plus the presence extension.
(() => {
  'use strict';

  // ---------------------------------------------------------------- constants
  const ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
  const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
  const PRESENCE_INTERVAL_MS = 70;      // <= ~14 presence frames per second
  const PRESENCE_HEARTBEAT_MS = 4000;   // re-announce an idle cursor so peers keep it
  const CURSOR_TTL_MS = 10000;          // drop a peer cursor not updated for 10 s
  const DRAG_UPDATE_INTERVAL_MS = 150;  // throttled `update` frames while dragging
  const PENDING_TIMEOUT_MS = 15000;     // an edit not acked by then: resync
  const RESYNC_TIMEOUT_MS = 8000;       // a resync not answered by then: reconnect
  const PING_INTERVAL_MS = 15000;
  const IDLE_TIMEOUT_MS = 40000;        // nothing received for this long while live: reconnect
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const DEFAULT_SIZE = { width: 120, height: 80 };
  const TEXT_FONT_SIZE = 24;
  const FONT_STACK = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif';

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
  const peopleList = $('people-list');
  const hint = $('hint');
  const toolButtons = Array.from(document.querySelectorAll('[data-tool]'));

  // ---------------------------------------------------------------- state
  const params = new URLSearchParams(location.search);
  const token = params.get('token') || '';

  const state = {
    projectId: validId(params.get('project')) ? params.get('project') : 'demo',
    name: (params.get('name') || '').trim().slice(0, 40) || `guest-${1 + Math.floor(Math.random() * 999)}`,
    clientId: null,
    status: 'connecting',          // connecting | live | reconnecting | error
    statusText: 'connecting',
    seq: 0,                        // last applied project seq
    confirmed: new Map(),          // server state as we know it: id -> object
    pending: [],                   // our edits sent but not yet acked, in send order
    view: new Map(),               // confirmed + pending edits (what is drawn)
    cursors: new Map(),            // clientId -> {clientId, name, x, y, by, lastSeen}
    selectedId: null,
    tool: 'select',
    color: colorInput.value,
    resyncing: false,
    resyncReqId: null,
    resyncTimer: null,
    buffered: [],                  // broadcasts received while a resync is outstanding
    reqCounter: 0,
  };

  // Interaction state (not part of the shared state).
  let drag = null;    // {id, startX, startY, ox, oy, x, y, moved, lastSentAt, sentX, sentY}
  let draft = null;   // {type, x0, y0, x1, y1}
  let textAt = null;  // {x, y}
  let pointer = null; // last pointer position over the canvas (canvas coordinates)

  function validId(s) { return typeof s === 'string' && ID_RE.test(s); }

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    let s = 'o';
    for (const b of bytes) s += ID_ALPHABET[b & 63];
    return s;
  }

  function nextReqId() { state.reqCounter += 1; return `c${state.reqCounter}`; }

  // ---------------------------------------------------------------- test / debug hook
  window.canvasApp = {
    get objects() { return Object.fromEntries(state.view); },
    get objectsMap() { return state.view; },
    get serverObjects() { return Object.fromEntries(state.confirmed); },
    get seq() { return state.seq; },
    get status() { return state.status; },
    get statusText() { return state.statusText; },
    get projectId() { return state.projectId; },
    get clientId() { return state.clientId; },
    get name() { return state.name; },
    get pendingCount() { return state.pending.length; },
    get cursors() {
      const out = {};
      for (const [k, c] of state.cursors) out[k] = { ...c };
      return out;
    },
    get selectedId() { return state.selectedId; },
    get tool() { return state.tool; },
  };

  // ---------------------------------------------------------------- JSON merge patch (RFC 7396)
  function isPlainObject(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
  function clone(v) { return v === undefined ? undefined : JSON.parse(JSON.stringify(v)); }

  function mergePatch(target, patch) {
    if (!isPlainObject(patch)) return clone(patch);
    const out = isPlainObject(target) ? { ...target } : {};
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = mergePatch(out[k], v);
    }
    return out;
  }

  // Top level of an object: `id` and `type` never change, `version` is server-owned.
  function patchObject(obj, patch) {
    const out = { ...obj };
    if (!isPlainObject(patch)) return out;
    for (const [k, v] of Object.entries(patch)) {
      if (k === 'id' || k === 'type' || k === 'version') continue;
      if (v === null) delete out[k];
      else out[k] = mergePatch(out[k], v);
    }
    return out;
  }

  // Apply one edit (ours or a broadcast) to a map of objects.
  function applyEdit(map, edit, version) {
    if (edit.type === 'create') {
      if (!edit.object || typeof edit.object.id !== 'string') return;
      const obj = clone(edit.object);
      if (typeof version === 'number') obj.version = version;
      map.set(obj.id, obj);
    } else if (edit.type === 'update') {
      const cur = map.get(edit.id);
      if (!cur) return;
      const next = patchObject(cur, edit.patch);
      if (typeof version === 'number') next.version = version;
      map.set(edit.id, next);
    } else if (edit.type === 'delete') {
      map.delete(edit.id);
    }
  }

  function rebuildView() {
    const view = new Map(state.confirmed);
    for (const p of state.pending) applyEdit(view, p);
    state.view = view;
    if (state.selectedId && !view.has(state.selectedId)) select(null);
    if (drag && !view.has(drag.id)) drag = null;
    updateControls();
    requestRender();
  }

  // ---------------------------------------------------------------- connection
  let ws = null;
  let connGen = 0;
  let retryAttempt = 0;
  let retryTimer = null;
  let retryCountdown = null;
  let lastRx = 0;
  let lastPingAt = 0;
  let snapshotSeenOnSocket = false;

  function setStatus(kind, text) {
    state.status = kind;
    state.statusText = text || kind;
    statusBadge.className = `badge ${kind}`;
    // The badge stays short; the full text is its tooltip and goes to the hint line.
    statusText.textContent = kind === 'error' ? 'error' : state.statusText.replace(/ \(.*\)$/, '');
    statusBadge.title = state.statusText;
    updateControls();
  }

  function socketUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${proto}//${location.host}/ws/projects/${encodeURIComponent(state.projectId)}`;
    if (token) url += `?token=${encodeURIComponent(token)}`;
    return url;
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(retryCountdown);
    retryTimer = null;
    const gen = ++connGen;
    if (ws) { try { ws.close(1000, 'reconnecting'); } catch (_) { /* ignore */ } ws = null; }
    setStatus(retryAttempt > 0 ? 'reconnecting' : 'connecting',
      retryAttempt > 0 ? `reconnecting (attempt ${retryAttempt + 1})` : 'connecting');
    let sock;
    try {
      sock = new WebSocket(socketUrl());
    } catch (e) {
      setStatus('error', `error: ${e.message}`);
      return;
    }
    ws = sock;
    snapshotSeenOnSocket = false;
    let opened = false;
    sock.onopen = () => {
      if (gen !== connGen) return;
      opened = true;
      lastRx = Date.now();
      setStatus(retryAttempt > 0 ? 'reconnecting' : 'connecting', 'waiting for snapshot');
    };
    sock.onmessage = (ev) => {
      if (gen !== connGen) return;
      lastRx = Date.now();
      onFrame(ev.data);
    };
    sock.onerror = () => { /* a close event always follows */ };
    sock.onclose = (ev) => {
      if (gen !== connGen) return;
      ws = null;
      // Edits in flight on a dead socket may or may not have been applied: the next snapshot decides.
      state.pending = [];
      endResync();
      drag = null;
      rebuildView();
      if (!opened) {
        probeAndRetry();
      } else {
        const why = ev.code === 1009 ? 'message too large' : `closed ${ev.code}${ev.reason ? `: ${ev.reason}` : ''}`;
        scheduleReconnect(why);
      }
    };
  }

  // The browser hides why an upgrade failed; ask the REST endpoint (same auth rules) for a readable reason.
  async function probeAndRetry() {
    const gen = connGen;
    let fatal = null;
    try {
      let url = `/api/projects/${encodeURIComponent(state.projectId)}/objects`;
      if (token) url += `?token=${encodeURIComponent(token)}`;
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch(url, { headers, cache: 'no-store' });
      if (res.status === 400) fatal = 'bad project id (400)';
      else if (res.status === 401) fatal = token ? 'token rejected (401)' : 'login required: add ?token=<jwt> (401)';
      else if (res.status === 403) fatal = `no access to project "${state.projectId}" (403)`;
    } catch (_) { /* server unreachable: keep retrying */ }
    if (gen !== connGen) return;
    if (fatal) {
      setStatus('error', `error: ${fatal}`);
      return; // retrying will not help; "Join" tries again
    }
    scheduleReconnect('connection failed');
  }

  function scheduleReconnect(reason) {
    clearTimeout(retryTimer);
    clearInterval(retryCountdown);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** retryAttempt);
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    retryAttempt += 1;
    const until = Date.now() + delay;
    const show = () => {
      const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      setStatus('reconnecting', `reconnecting in ${s}s (${reason})`);
    };
    show();
    retryCountdown = setInterval(show, 1000);
    retryTimer = setTimeout(connect, delay);
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  function isLive() { return state.status === 'live' && ws && ws.readyState === WebSocket.OPEN; }

  // ---------------------------------------------------------------- incoming frames
  function onFrame(data) {
    let m;
    try { m = JSON.parse(data); } catch (_) { return; }
    if (!isPlainObject(m)) return;
    switch (m.type) {
      case 'snapshot': onSnapshot(m); break;
      case 'created':
      case 'updated':
      case 'deleted': onBroadcast(m); break;
      case 'ack': onAck(m); break;
      case 'error': onError(m); break;
      case 'pong': break;
      case 'presence': onPresence(m); break;
      case 'presence_left': onPresenceLeft(m); break;
      default: break; // unknown extensions are ignored
    }
  }

  function onSnapshot(m) {
    const objects = Array.isArray(m.objects) ? m.objects : [];
    state.confirmed = new Map();
    for (const o of objects) if (isPlainObject(o) && typeof o.id === 'string') state.confirmed.set(o.id, o);
    if (typeof m.seq === 'number') state.seq = m.seq;
    if (typeof m.clientId === 'string') state.clientId = m.clientId;
    // Our edits sent before this snapshot was taken were acked before it (one socket, in order);
    // the ones still pending were sent after and are applied on their ack.
    const buffered = state.buffered;
    endResync();
    retryAttempt = 0;
    setStatus('live', 'live');
    for (const b of buffered.sort((a, b2) => a.seq - b2.seq)) onBroadcast(b);
    rebuildView();
    renderPeople();
    if (!snapshotSeenOnSocket) {
      snapshotSeenOnSocket = true;
      flushPresence();
    }
  }

  function broadcastToEdit(m) {
    if (m.type === 'created') return { type: 'create', object: m.object };
    if (m.type === 'updated') return { type: 'update', id: m.id, patch: m.patch };
    return { type: 'delete', id: m.id };
  }

  function onBroadcast(m) {
    if (typeof m.seq === 'number') {
      if (m.seq <= state.seq) return;                      // already reflected
      if (state.resyncing) { state.buffered.push(m); return; } // the snapshot decides
      if (m.seq !== state.seq + 1) {                       // missed something
        requestResync(`seq gap: had ${state.seq}, got ${m.seq}`);
        state.buffered.push(m);
        return;
      }
      state.seq = m.seq;
    }
    applyEdit(state.confirmed, broadcastToEdit(m), m.version);
    rebuildView();
  }

  function takePending(reqId) {
    if (reqId === undefined || reqId === null) return null;
    const i = state.pending.findIndex((p) => p.reqId === reqId);
    return i >= 0 ? state.pending.splice(i, 1)[0] : null;
  }

  function onAck(m) {
    const edit = takePending(m.reqId);
    if (typeof m.seq !== 'number') {
      if (edit) applyEdit(state.confirmed, edit, m.version);
    } else if (m.seq > state.seq) {
      // Acks and broadcasts share one ordered stream: our ack takes the place of the broadcast.
      const gap = m.seq !== state.seq + 1;
      if (edit) applyEdit(state.confirmed, edit, m.version);
      state.seq = m.seq;
      if (gap) requestResync(`seq gap at ack ${m.seq}`);
    }
    // m.seq <= state.seq: a snapshot already contains this edit.
    rebuildView();
  }

  function onError(m) {
    const text = `${m.code || 'error'}${m.message ? `: ${m.message}` : ''}`;
    if (m.reqId && m.reqId === state.resyncReqId) {
      endResync();
      toast(`resync failed (${text}); reconnecting`, true);
      if (ws) ws.close(4000, 'resync failed');
      return;
    }
    const edit = takePending(m.reqId);
    if (edit) {
      toast(`${edit.type} rejected: ${text}`, true);
      rebuildView();
      requestResync(`edit rejected (${m.code})`);
    } else {
      toast(text, true);
    }
  }

  function requestResync(reason) {
    if (state.resyncing) return;
    const reqId = nextReqId();
    if (!send({ type: 'resync', reqId })) return;
    console.info(`[canvas] resync: ${reason}`);
    state.resyncing = true;
    state.resyncReqId = reqId;
    state.buffered = [];
    clearTimeout(state.resyncTimer);
    state.resyncTimer = setTimeout(() => {
      if (!state.resyncing) return;
      endResync();
      if (ws) ws.close(4000, 'resync timeout');
    }, RESYNC_TIMEOUT_MS);
  }

  function endResync() {
    state.resyncing = false;
    state.resyncReqId = null;
    state.buffered = [];
    clearTimeout(state.resyncTimer);
  }

  // ---------------------------------------------------------------- presence
  function onPresence(m) {
    if (typeof m.clientId !== 'string' || m.clientId === state.clientId) return;
    const prev = state.cursors.get(m.clientId);
    const c = {
      clientId: m.clientId,
      name: typeof m.name === 'string' && m.name ? m.name.slice(0, 40) : (m.by || 'anonymous'),
      x: Number(m.x) || 0,
      y: Number(m.y) || 0,
      by: m.by,
      lastSeen: Date.now(),
    };
    state.cursors.set(m.clientId, c);
    if (!prev || prev.name !== c.name) renderPeople();
    requestRender();
  }

  function onPresenceLeft(m) {
    if (state.cursors.delete(m.clientId)) { renderPeople(); requestRender(); }
  }

  let presenceLastSent = 0;
  let presenceTimer = null;

  function queuePresence() {
    const wait = PRESENCE_INTERVAL_MS - (performance.now() - presenceLastSent);
    if (wait <= 0) flushPresence();
    else if (!presenceTimer) presenceTimer = setTimeout(flushPresence, wait);
  }

  // Without a pointer over the canvas we still announce ourselves (for "who's here") at (-1, -1):
  // peers list such an entry but draw no cursor for it.
  function flushPresence() {
    clearTimeout(presenceTimer);
    presenceTimer = null;
    if (!isLive()) return;
    presenceLastSent = performance.now();
    const x = pointer ? Math.round(pointer.x) : -1;
    const y = pointer ? Math.round(pointer.y) : -1;
    send({ type: 'presence', x, y, name: state.name });
  }

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
    add(state.name, state.clientId, true);
    const others = [...state.cursors.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const c of others) add(c.name, c.clientId, false);
  }

  // ---------------------------------------------------------------- local edits
  function submit(edit) {
    const reqId = nextReqId();
    if (!isLive() || !send({ ...edit, reqId })) {
      toast('not connected: edit not sent', true);
      return false;
    }
    state.pending.push({ ...edit, reqId, sentAt: Date.now() });
    rebuildView();
    return true;
  }

  function createObject(obj) {
    if (submit({ type: 'create', object: obj })) select(obj.id);
  }

  function updateObject(id, patch) { return submit({ type: 'update', id, patch }); }

  function deleteSelected() {
    const id = state.selectedId;
    if (!id || !state.view.has(id)) return;
    if (drag && drag.id === id) drag = null;
    submit({ type: 'delete', id });
  }

  // ---------------------------------------------------------------- selection / tools / controls
  function select(id) {
    state.selectedId = id;
    const o = id ? state.view.get(id) : null;
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
    const n = state.view.size;
    const trouble = state.status === 'error' || state.status === 'reconnecting';
    hint.classList.toggle('error', !!toastIsError || state.status === 'error');
    hint.textContent = toastText || (trouble ? state.statusText :
      `${TOOL_HINTS[state.tool]}   ·   ${n} object${n === 1 ? '' : 's'} · seq ${state.seq}`);
  }

  function syncUrl() {
    const p = new URLSearchParams(location.search);
    p.set('project', state.projectId);
    p.set('name', state.name);
    history.replaceState(null, '', `${location.pathname}?${p}`);
  }

  function joinProject(projectId) {
    state.projectId = projectId;
    state.confirmed = new Map();
    state.pending = [];
    state.seq = 0;
    state.cursors.clear();
    state.selectedId = null;
    drag = null;
    draft = null;
    endResync();
    rebuildView();
    renderPeople();
    syncUrl();
    document.title = `Canvas · ${projectId}`;
    retryAttempt = 0;
    connect();
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
    const list = [...state.view.values()];
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
    for (const o of state.view.values()) drawObject(drawnObject(o));
    const sel = state.selectedId && state.view.get(state.selectedId);
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
        const o = state.view.get(id);
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
      rebuildView();
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
    if (ev.key === 'Escape') { drag = null; draft = null; select(null); rebuildView(); return; }
    const tool = { v: 'select', r: 'rect', e: 'ellipse', t: 'text' }[ev.key.toLowerCase()];
    if (tool) setTool(tool);
  });

  // ---------------------------------------------------------------- toolbar
  for (const b of toolButtons) b.addEventListener('click', () => setTool(b.dataset.tool));
  deleteBtn.addEventListener('click', deleteSelected);

  colorInput.addEventListener('input', () => { state.color = colorInput.value; });
  colorInput.addEventListener('change', () => {
    state.color = colorInput.value;
    const o = state.selectedId && state.view.get(state.selectedId);
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
    if (state.pending.some((p) => now - p.sentAt > PENDING_TIMEOUT_MS)) {
      state.pending = state.pending.filter((p) => now - p.sentAt <= PENDING_TIMEOUT_MS);
      rebuildView();
      requestResync('edit not acknowledged in time');
    }
    if (isLive()) {
      if (performance.now() - presenceLastSent > PRESENCE_HEARTBEAT_MS) flushPresence();
      if (now - lastPingAt > PING_INTERVAL_MS) { lastPingAt = now; send({ type: 'ping', reqId: nextReqId() }); }
      if (now - lastRx > IDLE_TIMEOUT_MS) ws.close(4001, 'server silent');
    }
  }, 1000);

  window.addEventListener('beforeunload', () => { if (ws) { try { ws.close(1000, 'page closed'); } catch (_) { /* ignore */ } } });
  new ResizeObserver(resize).observe(canvas);

  // ---------------------------------------------------------------- start
  projectInput.value = state.projectId;
  nameInput.value = state.name;
  setTool('select');
  resize();
  renderPeople();
  joinProject(state.projectId);
})();
