// The command FSM over HTTP: an agent's claim (claim-and-start), finish and
// release; stale leases and idempotent retries; a resuming claim's `held`;
// cancel in every state; lease expiry with a short lease timeout; long-polls (claim with
// waitMs, GET ?wait=) awaited, never slept on. Each test gets its own
// in-process server, so FIFO order and counts are its own. Each suite runs on
// the file store and on PostgreSQL (support/stores.ts); that a read waits for
// fdatasync is the file store's own.
import fs from 'node:fs';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Assignment } from '../lib/protocol.ts';
import {
  call,
  claim,
  claimOne,
  cleanup,
  closeAll,
  finish,
  getCommand,
  heartbeat,
  release,
  start,
  startTestServer,
  submit,
  waitUntil,
  type TestServer,
} from './support/server-harness.ts';
import { runSuites, STORES } from './support/stores.ts';
import type { ServerContext } from '../lib/server/context.ts';

type Server = TestServer<ServerContext>;
const seqOf = (s: Server): number => s.keel.ctx.store.lastSeq;

/** Submit a DELAY and have `agentId` claim it: it is RUNNING at once. */
async function running(s: Server, agentId: string): Promise<{ id: string; lease: number }> {
  const id = await submit(s.url);
  const c = await claimOne(s.url, agentId);
  assert.is(c.id, id);
  return c;
}

const finalWaiting = (s: Server, id: string): boolean =>
  (s.keel.ctx.finalWaiters as unknown as { byId: Map<string, Set<unknown>> }).byId.has(id);

/** The lease timeout of the expiry suite. */
const LEASE_MS = 300;

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  // --- claim, finish, release -------------------------------------------------------

  const flow = suite(store.label('claim / finish / release'));
  flow.after(async () => {
    await closeAll();
    await cleanup();
  });

  flow('a command goes PENDING -> RUNNING -> COMPLETED, claimed and started in one record; events and logs tell it oldest first', async () => {
    const s = await store.startServer();
    const id = await submit(s.url, { type: 'DELAY', payload: { ms: 10 } });
    const c = await claim(s.url, 'agent-1');
    assert.is(c.status, 200);
    assert.is(c.body.leaseTimeoutMs, 15_000);
    assert.equal(c.body.commands, [{ id, type: 'DELAY', payload: { ms: 10 }, lease: 1 }] satisfies Assignment[]);
    assert.is(c.body.held, undefined, 'held is only for a resuming claim');
    const running = await getCommand(s.url, id);
    assert.is(running.status, 'RUNNING');
    assert.is(running.agentId, 'agent-1');
    const f = await finish(s.url, 'agent-1', [{ id, lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 11 } }]);
    assert.equal(f.body, { results: [{ id, ok: true }] });

    const done = await getCommand(s.url, id);
    assert.is(done.status, 'COMPLETED');
    assert.is(done.state, 'COMPLETED');
    assert.equal(done.result, { ok: true, tookMs: 11 });
    assert.is(done.error, null);
    assert.is(done.agentId, 'agent-1');
    assert.is(done.attempt, 1);

    const ev = (await call(s.url, 'GET', `/commands/${id}/events`)).body.events;
    assert.equal(
      ev.map((e: Record<string, unknown>) => [e.seq, e.event, e.from, e.to, e.agentId, e.lease]),
      [
        [1, 'submit', null, 'PENDING', undefined, undefined],
        [2, 'claim-start', 'PENDING', 'RUNNING', 'agent-1', 1],
        [3, 'finish', 'RUNNING', 'COMPLETED', 'agent-1', 1],
      ],
    );
    const times = ev.map((e: { at: string }) => Date.parse(e.at));
    assert.equal(times, [...times].sort((a: number, b: number) => a - b), 'events are not oldest first');

    // One JSON log line per transition, each naming the command.
    const lines = s.logs.about(id).filter((l) => l.msg === 'transition');
    assert.equal(lines.map((l) => [l.event, l.state]), [['submit', 'PENDING'], ['claim-start', 'RUNNING'], ['finish', 'COMPLETED']]);
  });

  flow('a failed run is FAILED with the error the agent sent', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-f');
    const f = await finish(s.url, 'agent-f', [{ ...c, outcome: 'FAILED', result: { status: null }, error: 'ECONNREFUSED' }]);
    assert.is(f.status, 200);
    const v = await getCommand(s.url, c.id);
    assert.is(v.status, 'FAILED');
    assert.is(v.error, 'ECONNREFUSED');
    assert.equal(v.result, { status: null });
  });

  flow('claims take PENDING commands oldest first, up to max; a resuming claim lists the rest it holds and waits for nothing', async () => {
    const s = await store.startServer();
    const [a, b, c] = [await submit(s.url), await submit(s.url), await submit(s.url)];
    const first = await claim(s.url, 'agent-r');
    assert.equal(first.body.commands.map((x) => [x.id, x.lease]), [[a, 1]]);
    const more = await claim(s.url, 'agent-r', { max: 5, resume: true });
    assert.equal(more.body.commands.map((x) => [x.id, x.lease]), [[b, 1], [c, 1]]);
    // held: what it held before this claim, not what this claim just took.
    assert.equal(more.body.held, [{ id: a, type: 'DELAY', payload: { ms: 10 }, lease: 1 }] satisfies Assignment[]);
    // max 0 (only with resume): the list alone, nothing claimed, no wait.
    const seq = seqOf(s);
    const t0 = Date.now();
    const only = await claim(s.url, 'agent-r', { max: 0, resume: true, waitMs: 30_000 });
    assert.ok(Date.now() - t0 < 20_000, 'a resuming claim waited for work');
    assert.equal(only.body.commands, []);
    assert.equal(only.body.held!.map((x) => x.id).sort(), [a, b, c].sort());
    assert.is(seqOf(s), seq, 'a claim of nothing wrote a record');
    // Another agent gets nothing: all are held, and it holds none of them.
    assert.equal((await claim(s.url, 'agent-other', { max: 5, resume: true })).body, { leaseTimeoutMs: 15_000, commands: [], held: [] });
    for (const id of [a, b, c]) assert.is((await getCommand(s.url, id)).state, 'RUNNING');
  });

  flow('an agent that still sends start finds the command started, and nothing is written', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-old');
    const seq = seqOf(s);
    assert.is((await start(s.url, 'agent-old', [c])).status, 200);
    assert.is(seqOf(s), seq);
  });

  flow('retried finish with the same lease and outcome succeeds and writes nothing', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-i');
    let seq = seqOf(s);
    const item = { ...c, outcome: 'COMPLETED' as const, result: { ok: true, tookMs: 10 } };
    assert.is((await finish(s.url, 'agent-i', [item])).status, 200);
    seq = seqOf(s);
    const retry = await finish(s.url, 'agent-i', [item]);
    assert.is(retry.status, 200);
    assert.equal(retry.body, { results: [{ id: c.id, ok: true }] });
    assert.is(seqOf(s), seq);
    // The same lease with the other outcome is a conflict, not a rewrite.
    const other = await finish(s.url, 'agent-i', [{ ...c, outcome: 'FAILED', result: null, error: 'x' }]);
    assert.is(other.status, 409);
    assert.is(other.body.results[0].error, 'CONFLICT');
    assert.is((await getCommand(s.url, c.id)).status, 'COMPLETED');
  });

  flow('stale lease, wrong agent, wrong state: 409 with a reason, per item', async () => {
    const s = await store.startServer();
    const id = await submit(s.url);
    const c = await claimOne(s.url, 'agent-s');
    const pending = await submit(s.url);
    const seq = seqOf(s);
    const done = { outcome: 'COMPLETED' as const, result: null };

    const stale = await finish(s.url, 'agent-s', [{ id, lease: 2, ...done }]);
    assert.is(stale.status, 409);
    assert.is(stale.body.results[0].error, 'STALE_LEASE');
    assert.match(stale.body.results[0].reason ?? '', /lease 2/);

    const wrong = await release(s.url, 'agent-thief', [c]);
    assert.is(wrong.status, 409);
    assert.is(wrong.body.results[0].error, 'WRONG_AGENT');
    assert.match(wrong.body.results[0].reason ?? '', /agent-s/);

    const early = await finish(s.url, 'agent-s', [{ id: pending, lease: 1, ...done }]);
    assert.is(early.status, 409);
    assert.is(early.body.results[0].error, 'STALE_LEASE', 'a command never claimed finished');

    const unknown = await finish(s.url, 'agent-s', [{ id: '00000000-0000-4000-8000-000000000000', lease: 1, ...done }]);
    assert.is(unknown.status, 409);
    assert.is(unknown.body.results[0].error, 'NOT_FOUND');
    assert.is(seqOf(s), seq, 'a refused transition was journaled');

    // A batch: the good item is applied, the bad one refused, and the answer says which.
    const mixed = await finish(s.url, 'agent-s', [{ ...c, ...done }, { id, lease: 9, ...done }]);
    assert.is(mixed.status, 409);
    assert.equal(mixed.body.results.map((r) => [r.id, r.ok, r.error]), [[id, true, undefined], [id, false, 'STALE_LEASE']]);
    assert.is((await getCommand(s.url, id)).state, 'COMPLETED');
    const late = await release(s.url, 'agent-s', [c]);
    assert.is(late.body.results[0].error, 'WRONG_STATE', 'a finished command released');
  });

  flow('release: a command never begun goes back to PENDING; the old lease is dead; the next claim gets lease 2', async () => {
    const s = await store.startServer();
    const id = await submit(s.url);
    const c = await claimOne(s.url, 'agent-a');
    const r = await release(s.url, 'agent-a', [c]);
    assert.is(r.status, 200, r.text);
    const v = await getCommand(s.url, id);
    assert.is(v.state, 'PENDING');
    assert.is(v.agentId, null);

    const late = await finish(s.url, 'agent-a', [{ ...c, outcome: 'COMPLETED', result: null }]);
    assert.is(late.status, 409);
    assert.is(late.body.results[0].error, 'STALE_LEASE');
    const again = await release(s.url, 'agent-a', [c]);
    assert.is(again.status, 409, 'a second release of the same lease');

    const next = await claimOne(s.url, 'agent-b');
    assert.equal(next, { id, lease: 2 });
    assert.equal(
      (await call(s.url, 'GET', `/commands/${id}/events`)).body.events.map((e: { event: string; to: string }) => `${e.event}->${e.to}`),
      ['submit->PENDING', 'claim-start->RUNNING', 'release->PENDING', 'claim-start->RUNNING'],
    );
  });

  flow('heartbeat: live leases kept, stale and unknown ones revoked with a reason', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-h');
    const r = await heartbeat(s.url, 'agent-h', [c, { id: c.id, lease: 7 }, { id: '00000000-0000-4000-8000-000000000000', lease: 1 }]);
    assert.is(r.status, 200);
    assert.is(r.body.leaseTimeoutMs, 15_000);
    assert.equal(r.body.cancel, []);
    assert.equal(r.body.revoked.map((x) => [x.id, x.lease]), [[c.id, 7], ['00000000-0000-4000-8000-000000000000', 1]]);
    assert.match(r.body.revoked[0]!.reason, /stale/);
    assert.match(r.body.revoked[1]!.reason, /no such command/);
    // Another agent naming this lease does not hold it.
    const thief = await heartbeat(s.url, 'agent-thief', [c]);
    assert.equal(thief.body.revoked.map((x) => x.id), [c.id]);
  });

  flow('GET /agents: each agent online, its last seen time and the commands it holds', async () => {
    const s = await store.startServer();
    const t0 = Date.now();
    const held = await running(s, 'agent-x');
    const assigned = await running(s, 'agent-x');
    await claim(s.url, 'agent-y');
    const r = await call(s.url, 'GET', '/agents');
    assert.is(r.status, 200);
    const [x, y] = r.body.agents;
    assert.is(x.id, 'agent-x');
    assert.is(x.status, 'online');
    assert.equal([...x.commands].sort(), [held.id, assigned.id].sort());
    assert.ok(Date.parse(x.lastSeen) >= t0 - 1000 && Date.parse(x.lastSeen) <= Date.now() + 1000, x.lastSeen);
    // A claim that announced nothing: protocol 1, every type.
    assert.equal({ ...y, lastSeen: typeof y.lastSeen }, { id: 'agent-y', status: 'online', lastSeen: 'string', commands: [], protocol: 1, types: ['DELAY', 'HTTP_GET_JSON'] });
    // A heartbeat moves lastSeen forward.
    await waitUntil(() => Date.now() > Date.parse(x.lastSeen) + 5, 1000, 'the clock to move');
    await heartbeat(s.url, 'agent-x', [held]);
    const after = (await call(s.url, 'GET', '/agents')).body.agents[0];
    assert.ok(Date.parse(after.lastSeen) > Date.parse(x.lastSeen), `${after.lastSeen} vs ${x.lastSeen}`);
  });

  // --- cancel -------------------------------------------------------------------

  const cancel = suite(store.label('cancel in each state'));
  cancel.after(async () => {
    await closeAll();
    await cleanup();
  });

  cancel('PENDING: FAILED CANCELED at once, and never handed out', async () => {
    const s = await store.startServer();
    const id = await submit(s.url);
    const r = await call(s.url, 'POST', `/commands/${id}/cancel`);
    assert.is(r.status, 200);
    assert.is(r.body.status, 'FAILED');
    assert.is(r.body.error, 'CANCELED');
    assert.equal(r.body.result, { error: 'CANCELED' });
    assert.equal((await claim(s.url, 'agent-c')).body.commands, []);
    // Canceling again is a no-op success; nothing journaled.
    const seq = seqOf(s);
    const again = await call(s.url, 'POST', `/commands/${id}/cancel`);
    assert.is(again.status, 200);
    assert.is(seqOf(s), seq);
  });

  cancel('RUNNING, then given back by an agent that never began it: FAILED CANCELED, not PENDING', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-c');
    assert.is((await call(s.url, 'POST', `/commands/${c.id}/cancel`)).status, 202);
    const r = await release(s.url, 'agent-c', [c]);
    assert.is(r.status, 200, r.text);
    const v = await getCommand(s.url, c.id);
    assert.equal([v.status, v.error], ['FAILED', 'CANCELED']);
    assert.equal((await claim(s.url, 'agent-c')).body.commands, [], 'a canceled command was handed out');
    assert.equal((await call(s.url, 'GET', '/agents')).body.agents[0].commands, [], 'a canceled command is still held');
  });

  cancel('RUNNING: 202; the next heartbeat says cancel; the agent finishes FAILED CANCELED', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-c');
    const r = await call(s.url, 'POST', `/commands/${c.id}/cancel`);
    assert.is(r.status, 202);
    assert.is(r.body.status, 'RUNNING');
    assert.is(r.body.cancelRequested, true);
    assert.is((await call(s.url, 'POST', `/commands/${c.id}/cancel`)).status, 202, 'a repeated cancel');

    const hb = await heartbeat(s.url, 'agent-c', [c]);
    assert.equal(hb.body.cancel, [c.id]);
    assert.equal(hb.body.revoked, []);
    const f = await finish(s.url, 'agent-c', [{ ...c, outcome: 'FAILED', result: { error: 'CANCELED' }, error: 'CANCELED' }]);
    assert.is(f.status, 200);
    const v = await getCommand(s.url, c.id);
    assert.equal([v.status, v.error], ['FAILED', 'CANCELED']);
  });

  cancel('final: 409 with the reason, and nothing changes', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-c');
    await finish(s.url, 'agent-c', [{ ...c, outcome: 'COMPLETED', result: { ok: true, tookMs: 10 } }]);
    const seq = seqOf(s);
    const r = await call(s.url, 'POST', `/commands/${c.id}/cancel`);
    assert.is(r.status, 409);
    assert.match(r.body.error, /COMPLETED/);
    assert.is(r.body.reason, 'WRONG_STATE');
    assert.is(seqOf(s), seq);
    assert.is((await getCommand(s.url, c.id)).status, 'COMPLETED');
  });

  // --- long-polls -----------------------------------------------------------------

  const poll = suite(store.label('long-polls'));
  poll.after(async () => {
    await closeAll();
    await cleanup();
  });

  poll('GET ?wait= held open returns as soon as the command finishes', async () => {
    const s = await store.startServer();
    const c = await running(s, 'agent-w');
    const t0 = Date.now();
    const waiting = call(s.url, 'GET', `/commands/${c.id}?wait=30s`);
    await waitUntil(() => finalWaiting(s, c.id), 5000, 'the GET to park');
    await finish(s.url, 'agent-w', [{ ...c, outcome: 'COMPLETED', result: { ok: true, tookMs: 10 } }]);
    const r = await waiting;
    assert.is(r.status, 200);
    assert.is(r.body.status, 'COMPLETED');
    assert.equal(r.body.result, { ok: true, tookMs: 10 });
    assert.ok(Date.now() - t0 < 20_000, 'the wait ran out instead of being woken');
    assert.not.ok(finalWaiting(s, c.id), 'the waiter was left behind');
  });

  poll('GET ?wait= is woken by a cancel too, and several waiters on one command all wake', async () => {
    const s = await store.startServer();
    const id = await submit(s.url);
    const waits = [1, 2, 3].map(() => call(s.url, 'GET', `/commands/${id}?wait=30s`));
    await waitUntil(() => (s.keel.ctx.finalWaiters as unknown as { byId: Map<string, Set<unknown>> }).byId.get(id)?.size === 3, 5000, 'three GETs to park');
    await call(s.url, 'POST', `/commands/${id}/cancel`);
    for (const r of await Promise.all(waits)) assert.equal([r.body.status, r.body.error], ['FAILED', 'CANCELED']);
  });

  poll('a GET ?wait= whose client goes away leaves no waiter behind', async () => {
    const s = await store.startServer();
    const id = await submit(s.url);
    const ac = new AbortController();
    const gone = fetch(`${s.url}/commands/${id}?wait=30s`, { signal: ac.signal }).catch((e: Error) => e);
    await waitUntil(() => finalWaiting(s, id), 5000, 'the GET to park');
    ac.abort();
    assert.instance(await gone, Error);
    await waitUntil(() => !finalWaiting(s, id), 5000, 'the waiter to be dropped');
  });

  poll('a claim already waiting gets a command the moment it is submitted', async () => {
    const s = await store.startServer();
    const waiting = claim(s.url, 'agent-lp', { waitMs: 30_000 });
    await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the claim to park');
    const t0 = Date.now();
    const id = await submit(s.url);
    const r = await waiting;
    assert.is(r.status, 200);
    assert.equal(r.body.commands.map((c) => [c.id, c.lease]), [[id, 1]]);
    assert.ok(Date.now() - t0 < 20_000, 'the claim waited out its time instead of being woken');
    assert.is(s.keel.ctx.claimWaiters.size, 0);
  });

  poll('several waiting claims, several submits: each command goes to exactly one agent', async () => {
    const s = await store.startServer();
    const agents = ['lp-1', 'lp-2', 'lp-3'];
    const waits = agents.map((a) => claim(s.url, a, { waitMs: 30_000 }));
    await waitUntil(() => s.keel.ctx.claimWaiters.size === 3, 5000, 'three claims to park');
    const ids = await Promise.all([submit(s.url), submit(s.url), submit(s.url)]);
    const got = (await Promise.all(waits)).map((r) => r.body.commands.map((c) => c.id));
    for (const g of got) assert.is(g.length, 1, JSON.stringify(got));
    assert.equal(got.flat().sort(), [...ids].sort());
  });

  poll('a claim with no work answers an empty list when its wait ends', async () => {
    const s = await store.startServer();
    const t0 = Date.now();
    const r = await claim(s.url, 'agent-idle', { waitMs: 150 });
    assert.is(r.status, 200);
    assert.equal(r.body.commands, []);
    assert.ok(Date.now() - t0 >= 140, `answered after ${Date.now() - t0} ms`);
    assert.equal((await claim(s.url, 'agent-idle', { waitMs: 0 })).body.commands, [], 'waitMs 0 answers at once');
  });

  poll('a claim whose client went away takes nothing: the next waiting agent gets the command', async () => {
    const s = await store.startServer();
    const ac = new AbortController();
    const gone = claim(s.url, 'agent-gone', { waitMs: 30_000, signal: ac.signal }).catch((e: Error) => e);
    await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the claim to park');
    ac.abort();
    assert.instance(await gone, Error);
    await waitUntil(() => s.keel.ctx.claimWaiters.size === 0, 5000, 'the aborted claim to stop waiting');
    const waiting = claim(s.url, 'agent-here', { waitMs: 30_000 });
    await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the second claim to park');
    const id = await submit(s.url);
    assert.equal((await waiting).body.commands.map((c) => c.id), [id]);
    const gotten = (await getCommand(s.url, id)).agentId;
    assert.is(gotten, 'agent-here');
  });

  // --- lease expiry -----------------------------------------------------------------

  const expiry = suite(store.label('lease expiry (lease timeout 300 ms)'));
  expiry.after(async () => {
    await closeAll();
    await cleanup();
  });

  expiry('RUNNING, no heartbeat: FAILED AGENT_LOST, never run again; the agent shows offline', async () => {
    const s = await store.startServer({ leaseTimeoutMs: LEASE_MS });
    const c = await running(s, 'agent-lost');
    const online = (await call(s.url, 'GET', '/agents')).body.agents[0];
    assert.equal([online.status, online.commands], ['online', [c.id]]);

    const r = await call(s.url, 'GET', `/commands/${c.id}?wait=10s`);
    assert.equal([r.body.status, r.body.error], ['FAILED', 'AGENT_LOST']);
    assert.equal(r.body.result, { error: 'AGENT_LOST' });

    // Expiry comes a full lease timeout after the agent was last heard from: it is offline now.
    const offline = (await call(s.url, 'GET', '/agents')).body.agents.find((a: { id: string }) => a.id === 'agent-lost');
    assert.equal([offline.status, offline.commands], ['offline', []]);

    const late = await finish(s.url, 'agent-lost', [{ ...c, outcome: 'COMPLETED', result: { ok: true, tookMs: 1 } }]);
    assert.is(late.status, 409);
    assert.is((await getCommand(s.url, c.id)).status, 'FAILED');
    assert.equal((await claim(s.url, 'agent-other')).body.commands, [], 'a lost RUNNING command was handed out again');
    // On PostgreSQL the sweep logs once its statement returns, which the ?wait above can beat.
    await s.logs.waitFor((l) => l.msg === 'lease expired' && l.id === c.id, 10_000, 'the expiry line');
  });

  expiry('heartbeats keep leases alive well past the timeout', async () => {
    // A longer lease here: a heartbeat delayed by a busy test machine must not look like a lost agent.
    const LEASE_MS = 1000;
    const s = await store.startServer({ leaseTimeoutMs: LEASE_MS });
    const run = await running(s, 'agent-beat');
    const held = await running(s, 'agent-beat');
    const until = Date.now() + 2 * LEASE_MS;
    while (Date.now() < until) {
      const hb = await heartbeat(s.url, 'agent-beat', [run, held]);
      assert.equal(hb.body.revoked, [], 'a heartbeat lease was revoked');
      await new Promise((r) => setTimeout(r, LEASE_MS / 10)); // the heartbeat period is the thing under test
    }
    assert.is((await getCommand(s.url, run.id)).state, 'RUNNING');
    assert.is((await getCommand(s.url, held.id)).state, 'RUNNING');
    assert.is((await finish(s.url, 'agent-beat', [{ ...run, outcome: 'COMPLETED', result: { ok: true, tookMs: 1 } }])).status, 200);
    assert.is((await release(s.url, 'agent-beat', [held])).status, 200);
    assert.not.ok(s.logs.lines.some((l) => l.msg === 'lease expired'));
  });

  suites.push(flow, cancel, poll, expiry);
}

// --- the file store: reads wait for fdatasync -------------------------------------

const synced = suite('reads wait for fdatasync [file store only]');
synced.after(async () => {
  await closeAll();
  await cleanup();
});

synced('a GET ?wait= that times out during a finish answers only after the finish is on disk', async () => {
  const s = await startTestServer();
  const c = await running(s, 'agent-w');
  const waiting = call(s.url, 'GET', `/commands/${c.id}?wait=100ms`);
  await waitUntil(() => finalWaiting(s, c.id), 5000, 'the GET to park');
  // Hold the finish's fdatasync for 400 ms, across the end of the GET's wait:
  // the finish is applied in memory but not yet acknowledged when the wait ends.
  const order: string[] = [];
  const real = fs.fdatasync;
  (fs as { fdatasync: unknown }).fdatasync = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
    setTimeout(() => real(fd, (err) => (order.push('fsync returned'), cb(err))), 400);
  };
  try {
    const finished = finish(s.url, 'agent-w', [{ ...c, outcome: 'COMPLETED', result: { ok: true, tookMs: 10 } }]);
    const r = await waiting;
    order.push(`GET answered ${r.body.status}`);
    await finished;
  } finally {
    (fs as { fdatasync: unknown }).fdatasync = real;
  }
  assert.equal(order, ['fsync returned', 'GET answered COMPLETED'], 'a read showed a transition before it was durable');
});

runSuites(...suites, synced);
