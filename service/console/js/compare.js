// "EA beside SA": the same input through both twins at once, answers and timings side by side.

import { TASKS } from "./api.js";
import { clear, formatMs, h } from "./dom.js";
import { InputPicker } from "./inputs.js";
import { setupSweep } from "./sweep.js";
import { readOptions, showOptions } from "./tasks.js";
import { runInto, taskOptions } from "./try.js";

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

export function setupCompare() {
  const task = document.getElementById("compare-task");
  const options = document.getElementById("compare-options");
  const targets = { ea: document.getElementById("compare-ea"), sa: document.getElementById("compare-sa") };
  const timings = document.getElementById("compare-timings");
  const picker = new InputPicker(document.getElementById("compare-input"));
  taskOptions(task);

  async function taskChanged() {
    const key = task.value;
    await Promise.all([showOptions(options, key), picker.show(TASKS[key].input, TASKS[key].samples)]);
    for (const target of Object.values(targets)) {
      clear(target, h("p", { class: "muted" }, "press Run EA and SA"));
      target.dataset.state = "empty";
    }
    timings.hidden = true;
  }

  async function run() {
    const key = task.value;
    const chosen = readOptions(options);
    timings.hidden = true;
    // Both requests leave together: each twin's queue and compute times are its own answer's.
    const [ea, sa] = await Promise.all(
      ["ea", "sa"].map((attention) => runInto(targets[attention], key, picker.input, chosen, { attention })));
    if (ea && sa) {
      clear(timings, h("h2", {}, "Timings"), timingTable(ea, sa),
        h("p", { class: "muted" }, "Sent at the same moment, so the two may share the CPU (or a batch queue)."));
      timings.hidden = false;
    }
  }

  task.addEventListener("change", taskChanged);
  document.getElementById("compare-run").addEventListener("click", run);
  // The sweep segments the compare input when the compare task is segmentation, else a scene.
  setupSweep(() => (task.value === "segment" && picker.input?.kind === "image" ? picker.input : null));
  return taskChanged();
}
