// The fd-level calls the state layer needs. The callback API is used (not
// fs/promises FileHandle) because it is measurably cheaper per call on the
// group-commit hot path.
import fs from 'node:fs';

// Synchronous: a batch lands in the page cache in microseconds, where an async
// write costs a threadpool round trip on the path of every acknowledgement.
export function writeAllSync(fd: number, buf: Buffer): void {
  for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off, buf.length - off);
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

// Write a small file so that a reader sees either no file or all of it.
export function writeFileDurably(file: string, data: string): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  syncDir(dirnameOf(file));
}

function dirnameOf(file: string): string {
  const i = file.lastIndexOf('/');
  return i <= 0 ? (i === 0 ? '/' : '.') : file.slice(0, i);
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

// Reading big files: a whole-file Buffer of hundreds of MB costs more in page
// faults than the reading itself, so files are read through one reused chunk.
const READ_CHUNK = 8 << 20;

/** Hands each chunk of bytes [from, to) of fd to fn, in order. The chunk is reused: copy what you keep. */
export function readChunks(fd: number, from: number, to: number, fn: (chunk: Buffer) => void): void {
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(READ_CHUNK, to - from)));
  for (let pos = from; pos < to; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, to - pos), pos);
    if (n === 0) throw new Error(`file ended at byte ${pos}, before ${to}`);
    fn(buf.subarray(0, n));
    pos += n;
  }
}

/** Hands each line of bytes [from, to) of fd to fn, without its newline, with its file offset. Bytes after the last newline are ignored. */
export function readLines(fd: number, from: number, to: number, fn: (line: string, offset: number) => void): void {
  let buf = Buffer.allocUnsafe(Math.max(1, Math.min(READ_CHUNK, to - from)));
  let have = 0; // bytes at the front of buf not yet handed out
  let bufAt = from; // file offset of buf[0]
  for (let pos = from; pos < to; ) {
    if (have === buf.length) {
      // A line longer than the buffer: grow it.
      const bigger = Buffer.allocUnsafe(buf.length * 2);
      buf.copy(bigger, 0, 0, have);
      buf = bigger;
    }
    const n = fs.readSync(fd, buf, have, Math.min(buf.length - have, to - pos), pos);
    if (n === 0) throw new Error(`file ended at byte ${pos}, before ${to}`);
    pos += n;
    have += n;
    const view = buf.subarray(0, have);
    let start = 0;
    for (let end = view.indexOf(10); end >= 0; end = view.indexOf(10, start)) {
      fn(view.toString('utf8', start, end), bufAt + start);
      start = end + 1;
    }
    buf.copy(buf, 0, start, have);
    have -= start;
    bufAt += start;
  }
}
