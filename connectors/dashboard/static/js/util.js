// Shared helpers: escaping, colours, icons, number and time formats, the JSON API.

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

export function $(id) {
  return document.getElementById(id);
}

// ---------------------------------------------------------------- colours

const HEX = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i;

// The segment's own colour, or a stable one derived from its id when the rules set none.
export function segColor(seg) {
  if (seg && typeof seg.color === "string" && HEX.test(seg.color.trim())) {
    return seg.color.trim();
  }
  const id = (seg && seg.id) || "";
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 45% 55%)`;
}

function rgb(color) {
  const m = HEX.exec(color);
  if (!m) return null;
  let hex = m[1];
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join("");
  return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

// Black or white, whichever reads better on `color`.
export function inkOn(color) {
  const c = rgb(color);
  if (!c) return "#fff";
  const [r, g, b] = c.map((v) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return lum > 0.4 ? "#111" : "#fff";
}

// ---------------------------------------------------------------- icons (vendored Lucide)

let icons = {};
export async function loadIcons() {
  try {
    const resp = await fetch("/static/vendor/icons.json");
    if (resp.ok) icons = await resp.json();
  } catch {
    icons = {};
  }
}

export function iconSvg(name) {
  let inner = name ? icons[name] : undefined;
  if (typeof inner === "string" && inner.startsWith("=")) inner = icons[inner.slice(1)];
  if (typeof inner !== "string") inner = '<circle cx="12" cy="12" r="6"/>';
  return `<svg class="icon" viewBox="0 0 24 24" fill="none" stroke="currentColor" ` +
    `stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">` +
    `${inner}</svg>`;
}

// ---------------------------------------------------------------- segment look

// Definitions of the segments by id, kept by main.js from the overview / rules answers.
export const segments = new Map();

export function segInfo(id, extra) {
  return { id, ...(segments.get(id) || {}), ...(extra || {}) };
}

export function segLabel(seg) {
  return seg.label || seg.id;
}

// A badge: the segment's icon and label in its colour; `kind` is "entered" or "exited"
// (exited: outlined and struck through) or "" for a held segment.
export function badge(seg, kind = "") {
  const color = segColor(seg);
  const sign = kind === "entered" ? '<span class="sign">+</span>'
    : kind === "exited" ? '<span class="sign">−</span>' : "";
  const style = kind === "exited"
    ? `border-color:${color};color:${color}`
    : `background:${color};color:${inkOn(color)};border-color:${color}`;
  return `<span class="badge ${kind}" data-segment="${esc(seg.id)}" data-kind="${kind}" ` +
    `title="${esc(seg.id)}" style="${style}">${sign}${iconSvg(seg.icon)}` +
    `<span class="txt">${esc(segLabel(seg))}</span></span>`;
}

// ---------------------------------------------------------------- formats

const intFmt = new Intl.NumberFormat("en-US");
export function fmtInt(n) {
  return intFmt.format(n ?? 0);
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return intFmt.format(v);
    return Number(v.toPrecision(6)).toLocaleString("en-US", { maximumFractionDigits: 4 });
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return `[${v.map(fmtValue).join(", ")}]`;
  // a model function's inputs in `why` (e.g. "p_alive() inputs": {model, x, t_x, T}): key: value
  if (typeof v === "object") {
    return Object.entries(v).map(([k, x]) => `${k}: ${fmtValue(x)}`).join(", ");
  }
  return String(v);
}

// Every date and time on the dashboard has one format: 2026-11-30 10:15:03, 24-hour, in the
// browser's time zone (the title of a shown time holds the value as sent, in UTC). Accepts an
// ISO string, epoch milliseconds or a Date; anything else is returned as text.
const pad = (n) => String(n).padStart(2, "0");

function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDate(value) {
  const d = toDate(value);
  if (!d) return String(value ?? "");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function fmtDateTime(value) {
  const d = toDate(value);
  if (!d) return String(value ?? "");
  return `${fmtDate(d)} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// Tick labels of a uPlot time axis (splits in epoch seconds) in the same format, shortened:
// HH:MM, with the date (2026-11-30) above the first tick and wherever the day changes.
export function axisTimes(u, splits) {
  let day = "";
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const date = fmtDate(d);
    const label = date === day ? time : `${time}\n${date}`;
    day = date;
    return label;
  });
}

export function shortVersion(v) {
  if (!v) return "?";
  return v.startsWith("sha256:") ? `sha256:${v.slice(7, 19)}` : v;
}

export function causeText(cause) {
  if (!cause) return "";
  if (cause.kind === "event") return cause.event_type || "event";
  if (cause.kind === "time") return "time passed";
  if (cause.kind === "rules") return "rules changed";
  return cause.kind || "";
}

// ---------------------------------------------------------------- API

export class HttpError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  if (resp.status === 401) {
    window.location.reload(); // the server answers the page with its sign-in form
    throw new HttpError(401, null);
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) throw new HttpError(resp.status, body);
  return body;
}

// Run `fn` at most once per animation frame, with the latest arguments.
export function frameThrottle(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fn();
    });
  };
}
