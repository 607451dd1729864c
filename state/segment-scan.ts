// Reading a journal segment (the format is at the top of journal.ts): each
// line's frame is read off its bytes, its seq and crc checked, and only then
// its record parsed and handed on. This is replay's inner loop, once per
// record at every start, so it makes nothing per record but the record's text
// and the parsed record. (A reader that took the server's records off their
// bytes without JSON.parse was measured: twice as fast on claim records,
// slower on submits and finishes, whose payload and result it still had to
// parse, 5% faster over all; not kept.)
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { checkFormat } from './format.ts';
import { seqCrc } from './journal.ts';

/** Takes one sound record; false stops the scan. */
export type RecordVisitor = (rec: unknown, seq: number, offset: number) => boolean;

export interface SegmentScan {
  firstSeq: number;
  /** The seq of the last record handed to visit; firstSeq - 1 if none. */
  lastSeq: number;
  // Where the first bad line starts, if any; everything before it is sound.
  bad?: { offset: number; reason: string; isLastLine: boolean };
  /** Where the sound data ends: the next record goes here, before any NUL tail. */
  goodEnd: number;
}

/** Bytes read from a segment at a time: the whole file is never in memory at once. */
export const SCAN_CHUNK = 1 << 20;

/**
 * Read one segment file, handing each sound record to `visit` in order; stop
 * at the first bad line, or when visit returns false. Records are not
 * collected: a segment can hold millions, and keeping them all alive until
 * the end costs more in GC than parsing them does. The file is read in
 * chunks into one buffer (grown only for a line longer than it), so a 64 MiB
 * segment costs 1 MiB of memory, not 64.
 */
export function scanSegment(file: string, expectFirstSeq: number, visit: RecordVisitor, chunkBytes = SCAN_CHUNK): SegmentScan & { size: number } {
  const fd = fs.openSync(file, 'r');
  try {
    return scanOpenSegment(fd, fs.fstatSync(fd).size, file, expectFirstSeq, visit, chunkBytes);
  } finally {
    fs.closeSync(fd);
  }
}

function scanOpenSegment(fd: number, size: number, file: string, expectFirstSeq: number, visit: RecordVisitor, chunkBytes: number): SegmentScan & { size: number } {
  let seq = expectFirstSeq;
  // lineEnd: the bad line's newline as a file offset, -1 if the file ends first.
  const fail = (offset: number, reason: string, lineEnd: number): SegmentScan & { size: number } => ({
    firstSeq: expectFirstSeq,
    lastSeq: seq - 1,
    bad: { offset, reason, isLastLine: lineEnd < 0 || zerosFrom(fd, lineEnd + 1, size, chunkBytes) },
    goodEnd: offset,
    size,
  });
  // buf[0, filled) holds the file's bytes from `base` on; `pos` is the next line's start in buf.
  let buf = Buffer.allocUnsafe(Math.max(1, Math.min(size, chunkBytes)));
  let base = 0;
  let filled = 0;
  let pos = 0;
  /**
   * The end (in buf) of the line at pos, reading more of the file as needed;
   * -1: the file ends first; NUL_FIRST: the line holds a NUL before any
   * newline read so far (a zero tail is not read into buf to look for one).
   */
  const newline = (from: number): number => {
    const i = buf.indexOf(10, from);
    return i < filled ? i : -1; // past `filled` is an older chunk's leftover
  };
  const hasNul = (from: number): boolean => {
    const i = buf.indexOf(0, from);
    return i >= 0 && i < filled;
  };
  const lineEnd = (): number => {
    if (pos < filled && buf[pos] === 0) return NUL_FIRST;
    let end = newline(pos);
    while (end < 0 && base + filled < size) {
      if (hasNul(pos)) return NUL_FIRST;
      // Keep the line begun at pos, at the front; grow only if it fills the buffer.
      if (pos > 0) {
        buf.copy(buf, 0, pos, filled);
        base += pos;
        filled -= pos;
        pos = 0;
      }
      if (filled === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, filled);
        buf = bigger;
      }
      const from = filled;
      filled += fs.readSync(fd, buf, filled, Math.min(buf.length - filled, size - base - filled), base + filled);
      if (filled === from) break; // shorter than fstat said
      end = newline(from);
    }
    return end;
  };

  const headerEnd = lineEnd();
  if (headerEnd < 0) return fail(0, 'missing header line', -1);
  let header: { keel?: unknown; format?: unknown; firstSeq?: unknown };
  try {
    header = JSON.parse(buf.toString('utf8', 0, headerEnd));
  } catch {
    return fail(0, 'unreadable header line', headerEnd);
  }
  if (header.keel !== 'journal') return fail(0, 'not a keel journal header', headerEnd);
  checkFormat(file, 'journal', header.format);
  if (header.firstSeq !== expectFirstSeq) return fail(0, `header firstSeq ${String(header.firstSeq)} does not match the file name`, headerEnd);

  const frame = new Float64Array(2);
  pos = headerEnd + 1;
  while (base + pos < size) {
    const end = lineEnd();
    const at = base + pos;
    if (end === NUL_FIRST || (pos < filled && buf[pos] === 0)) {
      if (buf[pos] === 0 && zerosFrom(fd, at, size, chunkBytes)) break; // the reserve: data ends here
      const nl = end >= 0 ? base + end : newlineFrom(fd, at, size, chunkBytes);
      return fail(at, nl < 0 ? 'torn line (no newline)' : 'NUL bytes before more data', nl);
    }
    if (end < 0) return fail(at, 'torn line (no newline)', -1);
    const from = frameAt(buf, pos, end, frame);
    if (from < 0) return fail(at, 'malformed line', base + end);
    if (frame[0] !== seq) return fail(at, `sequence ${frame[0]} where ${seq} was expected`, base + end);
    // The crc is taken over the text, which zlib encodes back to UTF-8: the
    // bytes in the file when they are sound UTF-8, and a mismatch when they
    // are not (the decoder put U+FFFD in their place).
    const text = buf.toString('utf8', from, end - 1);
    if (crc32(text, seqCrc(seq)) !== frame[1]) return fail(at, 'checksum mismatch', base + end);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return fail(at, 'record is not JSON', base + end);
    }
    if (!visit(value, seq, at)) break;
    seq++;
    pos = end + 1;
  }
  return { firstSeq: expectFirstSeq, lastSeq: seq - 1, goodEnd: base + pos, size };
}

const NUL_FIRST = -2;

/** Whether bytes [from, size) of fd are all NUL, however long the tail. */
function zerosFrom(fd: number, from: number, size: number, chunkBytes: number): boolean {
  const zeros = Buffer.alloc(Math.max(1, Math.min(size - from, chunkBytes)));
  return seekFrom(fd, from, size, chunkBytes, (chunk) => (chunk.equals(zeros.subarray(0, chunk.length)) ? -1 : 0)) < 0;
}

/** The file offset of the first newline at or after `from`; -1 if none. */
function newlineFrom(fd: number, from: number, size: number, chunkBytes: number): number {
  return seekFrom(fd, from, size, chunkBytes, (chunk) => chunk.indexOf(10));
}

/**
 * Read bytes [from, size) of fd a chunk at a time into one buffer, until
 * `find` gives an index into a chunk; that index as a file offset, or -1.
 */
function seekFrom(fd: number, from: number, size: number, chunkBytes: number, find: (chunk: Buffer) => number): number {
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(size - from, chunkBytes)));
  for (let at = from; at < size; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - at), at);
    if (n === 0) break; // shorter than fstat said
    const i = find(buf.subarray(0, n));
    if (i >= 0) return at + i;
    at += n;
  }
  return -1;
}

const SEQ_PREFIX = Buffer.from('{"seq":');
const CRC_PREFIX = Buffer.from(',"crc":"');
const REC_PREFIX = Buffer.from('","rec":');

/**
 * The frame of the line [pos, end): its seq and crc into `out`, and where the
 * record's text starts; -1 if the line is not that shape.
 */
function frameAt(buf: Buffer, pos: number, end: number, out: Float64Array): number {
  if (!startsWith(buf, pos, SEQ_PREFIX) || buf[end - 1] !== 0x7d /* } */) return -1;
  let i = pos + SEQ_PREFIX.length;
  let seq = 0;
  const digitsAt = i;
  for (let d = buf[i]! - 0x30; d >= 0 && d <= 9 && i < end; d = buf[++i]! - 0x30) seq = seq * 10 + d;
  if (i === digitsAt || !startsWith(buf, i, CRC_PREFIX)) return -1;
  i += CRC_PREFIX.length;
  let crc = 0;
  for (const stop = i + 8; i < stop; i++) {
    const c = buf[i]!;
    const v = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (v < 0) return -1;
    crc = crc * 16 + v;
  }
  if (!startsWith(buf, i, REC_PREFIX) || i + REC_PREFIX.length > end - 1) return -1;
  out[0] = seq;
  out[1] = crc;
  return i + REC_PREFIX.length;
}

function startsWith(buf: Buffer, at: number, prefix: Buffer): boolean {
  for (let k = 0; k < prefix.length; k++) if (buf[at + k] !== prefix[k]) return false;
  return true;
}
