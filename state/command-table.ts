// The server's table of commands as a Machine: the in-memory indexes
// (by id, by idempotency key, by agent, the FIFO of PENDING ids) and how one
// journal record moves it. Replay and live transitions both come through apply().
//
// A final command never changes again, so it is kept as its snapshot line (a
// string) and decoded only when read: a million finished commands cost about
// their line each, and a restart loads them without parsing them.
import type { CommandState } from '../lib/protocol.ts';
import { isFinal, step, type Command, type CommandEvent } from './command-fsm.ts';
import type { Machine } from './durable-machine.ts';

/** One journal record: the event and the state and version it was made from (CAS). */
export interface CommandRecord {
  id: string;
  from: CommandState | null;
  version: number;
  ev: CommandEvent;
}

/** One transition of a command's trail, decoded for GET /commands/:id/events. */
export interface TrailEntry {
  event: CommandEvent['type'];
  to: CommandState;
  at: number;
  agentId?: string;
  lease?: number;
  error?: string;
}

/** A FIFO of ids with O(1) push and shift; ids that stopped being PENDING are skipped by readers. */
class IdQueue {
  private items: string[] = [];
  private head = 0;
  push(id: string): void {
    this.items.push(id);
  }
  shift(): string | undefined {
    if (this.head >= this.items.length) return undefined;
    const id = this.items[this.head++];
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return id;
  }
  get length(): number {
    return this.items.length - this.head;
  }
  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

export class CommandTable implements Machine<CommandRecord> {
  readonly name = 'commands';
  /** Commands not yet final, in the order they were first seen. */
  private readonly live = new Map<string, Command>();
  /** Final commands, as their snapshot line. */
  private readonly final = new Map<string, string>();
  /** While a dump is read: the line, as of the dump, of each command changed since. */
  private frozen: Map<string, string> | undefined;
  /** Ids in submission order, for newest-first listing. */
  readonly order: string[] = [];
  readonly pending = new IdQueue();
  readonly byIdemKey = new Map<string, string>();
  /** agentId -> ids it holds (ASSIGNED or RUNNING). */
  readonly heldBy = new Map<string, Set<string>>();
  readonly countByState: Record<CommandState, number> = { PENDING: 0, ASSIGNED: 0, RUNNING: 0, COMPLETED: 0, FAILED: 0 };
  transitions = 0;

  get(id: string): Command | undefined {
    const cmd = this.live.get(id);
    if (cmd) return cmd;
    const line = this.final.get(id);
    return line === undefined ? undefined : decode(line);
  }

  get size(): number {
    return this.live.size + this.final.size;
  }

  /** The shown-status question without decoding a final command. */
  stateOf(id: string): CommandState | undefined {
    const cmd = this.live.get(id);
    if (cmd) return cmd.state;
    const line = this.final.get(id);
    if (line === undefined) return undefined;
    const stateAt = line.indexOf('"', 2) + 3;
    return line.slice(stateAt, line.indexOf('"', stateAt)) as CommandState;
  }

  /** Every command not yet final. */
  liveCommands(): IterableIterator<Command> {
    return this.live.values();
  }

  trail(id: string): TrailEntry[] | undefined {
    const cmd = this.get(id);
    return cmd && decodeTrail(cmd);
  }

  apply(rec: CommandRecord): void {
    const cur = this.get(rec.id);
    const from = cur ? cur.state : null;
    const version = cur ? cur.version : 0;
    if (from !== rec.from || version !== rec.version) {
      throw new Error(`${rec.ev.type} of ${rec.id} was made from ${rec.from ?? 'nothing'}@${rec.version}, but the command is ${from ?? 'absent'}@${version}`);
    }
    const r = step(cur, rec.ev);
    if (r.kind === 'rejected') throw new Error(`${rec.ev.type} of ${rec.id} is not a legal transition: ${r.reason}`);
    if (r.kind === 'same') throw new Error(`${rec.ev.type} of ${rec.id} changes nothing`);
    r.cmd.trail = appendTrail(r.cmd, rec.ev);
    this.put(r.cmd, cur);
    this.transitions++;
  }

  /**
   * The table as of now, readable over many ticks: commands are replaced,
   * never mutated, so it is enough to keep the old line of each command that
   * changes while the dump is read (copy on write).
   */
  dump(): { lines: Iterable<string>; done(): void } {
    const upTo = this.order.length;
    const frozen = new Map<string, string>();
    this.frozen = frozen;
    const lineOf = (id: string): string => frozen.get(id) ?? this.final.get(id) ?? encode(this.live.get(id)!);
    const order = this.order;
    return {
      lines: (function* () {
        for (let i = 0; i < upTo; i++) yield lineOf(order[i]!);
      })(),
      done: () => {
        if (this.frozen === frozen) this.frozen = undefined;
      },
    };
  }

  load(line: string): void {
    // A line begins ["<id>","<state>",<idemKey>: enough to file a final
    // command without parsing the rest of it.
    const idEnd = line.indexOf('"', 2);
    const id = line.slice(2, idEnd);
    const stateEnd = line.indexOf('"', idEnd + 3);
    const state = line.slice(idEnd + 3, stateEnd) as CommandState;
    if (!isFinal(state)) {
      this.put(decode(line), undefined);
      return;
    }
    this.final.set(id, line);
    this.order.push(id);
    this.countByState[state]++;
    if (line.charCodeAt(stateEnd + 2) === 0x22 /* " */) this.byIdemKey.set(decode(line).idemKey!, id);
  }

  /**
   * Rebuild the FIFO of PENDING ids from the commands themselves, oldest
   * first. Called once after recovery: replay does not consume the queue the
   * way live claims do, so what it left there is not to be trusted.
   */
  resetPendingQueue(): void {
    this.pending.clear();
    for (const cmd of this.live.values()) if (cmd.state === 'PENDING') this.pending.push(cmd.id);
  }

  private put(cmd: Command, prev: Command | undefined): void {
    if (prev && this.frozen && !this.frozen.has(prev.id)) this.frozen.set(prev.id, encode(prev));
    if (prev) {
      this.countByState[prev.state]--;
      if (prev.agentId && holding(prev.state)) this.heldBy.get(prev.agentId)?.delete(prev.id);
    } else {
      this.order.push(cmd.id);
      if (cmd.idemKey) this.byIdemKey.set(cmd.idemKey, cmd.id);
    }
    if (isFinal(cmd.state)) {
      this.live.delete(cmd.id);
      this.final.set(cmd.id, encode(cmd));
    } else {
      this.live.set(cmd.id, cmd);
    }
    this.countByState[cmd.state]++;
    if (cmd.state === 'PENDING' && prev?.state !== 'PENDING') this.pending.push(cmd.id);
    if (cmd.agentId && holding(cmd.state)) {
      let held = this.heldBy.get(cmd.agentId);
      if (!held) this.heldBy.set(cmd.agentId, (held = new Set()));
      held.add(cmd.id);
    }
  }
}

function holding(state: CommandState): boolean {
  return state === 'ASSIGNED' || state === 'RUNNING';
}

// --- the snapshot line of a command ------------------------------------------
// A JSON array, positions fixed: id and state first so load() can file a final
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

function appendTrail(cmd: Command, ev: CommandEvent): string {
  let entry = `${ev.type},${cmd.state[0]},${ev.at - cmd.createdAt}`;
  if ('agentId' in ev) entry += `,${ev.agentId},${ev.lease}`;
  else if ('lease' in ev) entry += `,,${ev.lease}`;
  return cmd.trail === '' ? entry : `${cmd.trail};${entry}`;
}

function decodeTrail(cmd: Command): TrailEntry[] {
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
