// caviar watch: a dependency-free page over the dashboard's JSON API.
"use strict";
const COLORS = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#8ab17d", "#e76f51", "#264653", "#ffb703", "#219ebc"];
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (v) => v === null || v === undefined ? "–" : Number.isInteger(v) ? String(v) : (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : (+v).toPrecision(4));

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// -- charts ------------------------------------------------------------------------------
function chart(title, series, opts = {}) {
  const W = 460, H = 240, L = 52, R = 10, T = 10, B = 28;
  const tx = (v) => opts.xlog ? Math.log10(v) : v, ty = (v) => opts.ylog ? Math.log10(v) : v;
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => isFinite(tx(x)) && isFinite(ty(y)));
  let svg = `<svg viewBox="0 0 ${W} ${H}" data-title="${esc(title)}">`;
  if (!pts.length) return `<div class="card"><h3>${esc(title)}</h3>${svg}<text x="60" y="120" class="tick">no data yet</text></svg></div>`;
  let [x0, x1] = [Math.min(...pts.map((p) => tx(p[0]))), Math.max(...pts.map((p) => tx(p[0])))];
  let [y0, y1] = [Math.min(...pts.map((p) => ty(p[1]))), Math.max(...pts.map((p) => ty(p[1])))];
  for (const sp of opts.spans || []) { x0 = Math.min(x0, tx(sp.lo)); x1 = Math.max(x1, tx(sp.hi)); }
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const sx = (v) => L + (tx(v) - x0) / (x1 - x0) * (W - L - R), sy = (v) => H - B - (ty(v) - y0) / (y1 - y0) * (H - T - B);
  for (const [i, sp] of (opts.spans || []).entries()) {
    svg += `<rect x="${sx(sp.lo)}" y="${T}" width="${Math.max(1, sx(sp.hi) - sx(sp.lo))}" height="${H - T - B}" fill="${COLORS[(i + 1) % COLORS.length]}" opacity="0.12"><title>${esc(sp.label)}</title></rect>`;
  }
  svg += `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`;
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    const xl = opts.xlog ? 10 ** xv : xv, yl = opts.ylog ? 10 ** yv : yv;
    svg += `<text class="tick" x="${L + (W - L - R) * i / 4}" y="${H - 10}" text-anchor="middle">${fmt(xl)}</text>`;
    svg += `<text class="tick" x="${L - 4}" y="${H - B - (H - T - B) * i / 4 + 3}" text-anchor="end">${fmt(yl)}</text>`;
  }
  for (const m of opts.markers || []) {
    if (!isFinite(tx(m.x))) continue;
    svg += `<line class="event" x1="${sx(m.x)}" y1="${T}" x2="${sx(m.x)}" y2="${H - B}"/><text class="eventlabel" x="${sx(m.x) + 2}" y="${T + 10}">${esc(m.label)}</text>`;
  }
  series.forEach((s, i) => {
    const good = s.points.filter(([x, y]) => isFinite(tx(x)) && isFinite(ty(y)));
    const color = s.color || COLORS[i % COLORS.length];
    if (opts.scatter) {
      svg += good.map(([x, y]) => `<circle cx="${sx(x)}" cy="${sy(y)}" r="3" fill="${color}" opacity="0.8"/>`).join("");
    } else if (good.length) {
      svg += `<path class="series" data-name="${esc(s.name)}" fill="none" stroke="${color}" stroke-width="1.3" d="${good.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("")}"/>`;
    }
    if (series.length <= 8 && s.name) svg += `<text class="legend" x="${W - R - 4}" y="${T + 12 * (i + 1)}" text-anchor="end" fill="${color}">${esc(s.name)}</text>`;
  });
  return `<div class="card"><h3>${esc(title)}</h3>${svg}</svg></div>`;
}

// -- a training run ----------------------------------------------------------------------
async function control(name, action, value) {
  const r = await fetch(`/api/run/${encodeURIComponent(name)}/control`, {
    method: "POST", headers: {"Content-Type": "application/json", "X-Caviar-Token": token},
    body: JSON.stringify({action, value})});
  const body = await r.json();
  const msg = $("message");
  msg.textContent = body.message || body.error || r.statusText;
  msg.className = r.ok ? "" : "error";
  refresh();
}

function runControls(name) {
  return `<div class="controls" data-run="${esc(name)}">
    <label>learning rate <input id="lr" type="number" step="any" min="0"></label><button id="set-lr">set</button>
    <button id="lr-half">× 0.5</button><button id="lr-double">× 2</button>
    <button id="pause">pause</button><button id="resume">resume</button><button id="checkpoint">checkpoint now</button>
    <select id="rollback-to"></select><label>new lr <input id="rollback-lr" type="number" step="any" min="0"></label>
    <button id="rollback">roll back</button><button id="stop">stop (keep best)</button><span id="message"></span></div>`;
}

function bindControls(name) {
  $("set-lr").onclick = () => control(name, "set-lr", parseFloat($("lr").value));
  $("lr-half").onclick = () => control(name, "multiply-lr", 0.5);
  $("lr-double").onclick = () => control(name, "multiply-lr", 2);
  $("pause").onclick = () => control(name, "pause");
  $("resume").onclick = () => control(name, "resume");
  $("checkpoint").onclick = () => control(name, "checkpoint");
  $("stop").onclick = () => control(name, "stop");
  $("rollback").onclick = () => {
    const lr = $("rollback-lr").value;
    control(name, "rollback", {iteration: parseInt($("rollback-to").value), lr: lr === "" ? null : parseFloat(lr)});
  };
}

function renderRun(name, data) {
  const h = data.history, st = data.state || {};
  const events = (h.events || []).filter((e) => e.iteration !== undefined);
  const markers = events.map((e) => ({x: e.iteration, label: e.event}));
  const epochs = h.epochs || [];
  const metric = epochs.length && "train_mse" in epochs[0] ? "mse" : "accuracy";
  const perEpoch = (key) => epochs.filter((e) => e[key] !== undefined && e[key] !== null).map((e) => [e.epoch, e[key]]);
  const epochMarkers = events.filter((e) => e.epoch).map((e) => ({x: e.epoch, label: e.event}));
  const norms = h.grad_norms || [];
  const names = norms.length ? Object.keys(norms[0]).filter((k) => k !== "iteration" && k.startsWith("W")) : [];
  const status = `<div class="status" id="status" data-status="${esc(st.status || "")}" data-iteration="${st.iteration ?? ""}">
    <b>${esc(name)}</b> — ${esc(st.status || "unknown")}, epoch ${st.epoch ?? "–"}, iteration ${st.iteration ?? "–"}, learning rate ${fmt(st.lr)}</div>`;
  const live = ["running", "paused"].includes(st.status);
  const charts = [
    chart("cost per iteration", [{name: "J", points: (h.iterations || []).map((c, i) => [i + 1, c])}], {markers}),
    chart(`train and dev ${metric} per epoch`, [{name: `train ${metric}`, points: perEpoch(`train_${metric}`)}, {name: `dev ${metric}`, points: perEpoch(`dev_${metric}`)}], {markers: epochMarkers}),
    chart("learning rate per iteration", [{name: "lr", points: (h.lrs || []).map((v, i) => [i + 1, v])}], {markers}),
    chart("gradient norms per layer", names.map((n) => ({name: n, points: norms.map((r) => [r.iteration, r[n]])})), {ylog: true, markers}),
  ];
  const rows = events.map((e) => `<tr><td>${e.iteration}</td><td>${esc(e.event)}</td><td>${esc(e.message || JSON.stringify(e.value ?? ""))}</td></tr>`).join("");
  // The controls are drawn once per run and kept: refreshing the curves never replaces a
  // button under the pointer or a value being typed.
  if (!$("view") || $("view").dataset.run !== name || $("view").dataset.live !== String(live)) {
    $("main").innerHTML = `<div id="view" data-run="${esc(name)}" data-live="${live}"><div id="status-box"></div>` +
      (live ? runControls(name) : "") + `<div class="grid" id="charts"></div><div class="card"><h3>events</h3>` +
      `<table id="events"></table></div></div>`;
    if (live) bindControls(name);
  }
  $("status-box").innerHTML = status;
  $("charts").innerHTML = charts.join("");
  $("events").innerHTML = `<tr><th>iteration</th><th>event</th><th>detail</th></tr>${rows}`;
  if (live) {
    // The checkpoint list is rebuilt only when it changes: rebuilding it on every refresh
    // would close an open list under the pointer and drop the option being chosen.
    const select = $("rollback-to"), chosen = select.value, ck = (h.checkpoints || []).join(",");
    if (select.dataset.checkpoints !== ck) {
      select.dataset.checkpoints = ck;
      select.innerHTML = (h.checkpoints || []).map((c) => `<option value="${c}">iteration ${c}</option>`).join("");
      if (chosen) select.value = chosen;
    }
  }
}

// -- a study -----------------------------------------------------------------------------
function renderStudy(name, d) {
  const trials = d.trials, byNumber = Object.fromEntries(trials.map((t) => [t.number, t]));
  const dims = Object.entries(d.space);
  const board = d.leaderboard.map((n, i) => {
    const t = byNumber[n];
    const params = dims.map(([k]) => `${k}=${typeof t.params[k] === "number" ? fmt(t.params[k]) : t.params[k]}`).join(", ");
    return `<tr><td>${i + 1}</td><td>${t.number}</td><td>${esc(t.status)}</td><td>${fmt(t.value)}</td><td>${t.rung}</td><td>${esc(params)}</td></tr>`;
  }).join("");
  const curves = chart(`dev ${d.metric.replace("dev_", "")} per epoch, every trial`, trials.map((t) => ({name: "", points: t.curve.map((v, i) => [i + 1, v])})));
  const scatters = dims.map(([k, spec]) => {
    const kind = Object.keys(spec)[0];
    if (kind === "choice") {
      const opts = spec.choice;
      if (opts.length < 2) return "";
      return chart(`${d.metric} against ${k}`, [{name: k, points: trials.filter((t) => t.value !== null).map((t) => [opts.indexOf(t.params[k]), t.value])}], {scatter: true});
    }
    const oneMinus = kind === "one_minus_log_uniform", log = kind === "log_uniform" || oneMinus;
    const x = (v) => oneMinus ? 1 - v : v;
    const spans = Object.entries(d.boxes).filter(([r]) => r !== "0" && d.boxes[r][k]).map(([r, box]) => {
      const [lo, hi] = Object.values(box[k])[0];
      return {lo: Math.min(x(lo), x(hi)), hi: Math.max(x(lo), x(hi)), label: `round ${r} box`};
    });
    return chart(`${d.metric} against ${oneMinus ? "1 - " + k : k}${log ? " (log scale)" : ""}`,
      [{name: k, points: trials.filter((t) => t.value !== null && k in t.params).map((t) => [x(t.params[k]), t.value])}], {scatter: true, xlog: log, spans});
  }).join("");
  // the greedy ensemble of the kept trials, beside the best trial (its dev figure is the one it was selected on)
  const e = d.ensemble;
  const ensembleRow = e ? `<tr id="ensemble-row"><td></td><td>ensemble</td><td>${e.members.length} of ${e.candidates} trials</td><td>${fmt(e.value)}</td><td></td><td>${esc(e.members.map((n, i) => n + (e.counts[i] > 1 ? " x" + e.counts[i] : "")).join(", "))}</td></tr>` : "";
  // trials a worker has started are running; those waiting for a worker are queued (pending)
  const count = (statuses) => trials.filter((t) => statuses.includes(t.status)).length;
  $("main").innerHTML = `<div class="status" id="study-status"><b>${esc(name)}</b> — ${esc(d.strategy)} search, ${count(["complete", "diverged", "failed"])} of ${trials.length} trials finished, <span id="running">${count(["running"])} running</span>, <span id="queued">${count(["pending"])} queued</span></div>
    <div class="card"><h3>leaderboard</h3><table id="leaderboard"><tr><th>#</th><th>trial</th><th>status</th><th>${esc(d.metric)}</th><th>rung</th><th>parameters</th></tr>${board}${ensembleRow}</table></div>
    <div class="grid" id="charts">${curves}${scatters}</div>`;
}

// -- routing -----------------------------------------------------------------------------
async function refresh() {
  try {
    const {targets} = await getJSON("/api/targets");
    $("targets").innerHTML = targets.map((t) => `<a href="/${t.kind}/${encodeURIComponent(t.id)}${token ? "?token=" + encodeURIComponent(token) : ""}">${esc(t.kind)}: ${esc(t.id)}</a>`).join("");
    const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (!parts.length) {
      if (targets.length === 1) { location.replace(`/${targets[0].kind}/${encodeURIComponent(targets[0].id)}${location.search}`); return; }
      $("main").innerHTML = targets.length ? "<p>Choose a run or a study above.</p>" : "<p>Nothing is watched.</p>";
      return;
    }
    const [kind, name] = parts;
    const data = await getJSON(`/api/${kind}/${encodeURIComponent(name)}`);
    (kind === "run" ? renderRun : renderStudy)(name, data);
  } catch (e) {
    $("main").innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}
refresh();
setInterval(refresh, 1000);
