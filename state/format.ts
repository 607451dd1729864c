// Format versions of the files in a state directory (docs/format.md). Every
// journal segment and every snapshot names, in its header line, the version it
// was written in. This release writes FORMAT and reads every version from
// OLDEST_FORMAT up; a file of a newer version is refused before anything in the
// directory is read, applied or changed (checkDirectoryFormats), so a newer
// directory is never half-read.
import fs from 'node:fs';
import path from 'node:path';
import { FormatError } from './errors.ts';

/**
 * 1: keel 0.1.0.
 * 2: the server journal's `forget` record (retention) and `claim-start`
 *    event, and the ledger's `executing` as a command's first record; an
 *    old-format last segment is closed at open, so no new record lands in a
 *    format-1 file.
 * 3: the server journal's command records as arrays (state/command-record.ts);
 *    object records of formats 1 and 2 are still read.
 */
export const FORMAT = 3;
export const OLDEST_FORMAT = 1;

export type FileKind = 'journal' | 'snapshot';

/** The format a header names, if this release reads it; else a FormatError naming both versions. */
export function checkFormat(file: string, kind: FileKind, format: unknown): number {
  if (typeof format === 'number' && Number.isInteger(format) && format >= OLDEST_FORMAT && format <= FORMAT) return format;
  const newer = typeof format === 'number' && format > FORMAT;
  throw new FormatError(
    file,
    `${kind} format ${String(format)} is not supported: this keel reads formats ${OLDEST_FORMAT} to ${FORMAT}`,
    newer
      ? `It was written by a newer keel; run that release or a later one. Nothing in the directory was read or changed.`
      : 'Run the keel release that wrote it.',
  );
}

const HEADER_BYTES = 4096;

/** The parsed header line of a file; undefined if it has none (the file's reader reports that damage). */
export function readHeader(file: string): Record<string, unknown> | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const buf = Buffer.alloc(HEADER_BYTES);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const end = buf.subarray(0, n).indexOf(10);
    if (end < 0) return undefined;
    const header: unknown = JSON.parse(buf.toString('utf8', 0, end));
    return header !== null && typeof header === 'object' ? (header as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Check the format of the snapshot and of every journal segment in `dir`,
 * reading only their header lines. Throws FormatError for a version this
 * release does not read; returns the oldest version found (FORMAT if none).
 */
export function checkDirectoryFormats(dir: string, snapshotFile: string, segmentFiles: readonly string[]): number {
  let oldest = FORMAT;
  const check = (file: string, kind: FileKind): void => {
    const header = readHeader(file);
    if (header?.keel !== kind || header.format === undefined) return;
    oldest = Math.min(oldest, checkFormat(file, kind, header.format));
  };
  check(path.join(dir, snapshotFile), 'snapshot');
  for (const file of segmentFiles) check(file, 'journal');
  return oldest;
}

/** The format of one file's header, if it names one this release reads. */
export function fileFormat(file: string, kind: FileKind): number | undefined {
  const header = readHeader(file);
  return header?.keel === kind && typeof header.format === 'number' ? header.format : undefined;
}
