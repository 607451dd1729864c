// The order commands were submitted in: what GET /commands lists newest
// first, and the order of a snapshot's lines. Retention removes commands from
// anywhere in it (the oldest final ones, around older ones still running), so
// removed ids are dropped lazily: a removal is counted, and once removed ids
// are half of the array it is rebuilt without them, which keeps a removal
// O(1) amortized and the memory proportional to the commands held.
//
// Each id keeps the ordinal it was appended with, so a list cursor (an
// ordinal) means the same place before and after a rebuild.

export class CommandOrder {
  private ids: string[] = [];
  /** The ordinal of ids[i]; undefined while nothing was dropped (ordinal == index). */
  private ordinals: number[] | undefined;
  private nextOrdinal = 0;
  private removed = 0;

  push(id: string): void {
    this.ids.push(id);
    this.ordinals?.push(this.nextOrdinal);
    this.nextOrdinal++;
  }

  /** Commands held: appended and not removed. */
  get length(): number {
    return this.ids.length - this.removed;
  }

  /** One past the highest ordinal handed out: the cursor of the newest end. */
  get end(): number {
    return this.nextOrdinal;
  }

  /** Entries, removed ones included, that at() and ordinalAt() index. */
  get slots(): number {
    return this.ids.length;
  }

  at(i: number): string {
    return this.ids[i]!;
  }

  ordinalAt(i: number): number {
    return this.ordinals ? this.ordinals[i]! : i;
  }

  /** The index of the last entry whose ordinal is below `ordinal`; -1 if none. */
  indexBelow(ordinal: number): number {
    if (!this.ordinals) return Math.min(ordinal, this.ids.length) - 1;
    let lo = 0;
    let hi = this.ordinals.length; // first index with ordinal >= `ordinal` lies in [lo, hi]
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ordinals[mid]! < ordinal) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  /**
   * The ids as they stand, for a reader that goes on over many ticks (a
   * snapshot): a rebuild makes new arrays, so these stay as they are. Some
   * may be removed by the time they are read; the reader skips those.
   */
  frozen(): { ids: readonly string[]; upTo: number } {
    return { ids: this.ids, upTo: this.ids.length };
  }

  /** One id was removed; `isHeld` tells held ids from removed ones if a rebuild is due. */
  noteRemoved(isHeld: (id: string) => boolean): void {
    this.removed++;
    if (this.removed < 1024 || this.removed * 2 < this.ids.length) return;
    const ids: string[] = [];
    const ordinals: number[] = [];
    for (let i = 0; i < this.ids.length; i++) {
      const id = this.ids[i]!;
      if (!isHeld(id)) continue;
      ids.push(id);
      ordinals.push(this.ordinalAt(i));
    }
    this.ids = ids;
    this.ordinals = ordinals;
    this.removed = 0;
  }
}
