// Pickup latency (issue 6, item 2): one agent (concurrency 1) idle in its
// long-poll claim; commands DELAY {ms:0} submitted one at a time. For each:
//   submit -> acknowledged   the 201 reaches the submitter
//   submit -> RUNNING        this process reads the server's RUNNING transition line
//   submit -> COMPLETED      ... and its COMPLETED line
// Times are performance.now() in this process: from just before the POST is
// written (children.ts PostConnection, a lean keep-alive socket) to the
// moment the server's log line arrives on its stdout pipe. The server logs a
// transition once it is durable and writes the line at once (before the HTTP
// answer that acknowledges it), so each figure is the true one plus one pipe
// hop into this process: an upper bound, by about what a socket hop costs.
// Before each command the bench waits until the agent has settled the last
// one and its next claim is parked on the server (keel_claims_waiting, read
// from /metrics), then leaves every process idle for IDLE_MS, as a queue that
// is quiet when work arrives. Real server.ts and agent.ts processes, every
// step fsynced; the fsyncs per command on each side are printed.
// Goal: p50 submit -> RUNNING under 2 ms.
// --store file,postgres measures each store in the same run (npm run bench does) (stores.ts: the
// bench starts its own PostgreSQL, a fresh database per run; the server's
// fsync figures are the file store's journal's, none on PostgreSQL).
//
//   node --import tsx bench/latency.ts [--n 1000] [--warmup 50] [--runs 3] [--store file,postgres]
// BENCH_N overrides the default --n for quick runs.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { median, metric, pct, PostConnection, request, settleDisk, startAgent, startServer } from './children.ts';
import { emitResults, result } from './report.ts';
import { storeArgs, storesFlag, stopStores, type StoreKind } from './stores.ts';

const SUBMIT_BODY = JSON.stringify({ type: 'DELAY', payload: { ms: 0 } });
// Once the agent's next claim is parked: how long every process stays idle
// before the next submit.
const IDLE_MS = 5;

interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

interface RunResult {
  ack: Percentiles;
  running: Percentiles;
  completed: Percentiles;
  serverFsyncMs: number;
  agentFsyncMs: number;
  serverFsyncsPerCommand: number;
  agentFsyncsPerCommand: number;
}

const ID_RE = /"id":"([^"]+)"/;

async function run(store: StoreKind, n: number, warmup: number, tmp: string): Promise<RunResult> {
  const dir = fs.mkdtempSync(path.join(tmp, 'latency-'));
  settleDisk();
  const { child: server, url } = await startServer(path.join(dir, 'server'), ['--lease-timeout', '30s', ...(await storeArgs(store))]);
  const agent = await startAgent(url, path.join(dir, 'agent'), ['--id', 'latency', '--concurrency', '1']).catch(async (err: unknown) => {
    await server.stop();
    throw err;
  });
  try {
    const seen = new Map<string, number>(); // `${id} ${state}` -> arrival time
    const waiting = new Map<string, () => void>();
    const note = (key: string, at: number): void => {
      seen.set(key, at);
      waiting.get(key)?.();
    };
    const arrival = (key: string): Promise<number> =>
      seen.has(key) ? Promise.resolve(seen.get(key)!) : new Promise((resolve) => waiting.set(key, () => resolve(seen.get(key)!)));
    server.onLine = (line, at) => {
      if (!line.includes('"msg":"transition"')) return;
      const state = line.includes('"state":"RUNNING"') ? 'RUNNING' : line.includes('"state":"COMPLETED"') ? 'COMPLETED' : undefined;
      if (state) note(`${ID_RE.exec(line)![1]} ${state}`, at);
    };
    agent.onLine = (line, at) => {
      if (line.includes('"msg":"reported"')) note(`${ID_RE.exec(line)![1]} reported`, at);
    };

    const base = new URL(url);
    const client = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const submitter = new PostConnection(base, '/commands');
    const ack: number[] = [];
    const running: number[] = [];
    const completed: number[] = [];
    const parked = async (): Promise<void> => {
      const deadline = performance.now() + 10_000;
      while (metric((await request(client, base, 'GET', '/metrics')).text, 'keel_claims_waiting') < 1) {
        if (performance.now() > deadline) throw new Error('the agent\'s claim did not park within 10 s');
        await sleep(1);
      }
    };
    let before = '';
    for (let i = 0; i < warmup + n; i++) {
      await parked();
      if (i === warmup) before = (await request(client, base, 'GET', '/metrics')).text;
      await sleep(IDLE_MS);
      const t0 = performance.now();
      const r = await submitter.post(SUBMIT_BODY);
      const acked = performance.now();
      if (r.status !== 201) throw new Error(`submit answered ${r.status}: ${r.text}`);
      const id = (JSON.parse(r.text) as { commandId: string }).commandId;
      const [tRunning, tCompleted] = await Promise.all([arrival(`${id} RUNNING`), arrival(`${id} COMPLETED`), arrival(`${id} reported`)]);
      if (i >= warmup) {
        ack.push(acked - t0);
        running.push(tRunning! - t0);
        completed.push(tCompleted! - t0);
      }
      for (const s of ['RUNNING', 'COMPLETED', 'reported']) seen.delete(`${id} ${s}`);
    }
    const after = (await request(client, base, 'GET', '/metrics')).text;
    client.destroy();
    submitter.close();
    const d = (name: string): number => metric(after, name) - metric(before, name);
    const stopped = agent.waitForMsg('agent stopped');
    await agent.stop();
    const ledger = (await stopped).ledger as { fsyncs: number; fsyncMicros: number };
    const p = (xs: number[]): Percentiles => {
      const s = [...xs].sort((a, b) => a - b);
      return { p50: pct(s, 0.5), p99: pct(s, 0.99), max: s[s.length - 1]! };
    };
    return {
      ack: p(ack),
      running: p(running),
      completed: p(completed),
      serverFsyncMs: (d('keel_journal_fsync_seconds_total') / d('keel_journal_fsyncs_total')) * 1000,
      agentFsyncMs: ledger.fsyncMicros / ledger.fsyncs / 1000,
      serverFsyncsPerCommand: d('keel_journal_fsyncs_total') / n,
      // The ledger's count is known only at stop: it covers the warm-up too.
      agentFsyncsPerCommand: ledger.fsyncs / (warmup + n),
    };
  } finally {
    await agent.stop();
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: process.env.BENCH_N ?? '1000' },
      warmup: { type: 'string', default: '50' },
      runs: { type: 'string', default: '3' },
      store: { type: 'string', default: 'file' },
    },
  });
  const n = Number(values.n);
  const runs = Number(values.runs);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-'));
  const f = (x: number): string => x.toFixed(2);
  const fx = (x: number): string => (Number.isFinite(x) ? f(x) : '-');
  console.log(`node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg().map(f).join(' ')}`);
  console.log(`${n} DELAY {ms:0} commands submitted one at a time to an idle agent (concurrency 1), after ${values.warmup} warm-up; ${runs} runs`);
  try {
    for (const store of storesFlag(values.store)) {
      const results: RunResult[] = [];
      console.log(`\n${store} store:`);
      for (let i = 0; i < runs; i++) {
        const r = await run(store, n, Number(values.warmup), tmp);
        results.push(r);
        const row = (x: Percentiles): string => `p50 ${f(x.p50)} ms, p99 ${f(x.p99)} ms, max ${f(x.max)} ms`;
        console.log(`run ${i + 1}/${runs} (load ${f(os.loadavg()[0]!)}; mean fdatasync: server ${fx(r.serverFsyncMs)} ms, agent ${f(r.agentFsyncMs)} ms; fsyncs/command: server ${fx(r.serverFsyncsPerCommand)}, agent ${f(r.agentFsyncsPerCommand)})`);
        console.log(`  submit -> acknowledged  ${row(r.ack)}`);
        console.log(`  submit -> RUNNING       ${row(r.running)}`);
        console.log(`  submit -> COMPLETED     ${row(r.completed)}`);
      }
      const m = (g: (r: RunResult) => number): string => fx(median(results.map(g)));
      console.log(`\n${store} store, medians of ${runs} runs, ${n} commands each:`);
      console.log('| latency                | p50 ms | p99 ms |');
      console.log('|------------------------|--------|--------|');
      console.log(`| submit -> acknowledged | ${m((r) => r.ack.p50).padStart(6)} | ${m((r) => r.ack.p99).padStart(6)} |`);
      console.log(`| submit -> RUNNING      | ${m((r) => r.running.p50).padStart(6)} | ${m((r) => r.running.p99).padStart(6)} |`);
      console.log(`| submit -> COMPLETED    | ${m((r) => r.completed.p50).padStart(6)} | ${m((r) => r.completed.p99).padStart(6)} |`);
      console.log(`mean fdatasync during the runs: server ${m((r) => r.serverFsyncMs)} ms, agent ${m((r) => r.agentFsyncMs)} ms`);
      // The file store keeps its rows' names from before there were two stores.
      const on = store === 'postgres' ? 'postgres: ' : '';
      result(`${on}pickup latency, submit -> RUNNING (idle agent, DELAY 0)`, `p50 ${m((r) => r.running.p50)} ms, p99 ${m((r) => r.running.p99)} ms`, store === 'file' ? 'p50 <= 2 ms' : undefined);
      result(`${on}pickup latency, submit -> COMPLETED`, `p50 ${m((r) => r.completed.p50)} ms, p99 ${m((r) => r.completed.p99)} ms`);
    }
    emitResults('latency');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    await stopStores();
  }
}

await main();
