// How the CLI prints: aligned tables and key/value blocks for people, JSON for
// programs, and a status line that rewrites itself on a terminal (and prints
// nothing anywhere else).
import type { CommandView } from '../protocol.ts';

/** Columns padded to their widest cell; the last column is not padded. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** `key  value` lines, the keys padded to one width. */
export function keyValues(pairs: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  // A value of several lines keeps its lines under the first.
  const value = (v: string): string => v.split('\n').join(`\n${' '.repeat(w + 2)}`);
  return pairs.map(([k, v]) => `${k.padEnd(w)}  ${value(v)}`.trimEnd()).join('\n') + '\n';
}

/** One fixed-width row, for streams that cannot know their widest cell in advance. */
export function fixedRow(cells: readonly string[], widths: readonly number[]): string {
  return cells.map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd() + '\n';
}

export function jsonDoc(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

export function jsonLine(value: unknown): string {
  return JSON.stringify(value) + '\n';
}

/** A value as one short line: strings bare, the rest as JSON, cut at `max`. */
export function brief(value: unknown, max = 60): string {
  if (value === null || value === undefined) return '';
  const s = typeof value === 'string' ? value : JSON.stringify(value);
  return s.length > max ? `${s.slice(0, max - 3)}...` : s;
}

/** 850ms, 12s, 3m, 5h, 2d: how long ago (or until) in one short word. */
export function shortDuration(ms: number): string {
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(a)}ms`;
  if (a < 60_000) return `${Math.floor(a / 1000)}s`;
  if (a < 3_600_000) return `${Math.floor(a / 60_000)}m`;
  if (a < 86_400_000) return `${Math.floor(a / 3_600_000)}h`;
  return `${Math.floor(a / 86_400_000)}d`;
}

/** What a list row says beyond the status: the error, the result, or when it is due. */
export function outcomeSummary(c: CommandView, now: number): string {
  if (c.status === 'FAILED') return c.error ?? '';
  if (c.status === 'COMPLETED') return brief(c.result);
  const due = c.nextAttemptAt ?? c.runAt;
  if (c.status === 'PENDING' && typeof due === 'string' && Date.parse(due) > now) return `due in ${shortDuration(Date.parse(due) - now)}`;
  if (c.cancelRequested) return 'cancel requested';
  return '';
}

const SHOWN_FIELDS = new Set(['id', 'type', 'payload', 'status', 'state', 'agentId', 'attempt', 'result', 'error', 'cancelRequested', 'createdAt', 'updatedAt',
  'priority', 'retry', 'timeoutMs', 'runAt', 'nextAttemptAt', 'retryOf', 'attempts']);

function text(v: unknown): string {
  return v === null || v === undefined ? '-' : typeof v === 'string' ? v : JSON.stringify(v);
}

/** `keel get`: every field of the view, the usual ones first, any the CLI does not know after. */
export function commandBlock(c: CommandView): string {
  const pairs: Array<[string, string]> = [
    ['id', c.id],
    ['type', c.type],
    ['payload', text(c.payload)],
    ['status', c.state === c.status ? c.status : `${c.status} (${c.state})`],
    ['agent', text(c.agentId)],
    ['result', text(c.result)],
    ['error', text(c.error)],
  ];
  if (c.cancelRequested) pairs.push(['cancel', 'requested']);
  if (c.priority !== undefined) pairs.push(['priority', String(c.priority)]);
  if (c.retry) pairs.push(['retry', `${c.retry.attempts} attempts, ${c.retry.backoff} backoff from ${shortDuration(c.retry.delayMs)}, at most ${shortDuration(c.retry.maxDelayMs)}`]);
  if (c.timeoutMs) pairs.push(['timeout', shortDuration(c.timeoutMs)]);
  if (c.runAt) pairs.push(['run at', c.runAt]);
  if (c.nextAttemptAt) pairs.push(['next attempt', c.nextAttemptAt]);
  if (c.retryOf) pairs.push(['retry of', c.retryOf]);
  if (c.attempts?.length) {
    const rows = c.attempts.map((a) => [`#${a.number}`, a.agentId ?? '-', a.outcome ?? 'RUNNING', a.error ?? '', a.startedAt, a.finishedAt ? `to ${a.finishedAt}` : '']);
    pairs.push(['attempts', table(['', 'AGENT', 'OUTCOME', 'ERROR', 'STARTED', ''], rows).split('\n').slice(1, -1).join('\n')]);
  } else {
    pairs.push(['lease', text(c.attempt)]);
  }
  for (const [k, v] of Object.entries(c)) if (!SHOWN_FIELDS.has(k) && v !== null && v !== undefined) pairs.push([k, text(v)]);
  pairs.push(['created', c.createdAt], ['updated', c.updatedAt]);
  return keyValues(pairs);
}

/**
 * A single line rewritten in place on a terminal: progress that would be
 * noise in a pipe or a file, so elsewhere it prints nothing at all.
 */
export class StatusLine {
  private readonly stream: NodeJS.WriteStream;
  private shown = false;

  constructor(stream: NodeJS.WriteStream) {
    this.stream = stream;
  }

  get enabled(): boolean {
    return this.stream.isTTY === true;
  }

  show(text: string): void {
    if (!this.enabled) return;
    const width = this.stream.columns || 80;
    this.stream.write(`\r\x1b[2K${text.length >= width ? text.slice(0, width - 1) : text}`);
    this.shown = true;
  }

  clear(): void {
    if (!this.shown) return;
    this.stream.write('\r\x1b[2K');
    this.shown = false;
  }
}
