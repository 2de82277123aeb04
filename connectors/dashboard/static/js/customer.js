// Customer: current segments as badges; predictions (the rules' model functions); for each
// segment, why (the rule's conditions with this customer's values against their thresholds);
// key metrics; recent changes.
import {
  $, HttpError, api, badge, causeText, esc, fmtDateTime, fmtValue, segColor, segInfo,
  shortVersion,
} from "./util.js";

let setStatus = () => {};
let shownId = null;

export function init(statusFn) {
  setStatus = statusFn;
  $("customer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("customer-id").value.trim();
    if (id) window.location.hash = `#/customer/${encodeURIComponent(id)}`;
  });
}

export function show(param) {
  const id = param || "";
  $("customer-id").value = id;
  if (!id) {
    shownId = null;
    $("customer").innerHTML = '<p class="muted">Type a customer id (or click one in the live ' +
      "feed).</p>";
    $("customer-id").focus();
    return;
  }
  load(id);
}

export function hide() {}

async function load(id) {
  shownId = id;
  $("customer").innerHTML = '<p class="muted">Loading…</p>';
  let data;
  try {
    data = await api(`/api/customers/${encodeURIComponent(id)}`);
  } catch (err) {
    if (shownId !== id) return;
    $("customer").innerHTML = err instanceof HttpError && err.status === 404
      ? `<p class="empty-result">No customer <b>${esc(id)}</b>: neither the view nor the worker ` +
        "knows this id.</p>"
      : `<p class="no">Cannot load ${esc(id)}: ${esc(err.message)}</p>`;
    return;
  }
  if (shownId !== id) return;
  setStatus({ status: data.status });
  render(data);
}

function conditionRows(conditions) {
  return conditions.map((c) => {
    const ok = c.ok === true ? '<span class="yes" title="holds">✓</span>'
      : c.ok === false ? '<span class="no" title="does not hold">✗</span>'
        : '<span class="unknown" title="value not known">?</span>';
    const threshold = Array.isArray(c.threshold) ? fmtValue(c.threshold) : c.threshold;
    return `<tr data-term="${esc(c.term)}"><td><code>${c.negated ? "not " : ""}` +
      `${esc(c.term)}</code></td><td class="num value">${esc(fmtValue(c.value))}</td>` +
      `<td><code>${esc(c.op)} ${esc(threshold)}</code></td><td>${ok}</td></tr>`;
  }).join("");
}

function whyBlock(seg) {
  const info = segInfo(seg.id, seg);
  let body;
  if (seg.conditions && seg.conditions.length) {
    body = `<table class="terms when"><thead><tr><th>term</th><th>value</th><th>rule</th><th></th>` +
      `</tr></thead><tbody>${conditionRows(seg.conditions)}</tbody></table>`;
  } else if (seg.why && Object.keys(seg.why).length) {
    body = `<table class="terms when"><tbody>${Object.entries(seg.why).map(([k, v]) =>
      `<tr data-term="${esc(k)}"><td><code>${esc(k)}</code></td><td class="num value">` +
      `${esc(fmtValue(v))}</td></tr>`).join("")}</tbody></table>`;
  } else {
    body = '<p class="muted">Why needs the Query API.</p>';
  }
  const exit = seg.exit_conditions && seg.exit_conditions.length
    ? `<h3>Leaves when <code>${esc(seg.exit_when)}</code> <span class="muted">(✗: not yet)` +
      `</span></h3><table class="terms exit"><tbody>` +
      `${conditionRows(seg.exit_conditions)}</tbody></table>` : "";
  return `<div class="seg" data-segment="${esc(seg.id)}" style="--seg:${segColor(info)}">` +
    `${badge(info)}${seg.entered_at ? ` <span class="muted">since <span class="ts" ` +
      `title="${esc(seg.entered_at)}">${esc(fmtDateTime(seg.entered_at))}</span></span>` : ""}` +
    `${seg.when ? `<pre><code>when ${esc(seg.when)}</code></pre>` : ""}${body}${exit}</div>`;
}

function historyItem(h) {
  const entered = h.entered.map((id) => badge(segInfo(id), "entered")).join("");
  const exited = h.exited.map((id) => badge(segInfo(id), "exited")).join("");
  return `<li data-seq="${esc(h.seq)}"><span class="muted ts" title="${esc(h.at)}">` +
    `${esc(fmtDateTime(h.at))}</span> ` +
    `${entered}${exited} <span class="muted">${esc(causeText(h.cause))} · seq ${esc(h.seq)}` +
    `</span></li>`;
}

// The model functions' values as the worker's engine computed them (the Query API's metrics:
// P(alive), expected purchases, CLV, cluster), never recomputed here. `data-value` keeps the
// value exactly as sent.
function predictionsBlock(preds) {
  if (!preds || !preds.length) return "";  // no Query API, or rules without models
  const rows = preds.map((p) =>
    `<div data-prediction="${esc(p.term)}" data-function="${esc(p.function)}" ` +
    `data-value="${esc(p.value === null ? "null" : String(p.value))}">` +
    `<span><span class="label">${esc(p.label)}</span> <code class="muted">${esc(p.term)}` +
    `</code></span><b class="value">${esc(fmtValue(p.value))}</b></div>`).join("");
  return `<h2>Predictions</h2><div id="customer-predictions" class="metrics predictions">` +
    `${rows}</div>`;
}

function render(data) {
  const badges = data.segments.length
    ? data.segments.map((s) => badge(segInfo(s.id, s))).join("")
    : '<span class="muted">in no segment</span>';
  const metrics = data.metrics
    ? Object.entries(data.metrics).map(([k, v]) =>
      `<div data-metric="${esc(k)}"><code>${esc(k)}</code><b>${esc(fmtValue(v))}</b></div>`)
      .join("")
    : '<p class="muted">Metrics need the Query API.</p>';
  const history = data.history.length
    ? `<ol class="history">${data.history.map(historyItem).join("")}</ol>`
    : '<p class="muted">No change kept for this customer.</p>';
  const where = [];
  if (!data.status.in_view) where.push("not in the Redis view yet");
  if (data.status.api_ok && !data.status.in_api) where.push("unknown to the worker");
  $("customer").innerHTML =
    `<div class="cust-head"><h2 id="customer-title">${esc(data.customer_id)}</h2>` +
    `<span class="muted">seq ${esc(data.seq ?? "?")} · rules ` +
    `${esc(shortVersion(data.rules_version))}` +
    `${data.view ? ` · view updated <span class="ts" title="${esc(data.view.updated_at)}">` +
      `${esc(fmtDateTime(data.view.updated_at))}</span>` : ""}` +
    `${where.length ? ` · ${esc(where.join(", "))}` : ""}</span></div>` +
    `<div id="customer-badges" class="badges">${badges}</div>` +
    predictionsBlock(data.predictions) +
    `<h2>Why</h2><div class="why">${data.segments.map(whyBlock).join("") ||
      '<p class="muted">—</p>'}</div>` +
    `<h2>Key metrics</h2><div class="metrics">${metrics}</div>` +
    `<h2>Recent changes</h2>${history}`;
}
