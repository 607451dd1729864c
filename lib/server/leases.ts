// Lease deadlines, in memory only (docs/design.md: heartbeats are not journaled).
// A restart grants every ASSIGNED and RUNNING command a fresh full timeout,
// since no heartbeat could be heard while the server was down; the sweep then
// applies the expiry rules through the command store. Deadlines are on the
// monotonic clock (lib/clock.ts): a step of the wall clock expires nothing.
import { crashPoint } from '../../state/crash-points.ts';
import { DiskFullError } from '../../state/disk-full.ts';
import type { CommandStore } from '../../state/command-store.ts';
import { monotonicMs } from '../clock.ts';
import type { Logger } from '../log.ts';

export class LeaseClock {
  readonly timeoutMs: number;
  private readonly deadlines = new Map<string, { lease: number; at: number }>();
  private readonly store: CommandStore;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;

  constructor(store: CommandStore, timeoutMs: number, log: Logger) {
    this.store = store;
    this.timeoutMs = timeoutMs;
    this.log = log;
  }

  /** Give every command held at startup a full timeout, then start sweeping. */
  start(): void {
    for (const cmd of this.store.table.heldCommands()) this.extend(cmd.id, cmd.attempt);
    const every = Math.max(20, Math.min(1000, Math.floor(this.timeoutMs / 4)));
    this.timer = setInterval(() => void this.sweep(), every);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  extend(id: string, lease: number): void {
    this.deadlines.set(id, { lease, at: monotonicMs() + this.timeoutMs });
  }

  drop(id: string): void {
    this.deadlines.delete(id);
  }

  get size(): number {
    return this.deadlines.size;
  }

  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = monotonicMs();
      const due = [...this.deadlines].filter(([, d]) => d.at <= now);
      for (const [id, d] of due) {
        this.deadlines.delete(id);
        const cmd = this.store.get(id);
        if (!cmd || cmd.attempt !== d.lease || (cmd.state !== 'ASSIGNED' && cmd.state !== 'RUNNING')) continue;
        // On a full disk the expiry cannot be journaled: it waits for space.
        if (this.store.diskFull) {
          this.deadlines.set(id, d);
          continue;
        }
        crashPoint('server:lease-expiry');
        const r = await this.store.expire(id, d.lease).catch((err: unknown) => {
          if (!(err instanceof DiskFullError)) throw err;
          this.deadlines.set(id, d);
          return undefined;
        });
        if (r?.kind === 'next') this.log('lease expired', { id, lease: d.lease, agentId: cmd.agentId, state: r.cmd.state, error: r.cmd.error });
      }
    } finally {
      this.sweeping = false;
    }
  }
}
