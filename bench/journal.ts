// Journal benchmark: durable append rates (1 and 64 writers) against the raw
// write+fdatasync rate of this disk, then open times for a journal of
// 1,000,000 transitions and for a snapshot of 1,000,000 commands.
//   npm run bench:journal        (node --import tsx bench/journal.ts)
//   npm run bench:journal -- append|replay|snapshot     (one part only)
// Env: BENCH_SECONDS (default 3) per append run; BENCH_RECORDS (1000000).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PLAIN_JOB, type Command } from '../state/command-fsm.ts';
import { CommandTable, encode, type CommandRecord } from '../state/command-table.ts';
import { toJournal } from '../state/command-record.ts';
import { DurableMachine } from '../state/durable-machine.ts';
import { encodeRecord, Journal, RESERVE_BYTES } from '../state/journal.ts';
import { openJournal } from '../state/replay.ts';
import { installSnapshot, writeSnapshotTmp } from '../state/snapshot.ts';
import { emitResults, result } from './report.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const N = Number(process.env.BENCH_RECORDS ?? 1_000_000);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-'));
const at = 1_700_000_000_000;

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const print = (label: string, value: string): void => console.log(`${label.padEnd(44)} ${value}`);

/**
 * The four records of one command's life before claim-and-start (claim and
 * start apart), kept so the records/s figure compares with earlier runs;
 * journaled in this release's form (toJournal).
 */
function lifeOf(i: number): CommandRecord[] {
  const id = `cmd-${String(i).padStart(8, '0')}-4f6c-9a1e-2b7d3c8e5f01`;
  const agentId = `agent-${i % 16}`;
  return [
    { id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 250 }, at: at + i } },
    { id, from: 'PENDING', version: 1, ev: { type: 'claim', agentId, lease: 1, at: at + i + 1 } },
    { id, from: 'ASSIGNED', version: 2, ev: { type: 'start', agentId, lease: 1, at: at + i + 2 } },
    { id, from: 'RUNNING', version: 3, ev: { type: 'finish', agentId, lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 251 }, error: null, at: at + i + 3 } },
  ];
}

function freshJournal(): Journal {
  const dir = fs.mkdtempSync(path.join(root, 'j-'));
  return openJournal(dir, { afterSeq: 0, onRecord: () => {} });
}

async function appendRun(writers: number, rec: unknown): Promise<{ perSec: number; fsyncsPerSec: number; perFsync: number }> {
  const journal = freshJournal();
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  let n = 0;
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (performance.now() < end) {
        await journal.append([rec]);
        n++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  journal.close();
  return { perSec: n / secs, fsyncsPerSec: journal.stats.fsyncs / secs, perFsync: journal.stats.records / journal.stats.fsyncs };
}

/** write+fdatasync in a loop: appending (O_APPEND), or (`reserved`) at the end of the data inside a file extended ahead, as the journal writes. */
function rawRate(bytes: number, reserved = false): number {
  const file = path.join(root, reserved ? 'raw-reserved' : 'raw');
  const fd = fs.openSync(file, reserved ? 'w+' : 'a');
  const buf = Buffer.alloc(bytes, 'x');
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  let n = 0;
  let size = 0;
  while (performance.now() < end) {
    if (reserved && (n + 1) * bytes > size) fs.ftruncateSync(fd, (size += RESERVE_BYTES));
    if (reserved) fs.writeSync(fd, buf, 0, bytes, n * bytes);
    else fs.writeSync(fd, buf);
    fs.fdatasyncSync(fd);
    n++;
  }
  const rate = n / ((performance.now() - t0) / 1000);
  fs.closeSync(fd);
  return rate;
}

/** Runs fn; returns its value, wall seconds, and CPU seconds of this process (GC threads included). */
async function timed<T>(fn: () => Promise<T> | T): Promise<[T, number, number]> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const v = await fn();
  const c = process.cpuUsage(c0);
  return [v, (performance.now() - t0) / 1000, (c.user + c.system) / 1e6];
}

async function appends(): Promise<void> {
  const rec = toJournal(lifeOf(1)[3]!);
  const bytes = Buffer.byteLength(encodeRecord(1, rec));
  console.log(`\n# durable appends (${bytes}-byte records, ${SECONDS} s each, ${os.cpus().length} cpus, load average ${os.loadavg()[0]!.toFixed(1)})`);
  const raw = rawRate(bytes);
  print('raw write+fdatasync loop', `${fmt(raw)} /s`);
  result('journal: raw write+fdatasync', `${fmt(raw)}/s`);
  const inside = rawRate(bytes, true);
  print('raw, inside a file reserved ahead', `${fmt(inside)} /s (${(inside / raw).toFixed(2)}x appending)`);
  result('journal: raw write+fdatasync inside reserved space', `${fmt(inside)}/s`);
  for (const writers of [1, 64]) {
    const r = await appendRun(writers, rec);
    print(`journal, ${writers} writer${writers > 1 ? 's' : ''}`, `${fmt(r.perSec)} appends/s, ${fmt(r.fsyncsPerSec)} fsyncs/s, ${r.perFsync.toFixed(1)} records/fsync, ${(r.perSec / raw).toFixed(1)}x raw`);
    result(`journal: durable appends, ${writers} writer${writers > 1 ? 's' : ''}`, `${fmt(r.perSec)}/s (${r.perFsync.toFixed(1)} per fsync, ${(r.perSec / raw).toFixed(1)}x raw)`, writers > 1 ? '>= 10x raw' : undefined);
  }
}

async function replay(): Promise<void> {
  console.log(`\n# open a journal of ${fmt(N)} transitions (${fmt(N / 4)} commands x submit, claim, start, finish)`);
  const dir = fs.mkdtempSync(path.join(root, 'replay-'));
  const [, build] = await timed(async () => {
    const journal = openJournal(dir, { afterSeq: 0, onRecord: () => {} });
    const BATCH = 10_000;
    for (let i = 0; i < N / 4; i += BATCH / 4) {
      const recs: CommandRecord[] = [];
      for (let k = i; k < Math.min(i + BATCH / 4, N / 4); k++) recs.push(...lifeOf(k));
      await journal.append(recs.map(toJournal));
    }
    journal.close();
  });
  const bytes = fs.readdirSync(dir).reduce((s, f) => s + fs.statSync(path.join(dir, f)).size, 0);
  print('built in', `${build.toFixed(1)} s (${(bytes / 1e6).toFixed(0)} MB)`);
  const [m, secs, cpu] = await timed(() => DurableMachine.open(dir, new CommandTable(), { noLock: true }));
  print('opened in', `${secs.toFixed(2)} s (cpu ${cpu.toFixed(2)} s; ${fmt(N / secs)} records/s, ${fmt((m.machine as CommandTable).size)} commands)`);
  result(`journal: open ${fmt(N)} transitions (${(bytes / 1e6).toFixed(0)} MB)`, `${secs.toFixed(2)} s`);
  await m.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

async function snapshotOpen(kind: 'pending' | 'completed'): Promise<void> {
  const what = kind === 'pending' ? 'PENDING, just submitted' : 'COMPLETED, with a 4-entry trail';
  console.log(`\n# open after a snapshot of ${fmt(N)} commands (${what})`);
  const dir = fs.mkdtempSync(path.join(root, 'snap-'));
  const [, build] = await timed(async () => {
    await writeSnapshotTmp(dir, 'commands', N * 4, commands(N, kind));
    installSnapshot(dir);
    Journal.createSegment(dir, N * 4 + 1);
  });
  const bytes = fs.statSync(path.join(dir, 'snapshot.jsonl')).size;
  print('written in', `${build.toFixed(1)} s (${(bytes / 1e6).toFixed(0)} MB)`);
  const [m, secs, cpu] = await timed(() => DurableMachine.open(dir, new CommandTable(), { noLock: true }));
  print('opened in', `${secs.toFixed(2)} s (cpu ${cpu.toFixed(2)} s; goal < 3 s; ${fmt((m.machine as CommandTable).size)} commands)`);
  result(`journal: open snapshot of ${fmt(N)} ${kind} commands (${(bytes / 1e6).toFixed(0)} MB)`, `${secs.toFixed(2)} s`, '< 3 s');
  await m.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Snapshot lines of `n` commands, generated without a table in memory. */
function* commands(n: number, kind: 'pending' | 'completed'): Iterable<string> {
  for (let i = 0; i < n; i++) {
    const id = lifeOf(i)[0]!.id;
    const agentId = `agent-${i % 16}`;
    const t = at + i;
    const base: Command = { id, type: 'DELAY', payload: { ms: 250 }, state: 'PENDING', version: 1, attempt: 0, agentId: null, result: null, error: null, cancelRequested: false, createdAt: t, updatedAt: t, idemKey: null, bodyHash: null, trail: 'submit,P,0', ...PLAIN_JOB };
    if (kind === 'pending') {
      yield encode(base);
      continue;
    }
    const trail = `submit,P,0;claim,A,1,${agentId},1;start,R,2,${agentId},1;finish,C,3,${agentId},1`;
    yield encode({ ...base, state: 'COMPLETED', version: 4, attempt: 1, agentId, result: { ok: true, tookMs: 251 }, updatedAt: t + 3, trail, executions: 1 });
  }
}

try {
  const only = process.argv[2];
  if (!only || only === 'append') await appends();
  if (!only || only === 'replay') await replay();
  if (!only || only === 'snapshot') {
    await snapshotOpen('pending');
    await snapshotOpen('completed');
  }
  emitResults('journal');
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
