// Overview: a card per segment (colour, icon, label, live size; a click opens the segment's
// page), a stacked bar per group, entered/exited per minute (uPlot), the from -> to matrix of a
// group's moves, pipeline sizes and moves (rule files with `pipelines:`) and the overlap
// matrix between segments (customers in both, Jaccard index).
import {
  $, api, axisTimes, esc, fmtDateTime, fmtInt, frameThrottle, iconSvg, inkOn, segColor, segInfo,
  segLabel,
} from "./util.js";

const OVERVIEW_EVERY = 2000;
const CHARTS_EVERY = 15000;

let setStatus = () => {};
let timers = [];
let latest = null; // the last overview answer
const cardEls = new Map(); // segment id -> card element
let cardOrder = "";
const charts = { entered: null, exited: null, key: "" };
let lastStats = null;
let lastOverlap = null;

export function init(statusFn) {
  setStatus = statusFn;
  $("stats-minutes").addEventListener("change", refreshStats);
  $("transitions-group").addEventListener("change", refreshTransitions);
  $("transitions-minutes").addEventListener("change", refreshTransitions);
  $("pipelines-minutes").addEventListener("change", refreshPipelines);
  $("overlap-mode").addEventListener("change", () => lastOverlap && renderOverlap(lastOverlap));
  $("cards").addEventListener("click", (e) => {
    const card = e.target.closest(".card");
    if (card) window.location.hash = `#/segment/${encodeURIComponent(card.dataset.segment)}`;
  });
  new ResizeObserver(() => resizeCharts()).observe($("chart-entered"));
}

export function show() {
  hide();
  refreshOverview();
  refreshStats();
  refreshTransitions();
  refreshPipelines();
  refreshOverlap();
  timers.push(setInterval(refreshOverview, OVERVIEW_EVERY));
  timers.push(setInterval(() => {
    refreshStats(); refreshTransitions(); refreshPipelines(); refreshOverlap();
  }, CHARTS_EVERY));
}

export function hide() {
  for (const t of timers) clearInterval(t);
  timers = [];
}

// ---------------------------------------------------------------- sizes and groups

async function refreshOverview() {
  try {
    latest = await api("/api/overview");
  } catch (err) {
    $("segment-count").textContent = `(cannot load: ${err.message})`;
    return;
  }
  setStatus(latest);
  scheduleRender();
}

const scheduleRender = frameThrottle(() => {
  if (!latest) return;
  renderCards(latest.segments);
  renderGroups(latest);
  fillGroupSelect(latest.groups);
});

function renderCards(list) {
  const box = $("cards");
  const order = list.map((s) => s.id).join("\n");
  if (order !== cardOrder) { // the set of segments changed: rebuild once
    cardOrder = order;
    cardEls.clear();
    box.innerHTML = list.map((s) => {
      const color = segColor(s);
      return `<div class="card" data-segment="${esc(s.id)}" style="--seg:${color}" ` +
        `title="${esc(s.id)}: its members, size over time and CSV download">` +
        `<span class="swatch" style="background:${color};color:${inkOn(color)}">` +
        `${iconSvg(s.icon)}</span><div class="txt"><div class="label">${esc(segLabel(s))}</div>` +
        `<div class="sid">${esc(s.id)}${s.group ? ` · ${esc(s.group)}` : ""}` +
        `${s.undefined ? " · not in the rules" : ""}</div></div>` +
        `<div class="size" data-size="">0</div></div>`;
    }).join("");
    for (const el of box.children) cardEls.set(el.dataset.segment, el);
  }
  for (const s of list) { // then only the sizes that changed
    const el = cardEls.get(s.id);
    if (!el) continue;
    const size = el.lastElementChild;
    const text = fmtInt(s.size);
    if (size.dataset.size !== String(s.size)) {
      size.dataset.size = String(s.size);
      size.textContent = text;
      el.classList.toggle("empty", s.size === 0);
    }
  }
  $("segment-count").textContent = `(${fmtInt(list.length)})`;
}

function renderGroups(data) {
  const sizes = new Map(data.segments.map((s) => [s.id, s]));
  $("groups").innerHTML = data.groups.map((g) => {
    const members = g.segments.map((id) => sizes.get(id) || segInfo(id, { size: 0 }));
    const sum = members.reduce((a, s) => a + s.size, 0) || 1;
    const bar = members.map((s) => {
      const pct = (100 * s.size) / sum;
      return `<div style="flex-grow:${s.size};background:${segColor(s)}" ` +
        `title="${esc(segLabel(s))}: ${fmtInt(s.size)} (${pct.toFixed(1)}%)"></div>`;
    }).join("");
    const legend = members.map((s) => `<span><span class="dot" ` +
      `style="background:${segColor(s)}"></span>${esc(segLabel(s))} ` +
      `<b>${fmtInt(s.size)}</b> <span class="muted">${((100 * s.size) / sum).toFixed(1)}%` +
      `</span></span>`).join("");
    return `<div class="panel groupbar" data-group="${esc(g.name)}"><div class="head">` +
      `<h2>Group ${esc(g.name)}</h2><span class="muted">${fmtInt(g.total)} customers in one ` +
      `of its segments</span></div><div class="bar">${bar}</div>` +
      `<div class="legend">${legend}</div></div>`;
  }).join("");
}

function fillGroupSelect(groups) {
  const select = $("transitions-group");
  const names = groups.map((g) => g.name);
  if (select.dataset.names === names.join(",")) return;
  const keep = select.value;
  select.dataset.names = names.join(",");
  select.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
  if (names.includes(keep)) select.value = keep;
  refreshTransitions();
}

// ---------------------------------------------------------------- entered / exited per minute

async function refreshStats() {
  const minutes = $("stats-minutes").value;
  try {
    lastStats = await api(`/api/stats?minutes=${minutes}&top=8`);
  } catch (err) {
    $("stats-legend").textContent = `cannot load the counters: ${err.message}`;
    return;
  }
  renderStats(lastStats);
}

function chartWidth() {
  return Math.max(200, $("chart-entered").clientWidth || 500);
}

function renderStats(data) {
  if (!window.uPlot) return;
  const shown = data.shown;
  $("stats-legend").innerHTML = shown.length
    ? shown.map((id) => {
      const s = segInfo(id);
      const t = data.totals[id] || { entered: 0, exited: 0 };
      return `<span><span class="dot" style="background:${segColor(s)}"></span>` +
        `${esc(segLabel(s))} <span class="muted">+${fmtInt(t.entered)} / −${fmtInt(t.exited)}` +
        `</span></span>`;
    }).join("")
    : '<span class="muted">No changes counted in this period.</span>';
  const key = `${shown.join(",")}|${data.minutes.length}`;
  for (const what of ["entered", "exited"]) {
    const rows = [data.minutes, ...shown.map((id) => data.series[id][what])];
    if (charts.key !== key || !charts[what]) {
      if (charts[what]) charts[what].destroy();
      const el = $(`chart-${what}`);
      el.innerHTML = "";
      charts[what] = new window.uPlot({
        width: chartWidth(),
        height: 240,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        axes: [{ values: axisTimes, size: 50 }, { size: 45 }],
        series: [{}, ...shown.map((id) => {
          const s = segInfo(id);
          return { label: segLabel(s), stroke: segColor(s), width: 1.6, points: { show: false } };
        })],
      }, rows, el);
    } else {
      charts[what].setData(rows);
    }
  }
  charts.key = key;
}

function resizeCharts() {
  for (const what of ["entered", "exited"]) {
    if (charts[what]) charts[what].setSize({ width: chartWidth(), height: 240 });
  }
}

// ---------------------------------------------------------------- transitions matrix

async function refreshTransitions() {
  const group = $("transitions-group").value;
  const minutes = $("transitions-minutes").value;
  let data;
  try {
    data = await api(`/api/transitions?minutes=${minutes}` +
      (group ? `&group=${encodeURIComponent(group)}` : ""));
  } catch (err) {
    $("transitions").textContent = `cannot load the moves: ${err.message}`;
    return;
  }
  renderTransitions(data);
}

function renderTransitions(data) {
  const box = $("transitions");
  if (!data.group) {
    box.innerHTML = '<p class="muted">The rules define no group.</p>';
    return;
  }
  const counts = new Map(data.cells.map((c) => [`${c.from}>${c.to}`, c.count]));
  const max = Math.max(1, ...data.cells.map((c) => c.count));
  const name = (id) => (id === "-" ? "none" : esc(segLabel(segInfo(id))));
  const head = data.order.map((id) => `<th>${name(id)}</th>`).join("");
  const rows = data.order.map((src) => {
    const cells = data.order.map((dst) => {
      if (src === dst) return '<td class="diag">·</td>';
      const n = counts.get(`${src}>${dst}`) || 0;
      const color = dst === "-" ? "#888888" : segColor(segInfo(dst));
      const alpha = n ? 0.15 + (0.65 * n) / max : 0;
      const bg = n ? `color-mix(in srgb, ${color} ${Math.round(alpha * 100)}%, transparent)`
        : "transparent";
      return `<td data-from="${esc(src)}" data-to="${esc(dst)}" style="background:${bg}">` +
        `${n ? fmtInt(n) : ""}</td>`;
    }).join("");
    return `<tr><th>${name(src)}</th>${cells}</tr>`;
  }).join("");
  let note;
  if (data.source === "counters") {
    note = "From the view's per-minute transition counters.";
  } else {
    note = `Derived from the latest ${fmtInt(data.feed_entries || 0)} changes of the feed`;
    note += data.complete ? "." : `, which go back to ${esc(fmtDateTime(data.covered_since))}: ` +
      "moves before that are not counted.";
  }
  box.innerHTML = `<table class="matrix" data-group="${esc(data.group)}"><thead><tr>` +
    `<th>from \\ to</th>${head}</tr></thead><tbody>${rows}</tbody></table>` +
    `<p class="muted">${note}</p>`;
}

// ---------------------------------------------------------------- pipelines

async function refreshPipelines() {
  let data;
  try {
    data = await api(`/api/pipelines?minutes=${$("pipelines-minutes").value}`);
  } catch (err) {
    $("pipelines").textContent = `cannot load the pipelines: ${err.message}`;
    return;
  }
  renderPipelines(data);
}

function pipelineColor(id) {
  return id === "-" ? "#888888" : segColor({ id });
}

function renderPipelines(data) {
  const panel = $("pipelines-panel");
  panel.hidden = !data.pipelines.length;
  if (!data.pipelines.length) return;
  const sum = data.pipelines.reduce((a, p) => a + p.size, 0) || 1;
  const labels = new Map(data.pipelines.map((p) => [p.id, p.label || p.id]));
  const bar = data.pipelines.map((p) => `<div style="flex-grow:${p.size};` +
    `background:${pipelineColor(p.id)}" title="${esc(labels.get(p.id))}: ${fmtInt(p.size)}">` +
    "</div>").join("");
  const legend = data.pipelines.map((p) => `<span data-pipeline="${esc(p.id)}" ` +
    `title="${esc(p.id)}${p.default ? " (default)" : ""}"><span ` +
    `class="dot" style="background:${pipelineColor(p.id)}"></span>${esc(labels.get(p.id))} ` +
    `<b class="n">${fmtInt(p.size)}</b> <span class="muted">` +
    `${((100 * p.size) / sum).toFixed(1)}%</span></span>`).join("");
  const counts = new Map(data.cells.map((c) => [`${c.from}>${c.to}`, c.count]));
  const max = Math.max(1, ...data.cells.map((c) => c.count));
  const name = (id) => (id === "-" ? "none" : esc(labels.get(id) || id));
  const head = data.order.map((id) => `<th>${name(id)}</th>`).join("");
  const rows = data.order.map((src) => `<tr><th>${name(src)}</th>${data.order.map((dst) => {
    if (src === dst) return '<td class="diag">·</td>';
    const n = counts.get(`${src}>${dst}`) || 0;
    const bg = n ? `color-mix(in srgb, ${pipelineColor(dst)} ` +
      `${Math.round((0.15 + (0.65 * n) / max) * 100)}%, transparent)` : "transparent";
    return `<td data-from="${esc(src)}" data-to="${esc(dst)}" style="background:${bg}">` +
      `${n ? fmtInt(n) : ""}</td>`;
  }).join("")}</tr>`).join("");
  let note = `Moves derived from the latest ${fmtInt(data.feed_entries)} changes of the feed`;
  note += data.complete ? "." : `, which go back to ${esc(fmtDateTime(data.covered_since))}.`;
  $("pipelines").innerHTML = `<div class="groupbar"><div class="bar">${bar}</div>` +
    `<div class="legend">${legend}</div></div><table class="matrix pipelines"><thead><tr>` +
    `<th>from \\ to</th>${head}</tr></thead><tbody>${rows}</tbody></table>` +
    `<p class="muted">${note}</p>`;
}

// ---------------------------------------------------------------- overlap

async function refreshOverlap() {
  try {
    lastOverlap = await api("/api/overlap");
  } catch (err) {
    $("overlap").textContent = `cannot load the overlap: ${err.message}`;
    return;
  }
  renderOverlap(lastOverlap);
}

function renderOverlap(data) {
  const box = $("overlap");
  if (!data.segments.length) {
    box.innerHTML = '<p class="muted">No segment has members yet.</p>';
    return;
  }
  const jaccard = $("overlap-mode").value === "jaccard";
  const label = (id) => esc(segLabel(segInfo(id, { label: data.labels[id] || undefined })));
  const head = data.segments.map((id) => `<th title="${esc(id)}">${label(id)}</th>`).join("");
  const rows = data.segments.map((a, i) => {
    const cells = data.segments.map((b, j) => {
      const both = data.both[i][j];
      const jac = data.jaccard[i][j];
      const value = jaccard ? (jac === null ? "" : jac.toFixed(2)) : fmtInt(both);
      const shade = i === j ? 0 : Math.round(100 * (jac || 0) * 0.8);
      const color = segColor(segInfo(b));
      const bg = shade ? `color-mix(in srgb, ${color} ${shade}%, transparent)` : "transparent";
      const title = `${a} and ${b}: ${both} in both, Jaccard ` +
        `${jac === null ? "none" : jac.toFixed(3)}`;
      return `<td class="${i === j ? "diag" : ""}" data-a="${esc(a)}" data-b="${esc(b)}" ` +
        `data-both="${both}" data-jaccard="${jac === null ? "" : jac}" ` +
        `title="${esc(title)}" style="background:${bg}">${value}</td>`;
    }).join("");
    return `<tr><th title="${esc(a)}">${label(a)}</th>${cells}</tr>`;
  }).join("");
  box.innerHTML = `<table class="matrix overlap"><thead><tr><th></th>${head}</tr></thead>` +
    `<tbody>${rows}</tbody></table><p class="muted">Customers in both segments now (the ` +
    "diagonal: the segment's size); the shade is the Jaccard index, both / in either: " +
    "near 1, two segments hold almost the same customers.</p>";
}
