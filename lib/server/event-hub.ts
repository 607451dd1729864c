// The transitions event streams read: each durable transition, in journal
// order, handed to every open stream and kept in a bounded ring of recent ones
// so a stream can resume after a given seq. Memory only: after a restart the
// ring starts empty at the journal's last seq, and a client resuming from
// before that is told to re-list (`reset`).
//
// A transition's SSE frame is written only when a stream needs it, then kept:
// commands are replaced on every transition, never mutated, so the frame made
// later is the one that would have been made then. With no stream open, a
// transition costs the server a size estimate and a slot in the ring, not a
// view and its JSON.
import type { Command, EventType } from '../../state/command-fsm.ts';
import type { CommandStatus, CommandType } from '../protocol.ts';
import { commandView, shownStatus } from './command-view.ts';
import { sseFrame } from './sse.ts';

export interface StreamedEvent {
  readonly seq: number;
  readonly event: EventType;
  readonly id: string;
  readonly type: CommandType;
  readonly status: CommandStatus;
  /** `id: seq`, `event: <FSM event>`, `data: <the command's view after it>`. */
  readonly frame: string;
}

class HeldEvent implements StreamedEvent {
  readonly seq: number;
  readonly event: EventType;
  readonly cmd: Command;
  /** What the ring counts for it: an estimate until the frame exists, then its length. */
  bytes: number;
  private text: string | undefined;
  private readonly hub: EventHub;

  constructor(hub: EventHub, cmd: Command, event: EventType, seq: number) {
    this.hub = hub;
    this.cmd = cmd;
    this.event = event;
    this.seq = seq;
    this.bytes = estimate(cmd);
  }

  get id(): string {
    return this.cmd.id;
  }
  get type(): CommandType {
    return this.cmd.type;
  }
  get status(): CommandStatus {
    return shownStatus(this.cmd.state);
  }
  get frame(): string {
    if (this.text === undefined) {
      this.text = sseFrame(this.event, JSON.stringify(commandView(this.cmd)), this.seq);
      this.hub.recount(this, this.text.length);
    }
    return this.text;
  }
}

// JSON sizes of results, measured once per object: a command keeps its
// result from the finish on. A payload's is estimated from its fields: one
// WeakMap entry per submit cost more than the rest of publish().
const sizes = new WeakMap<object, number>();
function jsonSize(v: unknown): number {
  if (v === null || typeof v !== 'object') return 16;
  let n = sizes.get(v);
  if (n === undefined) sizes.set(v, (n = JSON.stringify(v).length));
  return n;
}

/** A payload's JSON size, from above: a URL may be escaped to twice its length. */
function payloadSize(p: Command['payload']): number {
  if (!('url' in p)) return 32;
  const e = p.expectStatus;
  return 64 + 2 * p.url.length + (e === undefined ? 0 : typeof e === 'string' ? 16 : 4 * e.length);
}

/** About the size of the command's view as JSON, from above for the usual command. */
function estimate(cmd: Command): number {
  return 640 + payloadSize(cmd.payload) + jsonSize(cmd.result) + 2 * (cmd.error?.length ?? 0) + 8 * cmd.trail.length;
}

export interface RingLimits {
  /** At most this many recent transitions are kept... */
  events: number;
  /** ...and at most this many bytes of their frames (estimated for frames not yet written). */
  bytes: number;
}

export const DEFAULT_RING: RingLimits = { events: 10_000, bytes: 32 * 1024 * 1024 };

type Subscriber = (e: StreamedEvent) => void;

export class EventHub {
  private readonly limits: RingLimits;
  private ring: HeldEvent[] = [];
  private head = 0;
  private bytes = 0;
  /** Every transition after this seq is in the ring. */
  private heldAfter: number;
  private seq: number;
  private readonly subscribers = new Set<Subscriber>();
  private readonly byCommand = new Map<string, Set<(cmd: Command) => void>>();

  constructor(lastSeq: number, limits: RingLimits = DEFAULT_RING) {
    this.seq = lastSeq;
    this.heldAfter = lastSeq;
    this.limits = limits;
  }

  /** The seq of the last transition published. */
  get lastSeq(): number {
    return this.seq;
  }

  /** How many transitions the ring holds now. */
  get held(): number {
    return this.ring.length - this.head;
  }

  /** A durable transition (the store's onChange): keep it, then hand it to every stream. */
  publish(cmd: Command, event: EventType, seq: number): void {
    const e = new HeldEvent(this, cmd, event, seq);
    this.seq = seq;
    this.bytes += e.bytes;
    this.ring.push(e);
    this.trim();
    for (const fn of this.subscribers) fn(e);
    const watchers = this.byCommand.get(cmd.id);
    if (watchers) for (const fn of watchers) fn(cmd);
  }

  /** The held transitions after `seq`, oldest first; undefined when some of them are no longer held (or never were). */
  after(seq: number): StreamedEvent[] | undefined {
    if (seq < this.heldAfter || seq > this.seq) return undefined;
    let lo = this.head;
    let hi = this.ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ring[mid]!.seq <= seq) lo = mid + 1;
      else hi = mid;
    }
    return this.ring.slice(lo);
  }

  /** Every transition from now on; returns the unsubscribe. */
  subscribe(fn: Subscriber): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** One command's transitions from now on, as the command after each; returns the unsubscribe. */
  watch(id: string, fn: (cmd: Command) => void): () => void {
    let set = this.byCommand.get(id);
    if (!set) this.byCommand.set(id, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.byCommand.delete(id);
    };
  }

  /** A held event's frame was written: count its real size from now on. */
  recount(e: HeldEvent, bytes: number): void {
    const held = this.ring.length > this.head && this.ring[this.head]!.seq <= e.seq;
    if (held) this.bytes += bytes - e.bytes;
    e.bytes = bytes;
    if (held && this.bytes > this.limits.bytes) this.trim();
  }

  private trim(): void {
    // One frame larger than the byte bound is kept alone rather than not at all.
    while (this.held > this.limits.events || (this.bytes > this.limits.bytes && this.held > 1)) {
      const old = this.ring[this.head]!;
      this.ring[this.head++] = undefined as unknown as HeldEvent;
      this.bytes -= old.bytes;
      this.heldAfter = old.seq;
    }
    if (this.head > 4096 && this.head * 2 > this.ring.length) {
      this.ring = this.ring.slice(this.head);
      this.head = 0;
    }
  }
}
