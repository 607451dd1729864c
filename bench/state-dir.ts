// Big state directories for the restart benchmarks, written straight in the
// on-disk format (a snapshot, and a journal of real records) rather than
// pushed through HTTP, which would take minutes; a server then opens one
// exactly as after a crash.
import fs from 'node:fs';
import path from 'node:path';
import { PLAIN_JOB, type Command } from '../state/command-fsm.ts';
import { encode, type CommandRecord } from '../state/command-table.ts';
import { toJournal } from '../state/command-record.ts';
import { encodeRecord, JOURNAL_FORMAT, segmentName } from '../state/journal.ts';
import { installSnapshot, writeSnapshotTmp } from '../state/snapshot.ts';
import { DEFAULT_SNAPSHOT_BYTES, SNAPSHOT_FLOOR_BYTES } from '../state/durable-machine.ts';

// Recent: older final commands would be forgotten at start by retention (--retain, 7 days).
const at = Date.now() - 3_600_000;

/** The i-th command's id: a valid lowercase UUID, distinct for every i. */
export const uuid = (i: number): string => `${i.toString(16).padStart(8, '0')}-0000-4000-8000-${(i * 7919).toString(16).padStart(12, '0').slice(-12)}`;

function command(i: number, state: 'PENDING' | 'COMPLETED'): Command {
  const t = at + i;
  const agentId = `agent-${i % 16}`;
  const base: Command = { id: uuid(i), type: 'DELAY', payload: { ms: 250 }, state: 'PENDING', version: 1, attempt: 0, agentId: null, result: null, error: null, cancelRequested: false, createdAt: t, updatedAt: t, idemKey: null, bodyHash: null, trail: 'submit,P,0', ...PLAIN_JOB };
  if (state === 'PENDING') return base;
  return { ...base, state, version: 3, attempt: 1, agentId, result: { ok: true, tookMs: 251 }, executions: 1, updatedAt: t + 3, trail: `submit,P,0;claim-start,R,1,${agentId},1;finish,C,3,${agentId},1` };
}

/** Journal bytes of one command's whole life, and snapshot bytes of it once COMPLETED. */
function lifeBytes(): { journal: number; line: number } {
  let journal = 0;
  for (const r of lifeRecords(0, 'agent-0', at)) journal += encodeRecord(1_000_000, toJournal(r)).length;
  return { journal, line: encode(command(0, 'COMPLETED')).length + 1 };
}

/**
 * What a server that ran `total` commands leaves at worst under the snapshot
 * policy (state/durable-machine.ts): a snapshot, and a journal tail just short
 * of the size that would have started the next one. Returns how many of the
 * commands are in the tail.
 */
export function worstTail(total: number, snapshotBytes = DEFAULT_SNAPSHOT_BYTES): number {
  const { journal, line } = lifeBytes();
  // Solve for the tail k: the snapshot holds total - k lines, and the tail
  // stays under min(cap, max(floor, snapshot / 2)).
  let k = 0;
  for (let i = 0; i < 20; i++) {
    const limit = Math.min(snapshotBytes, Math.max(SNAPSHOT_FLOOR_BYTES, ((total - k) * line) / 2));
    k = Math.min(total, Math.floor(limit / journal) - 1);
  }
  return Math.max(0, k);
}

/** One command's whole life as a server journals it (claim-and-start: three records). */
function lifeRecords(i: number, agentId: string, t: number): CommandRecord[] {
  const id = uuid(i);
  return [
    { id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 250 }, at: t } },
    { id, from: 'PENDING', version: 1, ev: { type: 'claim-start', agentId, lease: 1, at: t + 1 } },
    { id, from: 'RUNNING', version: 2, ev: { type: 'finish', agentId, lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 251 }, error: null, at: t + 3 } },
  ];
}

/** Journal records per command in the tail of a state dir. */
export const RECORDS_PER_LIFE = lifeRecords(0, 'agent-0', at).length;

/** What else a state dir holds: PENDING commands spread over priorities, and commands SCHEDULED a day ahead. */
export interface Mix {
  priorities?: readonly number[];
  scheduled: number;
}
const NO_MIX: Mix = { scheduled: 0 };

/**
 * A state dir in `parent`: a snapshot of `total` commands (the last `pending`
 * of them PENDING; none if total is 0) and a journal of `tail` more commands'
 * whole lives (submit, claim-start, finish), as the store journals them.
 */
export async function buildStateDir(parent: string, total: number, pending: number, tail: number, mix: Mix = NO_MIX): Promise<string> {
  const dir = fs.mkdtempSync(path.join(parent, 'state-'));
  const seq = total * RECORDS_PER_LIFE;
  const runAt = Date.now() + 24 * 3600 * 1000;
  if (total > 0) {
    await writeSnapshotTmp(dir, 'commands', seq, (function* () {
      for (let i = 0; i < total; i++) {
        const c = command(i, i >= total - pending ? 'PENDING' : 'COMPLETED');
        if (mix.priorities && c.state === 'PENDING') c.priority = mix.priorities[i % mix.priorities.length]!;
        yield encode(c);
      }
      // Ids after the tail's: SCHEDULED a day ahead.
      for (let i = total + tail; i < total + tail + mix.scheduled; i++) yield encode({ ...command(i, 'PENDING'), state: 'SCHEDULED', runAt });
    })());
    installSnapshot(dir);
  }
  const fd = fs.openSync(path.join(dir, segmentName(seq + 1)), 'w');
  let lines: string[] = [`${JSON.stringify({ keel: 'journal', format: JOURNAL_FORMAT, firstSeq: seq + 1 })}\n`];
  let s = seq;
  for (let i = 0; i < tail; i++) {
    for (const r of lifeRecords(total + i, `agent-${i % 16}`, at + total + i)) lines.push(encodeRecord(++s, toJournal(r)));
    if (lines.length > 40_000) {
      fs.writeSync(fd, lines.join(''));
      lines = [];
    }
  }
  fs.writeSync(fd, lines.join(''));
  fs.closeSync(fd);
  return dir;
}

export function sizes(dir: string): { snapshot: number; journal: number } {
  let journal = 0;
  let snapshot = 0;
  for (const f of fs.readdirSync(dir)) {
    if (f.startsWith('journal-')) journal += fs.statSync(path.join(dir, f)).size;
    if (f === 'snapshot.jsonl') snapshot = fs.statSync(path.join(dir, f)).size;
  }
  return { snapshot, journal };
}
