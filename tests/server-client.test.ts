// The agent's ServerClient: finish and release calls made together
// (the same tick, or while a request of that route is out) go as one batch
// request, and each caller gets the results of its own items; a down server
// is still waited out; a refusal reaches only the caller that caused it; a
// caller that gives up is answered at once and its items are not sent.
// A scripted server in this process answers as each test tells it.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { rejection } from './support/rejection.ts';
import { ScriptedServer, type Received } from './support/scripted-server.ts';
import { createLogger } from '../lib/log.ts';
import { PROTOCOL_VERSION, type FinishItem, type ItemResult, type LeaseRef } from '../lib/protocol.ts';
import { RequestRejectedError, ServerClient } from '../lib/agent/server-client.ts';
import { claim, closeAll, LogBuffer, startTestServer, submit } from './support/server-harness.ts';

const okAll = (r: Received): ItemResult[] => r.body.items.map((it) => ({ id: it.id, ok: true }));
const ref = (n: number): LeaseRef => ({ id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, lease: n });

let server: ScriptedServer;
let logs: LogBuffer;
let client: ServerClient;

/** A suite whose every test gets a fresh scripted server and client. */
function scriptedSuite(name: string): ReturnType<typeof suite> {
  const s = suite(name);
  s.before.each(async () => {
    server = new ScriptedServer();
    await server.listen();
    logs = new LogBuffer();
    client = new ServerClient({ servers: [server.url], agentId: 'a1', log: createLogger({ role: 'agent' }, logs as unknown as NodeJS.WritableStream) });
  });
  s.after.each(async () => {
    client.close();
    await server.close();
  });
  return s;
}

const test = scriptedSuite('ServerClient: batching finish and release');

test('calls made in the same tick go as one request; each caller gets its own results', async () => {
  server.auto = (r) => r.answer(200, { results: r.body.items.map((it) => ({ id: it.id, ok: true, reason: `lease ${it.lease}` })) });
  const [a, b, c] = await Promise.all([client.release([ref(1)]), client.release([ref(2), ref(3)]), client.release([ref(4)])]);
  assert.is(server.received.length, 1);
  assert.is(server.received[0]!.route, '/agent/release');
  assert.equal(server.received[0]!.body, { agentId: 'a1', items: [ref(1), ref(2), ref(3), ref(4)] });
  assert.equal(a, [{ id: ref(1).id, ok: true, reason: 'lease 1' }]);
  assert.equal(b!.map((r) => r.reason), ['lease 2', 'lease 3']);
  assert.equal(c!.map((r) => r.reason), ['lease 4']);
});

test('each route batches on its own: finish and release in one tick make two requests', async () => {
  server.auto = (r) => r.answer(200, { results: okAll(r) });
  const finishItem = { ...ref(2), outcome: 'COMPLETED' as const, result: { ok: true, tookMs: 0 }, error: null };
  await Promise.all([client.finish([finishItem]), client.release([ref(3)])]);
  assert.equal(server.received.map((r) => r.route).sort(), ['/agent/finish', '/agent/release']);
  assert.equal(server.received.find((r) => r.route === '/agent/finish')!.body.items, [finishItem]);
});

test('calls made while a request is out wait for it, then go together in the next', async () => {
  const first = client.finish([{ ...ref(1), outcome: 'COMPLETED', result: null }]);
  await server.requests(1);
  const second = client.finish([{ ...ref(2), outcome: 'COMPLETED', result: null }]);
  const third = client.finish([{ ...ref(3), outcome: 'FAILED', result: null, error: 'boom' }]);
  server.auto = (r) => r.answer(200, { results: okAll(r) });
  server.received[0]!.answer(200, { results: okAll(server.received[0]!) });
  await Promise.all([first, second, third]);
  assert.is(server.received.length, 2);
  assert.equal(server.received[1]!.body.items.map((it) => it.id), [ref(2).id, ref(3).id]);
});

test('a 409 answer routes each refusal to its caller', async () => {
  server.auto = (r) => r.answer(409, { results: r.body.items.map((it) => (it.lease === 2 ? { id: it.id, ok: false, error: 'STALE_LEASE', reason: 'old' } : { id: it.id, ok: true })) });
  const [a, b] = await Promise.all([client.release([ref(1)]), client.release([ref(2)])]);
  assert.equal(a, [{ id: ref(1).id, ok: true }]);
  assert.equal(b, [{ id: ref(2).id, ok: false, error: 'STALE_LEASE', reason: 'old' }]);
});

test('no answer (5xx, cut connection): the batch is sent again until answered, the outage logged once', async () => {
  let n = 0;
  server.auto = (r) => {
    n++;
    if (n === 1) r.answer(503, { error: 'not ready' });
    else if (n === 2) r.cut();
    else r.answer(200, { results: okAll(r) });
  };
  const [a, b] = await Promise.all([client.release([ref(1)]), client.release([ref(2)])]);
  assert.equal([a, b], [[{ id: ref(1).id, ok: true }], [{ id: ref(2).id, ok: true }]]);
  assert.is(server.received.length, 3);
  for (const r of server.received) assert.equal(r.body.items.map((it) => it.id), [ref(1).id, ref(2).id]);
  await logs.waitFor((l) => l.msg === 'server reachable again');
  assert.is(logs.lines.filter((l) => l.msg === 'server unreachable; retrying with backoff').length, 1);
});

test('a batch the server refuses (400) is sent again caller by caller: only the culprit gets the refusal', async () => {
  server.auto = (r) => {
    if (r.body.items.some((it) => it.lease === 2)) r.answer(400, { error: 'items[1].result is too large', field: 'items[1].result' });
    else r.answer(200, { results: okAll(r) });
  };
  const good = client.finish([{ ...ref(1), outcome: 'COMPLETED', result: null }]);
  const bad = client.finish([{ ...ref(2), outcome: 'COMPLETED', result: 'huge' }]).then(
    () => assert.unreachable('the refused call resolved'),
    (err: unknown) => err,
  );
  assert.equal(await good, [{ id: ref(1).id, ok: true }]);
  const err = await bad;
  assert.instance(err, RequestRejectedError);
  assert.match((err as Error).message, /too large/);
  // The pair, then each alone.
  assert.equal(server.received.map((r) => r.body.items.length), [2, 1, 1]);
});

test('a caller whose signal aborts is answered with its reason at once; its queued items are never sent', async () => {
  const first = client.release([ref(1)]);
  await server.requests(1);
  const gaveUp = new AbortController();
  const leaving = client.release([ref(2)], gaveUp.signal);
  const staying = client.release([ref(3)]);
  gaveUp.abort(new Error('halted'));
  assert.match(await rejection(leaving), /halted/);
  server.auto = (r) => r.answer(200, { results: okAll(r) });
  server.received[0]!.answer(200, { results: okAll(server.received[0]!) });
  await Promise.all([first, staying]);
  assert.equal(server.received.map((r) => r.body.items.map((it) => it.lease)), [[1], [3]]);
});

test('a request whose every caller gave up is cut; the next batch goes out', async () => {
  const gaveUp = new AbortController();
  const leaving = client.release([ref(1)], gaveUp.signal);
  await server.requests(1);
  gaveUp.abort(new Error('halted'));
  assert.match(await rejection(leaving), /halted/);
  await server.received[0]!.abandoned;
  server.auto = (r) => r.answer(200, { results: okAll(r) });
  assert.equal(await client.release([ref(2)]), [{ id: ref(2).id, ok: true }]);
});

test.run();

// --- finish calls riding in a claim ------------------------------------------------

const riding = scriptedSuite('ServerClient: finish calls ride in the next claim');

// Every claim announces the agent's protocol version and the types it runs (all, by default).
const ANNOUNCE = { protocol: PROTOCOL_VERSION, types: ['DELAY', 'HTTP_GET_JSON'] };
const done = (n: number): FinishItem => ({ ...ref(n), outcome: 'COMPLETED', result: { ok: true, tookMs: n }, error: null });
const claimBody = (r: Received): { max: number; waitMs: number; finish?: FinishItem[] } => r.body as unknown as { max: number; waitMs: number; finish?: FinishItem[] };
const finishedAll = (r: Received): ItemResult[] => (claimBody(r).finish ?? []).map((it) => ({ id: it.id, ok: true }));

riding('queued finish calls go in the claim, which does not wait for work; each caller gets its own results', async () => {
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], finished: finishedAll(r).map((x, i) => (i === 1 ? { ...x, ok: false, error: 'STALE_LEASE' } : x)) });
  const a = client.finish([done(1)]);
  const b = client.finish([done(2), done(3)]);
  const claimed = await client.claim(4, 25_000, new AbortController().signal);
  assert.equal(claimed.commands, []);
  assert.equal(await a, [{ id: ref(1).id, ok: true }]);
  assert.equal(await b, [{ id: ref(2).id, ok: false, error: 'STALE_LEASE' }, { id: ref(3).id, ok: true }]);
  assert.is(server.received.length, 1, 'no request of their own');
  assert.is(server.received[0]!.route, '/agent/claim');
  // A fresh client has not heard a claim answered yet: it resumes.
  assert.equal(server.received[0]!.body, { agentId: 'a1', max: 4, ...ANNOUNCE, resume: true, waitMs: 0, finish: [done(1), done(2), done(3)] });
});

riding('the first claim resumes and does not wait; once one is answered, a claim with nothing queued is a plain long-poll', async () => {
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], held: [] });
  assert.ok(client.resuming);
  await client.claim(1, 25_000, new AbortController().signal);
  assert.not.ok(client.resuming);
  await client.claim(1, 25_000, new AbortController().signal);
  assert.equal(server.received.map((r) => r.body), [
    { agentId: 'a1', max: 1, ...ANNOUNCE, resume: true, waitMs: 0 },
    { agentId: 'a1', max: 1, waitMs: 25_000, ...ANNOUNCE },
  ]);
});

riding('a claim attempt that went unanswered makes its retry a resuming one', async () => {
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], held: [] });
  await client.claim(1, 25_000, new AbortController().signal);
  server.auto = undefined;
  const claimed = client.claim(1, 25_000, new AbortController().signal);
  await server.requests(2);
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], held: [] });
  server.received[1]!.cut();
  await claimed;
  assert.equal(server.received.slice(1).map((r) => r.body), [
    { agentId: 'a1', max: 1, waitMs: 25_000, ...ANNOUNCE },
    { agentId: 'a1', max: 1, ...ANNOUNCE, resume: true, waitMs: 0 },
  ]);
  assert.not.ok(client.resuming);
});

riding('a claim cut short by its signal may have been answered: the client resumes', async () => {
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], held: [] });
  await client.claim(1, 25_000, new AbortController().signal);
  server.auto = undefined;
  const stopping = new AbortController();
  const claimed = client.claim(1, 25_000, stopping.signal);
  await server.requests(2);
  stopping.abort(new Error('stopping'));
  assert.match(await rejection(claimed), /stopping/);
  assert.ok(client.resuming);
});

riding('an answer without a result per rider: the riders go again by /agent/finish', async () => {
  server.auto = (r) => {
    if (r.route === '/agent/claim') r.answer(200, { leaseTimeoutMs: 30_000, commands: [] });
    else r.answer(200, { results: okAll(r) });
  };
  const a = client.finish([done(1)]);
  await client.claim(1, 25_000, new AbortController().signal);
  assert.equal(await a, [{ id: ref(1).id, ok: true }]);
  assert.equal(server.received.map((r) => r.route), ['/agent/claim', '/agent/finish']);
});

riding('a claim refused (400) with riders: they go on their own, where a refusal reaches only its caller; the claim goes again without them', async () => {
  server.auto = (r) => {
    if (r.route === '/agent/claim') {
      if (claimBody(r).finish) r.answer(400, { error: 'finish[0].result is too large', field: 'finish[0].result' });
      else r.answer(200, { leaseTimeoutMs: 30_000, commands: [] });
    } else if (r.body.items.some((it) => it.lease === 1)) r.answer(400, { error: 'items[0].result is too large' });
    else r.answer(200, { results: okAll(r) });
  };
  const refused = client.finish([done(1)]).then(
    () => assert.unreachable('the refused call resolved'),
    (err: unknown) => err,
  );
  const fine = client.finish([done(2)]);
  await client.claim(1, 25_000, new AbortController().signal);
  assert.instance(await refused, RequestRejectedError);
  assert.equal(await fine, [{ id: ref(2).id, ok: true }]);
  const claims = server.received.filter((r) => r.route === '/agent/claim');
  assert.equal(claims.map((r) => claimBody(r).finish?.length ?? 0), [2, 0]);
});

riding('a claim cut short by its signal: the riders go by /agent/finish, and their callers are answered', async () => {
  const stopping = new AbortController();
  const a = client.finish([done(1)]);
  const claimed = client.claim(1, 25_000, stopping.signal);
  await server.requests(1);
  server.auto = (r) => r.answer(200, { results: okAll(r) });
  stopping.abort(new Error('stopping'));
  assert.match(await rejection(claimed), /stopping/);
  assert.equal(await a, [{ id: ref(1).id, ok: true }]);
  assert.equal(server.received.map((r) => r.route), ['/agent/claim', '/agent/finish']);
});

riding('finish calls queued behind a finish request in flight ride in the claim', async () => {
  const first = client.finish([done(1)]);
  await server.requests(1);
  const second = client.finish([done(2)]);
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], finished: finishedAll(r) });
  await client.claim(1, 25_000, new AbortController().signal);
  assert.equal(await second, [{ id: ref(2).id, ok: true }]);
  server.received[0]!.answer(200, { results: okAll(server.received[0]!) });
  assert.equal(await first, [{ id: ref(1).id, ok: true }]);
  assert.equal(server.received.map((r) => r.route), ['/agent/finish', '/agent/claim']);
});

riding('a finish made to ride waits for the next claim, however late in the tick it comes, and goes in it', async () => {
  server.auto = (r) => r.answer(200, { leaseTimeoutMs: 30_000, commands: [], finished: finishedAll(r), held: [] });
  const a = client.finish([done(1)], undefined, true);
  // Past the ticks in which a plain finish would have gone on its own.
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.is(server.received.length, 0, 'a riding finish went on its own');
  await client.claim(1, 25_000, new AbortController().signal);
  assert.equal(await a, [{ id: ref(1).id, ok: true }]);
  assert.equal(server.received.map((r) => [r.route, claimBody(r).finish?.length]), [['/agent/claim', 1]]);
});

riding('a finish made to ride goes on its own when flushed, and at once while a claim is out', async () => {
  server.auto = (r) => {
    if (r.route === '/agent/finish') r.answer(200, { results: okAll(r) });
  };
  const a = client.finish([done(1)], undefined, true);
  client.flushRiders();
  assert.equal(await a, [{ id: ref(1).id, ok: true }]);
  const claimed = client.claim(1, 25_000, new AbortController().signal); // held open by the server
  await server.requests(2);
  assert.equal(await client.finish([done(2)], undefined, true), [{ id: ref(2).id, ok: true }]);
  assert.equal(server.received.map((r) => r.route), ['/agent/finish', '/agent/claim', '/agent/finish']);
  server.received[1]!.answer(200, { leaseTimeoutMs: 30_000, commands: [], held: [] });
  await claimed;
});

riding('a finish made to ride that no claim takes goes on its own after a short wait', async () => {
  server.auto = (r) => r.answer(200, { results: okAll(r) });
  assert.equal(await client.finish([done(1)], undefined, true), [{ id: ref(1).id, ok: true }]);
  assert.equal(server.received.map((r) => r.route), ['/agent/finish']);
});

riding.run();

// --- against a real server ------------------------------------------------------

const real = suite('ServerClient against the keel server: one group commit [file store only]');
real.after(closeAll);

real('concurrent releases of claimed commands are one request, one group commit, each answered', async () => {
  const s = await startTestServer();
  const ids = [await submit(s.url), await submit(s.url), await submit(s.url)];
  const claimed = await claim(s.url, 'a1', { max: 3 });
  assert.is(claimed.body.commands.length, 3);
  const agentClient = new ServerClient({ servers: [s.url], agentId: 'a1', log: createLogger({}, new LogBuffer() as unknown as NodeJS.WritableStream) });
  const journal = s.keel.ctx.store.durable.journal.stats;
  const fsyncsBefore = journal.fsyncs;
  const results = await Promise.all(claimed.body.commands.map((c) => agentClient.release([{ id: c.id, lease: c.lease }])));
  agentClient.close();
  assert.equal(results.map((r) => r.map((x) => x.ok)), [[true], [true], [true]]);
  assert.equal(results.map((r) => r[0]!.id).sort(), [...ids].sort());
  assert.is(journal.fsyncs - fsyncsBefore, 1, 'one group commit for the batch');
  const metrics = await (await fetch(`${s.url}/metrics`)).text();
  assert.match(metrics, /keel_http_requests_total\{route="\/agent\/release",code="200"\} 1\n/);
  for (const id of ids) assert.is(s.keel.ctx.store.get(id)!.state, 'PENDING');
});

real('a finish riding in a claim is recorded in the claim\'s group commit, and the claim answers at once', async () => {
  const s = await startTestServer();
  const first = await submit(s.url);
  const claimed = await claim(s.url, 'a1', { max: 1 });
  const lease = claimed.body.commands[0]!.lease;
  const agentClient = new ServerClient({ servers: [s.url], agentId: 'a1', log: createLogger({}, new LogBuffer() as unknown as NodeJS.WritableStream) });
  const second = await submit(s.url);
  const journal = s.keel.ctx.store.durable.journal.stats;
  const fsyncsBefore = journal.fsyncs;
  const reported = agentClient.finish([{ id: first, lease, outcome: 'COMPLETED', result: { ok: true, tookMs: 0 }, error: null }]);
  const next = await agentClient.claim(1, 60_000, new AbortController().signal);
  assert.equal(await reported, [{ id: first, ok: true }]);
  agentClient.close();
  assert.equal(next.commands.map((c) => c.id), [second]);
  assert.equal(next.finished, [{ id: first, ok: true }]);
  assert.is(journal.fsyncs - fsyncsBefore, 1, 'the outcome and the claim in one group commit');
  assert.is(s.keel.ctx.store.get(first)!.state, 'COMPLETED');
  assert.is(s.keel.ctx.store.get(second)!.state, 'RUNNING');
  const metrics = await (await fetch(`${s.url}/metrics`)).text();
  assert.not.match(metrics, /route="\/agent\/finish"/);
});

real.run();
