// The recent-commands table: newest first, a status filter, pages of
// PAGE_SIZE through the server's cursors. The first page takes new commands
// from the event stream as they come; rows on any page update in place.
import { get } from './api.js';
import { $, ago, el, newer, pill, shortId } from './dom.js';

const PAGE_SIZE = 15;

export class CommandsTable {
  rows = [];
  filter = '';
  /** cursors[i] is the cursor of page i (null: the newest). */
  cursors = [null];
  page = 0;
  refreshTimer = null;
  frame = null;

  constructor(openCommand) {
    this.openCommand = openCommand;
    $('status-filter').addEventListener('change', (e) => {
      this.filter = e.target.value;
      this.cursors = [null];
      this.page = 0;
      void this.load();
    });
    $('prev').addEventListener('click', () => this.go(this.page - 1));
    $('next').addEventListener('click', () => this.go(this.page + 1));
    setInterval(() => this.render(), 5000); // the "ago" columns
  }

  go(page) {
    if (page < 0 || page >= this.cursors.length) return;
    this.page = page;
    void this.load();
  }

  async load() {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (this.filter) q.set('status', this.filter);
    const cursor = this.cursors[this.page];
    if (cursor) q.set('cursor', cursor);
    const body = await get(`/commands?${q}`);
    this.rows = body.commands;
    this.cursors.length = this.page + 1;
    if (body.nextCursor) this.cursors.push(body.nextCursor);
    this.render();
  }

  apply(event, view) {
    const i = this.rows.findIndex((r) => r.id === view.id);
    if (i >= 0) {
      if (newer(view, this.rows[i])) this.rows[i] = view;
    } else if (this.page === 0 && (!this.filter || this.filter === view.status)) {
      if (event === 'submit') {
        this.rows.unshift(view);
        if (this.rows.length > PAGE_SIZE) {
          this.rows.length = PAGE_SIZE;
          this.refreshSoon(); // the next page's cursor moved on: ask for it again
        }
      } else {
        // It entered the filter's status: where it belongs in submission order is the server's to say.
        this.refreshSoon();
        return;
      }
    } else {
      return;
    }
    this.renderSoon();
  }

  refreshSoon() {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.load().catch(() => {});
    }, 400);
  }

  renderSoon() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.render();
    });
  }

  render() {
    const now = Date.now();
    const trs = this.rows.map((c) =>
      el('tr', { dataset: { id: c.id }, tabindex: 0, onclick: () => this.openCommand(c.id), onkeydown: (e) => e.key === 'Enter' && this.openCommand(c.id) },
        el('td', { class: 'mono', title: c.id }, shortId(c.id)),
        el('td', {}, c.type),
        el('td', {}, pill(c.status), el('span', { class: 'muted small' }, note(c))),
        el('td', { class: 'mono' }, c.agentId ?? ''),
        el('td', { class: 'num' }, Array.isArray(c.attempts) ? c.attempts.length : c.attempt),
        el('td', { title: c.createdAt }, ago(c.createdAt, now)),
        el('td', { title: c.updatedAt }, ago(c.updatedAt, now))));
    $('commands').replaceChildren(...(trs.length ? trs : [el('tr', {}, el('td', { colspan: 7, class: 'muted empty' }, this.filter ? `No ${this.filter} commands.` : 'No commands yet. Submit one on the right.'))]));
    $('page').textContent = `page ${this.page + 1}`;
    $('prev').disabled = this.page === 0;
    $('next').disabled = this.page + 1 >= this.cursors.length;
  }
}

/** What the status pill leaves out: waiting for a time, or being canceled. */
function note(c) {
  if (c.status === 'RUNNING' && c.cancelRequested) return ' canceling';
  if (c.state === 'SCHEDULED') return ' scheduled';
  if (c.state === 'RETRY_WAIT') return ' retry wait';
  return '';
}
