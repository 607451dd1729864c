// The leases this agent holds, kept alive by heartbeats at a third of the
// lease timeout the server reports. Each lease has an AbortController: when
// the server says a lease is revoked or its command canceled, the work on it
// is aborted with a reason the command's runner turns into its report.
// When the client moves to another server in its list, the leases are beaten
// there at once: their deadlines ran on while the last server was failing.
import type { Logger } from '../log.ts';
import type { LeaseRef } from '../protocol.ts';
import type { ServerClient } from './server-client.ts';

export type AbortCode = 'CANCELED' | 'LEASE_LOST' | 'SHUTDOWN' | 'TIMEOUT';

/** Why work on a command was aborted; executors reject with this. */
export class WorkAborted extends Error {
  readonly code: AbortCode;
  constructor(code: AbortCode, message: string) {
    super(message);
    this.name = 'WorkAborted';
    this.code = code;
  }
}

// Until the server has said, assume a lease short enough that beating at a
// third of it is never too slow for any sane server setting.
const ASSUMED_TIMEOUT_MS = 3000;

export class LeaseKeeper {
  private readonly held = new Map<string, { lease: number; ctl: AbortController }>();
  private readonly client: ServerClient;
  private readonly log: Logger;
  private timeoutMs = ASSUMED_TIMEOUT_MS;
  /** Whether the server has told us its lease timeout (a claim or heartbeat answer). */
  private told = false;
  private timer: NodeJS.Timeout | undefined;
  private beating = false;
  private stopped = false;

  constructor(client: ServerClient, log: Logger) {
    this.client = client;
    this.log = log;
    client.servers.onMove(() => this.beatNow());
  }

  /**
   * Start holding a lease; the signal aborts when it is revoked or canceled.
   * Leases held before the server has said its timeout (reconciling after a
   * restart) are beaten at once: their deadline has run since before the
   * crash. A fresh claim's lease was just granted in full, so it waits for
   * the next regular beat; beating per claim cost a request per command.
   */
  hold(ref: LeaseRef): AbortSignal {
    const ctl = new AbortController();
    this.held.set(ref.id, { lease: ref.lease, ctl });
    if (this.timer === undefined && !this.stopped) this.schedule(this.told ? this.interval() : 0);
    return ctl.signal;
  }

  /** Stop heartbeating a lease (its command is reported, dropped or released). */
  forget(id: string): void {
    this.held.delete(id);
  }

  /** Abort every held lease's work (the shutdown grace period ran out). */
  abortAll(reason: WorkAborted): void {
    for (const { ctl } of this.held.values()) ctl.abort(reason);
  }

  /** The server's lease timeout, from a claim or heartbeat answer. */
  setTimeoutMs(ms: number): void {
    if (ms <= 0) return;
    this.timeoutMs = ms;
    this.told = true;
  }

  get size(): number {
    return this.held.size;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Beat now rather than at the next regular beat (a beat under way already goes to the new server). */
  private beatNow(): void {
    if (this.held.size === 0 || this.stopped || this.beating) return;
    clearTimeout(this.timer);
    this.schedule(0);
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => void this.beat(), ms);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    this.timer = undefined;
    if (this.held.size === 0 || this.stopped || this.beating) return;
    this.beating = true;
    try {
      const leases = [...this.held].map(([id, h]) => ({ id, lease: h.lease }));
      const answer = await this.client.heartbeat(leases, this.interval());
      if (answer) this.apply(answer.leaseTimeoutMs, answer.revoked, answer.cancel);
    } finally {
      this.beating = false;
      if (this.held.size > 0 && !this.stopped) this.schedule(this.interval());
    }
  }

  private interval(): number {
    return Math.max(50, Math.floor(this.timeoutMs / 3));
  }

  private apply(timeoutMs: number, revoked: Array<LeaseRef & { reason: string }>, cancel: string[]): void {
    this.setTimeoutMs(timeoutMs);
    for (const r of revoked) {
      const h = this.held.get(r.id);
      // A lease we no longer hold, or a newer one: the answer is about the past.
      if (!h || h.lease !== r.lease || h.ctl.signal.aborted) continue;
      this.log('lease revoked', { id: r.id, lease: r.lease, reason: r.reason });
      h.ctl.abort(new WorkAborted('LEASE_LOST', `LEASE_LOST: ${r.reason}`));
    }
    for (const id of cancel) {
      const h = this.held.get(id);
      if (!h || h.ctl.signal.aborted) continue;
      this.log('cancel requested', { id, lease: h.lease });
      h.ctl.abort(new WorkAborted('CANCELED', 'CANCELED'));
    }
  }
}
