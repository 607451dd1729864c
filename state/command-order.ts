// The order commands were submitted in: what GET /commands lists newest
// first, and the order of a snapshot's lines. Retention removes commands from
// anywhere in it (the oldest final ones, around older ones still running), so
// removed ids are dropped lazily: a removal is counted, and once removed ids
// are half of the array it is rebuilt without them, which keeps a removal
// O(1) amortized and the memory proportional to the commands held.
//
// Each id keeps the ordinal it was appended with, so a list cursor (an
// ordinal) means the same place before and after a rebuild.
//
// An entry is an id, or a number that `lineId` turns into one: a restart
// files the snapshot's commands by the index of their line (SnapshotLines),
// which costs no string per command. lineId may answer undefined for a line
// that was removed; a reader checks any id it gets against the table.

/** An id, or the index of a snapshot line that holds it. */
export type OrderEntry = string | number;

/** The id an entry names: itself, or what `lineId` reads off its line. */
export function entryId(e: OrderEntry, lineId: (line: number) => string | undefined): string | undefined {
  return typeof e === 'string' ? e : lineId(e);
}

export class CommandOrder {
  private ids: OrderEntry[] = [];
  private readonly lineId: (line: number) => string | undefined;
  /** The ordinal of ids[i]; undefined while nothing was dropped (ordinal == index). */
  private ordinals: number[] | undefined;
  private nextOrdinal = 0;
  private removed = 0;

  constructor(lineId: (line: number) => string | undefined = () => undefined) {
    this.lineId = lineId;
  }

  push(id: OrderEntry): void {
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

  /** The id at index i; undefined (or an id no longer held) if it was removed. */
  at(i: number): string | undefined {
    return entryId(this.ids[i]!, this.lineId);
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
   * may be removed by the time they are read; at() still names those whose
   * snapshot line is pinned (SnapshotLines.pin()), and the reader decides.
   */
  frozen(): { at(i: number): string | undefined; upTo: number } {
    const ids = this.ids;
    return { at: (i) => entryId(ids[i]!, this.lineId), upTo: ids.length };
  }

  /** One id was removed; `isHeld` tells held ids from removed ones if a rebuild is due. */
  noteRemoved(isHeld: (id: string) => boolean): void {
    this.removed++;
    if (this.removed < 1024 || this.removed * 2 < this.ids.length) return;
    const ids: OrderEntry[] = [];
    const ordinals: number[] = [];
    for (let i = 0; i < this.ids.length; i++) {
      const id = this.at(i);
      if (id === undefined || !isHeld(id)) continue;
      ids.push(this.ids[i]!);
      ordinals.push(this.ordinalAt(i));
    }
    this.ids = ids;
    this.ordinals = ordinals;
    this.removed = 0;
  }
}
