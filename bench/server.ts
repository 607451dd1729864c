// Server benchmark (npm run bench:server):
//  1. Durable submits/s: wrk (Debian's `wrk`, installed with apt-get if
//     missing) keeps `clients` keep-alive connections POSTing /commands back to
//     back for `seconds`, against (a) keel (server.ts as a child process, temp
//     state dir, every 201 after fdatasync) and (b) a bare node:http server
//     that parses the body and answers 201 without persisting, run in turn.
//     wrk, not a Node client: a Node load generator costs more CPU than the
//     server it measures, on a machine with two cores.
//     Goal: keel >= 70% of bare. Between the two, (c) the durable floor: bare
//     plus durability and nothing else (one JSON line per submit, written and
//     fdatasynced in groups, answered after): what any durable server pays
//     here before it keeps a state, a log or an index.
//  2. Submit -> claim latency: an agent's long-polling claim is already
//     parked when a command is submitted; time from sending the submit to the
//     claim's answer, p50 and p99 over `latency-n` commands. Goal: p50 < 5 ms.
// Servers run in their own processes; wrk in its own, the latency clients
// (node:http with a keep-alive Agent) in this one.
//   node --import tsx bench/server.ts [--seconds 5] [--clients 64] [--rounds 3] [--latency-n 1000] [--warmup 1] [--profile DIR]
//   node --import tsx bench/server.ts --serve-bare      (the bare server; prints {"url"})
//   node --import tsx bench/server.ts --serve-floor DIR (the durable floor, its file in DIR)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { emitResults, result } from './report.ts';
import { cpuSeconds, request, settleDisk } from './children.ts';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const SUBMIT_BODY = JSON.stringify({ type: 'DELAY', payload: { ms: 1 } });


// --- (b) the bare server, and (c) the durable floor -----------------------------

/**
 * A node:http server that parses each submit's body and answers 201 with a
 * new id once `taken` calls `answer` (a body that is not a command: 400 at
 * once). Prints {"msg":"listening","url"} when it listens.
 */
function serveSubmits(taken: (id: string, parsed: { type: string; payload?: unknown }, answer: () => void) => void): void {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const reply = (status: number, body: string): void => {
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      };
      let parsed: { type?: unknown; payload?: unknown };
      try {
        parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type?: unknown };
        if (typeof parsed !== 'object' || parsed === null || typeof parsed.type !== 'string') throw new Error('bad body');
      } catch {
        reply(400, '{"error":"bad body"}');
        return;
      }
      const id = randomUUID();
      taken(id, parsed as { type: string; payload?: unknown }, () => reply(201, JSON.stringify({ commandId: id })));
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ msg: 'listening', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })}\n`);
  });
}

/** Bare: answered at once, nothing kept. */
function serveBare(): void {
  serveSubmits((_id, _parsed, answer) => answer());
}

/** Bare, plus: each submit is a JSON line, written and fdatasynced in groups, answered once durable. */
function serveFloor(dir: string): void {
  const fd = fs.openSync(path.join(dir, 'floor.jsonl'), 'a');
  let lines: string[] = [];
  let answers: Array<() => void> = [];
  let syncing = false;
  const flush = (): void => {
    if (syncing || lines.length === 0) return;
    syncing = true;
    fs.writeSync(fd, lines.join(''));
    const durable = answers;
    lines = [];
    answers = [];
    fs.fdatasync(fd, (err) => {
      if (err) throw err;
      syncing = false;
      for (const answer of durable) answer();
      flush();
    });
  };
  serveSubmits((id, parsed, answer) => {
    lines.push(`${JSON.stringify({ id, type: parsed.type, payload: parsed.payload, at: Date.now() })}\n`);
    answers.push(answer);
    if (lines.length === 1) process.nextTick(flush);
  });
}

// --- child processes -------------------------------------------------------------

interface Child {
  proc: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

function spawnServer(args: string[], nodeArgs: string[] = []): Promise<Child> {
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    let buf = '';
    let found = false;
    // Keep reading (and dropping) the child's log lines for the whole run, as a
    // log collector on a pipe would: the cost of logging is part of the figure.
    proc.stdout!.on('data', (d: Buffer) => {
      if (found) return;
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const l = JSON.parse(line) as { msg?: string; url?: string };
          if (l.msg === 'listening' && l.url) {
            found = true;
            resolve({
              proc,
              url: l.url,
              async stop() {
                // SIGTERM: keel shuts down cleanly (and --cpu-prof gets written).
                proc.kill('SIGTERM');
                const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
                await exited;
                clearTimeout(timer);
              },
            });
            return;
          }
        } catch {
          // not a log line
        }
      }
    });
    void exited.then(() => reject(new Error(`${args.join(' ')} exited before listening`)));
  });
}

// --- load ---------------------------------------------------------------------------

interface LoadResult {
  ok: number;
  other: number;
  errors: number;
  seconds: number;
  perSec: number;
  p50: number;
  p99: number;
  clientCpu: number; // fraction of one core this process used
  serverCpu: number; // fraction of one core the server process used
}

function post(agent: http.Agent, url: URL, p: string, body: string): Promise<{ status: number; text: string }> {
  return request(agent, url, 'POST', p, body);
}

function get(agent: http.Agent, url: URL, p: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ agent, host: url.hostname, port: url.port, path: p }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      })
      .on('error', reject);
  });
}

const WRK_SCRIPT = `
wrk.method = "POST"
wrk.body = '${SUBMIT_BODY}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_JSON {\\"requests\\":%d,\\"us\\":%d,\\"non2xx\\":%d,\\"errors\\":%d,\\"p50\\":%d,\\"p99\\":%d}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

/** wrk's path, installing Debian's package first if it is missing. */
function wrkPath(): string {
  const which = (): string => spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).stdout.trim();
  if (which() === '') {
    console.log('wrk is missing: apt-get install -y wrk');
    spawnSync('apt-get', ['install', '-y', 'wrk'], { stdio: 'inherit' });
    if (which() === '') throw new Error('wrk is not installed and apt-get could not install it; install Debian\'s wrk package');
  }
  return which();
}

async function load(base: string, clients: number, seconds: number, serverPid?: number): Promise<LoadResult> {
  const script = path.join(os.tmpdir(), `keel-bench-submit-${process.pid}.lua`);
  fs.writeFileSync(script, WRK_SCRIPT);
  const server0 = cpuSeconds(serverPid);
  const t0 = performance.now();
  const wrk = spawn(wrkPath(), ['-t1', `-c${clients}`, `-d${seconds}s`, '--latency', '-s', script, `${base}/commands`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  wrk.stdout!.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null>((resolve) => wrk.once('exit', resolve));
  fs.rmSync(script, { force: true });
  const took = (performance.now() - t0) / 1000;
  const serverCpu = (cpuSeconds(serverPid) - server0) / took;
  const m = /WRK_JSON (\{.*\})/.exec(out);
  if (code !== 0 || !m) throw new Error(`wrk exited ${code}: ${out}`);
  const w = JSON.parse(m[1]!) as { requests: number; us: number; non2xx: number; errors: number; p50: number; p99: number };
  const secs = w.us / 1e6;
  return {
    ok: w.requests - w.non2xx,
    other: w.non2xx,
    errors: w.errors,
    seconds: secs,
    perSec: (w.requests - w.non2xx) / secs,
    p50: w.p50 / 1000,
    p99: w.p99 / 1000,
    clientCpu: NaN,
    serverCpu,
  };
}

function pct(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

// --- submit -> claim latency ---------------------------------------------------------

async function claimLatency(base: string, n: number): Promise<{ p50: number; p99: number; max: number; n: number }> {
  const url = new URL(base);
  const agentHttp = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const clientHttp = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    // A new agent id each round, so GET /agents says when this claim has
    // been read and parked (the registry notes the agent just before it waits).
    const agentId = `bench-${i}`;
    const claimed = post(agentHttp, url, '/agent/claim', JSON.stringify({ agentId, waitMs: 30_000 }));
    for (;;) {
      const agents = await get(clientHttp, url, '/agents');
      if (agents.text.includes(`"${agentId}"`)) break;
    }
    const t = performance.now();
    const sub = post(clientHttp, url, '/commands', SUBMIT_BODY);
    const c = await claimed;
    const took = performance.now() - t;
    const id = (JSON.parse((await sub).text) as { commandId: string }).commandId;
    const got = (JSON.parse(c.text) as { commands: Array<{ id: string }> }).commands;
    if (got.length !== 1 || got[0]!.id !== id) throw new Error(`claim got ${c.text}, expected ${id}`);
    if (i >= 20) lat.push(took); // the first few warm the JIT
  }
  agentHttp.destroy();
  clientHttp.destroy();
  lat.sort((a, b) => a - b);
  return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: lat[lat.length - 1]!, n: lat.length };
}

// --- main -------------------------------------------------------------------------------

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '5' },
      clients: { type: 'string', default: '64' },
      'latency-n': { type: 'string', default: '1000' },
      warmup: { type: 'string', default: '1' },
      // Alternate bare and keel this many times and report the median: on a
      // shared machine one 5 s run can be off by 2x either way.
      rounds: { type: 'string', default: '3' },
      // Write a V8 CPU profile of the keel server's load run into this directory.
      profile: { type: 'string' },
    },
  });
  const seconds = Number(values.seconds);
  const clients = Number(values.clients);
  const latencyN = Number(values['latency-n']);
  const warmup = Number(values.warmup);
  const rounds = Number(values.rounds);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-bench-'));
  const f = (x: number): string => x.toFixed(2);
  const keelArgs = (dir: string): string[] => ['server.ts', '--state-dir', dir, '--port', '0', '--max-pending', '1000000000'];
  let child: Child | undefined;
  try {
    console.log(`node ${process.version}, ${os.cpus().length} CPUs, state dir under ${tmp}; ${clients} keep-alive clients, ${warmup}s warm-up + ${seconds}s each`);

    const row = (name: string, r: LoadResult): string =>
      `  ${name.padEnd(6)} ${r.perSec.toFixed(0).padStart(7)} submits/s  (${r.ok} in ${f(r.seconds)} s; latency p50 ${f(r.p50)} ms, p99 ${f(r.p99)} ms; ` +
      `non-2xx ${r.other}, errors ${r.errors}; server CPU ${(r.serverCpu * 100).toFixed(0)}% of a core = ${((r.serverCpu / r.perSec) * 1e6).toFixed(1)} us/request)`;
    const prof = values.profile ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(values.profile)] : [];
    const ratios: number[] = [];
    const floorRatios: number[] = [];
    const bares: number[] = [];
    const keels: number[] = [];
    console.log('\ndurable submits/s');
    for (let round = 1; round <= rounds; round++) {
      settleDisk();
      child = await spawnServer(['bench/server.ts', '--serve-bare']);
      await load(child.url, clients, warmup);
      const bare = await load(child.url, clients, seconds, child.proc.pid);
      await child.stop();
      child = undefined;

      settleDisk();
      const floorDir = path.join(tmp, `floor-${round}`);
      fs.mkdirSync(floorDir);
      child = await spawnServer(['bench/server.ts', '--serve-floor', floorDir]);
      await load(child.url, clients, warmup);
      const floor = await load(child.url, clients, seconds, child.proc.pid);
      await child.stop();
      child = undefined;

      settleDisk();
      child = await spawnServer(keelArgs(path.join(tmp, `load-${round}`)), round === 1 ? prof : []);
      const metricsAgent = new http.Agent();
      await load(child.url, clients, warmup);
      const before = (await get(metricsAgent, new URL(child.url), '/metrics')).text;
      const keel = await load(child.url, clients, seconds, child.proc.pid);
      const after = (await get(metricsAgent, new URL(child.url), '/metrics')).text;
      metricsAgent.destroy();
      await child.stop();
      child = undefined;
      const d = (name: string): number => metric(after, name) - metric(before, name);
      const fsyncs = d('keel_journal_fsyncs_total');

      console.log(`round ${round}/${rounds}`);
      console.log(row('bare', bare));
      console.log(row('floor', floor));
      console.log(row('keel', keel));
      console.log(`  ratio  keel / bare = ${((keel.perSec / bare.perSec) * 100).toFixed(0)}%; the durable floor / bare = ${((floor.perSec / bare.perSec) * 100).toFixed(0)}%`);
      console.log(`  keel journal: ${d('keel_journal_records_total')} records in ${fsyncs} fdatasyncs (${f(d('keel_journal_records_total') / fsyncs)} per group commit), ${f((d('keel_journal_fsync_seconds_total') / fsyncs) * 1000)} ms per fdatasync`);
      ratios.push(keel.perSec / bare.perSec);
      floorRatios.push(floor.perSec / bare.perSec);
      bares.push(bare.perSec);
      keels.push(keel.perSec);
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    console.log(`median of ${rounds}: bare ${median(bares).toFixed(0)}/s, keel ${median(keels).toFixed(0)}/s, keel / bare = ${(median(ratios) * 100).toFixed(0)}% (goal >= 70%); the durable floor / bare = ${(median(floorRatios) * 100).toFixed(0)}%`);
    result(`server: durable submits/s, wrk -c${clients} (bare node:http)`, `${median(keels).toFixed(0)}/s (${median(bares).toFixed(0)}/s), ${(median(ratios) * 100).toFixed(0)}%`, '>= 70% of bare');
    result('server: the durable floor (bare + a fdatasynced line per submit) / bare', `${(median(floorRatios) * 100).toFixed(0)}%`);

    child = await spawnServer(keelArgs(path.join(tmp, 'latency')));
    const lat = await claimLatency(child.url, latencyN);
    await child.stop();
    child = undefined;
    console.log('\nsubmit -> claim latency (long-polling agent already waiting)');
    console.log(`  p50 ${f(lat.p50)} ms, p99 ${f(lat.p99)} ms, max ${f(lat.max)} ms over ${lat.n} commands (goal p50 < 5 ms)`);
    result('server: submit -> claim, waiting agent', `p50 ${f(lat.p50)} ms, p99 ${f(lat.p99)} ms`, 'p50 < 5 ms');
    emitResults('server');
  } finally {
    await child?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv.includes('--serve-bare')) serveBare();
else if (process.argv.includes('--serve-floor')) serveFloor(process.argv[process.argv.indexOf('--serve-floor') + 1]!);
else await main();
