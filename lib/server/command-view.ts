// How a stored command is shown on the wire: ASSIGNED shows as PENDING so the
// status a client sees only ever moves forward.
import type { Command } from '../../state/command-fsm.ts';
import type { TrailEntry } from '../../state/command-table.ts';
import type { CommandEventView, CommandState, CommandStatus, CommandView } from '../protocol.ts';

export function shownStatus(state: CommandState): CommandStatus {
  return state === 'ASSIGNED' ? 'PENDING' : state;
}

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
