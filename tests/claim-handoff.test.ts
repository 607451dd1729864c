// A claim parked on the server is handed a command in the very group commit
// that made the command PENDING (submit, release, expiry): one fdatasync for
// both records, PENDING before RUNNING (claim-and-start) in the journal, and
// neither answer out before that batch is durable. Then the edges: many
// commands and several parked claims in one batch (each claim's max), a claim
// whose client went away, a retried claim, a cancel in between, a failing
// journal, and a lost answer over HTTP: a resuming claim finds it, or it
// expires FAILED AGENT_LOST (the price of claim-and-start).
// fdatasync is held at a gate where a test needs "written but not yet durable".
import fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CommandStore, type Command } from '../state/command-store.ts';
import { ClaimWaiters } from '../lib/server/waiters.ts';
import { call, claim, cleanup, closeAll, getCommand, startTestServer, submit, waitUntil } from './support/server-harness.ts';
import { tempDir } from './support/processes.ts';

type Sync = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => void;

/** Holds every fdatasync until released; `next()` resolves when one is held. */
function fsyncGate() {
  const real = fs.fdatasync;
  const held: Array<() => void> = [];
  let onHeld: (() => void) | undefined;
  (fs as { fdatasync: Sync }).fdatasync = (fd, cb) => {
    held.push(() => real(fd, cb));
    onHeld?.();
  };
  return {
    next: (): Promise<void> => (held.length > 0 ? Promise.resolve() : new Promise<void>((r) => (onHeld = r))),
    releaseOne(): void {
      onHeld = undefined;
      held.shift()!();
    },
    restore(): void {
      (fs as { fdatasync: Sync }).fdatasync = real;
      for (const go of held.splice(0)) go();
    },
  };
}

const never = (): AbortSignal => new AbortController().signal;
const DELAY = { type: 'DELAY', payload: { ms: 0 } } as const;
const ids = (cmds: Command[]): string[] => cmds.map((c) => c.id);

async function openStore(dir = tempDir('keel-handoff-')): Promise<{ store: CommandStore; waiters: ClaimWaiters; dir: string }> {
  const store = await CommandStore.open(dir, { noLock: true });
  return { store, waiters: new ClaimWaiters(store), dir };
}

/** Submit without awaiting: its record is queued when this returns. */
function submitNow(store: CommandStore): { id: Promise<string> } {
  return { id: store.submit(DELAY).then((r) => r.id) };
}

const store = suite('claim hand-off: store and waiters');
store.after(cleanup);

store('a parked claim gets a command submitted while it waits, in the same fdatasync, PENDING before RUNNING', async () => {
  const { store, waiters, dir } = await openStore();
  const parked = waiters.claim('a1', 1, 30_000, never);
  assert.is(waiters.size, 1);
  const stats = { ...store.durable.journal.stats };
  const id = await submitNow(store).id;
  const got = await parked;
  assert.equal(got.map((c) => [c.id, c.state, c.agentId, c.attempt]), [[id, 'RUNNING', 'a1', 1]]);
  assert.is(store.durable.journal.stats.fsyncs - stats.fsyncs, 1, 'submit and claim shared one fdatasync');
  assert.is(store.durable.journal.stats.records - stats.records, 2);
  assert.is(waiters.size, 0);
  await store.close();
  // Replay re-checks every record's from-state: PENDING must come first.
  const again = await CommandStore.open(dir, { noLock: true });
  assert.equal([again.get(id)!.state, again.get(id)!.agentId], ['RUNNING', 'a1']);
  await again.close();
});

store('neither the submit nor the claim is answered before their batch is durable', async () => {
  const { store, waiters } = await openStore();
  const gate = fsyncGate();
  try {
    const answered: string[] = [];
    const parked = waiters.claim('a1', 1, 30_000, never).then((c) => (answered.push('claim'), c));
    const sub = submitNow(store).id.then((id) => (answered.push('submit'), id));
    await gate.next();
    // Give every continuation that could run a chance to: nothing may answer yet.
    await new Promise((r) => setImmediate(r));
    assert.equal(answered, []);
    gate.releaseOne();
    const [id, got] = await Promise.all([sub, parked]);
    assert.equal(ids(got), [id]);
    assert.equal(answered.sort(), ['claim', 'submit']);
  } finally {
    gate.restore();
    await store.close();
  }
});

store('many commands in one batch: parked claims take them in order, each up to its max, in one fdatasync', async () => {
  const { store, waiters } = await openStore();
  const a = waiters.claim('a', 2, 30_000, never);
  const b = waiters.claim('b', 1, 30_000, never);
  const c = waiters.claim('c', 3, 30_000, never);
  const fsyncs = store.durable.journal.stats.fsyncs;
  const subs = [submitNow(store), submitNow(store), submitNow(store), submitNow(store)];
  const [ia, ib, ic, id] = await Promise.all(subs.map((s) => s.id));
  assert.equal(ids(await a), [ia, ib]);
  assert.equal(ids(await b), [ic]);
  assert.equal(ids(await c), [id], 'c answers with what its batch held, not waiting for more');
  assert.is(store.durable.journal.stats.fsyncs - fsyncs, 1);
  assert.is(waiters.size, 0);
  await store.close();
});

store('a claim takes no more once its batch is being written: a later command goes to the next claim', async () => {
  const { store, waiters } = await openStore();
  const gate = fsyncGate();
  try {
    const a = waiters.claim('a', 5, 30_000, never);
    const x = submitNow(store);
    await gate.next(); // x and a's claim are written, their fdatasync is out
    const b = waiters.claim('b', 5, 30_000, never);
    const y = submitNow(store);
    gate.releaseOne();
    assert.equal(ids(await a), [await x.id]);
    await gate.next();
    gate.releaseOne();
    assert.equal(ids(await b), [await y.id]);
  } finally {
    gate.restore();
    await store.close();
  }
});

store('a claim whose client went away takes nothing: the command passes to the next claim', async () => {
  const { store, waiters } = await openStore();
  const ac = new AbortController();
  const gone = waiters.claim('gone', 1, 30_000, () => ac.signal);
  const here = waiters.claim('here', 1, 30_000, never);
  ac.abort();
  assert.equal(await gone, []);
  const id = await submitNow(store).id;
  assert.equal(ids(await here), [id]);
  assert.is(store.get(id)!.agentId, 'here');
  await store.close();
});

store('a claim retried after a lost answer takes nothing again; the store lists what the agent holds', async () => {
  const { store, waiters } = await openStore();
  const parked = waiters.claim('a1', 1, 30_000, never);
  const records = store.durable.journal.lastSeq;
  const x = submitNow(store);
  assert.equal((await parked).map((c) => [c.id, c.attempt]), [[await x.id, 1]]);
  assert.equal(await waiters.claim('a1', 1, 0, never), []);
  const held = [...((await store.heldBy()).get('a1') ?? [])].map((id) => store.get(id)!);
  assert.equal(held.map((c) => [c.id, c.state, c.attempt]), [[await x.id, 'RUNNING', 1]]);
  assert.is(store.durable.journal.lastSeq - records, 2, 'submit and one claim');
  await store.close();
});

store('a claim that parks after a submit is queued, before it is durable, takes it at once', async () => {
  const { store, waiters } = await openStore();
  const fsyncs = store.durable.journal.stats.fsyncs;
  const x = submitNow(store);
  const got = await waiters.claim('late', 1, 30_000, never);
  assert.equal(ids(got), [await x.id]);
  assert.is(store.durable.journal.stats.fsyncs - fsyncs, 1);
  await store.close();
});

store('a cancel right after the hand-off is flagged for the agent (the command is RUNNING), and the journal replays', async () => {
  const { store, waiters, dir } = await openStore();
  const parked = waiters.claim('a1', 1, 30_000, never);
  const x = submitNow(store);
  const id = await x.id;
  const r = await store.cancel(id);
  assert.is(r.kind, 'next');
  // The claim was answered as it was made; the agent hears of the cancel on its next heartbeat.
  assert.equal(ids(await parked), [id]);
  await store.close();
  const again = await CommandStore.open(dir, { noLock: true });
  assert.equal([again.get(id)!.state, again.get(id)!.cancelRequested], ['RUNNING', true]);
  await again.close();
});

store('a release makes a command PENDING: a parked claim takes it in the same fdatasync', async () => {
  const { store, waiters } = await openStore();
  const id = await submitNow(store).id;
  const [held] = await store.claim('a1', 1);
  const parked = waiters.claim('a2', 1, 30_000, never);
  const fsyncs = store.durable.journal.stats.fsyncs;
  assert.is((await store.release('a1', id, held!.attempt)).kind, 'next');
  const got = await parked;
  assert.equal(got.map((c) => [c.id, c.state, c.agentId, c.attempt]), [[id, 'RUNNING', 'a2', 2]]);
  assert.is(store.durable.journal.stats.fsyncs - fsyncs, 1);
  await store.close();
});

store('a failing journal: the submit and the parked claim both fail, neither is answered as a success', async () => {
  const { store, waiters } = await openStore();
  const real = fs.fdatasync;
  (fs as { fdatasync: Sync }).fdatasync = (_fd, cb) => cb(Object.assign(new Error('EIO: injected'), { code: 'EIO' }));
  try {
    const parked = waiters.claim('a1', 1, 30_000, never);
    const sub = submitNow(store).id;
    const [s, c] = await Promise.allSettled([sub, parked]);
    assert.is(s.status, 'rejected');
    assert.is(c.status, 'rejected');
    assert.match(String((c as PromiseRejectedResult).reason), /EIO/);
    assert.is(waiters.size, 0);
  } finally {
    (fs as { fdatasync: Sync }).fdatasync = real;
    await store.close();
  }
});

// --- over HTTP ------------------------------------------------------------------

const http = suite('claim hand-off: over HTTP, in one fdatasync [file store only]');
http.after(async () => {
  await closeAll();
  await cleanup();
});

http('a waiting agent is answered from the submit\'s own fdatasync, and its lease is timed', async () => {
  const s = await startTestServer();
  const waiting = claim(s.url, 'agent-lp', { waitMs: 30_000 });
  await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the claim to park');
  const scrape = async (): Promise<string> => (await call<string>(s.url, 'GET', '/metrics')).text;
  assert.match(await scrape(), /^keel_claims_waiting 1$/m);
  const fsyncs = s.keel.ctx.store.durable.journal.stats.fsyncs;
  const id = await submit(s.url, DELAY);
  const r = await waiting;
  assert.match(await scrape(), /^keel_claims_waiting 0$/m);
  assert.equal(r.body.commands.map((c) => [c.id, c.lease]), [[id, 1]]);
  assert.is(s.keel.ctx.store.durable.journal.stats.fsyncs - fsyncs, 1);
  assert.is(s.keel.ctx.leases.size, 1);
});

/** Park a claim for `agentId`, then lose its answer: the client goes away while the hand-off is being written. */
async function loseAnswer(s: Awaited<ReturnType<typeof startTestServer>>, agentId: string): Promise<string> {
  const ac = new AbortController();
  const gone = claim(s.url, agentId, { waitMs: 30_000, signal: ac.signal }).catch((e: Error) => e);
  await waitUntil(() => s.keel.ctx.claimWaiters.size === 1, 5000, 'the claim to park');
  const gate = fsyncGate();
  try {
    const sub = submit(s.url, DELAY);
    await gate.next(); // handed to the agent, not yet durable
    ac.abort();
    assert.instance(await gone, Error);
    gate.releaseOne();
    return await sub;
  } finally {
    gate.restore();
  }
}

http('an answer lost with its client: a resuming claim lists the command; given back, it goes to the next claim', async () => {
  const s = await startTestServer();
  const id = await loseAnswer(s, 'agent-gone');
  assert.equal([(await getCommand(s.url, id)).agentId, (await getCommand(s.url, id)).status], ['agent-gone', 'RUNNING']);
  const resumed = await claim(s.url, 'agent-gone', { max: 0, resume: true });
  assert.equal(resumed.body.held!.map((c) => [c.id, c.lease]), [[id, 1]]);
  assert.is((await call(s.url, 'POST', '/agent/release', { agentId: 'agent-gone', items: [{ id, lease: 1 }] })).status, 200);
  const next = await claim(s.url, 'agent-next', { waitMs: 30_000 });
  assert.equal(next.body.commands.map((c) => [c.id, c.lease]), [[id, 2]]);
});

http('an answer lost with its client, and the agent never comes back: FAILED AGENT_LOST once the lease runs out', async () => {
  const s = await startTestServer({ leaseTimeoutMs: 300 });
  const id = await loseAnswer(s, 'agent-gone');
  const v = await getCommand(s.url, id, '?wait=10s');
  assert.equal([v.status, v.error, v.attempt], ['FAILED', 'AGENT_LOST', 1]);
});

store.run();
http.run();
