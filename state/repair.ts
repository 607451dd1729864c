// Repair: the one place that removes journal bytes that are not a torn tail.
// It runs only when the operator asked for it (--repair) and cuts at the first
// damaged record: that record and everything after it are dropped, so the
// journal again ends on a state that replays cleanly.
import fs from 'node:fs';
import { syncDir, truncateDurably } from './fsio.ts';

/**
 * Cut `segs[0]` at `offset` and delete every later segment.
 * Returns how many record lines were dropped.
 */
export function cutJournal(dir: string, segs: ReadonlyArray<{ file: string }>, offset: number): number {
  let dropped = 0;
  segs.forEach((seg, i) => {
    const buf = fs.readFileSync(seg.file);
    const from = i === 0 ? offset : 0;
    dropped += countLines(buf, from) - (from === 0 ? 1 : 0); // a header is no record
    if (i === 0 && offset > 0) truncateDurably(seg.file, offset);
    else fs.unlinkSync(seg.file);
  });
  syncDir(dir);
  return Math.max(0, dropped);
}

function countLines(buf: Buffer, from: number): number {
  let n = 0;
  for (let i = buf.indexOf(10, from); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  if (buf.length > from && buf[buf.length - 1] !== 10) n++; // a torn last line
  return n;
}
