// The command lines of a snapshot, kept as the bytes they were read as and
// found by command id. A restart allocates no string or object per command,
// not even its id: loading a million lines as strings filed in a Map spent most
// of the open in garbage collection and Map inserts.
//
// An open-addressing hash table (linear probing) in a Float64Array holds each
// line's position; a lookup hashes the id and compares it with the line's
// bytes. Only ids of printable ASCII without a backslash are filed here (their
// JSON text is their bytes); idHash() says which, and the caller keeps any
// other id the ordinary way.
//
// A line starts `["<id>",`: the id begins 2 bytes into it.
//
// Retention removes lines (remove()): the slot becomes a tombstone, and a
// chunk none of whose filed lines is left is let go (unless pinned: a
// snapshot being written may still read it).
//
// Each filed line also has an index (the order add() filed it in): the
// table's submission order and retention queue hold that small integer
// instead of an id string, and idOf() reads the id back off the bytes. A
// million 36-character ids as strings cost about 56 MB.

/** Position of a filed line: chunk * 2^32 + byte offset of the line in it. */
export type LinePos = number;

const CHUNK_SPAN = 2 ** 32;
/** A slot whose line was removed: lookups probe past it. */
const TOMBSTONE = -1;
const NO_CHUNK = Buffer.alloc(0);
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 16777619;

/**
 * FNV-1a of the id that starts at `from`; -1 if it holds a byte that is not
 * printable ASCII or is a backslash, or has no closing quote before `end`.
 * The id ends at the first `"` (in `idEndOut[0]`).
 */
export function idHash(buf: Buffer, from: number, end: number, idEndOut: Int32Array): number {
  let h = FNV_OFFSET;
  for (let i = from; i < end; i++) {
    const ch = buf[i]!;
    if (ch === 0x22) {
      idEndOut[0] = i;
      return mix(h);
    }
    if (ch < 0x20 || ch > 0x7e || ch === 0x5c) return -1;
    h = Math.imul(h ^ ch, FNV_PRIME);
  }
  return -1;
}

function stringHash(id: string): number {
  let h = FNV_OFFSET;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), FNV_PRIME);
  return mix(h);
}

// FNV's low bits, which pick the slot, depend only on the inputs' low bits:
// ids that differ in a few hex digits cluster. murmur3's finalizer spreads them.
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export class SnapshotLines {
  private readonly chunks: Buffer[] = [];
  /** Filed lines still held, per chunk. */
  private readonly held: number[] = [];
  /** 0: empty; TOMBSTONE: removed; else a line index + 1. */
  private slots = new Float64Array(1 << 16);
  /** The LinePos of each line index. */
  private posOf = new Float64Array(1 << 16);
  /** Line indexes handed out. */
  private indexes = 0;
  /** While above 0, chunks whose lines are all removed are kept (see pin()). */
  private pins = 0;
  private filed = 0;
  /** Slots not empty: filed lines and tombstones. */
  private used = 0;
  private readonly idEnd = new Int32Array(1);

  /** Keep a chunk of whole lines; returns its number for add(). */
  addChunk(buf: Buffer): number {
    this.chunks.push(buf);
    this.held.push(0);
    return this.chunks.length - 1;
  }

  get size(): number {
    return this.filed;
  }

  /** Make room for n lines in all, so filing them never rehashes. */
  reserve(n: number): void {
    let cap = this.slots.length;
    while (cap < n * 2) cap *= 2;
    if (cap !== this.slots.length) this.rehash(cap);
    this.growIndexes(n);
  }

  /** File the line at `start` of chunk `c`, its id hashed to `hash` by idHash(); returns its line index. */
  add(c: number, start: number, hash: number): number {
    if ((this.used + 1) * 2 > this.slots.length) this.rehash((this.filed + 1) * 4 > this.slots.length ? this.slots.length * 2 : this.slots.length);
    const index = this.indexes++;
    this.growIndexes(index + 1);
    this.posOf[index] = c * CHUNK_SPAN + start;
    this.place(hash, index + 1);
    this.filed++;
    this.used++;
    this.held[c]!++;
    return index;
  }

  /**
   * The id of the line with this index; undefined once its chunk was let go.
   * A removed line may still answer (its chunk holds other lines, or is
   * pinned): the caller asks the table whether the id is still held.
   */
  idOf(index: number): string | undefined {
    const pos = this.posOf[index]!;
    const buf = this.chunks[Math.floor(pos / CHUNK_SPAN)]!;
    if (buf === NO_CHUNK) return undefined; // removed before a pin() kept it
    const at = (pos % CHUNK_SPAN) + 2;
    return buf.toString('latin1', at, buf.indexOf(0x22, at));
  }

  /**
   * Keep every chunk, even one whose lines are all removed, until unpin():
   * a reader that goes on over many ticks can still read ids of lines removed meanwhile.
   */
  pin(): void {
    this.pins++;
  }

  unpin(): void {
    if (--this.pins > 0) return;
    for (let c = 0; c < this.chunks.length; c++) this.releaseIfEmpty(c);
  }

  /** Let a chunk go if none of its lines was filed (add()), or all were removed. */
  releaseIfEmpty(c: number): void {
    if (this.held[c] === 0 && this.pins === 0) this.chunks[c] = NO_CHUNK;
  }

  /** Forget the line of `id`; true if it was filed. */
  remove(id: string): boolean {
    const mask = this.slots.length - 1;
    for (let s = stringHash(id) & mask; ; s = (s + 1) & mask) {
      const v = this.slots[s]!;
      if (v === 0) return false;
      if (v === TOMBSTONE || !this.idIs(this.posOf[v - 1]!, id)) continue;
      this.slots[s] = TOMBSTONE;
      this.filed--;
      const c = Math.floor(this.posOf[v - 1]! / CHUNK_SPAN);
      this.held[c]!--;
      this.releaseIfEmpty(c);
      return true;
    }
  }

  /** Where the line of `id` is, or -1. */
  find(id: string): LinePos {
    const mask = this.slots.length - 1;
    for (let s = stringHash(id) & mask; ; s = (s + 1) & mask) {
      const v = this.slots[s]!;
      if (v === 0) return -1;
      if (v !== TOMBSTONE && this.idIs(this.posOf[v - 1]!, id)) return this.posOf[v - 1]!;
    }
  }

  /** The line at pos, as text (without its newline). */
  line(pos: LinePos): string {
    const buf = this.chunks[Math.floor(pos / CHUNK_SPAN)]!;
    const start = pos % CHUNK_SPAN;
    return buf.toString('utf8', start, buf.indexOf(10, start));
  }

  /** The first letter of the line's state (the field after the id). */
  stateLetter(pos: LinePos, id: string): number {
    return this.chunks[Math.floor(pos / CHUNK_SPAN)]![(pos % CHUNK_SPAN) + 2 + id.length + 3]!;
  }

  private idIs(pos: LinePos, id: string): boolean {
    const buf = this.chunks[Math.floor(pos / CHUNK_SPAN)]!;
    const at = (pos % CHUNK_SPAN) + 2;
    for (let k = 0; k < id.length; k++) if (buf[at + k] !== id.charCodeAt(k)) return false;
    return buf[at + id.length] === 0x22;
  }

  private growIndexes(n: number): void {
    if (n <= this.posOf.length) return;
    let cap = this.posOf.length;
    while (cap < n) cap *= 2;
    const posOf = new Float64Array(cap);
    posOf.set(this.posOf);
    this.posOf = posOf;
  }

  private place(hash: number, v: number): void {
    const mask = this.slots.length - 1;
    let s = hash & mask;
    while (this.slots[s] !== 0) s = (s + 1) & mask;
    this.slots[s] = v;
  }

  private rehash(cap: number): void {
    const old = this.slots;
    this.slots = new Float64Array(cap);
    this.used = this.filed;
    for (let i = 0; i < old.length; i++) {
      const v = old[i]!;
      if (v === 0 || v === TOMBSTONE) continue;
      const pos = this.posOf[v - 1]!;
      const buf = this.chunks[Math.floor(pos / CHUNK_SPAN)]!;
      const at = (pos % CHUNK_SPAN) + 2;
      this.place(idHash(buf, at, buf.length, this.idEnd), v);
    }
  }
}
