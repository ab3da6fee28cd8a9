// Every task's answer drawn: bars, boxes over the image, the mask with its legend, a grid of
// generated images, the point cloud in 3-D coloured by part or class, the instances (instances.js).
// Plus timings and errors.

import { CloudView } from "./cloud3d.js";
import { formatMs, h, percent } from "./dom.js";
import { boxFrame } from "./frame.js";
import { instances } from "./instances.js";
import { classColours, css, labelColours } from "./palette.js";

const STATUS_TEXT = {
  400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Request Timeout", 413: "Payload Too Large",
  415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests", 499: "Client Closed Request",
  500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout",
};

/** The server's error as it came: status, its reason, the message, and Retry-After if any. */
export function renderError(error) {
  const status = error.status;
  const title = status ? `${status} ${STATUS_TEXT[status] || error.statusText || ""}` : "Error";
  return h("div", { class: "error", role: "alert", "data-status": status || "" },
    h("strong", {}, title.trim()), " ", h("span", { class: "error-message" }, error.message),
    error.retryAfter ? h("span", { class: "muted" }, ` (retry after ${error.retryAfter} s)`) : null);
}

function bars(topK, colours) {
  return h("div", { class: "bars" }, topK.map((entry) =>
    h("div", { class: "bar-row", "data-label": entry.label },
      h("span", { class: "bar-label" }, entry.label),
      h("span", { class: "bar-track" }, h("span", {
        class: "bar-fill",
        style: { width: `${Math.max(0.5, 100 * entry.probability)}%`, background: colours ? css(colours[entry.index]) : "" },
      })),
      h("span", { class: "bar-value" }, percent(entry.probability)))));
}

function prediction(label, probability) {
  return h("div", { class: "prediction", "data-label": label }, h("span", { class: "muted" }, "predicted "),
    h("strong", {}, label), probability === undefined ? null : h("span", { class: "muted" }, ` ${percent(probability)}`));
}

function labelledImage(result, input) {
  const top = result.top_k[0];
  return [
    h("div", { class: "side-by-side" },
      input?.url ? h("img", { src: input.url, alt: input.name, class: "input-image pixelated" }) : null,
      h("div", {}, prediction(top.label, top.probability), bars(result.top_k))),
  ];
}

function boxes(result, input, model) {
  const colours = labelColours(model?.labels.length || 16);
  const picture = h("img", { src: input?.url, alt: input?.name, class: "pixelated" });
  const frame = boxFrame(picture, result.detections, result.width, result.height, (d) => colours[d.index % colours.length]);
  const list = result.detections.length === 0 ? null : h("table", { class: "table compact" },
    h("tr", {}, h("th", {}, "label"), h("th", {}, "score"), h("th", {}, "box x1, y1, x2, y2")),
    result.detections.map((d) => h("tr", {}, h("td", {}, d.label), h("td", {}, d.score.toFixed(3)),
      h("td", {}, d.box.map((v) => v.toFixed(1)).join(", ")))));
  return [
    h("div", { class: "detections", "data-count": result.detections.length }, frame),
    h("p", { class: "muted" }, `${result.detections.length} detection(s) in ${result.width} × ${result.height}`),
    list,
  ];
}

/** The mask PNG (pixel value = class index) coloured with the overlay's palette, as a canvas. */
async function colouredMask(maskPng, colours) {
  const image = new Image();
  image.src = `data:image/png;base64,${maskPng}`;
  await image.decode();
  const canvas = h("canvas", { width: image.naturalWidth, height: image.naturalHeight, class: "seg-mask pixelated" });
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const colour = colours[pixels.data[i]] || [255, 255, 255];
    pixels.data.set(colour, i);
    pixels.data[i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}

function pixelLabels(result, input) {
  const labels = Object.keys(result.class_fractions);
  const colours = classColours(labels.length);
  const overlay = h("img", { src: `data:image/png;base64,${result.overlay_png}`, alt: "overlay", class: "seg-overlay pixelated" });
  const frame = h("div", { class: "image-frame" }, overlay);
  const views = { overlay: () => overlay, mask: () => colouredMask(result.mask_png, colours), image: () =>
    h("img", { src: input?.url, alt: input?.name, class: "pixelated" }) };
  const toggle = h("div", { class: "toggle" }, Object.keys(views).map((name) =>
    h("button", { type: "button", "data-view": name, "aria-pressed": String(name === "overlay"), onclick: async (event) => {
      for (const button of toggle.children) button.setAttribute("aria-pressed", String(button === event.currentTarget));
      frame.replaceChildren(await views[name]());
    } }, name)));
  const shown = labels.map((label, index) => ({ label, index, fraction: result.class_fractions[label] }))
    .filter((entry) => entry.fraction > 0).sort((a, b) => b.fraction - a.fraction);
  const legend = h("div", { class: "legend seg-legend" }, shown.map((entry) =>
    h("div", { class: "legend-row", "data-label": entry.label },
      h("span", { class: "chip", style: { background: css(colours[entry.index]) } }),
      h("span", { class: "bar-label" }, entry.label),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: { width: `${100 * entry.fraction}%`, background: css(colours[entry.index]) } })),
      h("span", { class: "bar-value" }, percent(entry.fraction)))));
  return [toggle, frame, h("p", { class: "muted" }, `mask ${result.width} × ${result.height}; class fractions:`), legend];
}

function images(result) {
  return [
    h("p", {}, "class ", h("strong", {}, result.label), ` · seed ${result.seed}`),
    h("div", { class: "gen-grid" }, result.images.map((png, index) =>
      h("img", { src: `data:image/png;base64,${png}`, alt: `${result.label} ${index}`, class: "gen-image pixelated" }))),
  ];
}

function cloudCanvas(input, colours) {
  if (!input?.points) return h("p", { class: "muted" }, "(the cloud is not drawn: the page could not read its file)");
  const canvas = h("canvas", { class: "cloud-view", width: 480, height: 360, title: "drag to rotate, wheel to zoom, double-click to reset" });
  // Drawn once attached (its size comes from the layout).
  requestAnimationFrame(() => new CloudView(canvas, input.points, colours));
  return canvas;
}

function labelledCloud(result, input, model) {
  const colours = labelColours(model?.labels.length || result.top_k.length);
  const top = result.top_k[0];
  const count = input?.points ? input.points.length / 3 : 0;
  return [
    prediction(top.label, top.probability),
    cloudCanvas(input, Array(count).fill(colours[top.index % colours.length])),
    bars(result.top_k, colours),
  ];
}

function pointLabels(result, input, model) {
  const labels = model?.labels || [...new Set(result.parts)];
  const colours = labelColours(labels.length);
  const perPoint = result.parts.map((part) => colours[Math.max(0, labels.indexOf(part))]);
  const counts = new Map();
  for (const part of result.parts) counts.set(part, (counts.get(part) || 0) + 1);
  const legend = h("div", { class: "legend" }, [...counts].sort((a, b) => b[1] - a[1]).map(([part, count]) =>
    h("div", { class: "legend-row", "data-label": part },
      h("span", { class: "chip", style: { background: css(colours[Math.max(0, labels.indexOf(part))]) } }),
      h("span", { class: "bar-label" }, part), h("span", { class: "bar-value" }, `${count} points`))));
  return [cloudCanvas(input, perPoint), h("p", { class: "muted" }, `${result.num_points} points, parts:`), legend];
}

// Labels are drawn with the input they name: an image beside its bars, a cloud in its class's colour.
const LABELLED = { image: labelledImage, pointcloud: labelledCloud };

function labelled(result, input, model, task) {
  return LABELLED[task.request](result, input, model);
}

/** Per answer kind: the answer for the one input sent, drawn. */
const RENDERERS = {
  labels: labelled, boxes, "pixel-labels": pixelLabels, image: images, "point-labels": pointLabels,
  "instance-masks": instances,
};

// An answer to a request that may carry several inputs (images) lists a result per input.
function resultOf(answer) {
  return answer.results ? answer.results[0] : answer;
}

export function timings(answer, roundTripMs) {
  const t = answer.timings;
  const item = (name, value, key) => h("div", {}, h("dt", {}, name), h("dd", { "data-timing": key }, value));
  return h("dl", { class: "timings" },
    item("model", answer.model, "model"), item("backend", answer.backend, "backend"),
    item("batch", answer.batch_size, "batch"),
    item("queue", `${formatMs(t.queue_ms)} ms`, "queue_ms"), item("compute", `${formatMs(t.compute_ms)} ms`, "compute_ms"),
    item("total", `${formatMs(t.total_ms)} ms`, "total_ms"), item("round trip", `${formatMs(roundTripMs)} ms`, "round_trip_ms"));
}

/** The JSON answer with long base64 strings and long lists cut, to read. */
function abridged(value) {
  if (typeof value === "string" && value.length > 80) return `<${value.length} characters of base64>`;
  if (Array.isArray(value)) {
    const shown = value.slice(0, 12).map(abridged);
    return value.length > 12 ? [...shown, `… ${value.length - 12} more`] : shown;
  }
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, abridged(v)]));
  return value;
}

/** The answer of a task drawn, with its timings and the JSON it came as. */
export function renderAnswer(task, answer, input, model, roundTripMs) {
  return h("div", { class: "answer", "data-task": task.endpoint, "data-model": answer.model },
    RENDERERS[task.answer](resultOf(answer), input, model, task),
    timings(answer, roundTripMs),
    h("details", {}, h("summary", {}, "JSON answer"), h("pre", {}, JSON.stringify(abridged(answer), null, 2))));
}
