// Talking to the service: the API key (sessionStorage only), requests, errors, the task table,
// the models and the samples.

const KEY_STORAGE = "easerve.apiKey";
// The page is served at <prefix>/ui/, so the API lives at <prefix>/ (a proxy may add a prefix).
const BASE = new URL("../", document.baseURI);

export function apiUrl(path, query = {}) {
  // Relative even when given as "/v1/...": the prefix stays.
  const url = new URL(path.replace(/^\/+/, ""), BASE);
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

/** A loader that GETs `path` once per page (again after a failure, or when asked to `refresh`). */
function once(path) {
  let promise = null;
  return (refresh = false) => {
    if (refresh || promise === null) {
      promise = getJson(path).catch((error) => {
        promise = null;
        throw error;
      });
    }
    return promise;
  };
}

/** GET /v1/models, once per page unless `refresh`. */
export const loadModels = once("v1/models");

/**
 * The server's task specs (artifacts/tasks.py): name, title, endpoint, path, and the kinds of its
 * request and answer, which choose the page's plug-ins for it. In the server's order.
 */
export const loadTasks = once("ui/tasks");

/** The task whose endpoint key (the task selects' values) is `endpoint`. */
export async function taskFor(endpoint) {
  const task = (await loadTasks()).find((spec) => spec.endpoint === endpoint);
  if (!task) throw new Error(`the server has no task ${endpoint}`);
  return task;
}

export async function modelsFor(task) {
  const { models } = await loadModels();
  return models.filter((model) => model.task === task.name);
}

/** The model that answers `selector` ({attention} or {model}) for a task, if known. */
export async function modelFor(task, selector) {
  const models = await modelsFor(task).catch(() => []);
  if (selector.model) return models.find((model) => model.name === selector.model) || null;
  return models.find((model) => model.attention === (selector.attention || "ea")) || null;
}

export const loadSamples = once("ui/samples");

export async function sampleBlob(file) {
  return (await request(`ui/samples/${encodeURIComponent(file)}`)).blob();
}
