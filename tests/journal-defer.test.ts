// Deferrable journal records (the agent ledger's `reported` and `dropped`):
// they start no flush of their own but go with the next one, in order, or
// with a timer's when none comes; their append resolves only once they are
// durable; sync() and a rotation take them along. And unsynced records (the
// ledger's `done`): written at once with no fdatasync of their own, durable
// with the next one, whoever makes it.
import fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { type Journal, listSegments } from '../state/journal.ts';
import { Ledger } from '../state/ledger.ts';
import { openJournal } from '../state/replay.ts';
import { cleanup, tempDir } from './support/processes.ts';

const test = suite('journal: deferrable records');
test.after(cleanup);

type Rec = { kind: 'now' | 'later'; n: number };

/** A journal deferring `later` records; for as long as the test runs, unless told. */
function open(dir: string, deferMs = 10 * 60_000): { journal: Journal; replayed: () => Rec[] } {
  const journal = openJournal(dir, { afterSeq: 0, onRecord: () => {} });
  journal.deferrable = (r) => (r as Rec).kind === 'later';
  journal.deferMs = deferMs;
  const replayed = (): Rec[] => {
    const out: Rec[] = [];
    openJournal(dir, { afterSeq: 0, onRecord: (r) => void out.push(r as Rec) }).close();
    return out;
  };
  return { journal, replayed };
}

/** Tracks whether a promise has settled, without waiting for it. */
function watch(p: Promise<void>): { done: boolean } {
  const w = { done: false };
  void p.then(() => (w.done = true));
  return w;
}
const nextTurns = async (n = 3): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
};

test('a deferrable record waits for the next flush and shares its fdatasync, in sequence order', async () => {
  const dir = tempDir();
  const { journal, replayed } = open(dir);
  const later = watch(journal.append([{ kind: 'later', n: 1 }]));
  await nextTurns();
  assert.is(journal.stats.fsyncs, 0, 'no flush for a deferrable record alone');
  assert.not.ok(later.done, 'not acknowledged before it is durable');
  await journal.append([{ kind: 'now', n: 2 }]);
  assert.ok(later.done);
  assert.is(journal.stats.fsyncs, 1);
  assert.is(journal.stats.records, 2);
  journal.close();
  assert.equal(replayed(), [{ kind: 'later', n: 1 }, { kind: 'now', n: 2 }]);
});

test('with no flush to ride along with, a deferrable record is flushed on its own before long', async () => {
  const dir = tempDir();
  const { journal, replayed } = open(dir, 10);
  await journal.append([{ kind: 'later', n: 1 }]);
  assert.is(journal.stats.fsyncs, 1);
  journal.close();
  assert.equal(replayed(), [{ kind: 'later', n: 1 }]);
});

test('sync() and rotate() take deferred records along', async () => {
  const dir = tempDir();
  const { journal, replayed } = open(dir);
  const a = watch(journal.append([{ kind: 'later', n: 1 }]));
  await journal.sync();
  assert.ok(a.done);
  const b = watch(journal.append([{ kind: 'later', n: 2 }]));
  await journal.rotate();
  assert.ok(b.done);
  assert.is(listSegments(dir).length, 2);
  journal.close();
  assert.equal(replayed().map((r) => r.n), [1, 2]);
});

test('a deferrable record appended during a flush waits for the next one, not for the flush in flight', async () => {
  const dir = tempDir();
  const { journal } = open(dir);
  const first = journal.append([{ kind: 'now', n: 1 }]);
  await nextTurns(0);
  const later = watch(journal.append([{ kind: 'later', n: 2 }]));
  await first;
  await nextTurns();
  assert.is(journal.stats.fsyncs, 1, 'the in-flight flush did not start another for the deferred record');
  await journal.append([{ kind: 'now', n: 3 }]);
  assert.ok(later.done);
  assert.is(journal.stats.fsyncs, 2);
  journal.close();
});

test('the ledger defers `reported` and `dropped`, never the steps the agent acts on', async () => {
  const dir = tempDir();
  const ledger = await Ledger.open(dir);
  const journal = ledger.durable.journal;
  const fsyncs = (): number => journal.stats.fsyncs;
  const start = fsyncs();
  await ledger.write({ t: 'claimed', id: 'c1', lease: 1, type: 'DELAY', payload: { ms: 0 }, at: 1 });
  await ledger.write({ t: 'executing', id: 'c1', lease: 1, startedAt: 2 });
  await ledger.write({ t: 'done', id: 'c1', lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 0 }, error: null });
  assert.is(fsyncs() - start, 3, 'each step the agent acts on is fsynced before write() resolves');
  journal.deferMs = 10 * 60_000; // only the next flush, or close(), takes them
  const reported = watch(ledger.write({ t: 'reported', id: 'c1', lease: 1 }));
  await nextTurns();
  assert.not.ok(reported.done);
  assert.is(fsyncs() - start, 3, 'no flush for `reported` alone');
  await ledger.write({ t: 'claimed', id: 'c2', lease: 1, type: 'DELAY', payload: { ms: 0 }, at: 3 });
  assert.ok(reported.done, '`reported` went with the claim of c2');
  assert.is(fsyncs() - start, 4);
  const dropped = watch(ledger.write({ t: 'dropped', id: 'c2', lease: 1, reason: 'test' }));
  await nextTurns();
  assert.not.ok(dropped.done);
  await ledger.close();
  assert.ok(dropped.done, 'close() flushed the deferred `dropped`');
  const reopened = await Ledger.open(dir);
  assert.equal(reopened.open(), [], 'both settled entries are gone after a reopen');
  await reopened.close();
});

const fileText = (dir: string): string => listSegments(dir).map((s) => fs.readFileSync(s.file, 'utf8')).join('');

test('an unsynced record is written at once with no fdatasync; the next fdatasync covers it', async () => {
  const dir = tempDir();
  const { journal, replayed } = open(dir);
  await journal.appendUnsynced([{ kind: 'now', n: 1 }]);
  assert.is(journal.stats.fsyncs, 0);
  assert.ok(fileText(dir).includes('"n":1'), 'in the file (a SIGKILL keeps it)');
  assert.is(journal.durableSeq, 0, 'not durable');
  await journal.append([{ kind: 'now', n: 2 }]);
  assert.is(journal.stats.fsyncs, 1, 'one fdatasync for both');
  assert.is(journal.durableSeq, 2);
  await journal.sync();
  assert.is(journal.stats.fsyncs, 1, 'sync() with nothing unsynced makes none');
  journal.close();
  assert.equal(replayed().map((r) => r.n), [1, 2]);
});

test('an unsynced record appended while an fdatasync is in flight is written at once, and synced by the next one', async () => {
  const dir = tempDir();
  const { journal, replayed } = open(dir);
  const first = journal.append([{ kind: 'now', n: 1 }]);
  const firstDone = watch(first);
  await new Promise((resolve) => process.nextTick(resolve)); // the flush has written n 1 and awaits its fdatasync
  await journal.appendUnsynced([{ kind: 'now', n: 2 }]);
  assert.not.ok(firstDone.done, 'the fdatasync is still in flight');
  assert.ok(fileText(dir).includes('"n":2'), 'written ahead of it');
  await first;
  assert.is(journal.stats.fsyncs, 1);
  assert.is(journal.durableSeq, 1, 'an fdatasync covers only what was written before it began');
  await journal.sync();
  assert.is(journal.stats.fsyncs, 2);
  assert.is(journal.durableSeq, 2);
  journal.close();
  assert.equal(replayed().map((r) => r.n), [1, 2]);
});

test('sync() makes written records durable with one fdatasync', async () => {
  const dir = tempDir();
  const { journal } = open(dir);
  await Promise.all([journal.appendUnsynced([{ kind: 'now', n: 1 }]), journal.appendUnsynced([{ kind: 'now', n: 2 }])]);
  assert.is(journal.stats.fsyncs, 0);
  await journal.sync();
  assert.is(journal.stats.fsyncs, 1);
  assert.is(journal.durableSeq, 2);
  journal.close();
});

test('a deferrable record written along with an unsynced one still resolves only once an fdatasync covers it', async () => {
  const dir = tempDir();
  const { journal } = open(dir, 10);
  const deferred = journal.append([{ kind: 'later', n: 1 }]);
  const later = watch(deferred);
  await journal.appendUnsynced([{ kind: 'now', n: 2 }]);
  assert.ok(fileText(dir).includes('"n":1'), 'written with the unsynced one, in order');
  assert.not.ok(later.done);
  assert.is(journal.stats.fsyncs, 0);
  await deferred;
  assert.is(journal.stats.fsyncs, 1, "the deferral timer's fdatasync");
  assert.is(journal.durableSeq, 2);
  journal.close();
});

test('rotate() syncs unsynced records before it closes their segment', async () => {
  const dir = tempDir();
  const { journal, replayed } = open(dir);
  await journal.appendUnsynced([{ kind: 'now', n: 1 }]);
  await journal.rotate();
  assert.is(journal.stats.fsyncs, 1);
  assert.is(journal.durableSeq, 1);
  journal.close();
  assert.equal(replayed().map((r) => r.n), [1]);
});

test('the ledger writes `done` unsynced on request; reopened (as after a SIGKILL), it fsyncs what the last run left written', async () => {
  const dir = tempDir();
  const ledger = await Ledger.open(dir);
  const journal = ledger.durable.journal;
  await ledger.write({ t: 'executing', id: 'c1', lease: 1, type: 'DELAY', payload: { ms: 0 }, startedAt: 1 });
  const fsyncs = journal.stats.fsyncs;
  assert.is(await ledger.writeUnsynced({ t: 'done', id: 'c1', lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 0 }, error: null }), 'written');
  assert.is(journal.stats.fsyncs, fsyncs);
  assert.ok(journal.durableSeq < journal.lastSeq);
  // Not closed: a second process finds what the first wrote, unsynced.
  const reopened = await Ledger.open(dir, { noLock: true });
  assert.is(reopened.get('c1')?.step, 'done');
  assert.is(reopened.durable.journal.stats.fsyncs, 1, 'one fdatasync at open');
  assert.is(reopened.durable.journal.durableSeq, reopened.durable.journal.lastSeq);
  await reopened.close();
  await ledger.close();
});

test.run();
