// OTLP protobuf, decoded in the browser: the collector's feed pages (and the report's
// embedded data, which has the same shape) become plain objects for the views.
//
// A feed page is the wire form of
//   message FeedPage { repeated TracesData traces = 1; repeated MetricsData metrics = 2;
//                      repeated LogsData logs = 3; uint64 cursor = 4; uint64 generation = 5; }
// Protobuf rather than OTLP/JSON because the collector then sends the bytes it stored as they
// are (about a hundred times cheaper for it than writing JSON), so a viewer left open never
// competes with ingest. Timestamps stay exact as BigInt nanoseconds; ids become hex.
"use strict";

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const UTF8 = new TextDecoder();
const SIGNALS = { 1: "traces", 2: "metrics", 3: "logs" };

class Reader {
  constructor(bytes) {
    this.buf = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  varint() {
    // Fast path for values below 2^28, then plain arithmetic (exact below 2^53).
    let byte = this.buf[this.pos++];
    let value = byte & 0x7f;
    if (byte < 0x80) return value;
    let shift = 7;
    let scale = 128;
    while (true) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      byte = this.buf[this.pos++];
      value = shift < 28 ? value | ((byte & 0x7f) << shift) : value + (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      shift += 7;
      scale *= 128;
      if (shift > 63) throw new Error("varint too long");
    }
  }
  int64() {
    // A signed 64-bit varint: a Number when exact, else its decimal text.
    const start = this.pos;
    const value = this.varint();
    if (value < 2 ** 53) return value;
    let big = 0n;
    for (let i = this.pos - 1; i >= start; i--) big = (big << 7n) | BigInt(this.buf[i] & 0x7f);
    big = BigInt.asIntN(64, big);
    return Number.isSafeInteger(Number(big)) ? Number(big) : big.toString();
  }
  sint32() {
    const value = this.varint();
    return value % 2 ? -(value + 1) / 2 : value / 2;
  }
  fixed32() {
    const value = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return value;
  }
  fixed64() {
    const low = this.view.getUint32(this.pos, true);
    const high = this.view.getUint32(this.pos + 4, true);
    this.pos += 8;
    return (BigInt(high) << 32n) | BigInt(low);
  }
  sfixed64() {
    const value = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  }
  double() {
    const value = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return value;
  }
  end() {
    const length = this.varint();
    const end = this.pos + length;
    if (end > this.buf.length) throw new Error("truncated field");
    return end;
  }
  string() {
    const end = this.end();
    const text = UTF8.decode(this.buf.subarray(this.pos, end));
    this.pos = end;
    return text;
  }
  hex() {
    const end = this.end();
    let text = "";
    for (let i = this.pos; i < end; i++) text += HEX[this.buf[i]];
    this.pos = end;
    return text;
  }
  base64() {
    const end = this.end();
    const text = btoa(String.fromCharCode(...this.buf.subarray(this.pos, end)));
    this.pos = end;
    return text;
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.pos = this.end();
    else if (wire === 5) this.pos += 4;
    else throw new Error("unsupported wire type " + wire);
  }
  // Calls field(number, wire) for each field up to end; field returns false to skip it.
  each(end, field) {
    while (this.pos < end) {
      const tag = this.varint();
      if (!field(tag >>> 3, tag & 7)) this.skip(tag & 7);
    }
    this.pos = end;
  }
}

// -- common -----------------------------------------------------------------------------

function anyValue(r, end) {
  let value = null;
  r.each(end, (f, w) => {
    if (f === 1 && w === 2) value = r.string();
    else if (f === 2 && w === 0) value = r.varint() !== 0;
    else if (f === 3 && w === 0) value = r.int64();
    else if (f === 4 && w === 1) value = r.double();
    else if (f === 5 && w === 2) value = arrayValue(r, r.end());
    else if (f === 6 && w === 2) value = { kvlist: attributes(r, r.end()) };
    else if (f === 7 && w === 2) value = { bytes: r.base64() };
    else return false;
    return true;
  });
  return value;
}

function arrayValue(r, end) {
  const values = [];
  r.each(end, (f, w) => f === 1 && w === 2 && values.push(anyValue(r, r.end())) > 0);
  return values;
}

function keyValue(r, end) {
  let key = "";
  let value = null;
  r.each(end, (f, w) => {
    if (f === 1 && w === 2) key = r.string();
    else if (f === 2 && w === 2) value = anyValue(r, r.end());
    else return false;
    return true;
  });
  return [key, value];
}

// Attributes as [key, value] pairs, in their order; appended by field 'number'.
function addAttribute(r, list) {
  list.push(keyValue(r, r.end()));
  return true;
}

function attributes(r, end) {
  const list = [];
  r.each(end, (f, w) => f === 1 && w === 2 && addAttribute(r, list));
  return list;
}

function resource(r, end) {
  const res = { attrs: [], schemaUrl: "", service: "" };
  r.each(end, (f, w) => f === 1 && w === 2 && addAttribute(r, res.attrs));
  const named = res.attrs.find(([key]) => key === "service.name");
  res.service = named && typeof named[1] === "string" ? named[1] : "unknown";
  return res;
}

function scope(r, end) {
  const sc = { name: "", version: "", attrs: [] };
  r.each(end, (f, w) => {
    if (f === 1 && w === 2) sc.name = r.string();
    else if (f === 2 && w === 2) sc.version = r.string();
    else if (f === 3 && w === 2) addAttribute(r, sc.attrs);
    else return false;
    return true;
  });
  return sc;
}

// ResourceSpans/ResourceMetrics/ResourceLogs share one shape: resource = 1, the scope
// groups = 2 (scope = 1, items = 2, schema_url = 3), schema_url = 3.
function resourceGroups(r, end, item, out) {
  r.each(end, (f, w) => {
    if (f !== 1 || w !== 2) return false;
    const topEnd = r.end();
    let res = { attrs: [], schemaUrl: "", service: "unknown" };
    const groups = [];
    r.each(topEnd, (g, gw) => {
      if (g === 1 && gw === 2) res = resource(r, r.end());
      else if (g === 2 && gw === 2) {
        const groupEnd = r.end();
        groups.push([r.pos, groupEnd]);
        r.pos = groupEnd;
      } else if (g === 3 && gw === 2) res.schemaUrl = r.string();
      else return false;
      return true;
    });
    // The resource may follow its groups on the wire: read them once it is known.
    for (const [start, groupEnd] of groups) {
      r.pos = start;
      let sc = { name: "", version: "", attrs: [] };
      const items = [];
      r.each(groupEnd, (s, sw) => {
        if (s === 1 && sw === 2) sc = scope(r, r.end());
        else if (s === 2 && sw === 2) items.push(item(r, r.end()));
        else return false;
        return true;
      });
      for (const it of items) {
        it.res = res;
        it.scope = sc;
        out.push(it);
      }
    }
    r.pos = topEnd;
    return true;
  });
}

// -- traces ---------------------------------------------------------------------------------

// A span's attributes are decoded when first read (most spans are only listed): the span
// keeps where its message lies in the page.
class SpanItem {
  constructor(buf, from, to) {
    this.traceId = "";
    this.spanId = "";
    this.parentId = "";
    this.traceState = "";
    this.flags = 0;
    this.name = "";
    this.kind = 0;
    this.start = 0n;
    this.end = 0n;
    this.events = [];
    this.links = [];
    this.status = { code: 0, message: "" };
    this.dropped = { attributes: 0, events: 0, links: 0 };
    this.source = [buf, from, to];
    this.decoded = null;
  }

  get attrs() {
    if (this.decoded === null) {
      const [buf, from, to] = this.source;
      const r = new Reader(buf);
      const attrs = [];
      r.pos = from;
      r.each(to, (f, w) => f === 9 && w === 2 && addAttribute(r, attrs));
      this.decoded = attrs;
    }
    return this.decoded;
  }
}

function span(r, end) {
  const s = new SpanItem(r.buf, r.pos, end);
  r.each(end, (f, w) => {
    switch (f) {
      case 1: s.traceId = r.hex(); break;
      case 2: s.spanId = r.hex(); break;
      case 3: s.traceState = r.string(); break;
      case 4: s.parentId = r.hex(); break;
      case 5: s.name = r.string(); break;
      case 6: s.kind = r.varint(); break;
      case 7: s.start = r.fixed64(); break;
      case 8: s.end = r.fixed64(); break;
      case 10: s.dropped.attributes = r.varint(); break;
      case 11: s.events.push(spanEvent(r, r.end())); break;
      case 12: s.dropped.events = r.varint(); break;
      case 13: s.links.push(spanLink(r, r.end())); break;
      case 14: s.dropped.links = r.varint(); break;
      case 15: s.status = status(r, r.end()); break;
      case 16: s.flags = r.fixed32(); break;
      default: return false; // attributes (9) among them: read on demand
    }
    return true;
  });
  s.dur = s.end > s.start ? Number(s.end - s.start) : 0;
  return s;
}

function spanEvent(r, end) {
  const e = { time: 0n, name: "", attrs: [] };
  r.each(end, (f, w) => {
    if (f === 1 && w === 1) e.time = r.fixed64();
    else if (f === 2 && w === 2) e.name = r.string();
    else if (f === 3 && w === 2) addAttribute(r, e.attrs);
    else return false;
    return true;
  });
  return e;
}

function spanLink(r, end) {
  const l = { traceId: "", spanId: "", traceState: "", attrs: [] };
  r.each(end, (f, w) => {
    if (f === 1 && w === 2) l.traceId = r.hex();
    else if (f === 2 && w === 2) l.spanId = r.hex();
    else if (f === 3 && w === 2) l.traceState = r.string();
    else if (f === 4 && w === 2) addAttribute(r, l.attrs);
    else return false;
    return true;
  });
  return l;
}

function status(r, end) {
  const st = { code: 0, message: "" };
  r.each(end, (f, w) => {
    if (f === 2 && w === 2) st.message = r.string();
    else if (f === 3 && w === 0) st.code = r.varint();
    else return false;
    return true;
  });
  return st;
}

// -- metrics -------------------------------------------------------------------------------

const METRIC_TYPES = { 5: "gauge", 7: "sum", 9: "histogram", 10: "exponential_histogram", 11: "summary" };

function metric(r, end) {
  const m = { name: "", description: "", unit: "", type: "", temporality: 0, monotonic: false, points: [] };
  r.each(end, (f, w) => {
    if (f === 1 && w === 2) m.name = r.string();
    else if (f === 2 && w === 2) m.description = r.string();
    else if (f === 3 && w === 2) m.unit = r.string();
    else if (METRIC_TYPES[f] && w === 2) {
      m.type = METRIC_TYPES[f];
      metricData(r, r.end(), m);
    } else return false;
    return true;
  });
  return m;
}

function metricData(r, end, m) {
  r.each(end, (f, w) => {
    if (f === 1 && w === 2) m.points.push(dataPoint(r, r.end(), m.type));
    else if (f === 2 && w === 0) m.temporality = r.varint();
    else if (f === 3 && w === 0 && m.type === "sum") m.monotonic = r.varint() !== 0;
    else return false;
    return true;
  });
}

// Repeated numbers, packed (one length-delimited field) or not.
function repeated(r, w, one, into) {
  if (w !== 2) {
    into.push(one());
    return;
  }
  const end = r.end();
  while (r.pos < end) into.push(one());
}

function dataPoint(r, end, type) {
  const p = { attrs: [], start: 0n, time: 0n };
  const attributeField = type === "histogram" ? 9 : type === "exponential_histogram" ? 1 : 7;
  r.each(end, (f, w) => {
    if (f === attributeField && w === 2) return addAttribute(r, p.attrs);
    if (f === 2 && w === 1) p.start = r.fixed64();
    else if (f === 3 && w === 1) p.time = r.fixed64();
    else if (type === "gauge" || type === "sum") {
      if (f === 4 && w === 1) p.value = r.double();
      else if (f === 6 && w === 1) p.value = r.sfixed64();
      else return false;
    } else if (f === 4 && w === 1) p.count = Number(r.fixed64());
    else if (f === 5 && w === 1) p.sum = r.double();
    else if (type === "histogram") {
      if (f === 6) repeated(r, w, () => Number(r.fixed64()), (p.buckets ??= []));
      else if (f === 7) repeated(r, w, () => r.double(), (p.bounds ??= []));
      else if (f === 11 && w === 1) p.min = r.double();
      else if (f === 12 && w === 1) p.max = r.double();
      else return false;
    } else if (type === "exponential_histogram") {
      if (f === 6 && w === 0) p.scale = r.sint32();
      else if (f === 7 && w === 1) p.zeroCount = Number(r.fixed64());
      else if (f === 8 && w === 2) p.positive = expBuckets(r, r.end());
      else if (f === 9 && w === 2) p.negative = expBuckets(r, r.end());
      else if (f === 12 && w === 1) p.min = r.double();
      else if (f === 13 && w === 1) p.max = r.double();
      else return false;
    } else if (type === "summary" && f === 6 && w === 2) {
      const q = { quantile: 0, value: 0 };
      r.each(r.end(), (g, gw) => {
        if (gw !== 1 || (g !== 1 && g !== 2)) return false;
        q[g === 1 ? "quantile" : "value"] = r.double();
        return true;
      });
      (p.quantiles ??= []).push(q);
    } else return false;
    return true;
  });
  return p;
}

function expBuckets(r, end) {
  const b = { offset: 0, counts: [] };
  r.each(end, (f, w) => {
    if (f === 1 && w === 0) b.offset = r.sint32();
    else if (f === 2) repeated(r, w, () => r.varint(), b.counts);
    else return false;
    return true;
  });
  return b;
}

// -- logs -----------------------------------------------------------------------------------

function logRecord(r, end) {
  const l = {
    time: 0n, observed: 0n, severity: 0, severityText: "", body: null, attrs: [],
    traceId: "", spanId: "", eventName: "", flags: 0,
  };
  r.each(end, (f, w) => {
    switch (f) {
      case 1: l.time = r.fixed64(); break;
      case 2: l.severity = r.varint(); break;
      case 3: l.severityText = r.string(); break;
      case 5: l.body = anyValue(r, r.end()); break;
      case 6: addAttribute(r, l.attrs); break;
      case 8: l.flags = r.fixed32(); break;
      case 9: l.traceId = r.hex(); break;
      case 10: l.spanId = r.hex(); break;
      case 11: l.observed = r.fixed64(); break;
      case 12: l.eventName = r.string(); break;
      default: return false;
    }
    return true;
  });
  if (!l.time) l.time = l.observed; // the SDK may set only the observed time
  return l;
}

const ITEMS = { traces: span, metrics: metric, logs: logRecord };

// Decodes a feed page: { traces: [...spans], metrics: [...], logs: [...], cursor, generation }.
function decodePage(bytes) {
  const r = new Reader(bytes);
  const page = { traces: [], metrics: [], logs: [], cursor: 0, generation: 0 };
  r.each(bytes.length, (f, w) => {
    const signal = SIGNALS[f];
    if (signal && w === 2) resourceGroups(r, r.end(), ITEMS[signal], page[signal]);
    else if (f === 4 && w === 0) page.cursor = r.varint();
    else if (f === 5 && w === 0) page.generation = r.varint();
    else return false;
    return true;
  });
  return page;
}
