// Wakes up when the earliest SCHEDULED or RETRY_WAIT command is due and has
// the store move every due one to PENDING (one group commit, due-time order).
// Due times are wall-clock epoch ms: they are journaled and must mean the same
// after a restart. One timer, armed for the earliest; the wait is capped so a
// wall clock set forward is noticed within a minute. At startup everything
// that fell due while the server was down is promoted at once.
import type { CommandStore } from '../../state/command-store.ts';
import { DiskFullError } from '../../state/disk-full.ts';
import type { Logger } from '../log.ts';

const MAX_WAIT_MS = 60_000;

export class DueClock {
  private readonly store: CommandStore;
  private readonly log: Logger & { error: Logger };
  private timer: NodeJS.Timeout | undefined;
  /** The due time the timer is armed for. */
  private armedFor = Infinity;
  private promoting = false;
  private stopped = false;

  constructor(store: CommandStore, log: Logger & { error: Logger }) {
    this.store = store;
    this.log = log;
  }

  start(): void {
    this.stopped = false;
    void this.fire();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = Infinity;
  }

  /** A command started waiting: fire sooner if it is due before what the timer waits for. */
  arm(): void {
    if (this.stopped || this.promoting) return;
    const at = this.store.table.due.peekAt();
    if (at === undefined || at >= this.armedFor) return;
    clearTimeout(this.timer);
    this.armedFor = at;
    this.timer = setTimeout(() => void this.fire(), Math.min(MAX_WAIT_MS, Math.max(0, at - Date.now())));
    this.timer.unref();
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    this.armedFor = Infinity;
    if (this.stopped || this.promoting) return;
    this.promoting = true;
    try {
      const n = await this.store.promoteDue();
      if (n > 0) this.log('due', { commands: n });
    } catch (err) {
      if (err instanceof DiskFullError) {
        // Nothing was promoted; try again once writes go through.
        this.promoting = false;
        void this.store.whenSpace().then(() => this.fire());
        return;
      }
      // Only the journal can fail here; the request path notices and exits.
      this.log.error('promoting due commands failed', { error: (err as Error).message });
    } finally {
      this.promoting = false;
    }
    this.arm();
  }
}
