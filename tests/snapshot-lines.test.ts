// A restart keeps the snapshot's final and PENDING commands as the bytes they
// were read as (SnapshotLines) instead of strings in a Map: a table restored
// that way must be indistinguishable from one restored line by line, before
// and after further transitions, and the id index must find exactly its ids.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandTable } from '../state/command-table.ts';
import { readWholeLines } from '../state/fsio.ts';
import { idHash, SnapshotLines } from '../state/snapshot-lines.ts';
import { recordFor, tableAfter, tableView, workloadWaves } from './fixtures/workload.ts';
import { cleanup, tempDir } from './support/processes.ts';

const test = suite('snapshot-lines');
test.after(cleanup);

const steps = workloadWaves(6).flat();
// Ids the byte path must hand to the string path: not plain ASCII, or JSON-escaped.
const odd = ['naïve-1', 'quote"d', 'back\\slash', 'tab\there'];
const oddSteps = odd.flatMap((id, j) => [
  { id, ev: { type: 'submit' as const, id, cmdType: 'DELAY' as const, payload: { ms: j }, at: 10 + j } },
  ...(j % 2 ? [{ id, ev: { type: 'cancel' as const, at: 20 + j } }] : []),
]);
const all = [...steps.slice(0, 60), ...oddSteps, ...steps.slice(60)];

/** The table's dump as snapshot bytes, cut into chunks of whole lines at every `every` lines. */
function chunksOf(t: CommandTable, every: number): Buffer[] {
  const dump = t.dump();
  const lines = [...dump.lines];
  dump.done();
  const out: Buffer[] = [];
  for (let i = 0; i < lines.length; i += every) out.push(Buffer.from(lines.slice(i, i + every).map((l) => `${l}\n`).join('')));
  return out;
}

function restoredFromBytes(t: CommandTable, every: number): CommandTable {
  const r = new CommandTable();
  let n = 0;
  for (const c of chunksOf(t, every)) n += r.loadChunk(c);
  assert.is(n, t.size);
  r.resetPendingQueue();
  return r;
}

test('a table restored from bytes reads like the one it was dumped from', () => {
  for (const cut of [1, 37, 90, all.length]) {
    const before = tableAfter(all.slice(0, cut));
    for (const every of [1, 7, 1000]) {
      const r = restoredFromBytes(before, every);
      assert.equal(tableView(r), tableView(before), `cut ${cut}, ${every} lines a chunk`);
      assert.is(r.size, before.size);
      const ids = Array.from({ length: before.order.slots }, (_, i) => before.order.at(i)!);
      for (const id of [...ids, 'absent', 'c0-', 'c0-10']) {
        assert.equal(r.get(id), before.get(id), id);
        assert.is(r.stateOf(id), before.stateOf(id), id);
        assert.equal(r.trail(id), before.trail(id), id);
      }
    }
  }
});

test('transitions after a restore from bytes end where the whole workload does', () => {
  for (const cut of [9, 40, 61, 100]) {
    const r = restoredFromBytes(tableAfter(all.slice(0, cut)), 5);
    for (const s of all.slice(cut)) r.apply(recordFor(r, s));
    assert.equal(tableView(r), tableView(tableAfter(all)), `cut at ${cut}`);
    assert.throws(() => r.apply(recordFor(r, all[0]!)), /submit of c0-0/, 'a loaded command is still known');
  }
});

test('a dump of a table restored from bytes, read while it moves on, is the table as of the dump', () => {
  for (const cut of [20, 61]) {
    const r = restoredFromBytes(tableAfter(all.slice(0, cut)), 3);
    const expected = tableView(r);
    const dump = r.dump();
    for (const s of all.slice(cut)) r.apply(recordFor(r, s));
    const again = new CommandTable();
    again.loadChunk(Buffer.from([...dump.lines].map((l) => `${l}\n`).join('')));
    dump.done();
    again.resetPendingQueue();
    assert.equal(tableView(again), expected, `cut at ${cut}`);
    assert.equal(tableView(r), tableView(tableAfter(all)), 'the restored table moved on');
  }
});

test('after a restore, PENDING commands are queued oldest first, moved ones included', () => {
  const t = new CommandTable();
  const sub = (id: string, at: number) => t.apply({ id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at } });
  for (let i = 0; i < 6; i++) sub(`p${i}`, i);
  // p1 is ASSIGNED in the snapshot (decoded at load), p3 FAILED (kept as bytes).
  t.apply({ id: 'p1', from: 'PENDING', version: 1, ev: { type: 'claim', agentId: 'a', lease: 1, at: 10 } });
  t.apply({ id: 'p3', from: 'PENDING', version: 1, ev: { type: 'cancel', at: 11 } });
  const r = restoredFromBytes(t, 2);
  // Replay after the snapshot: p1 released, p2 claimed, p4 claimed and released, a new p6.
  r.apply({ id: 'p1', from: 'ASSIGNED', version: 2, ev: { type: 'release', agentId: 'a', lease: 1, at: 12 } });
  r.apply({ id: 'p2', from: 'PENDING', version: 1, ev: { type: 'claim', agentId: 'b', lease: 1, at: 13 } });
  r.apply({ id: 'p4', from: 'PENDING', version: 1, ev: { type: 'claim', agentId: 'b', lease: 1, at: 14 } });
  r.apply({ id: 'p4', from: 'ASSIGNED', version: 2, ev: { type: 'release', agentId: 'b', lease: 1, at: 15 } });
  r.apply({ id: 'p6', from: null, version: 0, ev: { type: 'submit', id: 'p6', cmdType: 'DELAY', payload: { ms: 1 }, at: 16 } });
  r.resetPendingQueue();
  const queued: string[] = [];
  for (let id = r.pending.shift(); id !== undefined; id = r.pending.shift()) queued.push(id);
  assert.equal(queued, ['p0', 'p1', 'p4', 'p5', 'p6']);
  assert.equal([...r.heldCommands()].map((c) => c.id), ['p2']);
  assert.equal([...r.liveCommands()].map((c) => c.id).sort(), ['p0', 'p1', 'p2', 'p4', 'p5', 'p6']);
  assert.equal(r.countByState, { SCHEDULED: 0, PENDING: 5, ASSIGNED: 1, RUNNING: 0, RETRY_WAIT: 0, COMPLETED: 0, FAILED: 1 });

  // Nothing decoded at load: a PENDING command claimed in replay leaves the queue all the same.
  const plain = new CommandTable();
  for (const id of ['q0', 'q1', 'q2']) plain.apply({ id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at: 1 } });
  const back = restoredFromBytes(plain, 2);
  back.apply({ id: 'q1', from: 'PENDING', version: 1, ev: { type: 'claim', agentId: 'a', lease: 1, at: 2 } });
  back.resetPendingQueue();
  assert.equal([back.pending.shift(), back.pending.shift(), back.pending.shift()], ['q0', 'q2', undefined]);
});

test('the id index finds every id it filed and nothing else, across growth', () => {
  const ids = Array.from({ length: 20_000 }, (_, i) => (i % 3 ? `id-${i}` : `${i.toString(16).padStart(8, '0')}-0000-4000-8000-${i}`));
  ids.push('a', 'ab', 'abc');
  const lines = new SnapshotLines();
  const end = new Int32Array(1);
  const half = Math.floor(ids.length / 2);
  // Two chunks, so positions in the second one are told apart from the first's.
  const texts = [ids.slice(0, half), ids.slice(half)].map((part) => Buffer.from(part.map((id) => `["${id}","PENDING"]\n`).join('')));
  const at = new Map<string, number>();
  texts.forEach((buf, c) => {
    lines.addChunk(buf);
    for (let start = 0; start < buf.length; start = buf.indexOf(10, start) + 1) {
      const hash = idHash(buf, start + 2, buf.length, end);
      const id = buf.toString('latin1', start + 2, end[0]);
      lines.add(c, start, hash);
      at.set(id, c * 2 ** 32 + start);
    }
  });
  assert.is(lines.size, ids.length);
  for (const id of ids) {
    assert.is(lines.find(id), at.get(id), id);
    assert.is(lines.line(lines.find(id)), `["${id}","PENDING"]`);
  }
  for (const id of ['', 'abcd', 'id-', 'id-20000', 'b', 'id-1 ']) assert.is(lines.find(id), -1, id);
  assert.is(idHash(Buffer.from('naïve"'), 0, 7, end), -1, 'non-ASCII is not filed');
  assert.is(idHash(Buffer.from('no-quote'), 0, 8, end), -1, 'an id without its closing quote is not filed');
});

test('readWholeLines cuts at newlines only, and gives a long line a buffer of its own', () => {
  const dir = tempDir();
  const file = path.join(dir, 'lines');
  const lines = ['a', '', 'bb', 'x'.repeat(50), 'ccc', 'y'.repeat(17), 'last'];
  fs.writeFileSync(file, `head\n${lines.join('\n')}\n`);
  const fd = fs.openSync(file, 'r');
  try {
    for (const chunk of [1, 5, 16, 1000]) {
      const bufs = readWholeLines(fd, 5, fs.fstatSync(fd).size, chunk);
      for (const b of bufs) assert.is(b[b.length - 1], 10, `chunk ${chunk}: every buffer ends a line`);
      assert.is(Buffer.concat(bufs).toString(), `${lines.join('\n')}\n`, `chunk ${chunk}`);
    }
  } finally {
    fs.closeSync(fd);
  }
});

test('the snapshot\'s ids are kept as line indexes: listing, retention and a dump cut before a forget still name them', () => {
  const t = new CommandTable();
  const ids = Array.from({ length: 12 }, (_, i) => `f${i}`);
  for (const [i, id] of ids.entries()) {
    t.apply({ id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at: i } });
    t.apply({ id, from: 'PENDING', version: 1, ev: { type: 'cancel', at: 100 + i } });
  }
  const r = restoredFromBytes(t, 3); // four chunks of three lines
  assert.equal(Array.from({ length: r.order.slots }, (_, i) => r.order.at(i)), ids);
  // A dump cut now, read after the first two chunks' commands are forgotten.
  const dump = r.dump();
  const gone = r.takeOldestFinals(6, 0, 6);
  assert.equal(gone, ids.slice(0, 6), 'retention takes the oldest, named off their lines');
  r.apply({ forget: gone, at: 1 });
  assert.equal(Array.from({ length: r.order.slots }, (_, i) => r.order.at(i)).filter((id) => id !== undefined && r.stateOf(id) !== undefined), ids.slice(6));
  assert.equal([...dump.lines].map((l) => JSON.parse(l)[0]), ids, 'the dump is as of its cut');
  dump.done();
  dump.done(); // twice is once
  assert.equal([...r.dump().lines].map((l) => JSON.parse(l)[0]), ids.slice(6));
  for (const id of gone) assert.is(r.get(id), undefined);
  assert.equal(r.takeOldestFinals(1, 0, 10), ['f6']);
});

test.run();
