// cnnc explorer: draws the network held in <script id="cnnc-data"> (written by viz/explorer.py).
// Layout by dagre (assets/dagre.min.js) over what is visible: folded blocks and repeats are one
// node each, an open block is a cluster around its children. Text from the data reaches the page
// only through textContent and attribute values, never as markup. No request is made, except that
// the live page of `cnnc view` polls its own server for a new version.
(function () {
  "use strict";
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let D = JSON.parse($("cnnc-data").textContent);
  const state = { expanded: new Set(), selected: null, t: { x: 0, y: 0, k: 1 }, layouts: new Map(),
                  hits: [], hit: -1, query: "", layout: null, unit: null };
  const timings = {};
  const api = { state, timings, data: () => D };
  window.cnnc = api;

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v) {
    if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en-US") : String(v);
    return v === null || v === undefined ? "–" : String(v);
  }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(x < 0.001 && x > 0 ? 4 : 2) + " %"; }
  function num(v) {               // a JSON figure: an int, or a fraction written "a/b"
    if (typeof v === "number") return v;
    const m = /^(-?\d+)\/(\d+)$/.exec(String(v));
    return m ? Number(m[1]) / Number(m[2]) : NaN;
  }

  // ------------------------------------------------------------------ the tree
  let parentOf = {}, chains = {}, depthOf = {};
  function index() {
    parentOf = {}; chains = {}; depthOf = {};
    for (const [cid, c] of Object.entries(D.containers))
      for (const child of c.children) parentOf[child] = cid;
    const chain = (id) => { const out = []; let p = parentOf[id]; while (p) { out.push(p); p = parentOf[p]; } return out.reverse(); };
    for (const name of D.order) chains[name] = chain(name);
    for (const cid of Object.keys(D.containers)) depthOf[cid] = chain(cid).length;
  }
  function isContainer(id) { return Object.prototype.hasOwnProperty.call(D.containers, id); }
  function rep(name) {            // the visible item standing for a layer: its outermost folded container
    for (const a of chains[name]) if (!state.expanded.has(a)) return a;
    return name;
  }

  function visible() {
    const nodes = new Map(), clusters = new Set();
    for (const name of D.order) {
      const r = rep(name);
      if (!nodes.has(r)) nodes.set(r, parentOf[r] || null);
      for (const a of chains[name]) { if (!state.expanded.has(a)) break; clusters.add(a); }
    }
    const edges = new Map();
    for (const [s, d] of D.edges) {
      const a = rep(s), b = rep(d);
      if (a !== b && !edges.has(a + "\u0000" + b)) edges.set(a + "\u0000" + b, { src: a, dst: b, label: D.layers[s].shape_text, skip: false });
    }
    markSkips(nodes, [...edges.values()]);
    return { nodes, clusters, edges: [...edges.values()] };
  }

  function markSkips(nodes, edges) {   // a skip: another, longer path joins the same two items
    const preds = new Map();
    for (const e of edges) { if (!preds.has(e.dst)) preds.set(e.dst, []); preds.get(e.dst).push(e.src); }
    const memo = new Map();
    const ancestors = (id) => {
      if (memo.has(id)) return memo.get(id);
      const seen = new Set(), stack = [...(preds.get(id) || [])];
      while (stack.length) { const p = stack.pop(); if (!seen.has(p)) { seen.add(p); for (const q of preds.get(p) || []) stack.push(q); } }
      memo.set(id, seen); return seen;
    };
    for (const e of edges) {
      const others = (preds.get(e.dst) || []).filter((p) => p !== e.src);
      e.skip = others.some((p) => ancestors(p).has(e.src));
    }
  }

  // ------------------------------------------------------------------ boxes
  const canvas2d = document.createElement("canvas").getContext("2d");
  const FONT = D.style.font;
  function textWidth(text, size, weight) {
    canvas2d.font = (weight || "normal") + " " + size + "px " + FONT;
    return canvas2d.measureText(text).width;
  }
  // lines of a box: [text, size, weight, style, colour]
  function lines(id) {
    const grey = D.style.grey;
    if (isContainer(id)) {
      const c = D.containers[id];
      const head = [[c.label, 12, "bold", "normal", "#222"]];
      if (c.sub) head.push([c.sub, 11, "normal", "italic", "#222"]);
      return [head, [[c.summary, 10, "normal", "normal", grey]], [[c.shape_text, 10, "normal", "normal", grey]]];
    }
    const l = D.layers[id], head = [];
    if (l.user_label) head.push([l.user_label, 12, "normal", "italic", "#222"]);
    head.push([l.label, 12, "bold", "normal", "#222"]);
    return [head, [[l.shape_text, 10, "normal", "normal", grey]]];
  }
  const sizes = new Map();
  function boxSize(id) {
    if (sizes.has(id)) return sizes.get(id);
    let w = 0, h = 10;
    for (const row of lines(id)) {
      let rw = 0, rh = 0;
      for (const [t, size, weight] of row) { rw += textWidth(t, size, weight) + 6; rh = Math.max(rh, size + 4); }
      w = Math.max(w, rw); h += rh;
    }
    const out = { w: Math.ceil(w + 18), h: Math.ceil(h) };
    sizes.set(id, out);
    return out;
  }

  // ------------------------------------------------------------------ layout
  function layoutKey() { return [...state.expanded].sort().join("\u0001"); }
  function layout() {
    const key = layoutKey();
    if (state.layouts.has(key)) return state.layouts.get(key);
    const t0 = performance.now();
    const vis = visible();
    const g = new dagre.graphlib.Graph({ compound: true });
    g.setGraph({ rankdir: "TB", nodesep: 22, ranksep: 34, edgesep: 10, marginx: 24, marginy: 30 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const id of vis.nodes.keys()) { const b = boxSize(id); g.setNode(id, { width: b.w, height: b.h }); }
    for (const cid of vis.clusters) g.setNode(cid, {});
    for (const [id, parent] of vis.nodes) if (parent) g.setParent(id, parent);
    for (const cid of vis.clusters) { const p = D.containers[cid].parent; if (p) g.setParent(cid, p); }
    for (const e of vis.edges)
      g.setEdge(e.src, e.dst, { width: textWidth(e.label, 9) + 6, height: 12, labelpos: "c", weight: e.skip ? 0 : 2, minlen: 1 });
    dagre.layout(g);
    const out = { nodes: new Map(), clusters: new Map(), edges: [], width: g.graph().width || 0, height: g.graph().height || 0 };
    for (const id of vis.nodes.keys()) { const n = g.node(id); out.nodes.set(id, { x: n.x, y: n.y, w: n.width, h: n.height }); }
    for (const cid of vis.clusters) { const n = g.node(cid); out.clusters.set(cid, { x: n.x, y: n.y, w: n.width, h: n.height }); }
    for (const e of vis.edges) { const le = g.edge(e.src, e.dst); out.edges.push({ ...e, points: le.points, lx: le.x, ly: le.y }); }
    out.ms = performance.now() - t0;
    timings.lastLayoutMs = out.ms;
    state.layouts.set(key, out);
    return out;
  }

  // ------------------------------------------------------------------ drawing
  function defs() {
    const d = $("defs"); d.replaceChildren();
    for (const [id, colour] of [["arrow", "#4a4a4a"], ["arrow-skip", D.style.skip]]) {
      const m = sv("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
      m.appendChild(sv("path", { d: "M0,0 L10,5 L0,10 z", fill: colour }));
      d.appendChild(m);
    }
  }
  function drawText(g, id, x, top) {
    let y = top + 5;
    for (const row of lines(id)) {
      const rh = Math.max(...row.map((r) => r[1] + 4));
      y += rh;
      const t = sv("text", { x, y: y - 4, "text-anchor": "middle" });
      row.forEach(([text, size, weight, fstyle, colour], i) => {
        const s = sv("tspan", { "font-size": size, "font-weight": weight, "font-style": fstyle, fill: colour }, (i ? "  " : "") + text);
        t.appendChild(s);
      });
      g.appendChild(t);
    }
  }
  function drawNode(parent, id, b) {
    const g = sv("g", { class: "node", "data-id": id });
    const x0 = b.x - b.w / 2, y0 = b.y - b.h / 2;
    if (isContainer(id)) {
      const c = D.containers[id];
      if (c.kind === "repeat") {
        for (const off of [6, 3]) g.appendChild(sv("rect", { x: x0 + off, y: y0 - off, width: b.w, height: b.h, rx: 6, fill: "#fff", stroke: D.style.fold, "stroke-width": 1.2 }));
        g.appendChild(sv("rect", { class: "box", x: x0, y: y0, width: b.w, height: b.h, rx: 6, fill: "#fff", stroke: D.style.fold, "stroke-width": 2 }));
      } else {
        g.appendChild(sv("rect", { class: "box", x: x0, y: y0, width: b.w, height: b.h, rx: 2, fill: D.style.block[0], stroke: D.style.block[1], "stroke-width": 1 }));
        g.appendChild(sv("rect", { x: x0 + 3, y: y0 + 3, width: b.w - 6, height: b.h - 6, rx: 1, fill: "none", stroke: D.style.block[1], "stroke-width": 1 }));
      }
    } else {
      const l = D.layers[id];
      g.appendChild(sv("rect", { class: "box", x: x0, y: y0, width: b.w, height: b.h, rx: 8, fill: l.fill, stroke: l.border, "stroke-width": l.io ? 2 : 1 }));
    }
    const title = sv("title", {}, id);
    g.appendChild(title);
    drawText(g, id, b.x, y0);
    if (state.selected === id) g.classList.add("selected");
    g.addEventListener("click", (ev) => { if (!dragged) { ev.stopPropagation(); clickItem(id); } });
    parent.appendChild(g);
  }
  function drawCluster(parent, cid, b) {
    const c = D.containers[cid];
    const g = sv("g", { class: "cluster", "data-id": cid });
    const depth = depthOf[cid], fills = D.style.clusters;
    const head = 18, x0 = b.x - b.w / 2, y0 = b.y - b.h / 2 - head;
    const repeat = c.kind === "repeat";
    g.appendChild(sv("rect", { x: x0, y: y0, width: b.w, height: b.h + head, rx: 6, fill: fills[Math.min(depth, fills.length - 1)],
                               stroke: repeat ? D.style.fold : "#9aa5b1", "stroke-width": repeat ? 2 : 1 }));
    const h = sv("g", { class: "cluster-head", "data-id": cid });
    h.appendChild(sv("rect", { x: x0, y: y0, width: b.w, height: head, fill: "transparent" }));
    const t = sv("text", { x: x0 + 8, y: y0 + 13, "font-size": 11, "font-weight": "bold", fill: repeat ? D.style.fold : "#222" }, "⊖ " + (repeat ? c.label : (c.sub || c.label)));
    h.appendChild(t);
    h.appendChild(sv("title", {}, cid.slice(2) + " (click to fold)"));
    h.addEventListener("click", (ev) => { if (!dragged) { ev.stopPropagation(); fold(cid); } });
    g.appendChild(h);
    if (state.selected === cid) g.classList.add("selected");
    parent.appendChild(g);
  }
  function drawEdge(parent, e) {
    const colour = e.skip ? D.style.skip : "#4a4a4a";
    const d = e.points.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + "," + p.y.toFixed(1)).join(" ");
    const g = sv("g", { class: "edge", "data-src": e.src, "data-dst": e.dst });
    g.appendChild(sv("path", { d, fill: "none", stroke: colour, "stroke-width": e.skip ? 1.6 : 1, "marker-end": e.skip ? "url(#arrow-skip)" : "url(#arrow)" }));
    g.appendChild(sv("text", { x: e.lx, y: e.ly + 3, "font-size": 9, "text-anchor": "middle", fill: e.skip ? D.style.skip : D.style.grey, class: "edge-label" }, e.label));
    parent.appendChild(g);
  }
  function render() {
    const t0 = performance.now();
    const L = layout();
    state.layout = L;
    const vp = $("viewport"); vp.replaceChildren();
    const layerC = sv("g"), layerE = sv("g"), layerN = sv("g");
    [...L.clusters.entries()].sort((a, b) => depthOf[a[0]] - depthOf[b[0]]).forEach(([cid, b]) => drawCluster(layerC, cid, b));
    for (const e of L.edges) drawEdge(layerE, e);
    for (const [id, b] of L.nodes) drawNode(layerN, id, b);
    vp.append(layerC, layerE, layerN);
    applyTransform();
    timings.lastRenderMs = performance.now() - t0;
    $("status").textContent = L.nodes.size + " nodes, " + L.edges.length + " edges; layout " + L.ms.toFixed(0) + " ms" +
      " · drag or scroll to pan, ctrl+scroll or +/- to zoom, 0 to fit, / to search";
  }

  // ------------------------------------------------------------------ view
  function size() { const r = $("canvas").getBoundingClientRect(); return { w: r.width, h: r.height }; }
  function applyTransform() {
    const t = state.t;
    $("viewport").setAttribute("transform", "translate(" + t.x.toFixed(2) + "," + t.y.toFixed(2) + ") scale(" + t.k.toFixed(4) + ")");
  }
  function fit(least) {          // the whole graph in the window (`least`: no smaller than that scale, top first)
    const L = state.layout, s = size();
    if (!L || !L.width) return;
    const k = Math.max(Math.min(s.w / L.width, s.h / L.height, 1.5), least || 0);
    state.t = { k, x: (s.w - L.width * k) / 2, y: Math.max(0, (s.h - L.height * k) / 2) };
    applyTransform();
  }
  function zoom(factor, cx, cy) {
    const t = state.t, k = Math.max(0.02, Math.min(8, t.k * factor));
    const s = size();
    if (cx === undefined) { cx = s.w / 2; cy = s.h / 2; }
    t.x = cx - (cx - t.x) * (k / t.k); t.y = cy - (cy - t.y) * (k / t.k); t.k = k;
    applyTransform();
  }
  function position(id) {
    const L = state.layout;
    return L.nodes.get(id) || L.clusters.get(id) || null;
  }
  function centre(id) {
    const b = position(id), s = size();
    if (!b) return;
    if (state.t.k < 0.6) state.t.k = 1;
    state.t.x = s.w / 2 - b.x * state.t.k; state.t.y = s.h / 2 - b.y * state.t.k;
    applyTransform();
  }

  // ------------------------------------------------------------------ folding
  function unfold(cid) { state.expanded.add(cid); }
  function fold(cid) {
    state.expanded.delete(cid);
    for (const other of [...state.expanded]) if (chainOf(other).includes(cid)) state.expanded.delete(other);
    select(cid, false);
    render();
  }
  function chainOf(id) { const out = []; let p = parentOf[id]; while (p) { out.push(p); p = parentOf[p]; } return out; }
  function clickItem(id) {
    if (isContainer(id)) {
      const t0 = performance.now();
      unfold(id);
      render();
      timings.lastUnfoldMs = performance.now() - t0;
    }
    select(id, false);
  }
  function unfoldTo(depth) {
    state.expanded = new Set(Object.keys(D.containers).filter((c) => depthOf[c] < depth));
    render(); fit();
  }
  function reveal(id) {             // open every container above `id`
    for (const a of chainOf(id)) state.expanded.add(a);
  }

  // ------------------------------------------------------------------ search
  function search(query, step) {
    const q = query.trim().toLowerCase();
    if (!q) { $("search-status").textContent = ""; return; }
    if (q !== state.query) {
      state.query = q;
      state.hits = D.order.filter((n) => n.toLowerCase().includes(q))
        .concat(Object.keys(D.containers).filter((c) => c.startsWith("b:") && c.slice(2).toLowerCase().includes(q)));
      state.hit = -1;
    }
    if (!state.hits.length) { $("search-status").textContent = "no match"; return; }
    state.hit = (state.hit + (step || 1) + state.hits.length) % state.hits.length;
    const id = state.hits[state.hit];
    reveal(id);
    render();
    select(id, true);
    $("search-status").textContent = (state.hit + 1) + " of " + state.hits.length;
  }

  // ------------------------------------------------------------------ selection and panel
  function select(id, centreIt) {
    state.selected = id;
    state.unit = null;
    document.querySelectorAll("#graph .selected").forEach((e) => e.classList.remove("selected"));
    const shown = document.querySelector('#graph [data-id="' + CSS.escape(id) + '"]');
    if (shown) (shown.classList.contains("cluster-head") ? shown.parentNode : shown).classList.add("selected");
    if (centreIt) centre(id);
    panel();
  }
  function row(table, key, label, value, text) {
    const tr = el("tr", { "data-key": key });
    tr.appendChild(el("td", {}, label));
    const td = el("td", { class: "num", "data-value": JSON.stringify(value === undefined ? null : value) }, text !== undefined ? text : fmt(value));
    tr.appendChild(td);
    table.appendChild(tr);
  }
  function link(id, text) {
    const a = el("span", { class: "link" }, text || id);
    a.addEventListener("click", () => { reveal(id); render(); select(id, true); });
    return a;
  }
  function sources(box, srcs) {
    if (!srcs || !srcs.length) return;
    box.appendChild(el("h3", {}, "source"));
    srcs.forEach((s, i) => {
      box.appendChild(el("div", { class: "loc" }, (i ? "called from " : "") + s.loc));
      if (s.text !== null && s.text !== undefined) box.appendChild(el("pre", { class: "src" }, s.text));
    });
  }
  function figures(box, item) {
    const t = el("table", { id: "figures" });
    row(t, "shape", "output shape", item.shape, "[" + item.shape.join(", ") + "]");
    row(t, "params", "parameters", item.params);
    row(t, "macs", "MACs", item.macs);
    row(t, "flops", "FLOPs", item.flops);
    row(t, "share_macs", "share of MACs", item.share.macs, pct(item.share.macs));
    row(t, "share_params", "share of params", item.share.params, pct(item.share.params));
    box.appendChild(t);
    return t;
  }
  function fieldRows(t, rf) {
    if (!rf) { row(t, "rf", "receptive field", null, "the whole input"); return; }
    row(t, "rf_size", "field size", rf.size, rf.size.join(" × ") + (rf.approximate ? " (approximate)" : ""));
    row(t, "rf_stride", "field stride", rf.stride, rf.stride.join(" × "));
    row(t, "rf_padding", "field start", rf.padding, rf.padding.map((p) => "-" + p).join(", ") + " (padding " + rf.padding.join(", ") + ")");
  }
  function panel() {
    const box = $("selection"); box.replaceChildren();
    const id = state.selected;
    if (id === null) { box.appendChild(el("p", { class: "hint" }, "Click a layer for its figures, a block to unfold it; its header folds it again.")); return; }
    if (isContainer(id)) return containerPanel(box, id);
    const l = D.layers[id];
    box.appendChild(el("h2", { id: "panel-title" }, l.name));
    const head = el("table");
    row(head, "op", "op", l.op);
    if (l.layer) row(head, "layer", "written as", l.layer);
    row(head, "label", "drawn as", (l.user_label ? l.user_label + "  " : "") + l.label);
    if (l.block) row(head, "block", "block", l.block);
    box.appendChild(head);
    const t = figures(box, l);
    fieldRows(t, l.rf);
    if (l.attrs.length) {
      box.appendChild(el("h3", {}, "attributes"));
      const a = el("table", { id: "attributes" });
      for (const [k, v] of l.attrs) row(a, "attr_" + k, k, v, v);
      box.appendChild(a);
    }
    if (l.inputs.length) {
      box.appendChild(el("h3", {}, "inputs"));
      const p = el("div");
      l.inputs.forEach((n, i) => { if (i) p.appendChild(document.createTextNode(", ")); p.appendChild(link(n)); });
      box.appendChild(p);
    }
    sources(box, l.src);
    if (l.fused) {
      box.appendChild(el("h3", {}, "fused group"));
      box.appendChild(el("div", { id: "fused" }, l.fused.pattern + " (" + l.fused.name + ")"));
      const p = el("div");
      l.fused.members.forEach((n, i) => { if (i) p.appendChild(document.createTextNode(" → ")); p.appendChild(link(n)); });
      box.appendChild(p);
    }
    diagnosticsPanel(box, id);
    insidePanel(box, id);
  }
  function containerPanel(box, cid) {
    const c = D.containers[cid];
    box.appendChild(el("h2", { id: "panel-title" }, c.kind === "repeat" ? c.label : c.path));
    const head = el("table");
    row(head, "kind", c.kind === "repeat" ? "repeat" : "block", c.kind === "repeat" ? c.block + " × " + c.count : c.block);
    row(head, "layers", "layers", c.layers);
    box.appendChild(head);
    box.appendChild(el("h3", {}, "totals"));
    figures(box, c);
    const out = el("div");
    out.appendChild(document.createTextNode("output: "));
    out.appendChild(link(c.out));
    box.appendChild(out);
    sources(box, c.src);
    insidePanel(box, c.out);
  }

  // ------------------------------------------------------------------ seeing inside
  function picture(src, cls) {
    const wrap = el("div", { class: "pic" });
    const img = el("img", { src, class: cls || "", alt: "" });
    wrap.appendChild(img);
    return [wrap, img];
  }
  // a layer's own training diagnostics (--metrics with per-layer records): the picture drawn by
  // viz/diagnostics.py, and its figures per epoch as text for the exact values
  function diagnosticsPanel(box, name) {
    const M = D.metrics, d = M && M.layers && M.layers[name];
    if (!d) return;
    box.appendChild(el("h3", {}, "training diagnostics (" + M.epochs + " epochs)"));
    const [wrap, img] = picture(d.svg, "diagnostics");
    img.id = "diagnostics";
    img.alt = name + ": strips over the epochs and histograms";
    box.appendChild(wrap);
    if (!d.rows.length) return;
    const more = el("details", { id: "diagnostics-figures" });
    more.appendChild(el("summary", { class: "hint" }, "figures per epoch"));
    const t = el("table");
    const head = el("tr");
    head.appendChild(el("td", {}, "epoch"));
    for (const c of d.columns) head.appendChild(el("td", { class: "num" }, c.title));
    t.appendChild(head);
    for (const [epoch, ...values] of d.rows) {
      const tr = el("tr", { "data-epoch": epoch });
      tr.appendChild(el("td", {}, epoch));
      values.forEach((v, i) => tr.appendChild(el("td", { class: "num", "data-value": JSON.stringify(v) },
        v === null ? "–" : d.columns[i].log ? v.toPrecision(3) : pct(v))));
      t.appendChild(tr);
    }
    more.appendChild(t);
    box.appendChild(more);
  }
  function insidePanel(box, name) {
    const I = D.inside;
    if (!I) return;
    const m = I.maps[name];
    if (m) {
      box.appendChild(el("h3", {}, "feature maps"));
      const what = m.png ? "first " + m.channels + " of " + m.shape[0] + " channels, --map " + I.mapping + " (" + I.mapping_text + ")" : (m.note || "");
      box.appendChild(el("div", { class: "hint" }, "[" + m.shape.join(", ") + "], values [" + (m.range || []).map((v) => v.toPrecision(4)).join(", ") + "]; " + what));
      if (m.png) {
        const [wrap, img] = picture(m.png, "maps");
        img.id = "maps";
        img.addEventListener("click", (ev) => clickMap(ev, name, m, img));
        box.appendChild(wrap);
        box.appendChild(el("div", { class: "hint", id: "unit-text" }, "click a unit: its receptive field is outlined on the input"));
      }
      const layer = D.layers[name];
      if (layer && layer.op !== "input") inputPicture(box);
    }
    const k = I.kernels[name];
    if (k) {
      box.appendChild(el("h3", {}, "kernels"));
      box.appendChild(picture(k, "kernels")[0]);
    }
  }
  function inputPicture(box) {
    const I = D.inside;
    if (!I.png) return;
    box.appendChild(el("h3", {}, "input " + I.image + " (" + I.size.join("×") + ")"));
    const [wrap, img] = picture(I.png);
    img.id = "input-image";
    wrap.id = "input-pic";
    box.appendChild(wrap);
  }
  function clickMap(ev, name, m, img) {
    const r = img.getBoundingClientRect();        // the picture inside the border
    const gx = (ev.clientX - r.left - img.clientLeft) * img.naturalWidth / img.clientWidth;
    const gy = (ev.clientY - r.top - img.clientTop) * img.naturalHeight / img.clientHeight;
    const [th, tw] = m.tile, step = [th + m.gap, tw + m.gap];
    const col = Math.floor(gx / step[1]), rowi = Math.floor(gy / step[0]);
    const tx = gx - col * step[1], ty = gy - rowi * step[0];
    const channel = rowi * m.columns + col;
    if (tx >= tw || ty >= th || channel >= m.channels) return;
    const shape = m.shape.length === 3 ? m.shape : [m.shape[0], 1, m.shape[1]];
    const i = Math.floor(ty * shape[1] / th), j = Math.floor(tx * shape[2] / tw);
    highlight(name, channel, i, j);
  }
  function highlight(name, channel, i, j) {
    const l = D.layers[name], I = D.inside, text = $("unit-text");
    state.unit = { name, channel, i, j };
    const wrap = $("input-pic");
    if (wrap) wrap.querySelectorAll(".field").forEach((e) => e.remove());
    if (!l || !wrap) return;
    const [H, W] = I.size;
    let rows, cols;
    if (!l.rf) { rows = [0, H - 1]; cols = [0, W - 1]; }
    else if (l.rf.size.length === 2) {
      const span = (axis, u) => { const S = num(l.rf.stride[axis]), P = num(l.rf.padding[axis]), r = num(l.rf.size[axis]);
                                  const a = -P + u * S; return [a, a + r - 1]; };
      rows = span(0, i); cols = span(1, j);
    } else return;
    const clip = (ab, n) => [Math.max(0, Math.ceil(ab[0])), Math.min(n - 1, Math.floor(ab[1]))];
    const cr = clip(rows, H), cc = clip(cols, W);
    const box = el("div", { class: "field", id: "field", "data-rows": cr.join(","), "data-cols": cc.join(","),
                            "data-unclipped": rows.join(",") + ";" + cols.join(",") });
    box.style.left = (100 * cc[0] / W) + "%"; box.style.top = (100 * cr[0] / H) + "%";
    box.style.width = (100 * (cc[1] - cc[0] + 1) / W) + "%"; box.style.height = (100 * (cr[1] - cr[0] + 1) / H) + "%";
    wrap.appendChild(box);
    text.textContent = "unit (" + i + ", " + j + ") of channel " + channel + ": input rows " + cr[0] + "–" + cr[1] + ", columns " + cc[0] + "–" + cc[1] +
      (rows[0] !== cr[0] || rows[1] !== cr[1] || cols[0] !== cc[0] || cols[1] !== cc[1] ? " (unclipped rows " + rows.join("–") + ", columns " + cols.join("–") + ")" : "");
  }
  api.highlight = highlight;

  function networkPanel() {
    const box = $("network-panel"); box.replaceChildren();
    const I = D.inside;
    if (I) {
      const p = I.prediction;
      if (p && p.kind === "classes") {
        box.appendChild(el("h3", {}, "prediction for " + I.image));
        const t = el("table", { id: "top-classes" });
        for (const c of p.top) {
          const tr = el("tr", { "data-index": c.index });
          tr.appendChild(el("td", {}, c.name));
          const td = el("td", { class: "num" });
          const bar = el("span", { class: "bar" }); bar.style.width = Math.round(120 * c.p) + "px";
          td.append(bar, document.createTextNode(" " + (100 * c.p).toFixed(1) + " %"));
          tr.appendChild(td); t.appendChild(tr);
        }
        box.appendChild(t);
      } else if (p && p.kind === "mask") {
        box.appendChild(el("h3", {}, "predicted mask for " + I.image));
        box.appendChild(picture(p.png, "mask")[0]);
        const t = el("table", { id: "mask-shares" });
        for (const s of p.shares) row(t, "class_" + s.index, s.name, s.share, pct(s.share));
        box.appendChild(t);
      }
      box.appendChild(el("h3", {}, "outputs on " + I.image));
      for (const o of D.outputs) {
        const m = I.maps[o];
        if (!m || !m.png) continue;
        const d = el("div", { class: "output-maps", "data-name": o });
        d.appendChild(link(o));
        d.appendChild(el("div", { class: "hint" }, "[" + m.shape.join(", ") + "], --map " + I.mapping));
        d.appendChild(picture(m.png)[0]);
        box.appendChild(d);
      }
    }
    const M = D.metrics;
    if (M) {
      box.appendChild(el("h3", {}, "training (" + M.file + ", " + M.epochs + " epochs)"));
      box.appendChild(picture(M.curves, "curves")[0]);
      if (M.confusion) box.appendChild(picture(M.confusion, "confusion")[0]);
    }
    if (D.warnings.length) {
      box.appendChild(el("h3", {}, "warnings"));
      for (const w of D.warnings) box.appendChild(el("div", { class: "loc" }, (w.loc ? w.loc + ": " : "") + w.message));
    }
  }

  // ------------------------------------------------------------------ header
  function header() {
    $("net-name").textContent = D.network;
    $("net-source").textContent = D.source;
    document.title = D.network + " — cnnc explorer";
    $("summary").textContent = D.summary.join("\n");
    const legend = $("legend"); legend.replaceChildren();
    const used = new Set(Object.values(D.layers).map((l) => l.family));
    for (const [fam, [fill, border]] of Object.entries(D.style.families)) {
      if (!used.has(fam)) continue;
      const s = el("span"); const sw = el("span", { class: "swatch" });
      sw.style.background = fill; sw.style.borderColor = border;
      s.append(sw, document.createTextNode(fam)); legend.appendChild(s);
    }
    const extra = [["folded block", D.style.block[0], D.style.block[1]], ["repeated block ×N", "#fff", D.style.fold]];
    for (const [name, fill, border] of extra) {
      const s = el("span"); const sw = el("span", { class: "swatch" });
      sw.style.background = fill; sw.style.borderColor = border;
      s.append(sw, document.createTextNode(name)); legend.appendChild(s);
    }
    const s = el("span"); const sw = el("span", { class: "swatch" }); sw.style.background = D.style.skip; sw.style.height = "3px";
    s.append(sw, document.createTextNode("skip connection")); legend.appendChild(s);
  }

  // ------------------------------------------------------------------ input: pointer, wheel, keys
  let dragged = false;
  function pointer() {
    const svg = $("graph");
    let start = null;
    svg.addEventListener("pointerdown", (ev) => { start = { x: ev.clientX, y: ev.clientY, tx: state.t.x, ty: state.t.y }; dragged = false; });
    svg.addEventListener("pointermove", (ev) => {
      if (!start) return;
      const dx = ev.clientX - start.x, dy = ev.clientY - start.y;
      if (!dragged && Math.hypot(dx, dy) > 4) { dragged = true; svg.classList.add("dragging"); svg.setPointerCapture(ev.pointerId); }
      if (dragged) { state.t.x = start.tx + dx; state.t.y = start.ty + dy; applyTransform(); }
    });
    const end = () => { start = null; svg.classList.remove("dragging"); setTimeout(() => { dragged = false; }, 0); };
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointercancel", end);
    svg.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = svg.getBoundingClientRect();
      if (ev.ctrlKey || ev.metaKey) zoom(Math.exp(-ev.deltaY * 0.01), ev.clientX - r.left, ev.clientY - r.top);
      else { state.t.x -= ev.deltaX; state.t.y -= ev.deltaY; applyTransform(); }
    }, { passive: false });
    document.addEventListener("keydown", (ev) => {
      if (ev.target instanceof HTMLInputElement) { if (ev.key === "Escape") ev.target.blur(); return; }
      const pan = { ArrowLeft: [60, 0], ArrowRight: [-60, 0], ArrowUp: [0, 60], ArrowDown: [0, -60] }[ev.key];
      if (pan) { state.t.x += pan[0]; state.t.y += pan[1]; applyTransform(); ev.preventDefault(); }
      else if (ev.key === "+" || ev.key === "=") zoom(1.25);
      else if (ev.key === "-") zoom(0.8);
      else if (ev.key === "0" || ev.key === "f") fit();
      else if (ev.key === "/") { $("search").focus(); ev.preventDefault(); }
      else if (ev.key === "Escape") { state.selected = null; render(); panel(); }
    });
  }
  function tools() {
    $("search").addEventListener("keydown", (ev) => { if (ev.key === "Enter") search(ev.target.value, ev.shiftKey ? -1 : 1); });
    $("fold-all").addEventListener("click", () => { state.expanded.clear(); render(); fit(); });
    $("unfold").addEventListener("click", () => unfoldTo(Number($("depth").value) || 0));
    $("fit").addEventListener("click", () => fit());
    window.addEventListener("resize", () => fit(0.75));
  }

  // ------------------------------------------------------------------ live (cnnc view)
  function live() {
    if (document.body.dataset.live !== "1") return;
    let version = D.version, busy = false;
    setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        const v = await (await fetch("version", { cache: "no-store" })).json();
        if (v.version !== version) {
          const next = await (await fetch("data.json", { cache: "no-store" })).json();
          update(next);
          version = next.version;
        }
      } catch (err) { $("status").textContent = "cnnc view is not answering (stopped?)"; }
      busy = false;
    }, 500);
  }
  function update(next) {
    const error = next.error;
    $("error").hidden = !error;
    $("error-text").textContent = error || "";
    if (next.layers) {
      D = next;
      sizes.clear(); state.layouts.clear(); state.hits = []; state.query = "";
      index();
      state.expanded = new Set([...state.expanded].filter(isContainer));
      if (state.selected !== null && !isContainer(state.selected) && !D.layers[state.selected]) state.selected = null;
      header(); render(); panel(); networkPanel();
    }
    api.version = (api.version || 0) + 1;
  }

  // ------------------------------------------------------------------ start
  function start() {
    index(); defs(); header();
    state.expanded = new Set(Object.keys(D.containers).filter((c) => depthOf[c] < (D.depth || 0)));
    $("depth").value = Math.max(1, D.depth || 0);
    render(); fit(0.75); panel(); networkPanel(); pointer(); tools(); live();
    if (D.error) update(D);
    timings.openMs = performance.now();
    api.ready = true;
  }
  api.unfold = (cid) => clickItem(cid);
  api.fold = fold;
  api.search = search;
  start();
})();
