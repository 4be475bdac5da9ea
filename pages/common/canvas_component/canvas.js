// The Annotate page's canvas (a Streamlit components v2 module, no build step).
//
// Python sends `data`: {path, rev, image (data URL), width, height, boxes [[x1,y1,x2,y2]] in
// image pixels, labels [class index], names, colours, suggestions [{id, box, label, score}]}.
// Every change is sent back at once as the trigger `edit`: {path, rev, seq, boxes
// [[x1,y1,x2,y2,src]] (src: the box's index in the data it came from, null for a new box),
// labels, selected}. Commands (next, previous, accept, reject, save) go as the trigger
// `command` with the same snapshot, so a command never outruns the edits before it.
// The boxes are SVG drawn in screen pixels over the scaled image, so they stay sharp at any
// zoom and device pixel ratio. Keys are handled on the component's root and stopped there:
// they never reach Streamlit's shortcuts, and typing in Streamlit's inputs never reaches here.

const instances = new WeakMap();
const HANDLE = 7; // screen px: how near an edge or a corner grabs it
const SVG = "http://www.w3.org/2000/svg";

function make(parent) {
  const root = parent.querySelector(".wb-canvas");
  const st = {
    root,
    stage: root.querySelector(".wb-stage"),
    img: root.querySelector(".wb-image"),
    svg: root.querySelector(".wb-overlay"),
    status: root.querySelector(".wb-status"),
    classBar: root.querySelector(".wb-classes"),
    path: null,
    rev: null,
    image: null,
    W: 1,
    H: 1,
    boxes: [], // {x1, y1, x2, y2, c, src}
    names: [],
    colours: [],
    sugg: [],
    sel: null, // {kind: "box" | "sugg", i}
    current: 0, // the class new boxes get
    undo: [],
    redo: [],
    seq: 0,
    view: { s: 1, tx: 0, ty: 0 },
    fitted: true,
    drag: null,
    space: false,
    mouse: null, // last pointer position over the stage (stage px)
    send: null,
    loading: null,
  };
  return st;
}

function snapshot(st) {
  return st.boxes.map((b) => ({ ...b }));
}

function payload(st, extra) {
  const selected = st.sel && st.sel.kind === "box" ? st.sel.i : null;
  return {
    path: st.path,
    rev: st.rev,
    seq: st.seq,
    boxes: st.boxes.map((b) => [b.x1, b.y1, b.x2, b.y2, b.src]),
    labels: st.boxes.map((b) => b.c),
    selected,
    ...extra,
  };
}

function emit(st) {
  st.seq += 1;
  st.root.dataset.seq = String(st.seq);
  st.send.trigger("edit", payload(st, {}));
}

function command(st, action, extra) {
  st.seq += 1;
  st.root.dataset.seq = String(st.seq);
  st.send.trigger("command", payload(st, { action, ...extra }));
}

function change(st, fn) {
  const before = snapshot(st);
  fn();
  if (JSON.stringify(before) === JSON.stringify(st.boxes)) return;
  st.undo.push(before);
  if (st.undo.length > 500) st.undo.shift();
  st.redo = [];
  render(st);
  emit(st);
}

function restore(st, from, to) {
  if (!from.length) return;
  to.push(snapshot(st));
  st.boxes = from.pop();
  if (st.sel && st.sel.kind === "box" && st.sel.i >= st.boxes.length) st.sel = null;
  render(st);
  emit(st);
}

function toScreen(st, x, y) {
  return [st.view.tx + x * st.view.s, st.view.ty + y * st.view.s];
}

function toImage(st, sx, sy) {
  return [(sx - st.view.tx) / st.view.s, (sy - st.view.ty) / st.view.s];
}

function stageSize(st) {
  const w = st.stage.clientWidth || 800;
  const tall = Math.max(320, Math.round(window.innerHeight * 0.75));
  const h = Math.min(tall, Math.max(240, Math.round((w * st.H) / st.W)));
  if (st.stage.style.height !== `${h}px`) st.stage.style.height = `${h}px`;
  return [w, h];
}

function fit(st) {
  const [w, h] = stageSize(st);
  const s = Math.min(w / st.W, h / st.H);
  st.view = { s, tx: (w - st.W * s) / 2, ty: (h - st.H * s) / 2 };
  st.fitted = true;
  render(st);
}

function zoom(st, factor, at) {
  const [w, h] = stageSize(st);
  const [mx, my] = at || st.mouse || [w / 2, h / 2];
  const s = Math.min(64, Math.max(0.05, st.view.s * factor));
  const k = s / st.view.s;
  st.view = { s, tx: mx - (mx - st.view.tx) * k, ty: my - (my - st.view.ty) * k };
  st.fitted = false;
  render(st);
}

function colour(st, c) {
  return st.colours[c] || "#ffcc00";
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  parent.appendChild(node);
  return node;
}

function render(st) {
  stageSize(st);
  const { s, tx, ty } = st.view;
  st.img.style.width = `${st.W * s}px`;
  st.img.style.height = `${st.H * s}px`;
  st.img.style.transform = `translate(${tx}px, ${ty}px)`;
  const svg = st.svg;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  st.sugg.forEach((g, i) => {
    const [x1, y1] = toScreen(st, g.box[0], g.box[1]);
    const [x2, y2] = toScreen(st, g.box[2], g.box[3]);
    const c = st.names.indexOf(g.label);
    const picked = st.sel && st.sel.kind === "sugg" && st.sel.i === i;
    el("rect", {
      x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none",
      stroke: c >= 0 ? colour(st, c) : "#dddddd", "stroke-width": picked ? 3 : 2, "stroke-dasharray": "6 4",
      "data-suggestion": g.id,
    }, svg);
    el("text", { x: x1 + 2, y: y2 - 4 }, svg).textContent = `S${i + 1} ${g.label} ${g.score.toFixed(2)}`;
  });
  st.boxes.forEach((b, i) => {
    const [x1, y1] = toScreen(st, b.x1, b.y1);
    const [x2, y2] = toScreen(st, b.x2, b.y2);
    const picked = st.sel && st.sel.kind === "box" && st.sel.i === i;
    el("rect", {
      x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: picked ? "rgba(255,255,255,0.12)" : "none",
      stroke: colour(st, b.c), "stroke-width": picked ? 3 : 2, "data-box": i,
    }, svg);
    if (picked) {
      for (const [hx, hy] of [[x1, y1], [x2, y1], [x1, y2], [x2, y2], [(x1 + x2) / 2, y1], [(x1 + x2) / 2, y2], [x1, (y1 + y2) / 2], [x2, (y1 + y2) / 2]]) {
        el("rect", { x: hx - 3, y: hy - 3, width: 6, height: 6, fill: "#fff", stroke: "#000" }, svg);
      }
    }
  });
  if (st.drag && st.drag.kind === "draw" && st.drag.box) {
    const b = st.drag.box;
    const [x1, y1] = toScreen(st, b[0], b[1]);
    const [x2, y2] = toScreen(st, b[2], b[3]);
    el("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: colour(st, st.current), "stroke-width": 2 }, svg);
  }
  st.root.dataset.view = JSON.stringify(st.view);
  st.root.dataset.selected = selKey(st);
  status(st);
}

function status(st) {
  const sel = st.sel && st.sel.kind === "box" ? st.boxes[st.sel.i] : null;
  const parts = [`zoom ${Math.round(st.view.s * 100)}%`, `${st.boxes.length} box(es)`, `new boxes: ${st.names[st.current] || "?"}`];
  if (sel) parts.push(`selected #${st.sel.i + 1} ${st.names[sel.c]} (${sel.x1}, ${sel.y1})-(${sel.x2}, ${sel.y2})`);
  if (st.mouse) {
    const [x, y] = toImage(st, st.mouse[0], st.mouse[1]);
    parts.push(`x ${Math.floor(x)} y ${Math.floor(y)}`);
  }
  parts.push("drag: draw · 1–9 class · Del · Ctrl+Z · wheel/+/− zoom · space-drag pan · N/P next/previous");
  st.status.textContent = parts.join(" · ");
}

function classButtons(st) {
  const bar = st.classBar;
  while (bar.firstChild) bar.removeChild(bar.firstChild);
  st.names.forEach((name, c) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c < 9 ? `${c + 1} ${name}` : name;
    b.style.borderLeftColor = colour(st, c);
    b.dataset.cls = String(c);
    if (c === st.current) b.className = "wb-current";
    bar.appendChild(b);
  });
}

function hit(st, sx, sy) {
  // The selected box's handles first, then the smallest box under the point, then suggestions.
  if (st.sel && st.sel.kind === "box") {
    const b = st.boxes[st.sel.i];
    const [x1, y1] = toScreen(st, b.x1, b.y1);
    const [x2, y2] = toScreen(st, b.x2, b.y2);
    const inY = sy > y1 - HANDLE && sy < y2 + HANDLE;
    const inX = sx > x1 - HANDLE && sx < x2 + HANDLE;
    const edges = {
      l: Math.abs(sx - x1) <= HANDLE && inY,
      r: Math.abs(sx - x2) <= HANDLE && inY,
      t: Math.abs(sy - y1) <= HANDLE && inX,
      b: Math.abs(sy - y2) <= HANDLE && inX,
    };
    const grabbed = Object.keys(edges).filter((k) => edges[k]);
    if (grabbed.length && (x2 - x1 > 2 * HANDLE || y2 - y1 > 2 * HANDLE || !(sx > x1 && sx < x2 && sy > y1 && sy < y2))) {
      return { kind: "resize", i: st.sel.i, edges: grabbed };
    }
  }
  const [x, y] = toImage(st, sx, sy);
  const tol = 2 / st.view.s;
  let best = null;
  st.boxes.forEach((b, i) => {
    if (x >= b.x1 - tol && x <= b.x2 + tol && y >= b.y1 - tol && y <= b.y2 + tol) {
      const area = (b.x2 - b.x1) * (b.y2 - b.y1);
      if (!best || area < best.area) best = { kind: "move", i, area };
    }
  });
  if (best) return best;
  st.sugg.forEach((g, i) => {
    if (x >= g.box[0] && x <= g.box[2] && y >= g.box[1] && y <= g.box[3]) {
      const area = (g.box[2] - g.box[0]) * (g.box[3] - g.box[1]);
      if (!best || area < best.area) best = { kind: "sugg", i, area };
    }
  });
  return best;
}

function local(st, e) {
  const r = st.stage.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

function clampX(st, v) {
  return Math.min(st.W, Math.max(0, Math.round(v)));
}

function clampY(st, v) {
  return Math.min(st.H, Math.max(0, Math.round(v)));
}

function selKey(st) {
  return st.sel ? `${st.sel.kind}:${st.sel.i}` : "";
}

function onDown(st, e) {
  if (st.loading) return;
  st.root.focus({ preventScroll: true });
  const [sx, sy] = local(st, e);
  const picked = selKey(st);
  st.stage.setPointerCapture(e.pointerId);
  if (st.space || e.button === 1) {
    st.drag = { kind: "pan", sx, sy, tx: st.view.tx, ty: st.view.ty };
    return;
  }
  if (e.button !== 0) return;
  const h = hit(st, sx, sy);
  const [x, y] = toImage(st, sx, sy);
  if (h && (h.kind === "resize" || h.kind === "move")) {
    st.sel = { kind: "box", i: h.i };
    st.drag = { kind: h.kind, i: h.i, edges: h.edges, sx, sy, orig: { ...st.boxes[h.i] }, before: snapshot(st), picked };
  } else {
    st.sel = h ? { kind: "sugg", i: h.i } : null;
    st.drag = { kind: "draw", x0: clampX(st, x), y0: clampY(st, y), sx, sy, box: null, picked };
  }
  render(st);
}

function onMove(st, e) {
  const [sx, sy] = local(st, e);
  st.mouse = [sx, sy];
  const d = st.drag;
  if (!d) {
    status(st);
    return;
  }
  if (d.kind === "pan") {
    st.view = { s: st.view.s, tx: d.tx + sx - d.sx, ty: d.ty + sy - d.sy };
    st.fitted = false;
  } else if (d.kind === "move") {
    const o = d.orig;
    let dx = Math.round((sx - d.sx) / st.view.s);
    let dy = Math.round((sy - d.sy) / st.view.s);
    dx = Math.min(st.W - o.x2, Math.max(-o.x1, dx));
    dy = Math.min(st.H - o.y2, Math.max(-o.y1, dy));
    Object.assign(st.boxes[d.i], { x1: o.x1 + dx, y1: o.y1 + dy, x2: o.x2 + dx, y2: o.y2 + dy });
  } else if (d.kind === "resize") {
    const [x, y] = toImage(st, sx, sy);
    const o = d.orig;
    const b = { ...o };
    if (d.edges.includes("l")) b.x1 = Math.min(clampX(st, x), o.x2 - 1);
    if (d.edges.includes("r")) b.x2 = Math.max(clampX(st, x), o.x1 + 1);
    if (d.edges.includes("t")) b.y1 = Math.min(clampY(st, y), o.y2 - 1);
    if (d.edges.includes("b")) b.y2 = Math.max(clampY(st, y), o.y1 + 1);
    Object.assign(st.boxes[d.i], b);
  } else if (d.kind === "draw") {
    if (Math.abs(sx - d.sx) + Math.abs(sy - d.sy) < 4) return;
    const [x, y] = toImage(st, sx, sy);
    const x1 = clampX(st, x);
    const y1 = clampY(st, y);
    d.box = [Math.min(d.x0, x1), Math.min(d.y0, y1), Math.max(d.x0, x1), Math.max(d.y0, y1)];
  }
  render(st);
}

function onUp(st, e) {
  const d = st.drag;
  st.drag = null;
  if (!d) return;
  if (st.stage.hasPointerCapture(e.pointerId)) st.stage.releasePointerCapture(e.pointerId);
  if (d.kind === "move" || d.kind === "resize") {
    const after = snapshot(st);
    if (JSON.stringify(after) !== JSON.stringify(d.before)) {
      st.undo.push(d.before);
      st.redo = [];
      emit(st);
    } else if (selKey(st) !== d.picked && st.sel && st.sel.kind === "box") {
      emit(st); // the side panel follows the selection
    }
  } else if (d.kind === "draw" && d.box && d.box[2] - d.box[0] >= 1 && d.box[3] - d.box[1] >= 1) {
    const [x1, y1, x2, y2] = d.box;
    change(st, () => {
      st.boxes.push({ x1, y1, x2, y2, c: st.current, src: null });
      st.sel = { kind: "box", i: st.boxes.length - 1 };
    });
  }
  render(st);
}

function relabel(st, c) {
  if (c < 0 || c >= st.names.length) return;
  st.current = c;
  if (st.sel && st.sel.kind === "box") {
    const i = st.sel.i;
    change(st, () => {
      st.boxes[i].c = c;
    });
  }
  classButtons(st);
  render(st);
}

function act(st, what) {
  const box = st.sel && st.sel.kind === "box" ? st.sel.i : null;
  if (what === "undo") restore(st, st.undo, st.redo);
  else if (what === "redo") restore(st, st.redo, st.undo);
  else if (what === "fit") fit(st);
  else if (what === "zoomin") zoom(st, 1.25);
  else if (what === "zoomout") zoom(st, 0.8);
  else if (what === "delete" && box !== null) {
    change(st, () => {
      st.boxes.splice(box, 1);
      st.sel = null;
    });
  } else if (what === "duplicate" && box !== null) {
    change(st, () => {
      const b = st.boxes[box];
      const dx = b.x2 + 10 <= st.W ? 10 : -Math.min(10, b.x1);
      const dy = b.y2 + 10 <= st.H ? 10 : -Math.min(10, b.y1);
      st.boxes.push({ x1: b.x1 + dx, y1: b.y1 + dy, x2: b.x2 + dx, y2: b.y2 + dy, c: b.c, src: null });
      st.sel = { kind: "box", i: st.boxes.length - 1 };
    });
  }
}

function nudge(st, dx, dy) {
  if (!(st.sel && st.sel.kind === "box")) return;
  const i = st.sel.i;
  change(st, () => {
    const b = st.boxes[i];
    const mx = Math.min(st.W - b.x2, Math.max(-b.x1, dx));
    const my = Math.min(st.H - b.y2, Math.max(-b.y1, dy));
    Object.assign(b, { x1: b.x1 + mx, y1: b.y1 + my, x2: b.x2 + mx, y2: b.y2 + my });
  });
}

function suggestionCommand(st, action) {
  if (!st.sugg.length) return;
  const i = st.sel && st.sel.kind === "sugg" ? st.sel.i : 0;
  st.sel = null;
  command(st, action, { suggestion: st.sugg[i].id });
}

function onKey(st, e) {
  if (e.key === "Tab") return; // leave the component the usual way
  e.stopPropagation(); // never to Streamlit's shortcuts
  const ctrl = e.ctrlKey || e.metaKey;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  let handled = true;
  if (key === " ") {
    st.space = true;
    st.stage.classList.add("wb-pan");
  } else if (ctrl && key === "z") act(st, e.shiftKey ? "redo" : "undo");
  else if (ctrl && key === "y") act(st, "redo");
  else if (ctrl && key === "d") act(st, "duplicate");
  else if (ctrl && key === "s") command(st, "save", {});
  else if (ctrl || e.altKey) handled = false;
  else if (/^[1-9]$/.test(key)) relabel(st, Number(key) - 1);
  else if (key === "Delete" || key === "Backspace") act(st, "delete");
  else if (key === "+" || key === "=") zoom(st, 1.25);
  else if (key === "-" || key === "_") zoom(st, 0.8);
  else if (key === "0" || key === "f") fit(st);
  else if (key === "d") act(st, "duplicate");
  else if (key === "n") command(st, "next", {});
  else if (key === "p") command(st, "previous", {});
  else if (key === "a") suggestionCommand(st, "accept");
  else if (key === "x") suggestionCommand(st, "reject");
  else if (key === "Escape") {
    st.sel = null;
    render(st);
  } else if (key.startsWith("Arrow")) {
    const step = e.shiftKey ? 10 : 1;
    const [dx, dy] = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[key];
    nudge(st, dx, dy);
  } else handled = false;
  if (handled) e.preventDefault();
}

function onKeyUp(st, e) {
  if (e.key === "Tab") return;
  e.stopPropagation();
  if (e.key === " ") {
    st.space = false;
    st.stage.classList.remove("wb-pan");
    e.preventDefault();
  }
}

function listen(st) {
  const on = (target, type, fn, opts) => {
    target.addEventListener(type, fn, opts);
    return () => target.removeEventListener(type, fn, opts);
  };
  const offs = [
    on(st.stage, "pointerdown", (e) => onDown(st, e)),
    on(st.stage, "pointermove", (e) => onMove(st, e)),
    on(st.stage, "pointerup", (e) => onUp(st, e)),
    on(st.stage, "pointercancel", (e) => onUp(st, e)),
    on(st.stage, "pointerleave", () => {
      st.mouse = null;
      status(st);
    }),
    on(st.stage, "wheel", (e) => {
      e.preventDefault();
      zoom(st, Math.exp(-e.deltaY * 0.0015), local(st, e));
    }, { passive: false }),
    on(st.root, "keydown", (e) => onKey(st, e)),
    on(st.root, "keyup", (e) => onKeyUp(st, e)),
    on(st.root, "blur", () => {
      st.space = false;
      st.stage.classList.remove("wb-pan");
    }),
    on(st.root, "click", (e) => {
      const button = e.target.closest("button");
      if (!button) return;
      if (button.dataset.cls !== undefined) relabel(st, Number(button.dataset.cls));
      else act(st, button.dataset.do);
      st.root.focus({ preventScroll: true });
    }),
  ];
  const watcher = new ResizeObserver(() => (st.fitted ? fit(st) : render(st)));
  watcher.observe(st.stage);
  offs.push(() => watcher.disconnect());
  return () => offs.forEach((off) => off());
}

function adopt(st, data) {
  const sameImage = data.path === st.path;
  st.names = data.names;
  st.colours = data.colours;
  st.sugg = data.suggestions || [];
  if (st.sel && st.sel.kind === "sugg" && st.sel.i >= st.sugg.length) st.sel = null;
  if (st.current >= st.names.length) st.current = 0;
  if (!sameImage || data.rev !== st.rev) {
    // A new image, or a change made in Python (side panel, save, reload): take Python's boxes.
    st.boxes = data.boxes.map((b, i) => ({ x1: b[0], y1: b[1], x2: b[2], y2: b[3], c: data.labels[i], src: i }));
    st.undo = [];
    st.redo = [];
    if (!sameImage || (st.sel && st.sel.kind === "box" && st.sel.i >= st.boxes.length)) st.sel = null;
    st.path = data.path;
    st.rev = data.rev;
    st.seq = 0;
  }
  st.W = data.width;
  st.H = data.height;
  st.root.dataset.path = data.path;
  st.root.dataset.rev = String(data.rev);
  classButtons(st);
  if (!sameImage || st.fitted) fit(st);
  else render(st);
}

function show(st, data) {
  // Keep the last picture and its boxes until the next one is decoded: no flash, no misfit.
  if (data.image === st.image) {
    adopt(st, data);
    return;
  }
  const next = new Image();
  st.loading = data;
  next.src = data.image;
  next.decode().catch(() => null).then(() => {
    if (st.loading !== data) return; // a later image was asked for meanwhile
    st.loading = null;
    st.img.src = data.image;
    st.image = data.image;
    adopt(st, data);
    st.root.dataset.shown = data.path;
  });
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let st = instances.get(parentElement);
  if (!st || !st.root.isConnected) {
    st = make(parentElement);
    st.cleanup = listen(st);
    instances.set(parentElement, st);
  }
  st.send = { trigger: setTriggerValue };
  if (data) show(st, data);
  return () => {
    st.cleanup();
    instances.delete(parentElement);
  };
}
