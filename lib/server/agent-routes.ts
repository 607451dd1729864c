// The agent API: claim (long-poll, claim-and-start), finish, release, heartbeat,
// and start for agents of protocol 1.
// Batches go through the store one item at a time but share its group commit.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Command, StepResult } from '../../state/command-fsm.ts';
import { readJsonObject, sendJson, whenGone } from './http-io.ts';
import type { Assignment, BatchResponse, ClaimResponse, FinishItem, HeartbeatResponse, ItemResult } from '../protocol.ts';
import type { ServerContext } from './context.ts';
import { claimRequest, finishBatch, heartbeatRequest, leaseBatch } from './validate.ts';

// Agent batches (finish results included) may be far larger than a client's submit.
export const AGENT_BODY_LIMIT = 8 * 1024 * 1024;

export async function claim(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { agentId, max, waitMs, finish, protocol, types, resume } = claimRequest(await readJsonObject(req, AGENT_BODY_LIMIT));
  ctx.agents.seen(agentId, { protocol, types });
  // A full disk refuses the whole claim (503), before a riding finish is tried.
  ctx.store.refuseIfUnavailable();
  // Outcomes riding along are queued first, in this tick: they share the
  // claim's group commit. Their sender waits for their results, and a
  // resuming agent for its `held` list: neither waits for work.
  const finished = finish.length > 0 ? runItems(ctx, agentId, finish, finishOne) : undefined;
  const wait = finished || resume ? 0 : waitMs;
  // The client is watched only if the claim must wait: under load most are answered at once.
  const claimed = max > 0 ? ctx.claimWaiters.claim(agentId, max, wait, () => whenGone(res), types && new Set(types)) : [];
  const [cmds, results] = await Promise.all([claimed, finished]);
  // Even if the client went away meanwhile: a lease nobody heard of expires
  // like any other (RUNNING: FAILED AGENT_LOST, the price of claim-and-start).
  for (const c of cmds) ctx.leases.extend(c.id, c.attempt);
  const body: ClaimResponse = { leaseTimeoutMs: ctx.config.leaseTimeoutMs, commands: cmds.map(assignment) };
  if (results) body.finished = results;
  if (resume) {
    const fresh = new Set(cmds.map((c) => c.id));
    const ids = [...((await ctx.store.heldBy()).get(agentId) ?? [])].filter((id) => !fresh.has(id));
    const held = await Promise.all(ids.map((id) => ctx.store.read(id)));
    body.held = held.filter((c): c is Command => c !== undefined && c.agentId === agentId).map(assignment);
  }
  sendJson(res, 200, body);
}

function assignment(c: Command): Assignment {
  const a: Assignment = { id: c.id, type: c.type, payload: c.payload, lease: c.attempt };
  if (c.timeoutMs !== null) a.timeoutMs = c.timeoutMs;
  return a;
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

/** Agents of protocol 1 start what they claimed; under claim-and-start it is RUNNING already, so this answers as a retry. */
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
