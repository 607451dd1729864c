// The order PENDING commands are handed out in: highest priority first, first
// in first out within a priority. One FIFO per (type, priority level) that
// has ever held a command, and per type the levels that are not empty, highest
// first: a claim looks at one head per type, so its cost does not grow with
// the backlog. A claim may name the types it takes; at equal priority, the
// command queued first wins across types.
//
// Ids are queued when a command becomes PENDING and never removed early: one
// that stopped being PENDING (canceled, say) is skipped by the caller. A
// command given back unbegun goes to the front (pushFront): it had reached
// the head once, and a restart, which queues in submission order, would put
// it before the newer ones too.
import type { CommandType } from './command-types.ts';

/** A FIFO with O(1) push and shift, each id tagged with the order it was queued in. */
class Fifo {
  private ids: string[] = [];
  private seqs: number[] = [];
  private head = 0;

  push(id: string, seq: number): void {
    this.ids.push(id);
    this.seqs.push(seq);
  }

  /** `seq` must be below every seq queued. */
  unshift(id: string, seq: number): void {
    if (this.head > 0) {
      this.head--;
      this.ids[this.head] = id;
      this.seqs[this.head] = seq;
    } else {
      this.ids.unshift(id);
      this.seqs.unshift(seq);
    }
  }

  get headSeq(): number {
    return this.seqs[this.head]!;
  }

  shift(): string | undefined {
    if (this.head >= this.ids.length) return undefined;
    const id = this.ids[this.head++];
    if (this.head > 4096 && this.head * 2 > this.ids.length) {
      this.ids = this.ids.slice(this.head);
      this.seqs = this.seqs.slice(this.head);
      this.head = 0;
    }
    return id;
  }

  get length(): number {
    return this.ids.length - this.head;
  }
}

interface TypeQueues {
  levels: Map<number, Fifo>;
  /** Priorities whose FIFO is not empty, highest first. */
  active: number[];
}

export class ClaimQueue {
  private readonly byType = new Map<CommandType, TypeQueues>();
  private seq = 0;
  /** Seqs for pushFront, below every push's. */
  private frontSeq = -1;
  private count = 0;

  /** The FIFO the last push went to: a restart pushes long runs to one. */
  private lastPush: { type: CommandType; priority: number; q: Fifo } | undefined;

  push(id: string, type: CommandType, priority: number): void {
    const last = this.lastPush;
    if (last && last.type === type && last.priority === priority && last.q.length > 0) {
      last.q.push(id, this.seq++);
      this.count++;
      return;
    }
    const q = this.fifo(type, priority);
    q.push(id, this.seq++);
    this.count++;
    this.lastPush = { type, priority, q };
  }

  /** Queue `id` ahead of every id of its type and priority, and of every other type's at equal priority. */
  pushFront(id: string, type: CommandType, priority: number): void {
    this.fifo(type, priority).unshift(id, this.frontSeq--);
    this.count++;
  }

  /** The FIFO of (type, priority), listed among the active levels. */
  private fifo(type: CommandType, priority: number): Fifo {
    let t = this.byType.get(type);
    if (!t) this.byType.set(type, (t = { levels: new Map(), active: [] }));
    let q = t.levels.get(priority);
    if (!q) t.levels.set(priority, (q = new Fifo()));
    if (q.length === 0) {
      let i = 0;
      while (i < t.active.length && t.active[i]! > priority) i++;
      t.active.splice(i, 0, priority);
    }
    return q;
  }

  /** The next id in claim order among `types` (all when absent), removed from the queue. */
  shift(types?: ReadonlySet<CommandType>): string | undefined {
    let best: { t: TypeQueues; q: Fifo; priority: number } | undefined;
    for (const [type, t] of this.byType) {
      if (t.active.length === 0 || (types && !types.has(type))) continue;
      const priority = t.active[0]!;
      const q = t.levels.get(priority)!;
      if (!best || priority > best.priority || (priority === best.priority && q.headSeq < best.q.headSeq)) best = { t, q, priority };
    }
    if (!best) return undefined;
    const id = best.q.shift();
    if (best.q.length === 0) best.t.active.shift();
    this.count--;
    return id;
  }

  /** Ids queued, including those no longer PENDING that a shift will skip. */
  get length(): number {
    return this.count;
  }

  clear(): void {
    this.byType.clear();
    this.count = 0;
    this.frontSeq = -1;
    this.lastPush = undefined;
  }
}
