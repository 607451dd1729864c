// Request and response plumbing for node:http: bounded JSON bodies, JSON
// replies, and HttpError, the one way a handler refuses a request.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorBody } from '../protocol.ts';
import { flushLogs } from '../log.ts';

export const MAX_BODY_BYTES = 64 * 1024;
// After a 413, this much more of the body is read and dropped before the
// connection is closed (gracefully, see discardBody).
const DISCARD_LIMIT_BYTES = 64 * 1024 * 1024;
const LINGER_MS = 2000;

/** A request's path and query, as handlers see it (a URL, or the same two fields of a plain path). The query is read only: one empty query is shared. */
export interface RequestTarget {
  readonly pathname: string;
  readonly searchParams: URLSearchParams;
}

/** A refusal the client can act on: status, a message, and the field at fault. */
export class HttpError extends Error {
  readonly status: number;
  readonly field: string | undefined;
  readonly headers: Record<string, string>;
  readonly extra: Record<string, unknown>;
  constructor(status: number, message: string, opts: { field?: string; headers?: Record<string, string>; extra?: Record<string, unknown> } = {}) {
    super(message);
    this.status = status;
    this.field = opts.field;
    this.headers = opts.headers ?? {};
    this.extra = opts.extra ?? {};
  }
  body(): ErrorBody & Record<string, unknown> {
    return { error: this.message, ...(this.field !== undefined ? { field: this.field } : {}), ...this.extra };
  }
}

/** Read and parse a JSON object body of at most `limit` bytes. */
export async function readJsonObject(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) throw tooLarge(limit);
  const text = await readBody(req, limit);
  if (text.trim() === '') throw new HttpError(400, 'request body is empty; send a JSON object', { field: 'body' });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `request body is not valid JSON: ${(err as Error).message}`, { field: 'body' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HttpError(400, 'request body must be a JSON object', { field: 'body' });
  }
  return value as Record<string, unknown>;
}

// Plain listeners rather than `for await`: the async iterator's setup was a
// visible share of the server's CPU per request. Once settled, the listeners
// stay (guarded) rather than being taken off one by one: the request is done
// with, and its 'error' keeps a listener.
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let first: Buffer | undefined;
    let more: Buffer[] | undefined;
    let size = 0;
    let settled = false;
    const onData = (chunk: Buffer): void => {
      if (settled) return;
      size += chunk.length;
      if (size > limit) {
        settled = true;
        req.off('data', onData);
        reject(tooLarge(limit)); // the rest is dropped by discardBody once the answer is out
        return;
      }
      if (first === undefined) first = chunk;
      else (more ??= [first]).push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => {
      if (settled) return;
      settled = true;
      resolve(more ? Buffer.concat(more).toString('utf8') : first ? first.toString('utf8') : '');
    });
    // The client hung up (or was cut off by requestTimeout) mid-body: its
    // fault, not an internal error; nobody is left to read the answer.
    const onCut = (err?: Error): void => {
      if (settled) return;
      settled = true;
      reject(new HttpError(400, `request body was cut off: ${err?.message ?? 'the connection closed'}`, { field: 'body' }));
    };
    req.on('error', onCut);
    req.on('close', onCut);
  });
}

function tooLarge(limit: number): HttpError {
  return new HttpError(413, `request body is larger than ${limit} bytes`, { field: 'body' });
}

/**
 * After an answer sent before the body was read (a 413): read the rest of the
 * body and drop it. Closing at once would reset the connection while the
 * client is still writing, and a reset can throw away the answer before the
 * client reads it. The parser frames the rest of the body, so the connection
 * stays usable. A body that goes on past DISCARD_LIMIT_BYTES more gets a
 * graceful close: FIN first, then the socket is destroyed after a linger.
 */
export function discardBody(req: IncomingMessage): void {
  if (req.complete) return;
  let left = DISCARD_LIMIT_BYTES;
  const onData = (chunk: Buffer): void => {
    left -= chunk.length;
    if (left >= 0) return;
    req.off('data', onData);
    const socket = req.socket;
    socket.end();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  };
  req.on('data', onData);
  req.resume();
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  if (res.headersSent || res.destroyed) return;
  // What the answer acknowledges is logged before it: a SIGKILL after the
  // answer must not take the transition's log line with it.
  flushLogs();
  send(res, status, JSON.stringify(body), 'application/json', headers);
}

export function sendText(res: ServerResponse, status: number, text: string, contentType = 'text/plain; charset=utf-8'): void {
  if (res.headersSent || res.destroyed) return;
  flushLogs();
  send(res, status, text, contentType, undefined);
}

// Headers as one flat array: node:http writes it as it is, where an object
// is walked key by key (and a spread of extra headers built one per answer).
function send(res: ServerResponse, status: number, text: string, contentType: string, extra: Record<string, string> | undefined): void {
  const headers: Array<string | number> = ['content-type', contentType, 'content-length', Buffer.byteLength(text)];
  if (extra !== undefined) for (const k in extra) headers.push(k, extra[k]!);
  res.writeHead(status, headers as string[]);
  res.end(text);
}

// A fixed reason: abort() without one builds a DOMException, stack and all.
const GONE = new Error('the client went away');

/**
 * Aborts when the client goes away, so a long-poll or a parked claim stops
 * waiting for nobody. (req's own 'close' fires once its body is read, so only
 * res tells.)
 */
export function whenGone(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  if (!res.socket || res.socket.destroyed) ac.abort(GONE);
  else res.once('close', () => ac.abort(GONE));
  return ac.signal;
}
