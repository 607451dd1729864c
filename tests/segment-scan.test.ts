// A segment is read in chunks into one buffer: wherever a chunk ends (inside
// a record, inside a multi-byte character, inside a line longer than the
// chunk), the scan must see the records, offsets and damage that reading
// the whole file at once sees.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeRecord, JOURNAL_FORMAT, segmentName } from '../state/journal.ts';
import { scanSegment } from '../state/segment-scan.ts';
import { cleanup, tempDir } from './support/processes.ts';

const test = suite('segment-scan');
test.after(cleanup);

const CHUNKS = [1 << 20, 7, 64, 100, 333];

function segment(recs: unknown[]): { file: string; bytes: Buffer } {
  const file = path.join(tempDir('keel-scan-'), segmentName(1));
  const lines = [`${JSON.stringify({ keel: 'journal', format: JOURNAL_FORMAT, firstSeq: 1 })}\n`, ...recs.map((r, i) => encodeRecord(i + 1, r))];
  fs.writeFileSync(file, lines.join(''));
  return { file, bytes: fs.readFileSync(file) };
}

function scan(file: string, chunk: number): { seen: Array<[number, number, unknown]>; result: ReturnType<typeof scanSegment> } {
  const seen: Array<[number, number, unknown]> = [];
  const result = scanSegment(file, 1, (rec, seq, offset) => (seen.push([seq, offset, rec]), true), chunk);
  return { seen, result };
}

// Short and long records, multi-byte characters, one far longer than most chunks.
const recs = Array.from({ length: 40 }, (_, i) => ({ i, text: i % 7 === 3 ? 'ü✓'.repeat(i * 20) : 'x'.repeat(i % 5), big: i === 11 ? 'y'.repeat(5000) : undefined }));

test('every chunk size reads the same records at the same offsets', () => {
  const { file, bytes } = segment(recs);
  const want = scan(file, 1 << 30);
  assert.is(want.seen.length, recs.length);
  assert.equal(want.seen.map(([, , r]) => r), JSON.parse(JSON.stringify(recs)));
  assert.is(want.seen[0]![1], bytes.indexOf(10) + 1, 'offsets are file offsets');
  assert.is(want.result.size, bytes.length);
  assert.is(want.result.bad, undefined);
  for (const chunk of CHUNKS) assert.equal(scan(file, chunk), want, `chunk ${chunk}`);
});

test('a flipped byte and a torn tail are found at the same offset at every chunk size', () => {
  const { file, bytes } = segment(recs);
  const lineStarts = [...bytes.entries()].filter(([, b]) => b === 10).map(([i]) => i + 1);
  const damaged = Buffer.from(bytes);
  damaged[lineStarts[20]! + 45] ^= 0x01; // inside record 21
  fs.writeFileSync(file, damaged);
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, 20, `chunk ${chunk}`);
    assert.equal(result.bad, { offset: lineStarts[20], reason: 'checksum mismatch', isLastLine: false });
  }
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 3));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, recs.length - 1, `chunk ${chunk}`);
    assert.equal(result.bad, { offset: lineStarts[recs.length - 1], reason: 'torn line (no newline)', isLastLine: true });
  }
});

test('a segment of only its header, or not even that, scans as such', () => {
  const { file } = segment([]);
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, 0);
    assert.is(result.lastSeq, 0);
    assert.is(result.bad, undefined);
  }
  fs.writeFileSync(file, '{"keel":"jour');
  assert.equal(scan(file, 4).result.bad, { offset: 0, reason: 'missing header line', isLastLine: true });
});

// The journal reserves space ahead of its data (state/journal.ts): a live or
// crashed segment is its data, then NUL bytes up to the reserved size.
const tail = (n: number): Buffer => Buffer.alloc(n);

test('a NUL tail ends the data: every record read, goodEnd before the tail, at every chunk size', () => {
  const { file, bytes } = segment(recs);
  fs.writeFileSync(file, Buffer.concat([bytes, tail(3000)]));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, recs.length, `chunk ${chunk}`);
    assert.is(result.bad, undefined);
    assert.is(result.goodEnd, bytes.length);
    assert.is(result.size, bytes.length + 3000);
  }
});

test('a torn record followed by NULs is a torn last line', () => {
  const { file, bytes } = segment(recs);
  const lastStart = bytes.lastIndexOf(10, bytes.length - 2) + 1;
  fs.writeFileSync(file, Buffer.concat([bytes.subarray(0, bytes.length - 9), tail(3000)]));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, recs.length - 1, `chunk ${chunk}`);
    assert.equal(result.bad, { offset: lastStart, reason: 'torn line (no newline)', isLastLine: true });
  }
});

test('NULs followed by more lines are corruption; followed by a piece of one line only, a torn last line', () => {
  const { file, bytes } = segment(recs);
  const lineStarts = [...bytes.entries()].filter(([, b]) => b === 10).map(([i]) => i + 1);
  // Records 21 and 22 zeroed where they stand, the records after them intact.
  const zeroed = Buffer.from(bytes);
  zeroed.fill(0, lineStarts[20], lineStarts[22]);
  fs.writeFileSync(file, Buffer.concat([zeroed, tail(100)]));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, 20, `chunk ${chunk}`);
    assert.equal(result.bad, { offset: lineStarts[20], reason: 'NUL bytes before more data', isLastLine: false });
  }
  // The zeros run into the last record, and only NULs follow its newline: the last line.
  const last = Buffer.from(bytes);
  last.fill(0, lineStarts[38], lineStarts[39]! + 20);
  fs.writeFileSync(file, Buffer.concat([last, tail(100)]));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, 38, `chunk ${chunk}`);
    assert.equal(result.bad, { offset: lineStarts[38], reason: 'NUL bytes before more data', isLastLine: true });
  }
  // A piece of a record after NULs, no newline before the end: a torn last line.
  fs.writeFileSync(file, Buffer.concat([bytes.subarray(0, lineStarts[39]), tail(50), Buffer.from('{"seq":41,"cr'), tail(200)]));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { seen, result } = scan(file, chunk);
    assert.is(seen.length, 39, `chunk ${chunk}`);
    assert.equal(result.bad, { offset: lineStarts[39], reason: 'torn line (no newline)', isLastLine: true });
  }
});

test('a bad last line is still the last line when only NULs follow it', () => {
  const { file, bytes } = segment(recs);
  const lineStarts = [...bytes.entries()].filter(([, b]) => b === 10).map(([i]) => i + 1);
  const damaged = Buffer.from(bytes);
  damaged[lineStarts[39]! + 45] ^= 0x01;
  fs.writeFileSync(file, Buffer.concat([damaged, tail(5000)]));
  for (const chunk of [1 << 30, ...CHUNKS]) {
    const { result } = scan(file, chunk);
    assert.equal(result.bad, { offset: lineStarts[39], reason: 'checksum mismatch', isLastLine: true }, `chunk ${chunk}`);
  }
});

test('a NUL tail is read a chunk at a time, not into one buffer', () => {
  const { file, bytes } = segment(recs.slice(0, 3));
  fs.writeFileSync(file, Buffer.concat([bytes, tail(64 << 20)]));
  const before = process.memoryUsage().arrayBuffers;
  const { seen, result } = scan(file, 64 << 10);
  assert.is(seen.length, 3);
  assert.is(result.goodEnd, bytes.length);
  assert.ok(process.memoryUsage().arrayBuffers - before < 16 << 20, 'the 64 MiB tail was not held in memory');
});

test.run();
