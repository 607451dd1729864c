// Calls to the keel server: JSON in and out, the bearer token from this tab's
// sessionStorage, and an ApiError carrying the server's own message.
const TOKEN_KEY = 'keel.token';

export class ApiError extends Error {
  constructor(status, body) {
    const text = body && typeof body === 'object' && body.error ? body.error : String(body || `HTTP ${status}`);
    super(text);
    this.status = status;
    this.body = body;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Headers for a call: the token, when there is one, and `extra`. */
export function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.authorization = `Bearer ${t}`;
  return h;
}

const unauthorized = new Set();
/** fn(status) is called whenever the server refuses the token: 401 wrong or missing, 403 another role's. */
export function onUnauthorized(fn) {
  unauthorized.add(fn);
}
export function reportUnauthorized(status) {
  for (const fn of unauthorized) fn(status);
}

export const refused = (status) => status === 401 || status === 403;

async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }), cache: 'no-store' };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  const text = await res.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON (metrics): keep the text
  }
  if (refused(res.status)) reportUnauthorized(res.status);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);

// Internal states that show as PENDING (docs/design.md, "What clients see").
const SHOWN_PENDING = new Set(['ASSIGNED', 'SCHEDULED', 'RETRY_WAIT']);

/** Commands by shown status, from /metrics' count by internal state. */
export async function counts() {
  const text = await get('/metrics');
  const by = { PENDING: 0, RUNNING: 0, COMPLETED: 0, FAILED: 0 };
  for (const m of text.matchAll(/^keel_commands\{state="([A-Z_]+)"\} (\d+)$/gm)) {
    const status = SHOWN_PENDING.has(m[1]) ? 'PENDING' : m[1];
    by[status] = (by[status] ?? 0) + Number(m[2]);
  }
  return by;
}
