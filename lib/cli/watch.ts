// The subcommands that follow the server's event streams: wait, events and
// tail. A stream that ends early (the server restarted, a proxy cut it) is
// opened again with Last-Event-ID, so nothing is printed twice or skipped.
import type { CommandEventView, CommandStatus, CommandView } from '../protocol.ts';
import type { KeelClient } from './client.ts';
import { CliError, EXIT, ServerUnreachable, type ExitCode } from './errors.ts';
import { choiceList, durationValue, idArg, integerValue, type Invocation } from './invocation.ts';
import { brief, commandBlock, fixedRow, jsonDoc, jsonLine, StatusLine } from './output.ts';
import type { SseEvent } from './sse.ts';
import { COMMAND_STATUSES, COMMAND_TYPES } from '../protocol.ts';
import { monotonicMs } from '../clock.ts';

/** How long a stream keeps trying to get the server back before it gives up (exit 3). */
const RECONNECT_FOR_MS = 10_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * When to open a stream again: at once after it ended, after a growing pause
 * while the server is unreachable, and never once that has lasted
 * RECONNECT_FOR_MS or the failure is of another kind (a refused token).
 */
class Reconnect {
  private downSince: number | undefined;
  private pauseMs = 100;

  reached(): void {
    this.downSince = undefined;
    this.pauseMs = 100;
  }

  /** After a failed attempt: rethrows it, or waits before the next. */
  async failed(err: unknown, signal?: AbortSignal): Promise<void> {
    if (!(err instanceof ServerUnreachable) || signal?.aborted) throw err;
    this.downSince ??= monotonicMs();
    if (monotonicMs() - this.downSince > RECONNECT_FOR_MS) throw err;
    await sleep(this.pauseMs);
    this.pauseMs = Math.min(this.pauseMs * 2, 2000);
  }
}

export function isFinalStatus(s: CommandStatus): boolean {
  return s === 'COMPLETED' || s === 'FAILED';
}

/** The status a client sees for an internal state: the waiting states show as PENDING. */
function statusOf(state: string): CommandStatus {
  return state === 'RUNNING' || state === 'COMPLETED' || state === 'FAILED' ? state : 'PENDING';
}

class WaitTimedOut extends Error {}

/**
 * Follow one command's transitions (GET /commands/:id/events?follow=1) until
 * it is final; `onEvent` sees each once, oldest first. Resolves with the
 * final command; an abort of `signal` rejects with its reason.
 */
async function followCommand(client: KeelClient, id: string, onEvent: (e: CommandEventView) => void, signal?: AbortSignal): Promise<CommandView> {
  const path = `/commands/${id}`;
  const reconnect = new Reconnect();
  let lastId = '';
  for (;;) {
    try {
      const events = await client.stream(`${path}/events?follow=1`, { lastEventId: lastId, signal });
      reconnect.reached();
      let got = 0;
      for await (const e of events ?? []) {
        lastId = e.id;
        got++;
        onEvent(JSON.parse(e.data) as CommandEventView);
      }
      const view = (await client.request<CommandView>('GET', path, { signal })).body;
      if (isFinalStatus(view.status)) return view;
      // Ended before the command did: open it again, after a pause if it gave nothing.
      if (got === 0) await sleep(500);
    } catch (err) {
      await reconnect.failed(err, signal);
    }
  }
}

/** Wait for a command to be final, with a live status line on a terminal. Undefined when timeoutMs ran out. */
export async function waitForFinal(inv: Invocation, id: string, timeoutMs: number | undefined): Promise<CommandView | undefined> {
  const client = inv.client();
  const line = new StatusLine(inv.stderr);
  const ac = new AbortController();
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => ac.abort(new WaitTimedOut()), timeoutMs);
  const t0 = monotonicMs();
  let status = 'PENDING';
  let detail = '';
  const render = (): void => line.show(`${((monotonicMs() - t0) / 1000).toFixed(1)}s  ${decodeURIComponent(id)} ${status}${detail}`);
  const ticker = line.enabled ? setInterval(render, 200) : undefined;
  try {
    const first = (await client.request<CommandView>('GET', `/commands/${id}`, { signal: ac.signal })).body;
    if (isFinalStatus(first.status)) return first;
    status = first.status;
    detail = first.agentId ? ` on ${first.agentId}` : '';
    render();
    return await followCommand(client, id, (e) => {
      // The stream starts with the history the first answer already covers.
      if (e.at < first.updatedAt) return;
      status = statusOf(e.to);
      detail = e.agentId ? ` on ${e.agentId}` : detail;
      render();
    }, ac.signal);
  } catch (err) {
    if (err instanceof WaitTimedOut) return undefined;
    throw err;
  } finally {
    clearTimeout(timer);
    clearInterval(ticker);
    line.clear();
  }
}

/** Print a final command and turn its status into the exit code. */
export function finalOutcome(inv: Invocation, view: CommandView): ExitCode {
  inv.stdout.write(inv.json ? jsonDoc(view) : commandBlock(view));
  return view.status === 'COMPLETED' ? EXIT.OK : EXIT.FAILED;
}

export async function wait(inv: Invocation): Promise<ExitCode> {
  const timeoutMs = durationValue(inv, 'timeout');
  const view = await waitForFinal(inv, idArg(inv), timeoutMs);
  if (!view) throw new CliError(EXIT.TIMEOUT, `${inv.args[0]} is not final after ${inv.values.timeout}`);
  return finalOutcome(inv, view);
}

const EVENT_HEADER = ['SEQ', 'EVENT', 'FROM', 'TO', 'AT', 'AGENT', 'LEASE', 'ERROR'];
const EVENT_WIDTHS = [4, 8, 10, 10, 24, 20, 5];
const eventRow = (e: CommandEventView): string[] => [String(e.seq), e.event, e.from ?? '-', e.to, e.at, e.agentId ?? '', e.lease === undefined ? '' : String(e.lease), e.error ?? ''];

export async function events(inv: Invocation): Promise<ExitCode> {
  const client = inv.client();
  const id = idArg(inv);
  const print = (e: CommandEventView): void => {
    inv.stdout.write(inv.json ? jsonLine(e) : fixedRow(eventRow(e), EVENT_WIDTHS));
  };
  if (!inv.json) inv.stdout.write(fixedRow(EVENT_HEADER, EVENT_WIDTHS));
  if (inv.values.follow) {
    await followCommand(client, id, print);
    return EXIT.OK;
  }
  const r = await client.request<{ id: string; events: CommandEventView[] }>('GET', `/commands/${id}/events`);
  if (inv.json) inv.stdout.write(jsonDoc(r.body));
  else r.body.events.forEach(print);
  return EXIT.OK;
}

const TAIL_HEADER = ['SEQ', 'EVENT', 'ID', 'TYPE', 'STATUS', 'AGENT', 'DETAIL'];
const TAIL_WIDTHS = [7, 8, 36, 13, 9, 20];

export async function tail(inv: Invocation): Promise<ExitCode> {
  const client = inv.client();
  const q = new URLSearchParams();
  const types = choiceList(inv, 'type', COMMAND_TYPES);
  const statuses = choiceList(inv, 'status', COMMAND_STATUSES);
  const since = integerValue(inv, 'since', 0);
  if (types) q.set('type', types.join(','));
  if (statuses) q.set('status', statuses.join(','));
  if (since !== undefined) q.set('since', String(since));
  const path = `/events${q.size > 0 ? `?${q}` : ''}`;
  if (!inv.json) inv.stdout.write(fixedRow(TAIL_HEADER, TAIL_WIDTHS));

  let lastId = '';
  const print = (e: SseEvent): void => {
    const seq = Number(e.id);
    const data = JSON.parse(e.data) as unknown;
    if (inv.json) {
      inv.stdout.write(jsonLine({ seq, event: e.event, data }));
    } else if (e.event === 'reset') {
      const r = data as { reason?: string; message?: string };
      inv.stdout.write(`reset: ${r.message ?? r.reason ?? 'some transitions were missed'}\n`);
    } else {
      const c = data as CommandView;
      const detail = c.status === 'FAILED' ? (c.error ?? '') : c.status === 'COMPLETED' ? brief(c.result) : '';
      inv.stdout.write(fixedRow([e.id, e.event, c.id, c.type, c.status, c.agentId ?? '', detail], TAIL_WIDTHS));
    }
  };

  // Runs until interrupted. A stream that breaks or ends is opened again
  // after lastId; only a server gone for RECONNECT_FOR_MS ends it (exit 3).
  const reconnect = new Reconnect();
  for (;;) {
    try {
      const stream = await client.stream(path, { lastEventId: lastId });
      reconnect.reached();
      for await (const e of stream ?? []) {
        if (e.id) lastId = e.id;
        print(e);
      }
    } catch (err) {
      await reconnect.failed(err);
    }
  }
}
