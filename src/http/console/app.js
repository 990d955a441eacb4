// wayfare operator console: plain JavaScript, no framework, no build step.
//
// Token: the operator token lives in this tab only (a variable, and sessionStorage so a
// reload keeps the session; closing the tab or "Sign out" forgets it). It is sent as
// `Authorization: Bearer`, never in a URL or a cookie.
//
// Live feed: a streamed fetch (ReadableStream over the chunked response of
// GET /v1/system/events, newline-delimited JSON) rather than EventSource, because
// EventSource cannot send an Authorization header.
//
// Everything from the server is written with textContent, never as HTML: panic
// messages and failure reasons are untrusted text.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const TOKEN_KEY = 'wayfare.console.token';
  const HISTORY_MS = 5 * 60 * 1000; // sparklines and breaker timelines
  const STALE_MS = 5000; // no snapshot for this long: reconnect
  const HEALTH_EVERY_MS = 30000; // /health writes a probe record: not on every snapshot
  const SAGA_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(:cancel)?$/;

  let token = null;
  let feed = null; // AbortController of the running fetch
  let backoff = 1000;
  let lastSeen = 0;
  let serverSkew = 0; // server clock minus ours, ms
  let rateBase = null; // counters at the last rate sample
  let restarts = new Map(); // child key -> restarts seen
  const series = new Map(); // name -> [[t, v]]
  let health = null; // last /health answer and when
  let healthTimer = null;

  // ---- small DOM helpers ----
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function setText(e, text) {
    if (e.textContent !== text) e.textContent = text;
  }
  // Sets a badge's text and tone, keeping the classes it was made with.
  function badge(e, text, tone) {
    setText(e, text);
    if (e.dataset.base === undefined) e.dataset.base = e.className;
    e.className = e.dataset.base + ' ' + tone;
  }
  const now = () => Date.now() + serverSkew;
  function ago(iso) {
    const s = Math.max(0, Math.round((now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    return Math.floor(s / 3600) + ' h ago';
  }
  const clock = (iso) => new Date(iso).toLocaleTimeString();
  function num(v, unit) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    const s = v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(1) : v.toFixed(2);
    return unit ? s + ' ' + unit : s;
  }
  const pct = (v) => (v === null || v === undefined ? '–' : v + '%');

  // ---- sparklines: the last five minutes, kept in the page ----
  function push(name, t, v) {
    let s = series.get(name);
    if (!s) series.set(name, (s = []));
    s.push([t, v]);
    while (s.length && s[0][0] < t - HISTORY_MS) s.shift();
  }
  function spark(svgEl, name) {
    const s = series.get(name) || [];
    if (!svgEl.firstChild) {
      svgEl.append(svg('polygon', { class: 'area' }), svg('polyline'));
    }
    // The x axis runs from the oldest point kept (at most five minutes ago) to now.
    const end = now();
    const t0 = Math.max(end - HISTORY_MS, s.length ? s[0][0] : end);
    const span = Math.max(1000, end - t0);
    const max = Math.max(1e-9, ...s.map((p) => p[1] || 0));
    const pts = s.map(([t, v]) => {
      const x = Math.max(0, ((t - t0) / span) * 300).toFixed(1);
      const y = (38 - ((v || 0) / max) * 34).toFixed(1);
      return x + ',' + y;
    });
    svgEl.lastChild.setAttribute('points', pts.join(' '));
    svgEl.firstChild.setAttribute(
      'points',
      pts.length ? pts[0].split(',')[0] + ',40 ' + pts.join(' ') + ' ' + pts[pts.length - 1].split(',')[0] + ',40' : ''
    );
    svgEl.dataset.points = String(s.length);
  }

  // ---- sign in and out ----
  function showSignIn(message) {
    $('console').hidden = true;
    $('pills').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    const err = $('signin-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token').focus();
  }
  function signOut(message) {
    if (feed) feed.abort();
    feed = null;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(healthTimer);
    healthTimer = null;
    health = null;
    rateBase = null;
    restarts = new Map();
    series.clear();
    for (const id of ['tree', 'sellers', 'partners', 'saga-counts', 'parked']) $(id).replaceChildren();
    showSignIn(message);
  }
  function start() {
    $('signin-button').disabled = true;
    setText($('pill-feed'), 'connecting');
    connect();
  }
  function signedIn() {
    // The first snapshot proves the token: only now is it kept for the tab.
    sessionStorage.setItem(TOKEN_KEY, token);
    $('signin').hidden = true;
    $('signin-button').disabled = false;
    $('console').hidden = false;
    $('pills').hidden = false;
    $('signout').hidden = false;
    if (!healthTimer) {
      probe();
      healthTimer = setInterval(probe, HEALTH_EVERY_MS);
    }
  }
  const auth = () => ({ Authorization: 'Bearer ' + token });

  // ---- the live feed ----
  async function connect() {
    if (!token) return;
    if (feed) feed.abort();
    const ctrl = new AbortController();
    feed = ctrl;
    let res;
    try {
      res = await fetch('/v1/system/events', {
        headers: { ...auth(), Accept: 'application/x-ndjson' },
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (e) {
      return retryLater(ctrl, 'offline');
    }
    if (res.status === 401 || res.status === 403) {
      $('signin-button').disabled = false;
      return signOut('The server refused this token (' + res.status + ').');
    }
    if (!res.ok || !res.body) return retryLater(ctrl, 'feed ' + res.status);
    lastSeen = Date.now();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line.trim() && feed === ctrl) {
            try {
              onSnapshot(JSON.parse(line));
            } catch (e) {
              // A page bug must not look like a dead feed: say it, keep reading.
              console.error(e);
              badge($('pill-feed'), 'page error: ' + e.message, 'bad');
            }
          }
        }
      }
    } catch (e) {
      // Aborted (stale, or signed out) or the connection broke: reconnect below.
    }
    retryLater(ctrl, 'reconnecting');
  }
  function retryLater(ctrl, why) {
    if (feed !== ctrl || !token) return; // superseded or signed out
    if ($('signin').hidden === false) {
      // Never signed in: say why instead of retrying for ever.
      $('signin-button').disabled = false;
      return showSignIn('Cannot reach the live feed (' + why + ').');
    }
    badge($('pill-feed'), why, 'warn');
    setTimeout(() => feed === ctrl && connect(), backoff);
    backoff = Math.min(backoff * 2, 10000);
  }
  setInterval(() => {
    if (feed && lastSeen && Date.now() - lastSeen > STALE_MS && $('console').hidden === false) {
      lastSeen = Date.now();
      badge($('pill-feed'), 'stale: reconnecting', 'warn');
      connect();
    }
    if (health) renderHealth();
  }, 1000);

  function onSnapshot(s) {
    if (s.seq === 1 || $('console').hidden) signedIn();
    lastSeen = Date.now();
    backoff = 1000;
    const t = Date.parse(s.at);
    serverSkew = t - Date.now();
    sampleRates(s, t);
    renderTree(s.tree);
    renderCards('sellers', s.sellers, t, 'No sellers configured.');
    renderCards('partners', s.partners, t, 'No other partners.');
    renderSagas(s.sagas);
    renderHttp(s.http);
    badge($('pill-feed'), 'live · ' + clock(s.at), 'ok');
    const healthy = treeHealthy(s.tree);
    badge($('pill-tree'), healthy ? 'supervisors ok' : 'supervisor gave up', healthy ? 'ok' : 'bad');
    const faults = s.faults ? Object.values(s.faults).reduce((a, b) => a + b, 0) : null;
    $('pill-faults').hidden = faults === null;
    if (faults !== null) setText($('pill-faults'), 'fault injection on · ' + faults + ' fired');
  }
  function treeHealthy(sup) {
    return sup.state === 'running' && sup.children.every((c) => !c.supervisor || treeHealthy(c.supervisor));
  }
  function sagaTotal(s) {
    return s.sagas ? Object.values(s.sagas.by_state).reduce((a, b) => a + b, 0) : null;
  }

  // Rates are counter deltas over at least ~1 s (snapshots sent early on a change would
  // make noisy rates).
  function sampleRates(s, t) {
    const adapters = s.sellers.concat(s.partners);
    const calls = Object.fromEntries(adapters.map((x) => [x.name, x.calls]));
    const cur = { t, requests: s.http.requests, sagas: sagaTotal(s), calls };
    if (!rateBase || t < rateBase.t) {
      rateBase = cur;
      return;
    }
    const dt = (t - rateBase.t) / 1000;
    if (dt < 0.9) return;
    push('http-rps', t, Math.max(0, (cur.requests - rateBase.requests) / dt));
    push('http-p99', t, s.http.latency.p99_ms || 0);
    if (cur.sagas !== null && rateBase.sagas !== null) push('saga-rate', t, Math.max(0, (cur.sagas - rateBase.sagas) / dt));
    for (const x of adapters) {
      const before = rateBase.calls[x.name];
      if (before !== undefined) push('calls:' + x.name, t, Math.max(0, (x.calls - before) / dt));
      push('p99:' + x.name, t, x.latency.p99_ms || 0);
    }
    rateBase = cur;
  }
  const last = (name) => {
    const s = series.get(name);
    return s && s.length ? s[s.length - 1][1] : null;
  };

  // ---- supervision tree ----
  function renderTree(root) {
    const box = $('tree');
    let node = box.firstChild;
    if (!node) box.append((node = supNode()));
    fillSup(node, root, root.name);
  }
  function supNode() {
    const node = el('div', 'sup');
    const head = el('div', 'head');
    head.append(el('b', 'name'), el('span', 'badge'), el('span', 'muted strategy'), el('span', 'muted budget'), el('span', 'restarts'));
    node.append(head, el('div', 'failure error'), el('ul'));
    return node;
  }
  function fillSup(node, sup, path) {
    const [name, state, strategy, budget] = node.firstChild.children;
    setText(name, sup.name);
    badge(state, sup.state, sup.state === 'running' ? 'ok' : 'bad');
    setText(strategy, sup.strategy.replaceAll('_', '-'));
    const left = Math.max(0, sup.max_restarts - sup.restarts_in_window);
    setText(budget, 'budget ' + left + '/' + sup.max_restarts + ' per ' + sup.within_secs + ' s');
    budget.className = 'budget ' + (left === 0 ? 'bad' : left <= sup.max_restarts / 2 ? 'warn' : 'muted');
    const failure = node.children[1];
    failure.hidden = !sup.failure;
    if (sup.failure) setText(failure, 'gave up ' + ago(sup.failure.at) + ': ' + sup.failure.reason);
    const list = node.children[2];
    const seen = new Set();
    for (const child of sup.children) {
      const key = path + '/' + child.name;
      seen.add(key);
      let li = list.querySelector(':scope > li[data-key="' + CSS.escape(key) + '"]');
      if (!li) list.append((li = childNode(key, child.name)));
      fillChild(li, child, key);
    }
    for (const li of [...list.children]) if (!seen.has(li.dataset.key)) li.remove();
  }
  function childNode(key, name) {
    const li = el('li');
    li.dataset.key = key;
    li.dataset.child = name;
    const row = el('div', 'child');
    const meter = el('meter');
    meter.min = 0;
    row.append(el('span', 'name', name), el('span', 'badge state'), el('span', 'restarts'), meter, el('span', 'failure'));
    li.append(row);
    return li;
  }
  function fillChild(li, c, key) {
    const row = li.firstChild;
    const [, state, count, meter, failure] = row.children;
    badge(state, c.state, c.state === 'running' ? 'ok' : c.state === 'restarting' || c.state === 'starting' ? 'warn' : 'bad');
    // A nested supervisor is drawn by its own head, which carries its restarts.
    let sub = li.querySelector(':scope > .sup');
    if (c.supervisor && !sub) li.append((sub = supNode()));
    row.hidden = !!c.supervisor;
    const shown = c.supervisor ? sub.firstChild.lastChild : count;
    setText(shown, '↻ ' + c.restarts);
    shown.title = c.restarts + ' restarts since start';
    li.dataset.restarts = String(c.restarts);
    const before = restarts.get(key);
    if (before !== undefined && c.restarts > before) {
      const target = c.supervisor ? sub.firstChild : row;
      target.classList.remove('flash');
      void target.offsetWidth; // restart the animation
      target.classList.add('flash');
    }
    restarts.set(key, c.restarts);
    meter.hidden = c.mailbox_capacity == null;
    if (c.mailbox_capacity != null) {
      meter.max = c.mailbox_capacity;
      meter.value = c.mailbox_depth || 0;
      meter.high = c.mailbox_capacity * 0.8;
      meter.title = 'mailbox ' + (c.mailbox_depth || 0) + ' / ' + c.mailbox_capacity;
    }
    failure.hidden = !c.last_failure;
    if (c.last_failure) {
      setText(failure, 'last failure ' + ago(c.last_failure.at) + ': ' + c.last_failure.reason);
      failure.title = c.last_failure.at;
    }
    if (c.supervisor) fillSup(sub, c.supervisor, key);
  }

  // ---- sellers ----
  const STAT_ROWS = [
    ['errors', 'Errors (window)'],
    ['slow', 'Slow (window)'],
    ['rate', 'Calls/s'],
    ['bulkhead', 'Bulkhead in use'],
    ['latency', 'p50 / p99 (10 s)'],
    ['l2b', 'Look-to-book'],
    ['refused', 'Refused open/full/l2b'],
    ['timeouts', 'Failed / timed out'],
  ];
  // One card per adapter (sellers, and partners such as the payment gateway).
  function renderCards(boxId, adapters, t, emptyText) {
    const box = $(boxId);
    const seen = new Set();
    for (const s of adapters) {
      seen.add(s.name);
      let card = box.querySelector(':scope > [data-seller="' + CSS.escape(s.name) + '"]');
      if (!card) box.append((card = sellerCard(s.name)));
      fillSeller(card, s, t);
    }
    for (const card of [...box.children]) if (!seen.has(card.dataset.seller)) card.remove();
    if (!adapters.length && !box.firstChild) box.append(el('p', 'hint', emptyText));
  }
  function sellerCard(name) {
    const card = el('div', 'card');
    card.dataset.seller = name;
    const head = el('div', 'head');
    head.append(el('b', null, name), el('span', 'badge breaker-state'));
    const dl = el('dl');
    for (const [key, label] of STAT_ROWS) {
      const dd = el('dd');
      dd.dataset.stat = key;
      dl.append(el('dt', null, label), dd);
    }
    const rate = svg('svg', { class: 'spark', viewBox: '0 0 300 40', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    rate.dataset.spark = 'calls';
    const p99 = rate.cloneNode();
    p99.dataset.spark = 'p99';
    const timeline = svg('svg', { class: 'timeline', viewBox: '0 0 300 10', preserveAspectRatio: 'none', 'aria-label': 'breaker states, last 5 minutes' });
    card.append(head, timeline, el('ul', 'transitions'), dl, el('h3', null, 'Calls/s · p99, 5 min'), rate, p99);
    return card;
  }
  function fillSeller(card, s, t) {
    const state = s.breaker ? s.breaker.state : 'closed';
    card.dataset.breaker = state;
    badge(card.querySelector('.breaker-state'), state.replace('_', '-'), state === 'closed' ? 'ok' : state === 'open' ? 'bad' : 'warn');
    const stat = (k, v) => setText(card.querySelector('[data-stat="' + k + '"]'), v);
    const b = s.breaker;
    stat('errors', b ? pct(b.failure_rate_percent) + ' of ' + b.calls_in_window : '–');
    stat('slow', b ? pct(b.slow_rate_percent) : '–');
    stat('rate', num(last('calls:' + s.name)));
    stat('bulkhead', s.in_flight + ' / ' + (s.bulkhead_limit || '–'));
    const l = s.latency;
    stat('latency', l.count ? num(l.p50_ms, 'ms') + ' / ' + num(l.p99_ms, 'ms') : 'no calls in ' + Math.round(l.window_secs) + ' s');
    stat('l2b', s.searches + ' : ' + s.bookings + (s.bookings ? ' (' + Math.round(s.searches / s.bookings) + ':1)' : ''));
    stat('refused', s.short_circuited + ' / ' + s.bulkhead_rejected + ' / ' + s.throttled);
    stat('timeouts', s.failures + ' / ' + s.timeouts);
    spark(card.querySelector('[data-spark="calls"]'), 'calls:' + s.name);
    spark(card.querySelector('[data-spark="p99"]'), 'p99:' + s.name);
    // Timeline: one band per state over the last five minutes.
    const band = card.querySelector('.timeline');
    const t0 = t - HISTORY_MS;
    const within = s.transitions.filter((x) => Date.parse(x.at) >= t0);
    let cursor = t0;
    let current = within.length ? within[0].from : state;
    const rects = [];
    const seg = (from, to, st) => {
      const x = ((from - t0) / HISTORY_MS) * 300;
      const w = Math.max(0.5, ((to - from) / HISTORY_MS) * 300);
      rects.push(svg('rect', { x: x.toFixed(1), y: 0, width: w.toFixed(1), height: 10, class: st }));
    };
    for (const x of within) {
      const at = Date.parse(x.at);
      seg(cursor, at, current);
      cursor = at;
      current = x.to;
    }
    seg(cursor, t, current);
    band.replaceChildren(...rects);
    const list = card.querySelector('.transitions');
    const recent = s.transitions.slice(-6).reverse();
    list.replaceChildren(...recent.map((x) => el('li', null, clock(x.at) + '  ' + x.from.replace('_', '-') + ' → ' + x.to.replace('_', '-'))));
    list.title = s.transitions_total + ' transitions since start';
  }

  // ---- sagas ----
  function renderSagas(sagas) {
    const chips = $('saga-counts');
    if (!sagas) {
      chips.replaceChildren(el('span', 'chip bad', 'saga figures unavailable'));
      return;
    }
    const items = Object.entries(sagas.by_state).map(([k, v]) => [k.replaceAll('_', ' '), v]);
    items.push(['running', sagas.running], ['crashes', sagas.crashes]);
    chips.replaceChildren(
      ...items.map(([k, v]) => {
        const c = el('span', 'chip' + (k === 'needs attention' && v ? ' bad' : ''), k + ' ');
        c.append(el('b', null, String(v)));
        return c;
      })
    );
    setText($('saga-rate'), num(last('saga-rate')));
    spark($('spark-saga-rate'), 'saga-rate');
    setText($('parked-count'), String(sagas.needs_attention));
    $('parked-empty').hidden = sagas.needs_attention > 0;
    const list = $('parked');
    const seen = new Set();
    for (const p of sagas.parked) {
      seen.add(p.id);
      let li = list.querySelector(':scope > [data-saga="' + CSS.escape(p.id) + '"]');
      if (!li) list.append((li = parkedItem(p.id)));
      setText(li.querySelector('.reason'), p.reason);
    }
    for (const li of [...list.children]) if (!seen.has(li.dataset.saga)) li.remove();
  }
  function parkedItem(id) {
    const li = el('li');
    li.dataset.saga = id;
    const actions = el('div', 'actions');
    const retry = el('button', 'retry', 'Retry…');
    retry.type = 'button';
    const confirm = el('span', 'confirm');
    confirm.hidden = true;
    const yes = el('button', 'danger confirm-retry', 'Confirm retry');
    yes.type = 'button';
    const no = el('button', 'quiet', 'Cancel');
    no.type = 'button';
    confirm.append('Resume this saga with a fresh retry budget? ', yes, ' ', no);
    retry.addEventListener('click', () => {
      retry.hidden = true;
      confirm.hidden = false;
    });
    no.addEventListener('click', () => {
      retry.hidden = false;
      confirm.hidden = true;
    });
    yes.addEventListener('click', () => retrySaga(id, li, yes));
    actions.append(retry, confirm);
    const details = el('details');
    details.append(el('summary', null, 'History'), el('ol'));
    details.addEventListener('toggle', () => details.open && loadHistory(id, details.lastChild));
    li.append(el('code', null, id), el('div', 'reason'), actions, details);
    return li;
  }
  async function retrySaga(id, li, button) {
    if (!SAGA_ID.test(id)) return;
    button.disabled = true;
    const out = $('retry-result');
    try {
      const res = await fetch('/v1/admin/sagas/' + id + '/retry', { method: 'POST', headers: auth() });
      const body = await res.json().catch(() => ({}));
      if (res.ok) {
        setText(out, 'Retry of ' + id + ' accepted (now ' + body.state + ').');
        li.classList.add('muted');
      } else {
        setText(out, 'Retry of ' + id + ' refused: ' + (body.detail || res.status));
        button.disabled = false;
      }
    } catch (e) {
      setText(out, 'Retry of ' + id + ' failed: the server did not answer.');
      button.disabled = false;
    }
  }
  function elapsed(ms) {
    if (!(ms >= 0)) return '?';
    return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }
  async function loadHistory(id, list) {
    if (!SAGA_ID.test(id)) return;
    const booking = id.replace(/:cancel$/, '');
    list.replaceChildren(el('li', 'muted', 'loading…'));
    try {
      const res = await fetch('/v1/bookings/' + booking, { headers: auth() });
      const b = await res.json();
      if (!res.ok) throw new Error(b.detail || res.status);
      const saga = id.endsWith(':cancel') && b.cancellation ? b.cancellation : b;
      const entries = saga.history;
      // Each entry with the time since the one before, and each partner call under the
      // first line of its step written after the call started (the line that says how
      // that step went): where the saga's time went, from its own record, with or without
      // a trace collector.
      const calls = saga.partner_calls ? saga.partner_calls.calls : [];
      const under = entries.map(() => []);
      const unplaced = [];
      for (const c of calls) {
        const started = Date.parse(c.started_at);
        const at = entries.findIndex((h) => h.step === c.step && Date.parse(h.at) >= started);
        (at >= 0 ? under[at] : unplaced).push(c);
      }
      const callRow = (c) => el('li', 'call', '↳ ' + c.partner + ' ' + c.operation + ' #' + c.attempt +
        ' [' + c.step + '] ' + elapsed(c.duration_ms) + ' ' + c.outcome +
        (c.http_status ? ' (HTTP ' + c.http_status + ')' : '') + (c.detail ? ': ' + c.detail : ''));
      const rows = [];
      entries.forEach((h, i) => {
        const took = i > 0 ? ' (+' + elapsed(Date.parse(h.at) - Date.parse(entries[i - 1].at)) + ')' : '';
        rows.push(el('li', null, clock(h.at) + took + ' ' + h.state + (h.step ? ' [' + h.step + ']' : '') + ': ' + h.note));
        rows.push(...under[i].map(callRow));
      });
      rows.push(...unplaced.map(callRow));
      if (saga.partner_calls && saga.partner_calls.dropped > 0) {
        rows.push(el('li', 'muted', saga.partner_calls.dropped + ' partner calls not kept (between the first and the latest)'));
      }
      if (entries.length > 1) {
        const total = Date.parse(entries[entries.length - 1].at) - Date.parse(entries[0].at);
        rows.push(el('li', 'muted', 'total ' + elapsed(total)));
      }
      rows.push(el('li', 'muted', saga.trace_id ? 'trace ' + saga.trace_id : 'no trace (spans not exported)'));
      list.replaceChildren(...rows);
    } catch (e) {
      list.replaceChildren(el('li', 'error', 'history unavailable: ' + e.message));
    }
  }

  // ---- HTTP and store ----
  function renderHttp(h) {
    setText($('http-rps'), num(last('http-rps')));
    setText($('http-p99'), h.latency.count ? num(h.latency.p99_ms, 'ms') : '–');
    spark($('spark-http-rps'), 'http-rps');
    spark($('spark-http-p99'), 'http-p99');
    const refused = (h.status['429'] || 0) + (h.status['503'] || 0) + (h.status['504'] || 0);
    setText($('http-refused'), String(refused));
    setText($('http-refused-detail'), '429: ' + (h.status['429'] || 0) + ' · 503: ' + (h.status['503'] || 0) + ' · 504: ' + (h.status['504'] || 0) + ' since start');
  }
  async function probe() {
    if (!token) return;
    try {
      const res = await fetch('/health', { headers: auth(), cache: 'no-store' });
      health = { at: Date.now(), body: await res.json() };
    } catch (e) {
      health = { at: Date.now(), body: null };
    }
    renderHealth();
  }
  function renderHealth() {
    const b = health.body;
    const age = Math.round((Date.now() - health.at) / 1000);
    const ok = b && b.store && b.store.ok;
    setText($('store-state'), b ? (ok ? 'ok' : 'failing') : 'no answer');
    $('store-state').className = ok ? 'ok' : 'bad';
    const detail = b && b.store && b.store.detail ? b.store.detail + ' · ' : '';
    setText($('store-detail'), detail + 'probed ' + age + ' s ago' + (b ? ' · up ' + Math.round(b.uptime_secs / 60) + ' min' : ''));
    badge($('pill-store'), ok ? 'store ok' : 'store failing', ok ? 'ok' : 'bad');
    // Emails the transport kept refusing: parked with their last error, never retried.
    const emails = b && b.emails;
    const parked = emails ? emails.parked : 0;
    $('emails-parked').hidden = !(parked > 0);
    if (parked > 0) {
      const first = emails.parked_listed[0];
      setText($('emails-parked'), parked + (parked === 1 ? ' email' : ' emails') + ' parked' +
        (first ? ' · booking ' + first.booking_id + ': ' + first.reason : ''));
    }
  }

  // ---- wiring ----
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('token');
    token = input.value.trim();
    input.value = '';
    if (token) start();
  });
  $('signout').addEventListener('click', () => signOut());
  $('probe').addEventListener('click', probe);
  token = sessionStorage.getItem(TOKEN_KEY);
  if (token) start();
  else showSignIn();
})();
