// The server's command store: every state change of a command goes through
// transition() here, which runs the FSM, journals the record and resolves once
// it is durable. Reads see only acknowledged state: they wait for the
// in-flight group commit (readBarrier) before looking.
// A command that becomes PENDING is announced the moment its record is queued
// (onPendingQueued), so a parked claim can take it into the same group commit.
// Retention (state/retention.ts) forgets the oldest final commands in the same
// group commit as the transitions that take the count past its bound.
import { randomUUID } from 'node:crypto';
import type { Outcome } from './command-types.ts';
import { dueAt, isWaiting, step, type Command, type CommandEvent, type StepResult } from './command-fsm.ts';
import { CommandTable, type CommandRecord, type TableRecord } from './command-table.ts';
import { crashPoint } from './crash-points.ts';
import { DiskFullError } from './disk-full.ts';
import { DurableMachine, type DurableOptions } from './durable-machine.ts';
import { recordsToForget, type RetentionPolicy } from './retention.ts';
import { retryAt } from './retry-backoff.ts';
import type { TrailEntry } from './command-line.ts';
import { backlog, KEY_CONFLICT, type BatchSubmitResult, type ChangeListener, type ClaimOptions, type ListPage, type ListQuery, type Store, type StoreCounts, type SubmitInput, type SubmitResult } from './store.ts';

export type { Command } from './command-fsm.ts';
export type { BatchSubmitResult, ChangeListener, ClaimOptions, SubmitInput, SubmitResult } from './store.ts';

/** Commands handed to an agent by claimNow(). */
export interface Claimed {
  /** Resolves once the claim records, and the state the held ones rest on, are durable. */
  commands: Promise<Command[]>;
  /** How many commands `commands` holds. */
  count: number;
  /** The journal seq of the last claim record queued. */
  seq: number;
}

export class CommandStore implements Store {
  readonly kind = 'file';
  readonly table: CommandTable;
  readonly durable: DurableMachine<TableRecord>;
  /** Undefined: every command is kept. */
  readonly retention: RetentionPolicy | undefined;
  private readonly listeners = new Set<ChangeListener>();
  private readonly pendingListeners = new Set<(cmd: Command) => void>();
  private readonly now: () => number;
  private readonly random: () => number;

  private constructor(table: CommandTable, durable: DurableMachine<TableRecord>, now: () => number, random: () => number, retention: RetentionPolicy | undefined) {
    this.table = table;
    this.durable = durable;
    this.now = now;
    this.random = random;
    this.retention = retention;
  }

  /** `now` is wall time (due times cross restarts); `random` draws retry jitter. */
  static async open(dir: string, opts: DurableOptions & { now?: () => number; random?: () => number; retention?: RetentionPolicy } = {}): Promise<CommandStore> {
    const table = new CommandTable();
    const durable = await DurableMachine.open(dir, table, { role: 'server', refuseWhenDiskFull: true, ...opts });
    table.resetPendingQueue();
    const store = new CommandStore(table, durable, opts.now ?? Date.now, opts.random ?? Math.random, opts.retention);
    // Bounds lowered since the last run apply at once.
    await store.forgetExpired();
    return store;
  }

  /**
   * Forget the final commands past the retention bounds now; resolves once
   * that is durable. Transitions call it for the count bound; the server
   * calls it on a timer for the age bound.
   */
  forgetExpired(): Promise<void> {
    if (this.retention === undefined) return Promise.resolve();
    const recs = recordsToForget(this.table, this.retention, this.now());
    if (recs.length === 0) return Promise.resolve();
    const done = this.durable.commit(recs);
    crashPoint('retention:forgotten'); // gone from memory, not yet durable
    return done;
  }

  /**
   * Called after every durable transition (for long-poll waiters, claim
   * wakeups and event streams), in journal order.
   */
  onChange(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Called synchronously when a record that leaves a command PENDING is
   * queued: applied in memory, not yet durable. Claim records made from here
   * join the same group commit (the journal flushes on the next tick) and
   * come after it in the journal.
   */
  onPendingQueued(fn: (cmd: Command) => void): () => void {
    this.pendingListeners.add(fn);
    return () => this.pendingListeners.delete(fn);
  }

  get(id: string): Command | undefined {
    return this.table.get(id);
  }

  /**
   * Resolves once every transition made so far is durable. On a full disk at
   * once: reads go on, and the one group commit that met the full disk (its
   * requests still unanswered, waiting for space) is visible before it is
   * durable; a crash before space returns loses it, as it would any
   * unacknowledged request.
   */
  readBarrier(): Promise<void> {
    if (this.durable.journal.diskFull) return Promise.resolve();
    return this.durable.sync();
  }

  /** The ENOSPC that makes every transition refused, while the disk is full. */
  get diskFull(): Error | undefined {
    return this.durable.journal.diskFull;
  }

  /** Resolves once the disk is not (or no longer) full. */
  whenSpace(): Promise<void> {
    return this.durable.journal.whenSpace();
  }

  /** Throws DiskFullError while the disk is full: for requests that would journal something. */
  refuseIfDiskFull(): void {
    const full = this.durable.journal.diskFull;
    if (full) throw new DiskFullError(this.durable.dir, full);
  }

  async submit(input: SubmitInput): Promise<SubmitResult> {
    if (input.idemKey !== undefined) {
      const id = this.table.byIdemKey.get(input.idemKey);
      if (id !== undefined) {
        await this.readBarrier();
        const cmd = this.get(id)!;
        if (cmd.bodyHash !== (input.bodyHash ?? null)) {
          return { kind: 'conflict', id, reason: KEY_CONFLICT };
        }
        return { kind: 'existing', id };
      }
    }
    const id = randomUUID();
    const ev: CommandEvent = { type: 'submit', id, cmdType: input.type, payload: input.payload, at: this.now() };
    if (input.idemKey !== undefined) {
      ev.idemKey = input.idemKey;
      ev.bodyHash = input.bodyHash;
    }
    if (input.opts && hasFields(input.opts)) ev.opts = input.opts;
    // A fresh id: the FSM's answer is `next`, and apply() runs it anyway.
    await this.commit([{ id, from: null, version: 0, ev }]);
    return { kind: 'created', id };
  }

  /**
   * Submit many commands in one group commit, all or none: a key conflict in
   * any item refuses the whole batch before anything is written. An item
   * whose idempotency key is already known (before or earlier in this batch)
   * gets that command's id. Resolves once every id answered is durable.
   */
  async submitMany(inputs: readonly SubmitInput[]): Promise<BatchSubmitResult> {
    const ids: string[] = [];
    const recs: CommandRecord[] = [];
    const keyed = new Map<string, { id: string; bodyHash: string | null }>();
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i]!;
      const key = input.idemKey;
      if (key !== undefined) {
        let seen = keyed.get(key);
        if (seen === undefined) {
          const id = this.table.byIdemKey.get(key);
          if (id !== undefined) seen = { id, bodyHash: this.get(id)!.bodyHash };
        }
        if (seen !== undefined) {
          if (seen.bodyHash !== (input.bodyHash ?? null)) {
            // The command that holds the key may still be in flight: answer
            // about it only once it is durable, as a single submit does.
            await this.readBarrier();
            return { kind: 'conflict', index: i, id: seen.id, reason: KEY_CONFLICT };
          }
          ids.push(seen.id);
          continue;
        }
      }
      const id = randomUUID();
      const ev: CommandEvent = { type: 'submit', id, cmdType: input.type, payload: input.payload, at: this.now() };
      if (key !== undefined) {
        ev.idemKey = key;
        ev.bodyHash = input.bodyHash;
        keyed.set(key, { id, bodyHash: input.bodyHash ?? null });
      }
      if (input.opts && hasFields(input.opts)) ev.opts = input.opts;
      recs.push({ id, from: null, version: 0, ev });
      ids.push(id);
    }
    // Records are durable in journal order: once these are, so is every
    // earlier command an item was matched to by its key.
    if (recs.length > 0) await this.commit(recs);
    else await this.readBarrier();
    return { kind: 'done', ids, created: recs.length };
  }

  /**
   * Hand an agent up to `max` PENDING commands in claim order (highest
   * priority first, first in first out within one), straight into RUNNING
   * (claim-and-start): the agent claims only for slots it fills at once.
   */
  async claim(agentId: string, max: number, opts: ClaimOptions = {}): Promise<Command[]> {
    return (await this.claimNow(agentId, max, opts)?.commands) ?? [];
  }

  /**
   * claim(), with its records queued before this returns (so they join the
   * group commit of whatever is queued in this tick). Undefined if there is
   * nothing to hand out.
   */
  claimNow(agentId: string, max: number, opts: ClaimOptions = {}): Claimed | undefined {
    // On a full disk a claim record would be refused: hand out nothing, and
    // leave the PENDING queue as it is.
    if (this.durable.journal.diskFull) return undefined;
    const recs: CommandRecord[] = [];
    while (recs.length < max) {
      const id = this.table.pending.shift(opts.types);
      if (id === undefined) break;
      const cmd = this.get(id);
      if (cmd?.state !== 'PENDING') continue; // canceled since it was queued (and maybe forgotten)
      recs.push(this.record(cmd, { type: 'claim-start', agentId, lease: cmd.attempt + 1, at: this.now() }));
    }
    if (recs.length === 0) return undefined;
    const commands = this.commit(recs);
    return { commands, count: recs.length, seq: this.durable.journal.lastSeq };
  }

  get lastSeq(): number {
    return this.durable.journal.lastSeq;
  }

  async knowsKey(key: string): Promise<boolean> {
    return this.table.byIdemKey.has(key);
  }

  async read(id: string): Promise<Command | undefined> {
    await this.readBarrier();
    return this.get(id);
  }

  /** The cursor is an ordinal of the submission order: retention's removals do not move it. */
  async list(q: ListQuery): Promise<ListPage> {
    await this.readBarrier();
    const order = this.table.order;
    let end = order.end;
    if (q.cursor !== undefined) {
      if (!/^\d+$/.test(q.cursor) || Number(q.cursor) > order.end) return { badCursor: true };
      end = Number(q.cursor);
    }
    const commands: Command[] = [];
    let i = order.indexBelow(end);
    for (; i >= 0 && commands.length < q.limit; i--) {
      const id = order.at(i); // undefined, or a state of undefined: forgotten by retention
      const state = id === undefined ? undefined : this.table.stateOf(id);
      if (id === undefined || state === undefined || (q.states !== undefined && !q.states.has(state))) continue;
      const cmd = this.get(id)!;
      if (q.type === undefined || cmd.type === q.type) commands.push(cmd);
    }
    return { commands, nextCursor: i >= 0 ? String(order.ordinalAt(i) + 1) : null };
  }

  async trail(id: string): Promise<TrailEntry[] | undefined> {
    await this.readBarrier();
    return this.table.trail(id);
  }

  async heldBy(): Promise<ReadonlyMap<string, ReadonlySet<string>>> {
    await this.readBarrier();
    return this.table.heldBy;
  }

  async counts(): Promise<StoreCounts> {
    const t = this.table;
    return { byState: t.countByState, pendingByType: t.pendingByType, forgotten: t.forgotten, transitions: t.transitions };
  }

  backlogNow(): number {
    return backlog(this.table.countByState);
  }

  refuseIfUnavailable(): void {
    this.refuseIfDiskFull();
  }

  get unavailable(): string | undefined {
    return this.diskFull ? 'disk full' : undefined;
  }

  get broken(): Error | undefined {
    return this.durable.journal.broken;
  }

  /** From an agent of before claim-and-start: answered as a retry for a command its claim started. */
  start(agentId: string, id: string, lease: number): Promise<StepResult> {
    return this.transition(id, { type: 'start', agentId, lease, at: this.now() });
  }

  finish(agentId: string, id: string, lease: number, outcome: Outcome, result: unknown, error: string | null): Promise<StepResult> {
    return this.transition(id, this.mayRetry(id, { type: 'finish', agentId, lease, outcome, result, error, at: this.now() }));
  }

  release(agentId: string, id: string, lease: number): Promise<StepResult> {
    return this.transition(id, { type: 'release', agentId, lease, at: this.now() });
  }

  expire(id: string, lease: number): Promise<StepResult> {
    return this.transition(id, this.mayRetry(id, { type: 'expire', lease, at: this.now() }));
  }

  /** A RUNNING attempt ran past its timeout (plus one lease timeout): fail it, or retry it. */
  timeout(id: string, lease: number): Promise<StepResult> {
    return this.transition(id, this.mayRetry(id, { type: 'timeout', lease, at: this.now() }));
  }

  /**
   * Move waiting commands whose time has come to PENDING, in due-time order,
   * in one group commit: at most `max`, so a backlog that falls due at once
   * goes in batches between requests. Resolves with how many moved.
   */
  async promoteDue(max = 1000): Promise<number> {
    // Before anything leaves the due queue: a refused commit would lose it from there.
    this.refuseIfDiskFull();
    const now = this.now();
    const recs: CommandRecord[] = [];
    for (let top = this.table.due.peekAt(); top !== undefined && top <= now && recs.length < max; top = this.table.due.peekAt()) {
      const { id, at } = this.table.due.pop()!;
      const cmd = this.get(id);
      // Skipped: canceled since, or waiting again for a later time (queued anew then).
      if (!cmd || !isWaiting(cmd.state) || dueAt(cmd) !== at) continue;
      recs.push(this.record(cmd, { type: 'due', at: now }));
    }
    if (recs.length === 0) return 0;
    crashPoint('server:due');
    await this.commit(recs);
    crashPoint('server:due-synced');
    return recs.length;
  }

  cancel(id: string): Promise<StepResult> {
    return this.transition(id, { type: 'cancel', at: this.now() });
  }

  /** Run one event through the FSM; journal it if it moves the command. */
  async transition(id: string, ev: CommandEvent): Promise<StepResult> {
    const cur = this.get(id);
    const r = step(cur, ev);
    if (r.kind === 'next') return { kind: 'next', cmd: (await this.commit([this.record(cur, ev, id)]))[0]! };
    // Same or rejected, the answer rests on state that may still be in flight:
    // it goes out only once that state is durable.
    await this.readBarrier();
    return r;
  }

  async close(): Promise<void> {
    await this.durable.close();
  }

  /** A failure of a command that may be retried carries when the retry is due (backoff with jitter, drawn here). */
  private mayRetry<E extends Extract<CommandEvent, { retryAt?: number }>>(id: string, ev: E): E {
    const cmd = this.get(id);
    if (cmd?.retry && cmd.state === 'RUNNING') ev.retryAt = retryAt(cmd.retry, cmd.executions, ev.at, this.random);
    return ev;
  }

  private record(cur: Command | undefined, ev: CommandEvent, id = cur!.id): CommandRecord {
    return { id, from: cur ? cur.state : null, version: cur ? cur.version : 0, ev };
  }

  /** Commit records; resolves with each command as that record left it. */
  private async commit(recs: CommandRecord[]): Promise<Command[]> {
    // append() numbers the records in order, in this very call.
    const firstSeq = this.durable.journal.lastSeq + 1;
    const done = this.durable.commit(recs);
    const cmds: Command[] = [];
    for (const r of recs) cmds.push(this.get(r.id)!);
    // Past --retain-max: the oldest final commands go in this same group commit.
    if (this.retention !== undefined && this.table.finalCount > this.retention.max) void this.forgetExpired().catch(() => {});
    // A record that was applied and left its command PENDING: announce it
    // now, while claims can still join its batch. (Commands are replaced on
    // every transition, never mutated: `cmds` keeps what these records made.)
    for (let i = 0; i < cmds.length && this.pendingListeners.size > 0; i++) {
      const cmd = cmds[i];
      if (cmd?.state !== 'PENDING' || cmd.version !== recs[i]!.version + 1) continue; // not applied, or not PENDING
      for (const fn of this.pendingListeners) fn(cmd);
    }
    await done;
    for (let i = 0; i < cmds.length; i++) {
      for (const fn of this.listeners) fn(cmds[i]!, recs[i]!.ev.type, firstSeq + i);
    }
    return cmds;
  }
}

/** Whether an options object sets anything (without building its key list). */
function hasFields(o: object): boolean {
  for (const _ in o) return true;
  return false;
}
