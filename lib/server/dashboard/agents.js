// The agents, online or offline, and what each holds. Read from GET /agents:
// again shortly after events that move work between agents, and every few
// seconds, since an agent goes offline by silence, which sends no event.
import { get } from './api.js';
import { $, ago, el, shortId } from './dom.js';

const MOVES = new Set(['claim-start', 'claim', 'start', 'finish', 'release', 'expire']);

export class Agents {
  list = [];
  timer = null;

  constructor(openCommand) {
    this.openCommand = openCommand;
    setInterval(() => void this.load().catch(() => {}), 5000);
  }

  async load() {
    this.list = (await get('/agents')).agents;
    this.render();
  }

  apply(event) {
    if (!MOVES.has(event) || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.load().catch(() => {});
    }, 500);
  }

  render() {
    const online = this.list.filter((a) => a.status === 'online').length;
    $('agents-summary').textContent = `${online} online, ${this.list.length - online} offline`;
    const items = this.list.map((a) =>
      el('li', { class: `agent ${a.status}` },
        el('span', { class: 'dot', title: a.status }),
        el('span', { class: 'agent-id' }, a.id),
        el('span', { class: 'muted' }, a.status === 'online' ? 'online' : `offline${a.lastSeen ? `, seen ${ago(a.lastSeen)}` : ''}`),
        Array.isArray(a.types) ? el('span', { class: 'types muted' }, `runs ${a.types.join(', ')}`) : null,
        el('span', { class: 'holds' },
          a.commands.length === 0
            ? el('span', { class: 'muted' }, 'idle')
            : a.commands.slice(0, 6).map((id) => el('button', { type: 'button', class: 'link mono', onclick: () => this.openCommand(id) }, shortId(id))),
          a.commands.length > 6 ? el('span', { class: 'muted' }, `+${a.commands.length - 6}`) : null)));
    $('agents').replaceChildren(...(items.length ? items : [el('li', { class: 'muted empty' }, 'No agent has been seen since the server started.')]));
  }
}
