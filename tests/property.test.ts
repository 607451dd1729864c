// Property: whatever sequence of transitions a store is sent (valid or not,
// one at a time or concurrently, across snapshots), closing and reopening the
// directory gives back exactly the state it had in memory.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isFinal, type Command, type CommandEvent, type StepResult } from '../state/command-fsm.ts';
import type { CommandOptions } from '../state/command-types.ts';
import { CommandStore } from '../state/command-store.ts';
import { cleanup, tempDir } from './support/processes.ts';
import { tableView } from './fixtures/workload.ts';
import { mulberry32 } from '../lib/prng.ts';

const test = suite('property');
test.after(cleanup);

const AGENTS = ['a1', 'a2', 'a3'];
const SNAPSHOT_BYTES = 16 * 1024;

/** A seeded PRNG with a helper for integers below n. */
function prng(seed: number): { next(): number; int(n: number): number } {
  const next = mulberry32(seed);
  return { next, int: (n) => Math.floor(next() * n) };
}

type Op = { kind: 'event'; id: string; ev: CommandEvent } | { kind: 'claim'; agentId: string; max: number } | { kind: 'promote' };

/** A random operation, biased towards ones that move a command, but often wrong on purpose. */
function randomOp(rng: ReturnType<typeof prng>, store: CommandStore, ids: string[], at: number): Op {
  const r = rng.next();
  if (r < 0.12 || ids.length === 0) {
    const reuse = ids.length > 0 && rng.next() < 0.1;
    const id = reuse ? ids[rng.int(ids.length)]! : `c${ids.length}`;
    const idemKey = rng.next() < 0.3 ? `k${rng.int(50)}` : undefined;
    // Job options on some: a priority, a schedule a little ahead, retries.
    const opts: CommandOptions = {};
    if (rng.next() < 0.3) opts.priority = rng.int(5) - 2;
    if (rng.next() < 0.15) opts.runAt = at + rng.int(40);
    if (rng.next() < 0.3) opts.retry = { attempts: 2 + rng.int(2), backoff: 'fixed', delayMs: rng.int(30), maxDelayMs: 30 };
    if (rng.next() < 0.1) opts.timeoutMs = 1 + rng.int(1000);
    const withOpts = Object.keys(opts).length > 0 ? { opts } : {};
    return { kind: 'event', id, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: rng.int(100) }, at, ...(idemKey ? { idemKey, bodyHash: 'h' } : {}), ...withOpts } };
  }
  if (r < 0.2) return { kind: 'claim', agentId: AGENTS[rng.int(AGENTS.length)]!, max: 1 + rng.int(3) };
  if (r < 0.23) return { kind: 'promote' };
  // Mostly commands still in play: final ones only ever reject.
  const live = ids.filter((id) => {
    const c = store.get(id);
    return c !== undefined && !isFinal(c.state);
  });
  const from = live.length > 0 && rng.next() < 0.8 ? live : ids;
  const id = rng.next() < 0.03 ? 'unknown' : from[rng.int(from.length)]!;
  const cmd: Command | undefined = store.get(id);
  const attempt = cmd?.attempt ?? 0;
  const agentId = cmd?.agentId && rng.next() < 0.85 ? cmd.agentId : AGENTS[rng.int(AGENTS.length)]!;
  const lease = rng.next() < 0.85 ? attempt : attempt + rng.int(3) - 1;
  const t = rng.next();
  const ev: CommandEvent =
    t < 0.14 ? { type: 'claim-start', agentId, lease: rng.next() < 0.85 ? attempt + 1 : lease, at }
    // claim and start: what journals from before claim-and-start hold
    : t < 0.3 ? { type: 'claim', agentId, lease: rng.next() < 0.85 ? attempt + 1 : lease, at }
    : t < 0.44 ? { type: 'start', agentId, lease, at }
    : t < 0.66 ? { type: 'finish', agentId, lease, outcome: rng.next() < 0.7 ? 'COMPLETED' : 'FAILED', result: { ok: true, n: rng.int(1000) }, error: rng.next() < 0.5 ? 'boom, then; more' : null, at, retryAt: at + rng.int(30) }
    : t < 0.72 ? { type: 'release', agentId, lease, at }
    : t < 0.8 ? { type: 'expire', lease, at, retryAt: at + rng.int(30) }
    : t < 0.85 ? { type: 'timeout', lease, at, retryAt: at + rng.int(30) }
    : t < 0.92 ? { type: 'due', at: at + rng.int(60) }
    : { type: 'cancel', at };
  return { kind: 'event', id, ev };
}

/** Runs one op; resolves with how many journal records it wrote. */
async function run(store: CommandStore, op: Op): Promise<number> {
  if (op.kind === 'promote') return store.promoteDue();
  if (op.kind === 'claim') return (await store.claim(op.agentId, op.max)).length;
  const r: StepResult = await store.transition(op.id, op.ev);
  return r.kind === 'next' ? 1 : 0;
}

async function reopen(dir: string): Promise<{ store: CommandStore; logs: string[] }> {
  const logs: string[] = [];
  const store = await CommandStore.open(dir, { noLock: true, snapshotBytes: SNAPSHOT_BYTES, log: (m) => m !== 'snapshot written' && logs.push(m) });
  return { store, logs };
}

// Found by the property test, kept as a plain case: replay does not shift the
// PENDING queue the way live claims do, so a released command was queued twice
// after a restart and one claim batch took it twice.
test('after a restart, a command given back is handed out once', async () => {
  const dir = tempDir();
  let { store } = await reopen(dir);
  for (const id of ['c0', 'c1']) await store.transition(id, { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at: 1 });
  const [first] = await store.claim('a1', 1);
  await store.release('a1', first!.id, 1);
  await store.close();
  ({ store } = await reopen(dir));
  const claimed = await store.claim('a2', 10);
  assert.equal(claimed.map((c) => [c.id, c.attempt]).sort(), [['c0', 2], ['c1', 1]]);
  await store.close();
});

for (const seed of [1, 2, 3]) {
  test(`seed ${seed}: 2,000 random operations, reopened after each step, equal the state in memory`, async () => {
    const rng = prng(seed);
    const dir = tempDir();
    let { store } = await reopen(dir);
    const ids: string[] = [];
    let written = 0;
    let snapshots = 0;
    const seen = new Set<string>();
    for (let n = 0; n < 2000; ) {
      // One op, or a burst of concurrent ones that share group commits.
      const burst = rng.next() < 0.5 ? 2 + rng.int(7) : 1;
      const ops: Op[] = [];
      for (let k = 0; k < burst; k++, n++) {
        const op = randomOp(rng, store, ids, 1_700_000_000_000 + n);
        if (op.kind === 'event' && op.ev.type === 'submit' && !ids.includes(op.id)) ids.push(op.id);
        ops.push(op);
      }
      // Ops are issued in order, so a burst's later ops see its earlier ones' state.
      const counts = await Promise.all(ops.map((op) => run(store, op)));
      written += counts.reduce((a, b) => a + b, 0);

      for (const [state, count] of Object.entries(store.table.countByState)) if (count > 0) seen.add(state);
      const before = tableView(store.table);
      assert.is(store.durable.journal.lastSeq, written, 'exactly the moves were journaled');
      await store.close();
      snapshots += store.durable.snapshots;
      const opened = await reopen(dir);
      assert.equal(tableView(opened.store.table), before, `after op ${n}`);
      assert.equal(opened.logs, [], `replay after op ${n} was not clean`);
      store = opened.store;
    }
    assert.ok(written > 600, `only ${written} of the operations moved a command`);
    console.log(`seed ${seed}: ${written} records, ${snapshots} snapshots, ${store.table.size} commands`);
    assert.ok(snapshots >= 3, `only ${snapshots} snapshots`);
    assert.equal([...seen].sort(), ['ASSIGNED', 'COMPLETED', 'FAILED', 'PENDING', 'RETRY_WAIT', 'RUNNING', 'SCHEDULED'], 'every state was reached');

    // Every PENDING command is still queued after all those reopens: a claim drains exactly them.
    const pending = [...store.table.liveCommands()].filter((c) => c.state === 'PENDING').map((c) => c.id);
    const claimed = await store.claim('drain', 1_000_000);
    assert.equal(claimed.map((c) => c.id).sort(), pending.sort());
    await store.close();
  });
}

test.run();
