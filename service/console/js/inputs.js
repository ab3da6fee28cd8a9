// The input of a task: an image or a point cloud dropped, chosen, or one of the bundled samples.
// One picker per request kind; a request with no input (a class to draw) has none.

import { apiUrl, loadSamples, sampleBlob } from "./api.js";
import { parseCloud } from "./cloudfile.js";
import { clear, h } from "./dom.js";

async function imageInput(blob, name) {
  const bitmap = await createImageBitmap(blob).catch(() => null);
  const size = bitmap ? { width: bitmap.width, height: bitmap.height } : { width: 0, height: 0 };
  bitmap?.close();
  // A file the browser cannot decode is still sent: the server's answer (e.g. 415) is shown.
  const contentType = blob.type || "application/octet-stream";
  return { kind: "image", blob, name, contentType, url: URL.createObjectURL(blob), ...size, shape: `${size.width} × ${size.height}` };
}

async function cloudInput(blob, name) {
  let points = null;
  let parseError = null;
  try {
    points = await parseCloud(blob, name);
  } catch (error) {
    parseError = error.message;
  }
  const contentType = name.endsWith(".json") ? "application/json" : "application/octet-stream";
  const shape = `${points ? points.length / 3 : "?"} points`;
  return { kind: "pointcloud", blob, name, contentType, points, parseError, shape };
}

/**
 * Per request kind: the files it takes, how one is read, and the sample sets any input of the
 * kind may come from (the task's own set is offered first).
 */
const PICKERS = {
  image: {
    accept: "image/png,image/jpeg,image/webp,image/*",
    noun: "an image",
    prompt: "Drop an image",
    read: imageInput,
    sampleSets: ["images", "scenes"],
    thumbnail: (file) => h("img", { src: apiUrl(`ui/samples/${encodeURIComponent(file)}`), alt: file }),
  },
  pointcloud: {
    accept: ".npy,.ply,.json",
    noun: "a point cloud",
    prompt: "Drop a point cloud (.npy, .ply, .json)",
    read: cloudInput,
    sampleSets: ["clouds"],
    thumbnail: () => null,
  },
};

/** What a task of request kind `kind` is missing until an input is chosen. */
export function inputMissing(kind) {
  return `choose ${PICKERS[kind].noun} first`;
}

function sampleLabel(sample) {
  return sample.labels.length === 1 ? sample.labels[0] : sample.file.replace(/\.\w+$/, "");
}

/** A drop zone, a file chooser and the bundled samples of one request kind (image or point cloud). */
export class InputPicker {
  constructor(container, onChange = () => {}) {
    this.container = container;
    this.onChange = onChange;
    this.kind = null;
    this.input = null;
    this.preview = h("div", { class: "preview" });
    this.status = h("div", { class: "input-status muted" });
  }

  /** The picker of a task's request kind, its own sample set first. */
  async show(kind, samplesKind) {
    if (kind !== this.kind) this.input = null;
    this.kind = kind;
    const picker = PICKERS[kind];
    if (!picker) {
      clear(this.container);
      return;
    }
    const file = h("input", { type: "file", accept: picker.accept, class: "file-input", "aria-label": "choose a file" });
    file.addEventListener("change", () => file.files[0] && this.useBlob(file.files[0], file.files[0].name));
    const zone = h("label", { class: "dropzone" }, file,
      h("strong", {}, picker.prompt), h("span", { class: "muted" }, " or click to choose a file"));
    this.listenForDrops(zone);
    const samples = h("div", { class: "samples" }, h("span", { class: "muted" }, "Samples:"));
    clear(this.container, zone, samples, this.status, this.preview);
    const own = await this.showSamples(samples, picker, samplesKind);
    // Something to run at once: the task's first sample, unless a file of the person's is chosen
    // (or one of the task's own samples).
    const keep = this.input && (!this.input.sample || own.includes(this.input.name));
    if (keep) this.drawPreview();
    else if (own.length) await this.useSample(own[0]);
    else clear(this.preview);
  }

  listenForDrops(zone) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const dropped = event.dataTransfer.files[0];
      if (dropped) this.useBlob(dropped, dropped.name);
    });
  }

  /** The sample buttons; returns the files of the task's own samples. */
  async showSamples(row, picker, samplesKind) {
    let listing;
    try {
      listing = await loadSamples();
    } catch (error) {
      row.append(h("span", { class: "error-text" }, ` ${error.status || ""} ${error.message}`));
      return [];
    }
    // The task's own samples first, then the others of its kind (any image is a valid input).
    const kinds = [samplesKind, ...picker.sampleSets.filter((k) => k !== samplesKind)];
    for (const sample of kinds.flatMap((k) => listing[k] || [])) {
      const button = h("button", { type: "button", class: "sample", "data-sample": sample.file, title: sample.file },
        picker.thumbnail(sample.file), h("span", {}, sampleLabel(sample)));
      button.addEventListener("click", () => this.useSample(sample.file));
      row.append(button);
    }
    return (listing[kinds[0]] || []).map((sample) => sample.file);
  }

  async useSample(file) {
    this.status.textContent = `loading ${file}…`;
    try {
      await this.useBlob(await sampleBlob(file), file);
      this.input.sample = true;
    } catch (error) {
      this.status.textContent = `${error.status || ""} ${error.message}`;
    }
  }

  async useBlob(blob, name) {
    if (this.input?.url) URL.revokeObjectURL(this.input.url);
    this.input = await PICKERS[this.kind].read(blob, name);
    this.drawPreview();
    this.onChange(this.input);
  }

  drawPreview() {
    const input = this.input;
    this.status.textContent = "";
    this.status.dataset.input = input.name;
    clear(this.preview,
      input.url ? h("img", { src: input.url, alt: input.name, class: "thumb" }) : null,
      h("span", { class: "input-name" }, `${input.name} · ${input.shape} · ${(input.blob.size / 1024).toFixed(1)} KiB`),
      input.parseError ? h("div", { class: "muted" }, `(not drawn: ${input.parseError})`) : null);
  }
}
