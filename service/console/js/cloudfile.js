// Point clouds in the page: the x, y, z of a .npy, .ply or JSON {"points": [...]} file, to draw
// it (the server parses the same file itself for the answer).

const NPY_TYPES = { f4: Float32Array, f8: Float64Array, i4: Int32Array, i2: Int16Array };
const PLY_TYPES = {
  char: ["Int8", 1], int8: ["Int8", 1], uchar: ["Uint8", 1], uint8: ["Uint8", 1],
  short: ["Int16", 2], int16: ["Int16", 2], ushort: ["Uint16", 2], uint16: ["Uint16", 2],
  int: ["Int32", 4], int32: ["Int32", 4], uint: ["Uint32", 4], uint32: ["Uint32", 4],
  float: ["Float32", 4], float32: ["Float32", 4], double: ["Float64", 8], float64: ["Float64", 8],
};

/** Float32Array [x0, y0, z0, x1, ...] of a cloud file; throws Error with a reason. */
export async function parseCloud(blob, name = "") {
  const buffer = await blob.arrayBuffer();
  const bytes = new Uint8Array(buffer);
  if (bytes[0] === 0x93 && String.fromCharCode(...bytes.slice(1, 6)) === "NUMPY") return parseNpy(buffer);
  if (String.fromCharCode(...bytes.slice(0, 3)) === "ply") return parsePly(buffer);
  if (name.endsWith(".json") || bytes[0] === 0x7b) return parseJson(new TextDecoder().decode(bytes));
  throw new Error(`${name || "the file"} is not a .npy, .ply or JSON point cloud`);
}

function parseNpy(buffer) {
  const view = new DataView(buffer);
  const major = view.getUint8(6);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(new Uint8Array(buffer, start, headerLength));
  const descr = /'descr':\s*'([<>|=]?)(\w+)'/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !shape || /'fortran_order':\s*True/.test(header)) throw new Error("unsupported .npy header");
  if (descr[1] === ">") throw new Error(".npy: big-endian arrays are not drawn");
  const Type = NPY_TYPES[descr[2]];
  const dims = shape[1].split(",").map((d) => d.trim()).filter(Boolean).map(Number);
  if (!Type || dims.length !== 2 || dims[1] !== 3) throw new Error(`.npy: expected (points, 3) floats, got ${header}`);
  const offset = start + headerLength;
  const values = new Type(buffer.slice(offset, offset + dims[0] * 3 * Type.BYTES_PER_ELEMENT));
  return Float32Array.from(values);
}

function plyHeader(buffer) {
  const text = new TextDecoder("latin1").decode(new Uint8Array(buffer, 0, Math.min(buffer.byteLength, 65536)));
  const end = text.indexOf("end_header");
  if (end < 0) throw new Error("PLY: no end_header");
  const bodyStart = text.indexOf("\n", end) + 1;
  const elements = [];
  let format = "";
  for (const line of text.slice(0, end).split(/\r?\n/)) {
    const words = line.trim().split(/\s+/);
    if (words[0] === "format") format = words[1];
    else if (words[0] === "element") elements.push({ name: words[1], count: Number(words[2]), properties: [] });
    else if (words[0] === "property" && elements.length) {
      const list = words[1] === "list";
      elements.at(-1).properties.push({ name: words.at(-1), type: list ? null : words[1], list });
    }
  }
  return { format, elements, bodyStart };
}

function parsePly(buffer) {
  const { format, elements, bodyStart } = plyHeader(buffer);
  const vertexIndex = elements.findIndex((element) => element.name === "vertex");
  if (vertexIndex < 0) throw new Error("PLY: no vertex element");
  const vertex = elements[vertexIndex];
  const axes = ["x", "y", "z"].map((axis) => vertex.properties.findIndex((p) => p.name === axis));
  if (axes.includes(-1)) throw new Error("PLY: vertices need x, y and z");
  const points = new Float32Array(vertex.count * 3);
  if (format === "ascii") {
    const skipped = elements.slice(0, vertexIndex).reduce((sum, element) => sum + element.count, 0);
    const lines = new TextDecoder().decode(new Uint8Array(buffer, bodyStart)).split(/\r?\n/).filter((l) => l.trim());
    for (let i = 0; i < vertex.count; i++) {
      const words = lines[skipped + i].trim().split(/\s+/).map(Number);
      axes.forEach((column, axis) => (points[i * 3 + axis] = words[column]));
    }
    return points;
  }
  const little = format === "binary_little_endian";
  if (!little && format !== "binary_big_endian") throw new Error(`PLY: unknown format ${format}`);
  let offset = bodyStart;
  for (const element of elements.slice(0, vertexIndex)) {
    if (element.properties.some((p) => p.list)) throw new Error("PLY: list properties before the vertices");
    offset += element.count * element.properties.reduce((sum, p) => sum + PLY_TYPES[p.type][1], 0);
  }
  const layout = vertex.properties.map((p) => (p.list ? null : PLY_TYPES[p.type]));
  if (layout.includes(null) || layout.includes(undefined)) throw new Error("PLY: unsupported vertex properties");
  const rowBytes = layout.reduce((sum, [, size]) => sum + size, 0);
  const starts = layout.map((_, i) => layout.slice(0, i).reduce((sum, [, size]) => sum + size, 0));
  const view = new DataView(buffer);
  for (let i = 0; i < vertex.count; i++) {
    axes.forEach((column, axis) => {
      const [type] = layout[column];
      points[i * 3 + axis] = view[`get${type}`](offset + i * rowBytes + starts[column], little);
    });
  }
  return points;
}

function parseJson(text) {
  const body = JSON.parse(text);
  const rows = Array.isArray(body) ? body : body.points;
  if (!Array.isArray(rows) || rows.some((row) => !Array.isArray(row) || row.length !== 3)) {
    throw new Error('JSON: expected {"points": [[x, y, z], ...]}');
  }
  return Float32Array.from(rows.flat());
}
