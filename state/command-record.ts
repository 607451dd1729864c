// How the server journals a command record (format 3, docs/format.md): a
// JSON array with the fields at fixed places, not an object. Replay parses
// every record at every start, and an array parses in about half the time of
// the same record with its keys, and is a third shorter.
//   [id, from, version, type, at, ...the event's own fields]
// Older records (formats 1 and 2) are objects, and so is retention's forget
// record: fromJournal() takes both.
import type { CommandEvent } from './command-fsm.ts';
import type { CommandState, CommandType, Outcome } from './command-types.ts';
import type { CommandRecord, TableRecord } from './command-table.ts';

/** The JSON a record is journaled as. */
export function toJournal(rec: TableRecord): unknown {
  if (!('ev' in rec)) return rec; // forget
  const { id, from, version, ev } = rec;
  switch (ev.type) {
    case 'submit':
      return trimNulls([id, from, version, ev.type, ev.at, ev.cmdType, ev.payload, ev.idemKey ?? null, ev.bodyHash ?? null, ev.opts ?? null], 7);
    case 'claim-start':
    case 'claim':
    case 'start':
    case 'release':
      return [id, from, version, ev.type, ev.at, ev.agentId, ev.lease];
    case 'finish':
      return trimNulls([id, from, version, ev.type, ev.at, ev.agentId, ev.lease, ev.outcome, ev.result ?? null, ev.error, ev.retryAt ?? null], 10);
    case 'expire':
    case 'timeout':
      return trimNulls([id, from, version, ev.type, ev.at, ev.lease, ev.retryAt ?? null], 6);
    case 'cancel':
    case 'due':
      return [id, from, version, ev.type, ev.at];
  }
}

/** A journaled record back, in either form; throws if it is neither. */
export function fromJournal(raw: unknown): TableRecord {
  if (!Array.isArray(raw)) {
    if (raw === null || typeof raw !== 'object') throw new Error('the record is neither an array nor an object');
    return raw as TableRecord;
  }
  const a = raw as unknown[];
  const [id, from, version, type, at] = a;
  if (a.length < 5 || typeof id !== 'string' || typeof version !== 'number' || typeof at !== 'number') throw new Error('the record array does not begin [id, from, version, type, at]');
  let ev: CommandEvent;
  switch (type) {
    case 'submit': {
      ev = { type, id, cmdType: a[5] as CommandType, payload: a[6] as never, at };
      if (a[7] != null) ev.idemKey = a[7] as string;
      if (a[8] != null) ev.bodyHash = a[8] as string;
      if (a[9] != null) ev.opts = a[9] as NonNullable<typeof ev.opts>;
      break;
    }
    case 'claim-start':
    case 'claim':
    case 'start':
    case 'release':
      ev = { type, agentId: a[5] as string, lease: a[6] as number, at };
      break;
    case 'finish':
      ev = { type, agentId: a[5] as string, lease: a[6] as number, outcome: a[7] as Outcome, result: a[8] ?? null, error: (a[9] ?? null) as string | null, at };
      if (a[10] != null) ev.retryAt = a[10] as number;
      break;
    case 'expire':
    case 'timeout': {
      const lapsed: Extract<CommandEvent, { type: 'expire' | 'timeout' }> = { type, lease: a[5] as number, at };
      if (a[6] != null) lapsed.retryAt = a[6] as number;
      ev = lapsed;
      break;
    }
    case 'cancel':
    case 'due':
      ev = { type, at };
      break;
    default:
      throw new Error(`unknown event type ${JSON.stringify(type)}`);
  }
  const rec: CommandRecord = { id, from: from as CommandState | null, version, ev };
  return rec;
}

/** Drop trailing nulls (absent optional fields), keeping the first `keep` fields. */
function trimNulls(a: unknown[], keep: number): unknown[] {
  let n = a.length;
  while (n > keep && a[n - 1] === null) n--;
  a.length = n;
  return a;
}
