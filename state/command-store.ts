// The server's command store: every state change of a command goes through
// transition() here, which runs the FSM, journals the record and resolves once
// it is durable. Reads see only acknowledged state: they wait for the
// in-flight group commit (readBarrier) before looking.
import { randomUUID } from 'node:crypto';
import type { CommandType, Outcome, Payload } from '../lib/protocol.ts';
import { step, type Command, type CommandEvent, type EventType, type StepResult } from './command-fsm.ts';
import { CommandTable, type CommandRecord } from './command-table.ts';
import { DurableMachine, type DurableOptions } from './durable-machine.ts';

export type { Command } from './command-fsm.ts';

export type ChangeListener = (cmd: Command, event: EventType) => void;

export interface SubmitInput {
  type: CommandType;
  payload: Payload;
  idemKey?: string;
  bodyHash?: string;
}

export type SubmitResult =
  | { kind: 'created' | 'existing'; id: string }
  | { kind: 'conflict'; id: string; reason: string };

export class CommandStore {
  readonly table: CommandTable;
  readonly durable: DurableMachine<CommandRecord>;
  private readonly listeners = new Set<ChangeListener>();
  private readonly now: () => number;

  private constructor(table: CommandTable, durable: DurableMachine<CommandRecord>, now: () => number) {
    this.table = table;
    this.durable = durable;
    this.now = now;
  }

  static async open(dir: string, opts: DurableOptions & { now?: () => number } = {}): Promise<CommandStore> {
    const table = new CommandTable();
    const durable = await DurableMachine.open(dir, table, { role: 'server', ...opts });
    table.resetPendingQueue();
    return new CommandStore(table, durable, opts.now ?? Date.now);
  }

  /** Called after every durable transition (for long-poll waiters and claim wakeups). */
  onChange(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get(id: string): Command | undefined {
    return this.table.get(id);
  }

  /** Resolves once every transition made so far is durable. */
  readBarrier(): Promise<void> {
    return this.durable.sync();
  }

  async submit(input: SubmitInput): Promise<SubmitResult> {
    if (input.idemKey !== undefined) {
      const id = this.table.byIdemKey.get(input.idemKey);
      if (id !== undefined) {
        await this.readBarrier();
        const cmd = this.get(id)!;
        if (cmd.bodyHash !== (input.bodyHash ?? null)) {
          return { kind: 'conflict', id, reason: 'this Idempotency-Key was used with a different body' };
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
    await this.transition(id, ev);
    return { kind: 'created', id };
  }

  /**
   * Hand an agent up to `max` commands: first those it already holds ASSIGNED
   * (a retried claim gets the same lease back), then PENDING ones in FIFO order.
   */
  async claim(agentId: string, max: number): Promise<Command[]> {
    const out: Command[] = [];
    for (const id of this.table.heldBy.get(agentId) ?? []) {
      const cmd = this.get(id)!;
      if (cmd.state === 'ASSIGNED' && out.length < max) out.push(cmd);
    }
    const recs: CommandRecord[] = [];
    while (out.length + recs.length < max) {
      const id = this.table.pending.shift();
      if (id === undefined) break;
      const cmd = this.get(id)!;
      if (cmd.state !== 'PENDING') continue; // canceled since it was queued
      recs.push(this.record(cmd, { type: 'claim', agentId, lease: cmd.attempt + 1, at: this.now() }));
    }
    const claimed = recs.length > 0 ? await this.commit(recs) : [];
    if (out.length > 0 && claimed.length === 0) await this.readBarrier();
    return [...out, ...claimed];
  }

  start(agentId: string, id: string, lease: number): Promise<StepResult> {
    return this.transition(id, { type: 'start', agentId, lease, at: this.now() });
  }

  finish(agentId: string, id: string, lease: number, outcome: Outcome, result: unknown, error: string | null): Promise<StepResult> {
    return this.transition(id, { type: 'finish', agentId, lease, outcome, result, error, at: this.now() });
  }

  release(agentId: string, id: string, lease: number): Promise<StepResult> {
    return this.transition(id, { type: 'release', agentId, lease, at: this.now() });
  }

  expire(id: string, lease: number): Promise<StepResult> {
    return this.transition(id, { type: 'expire', lease, at: this.now() });
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

  private record(cur: Command | undefined, ev: CommandEvent, id = cur!.id): CommandRecord {
    return { id, from: cur ? cur.state : null, version: cur ? cur.version : 0, ev };
  }

  /** Commit records; resolves with each command as that record left it. */
  private async commit(recs: CommandRecord[]): Promise<Command[]> {
    const done = this.durable.commit(recs);
    const cmds = recs.map((r) => this.get(r.id)!);
    await done;
    cmds.forEach((cmd, i) => {
      for (const fn of this.listeners) fn(cmd, recs[i]!.ev.type);
    });
    return cmds;
  }
}
