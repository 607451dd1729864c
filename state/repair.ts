// Repair: the one place that removes journal bytes that are not a torn tail.
// It runs only when the operator asked for it (--repair) and cuts at the first
// damaged record: that record and everything after it are dropped, so the
// journal again ends on a state that replays cleanly. As etcd's WAL repair
// does, it first keeps a copy of every file it cuts or removes, as
// `<segment>.broken` beside it: the dropped records may still be worth
// reading by hand, and a repair must not be the last word on them.
import fs from 'node:fs';
import { crashPoint } from './crash-points.ts';
import { syncDir, truncateDurably } from './fsio.ts';

export interface Cut {
  /** Record lines dropped (a torn last line counts as one). */
  dropped: number;
  /** The copies kept of what was cut: one `<segment>.broken` per file touched. */
  kept: string[];
}

/**
 * Keep a copy of `segs[0]` and every later segment, then cut `segs[0]` at
 * `offset` and remove the later ones. The copies are durable before anything
 * is cut: if one cannot be written (a full disk), nothing is cut and this throws.
 */
export function cutJournal(dir: string, segs: ReadonlyArray<{ file: string }>, offset: number): Cut {
  let dropped = 0;
  const kept: string[] = [];
  segs.forEach((seg, i) => {
    const buf = fs.readFileSync(seg.file);
    const from = i === 0 ? offset : 0;
    dropped += countLines(buf, from) - (from === 0 ? 1 : 0); // a header is no record
    kept.push(keepCopy(seg.file));
  });
  syncDir(dir);
  // A crash from here on leaves copies beside a journal that a repeated
  // --repair cuts again (keeping a second copy) or finds already cut.
  crashPoint('repair:copied');
  segs.forEach((seg, i) => {
    if (i === 0 && offset > 0) truncateDurably(seg.file, offset);
    else fs.unlinkSync(seg.file);
    crashPoint('repair:cut');
  });
  syncDir(dir);
  return { dropped: Math.max(0, dropped), kept };
}

/** Copy file to `<file>.broken` (or `.broken.N` if an earlier repair left one), fsynced. */
function keepCopy(file: string): string {
  let copy = `${file}.broken`;
  for (let n = 1; fs.existsSync(copy); n++) copy = `${file}.broken.${n}`;
  fs.copyFileSync(file, copy, fs.constants.COPYFILE_EXCL);
  const fd = fs.openSync(copy, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return copy;
}

function countLines(buf: Buffer, from: number): number {
  // A NUL tail (space the journal reserved ahead) holds no line.
  let end = buf.length;
  while (end > from && buf[end - 1] === 0) end--;
  let n = 0;
  for (let i = buf.indexOf(10, from); i >= 0 && i < end; i = buf.indexOf(10, i + 1)) n++;
  if (end > from && buf[end - 1] !== 10) n++; // a torn last line
  return n;
}
