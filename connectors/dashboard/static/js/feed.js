// Live feed: the latest segment changes over Server-Sent Events, newest on top. Rendering is
// batched per animation frame and the list is capped; pause keeps the list still (new changes
// are counted and shown on resume); the filter keeps the changes of one segment.
import {
  $, api, badge, causeText, esc, fmtDateTime, fmtInt, frameThrottle, segInfo, segLabel, segments,
} from "./util.js";

const MAX_ROWS = 200; // rows in the list
const KEEP = 1000; // recent changes kept to refill the list when the filter changes

let setStatus = () => {};
let source = null;
let paused = false;
let filter = "";
let recent = []; // newest last, at most KEEP
let pending = []; // arrived, not rendered yet (oldest first)
let missed = 0; // arrived while paused
const seen = new Set();
let arrivals = []; // timestamps (ms) of recent arrivals, for the rate

export function init(statusFn) {
  setStatus = statusFn;
  $("feed-pause").addEventListener("click", () => setPaused(!paused));
  $("feed-filter").addEventListener("change", (e) => {
    const value = e.target.value;
    window.location.hash = value ? `#/feed/${encodeURIComponent(value)}` : "#/feed";
  });
  setInterval(updateRate, 1000);
}

export async function show(param) {
  filter = param || "";
  await fillFilter();
  $("feed-filter").value = filter;
  rebuild();
  connect();
}

export function hide() {
  if (source) source.close();
  source = null;
}

async function fillFilter() {
  if (segments.size === 0) {
    try {
      setStatus(await api("/api/overview"));
    } catch {
      // the list still works without the definitions
    }
  }
  const select = $("feed-filter");
  const ids = [...segments.keys()];
  if (filter && !segments.has(filter)) ids.push(filter);
  const key = ids.join(",");
  if (select.dataset.ids === key) return;
  select.dataset.ids = key;
  select.innerHTML = '<option value="">all segments</option>' + ids.map((id) =>
    `<option value="${esc(id)}">${esc(segLabel(segInfo(id)))}</option>`).join("");
}

function connect() {
  if (source) return;
  $("feed-state").textContent = "connecting…";
  source = new EventSource("/api/feed/stream");
  source.addEventListener("open", () => { $("feed-state").textContent = "live"; });
  source.addEventListener("error", () => { $("feed-state").textContent = "reconnecting…"; });
  source.addEventListener("snapshot", (e) => receive(JSON.parse(e.data).changes, false));
  source.addEventListener("changes", (e) => receive(JSON.parse(e.data).changes, true));
  source.addEventListener("status", (e) => {
    const status = JSON.parse(e.data);
    if (status.gap) pending.push({ gap: true });
    if (status.redis === "unavailable") $("feed-state").textContent = "Redis unavailable";
    if (status.redis === "ok") $("feed-state").textContent = "live";
    schedule();
  });
}

function receive(changes, live) {
  const now = Date.now();
  for (const c of changes) {
    const key = `${c.customer_id}\u0000${c.seq}`;
    if (seen.has(key)) continue;
    seen.add(key);
    recent.push(c);
    pending.push(c);
    if (live) arrivals.push(now);
  }
  if (seen.size > 4 * KEEP) { // forget old keys, keep those still listed
    seen.clear();
    for (const c of recent) seen.add(`${c.customer_id}\u0000${c.seq}`);
  }
  if (recent.length > KEEP) recent = recent.slice(-KEEP);
  if (pending.length > MAX_ROWS) {
    if (paused) missed += pending.length - MAX_ROWS;
    pending = pending.slice(-MAX_ROWS);
  }
  schedule();
}

function matches(c) {
  return !filter || c.entered.includes(filter) || c.exited.includes(filter);
}

function rowHtml(c, fresh) {
  if (c.gap) {
    return '<li class="gap-row"><span class="gap">… more changes than can be shown …</span></li>';
  }
  const entered = c.entered.map((id) => badge(segInfo(id), "entered")).join("");
  const exited = c.exited.map((id) => badge(segInfo(id), "exited")).join("");
  const cause = c.cause || {};
  return `<li class="${fresh ? "fresh" : ""}" data-customer="${esc(c.customer_id)}" ` +
    `data-seq="${esc(c.seq)}"><span class="time" title="${esc(c.at)}">` +
    `${esc(fmtDateTime(c.at))}</span>` +
    `<a class="cid" href="#/customer/${encodeURIComponent(c.customer_id)}">` +
    `${esc(c.customer_id)}</a><span class="changes">${entered}${exited}</span>` +
    `<span class="cause" data-kind="${esc(cause.kind || "")}" ` +
    `title="${esc(cause.event_id || "")}">${esc(causeText(cause))}</span></li>`;
}

const schedule = frameThrottle(() => {
  if (paused) {
    const n = missed + pending.filter((c) => !c.gap && matches(c)).length;
    $("feed-state").textContent = n ? `paused: ${fmtInt(n)} new` : "paused";
    return;
  }
  const batch = pending.filter((c) => c.gap || matches(c));
  pending = [];
  missed = 0;
  if (!batch.length) return;
  const list = $("feed-list");
  const fresh = batch.length < 40;
  const html = batch.slice(-MAX_ROWS).reverse().map((c) => rowHtml(c, fresh)).join("");
  list.insertAdjacentHTML("afterbegin", html);
  while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
});

function rebuild() {
  pending = [];
  missed = 0;
  const rows = recent.filter(matches).slice(-MAX_ROWS).reverse();
  $("feed-list").innerHTML = rows.map((c) => rowHtml(c, false)).join("");
}

function setPaused(value) {
  paused = value;
  $("feed-pause").textContent = paused ? "Resume" : "Pause";
  $("feed-pause").setAttribute("aria-pressed", String(paused));
  if (!paused) {
    $("feed-state").textContent = source ? "live" : "";
    if (missed) {
      rebuild(); // more arrived than the list holds: start again from the latest
    }
  }
  schedule();
}

function updateRate() {
  const now = Date.now();
  arrivals = arrivals.filter((t) => now - t < 5000);
  $("feed-rate").textContent = `${(arrivals.length / 5).toFixed(1)} changes/s`;
}
