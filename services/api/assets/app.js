// The owners' dashboard: a single-page app on hash routes, served at /app/.
//
// Plain ES2020, no build step, no dependencies but the vendored uPlot (a
// classic script that defines the global `uPlot`). The server's CSP allows
// no inline script or style: everything here builds DOM nodes with
// createElement and sets styles only through the CSSOM (el.style.x).
//
// Hooks the browser tests rely on (keep them): `[data-site-id]` rows with
// `[data-field="latest-status"|"state-status"|"incident"]`, the forms'
// `[data-error-for=FIELD]` and `[data-error="form"]`, `#nav-signout`, and
// `document.body.dataset.ready = "1"` once a route has rendered.

'use strict';

// ---------------------------------------------------------------- DOM helpers

/** createElement with attributes and children. Attributes: `class`,
 *  `text`, `on` ({event: fn}), `style` (an object, set through the CSSOM),
 *  booleans as properties (hidden, disabled, checked...), anything else
 *  with setAttribute (null/undefined/false skipped). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else if (k === 'style') for (const [p, sv] of Object.entries(v)) el.style[p] = sv;
      // checked/selected/value also set the defaults, which form.reset() restores.
      else if (k === 'checked') { el.defaultChecked = !!v; el.checked = !!v; }
      else if (k === 'selected') { el.defaultSelected = !!v; el.selected = !!v; }
      else if (k === 'hidden' || k === 'disabled' || k === 'required' || k === 'readOnly' ||
               k === 'open' || k === 'multiple') el[k] = !!v;
      else if (k === 'value') { if (tag === 'input') el.defaultValue = v; el.value = v; }
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (nodes, text, nested arrays; null/false skipped). */
function append(el, ...children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, ...c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

function setContent(el, ...children) { clear(el); return append(el, ...children); }

const $main = () => document.getElementById('main');

let toastTimer = null;
function toast(msg, kind) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = msg;
  t.className = 'toast show' + (kind === 'error' ? ' toast-error' : '');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = 'toast'; t.textContent = ''; }, 4000);
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat();

function fmtInt(n) { return n === null || n === undefined ? '—' : nf.format(n); }

/** Percent with up to two decimals, never rounded up to 100. */
function fmtPct(p) {
  if (p === null || p === undefined || Number.isNaN(p)) return '—';
  if (p >= 100) return '100%';
  return (Math.floor(p * 100) / 100).toFixed(2) + '%';
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return (ms >= 100 ? Math.round(ms) : Math.round(ms * 10) / 10) + ' ms';
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

const fmtHM = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fmtMDHM = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const fmtYMDHM = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
const fmtFull = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** Short local time: "12:03" today, "Nov 30, 12:03" this year, with the year before that. */
function fmtWhen(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  const now = new Date();
  if (sameDay(d, now)) return fmtHM.format(d);
  if (d.getFullYear() === now.getFullYear()) return fmtMDHM.format(d);
  return fmtYMDHM.format(d);
}

function timeEl(ms, text) {
  if (ms === null || ms === undefined) return h('span', { class: 'muted', text: '—' });
  const d = new Date(ms);
  return h('time', { datetime: d.toISOString(), title: fmtFull.format(d), text: text || fmtWhen(ms) });
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min';
  const hr = Math.floor(m / 60);
  if (hr < 24) return hr + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
  const d = Math.floor(hr / 24);
  return d + ' d' + (hr % 24 ? ' ' + (hr % 24) + ' h' : '');
}

function utcDay(ms) { return new Date(ms).toISOString().slice(0, 10); }

/** Lamports as SOL, exactly (1 SOL = 10^9 lamports). */
function fmtSol(lamports) {
  if (lamports === null || lamports === undefined) return '—';
  const neg = lamports < 0;
  const l = Math.abs(lamports);
  const whole = Math.floor(l / 1e9);
  const frac = String(l % 1e9).padStart(9, '0').replace(/0+$/, '');
  return (neg ? '-' : '') + nf.format(whole) + (frac ? '.' + frac : '') + ' SOL';
}

function siteLabel(s) {
  if (s.name) return s.name;
  try { return new URL(s.url).host; } catch (_) { return s.url; }
}

// ---------------------------------------------------------------- API client

const session = { signedIn: false, account: null, csrf: null };

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    // The API's errors are {"error": {code, message, field}}; the hubs'
    // (validator earnings) are {code, message}. Both are read.
    const e = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : body;
    const message = e && typeof e === 'object' && typeof e.message === 'string' && e.message
      ? e.message
      : (typeof body === 'string' && body.trim() ? body.trim().slice(0, 300) : `HTTP ${status}`);
    super(message);
    this.status = status;
    this.code = e && typeof e === 'object' && e.code ? String(e.code) : (status === 0 ? 'network' : 'http_' + status);
    this.field = e && typeof e === 'object' && e.field ? String(e.field) : null;
    this.retryAfter = retryAfter || null;
  }
}

/**
 * One API call. Non-GET requests carry `Content-Type: application/json` and
 * `X-CSRF-Token`. A 401 (other than a wrong password) signs the dashboard
 * out and sends the user to #/signin; a 403 `csrf_failed` refreshes the
 * token once and retries.
 */
async function api(method, path, body, opts) {
  const o = opts || {};
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') {
    headers['Content-Type'] = 'application/json';
    if (session.csrf) headers['X-CSRF-Token'] = session.csrf;
  }
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { code: 'network', message: 'Cannot reach the server (' + (err && err.message ? err.message : err) + ').' });
  }
  if (resp.status === 204) return null;
  const type = resp.headers.get('Content-Type') || '';
  let data = null;
  try {
    data = type.includes('json') ? await resp.json() : await resp.text();
  } catch (_) { data = null; }
  if (resp.ok) return data;
  const err = new ApiError(resp.status, data, resp.headers.get('Retry-After'));
  if (err.status === 401 && err.code !== 'bad_credentials' && !o.noRedirect) {
    signedOut();
    throw err;
  }
  if (err.status === 403 && err.code === 'csrf_failed' && !o.retried) {
    try {
      const me = await api('GET', '/v1/account');
      session.csrf = me && me.csrf_token ? me.csrf_token : null;
    } catch (_) { throw err; }
    return api(method, path, body, Object.assign({}, o, { retried: true }));
  }
  if (err.status === 429 && err.retryAfter) err.message += ` (wait ${err.retryAfter} s)`;
  throw err;
}

/** Every page of a cursor list, up to `max` items. */
async function apiAll(path, max) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < 20; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', path + sep + 'limit=100' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    items.push(...(page.items || []));
    cursor = page.next_cursor;
    if (!cursor || items.length >= (max || 1000)) break;
  }
  return items;
}

function signedOut() {
  const was = session.signedIn;
  session.signedIn = false;
  session.account = null;
  session.csrf = null;
  live.stop();
  updateNav();
  const r = matchRoute(currentPath());
  if (!r || !r.route.public) go('#/signin');
  else if (was) render();
}

// ---------------------------------------------------------------- forms

let formSeq = 0;

/** A form with `[data-error="form"]` at its end (before the buttons). */
function form(id, attrs, ...children) {
  const f = h('form', Object.assign({ id, novalidate: true }, attrs || {}));
  f.dataset.fid = id || 'f' + (++formSeq);
  append(f, children);
  return f;
}

function fieldId(name) { return 'fld-' + (++formSeq) + '-' + name; }

/** A labelled input with its help text and its `[data-error-for]` element. */
function field(o) {
  const id = fieldId(o.name);
  const errId = id + '-err';
  const helpId = o.help ? id + '-help' : null;
  let input;
  if (o.type === 'select') {
    input = h('select', { id, name: o.name, 'aria-describedby': [helpId, errId].filter(Boolean).join(' ') },
      o.options.map(([v, label]) => h('option', { value: v, selected: v === o.value, text: label })));
  } else {
    input = h('input', {
      id, name: o.name, type: o.type || 'text',
      value: o.value === null || o.value === undefined ? '' : String(o.value),
      autocomplete: o.autocomplete || 'off', inputmode: o.inputmode, placeholder: o.placeholder,
      spellcheck: o.spellcheck === undefined ? null : String(o.spellcheck),
      'aria-describedby': [helpId, errId].filter(Boolean).join(' '),
      required: o.required,
    });
  }
  return h('div', { class: 'field' + (o.wide ? ' field-wide' : '') },
    h('label', { for: id, text: o.label }),
    input,
    helpId ? h('p', { class: 'help', id: helpId, text: o.help }) : null,
    h('p', { class: 'error', id: errId, 'data-error-for': o.name }));
}

function checkField(o) {
  const id = fieldId(o.name);
  const errId = id + '-err';
  return h('div', { class: 'field field-check' },
    h('input', { id, name: o.name, type: 'checkbox', checked: !!o.checked, 'aria-describedby': errId }),
    h('label', { for: id, text: o.label }),
    o.help ? h('p', { class: 'help', text: o.help }) : null,
    h('p', { class: 'error', id: errId, 'data-error-for': o.name }));
}

function formError() { return h('p', { class: 'error form-error', 'data-error': 'form', role: 'alert' }); }

function clearErrors(f) {
  f.querySelectorAll('[data-error-for], [data-error="form"]').forEach((e) => { e.textContent = ''; });
  f.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
}

const CODE_FIELD = { slug_taken: 'slug', email_taken: 'email', signup_closed: null, bad_credentials: null };

/** The form field an API error is about: its `field`, or for a 400 (serde's
 *  message) the first of the form's field names it mentions. */
function errorField(f, e) {
  const has = (name) => !!f.querySelector(`[data-error-for="${name}"]`);
  if (e.field && has(e.field)) return e.field;
  if (e.code in CODE_FIELD && CODE_FIELD[e.code] && has(CODE_FIELD[e.code])) return CODE_FIELD[e.code];
  if (e.code === 'bad_request' && !e.field) {
    let best = null;
    let at = Infinity;
    f.querySelectorAll('[data-error-for]').forEach((el) => {
      const name = el.getAttribute('data-error-for');
      const m = new RegExp('(^|[^a-z_])' + name + '([^a-z_]|$)').exec(e.message);
      if (m && m.index < at) { at = m.index; best = name; }
    });
    return best;
  }
  return null;
}

/** Shows the API's message verbatim next to the field it names, else at the form's end. */
function showFormError(f, e) {
  const err = e instanceof ApiError ? e : new ApiError(0, { code: 'client', message: String(e && e.message ? e.message : e) });
  if (!(e instanceof ApiError)) console.error(e);
  const name = errorField(f, err);
  if (name) {
    const box = f.querySelector(`[data-error-for="${name}"]`);
    box.textContent = err.message;
    for (let d = box.closest('details'); d; d = d.parentElement && d.parentElement.closest('details')) d.open = true;
    const input = f.elements.namedItem(name);
    const el = input && input.length !== undefined && !input.tagName ? input[0] : input;
    if (el) {
      el.setAttribute('aria-invalid', 'true');
      el.focus();
    }
  } else {
    const box = f.querySelector('[data-error="form"]');
    if (box) box.textContent = err.message;
  }
}

/** Wires a submit handler: clears errors, disables the buttons while it runs, shows its error. */
function onSubmit(f, handler) {
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (f.dataset.busy === '1') return;
    clearErrors(f);
    f.dataset.busy = '1';
    f.setAttribute('aria-busy', 'true');
    const buttons = Array.from(f.querySelectorAll('button[type="submit"]'));
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await handler(new FormData(f), f);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401 && e.code !== 'bad_credentials')) showFormError(f, e);
    } finally {
      f.dataset.busy = '0';
      f.removeAttribute('aria-busy');
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return f;
}

/** A number as typed: a JSON number when it reads as one, else the text as is
 *  (the API refuses it with its own message); empty gives `empty`. */
function numberish(raw, empty) {
  const s = String(raw === null || raw === undefined ? '' : raw).trim();
  if (s === '') return empty;
  if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return Number(s);
  return s;
}

/** A button that runs an async action, disabled meanwhile; errors go to a toast. */
function actionButton(label, attrs, fn) {
  const b = h('button', Object.assign({ type: 'button', class: 'btn' }, attrs || {}), label);
  b.addEventListener('click', async () => {
    if (b.disabled) return;
    b.disabled = true;
    b.setAttribute('aria-busy', 'true');
    try { await fn(b); } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) toast(e.message || String(e), 'error');
    } finally {
      b.disabled = false;
      b.removeAttribute('aria-busy');
    }
  });
  return b;
}

/** A read-only value with a Copy button (falls back to selecting the text). */
function copyBox(value, label) {
  const id = fieldId('copy');
  const input = h('input', { id, type: 'text', value, readOnly: true, class: 'mono copy-input', spellcheck: 'false', 'aria-label': label });
  input.addEventListener('focus', () => input.select());
  const status = h('span', { class: 'muted copy-status', 'aria-live': 'polite' });
  const btn = h('button', { type: 'button', class: 'btn btn-small', text: 'Copy' });
  btn.addEventListener('click', async () => {
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
      await navigator.clipboard.writeText(value);
      status.textContent = 'Copied.';
    } catch (_) {
      input.focus();
      input.select();
      status.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    }
  });
  return h('div', { class: 'copy-box' }, input, btn, status);
}

// ---------------------------------------------------------------- status pills

const STATUS_CLASS = { up: 's-up', down: 's-down', unknown: 's-unknown', paused: 's-unknown', pending: 's-unknown', open: 's-unknown', none: 's-up' };

function pill(text, cls, attrs) {
  return h('span', Object.assign({ class: 'pill ' + (cls || STATUS_CLASS[text] || 's-unknown') }, attrs || {}), text);
}

function setPill(el, text, cls) {
  if (!el) return;
  el.textContent = text;
  el.className = 'pill ' + (cls || STATUS_CLASS[text] || 's-unknown');
}

/** The live status block: "Last round: up", "Confirmed: up", "Incident: none". */
function statusBlock() {
  return h('div', { class: 'status-block' },
    h('div', { class: 'kv' }, h('span', { class: 'k', text: 'Last round:' }), ' ',
      pill('—', 's-unknown', { 'data-field': 'latest-status' }), ' ',
      h('span', { class: 'muted small', 'data-part': 'latest-at' })),
    h('div', { class: 'kv' }, h('span', { class: 'k', text: 'Confirmed:' }), ' ',
      pill('unknown', 's-unknown', { 'data-field': 'state-status' })),
    h('div', { class: 'kv' }, h('span', { class: 'k', text: 'Incident:' }), ' ',
      pill('none', 's-up', { 'data-field': 'incident' }), ' ',
      h('span', { class: 'small', 'data-part': 'incident-since' })));
}

/** Paints a status block (found inside `root`). `v`: {latest, latestAt,
 *  state, incident: {id, started_at_ms?, opened_at_ms?} | null}. */
function paintStatus(root, v) {
  const latest = v.latest === 'up' || v.latest === 'down' || v.latest === 'unknown' ? v.latest : '—';
  setPill(root.querySelector('[data-field="latest-status"]'), latest, latest === '—' ? 's-unknown' : null);
  const at = root.querySelector('[data-part="latest-at"]');
  if (at) setContent(at, v.latestAt ? timeEl(v.latestAt) : '');
  const st = ['up', 'down', 'unknown'].includes(v.state) ? v.state : 'unknown';
  setPill(root.querySelector('[data-field="state-status"]'), st);
  const inc = root.querySelector('[data-field="incident"]');
  setPill(inc, v.incident ? 'open' : 'none', v.incident ? 's-down' : 's-up');
  const since = root.querySelector('[data-part="incident-since"]');
  if (since) {
    if (!v.incident) setContent(since);
    else if (v.incident.started_at_ms) setContent(since, 'since ', timeEl(v.incident.started_at_ms));
    else if (v.incident.opened_at_ms) setContent(since, 'opened ', timeEl(v.incident.opened_at_ms));
    else setContent(since, '#' + v.incident.id);
  }
  root.classList.toggle('has-incident', !!v.incident);
}

// ---------------------------------------------------------------- live updates (SSE)

/**
 * One EventSource on /v1/events while signed in. `site` events update every
 * `[data-site-id]` block in place; views subscribe for `open` (refetch
 * what may have been missed) and `site`. The browser reconnects by itself
 * after a dropped stream; when it gives up (an error answer, such as 401),
 * this reconnects with backoff after checking the session.
 */
const live = {
  es: null,
  timer: null,
  retries: 0,
  subs: new Set(),
  /** website_id -> {at_ms, seen (performance.now()), data} of the newest event. */
  seen: new Map(),

  start() {
    if (this.es || !session.signedIn || typeof EventSource === 'undefined') return;
    clearTimeout(this.timer);
    this.timer = null;
    const es = new EventSource('/v1/events');
    this.es = es;
    this.setIndicator('connecting');
    es.addEventListener('open', () => {
      this.retries = 0;
      this.setIndicator('on');
      this.subs.forEach((s) => { if (s.onOpen) s.onOpen(); });
    });
    es.addEventListener('site', (ev) => {
      let d;
      try { d = JSON.parse(ev.data); } catch (_) { return; }
      if (d && d.website_id !== undefined) this.apply(d);
    });
    // The server dropped changes for this stream (it fell behind): refetch.
    es.addEventListener('reload', () => {
      this.subs.forEach((s) => { if (s.onOpen) s.onOpen(); });
    });
    es.addEventListener('error', () => {
      if (es.readyState === 2 /* CLOSED */) {
        if (this.es === es) this.es = null;
        this.setIndicator('off');
        this.reconnectLater();
      } else {
        this.setIndicator('connecting');
      }
    });
  },

  reconnectLater() {
    if (!session.signedIn || this.timer) return;
    const delay = Math.min(60000, 2000 * Math.pow(2, this.retries++));
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (!session.signedIn) return;
      try { await api('GET', '/v1/account'); } catch (e) {
        if (e.status === 401) return; // api() signed out
      }
      this.start();
    }, delay);
  },

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.es) this.es.close();
    this.es = null;
    this.retries = 0;
    this.seen.clear();
    this.setIndicator('hidden');
  },

  apply(d) {
    const id = Number(d.website_id);
    const prev = this.seen.get(id);
    if (prev && typeof d.at_ms === 'number' && d.at_ms < prev.at_ms) return; // an older change
    const incident = d.open_incident_id === null || d.open_incident_id === undefined ? null
      : (prev && prev.incident && prev.incident.id === d.open_incident_id ? prev.incident
        : { id: d.open_incident_id, opened_at_ms: d.at_ms });
    const entry = { at_ms: d.at_ms || 0, seen: performance.now(), data: d, incident };
    this.seen.set(id, entry);
    const v = { latest: d.latest_status, latestAt: d.at_ms, state: d.state_status, incident };
    document.querySelectorAll(`[data-site-id="${id}"]`).forEach((el) => {
      // Keep the known start of an incident that is still the same one.
      const known = el._incident;
      if (v.incident && known && known.id === v.incident.id) v.incident = known;
      el._incident = v.incident;
      paintStatus(el, v);
    });
    this.subs.forEach((s) => { if (s.onSite) s.onSite(d); });
  },

  subscribe(sub) { this.subs.add(sub); return () => this.subs.delete(sub); },

  setIndicator(stateName) {
    const el = document.getElementById('live');
    if (!el) return;
    if (stateName === 'hidden') { el.hidden = true; el.textContent = ''; return; }
    el.hidden = false;
    el.className = 'live live-' + stateName;
    el.textContent = stateName === 'on' ? 'Live' : stateName === 'connecting' ? 'Connecting…' : 'Offline: retrying';
    el.title = stateName === 'on' ? 'Status changes appear as they happen.' : 'Live updates are not connected; pages refresh every minute.';
  },
};

// ---------------------------------------------------------------- charts (uPlot)

function haveUplot() { return typeof window.uPlot === 'function'; }

function palette() {
  return [1, 2, 3, 4, 5, 6, 7, 8].map((i) => cssVar('--c' + i, '#3366cc'));
}

/** A tiny latency sparkline (no axes, no cursor). Returns {update(points), destroy()}. */
function sparkline(container, points) {
  let chart = null;
  const draw = (pts) => {
    const vals = (pts || []).filter((p) => p && p[1] !== null && p[1] !== undefined).map((p) => p[1]);
    container.setAttribute('role', 'img');
    if (!vals.length) {
      if (chart) { chart.destroy(); chart = null; }
      setContent(container, h('span', { class: 'muted', text: '—' }));
      container.setAttribute('aria-label', 'No latency data');
      container.title = 'No latency data';
      return;
    }
    const last = vals[vals.length - 1];
    const label = `Median latency: latest ${fmtMs(last)}, range ${fmtMs(Math.min(...vals))} to ${fmtMs(Math.max(...vals))}`;
    container.setAttribute('aria-label', label);
    container.title = label;
    if (!haveUplot()) { setContent(container, fmtMs(last)); return; }
    const data = [pts.map((p) => p[0] / 1000), pts.map((p) => (p[1] === undefined ? null : p[1]))];
    if (chart) { chart.setData(data); return; }
    clear(container);
    const stroke = cssVar('--accent', '#2563eb');
    chart = new window.uPlot({
      width: 120,
      height: 32,
      class: 'spark',
      legend: { show: false },
      cursor: { show: false },
      select: { show: false },
      axes: [{ show: false }, { show: false }],
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
      series: [{}, { stroke, width: 1.5, points: { show: vals.length < 3, size: 3 }, spanGaps: false }],
      padding: [2, 2, 2, 2],
    }, data, container);
  };
  draw(points);
  return { update: draw, destroy() { if (chart) chart.destroy(); chart = null; } };
}

/** A latency line chart: one series per region, p50. */
function latencyChart(container, series, window_) {
  const regions = (series && series.regions) || [];
  const ts = new Set();
  regions.forEach((r) => (r.points || []).forEach((p) => ts.add(p[0])));
  const xs = Array.from(ts).sort((a, b) => a - b);
  const idx = new Map(xs.map((t, i) => [t, i]));
  const ys = regions.map((r) => {
    const arr = new Array(xs.length).fill(null);
    (r.points || []).forEach((p) => { arr[idx.get(p[0])] = p[1] === undefined ? null : p[1]; });
    return arr;
  });
  const any = ys.some((a) => a.some((v) => v !== null));
  if (!any) {
    setContent(container, h('p', { class: 'muted', text: `No latency data in the last ${window_}.` }));
    return { destroy() {} };
  }
  if (!haveUplot()) {
    setContent(container, h('p', { class: 'muted', text: 'The chart library did not load.' }));
    return { destroy() {} };
  }
  clear(container);
  const colors = palette();
  const fg = cssVar('--muted', '#666');
  const grid = cssVar('--grid', 'rgba(0,0,0,0.08)');
  const width = () => Math.max(260, Math.floor(container.clientWidth || 600));
  const chart = new window.uPlot({
    width: width(),
    height: 240,
    class: 'latency-chart',
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 100] } },
    axes: [
      { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } },
      { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, size: 64,
        values: (u, vals) => vals.map((v) => (v === null ? '' : Math.round(v) + ' ms')) },
    ],
    series: [
      { label: 'Time' },
      ...regions.map((r, i) => ({
        label: r.region,
        stroke: colors[i % colors.length],
        width: 2,
        spanGaps: false,
        points: { show: false },
        value: (u, v) => (v === null || v === undefined ? '—' : fmtMs(v)),
      })),
    ],
  }, [xs.map((t) => t / 1000), ...ys], container);
  let ro = null;
  if (typeof ResizeObserver !== 'undefined') {
    let last = container.clientWidth;
    ro = new ResizeObserver(() => {
      const w = container.clientWidth;
      if (w && Math.abs(w - last) > 4) { last = w; chart.setSize({ width: width(), height: 240 }); }
    });
    ro.observe(container);
  }
  return { destroy() { if (ro) ro.disconnect(); chart.destroy(); } };
}

// ---------------------------------------------------------------- router

const routes = [
  { re: /^\/signin$/, view: viewSignin, public: true, anonOnly: true, title: 'Sign in' },
  { re: /^\/signup$/, view: viewSignup, public: true, anonOnly: true, title: 'Sign up' },
  { re: /^\/sites$/, view: viewSites, nav: 'sites', title: 'Sites' },
  { re: /^\/sites\/(\d+)$/, view: viewSite, nav: 'sites', title: 'Site' },
  { re: /^\/keys$/, view: viewKeys, nav: 'keys', title: 'API keys' },
  { re: /^\/alerts$/, view: viewAlerts, nav: 'alerts', title: 'Alerts' },
  { re: /^\/status-page$/, view: viewStatusPage, nav: 'status-page', title: 'Status page' },
  { re: /^\/validator$/, view: viewValidatorForm, public: true, nav: 'validator', title: 'Validator' },
  { re: /^\/validator\/([^/]+)$/, view: viewValidator, public: true, nav: 'validator', title: 'Validator earnings' },
];

function currentPath() {
  const raw = location.hash.replace(/^#/, '');
  return raw.split('?')[0] || '';
}

function matchRoute(path) {
  for (const route of routes) {
    const m = route.re.exec(path);
    if (m) return { route, params: m.slice(1).map((p) => { try { return decodeURIComponent(p); } catch (_) { return p; } }) };
  }
  return null;
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

let renderSeq = 0;
let cleanups = [];
let firstRender = true;

function runCleanups() {
  const fns = cleanups;
  cleanups = [];
  for (const fn of fns) { try { fn(); } catch (e) { console.error(e); } }
}

async function render() {
  const seq = ++renderSeq;
  document.body.dataset.ready = '0';
  runCleanups();
  let path = currentPath();
  if (!path || path === '/') {
    path = session.signedIn ? '/sites' : '/signin';
    history.replaceState(null, '', '#' + path);
  }
  let m = matchRoute(path);
  if (m && !m.route.public && !session.signedIn) {
    path = '/signin';
    history.replaceState(null, '', '#/signin');
    m = matchRoute(path);
  } else if (m && m.route.anonOnly && session.signedIn) {
    path = '/sites';
    history.replaceState(null, '', '#/sites');
    m = matchRoute(path);
  }
  updateNav(m && m.route.nav);
  const main = $main();
  clear(main);
  const ctx = {
    seq,
    main,
    alive: () => seq === renderSeq,
    onCleanup: (fn) => { if (seq === renderSeq) cleanups.push(fn); else fn(); },
    setTitle: (t) => { if (seq === renderSeq) document.title = t + ' · Uptime'; },
  };
  try {
    if (!m) {
      ctx.setTitle('Not found');
      append(main, h('h1', { text: 'Page not found' }),
        h('p', {}, 'There is no page at ', h('code', { text: '#' + path }), '. ', h('a', { href: session.signedIn ? '#/sites' : '#/signin', text: 'Go to the start page' }), '.'));
    } else {
      ctx.setTitle(m.route.title);
      await m.route.view(ctx, ...m.params);
    }
  } catch (e) {
    if (ctx.alive() && !(e instanceof ApiError && e.status === 401)) {
      console.error(e);
      append(main, h('div', { class: 'notice notice-error', role: 'alert' }, h('strong', { text: 'Something went wrong: ' }), e.message || String(e)));
    }
  }
  if (!ctx.alive()) return;
  if (!firstRender) {
    const h1 = main.querySelector('h1');
    if (h1) { h1.setAttribute('tabindex', '-1'); h1.focus({ preventScroll: true }); }
    window.scrollTo(0, 0);
  }
  firstRender = false;
  document.body.dataset.ready = '1';
}

function updateNav(active) {
  const auth = document.getElementById('nav-links-auth');
  const anon = document.getElementById('nav-links-anon');
  if (auth) auth.hidden = !session.signedIn;
  if (anon) anon.hidden = session.signedIn;
  const path = currentPath();
  document.querySelectorAll('#nav a[data-nav]').forEach((a) => {
    const on = active ? a.dataset.nav === active : ('/' + a.dataset.nav) === path;
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  });
}

// ---------------------------------------------------------------- sign in / sign up

function credentialsForm(id, submitLabel, passwordAutocomplete) {
  return form(id, { class: 'stack narrow' },
    field({ label: 'Email', name: 'email', type: 'email', autocomplete: 'username', spellcheck: false }),
    field({ label: 'Password', name: 'password', type: 'password', autocomplete: passwordAutocomplete,
      help: passwordAutocomplete === 'new-password' ? '10 to 256 bytes.' : null }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', text: submitLabel })));
}

function signedIn(resp) {
  session.signedIn = true;
  session.account = resp.account || null;
  session.csrf = resp.csrf_token || null;
  updateNav();
  live.start();
}

async function viewSignin(ctx) {
  const f = credentialsForm('signin-form', 'Sign in', 'current-password');
  onSubmit(f, async (fd) => {
    const resp = await api('POST', '/v1/sessions', { email: String(fd.get('email') || '').trim(), password: String(fd.get('password') || '') });
    signedIn(resp);
    go('#/sites');
  });
  append(ctx.main,
    h('h1', { text: 'Sign in' }),
    f,
    h('p', {}, 'No account yet? ', h('a', { href: '#/signup', text: 'Sign up' }), '.'),
    h('p', { class: 'muted' }, 'Run a validator? ', h('a', { href: '#/validator', text: 'Look up its earnings' }), ' (no sign-in needed).'));
}

async function viewSignup(ctx) {
  const f = credentialsForm('signup-form', 'Create account', 'new-password');
  onSubmit(f, async (fd) => {
    const resp = await api('POST', '/v1/accounts', { email: String(fd.get('email') || '').trim(), password: String(fd.get('password') || '') });
    signedIn(resp);
    go('#/sites');
  });
  append(ctx.main,
    h('h1', { text: 'Sign up' }),
    f,
    h('p', {}, 'Have an account? ', h('a', { href: '#/signin', text: 'Sign in' }), '.'));
}

// ---------------------------------------------------------------- sites: shared

/** The account's sites with their live state. `/v1/overview`; while a
 *  server lacks it (404 no such route), the plain list without state. */
async function fetchOverview() {
  try {
    const o = await api('GET', '/v1/overview');
    return (o && o.sites) || [];
  } catch (e) {
    if (e.status !== 404) throw e;
    const items = await apiAll('/v1/websites');
    return items.map((s) => ({
      id: s.id, name: s.name, url: s.url, paused: s.paused, interval_secs: s.interval_secs,
      latest: null, state: { status: 'unknown', open_incident: null }, regions: [],
      uptime_24h_pct: s.uptime_24h_pct, sparkline: [],
    }));
  }
}

/** Overview fields, with live events newer than the fetch laid over them. */
function liveView(site, fetchedAt) {
  const v = {
    latest: site.latest ? site.latest.status : '—',
    latestAt: site.latest ? site.latest.scheduled_at_ms : null,
    state: site.state ? site.state.status : 'unknown',
    incident: site.state && site.state.open_incident ? site.state.open_incident : null,
  };
  const l = live.seen.get(Number(site.id));
  if (l && l.seen > fetchedAt) {
    v.latest = l.data.latest_status;
    v.latestAt = l.data.at_ms;
    v.state = l.data.state_status;
    if (l.data.open_incident_id === null || l.data.open_incident_id === undefined) v.incident = null;
    else if (!v.incident || v.incident.id !== l.data.open_incident_id) v.incident = l.incident;
  }
  return v;
}

function siteForm(id, site, submitLabel) {
  const s = site || {};
  const isEdit = !!site;
  const f = form(id, { class: 'site-form' },
    h('div', { class: 'grid' },
      field({ label: 'Name', name: 'name', value: s.name, help: 'Optional, at most 100 characters.' }),
      field({ label: 'URL', name: 'url', type: 'url', value: s.url, placeholder: 'https://example.com/health', inputmode: 'url', spellcheck: false, wide: true }),
      field({ label: 'Check every (seconds)', name: 'interval_secs', inputmode: 'numeric', value: s.interval_secs,
        help: isEdit ? null : `Default 60, or your account's minimum${session.account ? ' (' + session.account.min_interval_secs + ' s)' : ''} if larger.` }),
      field({ label: 'Timeout (ms)', name: 'timeout_ms', inputmode: 'numeric', value: s.timeout_ms, help: isEdit ? null : '100 to 60000, at most the interval. Default 10000.' })),
    h('details', { class: 'more' },
      h('summary', { text: 'More settings' }),
      h('div', { class: 'grid' },
        field({ label: 'Lowest HTTP status counted as up', name: 'expected_status_min', inputmode: 'numeric', value: s.expected_status_min, help: isEdit ? null : 'Default 200.' }),
        field({ label: 'Highest HTTP status counted as up', name: 'expected_status_max', inputmode: 'numeric', value: s.expected_status_max, help: isEdit ? null : 'Default 399.' }),
        field({ label: 'Keyword the body must contain', name: 'keyword', value: s.keyword, help: 'Case-sensitive, in the first MiB. Empty: none.' }),
        field({ label: 'Latency alert threshold (ms)', name: 'latency_threshold_ms', inputmode: 'numeric', value: s.latency_threshold_ms, help: 'Empty: no latency alerts.' }),
        field({ label: 'Rounds above it before alerting', name: 'latency_alert_rounds', inputmode: 'numeric', value: s.latency_alert_rounds, help: isEdit ? null : 'Default 3.' })),
      checkField({ label: 'Follow redirects (up to 5)', name: 'follow_redirects', checked: site ? s.follow_redirects : true })),
    formError());
  return f;
}

/** The body of a create (absent = default) or a PATCH (empty clears what may be cleared). */
function siteBody(fd, isPatch) {
  const b = {};
  const str = (k) => String(fd.get(k) === null ? '' : fd.get(k));
  b.url = str('url').trim();
  const name = str('name').trim();
  if (name) b.name = name; else if (isPatch) b.name = null;
  for (const k of ['interval_secs', 'timeout_ms', 'expected_status_min', 'expected_status_max', 'latency_alert_rounds']) {
    const v = numberish(fd.get(k), undefined);
    if (v !== undefined) b[k] = v;
  }
  const thr = numberish(fd.get('latency_threshold_ms'), isPatch ? null : undefined);
  if (thr !== undefined) b.latency_threshold_ms = thr;
  const kw = str('keyword');
  if (kw !== '') b.keyword = kw; else if (isPatch) b.keyword = null;
  b.follow_redirects = fd.get('follow_redirects') !== null;
  return b;
}

/** The edit dialog: loads the site's settings, PATCHes what the form says. */
async function editSite(id, onSaved) {
  const site = await api('GET', `/v1/websites/${id}`);
  const f = siteForm('site-edit-form', site);
  const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'edit-title' });
  const close = () => { dlg.close(); };
  dlg.addEventListener('close', () => dlg.remove());
  append(f, h('div', { class: 'actions' },
    h('button', { type: 'submit', class: 'btn btn-primary', text: 'Save' }),
    h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: close } })));
  onSubmit(f, async (fd) => {
    const saved = await api('PATCH', `/v1/websites/${id}`, siteBody(fd, true));
    close();
    toast(`Saved ${siteLabel(saved)}.`);
    if (onSaved) onSaved(saved);
  });
  append(dlg, h('h2', { id: 'edit-title', text: `Edit ${siteLabel(site)}` }), f);
  document.body.appendChild(dlg);
  if (typeof dlg.showModal === 'function') dlg.showModal(); else dlg.setAttribute('open', '');
  const first = f.querySelector('input');
  if (first) first.focus();
}

async function setPaused(id, paused) {
  return api('POST', `/v1/websites/${id}/${paused ? 'pause' : 'resume'}`);
}

async function deleteSite(site) {
  if (!window.confirm(`Delete ${siteLabel(site)} (${site.url})?\n\nIt is no longer checked or shown. This cannot be undone.`)) return false;
  await api('DELETE', `/v1/websites/${site.id}`);
  toast(`Deleted ${siteLabel(site)}.`);
  return true;
}

// ---------------------------------------------------------------- sites list

async function viewSites(ctx) {
  const main = ctx.main;
  const tbody = h('tbody');
  const table = h('table', { class: 'sites cards-sm' },
    h('caption', { class: 'visually-hidden', text: 'Your sites and their current state' }),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Site' }),
      h('th', { scope: 'col', text: 'Status' }),
      h('th', { scope: 'col', text: 'Last check per region' }),
      h('th', { scope: 'col', text: 'Uptime 24 h' }),
      h('th', { scope: 'col', text: 'Latency' }),
      h('th', { scope: 'col', text: 'Actions' }))),
    tbody);
  const empty = h('p', { class: 'empty', hidden: true }, 'No sites yet. Add one below: validators in several regions start checking it within a minute.');
  const loadError = h('div', { class: 'notice notice-error', role: 'alert', hidden: true });
  const rows = new Map(); // id -> {tr, spark, site}
  let applied = 0;
  let started = 0;

  async function refresh() {
    const mine = ++started;
    const at = performance.now();
    let sites;
    try {
      sites = await fetchOverview();
    } catch (e) {
      if (!ctx.alive() || e.status === 401) return;
      loadError.hidden = false;
      setContent(loadError, 'Could not load your sites: ' + e.message);
      return;
    }
    if (!ctx.alive() || mine < applied) return;
    applied = mine;
    loadError.hidden = true;
    const keep = new Set();
    sites.forEach((site) => {
      keep.add(site.id);
      let row = rows.get(site.id);
      if (!row) { row = makeRow(site); rows.set(site.id, row); }
      fillRow(row, site, at);
      tbody.appendChild(row.tr); // in the overview's order
    });
    for (const [id, row] of rows) {
      if (!keep.has(id)) { row.spark.destroy(); row.tr.remove(); rows.delete(id); }
    }
    empty.hidden = sites.length > 0;
    table.hidden = sites.length === 0;
  }

  function makeRow(site) {
    const tr = h('tr', { 'data-site-id': site.id });
    const row = { tr, site };
    const link = h('a', { href: `#/sites/${site.id}`, class: 'site-link' });
    const nameExtra = h('span');
    const nameMeta = h('div', { class: 'small muted' });
    const sparkBox = h('div', { class: 'spark-box' });
    // Buttons are made once (a refresh must not take the keyboard focus
    // away); they act on the row's current site.
    const pauseBtn = actionButton('Pause', { class: 'btn btn-small' }, async () => {
      const s = await setPaused(row.site.id, !row.site.paused);
      toast(`${s.paused ? 'Paused' : 'Resumed'} ${siteLabel(s)}.`);
      row.site = Object.assign({}, row.site, { paused: s.paused });
      paintButtons(row);
      await refresh();
    });
    const editBtn = actionButton('Edit', { class: 'btn btn-small' }, async () => {
      await editSite(row.site.id, () => refresh());
    });
    const delBtn = actionButton('Delete', { class: 'btn btn-small btn-danger' }, async () => {
      if (await deleteSite(row.site)) await refresh();
    });
    row.cells = {
      name: h('td', { class: 'c-name', 'data-label': 'Site' }, link, nameExtra, nameMeta),
      status: h('td', { class: 'c-status', 'data-label': 'Status' }, statusBlock()),
      regions: h('td', { class: 'c-regions', 'data-label': 'Last check per region' }),
      uptime: h('td', { class: 'c-uptime', 'data-label': 'Uptime 24 h' }),
      spark: h('td', { class: 'c-spark', 'data-label': 'Latency (median)' }, sparkBox),
      actions: h('td', { class: 'c-actions', 'data-label': 'Actions' }, h('div', { class: 'btn-row' }, pauseBtn, editBtn, delBtn)),
    };
    Object.assign(row, { link, nameExtra, nameMeta, pauseBtn, editBtn, delBtn, spark: sparkline(sparkBox, []) });
    append(tr, Object.values(row.cells));
    return row;
  }

  function paintButtons(row) {
    const label = siteLabel(row.site);
    row.pauseBtn.textContent = row.site.paused ? 'Resume' : 'Pause';
    row.pauseBtn.setAttribute('aria-label', `${row.site.paused ? 'Resume' : 'Pause'} ${label}`);
    row.editBtn.setAttribute('aria-label', `Edit ${label}`);
    row.delBtn.setAttribute('aria-label', `Delete ${label}`);
  }

  function fillRow(row, site, fetchedAt) {
    row.site = site;
    const { cells } = row;
    row.link.textContent = siteLabel(site);
    setContent(row.nameExtra, site.paused ? [' ', pill('paused', 's-unknown', { title: 'Not checked while paused' })] : null);
    setContent(row.nameMeta,
      h('span', { class: 'url wrap-anywhere', text: site.url }),
      site.interval_secs ? h('span', { text: ` · every ${fmtDuration(site.interval_secs * 1000)}` }) : null);
    const v = liveView(site, fetchedAt);
    row.tr._incident = v.incident;
    paintStatus(row.tr, v);
    const regs = site.regions || [];
    setContent(cells.regions, regs.length
      ? h('ul', { class: 'regions' }, regs.map((r) => {
        const detail = [r.http_status ? 'HTTP ' + r.http_status : null, r.error].filter(Boolean).join(': ');
        return h('li', { title: `${r.region}: ${r.up ? 'up' : 'down'}${detail ? ' (' + detail + ')' : ''}, checked ${r.checked_at_ms ? fmtFull.format(new Date(r.checked_at_ms)) : '—'}` },
          h('span', { class: 'region-name', text: r.region }), ' ',
          pill(r.up ? 'up' : 'down'), ' ',
          h('span', { class: 'small', text: r.up ? fmtMs(r.latency_ms) : (r.http_status ? 'HTTP ' + r.http_status : 'error') }));
      }))
      : h('span', { class: 'muted', text: 'No checks yet' }));
    setContent(cells.uptime, h('span', { class: 'uptime-num', text: fmtPct(site.uptime_24h_pct) }));
    row.spark.update(site.sparkline || []);
    paintButtons(row);
  }

  const addForm = siteForm('site-form', null);
  append(addForm, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', text: 'Add site' })));
  onSubmit(addForm, async (fd, f) => {
    const created = await api('POST', '/v1/websites', siteBody(fd, false));
    f.reset();
    toast(`Added ${siteLabel(created)}. Its first check comes within its interval.`);
    await refresh();
  });

  append(main,
    h('div', { class: 'page-head' }, h('h1', { text: 'Sites' })),
    loadError,
    h('div', { class: 'table-wrap sites-wrap' }, table),
    empty,
    h('section', { class: 'card', 'aria-labelledby': 'add-site-h' },
      h('h2', { id: 'add-site-h', text: 'Add a site' }),
      addForm));
  table.hidden = true;

  ctx.onCleanup(live.subscribe({
    onOpen: () => refresh(),
    // A site this page does not show yet (added elsewhere): fetch the list
    // now. A change of one it shows is already painted; its other columns
    // (last checks, uptime) follow in one refetch a second later, however
    // many changes come meanwhile.
    onSite: (d) => {
      if (!rows.has(Number(d.website_id))) { refresh(); return; }
      if (!followUp) followUp = setTimeout(() => { followUp = null; refresh(); }, 1000);
    },
  }));
  let followUp = null;
  ctx.onCleanup(() => clearTimeout(followUp));
  const timer = setInterval(() => { if (document.visibilityState !== 'hidden') refresh(); }, 60000);
  ctx.onCleanup(() => clearInterval(timer));
  ctx.onCleanup(() => rows.forEach((r) => r.spark.destroy()));
  await refresh();
}

// ---------------------------------------------------------------- site page

function section(title, id, ...children) {
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id, text: title }), children);
}

function loading(text) { return h('p', { class: 'muted loading', text: text || 'Loading…' }); }

function errorNote(prefix, e) {
  return h('p', { class: 'notice notice-error', role: 'alert' }, prefix ? prefix + ': ' : '', e.message || String(e));
}

function uptimeClass(p) {
  if (p === null || p === undefined) return 'u-none';
  if (p >= 99.9) return 'u-good';
  if (p >= 99) return 'u-ok';
  if (p >= 95) return 'u-warn';
  return 'u-bad';
}

function dayLabel(d) {
  const day = utcDay(d.day_ms);
  if (d.uptime_pct === null || d.uptime_pct === undefined) {
    return `${day}: no data` + (d.rounds_unknown ? ` (${d.rounds_unknown} rounds unknown)` : '');
  }
  const down = (d.rounds_decided || 0) - (d.rounds_up || 0);
  return `${day}: ${fmtPct(d.uptime_pct)} (${down} of ${d.rounds_decided || 0} rounds down` +
    (d.rounds_unknown ? `, ${d.rounds_unknown} unknown` : '') + ')';
}

function renderDaily(box, daily) {
  const days = (daily && daily.days) || [];
  if (!days.length) { setContent(box, h('p', { class: 'muted', text: 'No data yet.' })); return; }
  let up = 0;
  let decided = 0;
  days.forEach((d) => { up += d.rounds_up || 0; decided += d.rounds_decided || 0; });
  const bars = h('div', { class: 'bars', role: 'group', 'aria-label': `Daily uptime, ${days.length} days, oldest first` },
    days.map((d) => {
      const label = dayLabel(d);
      return h('span', { class: 'bar ' + uptimeClass(d.uptime_pct), tabindex: '0', role: 'img', title: label, 'aria-label': label, 'data-tip': label });
    }));
  setContent(box,
    h('p', { class: 'summary' }, h('strong', { text: fmtPct(decided ? (up * 100) / decided : null) }),
      ` over ${days.length} days`, decided ? ` (${fmtInt(decided - up)} of ${fmtInt(decided)} rounds down)` : ''),
    h('div', { class: 'bars-wrap' }, bars),
    h('div', { class: 'bars-axis small muted' }, h('span', { text: utcDay(days[0].day_ms) }), h('span', { text: utcDay(days[days.length - 1].day_ms) + ' (UTC days)' })),
    h('ul', { class: 'legend small' },
      [['u-good', '≥ 99.9%'], ['u-ok', '≥ 99%'], ['u-warn', '≥ 95%'], ['u-bad', 'below 95%'], ['u-none', 'no data']]
        .map(([c, t]) => h('li', {}, h('span', { class: 'swatch ' + c, 'aria-hidden': 'true' }), ' ', t))));
}

function resultCell(list) {
  if (!list || !list.length) return h('span', { class: 'muted', text: '—' });
  return h('div', { class: 'results' }, list.map((t) => {
    const detail = t.up ? fmtMs(t.latency_ms) : (t.http_status ? 'HTTP ' + t.http_status : 'error');
    return h('div', { title: [t.http_status ? 'HTTP ' + t.http_status : null, t.error, 'validator ' + t.validator].filter(Boolean).join(' · ') },
      pill(t.up ? 'up' : 'down'), ' ', h('span', { class: 'small nowrap', text: detail }),
      !t.up && t.error ? h('div', { class: 'small muted wrap-anywhere clamp', text: t.error }) : null);
  }));
}

function renderRounds(box, page) {
  const rounds = (page && page.items) || [];
  if (!rounds.length) { setContent(box, h('p', { class: 'muted', text: 'No rounds yet.' })); return; }
  const regions = [];
  rounds.forEach((r) => (r.results || []).forEach((t) => { if (!regions.includes(t.region)) regions.push(t.region); }));
  regions.sort();
  setContent(box, h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Time' }), h('th', { scope: 'col', text: 'Status' }),
      regions.map((r) => h('th', { scope: 'col', text: r })))),
    h('tbody', {}, rounds.map((r) => h('tr', {},
      h('td', { class: 'nowrap' }, timeEl(r.scheduled_at_ms)),
      h('td', {}, pill(r.status)),
      regions.map((reg) => h('td', {}, resultCell((r.results || []).filter((t) => t.region === reg))))))))));
}

function renderIncidents(box, items, more) {
  if (!items.length) { setContent(box, h('p', { class: 'muted', text: 'No incidents. An incident opens after 2 down rounds in a row.' })); return; }
  setContent(box, h('ol', { class: 'timeline' }, items.map((i) => {
    const open = i.resolved_at_ms === null || i.resolved_at_ms === undefined;
    const dur = (open ? Date.now() : i.resolved_at_ms) - i.started_at_ms;
    return h('li', { class: open ? 'open' : 'resolved' },
      h('div', { class: 'tl-head' },
        pill(open ? 'open' : 'resolved', open ? 's-down' : 's-up'), ' ',
        h('strong', { text: `Incident #${i.id}` }), ' ',
        h('span', { class: 'muted', text: open ? `ongoing for ${fmtDuration(dur)}` : `lasted ${fmtDuration(dur)}` })),
      h('ul', { class: 'tl-events small' },
        h('li', {}, 'Down since ', timeEl(i.started_at_ms), ' (first down round)'),
        h('li', {}, 'Opened ', timeEl(i.opened_at_ms)),
        open ? null : h('li', {}, 'Resolved ', timeEl(i.resolved_at_ms), ' (first up round)')),
      i.regions && i.regions.length ? h('details', { class: 'small' },
        h('summary', { text: 'What each region saw when it opened' }),
        h('ul', { class: 'plain' }, i.regions.map((r) => h('li', {},
          h('span', { class: 'region-name', text: r.region }), ' ', pill(r.up ? 'up' : 'down'), ' ',
          [r.http_status ? 'HTTP ' + r.http_status : null, r.up ? fmtMs(r.latency_ms) : null, r.error].filter(Boolean).join(' · '))))) : null);
  })), more || null);
}

function renderRegionsNow(box, st) {
  const regs = (st && st.regions) || [];
  const degraded = (st && st.degraded_regions) || [];
  setContent(box,
    regs.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('thead', {}, h('tr', {}, ['Region', 'Result', 'HTTP', 'Latency', 'Checked', 'Validator'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, regs.map((r) => h('tr', {},
        h('td', { text: r.region }),
        h('td', {}, pill(r.up ? 'up' : 'down'), r.error ? h('div', { class: 'small muted wrap-anywhere clamp', title: r.error, text: r.error }) : null),
        h('td', { text: r.http_status ? String(r.http_status) : '—' }),
        h('td', { class: 'nowrap', text: fmtMs(r.latency_ms) }),
        h('td', { class: 'nowrap' }, timeEl(r.checked_at_ms)),
        h('td', { class: 'mono small', title: r.validator, text: r.validator ? r.validator.slice(0, 8) + '…' : '—' }))))))
      : h('p', { class: 'muted', text: 'No checks in the last 24 hours.' }),
    degraded.length ? h('p', { class: 'notice' }, 'Degraded (the region sees it down while the others see it up): ',
      degraded.map((d, i) => [i ? ', ' : '', h('strong', { text: d.region }), ' since ', timeEl(d.since_ms)])) : null);
}

async function viewSite(ctx, idText) {
  const id = Number(idText);
  const main = ctx.main;
  let site;
  try {
    site = await api('GET', `/v1/websites/${id}`);
  } catch (e) {
    if (e.status === 401) return;
    append(main, h('p', {}, h('a', { href: '#/sites', text: '← All sites' })),
      h('h1', { text: e.status === 404 ? 'No such site' : 'Site' }), errorNote(e.status === 404 ? null : 'Could not load the site', e));
    return;
  }
  if (!ctx.alive()) return;
  ctx.setTitle(siteLabel(site));

  const summary = h('div', { class: 'site-summary', 'data-site-id': id }, statusBlock());
  const head = h('div', { class: 'page-head' });
  const settings = h('p', { class: 'small muted' });
  const regionsBox = h('div', {}, loading());
  const dailyBox = h('div', {}, loading());
  const chartBox = h('div', { class: 'chart-box' }, loading());
  const chartNote = h('div', { class: 'small' });
  const roundsBox = h('div', {}, loading());
  const incidentsBox = h('div', {}, loading());
  const badgeBox = h('div', {}, loading());
  let chart = null;
  ctx.onCleanup(() => { if (chart) chart.destroy(); });

  function paintHead() {
    setContent(head,
      h('h1', { text: siteLabel(site) }),
      site.paused ? pill('paused', 's-unknown') : null,
      h('div', { class: 'btn-row' },
        actionButton(site.paused ? 'Resume' : 'Pause', { class: 'btn' }, async () => {
          site = Object.assign({}, site, await setPaused(id, !site.paused));
          toast(site.paused ? 'Paused.' : 'Resumed.');
          paintHead();
          loadStatus();
        }),
        actionButton('Edit', { class: 'btn' }, async () => editSite(id, (s) => { site = Object.assign({}, site, s); paintHead(); })),
        actionButton('Delete', { class: 'btn btn-danger' }, async () => { if (await deleteSite(site)) go('#/sites'); })));
    setContent(settings,
      h('a', { href: site.url, rel: 'noopener noreferrer', target: '_blank', class: 'wrap-anywhere', text: site.url }),
      ` · every ${fmtDuration(site.interval_secs * 1000)} · timeout ${fmtInt(site.timeout_ms)} ms · up when HTTP ${site.expected_status_min}–${site.expected_status_max}`,
      site.keyword ? [' · keyword ', h('code', { text: site.keyword })] : null,
      site.follow_redirects ? ' · follows redirects' : ' · does not follow redirects',
      site.latency_threshold_ms ? ` · latency alert above ${fmtInt(site.latency_threshold_ms)} ms for ${site.latency_alert_rounds} rounds` : '');
  }
  paintHead();

  async function loadStatus() {
    try {
      const st = await api('GET', `/v1/websites/${id}/status`);
      if (!ctx.alive()) return;
      const prevIncident = summary._incident;
      const known = incidents.find((i) => i.id === st.open_incident);
      const incident = st.open_incident === null || st.open_incident === undefined ? null
        : known || (prevIncident && prevIncident.id === st.open_incident ? prevIncident : { id: st.open_incident });
      summary._incident = incident;
      paintStatus(summary, {
        latest: st.last_round ? st.last_round.status : '—',
        latestAt: st.last_round ? st.last_round.scheduled_at_ms : null,
        state: st.incident_state,
        incident,
      });
      renderRegionsNow(regionsBox, st);
    } catch (e) {
      if (ctx.alive()) setContent(regionsBox, errorNote('Could not load the status', e));
    }
  }

  async function loadDaily() {
    try {
      const d = await api('GET', `/v1/websites/${id}/uptime/daily?days=90`);
      if (ctx.alive()) renderDaily(dailyBox, d);
    } catch (e) { if (ctx.alive()) setContent(dailyBox, errorNote('Could not load daily uptime', e)); }
  }

  let windowSel = '24h';
  const winButtons = ['24h', '7d', '30d'].map((w) => {
    const b = h('button', { type: 'button', class: 'btn btn-small seg', 'aria-pressed': String(w === windowSel), text: w });
    b.addEventListener('click', () => {
      if (windowSel === w) return;
      windowSel = w;
      winButtons.forEach((x) => x.setAttribute('aria-pressed', String(x.textContent === w)));
      loadLatency();
    });
    return b;
  });
  let latencySeq = 0;
  async function loadLatency() {
    const mine = ++latencySeq;
    const w = windowSel;
    chartBox.setAttribute('aria-busy', 'true');
    try {
      const s = await api('GET', `/v1/websites/${id}/latency/series?window=${encodeURIComponent(w)}`);
      if (!ctx.alive() || mine !== latencySeq) return;
      if (chart) chart.destroy();
      chart = latencyChart(chartBox, s, w);
      const regs = s.regions || [];
      setContent(chartNote,
        s.bucket_secs ? h('p', { class: 'muted', text: `Median (p50) per region, ${fmtDuration(s.bucket_secs * 1000)} buckets. Time is local.` }) : null,
        regs.length ? h('ul', { class: 'plain' }, regs.map((r) => {
          const pts = (r.points || []).filter((p) => p[1] !== null && p[1] !== undefined);
          const last = pts[pts.length - 1];
          return h('li', {}, h('strong', { text: r.region }), ': ',
            last ? `latest p50 ${fmtMs(last[1])}, p95 ${fmtMs(last[2])}` : 'no data');
        })) : null);
    } catch (e) {
      if (!ctx.alive() || mine !== latencySeq) return;
      if (chart) { chart.destroy(); chart = null; }
      setContent(chartBox, errorNote('Could not load latency', e));
      setContent(chartNote);
    } finally {
      if (mine === latencySeq) chartBox.removeAttribute('aria-busy');
    }
  }

  async function loadRounds() {
    try {
      const r = await api('GET', `/v1/websites/${id}/rounds?limit=20`);
      if (ctx.alive()) renderRounds(roundsBox, r);
    } catch (e) { if (ctx.alive()) setContent(roundsBox, errorNote('Could not load rounds', e)); }
  }

  let incidents = [];
  async function loadIncidents(cursor) {
    try {
      const p = await api('GET', `/v1/websites/${id}/incidents?limit=20` + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
      if (!ctx.alive()) return;
      incidents = cursor ? incidents.concat(p.items || []) : (p.items || []);
      const open = incidents.find((i) => i.resolved_at_ms === null || i.resolved_at_ms === undefined);
      if (open && summary._incident && summary._incident.id === open.id) {
        summary._incident = open;
        const since = summary.querySelector('[data-part="incident-since"]');
        if (since) setContent(since, 'since ', timeEl(open.started_at_ms));
      }
      const more = p.next_cursor ? actionButton('Load older incidents', { class: 'btn btn-small' }, () => loadIncidents(p.next_cursor)) : null;
      renderIncidents(incidentsBox, incidents, more);
    } catch (e) { if (ctx.alive()) setContent(incidentsBox, errorNote('Could not load incidents', e)); }
  }

  function renderBadge() {
    const b = site.badge;
    if (!b) {
      setContent(badgeBox,
        h('p', {}, 'Badges are off. Turn them on to get two image links (current status, 30-day uptime) anyone can embed, for example in a README.'),
        h('div', { class: 'btn-row' }, actionButton('Turn on badges', { class: 'btn btn-primary' }, async () => {
          site.badge = await api('POST', `/v1/websites/${id}/badge`);
          renderBadge();
          toast('Badges on.');
        })));
      return;
    }
    const abs = (p) => { try { return new URL(p, location.origin).href; } catch (_) { return p; } };
    const item = (label, path) => h('div', { class: 'badge-item' },
      h('h3', { text: label }),
      h('img', { src: path, alt: `${label} badge of ${siteLabel(site)}`, class: 'badge-img' }),
      copyBox(abs(path), `${label} badge URL`),
      h('details', { class: 'small' }, h('summary', { text: 'Markdown' }), copyBox(`![${label.toLowerCase()}](${abs(path)})`, `${label} badge Markdown`)));
    setContent(badgeBox,
      item('Status', b.status_svg),
      item('Uptime', b.uptime_svg),
      h('div', { class: 'btn-row' },
        actionButton('New links', { class: 'btn' }, async () => {
          if (!window.confirm('Make new badge links? The current links stop working at once.')) return;
          site.badge = await api('POST', `/v1/websites/${id}/badge`);
          renderBadge();
          toast('New badge links made; the old ones no longer work.');
        }),
        actionButton('Turn off badges', { class: 'btn btn-danger' }, async () => {
          if (!window.confirm('Turn badges off? The current links stop working at once.')) return;
          await api('DELETE', `/v1/websites/${id}/badge`);
          site.badge = null;
          renderBadge();
          toast('Badges off.');
        })),
      h('p', { class: 'small muted', text: 'New links replace the old ones: anything embedding the old links shows nothing until updated.' }));
  }
  if (site.badge === undefined) site.badge = null;

  append(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/sites', text: '← All sites' })),
    head,
    settings,
    summary,
    section('Now, per region', 'now-h', regionsBox),
    section('Uptime, last 90 days', 'daily-h', dailyBox),
    section('Latency', 'lat-h', h('div', { class: 'seg-group', role: 'group', 'aria-label': 'Time window' }, winButtons), chartBox, chartNote),
    section('Recent rounds', 'rounds-h', roundsBox),
    section('Incidents', 'inc-h', incidentsBox),
    section('Status badges', 'badge-h', badgeBox));
  renderBadge();

  // Live: a change of this site refreshes what it changes (debounced).
  let t = null;
  const refreshLive = () => {
    clearTimeout(t);
    t = setTimeout(() => { if (ctx.alive()) { loadStatus(); loadRounds(); loadIncidents(); } }, 800);
  };
  ctx.onCleanup(live.subscribe({
    onSite: (d) => { if (Number(d.website_id) === id) refreshLive(); },
    onOpen: () => refreshLive(),
  }));
  const timer = setInterval(() => { if (document.visibilityState !== 'hidden') { loadStatus(); loadRounds(); } }, 60000);
  ctx.onCleanup(() => { clearInterval(timer); clearTimeout(t); });

  await Promise.all([loadStatus(), loadDaily(), loadLatency(), loadRounds(), loadIncidents()]);
}

// ---------------------------------------------------------------- API keys

async function viewKeys(ctx) {
  const main = ctx.main;
  const listBox = h('div', {}, loading());
  const secretBox = h('div', { 'aria-live': 'polite' });

  async function load() {
    try {
      const r = await api('GET', '/v1/keys');
      if (!ctx.alive()) return;
      const keys = (r && r.items) || [];
      if (!keys.length) { setContent(listBox, h('p', { class: 'muted', text: 'No keys yet.' })); return; }
      setContent(listBox, h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
        h('thead', {}, h('tr', {}, ['Name', 'Key', 'Scope', 'Created', 'Last used', ''].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, keys.map((k) => h('tr', { 'data-key-id': k.id, class: k.revoked_at_ms ? 'revoked' : null },
          h('td', { class: 'wrap-anywhere', text: k.name }),
          h('td', { class: 'mono nowrap', text: `upk_${k.prefix}_…` }),
          h('td', {}, pill(k.scope, k.scope === 'write' ? 's-warn' : 's-neutral')),
          h('td', { class: 'nowrap' }, timeEl(k.created_at_ms)),
          h('td', { class: 'nowrap' }, k.last_used_at_ms ? timeEl(k.last_used_at_ms) : h('span', { class: 'muted', text: 'never' })),
          h('td', { class: 'nowrap' }, k.revoked_at_ms
            ? h('span', { class: 'muted' }, 'revoked ', timeEl(k.revoked_at_ms))
            : actionButton('Revoke', { class: 'btn btn-small btn-danger', 'aria-label': `Revoke key ${k.name}` }, async () => {
              if (!window.confirm(`Revoke the key "${k.name}" (upk_${k.prefix}_…)? Programs using it are refused at once.`)) return;
              await api('DELETE', `/v1/keys/${k.id}`);
              toast(`Revoked ${k.name}.`);
              await load();
            }))))))));
    } catch (e) { if (ctx.alive() && e.status !== 401) setContent(listBox, errorNote('Could not load keys', e)); }
  }

  const f = form('key-form', { class: 'stack' },
    h('div', { class: 'grid' },
      field({ label: 'Name', name: 'name', help: 'For people: what uses it (1 to 100 characters).' }),
      field({ label: 'Scope', name: 'scope', type: 'select', value: 'read', options: [['read', 'read: may only read'], ['write', 'write: may also change websites']] })),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', text: 'Create key' })));
  onSubmit(f, async (fd, fm) => {
    const r = await api('POST', '/v1/keys', { name: String(fd.get('name') || ''), scope: String(fd.get('scope') || 'read') });
    fm.reset();
    setContent(secretBox, h('div', { class: 'notice notice-secret', role: 'alert' },
      h('h3', { text: `Your new key "${r.api_key.name}"` }),
      h('p', {}, h('strong', { text: 'Copy it now: it will not be shown again.' }), ' Only a hash of it is stored. Programs send it as ', h('code', { text: 'Authorization: Bearer <key>' }), '.'),
      copyBox(r.key, 'The new API key'),
      h('div', { class: 'actions' }, h('button', { type: 'button', class: 'btn btn-small', text: 'I have copied it', on: { click: () => clear(secretBox) } }))));
    const input = secretBox.querySelector('input');
    if (input) input.focus();
    await load();
  });

  append(main,
    h('h1', { text: 'API keys' }),
    h('p', { class: 'muted' }, 'Programs use keys instead of signing in. A read key may only read; a write key may also change websites. Keys cannot make keys. See ', h('a', { href: '/docs/', text: 'the API reference' }), '.'),
    secretBox,
    section('Create a key', 'key-new-h', f),
    section('Your keys', 'keys-h', listBox));
  await load();
}

// ---------------------------------------------------------------- alerts

const ALERT_EVENTS = [
  ['incident_opened', 'Incident opened'],
  ['incident_resolved', 'Incident resolved'],
  ['degradation_opened', 'Region degraded'],
  ['degradation_ended', 'Region recovered'],
  ['latency_high', 'Latency high'],
  ['latency_normal', 'Latency normal'],
];

const KIND_TARGET = {
  webhook: ['Webhook URL', 'https://example.com/hooks/uptime', 'We POST signed JSON to it (X-Signature).'],
  slack: ['Slack incoming-webhook URL', 'https://hooks.slack.com/services/…', null],
  discord: ['Discord webhook URL', 'https://discord.com/api/webhooks/…', null],
  email: ['Email address', 'oncall@example.com', 'Only when the server has email set up.'],
};

async function viewAlerts(ctx) {
  const main = ctx.main;
  const channelsBox = h('div', {}, loading());
  const secretBox = h('div', { 'aria-live': 'polite' });
  const logBox = h('div', {}, loading());
  let channels = [];
  let siteNames = new Map();

  async function loadChannels() {
    try {
      const r = await api('GET', '/v1/alert-channels');
      if (!ctx.alive()) return;
      channels = (r && r.items) || [];
      renderChannels();
    } catch (e) { if (ctx.alive() && e.status !== 401) setContent(channelsBox, errorNote('Could not load channels', e)); }
  }

  function renderChannels() {
    if (!channels.length) { setContent(channelsBox, h('p', { class: 'muted', text: 'No channels yet: nobody hears about incidents. Add one below.' })); return; }
    setContent(channelsBox, h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Target', 'Events', 'State', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, channels.map((c) => {
        const outcome = h('div', { class: 'small test-outcome', 'aria-live': 'polite' });
        return h('tr', { 'data-channel-id': c.id },
          h('td', { class: 'wrap-anywhere', text: c.name }),
          h('td', { text: c.kind }),
          h('td', { class: 'mono small wrap-anywhere', text: c.target }),
          h('td', { class: 'small' }, (c.events || []).join(', ')),
          h('td', {}, c.enabled ? pill('enabled', 's-up') : pill('disabled', 's-unknown')),
          h('td', {},
            h('div', { class: 'btn-row' },
              actionButton('Send test', { class: 'btn btn-small', 'aria-label': `Send a test alert to ${c.name}` }, async () => {
                setContent(outcome, 'Sending…');
                try {
                  const t = await api('POST', `/v1/alert-channels/${c.id}/test`);
                  setContent(outcome, t.delivered
                    ? h('span', { class: 'ok' }, '✓ Delivered', t.status ? ` (status ${t.status})` : '', `, delivery #${t.delivery_id}`)
                    : h('span', { class: 'bad' }, '✗ Not delivered', t.status ? ` (status ${t.status})` : '', t.error ? ': ' + t.error : '', `, delivery #${t.delivery_id}`));
                } catch (e) {
                  setContent(outcome, h('span', { class: 'bad', text: '✗ ' + e.message }));
                  throw e;
                }
                loadLog();
              }),
              actionButton(c.enabled ? 'Disable' : 'Enable', { class: 'btn btn-small', 'aria-label': `${c.enabled ? 'Disable' : 'Enable'} ${c.name}` }, async () => {
                await api('PATCH', `/v1/alert-channels/${c.id}`, { enabled: !c.enabled });
                await loadChannels();
              }),
              actionButton('Remove', { class: 'btn btn-small btn-danger', 'aria-label': `Remove ${c.name}` }, async () => {
                if (!window.confirm(`Remove the channel "${c.name}"? Its waiting alerts are not sent, and its delivery log goes too.`)) return;
                await api('DELETE', `/v1/alert-channels/${c.id}`);
                toast(`Removed ${c.name}.`);
                await loadChannels();
                loadLog();
              })),
            outcome));
      })))));
  }

  let logItems = [];
  async function loadLog(cursor) {
    try {
      const p = await api('GET', '/v1/alert-deliveries?limit=50' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
      if (!ctx.alive()) return;
      logItems = cursor ? logItems.concat(p.items || []) : (p.items || []);
      renderLog(p.next_cursor);
    } catch (e) { if (ctx.alive() && e.status !== 401) setContent(logBox, errorNote('Could not load the delivery log', e)); }
  }

  function renderLog(next) {
    const chName = new Map(channels.map((c) => [c.id, c.name]));
    const more = next ? actionButton('Load older', { class: 'btn btn-small' }, () => loadLog(next)) : null;
    if (!logItems.length) { setContent(logBox, h('p', { class: 'muted', text: 'Nothing sent yet.' })); return; }
    setContent(logBox, h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('thead', {}, h('tr', {}, ['Created', 'Channel', 'Site', 'Event', 'State', 'Attempts', 'Last status', 'Last error', 'Next / finished'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, logItems.map((d) => h('tr', { 'data-delivery-id': d.id },
        h('td', { class: 'nowrap' }, timeEl(d.created_at_ms)),
        h('td', { text: chName.get(d.channel_id) || `#${d.channel_id}` }),
        h('td', {}, d.website_id ? h('a', { href: `#/sites/${d.website_id}`, text: siteNames.get(d.website_id) || `#${d.website_id}` }) : h('span', { class: 'muted', text: '—' })),
        h('td', { class: 'nowrap', text: d.event }),
        h('td', {}, pill(d.state, d.state === 'delivered' ? 's-up' : d.state === 'dead' ? 's-down' : 's-unknown')),
        h('td', { text: String(d.attempts) }),
        h('td', { text: d.last_status === null || d.last_status === undefined ? '—' : String(d.last_status) }),
        h('td', { class: 'small wrap-anywhere', text: d.last_error || '—' }),
        h('td', { class: 'nowrap' }, d.state === 'pending' && d.next_attempt_at_ms ? ['next ', timeEl(d.next_attempt_at_ms)] : timeEl(d.finished_at_ms)))))),
    ), more);
  }

  const targetField = field({ label: KIND_TARGET.webhook[0], name: 'target', placeholder: KIND_TARGET.webhook[1], spellcheck: false, help: KIND_TARGET.webhook[2] || ' ', wide: true });
  const f = form('channel-form', { class: 'stack' },
    h('div', { class: 'grid' },
      field({ label: 'Kind', name: 'kind', type: 'select', value: 'webhook', options: [['webhook', 'Webhook'], ['slack', 'Slack'], ['discord', 'Discord'], ['email', 'Email']] }),
      field({ label: 'Name', name: 'name', placeholder: 'on-call' }),
      targetField),
    h('fieldset', { class: 'events' },
      h('legend', { text: 'Send these events' }),
      h('div', { class: 'check-grid' }, ALERT_EVENTS.map(([v, label]) => {
        const id = fieldId('ev-' + v);
        return h('div', { class: 'field-check' },
          h('input', { type: 'checkbox', id, name: 'events', value: v, checked: v === 'incident_opened' || v === 'incident_resolved' }),
          h('label', { for: id, text: label }), ' ', h('code', { class: 'small muted', text: v }));
      })),
      h('p', { class: 'error', 'data-error-for': 'events' })),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', text: 'Add channel' })));
  const kindSel = f.elements.namedItem('kind');
  kindSel.addEventListener('change', () => {
    const [label, ph, help] = KIND_TARGET[kindSel.value] || KIND_TARGET.webhook;
    targetField.querySelector('label').textContent = label;
    const input = targetField.querySelector('input');
    input.placeholder = ph;
    input.type = kindSel.value === 'email' ? 'email' : 'url';
    const helpEl = targetField.querySelector('.help');
    if (helpEl) helpEl.textContent = help || ' ';
  });
  targetField.querySelector('input').type = 'url';
  onSubmit(f, async (fd, fm) => {
    const body = {
      kind: String(fd.get('kind')),
      name: String(fd.get('name') || ''),
      target: String(fd.get('target') || '').trim(),
      events: fd.getAll('events').map(String),
    };
    const r = await api('POST', '/v1/alert-channels', body);
    fm.reset();
    kindSel.dispatchEvent(new Event('change'));
    toast(`Added ${r.channel.name}.`);
    if (r.secret) {
      setContent(secretBox, h('div', { class: 'notice notice-secret', role: 'alert' },
        h('h3', { text: `Signing secret of "${r.channel.name}"` }),
        h('p', {}, h('strong', { text: 'Copy it now: it will not be shown again.' }), ' Your receiver checks ', h('code', { text: 'X-Signature' }), ' with it (HMAC-SHA256; see the API docs).'),
        copyBox(r.secret, 'The webhook signing secret'),
        h('div', { class: 'actions' }, h('button', { type: 'button', class: 'btn btn-small', text: 'I have copied it', on: { click: () => clear(secretBox) } }))));
      const input = secretBox.querySelector('input');
      if (input) input.focus();
    }
    await loadChannels();
  });

  append(main,
    h('h1', { text: 'Alerts' }),
    h('p', { class: 'muted', text: 'Channels hear about your sites\' incidents (2 down rounds in a row open one, 2 up rounds resolve it) and, if you choose, regional degradations and high latency.' }),
    secretBox,
    section('Channels', 'ch-h', channelsBox),
    section('Add a channel', 'ch-new-h', f),
    section('Delivery log', 'log-h',
      h('div', { class: 'btn-row' }, actionButton('Refresh', { class: 'btn btn-small' }, () => loadLog())),
      logBox));

  const names = fetchOverview().then((sites) => { siteNames = new Map(sites.map((s) => [s.id, siteLabel(s)])); }).catch(() => {});
  await loadChannels();
  await names;
  await loadLog();
}

// ---------------------------------------------------------------- status page

async function viewStatusPage(ctx) {
  const main = ctx.main;
  let cfg;
  let cfgNote = null;
  const [cfgR, sitesR] = await Promise.allSettled([api('GET', '/v1/status-page'), fetchOverview()]);
  if (!ctx.alive()) return;
  if (cfgR.status === 'fulfilled') cfg = cfgR.value;
  else {
    if (cfgR.reason.status === 401) return;
    cfg = { slug: null, title: '', enabled: false, website_ids: [], url: null };
    cfgNote = errorNote('Could not load the status page settings', cfgR.reason);
  }
  const sites = sitesR.status === 'fulfilled' ? sitesR.value : [];
  const linkBox = h('div', { 'aria-live': 'polite' });
  const paintLink = () => {
    if (cfg.enabled && cfg.url) {
      const abs = new URL(cfg.url, location.origin).href;
      setContent(linkBox, h('p', { class: 'notice' }, 'Your status page is public at ',
        h('a', { href: cfg.url, target: '_blank', rel: 'noopener', class: 'wrap-anywhere', text: abs }), '.'));
    } else {
      setContent(linkBox, h('p', { class: 'muted', text: cfg.slug ? 'The page is off: nobody can see it.' : 'No status page yet: pick an address and turn it on.' }));
    }
  };
  paintLink();
  const selected = new Set(cfg.website_ids || []);
  const f = form('status-page-form', { class: 'stack' },
    h('div', { class: 'grid' },
      field({ label: 'Address (slug)', name: 'slug', value: cfg.slug, spellcheck: false, help: `The page is at ${location.origin}/status/<slug>.` }),
      field({ label: 'Title', name: 'title', value: cfg.title, wide: true })),
    checkField({ label: 'Public: anyone with the link can see it', name: 'enabled', checked: cfg.enabled }),
    h('fieldset', { class: 'events' },
      h('legend', { text: 'Sites on the page' }),
      sites.length ? h('div', { class: 'check-grid' }, sites.map((s) => {
        const id = fieldId('site-' + s.id);
        return h('div', { class: 'field-check' },
          h('input', { type: 'checkbox', id, name: 'website_ids', value: String(s.id), checked: selected.has(s.id) }),
          h('label', { for: id, text: siteLabel(s) }), ' ', h('span', { class: 'small muted wrap-anywhere', text: s.url }));
      })) : h('p', { class: 'muted' }, sitesR.status === 'rejected' ? 'Could not load your sites: ' + sitesR.reason.message : 'You have no sites yet.'),
      h('p', { class: 'error', 'data-error-for': 'website_ids' })),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', text: 'Save' })));
  onSubmit(f, async (fd) => {
    const slug = String(fd.get('slug') || '').trim();
    const body = {
      slug: slug === '' ? null : slug,
      title: String(fd.get('title') || ''),
      enabled: fd.get('enabled') !== null,
      website_ids: fd.getAll('website_ids').map((v) => Number(v)),
    };
    cfg = await api('PUT', '/v1/status-page', body);
    paintLink();
    toast('Saved.');
  });
  append(main,
    h('h1', { text: 'Status page' }),
    h('p', { class: 'muted', text: 'A public page showing the current status and uptime of the sites you choose.' }),
    cfgNote,
    linkBox,
    section('Settings', 'sp-h', f));
}

// ---------------------------------------------------------------- validator earnings

function validatorLookupForm(value) {
  const f = form('validator-form', { class: 'stack' },
    field({ label: 'Validator public key (base58)', name: 'public_key', value, spellcheck: false, wide: true, placeholder: '9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn btn-primary', text: 'Show earnings' })));
  onSubmit(f, async (fd) => {
    const pk = String(fd.get('public_key') || '').trim();
    if (!pk) throw new ApiError(0, { code: 'invalid_field', field: 'public_key', message: 'Enter a public key.' });
    go('#/validator/' + encodeURIComponent(pk));
  });
  return f;
}

async function viewValidatorForm(ctx) {
  append(ctx.main,
    h('h1', { text: 'Validator earnings' }),
    h('p', { class: 'muted', text: 'Validators check sites from their region and are paid in SOL for on-time results. Enter a validator\'s public key to see what it earned and was paid. No sign-in needed.' }),
    validatorLookupForm(''));
}

const EARNING_ROWS = [
  ['earned_lamports', 'Earned', 'Credited from settled rounds.'],
  ['settling_lamports', 'Settling', 'Results whose rounds are not settled yet (at most this).'],
  ['unclaimed_lamports', 'Unclaimed', 'Earned, not yet in a payout (below the minimum, or waiting for the next cycle).'],
  ['pending_lamports', 'Pending', 'In a payout not yet confirmed on chain.'],
  ['paid_lamports', 'Paid', 'In confirmed transactions.'],
  ['failed_lamports', 'Failed', 'Given up after repeated failures; waits for an operator.'],
  ['prepaid_lamports', 'Prepaid', 'Paid on chain beyond what the ledger credits (after a database restore); later earnings fill it.'],
];

async function viewValidator(ctx, pk) {
  const main = ctx.main;
  append(main, h('p', { class: 'crumbs' }, h('a', { href: '#/validator', text: '← Look up another validator' })),
    h('h1', { text: 'Validator earnings' }),
    h('p', { class: 'mono wrap-anywhere pk', text: pk }));
  let e;
  try {
    e = await api('GET', `/v1/validators/${encodeURIComponent(pk)}/earnings`, undefined, { noRedirect: true });
  } catch (err) {
    if (!ctx.alive()) return;
    append(main, errorNote(err.code === 'unknown_validator' ? 'Unknown validator' : err.code === 'invalid_public_key' ? 'Not a validator key' : 'Could not load the earnings', err),
      validatorLookupForm(pk));
    return;
  }
  if (!ctx.alive()) return;
  const a = e.agreement || {};
  const payouts = e.payouts || [];
  append(main,
    h('div', { class: 'cards' }, EARNING_ROWS.filter(([k]) => k !== 'prepaid_lamports' || e[k]).map(([k, label, help]) =>
      h('div', { class: 'stat', 'data-field': k },
        h('div', { class: 'stat-label', text: label }),
        h('div', { class: 'stat-value', text: fmtSol(e[k] || 0) }),
        h('div', { class: 'small mono', text: fmtInt(e[k] || 0) + ' lamports' }),
        h('div', { class: 'small muted', text: help })))),
    section('Agreement', 'agr-h',
      h('p', {}, h('strong', { class: 'big', text: a.rate === null || a.rate === undefined ? '—' : fmtPct(a.rate * 100) }), ' ',
        a.rate === null || a.rate === undefined ? 'no counted results yet' :
          `of results matched their round's majority (${fmtInt(a.agreed)} agreed, ${fmtInt(a.disagreed)} disagreed)`),
      h('p', { class: 'small muted', text: `${fmtInt(e.earning_ticks)} results earned a reward.` })),
    section('Payouts', 'pay-h', payouts.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data payouts cards-sm' },
      h('thead', {}, h('tr', {}, ['Created', 'Amount', 'State', 'Attempts', 'Paid', 'Signature', 'Last error'].map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, payouts.map((p) => h('tr', { 'data-payout-id': p.id },
        h('td', { class: 'nowrap', 'data-label': 'Created' }, timeEl(p.created_at_ms)),
        h('td', { class: 'nowrap', 'data-label': 'Amount' }, fmtSol(p.lamports), h('div', { class: 'small muted mono', text: fmtInt(p.lamports) + ' lamports' })),
        h('td', { 'data-label': 'State' }, pill(p.state, p.state === 'paid' ? 's-up' : p.state === 'failed' ? 's-down' : 's-unknown')),
        h('td', { 'data-label': 'Attempts', text: String(p.attempts) }),
        h('td', { class: 'nowrap', 'data-label': 'Paid' }, timeEl(p.paid_at_ms)),
        h('td', { class: 'mono sig', 'data-label': 'Signature', text: p.signature || '—' }),
        h('td', { class: 'small wrap-anywhere', 'data-label': 'Last error', text: p.last_error || '—' })))))) : h('p', { class: 'muted', text: 'No payouts yet.' })));
}

// ---------------------------------------------------------------- start

async function boot() {
  const out = document.getElementById('nav-signout');
  if (out) {
    out.addEventListener('click', async () => {
      out.disabled = true;
      try {
        await api('DELETE', '/v1/sessions/current', undefined, { noRedirect: true });
      } catch (e) {
        if (e.status !== 401) { toast('Sign-out failed: ' + e.message, 'error'); out.disabled = false; return; }
      }
      out.disabled = false;
      session.signedIn = false;
      session.account = null;
      session.csrf = null;
      live.stop();
      updateNav();
      go('#/signin');
    });
  }
  window.addEventListener('hashchange', () => render());
  try {
    const me = await api('GET', '/v1/account', undefined, { noRedirect: true });
    session.signedIn = true;
    session.account = me.account || null;
    session.csrf = me.csrf_token || null;
  } catch (e) {
    if (e.status !== 401) {
      // The API did not answer: say so, and offer to try again.
      clear($main());
      updateNav();
      append($main(), h('h1', { text: 'Cannot reach the service' }),
        h('p', { class: 'notice notice-error', role: 'alert', text: e.message }),
        h('button', { type: 'button', class: 'btn btn-primary', text: 'Try again', on: { click: () => location.reload() } }));
      document.body.dataset.ready = '1';
      return;
    }
  }
  updateNav();
  if (session.signedIn) live.start();
  await render();
}

boot();
