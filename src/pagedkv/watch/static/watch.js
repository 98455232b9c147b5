// pagedkv watch: draws the recorded KV pools frame by frame. It computes nothing about the simulation:
// every number comes from the embedded document (see pagedkv/watch/document.py), and the grid is the
// recorded placements and block tables. window.pagedkvWatch exposes the state for tests and benchmarks.
"use strict";

(function () {
  const api = (window.pagedkvWatch = { ready: false, frame: 0, firstFrameMs: null, renderMs: null, renders: 0 });
  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.NumberFormat("en-US");
  const count = (n) => fmt.format(n);
  const pct = (slots, capacity) => ((100 * slots) / capacity).toFixed(1) + " %";

  async function loadDocument() {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser cannot inflate the embedded data (no DecompressionStream); use a current Chrome, Firefox or Safari");
    }
    const raw = atob($("watch-data").textContent.trim());
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return JSON.parse(await new Response(stream).text());
  }

  // ------------------------------------------------------------------ per-state decoding

  // The holder drawn for a shared block: the smallest (request, sample) among its holders.
  function before(P, a, b) {
    return P.request[a] < P.request[b] || (P.request[a] === P.request[b] && P.sample[a] < P.sample[b]);
  }

  function decodeState(cache, index) {
    const memo = cache.memo;
    if (memo.index === index) return memo.view;
    const st = cache.states[index];
    const P = cache.placements;
    const N = cache.num_units, B = cache.unit_slots;
    const view = { state: st, bySeq: new Map(), owner: new Int32Array(N).fill(-1) };
    const seqs = st.seqs;
    for (let j = 0; j < seqs.length; j += 3) {
      const p = seqs[j];
      view.bySeq.set(P.request[p] + ":" + P.sample[p], { p, length: seqs[j + 1], held: seqs[j + 2] });
    }
    if (cache.kind === "blocks") {
      view.ref = new Uint16Array(N);
      view.tokens = new Uint16Array(N);
      view.usable = new Uint16Array(N).fill(B); // slots before "never used" starts in this block
      view.reused = new Uint8Array(N);
      view.cached = new Uint8Array(N);
      view.copied = new Map();
      for (let j = 0; j < seqs.length; j += 3) {
        const p = seqs[j], length = seqs[j + 1], held = seqs[j + 2], blocks = P.blocks[p];
        const lastBlock = Math.ceil(P.final_len[p] / B) - 1;
        for (let i = 0; i < held; i++) {
          const b = blocks[i];
          view.ref[b] += 1;
          const tokens = Math.min(B, length - i * B);
          if (tokens > view.tokens[b]) view.tokens[b] = tokens;
          if (view.owner[b] < 0 || before(P, p, view.owner[b])) view.owner[b] = p;
          if (i === lastBlock) view.usable[b] = P.final_len[p] - i * B;
          if (i < P.reused[p]) view.reused[b] = 1;
        }
      }
      const bits = atob(st.cached);
      let cachedCount = 0;
      for (let i = 0; i < bits.length; i++) {
        const byte = bits.charCodeAt(i);
        if (!byte) continue;
        for (let k = 0; k < 8; k++) if (byte & (1 << k)) { view.cached[i * 8 + k] = 1; cachedCount++; }
      }
      view.cachedCount = cachedCount;
      for (const [step, src, dst] of st.copies) view.copied.set(dst, { step, src });
      let shared = 0;
      for (let b = 0; b < N; b++) if (view.ref[b] > 1) shared++;
      view.shared = shared;
    } else {
      for (let j = 0; j < seqs.length; j += 3) {
        const p = seqs[j];
        for (let u = 0; u < P.units[p]; u++) view.owner[P.start[p] + u] = p;
      }
      view.lengthOf = new Map();
      for (let j = 0; j < seqs.length; j += 3) view.lengthOf.set(seqs[j], seqs[j + 1]);
    }
    memo.index = index;
    memo.view = view;
    return view;
  }

  // ------------------------------------------------------------------ geometry

  function layoutCache(cache, width, height) {
    const N = cache.num_units;
    const g = { width };
    if (cache.kind === "rows") {
      g.rowHeight = Math.max(3, Math.min(28, Math.floor(height / N)));
      g.gap = g.rowHeight >= 6 ? 1 : 0;
      g.height = N * g.rowHeight;
    } else {
      let cell = Math.floor(Math.sqrt((width * height) / N));
      cell = Math.max(2, Math.min(48, cell));
      g.cell = cell;
      g.gap = cell >= 5 ? 1 : 0;
      g.cols = Math.max(1, Math.floor(width / cell));
      g.height = Math.ceil(N / g.cols) * cell;
    }
    return g;
  }

  function cellBox(g, unit) {
    if (g.rowHeight) return { x: 0, y: unit * g.rowHeight, w: g.width, h: g.rowHeight - g.gap };
    const col = unit % g.cols, row = Math.floor(unit / g.cols);
    return { x: col * g.cell, y: row * g.cell, w: g.cell - g.gap, h: g.cell - g.gap };
  }

  function unitAt(cache, g, x, y) {
    if (g.rowHeight) {
      const row = Math.floor(y / g.rowHeight);
      return row >= 0 && row < cache.num_units ? row : -1;
    }
    const col = Math.floor(x / g.cell), row = Math.floor(y / g.cell);
    if (col < 0 || col >= g.cols || row < 0) return -1;
    const unit = row * g.cols + col;
    return unit < cache.num_units ? unit : -1;
  }

  // ------------------------------------------------------------------ drawing

  // Fill [a, a + span) slots of a cell with the states ending at edges[k] in colours[k], left to right,
  // through fill(colour, x, y, w, h): a pixel buffer for the whole grid, or the canvas for highlights.
  function drawSpans(fill, box, a, span, edges, colours) {
    let pos = a, left = box.x;
    for (let k = 0; k < edges.length && pos < a + span; k++) {
      const stop = Math.min(a + span, edges[k]);
      if (stop <= pos) continue;
      let right = stop >= a + span ? box.x + box.w : box.x + Math.round(((stop - a) / span) * box.w);
      if (k === 0 && right <= left) right = left + 1; // a token always shows, however small
      if (right > left) fill(colours[k], left, box.y, right - left, box.h);
      left = Math.max(left, right);
      pos = stop;
    }
  }

  const canvasFill = (ctx) => (colour, x, y, w, h) => {
    ctx.fillStyle = colour;
    ctx.fillRect(x, y, w, h);
  };

  // "#rrggbb" as one little-endian RGBA pixel (what a Uint32Array over ImageData holds).
  const pixelOf = new Map();
  function pixel(colour) {
    let value = pixelOf.get(colour);
    if (value === undefined) {
      const n = parseInt(colour.slice(1), 16);
      value = (0xff000000 | ((n & 0xff) << 16) | (n & 0xff00) | ((n >> 16) & 0xff)) >>> 0;
      pixelOf.set(colour, value);
    }
    return value;
  }

  // The grid is painted into a pixel buffer and put on the canvas at once: ~10x faster than one
  // fillRect per cell state for a pool of 9,000 blocks.
  function bufferFill(panel) {
    const g = panel.geometry;
    if (!panel.image || panel.image.width !== g.width || panel.image.height !== g.height) {
      panel.image = panel.ctx.createImageData(g.width, g.height);
      panel.pixels = new Uint32Array(panel.image.data.buffer);
    }
    const pixels = panel.pixels, width = g.width;
    const fill = (colour, x, y, w, h) => {
      const value = pixel(colour);
      for (let row = y; row < y + h; row++) pixels.fill(value, row * width + x, row * width + x + w);
    };
    return fill;
  }

  function render(doc, ui, frame) {
    const started = performance.now();
    for (const panel of ui.panels) drawPanel(doc, ui, panel, frame);
    updateSelection(doc, ui, frame);
    const t = doc.times[frame];
    $("clock").textContent = `t = ${t.toFixed(2)} s · frame ${frame + 1} / ${doc.times.length}`;
    api.frame = frame;
    api.renders += 1;
    api.renderMs = performance.now() - started;
  }

  function drawPanel(doc, ui, panel, frame) {
    const cache = panel.cache, g = panel.geometry, ctx = panel.ctx;
    const colours = doc.palette, S = colours.states;
    const fill = bufferFill(panel);
    fill(S.background, 0, 0, g.width, g.height);
    const index = cache.frame_state[frame];
    const view = index >= 0 ? decodeState(cache, index) : null;
    const P = cache.placements, B = cache.unit_slots;
    const seqColour = (p) => colours.sequence[P.colour[p]];
    const paleColour = (p) => colours.reserved[P.colour[p]];
    for (let u = 0; u < cache.num_units; u++) {
      const box = cellBox(g, u);
      const p = view ? view.owner[u] : -1;
      if (p < 0) {
        fill(view && view.cached && view.cached[u] ? S.cached : S.free, box.x, box.y, box.w, box.h);
      } else if (cache.kind === "blocks") {
        const edges = [view.tokens[u], view.usable[u], B];
        drawSpans(fill, box, 0, B, edges, [seqColour(p), paleColour(p), S.never_used]);
      } else {
        const length = view.lengthOf.get(p);
        const edges = [length, P.final_len[p], P.claimed[p], P.units[p] * B];
        const a = cache.kind === "rows" ? 0 : (u - P.start[p]) * B;
        drawSpans(fill, box, a, B, edges, [seqColour(p), paleColour(p), S.never_used, S.rounding]);
      }
    }
    ctx.putImageData(panel.image, 0, 0);
    if (view && cache.kind === "blocks") {
      for (let u = 0; u < cache.num_units; u++) if (view.owner[u] >= 0) drawMarks(ctx, cellBox(g, u), view, u, S);
    }
    if (view) highlight(ctx, g, cache, view, ui.focus(), colours);
    if (view && doc.times[frame] >= cache.end_time) {
      // every request is served: the last step's memory stays faded under the news
      ctx.fillStyle = "rgba(255, 255, 255, 0.78)";
      ctx.fillRect(0, 0, g.width, g.height);
      ctx.fillStyle = "#047857";
      ctx.font = "bold 18px sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(`all ${count(cache.requests)} requests done at ${cache.end_time.toFixed(1)} s`, g.width / 2, g.height / 2);
    }
    updateNumbers(doc, panel, frame, view);
  }

  // The focused sequence stands out: everything else fades, its cells are redrawn and outlined.
  function highlight(ctx, g, cache, view, key, colours) {
    const seq = key && view.bySeq.get(key);
    if (!seq) return;
    const P = cache.placements, B = cache.unit_slots, S = colours.states, p = seq.p;
    const units = cache.kind === "blocks"
      ? P.blocks[p].slice(0, seq.held)
      : Array.from({ length: P.units[p] }, (_, i) => P.start[p] + i);
    ctx.fillStyle = "rgba(255, 255, 255, 0.72)";
    ctx.fillRect(0, 0, g.width, g.height);
    const solid = colours.sequence[P.colour[p]], pale = colours.reserved[P.colour[p]];
    units.forEach((u, i) => {
      const box = cellBox(g, u);
      if (cache.kind === "blocks") {
        const tokens = Math.min(B, seq.length - i * B);
        const usable = i === Math.ceil(P.final_len[p] / B) - 1 ? P.final_len[p] - i * B : B;
        drawSpans(canvasFill(ctx), box, 0, B, [tokens, usable, B], [solid, pale, S.never_used]);
        drawMarks(ctx, box, view, u, S);
      } else {
        const a = cache.kind === "rows" ? 0 : i * B;
        drawSpans(canvasFill(ctx), box, a, B, [seq.length, P.final_len[p], P.claimed[p], P.units[p] * B], [solid, pale, S.never_used, S.rounding]);
      }
    });
    ctx.lineWidth = 1;
    ctx.strokeStyle = S.ink;
    for (const u of units) {
      const box = cellBox(g, u);
      ctx.strokeRect(box.x - 0.5, box.y - 0.5, box.w + 1, box.h + 1);
    }
    if (cache.kind === "blocks" && g.cell >= 16) {
      ctx.font = `${Math.min(11, g.cell - 6)}px sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      units.forEach((u, i) => {
        const box = cellBox(g, u);
        ctx.fillStyle = "#ffffff";
        ctx.fillRect(box.x + 2, box.y + box.h - 11, box.w - 4, 9);
        ctx.fillStyle = S.ink;
        ctx.fillText(String(i), box.x + box.w / 2, box.y + box.h - 6.5);
      });
    }
  }

  function drawMarks(ctx, box, view, u, S) {
    if (box.w < 4) return;
    const s = Math.max(2, Math.floor(box.w / 3));
    if (view.ref[u] > 1) {
      ctx.fillStyle = S.ink; // shared: a dark corner, and the reference count when it fits
      ctx.beginPath();
      ctx.moveTo(box.x + box.w - s - 1, box.y);
      ctx.lineTo(box.x + box.w, box.y);
      ctx.lineTo(box.x + box.w, box.y + s + 1);
      ctx.fill();
      if (box.w >= 14) {
        ctx.font = `bold ${Math.min(12, box.h - 3)}px sans-serif`;
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.lineWidth = 3;
        ctx.strokeStyle = S.ink;
        ctx.strokeText(String(view.ref[u]), box.x + box.w / 2 + 1, box.y + box.h / 2 + 1);
        ctx.fillStyle = "#ffffff";
        ctx.fillText(String(view.ref[u]), box.x + box.w / 2 + 1, box.y + box.h / 2 + 1);
      }
    }
    if (view.reused[u]) {
      ctx.fillStyle = "#ffffff"; // served by the prefix cache: a white square, bottom right
      ctx.fillRect(box.x + box.w - s, box.y + box.h - s, s, s);
    }
    if (view.copied.has(u)) {
      ctx.fillStyle = S.copy; // written by copy-on-write since the previous frame: an orange top bar
      ctx.fillRect(box.x, box.y, box.w, Math.max(1, Math.floor(box.h / 4)));
    }
  }

  function setMetric(panel, key, label, value, text, swatch) {
    let row = panel.metrics.get(key);
    if (!row) {
      row = document.createElement("div");
      row.dataset.metric = key;
      row.innerHTML = "<dt></dt><dd></dd>";
      row.firstChild.textContent = label;
      if (swatch) row.firstChild.insertAdjacentHTML("afterbegin", `<span class="swatch" style="background:${swatch}"></span>`);
      panel.dl.appendChild(row);
      panel.metrics.set(key, row);
    }
    row.dataset.value = String(value);
    row.lastChild.textContent = text;
  }

  function updateNumbers(doc, panel, frame, view) {
    const cache = panel.cache;
    const stepline = panel.stepline;
    if (!view) {
      stepline.innerHTML = "not started yet";
      stepline.dataset.step = "-1";
      return;
    }
    const st = view.state, C = cache.capacity_slots;
    stepline.dataset.step = String(st.step);
    const done = doc.times[frame] >= cache.end_time;
    stepline.innerHTML = `step <b>${count(st.step)}</b> of ${count(cache.steps)} · started at ${st.time.toFixed(2)} s` +
      (done ? ` · <span class="done">all requests done at ${cache.end_time.toFixed(1)} s</span>` : "");
    let bar = "";
    for (const [category, slots] of Object.entries(st.breakdown)) {
      const label = doc.breakdown_labels[category] || category.replace(/_/g, " ");
      const colour = barColour(doc, category);
      setMetric(panel, category, label, slots, pct(slots, C), colour);
      bar += `<span title="${label}" style="width:${(100 * slots) / C}%;background:${colour}"></span>`;
    }
    panel.bar.innerHTML = bar;
    setMetric(panel, "held", "held", st.held, pct(st.held, C));
    setMetric(panel, "batch", "running sequences", st.batch, count(st.batch));
    setMetric(panel, "queue", "queued requests", st.queue, count(st.queue));
    setMetric(panel, "preemptions", "preemptions so far", st.preemptions, count(st.preemptions));
    if (cache.kind === "blocks") {
      setMetric(panel, "shared", "shared blocks", view.shared, count(view.shared));
      setMetric(panel, "saved", "slots saved by sharing", st.saved, count(st.saved));
      setMetric(panel, "cow_copies", "copy-on-write so far", st.cow_copies, count(st.cow_copies));
      if (cache.prefix) {
        setMetric(panel, "cached", "cached free blocks", view.cachedCount, count(view.cachedCount));
        setMetric(panel, "prefix_hit_tokens", "prefix-cache hit tokens", st.prefix_hit_tokens, count(st.prefix_hit_tokens));
      }
      const copies = st.copies;
      panel.events.textContent = copies.length
        ? `copy-on-write since the previous frame: ${copies.length} — ` +
          copies.slice(0, 4).map(([step, src, dst]) => `block ${src} → ${dst} (step ${step})`).join(", ") +
          (copies.length > 4 ? ", …" : "")
        : "";
    }
  }

  function barColour(doc, category) {
    const S = doc.palette.states;
    return { token_states: doc.palette.sequence[14], reservation: doc.palette.reserved[14], internal: S.never_used, free: S.free }[category] || "#d1d5db";
  }

  // ------------------------------------------------------------------ selection and hover

  function describeSeq(doc, cache, view, seq) {
    const P = cache.placements, B = cache.unit_slots, p = seq.p;
    const block = document.createElement("div");
    block.className = "table";
    block.dataset.cache = cache.name;
    if (cache.kind === "blocks") {
      const table = P.blocks[p].slice(0, seq.held);
      block.dataset.blocks = table.join(",");
      const head = document.createElement("div");
      head.innerHTML = `<b>${cache.name}</b>: ${count(seq.length)} tokens in ${table.length} blocks of ${B} · block table (logical → physical):`;
      block.appendChild(head);
      table.forEach((b, i) => {
        const entry = document.createElement("span");
        entry.className = "entry" + (view.ref[b] > 1 ? " shared" : "");
        entry.dataset.logical = String(i);
        entry.textContent = `${i}→${b}` + (view.ref[b] > 1 ? ` ×${view.ref[b]}` : "");
        entry.title = view.ref[b] > 1 ? `ref count ${view.ref[b]}` : "";
        block.appendChild(entry);
      });
    } else {
      const first = P.start[p] * (cache.kind === "rows" ? cache.unit_slots : B);
      const size = cache.kind === "rows" ? cache.unit_slots : P.units[p] * B;
      block.dataset.start = String(P.start[p]);
      const where = cache.kind === "rows" ? `row ${P.start[p]}` : `buddy units ${count(P.start[p])}–${count(P.start[p] + P.units[p] - 1)}`;
      block.innerHTML = `<b>${cache.name}</b>: ${where}, slots ${count(first)}–${count(first + size - 1)}, one contiguous chunk of ${count(size)} slots: ` +
        `${count(seq.length)} tokens, ${count(P.final_len[p] - seq.length)} reserved for tokens to come, ` +
        `${count(P.claimed[p] - P.final_len[p])} never used` +
        (size > P.claimed[p] ? `, ${count(size - P.claimed[p])} buddy rounding` : "");
    }
    return block;
  }

  function updateSelection(doc, ui, frame) {
    const box = $("selection");
    const key = ui.focus();
    if (!key) {
      if (box.dataset.key) {
        box.innerHTML = '<h3>Sequence</h3><p class="hint">Hover over or click a sequence in any panel to see where its KV cache lives.</p>';
        delete box.dataset.key;
      }
      return;
    }
    const [request, sample] = key.split(":").map(Number);
    box.dataset.key = key;
    box.innerHTML = "";
    const head = document.createElement("h3");
    const label = doc.num_seqs > 1 ? `request ${request}, sequence ${sample}` : `request ${request}`;
    head.textContent = `${label}${ui.selected === key ? " (selected: click an empty cell to clear)" : ""}`;
    box.appendChild(head);
    for (const panel of ui.panels) {
      const cache = panel.cache;
      const index = cache.frame_state[frame];
      const view = index >= 0 ? decodeState(cache, index) : null;
      const seq = view && view.bySeq.get(key);
      if (seq) {
        box.appendChild(describeSeq(doc, cache, view, seq));
      } else {
        const none = document.createElement("div");
        none.className = "table";
        none.dataset.cache = cache.name;
        none.innerHTML = `<b>${cache.name}</b>: not in memory at this frame (waiting, preempted or done)`;
        box.appendChild(none);
      }
    }
  }

  function tooltipText(doc, cache, view, u) {
    const P = cache.placements, B = cache.unit_slots;
    const name = (p) => (doc.num_seqs > 1 ? `request ${P.request[p]} seq ${P.sample[p]}` : `request ${P.request[p]}`);
    if (cache.kind === "blocks") {
      if (view.owner[u] < 0) return `block ${u}: free` + (view.cached[u] ? ", still cached: a prompt with the same prefix reuses it without recomputing" : "");
      const holders = [];
      const seqs = view.state.seqs;
      for (let j = 0; j < seqs.length; j += 3) {
        const p = seqs[j], held = seqs[j + 2];
        const i = P.blocks[p].indexOf(u);
        if (i >= 0 && i < held) holders.push(`${name(p)} (logical ${i})`);
      }
      const used = view.tokens[u], usable = view.usable[u];
      let text = `block ${u}: ${used}/${B} tokens` + (usable < B ? `, ${B - usable} slots never used` : "");
      text += ` · ref count ${view.ref[u]}: ${holders.join(", ")}`;
      if (view.reused[u]) text += " · served by the prefix cache";
      if (view.copied.has(u)) {
        const c = view.copied.get(u);
        text += ` · copy-on-write of block ${c.src} at step ${c.step}`;
      }
      return text;
    }
    const p = view.owner[u];
    const unitName = cache.kind === "rows" ? `row ${u}` : `unit ${u}`;
    if (p < 0) return `${unitName}: free`;
    const length = view.lengthOf.get(p);
    const size = cache.kind === "rows" ? B : P.units[p] * B;
    return `${unitName}: ${name(p)} · ${count(length)} tokens of ${count(P.final_len[p])} (prompt ${count(P.prompt_len[p])}) · ` +
      `reserved ${count(P.claimed[p])}` + (size > P.claimed[p] ? `, chunk ${count(size)}` : "") +
      ` · never used: ${count(P.claimed[p] - P.final_len[p])}`;
  }

  function keyAt(cache, view, u) {
    if (!view || u < 0) return null;
    const p = view.owner[u];
    if (p < 0) return null;
    return cache.placements.request[p] + ":" + cache.placements.sample[p];
  }

  // ------------------------------------------------------------------ building the page

  function buildLegend(doc) {
    const P = doc.palette, S = P.states;
    const items = [
      [`linear-gradient(90deg, ${P.sequence[0]} 33%, ${P.sequence[7]} 33% 66%, ${P.sequence[14]} 66%)`, "token states (a colour per sequence)"],
      [`linear-gradient(90deg, ${P.reserved[0]} 33%, ${P.reserved[7]} 33% 66%, ${P.reserved[14]} 66%)`, "reserved, not written yet"],
      [S.never_used, "never used (reserved past the sequence's end)"],
      [S.free, "free"],
    ];
    const kinds = new Set(doc.caches.map((c) => c.kind));
    if (kinds.has("buddy")) items.push([S.rounding, "buddy rounding (Orca)"]);
    if (doc.caches.some((c) => c.prefix_caching)) items.push([S.cached, "free, still in the prefix cache"]);
    if (kinds.has("blocks") && (doc.num_seqs > 1 || doc.caches.some((c) => c.prefix_caching))) {
      items.push([`linear-gradient(225deg, ${S.ink} 35%, ${P.sequence[5]} 35%)`, "shared block (ref count > 1)"]);
      items.push([`linear-gradient(180deg, ${S.copy} 30%, ${P.sequence[9]} 30%)`, "just copied (copy-on-write)"]);
      if (doc.caches.some((c) => c.prefix_caching)) items.push([`linear-gradient(315deg, #fff 35%, ${P.sequence[3]} 35%)`, "reused from the prefix cache"]);
    }
    $("legend").innerHTML = items
      .map(([bg, text]) => `<span class="item"><span class="swatch" style="background:${bg}"></span>${text}</span>`)
      .join("");
  }

  function buildPanels(doc, ui) {
    const host = $("panels");
    host.innerHTML = "";
    host.style.gridTemplateColumns = `repeat(${doc.caches.length}, minmax(0, 1fr))`;
    ui.panels = doc.caches.map((cache) => {
      cache.memo = { index: -1, view: null };
      cache.prefix = cache.kind === "blocks" && cache.prefix_caching;
      const section = document.createElement("section");
      section.className = "panel";
      section.dataset.cache = cache.name;
      section.innerHTML = `<h2><span>${cache.name}</span><span class="layout">${cache.layout}</span></h2>` +
        '<div class="stepline"></div><div class="bar"></div><canvas></canvas><dl></dl><div class="events"></div>';
      host.appendChild(section);
      const canvas = section.querySelector("canvas");
      canvas.dataset.cache = cache.name;
      return {
        cache, section, canvas, ctx: canvas.getContext("2d", { alpha: false }),
        stepline: section.querySelector(".stepline"), bar: section.querySelector(".bar"),
        dl: section.querySelector("dl"), events: section.querySelector(".events"), metrics: new Map(),
      };
    });
  }

  function sizePanels(ui) {
    const height = Math.max(220, Math.min(620, window.innerHeight * 0.52));
    for (const panel of ui.panels) {
      const width = Math.max(160, Math.floor(panel.section.clientWidth - 20));
      const g = layoutCache(panel.cache, width, height);
      panel.geometry = g;
      const canvas = panel.canvas;
      canvas.width = g.width;
      canvas.height = g.height;
      canvas.style.width = g.width + "px";
      canvas.style.height = g.height + "px";
      Object.assign(canvas.dataset, {
        kind: panel.cache.kind, width: String(g.width), cell: String(g.cell || 0), cols: String(g.cols || 0),
        gap: String(g.gap), rowHeight: String(g.rowHeight || 0),
      });
    }
  }

  function wire(doc, ui) {
    const scrubber = $("scrubber"), play = $("play"), speed = $("speed"), tip = $("tooltip");
    const last = doc.times.length - 1;
    scrubber.max = String(last);
    let playing = false, clockStart = 0, frameStart = 0, raf = 0;
    const show = (frame) => {
      frame = Math.max(0, Math.min(last, frame));
      scrubber.value = String(frame);
      render(doc, ui, frame);
    };
    const setPlaying = (on) => {
      playing = on;
      play.innerHTML = on ? "&#10074;&#10074; pause" : "&#9654; play";
      play.dataset.playing = on ? "1" : "0";
      cancelAnimationFrame(raf);
      if (on) {
        if (api.frame >= last) show(0);
        clockStart = performance.now();
        frameStart = api.frame;
        raf = requestAnimationFrame(tick);
      }
    };
    const tick = (now) => {
      if (!playing) return;
      const target = frameStart + Math.floor(((now - clockStart) / 1000) * Number(speed.value));
      if (target !== api.frame) show(target);
      if (api.frame >= last) setPlaying(false);
      else raf = requestAnimationFrame(tick);
    };
    play.addEventListener("click", () => setPlaying(!playing));
    speed.addEventListener("change", () => setPlaying(playing));
    scrubber.addEventListener("input", () => {
      if (playing) setPlaying(false);
      show(Number(scrubber.value));
    });
    $("prev").addEventListener("click", () => { setPlaying(false); show(api.frame - 1); });
    $("next").addEventListener("click", () => { setPlaying(false); show(api.frame + 1); });
    document.addEventListener("keydown", (event) => {
      if (event.target instanceof HTMLSelectElement) return;
      if (event.key === " ") { event.preventDefault(); setPlaying(!playing); }
      else if (event.key === "ArrowLeft" && event.target !== scrubber) { setPlaying(false); show(api.frame - 1); }
      else if (event.key === "ArrowRight" && event.target !== scrubber) { setPlaying(false); show(api.frame + 1); }
    });
    for (const panel of ui.panels) {
      const locate = (event) => {
        const rect = panel.canvas.getBoundingClientRect();
        const u = unitAt(panel.cache, panel.geometry, event.clientX - rect.left, event.clientY - rect.top);
        const index = panel.cache.frame_state[api.frame];
        return { u, view: index >= 0 ? decodeState(panel.cache, index) : null };
      };
      panel.canvas.addEventListener("mousemove", (event) => {
        const { u, view } = locate(event);
        const key = keyAt(panel.cache, view, u);
        tip.hidden = !(view && u >= 0);
        if (!tip.hidden) {
          tip.textContent = tooltipText(doc, panel.cache, view, u);
          tip.style.left = Math.min(window.innerWidth - 370, event.clientX + 14) + "px";
          tip.style.top = event.clientY + 16 + "px";
        }
        if (key !== ui.hovered) {
          ui.hovered = key;
          render(doc, ui, api.frame);
        }
      });
      panel.canvas.addEventListener("mouseleave", () => {
        tip.hidden = true;
        if (ui.hovered) {
          ui.hovered = null;
          render(doc, ui, api.frame);
        }
      });
      panel.canvas.addEventListener("click", (event) => {
        const { u, view } = locate(event);
        ui.selected = keyAt(panel.cache, view, u);
        api.selected = ui.selected;
        render(doc, ui, api.frame);
      });
    }
    let resizeTimer = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { sizePanels(ui); render(doc, ui, api.frame); }, 150);
    });
    api.seek = (frame) => { setPlaying(false); show(frame); };
  }

  async function start() {
    let doc;
    try {
      doc = await loadDocument();
    } catch (error) {
      $("error").textContent = `cannot read the embedded data: ${error.message}`;
      return;
    }
    $("workload").textContent = `workload: ${doc.workload}`;
    $("memory").textContent = `memory: ${doc.memory}` + (doc.engine ? ` · engine: ${doc.engine}` : "");
    const ui = { panels: [], selected: null, hovered: null };
    ui.focus = () => ui.hovered || ui.selected;
    buildLegend(doc);
    buildPanels(doc, ui);
    sizePanels(ui);
    wire(doc, ui);
    render(doc, ui, 0);
    api.frames = doc.times.length;
    api.firstFrameMs = performance.now();
    api.ready = true;
  }

  start();
})();
