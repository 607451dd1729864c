// The command FSM of docs/design.md: the table below is the whole of it, and step()
// is the only function that moves a command. Live transitions and journal
// replay both go through step(), so what was acknowledged is what replays.
import type { CommandOptions, CommandState, CommandType, Outcome, Payload, RetryPolicy } from './command-types.ts';
import { AGENT_LOST, CANCELED, TIMEOUT } from './command-types.ts';

export interface Command {
  id: string;
  type: CommandType;
  payload: Payload;
  state: CommandState;
  /** 1 at submit, bumped by every transition; a journal record names the version it was made from (0: none yet). */
  version: number;
  /** The lease (fencing token) of the latest assignment; 0 before the first claim. */
  attempt: number;
  agentId: string | null;
  result: unknown;
  error: string | null;
  cancelRequested: boolean;
  createdAt: number;
  updatedAt: number;
  idemKey: string | null;
  bodyHash: string | null;
  /** Every transition so far, compact (see command-table.ts); the FSM only carries it. */
  trail: string;
  /** -100..100, higher is handed out first. */
  priority: number;
  /** Not claimable before this (epoch ms); null: at once. */
  runAt: number | null;
  /** null: one execution, never retried (at-most-once). */
  retry: RetryPolicy | null;
  /** A limit on one execution, ms; null: none. */
  timeoutMs: number | null;
  /** The command this one re-runs. */
  retryOf: string | null;
  /** In RETRY_WAIT: when the next attempt becomes claimable (epoch ms). */
  nextAttemptAt: number | null;
  /** Executions begun so far (RUNNING entered); never more than retry.attempts. */
  executions: number;
}

/** The job fields of a command submitted without options (for code that builds commands by hand). */
export const PLAIN_JOB = { priority: 0, runAt: null, retry: null, timeoutMs: null, retryOf: null, nextAttemptAt: null, executions: 0 } as const satisfies Partial<Command>;

/** A failure that may be retried carries the time its retry would be due; the store picks it (backoff + jitter). */
interface MayRetry {
  retryAt?: number;
}

export type CommandEvent =
  | { type: 'submit'; id: string; cmdType: CommandType; payload: Payload; at: number; idemKey?: string; bodyHash?: string; opts?: CommandOptions }
  | { type: 'claim-start'; agentId: string; lease: number; at: number }
  | { type: 'claim'; agentId: string; lease: number; at: number }
  | { type: 'start'; agentId: string; lease: number; at: number }
  | ({ type: 'finish'; agentId: string; lease: number; outcome: Outcome; result: unknown; error: string | null; at: number } & MayRetry)
  | { type: 'release'; agentId: string; lease: number; at: number }
  | ({ type: 'expire'; lease: number; at: number } & MayRetry)
  | { type: 'cancel'; at: number }
  | { type: 'due'; at: number }
  | ({ type: 'timeout'; lease: number; at: number } & MayRetry);

export type EventType = CommandEvent['type'];

/**
 * Which states each event may leave from, and where it may go. Where there is
 * more than one target, the event and the command decide: the first is the
 * plain case, the others are named beside it.
 */
export const TRANSITIONS: Readonly<Record<EventType, Partial<Record<CommandState | 'new', readonly CommandState[]>>>> = {
  submit: { new: ['PENDING', 'SCHEDULED'] }, // SCHEDULED: runAt still ahead
  // Claim-and-start: an agent claims only for slots it fills at once, so one
  // record (one fsync) both leases the command and marks it begun.
  'claim-start': { PENDING: ['RUNNING'] },
  // Journals written before claim-and-start replay through these two; an
  // agent from before it still sends start, answered as a retry.
  claim: { PENDING: ['ASSIGNED'] },
  start: { ASSIGNED: ['RUNNING'] },
  finish: { RUNNING: ['COMPLETED', 'FAILED', 'RETRY_WAIT'] }, // the outcome decides; RETRY_WAIT: failed with attempts left
  // RUNNING: only by the lease holder, whose ledger shows it never began (no
  // `executing`); FAILED (CANCELED) when a cancel was requested meanwhile.
  release: { ASSIGNED: ['PENDING'], RUNNING: ['PENDING', 'FAILED'] },
  expire: { ASSIGNED: ['PENDING'], RUNNING: ['FAILED', 'RETRY_WAIT'] },
  cancel: { SCHEDULED: ['FAILED'], PENDING: ['FAILED'], ASSIGNED: ['FAILED'], RUNNING: ['RUNNING'], RETRY_WAIT: ['FAILED'] }, // RUNNING: flag it, the agent aborts
  due: { SCHEDULED: ['PENDING'], RETRY_WAIT: ['PENDING'] }, // its time came: claimable
  timeout: { RUNNING: ['FAILED', 'RETRY_WAIT'] }, // past its deadline and one lease timeout
};

export type Rejection = {
  kind: 'rejected';
  error: 'NOT_FOUND' | 'EXISTS' | 'WRONG_STATE' | 'STALE_LEASE' | 'WRONG_AGENT' | 'CONFLICT';
  reason: string;
};
/** A retry of a transition that already happened: answer success, write nothing. */
export type Same = { kind: 'same'; cmd: Command };
export type Next = { kind: 'next'; cmd: Command };
export type StepResult = Next | Same | Rejection;

const reject = (error: Rejection['error'], reason: string): Rejection => ({ kind: 'rejected', error, reason });

export function isFinal(state: CommandState): boolean {
  return state === 'COMPLETED' || state === 'FAILED';
}

/** SCHEDULED and RETRY_WAIT: not claimable until dueAt(). */
export function isWaiting(state: CommandState): boolean {
  return state === 'SCHEDULED' || state === 'RETRY_WAIT';
}

/** When a waiting command becomes claimable (epoch ms); undefined if it is not waiting. */
export function dueAt(cmd: Command): number | undefined {
  if (cmd.state === 'SCHEDULED') return cmd.runAt ?? cmd.createdAt;
  if (cmd.state === 'RETRY_WAIT') return cmd.nextAttemptAt ?? cmd.updatedAt;
  return undefined;
}

/** True if a failed execution of cmd, with this error, is followed by another. */
export function retriesAfter(cmd: Command, error: string | null): boolean {
  return cmd.retry !== null && cmd.executions < cmd.retry.attempts && !cmd.cancelRequested && error !== CANCELED;
}

/** The pure transition function: (command or undefined, event) -> next, same, or rejection. */
export function step(cmd: Command | undefined, ev: CommandEvent): StepResult {
  if (ev.type === 'submit') {
    if (cmd) return reject('EXISTS', `command ${cmd.id} already exists`);
    const o = ev.opts ?? {};
    const runAt = o.runAt ?? null;
    return next({
      id: ev.id,
      type: ev.cmdType,
      payload: ev.payload,
      state: runAt !== null && runAt > ev.at ? 'SCHEDULED' : 'PENDING',
      version: 1,
      attempt: 0,
      agentId: null,
      result: null,
      error: null,
      cancelRequested: false,
      createdAt: ev.at,
      updatedAt: ev.at,
      idemKey: ev.idemKey ?? null,
      bodyHash: ev.bodyHash ?? null,
      trail: '',
      priority: o.priority ?? 0,
      runAt,
      retry: o.retry && o.retry.attempts > 1 ? o.retry : null,
      timeoutMs: o.timeoutMs ?? null,
      retryOf: o.retryOf ?? null,
      nextAttemptAt: null,
      executions: 0,
    });
  }
  if (!cmd) return reject('NOT_FOUND', 'no such command');
  const to = TRANSITIONS[ev.type][cmd.state]?.[0];

  switch (ev.type) {
    case 'claim-start':
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}, not PENDING`);
      if (ev.lease !== cmd.attempt + 1) return reject('STALE_LEASE', `lease must be ${cmd.attempt + 1}, got ${ev.lease}`);
      return moved(cmd, ev.at, { state: to, attempt: ev.lease, agentId: ev.agentId });

    case 'claim':
      if (cmd.state === 'ASSIGNED' && cmd.agentId === ev.agentId && cmd.attempt === ev.lease) return same(cmd);
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}, not PENDING`);
      if (ev.lease !== cmd.attempt + 1) return reject('STALE_LEASE', `lease must be ${cmd.attempt + 1}, got ${ev.lease}`);
      return moved(cmd, ev.at, { state: to, attempt: ev.lease, agentId: ev.agentId });

    case 'start': {
      const held = holds(cmd, ev.agentId, ev.lease);
      if (held) return held;
      if (cmd.state === 'RUNNING') return same(cmd);
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}, cannot start`);
      return moved(cmd, ev.at, { state: to });
    }

    case 'finish': {
      const held = holds(cmd, ev.agentId, ev.lease);
      if (held) return held;
      if (isFinal(cmd.state) || cmd.state === 'RETRY_WAIT') {
        // A retry carries the same outcome and error; anything else is news
        // arriving too late (say, after AGENT_LOST), and the record stands.
        const shown = cmd.state === 'RETRY_WAIT' ? 'FAILED' : cmd.state;
        if (shown === ev.outcome && cmd.error === finishError(ev)) return same(cmd);
        return reject('CONFLICT', `command is already ${cmd.state}${cmd.error ? ` (${cmd.error})` : ''}, cannot become ${ev.outcome}${finishError(ev) ? ` (${finishError(ev)})` : ''}`);
      }
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}; start it before finishing it`);
      if (ev.outcome === 'COMPLETED') return moved(cmd, ev.at, { state: 'COMPLETED', result: ev.result, error: null });
      return failed(cmd, ev, finishError(ev), ev.result);
    }

    case 'release': {
      const held = holds(cmd, ev.agentId, ev.lease);
      if (held) return held;
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}; only a command not yet started can be released`);
      if (cmd.cancelRequested) return moved(cmd, ev.at, { state: 'FAILED', error: CANCELED, result: { error: CANCELED } });
      return moved(cmd, ev.at, { state: to, agentId: null });
    }

    case 'expire':
      if (!to || ev.lease !== cmd.attempt) return reject('STALE_LEASE', `lease ${ev.lease} is not live`);
      if (to === 'PENDING') return moved(cmd, ev.at, { state: to, agentId: null });
      return failed(cmd, ev, AGENT_LOST, { error: AGENT_LOST });

    case 'timeout':
      if (!to || ev.lease !== cmd.attempt) return reject('STALE_LEASE', `lease ${ev.lease} is not running`);
      return failed(cmd, ev, TIMEOUT, { error: TIMEOUT });

    case 'cancel':
      if (cmd.state === 'RUNNING') {
        if (cmd.cancelRequested) return same(cmd);
        return moved(cmd, ev.at, { cancelRequested: true });
      }
      if (cmd.state === 'FAILED' && cmd.error === CANCELED) return same(cmd);
      if (!to) return reject('WRONG_STATE', `command is already ${cmd.state}`);
      return moved(cmd, ev.at, { state: to, error: CANCELED, result: { error: CANCELED }, nextAttemptAt: null });

    case 'due': {
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}, not waiting`);
      const due = dueAt(cmd)!;
      if (ev.at < due) return reject('WRONG_STATE', `command is not due until ${new Date(due).toISOString()}`);
      return moved(cmd, ev.at, { state: to, agentId: null, nextAttemptAt: null, result: null, error: null });
    }
  }
}

/** A RUNNING execution failed: wait for the next attempt if one is left, else FAILED for good. */
function failed(cmd: Command, ev: CommandEvent & MayRetry, error: string | null, result: unknown): Next {
  if (!retriesAfter(cmd, error)) return moved(cmd, ev.at, { state: 'FAILED', result, error });
  return moved(cmd, ev.at, { state: 'RETRY_WAIT', result, error, nextAttemptAt: Math.max(ev.at, ev.retryAt ?? ev.at) });
}

function finishError(ev: Extract<CommandEvent, { type: 'finish' }>): string | null {
  return ev.outcome === 'FAILED' ? (ev.error ?? 'FAILED') : null;
}

// A lease check shared by start, finish and release: undefined when the
// caller holds the command's current lease.
function holds(cmd: Command, agentId: string, lease: number): Rejection | undefined {
  if (lease !== cmd.attempt) return reject('STALE_LEASE', `lease ${lease} is stale; the command's current lease is ${cmd.attempt}`);
  if (cmd.agentId === null) return reject('STALE_LEASE', `lease ${lease} was released or expired`);
  if (cmd.agentId !== agentId) return reject('WRONG_AGENT', `lease ${lease} belongs to ${cmd.agentId ?? 'no agent'}, not ${agentId}`);
  return undefined;
}

// Entering RUNNING, by whichever event, is one more execution; going from
// RUNNING straight back to PENDING is a lease given back by an agent that
// never began it (release), so that one is not counted.
function moved(cmd: Command, at: number, change: Partial<Command>): Next {
  const entering = change.state === 'RUNNING' && cmd.state !== 'RUNNING';
  const givenBack = change.state === 'PENDING' && cmd.state === 'RUNNING';
  const executions = cmd.executions + (entering ? 1 : givenBack ? -1 : 0);
  return next(Object.assign(copy(cmd), change, { executions, version: cmd.version + 1, updatedAt: at }));
}

// Every field named, in one order: each command then has the same hidden
// class, which a spread of `cmd` does not promise (replay makes one per record).
function copy(c: Command): Command {
  return {
    id: c.id, type: c.type, payload: c.payload, state: c.state, version: c.version, attempt: c.attempt, agentId: c.agentId,
    result: c.result, error: c.error, cancelRequested: c.cancelRequested, createdAt: c.createdAt, updatedAt: c.updatedAt,
    idemKey: c.idemKey, bodyHash: c.bodyHash, trail: c.trail, priority: c.priority, runAt: c.runAt, retry: c.retry,
    timeoutMs: c.timeoutMs, retryOf: c.retryOf, nextAttemptAt: c.nextAttemptAt, executions: c.executions,
  };
}
function next(cmd: Command): Next {
  return { kind: 'next', cmd };
}
function same(cmd: Command): Same {
  return { kind: 'same', cmd };
}
