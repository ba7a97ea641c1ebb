// fiberflow live monitor: fills the page from the JSON API and polls it, so every page follows
// the night without a reload. Plots are SVG drawn here (nothing is fetched from outside).
"use strict";

const FAMILIES = ["CCD", "FIBERS", "SPECTRA"];
const COLOURS = {NORMAL: "#2e7d32", WARNING: "#f9a825", ALARM: "#c62828", NA: "#9e9e9e"};
const main = document.getElementById("main");
const page = main.dataset.page;
const refresh = parseFloat(main.dataset.refresh || "2") * 1000;
let busy = false;
let state = {};  // page state kept across polls (the spectrum shown, the history asked for)

function esc(s) {
  return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
    c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function pad8(e) { return String(e).padStart(8, "0"); }
function statusCell(st, attrs) {
  st = st || "NA";
  return `<td class="status ${esc(st)}" ${attrs || ""}>${esc(st)}</td>`;
}
async function api(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) {
    let msg = r.status + "";
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}
function fmt(v, digits) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 3 : digits);
  if (Array.isArray(v)) return "[" + v.map(x => x === null ? "-" : fmt(x, 2)).join(", ") + "]";
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}:${fmt(x, 2)}`).join(" ");
  return String(v);
}

// ---- SVG helpers ------------------------------------------------------------------------------
function wheel(cameras, family, size) {
  // 10 petals as wedges, rings b (inner), r, z (outer), each segment coloured by the camera's status
  const r0 = size * 0.10, dr = size * 0.11, c = size / 2;
  let s = `<svg width="${size}" height="${size}" viewBox="0 0 ${size} ${size}" data-family="${family}">`;
  ["b", "r", "z"].forEach((arm, k) => {
    for (let p = 0; p < 10; p++) {
      const cam = cameras[arm + p];
      const st = cam ? (family === "ALL" ? cam.STATUS : (cam.FAMILIES || {})[family]) || "NA" : null;
      const a0 = (p / 10) * 2 * Math.PI - Math.PI / 2, a1 = ((p + 1) / 10) * 2 * Math.PI - Math.PI / 2;
      const ri = r0 + k * dr, ro = ri + dr * 0.92;
      const pt = (r, a) => `${(c + r * Math.cos(a)).toFixed(1)},${(c + r * Math.sin(a)).toFixed(1)}`;
      const d = `M${pt(ri, a0)} L${pt(ro, a0)} A${ro},${ro} 0 0 1 ${pt(ro, a1)} L${pt(ri, a1)} A${ri},${ri} 0 0 0 ${pt(ri, a0)} Z`;
      s += `<path d="${d}" fill="${st ? COLOURS[st] : "#fff"}" stroke="#555" stroke-width="0.5" ` +
           `data-camera="${arm}${p}" data-status="${st || ""}"><title>${arm}${p}: ${st || "not in exposure"}</title></path>`;
    }
  });
  for (let p = 0; p < 10; p++) {
    const a = ((p + 0.5) / 10) * 2 * Math.PI - Math.PI / 2, r = r0 + 3.4 * dr;
    s += `<text x="${(c + r * Math.cos(a)).toFixed(1)}" y="${(c + r * Math.sin(a) + 4).toFixed(1)}" font-size="10" text-anchor="middle">${p}</text>`;
  }
  return s + "</svg>";
}

function plot(series, opts) {
  // series: [{x: [], y: [], colour, line: bool, colours: [] (per point)}]; opts: width, height, xlabel, ylabel
  const W = opts.width || 640, H = opts.height || 260, L = 60, B = 36, T = 10, R = 10;
  let xs = [], ys = [];
  series.forEach(s => s.x.forEach((x, i) => { if (s.y[i] !== null && isFinite(s.y[i])) { xs.push(x); ys.push(s.y[i]); } }));
  if (!xs.length) return `<svg width="${W}" height="40"><text x="5" y="20">no data</text></svg>`;
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (opts.ymin !== undefined) y0 = opts.ymin;
  if (opts.ymax !== undefined) y1 = opts.ymax;
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const px = x => L + (x - x0) / (x1 - x0) * (W - L - R), py = y => H - B - (y - y0) / (y1 - y0) * (H - B - T);
  let s = `<svg width="${W}" height="${H}" class="plot">`;
  s += `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - B - T}" fill="none" stroke="#999"/>`;
  for (let k = 0; k <= 4; k++) {
    const xv = x0 + k * (x1 - x0) / 4, yv = y0 + k * (y1 - y0) / 4;
    s += `<text x="${px(xv).toFixed(1)}" y="${H - B + 14}" font-size="10" text-anchor="middle">${fmt(xv, Math.abs(x1 - x0) > 20 ? 0 : 2)}</text>`;
    s += `<text x="${L - 4}" y="${(py(yv) + 3).toFixed(1)}" font-size="10" text-anchor="end">${fmt(yv, 2)}</text>`;
  }
  s += `<text x="${(L + W) / 2}" y="${H - 4}" font-size="11" text-anchor="middle">${esc(opts.xlabel || "")}</text>`;
  s += `<text x="12" y="${(H - B) / 2}" font-size="11" transform="rotate(-90 12 ${(H - B) / 2})" text-anchor="middle">${esc(opts.ylabel || "")}</text>`;
  series.forEach(se => {
    if (se.line) {
      let d = "", pen = false;
      se.x.forEach((x, i) => {
        const y = se.y[i];
        if (y === null || !isFinite(y)) { pen = false; return; }
        d += (pen ? "L" : "M") + px(x).toFixed(1) + "," + py(Math.min(Math.max(y, y0), y1)).toFixed(1);
        pen = true;
      });
      s += `<path d="${d}" fill="none" stroke="${se.colour || "#1565c0"}" stroke-width="1"/>`;
    } else {
      se.x.forEach((x, i) => {
        const y = se.y[i];
        if (y === null || !isFinite(y)) return;
        const col = se.colours ? se.colours[i] : (se.colour || "#1565c0");
        s += `<circle cx="${px(x).toFixed(1)}" cy="${py(Math.min(Math.max(y, y0), y1)).toFixed(1)}" r="${se.r || 3}" fill="${col}">` +
             `<title>${esc((se.labels || [])[i] || "")} ${fmt(x, 2)}, ${fmt(y, 3)}</title></circle>`;
      });
    }
  });
  return s + "</svg>";
}

function viridis(t) {
  t = Math.max(0, Math.min(1, t));
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const k = Math.min(3, Math.floor(t * 4)), f = t * 4 - k, a = stops[k], b = stops[k + 1];
  return `rgb(${a.map((v, i) => Math.round(v + f * (b[i] - v))).join(",")})`;
}

// ---- pages -------------------------------------------------------------------------------------
function exposureRow(e) {
  const link = e.STATE === "done" || e.STATE === "failed" ? `<a href="/exposure/${e.NIGHT}/${e.EXPID}">${pad8(e.EXPID)}</a>` : pad8(e.EXPID);
  return `<tr id="exp-${pad8(e.EXPID)}" class="state-${esc(e.STATE)}" data-state="${esc(e.STATE)}" data-status="${esc(e.STATUS || "")}">` +
    `<td>${link}</td><td>${esc(e.OBSTYPE)}</td><td>${esc(e.TILEID)}</td><td>${fmt(e.EXPTIME, 0)}</td>` +
    `<td>${esc(e.STATE)}</td>${statusCell(e.STATUS, 'data-family="STATUS"')}` +
    FAMILIES.map(f => statusCell(e[f], `data-family="${f}"`)).join("") +
    `<td>${e.LATENCY === null || e.LATENCY === undefined ? "" : fmt(e.LATENCY, 1) + " s"}</td><td>${esc(e.ARRIVED || "")}</td><td>${esc(e.COMMENT || "")}</td></tr>`;
}
const EXPOSURE_HEAD = "<tr><th>EXPID</th><th>OBSTYPE</th><th>TILEID</th><th>EXPTIME</th><th>state</th><th>status</th>" +
  FAMILIES.map(f => `<th>${f}</th>`).join("") + "<th>latency</th><th>arrived</th><th>comment</th></tr>";

async function renderMonitor() {
  const [w, latest, nights] = await Promise.all([api("/api/watcher"), api("/api/latest"), api("/api/nights")]);
  let h = `<p id="watcher" data-running="${w.RUNNING}">Watcher: <b>${w.RUNNING ? "running (pid " + w.PID + ")" : "not running"}</b>` +
    (w.STOP_REQUESTED ? " - stop requested" : "") +
    (w.CURRENT ? ` - processing ${esc(w.CURRENT.OBSTYPE)} ${pad8(w.CURRENT.EXPID)}` : "") + "</p>";
  if (latest && latest.EXPID) {
    h += `<h2>Latest exposure: <a href="/exposure/${latest.NIGHT}/${latest.EXPID}">${esc(latest.OBSTYPE || "")} ${pad8(latest.EXPID)}</a>` +
      ` (night <a href="/night/${latest.NIGHT}">${latest.NIGHT}</a>) <span class="status ${esc(latest.STATUS || "NA")}" style="padding:0 .4em;color:#fff">${esc(latest.STATUS || latest.ROW && latest.ROW.STATE)}</span></h2>`;
    if (latest.CAMERAS) {
      h += `<div class="wheels" id="wheels">` + ["ALL", ...FAMILIES].map(f =>
        `<div class="wheel">${wheel(latest.CAMERAS, f, 180)}<br>${f === "ALL" ? "all checks" : "CHECK " + f}</div>`).join("") + "</div>";
      h += "<h3>Step log (seconds per step and camera)</h3><table id='steps'><tr><th>camera</th>";
      const steps = [...new Set(Object.values(latest.CAMERAS).flatMap(c => Object.keys(c.TIMING || {})))];
      h += steps.map(s => `<th>${esc(s)}</th>`).join("") + "<th>total</th><th>status</th></tr>";
      for (const [cam, c] of Object.entries(latest.CAMERAS)) {
        const t = c.TIMING || {};
        h += `<tr><td>${cam}</td>` + steps.map(s => `<td>${t[s] === undefined ? "" : fmt(t[s], 2)}</td>`).join("") +
          `<td>${fmt(Object.values(t).reduce((a, b) => a + b, 0), 2)}</td>${statusCell(c.STATUS)}</tr>`;
      }
      h += "</table>";
    }
  } else {
    h += "<p>No exposure yet.</p>";
  }
  if (nights.length) {
    const n = nights[0].NIGHT;
    const rows = await api(`/api/nights/${n}/exposures`);
    h += `<h2>Night <a href="/night/${n}">${n}</a></h2><table id="exposures">${EXPOSURE_HEAD}${rows.map(exposureRow).join("")}</table>`;
  }
  h += `<h3>Watcher log</h3><div class="log">${esc(w.LOG.join("\n"))}</div>`;
  return h;
}

async function renderNights() {
  const nights = await api("/api/nights");
  if (!nights.length) return "<p>No night yet.</p>";
  const byMonth = {};
  nights.forEach(n => { const m = String(n.NIGHT).slice(0, 6); (byMonth[m] = byMonth[m] || {})[n.NIGHT % 100] = n; });
  let h = "";
  for (const m of Object.keys(byMonth).sort().reverse()) {
    const y = +m.slice(0, 4), mo = +m.slice(4, 6);
    const first = new Date(Date.UTC(y, mo - 1, 1)).getUTCDay(), ndays = new Date(Date.UTC(y, mo, 0)).getUTCDate();
    h += `<table class="cal"><tr><th colspan="7">${y}-${String(mo).padStart(2, "0")}</th></tr><tr>` +
      ["Su", "Mo", "Tu", "We", "Th", "Fr", "Sa"].map(d => `<th>${d}</th>`).join("") + "</tr><tr>";
    let col = 0;
    for (let i = 0; i < first; i++, col++) h += "<td></td>";
    for (let d = 1; d <= ndays; d++, col++) {
      if (col % 7 === 0 && col) h += "</tr><tr>";
      const n = byMonth[m][d];
      h += n ? `<td class="${esc(n.STATUS)}" id="night-${n.NIGHT}"><a href="/night/${n.NIGHT}" title="${n.NEXP} exposures">${d}</a></td>` : `<td class="muted">${d}</td>`;
    }
    h += "</tr></table>";
  }
  h += `<table><tr><th>night</th><th>exposures</th><th>done</th><th>status</th><th>NORMAL</th><th>WARNING</th><th>ALARM</th></tr>` +
    nights.map(n => `<tr><td><a href="/night/${n.NIGHT}">${n.NIGHT}</a></td><td>${n.NEXP}</td><td>${n.NDONE}</td>${statusCell(n.STATUS)}` +
      `<td>${n.COUNTS.NORMAL}</td><td>${n.COUNTS.WARNING}</td><td>${n.COUNTS.ALARM}</td></tr>`).join("") + "</table>";
  return h;
}

async function renderNight() {
  const n = main.dataset.night;
  const rows = await api(`/api/nights/${n}/exposures`);
  return `<table id="exposures">${EXPOSURE_HEAD}${rows.map(exposureRow).join("")}</table>`;
}

async function renderExposure() {
  let e;
  if (main.dataset.latest) {
    e = await api("/api/latest");
    if (!e) return "<p>No exposure yet.</p>";
  } else {
    e = await api(`/api/exposures/${main.dataset.night}/${main.dataset.expid}`);
  }
  document.getElementById("title").textContent = `${e.OBSTYPE || ""} exposure ${pad8(e.EXPID)} (night ${e.NIGHT})`;
  if (state.expid !== e.EXPID) { state.spec = null; state.specsvg = null; }
  state.night = e.NIGHT;
  state.expid = e.EXPID;
  if (!e.DONE) return `<p>Quick-look not done yet (state ${esc(e.ROW && e.ROW.STATE)}).</p>`;
  let h = `<p>Tile ${esc(e.TILEID)}, EXPTIME ${fmt(e.EXPTIME, 0)} s, status <b id="expstatus" class="${esc(e.STATUS)}" style="color:#fff;padding:0 .3em">${esc(e.STATUS)}</b>` +
    (e.EFFTIME ? `, EFFTIME ${fmt(e.EFFTIME, 0)} s` : "") + ` - <a href="/night/${e.NIGHT}">night ${e.NIGHT}</a></p>`;
  h += `<div class="wheels">` + ["ALL", ...FAMILIES].map(f => `<div class="wheel">${wheel(e.CAMERAS, f, 150)}<br>${f}</div>`).join("") + "</div>";
  h += "<h2 id='cameras'>Cameras</h2><table><tr><th>camera</th><th>status</th>" + FAMILIES.map(f => `<th>${f}</th>`).join("") +
    "<th>out of range</th><th>calibrations used</th><th>seconds</th></tr>";
  for (const [cam, c] of Object.entries(e.CAMERAS)) {
    const why = c.FAILED ? `${c.FAILED.STEP} failed: ${c.FAILED.ERROR}` : [...c.ALARMS, ...c.WARNINGS].join(", ");
    const cal = Object.entries(c.CALIBRATIONS || {}).map(([k, v]) => `${k}: ${v.SOURCE}${v.NIGHT ? " " + v.NIGHT : ""}`).join("; ");
    h += `<tr id="cam-${cam}"><td>${cam}</td>${statusCell(c.STATUS)}${FAMILIES.map(f => statusCell(c.FAMILIES[f])).join("")}` +
      `<td>${esc(why)}</td><td>${esc(cal)}</td><td>${fmt(Object.values(c.TIMING || {}).reduce((a, b) => a + b, 0), 1)}</td></tr>`;
  }
  h += "</table><div class='plots'>" + Object.entries(e.CAMERAS).filter(([, c]) => c.PLOT_URL)
    .map(([cam, c]) => `<a href="${c.PLOT_URL}"><img class="cover" src="${c.PLOT_URL}" alt="${cam} coversheet"></a>`).join("") + "</div>";
  // amplifiers
  h += "<h2 id='amplifiers'>Amplifiers</h2>";
  const amps = e.AMPLIFIERS || {};
  const ametrics = [...new Set(Object.values(amps).flatMap(a => Object.keys(a)))];
  if (ametrics.length) {
    h += "<table><tr><th>camera</th>" + ametrics.map(m => `<th colspan="4">${esc(m)} (A B C D)</th>`).join("") + "</tr>";
    for (const [cam, a] of Object.entries(amps)) {
      h += `<tr><td>${cam}</td>` + ametrics.map(m => ["A", "B", "C", "D"].map(k => `<td>${fmt((a[m] || {})[k], 2)}</td>`).join("")).join("") + "</tr>";
    }
    h += "</table>";
  }
  // metrics with their scores
  h += "<h2 id='metrics'>Metrics and scores</h2><table><tr><th>camera</th><th>step</th><th>metric</th><th>value</th><th>status</th><th>normal</th><th>warning</th></tr>";
  for (const [cam, steps] of Object.entries(e.METRICS || {})) {
    for (const [step, ms] of Object.entries(steps)) {
      for (const [m, s] of Object.entries(ms)) {
        h += `<tr><td>${cam}</td><td>${step}</td><td><a href="/history?metric=${encodeURIComponent(m)}&step=${step}&camera=${cam}">${esc(m)}</a></td>` +
          `<td>${fmt(s.VALUE)}</td>${statusCell(s.STATUS)}<td>${fmt(s.NORMAL)}</td><td>${fmt(s.WARNING)}</td></tr>`;
      }
    }
  }
  h += "</table>";
  // fibers: by number and on the focal plane
  h += "<h2 id='fibers'>Fibers</h2><div class='plots'>";
  const fib = e.FIBERS || {};
  const thru = Object.entries(fib).filter(([, f]) => f.THRU && f.FIBER);
  const armCol = {b: "#1565c0", r: "#c62828", z: "#6a1b9a"};
  if (thru.length) {
    // flats: relative throughput; science: median flux over the sky fibers' (targets are brighter: clipped at 3)
    const sci = e.OBSTYPE === "SCIENCE";
    h += `<div>${sci ? "median flux / sky fibers' median, clipped at 3" : "relative throughput"} by fiber (b blue, r red, z purple)<br>` +
      plot(thru.map(([cam, f]) => ({x: f.FIBER, y: f.THRU, colour: armCol[cam[0]], r: 2,
      labels: f.FIBER.map((n, i) => `${cam} fiber ${n}: ${fmt(f.THRU[i], 3)}`)})),
      {xlabel: "fiber", ylabel: sci ? "flux / sky" : "throughput / median", width: 520, ymin: 0, ymax: sci ? 3 : undefined}) + "</div>";
    const withXY = thru.filter(([, f]) => f.X && f.Y);
    if (withXY.length) {
      const vals = withXY.flatMap(([, f]) => f.THRU.filter(v => v !== null)).sort((a, b) => a - b);
      const lo = vals[Math.floor(0.05 * (vals.length - 1))], hi = vals[Math.ceil(0.95 * (vals.length - 1))];
      h += "<div>focal plane, coloured by throughput (r cameras, else the first arm)<br>" + plot(withXY.filter(([cam], i, a) =>
        cam[0] === (a.some(([c]) => c[0] === "r") ? "r" : a[0][0][0])).map(([cam, f]) => ({x: f.X, y: f.Y, r: 4,
        colours: f.THRU.map(v => v === null ? "#ccc" : viridis((v - lo) / ((hi - lo) || 1))),
        labels: f.FIBER.map((n, i) => `${cam} fiber ${n}: ${fmt(f.THRU[i], 3)}`)})), {xlabel: "x [mm]", ylabel: "y [mm]", width: 420, height: 400}) + "</div>";
    }
  }
  h += "</div>";
  // spectra viewer
  h += "<h2 id='spectra'>Spectra</h2>";
  if ((e.SPECTRA_CAMERAS || []).length) {
    const s = state.spec || {camera: e.SPECTRA_CAMERAS[0], fiber: (fib[e.SPECTRA_CAMERAS[0]] || {}).FIBER ? fib[e.SPECTRA_CAMERAS[0]].FIBER[0] : 0};
    state.spec = s;
    h += `<div id="specform">camera <select id="speccam">${e.SPECTRA_CAMERAS.map(c => `<option ${c === s.camera ? "selected" : ""}>${c}</option>`).join("")}</select>` +
      ` fiber <input id="specfib" type="number" value="${s.fiber}" style="width:5em"> <button id="specprev">&lt;</button><button id="specnext">&gt;</button>` +
      ` <button id="specshow">show</button> rebin <input id="specrebin" type="number" value="${s.rebin || 4}" style="width:3em"></div><div id="specplot">${state.specsvg || ""}</div>`;
  } else {
    h += "<p class='muted'>No extracted spectra (ZERO, DARK and ARC exposures are checked on the CCD only).</p>";
  }
  return h;
}

async function showSpectrum() {
  const s = state.spec;
  s.camera = document.getElementById("speccam").value;
  s.fiber = parseInt(document.getElementById("specfib").value, 10);
  s.rebin = parseInt(document.getElementById("specrebin").value, 10) || 4;
  const night = main.dataset.night || state.night, expid = main.dataset.expid || state.expid;
  try {
    const sp = await api(`/api/exposures/${night}/${expid}/spectrum?camera=${s.camera}&fiber=${s.fiber}&rebin=${s.rebin}`);
    state.specsvg = `${esc(sp.CAMERA)} fiber ${sp.FIBER} ${esc(sp.OBJTYPE)} (${esc(sp.FILE)})<br>` +
      plot([{x: sp.WAVE, y: sp.FLUX, line: true}], {xlabel: "wavelength [A]", ylabel: "flux [electron / A]", width: 900, height: 300});
  } catch (err) {
    state.specsvg = `<p class="muted">${esc(err.message)}</p>`;
  }
  document.getElementById("specplot").innerHTML = state.specsvg;
}

async function renderHistory() {
  const q = new URLSearchParams(location.search);
  const known = await api("/api/metrics");
  const metric = q.get("metric") || (known[0] || {}).METRIC || "";
  let h = `<form>metric <select name="metric">${known.map(k => `<option value="${esc(k.METRIC)}" ${k.METRIC === metric ? "selected" : ""}>${esc(k.STEP)} ${esc(k.METRIC)}</option>`).join("")}</select>` +
    ` camera <input name="camera" value="${esc(q.get("camera") || "")}" size="3"> kind <select name="kind">` +
    ["", "quicklook", "frame"].map(k => `<option ${k === (q.get("kind") || "") ? "selected" : ""}>${k}</option>`).join("") +
    `</select> last <input name="nights" value="${esc(q.get("nights") || "")}" size="3"> nights <button>plot</button></form>`;
  if (!metric) return h + "<p>No QC1 values yet.</p>";
  const params = new URLSearchParams();
  ["camera", "step", "kind", "nights"].forEach(k => { if (q.get(k)) params.set(k, q.get(k)); });
  const rows = await api(`/api/metrics/${encodeURIComponent(metric)}?${params}`);
  const num = rows.filter(r => r.VALUE !== null);
  h += `<p>${num.length} values of ${esc(metric)}</p>`;
  const x = num.map(r => r.MJD || r.NIGHT);
  h += plot([{x, y: num.map(r => r.VALUE), colours: num.map(r => COLOURS[r.STATUS] || "#1565c0"),
    labels: num.map(r => `${r.KIND} ${r.NIGHT} ${r.EXPID} ${r.CAMERA}`)}], {xlabel: num.length && num[0].MJD ? "MJD" : "night", ylabel: metric, width: 900});
  return h;
}

const RENDER = {monitor: renderMonitor, nights: renderNights, night: renderNight, exposure: renderExposure, history: renderHistory};

async function tick() {
  if (busy) return;
  busy = true;
  try {
    const focus = document.activeElement && document.activeElement.id;
    if (page === "history" && state.drawn) return;  // drawn once per query (the form asks again)
    if (page === "exposure" && state.drawn && document.getElementById("specform") && focus && focus.startsWith("spec")) return;
    const h = await RENDER[page]();
    main.innerHTML = h;
    state.drawn = true;
    main.dataset.updated = new Date().toISOString();
    if (page === "exposure" && document.getElementById("specshow")) {
      const step = d => { const f = document.getElementById("specfib"); f.value = parseInt(f.value, 10) + d; showSpectrum(); };
      document.getElementById("specshow").onclick = showSpectrum;
      document.getElementById("specprev").onclick = () => step(-1);
      document.getElementById("specnext").onclick = () => step(1);
      if (!state.specsvg) showSpectrum();
    }
  } catch (err) {
    main.innerHTML = `<p class="ALARM" style="color:#fff;padding:.3em">${esc(err.message)}</p>`;
  } finally {
    busy = false;
    document.getElementById("clock").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  }
}

tick();
setInterval(tick, refresh);
