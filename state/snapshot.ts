/*
 * A snapshot: the whole state as of journal seq S, in `snapshot.jsonl`.
 *
 *   {"keel":"snapshot","format":2,"machine":"commands","seq":S}   header
 *   <one JSON entry per line>                                      the state
 *   {"end":true,"count":N,"crc":"xxxxxxxx"}                        trailer
 *
 * crc is CRC-32 over the entry lines as written. The file is written as
 * snapshot.jsonl.tmp, fsynced, renamed over snapshot.jsonl and the directory
 * fsynced, so a reader finds either the old snapshot or the new one, whole.
 * A snapshot that fails its checks is never half-trusted: open refuses it.
 * format is the version it was written in (state/format.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { crashPoint } from './crash-points.ts';
import { DamagedSnapshotError, FormatError } from './errors.ts';
import { readWholeLines, syncDir, writeAllSync } from './fsio.ts';
import { checkFormat, FORMAT } from './format.ts';

export const SNAPSHOT_FILE = 'snapshot.jsonl';
const CHUNK = 1 << 20;
// How much of each end of the file is read to find the header and the trailer.
const EDGE = 64 * 1024;

/**
 * Phase 1: write and fsync snapshot.jsonl.tmp holding `lines` as of `seq`.
 * Yields to the event loop after each chunk, so a large snapshot does not
 * stall the process; the caller's lines stay those of `seq` meanwhile.
 */
export async function writeSnapshotTmp(dir: string, machine: string, seq: number, lines: Iterable<string>): Promise<number> {
  const tmp = path.join(dir, `${SNAPSHOT_FILE}.tmp`);
  let size = 0;
  const fd = fs.openSync(tmp, 'w');
  try {
    // Whole writes: a full disk can cut a write short before it fails.
    writeAllSync(fd, Buffer.from(`${JSON.stringify({ keel: 'snapshot', format: FORMAT, machine, seq })}\n`));
    let crc = 0;
    let count = 0;
    let chunk = '';
    const flush = (): void => {
      crc = crc32(chunk, crc);
      const buf = Buffer.from(chunk);
      writeAllSync(fd, buf);
      size += buf.length;
      chunk = '';
    };
    for (const line of lines) {
      chunk += `${line}\n`;
      count++;
      if (chunk.length >= CHUNK) {
        flush();
        await new Promise((r) => setImmediate(r));
      }
    }
    flush();
    writeAllSync(fd, Buffer.from(`${JSON.stringify({ end: true, count, crc: crc.toString(16).padStart(8, '0') })}\n`));
    crashPoint('snapshot:tmp-written');
    await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
  } finally {
    fs.closeSync(fd);
  }
  crashPoint('snapshot:tmp-synced');
  return size;
}

/** Phase 2: rename the tmp file over the snapshot and make the rename durable. */
export function installSnapshot(dir: string): void {
  const file = path.join(dir, SNAPSHOT_FILE);
  fs.renameSync(`${file}.tmp`, file);
  crashPoint('snapshot:renamed');
  syncDir(dir);
  crashPoint('snapshot:dir-synced');
}

/** What a snapshot's entries are restored into (a Machine). */
export interface SnapshotSink {
  readonly name: string;
  /** Restore one entry line. */
  load(line: string): void;
  /**
   * Optional, used instead of load(): restore a chunk of whole entry lines,
   * each ending in a newline; the sink may keep the chunk. Returns how many lines it held.
   */
  loadChunk?(chunk: Buffer): number;
  /** Optional: about this many entries are coming. */
  reserve?(entries: number): void;
}

/** Reads the snapshot if there is one into `sink`; returns the seq it covers (0 if none). */
export function readSnapshot(dir: string, sink: SnapshotSink): number {
  const file = path.join(dir, SNAPSHOT_FILE);
  // A tmp file is a snapshot that never got renamed in: not part of the state.
  fs.rmSync(`${file}.tmp`, { force: true });
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  try {
    return readOpenSnapshot(fd, file, sink);
  } finally {
    fs.closeSync(fd);
  }
}

// The file is read once, in chunks of whole lines that are kept until the crc
// has been checked: no entry reaches the machine before the whole file has
// proved sound.
function readOpenSnapshot(fd: number, file: string, sink: SnapshotSink): number {
  const machine = sink.name;
  const bad = (offset: number, why: string): Error => new DamagedSnapshotError(file, offset, why);
  const size = fs.fstatSync(fd).size;
  const edge = (from: number): Buffer => {
    const b = Buffer.alloc(Math.min(EDGE, size - from));
    fs.readSync(fd, b, 0, b.length, from);
    return b;
  };

  const head = edge(0);
  const headerEnd = head.indexOf(10);
  let header: { keel?: unknown; format?: unknown; machine?: unknown; seq?: unknown };
  try {
    header = JSON.parse(head.toString('utf8', 0, headerEnd < 0 ? head.length : headerEnd));
  } catch {
    throw bad(0, 'unreadable header');
  }
  if (header.keel !== 'snapshot') throw bad(0, 'not a keel snapshot');
  checkFormat(file, 'snapshot', header.format);
  if (header.machine !== machine) throw new FormatError(file, `this is a ${String(header.machine)} snapshot, not ${machine}`, 'Is --state-dir pointing at the right directory?');
  if (typeof header.seq !== 'number') throw bad(0, 'header has no seq');

  const tailAt = Math.max(0, size - EDGE);
  const tail = edge(tailAt);
  const trailerStart = tailAt + tail.lastIndexOf(10, tail.length - 2) + 1;
  let trailer: { end?: unknown; count?: unknown; crc?: unknown };
  try {
    trailer = JSON.parse(tail.toString('utf8', trailerStart - tailAt));
  } catch {
    throw bad(trailerStart, 'unreadable trailer');
  }
  if (trailer.end !== true || headerEnd < 0 || trailerStart <= headerEnd) throw bad(trailerStart, 'missing trailer');

  const chunks = readWholeLines(fd, headerEnd + 1, trailerStart);
  let crc = 0;
  for (const chunk of chunks) crc = crc32(chunk, crc);
  if (crc.toString(16).padStart(8, '0') !== trailer.crc) throw bad(headerEnd + 1, 'checksum mismatch');

  // The trailer is outside the crc: a count no file of this size could hold is no hint.
  if (typeof trailer.count === 'number' && trailer.count <= trailerStart - headerEnd) sink.reserve?.(trailer.count);
  let count = 0;
  for (const chunk of chunks) {
    if (sink.loadChunk) {
      count += sink.loadChunk(chunk);
      continue;
    }
    for (let start = 0; start < chunk.length; count++) {
      let end = chunk.indexOf(10, start);
      if (end < 0) end = chunk.length;
      sink.load(chunk.toString('utf8', start, end));
      start = end + 1;
    }
  }
  if (count !== trailer.count) throw bad(trailerStart, `trailer says ${String(trailer.count)} entries, file has ${count}`);
  return header.seq;
}
