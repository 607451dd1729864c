// A few DOM helpers, so the views read as what they build.

/** el('td', {class: 'x'}, 'text', child...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  return node;
}

export const $ = (id) => document.getElementById(id);

export function pill(status) {
  return el('span', { class: `pill ${String(status).toLowerCase()}` }, status);
}

export function shortId(id) {
  return id ? id.slice(0, 8) : '';
}

/** "12s ago", "3m ago", or the time of day for anything older than an hour. */
export function ago(iso, now = Date.now()) {
  if (!iso) return '';
  const t = Date.parse(iso);
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return new Date(t).toLocaleTimeString();
}

/** Shown statuses in the order a command goes through them. */
export const RANK = { PENDING: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2 };

/** Whether view `next` is newer than `cur`: a replayed or stale event must not move a row back. */
export function newer(next, cur) {
  if (!cur) return true;
  const a = Date.parse(next.updatedAt);
  const b = Date.parse(cur.updatedAt);
  if (a !== b) return a > b;
  return (RANK[next.status] ?? 0) >= (RANK[cur.status] ?? 0);
}
