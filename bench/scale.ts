// Scale: what a big state directory costs.
//   1. restart: 1,000,000 commands (990,000 final, 10,000 pending) -> SIGKILL
//      -> time until /readyz answers 200; with and without a journal tail to replay
//   2. memory: the server's RSS holding them
//   3. claim latency as the backlog grows (10k, 100k, 1M pending): must stay flat;
//      then 1M pending over five priorities beside 100k scheduled for later
//
//   npm run bench:scale                 (BENCH_COMMANDS=1000000 by default)
//
// The state is generated straight into the on-disk format (bench/state-dir.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { call } from '../tests/support/http.ts';
import { listeningUrl } from './children.ts';
import { emitResults, result } from './report.ts';
import { buildStateDir, RECORDS_PER_LIFE, sizes } from './state-dir.ts';

const N = Number(process.env.BENCH_COMMANDS ?? 1_000_000);
const PENDING = Math.min(10_000, N);
const TAIL = Number(process.env.BENCH_TAIL ?? 50_000); // commands whose whole life is in the journal tail
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-scale-'));
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`;
const print = (label: string, value: string): void => console.log(`${label.padEnd(46)} ${value}`);
const row = (metric: string, value: string, goal?: string): void => {
  result(`scale: ${metric}`, value, goal);
  print(metric, goal ? `${value}  (goal ${goal})` : value);
};

interface Running {
  child: ChildProcess;
  url: string;
  readyMs: number;
}

/** Start server.ts on dir; resolve when /readyz answers 200, with the time from spawn. */
async function startServer(dir: string, port = 0): Promise<Running> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', 'server.ts', '--state-dir', dir, '--port', String(port), '--max-pending', '2000000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await listeningUrl(child);
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
    const dir = await buildStateDir(root, N - tail, PENDING, tail);
    const { snapshot, journal } = sizes(dir);
    const label = tail === 0 ? 'snapshot only' : `+ ${fmt(tail * RECORDS_PER_LIFE)} records to replay`;
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
    const dir = await buildStateDir(root, backlog, backlog, 0);
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
  // Priorities and a scheduled backlog: each claim still looks at one queue head per type.
  const PRIORITIES = [-50, -10, 0, 10, 50];
  const backlog = Math.min(N, 1_000_000);
  const scheduled = Math.min(N / 10, 100_000);
  const dir = await buildStateDir(root, backlog, backlog, 0, { priorities: PRIORITIES, scheduled });
  const r = await startServer(dir);
  const lat: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < 1000; i++) {
    const t0 = performance.now();
    const c = await call(r.url, 'POST', '/agent/claim', { agentId: `bench-${i}`, max: 1 });
    lat.push(performance.now() - t0);
    if (c.body.commands.length !== 1) throw new Error(`claim ${i} got ${c.text}`);
    ids.push(c.body.commands[0].id);
  }
  // The claims took the highest priority, oldest first.
  for (const id of [ids[0]!, ids.at(-1)!]) {
    const v = await call(r.url, 'GET', `/commands/${id}`);
    if (v.body.priority !== 50) throw new Error(`claimed ${id} of priority ${v.body.priority}, not 50`);
  }
  const label = `claim latency, ${fmt(backlog)} pending over ${PRIORITIES.length} priorities + ${fmt(scheduled)} scheduled`;
  row(label, `p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms (ready in ${(r.readyMs / 1000).toFixed(2)} s)`, 'flat');
  await kill(r);
  fs.rmSync(dir, { recursive: true, force: true });
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
