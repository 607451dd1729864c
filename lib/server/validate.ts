// Validation of every body a client or agent sends. Bad input never reaches
// the journal: each check names the field it refuses, as a 400.
import { HttpError } from './http-io.ts';
import { parseDuration } from '../duration.ts';
import { MAX_ATTEMPTS, MAX_PRIORITY, MIN_PRIORITY, type CommandOptions, type ExpectStatus, type RetryPolicy } from '../../state/command-types.ts';
import {
  AGENT_ID_RE,
  COMMAND_TYPES,
  SERVER_PROTOCOLS,
  type ClaimRequest,
  type CommandType,
  type FinishItem,
  type HeartbeatRequest,
  type LeaseRef,
  type Payload,
  type SubmitRequest,
} from '../protocol.ts';

export const MAX_DELAY_MS = 24 * 60 * 60 * 1000;
const MAX_URL_LENGTH = 2048;
const MAX_BATCH = 1000;
const MAX_RESULT_BYTES = 256 * 1024;
export const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Obj = Record<string, unknown>;

const bad = (field: string, message: string): HttpError => new HttpError(400, message, { field });

function onlyFields(obj: Obj, allowed: readonly string[], prefix = ''): void {
  // for-in, not Object.keys: a parsed body has no inherited keys, and no array is built.
  for (const k in obj) {
    if (!allowed.includes(k)) throw bad(prefix + k, `unknown field "${prefix + k}"; allowed: ${allowed.join(', ')}`);
  }
}

function object(v: unknown, field: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, `${field} must be a JSON object`);
  return v as Obj;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(field, `${field} must be an integer from ${min} to ${max}`);
  }
  return v;
}

export function commandId(v: unknown, field = 'id'): string {
  if (typeof v !== 'string' || !ID_RE.test(v)) throw bad(field, `${field} is not a command id (a lowercase UUID)`);
  return v;
}

/**
 * The id in a /commands/:id path. A path names a resource, so one that is
 * not an id names no command: 404, as a REST client expects, not 400.
 */
export function pathId(v: string | undefined): string {
  if (v === undefined || !ID_RE.test(v)) throw new HttpError(404, `no command ${JSON.stringify(v ?? '')}`, { field: 'id' });
  return v;
}

function agentId(v: unknown): string {
  if (typeof v !== 'string' || !AGENT_ID_RE.test(v)) {
    throw bad('agentId', 'agentId must be 1-128 characters of letters, digits, ".", "_", ":" or "-", starting with a letter or digit');
  }
  return v;
}

function httpUrl(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length === 0) throw bad(field, `${field} must be an absolute http or https URL`);
  if (v.length > MAX_URL_LENGTH) throw bad(field, `${field} is longer than ${MAX_URL_LENGTH} characters`);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw bad(field, `${field} must be an absolute http or https URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad(field, `${field} must use http or https, not ${u.protocol.slice(0, -1)}`);
  return v;
}

const DAY_MS = 24 * 60 * 60 * 1000;
const MAX_SCHEDULE_MS = 366 * DAY_MS;
const MAX_BACKOFF_MS = 7 * DAY_MS;
const ISO_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** A duration as text ("30s", "250ms", "2m") or a number of milliseconds. */
function duration(v: unknown, field: string, min: number, max: number): number {
  const ms = typeof v === 'number' && Number.isInteger(v) ? v : typeof v === 'string' ? parseDuration(v) : undefined;
  if (ms === undefined) throw bad(field, `${field} must be a duration like 500ms, 30s or 2m`);
  if (ms < min || ms > max) throw bad(field, `${field} must be from ${min} ms to ${max / DAY_MS} days`);
  return ms;
}

function expectStatus(v: unknown, field: string): ExpectStatus {
  if (typeof v === 'string' && /^[1-5]xx$/.test(v)) return v;
  if (Array.isArray(v) && v.length >= 1 && v.length <= 50 && v.every((c) => Number.isInteger(c) && c >= 100 && c <= 599)) return v as number[];
  throw bad(field, `${field} must be a status class like "2xx" or a list of 1 to 50 status codes like [200, 204]`);
}

function retryPolicy(v: unknown, prefix: string): RetryPolicy {
  const f = (name: string): string => prefix + name;
  const r = object(v, f('retry'));
  onlyFields(r, ['attempts', 'backoff', 'delay', 'maxDelay'], f('retry.'));
  if (r.attempts === undefined) throw bad(f('retry.attempts'), `${f('retry.attempts')} is required: the total number of executions, 1 to ${MAX_ATTEMPTS}`);
  const attempts = int(r.attempts, f('retry.attempts'), 1, MAX_ATTEMPTS);
  const backoff = r.backoff ?? 'exponential';
  if (backoff !== 'exponential' && backoff !== 'fixed') throw bad(f('retry.backoff'), `${f('retry.backoff')} must be "exponential" or "fixed"`);
  const delayMs = r.delay === undefined ? 1000 : duration(r.delay, f('retry.delay'), 0, MAX_BACKOFF_MS);
  const maxDelayMs = r.maxDelay === undefined ? Math.max(600_000, delayMs) : duration(r.maxDelay, f('retry.maxDelay'), 0, MAX_BACKOFF_MS);
  return { attempts, backoff, delayMs, maxDelayMs };
}

/** A submit's body as validated: the command, its options, and the body itself. */
export interface ValidSubmit extends SubmitRequest {
  opts: CommandOptions;
  /** The body as sent (checked): what asSent() reads. */
  body: Obj;
}

const SUBMIT_FIELDS = ['type', 'payload', 'priority', 'runAt', 'delay', 'retry', 'timeout'];

/**
 * One command to submit, with its options; `prefix` names where it sits in a
 * batch (`commands[3].`). `now` is what a relative `delay` counts from.
 */
export function submitRequest(body: Obj, now: number, prefix = '', extra: readonly string[] = []): ValidSubmit {
  onlyFields(body, extra.length === 0 ? SUBMIT_FIELDS : [...SUBMIT_FIELDS, ...extra], prefix);
  const { type, payload } = commandBody(body, prefix);
  const f = (name: string): string => prefix + name;
  const opts: CommandOptions = {};
  if (body.priority !== undefined) opts.priority = int(body.priority, f('priority'), MIN_PRIORITY, MAX_PRIORITY);
  if (body.runAt !== undefined && body.delay !== undefined) throw bad(f('delay'), 'give runAt or delay, not both');
  if (body.runAt !== undefined) {
    const t = typeof body.runAt === 'string' && ISO_TIME_RE.test(body.runAt) ? Date.parse(body.runAt) : NaN;
    if (!Number.isFinite(t)) throw bad(f('runAt'), `${f('runAt')} must be an ISO time like 2030-01-01T12:00:00Z`);
    if (t - now > MAX_SCHEDULE_MS) throw bad(f('runAt'), `${f('runAt')} is more than 366 days ahead`);
    opts.runAt = t;
  }
  if (body.delay !== undefined) opts.runAt = now + duration(body.delay, f('delay'), 0, MAX_SCHEDULE_MS);
  if (body.retry !== undefined) opts.retry = retryPolicy(body.retry, prefix);
  if (body.timeout !== undefined) opts.timeoutMs = duration(body.timeout, f('timeout'), 1, DAY_MS);
  return { type, payload, opts, body };
}

/**
 * The request as sent, normalized: what an Idempotency-Key's hash covers, so
 * a repeated submit with a relative `delay` hashes the same. Built only for
 * a submit that has a key. (Its fields and their order are what hashes
 * already journaled were taken over: keep them.)
 */
export function asSent(v: ValidSubmit): Obj {
  const out: Obj = { type: v.type, payload: v.payload };
  for (const k of ['priority', 'runAt', 'delay', 'timeout'] as const) if (v.body[k] !== undefined) out[k] = v.body[k];
  if (v.opts.retry) out.retry = v.opts.retry;
  return out;
}

function commandBody(body: Obj, prefix: string): SubmitRequest {
  const type = body.type;
  const f = (name: string): string => prefix + name;
  if (type === undefined) throw bad(f('type'), `${f('type')} is required: one of ${COMMAND_TYPES.join(', ')}`);
  if (!COMMAND_TYPES.includes(type as CommandType)) throw bad(f('type'), `${f('type')} must be one of ${COMMAND_TYPES.join(', ')}`);
  if (body.payload === undefined) throw bad(f('payload'), `${f('payload')} is required`);
  const p = object(body.payload, f('payload'));
  let payload: Payload;
  if (type === 'DELAY') {
    onlyFields(p, ['ms'], f('payload.'));
    if (p.ms === undefined) throw bad(f('payload.ms'), `${f('payload.ms')} is required`);
    payload = { ms: int(p.ms, f('payload.ms'), 0, MAX_DELAY_MS) };
  } else {
    onlyFields(p, ['url', 'expectStatus'], f('payload.'));
    if (p.url === undefined) throw bad(f('payload.url'), `${f('payload.url')} is required`);
    payload = { url: httpUrl(p.url, f('payload.url')) };
    if (p.expectStatus !== undefined) payload.expectStatus = expectStatus(p.expectStatus, f('payload.expectStatus'));
  }
  return { type: type as CommandType, payload };
}

const IDEM_KEY_RE = /^[\x21-\x7e]{1,256}$/;

/** An Idempotency-Key header or a batch item's idempotencyKey: 1-256 visible ASCII characters. */
export function idempotencyKey(v: unknown, field: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !IDEM_KEY_RE.test(v)) throw bad(field, `${field} must be 1-256 visible ASCII characters`);
  return v;
}

/**
 * POST /commands/batch: every item checked before anything is written, the
 * first bad one named by its index (`commands[3].payload.ms`).
 */
export function batchSubmitRequest(body: Obj, now: number): Array<ValidSubmit & { idempotencyKey?: string }> {
  onlyFields(body, ['commands']);
  const list = body.commands;
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_BATCH) {
    throw bad('commands', `commands must be an array of 1 to ${MAX_BATCH} commands`);
  }
  return list.map((it, i) => {
    const field = `commands[${i}]`;
    const item = object(it, field);
    const cmd: ValidSubmit & { idempotencyKey?: string } = submitRequest(item, now, `${field}.`, ['idempotencyKey']);
    const key = idempotencyKey(item.idempotencyKey, `${field}.idempotencyKey`);
    if (key !== undefined) cmd.idempotencyKey = key;
    return cmd;
  });
}

export function claimRequest(body: Obj): ClaimRequest & { finish: FinishItem[]; protocol: number; types: CommandType[] | undefined; resume: boolean } {
  onlyFields(body, ['agentId', 'max', 'waitMs', 'finish', 'protocol', 'types', 'resume']);
  // Checked first: a body from another protocol version may break any other rule.
  const protocol = body.protocol === undefined ? 1 : body.protocol;
  if (typeof protocol !== 'number' || !SERVER_PROTOCOLS.includes(protocol)) {
    throw new HttpError(400, `this agent speaks protocol ${JSON.stringify(protocol)}, this server speaks protocol ${SERVER_PROTOCOLS.join(' or ')}; run an agent and a server of matching versions`, {
      field: 'protocol',
      extra: { serverProtocols: SERVER_PROTOCOLS, agentProtocol: protocol },
    });
  }
  const finish = body.finish ?? [];
  if (!Array.isArray(finish) || finish.length > MAX_BATCH) throw bad('finish', `finish must be an array of at most ${MAX_BATCH} entries`);
  const resume = body.resume ?? false;
  if (typeof resume !== 'boolean') throw bad('resume', 'resume must be true or false');
  return {
    agentId: agentId(body.agentId),
    protocol,
    types: body.types === undefined ? undefined : commandTypes(body.types, 'types'),
    // 0 asks only for what the agent already holds.
    max: body.max === undefined ? 1 : resume && body.max === 0 ? 0 : int(body.max, 'max', 1, MAX_BATCH),
    waitMs: body.waitMs === undefined ? 0 : int(body.waitMs, 'waitMs', 0, 120_000),
    finish: finish.map((it, i) => finishItem(object(it, `finish[${i}]`), `finish[${i}]`)),
    resume,
  };
}

function commandTypes(v: unknown, field: string): CommandType[] {
  const ok = Array.isArray(v) && v.length > 0 && v.every((t) => COMMAND_TYPES.includes(t as CommandType)) && new Set(v).size === v.length;
  if (!ok) throw bad(field, `${field} must be a non-empty list of distinct command types from ${COMMAND_TYPES.join(', ')}`);
  return v as CommandType[];
}

function items<T>(body: Obj, parse: (item: Obj, field: string) => T): { agentId: string; items: T[] } {
  onlyFields(body, ['agentId', 'items']);
  const id = agentId(body.agentId);
  if (!Array.isArray(body.items) || body.items.length === 0 || body.items.length > MAX_BATCH) {
    throw bad('items', `items must be an array of 1 to ${MAX_BATCH} entries`);
  }
  return { agentId: id, items: body.items.map((it, i) => parse(object(it, `items[${i}]`), `items[${i}]`)) };
}

function leaseRef(item: Obj, field: string, extra: readonly string[] = []): LeaseRef {
  onlyFields(item, ['id', 'lease', ...extra], `${field}.`);
  return { id: commandId(item.id, `${field}.id`), lease: int(item.lease, `${field}.lease`, 1, Number.MAX_SAFE_INTEGER) };
}

export function leaseBatch(body: Obj): { agentId: string; items: LeaseRef[] } {
  return items(body, (it, f) => leaseRef(it, f));
}

export function finishBatch(body: Obj): { agentId: string; items: FinishItem[] } {
  return items(body, finishItem);
}

function finishItem(it: Obj, f: string): FinishItem {
  const ref = leaseRef(it, f, ['outcome', 'result', 'error']);
  if (it.outcome !== 'COMPLETED' && it.outcome !== 'FAILED') throw bad(`${f}.outcome`, `${f}.outcome must be COMPLETED or FAILED`);
  if (it.error !== undefined && it.error !== null && typeof it.error !== 'string') throw bad(`${f}.error`, `${f}.error must be a string or null`);
  if (JSON.stringify(it.result ?? null).length > MAX_RESULT_BYTES) throw bad(`${f}.result`, `${f}.result is larger than ${MAX_RESULT_BYTES} bytes`);
  return { ...ref, outcome: it.outcome, result: it.result ?? null, error: (it.error as string | null | undefined) ?? null };
}

export function heartbeatRequest(body: Obj): HeartbeatRequest {
  onlyFields(body, ['agentId', 'leases']);
  const id = agentId(body.agentId);
  const leases = body.leases ?? [];
  if (!Array.isArray(leases) || leases.length > MAX_BATCH) throw bad('leases', `leases must be an array of at most ${MAX_BATCH} entries`);
  return { agentId: id, leases: leases.map((it, i) => leaseRef(object(it, `leases[${i}]`), `leases[${i}]`)) };
}
