// One command's way through the ledger (docs/design.md, "Recovery: the agent"):
//   claimed -> server start -> executing(startedAt) -> execute -> done
//   -> server finish -> reported
// Each step is journaled (fsync) before the agent acts on it, so a crash
// between any two leaves a ledger entry that reconcile.ts knows how to finish.
// The crash points name those gaps.
// The way splits in two where execution ends: up to there the command holds
// one of the agent's execution slots (takeAssignment); journaling its outcome
// and reporting it (settle) need no slot, so the work loop claims the next
// command meanwhile. Each command's own steps keep their order.
import { crashPoint } from '../../state/crash-points.ts';
import { currentMoment, momentFromWall, monotonicMs, type Moment } from '../clock.ts';
import type { Ledger, LedgerEntry } from '../../state/ledger.ts';
import { execute, type Execution, type HttpGetOptions } from './executors/index.ts';
import { noResponse } from './executors/http-get-json.ts';
import type { Logger } from '../log.ts';
import type { Assignment, LeaseRef } from '../protocol.ts';
import { RequestRejectedError, type ServerClient } from './server-client.ts';
import { WorkAborted, type LeaseKeeper } from './leases.ts';

export interface AgentContext {
  ledger: Ledger;
  client: ServerClient;
  leases: LeaseKeeper;
  log: Logger & { error: Logger };
  http: HttpGetOptions;
  /** Aborts when shutdown begins: work not yet started is released, not started. */
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

/**
 * A fresh assignment from claim: journal it, then start and run it. Resolves
 * when execution ends, or with undefined if the command was dropped.
 */
export async function takeAssignment(ctx: AgentContext, a: Assignment): Promise<Executed | undefined> {
  crashPoint('agent:after-claim');
  const at = Date.now();
  await ctx.ledger.write({ t: 'claimed', id: a.id, lease: a.lease, type: a.type, payload: a.payload, at, ...(a.timeoutMs ? { timeoutMs: a.timeoutMs } : {}) });
  ctx.log('claimed', { id: a.id, lease: a.lease, type: a.type });
  crashPoint('agent:after-claimed');
  return startClaimed(ctx, ctx.ledger.get(a.id)!);
}

/**
 * A `claimed` entry: execute only once the server confirms the lease is still
 * ours (start answers ok); otherwise the entry is dropped (undefined).
 */
export async function startClaimed(ctx: AgentContext, entry: LedgerEntry): Promise<Executed | undefined> {
  const started = await confirmStart(ctx, entry);
  return started && runExecuting(ctx, started.entry, started.signal, started.at);
}

/** A `claimed` entry started on the server and journaled `executing`, ready to run. */
export interface Started {
  entry: LedgerEntry;
  signal: AbortSignal;
  at: Moment;
}

/**
 * The first half of startClaimed: ask the server to start it and journal
 * `executing`; undefined if the entry was dropped or released instead.
 */
export async function confirmStart(ctx: AgentContext, entry: LedgerEntry): Promise<Started | undefined> {
  const { id, lease } = entry;
  const signal = ctx.leases.hold(entry);
  if (ctx.stopping.aborted) return releaseClaimed(ctx, entry);
  const [r] = await ctx.client.start([{ id, lease }], ctx.halt).catch((err: unknown) => {
    if (err instanceof RequestRejectedError) return [{ id, ok: false, error: 'REJECTED', reason: err.message }];
    throw err;
  });
  if (!r?.ok) return drop(ctx, entry, `${r?.error ?? 'NO_ANSWER'}: ${r?.reason ?? 'start refused'}`);
  crashPoint('agent:after-start');
  const at = currentMoment();
  await ctx.ledger.write({ t: 'executing', id, lease, startedAt: at.wall });
  ctx.log('executing', { id, lease, type: entry.type });
  return { entry: { ...entry, step: 'executing', startedAt: at.wall }, signal, at };
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

/** Journal an execution's outcome (`done`), then report it. */
export async function settle(ctx: AgentContext, executed: Executed): Promise<void> {
  await report(ctx, await recordOutcome(ctx, executed));
}

/** Journal an execution's outcome (`done`); resolves with the `done` entry to report. */
export async function recordOutcome(ctx: AgentContext, { entry, exec }: Executed): Promise<LedgerEntry> {
  const { id, lease } = entry;
  await ctx.ledger.write({ t: 'done', id, lease, outcome: exec.outcome, result: exec.result, error: exec.error });
  ctx.log('done', { id, lease, outcome: exec.outcome, error: exec.error });
  crashPoint('agent:after-done');
  return { ...entry, step: 'done', outcome: exec.outcome, result: exec.result, error: exec.error };
}

/**
 * A `done` entry: send finish until the server answers. Accepted or refused
 * (409: already final, lease lost), the server has the last word, so the
 * entry is settled either way.
 */
export async function report(ctx: AgentContext, entry: LedgerEntry): Promise<void> {
  const { id, lease } = entry;
  const item = { id, lease, outcome: entry.outcome!, result: entry.result, error: entry.error ?? null };
  let results;
  try {
    results = await ctx.client.finish([item], ctx.halt);
  } catch (err) {
    if (!(err instanceof RequestRejectedError)) throw err;
    // The server will not take this result (too large, say); report that instead.
    const error = `RESULT_REJECTED: ${err.message}`;
    ctx.log.error('finish rejected; reporting the rejection instead', { id, lease, error });
    results = await ctx.client.finish([{ id, lease, outcome: 'FAILED', result: { error }, error }], ctx.halt).catch((e2: unknown) => {
      if (e2 instanceof RequestRejectedError) return [{ id, ok: false, error: 'REJECTED', reason: e2.message }];
      throw e2;
    });
  }
  crashPoint('agent:after-finish');
  await ctx.ledger.write({ t: 'reported', id, lease });
  ctx.leases.forget(id);
  const r = results[0];
  if (r?.ok) ctx.log('reported', { id, lease, outcome: item.outcome });
  else ctx.log('reported', { id, lease, outcome: item.outcome, refused: r?.error ?? 'NO_ANSWER', reason: r?.reason });
}

/**
 * Commands the server has us holding that the ledger has never seen: claimed
 * by an answer lost to a crash or a network fault. With no ledger entry they
 * never began, so they go back; the server takes that only from the lease
 * holder, and refuses it for one that has moved on meanwhile.
 */
export async function giveBackUnbegun(ctx: AgentContext, held: LeaseRef[], why: string): Promise<void> {
  const unbegun = held.filter((a) => ctx.ledger.get(a.id) === undefined).map(({ id, lease }) => ({ id, lease }));
  if (unbegun.length === 0) return;
  const results = await ctx.client.release(unbegun, ctx.halt).catch((err: unknown) => {
    if (err instanceof RequestRejectedError) return unbegun.map(() => undefined);
    throw err;
  });
  unbegun.forEach(({ id, lease }, i) => {
    ctx.leases.forget(id);
    const r = results[i];
    ctx.log('released', { id, lease, reason: why, ...(r?.ok ? {} : { refused: r?.error ?? 'NO_ANSWER' }) });
  });
}

/** Give back a claimed command that was never started (shutdown). */
async function releaseClaimed(ctx: AgentContext, entry: LedgerEntry): Promise<undefined> {
  const [r] = await ctx.client.release([{ id: entry.id, lease: entry.lease }], ctx.halt).catch((err: unknown) => {
    if (ctx.halt.aborted) throw err;
    return [undefined];
  });
  return drop(ctx, entry, r?.ok ? 'released at shutdown' : `release refused at shutdown: ${r?.error ?? 'NO_ANSWER'}`);
}

async function drop(ctx: AgentContext, entry: LedgerEntry, reason: string): Promise<undefined> {
  await ctx.ledger.write({ t: 'dropped', id: entry.id, lease: entry.lease, reason });
  ctx.leases.forget(entry.id);
  ctx.log('dropped', { id: entry.id, lease: entry.lease, reason });
  return undefined;
}

/** What an aborted command reports: FAILED with the abort's code as the error. */
function aborted(entry: LedgerEntry, err: WorkAborted): Execution {
  const error = err.code === 'CANCELED' || err.code === 'TIMEOUT' ? err.code : err.message;
  if (entry.type === 'HTTP_GET_JSON') return noResponse(error);
  return { outcome: 'FAILED', result: { error }, error };
}
