// "Try a model": a task, a model (or EA / SA), an input, the answer drawn.

import { TASKS, modelFor, modelsFor } from "./api.js";
import { clear, h } from "./dom.js";
import { InputPicker } from "./inputs.js";
import { renderAnswer, renderError } from "./render.js";
import { readOptions, runTask, showOptions } from "./tasks.js";

export function taskOptions(select) {
  clear(select, Object.entries(TASKS).map(([key, task]) => h("option", { value: key }, task.title)));
}

/** "selector" values: attention=ea / attention=sa, then each model by name. */
async function showModels(select, taskKey) {
  const models = await modelsFor(taskKey).catch(() => []);
  clear(select,
    h("option", { value: "attention:ea" }, "EA (default)"),
    h("option", { value: "attention:sa" }, "SA twin"),
    models.map((model) => h("option", { value: `model:${model.name}` }, `${model.name} (${model.state})`)));
}

function selectorOf(value) {
  const [kind, name] = value.split(":");
  return kind === "model" ? { model: name } : { attention: name };
}

/** Runs a task for `input` and draws the answer (or the server's error) into `target`. */
export async function runInto(target, taskKey, input, options, selector) {
  target.dataset.state = "running";
  target.replaceChildren(h("p", { class: "muted" }, "running…"));
  try {
    const { answer, roundTripMs } = await runTask(taskKey, input, options, selector);
    const model = await modelFor(taskKey, { model: answer.model });
    clear(target, renderAnswer(taskKey, answer, input, model, roundTripMs));
    target.dataset.state = "done";
    return answer;
  } catch (error) {
    clear(target, renderError(error));
    target.dataset.state = "error";
    return null;
  }
}

export function setupTry() {
  const task = document.getElementById("try-task");
  const model = document.getElementById("try-model");
  const options = document.getElementById("try-options");
  const result = document.getElementById("try-result");
  const picker = new InputPicker(document.getElementById("try-input"));
  taskOptions(task);

  async function taskChanged() {
    const key = task.value;
    await Promise.all([showModels(model, key), showOptions(options, key), picker.show(TASKS[key].input, TASKS[key].samples)]);
    clear(result, h("p", { class: "muted" }, `${TASKS[key].title}: choose an input and press Run.`));
    result.dataset.state = "empty";
  }

  task.addEventListener("change", taskChanged);
  document.getElementById("try-run").addEventListener("click", () =>
    runInto(result, task.value, picker.input, readOptions(options), selectorOf(model.value)));
  return taskChanged();
}
