// The event streams (Server-Sent Events): GET /events, every transition as it
// is journaled, and GET /commands/:id/events?follow=1, one command's
// transitions until it is final. Both resume after Last-Event-ID (or ?since=).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isFinal, type Command } from '../../state/command-fsm.ts';
import { decodeTrail } from '../../state/command-line.ts';
import { COMMAND_STATUSES, COMMAND_TYPES } from '../protocol.ts';
import { eventViews } from './command-view.ts';
import type { ServerContext } from './context.ts';
import type { StreamedEvent } from './event-hub.ts';
import { HttpError, type RequestTarget } from './http-io.ts';
import { SseStream, sseFrame } from './sse.ts';

export const STREAM_BUFFER_BYTES = 1024 * 1024;
export const STREAM_STALL_MS = 5_000;
export const STREAM_KEEPALIVE_MS = 15_000;

export async function allEvents(ctx: ServerContext, req: IncomingMessage, res: ServerResponse, _p: string[], url: RequestTarget): Promise<void> {
  const q = url.searchParams;
  onlyParams(q, ['type', 'status', 'since']);
  const types = oneOf(q, 'type', COMMAND_TYPES);
  const statuses = oneOf(q, 'status', COMMAND_STATUSES);
  const since = resumePoint(req, q);
  const wanted = (e: StreamedEvent): boolean => (!types || types.has(e.type)) && (!statuses || statuses.has(e.status));
  // Several servers on one database: an id read on another server may be one
  // this server's feed has not reached yet. It is committed, so follow from it.
  const committed = since !== undefined && since > ctx.events.lastSeq ? await ctx.backend.committedSeq?.() : undefined;
  let skipTo = 0;

  // From here to subscribe() is one tick: nothing published falls between
  // what is replayed and what follows.
  const stream = open(ctx, res, '/events');
  if (since !== undefined) {
    const held = ctx.events.after(since);
    if (held) {
      for (const e of held) if (wanted(e)) stream.send(e.frame, e.seq);
    } else if (committed !== undefined && since > ctx.events.lastSeq && since <= committed) {
      skipTo = since;
    } else {
      const why = since > ctx.events.lastSeq ? `seq ${since} is past this server's last (${ctx.events.lastSeq})` : `the transitions after seq ${since} are no longer held`;
      stream.reset('gone', `${why}; list again, then follow from this id`, ctx.events.lastSeq, false);
    }
  }
  stream.onClose(ctx.events.subscribe((e) => e.seq > skipTo && wanted(e) && stream.send(e.frame, e.seq)));
}

/** GET /commands/:id/events?follow=1, after the caller checked the id and that it exists. */
export function followCommand(ctx: ServerContext, req: IncomingMessage, res: ServerResponse, cmd: Command, url: RequestTarget): void {
  // The ids are the command's own event numbers (1, 2, ...), whose trail is
  // kept whole: any resume point works.
  let sent = resumePoint(req, url.searchParams) ?? 0;
  if (isFinal(cmd.state) && sent >= decodeTrail(cmd).length) {
    // Nothing more will come. 204 tells an EventSource to stop reconnecting.
    res.writeHead(204);
    res.end();
    return;
  }
  const stream = open(ctx, res, '/commands/:id/events');
  const catchUp = (c: Command): void => {
    for (const v of eventViews(decodeTrail(c))) {
      if (v.seq <= sent) continue;
      stream.send(sseFrame(v.event, JSON.stringify(v), v.seq), v.seq);
      sent = v.seq;
    }
    if (isFinal(c.state)) stream.end();
  };
  stream.onClose(ctx.events.watch(cmd.id, catchUp));
  catchUp(cmd);
}

/** Whether GET /commands/:id/events asks for a stream; refuses unknown parameters. */
export function wantsFollow(q: URLSearchParams): boolean {
  onlyParams(q, ['follow', 'since']);
  const f = q.get('follow');
  if (f === null || f === '0' || f === 'false') {
    if (q.has('since')) throw new HttpError(400, 'since is for a stream: add follow=1', { field: 'since' });
    return false;
  }
  if (f === '1' || f === 'true' || f === '') return true;
  throw new HttpError(400, 'follow must be 1 or 0', { field: 'follow' });
}

function open(ctx: ServerContext, res: ServerResponse, route: string): SseStream {
  const stream = new SseStream(res, {
    bufferBytes: ctx.config.streamBufferBytes ?? STREAM_BUFFER_BYTES,
    stallMs: ctx.config.streamStallMs ?? STREAM_STALL_MS,
    keepaliveMs: ctx.config.streamKeepaliveMs ?? STREAM_KEEPALIVE_MS,
    onCutOff: () => {
      ctx.streams.cutOff++;
      ctx.log('event stream cut off', { route, bufferBytes: res.writableLength });
    },
  });
  ctx.streams.open.add(stream);
  stream.onClose(() => ctx.streams.open.delete(stream));
  return stream;
}

function onlyParams(q: URLSearchParams, allowed: readonly string[]): void {
  for (const k of q.keys()) {
    if (!allowed.includes(k)) throw new HttpError(400, `unknown query parameter "${k}"; allowed: ${allowed.join(', ')}`, { field: k });
  }
}

/** A comma-separated filter; undefined when absent. */
function oneOf<T extends string>(q: URLSearchParams, name: string, allowed: readonly T[]): Set<string> | undefined {
  const all = q.getAll(name);
  if (all.length === 0) return undefined;
  const values = all.flatMap((v) => v.split(','));
  for (const v of values) {
    if (!allowed.includes(v as T)) throw new HttpError(400, `${name} must be one or more of ${allowed.join(', ')} (comma-separated)`, { field: name });
  }
  return new Set(values);
}

/** Last-Event-ID (what an EventSource sends when it reconnects) or ?since=. */
function resumePoint(req: IncomingMessage, q: URLSearchParams): number | undefined {
  const header = req.headers['last-event-id'];
  const [text, field] = typeof header === 'string' && header !== '' ? [header, 'Last-Event-ID'] : [q.get('since'), 'since'];
  if (text === null) return undefined;
  if (!/^\d{1,15}$/.test(text)) throw new HttpError(400, `${field} must be an event id: a whole number`, { field });
  return Number(text);
}
