// The agent's work loop against a scripted server: a slot is held from claim
// until execution ends, so the next claim waits neither for the last
// command's finish answer nor for its `done` record, and the finish call is
// made before the claim (to ride in it); at most `concurrency` commands are
// reporting behind; one claim answer's commands are journaled `executing` in
// one write; one that comes during shutdown is given back unjournaled;
// every ledger step of each command still comes in order. And the lease
// keeper's first heartbeat: at once when reconciling (the server has not
// said its lease timeout), at a third of the timeout after a fresh claim.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LeaseKeeper } from '../lib/agent/leases.ts';
import { WorkLoop } from '../lib/agent/work-loop.ts';
import type { AgentContext } from '../lib/agent/command-steps.ts';
import { createLogger } from '../lib/log.ts';
import type { Assignment, ClaimResponse, FinishItem, HeartbeatResponse, ItemResult, LeaseRef } from '../lib/protocol.ts';
import type { ServerClient } from '../lib/agent/server-client.ts';
import { Ledger, type LedgerRecord } from '../state/ledger.ts';
import { journalRecords } from './support/journal-files.ts';
import { LogBuffer } from './support/server-harness.ts';
import { cleanup, tempDir } from './support/processes.ts';

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(err: Error): void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** Just enough of ServerClient, each call recorded; finish answers when the test says. */
class ScriptedClient {
  readonly claims: number[] = [];
  /** For each claim, the commands whose finish had been called before it. */
  readonly finishedBeforeClaim: string[][] = [];
  readonly heartbeats: LeaseRef[][] = [];
  /** One server: the list never moves. */
  readonly servers = { onMove: (): (() => void) => () => {} };
  readonly finishes = new Map<string, Deferred<ItemResult[]>>();
  /** Answer every finish as it is made (else only when the test says). */
  answerAtOnce = false;
  /** Called as each finish is made, before anything else runs. */
  onFinish: (id: string) => void = () => {};
  readonly released: LeaseRef[] = [];
  /** Every claim is answered here: none to resume at shutdown. */
  readonly resuming = false;
  private readonly work: Assignment[] = [];
  private parked: Deferred<void> | undefined;
  private events: Array<{ test: () => boolean; resolve: () => void }> = [];

  give(...a: Assignment[]): void {
    this.work.push(...a);
    this.parked?.resolve();
  }

  /** Resolves once `test` holds after some call. */
  until(test: () => boolean): Promise<void> {
    if (test()) return Promise.resolve();
    return new Promise((resolve) => this.events.push({ test, resolve }));
  }

  async claim(max: number, _waitMs: number, signal: AbortSignal): Promise<ClaimResponse> {
    this.claims.push(max);
    this.finishedBeforeClaim.push([...this.finishes.keys()]);
    this.changed();
    while (this.work.length === 0) {
      this.parked = deferred();
      const aborted = new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
      await Promise.race([this.parked.promise, aborted]);
    }
    return { leaseTimeoutMs: 30_000, commands: this.work.splice(0, max) };
  }

  flushRiders(): void {}

  async release(items: LeaseRef[]): Promise<ItemResult[]> {
    this.released.push(...items);
    this.changed();
    return items.map((it) => ({ id: it.id, ok: true }));
  }

  finish(items: FinishItem[]): Promise<ItemResult[]> {
    const d = deferred<ItemResult[]>();
    this.finishes.set(items[0]!.id, d);
    this.onFinish(items[0]!.id);
    if (this.answerAtOnce) d.resolve(items.map((it) => ({ id: it.id, ok: true })));
    this.changed();
    return d.promise;
  }

  async heartbeat(leases: LeaseRef[]): Promise<HeartbeatResponse> {
    this.heartbeats.push(leases);
    this.changed();
    return { leaseTimeoutMs: 30_000, revoked: [], cancel: [] };
  }

  /** The finish gives up without an answer, as the real client does when the agent halts. */
  failFinish(id: string, err: Error): void {
    this.finishes.get(id)!.reject(err);
  }

  answerFinish(id: string): void {
    this.finishes.get(id)!.resolve([{ id, ok: true }]);
  }

  private changed(): void {
    this.events = this.events.filter((e) => (e.test() ? (e.resolve(), false) : true));
  }
}

/** Every record written to the ledger, synced or not, in order. */
function recordWrites(ledger: Ledger): LedgerRecord[] {
  const written: LedgerRecord[] = [];
  const write = ledger.write.bind(ledger);
  const writeUnsynced = ledger.writeUnsynced.bind(ledger);
  ledger.write = (...recs: LedgerRecord[]) => (written.push(...recs), write(...recs));
  ledger.writeUnsynced = (...recs: LedgerRecord[]) => (written.push(...recs), writeUnsynced(...recs));
  return written;
}

const assignment = (n: number): Assignment => ({ id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, type: 'DELAY', payload: { ms: 0 }, lease: 1 });
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const test = suite('work loop');
test.after(cleanup);

test('concurrency 1: the next claim goes out while the last finish is unanswered; at most one reports behind', async () => {
  const { ledger, client, loop, ctx, stopping, halt } = await loopOnLedger();
  const written = recordWrites(ledger);
  const [c1, c2, c3] = [assignment(1), assignment(2), assignment(3)];
  client.give(c1, c2, c3);
  const running = loop.run();

  // c1 ran and waits for its finish; c2 was claimed and ran meanwhile.
  await client.until(() => client.finishes.has(c1.id) && client.finishes.has(c2.id));
  assert.equal(client.claims, [1, 1]);
  assert.equal(client.finishedBeforeClaim, [[], [c1.id]], "c1's finish was called before the claim for c2, to ride in it");
  assert.is(ledger.get(c1.id)!.step, 'done');
  assert.is(ledger.get(c2.id)!.step, 'done');
  // Two unreported: the loop waits, though its one slot is free.
  for (let i = 0; i < 5; i++) await nextTurn();
  assert.equal(client.claims, [1, 1], 'no third claim while two finishes are out');

  client.answerFinish(c1.id);
  await client.until(() => client.finishes.has(c3.id));
  assert.equal(client.claims, [1, 1, 1]);
  assert.is(ledger.get(c1.id), undefined, 'c1 settled (reported)');
  client.answerFinish(c2.id);
  client.answerFinish(c3.id);

  await client.until(() => client.claims.length === 4);
  stopping.abort();
  await running;
  await loop.drain(5000);
  halt.abort();
  ctx.leases.stop();
  await ledger.close();
  assert.equal(ledger.open(), []);
  for (const c of [c1, c2, c3]) {
    assert.equal(written.filter((r) => 'id' in r && r.id === c.id).map((r) => r.t), ['executing', 'done', 'reported'], `ledger steps of ${c.id}`);
  }
});

test('concurrency 4: one claim answer is journaled `executing` in one write; one claim asks for every slot a finished wave frees', async () => {
  const { ledger, client, loop, shutdown } = await loopOnLedger(4);
  const writes: string[][] = [];
  const write = ledger.write.bind(ledger);
  ledger.write = (...recs: LedgerRecord[]) => (writes.push(recs.map((r) => r.t)), write(...recs));
  const wave = [1, 2, 3, 4].map(assignment);
  client.give(...wave);
  const running = loop.run();
  await client.until(() => wave.every((a) => client.finishes.has(a.id)) && client.claims.length === 2);
  assert.equal(client.claims, [4, 4], 'the whole wave ended: all four slots asked for at once');
  assert.equal(client.finishedBeforeClaim[1]!.sort(), wave.map((a) => a.id).sort(), 'the whole wave is reported in that claim');
  assert.equal(writes[0], ['executing', 'executing', 'executing', 'executing'], 'one write for the whole answer');
  for (const a of wave) client.answerFinish(a.id);
  await shutdown(running);
});

test('a claim answered once shutdown began: its commands are given back, nothing journaled or run', async () => {
  const { ledger, client, loop, ctx, stopping } = await loopOnLedger(2);
  // The answer arrives just after the stop: the claim resolves, the signal has aborted.
  const real = client.claim.bind(client);
  client.claim = async (max, waitMs, signal) => {
    const answer = await real(max, waitMs, signal);
    stopping.abort();
    return answer;
  };
  const [c1, c2] = [assignment(1), assignment(2)];
  client.give(c1, c2);
  await loop.run();
  await loop.drain(5000);
  assert.equal(client.released, [{ id: c1.id, lease: 1 }, { id: c2.id, lease: 1 }]);
  assert.equal(ledger.open(), []);
  assert.is(client.finishes.size, 0);
  ctx.leases.stop();
  await ledger.close();
});


/** The seq of the ledger record `t` of command `id`, read from the journal file as written. */
function seqInFile(dir: string, t: string, id: string): number | undefined {
  return journalRecords<LedgerRecord>(dir).find(({ rec }) => rec.t === t && 'id' in rec && rec.id === id)?.seq;
}

/** A work loop on a fresh ledger and a scripted server, its log kept. */
async function loopOnLedger(concurrency = 1): Promise<{
  dir: string; ledger: Ledger; client: ScriptedClient; logs: LogBuffer; loop: WorkLoop; ctx: AgentContext; stopping: AbortController; halt: AbortController;
  /** Stop the loop `running` as a SIGTERM does, let its work drain, and close the ledger. */
  shutdown(running: Promise<void>): Promise<void>;
}> {
  const dir = tempDir();
  const ledger = await Ledger.open(dir);
  const client = new ScriptedClient();
  const logs = new LogBuffer();
  const log = createLogger({ role: 'agent' }, logs as unknown as NodeJS.WritableStream);
  const stopping = new AbortController();
  const halt = new AbortController();
  const leases = new LeaseKeeper(client as unknown as ServerClient, log);
  const ctx: AgentContext = {
    ledger, client: client as unknown as ServerClient, leases, log, http: { timeoutMs: 1000, maxBodyBytes: 1024 }, stopping: stopping.signal, halt: halt.signal,
  };
  const loop = new WorkLoop(ctx, { concurrency, claimWaitMs: 10_000 });
  const shutdown = async (running: Promise<void>): Promise<void> => {
    stopping.abort();
    await running;
    await loop.drain(5000);
    leases.stop();
    await ledger.close();
  };
  return { dir, ledger, client, logs, loop, ctx, stopping, halt, shutdown };
}

test('a finish answered at once: `done` is written, never fsynced on its own; the next `executing` fdatasync covers it', async () => {
  const { dir, ledger, client, logs, loop, shutdown } = await loopOnLedger();
  const journal = ledger.durable.journal;
  journal.deferMs = 10 * 60_000; // `reported` goes only with the next flush: no timer's fdatasync in the count
  let syncs = 0;
  const sync = ledger.sync.bind(ledger);
  ledger.sync = () => (syncs++, sync());
  client.answerAtOnce = true;
  const cs = [1, 2, 3].map(assignment);
  client.give(...cs);
  const start = journal.stats.fsyncs;
  const running = loop.run();
  await client.until(() => client.claims.length === 4);

  assert.is(journal.stats.fsyncs - start, 3, 'one fdatasync per command: its `executing`');
  assert.is(syncs, 0, 'no `done` synced on its own');
  assert.ok(!logs.lines.some((l) => l.msg === 'done synced'));
  for (const c of cs.slice(0, 2)) assert.ok(seqInFile(dir, 'done', c.id)! <= journal.durableSeq, `${c.id}: \`done\` durable with the next \`executing\``);
  const last = seqInFile(dir, 'done', cs[2]!.id);
  assert.ok(last !== undefined && last > journal.durableSeq, 'the last `done` is written to the file and not yet synced');

  await sync();
  await shutdown(running);
});

test('a finish not answered in time: `done` is fsynced while the finish waits, before the agent could forget the result', async () => {
  const { dir, ledger, client, logs, loop, shutdown } = await loopOnLedger();
  const journal = ledger.durable.journal;
  const c1 = assignment(1);
  let atFinish: { durableSeq: number; fsyncs: number } | undefined;
  client.onFinish = () => (atFinish = { durableSeq: journal.durableSeq, fsyncs: journal.stats.fsyncs });
  client.give(c1);
  const running = loop.run();
  await client.until(() => client.finishes.has(c1.id));
  const doneSeq = seqInFile(dir, 'done', c1.id)!;
  assert.ok(doneSeq > atFinish!.durableSeq, '`done` is written, not synced, when the finish goes out');

  const synced = await logs.waitFor((l) => l.msg === 'done synced' && l.id === c1.id, 10_000, 'the done synced line');
  assert.match(String(synced.why), /not answered within/);
  assert.ok(journal.durableSeq >= doneSeq, '`done` is durable');
  assert.is(journal.stats.fsyncs, atFinish!.fsyncs + 1, 'one fdatasync for it');
  assert.is(ledger.get(c1.id)?.step, 'done', 'the entry stays open until the server answers');

  client.answerFinish(c1.id);
  await logs.waitFor((l) => l.msg === 'reported' && l.id === c1.id, 10_000);
  await shutdown(running);
  assert.equal(ledger.open(), []);
});

test('halted before the finish is answered: `done` is fsynced before the agent lets the result go', async () => {
  const { dir, ledger, client, loop, ctx, stopping, halt } = await loopOnLedger();
  const journal = ledger.durable.journal;
  const c1 = assignment(1);
  client.give(c1);
  const running = loop.run();
  await client.until(() => client.finishes.has(c1.id));
  const doneSeq = seqInFile(dir, 'done', c1.id)!;
  assert.ok(doneSeq > journal.durableSeq, '`done` is written, not synced, when the finish goes out');

  // Well inside the 50 ms the agent would otherwise wait before syncing on its own.
  stopping.abort();
  halt.abort(new Error('halted'));
  client.failFinish(c1.id, new Error('halted'));
  await running;
  await loop.drain(5000);
  assert.ok(journal.durableSeq >= doneSeq, '`done` is durable once the work is let go');
  assert.is(ledger.get(c1.id)?.step, 'done', 'the entry stays for the next start to report');
  ctx.leases.stop();
  await ledger.close();
});

test.run();

// --- LeaseKeeper ----------------------------------------------------------------

const beats = suite('lease keeper: the first heartbeat');

/** The delays of the timers `fn` sets. */
function timersSetBy(fn: () => void): number[] {
  const delays: number[] = [];
  const real = globalThis.setTimeout;
  globalThis.setTimeout = ((cb: () => void, ms?: number) => (delays.push(ms ?? 0), real(cb, ms))) as typeof setTimeout;
  try {
    fn();
  } finally {
    globalThis.setTimeout = real;
  }
  return delays;
}

beats('before the server has said its lease timeout (reconciling), a held lease is beaten at once', async () => {
  const client = new ScriptedClient();
  const keeper = new LeaseKeeper(client as unknown as ServerClient, () => {});
  assert.equal(timersSetBy(() => keeper.hold({ id: 'c1', lease: 3 })), [0]);
  const alive = setInterval(() => {}, 1000); // the keeper's timers are unref'd
  await client.until(() => client.heartbeats.length === 1);
  clearInterval(alive);
  assert.equal(client.heartbeats[0], [{ id: 'c1', lease: 3 }]);
  keeper.stop();
});

beats('after a claim answer gave the timeout, a fresh lease is first beaten a third of it later', () => {
  const client = new ScriptedClient();
  const keeper = new LeaseKeeper(client as unknown as ServerClient, () => {});
  keeper.setTimeoutMs(30_000);
  assert.equal(timersSetBy(() => keeper.hold({ id: 'c1', lease: 1 })), [10_000]);
  assert.equal(timersSetBy(() => keeper.hold({ id: 'c2', lease: 1 })), [], 'one timer for all leases');
  keeper.stop();
});

beats.run();
