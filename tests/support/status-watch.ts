// Polls commands' shown status and records any step backwards: the status a
// client sees may only move PENDING -> RUNNING -> COMPLETED | FAILED, with one
// exception: a command an agent took but never began goes back from RUNNING
// to PENDING when the agent gives it back (docs/design.md, claim-and-start).
// Those are counted apart, in `givenBack`.
import type { CommandStatus, CommandView } from '../../lib/protocol.ts';
import { call } from './http.ts';

const RANK: Record<CommandStatus, number> = { PENDING: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2 };

export class StatusWatch {
  readonly regressions: string[] = [];
  readonly givenBack: string[] = [];
  private readonly last = new Map<string, CommandStatus>();
  private running = false;
  private loop: Promise<void> = Promise.resolve();

  /** Poll every tracked command by id until stop(). */
  poll(base: string, everyMs = 25): this {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        for (const id of [...this.last.keys()]) {
          const r = await call<CommandView>(base, 'GET', `/commands/${id}`).catch(() => undefined);
          if (r?.status === 200) this.observe(r.body);
        }
        await new Promise((r) => setTimeout(r, everyMs));
      }
    })();
    return this;
  }

  track(ids: Iterable<string>): void {
    for (const id of ids) if (!this.last.has(id)) this.last.set(id, 'PENDING');
  }

  /** Record one sighting of a tracked command. */
  observe(v: CommandView): void {
    const prev = this.last.get(v.id);
    if (prev === undefined) return;
    if (prev === 'RUNNING' && v.status === 'PENDING') this.givenBack.push(v.id);
    else if (RANK[v.status] < RANK[prev] || (RANK[prev] === 2 && v.status !== prev)) this.regressions.push(`${v.id}: ${prev} -> ${v.status}`);
    this.last.set(v.id, v.status);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}
