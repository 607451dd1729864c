// Opening a journal: read every segment after the snapshot, cut a torn tail,
// hand each record to the caller in order, and return the journal positioned
// to append. Damage anywhere but the tail stops the open (see journal.ts).
import fs from 'node:fs';
import { CorruptionError } from './errors.ts';
import { Journal, listSegments } from './journal.ts';
import { scanSegment } from './segment-scan.ts';
import { cutJournal } from './repair.ts';
import { syncDir, truncateDurably } from './fsio.ts';

export type Log = (msg: string, fields?: Record<string, unknown>) => void;

export interface ReplayOptions {
  /** Records up to this seq are already in the snapshot. */
  afterSeq: number;
  /** Cut the journal at the first damaged record instead of refusing to open. */
  repair?: boolean;
  log?: Log;
  /** Applies one record; throws if the record does not follow the state so far. */
  onRecord(rec: unknown, seq: number): void;
}

export function openJournal(dir: string, opts: ReplayOptions): Journal {
  const log = opts.log ?? (() => {});
  let segs = listSegments(dir);

  // Segments wholly covered by the snapshot are leftovers of a compaction that
  // was interrupted before it deleted them: finish the job.
  const covered = segs.filter((s, i) => i + 1 < segs.length && segs[i + 1]!.firstSeq <= opts.afterSeq + 1);
  if (covered.length > 0) {
    for (const s of covered) fs.unlinkSync(s.file);
    syncDir(dir);
    segs = segs.slice(covered.length);
  }
  if (segs.length === 0) {
    return new Journal(dir, opts.afterSeq, opts.afterSeq + 1, Journal.createSegment(dir, opts.afterSeq + 1));
  }
  if (segs[0]!.firstSeq > opts.afterSeq + 1) {
    throw new CorruptionError(segs[0]!.file, 0, `records ${opts.afterSeq + 1}..${segs[0]!.firstSeq - 1} are missing (no segment holds them)`);
  }

  let lastSeq = segs[0]!.firstSeq - 1;
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const isLast = i === segs.length - 1;
    if (seg.firstSeq !== lastSeq + 1 && i > 0) {
      const reason = `segment starts at seq ${seg.firstSeq} where ${lastSeq + 1} was expected`;
      return damaged(dir, segs, i, 0, reason, opts, lastSeq, log);
    }
    let refused: { offset: number; reason: string; seq: number } | undefined;
    const scan = scanSegment(seg.file, seg.firstSeq, (rec, seq, offset) => {
      if (seq <= opts.afterSeq) return true;
      try {
        opts.onRecord(rec, seq);
        return true;
      } catch (err) {
        refused = { offset, seq, reason: `record ${seq} does not follow: ${err instanceof Error ? err.message : String(err)}` };
        return false;
      }
    });
    if (refused) return damaged(dir, segs, i, refused.offset, refused.reason, opts, refused.seq - 1, log);
    lastSeq = scan.lastSeq;
    if (scan.bad) {
      if (isLast && scan.bad.isLastLine && scan.bad.offset > 0) {
        truncateDurably(seg.file, scan.bad.offset);
        log('journal: cut a torn last record', { file: seg.file, offset: scan.bad.offset, reason: scan.bad.reason, bytes: scan.size - scan.bad.offset });
        return new Journal(dir, lastSeq, seg.firstSeq, scan.bad.offset);
      }
      return damaged(dir, segs, i, scan.bad.offset, scan.bad.reason, opts, lastSeq, log);
    }
    // goodEnd, not the file's size: a segment may end in a NUL tail (reserved space).
    if (isLast) return new Journal(dir, Math.max(lastSeq, opts.afterSeq), seg.firstSeq, scan.goodEnd);
  }
  throw new Error('unreachable');
}

function damaged(
  dir: string,
  segs: Array<{ file: string; firstSeq: number }>,
  index: number,
  offset: number,
  reason: string,
  opts: ReplayOptions,
  lastSeq: number,
  log: Log,
): Journal {
  const seg = segs[index]!;
  if (!opts.repair) throw new CorruptionError(seg.file, offset, reason);
  const cut = cutJournal(dir, segs.slice(index), offset);
  log('journal: repaired by cutting', { file: seg.file, offset, reason, droppedRecords: cut.dropped, keptCopies: cut.kept });
  const tail = offset > 0 ? seg : undefined;
  if (tail) return new Journal(dir, lastSeq, tail.firstSeq, offset);
  return new Journal(dir, lastSeq, lastSeq + 1, Journal.createSegment(dir, lastSeq + 1));
}
