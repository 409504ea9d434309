// covidscan annotate: the annotation screen (a canvas over the case's PNG rendered by the server).
// Boxes are kept in the image's own pixels (x = column); the view maps them with zoom and pan.
"use strict";
(function () {
  const app = document.getElementById("app");
  const csrf = app.dataset.csrf, role = app.dataset.role, record = app.dataset.record;
  const nSlices = +app.dataset.slices, rows = +app.dataset.rows, cols = +app.dataset.cols;
  const isCT = app.dataset.kind === "ct_volume";
  const canvas = document.getElementById("canvas"), ctx = canvas.getContext("2d");
  const WINDOWS = ["lung", "mediastinum", "preprocessing"];
  const state = { slice: 0, window: "lung", colour: false, scale: 1, ox: 0, oy: 0, boxes: [], suggestions: [],
                  others: { reader1: [], reader2: [] }, selected: -1, read: null, readonly: false, drag: null, img: null, loads: 0 };

  const api = window.covidscanApi(csrf);
  function say(text) { document.getElementById("status").textContent = text; }

  function fit() {
    state.scale = Math.min(canvas.width / cols, canvas.height / rows);
    state.ox = (canvas.width - cols * state.scale) / 2; state.oy = (canvas.height - rows * state.scale) / 2;
  }
  function toImage(ev) {
    const r = canvas.getBoundingClientRect();
    const sx = (ev.clientX - r.left) * canvas.width / r.width, sy = (ev.clientY - r.top) * canvas.height / r.height;
    return { x: (sx - state.ox) / state.scale, y: (sy - state.oy) / state.scale, sx, sy };
  }
  function clampBox(b) {
    const c = (v, hi) => Math.max(0, Math.min(hi, v));
    return { slice_index: b.slice_index, x0: c(Math.min(b.x0, b.x1), cols), y0: c(Math.min(b.y0, b.y1), rows),
             x1: c(Math.max(b.x0, b.x1), cols), y1: c(Math.max(b.y0, b.y1), rows), suggested: !!b.suggested };
  }
  function strokeBox(b, colour, dashed, width) {
    ctx.save(); ctx.strokeStyle = colour; ctx.lineWidth = width || 2; if (dashed) ctx.setLineDash([6, 4]);
    ctx.strokeRect(state.ox + b.x0 * state.scale, state.oy + b.y0 * state.scale, (b.x1 - b.x0) * state.scale, (b.y1 - b.y0) * state.scale);
    ctx.restore();
  }
  function draw() {
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (state.img) { ctx.imageSmoothingEnabled = false; ctx.drawImage(state.img, state.ox, state.oy, cols * state.scale, rows * state.scale); }
    const here = (b) => b.slice_index === state.slice;
    if (role === "senior") {
      state.others.reader1.filter(here).forEach((b) => strokeBox(b, "#2196f3", false, 2));
      state.others.reader2.filter(here).forEach((b) => strokeBox(b, "#ff9800", false, 2));
    }
    state.suggestions.filter(here).forEach((b) => strokeBox(b, "#ffeb3b", true, 2));
    const mine = role === "senior" ? "#4caf50" : "#00e5ff";
    state.boxes.forEach((b, i) => { if (here(b)) strokeBox(b, i === state.selected ? "#ff1744" : mine, false, i === state.selected ? 3 : 2); });
    if (state.drag && state.drag.mode === "draw") strokeBox(clampBox(state.drag.box), mine, true, 1);
    document.getElementById("n-boxes").textContent = state.boxes.filter(here).length;
    document.getElementById("n-total").textContent = state.boxes.length;
  }
  function loadImage() {
    const url = "/api/cases/" + encodeURIComponent(record) + "/image?slice=" + state.slice + "&window=" + state.window + "&colour=" + (state.colour ? 1 : 0);
    const img = new Image(), seq = ++state.loads;  // only the latest request is shown (an older one may arrive later)
    img.onload = () => { if (seq !== state.loads) return; state.img = img; canvas.dataset.loaded = url; draw(); };
    img.onerror = () => { if (seq === state.loads) say("image not available"); };
    img.src = url;
  }
  function setSlice(i) {
    if (!isCT) return;
    state.slice = Math.max(0, Math.min(nSlices - 1, i)); state.selected = -1;
    document.getElementById("slice").value = state.slice;
    document.getElementById("slice-label").textContent = (state.slice + 1) + "/" + nSlices;
    loadImage();
  }
  function setRead(v) {
    state.read = v;
    document.getElementById("read-yes").checked = v === 1; document.getElementById("read-no").checked = v === 0;
  }
  function zoom(f, cx, cy) {
    cx = cx == null ? canvas.width / 2 : cx; cy = cy == null ? canvas.height / 2 : cy;
    const s = Math.max(0.1, Math.min(40, state.scale * f)), k = s / state.scale;
    state.ox = cx - (cx - state.ox) * k; state.oy = cy - (cy - state.oy) * k; state.scale = s; draw();
  }
  function hit(p) {
    for (let i = state.boxes.length - 1; i >= 0; i--) {
      const b = state.boxes[i];
      if (b.slice_index === state.slice && p.x >= b.x0 && p.x <= b.x1 && p.y >= b.y0 && p.y <= b.y1) return i;
    }
    return -1;
  }
  function deleteSelected() { if (state.readonly || state.selected < 0) return; state.boxes.splice(state.selected, 1); state.selected = -1; draw(); }
  function acceptSuggestions() {
    if (state.readonly) return;
    state.suggestions.forEach((b) => state.boxes.push(Object.assign({}, b, { suggested: true })));
    state.suggestions = []; draw(); say("suggestions accepted: save or submit to keep them");
  }

  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("mousedown", (ev) => {
    canvas.focus();
    const p = toImage(ev);
    if (ev.button === 2 || ev.shiftKey || ev.button === 1) { state.drag = { mode: "pan", sx: p.sx, sy: p.sy, ox: state.ox, oy: state.oy }; return; }
    const i = hit(p);
    if (i >= 0) { state.selected = i; draw(); return; }
    if (state.readonly) return;
    state.selected = -1;
    state.drag = { mode: "draw", box: { slice_index: state.slice, x0: p.x, y0: p.y, x1: p.x, y1: p.y } };
  });
  window.addEventListener("mousemove", (ev) => {
    if (!state.drag) return;
    const p = toImage(ev);
    if (state.drag.mode === "pan") { state.ox = state.drag.ox + p.sx - state.drag.sx; state.oy = state.drag.oy + p.sy - state.drag.sy; }
    else { state.drag.box.x1 = p.x; state.drag.box.y1 = p.y; }
    draw();
  });
  window.addEventListener("mouseup", () => {
    const d = state.drag; state.drag = null;
    if (d && d.mode === "draw") {
      const b = clampBox(d.box);
      if (b.x1 - b.x0 >= 1 && b.y1 - b.y0 >= 1) { state.boxes.push(b); state.selected = state.boxes.length - 1; }
    }
    draw();
  });
  canvas.addEventListener("wheel", (ev) => { ev.preventDefault(); const p = toImage(ev); zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, p.sx, p.sy); }, { passive: false });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" && ev.target.type !== "radio" && ev.target.type !== "checkbox" && ev.target.type !== "range") return;
    const k = ev.key;
    if (k === "ArrowUp" || k === "k" || k === "PageUp") { setSlice(state.slice - 1); ev.preventDefault(); }
    else if (k === "ArrowDown" || k === "j" || k === "PageDown") { setSlice(state.slice + 1); ev.preventDefault(); }
    else if (k === "+" || k === "=") zoom(1.25);
    else if (k === "-") zoom(1 / 1.25);
    else if (k === "0") { fit(); draw(); }
    else if (k === "w" && isCT) { const sel = document.getElementById("window"); state.window = WINDOWS[(WINDOWS.indexOf(state.window) + 1) % WINDOWS.length]; sel.value = state.window; loadImage(); }
    else if (k === "c") { const cb = document.getElementById("colour"); cb.checked = !cb.checked; state.colour = cb.checked; loadImage(); }
    else if (k === "Delete" || k === "Backspace") { deleteSelected(); ev.preventDefault(); }
    else if (k === "y" && !state.readonly) setRead(1);
    else if (k === "n" && !state.readonly) setRead(0);
    else if (k === "s" && role === "reader") save(false);
    else if (k === "a" && role === "reader") acceptSuggestions();
  });
  if (isCT) {
    document.getElementById("slice").addEventListener("input", (ev) => setSlice(+ev.target.value));
    document.getElementById("window").addEventListener("change", (ev) => { state.window = ev.target.value; loadImage(); });
  }
  document.getElementById("colour").addEventListener("change", (ev) => { state.colour = ev.target.checked; loadImage(); });
  document.getElementById("zoom-in").addEventListener("click", () => zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(1 / 1.25));
  document.getElementById("zoom-reset").addEventListener("click", () => { fit(); draw(); });
  document.getElementById("read-yes").addEventListener("change", () => setRead(1));
  document.getElementById("read-no").addEventListener("change", () => setRead(0));
  document.getElementById("delete-box").addEventListener("click", deleteSelected);

  function payloadBoxes() { return state.boxes.map((b) => clampBox(b)); }
  async function save(submit) {
    try {
      const r = await api("PUT", "/api/cases/" + encodeURIComponent(record) + "/annotation", { boxes: payloadBoxes(), read: state.read, submit });
      say(submit ? "submitted" : "draft saved (" + r.status + ")");
      if (submit) { state.readonly = true; state.suggestions = []; draw(); }
    } catch (e) { say("not saved: " + e.message); }
  }

  async function start() {
    fit(); loadImage();
    const data = await api("GET", "/api/cases/" + encodeURIComponent(record));
    if (role === "reader") {
      state.boxes = data.boxes; setRead(data.read); state.readonly = data.status === "submitted";
      state.suggestions = data.suggestions || [];
      if (state.suggestions.length) document.getElementById("suggest-info").hidden = false;
      say(state.readonly ? "submitted (read only)" : "status: " + data.status);
      document.getElementById("save").addEventListener("click", () => save(false));
      document.getElementById("submit").addEventListener("click", () => save(true));
      document.getElementById("accept").addEventListener("click", acceptSuggestions);
    } else {
      state.others = { reader1: data.reader1.boxes, reader2: data.reader2.boxes };
      document.getElementById("r1-read").textContent = "read: " + (data.reader1.read === 1 ? "COVID-19" : data.reader1.read === 0 ? "not COVID-19" : "-");
      document.getElementById("r2-read").textContent = "read: " + (data.reader2.read === 1 ? "COVID-19" : data.reader2.read === 0 ? "not COVID-19" : "-");
      document.getElementById("reasons").textContent = "status: " + data.status + (data.reasons.length ? " (" + data.reasons.join(", ") + ")" : "");
      state.boxes = data.adjudicated.boxes; setRead(data.adjudicated.read); state.readonly = data.status !== "queued";
      document.getElementById("copy-r1").addEventListener("click", () => { state.boxes = state.others.reader1.map((b) => Object.assign({}, b)); draw(); });
      document.getElementById("copy-r2").addEventListener("click", () => { state.boxes = state.others.reader2.map((b) => Object.assign({}, b)); draw(); });
      document.getElementById("decide").addEventListener("click", async () => {
        try {
          await api("POST", "/api/cases/" + encodeURIComponent(record) + "/adjudication", { boxes: payloadBoxes().map(({ suggested, ...b }) => b), read: state.read });
          state.readonly = true; say("adjudicated");
        } catch (e) { say("not saved: " + e.message); }
      });
    }
    app.dataset.ready = "1";
    draw();
  }
  start().catch((e) => say("error: " + e.message));
})();
