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
// --store file,postgres measures each store in the same run (npm run bench does) (stores.ts: the
// bench starts its own PostgreSQL, a fresh database per run). On PostgreSQL
// the configurations may name several servers on the one database, SxAxC: S
// servers, A agents at concurrency C, each agent given every server's URL
// (the list rotated, so the agents start split between the servers), the
// submit connections split between the servers too.
//
//   node --import tsx bench/throughput.ts [--n 20000] [--runs 3] [--store file,postgres]
//                                         [--configs 0x0,1x1,2x1,4x1,4x16] [--pg-configs 0x0,4x1,4x16,2x4x1,2x4x16]
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
import { Child, cpuSeconds, median, metric, PostConnection, request, settleDisk, startAgent, startServer } from './children.ts';
import { emitResults, result } from './report.ts';
import { storeArgs, storesFlag, stopStores, type StoreKind } from './stores.ts';

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

/** One configuration: S servers (on one database when more than one), A agents at concurrency C. */
interface Config {
  store: StoreKind;
  servers: number;
  agents: number;
  concurrency: number;
}

async function submitAll(bases: URL[], n: number, mode: SubmitMode): Promise<void> {
  let next = 0;
  const batchBody = (k: number): string => JSON.stringify({ commands: Array.from({ length: k }, () => JSON.parse(SUBMIT_BODY) as unknown) });
  const full = batchBody(mode.batch);
  const conns = Array.from({ length: mode.clients }, (_, i) => new PostConnection(bases[i % bases.length]!, mode.batch > 1 ? '/commands/batch' : '/commands'));
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

async function run(cfg: Config, n: number, submit: SubmitMode, tmp: string, profDir?: string): Promise<RunResult> {
  const { agents, concurrency } = cfg;
  const dir = fs.mkdtempSync(path.join(tmp, `run-${cfg.store}-${cfg.servers}x${agents}x${concurrency}-`));
  const prof = (name: string): string[] => (profDir ? ['--cpu-prof', '--cpu-prof-dir', path.join(profDir, name)] : []);
  const store = await storeArgs(cfg.store);
  settleDisk();
  const servers: Child[] = [];
  const workers: Child[] = [];
  try {
    const urls: string[] = [];
    for (let i = 0; i < cfg.servers; i++) {
      const { child, url } = await startServer(path.join(dir, `server-${i}`), ['--lease-timeout', '30s', ...store], prof(`server-${i}`));
      servers.push(child);
      urls.push(url);
    }
    // Agent i lists the servers from the (i mod S)th on: the fleet starts split between them.
    const listFor = (i: number): string => urls.map((_, k) => urls[(i + k) % urls.length]).join(',');
    workers.push(
      ...(await Promise.all(
        Array.from({ length: agents }, (_, i) => startAgent(listFor(i), path.join(dir, `agent-${i}`), ['--id', `bench-${i}`, '--concurrency', String(concurrency)], prof(`agent-${i}`))),
      )),
    );
    const bases = urls.map((u) => new URL(u));
    const http1 = new http.Agent({ keepAlive: true });
    const metricsOfAll = async (): Promise<string[]> => Promise.all(bases.map(async (b) => (await request(http1, b, 'GET', '/metrics')).text));
    const before = await metricsOfAll();

    let completed = 0;
    let failed = 0;
    let lastProgress = performance.now();
    let finishedAt = 0;
    let onAll: () => void = () => {};
    const all = new Promise<void>((resolve) => (onAll = resolve));
    // Each server logs the transitions it made: together, every one.
    const onLine = (line: string, at: number): void => {
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
    for (const server of servers) server.onLine = onLine;
    const stall = setInterval(() => {
      if (performance.now() - lastProgress > STALL_MS) onAll();
    }, 1000);

    const cpuOf = (cs: Child[]): number => cs.reduce((s, c) => s + cpuSeconds(c.pid), 0);
    const cpu0 = { server: cpuOf(servers), agents: cpuOf(workers), bench: process.cpuUsage() };
    const t0 = performance.now();
    lastProgress = t0;
    await submitAll(bases, n, submit);
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
      server: (cpuOf(servers) - cpu0.server) / seconds,
      agents: (cpuOf(workers) - cpu0.agents) / seconds,
      bench: ((u) => (u.user + u.system) / 1e6 / seconds)(process.cpuUsage(cpu0.bench)),
    };
    const afterAll = await metricsOfAll();
    const after = afterAll[0]!;
    http1.destroy();
    const want = agents === 0 ? 'PENDING' : 'COMPLETED';
    if (metric(after, `keel_commands{state="${want}"}`) !== n) throw new Error(`/metrics: ${metric(after, `keel_commands{state="${want}"}`)} ${want}, expected ${n}`);
    if (failed > 0) throw new Error(`${failed} commands FAILED`);
    // Summed over the servers; the journal's counters are the file store's (NaN on PostgreSQL).
    const d = (name: string): number => afterAll.reduce((sum, text, i) => sum + metric(text, name) - metric(before[i]!, name), 0);

    // The agents report their ledger's journal stats as they stop.
    const stopped = workers.map((w) => w.waitForMsg('agent stopped'));
    await Promise.all(workers.map((w) => w.stop()));
    const ledgers = (await Promise.all(stopped)).map((l) => l.ledger as JournalStats);
    const agentRequests = afterAll.flatMap((text) => [...text.matchAll(/^keel_http_requests_total\{route="\/agent\/[^"]*",code="\d+"\} (\d+)$/gm)]).reduce((s, m) => s + Number(m[1]), 0);
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
    await Promise.all(servers.map((s) => s.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: process.env.BENCH_N ?? '20000' },
      runs: { type: 'string', default: '3' },
      store: { type: 'string', default: 'file' },
      configs: { type: 'string', default: '0x0,1x1,2x1,4x1,4x16' },
      // PostgreSQL: the same rows as the file store's goals, and two servers on one database.
      'pg-configs': { type: 'string', default: '0x0,4x1,4x16,2x4x1,2x4x16' },
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
  const parse = (flag: string, text: string, store: StoreKind): Config[] =>
    text.split(',').map((c) => {
      const m = /^(?:(\d+)x)?(\d+)x(\d+)$/.exec(c.trim());
      if (!m) throw new Error(`--${flag}: ${c} is not AxC (agents x concurrency) or SxAxC (servers x agents x concurrency)`);
      const servers = Number(m[1] ?? 1);
      if (servers < 1 || (servers > 1 && store === 'file')) throw new Error(`--${flag}: ${c}: several servers share one store only on PostgreSQL`);
      return { store, servers, agents: Number(m[2]), concurrency: Number(m[3]) };
    });
  const configs = storesFlag(values.store).flatMap((store) => (store === 'file' ? parse('configs', values.configs, store) : parse('pg-configs', values['pg-configs'], store)));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-'));
  const f1 = (x: number): string => x.toFixed(1);
  const f2 = (x: number): string => x.toFixed(2);
  const pc = (x: number): string => `${(x * 100).toFixed(0)}%`;
  console.log(`node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg().map(f2).join(' ')}`);
  console.log(`${n} DELAY {ms:0} commands per run, submitted by ${describe(batched)}, ${runs} runs per configuration; state under ${tmp}`);
  const table: string[] = [];
  // 0x0 (submits alone) runs once per way of submitting, so the two compare.
  const plan = configs.flatMap((c) => (c.agents === 0 && batched !== single ? [{ ...c, submit: single }, { ...c, submit: batched }] : [{ ...c, submit: batched }]));
  // The file store keeps its rows' names from before there were two stores; PostgreSQL's say so.
  const label = (c: Config): string =>
    `${c.store === 'postgres' ? 'postgres: ' : ''}${c.servers > 1 ? `${c.servers} servers x ` : ''}${c.agents} x ${c.concurrency}`;
  // The journal's figures are the file store's; PostgreSQL has none of its own here.
  const fx = (x: number): string => (Number.isFinite(x) ? f2(x) : '-');
  try {
    for (const { submit, ...cfg } of plan) {
      const { agents, concurrency } = cfg;
      const results: RunResult[] = [];
      for (let i = 0; i < runs; i++) {
        const profDir = values.profile && i === 0 ? path.resolve(values.profile, `${cfg.store}-${cfg.servers}x${agents}x${concurrency}-b${submit.batch}`) : undefined;
        const r = await run(cfg, n, submit, tmp, profDir);
        results.push(r);
        const ms = (j: JournalStats): string => fx(j.fsyncMicros / j.fsyncs / 1000);
        console.log(
          `  ${label(cfg)}: ${r.perSec.toFixed(0).padStart(6)} commands/s (${f2(r.seconds)} s; submits done at ${f2(r.submitSeconds)} s) | ` +
            `fsyncs/command: server ${fx(r.server.fsyncs / n)} (${cfg.store === 'file' ? f1(r.server.records / r.server.fsyncs) : '-'} records, ${ms(r.server)} ms each), ` +
            (agents === 0 ? '' : `agents ${f2(r.agents.fsyncs / n)} (${f1(r.agents.records / r.agents.fsyncs)} records, ${ms(r.agents)} ms each)`) +
            ` | agent requests/command ${f2(r.agentRequests / n)} | ` +
            `CPU: server${cfg.servers > 1 ? 's' : ''} ${pc(r.cpu.server)}, agents ${pc(r.cpu.agents)}, bench ${pc(r.cpu.bench)} | load ${f2(os.loadavg()[0]!)}`,
        );
      }
      const m = (g: (r: RunResult) => number): number => median(results.map(g));
      // The hot path's goals (ahead of BullMQ and graphile-worker on this machine), for the file store.
      const GOALS: Record<string, string> = { '1x1': '>= 1,200/s', '4x1': '>= 2,000/s', '4x16': '>= 4,000/s' };
      const goal = cfg.store === 'file' && cfg.servers === 1 ? GOALS[`${agents}x${concurrency}`] : undefined;
      const on = cfg.store === 'postgres' ? 'postgres: ' : '';
      const serversText = cfg.servers > 1 ? `${cfg.servers} servers, ` : '';
      result(
        agents === 0
          ? `${on}submits alone, ${describe(submit)}`
          : `${on}throughput, ${serversText}${agents} agent${agents > 1 ? 's' : ''} x concurrency ${concurrency} (${n} DELAY 0)`,
        `${m((r) => r.perSec).toFixed(0)} commands/s; fsyncs/command: server ${fx(m((r) => r.server.fsyncs / n))}, agents ${f2(m((r) => r.agents.fsyncs / n))}`,
        goal,
      );
      table.push(
        `| ${agents === 0 ? `${on}submits alone (${describe(submit)})` : label(cfg)} | ${m((r) => r.perSec).toFixed(0)} | ${results.map((r) => r.perSec.toFixed(0)).join(', ')} ` +
          `| ${fx(m((r) => r.server.fsyncs / n))} | ${f2(m((r) => r.agents.fsyncs / n))} ` +
          `| ${pc(m((r) => r.cpu.server))} / ${pc(m((r) => r.cpu.agents))} / ${pc(m((r) => r.cpu.bench))} |`,
      );
    }
    console.log(`\nmedians of ${runs} runs, ${n} commands each (load average now ${os.loadavg().map(f2).join(' ')})`);
    console.log('| (servers x) agents x concurrency | commands/s | each run | server fsyncs/command | agent fsyncs/command | CPU (of one core): servers / agents / bench (PostgreSQL\'s own not counted) |');
    console.log('|---|---|---|---|---|---|');
    for (const row of table) console.log(row);
    emitResults('throughput');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    await stopStores();
  }
}

await main();
