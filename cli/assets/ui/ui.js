// caplab live view: fetches the aggregated JSON from the server that served this page once a
// second and redraws. Every text from the members goes through textContent (never HTML).
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const STATES = ["leader", "follower", "candidate", "learner", "paused", "down"];

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

// The drawing state of a member: its protocol role folded into the six colours.
function stateOf(m) {
  if (m.paused) return "paused";
  if (!m.up || !m.status) return "down";
  switch (m.status.role) {
    case "leader": case "primary": case "coordinator": return "leader";
    case "candidate": case "fenced": return "candidate";
    case "learner": case "removed": return "learner";
    default: return "follower";
  }
}

function name(m) { return m.id ? "n" + m.id : m.label; }

// Member centres on a ring, clockwise from the top.
function layout(members) {
  const cx = 280, cy = 250, r = members.length > 1 ? 180 : 0;
  const pos = new Map();
  members.forEach((m, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / members.length;
    pos.set(m.id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  return pos;
}

function drawLinks(svg, links, pos) {
  for (const l of links) {
    const a = pos.get(l.from), b = pos.get(l.to);
    if (!a || !b) continue;
    // Each direction on its own side of the centre line (right-hand traffic).
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const ox = (-dy / len) * 6, oy = (dx / len) * 6;
    const fault = l.fault || "none";
    const x1 = a.x + ox + dx * 0.17, y1 = a.y + oy + dy * 0.17;
    const x2 = b.x + ox - dx * 0.17, y2 = b.y + oy - dy * 0.17;
    const line = el("line", { class: "link " + fault, x1, y1, x2, y2,
      "data-from": l.from, "data-to": l.to, "data-fault": fault });
    const kinds = Object.entries(l.byKind || {}).map(([k, r]) => k + " " + r.toFixed(1) + "/s").join(", ");
    line.append(el("title", {}, `n${l.from} → n${l.to}: ${fault === "none" ? "no fault" : fault}${kinds ? "; " + kinds : ""}`));
    svg.append(line);
    if (fault === "cut") {
      const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
      svg.append(el("path", { class: "cutmark", d: `M${mx - 7},${my - 7}L${mx + 7},${my + 7}M${mx - 7},${my + 7}L${mx + 7},${my - 7}` }));
    }
    if (l.messagesPerSecond !== undefined) {
      svg.append(el("text", { class: "rate", x: x1 + (x2 - x1) * 0.3 + ox, y: y1 + (y2 - y1) * 0.3 + oy },
        l.messagesPerSecond.toFixed(0) + "/s"));
    }
  }
}

function drawMember(svg, m, p, maxIndex) {
  const state = stateOf(m), s = m.status;
  const g = el("g", { class: "member state-" + state, "data-id": m.id || "", "data-state": state,
    "data-label": m.label });
  g.append(el("circle", { cx: p.x, cy: p.y, r: 34 }));
  g.append(el("text", { class: "name", x: p.x, y: p.y - 4 }, name(m)));
  const role = m.paused ? "paused" : !m.up ? "down" : s ? s.role : "?";
  g.append(el("text", { x: p.x, y: p.y + 12 }, role + (s ? " t" + s.term : "")));
  if (s) {
    // Commit, applied and last index as bars on one scale (the largest last index seen).
    const w = 70, x = p.x - w / 2;
    [["last", s.lastLogIndex], ["applied", s.appliedIndex], ["commit", s.commitIndex]].forEach(([k, v], i) => {
      const bar = el("rect", { class: "bar-" + k, x, y: p.y + 40 + i * 5, height: 4,
        width: Math.max(1, (w * v) / Math.max(1, maxIndex)) });
      bar.append(el("title", {}, k + " index " + v));
      g.append(bar);
    });
    g.append(el("text", { x: p.x, y: p.y + 68 }, "clock " + signed(m.clockOffsetMs) + " ms"));
  }
  if (m.error) g.append(el("title", {}, m.error));
  svg.append(g);
}

function signed(n) { return (n >= 0 ? "+" : "") + n; }

function drawRing(view) {
  const svg = document.getElementById("ring");
  svg.replaceChildren();
  const known = view.members.filter((m) => m.id);
  const pos = layout(known);
  drawLinks(svg, view.links, pos);
  const maxIndex = Math.max(1, ...known.map((m) => (m.status ? m.status.lastLogIndex : 0)));
  for (const m of known) drawMember(svg, m, pos.get(m.id), maxIndex);
  const unknown = view.members.filter((m) => !m.id);
  unknown.forEach((m, i) => drawMember(svg, m, { x: 40 + i * 80, y: 470 }, maxIndex));
}

function drawTable(view) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const m of view.members) {
    const s = m.status, tr = document.createElement("tr");
    const cells = [name(m) + " (" + m.label + ")", stateOf(m) === "down" ? "down: " + (m.error || "") : (m.paused ? "paused" : s.role),
      s ? s.term : "", s ? s.commitIndex : "", s ? s.appliedIndex : "", s ? s.lastLogIndex : "",
      s ? signed(m.clockOffsetMs) + " ms" : ""];
    for (const c of cells) tr.append(html("td", String(c)));
    tr.dataset.state = stateOf(m);
    body.append(tr);
  }
}

function drawLegend() {
  const ul = document.getElementById("legend");
  for (const s of STATES) {
    const li = html("li");
    li.append(html("span", undefined, "lg-" + s), document.createTextNode(s));
    ul.append(li);
  }
  for (const [cls, what] of [["cut", "cut link (✕)"], ["delayed", "delayed link"], ["lossy", "lossy link"]]) {
    const li = html("li", what);
    li.className = "lg-link-" + cls;
    ul.append(li);
  }
}

// Runs of equal keys in the samples: [{start, end, value}].
function runs(history, key) {
  const out = [];
  for (const s of history) {
    const v = key(s), last = out[out.length - 1];
    if (last && last.value === v) last.end = s.t; else out.push({ start: s.t, end: s.t, value: v });
  }
  return out;
}

const PALETTE = ["#2e7d32", "#1565c0", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#4e342e", "#558b2f", "#283593"];

function drawStrip(view) {
  const svg = document.getElementById("strip"), h = view.history;
  svg.replaceChildren();
  if (!h.length) return;
  const t0 = view.now - 300000, X = (t) => 60 + ((t - t0) / 300000) * 935;
  const lane = (y, label) => svg.append(el("text", { class: "lane-label", x: 2, y: y + 9 }, label));
  lane(2, "leader/term");
  for (const r of runs(h, (s) => (s.leader ? s.leader + ":" + s.term : ""))) {
    if (!r.value) continue;
    const [id, term] = r.value.split(":");
    const rect = el("rect", { class: "strip-leader", x: X(r.start), y: 2, height: 14,
      width: Math.max(2, X(r.end + 1000) - X(r.start)), fill: PALETTE[(Number(id) - 1) % PALETTE.length],
      "data-leader": id, "data-term": term });
    rect.append(el("title", {}, "leader n" + id + " term " + term));
    svg.append(rect);
    if (X(r.end) - X(r.start) > 30) svg.append(el("text", { class: "lane-label", x: X(r.start) + 2, y: 13, fill: "#fff" }, "n" + id + " t" + term));
  }
  lane(20, "quorum");
  for (const r of runs(h, (s) => s.quorum)) {
    svg.append(el("rect", { class: r.value ? "strip-quorum" : "strip-noquorum", x: X(r.start), y: 20, height: 8,
      width: Math.max(2, X(r.end + 1000) - X(r.start)), "data-quorum": r.value }));
  }
  if (h.some((s) => s.inDoubt > 0)) {
    lane(30, "in doubt");
    for (const r of runs(h, (s) => s.inDoubt > 0)) if (r.value) svg.append(el("rect", { class: "strip-indoubt",
      x: X(r.start), y: 30, height: 8, width: Math.max(2, X(r.end + 1000) - X(r.start)) }));
  }
  // One row per fault name, its windows shaded, its name at the row's start (never overlapping).
  const names = [...new Set(h.flatMap((s) => s.faults))].sort();
  names.forEach((f, i) => {
    const y = 42 + i * 11;
    lane(y, f);
    for (const r of runs(h, (s) => s.faults.includes(f))) if (r.value) {
      const rect = el("rect", { class: "strip-fault", x: X(r.start), y, height: 9,
        width: Math.max(2, X(r.end + 1000) - X(r.start)), "data-fault": f });
      rect.append(el("title", {}, f));
      svg.append(rect);
    }
  });
  svg.setAttribute("viewBox", `0 0 1000 ${Math.max(60, 46 + names.length * 11)}`);
}

// Commit index per member over time, accumulated by the page (uPlot).
const series = { t: [], byLabel: new Map() };
let chart = null;

function drawIndexes(view) {
  series.t.push(view.now / 1000);
  for (const m of view.members) {
    if (!series.byLabel.has(m.label)) series.byLabel.set(m.label, series.t.slice(0, -1).map(() => null));
    series.byLabel.get(m.label).push(m.up && m.status ? m.status.commitIndex : null);
  }
  if (series.t.length > 300) { series.t.shift(); for (const v of series.byLabel.values()) v.shift(); }
  const labels = [...series.byLabel.keys()];
  const data = [series.t, ...labels.map((l) => series.byLabel.get(l))];
  const box = document.getElementById("indexes");
  if (!chart || chart.series.length !== labels.length + 1) {
    if (chart) chart.destroy();
    chart = new uPlot({ width: Math.min(1000, box.clientWidth || 900), height: 160,
      series: [{}, ...labels.map((l, i) => ({ label: l, stroke: PALETTE[i % PALETTE.length], spanGaps: false }))] }, data, box);
  } else chart.setData(data);
}

// Each member's last log entries: Raft index/term/op, primary sequence/epoch/op, 2pc
// transactions and their decisions, quorum writes with their last-writer-wins stamps.
function drawTails(view) {
  const box = document.getElementById("tails");
  box.replaceChildren();
  box.className = "tails";
  for (const m of view.members) {
    if (!m.log || !m.log.length) continue;
    const t = html("table", undefined, "tail");
    t.dataset.member = m.id || m.label;
    t.append(html("caption", name(m) + (m.up ? "" : " (last seen)")));
    for (const e of m.log) {
      const tr = html("tr");
      const stamp = e.stampMs !== undefined ? "@" + new Date(e.stampMs).toISOString().slice(11, 23) + " by n" + e.writer : "";
      const head = e.stampMs !== undefined ? stamp : "#" + e.index + (e.term !== undefined ? " t" + e.term : "");
      tr.append(html("td", head), html("td", e.op));
      const d = html("td", e.decision || "", e.decision ? "d-" + e.decision.split(" ")[0] : "");
      tr.append(d);
      t.append(tr);
    }
    box.append(t);
  }
}

// Fault windows of the history, [{start, end}] in seconds, for shading the workload charts.
function faultWindows(history) {
  return runs(history, (s) => s.faults.length > 0).filter((r) => r.value)
    .map((r) => ({ start: r.start / 1000, end: (r.end + 1000) / 1000 }));
}

// The fault windows the workload charts shade, as of the last poll.
let shaded = [];

function shade(u) {
  const ctx = u.ctx;
  ctx.save();
  ctx.fillStyle = "rgba(239, 154, 154, 0.35)";
  for (const w of shaded) {
    const x0 = u.valToPos(w.start, "x", true), x1 = u.valToPos(w.end, "x", true);
    ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
  }
  ctx.restore();
}

const workloadCharts = { ops: null, latency: null };

function workloadChart(key, boxId, opts, data) {
  if (workloadCharts[key]) { workloadCharts[key].setData(data); return; }
  const box = document.getElementById(boxId);
  workloadCharts[key] = new uPlot({ ...opts, width: Math.min(1000, box.clientWidth || 900), height: 150,
    hooks: { drawClear: [shade] } }, data, box);
}

// Live ops/s, errors and latency, from the members' client-operation counts.
function drawWorkload(view) {
  const h = view.history, section = document.getElementById("workload");
  const busy = h.some((s) => s.ops && s.ops.opsPerSecond > 0);
  section.hidden = !busy;
  if (!busy) return;
  const t = h.map((s) => s.t / 1000), val = (f) => h.map((s) => (s.ops ? f(s.ops) : null));
  shaded = faultWindows(h);
  workloadChart("ops", "ops-chart", { series: [{}, { label: "ops/s", stroke: "#1565c0" },
    { label: "errors/s", stroke: "#c62828" }] },
  [t, val((o) => o.opsPerSecond), val((o) => o.errorsPerSecond)]);
  workloadChart("latency", "latency-chart", { scales: { y: { distr: 3 } }, series: [{},
    { label: "p50 ms", stroke: "#2e7d32" }, { label: "p99 ms", stroke: "#ef6c00" }] },
  [t, val((o) => o.p50Ms ?? null), val((o) => o.p99Ms ?? null)]);
  const last = [...h].reverse().find((s) => s.ops);
  const o = last.ops, rate = o.opsPerSecond > 0 ? (100 * o.errorsPerSecond) / o.opsPerSecond : 0;
  const now = document.getElementById("workload-now");
  const perOp = Object.entries(o.messagesPerOperation || {});
  const messages = perOp.reduce((sum, [, n]) => sum + n, 0);
  now.textContent = `${o.opsPerSecond.toFixed(0)} ops/s, ${rate.toFixed(1)}% errors` +
    (o.p50Ms !== undefined ? `, p50 ≤ ${o.p50Ms} ms, p99 ≤ ${o.p99Ms} ms` : "") +
    (perOp.length ? `, ${messages.toFixed(1)} peer messages per operation (` +
      perOp.map(([k, n]) => `${k} ${n.toFixed(2)}`).join(", ") + ")" : "");
  now.dataset.ops = String(o.opsPerSecond);
  now.dataset.errorRate = String(rate);
}

let lastNow = 0;
async function refresh() {
  try {
    const response = await fetch("state", { cache: "no-store" });
    const view = await response.json();
    if (!view.members || view.now === lastNow) return;
    lastNow = view.now;
    document.getElementById("title").textContent = view.title;
    document.getElementById("updated").textContent = "updated " + new Date(view.now).toISOString().slice(11, 19) + " UTC";
    document.body.dataset.polled = String(view.now);
    drawRing(view);
    drawTable(view);
    drawStrip(view);
    drawIndexes(view);
    drawTails(view);
    drawWorkload(view);
  } catch (e) {
    document.getElementById("updated").textContent = "the caplab ui server does not answer: " + e;
  }
}

function tabs() {
  for (const [tab, view] of [["tab-cluster", "view-cluster"], ["tab-messages", "view-messages"]]) {
    document.getElementById(tab).addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.id === tab);
      document.getElementById("view-cluster").hidden = view !== "view-cluster";
      document.getElementById("view-messages").hidden = view !== "view-messages";
      if (view === "view-messages" && window.caplabTrace) window.caplabTrace.refresh();
    });
  }
}

// The messages tab: the ui server joins the members' traces (at most once a second).
window.caplabTrace = {
  async refresh() {
    if (document.getElementById("view-messages").hidden) return;
    try {
      const seconds = document.getElementById("trace-window").value;
      const response = await fetch("trace?window=" + encodeURIComponent(seconds), { cache: "no-store" });
      const diagram = await response.json();
      if (!diagram.members) throw new Error(diagram.error || "no diagram");
      window.caplabLamport.draw(document.getElementById("lamport"), diagram,
        document.getElementById("observer-clock").checked);
    } catch (e) {
      document.getElementById("trace-help").dataset.error = String(e);
    }
  },
};
document.getElementById("observer-clock").addEventListener("change", () => window.caplabTrace.refresh());
setInterval(() => window.caplabTrace.refresh(), 2000);

drawLegend();
tabs();
if (location.hash === "#messages") document.getElementById("tab-messages").click();
refresh();
setInterval(refresh, 1000);
