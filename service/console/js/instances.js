// An instance segmentation answer drawn: the server's overlay (each instance's mask in its own
// colour), every instance's box and label over it in that colour, and a table of the instances.

import { h, percent } from "./dom.js";
import { boxFrame } from "./frame.js";
import { css, labelColours } from "./palette.js";

export function instances(result, input) {
  const found = result.instances;
  const colours = labelColours(found.length);
  const source = result.overlay_png ? `data:image/png;base64,${result.overlay_png}` : input?.url;
  const picture = h("img", { src: source, alt: "instances", class: "inst-overlay pixelated" });
  const frame = boxFrame(picture, found, result.width, result.height, (_, index) => colours[index], "det-box inst-box");
  const pixels = result.width * result.height;
  const table = found.length === 0 ? null : h("table", { class: "table compact" },
    h("tr", {}, ["", "label", "score", "area", "box x1, y1, x2, y2"].map((name) => h("th", {}, name))),
    found.map((instance, index) => h("tr", { class: "instance-row", "data-label": instance.label },
      h("td", {}, h("span", { class: "chip", style: { background: css(colours[index]) } })),
      h("td", {}, instance.label), h("td", {}, instance.score.toFixed(3)),
      h("td", {}, `${instance.area} px (${percent(instance.area / pixels)})`),
      h("td", {}, instance.box.map((v) => v.toFixed(1)).join(", ")))));
  return [
    h("div", { class: "instance-set", "data-count": found.length }, frame),
    h("p", { class: "muted" }, `${found.length} instance(s) in ${result.width} × ${result.height}`),
    table,
  ];
}
