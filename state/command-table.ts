// The server's table of commands as a Machine: the in-memory indexes
// (by id, by idempotency key, by agent, the FIFO of PENDING ids) and how one
// journal record moves it. Replay and live transitions both come through apply().
// PENDING commands wait in claim order (claim-queue.ts); SCHEDULED and
// RETRY_WAIT ones in due-time order (due-heap.ts).
//
// A final command never changes again, so it is kept as its snapshot line (a
// string) and decoded only when read: a million finished commands cost about
// their line each. A restart goes further: the snapshot's final and PENDING
// commands stay the bytes they were read as (SnapshotLines), found by id and
// decoded when read, until a transition moves one into the maps here.
//
// Retention forgets final commands (a `forget` record, see CommandStore):
// they leave every index here, so GET, the list and the next snapshot no
// longer have them, and their idempotency keys are free again.
import { COMMAND_STATES, COMMAND_TYPES, type CommandState, type CommandType } from './command-types.ts';
import { dueAt, isFinal, isWaiting, step, type Command, type CommandEvent } from './command-fsm.ts';
import { ClaimQueue } from './claim-queue.ts';
import { DueHeap } from './due-heap.ts';
import type { Machine } from './durable-machine.ts';
import { appendTrail, decode, decodeTrail, encode, type TrailEntry } from './command-line.ts';
import { CommandOrder, entryId, type OrderEntry } from './command-order.ts';
import { idHash, SnapshotLines } from './snapshot-lines.ts';
import { fromJournal, toJournal } from './command-record.ts';

export { decode, encode, type TrailEntry } from './command-line.ts';

/** One journal record: the event and the state and version it was made from (CAS). */
export interface CommandRecord {
  id: string;
  from: CommandState | null;
  version: number;
  ev: CommandEvent;
}

/**
 * Retention's record: these final commands leave the table. Not a command
 * transition (a final command never changes): the commands are gone.
 */
export interface ForgetRecord {
  forget: string[];
  at: number;
}

/** What the server journal holds. */
export type TableRecord = CommandRecord | ForgetRecord;

export function isForget(rec: TableRecord): rec is ForgetRecord {
  return (rec as ForgetRecord).forget !== undefined;
}

/** A FIFO of ids (or snapshot line indexes, see OrderEntry) with O(1) push and shift. */
class IdQueue {
  private items: OrderEntry[] = [];
  private head = 0;
  push(id: OrderEntry): void {
    this.items.push(id);
  }
  shift(): OrderEntry | undefined {
    if (this.head >= this.items.length) return undefined;
    const id = this.items[this.head++];
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return id;
  }
  peek(): OrderEntry | undefined {
    return this.items[this.head];
  }
  get length(): number {
    return this.items.length - this.head;
  }
  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

export class CommandTable implements Machine<TableRecord> {
  readonly name = 'commands';
  /** Commands not yet final, in the order they were first seen. */
  private readonly live = new Map<string, Command>();
  /** Final commands, as their snapshot line. */
  private readonly final = new Map<string, string>();
  /**
   * Final and PENDING commands as loaded from the snapshot, as bytes. A
   * command there is current only while neither `live` nor `final` has it.
   */
  private readonly loaded = new SnapshotLines();
  /** Ids of the snapshot's commands that were not final, in snapshot order. */
  private readonly loadedLive: string[] = [];
  /**
   * For each of loadedLive: where a line kept as bytes (PENDING) goes in the
   * claim order, read off the line (claimKey()); -1 for a decoded one.
   */
  private readonly loadedClaimKey: number[] = [];
  /** Ids of those that load() decoded (not kept as bytes). */
  private readonly loadedDecoded = new Set<string>();
  /** Transitions of the snapshot's non-final commands since the load. */
  private loadedMoved = 0;
  private readonly idEnd = new Int32Array(1);
  /** While a dump is read: the line, as of the dump, of each command changed since. */
  private frozen: Map<string, string> | undefined;
  /** The id on a filed snapshot line (order and finals hold its index). */
  private readonly lineId = (line: number): string | undefined => this.loaded.idOf(line);
  /** Ids in submission order, for newest-first listing; the snapshot's filed lines by index. */
  readonly order = new CommandOrder(this.lineId);
  /** PENDING ids in claim order (ids that moved on since are skipped by readers). */
  readonly pending = new ClaimQueue();
  /** SCHEDULED and RETRY_WAIT ids by due time (those that moved on since are skipped by readers). */
  readonly due = new DueHeap();
  /** Final ids, about in the order they became final (the snapshot's in its order): retention takes from the front. */
  private readonly finals = new IdQueue();
  /** Commands retention has forgotten since this table was loaded. */
  forgotten = 0;
  readonly byIdemKey = new Map<string, string>();
  /** agentId -> ids it holds (ASSIGNED or RUNNING). */
  readonly heldBy = new Map<string, Set<string>>();
  readonly countByState = Object.fromEntries(COMMAND_STATES.map((s) => [s, 0])) as Record<CommandState, number>;
  /** PENDING commands by type: what /metrics shows as waiting for an agent that runs the type. */
  readonly pendingByType = Object.fromEntries(COMMAND_TYPES.map((t) => [t, 0])) as Record<CommandType, number>;
  transitions = 0;
  /** Records came through replay() since the last resetPendingQueue(): the queues and heldBy are stale. */
  private replaying = false;

  get(id: string): Command | undefined {
    const cmd = this.live.get(id);
    if (cmd) return cmd;
    const line = this.final.get(id);
    if (line !== undefined) return decode(line);
    const pos = this.loaded.size > 0 ? this.loaded.find(id) : -1;
    return pos < 0 ? undefined : decode(this.loaded.line(pos));
  }

  /** Commands held (retention's forgotten ones are not). */
  get size(): number {
    return this.order.length;
  }

  /** The shown-status question without decoding a final command. */
  stateOf(id: string): CommandState | undefined {
    const cmd = this.live.get(id);
    if (cmd) return cmd.state;
    const line = this.final.get(id);
    if (line !== undefined) {
      const stateAt = line.indexOf('"', 2) + 3;
      if (line.lastIndexOf('\\', stateAt) > 1) return decode(line).state; // a JSON-escaped id
      return line.slice(stateAt, line.indexOf('"', stateAt)) as CommandState;
    }
    const pos = this.loaded.size > 0 ? this.loaded.find(id) : -1;
    return pos < 0 ? undefined : keptAsBytes(this.loaded.stateLetter(pos, id));
  }

  /** Every command not yet final, in no set order. Decodes the snapshot's PENDING ones: not for hot paths. */
  *liveCommands(): IterableIterator<Command> {
    yield* this.live.values();
    for (const id of this.loadedLive) {
      if (this.live.has(id) || this.final.has(id)) continue;
      const cmd = this.get(id); // undefined once it is final and forgotten
      if (cmd) yield cmd;
    }
  }

  get finalCount(): number {
    return this.countByState.COMPLETED + this.countByState.FAILED;
  }

  /**
   * Take the oldest final commands off the retention queue: at least `count`,
   * and any further ones that became final at or before `horizon`; at most
   * `max`. The caller journals a forget record of them in the same tick.
   */
  takeOldestFinals(count: number, horizon: number, max: number): string[] {
    const out: string[] = [];
    while (out.length < max) {
      const entry = this.finals.peek();
      if (entry === undefined) break;
      const id = entryId(entry, this.lineId);
      if (id === undefined || this.stateOf(id) === undefined) {
        this.finals.shift(); // forgotten already (replayed forget records)
        continue;
      }
      if (out.length >= count && this.get(id)!.updatedAt > horizon) break;
      this.finals.shift();
      out.push(id);
    }
    return out;
  }

  /** Every ASSIGNED or RUNNING command. */
  *heldCommands(): IterableIterator<Command> {
    for (const ids of this.heldBy.values()) for (const id of ids) yield this.live.get(id)!;
  }

  trail(id: string): TrailEntry[] | undefined {
    const cmd = this.get(id);
    return cmd && decodeTrail(cmd);
  }

  toJournal(rec: TableRecord): unknown {
    return toJournal(rec);
  }

  fromJournal(raw: unknown): TableRecord {
    return fromJournal(raw);
  }

  apply(rec: TableRecord): void {
    if (isForget(rec)) return this.forget(rec.forget);
    if (this.replaying) this.resetPendingQueue();
    this.move(rec);
  }

  /**
   * apply() for a record read back at open: the same checks and the same
   * step(), but the claim and due orders and `heldBy` are left alone until
   * resetPendingQueue() rebuilds them from the commands (it runs once replay
   * is over, and before the next apply()).
   */
  replay(rec: TableRecord): void {
    if (isForget(rec)) return this.forget(rec.forget);
    this.replaying = true;
    this.move(rec);
  }

  private move(rec: CommandRecord): void {
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
    const { at, upTo } = this.order.frozen();
    const frozen = new Map<string, string>();
    this.frozen = frozen;
    // Lines forgotten while the dump is read must stay readable: their ids are read off them.
    this.loaded.pin();
    let unpinned = false;
    // Undefined: forgotten before the dump was taken (a later forget leaves its line in `frozen`).
    const lineOf = (id: string): string | undefined => frozen.get(id) ?? this.lineOf(id);
    return {
      lines: (function* () {
        for (let i = 0; i < upTo; i++) {
          const id = at(i);
          const line = id === undefined ? undefined : lineOf(id);
          if (line !== undefined) yield line;
        }
      })(),
      done: () => {
        if (this.frozen === frozen) this.frozen = undefined;
        if (!unpinned) this.loaded.unpin();
        unpinned = true;
      },
    };
  }

  /** The current snapshot line of a command; undefined if there is none. */
  private lineOf(id: string): string | undefined {
    const line = this.final.get(id);
    if (line !== undefined) return line;
    const cmd = this.live.get(id);
    if (cmd) return encode(cmd);
    const pos = this.loaded.size > 0 ? this.loaded.find(id) : -1;
    return pos < 0 ? undefined : this.loaded.line(pos);
  }

  /** Retention: these final commands leave every index. Throws, changing nothing, if one is not a final command. */
  private forget(ids: readonly string[]): void {
    const cmds = ids.map((id) => this.get(id));
    cmds.forEach((cmd, i) => {
      if (!cmd) throw new Error(`forget of ${ids[i]}: no such command`);
      if (!isFinal(cmd.state)) throw new Error(`forget of ${cmd.id}: the command is ${cmd.state}, not final`);
    });
    for (const cmd of cmds as Command[]) {
      if (this.frozen && !this.frozen.has(cmd.id)) this.frozen.set(cmd.id, this.lineOf(cmd.id)!);
      this.final.delete(cmd.id);
      this.live.delete(cmd.id);
      if (this.loaded.size > 0) this.loaded.remove(cmd.id);
      this.countByState[cmd.state]--;
      if (cmd.idemKey !== null && this.byIdemKey.get(cmd.idemKey) === cmd.id) this.byIdemKey.delete(cmd.idemKey);
      this.order.noteRemoved((id) => this.stateOf(id) !== undefined);
      this.forgotten++;
    }
  }

  load(line: string): void {
    // A line begins ["<id>","<state>",<idemKey>: enough to file a final
    // command without parsing the rest of it (unless the id is JSON-escaped).
    const idEnd = line.indexOf('"', 2);
    const escaped = line.lastIndexOf('\\', idEnd) > 1 ? decode(line) : undefined;
    const id = escaped ? escaped.id : line.slice(2, idEnd);
    const stateEnd = escaped ? -1 : line.indexOf('"', idEnd + 3);
    const state = escaped ? escaped.state : (line.slice(idEnd + 3, stateEnd) as CommandState);
    if (!isFinal(state)) {
      this.put(escaped ?? decode(line), undefined);
      this.loadedLive.push(id);
      this.loadedClaimKey.push(-1);
      this.loadedDecoded.add(id);
      return;
    }
    this.final.set(id, line);
    this.order.push(id);
    this.finals.push(id);
    this.countByState[state]++;
    const idemKey = escaped ? escaped.idemKey : line.charCodeAt(stateEnd + 2) === 0x22 /* " */ ? decode(line).idemKey : null;
    if (idemKey !== null) this.byIdemKey.set(idemKey, id);
  }

  /**
   * Restore a chunk of snapshot lines (each ending in a newline) and keep the
   * chunk: final and PENDING commands stay bytes in it. Returns the number of lines.
   */
  loadChunk(buf: Buffer): number {
    const c = this.loaded.addChunk(buf);
    let n = 0;
    for (let start = 0; start < buf.length; n++) {
      let end = buf.indexOf(10, start);
      if (end < 0) end = buf.length;
      this.loadBytes(buf, c, start, end);
      start = end + 1;
    }
    this.loaded.releaseIfEmpty(c);
    return n;
  }

  /** Hint: about this many more lines are coming. */
  reserve(lines: number): void {
    this.loaded.reserve(this.loaded.size + lines);
  }

  private loadBytes(buf: Buffer, c: number, start: number, end: number): void {
    // ["<id>","<state>",<idemKey>,...: the id, the state and whether an
    // idempotency key follows are read off the bytes. Lines that are not
    // final or PENDING, or whose id is not plain ASCII, go the string way.
    const hash = buf[start] === 0x5b && buf[start + 1] === 0x22 ? idHash(buf, start + 2, end, this.idEnd) : -1;
    if (hash >= 0) {
      const idEnd = this.idEnd[0]!;
      const state = keptAsBytes(buf[idEnd + 3]!);
      const stateEnd = state === undefined ? -1 : idEnd + 3 + state.length;
      if (state !== undefined && buf[idEnd + 1] === 0x2c && buf[idEnd + 2] === 0x22 && buf[stateEnd] === 0x22) {
        // Filed by its line's index: no string of the id is made unless something else keeps one.
        const line = this.loaded.add(c, start, hash);
        this.order.push(line);
        this.countByState[state]++;
        const keyed = buf[stateEnd + 2] === 0x22 ? decode(buf.toString('utf8', start, end)) : undefined;
        if (keyed) this.byIdemKey.set(keyed.idemKey!, keyed.id);
        if (state === 'PENDING') {
          this.loadedLive.push(keyed ? keyed.id : buf.toString('latin1', start + 2, idEnd));
          // `,null,"D` (DELAY) or `,null,"H` (HTTP_GET_JSON) after the state when there is no key.
          const type = keyed ? keyed.type : buf[stateEnd + 8] === 0x44 ? 'DELAY' : 'HTTP_GET_JSON';
          this.loadedClaimKey.push(claimKey(type, keyed ? keyed.priority : priorityAtEnd(buf, end)));
          this.pendingByType[type]++;
        } else {
          this.finals.push(line);
        }
        return;
      }
    }
    this.load(buf.toString('utf8', start, end));
  }

  /**
   * Rebuild the claim order of PENDING ids, oldest first within a priority,
   * and the due-time order of waiting ones, from the commands themselves.
   * Called once after recovery: replay does not consume the queues the way
   * live claims and promotions do, so what it left there is not to be trusted.
   */
  resetPendingQueue(): void {
    this.replaying = false;
    this.pending.clear();
    this.due.clear();
    // The snapshot's commands first, in its order, then those replay added.
    const live = this.live;
    const anyMoved = this.loadedMoved > 0;
    for (let i = 0; i < this.loadedLive.length; i++) {
      const id = this.loadedLive[i]!;
      const key = this.loadedClaimKey[i]!;
      const cmd = key < 0 || anyMoved ? live.get(id) : undefined;
      if (cmd) {
        if (cmd.state === 'PENDING') this.pending.push(id, cmd.type, cmd.priority);
      } else if (key >= 0 && (!anyMoved || (!this.final.has(id) && this.loaded.find(id) >= 0))) {
        this.pending.push(id, COMMAND_TYPES[key >> 8]!, (key & 0xff) - 128); // still the PENDING line it was loaded as (not forgotten)
      }
    }
    this.heldBy.clear();
    for (const cmd of this.live.values()) {
      if (cmd.agentId && holding(cmd.state)) this.hold(cmd);
      if (cmd.state === 'PENDING' && !this.loadedDecoded.has(cmd.id) && (this.loaded.size === 0 || this.loaded.find(cmd.id) < 0)) this.pending.push(cmd.id, cmd.type, cmd.priority);
      if (isWaiting(cmd.state)) this.due.push(cmd.id, dueAt(cmd)!);
    }
  }

  private put(cmd: Command, prev: Command | undefined): void {
    if (prev && this.frozen && !this.frozen.has(prev.id)) this.frozen.set(prev.id, encode(prev));
    if (prev) {
      // A command not in `live` before it moves is one the snapshot kept as bytes.
      if (this.loadedLive.length > 0 && (!this.live.has(prev.id) || this.loadedDecoded.has(prev.id))) this.loadedMoved++;
      this.countByState[prev.state]--;
      if (prev.state === 'PENDING') this.pendingByType[prev.type]--;
      if (!this.replaying && prev.agentId && holding(prev.state)) this.heldBy.get(prev.agentId)?.delete(prev.id);
    } else {
      this.order.push(cmd.id);
      if (cmd.idemKey) this.byIdemKey.set(cmd.idemKey, cmd.id);
    }
    if (isFinal(cmd.state)) {
      this.live.delete(cmd.id);
      this.final.set(cmd.id, encode(cmd));
      this.finals.push(cmd.id);
    } else {
      this.live.set(cmd.id, cmd);
    }
    this.countByState[cmd.state]++;
    if (cmd.state === 'PENDING') this.pendingByType[cmd.type]++;
    if (this.replaying) return;
    if (cmd.state === 'PENDING' && prev?.state !== 'PENDING') {
      // Given back unbegun (release; expiry of ASSIGNED): it keeps its place at the head.
      if (prev?.state === 'RUNNING' || prev?.state === 'ASSIGNED') this.pending.pushFront(cmd.id, cmd.type, cmd.priority);
      else this.pending.push(cmd.id, cmd.type, cmd.priority);
    }
    if (isWaiting(cmd.state) && (prev === undefined || prev.state !== cmd.state)) this.due.push(cmd.id, dueAt(cmd)!);
    if (cmd.agentId && holding(cmd.state)) this.hold(cmd);
  }

  private hold(cmd: Command): void {
    let held = this.heldBy.get(cmd.agentId!);
    if (!held) this.heldBy.set(cmd.agentId!, (held = new Set()));
    held.add(cmd.id);
  }
}

/** The state a loaded line's state letter names, if such lines are kept as bytes. */
function keptAsBytes(letter: number): 'PENDING' | 'COMPLETED' | 'FAILED' | undefined {
  return letter === 0x50 ? 'PENDING' : letter === 0x43 ? 'COMPLETED' : letter === 0x46 ? 'FAILED' : undefined;
}

/** The last field of a snapshot line (`...,<priority>]`); 0 for a line from before priorities (it ends in the trail's `"]`). */
function priorityAtEnd(buf: Buffer, end: number): number {
  let n = 0;
  let scale = 1;
  let i = end - 2;
  for (; buf[i]! >= 0x30 && buf[i]! <= 0x39; i--, scale *= 10) n += (buf[i]! - 0x30) * scale;
  if (scale === 1) return 0; // no digits: the trail's closing quote
  return buf[i] === 0x2d ? -n : n;
}

/** A PENDING command's place in the claim order as one small integer: type index and priority. */
function claimKey(type: CommandType, priority: number): number {
  return (COMMAND_TYPES.indexOf(type) << 8) | (priority + 128);
}

function holding(state: CommandState): boolean {
  return state === 'ASSIGNED' || state === 'RUNNING';
}
