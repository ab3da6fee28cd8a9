// An image with labelled boxes laid over it, in the image's own pixel coordinates: the detections
// and the instances both draw this way.

import { h } from "./dom.js";
import { css } from "./palette.js";

/**
 * `picture` (an <img>) in a frame, with one box per item ({box: [x1, y1, x2, y2], label, score})
 * in `colourOf(item, index)`, placed as a fraction of `width` x `height`.
 */
export function boxFrame(picture, items, width, height, colourOf, boxClass = "det-box") {
  const drawn = items.map((item, index) => {
    const [x1, y1, x2, y2] = item.box;
    const colour = css(colourOf(item, index));
    return h("div", {
      class: boxClass,
      "data-label": item.label,
      style: {
        left: `${(100 * x1) / width}%`, top: `${(100 * y1) / height}%`,
        width: `${(100 * (x2 - x1)) / width}%`, height: `${(100 * (y2 - y1)) / height}%`,
        borderColor: colour,
      },
    }, h("span", { class: "det-label", style: { background: colour } }, `${item.label} ${item.score.toFixed(2)}`));
  });
  return h("div", { class: "image-frame" }, picture, drawn);
}
