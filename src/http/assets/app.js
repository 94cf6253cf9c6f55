// power-monitord status page: live values and sparklines without reloading the page.
// The server renders the first paint; this script keeps it current with /api/readings and
// /api/history every few seconds. No inline handlers, no external code (see the page's CSP).
'use strict';

const REFRESH_MS = 5000;
const WIDTH = 300;
const HEIGHT = 60;
const PAD = 3;

// Per sensor: its recent power as [unix, watts|null], and how many points it keeps.
const series = new Map();
let pointsPerSensor = 720;

function number(v, decimals) {
  return typeof v === 'number' && isFinite(v) ? v.toFixed(decimals) : '–';
}

function clock(unix) {
  const d = new Date(unix * 1000);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function span(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h === 0 && m === 0) return s + ' s';
  if (h === 0) return m + ' min';
  if (h < 48) return h + ' h ' + m + ' min';
  return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
}

function set(root, field, text) {
  const el = root.querySelector('[data-f="' + field + '"]');
  if (el && el.textContent !== text) el.textContent = text;
  return el;
}

// The same geometry as the server's first paint (src/http/page.rs).
function geometry(points, resolution) {
  if (points.length === 0) return null;
  const tmax = points[points.length - 1][0];
  // The whole history once it is full, what there is until then (ten points at least).
  const width = Math.max(Math.min(resolution * pointsPerSensor, tmax - points[0][0]), 10 * resolution);
  const tmin = tmax - width;
  const values = points.map((p) => p[1]).filter((w) => w !== null);
  if (values.length === 0) return null;
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const x = (t) => ((t - tmin) / width) * WIDTH;
  const y = (w) => PAD + (1 - (w - lo) / (hi - lo)) * (HEIGHT - 2 * PAD);
  return { x, y, tmin, width };
}

function pathOf(points, g) {
  let d = '';
  let pen = false;
  for (const [t, w] of points) {
    if (w === null || t < g.tmin) { pen = false; continue; }
    d += (pen ? 'L' : 'M') + g.x(t).toFixed(1) + ' ' + g.y(w).toFixed(1);
    pen = true;
  }
  return d;
}

function draw(card, name) {
  const entry = series.get(name);
  const svg = card.querySelector('svg');
  if (!entry || !svg) return;
  const g = geometry(entry.points, entry.resolution);
  let path = svg.querySelector('path');
  if (!path) {
    path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    svg.appendChild(path);
  }
  path.setAttribute('d', g ? pathOf(entry.points, g) : '');
  svg.dataset.points = String(entry.points.length);
}

function pointAt(card, name, clientX) {
  const entry = series.get(name);
  const svg = card.querySelector('svg');
  if (!entry || entry.points.length === 0) return;
  const g = geometry(entry.points, entry.resolution);
  if (!g) return;
  const box = svg.getBoundingClientRect();
  const t = g.tmin + ((clientX - box.left) / box.width) * g.width;
  let best = entry.points[0];
  for (const p of entry.points) {
    if (Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
  }
  let dot = svg.querySelector('circle');
  if (!dot) {
    dot = document.createElementNS('http://www.w3.org/2000/svg', 'circle');
    dot.setAttribute('r', '2.5');
    svg.appendChild(dot);
  }
  if (best[1] === null) {
    dot.setAttribute('r', '0');
  } else {
    dot.setAttribute('r', '2.5');
    dot.setAttribute('cx', g.x(best[0]).toFixed(1));
    dot.setAttribute('cy', g.y(best[1]).toFixed(1));
  }
  set(card, 'tip', (best[1] === null ? 'beyond range' : number(best[1], 1) + ' W') + ' at ' + clock(best[0]));
}

function wire(card) {
  const name = card.dataset.sensor;
  const svg = card.querySelector('svg');
  if (!svg) return;
  const show = (e) => pointAt(card, name, e.clientX);
  svg.addEventListener('pointermove', show);
  svg.addEventListener('pointerdown', show);
  svg.addEventListener('pointerleave', () => {
    const dot = svg.querySelector('circle');
    if (dot) dot.setAttribute('r', '0');
    set(card, 'tip', card.dataset.caption || '');
  });
}

function updateSensor(card, s) {
  const state = card.querySelector('[data-f="state"]');
  if (s.up) {
    state.className = 'state up';
    state.textContent = 'up';
  } else {
    state.className = 'state down';
    state.textContent = 'down: ' + (s.down_reason || s.last_error || 'no reading yet');
  }
  set(card, 'power', s.overflow && s.power_watts === null ? 'overrange' : number(s.power_watts, 1));
  set(card, 'volts', number(s.bus_voltage_volts, 2) + ' V');
  set(card, 'amps', number(s.current_amperes, 3) + ' A');
  set(card, 'today', number(s.energy_today_kwh, 3) + ' kWh');
  set(card, 'total', number(s.energy_kwh, 3) + ' kWh');
  set(card, 'avg', number(s.power_avg_watts, 1) + ' W');
  set(card, 'min', number(s.power_min_watts, 1) + ' W');
  set(card, 'max', number(s.power_max_watts, 1) + ' W');
  const list = card.querySelector('[data-f="anomalies"]');
  const wanted = s.anomalies.map((a) => a.rule + (a.since ? ' since ' + clock(a.since) : ''));
  const have = Array.from(list.children).map((li) => li.textContent);
  if (wanted.join('|') !== have.join('|')) {
    list.replaceChildren(...wanted.map((text) => {
      const li = document.createElement('li');
      li.className = 'badge';
      li.textContent = text;
      return li;
    }));
  }
}

function updateBattery(card, b) {
  const known = b.state_of_charge !== null;
  const meter = card.querySelector('meter');
  meter.hidden = !known;
  if (known) meter.value = b.state_of_charge;
  set(card, 'soc', known ? number(b.state_of_charge * 100, 1) : 'unknown');
  set(card, 'unit', known ? '%' : '');
  set(card, 'ah', known ? number(b.state_of_charge * b.capacity_ah, 0) + ' of ' + number(b.capacity_ah, 0) + ' Ah'
    : 'state of charge unknown until the first full charge');
  let togo = '';
  if (b.discharging) {
    togo = (b.time_to_go_seconds !== null ? span(b.time_to_go_seconds) + ' to go at ' : 'discharging at ')
      + number(b.average_current_amperes, 1) + ' A';
  } else if (b.charging) togo = 'charging at ' + number(-b.average_current_amperes, 1) + ' A';
  else if (b.state_of_charge !== null) togo = 'idle';
  set(card, 'togo', togo);
  let sure = '';
  if (b.synchronized) sure = 'synchronised to a full charge';
  else if (b.state_of_charge !== null) {
    sure = b.state_of_charge_uncertainty === null ? 'an estimate until the next full charge'
      : 'an estimate, ± ' + number(b.state_of_charge_uncertainty * 100, 0) + ' %, until the next full charge';
  }
  set(card, 'sure', sure);
}

async function json(url) {
  const response = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
  if (!response.ok) throw new Error(url + ': ' + response.status);
  return response.json();
}

async function refreshHistory() {
  let since = Infinity;
  for (const entry of series.values()) {
    const last = entry.points.length ? entry.points[entry.points.length - 1][0] : 0;
    since = Math.min(since, last);
  }
  if (!isFinite(since)) since = 0;
  const h = await json('/api/history?since=' + since);
  pointsPerSensor = h.points_per_sensor;
  for (const [name, s] of Object.entries(h.sensors)) {
    const entry = series.get(name) || { points: [], resolution: s.resolution_seconds };
    const last = entry.points.length ? entry.points[entry.points.length - 1][0] : -Infinity;
    for (const p of s.points) if (p[0] > last) entry.points.push(p);
    if (entry.points.length > pointsPerSensor) entry.points.splice(0, entry.points.length - pointsPerSensor);
    entry.resolution = s.resolution_seconds;
    series.set(name, entry);
  }
}

async function refresh() {
  const live = document.querySelector('[data-f="live"]');
  try {
    const data = await json('/api/readings');
    const cards = document.querySelectorAll('.card[data-sensor]');
    const names = Array.from(cards).map((c) => c.dataset.sensor).join('|');
    if (names !== data.sensors.map((s) => s.name).join('|')) {
      location.reload(); // sensors were added or removed by a reload of the daemon
      return;
    }
    for (const s of data.sensors) {
      const card = document.querySelector('.card[data-sensor="' + CSS.escape(s.name) + '"]');
      if (card) updateSensor(card, s);
    }
    for (const b of data.batteries) {
      const card = document.querySelector('.card[data-battery="' + CSS.escape(b.name) + '"]');
      if (card) updateBattery(card, b);
    }
    set(document, 'uptime', span(data.uptime_seconds));
    const health = set(document, 'health', data.sampling_healthy ? 'healthy' : 'stalled');
    health.className = data.sampling_healthy ? 'ok' : 'bad';
    await refreshHistory();
    for (const card of cards) draw(card, card.dataset.sensor);
    live.textContent = 'updated ' + clock(Date.now() / 1000);
    live.className = 'muted';
  } catch (e) {
    live.textContent = 'no answer from the daemon; retrying';
    live.className = 'bad';
  }
  setTimeout(refresh, REFRESH_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  for (const card of document.querySelectorAll('.card[data-sensor]')) {
    card.dataset.caption = card.querySelector('[data-f="tip"]').textContent;
    wire(card);
  }
  refresh();
});
