// Event streams and the CLI with two servers on one PostgreSQL database (real
// PostgreSQL, in-process servers, the CLI as a child process):
// - GET /events on one server carries the transitions made through the other,
//   each once, in keel_events order, ids the table's seqs, data the command
//   as it was right after each;
// - a client that read on one server resumes on the other with Last-Event-ID
//   and gets the rest: nothing twice, nothing missed;
// - GET /commands/:id/events?follow=1 on one server follows a command the
//   other moves, to its end;
// - the CLI given --server DEAD,LIVE passes the server that does not answer;
//   an HTTP error from a live one is the answer, not a reason to move on.
import net from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import type { ServerContext } from '../lib/server/context.ts';
import { call, claimOne, closeAll, finish, startPgTestServer, submit, type TestServer as AnyTestServer } from './support/server-harness.ts';
import { freshDatabase, stopPostgres } from './support/postgres.ts';
import { freePort as closedPort } from './support/ports.ts';
import { cleanup } from './support/processes.ts';
import { keel, stopKeels } from './support/keel-cli.ts';
import { SseReader, type SseFrame } from './support/sse.ts';

const test = suite('two servers on PostgreSQL: event streams and the CLI');
test.after(async () => {
  stopKeels();
  await closeAll();
  await stopPostgres();
  await cleanup();
});

type TestServer = AnyTestServer<ServerContext>;

const data = (f: SseFrame): { id: string; state: string; agentId: string | null } => JSON.parse(f.data);

async function two(): Promise<[TestServer, TestServer, string]> {
  const url = await freshDatabase();
  return [await startPgTestServer(url), await startPgTestServer(url), url];
}

async function seqsOf(url: string): Promise<number[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ seq: string }>('SELECT seq FROM keel_events ORDER BY seq');
    return rows.map((r) => Number(r.seq));
  } finally {
    await c.end();
  }
}

/** Submit on one server, claim on the other, finish on the first: three transitions split between them. */
async function crossRun(a: TestServer, b: TestServer): Promise<string> {
  const id = await submit(b.url);
  const { lease } = await claimOne(a.url, 'agent-on-a');
  assert.is((await finish(b.url, 'agent-on-a', [{ id, lease, outcome: 'COMPLETED', result: { ok: 1 } }])).status, 200);
  return id;
}

test('a stream on one server carries the transitions made through the other, in the events table\'s order', async () => {
  const [a, b, url] = await two();
  const onA = await SseReader.open(`${a.url}/events`);
  const onB = await SseReader.open(`${b.url}/events`);
  const ids = [await crossRun(a, b), await crossRun(b, a)];
  const fromA = await onA.take(6);
  const fromB = await onB.take(6);
  onA.close();
  onB.close();
  assert.equal(fromA.map((f) => Number(f.id)), await seqsOf(url), 'every transition, ids the seqs, in order');
  assert.equal(fromB.map((f) => [f.id, f.event, f.data]), fromA.map((f) => [f.id, f.event, f.data]), 'the same stream on both servers');
  assert.equal(fromA.map((f) => data(f).id), [ids[0], ids[0], ids[0], ids[1], ids[1], ids[1]]);
  assert.equal(fromA.map((f) => f.event), ['submit', 'claim-start', 'finish', 'submit', 'claim-start', 'finish']);
  // Each frame shows the command as it was right after its transition, though it had moved on by the time it was read.
  assert.equal(fromA.map((f) => data(f).state), ['PENDING', 'RUNNING', 'COMPLETED', 'PENDING', 'RUNNING', 'COMPLETED']);
});

test('read on one server, resume on the other with Last-Event-ID: the rest, nothing twice, nothing missed', async () => {
  const [a, b, url] = await two();
  const onA = await SseReader.open(`${a.url}/events`);
  await crossRun(a, b);
  const read = await onA.take(2);
  onA.close();
  await crossRun(b, a);
  const resumed = await SseReader.open(`${b.url}/events`, { 'last-event-id': read[1]!.id! });
  await crossRun(a, b);
  const rest = await resumed.take(7);
  resumed.close();
  assert.equal([...read, ...rest].map((f) => Number(f.id)), await seqsOf(url));
  assert.ok(!rest.some((f) => f.event === 'reset'), 'no reset');
  // An id no server has handed out yet is refused as on one server: re-list.
  const ahead = await SseReader.open(`${b.url}/events`, { 'last-event-id': String(Number(rest[6]!.id) + 1000) });
  const [reset] = await ahead.take(1);
  ahead.close();
  assert.is(reset!.event, 'reset');
});

test('an id committed that this server has not read yet (its feed waits at a gap): followed from there', async () => {
  const [a, b, url] = await two();
  const id = await submit(a.url);
  // A transaction takes the next seq and stays open: every feed stops below it.
  const slow = new pg.Client({ connectionString: url });
  await slow.connect();
  await slow.query('BEGIN');
  await slow.query('UPDATE keel_commands SET version = version WHERE id = $1', [id]);
  await slow.query("INSERT INTO keel_events (command_id, event, to_state, at) VALUES ($1, 'due', 'PENDING', 0)", [id]);
  const later = await submit(a.url);
  const seq = (await seqsOf(url)).at(-1)!;
  assert.ok(b.keel.ctx.events.lastSeq < seq, 'b has not read it');
  const resumed = await SseReader.open(`${b.url}/events`, { 'last-event-id': String(seq) });
  await slow.query('COMMIT');
  await slow.end();
  const { id: claimed } = await claimOne(b.url, 'agent-b');
  const [next] = await resumed.take(1);
  resumed.close();
  assert.is(next!.event, 'claim-start', 'what came before the id was left out, no reset');
  assert.is(Number(next!.id), seq + 1);
  assert.is(data(next!).id, claimed);
  assert.ok([id, later].includes(claimed));
});

test('GET /commands/:id/events?follow=1 on one server follows a command the other moves, to its end', async () => {
  const [a, b] = await two();
  const id = await submit(a.url);
  const follow = await SseReader.open(`${a.url}/commands/${id}/events?follow=1`);
  const [submitted] = await follow.take(1);
  assert.is(submitted!.event, 'submit');
  const { lease } = await claimOne(b.url, 'agent-b');
  assert.is((await finish(b.url, 'agent-b', [{ id, lease, outcome: 'COMPLETED' }])).status, 200);
  const rest = await follow.take(3);
  assert.equal(rest.map((f) => f.event), ['claim-start', 'finish']);
  assert.ok(follow.done, 'the stream ends with the command');
});

test('the CLI with --server DEAD,LIVE passes the dead one; an HTTP error from a live one is its answer', async () => {
  const [a, b] = await two();
  const dead = `http://127.0.0.1:${await closedPort()}`;
  const servers = `${dead},${a.url}`;
  const sub = await keel(['--server', servers, 'submit', 'DELAY', '--ms', '5']);
  assert.is(sub.code, 0, sub.stderr);
  const id = sub.stdout.trim();
  const { lease } = await claimOne(b.url, 'agent-b');
  assert.is((await finish(b.url, 'agent-b', [{ id, lease, outcome: 'COMPLETED' }])).status, 200);
  const waited = await keel(['--server', servers, 'wait', id, '--timeout', '10s', '--json']);
  assert.is(waited.code, 0, waited.stderr);
  assert.is(JSON.parse(waited.stdout).status, 'COMPLETED');
  const events = await keel(['--server', servers, 'events', id, '--follow', '--json']);
  assert.is(events.code, 0, events.stderr);
  assert.equal(events.stdout.trim().split('\n').map((l) => JSON.parse(l).event), ['submit', 'claim-start', 'finish']);
  // stats makes two calls at once: both pass the dead server, neither moves the other along.
  const stats = await keel(['--server', servers, 'stats', '--json']);
  assert.is(stats.code, 0, stats.stderr);

  // a answers 404: that is the answer; b is never asked.
  const missing = await keel(['--server', `${a.url},${b.url}`, 'get', 'no-such-id']);
  assert.is(missing.code, 1, missing.stderr);
  assert.match(missing.stderr, 'no command "no-such-id" (404)');
  assert.not.match((await call(b.url, 'GET', '/metrics')).text, 'route="/commands/:id"');

  const none = await keel(['--server', `${dead},http://127.0.0.1:${await closedPort()}`, 'ls']);
  assert.is(none.code, 3);
  assert.match(none.stderr, 'the other 1 in --server did not answer either');
  const bad = await keel(['--server', `${a.url},`, 'ls']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, 'or several separated by commas');
});

test('the CLI: a server that took the request and hung up moves a GET or a keyed submit to the next, not a submit without a key', async () => {
  const [a] = await two();
  const hangUp = net.createServer((sock) => sock.once('data', () => sock.destroy()));
  await new Promise<void>((resolve) => hangUp.listen(0, '127.0.0.1', resolve));
  try {
    const servers = `http://127.0.0.1:${(hangUp.address() as net.AddressInfo).port},${a.url}`;
    const unsafe = await keel(['--server', servers, 'submit', 'DELAY', '--ms', '5']);
    assert.is(unsafe.code, 3, unsafe.stderr);
    assert.match(unsafe.stderr, 'it may have been served');
    const keyed = await keel(['--server', servers, 'submit', 'DELAY', '--ms', '5', '--idempotency-key', 'after-a-hang-up']);
    assert.is(keyed.code, 0, keyed.stderr);
    const listed = await keel(['--server', servers, 'ls', '--json']);
    assert.is(listed.code, 0, listed.stderr);
    assert.equal(JSON.parse(listed.stdout).commands.map((c: { id: string }) => c.id), [keyed.stdout.trim()], 'the unkeyed submit went nowhere');
  } finally {
    hangUp.close();
  }
});

test.run();
