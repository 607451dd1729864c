// Scale: what a big state directory costs.
//   1. restart: 1,000,000 commands (990,000 final, 10,000 pending) -> SIGKILL
//      -> time until /readyz answers 200; with and without a journal tail to replay
//   2. memory: the server's RSS holding them
//   3. claim latency as the backlog grows (10k, 100k, 1M pending): must stay flat
//
//   npm run bench:scale                 (BENCH_COMMANDS=1000000 by default)
//
// The state is generated straight into the on-disk format (a snapshot, and a
// journal tail of real records) rather than pushed through HTTP, which would
// take minutes; the server then opens it exactly as after a crash.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PLAIN_JOB, type Command } from '../state/command-fsm.ts';
import { encode, type CommandRecord } from '../state/command-table.ts';
import { encodeRecord, JOURNAL_FORMAT, segmentName } from '../state/journal.ts';
import { installSnapshot, writeSnapshotTmp } from '../state/snapshot.ts';
import { call } from '../tests/support/http.ts';
import { emitResults, result } from './report.ts';

const N = Number(process.env.BENCH_COMMANDS ?? 1_000_000);
const PENDING = Math.min(10_000, N);
const TAIL = Number(process.env.BENCH_TAIL ?? 50_000); // commands whose whole life is in the journal tail
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-scale-'));
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const at = 1_790_000_000_000;
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`;
const print = (label: string, value: string): void => console.log(`${label.padEnd(46)} ${value}`);
const row = (metric: string, value: string, goal?: string): void => {
  result(`scale: ${metric}`, value, goal);
  print(metric, goal ? `${value}  (goal ${goal})` : value);
};

const uuid = (i: number): string => `${i.toString(16).padStart(8, '0')}-0000-4000-8000-${(i * 7919).toString(16).padStart(12, '0').slice(-12)}`;

function command(i: number, state: 'PENDING' | 'COMPLETED'): Command {
  const t = at + i;
  const agentId = `agent-${i % 16}`;
  const base: Command = { id: uuid(i), type: 'DELAY', payload: { ms: 250 }, state: 'PENDING', version: 1, attempt: 0, agentId: null, result: null, error: null, cancelRequested: false, createdAt: t, updatedAt: t, idemKey: null, bodyHash: null, trail: 'submit,P,0', ...PLAIN_JOB };
  if (state === 'PENDING') return base;
  return { ...base, state, version: 4, attempt: 1, agentId, result: { ok: true, tookMs: 251 }, executions: 1, updatedAt: t + 3, trail: `submit,P,0;claim,A,1,${agentId},1;start,R,2,${agentId},1;finish,C,3,${agentId},1` };
}

/** A state dir: a snapshot of `total` commands (the last `pending` of them PENDING) and a journal tail. */
async function buildStateDir(total: number, pending: number, tail: number): Promise<string> {
  const dir = fs.mkdtempSync(path.join(root, 'state-'));
  const seq = total * 4;
  await writeSnapshotTmp(dir, 'commands', seq, (function* () {
    for (let i = 0; i < total; i++) yield encode(command(i, i >= total - pending ? 'PENDING' : 'COMPLETED'));
  })());
  installSnapshot(dir);
  // The tail: whole command lives as the store journals them, after the snapshot.
  const lines: string[] = [`${JSON.stringify({ keel: 'journal', format: JOURNAL_FORMAT, firstSeq: seq + 1 })}\n`];
  let s = seq;
  for (let i = 0; i < tail; i++) {
    const id = uuid(total + i);
    const agentId = `agent-${i % 16}`;
    const t = at + total + i;
    const recs: CommandRecord[] = [
      { id, from: null, version: 0, ev: { type: 'submit', id, cmdType: 'DELAY', payload: { ms: 250 }, at: t } },
      { id, from: 'PENDING', version: 1, ev: { type: 'claim', agentId, lease: 1, at: t + 1 } },
      { id, from: 'ASSIGNED', version: 2, ev: { type: 'start', agentId, lease: 1, at: t + 2 } },
      { id, from: 'RUNNING', version: 3, ev: { type: 'finish', agentId, lease: 1, outcome: 'COMPLETED', result: { ok: true, tookMs: 251 }, error: null, at: t + 3 } },
    ];
    for (const r of recs) lines.push(encodeRecord(++s, r));
  }
  fs.writeFileSync(path.join(dir, segmentName(seq + 1)), lines.join(''));
  return dir;
}

function sizes(dir: string): { snapshot: number; journal: number } {
  let journal = 0;
  for (const f of fs.readdirSync(dir)) if (f.startsWith('journal-')) journal += fs.statSync(path.join(dir, f)).size;
  return { snapshot: fs.statSync(path.join(dir, 'snapshot.jsonl')).size, journal };
}

interface Running {
  child: ChildProcess;
  url: string;
  readyMs: number;
}

/** Start server.ts on dir; resolve when /readyz answers 200, with the time from spawn. */
async function startServer(dir: string, port = 0): Promise<Running> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', 'server.ts', '--state-dir', dir, '--port', String(port), '--max-pending', '2000000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d;
      const m = /"msg":"listening"[^\n]*"url":"([^"]+)"/.exec(buf);
      if (m) resolve(m[1]!);
      if (buf.length > 1e6) buf = buf.slice(-1e5);
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
  child.stdout!.resume();
  for (;;) {
    const r = await call(url, 'GET', '/readyz').catch(() => undefined);
    if (r?.status === 200) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  return { child, url, readyMs: performance.now() - t0 };
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

async function kill(r: Running): Promise<void> {
  const gone = new Promise((res) => r.child.once('exit', res));
  r.child.kill('SIGKILL');
  await gone;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

async function restartAtScale(): Promise<void> {
  console.log(`\n# restart with ${fmt(N)} commands (${fmt(PENDING)} pending) in the state directory`);
  for (const tail of [0, TAIL]) {
    const dir = await buildStateDir(N - tail, PENDING, tail);
    const { snapshot, journal } = sizes(dir);
    const label = tail === 0 ? 'snapshot only' : `+ ${fmt(tail * 4)} records to replay`;
    print(`on disk (${label})`, `snapshot ${mb(snapshot)}, journal ${mb(journal)}`);
    const first = await startServer(dir);
    const port = Number(new URL(first.url).port);
    await kill(first); // the crash; then the timed restarts
    const times: number[] = [];
    let rss = 0;
    for (let i = 0; i < 3; i++) {
      const r = await startServer(dir, port);
      times.push(r.readyMs);
      rss = rssOf(r.child.pid!);
      await kill(r);
    }
    row(`restart to /readyz, ${label}`, `${(median(times) / 1000).toFixed(2)} s (runs ${times.map((t) => (t / 1000).toFixed(2)).join(', ')})`, '< 3 s');
    row(`server RSS at ${fmt(N)} commands, ${label}`, mb(rss), '< 600 MB');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function claimScaling(): Promise<void> {
  console.log('\n# claim latency as the backlog grows (each claim: one PENDING -> ASSIGNED, fsynced)');
  for (const backlog of [10_000, 100_000, 1_000_000].filter((b) => b <= N)) {
    const dir = await buildStateDir(backlog, backlog, 0);
    const r = await startServer(dir);
    const lat: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      const c = await call(r.url, 'POST', '/agent/claim', { agentId: `bench-${i}`, max: 1 });
      lat.push(performance.now() - t0);
      if (c.body.commands.length !== 1) throw new Error(`claim ${i} got ${c.text}`);
    }
    row(`claim latency, ${fmt(backlog)} pending`, `p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms`, 'flat');
    await kill(r);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

try {
  console.log(`keel scale bench, ${os.cpus().length} cpus, load average ${os.loadavg()[0]!.toFixed(1)}`);
  const only = process.argv[2];
  if (!only || only === 'restart') await restartAtScale();
  if (!only || only === 'claim') await claimScaling();
  emitResults('scale');
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
