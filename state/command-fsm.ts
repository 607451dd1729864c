// The command FSM of docs/design.md: the table below is the whole of it, and step()
// is the only function that moves a command. Live transitions and journal
// replay both go through step(), so what was acknowledged is what replays.
import type { CommandState, CommandType, Outcome, Payload } from './command-types.ts';
import { AGENT_LOST, CANCELED } from './command-types.ts';

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
}

export type CommandEvent =
  | { type: 'submit'; id: string; cmdType: CommandType; payload: Payload; at: number; idemKey?: string; bodyHash?: string }
  | { type: 'claim'; agentId: string; lease: number; at: number }
  | { type: 'start'; agentId: string; lease: number; at: number }
  | { type: 'finish'; agentId: string; lease: number; outcome: Outcome; result: unknown; error: string | null; at: number }
  | { type: 'release'; agentId: string; lease: number; at: number }
  | { type: 'expire'; lease: number; at: number }
  | { type: 'cancel'; at: number };

export type EventType = CommandEvent['type'];

/** Which states each event may leave from, and where it goes. */
export const TRANSITIONS: Readonly<Record<EventType, Partial<Record<CommandState | 'new', CommandState>>>> = {
  submit: { new: 'PENDING' },
  claim: { PENDING: 'ASSIGNED' },
  start: { ASSIGNED: 'RUNNING' },
  finish: { RUNNING: 'COMPLETED' }, // or FAILED: the outcome decides
  release: { ASSIGNED: 'PENDING' },
  expire: { ASSIGNED: 'PENDING', RUNNING: 'FAILED' },
  cancel: { PENDING: 'FAILED', ASSIGNED: 'FAILED', RUNNING: 'RUNNING' }, // RUNNING: flag it, the agent aborts
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

/** The pure transition function: (command or undefined, event) -> next, same, or rejection. */
export function step(cmd: Command | undefined, ev: CommandEvent): StepResult {
  if (ev.type === 'submit') {
    if (cmd) return reject('EXISTS', `command ${cmd.id} already exists`);
    return next({
      id: ev.id,
      type: ev.cmdType,
      payload: ev.payload,
      state: 'PENDING',
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
    });
  }
  if (!cmd) return reject('NOT_FOUND', 'no such command');
  const to = TRANSITIONS[ev.type][cmd.state];

  switch (ev.type) {
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
      if (isFinal(cmd.state)) {
        // A retry carries the same outcome and error; anything else is news
        // arriving too late (say, after AGENT_LOST), and the record stands.
        if (cmd.state === ev.outcome && cmd.error === finishError(ev)) return same(cmd);
        return reject('CONFLICT', `command is already ${cmd.state}${cmd.error ? ` (${cmd.error})` : ''}, cannot become ${ev.outcome}${finishError(ev) ? ` (${finishError(ev)})` : ''}`);
      }
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}; start it before finishing it`);
      return moved(cmd, ev.at, { state: ev.outcome, result: ev.result, error: finishError(ev) });
    }

    case 'release': {
      const held = holds(cmd, ev.agentId, ev.lease);
      if (held) return held;
      if (!to) return reject('WRONG_STATE', `command is ${cmd.state}; only a command not yet started can be released`);
      return moved(cmd, ev.at, { state: to, agentId: null });
    }

    case 'expire':
      if (!to || ev.lease !== cmd.attempt) return reject('STALE_LEASE', `lease ${ev.lease} is not live`);
      if (to === 'PENDING') return moved(cmd, ev.at, { state: to, agentId: null });
      return moved(cmd, ev.at, { state: to, error: AGENT_LOST, result: { error: AGENT_LOST } });

    case 'cancel':
      if (cmd.state === 'RUNNING') {
        if (cmd.cancelRequested) return same(cmd);
        return moved(cmd, ev.at, { cancelRequested: true });
      }
      if (cmd.state === 'FAILED' && cmd.error === CANCELED) return same(cmd);
      if (!to) return reject('WRONG_STATE', `command is already ${cmd.state}`);
      return moved(cmd, ev.at, { state: to, error: CANCELED, result: { error: CANCELED } });
  }
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

function moved(cmd: Command, at: number, change: Partial<Command>): Next {
  return next({ ...cmd, ...change, version: cmd.version + 1, updatedAt: at });
}
function next(cmd: Command): Next {
  return { kind: 'next', cmd };
}
function same(cmd: Command): Same {
  return { kind: 'same', cmd };
}
