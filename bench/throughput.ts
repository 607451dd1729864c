// End-to-end throughput (issue 6, item 1): N DELAY {ms:0} commands through
// A agents at concurrency C, timed from the first submit to the last
// COMPLETED. Real server.ts and agent.ts child processes, temp state dirs,
// 127.0.0.1, every step fsynced on both sides as in production. The
// submitter (this process) POSTs batches of --batch commands to
// POST /commands/batch over --batch-clients keep-alive connections (or, with
// --batch 1, single POST /commands over --clients) while the agents, already
// idle in their long-polls, drain.
// The end is the moment this process reads the server's last COMPLETED
// transition line; the server's /metrics then confirms all N COMPLETED.
// The submitters are lean raw-socket keep-alive connections (children.ts
// PostConnection): the driver shares the machine's two cores with keel.
// Goals: >= 1,000/s with 4 agents at concurrency 1, >= 5,000/s with 4 at 16.
//
//   node --import tsx bench/throughput.ts [--n 20000] [--runs 3] [--configs 0x0,1x1,2x1,4x1,4x16]
//                                         [--batch 100] [--batch-clients 4] [--clients 64] [--profile DIR]
// BENCH_N overrides the default --n for quick runs (record figures with 20,000).
// --configs lists AxC: A agents at concurrency C; 0x0 runs no agents and
// times the submits alone (the ceiling for the rest), once with single
// submits and once with batches, so the two compare. --profile writes V8 CPU
// profiles of the server and agents of each configuration's first run.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Child, cpuSeconds, median, metric, PostConnection, request, startAgent, startServer } from './children.ts';
import { emitResults, result } from './report.ts';

const SUBMIT_BODY = JSON.stringify({ type: 'DELAY', payload: { ms: 0 } });
// No progress at all for this long: the run is stuck, not slow.
const STALL_MS = 60_000;

interface JournalStats {
  fsyncs: number;
  fsyncMicros: number;
  records: number;
}

interface RunResult {
  perSec: number;
  seconds: number;
  submitSeconds: number;
  server: JournalStats;
  agents: JournalStats;
  /** Agent requests the server answered (claim, start, finish, release, heartbeat). */
  agentRequests: number;
  cpu: { server: number; agents: number; bench: number }; // CPU seconds per second of run
}

/** How the driver submits: `batch` commands per POST /commands/batch (1: POST /commands), over `clients` connections. */
interface SubmitMode {
  batch: number;
  clients: number;
}

async function submitAll(base: URL, n: number, mode: SubmitMode): Promise<void> {
  let next = 0;
  const batchBody = (k: number): string => JSON.stringify({ commands: Array.from({ length: k }, () => JSON.parse(SUBMIT_BODY) as unknown) });
  const full = batchBody(mode.batch);
  const conns = Array.from({ length: mode.clients }, () => new PostConnection(base, mode.batch > 1 ? '/commands/batch' : '/commands'));
  await Promise.all(
    conns.map(async (conn) => {
      while (next < n) {
        const k = Math.min(mode.batch, n - next);
        next += k;
        const r = await conn.post(mode.batch === 1 ? SUBMIT_BODY : k === mode.batch ? full : batchBody(k));
        if (r.status !== 201) throw new Error(`submit answered ${r.status}: ${r.text.slice(0, 200)}`);
      }
    }),
  );
  for (const c of conns) c.close();
}

async function run(agents: number, concurrency: number, n: number, submit: SubmitMode, tmp: string, profDir?: string): Promise<RunResult> {
  const dir = fs.mkdtempSync(path.join(tmp, `run-${agents}x${concurrency}-`));
  const prof = (name: string): string[] => (profDir ? ['--cpu-prof', '--cpu-prof-dir', path.join(profDir, name)] : []);
  const { child: server, url } = await startServer(path.join(dir, 'server'), ['--lease-timeout', '30s'], prof('server'));
  const workers: Child[] = [];
  try {
    workers.push(
      ...(await Promise.all(
        Array.from({ length: agents }, (_, i) => startAgent(url, path.join(dir, `agent-${i}`), ['--id', `bench-${i}`, '--concurrency', String(concurrency)], prof(`agent-${i}`))),
      )),
    );
    const base = new URL(url);
    const http1 = new http.Agent({ keepAlive: true });
    const before = (await request(http1, base, 'GET', '/metrics')).text;

    let completed = 0;
    let failed = 0;
    let lastProgress = performance.now();
    let finishedAt = 0;
    let onAll: () => void = () => {};
    const all = new Promise<void>((resolve) => (onAll = resolve));
    server.onLine = (line, at) => {
      if (!line.includes('"msg":"transition"')) return;
      if (line.includes('"state":"COMPLETED"')) completed++;
      else if (line.includes('"state":"FAILED"')) failed++;
      else return;
      lastProgress = at;
      if (completed + failed === n) {
        finishedAt = at;
        onAll();
      }
    };
    const stall = setInterval(() => {
      if (performance.now() - lastProgress > STALL_MS) onAll();
    }, 1000);

    const cpu0 = { server: cpuSeconds(server.pid), agents: workers.reduce((s, w) => s + cpuSeconds(w.pid), 0), bench: process.cpuUsage() };
    const t0 = performance.now();
    lastProgress = t0;
    await submitAll(base, n, submit);
    const submitted = performance.now();
    if (agents === 0) {
      // The submit-only ceiling: nothing runs the commands; the end is the last 201.
      finishedAt = submitted;
      completed = n;
      onAll();
    }
    await all;
    clearInterval(stall);
    if (completed + failed < n) throw new Error(`stuck: ${completed} COMPLETED and ${failed} FAILED of ${n} after ${STALL_MS} ms without progress`);
    const seconds = (finishedAt - t0) / 1000;
    const cpu = {
      server: (cpuSeconds(server.pid) - cpu0.server) / seconds,
      agents: (workers.reduce((s, w) => s + cpuSeconds(w.pid), 0) - cpu0.agents) / seconds,
      bench: ((u) => (u.user + u.system) / 1e6 / seconds)(process.cpuUsage(cpu0.bench)),
    };
    const after = (await request(http1, base, 'GET', '/metrics')).text;
    http1.destroy();
    const want = agents === 0 ? 'PENDING' : 'COMPLETED';
    if (metric(after, `keel_commands{state="${want}"}`) !== n) throw new Error(`/metrics: ${metric(after, `keel_commands{state="${want}"}`)} ${want}, expected ${n}`);
    if (failed > 0) throw new Error(`${failed} commands FAILED`);
    const d = (name: string): number => metric(after, name) - metric(before, name);

    // The agents report their ledger's journal stats as they stop.
    const stopped = workers.map((w) => w.waitForMsg('agent stopped'));
    await Promise.all(workers.map((w) => w.stop()));
    const ledgers = (await Promise.all(stopped)).map((l) => l.ledger as JournalStats);
    const agentRequests = [...after.matchAll(/^keel_http_requests_total\{route="\/agent\/[^"]*",code="\d+"\} (\d+)$/gm)].reduce((s, m) => s + Number(m[1]), 0);
    return {
      perSec: n / seconds,
      agentRequests,
      seconds,
      submitSeconds: (submitted - t0) / 1000,
      server: { fsyncs: d('keel_journal_fsyncs_total'), fsyncMicros: d('keel_journal_fsync_seconds_total') * 1e6, records: d('keel_journal_records_total') },
      agents: {
        fsyncs: ledgers.reduce((s, l) => s + l.fsyncs, 0),
        fsyncMicros: ledgers.reduce((s, l) => s + l.fsyncMicros, 0),
        records: ledgers.reduce((s, l) => s + l.records, 0),
      },
      cpu,
    };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: process.env.BENCH_N ?? '20000' },
      runs: { type: 'string', default: '3' },
      configs: { type: 'string', default: '0x0,1x1,2x1,4x1,4x16' },
      clients: { type: 'string', default: '64' },
      // Commands per POST /commands/batch (1: one POST /commands each), sent over --batch-clients connections.
      batch: { type: 'string', default: '100' },
      'batch-clients': { type: 'string', default: '4' },
      profile: { type: 'string' },
    },
  });
  const n = Number(values.n);
  const runs = Number(values.runs);
  const single: SubmitMode = { batch: 1, clients: Number(values.clients) };
  const batched: SubmitMode = Number(values.batch) > 1 ? { batch: Number(values.batch), clients: Number(values['batch-clients']) } : single;
  const describe = (m: SubmitMode): string => (m.batch === 1 ? `${m.clients} clients of POST /commands` : `POST /commands/batch of ${m.batch}, ${m.clients} clients`);
  const configs = values.configs.split(',').map((c) => {
    const m = /^(\d+)x(\d+)$/.exec(c.trim());
    if (!m) throw new Error(`--configs: ${c} is not AxC (agents x concurrency)`);
    return { agents: Number(m[1]), concurrency: Number(m[2]) };
  });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-'));
  const f1 = (x: number): string => x.toFixed(1);
  const f2 = (x: number): string => x.toFixed(2);
  const pc = (x: number): string => `${(x * 100).toFixed(0)}%`;
  console.log(`node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg().map(f2).join(' ')}`);
  console.log(`${n} DELAY {ms:0} commands per run, submitted by ${describe(batched)}, ${runs} runs per configuration; state under ${tmp}`);
  const table: string[] = [];
  // 0x0 (submits alone) runs once per way of submitting, so the two compare.
  const plan = configs.flatMap((c) => (c.agents === 0 && batched !== single ? [{ ...c, submit: single }, { ...c, submit: batched }] : [{ ...c, submit: batched }]));
  try {
    for (const { agents, concurrency, submit } of plan) {
      const results: RunResult[] = [];
      for (let i = 0; i < runs; i++) {
        const profDir = values.profile && i === 0 ? path.resolve(values.profile, `${agents}x${concurrency}-b${submit.batch}`) : undefined;
        const r = await run(agents, concurrency, n, submit, tmp, profDir);
        results.push(r);
        const ms = (j: JournalStats): string => f2(j.fsyncMicros / j.fsyncs / 1000);
        console.log(
          `  ${agents} x ${concurrency}: ${r.perSec.toFixed(0).padStart(6)} commands/s (${f2(r.seconds)} s; submits done at ${f2(r.submitSeconds)} s) | ` +
            `fsyncs/command: server ${f2(r.server.fsyncs / n)} (${f1(r.server.records / r.server.fsyncs)} records, ${ms(r.server)} ms each), ` +
            (agents === 0 ? '' : `agents ${f2(r.agents.fsyncs / n)} (${f1(r.agents.records / r.agents.fsyncs)} records, ${ms(r.agents)} ms each)`) +
            ` | agent requests/command ${f2(r.agentRequests / n)} | ` +
            `CPU: server ${pc(r.cpu.server)}, agents ${pc(r.cpu.agents)}, bench ${pc(r.cpu.bench)} | load ${f2(os.loadavg()[0]!)}`,
        );
      }
      const m = (g: (r: RunResult) => number): number => median(results.map(g));
      const goal = agents === 4 && concurrency === 1 ? '>= 1,000/s' : agents === 4 && concurrency === 16 ? '>= 5,000/s' : undefined;
      result(
        agents === 0 ? `submits alone, ${describe(submit)}` : `throughput, ${agents} agent${agents > 1 ? 's' : ''} x concurrency ${concurrency} (${n} DELAY 0)`,
        `${m((r) => r.perSec).toFixed(0)} commands/s; fsyncs/command: server ${f2(m((r) => r.server.fsyncs / n))}, agents ${f2(m((r) => r.agents.fsyncs / n))}`,
        goal,
      );
      table.push(
        `| ${agents === 0 ? `submits alone (${describe(submit)})` : `${agents} x ${concurrency}`} | ${m((r) => r.perSec).toFixed(0)} | ${results.map((r) => r.perSec.toFixed(0)).join(', ')} ` +
          `| ${f2(m((r) => r.server.fsyncs / n))} | ${f2(m((r) => r.agents.fsyncs / n))} ` +
          `| ${pc(m((r) => r.cpu.server))} / ${pc(m((r) => r.cpu.agents))} / ${pc(m((r) => r.cpu.bench))} |`,
      );
    }
    console.log(`\nmedians of ${runs} runs, ${n} commands each (load average now ${os.loadavg().map(f2).join(' ')})`);
    console.log('| agents x concurrency | commands/s | each run | server fsyncs/command | agent fsyncs/command | CPU (of one core): server / agents / bench |');
    console.log('|---|---|---|---|---|---|');
    for (const row of table) console.log(row);
    emitResults('throughput');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
