// Cost against resolution: the segmentation twins through the v2 endpoint (which takes any
// H x W that is a multiple of the model's stride, up to the server's max_model_pixels), the
// compute time of each plotted against the number of pixels, and both masks drawn. The twins are
// those of the first task whose answers are per-pixel labels.

import { loadModels, loadSamples, loadTasks, request, sampleBlob } from "./api.js";
import { drawLineChart, tick } from "./charts.js";
import { clear, formatMs, h } from "./dom.js";
import { classColours } from "./palette.js";
import { renderError } from "./render.js";

const SIZES = [128, 256, 384, 512, 640, 768];
const REPEATS = 2; // the lower of two compute times: the first run at a new size pays for setup
const COLOURS = { ea: "#2563eb", sa: "#dc2626" };
const HEADER_LENGTH = "Inference-Header-Content-Length";
const SWEPT_ANSWER = "pixel-labels"; // the masks below are the argmax of per-pixel logits

function sweeps(task) {
  return task?.answer === SWEPT_ANSWER && task.request === "image";
}

async function sweptTask() {
  const task = (await loadTasks()).find(sweeps);
  if (!task) throw new Error(`the server has no task that answers ${SWEPT_ANSWER} for an image`);
  return task;
}

async function twinsOf(task) {
  const { models } = await loadModels();
  const twins = {};
  for (const attention of ["ea", "sa"]) {
    twins[attention] = models.find((m) => m.task === task.name && m.attention === attention && m.state === "ready");
  }
  if (!twins.ea || !twins.sa) throw new Error(`the server has no ready EA and SA ${task.name} models`);
  return twins;
}

/**
 * The image at size x size, normalised as the model's manifest says: FP32 (1, 3, S, S). An image
 * smaller than that is tiled at its own scale (the shapes stay the size the model was trained on,
 * so the larger input holds more of them, not bigger ones); a larger one is resized.
 */
async function imageTensor(blob, size, preprocessing) {
  const bitmap = await createImageBitmap(blob);
  const canvas = h("canvas", { width: size, height: size });
  const context = canvas.getContext("2d");
  if (bitmap.width <= size && bitmap.height <= size) {
    context.fillStyle = context.createPattern(bitmap, "repeat");
    context.fillRect(0, 0, size, size);
  } else {
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, size, size);
  }
  bitmap.close();
  const { data } = context.getImageData(0, 0, size, size);
  const mean = preprocessing.mean || [0, 0, 0];
  const std = preprocessing.std || [1, 1, 1];
  const tensor = new Float32Array(3 * size * size);
  for (let i = 0; i < size * size; i++) {
    for (let c = 0; c < 3; c++) tensor[c * size * size + i] = (data[i * 4 + c] / 255 - mean[c]) / std[c];
  }
  return tensor;
}

/** One binary v2 inference: compute_ms (from the answer's parameters) and the mask. */
async function infer(model, tensor, size) {
  const header = new TextEncoder().encode(JSON.stringify({
    inputs: [{ name: model.inputs[0].name, shape: [1, 3, size, size], datatype: "FP32", parameters: { binary_data_size: tensor.byteLength } }],
    outputs: [{ name: model.outputs[0].name, parameters: { binary_data: true } }],
  }));
  const response = await request(`v2/models/${encodeURIComponent(model.name)}/infer`, {
    method: "POST",
    body: new Blob([header, tensor]),
    contentType: "application/octet-stream",
    headers: { [HEADER_LENGTH]: String(header.byteLength) },
  });
  const body = await response.arrayBuffer();
  const length = Number(response.headers.get(HEADER_LENGTH));
  const answer = JSON.parse(new TextDecoder().decode(new Uint8Array(body, 0, length)));
  const [output] = answer.outputs;
  const logits = new Float32Array(body.slice(length, length + output.parameters.binary_data_size));
  return { computeMs: answer.parameters.compute_ms, mask: argmax(logits, output.shape) };
}

/** (1, C, H, W) logits -> (H, W) class indices. */
function argmax(logits, [, classes, height, width]) {
  const plane = height * width;
  const mask = new Uint8Array(plane);
  const best = logits.slice(0, plane);
  for (let c = 1; c < classes; c++) {
    for (let i = 0; i < plane; i++) {
      const value = logits[c * plane + i];
      if (value > best[i]) {
        best[i] = value;
        mask[i] = c;
      }
    }
  }
  return { data: mask, width, height };
}

function drawMask(canvas, mask, classes) {
  const colours = classColours(classes);
  canvas.width = mask.width;
  canvas.height = mask.height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(mask.width, mask.height);
  mask.data.forEach((index, i) => pixels.data.set([...colours[index], 255], i * 4));
  context.putImageData(pixels, 0, 0);
  canvas.dataset.size = String(mask.width);
}

/** The sweep; `compareChoice()` is the compare panel's {task, input}, once it has a task. */
export function setupSweep(compareChoice) {
  const slider = document.getElementById("sweep-size");
  const label = document.getElementById("sweep-size-label");
  const all = document.getElementById("sweep-all");
  const errors = document.getElementById("sweep-error");
  const chart = document.getElementById("sweep-chart");
  const table = document.getElementById("sweep-table");
  const maskCanvas = { ea: document.getElementById("sweep-mask-ea"), sa: document.getElementById("sweep-mask-sa") };
  const measured = new Map(); // "<image>/<size>" -> {ea: {computeMs, mask}, sa: ...}
  let busy = false;
  let sample = null;
  let lastImage = null; // the image whose measurements the chart shows

  /** The compare input when the compare task is the sweep's kind, else the swept task's first sample. */
  async function source() {
    const chosen = compareChoice();
    if (sweeps(chosen?.task) && chosen.input?.kind === "image") return { blob: chosen.input.blob, name: chosen.input.name };
    if (!sample) {
      const [listing, task] = await Promise.all([loadSamples(), sweptTask()]);
      const file = listing[task.samples]?.[0]?.file;
      if (!file) throw new Error(`no bundled sample for ${task.title.toLowerCase()}`);
      sample = { name: file, blob: await sampleBlob(file) };
    }
    return sample;
  }

  async function measure(size) {
    const image = await source();
    const key = `${image.name}/${size}`;
    if (measured.has(key)) return measured.get(key);
    const twins = await twinsOf(await sweptTask());
    const result = {};
    for (const attention of ["ea", "sa"]) {
      // One twin after the other, never both at once, so neither takes CPU from the other.
      const tensor = await imageTensor(image.blob, size, twins[attention].preprocessing);
      let best = null;
      for (let i = 0; i < REPEATS; i++) {
        const run = await infer(twins[attention], tensor, size);
        if (best === null || run.computeMs < best.computeMs) best = run;
      }
      result[attention] = { ...best, classes: twins[attention].labels.length };
    }
    measured.set(key, result);
    return result;
  }

  function redraw(imageName, current) {
    const rows = SIZES.map((size) => [size, measured.get(`${imageName}/${size}`)]).filter(([, r]) => r);
    const points = (attention) => rows.map(([size, r]) => [size * size, r[attention].computeMs]);
    drawLineChart(chart, [
      { name: "EA", colour: COLOURS.ea, points: points("ea") },
      { name: "SA", colour: COLOURS.sa, points: points("sa") },
    ], { xMin: 0, xMax: 768 * 768, xTicks: SIZES.map((s) => s * s), xLabel: (x) => `${Math.round(Math.sqrt(x))}²`,
      yLabel: (y) => `${tick(y)} ms`, dots: true });
    clear(table,
      h("tr", {}, h("th", {}, "pixels"), h("th", { class: "ea" }, "EA compute"), h("th", { class: "sa" }, "SA compute"), h("th", {}, "SA / EA")),
      rows.map(([size, r]) => h("tr", { "data-size": size, class: size === current ? "current" : "" },
        h("td", {}, `${size} × ${size}`),
        h("td", { "data-attention": "ea" }, `${formatMs(r.ea.computeMs)} ms`),
        h("td", { "data-attention": "sa" }, `${formatMs(r.sa.computeMs)} ms`),
        h("td", {}, `${(r.sa.computeMs / r.ea.computeMs).toFixed(2)}×`))));
  }

  async function show(sizes) {
    if (busy) return;
    busy = true;
    all.disabled = true;
    clear(errors);
    chart.dataset.state = "running";
    try {
      const image = await source();
      for (const size of sizes) {
        slider.value = String(size);
        label.textContent = `${size} × ${size} (measuring…)`;
        const result = await measure(size);
        for (const attention of ["ea", "sa"]) drawMask(maskCanvas[attention], result[attention].mask, result[attention].classes);
        lastImage = image.name;
        redraw(image.name, size);
      }
      chart.dataset.state = "done";
    } catch (error) {
      clear(errors, renderError(error));
      chart.dataset.state = "error";
    } finally {
      label.textContent = `${slider.value} × ${slider.value}`;
      busy = false;
      all.disabled = false;
    }
  }

  window.addEventListener("resize", () => lastImage && redraw(lastImage, Number(slider.value)));
  slider.addEventListener("input", () => (label.textContent = `${slider.value} × ${slider.value}`));
  slider.addEventListener("change", () => show([Number(slider.value)]));
  all.addEventListener("click", () => show(SIZES));
  drawLineChart(chart, [], { xMin: 0, xMax: 768 * 768, xTicks: SIZES.map((s) => s * s), xLabel: (x) => `${Math.round(Math.sqrt(x))}²` });
}
