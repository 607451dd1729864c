// Chaos soak: a server and several supervised agents under a steady mixed
// load, with a random process SIGKILLed every few seconds. Then quiet, and a
// report of what the guarantees promise never happens.
//
//   npm run chaos -- --duration 60s --agents 3 --seed 7
//
// Exits 1 if any command was lost, executed twice, left not final, or its
// shown status went backwards (other than RUNNING -> PENDING when an agent
// gives back a command it never began). The report also counts what
// claim-and-start costs: commands given back, and commands FAILED AGENT_LOST
// that no agent ever journaled `executing` for (claimed, then the agent died
// and did not come back within the lease timeout).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { durationFlag, intFlag, parseFlags, parseOrExit } from '../lib/flags.ts';
import type { CommandList, CommandView } from '../lib/protocol.ts';
import { call } from './support/http.ts';
import { StatusWatch } from './support/status-watch.ts';
import { cleanup, Proc, startAgent, startServer, tempDir, type ServerHandle } from './support/processes.ts';
import { mulberry32 } from '../lib/prng.ts';

const USAGE = `usage: npm run chaos -- [--duration 60s] [--agents 3] [--seed N] [--lease-timeout 2s]\n`;
const flags = parseOrExit(USAGE, () => {
  const v = parseFlags(process.argv.slice(2), {
    duration: { type: 'string' },
    agents: { type: 'string' },
    seed: { type: 'string' },
    'lease-timeout': { type: 'string' },
  });
  return {
    durationMs: durationFlag(v, 'duration', 60_000),
    agents: intFlag(v, 'agents', 3, 1, 16),
    seed: intFlag(v, 'seed', Date.now() % 100_000, 0, 2 ** 31),
    leaseMs: durationFlag(v, 'lease-timeout', 2000),
  };
});

const rand = mulberry32(flags.seed);
const between = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo));

// --- the remote that HTTP_GET_JSON commands call: counts hits per token ---
const hits = new Map<string, number>();
const target = http.createServer((req, res) => {
  const token = req.url!.split('/').pop()!;
  hits.set(token, (hits.get(token) ?? 0) + 1);
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token }));
  }, between(0, 300));
});
await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
const targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}/hit`;

// --- processes ---
const root = tempDir('keel-chaos-');
const serverArgs = ['--lease-timeout', `${flags.leaseMs}ms`, '--max-pending', '1000000'];
let server: ServerHandle | undefined = await startServer(`${root}/server`, serverArgs);
const port = server.port;
const base = server.url;
const agents: Proc[] = [];
for (let i = 0; i < flags.agents; i++) {
  agents.push(startAgent(base, `${root}/agent-${i}`, ['--supervise', '--id', `chaos-${i}`, '--concurrency', '4']));
}
const kills: Record<string, number> = { server: 0, agent: 0 };

// --- load: steady submits; an acknowledged id is a promise we must keep ---
interface Sent {
  id: string;
  token?: string;
  final?: CommandView;
}
const sent = new Map<string, Sent>();
const watch = new StatusWatch();

function observe(v: CommandView): void {
  const s = sent.get(v.id);
  if (!s) return;
  watch.observe(v);
  if (v.status === 'COMPLETED' || v.status === 'FAILED') s.final = v;
}

async function submitOne(): Promise<void> {
  const isHttp = rand() < 0.4;
  const token = isHttp ? `t${between(0, 1e9)}-${sent.size}` : undefined;
  const body = isHttp ? { type: 'HTTP_GET_JSON', payload: { url: `${targetUrl}/${token}` } } : { type: 'DELAY', payload: { ms: between(0, 500) } };
  const key = `k-${flags.seed}-${sent.size}-${between(0, 1e9)}`;
  // Retry with the same Idempotency-Key: a submit whose answer was lost in a
  // crash is still one command, not two.
  for (let attempt = 0; attempt < 50 && running; attempt++) {
    try {
      const r = await call(base, 'POST', '/commands', body, { 'idempotency-key': key });
      if (r.status === 201 || r.status === 200) {
        sent.set(r.body.commandId, { id: r.body.commandId, token });
        watch.track([r.body.commandId]);
        return;
      }
    } catch {
      // server down: try again shortly
    }
    await sleep(100);
  }
}

async function pollAll(): Promise<void> {
  let cursor: string | null = null;
  do {
    const r: { status: number; body: CommandList } = await call(base, 'GET', `/commands?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
    if (r.status !== 200) throw new Error(`list answered ${r.status}`);
    r.body.commands.forEach(observe);
    cursor = r.body.nextCursor;
  } while (cursor);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let running = true;
const started = Date.now();

const loadLoop = (async () => {
  while (running) {
    void submitOne();
    await sleep(between(40, 160));
  }
})();

let polling = true;
const pollLoop = (async () => {
  while (polling) {
    await pollAll().catch(() => {});
    await sleep(300);
  }
})();


const killLoop = (async () => {
  while (Date.now() - started < flags.durationMs) {
    await sleep(between(1000, 3000));
    if (Date.now() - started >= flags.durationMs) break;
    const victim = between(0, agents.length + 1);
    if (victim === agents.length && server) {
      kills.server!++;
      const s = server;
      server = undefined;
      await s.proc.kill('SIGKILL');
      await sleep(between(200, 2000));
      server = await startServer(`${root}/server`, serverArgs, {}, port);
    } else if (victim < agents.length) {
      // Kill the supervised child, not the supervisor: the supervisor restarts it.
      const child = agents[victim]!.lines.findLast((l) => l.msg === 'agent child started');
      try {
        process.kill(Number(child?.pid), 'SIGKILL');
        kills.agent!++;
      } catch {
        // between children (the supervisor is backing off): nothing to kill this round
      }
    }
  }
})();

await killLoop;
running = false;
await loadLoop;
if (!server) server = await startServer(`${root}/server`, serverArgs, {}, port);

// Quiet: every acknowledged command should become final within the lease
// timeout plus the longest DELAY plus slack.
const quietDeadline = Date.now() + flags.leaseMs * 3 + 15_000;
while (Date.now() < quietDeadline && [...sent.values()].some((s) => !s.final)) await sleep(250);
polling = false;
await pollLoop;
await pollAll();

let lost = 0;
let notFinal = 0;
let twice = 0;
let givenBack = 0;
let agentLost = 0;
let agentLostNeverBegun = 0;
// An agent's `executing` line for each command (supervised children log through their supervisor).
const executingLines = new Map<string, number>();
for (const a of agents) for (const l of a.lines) if (l.msg === 'executing') executingLines.set(String(l.id), (executingLines.get(String(l.id)) ?? 0) + 1);
for (const s of sent.values()) {
  const r = await call(base, 'GET', `/commands/${s.id}`);
  if (r.status === 404) {
    lost++;
    process.stderr.write(`lost: ${s.id}\n`);
    continue;
  }
  observe(r.body);
  if (!s.final) {
    notFinal++;
    process.stderr.write(`not final: ${s.id} ${r.body.state}\n`);
  }
  if (s.token && (hits.get(s.token) ?? 0) > 1) {
    twice++;
    process.stderr.write(`executed twice: ${s.id} (${hits.get(s.token)} requests)\n`);
  }
  // Executions the server counts (a lease given back unbegun is none), and the agents' `executing` lines.
  const runs = (r.body as CommandView).attempts.length;
  if (!s.token && (runs > 1 || (executingLines.get(s.id) ?? 0) > 1)) {
    twice++;
    process.stderr.write(`started twice: ${s.id} (${runs} executions, ${executingLines.get(s.id) ?? 0} executing lines)\n`);
  }
  const ev = await call(base, 'GET', `/commands/${s.id}/events`);
  if ((ev.body.events as Array<{ event: string; from: string }>).some((e) => e.event === 'release' && e.from === 'RUNNING')) givenBack++;
  if (r.body.error === 'AGENT_LOST') {
    agentLost++;
    if (!executingLines.has(s.id)) agentLostNeverBegun++;
  }
}

const byOutcome = { COMPLETED: 0, FAILED: 0 };
for (const s of sent.values()) if (s.final) byOutcome[s.final.status as 'COMPLETED' | 'FAILED']++;
const report = {
  seed: flags.seed,
  submitted: sent.size,
  completed: byOutcome.COMPLETED,
  failed: byOutcome.FAILED,
  kills,
  lost,
  executedTwice: twice,
  notFinal,
  statusRegressions: watch.regressions.length,
  // What claim-and-start costs: given back unbegun (RUNNING -> PENDING), and lost
  // unbegun (no agent logged `executing`; a line can die with its agent, so an upper bound).
  givenBack,
  agentLost,
  agentLostNeverBegun,
  wallSeconds: Math.round((Date.now() - started) / 100) / 10,
};
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
target.close();
await cleanup();
for (const r of watch.regressions) process.stderr.write(`status regression: ${r}\n`);
process.exit(lost + twice + notFinal + watch.regressions.length > 0 ? 1 : 0);
