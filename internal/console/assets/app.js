// sidecar console: polls /readyz, /v1/status and the admin API every 2 s
// (not while the tab is hidden) and renders them. Everything shown that
// comes from events is untrusted: the page builds DOM nodes and sets
// textContent, never HTML.
'use strict';

(() => {
  // ?interval=<ms> (at least 200) polls faster, e.g. to watch a drain.
  const REFRESH_MS = (() => {
    const v = parseInt(new URLSearchParams(location.search).get('interval'), 10);
    return v >= 200 ? v : 2000;
  })();
  const HISTORY = 90; // lag samples kept per subscription (3 minutes at 2 s)
  const TOKEN_KEY = 'sidecar.apiToken';
  const SVG = 'http://www.w3.org/2000/svg';

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    ready: null,
    status: null,
    topics: null, // null = not loaded (or unavailable)
    selected: decodeURIComponent((location.hash.match(/^#topic=(.+)$/) || [])[1] || ''),
    dlqGroup: '',
    events: null,
    dlq: null,
    lag: new Map(), // "topic/group" → [{t, v}]
    expanded: new Set(),
    busy: new Set(),
    lastOK: 0,
    timer: 0,
    running: false,
    again: false,
    needToken: false,
    lastErr: '',
  };

  // ---------- formatting ----------

  const intFmt = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (typeof n === 'number' && isFinite(n) ? intFmt.format(n) : '—');

  function fmtBytes(n) {
    if (typeof n !== 'number' || !isFinite(n)) return '—';
    if (n < 1024) return n + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = n, i = -1;
    do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
    return (v < 100 ? v.toFixed(1) : Math.round(v).toString()) + ' ' + units[i];
  }

  function fmtDuration(sec) {
    if (typeof sec !== 'number' || !isFinite(sec) || sec < 0) return '—';
    if (sec < 1) return Math.round(sec * 1000) + ' ms';
    if (sec < 60) return (sec < 10 ? Math.round(sec * 10) / 10 : Math.round(sec)) + ' s';
    const m = Math.floor(sec / 60);
    if (m < 60) return m + ' min';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }

  function fmtAgo(ms) {
    if (!ms) return '—';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 1) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 172800) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  const idMillis = (id) => {
    const ms = parseInt(String(id || '').split('-')[0], 10);
    return isFinite(ms) && ms > 0 ? ms : 0;
  };
  const timeOf = (s) => {
    const t = Date.parse(s || '');
    return isFinite(t) && t > 0 ? t : 0;
  };
  const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : '—');

  // ---------- DOM helpers ----------

  const $ = (id) => document.getElementById(id);

  // h builds an element: h('td', {class: 'num', testid: 'x'}, child, 'text').
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setText(id, text, title) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
    if (title !== undefined) el.title = title;
  }

  function show(id, visible) { $(id).hidden = !visible; }

  // ago is a relative time that renderUpdated keeps current, so a row
  // need not be rebuilt for its clock to move.
  function ago(ms) {
    const el = h('span', { class: 'ago' }, fmtAgo(ms));
    el.dataset.ago = String(ms);
    return el;
  }

  // syncRows makes tbody hold one row per spec, keyed. A row whose data
  // changed keeps its element and swaps only the cells that differ, so a
  // button does not vanish under the pointer because a counter beside it
  // moved (a click is lost when its mousedown and mouseup land on
  // different elements).
  function syncRows(tbody, specs) {
    const old = new Map();
    for (const tr of tbody.children) old.set(tr.dataset.key, tr);
    const want = specs.map((s) => {
      const tr = old.get(s.key);
      if (tr && tr._sig === s.sig) return tr;
      const n = s.build();
      n.dataset.key = s.key;
      n._sig = s.sig;
      return tr && patchRow(tr, n) ? tr : n;
    });
    want.forEach((tr, i) => {
      const cur = tbody.children[i];
      if (cur !== tr) tbody.insertBefore(tr, cur || null);
    });
    while (tbody.children.length > want.length) tbody.lastElementChild.remove();
  }

  // patchRow makes tr look like n, cell by cell; false when their shapes
  // differ. Cells drawn after the build (sparklines) are left alone.
  function patchRow(tr, n) {
    if (tr.cells.length !== n.cells.length) return false;
    tr.className = n.className;
    if (n.dataset.testid) tr.dataset.testid = n.dataset.testid;
    const fresh = [...n.cells];
    [...tr.cells].forEach((c, i) => {
      if (!c.classList.contains('spark-cell') && !c.isEqualNode(fresh[i])) c.replaceWith(fresh[i]);
    });
    tr._sig = n._sig;
    return true;
  }

  // ---------- toasts ----------

  function toast(kind, message, code, keep) {
    const box = h('div', { class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status', testid: 'toast' },
      h('div', { class: 'msg' }, h('span', { class: 'text', testid: 'toast-text' }, message),
        code ? h('span', { class: 'code', testid: 'toast-code' }, code) : null),
      h('button', { type: 'button', 'aria-label': 'Dismiss', onclick: () => box.remove() }, '×'));
    $('toasts').append(box);
    while ($('toasts').children.length > 5) $('toasts').firstElementChild.remove();
    if (!keep) setTimeout(() => box.remove(), kind === 'error' ? 9000 : 5000);
    return {
      set(msg) { box.querySelector('.text').textContent = msg; },
      done(later) { setTimeout(() => box.remove(), later || 5000); },
    };
  }

  const apiError = (err) => toast('error', err.message, err.code && err.status ? err.code + ' · HTTP ' + err.status : err.code);

  // ---------- the API ----------

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api calls the sidecar; a non-2xx answer throws an APIError with the
  // API's own message. 401 opens the token form. accept lists statuses that
  // carry data anyway (/readyz answers 503 with its report).
  async function api(method, path, body, accept) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'same-origin',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new APIError(0, 'unreachable', 'The sidecar does not answer (' + e.message + ').');
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (res.status === 401) {
      askToken(state.token ? 'That token was refused.' : '');
      throw new APIError(401, (data && data.code) || 'unauthorized', (data && data.error) || 'An API token is needed.');
    }
    if (!res.ok && !(accept || []).includes(res.status)) {
      const msg = (data && data.error) || (text && text.length < 300 ? text.trim() : '') || res.statusText || 'request failed';
      throw new APIError(res.status, (data && data.code) || 'http_' + res.status, msg);
    }
    return data;
  }

  // enc escapes a path segment or query value; ':' (common in topic names,
  // valid in a path) stays as it is, so routers that match the raw path see
  // the name unchanged.
  const enc = (s) => encodeURIComponent(s).replace(/%3A/gi, ':');
  const topicPath = (t) => '/v1/topics/' + enc(t);
  const subPath = (t, g) => '/v1/subscriptions/' + enc(t) + '/' + enc(g);

  // ---------- token ----------

  function askToken(message) {
    state.needToken = true;
    const d = $('token-dialog');
    setText('token-error', message || '');
    show('token-error', !!message);
    if (!d.open) {
      $('token-input').value = '';
      d.showModal();
    }
    $('token-input').focus();
  }

  function setToken(tok) {
    state.token = tok;
    if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
    else sessionStorage.removeItem(TOKEN_KEY);
    show('forget-token', !!tok);
  }

  // ---------- refresh ----------

  function schedule() {
    clearTimeout(state.timer);
    if (document.hidden || state.needToken) return;
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    clearTimeout(state.timer);
    if (state.running) { state.again = true; return; }
    state.running = true;
    try {
      await load();
    } finally {
      state.running = false;
      if (state.again) { state.again = false; setTimeout(refresh, 0); } else schedule();
      renderUpdated();
    }
  }

  async function load() {
    const [ready, status, topics] = await Promise.allSettled([
      api('GET', '/readyz', undefined, [503]),
      api('GET', '/v1/status'),
      api('GET', '/v1/topics'),
    ]);
    const errors = [];
    if (ready.status === 'fulfilled') state.ready = ready.value;
    else { state.ready = null; errors.push(ready.reason); }
    if (status.status === 'fulfilled') {
      state.status = status.value;
      recordLag(state.status);
    } else errors.push(status.reason);
    if (topics.status === 'fulfilled') {
      state.topics = (topics.value && topics.value.topics) || [];
      setText('topics-error', '');
      show('topics-error', false);
    } else {
      errors.push(topics.reason);
      if (topics.reason.status !== 401) {
        setText('topics-error', 'The admin API did not answer: ' + topics.reason.message);
        show('topics-error', true);
      }
    }
    pickTopic();
    if (state.selected && topics.status === 'fulfilled') await loadTopic(state.selected, errors);
    if (!errors.length) state.lastOK = Date.now();
    render();
    reportRefreshErrors(errors);
  }

  // A failing refresh repeats every 2 s: toast each distinct error once.
  function reportRefreshErrors(errors) {
    const real = errors.filter((e) => e && e.status !== 401);
    const sig = real.map((e) => e.code + ':' + e.message).join('|');
    if (sig && sig !== state.lastErr) {
      const e = real[0];
      apiError(e);
    }
    state.lastErr = sig;
  }

  async function loadTopic(topic, errors) {
    let dlqURL = topicPath(topic) + '/dlq?limit=100';
    if (state.dlqGroup) dlqURL += '&group=' + enc(state.dlqGroup);
    const [events, dlq] = await Promise.allSettled([
      api('GET', topicPath(topic) + '/events?order=desc&limit=20'),
      api('GET', dlqURL),
    ]);
    if (topic !== state.selected) return; // the user chose another meanwhile
    if (events.status === 'fulfilled') {
      state.events = events.value;
      show('events-error', false);
    } else {
      errors.push(events.reason);
      setText('events-error', events.reason.message);
      show('events-error', events.reason.status !== 401);
    }
    if (dlq.status === 'fulfilled') {
      state.dlq = dlq.value;
      show('dlq-error', false);
    } else {
      errors.push(dlq.reason);
      setText('dlq-error', dlq.reason.message);
      show('dlq-error', dlq.reason.status !== 401);
    }
  }

  function recordLag(status) {
    const now = Date.now();
    const seen = new Set();
    for (const s of status.subscriptions || []) {
      const k = s.topic + '/' + s.group;
      seen.add(k);
      const hist = state.lag.get(k) || [];
      hist.push({ t: now, v: typeof s.lag === 'number' && s.lag >= 0 ? s.lag : null });
      if (hist.length > HISTORY) hist.splice(0, hist.length - HISTORY);
      state.lag.set(k, hist);
    }
    for (const k of state.lag.keys()) if (!seen.has(k)) state.lag.delete(k);
  }

  function pickTopic() {
    const names = (state.topics || []).map((t) => t.topic);
    if (state.selected && (state.topics === null || names.includes(state.selected))) return;
    // Open on the topic with the most dead letters: what needs attention.
    let pick = (state.topics || [])[0];
    for (const t of state.topics || []) if (t.dlq_length > (pick.dlq_length || 0)) pick = t;
    selectTopic(pick ? pick.topic : '', false);
  }

  function selectTopic(topic, load) {
    if (topic === state.selected) return;
    state.selected = topic;
    state.events = null;
    state.dlq = null;
    state.dlqGroup = '';
    state.expanded.clear();
    history.replaceState(null, '', topic ? '#topic=' + enc(topic) : location.pathname);
    if (load) {
      render();
      refresh();
    }
  }

  // ---------- render ----------

  function render() {
    renderHeader();
    renderCards();
    renderSubscriptions();
    renderTopics();
    renderTopic();
  }

  function renderUpdated() {
    const el = $('updated');
    const stale = state.lastOK && Date.now() - state.lastOK > 3 * REFRESH_MS;
    let text = state.lastOK ? 'updated ' + fmtAgo(state.lastOK) : 'not loaded yet';
    if (document.hidden) text += ' · paused while hidden';
    el.textContent = text;
    el.classList.toggle('stale', !!stale);
    for (const a of document.querySelectorAll('[data-ago]')) {
      const t = fmtAgo(Number(a.dataset.ago));
      if (a.textContent !== t) a.textContent = t;
    }
  }

  function renderHeader() {
    const st = state.status;
    if (st) {
      setText('service', st.service || 'sidecar');
      document.title = (st.service || 'sidecar') + ' · sidecar console';
      const bits = [];
      if (st.consumer) bits.push('consumer ' + st.consumer);
      if (st.version) bits.push(st.version);
      setText('identity', bits.join(' · '));
    }
    const r = state.ready;
    const el = $('overall');
    const s = r ? r.status : 'unreachable';
    el.dataset.state = s;
    setText('overall-text', { ready: 'Ready', degraded: 'Degraded', not_ready: 'Not ready', draining: 'Draining', unreachable: 'Unreachable' }[s] || s);
    const reasons = r && r.reasons ? r.reasons.join('; ') : '';
    el.title = reasons;
    setText('reasons', reasons);
  }

  function renderCards() {
    const st = state.status;
    if (!st) return;
    const rd = st.redis || {};
    const up = $('redis-up');
    up.textContent = rd.up ? 'up' : 'down';
    up.className = 'badge ' + (rd.up ? 'ok' : 'bad');
    setText('redis-latency', typeof rd.latency_ms === 'number' ? (rd.latency_ms < 10 ? rd.latency_ms.toFixed(2) : Math.round(rd.latency_ms)) + ' ms' : '—');
    setText('redis-version', rd.version || '—');
    const max = rd.maxmemory || 0;
    setText('redis-memory', fmtBytes(rd.used_memory || 0) + (max ? ' of ' + fmtBytes(max) : ' · no limit'));
    const bar = $('redis-memory-bar');
    const frac = max ? Math.min(1, (rd.used_memory || 0) / max) : 0;
    bar.style.width = (frac * 100).toFixed(1) + '%';
    bar.className = frac > 0.9 ? 'bad' : frac > 0.75 ? 'warn' : '';
    const policy = rd.maxmemory_policy || '—';
    setText('redis-policy', policy, policy !== 'noeviction' && policy !== '—' ? 'Redis may evict keys under memory pressure: use noeviction' : '');
    $('redis-policy').className = policy !== 'noeviction' && policy !== '—' ? 'lag-warn' : '';
    const pers = [rd.aof_enabled ? 'AOF' : '', rd.rdb_saves ? 'RDB' : ''].filter(Boolean).join(' + ');
    setText('redis-persistence', pers || 'none');
    $('redis-persistence').className = pers ? '' : 'lag-warn';
    setText('redis-error', rd.last_error || '');
    show('redis-error', !!rd.last_error);

    const sp = st.spool || {};
    const disk = sp.spool || {};
    const badge = $('spool-state');
    const sstate = sp.spooling ? (sp.draining ? 'draining' : 'spooling') : 'idle';
    badge.textContent = sstate;
    badge.className = 'badge ' + (sp.spooling ? 'warn' : 'ok');
    setText('spool-events', fmtInt(disk.events || 0));
    setText('spool-bytes', fmtBytes(disk.bytes || 0) + (disk.max_bytes ? ' of ' + fmtBytes(disk.max_bytes) : ''));
    setText('spool-spooled', fmtInt(sp.spooled || 0));
    setText('spool-drained', fmtInt(sp.drained || 0));
    setText('spool-error', sp.last_error || '');
    show('spool-error', !!sp.last_error);

    setText('uptime', fmtDuration(st.uptime_seconds));
    const subs = st.subscriptions || [];
    setText('subs-running', fmtInt(subs.filter((s) => s.running).length) + ' of ' + fmtInt(subs.length) + ' running');
    let published = 0;
    for (const outcomes of Object.values(st.topics || {})) {
      for (const [k, v] of Object.entries(outcomes || {})) if (k !== 'rejected') published += v;
    }
    setText('published', fmtInt(published));
    const dead = (state.topics || []).reduce((n, t) => n + (t.dlq_length || 0), 0);
    setText('dead-total', state.topics ? fmtInt(dead) : '—');
  }

  // groupInfo is the admin API's view of a group (paused, consumers), if loaded.
  function groupInfo(topic, group) {
    const t = (state.topics || []).find((x) => x.topic === topic);
    return t ? (t.groups || []).find((g) => g.group === group) : undefined;
  }

  // /v1/topics reads Redis on each call; /v1/status is refreshed on the
  // sidecar's own ticker, so it may trail a pause for a moment.
  const isPaused = (sub, gi) => (gi ? !!gi.paused : !!sub.paused);

  function lagClass(n) {
    if (typeof n !== 'number' || n < 0) return '';
    return n >= 10000 ? 'lag-bad' : n >= 1000 ? 'lag-warn' : '';
  }

  function stateBadge(paused, running) {
    if (paused) return h('span', { class: 'badge warn' }, 'paused');
    if (running === false) return h('span', { class: 'badge bad' }, 'waiting');
    return h('span', { class: 'badge ok' }, 'running');
  }

  function renderSubscriptions() {
    const st = state.status;
    if (!st) return;
    const subs = st.subscriptions || [];
    show('subs-empty', subs.length === 0);
    syncRows($('subs-body'), subs.map((s) => {
      const gi = groupInfo(s.topic, s.group);
      const paused = isPaused(s, gi);
      const id = s.topic + '-' + s.group;
      const failed = (s.dead_lettered || 0);
      const row = {
        key: s.topic + '/' + s.group,
        sig: JSON.stringify([gi && gi.dlq_length, s.lag, s.pending, s.oldest_pending_seconds > 0 ? Math.round(s.oldest_pending_seconds) : 0, s.dlq_length, s.delivered, s.retried, failed,
          s.last_delivery, s.last_error, s.error, s.running, paused, state.busy.has('pause:' + s.topic + '/' + s.group)]),
        build: () => h('tr', { testid: 'sub-' + id },
          h('td', { title: 'consumer ' + (s.consumer || '—') + (s.url ? ' → ' + s.url : '') }, h('div', { class: 'name' }, s.topic, h('span', { class: 'grp' }, ' / ' + s.group))),
          h('td', { testid: 'state-' + id }, stateBadge(paused, s.running)),
          h('td', { class: 'num strong ' + lagClass(s.lag), testid: 'lag-' + id, title: s.error || '' }, s.lag >= 0 ? fmtInt(s.lag) : '—'),
          h('td', { class: 'spark-cell' }),
          h('td', { class: 'num', testid: 'pending-' + id, title: s.pending > 0 && s.oldest_pending_seconds ? 'oldest pending ' + fmtDuration(s.oldest_pending_seconds) : '' },
            fmtInt(s.pending), s.pending > 0 && s.oldest_pending_seconds ? h('div', { class: 'hint' }, 'oldest ' + fmtDuration(s.oldest_pending_seconds)) : null),
          dlqCell(s, gi, id),
          h('td', { class: 'num', title: 'last delivery ' + (timeOf(s.last_delivery) ? fmtTime(timeOf(s.last_delivery)) : 'never') },
            h('span', { testid: 'delivered-' + id }, fmtInt(s.delivered || 0)),
            h('div', { class: 'hint' }, timeOf(s.last_delivery) ? ago(timeOf(s.last_delivery)) : 'never')),
          h('td', { class: 'num', testid: 'failed-' + id, title: fmtInt(s.retried || 0) + ' retried, ' + fmtInt(failed) + ' dead-lettered, ' + fmtInt(s.gone || 0) + ' gone' },
            fmtInt(failed), s.retried ? h('div', { class: 'hint' }, fmtInt(s.retried) + ' retried') : null),
          h('td', { class: 'err', title: s.last_error || s.error || '', testid: 'error-' + id }, h('div', { class: 'clip' }, s.last_error || s.error || '')),
          h('td', { class: 'actions' }, pauseButton(s.topic, s.group, paused, 'pause'),
            h('button', { type: 'button', class: 'small', testid: 'seek-' + id, onclick: () => openSeek(s.topic, s.group) }, 'Seek…'))),
      };
      return row;
    }));
    // The sparklines change on every poll; redraw them in place.
    for (const s of subs) {
      const tr = $('subs-body').querySelector('tr[data-key="' + CSS.escape(s.topic + '/' + s.group) + '"]');
      if (!tr) continue;
      const cell = tr.querySelector('.spark-cell');
      cell.replaceChildren(sparkline(state.lag.get(s.topic + '/' + s.group) || [], 'spark-' + s.topic + '-' + s.group));
    }
  }

  // dlqCell shows the group's own dead letters when the admin API counted
  // them, else the topic's DLQ length from /v1/status.
  function dlqCell(s, gi, id) {
    const own = gi && typeof gi.dlq_length === 'number' && gi.dlq_length >= 0;
    const n = own ? gi.dlq_length : s.dlq_length;
    return h('td', { class: 'num ' + (n > 0 ? 'lag-bad' : ''), testid: 'dlq-' + id, title: own ? 'dead letters of this group' : "the topic's DLQ (all groups)" }, fmtInt(n));
  }

  function pauseButton(topic, group, paused, prefix) {
    const id = topic + '-' + group;
    const busy = state.busy.has('pause:' + topic + '/' + group);
    return paused
      ? h('button', { type: 'button', class: 'small', testid: (prefix === 'pause' ? '' : prefix + '-') + 'resume-' + id, disabled: busy, onclick: () => setPaused(topic, group, false) }, 'Resume')
      : h('button', { type: 'button', class: 'small', testid: (prefix === 'pause' ? '' : prefix + '-') + 'pause-' + id, disabled: busy, onclick: () => setPaused(topic, group, true) }, 'Pause');
  }

  // sparkline draws lag samples as an inline SVG; the y axis starts at 0.
  function sparkline(samples, testid) {
    const W = 120, H = 28, P = 2;
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('role', 'img');
    svg.dataset.testid = testid;
    const vals = samples.filter((s) => s.v !== null);
    svg.dataset.points = String(vals.length);
    const max = Math.max(1, ...vals.map((s) => s.v));
    const label = vals.length ? 'lag over the last ' + fmtDuration((Date.now() - samples[0].t) / 1000) + ': now ' + fmtInt(vals[vals.length - 1].v) + ', peak ' + fmtInt(Math.max(...vals.map((s) => s.v))) : 'no samples yet';
    svg.setAttribute('aria-label', label);
    const title = document.createElementNS(SVG, 'title');
    title.textContent = label;
    svg.append(title);
    if (!vals.length) return svg;
    const n = Math.max(vals.length, 2);
    const pts = vals.map((s, i) => {
      const x = vals.length === 1 ? W - P : P + (i * (W - 2 * P)) / (n - 1);
      const y = H - P - (s.v / max) * (H - 2 * P);
      return [x, y];
    });
    const line = pts.map(([x, y]) => x.toFixed(1) + ',' + y.toFixed(1)).join(' ');
    const area = document.createElementNS(SVG, 'polygon');
    area.setAttribute('points', pts[0][0].toFixed(1) + ',' + (H - P) + ' ' + line + ' ' + pts[pts.length - 1][0].toFixed(1) + ',' + (H - P));
    const pl = document.createElementNS(SVG, 'polyline');
    pl.setAttribute('points', line);
    const dot = document.createElementNS(SVG, 'circle');
    dot.setAttribute('cx', pts[pts.length - 1][0].toFixed(1));
    dot.setAttribute('cy', pts[pts.length - 1][1].toFixed(1));
    dot.setAttribute('r', '2');
    svg.append(area, pl, dot);
    return svg;
  }

  function renderTopics() {
    if (state.topics === null) return;
    const published = (state.status && state.status.topics) || {};
    show('topics-empty', state.topics.length === 0);
    syncRows($('topics-body'), state.topics.map((t) => {
      const sel = t.topic === state.selected;
      return {
        key: t.topic,
        sig: JSON.stringify([t, sel]),
        build: () => {
          const tr = h('tr', { class: sel ? 'selected' : '', testid: 'topic-row-' + t.topic },
            h('td', {}, h('span', { class: 'name' }, t.topic), t.error ? h('div', { class: 'error-line' }, t.error) : null,
              published[t.topic] ? h('div', { class: 'hint' }, fmtInt(Object.entries(published[t.topic]).reduce((n, [k, v]) => n + (k === 'rejected' ? 0 : v), 0)) + ' published here') : null),
            h('td', { class: 'num strong', testid: 'length-' + t.topic }, fmtInt(t.length)),
            h('td', { title: t.first_id || '' }, t.first_id ? ago(idMillis(t.first_id)) : '—'),
            h('td', { title: t.last_id || '' }, t.last_id ? ago(idMillis(t.last_id)) : '—'),
            h('td', { class: 'num ' + (t.dlq_length > 0 ? 'lag-bad' : ''), testid: 'topic-dlq-' + t.topic }, fmtInt(t.dlq_length)),
            h('td', {}, (t.groups || []).map((g) => h('span', { class: 'badge ' + (g.paused ? 'warn' : 'info'), title: 'lag ' + fmtInt(g.lag) + ', pending ' + fmtInt(g.pending) }, g.group + (g.paused ? ' (paused)' : ''))).flatMap((b, i) => (i ? [' ', b] : [b]))),
            h('td', { class: 'actions' }, h('button', { type: 'button', class: 'small', testid: 'topic-' + t.topic, 'aria-pressed': sel ? 'true' : 'false', onclick: () => selectTopic(t.topic, true) }, sel ? 'Showing' : 'Inspect')));
          return tr;
        },
      };
    }));
  }

  function renderTopic() {
    const t = (state.topics || []).find((x) => x.topic === state.selected);
    show('topic-panel', !!t);
    if (!t) return;
    setText('topic-name', t.topic);

    syncRows($('groups-body'), (t.groups || []).map((g) => {
      const id = t.topic + '-' + g.group;
      return {
        key: g.group,
        sig: JSON.stringify([g, state.busy.has('pause:' + t.topic + '/' + g.group)]),
        build: () => h('tr', { testid: 'group-' + id },
          h('td', { class: 'name' }, g.group),
          h('td', {}, stateBadge(g.paused)),
          h('td', { class: 'num strong ' + lagClass(g.lag), testid: 'group-lag-' + id }, g.lag >= 0 ? fmtInt(g.lag) : '—'),
          h('td', { class: 'num' }, fmtInt(g.pending)),
          h('td', { class: 'num ' + (g.dlq_length > 0 ? 'lag-bad' : ''), testid: 'group-dlq-' + id }, typeof g.dlq_length === 'number' && g.dlq_length >= 0 ? fmtInt(g.dlq_length) : '—'),
          h('td', { title: fmtTime(idMillis(g.last_delivered_id)) }, h('code', {}, g.last_delivered_id || '—')),
          h('td', { class: 'num' }, fmtInt(g.consumers)),
          h('td', { class: 'actions' }, pauseButton(t.topic, g.group, g.paused, 'group'),
            h('button', { type: 'button', class: 'small', testid: 'group-seek-' + id, onclick: () => openSeek(t.topic, g.group) }, 'Seek…'))),
      };
    }));

    renderEvents();
    renderDLQ(t);
  }

  function renderEvents() {
    const evs = (state.events && state.events.events) || [];
    show('events-empty', state.events !== null && evs.length === 0);
    const specs = [];
    for (const e of evs) {
      const key = 'ev:' + e.stream_id;
      const open = state.expanded.has(key);
      specs.push({
        key, sig: JSON.stringify([open]),
        build: () => h('tr', { testid: 'event-' + e.stream_id },
          h('td', { title: e.stream_id + (e.time ? '\nevent time ' + e.time : '') }, ago(idMillis(e.stream_id)), h('div', { class: 'hint mono' }, e.id)),
          h('td', {}, e.type || '—',
            e.redrive_group ? h('div', {}, h('span', { class: 'badge info', title: 'sent back from the DLQ ' + (e.redriven_from || '') }, 'redriven → ' + e.redrive_group)) : null,
            e.invalid ? h('div', {}, h('span', { class: 'badge warn', title: e.invalid }, 'not a sidecar event')) : null),
          h('td', {}, e.subject || ''),
          h('td', { class: 'preview', testid: 'preview-' + e.stream_id }, h('div', { class: 'clip' }, preview(e))),
          h('td', { class: 'num' }, fmtBytes(e.size)),
          h('td', { class: 'actions' }, expandButton(key, open, 'expand-' + e.stream_id))),
      });
      if (open) specs.push({ key: key + ':detail', sig: 'd', build: () => detailRow(e, 6, 'detail-' + e.stream_id) });
    }
    syncRows($('events-body'), specs);
  }

  function expandButton(key, open, testid) {
    return h('button', {
      type: 'button', class: 'expand', testid, 'aria-expanded': open ? 'true' : 'false', 'aria-label': open ? 'Hide details' : 'Show details',
      onclick: () => {
        if (state.expanded.has(key)) state.expanded.delete(key); else state.expanded.add(key);
        renderEvents();
        renderDLQ((state.topics || []).find((x) => x.topic === state.selected));
      },
    }, open ? '▾' : '▸');
  }

  function preview(e) {
    if (typeof e.data === 'string') {
      const s = e.data.replace(/\s+/g, ' ').trim();
      return s.length > 160 ? s.slice(0, 160) + '…' : s;
    }
    if (typeof e.data_base64 === 'string') return 'binary, ' + fmtBytes(e.size) + ' (' + (e.content_type || 'no type') + ')';
    return '(empty)';
  }

  function detailRow(e, cols, testid) {
    const attrs = [
      ['stream id', e.stream_id], ['id', e.id], ['source', e.source], ['type', e.type], ['time', e.time], ['subject', e.subject],
      ['content type', e.content_type], ['dataschema', e.dataschema], ['traceparent', e.traceparent], ['tracestate', e.tracestate],
    ];
    if (e.redrive_group) attrs.push(['redriven to', e.redrive_group], ['redriven from', e.redriven_from]);
    if (e.invalid) attrs.push(['invalid', e.invalid]);
    if (e.dlq_id) attrs.push(['dlq id', e.dlq_id], ['original id', e.original_id], ['group', e.group], ['attempts', String(e.attempts)], ['error', e.error]);
    for (const [k, v] of Object.entries(e.extensions || {})) attrs.push([k, typeof v === 'string' ? v : JSON.stringify(v)]);
    const dl = h('dl', { class: 'kv' }, attrs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    let body;
    if (typeof e.data === 'string') {
      body = e.data;
      if (/json/i.test(e.content_type || '') || /^\s*[{[]/.test(body)) {
        try { body = JSON.stringify(JSON.parse(body), null, 2); } catch (_) { /* shown as sent */ }
      }
    } else if (typeof e.data_base64 === 'string') {
      body = 'base64 (' + fmtBytes(e.size) + ' binary):\n' + (e.data_base64.length > 8192 ? e.data_base64.slice(0, 8192) + '…' : e.data_base64);
    } else body = '(no data)';
    return h('tr', { class: 'detail', testid }, h('td', { colspan: String(cols) }, dl, h('pre', { class: 'data' }, body)));
  }

  function renderDLQ(t) {
    if (!t) return;
    const sel = $('dlq-group');
    const groups = (t.groups || []).map((g) => g.group);
    for (const e of (state.dlq && state.dlq.entries) || []) if (e.group && !groups.includes(e.group)) groups.push(e.group);
    const wantOpts = ['', ...groups];
    if ([...sel.options].map((o) => o.value).join('\n') !== wantOpts.join('\n')) {
      sel.replaceChildren(...wantOpts.map((g) => h('option', { value: g }, g || 'all groups')));
    }
    sel.value = state.dlqGroup;

    const entries = (state.dlq && state.dlq.entries) || [];
    show('dlq-empty', state.dlq !== null && entries.length === 0);
    const more = state.dlq && state.dlq.next;
    setText('dlq-more', !more ? '' : 'Showing the oldest ' + fmtInt(entries.length) + ' of ' +
      (state.dlqGroup ? state.dlqGroup + "'s dead letters." : fmtInt(t.dlq_length) + ' dead letters.'));
    show('dlq-more', !!more);
    $('redrive-all').disabled = state.busy.has('all') || (state.dlq !== null && entries.length === 0);
    $('purge-all').disabled = state.busy.has('all') || (state.dlq !== null && entries.length === 0);

    const specs = [];
    for (const e of entries) {
      const key = 'dlq:' + e.dlq_id;
      const open = state.expanded.has(key);
      const busy = state.busy.has(key) || state.busy.has('all');
      specs.push({
        key, sig: JSON.stringify([open, busy, e.attempts, e.error]),
        build: () => h('tr', { testid: 'dead-' + e.dlq_id },
          h('td', { title: e.dlq_id }, ago(idMillis(e.dlq_id)), h('div', { class: 'hint mono' }, e.dlq_id)),
          h('td', { class: 'name' }, e.group),
          h('td', {}, h('div', {}, e.type || '—'), h('div', { class: 'hint mono', title: 'event id' }, e.id)),
          h('td', { class: 'num' }, fmtInt(e.attempts)),
          h('td', { class: 'err', title: e.error || '' }, h('div', { class: 'clip long' }, e.error || '')),
          h('td', { class: 'actions' },
            h('button', { type: 'button', class: 'small', testid: 'redrive-' + e.dlq_id, disabled: busy, onclick: () => redriveOne(t.topic, e) }, 'Redrive'),
            h('button', { type: 'button', class: 'small danger', testid: 'purge-' + e.dlq_id, disabled: busy, onclick: () => purgeOne(t.topic, e) }, 'Purge'),
            expandButton(key, open, 'expand-' + e.dlq_id))),
      });
      if (open) specs.push({ key: key + ':detail', sig: 'd', build: () => detailRow(e, 6, 'detail-' + e.dlq_id) });
    }
    syncRows($('dlq-body'), specs);
  }

  // ---------- actions ----------

  async function withBusy(key, fn) {
    if (state.busy.has(key)) return;
    state.busy.add(key);
    render();
    try {
      await fn();
    } catch (err) {
      if (err.status !== 401) apiError(err);
    } finally {
      state.busy.delete(key);
      render();
      refresh();
    }
  }

  function dropEntry(dlqID) {
    if (!state.dlq || !state.dlq.entries) return;
    state.dlq.entries = state.dlq.entries.filter((x) => x.dlq_id !== dlqID);
  }

  // A dead letter's id: partitions number their streams each on their
  // own, so on a partitioned topic the id names its partition too.
  function dlqRef(e) {
    return e.partition === undefined || e.partition === null ? e.dlq_id : e.dlq_id + '@' + e.partition;
  }

  function redriveOne(topic, e) {
    return withBusy('dlq:' + e.dlq_id, async () => {
      const r = await api('POST', topicPath(topic) + '/dlq/redrive', { group: e.group, ids: [dlqRef(e)] });
      dropEntry(e.dlq_id);
      if (!r.redriven) toast('info', 'That dead letter is gone already: redriven or purged meanwhile.');
      else toast('ok', (r.redriven === 1 ? 'Redriven to ' : 'Redriven ' + fmtInt(r.redriven) + ' to ') + e.group + ': event ' + e.id + ' is delivered again.');
    });
  }

  async function purgeOne(topic, e) {
    const ok = await confirmDialog('Purge this dead letter?', 'Event ' + e.id + ' of ' + e.group + ' is deleted for good; it will not be delivered.', 'Purge');
    if (!ok) return;
    await withBusy('dlq:' + e.dlq_id, async () => {
      const r = await api('DELETE', topicPath(topic) + '/dlq?group=' + enc(e.group) + '&ids=' + enc(dlqRef(e)));
      dropEntry(e.dlq_id);
      toast('ok', 'Purged ' + fmtInt(r.purged) + ' dead letter' + (r.purged === 1 ? '' : 's') + '.');
    });
  }

  // The groups "all" acts on: the chosen one, or every group of the topic.
  function targetGroups() {
    if (state.dlqGroup) return [state.dlqGroup];
    const t = (state.topics || []).find((x) => x.topic === state.selected);
    const gs = t ? (t.groups || []).filter((g) => g.dlq_length !== 0).map((g) => g.group) : [];
    for (const e of (state.dlq && state.dlq.entries) || []) if (e.group && !gs.includes(e.group)) gs.push(e.group);
    return gs;
  }

  async function redriveAll() {
    const topic = state.selected;
    const groups = targetGroups();
    if (!topic || !groups.length) return;
    const ok = await confirmDialog('Redrive all dead letters?',
      'Every dead letter of ' + groups.join(', ') + ' on ' + topic + ' goes back onto the stream for that group only, in order.', 'Redrive all');
    if (!ok) return;
    await withBusy('all', async () => {
      const progress = toast('info', 'Redriving…', '', true);
      let total = 0;
      try {
        for (const g of groups) {
          // Each call moves at most a batch; loop until the group's count is 0.
          for (;;) {
            const r = await api('POST', topicPath(topic) + '/dlq/redrive', { group: g, limit: 1000 });
            total += r.redriven || 0;
            progress.set('Redriving ' + g + '… ' + fmtInt(total) + ' done, ' + fmtInt(r.remaining || 0) + ' left');
            if (!r.remaining || !r.redriven) break;
          }
        }
        progress.set('Redriven ' + fmtInt(total) + ' dead letter' + (total === 1 ? '' : 's') + '.');
      } finally {
        progress.done();
      }
    });
  }

  async function purgeAll() {
    const topic = state.selected;
    const groups = targetGroups();
    if (!topic || !groups.length) return;
    const ok = await confirmDialog('Purge all dead letters?',
      'Every dead letter of ' + groups.join(', ') + ' on ' + topic + ' is deleted for good.', 'Purge all');
    if (!ok) return;
    await withBusy('all', async () => {
      let total = 0;
      for (const g of groups) {
        const r = await api('DELETE', topicPath(topic) + '/dlq?group=' + enc(g));
        total += r.purged || 0;
      }
      toast('ok', 'Purged ' + fmtInt(total) + ' dead letter' + (total === 1 ? '' : 's') + '.');
    });
  }

  function setPaused(topic, group, pause) {
    return withBusy('pause:' + topic + '/' + group, async () => {
      const r = await api('POST', subPath(topic, group) + (pause ? '/pause' : '/resume'));
      const gi = groupInfo(topic, group);
      if (gi) gi.paused = !!r.paused;
      for (const s of (state.status && state.status.subscriptions) || []) {
        if (s.topic === topic && s.group === group && typeof s.paused === 'boolean') s.paused = !!r.paused;
      }
      toast('ok', topic + ' / ' + group + (r.paused ? ' is paused: nothing is read or delivered until resumed.' : ' resumed.'));
    });
  }

  // ---------- dialogs ----------

  function confirmDialog(title, text, okLabel) {
    const d = $('confirm-dialog');
    setText('confirm-title', title);
    setText('confirm-text', text);
    setText('confirm-ok', okLabel || 'OK');
    d.returnValue = '';
    d.showModal();
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    });
  }

  let seekTarget = null;

  function openSeek(topic, group) {
    seekTarget = { topic, group };
    const gi = groupInfo(topic, group);
    setText('seek-title', 'Seek ' + topic + ' / ' + group);
    setText('seek-target', group);
    setText('seek-current', (gi && gi.last_delivered_id) || 'unknown');
    const d = $('seek-dialog');
    d.querySelector('input[value="time"]').checked = true;
    seekTarget.kind = '';
    syncSeekKind();
    d.returnValue = '';
    d.showModal();
  }

  // syncSeekKind fits the position field to the kind chosen: a time an
  // hour ago, or the group's current id, as a starting point to edit.
  function syncSeekKind() {
    const kind = $('seek-dialog').querySelector('input[name="seek-kind"]:checked').value;
    const v = $('seek-value');
    v.disabled = kind === 'earliest' || kind === 'latest';
    v.placeholder = kind === 'id' ? '1700000000000-0' : '2026-11-26T17:00:00Z';
    if (!seekTarget || kind === seekTarget.kind) return;
    seekTarget.kind = kind;
    if (kind === 'time') {
      const hourAgo = new Date(Date.now() - 3600 * 1000);
      hourAgo.setMilliseconds(0);
      v.value = hourAgo.toISOString().replace('.000Z', 'Z');
    } else if (kind === 'id') {
      const gi = groupInfo(seekTarget.topic, seekTarget.group);
      v.value = (gi && gi.last_delivered_id) || '';
    } else v.value = '';
  }

  function seekPosition() {
    const kind = $('seek-dialog').querySelector('input[name="seek-kind"]:checked').value;
    const v = $('seek-value').value.trim();
    if (kind === 'earliest' || kind === 'latest') return kind;
    if (kind === 'id') return v;
    // A time without a zone is the browser's local time.
    if (/[zZ]|[+-]\d\d:?\d\d$/.test(v)) return v;
    const t = Date.parse(v);
    return isFinite(t) ? new Date(t).toISOString() : v;
  }

  async function submitSeek() {
    if (!seekTarget) return;
    const { topic, group } = seekTarget;
    const to = seekPosition();
    if (!to) { toast('error', 'Enter a stream id or a time to seek to.', 'bad_position'); return; }
    await withBusy('seek:' + topic + '/' + group, async () => {
      const r = await api('POST', subPath(topic, group) + '/seek', { to });
      toast('ok', topic + ' / ' + group + ' now reads after ' + r.to + ' (was ' + r.from + ').');
    });
  }

  // ---------- wiring ----------

  function init() {
    show('forget-token', !!state.token);
    $('token-form').addEventListener('submit', (ev) => {
      const tok = $('token-input').value.trim();
      if (!tok) { ev.preventDefault(); return; }
      setToken(tok);
      state.needToken = false;
      state.lastErr = '';
      setTimeout(refresh, 0);
    });
    $('token-dialog').addEventListener('cancel', (ev) => ev.preventDefault()); // nothing works without it
    $('forget-token').addEventListener('click', () => {
      setToken('');
      toast('ok', 'Token forgotten in this tab.');
      refresh();
    });
    $('refresh-now').addEventListener('click', () => refresh());
    $('redrive-all').addEventListener('click', redriveAll);
    $('purge-all').addEventListener('click', purgeAll);
    $('dlq-group').addEventListener('change', (ev) => {
      state.dlqGroup = ev.target.value;
      state.dlq = null;
      render();
      refresh();
    });
    for (const r of document.querySelectorAll('input[name="seek-kind"]')) r.addEventListener('change', syncSeekKind);
    $('seek-dialog').addEventListener('close', () => {
      if ($('seek-dialog').returnValue === 'ok') submitSeek();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) clearTimeout(state.timer);
      else refresh();
      renderUpdated();
    });
    setText('refresh-every', fmtDuration(REFRESH_MS / 1000));
    setInterval(renderUpdated, 1000);
    refresh();
  }

  init();
})();
