// The client API: submit, read, wait, list, cancel, events, agents.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isFinal } from '../../state/command-fsm.ts';
import { commandView, eventViews, shownStatus } from './command-view.ts';
import { parseDuration } from '../duration.ts';
import { HttpError, readJsonObject, sendJson, whenGone } from './http-io.ts';
import type { BatchSubmitResponse, CommandList, CommandStatus, SubmitRequest, SubmitResponse } from '../protocol.ts';
import type { ServerContext } from './context.ts';
import { followCommand, wantsFollow } from './stream-routes.ts';
import { batchSubmitRequest, commandId, idempotencyKey, submitRequest } from './validate.ts';

const MAX_WAIT_MS = 5 * 60 * 1000;
const MAX_LIMIT = 1000;
const STATUSES: readonly CommandStatus[] = ['PENDING', 'RUNNING', 'COMPLETED', 'FAILED'];

export async function submit(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = submitRequest(await readJsonObject(req));
  const key = idempotencyKey(req.headers['idempotency-key'], 'Idempotency-Key');
  const known = key !== undefined && ctx.store.table.byIdemKey.has(key);
  if (!known) refuseIfFull(ctx, 1);
  const r = await ctx.store.submit({ ...body, idemKey: key, bodyHash: bodyHash(body, key) });
  if (r.kind === 'conflict') throw new HttpError(409, r.reason, { field: 'Idempotency-Key', extra: { commandId: r.id } });
  const answer: SubmitResponse = { commandId: r.id };
  sendJson(res, r.kind === 'created' ? 201 : 200, answer);
}

export async function submitBatch(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const items = batchSubmitRequest(await readJsonObject(req, BATCH_BODY_LIMIT));
  const table = ctx.store.table;
  refuseIfFull(ctx, items.filter((it) => it.idempotencyKey === undefined || !table.byIdemKey.has(it.idempotencyKey)).length);
  const r = await ctx.store.submitMany(
    items.map(({ idempotencyKey: key, ...body }) => ({ ...body, idemKey: key, bodyHash: bodyHash(body, key) })),
  );
  if (r.kind === 'conflict') {
    throw new HttpError(409, `commands[${r.index}]: ${r.reason}`, { field: `commands[${r.index}].idempotencyKey`, extra: { commandId: r.id } });
  }
  const answer: BatchSubmitResponse = { commandIds: r.ids };
  sendJson(res, r.created > 0 ? 201 : 200, answer);
}

/** A batch body may hold 1,000 commands with long URLs and keys. */
const BATCH_BODY_LIMIT = 4 * 1024 * 1024;

function refuseIfFull(ctx: ServerContext, adding: number): void {
  if (adding > 0 && ctx.store.table.countByState.PENDING + adding > ctx.config.maxPending) {
    throw new HttpError(429, `too many pending commands (${ctx.config.maxPending}); retry later`, { headers: { 'retry-after': '1' } });
  }
}

// What an idempotency key is checked against: the validated command, so the
// same command sent alone or in a batch matches.
function bodyHash(body: SubmitRequest, key: string | undefined): string | undefined {
  return key === undefined ? undefined : createHash('sha256').update(JSON.stringify(body)).digest('hex');
}

export async function getOne(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse, params: string[], url: URL): Promise<void> {
  const id = commandId(params[0]);
  const waitText = url.searchParams.get('wait');
  let waitMs = 0;
  if (waitText !== null) {
    const ms = parseDuration(waitText);
    if (ms === undefined || ms > MAX_WAIT_MS) throw new HttpError(400, 'wait must be a duration like 500ms, 30s or 2m, at most 5m', { field: 'wait' });
    waitMs = ms;
  }
  await ctx.store.readBarrier();
  let cmd = ctx.store.get(id);
  if (!cmd) throw new HttpError(404, `no command ${id}`, { field: 'id' });
  if (waitMs > 0 && !isFinal(cmd.state)) {
    await ctx.finalWaiters.wait(id, waitMs, whenGone(res));
    // The wait may end while a transition is applied but not yet durable.
    await ctx.store.readBarrier();
    cmd = ctx.store.get(id)!;
  }
  sendJson(res, 200, commandView(cmd));
}

export async function list(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse, _p: string[], url: URL): Promise<void> {
  const q = url.searchParams;
  for (const k of q.keys()) {
    if (!['status', 'limit', 'cursor'].includes(k)) throw new HttpError(400, `unknown query parameter "${k}"; allowed: status, limit, cursor`, { field: k });
  }
  const status = q.get('status');
  if (status !== null && !STATUSES.includes(status as CommandStatus)) throw new HttpError(400, `status must be one of ${STATUSES.join(', ')}`, { field: 'status' });
  const limit = q.has('limit') ? Number(q.get('limit')) : 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT || !/^\d+$/.test(q.get('limit') ?? '1')) {
    throw new HttpError(400, `limit must be an integer from 1 to ${MAX_LIMIT}`, { field: 'limit' });
  }
  await ctx.store.readBarrier();
  const order = ctx.store.table.order;
  let end = order.length;
  const cursor = q.get('cursor');
  if (cursor !== null) {
    if (!/^\d+$/.test(cursor) || Number(cursor) > order.length) throw new HttpError(400, 'cursor is not one this server handed out', { field: 'cursor' });
    end = Number(cursor);
  }
  const commands = [];
  let i = end - 1;
  for (; i >= 0 && commands.length < limit; i--) {
    const id = order[i]!;
    if (status === null || shownStatus(ctx.store.table.stateOf(id)!) === status) commands.push(commandView(ctx.store.get(id)!));
  }
  const body: CommandList = { commands, nextCursor: i >= 0 ? String(i + 1) : null };
  sendJson(res, 200, body);
}

export async function cancel(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse, params: string[]): Promise<void> {
  const id = commandId(params[0]);
  const r = await ctx.store.cancel(id);
  if (r.kind === 'rejected') {
    if (r.error === 'NOT_FOUND') throw new HttpError(404, `no command ${id}`, { field: 'id' });
    throw new HttpError(409, `cannot cancel: ${r.reason}`, { extra: { reason: r.error } });
  }
  // RUNNING: the agent learns of it on its next heartbeat and reports FAILED CANCELED.
  sendJson(res, r.cmd.state === 'RUNNING' ? 202 : 200, commandView(r.cmd));
}

export async function events(ctx: ServerContext, req: IncomingMessage, res: ServerResponse, params: string[], url: URL): Promise<void> {
  const id = commandId(params[0]);
  const follow = wantsFollow(url.searchParams);
  await ctx.store.readBarrier();
  const cmd = ctx.store.get(id);
  if (!cmd) throw new HttpError(404, `no command ${id}`, { field: 'id' });
  if (follow) return followCommand(ctx, req, res, cmd, url);
  sendJson(res, 200, { id, events: eventViews(ctx.store.table.trail(id) ?? []) });
}

export async function agents(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse): Promise<void> {
  await ctx.store.readBarrier();
  sendJson(res, 200, { agents: ctx.agents.list(ctx.store.table.heldBy) });
}
