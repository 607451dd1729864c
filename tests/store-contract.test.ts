// The store contract: the same cases against the file store and the
// PostgreSQL store (a real one, tests/support/postgres.ts). FSM transitions,
// compare-and-swap conflicts, claims in priority order, leases, idempotency
// keys, listing, and a restart (close, open again) that keeps what was
// acknowledged. Then what only a shared database has: two stores (two
// servers) on one database never hand out one command twice, and agree on
// idempotency keys.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandStore } from '../state/command-store.ts';
import type { Command } from '../state/command-fsm.ts';
import { PgStore } from '../state/pg/pg-store.ts';
import { MIGRATIONS, SCHEMA_VERSION, SchemaTooNewError } from '../state/pg/schema.ts';
import type { ClaimOptions, Store } from '../state/store.ts';
import type { RetentionPolicy } from '../state/retention.ts';
import { cleanup, tempDir } from './support/processes.ts';
import { freshDatabase, proxied, stopPostgres } from './support/postgres.ts';

/** What the cases use: the Store interface plus the claim and due promotion both stores have. */
type ContractStore = Store & {
  claim(agentId: string, max: number, opts?: ClaimOptions): Promise<Command[]>;
  promoteDue(max?: number): Promise<number>;
  /** Resolves once the final commands past the retention bounds are forgotten. */
  forgetExpired(): Promise<unknown>;
};

interface Kit {
  /** A new, empty store; `where` opens it again after close(). */
  fresh(retention?: RetentionPolicy): Promise<{ store: ContractStore; where: string }>;
  reopen(where: string): Promise<ContractStore>;
}

const fileKit: Kit = {
  async fresh(retention) {
    const where = tempDir('keel-contract-');
    return { store: await CommandStore.open(where, { retention }), where };
  },
  reopen: (where) => CommandStore.open(where),
};

const pgKit: Kit = {
  async fresh(retention) {
    const where = await freshDatabase();
    return { store: await PgStore.open({ url: where, leaseTimeoutMs: 60_000, retention }), where };
  },
  reopen: (where) => PgStore.open({ url: where, leaseTimeoutMs: 60_000 }),
};

const DELAY = { type: 'DELAY' as const, payload: { ms: 5 } };

function contract(name: string, kit: Kit): void {
  const test = suite(`store contract: ${name}`);
  const open: ContractStore[] = [];
  const fresh = async (retention?: RetentionPolicy): Promise<{ store: ContractStore; where: string }> => {
    const f = await kit.fresh(retention);
    open.push(f.store);
    return f;
  };
  test.after.each(async () => {
    await Promise.all(open.splice(0).map((s) => s.close().catch(() => {})));
  });

  test('submit, claim (claim-and-start), finish: each step once, the same answer for a repeat', async () => {
    const { store } = await fresh();
    const sub = await store.submit(DELAY);
    assert.is(sub.kind, 'created');
    const id = sub.id;
    assert.is((await store.read(id))!.state, 'PENDING');
    const [c] = await store.claim('a1', 1);
    assert.is(c!.id, id);
    assert.is(c!.state, 'RUNNING');
    assert.is(c!.attempt, 1);
    assert.is(c!.executions, 1);
    assert.is((await store.start('a1', id, 1)).kind, 'same', "a protocol-1 agent's start is a retry");
    const done = await store.finish('a1', id, 1, 'COMPLETED', { ok: true }, null);
    assert.is(done.kind, 'next');
    assert.is((await store.finish('a1', id, 1, 'COMPLETED', { ok: true }, null)).kind, 'same');
    const late = await store.finish('a1', id, 1, 'FAILED', null, 'BOOM');
    assert.is(late.kind === 'rejected' && late.error, 'CONFLICT');
    const cmd = (await store.read(id))!;
    assert.is(cmd.state, 'COMPLETED');
    assert.equal(cmd.result, { ok: true });
    assert.is(cmd.version, 3);
    const trail = (await store.trail(id))!;
    assert.equal(trail.map((e) => `${e.event}>${e.to}`), ['submit>PENDING', 'claim-start>RUNNING', 'finish>COMPLETED']);
    assert.is(trail[1]!.agentId, 'a1');
    assert.is(trail[1]!.lease, 1);
  });

  test('leases: stale, wrong agent, release of an unbegun run, expiry, release under a cancel', async () => {
    const { store } = await fresh();
    const a = (await store.submit(DELAY)).id;
    await store.claim('a1', 1);
    const wrong = await store.finish('a2', a, 1, 'COMPLETED', null, null);
    assert.is(wrong.kind === 'rejected' && wrong.error, 'WRONG_AGENT');
    const stale = await store.finish('a1', a, 2, 'COMPLETED', null, null);
    assert.is(stale.kind === 'rejected' && stale.error, 'STALE_LEASE');
    assert.is((await store.release('a1', a, 1)).kind, 'next');
    const back = (await store.read(a))!;
    assert.is(back.state, 'PENDING');
    assert.is(back.executions, 0, 'a run given back unbegun is no execution');
    const [again] = await store.claim('a2', 1);
    assert.is(again!.attempt, 2, 'a new lease after a release');
    assert.is((await store.expire(a, 2)).kind, 'next');
    const lost = (await store.read(a))!;
    assert.is(lost.state, 'FAILED');
    assert.is(lost.error, 'AGENT_LOST');
    const twice = await store.expire(a, 2);
    assert.is(twice.kind, 'rejected', 'an expiry run twice changes nothing');
    const late = await store.finish('a2', a, 2, 'COMPLETED', null, null);
    assert.is(late.kind === 'rejected' && late.error, 'CONFLICT');
    const b = (await store.submit(DELAY)).id;
    await store.claim('a1', 1);
    await store.cancel(b);
    const given = await store.release('a1', b, 1);
    assert.is(given.kind === 'next' && given.cmd.error, 'CANCELED', 'given back under a cancel: FAILED CANCELED');
  });

  test('cancel: PENDING fails at once; RUNNING is flagged; a retried failure waits', async () => {
    const { store } = await fresh();
    const p = (await store.submit(DELAY)).id;
    const c = await store.cancel(p);
    assert.is(c.kind === 'next' && c.cmd.error, 'CANCELED');
    assert.is((await store.cancel(p)).kind, 'same');
    const r = (await store.submit({ ...DELAY, opts: { retry: { attempts: 3, backoff: 'fixed', delayMs: 60_000, maxDelayMs: 60_000 } } })).id;
    await store.claim('a1', 1);
    const flagged = await store.cancel(r);
    assert.is(flagged.kind === 'next' && flagged.cmd.cancelRequested, true);
    assert.is((await store.read(r))!.state, 'RUNNING');
    const ended = await store.finish('a1', r, 1, 'FAILED', null, 'CANCELED');
    assert.is(ended.kind === 'next' && ended.cmd.state, 'FAILED', 'a canceled attempt is not retried');
    const w = (await store.submit({ ...DELAY, opts: { retry: { attempts: 3, backoff: 'fixed', delayMs: 60_000, maxDelayMs: 60_000 } } })).id;
    await store.claim('a1', 1);
    const failed = await store.finish('a1', w, 1, 'FAILED', null, 'BOOM');
    assert.is(failed.kind === 'next' && failed.cmd.state, 'RETRY_WAIT');
    const waiting = (await store.read(w))!;
    assert.ok(waiting.nextAttemptAt! >= waiting.updatedAt + 30_000, 'the backoff (half fixed, half jitter) is ahead');
    assert.is(await store.promoteDue(), 0, 'not due yet');
  });

  test('claims: priority first, then submission order; types; max', async () => {
    const { store } = await fresh();
    const low = (await store.submit({ ...DELAY, opts: { priority: -5 } })).id;
    const first = (await store.submit(DELAY)).id;
    const http = (await store.submit({ type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:1/x' } })).id;
    const high = (await store.submit({ ...DELAY, opts: { priority: 10 } })).id;
    const second = (await store.submit(DELAY)).id;
    const got = await store.claim('a1', 2, { types: new Set(['DELAY']) });
    assert.equal(got.map((c) => c.id), [high, first]);
    const again = await store.claim('a1', 1);
    assert.equal(again.map((c) => c.id), [http], 'the next in order, its type now allowed');
    const rest = await store.claim('a2', 10);
    assert.equal(rest.map((c) => c.id), [second, low]);
    assert.equal(await store.claim('a3', 10), []);
    const held = await store.heldBy();
    assert.equal([...held.get('a1')!].sort(), [high, first, http].sort());
    assert.equal([...held.get('a2')!].sort(), [second, low].sort());
    const counts = await store.counts();
    assert.is(counts.byState.RUNNING, 5);
    assert.is(counts.byState.PENDING, 0);
  });

  test('scheduled: not claimable before runAt, promoted once due', async () => {
    const { store } = await fresh();
    const later = (await store.submit({ ...DELAY, opts: { runAt: Date.now() + 3_600_000 } })).id;
    assert.is((await store.read(later))!.state, 'SCHEDULED');
    const soon = (await store.submit({ ...DELAY, opts: { runAt: Date.now() + 150 } })).id;
    assert.equal(await store.claim('a1', 5), []);
    // Due times are wall-clock instants: wait until this one has passed, as the server's clock would.
    while (Date.now() < (await store.read(soon))!.runAt! + 5) await new Promise((r) => setTimeout(r, 20));
    assert.is(await store.promoteDue(), 1);
    assert.equal((await store.claim('a1', 5)).map((c) => c.id), [soon]);
    assert.is((await store.read(later))!.state, 'SCHEDULED');
  });

  test('idempotency keys: same body -> same command; another body -> conflict; a batch is all or none', async () => {
    const { store } = await fresh();
    const a = await store.submit({ ...DELAY, idemKey: 'k1', bodyHash: 'h1' });
    const b = await store.submit({ ...DELAY, idemKey: 'k1', bodyHash: 'h1' });
    assert.is(a.kind, 'created');
    assert.is(b.kind, 'existing');
    assert.is(b.id, a.id);
    const c = await store.submit({ ...DELAY, idemKey: 'k1', bodyHash: 'h2' });
    assert.is(c.kind, 'conflict');
    assert.ok(await store.knowsKey('k1'));
    assert.not.ok(await store.knowsKey('k2'));
    const before = (await store.counts()).byState.PENDING;
    const bad = await store.submitMany([{ ...DELAY, idemKey: 'k2', bodyHash: 'x' }, DELAY, { ...DELAY, idemKey: 'k1', bodyHash: 'other' }]);
    assert.is(bad.kind === 'conflict' && bad.index, 2);
    assert.is((await store.counts()).byState.PENDING, before, 'nothing of a refused batch was written');
    assert.not.ok(await store.knowsKey('k2'));
    const good = await store.submitMany([{ ...DELAY, idemKey: 'k3', bodyHash: 'x' }, { ...DELAY, idemKey: 'k3', bodyHash: 'x' }, { ...DELAY, idemKey: 'k1', bodyHash: 'h1' }]);
    assert.ok(good.kind === 'done');
    if (good.kind !== 'done') return;
    assert.is(good.created, 1);
    assert.is(good.ids[0], good.ids[1]);
    assert.is(good.ids[2], a.id);
  });

  test('compare-and-swap: concurrent transitions on one command, exactly one moves it', async () => {
    const { store } = await fresh();
    const id = (await store.submit(DELAY)).id;
    await store.claim('a1', 1);
    const [x, y] = await Promise.all([
      store.finish('a1', id, 1, 'COMPLETED', 1, null),
      store.finish('a1', id, 1, 'FAILED', null, 'BOOM'),
    ]);
    assert.equal([x.kind, y.kind].sort(), ['next', 'rejected']);
    const cmd = (await store.read(id))!;
    assert.is(cmd.version, 3);
    assert.is((await store.trail(id))!.length, 3, 'one finish in the trail');
  });

  test('list: newest first, filtered, paged by cursor', async () => {
    const { store } = await fresh();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await store.submit(DELAY)).id);
    await store.cancel(ids[1]!);
    const p1 = await store.list({ limit: 2 });
    assert.ok(!('badCursor' in p1));
    if ('badCursor' in p1) return;
    assert.equal(p1.commands.map((c) => c.id), [ids[4], ids[3]]);
    const p2 = await store.list({ limit: 2, cursor: p1.nextCursor! });
    if ('badCursor' in p2) throw new Error('bad cursor');
    assert.equal(p2.commands.map((c) => c.id), [ids[2], ids[1]]);
    const p3 = await store.list({ limit: 2, cursor: p2.nextCursor! });
    if ('badCursor' in p3) throw new Error('bad cursor');
    assert.equal(p3.commands.map((c) => c.id), [ids[0]]);
    assert.is(p3.nextCursor, null);
    const failed = await store.list({ limit: 10, states: new Set(['FAILED']) });
    if ('badCursor' in failed) throw new Error('bad cursor');
    assert.equal(failed.commands.map((c) => c.id), [ids[1]]);
    assert.ok('badCursor' in (await store.list({ limit: 2, cursor: 'x' })));
  });

  test('restart: what was acknowledged is there after close and open', async () => {
    const { store, where } = await fresh();
    const done = (await store.submit(DELAY)).id;
    const running = (await store.submit({ ...DELAY, idemKey: 'r', bodyHash: 'h' })).id;
    const waiting = (await store.submit(DELAY)).id;
    await store.claim('a1', 2);
    await store.finish('a1', done, 1, 'COMPLETED', { n: 1 }, null);
    await store.close();
    open.splice(open.indexOf(store), 1);
    const again = await kit.reopen(where);
    open.push(again);
    assert.is((await again.read(done))!.state, 'COMPLETED');
    assert.equal((await again.read(done))!.result, { n: 1 });
    assert.is((await again.read(running))!.state, 'RUNNING');
    assert.is((await again.read(waiting))!.state, 'PENDING');
    assert.is((await again.submit({ ...DELAY, idemKey: 'r', bodyHash: 'h' })).id, running);
    assert.is((await again.finish('a1', running, 1, 'COMPLETED', null, null)).kind, 'next');
    assert.equal((await again.claim('a2', 5)).map((c) => c.id), [waiting]);
  });

  test('onChange: every transition once, in order', async () => {
    const { store } = await fresh();
    const seen: string[] = [];
    let last = store.lastSeq;
    store.onChange((cmd, event, seq) => {
      assert.ok(seq > last, 'seqs increase');
      last = seq;
      seen.push(`${event}>${cmd.state}`);
    });
    const id = (await store.submit(DELAY)).id;
    await store.claim('a1', 1);
    await store.start('a1', id, 1); // same: no change
    await store.finish('a1', id, 1, 'COMPLETED', null, null);
    assert.equal(seen, ['submit>PENDING', 'claim-start>RUNNING', 'finish>COMPLETED']);
  });

  test('retention: past --retain-max the oldest final commands are forgotten, their keys free again; others untouched', async () => {
    const { store } = await fresh({ ms: 3_600_000, max: 2 });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await store.submit({ ...DELAY, idemKey: `k${i}`, bodyHash: 'h' })).id);
    const waiting = (await store.submit(DELAY)).id;
    for (const c of await store.claim('a1', 4)) await store.finish('a1', c.id, c.attempt, 'COMPLETED', null, null);
    await store.forgetExpired();
    assert.is(await store.read(ids[0]!), undefined);
    assert.is(await store.read(ids[1]!), undefined);
    assert.is(await store.trail(ids[0]!), undefined);
    assert.not.ok(await store.knowsKey('k0'), 'a forgotten key is free again');
    assert.is((await store.read(ids[2]!))!.state, 'COMPLETED');
    assert.is((await store.read(ids[3]!))!.state, 'COMPLETED');
    assert.is((await store.read(waiting))!.state, 'PENDING', 'never a command that is not final');
    const counts = await store.counts();
    assert.is(counts.byState.COMPLETED, 2);
    assert.is(counts.forgotten, 2);
  });

  test.after(async () => {
    await cleanup();
  });
  test.run();
}

contract('file', fileKit);
contract('postgres', pgKit);

// --- what only a shared database has ----------------------------------------

const shared = suite('postgres store: two servers on one database');
const opened: PgStore[] = [];
const two = async (leaseTimeoutMs = 60_000): Promise<[PgStore, PgStore, string]> => {
  const url = await freshDatabase();
  const a = await PgStore.open({ url, leaseTimeoutMs });
  const b = await PgStore.open({ url, leaseTimeoutMs });
  opened.push(a, b);
  return [a, b, url];
};
shared.after.each(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => {})));
});

shared('claims on two stores at once never hand out one command twice (SKIP LOCKED)', async () => {
  const [a, b] = await two();
  const ids = new Set<string>();
  const subs = await a.submitMany(Array.from({ length: 200 }, () => DELAY));
  if (subs.kind !== 'done') throw new Error('batch refused');
  for (const id of subs.ids) ids.add(id);
  const got: string[] = [];
  const agent = async (s: PgStore, name: string): Promise<void> => {
    for (;;) {
      const cmds = await s.claim(name, 7);
      if (cmds.length === 0) return;
      got.push(...cmds.map((c) => c.id));
    }
  };
  await Promise.all([agent(a, 'a1'), agent(b, 'b1'), agent(a, 'a2'), agent(b, 'b2')]);
  assert.is(got.length, 200, 'every command claimed');
  assert.is(new Set(got).size, 200, 'none twice');
  for (const id of got) assert.ok(ids.has(id));
});

shared('idempotency keys are unique across servers, even submitted at the same moment', async () => {
  const [a, b] = await two();
  const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).submit({ ...DELAY, idemKey: 'same', bodyHash: 'h' })));
  assert.is(new Set(rs.map((r) => r.id)).size, 1);
  assert.is(rs.filter((r) => r.kind === 'created').length, 1);
});

shared('a transition made on one server is seen by the other; a stale one there is refused', async () => {
  const [a, b] = await two();
  const id = (await a.submit(DELAY)).id;
  await b.claim('x', 1);
  assert.is((await a.read(id))!.state, 'RUNNING');
  assert.is((await a.start('x', id, 1)).kind, 'same');
  const stale = await a.release('x', id, 2);
  assert.is(stale.kind === 'rejected' && stale.error, 'STALE_LEASE');
  const [f1, f2] = await Promise.all([a.finish('x', id, 1, 'COMPLETED', 1, null), b.finish('x', id, 1, 'FAILED', null, 'E')]);
  assert.equal([f1.kind, f2.kind].sort(), ['next', 'rejected']);
});

shared('a server whose estimate of the database clock runs ahead: the claim and finish of its command still come after its submit', async () => {
  const [a, b] = await two();
  // clock() stamps submits with the database's time as this server estimates it;
  // push the estimate 2 s ahead, past any error a round trip could make.
  (a as unknown as { offset: number }).offset += 2000;
  const id = (await a.submit(DELAY)).id;
  const [claimed] = await b.claim('x', 1);
  assert.is(claimed?.id, id);
  const done = await b.finish('x', id, 1, 'COMPLETED', 1, null);
  assert.is(done.kind, 'next');
  const cmd = (await b.read(id))!;
  assert.ok(cmd.updatedAt >= cmd.createdAt, `updated ${cmd.updatedAt} before created ${cmd.createdAt}`);
  const trail = (await b.trail(id))!;
  assert.equal(trail.map((e) => e.event), ['submit', 'claim-start', 'finish']);
  for (let i = 1; i < trail.length; i++) assert.ok(trail[i]!.at >= trail[i - 1]!.at, `${trail[i]!.event} at ${trail[i]!.at} before ${trail[i - 1]!.event} at ${trail[i - 1]!.at}`);
});

shared('lease expiry runs on every server and is safe twice; a heartbeat keeps a lease', async () => {
  const [a, b] = await two(300);
  const kept = (await a.submit(DELAY)).id;
  const dropped = (await a.submit(DELAY)).id;
  await a.claim('x', 2);
  // Heartbeat one of them until the other has expired; the database's clock decides.
  let expired = 0;
  while (expired === 0) {
    await a.extendLease(kept, 1);
    const [n1, n2] = await Promise.all([a.expireLeases(), b.expireLeases()]);
    expired = n1.length + n2.length;
    if (expired === 0) await new Promise((r) => setTimeout(r, 50));
  }
  assert.is(expired, 1, 'one server expired it, the other changed nothing');
  assert.is((await a.read(dropped))!.error, 'AGENT_LOST');
  assert.is((await b.read(kept))!.state, 'RUNNING');
  assert.equal(await b.expireLeases(), []);
});

shared('schema: migrations recorded; a newer schema is refused, naming both versions', async () => {
  const [a, , url] = await two();
  const { rows } = await a.pool.query<{ version: number }>('SELECT version FROM keel_migrations ORDER BY version');
  assert.equal(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
  await a.pool.query("INSERT INTO keel_migrations (version, what) VALUES ($1, 'from the future')", [SCHEMA_VERSION + 1]);
  try {
    await PgStore.open({ url, leaseTimeoutMs: 1000 });
    assert.unreachable('opened a newer schema');
  } catch (err) {
    assert.instance(err, SchemaTooNewError);
    assert.match((err as Error).message, `version ${SCHEMA_VERSION + 1}`);
    assert.match((err as Error).message, `up to ${SCHEMA_VERSION}`);
  }
});

shared('a database at schema version 1 is migrated to the latest at start, its final commands filled in for retention', async () => {
  const [a, , url] = await two();
  const id = (await a.submit(DELAY)).id;
  await a.claim('x', 1);
  await a.finish('x', id, 1, 'COMPLETED', null, null);
  // Back to what version 1 made.
  await a.pool.query('ALTER TABLE keel_commands DROP COLUMN final_at');
  await a.pool.query('ALTER TABLE keel_commands DROP COLUMN queued'); // and the claim index on it
  await a.pool.query("CREATE INDEX keel_commands_claimable ON keel_commands (priority DESC, ord) WHERE state = 'PENDING'");
  await a.pool.query('DROP FUNCTION keel_count_delta() CASCADE; DROP TABLE keel_counts, keel_count_deltas, keel_event_frames');
  await a.pool.query('DELETE FROM keel_migrations WHERE version > 1');
  const again = await PgStore.open({ url, leaseTimeoutMs: 1000, retention: { ms: 3_600_000, max: 0 } });
  opened.push(again);
  const { rows } = await again.pool.query<{ version: number }>('SELECT version FROM keel_migrations ORDER BY version');
  assert.equal(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
  assert.is((await again.counts()).byState.COMPLETED, 1, 'the commands there before the counts are counted');
  assert.is(await again.forgetExpired(), 1, 'the command final before the migration is known to retention');
  assert.is(await again.read(id), undefined);
});

shared('a lost database connection is a StoreUnavailableError (a 503), and the store recovers when it is back', async () => {
  const proxy = await proxied(await freshDatabase());
  const a = await PgStore.open({ url: proxy.url, leaseTimeoutMs: 60_000 });
  opened.push(a);
  try {
    const id = (await a.submit(DELAY)).id;
    await proxy.cut();
    const r = await a.read(id).then(() => 'read', (err: Error) => err.name);
    assert.is(r, 'StoreUnavailableError');
    assert.is(a.unavailable, 'database unreachable');
    assert.throws(() => a.refuseIfUnavailable(), /database unreachable/);
    await proxy.restore();
    // The pool opens new connections: the next query succeeds, and the store is available again.
    assert.is((await a.read(id))!.state, 'PENDING');
    assert.is(a.unavailable, undefined);
    assert.is((await a.claim('x', 1)).length, 1);
  } finally {
    await proxy.close();
  }
});

shared.after(async () => {
  await stopPostgres();
  await cleanup();
});
shared.run();
