// A small 3-D point cloud view on a 2-D canvas: drag to rotate, wheel to zoom, double-click to
// reset. Points are normalised (centred, radius 1), rotated, projected in perspective and
// painted far to near, shaded by depth.

import { fitCanvas } from "./charts.js";

const CAMERA_DISTANCE = 3.2;
const INITIAL = { yaw: 0.6, pitch: -0.45, zoom: 1 };

function normalised(points) {
  const count = points.length / 3;
  const centre = [0, 0, 0];
  for (let i = 0; i < count; i++) for (let a = 0; a < 3; a++) centre[a] += points[i * 3 + a] / count;
  let radius = 0;
  for (let i = 0; i < count; i++) {
    const d = Math.hypot(points[i * 3] - centre[0], points[i * 3 + 1] - centre[1], points[i * 3 + 2] - centre[2]);
    radius = Math.max(radius, d);
  }
  radius = radius || 1;
  return points.map((value, i) => (value - centre[i % 3]) / radius);
}

export class CloudView {
  /** `colours`: one [r, g, b] per point (0..255). */
  constructor(canvas, points, colours) {
    this.canvas = canvas;
    this.points = normalised(points);
    this.colours = colours;
    this.count = points.length / 3;
    this.view = { ...INITIAL };
    this.frame = 0;
    canvas.dataset.points = String(this.count);
    this.listen();
    this.draw();
  }

  listen() {
    const canvas = this.canvas;
    let last = null;
    canvas.addEventListener("pointerdown", (event) => {
      last = [event.clientX, event.clientY];
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      this.rotate(event.clientX - last[0], event.clientY - last[1]);
      last = [event.clientX, event.clientY];
    });
    const stop = () => (last = null);
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      this.zoomBy(Math.exp(-event.deltaY * 0.0015));
    }, { passive: false });
    canvas.addEventListener("dblclick", () => {
      this.view = { ...INITIAL };
      this.schedule();
    });
  }

  rotate(dx, dy) {
    this.view.yaw += dx * 0.01;
    this.view.pitch = Math.max(-1.5, Math.min(1.5, this.view.pitch + dy * 0.01));
    this.schedule();
  }

  zoomBy(factor) {
    this.view.zoom = Math.max(0.3, Math.min(6, this.view.zoom * factor));
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => ((this.frame = 0), this.draw()));
  }

  /** Screen x, y, depth of every point for the current view. */
  project(width, height) {
    const { yaw, pitch, zoom } = this.view;
    const [cy, sy, cp, sp] = [Math.cos(yaw), Math.sin(yaw), Math.cos(pitch), Math.sin(pitch)];
    const focal = 0.42 * Math.min(width, height) * zoom * CAMERA_DISTANCE;
    const projected = new Float32Array(this.count * 3);
    for (let i = 0; i < this.count; i++) {
      const [x, y, z] = [this.points[i * 3], this.points[i * 3 + 1], this.points[i * 3 + 2]];
      // z up in the data: turn about it (yaw), then tilt towards the viewer (pitch).
      const x1 = x * cy - y * sy;
      const y1 = x * sy + y * cy;
      const depth = y1 * cp - z * sp + CAMERA_DISTANCE;
      const up = y1 * sp + z * cp;
      projected[i * 3] = width / 2 + (x1 * focal) / depth;
      projected[i * 3 + 1] = height / 2 - (up * focal) / depth;
      projected[i * 3 + 2] = depth;
    }
    return projected;
  }

  draw() {
    const canvas = this.canvas;
    const { context, width, height } = fitCanvas(canvas);
    context.fillStyle = "#0f172a";
    context.fillRect(0, 0, width, height);
    const projected = this.project(width, height);
    const order = Array.from({ length: this.count }, (_, i) => i).sort((a, b) => projected[b * 3 + 2] - projected[a * 3 + 2]);
    const size = Math.max(1.5, 2.2 * this.view.zoom * Math.min(width, height) / 320);
    for (const i of order) {
      const depth = projected[i * 3 + 2];
      const shade = Math.max(0.35, Math.min(1, 1.45 - (depth - CAMERA_DISTANCE + 1) * 0.45));
      const [r, g, b] = this.colours[i];
      context.fillStyle = `rgb(${r * shade | 0}, ${g * shade | 0}, ${b * shade | 0})`;
      const radius = (size * CAMERA_DISTANCE) / depth;
      context.beginPath();
      context.arc(projected[i * 3], projected[i * 3 + 1], radius, 0, 2 * Math.PI);
      context.fill();
    }
    canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
  }
}
