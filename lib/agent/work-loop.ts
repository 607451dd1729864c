// The agent's main loop: long-poll claim for as many commands as there are
// free slots, run each through command-steps.ts, and on shutdown stop
// claiming and give what it holds a grace period to finish.
//
// A slot is the right to execute: a command holds one from its claim until
// its execution ends. A claim's commands come back RUNNING (claim-and-start),
// so the agent journals `executing` for all of them in one fdatasync and runs
// them. Journaling an outcome (`done`) and reporting it run behind, off the
// slot; at most `concurrency` commands are settling at once. The finish waits
// only for `done` to be written (not synced): it rides in the next claim
// (server-client.ts), which goes out as soon as the slot is free.
import { Backoff, pause } from './backoff.ts';
import { beginAll, giveBackUnbegun, runExecuting, settle, type AgentContext, type Executed } from './command-steps.ts';
import type { Assignment, LeaseRef } from '../protocol.ts';
import { WorkAborted } from './leases.ts';
import { ProtocolMismatchError } from './server-client.ts';
import { untilAborted } from './signals.ts';

export interface WorkLoopOptions {
  concurrency: number;
  /** How long one claim waits on the server for work. */
  claimWaitMs: number;
  /** Called before each claim with the number of claims made so far (--kill-after=Npolls). */
  beforeClaim?: (claimsSoFar: number) => void;
}

// After the grace period the remaining work is aborted; its reports then get
// this long to reach the server before the process exits anyway.
const REPORT_AFTER_ABORT_MS = 2000;

// Keys of `active` entries that give held commands back to the server rather
// than run one: shutdown waits for them too, but they are not work in hand.
const GIVE_BACK = 'give-back:';

export class WorkLoop {
  private readonly ctx: AgentContext;
  private readonly opts: WorkLoopOptions;
  /** Every command in hand, from claim (or reconcile) until settled: what shutdown waits for. */
  private readonly active = new Map<string, Promise<void>>();
  /** Commands holding a slot: claimed, execution not yet ended. */
  private readonly running = new Set<string>();
  private slotFreed: (() => void) | undefined;

  constructor(ctx: AgentContext, opts: WorkLoopOptions) {
    this.ctx = ctx;
    this.opts = opts;
  }

  /** Track work started outside the loop (reconciliation) so shutdown waits for it too. */
  track(id: string, work: Promise<void>): Promise<void> {
    const p = work
      .catch((err: unknown) => {
        // Halted at exit: the entry stays in the ledger for the next start.
        if (this.ctx.halt.aborted) return;
        // Otherwise only the ledger can throw here (a failed write or fsync): the journal
        // refuses further appends, so the process must restart and recover.
        this.ctx.log.error('fatal: cannot continue', { id, error: (err as Error).stack ?? String(err) });
        process.exit(1);
      })
      .finally(() => {
        if (this.active.get(id) === p) this.active.delete(id);
        this.wake();
      });
    this.active.set(id, p);
    return p;
  }

  /** Claim and run commands until ctx.stopping aborts. */
  async run(): Promise<void> {
    const { ctx, opts } = this;
    const backoff = new Backoff();
    const stopped = untilAborted(ctx.stopping);
    let claims = 0;
    while (!ctx.stopping.aborted) {
      const free = Math.min(opts.concurrency - this.running.size, 2 * opts.concurrency - this.active.size);
      if (free <= 0) {
        // No claim is coming soon to carry the finishes held for one.
        ctx.client.flushRiders();
        await Promise.race([new Promise<void>((resolve) => (this.slotFreed = resolve)), stopped]);
        // Slots free up in waves (a batch's executions end together): let
        // the whole wave land so one claim asks for all of it.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      if (ctx.ledger.diskFull) {
        // A claim could not be journaled: take no more work, keep what is in
        // hand (its records wait for space, its leases are still beaten).
        ctx.log.error('not claiming: the ledger disk is full', { error: ctx.ledger.diskFull.message, inHand: this.active.size });
        ctx.client.flushRiders();
        await Promise.race([ctx.ledger.whenSpace(), stopped]);
        continue;
      }
      opts.beforeClaim?.(claims++);
      let answer;
      try {
        answer = await ctx.client.claim(free, opts.claimWaitMs, ctx.stopping);
        backoff.reset();
      } catch (err) {
        if (ctx.stopping.aborted) break;
        if (err instanceof ProtocolMismatchError) throw err; // no retry can help: the agent exits
        ctx.log.error('claim failed', { error: (err as Error).message });
        await pause(backoff.next(), ctx.stopping).catch(() => {});
        continue;
      }
      ctx.leases.setTimeoutMs(answer.leaseTimeoutMs);
      if (answer.held) this.giveBack(`${GIVE_BACK}claim-${claims}`, answer.held, 'held by the server, never begun here');
      this.take(answer.commands, claims);
    }
    ctx.client.flushRiders();
    // A claim cut off by the shutdown may have been answered: what it took
    // goes back now, not FAILED when its lease runs out.
    if (ctx.client.resuming && !ctx.halt.aborted) {
      const last = ctx.client.claim(0, 0, ctx.halt).then(
        (a) => giveBackUnbegun(ctx, a.held ?? [], 'held at shutdown, never begun'),
        (err: unknown) => void (ctx.halt.aborted || ctx.log.error('could not ask for held commands at shutdown', { error: (err as Error).message })),
      );
      void this.track(`${GIVE_BACK}shutdown`, last);
    }
  }

  /** One claim answer's commands: journal `executing` for all at once (one fdatasync), then run each. */
  private take(commands: readonly Assignment[], claim: number): void {
    const { ctx } = this;
    const fresh: Assignment[] = [];
    for (const a of commands) {
      const earlier = this.active.get(a.id);
      if (!earlier) {
        fresh.push(a);
        continue;
      }
      // The server never hands out a lease twice, so this is the next attempt
      // of a retried command whose last one is still being reported (its entry
      // open, or settled in memory and not yet flushed): the last one's work
      // must end before the next one's entry can begin.
      const entry = ctx.ledger.get(a.id);
      if (entry && entry.lease >= a.lease) continue;
      this.begin([a], earlier);
    }
    if (fresh.length === 0) return;
    if (ctx.stopping.aborted) {
      this.giveBack(`stopping-${claim}`, fresh, 'claimed during shutdown, never begun');
      return;
    }
    this.begin(fresh);
  }

  /** Journal `executing` for `commands` (after `after`), and run each in its slot. */
  private begin(commands: Assignment[], after?: Promise<void>): void {
    const { ctx } = this;
    const signals = commands.map((a) => ctx.leases.hold(a));
    const begun = after ? after.then(() => beginAll(ctx, commands)) : beginAll(ctx, commands);
    commands.forEach((a, i) => this.occupy(a.id, begun.then((b) => runExecuting(ctx, b.entries[i]!, signals[i]!, b.at)), true));
  }

  /** Give back what the server has us holding that is not in hand here. */
  private giveBack(key: string, held: LeaseRef[], why: string): void {
    const unbegun = held.filter((a) => !this.active.has(a.id));
    if (unbegun.length > 0) void this.track(key, giveBackUnbegun(this.ctx, unbegun, why));
  }

  /**
   * Run one command's execution in a slot: the slot is held until `executed`
   * settles, then its outcome is journaled and reported off the slot. For
   * fresh claims, and for work resumed after a restart (reconcile.ts), which
   * so takes its slots while the others claim. `ride`: the finish goes in
   * the loop's next claim, unless shutdown began.
   */
  occupy(id: string, executed: Promise<Executed>, ride = false): void {
    const { ctx } = this;
    this.running.add(id);
    const ended = (): void => this.free(id);
    executed.then(ended, ended);
    void this.track(id, executed.then((x) => settle(ctx, x, ride && !ctx.stopping.aborted)));
  }

  private free(id: string): void {
    this.running.delete(id);
    this.wake();
  }

  private wake(): void {
    this.slotFreed?.();
    this.slotFreed = undefined;
  }

  /** What shutdown waits for, as its log lines say it: the commands, and how many give-backs. */
  private inHand(): { commands: string[]; givingBack?: number } {
    const commands = [...this.active.keys()].filter((k) => !k.startsWith(GIVE_BACK));
    const givingBack = this.active.size - commands.length;
    return givingBack > 0 ? { commands, givingBack } : { commands };
  }

  /** Wait for the work in hand; past graceMs abort it, let it report briefly, and return. */
  async drain(graceMs: number): Promise<void> {
    if (this.active.size === 0) return;
    this.ctx.log('finishing work in hand', { ...this.inHand(), graceMs });
    if (await settles(this.active.values(), graceMs)) return;
    this.ctx.log.error('grace period over: aborting work in hand', this.inHand());
    this.ctx.leases.abortAll(new WorkAborted('SHUTDOWN', 'SHUTDOWN: the agent stopped before the command finished'));
    await settles(this.active.values(), REPORT_AFTER_ABORT_MS);
  }
}

/** True if every promise settled within ms. */
async function settles(work: Iterable<Promise<void>>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  const all = Promise.all(work).then(() => true as const);
  const ok = await Promise.race([all, timeout]);
  clearTimeout(timer);
  return ok;
}
