// A line chart on a canvas: numeric x, y from 0, several series, gaps where y is null.

const PADDING = { left: 58, right: 14, top: 10, bottom: 26 };

/** A tick label: three significant digits at most, no trailing zeros. */
export function tick(value) {
  return String(+value.toPrecision(3));
}

function niceStep(range, ticks) {
  const raw = range / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((step) => step >= raw) || raw;
}

/** The canvas sized to its laid-out size (its width/height attributes while hidden), in CSS pixels. */
export function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  canvas.dataset.baseWidth ??= canvas.width;
  canvas.dataset.baseHeight ??= canvas.height;
  const width = canvas.clientWidth || Number(canvas.dataset.baseWidth);
  const height = canvas.clientHeight || Number(canvas.dataset.baseHeight);
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { context, width, height };
}

/**
 * series: [{name, colour, points: [[x, y|null], ...]}]; options: {xMin, xMax, xLabel(x), yLabel(y),
 * xTicks: [x...] (else evenly spaced), dots: bool}.
 */
export function drawLineChart(canvas, series, options = {}) {
  const { context, width, height } = fitCanvas(canvas);
  const plot = { x: PADDING.left, y: PADDING.top, w: width - PADDING.left - PADDING.right, h: height - PADDING.top - PADDING.bottom };
  const xs = series.flatMap((s) => s.points.map(([x]) => x));
  const ys = series.flatMap((s) => s.points.map(([, y]) => y)).filter((y) => y !== null && Number.isFinite(y));
  const xMin = options.xMin ?? Math.min(...xs, 0);
  const xMax = options.xMax ?? Math.max(...xs, xMin + 1);
  const yStep = niceStep(Math.max(...ys, options.yMinRange ?? 1) * 1.1, 4);
  const yMax = yStep * Math.ceil((Math.max(...ys, options.yMinRange ?? 1) * 1.05) / yStep);
  const px = (x) => plot.x + ((x - xMin) / (xMax - xMin || 1)) * plot.w;
  const py = (y) => plot.y + plot.h - (y / yMax) * plot.h;

  context.clearRect(0, 0, width, height);
  context.font = "11px system-ui, sans-serif";
  context.strokeStyle = "#cbd5e1";
  context.fillStyle = "#475569";
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    context.beginPath();
    context.moveTo(plot.x, py(y));
    context.lineTo(plot.x + plot.w, py(y));
    context.stroke();
    context.fillText((options.yLabel || tick)(y), plot.x - 6, py(y));
  }
  context.textAlign = "center";
  context.textBaseline = "top";
  const xTicks = options.xTicks || Array.from({ length: 5 }, (_, i) => xMin + (i * (xMax - xMin)) / 4);
  for (const x of xTicks) context.fillText((options.xLabel || tick)(x), px(x), plot.y + plot.h + 6);

  for (const s of series) {
    context.strokeStyle = s.colour;
    context.fillStyle = s.colour;
    context.lineWidth = 2;
    context.beginPath();
    let drawing = false;
    for (const [x, y] of s.points) {
      if (y === null || !Number.isFinite(y)) {
        drawing = false;
        continue;
      }
      if (drawing) context.lineTo(px(x), py(y));
      else context.moveTo(px(x), py(y));
      drawing = true;
    }
    context.stroke();
    if (options.dots) {
      for (const [x, y] of s.points) {
        if (y === null) continue;
        context.beginPath();
        context.arc(px(x), py(y), 3.5, 0, 2 * Math.PI);
        context.fill();
      }
    }
  }
  canvas.dataset.series = String(series.length);
  canvas.dataset.points = String(series.reduce((sum, s) => sum + s.points.filter(([, y]) => y !== null).length, 0));
}
