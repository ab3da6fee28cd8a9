// "Server": the models with their state, backend, batching settings and latency model, the
// device scheduler (policy, slots, refusals at the door, early drops), live charts of /metrics
// (requests/s, p50/p95 latency, mean batch size, queue depth per model), and the answers so far
// by status class (2xx, 4xx, 5xx; 429, 503, 504 apart) per model and in all.

import { apiUrl, loadModels, request } from "./api.js";
import { drawLineChart } from "./charts.js";
import { clear, formatMs, h } from "./dom.js";
import { css, labelColours } from "./palette.js";
import { CODES_SHOWN, parseExposition, perModel, statusCounts, windowStats } from "./prometheus.js";
import { renderError } from "./render.js";

const METRICS_EVERY_MS = 1500;
const MODELS_EVERY_MS = 3000;
const WINDOW_S = 5;
const HISTORY_S = 60;
const METRICS = ["rate", "p50", "p95", "batch", "queue"];

function modelRow(model) {
  const b = model.batching;
  return h("tr", { "data-model": model.name },
    h("td", {}, model.name), h("td", {}, model.task), h("td", {}, model.attention.toUpperCase()),
    h("td", {}, h("span", { class: "badge", "data-phase": model.state }, model.state), model.error ? h("div", { class: "error-text" }, model.error) : null),
    h("td", {}, model.backend || "–"), h("td", {}, model.arch),
    h("td", {}, b.max_batch_size), h("td", {}, `${b.max_queue_delay_ms} ms`), h("td", {}, b.max_queue_size),
    h("td", {}, b.instances), h("td", { "data-queue": b.queue_depth }, b.queue_depth),
    h("td", { class: "latency" }, latencyText(model.latency)));
}

/** The scheduler's latency model of a model: predicted ms at batch 1 and at its largest profiled
 * batch, its recent error, and how far the door now stretches the work ahead of its requests. */
function latencyText(latency) {
  if (!latency) return "–";
  const sizes = Object.keys(latency.predicted_ms).map(Number).sort((a, b) => a - b);
  const at = (size) => `${formatMs(latency.predicted_ms[size])} ms @${size}`;
  const error = latency.error_p95 === null ? "" : ` (p95 error ${Math.round(100 * latency.error_p95)}%)`;
  const factor = latency.admission_factor;
  const stretched = factor == null || factor < 1.01 ? "" : `, work ahead ×${factor.toFixed(2)} at the door`;
  return `${at(sizes[0])}, ${at(sizes.at(-1))}${error}${stretched}`;
}

function schedulerText(s) {
  const slots = s.slots === null ? "no slot limit" : `${s.slots} slot${s.slots === 1 ? "" : "s"}`;
  const busy = `${s.busy_s.toFixed(1)} s busy`;
  return `scheduler ${s.policy}, ${slots}: ${s.batches} batches, ${busy}, ${s.refused_at_door} refused at the door, ` +
    `${s.dropped} dropped as unreachable` + (s.probes ? `, ${s.probes} latency probes` : "");
}

function showModels(listing) {
  document.getElementById("server-backend").textContent = `backend ${listing.backend}: ${listing.backend_reason}`;
  const scheduler = document.getElementById("server-scheduler");
  scheduler.textContent = schedulerText(listing.scheduler);
  scheduler.dataset.policy = listing.scheduler.policy;
  scheduler.dataset.refused = listing.scheduler.refused_at_door;
  scheduler.dataset.dropped = listing.scheduler.dropped;
  clear(document.getElementById("models-table"),
    h("tr", {}, ["model", "task", "attention", "state", "backend", "arch", "max batch", "queue delay", "max queue",
      "instances", "queue depth", "latency model"].map((name) => h("th", {}, name))),
    listing.models.map(modelRow));
}

function showPhase(body) {
  const badge = document.getElementById("server-phase");
  badge.dataset.phase = body.ready ? "ready" : body.phase || "unknown";
  badge.textContent = body.ready ? "ready" : body.phase || "not ready";
  badge.title = body.error || "";
}

/** Repeats `task` every `ms` (after it finishes), forever. */
function every(ms, task) {
  const loop = async () => {
    await task();
    setTimeout(loop, ms);
  };
  loop();
}

export function setupServer() {
  const errors = document.getElementById("server-error");
  const pause = document.getElementById("live-pause");
  const scrapes = [];
  const history = new Map(); // model -> [{time, rate, p50, ...}]
  const colours = new Map();
  const palette = labelColours(16);

  every(MODELS_EVERY_MS, async () => {
    showPhase(await readiness()); // first: the phase shows even when the server no longer answers
    try {
      const listing = await loadModels(true);
      showModels(listing);
      listing.models.forEach((model, index) => colours.set(model.name, css(palette[index % palette.length])));
      clear(errors);
    } catch (error) {
      clear(errors, renderError(error));
    }
  });

  every(METRICS_EVERY_MS, async () => {
    if (pause.checked || document.hidden) return; // no scraping for a page nobody sees
    try {
      const samples = parseExposition(await (await request("metrics")).text());
      scrapes.push({ time: performance.now() / 1000, models: perModel(samples) });
      showStatusCounts(statusCounts(samples));
      while (scrapes.length > 2 && scrapes[1].time < scrapes.at(-1).time - HISTORY_S) scrapes.shift();
      record(scrapes, history);
      drawLive(history, colours);
    } catch (error) {
      clear(errors, renderError(error));
    }
  });
}

async function readiness() {
  // /readyz answers 503 with its phase (loading, stopping, draining) while not ready; no answer at
  // all means the server is gone.
  let response;
  try {
    response = await fetch(apiUrl("readyz"), { cache: "no-store" });
  } catch {
    return { ready: false, phase: "stopped" };
  }
  try {
    return await response.json();
  } catch {
    return { ready: false, phase: `error ${response.status}` };
  }
}

function record(scrapes, history) {
  const now = scrapes.at(-1);
  if (scrapes.length < 2) return;
  const before = [...scrapes].reverse().find((s) => s.time <= now.time - WINDOW_S) || scrapes[0];
  const stats = windowStats(now, before);
  for (const [model, values] of Object.entries(stats)) {
    if (!history.has(model)) history.set(model, []);
    const points = history.get(model);
    points.push({ time: now.time, ...values });
    while (points.length && points[0].time < now.time - HISTORY_S) points.shift();
  }
}

function drawLive(history, colours) {
  const active = [...history].filter(([, points]) => points.at(-1)?.total > 0).sort(([a], [b]) => a.localeCompare(b));
  const now = Math.max(...active.map(([, points]) => points.at(-1).time), performance.now() / 1000);
  for (const canvas of document.querySelectorAll("canvas[data-metric]")) {
    const metric = canvas.dataset.metric;
    const series = active.map(([model, points]) => ({
      name: model,
      colour: colours.get(model) || "#64748b",
      points: points.map((p) => [p.time - now, p[metric]]),
    }));
    drawLineChart(canvas, series, {
      xMin: -HISTORY_S, xMax: 0, xLabel: (x) => (x === 0 ? "now" : `${Math.round(x)} s`),
      yMinRange: metric === "batch" ? 2 : 1,
    });
  }
  showLiveTable(active);
  clear(document.getElementById("live-legend"), active.map(([model]) =>
    h("span", { class: "legend-item" }, h("span", { class: "chip", style: { background: colours.get(model) || "#64748b" } }), model)));
}

function showLiveTable(active) {
  const value = (v, unit = "") => (v === null || v === undefined ? "–" : `${+v.toFixed(2)}${unit}`);
  clear(document.getElementById("live-table"),
    h("tr", {}, ["model", "requests", "req/s", "p50", "p95", "mean batch", "queue"].map((name) => h("th", {}, name))),
    active.length === 0 ? h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no inference requests yet")) : null,
    active.map(([model, points]) => {
      const last = points.at(-1);
      return h("tr", { "data-model": model, "data-total": last.total },
        h("td", {}, model), h("td", {}, last.total), h("td", {}, value(last.rate)),
        h("td", {}, last.p50 === null ? "–" : `${formatMs(last.p50)} ms`), h("td", {}, last.p95 === null ? "–" : `${formatMs(last.p95)} ms`),
        h("td", {}, value(last.batch)), h("td", {}, last.queue));
    }));
}

const CODE_TITLES = { 429: "429 queue full", 503: "503 refused", 504: "504 late" };
const STATUS_COLUMNS = ["2xx", "4xx", "5xx", ...CODES_SHOWN].map((code) => [code, CODE_TITLES[code] || code]);

function statusRow(name, counts, attrs) {
  const reasons = Object.entries(counts.reasons).filter(([, n]) => n > 0).sort(([a], [b]) => a.localeCompare(b));
  return h("tr", attrs,
    h("td", {}, name), h("td", { "data-code": "total" }, counts.total),
    STATUS_COLUMNS.map(([code]) => h("td", { "data-code": code, class: code[0] !== "2" && counts[code] > 0 ? "error-text" : null }, counts[code])),
    h("td", { class: "reasons" }, reasons.length ? reasons.map(([reason, n]) => `${reason} ${n}`).join(", ") : "–"));
}

/** The answers so far by status class, per model and in all, and the scheduler's refusals. */
function showStatusCounts({ models, all, scheduler }) {
  const names = Object.keys(models).sort((a, b) => a.localeCompare(b));
  const table = document.getElementById("status-table");
  clear(table,
    h("tr", {}, ["model", "answered", ...STATUS_COLUMNS.map(([, title]) => title), "failures by reason"].map((name) => h("th", {}, name))),
    names.map((name) => statusRow(name, models[name], { "data-model": name })),
    statusRow("all models", all, { class: "total", "data-all": "" }));
  table.dataset.state = "done";
  const line = document.getElementById("status-scheduler");
  const known = scheduler.refusedAtDoor !== null;
  line.textContent = known
    ? `scheduler: ${scheduler.refusedAtDoor} refused at the door (503, before reading the body), ` +
      `${scheduler.dropped} dropped from the queue as unreachable (504)`
    : "";
  if (known) Object.assign(line.dataset, { refused: scheduler.refusedAtDoor, dropped: scheduler.dropped });
}
