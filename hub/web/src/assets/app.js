// The Convoy dashboard: one ES module, no dependencies, no build step. The DOM is built with
// createElement and textContent only (cluster names, commit subjects and drift values come from
// users), and no style attribute is ever written (the CSP forbids them; widths go through the
// CSSOM). API: see ../API.md.

const PAGE_SIZE = 100;
const STATES = ['in-sync', 'pending', 'degraded', 'disconnected', 'orphaned', 'unassigned'];
const HEALTHS = ['UNKNOWN', 'HEALTHY', 'PROGRESSING', 'DEGRADED', 'MISSING'];
const MAX_EVENTS = 50;
const MAX_ROWS = 1000; // client-side cap for lists the server does not page (app, promotion)

const body = document.body;
const view = document.getElementById('view');
const notice = document.getElementById('notice');
const eventsList = document.getElementById('events');
const nf = new Intl.NumberFormat('en-US');
const fmt = (n) => nf.format(Number(n) || 0);

let me = { user: '', role: '', canAct: false, whyNot: 'loading who you are…', csrfToken: '' };
let meReady = null;
let current = null; // the page shown: { onEvent(ev) }
let navGen = 0;
let navAbort = new AbortController();

// ---------- DOM helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false || c === '') continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// replaceChildren that, like h(), flattens arrays and skips null/false.
function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const $ = (sel, root = document) => root.querySelector(sel);
const dash = () => h('span', { class: 'muted', 'aria-label': 'none' }, '—');
const short = (rev) => (rev ? String(rev).slice(0, 8) : '');
const plural = (n, one, many = one + 's') => `${fmt(n)} ${Number(n) === 1 ? one : many}`;

function rev(r) {
  return r ? h('code', { class: 'rev', title: r }, short(r)) : dash();
}

function health(v) {
  if (typeof v === 'number') return HEALTHS[v] || 'UNKNOWN';
  return String(v || 'UNKNOWN').replace(/^HEALTH_/, '').toUpperCase();
}

function healthBadge(v) {
  const hv = health(v);
  return h('span', { class: `badge h-${hv.toLowerCase()}` }, hv.charAt(0) + hv.slice(1).toLowerCase());
}

function stateBadge(s) {
  const st = s || 'unknown';
  return h('span', { class: `badge s-${st}` }, st);
}

function phaseBadge(p) {
  return h('span', { class: `badge p-${p || 'unknown'}`, 'data-phase': p || '' }, p || 'unknown');
}

function objRef(ref) {
  ref = ref || {};
  return `${ref.kind || ''}/${ref.namespace || ''}/${ref.name || ''}`;
}

function objLabel(ref) {
  ref = ref || {};
  const gv = [ref.group, ref.version].filter(Boolean).join('/');
  return h('span', { class: 'obj' },
    h('span', { class: 'kind' }, ref.kind || '?'), ' ',
    h('span', { class: 'objname' }, ref.namespace ? `${ref.namespace}/${ref.name || ''}` : ref.name || ''),
    gv ? h('span', { class: 'muted small' }, ` ${gv}`) : null);
}

const clusterHref = (name) => `/clusters/${encodeURIComponent(name)}`;
const appHref = (name, cluster) =>
  `/apps/${encodeURIComponent(name)}${cluster ? `?cluster=${encodeURIComponent(cluster)}` : ''}`;

// ---------- time ----------

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function duration(ms) {
  let s = Math.max(0, Math.ceil(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// A <time>: 'ago' (relative, re-rendered every second), 'clock' (time of day) or 'full'.
function time(ms, mode = 'ago') {
  ms = Number(ms) || 0;
  if (!ms) return h('span', { class: 'muted' }, 'never');
  const d = new Date(ms);
  const t = h('time', { datetime: d.toISOString(), title: d.toLocaleString() });
  if (mode === 'ago') {
    t.dataset.ago = String(ms);
    t.textContent = ago(ms);
  } else if (mode === 'clock') {
    t.textContent = d.toLocaleTimeString();
  } else {
    t.textContent = d.toLocaleString();
  }
  return t;
}

function tick() {
  for (const el of document.querySelectorAll('[data-ago]')) {
    const txt = ago(Number(el.dataset.ago));
    if (el.textContent !== txt) el.textContent = txt;
  }
  for (const el of document.querySelectorAll('[data-soak-end]')) {
    const left = Number(el.dataset.soakEnd) - Date.now();
    el.textContent = left > 0 ? `${duration(left)} left` : 'ending…';
  }
}
setInterval(tick, 1000);

// ---------- busy, notice, fetch ----------

let busyCount = 0;
function busyStart() {
  const g = navGen;
  let done = false;
  busyCount++;
  body.dataset.busy = '1';
  return () => {
    if (done || g !== navGen) return;
    done = true;
    busyCount = Math.max(0, busyCount - 1);
    if (!busyCount) body.dataset.busy = '0';
  };
}

let noticeTimer = 0;
function notify(message, kind = 'info') {
  clearTimeout(noticeTimer);
  fill(notice,
    h('div', { class: `notice-box ${kind}` },
      h('strong', null, kind === 'error' ? 'Error: ' : ''),
      h('span', { class: 'notice-text' }, message),
      h('button', { type: 'button', class: 'link close', 'aria-label': 'Dismiss', onclick: () => fill(notice) }, '×')));
  notice.dataset.kind = kind;
  if (kind !== 'error') noticeTimer = setTimeout(() => fill(notice), 15000);
}

class ApiError extends Error {}

async function api(path, opts = {}) {
  let res;
  try {
    res = await fetch(path, {
      ...opts,
      credentials: 'same-origin',
      headers: { Accept: 'application/json', ...(opts.headers || {}) },
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(`cannot reach the Convoy server (${e.message}); is \`convoy ui\` still running?`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { /* handled below */ }
  }
  if (res.status === 401 && data && data.login) {
    // The session ended (signed out, expired, or the user was revoked): sign in again, then
    // come back here.
    location.assign(`${data.login}?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!res.ok) {
    throw new ApiError((data && data.error) || `${res.status} ${res.statusText || 'error'} from ${path}`);
  }
  if (data == null && text) throw new ApiError(`${path} answered something that is not JSON`);
  return data || {};
}

async function post(path, payload) {
  await meReady;
  return api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Convoy-CSRF': me.csrfToken || '' },
    body: JSON.stringify(payload),
  });
}

// `?a=1&b=2` without empty values; `readable` keeps '=' in values (`label=team=web`) for the
// address bar, which URLSearchParams reads back the same.
const query = (params, readable = false) => {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === '' || v == null) continue;
    let e = encodeURIComponent(String(v));
    if (readable) e = e.replace(/%3D/g, '=');
    parts.push(`${k}=${e}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
};

// One run at a time; a call while running runs once more afterwards (with fresh state).
function serial(fn) {
  let running = null;
  let again = false;
  return () => {
    if (running) { again = true; return running; }
    running = (async () => {
      try {
        do { again = false; await fn(); } while (again);
      } finally { running = null; }
    })();
    return running;
  };
}

// At most once per `ms`, the trailing call guaranteed. (Busy only once `fn` fetches: under a
// steady stream of events the page would otherwise never be idle.)
function throttled(fn, ms) {
  let last = -Infinity;
  let timer = 0;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = 0;
      last = performance.now();
      fn();
    }, Math.max(0, last + ms - performance.now()));
  };
}

function debounced(fn, ms) {
  let timer = 0;
  let done = null;
  return () => {
    clearTimeout(timer);
    done = done || busyStart();
    timer = setTimeout(async () => {
      const d = done;
      done = null;
      try { await fn(); } finally { d(); }
    }, ms);
  };
}

// Live refreshes re-render whole sections: keep the keyboard focus (found again by the keyed
// row/section it sat in and its action, link or text) and the <details> that were open.
const SCOPES = ['data-rollout', 'data-cluster', 'data-drift', 'data-app', 'data-env', 'data-object', 'data-count', 'data-env-actions', 'data-wave'];
function focusKey() {
  const a = document.activeElement;
  if (!a || a === document.body || a === view || !view.contains(a)) return null;
  if (a.id) return { el: a, id: a.id };
  const scope = a.closest(SCOPES.map((x) => `[${x}]`).join(','));
  const attr = scope && SCOPES.find((x) => scope.hasAttribute(x));
  return {
    el: a, tag: a.tagName.toLowerCase(), action: a.dataset.action, href: a.getAttribute('href'), text: a.textContent,
    scope: attr ? `[${attr}="${CSS.escape(scope.getAttribute(attr))}"]` : '',
  };
}
function restoreFocus(k) {
  if (!k || k.el.isConnected || (document.activeElement && document.activeElement !== document.body)) return;
  let el = null;
  if (k.id) el = document.getElementById(k.id);
  else {
    const root = k.scope ? view.querySelector(k.scope) : view;
    if (root) {
      el = [root, ...root.querySelectorAll(k.tag)].find((e) => e.matches(k.tag) && (k.action ? e.dataset.action === k.action
        : k.href ? e.getAttribute('href') === k.href : e.textContent === k.text));
    }
    // The control is gone (a pause became a resume): the first button of the same row/section.
    if (!el && root && k.scope) el = root.querySelector('button:not(:disabled), a[href]');
  }
  if (el) el.focus({ preventScroll: true });
}
// Which <details data-key> the user opened, and where the focus was, as they change (a fetch
// may be in flight meanwhile); re-applied after each render.
const openKeys = new Set();
let lastFocus = null;
view.addEventListener('toggle', (e) => {
  const key = e.target.dataset && e.target.dataset.key;
  if (key) { if (e.target.open) openKeys.add(key); else openKeys.delete(key); }
}, true);
document.addEventListener('focusin', () => { lastFocus = focusKey() || lastFocus; });
async function keepState(fn) {
  const before = document.activeElement;
  await fn();
  for (const d of view.querySelectorAll('details[data-key]')) if (openKeys.has(d.dataset.key) && !d.open) d.open = true;
  if (lastFocus && before === lastFocus.el) restoreFocus(lastFocus);
}

function errorBox(err, what) {
  return h('div', { class: 'alert error', role: 'alert' },
    h('strong', null, what ? `${what}: ` : 'Could not load: '), h('span', { class: 'pre' }, err.message || String(err)));
}

// A page's loader: fetch + render, busy while running, ready after the first render, errors in
// place on the first load and in the notice after. `render` may throw.
function controller(name, render, { wants = () => true, fail } = {}) {
  const g = navGen;
  const signal = navAbort.signal;
  const alive = () => g === navGen;
  let first = true;
  const refresh = serial(async () => {
    if (!alive()) return;
    const done = busyStart();
    try {
      await keepState(() => render({ signal, alive, first }));
      if (!alive()) return;
      first = false;
      body.dataset.ready = name;
    } catch (e) {
      if (!alive() || e.name === 'AbortError') return;
      notify(e.message || String(e), 'error');
      if (first) {
        first = false;
        if (fail) fail(e); else fill(view, errorBox(e));
        body.dataset.ready = name;
      }
    } finally { done(); }
  });
  const onEvent = throttled(refresh, 300);
  return { refresh, alive, signal, onEvent: (ev) => { if (alive() && wants(ev)) onEvent(); } };
}

// ---------- confirm dialog ----------

const dialog = document.getElementById('confirm');
function confirmAction(title, text, yesLabel, danger) {
  if (typeof dialog.showModal !== 'function') return Promise.resolve(window.confirm(`${title}\n\n${text}`));
  const opener = document.activeElement;
  const key = focusKey();
  return new Promise((resolve) => {
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    const yes = $('#confirm-yes');
    yes.textContent = yesLabel;
    yes.classList.toggle('danger', !!danger);
    dialog.returnValue = '';
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'yes');
      if (opener && opener.isConnected) opener.focus();
      else restoreFocus(key);
    }, { once: true });
    dialog.showModal();
    $('#confirm-no').focus();
  });
}

// ---------- router ----------

const routes = [
  [/^\/$/, 'fleet', fleetPage],
  [/^\/clusters\/([^/]+)\/?$/, 'fleet', clusterPage],
  [/^\/apps\/([^/]+)\/?$/, 'fleet', appPage],
  [/^\/promotion\/?$/, 'promotion', promotionPage],
  [/^\/rollouts\/?$/, 'rollouts', rolloutsPage],
];

function route(focus = false) {
  navGen++;
  navAbort.abort();
  navAbort = new AbortController();
  busyCount = 0;
  body.dataset.busy = '0';
  delete body.dataset.ready;
  openKeys.clear();
  lastFocus = null;
  if (dialog.open) dialog.close();
  const path = location.pathname;
  let found = null;
  for (const [re, nav, page] of routes) {
    const m = re.exec(path);
    if (m) { found = [nav, page, m.slice(1).map(safeDecode)]; break; }
  }
  for (const a of document.querySelectorAll('nav a[data-nav]')) {
    if (found && a.dataset.nav === found[0]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    current = null;
    setTitle('Not found');
    fill(view, h('h1', null, 'Page not found'),
      h('p', null, 'Nothing here. Go to the ', h('a', { href: '/' }, 'fleet'), '.'));
    body.dataset.ready = 'notfound';
  } else {
    current = found[1](...found[2]);
  }
  if (focus) {
    window.scrollTo(0, 0);
    view.focus({ preventScroll: true });
  }
}

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

function navigate(url, replace = false) {
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  route(true);
}

function setTitle(t) {
  document.title = `${t} · Convoy`;
}

document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || (a.target && a.target !== '_self') || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || /^\/(api|assets)\//.test(url.pathname)) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
});

window.addEventListener('popstate', () => route(false));

// ---------- live: one EventSource for the whole app ----------

const live = document.getElementById('live');
function setLive(on) {
  const txt = on ? 'live' : 'reconnecting…';
  if (live.textContent !== txt) live.textContent = txt;
  live.dataset.state = on ? 'live' : 'reconnecting';
}

let retry = 1000;
function connect() {
  let missed = false;
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => {
    setLive(true);
    retry = 1000;
    if (missed && current) current.onEvent({ cluster: '' }); // catch up on what we missed
    missed = false;
  });
  es.addEventListener('error', () => {
    setLive(false);
    missed = true;
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    }
  });
  es.addEventListener('fleet', (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch { return; }
    if (!ev || typeof ev !== 'object') return;
    addActivity(ev);
    if (current) current.onEvent(ev);
  });
}

function addActivity(ev) {
  const cluster = ev.cluster || '';
  const li = h('li', null,
    time(ev.atUnixMs, 'clock'), ' ',
    cluster ? h('a', { href: clusterHref(cluster), class: 'ev-cluster' }, cluster) : h('span', { class: 'muted ev-cluster' }, 'fleet'), ' ',
    h('span', { class: `badge k-${String(ev.kind || 'event').replace(/[^a-z-]/gi, '')}` }, ev.kind || 'event'), ' ',
    h('span', { class: 'ev-detail' }, ev.detail || ''));
  li.dataset.at = String(ev.atUnixMs ?? '');
  li.dataset.renderedAt = String(Date.now());
  eventsList.prepend(li);
  while (eventsList.children.length > MAX_EVENTS) eventsList.lastElementChild.remove();
  const empty = document.getElementById('events-empty');
  if (empty && !empty.hidden) empty.hidden = true;
}

// ---------- who am I ----------

function loadMe() {
  meReady = api('/api/me').then((m) => {
    me = { ...me, ...m };
    const el = document.getElementById('me');
    fill(el,
      h('span', { class: 'user' }, me.user || 'unknown'), ' ',
      h('span', { class: `badge role-${me.role || 'viewer'}` }, me.role || 'viewer'),
      me.signOut ? h('button', { type: 'button', class: 'sign-out', id: 'sign-out', onclick: signOut }, 'Sign out') : null);
    el.title = [me.hub && `hub ${me.hub}`, me.version && `convoy ${me.version}`].filter(Boolean).join(' · ');
  }).catch((e) => {
    me.canAct = false;
    me.whyNot = `could not tell who you are: ${e.message}`;
    notify(me.whyNot, 'error');
  });
  return meReady;
}

// Ends the hub's session, then shows the sign-in page.
async function signOut() {
  try {
    const answer = await post(me.signOut, {});
    location.assign(answer.next || '/');
  } catch (e) {
    notify(`could not sign out: ${e.message}`, 'error');
  }
}

// Action buttons: enabled for admins; for others disabled, titled and described by a visible
// element that says why.
function actionButton(action, label, onclick, { danger = false, describedBy = 'why-not' } = {}) {
  const b = h('button', { type: 'button', class: danger ? 'danger' : '', 'data-action': action }, label);
  if (me.canAct) {
    b.addEventListener('click', onclick);
  } else {
    b.disabled = true;
    b.title = me.whyNot || 'you may not act';
    b.setAttribute('aria-describedby', describedBy);
  }
  return b;
}

function whyNotNote() {
  if (me.canAct) return null;
  return h('p', { id: 'why-not', class: 'alert info' }, h('strong', null, 'Read only: '), me.whyNot || 'you may not act');
}

// ---------- shared fetch: environments ----------

const getEnvs = (signal) => api('/api/envs', { signal }).then((d) => ({
  environments: d.environments || [],
  errors: d.errors || [],
  rollouts: d.rollouts || [],
}));

function table(id, caption, headers, rows, extraClass = '') {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', { id, class: extraClass },
      h('caption', { class: 'sr-only' }, caption),
      h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows)));
}

function wavesProgress(waves) {
  let clusters = 0, released = 0, done = 0, failed = 0;
  for (const w of waves || []) {
    clusters += Number(w.clusters) || 0;
    released += Number(w.released) || 0;
    done += Number(w.done) || 0;
    failed += Number(w.failed) || 0;
  }
  return { clusters, released, done, failed };
}

function bar({ clusters, released, done, failed }, label) {
  const pct = (n) => (clusters ? `${Math.min(100, (100 * n) / clusters).toFixed(2)}%` : '0%');
  const seg = (cls, n) => {
    const s = h('span', { class: `seg ${cls}` });
    s.style.setProperty('width', pct(n));
    return s;
  };
  const pending = Math.max(0, released - done - failed);
  return h('div', {
    class: 'bar', role: 'progressbar', 'aria-label': label,
    'aria-valuemin': 0, 'aria-valuemax': clusters || 0, 'aria-valuenow': released,
    'aria-valuetext': `${fmt(released)} of ${fmt(clusters)} released, ${fmt(done)} done, ${fmt(failed)} failed`,
  }, seg('done', done), seg('failed', failed), seg('released', pending));
}

// ---------- Fleet ----------

function fleetPage() {
  setTitle('Fleet');
  const params = new URLSearchParams(location.search);
  const f = {
    env: params.get('env') || '',
    state: params.get('state') || '',
    label: params.get('label') || '',
    q: params.get('q') || '',
    page: Math.max(1, parseInt(params.get('page'), 10) || 1),
  };

  const envAlerts = h('div', { class: 'alerts' });
  const cards = h('ol', { class: 'env-cards', id: 'env-cards', 'aria-label': 'Environments in promotion order' });
  const envSel = h('select', { id: 'filter-env', name: 'env' }, h('option', { value: '' }, 'All environments'));
  const stateSel = h('select', { id: 'filter-state', name: 'state' }, h('option', { value: '' }, 'All states'),
    STATES.map((s) => h('option', { value: s }, s)));
  const labelIn = h('input', { id: 'filter-label', name: 'label', type: 'text', placeholder: 'key=value', autocomplete: 'off', spellcheck: 'false' });
  const qIn = h('input', { id: 'filter-q', name: 'q', type: 'search', placeholder: 'part of a name', autocomplete: 'off', spellcheck: 'false' });
  labelIn.value = f.label;
  qIn.value = f.q;
  if (f.state && !STATES.includes(f.state)) stateSel.append(h('option', { value: f.state }, f.state));
  stateSel.value = f.state;
  const chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'Clusters per state (click to filter)' });
  const summary = h('p', { id: 'cluster-summary', class: 'summary', 'aria-live': 'polite' }, 'Loading clusters…');
  const tableErr = h('div');
  const tbody = h('tbody');
  const prev = h('button', { id: 'page-prev', type: 'button', disabled: true }, '← Previous');
  const next = h('button', { id: 'page-next', type: 'button', disabled: true }, 'Next →');
  const pageInfo = h('span', { class: 'muted' });

  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter clusters', onsubmit: (e) => e.preventDefault() },
    field('filter-env', 'Environment', envSel),
    field('filter-state', 'State', stateSel),
    field('filter-label', 'Label', labelIn),
    field('filter-q', 'Name', qIn));

  fill(view,
    h('h1', null, 'Fleet'),
    h('section', { 'aria-labelledby': 'envs-title' },
      h('h2', { id: 'envs-title' }, 'Environments'), envAlerts, cards),
    h('section', { 'aria-labelledby': 'clusters-title' },
      h('h2', { id: 'clusters-title' }, 'Clusters'),
      filters, chips, summary, tableErr,
      h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': 'Clusters' },
        h('table', { id: 'cluster-table' },
          h('caption', { class: 'sr-only' }, 'Clusters, sorted by environment then name'),
          h('thead', null, h('tr', null,
            ['Name', 'Environment', 'State', 'Health', 'Applied', 'Last seen', 'Agent', 'Drift']
              .map((t) => h('th', { scope: 'col', class: t === 'Drift' ? 'num' : '' }, t)))),
          tbody)),
      h('div', { class: 'pager' }, prev, pageInfo, next)));

  const syncUrl = (push) => {
    const url = `/${query({ env: f.env, state: f.state, label: f.label, q: f.q, page: f.page > 1 ? f.page : '' }, true)}`;
    if (url !== location.pathname + location.search) history[push ? 'pushState' : 'replaceState'](null, '', url);
  };

  let envNames = [];
  const renderEnvs = (d) => {
    envNames = d.environments.map((e) => e.name);
    fill(envAlerts, ...d.errors.map((e) => h('p', { class: 'alert error', role: 'alert' }, h('strong', null, 'Repository: '), h('span', { class: 'pre' }, e))));
    fill(cards, ...d.environments.map((e, i) =>
      envCard(e, i ? d.environments[i - 1] : null, d.rollouts.filter((r) => r.environment === e.name))));
    if (!d.environments.length) fill(cards, h('li', { class: 'empty' }, 'No environments: convoy.yaml declares none yet.'));
    const names = [...envNames];
    if (f.env && !names.includes(f.env)) names.push(f.env);
    const want = ['', ...names].join('\n');
    const have = [...envSel.options].map((o) => o.value).join('\n');
    if (want !== have) {
      fill(envSel, h('option', { value: '' }, 'All environments'), names.map((n) => h('option', { value: n }, n)));
    }
    envSel.value = f.env;
  };

  const renderClusters = (d) => {
    const list = d.clusters || [];
    const total = Number(d.total) || 0;
    const matched = Number(d.matched) || 0;
    const offset = Number(d.offset) || 0;
    const frag = document.createDocumentFragment();
    for (const c of list) frag.append(clusterRow(c));
    if (!list.length) {
      frag.append(h('tr', null, h('td', { colspan: 8, class: 'empty' },
        total ? (matched ? 'No clusters on this page.' : 'No cluster matches these filters.') : 'No clusters yet: declare some in the fleet repository (clusters/NAME.yaml).')));
    }
    fill(tbody, frag);
    const start = list.length ? offset + 1 : 0;
    const end = offset + list.length;
    const range = list.length ? `${fmt(start)}–${fmt(end)} of ${fmt(matched)}` : `0 of ${fmt(matched)}`;
    summary.textContent = matched === total ? range : `${range} matching (${fmt(total)} in the fleet)`;
    const pages = Math.max(1, Math.ceil(matched / PAGE_SIZE));
    pageInfo.textContent = `Page ${fmt(f.page)} of ${fmt(pages)}`;
    prev.disabled = f.page <= 1;
    next.disabled = end >= matched;
    const counts = d.counts || {};
    const states = [...STATES, ...Object.keys(counts).filter((s) => !STATES.includes(s))];
    fill(chips, ...states.map((s) => h('button', {
      type: 'button', class: `chip s-${s}`, 'data-count': s, 'aria-pressed': f.state === s ? 'true' : 'false',
      title: f.state === s ? 'Show every state' : `Show only ${s} clusters`,
      onclick: () => setFilter({ state: f.state === s ? '' : s }, true),
    }, h('span', { class: 'chip-label' }, s), ' ', h('span', { class: 'chip-count' }, fmt(counts[s] || 0)))));
    fill(tableErr);
  };

  // Event refreshes and filter changes may overlap: show an answer only if it is for the
  // filters shown now and newer than the one on screen.
  let asked = 0;
  let shown = 0;
  const filterKey = () => JSON.stringify([f.env, f.label, f.state, f.q, f.page]);
  const fetchClusters = async (signal) => {
    const seq = ++asked;
    const key = filterKey();
    const d = await api(`/api/clusters${query({
      env: f.env, label: f.label, state: f.state, q: f.q, offset: (f.page - 1) * PAGE_SIZE, limit: PAGE_SIZE,
    })}`, { signal });
    return { seq, key, d };
  };
  const showClusters = ({ seq, key, d }) => {
    if (key !== filterKey() || seq < shown) return;
    shown = seq;
    renderClusters(d);
  };

  const ctl = controller('fleet', async ({ signal, alive }) => {
    const [envs, clusters] = await Promise.allSettled([getEnvs(signal), fetchClusters(signal)]);
    if (!alive()) return;
    if (envs.status === 'fulfilled') renderEnvs(envs.value);
    else if (envs.reason.name !== 'AbortError') {
      fill(envAlerts, errorBox(envs.reason, 'Environments'));
      notify(envs.reason.message, 'error');
    }
    if (clusters.status === 'fulfilled') showClusters(clusters.value);
    else if (clusters.reason.name !== 'AbortError') {
      fill(tbody);
      summary.textContent = 'Clusters could not be loaded.';
      fill(tableErr, errorBox(clusters.reason, 'Clusters'));
      notify(clusters.reason.message, 'error');
    }
  });

  // Filter changes fetch only the table.
  const tableOnly = serial(async () => {
    if (!ctl.alive()) return;
    const done = busyStart();
    try {
      const d = await fetchClusters(ctl.signal);
      if (ctl.alive()) await keepState(() => showClusters(d));
    } catch (e) {
      if (!ctl.alive() || e.name === 'AbortError') return;
      fill(tableErr, errorBox(e, 'Clusters'));
      notify(e.message, 'error');
    } finally { done(); }
  });

  function setFilter(change, push) {
    Object.assign(f, change);
    if (!('page' in change)) f.page = 1;
    envSel.value = f.env;
    stateSel.value = f.state;
    syncUrl(push);
    return tableOnly();
  }

  envSel.addEventListener('change', () => setFilter({ env: envSel.value }, true));
  stateSel.addEventListener('change', () => setFilter({ state: stateSel.value }, true));
  const typed = debounced(() => {
    if (f.q === qIn.value.trim() && f.label === labelIn.value.trim()) return;
    return setFilter({ q: qIn.value.trim(), label: labelIn.value.trim() }, false);
  }, 200);
  qIn.addEventListener('input', typed);
  labelIn.addEventListener('input', typed);
  prev.addEventListener('click', () => { if (f.page > 1) setFilter({ page: f.page - 1 }, true); });
  next.addEventListener('click', () => setFilter({ page: f.page + 1 }, true));

  ctl.refresh();
  return ctl;
}

function field(id, label, input) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

function clusterRow(c) {
  const tr = h('tr', null,
    h('th', { scope: 'row' }, h('a', { href: clusterHref(c.name) }, c.name)),
    h('td', null, c.environment || dash()),
    h('td', null, stateBadge(c.state)),
    h('td', null, healthBadge(c.health)),
    h('td', null, rev(c.appliedRevision)),
    h('td', null, h('span', { class: `conn ${c.connected ? 'on' : 'off'}`, title: c.connected ? 'connected' : 'not connected' }), time(c.lastSeenUnixMs)),
    h('td', null, c.agentVersion || dash()),
    h('td', { class: 'num' }, Number(c.driftCount) ? h('span', { class: 'badge warn' }, fmt(c.driftCount)) : '0'));
  tr.dataset.cluster = c.name;
  return tr;
}

function envCard(e, prevEnv, rollouts) {
  const li = h('li', { class: 'env-card' });
  li.dataset.env = e.name;
  const verified = e.verifiedCommit
    ? rev(e.verifiedCommit)
    : h('span', null, h('span', { class: 'badge warn' }, 'none'),
      e.unverifiedReason ? h('details', { class: 'why', 'data-key': `why:${e.name}` }, h('summary', null, 'why'), h('p', { class: 'pre small' }, e.unverifiedReason)) : null);
  let behind;
  if (!prevEnv) behind = h('span', { class: 'muted' }, 'first in order');
  else if (Number(e.behind)) behind = h('span', { class: 'badge warn' }, `${plural(e.behind, 'commit')} behind ${prevEnv.name}`);
  else behind = h('span', { class: 'badge ok' }, `up to date with ${prevEnv.name}`);
  const active = (rollouts || []).filter((r) => r.phase !== 'complete');
  append(li, [
    h('h3', null, h('a', { href: `/${query({ env: e.name })}`, title: `Show ${e.name}'s clusters` }, e.name),
      e.pinned ? h('span', { class: 'badge bad', title: 'A rollback pinned this environment' }, `pinned ${short(e.pinned)}`) : null),
    h('dl', { class: 'facts compact' },
      h('dt', null, 'Branch'), h('dd', null, h('code', null, e.branch || '?')),
      h('dt', null, 'Head'), h('dd', null, rev(e.commit)),
      h('dt', null, 'Verified'), h('dd', null, verified),
      h('dt', null, 'Clusters'), h('dd', null, `${fmt(e.clusters)} · ${fmt(e.applied)} applied · ${fmt(e.healthy)} healthy`),
      h('dt', null, 'Behind'), h('dd', null, behind)),
    (e.envOnly || []).length
      ? h('div', { class: 'env-only' },
        h('p', { class: 'small' }, h('span', { class: 'badge warn' }, `${plural(e.envOnly.length, 'commit')} only here`)),
        h('ul', { class: 'commits' }, e.envOnly.map((c) => h('li', null, rev(c.id), ' ', h('span', null, c.subject || '')))))
      : null,
    active.map((r) => {
      const p = wavesProgress(r.waves);
      const open = (r.waves || []).find((w) => w.open);
      const idx = open ? r.waves.indexOf(open) + 1 : 0;
      return h('div', { class: 'mini-rollout' },
        h('p', null, h('a', { href: '/rollouts' }, r.app ? `Rollout of ${r.app}` : 'Rollout'), ' ', phaseBadge(r.phase), ' ', rev(r.revision)),
        bar(p, `${e.name} rollout progress`),
        h('p', { class: 'small muted' },
          open ? `wave ${idx}/${r.waves.length} ${open.name}: ${fmt(open.released)}/${fmt(open.clusters)} released · ` : '',
          `${fmt(p.released)}/${fmt(p.clusters)} released in all`));
    }),
  ]);
  return li;
}

// ---------- Cluster ----------

function clusterPage(name) {
  setTitle(name);
  fill(view, h('h1', null, name), h('p', { class: 'loading' }, 'Loading…'));
  const ctl = controller('cluster', async ({ signal, alive }) => {
    const d = await api(`/api/clusters/${encodeURIComponent(name)}`, { signal });
    if (!alive()) return;
    renderCluster(name, d);
  }, {
    wants: (ev) => !ev.cluster || ev.cluster === name,
    fail: (e) => fill(view, h('h1', null, name), errorBox(e), h('p', null, h('a', { href: '/' }, 'Back to the fleet'))),
  });
  ctl.refresh();
  return ctl;
}

function renderCluster(name, d) {
  const c = d.cluster || { name };
  const apps = d.apps || [];
  const drifts = d.drifts || [];
  const history = [...(d.history || [])].sort((a, b) => (Number(b.atUnixMs) || 0) - (Number(a.atUnixMs) || 0));
  const errors = d.errors || [];
  const labels = Object.entries(c.labels || {});
  const conn = c.connected
    ? h('span', null, h('span', { class: 'badge ok' }, 'connected'), ' since ', time(c.connectedSinceUnixMs, 'full'))
    : h('span', null, h('span', { class: 'badge bad' }, 'disconnected'));

  const certMs = Number((d.certificate || {}).notAfterUnixMs) || 0;
  const cert = h('span', { id: 'cert-expiry' });
  if (!certMs) cert.append(h('span', { class: 'muted' }, 'unknown'));
  else {
    const left = certMs - Date.now();
    const days = Math.round(Math.abs(left) / 86400000);
    const hours = Math.round(Math.abs(left) / 3600000);
    const span = days >= 1 ? plural(days, 'day') : plural(hours, 'hour');
    const cls = left < 0 ? 'bad' : left < 14 * 86400000 ? 'warn' : 'ok';
    append(cert, [time(certMs, 'full'), ' ',
      h('span', { class: `badge ${cls}` }, left < 0 ? `expired ${span} ago` : `in ${span}`)]);
  }

  const inSync = c.inSync || (c.appliedDigest && c.appliedDigest === c.assignedDigest);

  const children = [
    h('p', { class: 'crumbs' }, h('a', { href: '/' }, 'Fleet'), ' / ', c.environment
      ? h('a', { href: `/${query({ env: c.environment })}` }, c.environment) : 'no environment'),
    h('h1', null, h('span', null, c.name || name), ' ', stateBadge(c.state), ' ', healthBadge(c.health)),
    h('dl', { class: 'facts' },
      h('dt', null, 'Environment'), h('dd', null, c.environment || dash(), c.orphaned ? [' ', h('span', { class: 'badge bad' }, 'orphaned')] : null),
      h('dt', null, 'Connection'), h('dd', null, conn),
      h('dt', null, 'Last seen'), h('dd', null, time(c.lastSeenUnixMs)),
      h('dt', null, 'Agent'), h('dd', null, c.agentVersion || dash(), c.peerAddress ? h('span', { class: 'muted' }, ` from ${c.peerAddress}`) : null),
      h('dt', null, 'Applied'), h('dd', null, rev(c.appliedRevision)),
      h('dt', null, 'Assigned'), h('dd', null, rev(c.assignedRevision), ' ',
        c.assignedRevision ? (inSync ? h('span', { class: 'badge ok' }, 'applied') : h('span', { class: 'badge warn' }, 'not applied yet')) : null),
      h('dt', null, 'Health'), h('dd', null, healthBadge(c.health)),
      h('dt', null, 'Drift'), h('dd', null, Number(c.driftCount) ? h('span', { class: 'badge warn' }, plural(c.driftCount, 'object')) : 'none'),
      h('dt', null, 'Certificate expires'), h('dd', null, cert),
      h('dt', null, 'Labels'), h('dd', null, labels.length
        ? h('ul', { class: 'labels' }, labels.map(([k, v]) => h('li', null, h('code', null, `${k}=${v}`))))
        : dash())),
  ];

  if (errors.length) {
    children.push(h('section', { class: 'alert error', 'aria-labelledby': 'errors-title' },
      h('h2', { id: 'errors-title' }, 'Last error'),
      h('ul', { class: 'plain' }, errors.map((e) => h('li', { class: 'pre' }, e)))));
  }

  children.push(h('section', { 'aria-labelledby': 'apps-title' },
    h('h2', { id: 'apps-title' }, `Apps (${fmt(apps.length)})`),
    apps.length ? table('cluster-apps', 'Apps on this cluster', ['App', 'Health', 'Message', 'Render error', 'Failed objects'],
      apps.map((a) => {
        const failed = a.failed || [];
        const tr = h('tr', null,
          h('th', { scope: 'row' }, h('a', { href: appHref(a.name, c.name || name) }, a.name)),
          h('td', null, healthBadge(a.health)),
          h('td', { class: 'pre' }, a.message || ''),
          h('td', null, a.renderError ? h('span', { class: 'pre error-text' }, a.renderError) : dash()),
          h('td', null, failed.length ? h('ul', { class: 'plain' },
            failed.map((x) => h('li', null, objLabel(x.ref), ': ', h('span', { class: 'pre' }, x.reason || ''))),
            Number(a.failedTotal) > failed.length ? h('li', { class: 'muted' }, `and ${fmt(a.failedTotal - failed.length)} more`) : null) : dash()));
        tr.dataset.app = a.name;
        return tr;
      })) : h('p', { class: 'empty' }, 'No apps reported yet.')));

  children.push(h('section', { 'aria-labelledby': 'drift-title' },
    h('h2', { id: 'drift-title' }, `Drift (${fmt(drifts.length)})`),
    drifts.length ? table('drift', 'Objects whose live state differs from Git', ['Object', 'App', 'Changes (field: desired → live, changed by)', 'Status', 'Detected'],
      drifts.map((dr) => {
        const fields = dr.fields || [];
        const tr = h('tr', null,
          h('th', { scope: 'row' }, objLabel(dr.ref)),
          h('td', null, dr.app ? h('a', { href: appHref(dr.app, c.name || name) }, dr.app) : dash()),
          h('td', null,
            dr.missing ? h('p', { class: 'small' }, h('span', { class: 'badge bad' }, 'missing'), ' the object is gone from the cluster') : null,
            fields.length ? h('ul', { class: 'changes' }, fields.map((fd) => h('li', null,
              h('code', { class: 'path' }, fd.path || '(object)'),
              h('span', { class: 'lbl' }, 'desired'), jsonValue(fd.desiredJson),
              h('span', { class: 'lbl' }, 'live'), jsonValue(fd.liveJson),
              h('span', { class: 'lbl' }, 'changed by'), h('span', { class: 'manager' }, fd.manager || 'unknown')))) : null),
          h('td', null, dr.healed ? h('span', { class: 'badge ok' }, 'healed') : h('span', { class: 'badge warn' }, 'not healed'),
            dr.missing ? [' ', h('span', { class: 'badge bad' }, 'missing')] : null),
          h('td', null, time(dr.detectedUnixMs)));
        tr.dataset.drift = objRef(dr.ref);
        return tr;
      }), 'drift-table') : h('p', { class: 'empty' }, 'No drift: the live objects match Git.')));

  children.push(h('section', { 'aria-labelledby': 'history-title' },
    h('h2', { id: 'history-title' }, 'History'),
    history.length ? h('ol', { id: 'history', class: 'timeline' }, history.map((x) => h('li', null,
      time(x.atUnixMs, 'full'), ' ',
      h('span', { class: `badge k-${String(x.event || '').replace(/[^a-z-]/gi, '')}` }, x.event || 'event'), ' ',
      rev(x.revision), ' ',
      x.detail ? h('span', { class: 'pre' }, x.detail) : null)))
      : [h('ol', { id: 'history', class: 'timeline' }), h('p', { class: 'empty' }, 'No history yet.')]));

  fill(view, ...children);
}

function jsonValue(text) {
  if (text == null || text === '') return h('em', { class: 'muted value' }, '(absent)');
  let shown = String(text);
  try {
    const v = JSON.parse(shown);
    if (v !== null && typeof v === 'object') shown = JSON.stringify(v, null, 2);
  } catch { /* keep the text */ }
  return shown.includes('\n') ? h('pre', { class: 'value' }, h('code', null, shown)) : h('code', { class: 'value' }, shown);
}

// ---------- App ----------

function appPage(name) {
  setTitle(`App ${name}`);
  let selected = new URLSearchParams(location.search).get('cluster') || '';
  fill(view, h('h1', null, `App ${name}`), h('p', { class: 'loading' }, 'Loading…'));
  let lastObjects = '';
  let showAll = false;
  const top = h('p');
  const rowsBox = h('div');
  let pickNames = null;
  const pickSel = h('select', { id: 'app-cluster' });
  const pickBox = h('div', { class: 'filters' }, field('app-cluster', 'Show the objects rendered for', pickSel));
  pickSel.addEventListener('change', () => {
    selected = pickSel.value;
    history.pushState(null, '', appHref(name, selected));
    lastObjects = '';
    ctl.refresh();
  });
  const objects = h('section', { id: 'app-objects', 'aria-labelledby': 'objects-title' });
  let built = false;

  const ctl = controller('app', async ({ signal, alive }) => {
    const [app, objs] = await Promise.all([
      api(`/api/apps/${encodeURIComponent(name)}`, { signal }),
      selected ? api(`/api/apps/${encodeURIComponent(name)}/objects${query({ cluster: selected })}`, { signal })
        .catch((e) => (e.name === 'AbortError' ? Promise.reject(e) : { error: e })) : null,
    ]);
    if (!alive()) return;
    if (!built) {
      fill(view, h('p', { class: 'crumbs' }, h('a', { href: '/' }, 'Fleet'), ' / app'),
        h('h1', null, `App ${name}`), top, pickBox, objects, h('section', { 'aria-labelledby': 'app-clusters-title' },
          h('h2', { id: 'app-clusters-title' }, 'Clusters'), rowsBox));
      built = true;
    }
    renderTop(app);
    renderObjects(objs);
  });

  function renderTop(d) {
    const rows = d.clusters || [];
    const byRev = new Map();
    for (const r of rows) byRev.set(r.revision || '', (byRev.get(r.revision || '') || 0) + 1);
    const shown = showAll ? rows : rows.slice(0, MAX_ROWS);
    // The select stays the same element across refreshes (an open dropdown survives events).
    const names = rows.map((r) => `${r.cluster}\t${r.environment}`).join('\n');
    if (rows.length <= 500 && names !== pickNames) {
      pickNames = names;
      fill(pickSel, h('option', { value: '' }, 'choose a cluster…'),
        rows.map((r) => h('option', { value: r.cluster }, `${r.cluster} (${r.environment || 'no environment'})`)));
    }
    pickSel.value = selected;
    pickBox.hidden = !(rows.length && rows.length <= 500);
    fill(top, rows.length ? `${plural(rows.length, 'cluster')} run ${name}: ` : `No cluster runs ${name}.`,
      [...byRev].map(([r, n], i) => [i ? ', ' : '', r ? rev(r) : 'no revision', ` on ${fmt(n)}`]));
    fill(rowsBox,
      rows.length ? table('app-clusters', `Clusters running ${name}`, ['Cluster', 'Environment', 'Revision', 'Health', 'Message', 'Objects'],
        shown.map((r) => {
          const tr = h('tr', { class: r.cluster === selected ? 'selected' : '' },
            h('th', { scope: 'row' }, h('a', { href: clusterHref(r.cluster) }, r.cluster)),
            h('td', null, r.environment || dash()),
            h('td', null, rev(r.revision)),
            h('td', null, healthBadge(r.health)),
            h('td', { class: 'pre' }, r.message || ''),
            h('td', null, h('a', {
              href: appHref(name, r.cluster), 'aria-current': r.cluster === selected ? 'true' : null,
              'aria-label': `${name}'s objects on ${r.cluster}`,
            }, r.cluster === selected ? 'shown above' : 'show')));
          tr.dataset.cluster = r.cluster;
          return tr;
        })) : null,
      rows.length > shown.length ? h('button', { type: 'button', onclick: () => { showAll = true; renderTop(d); } }, `Show all ${fmt(rows.length)} clusters`) : null);
  }

  function renderObjects(d) {
    if (!selected) {
      fill(objects, h('h2', { id: 'objects-title' }, 'Objects'),
        h('p', { class: 'empty' }, 'Choose a cluster to see the objects rendered for it.'));
      return;
    }
    if (d && d.error) {
      notify(d.error.message, 'error');
      fill(objects, h('h2', { id: 'objects-title' }, `Objects for ${selected}`), errorBox(d.error, 'Objects'));
      lastObjects = '';
      return;
    }
    const key = JSON.stringify(d);
    if (key === lastObjects) return; // keep open <details> and scroll as they are
    lastObjects = key;
    const list = d.objects || [];
    const open = new Set([...objects.querySelectorAll('details[open]')].map((x) => x.dataset.object));
    fill(objects,
      h('h2', { id: 'objects-title' }, `Objects for `, h('a', { href: clusterHref(selected) }, selected), ' at ', rev(d.revision)),
      list.length ? h('div', { class: 'objects' }, list.map((o) => {
        const det = h('details', null, h('summary', null, objLabel(o.ref)), h('pre', { class: 'yaml' }, h('code', null, o.yaml || '')));
        det.dataset.object = objRef(o.ref);
        if (open.has(det.dataset.object)) det.open = true;
        return det;
      })) : h('p', { class: 'empty' }, `${name} renders no object for ${selected}.`));
  }

  ctl.refresh();
  return ctl;
}

// ---------- Promotion ----------

function promotionPage() {
  setTitle('Promotion');
  const params = new URLSearchParams(location.search);
  let from = params.get('from') || '';
  let to = params.get('to') || '';
  let showAll = false;
  const fromSel = h('select', { id: 'promo-from' });
  const toSel = h('select', { id: 'promo-to' });
  const result = h('div', { id: 'promotion-result' });
  let built = false;

  // In place (no re-route): arrow keys on a select fire change, and focus must stay on it.
  const change = () => {
    from = fromSel.value;
    to = toSel.value;
    history.pushState(null, '', `/promotion${query({ from, to })}`);
    ctl.refresh();
  };
  fromSel.addEventListener('change', change);
  toSel.addEventListener('change', change);

  fill(view, h('h1', null, 'Promotion'), h('p', { class: 'loading' }, 'Loading…'));

  const ctl = controller('promotion', async ({ signal, alive }) => {
    const envs = await getEnvs(signal);
    if (!alive()) return;
    const names = envs.environments.map((e) => e.name);
    if (!from && !to) {
      from = names[0] || '';
      to = names[1] || '';
      if (from && to) history.replaceState(null, '', `/promotion${query({ from, to })}`);
    }
    const opts = (sel, v) => {
      const all = names.includes(v) || !v ? names : [...names, v];
      fill(sel, ...all.map((n) => h('option', { value: n }, n)));
      sel.value = v;
    };
    if (!built) {
      opts(fromSel, from);
      opts(toSel, to);
      fill(view,
        h('h1', null, 'Promotion'),
        h('form', { class: 'filters', 'aria-label': 'Environments to compare', onsubmit: (e) => e.preventDefault() },
          field('promo-from', 'From', fromSel), h('span', { class: 'arrow', 'aria-hidden': 'true' }, '→'), field('promo-to', 'To', toSel)),
        h('p', { class: 'alert info' }, h('strong', null, 'Read only. '),
          'The dashboard never writes to Git: to promote, run the command below in your checkout of the fleet repository, with your own Git credentials.'),
        result);
      built = true;
    }
    if (!from || !to) {
      fill(result, h('p', { class: 'empty' }, names.length < 2
        ? 'Promotion needs two environments in convoy.yaml.' : 'Choose the environments to compare.'));
      return;
    }
    let d;
    try {
      d = await api(`/api/promotion${query({ from, to })}`, { signal });
    } catch (e) {
      if (e.name === 'AbortError' || !alive()) throw e;
      notify(e.message, 'error');
      fill(result, errorBox(e, `Promotion ${from} → ${to}`));
      return;
    }
    if (!alive()) return;
    renderPromotion(d);
  });

  function renderPromotion(d) {
    const v = d.verdict || {};
    const diff = d.diff || {};
    const rows = diff.clusters || [];
    const shown = showAll ? rows : rows.slice(0, MAX_ROWS);
    const changing = rows.filter((c) => (c.added || []).length + (c.changed || []).length + (c.removed || []).length).length;
    const failing = rows.filter((c) => (c.errors || []).length).length;
    const cmd = h('code', { id: 'promote-command' }, d.command || '');
    const copy = h('button', { type: 'button', class: 'copy' }, 'Copy');
    copy.addEventListener('click', () => copyText(cmd, d.command || ''));
    const verdict = h('div', { id: 'verdict', class: `alert ${v.ok ? 'ok' : 'error'}`, 'data-ok': v.ok ? 'true' : 'false' },
      h('strong', null, v.ok ? `✓ ${from} may be promoted to ${to}` : `✗ Refused: ${from} may not be promoted to ${to} now`),
      v.message ? h('p', { class: 'pre' }, v.message) : null);
    const refs = (list, cls, cluster) => (list && list.length
      ? h('details', { class: `refs ${cls}`, 'data-key': `${cls}:${cluster}` }, h('summary', null, fmt(list.length)),
        h('ul', { class: 'plain' }, list.map((r) => h('li', null, objLabel(r)))))
      : h('span', { class: 'muted' }, '0'));
    fill(result,
      verdict,
      h('section', { 'aria-labelledby': 'cmd-title' },
        h('h2', { id: 'cmd-title' }, 'Command'),
        h('div', { class: 'codebox' }, h('pre', null, cmd), copy)),
      h('section', { 'aria-labelledby': 'diff-title' },
        h('h2', { id: 'diff-title' }, `What ${to}'s clusters would get`),
        diff.fromEnv ? h('p', null, h('strong', null, diff.fromEnv), ' (branch ', h('code', null, diff.fromBranch || '?'), ' at ', rev(diff.fromCommit),
          `) rendered for ${diff.toEnv || to}'s clusters (branch `, h('code', null, diff.toBranch || '?'), ' at ', rev(diff.toCommit), ').') : null,
        h('p', { class: 'summary' }, rows.length
          ? `${plural(rows.length, 'cluster')}: ${fmt(changing)} would change, ${fmt(rows.length - changing)} unchanged${failing ? `, ${fmt(failing)} with errors` : ''}.`
          : `${to} has no clusters.`),
        rows.length ? table('promotion-diff', `What each of ${to}'s clusters would get`,
          ['Cluster', 'Current revision', 'Added', 'Changed', 'Removed', 'Errors'],
          shown.map((c) => {
            const errs = c.errors || [];
            const tr = h('tr', null,
              h('th', { scope: 'row' }, h('a', { href: clusterHref(c.cluster) }, c.cluster)),
              h('td', null, rev(c.currentRevision)),
              h('td', null, refs(c.added, 'added', c.cluster)),
              h('td', null, refs(c.changed, 'changed', c.cluster)),
              h('td', null, refs(c.removed, 'removed', c.cluster)),
              h('td', null, errs.length ? h('ul', { class: 'plain' }, errs.map((e) => h('li', { class: 'pre error-text' }, e))) : dash()));
            tr.dataset.cluster = c.cluster;
            return tr;
          })) : null,
        rows.length > shown.length
          ? h('button', { type: 'button', onclick: () => { showAll = true; renderPromotion(d); } }, `Show all ${fmt(rows.length)} clusters`) : null));
  }

  ctl.refresh();
  return ctl;
}

async function copyText(el, text) {
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
    notify('Command copied to the clipboard.');
  } catch {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { /* selected: the user copies */ }
    notify(ok ? 'Command copied to the clipboard.' : 'The command is selected: press Ctrl+C (⌘C) to copy it.');
  }
}

// ---------- Rollouts ----------

function rolloutsPage() {
  setTitle('Rollouts');
  fill(view, h('h1', null, 'Rollouts'), h('p', { class: 'loading' }, 'Loading…'));
  const ctl = controller('rollouts', async ({ signal, alive }) => {
    const [r, envs] = await Promise.all([api('/api/rollouts', { signal }), getEnvs(signal), meReady]);
    if (!alive()) return;
    renderRollouts(r.rollouts || [], envs);
  });

  async function run(btn, title, text, yesLabel, danger, path, payload) {
    const ok = await confirmAction(title, text, yesLabel, danger);
    if (!ok || !ctl.alive()) return;
    btn.disabled = true;
    const done = busyStart();
    try {
      const res = await post(path, payload);
      notify(res.message || 'Done.');
    } catch (e) {
      notify(e.message, 'error');
    } finally {
      btn.disabled = false;
      done();
    }
    ctl.refresh();
  }

  function renderRollouts(rollouts, envs) {
    const order = envs.environments.map((e) => e.name);
    const envByName = new Map(envs.environments.map((e) => [e.name, e]));
    const rank = (r) => {
      const i = order.indexOf(r.environment);
      return i < 0 ? order.length : i;
    };
    const sorted = [...rollouts].sort((a, b) => rank(a) - rank(b) || (a.app ? 1 : 0) - (b.app ? 1 : 0)
      || String(a.app || '').localeCompare(String(b.app || '')));
    const withEnvRollout = new Set(rollouts.filter((r) => !r.app).map((r) => r.environment));

    const envButtons = (env, pinned) => [
      actionButton('rollback', 'Roll back', (e) => run(e.currentTarget, `Roll back ${env}?`,
        `Pin ${env} at the revision it ran before the current one. New commits wait until the pin is released.`,
        'Roll back', true, '/api/rollback', { environment: env, toRevision: '', release: false }), { danger: true }),
      pinned ? actionButton('release', 'Release pin', (e) => run(e.currentTarget, `Release ${env}'s pin?`,
        `${env} is pinned at ${short(pinned)}. Releasing the pin lets it take its branch's newest commit again.`,
        'Release pin', false, '/api/rollback', { environment: env, toRevision: '', release: true })) : null,
    ];

    const section = (r) => {
      const key = r.app ? `${r.environment}/${r.app}` : r.environment;
      const env = envByName.get(r.environment) || {};
      const phase = r.phase || '';
      const id = `ro-${key.replace(/[^a-zA-Z0-9_-]/g, '_')}`;
      const title = r.app ? `${r.environment} · app ${r.app}` : r.environment;
      const what = r.app ? `the rollout of ${r.app} in ${r.environment}` : `${r.environment}'s rollout`;
      const act = (action, label, text, danger) => actionButton(action, label, (e) => run(e.currentTarget,
        `${label} ${what}?`, text, label, danger, '/api/rollouts/action', { environment: r.environment, action, app: r.app || '' }), { danger });
      const buttons = [
        ['progressing', 'soaking'].includes(phase) ? act('pause', 'Pause', 'No further wave is released until it is resumed.') : null,
        phase === 'paused' ? act('resume', 'Resume', 'Waves are released again as their gates allow.') : null,
        phase === 'awaiting-approval' ? act('approve', 'Approve', 'The next wave is released.') : null,
        !['complete', 'aborted'].includes(phase)
          ? act('abort', 'Abort', 'No further wave is released; released clusters keep the new revision (roll back to undo).', true) : null,
        r.app ? null : envButtons(r.environment, env.pinned),
      ];
      const p = wavesProgress(r.waves);
      const soak = Number(r.soakLeftMs) || 0;
      const s = h('section', { class: 'card rollout', 'aria-labelledby': id },
        h('h2', { id }, h('span', null, title), ' ', phaseBadge(phase)),
        r.reason ? h('p', { class: 'pre reason' }, r.reason) : null,
        env.pinned && !r.app ? h('p', { class: 'alert warn' }, h('strong', null, 'Pinned '), rev(env.pinned),
          ': a rollback holds this environment there; new commits wait until the pin is released.') : null,
        h('dl', { class: 'facts' },
          h('dt', null, 'Revision'), h('dd', null, rev(r.revision)),
          h('dt', null, 'From'), h('dd', null, (r.fromRevisions || []).length
            ? r.fromRevisions.map((x, i) => [i ? ', ' : '', rev(x)]) : dash()),
          h('dt', null, 'Started'), h('dd', null, time(r.startedUnixMs, 'full'), ' (', time(r.startedUnixMs), ')'),
          soak > 0 || phase === 'soaking' ? [h('dt', null, 'Soak'), h('dd', null, h('span', { 'data-soak-end': String(Date.now() + soak) }, `${duration(soak)} left`))] : null,
          h('dt', null, 'Progress'), h('dd', null, `${fmt(p.released)}/${fmt(p.clusters)} released, ${fmt(p.done)} done, ${fmt(p.failed)} failed`)),
        (r.waves || []).length ? table(null, `Waves of ${title}`, ['Wave', 'Progress', 'Released', 'Done', 'Failed', 'Max unavailable', 'State'],
          r.waves.map((w) => {
            const released = Number(w.released) || 0;
            const clusters = Number(w.clusters) || 0;
            const state = w.open ? h('span', { class: 'badge info' }, 'open')
              : released >= clusters && clusters ? h('span', { class: 'badge ok' }, 'released') : h('span', { class: 'muted' }, 'waiting');
            const tr = h('tr', { class: w.open ? 'selected' : '' },
              h('th', { scope: 'row' }, w.name || '?'),
              h('td', { class: 'bar-cell' }, bar({ clusters, released, done: Number(w.done) || 0, failed: Number(w.failed) || 0 }, `wave ${w.name}`)),
              h('td', { class: 'num' }, `${fmt(released)}/${fmt(clusters)}`),
              h('td', { class: 'num' }, fmt(w.done)),
              h('td', { class: 'num' }, Number(w.failed) ? h('span', { class: 'badge bad' }, fmt(w.failed)) : '0'),
              h('td', { class: 'num' }, fmt(w.maxUnavailable)),
              h('td', null, state));
            tr.dataset.wave = w.name || '';
            return tr;
          })) : null,
        h('div', { class: 'actions' }, buttons));
      s.dataset.rollout = key;
      return s;
    };

    const others = envs.environments.filter((e) => !withEnvRollout.has(e.name));
    fill(view,
      h('h1', null, 'Rollouts'),
      whyNotNote(),
      sorted.length ? sorted.map(section)
        : h('p', { class: 'empty' }, 'No rollouts: give an environment `rollout:` in convoy.yaml, or an app `rollout:` in its app.yaml.'),
      others.length ? h('section', { class: 'card', 'aria-labelledby': 'other-envs' },
        h('h2', { id: 'other-envs' }, 'Environments without a rollout'),
        h('ul', { class: 'plain env-actions' }, others.map((e) => {
          const li = h('li', null, h('strong', null, e.name), ' ', rev(e.commit), ' ',
            e.pinned ? h('span', { class: 'badge bad' }, `pinned ${short(e.pinned)}`) : null, ' ',
            h('span', { class: 'actions' }, envButtons(e.name, e.pinned)));
          li.dataset.envActions = e.name;
          return li;
        }))) : null);
  }

  ctl.refresh();
  return ctl;
}

// ---------- start ----------

const panel = document.getElementById('activity-panel');
const wide = window.matchMedia('(min-width: 1100px)');
if (panel && wide.matches) panel.open = true; // beside the page when there is room, folded below it on phones
wide.addEventListener('change', (e) => { if (e.matches && panel) panel.open = true; });
loadMe();
connect();
route(false);
