// A space-time diagram (Lamport, 1978) of the messages in a caplab trace: a vertical line per
// member, time downwards, an arrow per message from its send to its receipt, a cross where a
// fault dropped it. Each end is drawn at its own member's clock, or with `observer` at the
// observer's clock (the injected skew taken out): under a clock skew, messages then arrive
// above where they left — received before they were sent, by the clocks' account.
"use strict";
window.caplabLamport = (function () {
  const NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // The times of a message's two ends on the chosen clock (null when unknown).
  function ends(m, observer) {
    const sent = m.sentMs == null ? null : m.sentMs - (observer ? m.sentSkewMs : 0);
    const received = m.receivedMs == null ? null : m.receivedMs - (observer ? m.receivedSkewMs : 0);
    return [sent, received];
  }
  function cross(x, y) {
    return el("path", { class: "cross", d: `M${x - 5},${y - 5}L${x + 5},${y + 5}M${x - 5},${y + 5}L${x + 5},${y - 5}` });
  }
  function draw(svg, d, observer) {
    svg.replaceChildren();
    const width = 1000, top = 40, height = 560;
    const times = d.messages.flatMap((m) => ends(m, observer)).filter((t) => t != null);
    const t0 = times.length ? Math.min(...times) : d.nowMs - d.windowMs;
    const t1 = times.length ? Math.max(...times) : d.nowMs;
    const Y = (t) => top + ((t - t0) / Math.max(1, t1 - t0)) * height;
    const gap = width / (d.members.length + 1);
    const X = new Map(d.members.map((id, i) => [id, gap * (i + 1)]));
    const defs = el("defs");
    for (const cls of ["ok", "delayed", "backwards"]) {
      const marker = el("marker", { id: "head-" + cls, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
      marker.append(el("path", { d: "M0,0L10,5L0,10z", class: "head-" + cls }));
      defs.append(marker);
    }
    svg.append(defs);
    for (const [id, x] of X) {
      svg.append(el("line", { class: "lamport-line", x1: x, y1: top - 10, x2: x, y2: top + height + 10 }));
      svg.append(el("text", { class: "lamport-label", x, y: 20, "text-anchor": "middle" }, "n" + id));
    }
    let backwards = 0, dropped = 0;
    for (const m of d.messages) {
      const [sent, received] = ends(m, observer);
      const x1 = X.get(m.from), x2 = X.get(m.to);
      if (x1 === undefined || x2 === undefined) continue;
      const label = m.kind + (m.term != null ? " t" + m.term : "") + (m.indexes ? " [" + m.indexes[0] + "–" + m.indexes[1] + "]" : "");
      const y1 = sent != null ? Y(sent) : Y(received), g = el("g", { "data-kind": m.kind, "data-outcome": m.outcome });
      g.append(el("title", {}, `${label} n${m.from}→n${m.to}: ${m.outcome}`));
      if (m.outcome === "droppedAtSender" || (m.outcome === "unreceived" && received == null)) {
        // Never arrived: a short stub towards the receiver, ending in a cross when dropped.
        const xe = x1 + (x2 - x1) * 0.25;
        g.append(el("line", { class: "msg " + (m.outcome === "unreceived" ? "ok" : "dropped"), x1, y1, x2: xe, y2: y1 + 6 }));
        if (m.outcome === "droppedAtSender") { g.append(cross(xe, y1 + 6)); dropped++; }
      } else {
        const y2 = received != null ? Y(received) : y1;
        const back = sent != null && received != null && received < sent;
        if (back) backwards++;
        const cls = m.outcome === "droppedAtReceiver" ? "dropped" : back ? "backwards" : m.outcome === "delayed" ? "delayed" : "ok";
        const line = el("line", { class: "msg " + cls, x1, y1, x2, y2, "data-backwards": back });
        if (cls !== "dropped") line.setAttribute("marker-end", "url(#head-" + cls + ")");
        g.append(line);
        if (cls === "dropped") { g.append(cross(x2, y2)); dropped++; }
      }
      svg.append(g);
    }
    const clock = observer ? "the observer's clock" : "each member's own clock";
    svg.append(el("text", { class: "lamport-label", id: "lamport-summary", x: 10, y: top + height + 35 },
      `${d.messages.length} messages in ${(d.windowMs / 1000).toFixed(0)} s, ${dropped} dropped, ${backwards} received before sent on ${clock}` +
      (d.unread.length ? "; unread: " + d.unread.join("; ") : "")));
    svg.setAttribute("viewBox", `0 0 ${width} ${top + height + 45}`);
    svg.dataset.backwards = String(backwards);
    svg.dataset.dropped = String(dropped);
  }
  return { draw };
})();
