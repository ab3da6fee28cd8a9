// The Prometheus text exposition of /metrics, parsed, and what the live panel derives from two
// scrapes of it: per model requests/s, p50/p95 latency, mean batch size, queue depth; and from
// one scrape, the answers by status class and the scheduler's refusals.

const SAMPLE = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

/** [{name, labels: {..}, value}] of every sample line. */
export function parseExposition(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[2] || "").matchAll(LABEL)) labels[name] = value.replace(/\\(.)/g, "$1");
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** What one scrape holds per model: counters, the latency histogram's buckets, the queue gauge. */
export function perModel(samples) {
  const models = {};
  const of = (name) => (models[name] ??= { requests: 0, success: 0, items: 0, batches: 0, queue: 0, buckets: new Map() });
  for (const { name, labels, value } of samples) {
    if (!labels.model) continue;
    const model = of(labels.model);
    if (name === "easerve_http_requests_total") model.requests += value;
    else if (name === "nv_inference_request_success_total") model.success = value;
    else if (name === "nv_inference_count_total") model.items = value;
    else if (name === "nv_inference_exec_count_total") model.batches = value;
    else if (name === "nv_inference_pending_request_count") model.queue = value;
    else if (name === "easerve_request_duration_seconds_bucket") model.buckets.set(labels.le === "+Inf" ? Infinity : Number(labels.le), value);
  }
  return models;
}

/** The status codes whose counts are shown apart: refused (429, 503) and too late (504). */
export const CODES_SHOWN = ["429", "503", "504"];

/**
 * From one scrape, the inference requests answered so far (all labels of a model summed, as the
 * processes or replicas of one server each add theirs): per model {"2xx", "4xx", "5xx", "429",
 * "503", "504", total, reasons: {reason: count}}, the same summed over the models as `all`, and
 * the scheduler's requests refused at the door and dropped as unreachable (null when not exposed).
 */
export function statusCounts(samples) {
  const empty = () => ({ total: 0, "2xx": 0, "4xx": 0, "5xx": 0, ...Object.fromEntries(CODES_SHOWN.map((c) => [c, 0])), reasons: {} });
  const models = {};
  const all = empty();
  const scheduler = { refusedAtDoor: null, dropped: null };
  for (const { name, labels, value } of samples) {
    if (name === "easerve_scheduler_refused_at_door") scheduler.refusedAtDoor = (scheduler.refusedAtDoor ?? 0) + value;
    else if (name === "easerve_scheduler_dropped") scheduler.dropped = (scheduler.dropped ?? 0) + value;
    if (!labels.model) continue;
    if (name === "easerve_http_requests_total" && labels.code) {
      const counts = (models[labels.model] ??= empty());
      const keys = ["total", `${labels.code[0]}xx`, ...CODES_SHOWN.filter((code) => code === labels.code)];
      for (const target of [counts, all]) for (const key of keys) if (key in target) target[key] += value;
    } else if (name === "nv_inference_request_failure_total" && labels.reason) {
      const counts = (models[labels.model] ??= empty());
      for (const target of [counts, all]) target.reasons[labels.reason] = (target.reasons[labels.reason] ?? 0) + value;
    }
  }
  return { models, all, scheduler };
}

/** The q-quantile of a cumulative histogram (linear within a bucket, as histogram_quantile). */
export function quantile(q, buckets) {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Infinity) ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let previousBound = 0;
  let previousCount = 0;
  for (const bound of bounds) {
    const count = buckets.get(bound);
    if (count >= rank) {
      if (bound === Infinity) return previousBound;
      const inBucket = count - previousCount;
      return previousBound + (bound - previousBound) * (inBucket > 0 ? (rank - previousCount) / inBucket : 0);
    }
    previousBound = bound;
    previousCount = count;
  }
  return previousBound;
}

function bucketDelta(now, before) {
  const delta = new Map();
  for (const [bound, count] of now.buckets) delta.set(bound, count - (before?.buckets.get(bound) ?? 0));
  return delta;
}

/** Per model over the window between two scrapes ({time (s), models}): rate, p50, p95 (ms), batch, queue. */
export function windowStats(now, before) {
  const seconds = Math.max(1e-3, now.time - before.time);
  const stats = {};
  for (const [name, model] of Object.entries(now.models)) {
    const old = before.models[name];
    const delta = (key) => model[key] - (old?.[key] ?? 0);
    const latency = bucketDelta(model, old);
    const p = (q) => {
      const value = quantile(q, latency);
      return value === null ? null : value * 1000;
    };
    stats[name] = {
      total: model.requests,
      rate: delta("requests") / seconds,
      p50: p(0.5),
      p95: p(0.95),
      batch: delta("batches") > 0 ? delta("items") / delta("batches") : null,
      queue: model.queue,
    };
  }
  return stats;
}
