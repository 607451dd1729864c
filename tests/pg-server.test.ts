// The HTTP API on the PostgreSQL store (--store): the client and agent routes
// against a real PostgreSQL, two servers on one database (a claim parked on
// one is woken by a submit on the other: LISTEN/NOTIFY), leases, timeouts and
// schedules kept on the database's clock, 503 with Retry-After while the
// database is away, a schema from a newer keel refused at start, and a server
// SIGKILLed under load that loses nothing it acknowledged.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { SCHEMA_VERSION } from '../state/pg/schema.ts';
import { call, claim, claimOne, closeAll, finish, getCommand, heartbeat, start, startPgTestServer, submit, waitUntil } from './support/server-harness.ts';
import { freshDatabase, proxied, stopPostgres } from './support/postgres.ts';
import { cleanup, Proc, tempDir } from './support/processes.ts';

const test = suite('server on PostgreSQL');
const DELAY = { type: 'DELAY', payload: { ms: 10 } };

test('client routes: submit, idempotent resubmit, get, wait, list, cancel, events', async () => {
  const s = await startPgTestServer(await freshDatabase());
  const first = await call(s.url, 'POST', '/commands', DELAY, { 'idempotency-key': 'k1' });
  assert.is(first.status, 201);
  const id = first.body.commandId as string;
  const again = await call(s.url, 'POST', '/commands', DELAY, { 'idempotency-key': 'k1' });
  assert.is(again.status, 200);
  assert.is(again.body.commandId, id);
  const other = await call(s.url, 'POST', '/commands', { type: 'DELAY', payload: { ms: 11 } }, { 'idempotency-key': 'k1' });
  assert.is(other.status, 409);
  assert.is(other.body.field, 'Idempotency-Key');
  assert.is((await getCommand(s.url, id)).status, 'PENDING');

  const waited = getCommand(s.url, id, '?wait=20s');
  const { lease } = await claimOne(s.url, 'a1');
  assert.is((await finish(s.url, 'a1', [{ id, lease, outcome: 'COMPLETED', result: { n: 1 } }])).status, 200);
  const done = await waited;
  assert.is(done.status, 'COMPLETED');
  assert.equal(done.result, { n: 1 });

  const p = await submit(s.url);
  const canceled = await call(s.url, 'POST', `/commands/${p}/cancel`);
  assert.is(canceled.status, 200);
  assert.is(canceled.body.error, 'CANCELED');
  const list = await call(s.url, 'GET', '/commands?limit=1');
  assert.is(list.body.commands[0].id, p);
  const next = await call(s.url, 'GET', `/commands?limit=5&cursor=${list.body.nextCursor}`);
  assert.equal(next.body.commands.map((c: { id: string }) => c.id), [id]);
  const failed = await call(s.url, 'GET', '/commands?status=FAILED');
  assert.equal(failed.body.commands.map((c: { id: string }) => c.id), [p]);
  const events = await call(s.url, 'GET', `/commands/${id}/events`);
  assert.equal(events.body.events.map((e: { event: string }) => e.event), ['submit', 'claim-start', 'finish']);
  assert.is((await call(s.url, 'GET', '/commands/nope')).status, 404);
  const metrics = await call(s.url, 'GET', '/metrics');
  assert.match(metrics.text, 'keel_commands{state="COMPLETED"} 1');
  assert.not.match(metrics.text, 'keel_journal_fsyncs_total');
});

test('two servers, one queue: a claim parked on one is woken by a submit on the other; a wait on one by a finish on the other', async () => {
  const url = await freshDatabase();
  const a = await startPgTestServer(url);
  const b = await startPgTestServer(url);
  const parked = claim(b.url, 'on-b', { waitMs: 20_000 });
  await waitUntil(() => b.keel.ctx.claimWaiters.size === 1, 10_000, 'the claim to park on b');
  const id = await submit(a.url);
  const got = await parked;
  assert.is(got.status, 200);
  assert.equal(got.body.commands.map((c) => c.id), [id]);
  // Either server answers about it, and agents may finish through either.
  assert.is((await getCommand(a.url, id)).state, 'RUNNING');
  assert.is((await start(a.url, 'on-b', [{ id, lease: 1 }])).status, 200, "a protocol-1 agent's start, answered as a retry");
  // A client waiting on server a hears of a finish made through server b (keel_changes), long before its wait ends.
  const waited = getCommand(a.url, id, '?wait=60s');
  await waitUntil(() => a.keel.ctx.finalWaiters.waiting(id), 10_000, 'the wait to park on a');
  const t0 = Date.now();
  assert.is((await finish(b.url, 'on-b', [{ id, lease: 1, outcome: 'COMPLETED' }])).status, 200);
  assert.is((await waited).status, 'COMPLETED');
  assert.ok(Date.now() - t0 < 30_000, 'woken by the other server, not by the end of its wait');
  const again = await call(b.url, 'POST', '/commands', DELAY, { 'idempotency-key': 'x' });
  const there = await call(a.url, 'POST', '/commands', DELAY, { 'idempotency-key': 'x' });
  assert.is(there.status, 200, 'a key taken on one server is known to the other');
  assert.is(there.body.commandId, again.body.commandId);
});

test('leases expire on the database clock unless heartbeated (AGENT_LOST); attempts past their timeout fail TIMEOUT', async () => {
  const s = await startPgTestServer(await freshDatabase(), { leaseTimeoutMs: 400 });
  const dropped = await submit(s.url);
  const kept = await submit(s.url);
  const timed = await submit(s.url, { ...DELAY, timeout: '200ms' });
  const got = await claim(s.url, 'a1', { max: 3 });
  assert.is(got.body.commands.length, 3);
  let dead = false;
  let timedOut = false;
  const deadline = Date.now() + 20_000;
  while (!(dead && timedOut)) {
    if (Date.now() > deadline) throw new Error('the lease did not expire, or the attempt did not time out');
    const hb = await heartbeat(s.url, 'a1', [{ id: kept, lease: 1 }, { id: timed, lease: 1 }]);
    assert.equal(hb.body.revoked.filter((r) => r.id === kept), [], 'a heartbeated lease lives');
    dead = (await getCommand(s.url, dropped)).error === 'AGENT_LOST';
    timedOut = (await getCommand(s.url, timed)).error === 'TIMEOUT';
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.is((await getCommand(s.url, kept)).state, 'RUNNING');
  assert.is((await getCommand(s.url, dropped)).attempt, 1);
  assert.is((await getCommand(s.url, timed)).state, 'FAILED');
});

test('a scheduled command becomes claimable when due', async () => {
  const s = await startPgTestServer(await freshDatabase());
  const id = await submit(s.url, { ...DELAY, delay: '300ms' });
  assert.is((await getCommand(s.url, id)).state, 'SCHEDULED');
  const got = await claim(s.url, 'a1', { waitMs: 15_000 });
  assert.equal(got.body.commands.map((c) => c.id), [id]);
});

test('the database away: 503 with Retry-After and /readyz 503, then it recovers by itself', async () => {
  const proxy = await proxied(await freshDatabase());
  try {
    const s = await startPgTestServer(proxy.url);
    const id = await submit(s.url);
    await proxy.cut();
    const r = await call(s.url, 'POST', '/commands', DELAY);
    assert.is(r.status, 503);
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
    assert.is(r.body.error, 'store unavailable');
    assert.is((await call(s.url, 'GET', `/commands/${id}`)).status, 503);
    assert.is((await call(s.url, 'GET', '/readyz')).status, 503);
    await proxy.restore();
    assert.is((await getCommand(s.url, id)).state, 'PENDING');
    assert.is((await call(s.url, 'GET', '/readyz')).status, 200);
    assert.is((await call(s.url, 'POST', '/commands', DELAY)).status, 201);
  } finally {
    await proxy.close();
  }
});

test('a schema from a newer keel: the server refuses to start, naming both versions', async () => {
  const url = await freshDatabase();
  const s = await startPgTestServer(url);
  await s.close();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query("INSERT INTO keel_migrations (version, what) VALUES ($1, 'newer')", [SCHEMA_VERSION + 3]);
  await c.end();
  const proc = new Proc('server', ['server.ts', '--port', '0', '--state-dir', tempDir(), '--store', url]);
  const { code } = await proc.exited;
  assert.is(code, 1);
  assert.match(proc.stderr, `version ${SCHEMA_VERSION + 3}`);
  assert.match(proc.stderr, `up to ${SCHEMA_VERSION}`);
  assert.not.match(proc.stderr, 'keel-test', 'the password is not printed');
});

test('SIGKILL under load: every acknowledged submit and finish survives the restart', async () => {
  const url = await freshDatabase();
  const dir = tempDir();
  const boot = async (): Promise<{ proc: Proc; url: string }> => {
    const proc = new Proc('server', ['server.ts', '--port', '0', '--state-dir', dir, '--store', url]);
    const line = await proc.waitForMsg('listening');
    return { proc, url: String(line.url) };
  };
  const first = await boot();
  const acked: string[] = [];
  const finished: string[] = [];
  let stop = false;
  const submitter = (async () => {
    while (!stop) {
      const r = await call(first.url, 'POST', '/commands', DELAY).catch(() => undefined);
      if (r?.status === 201) acked.push(r.body.commandId);
    }
  })();
  const worker = (async () => {
    while (!stop) {
      const r = await call(first.url, 'POST', '/agent/claim', { agentId: 'w', max: 4, protocol: 2 }).catch(() => undefined);
      for (const c of r?.body?.commands ?? []) {
        const f = await call(first.url, 'POST', '/agent/finish', { agentId: 'w', items: [{ id: c.id, lease: c.lease, outcome: 'COMPLETED' }] }).catch(() => undefined);
        if (f?.status === 200) finished.push(c.id);
      }
    }
  })();
  await waitUntil(() => acked.length >= 60 && finished.length >= 20, 30_000, 'load to build up');
  await first.proc.kill('SIGKILL');
  stop = true;
  await Promise.all([submitter, worker]);
  const second = await boot();
  for (const id of acked) {
    const r = await call(second.url, 'GET', `/commands/${id}`);
    assert.is(r.status, 200, `acknowledged ${id} lost`);
  }
  for (const id of finished) assert.is((await getCommand(second.url, id)).state, 'COMPLETED', `finished ${id} not COMPLETED`);
  await second.proc.kill('SIGTERM');
});

test.after(async () => {
  await closeAll();
  await cleanup();
  await stopPostgres();
});
test.run();
