// Talking to the service: the API key (sessionStorage only), requests, errors, the task table.

const KEY_STORAGE = "easerve.apiKey";
// The page is served at <prefix>/ui/, so the API lives at <prefix>/ (a proxy may add a prefix).
const BASE = new URL("../", document.baseURI);

export function apiUrl(path, query = {}) {
  const url = new URL(path, BASE);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** An answer other than 2xx: the status and the server's own message (`{"error": ...}`). */
export class ApiError extends Error {
  constructor(status, statusText, message, retryAfter) {
    super(message);
    this.status = status;
    this.statusText = statusText;
    this.retryAfter = retryAfter;
  }
}

async function errorOf(response) {
  const text = await response.text();
  let message = text;
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: the text as it came
  }
  return new ApiError(response.status, response.statusText, message, response.headers.get("retry-after"));
}

/** fetch() with the API key; resolves to the Response, rejects with an ApiError on non-2xx. */
export async function request(path, { method = "GET", query, body, contentType, headers = {} } = {}) {
  const sent = { ...headers };
  if (contentType) sent["Content-Type"] = contentType;
  const key = apiKey();
  if (key) sent["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(apiUrl(path, query), { method, body, headers: sent, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "network error", `the server could not be reached (${error.message})`, null);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path, query) {
  return (await request(path, { query })).json();
}

/** POST a body; the answer's JSON and the round trip as the client saw it. */
export async function postJson(path, query, body, contentType) {
  const started = performance.now();
  const response = await request(path, { method: "POST", query, body, contentType });
  const answer = await response.json();
  return { answer, roundTripMs: performance.now() - started };
}

// The six task endpoints: what each takes and which models serve it.
export const TASKS = {
  classify: { title: "Image classification", task: "classification", path: "v1/classify", input: "image", samples: "images" },
  detect: { title: "Object detection", task: "detection", path: "v1/detect", input: "image", samples: "scenes" },
  segment: { title: "Semantic segmentation", task: "segmentation", path: "v1/segment", input: "image", samples: "scenes" },
  generate: { title: "Class-conditional generation", task: "generation", path: "v1/generate", input: "class" },
  "pointcloud-classify": {
    title: "Point cloud classification",
    task: "pointcloud-classification",
    path: "v1/pointcloud/classify",
    input: "cloud",
    samples: "clouds",
  },
  "pointcloud-segment": {
    title: "Point cloud part segmentation",
    task: "pointcloud-segmentation",
    path: "v1/pointcloud/segment",
    input: "cloud",
    samples: "clouds",
  },
};

let modelsPromise = null;

/** GET /v1/models, once per page unless `refresh`. */
export function loadModels(refresh = false) {
  if (refresh || modelsPromise === null) {
    modelsPromise = getJson("v1/models").catch((error) => {
      modelsPromise = null;
      throw error;
    });
  }
  return modelsPromise;
}

export async function modelsFor(taskKey) {
  const { models } = await loadModels();
  return models.filter((model) => model.task === TASKS[taskKey].task);
}

/** The model that answers `selector` ({attention} or {model}) for a task, if known. */
export async function modelFor(taskKey, selector) {
  const models = await modelsFor(taskKey).catch(() => []);
  if (selector.model) return models.find((model) => model.name === selector.model) || null;
  return models.find((model) => model.attention === (selector.attention || "ea")) || null;
}

let samplesPromise = null;

export function loadSamples() {
  if (samplesPromise === null) {
    samplesPromise = getJson("ui/samples").catch((error) => {
      samplesPromise = null;
      throw error;
    });
  }
  return samplesPromise;
}

export async function sampleBlob(file) {
  return (await request(`ui/samples/${encodeURIComponent(file)}`)).blob();
}
