// The viewer: a store of what arrived and its views (trace list, waterfall, logs, metrics,
// the vLLM request journals). Live, the store follows the collector's feed (a long poll);
// in a report it is filled once from the data embedded in the page. Everything telemetry
// says is written with textContent, never parsed as HTML.
"use strict";

const BOOT = JSON.parse(document.getElementById("boot").textContent);
const BASE = location.pathname.replace(/\/ui\/?$/, ""); // the control prefix, "/mocksup"
const SPAN_KINDS = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"];
const STATUS = ["UNSET", "OK", "ERROR"];
const SEVERITIES = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
const ROW = 26; // px: the height of a list row (the lists draw only the rows in view)

// -- small helpers ----------------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "className" || key === "href" || key === "title") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

function fmtDur(ns) {
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function msOf(ns) {
  return Number(ns / 1000000n);
}

function fmtTime(ns) {
  if (!ns) return "-";
  const d = new Date(msOf(ns));
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtDate(ns) {
  return ns ? new Date(msOf(ns)).toISOString() : "-";
}

function fmtValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "object" && "bytes" in value) return `base64:${value.bytes}`;
  if (typeof value === "object" && "kvlist" in value) {
    return JSON.stringify(Object.fromEntries(value.kvlist.map(([k, v]) => [k, plain(v)])));
  }
  if (Array.isArray(value)) return JSON.stringify(value.map(plain));
  return String(value);
}

function plain(value) {
  if (value && typeof value === "object" && "kvlist" in value) {
    return Object.fromEntries(value.kvlist.map(([k, v]) => [k, plain(v)]));
  }
  return Array.isArray(value) ? value.map(plain) : value;
}

function hue(text) {
  let hash = 7;
  for (let i = 0; i < text.length; i++) hash = (hash * 31 + text.charCodeAt(i)) >>> 0;
  return hash % 360;
}

function colour(service) {
  return `hsl(${hue(service)}, 55%, 48%)`;
}

function severityName(n) {
  return n ? SEVERITIES[Math.min(5, Math.floor((n - 1) / 4))] : "UNSPECIFIED";
}

// "key=value" (the value as shown, or as JSON) or "key" alone: a filter on attributes.
function parseAttr(text) {
  const trimmed = text.trim();
  if (!trimmed) return null;
  const eq = trimmed.indexOf("=");
  return eq < 0 ? { key: trimmed } : { key: trimmed.slice(0, eq), value: trimmed.slice(eq + 1) };
}

function attrMatches(attrs, want) {
  return attrs.some(
    ([key, value]) =>
      key === want.key &&
      (want.value === undefined ||
        fmtValue(value) === want.value ||
        JSON.stringify(plain(value)) === want.value),
  );
}

function timeInput(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : BigInt(ms) * 1000000n;
}

function spanHref(traceId, spanId) {
  return `#/trace/${traceId}` + (spanId ? `/${spanId}` : "");
}

// -- the store --------------------------------------------------------------------------------

class Store {
  constructor() {
    this.reset();
    this.journals = new Map(); // mock name -> entries (not part of the collector's data)
  }

  reset() {
    this.traces = new Map();
    this.spanCount = 0;
    this.logs = [];
    this.logsBySpan = new Map();
    this.metrics = new Map();
    this.services = new Set();
    this.llmSpans = [];
    this.generation = null;
    this.version = (this.version || 0) + 1;
  }

  add(page) {
    for (const s of page.traces) this.addSpan(s);
    for (const l of page.logs) this.addLog(l);
    for (const m of page.metrics) this.addMetric(m);
    if (page.traces.length || page.logs.length || page.metrics.length) this.version++;
  }

  addSpan(s) {
    let t = this.traces.get(s.traceId);
    if (!t) {
      t = { id: s.traceId, spans: [], start: s.start, end: s.end, root: null, errors: 0, services: new Set() };
      this.traces.set(s.traceId, t);
    }
    t.spans.push(s);
    if (s.start < t.start) t.start = s.start;
    if (s.end > t.end) t.end = s.end;
    if (!s.parentId && (!t.root || s.start < t.root.start)) t.root = s;
    if (s.status.code === 2) t.errors++;
    t.services.add(s.res.service);
    this.services.add(s.res.service);
    if (s.name === "llm_request") this.llmSpans.push(s);
    this.spanCount++;
  }

  addLog(l) {
    this.logs.push(l);
    this.services.add(l.res.service);
    if (l.spanId) {
      const key = l.traceId + "/" + l.spanId;
      if (!this.logsBySpan.has(key)) this.logsBySpan.set(key, []);
      this.logsBySpan.get(key).push(l);
    }
  }

  addMetric(m) {
    const key = [m.res.service, m.scope.name, m.name, m.type].join("\u0000");
    let entry = this.metrics.get(key);
    if (!entry) {
      entry = { ...m, service: m.res.service, points: [] };
      this.metrics.set(key, entry);
    }
    for (const p of m.points) entry.points.push(p);
    this.services.add(m.res.service);
  }

  span(traceId, spanId) {
    const t = this.traces.get(traceId);
    return t ? t.spans.find((s) => s.spanId === spanId) : undefined;
  }
}

const store = new Store();

// -- a list that draws only the rows in view --------------------------------------------------

class VList {
  constructor(box, draw) {
    this.box = box;
    this.drawRow = draw;
    this.items = [];
    this.spacer = h("div", { className: "spacer" });
    box.append(this.spacer);
    box.addEventListener("scroll", () => this.schedule());
    this.pending = false;
  }

  set(items) {
    this.items = items;
    this.spacer.style.height = `${items.length * ROW}px`;
    this.draw();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const top = this.box.scrollTop;
    const height = this.box.clientHeight || 800;
    const first = Math.max(0, Math.floor(top / ROW) - 10);
    const last = Math.min(this.items.length, Math.ceil((top + height) / ROW) + 10);
    const rows = [];
    for (let i = first; i < last; i++) {
      const row = this.drawRow(this.items[i], i);
      row.style.top = `${i * ROW}px`;
      rows.push(row);
    }
    this.spacer.replaceChildren(...rows);
  }
}

// -- the trace list ---------------------------------------------------------------------------

function formValues(form) {
  const values = {};
  for (const field of form.elements) {
    if (field.name) values[field.name] = field.type === "checkbox" ? field.checked : field.value;
  }
  return values;
}

function traceFilter() {
  const v = formValues(document.getElementById("trace-filters"));
  return {
    service: v.service,
    name: v.name.trim().toLowerCase(),
    attr: parseAttr(v.attr),
    from: timeInput(v.from),
    to: timeInput(v.to),
    errors: v.errors,
  };
}

function traceMatches(t, f) {
  if (f.service && !t.services.has(f.service)) return false;
  if (f.errors && !t.errors) return false;
  if (f.from !== null && t.start < f.from) return false;
  if (f.to !== null && t.start > f.to) return false;
  if (f.name && !t.spans.some((s) => s.name.toLowerCase().includes(f.name))) return false;
  if (f.attr && !t.spans.some((s) => attrMatches(s.attrs, f.attr) || attrMatches(s.res.attrs, f.attr))) {
    return false;
  }
  return true;
}

function firstSpan(t) {
  if (t.root) return t.root;
  let first = t.spans[0];
  for (const s of t.spans) if (s.start < first.start) first = s;
  return first;
}

function drawTraceRow(t) {
  const top = firstSpan(t);
  return h(
    "a",
    { className: "row trace-row", href: spanHref(t.id), data: { traceId: t.id } },
    h("span", { className: "cell time", text: fmtTime(t.start), title: fmtDate(t.start) }),
    h(
      "span",
      { className: "cell name" },
      h("span", { className: "root-name", text: top.name }),
      t.root ? null : h("span", { className: "badge orphan", text: "no root", title: "the root span did not arrive" }),
      t.errors ? h("span", { className: "badge error error-mark", text: `${t.errors} error${t.errors > 1 ? "s" : ""}` }) : null,
    ),
    h(
      "span",
      { className: "cell service" },
      h("span", { className: "dot", style: { background: colour(top.res.service) } }),
      top.res.service,
      t.services.size > 1 ? ` +${t.services.size - 1}` : "",
    ),
    h("span", { className: "cell num duration", text: fmtDur(Number(t.end - t.start)) }),
    h("span", { className: "cell num span-count", text: String(t.spans.length) }),
  );
}

let traceList = null;

function renderTraceList() {
  const started = performance.now();
  traceList ??= new VList(document.getElementById("trace-list"), drawTraceRow);
  fillServices(document.querySelector("#trace-filters [name=service]"));
  const filter = traceFilter();
  const shown = [];
  for (const t of store.traces.values()) if (traceMatches(t, filter)) shown.push(t);
  shown.sort((a, b) => (a.start < b.start ? 1 : a.start > b.start ? -1 : 0));
  traceList.set(shown);
  const total = store.traces.size;
  document.getElementById("trace-count").textContent =
    shown.length === total ? plural(total, "trace") : `${shown.length} of ${plural(total, "trace")}`;
  timings.list = performance.now() - started;
  timings.listDrawnAt = performance.now();
}

function fillServices(select) {
  const known = new Set([...select.options].map((o) => o.value));
  for (const service of [...store.services].sort()) {
    if (!known.has(service)) select.append(h("option", { value: service, text: service }));
  }
}

// -- the waterfall ----------------------------------------------------------------------------

const collapsed = new Set();

// The spans in tree order: [{span, depth, orphan, children}], parents before their children,
// siblings by start time. Spans whose parent never arrived start trees of their own.
function layout(t) {
  const byId = new Map(t.spans.map((s) => [s.spanId, s]));
  const children = new Map();
  const roots = [];
  for (const s of t.spans) {
    if (s.parentId && s.parentId !== s.spanId && byId.has(s.parentId)) {
      if (!children.has(s.parentId)) children.set(s.parentId, []);
      children.get(s.parentId).push(s);
    } else roots.push(s);
  }
  const byStart = (a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0);
  roots.sort(byStart);
  for (const list of children.values()) list.sort(byStart);
  const rows = [];
  const seen = new Set();
  const stack = roots.map((s) => [s, 0]).reverse();
  while (stack.length) {
    const [s, depth] = stack.pop();
    if (seen.has(s)) continue;
    seen.add(s);
    const kids = children.get(s.spanId) || [];
    rows.push({ span: s, depth, orphan: Boolean(s.parentId) && !byId.has(s.parentId), children: kids.length });
    if (collapsed.has(s.spanId)) continue;
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  // A parent cycle leaves spans unreached: show them rather than lose them.
  for (const s of t.spans) {
    if (!seen.has(s) && !isHidden(s, byId)) rows.push({ span: s, depth: 0, orphan: false, cycle: true, children: 0 });
  }
  return rows;
}

function isHidden(s, byId) {
  for (let p = byId.get(s.parentId), hops = 0; p && hops < 10000; p = byId.get(p.parentId), hops++) {
    if (collapsed.has(p.spanId)) return true;
  }
  return false;
}

function renderTrace(traceId, spanId) {
  const started = performance.now();
  const head = document.getElementById("trace-head");
  const box = document.getElementById("waterfall");
  const t = store.traces.get(traceId);
  if (!t) {
    head.replaceChildren(h("p", { className: "empty", text: `Trace ${traceId} has not arrived (yet).` }));
    box.replaceChildren();
    document.getElementById("span-detail").replaceChildren();
    return;
  }
  const total = Math.max(1, Number(t.end - t.start));
  head.replaceChildren(
    h("a", { href: "#/traces", className: "back", text: "← traces" }),
    h("h2", { text: firstSpan(t).name }),
    h("span", { className: "meta", text: `trace ${t.id} · ${fmtDate(t.start)} · ${fmtDur(total)} · ${t.spans.length} spans` }),
    h("span", { className: "legend" }, [...t.services].sort().map((service) =>
      h("span", { className: "legend-item" }, h("span", { className: "dot", style: { background: colour(service) } }), service))),
  );
  const ticks = h("div", { className: "wf-row axis" }, h("span", { className: "wf-name", text: "span" }),
    h("span", { className: "wf-lane" }, [0, 0.25, 0.5, 0.75, 1].map((k) =>
      h("span", { className: "tick", style: { left: `${k * 100}%` }, text: fmtDur(Math.round(total * k)) }))));
  const rows = layout(t).map((row) => drawSpanRow(t, row, total, spanId));
  box.replaceChildren(ticks, ...rows);
  renderSpanDetail(t, spanId ? t.spans.find((s) => s.spanId === spanId) : null);
  timings.trace = performance.now() - started;
}

function drawSpanRow(t, row, total, selected) {
  const s = row.span;
  const offset = Number(s.start - t.start);
  const logs = store.logsBySpan.get(t.id + "/" + s.spanId);
  const toggle = row.children
    ? h("button", {
        className: "caret", type: "button", text: collapsed.has(s.spanId) ? "▸" : "▾",
        title: collapsed.has(s.spanId) ? "show its children" : "hide its children",
        onclick: (event) => {
          event.preventDefault();
          collapsed.has(s.spanId) ? collapsed.delete(s.spanId) : collapsed.add(s.spanId);
          render();
        },
      })
    : h("span", { className: "caret" });
  return h(
    "a",
    {
      className: "wf-row span-row" + (s.spanId === selected ? " selected" : "") + (s.status.code === 2 ? " error" : ""),
      href: spanHref(t.id, s.spanId),
      data: { spanId: s.spanId, depth: String(row.depth), durationNs: String(s.dur), offsetNs: String(offset) },
    },
    h(
      "span",
      { className: "wf-name", style: { paddingLeft: `${row.depth * 14 + 4}px` } },
      toggle,
      h("span", { className: "dot", style: { background: colour(s.res.service) } }),
      h("span", { className: "span-name", text: s.name }),
      s.status.code === 2 ? h("span", { className: "badge error error-mark", text: "error", title: s.status.message }) : null,
      row.orphan ? h("span", { className: "badge orphan orphan-mark", text: "orphan", title: `parent ${s.parentId} did not arrive` }) : null,
      row.cycle ? h("span", { className: "badge orphan", text: "cycle", title: "its parents form a cycle" }) : null,
      logs ? h("span", { className: "badge logs", text: `${logs.length} log${logs.length > 1 ? "s" : ""}` }) : null,
    ),
    h(
      "span",
      { className: "wf-lane" },
      h("span", {
        className: "bar",
        style: { left: `${(offset / total) * 100}%`, width: `${(s.dur / total) * 100}%`, background: colour(s.res.service) },
      }),
      h("span", { className: "bar-label", style: { left: `${Math.min(92, ((offset + s.dur) / total) * 100)}%` }, text: fmtDur(s.dur) }),
    ),
  );
}

function kvTable(pairs, className = "kv") {
  if (!pairs.length) return h("p", { className: "none", text: "none" });
  return h("table", { className }, pairs.map(([key, value]) =>
    h("tr", {}, h("th", { text: key }), h("td", { text: fmtValue(value) }))));
}

function section(title, ...body) {
  return h("section", { className: "detail-section" }, h("h4", { text: title }), ...body);
}

function renderSpanDetail(t, s) {
  const aside = document.getElementById("span-detail");
  if (!s) {
    aside.replaceChildren(h("p", { className: "hint", text: "Select a span to see its attributes, resource, scope, events, links, status and logs." }));
    return;
  }
  const parent = s.parentId ? t.spans.find((p) => p.spanId === s.parentId) : null;
  const logs = store.logsBySpan.get(t.id + "/" + s.spanId) || [];
  const offset = (time) => `+${fmtDur(Number(time - t.start))}`;
  aside.replaceChildren(
    h("h3", { text: s.name }),
    kvTable([
      ["span id", s.spanId],
      ["parent", s.parentId ? (parent ? `${parent.name} (${s.parentId})` : `${s.parentId} (did not arrive)`) : "none (root)"],
      ["kind", SPAN_KINDS[s.kind] || String(s.kind)],
      ["status", (STATUS[s.status.code] || String(s.status.code)) + (s.status.message ? `: ${s.status.message}` : "")],
      ["service", s.res.service],
      ["start", `${fmtDate(s.start)} (${offset(s.start)})`],
      ["duration", fmtDur(s.dur)],
      ...(s.traceState ? [["trace state", s.traceState]] : []),
      ...(s.dropped.attributes || s.dropped.events || s.dropped.links
        ? [["dropped", `${s.dropped.attributes} attributes, ${s.dropped.events} events, ${s.dropped.links} links`]]
        : []),
    ], "kv span-fields"),
    section("Attributes", kvTable(s.attrs, "kv span-attributes")),
    section(`Logs (${logs.length})`, logs.length
      ? h("ul", { className: "span-logs" }, logs.map((l) => h("li", { className: "span-log" },
          h("span", { className: "when", text: offset(l.time) }),
          h("span", { className: `sev sev-${severityName(l.severity)}`, text: l.severityText || severityName(l.severity) }),
          h("span", { className: "body", text: fmtValue(l.body) }))))
      : h("p", { className: "none", text: "none" })),
    section(`Events (${s.events.length})`, ...s.events.map((e) =>
      h("div", { className: "event" }, h("div", { className: "event-name", text: `${offset(e.time)} ${e.name}` }), kvTable(e.attrs)))),
    section(`Links (${s.links.length})`, ...s.links.map((l) =>
      h("div", { className: "link" },
        store.traces.has(l.traceId)
          ? h("a", { href: spanHref(l.traceId, l.spanId), text: `${l.traceId} / ${l.spanId}` })
          : h("span", { text: `${l.traceId} / ${l.spanId} (not here)` }),
        kvTable(l.attrs)))),
    section("Resource", kvTable(s.res.attrs, "kv resource")),
    section("Scope", kvTable([["name", s.scope.name], ["version", s.scope.version], ...s.scope.attrs], "kv scope")),
  );
}

// -- logs -------------------------------------------------------------------------------------

let logList = null;
let selectedLog = null;

function logFilter() {
  const v = formValues(document.getElementById("log-filters"));
  return { text: v.text.trim().toLowerCase(), severity: Number(v.severity || 0), service: v.service, attr: parseAttr(v.attr) };
}

function logMatches(l, f) {
  if (f.severity && l.severity < f.severity) return false;
  if (f.service && l.res.service !== f.service) return false;
  if (f.attr && !attrMatches(l.attrs, f.attr)) return false;
  if (f.text) {
    const haystack = [fmtValue(l.body), l.eventName, l.severityText, ...l.attrs.map(([k, v]) => `${k}=${fmtValue(v)}`)];
    if (!haystack.some((text) => text.toLowerCase().includes(f.text))) return false;
  }
  return true;
}

function drawLogRow(l) {
  const sev = severityName(l.severity);
  const span = l.spanId ? store.span(l.traceId, l.spanId) : null;
  return h(
    "div",
    { className: "row log-row" + (l === selectedLog ? " selected" : ""), onclick: () => { selectedLog = l; render(); } },
    h("span", { className: "cell time", text: fmtTime(l.time), title: fmtDate(l.time) }),
    h("span", { className: `cell sev sev-${sev}`, text: l.severityText || sev }),
    h("span", { className: "cell service" }, h("span", { className: "dot", style: { background: colour(l.res.service) } }), l.res.service),
    h("span", { className: "cell body log-body", text: fmtValue(l.body) || l.eventName }),
    h("span", { className: "cell" }, l.spanId
      ? h("a", { className: "span-link", href: spanHref(l.traceId, l.spanId), text: span ? span.name : l.spanId.slice(0, 8) + "…",
          title: `trace ${l.traceId} span ${l.spanId}`, onclick: (event) => event.stopPropagation() })
      : null),
  );
}

function renderLogs() {
  logList ??= new VList(document.getElementById("log-list"), drawLogRow);
  fillServices(document.querySelector("#log-filters [name=service]"));
  const filter = logFilter();
  const shown = store.logs.filter((l) => logMatches(l, filter));
  shown.sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
  logList.set(shown);
  document.getElementById("log-count").textContent = `${shown.length} of ${plural(store.logs.length, "log")}`;
  const detail = document.getElementById("log-detail");
  if (!selectedLog) {
    detail.replaceChildren(h("p", { className: "hint", text: "Select a log to see its attributes." }));
    return;
  }
  const l = selectedLog;
  detail.replaceChildren(
    h("h3", { text: fmtValue(l.body) || l.eventName || "(no body)" }),
    kvTable([["time", fmtDate(l.time)], ["severity", `${l.severityText || severityName(l.severity)} (${l.severity})`],
      ["event", l.eventName], ["trace id", l.traceId], ["span id", l.spanId]]),
    section("Attributes", kvTable(l.attrs)),
    section("Resource", kvTable(l.res.attrs)),
    section("Scope", kvTable([["name", l.scope.name], ["version", l.scope.version]])),
  );
}

// -- metrics ----------------------------------------------------------------------------------

function renderMetrics() {
  const v = formValues(document.getElementById("metric-filters"));
  const name = v.name.trim().toLowerCase();
  const attr = parseAttr(v.attr);
  const cards = [];
  const entries = [...store.metrics.values()].sort((a, b) => a.name.localeCompare(b.name) || a.service.localeCompare(b.service));
  for (const m of entries) {
    if (name && !m.name.toLowerCase().includes(name)) continue;
    const points = attr ? m.points.filter((p) => attrMatches(p.attrs, attr)) : m.points;
    if (!points.length) continue;
    cards.push(metricCard(m, points));
  }
  document.getElementById("metric-count").textContent = `${cards.length} of ${plural(store.metrics.size, "metric")}`;
  document.getElementById("metric-list").replaceChildren(...cards);
}

function metricCard(m, points) {
  const chart = m.type === "gauge" || m.type === "sum" ? lineChart(points) : bucketChart(m.type, points);
  return h(
    "div",
    { className: "metric", data: { metric: m.name, type: m.type } },
    h("div", { className: "metric-head" },
      h("span", { className: "metric-name", text: m.name }),
      h("span", { className: "badge", text: m.type + (m.monotonic ? ", monotonic" : "") }),
      m.unit ? h("span", { className: "unit", text: m.unit }) : null),
    h("div", { className: "metric-meta" },
      h("span", { className: "dot", style: { background: colour(m.service) } }), m.service,
      h("span", { className: "point-count", text: ` · ${points.length} point${points.length === 1 ? "" : "s"}` })),
    m.description ? h("div", { className: "metric-desc", text: m.description }) : null,
    chart,
  );
}

function seriesOf(points) {
  const series = new Map();
  for (const p of points) {
    const key = p.attrs.map(([k, v]) => `${k}=${fmtValue(v)}`).sort().join(", ");
    if (!series.has(key)) series.set(key, []);
    series.get(key).push(p);
  }
  for (const list of series.values()) list.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  return series;
}

const W = 320;
const H = 120;
const PAD = 24;

function lineChart(points) {
  const series = seriesOf(points);
  const values = points.map((p) => Number(p.value));
  const times = points.map((p) => p.time);
  const t0 = times.reduce((a, b) => (b < a ? b : a));
  const t1 = times.reduce((a, b) => (b > a ? b : a));
  const span = Math.max(1, Number(t1 - t0));
  const low = Math.min(0, ...values);
  const high = Math.max(...values, low + 1e-9);
  const x = (t) => PAD + ((W - 2 * PAD) * Number(t - t0)) / span;
  const y = (v) => H - PAD - ((H - 2 * PAD) * (Number(v) - low)) / (high - low);
  const chart = svg("svg", { class: "chart line-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H });
  chart.append(svg("line", { class: "axis", x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD }));
  chart.append(svg("text", { class: "label", x: 2, y: PAD - 8 }, document.createTextNode(String(+high.toPrecision(6)))));
  chart.append(svg("text", { class: "label", x: 2, y: H - PAD + 14 }, document.createTextNode(String(+low.toPrecision(6)))));
  chart.append(svg("text", { class: "label", x: W - PAD, y: H - 4, "text-anchor": "end" }, document.createTextNode(fmtTime(t1))));
  let index = 0;
  const legend = h("div", { className: "series-legend" });
  for (const [key, list] of series) {
    const stroke = `hsl(${(index++ * 67 + 200) % 360}, 60%, 45%)`;
    if (list.length > 1) {
      chart.append(svg("polyline", { class: "series", fill: "none", stroke, points: list.map((p) => `${x(p.time)},${y(p.value)}`).join(" ") }));
    }
    for (const p of list) {
      const dot = svg("circle", { class: "point", cx: x(p.time), cy: y(p.value), r: 2.5, fill: stroke });
      dot.append(svg("title", {}, document.createTextNode(`${fmtTime(p.time)}  ${p.value}  ${key}`)));
      chart.append(dot);
    }
    if (index <= 6) legend.append(h("span", { className: "series-name" }, h("span", { className: "dot", style: { background: stroke } }), key || "(no attributes)"));
  }
  return h("div", { className: "chart-box" }, chart, legend);
}

// Bars: a histogram's buckets (the latest point of each series, added up), an exponential
// histogram's positive buckets, a summary's quantiles.
function bucketChart(type, points) {
  const latest = [...seriesOf(points).values()].map((list) => list[list.length - 1]);
  let bars = [];
  if (type === "histogram") {
    const bounds = latest[0].bounds || [];
    const counts = [];
    for (const p of latest) (p.buckets || []).forEach((c, i) => (counts[i] = (counts[i] || 0) + c));
    bars = counts.map((c, i) => [i < bounds.length ? `≤ ${bounds[i]}` : `> ${bounds[bounds.length - 1] ?? "-∞"}`, c]);
  } else if (type === "exponential_histogram") {
    const p = latest[0];
    const base = 2 ** (2 ** -(p.scale || 0));
    bars = ((p.positive && p.positive.counts) || []).map((c, i) => [`≤ ${+(base ** (p.positive.offset + i + 1)).toPrecision(3)}`, c]);
  } else if (type === "summary") {
    bars = (latest[0].quantiles || []).map((q) => [`q${q.quantile}`, q.value]);
  }
  const chart = svg("svg", { class: "chart bar-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H });
  const high = Math.max(1e-9, ...bars.map(([, c]) => c));
  const width = (W - 2 * PAD) / Math.max(1, bars.length);
  bars.forEach(([label, count], i) => {
    const height = ((H - 2 * PAD) * count) / high;
    const bar = svg("rect", { class: "bucket", x: PAD + i * width + 1, y: H - PAD - height, width: Math.max(1, width - 2), height });
    bar.append(svg("title", {}, document.createTextNode(`${label}: ${count}`)));
    chart.append(bar);
  });
  chart.append(svg("line", { class: "axis", x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD }));
  if (bars.length) {
    chart.append(svg("text", { class: "label", x: PAD, y: H - 6 }, document.createTextNode(bars[0][0])));
    chart.append(svg("text", { class: "label", x: W - PAD, y: H - 6, "text-anchor": "end" }, document.createTextNode(bars[bars.length - 1][0])));
  }
  const p = latest[0];
  const caption = type === "summary" || type === "histogram" || type === "exponential_histogram"
    ? `latest: count ${latest.reduce((n, q) => n + (q.count || 0), 0)}` + (p.sum !== undefined ? `, sum ${+p.sum.toPrecision(6)}` : "")
    : "";
  return h("div", { className: "chart-box" }, chart, h("div", { className: "series-legend", text: caption }));
}

// -- the vLLM request journals ------------------------------------------------------------------

// The llm_request span(s) of a journal entry: the request's traceparent names the span that
// is their parent; without one, the only llm_request root span starting within 25 ms of it.
function spansOf(entry) {
  const match = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}/.exec(entry.traceparent || "");
  if (match) {
    const t = store.traces.get(match[1]);
    return { how: "traceparent", spans: t ? t.spans.filter((s) => s.name === "llm_request" && s.parentId === match[2]) : [] };
  }
  const at = BigInt(Math.round(entry.start * 1e6)) * 1000n;
  const near = store.llmSpans.filter((s) => !s.parentId && (s.start > at ? s.start - at : at - s.start) < 25000000n);
  return { how: "time", spans: near.length === 1 ? near : [] };
}

function attrOf(s, key) {
  const found = s.attrs.find(([k]) => k === key);
  return found ? found[1] : undefined;
}

function renderRequests() {
  const rows = [];
  for (const [mock, entries] of store.journals) {
    for (const entry of entries) rows.push([mock, entry]);
  }
  rows.sort((a, b) => b[1].start - a[1].start);
  const table = document.getElementById("request-list");
  table.replaceChildren(...rows.map(([mock, entry]) => drawRequestRow(mock, entry)));
  const names = [...store.journals.keys()];
  document.getElementById("request-count").textContent = names.length
    ? `${rows.length} requests from ${names.join(", ")}`
    : BOOT.mode === "live"
      ? "No mock with a request journal is linked to this collector (see the docs: journals)."
      : "This report holds no request journal.";
}

function drawRequestRow(mock, entry) {
  const { how, spans } = spansOf(entry);
  const s = spans[0];
  const prompt = s && attrOf(s, "gen_ai.usage.prompt_tokens");
  const completion = s && attrOf(s, "gen_ai.usage.completion_tokens");
  return h(
    "tr",
    { className: "request-row" + (entry.status === null || entry.status >= 400 ? " error" : ""), data: { index: String(entry.index) } },
    h("td", { text: fmtTime(BigInt(Math.round(entry.start * 1000)) * 1000000n) }),
    h("td", { text: mock }),
    h("td", { className: "req-path", text: `${entry.method} ${entry.path}` }),
    h("td", { className: "req-status", text: entry.status === null ? "cut" : String(entry.status) }),
    h("td", { className: "num", text: fmtDur(Math.round(entry.duration * 1e9)) }),
    h("td", { className: "num", text: fmtDur(Math.round(entry.first_byte * 1e9)) }),
    h("td", { className: "num req-tokens", text: s ? `${prompt ?? "-"} → ${completion ?? "-"}` : "-" }),
    h("td", { text: entry.model || "" }),
    h("td", {}, s
      ? h("a", { className: "span-link", href: spanHref(s.traceId, s.spanId), text: "llm_request" + (how === "time" ? " (by time)" : "") + (spans.length > 1 ? ` ×${spans.length}` : "") })
      : h("span", { className: "none", text: entry.traceparent ? "span not here" : "no span" })),
  );
}

// -- routing and rendering ------------------------------------------------------------------------

const timings = { list: 0, listDrawnAt: 0, trace: 0, decode: 0 };
let current = { view: "traces" };

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const view = ["traces", "trace", "logs", "metrics", "requests"].includes(parts[0]) ? parts[0] : "traces";
  current = { view, traceId: parts[1] || "", spanId: parts[2] || "" };
  for (const node of document.querySelectorAll(".view")) node.hidden = node.id !== `${view}-view`;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === (view === "trace" ? "traces" : view));
  }
  render();
}

function render() {
  if (current.view === "traces") renderTraceList();
  else if (current.view === "trace") renderTrace(current.traceId, current.spanId);
  else if (current.view === "logs") renderLogs();
  else if (current.view === "metrics") renderMetrics();
  else renderRequests();
  document.body.dataset.version = String(store.version);
}

// New data is drawn at most every 250 ms, so a burst of pages costs one render.
let drawn = 0;
let queued = false;
function changed(now = false) {
  if (now) {
    drawn = performance.now();
    render();
    return updateStatus();
  }
  if (queued) return;
  queued = true;
  const wait = Math.max(0, 250 - (performance.now() - drawn));
  setTimeout(() => {
    queued = false;
    drawn = performance.now();
    if (current.view === "trace") {
      // The waterfall is redrawn only when its trace changed: a redraw loses the scroll.
      const t = store.traces.get(current.traceId);
      const count = t ? t.spans.length : -1;
      if (count === current.drawnSpans) return updateStatus();
      current.drawnSpans = count;
    }
    render();
    updateStatus();
  }, wait);
}

function updateStatus(text) {
  const status = document.getElementById("status");
  if (text !== undefined) status.dataset.state = text;
  const counts = `${store.spanCount} spans · ${store.logs.length} logs · ${store.metrics.size} metrics`;
  status.textContent = BOOT.mode === "live" ? `${status.dataset.state || "connecting"} · ${counts}` : counts;
}

// -- live: the collector's feed, and the journals through the collector -----------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function follow() {
  let cursor = 0;
  let caughtUp = false;
  let backoff = 0;
  while (true) {
    try {
      const timeout = caughtUp ? 20 : 0;
      const answer = await fetch(`${BASE}/feed?encoding=protobuf&limit=100000&after=${cursor}&timeout=${timeout}`);
      if (answer.status === 400) {
        // A cursor past the collector's last request: it was restarted. Start again.
        store.reset();
        cursor = 0;
        caughtUp = false;
        continue;
      }
      if (!answer.ok) throw new Error(`the collector answered ${answer.status}`);
      const started = performance.now();
      const page = decodePage(new Uint8Array(await answer.arrayBuffer()));
      timings.decode += performance.now() - started;
      if (store.generation !== null && page.generation !== store.generation) store.reset();
      store.generation = page.generation;
      store.add(page);
      cursor = page.cursor;
      const empty = !page.traces.length && !page.logs.length && !page.metrics.length;
      backoff = 0;
      if (!caughtUp) {
        // Loading what is stored: pages back to back, drawn once, as soon as it is all in.
        if (empty) {
          caughtUp = true;
          updateStatus("live");
          changed(true);
        } else updateStatus("loading");
        continue;
      }
      changed();
      // Live, a page comes back as soon as one request arrived: under a heavy load, wait a
      // little so that the next page gathers many requests (fewer, larger reads).
      if (!empty) await sleep(250);
    } catch (error) {
      updateStatus("disconnected, retrying");
      backoff = Math.min(5000, backoff * 2 || 500);
      await sleep(backoff);
    }
  }
}

const following = new Set();

async function watchJournals() {
  while (true) {
    try {
      const answer = await fetch(`${BASE}/ui/journals`);
      if (answer.ok) {
        for (const journal of (await answer.json()).journals) {
          if (!following.has(journal.name)) {
            following.add(journal.name);
            followJournal(journal.name);
          }
        }
      }
    } catch (error) {
      // the feed's status line says the collector is away
    }
    await sleep(following.size ? 30000 : 5000);
  }
}

async function followJournal(name) {
  let backoff = 0;
  while (true) {
    const known = (store.journals.get(name) || []).length;
    try {
      const answer = await fetch(`${BASE}/ui/journals/${encodeURIComponent(name)}?count=${known + 1}&timeout=20`);
      if (answer.status === 404) {
        following.delete(name);
        store.journals.delete(name);
        return changed();
      }
      const body = await answer.json();
      if (!answer.ok) throw new Error(body.error);
      store.journals.set(name, body.requests);
      store.version++;
      backoff = 0;
      changed();
    } catch (error) {
      backoff = Math.min(10000, backoff * 2 || 1000);
      await sleep(backoff);
    }
  }
}

// -- start ---------------------------------------------------------------------------------------

function start() {
  for (const form of document.querySelectorAll("form.filters")) {
    form.addEventListener("input", () => render());
    form.addEventListener("submit", (event) => event.preventDefault());
  }
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => render());
  document.getElementById("title").textContent = BOOT.title || "";
  if (BOOT.mode === "report") {
    const started = performance.now();
    const text = atob(BOOT.data);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    store.add(decodePage(bytes));
    for (const [name, entries] of Object.entries(BOOT.journals || {})) store.journals.set(name, entries);
    timings.decode = performance.now() - started;
    updateStatus();
    route();
  } else {
    route();
    updateStatus();
    follow();
    watchJournals();
  }
}

// For the browser tests and the benchmark: the store and how long the last renders took (ms).
window.mocksupViewer = { store, timings };
start();
