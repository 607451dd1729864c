// The fd-level calls the state layer needs. The callback API is used (not
// fs/promises FileHandle) because it is measurably cheaper per call on the
// group-commit hot path.
import fs from 'node:fs';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';

// Synchronous: a batch lands in the page cache in microseconds, where an async
// write costs a threadpool round trip on the path of every acknowledgement.
export function writeAllSync(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off, buf.length - off);
}

// The same at an explicit file offset, for a file opened without O_APPEND.
export function writeAllAtSync(fd: number, buf: Buffer, position: number): void {
  for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off, buf.length - off, position + off);
}

// fdatasync: the data and the file size reach the disk; the mtime need not.
export function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

// A rename or unlink is durable only once the directory itself is fsynced.
export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// Write a small file so that a reader sees either no file or all of it, and
// the file survives a power cut. write-file-atomic does the temp file, fsync
// and rename (with a unique temp name, so two writers never share one); it
// does not fsync the directory, which a rename needs to be durable.
export function writeFileDurably(file: string, data: string): void {
  writeFileAtomic.sync(file, data, { fsync: true });
  syncDir(path.dirname(file));
}

// Cut a file to `length` bytes and make the cut durable before anything is
// appended after it.
export function truncateDurably(file: string, length: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.ftruncateSync(fd, length);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// Reading big files: chunks of whole lines, each read straight into the
// buffer that is kept (a snapshot's lines can stay where they were read).
const LINES_CHUNK = 32 << 20;

/**
 * Bytes [from, to) of fd as buffers of whole lines, in order; each ends in a
 * newline, except the last if the range does not. A line longer than a chunk
 * gets a buffer of its own size.
 */
export function readWholeLines(fd: number, from: number, to: number, chunkBytes = LINES_CHUNK): Buffer[] {
  const out: Buffer[] = [];
  let carry: Buffer | undefined; // the start of a line the last chunk cut
  for (let pos = from; pos < to; ) {
    const have = carry?.length ?? 0;
    const buf = Buffer.allocUnsafe(have + Math.min(chunkBytes, to - pos));
    carry?.copy(buf, 0);
    let n = have;
    while (n < buf.length) {
      const got = fs.readSync(fd, buf, n, buf.length - n, pos);
      if (got === 0) throw new Error(`file ended at byte ${pos}, before ${to}`);
      n += got;
      pos += got;
    }
    const cut = pos === to ? buf.length : buf.lastIndexOf(10) + 1;
    if (cut > 0) out.push(buf.subarray(0, cut));
    carry = cut < buf.length ? buf.subarray(cut) : undefined;
  }
  if (carry) out.push(carry);
  return out;
}
