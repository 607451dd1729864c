// A full disk is the one write failure keel waits out instead of exiting.
// ENOSPC (or EDQUOT) from write() means nothing about the bytes already in the
// file: the write was refused, the page cache still holds only what was
// written before, and cutting the file back to that length undoes a partial
// write. So the journal keeps the refused batch in memory and writes it again
// once there is space. A failed fsync, or EIO from anything, is different:
// after it the kernel may have dropped dirty pages it could not write, so what
// the file holds is unknown, and only a restart (replay from what is really on
// disk) gets back to a state that is true.
import fs from 'node:fs';

const DISK_FULL_CODES: ReadonlySet<string> = new Set(['ENOSPC', 'EDQUOT']);

/** How often a journal on a full disk tries its write again. */
export const DISK_FULL_RETRY_MS = 1000;

export function isDiskFull(err: unknown): err is NodeJS.ErrnoException {
  return DISK_FULL_CODES.has((err as NodeJS.ErrnoException | undefined)?.code ?? '');
}

/** Whether the file system holding dir has no block left for this process. */
export function noSpaceLeft(dir: string): boolean {
  try {
    return fs.statfsSync(dir).bavail === 0;
  } catch {
    return false; // cannot tell: the first write will
  }
}

/** A transition refused because the journal cannot be written until the disk has space. */
export class DiskFullError extends Error {
  readonly dir: string;
  readonly retryAfterMs: number;
  constructor(dir: string, cause: Error) {
    super(`disk full: ${dir} cannot be written (${cause.message}); nothing was changed, retry once there is space`);
    this.name = 'DiskFullError';
    this.dir = dir;
    this.retryAfterMs = DISK_FULL_RETRY_MS;
  }
}
