// Per task: its options (top-k, threshold, class and seed...) and the request they make.

import { TASKS, modelsFor, postJson } from "./api.js";
import { clear, h } from "./dom.js";

function numberField(name, label, value, attrs) {
  return h("label", {}, label, h("input", { type: "number", name, value, ...attrs }));
}

function rangeField(name, label, value, attrs) {
  const output = h("output", {}, value);
  const input = h("input", { type: "range", name, value, ...attrs });
  input.addEventListener("input", () => (output.textContent = input.value));
  return h("label", {}, label, input, output);
}

async function classField(taskKey) {
  const models = await modelsFor(taskKey).catch(() => []);
  const labels = models[0]?.labels || [];
  const select = h("select", { name: "label" }, labels.map((label) => h("option", { value: label }, label)));
  return h("label", {}, "Class", select);
}

/** Fill `container` with the options of a task. */
export async function showOptions(container, taskKey) {
  const fields = {
    classify: () => [numberField("top_k", "Top k", 5, { min: 1, max: 20 })],
    detect: () => [rangeField("score_threshold", "Min score", 0.3, { min: 0, max: 1, step: 0.05 })],
    segment: () => [rangeField("alpha", "Overlay opacity", 0.5, { min: 0, max: 1, step: 0.05 })],
    generate: async () => [
      await classField(taskKey),
      numberField("seed", "Seed", 0, { min: 0, step: 1 }),
      numberField("n", "Images", 4, { min: 1, max: 16 }),
    ],
    "pointcloud-classify": () => [numberField("top_k", "Top k", 5, { min: 1, max: 20 })],
    "pointcloud-segment": () => [],
  };
  clear(container, ...(await fields[taskKey]()));
}

export function readOptions(container) {
  const options = {};
  for (const field of container.querySelectorAll("input, select")) options[field.name] = field.value;
  return options;
}

function cloudContentType(input) {
  return input.name.endsWith(".json") ? "application/json" : "application/octet-stream";
}

/** POST the task's request for `input` to the model `selector` picks ({attention} or {model}). */
export function runTask(taskKey, input, options, selector) {
  const task = TASKS[taskKey];
  if (taskKey === "generate") {
    const body = { label: options.label, seed: Number(options.seed || 0), n: Number(options.n || 1) };
    return postJson(task.path, selector, JSON.stringify(body), "application/json");
  }
  if (!input || input.kind !== task.input) {
    return Promise.reject(new Error(task.input === "image" ? "choose an image first" : "choose a point cloud first"));
  }
  const query = { ...selector };
  if (taskKey === "classify" || taskKey === "pointcloud-classify") query.top_k = options.top_k;
  if (taskKey === "detect") query.score_threshold = options.score_threshold;
  if (taskKey === "segment") Object.assign(query, { overlay: "true", alpha: options.alpha });
  const contentType = input.kind === "image" ? input.blob.type || "application/octet-stream" : cloudContentType(input);
  return postJson(task.path, query, input.blob, contentType);
}
