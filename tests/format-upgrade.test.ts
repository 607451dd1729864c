// State directories of an older format open in this release, every command
// intact, and are upgraded in place (docs/format.md); a directory of a newer
// format is refused by name, before anything in it is read or changed.
// The old directories are tests/fixtures/state-v0.1.0/, written by keel 0.1.0.
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { commandView, eventViews } from '../lib/server/command-view.ts';
import { CommandStore } from '../state/command-store.ts';
import { FormatError } from '../state/errors.ts';
import { FORMAT, readHeader } from '../state/format.ts';
import { encodeRecord, listSegments, segmentName } from '../state/journal.ts';
import type { CommandRecord } from '../state/command-table.ts';
import { journalRecords } from './support/journal-files.ts';
import { Ledger } from '../state/ledger.ts';
import { call } from './support/http.ts';
import { cleanup, ROOT, startAgent, startServer, tempDir, Proc } from './support/processes.ts';

const FIXTURE = path.join(ROOT, 'tests/fixtures/state-v0.1.0');
const AGENT_ID = 'agent-8fba0267b59c';

interface Expected {
  command: Record<string, unknown> & { id: string; status: string; state: string; type: string };
  events: Array<Record<string, unknown>>;
}
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'expected.json'), 'utf8')) as Expected[];
const byIdemKey: Record<string, number> = { 'delay-0': 0, 'delay-3': 3, 'delay-6': 6, 'delay-9': 9, 'http-ok': 12, 'http-refused': 14, 'cancel-running': 16, 'interrupted-delay': 23, 'interrupted-http': 24, 'pending-1': 25, 'pending-2': 28 };

function copy(which: 'server' | 'agent'): string {
  const dir = tempDir('keel-v010-');
  fs.cpSync(path.join(FIXTURE, which), dir, { recursive: true });
  return dir;
}

/** Every field the 0.1.0 server showed is shown the same now (new fields may be added). */
function assertSameAs(what: string, now: Record<string, unknown>, then: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(then)) assert.equal(now[k], v, `${what}: ${k}`);
}

function formats(dir: string): number[] {
  return [path.join(dir, 'snapshot.jsonl'), ...listSegments(dir).map((s) => s.file)].map((f) => readHeader(f)?.format as number);
}

function filesOf(dir: string): Record<string, string> {
  return Object.fromEntries(fs.readdirSync(dir).filter((f) => !f.startsWith('lock')).map((f) => [f, fs.readFileSync(path.join(dir, f), 'latin1')]));
}

const test = suite('format upgrade');
test.after(cleanup);

test('the fixture is what its README says: format 1, a snapshot and a journal tail on each side', () => {
  for (const side of ['server', 'agent'] as const) {
    const dir = path.join(FIXTURE, side);
    assert.ok(fs.existsSync(path.join(dir, 'snapshot.jsonl')), `${side} has a snapshot`);
    const segs = listSegments(dir);
    assert.is(segs.length, 1);
    assert.ok(fs.readFileSync(segs[0]!.file, 'utf8').split('\n').length > 3, `${side} has a journal tail`);
    assert.equal(formats(dir), [1, 1]);
  }
  const states = expected.map((e) => e.command.error === 'CANCELED' ? 'CANCELED' : e.command.state);
  for (const s of ['COMPLETED', 'FAILED', 'CANCELED', 'RUNNING', 'PENDING']) assert.ok(states.includes(s), `the fixture has a ${s} command`);
});

test('a 0.1.0 server directory opens with every command, its events and idempotency keys intact, and is rewritten in the current format', async () => {
  const dir = copy('server');
  const logs: string[] = [];
  const store = await CommandStore.open(dir, { log: (m) => logs.push(m) });
  assert.is(store.table.size, expected.length);
  for (const e of expected) {
    const cmd = store.get(e.command.id);
    assert.ok(cmd, `${e.command.id} is missing`);
    assertSameAs(e.command.id, JSON.parse(JSON.stringify(commandView(cmd))), e.command);
    const events = eventViews(store.table.trail(e.command.id)!);
    assert.is(events.length, e.events.length, `${e.command.id} events`);
    events.forEach((ev, i) => assertSameAs(`${e.command.id} event ${i + 1}`, JSON.parse(JSON.stringify(ev)), e.events[i]!));
  }
  for (const [key, i] of Object.entries(byIdemKey)) assert.is(store.table.byIdemKey.get(key), expected[i]!.command.id, key);
  // The PENDING ones are handed out oldest first.
  const pending = expected.filter((e) => e.command.state === 'PENDING').map((e) => e.command.id);
  assert.equal((await store.claim('upgrade-test', 10)).map((c) => c.id), pending);

  assert.ok(store.durable.upgraded, 'an old directory is upgraded');
  await store.durable.upgraded;
  assert.ok(logs.includes('upgrading state directory'));
  assert.equal([...new Set(formats(dir))], [FORMAT], 'every file is rewritten in this format');
  await store.close();

  // Reopened: the same commands, nothing left to upgrade.
  const again = await CommandStore.open(dir);
  assert.is(again.durable.upgraded, undefined);
  for (const e of expected) assert.is(again.get(e.command.id)?.state, e.command.state === 'PENDING' ? 'RUNNING' : e.command.state);
  assert.is(again.table.size, expected.length);
  await again.close();
});

test('a 0.1.0 agent ledger opens with its identity and unsettled entries, and is rewritten in the current format', async () => {
  const dir = copy('agent');
  const ledger = await Ledger.open(dir);
  assert.is(ledger.agentId, AGENT_ID);
  const running = expected.filter((e) => e.command.state === 'RUNNING');
  assert.equal(
    ledger.open().map((e) => [e.id, e.step, e.lease, e.type]),
    running.map((e) => [e.command.id, 'executing', 1, e.command.type]),
  );
  await ledger.durable.upgraded;
  assert.equal([...new Set(formats(dir))], [FORMAT]);
  await ledger.close();
});

test('0.1.0 server and agent directories, run by this release: the interrupted and pending commands finish, nothing else changes', async () => {
  const serverDir = copy('server');
  const agentDir = copy('agent');
  // A lease the agent's restart cannot race on a loaded machine; a --retain that
  // keeps the fixture's commands however long ago it was made.
  const server = await startServer(serverDir, ['--lease-timeout', '30s', '--retain', '36500d']);
  // The pending HTTP_GET_JSON's target is gone with the run that made the fixture.
  const pendingHttp = expected.find((e) => e.command.state === 'PENDING' && e.command.type === 'HTTP_GET_JSON')!.command.id;
  assert.is((await call(server.url, 'POST', `/commands/${pendingHttp}/cancel`)).status, 200);
  const agent = startAgent(server.url, agentDir);
  for (const e of expected) {
    const r = await call(server.url, 'GET', `/commands/${e.command.id}?wait=30s`);
    assert.is(r.status, 200);
    const was = e.command;
    if (was.status === 'COMPLETED' || was.status === 'FAILED') {
      assertSameAs(was.id, r.body, was);
    } else if (was.id === pendingHttp) {
      assert.is(r.body.error, 'CANCELED');
    } else if (was.state === 'RUNNING' && was.type === 'HTTP_GET_JSON') {
      assert.is(r.body.status, 'FAILED');
      assert.match(r.body.error, /^INTERRUPTED/);
    } else {
      assert.is(r.body.status, 'COMPLETED', `${was.id} was ${was.state}: ${r.text}`);
      assert.is(r.body.agentId, AGENT_ID);
    }
  }
  await agent.kill('SIGTERM');
  await server.proc.kill('SIGTERM');
  assert.equal([...new Set(formats(serverDir))], [FORMAT]);
  assert.equal([...new Set(formats(agentDir))], [FORMAT]);
});

// --- format 2: object records -------------------------------------------------

test('a format-2 server journal (object records) replays, and what comes after it is array records in a format-3 segment', async () => {
  const dir = tempDir('keel-v2-');
  const ids = ['a', 'b', 'c'].map((c) => `${c.repeat(8)}-0000-4000-8000-000000000000`);
  const at = Date.now() - 60_000;
  const recs: CommandRecord[] = [
    ...ids.map((id, i): CommandRecord => ({ id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 5 }, at: at + i, ...(i === 0 ? { idemKey: 'k-a', bodyHash: 'ab'.repeat(32) } : {}) } })),
    { id: ids[0]!, from: 'PENDING', version: 1, ev: { type: 'claim-start', agentId: 'agent-1', lease: 1, at: at + 5 } },
    { id: ids[0]!, from: 'RUNNING', version: 2, ev: { type: 'finish', agentId: 'agent-1', lease: 1, outcome: 'COMPLETED', result: { ok: true }, error: null, at: at + 9 } },
    { id: ids[1]!, from: 'PENDING', version: 1, ev: { type: 'cancel', at: at + 10 } },
  ];
  // As the release before format 3 wrote it: a format-2 header, each record its object.
  const segment = path.join(dir, segmentName(1));
  fs.writeFileSync(segment, `{"keel":"journal","format":2,"firstSeq":1}\n${recs.map((r, i) => encodeRecord(i + 1, r)).join('')}`);

  const store = await CommandStore.open(dir);
  assert.equal(ids.map((id) => store.get(id)?.state), ['COMPLETED', 'FAILED', 'PENDING']);
  assert.is(store.table.byIdemKey.get('k-a'), ids[0]);
  await store.durable.upgraded;
  const r = await store.submit({ type: 'DELAY', payload: { ms: 1 }, opts: {} });
  await store.close();
  assert.equal([...new Set(formats(dir))], [FORMAT]);
  const last = journalRecords<unknown[]>(dir).at(-1)!.rec;
  assert.ok(Array.isArray(last), 'a record of this release is an array');
  assert.equal(last.slice(0, 4), [r.id, null, 0, 'submit']);
});

// --- a newer format ---------------------------------------------------------

/** A directory of this format with a snapshot and a journal tail, then one file's header says `format`. */
async function newerDir(side: 'server' | 'agent', file: 'snapshot' | 'journal'): Promise<string> {
  const dir = copy(side);
  if (side === 'server') {
    const store = await CommandStore.open(dir);
    await store.durable.upgraded;
    await store.submit({ type: 'DELAY', payload: { ms: 1 } });
    await store.close();
  } else {
    const ledger = await Ledger.open(dir);
    await ledger.durable.upgraded;
    await ledger.write({ t: 'claimed', id: 'x', lease: 1, type: 'DELAY', payload: { ms: 1 }, at: 1 });
    await ledger.close();
  }
  const target = file === 'snapshot' ? path.join(dir, 'snapshot.jsonl') : listSegments(dir).at(-1)!.file;
  const text = fs.readFileSync(target, 'utf8');
  fs.writeFileSync(target, text.replace(`"format":${FORMAT}`, `"format":${FORMAT + 1}`));
  return dir;
}

const NEWER = new RegExp(`(snapshot|journal) format ${FORMAT + 1} is not supported: this keel reads formats 1 to ${FORMAT}\\. It was written by a newer keel`);

for (const side of ['server', 'agent'] as const) {
  for (const file of ['snapshot', 'journal'] as const) {
    test(`${side}: a ${file} of a newer format is refused naming both versions, and nothing is changed`, async () => {
      const dir = await newerDir(side, file);
      const before = filesOf(dir);
      const open = side === 'server' ? () => CommandStore.open(dir) : () => Ledger.open(dir);
      const err = await open().then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.instance(err, FormatError);
      assert.match((err as Error).message, NEWER);
      assert.match((err as Error).message, file);
      assert.equal(filesOf(dir), before, 'the directory was changed');
    });
  }
}

test('server.ts and agent.ts refuse a newer directory with one line naming both versions', async () => {
  const serverDir = await newerDir('server', 'journal');
  const agentDir = await newerDir('agent', 'snapshot');
  const procs = [
    new Proc('server', ['server.ts', '--state-dir', serverDir, '--port', '0']),
    new Proc('agent', ['agent.ts', '--state-dir', agentDir, '--server', 'http://127.0.0.1:1']),
  ];
  for (const p of procs) {
    assert.is((await p.exited).code, 1, p.stderr);
    const lines = p.stderr.trimEnd().split('\n');
    assert.is(lines.length, 1, p.stderr);
    assert.match(lines[0]!, /^keel: /);
    assert.match(lines[0]!, NEWER);
  }
});

test.run();
