// A command as one line of text: the snapshot line (a JSON array, fields at
// fixed positions) and the compact trail of its transitions. The command
// table keeps final commands as these lines and decodes them when read.
import type { CommandState, RetryPolicy } from './command-types.ts';
import type { Command, CommandEvent } from './command-fsm.ts';

/** One transition of a command's trail, decoded for GET /commands/:id/events. */
export interface TrailEntry {
  event: CommandEvent['type'];
  to: CommandState;
  at: number;
  agentId?: string;
  lease?: number;
  error?: string;
}

// --- the snapshot line of a command ------------------------------------------
// A JSON array, positions fixed: id and state first so a loader can file a final
// command by reading only its first two fields.
// The job options (runAt .. priority) came after the first fifteen; a line
// without them is a command with none. `priority` must stay the last field: a
// restart reads it off the bytes of a PENDING line it does not decode.
type Line = [
  id: string, state: CommandState, idemKey: string | null, type: Command['type'], payload: Command['payload'],
  version: number, attempt: number, agentId: string | null, result: unknown, error: string | null,
  cancelRequested: 0 | 1, createdAt: number, updatedAt: number, bodyHash: string | null, trail: string,
  runAt?: number | null, retry?: RetryLine | null, timeoutMs?: number | null, retryOf?: string | null,
  nextAttemptAt?: number | null, executions?: number, priority?: number,
];
type RetryLine = [attempts: number, backoff: RetryPolicy['backoff'], delayMs: number, maxDelayMs: number];

export function encode(c: Command): string {
  const line: Line = [
    c.id, c.state, c.idemKey, c.type, c.payload, c.version, c.attempt, c.agentId, c.result, c.error,
    c.cancelRequested ? 1 : 0, c.createdAt, c.updatedAt, c.bodyHash, c.trail,
    c.runAt, c.retry && [c.retry.attempts, c.retry.backoff, c.retry.delayMs, c.retry.maxDelayMs], c.timeoutMs, c.retryOf,
    c.nextAttemptAt, c.executions, c.priority,
  ];
  return JSON.stringify(line);
}

export function decode(text: string): Command {
  const [
    id, state, idemKey, type, payload, version, attempt, agentId, result, error, cancelRequested, createdAt, updatedAt, bodyHash, trail,
    runAt = null, retry = null, timeoutMs = null, retryOf = null, nextAttemptAt = null, executions, priority = 0,
  ] = JSON.parse(text) as Line;
  return {
    // The fields in the order step() and copy() make them (one hidden class).
    id, type, payload, state, version, attempt, agentId, result, error, cancelRequested: cancelRequested === 1, createdAt, updatedAt, idemKey, bodyHash, trail,
    priority, runAt, retry: retry && { attempts: retry[0], backoff: retry[1], delayMs: retry[2], maxDelayMs: retry[3] }, timeoutMs, retryOf, nextAttemptAt,
    // A line from before the count: every start so far was an execution.
    executions: executions ?? countStarts(trail),
  };
}

function countStarts(trail: string): number {
  return trail === '' ? 0 : trail.split(';').filter((e) => e.startsWith('start,')).length;
}

// --- the trail: every transition, compact ---------------------------------
// Entries joined by ';', each `event,S,dt[,agentId[,lease[,error]]]`: S the
// letter of the state it led to, dt milliseconds since createdAt. A
// transition to FAILED has the command's own error, so it is not repeated
// here; one to RETRY_WAIT keeps its attempt's error (URI-encoded), which the
// command's own error no longer holds once the next attempt begins.
const LETTER: Record<CommandState, string> = { SCHEDULED: 'S', PENDING: 'P', ASSIGNED: 'A', RUNNING: 'R', RETRY_WAIT: 'W', COMPLETED: 'C', FAILED: 'F' };
const STATE_OF: Record<string, CommandState> = Object.fromEntries(Object.entries(LETTER).map(([s, l]) => [l, s as CommandState]));

export function appendTrail(cmd: Command, ev: CommandEvent): string {
  let entry = `${ev.type},${LETTER[cmd.state]},${ev.at - cmd.createdAt}`;
  if ('agentId' in ev) entry += `,${ev.agentId},${ev.lease}`;
  else if ('lease' in ev) entry += `,,${ev.lease}`;
  if (cmd.state === 'RETRY_WAIT') entry += `,${encodeURIComponent(cmd.error ?? '')}`;
  return cmd.trail === '' ? entry : `${cmd.trail};${entry}`;
}

export function decodeTrail(cmd: Command): TrailEntry[] {
  if (cmd.trail === '') return [];
  return cmd.trail.split(';').map((text) => {
    const [event, s, dt, agentId, lease, error] = text.split(',');
    const e: TrailEntry = { event: event as TrailEntry['event'], to: STATE_OF[s!]!, at: cmd.createdAt + Number(dt) };
    if (agentId) e.agentId = agentId;
    if (lease) e.lease = Number(lease);
    if (e.to === 'FAILED' && cmd.error) e.error = cmd.error;
    if (e.to === 'RETRY_WAIT' && error) e.error = decodeURIComponent(error);
    return e;
  });
}

/** One execution of a command, as GET /commands/:id shows it. */
export interface AttemptEntry {
  number: number;
  agentId: string | null;
  startedAt: number;
  finishedAt: number | null;
  outcome: 'COMPLETED' | 'FAILED' | null;
  error: string | null;
}

/**
 * The executions in a trail: each begins where the command enters RUNNING and
 * ends where it leaves. One that goes straight back to PENDING was given back
 * unbegun (release): not an execution.
 */
export function attemptsOf(trail: readonly TrailEntry[]): AttemptEntry[] {
  const out: AttemptEntry[] = [];
  let open: AttemptEntry | undefined;
  let prev: CommandState | undefined;
  for (const e of trail) {
    if (e.to === 'RUNNING' && prev !== 'RUNNING') {
      open = { number: out.length + 1, agentId: e.agentId ?? null, startedAt: e.at, finishedAt: null, outcome: null, error: null };
      out.push(open);
    } else if (open && e.to === 'PENDING') {
      out.pop();
      open = undefined;
    } else if (open && e.to !== 'RUNNING') {
      open.finishedAt = e.at;
      open.outcome = e.to === 'COMPLETED' ? 'COMPLETED' : 'FAILED';
      open.error = e.error ?? null;
      open = undefined;
    }
    prev = e.to;
  }
  return out;
}
