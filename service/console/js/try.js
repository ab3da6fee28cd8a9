// "Try a model": a task, a model (or EA / SA), an input, the answer drawn.

import { loadTasks, modelFor, modelsFor, taskFor } from "./api.js";
import { clear, h } from "./dom.js";
import { InputPicker } from "./inputs.js";
import { renderAnswer, renderError } from "./render.js";
import { readOptions, runTask, showOptions } from "./tasks.js";

/** The server's tasks as the options of `select`, by endpoint key. */
export async function taskOptions(select) {
  const tasks = await loadTasks();
  clear(select, tasks.map((task) => h("option", { value: task.endpoint }, task.title)));
}

/** The task chosen in `select`. */
export function chosenTask(select) {
  return taskFor(select.value);
}

/** The error drawn into `target` in place of an answer. */
export function showError(target, error) {
  clear(target, renderError(error));
  target.dataset.state = "error";
}

/** "selector" values: attention=ea / attention=sa, then each model by name. */
async function showModels(select, task) {
  const models = await modelsFor(task).catch(() => []);
  clear(select,
    h("option", { value: "attention:ea" }, "EA (default)"),
    h("option", { value: "attention:sa" }, "SA twin"),
    models.map((model) => h("option", { value: `model:${model.name}` }, `${model.name} (${model.state})`)));
}

function selectorOf(value) {
  const [kind, name] = value.split(":");
  return kind === "model" ? { model: name } : { attention: name };
}

/**
 * "running… 3.2 s" in `target`, ticking every 100 ms until the returned stop() is called; the
 * milliseconds so far also in its data-elapsed-ms.
 */
export function showRunning(target, what = "running…") {
  const started = performance.now();
  const elapsed = h("span", { class: "elapsed" }, "0.0 s");
  target.replaceChildren(h("p", { class: "muted running" }, `${what} `, elapsed));
  const tick = () => {
    const ms = performance.now() - started;
    elapsed.textContent = `${(ms / 1000).toFixed(1)} s`;
    elapsed.dataset.elapsedMs = String(Math.round(ms));
  };
  tick();
  const timer = setInterval(tick, 100);
  return () => clearInterval(timer);
}

/** Runs a task for `input` and draws the answer (or the server's error) into `target`; resolves
 * to {answer, roundTripMs}, or null after an error. */
export async function runInto(target, task, input, options, selector) {
  target.dataset.state = "running";
  const stop = showRunning(target);
  try {
    const { answer, roundTripMs } = await runTask(task, input, options, selector);
    const model = await modelFor(task, { model: answer.model });
    clear(target, renderAnswer(task, answer, input, model, roundTripMs));
    target.dataset.state = "done";
    return { answer, roundTripMs };
  } catch (error) {
    showError(target, error);
    return null;
  } finally {
    stop();
  }
}

export async function setupTry() {
  const select = document.getElementById("try-task");
  const model = document.getElementById("try-model");
  const options = document.getElementById("try-options");
  const result = document.getElementById("try-result");
  const picker = new InputPicker(document.getElementById("try-input"));

  async function taskChanged() {
    const task = await chosenTask(select);
    await Promise.all([showModels(model, task), showOptions(options, task), picker.show(task.request, task.samples)]);
    clear(result, h("p", { class: "muted" }, `${task.title}: choose an input and press Run.`));
    result.dataset.state = "empty";
  }

  async function run() {
    const task = await chosenTask(select);
    return runInto(result, task, picker.input, readOptions(options), selectorOf(model.value));
  }

  try {
    await taskOptions(select);
  } catch (error) {
    // Without the task table (a key it needs, say) there is nothing to try; the page still starts.
    return showError(result, error);
  }
  select.addEventListener("change", taskChanged);
  document.getElementById("try-run").addEventListener("click", run);
  return taskChanged();
}
