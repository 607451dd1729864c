// Retention under a constant load (issue 12, item 5): push N DELAY {ms:0}
// commands through a real server started with --retain-max (default 100,000)
// and real agents, and print the server's RSS and its state directory's size
// at each third of the run (1M, 2M and 3M for the default 3M). With retention
// both stay flat: the server holds at most --retain-max final commands, and a
// snapshot holds no more than that.
//
//   node --import tsx bench/retention.ts [--n 3000000] [--retain-max 100000]
//                                        [--agents 4] [--concurrency 16] [--window 20000] [--batch 500]
//                                        [--server-heap MB]
//
// The driver submits through POST /commands/batch and keeps at most --window
// commands submitted but not yet final, so the pending backlog stays small and
// what grows, if anything, is what retention is meant to bound. Completion is
// counted from the server's transition log lines, as in bench/throughput.ts.
// Besides the figures at each third, the range of RSS over that third (sampled
// every second), the peak RSS (VmHWM) and the largest
// state directory seen (sampled every second) are printed: the directory is a
// sawtooth between snapshots (up to --snapshot-bytes of journal on top of the
// snapshot).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Child, metric, PostConnection, request, startAgent, startServer } from './children.ts';
import { emitResults, result } from './report.ts';
import http from 'node:http';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '3000000' },
    'retain-max': { type: 'string', default: '100000' },
    agents: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '16' },
    window: { type: 'string', default: '20000' },
    batch: { type: 'string', default: '500' },
    // Cap the server's V8 old space (MB): a leak then ends the run, lazy collection does not.
    'server-heap': { type: 'string' },
  },
});
const n = Number(values.n);
const retainMax = Number(values['retain-max']);
const agents = Number(values.agents);
const window = Number(values.window);
const batch = Number(values.batch);
// No progress at all for this long: the run is stuck, not slow.
const STALL_MS = 120_000;

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const f of fs.readdirSync(dir)) {
    try {
      const st = fs.statSync(path.join(dir, f));
      if (st.isFile()) total += st.size;
    } catch {
      // deleted between readdir and stat (a compaction's old segment)
    }
  }
  return total;
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

const heap = values['server-heap'] ? [`--max-old-space-size=${Number(values['server-heap'])}`] : [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-retention-'));
const serverDir = path.join(tmp, 'server');
console.log(`${n} DELAY {ms:0} commands, --retain-max ${retainMax}${heap.length ? `, server ${heap[0]}` : ''}, ${agents} agents x concurrency ${values.concurrency}, batches of ${batch}, at most ${window} in flight; state under ${tmp}`);

const { child: server, url } = await startServer(serverDir, ['--retain-max', String(retainMax), '--lease-timeout', '30s'], heap);
const workers: Child[] = [];
try {
  workers.push(
    ...(await Promise.all(
      Array.from({ length: agents }, (_, i) => startAgent(url, path.join(tmp, `agent-${i}`), ['--id', `bench-${i}`, '--concurrency', String(values.concurrency)])),
    )),
  );
  const base = new URL(url);
  let final = 0;
  let failed = 0;
  let lastProgress = performance.now();
  let waiters: Array<() => void> = [];
  const wake = (): void => {
    if (waiters.length === 0) return;
    const ws = waiters;
    waiters = [];
    for (const w of ws) w();
  };
  server.onLine = (line) => {
    if (!line.includes('"msg":"transition"')) return;
    if (line.includes('"state":"COMPLETED"')) final++;
    else if (line.includes('"state":"FAILED"')) (final++, failed++);
    else return;
    lastProgress = performance.now();
    wake();
  };
  const progress = (): Promise<void> => new Promise((resolve) => waiters.push(resolve));

  let maxDir = 0;
  // RSS sampled every second over the current third: a flat RSS swings between
  // garbage collections, so the range says more than one reading.
  let rssRange = { min: Infinity, max: 0 };
  const sampler = setInterval(() => {
    maxDir = Math.max(maxDir, dirBytes(serverDir));
    const kb = statusKb(server.pid, 'VmRSS');
    rssRange = { min: Math.min(rssRange.min, kb * 1024), max: Math.max(rssRange.max, kb * 1024) };
    if (performance.now() - lastProgress > STALL_MS) wake();
  }, 1000);

  const checkpoints = [1, 2, 3].map((k) => Math.round((n * k) / 3));
  const t0 = performance.now();
  const conns = Array.from({ length: 2 }, () => new PostConnection(base, '/commands/batch'));
  const body = (k: number): string => JSON.stringify({ commands: Array.from({ length: k }, () => ({ type: 'DELAY', payload: { ms: 0 } })) });
  const full = body(batch);
  let submitted = 0;
  const submitting = Promise.all(
    conns.map(async (conn) => {
      while (submitted < n) {
        while (submitted - final >= window) {
          await progress();
          if (performance.now() - lastProgress > STALL_MS) throw new Error(`stuck at ${final} final`);
        }
        const k = Math.min(batch, n - submitted);
        if (k <= 0) break; // the other connection sent the rest meanwhile
        submitted += k;
        const r = await conn.post(k === batch ? full : body(k));
        if (r.status !== 201) throw new Error(`batch submit answered ${r.status}: ${r.text.slice(0, 200)}`);
      }
    }),
  );

  const http1 = new http.Agent({ keepAlive: true });
  console.log('commands   elapsed   rate       server RSS   RSS over this third   peak RSS    state dir   largest dir so far   final held');
  for (const at of checkpoints) {
    while (final < at) {
      await progress();
      if (performance.now() - lastProgress > STALL_MS) throw new Error(`stuck at ${final} final of ${n}`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const rss = statusKb(server.pid, 'VmRSS') * 1024;
    const hwm = statusKb(server.pid, 'VmHWM') * 1024;
    const dir = dirBytes(serverDir);
    maxDir = Math.max(maxDir, dir);
    const m = (await request(http1, base, 'GET', '/metrics')).text;
    const held = metric(m, 'keel_commands{state="COMPLETED"}') + metric(m, 'keel_commands{state="FAILED"}');
    console.log(
      `${String(at).padStart(9)}  ${seconds.toFixed(0).padStart(6)} s  ${(final / seconds).toFixed(0).padStart(5)}/s   ${mb(rss).padStart(10)}  ${`${mb(rssRange.min)} - ${mb(rssRange.max)}`.padStart(20)}  ${mb(hwm).padStart(10)}  ${mb(dir).padStart(10)}  ${mb(maxDir).padStart(10)}            ${held}`,
    );
    result(`retention: server RSS after ${at.toLocaleString('en-US')} commands (--retain-max ${retainMax})`, `${mb(rss)} (${mb(rssRange.min)} to ${mb(rssRange.max)} over this third; peak ${mb(hwm)})`, 'flat');
    rssRange = { min: Infinity, max: 0 };
    result(`retention: state dir after ${at.toLocaleString('en-US')} commands`, `${mb(dir)} (largest so far ${mb(maxDir)})`, 'flat');
  }
  await submitting;
  clearInterval(sampler);
  http1.destroy();
  for (const c of conns) c.close();
  if (failed > 0) throw new Error(`${failed} commands FAILED`);
} finally {
  await Promise.all(workers.map((w) => w.stop()));
  await server.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
}
emitResults('retention');
