// An agent given several servers (--server URL1,URL2): it stays with the first
// while it answers; a call that gets no answer, or an answer it cannot use,
// goes on to the next server at once, and every later call stays there; a
// server that hangs has its requests cut when the list moves on; backoff
// waits only once every server has failed a call; and the leases the agent
// holds are beaten at the new server as soon as it moves.
// Two scripted servers in this process answer as each test tells them.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ScriptedServer, type Received } from './support/scripted-server.ts';
import { createLogger } from '../lib/log.ts';
import type { ItemResult, LeaseRef } from '../lib/protocol.ts';
import { ServerClient } from '../lib/agent/server-client.ts';
import { LeaseKeeper } from '../lib/agent/leases.ts';
import { LogBuffer } from './support/server-harness.ts';

const okAll = (r: Received): ItemResult[] => r.body.items.map((it) => ({ id: it.id, ok: true }));
const ref = (n: number): LeaseRef => ({ id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, lease: n });
const leasesOf = (r: Received): LeaseRef[] => (r.body as unknown as { leases: LeaseRef[] }).leases;
const idle = { leaseTimeoutMs: 30_000, commands: [] };

let a: ScriptedServer;
let b: ScriptedServer;
let logs: LogBuffer;
let client: ServerClient;

/** A suite whose every test gets two fresh scripted servers, a and b, and a client given both, a first. */
function twoServerSuite(name: string): ReturnType<typeof suite> {
  const s = suite(name);
  s.before.each(async () => {
    a = new ScriptedServer();
    b = new ScriptedServer();
    await Promise.all([a.listen(), b.listen()]);
    logs = new LogBuffer();
    client = new ServerClient({ servers: [a.url, b.url], agentId: 'a1', log: createLogger({ role: 'agent' }, logs as unknown as NodeJS.WritableStream) });
  });
  s.after.each(async () => {
    client.close();
    await Promise.all([a.close(), b.close()]);
  });
  return s;
}

const test = twoServerSuite('ServerClient with two servers');

test('while the first server answers, every call goes to it', async () => {
  a.auto = (r) => (r.route === '/agent/claim' ? r.answer(200, idle) : r.answer(200, { results: okAll(r) }));
  await client.release([ref(1)]);
  await client.claim(1, 1000, new AbortController().signal);
  await client.finish([{ ...ref(1), outcome: 'COMPLETED', result: null, error: null }]);
  assert.is(a.received.length, 3);
  assert.is(b.received.length, 0);
  assert.is(client.servers.current.url, a.url);
});

test('the first server gone: the call goes to the next at once, and later calls stay there', async () => {
  await a.close();
  b.auto = (r) => r.answer(200, { results: okAll(r) });
  assert.equal(await client.release([ref(1)]), [{ id: ref(1).id, ok: true }]);
  assert.is(client.servers.current.url, b.url);
  const moved = logs.lines.filter((l) => l.msg === 'server failed a call; moving to the next in the list');
  assert.is(moved.length, 1);
  assert.is(moved[0]!.from, a.url);
  assert.is(moved[0]!.to, b.url);
  assert.match(String(moved[0]!.error), /ECONNREFUSED/);
  // Not an outage: another server answered, so there was no backoff and no outage line.
  assert.not.ok(logs.lines.some((l) => /retrying with backoff/.test(String(l.msg))));
  await client.release([ref(2)]);
  assert.equal(b.received.map((r) => r.route), ['/agent/release', '/agent/release']);
});

test('a 503 (its database away, say) moves on too; a 409 with results is an answer and does not', async () => {
  a.auto = (r) => (r.route === '/agent/release' ? r.answer(503, { error: 'the database is unavailable' }) : r.answer(409, { results: r.body.items.map((it) => ({ id: it.id, ok: false, error: 'STALE_LEASE' })) }));
  b.auto = (r) => r.answer(200, { results: okAll(r) });
  assert.equal((await client.finish([{ ...ref(1), outcome: 'COMPLETED', result: null, error: null }]))[0]!.ok, false);
  assert.is(client.servers.current.url, a.url);
  assert.equal(await client.release([ref(2)]), [{ id: ref(2).id, ok: true }]);
  assert.is(client.servers.current.url, b.url);
  assert.equal(a.received.map((r) => r.route), ['/agent/finish', '/agent/release']);
});

test('the list wraps around: after the last server, the first again', async () => {
  a.auto = (r) => (a.received.length === 1 ? r.answer(500, { error: 'boom' }) : r.answer(200, { results: okAll(r) }));
  b.auto = (r) => r.cut();
  assert.equal(await client.release([ref(1)]), [{ id: ref(1).id, ok: true }]);
  assert.equal([a.received.length, b.received.length], [2, 1]);
  assert.equal(logs.lines.filter((l) => l.msg === 'server failed a call; moving to the next in the list').map((l) => l.to), [b.url, a.url]);
  assert.is(client.servers.current.url, a.url);
});

test('every server failing: backoff only after each full round, the outage logged once; the first to answer is kept', async () => {
  let failures = 0;
  const failFirst = (n: number, ok: (r: Received) => void) => (r: Received) => (failures++ < n ? r.answer(503, { error: 'busy' }) : ok(r));
  a.auto = failFirst(5, (r) => r.answer(200, { results: okAll(r) }));
  b.auto = failFirst(5, (r) => r.answer(200, { results: okAll(r) }));
  assert.equal(await client.release([ref(1)]), [{ id: ref(1).id, ok: true }]);
  // a, b, a, b, a fail; b answers.
  assert.equal([a.received.length, b.received.length], [3, 3]);
  assert.is(client.servers.current.url, b.url);
  assert.is(logs.lines.filter((l) => l.msg === 'no server in the list answering; retrying with backoff').length, 1);
});

test('a server that hangs: when a heartbeat moves the list on, the claim parked there is cut and goes to the next', async () => {
  // a takes requests and never answers.
  b.auto = (r) => (r.route === '/agent/claim' ? r.answer(200, { leaseTimeoutMs: 30_000, commands: [{ id: ref(7).id, lease: 7, type: 'DELAY', payload: { ms: 1 } }] }) : r.answer(200, { leaseTimeoutMs: 30_000, revoked: [], cancel: [] }));
  const stop = new AbortController();
  try {
    // A first claim answered: the client knows what it holds, so its next claim parks.
    a.auto = (r) => r.answer(200, idle);
    await client.claim(1, 60_000, stop.signal);
    a.auto = undefined;
    const claimed = client.claim(1, 60_000, stop.signal);
    await a.requests(2);
    assert.is((a.received[1]!.body as unknown as { resume?: boolean }).resume, undefined);
    const beat = await client.heartbeat([ref(3)], 300);
    assert.equal(beat, { leaseTimeoutMs: 30_000, revoked: [], cancel: [] });
    await a.received[1]!.abandoned;
    assert.equal((await claimed).commands.map((c) => c.id), [ref(7).id]);
    assert.equal(b.received.map((r) => r.route).sort(), ['/agent/claim', '/agent/heartbeat']);
    // The claim cut at a may have been granted there: b is asked for what the agent holds too.
    assert.is((b.received.find((r) => r.route === '/agent/claim')!.body as unknown as { resume?: boolean }).resume, true);
    assert.equal(leasesOf(b.received.find((r) => r.route === '/agent/heartbeat')!), [ref(3)]);
  } finally {
    stop.abort(new Error('test over'));
  }
});

test('one heartbeat tries each server once, and answers undefined when none answered', async () => {
  a.auto = (r) => r.cut();
  b.auto = (r) => r.answer(502, { error: 'bad gateway' });
  assert.is(await client.heartbeat([ref(1)], 2000), undefined);
  assert.equal([a.received.length, b.received.length], [1, 1]);
});

test.run();

// --- the leases an agent holds, across a move -------------------------------------

const leases = twoServerSuite('LeaseKeeper with two servers');

leases('a move made by another call beats the held leases at the new server at once, not at the next regular beat', async () => {
  const keeper = new LeaseKeeper(client, createLogger({}, new LogBuffer() as unknown as NodeJS.WritableStream));
  try {
    // Regular beats every 20 s: only the move can make one come within this test.
    keeper.setTimeoutMs(60_000);
    const signal = keeper.hold(ref(4));
    await a.close();
    b.auto = (r) => (r.route === '/agent/heartbeat' ? r.answer(200, { leaseTimeoutMs: 60_000, revoked: [{ ...ref(4), reason: 'expired while the agent was away' }], cancel: [] }) : r.answer(200, { results: okAll(r) }));
    await client.release([ref(9)]);
    await b.requests(2);
    const beat = b.received.find((r) => r.route === '/agent/heartbeat')!;
    assert.equal(leasesOf(beat), [ref(4)]);
    // The new server's word on the lease is acted on as the old one's would be.
    await b.requests(2);
    await aborted(signal);
    assert.match(String((signal.reason as Error).message), /LEASE_LOST: expired while the agent was away/);
  } finally {
    keeper.stop();
  }
});

leases.run();

function aborted(signal: AbortSignal, timeoutMs = 10_000): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not aborted within ${timeoutMs} ms`)), timeoutMs);
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });
}
