// Class colours, the same as the server's segmentation overlay (tasks/segmentation.py
// class_colours): class 0 (background) black, then hues a golden angle apart.

function hsvToRgb(h, s, v) {
  const i = Math.floor(h * 6) % 6;
  const f = h * 6 - Math.floor(h * 6);
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i];
}

/** [[r, g, b], ...] for `count` classes, bytes 0..255; index 0 black. */
export function classColours(count) {
  const colours = [[0, 0, 0]];
  for (let i = 0; i < count - 1; i++) {
    colours.push(hsvToRgb((i * 0.618034) % 1, 0.85, 1).map((c) => Math.round(c * 255)));
  }
  return colours;
}

/** Colours for labels that have no background (point cloud parts and classes, instances in the
 * order they came, as tasks/instances.py OverlayCanvas colours them): never black. */
export function labelColours(count) {
  return classColours(count + 1).slice(1);
}

export function css([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}
