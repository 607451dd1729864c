// The PostgreSQL store's event feed and counts, on a real PostgreSQL with two
// stores (two servers) on one database:
// - the feed hands out every server's transitions once, in seq order, each
//   with the command as it was right after it;
// - a seq committed out of order (a transaction that took a lower one is
//   still open) holds the feed back until that transaction commits (then
//   both come, in order) or rolls back (then the gap is passed);
// - counts() agree with a GROUP BY over the table through submits,
//   transitions, retention and folds run by both stores at once, and rows
//   changed by another writer (the trigger's part).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import pg, { type Client } from 'pg';
import type { Command, EventType } from '../state/command-fsm.ts';
import { PgEventFeed } from '../state/pg/event-feed.ts';
import { PgStore } from '../state/pg/pg-store.ts';
import { freshDatabase, stopPostgres } from './support/postgres.ts';

const test = suite('postgres event feed and counts');
const DELAY = { type: 'DELAY' as const, payload: { ms: 5 } };

const opened: Array<{ close(): Promise<void> }> = [];
test.after.each(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => {})));
});
test.after(async () => {
  await stopPostgres();
});

async function two(): Promise<[PgStore, PgStore, string]> {
  const url = await freshDatabase();
  const a = await PgStore.open({ url, leaseTimeoutMs: 60_000 });
  const b = await PgStore.open({ url, leaseTimeoutMs: 60_000 });
  opened.push(a, b);
  return [a, b, url];
}

interface Seen {
  seq: number;
  event: EventType;
  cmd: Command;
}

/** A feed from the database's last seq now. */
async function feedOn(store: PgStore): Promise<{ feed: PgEventFeed; seen: Seen[] }> {
  const feed = new PgEventFeed(store.pool, await store.maxSeq());
  const seen: Seen[] = [];
  feed.onEvent((cmd, event, seq) => seen.push({ cmd, event, seq }));
  feed.start();
  opened.push({ close: async () => feed.stop() });
  return { feed, seen };
}

async function allSeqs(store: PgStore): Promise<number[]> {
  const { rows } = await store.pool.query<{ seq: number }>('SELECT seq::float8 AS seq FROM keel_events ORDER BY seq');
  return rows.map((r) => r.seq);
}

test('every server\'s transitions, once each, in seq order, each with the command as it was right after it', async () => {
  const [a, b] = await two();
  const { feed, seen } = await feedOn(a);
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push((await (i % 2 ? a : b).submit(DELAY)).id);
  const claimed = [...(await b.claim('agent-b', 3)), ...(await a.claim('agent-a', 3))];
  assert.is(claimed.length, 6);
  await Promise.all(claimed.map((c, i) => (i % 2 ? a : b).finish(c.agentId!, c.id, c.attempt, 'COMPLETED', { i }, null)));
  await feed.catchUp();
  assert.equal(seen.map((s) => s.seq), await allSeqs(a), 'every seq, in order');
  assert.is(seen.length, 18);
  for (const s of seen) {
    // By the time the feed read them, every command was COMPLETED: the frame is the command of its moment.
    const want = s.event === 'submit' ? 'PENDING' : s.event === 'claim-start' ? 'RUNNING' : 'COMPLETED';
    assert.is(s.cmd.state, want, `${s.event} of ${s.cmd.id}`);
  }
});

/** A transaction that takes the next seq for `id` (as a transition's statement would) and stays open. */
async function holdSeq(url: string, id: string): Promise<{ slow: Client; held: number }> {
  const slow = new pg.Client({ connectionString: url });
  await slow.connect();
  opened.push({ close: () => slow.end() });
  await slow.query('BEGIN');
  await slow.query('UPDATE keel_commands SET version = version WHERE id = $1', [id]);
  const { rows } = await slow.query<{ seq: string }>("INSERT INTO keel_events (command_id, event, to_state, at) VALUES ($1, 'due', 'PENDING', 0) RETURNING seq", [id]);
  return { slow, held: Number(rows[0]!.seq) };
}

test('a seq committed out of order holds the feed back until the transaction that took the lower one commits', async () => {
  const [a, , url] = await two();
  const id = (await a.submit(DELAY)).id;
  const { feed, seen } = await feedOn(a);
  const { slow, held } = await holdSeq(url, id);
  const later = (await a.submit(DELAY)).id;
  await feed.catchUp();
  assert.equal(seen.map((s) => s.cmd.id), [], `nothing past seq ${held}, still open`);
  await slow.query('COMMIT');
  await feed.catchUp();
  assert.equal(seen.map((s) => s.seq), [held, held + 1], 'both, in seq order');
  assert.equal(seen.map((s) => s.cmd.id), [id, later]);
});

test('a gap left by a rolled-back transaction is passed once it has ended', async () => {
  const [a, , url] = await two();
  const id = (await a.submit(DELAY)).id;
  const { feed, seen } = await feedOn(a);
  const { slow } = await holdSeq(url, id);
  const later = (await a.submit(DELAY)).id;
  await feed.catchUp();
  assert.is(seen.length, 0, 'held back while the transaction is open');
  await slow.query('ROLLBACK');
  // The rollback sends no notification: the feed finds out on its own.
  for (let i = 0; i < 200 && seen.length === 0; i++) await feed.catchUp();
  assert.equal(seen.map((s) => s.cmd.id), [later]);
  assert.equal(seen.map((s) => s.seq), (await allSeqs(a)).slice(-1));
});

test('counts() agree with a GROUP BY through submits, claims, finishes, cancels, retention and folds on two servers at once', async () => {
  const url = await freshDatabase();
  const a = await PgStore.open({ url, leaseTimeoutMs: 60_000, retention: { ms: 3_600_000, max: 20 } });
  const b = await PgStore.open({ url, leaseTimeoutMs: 60_000, retention: { ms: 3_600_000, max: 20 } });
  opened.push(a, b);
  const groupBy = async (): Promise<Record<string, number>> => {
    const { rows } = await a.pool.query<{ state: string; n: number }>('SELECT state, count(*)::int AS n FROM keel_commands GROUP BY state');
    return Object.fromEntries(rows.map((r) => [r.state, r.n]));
  };
  const nonZero = (c: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(c).filter(([, n]) => n !== 0));
  for (let round = 0; round < 5; round++) {
    await Promise.all([
      a.submitMany(Array.from({ length: 10 }, () => DELAY)),
      b.submit({ type: 'HTTP_GET_JSON', payload: { url: 'http://127.0.0.1:9/' } }),
      b.submit({ ...DELAY, opts: { runAt: Date.now() + 3_600_000 } }),
      a.foldCounts(),
      b.foldCounts(),
    ]);
    const got = [...(await a.claim('x', 6)), ...(await b.claim('y', 3))];
    await Promise.all(got.map((c, i) => (i % 3 === 0 ? a.cancel(c.id) : (i % 2 ? a : b).finish(c.agentId!, c.id, c.attempt, i % 2 ? 'COMPLETED' : 'FAILED', null, i % 2 ? null : 'E')).then(() => (i % 4 === 0 ? b.foldCounts() : undefined))));
    await Promise.all([a.forgetExpired(), b.forgetExpired(), a.foldCounts()]);
    const [ca, cb] = [await a.counts(), await b.counts()];
    const want = await groupBy();
    assert.equal(nonZero(ca.byState), want, `round ${round}: counts on a`);
    assert.equal(nonZero(cb.byState), want, `round ${round}: counts on b`);
    const { rows } = await a.pool.query<{ type: string; n: number }>("SELECT type, count(*)::int AS n FROM keel_commands WHERE state = 'PENDING' GROUP BY type");
    assert.equal(nonZero(ca.pendingByType), Object.fromEntries(rows.map((r) => [r.type, r.n])), `round ${round}: pending by type`);
  }
  assert.ok((await groupBy()).COMPLETED! + (await groupBy()).FAILED! <= 20, 'retention ran');
  // A writer that is not a keel of this version (an older one in a rolling upgrade, a hand) is counted by the trigger.
  const hand = new pg.Client({ connectionString: url });
  await hand.connect();
  try {
    await hand.query("INSERT INTO keel_commands (id, state, version, type, priority, attempt, cmd) VALUES ('by-hand', 'PENDING', 1, 'DELAY', 0, 0, '{}')");
    await hand.query("UPDATE keel_commands SET state = 'FAILED' WHERE id = 'by-hand'");
    await hand.query("DELETE FROM keel_commands WHERE id IN (SELECT id FROM keel_commands WHERE state = 'COMPLETED' LIMIT 2)");
    await hand.query("UPDATE keel_commands SET state = 'RUNNING' WHERE state = 'PENDING'");
  } finally {
    await hand.end();
  }
  assert.equal(nonZero((await b.counts()).byState), await groupBy(), 'changes made by hand');
  await a.foldCounts();
  const { rows } = await a.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM keel_count_deltas');
  assert.is(rows[0]!.n, 0, 'a fold leaves no delta behind');
});

test.run();
