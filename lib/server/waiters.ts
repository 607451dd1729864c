// Long-poll bookkeeping. ClaimWaiters: agents' claims parked until there is
// work. FinalWaiters: clients waiting on one command to reach COMPLETED or
// FAILED.
import type { Claimed, Command, CommandStore } from '../../state/command-store.ts';
import type { CommandType } from '../../state/command-types.ts';

interface ParkedClaim {
  agentId: string;
  max: number;
  /** The types its agent runs; undefined: all. */
  types: ReadonlySet<CommandType> | undefined;
  signal: AbortSignal;
  timer: NodeJS.Timeout;
  /** Claims made for it so far, all in the batch of the first one (`seq`). */
  claims: Array<Promise<Command[]>>;
  count: number;
  seq: number | undefined;
  answer: (cmds: Promise<Command[]>) => void;
}

/**
 * Claims waiting for work. A command that becomes PENDING is claimed for the
 * first parked claim in the very tick its record is queued (offer(), called
 * by the store), so the claim record shares the group commit of the submit
 * (or release, or expiry) that made it PENDING: one fdatasync, not two in a
 * row. Nothing is acknowledged early: the claim is answered, like the submit,
 * once that batch is durable, and the journal holds PENDING before RUNNING.
 * A parked claim keeps taking commands, up to its `max`, while its batch is
 * still open; then the next one takes over.
 */
export class ClaimWaiters {
  private queue: ParkedClaim[] = [];
  private readonly store: CommandStore;

  constructor(store: CommandStore) {
    this.store = store;
    store.onPendingQueued((cmd) => this.offer(cmd));
  }

  /**
   * Claim up to `max` commands for `agentId`; if there are none, wait up to
   * `ms` for some. `watch` is called only if the claim must wait: its signal
   * aborts when the client goes away, and a claim whose client is gone takes
   * nothing more. Only commands of `types` are taken (all when undefined).
   * Resolves once what it claimed is durable.
   */
  claim(agentId: string, max: number, ms: number, watch: () => AbortSignal, types?: ReadonlySet<CommandType>): Promise<Command[]> {
    this.store.refuseIfDiskFull();
    const now = this.store.claimNow(agentId, max, { types });
    if (now) return now.commands;
    if (ms <= 0) return Promise.resolve([]);
    const signal = watch();
    if (signal.aborted) return Promise.resolve([]);
    return new Promise((resolve) => {
      const w: ParkedClaim = {
        agentId,
        max,
        types,
        signal,
        claims: [],
        count: 0,
        seq: undefined,
        answer: resolve,
        // Every command that became PENDING meanwhile was offered: when the
        // wait ends there is nothing to take, but look once more anyway.
        timer: setTimeout(() => this.answer(w, this.store.claimNow(agentId, max, { types })), ms),
      };
      signal.addEventListener('abort', () => this.answer(w), { once: true });
      this.queue.push(w);
    });
  }

  get size(): number {
    return this.queue.length;
  }

  /** `cmd` was queued PENDING: claim it for the first parked claim that can take it. */
  private offer(cmd: Command): void {
    // answer() takes a claim out of the queue, so the next one is then at i.
    for (let i = 0; i < this.queue.length; ) {
      const w = this.queue[i]!;
      if (w.signal.aborted) {
        this.answer(w); // its client went away: the command passes to the next one
        continue;
      }
      if (w.seq !== undefined && !this.store.durable.journal.joinsBatchOf(w.seq)) {
        this.answer(w); // its batch is being written: more would wait for the next one
        continue;
      }
      if (w.types && !w.types.has(cmd.type)) {
        i++; // its agent does not run this type: one further back may
        continue;
      }
      const got = this.store.claimNow(w.agentId, w.max - w.count, { types: w.types });
      if (!got) return; // nothing left to claim: it was taken or canceled meanwhile
      clearTimeout(w.timer); // it has its answer, due when the batch is durable
      w.claims.push(got.commands);
      w.count += got.count;
      w.seq ??= got.seq;
      if (w.count >= w.max) this.answer(w);
      else void got.commands.then(() => this.answer(w), () => this.answer(w));
      return; // the command was claimed
    }
  }

  /** Stop waiting: answer with what was claimed for it, plus `more`. */
  private answer(w: ParkedClaim, more?: Claimed): void {
    const i = this.queue.indexOf(w);
    if (i < 0) return; // answered already
    this.queue.splice(i, 1);
    clearTimeout(w.timer);
    if (more) w.claims.push(more.commands);
    w.answer(Promise.all(w.claims).then((all) => all.flat()));
  }
}

export class FinalWaiters {
  private readonly byId = new Map<string, Set<() => void>>();

  wait(id: string, ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      let set = this.byId.get(id);
      if (!set) this.byId.set(id, (set = new Set()));
      const s = set;
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        s.delete(done);
        if (s.size === 0) this.byId.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      s.add(done);
    });
  }

  /** Whether a client waits on this command. */
  waiting(id: string): boolean {
    return this.byId.has(id);
  }

  wake(id: string): void {
    for (const w of [...(this.byId.get(id) ?? [])]) w();
  }
}
