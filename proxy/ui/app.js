// Switchyard's dashboard. Everything it shows and does goes through the
// admin API, with the token the user signs in with (kept in this tab only).
// `/ui#token=TOKEN` signs in at load, for wall screens and scripts.
"use strict";

const POLL_MS = 2000;      // figures and running rollouts
const POINTS = 150;        // chart history: 5 minutes at POLL_MS
const EVENTS_SHOWN = 100;
const COLOURS = ["#2457c5", "#e8710a", "#1a7f37", "#9334e6", "#c62828", "#00838f"];

const state = {
  token: sessionStorage.getItem("switchyard-token") || "",
  canWrite: false,
  services: new Map(),   // name -> { view, rollout, card, charts, series }
  lastEvent: 0,
};
// For scripts and tests: what is on screen, without scraping it.
window.dashboard = state;

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
};
const fmt = (n, digits = 1) => (n == null || Number.isNaN(n) ? "–" : Number(n).toFixed(digits));

/** Calls the admin API; throws an Error carrying the API's message. */
async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  // Every write says JSON, bodiless ones too: an admin API without tokens
  // takes no write of another type (so a cross-site form cannot post).
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const e = new Error((data && data.error) || `${method} ${path}: HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return data;
}

function notice(msg, kind = "error") {
  const n = $("#notice");
  n.textContent = msg;
  n.className = kind === "info" ? "info" : "";
  n.hidden = !msg;
}

// === Signing in ===

async function signIn() {
  try {
    const me = await api("GET", "/v1/whoami");
    state.canWrite = me.can_write;
    $("#who").textContent = me.token ? `signed in as ${me.token}${me.can_write ? "" : " (read-only)"}` : (me.can_write ? "open admin API" : "not signed in: read-only");
    $("#signout").hidden = !state.token;
    const env = $("#environment");
    env.hidden = !me.environment;
    env.textContent = me.environment || "";
    document.title = `Switchyard ${me.environment || ""} ${me.version}`.replace(/\s+/g, " ");
    notice("");
  } catch (e) {
    state.canWrite = false;
    $("#who").textContent = "";
    notice(e.status === 401 ? "This token was refused: sign in with another." : `Cannot reach the admin API: ${e.message}`);
  }
  for (const b of document.querySelectorAll("button.write, input.write")) b.disabled = !state.canWrite;
}

$("#signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  $("#token").value = "";
  sessionStorage.setItem("switchyard-token", state.token);
  await signIn();
  await refreshAll();
});
$("#signout").addEventListener("click", async () => {
  state.token = "";
  sessionStorage.removeItem("switchyard-token");
  await signIn();
});

// === Services ===

async function refreshAll() {
  let views;
  try {
    views = await api("GET", "/v1/services");
  } catch (e) {
    if (e.status === 401) notice("Sign in with a token to see this proxy.", "info");
    else notice(`Cannot list services: ${e.message}`);
    return;
  }
  for (const v of views) await refreshService(v.name, v);
  for (const name of [...state.services.keys()]) {
    if (!views.some((v) => v.name === name)) {
      state.services.get(name).card.remove();
      state.services.delete(name);
    }
  }
  await refreshHealth();
}

async function refreshService(name, view) {
  try {
    view = view || (await api("GET", `/v1/services/${encodeURIComponent(name)}`));
  } catch (e) {
    return notice(`Cannot read ${name}: ${e.message}`);
  }
  let s = state.services.get(name);
  if (!s) {
    s = { name, view, rollout: null, series: { t: [], pools: {} } };
    s.card = el("article", { class: "service", id: `service-${name}` });
    $("#services").append(s.card);
    state.services.set(name, s);
    buildCard(s);
  }
  s.view = view;
  try {
    s.rollout = view.rollout ? await api("GET", `/v1/services/${encodeURIComponent(name)}/rollout`) : null;
  } catch (e) {
    notice(`Cannot read ${name}'s rollout: ${e.message}`);
  }
  renderService(s);
}

function buildCard(s) {
  s.card.append(
    el("h2", {}, s.name, " ", el("small", { class: "route" })),
    el("div", { class: "table" }, el("table", { class: "pools" },
      el("thead", {}, el("tr", {}, ["pool", "version", "endpoints", "weight", "share", "req/s", "errors", "p50 ms", "p99 ms"].map((h) => el("th", {}, h)))),
      el("tbody"))),
    el("div", { class: "suspended" }),
    el("div", { class: "charts" }),
    el("div", { class: "rollout" }),
    el("form", { class: "weights", onsubmit: (ev) => { ev.preventDefault(); setWeights(s); } }),
  );
  // Lay the three boxes out first, so each chart starts at its column's width.
  const titles = { rate: "requests / s", errors: "error rate %", latency: "latency ms (p50 solid, p99 dashed)" };
  const boxes = Object.entries(titles).map(([k, title]) => [k, chartBox(s, title)]);
  s.charts = Object.fromEntries(boxes.map(([k, box]) => [k, chart(box)]));
}

function renderService(s) {
  const v = s.view;
  $(".route", s.card).textContent = `${v.host || "any host"} ${v.path_prefix}${v.sticky ? ` · sticky by ${v.sticky}` : ""} · weights from ${v.weights_source}`;
  const body = $("tbody", s.card);
  body.replaceChildren(...v.pools.map((p) => {
    const up = p.endpoints.filter((e) => e.healthy).length;
    const f = s.figures && s.figures[p.name];
    return el("tr", { "data-pool": p.name },
      el("td", {}, p.name, v.suspended_pools.includes(p.name) ? el("span", { class: "down" }, " suspended") : null),
      el("td", { class: "version", title: [p.commit, p.build_url].filter(Boolean).join(" ") }, p.version || "–"),
      el("td", { class: up === p.endpoints.length ? "up" : "down", title: p.endpoints.map((e) => `${e.address} ${e.healthy ? "up" : "down"}`).join("\n") }, `${up}/${p.endpoints.length} up`),
      el("td", { class: "num weight" }, p.weight),
      el("td", { class: "num" }, `${fmt(p.share_percent)} %`),
      el("td", { class: "num rate" }, f ? fmt(f.rate) : "–"),
      el("td", { class: "num" }, f ? `${fmt(f.error_rate * 100, 2)} %` : "–"),
      el("td", { class: "num" }, f ? fmt(f.latency_ms.p50, 2) : "–"),
      el("td", { class: "num" }, f ? fmt(f.latency_ms.p99, 2) : "–"));
  }));
  const susp = $(".suspended", s.card);
  susp.replaceChildren(...(v.suspended_rules.length ? [
    el("h3", {}, "Suspended rules"),
    el("ul", {}, v.suspended_rules.map((r) => el("li", {}, `rule ${r.rule}: ${r.text}`))),
    el("button", { class: "write", type: "button", onclick: () => act(s, "DELETE", "suspension") }, "Lift suspension"),
  ] : []));
  renderRollout(s);
  renderWeights(s);
  for (const b of s.card.querySelectorAll("button.write, input.write")) b.disabled = !state.canWrite;
}

function renderRollout(s) {
  const box = $(".rollout", s.card);
  const r = s.rollout;
  const running = r && (r.status === "running" || r.status === "paused");
  const parts = [el("h3", {}, "Rollout")];
  if (!r) {
    parts.push(el("p", {}, "No rollout yet."));
  } else {
    const step = r.current_step || {};
    const hold = step.hold_seconds;
    const progress = hold ? Math.min(100, (r.time_in_step_seconds / hold) * 100) : 0;
    parts.push(
      el("p", {},
        el("span", { class: `state ${r.status}` }, r.status), " · ",
        r.plan && r.plan.strategy === "blue-green" ? `phase ${step.phase || "–"}`
          : r.plan && r.plan.strategy === "rolling" ? `batch ${Math.min(r.step + 1, r.steps_total)} of ${r.steps_total} (${step.phase || "–"})` : `step ${Math.min(r.step + 1, r.steps_total)} of ${r.steps_total}`,
        step.mirror_percent ? ` · mirroring ${step.mirror_percent}% to the candidate`
          : r.plan && r.plan.strategy === "rolling" ? ` · new endpoints serving ${r.weight}%` : ` · candidate weight ${r.weight}`, r.reason ? ` · ${r.reason}` : ""),
      el("div", { class: "bar", title: hold ? `${fmt(r.time_in_step_seconds, 0)} s of ${fmt(hold, 0)} s held` : "" },
        el("div", { style: false })),
      el("ol", { class: "decisions" }, r.decisions.slice(-5).reverse().map((d) =>
        el("li", { class: d.decision.split(/\W/)[0] }, el("b", {}, d.decision), ` (step ${d.step + 1}, ${d.time.slice(11, 19)}): ${d.why}`))),
    );
    // CSSOM, not a style attribute: the page's policy forbids inline styles.
    parts[2].firstChild.style.width = `${progress}%`;
  }
  const cmd = (action, label, cls = "") => el("button", { class: `write ${cls}`, type: "button", "data-action": action, disabled: !running, onclick: () => act(s, "POST", `rollout/${action}`) }, label);
  parts.push(el("div", { class: "actions" },
    el("button", { class: "write", type: "button", "data-action": "start", disabled: running, onclick: () => act(s, "POST", "rollout", {}) }, "Start rollout"),
    cmd("promote", "Promote"), cmd("pause", "Pause"), cmd("resume", "Resume"), cmd("abort", "Abort", "danger")));
  box.replaceChildren(...parts);
  // A button the rollout's state rules out stays off whoever is signed in.
  for (const b of box.querySelectorAll("button[data-action]")) {
    const ok = b.dataset.action === "start" ? !running : running;
    b.classList.toggle("write", ok);
    if (!ok) b.disabled = true;
  }
}

function renderWeights(s) {
  const form = $(".weights", s.card);
  if (form.contains(document.activeElement)) return; // do not undo what is being typed
  form.replaceChildren(
    el("b", {}, "Weights"),
    ...s.view.pools.map((p) => el("label", {}, p.name, el("input", { class: "write", type: "number", min: 0, step: 1, name: p.name, value: p.weight }))),
    el("button", { class: "write", type: "submit" }, "Set"),
    el("button", { class: "write", type: "button", onclick: () => act(s, "DELETE", "weights") }, "Back to config"));
}

async function setWeights(s) {
  const weights = {};
  for (const i of s.card.querySelectorAll(".weights input")) weights[i.name] = Number(i.value);
  document.activeElement.blur();
  await act(s, "PUT", "weights", { weights, reason: "set from the dashboard" });
}

/** A write to `/v1/services/{svc}/{path}`; its event refreshes the card. */
async function act(s, method, path, body) {
  try {
    await api(method, `/v1/services/${encodeURIComponent(s.name)}/${path}`, body);
    notice("");
  } catch (e) {
    notice(`${method} ${path} on ${s.name} refused: ${e.message}`);
  }
  await refreshService(s.name);
}

// === Charts ===

function chartBox(s, title) {
  const box = el("div", { class: "chart" }, el("div", { class: "title" }, title));
  $(".charts", s.card).append(box);
  return box;
}

const CHART_HEIGHT = 160;

/** A chart filling `box`, resized with it (window, phone rotation, grid reflow). */
function chart(box) {
  const width = () => Math.max(200, box.clientWidth);
  const u = new uPlot({ width: width(), height: CHART_HEIGHT, series: [{}], axes: [{}, { size: 50 }], legend: { live: false } }, [[]], box);
  new ResizeObserver(() => {
    if (u.width !== width()) u.setSize({ width: width(), height: CHART_HEIGHT });
  }).observe(box);
  return { u, pools: [] };
}

/** The pools' series in a chart, rebuilt when the pools change. */
function ensureSeries(c, pools, perPool) {
  const names = pools.join(",");
  if (c.pools.join(",") === names) return;
  while (c.u.series.length > 1) c.u.delSeries(1);
  pools.forEach((p, i) => {
    for (const [suffix, dash] of perPool) {
      c.u.addSeries({ label: `${p}${suffix}`, stroke: COLOURS[i % COLOURS.length], dash, width: 1.5, spanGaps: true });
    }
  });
  c.pools = pools.slice();
}

async function pollStats() {
  for (const s of state.services.values()) {
    const path = `/v1/services/${encodeURIComponent(s.name)}/stats`;
    let stats;
    try {
      stats = await api("GET", path); // over the configured window
    } catch {
      continue;
    }
    // In the service's order (the figures come keyed by name).
    const pools = s.view.pools.map((p) => p.name).filter((p) => p in stats.pools);
    s.figures = {};
    for (const p of pools) s.figures[p] = { ...stats.pools[p], rate: stats.pools[p].requests / stats.window_seconds };
    const ser = s.series;
    ser.t.push(Date.now() / 1000);
    for (const p of pools) {
      const f = s.figures[p];
      const row = (ser.pools[p] ||= { rate: [], errors: [], p50: [], p99: [] });
      while (row.rate.length < ser.t.length - 1) for (const k in row) row[k].push(null);
      row.rate.push(f.rate);
      row.errors.push(f.requests ? f.error_rate * 100 : null);
      row.p50.push(f.requests ? f.latency_ms.p50 : null);
      row.p99.push(f.requests ? f.latency_ms.p99 : null);
    }
    if (ser.t.length > POINTS) {
      ser.t.shift();
      for (const row of Object.values(ser.pools)) for (const k in row) row[k].shift();
    }
    const col = (k) => pools.map((p) => ser.pools[p][k]);
    ensureSeries(s.charts.rate, pools, [["", undefined]]);
    ensureSeries(s.charts.errors, pools, [["", undefined]]);
    ensureSeries(s.charts.latency, pools, [[" p50", undefined], [" p99", [4, 4]]]);
    s.charts.rate.u.setData([ser.t, ...col("rate")]);
    s.charts.errors.u.setData([ser.t, ...col("errors")]);
    s.charts.latency.u.setData([ser.t, ...pools.flatMap((p) => [ser.pools[p].p50, ser.pools[p].p99])]);
    if (s.rollout && (s.rollout.status === "running" || s.rollout.status === "paused")) {
      await refreshService(s.name);
    } else {
      renderService(s);
    }
  }
}

// === Health and fleet ===

async function refreshHealth() {
  const badge = $("#status");
  try {
    const h = await api("GET", "/health/ready");
    badge.textContent = h.fleet ? `${h.status} · fleet ${h.fleet}` : h.status;
    badge.className = `badge ${h.status === "ready" && h.fleet !== "degraded" ? "ok" : "warn"}`;
  } catch (e) {
    badge.textContent = e.status === 503 ? "draining" : "unreachable";
    badge.className = "badge bad";
  }
}

// === History, live over server-sent events ===

function showEvent(e) {
  const list = $("#events");
  list.prepend(el("li", { class: e.outcome, "data-seq": e.seq },
    el("time", { datetime: e.time }, e.time.replace("T", " ").slice(0, 19)),
    el("span", { class: "kind" }, e.kind, e.service ? ` · ${e.service}` : ""),
    el("span", {}, e.message, e.actor ? ` — ${e.actor}` : "", e.reason ? ` (${e.reason})` : "")));
  while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
}

/** Shows the latest events, then follows `/v1/events?follow=1` with fetch
 * (EventSource cannot send a token); each new event refreshes its service. */
async function follow() {
  try {
    for (const e of await api("GET", "/v1/events?limit=50")) {
      state.lastEvent = Math.max(state.lastEvent, e.seq);
      showEvent(e);
    }
  } catch {
    // The stream below says why, or reconnects.
  }
  for (;;) {
    try {
      const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
      const r = await fetch(`/v1/events?follow=1&after=${state.lastEvent}`, { headers });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const e = JSON.parse(data);
          state.lastEvent = Math.max(state.lastEvent, e.seq);
          showEvent(e);
          if (e.service && state.services.has(e.service)) refreshService(e.service);
          else if (e.kind === "config-reload") refreshAll();
        }
      }
    } catch {
      // Reconnect below, from the last event seen.
    }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

// === Start ===

(async () => {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    state.token = decodeURIComponent(m[1]);
    sessionStorage.setItem("switchyard-token", state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  await signIn();
  await refreshAll();
  follow();
  await pollStats();
  setInterval(() => pollStats().catch(() => {}), POLL_MS);
  setInterval(() => refreshHealth(), 5 * POLL_MS);
})();
