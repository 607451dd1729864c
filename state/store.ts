// What the server asks of a command store, whichever holds the commands: the
// file store (state/command-store.ts: journal and snapshots in a directory)
// or the PostgreSQL store (state/pg/). Routes, leases, waiters and metrics
// talk to this interface only; each store keeps its own way of being durable.
// Every method answers about acknowledged state: what it returns is durable.
import type { Command, EventType, StepResult } from './command-fsm.ts';
import type { TrailEntry } from './command-line.ts';
import type { CommandOptions, CommandState, CommandType, Outcome, Payload } from './command-types.ts';

/** `seq` orders transitions for event streams: the journal seq, or the events table's id. */
export type ChangeListener = (cmd: Command, event: EventType, seq: number) => void;

export interface SubmitInput {
  type: CommandType;
  payload: Payload;
  idemKey?: string;
  bodyHash?: string;
  opts?: CommandOptions;
}

export type SubmitResult =
  | { kind: 'created' | 'existing'; id: string }
  | { kind: 'conflict'; id: string; reason: string };

export type BatchSubmitResult =
  | { kind: 'done'; ids: string[]; created: number }
  /** Nothing was written: item `index` reuses an idempotency key with another body. */
  | { kind: 'conflict'; index: number; id: string; reason: string };

export const KEY_CONFLICT = 'this Idempotency-Key was used with a different body';

export interface ClaimOptions {
  /** Take only commands of these types (all when absent). */
  types?: ReadonlySet<CommandType>;
}

/** GET /commands: newest first, filtered by shown status (matched by the caller's `states`) and type. */
export interface ListQuery {
  /** Internal states that match the status asked for; undefined: all. */
  states?: ReadonlySet<CommandState>;
  type?: CommandType;
  limit: number;
  /** An opaque cursor this store handed out; undefined: from the newest. */
  cursor?: string;
}
export type ListPage = { commands: Command[]; nextCursor: string | null } | { badCursor: true };

export interface StoreCounts {
  byState: Readonly<Record<CommandState, number>>;
  pendingByType: Readonly<Record<CommandType, number>>;
  /** Final commands retention forgot since start. */
  forgotten: number;
  /** Transitions applied since start (replayed ones included, for the file store). */
  transitions: number;
}

export interface Store {
  readonly kind: 'file' | 'postgres';
  /** The seq of the last transition: event streams resume after it. */
  readonly lastSeq: number;
  submit(input: SubmitInput): Promise<SubmitResult>;
  /** All or none; an item whose key is known (before or earlier in the batch) gets that command's id. */
  submitMany(inputs: readonly SubmitInput[]): Promise<BatchSubmitResult>;
  /** Whether some command holds this idempotency key (a submit with it adds nothing). */
  knowsKey(key: string): Promise<boolean>;
  /** A command as acknowledged; undefined if it never was, or was forgotten. */
  read(id: string): Promise<Command | undefined>;
  list(q: ListQuery): Promise<ListPage>;
  /** Every transition of one command, oldest first. */
  trail(id: string): Promise<TrailEntry[] | undefined>;
  /** agentId -> ids it holds (RUNNING, or ASSIGNED from before claim-and-start). */
  heldBy(): Promise<ReadonlyMap<string, ReadonlySet<string>>>;
  counts(): Promise<StoreCounts>;
  /**
   * backlog() of the store's counts, for a store that holds them in memory:
   * a submit checks it without a promise. Absent: counts() says.
   */
  backlogNow?(): number;
  /** From agents of protocol 1: a command its claim started answers as a retry. */
  start(agentId: string, id: string, lease: number): Promise<StepResult>;
  finish(agentId: string, id: string, lease: number, outcome: Outcome, result: unknown, error: string | null): Promise<StepResult>;
  release(agentId: string, id: string, lease: number): Promise<StepResult>;
  expire(id: string, lease: number): Promise<StepResult>;
  timeout(id: string, lease: number): Promise<StepResult>;
  cancel(id: string): Promise<StepResult>;
  /** Resolves once every transition made so far is durable. */
  readBarrier(): Promise<void>;
  /** Called after every durable transition this server made, in seq order. */
  onChange(fn: ChangeListener): () => void;
  /** Throws (DiskFullError, StoreUnavailableError) while writes cannot be made: for requests that would write. */
  refuseIfUnavailable(): void;
  /** Why the store takes no work now (for /readyz); undefined when it does. */
  readonly unavailable: string | undefined;
  /** A write failure after which memory may disagree with what is durable: the process must restart. */
  readonly broken: Error | undefined;
  close(): Promise<void>;
}

/** A request refused because the store cannot be reached now: 503, retry later. */
export class StoreUnavailableError extends Error {
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs = 1000) {
    super(message);
    this.name = 'StoreUnavailableError';
    this.retryAfterMs = retryAfterMs;
  }
}

/** What --max-pending counts: commands shown PENDING (PENDING, SCHEDULED and RETRY_WAIT), a backlog that holds memory. */
export function backlog(byState: Readonly<Record<CommandState, number>>): number {
  return byState.PENDING + byState.SCHEDULED + byState.RETRY_WAIT;
}
