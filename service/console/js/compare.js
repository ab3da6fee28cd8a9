// "EA beside SA": the same input through both twins at once, answers and timings side by side.

import { clear, formatMs, h } from "./dom.js";
import { InputPicker } from "./inputs.js";
import { setupSweep } from "./sweep.js";
import { readOptions, showOptions } from "./tasks.js";
import { chosenTask, runInto, showError, taskOptions } from "./try.js";

const TIMINGS = [
  ["queue", (a) => a.timings.queue_ms],
  ["compute", (a) => a.timings.compute_ms],
  ["total (server)", (a) => a.timings.total_ms],
];

function timingTable(ea, sa) {
  const row = (name, value) => {
    const [e, s] = [value(ea), value(sa)];
    return h("tr", { "data-timing": name }, h("th", {}, name), h("td", {}, `${formatMs(e)} ms`), h("td", {}, `${formatMs(s)} ms`),
      h("td", {}, e > 0 ? `${(s / e).toFixed(2)}×` : "–"));
  };
  return h("table", { class: "table" },
    h("tr", {}, h("th", {}, ""), h("th", {}, `EA · ${ea.model}`), h("th", {}, `SA · ${sa.model}`), h("th", {}, "SA / EA")),
    TIMINGS.map(([name, value]) => row(name, value)));
}

export async function setupCompare() {
  const select = document.getElementById("compare-task");
  const options = document.getElementById("compare-options");
  const targets = { ea: document.getElementById("compare-ea"), sa: document.getElementById("compare-sa") };
  const timings = document.getElementById("compare-timings");
  const picker = new InputPicker(document.getElementById("compare-input"));
  let task = null; // the chosen task, once shown

  async function taskChanged() {
    task = await chosenTask(select);
    await Promise.all([showOptions(options, task), picker.show(task.request, task.samples)]);
    for (const target of Object.values(targets)) {
      clear(target, h("p", { class: "muted" }, "press Run EA and SA"));
      target.dataset.state = "empty";
    }
    timings.hidden = true;
  }

  async function run() {
    const chosen = readOptions(options);
    timings.hidden = true;
    // Both requests leave together: each twin's queue and compute times are its own answer's.
    const [ea, sa] = await Promise.all(
      ["ea", "sa"].map((attention) => runInto(targets[attention], task, picker.input, chosen, { attention })));
    if (ea && sa) {
      clear(timings, h("h2", {}, "Timings"), timingTable(ea, sa),
        h("p", { class: "muted" }, "Sent at the same moment, so the two may share the CPU (or a batch queue)."));
      timings.hidden = false;
    }
  }

  // The sweep measures with the compare input when the compare task is of its kind.
  setupSweep(() => task && { task, input: picker.input });
  try {
    await taskOptions(select);
  } catch (error) {
    for (const target of Object.values(targets)) showError(target, error);
    return;
  }
  select.addEventListener("change", taskChanged);
  document.getElementById("compare-run").addEventListener("click", run);
  return taskChanged();
}
