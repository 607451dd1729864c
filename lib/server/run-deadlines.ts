// The server's side of execution timeouts. The agent aborts an attempt at its
// deadline and reports FAILED TIMEOUT; this is the backstop for an agent that
// cannot (wedged, or cut off while still heartbeating): a RUNNING attempt still
// running one lease timeout past its deadline is failed TIMEOUT here (and
// retried if it has attempts left).
//
// Deadlines are kept on the monotonic clock (lib/clock.ts). Only a restart
// needs wall time: a command RUNNING at startup keeps what is left of its
// timeout, measured from the start time its trail journaled.
import type { Command } from '../../state/command-fsm.ts';
import { decodeTrail } from '../../state/command-line.ts';
import { crashPoint } from '../../state/crash-points.ts';
import type { CommandStore } from '../../state/command-store.ts';
import { DiskFullError } from '../../state/disk-full.ts';
import { momentFromWall, monotonicMs } from '../clock.ts';
import type { Logger } from '../log.ts';

export class RunDeadlines {
  private readonly store: CommandStore;
  private readonly graceMs: number;
  private readonly log: Logger;
  /** id -> the lease that runs and when (monotonic ms) it is failed. */
  private readonly deadlines = new Map<string, { lease: number; at: number }>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;

  constructor(store: CommandStore, leaseTimeoutMs: number, log: Logger) {
    this.store = store;
    this.graceMs = leaseTimeoutMs;
    this.log = log;
  }

  /** Time every RUNNING command with a timeout, then start sweeping. */
  start(): void {
    for (const cmd of this.store.table.heldCommands()) {
      if (cmd.state !== 'RUNNING' || cmd.timeoutMs === null) continue;
      const startedAt = decodeTrail(cmd).findLast((e) => e.to === 'RUNNING' && e.event !== 'cancel')?.at ?? cmd.updatedAt;
      this.track(cmd, momentFromWall(startedAt).mono + cmd.timeoutMs - monotonicMs());
    }
    const every = Math.max(20, Math.min(1000, Math.floor(this.graceMs / 4)));
    this.timer = setInterval(() => void this.sweep(), every);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** A command is RUNNING: time it from now, unless this lease is timed already. */
  started(cmd: Command): void {
    if (cmd.timeoutMs !== null && this.deadlines.get(cmd.id)?.lease !== cmd.attempt) this.track(cmd, cmd.timeoutMs);
  }

  get size(): number {
    return this.deadlines.size;
  }

  private track(cmd: Command, leftMs: number): void {
    this.deadlines.set(cmd.id, { lease: cmd.attempt, at: monotonicMs() + Math.max(0, leftMs) + this.graceMs });
  }

  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = monotonicMs();
      for (const [id, d] of [...this.deadlines]) {
        const cmd = this.store.get(id);
        if (!cmd || cmd.state !== 'RUNNING' || cmd.attempt !== d.lease) {
          this.deadlines.delete(id); // it ended on its own
          continue;
        }
        if (d.at > now) continue;
        // On a full disk the timeout cannot be journaled: it waits for space.
        if (this.store.diskFull) continue;
        this.deadlines.delete(id);
        crashPoint('server:timeout');
        const r = await this.store.timeout(id, d.lease).catch((err: unknown) => {
          if (!(err instanceof DiskFullError)) throw err;
          this.deadlines.set(id, d);
          return undefined;
        });
        if (!r) continue;
        crashPoint('server:timeout-synced');
        if (r.kind === 'next') this.log('attempt timed out', { id, lease: d.lease, agentId: cmd.agentId, state: r.cmd.state });
      }
    } finally {
      this.sweeping = false;
    }
  }
}
