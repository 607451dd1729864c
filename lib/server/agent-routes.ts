// The agent API: claim (long-poll), start, finish, release, heartbeat.
// Batches go through the store one item at a time but share its group commit.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StepResult } from '../../state/command-fsm.ts';
import { readJsonObject, sendJson, whenGone } from './http-io.ts';
import type { Assignment, BatchResponse, ClaimResponse, FinishItem, HeartbeatResponse, ItemResult } from '../protocol.ts';
import type { ServerContext } from './context.ts';
import { claimRequest, finishBatch, heartbeatRequest, leaseBatch } from './validate.ts';

// Agent batches (finish results included) may be far larger than a client's submit.
export const AGENT_BODY_LIMIT = 8 * 1024 * 1024;

export async function claim(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { agentId, max, waitMs, finish, protocol, types } = claimRequest(await readJsonObject(req, AGENT_BODY_LIMIT));
  ctx.agents.seen(agentId, { protocol, types });
  // A full disk refuses the whole claim (503), before a riding finish is tried.
  ctx.store.refuseIfUnavailable();
  // Outcomes riding along are queued first, in this tick: they share the
  // claim's group commit. Their sender waits for their results, so no waiting for work.
  const finished = finish.length > 0 ? runItems(ctx, agentId, finish, finishOne) : undefined;
  // The client is watched only if the claim must wait: under load most are answered at once.
  const [cmds, results] = await Promise.all([ctx.claimWaiters.claim(agentId, max, finished ? 0 : waitMs, () => whenGone(res), types && new Set(types)), finished]);
  // Even if the client went away meanwhile: a lease nobody heard of expires
  // like any other, and the command goes back to PENDING.
  for (const c of cmds) ctx.leases.extend(c.id, c.attempt);
  const commands: Assignment[] = cmds.map((c) => {
    const a: Assignment = { id: c.id, type: c.type, payload: c.payload, lease: c.attempt };
    if (c.timeoutMs !== null) a.timeoutMs = c.timeoutMs;
    return a;
  });
  const body: ClaimResponse = { leaseTimeoutMs: ctx.config.leaseTimeoutMs, commands };
  if (results) body.finished = results;
  sendJson(res, 200, body);
}

type ItemOp<T> = (ctx: ServerContext, agentId: string, item: T) => Promise<StepResult>;

function batchRoute<T extends { id: string; lease: number }>(parse: (b: Record<string, unknown>) => { agentId: string; items: T[] }, op: ItemOp<T>) {
  return async (ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const { agentId, items } = parse(await readJsonObject(req, AGENT_BODY_LIMIT));
    ctx.agents.seen(agentId);
    const results = await runItems(ctx, agentId, items, op);
    const body: BatchResponse = { results };
    sendJson(res, results.every((r) => r.ok) ? 200 : 409, body);
  };
}

/** Each item through op; all their records are queued in this tick, so they share one group commit. */
function runItems<T extends { id: string }>(ctx: ServerContext, agentId: string, items: T[], op: ItemOp<T>): Promise<ItemResult[]> {
  return Promise.all(
    items.map(async (item): Promise<ItemResult> => {
      const r = await op(ctx, agentId, item);
      if (r.kind === 'rejected') return { id: item.id, ok: false, error: r.error, reason: r.reason };
      return { id: item.id, ok: true };
    }),
  );
}

export const start = batchRoute(leaseBatch, async (ctx, agentId, { id, lease }) => {
  const r = await ctx.store.start(agentId, id, lease);
  if (r.kind !== 'rejected') ctx.leases.extend(id, lease);
  return r;
});

const finishOne: ItemOp<FinishItem> = async (ctx, agentId, item) => {
  const r = await ctx.store.finish(agentId, item.id, item.lease, item.outcome, item.result, item.error ?? null);
  if (r.kind !== 'rejected') ctx.leases.drop(item.id);
  return r;
};

export const finish = batchRoute(finishBatch, finishOne);

export const release = batchRoute(leaseBatch, async (ctx, agentId, { id, lease }) => {
  const r = await ctx.store.release(agentId, id, lease);
  if (r.kind !== 'rejected') ctx.leases.drop(id);
  return r;
});

export async function heartbeat(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { agentId, leases } = heartbeatRequest(await readJsonObject(req, AGENT_BODY_LIMIT));
  ctx.agents.seen(agentId);
  const body: HeartbeatResponse = { leaseTimeoutMs: ctx.config.leaseTimeoutMs, revoked: [], cancel: [] };
  const cmds = await Promise.all(leases.map(({ id }) => ctx.store.read(id)));
  const extended: Array<void | Promise<void>> = [];
  for (const [i, { id, lease }] of leases.entries()) {
    const cmd = cmds[i];
    const live = cmd && cmd.agentId === agentId && cmd.attempt === lease && (cmd.state === 'ASSIGNED' || cmd.state === 'RUNNING');
    if (!live) {
      const reason = !cmd ? 'no such command' : cmd.attempt !== lease ? `lease ${lease} is stale (current ${cmd.attempt})` : `command is ${cmd.state}${cmd.error ? ` (${cmd.error})` : ''}`;
      body.revoked.push({ id, lease, reason });
      continue;
    }
    extended.push(ctx.leases.extend(id, lease));
    if (cmd.cancelRequested) body.cancel.push(id);
  }
  await Promise.all(extended);
  sendJson(res, 200, body);
}
