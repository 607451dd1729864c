// Job options over HTTP against an in-process server: priority order,
// scheduled commands (due-time order, a parked claim woken when one falls due,
// due across a restart, cancel), retries through the agent API (RETRY_WAIT
// shown as PENDING with nextAttemptAt, the attempts list), POST
// /commands/:id/retry, the list's type filter, and the server's own timeout.
// Waits are awaited (parked claims, ?wait=), never slept on. On the file
// store and on PostgreSQL (support/stores.ts).
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { CommandView } from '../lib/protocol.ts';
import type { ServerContext } from '../lib/server/context.ts';
import { call, claim, cleanup, closeAll, finish, getCommand, heartbeat, submit, type TestServer } from './support/server-harness.ts';
import { runSuites, sameStore, STORES } from './support/stores.ts';

const delay = (ms: number, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'DELAY', payload: { ms }, ...extra });

async function claimIds(s: TestServer<ServerContext>, agentId: string, max: number, waitMs = 0): Promise<string[]> {
  const r = await claim(s.url, agentId, { max, waitMs });
  assert.is(r.status, 200, r.text);
  return r.body.commands.map((c) => c.id);
}

const suites: Array<Test<any>> = [];
for (const store of STORES) {
  const test = suite(store.label('server: priorities, schedules, retries, timeouts'));
  test.after(async () => {
    await closeAll();
    await cleanup();
  });

  test('higher priority is handed out first; first in, first out within a priority', async () => {
    const s = await store.startServer();
    const low = await submit(s.url, delay(1, { priority: -5 }));
    const a = await submit(s.url, delay(1));
    const high = await submit(s.url, delay(1, { priority: 100 }));
    const b = await submit(s.url, delay(1, { priority: 0 }));
    const high2 = await submit(s.url, delay(1, { priority: 100 }));
    assert.is((await getCommand(s.url, high)).priority, 100);
    assert.equal(await claimIds(s, 'a1', 2), [high, high2]);
    assert.equal(await claimIds(s, 'a2', 10), [a, b, low]);
  });

  test('a scheduled command shows PENDING with runAt, is not claimable before it, and wakes a parked claim when due', async () => {
    const s = await store.startServer();
    const t0 = Date.now();
    const id = await submit(s.url, delay(1, { delay: '1500ms' }));
    const v = await getCommand(s.url, id);
    assert.equal([v.status, v.state], ['PENDING', 'SCHEDULED']);
    assert.ok(Date.parse(v.runAt!) >= t0 + 1500, JSON.stringify(v));
    assert.equal(await claimIds(s, 'a1', 1), [], 'not claimable yet');
    const got = await claimIds(s, 'a1', 1, 10_000);
    assert.equal(got, [id]);
    const after = await getCommand(s.url, id);
    assert.ok(Date.parse(after.updatedAt) >= Date.parse(v.runAt!), 'claimed no earlier than runAt');
    const ev = await call(s.url, 'GET', `/commands/${id}/events`);
    assert.equal(ev.body.events.map((e: { event: string; to: string }) => `${e.event}:${e.to}`), ['submit:SCHEDULED', 'due:PENDING', 'claim-start:RUNNING']);
  });

  test('due commands are handed out in due-time order, whatever order they were submitted in', async () => {
    const s = await store.startServer();
    const t0 = Date.now(); // one origin: a slow submit must not reorder the due times
    const runAt = (ms: number): string => new Date(t0 + ms).toISOString();
    const third = await submit(s.url, delay(1, { runAt: runAt(600) }));
    const first = await submit(s.url, delay(1, { runAt: runAt(300) }));
    const second = await submit(s.url, delay(1, { runAt: runAt(450) }));
    const got: string[] = [];
    for (let n = 0; got.length < 3; n++) got.push(...(await claimIds(s, `a${n}`, 3, 10_000))); // a fresh agent: nothing held
    assert.equal(got, [first, second, third]);
  });

  test('a command that falls due joins the queue of its priority then: behind those waiting before it, ahead of later ones', async () => {
    const s = await store.startServer();
    const scheduled = await submit(s.url, delay(1, { delay: '200ms' }));
    const before = await submit(s.url, delay(1));
    const deadline = Date.now() + 10_000;
    while ((await getCommand(s.url, scheduled)).state !== 'PENDING') {
      assert.ok(Date.now() < deadline, 'the scheduled command did not fall due');
      await new Promise((r) => setTimeout(r, 20));
    }
    const later = await submit(s.url, delay(1));
    assert.equal(await claimIds(s, 'a1', 3), [before, scheduled, later]);
  });

  test('cancel a scheduled command: 200, FAILED CANCELED, never handed out', async () => {
    const s = await store.startServer();
    const id = await submit(s.url, delay(1, { delay: '1h' }));
    const r = await call(s.url, 'POST', `/commands/${id}/cancel`);
    assert.is(r.status, 200, r.text);
    assert.equal([r.body.status, r.body.error], ['FAILED', 'CANCELED']);
  });

  test('a command that fell due while the server was down runs at once after the restart', async () => {
    const s = await store.startServer();
    const id = await submit(s.url, delay(1, { delay: '300ms' }));
    const runAt = Date.parse((await getCommand(s.url, id)).runAt!);
    await s.close();
    await new Promise((r) => setTimeout(r, Math.max(0, runAt - Date.now() + 50))); // the server is down until it is due
    const again = await store.startServer(sameStore(s));
    assert.equal(await claimIds(again, 'a1', 1, 10_000), [id]);
  });

  test('list filters by type', async () => {
    const s = await store.startServer();
    const d = await submit(s.url, delay(1));
    const h = await submit(s.url, { type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:1/' } });
    const byType = async (t: string): Promise<string[]> => (await call(s.url, 'GET', `/commands?type=${t}`)).body.commands.map((c: CommandView) => c.id);
    assert.equal(await byType('DELAY'), [d]);
    assert.equal(await byType('HTTP_GET_JSON'), [h]);
    const bad = await call(s.url, 'GET', '/commands?type=SLEEP');
    assert.equal([bad.status, bad.body.field], [400, 'type']);
  });

  test('a failed attempt with attempts left shows PENDING with nextAttemptAt, comes back with a new lease, and the attempts list tells both', async () => {
    const s = await store.startServer();
    const id = await submit(s.url, delay(1, { retry: { attempts: 2, backoff: 'fixed', delay: '200ms' } }));
    const [c1] = (await claim(s.url, 'a1')).body.commands; // claimed and started in one step
    assert.is(c1!.lease, 1);
    const f = await finish(s.url, 'a1', [{ id, lease: 1, outcome: 'FAILED', result: { error: 'boom' }, error: 'boom' }]);
    assert.is(f.status, 200, f.text);
    const waiting = await getCommand(s.url, id);
    assert.equal([waiting.status, waiting.state, waiting.error], ['PENDING', 'RETRY_WAIT', 'boom']);
    const wait = Date.parse(waiting.nextAttemptAt!) - Date.parse(waiting.updatedAt);
    assert.ok(wait >= 100 && wait <= 200, `equal jitter keeps the wait within [delay/2, delay]: ${wait}`);
    const again = await claim(s.url, 'a2', { waitMs: 10_000 });
    assert.equal(again.body.commands.map((c) => [c.id, c.lease]), [[id, 2]]);
    await finish(s.url, 'a2', [{ id, lease: 2, outcome: 'COMPLETED', result: { ok: true, tookMs: 1 } }]);
    const done = await getCommand(s.url, id);
    assert.equal([done.status, done.error, done.nextAttemptAt], ['COMPLETED', null, null]);
    assert.equal(done.attempts.map((a) => [a.number, a.agentId, a.outcome, a.error]), [[1, 'a1', 'FAILED', 'boom'], [2, 'a2', 'COMPLETED', null]]);
    const ev = (await call(s.url, 'GET', `/commands/${id}/events`)).body.events.map((e: { event: string; to: string }) => `${e.event}:${e.to}`);
    assert.equal(ev, ['submit:PENDING', 'claim-start:RUNNING', 'finish:RETRY_WAIT', 'due:PENDING', 'claim-start:RUNNING', 'finish:COMPLETED']);
  });

  test('while it waits for its retry: a finish sent again still answers ok; another outcome is refused; cancel ends it', async () => {
    const s = await store.startServer();
    const id = await submit(s.url, delay(1, { retry: { attempts: 5, delay: '1h' } }));
    await claim(s.url, 'a1');
    const failure = { id, lease: 1, outcome: 'FAILED' as const, result: { error: 'boom' }, error: 'boom' };
    assert.is((await finish(s.url, 'a1', [failure])).status, 200);
    assert.is((await getCommand(s.url, id)).state, 'RETRY_WAIT');
    assert.is((await finish(s.url, 'a1', [failure])).status, 200, 'a repeated finish is the same transition');
    const late = await finish(s.url, 'a1', [{ id, lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 1 } }]);
    assert.equal([late.status, late.body.results[0]!.error], [409, 'CONFLICT']);
    const c = await call(s.url, 'POST', `/commands/${id}/cancel`);
    assert.equal([c.status, c.body.status, c.body.error, c.body.nextAttemptAt], [200, 'FAILED', 'CANCELED', null]);
  });

  test('POST /commands/:id/retry: 409 while not final; on a final one a new command with retryOf, honouring Idempotency-Key', async () => {
    const s = await store.startServer();
    const id = await submit(s.url, delay(1, { priority: 9, timeout: '5s', retry: { attempts: 3 } }));
    const early = await call(s.url, 'POST', `/commands/${id}/retry`);
    assert.is(early.status, 409, early.text);
    await call(s.url, 'POST', `/commands/${id}/cancel`);
    const before = await getCommand(s.url, id);
    const r = await call(s.url, 'POST', `/commands/${id}/retry`, undefined, { 'idempotency-key': 'again-1' });
    assert.is(r.status, 201, r.text);
    const copy = await getCommand(s.url, r.body.commandId);
    assert.equal([copy.type, copy.payload, copy.priority, copy.timeoutMs, copy.retry, copy.retryOf, copy.status], [before.type, before.payload, 9, 5000, before.retry, id, 'PENDING']);
    const twice = await call(s.url, 'POST', `/commands/${id}/retry`, undefined, { 'idempotency-key': 'again-1' });
    assert.equal([twice.status, twice.body.commandId], [200, r.body.commandId]);
    const other = await call(s.url, 'POST', '/commands', delay(1), { 'idempotency-key': 'again-1' });
    assert.is(other.status, 409, 'the key was used for another body');
    assert.equal(await getCommand(s.url, id), before, 'the original stays as it was');
    assert.is((await call(s.url, 'POST', '/commands/00000000-0000-4000-8000-000000000000/retry')).status, 404);
  });

  test('the server fails a RUNNING attempt one lease timeout past its deadline, even while the agent heartbeats', async () => {
    const s = await store.startServer({ leaseTimeoutMs: 1000 });
    const id = await submit(s.url, delay(60_000, { timeout: '100ms' }));
    const [a] = (await claim(s.url, 'wedged')).body.commands;
    assert.is(a!.timeoutMs, 100, 'the agent is told the timeout');
    // A beat still out when the server closes is cut off: not a failure of this test.
    const beating = setInterval(() => void heartbeat(s.url, 'wedged', [{ id, lease: 1 }]).catch(() => {}), 100);
    try {
      const v = await getCommand(s.url, id, '?wait=20s');
      assert.equal([v.status, v.error], ['FAILED', 'TIMEOUT']);
      // On PostgreSQL the sweep logs once its statement returns, which a
      // waiter fed by the event feed can beat: the line is awaited, not assumed.
      await s.logs.waitFor((l) => l.msg === 'attempt timed out' && l.id === id, 10_000, 'the timeout line');
    } finally {
      clearInterval(beating);
    }
  });

  suites.push(test);
}

runSuites(...suites);
