// Commands waiting for a time (SCHEDULED for runAt, RETRY_WAIT for the next
// attempt), in due-time order: a binary min-heap, O(log n) per push and pop.
// Entries are never removed early: one whose command moved on (canceled) or
// whose time changed is checked against the command when popped, and skipped.

interface Entry {
  at: number;
  /** Ties go first in, first out. */
  seq: number;
  id: string;
}

export class DueHeap {
  private readonly heap: Entry[] = [];
  private seq = 0;

  push(id: string, at: number): void {
    const h = this.heap;
    h.push({ at, seq: this.seq++, id });
    for (let i = h.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  /** The earliest due time queued, or undefined. */
  peekAt(): number | undefined {
    return this.heap[0]?.at;
  }

  pop(): { id: string; at: number } | undefined {
    const h = this.heap;
    const top = h[0];
    if (!top) return undefined;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return { id: top.id, at: top.at };
  }

  get length(): number {
    return this.heap.length;
  }

  clear(): void {
    this.heap.length = 0;
  }
}

function before(a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
