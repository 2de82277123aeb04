// Rules: the segment definitions in force, by group (in the order that decides which segment
// of the group a customer is in), then the segments without a group, in file order.
import { $, api, badge, esc, fmtInt, shortVersion } from "./util.js";

let setStatus = () => {};

export function init(statusFn) {
  setStatus = statusFn;
}

export async function show() {
  let data;
  try {
    data = await api("/api/rules");
  } catch (err) {
    $("rules").innerHTML = `<p class="no">Cannot load the rules: ${esc(err.message)}</p>`;
    return;
  }
  setStatus(data);
  render(data);
}

export function hide() {}

function actionsText(actions) {
  if (!actions || !Object.keys(actions).length) return "";
  return Object.entries(actions).map(([k, v]) =>
    `${k}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v}`)
    .join("; ");
}

function ruleHtml(s, order) {
  const extra = [];
  if (s.exit_when) extra.push(`<dt>leaves when</dt><dd><code>${esc(s.exit_when)}</code></dd>`);
  if (s.min_dwell) extra.push(`<dt>stays at least</dt><dd>${esc(s.min_dwell)}</dd>`);
  const actions = actionsText(s.actions);
  if (actions) extra.push(`<dt>actions</dt><dd>${esc(actions)}</dd>`);
  return `<div class="rule" data-segment="${esc(s.id)}"><div class="order">` +
    `${order === null ? "" : `${order}.`}</div><div>${badge(s)} <code class="muted">` +
    `${esc(s.id)}</code>${s.description ? `<p class="description">${esc(s.description)}</p>` : ""}` +
    `<pre><code>when ${esc(s.when || "")}</code></pre>` +
    `${extra.length ? `<dl>${extra.join("")}</dl>` : ""}</div>` +
    `<div class="size" title="customers in it now">${fmtInt(s.size)}</div></div>`;
}

function render(data) {
  const byId = new Map(data.segments.map((s) => [s.id, s]));
  const grouped = new Set();
  const parts = [`<div class="panel-head"><h2>${esc(data.name || "Rules")}</h2>` +
    `<span class="muted" title="${esc(data.rules_version || "")}">version ` +
    `${esc(shortVersion(data.rules_version))} · ${fmtInt(data.segments.length)} segments` +
    `</span></div>`];
  if (data.status && data.status.source === "none") {
    parts.push('<p class="no">No definitions: the Query API is unavailable and no rule file ' +
      "was given (--rules).</p>");
  }
  for (const [group, ids] of Object.entries(data.groups || {})) {
    const rows = ids.map((id, i) => {
      grouped.add(id);
      return byId.has(id) ? ruleHtml(byId.get(id), i + 1) : "";
    }).join("");
    parts.push(`<div class="panel" data-group="${esc(group)}"><h2>Group ${esc(group)} ` +
      '<span class="muted">· a customer is in the first of these that fits</span></h2>' +
      `${rows}</div>`);
  }
  const others = data.segments.filter((s) => !grouped.has(s.id));
  if (others.length) {
    parts.push(`<div class="panel"><h2>Other segments <span class="muted">· each on its own` +
      `</span></h2>${others.map((s) => ruleHtml(s, null)).join("")}</div>`);
  }
  $("rules").innerHTML = parts.join("");
}
