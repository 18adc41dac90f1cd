// The event log: newest first, filtered, live (polls for events after the newest shown),
// paged backwards, each row expanding to its metadata and payload.
import { Refusal, api, traceUrl } from "./console.js";
import { accountLink, copyButton, el, entryLink, errorBox, jsonView, time } from "./widgets.js";

const POLL_MS = 1000;
const PAGE_SIZE = 50;
const TAIL_PAGE_SIZE = 200;
// Rows the page keeps; past that the oldest go (and "Older events" brings them back), so a
// busy ledger cannot grow the page without bound.
const ROWS_MAX = 1000;
// The filters, as the form names them (= ListEventsRequest's fields).
const FILTERS = [
  ["event_types", "Event type", "text"], ["account_id", "Account", "text"],
  ["entry_id", "Entry", "text"], ["request_id", "Request id", "text"],
  ["principal", "Principal", "text"], ["start_time", "From", "datetime-local"],
  ["end_time", "To", "datetime-local"], ["text", "Text", "search"],
];

// datetime-local values are local times; the API takes RFC 3339 instants. What is no
// date goes to the server as typed, so that its refusal names the parameter.
export function instant(value) {
  const date = new Date(value);
  return !value || Number.isNaN(date.getTime()) ? value : date.toISOString();
}

function requestOf(filters) {
  const request = {};
  for (const [name] of FILTERS) {
    const value = (filters[name] || "").trim();
    if (!value) continue;
    if (name === "event_types") request[name] = value.split(/[\s,]+/).filter(Boolean);
    else if (name.endsWith("_time")) request[name] = instant(value);
    else request[name] = value;
  }
  return request;
}

function payloadOf(event) {
  try { return JSON.parse(event.payload_json || "{}"); } catch (error) { return {}; }
}

function entryOf(payload) {
  const line = payload.line || payload.hold || payload;
  return line.entry_id || "";
}

function traceCell(metadata) {
  const parts = (metadata.traceparent || "").split("-");
  if (parts.length < 3) return "";
  const url = traceUrl(parts[1]);
  const short = parts[1].slice(0, 12) + "…";
  return url ? el("a", { href: url, target: "_blank", rel: "noopener", "data-testid": "trace" }, short) : short;
}

function row(event, fresh) {
  const payload = payloadOf(event);
  const metadata = event.metadata || {};
  const tr = el("tr", { class: fresh ? "event fresh" : "event", "data-testid": "event", "data-position": event.position },
    el("td", { class: "num" }, event.position), el("td", {}, time(event.recorded_at)),
    el("td", { "data-testid": "event-type" }, event.event_type), el("td", {}, accountLink(event.stream_id)),
    el("td", {}, entryLink(entryOf(payload))), el("td", {}, metadata.principal || ""),
    el("td", {}, el("span", { class: "id", title: metadata.request_id || "" }, metadata.request_id || "")),
    el("td", {}, traceCell(metadata)));
  tr.addEventListener("click", (click) => {
    if (click.target.closest("a")) return;
    const open = tr.nextElementSibling;
    if (open && open.classList.contains("open")) return open.remove();
    const text = JSON.stringify({ ...event, payload_json: undefined, payload }, null, 2);
    tr.after(el("tr", { class: "open" }, el("td", { colspan: 8, class: "details", "data-testid": "details" },
      copyButton(text), el("h2", {}, "Metadata"), jsonView(metadata),
      el("h2", {}, "Payload"), jsonView(payload))));
  });
  return tr;
}

export function eventsView(root, parameters) {
  const form = el("form", { class: "filters", "data-testid": "filters" },
    FILTERS.map(([name, label, type]) => el("label", {}, label,
      el("input", { name, type, value: parameters[name] || "", "data-testid": `filter-${name}` }))),
    el("button", { type: "submit" }, "Apply"), el("a", { href: "#/events" }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = Object.fromEntries([...new FormData(form)].filter(([, value]) => value));
    location.hash = `#/events?${new URLSearchParams(chosen)}`;
  });
  const body = el("tbody");
  const message = el("div");
  const older = el("button", { type: "button", hidden: true, "data-testid": "older" }, "Older events");
  root.append(el("h1", {}, "Event log"), form, message, el("table", { "data-testid": "events" },
    el("thead", {}, el("tr", {}, ["Position", "Recorded", "Type", "Account", "Entry", "Principal", "Request", "Trace"]
      .map((name) => el("th", {}, name)))), body), el("div", { class: "pager" }, older));

  const request = requestOf(parameters);
  let newest = 0;
  // The lowest position shown: "Older events" lists below it (to_position), which stays
  // right however many rows the live tail added or the trim removed.
  let oldest = null;
  let timer = null;
  let stopped = false;

  async function loadPage() {
    try {
      const below = oldest === null ? {} : { to_position: oldest - 1 };
      const answer = await api("ListEvents", { ...request, ...below, page_size: PAGE_SIZE });
      message.replaceChildren();
      for (const event of answer.events) {
        body.append(row(event, false));
        newest = Math.max(newest, Number(event.position));
        oldest = Math.min(oldest ?? Infinity, Number(event.position));
      }
      if (!answer.events.length && !body.children.length) newest = Number(answer.as_of_position);
      older.hidden = !answer.next_page_token || oldest <= 1;
      return "loaded";
    } catch (error) {
      if (!(error instanceof Refusal)) return "unavailable";
      message.replaceChildren(errorBox(error));
      return "refused";
    }
  }

  // Oldest first from after the newest shown, each new one put on top.
  async function poll() {
    if (stopped) return;
    try {
      const answer = await api("ListEvents", { ...request, from_position: newest + 1, order: "EVENT_ORDER_ASCENDING", page_size: TAIL_PAGE_SIZE });
      for (const event of answer.events) {
        body.prepend(row(event, true));
        newest = Math.max(newest, Number(event.position));
        oldest = oldest ?? Number(event.position);
      }
      trim();
      // A full answer means more are waiting: ask again at once to catch up.
      if (!stopped && answer.events.length === TAIL_PAGE_SIZE) return void (timer = setTimeout(poll, 0));
    } catch (error) {
      // The banner says it; the next poll tries again.
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function trim() {
    const rows = body.querySelectorAll("tr.event");
    if (rows.length <= ROWS_MAX) return;
    for (const extra of [...rows].slice(ROWS_MAX)) {
      if (extra.nextElementSibling?.classList.contains("open")) extra.nextElementSibling.remove();
      extra.remove();
    }
    oldest = Number(rows[ROWS_MAX - 1].dataset.position);
    older.hidden = oldest <= 1;
  }

  older.addEventListener("click", loadPage);
  (async () => {
    // Until the first page arrives (the read side may be down), keep trying; a refused
    // filter stays refused, so its message stays and nothing polls.
    let outcome = await loadPage();
    while (!stopped && outcome === "unavailable") {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      outcome = await loadPage();
    }
    if (!stopped && outcome === "loaded") poll();
  })();
  return { stop() { stopped = true; clearTimeout(timer); } };
}
