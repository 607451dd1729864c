// Reading journal segments from a test. A segment that is open, or was left
// by a SIGKILL, runs on past its data in NUL bytes up to the space the
// journal reserved ahead (docs/format.md); these return the data alone.
import fs from 'node:fs';
import { listSegments } from '../../state/journal.ts';

/** The bytes of a segment before its NUL tail. */
export function segmentData(file: string): Buffer {
  const buf = fs.readFileSync(file);
  let end = buf.length;
  while (end > 0 && buf[end - 1] === 0) end--;
  return buf.subarray(0, end);
}

/** Every record line of every segment in dir, in order, parsed (headers left out). */
export function journalRecords<R = unknown>(dir: string): Array<{ seq: number; rec: R }> {
  return listSegments(dir).flatMap(({ file }) =>
    segmentData(file)
      .toString('utf8')
      .split('\n')
      .slice(1)
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { seq: number; rec: R }),
  );
}
