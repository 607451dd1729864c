// Replay takes a shortcut: CommandTable.replay() runs the same checks and
// step() as apply(), but leaves the claim order, the due order and who holds
// what to resetPendingQueue(), which rebuilds them once. A table replayed
// that way must be the table apply() builds, and a record that does not
// follow must still be refused.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandTable } from '../state/command-table.ts';
import { recordFor, tableAfter, tableView, workloadWaves, type Step } from './fixtures/workload.ts';

const test = suite('replay');

const submit = (id: string, at: number, priority = 0): Step => ({ id, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at, opts: { priority } } });
// The waves end with nothing PENDING: a few more that wait, one given back unbegun.
const steps = [
  ...workloadWaves(5).flat(),
  submit('p-1', 2_000_000_000_000),
  submit('p-2', 2_000_000_000_001, 5),
  submit('p-3', 2_000_000_000_002),
  { id: 'p-1', ev: { type: 'claim-start', agentId: 'agent-1', lease: 1, at: 2_000_000_000_003 } },
  { id: 'p-1', ev: { type: 'release', agentId: 'agent-1', lease: 1, at: 2_000_000_000_004 } },
] satisfies Step[];

function replayed(all: readonly Step[]): CommandTable {
  const t = new CommandTable();
  for (const s of all) t.replay(recordFor(t, s));
  t.resetPendingQueue();
  return t;
}

/** Every PENDING id in the order claims would take them. */
function claimOrder(t: CommandTable): string[] {
  const out: string[] = [];
  for (let id = t.pending.shift(); id !== undefined; id = t.pending.shift()) if (t.stateOf(id) === 'PENDING') out.push(id);
  return out;
}

test('a replayed table is the applied one: commands, counts, holders, keys, claim order', () => {
  const applied = tableAfter(steps);
  applied.resetPendingQueue(); // a restart queues in submission order
  const back = replayed(steps);
  assert.equal(tableView(back), tableView(applied));
  assert.ok([...back.heldBy.values()].some((ids) => ids.size > 0), 'the workload leaves commands held');
  const order = claimOrder(back);
  assert.ok(order.length > 0, 'the workload leaves commands PENDING');
  assert.equal(order, claimOrder(applied));
});

test('apply() after replay() first rebuilds what replay left stale', () => {
  const t = new CommandTable();
  for (const s of steps) t.replay(recordFor(t, s));
  const id = 'late-1';
  t.apply({ id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at: 1 } });
  t.apply({ id, from: 'PENDING', version: 1, ev: { type: 'claim-start', agentId: 'agent-9', lease: 1, at: 2 } });
  const expected = tableAfter([...steps, { id, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at: 1 } }, { id, ev: { type: 'claim-start', agentId: 'agent-9', lease: 1, at: 2 } }]);
  assert.equal(tableView(t), tableView(expected));
  assert.equal([...t.heldBy.get('agent-9')!], [id]);
});

test('replay() refuses a record that does not follow, as apply() does', () => {
  const t = new CommandTable();
  const id = 'c-1';
  t.replay({ id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at: 1 } });
  assert.throws(() => t.replay({ id, from: 'PENDING', version: 3, ev: { type: 'cancel', at: 2 } }), /was made from PENDING@3/);
  assert.throws(() => t.replay({ id, from: 'PENDING', version: 1, ev: { type: 'start', agentId: 'a', lease: 1, at: 2 } }), /not a legal transition/);
  assert.is(t.get(id)!.version, 1, 'nothing changed');
});

test.run();
