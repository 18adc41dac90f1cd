// The account, entry and search pages; the event log is in events.js.
import { Refusal, api } from "./console.js";
import { instant } from "./events.js";
import {
  accountLink, balanceChart, copyButton, el, entryLink, errorBox, jsonView, money, shortEnum, time,
} from "./widgets.js";
export { eventsView } from "./events.js";

const STATEMENT_PAGE_SIZE = 20;
const CHART_LINES_MAX = 200;
const RETRY_MS = 1000;

const card = (label, value, testid) =>
  el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value", "data-testid": testid }, value));
const table = (testid, headings, rows) => el("table", { "data-testid": testid },
  el("thead", {}, el("tr", {}, headings.map((name) => el("th", {}, name)))), el("tbody", {}, rows));

// Loads with `load` until it answers; a refusal is shown, an outage retried (the banner says it).
function retrying(root, load) {
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        await load();
        return;
      } catch (error) {
        if (error instanceof Refusal) return root.replaceChildren(errorBox(error));
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  })();
  return { stop() { stopped = true; } };
}

function statement(accountId, minPosition) {
  const section = el("section", {});
  const tokens = [""];
  let index = 0;
  async function show() {
    const answer = await api("ListTransactions", {
      account_id: accountId, page_size: STATEMENT_PAGE_SIZE, page_token: tokens[index], min_position: minPosition,
    });
    if (answer.next_page_token) tokens[index + 1] = answer.next_page_token;
    const rows = answer.lines.map((line) => el("tr", { "data-testid": "line" },
      el("td", {}, time(line.recorded_at)), el("td", {}, entryLink(line.entry_id)),
      el("td", {}, shortEnum(line.kind, "ENTRY_KIND_")), el("td", {}, shortEnum(line.direction, "SIDE_")),
      el("td", { class: "num" }, money(line.amount)), el("td", { class: "num" }, money(line.balance_after, "line-balance")),
      el("td", {}, accountLink(line.counterparty_account_id)), el("td", {}, line.description)));
    const newer = el("button", { type: "button", disabled: index === 0, "data-testid": "newer-page", onclick: () => { index -= 1; show(); } }, "Newer");
    const older = el("button", { type: "button", disabled: !answer.next_page_token, "data-testid": "older-page", onclick: () => { index += 1; show(); } }, "Older");
    section.replaceChildren(el("h2", {}, "Statement"),
      table("statement", ["Recorded", "Entry", "Kind", "Side", "Amount", "Balance after", "Counterparty", "Description"], rows),
      el("div", { class: "pager" }, newer, el("span", { "data-testid": "page-number" }, `page ${index + 1}`), older));
  }
  return { section, show };
}

function balanceAt(accountId) {
  const input = el("input", { type: "datetime-local", step: "0.001", "data-testid": "at-time" });
  const output = el("div", { "data-testid": "balance-at" });
  const form = el("form", { class: "filters" }, el("label", {}, "Balance at this instant (local time)", input), el("button", {}, "Show"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await api("GetBalanceAt", { account_id: accountId, at_time: instant(input.value) });
      output.replaceChildren(el("div", { class: "cards" }, card("Balance", money(answer.balance, "at-balance")),
        card("Pending debits", money(answer.pending_debits, "at-pending-debits")),
        card("Available", money(answer.available, "at-available")),
        card("From the line at position", answer.line_position, "at-line-position")));
    } catch (error) {
      output.replaceChildren(errorBox(error));
    }
  });
  return el("section", {}, el("h2", {}, "Balance at an instant"), form, output);
}

export function accountView(root, accountId) {
  return retrying(root, async () => {
    const account = await api("GetAccount", { account_id: accountId });
    // The holds and lines are searched in indices refreshed apart from the account's
    // document: asking them for the account's position makes the page one moment's view.
    const min_position = account.as_of_position;
    const [holds, history] = await Promise.all([
      api("ListPendingTransfers", { account_id: accountId, page_size: 50, min_position }),
      api("ListTransactions", { account_id: accountId, page_size: CHART_LINES_MAX, min_position }),
    ]);
    const lines = statement(accountId, min_position);
    const points = history.lines.slice().reverse().map((line) => ({ time: Date.parse(line.recorded_at), value: Number(line.balance_after.minor_units) }));
    const holdRows = holds.pending_transfers.map((hold) => el("tr", { "data-testid": "hold" },
      el("td", {}, hold.pending_id), el("td", {}, shortEnum(hold.state, "PENDING_TRANSFER_STATE_")),
      el("td", {}, accountLink(hold.from_account_id)), el("td", {}, accountLink(hold.to_account_id)),
      el("td", { class: "num" }, money(hold.amount)), el("td", { class: "num" }, money(hold.posted)),
      el("td", {}, time(hold.placed_at)), el("td", {}, time(hold.expires_at))));
    root.replaceChildren(
      el("h1", {}, `Account ${account.owner_name} `, el("span", { class: "muted" }, account.account_id)),
      el("div", { class: "cards" },
        card("Owner", account.owner_name, "owner"), card("Status", shortEnum(account.status, "ACCOUNT_STATUS_"), "account-status"),
        card("Currency", account.currency, "currency"), card("Posted balance", money(account.balance, "balance")),
        card("Pending debits", money(account.pending_debits, "pending-debits")),
        card("Pending credits", money(account.pending_credits, "pending-credits")),
        card("Available", money(account.available, "available")),
        card("Overdraft limit", money({ currency: account.currency, minor_units: account.overdraft_limit_minor }, "overdraft-limit"))),
      el("p", {}, el("a", { href: `#/events?account_id=${encodeURIComponent(accountId)}` }, "Events of this account")),
      el("h2", {}, `Balance over time (minor units, last ${history.lines.length} lines)`), balanceChart(points),
      balanceAt(accountId),
      el("h2", {}, "Holds"), holdRows.length ? table("holds", ["Hold", "State", "From", "To", "Amount", "Posted", "Placed", "Expires"], holdRows) : el("p", { class: "muted" }, "No holds."),
      lines.section);
    await lines.show();
  });
}

export function entryView(root, entryId) {
  return retrying(root, async () => {
    const entry = await api("GetEntry", { entry_id: entryId });
    const rows = entry.lines.map((line) => el("tr", { "data-testid": "entry-line" },
      el("td", { class: "num" }, line.line_index), el("td", {}, accountLink(line.account_id)),
      el("td", { "data-testid": "side" }, shortEnum(line.side, "SIDE_")), el("td", { class: "num" }, money(line.amount, "amount")),
      el("td", { class: "num" }, money(line.balance_after, "balance-after")), el("td", { class: "num" }, line.position)));
    const events = entry.events.map((event) => {
      const payload = JSON.parse(event.payload_json || "{}");
      return el("details", { "data-testid": "entry-event" }, el("summary", {}, `#${event.position} ${event.event_type} ${time(event.recorded_at)}`),
        copyButton(JSON.stringify({ ...event, payload_json: undefined, payload }, null, 2)), jsonView(event.metadata), jsonView(payload));
    });
    root.replaceChildren(...[
      el("h1", {}, "Entry ", el("span", { class: "muted" }, entry.entry_id)),
      el("div", { class: "cards" },
        el("div", { class: "card" }, el("div", { class: "label" }, "State"), el("div", { class: "value", "data-testid": "entry-state" }, shortEnum(entry.state, "ENTRY_STATE_"))),
        el("div", { class: "card" }, el("div", { class: "label" }, "Kind"), el("div", { class: "value", "data-testid": "entry-kind" }, shortEnum(entry.kind, "ENTRY_KIND_"))),
        el("div", { class: "card" }, el("div", { class: "label" }, "Recorded"), el("div", { class: "value" }, time(entry.recorded_at)))),
      el("p", { "data-testid": "description" }, entry.description),
      entry.reversed_by_entry_id ? el("p", {}, "Reversed by ", el("span", { "data-testid": "reversed-by" }, entryLink(entry.reversed_by_entry_id))) : null,
      entry.reverses_entry_id ? el("p", {}, "Reverses ", el("span", { "data-testid": "reverses" }, entryLink(entry.reverses_entry_id))) : null,
      el("h2", {}, "Lines"), table("entry-lines", ["#", "Account", "Side", "Amount", "Balance after", "Position"], rows),
      entry.hold ? [el("h2", {}, "Hold"), jsonView(entry.hold)] : null,
      Object.keys(entry.metadata).length ? [el("h2", {}, "Metadata"), jsonView(entry.metadata)] : null,
      el("h2", {}, "Events"), events].flat().filter(Boolean));
  });
}

const STATUSES = ["", "ACCOUNT_STATUS_ACTIVE", "ACCOUNT_STATUS_FROZEN", "ACCOUNT_STATUS_CLOSED"];

export function searchView(root, parameters) {
  const form = el("form", { class: "filters" },
    el("label", {}, "Owner name", el("input", { name: "query", value: parameters.query || "", "data-testid": "search-query" })),
    el("label", {}, "Status", el("select", { name: "status", "data-testid": "search-status" },
      STATUSES.map((status) => el("option", { value: status, selected: status === (parameters.status || "") }, shortEnum(status, "ACCOUNT_STATUS_") || "any")))),
    el("label", {}, "Currency", el("input", { name: "currency", size: 4, value: parameters.currency || "", "data-testid": "search-currency" })),
    el("button", {}, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = Object.fromEntries([...new FormData(form)].filter(([, value]) => value));
    location.hash = `#/search?${new URLSearchParams(chosen)}`;
  });
  const results = el("div");
  root.append(el("h1", {}, "Accounts"), form, results);
  return retrying(results, async () => {
    const answer = await api("SearchAccounts", { ...parameters, page_size: 50 });
    const rows = answer.accounts.map((account) => el("tr", { "data-testid": "account" },
      el("td", {}, accountLink(account.account_id)), el("td", {}, account.owner_name),
      el("td", {}, shortEnum(account.status, "ACCOUNT_STATUS_")), el("td", {}, account.currency),
      el("td", { class: "num" }, money(account.balance))));
    const more = answer.next_page_token ? ` (first ${rows.length})` : "";
    results.replaceChildren(el("p", { class: "muted", "data-testid": "total-hits" }, `${answer.total_hits} account${answer.total_hits === "1" ? "" : "s"}${more}`),
      table("accounts", ["Account", "Owner", "Status", "Currency", "Balance"], rows));
  });
}
