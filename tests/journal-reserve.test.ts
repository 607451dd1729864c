// Space reserved ahead (state/journal.ts): a live segment is its data, then
// NULs up to the size the journal extended it to. A reopen after a SIGKILL
// goes on at the end of the data, not after the NULs; a clean close and a
// rotation leave plain JSONL; a torn record before the NULs is cut as a torn
// write, NULs before more lines are corruption; a full disk cuts the
// reserve back with the refused write and reserves anew once there is space.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CorruptionError } from '../state/errors.ts';
import { encodeRecord, JOURNAL_FORMAT, listSegments, RESERVE_BYTES, type Journal } from '../state/journal.ts';
import { openJournal } from '../state/replay.ts';
import { segmentData } from './support/journal-files.ts';
import { cleanup, Proc, tempDir } from './support/processes.ts';
import { SmallDisk } from './support/tmpfs.ts';

const test = suite('journal: space reserved ahead');
const disks: SmallDisk[] = [];
test.after(async () => {
  await cleanup();
  for (const d of disks) d.remove();
});

const rec = (i: number): unknown => ({ i });
const header = (firstSeq: number): string => `${JSON.stringify({ keel: 'journal', format: JOURNAL_FORMAT, firstSeq })}\n`;
/** The plain text of a segment from seq `from` through `to`. */
const segmentText = (from: number, to: number): string => header(from) + Array.from({ length: to - from + 1 }, (_, k) => encodeRecord(from + k, rec(from + k))).join('');

function open(dir: string, repair = false): { journal: Journal; seqs: number[]; logs: Array<Record<string, unknown>> } {
  const seqs: number[] = [];
  const logs: Array<Record<string, unknown>> = [];
  const journal = openJournal(dir, { afterSeq: 0, repair, log: (msg, f) => logs.push({ msg, ...f }), onRecord: (_, seq) => seqs.push(seq) });
  return { journal, seqs, logs };
}

async function appendUpTo(journal: Journal, seq: number): Promise<void> {
  while (journal.lastSeq < seq) await journal.append([rec(journal.lastSeq + 1)]);
}

/** The one segment of dir, as a real process left it when SIGKILLed after `n` durable appends. */
async function killedAfter(n: number): Promise<{ dir: string; file: string }> {
  const dir = tempDir();
  const child = new Proc('appender', ['tests/fixtures/journal-appender.ts', dir, String(n)]);
  await child.waitForMsg('idle');
  await child.kill('SIGKILL');
  return { dir, file: listSegments(dir)[0]!.file };
}

const nulsAfter = (buf: Buffer, from: number): boolean => buf.subarray(from).every((b) => b === 0);

/** Put `text` into `file` at byte `at`, over whatever is there (the NUL tail, say), as a damaged disk would. */
function writeInto(file: string, text: string, at: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, text, at);
  } finally {
    fs.closeSync(fd);
  }
}

test('while open, a segment is its data then NULs up to the reserve; a clean close leaves the data alone', async () => {
  const dir = tempDir();
  const { journal } = open(dir);
  await appendUpTo(journal, 20);
  const file = listSegments(dir)[0]!.file;
  const expected = segmentText(1, 20);
  const buf = fs.readFileSync(file);
  assert.is(buf.length, RESERVE_BYTES);
  assert.is(buf.subarray(0, expected.length).toString(), expected);
  assert.ok(nulsAfter(buf, expected.length), 'NULs after the data');
  journal.close();
  assert.is(fs.readFileSync(file, 'utf8'), expected, 'closed: exactly its data');
});

test('after a SIGKILL, the reopen reads every record and goes on at the end of the data, with no gap', async () => {
  const { dir, file } = await killedAfter(30);
  assert.is(fs.statSync(file).size, RESERVE_BYTES, 'the killed process left its reserve');
  const { journal, seqs } = open(dir);
  assert.equal(seqs, Array.from({ length: 30 }, (_, k) => k + 1));
  await appendUpTo(journal, 40);
  const open40 = fs.readFileSync(file);
  assert.is(open40.subarray(0, segmentText(1, 40).length).toString(), segmentText(1, 40), 'record 31 right after record 30');
  journal.close();
  assert.is(fs.readFileSync(file, 'utf8'), segmentText(1, 40));
});

test('rotation leaves the closed segment plain; the new one has its own reserve', async () => {
  const dir = tempDir();
  const { journal } = open(dir);
  await appendUpTo(journal, 5);
  await journal.rotate();
  await appendUpTo(journal, 8);
  const [first, second] = listSegments(dir);
  assert.is(fs.readFileSync(first!.file, 'utf8'), segmentText(1, 5));
  assert.is(fs.statSync(second!.file).size, RESERVE_BYTES);
  assert.is(segmentData(second!.file).toString(), segmentText(6, 8));
  journal.close();
  assert.is(fs.readFileSync(second!.file, 'utf8'), segmentText(6, 8));
});

test('a batch longer than the reserve extends the file past it in whole steps', async () => {
  const dir = tempDir();
  const { journal } = open(dir);
  const big = { i: 1, text: 'x'.repeat(RESERVE_BYTES + 10) };
  await journal.append([big]);
  const file = listSegments(dir)[0]!.file;
  assert.is(fs.statSync(file).size, 2 * RESERVE_BYTES);
  journal.close();
  assert.is(fs.readFileSync(file, 'utf8'), header(1) + encodeRecord(1, big));
});

test('a torn record before the NULs (a SIGKILL mid-write) is cut as a torn write, and appending goes on there', async () => {
  const { dir, file } = await killedAfter(10);
  const end = segmentText(1, 10).length;
  writeInto(file, encodeRecord(11, rec(11)).slice(0, 15), end);
  const { journal, seqs, logs } = open(dir);
  assert.is(seqs.length, 10);
  assert.equal(logs.map((l) => [l.msg, l.offset, l.reason]), [['journal: cut a torn last record', end, 'torn line (no newline)']]);
  await appendUpTo(journal, 12);
  journal.close();
  assert.is(fs.readFileSync(file, 'utf8'), segmentText(1, 12));
});

test('NULs before more lines are refused as corruption naming file and offset; --repair cuts there', async () => {
  const { dir, file } = await killedAfter(10);
  const end = segmentText(1, 10).length;
  // Records 12 and 13 on disk with zeros where 11 was: what a zeroed block, or unsynced pages an OS crash wrote out of order, leave.
  writeInto(file, encodeRecord(12, rec(12)) + encodeRecord(13, rec(13)), end + encodeRecord(11, rec(11)).length);
  let err: unknown;
  try {
    open(dir).journal.close();
  } catch (e) {
    err = e;
  }
  assert.instance(err, CorruptionError);
  assert.equal([(err as CorruptionError).file, (err as CorruptionError).offset, (err as CorruptionError).reason], [file, end, 'NUL bytes before more data']);

  const { journal, seqs, logs } = open(dir, true);
  assert.is(seqs.length, 10);
  const cut = logs.find((l) => l.msg === 'journal: repaired by cutting');
  assert.equal([cut?.offset, cut?.droppedRecords, cut?.keptCopies], [end, 2, [`${file}.broken`]]);
  await appendUpTo(journal, 11);
  journal.close();
  assert.is(fs.readFileSync(file, 'utf8'), segmentText(1, 11));
});

test('NULs before a single line that only NULs follow: the last line, cut as torn', async () => {
  const { dir, file } = await killedAfter(10);
  const end = segmentText(1, 10).length;
  writeInto(file, encodeRecord(12, rec(12)), end + 4096);
  const { journal, seqs, logs } = open(dir);
  assert.is(seqs.length, 10);
  assert.equal(logs.map((l) => [l.msg, l.offset, l.reason]), [['journal: cut a torn last record', end, 'NUL bytes before more data']]);
  journal.close();
  assert.is(fs.readFileSync(file, 'utf8'), segmentText(1, 10));
});

test('a full disk cuts the file back to its data, and the write once there is space reserves anew, no NULs inside', async () => {
  const disk = new SmallDisk(4);
  disks.push(disk);
  const dir = path.join(disk.dir, 'journal');
  fs.mkdirSync(dir);
  const { journal } = open(dir);
  journal.retryMs = 20;
  await appendUpTo(journal, 3);
  const file = listSegments(dir)[0]!.file;
  disk.fill();
  const full = new Promise<void>((resolve) => journal.onDiskFull((e) => e && resolve()));
  let stuck: Promise<void> | undefined;
  for (let seq = 4; !journal.diskFull; seq++) {
    const append = journal.append([{ i: seq, pad: 'p'.repeat(1000) }]);
    if ((await Promise.race([append.then(() => 'durable'), full.then(() => 'full')])) === 'full') stuck = append;
  }
  const data = segmentData(file);
  assert.is(fs.statSync(file).size, data.length, 'cut back to the data: no reserve, no partial record');
  assert.is(data.at(-1), 10, 'ends on a whole record');
  disk.free();
  await stuck;
  await journal.append([{ i: journal.lastSeq + 1 }]);
  assert.ok(fs.statSync(file).size > segmentData(file).length, 'reserved again');
  journal.close();
  const text = fs.readFileSync(file);
  assert.not.ok(text.includes(0), 'no NUL inside the data');
  const { journal: again, seqs } = open(dir);
  assert.equal(seqs, Array.from({ length: seqs.length }, (_, k) => k + 1));
  assert.is(seqs.length, journal.lastSeq);
  again.close();
});

test.run();
