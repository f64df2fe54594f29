/* quakestream dashboard: REST for the first paint, the WebSocket /api/v1/live for updates.
 * Only files served by serving-api are used (no CDN): topojson-client, uPlot and world-atlas come
 * from npm at build time and are served under /vendor/. */
(function () {
  'use strict';
  const API = '/api/v1';
  const W = 960, H = 480;
  const state = { events: new Map(), latest: [], max24: null, rolling: null, chart: null,
                  ws: null, retry: 500 };

  const $ = (id) => document.getElementById(id);
  const proj = (lon, lat) => [(lon + 180) / 360 * W, (90 - lat) / 180 * H];

  async function getJSON(path) {
    const r = await fetch(API + path, { headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(path + ': ' + r.status);
    return r.json();
  }

  /* ---- map ---------------------------------------------------------------------------------- */
  function ringPath(ring) {
    let d = '', prev = null;
    for (const [lon, lat] of ring) {
      const [x, y] = proj(lon, lat);
      /* a jump across the antimeridian starts a new subpath instead of a line across the map */
      d += (prev === null || Math.abs(lon - prev) > 180 ? 'M' : 'L') + x.toFixed(1) + ',' + y.toFixed(1);
      prev = lon;
    }
    return d + 'Z';
  }

  async function drawLand() {
    const topo = await (await fetch('/vendor/world-atlas/countries-110m.json')).json();
    const land = topojson.feature(topo, topo.objects.countries);
    const g = $('land');
    const ns = 'http://www.w3.org/2000/svg';
    for (const f of land.features) {
      const geom = f.geometry;
      if (!geom) continue;
      const polys = geom.type === 'Polygon' ? [geom.coordinates] : geom.coordinates;
      let d = '';
      for (const poly of polys) for (const ring of poly) d += ringPath(ring);
      const p = document.createElementNS(ns, 'path');
      p.setAttribute('d', d);
      g.appendChild(p);
    }
    g.dataset.countries = String(land.features.length);
  }

  function plotEvent(ev, isNew) {
    const ns = 'http://www.w3.org/2000/svg';
    let c = document.querySelector('#quakes circle[data-id="' + CSS.escape(ev.event_id) + '"]');
    if (!c) {
      c = document.createElementNS(ns, 'circle');
      c.dataset.id = ev.event_id;
      $('quakes').appendChild(c);
    }
    const [x, y] = proj(ev.longitude, ev.latitude);
    const m = typeof ev.magnitude === 'number' ? ev.magnitude : 0;
    c.setAttribute('cx', x.toFixed(1));
    c.setAttribute('cy', y.toFixed(1));
    c.setAttribute('r', Math.max(1.5, m * 1.6).toFixed(1));
    c.classList.toggle('new', !!isNew);
    c.innerHTML = '';
    const t = document.createElementNS(ns, 'title');
    t.textContent = 'M' + m + ' ' + (ev.place || '');
    c.appendChild(t);
  }

  function removeEvent(id) {
    const c = document.querySelector('#quakes circle[data-id="' + CSS.escape(id) + '"]');
    if (c) c.remove();
    state.events.delete(id);
    state.latest = state.latest.filter((e) => e.event_id !== id);
    renderTable();
  }

  /* ---- table and tiles ---------------------------------------------------------------------- */
  function fmtTime(ms) { return new Date(ms).toISOString().replace('T', ' ').slice(0, 19); }

  function renderTable(newId) {
    const tb = $('latest').tBodies[0];
    tb.innerHTML = '';
    for (const e of state.latest) {
      const tr = document.createElement('tr');
      tr.dataset.id = e.event_id;
      if (e.event_id === newId) tr.className = 'new';
      for (const v of [fmtTime(e.time), e.magnitude == null ? '–' : e.magnitude.toFixed(1),
                       e.place || '', e.region || '', e.depth_km == null ? '–' : e.depth_km.toFixed(1)]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.appendChild(td);
      }
      tb.appendChild(tr);
    }
  }

  function addLatest(ev) {
    state.latest = state.latest.filter((e) => e.event_id !== ev.event_id);
    state.latest.push(ev);
    state.latest.sort((a, b) => b.time - a.time);
    state.latest = state.latest.slice(0, 20);
  }

  function renderMax() {
    const s = state.max24;
    $('tile-max-value').textContent = s && s.max_magnitude != null ? 'M ' + s.max_magnitude.toFixed(1) : '–';
    $('tile-max-place').textContent = s && s.max_event ? s.max_event.place + ' · ' + fmtTime(s.max_event.time) : '';
    $('tile-count-value').textContent = s ? String(s.event_count) : '–';
    $('tile-count-sub').textContent = s ? s.significant_count + ' significant (M5+), ' + s.tsunami_count + ' tsunami' : '';
    $('tile-max').dataset.ready = '1';
  }

  function renderRolling() {
    const r = state.rolling;
    if (!r) return;
    $('tile-rolling-value').textContent = String(r.event_count);
    $('tile-rolling-sub').textContent = r.max_magnitude == null ? '' : 'max M ' + Number(r.max_magnitude).toFixed(1);
  }

  /* ---- chart -------------------------------------------------------------------------------- */
  async function loadChart() {
    const ts = await getJSON('/timeseries?since=7d&bin=1h');
    const xs = ts.points.map((p) => p.t_ms / 1000);
    const ys = ts.points.map((p) => p.event_count);
    const el = $('chart');
    el.dataset.points = String(ts.points.length);
    el.dataset.total = String(ys.reduce((a, b) => a + b, 0));
    if (state.chart) { state.chart.setData([xs, ys]); return; }
    state.chart = new uPlot({
      width: Math.max(300, el.clientWidth || 600), height: 260,
      scales: { x: { time: true } },
      series: [{}, { label: 'events/h', stroke: '#ff7a3c', fill: 'rgba(255,122,60,.25)',
                     paths: uPlot.paths.bars ? uPlot.paths.bars({ size: [0.9] }) : undefined }],
      axes: [{ stroke: '#9fb3c8' }, { stroke: '#9fb3c8' }],
    }, [xs, ys], el);
  }

  let chartTimer = null;
  function refreshChartSoon() {
    if (chartTimer) return;
    chartTimer = setTimeout(() => { chartTimer = null; loadChart().catch(console.error); }, 2000);
  }

  /* ---- live --------------------------------------------------------------------------------- */
  function onEvent(ev, live) {
    state.events.set(ev.event_id, ev);
    plotEvent(ev, live);
    addLatest(ev);
    renderTable(live ? ev.event_id : undefined);
    const day = Date.now() - 86400000;
    if (live && ev.time >= day && typeof ev.magnitude === 'number') {
      const s = state.max24 || { max_magnitude: null, event_count: 0, significant_count: 0, tsunami_count: 0 };
      if (s.max_magnitude == null || ev.magnitude > s.max_magnitude) { s.max_magnitude = ev.magnitude; s.max_event = ev; }
      state.max24 = s;
      renderMax();
      getJSON('/stats?window=24h').then((st) => { state.max24 = st; renderMax(); }).catch(() => {});
    }
  }

  function addAlert(a) {
    const li = document.createElement('li');
    li.textContent = fmtTime(a.created_at) + ' ' + a.type + ' ' + (a.region || '') + ' ' + (a.message || '');
    const ul = $('alerts');
    ul.insertBefore(li, ul.firstChild);
    while (ul.children.length > 20) ul.removeChild(ul.lastChild);
  }

  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(proto + '//' + location.host + API + '/live');
    state.ws = ws;
    const status = $('live-status');
    ws.onopen = () => {
      state.retry = 500;
      ws.send(JSON.stringify({ type: 'subscribe', topics: ['aggregates', 'alerts', 'events'] }));
    };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === 'subscribed') { status.textContent = 'live'; status.dataset.state = 'live'; return; }
      if (msg.type === 'snapshot') {
        if (msg.topic === 'events') for (const e of msg.data.events) onEvent(e, false);
        if (msg.topic === 'aggregates' && msg.data.rolling) { state.rolling = msg.data.rolling; renderRolling(); }
        if (msg.topic === 'alerts') for (const a of msg.data.alerts.slice().reverse()) addAlert(a);
        return;
      }
      if (msg.type === 'event') { onEvent(msg.data, true); document.body.dataset.liveEvents = String(Number(document.body.dataset.liveEvents || 0) + 1); }
      else if (msg.type === 'event_removed') removeEvent(msg.data.event_id);
      else if (msg.type === 'window') refreshChartSoon();
      else if (msg.type === 'rolling') { state.rolling = msg.data; renderRolling(); }
      else if (msg.type === 'alert') addAlert(msg.data);
    };
    ws.onclose = () => {
      status.textContent = 'reconnecting…';
      status.dataset.state = 'connecting';
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 10000);
    };
  }

  /* ---- first paint -------------------------------------------------------------------------- */
  async function start() {
    const tasks = [
      drawLand().catch((e) => console.error('map', e)),
      getJSON('/events?since=7d&limit=1000&format=geojson').then((fc) => {
        for (const f of fc.features) state.events.set(f.id, f.properties), plotEvent(f.properties, false);
        $('quakes').dataset.ready = '1';
      }),
      getJSON('/events?limit=20').then((e) => { for (const ev of e.events) addLatest(ev); renderTable(); $('latest').dataset.ready = '1'; }),
      getJSON('/stats?window=24h').then((s) => { state.max24 = s; renderMax(); }),
      loadChart().then(() => { $('chart').dataset.ready = '1'; }),
    ];
    await Promise.allSettled(tasks);
    document.body.dataset.ready = '1';
    connect();
  }
  start();
})();
