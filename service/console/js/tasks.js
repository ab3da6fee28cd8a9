// Per task: its options (top-k, threshold, class and seed...) and the request they make, chosen by
// the kinds of the task's answer and request, never by its name.

import { modelsFor, postJson } from "./api.js";
import { clear, h } from "./dom.js";
import { inputMissing } from "./inputs.js";

function numberField(name, label, value, attrs) {
  return h("label", {}, label, h("input", { type: "number", name, value, ...attrs }));
}

function rangeField(name, label, value, attrs) {
  const output = h("output", {}, value);
  const input = h("input", { type: "range", name, value, ...attrs });
  input.addEventListener("input", () => (output.textContent = input.value));
  return h("label", {}, label, input, output);
}

async function classField(task) {
  const models = await modelsFor(task).catch(() => []);
  const labels = models[0]?.labels || [];
  const select = h("select", { name: "label" }, labels.map((label) => h("option", { value: label }, label)));
  return h("label", {}, "Class", select);
}

// The overlay is drawn no wider than the answer's frame shows it (its CSS width, `.image-frame`,
// in device pixels): a photo's full-size overlay would cost the server seconds nobody sees.
const OVERLAY_WIDTH = Math.ceil(380 * (window.devicePixelRatio || 1));

/** Per answer kind: the fields that shape the answer, and the parameters they send. */
const ANSWERS = {
  labels: {
    fields: () => [numberField("top_k", "Top k", 5, { min: 1, max: 20 })],
    params: (options) => ({ top_k: options.top_k }),
  },
  boxes: {
    fields: () => [rangeField("score_threshold", "Min score", 0.3, { min: 0, max: 1, step: 0.05 })],
    params: (options) => ({ score_threshold: options.score_threshold }),
  },
  "pixel-labels": {
    fields: () => [rangeField("alpha", "Overlay opacity", 0.5, { min: 0, max: 1, step: 0.05 })],
    params: (options) => ({ overlay: "true", alpha: options.alpha, overlay_width: OVERLAY_WIDTH }),
  },
  image: {
    fields: () => [numberField("seed", "Seed", 0, { min: 0, step: 1 }), numberField("n", "Images", 4, { min: 1, max: 16 })],
    params: (options) => ({ seed: Number(options.seed || 0), n: Number(options.n || 1) }),
  },
  "point-labels": { fields: () => [], params: () => ({}) },
  "instance-masks": {
    fields: () => [
      rangeField("score_threshold", "Min score", 0.3, { min: 0, max: 1, step: 0.05 }),
      rangeField("alpha", "Overlay opacity", 0.5, { min: 0, max: 1, step: 0.05 }),
    ],
    params: (options) => ({
      score_threshold: options.score_threshold, overlay: "true", alpha: options.alpha, overlay_width: OVERLAY_WIDTH,
    }),
  },
};

/** An input posted as it is, the answer's parameters in the query. */
function sendInput(task, input, params, selector) {
  if (!input || input.kind !== task.request) return Promise.reject(new Error(inputMissing(task.request)));
  return postJson(task.path, { ...selector, ...params }, input.blob, input.contentType);
}

/** Per request kind: its own fields, and how a request of it is sent. */
const REQUESTS = {
  image: { fields: async () => [], send: sendInput },
  pointcloud: { fields: async () => [], send: sendInput },
  // A class to draw: no input, everything in a JSON body.
  class: {
    fields: async (task) => [await classField(task)],
    send: (task, input, params, selector, options) =>
      postJson(task.path, selector, JSON.stringify({ label: options.label, ...params }), "application/json"),
  },
};

/** Fill `container` with the options of a task. */
export async function showOptions(container, task) {
  clear(container, ...(await REQUESTS[task.request].fields(task)), ...ANSWERS[task.answer].fields());
}

export function readOptions(container) {
  const options = {};
  for (const field of container.querySelectorAll("input, select")) options[field.name] = field.value;
  return options;
}

/** POST the task's request for `input` to the model `selector` picks ({attention} or {model}). */
export function runTask(task, input, options, selector) {
  const params = ANSWERS[task.answer].params(options);
  return REQUESTS[task.request].send(task, input, params, selector, options);
}
