// One command's way through the ledger (docs/design.md, "Recovery: the agent"):
//   claim answer (the server has it RUNNING) -> executing(startedAt) -> execute
//   -> done, written (not synced) before the finish goes out -> reported
// `executing` is durable before the work runs: on restart, no entry proves the
// command never began, and an `executing` one that it may have. The outcome's
// `done` record is written, then its finish sent; an answer settles the
// command (the server's record is the durable one), and `done` is fsynced
// only if the answer is slow to come. The outcome is held in memory until
// the server answered. Crash points name the gaps between these steps.
// The way splits in two where execution ends: up to there the command holds
// one of the agent's execution slots (beginAll, runExecuting); journaling its
// outcome and reporting it (settle) need no slot, so the work loop claims the
// next command meanwhile, and the finish rides in that claim.
import { crashPoint } from '../../state/crash-points.ts';
import { currentMoment, momentFromWall, monotonicMs, type Moment } from '../clock.ts';
import type { Ledger, LedgerEntry, LedgerRecord } from '../../state/ledger.ts';
import { execute, type Execution, type HttpGetOptions } from './executors/index.ts';
import { noResponse } from './executors/http-get-json.ts';
import type { Logger } from '../log.ts';
import type { Assignment, FinishItem, ItemResult, LeaseRef } from '../protocol.ts';
import { RequestRejectedError, type ServerClient } from './server-client.ts';
import { WorkAborted, type LeaseKeeper } from './leases.ts';

export interface AgentContext {
  ledger: Ledger;
  client: ServerClient;
  leases: LeaseKeeper;
  log: Logger & { error: Logger };
  http: HttpGetOptions;
  /** Aborts when shutdown begins: work not yet begun is given back, not run. */
  stopping: AbortSignal;
  /**
   * Aborts just before the process exits: server calls still retrying give
   * up, and the ledger keeps their entries for the next start to reconcile.
   */
  halt: AbortSignal;
}

/** A command whose execution has ended, its outcome not yet journaled: settle() it. */
export interface Executed {
  entry: LedgerEntry;
  exec: Execution;
}

/** The commands of one claim answer, journaled `executing` and ready to run. */
export interface Begun {
  entries: LedgerEntry[];
  /** When they began, on both clocks. */
  at: Moment;
}

/**
 * The commands of one claim answer, RUNNING on the server: journal
 * `executing` for all of them (one fdatasync), and only then may they run.
 */
export async function beginAll(ctx: AgentContext, claimed: readonly Assignment[]): Promise<Begun> {
  crashPoint('agent:after-claim');
  const at = currentMoment();
  const recs = claimed.map((a): LedgerRecord => ({
    t: 'executing', id: a.id, lease: a.lease, type: a.type, payload: a.payload, startedAt: at.wall, ...(a.timeoutMs ? { timeoutMs: a.timeoutMs } : {}),
  }));
  await ctx.ledger.write(...recs);
  for (const a of claimed) ctx.log('executing', { id: a.id, lease: a.lease, type: a.type });
  crashPoint('agent:after-executing');
  return { entries: claimed.map((a) => ctx.ledger.get(a.id)!), at };
}

/**
 * Execute an `executing` entry: fresh (`started` is when, on both clocks), or
 * a DELAY resumed after a crash (only its journaled wall time is known).
 */
export async function runExecuting(ctx: AgentContext, entry: LedgerEntry, signal: AbortSignal, started = momentFromWall(entry.startedAt!)): Promise<Executed> {
  let exec: Execution;
  const limit = entry.timeoutMs === undefined ? undefined : timeLimit(started, entry.timeoutMs);
  try {
    exec = await execute(entry.type, entry.payload, started, ctx.http, limit ? AbortSignal.any([signal, limit.signal]) : signal);
  } catch (err) {
    if (!(err instanceof WorkAborted)) throw err;
    exec = aborted(entry, err);
  } finally {
    limit?.clear();
  }
  return { entry, exec };
}

/**
 * A signal that aborts with TIMEOUT at started + ms (monotonic; a resumed
 * execution's start is its journaled wall time placed on this clock).
 */
function timeLimit(started: Moment, ms: number): { signal: AbortSignal; clear(): void } {
  const ctl = new AbortController();
  const expire = (): void => ctl.abort(new WorkAborted('TIMEOUT', `TIMEOUT: the attempt ran past its ${ms} ms timeout`));
  const left = started.mono + ms - monotonicMs();
  // Already past (a resumed attempt whose agent was down through its deadline):
  // abort now, before the work starts, or a DELAY whose own end has also
  // passed would complete first and hide the timeout.
  if (left <= 0) {
    expire();
    return { signal: ctl.signal, clear: () => {} };
  }
  const timer = setTimeout(expire, Math.ceil(left));
  return { signal: ctl.signal, clear: () => clearTimeout(timer) };
}

/**
 * An HTTP_GET_JSON found `executing` after a crash: the request may have
 * reached the remote, so it is never sent again.
 */
export function failInterrupted(entry: LedgerEntry): Executed {
  const error = 'INTERRUPTED: the agent stopped while this request was in flight; it may have reached the remote, so it was not sent again';
  return { entry, exec: noResponse(error) };
}

/**
 * How long a finish may go unanswered before its `done` record is fsynced.
 * Answered, the server's record is the durable one and `done` never needs
 * its own fdatasync (the next one covers it anyway); unanswered, the result
 * must not depend on the page cache for longer than this.
 */
export const DONE_SYNC_AFTER_MS = 50;

/**
 * Journal an execution's outcome (`done`) and report it. `done` is written
 * (not synced) before the finish goes out, so a SIGKILL from then on keeps
 * the result; it is fsynced only if the server has not answered the finish
 * within DONE_SYNC_AFTER_MS. Resolves once the server answered (and `done`
 * is durable, if it had to be). `ride`: the finish may wait for the work
 * loop's next claim and go in it.
 */
export async function settle(ctx: AgentContext, { entry, exec }: Executed, ride = false): Promise<void> {
  const { id, lease } = entry;
  // On a full disk `done` waits for space: the finish goes at once, and the result lives in memory meanwhile.
  await ctx.ledger.writeUnsynced({ t: 'done', id, lease, outcome: exec.outcome, result: exec.result, error: exec.error });
  ctx.log('done', { id, lease, outcome: exec.outcome, error: exec.error });
  crashPoint('agent:after-done');
  const done: LedgerEntry = { ...entry, step: 'done', outcome: exec.outcome, result: exec.result, error: exec.error };
  await report(ctx, done, ride, true);
}

/**
 * A `done` entry: send finish until the server answers. Accepted or refused
 * (409: already final, lease lost), the server has the last word, so the
 * entry is settled either way. `unsynced`: `done` may not be durable yet;
 * it is fsynced if the answer takes longer than DONE_SYNC_AFTER_MS.
 */
export async function report(ctx: AgentContext, entry: LedgerEntry, ride = false, unsynced = false): Promise<void> {
  const { id, lease } = entry;
  const item = { id, lease, outcome: entry.outcome!, result: entry.result, error: entry.error ?? null };
  const answered = finish(ctx, item, ride);
  let synced: Promise<void> | undefined;
  if (unsynced) {
    // Synced while the finish is still being retried: the agent forgets the
    // result only once the server answered, and from then on not even a
    // power cut makes it forget.
    const late = setTimeout(() => {
      synced = syncDone(ctx, entry);
      synced.catch(() => {}); // awaited below, unless the finish failed first (the agent is halting)
    }, DONE_SYNC_AFTER_MS);
    const inTime = (): void => clearTimeout(late);
    answered.then(inTime, inTime);
  }
  let results: ItemResult[];
  try {
    results = await answered;
  } catch (err) {
    // No answer and the agent is halting: it forgets the result only once it is durable.
    if (unsynced) await (synced ?? ctx.ledger.sync());
    throw err;
  }
  await synced;
  crashPoint('agent:after-finish');
  await ctx.ledger.write({ t: 'reported', id, lease });
  ctx.leases.forget(id);
  const r = results[0];
  if (r?.ok) ctx.log('reported', { id, lease, outcome: item.outcome });
  else ctx.log('reported', { id, lease, outcome: item.outcome, refused: r?.error ?? 'NO_ANSWER', reason: r?.reason });
}

/** Send one finish until answered; a result the server will not take (400) is reported as FAILED `RESULT_REJECTED`. */
async function finish(ctx: AgentContext, item: FinishItem, ride: boolean): Promise<ItemResult[]> {
  const { id, lease } = item;
  try {
    return await ctx.client.finish([item], ctx.halt, ride);
  } catch (err) {
    if (!(err instanceof RequestRejectedError)) throw err;
    // The server will not take this result (too large, say); report that instead.
    const error = `RESULT_REJECTED: ${err.message}`;
    ctx.log.error('finish rejected; reporting the rejection instead', { id, lease, error });
    return ctx.client.finish([{ id, lease, outcome: 'FAILED', result: { error }, error }], ctx.halt).catch((e2: unknown) => {
      if (e2 instanceof RequestRejectedError) return [{ id, ok: false, error: 'REJECTED', reason: e2.message }];
      throw e2;
    });
  }
}

/** Make an entry's `done` durable: its finish was not answered in time. */
async function syncDone(ctx: AgentContext, { id, lease }: LedgerEntry): Promise<void> {
  await ctx.ledger.sync();
  ctx.log('done synced', { id, lease, why: `finish not answered within ${DONE_SYNC_AFTER_MS} ms` });
  crashPoint('agent:done-synced');
}

/**
 * Commands the server has us holding that the ledger has never seen: claimed
 * by an answer lost to a crash or a network fault, or one that came during
 * shutdown. With no `executing` record they never began, so they go back;
 * the server takes that only from the lease holder, and refuses it for one
 * that has moved on meanwhile.
 */
export async function giveBackUnbegun(ctx: AgentContext, held: readonly LeaseRef[], why: string): Promise<void> {
  const unbegun = held.filter((a) => ctx.ledger.get(a.id) === undefined).map(({ id, lease }) => ({ id, lease }));
  if (unbegun.length === 0) return;
  const results = await release(ctx, unbegun);
  unbegun.forEach(({ id, lease }, i) => {
    ctx.leases.forget(id);
    const r = results[i];
    ctx.log('released', { id, lease, reason: why, ...(r?.ok ? {} : { refused: r?.error ?? 'NO_ANSWER' }) });
  });
}

/** A `claimed` entry, from a ledger written before claim-and-start: it never began, so it goes back. */
export async function releaseClaimed(ctx: AgentContext, entry: LedgerEntry): Promise<void> {
  const [r] = await release(ctx, [{ id: entry.id, lease: entry.lease }]);
  const reason = r?.ok ? 'claimed, never begun: given back' : `claimed, never begun; release refused: ${r?.error ?? 'NO_ANSWER'}`;
  await ctx.ledger.write({ t: 'dropped', id: entry.id, lease: entry.lease, reason });
  ctx.leases.forget(entry.id);
  ctx.log('dropped', { id: entry.id, lease: entry.lease, reason });
}

/** Release until answered; undefined per item when the server refused the request as a whole. */
function release(ctx: AgentContext, items: LeaseRef[]): Promise<Array<ItemResult | undefined>> {
  return ctx.client.release(items, ctx.halt).catch((err: unknown) => {
    if (err instanceof RequestRejectedError) return items.map(() => undefined);
    throw err;
  });
}

/** What an aborted command reports: FAILED with the abort's code as the error. */
function aborted(entry: LedgerEntry, err: WorkAborted): Execution {
  const error = err.code === 'CANCELED' || err.code === 'TIMEOUT' ? err.code : err.message;
  if (entry.type === 'HTTP_GET_JSON') return noResponse(error);
  return { outcome: 'FAILED', result: { error }, error };
}
