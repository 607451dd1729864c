// Restart (npm run bench:restart): the time from spawning server.ts to the
// first GET /commands/:id answering 200 (the last command, so all of the
// state has been read), on a state directory left by a crash:
//   - 50,000 commands as a server leaves them at worst: a snapshot and a
//     journal tail just short of starting the next one (bench/state-dir.ts);
//   - 50,000 commands whose whole lives are in the journal (150,000 records,
//     submit, claim-start and finish: what the journal alone costs; the issue's
//     replay of 200,000 records/s was 50,000 commands/s, at four records each
//     before claim-and-start);
//   - 1,000,000 commands at worst (a snapshot and a 64 MiB tail), and from
//     the snapshot alone.
// And where the time goes: node alone, node with tsx, server.ts --help (tsx
// plus every server module), and opening the store in this process.
// Goals: 50,000 <= 0.6 s, 1M <= 2 s, RSS at 1M <= 500 MB, replay 3x (150,000
// commands per second).
//
//   node --import tsx bench/restart.ts [--runs 5] [--only parts|50k|1m]
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CommandStore } from '../state/command-store.ts';
import { call } from '../tests/support/http.ts';
import { cpuSeconds, listeningUrl, median } from './children.ts';
import { emitResults, result } from './report.ts';
import { buildStateDir, RECORDS_PER_LIFE, sizes, uuid, worstTail } from './state-dir.ts';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, only: { type: 'string' } } });
const RUNS = Number(values.runs);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-restart-'));
const s2 = (ms: number): string => (ms / 1000).toFixed(2);
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`;
const fmt = (n: number): string => n.toLocaleString('en-US');

/** Spawn -> exit, in ms, of `node args` (for the fixed costs). */
function timeExit(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: ROOT, stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}`);
  return performance.now() - t0;
}

/** How long after the first 200 the RSS is read again: what the server holds once memory freed at open is returned. */
const SETTLE_MS = 3000;

/**
 * Spawn server.ts on dir; ms until GET /commands/<id> answers 200, the RSS and
 * CPU ms (all threads) by then, and the RSS SETTLE_MS later (if `settled`).
 */
async function restart(dir: string, id: string, settled = false): Promise<{ ms: number; rss: number; rssSettled: number; cpu: number }> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', 'server.ts', '--state-dir', dir, '--port', '0', '--max-pending', '2000000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    const url = await listeningUrl(child);
    const r = await call(url, 'GET', `/commands/${id}`);
    if (r.status !== 200) throw new Error(`GET /commands/${id} answered ${r.status}: ${r.text}`);
    const ms = performance.now() - t0;
    const rssNow = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) * 1024;
    const rss = rssNow();
    const cpu = cpuSeconds(child.pid) * 1000;
    if (settled) await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    return { ms, rss, rssSettled: settled ? rssNow() : NaN, cpu };
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

async function scenario(label: string, total: number, tail: number, goalMs?: number, rssGoal?: number): Promise<void> {
  const dir = await buildStateDir(root, total - tail, Math.min(10_000, total - tail), tail);
  const { snapshot, journal } = sizes(dir);
  console.log(`\n# ${label}: snapshot ${mb(snapshot)}, journal ${mb(journal)} (${fmt(tail * RECORDS_PER_LIFE)} records)`);
  const id = uuid(total - 1); // the last command: found only once everything is read
  await restart(dir, id); // warm the page cache and tsx's cache
  const runs: Array<{ ms: number; rss: number; rssSettled: number; cpu: number }> = [];
  for (let i = 0; i < RUNS; i++) runs.push(await restart(dir, id, rssGoal !== undefined));
  const ms = median(runs.map((r) => r.ms));
  const rss = Math.max(...runs.map((r) => r.rss));
  const cpu = median(runs.map((r) => r.cpu));
  console.log(`  spawn -> first GET 200: ${s2(ms)} s (runs ${runs.map((r) => s2(r.ms)).join(', ')}), server CPU by then ${s2(cpu)} s, RSS ${mb(rss)}`);
  const rssSettled = Math.max(...runs.map((r) => r.rssSettled));
  if (rssGoal) console.log(`  RSS at the first 200, each run: ${runs.map((r) => mb(r.rss)).join(', ')}; ${SETTLE_MS / 1000} s later: ${runs.map((r) => mb(r.rssSettled)).join(', ')}`);
  result(
    `restart, ${label}: spawn -> first GET 200`,
    `${s2(ms)} s (runs ${runs.map((r) => s2(r.ms)).join(', ')}); server CPU ${s2(cpu)} s`,
    goalMs === undefined ? undefined : `<= ${s2(goalMs)} s`,
  );
  if (rssGoal) {
    result(`restart, ${label}: RSS at the first 200 (most of any run)`, `${mb(rss)} (runs ${runs.map((r) => mb(r.rss).replace(' MB', '')).join(', ')})`, `<= ${mb(rssGoal)}`);
    result(`restart, ${label}: RSS ${SETTLE_MS / 1000} s later (most of any run)`, mb(rssSettled), `<= ${mb(rssGoal)}`);
  }
  // The same open in this process, timed by its parts: CPU is steadier than
  // wall time on a shared machine.
  const opens: Array<{ ms: number; cpu: number }> = [];
  for (let i = 0; i < 3; i++) opens.push(await openInProcess(dir));
  const openCpu = median(opens.map((o) => o.cpu));
  // Journal only: the open is all replay, so this is the replay rate.
  const perSecond = (n: number): string => fmt(Math.round(n / (openCpu / 1000)));
  const perRecord = tail === total ? `, ${perSecond(tail)} commands (${perSecond(tail * RECORDS_PER_LIFE)} records) per CPU second` : '';
  console.log(`  open in this process: ${s2(median(opens.map((o) => o.ms)))} s wall, ${s2(openCpu)} s CPU${perRecord}`);
  result(`restart, ${label}: open in process`, `${s2(openCpu)} s CPU${perRecord}`, tail === total ? '>= 150,000 commands/s (3x)' : undefined);
  fs.rmSync(dir, { recursive: true, force: true });
}

async function openInProcess(dir: string): Promise<{ ms: number; cpu: number }> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const store = await CommandStore.open(dir, { noLock: true });
  const c = process.cpuUsage(c0);
  const ms = performance.now() - t0;
  await store.close();
  return { ms, cpu: (c.user + c.system) / 1000 };
}

function parts(): void {
  console.log('\n# fixed costs (spawn -> exit)');
  const row = (what: string, args: string[]): void => {
    timeExit(args);
    const ms = median(Array.from({ length: RUNS }, () => timeExit(args)));
    console.log(`  ${what.padEnd(44)} ${s2(ms)} s`);
    result(`restart: ${what}`, `${s2(ms)} s`);
  };
  row('node -e 0', ['-e', '0']);
  row('node --import tsx -e 0', ['--import', 'tsx', '-e', '0']);
  row('node --import tsx server.ts --help', ['--import', 'tsx', 'server.ts', '--help']);
}

try {
  console.log(`keel restart bench, node ${process.version}, ${os.cpus().length} cpus, load average ${os.loadavg()[0]!.toFixed(1)}, ${RUNS} runs each`);
  const only = values.only;
  if (!only || only === 'parts') parts();
  if (!only || only === '50k') {
    await scenario('50,000 commands, worst case (snapshot + tail)', 50_000, worstTail(50_000), 600);
    await scenario('50,000 commands, journal only', 50_000, 50_000);
  }
  if (!only || only === '1m') {
    await scenario('1,000,000 commands, worst case (snapshot + 64 MiB tail)', 1_000_000, worstTail(1_000_000), 2000, 500e6);
    await scenario('1,000,000 commands, snapshot only', 1_000_000, 0, 2000, 500e6);
  }
  emitResults('restart');
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
