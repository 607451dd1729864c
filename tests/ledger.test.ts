// The agent's ledger: steps only in LEDGER_STEPS order, one identity per
// directory, and settled entries gone from the state, so snapshots drop them.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { listSegments } from '../state/journal.ts';
import { Ledger, LEDGER_STEPS, LedgerState, type LedgerRecord, type LedgerStep } from '../state/ledger.ts';
import { SNAPSHOT_FILE } from '../state/snapshot.ts';
import { cleanup, tempDir } from './support/processes.ts';

const test = suite('ledger');
test.after(cleanup);

type Kind = keyof typeof LEDGER_STEPS;
const KINDS = Object.keys(LEDGER_STEPS) as Kind[];

function record(t: Kind, id: string, lease = 1): LedgerRecord {
  switch (t) {
    case 'claimed':
      return { t, id, lease, type: 'DELAY', payload: { ms: 20 }, at: 1000 };
    case 'executing':
      return { t, id, lease, type: 'DELAY', payload: { ms: 20 }, startedAt: 2000 };
    case 'done':
      return { t, id, lease, outcome: 'COMPLETED', result: { ok: true, tookMs: 20 }, error: null };
    case 'reported':
      return { t, id, lease };
    case 'dropped':
      return { t, id, lease, reason: 'lease no longer ours' };
  }
}

/** A ledger state whose entry for `id` is at `at` (null: no entry). */
function stateAt(at: LedgerStep | null, id: string): LedgerState {
  const s = new LedgerState();
  const path: Record<LedgerStep, Kind[]> = { claimed: ['claimed'], executing: ['executing'], done: ['executing', 'done'] };
  for (const t of at ? path[at] : []) s.apply(record(t, id));
  return s;
}

test('each record is accepted exactly after the step LEDGER_STEPS names', () => {
  for (const t of KINDS) {
    for (const at of [null, 'claimed', 'executing', 'done'] as const) {
      const s = stateAt(at, 'c1');
      const before = structuredClone(s.entries.get('c1'));
      const legal = LEDGER_STEPS[t].from.includes(at);
      if (legal) {
        s.apply(record(t, 'c1'));
        const to = LEDGER_STEPS[t].to;
        assert.is(s.entries.get('c1')?.step, to === 'settled' ? undefined : to, `${t} after ${at}`);
      } else {
        assert.throws(() => s.apply(record(t, 'c1')), new RegExp(`${t} of c1 must follow`), `${t} after ${at ?? 'nothing'}`);
        assert.equal(s.entries.get('c1'), before, `a refused ${t} changed the entry`);
      }
    }
  }
});

test('a record for another lease of the same command is refused', () => {
  const s = stateAt('executing', 'c1');
  assert.throws(() => s.apply(record('done', 'c1', 2)), /names lease 2, the entry holds 1/);
  // Once settled, the command may come back under a new lease (a retried command's next attempt).
  s.apply(record('done', 'c1'));
  s.apply(record('reported', 'c1'));
  s.apply(record('executing', 'c1', 2));
  assert.is(s.entries.get('c1')?.lease, 2);
});

test('a first `executing` carries its command; one after a `claimed` (ledgers from before claim-and-start) takes it from there', () => {
  const s = new LedgerState();
  assert.throws(() => s.apply({ t: 'executing', id: 'c1', lease: 1, startedAt: 5 }), /executing of c1 names no command type or payload/);
  s.apply({ t: 'executing', id: 'c1', lease: 1, startedAt: 5, type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:9/' }, timeoutMs: 300 });
  assert.equal(s.entries.get('c1'), { id: 'c1', lease: 1, type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:9/' }, step: 'executing', startedAt: 5, timeoutMs: 300 });
  s.apply({ t: 'claimed', id: 'c2', lease: 3, type: 'DELAY', payload: { ms: 1 }, at: 4, timeoutMs: 100 });
  s.apply({ t: 'executing', id: 'c2', lease: 3, startedAt: 6 });
  assert.equal(s.entries.get('c2'), { id: 'c2', lease: 3, type: 'DELAY', payload: { ms: 1 }, step: 'executing', claimedAt: 4, timeoutMs: 100, startedAt: 6 });
});

test('the identity is written once and survives reopen', async () => {
  const dir = tempDir();
  const ledger = await Ledger.open(dir, { noLock: true });
  assert.is(ledger.agentId, undefined);
  await ledger.write({ t: 'identity', agentId: 'agent-7' });
  await ledger.write({ t: 'identity', agentId: 'agent-7' });
  assert.throws(() => ledger.state.apply({ t: 'identity', agentId: 'agent-8' }), /identity is already agent-7/);
  await ledger.close();
  const again = await Ledger.open(dir, { noLock: true });
  assert.is(again.agentId, 'agent-7');
  await again.close();
});

test('the whole life of an entry reopens step by step', async () => {
  const dir = tempDir();
  const steps: Kind[] = ['executing', 'done', 'reported'];
  for (const [i, t] of steps.entries()) {
    const ledger = await Ledger.open(dir, { noLock: true });
    assert.is(ledger.get('c1')?.step, i === 0 ? undefined : steps[i - 1]);
    await ledger.write(record(t, 'c1'));
    await ledger.close();
  }
  const ledger = await Ledger.open(dir, { noLock: true });
  assert.equal(ledger.open(), []);
  await ledger.close();
});

test('a batch with a record that does not follow leaves memory and disk agreeing', async () => {
  const dir = tempDir();
  const ledger = await Ledger.open(dir, { noLock: true });
  await ledger.write(record('executing', 'c1'));
  const err = await Promise.resolve()
    .then(() => ledger.write(record('executing', 'c2'), record('executing', 'c1')))
    .then(() => undefined, (e: unknown) => e);
  assert.instance(err, Error);
  const inMemory = ledger.open();
  await ledger.close();
  const again = await Ledger.open(dir, { noLock: true });
  assert.equal(again.open(), inMemory);
  await again.close();
});

test('settled entries are compacted away by snapshots', async () => {
  const dir = tempDir();
  const ledger = await Ledger.open(dir, { noLock: true, snapshotBytes: 2048 });
  await ledger.write({ t: 'identity', agentId: 'agent-1' });
  for (let i = 0; i < 150; i++) {
    const id = `c${i}`;
    const last: Kind[] = i % 10 === 3 ? ['claimed'] : i % 10 === 5 ? ['executing'] : i % 10 === 7 ? ['executing', 'done'] : i % 10 === 9 ? ['claimed', 'dropped'] : ['executing', 'done', 'reported'];
    for (const t of last) await ledger.write(record(t, id));
  }
  const open = ledger.open();
  assert.is(open.length, 45);
  assert.ok(ledger.durable.snapshots >= 5, `${ledger.durable.snapshots} snapshots`);
  // One more, as of now, so the snapshot must hold exactly the open entries.
  await ledger.durable.compact();
  await ledger.close();

  assert.ok(listSegments(dir).length <= 2);
  const snap = fs.readFileSync(path.join(dir, SNAPSHOT_FILE), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { entry?: { id: string } });
  const ids = snap.flatMap((l) => (l.entry ? [l.entry.id] : []));
  assert.equal(ids.sort(), open.map((e) => e.id).sort());
  const bytes = fs.readdirSync(dir).reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
  assert.ok(bytes < 32 * 1024, `${bytes} bytes on disk for 45 open entries`);

  const again = await Ledger.open(dir, { noLock: true });
  assert.equal(again.open(), open);
  assert.is(again.agentId, 'agent-1');
  await again.close();
});

test.run();
