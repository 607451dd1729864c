/*
 * The journal: an append-only log in segment files `journal-<firstSeq>.jsonl`
 * (firstSeq zero-padded to 16 digits, so file names sort by sequence).
 *
 * Line 1 of a segment is its header:  {"keel":"journal","format":2,"firstSeq":N}
 * format is the version the segment was written in (state/format.ts); a
 * reader refuses one it does not know.
 * Every other line is one record:     {"seq":N,"crc":"xxxxxxxx","rec":<JSON>}
 *   seq  rises by exactly one from record to record, across segments;
 *   crc  CRC-32, 8 hex digits, of the text `${seq}:` followed by <JSON> as written.
 *
 * After the last line, a segment may hold NUL bytes up to its size: the
 * space reserved ahead (RESERVE_BYTES). Batches are written at the end of the
 * data, inside the file's size, so an fdatasync need not commit a new size
 * each time; a closed segment is cut back to its data. A line that starts
 * with NUL, with nothing but NULs after it, is where the data ends.
 *
 * A line that lacks its newline, does not have that shape, fails its crc or
 * breaks the seq chain is bad, and so is one holding NULs that are not that
 * tail. A bad *last* line of the *last* segment (last before any NUL tail) is
 * a torn write: open cuts the file there and reports it. A bad line anywhere else
 * is corruption: open throws CorruptionError naming the file and byte offset,
 * and only an explicit repair (state/repair.ts) cuts there. The reader is
 * state/segment-scan.ts; open is state/replay.ts.
 *
 * append() resolves once the write and the fdatasync holding its records have
 * returned. Appends that arrive while a flush is in flight are group-committed:
 * one write and one fdatasync for the whole batch. Records the owner marks
 * `deferrable` start no flush of their own: they go with the next one, or
 * deferMs later, and their append still resolves only once they are durable.
 * appendUnsynced() records are written at once with no fdatasync of their
 * own: in the file (the kernel's page cache), a SIGKILL keeps them and an OS
 * crash may not. The next fdatasync covers them, whoever asks for it: it
 * syncs every line written before it. They do not wait for an fdatasync in
 * flight: what is queued is written ahead of it, and synced by the next one.
 * What an OS crash can damage is still only what follows the last fdatasync.
 *
 * A write refused with ENOSPC is cut back off the file and its batch kept
 * queued; the journal is then `diskFull` and writes it again every
 * DISK_FULL_RETRY_MS until it goes through (state/disk-full.ts says why
 * this is safe for a full disk and not for a failed fsync). Appends made
 * meanwhile queue behind it: the owner decides whether to make any.
 */
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { crashPoint } from './crash-points.ts';
import { DISK_FULL_RETRY_MS, DiskFullError, isDiskFull, noSpaceLeft } from './disk-full.ts';
import { datasync, writeAllAtSync, writeFileDurably } from './fsio.ts';
import { FORMAT } from './format.ts';

/** The format new segments are written in. */
export const JOURNAL_FORMAT = FORMAT;
const SEGMENT_RE = /^journal-(\d{16})\.jsonl$/;

export function segmentName(firstSeq: number): string {
  return `journal-${String(firstSeq).padStart(16, '0')}.jsonl`;
}

export function listSegments(dir: string): Array<{ file: string; firstSeq: number }> {
  return fs
    .readdirSync(dir)
    .map((name) => ({ name, m: SEGMENT_RE.exec(name) }))
    .filter((x) => x.m)
    .map((x) => ({ file: path.join(dir, x.name), firstSeq: Number(x.m![1]) }))
    .sort((a, b) => a.firstSeq - b.firstSeq);
}

export function checksum(seq: number, recText: string): string {
  return crc32(recText, seqCrc(seq)).toString(16).padStart(8, '0');
}

const CRC_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

/**
 * CRC-32 of the text `${seq}:`, as zlib's crc32 computes it, without making
 * that string: a record's crc starts from it (replay does this per record).
 */
export function seqCrc(seq: number): number {
  let div = 1;
  while (div * 10 <= seq) div *= 10;
  let c = -1;
  for (let rest = seq; div >= 1; div /= 10) {
    const digit = Math.floor(rest / div);
    rest -= digit * div;
    c = CRC_TABLE[(c ^ (0x30 + digit)) & 0xff]! ^ (c >>> 8);
  }
  c = CRC_TABLE[(c ^ 0x3a) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

export function encodeRecord(seq: number, rec: unknown): string {
  const text = JSON.stringify(rec);
  return `{"seq":${seq},"crc":"${checksum(seq, text)}","rec":${text}}\n`;
}

export interface JournalStats {
  fsyncs: number;
  fsyncMicros: number;
  bytes: number;
  records: number;
  /** Times a write met a full disk and the journal began waiting for space. */
  diskFullEpisodes: number;
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

interface Batch {
  /** Lines not yet written. */
  lines: string[];
  /** The seq of the first of `lines`, once there is one. */
  firstSeq?: number;
  /** The journal's last seq when the batch last took an append: what its waiters need durable. */
  lastSeq: number;
  /** Resolved once the batch is durable. */
  waiters: Waiter[];
  /** Resolved once the batch is written, durable or not, or the disk is found full (appendUnsynced). */
  written: Array<{ resolve: (how: 'written' | 'queued') => void; reject: (e: Error) => void }>;
  rotate?: { firstSeq: number; resolve: () => void; reject: (e: Error) => void };
  /** Something in it wants a flush now, write and fdatasync (not only deferrable records). */
  urgent: boolean;
  /** Something in it wants writing now, with no fdatasync of its own (appendUnsynced). */
  writeNow: boolean;
}

/**
 * How far ahead of its data a segment's file is extended (ftruncate, so the
 * file's size is set once per step, not by every write). An fdatasync after a
 * write that grows the file must also commit the new size through the file
 * system's journal, where concurrent syncs queue; a write inside the file's
 * size needs that only when it fills a new block. 1 MiB is some 5,000 records:
 * one size change per 5,000 instead of one per batch, and no more than 1 MiB
 * of NULs left in a crashed segment.
 */
export const RESERVE_BYTES = 1 << 20;

/** How long deferrable records wait for a flush to ride along with, by default. */
export const DEFER_MS = 10;

/** An open journal, positioned to append after its last record. */
export class Journal {
  readonly dir: string;
  readonly stats: JournalStats = { fsyncs: 0, fsyncMicros: 0, bytes: 0, records: 0, diskFullEpisodes: 0 };
  private fd: number;
  private seq: number;
  private segmentFirst: number;
  private segmentBytes: number;
  private batches: Batch[] = [];
  /** The last seq written to the file, and the last one an fdatasync covered. */
  private writtenSeq: number;
  private syncedSeq: number;
  /** Waiters whose records are written, in seq order, each group waiting for an fdatasync through `through`. */
  private unsynced: Array<{ through: number; waiters: Waiter[] }> = [];
  private flushing = false;
  /** The batch the flush loop is writing or syncing. */
  private inFlight: Batch | undefined;
  private writeAheadQueued = false;
  private failed: Error | undefined;
  private deferTimer: NodeJS.Timeout | undefined;
  /** Where the current segment's data ends: where the next write goes, and a refused one is cut back to. */
  private fileBytes: number;
  /** The current segment file's size: its data, then NULs up to here (RESERVE_BYTES). */
  private reserved: number;
  /** The ENOSPC that stopped writes, while the disk stays full. */
  private full: Error | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly diskListeners = new Set<(full: Error | undefined) => void>();
  retryMs = DISK_FULL_RETRY_MS;
  /**
   * Records this accepts may wait for a later flush (see the top of this
   * file): for records whose loss in a crash costs a repeated, idempotent
   * step and no guarantee, such as the agent ledger's `reported`.
   */
  deferrable: ((rec: unknown) => boolean) | undefined;
  deferMs = DEFER_MS;

  /**
   * Open segment `segmentFirst` to append after its data, which ends at
   * `dataEnd` (the scan's goodEnd); a NUL tail past it, reserved by the
   * process that wrote it, is written over.
   */
  constructor(dir: string, lastSeq: number, segmentFirst: number, dataEnd: number) {
    this.dir = dir;
    this.seq = lastSeq;
    this.writtenSeq = lastSeq;
    this.syncedSeq = lastSeq;
    this.segmentFirst = segmentFirst;
    this.segmentBytes = dataEnd;
    this.fd = -1;
    this.fileBytes = 0;
    this.reserved = 0;
    this.openSegment(segmentFirst, dataEnd);
  }

  /**
   * Creates the first segment of an empty directory (or after a snapshot at
   * seq); returns its length, where its data ends.
   */
  static createSegment(dir: string, firstSeq: number): number {
    const header = `${JSON.stringify({ keel: 'journal', format: JOURNAL_FORMAT, firstSeq })}\n`;
    writeFileDurably(path.join(dir, segmentName(firstSeq)), header);
    return Buffer.byteLength(header);
  }

  /** Written at explicit offsets (not O_APPEND), into the space reserved ahead. */
  private openSegment(firstSeq: number, dataEnd: number): void {
    this.fd = fs.openSync(path.join(this.dir, segmentName(firstSeq)), 'r+');
    this.fileBytes = dataEnd;
    this.reserved = fs.fstatSync(this.fd).size;
  }

  /** Close the current segment (its reserve cut off) and go on in a new one, created durably first. */
  private moveToSegment(firstSeq: number): void {
    this.cutReserve();
    const dataEnd = Journal.createSegment(this.dir, firstSeq);
    fs.closeSync(this.fd);
    this.openSegment(firstSeq, dataEnd);
  }

  /**
   * Cut the current segment back to its data: before it is closed, so a
   * closed segment is plain JSONL, and after a refused write, so the file
   * ends on a whole record. Not synced: a NUL tail left by a crash is read
   * correctly anyway.
   */
  private cutReserve(): void {
    if (this.reserved > this.fileBytes) fs.ftruncateSync(this.fd, this.fileBytes);
    this.reserved = this.fileBytes;
  }

  /** The write or fsync error that stopped this journal, if one did. */
  get broken(): Error | undefined {
    return this.failed;
  }

  /** The ENOSPC that holds writes back, while the disk is full; queued records wait. */
  get diskFull(): Error | undefined {
    return this.full;
  }

  /** Called with the error when the disk fills, and with undefined once writes go through again. */
  onDiskFull(fn: (full: Error | undefined) => void): () => void {
    this.diskListeners.add(fn);
    return () => this.diskListeners.delete(fn);
  }

  /** Resolves once the disk is not (or no longer) full. */
  whenSpace(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.onDiskFull((full) => {
        if (full) return;
        off();
        resolve();
      });
    });
  }

  /** At open: the file system has no space left, so start waiting for it before any write fails. */
  markDiskFull(err: Error): void {
    this.enterDiskFull(err);
  }

  get lastSeq(): number {
    return this.seq;
  }

  /** Bytes in the current segment, flushed or queued. */
  get currentSegmentBytes(): number {
    return this.segmentBytes;
  }

  get currentSegmentFirstSeq(): number {
    return this.segmentFirst;
  }

  /** Queue records; resolves when they are written and fdatasynced. */
  append(recs: readonly unknown[]): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const batch = this.queue(recs);
    const done = new Promise<void>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (recs.length > 0 && this.deferrable !== undefined && recs.every(this.deferrable)) this.deferFlush();
    else this.kick(batch);
    return done;
  }

  /**
   * Queue records to be written at once, with no fdatasync of their own;
   * resolves `written` once they are in the file, or `queued` as soon as the
   * disk is found full (they are written once there is space). They are
   * durable after the next fdatasync: another append's, a rotation's, or sync()'s.
   */
  appendUnsynced(recs: readonly unknown[]): Promise<'written' | 'queued'> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.full) {
      this.queue(recs);
      return Promise.resolve('queued');
    }
    const batch = this.queue(recs);
    const written = new Promise<'written' | 'queued'>((resolve, reject) => batch.written.push({ resolve, reject }));
    this.kick(batch, false);
    return written;
  }

  /** The last seq known to be durable (covered by an fdatasync). */
  get durableSeq(): number {
    return this.syncedSeq;
  }

  /**
   * At open, for an owner whose records may have been written by a process
   * killed before their fdatasync: the current segment's records count as
   * written, not durable, and the next sync() covers them.
   */
  distrustTail(): void {
    this.syncedSeq = Math.min(this.syncedSeq, this.segmentFirst - 1);
  }

  /** Add records to the open batch, numbered. */
  private queue(recs: readonly unknown[]): Batch {
    const batch = this.openBatch();
    if (recs.length > 0) batch.firstSeq ??= this.seq + 1;
    for (const rec of recs) {
      const line = encodeRecord(++this.seq, rec);
      batch.lines.push(line);
      this.segmentBytes += line.length;
    }
    batch.lastSeq = this.seq;
    return batch;
  }

  /**
   * Whether a record appended now would share a write and fdatasync with
   * record `seq`: that record is still queued, and no rotation closed its batch.
   */
  joinsBatchOf(seq: number): boolean {
    const batch = this.batches[this.batches.length - 1];
    return batch !== undefined && !batch.rotate && batch.firstSeq !== undefined && batch.firstSeq <= seq;
  }

  /** Resolves once everything appended so far is durable; an fdatasync only if something is not. */
  sync(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.flushing && this.batches.length === 0 && this.syncedSeq === this.writtenSeq) return Promise.resolve();
    return this.append([]).then(() => undefined);
  }

  /**
   * Close the current segment after everything queued so far and start a new
   * one; records appended after this call go to the new segment. Resolves with
   * the last seq of the closed segment once the new one exists on disk.
   */
  rotate(): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    const cut = this.seq;
    const b = this.openBatch();
    b.lastSeq = cut;
    const done = new Promise<void>((resolve, reject) => (b.rotate = { firstSeq: cut + 1, resolve, reject }));
    this.segmentFirst = cut + 1;
    this.segmentBytes = 0;
    this.kick(b);
    return done.then(() => cut);
  }

  /**
   * At open, before anything is appended: go on in a new segment, written in
   * this release's format, so no record of this release lands in a file whose
   * header names an older format. An empty current segment (no records) is
   * replaced by the new one of the same name.
   */
  startNewSegment(): void {
    const first = this.seq + 1;
    this.moveToSegment(first);
    this.segmentFirst = first;
    this.segmentBytes = 0;
  }

  close(): void {
    clearTimeout(this.deferTimer);
    clearTimeout(this.retryTimer);
    if (this.fd >= 0) {
      try {
        this.cutReserve();
      } catch {
        // The NUL tail stays; readers skip it (see the top of this file).
      }
      fs.closeSync(this.fd);
    }
    this.fd = -1;
    this.failed ??= new Error('journal closed');
    // Only a full disk leaves records queued at close: they were never written.
    const unwritten = new DiskFullError(this.dir, this.full ?? new Error('closed before the disk had space'));
    for (const b of this.batches.splice(0)) {
      for (const w of [...b.waiters, ...b.written]) w.reject(unwritten);
      b.rotate?.reject(this.failed);
    }
    // Written, never synced (close() follows a sync unless the disk is full).
    for (const g of this.unsynced.splice(0)) for (const w of g.waiters) w.reject(this.failed);
  }

  /** The batch new records join: the last one, unless a rotation closes it. */
  private openBatch(): Batch {
    let batch = this.batches[this.batches.length - 1];
    if (!batch || batch.rotate) {
      batch = { lines: [], lastSeq: this.seq, waiters: [], written: [], urgent: false, writeNow: false };
      this.batches.push(batch);
    }
    return batch;
  }

  /** Start a flush for `batch`: written and fdatasynced, or (`sync` false) only written. */
  private kick(batch: Batch, sync = true): void {
    if (sync) batch.urgent = true;
    else batch.writeNow = true;
    // On a full disk the retry timer flushes, not each append.
    if (this.full) return;
    if (!this.flushing) {
      this.flushing = true;
      // Let the rest of this tick's appends join the batch.
      process.nextTick(() => void this.flush());
    } else if (!sync && !this.writeAheadQueued) {
      // Written now, not after the fdatasync in flight: its caller waits for the write alone.
      this.writeAheadQueued = true;
      process.nextTick(() => this.writeAhead());
    }
  }

  /**
   * Write every queued batch now, in order, while the flush loop waits for
   * an fdatasync; the loop then syncs those that need it. Not past a
   * rotation: what follows one belongs to a segment not yet created.
   */
  private writeAhead(): void {
    this.writeAheadQueued = false;
    if (this.failed || this.full || this.inFlight?.rotate) return;
    for (const batch of this.batches) {
      try {
        this.writeLines(batch);
      } catch (err) {
        // A full disk: left for the flush loop, which meets it again and waits for space.
        if (!isDiskFull(err)) this.fail(err);
        return;
      }
      if (batch.rotate) return;
    }
  }

  /** Deferrable records wait for the next flush, or deferMs at most. */
  private deferFlush(): void {
    this.deferTimer ??= setTimeout(() => {
      this.deferTimer = undefined;
      // Still queued, or written (along with unsynced records) and waiting for an fdatasync.
      if ((this.batches.length > 0 || this.unsynced.length > 0) && !this.failed) this.kick(this.openBatch());
    }, this.deferMs);
  }

  private async flush(): Promise<void> {
    // Deferrable-only batches are left for a later flush (deferFlush's timer
    // is armed); anything urgent or to be written behind them takes them along, in order.
    while (this.batches.some((b) => b.urgent || b.writeNow)) {
      // Out of the queue while it is written, so nothing joins it meanwhile;
      // a full disk puts it back at the front for the retry.
      const batch = this.batches.shift()!;
      this.inFlight = batch;
      let syncing = false;
      try {
        this.writeLines(batch);
        // One fdatasync covers every line written before it: this batch's,
        // earlier unsynced ones, and any written ahead meanwhile.
        if ((batch.urgent || batch.rotate) && this.syncedSeq < batch.lastSeq) {
          const through = this.writtenSeq;
          const t0 = process.hrtime.bigint();
          syncing = true;
          await datasync(this.fd);
          syncing = false;
          this.stats.fsyncMicros += Number(process.hrtime.bigint() - t0) / 1000;
          this.stats.fsyncs++;
          this.syncedSeq = through;
          crashPoint('journal:synced');
          // A write ahead failed meanwhile: everything waiting was refused.
          if (this.failed) break;
        }
        this.resolveDurable();
        if (batch.rotate) {
          this.moveToSegment(batch.rotate.firstSeq);
        }
      } catch (err) {
        this.inFlight = undefined;
        // ENOSPC from fsync is a failed fsync, not a refused write: fatal.
        if (isDiskFull(err) && !syncing && !this.failed) {
          this.batches.unshift(batch);
          this.enterDiskFull(err);
          return;
        }
        this.fail(err, batch);
        this.flushing = false;
        return;
      }
      batch.rotate?.resolve();
    }
    this.inFlight = undefined;
    this.flushing = false;
    if (this.full) this.leaveDiskFull();
    if (this.batches.length === 0 && this.unsynced.length === 0) {
      clearTimeout(this.deferTimer);
      this.deferTimer = undefined;
    }
  }

  /**
   * Write a batch's lines, if it has any not yet written: its `written`
   * waiters resolve now, its durable ones wait for an fdatasync through its
   * lastSeq. A batch written ahead may take more records afterwards.
   */
  private writeLines(batch: Batch): void {
    if (batch.lines.length > 0) {
      const buf = Buffer.from(batch.lines.join(''));
      this.writeOrCutBack(buf);
      crashPoint('journal:written');
      this.writtenSeq = batch.firstSeq! + batch.lines.length - 1;
      this.stats.bytes += buf.length;
      this.stats.records += batch.lines.length;
      // Written: a retry after a full disk must not write them twice.
      batch.lines = [];
      batch.firstSeq = undefined;
      for (const w of batch.written) w.resolve('written');
      batch.written = [];
    }
    if (batch.waiters.length > 0) {
      this.unsynced.push({ through: batch.lastSeq, waiters: batch.waiters });
      batch.waiters = [];
    }
  }

  /** Resolve the waiters an fdatasync has covered. */
  private resolveDurable(): void {
    let n = 0;
    while (n < this.unsynced.length && this.unsynced[n]!.through <= this.syncedSeq) n++;
    for (const g of this.unsynced.splice(0, n)) for (const w of g.waiters) w.resolve();
  }

  /**
   * After a failed fsync (or EIO) the file's tail is unknown: refuse all
   * further appends and everything waiting. The process must restart and
   * recover from disk.
   */
  private fail(err: unknown, inFlight?: Batch): void {
    this.failed = err instanceof Error ? err : new Error(String(err));
    for (const g of this.unsynced.splice(0)) for (const w of g.waiters) w.reject(this.failed);
    for (const b of inFlight ? [inFlight, ...this.batches] : this.batches) {
      for (const w of [...b.waiters, ...b.written]) w.reject(this.failed);
      b.rotate?.reject(this.failed);
    }
    this.batches = [];
    clearTimeout(this.deferTimer);
    clearTimeout(this.retryTimer);
  }

  /**
   * Write buf at the end of the segment's data, first extending the file by
   * RESERVE_BYTES steps if buf would pass its size. If the disk is full, cut
   * the file back to its data, so it ends on a whole record again (the next
   * write reserves anew), and rethrow the ENOSPC; a cut that fails is no
   * longer a full disk.
   */
  private writeOrCutBack(buf: Buffer): void {
    const end = this.fileBytes + buf.length;
    try {
      if (end > this.reserved) {
        const reserve = Math.ceil(end / RESERVE_BYTES) * RESERVE_BYTES;
        fs.ftruncateSync(this.fd, reserve);
        this.reserved = reserve;
      }
      writeAllAtSync(this.fd, buf, this.fileBytes);
    } catch (err) {
      if (!isDiskFull(err)) throw err;
      this.cutReserve();
      throw err;
    }
    this.fileBytes = end;
  }

  private enterDiskFull(err: Error): void {
    this.flushing = false;
    this.retryTimer ??= setTimeout(() => this.retry(), this.retryMs);
    if (this.full) return;
    this.full = err;
    this.stats.diskFullEpisodes++;
    // Their callers wait for a write, which now waits for space.
    for (const b of this.batches) for (const w of b.written.splice(0)) w.resolve('queued');
    for (const fn of [...this.diskListeners]) fn(err);
  }

  /** Write what waits again; with nothing waiting, ask the file system whether there is space. */
  private retry(): void {
    this.retryTimer = undefined;
    if (this.failed || this.fd < 0) return;
    if (this.batches.length === 0) {
      if (noSpaceLeft(this.dir)) this.enterDiskFull(this.full!);
      else this.leaveDiskFull();
      return;
    }
    for (const b of this.batches) b.urgent = true;
    this.flushing = true;
    void this.flush();
  }

  private leaveDiskFull(): void {
    if (!this.full) return;
    this.full = undefined;
    for (const fn of [...this.diskListeners]) fn(undefined);
  }
}
