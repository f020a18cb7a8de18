// switchyard dashboard: plain JavaScript, no build step, no dependencies.
//
// Polls GET /v1/state, GET /v1/stats and each pool's rollout once a second
// and updates the page in place (so focus and half-typed input survive a
// refresh). Every change asks for confirmation in an in-page dialog and is
// one API call; a refusal shows the API's own error text.
'use strict';

(() => {
  const TOKEN_KEY = 'switchyard.token';
  const POLL_MS = 1000;
  const EVENTS_SHOWN = 12;

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let timer = null;
  let inFlight = false;
  let again = false;
  let lastEvent = null;
  let events = [];
  const cards = new Map();

  const $ = (sel, root = document) => root.querySelector(sel);
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'testid') el.dataset.testid = v;
      // Through the CSSOM: the page's CSP forbids inline style attributes.
      else if (k === 'style') for (const [p, x] of Object.entries(v)) el.style.setProperty(p, x);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setText(el, text) {
    const t = String(text);
    if (el.textContent !== t) el.textContent = t;
  }

  const fmtRps = (x) => (x === null || x === undefined ? '—' : x < 10 ? x.toFixed(1) : String(Math.round(x)));
  const fmtRate = (r) => (r === null || r === undefined ? '—' : (r * 100).toFixed(r >= 0.1 ? 1 : 2) + ' %');
  function fmtSecs(s) {
    if (s === null || s === undefined) return '—';
    const ms = s * 1000;
    if (ms < 10) return ms.toFixed(2) + ' ms';
    if (ms < 100) return ms.toFixed(1) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    return s.toFixed(2) + ' s';
  }
  function fmtLeft(ms) {
    if (ms <= 0) return 'judging now…';
    const s = ms / 1000;
    if (s < 60) return 'in ' + s.toFixed(1) + ' s';
    const m = Math.floor(s / 60);
    return 'in ' + m + ' min ' + Math.floor(s - m * 60) + ' s';
  }
  function fmtSpan(ms) {
    if (ms < 1000) return ms + ' ms';
    const s = ms / 1000;
    if (s < 60) return (Number.isInteger(s) ? s : s.toFixed(1)) + ' s';
    const m = Math.floor(s / 60);
    const rest = Math.round(s - m * 60);
    return m + ' min' + (rest ? ' ' + rest + ' s' : '');
  }
  const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  const fmtShare = (p) => (Number.isInteger(p) ? String(p) : p.toFixed(1)) + ' %';

  // Version colours: a name that is a colour gets that colour.
  const NAMED = {
    blue: '#2563eb', green: '#16a34a', red: '#dc2626', orange: '#ea580c', yellow: '#ca8a04',
    purple: '#9333ea', violet: '#7c3aed', teal: '#0d9488', cyan: '#0891b2', pink: '#db2777',
    black: '#334155', white: '#94a3b8', gray: '#64748b', grey: '#64748b', indigo: '#4f46e5',
  };
  const PALETTE = ['#2563eb', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#db2777', '#ca8a04', '#0d9488'];
  function colour(name, index) {
    const key = name.toLowerCase();
    return NAMED[key] || PALETTE[index % PALETTE.length];
  }

  // -------------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const opts = { method, cache: 'no-store', credentials: 'omit', headers: { Authorization: 'Bearer ' + token } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, 'no answer from switchyard (' + e.message + ')');
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const msg = (data && data.error) || resp.status + ' ' + resp.statusText;
      if (resp.status === 401) unauthorized();
      throw new ApiError(resp.status, msg);
    }
    return data;
  }

  // ------------------------------------------------------------ login, poll

  function showLogin(message) {
    $('#board').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    setText($('#login-error'), message || '');
    setConn('idle', 'not connected');
    $('#token').focus();
  }

  function showBoard() {
    $('#login').hidden = true;
    $('#board').hidden = false;
    $('#logout').hidden = false;
  }

  function unauthorized() {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    showLogin('The token was refused. Enter the token from admin.token_file.');
  }

  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('#token').value.trim();
    if (!t) return;
    token = t;
    setText($('#login-error'), '');
    try {
      await api('GET', '/v1/state');
    } catch (e) {
      if (e.status !== 401) showLogin(e.message);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    $('#token').value = '';
    showBoard();
    refresh();
  });

  $('#logout').addEventListener('click', () => {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    cards.forEach((c) => c.el.remove());
    cards.clear();
    showLogin('');
  });

  function setConn(state, text) {
    const c = $('[data-testid=connection]');
    c.dataset.state = state;
    setText($('.conn-text', c), text);
  }

  // Polls now (or right after the poll in flight), then every POLL_MS.
  function refresh() {
    clearTimeout(timer);
    if (inFlight) {
      again = true;
      return;
    }
    poll();
  }

  async function poll() {
    if (!token) return;
    inFlight = true;
    try {
      const [state, stats] = await Promise.all([
        api('GET', '/v1/state'),
        api('GET', '/v1/stats').catch((e) => {
          if (e.status === 401) throw e;
          return null;
        }),
      ]);
      const rollouts = {};
      await Promise.all(
        Object.keys(state.rollouts || {}).map(async (p) => {
          try {
            rollouts[p] = await api('GET', '/v1/pools/' + enc(p) + '/rollout');
          } catch (e) {
            if (e.status === 401) throw e;
          }
        }),
      );
      if (state.last_event !== lastEvent) await loadEvents(state.last_event);
      render(state, stats, rollouts);
      setConn('live', 'live · ' + fmtClock(Date.now()));
    } catch (e) {
      if (e.status === 401 || !token) return;
      setConn('down', 'connection lost — retrying');
    } finally {
      inFlight = false;
      if (token) {
        clearTimeout(timer);
        timer = setTimeout(poll, again ? 0 : POLL_MS);
        again = false;
      }
    }
  }

  async function loadEvents(last) {
    const since = lastEvent === null || last < lastEvent ? Math.max(0, last - EVENTS_SHOWN) : lastEvent;
    if (lastEvent === null || last < lastEvent) events = [];
    const v = await api('GET', '/v1/events?since=' + since);
    events = events.concat(v.events || []).slice(-EVENTS_SHOWN);
    lastEvent = last;
    const list = $('#events');
    list.replaceChildren(
      ...events
        .slice()
        .reverse()
        .map((e) =>
          h(
            'li',
            { testid: 'event', 'data-kind': e.kind },
            h('time', { datetime: e.time, text: fmtClock(Date.parse(e.time)) }),
            h('span', { class: 'who', text: e.who }),
            h('span', { class: 'what', text: e.what }),
          ),
        ),
    );
    if (!events.length) list.append(h('li', { class: 'muted', text: 'Nothing has changed yet.' }));
  }

  // ---------------------------------------------------------------- status

  let statusTimer = null;
  function showStatus(text, kind) {
    const s = $('#status');
    clearTimeout(statusTimer);
    s.dataset.kind = kind || 'ok';
    s.replaceChildren(
      h('span', { class: 'status-text', testid: kind === 'error' ? 'error' : 'ok', text }),
      h('button', { type: 'button', class: 'btn ghost small', 'aria-label': 'Dismiss', testid: 'status-dismiss', onclick: () => s.replaceChildren() }, '×'),
    );
    if (kind !== 'error') statusTimer = setTimeout(() => s.replaceChildren(), 6000);
  }

  // ------------------------------------------------------------ confirmation

  function confirmAction({ title, body, detail, ok, danger }) {
    return new Promise((resolve) => {
      const d = $('#confirm');
      const okb = $('#confirm-ok');
      const cancel = $('#confirm-cancel');
      setText($('#confirm-title'), title);
      setText($('#confirm-body'), body);
      $('#confirm-detail').replaceChildren(...(detail || []));
      okb.textContent = ok || 'Confirm';
      okb.className = 'btn ' + (danger ? 'danger' : 'primary');
      const opener = document.activeElement;
      const done = (v) => {
        okb.removeEventListener('click', onOk);
        cancel.removeEventListener('click', onCancel);
        d.removeEventListener('cancel', onEsc);
        if (d.open) d.close();
        if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
        resolve(v);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      const onEsc = (e) => {
        e.preventDefault();
        done(false);
      };
      okb.addEventListener('click', onOk);
      cancel.addEventListener('click', onCancel);
      d.addEventListener('cancel', onEsc);
      d.showModal();
      (danger ? cancel : okb).focus();
    });
  }

  // Asks, then runs one API call; shows the outcome; refreshes.
  async function act(button, question, call, success) {
    if (!(await confirmAction(question))) return;
    if (button) button.disabled = true;
    try {
      const v = await call();
      showStatus(success(v), 'ok');
    } catch (e) {
      if (e.status !== 401) showStatus('Refused: ' + e.message, 'error');
    } finally {
      if (button) button.disabled = false;
      refresh();
    }
  }

  // ------------------------------------------------------------------ render

  function render(state, stats, rollouts) {
    setText($('[data-testid=version]'), 'v' + state.version);
    const pools = state.pools || {};
    const routes = {};
    for (const r of state.routes || []) (routes[r.pool] = routes[r.pool] || []).push(r);
    const container = $('#pools');
    const names = Object.keys(pools).sort();
    for (const name of names) {
      const pool = pools[name];
      const sig = JSON.stringify([
        Object.entries(pool.versions).map(([v, x]) => [v, x.backends.map((b) => b.addr)]),
        (routes[name] || []).map((r) => [r.host, r.preview, r.tls]),
      ]);
      let card = cards.get(name);
      if (!card || card.sig !== sig) {
        const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.testid : null;
        const fresh = buildCard(name, pool, routes[name] || []);
        fresh.sig = sig;
        if (card) card.el.replaceWith(fresh.el);
        cards.set(name, fresh);
        card = fresh;
        if (focused) {
          const again = card.el.querySelector('[data-testid="' + CSS.escape(focused) + '"]');
          if (again) again.focus();
        }
      }
      const statsOf = (stats && stats.pools && stats.pools[name] && stats.pools[name].versions) || {};
      updateCard(card, pool, statsOf, rollouts[name] || null);
    }
    for (const [name, card] of cards) {
      if (!(name in pools)) {
        card.el.remove();
        cards.delete(name);
      }
    }
    // Keep the cards in name order without moving a card that is in place.
    let prev = null;
    for (const name of names) {
      const el = cards.get(name).el;
      const want = prev ? prev.nextElementSibling : container.firstElementChild;
      if (el !== want) (prev ? prev.after(el) : container.prepend(el));
      prev = el;
    }
    const empty = $('.empty', container);
    if (!names.length && !empty) container.append(h('p', { class: 'card muted empty', text: 'No pools are configured.' }));
    if (names.length && empty) empty.remove();
  }

  function buildCard(name, pool, routes) {
    const id = 'pool-' + name;
    const card = { name, versions: new Map(), dirty: false, base: null, rollout: null };
    const versionNames = Object.keys(pool.versions);

    const routeChips = routes.length
      ? routes.map((r) =>
          h(
            'li',
            { class: 'chip' },
            h('span', { class: 'chip-proto', text: r.tls === 'none' ? 'http' : 'https' }),
            r.host,
            r.preview ? h('span', { class: 'chip-extra', text: 'preview ' + r.preview }) : null,
          ),
        )
      : [h('li', { class: 'chip muted', text: 'no route' })];

    card.summary = h('p', { class: 'pool-summary', testid: 'pool-summary-' + name });
    card.split = h('div', { class: 'split', testid: 'split-' + name, role: 'img' });
    card.splitLegend = h('ul', { class: 'split-legend', 'aria-hidden': 'true' });

    const grid = h('div', { class: 'versions' });
    versionNames.forEach((v, i) => {
      const ver = buildVersion(card, name, v, i, pool.versions[v]);
      card.versions.set(v, ver);
      grid.append(ver.el);
    });

    card.note = h('p', { class: 'weights-note', testid: 'weights-note-' + name, 'aria-live': 'polite' });
    card.apply = h('button', { type: 'button', class: 'btn primary', testid: 'apply-weights-' + name, disabled: true }, 'Apply weights');
    card.reset = h('button', { type: 'button', class: 'btn ghost', testid: 'reset-weights-' + name, disabled: true }, 'Reset');
    card.apply.addEventListener('click', () => applyWeights(card));
    card.reset.addEventListener('click', () => {
      card.dirty = false;
      card.base = null;
      card.versions.forEach((ver) => ver.setInput(ver.weight));
      syncEditor(card);
    });

    card.rollout = buildRollout(card, name, versionNames);

    card.el = h(
      'article',
      { class: 'card pool', testid: id, 'aria-labelledby': id + '-title' },
      h(
        'header',
        { class: 'pool-head' },
        h('div', { class: 'pool-title' }, h('h2', { id: id + '-title' }, h('span', { class: 'muted' }, 'pool '), name), h('ul', { class: 'chips', 'aria-label': 'routes to ' + name }, routeChips)),
        card.summary,
      ),
      h('div', { class: 'split-wrap' }, card.split, card.splitLegend),
      grid,
      h('div', { class: 'weights-bar' }, card.note, h('div', { class: 'weights-actions' }, card.reset, card.apply)),
      card.rollout.el,
    );
    return card;
  }

  function buildVersion(card, pool, v, index, spec) {
    const key = pool + '-' + v;
    const c = colour(v, index);
    const ver = { name: v, colour: c, weight: spec.weight, backendEls: [] };
    const inputId = 'w-' + key;
    ver.role = h('span', { class: 'role', testid: 'role-' + key });
    ver.health = h('span', { class: 'pill', testid: 'health-' + key });
    ver.share = h('span', { class: 'share-num', testid: 'share-' + key });
    ver.fill = h('span', { class: 'fill', testid: 'share-bar-' + key });
    ver.weightEl = h('dd', { testid: 'weight-' + key });
    ver.effective = h('dd', { testid: 'effective-' + key });
    ver.rps = h('dd', { testid: 'rps-' + key });
    ver.errors = h('dd', { testid: 'errors-' + key });
    ver.p99 = h('dd', { testid: 'p99-' + key });
    ver.backends = h('ul', { class: 'backends', 'aria-label': 'backends of ' + v });
    spec.backends.forEach((b, i) => {
      const state = h('span', { class: 'b-state' });
      const li = h('li', { testid: 'backend-' + key + '-' + i }, h('span', { class: 'dot', 'aria-hidden': 'true' }), h('code', { text: b.addr }), state);
      ver.backendEls.push({ li, state });
      ver.backends.append(li);
    });
    ver.input = h('input', { id: inputId, type: 'number', min: 0, max: 1000000, step: 1, inputmode: 'numeric', testid: 'weight-input-' + key });
    ver.range = h('input', { type: 'range', min: 0, max: 100, step: 1, 'aria-label': 'weight of ' + v + ' (slider)', testid: 'weight-range-' + key });
    ver.fillRange = () => {
      const max = Number(ver.range.max) || 100;
      ver.range.style.setProperty('--p', (Math.min(max, Number(ver.range.value) || 0) * 100) / max + '%');
    };
    ver.setInput = (w) => {
      ver.input.value = String(w);
      ver.range.value = String(w);
      ver.fillRange();
    };
    ver.setInput(spec.weight);
    const edited = (from) => {
      if (!card.dirty) {
        card.dirty = true;
        card.base = new Map([...card.versions].map(([n, x]) => [n, x.weight]));
      }
      if (from === ver.range) ver.input.value = ver.range.value;
      else ver.range.value = ver.input.value;
      ver.fillRange();
      syncEditor(card);
    };
    ver.input.addEventListener('input', () => edited(ver.input));
    ver.range.addEventListener('input', () => edited(ver.range));
    ver.switchBtn = h('button', { type: 'button', class: 'btn switch', testid: 'switch-' + key }, 'Switch all traffic to ', h('strong', { text: v }));
    ver.switchBtn.addEventListener('click', () => switchTo(card, v, ver.switchBtn));

    ver.el = h(
      'section',
      { class: 'version', testid: 'version-' + key, style: { '--c': c }, 'aria-labelledby': 'vh-' + key },
      h('header', { class: 'v-head' }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), h('h3', { id: 'vh-' + key, text: v }), ver.role, ver.health),
      h('div', { class: 'share' }, ver.share, h('span', { class: 'share-label', text: 'of traffic' })),
      h('div', { class: 'bar', 'aria-hidden': 'true' }, ver.fill),
      h(
        'dl',
        { class: 'figures' },
        h('div', null, h('dt', { text: 'Weight' }), ver.weightEl),
        h('div', null, h('dt', { text: 'Effective' }), ver.effective),
        h('div', null, h('dt', { text: 'Req/s' }), ver.rps),
        h('div', null, h('dt', { text: '5xx' }), ver.errors),
        h('div', null, h('dt', { text: 'p99' }), ver.p99),
      ),
      ver.backends,
      h('div', { class: 'edit' }, h('label', { for: inputId, text: 'New weight' }), h('div', { class: 'edit-row' }, ver.range, ver.input)),
      ver.switchBtn,
    );
    return ver;
  }

  function buildRollout(card, pool, versionNames) {
    const r = { pool };
    const t = (s) => 'rollout-' + s + '-' + pool;
    r.title = h('p', { class: 'ro-title', testid: t('title') });
    r.meta = h('p', { class: 'ro-meta', testid: t('meta') });
    r.state = h('span', { class: 'pill', testid: t('state') });
    r.steps = h('ol', { class: 'steps', testid: t('steps'), 'aria-label': 'steps' });
    r.step = h('dd', { testid: t('step') });
    r.percent = h('dd', { testid: t('percent') });
    r.next = h('dd', { testid: t('next') });
    r.failures = h('dd', { testid: t('failures') });
    r.last = h('p', { class: 'ro-last', testid: t('last') });
    const btn = (what, label, cls) => {
      const b = h('button', { type: 'button', class: 'btn ' + (cls || ''), testid: t(what) }, label);
      b.addEventListener('click', () => rolloutAction(card, what, b));
      return b;
    };
    r.pause = btn('pause', 'Pause');
    r.resume = btn('resume', 'Resume');
    r.promote = btn('promote', 'Promote now', 'primary');
    r.abort = btn('abort', 'Abort and roll back', 'danger');
    r.active = h(
      'div',
      { class: 'ro-active', testid: t('active'), hidden: true },
      h('div', { class: 'ro-head' }, r.title, r.state),
      r.meta,
      r.steps,
      h(
        'dl',
        { class: 'figures' },
        h('div', null, h('dt', { text: 'Step' }), r.step),
        h('div', null, h('dt', { text: 'Canary share' }), r.percent),
        h('div', null, h('dt', { text: 'Next judgement' }), r.next),
        h('div', null, h('dt', { text: 'Failures' }), r.failures),
      ),
      r.last,
      h('div', { class: 'ro-actions' }, r.pause, r.resume, r.promote, r.abort),
    );
    r.outcome = h('p', { class: 'ro-outcome', testid: t('outcome'), hidden: true });

    // The start form.
    const fid = (s) => 'ro-' + s + '-' + pool;
    r.canary = h('select', { id: fid('canary'), testid: t('canary') }, versionNames.map((v) => h('option', { value: v, text: v })));
    r.preset = h(
      'select',
      { id: fid('preset'), testid: t('preset') },
      h('option', { value: '', text: 'pool default' }),
      h('option', { value: 'canary-10', text: 'canary-10 (10 %, then 100 %)' }),
      h('option', { value: 'linear-10', text: 'linear-10 (10 % more each step)' }),
      h('option', { value: 'all-at-once', text: 'all-at-once (blue-green)' }),
    );
    r.stepsInput = h('input', { id: fid('steps'), type: 'text', inputmode: 'numeric', placeholder: 'e.g. 1,5,25,100', spellcheck: 'false', testid: t('steps-input') });
    r.duration = h('input', { id: fid('duration'), type: 'text', placeholder: 'e.g. 2m', spellcheck: 'false', testid: t('duration') });
    r.start = h('button', { type: 'submit', class: 'btn primary', testid: t('start') }, 'Start rollout');
    r.form = h(
      'form',
      { class: 'ro-start', testid: t('start-form'), hidden: true },
      h('div', { class: 'field' }, h('label', { for: fid('canary'), text: 'Canary version' }), r.canary),
      h('div', { class: 'field' }, h('label', { for: fid('preset'), text: 'Plan' }), r.preset),
      h('div', { class: 'field' }, h('label', { for: fid('steps'), text: 'Steps, % (optional)' }), r.stepsInput),
      h('div', { class: 'field' }, h('label', { for: fid('duration'), text: 'Step duration (optional)' }), r.duration),
      h('div', { class: 'field end' }, r.start),
    );
    r.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      startRollout(card);
    });
    r.canaryTouched = false;
    r.canary.addEventListener('change', () => (r.canaryTouched = true));

    r.history = h('tbody');
    r.historyWrap = h(
      'div',
      { class: 'history', hidden: true },
      h('h4', { text: 'Judgements' }),
      h(
        'div',
        { class: 'table-scroll' },
        h(
          'table',
          { testid: t('history') },
          h('thead', null, h('tr', null, ['Time', 'Step', 'Canary', 'Verdict', 'Canary 5xx / p99', 'Stable 5xx / p99', 'Why'].map((c) => h('th', { scope: 'col', text: c })))),
          r.history,
        ),
      ),
    );
    r.el = h(
      'section',
      { class: 'rollout', testid: 'rollout-' + pool, 'aria-labelledby': 'ro-h-' + pool },
      h('h3', { id: 'ro-h-' + pool, text: 'Rollout' }),
      r.active,
      r.outcome,
      r.form,
      r.historyWrap,
    );
    return r;
  }

  function updateCard(card, pool, stats, rollout) {
    const entries = Object.entries(pool.versions);
    let up = 0;
    let total = 0;
    let rps = 0;
    const active = rollout && (rollout.state === 'running' || isHeld(rollout.state)) ? rollout : null;
    const segs = [];
    const legend = [];
    const changedElsewhere = [];
    entries.forEach(([v, x]) => {
      const ver = card.versions.get(v);
      if (!ver) return;
      const s = stats[v] || {};
      const avail = x.backends.filter((b) => b.available).length;
      up += avail;
      total += x.backends.length;
      rps += s.requests_per_second || 0;
      if (card.dirty && card.base && card.base.get(v) !== x.weight) changedElsewhere.push(v + ' ' + x.weight);
      ver.weight = x.weight;
      setText(ver.weightEl, x.weight);
      setText(ver.effective, x.effective_weight);
      setText(ver.share, fmtShare(x.share_percent));
      ver.fill.style.width = x.share_percent + '%';
      setText(ver.rps, fmtRps(s.requests_per_second));
      setText(ver.errors, fmtRate(s.error_rate));
      ver.errors.classList.toggle('bad', (s.error_rate || 0) >= 0.01);
      setText(ver.p99, fmtSecs(s.p99_seconds));
      // Nothing probed or served yet: in rotation, but not known to be healthy.
      const unknown = x.backends.length > 0 && x.backends.every(b => b.available && b.health === 'unknown');
      const health = unknown ? 'unknown' : avail === x.backends.length ? 'healthy' : avail === 0 ? 'down' : 'degraded';
      setText(ver.health, health === 'healthy' || health === 'unknown' ? health : health === 'down' ? 'down' : avail + '/' + x.backends.length + ' up');
      ver.health.dataset.health = health;
      x.backends.forEach((b, i) => {
        const be = ver.backendEls[i];
        if (!be) return;
        const st = b.available ? (b.health === 'unknown' ? 'unknown' : 'up') : b.ejected ? 'ejected' : 'down';
        be.li.dataset.state = st;
        setText(be.state, st + (b.in_flight ? ' · ' + b.in_flight + ' in flight' : ''));
      });
      let role = x.share_percent > 0 ? 'serving' : 'standby';
      if (active && active.canary === v) role = 'canary';
      if (active && active.stable === v) role = 'stable';
      setText(ver.role, role);
      ver.role.dataset.role = role;
      const only = x.weight > 0 && entries.every(([o, y]) => o === v || y.weight === 0);
      ver.switchBtn.disabled = only;
      ver.switchBtn.title = only ? v + ' already has all the configured weight' : '';
      if (!card.dirty) ver.setInput(x.weight);
      if (x.share_percent > 0) {
        segs.push(h('span', { class: 'seg', style: { width: x.share_percent + '%', background: ver.colour }, title: v + ' ' + fmtShare(x.share_percent) }, x.share_percent >= 12 ? v + ' ' + fmtShare(x.share_percent) : ''));
      }
      legend.push(h('li', null, h('span', { class: 'swatch', style: { background: ver.colour } }), v + ' ' + fmtShare(x.share_percent)));
    });
    if (!segs.length) segs.push(h('span', { class: 'seg none', style: { width: '100%' } }, 'no traffic: no available version has weight'));
    card.split.replaceChildren(...segs);
    card.split.setAttribute('aria-label', 'traffic split: ' + entries.map(([v, x]) => v + ' ' + fmtShare(x.share_percent)).join(', '));
    card.splitLegend.replaceChildren(...legend);
    setText(card.summary, entries.length + (entries.length === 1 ? ' version' : ' versions') + ' · ' + up + '/' + total + ' backends up · ' + fmtRps(rps) + ' req/s');
    syncEditor(card, changedElsewhere);
    updateRollout(card, rollout, pool);
  }

  // Slider ranges, the preview of the new split, and the apply button.
  function syncEditor(card, changedElsewhere) {
    let max = 100;
    let sum = 0;
    const proposed = [];
    card.versions.forEach((ver) => {
      const n = Number(ver.input.value);
      max = Math.max(max, ver.weight, Number.isFinite(n) ? n : 0);
      if (Number.isFinite(n) && n >= 0) sum += n;
      proposed.push([ver.name, n]);
    });
    card.versions.forEach((ver) => {
      if (Number(ver.range.max) !== max) {
        ver.range.max = String(max);
        ver.range.value = ver.input.value;
        ver.fillRange();
      }
    });
    const changed = proposed.some(([v, n]) => card.versions.get(v).weight !== n);
    card.apply.disabled = !card.dirty || !changed;
    card.reset.disabled = !card.dirty;
    let note = '';
    if (card.dirty) {
      const bad = proposed.find(([, n]) => !Number.isInteger(n) || n < 0);
      if (bad) note = 'Weights are whole numbers from 0 to 1,000,000 (' + bad[0] + ').';
      else if (sum === 0) note = 'Every weight 0 would stop all traffic; the API refuses that.';
      else note = 'New split: ' + proposed.map(([v, n]) => v + ' ' + fmtShare(Math.round((n * 1000) / sum) / 10)).join(' · ');
      if (changedElsewhere && changedElsewhere.length) note += ' — changed elsewhere meanwhile (now ' + changedElsewhere.join(', ') + '); Reset shows them.';
    }
    setText(card.note, note);
    card.note.classList.toggle('warn', Boolean(changedElsewhere && changedElsewhere.length));
  }

  function updateRollout(card, rollout, pool) {
    const r = card.rollout;
    const active = rollout && (rollout.state === 'running' || isHeld(rollout.state));
    r.active.hidden = !active;
    r.form.hidden = Boolean(active);
    r.data = rollout;
    if (active) {
      setText(r.title, '');
      r.title.replaceChildren(h('strong', { text: rollout.canary }), ' (canary) against ', h('strong', { text: rollout.stable }), ' (stable)');
      setText(r.state, rollout.state);
      r.state.dataset.state = rollout.state;
      setText(r.step, rollout.step_number + ' / ' + rollout.steps_total);
      const plan = rollout.plan;
      setText(
        r.meta,
        'Started ' + fmtClock(rollout.started_ms) + ' by ' + rollout.started_by + ' · ' + fmtSpan(plan.step_duration) + ' per step · judged on ≥ ' + plan.min_requests + ' requests, 5xx +' + (plan.max_error_rate_increase * 100).toFixed(1) + ' pts, p99 +' + Math.round(plan.max_p99_increase * 100) + ' % at most',
      );
      setText(r.percent, rollout.percent + ' %');
      setText(r.failures, rollout.failures + ' of ' + rollout.plan.failure_limit + (rollout.waits ? ' · waited ' + rollout.waits + '×' : ''));
      r.deadline = rollout.state === 'running' ? performance.now() + rollout.time_left_ms : null;
      tickCountdown(r);
      const stepsKey = rollout.plan.steps.join(',') + '/' + rollout.step;
      if (r.stepsKey !== stepsKey) {
        r.stepsKey = stepsKey;
        r.steps.replaceChildren(
          ...rollout.plan.steps.map((p, i) =>
            h('li', { class: i < rollout.step ? 'done' : i === rollout.step ? 'current' : '', 'aria-current': i === rollout.step ? 'step' : null }, h('span', { class: 'step-dot' }), h('span', { class: 'step-pct', text: p + ' %' })),
          ),
        );
      }
      r.pause.hidden = rollout.state !== 'running';
      r.resume.hidden = !isHeld(rollout.state);
      setText(r.resume, rollout.state === 'waiting_for_approval' ? 'Approve' : 'Resume');
      const last = rollout.last;
      setText(
        r.last,
        last
          ? 'Last judgement (step ' + (last.step + 1) + ', ' + last.percent + ' %): ' + last.verdict + ' — ' + last.reason
          : 'No judgement yet: the first comes at the end of step 1.',
      );
      r.last.dataset.verdict = last ? last.verdict : '';
    } else {
      // Default canary: the version with the least weight.
      if (!r.canaryTouched) {
        const byWeight = Object.entries(pool.versions).sort((a, b) => a[1].weight - b[1].weight || a[0].localeCompare(b[0]));
        if (byWeight.length && r.canary.value !== byWeight[0][0] && document.activeElement !== r.canary) r.canary.value = byWeight[0][0];
      }
    }
    if (rollout && !active) {
      r.outcome.hidden = false;
      const when = rollout.finished_ms ? ' at ' + fmtClock(rollout.finished_ms) : '';
      const verb = rollout.state === 'promoted' ? 'promoted' : 'rolled back';
      setText(r.outcome, 'Last rollout: ' + rollout.canary + ' ' + verb + when + (rollout.reason ? ' — ' + rollout.reason : '') + '.');
      r.outcome.dataset.state = rollout.state;
    } else {
      r.outcome.hidden = true;
    }
    const hist = (rollout && rollout.history) || [];
    r.historyWrap.hidden = hist.length === 0;
    const histKey = hist.length + ':' + (hist.length ? hist[hist.length - 1].at_ms : 0);
    if (r.histKey !== histKey) {
      r.histKey = histKey;
      r.history.replaceChildren(
        ...hist
          .slice(-8)
          .reverse()
          .map((j) =>
            h(
              'tr',
              { 'data-verdict': j.verdict },
              h('td', { text: fmtClock(j.at_ms) }),
              h('td', { text: String(j.step + 1) }),
              h('td', { text: j.percent + ' %' }),
              h('td', null, h('span', { class: 'verdict', 'data-verdict': j.verdict, text: j.verdict })),
              h('td', { text: fmtRate(j.canary_error_rate) + ' / ' + fmtSecs(j.canary_p99) }),
              h('td', { text: fmtRate(j.stable_error_rate) + ' / ' + fmtSecs(j.stable_p99) }),
              h('td', { class: 'why', text: j.reason }),
            ),
          ),
      );
    }
  }

  // Paused by an operator, or held before a step until approved.
  function isHeld(state) {
    return state === 'paused' || state === 'waiting_for_approval';
  }

  function tickCountdown(r) {
    if (!r.data) return;
    if (r.data.state === 'waiting_for_approval') setText(r.next, 'waiting for approval');
    else if (r.data.state === 'paused') setText(r.next, 'paused');
    else if (r.deadline !== null && r.deadline !== undefined) setText(r.next, fmtLeft(r.deadline - performance.now()));
  }
  setInterval(() => cards.forEach((c) => c.rollout && c.rollout.data && tickCountdown(c.rollout)), 200);

  // ----------------------------------------------------------------- actions

  function weightsDetail(before, after) {
    return [
      h(
        'ul',
        { class: 'change-list' },
        Object.keys(after).map((v) => h('li', null, h('strong', { text: v }), ' ', String(before[v]), ' → ', h('strong', { text: String(after[v]) }))),
      ),
    ];
  }

  function currentWeights(card) {
    const w = {};
    card.versions.forEach((ver, v) => (w[v] = ver.weight));
    return w;
  }

  function activeRolloutNote(card) {
    const d = card.rollout.data;
    return d && (d.state === 'running' || isHeld(d.state))
      ? ' A rollout of ' + d.canary + ' is ' + d.state + ' here: it sets weights at its next step.'
      : '';
  }

  function applyWeights(card) {
    const after = {};
    for (const [v, ver] of card.versions) {
      const n = Number(ver.input.value);
      if (!Number.isInteger(n) || n < 0 || ver.input.value.trim() === '') {
        showStatus('Refused: the weight of ' + v + ' must be a whole number from 0 to 1,000,000.', 'error');
        ver.input.focus();
        return;
      }
      after[v] = n;
    }
    const before = currentWeights(card);
    act(
      card.apply,
      {
        title: 'Set the weights of ' + card.name + '?',
        body: 'All of them change in one step, effective at the next request.' + activeRolloutNote(card),
        detail: weightsDetail(before, after),
        ok: 'Set weights',
      },
      () => api('PUT', '/v1/pools/' + enc(card.name) + '/weights', after),
      (v) => {
        card.dirty = false;
        card.base = null;
        return 'Weights of ' + card.name + ' set: ' + Object.entries(v.weights).map(([k, w]) => k + '=' + w).join(' ');
      },
    );
  }

  function switchTo(card, version, button) {
    const before = currentWeights(card);
    const after = {};
    for (const v of Object.keys(before)) after[v] = v === version ? 100 : 0;
    act(
      button,
      {
        title: 'Switch ' + card.name + ' to ' + version + '?',
        body: version + ' gets all the traffic (weight 100), every other version 0, from the next request.' + activeRolloutNote(card),
        detail: weightsDetail(before, after),
        ok: 'Switch to ' + version,
      },
      () => api('PUT', '/v1/pools/' + enc(card.name) + '/weights', after),
      () => {
        card.dirty = false;
        card.base = null;
        return card.name + ' switched to ' + version + '.';
      },
    );
  }

  function rolloutAction(card, what, button) {
    const d = card.rollout.data || {};
    const where = d.canary + ' in ' + card.name;
    const q = {
      pause: { title: 'Pause the rollout of ' + where + '?', body: 'It holds at step ' + d.step_number + '/' + d.steps_total + ' (' + d.percent + ' %) until you resume it.', ok: 'Pause' },
      resume:
        d.state === 'waiting_for_approval'
          ? { title: 'Approve the next step of ' + where + '?', body: 'Step ' + (d.step_number + 1) + '/' + d.steps_total + ' starts: ' + d.canary + ' gets ' + d.plan.steps[d.step + 1] + ' %.', ok: 'Approve' }
          : { title: 'Resume the rollout of ' + where + '?', body: 'The current step starts a fresh window before it is judged.', ok: 'Resume' },
      promote: { title: 'Promote ' + where + ' now?', body: d.canary + ' gets all the traffic (100) and ' + d.stable + ' 0, without waiting for the remaining steps.', ok: 'Promote', danger: true },
      abort: { title: 'Abort and roll back ' + where + '?', body: d.canary + ' goes to 0 and ' + d.stable + ' gets all the traffic at once.', ok: 'Abort and roll back', danger: true },
    }[what];
    act(
      button,
      q,
      () => api('POST', '/v1/pools/' + enc(card.name) + '/rollout/' + what),
      (v) => 'Rollout of ' + v.canary + ' in ' + card.name + ': ' + v.state.replace('_', ' ') + '.',
    );
  }

  function startRollout(card) {
    const r = card.rollout;
    const body = { canary: r.canary.value };
    if (r.preset.value) body.preset = r.preset.value;
    const stepsText = r.stepsInput.value.trim();
    if (stepsText) {
      const steps = stepsText.split(/[\s,]+/).filter(Boolean).map(Number);
      if (steps.some((n) => !Number.isInteger(n))) {
        showStatus('Refused: steps must be whole percentages such as 1,5,25,100.', 'error');
        r.stepsInput.focus();
        return;
      }
      body.steps = steps;
    }
    const dur = r.duration.value.trim();
    if (dur) body.step_duration = dur;
    const plan = (body.steps ? 'steps ' + body.steps.join(', ') + ' %' : body.preset ? 'preset ' + body.preset : 'the pool\'s default steps') + (dur ? ', ' + dur + ' each' : '');
    act(
      r.start,
      {
        title: 'Start a rollout of ' + body.canary + ' in ' + card.name + '?',
        body: 'Traffic moves to ' + body.canary + ' by ' + plan + '. Each step is judged against the stable version; a worse canary is rolled back on its own.',
        ok: 'Start rollout',
      },
      () => api('POST', '/v1/pools/' + enc(card.name) + '/rollout', body),
      (v) => 'Rollout of ' + v.canary + ' in ' + card.name + ' started: ' + v.plan.steps.join(' → ') + ' %, against ' + v.stable + '.',
    );
  }

  // ------------------------------------------------------------------ start

  if (token) {
    showBoard();
    refresh();
  } else {
    showLogin('');
  }
})();
