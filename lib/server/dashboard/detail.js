// One command in a side panel: its fields, payload, result and event history,
// with Cancel and Retry. Kept current from the event stream while open.
import { get, post } from './api.js';
import { $, el, newer, pill } from './dom.js';

// Shown in their own blocks, or in the title.
const OWN_BLOCK = new Set(['id', 'payload', 'result', 'attempts']);

export class Detail {
  id = null;
  view = null;
  historyTimer = null;

  constructor() {
    $('detail-close').addEventListener('click', () => this.close());
    document.addEventListener('keydown', (e) => e.key === 'Escape' && !$('detail').hidden && this.close());
    $('cancel').addEventListener('click', () => void this.act('cancel'));
    $('retry').addEventListener('click', () => void this.act('retry'));
  }

  async open(id) {
    this.id = id;
    this.view = null;
    $('detail').hidden = false;
    $('detail-title').textContent = id;
    $('detail-message').textContent = '';
    $('detail-history').replaceChildren();
    await this.reload();
  }

  close() {
    this.id = null;
    $('detail').hidden = true;
  }

  async reload() {
    const id = this.id;
    if (!id) return;
    try {
      const [view, history] = await Promise.all([get(`/commands/${id}`), get(`/commands/${id}/events`)]);
      if (id !== this.id) return;
      if (newer(view, this.view)) this.view = view;
      this.renderHistory(history.events);
      this.render();
    } catch (err) {
      if (id === this.id) $('detail-message').textContent = err.message;
    }
  }

  apply(view) {
    if (view.id !== this.id) return;
    if (newer(view, this.view)) {
      this.view = view;
      this.render();
    }
    clearTimeout(this.historyTimer);
    this.historyTimer = setTimeout(() => void this.reload(), 150);
  }

  async act(what) {
    const id = this.id;
    const msg = $('detail-message');
    msg.textContent = what === 'cancel' ? 'canceling…' : 'retrying…';
    try {
      const answer = await post(`/commands/${id}/${what}`);
      if (what === 'retry') {
        // A retry is a new command (retryOf: this one).
        msg.replaceChildren('retried as ', el('button', { type: 'button', class: 'link mono', onclick: () => void this.open(answer.commandId) }, answer.commandId.slice(0, 8)));
        return;
      }
      msg.textContent = answer.status === 'RUNNING' ? 'cancel requested: the agent aborts on its next heartbeat' : 'canceled';
      if (answer.id === id) this.apply(answer);
    } catch (err) {
      msg.textContent = `${what} refused: ${err.message}`;
    }
  }

  render() {
    const v = this.view;
    if (!v) return;
    $('detail-status').replaceWith(Object.assign(pill(v.status), { id: 'detail-status' }));
    const final = v.status === 'COMPLETED' || v.status === 'FAILED';
    const msg = $('detail-message');
    if (final && msg.textContent.startsWith('cancel requested')) msg.textContent = v.error === 'CANCELED' ? 'canceled: the agent aborted it' : `it ended ${v.status} before the agent heard of the cancel`;
    $('cancel').disabled = final || v.cancelRequested;
    $('retry').disabled = !final;
    const rows = Object.entries(v).filter(([k]) => !OWN_BLOCK.has(k)).map(([k, val]) =>
      [el('dt', {}, k), el('dd', { class: typeof val === 'string' && k !== 'type' ? 'mono' : '' }, val === null ? '—' : typeof val === 'object' ? JSON.stringify(val) : String(val))]);
    $('detail-fields').replaceChildren(...rows.flat());
    $('detail-payload').textContent = JSON.stringify(v.payload, null, 2);
    $('detail-result').textContent = v.result === null ? '—' : JSON.stringify(v.result, null, 2);
    const attempts = Array.isArray(v.attempts) ? v.attempts : null;
    $('detail-attempts-block').hidden = !attempts || attempts.length === 0;
    if (attempts) {
      $('detail-attempts').replaceChildren(...attempts.map((a) =>
        el('tr', {},
          el('td', { class: 'num' }, a.number),
          el('td', { class: 'mono' }, a.agentId ?? ''),
          el('td', { title: a.startedAt }, clock(a.startedAt)),
          el('td', { title: a.finishedAt ?? '' }, a.finishedAt ? clock(a.finishedAt) : 'running'),
          el('td', {}, a.outcome ? pill(a.outcome) : ''),
          el('td', {}, a.error ?? ''))));
    }
  }

  renderHistory(events) {
    $('detail-history').replaceChildren(...events.map((e) =>
      el('tr', {},
        el('td', { class: 'num' }, e.seq),
        el('td', {}, e.event),
        el('td', {}, e.to),
        el('td', { title: e.at }, clock(e.at)),
        el('td', { class: 'mono' }, e.agentId ?? ''),
        el('td', { class: 'num' }, e.lease ?? ''),
        el('td', {}, e.error ?? ''))));
  }
}

/** 14:03:07.412, local time. */
function clock(iso) {
  return `${new Date(iso).toLocaleTimeString(undefined, { hour12: false })}.${iso.slice(20, 23)}`;
}
