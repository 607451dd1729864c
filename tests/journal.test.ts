// The journal on disk: a torn tail is cut and reported, damage anywhere else
// stops the open (or is cut by an explicit repair), and concurrent appends
// share one write and one fdatasync.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandStore } from '../state/command-store.ts';
import type { CommandRecord } from '../state/command-table.ts';
import { CorruptionError } from '../state/errors.ts';
import { encodeRecord, JOURNAL_FORMAT, listSegments, seqCrc, type Journal } from '../state/journal.ts';
import { crc32 } from 'node:zlib';
import { openJournal } from '../state/replay.ts';
import { cleanup, tempDir } from './support/processes.ts';

const test = suite('journal');
test.after(cleanup);

interface Opened {
  journal: Journal;
  recs: Array<{ seq: number; rec: unknown }>;
  logs: Array<{ msg: string; fields?: Record<string, unknown> }>;
}

function open(dir: string, repair = false): Opened {
  const recs: Opened['recs'] = [];
  const logs: Opened['logs'] = [];
  const journal = openJournal(dir, { afterSeq: 0, repair, log: (msg, fields) => logs.push({ msg, fields }), onRecord: (rec, seq) => recs.push({ seq, rec }) });
  return { journal, recs, logs };
}

function openError(dir: string): CorruptionError {
  try {
    open(dir).journal.close();
  } catch (err) {
    assert.instance(err, CorruptionError);
    return err as CorruptionError;
  }
  throw new assert.Assertion({ message: `${dir} opened, but it is damaged`, operator: 'throws', expects: 'CorruptionError', actual: 'open' });
}

// Multi-byte text, so some cuts and flips land inside a UTF-8 sequence.
const rec = (i: number): unknown => ({ i, text: `naïve ✓ ${'x'.repeat(i)} 😀` });

/** A journal of `n` records, one append each, in `segments` segment files. */
async function build(n: number, segments = 1): Promise<string> {
  const dir = tempDir();
  const { journal } = open(dir);
  for (let i = 1; i <= n; i++) {
    await journal.append([rec(i)]);
    if (segments > 1 && i % Math.ceil(n / segments) === 0 && i < n) await journal.rotate();
  }
  journal.close();
  return dir;
}

/** Byte ranges [start, end) of each record line (newline included) of a segment. */
function lines(buf: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let start = buf.indexOf(10) + 1; start < buf.length; ) {
    const end = buf.indexOf(10, start) + 1;
    out.push([start, end]);
    start = end;
  }
  return out;
}

/** A copy of `src` whose segments are rewritten by `edit` (name -> bytes). */
function copyWith(src: string, edit: (name: string, buf: Buffer) => Buffer | undefined): string {
  const dir = tempDir();
  for (const name of fs.readdirSync(src)) {
    const out = edit(name, fs.readFileSync(path.join(src, name)));
    if (out) fs.writeFileSync(path.join(dir, name), out);
  }
  return dir;
}

const recsOf = (o: Opened): unknown[] => o.recs.map((r) => r.rec);
const range = (a: number, b: number): unknown[] => Array.from({ length: b - a + 1 }, (_, k) => rec(a + k));

test('a torn last record, cut at every byte offset inside it, is cut off and reported', async () => {
  const src = await build(5);
  const seg = path.basename(listSegments(src)[0]!.file);
  const full = fs.readFileSync(path.join(src, seg));
  const [start, end] = lines(full).at(-1)!;
  for (let cut = start + 1; cut < end; cut++) {
    const dir = copyWith(src, (name, buf) => (name === seg ? buf.subarray(0, cut) : buf));
    const o = open(dir);
    assert.equal(recsOf(o), range(1, 4), `cut at ${cut}`);
    assert.equal(o.logs.map((l) => [l.msg, l.fields?.offset, l.fields?.file]), [['journal: cut a torn last record', start, path.join(dir, seg)]], `cut at ${cut}`);
    assert.is(fs.statSync(path.join(dir, seg)).size, start);
    // The next record takes the torn one's seq and replays cleanly.
    await o.journal.append([rec(50)]);
    o.journal.close();
    const again = open(dir);
    assert.equal(again.recs.map((r) => r.seq), [1, 2, 3, 4, 5]);
    assert.equal(again.recs[4]!.rec, rec(50));
    assert.equal(again.logs, []);
    again.journal.close();
  }
});

test('a cut exactly at a record boundary loses nothing and reports nothing', async () => {
  const src = await build(5);
  const o = open(src);
  assert.equal(recsOf(o), range(1, 5));
  assert.equal(o.logs, []);
  o.journal.close();
});

test('a flipped byte anywhere in an early record refuses the open, naming file and offset', async () => {
  const src = await build(10);
  const seg = path.basename(listSegments(src)[0]!.file);
  const [start, end] = lines(fs.readFileSync(path.join(src, seg)))[3]!;
  for (const mask of [0x01, 0x80]) {
    for (let at = start; at < end; at++) {
      const dir = copyWith(src, (name, buf) => {
        if (name !== seg) return buf;
        const out = Buffer.from(buf);
        out[at]! ^= mask;
        return out;
      });
      const err = openError(dir);
      assert.is(err.file, path.join(dir, seg), `flip at ${at}`);
      assert.is(err.offset, start, `flip at ${at}: ${err.reason}`);
      assert.ok(err.message.includes(`${path.join(dir, seg)}: corrupt journal at byte ${start}`), err.message);
    }
  }
});

test('repair cuts at the damaged record and says how many records it dropped', async () => {
  const src = await build(12, 3);
  const first = listSegments(src)[0]!;
  const name = path.basename(first.file);
  const [start] = lines(fs.readFileSync(first.file))[2]!;
  const dir = copyWith(src, (n, buf) => (n === name ? Buffer.from(buf.toString('latin1').replace('"i":3', '"i":8'), 'latin1') : buf));
  assert.is(openError(dir).offset, start);

  const o = open(dir, true);
  assert.equal(recsOf(o), range(1, 2));
  assert.equal(o.logs.map((l) => [l.msg, l.fields?.offset, l.fields?.droppedRecords]), [['journal: repaired by cutting', start, 10]]);
  assert.is(listSegments(dir).length, 1, 'later segments are gone');
  // A copy of every file it cut or removed is kept beside it, and the log says where.
  const segsBefore = listSegments(src).map((s) => path.basename(s.file));
  const copies = segsBefore.map((n) => path.join(dir, `${n}.broken`));
  assert.equal(o.logs[0]!.fields?.keptCopies, copies);
  assert.equal(fs.readFileSync(copies[0]!).toString('latin1'), fs.readFileSync(path.join(src, name)).toString('latin1').replace('"i":3', '"i":8'));
  for (const [i, n] of segsBefore.entries()) if (i > 0) assert.equal(fs.readFileSync(copies[i]!), fs.readFileSync(path.join(src, n)));
  await o.journal.append([rec(30)]);
  o.journal.close();
  const again = open(dir);
  assert.equal(again.recs.map((r) => r.seq), [1, 2, 3]);
  assert.equal(again.logs, []);
  again.journal.close();
});

test('a bad last line of a segment that is not the last is corruption, not a torn tail', async () => {
  const src = await build(8, 2);
  const first = path.basename(listSegments(src)[0]!.file);
  const [start, end] = lines(fs.readFileSync(path.join(src, first))).at(-1)!;
  const torn = copyWith(src, (n, buf) => (n === first ? buf.subarray(0, end - 3) : buf));
  assert.is(openError(torn).offset, start);
  assert.is(openError(torn).file, path.join(torn, first));
});

test('a missing segment in the middle is corruption', async () => {
  const src = await build(9, 3);
  const middle = path.basename(listSegments(src)[1]!.file);
  const dir = copyWith(src, (n, buf) => (n === middle ? undefined : buf));
  assert.match(openError(dir).reason, /segment starts at seq 7 where 4 was expected/);
});

test('a segment of an unknown format version is refused by name', async () => {
  const src = await build(2);
  const dir = copyWith(src, (_, buf) => Buffer.from(buf.toString().replace(`"format":${JOURNAL_FORMAT}`, `"format":${JOURNAL_FORMAT + 1}`)));
  assert.throws(() => open(dir), new RegExp(`journal format ${JOURNAL_FORMAT + 1} is not supported: this keel reads formats 1 to ${JOURNAL_FORMAT}`));
});

test('a well-formed record with a broken seq chain is corruption', async () => {
  const src = await build(4);
  const seg = path.basename(listSegments(src)[0]!.file);
  const dir = copyWith(src, (n, buf) => (n === seg ? Buffer.concat([buf, Buffer.from(encodeRecord(7, rec(7)) + encodeRecord(8, rec(8)))]) : buf));
  assert.match(openError(dir).reason, /sequence 7 where 5 was expected/);
});

test('1,000 concurrent appends resolve, reopen in one order, with few fsyncs', async () => {
  const dir = tempDir();
  const { journal } = open(dir);
  let fdatasyncs = 0;
  const real = fs.fdatasync;
  fs.fdatasync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    fdatasyncs++;
    real(fd, cb);
  }) as typeof fs.fdatasync;
  const order: number[] = [];
  try {
    // All in one tick: one batch.
    await Promise.all(Array.from({ length: 1000 }, (_, i) => (order.push(i), journal.append([{ i }]))));
    const oneTick = journal.stats.fsyncs;
    // 50 writers, each awaiting its previous append: batches form while an fsync is in flight.
    await Promise.all(
      Array.from({ length: 50 }, async (_, w) => {
        for (let k = 0; k < 20; k++) {
          const i = 1000 + w * 20 + k;
          order.push(i);
          await journal.append([{ i }]);
        }
      }),
    );
    assert.is(oneTick, 1);
    assert.is(journal.stats.fsyncs, fdatasyncs, 'the counter matches the real fdatasync calls');
    assert.is(journal.stats.records, 2000);
    assert.ok(journal.stats.fsyncs - oneTick <= 100, `${journal.stats.fsyncs - oneTick} fsyncs for 1,000 appends from 50 writers`);
  } finally {
    fs.fdatasync = real;
    journal.close();
  }
  const o = open(dir);
  assert.equal(o.recs.map((r) => r.seq), Array.from({ length: 2000 }, (_, k) => k + 1));
  assert.equal(o.recs.map((r) => (r.rec as { i: number }).i), order, 'disk order is append order');
  o.journal.close();
});

// A record that is well-formed and correctly checksummed but does not follow
// the state replay rebuilt (CAS on from/version) is corruption too.
const at = 1_700_000_000_000;
const CAS_BREAKS: Array<[string, CommandRecord, RegExp]> = [
  ['a stale version', { id: 'c1', from: 'ASSIGNED', version: 1, ev: { type: 'start', agentId: 'a1', lease: 1, at } }, /made from ASSIGNED@1, but the command is ASSIGNED@2/],
  ['a wrong from state', { id: 'c1', from: 'PENDING', version: 2, ev: { type: 'start', agentId: 'a1', lease: 1, at } }, /made from PENDING@2/],
  ['an illegal transition', { id: 'c1', from: 'ASSIGNED', version: 2, ev: { type: 'start', agentId: 'a2', lease: 1, at } }, /not a legal transition/],
  ['a transition that changes nothing', { id: 'c1', from: 'ASSIGNED', version: 2, ev: { type: 'claim', agentId: 'a1', lease: 1, at } }, /changes nothing/],
  ['a second submit of an id', { id: 'c1', from: null, version: 0, ev: { type: 'submit', id: 'c1', cmdType: 'DELAY', payload: { ms: 1 }, at } }, /made from nothing@0/],
  ['a command that was never submitted', { id: 'c9', from: 'PENDING', version: 1, ev: { type: 'cancel', at } }, /command is absent@0/],
];

/** A store holding c1 submitted and claimed by a1 (seq 1, 2), closed. */
async function claimedStore(): Promise<string> {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { noLock: true });
  await store.transition('c1', { type: 'submit', id: 'c1', cmdType: 'DELAY', payload: { ms: 5 }, at });
  await store.transition('c1', { type: 'claim', agentId: 'a1', lease: 1, at });
  await store.close();
  return dir;
}

test('a store whose last record is torn reopens without it and logs the cut', async () => {
  const dir = await claimedStore();
  const seg = listSegments(dir)[0]!.file;
  const [start, end] = lines(fs.readFileSync(seg)).at(-1)!;
  fs.truncateSync(seg, end - 5);
  const logs: Array<[string, unknown]> = [];
  const store = await CommandStore.open(dir, { noLock: true, log: (msg, f) => logs.push([msg, f?.offset]) });
  assert.equal(logs, [['journal: cut a torn last record', start]]);
  assert.equal([store.get('c1')?.state, store.durable.journal.lastSeq], ['PENDING', 1]);
  await store.close();
});

for (const [what, bad, reason] of CAS_BREAKS) {
  for (const last of [true, false]) {
    test(`a record with ${what} is refused as corruption (${last ? 'last line' : 'followed by a valid one'})`, async () => {
      const dir = await claimedStore();
      const seg = listSegments(dir)[0]!.file;
      const offset = fs.statSync(seg).size;
      const valid: CommandRecord = { id: 'c1', from: 'ASSIGNED', version: 2, ev: { type: 'start', agentId: 'a1', lease: 1, at } };
      fs.appendFileSync(seg, encodeRecord(3, bad) + (last ? '' : encodeRecord(4, valid)));

      const err = await CommandStore.open(dir, { noLock: true }).then(() => undefined, (e: unknown) => e);
      assert.instance(err, CorruptionError);
      const c = err as CorruptionError;
      assert.is(c.file, seg);
      assert.is(c.offset, offset);
      assert.match(c.reason, /record 3 does not follow/);
      assert.match(c.reason, reason);

      const logs: Array<Record<string, unknown> | undefined> = [];
      const repaired = await CommandStore.open(dir, { noLock: true, repair: true, log: (_, f) => logs.push(f) });
      assert.is(repaired.get('c1')?.state, 'ASSIGNED');
      assert.is(repaired.durable.journal.lastSeq, 2);
      assert.equal(logs.map((f) => [f?.offset, f?.droppedRecords]), [[offset, last ? 1 : 2]]);
      await repaired.close();
    });
  }
}

test('the crc of a seq prefix, computed without a string, is zlib\'s crc32 of `${seq}:`', () => {
  const seqs = [0, 1, 9, 10, 11, 99, 100, 101, 65535, 999_999, 1_000_000, 4_294_967_296, 10 ** 15, 2 ** 53 - 1];
  for (let n = 0; n < 20_000; n++) seqs.push(n, n * 7919 + 13);
  for (const n of seqs) assert.is(seqCrc(n), crc32(`${n}:`), `seq ${n}`);
});

test.run();
