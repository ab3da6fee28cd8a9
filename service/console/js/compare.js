// "EA beside SA": the same input through both twins, answers side by side, and their timings over
// a number of rounds: the two requests of a round one after the other (never at once), the order
// alternating from round to round; per twin the median with its spread, and SA / EA of the medians.

import { clear, formatMs, h } from "./dom.js";
import { InputPicker } from "./inputs.js";
import { renderError } from "./render.js";
import { setupSweep } from "./sweep.js";
import { readOptions, runTask, showOptions } from "./tasks.js";
import { chosenTask, runInto, showError, showRunning, taskOptions } from "./try.js";

const TWINS = ["ea", "sa"];
const TIMINGS = [
  ["round trip", (run) => run.roundTripMs],
  ["compute", (run) => run.answer.timings.compute_ms],
  ["queue", (run) => run.answer.timings.queue_ms],
  ["total (server)", (run) => run.answer.timings.total_ms],
];

/** Median, min, max and count of a list of numbers. */
function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted.at(-1), count: sorted.length };
}

function timingCell(stats) {
  return h("td", { "data-median": stats.median, "data-min": stats.min, "data-max": stats.max, "data-count": stats.count },
    `${formatMs(stats.median)} ms`,
    stats.count > 1 ? h("span", { class: "muted spread" }, ` (${formatMs(stats.min)}–${formatMs(stats.max)})`) : null);
}

function timingTable(runs) {
  const [ea, sa] = TWINS.map((attention) => runs[attention]);
  const row = (name, value) => {
    const [e, s] = [ea, sa].map((list) => summary(list.map(value)));
    const ratio = e.median > 0 ? s.median / e.median : null;
    return h("tr", { "data-timing": name }, h("th", {}, name), timingCell(e), timingCell(s),
      h("td", { "data-ratio": ratio ?? "" }, ratio === null ? "–" : `${ratio.toFixed(2)}×`));
  };
  const head = (label, list) => h("th", {}, `${label} · ${list[0].answer.model} `, h("span", { class: "muted" }, `n = ${list.length}`));
  return h("table", { class: "table" },
    h("tr", {}, h("th", {}, ""), head("EA", ea), head("SA", sa), h("th", {}, "SA / EA (medians)")),
    TIMINGS.map(([name, value]) => row(name, value)));
}

export async function setupCompare() {
  const select = document.getElementById("compare-task");
  const repeats = document.getElementById("compare-repeats");
  const button = document.getElementById("compare-run");
  const options = document.getElementById("compare-options");
  const targets = { ea: document.getElementById("compare-ea"), sa: document.getElementById("compare-sa") };
  const timings = document.getElementById("compare-timings");
  const picker = new InputPicker(document.getElementById("compare-input"));
  let task = null; // the chosen task, once shown
  let current = 0; // the run whose results are shown; a new task or run makes an older one stop

  async function taskChanged() {
    current += 1;
    task = await chosenTask(select);
    await Promise.all([showOptions(options, task), picker.show(task.request, task.samples)]);
    for (const target of Object.values(targets)) {
      clear(target, h("p", { class: "muted" }, "press Run EA and SA"));
      target.dataset.state = "empty";
    }
    timings.hidden = true;
    button.disabled = false;
  }

  function showTimings(runs, rounds, progress) {
    clear(timings, h("h2", {}, "Timings ", h("span", { class: "muted" },
      `median (min–max) of ${runs.ea.length} round${runs.ea.length === 1 ? "" : "s"}, EA and SA one after the other`)),
    timingTable(runs), progress);
    timings.dataset.rounds = String(runs.ea.length);
    timings.dataset.of = String(rounds);
    timings.hidden = false;
  }

  async function run() {
    const id = (current += 1);
    const chosen = readOptions(options);
    const rounds = Number(repeats.value);
    const input = picker.input;
    const runs = { ea: [], sa: [] };
    button.disabled = true;
    timings.hidden = true;
    timings.dataset.state = "running";
    for (const attention of TWINS) {
      clear(targets[attention], h("p", { class: "muted" }, "waiting for its turn…"));
      targets[attention].dataset.state = "waiting";
    }
    try {
      // The first round's answers are drawn; one twin at a time, so neither takes CPU from the other.
      for (const attention of TWINS) {
        const first = await runInto(targets[attention], task, input, chosen, { attention });
        if (id !== current) return;
        if (!first) {
          for (const other of TWINS.filter((twin) => targets[twin].dataset.state === "waiting")) {
            clear(targets[other], h("p", { class: "muted" }, `not run: ${attention.toUpperCase()}'s request failed`));
            targets[other].dataset.state = "empty";
          }
          return;
        }
        runs[attention].push(first);
      }
      for (let round = 1; round < rounds; round++) {
        const progress = h("p", { class: "progress" });
        showTimings(runs, rounds, progress);
        const stop = showRunning(progress, `round ${round + 1} of ${rounds}…`);
        try {
          // SA first in every other round: neither twin always runs just after the other.
          for (const attention of round % 2 ? ["sa", "ea"] : TWINS) {
            runs[attention].push(await runTask(task, input, chosen, { attention }));
          }
        } finally {
          stop();
        }
        if (id !== current) return;
      }
      showTimings(runs, rounds, null);
      timings.dataset.state = "done";
    } catch (error) {
      if (id !== current) return;
      showTimings(runs, rounds, renderError(error));
      timings.dataset.state = "error";
    } finally {
      if (id === current) button.disabled = false;
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
  button.addEventListener("click", run);
  return taskChanged();
}
