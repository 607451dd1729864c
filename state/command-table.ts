// The server's table of commands as a Machine: the in-memory indexes
// (by id, by idempotency key, by agent, the FIFO of PENDING ids) and how one
// journal record moves it. Replay and live transitions both come through apply().
import type { CommandState } from '../lib/protocol.ts';
import { step, type Command, type CommandEvent } from './command-fsm.ts';
import type { Machine } from './durable-machine.ts';

/** One journal record: the event and the state and version it was made from (CAS). */
export interface CommandRecord {
  id: string;
  from: CommandState | null;
  version: number;
  ev: CommandEvent;
}

/** One line of a command's trail: the transitions that made it what it is. */
export interface TrailEntry {
  event: CommandEvent['type'];
  to: CommandState;
  at: number;
  agentId?: string;
  lease?: number;
  error?: string;
}

interface SnapshotEntry {
  cmd: Command;
  trail: TrailEntry[];
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
}

export class CommandTable implements Machine<CommandRecord> {
  readonly name = 'commands';
  readonly byId = new Map<string, Command>();
  /** Ids in submission order, for newest-first listing. */
  readonly order: string[] = [];
  readonly pending = new IdQueue();
  readonly byIdemKey = new Map<string, string>();
  /** agentId -> ids it holds (ASSIGNED or RUNNING). */
  readonly heldBy = new Map<string, Set<string>>();
  readonly countByState: Record<CommandState, number> = { PENDING: 0, ASSIGNED: 0, RUNNING: 0, COMPLETED: 0, FAILED: 0 };
  readonly trails = new Map<string, TrailEntry[]>();
  transitions = 0;

  apply(rec: CommandRecord): void {
    const cur = this.byId.get(rec.id);
    const from = cur ? cur.state : null;
    const version = cur ? cur.version : 0;
    if (from !== rec.from || version !== rec.version) {
      throw new Error(`${rec.ev.type} of ${rec.id} was made from ${rec.from ?? 'nothing'}@${rec.version}, but the command is ${from ?? 'absent'}@${version}`);
    }
    const r = step(cur, rec.ev);
    if (r.kind === 'rejected') throw new Error(`${rec.ev.type} of ${rec.id} is not a legal transition: ${r.reason}`);
    if (r.kind === 'same') throw new Error(`${rec.ev.type} of ${rec.id} changes nothing`);
    this.put(r.cmd, cur);
    const e = rec.ev;
    const entry: TrailEntry = { event: e.type, to: r.cmd.state, at: e.at };
    if ('agentId' in e) entry.agentId = e.agentId;
    if ('lease' in e) entry.lease = e.lease;
    if (r.cmd.error && r.cmd.error !== cur?.error) entry.error = r.cmd.error;
    const trail = this.trails.get(rec.id);
    if (trail) trail.push(entry);
    else this.trails.set(rec.id, [entry]);
    this.transitions++;
  }

  *dump(): Iterable<SnapshotEntry> {
    for (const id of this.order) yield { cmd: this.byId.get(id)!, trail: this.trails.get(id) ?? [] };
  }

  load(entry: unknown): void {
    const { cmd, trail } = entry as SnapshotEntry;
    this.put(cmd, undefined);
    this.trails.set(cmd.id, trail);
  }

  private put(cmd: Command, prev: Command | undefined): void {
    this.byId.set(cmd.id, cmd);
    if (prev) {
      this.countByState[prev.state]--;
      if (prev.agentId && holding(prev.state)) this.heldBy.get(prev.agentId)?.delete(prev.id);
    } else {
      this.order.push(cmd.id);
      if (cmd.idemKey) this.byIdemKey.set(cmd.idemKey, cmd.id);
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
