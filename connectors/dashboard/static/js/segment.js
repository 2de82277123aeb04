// Segment (#/segment/<id>, a click on an overview card): its size over time (the view's size
// history, uPlot), its members page by page (the SSCAN cursor of /api/segments/<id>/members)
// the whole member list as a CSV download, and the control group's outcome when the dashboard has
// a report for the segment (`--outcomes DIR`).
import {
  $, api, axisTimes, badge, esc, fmtDateTime, fmtInt, fmtValue, segColor, segInfo, segLabel,
} from "./util.js";

const PAGE = 100;

let setStatus = () => {};
let segment = "";
let cursor = null; // the next page's cursor; null: every page read
const shown = new Set(); // customer ids in the table (a scan may return one twice)
let chart = null;
let generation = 0; // a newer show() makes older answers stale

export function init(statusFn) {
  setStatus = statusFn;
  $("segment-more").addEventListener("click", () => loadMembers(generation));
  $("segment-resolution").addEventListener("change", () => loadHistory(generation));
  new ResizeObserver(() => {
    if (chart) chart.setSize({ width: chartWidth(), height: 240 });
  }).observe($("segment-history"));
}

export function show(param) {
  generation += 1;
  segment = param || "";
  cursor = null;
  shown.clear();
  $("segment-members").querySelector("tbody").innerHTML = "";
  $("segment-more").hidden = true;
  $("segment-members-count").textContent = "";
  $("segment-error").hidden = true;
  const s = segInfo(segment);
  $("segment-head").innerHTML = segment
    ? `<h2>${badge(s)}</h2><code class="muted">${esc(segment)}</code>` +
      `<a href="#/feed/${encodeURIComponent(segment)}">live feed of this segment</a>`
    : "<h2>No segment chosen</h2><p class='muted'>Click a segment card on the overview.</p>";
  const csv = $("segment-csv");
  csv.href = `/api/segments/${encodeURIComponent(segment)}/export?format=csv`;
  csv.setAttribute("download", `${segment}-members.csv`);
  if (!segment) return;
  const g = generation;
  $("segment-outcome-panel").hidden = true;
  loadMembers(g);
  loadHistory(g);
  loadOutcome(g);
}

export function hide() {}

function fail(message) {
  const el = $("segment-error");
  el.textContent = message;
  el.hidden = false;
}

// ---------------------------------------------------------------- members

function whyText(why) {
  if (!why || typeof why !== "object") return '<span class="muted">not known</span>';
  const terms = Object.entries(why);
  if (!terms.length) return '<span class="muted">—</span>';
  return terms.map(([t, v]) => `<span class="term"><code>${esc(t)}</code> = ` +
    `<b>${esc(fmtValue(v))}</b></span>`).join(" ");
}

async function loadMembers(g) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (cursor) params.set("cursor", cursor);
  let page;
  try {
    page = await api(`/api/segments/${encodeURIComponent(segment)}/members?${params}`);
  } catch (err) {
    if (g === generation) fail(`Cannot load the members: ${err.message}`);
    return;
  }
  if (g !== generation) return;
  const rows = [];
  for (const m of page.members) {
    if (shown.has(m.customer_id)) continue;
    shown.add(m.customer_id);
    const href = `#/customer/${encodeURIComponent(m.customer_id)}`;
    const entered = m.entered_at
      ? `<span class="ts" title="${esc(m.entered_at)}">${esc(fmtDateTime(m.entered_at))}</span>`
      : '<span class="muted">not known</span>';
    rows.push(`<tr data-customer="${esc(m.customer_id)}"><td class="cid"><a href="${href}">` +
      `${esc(m.customer_id)}</a></td><td class="entered">${entered}</td>` +
      `<td class="why">${whyText(m.why)}</td></tr>`);
  }
  $("segment-members").querySelector("tbody").insertAdjacentHTML("beforeend", rows.join(""));
  cursor = page.next_cursor;
  $("segment-more").hidden = cursor === null;
  $("segment-members-count").textContent =
    `(${fmtInt(shown.size)} shown of ${fmtInt(page.size)})`;
  $("segment-members").dataset.size = String(page.size);
  $("segment-members").dataset.complete = cursor === null ? "true" : "false";
}

// ---------------------------------------------------------------- size history

function chartWidth() {
  return Math.max(200, $("segment-history").clientWidth || 500);
}

async function loadHistory(g) {
  const resolution = $("segment-resolution").value;
  let data;
  try {
    data = await api(`/api/segments/${encodeURIComponent(segment)}/history?` +
      `resolution=${resolution}`);
  } catch (err) {
    if (g === generation) fail(`Cannot load the size history: ${err.message}`);
    return;
  }
  if (g !== generation) return;
  renderHistory(data);
}

function renderHistory(data) {
  const box = $("segment-history");
  box.dataset.points = String(data.points.length);
  box.dataset.size = String(data.size);
  const note = $("segment-history-note");
  if (chart) {
    chart.destroy();
    chart = null;
  }
  box.innerHTML = "";
  if (!data.points.length) {
    note.textContent = "No size change kept for this period.";
    return;
  }
  // the size stays the same between two points: a stepped line, drawn on to now
  const xs = data.points.map((p) => Math.max(p[0], data.since));
  const ys = data.points.map((p) => p[1]);
  const end = Math.max(data.until + data.step, xs[xs.length - 1]);
  xs.push(end);
  ys.push(ys[ys.length - 1]);
  const span = data.resolution === "hour" ? "400 days, per hour" : "48 hours, per minute";
  note.textContent = `Size at the end of each ${data.resolution} in which it changed ` +
    `(last ${span}); now ${fmtInt(data.size)}.`;
  if (!window.uPlot) return;
  const s = segInfo(data.segment);
  chart = new window.uPlot({
    width: chartWidth(),
    height: 240,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.05)] } },
    axes: [{ values: axisTimes, size: 50 }, { size: 55 }],
    series: [{}, {
      label: segLabel(s), stroke: segColor(s), width: 1.8, points: { show: false },
      fill: `color-mix(in srgb, ${segColor(s)} 18%, transparent)`,
      paths: window.uPlot.paths.stepped({ align: 1 }),
    }],
  }, [xs, ys], box);
}

// ---------------------------------------------------------------- control group outcome

function num(v, digits = 4) {
  if (v === null || v === undefined) return "—";
  return Number(v.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

async function loadOutcome(g) {
  let r;
  try {
    const listed = await api("/api/outcomes"); // asked first: no 404 for the others
    if (!listed.segments.includes(segment)) return; // the panel stays hidden
    r = await api(`/api/segments/${encodeURIComponent(segment)}/outcome`);
  } catch {
    return;
  }
  if (g !== generation) return;
  const conversion = r.kind === "conversion";
  const what = conversion ? "rate" : "mean";
  const row = (name, s) => `<tr data-group="${name}"><th>${name}</th><td class="num n">` +
    `${fmtInt(s.n)}</td><td class="num mean">${num(s.mean)}</td><td class="num">` +
    `${conversion ? fmtInt(s.conversions ?? 0) : num(s.sd)}</td></tr>`;
  const level = `${Math.round(r.confidence * 1000) / 10}%`;
  const ci = r.ci_low === null ? "no interval" : `${level} CI [${num(r.ci_low)}, ${num(r.ci_high)}]`;
  const verdict = r.p_value === null ? "" : r.significant
    ? `<span class="yes">significant at ${level}</span>`
    : `<span class="muted">not significant at ${level}</span>`;
  $("segment-outcome").innerHTML =
    `<p><b>${esc(r.outcome)}</b> <span class="muted">(${esc(r.kind)}, ` +
    `${Math.round(r.control_share * 1000) / 10}% held out; report of ` +
    `<span class="ts" title="${esc(r.report_written_at)}">${esc(fmtDateTime(r.report_written_at))}` +
    `</span>)</span></p><table class="terms outcome"><thead><tr><th></th><th>customers</th>` +
    `<th>${what}</th><th>${conversion ? "converted" : "sd"}</th></tr></thead><tbody>` +
    `${row("treated", r.treated)}${row("control", r.control)}</tbody></table>` +
    `<p class="diff">Difference treated − control: <b class="value">${num(r.difference)}</b> ` +
    `(${esc(ci)}; p = ${num(r.p_value, 3)}) ${verdict}</p>` +
    `<p class="muted">${esc(r.method || "")}${r.note ? ` · ${esc(r.note)}` : ""} · ` +
    `${fmtInt(r.entered)} entered, ${fmtInt(r.pending)} with the window still open</p>`;
  $("segment-outcome-panel").hidden = false;
}
