// The console's shell: calls to the JSON endpoints, the banner, the status strip and the
// router from the location's hash to a view (views.js).
import { accountView, entryView, eventsView, searchView } from "./views.js";

const STATUS_POLL_MS = 2000;
let settings = { trace_url_template: "" };
let bannerShown = false;

// A refusal of a request the page made (unknown id, bad date): shown on the page.
export class Refusal extends Error {
  constructor(error) { super(error.message); this.reason = error.reason; this.code = error.code; }
}

function banner(message) {
  const element = document.getElementById("banner");
  bannerShown = Boolean(message);
  element.hidden = !bannerShown;
  element.textContent = message || "";
}

// GET /api/<method> with the parameters; resolves to the answer, rejects with a Refusal
// for a 4xx; a 5xx or a network failure raises the read-side banner, which the next
// answer that arrives takes down again.
export async function api(method, parameters = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") query.append(name, item);
    }
  }
  let response;
  try {
    response = await fetch(`/api/${method}?${query}`);
  } catch (error) {
    banner("The console server is not answering; retrying…");
    throw error;
  }
  const body = await response.json().catch(() => ({ error: { message: response.statusText } }));
  if (response.status >= 500) {
    banner(`The read side is unavailable: ${body.error.message} — retrying…`);
    throw new Error(body.error.message);
  }
  // The console's own token refused (expired, or without ledger:read): not the person's
  // mistake, and over once the token file is renewed.
  if (response.status === 401 || response.status === 403) {
    banner(`The query server refused the console's token: ${body.error.message} — retrying…`);
    throw new Error(body.error.message);
  }
  if (bannerShown) banner("");
  if (!response.ok) throw new Refusal(body.error);
  observe(body.as_of_position);
  return body;
}

export function traceUrl(traceId) {
  const template = settings.trace_url_template;
  return template ? template.replace("{trace_id}", encodeURIComponent(traceId)) : "";
}

let asOf = 0;
let newest = null;
function observe(position) {
  if (position !== undefined) asOf = Math.max(asOf, Number(position));
}

function renderStatus() {
  const parts = [`as of position ${asOf}`];
  if (newest) {
    const age = Math.max(0, (Date.now() - Date.parse(newest.recorded_at)) / 1000);
    parts.push(`newest event #${newest.position} recorded ${age.toFixed(1)} s ago`);
  }
  parts.push(`checked ${new Date().toISOString().slice(11, 19)}Z`);
  document.getElementById("status").textContent = parts.join(" · ");
}

// How current the read side is: the projection's as_of_position, and how long ago the
// newest event it has applied was recorded (the lag when writes are flowing).
async function pollStatus() {
  try {
    const answer = await api("ListEvents", { page_size: 1 });
    newest = answer.events[0] || null;
  } catch (error) {
    // The banner says it; the next poll tries again.
  }
  renderStatus();
  setTimeout(pollStatus, STATUS_POLL_MS);
}

let current = null;
async function route() {
  if (current && current.stop) current.stop();
  const [path, query] = (location.hash.slice(1) || "/events").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const parameters = Object.fromEntries(new URLSearchParams(query || ""));
  const view = document.getElementById("view");
  view.replaceChildren();
  if (parts[0] === "account" && parts[1]) current = accountView(view, parts[1]);
  else if (parts[0] === "entry" && parts[1]) current = entryView(view, parts[1]);
  else if (parts[0] === "search") current = searchView(view, parameters);
  else current = eventsView(view, parameters);
}

document.getElementById("goto").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = event.target.elements.id.value.trim();
  if (id) location.hash = `#/${event.submitter.value}/${encodeURIComponent(id)}`;
});

async function start() {
  try {
    settings = await (await fetch("/api/config")).json();
  } catch (error) {
    // Without the settings trace ids are shown without links.
  }
  window.addEventListener("hashchange", route);
  route();
  pollStatus();
}
start();
