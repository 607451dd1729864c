// Completed and failed commands per second over the last five minutes, drawn
// on a canvas: one stacked bar per second, counted by the time the command
// became final (its updatedAt). Filled from the recent final commands when the
// page loads, then from the event stream.
import { get } from './api.js';
import { $ } from './dom.js';

const WINDOW_S = 300;
const COLORS = { completed: '#2f9e6b', failed: '#d64545', grid: '#e3e8ef', text: '#6b7685' };

export class Chart {
  /** second -> {completed, failed} */
  buckets = new Map();
  /** ids already counted, so the backfill and the stream do not count one twice */
  counted = new Map();
  canvas = $('chart');
  dirty = true;

  constructor() {
    setInterval(() => this.draw(), 1000);
    new ResizeObserver(() => this.draw()).observe(this.canvas);
  }

  async backfill() {
    this.buckets.clear();
    this.counted.clear();
    const since = Date.now() - WINDOW_S * 1000;
    for (const status of ['COMPLETED', 'FAILED']) {
      const { commands } = await get(`/commands?status=${status}&limit=1000`);
      for (const c of commands) if (Date.parse(c.updatedAt) >= since) this.add(c);
    }
    this.draw();
  }

  /** A command became final. */
  add(view) {
    if (view.status !== 'COMPLETED' && view.status !== 'FAILED') return;
    if (this.counted.has(view.id)) return;
    const sec = Math.floor(Date.parse(view.updatedAt) / 1000);
    this.counted.set(view.id, sec);
    const b = this.buckets.get(sec) ?? { completed: 0, failed: 0 };
    if (view.status === 'COMPLETED') b.completed++;
    else b.failed++;
    this.buckets.set(sec, b);
    this.dirty = true;
  }

  draw() {
    const now = Math.floor(Date.now() / 1000);
    const oldest = now - WINDOW_S + 1;
    for (const s of this.buckets.keys()) if (s < oldest) this.buckets.delete(s);
    for (const [id, s] of this.counted) if (s < oldest) this.counted.delete(id);

    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (w === 0) return;
    if (c.width !== Math.round(w * dpr)) c.width = Math.round(w * dpr);
    if (c.height !== Math.round(h * dpr)) c.height = Math.round(h * dpr);
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);

    let max = 0;
    let lastMinute = { completed: 0, failed: 0 };
    for (const [s, b] of this.buckets) {
      max = Math.max(max, b.completed + b.failed);
      if (s > now - 60) {
        lastMinute.completed += b.completed;
        lastMinute.failed += b.failed;
      }
    }
    const top = niceCeil(max);
    const left = 36;
    const bottom = h - 18;
    const plotW = w - left - 6;
    const plotH = bottom - 8;
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    g.fillStyle = COLORS.text;
    g.strokeStyle = COLORS.grid;
    g.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(bottom - f * plotH) + 0.5;
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(w - 6, y);
      g.stroke();
      g.textAlign = 'right';
      g.fillText(formatN(top * f), left - 6, y);
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    for (let m = 5; m >= 0; m--) {
      const x = left + plotW * (1 - (m * 60) / WINDOW_S);
      g.fillText(m === 0 ? 'now' : `-${m}m`, Math.min(x, w - 16), bottom + 4);
    }
    const bw = plotW / WINDOW_S;
    for (const [s, b] of this.buckets) {
      const x = left + (s - oldest) * bw;
      const hc = (b.completed / top) * plotH;
      const hf = (b.failed / top) * plotH;
      g.fillStyle = COLORS.completed;
      g.fillRect(x, bottom - hc, Math.max(1, bw - 0.5), hc);
      g.fillStyle = COLORS.failed;
      g.fillRect(x, bottom - hc - hf, Math.max(1, bw - 0.5), hf);
    }
    $('rate').textContent = `last minute: ${lastMinute.completed} completed, ${lastMinute.failed} failed`;
    this.dirty = false;
  }
}

function niceCeil(n) {
  if (n <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

function formatN(n) {
  return n >= 1000 ? `${(n / 1000).toFixed(n % 1000 === 0 ? 0 : 1)}k` : String(Math.round(n * 10) / 10);
}
