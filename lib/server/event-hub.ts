// The transitions event streams read: each durable transition, in journal
// order, as a ready SSE frame, handed to every open stream and kept in a
// bounded ring of recent ones so a stream can resume after a given seq.
// Memory only: after a restart the ring starts empty at the journal's last
// seq, and a client resuming from before that is told to re-list (`reset`).
import type { Command, EventType } from '../../state/command-fsm.ts';
import type { CommandStatus, CommandType } from '../protocol.ts';
import { commandView } from './command-view.ts';
import { sseFrame } from './sse.ts';

export interface StreamedEvent {
  seq: number;
  event: EventType;
  id: string;
  type: CommandType;
  status: CommandStatus;
  /** `id: seq`, `event: <FSM event>`, `data: <the command's view after it>`. */
  frame: string;
}

export interface RingLimits {
  /** At most this many recent transitions are kept... */
  events: number;
  /** ...and at most this many bytes of their frames. */
  bytes: number;
}

export const DEFAULT_RING: RingLimits = { events: 10_000, bytes: 32 * 1024 * 1024 };

type Subscriber = (e: StreamedEvent) => void;

export class EventHub {
  private readonly limits: RingLimits;
  private ring: StreamedEvent[] = [];
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
    const view = commandView(cmd);
    const e: StreamedEvent = { seq, event, id: cmd.id, type: cmd.type, status: view.status, frame: sseFrame(event, JSON.stringify(view), seq) };
    this.seq = seq;
    this.keep(e);
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

  private keep(e: StreamedEvent): void {
    this.ring.push(e);
    this.bytes += e.frame.length;
    // One frame larger than the byte bound is kept alone rather than not at all.
    while (this.held > this.limits.events || (this.bytes > this.limits.bytes && this.held > 1)) {
      const old = this.ring[this.head]!;
      this.ring[this.head++] = undefined as unknown as StreamedEvent;
      this.bytes -= old.frame.length;
      this.heldAfter = old.seq;
    }
    if (this.head > 4096 && this.head * 2 > this.ring.length) {
      this.ring = this.ring.slice(this.head);
      this.head = 0;
    }
  }
}
