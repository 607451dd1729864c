// The order commands are handed out in: ClaimQueue (priority, then first in
// first out, optionally only some types) and DueHeap (due time, then first in);
// and the same order after a restart, where PENDING lines stay bytes and their
// type and priority are read off them.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ClaimQueue } from '../state/claim-queue.ts';
import { DueHeap } from '../state/due-heap.ts';
import { CommandTable, type CommandRecord } from '../state/command-table.ts';
import type { CommandEvent } from '../state/command-fsm.ts';
import type { CommandType } from '../state/command-types.ts';
import { mulberry32 } from '../lib/prng.ts';
import { CommandStore } from '../state/command-store.ts';
import { cleanup, tempDir } from './support/processes.ts';

const test = suite('claim order');
test.after(cleanup);

function drain(q: ClaimQueue, types?: ReadonlySet<CommandType>): string[] {
  const out: string[] = [];
  for (let id = q.shift(types); id !== undefined; id = q.shift(types)) out.push(id);
  return out;
}

test('highest priority first, first in first out within one, across types', () => {
  const q = new ClaimQueue();
  q.push('d0', 'DELAY', 0);
  q.push('h5', 'HTTP_GET_JSON', 5);
  q.push('d5', 'DELAY', 5);
  q.push('dm', 'DELAY', -100);
  q.push('h0', 'HTTP_GET_JSON', 0);
  q.push('h100', 'HTTP_GET_JSON', 100);
  q.push('d0b', 'DELAY', 0);
  assert.is(q.length, 7);
  assert.equal(drain(q), ['h100', 'h5', 'd5', 'd0', 'h0', 'd0b', 'dm']);
  assert.is(q.length, 0);
});

test('a claim that names its types takes only those, in the same order', () => {
  const q = new ClaimQueue();
  for (const [id, type, p] of [['a', 'DELAY', 1], ['b', 'HTTP_GET_JSON', 9], ['c', 'DELAY', 3], ['d', 'HTTP_GET_JSON', 1]] as const) q.push(id, type, p);
  assert.equal(drain(q, new Set(['DELAY'])), ['c', 'a']);
  assert.equal(drain(q, new Set(['DELAY'])), []);
  assert.equal(drain(q), ['b', 'd']);
});

test('against a sort of the same pushes: random priorities, types and interleaved shifts', () => {
  const rng = mulberry32(7);
  const q = new ClaimQueue();
  const model: Array<{ id: string; p: number; n: number }> = [];
  for (let n = 0; n < 5000; n++) {
    if (rng() < 0.6) {
      const p = Math.floor(rng() * 7) - 3;
      const type = rng() < 0.5 ? 'DELAY' : 'HTTP_GET_JSON';
      q.push(`c${n}`, type, p);
      model.push({ id: `c${n}`, p, n });
    } else {
      model.sort((a, b) => b.p - a.p || a.n - b.n);
      assert.is(q.shift(), model.shift()?.id);
    }
  }
});

test('a command given back goes to the front of its priority, across types, and stays behind higher priorities', () => {
  const q = new ClaimQueue();
  q.push('d1', 'DELAY', 0);
  q.push('h1', 'HTTP_GET_JSON', 0);
  q.push('d9', 'DELAY', 9);
  assert.is(q.shift(), 'd9');
  assert.is(q.shift(), 'd1');
  q.pushFront('d1', 'DELAY', 0); // claimed, then given back unbegun
  q.push('h2', 'HTTP_GET_JSON', 0);
  q.pushFront('x', 'HTTP_GET_JSON', 3); // a level that was empty
  assert.is(q.length, 4);
  assert.equal(drain(q), ['x', 'd1', 'h1', 'h2']);
});

test('a command released by its agent is claimed again before the ones queued after it, live and after a restart', async () => {
  const dir = tempDir();
  let store = await CommandStore.open(dir, { noLock: true });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await store.submit({ type: 'DELAY', payload: { ms: 0 } })).id);
  const [first] = await store.claim('a1', 1);
  assert.is(first!.id, ids[0]);
  assert.is((await store.release('a1', first!.id, first!.attempt)).kind, 'next');
  assert.equal((await store.claim('a2', 1)).map((c) => [c.id, c.attempt]), [[ids[0], 2]]);
  const [second] = await store.claim('a2', 1);
  await store.release('a2', second!.id, second!.attempt);
  await store.close();
  store = await CommandStore.open(dir, { noLock: true });
  assert.equal((await store.claim('a3', 5)).map((c) => c.id), [ids[1], ids[2]]);
  await store.close();
});

test('due heap: earliest first, first in first out at equal times', () => {
  const h = new DueHeap();
  const rng = mulberry32(3);
  const pushed: Array<{ id: string; at: number }> = [];
  for (let i = 0; i < 2000; i++) {
    const at = Math.floor(rng() * 100);
    h.push(`w${i}`, at);
    pushed.push({ id: `w${i}`, at });
  }
  const out: string[] = [];
  for (let e = h.pop(); e; e = h.pop()) out.push(e.id);
  assert.equal(out, pushed.sort((a, b) => a.at - b.at).map((e) => e.id)); // Array.sort is stable
});

test('after a restart from snapshot bytes the claim order is the same: priorities read off the lines, old lines without them at 0', () => {
  const t = new CommandTable();
  const apply = (id: string, ev: CommandEvent): void => {
    const cur = t.get(id);
    const rec: CommandRecord = { id, from: cur ? cur.state : null, version: cur ? cur.version : 0, ev };
    t.apply(rec);
  };
  const subs: Array<[string, number, CommandType, string?]> = [
    ['p0', 0, 'DELAY'], ['pm7', -7, 'HTTP_GET_JSON'], ['p42', 42, 'DELAY', 'key-42'], ['p100', 100, 'HTTP_GET_JSON'], ['pm100', -100, 'DELAY'], ['p42b', 42, 'HTTP_GET_JSON'],
  ];
  subs.forEach(([id, priority, type, idemKey], i) => apply(id, {
    type: 'submit', id, cmdType: type, payload: type === 'DELAY' ? { ms: 1 } : { url: 'http://127.0.0.1:1/' }, at: 1000 + i,
    ...(idemKey ? { idemKey, bodyHash: 'h' } : {}), ...(priority !== 0 ? { opts: { priority } } : {}),
  }));
  const dump = t.dump();
  const lines = [...dump.lines];
  dump.done();
  // A line as 0.1.0 wrote it: the fifteen fields, no job fields (its priority is 0).
  const old = JSON.stringify(['old-1', 'PENDING', null, 'DELAY', { ms: 1 }, 1, 0, null, null, null, 0, 999, 999, null, 'submit,P,0']);
  const r = new CommandTable();
  r.loadChunk(Buffer.from([old, ...lines].map((l) => `${l}\n`).join('')));
  r.resetPendingQueue();
  assert.equal(drain(r.pending), ['p100', 'p42', 'p42b', 'old-1', 'p0', 'pm7', 'pm100']);
  assert.is(r.get('old-1')!.priority, 0);
  assert.is(r.get('pm100')!.priority, -100);
});

test('a backlog that falls due at once is promoted in batches, in due-time order, and claimed in that order', async () => {
  let clock = 1_800_000_000_000;
  const store = await CommandStore.open(tempDir(), { noLock: true, now: () => clock });
  const rng = mulberry32(5);
  const due: Array<{ id: string; at: number }> = [];
  for (let i = 0; i < 2500; i++) {
    const runAt = clock + 1 + Math.floor(rng() * 1000);
    const r = await store.submit({ type: 'DELAY', payload: { ms: 1 }, opts: { runAt } });
    due.push({ id: r.id, at: runAt });
  }
  assert.is(await store.promoteDue(), 0, 'nothing is due yet');
  clock += 2000;
  assert.equal([await store.promoteDue(), await store.promoteDue(), await store.promoteDue(), await store.promoteDue()], [1000, 1000, 500, 0]);
  const claimed = (await store.claim('a1', 1000)).concat(await store.claim('a2', 1000), await store.claim('a3', 1000));
  assert.equal(claimed.map((c) => c.id), due.sort((a, b) => a.at - b.at).map((d) => d.id));
  await store.close();
});

test.run();
