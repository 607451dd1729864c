// A server journal record as it lies on disk (format 3): a JSON array with the
// fields at fixed places. Every event type must come back exactly as it was
// journaled, older object records must still read, and anything else must be
// refused rather than half-applied.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TRANSITIONS, type EventType } from '../state/command-fsm.ts';
import { fromJournal, toJournal } from '../state/command-record.ts';
import { CommandTable, type CommandRecord, type TableRecord } from '../state/command-table.ts';
import { recordFor, tableAfter, tableView, workloadWaves } from './fixtures/workload.ts';

const test = suite('command record');

const id = '0b9c6a52-3f1e-4c8a-9d2e-5a7b8c9d0e1f';
const at = 1_700_000_000_000;

/** One record of each event type, with its optional fields absent, then with each present. */
const RECORDS: CommandRecord[] = [
  { id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 300 }, at } },
  { id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 300 }, at, idemKey: 'k-1', bodyHash: 'ab'.repeat(32) } },
  {
    id, from: null, version: 0,
    ev: { type: 'submit', id, cmdType: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:1/x', expectStatus: [200, 404] }, at, opts: { priority: -3, runAt: at + 60_000, retry: { attempts: 3, backoff: 'exponential', delayMs: 100, maxDelayMs: 1000 }, timeoutMs: 5000, retryOf: 'c-0' } },
  },
  { id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 1 }, at, opts: { priority: 2 } } },
  { id, from: 'PENDING', version: 1, ev: { type: 'claim-start', agentId: 'agent-1', lease: 1, at: at + 1 } },
  { id, from: 'PENDING', version: 1, ev: { type: 'claim', agentId: 'agent-1', lease: 1, at: at + 1 } },
  { id, from: 'ASSIGNED', version: 2, ev: { type: 'start', agentId: 'agent-1', lease: 1, at: at + 2 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'release', agentId: 'agent-1', lease: 1, at: at + 2 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'finish', agentId: 'agent-1', lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 301 }, error: null, at: at + 312 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'finish', agentId: 'agent-1', lease: 1, outcome: 'FAILED', result: null, error: 'HTTP 500', at: at + 9, retryAt: at + 109 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'finish', agentId: 'agent-1', lease: 1, outcome: 'COMPLETED', result: [null, 'a\nb', { '"': '\u0000' }], error: null, at: at + 9 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'expire', lease: 1, at: at + 30_000 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'expire', lease: 1, at: at + 30_000, retryAt: at + 30_100 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'timeout', lease: 1, at: at + 5000 } },
  { id, from: 'RUNNING', version: 2, ev: { type: 'timeout', lease: 1, at: at + 5000, retryAt: at + 5100 } },
  { id, from: 'PENDING', version: 1, ev: { type: 'cancel', at: at + 3 } },
  { id, from: 'SCHEDULED', version: 1, ev: { type: 'due', at: at + 60_000 } },
];

/** What replay reads back: the record journaled, as text, then parsed. */
const throughDisk = (rec: TableRecord): TableRecord => fromJournal(JSON.parse(JSON.stringify(toJournal(rec))));

test('the records above cover every event type', () => {
  const covered = new Set(RECORDS.map((r) => r.ev.type));
  const missing = (Object.keys(TRANSITIONS) as EventType[]).filter((t) => !covered.has(t));
  assert.equal(missing, [], 'an event type has no record here: give it one, and a place in the array form');
});

test('every record comes back from the journal exactly as it was written, optional fields absent or present', () => {
  for (const rec of RECORDS) assert.equal(throughDisk(rec), rec, rec.ev.type);
});

test('a record is an array [id, from, version, type, at, ...], and absent optional fields leave no trailing nulls', () => {
  assert.equal(JSON.stringify(toJournal(RECORDS[0]!)), `["${id}",null,0,"submit",${at},"DELAY",{"ms":300}]`);
  assert.equal(JSON.stringify(toJournal(RECORDS[4]!)), `["${id}","PENDING",1,"claim-start",${at + 1},"agent-1",1]`);
  assert.equal(JSON.stringify(toJournal(RECORDS[8]!)), `["${id}","RUNNING",2,"finish",${at + 312},"agent-1",1,"COMPLETED",{"ok":true,"tookMs":301},null]`);
  assert.equal(JSON.stringify(toJournal(RECORDS[9]!)), `["${id}","RUNNING",2,"finish",${at + 9},"agent-1",1,"FAILED",null,"HTTP 500",${at + 109}]`);
  assert.equal(JSON.stringify(toJournal(RECORDS[3]!)), `["${id}",null,0,"submit",${at},"DELAY",{"ms":1},null,null,{"priority":2}]`);
  assert.equal(JSON.stringify(toJournal(RECORDS[15]!)), `["${id}","PENDING",1,"cancel",${at + 3}]`);
});

test('records written before format 3 (objects) and retention forget records read as they are', () => {
  for (const rec of RECORDS) assert.equal(fromJournal(JSON.parse(JSON.stringify(rec))), rec, rec.ev.type);
  const forget = { forget: [id, 'c-2'], at };
  assert.equal(toJournal(forget), forget, 'a forget record is journaled as an object');
  assert.equal(throughDisk(forget), forget);
});

test('anything else is refused with a reason, so open stops at the record', () => {
  assert.throws(() => fromJournal(null), /neither an array nor an object/);
  assert.throws(() => fromJournal(42), /neither an array nor an object/);
  assert.throws(() => fromJournal([id, null, 0, 'submit']), /does not begin \[id, from, version, type, at\]/);
  assert.throws(() => fromJournal([7, null, 0, 'submit', at]), /does not begin/);
  assert.throws(() => fromJournal([id, 'PENDING', 1, 'teleport', at]), /unknown event type "teleport"/);
});

test('a workload journaled and read back replays to the table that applying it built', () => {
  const steps = workloadWaves(6).flat();
  const back = new CommandTable();
  for (const s of steps) back.replay(throughDisk(recordFor(back, s)));
  back.resetPendingQueue();
  const applied = tableAfter(steps);
  applied.resetPendingQueue();
  assert.equal(tableView(back), tableView(applied));
});

test.run();
