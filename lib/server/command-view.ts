// How a stored command is shown on the wire: ASSIGNED shows as PENDING so the
// status a client sees only ever moves forward; SCHEDULED and RETRY_WAIT are
// PENDING too, with the time they wait for beside it.
import type { Command } from '../../state/command-fsm.ts';
import { attemptsOf, decodeTrail, type TrailEntry } from '../../state/command-line.ts';
import type { CommandEventView, CommandState, CommandStatus, CommandView } from '../protocol.ts';

export function shownStatus(state: CommandState): CommandStatus {
  return state === 'ASSIGNED' || state === 'SCHEDULED' || state === 'RETRY_WAIT' ? 'PENDING' : state;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function commandView(cmd: Command): CommandView {
  return {
    id: cmd.id,
    type: cmd.type,
    payload: cmd.payload,
    status: shownStatus(cmd.state),
    state: cmd.state,
    result: cmd.result,
    error: cmd.error,
    agentId: cmd.agentId,
    attempt: cmd.attempt,
    cancelRequested: cmd.cancelRequested,
    createdAt: new Date(cmd.createdAt).toISOString(),
    updatedAt: new Date(cmd.updatedAt).toISOString(),
    priority: cmd.priority,
    runAt: iso(cmd.runAt),
    nextAttemptAt: cmd.state === 'RETRY_WAIT' ? iso(cmd.nextAttemptAt) : null,
    retry: cmd.retry,
    timeoutMs: cmd.timeoutMs,
    retryOf: cmd.retryOf,
    attempts: attemptsOf(decodeTrail(cmd)).map((a) => ({ ...a, startedAt: iso(a.startedAt)!, finishedAt: iso(a.finishedAt) })),
  };
}

export function eventViews(trail: readonly TrailEntry[]): CommandEventView[] {
  let from: CommandState | null = null;
  return trail.map((e, i) => {
    const v: CommandEventView = { seq: i + 1, event: e.event, from, to: e.to, at: new Date(e.at).toISOString() };
    if (e.agentId !== undefined) v.agentId = e.agentId;
    if (e.lease !== undefined) v.lease = e.lease;
    if (e.error !== undefined) v.error = e.error;
    from = e.to;
    return v;
  });
}
