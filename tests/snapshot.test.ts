// Snapshots and segment rotation: the state a directory reopens to is the
// state before, whether it closed cleanly or was SIGKILLed at any step of the
// snapshot sequence or of a group commit.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandStore } from '../state/command-store.ts';
import { listSegments } from '../state/journal.ts';
import { Ledger } from '../state/ledger.ts';
import { SNAPSHOT_FILE } from '../state/snapshot.ts';
import { cleanup, Proc, tempDir } from './support/processes.ts';
import { recordFor, tableAfter, tableView, workloadWaves, type Step } from './fixtures/workload.ts';
import { CommandTable } from '../state/command-table.ts';

const test = suite('snapshot');
test.after(cleanup);

const SNAPSHOT_BYTES = 4096;
const GROUPS = 12;
const waves = workloadWaves(GROUPS);
const steps = waves.flat();

/** Commit the steps from index `from` on, each wave's remainder as one concurrent group. */
async function runFrom(store: CommandStore, from: number): Promise<void> {
  let start = 0;
  for (const wave of waves) {
    const end = start + wave.length;
    const todo: Step[] = wave.slice(Math.max(0, from - start));
    if (end > from) {
      const results = await Promise.all(todo.map((s) => store.transition(s.id, s.ev)));
      for (const r of results) assert.is(r.kind, 'next');
    }
    start = end;
  }
}

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, Error, 'expected a rejection');
  assert.match((err as Error).message, re);
}

/** Index one past the end of the wave that holds step `i`. */
function waveEnd(i: number): number {
  let end = 0;
  for (const wave of waves) {
    end += wave.length;
    if (i < end) return end;
  }
  return end;
}

test('a store that snapshots and rotates reopens to the same state', async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES });
  await runFrom(store, 0);
  const before = tableView(store.table);
  const snapshots = store.durable.snapshots;
  await store.close();

  // 14 on a quiet machine; under load a compaction still running when the
  // journal passes the bound again lets that trigger go, so fewer.
  assert.ok(snapshots >= 5, `only ${snapshots} snapshots were taken`);
  assert.ok(fs.existsSync(path.join(dir, SNAPSHOT_FILE)));
  // Compaction deleted the covered segments: what is left is the tail after the last snapshot.
  assert.ok(listSegments(dir).length <= 2, `segments left: ${listSegments(dir).length}`);
  assert.equal(before, tableView(tableAfter(steps)));

  const logs: string[] = [];
  const again = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES, log: (m) => logs.push(m) });
  assert.equal(tableView(again.table), before);
  assert.is(again.durable.journal.lastSeq, steps.length);
  assert.equal(logs, []);
  await again.close();
});

test('a dump read while transitions go on is the table as of the moment it was taken', () => {
  // Every prefix of the workload is a cut; the rest of it runs between the
  // dump and the reading of its lines (copy on write in CommandTable).
  for (const cut of [1, Math.floor(steps.length / 3), steps.length - 5]) {
    const table = tableAfter(steps.slice(0, cut));
    const expected = tableView(table);
    const dump = table.dump();
    const lines = dump.lines[Symbol.iterator]();
    const firstLine = lines.next(); // read part of it before the changes, part after
    for (const s of steps.slice(cut)) table.apply(recordFor(table, s));
    const read = [firstLine.value as string, ...{ [Symbol.iterator]: () => lines }];
    dump.done();
    const restored = new CommandTable();
    for (const line of read) restored.load(line);
    restored.resetPendingQueue();
    assert.equal(tableView(restored), expected, `cut at ${cut}`);
    assert.equal(tableView(table), tableView(tableAfter(steps)), 'the live table moved on');
  }
});

test('a damaged snapshot is refused, not half-trusted', async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES });
  await runFrom(store, 0);
  await store.close();
  const file = path.join(dir, SNAPSHOT_FILE);
  const buf = fs.readFileSync(file);
  const at = buf.indexOf('"DELAY"') + 2;
  buf[at] = 'X'.charCodeAt(0);
  fs.writeFileSync(file, buf);
  await rejects(CommandStore.open(dir), /damaged snapshot at byte \d+: checksum mismatch/);
});

test('a snapshot cut short is refused', async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES });
  await runFrom(store, 0);
  await store.close();
  const file = path.join(dir, SNAPSHOT_FILE);
  fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
  await rejects(CommandStore.open(dir), /damaged snapshot at byte \d+/);
});

test('an entry longer than the read chunk, and an empty snapshot, reopen as they were', async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { noLock: true });
  const big = 'x'.repeat(9 << 20);
  await store.transition('big', { type: 'submit', id: 'big', cmdType: 'DELAY', payload: { ms: 1 }, at: 1 });
  await store.transition('big', { type: 'claim', agentId: 'a1', lease: 1, at: 2 });
  await store.transition('big', { type: 'start', agentId: 'a1', lease: 1, at: 3 });
  await store.finish('a1', 'big', 1, 'COMPLETED', { big }, null);
  await store.durable.compact();
  await store.close();
  const again = await CommandStore.open(dir, { noLock: true });
  assert.is((again.get('big')?.result as { big: string }).big, big);
  await again.close();

  const empty = tempDir();
  const ledger = await Ledger.open(empty, { noLock: true });
  await ledger.durable.compact();
  await ledger.close();
  const reopened = await Ledger.open(empty, { noLock: true });
  assert.equal([reopened.agentId, reopened.open()], [undefined, []]);
  await reopened.close();
});

test('a compaction asked for while one is running waits for it', async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { noLock: true, snapshotBytes: 2048 });
  let n = 0;
  while (store.durable.snapshots === 0) {
    const id = `c${n++}`;
    const written = store.transition(id, { type: 'submit', id, cmdType: 'DELAY', payload: { ms: n }, at: n });
    // The submit that crosses the bound has started a compaction: ask for another now.
    if (store.durable.journal.currentSegmentBytes < 100) await store.durable.compact();
    await written;
  }
  const before = tableView(store.table);
  await store.close();
  const again = await CommandStore.open(dir, { noLock: true });
  assert.equal(tableView(again.table), before);
  await again.close();
});

test("another machine's snapshot is refused", async () => {
  const dir = tempDir();
  const store = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES });
  await runFrom(store, 0);
  await store.close();
  await rejects(Ledger.open(dir), /commands snapshot, not ledger/);
});

const POINTS = [
  'snapshot:tmp-written',
  'snapshot:tmp-synced',
  'snapshot:rotated',
  'snapshot:renamed',
  'snapshot:dir-synced',
  'snapshot:segment-deleted',
  'journal:written',
  'journal:synced',
];

// The crash children are independent: run a few at a time from the start of
// the file, so they overlap with each other and with the tests above.
const POOL = 3;
let running = 0;
const queued: Array<() => void> = [];
async function inPool<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= POOL) await new Promise<void>((r) => queued.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    queued.shift()?.();
  }
}

const crashes = new Map<string, Promise<{ dir: string; child: Proc }>>();
test.before(() => {
  for (const point of POINTS) {
    for (const hit of [1, 6]) {
      const spec = `${point}#${hit}`;
      crashes.set(
        spec,
        inPool(async () => {
          const dir = tempDir();
          const child = new Proc(`crash ${spec}`, ['tests/fixtures/store-workload.ts', dir, String(SNAPSHOT_BYTES), String(GROUPS)], { KEEL_CRASH_AT: spec });
          await child.exited;
          return { dir, child };
        }),
      );
    }
  }
});

for (const point of POINTS) {
  for (const hit of [1, 6]) {
    test(`SIGKILL at ${point}#${hit}: reopens to the acknowledged prefix, then carries on`, async () => {
      const { dir, child } = await crashes.get(`${point}#${hit}`)!;
      assert.is(child.child.signalCode, 'SIGKILL', `the child did not die at the crash point\n${child.stderr}`);
      assert.match(child.stderr, `"point":"${point}"`);

      const acked = child.lines.filter((l) => l.msg === 'ack').map((l) => Number(l.i));
      assert.equal(acked, acked.map((_, i) => i), 'acknowledgements are a prefix of the workload');

      const logs: string[] = [];
      // noLock: the dead child's lock would cost ~2 s to go stale; lock.test.ts covers that.
      const store = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES, noLock: true, log: (m) => logs.push(m) });
      const kept = store.durable.journal.lastSeq;
      assert.ok(kept >= acked.length, `${acked.length} acknowledged, only ${kept} reopened`);
      assert.ok(kept <= waveEnd(acked.length), `${kept} reopened: more than the in-flight wave past ${acked.length} acknowledged`);
      assert.equal(tableView(store.table), tableView(tableAfter(steps.slice(0, kept))));
      assert.equal(logs, [], 'replay was not clean');
      assert.not.ok(fs.existsSync(path.join(dir, `${SNAPSHOT_FILE}.tmp`)));

      await runFrom(store, kept);
      await store.close();
      const again = await CommandStore.open(dir, { snapshotBytes: SNAPSHOT_BYTES, noLock: true });
      assert.equal(tableView(again.table), tableView(tableAfter(steps)));
      await again.close();
    });
  }
}

test('a snapshot starts once the journal passes half the last snapshot, within the floor and the cap', async () => {
  const dir = tempDir();
  const floor = 8192;
  const submit = (i: number) => store.submit({ type: 'DELAY', payload: { ms: i } });
  let store = await CommandStore.open(dir, { snapshotBytes: 1 << 20, snapshotFloorBytes: floor });
  const durable = () => store.durable;
  assert.is(durable().compactAt, floor, 'no snapshot yet: the floor');
  for (let i = 0; i < 400; i++) await submit(i); // ~100 KiB of commands: several snapshots on the way
  await durable().compact();
  await store.close();
  const size = fs.statSync(path.join(dir, SNAPSHOT_FILE)).size;
  assert.ok(size / 2 > floor, `snapshot of ${size} bytes`);
  // Reopened: the bound comes from the snapshot found on disk.
  store = await CommandStore.open(dir, { snapshotBytes: 1 << 20, snapshotFloorBytes: floor });
  const at = durable().compactAt;
  assert.ok(Math.abs(at - size / 2) < 200, `compactAt ${at}, snapshot ${size}`);
  const before = durable().snapshots;
  while (durable().journal.currentSegmentBytes < at - 1000) await submit(1);
  assert.is(durable().snapshots, before, 'a snapshot before the bound');
  while (durable().journal.currentSegmentBytes < at + 1000 && durable().snapshots === before) await submit(2);
  await durable().compact(); // waits for the one under way, then takes another
  assert.ok(durable().snapshots >= before + 2, 'no snapshot once past the bound');
  await store.close();
  // The cap wins over half the snapshot.
  store = await CommandStore.open(dir, { snapshotBytes: 4096, snapshotFloorBytes: floor });
  assert.is(durable().compactAt, 4096);
  await store.close();
});

test.run();
