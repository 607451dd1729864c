// The client API: submit, read, wait, list, cancel, events, agents.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isFinal, type Command } from '../../state/command-fsm.ts';
import { commandView, eventViews, shownStatus } from './command-view.ts';
import { formatDuration, parseDuration } from '../duration.ts';
import { DEFAULT_RETENTION } from '../../state/retention.ts';
import { HttpError, readJsonObject, sendJson, whenGone, type RequestTarget } from './http-io.ts';
import { COMMAND_STATUSES, COMMAND_TYPES, type BatchSubmitResponse, type CommandList, type CommandStatus, type CommandType, type SubmitResponse } from '../protocol.ts';
import { COMMAND_STATES, type CommandOptions } from '../../state/command-types.ts';
import { backlog } from '../../state/store.ts';
import type { ServerContext } from './context.ts';
import { followCommand, wantsFollow } from './stream-routes.ts';
import { asSent, batchSubmitRequest, pathId, idempotencyKey, submitRequest } from './validate.ts';

const MAX_WAIT_MS = 5 * 60 * 1000;
const MAX_LIMIT = 1000;

export async function submit(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = submitRequest(await readJsonObject(req), Date.now());
  await create(ctx, req, res, body.type, body.payload, body.opts, () => asSent(body));
}

export async function submitBatch(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const items = batchSubmitRequest(await readJsonObject(req, BATCH_BODY_LIMIT), Date.now());
  const known = await Promise.all(items.map((it) => it.idempotencyKey !== undefined && ctx.store.knowsKey(it.idempotencyKey)));
  await refuseIfFull(ctx, known.filter((k) => !k).length);
  const r = await ctx.store.submitMany(
    items.map((it) => ({ type: it.type, payload: it.payload, opts: it.opts, idemKey: it.idempotencyKey, bodyHash: bodyHash(() => asSent(it), it.idempotencyKey) })),
  );
  if (r.kind === 'conflict') {
    throw new HttpError(409, `commands[${r.index}]: ${r.reason}`, { field: `commands[${r.index}].idempotencyKey`, extra: { commandId: r.id } });
  }
  const answer: BatchSubmitResponse = { commandIds: r.ids };
  sendJson(res, r.created > 0 ? 201 : 200, answer);
}

/** A batch body may hold 1,000 commands with long URLs and keys. */
const BATCH_BODY_LIMIT = 4 * 1024 * 1024;

/**
 * POST /commands/:id/retry: a final command's type, payload and options
 * (priority, retry, timeout; not its schedule, which has passed) as a new
 * command that names it in retryOf. The original stays as it is: final.
 */
export async function retry(ctx: ServerContext, req: IncomingMessage, res: ServerResponse, params: string[]): Promise<void> {
  const id = pathId(params[0]);
  const orig = await ctx.store.read(id);
  if (!orig) throw unknownCommand(ctx, id);
  if (!isFinal(orig.state)) {
    throw new HttpError(409, `command is ${shownStatus(orig.state)}; only a COMPLETED or FAILED command can be retried`, { extra: { reason: 'WRONG_STATE' } });
  }
  const opts: CommandOptions = { retryOf: id };
  if (orig.priority !== 0) opts.priority = orig.priority;
  if (orig.retry) opts.retry = orig.retry;
  if (orig.timeoutMs !== null) opts.timeoutMs = orig.timeoutMs;
  await create(ctx, req, res, orig.type, orig.payload, opts, () => ({ retryOf: id }));
}

/** Submit one command: honours Idempotency-Key (checked against `asSent()`) and --max-pending. */
async function create(
  ctx: ServerContext, req: IncomingMessage, res: ServerResponse,
  type: CommandType, payload: Command['payload'], opts: CommandOptions, asSent: () => unknown,
): Promise<void> {
  const key = idempotencyKey(req.headers['idempotency-key'], 'Idempotency-Key');
  const known = key !== undefined && (await ctx.store.knowsKey(key));
  if (!known) {
    const full = refuseIfFull(ctx, 1);
    if (full) await full;
  }
  const r = await ctx.store.submit({ type, payload, opts, idemKey: key, bodyHash: bodyHash(asSent, key) });
  if (r.kind === 'conflict') throw new HttpError(409, r.reason, { field: 'Idempotency-Key', extra: { commandId: r.id } });
  const answer: SubmitResponse = { commandId: r.id };
  sendJson(res, r.kind === 'created' ? 201 : 200, answer);
}

/**
 * Commands shown PENDING count against --max-pending: a scheduled backlog
 * holds memory too. Answered at once (no promise) by a store that keeps the
 * count in memory.
 */
function refuseIfFull(ctx: ServerContext, adding: number): Promise<void> | undefined {
  if (adding === 0) return undefined;
  const now = ctx.store.backlogNow?.();
  if (now !== undefined) return checkRoom(ctx, now, adding);
  return ctx.store.counts().then((c) => checkRoom(ctx, backlog(c.byState), adding));
}

function checkRoom(ctx: ServerContext, backlog: number, adding: number): undefined {
  if (backlog + adding > ctx.config.maxPending) {
    throw new HttpError(429, `too many pending commands (${ctx.config.maxPending}); retry later`, { headers: { 'retry-after': '1' } });
  }
  return undefined;
}

// What an idempotency key is checked against: the validated command as sent
// (a relative delay as its text), so the same command sent alone or in a
// batch, or sent again later, matches. Built only when there is a key.
function bodyHash(asSent: () => unknown, key: string | undefined): string | undefined {
  return key === undefined ? undefined : createHash('sha256').update(JSON.stringify(asSent())).digest('hex');
}

export async function getOne(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse, params: string[], url: RequestTarget): Promise<void> {
  const id = pathId(params[0]);
  const waitText = url.searchParams.get('wait');
  let waitMs = 0;
  if (waitText !== null) {
    const ms = parseDuration(waitText);
    if (ms === undefined || ms > MAX_WAIT_MS) throw new HttpError(400, 'wait must be a duration like 500ms, 30s or 2m, at most 5m', { field: 'wait' });
    waitMs = ms;
  }
  let cmd = await ctx.store.read(id);
  if (!cmd) throw unknownCommand(ctx, id);
  if (waitMs > 0 && !isFinal(cmd.state)) {
    const looked = new AbortController();
    const waited = ctx.finalWaiters.wait(id, waitMs, AbortSignal.any([whenGone(res), looked.signal]));
    // It may have become final between the read and the wait (on another
    // server on one database, its wake can come that early): look again.
    cmd = await ctx.store.read(id);
    if (cmd && !isFinal(cmd.state)) {
      await waited;
      // read() waits for durability: the wait may end while a transition is applied but not yet durable.
      cmd = await ctx.store.read(id);
    } else {
      looked.abort();
    }
    if (!cmd) throw unknownCommand(ctx, id); // final, and already past --retain-max
  }
  sendJson(res, 200, commandView(cmd));
}

/**
 * The 404 for an id the table does not hold. Ids are random, so a forgotten
 * command cannot be told from one that never was: the answer says both.
 */
export function unknownCommand(ctx: ServerContext, id: string): HttpError {
  const r = ctx.config.retention ?? DEFAULT_RETENTION;
  return new HttpError(404, `no command ${id}: it never existed, or it was final and has expired (final commands are kept for --retain ${formatDuration(r.ms)}, at most --retain-max ${r.max} of them)`, {
    field: 'id',
    extra: { mayHaveExpired: true },
  });
}

export async function list(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse, _p: string[], url: RequestTarget): Promise<void> {
  const q = url.searchParams;
  for (const k of q.keys()) {
    if (!['status', 'type', 'limit', 'cursor'].includes(k)) throw new HttpError(400, `unknown query parameter "${k}"; allowed: status, type, limit, cursor`, { field: k });
  }
  const status = q.get('status');
  if (status !== null && !COMMAND_STATUSES.includes(status as CommandStatus)) throw new HttpError(400, `status must be one of ${COMMAND_STATUSES.join(', ')}`, { field: 'status' });
  const type = q.get('type');
  if (type !== null && !COMMAND_TYPES.includes(type as CommandType)) throw new HttpError(400, `type must be one of ${COMMAND_TYPES.join(', ')}`, { field: 'type' });
  const limit = q.has('limit') ? Number(q.get('limit')) : 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT || !/^\d+$/.test(q.get('limit') ?? '1')) {
    throw new HttpError(400, `limit must be an integer from 1 to ${MAX_LIMIT}`, { field: 'limit' });
  }
  const states = status === null ? undefined : new Set(COMMAND_STATES.filter((st) => shownStatus(st) === status));
  const cursor = q.get('cursor') ?? undefined;
  const page = await ctx.store.list({ states, type: (type ?? undefined) as CommandType | undefined, limit, cursor });
  if ('badCursor' in page) throw new HttpError(400, 'cursor is not one this server handed out', { field: 'cursor' });
  const body: CommandList = { commands: page.commands.map(commandView), nextCursor: page.nextCursor };
  sendJson(res, 200, body);
}

export async function cancel(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse, params: string[]): Promise<void> {
  const id = pathId(params[0]);
  const r = await ctx.store.cancel(id);
  if (r.kind === 'rejected') {
    if (r.error === 'NOT_FOUND') throw unknownCommand(ctx, id);
    throw new HttpError(409, `cannot cancel: ${r.reason}`, { extra: { reason: r.error } });
  }
  // RUNNING: the agent learns of it on its next heartbeat and reports FAILED CANCELED.
  sendJson(res, r.cmd.state === 'RUNNING' ? 202 : 200, commandView(r.cmd));
}

export async function events(ctx: ServerContext, req: IncomingMessage, res: ServerResponse, params: string[], url: RequestTarget): Promise<void> {
  const id = pathId(params[0]);
  const follow = wantsFollow(url.searchParams);
  const cmd = await ctx.store.read(id);
  if (!cmd) throw unknownCommand(ctx, id);
  if (follow) return followCommand(ctx, req, res, cmd, url);
  sendJson(res, 200, { id, events: eventViews((await ctx.store.trail(id)) ?? []) });
}

export async function agents(ctx: ServerContext, _req: IncomingMessage, res: ServerResponse): Promise<void> {
  sendJson(res, 200, { agents: ctx.agents.list(await ctx.store.heldBy()) });
}
