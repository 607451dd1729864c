// A command as one line of text: the snapshot line (a JSON array, fields at
// fixed positions) and the compact trail of its transitions. The command
// table keeps final commands as these lines and decodes them when read.
import type { CommandState } from './command-types.ts';
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
type Line = [
  id: string, state: CommandState, idemKey: string | null, type: Command['type'], payload: Command['payload'],
  version: number, attempt: number, agentId: string | null, result: unknown, error: string | null,
  cancelRequested: 0 | 1, createdAt: number, updatedAt: number, bodyHash: string | null, trail: string,
];

export function encode(c: Command): string {
  const line: Line = [
    c.id, c.state, c.idemKey, c.type, c.payload, c.version, c.attempt, c.agentId, c.result, c.error,
    c.cancelRequested ? 1 : 0, c.createdAt, c.updatedAt, c.bodyHash, c.trail,
  ];
  return JSON.stringify(line);
}

export function decode(text: string): Command {
  const [id, state, idemKey, type, payload, version, attempt, agentId, result, error, cancelRequested, createdAt, updatedAt, bodyHash, trail] =
    JSON.parse(text) as Line;
  return { id, type, payload, state, version, attempt, agentId, result, error, cancelRequested: cancelRequested === 1, createdAt, updatedAt, idemKey, bodyHash, trail };
}

// --- the trail: every transition, compact ---------------------------------
// Entries joined by ';', each `event,S,dt[,agentId[,lease]]`: S the first
// letter of the state it led to, dt milliseconds since createdAt. A failing
// transition's error is the command's own error, so it is not repeated here.
const STATE_OF: Record<string, CommandState> = { P: 'PENDING', A: 'ASSIGNED', R: 'RUNNING', C: 'COMPLETED', F: 'FAILED' };

export function appendTrail(cmd: Command, ev: CommandEvent): string {
  let entry = `${ev.type},${cmd.state[0]},${ev.at - cmd.createdAt}`;
  if ('agentId' in ev) entry += `,${ev.agentId},${ev.lease}`;
  else if ('lease' in ev) entry += `,,${ev.lease}`;
  return cmd.trail === '' ? entry : `${cmd.trail};${entry}`;
}

export function decodeTrail(cmd: Command): TrailEntry[] {
  if (cmd.trail === '') return [];
  return cmd.trail.split(';').map((text) => {
    const [event, s, dt, agentId, lease] = text.split(',');
    const e: TrailEntry = { event: event as TrailEntry['event'], to: STATE_OF[s!]!, at: cmd.createdAt + Number(dt) };
    if (agentId) e.agentId = agentId;
    if (lease) e.lease = Number(lease);
    if (e.to === 'FAILED' && cmd.error) e.error = cmd.error;
    return e;
  });
}
