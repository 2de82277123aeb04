// The dashboard's entry point: hash routing between the pages (the four of the navigation and
// a segment's page) and the status bar.
import { $, api, esc, loadIcons, segments, shortVersion } from "./util.js";
import * as overview from "./overview.js";
import * as feed from "./feed.js";
import * as customer from "./customer.js";
import * as rules from "./rules.js";
import * as segment from "./segment.js";

const pages = { overview, feed, customer, rules, segment };
let current = null;

// Called by the pages with what the server said about its sources.
export function setStatus(answer) {
  if (!answer) return;
  if (Array.isArray(answer.segments) && answer.segments.length && "group" in answer.segments[0]) {
    for (const s of answer.segments) {
      segments.set(s.id, { ...(segments.get(s.id) || {}), ...s });
    }
  }
  if (answer.name !== undefined) $("rules-name").textContent = answer.name || "";
  if (answer.rules_version !== undefined) {
    const el = $("rules-version");
    el.textContent = `rules ${shortVersion(answer.rules_version)}`;
    el.title = `Rule version in force: ${answer.rules_version || "unknown"}`;
    el.dataset.version = answer.rules_version || "";
  }
  const status = answer.status;
  if (!status) return;
  const chip = $("api-status");
  const notice = $("notice");
  if (status.api_ok) {
    chip.className = "chip ok";
    chip.textContent = "Query API";
    chip.title = status.api_url || "";
    notice.hidden = true;
  } else {
    chip.className = "chip warn";
    chip.textContent = "Redis view only";
    chip.title = status.api_error || "";
    const source = status.source === "rules-file" ? " Segment definitions come from the rule file."
      : status.source === "api-stale" ? " Segment definitions are the last ones it gave." : "";
    notice.innerHTML = `The Query API (${esc(status.api_url || "")}) is unavailable: ` +
      `${esc(status.api_error || "no answer")}. Showing what the Redis view has ` +
      `(sizes, feed, history); the why and metrics of customers need the Query API.${esc(source)}`;
    notice.hidden = false;
  }
}

function route() {
  const hash = decodeURIComponent(window.location.hash.replace(/^#\/?/, ""));
  const [name, ...rest] = hash.split("/");
  const page = pages[name] ? name : "overview";
  const param = rest.join("/");
  for (const a of document.querySelectorAll(".topbar nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  for (const key of Object.keys(pages)) {
    $(`page-${key}`).hidden = key !== page;
  }
  if (current && current !== pages[page]) current.hide();
  current = pages[page];
  current.show(param);
  document.body.dataset.page = page;
}

// The segment definitions (colours, icons, labels) that every page uses, and the status.
async function refreshDefinitions() {
  try {
    setStatus(await api("/api/overview"));
  } catch {
    // each page reports its own errors
  }
}

async function start() {
  await Promise.all([loadIcons(), refreshDefinitions()]);
  setInterval(refreshDefinitions, 30000);
  for (const page of Object.values(pages)) page.init(setStatus);
  window.addEventListener("hashchange", route);
  route();
}

start();
