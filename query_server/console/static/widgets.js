// Small hand-written pieces the views share: element building, money, JSON highlighting
// with links, the copy button and the balance chart (inline SVG).

export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

export const accountLink = (id) => (id ? el("a", { href: `#/account/${encodeURIComponent(id)}`, title: id }, id) : "");
export const entryLink = (id) => (id ? el("a", { href: `#/entry/${encodeURIComponent(id)}`, title: id }, id) : "");

// Minor units per major unit differ by currency (ISO 4217); most have 2 decimals.
const DECIMALS = { JPY: 0, KRW: 0, ISK: 0, CLP: 0, VND: 0, BHD: 3, KWD: 3, OMR: 3, JOD: 3, TND: 3 };

// A Money as the page shows it; the exact minor units stay on the element (data-minor).
export function money(value, testid) {
  if (!value || value.currency === undefined) return el("span", { class: "muted", "data-testid": testid }, "—");
  const minor = BigInt(value.minor_units || "0");
  const decimals = DECIMALS[value.currency] ?? 2;
  const negative = minor < 0n;
  const digits = (negative ? -minor : minor).toString().padStart(decimals + 1, "0");
  const whole = digits.slice(0, digits.length - decimals).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const text = `${negative ? "−" : ""}${whole}${decimals ? "." + digits.slice(-decimals) : ""} ${value.currency}`;
  return el("span", { "data-testid": testid, "data-minor": minor.toString(), title: `${minor} minor units` }, text);
}

export const time = (value) => (value ? new Date(value).toISOString().replace("T", " ").replace(".000Z", "Z") : "");
export const shortEnum = (value, prefix) => (value || "").replace(prefix, "").toLowerCase();

// A refusal or failure shown on the page in place of what was asked for.
export function errorBox(error) {
  const reason = error.reason ? `${error.reason}: ` : "";
  return el("p", { class: "error", "data-testid": "error" }, reason + error.message);
}

function linkFor(key, value) {
  if (typeof value !== "string" || !value) return null;
  if (key.endsWith("account_id")) return accountLink(value);
  if (key.endsWith("entry_id")) return entryLink(value);
  return null;
}

// JSON with highlighted keys, strings, numbers and literals; account and entry ids link.
export function jsonView(value) {
  const pre = el("pre", { class: "json" });
  const walk = (item, indent, key) => {
    const pad = "  ".repeat(indent);
    if (Array.isArray(item) || (item && typeof item === "object")) {
      const entries = Array.isArray(item) ? item.map((v) => [null, v]) : Object.entries(item);
      const [open, close] = Array.isArray(item) ? ["[", "]"] : ["{", "}"];
      if (!entries.length) return pre.append(open + close);
      pre.append(open + "\n");
      entries.forEach(([name, child], index) => {
        pre.append(pad + "  ");
        if (name !== null) pre.append(el("span", { class: "key" }, JSON.stringify(name)), ": ");
        walk(child, indent + 1, name ?? key);
        pre.append(index < entries.length - 1 ? ",\n" : "\n");
      });
      return pre.append(pad + close);
    }
    const kind = typeof item === "string" ? "string" : typeof item === "number" ? "number" : "literal";
    const link = linkFor(key || "", item);
    const span = el("span", { class: kind }, link ? "" : JSON.stringify(item));
    if (link) span.append('"', link, '"');
    pre.append(span);
  };
  walk(value, 0, null);
  return pre;
}

export function copyButton(text) {
  const button = el("button", { type: "button", "data-testid": "copy" }, "Copy");
  button.addEventListener("click", async (event) => {
    event.stopPropagation();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

// Balance over time as a step line through (recorded_at, balance_after) points.
export function balanceChart(points, width = 720, height = 180) {
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, "data-testid": "chart" });
  if (points.length < 1) {
    chart.append(svg("text", { x: 12, y: 24 }, "no lines yet"));
    return chart;
  }
  const margin = 44;
  const times = points.map((p) => p.time);
  const values = points.map((p) => p.value);
  const [t0, t1] = [Math.min(...times), Math.max(...times)];
  const [v0, v1] = [Math.min(0, ...values), Math.max(0, ...values)];
  const x = (t) => margin + ((t - t0) / (t1 - t0 || 1)) * (width - margin - 12);
  const y = (v) => height - 20 - ((v - v0) / (v1 - v0 || 1)) * (height - 36);
  let path = "";
  points.forEach((point, index) => {
    if (index) path += `${x(point.time)},${y(points[index - 1].value)} `;
    path += `${x(point.time)},${y(point.value)} `;
  });
  chart.append(
    svg("line", { class: "axis", x1: margin, x2: width - 12, y1: y(0), y2: y(0) }),
    svg("text", { x: 4, y: y(v1) + 4 }, String(v1)),
    svg("text", { x: 4, y: y(v0) + 4 }, String(v0)),
    svg("text", { x: margin, y: height - 4 }, time(new Date(t0).toISOString())),
    svg("polyline", { points: path.trim() }),
  );
  return chart;
}
